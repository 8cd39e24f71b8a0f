//! The DRA kubelet plugin driven by a gRPC client acting as the kubelet,
//! over the real unix sockets: the registration handshake, prepare and
//! unprepare (v1 and v1beta1), a stale allocation refused, and an agent
//! restart in between. Claims come from the fake API.

mod support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{Value, json};
use support::controller::until;
use support::fake_api::{CLAIMS, FakeApi, Recorded, assert_declared};
use support::kubelet::{call, dial, kubelet_py};
use surveyor::kubelet::proto::{
    self, Claim, InfoRequest, NodePrepareResourcesRequest, NodePrepareResourcesResponse,
    NodeUnprepareResourcesRequest, NodeUnprepareResourcesResponse, PluginInfo, RegistrationStatus,
    RegistrationStatusResponse,
};
use surveyor::kubelet::{self, PluginConfig, Registration};
use tokio::sync::watch;
use tonic::transport::Channel;

/// A node's directories: the state dir with a snapshot, the kubelet's.
struct Node {
    _dir: tempfile::TempDir,
    config: PluginConfig,
}

impl Node {
    fn new() -> Node {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        Node::with_state(dir, state)
    }

    /// With the state dir at `state` (a test's own mount).
    fn with_state(dir: tempfile::TempDir, state: PathBuf) -> Node {
        std::fs::create_dir(&state).unwrap();
        let config = PluginConfig {
            node: "node1".into(),
            state_dir: state,
            plugins_dir: dir.path().join("plugins"),
            registry_dir: dir.path().join("plugins_registry"),
            registration_grace: Duration::from_secs(60),
            slices: Default::default(),
        };
        let node = Node { _dir: dir, config };
        node.green(Some("sv-a"));
        node
    }

    /// networks.json as the agent writes it: green on `device`, or not.
    fn green(&self, device: Option<&str>) {
        let green = match device {
            Some(d) => json!({"device": d, "index": 3, "candidates": [d]}),
            None => {
                json!({"candidates": [], "reason": "no surveyed interface matches spec.match: sv-a fails names"})
            }
        };
        let snapshot = json!({"node": "node1", "generation": 1, "networks": {"green": green}});
        std::fs::write(
            self.config.state_dir.join("networks.json"),
            snapshot.to_string(),
        )
        .unwrap();
    }

    fn recorded(&self) -> Value {
        match std::fs::read(self.config.state_dir.join(kubelet::CLAIMS)) {
            Ok(b) => serde_json::from_slice(&b).unwrap(),
            Err(_) => Value::Null,
        }
    }
}

/// The agent's plugin, running until the returned sender is dropped or
/// sent to.
struct Plugin {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
    /// What the kubelet has said of the plugin.
    registration: watch::Receiver<Registration>,
}

impl Plugin {
    async fn start(api: &FakeApi, node: &Node) -> Plugin {
        Plugin::start_with(api, node.config.clone()).await
    }

    async fn start_with(api: &FakeApi, config: PluginConfig) -> Plugin {
        let client = api.serve();
        let sockets = [config.endpoint(), config.registration()];
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let (tx, registration) = watch::channel(Registration::Registered);
        let task = tokio::spawn(async move {
            kubelet::serve(client, config, tx, async move {
                let _ = stopped.await;
            })
            .await
            .unwrap();
        });
        for path in sockets {
            wait_for_socket(&path).await;
        }
        Plugin {
            stop: Some(stop),
            task,
            registration,
        }
    }

    /// Tells it to stop; [`Plugin::stopped`] waits.
    fn stop_now(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }

    async fn stopped(self) {
        self.task.await.unwrap();
    }

    async fn stop(mut self) {
        self.stop_now();
        self.stopped().await;
    }
}

async fn wait_for_socket(path: &Path) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while !path.exists() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{} never appeared",
            path.display()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn claim(name: &str, uid: &str) -> Claim {
    Claim {
        namespace: "web".into(),
        uid: uid.into(),
        name: name.into(),
    }
}

/// A ResourceClaim allocated `device` from node1's pool.
fn allocated(name: &str, uid: &str, device: &str) -> Value {
    json!({"apiVersion": "resource.k8s.io/v1", "kind": "ResourceClaim",
        "metadata": {"name": name, "namespace": "web", "uid": uid},
        "spec": {"devices": {"requests": [{"name": "net", "exactly": {"deviceClassName": "green.surveyor.dev"}}]}},
        "status": {"allocation": {"devices": {"results": [
            {"request": "net", "driver": "surveyor.dev", "pool": "node1", "device": device}]}}}})
}

async fn prepare(channel: &Channel, api: &str, claims: Vec<Claim>) -> NodePrepareResourcesResponse {
    call(
        channel,
        &format!("/{api}/NodePrepareResources"),
        NodePrepareResourcesRequest { claims },
    )
    .await
    .unwrap()
}

async fn unprepare(
    channel: &Channel,
    api: &str,
    claims: Vec<Claim>,
) -> NodeUnprepareResourcesResponse {
    call(
        channel,
        &format!("/{api}/NodeUnprepareResources"),
        NodeUnprepareResourcesRequest { claims },
    )
    .await
    .unwrap()
}

#[tokio::test]
async fn the_kubelet_registers_the_plugin_and_prepares_claims_across_a_restart() {
    let node = Node::new();
    let api = FakeApi::default();
    api.put(CLAIMS, allocated("db-green", "uid-1", "green"));
    api.put(CLAIMS, allocated("web-green", "uid-2", "green-3"));
    let plugin = Plugin::start(&api, &node).await;

    // Registration, as the kubelet's plugin watcher does it.
    let reg = dial(node.config.registration()).await;
    let info: PluginInfo = call(
        &reg,
        "/pluginregistration.Registration/GetInfo",
        InfoRequest {},
    )
    .await
    .unwrap();
    assert_eq!(
        info,
        PluginInfo {
            r#type: "DRAPlugin".into(),
            name: "surveyor.dev".into(),
            endpoint: node.config.endpoint().to_string_lossy().into_owned(),
            supported_versions: vec!["v1.DRAPlugin".into(), "v1beta1.DRAPlugin".into()],
        }
    );
    assert!(info.endpoint.ends_with("plugins/surveyor.dev/dra.sock"));
    let _: RegistrationStatusResponse = call(
        &reg,
        "/pluginregistration.Registration/NotifyRegistrationStatus",
        RegistrationStatus {
            plugin_registered: true,
            error: String::new(),
        },
    )
    .await
    .unwrap();

    // Prepare through the v1 API.
    let dra = dial(node.config.endpoint()).await;
    let answer = prepare(&dra, proto::DRA_V1, vec![claim("db-green", "uid-1")]).await;
    let one = &answer.claims["uid-1"];
    assert_eq!(one.error, "");
    assert_eq!(
        one.devices,
        [proto::Device {
            request_names: vec!["net".into()],
            pool_name: "node1".into(),
            device_name: "green".into(),
            cdi_device_ids: vec![],
        }]
    );
    assert_eq!(node.recorded()["uid-1"]["devices"][0]["interface"], "sv-a");
    // Asked again (a restarted kubelet): the same answer, no API read.
    let reads = api.requests.lock().unwrap().len();
    let again = prepare(&dra, proto::DRA_V1, vec![claim("db-green", "uid-1")]).await;
    assert_eq!(again.claims["uid-1"], *one);
    assert_eq!(api.requests.lock().unwrap().len(), reads);

    // An unknown method is refused, not hung.
    let e = call::<_, NodePrepareResourcesResponse>(
        &dra,
        &format!("/{}/NodeWatchResources", proto::DRA_V1),
        NodePrepareResourcesRequest { claims: vec![] },
    )
    .await
    .unwrap_err();
    assert_eq!(e.code(), tonic::Code::Unimplemented);

    // The agent restarts: the record stays, the sockets come back.
    plugin.stop().await;
    assert!(!node.config.endpoint().exists() && !node.config.registration().exists());
    let plugin = Plugin::start(&api, &node).await;
    let dra = dial(node.config.endpoint()).await;
    // green is gone from the node meanwhile: a new claim is refused...
    node.green(None);
    let refused = prepare(&dra, proto::DRA_V1BETA1, vec![claim("web-green", "uid-2")]).await;
    let error = &refused.claims["uid-2"].error;
    for part in [
        "web/web-green",
        "green-3",
        "network green",
        "node1",
        "sv-a fails names",
    ] {
        assert!(error.contains(part), "{part}: {error}");
    }
    assert!(refused.claims["uid-2"].devices.is_empty());
    assert!(node.recorded().get("uid-2").is_none());
    // ...and the one prepared before the restart is unprepared (v1beta1).
    let done = unprepare(&dra, proto::DRA_V1BETA1, vec![claim("db-green", "uid-1")]).await;
    assert_eq!(done.claims["uid-1"].error, "");
    assert!(
        node.recorded().get("uid-1").is_none(),
        "{}",
        node.recorded()
    );
    // Unpreparing what was never prepared is fine.
    let none = unprepare(&dra, proto::DRA_V1, vec![claim("other", "uid-9")]).await;
    assert_eq!(none.claims["uid-9"].error, "");
    plugin.stop().await;

    let reads: Vec<Recorded> = api.requests.lock().unwrap().clone();
    assert!(
        reads
            .iter()
            .all(|r| r.method == "GET" && r.path.starts_with(CLAIMS)),
        "{reads:#?}"
    );
    assert_declared(&api);
}

/// A claim replaced under the same name (another UID) is not prepared
/// from the new object; a claim whose API read fails says so.
#[tokio::test]
async fn a_replaced_or_unreadable_claim_is_that_claim_s_error() {
    let node = Node::new();
    let api = FakeApi::default();
    api.put(CLAIMS, allocated("db-green", "uid-new", "green"));
    let plugin = Plugin::start(&api, &node).await;
    let dra = dial(node.config.endpoint()).await;
    let answer = prepare(
        &dra,
        proto::DRA_V1,
        vec![claim("db-green", "uid-old"), claim("missing", "uid-m")],
    )
    .await;
    assert!(
        answer.claims["uid-old"].error.contains("replaced"),
        "{answer:?}"
    );
    assert!(
        answer.claims["uid-m"]
            .error
            .contains("cannot read ResourceClaim web/missing"),
        "{answer:?}"
    );
    plugin.stop().await;
}

/// Something other than a socket where a socket goes is left alone.
#[tokio::test]
async fn a_file_in_the_socket_s_place_is_not_removed() {
    let node = Node::new();
    let endpoint = node.config.endpoint();
    std::fs::create_dir_all(endpoint.parent().unwrap()).unwrap();
    std::fs::write(&endpoint, "not a socket").unwrap();
    let (tx, _rx) = watch::channel(Registration::default());
    let e = kubelet::serve(FakeApi::default().serve(), node.config.clone(), tx, async {
    })
    .await
    .unwrap_err();
    assert!(e.to_string().contains("is not a socket"), "{e}");
    assert_eq!(std::fs::read_to_string(&endpoint).unwrap(), "not a socket");
}

/// A full state dir: the claim is not prepared (its error says why, so the
/// kubelet asks again) and not remembered as prepared; once there is room
/// the next attempt succeeds and is recorded. Unprepare likewise keeps the
/// record until it can be written.
#[tokio::test]
async fn a_full_state_dir_prepares_nothing_until_there_is_room() {
    let disk = support::Tmpfs::new(64);
    let node = Node::with_state(tempfile::tempdir().unwrap(), disk.path.join("state"));
    let api = FakeApi::default();
    api.put(CLAIMS, allocated("db-green", "uid-1", "green"));
    let plugin = Plugin::start(&api, &node).await;
    let dra = dial(node.config.endpoint()).await;
    disk.fill();
    let full = prepare(&dra, proto::DRA_V1, vec![claim("db-green", "uid-1")]).await;
    let error = &full.claims["uid-1"].error;
    assert!(
        error.contains("cannot record the prepared claim"),
        "{error}"
    );
    assert!(full.claims["uid-1"].devices.is_empty());
    disk.free();
    let reads = api.requests.lock().unwrap().len();
    let room = prepare(&dra, proto::DRA_V1, vec![claim("db-green", "uid-1")]).await;
    assert_eq!(room.claims["uid-1"].error, "");
    assert_eq!(room.claims["uid-1"].devices.len(), 1);
    assert!(
        api.requests.lock().unwrap().len() > reads,
        "the failed attempt was not taken for a prepared claim"
    );
    assert_eq!(node.recorded()["uid-1"]["devices"][0]["device"], "green");

    disk.fill();
    let full = unprepare(&dra, proto::DRA_V1, vec![claim("db-green", "uid-1")]).await;
    assert!(
        full.claims["uid-1"].error.contains("cannot record"),
        "{full:?}"
    );
    disk.free();
    let room = unprepare(&dra, proto::DRA_V1, vec![claim("db-green", "uid-1")]).await;
    assert_eq!(room.claims["uid-1"].error, "");
    assert!(
        node.recorded().get("uid-1").is_none(),
        "{}",
        node.recorded()
    );
    plugin.stop().await;
}

/// A claim reserved for pod `pod-1`.
fn reserved(name: &str, uid: &str, device: &str) -> Value {
    let mut claim = allocated(name, uid, device);
    claim["status"]["reservedFor"] = json!([{"resource": "pods", "name": "db-0", "uid": "pod-1"}]);
    claim
}

/// The CNI plugin's record of pod-1's interface on green (as it writes it
/// after an ADD with a `deviceID`).
fn attach(node: &Node, container: &str, mac: &str) {
    let record = surveyor::attachment::Attachment {
        pod_uid: "pod-1".into(),
        pod_namespace: "web".into(),
        pod_name: "db-0".into(),
        network: "green".into(),
        device: "sv-a".into(),
        interface: "net1".into(),
        mac: Some(mac.into()),
        ips: vec!["192.0.2.5/24".into(), "2001:db8::5/64".into()],
        claimed: true,
        shaped: None,
    };
    write_record(node, container, &record);
}

fn write_record(node: &Node, container: &str, record: &surveyor::attachment::Attachment) {
    let dir = node.config.state_dir.join(surveyor::attachment::DIR);
    std::fs::create_dir_all(&dir).unwrap();
    let tmp = dir.join(".tmp");
    std::fs::write(&tmp, serde_json::to_vec(&record).unwrap()).unwrap();
    std::fs::rename(
        &tmp,
        dir.join(surveyor::attachment::file_name(container, "net1")),
    )
    .unwrap();
}

fn status_writes(api: &FakeApi) -> Vec<Recorded> {
    api.writes_to("/status")
}

/// KEP-4817: once the pod's interface exists, the claim's status shows it
/// (name, MAC, IPs) under our device, next to the scheduler's allocation;
/// written once, not again after an agent restart, again when a new
/// sandbox brings a new MAC; the API down delays it, nothing more.
#[tokio::test]
async fn the_pod_interface_is_shown_on_its_claim_once_it_exists() {
    let node = Node::new();
    let api = FakeApi::default();
    api.put(CLAIMS, reserved("db-green", "uid-1", "green"));
    let plugin = Plugin::start(&api, &node).await;
    let dra = dial(node.config.endpoint()).await;
    let answer = prepare(&dra, proto::DRA_V1, vec![claim("db-green", "uid-1")]).await;
    assert_eq!(answer.claims["uid-1"].error, "");
    assert_eq!(node.recorded()["uid-1"]["pods"], json!(["pod-1"]));

    attach(&node, "c1", "0a:58:c0:00:02:05");
    until(10, "a status write", &api, || {
        !status_writes(&api).is_empty()
    })
    .await;
    let w = &status_writes(&api)[0];
    assert_eq!(w.method, "PATCH");
    assert_eq!(w.path, format!("{CLAIMS}/db-green/status"));
    assert!(
        w.content_type.starts_with("application/apply-patch"),
        "{w:?}"
    );
    assert_eq!(
        w.query.get("fieldManager").map(String::as_str),
        Some("surveyor-agent")
    );
    assert_eq!(
        w.body,
        json!({"apiVersion": "resource.k8s.io/v1", "kind": "ResourceClaim",
            "metadata": {"name": "db-green", "namespace": "web", "uid": "uid-1"},
            "status": {"devices": [{"driver": "surveyor.dev", "pool": "node1", "device": "green",
                "networkData": {"interfaceName": "net1", "hardwareAddress": "0a:58:c0:00:02:05",
                    "ips": ["192.0.2.5/24", "2001:db8::5/64"]}}]}})
    );
    let stored = api.get(CLAIMS, "db-green").unwrap();
    assert_eq!(
        stored["status"]["allocation"]["devices"]["results"][0]["device"],
        "green"
    );
    assert_eq!(
        stored["status"]["devices"][0]["networkData"]["interfaceName"],
        "net1"
    );
    assert_eq!(
        node.recorded()["uid-1"]["devices"][0]["reported"]["hardwareAddress"],
        "0a:58:c0:00:02:05"
    );

    // A restart reads the record: nothing to write.
    plugin.stop().await;
    let plugin = Plugin::start(&api, &node).await;
    let dra = dial(node.config.endpoint()).await;
    // Another claim prepared wakes the reporter; still nothing for db-green.
    api.put(CLAIMS, allocated("other", "uid-2", "green"));
    let answer = prepare(&dra, proto::DRA_V1, vec![claim("other", "uid-2")]).await;
    assert_eq!(answer.claims["uid-2"].error, "");
    // The same file rewritten with the same content: no write either.
    attach(&node, "c1", "0a:58:c0:00:02:05");
    // A new sandbox, with the API down: written once it is back.
    api.down.store(true, std::sync::atomic::Ordering::SeqCst);
    std::fs::remove_file(
        node.config
            .state_dir
            .join(surveyor::attachment::DIR)
            .join("c1:net1.json"),
    )
    .unwrap();
    attach(&node, "c2", "0a:58:c0:00:02:99");
    until(10, "an attempt while down", &api, || {
        api.requests
            .lock()
            .unwrap()
            .iter()
            .any(|r| r.path.ends_with("/status") && r.body.to_string().contains(":99"))
    })
    .await;
    api.down.store(false, std::sync::atomic::Ordering::SeqCst);
    until(10, "retried once the API is back", &api, || {
        let stored = api.get(CLAIMS, "db-green").unwrap();
        stored["status"]["devices"][0]["networkData"]["hardwareAddress"] == "0a:58:c0:00:02:99"
    })
    .await;
    // The first data was written once: not again after the restart, nor
    // for the file rewritten the same.
    let first = status_writes(&api)
        .iter()
        .filter(|r| r.body.to_string().contains("02:05"))
        .count();
    assert_eq!(first, 1);
    assert!(
        status_writes(&api)
            .iter()
            .all(|r| r.path == format!("{CLAIMS}/db-green/status")),
        "{:#?}",
        status_writes(&api)
    );
    plugin.stop().await;
    assert_declared(&api);
}

/// Each prepared device records the bandwidth its claim took, for the
/// CNI plugin to shape to: the allocation's consumed capacity on a shared
/// device, a numbered device's share of the link as the slice offers it;
/// once the interface is shaped, the claim shows to what.
#[tokio::test]
async fn a_claim_s_bandwidth_is_recorded_at_prepare_and_shown_once_shaped() {
    use surveyor::cni::bandwidth::{Limit, Limits, Source};
    let node = Node::new();
    // The survey the slice is made of: green on a 10G sv-a.
    let survey = json!({"summary": {"interfaces": 1, "up": 1, "neighbors": 0, "networks": "green"},
        "interfaces": [{"name": "sv-a", "index": 3, "kind": "veth", "operState": "up", "carrier": true,
            "mtu": 1500, "speedMbps": 10000}],
        "networks": {"green": {"device": "sv-a", "candidates": ["sv-a"]}}});
    std::fs::write(
        node.config.state_dir.join("survey.json"),
        survey.to_string(),
    )
    .unwrap();
    let api = FakeApi::default();
    let mut shared = reserved("db-green", "uid-1", "green");
    shared["status"]["allocation"]["devices"]["results"][0]["consumedCapacity"] =
        json!({"bandwidth": "2G"});
    shared["status"]["allocation"]["devices"]["results"][0]["shareID"] = json!("0f1e");
    api.put(CLAIMS, shared);
    let mut numbered = reserved("db-numbered", "uid-2", "green-3");
    numbered["status"]["reservedFor"][0]["uid"] = json!("pod-2");
    numbered["status"]["allocation"]["devices"]["config"] = json!([{"source": "FromClaim",
        "requests": ["net"], "opaque": {"driver": "surveyor.dev", "parameters":
            {"apiVersion": "surveyor.dev/v1alpha1", "kind": "BandwidthConfig", "directions": ["egress"]}}}]);
    api.put(CLAIMS, numbered);
    api.put(CLAIMS, reserved("db-default", "uid-3", "green"));
    let plugin = Plugin::start(&api, &node).await;
    let dra = dial(node.config.endpoint()).await;
    let claims = vec![
        claim("db-green", "uid-1"),
        claim("db-numbered", "uid-2"),
        claim("db-default", "uid-3"),
    ];
    let answer = prepare(&dra, proto::DRA_V1, claims).await;
    for uid in ["uid-1", "uid-2", "uid-3"] {
        assert_eq!(answer.claims[uid].error, "", "{uid}");
    }
    let recorded = node.recorded();
    assert_eq!(
        recorded["uid-1"]["devices"][0]["bandwidth"],
        2_000_000_000u64
    );
    assert!(recorded["uid-1"]["devices"][0].get("directions").is_none());
    // 10G offered as 32 numbered devices: 312.5M each, egress only.
    assert_eq!(recorded["uid-2"]["devices"][0]["bandwidth"], 312_500_000u64);
    assert_eq!(
        recorded["uid-2"]["devices"][0]["directions"],
        json!(["egress"])
    );
    // Asked for nothing on a shared device: the request policy's default.
    assert_eq!(
        recorded["uid-3"]["devices"][0]["bandwidth"],
        1_000_000_000u64
    );

    let mut record = surveyor::attachment::Attachment {
        pod_uid: "pod-1".into(),
        pod_namespace: "web".into(),
        pod_name: "db-0".into(),
        network: "green".into(),
        device: "sv-a".into(),
        interface: "net1".into(),
        mac: Some("0a:58:c0:00:02:05".into()),
        ips: vec![],
        claimed: true,
        shaped: Some(Limits {
            egress: Some(Limit {
                rate: 2_000_000_000,
                burst: 4_000_000,
                source: Source::Claim,
            }),
            ingress: Some(Limit {
                rate: 500_000_000,
                burst: 1_000_000,
                source: Source::RuntimeConfig,
            }),
        }),
    };
    write_record(&node, "c1", &record);
    until(10, "the claim's status", &api, || {
        !status_writes(&api).is_empty()
    })
    .await;
    let w = &status_writes(&api)[0];
    assert_eq!(
        w.body["status"]["devices"],
        json!([{"driver": "surveyor.dev", "pool": "node1", "device": "green", "shareID": "0f1e",
            "networkData": {"interfaceName": "net1", "hardwareAddress": "0a:58:c0:00:02:05"},
            "data": {"bandwidth": {"egress": {"rate": "2G", "source": "claim"},
                "ingress": {"rate": "500M", "source": "runtimeConfig"}}}}])
    );
    // The same interface unshaped (a new sandbox without the capability):
    // written again, without the data.
    record.shaped = None;
    write_record(&node, "c1", &record);
    until(10, "the second write", &api, || {
        status_writes(&api).len() == 2
    })
    .await;
    assert!(
        status_writes(&api)[1].body["status"]["devices"][0]
            .get("data")
            .is_none()
    );
    plugin.stop().await;
}

/// A claim replaced under its name (another UID) since it was prepared
/// gets nothing written into the new object, and is not tried again; a
/// record that is not JSON is skipped, not fatal.
#[tokio::test]
async fn a_replaced_claim_is_not_written_and_bad_records_are_skipped() {
    let node = Node::new();
    let api = FakeApi::default();
    api.put(CLAIMS, reserved("db-green", "uid-1", "green"));
    let plugin = Plugin::start(&api, &node).await;
    let dra = dial(node.config.endpoint()).await;
    let answer = prepare(&dra, proto::DRA_V1, vec![claim("db-green", "uid-1")]).await;
    assert_eq!(answer.claims["uid-1"].error, "");
    api.delete(CLAIMS, "db-green");
    api.put(CLAIMS, reserved("db-green", "uid-new", "green"));
    let dir = node.config.state_dir.join(surveyor::attachment::DIR);
    std::fs::write(dir.join("bad:net1.json"), b"{not json").unwrap();
    attach(&node, "c1", "0a:58:c0:00:02:05");
    until(10, "a status write", &api, || {
        !status_writes(&api).is_empty()
    })
    .await;
    let stored = api.get(CLAIMS, "db-green").unwrap();
    assert!(stored["status"].get("devices").is_none(), "{stored}");
    assert_eq!(
        node.recorded()["uid-1"]["devices"][0]["reported"]["interfaceName"],
        "net1",
        "a refused write is not retried"
    );
    // Another event: still the one attempt.
    attach(&node, "c1", "0a:58:c0:00:02:05");
    let answer = prepare(&dra, proto::DRA_V1, vec![claim("db-green", "uid-1")]).await;
    assert_eq!(answer.claims["uid-1"].error, "");
    plugin.stop().await;
    assert_eq!(status_writes(&api).len(), 1);
}

/// [`kubelet_py`] off the runtime's thread (the plugin serves on it).
async fn grpcio(args: &[&str]) -> (i32, Value) {
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        kubelet_py(&args)
    })
    .await
    .unwrap()
}

/// What the kubelet does: the registration socket dialled with its path as
/// :authority (raw, and percent-encoded as grpc-go sends it), and with
/// grpcio's default, localhost and an empty one; GetInfo answered and
/// NotifyRegistrationStatus taken each time. Then the DRA service on a
/// `unix:` target, v1 and v1beta1, prepared and unprepared, also with the
/// path as :authority.
#[tokio::test]
async fn grpcio_as_the_kubelet_registers_and_prepares_whatever_the_authority() {
    let node = Node::new();
    let api = FakeApi::default();
    api.put(CLAIMS, allocated("db-green", "uid-1", "green"));
    api.put(CLAIMS, allocated("web-green", "uid-2", "green"));
    let plugin = Plugin::start(&api, &node).await;
    let registration = node.config.registration();
    let registration = registration.to_str().unwrap();
    let endpoint = node.config.endpoint();
    let endpoint = endpoint.to_str().unwrap();

    for authority in ["path", "percent", "default", "localhost", "empty"] {
        let (code, out) = grpcio(&["register", registration, "--authority", authority]).await;
        assert_eq!(code, 0, "GetInfo with authority {authority}: {out}");
        assert_eq!(
            out["info"],
            json!({"type": "DRAPlugin", "name": "surveyor.dev", "endpoint": endpoint,
                "supported_versions": ["v1.DRAPlugin", "v1beta1.DRAPlugin"]}),
            "authority {authority}"
        );
    }

    for (api_version, authority, name, uid) in [
        ("v1", "default", "db-green", "uid-1"),
        ("v1beta1", "percent", "web-green", "uid-2"),
    ] {
        let claim = format!("web/{name}/{uid}");
        let args = [
            "--api",
            api_version,
            "--authority",
            authority,
            "--claim",
            &claim,
        ];
        let (code, out) = grpcio(&[&["prepare", endpoint][..], &args].concat()).await;
        assert_eq!(code, 0, "{out}");
        assert_eq!(
            out,
            json!({"claims": {uid: {"devices": [{"request_names": ["net"],
                "pool_name": "node1", "device_name": "green"}]}}}),
            "{api_version}"
        );
        assert_eq!(node.recorded()[uid]["devices"][0]["interface"], "sv-a");
        let (code, out) = grpcio(&[&["unprepare", endpoint][..], &args].concat()).await;
        assert_eq!(code, 0, "{out}");
        assert_eq!(out, json!({"claims": {uid: {}}}), "{api_version}");
        assert!(node.recorded().get(uid).is_none(), "{}", node.recorded());
    }
    plugin.stop().await;
}

/// Stopping, as in every rollout: the registration socket goes first (the
/// kubelet deregisters the plugin), a prepare in flight still gets its
/// answer while a new connection is refused, then the DRA socket goes and
/// nothing is left. A stale socket from a crash is replaced at the next
/// start.
#[tokio::test]
async fn stopping_removes_registration_first_finishes_prepares_then_the_dra_socket() {
    let node = Node::new();
    let api = FakeApi::default();
    api.put(CLAIMS, allocated("db-green", "uid-1", "green"));
    let (endpoint, registration) = (node.config.endpoint(), node.config.registration());
    let mut plugin = Plugin::start(&api, &node).await;
    let dra = dial(endpoint.clone()).await;
    api.hold_reads.send_replace(true);
    let in_flight = tokio::spawn(async move {
        prepare(&dra, proto::DRA_V1, vec![claim("db-green", "uid-1")]).await
    });
    until(10, "the claim read", &api, || {
        api.requests
            .lock()
            .unwrap()
            .iter()
            .any(|r| r.path == format!("{CLAIMS}/db-green"))
    })
    .await;

    plugin.stop_now();
    wait_gone(&registration).await;
    assert!(
        endpoint.exists(),
        "the DRA socket went before the prepare in flight was done"
    );
    assert!(!in_flight.is_finished());
    let refused = tokio::net::UnixStream::connect(&endpoint).await;
    assert_eq!(
        refused.map_err(|e| e.kind()).err(),
        Some(std::io::ErrorKind::ConnectionRefused),
        "a new connection while stopping"
    );
    api.hold_reads.send_replace(false);
    let answer = in_flight.await.unwrap();
    assert_eq!(answer.claims["uid-1"].error, "");
    assert_eq!(answer.claims["uid-1"].devices.len(), 1);
    plugin.stopped().await;
    assert!(!endpoint.exists() && !registration.exists());
    assert_eq!(node.recorded()["uid-1"]["devices"][0]["device"], "green");

    // A crash leaves both sockets: the next start replaces them.
    for path in [&endpoint, &registration] {
        std::os::unix::net::UnixListener::bind(path).unwrap();
    }
    let plugin = Plugin::start(&api, &node).await;
    let (code, out) = grpcio(&[
        "register",
        registration.to_str().unwrap(),
        "--authority",
        "percent",
    ])
    .await;
    assert_eq!(code, 0, "{out}");
    plugin.stop().await;
    assert!(!endpoint.exists() && !registration.exists());
}

async fn wait_gone(path: &Path) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while path.exists() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{} is still there",
            path.display()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The kubelet's say is not silent: what the kubelet tells the plugin is
/// tracked (GetInfo, then registered or refused; nothing within the grace
/// period is reported too).
#[tokio::test]
async fn the_plugin_tracks_what_the_kubelet_said() {
    let node = Node::new();
    let api = FakeApi::default();
    let mut config = node.config.clone();
    config.registration_grace = Duration::from_millis(300);
    let mut plugin = Plugin::start_with(&api, config).await;
    let registration = node.config.registration();
    let socket = registration.to_str().unwrap();
    let silent = wait_registration(&mut plugin, |r| matches!(r, Registration::Silent { .. })).await;
    assert_eq!(
        silent,
        Registration::Silent {
            asked: false,
            socket: socket.into(),
            grace: Duration::from_millis(300)
        }
    );
    let (code, out) = grpcio(&[
        "register",
        socket,
        "--authority",
        "path",
        "--refuse",
        "no version fits",
    ])
    .await;
    assert_eq!(code, 0, "{out}");
    assert_eq!(
        *plugin.registration.borrow(),
        Registration::Refused("no version fits".into())
    );
    let (code, out) = grpcio(&["register", socket, "--authority", "percent"]).await;
    assert_eq!(code, 0, "{out}");
    assert_eq!(*plugin.registration.borrow(), Registration::Registered);
    plugin.stop().await;
}

async fn wait_registration(
    plugin: &mut Plugin,
    want: impl Fn(&Registration) -> bool,
) -> Registration {
    tokio::time::timeout(Duration::from_secs(5), plugin.registration.wait_for(want))
        .await
        .expect("the registration state within 5 s")
        .expect("the plugin is running")
        .clone()
}

/// The agent as the DaemonSet runs it (`--dra`, with /readyz), against the
/// fake API over HTTP: while no kubelet registers the plugin it says so
/// (KubeletPlugin condition, metric, log, /readyz) once the grace period
/// is over; once grpcio registers it as the kubelet does, it is ready.
/// SIGTERM leaves no socket, and a restart that the kubelet registers
/// again writes nothing to the API.
#[test]
fn the_agent_says_whether_the_kubelet_registered_it_and_leaves_no_socket() {
    use support::fake_api::{MAPS, NODES, kubeconfig, map, node};
    let ns = support::Netns::new("kubelet-agent");
    let peer = support::Netns::new("kubelet-agent-p");
    support::cable(&ns, "sv-a", &peer, "p0");
    let dir = tempfile::tempdir().unwrap();
    let dirs = dir.path().to_path_buf();
    let name = ns.name.clone();
    ns.block_on(move || async move {
        let api = FakeApi::default();
        api.put(NODES, node("node1", json!({})));
        api.put(MAPS, map("green", "sv-a"));
        let addr = api.serve_http().await;
        let config = dirs.join("kubeconfig");
        std::fs::write(&config, kubeconfig(addr)).unwrap();
        // The agent's API keeps serving on this thread meanwhile.
        tokio::task::spawn_blocking(move || agent_and_kubelet(&name, &api, &config, &dirs))
            .await
            .unwrap();
    });
}

/// The KubeletPlugin condition of node1's NodeSurvey.
fn kubelet_condition(api: &FakeApi) -> Option<Value> {
    api.get(support::fake_api::SURVEYS, "node1").and_then(|s| {
        s["status"]["conditions"]
            .as_array()?
            .iter()
            .find(|c| c["type"] == "KubeletPlugin")
            .cloned()
    })
}

fn wait_until(agent: &support::AgentProcess, what: &str, cond: impl Fn() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    while !cond() {
        assert!(
            std::time::Instant::now() < deadline,
            "{what}: not within 15 s\nagent log:\n{}",
            agent.log()
        );
        std::thread::sleep(Duration::from_millis(25));
    }
}

fn agent_and_kubelet(ns: &str, api: &FakeApi, config: &Path, dir: &Path) {
    use support::{AgentProcess, free_port, http_get};
    let ns = support::Netns::existing(ns);
    let port = free_port();
    let (plugins, registry) = (dir.join("plugins"), dir.join("registry"));
    let listen = format!("127.0.0.1:{port}");
    let args = [
        "--include",
        "sv-*",
        "--no-lldp",
        "--dra",
        "--listen",
        &listen,
        "--kubelet-plugins-dir",
        plugins.to_str().unwrap(),
        "--kubelet-registry-dir",
        registry.to_str().unwrap(),
        "--kubelet-registration-grace",
        "2s",
    ];
    let mut agent = AgentProcess::start_cluster(&ns, config, &args);
    let endpoint = plugins.join("surveyor.dev/dra.sock");
    let socket = registry.join("surveyor.dev-reg.sock");
    let socket_str = socket.to_str().unwrap();
    wait_until(&agent, "NotRegistered in the NodeSurvey", || {
        kubelet_condition(api).is_some_and(|c| c["reason"] == "NotRegistered")
    });
    let c = kubelet_condition(api).unwrap();
    assert_eq!(c["status"], "False");
    let message = c["message"].as_str().unwrap();
    assert!(message.contains(socket_str), "{message}");
    assert!(message.contains("--kubelet-registry-dir"), "{message}");
    let (code, body) = http_get(port, "/readyz");
    assert_eq!(code, 503, "{body}");
    assert!(body.contains("has not registered the DRA plugin"), "{body}");
    let (_, metrics) = http_get(port, "/metrics");
    assert!(
        metrics.contains("surveyor_kubelet_plugin_registered 0"),
        "{metrics}"
    );
    assert!(
        agent
            .log()
            .contains("has not asked for DRA driver surveyor.dev's info"),
        "{}",
        agent.log()
    );

    // The kubelet, as it dials: the path, percent-encoded, as :authority.
    let (code, out) = kubelet_py(&["register", socket_str, "--authority", "percent"]);
    assert_eq!(code, 0, "{out}");
    wait_until(&agent, "Registered in the NodeSurvey", || {
        kubelet_condition(api).is_some_and(|c| c["status"] == "True" && c["reason"] == "Registered")
    });
    let registered = kubelet_condition(api).unwrap();
    assert_eq!(http_get(port, "/readyz").0, 200);
    assert!(
        http_get(port, "/metrics")
            .1
            .contains("surveyor_kubelet_plugin_registered 1")
    );

    // A rollout: SIGTERM, no socket left; the next agent, registered
    // again, changes nothing in the API.
    let status = agent.signal(nix::sys::signal::Signal::SIGTERM);
    assert!(status.success(), "{status:?}\n{}", agent.log());
    assert!(
        !socket.exists() && !endpoint.exists(),
        "sockets left behind:\n{}",
        agent.log()
    );
    let before = api.writes().len();
    agent.restart();
    wait_until(&agent, "the sockets again", || {
        socket.exists() && endpoint.exists()
    });
    let (code, out) = kubelet_py(&["register", socket_str, "--authority", "path"]);
    assert_eq!(code, 0, "{out}");
    wait_until(&agent, "ready again", || http_get(port, "/readyz").0 == 200);
    // The writer paces writes 1 s apart: give one time to show.
    std::thread::sleep(Duration::from_millis(2500));
    // (The slice task's dry run, which stores nothing, aside.)
    let after: Vec<Recorded> = api.writes()[before..]
        .iter()
        .filter(|r| !r.query.contains_key("dryRun"))
        .cloned()
        .collect();
    assert!(after.is_empty(), "{after:#?}");
    assert_eq!(kubelet_condition(api).unwrap(), registered);
}
