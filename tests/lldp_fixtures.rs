//! Real frames captured from lldpd (fixtures/lldp/*.bin, made by
//! fixtures/lldp/capture.sh) against their expected decodes (*.json).
//! `SURVEYOR_BLESS=1 cargo test --test lldp_fixtures` rewrites the JSON;
//! review the diff against `lldpcli show neighbors details` before
//! committing it.

use std::path::Path;

use surveyor::lldp::frame::{Lldpdu, parse_frame};

const FIXTURES: [&str; 3] = ["green-local-ids", "mac-ifname-vlans", "shutdown"];

#[test]
fn captured_frames_decode_as_expected() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/lldp");
    let bless = std::env::var_os("SURVEYOR_BLESS").is_some();
    for name in FIXTURES {
        let frame = std::fs::read(dir.join(format!("{name}.bin"))).unwrap();
        let (source, pdu) = parse_frame(&frame).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(source, [0x02, 0x5e, 0, 0, 0, 0x07], "{name}: source MAC");
        let expected_path = dir.join(format!("{name}.json"));
        if bless {
            let mut json = serde_json::to_string_pretty(&pdu).unwrap();
            json.push('\n');
            std::fs::write(&expected_path, json).unwrap();
            continue;
        }
        let expected: Lldpdu =
            serde_json::from_slice(&std::fs::read(&expected_path).unwrap()).unwrap();
        assert_eq!(pdu, expected, "{name}");
    }
}

#[test]
fn acceptance_switch_fixture_has_every_field() {
    let frame = std::fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/lldp/green-local-ids.bin"),
    )
    .unwrap();
    let (_, pdu) = parse_frame(&frame).unwrap();
    let n = pdu.neighbor();
    assert_eq!(
        (n.chassis_id.subtype.as_str(), n.chassis_id.value.as_str()),
        ("local", "tor-green-01-chassis")
    );
    assert_eq!(
        (n.port_id.subtype.as_str(), n.port_id.value.as_str()),
        ("local", "Ethernet1/7")
    );
    assert_eq!(n.system_name.as_deref(), Some("tor-green-01"));
    assert_eq!(n.port_description.as_deref(), Some("uplink-to-node1"));
    assert_eq!(n.system_description.as_deref(), Some("NOS 4.2 (fixture)"));
    assert_eq!(n.management_addresses, vec!["192.0.2.10"]);
    assert_eq!(n.pvid, Some(100));
    assert_eq!(n.vlans.len(), 1);
    assert_eq!(
        (n.vlans[0].id, n.vlans[0].name.as_deref()),
        (100, Some("green"))
    );
    assert_eq!(n.ttl_seconds, 4);
}

/// The frames lldpd sends as a switch speaking only CDPv1, CDPv2, EDP,
/// FDP or SONMP (fixtures/neighbors, `capture.sh` makes them again).
#[test]
fn lldpd_s_other_protocols_decode_to_its_switch() {
    use surveyor::inventory::Protocol;
    use surveyor::lldp::decode::{Protocols, decode};
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/neighbors");
    for (file, protocol, name, port) in [
        ("cdpv1", Protocol::Cdp, "tor-green-01", "swp1"),
        ("cdpv2", Protocol::Cdp, "tor-green-01", "swp1"),
        ("edp", Protocol::Edp, "tor-green-01", "slot/port"),
        ("fdp", Protocol::Fdp, "tor-green-01", "swp1"),
        ("sonmp", Protocol::Sonmp, "192.0.2.10", "00-00-"),
    ] {
        let frame = std::fs::read(dir.join(format!("{file}.bin"))).unwrap();
        let d = decode(&frame, Protocols::all()).unwrap_or_else(|| panic!("{file}: not decoded"));
        let n = d.result.unwrap_or_else(|e| panic!("{file}: {e}")).neighbor;
        assert_eq!(n.protocol, protocol, "{file}");
        assert_eq!(n.system_name.as_deref(), Some(name), "{file}");
        match port {
            "slot/port" => assert!(n.port_id.value.contains('/'), "{file}: {}", n.port_id.value),
            prefix => assert!(
                n.port_id.value.starts_with(prefix),
                "{file}: {}",
                n.port_id.value
            ),
        }
        assert_eq!(d.source, [0x02, 0x5e, 0, 0, 0, 7], "{file}");
    }
}
