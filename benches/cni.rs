//! CNI benchmark (root; `cargo bench --bench cni`).
//!
//! 1. One ADD+DEL cycle through `surveyor` (snapshot read, netlink check,
//!    cache entry, exec of macvlan) against the same cycle calling Debian's
//!    macvlan directly, interleaved in the same run, static IPAM (no lease
//!    store). Cycles are separated by random gaps: macvlan's own timing is
//!    quantised by kernel work it waits on, and a fixed rhythm can lock the
//!    two series into different phases.
//! 2. Surveyor's own cost, without macvlan's noise: the same cycle with
//!    `/bin/true` as the delegate, against `/bin/true` called directly.
//! 3. The exec of the binary alone (`CNI_COMMAND=VERSION`) against
//!    `/bin/true`, interleaved; and the host-target build's for comparison.
//!
//! What is measured is the binary hosts run: the static musl release build
//! (`cargo build --release --target x86_64-unknown-linux-musl`, which this
//! bench runs first).

#[path = "../tests/support/mod.rs"]
mod support;

use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::json;
use support::bench::{Gaps, interleave, line, release};
use support::{Netns, cable, median, ms, surveyor};

const CYCLES: usize = 400;
const PLUGINS: &str = "/usr/lib/cni";

fn main() {
    support::require_root();
    let plugin = release("x86_64-unknown-linux-musl");
    let host_build = surveyor().to_string();
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
    // A delegate directory holding /bin/true as "macvlan".
    let noop = dir.path().join("noop");
    std::fs::create_dir(&noop).unwrap();
    std::os::unix::fs::symlink("/bin/true", noop.join("macvlan")).unwrap();

    let ipam = json!({"type": "static", "addresses": [{"address": "10.30.0.2/24"}]});
    // Where the plugin reads and writes: the node's setting.
    let settings = dir.path().join("surveyor.json");
    std::fs::write(
        &settings,
        json!({"stateDir": state, "cacheDir": dir.path().join("cache")}).to_string(),
    )
    .unwrap();
    let via = json!({"cniVersion": "1.0.0", "name": "green", "type": "surveyor", "network": "green", "mode": "bridge",
        "ipam": ipam})
    .to_string();
    let direct = json!({"cniVersion": "1.0.0", "name": "green", "type": "macvlan", "master": "sv-a", "mode": "bridge", "ipam": ipam})
    .to_string();
    // Multus's DRA path: the allocation's device, and a record for the
    // claim's network data.
    let via_dra = json!({"cniVersion": "1.0.0", "name": "green", "type": "surveyor", "network": "green", "mode": "bridge",
        "deviceID": "sv-a", "ipam": ipam})
    .to_string();
    let netns = format!("/run/netns/{}", pod.name);
    let noop_path = noop.to_str().unwrap().to_string();
    let (real, own, dra, execs, host_execs) = node.block_on(move || async move {
        let surveyor = || plugin.as_str();
        let exec = |binary: &str, command: &str, conf: &str, path: &str| {
            let mut cmd = Command::new(binary);
            cmd.env("SURVEYOR_CNI_CONFIG", &settings)
                .env("CNI_COMMAND", command)
                .env("CNI_CONTAINERID", "bench")
                .env("CNI_NETNS", &netns)
                .env("CNI_IFNAME", "net1")
                .env("CNI_PATH", path)
                .env(
                    "CNI_ARGS",
                    "IgnoreUnknown=1;K8S_POD_NAMESPACE=web;K8S_POD_NAME=db;K8S_POD_UID=u1",
                );
            let out = support::run_with_stdin(&mut cmd, conf.as_bytes());
            assert!(
                out.status.success(),
                "{binary} {command}: {}",
                String::from_utf8_lossy(&out.stdout)
            );
        };
        let cycle = |binary: &str, conf: &str, path: &str| {
            let t = Instant::now();
            exec(binary, "ADD", conf, path);
            exec(binary, "DEL", conf, path);
            t.elapsed()
        };
        let macvlan = format!("{PLUGINS}/macvlan");
        let mut gap = Gaps::default();
        // Warm the page cache for every binary.
        cycle(surveyor(), &via, PLUGINS);
        cycle(&macvlan, &direct, PLUGINS);
        let run = |a: &dyn Fn() -> Duration, b: &dyn Fn() -> Duration, gap: &mut Gaps| {
            interleave(CYCLES, a, b, gap)
        };
        let real = run(
            &|| cycle(surveyor(), &via, PLUGINS),
            &|| cycle(&macvlan, &direct, PLUGINS),
            &mut gap,
        );
        let own = run(
            &|| cycle(surveyor(), &via, &noop_path),
            &|| cycle("/bin/true", &direct, PLUGINS),
            &mut gap,
        );
        let dra = run(
            &|| cycle(surveyor(), &via_dra, &noop_path),
            &|| cycle(surveyor(), &via, &noop_path),
            &mut gap,
        );
        let once = |binary: &str| {
            let t = Instant::now();
            exec(binary, "VERSION", "{\"cniVersion\":\"1.0.0\"}", PLUGINS);
            t.elapsed()
        };
        let execs = run(&|| once(surveyor()), &|| once("/bin/true"), &mut gap);
        let host_execs = run(&|| once(&host_build), &|| once("/bin/true"), &mut gap);
        (real, own, dra, execs, host_execs)
    });
    let (with, without) = real;
    println!(
        "ADD+DEL cycle, static IPAM, {CYCLES} interleaved cycles each (target ratio <= 1.07):"
    );
    line("macvlan directly (baseline)", &without);
    line("via surveyor", &with);
    let (w, d) = (median(&with), median(&without));
    println!(
        "  ratio of medians {:.3}",
        w.as_secs_f64() / d.as_secs_f64()
    );
    let (with, without) = own;
    println!(
        "\nsurveyor's own cost: the same cycle with /bin/true as the delegate (target <= 1.5 ms):"
    );
    line("/bin/true directly (baseline)", &without);
    line("via surveyor", &with);
    let cost = median(&with).saturating_sub(median(&without));
    println!(
        "  surveyor adds {} per ADD+DEL cycle: {:.1}% of the median macvlan cycle above",
        ms(cost),
        100.0 * cost.as_secs_f64() / d.as_secs_f64()
    );
    let (with, without) = dra;
    println!("\nthe DRA path (deviceID), /bin/true as the delegate:");
    line("without deviceID (baseline)", &without);
    line("with deviceID", &with);
    println!(
        "  the check and the attachment record add {} per ADD+DEL cycle",
        ms(median(&with).saturating_sub(median(&without)))
    );
    let (with, without) = execs;
    println!("\none exec (CNI_COMMAND=VERSION), {CYCLES} interleaved:");
    line("/bin/true (baseline)", &without);
    line("surveyor, static musl", &with);
    println!(
        "  ratio of medians {:.2}",
        median(&with).as_secs_f64() / median(&without).as_secs_f64()
    );
    let (with, without) = host_execs;
    line("/bin/true (baseline)", &without);
    line("surveyor, host glibc build", &with);
}
