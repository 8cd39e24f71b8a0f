//! A node with a green network for shaping tests and benchmarks: the node
//! namespace's `sv-a` cabled to a switch namespace (`p0`, 10.40.0.1/24,
//! where iperf3 servers run), the agent's snapshot naming it, the node's
//! plugin settings, and pods attached through the real plugin and
//! Debian's macvlan.

use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

use serde_json::{Value, json};

use super::{Netns, cable, require_program};

pub const PLUGINS: &str = "/usr/lib/cni";
pub const SWITCH_IP: &str = "10.40.0.1";

pub struct Green {
    pub node: Netns,
    pub switch: Netns,
    pub dir: tempfile::TempDir,
    /// The plugin binary run.
    pub plugin: String,
}

impl Green {
    pub fn new(tag: &str, plugin: &str) -> Green {
        if !Path::new(PLUGINS).join("macvlan").exists() {
            panic!(
                "this needs the CNI reference plugins in {PLUGINS}: apt-get install -y containernetworking-plugins (.ci/run does)"
            );
        }
        require_program("iperf3", "iperf3");
        let node = Netns::new(tag);
        let switch = Netns::new(&format!("{tag}-sw"));
        cable(&node, "sv-a", &switch, "p0");
        switch.ip(&["addr", "add", &format!("{SWITCH_IP}/24"), "dev", "p0"]);
        let green = Green {
            node,
            switch,
            dir: tempfile::tempdir().unwrap(),
            plugin: plugin.to_string(),
        };
        let link: Value =
            serde_json::from_slice(&green.node.ip(&["-j", "link", "show", "dev", "sv-a"]).stdout)
                .unwrap();
        let snapshot = json!({"node": "node1", "generation": 1, "networks": {"green": {
            "device": "sv-a", "index": link[0]["ifindex"], "mac": link[0]["address"], "candidates": ["sv-a"]}}});
        std::fs::create_dir_all(green.state()).unwrap();
        std::fs::write(green.state().join("networks.json"), snapshot.to_string()).unwrap();
        std::fs::write(
            green.settings(),
            json!({"stateDir": green.state(), "cacheDir": green.dir.path().join("cache")})
                .to_string(),
        )
        .unwrap();
        green
    }

    pub fn state(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    pub fn settings(&self) -> PathBuf {
        self.dir.path().join("surveyor.json")
    }

    /// A macvlan attachment to green with address 10.40.0.`host`, and
    /// `runtime` as its runtimeConfig (`null` for none).
    pub fn conf(&self, host: u8, runtime: Value) -> Value {
        let mut conf = json!({
            "cniVersion": "1.0.0", "name": "green", "type": "surveyor", "network": "green",
            "mode": "bridge",
            "ipam": {"type": "static", "addresses": [{"address": format!("10.40.0.{host}/24")}]},
        });
        if !runtime.is_null() {
            conf["capabilities"] = json!({"bandwidth": true});
            conf["runtimeConfig"] = runtime;
        }
        conf
    }

    /// Writes the claims the agent's kubelet plugin would have prepared.
    pub fn claims(&self, claims: Value) {
        std::fs::write(self.state().join("claims.json"), claims.to_string()).unwrap();
    }

    /// The plugin's command for `command` on attachment `id`/`ifname` of
    /// `pod` (no CNI_NETNS when `None`), for pod UID `pod_uid`.
    pub fn command(
        &self,
        command: &str,
        id: &str,
        ifname: &str,
        pod: Option<&str>,
        pod_uid: &str,
    ) -> Command {
        let mut cmd = self.node.command(&self.plugin);
        cmd.env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .env("SURVEYOR_CNI_CONFIG", self.settings())
            .env("CNI_COMMAND", command)
            .env("CNI_CONTAINERID", id)
            .env("CNI_IFNAME", ifname)
            .env("CNI_PATH", PLUGINS)
            .env(
                "CNI_ARGS",
                format!(
                    "IgnoreUnknown=1;K8S_POD_NAMESPACE=web;K8S_POD_NAME=p;K8S_POD_UID={pod_uid}"
                ),
            );
        if let Some(pod) = pod {
            cmd.env("CNI_NETNS", format!("/run/netns/{pod}"));
        }
        cmd
    }

    /// Runs the plugin with `conf` on stdin.
    pub fn cni(&self, command: &str, id: &str, pod: Option<&Netns>, conf: &Value) -> Output {
        let mut cmd = self.command(command, id, "net1", pod.map(|p| p.name.as_str()), "pod-1");
        super::run_with_stdin(&mut cmd, conf.to_string().as_bytes())
    }
}

/// An iperf3 server on `ip`:`port` in `ns`, for one test, ready when
/// returned (its "Server listening" line read, not slept for).
pub struct Iperf {
    child: Child,
}

impl Iperf {
    pub fn serve(ns: &Netns, ip: &str, port: u16) -> Iperf {
        let mut child = ns
            .command("iperf3")
            .args(["-s", "-B", ip, "-p", &port.to_string(), "--forceflush"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("run iperf3 -s");
        let stdout = child.stdout.take().expect("iperf3 stdout");
        let mut lines = BufReader::new(stdout).lines();
        loop {
            match lines.next() {
                Some(Ok(line)) if line.contains("Server listening") => break,
                Some(Ok(_)) => continue,
                _ => panic!("iperf3 -s on {ip}:{port} ended before listening"),
            }
        }
        Iperf { child }
    }
}

impl Drop for Iperf {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Which way traffic flows, from the pod's side.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flow {
    /// Pod to switch.
    Egress,
    /// Switch to pod (iperf3 -R).
    Ingress,
}

/// Starts an iperf3 TCP test from `pod` to the server on `port`, for
/// `secs`; [`goodput`] reads its result.
pub fn start_flow(pod: &Netns, port: u16, flow: Flow, secs: f64) -> Child {
    let mut cmd = pod.command("iperf3");
    cmd.args([
        "-c",
        SWITCH_IP,
        "-p",
        &port.to_string(),
        "-t",
        &format!("{secs}"),
        "-J",
    ]);
    if flow == Flow::Ingress {
        cmd.arg("-R");
    }
    cmd.stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run iperf3 -c")
}

/// The TCP goodput (bits/s, as the receiver counted it) of a finished flow.
pub fn goodput(flow: Child) -> f64 {
    let out = flow.wait_with_output().expect("iperf3 -c");
    let v: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "iperf3 -c gave no JSON ({e}): {} {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    v["end"]["sum_received"]["bits_per_second"]
        .as_f64()
        .unwrap_or_else(|| panic!("iperf3 -c: no result: {v}"))
}

/// One flow, run to its end.
pub fn measure(pod: &Netns, port: u16, flow: Flow, secs: f64) -> f64 {
    goodput(start_flow(pod, port, flow, secs))
}

/// The qdiscs (`tc -j qdisc show`) of a namespace.
pub fn qdiscs(ns: &Netns) -> Value {
    let out = ns
        .command("tc")
        .args(["-j", "qdisc", "show"])
        .output()
        .unwrap();
    serde_json::from_slice(&out.stdout).unwrap_or(Value::Null)
}

/// The filters on `dev`'s ingress in a namespace.
pub fn ingress_filters(ns: &Netns, dev: &str) -> String {
    let out = ns
        .command("tc")
        .args(["filter", "show", "dev", dev, "ingress"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The names of the links in a namespace.
pub fn links(ns: &Netns) -> Vec<String> {
    let out = ns.ip(&["-j", "link", "show"]);
    let links: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    links
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|l| l["ifname"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}
