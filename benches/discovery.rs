//! Discovery benchmarks (root; run with `cargo bench --bench discovery`).
//!
//! 1. Full dump of 2000 links (1000 veth pairs in a namespace), against a
//!    bare rtnetlink dump of the same links measured in the same run.
//! 2. Link event -> inventory change observed, over 200 carrier toggles,
//!    against the netlink round trip that causes the event.
//! 3. Peak RSS of `surveyor discover --all -o json` over those 2000 links,
//!    against `surveyor version` (the process floor).

#[path = "../tests/support/mod.rs"]
mod support;

use std::time::{Duration, Instant};

use futures::TryStreamExt;
use rtnetlink::LinkUnspec;
use support::{Netns, measure, median, ms, percentile, veth_pairs};
use surveyor::discovery::Discovery;
use surveyor::inventory::Change;
use surveyor::survey::SurveyFilter;

const PAIRS: usize = 1000;
const DUMP_RUNS: usize = 21;
const TOGGLES: usize = 200;

fn main() {
    support::require_root();
    let ns = Netns::new("bench-disc");
    veth_pairs(&ns.name, "sv", "sw", PAIRS);
    println!(
        "discovery benchmark: {} links in namespace {}",
        PAIRS * 2 + 1,
        ns.name
    );

    // RSS first: a child inherits the high-water mark of the process it
    // was forked from, so fork while this one is still small.
    rss(&ns);
    dump(&ns);
    events(&ns);
}

fn dump(ns: &Netns) {
    let (raw, default, all) = ns.block_on(|| async {
        let mut raw = Vec::new();
        let mut default = Vec::new();
        let mut all = Vec::new();
        let every = SurveyFilter::new(true, &[], &[]).unwrap();
        // Interleaved so drift hits all three alike.
        for _ in 0..DUMP_RUNS {
            let t = Instant::now();
            let (conn, handle, _) = rtnetlink::new_connection().unwrap();
            let task = tokio::spawn(conn);
            let n = handle
                .link()
                .get()
                .execute()
                .try_collect::<Vec<_>>()
                .await
                .unwrap()
                .len();
            raw.push(t.elapsed());
            task.abort();
            assert!(n > PAIRS * 2);

            let t = Instant::now();
            let d = Discovery::dump_once(SurveyFilter::default()).await.unwrap();
            default.push(t.elapsed());
            assert!(d.inventory().len() > PAIRS * 2);

            let t = Instant::now();
            let d = Discovery::dump_once(every.clone()).await.unwrap();
            all.push(t.elapsed());
            assert_eq!(d.interfaces().len(), PAIRS * 2 + 1);
        }
        (raw, default, all)
    });
    let base = median(&raw);
    println!(
        "\nfull dump of {} links, median of {DUMP_RUNS} (target < 100 ms):",
        PAIRS * 2 + 1
    );
    println!("  bare rtnetlink dump (baseline)      {}", ms(base));
    for (label, s) in [
        ("discovery, physical only (default)", &default),
        ("discovery, --all (ethtool x2001)", &all),
    ] {
        let m = median(s);
        println!(
            "  {label:<35} {}  ratio {:.2}  p99 {}",
            ms(m),
            m.as_secs_f64() / base.as_secs_f64(),
            ms(percentile(s, 99.0))
        );
    }
}

fn events(ns: &Netns) {
    let (observed, acked) = ns.block_on(|| async {
        let filter = SurveyFilter::new(false, &["sv0".to_string()], &[]).unwrap();
        let mut d = Discovery::watch(filter).await.unwrap();
        let (conn, handle, _) = rtnetlink::new_connection().unwrap();
        tokio::spawn(conn);
        let peer = handle
            .link()
            .get()
            .match_name("sw0")
            .execute()
            .try_next()
            .await
            .unwrap()
            .unwrap()
            .header
            .index;
        let sv0 = d.interfaces()[0].index;
        handle
            .link()
            .set(LinkUnspec::new_with_index(sv0).up().build())
            .execute()
            .await
            .unwrap();
        let mut observed = Vec::new();
        let mut acked = Vec::new();
        for n in 0..=TOGGLES {
            // Toggling the peer flips sv0's carrier: a real carrier event.
            let up = n % 2 == 0;
            let msg = if up {
                LinkUnspec::new_with_index(peer).up().build()
            } else {
                LinkUnspec::new_with_index(peer).down().build()
            };
            let t = Instant::now();
            handle.link().set(msg).execute().await.unwrap();
            let ack = t.elapsed();
            assert!(
                wait_for(&mut d, |c| c.interface().carrier == up).await,
                "carrier {up} on toggle {n} not observed within 2 s"
            );
            if n > 0 {
                observed.push(t.elapsed());
                acked.push(ack);
            }
            // Let the operstate follow-up event land before the next toggle.
            let want = if up { "up" } else { "lowerlayerdown" };
            while d.surveyed(sv0).map(|i| i.oper_state.as_str()) != Some(want) {
                if !wait_for(&mut d, |_| true).await {
                    break;
                }
            }
        }
        (observed, acked)
    });
    println!(
        "\nlink event -> inventory change observed, {TOGGLES} carrier toggles (target p99 < 5 ms):"
    );
    println!(
        "  netlink set + ack (baseline)        p50 {}  p99 {}",
        ms(percentile(&acked, 50.0)),
        ms(percentile(&acked, 99.0))
    );
    println!(
        "  set -> change observed              p50 {}  p99 {}  ratio(p50) {:.2}",
        ms(percentile(&observed, 50.0)),
        ms(percentile(&observed, 99.0)),
        percentile(&observed, 50.0).as_secs_f64() / percentile(&acked, 50.0).as_secs_f64()
    );
}

/// Pulls changes until one satisfies `want`; false after 2 s without.
async fn wait_for(d: &mut Discovery, want: impl Fn(&Change) -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
    while let Ok(changes) = tokio::time::timeout_at(deadline, d.changes()).await {
        if changes.unwrap().iter().any(&want) {
            return true;
        }
    }
    false
}

fn rss(ns: &Netns) {
    let rss = |args: &[&str]| measure(&ns.name, args).max_rss_kib;
    let floor = rss(&["version"]);
    let discover = rss(&["discover", "--all", "-o", "json"]);
    let table = rss(&["discover", "--all"]);
    println!("\npeak RSS over {} links:", PAIRS * 2 + 1);
    println!(
        "  surveyor version (floor)            {:.1} MiB",
        floor as f64 / 1024.0
    );
    println!(
        "  surveyor discover --all -o json     {:.1} MiB",
        discover as f64 / 1024.0
    );
    println!(
        "  surveyor discover --all (table)     {:.1} MiB",
        table as f64 / 1024.0
    );
}
