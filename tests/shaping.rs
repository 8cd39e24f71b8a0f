//! Shaping: the plugin holds a pod's interface to the rate its attachment
//! asked for (`runtimeConfig.bandwidth`) or its DRA claim took, measured
//! with real iperf3 flows over Debian's macvlan between namespaces; DEL
//! leaves nothing; CHECK sees a shaper gone; bad values are refused.
//!
//! Rates here are a few hundred Mbit/s, far below what two busy cores
//! move over a veth, so the bounds hold on a loaded machine: the upper
//! one is the point (held to the rate), the lower one only shows traffic
//! still flows. Precise figures are the benchmark's (benches/shaping.rs).

mod support;

use serde_json::{Value, json};
use support::Netns;
use support::green::{Flow, Green, Iperf, SWITCH_IP, ingress_filters, links, measure, qdiscs};
use support::{cni_error as error, cni_ok as ok};

const SECS: f64 = 1.5;

fn green(tag: &str) -> Green {
    Green::new(tag, support::surveyor())
}

/// Goodput as a share of `rate`, asserting it is held to it.
fn held_to(pod: &Netns, flow: Flow, rate: f64) -> f64 {
    let got = measure(pod, 5201, flow, SECS);
    let share = got / rate;
    assert!(
        (0.5..=1.05).contains(&share),
        "{flow:?}: {:.1} Mbit/s for a rate of {:.1} Mbit/s ({share:.3})",
        got / 1e6,
        rate / 1e6
    );
    share
}

fn bandwidth(ingress: u64, egress: u64) -> Value {
    let burst = |rate: u64| {
        if rate == 0 {
            0
        } else {
            (rate / 500).max(1 << 19)
        }
    };
    json!({"bandwidth": {"ingressRate": ingress, "ingressBurst": burst(ingress),
        "egressRate": egress, "egressBurst": burst(egress)}})
}

fn cache_files(g: &Green) -> Vec<String> {
    let mut files: Vec<String> = std::fs::read_dir(g.dir.path().join("cache"))
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.ends_with(".json"))
                .collect()
        })
        .unwrap_or_default();
    files.sort();
    files
}

/// Only loopback is left in the pod, and no qdisc of ours anywhere in it.
fn nothing_left(pod: &Netns) {
    assert_eq!(links(pod), ["lo"], "links left in the pod");
    let qdiscs = qdiscs(pod);
    let ours: Vec<&Value> = qdiscs
        .as_array()
        .into_iter()
        .flatten()
        .filter(|q| q["kind"] == "tbf" || q["kind"] == "ingress")
        .collect();
    assert!(ours.is_empty(), "qdiscs left: {ours:?}");
}

#[test]
fn the_bandwidth_capability_holds_each_direction_to_its_rate_and_del_leaves_nothing() {
    let g = green("shape-rc");
    let pod = Netns::new("shape-rc-pod");
    let _server = Iperf::serve(&g.switch, SWITCH_IP, 5201);
    // containerd's spelling: Go field names.
    let runtime = json!({"bandwidth": {"IngressRate": 100_000_000, "IngressBurst": 1_000_000,
        "EgressRate": 200_000_000, "EgressBurst": 1_000_000}});
    let result = ok(&g.cni("ADD", "c1", Some(&pod), &g.conf(2, runtime.clone())));
    assert_eq!(result["interfaces"][0]["name"], "net1");
    assert!(
        links(&pod).contains(&"ifb-net1".to_string()),
        "{:?}",
        links(&pod)
    );
    assert!(
        ingress_filters(&pod, "net1").contains("mirred"),
        "no redirect"
    );
    let egress = held_to(&pod, Flow::Egress, 200e6);
    let ingress = held_to(&pod, Flow::Ingress, 100e6);
    eprintln!("egress {egress:.3} ingress {ingress:.3} of their rates");

    // The record the agent reads, and the cache entry DEL reads.
    let records: Vec<_> = std::fs::read_dir(g.state().join("attachments"))
        .unwrap()
        .flatten()
        .collect();
    assert_eq!(records.len(), 1);
    let record: Value = serde_json::from_slice(&std::fs::read(records[0].path()).unwrap()).unwrap();
    assert_eq!(record["claimed"], false);
    assert_eq!(record["shaped"]["egress"]["rate"], 200_000_000);
    assert_eq!(record["shaped"]["ingress"]["source"], "runtimeConfig");

    let mut check = g.conf(2, runtime.clone());
    check["prevResult"] = result.clone();
    ok(&g.cni("CHECK", "c1", Some(&pod), &check));
    ok(&g.cni("DEL", "c1", Some(&pod), &g.conf(2, runtime.clone())));
    nothing_left(&pod);
    assert!(cache_files(&g).is_empty(), "{:?}", cache_files(&g));
    assert!(
        std::fs::read_dir(g.state().join("attachments"))
            .unwrap()
            .next()
            .is_none()
    );
    // A second DEL finds nothing and is fine.
    ok(&g.cni("DEL", "c1", Some(&pod), &g.conf(2, runtime)));

    // Egress only: no ifb, only the interface's tbf.
    ok(&g.cni(
        "ADD",
        "c2",
        Some(&pod),
        &g.conf(2, bandwidth(0, 150_000_000)),
    ));
    assert_eq!(links(&pod), ["lo", "net1"]);
    held_to(&pod, Flow::Egress, 150e6);
    ok(&g.cni("DEL", "c2", Some(&pod), &g.conf(2, Value::Null)));
    nothing_left(&pod);
}

#[test]
fn a_claim_holds_the_pod_to_its_share_and_the_lower_rate_wins() {
    let g = green("shape-dra");
    let pod = Netns::new("shape-dra-pod");
    let _server = Iperf::serve(&g.switch, SWITCH_IP, 5201);
    let claim = |bandwidth: u64, directions: Value| {
        let mut device = json!({"request": "net", "pool": "node1", "device": "green",
            "network": "green", "interface": "sv-a", "bandwidth": bandwidth});
        if !directions.is_null() {
            device["directions"] = directions;
        }
        json!({"claim-1": {"namespace": "web", "name": "db-green", "pods": ["pod-1"], "devices": [device]}})
    };
    g.claims(claim(150_000_000, Value::Null));
    let mut conf = g.conf(
        2,
        json!({"bandwidth": {"egressRate": 80_000_000, "egressBurst": 800_000}}),
    );
    conf["deviceID"] = "sv-a".into();
    ok(&g.cni("ADD", "c1", Some(&pod), &conf));
    // Egress: the attachment's 80M is lower than the claim's 150M.
    held_to(&pod, Flow::Egress, 80e6);
    // Ingress: only the claim speaks.
    held_to(&pod, Flow::Ingress, 150e6);
    let record: Value =
        serde_json::from_slice(&std::fs::read(g.state().join("attachments/c1:net1.json")).unwrap())
            .unwrap();
    assert_eq!(record["claimed"], true);
    assert_eq!(
        record["shaped"],
        json!({"egress": {"rate": 80_000_000, "burst": 800_000, "source": "runtimeConfig"},
            "ingress": {"rate": 150_000_000, "burst": 524_288, "source": "claim"}})
    );
    ok(&g.cni("DEL", "c1", Some(&pod), &conf));
    nothing_left(&pod);

    // A claim held to egress only: ingress is not shaped, no ifb.
    g.claims(claim(120_000_000, json!(["egress"])));
    let mut plain = g.conf(2, Value::Null);
    plain["deviceID"] = "sv-a".into();
    ok(&g.cni("ADD", "c2", Some(&pod), &plain));
    assert_eq!(links(&pod), ["lo", "net1"]);
    held_to(&pod, Flow::Egress, 120e6);
    ok(&g.cni("DEL", "c2", Some(&pod), &plain));

    // No prepared claim names the pod: try again, naming what to check.
    g.claims(json!({}));
    let e = error(&g.cni("ADD", "c3", Some(&pod), &plain));
    assert_eq!(e["code"], 11, "{e}");
    let msg = e["msg"].as_str().unwrap();
    assert!(
        msg.contains("pod-1") && msg.contains("green") && msg.contains("node1"),
        "{e}"
    );
    assert!(e["details"].as_str().unwrap().contains("--dra"), "{e}");
    nothing_left(&pod);
}

#[test]
fn del_takes_the_ifb_away_when_the_interface_or_the_record_is_gone() {
    let g = green("shape-gone");
    let pod = Netns::new("shape-gone-pod");
    let conf = g.conf(2, bandwidth(100_000_000, 100_000_000));
    // The interface deleted under the plugin (the ifb stays behind it).
    ok(&g.cni("ADD", "c1", Some(&pod), &conf));
    pod.ip(&["link", "del", "net1"]);
    assert_eq!(links(&pod), ["lo", "ifb-net1"]);
    ok(&g.cni("DEL", "c1", Some(&pod), &conf));
    nothing_left(&pod);
    // The cache entry lost: the ifb is found by its name.
    ok(&g.cni("ADD", "c2", Some(&pod), &conf));
    for f in cache_files(&g) {
        std::fs::remove_file(g.dir.path().join("cache").join(f)).unwrap();
    }
    ok(&g.cni("DEL", "c2", Some(&pod), &conf));
    nothing_left(&pod);
    // The namespace gone: nothing to take away, and DEL succeeds.
    let doomed = Netns::new("shape-gone-doomed");
    ok(&g.cni("ADD", "c3", Some(&doomed), &conf));
    let path = format!("/run/netns/{}", doomed.name);
    drop(doomed);
    let mut cmd = g.command("DEL", "c3", "net1", None, "pod-1");
    cmd.env("CNI_NETNS", &path);
    ok(&support::run_with_stdin(
        &mut cmd,
        conf.to_string().as_bytes(),
    ));
    assert!(cache_files(&g).is_empty(), "{:?}", cache_files(&g));
    // No CNI_NETNS at all (the spec allows it on DEL).
    ok(&g.cni("ADD", "c4", Some(&pod), &conf));
    let mut cmd = g.command("DEL", "c4", "net1", None, "pod-1");
    ok(&support::run_with_stdin(
        &mut cmd,
        conf.to_string().as_bytes(),
    ));
}

#[test]
fn check_reports_a_shaper_gone_or_changed() {
    let g = green("shape-check");
    let pod = Netns::new("shape-check-pod");
    let mut conf = g.conf(2, bandwidth(100_000_000, 200_000_000));
    let result = ok(&g.cni("ADD", "c1", Some(&pod), &conf));
    conf["prevResult"] = result;
    ok(&g.cni("CHECK", "c1", Some(&pod), &conf));
    let tc = |args: &[&str]| {
        let out = pod.command("tc").args(args).output().unwrap();
        assert!(
            out.status.success(),
            "tc {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    tc(&["qdisc", "del", "dev", "net1", "root"]);
    let e = error(&g.cni("CHECK", "c1", Some(&pod), &conf));
    assert_eq!(e["code"], 106, "{e}");
    let msg = e["msg"].as_str().unwrap();
    assert!(
        msg.contains("egress shaping") && msg.contains("net1 has no tbf"),
        "{msg}"
    );
    assert!(!msg.contains("ingress"), "{msg}");
    tc(&[
        "qdisc", "replace", "dev", "ifb-net1", "root", "tbf", "rate", "1gbit", "burst", "100000",
        "latency", "25ms",
    ]);
    let e = error(&g.cni("CHECK", "c1", Some(&pod), &conf));
    let msg = e["msg"].as_str().unwrap();
    assert!(
        msg.contains("ingress shaping: ifb-net1's tbf is at 125000000 bytes/s"),
        "{msg}"
    );
    tc(&["filter", "del", "dev", "net1", "ingress"]);
    let e = error(&g.cni("CHECK", "c1", Some(&pod), &conf));
    assert!(
        e["msg"]
            .as_str()
            .unwrap()
            .contains("not redirected to ifb-net1"),
        "{e}"
    );
    ok(&g.cni("DEL", "c1", Some(&pod), &conf));
    nothing_left(&pod);
}

#[test]
fn bad_values_get_code_7_naming_the_field_and_nothing_is_made() {
    let g = green("shape-bad");
    let pod = Netns::new("shape-bad-pod");
    let cases = [
        (
            json!({"bandwidth": {"egressRate": -1, "egressBurst": 100_000}}),
            "egressRate must not be negative",
        ),
        (
            json!({"bandwidth": {"egressRate": 1_000_000}}),
            "egressRate is set without runtimeConfig.bandwidth.egressBurst",
        ),
        (
            json!({"bandwidth": {"ingressRate": 0, "ingressBurst": 1_000_000}}),
            "ingressBurst is set without",
        ),
        (
            json!({"bandwidth": {"ingressRate": 9_300_000_000_000_000_000u64, "ingressBurst": 1_000_000}}),
            "ingressRate 9300000000000000000 is over 2^63",
        ),
        (
            json!({"bandwidth": {"ingressRate": 1.5e6, "ingressBurst": 100.5}}),
            "ingressBurst must be a whole number of bits",
        ),
        (
            json!({"bandwidth": {"egressRate": 1_000_000, "egressBurst": 8000}}),
            "egressBurst is 8000 bits, less than one frame",
        ),
        (
            json!({"bandwidth": "fast"}),
            "runtimeConfig.bandwidth must be an object",
        ),
    ];
    for (runtime, says) in cases {
        let e = error(&g.cni("ADD", "c1", Some(&pod), &g.conf(2, runtime.clone())));
        assert_eq!(e["code"], 7, "{runtime}: {e}");
        let msg = e["msg"].as_str().unwrap();
        assert!(
            msg.contains(says) && msg.contains("network \"green\" on node node1"),
            "{runtime}: {msg}"
        );
        assert_eq!(links(&pod), ["lo"], "{runtime}");
        assert!(cache_files(&g).is_empty(), "{runtime}");
    }
}

#[test]
fn a_shaper_that_cannot_be_set_up_undoes_the_attachment() {
    let g = green("shape-undo");
    let pod = Netns::new("shape-undo-pod");
    // Something not ours holds the ifb's name.
    pod.ip(&[
        "link", "add", "ifb-net1", "type", "veth", "peer", "name", "other",
    ]);
    let e = error(&g.cni(
        "ADD",
        "c1",
        Some(&pod),
        &g.conf(2, bandwidth(100_000_000, 0)),
    ));
    assert_eq!(e["code"], 106, "{e}");
    let msg = e["msg"].as_str().unwrap();
    assert!(
        msg.contains("cannot shape net1") && msg.contains("ifb-net1 is already a link"),
        "{msg}"
    );
    let mut left = links(&pod);
    left.sort();
    assert_eq!(left, ["ifb-net1", "lo", "other"], "net1 must be undone");
    assert!(cache_files(&g).is_empty());
}
