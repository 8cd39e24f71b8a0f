//! Shaping benchmark (root; `cargo bench --bench shaping`): iperf3 TCP
//! between namespaces over Debian's macvlan on a veth "green", pods
//! attached by the static release plugin.
//!
//! 1. Goodput of a shaped pod against its rate, each direction, 100 Mbit/s
//!    to 5 Gbit/s (`runtimeConfig.bandwidth` with containerd's "no burst"
//!    value, so the default burst), next to an unshaped pod's in the same
//!    run. Target: 0.85-1.05 of the rate.
//! 2. Two pods holding 2G and 4G claims of green (the DRA path) sending
//!    flat out together, then with an unshaped pod beside them; and the
//!    unshaped pod alone. Target: each gets its share; the unshaped pod is
//!    not held.
//! 3. The cost of shaping per ADD+DEL cycle: shaped (both directions, and
//!    egress only) against unshaped attachments, interleaved with random
//!    gaps in the same run. Target: under 0.5 ms on top.
//!
//! Goodput counts TCP payload as the receiver saw it; tbf counts whole
//! frames, so a flow of 1448-byte segments in 1514-byte frames tops out
//! at 0.956 of the rate.

#[path = "../tests/support/mod.rs"]
mod support;

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::Netns;
use support::bench::{Gaps, interleave, line, release};
use support::green::{Flow, Green, Iperf, SWITCH_IP, goodput, measure, start_flow};

const RATES: [u64; 5] = [
    100_000_000,
    500_000_000,
    1_000_000_000,
    2_000_000_000,
    5_000_000_000,
];
const SECS: f64 = 4.0;
const REPEATS: usize = 3;
const CYCLES: usize = 1500;

fn main() {
    support::require_root();
    // `cargo bench --bench shaping -- cost` runs part 3 alone.
    let only_cost = std::env::args().skip(1).any(|a| a == "cost");
    let plugin = release("x86_64-unknown-linux-musl");
    let g = Green::new("bench-shape", &plugin);
    if !only_cost {
        let servers: Vec<Iperf> = (0..3)
            .map(|n| Iperf::serve(&g.switch, SWITCH_IP, 5201 + n))
            .collect();
        goodput_against_rate(&g);
        shares_of_claims(&g);
        drop(servers);
    }
    cost_per_cycle(&g);
}

fn attach(g: &Green, id: &str, pod: &Netns, uid: &str, conf: &Value) {
    let mut cmd = g.command("ADD", id, "net1", Some(&pod.name), uid);
    let out = support::run_with_stdin(&mut cmd, conf.to_string().as_bytes());
    assert!(
        out.status.success(),
        "ADD: {}",
        String::from_utf8_lossy(&out.stdout)
    );
}

fn detach(g: &Green, id: &str, pod: &Netns, uid: &str, conf: &Value) {
    let mut cmd = g.command("DEL", id, "net1", Some(&pod.name), uid);
    let out = support::run_with_stdin(&mut cmd, conf.to_string().as_bytes());
    assert!(
        out.status.success(),
        "DEL: {}",
        String::from_utf8_lossy(&out.stdout)
    );
}

fn median_of(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}

fn gbit(bps: f64) -> String {
    format!("{:.3} Gbit/s", bps / 1e9)
}

fn goodput_against_rate(g: &Green) {
    println!(
        "1. goodput of a shaped pod against its rate (TCP, {SECS} s, median of {REPEATS}; target 0.85-1.05)"
    );
    let unshaped = Netns::new("bench-shape-free");
    let conf = g.conf(9, Value::Null);
    attach(g, "free", &unshaped, "free", &conf);
    for flow in [Flow::Egress, Flow::Ingress] {
        let runs = (0..REPEATS)
            .map(|_| measure(&unshaped, 5201, flow, SECS))
            .collect();
        println!(
            "  {:<8} unshaped pod (baseline)     {}",
            format!("{flow:?}"),
            gbit(median_of(runs))
        );
    }
    detach(g, "free", &unshaped, "free", &conf);
    let pod = Netns::new("bench-shape-pod");
    let mut worst: f64 = 1.0;
    let mut best: f64 = 0.0;
    for rate in RATES {
        // What containerd sends for kubernetes.io/egress-bandwidth.
        let runtime = json!({"bandwidth": {"IngressRate": rate, "IngressBurst": u32::MAX,
            "EgressRate": rate, "EgressBurst": u32::MAX}});
        let conf = g.conf(2, runtime);
        attach(g, "shaped", &pod, "shaped", &conf);
        for flow in [Flow::Egress, Flow::Ingress] {
            let runs = (0..REPEATS)
                .map(|_| measure(&pod, 5201, flow, SECS))
                .collect();
            let got = median_of(runs);
            let ratio = got / rate as f64;
            worst = worst.min(ratio);
            best = best.max(ratio);
            println!(
                "  {:<8} rate {:<14} goodput {}  ratio {ratio:.3}",
                format!("{flow:?}"),
                gbit(rate as f64),
                gbit(got)
            );
        }
        detach(g, "shaped", &pod, "shaped", &conf);
    }
    println!("  ratios from {worst:.3} to {best:.3}");
}

fn shares_of_claims(g: &Green) {
    println!("\n2. two pods with claims of 2G and 4G of green, flat out together (TCP, {SECS} s)");
    let device = |pod: &str, bandwidth: u64| {
        json!({"namespace": "web", "name": format!("{pod}-green"), "pods": [pod],
            "devices": [{"request": "net", "pool": "node1", "device": "green", "network": "green",
                "interface": "sv-a", "bandwidth": bandwidth}]})
    };
    g.claims(json!({"uid-a": device("pod-a", 2_000_000_000), "uid-b": device("pod-b", 4_000_000_000u64)}));
    let pods: Vec<(Netns, &str, u8)> = [("pod-a", 2), ("pod-b", 3), ("pod-c", 4)]
        .into_iter()
        .map(|(uid, host)| (Netns::new(&format!("bench-{uid}")), uid, host))
        .collect();
    let confs: Vec<Value> = pods
        .iter()
        .map(|(pod, uid, host)| {
            let mut conf = g.conf(*host, Value::Null);
            if *uid != "pod-c" {
                conf["deviceID"] = "sv-a".into();
            }
            attach(g, uid, pod, uid, &conf);
            conf
        })
        .collect();
    let claims = [2e9, 4e9];
    for flow in [Flow::Egress, Flow::Ingress] {
        for with_c in [false, true] {
            let n = if with_c { 3 } else { 2 };
            let flows: Vec<_> = pods[..n]
                .iter()
                .enumerate()
                .map(|(i, (pod, _, _))| start_flow(pod, 5201 + i as u16, flow, SECS))
                .collect();
            let got: Vec<f64> = flows.into_iter().map(goodput).collect();
            let mut parts: Vec<String> = claims
                .iter()
                .zip(&got)
                .map(|(claim, got)| {
                    format!("{} of {} ({:.3})", gbit(*got), gbit(*claim), got / claim)
                })
                .collect();
            if with_c {
                parts.push(format!("unshaped {}", gbit(got[2])));
            }
            println!("  {:<8} {}", format!("{flow:?}"), parts.join("; "));
        }
        let alone = measure(&pods[2].0, 5203, flow, SECS);
        println!(
            "  {:<8} the unshaped pod alone: {}",
            format!("{flow:?}"),
            gbit(alone)
        );
    }
    for ((pod, uid, _), conf) in pods.iter().zip(&confs) {
        detach(g, uid, pod, uid, conf);
    }
}

fn cost_per_cycle(g: &Green) {
    println!(
        "\n3. ADD+DEL cycle, static IPAM, {CYCLES} interleaved cycles each (target: shaping adds < 0.5 ms)"
    );
    let pod = Netns::new("bench-shape-cost");
    let rate = 1_000_000_000u64;
    let both = g.conf(
        2,
        json!({"bandwidth": {"ingressRate": rate, "ingressBurst": 4_000_000,
        "egressRate": rate, "egressBurst": 4_000_000}}),
    );
    let egress = g.conf(
        2,
        json!({"bandwidth": {"egressRate": rate, "egressBurst": 4_000_000}}),
    );
    let plain = g.conf(2, Value::Null);
    // Each cycle's ADD and DEL are timed apart: ADD waits on nothing
    // quantised, so its difference is the sharper figure; DEL waits out
    // one RCU grace period either way.
    let phases = std::cell::RefCell::new(Vec::new());
    let cycle = |conf: &Value| {
        let t = Instant::now();
        attach(g, "cost", &pod, "cost", conf);
        let added = t.elapsed();
        detach(g, "cost", &pod, "cost", conf);
        let total = t.elapsed();
        phases.borrow_mut().push((added, total - added));
        total
    };
    // Warm the page cache and the kernel's modules.
    cycle(&both);
    cycle(&plain);
    let mut gaps = Gaps::default();
    for (label, conf) in [("both directions", &both), ("egress only", &egress)] {
        phases.borrow_mut().clear();
        let (shaped, unshaped) = interleave(CYCLES, &|| cycle(conf), &|| cycle(&plain), &mut gaps);
        // interleave alternates which goes first: split the phases back.
        let (mut with, mut without) = (Vec::new(), Vec::new());
        for (n, pair) in phases.borrow().chunks(2).enumerate() {
            let (a, b) = if n % 2 == 0 {
                (pair[0], pair[1])
            } else {
                (pair[1], pair[0])
            };
            with.push(a);
            without.push(b);
        }
        line("unshaped (baseline)", &unshaped);
        line(&format!("shaped, {label}"), &shaped);
        let add = |xs: &[(Duration, Duration)]| xs.iter().map(|p| p.0).collect::<Vec<_>>();
        let del = |xs: &[(Duration, Duration)]| xs.iter().map(|p| p.1).collect::<Vec<_>>();
        println!(
            "  shaping {label} adds {} per cycle: ADD {}, DEL {}",
            added(&shaped, &unshaped),
            added(&add(&with), &add(&without)),
            added(&del(&with), &del(&without)),
        );
    }
}

/// The difference of two series' medians, and their ratio.
fn added(with: &[Duration], without: &[Duration]) -> String {
    let (w, o) = (support::median(with), support::median(without));
    format!(
        "{:+.3} ms ({:.3} of the baseline)",
        (w.as_secs_f64() - o.as_secs_f64()) * 1e3,
        w.as_secs_f64() / o.as_secs_f64()
    )
}
