//! The public captures of real switches' LLDP frames
//! (`../shared/lldp-captures/`, read in place): the parser against each
//! frame, and a live replay onto a veth where lldpd's own receiver and ours
//! listen side by side and must agree on every neighbor.

mod support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde_json::Value;
use support::pcap;
use support::{Lldpd, Netns};
use surveyor::discovery::Discovery;
use surveyor::inventory::Neighbor;
use surveyor::lldp::Lldp;
use surveyor::lldp::frame::parse_frame;
use surveyor::survey::SurveyFilter;

/// Every LLDP frame of every capture, with where it came from.
fn lldp_frames() -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    for path in pcap::captures() {
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        for (n, frame) in pcap::frames(&path).into_iter().enumerate() {
            if pcap::is_lldp(&frame) {
                out.push((format!("{name}#{n}"), frame));
            }
        }
    }
    assert!(
        out.len() > 20,
        "too few LLDP frames in the captures: {}",
        out.len()
    );
    out
}

/// Each frame, and every cut of it, parses or is refused promptly:
/// never a panic, never a loop.
#[test]
fn every_capture_frame_and_every_truncation_is_an_answer() {
    for (name, frame) in lldp_frames() {
        let started = Instant::now();
        for cut in 0..=frame.len() {
            let _ = parse_frame(&frame[..cut]);
        }
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "{name}: {} parses took {:?}",
            frame.len(),
            started.elapsed()
        );
    }
}

/// What the real switches in the captures say, decoded: the Extreme's
/// NUL-terminated strings, the data-centre leaf, the Junipers' VLANs.
#[test]
fn real_switches_decode_as_they_meant() {
    let decoded: BTreeMap<String, Neighbor> = lldp_frames()
        .into_iter()
        .filter_map(|(name, f)| Some((name, parse_frame(&f).ok()?.1.neighbor())))
        .collect();
    let extreme = &decoded["nmstate_extreme.pcap#0"];
    assert_eq!(extreme.system_name.as_deref(), Some("Summit300-48"));
    assert_eq!(
        extreme.port_description.as_deref(),
        Some("Summit300-48-Port 1001")
    );
    assert_eq!(extreme.vlans[0].name.as_deref(), Some("v2-0488-03-0505"));
    assert_eq!(extreme.pvid, Some(488));
    let leaf = &decoded["lldp-app-priority.pcap#0"];
    assert_eq!(leaf.system_name.as_deref(), Some("leaf0b"));
    assert_eq!(leaf.port_id.value, "leaf0b-eth10");
    let juniper = &decoded["nmstate_prodnet.pcap#0"];
    assert_eq!(juniper.system_name.as_deref(), Some("rkhan-pvt-jun5"));
    assert_eq!(
        (juniper.pvid, juniper.vlans[0].name.as_deref()),
        (Some(50), Some("prod-net"))
    );
}

/// The neighbors lldpd's receiver shows, each in [`lldpd_view`]'s shape.
fn lldpd_neighbors(receiver: &Lldpd) -> Vec<Value> {
    let out = receiver.cli(&["-f", "json0", "show", "neighbors", "details"]);
    let shown: Value = serde_json::from_slice(&out.stdout).unwrap();
    shown["lldp"][0]["interface"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(lldpd_view)
        .collect()
}

/// lldpd's JSON (`-f json0`: every value a list) for one neighbor, in our
/// shape where the two can be compared.
fn lldpd_view(n: &Value) -> Value {
    let first = |v: &Value| {
        v.as_array()
            .and_then(|a| a.first())
            .cloned()
            .unwrap_or(Value::Null)
    };
    let value = |v: &Value| first(v)["value"].clone();
    let chassis = first(&n["chassis"]);
    let port = first(&n["port"]);
    let id = |v: &Value| {
        let id = first(v);
        serde_json::json!({"subtype": id["type"], "value": id["value"]})
    };
    // lldpd lists the PVID as a VLAN of its own when it has no name; we
    // keep it apart (`pvid`) and list named VLANs.
    let vlans: Vec<Value> = n["vlan"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|v| v.get("value").is_some())
        .map(|v| {
            let id: u64 = v["vlan-id"].as_str().unwrap().parse().unwrap();
            serde_json::json!({"id": id, "name": v.get("value")})
        })
        .collect();
    let pvid = n["vlan"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|v| v["pvid"] == true)
        .map(|v| v["vlan-id"].as_str().unwrap().parse::<u64>().unwrap());
    let mgmt: Vec<Value> = chassis["mgmt-ip"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|m| m["value"].clone())
        .collect();
    serde_json::json!({
        "chassisId": id(&chassis["id"]),
        "portId": id(&port["id"]),
        "systemName": value(&chassis["name"]),
        "systemDescription": value(&chassis["descr"]),
        "portDescription": value(&port["descr"]),
        "ttl": value(&port["ttl"]).as_str().map(|t| t.parse::<u64>().unwrap()),
        "pvid": pvid,
        "vlans": vlans,
        "managementIps": mgmt,
    })
}

/// Ours, in the same shape: management addresses that are IPs only (what
/// lldpd lists), VLAN names as they are.
fn our_view(n: &Neighbor) -> Value {
    let mgmt: Vec<Value> = n
        .management_addresses
        .iter()
        .filter(|a| a.parse::<std::net::IpAddr>().is_ok())
        .map(|a| Value::String(a.clone()))
        .collect();
    serde_json::json!({
        "chassisId": n.chassis_id,
        "portId": n.port_id,
        "systemName": n.system_name,
        "systemDescription": n.system_description,
        "portDescription": n.port_description,
        "ttl": n.ttl_seconds,
        "pvid": n.pvid,
        "vlans": n.vlans.iter().map(|v| serde_json::json!({"id": v.id, "name": v.name})).collect::<Vec<_>>(),
        "managementIps": mgmt,
    })
}

fn tlv(kind: u8, value: &[u8]) -> Vec<u8> {
    let header = (u16::from(kind) << 9) | value.len() as u16;
    [&header.to_be_bytes()[..], value].concat()
}

/// Frames as other speakers send them, beyond the captures: a Latin-1
/// port description and a 33-byte VLAN name (longer than the standard's
/// 32) in one; a VLAN name TLV that claims more than it holds in another.
fn crafted() -> Vec<Vec<u8>> {
    let frame = |mac: u8, port: &[u8], extra: &[Vec<u8>]| {
        let src = [0x02, 0x5e, 0, 0, 0, mac];
        let mut f = [0x01, 0x80, 0xc2, 0x00, 0x00, 0x0e].to_vec();
        f.extend(src);
        f.extend([0x88, 0xcc]);
        f.extend(tlv(1, &[&[4][..], &src].concat()));
        f.extend(tlv(2, &[&[5][..], port].concat()));
        f.extend(tlv(3, &[0, 120]));
        for t in extra {
            f.extend(t);
        }
        f.extend(tlv(0, &[]));
        f
    };
    let long_name = [&[0x00, 0x80, 0xc2, 3, 0, 100, 33][..], &[b'v'; 33]].concat();
    vec![
        frame(
            0x41,
            b"swp1",
            &[
                tlv(4, b"Port caf\xe9 \xa0green"),
                tlv(5, b"sw-latin"),
                tlv(127, &long_name),
            ],
        ),
        frame(
            0x42,
            b"swp2",
            &[
                tlv(5, b"sw-short-vlan"),
                tlv(
                    127,
                    &[0x00, 0x80, 0xc2, 3, 0, 101, 9, b'b', b'l', b'u', b'e'],
                ),
                tlv(127, &[0x00, 0x80, 0xc2, 3, 0, 102, 3, b'r', b'e', b'd']),
            ],
        ),
    ]
}

/// Replays every capture onto a veth where lldpd's receiver and ours both
/// listen; every neighbor lldpd keeps, we keep with the same facts. The
/// only frames we keep that lldpd refuses are known and named here.
#[test]
fn replayed_captures_give_the_neighbors_lldpds_receiver_gives() {
    let node = Netns::new("cap");
    let wire = Netns::new("cap-w");
    support::cable(&node, "sv-a", &wire, "p0");
    // Some captured frames are longer than 1500 bytes.
    node.ip(&["link", "set", "sv-a", "mtu", "9000"]);
    wire.ip(&["link", "set", "p0", "mtu", "9000"]);
    let receiver = Lldpd::start(
        &node,
        "sv-a",
        &["-r"],
        &["configure system max-neighbors 64"],
    );

    let (ready, listening) = std::sync::mpsc::channel();
    let ours = node.spawn(move || async move {
        let filter = SurveyFilter::new(false, &["sv-a".into()], &[]).unwrap();
        let discovery = Discovery::dump_once(filter).await.unwrap();
        let mut lldp = Lldp::new();
        // The node's own MACs, lo's all-zero one among them.
        lldp.set_own_macs(
            discovery
                .inventory()
                .links()
                .filter_map(|l| l.interface.mac.as_deref()),
        );
        lldp.follow(&discovery.interfaces());
        ready.send(()).unwrap();
        let until = tokio::time::Instant::now() + Duration::from_secs(4);
        while tokio::time::timeout_at(until, lldp.changes()).await.is_ok() {}
        let entries: Vec<Neighbor> = lldp.entries().into_iter().map(|e| e.1.clone()).collect();
        (entries, lldp.stats().clone())
    });
    listening.recv_timeout(Duration::from_secs(5)).unwrap();
    // lldpd may take a moment before its receiver is armed.
    std::thread::sleep(Duration::from_millis(500));
    let mut frames: Vec<Vec<u8>> = lldp_frames().into_iter().map(|(_, f)| f).collect();
    frames.extend(crafted());
    support::send_frames(&wire, "p0", frames);
    std::thread::sleep(Duration::from_millis(800));
    let theirs = lldpd_neighbors(&receiver);
    let (ours, stats) = ours.join().unwrap();
    let ours: Vec<Value> = ours.iter().map(our_view).collect();
    let key = |v: &Value| (v["chassisId"].to_string(), v["portId"].to_string());
    let ours_by: BTreeMap<_, &Value> = ours.iter().map(|v| (key(v), v)).collect();
    assert!(
        theirs.len() >= 8,
        "lldpd kept only {}: {theirs:#?}",
        theirs.len()
    );
    for t in &theirs {
        let o = ours_by.get(&key(t)).unwrap_or_else(|| {
            panic!("lldpd keeps a neighbor we lost: {t:#}\nours: {ours:#?}\nstats: {stats:?}")
        });
        assert_eq!(*o, t, "our decode differs from lldpd's");
    }
    // The neighbor we keep and lldpd refuses whole: one whose VLAN name
    // TLV claims more than it holds (we leave out that TLV alone). One
    // whose End TLV has a length both refuse (lldpd: "lldp end received
    // with size not null").
    let theirs_keys: Vec<_> = theirs.iter().map(key).collect();
    let extra: Vec<&Value> = ours
        .iter()
        .filter(|o| !theirs_keys.contains(&key(o)))
        .collect();
    let extra_ids: Vec<&str> = extra
        .iter()
        .map(|o| o["chassisId"]["value"].as_str().unwrap())
        .collect();
    assert_eq!(extra_ids, ["02:5e:00:00:00:42"], "{extra:#?}");
    assert_eq!(
        extra[0]["vlans"],
        serde_json::json!([{"id": 102, "name": "red"}]),
        "the good VLAN TLV beside the bad one stays"
    );
    let latin = ours.iter().find(|o| o["systemName"] == "sw-latin").unwrap();
    assert_eq!(latin["portDescription"], "Port caf\u{fffd} \u{fffd}green");
    // The leaf sends from 00:00:00:00:00:00, like lo's MAC: still heard.
    assert!(ours.iter().any(|o| o["systemName"] == "leaf0b"));
    assert_eq!(stats.own, 0);
    // The fragments in the captures are refused, counted by reason.
    assert!(stats.rejected.values().sum::<u64>() >= 4, "{stats:?}");
}

/// A neighbor whose every frame is refused is named as such, not taken
/// for a switch with LLDP off.
#[test]
fn discover_names_refused_frames_instead_of_silence() {
    let node = Netns::new("cap-bad");
    let wire = Netns::new("cap-bad-w");
    support::cable(&node, "sv-a", &wire, "p0");
    // The fragments in the captures: no chassis ID first.
    let fragments: Vec<Vec<u8>> = lldp_frames()
        .into_iter()
        .filter(|(n, _)| n.starts_with("lldp_8021_linkagg"))
        .map(|(_, f)| f)
        .collect();
    assert!(!fragments.is_empty());
    let discover = node
        .command(support::surveyor())
        .args(["discover", "--include", "sv-a", "--lldp-wait", "3s"])
        .stderr(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    for _ in 0..3 {
        support::send_frames(&wire, "p0", fragments.clone());
        std::thread::sleep(Duration::from_millis(300));
    }
    let out = discover.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("frame(s) heard on sv-a were rejected (last: LLDP: ")
            && err.contains("must be chassis ID"),
        "{err}"
    );
    assert!(!err.contains("no neighbor heard"), "{err}");
}

/// The Cisco switches of LLDP_and_CDP.pcap (two Catalyst 3560s announcing
/// CDPv2 beside LLDP) replayed onto a veth where lldpd's receiver (with
/// CDP on) and ours listen: the same CDP neighbors, with the same facts.
#[test]
fn cisco_cdpv2_frames_of_a_capture_decode_as_lldpd_decodes_them() {
    use surveyor::inventory::Protocol;
    use surveyor::lldp::decode::{Protocols, decode};
    let path = pcap::captures_dir().join("LLDP_and_CDP.pcap");
    let cdp: Vec<Vec<u8>> = pcap::frames(&path)
        .into_iter()
        .filter(|f| f.starts_with(&[0x01, 0x00, 0x0c, 0xcc, 0xcc, 0xcc]))
        .collect();
    assert_eq!(cdp.len(), 4, "the capture's CDP frames");
    // Decoded in place: CDPv2, a C3560's facts.
    let only_cdp: Protocols = [Protocol::Cdp].into_iter().collect();
    let first = decode(&cdp[0], only_cdp).unwrap().result.unwrap().neighbor;
    assert_eq!(first.protocol, Protocol::Cdp);
    assert_eq!(first.system_name.as_deref(), Some("S1"));
    assert_eq!(first.port_id.value, "FastEthernet0/13");
    assert_eq!(first.pvid, Some(1));
    assert_eq!(first.ttl_seconds, 180);
    assert!(
        first
            .system_description
            .as_deref()
            .unwrap()
            .starts_with("cisco WS-C3560-24TS running on\nCisco IOS Software, C3560 Software")
    );

    let node = Netns::new("cap-cdp");
    let wire = Netns::new("cap-cdp-w");
    support::cable(&node, "sv-a", &wire, "p0");
    let receiver = Lldpd::start(&node, "sv-a", &["-r", "-c"], &[]);
    let (ready, listening) = std::sync::mpsc::channel();
    let ours = node.spawn(move || async move {
        let filter = SurveyFilter::new(false, &["sv-a".into()], &[]).unwrap();
        let discovery = Discovery::dump_once(filter).await.unwrap();
        let mut lldp = Lldp::with(only_cdp);
        lldp.follow(&discovery.interfaces());
        ready.send(()).unwrap();
        let until = tokio::time::Instant::now() + Duration::from_secs(3);
        while tokio::time::timeout_at(until, lldp.changes()).await.is_ok() {}
        let entries: Vec<Neighbor> = lldp.entries().into_iter().map(|e| e.1.clone()).collect();
        entries
    });
    listening.recv_timeout(Duration::from_secs(5)).unwrap();
    std::thread::sleep(Duration::from_millis(500));
    support::send_frames(&wire, "p0", cdp);
    std::thread::sleep(Duration::from_millis(800));
    let theirs = lldpd_neighbors(&receiver);
    let ours: Vec<Value> = ours.join().unwrap().iter().map(our_view).collect();
    assert_eq!(theirs.len(), 2, "lldpd's receiver: {theirs:#?}");
    assert_eq!(ours.len(), 2, "ours: {ours:#?}");
    for t in &theirs {
        // lldpd names the native VLAN "VLAN #N" as a VLAN of its own; we
        // keep it as the PVID.
        let mut t = t.clone();
        t["vlans"] = serde_json::json!([]);
        let o = ours
            .iter()
            .find(|o| o["chassisId"] == t["chassisId"])
            .unwrap_or_else(|| panic!("lldpd keeps {t:#} and we do not: {ours:#?}"));
        assert_eq!(*o, t, "our CDP decode differs from lldpd's");
    }
}
