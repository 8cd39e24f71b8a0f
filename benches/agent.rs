//! Agent benchmarks (root; `cargo bench --bench agent`).
//!
//! 1. Carrier event -> networks.json rewritten, p50/p99 over 200 toggles of
//!    a resolved device that has a second candidate, against the netlink
//!    round trip that causes the event, measured in the same run.
//! 2. Writes caused by 1000 flaps of a virtual link outside the survey.
//! 3. Address event -> networks.json rewritten: an address in a map's CIDR
//!    added to and removed from a surveyed link, against the netlink round
//!    trip that causes it.
//! 4. RSS and idle CPU of an agent surveying 1000 up links (LLDP listening
//!    on each), and its restart: kill -9, then start to networks.json
//!    written (deleted in between so that it must be), against `discover`
//!    of the same links in the same run.
//! 5. Writes of neighbors.json over SURVEYOR_BENCH_STEADY_SECS (default
//!    600) of an LLDP switch refreshing every second, nothing changing.

#[path = "../tests/support/mod.rs"]
mod support;

use std::path::Path;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use futures::TryStreamExt;
use notify::{EventKind, RecursiveMode, Watcher};
use rtnetlink::LinkUnspec;
use support::{AgentProcess, Netns, cable, ms, percentile, veth_pairs};

const TOGGLES: usize = 200;
const ADDRESS_TOGGLES: usize = 200;
const FLAPS: usize = 1000;
const LINKS: usize = 1000;
const RESTARTS: usize = 10;

fn main() {
    support::require_root();
    events_and_quiet();
    address_events();
    footprint();
    neighbor_refreshes();
}

/// Every rename into the state dir, as (file name, when).
fn watch_state(
    dir: &Path,
) -> (
    notify::RecommendedWatcher,
    mpsc::Receiver<(String, Instant)>,
) {
    let (tx, rx) = mpsc::channel();
    let mut watcher = notify::recommended_watcher(move |e: notify::Result<notify::Event>| {
        let Ok(e) = e else { return };
        if matches!(
            e.kind,
            EventKind::Modify(notify::event::ModifyKind::Name(_)) | EventKind::Create(_)
        ) {
            for p in e.paths {
                let name = p
                    .file_name()
                    .and_then(|n| n.to_str())
                    .unwrap_or("")
                    .to_string();
                if !name.starts_with('.') {
                    let _ = tx.send((name, Instant::now()));
                }
            }
        }
    })
    .unwrap();
    watcher.watch(dir, RecursiveMode::NonRecursive).unwrap();
    (watcher, rx)
}

fn events_and_quiet() {
    let node = Netns::new("bench-agent");
    let peer = Netns::new("bench-agent-p");
    // Shift the peer's indices: a veth whose peer has its own ifindex (in
    // another namespace) gets non-urgent, up-to-1-s-delayed carrier events
    // from the kernel's linkwatch, which is not what is measured here.
    peer.ip(&[
        "link", "add", "filler0", "type", "veth", "peer", "name", "filler1",
    ]);
    cable(&node, "sv-a", &peer, "p-a");
    cable(&node, "sv-b", &peer, "p-b");
    cable(&node, "zz-x", &peer, "p-x");
    let map = "apiVersion: surveyor.dev/v1alpha1\nkind: NetworkMap\nmetadata: {name: green}\nspec: {match: {names: ['sv-*']}}\n";
    let agent = AgentProcess::start(
        &node,
        &[("green.yaml", map)],
        &["--include", "sv-*", "--no-lldp"],
    );
    agent.wait_for(10, "green on sv-a", |s| {
        s["networks"]["green"]["device"] == "sv-a"
    });
    let (_watcher, renames) = watch_state(&agent.state);

    let (latencies, acks, quiet_writes) = peer.block_on(move || async move {
        let (conn, handle, _) = rtnetlink::new_connection().unwrap();
        tokio::spawn(conn);
        let index = |name: &'static str| {
            let handle = handle.clone();
            async move {
                handle
                    .link()
                    .get()
                    .match_name(name)
                    .execute()
                    .try_next()
                    .await
                    .unwrap()
                    .unwrap()
                    .header
                    .index
            }
        };
        let (pa, px) = (index("p-a").await, index("p-x").await);
        let set = |i: u32, up: bool| {
            let m = LinkUnspec::new_with_index(i);
            if up { m.up().build() } else { m.down().build() }
        };
        let mut latencies = Vec::new();
        let mut acks = Vec::new();
        for n in 0..TOGGLES {
            // Down: green moves to sv-b; up: back to sv-a.
            let up = n % 2 == 1;
            while renames.try_recv().is_ok() {}
            let t = Instant::now();
            handle.link().set(set(pa, up)).execute().await.unwrap();
            acks.push(t.elapsed());
            loop {
                let (name, at) = renames
                    .recv_timeout(Duration::from_secs(2))
                    .expect("networks.json rewritten within 2 s");
                if name == "networks.json" {
                    latencies.push(at - t);
                    break;
                }
            }
            // Let the operstate follow-up settle before the next toggle.
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        while renames.try_recv().is_ok() {}
        for n in 0..FLAPS {
            handle
                .link()
                .set(set(px, n % 2 == 1))
                .execute()
                .await
                .unwrap();
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        let quiet: Vec<String> = renames.try_iter().map(|(n, _)| n).collect();
        (latencies, acks, quiet)
    });
    println!("carrier event -> networks.json rewritten, {TOGGLES} toggles (target p99 < 20 ms):");
    println!(
        "  netlink set + ack (baseline)        p50 {}  p99 {}",
        ms(percentile(&acks, 50.0)),
        ms(percentile(&acks, 99.0))
    );
    println!(
        "  set -> networks.json renamed        p50 {}  p99 {}  max {}",
        ms(percentile(&latencies, 50.0)),
        ms(percentile(&latencies, 99.0)),
        ms(percentile(&latencies, 100.0))
    );
    println!(
        "\nfiles written during {FLAPS} flaps of an unsurveyed veth (target 0): {} {quiet_writes:?}",
        quiet_writes.len()
    );
    assert!(agent.device("green").is_some());
}

fn address_events() {
    let node = Netns::new("bench-agent-addr");
    let peer = Netns::new("bench-agent-addr-p");
    cable(&node, "sv-a", &peer, "p-a");
    let map = "apiVersion: surveyor.dev/v1alpha1\nkind: NetworkMap\nmetadata: {name: storage}\nspec: {match: {cidrs: ['192.0.2.0/24']}}\n";
    let agent = AgentProcess::start(
        &node,
        &[("storage.yaml", map)],
        &["--include", "sv-*", "--no-lldp"],
    );
    agent.wait_for(10, "first snapshot", |s| {
        s["networks"]["storage"].is_object()
    });
    let (_watcher, renames) = watch_state(&agent.state);
    let state = agent.state.clone();
    let (latencies, acks) = node.block_on(move || async move {
        let (conn, handle, _) = rtnetlink::new_connection().unwrap();
        tokio::spawn(conn);
        let index = handle
            .link()
            .get()
            .match_name("sv-a")
            .execute()
            .try_next()
            .await
            .unwrap()
            .unwrap()
            .header
            .index;
        let ip = std::net::IpAddr::from([192, 0, 2, 10]);
        let mut latencies = Vec::new();
        let mut acks = Vec::new();
        for n in 0..ADDRESS_TOGGLES {
            while renames.try_recv().is_ok() {}
            let t = Instant::now();
            if n % 2 == 0 {
                handle.address().add(index, ip, 24).execute().await.unwrap();
            } else {
                let mut found = handle
                    .address()
                    .get()
                    .set_link_index_filter(index)
                    .execute();
                while let Some(msg) = found.try_next().await.unwrap() {
                    if msg.header.family == rtnetlink::packet_route::AddressFamily::Inet {
                        handle.address().del(msg).execute().await.unwrap();
                    }
                }
            }
            acks.push(t.elapsed());
            // A rename is counted only once the file says what this change
            // should make it say: the watcher thread may deliver an earlier
            // rename late.
            let want = if n % 2 == 0 { Some("sv-a") } else { None };
            loop {
                let (name, at) = renames
                    .recv_timeout(Duration::from_secs(2))
                    .unwrap_or_else(|e| panic!("change {n}: networks.json not rewritten: {e}"));
                let device = || -> Option<String> {
                    let snap: serde_json::Value =
                        serde_json::from_slice(&std::fs::read(state.join("networks.json")).ok()?)
                            .ok()?;
                    snap["networks"]["storage"]["device"]
                        .as_str()
                        .map(str::to_string)
                };
                if name == "networks.json" && device().as_deref() == want {
                    latencies.push(at - t);
                    break;
                }
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        (latencies, acks)
    });
    println!("\naddress added/removed -> networks.json rewritten, {ADDRESS_TOGGLES} changes:");
    println!(
        "  netlink add (or look up + delete) + ack (baseline) p50 {}  p99 {}",
        ms(percentile(&acks, 50.0)),
        ms(percentile(&acks, 99.0))
    );
    println!(
        "  change -> networks.json renamed                    p50 {}  p99 {}  max {}",
        ms(percentile(&latencies, 50.0)),
        ms(percentile(&latencies, 99.0)),
        ms(percentile(&latencies, 100.0))
    );
}

fn footprint() {
    let node = Netns::new("bench-agent-rss");
    veth_pairs(&node.name, "sv", "sw", LINKS);
    let up: String = (0..LINKS)
        .map(|n| format!("link set sv{n} up\nlink set sw{n} up\n"))
        .collect();
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), up).unwrap();
    node.ip(&["-batch", file.path().to_str().unwrap()]);
    let map = "apiVersion: surveyor.dev/v1alpha1\nkind: NetworkMap\nmetadata: {name: green}\nspec: {match: {names: ['sv1*']}}\n";
    let mut agent = AgentProcess::start(&node, &[("green.yaml", map)], &["--include", "sv*"]);
    agent.wait_for(20, "first snapshot", |s| {
        s["networks"]["green"]["device"].is_string()
    });
    std::thread::sleep(Duration::from_secs(2));
    let status = |key: &str| -> f64 {
        let s = std::fs::read_to_string(format!("/proc/{}/status", agent.pid())).unwrap();
        let line = s.lines().find(|l| l.starts_with(key)).unwrap();
        line.split_whitespace()
            .nth(1)
            .unwrap()
            .parse::<f64>()
            .unwrap()
            / 1024.0
    };
    let cpu = || -> f64 {
        let s = std::fs::read_to_string(format!("/proc/{}/stat", agent.pid())).unwrap();
        let fields: Vec<&str> = s.rsplit(')').next().unwrap().split_whitespace().collect();
        let ticks: f64 = fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap();
        ticks / 100.0
    };
    let before = cpu();
    let idle = Duration::from_secs(10);
    std::thread::sleep(idle);
    let used = cpu() - before;
    let survey: serde_json::Value =
        serde_json::from_slice(&std::fs::read(agent.state.join("survey.json")).unwrap()).unwrap();
    println!(
        "\nagent surveying {} up links, LLDP listening on each (target RSS < 20 MiB):",
        survey["summary"]["interfaces"]
    );
    println!(
        "  RSS {:.1} MiB, peak {:.1} MiB",
        status("VmRSS:"),
        status("VmHWM:")
    );
    println!(
        "  CPU over {} s idle: {:.2} s ({:.3}% of a core)",
        idle.as_secs(),
        used,
        100.0 * used / idle.as_secs_f64()
    );

    // Restarts: time from spawn to networks.json in place again.
    let mut restarts = Vec::new();
    let mut discovers = Vec::new();
    for _ in 0..RESTARTS {
        agent.signal(nix::sys::signal::Signal::SIGKILL);
        std::fs::remove_file(agent.state.join("networks.json")).unwrap();
        let (_watcher, renames) = watch_state(&agent.state);
        let t = Instant::now();
        agent.restart();
        loop {
            let (name, at) = renames
                .recv_timeout(Duration::from_secs(20))
                .expect("networks.json written after the restart");
            if name == "networks.json" {
                restarts.push(at - t);
                break;
            }
        }
        discovers.push(
            support::measure(&node.name, &["discover", "--include", "sv*", "-o", "json"]).wall,
        );
    }
    let (r, d) = (support::median(&restarts), support::median(&discovers));
    println!(
        "\nrestart (kill -9) with {LINKS} up links, LLDP on each -> networks.json written, {RESTARTS} restarts (target < 200 ms):"
    );
    println!(
        "  `discover -o json` of the same links (baseline) median {}",
        ms(d)
    );
    println!(
        "  agent start -> networks.json           median {}  max {}  ratio {:.2}",
        ms(r),
        ms(percentile(&restarts, 100.0)),
        r.as_secs_f64() / d.as_secs_f64()
    );
}

fn neighbor_refreshes() {
    let secs: u64 = std::env::var("SURVEYOR_BENCH_STEADY_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(600);
    let node = Netns::new("bench-agent-nb");
    let (_sw, _lldpd) = support::switch(&node, "sv-a", "tor-green-01", "Ethernet1/7", &[]);
    let map = support::lldp_map("green", "tor-green-*");
    let agent = AgentProcess::start(&node, &[("green.yaml", &map)], &["--include", "sv-*"]);
    agent.wait_for(10, "green on sv-a", |s| {
        s["networks"]["green"]["device"] == "sv-a"
    });
    std::thread::sleep(Duration::from_secs(2));
    let (_watcher, renames) = watch_state(&agent.state);
    std::thread::sleep(Duration::from_secs(secs));
    let written: Vec<String> = renames.try_iter().map(|(n, _)| n).collect();
    let neighbors = written.iter().filter(|n| *n == "neighbors.json").count();
    println!(
        "\n{secs} s of an LLDP neighbor refreshing every second, nothing changing (target 0):"
    );
    println!(
        "  neighbors.json writes {neighbors}, state files written in all {} {written:?}",
        written.len()
    );
}
