//! Discovery against the real kernel, in throwaway network namespaces.

mod support;

use std::time::{Duration, Instant};

use support::{Netns, cable, discover_json, surveyor};
use surveyor::discovery::Discovery;
use surveyor::inventory::{Change, Interface, LinkKind, OperState};
use surveyor::survey::SurveyFilter;

fn include(globs: &[&str]) -> SurveyFilter {
    let globs: Vec<String> = globs.iter().map(|g| g.to_string()).collect();
    SurveyFilter::new(false, &globs, &[]).unwrap()
}

#[test]
fn discover_reports_a_veths_facts_and_nothing_unasked() {
    let node = Netns::new("disc");
    let switch = Netns::new("disc-sw");
    node.ip(&[
        "link",
        "add",
        "sv-a",
        "address",
        "02:aa:00:00:00:01",
        "mtu",
        "9000",
        "type",
        "veth",
        "peer",
        "name",
        "sw-p",
        "netns",
        &switch.name,
    ]);
    node.ip(&["link", "set", "sv-a", "alias", "green-uplink"]);
    switch.ip(&["link", "set", "sw-p", "mtu", "9000", "up"]);
    node.ip(&["link", "set", "sv-a", "up"]);
    support::wait_oper_up(&node, "sv-a");

    let doc = discover_json(&node, &["--include", "sv-*"]);
    let ifaces = doc["interfaces"].as_array().unwrap();
    assert_eq!(doc["node"], "node1");
    assert_eq!(ifaces.len(), 1, "{doc:#}");
    let a = &ifaces[0];
    let index = a["index"].as_u64().unwrap();
    assert!(index > 1);
    // Exactly these facts, nothing else: a veth has no driver, PCI address,
    // master or altNames; veth reports 10G full duplex through ethtool.
    assert_eq!(
        a,
        &serde_json::json!({
            "name": "sv-a", "index": index, "mac": "02:aa:00:00:00:01",
            "kind": "veth", "operState": "up", "carrier": true, "mtu": 9000,
            "alias": "green-uplink", "speedMbps": 10000, "duplex": "full"
        })
    );

    let doc = discover_json(&node, &[]);
    assert_eq!(
        doc["interfaces"],
        serde_json::json!([]),
        "physical-only by default"
    );

    let out = node.command(surveyor()).arg("discover").output().unwrap();
    assert!(out.status.success());
    assert!(
        out.stdout.is_empty(),
        "table mode prints nothing when nothing is surveyed"
    );
    let hint = String::from_utf8_lossy(&out.stderr);
    assert!(
        hint.contains("--all") && hint.contains("--include"),
        "{hint}"
    );
}

#[test]
fn discover_rejects_a_bad_glob_by_name() {
    let out = std::process::Command::new(surveyor())
        .args(["discover", "--include", "sv-["])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--include") && err.contains("sv-["), "{err}");
}

#[test]
fn facts_of_bridge_port_and_macvlan_child() {
    let node = Netns::new("kinds");
    let peer = Netns::new("kinds-p");
    cable(&node, "sv-a", &peer, "p-a");
    node.ip(&["link", "add", "sv-br", "type", "bridge"]);
    node.ip(&[
        "link", "add", "sv-p", "type", "veth", "peer", "name", "sv-q",
    ]);
    node.ip(&["link", "set", "sv-p", "master", "sv-br"]);
    node.ip(&[
        "link", "add", "sv-m", "link", "sv-a", "type", "macvlan", "mode", "bridge",
    ]);
    node.ip(&[
        "link",
        "property",
        "add",
        "dev",
        "sv-m",
        "altname",
        "green-child",
    ]);

    let ifaces = node.block_on(|| async {
        Discovery::dump_once(include(&["sv-*"]))
            .await
            .unwrap()
            .interfaces()
    });
    let get = |name: &str| -> &Interface {
        ifaces
            .iter()
            .find(|i| i.name == name)
            .unwrap_or_else(|| panic!("{name} missing: {ifaces:#?}"))
    };
    assert_eq!(get("sv-br").kind, LinkKind::Virtual("bridge".into()));
    assert_eq!(get("sv-p").master.as_deref(), Some("sv-br"));
    assert_eq!(get("sv-q").master, None);
    let m = get("sv-m");
    assert_eq!(m.kind, LinkKind::Virtual("macvlan".into()));
    assert_eq!(m.alt_names, vec!["green-child".to_string()]);
    assert_eq!(m.oper_state, OperState::Down);
    assert!(!m.carrier);
    assert_eq!(get("sv-a").oper_state, OperState::Up);
    let names: Vec<&str> = ifaces.iter().map(|i| i.name.as_str()).collect();
    assert_eq!(
        names,
        ["sv-a", "sv-br", "sv-m", "sv-p", "sv-q"],
        "sorted, lo not surveyed"
    );
}

#[test]
fn odd_names_and_unicode_aliases_survive() {
    let node = Netns::new("odd");
    let long = "sv-fifteen.c-_x"; // IFNAMSIZ - 1 = 15 bytes, dots and dashes
    assert_eq!(long.len(), 15);
    node.ip(&["link", "add", long, "type", "veth", "peer", "name", "sv.2"]);
    node.ip(&["link", "set", long, "alias", "vert-uplink ☂ 緑"]);
    let doc = discover_json(&node, &["--include", "sv*", "--all"]);
    let ifaces = doc["interfaces"].as_array().unwrap();
    let a = ifaces
        .iter()
        .find(|i| i["name"] == long)
        .expect("long name reported");
    assert_eq!(a["alias"], "vert-uplink ☂ 緑");
    assert!(ifaces.iter().any(|i| i["name"] == "sv.2"));
    // lo answers EOPNOTSUPP to ethtool link modes: speed omitted, lo kept.
    let lo = ifaces
        .iter()
        .find(|i| i["name"] == "lo")
        .expect("lo with --all");
    assert_eq!(lo["kind"], "loopback");
    assert!(lo.get("speedMbps").is_none(), "{lo}");
}

/// Kernels before 5.6 have no ethtool netlink: the SIOCETHTOOL ioctl gives
/// the same speed and duplex; a link without them, and a name that is too
/// long or unknown, are "unknown", never an error.
#[test]
fn the_ethtool_ioctl_agrees_with_ethtool_netlink() {
    use surveyor::discovery::ethtool::{Ethtool, LinkSpeed, ioctl};
    use surveyor::inventory::Duplex;
    let node = Netns::new("ioctl");
    let peer = Netns::new("ioctl-p");
    support::cable(&node, "sv-a", &peer, "p0");
    let (by_ioctl, by_netlink, lo, long, missing) = node.block_on(|| async {
        let netlink = Ethtool::connect().speed("sv-a").await;
        (
            ioctl::speed("sv-a"),
            netlink,
            ioctl::speed("lo"),
            ioctl::speed("a-name-far-too-long-for-linux"),
            ioctl::speed("nosuchlink"),
        )
    });
    let veth = LinkSpeed {
        speed_mbps: Some(10000),
        duplex: Some(Duplex::Full),
    };
    assert_eq!(by_netlink, veth);
    assert_eq!(by_ioctl, veth);
    for unknown in [lo, long, missing] {
        assert_eq!(unknown, LinkSpeed::default());
    }
}

/// Pulls changes until one satisfies `want`, failing after one second.
async fn expect_change(d: &mut Discovery, what: &str, want: impl Fn(&Change) -> bool) -> Change {
    let deadline = Instant::now() + Duration::from_secs(1);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, d.changes()).await {
            Ok(changes) => {
                if let Some(c) = changes.unwrap().into_iter().find(|c| want(c)) {
                    return c;
                }
            }
            Err(_) => panic!("{what}: not observed within 1 s"),
        }
    }
}

#[test]
fn watch_sees_add_delete_rename_updown_and_mtu() {
    let node = Netns::new("watch");
    let ns = node.name.clone();
    node.block_on(move || async move {
        let ip = move |args: &[&str]| {
            support::ip_in(&ns, args);
        };
        let mut d = Discovery::watch(include(&["sv-*"])).await.unwrap();
        assert!(d.interfaces().is_empty());

        ip(&[
            "link", "add", "sv-a", "type", "veth", "peer", "name", "sv-b",
        ]);
        expect_change(
            &mut d,
            "add",
            |c| matches!(c, Change::Added(i) if i.name == "sv-a"),
        )
        .await;

        ip(&["link", "set", "sv-a", "up"]);
        ip(&["link", "set", "sv-b", "up"]);
        expect_change(
            &mut d,
            "up",
            |c| matches!(c, Change::Updated { after, .. } if after.name == "sv-a" && after.is_up()),
        )
        .await;

        ip(&["link", "set", "sv-b", "down"]);
        expect_change(&mut d, "carrier down", |c| {
            matches!(c, Change::Updated { after, .. } if after.name == "sv-a" && !after.carrier)
        })
        .await;

        ip(&["link", "set", "sv-a", "mtu", "4000"]);
        expect_change(&mut d, "mtu", |c| {
            matches!(c, Change::Updated { after, .. } if after.name == "sv-a" && after.mtu == 4000)
        })
        .await;

        ip(&["link", "set", "sv-a", "down"]);
        ip(&["link", "set", "sv-a", "name", "sv-green"]);
        let c = expect_change(
            &mut d,
            "rename",
            |c| matches!(c, Change::Updated { after, .. } if after.name == "sv-green"),
        )
        .await;
        let Change::Updated { before, after } = c else {
            unreachable!()
        };
        assert_eq!(before.index, after.index);

        ip(&["link", "set", "sv-green", "name", "xx-out"]);
        expect_change(
            &mut d,
            "renamed out of the survey",
            |c| matches!(c, Change::Removed(i) if i.name == "sv-green"),
        )
        .await;
        ip(&["link", "set", "xx-out", "name", "sv-back"]);
        expect_change(
            &mut d,
            "renamed into the survey",
            |c| matches!(c, Change::Added(i) if i.name == "sv-back"),
        )
        .await;

        ip(&["link", "del", "sv-back"]);
        expect_change(
            &mut d,
            "delete",
            |c| matches!(c, Change::Removed(i) if i.name == "sv-back"),
        )
        .await;
        assert!(d.interfaces().is_empty(), "{:?}", d.interfaces());
    });
}

#[test]
fn unsurveyed_churn_and_bridge_messages_change_nothing() {
    let node = Netns::new("quiet");
    let ns = node.name.clone();
    node.block_on(move || async move {
        let ip = move |args: &[&str]| {
            support::ip_in(&ns, args);
        };
        ip(&[
            "link", "add", "sv-a", "type", "veth", "peer", "name", "sv-b",
        ]);
        let mut d = Discovery::watch(include(&["sv-a"])).await.unwrap();
        // Unsurveyed links flap; sv-a joins and leaves a bridge, which also
        // sends bridge-family NEWLINK/DELLINK for it.
        ip(&["link", "add", "zz-br", "type", "bridge"]);
        ip(&["link", "set", "sv-b", "up"]);
        ip(&["link", "set", "sv-b", "down"]);
        ip(&["link", "set", "sv-a", "master", "zz-br"]);
        let c = expect_change(&mut d, "enslaved", |_| true).await;
        assert_eq!(c.interface().master.as_deref(), Some("zz-br"));
        ip(&["link", "set", "zz-br", "name", "zz-green"]);
        let c = expect_change(&mut d, "master renamed", |_| true).await;
        assert_eq!(c.interface().master.as_deref(), Some("zz-green"));
        ip(&["link", "set", "sv-a", "nomaster"]);
        let c = expect_change(&mut d, "released", |_| true).await;
        assert_eq!(c.interface().master, None);
        assert_eq!(
            d.interfaces().len(),
            1,
            "a bridge-family DELLINK must not drop the port"
        );
        ip(&["link", "del", "zz-green"]);
        // Nothing surveyed changes now.
        let quiet = tokio::time::timeout(Duration::from_millis(300), d.changes()).await;
        assert!(quiet.is_err(), "unexpected change: {quiet:?}");
    });
}

#[test]
fn overrun_triggers_a_redump_that_loses_nothing() {
    let node = Netns::new("overrun");
    let ns = node.name.clone();
    node.block_on(move || async move {
        // The smallest receive buffer the kernel allows, so a burst overruns.
        let mut d = Discovery::watch_with_buffer(include(&["sv*"]), 1)
            .await
            .unwrap();
        support::veth_pairs(&ns, "sv", "sw", 200);
        let deadline = Instant::now() + Duration::from_secs(5);
        while d.interfaces().len() < 200 && Instant::now() < deadline {
            let _ = tokio::time::timeout(Duration::from_millis(500), d.changes()).await;
        }
        assert_eq!(d.interfaces().len(), 200);
        assert!(
            d.stats().overruns >= 1,
            "the burst should have overrun: {:?}",
            d.stats()
        );
        assert!(d.stats().dumps >= 2, "{:?}", d.stats());
    });
}

#[test]
fn links_vanishing_mid_dump_never_fail_a_dump_or_lose_a_steady_link() {
    let node = Netns::new("churn");
    for n in 0..10 {
        node.ip(&[
            "link",
            "add",
            &format!("sv-keep{n}"),
            "type",
            "veth",
            "peer",
            "name",
            &format!("sv-kp{n}"),
        ]);
    }
    let ns = node.name.clone();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let churner = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let _ = std::process::Command::new("ip")
                    .args([
                        "-n", &ns, "link", "add", "sv-tmp", "type", "veth", "peer", "name",
                        "sv-tmq",
                    ])
                    .output();
                let _ = std::process::Command::new("ip")
                    .args(["-n", &ns, "link", "del", "sv-tmp"])
                    .output();
            }
        })
    };
    let kept = node.block_on(|| async {
        let mut min = usize::MAX;
        for _ in 0..50 {
            let d = Discovery::dump_once(include(&["sv-keep*"]))
                .await
                .expect("dump during churn");
            min = min.min(d.interfaces().len());
        }
        min
    });
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    churner.join().unwrap();
    assert_eq!(kept, 10);
}

#[test]
fn host_namespace_nics_backed_by_a_device_are_physical_with_their_driver() {
    support::require_root();
    let out = std::process::Command::new(surveyor())
        .args(["discover", "--all", "-o", "json"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let ifaces = doc["interfaces"].as_array().unwrap();
    assert!(!ifaces.is_empty(), "--all reports at least lo");
    for i in ifaces {
        let name = i["name"].as_str().unwrap();
        let dev = std::path::Path::new("/sys/class/net")
            .join(name)
            .join("device");
        if dev.exists() {
            assert_eq!(i["kind"], "physical", "{i}");
            let driver = std::fs::read_link(dev.join("driver")).ok();
            let driver = driver
                .as_ref()
                .and_then(|d| d.file_name())
                .and_then(|d| d.to_str());
            assert_eq!(i["driver"].as_str(), driver, "{i}");
        } else {
            assert_ne!(i["kind"], "physical", "{i}");
        }
    }
}

/// `vendor:device` of a PCI function as sysfs shows it.
fn sysfs_pci_id(address: &str) -> String {
    let dir = std::path::Path::new("/sys/bus/pci/devices").join(address);
    let read = |f: &str| {
        let v = std::fs::read_to_string(dir.join(f)).unwrap();
        v.trim().trim_start_matches("0x").to_string()
    };
    format!("{}:{}", read("vendor"), read("device"))
}

/// The host's own NICs (read only): each one on a PCI function reports that
/// function's address and vendor:device ID (a virtio NIC its PCI parent's),
/// and every address `ip` shows, link-local IPv6 left out.
#[test]
fn host_nics_report_their_pci_id_and_addresses() {
    support::require_root();
    let out = std::process::Command::new(surveyor())
        .args(["discover", "-o", "json"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let pci: Vec<&serde_json::Value> = doc["interfaces"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| i["pciAddress"].is_string())
        .collect();
    assert!(
        !pci.is_empty(),
        "this test needs a PCI-backed NIC in the host namespace (a VM's virtio NIC will do): {doc:#}"
    );
    for i in pci {
        let address = i["pciAddress"].as_str().unwrap();
        assert_eq!(i["pciId"], sysfs_pci_id(address), "{i}");
        let name = i["name"].as_str().unwrap();
        let shown: serde_json::Value = serde_json::from_slice(
            &support::run("ip", &["-j", "addr", "show", "dev", name]).stdout,
        )
        .unwrap();
        let mut expected: Vec<String> = shown[0]["addr_info"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|a| !a["local"].as_str().unwrap().starts_with("fe80"))
            .map(|a| format!("{}/{}", a["local"].as_str().unwrap(), a["prefixlen"]))
            .collect();
        expected.sort_by_key(|a| a.contains(':'));
        let got: Vec<String> = i["addresses"]
            .as_array()
            .map(|a| a.iter().map(|s| s.as_str().unwrap().to_string()).collect())
            .unwrap_or_default();
        assert_eq!(got, expected, "{name}");
    }
}

#[test]
fn addresses_come_from_the_dump_and_from_address_events() {
    let node = Netns::new("addr");
    let peer = Netns::new("addr-p");
    cable(&node, "sv-a", &peer, "p0");
    cable(&node, "zz-x", &peer, "p1");
    node.ip(&["addr", "add", "192.0.2.10/24", "dev", "sv-a"]);
    node.ip(&["addr", "add", "2001:db8::10/64", "dev", "sv-a", "nodad"]);
    let doc = discover_json(&node, &["--include", "sv-*"]);
    assert_eq!(
        doc["interfaces"][0]["addresses"],
        serde_json::json!(["192.0.2.10/24", "2001:db8::10/64"]),
        "sorted, IPv4 first, the link-local IPv6 left out: {doc:#}"
    );
    let ns = node.name.clone();
    node.block_on(move || async move {
        let ip = move |args: &[&str]| {
            support::ip_in(&ns, args);
        };
        let mut d = Discovery::watch(include(&["sv-*"])).await.unwrap();
        ip(&["addr", "add", "198.51.100.7/25", "dev", "sv-a"]);
        let c = expect_change(&mut d, "address added", |c| {
            c.interface().addresses.len() == 3
        })
        .await;
        let Change::Updated { before, after } = c else {
            panic!("{c:?}");
        };
        assert_eq!(before.addresses.len(), 2);
        assert!(
            after
                .addresses
                .iter()
                .any(|a| a.to_string() == "198.51.100.7/25")
        );
        assert!(format!("{}", Change::Updated { before, after }).contains("addresses"));
        ip(&["addr", "del", "192.0.2.10/24", "dev", "sv-a"]);
        expect_change(&mut d, "address removed", |c| {
            !c.interface()
                .addresses
                .iter()
                .any(|a| a.to_string() == "192.0.2.10/24")
        })
        .await;
        // An address on a link outside the survey changes nothing.
        ip(&["addr", "add", "203.0.113.1/24", "dev", "zz-x"]);
        ip(&["addr", "del", "203.0.113.1/24", "dev", "zz-x"]);
        let quiet = tokio::time::timeout(Duration::from_millis(300), d.changes()).await;
        assert!(
            quiet.is_err(),
            "unsurveyed address changes surfaced: {quiet:?}"
        );
        assert_eq!(d.interfaces()[0].addresses.len(), 2);
    });
}

#[test]
fn one_shot_lookup_by_index_and_name() {
    use surveyor::discovery::lookup::{LinkKey, lookup};
    let node = Netns::new("lookup");
    node.ip(&[
        "link",
        "add",
        "sv-a",
        "address",
        "02:aa:00:00:00:01",
        "type",
        "veth",
        "peer",
        "name",
        "sv-b",
    ]);
    let (by_name, by_index, missing, missing_index) = node.block_on(|| async {
        let by_name = lookup(LinkKey::Name("sv-a")).unwrap().unwrap();
        let by_index = lookup(LinkKey::Index(by_name.interface.index))
            .unwrap()
            .unwrap();
        (
            by_name,
            by_index,
            lookup(LinkKey::Name("sv-zz")).unwrap(),
            lookup(LinkKey::Index(9999)).unwrap(),
        )
    });
    assert_eq!(by_name, by_index);
    assert_eq!(by_name.interface.mac.as_deref(), Some("02:aa:00:00:00:01"));
    assert_eq!(by_name.interface.kind, LinkKind::Virtual("veth".into()));
    assert!(missing.is_none() && missing_index.is_none());
}
