//! `surveyor uninstall`: a host left as it was before `install-cni` and an
//! agent ran on it (what is not Surveyor's left alone), refused while an
//! agent runs; the cluster cleaned of everything Surveyor made but the
//! admins' NetworkMaps, refused while its workloads exist, with exactly
//! the requests deploy/uninstall's RBAC grants.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{Value, json};
use support::fake_api::{
    DAEMONSETS, DEPLOYMENTS, DEVICE_CLASSES, FakeApi, MAPS, NODES, SLICES, SURVEYS,
    assert_declared_by, map, node,
};
use support::{AgentProcess, Netns, surveyor};
use surveyor::uninstall::cluster::{self, API_REQUESTS};

/// A stand-in for a node's root, with Surveyor installed and run on it
/// (the plugin, its setting, the agent's state, an ADD cache entry, the
/// kubelet plugin's sockets) and what other software keeps beside it.
struct Host {
    dir: tempfile::TempDir,
}

impl Host {
    fn path(&self, p: &str) -> PathBuf {
        self.dir.path().join(p.trim_start_matches('/'))
    }

    fn new() -> Host {
        let host = Host {
            dir: tempfile::tempdir().unwrap(),
        };
        // As the DaemonSet's hostPaths make them.
        for dir in ["/opt/cni/bin", "/etc/cni/net.d/surveyor.d"] {
            std::fs::create_dir_all(host.path(dir)).unwrap();
        }
        let out = Command::new(surveyor())
            .args(["install-cni", "--dir"])
            .arg(host.path("/opt/cni/bin"))
            .arg("--node-config")
            .arg(host.path("/etc/cni/net.d/surveyor.d/surveyor.json"))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        for (path, text) in [
            ("/opt/cni/bin/macvlan", "another plugin"),
            ("/opt/cni/bin/.surveyor.a1b2c3", "an install cut short"),
            ("/etc/cni/net.d/10-flannel.conflist", "{}"),
            ("/run/surveyor/networks.json", "{}"),
            ("/run/surveyor/neighbors.json", "{}"),
            ("/run/surveyor/agent.lock", "pid 1\n"),
            ("/run/surveyor/.survey.json.x1y2.tmp", ""),
            ("/run/surveyor/attachments/c1:net1.json", "{}"),
            ("/run/surveyor/notes.txt", "an admin's"),
            ("/var/lib/cni/surveyor/c1:net1.json", "{}"),
            ("/var/lib/cni/surveyor/c1:net1.lock", ""),
            ("/var/lib/cni/networks/green/10.0.0.5", "host-local's lease"),
        ] {
            let path = host.path(path);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, text).unwrap();
        }
        for socket in [
            "/var/lib/kubelet/plugins/surveyor.dev/dra.sock",
            "/var/lib/kubelet/plugins_registry/surveyor.dev-reg.sock",
            "/var/lib/kubelet/plugins_registry/other.dev-reg.sock",
        ] {
            let path = host.path(socket);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::os::unix::net::UnixListener::bind(path).unwrap();
        }
        // A symlink planted where a file of ours goes is not followed.
        std::os::unix::fs::symlink(
            host.path("/var/lib/cni/networks/green/10.0.0.5"),
            host.path("/run/surveyor/survey.json"),
        )
        .unwrap();
        host
    }

    fn uninstall(&self) -> std::process::Output {
        let mut cmd = Command::new(surveyor());
        cmd.args(["uninstall", "node"]);
        for (flag, path) in [
            ("--cni-bin-dir", "/opt/cni/bin"),
            ("--node-config", "/etc/cni/net.d/surveyor.d/surveyor.json"),
            ("--state-dir", "/run/surveyor"),
            ("--cache-dir", "/var/lib/cni/surveyor"),
            ("--kubelet-plugins-dir", "/var/lib/kubelet/plugins"),
            (
                "--kubelet-registry-dir",
                "/var/lib/kubelet/plugins_registry",
            ),
        ] {
            cmd.arg(flag).arg(self.path(path));
        }
        cmd.output().unwrap()
    }

    /// Every path under the host, relative, sorted.
    fn tree(&self) -> Vec<String> {
        fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) {
            for e in std::fs::read_dir(dir).unwrap() {
                let path = e.unwrap().path();
                out.push(format!("/{}", path.strip_prefix(root).unwrap().display()));
                if std::fs::symlink_metadata(&path).unwrap().is_dir() {
                    walk(root, &path, out);
                }
            }
        }
        let mut out = Vec::new();
        walk(self.dir.path(), self.dir.path(), &mut out);
        out.sort();
        out
    }
}

#[test]
fn a_host_is_left_with_what_is_not_surveyor_s_only() {
    let host = Host::new();
    let out = host.uninstall();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        host.tree(),
        [
            "/etc",
            "/etc/cni",
            "/etc/cni/net.d",
            "/etc/cni/net.d/10-flannel.conflist",
            "/opt",
            "/opt/cni",
            "/opt/cni/bin",
            "/opt/cni/bin/macvlan",
            "/run",
            "/run/surveyor",
            "/run/surveyor/notes.txt",
            "/run/surveyor/survey.json",
            "/var",
            "/var/lib",
            "/var/lib/cni",
            "/var/lib/cni/networks",
            "/var/lib/cni/networks/green",
            "/var/lib/cni/networks/green/10.0.0.5",
            "/var/lib/kubelet",
            "/var/lib/kubelet/plugins",
            "/var/lib/kubelet/plugins_registry",
            "/var/lib/kubelet/plugins_registry/other.dev-reg.sock",
        ]
    );
    // What it left is said, and the planted link's target is untouched.
    for left in ["/run/surveyor/notes.txt", "/run/surveyor/survey.json"] {
        assert!(
            stdout.contains(&format!("left {}", host.path(left).display())),
            "{stdout}"
        );
    }
    assert_eq!(
        std::fs::read_to_string(host.path("/var/lib/cni/networks/green/10.0.0.5")).unwrap(),
        "host-local's lease"
    );
    assert!(
        stdout.contains("Surveyor's files are gone from this node: 16 removed, 2 left alone"),
        "{stdout}"
    );
    // Again: nothing more to do, no error.
    let again = host.uninstall();
    assert!(again.status.success());
    assert!(String::from_utf8_lossy(&again.stdout).contains("0 removed"));
}

/// While an agent holds the state dir it would write everything back:
/// nothing is removed, and the error says what to do.
#[test]
fn a_running_agent_is_not_uninstalled_under() {
    let ns = Netns::new("uninst-agent");
    let host = Host::new();
    std::fs::remove_file(host.path("/run/surveyor/agent.lock")).unwrap();
    std::fs::remove_file(host.path("/run/surveyor/survey.json")).unwrap();
    std::fs::remove_file(host.path("/run/surveyor/networks.json")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let agent = AgentProcess::start_with_state(
        &ns,
        dir,
        host.path("/run/surveyor"),
        &[("green.yaml", &support::lldp_map("green", "tor-*"))],
        &["--no-lldp"],
    );
    agent.wait_for(10, "the agent's first snapshot", |_| true);
    let before = host.tree();
    let out = host.uninstall();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("a surveyor agent still runs on this node")
            && stderr.contains(&format!("pid {}", agent.pid()))
            && stderr.contains("kubectl delete -k deploy/"),
        "{stderr}"
    );
    // The agent may still be writing (a temp file renamed into place):
    // what matters is that nothing was removed.
    let after = host.tree();
    let gone: Vec<&String> = before
        .iter()
        .filter(|p| !after.contains(p))
        .filter(|p| {
            !(p.starts_with("/run/surveyor/.") && p.ends_with(".tmp") && !p.contains("x1y2"))
        })
        .collect();
    assert!(gone.is_empty(), "removed under a running agent: {gone:?}");
}

fn labelled_node(name: &str, labels: Value) -> Value {
    let mut n = node(name, labels);
    n["metadata"]["name"] = json!(name);
    n
}

/// The cluster: nothing while the workloads exist; then the Node labels,
/// slices and classes of Surveyor's, every NodeSurvey, in one request per
/// kind (one per labelled Node); the maps, other labels, other drivers'
/// slices and other classes stay.
#[tokio::test]
async fn the_cluster_keeps_the_maps_and_loses_the_rest() {
    let api = FakeApi::default();
    api.put(MAPS, map("green", "sv-a"));
    api.put(
        NODES,
        labelled_node(
            "n1",
            json!({"rack": "r1", "network.surveyor.dev/green": "true"}),
        ),
    );
    api.put(NODES, labelled_node("n2", json!({"rack": "r2"})));
    for (name, driver) in [
        ("n1-surveyor.dev", "surveyor.dev"),
        ("n1-gpu.example.com", "gpu.example.com"),
    ] {
        api.put(
            SLICES,
            json!({"apiVersion": "resource.k8s.io/v1", "kind": "ResourceSlice",
            "metadata": {"name": name}, "spec": {"driver": driver, "nodeName": "n1",
            "pool": {"name": "n1", "generation": 1, "resourceSliceCount": 1}}}),
        );
    }
    api.put(DEVICE_CLASSES, json!({"apiVersion": "resource.k8s.io/v1", "kind": "DeviceClass",
        "metadata": {"name": "green.surveyor.dev", "labels": {"surveyor.dev/network": "green"}}, "spec": {}}));
    api.put(
        DEVICE_CLASSES,
        json!({"apiVersion": "resource.k8s.io/v1", "kind": "DeviceClass",
        "metadata": {"name": "gpu.example.com"}, "spec": {}}),
    );
    api.put(
        SURVEYS,
        json!({"apiVersion": "surveyor.dev/v1alpha1", "kind": "NodeSurvey",
        "metadata": {"name": "n1"}}),
    );
    api.put(
        DAEMONSETS,
        json!({"apiVersion": "apps/v1", "kind": "DaemonSet",
        "metadata": {"name": "surveyor-agent", "namespace": "surveyor"}}),
    );
    api.put(
        DEPLOYMENTS,
        json!({"apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "surveyor-controller", "namespace": "surveyor"}}),
    );

    let e = cluster::clean(api.serve(), "surveyor").await.unwrap_err();
    assert!(
        e.to_string().contains(
            "DaemonSet surveyor/surveyor-agent still exists: delete Surveyor's workloads first"
        ),
        "{e}"
    );
    api.delete(DAEMONSETS, "surveyor-agent");
    let e = cluster::clean(api.serve(), "surveyor").await.unwrap_err();
    assert!(
        e.to_string()
            .contains("Deployment surveyor/surveyor-controller"),
        "{e}"
    );
    assert!(api.writes().is_empty(), "{:#?}", api.writes());
    api.delete(DEPLOYMENTS, "surveyor-controller");

    let report = cluster::clean(api.serve(), "surveyor").await.unwrap();
    assert_eq!(
        report,
        cluster::Report {
            nodes: 1,
            labels: 1,
            slices: Some(1),
            classes: Some(1),
            surveys: Some(1),
        }
    );
    assert!(report.to_string().contains("NetworkMaps kept"), "{report}");
    let writes: Vec<(String, String, Value, Value)> = api
        .writes()
        .into_iter()
        .map(|r| {
            (
                r.method,
                r.path,
                serde_json::to_value(&r.query).unwrap(),
                r.body,
            )
        })
        .collect();
    assert_eq!(
        writes,
        [
            (
                "PATCH".to_string(),
                format!("{NODES}/n1"),
                json!({"fieldManager": "surveyor-uninstall"}),
                json!({"metadata": {"labels": {"network.surveyor.dev/green": null}}})
            ),
            (
                "DELETE".to_string(),
                SLICES.to_string(),
                json!({"fieldSelector": "spec.driver=surveyor.dev"}),
                Value::Null
            ),
            (
                "DELETE".to_string(),
                DEVICE_CLASSES.to_string(),
                json!({"labelSelector": "surveyor.dev/network"}),
                Value::Null
            ),
            (
                "DELETE".to_string(),
                SURVEYS.to_string(),
                json!({}),
                Value::Null
            ),
        ]
    );
    assert_eq!(
        api.get(NODES, "n1").unwrap()["metadata"]["labels"],
        json!({"rack": "r1"})
    );
    assert!(api.get(MAPS, "green").is_some());
    assert!(api.get(SLICES, "n1-gpu.example.com").is_some());
    assert!(api.get(DEVICE_CLASSES, "gpu.example.com").is_some());
    assert!(api.list(SURVEYS).is_empty() && api.list(SLICES).len() == 1);
    assert_declared_by(&api, API_REQUESTS);

    // Again: nothing left to do, nothing written.
    let before = api.writes().len();
    let again = cluster::clean(api.serve(), "surveyor").await.unwrap();
    assert_eq!(
        (again.nodes, again.slices, again.surveys),
        (0, Some(0), Some(0))
    );
    assert_eq!(
        api.writes().len() - before,
        3,
        "three deletecollections, deleting nothing"
    );
}
