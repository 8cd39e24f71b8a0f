//! The CNI plugin with Debian's real plugins (/usr/lib/cni) in namespaces.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};

use serde_json::{Value, json};
use support::{Netns, surveyor};
use support::{cni_error as error, cni_ok as ok};

const PLUGINS: &str = "/usr/lib/cni";

fn require_plugins() {
    if !Path::new(PLUGINS).join("macvlan").exists() {
        panic!(
            "this test needs the CNI reference plugins in {PLUGINS}: apt-get install -y containernetworking-plugins (.ci/run does)"
        );
    }
}

/// A node namespace with a green device (`sv-a`, cabled to a peer
/// namespace), a pod namespace, and a state/cache dir of their own.
struct Lab {
    node: Netns,
    pod: Netns,
    _peer: Netns,
    dir: tempfile::TempDir,
}

impl Lab {
    fn new(tag: &str) -> Lab {
        require_plugins();
        let node = Netns::new(tag);
        let peer = Netns::new(&format!("{tag}-p"));
        let pod = Netns::new(&format!("{tag}-pod"));
        support::cable(&node, "sv-a", &peer, "p0");
        support::cable(&node, "sv-b", &peer, "p1");
        let lab = Lab {
            node,
            pod,
            _peer: peer,
            dir: tempfile::tempdir().unwrap(),
        };
        lab.snapshot(&["sv-a", "sv-b"]);
        lab
    }

    fn state(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    fn cache(&self) -> PathBuf {
        self.dir.path().join("cache")
    }

    fn leases(&self) -> PathBuf {
        self.dir.path().join("leases")
    }

    fn link(&self, ns: &Netns, dev: &str) -> Value {
        let out = ns.ip(&["-j", "-d", "link", "show", "dev", dev]);
        serde_json::from_slice::<Value>(&out.stdout).unwrap()[0].clone()
    }

    /// Writes networks.json as the agent would: green on the first of
    /// `candidates`, blue unresolved.
    fn snapshot(&self, candidates: &[&str]) {
        let dev = self.link(&self.node, candidates[0]);
        let snap = json!({
            "node": "node1", "generation": 1,
            "networks": {
                "green": {"device": candidates[0], "index": dev["ifindex"], "mac": dev["address"], "candidates": candidates},
                "blue": {"candidates": [], "reason": "no surveyed interface on node node1 matches spec.match: sv-a fails lldp.systemName"}
            }
        });
        std::fs::create_dir_all(self.state()).unwrap();
        std::fs::write(self.state().join("networks.json"), snap.to_string()).unwrap();
    }

    fn config(&self, version: &str, ipam: Value) -> Value {
        json!({
            "cniVersion": version, "name": "green", "type": "surveyor", "network": "green",
            "mode": "bridge", "ipam": ipam,
        })
    }

    /// The node-level setting pointing at this lab's dirs (what the node's
    /// admin sets; a network config cannot).
    fn node_config(&self) -> PathBuf {
        let path = self.dir.path().join("surveyor.json");
        if !path.exists() {
            node_config(&path, &self.state(), &self.cache());
        }
        path
    }

    fn static_ip(&self, n: u8) -> Value {
        self.config(
            "1.0.0",
            json!({"type": "static", "addresses": [{"address": format!("10.10.0.{n}/24")}]}),
        )
    }

    fn host_local(&self, version: &str) -> Value {
        self.config(
            version,
            json!({"type": "host-local", "subnet": "10.20.0.0/24", "dataDir": self.leases()}),
        )
    }

    /// Runs the plugin in the node namespace.
    fn cni(
        &self,
        command: &str,
        id: &str,
        ifname: &str,
        netns: Option<&str>,
        conf: &Value,
        path: &str,
    ) -> Output {
        self.cni_with(command, id, ifname, netns, conf, path, &self.node_config())
    }

    /// [`Lab::cni`] with another node-level setting.
    #[allow(clippy::too_many_arguments)]
    fn cni_with(
        &self,
        command: &str,
        id: &str,
        ifname: &str,
        netns: Option<&str>,
        conf: &Value,
        path: &str,
        node_config: &Path,
    ) -> Output {
        let mut cmd = self.node.command(surveyor());
        cmd.env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .env("SURVEYOR_CNI_CONFIG", node_config)
            .env("CNI_COMMAND", command)
            .env("CNI_CONTAINERID", id)
            .env("CNI_IFNAME", ifname)
            .env("CNI_PATH", path)
            .env(
                "CNI_ARGS",
                "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=web;K8S_POD_UID=pod-uid-1",
            );
        if let Some(ns) = netns {
            cmd.env("CNI_NETNS", ns);
        }
        support::run_with_stdin(&mut cmd, conf.to_string().as_bytes())
    }

    /// claims.json as the agent's kubelet plugin writes it: a claim of
    /// the pod's on green's device, taking no bandwidth (so nothing is
    /// shaped: that is tests/shaping.rs).
    fn prepared(&self) {
        let claims = json!({"claim-1": {"namespace": "default", "name": "web-green", "pods": ["pod-uid-1"],
            "devices": [{"request": "net", "pool": "node1", "device": "green", "network": "green", "interface": "sv-a"}]}});
        std::fs::write(self.state().join("claims.json"), claims.to_string()).unwrap();
    }

    fn pod_netns(&self) -> String {
        format!("/run/netns/{}", self.pod.name)
    }

    fn add(&self, id: &str, conf: &Value) -> Output {
        self.cni("ADD", id, "net1", Some(&self.pod_netns()), conf, PLUGINS)
    }

    fn del(&self, id: &str, conf: &Value) -> Output {
        self.cni("DEL", id, "net1", Some(&self.pod_netns()), conf, PLUGINS)
    }

    fn pod_links(&self) -> Vec<String> {
        let out = self.pod.ip(&["-j", "link", "show"]);
        let links: Value = serde_json::from_slice(&out.stdout).unwrap();
        links
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l["ifname"].as_str().unwrap().to_string())
            .collect()
    }

    fn cache_files(&self) -> Vec<String> {
        let mut files: Vec<String> = std::fs::read_dir(self.cache())
            .map(|d| {
                d.flatten()
                    .map(|e| e.file_name().into_string().unwrap())
                    .collect()
            })
            .unwrap_or_default();
        files.sort();
        files
    }

    /// Makes every cache entry two minutes old.
    fn age_cache(&self) {
        use nix::sys::time::TimeSpec;
        let old = std::time::SystemTime::now() - std::time::Duration::from_secs(120);
        let since = old.duration_since(std::time::UNIX_EPOCH).unwrap();
        let t = TimeSpec::from(since);
        for f in self.cache_files() {
            nix::sys::stat::utimensat(
                nix::fcntl::AT_FDCWD,
                &self.cache().join(f),
                &t,
                &t,
                nix::sys::stat::UtimensatFlags::NoFollowSymlink,
            )
            .unwrap();
        }
    }

    fn lease_files(&self) -> Vec<String> {
        let dir = self.leases().join("green");
        let mut files: Vec<String> = std::fs::read_dir(dir)
            .map(|d| {
                d.flatten()
                    .map(|e| e.file_name().into_string().unwrap())
                    .collect()
            })
            .unwrap_or_default();
        files.retain(|f| f.starts_with("10."));
        files.sort();
        files
    }
}

/// Writes a node-level setting.
fn node_config(path: &Path, state: &Path, cache: &Path) {
    std::fs::write(
        path,
        json!({"stateDir": state, "cacheDir": cache}).to_string(),
    )
    .unwrap();
}

#[test]
fn add_attaches_a_bridge_macvlan_on_the_resolved_device_and_del_removes_it() {
    let lab = Lab::new("cni-add");
    let conf = lab.static_ip(5);
    let result = ok(&lab.add("c1", &conf));
    assert_eq!(result["cniVersion"], "1.0.0");
    assert_eq!(result["interfaces"][0]["name"], "net1");
    assert_eq!(result["interfaces"][0]["sandbox"], lab.pod_netns());
    assert_eq!(result["ips"][0]["address"], "10.10.0.5/24");

    let net1 = lab.link(&lab.pod, "net1");
    assert_eq!(net1["linkinfo"]["info_kind"], "macvlan");
    assert_eq!(net1["linkinfo"]["info_data"]["mode"], "bridge");
    let sv_a = lab.link(&lab.node, "sv-a");
    assert_eq!(
        net1["link_index"], sv_a["ifindex"],
        "lower device must be exactly sv-a"
    );
    assert_eq!(lab.cache_files(), ["c1:net1.json", "c1:net1.lock"]);
    let entry: Value =
        serde_json::from_slice(&std::fs::read(lab.cache().join("c1:net1.json")).unwrap()).unwrap();
    assert_eq!(entry["config"]["master"], "sv-a");

    // CHECK with the ADD result as prevResult.
    let mut check = conf.clone();
    check["prevResult"] = result.clone();
    ok(&lab.cni(
        "CHECK",
        "c1",
        "net1",
        Some(&lab.pod_netns()),
        &check,
        PLUGINS,
    ));

    let mut del = conf.clone();
    del["prevResult"] = result;
    ok(&lab.del("c1", &del));
    assert_eq!(lab.pod_links(), ["lo"]);
    assert!(lab.cache_files().is_empty());
    ok(&lab.del("c1", &del));
}

#[test]
fn del_succeeds_when_snapshot_cache_device_or_netns_is_gone() {
    let lab = Lab::new("cni-del");
    let conf = lab.static_ip(6);
    // Snapshot and map gone: the cache entry still drives DEL.
    ok(&lab.add("c1", &conf));
    std::fs::remove_dir_all(lab.state()).unwrap();
    ok(&lab.del("c1", &conf));
    assert_eq!(lab.pod_links(), ["lo"]);

    // Cache gone: DEL rebuilds from the snapshot.
    lab.snapshot(&["sv-a"]);
    ok(&lab.add("c2", &conf));
    std::fs::remove_dir_all(lab.cache()).unwrap();
    ok(&lab.del("c2", &conf));
    assert_eq!(lab.pod_links(), ["lo"]);

    // The device itself gone (its macvlan goes with it) and no snapshot.
    ok(&lab.add("c3", &conf));
    lab.node.ip(&["link", "del", "sv-a"]);
    std::fs::remove_dir_all(lab.state()).unwrap();
    ok(&lab.del("c3", &conf));
    assert!(lab.cache_files().is_empty());

    // The netns gone.
    ok(&lab.cni(
        "DEL",
        "c4",
        "net1",
        Some("/run/netns/does-not-exist"),
        &conf,
        PLUGINS,
    ));
    ok(&lab.cni("DEL", "c4", "net1", None, &conf, PLUGINS));
}

#[test]
fn gc_releases_the_leases_of_attachments_no_longer_valid() {
    let lab = Lab::new("cni-gc");
    // GC is CNI 1.1.0; Debian's macvlan speaks 1.0.0, spoken to as such.
    let conf = lab.host_local("1.1.0");
    let mut pods = Vec::new();
    for id in ["c1", "c2", "c3"] {
        let pod = Netns::new("cni-gc-pod");
        let result = ok(&lab.cni(
            "ADD",
            id,
            "net1",
            Some(&format!("/run/netns/{}", pod.name)),
            &conf,
            PLUGINS,
        ));
        assert_eq!(
            result["cniVersion"], "1.1.0",
            "the runtime gets its own version back"
        );
        pods.push(pod);
    }
    assert_eq!(lab.lease_files().len(), 3);
    let mut gc = conf.clone();
    gc["cni.dev/valid-attachments"] = json!([{"containerID": "c1", "ifname": "net1"}]);
    // Entries a minute old or younger may be ADDs in flight: kept.
    ok(&lab.cni("GC", "", "", None, &gc, PLUGINS));
    assert_eq!(lab.lease_files().len(), 3, "young entries are left alone");
    lab.age_cache();
    ok(&lab.cni("GC", "", "", None, &gc, PLUGINS));
    let leases = lab.lease_files();
    assert_eq!(leases.len(), 1, "{leases:?}");
    let owner = std::fs::read_to_string(lab.leases().join("green").join(&leases[0])).unwrap();
    assert!(owner.starts_with("c1"), "{owner}");
    assert_eq!(lab.cache_files(), ["c1:net1.json", "c1:net1.lock"]);
}

#[test]
fn errors_carry_the_right_codes_and_leave_nothing_behind() {
    let lab = Lab::new("cni-err");
    let conf = lab.static_ip(7);
    let netns = lab.pod_netns();
    let run = |conf: &Value, id: &str, ifname: &str| {
        lab.cni("ADD", id, ifname, Some(&netns), conf, PLUGINS)
    };

    let mut blue = conf.clone();
    blue["network"] = json!("blue");
    let e = error(&run(&blue, "c1", "net1"));
    assert_eq!(e["code"], 100);
    let msg = e["msg"].as_str().unwrap();
    assert!(
        msg.contains("\"blue\"") && msg.contains("node1") && msg.contains("lldp.systemName"),
        "{msg}"
    );
    assert!(
        e["details"]
            .as_str()
            .unwrap()
            .contains("kubectl get nodesurvey node1")
    );

    let mut purple = conf.clone();
    purple["network"] = json!("purple");
    let e = error(&run(&purple, "c1", "net1"));
    assert_eq!(e["code"], 100);
    assert!(
        e["msg"]
            .as_str()
            .unwrap()
            .contains("not mapped on node node1")
    );

    let mut master = conf.clone();
    master["master"] = json!("sv-b");
    assert_eq!(error(&run(&master, "c1", "net1"))["code"], 7);

    let out = lab
        .node
        .command(surveyor())
        .env("CNI_COMMAND", "ADD")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(error(&out)["code"], 4, "no CNI_CONTAINERID");
    assert_eq!(error(&run(&conf, "../../etc", "net1"))["code"], 4);
    assert_eq!(error(&run(&conf, "c1", "../x"))["code"], 4);

    let mut old = conf.clone();
    old["cniVersion"] = json!("0.2.0");
    assert_eq!(error(&run(&old, "c1", "net1"))["code"], 1);

    let mut cmd = lab.node.command(surveyor());
    cmd.env("CNI_COMMAND", "ADD")
        .env("CNI_CONTAINERID", "c1")
        .env("CNI_NETNS", &netns)
        .env("CNI_IFNAME", "net1")
        .env("CNI_PATH", PLUGINS);
    let out = support::run_with_stdin(&mut cmd, b"{\"cniVersion\": \"1.0.0\", oops");
    assert_eq!(error(&out)["code"], 6);

    let elsewhere = lab.dir.path().join("elsewhere.json");
    node_config(&elsewhere, &lab.dir.path().join("nowhere"), &lab.cache());
    let e = error(&lab.cni_with(
        "ADD",
        "c1",
        "net1",
        Some(&netns),
        &conf,
        PLUGINS,
        &elsewhere,
    ));
    assert_eq!(e["code"], 11);
    assert!(e["details"].as_str().unwrap().contains("surveyor agent"));

    // The delegate fails (static IPAM without addresses): its code and
    // message survive, the details say what surveyor tried.
    let bad_ipam = lab.config("1.0.0", json!({"type": "static"}));
    let e = error(&run(&bad_ipam, "c1", "net1"));
    assert!(
        e["details"]
            .as_str()
            .unwrap()
            .contains("network \"green\" on node node1, device sv-a, delegate macvlan"),
        "{e}"
    );

    // The device vanished and no candidate is left.
    lab.snapshot(&["sv-a"]);
    lab.node.ip(&["link", "set", "sv-a", "name", "sv-renamed"]);
    assert_eq!(error(&run(&conf, "c1", "net1"))["code"], 101);

    assert_eq!(lab.pod_links(), ["lo"], "a failed ADD leaves no interface");
    assert!(
        lab.cache_files().is_empty(),
        "a failed ADD leaves no cache entry"
    );
}

#[test]
fn a_repeated_add_that_fails_keeps_the_first_attachment() {
    let lab = Lab::new("cni-twice");
    let conf = lab.static_ip(11);
    ok(&lab.add("c1", &conf));
    let e = error(&lab.add("c1", &conf));
    assert!(
        e["details"].as_str().unwrap().contains("device sv-a"),
        "{e}"
    );
    assert_eq!(lab.pod_links(), ["lo", "net1"]);
    assert_eq!(lab.cache_files(), ["c1:net1.json", "c1:net1.lock"]);
    ok(&lab.del("c1", &conf));
    assert_eq!(lab.pod_links(), ["lo"]);
}

#[test]
fn a_stale_snapshot_falls_back_to_the_next_candidate() {
    let lab = Lab::new("cni-next");
    lab.node.ip(&["link", "del", "sv-a"]);
    ok(&lab.add("c1", &lab.static_ip(8)));
    let net1 = lab.link(&lab.pod, "net1");
    assert_eq!(net1["link_index"], lab.link(&lab.node, "sv-b")["ifindex"]);
    ok(&lab.del("c1", &lab.static_ip(8)));
}

#[test]
fn version_and_status() {
    let lab = Lab::new("cni-ver");
    let conf = lab.static_ip(9);
    let v = ok(&lab.cni(
        "VERSION",
        "",
        "",
        None,
        &json!({"cniVersion": "1.0.0"}),
        PLUGINS,
    ));
    assert_eq!(
        v["supportedVersions"],
        json!(["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"])
    );
    assert_eq!(v["cniVersion"], "1.0.0");
    let mut status = conf.clone();
    status["cniVersion"] = json!("1.1.0");
    assert_eq!(
        ok(&lab.cni("STATUS", "", "", None, &status, PLUGINS)),
        Value::Null
    );
    std::fs::remove_dir_all(lab.state()).unwrap();
    assert_eq!(
        error(&lab.cni("STATUS", "", "", None, &status, PLUGINS))["code"],
        50
    );
}

/// A fake delegate recording what it is given, placed first on CNI_PATH.
fn recorder(dir: &Path, name: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt as _;
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let script = bin.join(name);
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\ncat > {0}/stdin.json\nenv | grep '^CNI_' | sort > {0}/env\necho '{{\"cniVersion\":\"1.0.0\",\"interfaces\":[{{\"name\":\"net1\"}}],\"ips\":[]}}'\n",
            dir.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    bin
}

#[test]
fn ipvlan_gets_the_right_config_and_env() {
    let lab = Lab::new("cni-ipvlan");
    let rec = lab.dir.path().join("rec");
    let bin = recorder(&rec, "ipvlan");
    let mut conf = lab.static_ip(10);
    conf["delegate"] = json!("ipvlan");
    conf["mode"] = json!("l2");
    // Things a pod controls must not steer the master.
    conf["args"] = json!({"cni": {"master": "sv-b"}});
    conf["runtimeConfig"] = json!({"master": "sv-b", "mac": "02:00:00:00:00:10"});
    let path = format!("{}:{PLUGINS}", bin.display());
    let netns = lab.pod_netns();
    ok(&lab.cni("ADD", "c1", "net1", Some(&netns), &conf, &path));
    let sent: Value =
        serde_json::from_slice(&std::fs::read(rec.join("stdin.json")).unwrap()).unwrap();
    assert_eq!(sent["type"], "ipvlan");
    assert_eq!(sent["master"], "sv-a");
    assert_eq!(sent["mode"], "l2");
    assert_eq!(sent["name"], "green");
    assert_eq!(sent["cniVersion"], "1.0.0");
    assert_eq!(sent["args"], conf["args"]);
    assert_eq!(sent["runtimeConfig"], conf["runtimeConfig"]);
    for own in ["network", "delegate"] {
        assert!(sent.get(own).is_none(), "{own} reached the delegate");
    }
    let env = std::fs::read_to_string(rec.join("env")).unwrap();
    for line in [
        "CNI_ARGS=IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=web;K8S_POD_UID=pod-uid-1",
        "CNI_COMMAND=ADD",
        "CNI_CONTAINERID=c1",
        "CNI_IFNAME=net1",
        &format!("CNI_NETNS={netns}"),
        &format!("CNI_PATH={path}"),
    ] {
        assert!(
            env.lines().any(|l| l == line),
            "{line} missing from:\n{env}"
        );
    }
    ok(&lab.cni("DEL", "c1", "net1", Some(&netns), &conf, &path));
    assert!(
        std::fs::read_to_string(rec.join("env"))
            .unwrap()
            .contains("CNI_COMMAND=DEL")
    );

    // The real ipvlan, where the kernel has it.
    let probe = lab
        .node
        .try_ip(&["link", "add", "sv-probe", "link", "sv-a", "type", "ipvlan"]);
    if !probe.status.success() {
        let why = String::from_utf8_lossy(&probe.stderr);
        assert!(
            why.contains("Unknown device type"),
            "unexpected ipvlan probe failure: {why}"
        );
        println!(
            "skipping the real ipvlan ADD: kernel lacks ipvlan ({})",
            why.trim()
        );
        return;
    }
    lab.node.ip(&["link", "del", "sv-probe"]);
    let result = ok(&lab.cni("ADD", "c2", "net1", Some(&netns), &conf, PLUGINS));
    assert_eq!(result["interfaces"][0]["name"], "net1");
    assert_eq!(
        lab.link(&lab.pod, "net1")["linkinfo"]["info_kind"],
        "ipvlan"
    );
    ok(&lab.cni("DEL", "c2", "net1", Some(&netns), &conf, PLUGINS));
}

#[test]
fn a_thousand_add_del_cycles_leave_nothing_behind() {
    let lab = Lab::new("cni-churn");
    let conf = lab.host_local("1.0.0");
    for n in 0..1000 {
        let id = format!("c{n}");
        let result = ok(&lab.add(&id, &conf));
        let mut del = conf.clone();
        del["prevResult"] = result;
        ok(&lab.del(&id, &del));
    }
    assert_eq!(lab.pod_links(), ["lo"]);
    assert!(lab.cache_files().is_empty(), "{:?}", lab.cache_files());
    assert!(lab.lease_files().is_empty(), "{:?}", lab.lease_files());
    let node_links = lab.node.ip(&["-j", "link", "show"]);
    let links: Value = serde_json::from_slice(&node_links.stdout).unwrap();
    assert_eq!(
        links.as_array().unwrap().len(),
        3,
        "lo, sv-a, sv-b only: {links}"
    );
}

#[test]
fn end_to_end_the_agents_snapshot_drives_the_plugin() {
    require_plugins();
    let node = Netns::new("e2e");
    let pod = Netns::new("e2e-pod");
    let (_sw, _lldpd) = support::switch(&node, "sv-green", "tor-green-01", "Ethernet1/7", &[]);
    let map = support::lldp_map("green", "tor-green-*");
    let agent =
        support::AgentProcess::start(&node, &[("green.yaml", &map)], &["--include", "sv-*"]);
    agent.wait_for(10, "green resolved", |s| {
        s["networks"]["green"]["device"] == "sv-green"
    });
    let cache = tempfile::tempdir().unwrap();
    let settings = cache.path().join("surveyor.json");
    node_config(&settings, &agent.state, &cache.path().join("cache"));
    let conf = json!({"cniVersion": "1.0.0", "name": "green", "type": "surveyor", "network": "green",
        "ipam": {"type": "static", "addresses": [{"address": "10.40.0.2/24"}]}});
    let run = |command: &str| {
        let mut cmd = node.command(surveyor());
        cmd.env("SURVEYOR_CNI_CONFIG", &settings)
            .env("CNI_COMMAND", command)
            .env("CNI_CONTAINERID", "e2e")
            .env("CNI_NETNS", format!("/run/netns/{}", pod.name))
            .env("CNI_IFNAME", "net1")
            .env("CNI_PATH", PLUGINS);
        support::run_with_stdin(&mut cmd, conf.to_string().as_bytes())
    };
    let result = ok(&run("ADD"));
    assert_eq!(result["ips"][0]["address"], "10.40.0.2/24");
    let out = pod.ip(&["-j", "-d", "link", "show", "dev", "net1"]);
    let net1: Value = serde_json::from_slice(&out.stdout).unwrap();
    let out = node.ip(&["-j", "link", "show", "dev", "sv-green"]);
    let green: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(net1[0]["link_index"], green[0]["ifindex"]);
    ok(&run("DEL"));
}

#[test]
fn gc_without_the_list_of_valid_attachments_releases_nothing() {
    let lab = Lab::new("cni-gc-nolist");
    let conf = lab.host_local("1.1.0");
    ok(&lab.add("c1", &conf));
    lab.age_cache();
    let e = error(&lab.cni("GC", "", "", None, &conf, PLUGINS));
    assert_eq!(e["code"], 7);
    assert!(
        e["msg"]
            .as_str()
            .unwrap()
            .contains("cni.dev/valid-attachments"),
        "{e}"
    );
    assert_eq!(lab.lease_files().len(), 1, "the lease is kept");
    assert_eq!(lab.cache_files(), ["c1:net1.json", "c1:net1.lock"]);
    assert_eq!(lab.pod_links(), ["lo", "net1"]);
    ok(&lab.del("c1", &conf));
}

/// Nothing in a network config chooses where this root process reads or
/// writes, or where the delegate looks for the master.
#[test]
fn a_nad_cannot_choose_directories_or_redirect_the_master() {
    let lab = Lab::new("cni-tenant");
    let target = lab.dir.path().join("tenant-chosen");
    std::fs::create_dir(&target).unwrap();
    for (key, value) in [
        ("cacheDir", json!(target)),
        ("stateDir", json!(target)),
        ("linkInContainer", json!(true)),
        ("master", json!("sv-b")),
    ] {
        let mut conf = lab.static_ip(20);
        conf[key] = value;
        for command in ["ADD", "DEL", "CHECK"] {
            let e = error(&lab.cni(
                command,
                "t1",
                "net1",
                Some(&lab.pod_netns()),
                &conf,
                PLUGINS,
            ));
            assert_eq!(e["code"], 7, "{key} {command}: {e}");
            assert!(e["msg"].as_str().unwrap().contains(key), "{e}");
        }
    }
    assert_eq!(
        std::fs::read_dir(&target).unwrap().count(),
        0,
        "nothing written there"
    );
    assert!(lab.cache_files().is_empty());
    assert_eq!(lab.pod_links(), ["lo"]);
}

#[test]
fn attachments_whose_names_run_together_are_apart() {
    let lab = Lab::new("cni-keys");
    let pod2 = Netns::new("cni-keys-pod2");
    let conf = lab.host_local("1.0.0");
    let netns2 = format!("/run/netns/{}", pod2.name);
    ok(&lab.cni("ADD", "a", "b-c", Some(&lab.pod_netns()), &conf, PLUGINS));
    ok(&lab.cni("ADD", "a-b", "c", Some(&netns2), &conf, PLUGINS));
    ok(&lab.cni("DEL", "a", "b-c", Some(&lab.pod_netns()), &conf, PLUGINS));
    assert_eq!(lab.cache_files(), ["a-b:c.json", "a-b:c.lock"]);
    assert_eq!(lab.lease_files().len(), 1);
    ok(&lab.cni("DEL", "a-b", "c", Some(&netns2), &conf, PLUGINS));
    assert!(lab.cache_files().is_empty());
    assert!(lab.lease_files().is_empty());
}

/// A truncated or garbled cache entry never strands an attachment: DEL
/// falls back to a configuration rebuilt from the snapshot, releases the
/// pod's interface and its lease, exits 0 and says what it did.
#[test]
fn del_with_an_unusable_cache_entry_still_releases_everything() {
    let lab = Lab::new("cni-trunc");
    let conf = lab.host_local("1.0.0");
    for (id, content) in [("t1", ""), ("t2", "{\"containerId\": ")] {
        ok(&lab.add(id, &conf));
        std::fs::write(lab.cache().join(format!("{id}:net1.json")), content).unwrap();
        let out = lab.del(id, &conf);
        ok(&out);
        let said = String::from_utf8_lossy(&out.stderr);
        assert!(
            said.contains("unusable") && said.contains("rebuilt"),
            "{said}"
        );
        assert_eq!(lab.pod_links(), ["lo"], "{id}");
        assert!(
            lab.lease_files().is_empty(),
            "{id}: {:?}",
            lab.lease_files()
        );
        assert!(
            lab.cache_files().is_empty(),
            "{id}: {:?}",
            lab.cache_files()
        );
    }
}

#[test]
fn container_ids_too_long_for_a_file_name_are_refused() {
    let lab = Lab::new("cni-long");
    let long = "a".repeat(300);
    let e = error(&lab.add(&long, &lab.static_ip(21)));
    assert_eq!(e["code"], 4);
    assert!(lab.cache_files().is_empty());
}

/// 200 ADDs at once (distinct containers, host-local IPAM), a GC of
/// attachments it does not know running meanwhile, then 200 DELs: all
/// succeed and nothing is left (links, cache entries, leases).
#[test]
fn two_hundred_concurrent_adds_with_a_gc_leave_nothing_behind() {
    let lab = Lab::new("cni-200");
    let conf = lab.host_local("1.1.0");
    let netns = lab.pod_netns();
    let ifname = |n: usize| format!("p{n}");
    std::thread::scope(|s| {
        let adds: Vec<_> = (0..200)
            .map(|n| {
                let (lab, conf, netns) = (&lab, &conf, &netns);
                s.spawn(move || {
                    ok(&lab.cni(
                        "ADD",
                        &format!("c{n}"),
                        &ifname(n),
                        Some(netns),
                        conf,
                        PLUGINS,
                    ))
                })
            })
            .collect();
        // GC with an empty list of valid attachments while ADDs run: it may
        // release none of them (all in flight or just made).
        let mut gc = conf.clone();
        gc["cni.dev/valid-attachments"] = json!([]);
        for _ in 0..3 {
            ok(&lab.cni("GC", "", "", None, &gc, PLUGINS));
        }
        for a in adds {
            a.join().unwrap();
        }
    });
    assert_eq!(lab.lease_files().len(), 200);
    assert_eq!(lab.pod_links().len(), 201);
    std::thread::scope(|s| {
        for n in 0..200 {
            let (lab, conf, netns) = (&lab, &conf, &netns);
            s.spawn(move || {
                ok(&lab.cni(
                    "DEL",
                    &format!("c{n}"),
                    &ifname(n),
                    Some(netns),
                    conf,
                    PLUGINS,
                ))
            });
        }
    });
    assert_eq!(lab.pod_links(), ["lo"]);
    assert!(lab.cache_files().is_empty(), "{:?}", lab.cache_files());
    assert!(lab.lease_files().is_empty(), "{:?}", lab.lease_files());
}

/// Multus's DRA path passes the allocation's device as `deviceID`: ADD
/// attaches to it while it is the network's device, and refuses (105,
/// nothing created) once the network has moved; the key never reaches
/// the delegate.
#[test]
fn a_dra_allocation_is_used_only_while_it_is_the_network_s_device() {
    let lab = Lab::new("cni-dra");
    let rec = lab.dir.path().join("rec");
    let bin = recorder(&rec, "macvlan");
    let path = format!("{}:{PLUGINS}", bin.display());
    let netns = lab.pod_netns();
    let mut conf = lab.static_ip(20);
    conf["deviceID"] = json!("sv-a");
    lab.prepared();
    ok(&lab.cni("ADD", "c1", "net1", Some(&netns), &conf, &path));
    let sent: Value =
        serde_json::from_slice(&std::fs::read(rec.join("stdin.json")).unwrap()).unwrap();
    assert_eq!(sent["master"], "sv-a");
    assert!(
        sent.get("deviceID").is_none(),
        "deviceID reached the delegate"
    );
    ok(&lab.cni("DEL", "c1", "net1", Some(&netns), &conf, &path));

    // An allocation of another device: refused, whatever it names.
    conf["deviceID"] = json!("sv-b");
    std::fs::remove_file(rec.join("stdin.json")).unwrap();
    let e = error(&lab.cni("ADD", "c2", "net1", Some(&netns), &conf, &path));
    assert_eq!(e["code"], 105, "{e}");
    let msg = e["msg"].as_str().unwrap();
    assert!(
        msg.contains("\"green\"")
            && msg.contains("node1")
            && msg.contains("\"sv-b\"")
            && msg.contains("sv-a"),
        "{e}"
    );
    assert!(
        e["details"].as_str().unwrap().contains("delete the pod"),
        "{e}"
    );
    assert!(!rec.join("stdin.json").exists(), "the delegate ran");
    assert!(lab.cache_files().is_empty(), "{:?}", lab.cache_files());
}

/// On the DRA path ADD records what the pod's interface got (for the agent
/// to show on the pod's ResourceClaim): the real macvlan's MAC and the
/// address IPAM gave. DEL forgets it; without `deviceID` nothing is
/// recorded.
#[test]
fn a_dra_attachment_is_recorded_for_its_claim_and_forgotten_at_del() {
    let lab = Lab::new("cni-nd");
    lab.prepared();
    let mut conf = lab.static_ip(21);
    conf["deviceID"] = json!("sv-a");
    ok(&lab.add("c1", &conf));
    let file = lab.state().join("attachments").join("c1:net1.json");
    let record: Value = serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
    let mac = lab.link(&lab.pod, "net1")["address"].clone();
    assert_eq!(
        record,
        json!({"podUid": "pod-uid-1", "podNamespace": "default", "podName": "web",
            "network": "green", "device": "sv-a", "interface": "net1",
            "mac": mac, "ips": ["10.10.0.21/24"], "claimed": true})
    );
    ok(&lab.del("c1", &conf));
    assert!(!file.exists());
    assert_eq!(lab.pod_links(), ["lo"]);

    let plain = lab.static_ip(22);
    ok(&lab.add("c2", &plain));
    assert!(
        !lab.state()
            .join("attachments")
            .join("c2:net1.json")
            .exists()
    );
    ok(&lab.del("c2", &plain));
}
