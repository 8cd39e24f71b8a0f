//! API load of one agent (root; `cargo bench --bench kube`), against the
//! fake API server of tests/support/fake_api.rs, counting every request.
//!
//! 1. Steady state: an agent whose interface hears an LLDP switch every
//!    second, with nothing changing, for SURVEYOR_BENCH_STEADY_SECS
//!    (default 600 = 10 minutes): writes and reads after start-up.
//! 2. A 2000-link burst (1000 veth pairs appearing at once, all surveyed):
//!    writes until the agent settles.

#[path = "../tests/support/mod.rs"]
mod support;

use std::time::{Duration, Instant};

use support::fake_api::{FakeApi, map, with_agent_in};
use support::{Netns, switch, veth_pairs};

fn main() {
    support::require_root();
    steady();
    burst();
}

fn steady() {
    let secs: u64 = std::env::var("SURVEYOR_BENCH_STEADY_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(600);
    let node = Netns::new("bench-kube-steady");
    let (_sw, _lldpd) = switch(&node, "sv-a", "tor-green-01", "Ethernet1/7", &[]);
    let api = FakeApi::with(vec![map("green", "sv-*")], serde_json::json!({}));
    with_agent_in(&node, api, None, true, move |run| async move {
        run.until(15, "green resolved and published", |r| {
            r.snapshot()["networks"]["green"]["device"] == "sv-a"
                && r.api.writes_to("/status").len() == 1
        })
        .await;
        // Let the neighbor settle into the published status first.
        run.until(15, "neighbor published", |r| {
            r.api
                .writes_to("/status")
                .last()
                .is_some_and(|w| w.body["status"]["summary"]["neighbors"] == 1)
        })
        .await;
        tokio::time::sleep(Duration::from_secs(2)).await;
        let (writes0, reqs0) = (
            run.api.writes().len(),
            run.api.requests.lock().unwrap().len(),
        );
        let started = Instant::now();
        tokio::time::sleep(Duration::from_secs(secs)).await;
        let writes = run.api.writes().len() - writes0;
        let reads = run.api.requests.lock().unwrap().len() - reqs0 - writes;
        println!(
            "steady state over {:.0} s (LLDP refresh every 1 s, nothing changing):",
            started.elapsed().as_secs_f64()
        );
        println!("  API writes {writes} (target 0), other requests {reads} (watches stay open)");
    });
}

fn burst() {
    let node = Netns::new("bench-kube-burst");
    let api = FakeApi::with(vec![map("green", "sv-*")], serde_json::json!({}));
    let ns = node.name.clone();
    with_agent_in(&node, api, None, false, move |run| async move {
        run.until(10, "first publish", |r| {
            r.api.writes_to("/status").len() == 1
        })
        .await;
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let before = run.api.writes().len();
        let t = Instant::now();
        veth_pairs(&ns, "sva", "svb", 1000);
        // Settled: every link surveyed and nothing written for 3 s.
        run.until(60, "all 2000 links surveyed", |r| {
            r.survey()["summary"]["interfaces"] == 2000
        })
        .await;
        let mut last = run.api.writes().len();
        loop {
            tokio::time::sleep(Duration::from_secs(3)).await;
            let now = run.api.writes().len();
            if now == last {
                break;
            }
            last = now;
        }
        let burst: Vec<String> = run.api.writes()[before..]
            .iter()
            .map(|w| w.path.rsplit('/').next().unwrap().to_string())
            .collect();
        let statuses = burst.iter().filter(|p| *p == "status").count();
        let final_count =
            run.api.writes_to("/status").last().unwrap().body["status"]["summary"]["interfaces"]
                .clone();
        println!(
            "\n2000-link burst (1000 veth pairs created in {:.2} s, all surveyed):",
            t.elapsed().as_secs_f64()
        );
        println!(
            "  API writes {} (target <= 2): {statuses} status, {} other; last status shows {final_count} interfaces",
            burst.len(),
            burst.len() - statuses
        );
    });
}
