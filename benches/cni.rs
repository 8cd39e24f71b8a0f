//! CNI benchmark (root; `cargo bench --bench cni`): one ADD+DEL cycle
//! through `surveyor` (snapshot read, netlink check, cache entry, exec of
//! macvlan) against the same cycle calling Debian's macvlan directly,
//! interleaved in the same run. Static IPAM, so no lease store is timed.

#[path = "../tests/support/mod.rs"]
mod support;

use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::json;
use support::{Netns, cable, median, ms, percentile, surveyor};

const CYCLES: usize = 300;
const PLUGINS: &str = "/usr/lib/cni";

fn main() {
    support::require_root();
    let node = Netns::new("bench-cni");
    let peer = Netns::new("bench-cni-p");
    let pod = Netns::new("bench-cni-pod");
    cable(&node, "sv-a", &peer, "p0");
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    std::fs::create_dir(&state).unwrap();
    let link: serde_json::Value =
        serde_json::from_slice(&node.ip(&["-j", "link", "show", "dev", "sv-a"]).stdout).unwrap();
    let snapshot = json!({"node": "node1", "generation": 1, "networks": {"green": {
        "device": "sv-a", "index": link[0]["ifindex"], "mac": link[0]["address"], "candidates": ["sv-a"]}}});
    std::fs::write(state.join("networks.json"), snapshot.to_string()).unwrap();
    let ipam = json!({"type": "static", "addresses": [{"address": "10.30.0.2/24"}]});
    let via = json!({"cniVersion": "1.0.0", "name": "green", "type": "surveyor", "network": "green", "mode": "bridge",
        "ipam": ipam, "stateDir": state, "cacheDir": dir.path().join("cache")})
    .to_string();
    let direct = json!({"cniVersion": "1.0.0", "name": "green", "type": "macvlan", "master": "sv-a", "mode": "bridge", "ipam": ipam})
    .to_string();
    let netns = format!("/run/netns/{}", pod.name);
    let (with, without) = node.block_on(move || async move {
        let exec = |binary: &str, command: &str, conf: &str| {
            let mut cmd = Command::new(binary);
            cmd.env("CNI_COMMAND", command)
                .env("CNI_CONTAINERID", "bench")
                .env("CNI_NETNS", &netns)
                .env("CNI_IFNAME", "net1")
                .env("CNI_PATH", PLUGINS);
            let out = support::run_with_stdin(&mut cmd, conf.as_bytes());
            assert!(
                out.status.success(),
                "{binary} {command}: {}",
                String::from_utf8_lossy(&out.stdout)
            );
        };
        let cycle = |binary: &str, conf: &str| {
            let t = Instant::now();
            exec(binary, "ADD", conf);
            exec(binary, "DEL", conf);
            t.elapsed()
        };
        let macvlan = format!("{PLUGINS}/macvlan");
        // Warm the page cache for both binaries.
        cycle(surveyor(), &via);
        cycle(&macvlan, &direct);
        let (mut with, mut without) = (Vec::new(), Vec::new());
        for _ in 0..CYCLES {
            with.push(cycle(surveyor(), &via));
            without.push(cycle(&macvlan, &direct));
        }
        (with, without)
    });
    let (w, d): (Duration, Duration) = (median(&with), median(&without));
    println!(
        "ADD+DEL cycle, static IPAM, {CYCLES} interleaved cycles each (target ratio <= 1.10):"
    );
    println!(
        "  macvlan directly (baseline)   median {}  p99 {}",
        ms(d),
        ms(percentile(&without, 99.0))
    );
    println!(
        "  via surveyor                  median {}  p99 {}",
        ms(w),
        ms(percentile(&with, 99.0))
    );
    println!(
        "  ratio {:.3}  (surveyor's own cost per cycle: {})",
        w.as_secs_f64() / d.as_secs_f64(),
        ms(w.saturating_sub(d))
    );
}
