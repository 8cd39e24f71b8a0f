//! The standalone agent in namespaces cabled to real lldpd switches.

mod support;

use std::process::Command;
use std::time::Duration;

use nix::sys::signal::Signal;
use support::{AgentProcess, Netns, lldp_map, surveyor, switch};

fn three_maps() -> Vec<(&'static str, String)> {
    vec![
        ("green.yaml", lldp_map("green", "tor-green-*")),
        ("red.yaml", lldp_map("red", "tor-red-*")),
        ("blue.yaml", lldp_map("blue", "tor-blue-*")),
    ]
}

fn start(node: &Netns, maps: &[(&str, String)], extra: &[&str]) -> AgentProcess {
    let maps: Vec<(&str, &str)> = maps.iter().map(|(n, t)| (*n, t.as_str())).collect();
    let mut args = vec!["--include", "sv-*"];
    args.extend_from_slice(extra);
    AgentProcess::start(node, &maps, &args)
}

fn resolve(agent: &AgentProcess, network: &str) -> std::process::Output {
    Command::new(surveyor())
        .args(["resolve", network, "--state-dir"])
        .arg(&agent.state)
        .output()
        .unwrap()
}

#[test]
fn networks_resolve_to_the_nics_cabled_to_their_switches() {
    let node = Netns::new("agent");
    let (_g, _gl) = switch(&node, "sv-a", "tor-green-01", "Ethernet1/7", &[]);
    let (_r, _rl) = switch(&node, "sv-b", "tor-red-01", "Ethernet1/8", &[]);
    let agent = start(&node, &three_maps(), &[]);
    let snap = agent.wait_for(10, "green and red resolved", |s| {
        s["networks"]["green"]["device"] == "sv-a" && s["networks"]["red"]["device"] == "sv-b"
    });
    assert_eq!(snap["node"], "node1");
    assert_eq!(
        snap["networks"]["green"]["candidates"],
        serde_json::json!(["sv-a"])
    );
    assert!(snap["networks"]["green"]["index"].as_u64().is_some());
    assert!(snap["networks"]["green"]["mac"].as_str().is_some());

    let out = resolve(&agent, "green");
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "sv-a");
    let out = resolve(&agent, "blue");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("blue") && err.contains("node1") && err.contains("lldp.systemName"),
        "{err}"
    );
    let out = resolve(&agent, "purple");
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no network \"purple\""));

    // survey.json and maps.json sit beside it.
    let survey: serde_json::Value =
        serde_json::from_slice(&std::fs::read(agent.state.join("survey.json")).unwrap()).unwrap();
    assert_eq!(survey["summary"]["networks"], "green,red");
    let a = survey["interfaces"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["name"] == "sv-a")
        .unwrap();
    assert_eq!(a["networks"], serde_json::json!(["green"]));
    assert_eq!(a["lldp"]["systemName"], "tor-green-01");
    let maps: serde_json::Value =
        serde_json::from_slice(&std::fs::read(agent.state.join("maps.json")).unwrap()).unwrap();
    assert_eq!(
        (
            maps["kind"].as_str(),
            maps["items"].as_array().map(Vec::len)
        ),
        (Some("List"), Some(3))
    );
}

#[test]
fn resolve_without_an_agent_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(surveyor())
        .args(["resolve", "green", "--state-dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("is the surveyor agent running"));
}

#[test]
fn the_snapshot_follows_a_cable_move() {
    let node = Netns::new("move");
    let (green, _gl) = switch(&node, "sv-a", "tor-green-01", "Ethernet1/7", &[]);
    let agent = start(&node, &three_maps(), &[]);
    agent.wait_for(10, "green on sv-a", |s| {
        s["networks"]["green"]["device"] == "sv-a"
    });

    // Unplug: the switch side goes away with the veth.
    node.ip(&["link", "del", "sv-a"]);
    agent.wait_for(5, "green unresolved", |s| {
        s["networks"]["green"]["device"].is_null()
    });
    // Plug another NIC into the same switch port.
    support::cable(&node, "sv-new", &green, "swp1");
    let started = std::time::Instant::now();
    agent.wait_for(5, "green on sv-new", |s| {
        s["networks"]["green"]["device"] == "sv-new"
    });
    // lldpd notices the new port and sends within its 1 s tx interval.
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "took {:?}",
        started.elapsed()
    );
    assert!(
        agent.log().contains("green: resolved to sv-new"),
        "{}",
        agent.log()
    );
}

#[test]
fn carrier_loss_moves_the_network_to_the_next_candidate() {
    let node = Netns::new("failover");
    let (g1, _l1) = switch(
        &node,
        "sv-a",
        "tor-green-01",
        "Ethernet1/7",
        &["configure lldp tx-hold 30"],
    );
    let (_g2, _l2) = switch(
        &node,
        "sv-b",
        "tor-green-02",
        "Ethernet1/7",
        &["configure lldp tx-hold 30"],
    );
    let agent = start(&node, &three_maps(), &[]);
    agent.wait_for(10, "two candidates", |s| {
        s["networks"]["green"]["candidates"] == serde_json::json!(["sv-a", "sv-b"])
    });
    g1.ip(&["link", "set", "swp1", "down"]);
    let snap = agent.wait_for(5, "green on sv-b", |s| {
        s["networks"]["green"]["device"] == "sv-b"
    });
    // sv-a lost its carrier, so its neighbor too: only sv-b is left.
    assert_eq!(
        snap["networks"]["green"]["candidates"],
        serde_json::json!(["sv-b"])
    );
    assert!(
        agent
            .log()
            .contains("green: sv-a -> sv-b (sv-a carrier down)"),
        "{}",
        agent.log()
    );
}

#[test]
fn map_edits_re_resolve_deletes_remove_and_broken_files_change_nothing() {
    let node = Netns::new("edit");
    let (_g, _gl) = switch(&node, "sv-a", "tor-green-01", "Ethernet1/7", &[]);
    let (_r, _rl) = switch(&node, "sv-b", "tor-red-01", "Ethernet1/8", &[]);
    let agent = start(&node, &three_maps(), &[]);
    agent.wait_for(10, "green on sv-a", |s| {
        s["networks"]["green"]["device"] == "sv-a"
    });

    // Edit: green is now whatever is cabled to the red switch.
    std::fs::write(
        agent.maps.join("green.yaml"),
        lldp_map("green", "tor-red-*"),
    )
    .unwrap();
    agent.wait_for(5, "green follows the edit", |s| {
        s["networks"]["green"]["device"] == "sv-b"
    });

    // A broken edit changes nothing: not the snapshot, not its generation.
    let before = agent.snapshot().unwrap();
    std::fs::write(agent.maps.join("green.yaml"), "apiVersion: surveyor.dev/v1alpha1\nkind: NetworkMap\nmetadata: {name: green}\nspec: {match: {names: ['sv-[']}}\n").unwrap();
    std::fs::write(agent.maps.join("red.yaml"), "{{{ not yaml").unwrap();
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(agent.snapshot().unwrap(), before);
    let log = agent.log();
    assert!(
        log.contains("green.yaml") && log.contains("spec.match.names"),
        "{log}"
    );
    assert!(
        log.contains("red.yaml") && log.contains("keeping its last good 1 map(s)"),
        "{log}"
    );

    // Deleting a file removes its network.
    std::fs::remove_file(agent.maps.join("blue.yaml")).unwrap();
    agent.wait_for(5, "blue removed", |s| s["networks"].get("blue").is_none());
    assert_eq!(
        agent.device("green").as_deref(),
        Some("sv-b"),
        "the broken green.yaml kept its last good map"
    );
}

#[test]
fn sigterm_stops_the_agent_cleanly() {
    let node = Netns::new("term");
    let mut agent = start(&node, &three_maps(), &["--no-lldp"]);
    agent.wait_for(10, "first snapshot", |_| true);
    let status = agent.signal(Signal::SIGTERM);
    assert!(status.success(), "{status:?}\n{}", agent.log());
    assert!(agent.log().contains("stopping"));
}

#[test]
fn sigkill_during_churn_never_leaves_a_torn_snapshot() {
    let node = Netns::new("kill");
    let peer = Netns::new("kill-p");
    for n in 0..8 {
        support::cable(&node, &format!("sv-{n}"), &peer, &format!("p{n}"));
    }
    let map = "apiVersion: surveyor.dev/v1alpha1\nkind: NetworkMap\nmetadata: {name: green}\nspec: {match: {names: ['sv-*']}}\n";
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    // Churn: the node's own links go administratively down and up, which
    // the kernel reports at once (peer carrier changes can be held back up
    // to a second by linkwatch) and reorders green's candidates.
    let churn = {
        let (node, stop) = (node.name.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut n = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let state = if (n / 8) % 2 == 0 { "down" } else { "up" };
                let _ = Command::new("ip")
                    .args(["-n", &node, "link", "set", &format!("sv-{}", n % 8), state])
                    .output();
                n += 1;
            }
        })
    };
    let mut rng = 0x5eed_u64;
    let mut snapshots = 0;
    for round in 0..12 {
        let mut agent = start(&node, &[("green.yaml", map.to_string())], &["--no-lldp"]);
        agent.wait_for(10, "a snapshot", |_| true);
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        std::thread::sleep(Duration::from_millis(rng % 300));
        agent.signal(Signal::SIGKILL);
        // Whatever moment it died at, every file parses.
        for file in ["networks.json", "survey.json", "maps.json"] {
            let bytes = std::fs::read(agent.state.join(file))
                .unwrap_or_else(|e| panic!("round {round}: {file}: {e}"));
            serde_json::from_slice::<serde_json::Value>(&bytes)
                .unwrap_or_else(|e| panic!("round {round}: torn {file}: {e}"));
        }
        snapshots += agent
            .snapshot()
            .map_or(0, |s| s["generation"].as_u64().unwrap());
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    churn.join().unwrap();
    assert!(
        snapshots > 12,
        "the agents should have rewritten the snapshot during churn"
    );
}

#[test]
fn unsurveyed_link_flaps_never_rewrite_the_snapshot() {
    let node = Netns::new("quiet-agent");
    let peer = Netns::new("quiet-agent-p");
    support::cable(&node, "sv-a", &peer, "p0");
    support::cable(&node, "zz-x", &peer, "p1");
    let map = "apiVersion: surveyor.dev/v1alpha1\nkind: NetworkMap\nmetadata: {name: green}\nspec: {match: {names: ['sv-*']}}\n";
    let agent = start(&node, &[("green.yaml", map.to_string())], &["--no-lldp"]);
    let first = agent.wait_for(10, "green on sv-a", |s| {
        s["networks"]["green"]["device"] == "sv-a"
    });
    let mtime = || {
        std::fs::metadata(agent.state.join("networks.json"))
            .unwrap()
            .modified()
            .unwrap()
    };
    let before = mtime();
    for n in 0..20 {
        peer.ip(&["link", "set", "p1", if n % 2 == 0 { "down" } else { "up" }]);
    }
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(agent.snapshot().unwrap(), first);
    assert_eq!(mtime(), before, "networks.json was rewritten");
}

/// A plain HTTP/1.0 GET from inside `ns`: (status code, body).
fn http_get(ns: &Netns, port: u16, path: &str) -> (u16, String) {
    let path = path.to_string();
    ns.block_on(move || async move {
        use std::io::{Read as _, Write as _};
        let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
        write!(stream, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).unwrap();
        let code = response.split_whitespace().nth(1).unwrap().parse().unwrap();
        let body = response
            .split("\r\n\r\n")
            .nth(1)
            .unwrap_or_default()
            .to_string();
        (code, body)
    })
}

#[test]
fn health_readiness_and_metrics_are_served() {
    let node = Netns::new("metrics");
    let (_g, _gl) = switch(&node, "sv-a", "tor-green-01", "Ethernet1/7", &[]);
    let port = 9464;
    let agent = start(
        &node,
        &three_maps(),
        &["--listen", &format!("127.0.0.1:{port}")],
    );
    agent.wait_for(10, "green resolved", |s| {
        s["networks"]["green"]["device"] == "sv-a"
    });
    // The address is served a moment after start; the snapshot is there.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let (code, _) = loop {
        let got = std::panic::catch_unwind(|| http_get(&node, port, "/readyz"));
        match got {
            Ok(r) => break r,
            Err(_) if std::time::Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(50))
            }
            Err(e) => std::panic::resume_unwind(e),
        }
    };
    assert_eq!(code, 200);
    assert_eq!(http_get(&node, port, "/healthz"), (200, "ok\n".to_string()));
    // One link event to count.
    node.ip(&["link", "set", "sv-a", "mtu", "1400"]);
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while !std::fs::read_to_string(agent.state.join("survey.json"))
        .unwrap()
        .contains("\"mtu\": 1400")
    {
        assert!(
            std::time::Instant::now() < deadline,
            "mtu change not surveyed"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let (code, text) = http_get(&node, port, "/metrics");
    assert_eq!(code, 200);
    for metric in [
        "surveyor_interfaces 1",
        "surveyor_interfaces_up 1",
        "surveyor_lldp_neighbors 1",
        "surveyor_networks{state=\"resolved\"} 1",
        "surveyor_networks{state=\"unresolved\"} 2",
        "surveyor_api_errors_total 0",
    ] {
        assert!(
            text.lines().any(|l| l == metric),
            "{metric} missing:\n{text}"
        );
    }
    for counter in [
        "surveyor_netlink_events_total",
        "surveyor_lldp_frames_total",
        "surveyor_snapshot_writes_total",
    ] {
        let value: u64 = text
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{counter} ")))
            .unwrap_or_else(|| panic!("{counter} missing:\n{text}"))
            .parse()
            .unwrap();
        assert!(value > 0, "{counter} is {value}");
    }
}

#[test]
fn a_network_follows_its_address_from_one_nic_to_another() {
    let node = Netns::new("cidr");
    let peer = Netns::new("cidr-p");
    support::cable(&node, "sv-a", &peer, "p0");
    support::cable(&node, "sv-b", &peer, "p1");
    support::cable(&node, "zz-x", &peer, "p2");
    node.ip(&["addr", "add", "192.0.2.10/24", "dev", "sv-a"]);
    let map = "apiVersion: surveyor.dev/v1alpha1\nkind: NetworkMap\nmetadata: {name: storage}\nspec: {match: {cidrs: ['192.0.2.0/24']}}\n";
    let agent = start(&node, &[("storage.yaml", map.to_string())], &["--no-lldp"]);
    agent.wait_for(10, "storage on sv-a", |s| {
        s["networks"]["storage"]["device"] == "sv-a"
    });

    // Move the address: the network follows within a second.
    node.ip(&["addr", "del", "192.0.2.10/24", "dev", "sv-a"]);
    node.ip(&["addr", "add", "192.0.2.10/24", "dev", "sv-b"]);
    let moved = std::time::Instant::now();
    let snap = agent.wait_for(2, "storage on sv-b", |s| {
        s["networks"]["storage"]["device"] == "sv-b"
    });
    assert!(
        moved.elapsed() < Duration::from_secs(1),
        "took {:?}",
        moved.elapsed()
    );
    assert_eq!(
        snap["networks"]["storage"]["candidates"],
        serde_json::json!(["sv-b"])
    );
    let survey = agent.wait_for_survey(2, "the address in survey.json", |s| {
        s["interfaces"].as_array().is_some_and(|a| {
            a.iter()
                .any(|i| i["name"] == "sv-b" && !i["addresses"].is_null())
        })
    });
    let b = survey["interfaces"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["name"] == "sv-b")
        .unwrap();
    assert_eq!(b["addresses"], serde_json::json!(["192.0.2.10/24"]));

    // No address in the CIDR: unresolved, and the reason says so.
    node.ip(&["addr", "del", "192.0.2.10/24", "dev", "sv-b"]);
    let snap = agent.wait_for(2, "storage unresolved", |s| {
        s["networks"]["storage"]["device"].is_null()
    });
    let reason = snap["networks"]["storage"]["reason"].as_str().unwrap();
    assert!(reason.contains("sv-a fails cidrs: no address"), "{reason}");

    // Addresses on a link outside the survey write nothing.
    let files = || {
        ["networks.json", "survey.json"].map(|f| {
            std::fs::metadata(agent.state.join(f))
                .unwrap()
                .modified()
                .unwrap()
        })
    };
    let before = files();
    for n in 0..10 {
        let verb = if n % 2 == 0 { "add" } else { "del" };
        node.ip(&["addr", verb, "192.0.2.99/24", "dev", "zz-x"]);
    }
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        files(),
        before,
        "an unsurveyed link's addresses caused a write"
    );
}
