//! What the benchmarks share: the release binary hosts run, interleaved
//! series with random gaps, and the lines they print.

use std::process::Command;
use std::time::Duration;

use super::{median, ms, percentile};

/// Builds the static release binary for `target` and returns its path.
pub fn release(target: &str) -> String {
    let root = env!("CARGO_MANIFEST_DIR");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(cargo)
        .args([
            "build",
            "--release",
            "--locked",
            "--bin",
            "surveyor",
            "--target",
            target,
        ])
        .current_dir(root)
        .status()
        .expect("run cargo build");
    assert!(
        status.success(),
        "cannot build the {target} binary (rustup target add {target})"
    );
    format!("{root}/target/{target}/release/surveyor")
}

/// Random gaps of up to 10 ms between samples: kernel work that a cycle
/// waits on (RCU grace periods) is quantised, and a fixed rhythm can lock
/// two series into different phases.
pub struct Gaps(u64);

impl Default for Gaps {
    fn default() -> Self {
        Gaps(0x2545_f491_4f6c_dd1d)
    }
}

impl Gaps {
    pub fn next(&mut self) {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        std::thread::sleep(Duration::from_micros(self.0 % 10_000));
    }
}

/// `cycles` samples of `a` and of `b`, interleaved (which goes first
/// alternates), gaps between them.
pub fn interleave(
    cycles: usize,
    a: &dyn Fn() -> Duration,
    b: &dyn Fn() -> Duration,
    gaps: &mut Gaps,
) -> (Vec<Duration>, Vec<Duration>) {
    let (mut xs, mut ys) = (Vec::new(), Vec::new());
    for n in 0..cycles {
        gaps.next();
        if n % 2 == 0 {
            xs.push(a());
            gaps.next();
            ys.push(b());
        } else {
            ys.push(b());
            gaps.next();
            xs.push(a());
        }
    }
    (xs, ys)
}

/// One series' quartiles, median and p99.
pub fn line(label: &str, s: &[Duration]) {
    println!(
        "  {label:<30} p25 {}  median {}  p75 {}  p99 {}",
        ms(percentile(s, 25.0)),
        ms(median(s)),
        ms(percentile(s, 75.0)),
        ms(percentile(s, 99.0))
    );
}
