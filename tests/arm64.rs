//! The aarch64 binary (`--target aarch64-unknown-linux-musl`), run under
//! Debian's qemu-aarch64-static on this machine: static and
//! position-independent; `discover` sees what the host build sees; the
//! standalone agent hears a real lldpd switch and resolves a map on it;
//! the CNI plugin attaches a pod through the host's real macvlan and
//! detaches it.
//!
//! qemu-user 7.2 implements neither ethtool's generic netlink nor the
//! SIOCETHTOOL ioctl, nor SOL_PACKET socket options (the LLDP multicast
//! membership): link speed is unknown under it, and the agent says it
//! hears what the NIC passes unfiltered (all of it, on a veth). The lib's
//! unit tests (netlink wire parsing, the ethtool ioctl's structures, LLDP
//! frames) run under qemu too, from .ci/run.

mod support;

use std::process::{Command, Stdio};

use serde_json::{Value, json};
use support::{AgentProcess, Lldpd, Netns, aarch64_binary, lldp_map, run, run_with_stdin};

const QEMU: &str = "qemu-aarch64-static";
const PLUGINS: &str = "/usr/lib/cni";

fn qemu_in(ns: &Netns) -> Command {
    let mut cmd = ns.command(QEMU);
    cmd.arg(aarch64_binary());
    cmd
}

#[test]
fn the_aarch64_binary_is_static_and_position_independent() {
    let binary = aarch64_binary();
    let path = binary.to_str().unwrap();
    let header = String::from_utf8(run("readelf", &["-h", "-W", path]).stdout).unwrap();
    assert!(header.contains("AArch64"), "{header}");
    assert!(
        header.contains("DYN (Position-Independent Executable file)"),
        "{header}"
    );
    let segments = String::from_utf8(run("readelf", &["-l", "-W", path]).stdout).unwrap();
    assert!(!segments.contains("INTERP"), "a dynamic loader: {segments}");
    let dynamic = String::from_utf8(run("readelf", &["-d", "-W", path]).stdout).unwrap();
    assert!(!dynamic.contains("NEEDED"), "shared libraries: {dynamic}");
    let out = Command::new(QEMU)
        .arg(&binary)
        .arg("version")
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("surveyor {}", env!("CARGO_PKG_VERSION"))
    );
}

/// The facts qemu can give (all but ethtool's) are the host build's.
#[test]
fn discover_under_qemu_sees_what_the_host_build_sees() {
    let ns = Netns::new("a64-disc");
    let peer = Netns::new("a64-disc-p");
    support::cable(&ns, "sv-a", &peer, "p0");
    ns.ip(&[
        "link",
        "set",
        "sv-a",
        "alias",
        "green-uplink",
        "mtu",
        "9000",
    ]);
    ns.ip(&[
        "link",
        "property",
        "add",
        "dev",
        "sv-a",
        "altname",
        "sv-green0",
    ]);
    ns.ip(&["address", "add", "192.0.2.10/24", "dev", "sv-a"]);
    ns.ip(&["address", "add", "2001:db8::10/64", "dev", "sv-a", "nodad"]);
    let args = ["discover", "--include", "sv-*", "-o", "json"];
    let out = qemu_in(&ns).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut arm: Value = serde_json::from_slice(&out.stdout).unwrap();
    let host = support::discover_json(&ns, &["--include", "sv-*"]);
    let sv_a = &arm["interfaces"][0];
    assert_eq!(sv_a["name"], "sv-a");
    assert_eq!(sv_a["kind"], "veth");
    assert_eq!(sv_a["alias"], "green-uplink");
    assert_eq!(sv_a["altNames"], json!(["sv-green0"]));
    assert_eq!(sv_a["mtu"], 9000);
    assert_eq!(
        sv_a["addresses"],
        json!(["192.0.2.10/24", "2001:db8::10/64"])
    );
    // Speed and duplex come from ethtool, which qemu-user cannot reach.
    assert!(sv_a.get("speedMbps").is_none(), "{sv_a}");
    let mut host = host;
    for i in host["interfaces"].as_array_mut().unwrap() {
        let i = i.as_object_mut().unwrap();
        assert_eq!(i.remove("speedMbps"), Some(json!(10000)));
        assert_eq!(i.remove("duplex"), Some(json!("full")));
    }
    arm["node"] = host["node"].clone();
    assert_eq!(arm, host);
}

/// The standalone agent under qemu hears a real lldpd switch on its
/// AF_PACKET socket and resolves a map that selects the switch.
#[test]
fn the_aarch64_agent_resolves_a_map_on_a_real_lldpd_switch() {
    let node = Netns::new("a64-agent");
    let switch = Netns::new("a64-agent-sw");
    support::cable(&node, "sv-a", &switch, "swp1");
    support::cable(&node, "sv-b", &switch, "swp2");
    let _lldpd = Lldpd::start(
        &switch,
        "swp1",
        &[],
        &["configure system hostname tor-green-07"],
    );
    let binary = aarch64_binary();
    let agent = AgentProcess::start_program(
        &node,
        &[QEMU, binary.to_str().unwrap()],
        &[("green.yaml", &lldp_map("green", "tor-green-*"))],
        &["--include", "sv-*"],
    );
    let snap = agent.wait_for(30, "green on sv-a under qemu", |s| {
        s["networks"]["green"]["device"] == "sv-a"
    });
    assert_eq!(snap["node"], "node1");
    let survey = agent.wait_for_survey(10, "the neighbor in survey.json", |s| {
        s["interfaces"][0]["lldp"]["systemName"] == "tor-green-07"
    });
    assert_eq!(survey["interfaces"][0]["lldp"]["portDescription"], "swp1");
    assert!(
        agent
            .log()
            .contains("cannot join the multicast group 01:80:c2:00:00:0e"),
        "qemu lacks SOL_PACKET; the agent says so:\n{}",
        agent.log()
    );
}

/// The aarch64 CNI plugin under qemu attaches a pod on green through the
/// host's macvlan (an x86_64 binary it execs) and detaches it; its cache
/// entry is written and removed.
#[test]
fn the_aarch64_plugin_attaches_and_detaches_a_pod_through_the_real_macvlan() {
    assert!(
        std::path::Path::new(PLUGINS).join("macvlan").exists(),
        "this test needs the CNI reference plugins in {PLUGINS}: apt-get install -y containernetworking-plugins (.ci/run does)"
    );
    let node = Netns::new("a64-cni");
    let peer = Netns::new("a64-cni-p");
    let pod = Netns::new("a64-cni-pod");
    support::cable(&node, "sv-a", &peer, "p0");
    let dir = tempfile::tempdir().unwrap();
    let (state, cache) = (dir.path().join("state"), dir.path().join("cache"));
    std::fs::create_dir(&state).unwrap();
    let link: Value =
        serde_json::from_slice(&node.ip(&["-j", "link", "show", "dev", "sv-a"]).stdout).unwrap();
    let snapshot = json!({"node": "node1", "generation": 1, "networks": {"green": {
        "device": "sv-a", "index": link[0]["ifindex"], "mac": link[0]["address"], "candidates": ["sv-a"]}}});
    std::fs::write(state.join("networks.json"), snapshot.to_string()).unwrap();
    let node_config = dir.path().join("surveyor.json");
    std::fs::write(
        &node_config,
        json!({"stateDir": state, "cacheDir": cache}).to_string(),
    )
    .unwrap();
    let conf = json!({"cniVersion": "1.0.0", "name": "green", "type": "surveyor", "network": "green",
        "mode": "bridge", "ipam": {"type": "static", "addresses": [{"address": "10.60.0.2/24"}]}});
    let cni = |command: &str, conf: &Value| {
        let mut cmd = qemu_in(&node);
        cmd.env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .env("SURVEYOR_CNI_CONFIG", &node_config)
            .env("CNI_COMMAND", command)
            .env("CNI_CONTAINERID", "a64-pod")
            .env("CNI_NETNS", format!("/run/netns/{}", pod.name))
            .env("CNI_IFNAME", "net1")
            .env("CNI_PATH", PLUGINS)
            .stdin(Stdio::piped());
        run_with_stdin(&mut cmd, conf.to_string().as_bytes())
    };
    let added = cni("ADD", &conf);
    assert!(
        added.status.success(),
        "{}{}",
        String::from_utf8_lossy(&added.stdout),
        String::from_utf8_lossy(&added.stderr)
    );
    let result: Value = serde_json::from_slice(&added.stdout).unwrap();
    assert_eq!(result["ips"][0]["address"], "10.60.0.2/24");
    let net1: Value =
        serde_json::from_slice(&pod.ip(&["-j", "-d", "link", "show", "dev", "net1"]).stdout)
            .unwrap();
    assert_eq!(net1[0]["linkinfo"]["info_kind"], "macvlan", "{net1}");
    assert!(cache.join("a64-pod:net1.json").exists());
    let mut check = conf.clone();
    check["prevResult"] = result.clone();
    let checked = cni("CHECK", &check);
    assert!(
        checked.status.success(),
        "{}",
        String::from_utf8_lossy(&checked.stdout)
    );
    let deleted = cni("DEL", &conf);
    assert!(
        deleted.status.success(),
        "{}",
        String::from_utf8_lossy(&deleted.stdout)
    );
    assert!(
        !pod.try_ip(&["link", "show", "dev", "net1"])
            .status
            .success()
    );
    assert!(!cache.join("a64-pod:net1.json").exists());
}
