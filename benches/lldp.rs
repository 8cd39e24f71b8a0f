//! LLDP benchmarks (`cargo bench --bench lldp`; the idle-CPU part needs root).
//!
//! 1. Parser throughput, single core, over the real frames captured from
//!    lldpd (fixtures/lldp), against a bare walk over the same TLV headers
//!    (the least any parser must do), measured in the same run.
//! 2. Decoding per protocol, as the listener does it (which protocol,
//!    then its decoder, then the published neighbor): real lldpd frames of
//!    each (fixtures/lldp, fixtures/neighbors) and a Cisco Catalyst's CDPv2
//!    from the public captures, ns per frame, LLDP's in the same run.
//! 3. CPU used by `surveyor discover --lldp-wait 10s` listening on two
//!    silent interfaces: capture must sleep, not spin.

#[path = "../tests/support/mod.rs"]
mod support;

use std::hint::black_box;
use std::time::{Duration, Instant};

use support::{Netns, cable, measure, median};
use surveyor::lldp::frame::parse_frame;

const ROUNDS: usize = 15;
const FRAMES_PER_ROUND: usize = 300_000;

fn main() {
    throughput();
    per_protocol();
    idle_cpu();
}

/// Median ns per decode of `frames`, round-robin, over ROUNDS rounds.
fn decode_ns(frames: &[Vec<u8>]) -> f64 {
    use surveyor::lldp::decode::{Protocols, decode};
    let all = Protocols::all();
    let mut rounds = Vec::new();
    for _ in 0..ROUNDS {
        let t = Instant::now();
        for i in 0..FRAMES_PER_ROUND {
            black_box(decode(black_box(&frames[i % frames.len()]), all).is_some());
        }
        rounds.push(t.elapsed());
    }
    median(&rounds).as_nanos() as f64 / FRAMES_PER_ROUND as f64
}

fn per_protocol() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/neighbors");
    let read = |n: &str| std::fs::read(dir.join(format!("{n}.bin"))).expect("fixture");
    let cisco: Vec<Vec<u8>> =
        support::pcap::frames(&support::pcap::captures_dir().join("LLDP_and_CDP.pcap"))
            .into_iter()
            .filter(|f| f.starts_with(&[0x01, 0x00, 0x0c, 0xcc, 0xcc, 0xcc]))
            .take(1)
            .collect();
    let lldp = decode_ns(&fixtures());
    println!(
        "\ndecoding one frame (protocol, decoder, published neighbor), median of {ROUNDS} rounds:"
    );
    println!("  LLDP, lldpd's frames (baseline)   {lldp:>6.0} ns");
    for (label, frames) in [
        ("CDPv1, lldpd's", vec![read("cdpv1")]),
        ("CDPv2, lldpd's", vec![read("cdpv2")]),
        ("CDPv2, a Catalyst 3560's (388 B)", cisco),
        ("EDP, lldpd's", vec![read("edp")]),
        ("FDP, lldpd's", vec![read("fdp")]),
        ("SONMP, lldpd's", vec![read("sonmp")]),
    ] {
        let ns = decode_ns(&frames);
        println!("  {label:<33} {ns:>6.0} ns  ({:.2}x LLDP's)", ns / lldp);
    }
}

fn fixtures() -> Vec<Vec<u8>> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/lldp");
    ["green-local-ids", "mac-ifname-vlans", "shutdown"]
        .iter()
        .map(|n| std::fs::read(dir.join(format!("{n}.bin"))).expect("fixture"))
        .collect()
}

/// Walks TLV headers only: type and length of each, no decoding.
fn walk(frame: &[u8]) -> usize {
    let mut at = 14;
    let mut sum = 0;
    while let Some(h) = frame.get(at..at + 2) {
        let header = u16::from_be_bytes([h[0], h[1]]);
        let len = usize::from(header & 0x1ff);
        if header >> 9 == 0 {
            break;
        }
        sum += len;
        at += 2 + len;
    }
    sum
}

fn throughput() {
    let frames = fixtures();
    let mut parse = Vec::new();
    let mut bare = Vec::new();
    for _ in 0..ROUNDS {
        let t = Instant::now();
        for i in 0..FRAMES_PER_ROUND {
            black_box(parse_frame(black_box(&frames[i % frames.len()])).is_ok());
        }
        parse.push(t.elapsed());
        let t = Instant::now();
        for i in 0..FRAMES_PER_ROUND {
            black_box(walk(black_box(&frames[i % frames.len()])));
        }
        bare.push(t.elapsed());
    }
    let rate = |d: Duration| FRAMES_PER_ROUND as f64 / d.as_secs_f64();
    let (p, b) = (median(&parse), median(&bare));
    println!(
        "LLDP parser, {} real lldpd frames round-robin, median of {ROUNDS} rounds:",
        frames.len()
    );
    println!("  bare TLV walk (baseline)   {:>12.0} frames/s", rate(b));
    println!(
        "  parse_frame                {:>12.0} frames/s  ({:.0} ns/frame, ratio {:.1}x the walk's time)",
        rate(p),
        p.as_nanos() as f64 / FRAMES_PER_ROUND as f64,
        p.as_secs_f64() / b.as_secs_f64()
    );
}

fn idle_cpu() {
    support::require_root();
    let node = Netns::new("bench-idle");
    let quiet = Netns::new("bench-idle-p");
    cable(&node, "sv-a", &quiet, "p0");
    cable(&node, "sv-b", &quiet, "p1");
    let listen = measure(
        &node.name,
        &["discover", "--include", "sv-*", "--lldp-wait", "10s"],
    );
    let floor = measure(&node.name, &["discover", "--include", "sv-*"]);
    let (wall, cpu) = (listen.wall, listen.cpu);
    let (floor_wall, floor_cpu) = (floor.wall, floor.cpu);
    println!("\ndiscover --lldp-wait 10s on 2 silent interfaces:");
    println!(
        "  without --lldp-wait (baseline)  wall {:>7.3} s  cpu {:>7.3} ms",
        floor_wall.as_secs_f64(),
        floor_cpu.as_secs_f64() * 1e3
    );
    println!(
        "  with --lldp-wait 10s            wall {:>7.3} s  cpu {:>7.3} ms  ({:.3}% of one core while listening)",
        wall.as_secs_f64(),
        cpu.as_secs_f64() * 1e3,
        100.0 * cpu.saturating_sub(floor_cpu).as_secs_f64() / wall.as_secs_f64()
    );
}
