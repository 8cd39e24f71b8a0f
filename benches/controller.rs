//! Controller at scale (`cargo bench --bench controller`): the real
//! `surveyor controller` process against the fake API of
//! tests/support/fake_api.rs served over HTTP, holding 5000 NodeSurveys (8
//! interfaces each, with LLDP neighbors), 5000 Nodes and 20 NetworkMaps.
//!
//! 1. Sync: start to every map's status and every node's labels written;
//!    the requests it took; the controller's RSS after. Baseline: the same
//!    three collections listed (as the controller's watches do, in pages of
//!    500) by a client in this process, in the same run.
//! 2. A rack event: 40 nodes of one rack lose the neighbor of ens1 (their
//!    agents report it over 400 ms), then get it back: status writes per
//!    map per second, label patches per node.
//! 3. Topology of the 5000 nodes: build + SVG, build + JSON, against
//!    serialising the NodeSurvey statuses it is drawn from.
//!
//! SURVEYOR_BENCH_BIN runs another build of the controller (the static
//! musl binary the image ships) instead of this profile's.

#[path = "../tests/support/mod.rs"]
mod support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, ApiResource, DynamicObject, ListParams};
use kube::core::PartialObjectMeta;
use serde_json::{Value, json};
use support::controller::{cluster, network_map, nic, survey};
use support::fake_api::{FakeApi, Recorded, SURVEYS, kubeconfig};
use support::{median, ms};
use surveyor::crd::{NetworkMap, NodeSurvey, NodeSurveyStatus};

const NODES: usize = 5000;
const NICS: usize = 8;
const MAPS: usize = 20;
const RACK: usize = 40;

fn main() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(run());
}

/// Map `net-KK` matches NIC `KK % 8` by its switch's name; maps 8..19
/// also select one of three zones.
fn maps() -> Vec<Value> {
    (0..MAPS)
        .map(|k| {
            let mut spec = json!({"match": {"lldp": {"systemName": format!("sw{}-*", k % NICS)}}});
            if k >= NICS {
                spec["nodeSelector"] = json!({"matchLabels": {"zone": format!("z{}", k % 3)}});
            }
            network_map(&format!("net-{k:02}"), spec)
        })
        .collect()
}

fn selects(k: usize, node: usize) -> bool {
    k < NICS || k % 3 == node % 3
}

/// Node `i`'s NodeSurvey; `deaf_ens1`: ens1 hears no neighbor.
fn node_survey(i: usize, deaf_ens1: bool) -> Value {
    let name = format!("node{i:04}");
    let rack = i / RACK;
    let switches: Vec<String> = (0..NICS).map(|n| format!("sw{n}-r{rack:03}")).collect();
    let port = format!("Ethernet1/{}", i % RACK + 1);
    let nets: Vec<Vec<String>> = (0..NICS)
        .map(|n| {
            (0..MAPS)
                .filter(|k| k % NICS == n && selects(*k, i) && !(deaf_ens1 && n == 0))
                .map(|k| format!("net-{k:02}"))
                .collect()
        })
        .collect();
    let net_refs: Vec<Vec<&str>> = nets
        .iter()
        .map(|v| v.iter().map(String::as_str).collect())
        .collect();
    let names: Vec<String> = (1..=NICS).map(|n| format!("ens{n}")).collect();
    let nics: Vec<_> = (0..NICS)
        .map(|n| {
            let switch = (!(deaf_ens1 && n == 0)).then(|| (switches[n].as_str(), port.as_str()));
            nic(&names[n], &net_refs[n], switch)
        })
        .collect();
    let reason = "no surveyed interface matches spec.match: ens1 fails lldp (no neighbor)";
    let results: Vec<(String, Result<&str, &str>)> = (0..MAPS)
        .filter(|k| selects(*k, i))
        .map(|k| {
            let n = k % NICS;
            let r = if deaf_ens1 && n == 0 {
                Err(reason)
            } else {
                Ok(names[n].as_str())
            };
            (format!("net-{k:02}"), r)
        })
        .collect();
    let results: Vec<(&str, Result<&str, &str>)> =
        results.iter().map(|(n, r)| (n.as_str(), *r)).collect();
    survey(&name, &nics, &results)
}

fn fixture() -> FakeApi {
    let nodes: Vec<(String, Value)> = (0..NODES)
        .map(|i| {
            (
                format!("node{i:04}"),
                json!({"rack": format!("r{:03}", i / RACK), "zone": format!("z{}", i % 3)}),
            )
        })
        .collect();
    let surveys = (0..NODES).map(|i| node_survey(i, false)).collect();
    cluster(maps(), nodes, surveys)
}

fn rss_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// The requests since the `from`th (the controller's, once it runs: the
/// only client then).
fn since(api: &FakeApi, from: usize) -> Vec<Recorded> {
    api.requests.lock().unwrap()[from..].to_vec()
}

fn is_status(r: &Recorded) -> bool {
    r.method == "PATCH" && r.path.ends_with("/status")
}

fn is_label(r: &Recorded) -> bool {
    r.method == "PATCH" && r.path.starts_with("/api/v1/nodes/")
}

async fn wait(what: &str, secs: u64, cond: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !cond() {
        assert!(Instant::now() < deadline, "{what}: not within {secs} s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Every object of a collection, in pages of 500.
async fn pages<K>(api: &Api<K>, mut each: impl FnMut(K)) -> usize
where
    K: Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let mut lp = ListParams::default().limit(500);
    let mut n = 0;
    loop {
        let page = api.list(&lp).await.unwrap();
        let next = page.metadata.continue_.clone().filter(|c| !c.is_empty());
        for item in page.items {
            n += 1;
            each(item);
        }
        match next {
            Some(token) => lp = lp.continue_token(&token),
            None => return n,
        }
    }
}

/// Lists the three collections as the controller's watches do.
async fn list_all(client: &kube::Client) -> usize {
    let maps: Api<DynamicObject> =
        Api::all_with(client.clone(), &ApiResource::erase::<NetworkMap>(&()));
    let surveys: Api<DynamicObject> =
        Api::all_with(client.clone(), &ApiResource::erase::<NodeSurvey>(&()));
    let nodes: Api<PartialObjectMeta<Node>> = Api::all(client.clone());
    let mut n = pages(&maps, drop).await;
    n += pages(&nodes, drop).await;
    n += pages(&surveys, |s| {
        // Decoded, as the controller decodes each.
        let status: NodeSurveyStatus = serde_json::from_value(s.data["status"].clone()).unwrap();
        assert!(!status.interfaces.is_empty());
    })
    .await;
    n
}

async fn run() {
    println!(
        "building the fixture: {NODES} Nodes and NodeSurveys ({NICS} interfaces each), {MAPS} NetworkMaps"
    );
    let api = fixture();
    let addr = api.serve_http().await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("kubeconfig");
    std::fs::write(&config, kubeconfig(addr)).unwrap();

    // Baseline: listing what the controller lists, over the same HTTP.
    let client = kube::Client::try_from(
        kube::Config::from_custom_kubeconfig(
            kube::config::Kubeconfig::read_from(&config).unwrap(),
            &kube::config::KubeConfigOptions::default(),
        )
        .await
        .unwrap(),
    )
    .unwrap();
    let mut lists = Vec::new();
    for _ in 0..3 {
        let t = Instant::now();
        let n = list_all(&client).await;
        lists.push(t.elapsed());
        assert_eq!(n, MAPS + 2 * NODES);
    }
    let list = median(&lists);

    // 1. Sync.
    let id = api.requests.lock().unwrap().len();
    let t = Instant::now();
    // SURVEYOR_BENCH_BIN: another build of the binary, e.g. the static
    // musl one the image ships.
    let bin = std::env::var_os("SURVEYOR_BENCH_BIN")
        .unwrap_or_else(|| env!("CARGO_BIN_EXE_surveyor").into());
    eprintln!("controller binary: {}", bin.to_string_lossy());
    let mut child = std::process::Command::new(bin)
        .args([
            "controller",
            "--no-leader-election",
            "--listen",
            "127.0.0.1:0",
            "--kubeconfig",
        ])
        .arg(&config)
        .env("SURVEYOR_LOG", "warn")
        .spawn()
        .unwrap();
    let pid = child.id();
    wait("every status and label written", 600, || {
        let mine = since(&api, id);
        mine.iter().filter(|r| is_status(r)).count() >= MAPS
            && mine.iter().filter(|r| is_label(r)).count() >= NODES
    })
    .await;
    let sync = t.elapsed();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let during: Vec<Recorded> = since(&api, id);
    let statuses = during.iter().filter(|r| is_status(r)).count();
    let labels = during.iter().filter(|r| is_label(r)).count();
    let lists_made = during
        .iter()
        .filter(|r| r.method == "GET" && !r.query.contains_key("watch"))
        .count();
    let watches = during
        .iter()
        .filter(|r| r.query.contains_key("watch"))
        .count();
    let (rss, hwm) = (rss_kib(pid, "VmRSS:"), rss_kib(pid, "VmHWM:"));
    println!(
        "\nsync of {NODES} nodes x {NICS} interfaces, {MAPS} maps (controller process, fake API over HTTP):"
    );
    println!(
        "  start to all written: {} (baseline: listing the same, {}; ratio {:.2})",
        ms(sync),
        ms(list),
        sync.as_secs_f64() / list.as_secs_f64()
    );
    println!(
        "  requests: {statuses} status writes (target {MAPS}), {labels} label patches (target {NODES}), {lists_made} list pages, {watches} watches"
    );
    println!(
        "  controller RSS after sync {:.1} MiB, peak {:.1} MiB (target < 200 MiB)",
        rss as f64 / 1024.0,
        hwm as f64 / 1024.0
    );

    // 2. A rack event, and back.
    for (what, deaf) in [
        ("rack r007 loses ens1's neighbor", true),
        ("and gets it back", false),
    ] {
        let before = since(&api, id).len();
        let t = Instant::now();
        for i in 7 * RACK..8 * RACK {
            api.put(SURVEYS, node_survey(i, deaf));
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        // Settled: no write for 3 s.
        let mut seen = before;
        loop {
            tokio::time::sleep(Duration::from_secs(3)).await;
            let now = since(&api, id).len();
            if now == seen {
                break;
            }
            seen = now;
        }
        let writes: Vec<Recorded> = since(&api, id)[before..]
            .iter()
            .filter(|r| r.method == "PATCH")
            .cloned()
            .collect();
        let mut per_map: BTreeMap<String, Vec<Instant>> = BTreeMap::new();
        let mut per_node: BTreeMap<String, usize> = BTreeMap::new();
        for w in &writes {
            if is_status(w) {
                let map = w.path.split('/').nth(5).unwrap_or_default().to_string();
                per_map.entry(map).or_default().push(w.at);
            } else if is_label(w) {
                *per_node.entry(w.path.clone()).or_default() += 1;
            }
        }
        let min_gap = per_map
            .values()
            .flat_map(|at| at.windows(2).map(|w| w[1] - w[0]))
            .min();
        let last = writes.last().map_or(Duration::ZERO, |w| w.at - t);
        println!("\nrack event: {what} (40 NodeSurveys over 400 ms):");
        println!(
            "  status writes {} over {} map(s) (at most {} per map; closest two of one map {}; target >= 1 s apart)",
            per_map.values().map(Vec::len).sum::<usize>(),
            per_map.len(),
            per_map.values().map(Vec::len).max().unwrap_or(0),
            min_gap.map_or("-".into(), ms),
        );
        println!(
            "  label patches {} on {} node(s) (at most {} per node; target 1); last write {} after the first report",
            per_node.values().sum::<usize>(),
            per_node.len(),
            per_node.values().max().unwrap_or(&0),
            ms(last)
        );
    }
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGTERM,
    );
    let _ = child.wait();

    // 3. Topology render.
    let statuses: Vec<(String, NodeSurveyStatus)> = (0..NODES)
        .map(|i| {
            let s = node_survey(i, i % 97 == 0);
            (
                format!("node{i:04}"),
                serde_json::from_value(s["status"].clone()).unwrap(),
            )
        })
        .collect();
    let views: Vec<surveyor::topology::NodeView> = statuses
        .iter()
        .map(|(n, s)| surveyor::topology::NodeView::of(n, s))
        .collect();
    let time = |f: &dyn Fn() -> usize| {
        let mut samples = Vec::new();
        let mut size = 0;
        for _ in 0..5 {
            let t = Instant::now();
            size = f();
            samples.push(t.elapsed());
        }
        (median(&samples), size)
    };
    let (base, base_size) = time(&|| {
        serde_json::to_string(&statuses.iter().map(|(_, s)| s).collect::<Vec<_>>())
            .unwrap()
            .len()
    });
    let (svg, svg_size) =
        time(&|| surveyor::topology::svg(&surveyor::topology::build(&views)).len());
    let (json, json_size) =
        time(&|| surveyor::topology::json(&surveyor::topology::build(&views)).len());
    println!(
        "\ntopology of {NODES} nodes ({} switches), median of 5:",
        surveyor::topology::build(&views).switches.len()
    );
    println!(
        "  build + svg  {} ({:.1} MiB), ratio {:.2}",
        ms(svg),
        svg_size as f64 / 1048576.0,
        svg.as_secs_f64() / base.as_secs_f64()
    );
    println!(
        "  build + json {} ({:.1} MiB), ratio {:.2}",
        ms(json),
        json_size as f64 / 1048576.0,
        json.as_secs_f64() / base.as_secs_f64()
    );
    println!(
        "  baseline: the NodeSurvey statuses to JSON {} ({:.1} MiB)",
        ms(base),
        base_size as f64 / 1048576.0
    );
}
