//! DRA (root; `cargo bench --bench dra`).
//!
//! 1. Prepare latency, on the pod start path: NodePrepareResources of one
//!    claim per call (each a claim not prepared before, so read from the
//!    API and recorded), p50/p99 over 1000 calls over the plugin's unix
//!    socket, against a GetInfo round trip on the registration socket (the
//!    gRPC floor), in the same run. The API is the in-process fake.
//! 2. The agent process with --dra against the fake API over HTTP, in a
//!    namespace with 1000 up veth pairs surveyed (LLDP listening on each):
//!    ResourceSlice writes over SURVEYOR_BENCH_STEADY_SECS (default 60) of
//!    nothing changing (target 0), and per link event (green moving
//!    between two NICs, 10 times: target <= 1 write each); its RSS (target
//!    < 20 MiB; anonymous and file-backed apart) against the same agent
//!    without --dra, and that of the binary the image ships (static musl,
//!    release) when it is built; SURVEYOR_BENCH_BASELINE_BIN names another
//!    build (an earlier release) measured the same way in the same run.
//! 3. The kubelet adapter's own cost (src/kubelet/authority.rs): one
//!    request's header block as the kubelet sends it, rewritten, per call,
//!    next to the GetInfo round trip of part 1.

#[path = "../tests/support/mod.rs"]
mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::json;
use support::fake_api::{CLAIMS, FakeApi, NODES, SLICES, kubeconfig, map, node};
use support::kubelet::{call, dial};
use support::{Netns, cable, ip_in, median, ms, percentile, veth_pairs};
use surveyor::kubelet::proto::{self, Claim, InfoRequest, NodePrepareResourcesRequest};
use surveyor::kubelet::{self, PluginConfig};

const CALLS: usize = 1000;
const LINKS: usize = 1000;
const MOVES: usize = 10;

fn main() {
    support::require_root();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(prepare_latency());
    drop(rt);
    agent_process();
}

async fn prepare_latency() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    std::fs::create_dir(&state).unwrap();
    std::fs::write(
        state.join("networks.json"),
        json!({"node": "node1", "generation": 1, "networks": {"green": {"device": "ens4", "candidates": ["ens4"]}}})
            .to_string(),
    )
    .unwrap();
    let api = FakeApi::default();
    for n in 0..CALLS {
        api.put(CLAIMS, json!({"apiVersion": "resource.k8s.io/v1", "kind": "ResourceClaim",
            "metadata": {"name": format!("c{n}"), "namespace": "web", "uid": format!("u{n}")},
            "spec": {},
            "status": {"allocation": {"devices": {"results": [
                {"request": "net", "driver": "surveyor.dev", "pool": "node1", "device": "green"}]}}}}));
    }
    let config = PluginConfig {
        node: "node1".into(),
        state_dir: state,
        plugins_dir: dir.path().join("plugins"),
        registry_dir: dir.path().join("registry"),
        registration_grace: Duration::from_secs(60),
        slices: Default::default(),
    };
    let client = api.serve();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let (registration, _registration) = tokio::sync::watch::channel(Default::default());
    let server = tokio::spawn(kubelet::serve(
        client,
        config.clone(),
        registration,
        async move {
            let _ = stopped.await;
        },
    ));
    while !(config.endpoint().exists() && config.registration().exists()) {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let dra = dial(config.endpoint()).await;
    let reg = dial(config.registration()).await;
    let (mut prepares, mut infos) = (Vec::new(), Vec::new());
    for n in 0..CALLS {
        let t = Instant::now();
        let _: proto::PluginInfo = call(
            &reg,
            "/pluginregistration.Registration/GetInfo",
            InfoRequest {},
        )
        .await
        .unwrap();
        infos.push(t.elapsed());
        let claim = Claim {
            namespace: "web".into(),
            uid: format!("u{n}"),
            name: format!("c{n}"),
        };
        let t = Instant::now();
        let answer: proto::NodePrepareResourcesResponse = call(
            &dra,
            "/k8s.io.kubelet.pkg.apis.dra.v1.DRAPlugin/NodePrepareResources",
            NodePrepareResourcesRequest {
                claims: vec![claim],
            },
        )
        .await
        .unwrap();
        prepares.push(t.elapsed());
        let one = &answer.claims[&format!("u{n}")];
        assert!(one.error.is_empty(), "{}", one.error);
    }
    let _ = stop.send(());
    let _ = server.await;
    let rewrite = rewrite_cost();
    println!("NodePrepareResources, one new claim per call, {CALLS} calls (target p99 < 5 ms):");
    println!(
        "  GetInfo round trip (baseline)   p50 {}  p99 {}",
        ms(median(&infos)),
        ms(percentile(&infos, 99.0))
    );
    println!(
        "  prepare (API read, check, claims.json written and synced)   p50 {}  p99 {}",
        ms(median(&prepares)),
        ms(percentile(&prepares, 99.0))
    );
    println!(
        "  the adapter's rewrite of one request's headers (in both round trips above): median {:.2} us, {:.1}% of a GetInfo round trip",
        rewrite.as_secs_f64() * 1e6,
        100.0 * rewrite.as_secs_f64() / median(&infos).as_secs_f64()
    );
}

/// The adapter's cost per request: a connection's preface and SETTINGS,
/// then GetInfo's HEADERS (authority = the registration socket's path,
/// percent-encoded, as the kubelet sends it) and DATA, rewritten; the
/// median over 1000 rounds of 100 requests.
fn rewrite_cost() -> Duration {
    use surveyor::kubelet::authority::Rewriter;
    let frame = |kind: u8, flags: u8, stream: u32, payload: &[u8]| {
        let mut out = (payload.len() as u32).to_be_bytes()[1..].to_vec();
        out.extend([kind, flags]);
        out.extend(stream.to_be_bytes());
        out.extend(payload);
        out
    };
    let mut encoder = loona_hpack::Encoder::new();
    let mut input = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    input.extend(frame(0x4, 0, 0, &[]));
    for n in 0..100u32 {
        let block = encoder.encode([
            (&b":method"[..], &b"POST"[..]),
            (b":scheme", b"http"),
            (b":path", b"/pluginregistration.Registration/GetInfo"),
            (
                b":authority",
                b"%2Fvar%2Flib%2Fkubelet%2Fplugins_registry%2Fsurveyor.dev-reg.sock",
            ),
            (b"content-type", b"application/grpc"),
            (b"user-agent", b"grpc-go/1.72.1"),
            (b"te", b"trailers"),
        ]);
        input.extend(frame(0x1, 0x4, 2 * n + 1, &block));
        input.extend(frame(0x0, 0x1, 2 * n + 1, &[0, 0, 0, 0, 0]));
    }
    let mut rounds = Vec::new();
    for _ in 0..1000 {
        let t = Instant::now();
        let mut rewriter = Rewriter::default();
        let mut buf = bytes::BytesMut::from(&input[..]);
        rewriter.feed(&mut buf).unwrap();
        std::hint::black_box(rewriter.take(usize::MAX));
        rounds.push(t.elapsed() / 100);
    }
    median(&rounds)
}

/// RSS of `pid` (all, anonymous, file-backed), in KiB.
fn rss(pid: u32) -> (u64, u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("RssAnon:"), field("RssFile:"))
}

fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

fn slice_writes(api: &FakeApi) -> usize {
    api.writes()
        .iter()
        .filter(|r| r.path.contains("/resourceslices") && !r.query.contains_key("dryRun"))
        .count()
}

struct Agent {
    child: std::process::Child,
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_agent(ns: &str, config: &Path, dir: &Path, dra: bool) -> Agent {
    start_binary(support::surveyor().as_ref(), ns, config, dir, dra)
}

/// The binary the image ships, when built: static musl, release.
fn shipped() -> Option<std::path::PathBuf> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("target/x86_64-unknown-linux-musl/release/surveyor");
    path.exists().then_some(path)
}

fn start_binary(binary: &Path, ns: &str, config: &Path, dir: &Path, dra: bool) -> Agent {
    let state = dir.join(if dra { "state-dra" } else { "state" });
    let _ = std::fs::remove_dir_all(&state);
    let mut cmd = std::process::Command::new("ip");
    cmd.args(["netns", "exec", ns])
        .arg(binary)
        .args([
            "agent",
            "--node-name",
            "node1",
            "--include",
            "sv-*",
            "--include",
            "d*",
        ])
        .arg("--kubeconfig")
        .arg(config)
        .arg("--state-dir")
        .arg(&state)
        .env("SURVEYOR_LOG", "warn");
    if dra {
        cmd.arg("--dra")
            .arg("--kubelet-plugins-dir")
            .arg(dir.join("plugins"))
            .arg("--kubelet-registry-dir")
            .arg(dir.join("registry"));
    }
    Agent {
        child: cmd.spawn().unwrap(),
    }
}

async fn until(secs: u64, what: &str, cond: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !cond() {
        assert!(Instant::now() < deadline, "{what}: not within {secs} s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn interface(api: &FakeApi) -> Option<String> {
    let slice = api.get(SLICES, "node1-surveyor.dev")?;
    slice["spec"]["devices"][0]["attributes"]["interface"]["string"]
        .as_str()
        .map(str::to_string)
}

/// The agent process, and the fake API it talks to, inside the node's
/// namespace (its loopback is where the API listens).
fn agent_process() {
    let steady: u64 = std::env::var("SURVEYOR_BENCH_STEADY_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(60);
    let ns = Netns::new("bench-dra");
    let peer = Netns::new("bench-dra-p");
    cable(&ns, "sv-a", &peer, "p-a");
    cable(&ns, "sv-b", &peer, "p-b");
    veth_pairs(&ns.name, "d", "e", LINKS);
    let up: String = (0..LINKS)
        .map(|n| format!("link set d{n} up\nlink set e{n} up\n"))
        .collect();
    let batch = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(batch.path(), up).unwrap();
    ip_in(&ns.name, &["-batch", batch.path().to_str().unwrap()]);
    let (ns_name, peer_name) = (ns.name.clone(), peer.name.clone());
    ns.block_on(move || agent_in(ns_name, peer_name, steady));
}

async fn agent_in(ns: String, peer: String, steady: u64) {
    let api = FakeApi::default();
    api.put(NODES, node("node1", json!({})));
    // green: sv-a while it has carrier, else sv-b.
    api.put(support::fake_api::MAPS, map("green", "sv-*"));
    let addr = api.serve_http().await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("kubeconfig");
    std::fs::write(&config, kubeconfig(addr)).unwrap();

    // Without DRA first: the RSS baseline.
    let plain = start_agent(&ns, &config, dir.path(), false);
    until(60, "NodeSurvey written", || {
        api.get(support::fake_api::SURVEYS, "node1")
            .is_some_and(|s| s["status"]["summary"]["interfaces"] == json!(2 + LINKS))
    })
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let rss_plain = rss(plain.child.id());
    drop(plain);

    let agent = start_agent(&ns, &config, dir.path(), true);
    until(60, "slice written", || {
        interface(&api).as_deref() == Some("sv-a")
    })
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let rss_dra = rss(agent.child.id());
    let before = slice_writes(&api);
    tokio::time::sleep(Duration::from_secs(steady)).await;
    let steady_writes = slice_writes(&api) - before;

    let before = slice_writes(&api);
    let mut moves = Vec::new();
    for n in 0..MOVES {
        // Carrier off on sv-a: green moves to sv-b; on again: back.
        let (state, to) = if n % 2 == 0 {
            ("down", "sv-b")
        } else {
            ("up", "sv-a")
        };
        let t = Instant::now();
        ip_in(&peer, &["link", "set", "p-a", state]);
        until(10, "slice follows", || {
            interface(&api).as_deref() == Some(to)
        })
        .await;
        moves.push(t.elapsed());
        // Past the agent's write pacing (1 s), so each event stands alone.
        tokio::time::sleep(Duration::from_millis(1500)).await;
    }
    let event_writes = slice_writes(&api) - before;
    drop(agent);

    // The same with the binary the image ships, and a baseline build.
    let shipped_rss = match shipped() {
        Some(binary) => Some(binary_rss(&api, &binary, &ns, &config, dir.path()).await),
        None => None,
    };
    let baseline = std::env::var_os("SURVEYOR_BENCH_BASELINE_BIN").map(std::path::PathBuf::from);
    let baseline_rss = match &baseline {
        Some(binary) => Some(binary_rss(&api, binary, &ns, &config, dir.path()).await),
        None => None,
    };

    println!(
        "\nagent with --dra, {LINKS} veth pairs up and surveyed (LLDP on each), fake API over HTTP:"
    );
    println!(
        "  ResourceSlice writes over {steady} s, nothing changing: {steady_writes} (target 0)"
    );
    println!(
        "  ResourceSlice writes for {MOVES} link events moving green: {event_writes} ({:.1} per event, target <= 1); event -> slice in the API median {}",
        event_writes as f64 / MOVES as f64,
        ms(median(&moves))
    );
    println!(
        "  RSS {} with --dra (target < 20 MiB; anonymous {}, file-backed {}), {} without (baseline; anonymous {}, file-backed {})",
        mib(rss_dra.0),
        mib(rss_dra.1),
        mib(rss_dra.2),
        mib(rss_plain.0),
        mib(rss_plain.1),
        mib(rss_plain.2)
    );
    match shipped_rss {
        Some(r) => println!(
            "  RSS of the shipped binary (static musl) with --dra: {} (anonymous {}, file-backed {})",
            mib(r.0),
            mib(r.1),
            mib(r.2)
        ),
        None => println!(
            "  (the shipped binary is not built: cargo build --release --target x86_64-unknown-linux-musl)"
        ),
    }
    if let (Some(binary), Some(base)) = (&baseline, baseline_rss) {
        let file = |p: &Path| std::fs::metadata(p).map_or(0, |m| m.len());
        println!(
            "  RSS of the baseline {} with --dra: {} (anonymous {}, file-backed {}); shipped/baseline {}",
            binary.display(),
            mib(base.0),
            mib(base.1),
            mib(base.2),
            shipped_rss.map_or("-".into(), |s| format!("{:.3}", s.0 as f64 / base.0 as f64))
        );
        if let Some(shipped) = shipped() {
            println!(
                "  binary size: shipped {} bytes, baseline {} bytes",
                file(&shipped),
                file(binary)
            );
        }
    }
}

/// The RSS of `binary` run as the agent with --dra, once it has written
/// the slice and settled.
async fn binary_rss(
    api: &FakeApi,
    binary: &Path,
    ns: &str,
    config: &Path,
    dir: &Path,
) -> (u64, u64, u64) {
    api.delete(SLICES, "node1-surveyor.dev");
    let agent = start_binary(binary, ns, config, dir, true);
    until(60, "slice written", || interface(api).is_some()).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    rss(agent.child.id())
}
