//! A fake Kubernetes API server for kube's `Client::new` over a tower-test
//! mock. It keeps objects (NetworkMaps, NodeSurveys, Nodes, Leases, ...)
//! with resource versions, answers lists, watches (with events from a
//! given resource version on), gets, paged and metadata-only lists,
//! server-side apply (fields owned per field manager: what a manager stops
//! applying goes, a non-forced apply of a field another manager owns with
//! another value is a 409 conflict; the status subresource apart), JSON
//! merge and strategic merge patches (nulls delete), creates, replaces with
//! optimistic concurrency, and deletes; it records every request, with the
//! client that made it, so tests and benchmarks assert and count them. A
//! client can be cut off (a partition). And a harness running the
//! cluster-mode agent against it in a namespace.

use std::collections::{BTreeMap, BTreeSet};
use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt as _;
use futures::channel::mpsc::{UnboundedSender, unbounded};
use http::{Request, Response, StatusCode};
use http_body::Frame;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt as _, Full, StreamBody};
use kube::Client;
use serde_json::{Value, json};
use surveyor::agent::cluster;
use surveyor::agent::metrics::Metrics;
use surveyor::agent::slices::{SliceOptions, spawn_slices};
use surveyor::agent::writer::{Pace, spawn_publisher};
use surveyor::agent::{Agent, Cluster, Config, Source};
use surveyor::survey::SurveyFilter;

use super::{Netns, cable};

type Body = UnsyncBoxBody<Bytes, Infallible>;

pub const MAPS: &str = "/apis/surveyor.dev/v1alpha1/networkmaps";
pub const SURVEYS: &str = "/apis/surveyor.dev/v1alpha1/nodesurveys";
pub const NODES: &str = "/api/v1/nodes";
pub const LEASES: &str = "/apis/coordination.k8s.io/v1/namespaces/surveyor/leases";
pub const SLICES: &str = "/apis/resource.k8s.io/v1/resourceslices";
pub const DEVICE_CLASSES: &str = "/apis/resource.k8s.io/v1/deviceclasses";
pub const CLAIMS: &str = "/apis/resource.k8s.io/v1/namespaces/web/resourceclaims";
pub const DAEMONSETS: &str = "/apis/apps/v1/namespaces/surveyor/daemonsets";
pub const DEPLOYMENTS: &str = "/apis/apps/v1/namespaces/surveyor/deployments";
/// Events of cluster-scoped objects live in `default`.
pub const EVENTS: &str = "/apis/events.k8s.io/v1/namespaces/default/events";

/// The collections served, with their list kinds.
const COLLECTIONS: &[(&str, &str, &str)] = &[
    (MAPS, "surveyor.dev/v1alpha1", "NetworkMapList"),
    (SURVEYS, "surveyor.dev/v1alpha1", "NodeSurveyList"),
    (NODES, "v1", "NodeList"),
    (LEASES, "coordination.k8s.io/v1", "LeaseList"),
    (SLICES, "resource.k8s.io/v1", "ResourceSliceList"),
    (DEVICE_CLASSES, "resource.k8s.io/v1", "DeviceClassList"),
    (CLAIMS, "resource.k8s.io/v1", "ResourceClaimList"),
    (DAEMONSETS, "apps/v1", "DaemonSetList"),
    (DEPLOYMENTS, "apps/v1", "DeploymentList"),
    (EVENTS, "events.k8s.io/v1", "EventList"),
];

/// One request a client made.
#[derive(Clone, Debug)]
pub struct Recorded {
    /// Which client ([`FakeApi::serve`] numbers them from 0).
    pub client: usize,
    pub at: std::time::Instant,
    pub method: String,
    pub path: String,
    pub query: BTreeMap<String, String>,
    pub content_type: String,
    pub body: Value,
}

type Path = Vec<String>;

/// Client `id`'s cut-off switch.
fn cut_here_of(api: &FakeApi, id: usize) -> Arc<AtomicBool> {
    api.cuts.lock().unwrap()[id].clone()
}

/// A kubeconfig for a process to reach [`FakeApi::serve_http`].
pub fn kubeconfig(addr: std::net::SocketAddr) -> String {
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster: {{server: \"http://{addr}\"}}\n\
         users:\n- name: fake\n  user: {{}}\ncontexts:\n- name: fake\n  context: {{cluster: fake, user: fake}}\n\
         current-context: fake\n"
    )
}

/// Metadata-only (`as=PartialObjectMetadata`) when the client asks.
fn as_meta(obj: &Value) -> Value {
    json!({"apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadata", "metadata": obj["metadata"]})
}

#[derive(Default)]
struct Collection {
    objects: BTreeMap<String, Value>,
    /// Every change: (resource version, event type, object).
    log: Vec<(u64, &'static str, Value)>,
    /// (which objects, metadata only, events).
    watchers: Vec<(Filter, bool, UnboundedSender<Value>)>,
    /// Per object, per field manager: the fields it owns.
    owned: BTreeMap<String, BTreeMap<String, BTreeSet<Path>>>,
}

#[derive(Default)]
struct Store {
    rv: u64,
    uids: u64,
    collections: BTreeMap<&'static str, Collection>,
    /// As an apiserver without the DRAConsumableCapacity gate: devices of
    /// a ResourceSlice lose `allowMultipleAllocations` and request
    /// policies when written.
    without_consumable_capacity: bool,
}

impl Store {
    fn new() -> Self {
        let mut s = Store::default();
        for (path, _, _) in COLLECTIONS {
            s.collections.insert(path, Collection::default());
        }
        s
    }

    /// Stores `obj` (new resource version; a uid and creation time when
    /// new) and tells the watchers.
    fn commit(&mut self, collection: &'static str, mut obj: Value) -> Value {
        self.drop_gated(collection, &mut obj);
        self.rv += 1;
        let rv = self.rv;
        let name = obj["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let c = self
            .collections
            .get_mut(collection)
            .expect("known collection");
        let kind = if c.objects.contains_key(&name) {
            "MODIFIED"
        } else {
            self.uids += 1;
            if obj["metadata"]["uid"].is_null() {
                obj["metadata"]["uid"] = json!(format!("uid-{}-{}", name, self.uids));
            }
            obj["metadata"]["creationTimestamp"] = json!("2026-12-01T00:00:00Z");
            "ADDED"
        };
        obj["metadata"]["resourceVersion"] = json!(rv.to_string());
        c.objects.insert(name.clone(), obj.clone());
        c.log.push((rv, kind, obj.clone()));
        notify(c, kind, &obj);
        obj
    }

    fn drop_gated(&self, collection: &str, obj: &mut Value) {
        if collection != SLICES || !self.without_consumable_capacity {
            return;
        }
        for device in obj["spec"]["devices"].as_array_mut().into_iter().flatten() {
            if let Some(d) = device.as_object_mut() {
                d.remove("allowMultipleAllocations");
            }
            for capacity in device["capacity"]
                .as_object_mut()
                .into_iter()
                .flat_map(|c| c.values_mut())
            {
                if let Some(c) = capacity.as_object_mut() {
                    c.remove("requestPolicy");
                }
            }
        }
    }

    fn remove(&mut self, collection: &'static str, name: &str) -> Option<Value> {
        self.rv += 1;
        let rv = self.rv;
        let c = self
            .collections
            .get_mut(collection)
            .expect("known collection");
        let mut obj = c.objects.remove(name)?;
        c.owned.remove(name);
        obj["metadata"]["resourceVersion"] = json!(rv.to_string());
        c.log.push((rv, "DELETED", obj.clone()));
        notify(c, "DELETED", &obj);
        Some(obj)
    }
}

/// The objects a list or watch asks for: `fieldSelector=metadata.name=`
/// or `=spec.driver=` (ResourceSlices), and `labelSelector=<key>` (the
/// label exists), as far as tests need.
#[derive(Clone, Debug, Default)]
struct Filter {
    name: Option<String>,
    driver: Option<String>,
    label: Option<String>,
}

impl Filter {
    fn of(query: &BTreeMap<String, String>) -> Filter {
        let field = |key: &str| {
            query
                .get("fieldSelector")
                .and_then(|f| f.strip_prefix(key))
                .map(str::to_string)
        };
        Filter {
            name: field("metadata.name="),
            driver: field("spec.driver="),
            label: query.get("labelSelector").cloned(),
        }
    }

    fn matches(&self, obj: &Value) -> bool {
        self.name
            .as_deref()
            .is_none_or(|n| obj["metadata"]["name"] == n)
            && self
                .driver
                .as_deref()
                .is_none_or(|d| obj["spec"]["driver"] == d)
            && self
                .label
                .as_deref()
                .is_none_or(|l| obj["metadata"]["labels"].get(l).is_some())
    }
}

fn notify(c: &mut Collection, kind: &str, obj: &Value) {
    c.watchers.retain(|(filter, meta, tx)| {
        if !filter.matches(obj) {
            return !tx.is_closed();
        }
        let obj = if *meta { as_meta(obj) } else { obj.clone() };
        tx.unbounded_send(json!({"type": kind, "object": obj}))
            .is_ok()
    });
}

/// The fake API server's knobs and its record.
#[derive(Clone)]
pub struct FakeApi {
    pub requests: Arc<Mutex<Vec<Recorded>>>,
    store: Arc<Mutex<Store>>,
    /// Answer the next N writes with 500.
    pub fail_writes: Arc<AtomicU32>,
    /// Never answer the next N writes.
    pub hang_writes: Arc<AtomicU32>,
    /// 503 for everything.
    pub down: Arc<AtomicBool>,
    /// While true, GETs are answered only once it is false again (on the
    /// mock client of [`FakeApi::serve`]).
    pub hold_reads: Arc<tokio::sync::watch::Sender<bool>>,
    /// Per client: cut off (503 for its requests, its watches end).
    cuts: Arc<Mutex<Vec<Arc<AtomicBool>>>>,
}

impl Default for FakeApi {
    fn default() -> Self {
        FakeApi {
            requests: Arc::default(),
            store: Arc::new(Mutex::new(Store::new())),
            fail_writes: Arc::default(),
            hang_writes: Arc::default(),
            down: Arc::default(),
            hold_reads: Arc::new(tokio::sync::watch::Sender::new(false)),
            cuts: Arc::default(),
        }
    }
}

/// A Node object.
pub fn node(name: &str, labels: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": name, "labels": labels}})
}

pub fn map(name: &str, glob: &str) -> Value {
    json!({"apiVersion": "surveyor.dev/v1alpha1", "kind": "NetworkMap",
        "metadata": {"name": name}, "spec": {"match": {"names": [glob]}}})
}

impl FakeApi {
    /// An API with these maps and Node `node1` carrying `labels`.
    pub fn with(maps: Vec<Value>, labels: Value) -> FakeApi {
        let api = FakeApi::default();
        for m in maps {
            api.put(MAPS, m);
        }
        api.put(NODES, node("node1", labels));
        api
    }

    /// Creates or replaces an object, as an admin's `kubectl apply` would
    /// (an object given without a status keeps the one it has).
    pub fn put(&self, collection: &'static str, obj: Value) -> Value {
        let mut store = self.store.lock().unwrap();
        let name = obj["metadata"]["name"].as_str().unwrap().to_string();
        let mut obj = obj;
        if let Some(old) = store.collections[collection].objects.get(&name) {
            // Keep what the server owns.
            for k in ["uid", "creationTimestamp"] {
                obj["metadata"][k] = old["metadata"][k].clone();
            }
            if obj.get("status").is_none() {
                if let Some(status) = old.get("status") {
                    obj["status"] = status.clone();
                }
            }
            let generation = old["metadata"]["generation"].as_u64().unwrap_or(1);
            let spec_changed = old.get("spec") != obj.get("spec");
            obj["metadata"]["generation"] = json!(generation + u64::from(spec_changed));
        } else {
            obj["metadata"]["generation"] = json!(1);
        }
        store.commit(collection, obj)
    }

    /// Plays an apiserver without the DRAConsumableCapacity feature gate
    /// (`true`): ResourceSlice devices lose `allowMultipleAllocations`.
    pub fn without_consumable_capacity(&self, off: bool) {
        self.store.lock().unwrap().without_consumable_capacity = off;
    }

    /// Deletes an object, as `kubectl delete` would.
    pub fn delete(&self, collection: &'static str, name: &str) -> Option<Value> {
        self.store.lock().unwrap().remove(collection, name)
    }

    /// The object as the server holds it now.
    pub fn get(&self, collection: &'static str, name: &str) -> Option<Value> {
        self.store.lock().unwrap().collections[collection]
            .objects
            .get(name)
            .cloned()
    }

    /// Every object of a collection.
    pub fn list(&self, collection: &'static str) -> Vec<Value> {
        self.store.lock().unwrap().collections[collection]
            .objects
            .values()
            .cloned()
            .collect()
    }

    /// Pushes a NetworkMap change (`ADDED`, `MODIFIED`, `DELETED`).
    pub fn push(&self, kind: &str, obj: Value) {
        match kind {
            "DELETED" => {
                self.delete(MAPS, obj["metadata"]["name"].as_str().unwrap());
            }
            _ => {
                self.put(MAPS, obj);
            }
        }
    }

    pub fn writes(&self) -> Vec<Recorded> {
        self.requests
            .lock()
            .unwrap()
            .iter()
            .filter(|r| matches!(r.method.as_str(), "PATCH" | "POST" | "PUT" | "DELETE"))
            .cloned()
            .collect()
    }

    pub fn writes_to(&self, suffix: &str) -> Vec<Recorded> {
        self.writes()
            .into_iter()
            .filter(|r| r.path.ends_with(suffix))
            .collect()
    }

    /// How many clients were served.
    pub fn clients(&self) -> usize {
        self.cuts.lock().unwrap().len()
    }

    /// Starts answering on a mock client.
    pub fn serve(&self) -> Client {
        self.serve_cuttable().0
    }

    /// A client and its switch: set, it is cut off from the API (every
    /// request answered 503, its watches ended), as a partition would.
    pub fn serve_cuttable(&self) -> (Client, Arc<AtomicBool>) {
        let (service, mut handle) =
            tower_test::mock::pair::<Request<kube::client::Body>, Response<Body>>();
        let api = self.clone();
        let cut = Arc::new(AtomicBool::new(false));
        let id = {
            let mut cuts = self.cuts.lock().unwrap();
            cuts.push(cut.clone());
            cuts.len() - 1
        };
        tokio::spawn(async move {
            let mut held = Vec::new();
            while let Some((request, respond)) = handle.next_request().await {
                let (parts, body) = request.into_parts();
                let bytes = body.collect_bytes().await.unwrap_or_default();
                match api.handle(id, &cut_here_of(&api, id), &parts, &bytes) {
                    Some(response) if parts.method == "GET" && *api.hold_reads.borrow() => {
                        let mut held = api.hold_reads.subscribe();
                        tokio::spawn(async move {
                            let _ = held.wait_for(|h| !*h).await;
                            respond.send_response(response);
                        });
                    }
                    Some(response) => respond.send_response(response),
                    None => held.push(respond),
                }
            }
        });
        (Client::new(service, "default"), cut)
    }

    /// Serves this API over real HTTP on a free loopback port, for a
    /// `surveyor` process (a kubeconfig from [`kubeconfig`]); its requests
    /// are recorded as one more client's.
    pub async fn serve_http(&self) -> std::net::SocketAddr {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let id = {
            let mut cuts = self.cuts.lock().unwrap();
            cuts.push(Arc::new(AtomicBool::new(false)));
            cuts.len() - 1
        };
        let api = self.clone();
        let app = axum::Router::new().fallback(move |request: axum::extract::Request| {
            let api = api.clone();
            async move {
                let (parts, body) = request.into_parts();
                let bytes = axum::body::to_bytes(body, usize::MAX)
                    .await
                    .unwrap_or_default();
                match api.handle(id, &cut_here_of(&api, id), &parts, &bytes) {
                    Some(response) => response.map(axum::body::Body::new),
                    None => std::future::pending().await,
                }
            }
        });
        tokio::spawn(async move { axum::serve(listener, app).await });
        addr
    }

    /// Records a request and answers it; `None`: never (a hung write).
    fn handle(
        &self,
        id: usize,
        cut: &Arc<AtomicBool>,
        parts: &http::request::Parts,
        bytes: &[u8],
    ) -> Option<Response<Body>> {
        let header = |name: http::header::HeaderName| {
            parts
                .headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_string()
        };
        let (content_type, accept) = (
            header(http::header::CONTENT_TYPE),
            header(http::header::ACCEPT),
        );
        let query: BTreeMap<String, String> = parts
            .uri
            .query()
            .unwrap_or("")
            .split('&')
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| (k.to_string(), decode(v)))
            .collect();
        let rec = Recorded {
            client: id,
            at: std::time::Instant::now(),
            method: parts.method.to_string(),
            path: parts.uri.path().to_string(),
            query,
            content_type,
            body: serde_json::from_slice(bytes).unwrap_or(Value::Null),
        };
        self.requests.lock().unwrap().push(rec.clone());
        if self.down.load(Ordering::SeqCst) || cut.load(Ordering::SeqCst) {
            return Some(status(503, "ServiceUnavailable", "the API is down"));
        }
        if rec.method != "GET" {
            if self.hang_writes.load(Ordering::SeqCst) > 0 {
                self.hang_writes.fetch_sub(1, Ordering::SeqCst);
                return None;
            }
            if self.fail_writes.load(Ordering::SeqCst) > 0 {
                self.fail_writes.fetch_sub(1, Ordering::SeqCst);
                return Some(status(500, "InternalError", "etcd is having a moment"));
            }
        }
        let meta = accept.contains("as=PartialObjectMetadata");
        Some(self.answer(&rec, meta, cut))
    }

    fn answer(&self, rec: &Recorded, meta: bool, cut: &Arc<AtomicBool>) -> Response<Body> {
        let Some((collection, name, sub)) = route(&rec.path) else {
            return status(404, "NotFound", "not in this fake");
        };
        let mut store = self.store.lock().unwrap();
        let filter = Filter::of(&rec.query);
        match (rec.method.as_str(), name, sub) {
            ("GET", None, None) if rec.query.contains_key("watch") => {
                let from: u64 = rec
                    .query
                    .get("resourceVersion")
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0);
                let (tx, rx) = unbounded::<Value>();
                let c = store.collections.get_mut(collection).unwrap();
                for (rv, kind, obj) in &c.log {
                    if *rv > from && filter.matches(obj) {
                        let obj = if meta { as_meta(obj) } else { obj.clone() };
                        let _ = tx.unbounded_send(json!({"type": kind, "object": obj}));
                    }
                }
                c.watchers.push((filter, meta, tx));
                // A cut client's watch ends (its connection is gone).
                let cut = cut.clone();
                let lines = rx
                    .take_while(move |_| std::future::ready(!cut.load(Ordering::SeqCst)))
                    .map(|e| Ok::<_, Infallible>(Frame::data(Bytes::from(format!("{e}\n")))));
                Response::new(StreamBody::new(lines).boxed_unsync())
            }
            ("GET", None, None) => {
                let (_, api_version, kind) =
                    COLLECTIONS.iter().find(|c| c.0 == collection).unwrap();
                // Pages of `limit`, continuing after the name `continue`
                // gives (the API's tokens are opaque; ours is that name).
                let limit: usize = rec
                    .query
                    .get("limit")
                    .and_then(|l| l.parse().ok())
                    .unwrap_or(usize::MAX);
                let after = rec.query.get("continue").cloned();
                let mut items: Vec<Value> = store.collections[collection]
                    .objects
                    .iter()
                    .filter(|(n, _)| after.as_ref().is_none_or(|a| *n > a))
                    .map(|(_, o)| o)
                    .filter(|o| filter.matches(o))
                    .take(limit.saturating_add(1))
                    .map(|o| if meta { as_meta(o) } else { o.clone() })
                    .collect();
                let mut metadata = json!({"resourceVersion": store.rv.to_string()});
                if items.len() > limit {
                    items.truncate(limit);
                    metadata["continue"] = items[limit - 1]["metadata"]["name"].clone();
                }
                let (api_version, kind) = if meta {
                    ("meta.k8s.io/v1", "PartialObjectMetadataList")
                } else {
                    (*api_version, *kind)
                };
                json_response(json!({
                    "apiVersion": api_version, "kind": kind,
                    "metadata": metadata, "items": items,
                }))
            }
            ("GET", Some(name), None) => match store.collections[collection].objects.get(&name) {
                Some(obj) => json_response(obj.clone()),
                None => not_found(&name),
            },
            ("PATCH", Some(name), sub) => {
                let manager = rec.query.get("fieldManager").cloned().unwrap_or_default();
                if rec.query.contains_key("dryRun") {
                    return dry_apply(&store, collection, &name, &rec.body);
                }
                if rec.content_type.starts_with("application/apply-patch") {
                    let force = rec.query.get("force").is_some_and(|f| f == "true");
                    apply(
                        &mut store,
                        collection,
                        &name,
                        sub.as_deref(),
                        (&manager, force),
                        &rec.body,
                    )
                } else {
                    merge_patch(
                        &mut store,
                        collection,
                        &name,
                        sub.as_deref(),
                        &manager,
                        &rec.body,
                    )
                }
            }
            ("POST", None, None) => {
                let name = rec.body["metadata"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string();
                if store.collections[collection].objects.contains_key(&name) {
                    return status(409, "AlreadyExists", &format!("{name} already exists"));
                }
                json_response(store.commit(collection, rec.body.clone()))
            }
            ("PUT", Some(name), None) => {
                let Some(current) = store.collections[collection].objects.get(&name) else {
                    return not_found(&name);
                };
                let asked = &rec.body["metadata"]["resourceVersion"];
                if !asked.is_null() && *asked != current["metadata"]["resourceVersion"] {
                    return status(409, "Conflict", "the object has been modified");
                }
                let mut obj = rec.body.clone();
                obj["metadata"]["uid"] = current["metadata"]["uid"].clone();
                json_response(store.commit(collection, obj))
            }
            ("DELETE", Some(name), None) => match store.remove(collection, &name) {
                Some(obj) => json_response(obj),
                None => not_found(&name),
            },
            // deletecollection: what the selectors take; the deleted, listed.
            ("DELETE", None, None) => {
                let (_, api_version, kind) =
                    COLLECTIONS.iter().find(|c| c.0 == collection).unwrap();
                let names: Vec<String> = store.collections[collection]
                    .objects
                    .iter()
                    .filter(|(_, o)| filter.matches(o))
                    .map(|(n, _)| n.clone())
                    .collect();
                let items: Vec<Value> = names
                    .iter()
                    .filter_map(|n| store.remove(collection, n))
                    .collect();
                json_response(json!({"apiVersion": api_version, "kind": kind,
                    "metadata": {"resourceVersion": store.rv.to_string()}, "items": items}))
            }
            _ => status(405, "MethodNotAllowed", "not in this fake"),
        }
    }
}

/// The fields a write sets: every leaf (scalar, list, null) under the
/// body's top-level fields and under metadata's labels, annotations and
/// owner references; not the identity, nor the status (a subresource).
fn fields(body: &Value) -> Vec<(Path, Value)> {
    fn walk(v: &Value, path: &mut Path, out: &mut Vec<(Path, Value)>) {
        match v.as_object() {
            Some(o) if !o.is_empty() => {
                for (k, v) in o {
                    path.push(k.clone());
                    walk(v, path, out);
                    path.pop();
                }
            }
            _ => out.push((path.clone(), v.clone())),
        }
    }
    let mut out = Vec::new();
    for (k, v) in body.as_object().into_iter().flatten() {
        match k.as_str() {
            "apiVersion" | "kind" | "status" => {}
            "metadata" => {
                for m in ["labels", "annotations", "ownerReferences"] {
                    if let Some(v) = v.get(m) {
                        walk(v, &mut vec![k.clone(), m.to_string()], &mut out);
                    }
                }
            }
            _ => walk(v, &mut vec![k.clone()], &mut out),
        }
    }
    out
}

fn get_path<'a>(obj: &'a Value, path: &[String]) -> Option<&'a Value> {
    path.iter().try_fold(obj, |v, k| v.get(k))
}

fn set_path(obj: &mut Value, path: &[String], value: Value) {
    let mut v = obj;
    for k in &path[..path.len() - 1] {
        if !v.get(k).is_some_and(Value::is_object) {
            v[k.as_str()] = json!({});
        }
        v = &mut v[k.as_str()];
    }
    v[path[path.len() - 1].as_str()] = value;
}

fn remove_path(obj: &mut Value, path: &[String]) {
    let Some((last, parents)) = path.split_last() else {
        return;
    };
    let mut v = obj;
    for k in parents {
        match v.get_mut(k) {
            Some(next) => v = next,
            None => return,
        }
    }
    if let Some(o) = v.as_object_mut() {
        o.remove(last);
    }
}

fn bump_generation(before: Option<&Value>, obj: &mut Value) {
    if let Some(before) = before {
        if before.get("spec") != obj.get("spec") {
            let generation = obj["metadata"]["generation"].as_u64().unwrap_or(1);
            obj["metadata"]["generation"] = json!(generation + 1);
        }
    }
}

/// Server-side apply, as far as tests need it: the fields applied are the
/// manager's; what it applied before and omits now goes (unless another
/// manager owns it too); without force, a field another manager owns with
/// another value is a conflict. The status subresource replaces the
/// status only, of an object that must exist.
fn apply(
    store: &mut Store,
    collection: &'static str,
    name: &str,
    sub: Option<&str>,
    (manager, force): (&str, bool),
    body: &Value,
) -> Response<Body> {
    let current = store.collections[collection].objects.get(name).cloned();
    if sub == Some("status") {
        let Some(mut obj) = current else {
            return not_found(name);
        };
        if let Some(uid) = body["metadata"]["uid"].as_str() {
            if obj["metadata"]["uid"].as_str() != Some(uid) {
                let message = format!("Precondition failed: UID in precondition: {uid}");
                return status(409, "Conflict", &message);
            }
        }
        // Top-level status fields are owned by the manager that applied
        // them: those it no longer sends go, others' stay (a claim's
        // allocation, written by the scheduler, under a driver's devices).
        let c = store.collections.get_mut(collection).unwrap();
        let owned = c.owned.entry(name.to_string()).or_default();
        let sent: BTreeSet<Path> = body["status"]
            .as_object()
            .into_iter()
            .flat_map(|m| m.keys())
            .map(|k| vec!["status".to_string(), k.clone()])
            .collect();
        let mine = owned.entry(manager.to_string()).or_default();
        let dropped: Vec<Path> = mine
            .iter()
            .filter(|p| p.first().is_some_and(|f| f == "status") && !sent.contains(*p))
            .cloned()
            .collect();
        mine.retain(|p| !dropped.contains(p));
        mine.extend(sent.iter().cloned());
        for gone in dropped {
            if !owned.values().any(|theirs| theirs.contains(&gone)) {
                remove_path(&mut obj, &gone);
            }
        }
        if !obj["status"].is_object() {
            obj["status"] = json!({});
        }
        for path in sent {
            obj["status"][&path[1]] = body["status"][&path[1]].clone();
        }
        return json_response(store.commit(collection, obj));
    }
    let mut obj = current.clone().unwrap_or_else(|| {
        json!({"apiVersion": body["apiVersion"], "kind": body["kind"],
            "metadata": {"name": name, "generation": 1}})
    });
    let c = store.collections.get_mut(collection).unwrap();
    let owned = c.owned.entry(name.to_string()).or_default();
    let applied = fields(body);
    if !force {
        for (path, value) in &applied {
            let differs = get_path(&obj, path).is_some_and(|v| v != value);
            let other = owned
                .iter()
                .find(|(m, paths)| m.as_str() != manager && paths.contains(path));
            if let (true, Some((other, _))) = (differs, other) {
                let message = format!(
                    "Apply failed with 1 conflict: conflict with \"{other}\": .{}",
                    path.join(".")
                );
                return status(409, "Conflict", &message);
            }
        }
    }
    let paths: BTreeSet<Path> = applied.iter().map(|(p, _)| p.clone()).collect();
    if force {
        for (m, theirs) in owned.iter_mut() {
            if m != manager {
                theirs.retain(|p| !paths.contains(p));
            }
        }
    }
    let before = owned.remove(manager).unwrap_or_default();
    let is_status = |p: &Path| p.first().is_some_and(|f| f == "status");
    for gone in before.difference(&paths).filter(|p| !is_status(p)) {
        if !owned.values().any(|theirs| theirs.contains(gone)) {
            remove_path(&mut obj, gone);
        }
    }
    for (path, value) in applied {
        set_path(&mut obj, &path, value);
    }
    // What it applied to the status subresource stays its own.
    let paths = paths
        .into_iter()
        .chain(before.into_iter().filter(is_status))
        .collect();
    owned.insert(manager.to_string(), paths);
    bump_generation(current.as_ref(), &mut obj);
    json_response(store.commit(collection, obj))
}

/// A dry-run apply: the object as the write would leave it (the body's
/// top-level fields over what is there), stored nowhere.
fn dry_apply(store: &Store, collection: &'static str, name: &str, body: &Value) -> Response<Body> {
    let mut obj = store.collections[collection]
        .objects
        .get(name)
        .cloned()
        .unwrap_or_else(|| json!({"metadata": {"name": name}}));
    for (key, value) in body.as_object().into_iter().flatten() {
        if key != "metadata" && key != "status" {
            obj[key] = value.clone();
        }
    }
    store.drop_gated(collection, &mut obj);
    json_response(obj)
}

/// A JSON merge patch (a strategic merge patch is the same for the objects
/// here: no merge-keyed lists): nulls delete; the fields set become the
/// manager's, and no longer anyone else's.
fn merge_patch(
    store: &mut Store,
    collection: &'static str,
    name: &str,
    sub: Option<&str>,
    manager: &str,
    body: &Value,
) -> Response<Body> {
    let Some(current) = store.collections[collection].objects.get(name).cloned() else {
        return not_found(name);
    };
    if sub.is_some() {
        return status(
            405,
            "MethodNotAllowed",
            "merge patches of subresources: not in this fake",
        );
    }
    let mut obj = current.clone();
    let changes = fields(body);
    let c = store.collections.get_mut(collection).unwrap();
    let owned = c.owned.entry(name.to_string()).or_default();
    for (path, value) in changes {
        for paths in owned.values_mut() {
            paths.retain(|p| !p.starts_with(&path));
        }
        if value.is_null() {
            remove_path(&mut obj, &path);
        } else {
            set_path(&mut obj, &path, value);
            owned.entry(manager.to_string()).or_default().insert(path);
        }
    }
    bump_generation(Some(&current), &mut obj);
    json_response(store.commit(collection, obj))
}

/// (collection, name, subresource) of a request path.
fn route(path: &str) -> Option<(&'static str, Option<String>, Option<String>)> {
    for (c, _, _) in COLLECTIONS {
        if path == *c {
            return Some((c, None, None));
        }
        if let Some(rest) = path.strip_prefix(&format!("{c}/")) {
            let mut parts = rest.splitn(2, '/');
            let name = parts.next().map(str::to_string);
            let sub = parts.next().map(str::to_string);
            return Some((c, name, sub));
        }
    }
    None
}

fn decode(v: &str) -> String {
    v.replace("%3D", "=")
        .replace("%2F", "/")
        .replace("%2C", ",")
}

fn json_response(v: Value) -> Response<Body> {
    Response::new(Full::new(Bytes::from(v.to_string())).boxed_unsync())
}

fn not_found(name: &str) -> Response<Body> {
    status(404, "NotFound", &format!("{name} not found"))
}

fn status(code: u16, reason: &str, message: &str) -> Response<Body> {
    let body = json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": message, "reason": reason, "code": code});
    let mut r = json_response(body);
    *r.status_mut() = StatusCode::from_u16(code).unwrap();
    r
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

/// How the harness runs the agent.
#[derive(Clone, Debug)]
pub struct Options {
    /// maps.json and node.json in the state dir before start.
    pub saved: Option<(Value, Value)>,
    pub lldp: bool,
    /// A maps dir (`--maps`) with these files: the maps until the API lists.
    pub fallback: Option<Vec<(String, String)>>,
    pub node_wait: Duration,
    /// `--dra`: the ResourceSlice task, with these options.
    pub dra: Option<SliceOptions>,
    /// `--dra`: what the kubelet says of the plugin (the test sends it).
    pub kubelet: Option<tokio::sync::watch::Receiver<surveyor::kubelet::Registration>>,
    /// Events, within this budget's burst and refill (none without).
    pub events: Option<(u32, Duration)>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            saved: None,
            lldp: false,
            fallback: None,
            node_wait: Duration::from_secs(30),
            dra: None,
            kubelet: None,
            events: None,
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
    let options = Options {
        saved,
        ..Options::default()
    };
    with_agent_opts(tag, api, options, test);
}

/// [`with_agent`] with every option.
pub fn with_agent_opts<F, Fut>(tag: &str, api: FakeApi, options: Options, test: F)
where
    F: FnOnce(Run) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()>,
{
    let node = Netns::new(tag);
    let peer = Netns::new(&format!("{tag}-p"));
    cable(&node, "sv-a", &peer, "p0");
    cable(&node, "sv-b", &peer, "p1");
    let dir = tempfile::tempdir().unwrap();
    run_agent(&node, api, options, dir.path().join("state"), test);
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
    let options = Options {
        saved,
        lldp,
        ..Options::default()
    };
    run_agent(node, api, options, dir.path().join("state"), test);
}

/// Runs the cluster-mode agent with state dir `state` (kept by the caller,
/// so a second run is a restart).
pub fn run_agent<F, Fut>(
    node: &Netns,
    api: FakeApi,
    options: Options,
    state: std::path::PathBuf,
    test: F,
) where
    F: FnOnce(Run) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()>,
{
    if let Some((maps, node)) = &options.saved {
        std::fs::create_dir_all(&state).unwrap();
        std::fs::write(state.join("maps.json"), maps.to_string()).unwrap();
        std::fs::write(state.join("node.json"), node.to_string()).unwrap();
    }
    let maps_dir = tempfile::tempdir().unwrap();
    let fallback_path = options.fallback.as_ref().map(|files| {
        for (name, text) in files {
            std::fs::write(maps_dir.path().join(name), text).unwrap();
        }
        maps_dir.path().to_path_buf()
    });
    let ns = node.name.clone();
    node.block_on(move || async move {
        let client = api.serve();
        let client_for_events = client.clone();
        let metrics = Arc::new(Metrics::new());
        let (store, remembered) = cluster::remembered(&state, "node1");
        let config = Config {
            node: "node1".into(),
            labels: remembered.unwrap_or_default(),
            state_dir: state.clone(),
            filter: SurveyFilter::new(false, &["sv*".into()], &[]).unwrap(),
            lldp: options.lldp,
            protocols: surveyor::lldp::Protocols::all(),
        };
        let (desired, rx) = tokio::sync::watch::channel(None);
        let pace = Pace {
            interval: Duration::from_secs(1),
            timeout: Duration::from_millis(500),
        };
        let sharing = options.dra.map(|slice_options| {
            let (mode, sharing) = tokio::sync::watch::channel(None);
            spawn_slices(
                client.clone(),
                "node1".into(),
                rx.clone(),
                mode,
                metrics.clone(),
                slice_options,
                pace,
            );
            sharing
        });
        spawn_publisher(client.clone(), "node1".into(), rx, metrics.clone(), pace);
        let fallback = fallback_path.map(|p| surveyor::agent::maps_dir::MapsDir::open(p).unwrap());
        let source = Source::Cluster(Cluster {
            store,
            maps: cluster::watch_maps(client.clone()),
            node: cluster::watch_node(client, "node1"),
            desired,
            fallback,
            node_wait: options.node_wait,
            sharing,
            kubelet: options.kubelet,
            events: options.events.map(|(burst, refill)| {
                let metrics = Metrics::new();
                surveyor::events::Events::spawn(
                    client_for_events.clone(),
                    kube::runtime::events::Reporter {
                        controller: surveyor::cli::agent::AGENT_REPORTER.into(),
                        instance: Some("node1".into()),
                    },
                    surveyor::events::Budget::new(burst, refill, std::time::Instant::now()),
                    metrics.event_counters(),
                )
            }),
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
    drop(maps_dir);
}

/// (group, resource, verb) of a recorded request, as RBAC would see it.
pub fn rbac(r: &Recorded) -> (String, String, String) {
    let parts: Vec<&str> = r.path.trim_start_matches('/').split('/').collect();
    let (group, rest) = match parts.as_slice() {
        ["api", "v1", rest @ ..] => ("", rest),
        ["apis", group, _version, rest @ ..] => (*group, rest),
        _ => panic!("unexpected path {}", r.path),
    };
    let rest = match rest {
        ["namespaces", _ns, rest @ ..] => rest,
        rest => rest,
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
        ("POST", _, _) => "create",
        ("PUT", _, _) => "update",
        ("DELETE", true, _) => "delete",
        ("DELETE", false, _) => "deletecollection",
        (m, _, _) => panic!("unexpected method {m}"),
    };
    (group.to_string(), resource, verb.to_string())
}

/// Every request recorded is one the agent declares (and RBAC grants).
pub fn assert_declared(api: &FakeApi) {
    assert_declared_by(api, cluster::API_REQUESTS);
}

/// Every request recorded is one of `declared`.
pub fn assert_declared_by(api: &FakeApi, declared: &[(&str, &str, &[&str])]) {
    for r in api.requests.lock().unwrap().iter() {
        let (group, resource, verb) = rbac(r);
        let ok = declared.iter().any(|(g, res, verbs)| {
            *g == group && *res == resource && verbs.contains(&verb.as_str())
        });
        assert!(ok, "undeclared request {verb} {group}/{resource}: {r:?}");
    }
}
