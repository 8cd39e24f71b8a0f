//! The aarch64 binary under qemu-user next to the host's (root; `cargo
//! bench --bench arm64`). For the record, not for speed: qemu emulates
//! every instruction, so the figure only guards against surprises such as
//! a start-up that costs ten times what it did.
//!
//! Both are the static musl release builds (built first), run
//! interleaved, 100 times each: the CNI plugin's VERSION (one exec, as the
//! runtime makes it) and `discover --all -o json` in a namespace with 20
//! veth pairs.

#[path = "../tests/support/mod.rs"]
mod support;

use std::process::Command;
use std::time::{Duration, Instant};

use support::bench::release;
use support::{Netns, median, ms, percentile, veth_pairs};

const RUNS: usize = 100;

fn main() {
    support::require_root();
    support::require_program("qemu-aarch64-static", "qemu-user-static");
    let host = release("x86_64-unknown-linux-musl");
    let arm = release("aarch64-unknown-linux-musl");
    let ns = Netns::new("bench-arm64");
    veth_pairs(&ns.name, "d", "e", 20);
    let time = |cmd: &mut Command| {
        let t = Instant::now();
        let out = cmd.output().expect("run");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        t.elapsed()
    };
    let version = |prefix: &[&str], binary: &str| {
        let mut cmd = Command::new(prefix.first().copied().unwrap_or(binary));
        cmd.args(prefix.iter().skip(1))
            .env_clear()
            .env("CNI_COMMAND", "VERSION");
        if !prefix.is_empty() {
            cmd.arg(binary);
        }
        time(&mut cmd)
    };
    let discover = |prefix: &[&str], binary: &str| {
        let mut cmd = ns.command(prefix.first().copied().unwrap_or(binary));
        cmd.args(prefix.iter().skip(1));
        if !prefix.is_empty() {
            cmd.arg(binary);
        }
        time(cmd.args(["discover", "--all", "-o", "json"]))
    };
    let qemu = ["qemu-aarch64-static"];
    let (mut v_host, mut v_arm, mut d_host, mut d_arm) = (vec![], vec![], vec![], vec![]);
    for _ in 0..RUNS {
        v_host.push(version(&[], &host));
        v_arm.push(version(&qemu, &arm));
        d_host.push(discover(&[], &host));
        d_arm.push(discover(&qemu, &arm));
    }
    let line = |label: &str, s: &[Duration]| {
        println!(
            "  {label:<40} median {}  p90 {}",
            ms(median(s)),
            ms(percentile(s, 90.0))
        );
    };
    let ratio = |a: &[Duration], b: &[Duration]| median(a).as_secs_f64() / median(b).as_secs_f64();
    println!("one exec of the CNI plugin (CNI_COMMAND=VERSION), {RUNS} interleaved:");
    line("x86_64, native (baseline)", &v_host);
    line("aarch64 under qemu-aarch64-static", &v_arm);
    println!("  ratio of medians {:.1}", ratio(&v_arm, &v_host));
    println!("\ndiscover --all -o json, 41 links, {RUNS} interleaved:");
    line("x86_64, native (baseline)", &d_host);
    line("aarch64 under qemu-aarch64-static", &d_arm);
    println!("  ratio of medians {:.1}", ratio(&d_arm, &d_host));
}
