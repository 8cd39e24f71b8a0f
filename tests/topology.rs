//! The fabric picture as users get it: the controller's /topology in a
//! real browser (headless Debian chromium renders the page served by a
//! running controller against the fake API with a 50-node rack; the
//! screenshot is produced and the DOM holds every node and switch), the
//! other endpoints over real HTTP, and `surveyor topology --surveys` on
//! files.

mod support;

use std::io::{Read as _, Write as _};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use support::controller::{FABRIC_SWITCHES, Lead, fabric, pace, start, until};
use surveyor::controller::http;
use surveyor::controller::metrics::Metrics;

const NODES: usize = 50;

fn chromium() -> PathBuf {
    for dir in std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()) {
        let p = dir.join("chromium");
        if p.is_file() {
            return p;
        }
    }
    panic!(
        "this test needs Debian's chromium on PATH (apt-get install chromium; .ci/run installs it)"
    );
}

/// Serves the controller's endpoints on a free loopback port.
async fn serve(metrics: Arc<Metrics>) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(http::serve(listener, metrics));
    addr
}

/// A plain HTTP/1.0 GET: (status line, body).
async fn get(addr: SocketAddr, path: &str) -> (String, String) {
    let path = path.to_string();
    tokio::task::spawn_blocking(move || {
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        write!(s, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").unwrap();
        let mut text = String::new();
        s.read_to_string(&mut text).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
        (
            head.lines().next().unwrap_or_default().to_string(),
            body.to_string(),
        )
    })
    .await
    .unwrap()
}

/// Runs chromium headless with the flags it needs in a container.
fn run_chromium(profile: &Path, args: &[String]) -> std::process::Output {
    let out = Command::new(chromium())
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--no-first-run",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "chromium failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

#[tokio::test]
async fn chromium_renders_the_topology_page_with_every_node_and_switch() {
    let api = fabric(NODES);
    let c = start(&api, Lead::Always, pace());
    until(10, "the picture of all nodes", &api, || {
        c.metrics.view().topology.nodes.len() == NODES
    })
    .await;
    let addr = serve(c.metrics.clone()).await;
    let url = format!("http://{addr}/topology");
    let tmp = tempfile::tempdir().unwrap();
    let shot = tmp.path().join("topology.png");
    let (profile, dom_profile) = (tmp.path().join("profile"), tmp.path().join("profile2"));
    let args = vec![
        format!("--screenshot={}", shot.display()),
        "--window-size=1480,1000".to_string(),
        url.clone(),
    ];
    let s = shot.clone();
    tokio::task::spawn_blocking(move || run_chromium(&profile, &args))
        .await
        .unwrap();
    let png = std::fs::read(&s).expect("chromium wrote no screenshot");
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n", "not a PNG");
    let (w, h) = (
        u32::from_be_bytes(png[16..20].try_into().unwrap()),
        u32::from_be_bytes(png[20..24].try_into().unwrap()),
    );
    assert_eq!((w, h), (1480, 1000));
    assert!(png.len() > 20_000, "a blank page? {} bytes", png.len());
    // Kept for a look (and the README's picture): target/topology.png.
    let keep = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/topology.png");
    let _ = std::fs::write(&keep, &png);

    // The DOM as the browser built it: every node and switch, drawn.
    let dom_args = vec!["--dump-dom".to_string(), url];
    let out = tokio::task::spawn_blocking(move || run_chromium(&dom_profile, &dom_args))
        .await
        .unwrap();
    let dom = String::from_utf8(out.stdout).unwrap();
    assert!(dom.contains("<svg"), "no SVG in the page");
    for i in 1..=NODES {
        let name = format!(">node{i:02}<");
        assert!(dom.contains(&name), "{name} not in the rendered page");
    }
    for sw in FABRIC_SWITCHES.iter().chain(&["lab-sw-99"]) {
        assert!(
            dom.contains(&format!(">{sw}<")),
            "switch {sw} not in the rendered page"
        );
    }
    // Marked: the node without an agent, the one hearing no LLDP, the lone
    // switch; and nothing loaded from elsewhere.
    assert!(dom.contains("no NodeSurvey"));
    assert!(dom.contains("unresolved: blue, green, storage"), "node33");
    assert!(dom.contains("seen by one node only"));
    assert!(!dom.contains("<script"), "a script in the page");
    let outside = dom.matches("http").count();
    let xmlns = dom.matches("http://www.w3.org/2000/svg").count();
    assert_eq!(outside, xmlns, "a URL other than the SVG namespace");
    c.stop().await;
}

#[tokio::test]
async fn the_endpoints_answer_over_http() {
    let api = fabric(6);
    let c = start(&api, Lead::Always, pace());
    let addr = serve(c.metrics.clone()).await;
    until(10, "synced", &api, || c.metrics.is_ready()).await;
    until(10, "the picture", &api, || {
        c.metrics.view().topology.nodes.len() == 6
    })
    .await;
    let (status, body) = get(addr, "/healthz").await;
    assert!(status.contains("200"), "{status}");
    assert_eq!(body, "ok\n");
    assert!(get(addr, "/readyz").await.0.contains("200"));
    let (status, body) = get(addr, "/topology.json").await;
    assert!(status.contains("200"), "{status}");
    let json: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(json["nodes"].as_array().unwrap().len(), 6);
    assert_eq!(json["switches"].as_array().unwrap().len(), 4);
    let (_, svg) = get(addr, "/topology.svg").await;
    assert!(
        svg.starts_with("<svg xmlns=\"http://www.w3.org/2000/svg\""),
        "{svg:.80}"
    );
    let (_, dot) = get(addr, "/topology.dot").await;
    assert!(
        dot.starts_with("graph") || dot.starts_with("digraph"),
        "{dot:.80}"
    );
    let (_, page) = get(addr, "/topology").await;
    assert!(
        page.contains("<td>green</td><td>5/6</td>"),
        "the maps' summary: {page:.2000}"
    );
    let (_, metrics) = get(addr, "/metrics").await;
    for line in [
        "surveyor_controller_leader 1",
        "surveyor_controller_nodes 6",
        "surveyor_controller_nodesurveys 5",
        "surveyor_controller_resolved_nodes{map=\"green\"} 5",
        "surveyor_controller_unresolved_nodes{map=\"green\"} 1",
    ] {
        assert!(
            metrics.lines().any(|l| l == line),
            "{line} missing:\n{metrics}"
        );
    }
    assert!(get(addr, "/nothing").await.0.contains("404"));
    c.stop().await;
}

/// `surveyor topology --surveys DIR`: NODE.json (a bare survey.json or a
/// NodeSurvey object) and NODE/survey.json; a file that is not a survey
/// is an error naming it.
#[test]
fn topology_from_survey_files() {
    use support::controller::{nic, survey};
    let dir = tempfile::tempdir().unwrap();
    let a = survey(
        "n1",
        &[nic(
            "ens4",
            &["green"],
            Some(("tor-green-01", "Ethernet1/1")),
        )],
        &[("green", Ok("ens4"))],
    );
    let b = survey(
        "n2",
        &[nic(
            "ens4",
            &["green"],
            Some(("tor-green-01", "Ethernet1/2")),
        )],
        &[("green", Ok("ens4"))],
    );
    std::fs::write(dir.path().join("n1.json"), a["status"].to_string()).unwrap();
    std::fs::create_dir(dir.path().join("n2")).unwrap();
    std::fs::write(dir.path().join("n2/survey.json"), b["status"].to_string()).unwrap();
    std::fs::write(dir.path().join("notes.txt"), "not json, not looked at").unwrap();
    let run = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_surveyor"))
            .arg("topology")
            .args(args)
            .arg("--surveys")
            .arg(dir.path())
            .output()
            .unwrap()
    };
    let out = run(&["-o", "json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let t: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(t["switches"][0]["name"], "tor-green-01");
    assert_eq!(t["switches"][0]["nodes"], 2);
    let svg = run(&[]);
    let svg = String::from_utf8(svg.stdout).unwrap();
    assert!(
        svg.starts_with("<svg") && svg.contains(">n2<"),
        "{svg:.200}"
    );
    let dot = String::from_utf8(run(&["-o", "dot"]).stdout).unwrap();
    assert!(dot.contains("tor-green-01"), "{dot}");
    // An agent's state dir holds other JSON: named, not guessed at.
    std::fs::write(
        dir.path().join("networks.json"),
        r#"{"node":"n1","generation":1,"networks":{}}"#,
    )
    .unwrap();
    let out = run(&[]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("networks.json") && err.contains("not a NodeSurvey status"),
        "{err}"
    );
}
