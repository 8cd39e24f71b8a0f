//! Neighbor protocols against Debian's lldpd acting as a switch in a
//! namespace: LLDP, and CDP (v1, v2), EDP, FDP and SONMP sent alone.

mod support;

use std::time::{Duration, Instant};

use support::{Lldpd, Netns, surveyor, switch};
use surveyor::discovery::Discovery;
use surveyor::lldp::Lldp;
use surveyor::survey::SurveyFilter;

fn discover_with_lldp(node: &Netns, wait: &str) -> serde_json::Value {
    support::discover_json(node, &["--include", "sv-*", "--lldp-wait", wait])
}

/// The switch of the acceptance criteria: tor-green-01, chassis ID
/// tor-green-01-chassis, port Ethernet1/7 "uplink-to-node1", PVID 100 and
/// VLAN 100 "green" as 802.1 TLVs.
fn green_switch(node: &Netns) -> (Netns, Lldpd) {
    let (sw, lldpd) = switch(
        node,
        "sv-a",
        "tor-green-01",
        "Ethernet1/7",
        &[
            "configure system chassisid tor-green-01-chassis",
            "configure ports swp1 lldp portidsubtype local Ethernet1/7 description uplink-to-node1",
            "configure lldp custom-tlv oui 00,80,c2 subtype 1 oui-info 00,64",
            "configure lldp custom-tlv add oui 00,80,c2 subtype 3 oui-info 00,64,05,67,72,65,65,6e",
            "configure system ip management pattern 192.0.2.10",
        ],
    );
    sw.ip(&["addr", "add", "192.0.2.10/24", "dev", "swp1"]);
    (sw, lldpd)
}

#[test]
fn discover_shows_the_switch_port_a_nic_is_cabled_to() {
    let node = Netns::new("lldp");
    let (_sw, _lldpd) = green_switch(&node);
    let doc = discover_with_lldp(&node, "4s");
    let lldp = &doc["interfaces"][0]["lldp"];
    assert_eq!(
        lldp["chassisId"],
        serde_json::json!({"subtype": "local", "value": "tor-green-01-chassis"}),
        "{doc:#}"
    );
    assert_eq!(
        lldp["portId"],
        serde_json::json!({"subtype": "local", "value": "Ethernet1/7"})
    );
    assert_eq!(lldp["systemName"], "tor-green-01");
    assert_eq!(lldp["portDescription"], "uplink-to-node1");
    assert_eq!(lldp["pvid"], 100);
    assert_eq!(
        lldp["vlans"],
        serde_json::json!([{"id": 100, "name": "green"}])
    );
    assert_eq!(
        lldp["managementAddresses"],
        serde_json::json!(["192.0.2.10"])
    );
    assert_eq!(lldp["ttlSeconds"], 4, "tx-interval 1 x tx-hold 4");
    assert!(
        lldp["systemDescription"]
            .as_str()
            .is_some_and(|d| !d.is_empty())
    );

    // The table names the neighbor as systemName/portId.
    let out = node
        .command(surveyor())
        .args(["discover", "--include", "sv-*", "--lldp-wait", "4s"])
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        table.lines().next().unwrap().ends_with("NEIGHBOR"),
        "{table}"
    );
    assert!(table.contains("tor-green-01/Ethernet1/7"), "{table}");
}

#[test]
fn lldp_wait_stops_early_and_says_which_interfaces_stayed_silent() {
    let node = Netns::new("lldp-early");
    let (_sw, _lldpd) = green_switch(&node);
    let quiet = Netns::new("lldp-quiet");
    support::cable(&node, "sv-quiet", &quiet, "q0");
    let started = Instant::now();
    let out = node
        .command(surveyor())
        .args([
            "discover",
            "-o",
            "json",
            "--include",
            "sv-a",
            "--lldp-wait",
            "20s",
        ])
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "should stop once sv-a has a neighbor"
    );
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["interfaces"][0]["lldp"]["systemName"], "tor-green-01");

    let out = node
        .command(surveyor())
        .args([
            "discover",
            "-o",
            "json",
            "--include",
            "sv-*",
            "--lldp-wait",
            "2s",
        ])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("no neighbor heard")
            && err.contains("sv-quiet")
            && err.contains("lldp,cdp,edp,fdp,sonmp"),
        "{err}"
    );
}

/// Our decode of live frames against lldpd's own receiver, field by field.
#[test]
fn decode_matches_lldpds_own_receiver() {
    let node = Netns::new("lldp-x");
    let (_sw, switch_lldpd) = green_switch(&node);
    let receiver = Lldpd::start(&node, "sv-a", &["-r"], &[]);

    let ours = discover_with_lldp(&node, "4s");
    let ours = &ours["interfaces"][0]["lldp"];
    // Wait for lldpd's receiver to know the neighbor too.
    let deadline = Instant::now() + Duration::from_secs(5);
    let theirs = loop {
        let out = receiver.cli(&["-f", "json", "show", "neighbors", "details"]);
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let iface = &v["lldp"]["interface"]["sv-a"];
        if iface.is_object() && iface["port"]["ttl"].is_string() {
            break iface.clone();
        }
        assert!(
            Instant::now() < deadline,
            "lldpd never saw the neighbor: {v}\nreceiver log: {}\nswitch log: {}",
            receiver.log(),
            switch_lldpd.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    let chassis = theirs["chassis"].as_object().unwrap();
    let (name, chassis) = chassis.iter().next().unwrap();
    assert_eq!(ours["systemName"].as_str(), Some(name.as_str()));
    assert_eq!(ours["chassisId"]["value"], chassis["id"]["value"]);
    assert_eq!(ours["chassisId"]["subtype"], chassis["id"]["type"]);
    assert_eq!(ours["systemDescription"], chassis["descr"]);
    assert_eq!(ours["managementAddresses"][0], chassis["mgmt-ip"]);
    assert_eq!(ours["portId"]["value"], theirs["port"]["id"]["value"]);
    assert_eq!(ours["portId"]["subtype"], theirs["port"]["id"]["type"]);
    assert_eq!(ours["portDescription"], theirs["port"]["descr"]);
    assert_eq!(
        ours["ttlSeconds"].to_string(),
        theirs["port"]["ttl"].as_str().unwrap()
    );
    // lldpd lists VLANs as one object, or an array of them.
    let vlans: Vec<serde_json::Value> = match &theirs["vlan"] {
        serde_json::Value::Array(v) => v.clone(),
        v => vec![v.clone()],
    };
    let theirs_vlans: Vec<(String, String)> = vlans
        .iter()
        .map(|v| {
            (
                v["vlan-id"].as_str().unwrap().to_string(),
                v["value"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let ours_vlans: Vec<(String, String)> = ours["vlans"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| (v["id"].to_string(), v["name"].as_str().unwrap().to_string()))
        .collect();
    assert_eq!(ours_vlans, theirs_vlans);
    let theirs_pvid = vlans
        .iter()
        .find(|v| v["pvid"] == true)
        .map(|v| v["vlan-id"].as_str().unwrap());
    assert_eq!(ours["pvid"].to_string(), theirs_pvid.unwrap());
}

/// Runs discovery and LLDP in the node namespace; returns once `sv-a` has
/// learned its neighbor, with a handle that yields how long after that the
/// neighbor was gone (`None` after 12 s).
fn watch_neighbor_loss(node: &Netns) -> std::thread::JoinHandle<Option<Duration>> {
    let (ready, learned) = std::sync::mpsc::channel();
    let watcher = node.spawn(move || async move {
        let filter = SurveyFilter::new(false, &["sv-a".into()], &[]).unwrap();
        let mut discovery = Discovery::watch(filter).await.unwrap();
        let mut lldp = Lldp::new();
        lldp.follow(&discovery.interfaces());
        let index = discovery.interfaces()[0].index;
        // First learn the neighbor, then signal and time the awaited state.
        while lldp.neighbor(index).is_none() {
            tokio::time::timeout(Duration::from_secs(5), lldp.changes())
                .await
                .expect("neighbor heard");
        }
        ready.send(()).unwrap();
        let start = Instant::now();
        let deadline = start + Duration::from_secs(12);
        while lldp.neighbor(index).is_some() {
            let left = deadline.saturating_duration_since(Instant::now());
            tokio::select! {
                _ = lldp.changes() => {}
                changes = discovery.changes() => {
                    changes.unwrap();
                    lldp.follow(&discovery.interfaces());
                }
                () = tokio::time::sleep(left) => return None,
            }
        }
        Some(start.elapsed())
    });
    learned
        .recv_timeout(Duration::from_secs(10))
        .expect("neighbor learned");
    watcher
}

#[test]
fn shutdown_frame_removes_the_neighbor_at_once() {
    let node = Netns::new("lldp-bye");
    // TTL 1 s x 10 = 10 s: removal well before that is the shutdown frame.
    let (_sw, mut lldpd) = switch(
        &node,
        "sv-a",
        "tor-green-01",
        "Ethernet1/7",
        &["configure lldp tx-hold 10"],
    );
    let watcher = watch_neighbor_loss(&node);
    lldpd.stop();
    let took = watcher.join().unwrap().expect("neighbor removed");
    assert!(
        took < Duration::from_secs(5),
        "took {took:?}; the TTL is 10 s"
    );
}

#[test]
fn a_silent_switch_expires_after_its_ttl() {
    let node = Netns::new("lldp-ttl");
    let (_sw, lldpd) = switch(&node, "sv-a", "tor-green-01", "Ethernet1/7", &[]);
    let watcher = watch_neighbor_loss(&node);
    lldpd.freeze(true);
    let took = watcher.join().unwrap();
    lldpd.freeze(false);
    let took = took.expect("neighbor expired");
    assert!(
        took >= Duration::from_secs(2),
        "expired too soon: {took:?} (TTL 4 s)"
    );
}

#[test]
fn the_switch_port_going_down_removes_the_neighbor() {
    let node = Netns::new("lldp-down");
    let (sw, lldpd) = switch(
        &node,
        "sv-a",
        "tor-green-01",
        "Ethernet1/7",
        &["configure lldp tx-hold 10"],
    );
    let watcher = watch_neighbor_loss(&node);
    lldpd.freeze(true); // no goodbye frame: only the carrier loss tells
    sw.ip(&["link", "del", "swp1"]);
    let took = watcher.join().unwrap();
    lldpd.freeze(false);
    let took = took.expect("neighbor removed");
    assert!(
        took < Duration::from_secs(5),
        "took {took:?}; the TTL is 10 s"
    );
}

#[test]
fn a_co_located_lldp_agent_is_not_our_neighbor() {
    let node = Netns::new("lldp-self");
    let peer = Netns::new("lldp-self-p");
    support::cable(&node, "sv-a", &peer, "p0");
    // The node runs its own lldpd transmitting on sv-a; nothing else talks.
    let _own = Lldpd::start(&node, "sv-a", &[], &["configure system hostname node-self"]);
    let (lldp, heard) = node.block_on(|| async {
        let filter = SurveyFilter::new(false, &["sv-a".into()], &[]).unwrap();
        let discovery = Discovery::dump_once(filter).await.unwrap();
        let mut lldp = Lldp::new();
        lldp.set_own_macs(
            discovery
                .inventory()
                .links()
                .filter_map(|l| l.interface.mac.as_deref()),
        );
        lldp.follow(&discovery.interfaces());
        let heard = tokio::time::timeout(Duration::from_secs(3), lldp.changes())
            .await
            .is_ok();
        (lldp.stats().clone(), heard)
    });
    assert!(!heard, "our own lldpd became a neighbor");
    assert!(lldp.frames.is_empty(), "{lldp:?}");
}

/// ladvd, a second LLDP implementation, as the switch: we hear what
/// lldpd's receiver beside us hears, and a map on its system name resolves.
#[test]
fn ladvd_is_heard_as_lldpds_receiver_hears_it() {
    let node = Netns::new("ladvd");
    let sw = Netns::new("ladvd-sw");
    support::cable(&node, "sv-a", &sw, "swp1");
    let receiver = Lldpd::start(&node, "sv-a", &["-r"], &[]);
    // ladvd sends at start, then every 30 s: listen first.
    let map = support::lldp_map("green", "tor-ladvd-*");
    let agent =
        support::AgentProcess::start(&node, &[("green.yaml", &map)], &["--include", "sv-*"]);
    agent.wait_for(10, "first snapshot", |_| true);
    std::thread::sleep(Duration::from_millis(300));
    let _ladvd = support::Ladvd::start(&sw, "swp1", "tor-ladvd-01");
    agent.wait_for(10, "green on sv-a", |s| {
        s["networks"]["green"]["device"] == "sv-a"
    });
    let survey = agent.wait_for_survey(5, "the neighbor in survey.json", |s| {
        !s["interfaces"][0]["lldp"].is_null()
    });
    let ours = &survey["interfaces"][0]["lldp"];
    let deadline = Instant::now() + Duration::from_secs(5);
    let theirs = loop {
        let out = receiver.cli(&["-f", "json0", "show", "neighbors", "details"]);
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        if let Some(n) = v["lldp"][0]["interface"].get(0) {
            break n.clone();
        }
        assert!(Instant::now() < deadline, "lldpd never heard ladvd: {v}");
        std::thread::sleep(Duration::from_millis(200));
    };
    let chassis = &theirs["chassis"][0];
    let port = &theirs["port"][0];
    assert_eq!(ours["systemName"], "tor-ladvd-01");
    assert_eq!(ours["systemName"], chassis["name"][0]["value"]);
    assert_eq!(ours["systemDescription"], chassis["descr"][0]["value"]);
    assert_eq!(ours["chassisId"]["subtype"], chassis["id"][0]["type"]);
    assert_eq!(ours["chassisId"]["value"], chassis["id"][0]["value"]);
    assert_eq!(ours["portId"]["subtype"], port["id"][0]["type"]);
    assert_eq!(ours["portId"]["value"], port["id"][0]["value"]);
    assert_eq!(
        ours["ttlSeconds"].to_string(),
        port["ttl"][0]["value"].as_str().unwrap()
    );
}

/// A link that goes down and up again between two looks at it (one event
/// batch): its listener keeps hearing, the neighbor stays past its TTL.
#[test]
fn a_listener_survives_a_down_and_up_within_one_batch() {
    let node = Netns::new("lldp-flap");
    // TTL 4 s: refreshes every second keep it.
    let (_sw, _lldpd) = switch(&node, "sv-a", "tor-green-01", "Ethernet1/7", &[]);
    let ns = node.name.clone();
    let kept = node.block_on(move || async move {
        let filter = SurveyFilter::new(false, &["sv-a".into()], &[]).unwrap();
        let discovery = Discovery::dump_once(filter).await.unwrap();
        let mut lldp = Lldp::new();
        lldp.follow(&discovery.interfaces());
        let index = discovery.interfaces()[0].index;
        while lldp.neighbor(index).is_none() {
            tokio::time::timeout(Duration::from_secs(5), lldp.changes())
                .await
                .expect("neighbor heard");
        }
        // Down and up with no look in between, as when both events come in
        // one batch and only the final state (up) is followed.
        support::ip_in(&ns, &["link", "set", "sv-a", "down"]);
        support::ip_in(&ns, &["link", "set", "sv-a", "up"]);
        let until = tokio::time::Instant::now() + Duration::from_secs(9);
        while tokio::time::timeout_at(until, lldp.changes()).await.is_ok() {}
        lldp.neighbor(index).is_some()
    });
    assert!(
        kept,
        "the neighbor expired: the listener stopped hearing after the flap"
    );
}

/// The switches of one node: one per protocol, each lldpd sending only it
/// (`-ll`: no LLDP), cabled to sv-<tag>.
const ONLY: &[(&str, &[&str], &str, &str)] = &[
    ("c1", &["-cc", "-ll"], "sw-cdp1", "cdp"),
    ("c2", &["-ccccc", "-ll"], "sw-cdp2", "cdp"),
    ("e", &["-ee", "-ll"], "sw-edp", "edp"),
    ("f", &["-ff", "-ll"], "sw-fdp", "fdp"),
    (
        "s",
        &["-ss", "-ll", "-m", "192.0.2.33"],
        "192.0.2.33",
        "sonmp",
    ),
];

fn neighbor_map(name: &str, rule: &str) -> String {
    format!(
        "apiVersion: surveyor.dev/v1alpha1\nkind: NetworkMap\nmetadata:\n  name: {name}\nspec:\n  match:\n    {rule}\n"
    )
}

/// Each protocol from a switch that speaks only it: the standalone agent
/// hears it (as lldpd's own receiver, listening beside it, does), shows
/// its protocol, and a map that selects the switch by `match.neighbor`
/// resolves; `match.lldp` does not, and says why.
#[test]
fn every_protocol_lldpd_speaks_is_heard_and_matched() {
    let node = Netns::new("nbr");
    let mut switches = Vec::new();
    for (tag, flags, host, _) in ONLY {
        let sw = Netns::new(&format!("nbr-{tag}"));
        support::cable(&node, &format!("sv-{tag}"), &sw, "swp1");
        if host.starts_with("192.") {
            sw.ip(&["addr", "add", &format!("{host}/24"), "dev", "swp1"]);
        }
        let lldpd = Lldpd::start(
            &sw,
            "swp1",
            flags,
            &[&format!("configure system hostname {host}")],
        );
        switches.push((sw, lldpd));
    }
    let interfaces: Vec<String> = ONLY.iter().map(|(t, ..)| format!("sv-{t}")).collect();
    let receiver = Lldpd::start(
        &node,
        &interfaces.join(","),
        &["-r", "-c", "-e", "-f", "-s"],
        &[],
    );
    let mut maps: Vec<(String, String)> = ONLY
        .iter()
        .map(|(tag, _, host, protocol)| {
            (
                format!("{tag}.yaml"),
                neighbor_map(
                    &format!("net-{tag}"),
                    &format!("neighbor: {{protocols: [{protocol}], systemName: '{host}'}}"),
                ),
            )
        })
        .collect();
    maps.push((
        "lldp.yaml".into(),
        neighbor_map("lldp-only", "lldp: {systemName: 'sw-*'}"),
    ));
    let files: Vec<(&str, &str)> = maps.iter().map(|(n, t)| (n.as_str(), t.as_str())).collect();
    let agent = support::AgentProcess::start(&node, &files, &["--include", "sv-*"]);
    let snap = agent.wait_for(20, "every protocol's network resolved", |s| {
        ONLY.iter()
            .all(|(tag, ..)| s["networks"][format!("net-{tag}")]["device"] == format!("sv-{tag}"))
    });
    assert!(snap["networks"]["lldp-only"]["device"].is_null());
    let reason = snap["networks"]["lldp-only"]["reason"].as_str().unwrap();
    assert!(
        reason.contains("fails lldp: the neighbor speaks"),
        "{reason}"
    );
    let survey = agent.wait_for_survey(10, "the neighbors", |s| {
        s["interfaces"]
            .as_array()
            .is_some_and(|i| i.iter().all(|i| i["lldp"].is_object()))
    });
    // lldpd's receiver, beside ours, shows the same neighbors.
    let deadline = Instant::now() + Duration::from_secs(10);
    let theirs = loop {
        let out = receiver.cli(&["-f", "json0", "show", "neighbors", "details"]);
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let ifaces = v["lldp"][0]["interface"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        if ifaces.len() == ONLY.len() {
            break ifaces;
        }
        assert!(
            Instant::now() < deadline,
            "lldpd's receiver: {v}
{}",
            receiver.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    for (tag, _, host, protocol) in ONLY {
        let name = format!("sv-{tag}");
        let ours = survey["interfaces"]
            .as_array()
            .unwrap()
            .iter()
            .find(|i| i["name"] == name)
            .unwrap()["lldp"]
            .clone();
        let t = theirs.iter().find(|i| i["name"] == name).unwrap();
        let chassis = &t["chassis"][0];
        let port = &t["port"][0];
        let first = |v: &serde_json::Value| v[0]["value"].clone();
        assert_eq!(ours["protocol"], *protocol, "{name}: {ours}");
        assert_eq!(
            ours["systemName"],
            first(&chassis["name"]),
            "{name}: {ours} / {t}"
        );
        assert_eq!(ours["systemName"], *host);
        assert_eq!(ours["chassisId"]["value"], first(&chassis["id"]), "{name}");
        // lldpd calls an address ID "ip"; Surveyor, as for LLDP's
        // subtype 5, "networkaddress".
        let subtype = match chassis["id"][0]["type"].as_str() {
            Some("ip") => "networkaddress",
            other => other.unwrap_or_default(),
        };
        assert_eq!(ours["chassisId"]["subtype"], subtype, "{name}");
        assert_eq!(ours["portId"]["value"], first(&port["id"]), "{name}");
        assert_eq!(ours["portId"]["subtype"], port["id"][0]["type"], "{name}");
        assert_eq!(ours["portDescription"], first(&port["descr"]), "{name}");
    }
    drop(switches);
}

/// One switch speaking LLDP and CDP: one neighbor, LLDP's, never two; the
/// table names the protocol of a neighbor that is not LLDP's.
#[test]
fn a_switch_speaking_lldp_and_cdp_is_one_neighbor() {
    let node = Netns::new("nbr-both");
    let sw = Netns::new("nbr-both-sw");
    support::cable(&node, "sv-a", &sw, "swp1");
    let sw2 = Netns::new("nbr-both-sw2");
    support::cable(&node, "sv-b", &sw2, "swp1");
    // -l: LLDP too (lldpd otherwise sends only the protocol it is forced to).
    let _both = Lldpd::start(
        &sw,
        "swp1",
        &["-cc", "-l"],
        &["configure system hostname sw-both"],
    );
    let _cdp = Lldpd::start(
        &sw2,
        "swp1",
        &["-cc", "-ll"],
        &["configure system hostname sw-cdp"],
    );
    let agent = support::AgentProcess::start(
        &node,
        &[(
            "g.yaml",
            &neighbor_map("green", "neighbor: {systemName: 'sw-both'}"),
        )],
        &["--include", "sv-*"],
    );
    agent.wait_for(10, "green", |s| s["networks"]["green"]["device"] == "sv-a");
    // Both protocols have been heard a few times over.
    std::thread::sleep(Duration::from_millis(2500));
    let survey = agent.wait_for_survey(5, "sv-a's neighbor", |s| {
        s["interfaces"][0]["lldp"].is_object()
    });
    let a = &survey["interfaces"][0];
    assert_eq!(a["name"], "sv-a");
    assert_eq!(a["lldp"]["protocol"], "lldp", "{a}");
    assert_eq!(a["lldp"]["systemName"], "sw-both");
    let table = node
        .command(surveyor())
        .args(["discover", "--include", "sv-*", "--lldp-wait", "4s"])
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&table.stdout);
    assert!(table.contains("sw-cdp/swp1 (cdp)"), "{table}");
    // Narrowed to LLDP, sv-b hears nothing.
    let lldp_only = support::discover_json(
        &node,
        &[
            "--include",
            "sv-*",
            "--lldp-wait",
            "3s",
            "--neighbor-protocols",
            "lldp",
        ],
    );
    assert!(lldp_only["interfaces"][1]["lldp"].is_null(), "{lldp_only}");
    assert!(
        agent.log().contains("CDP neighbor sw-cdp/swp1"),
        "{}",
        agent.log()
    );
}
