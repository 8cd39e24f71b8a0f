//! A fake Kubernetes API server for kube's `Client::new` over a tower-test
//! mock: it answers the agent's lists, watches and patches and records
//! every request, so tests and benchmarks can assert and count them. And a
//! harness running the cluster-mode agent against it in a namespace.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt as _;
use http::{Request, Response, StatusCode};
use http_body::Frame;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt as _, Full, StreamBody};
use kube::Client;
use serde_json::{Value, json};
use surveyor::agent::cluster::{self, Pace};
use surveyor::agent::metrics::Metrics;
use surveyor::agent::{Agent, Cluster, Config, Source};
use surveyor::survey::SurveyFilter;

use super::{Netns, cable};

type Body = UnsyncBoxBody<Bytes, Infallible>;

/// One request the agent made.
#[derive(Clone, Debug)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    pub query: BTreeMap<String, String>,
    pub body: Value,
}

/// The fake API server's knobs and its record.
#[derive(Clone, Default)]
pub struct FakeApi {
    pub requests: Arc<Mutex<Vec<Recorded>>>,
    /// The open NetworkMap watch, to push events into.
    pub map_watch: Arc<Mutex<Option<futures::channel::mpsc::UnboundedSender<Value>>>>,
    /// Answer the next N writes with 500.
    pub fail_writes: Arc<AtomicU32>,
    /// Never answer the next N writes.
    pub hang_writes: Arc<AtomicU32>,
    /// 503 for everything.
    pub down: Arc<AtomicBool>,
    pub maps: Vec<Value>,
    pub node_labels: Value,
}

impl FakeApi {
    pub fn writes(&self) -> Vec<Recorded> {
        self.requests
            .lock()
            .unwrap()
            .iter()
            .filter(|r| r.method == "PATCH")
            .cloned()
            .collect()
    }

    pub fn writes_to(&self, suffix: &str) -> Vec<Recorded> {
        self.writes()
            .into_iter()
            .filter(|r| r.path.ends_with(suffix))
            .collect()
    }

    /// Pushes a watch event (`ADDED`, `MODIFIED`, `DELETED`) for a map.
    pub fn push(&self, kind: &str, map: Value) {
        let tx = self.map_watch.lock().unwrap();
        tx.as_ref()
            .expect("a NetworkMap watch is open")
            .unbounded_send(json!({"type": kind, "object": map}))
            .unwrap();
    }

    /// Starts answering on a mock client.
    pub fn serve(self) -> Client {
        let (service, mut handle) =
            tower_test::mock::pair::<Request<kube::client::Body>, Response<Body>>();
        tokio::spawn(async move {
            let mut held = Vec::new();
            while let Some((request, respond)) = handle.next_request().await {
                let (parts, body) = request.into_parts();
                let bytes = body.collect_bytes().await.unwrap_or_default();
                let query: BTreeMap<String, String> = parts
                    .uri
                    .query()
                    .unwrap_or("")
                    .split('&')
                    .filter_map(|kv| kv.split_once('='))
                    .map(|(k, v)| (k.to_string(), v.replace("%3D", "=").replace("%2F", "/")))
                    .collect();
                let rec = Recorded {
                    method: parts.method.to_string(),
                    path: parts.uri.path().to_string(),
                    query,
                    body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
                };
                self.requests.lock().unwrap().push(rec.clone());
                if self.down.load(Ordering::SeqCst) {
                    respond.send_response(status(503, "the API is down"));
                    continue;
                }
                match (rec.method.as_str(), rec.path.as_str()) {
                    ("GET", "/apis/surveyor.dev/v1alpha1/networkmaps") if rec.query.contains_key("watch") => {
                        let (tx, rx) = futures::channel::mpsc::unbounded::<Value>();
                        *self.map_watch.lock().unwrap() = Some(tx);
                        let lines = rx.map(|e| Ok::<_, Infallible>(Frame::data(Bytes::from(format!("{e}\n")))));
                        respond.send_response(Response::new(StreamBody::new(lines).boxed_unsync()));
                    }
                    ("GET", "/apis/surveyor.dev/v1alpha1/networkmaps") => respond.send_response(json_response(json!({
                        "apiVersion": "surveyor.dev/v1alpha1", "kind": "NetworkMapList",
                        "metadata": {"resourceVersion": "1"}, "items": self.maps,
                    }))),
                    ("GET", "/api/v1/nodes") if rec.query.contains_key("watch") => {
                        // A watch that stays open and quiet.
                        let quiet = futures::stream::pending::<Result<Frame<Bytes>, Infallible>>();
                        respond.send_response(Response::new(StreamBody::new(quiet).boxed_unsync()));
                    }
                    ("GET", "/api/v1/nodes") => respond.send_response(json_response(json!({
                        "apiVersion": "v1", "kind": "NodeList", "metadata": {"resourceVersion": "1"},
                        "items": [{"apiVersion": "v1", "kind": "Node", "metadata": {"name": "node1", "labels": self.node_labels}}],
                    }))),
                    ("PATCH", _) => {
                        if self.hang_writes.load(Ordering::SeqCst) > 0 {
                            self.hang_writes.fetch_sub(1, Ordering::SeqCst);
                            held.push(respond);
                        } else if self.fail_writes.load(Ordering::SeqCst) > 0 {
                            self.fail_writes.fetch_sub(1, Ordering::SeqCst);
                            respond.send_response(status(500, "etcd is having a moment"));
                        } else {
                            respond.send_response(json_response(rec.body.clone()));
                        }
                    }
                    _ => respond.send_response(status(404, "not in this fake")),
                }
            }
        });
        Client::new(service, "default")
    }
}

fn json_response(v: Value) -> Response<Body> {
    Response::new(Full::new(Bytes::from(v.to_string())).boxed_unsync())
}

fn status(code: u16, message: &str) -> Response<Body> {
    let body = json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": message, "reason": "InternalError", "code": code});
    let mut r = json_response(body);
    *r.status_mut() = StatusCode::from_u16(code).unwrap();
    r
}

pub fn map(name: &str, glob: &str) -> Value {
    json!({"apiVersion": "surveyor.dev/v1alpha1", "kind": "NetworkMap",
        "metadata": {"name": name, "resourceVersion": "2"}, "spec": {"match": {"names": [glob]}}})
}

/// What a test gets: the fake API, the state dir, the node namespace name.
pub struct Run {
    pub api: FakeApi,
    pub state: std::path::PathBuf,
    pub ns: String,
}

impl Run {
    pub fn ip(&self, args: &[&str]) {
        super::ip_in(&self.ns, args);
    }

    /// A state file, or null before the agent wrote it.
    pub fn read(&self, file: &str) -> Value {
        match std::fs::read(self.state.join(file)) {
            Ok(bytes) => serde_json::from_slice(&bytes).unwrap(),
            Err(_) => Value::Null,
        }
    }

    pub fn snapshot(&self) -> Value {
        self.read("networks.json")
    }

    pub fn survey(&self) -> Value {
        self.read("survey.json")
    }

    /// Waits up to `secs` for `cond`.
    pub async fn until(&self, secs: u64, what: &str, cond: impl Fn(&Run) -> bool) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
        while !cond(self) {
            assert!(
                tokio::time::Instant::now() < deadline,
                "{what}: not within {secs} s; writes: {:#?}",
                self.api.writes()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// Runs the agent in a fresh node namespace (veths sv-a and sv-b, both up)
/// against `api`, with `saved` maps in maps.json, then `test`.
pub fn with_agent<F, Fut>(tag: &str, api: FakeApi, saved: Option<(Value, Value)>, test: F)
where
    F: FnOnce(Run) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()>,
{
    let node = Netns::new(tag);
    let peer = Netns::new(&format!("{tag}-p"));
    cable(&node, "sv-a", &peer, "p0");
    cable(&node, "sv-b", &peer, "p1");
    with_agent_in(&node, api, saved, false, test);
}

/// Runs the cluster-mode agent (surveying `sv*`, LLDP when `lldp`) in
/// namespace `node` against `api`, then `test`; stops it after.
pub fn with_agent_in<F, Fut>(
    node: &Netns,
    api: FakeApi,
    saved: Option<(Value, Value)>,
    lldp: bool,
    test: F,
) where
    F: FnOnce(Run) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()>,
{
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    if let Some((maps, node)) = saved {
        std::fs::create_dir_all(&state).unwrap();
        std::fs::write(state.join("maps.json"), maps.to_string()).unwrap();
        std::fs::write(state.join("node.json"), node.to_string()).unwrap();
    }
    let ns = node.name.clone();
    node.block_on(move || async move {
        let client = api.clone().serve();
        let metrics = Arc::new(Metrics::new());
        let (store, remembered) = cluster::remembered(&state, "node1");
        let config = Config {
            node: "node1".into(),
            labels: remembered.unwrap_or_default(),
            state_dir: state.clone(),
            filter: SurveyFilter::new(false, &["sv*".into()], &[]).unwrap(),
            lldp,
        };
        let (desired, rx) = tokio::sync::watch::channel(None);
        let pace = Pace {
            interval: Duration::from_secs(1),
            timeout: Duration::from_millis(500),
        };
        cluster::spawn_publisher(client.clone(), "node1".into(), rx, metrics.clone(), pace);
        let source = Source::Cluster(Cluster {
            store,
            maps: cluster::watch_maps(client.clone()),
            node: cluster::watch_node(client, "node1"),
            desired,
        });
        let mut agent = Agent::start(config, metrics).await.unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let running = tokio::spawn(async move {
            agent
                .run(source, async move {
                    let _ = stopped.await;
                })
                .await
                .unwrap();
        });
        test(Run {
            api: api.clone(),
            state,
            ns,
        })
        .await;
        assert_declared(&api);
        let _ = stop.send(());
        running.await.unwrap();
    });
    drop(dir);
}

/// (group, resource, verb) of a recorded request, as RBAC would see it.
pub fn rbac(r: &Recorded) -> (String, String, String) {
    let parts: Vec<&str> = r.path.trim_start_matches('/').split('/').collect();
    let (group, rest) = match parts.as_slice() {
        ["api", "v1", rest @ ..] => ("", rest),
        ["apis", group, _version, rest @ ..] => (*group, rest),
        _ => panic!("unexpected path {}", r.path),
    };
    let (resource, named) = match rest {
        [resource] => (resource.to_string(), false),
        [resource, _name] => (resource.to_string(), true),
        [resource, _name, sub] => (format!("{resource}/{sub}"), true),
        _ => panic!("unexpected path {}", r.path),
    };
    let verb = match (r.method.as_str(), named, r.query.contains_key("watch")) {
        ("GET", _, true) => "watch",
        ("GET", false, false) => "list",
        ("GET", true, false) => "get",
        ("PATCH", _, _) => "patch",
        (m, _, _) => panic!("unexpected method {m}"),
    };
    (group.to_string(), resource, verb.to_string())
}

/// Every request recorded is one the agent declares (and RBAC grants).
pub fn assert_declared(api: &FakeApi) {
    for r in api.requests.lock().unwrap().iter() {
        let (group, resource, verb) = rbac(r);
        let declared = cluster::API_REQUESTS.iter().any(|(g, res, verbs)| {
            *g == group && *res == resource && verbs.contains(&verb.as_str())
        });
        assert!(
            declared,
            "undeclared request {verb} {group}/{resource}: {r:?}"
        );
    }
}
