//! The agent's side of the Kubernetes API: NetworkMaps and the Node's
//! labels come in through watches; the NodeSurvey and the Node's
//! `network.surveyor.dev/*` labels go out with server-side apply.
//!
//! Writes run in a task of their own, fed the latest desired state through
//! a watch channel, so a slow or absent API never holds up the event loop
//! or the node-local snapshot.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures::{Stream, StreamExt as _};
use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, ApiResource, DynamicObject, Patch, PatchParams};
use kube::runtime::WatchStreamExt as _;
use kube::runtime::watcher::{self, Event};
use kube::{Client, Resource as _};
use serde_json::json;
use tokio::sync::watch;
use tokio::time::Instant;

use super::maps_dir::LoadedMap;
use super::metrics::{KindLabel, Metrics};
use crate::crd::{NetworkMap, NodeSurvey, NodeSurveyStatus};
use crate::network_map::CompiledMap;

pub const FIELD_MANAGER: &str = "surveyor-agent";
/// Node label prefix: `network.surveyor.dev/<network>: "true"`.
pub const LABEL_PREFIX: &str = "network.surveyor.dev/";
/// How the writer paces itself.
#[derive(Clone, Copy, Debug)]
pub struct Pace {
    /// At most one write burst per interval; the last state always follows.
    pub interval: Duration,
    /// A request not answered by then counts as failed and is retried.
    pub timeout: Duration,
}

impl Default for Pace {
    fn default() -> Self {
        Pace {
            interval: Duration::from_secs(1),
            timeout: Duration::from_secs(10),
        }
    }
}
const BACKOFF_FIRST: Duration = Duration::from_millis(500);
const BACKOFF_MAX: Duration = Duration::from_secs(30);

/// Every API request the agent makes, as RBAC sees it: (API group,
/// resource, verbs). The ClusterRole in deploy/ must grant all of it
/// (tests/deploy.rs checks), and the agent must make nothing else
/// (tests/kube.rs checks every request it records).
pub const API_REQUESTS: &[(&str, &str, &[&str])] = &[
    // The NodeSurvey is created and then kept by server-side apply.
    ("surveyor.dev", "nodesurveys", &["get", "create", "patch"]),
    ("surveyor.dev", "nodesurveys/status", &["patch"]),
    ("surveyor.dev", "networkmaps", &["get", "list", "watch"]),
    // Its own Node: labels in (watch), network labels out (apply).
    ("", "nodes", &["get", "list", "watch", "patch"]),
];

#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("cannot read kubeconfig {path}: {source}")]
    Kubeconfig {
        path: String,
        source: kube::config::KubeconfigError,
    },
    #[error(
        "no cluster configuration (in-cluster service account, KUBECONFIG or ~/.kube/config): {0}"
    )]
    Infer(#[from] kube::config::InferConfigError),
    #[error("cannot build a Kubernetes client: {0}")]
    Client(#[from] kube::Error),
}

/// A client from `--kubeconfig`, else in-cluster config, else KUBECONFIG
/// or `~/.kube/config`.
pub async fn connect(kubeconfig: Option<&Path>) -> Result<Client, ClusterError> {
    let config = match kubeconfig {
        Some(path) => {
            let err = |source| ClusterError::Kubeconfig {
                path: path.display().to_string(),
                source,
            };
            let kc = kube::config::Kubeconfig::read_from(path).map_err(err)?;
            kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
                .await
                .map_err(err)?
        }
        None => kube::Config::infer().await?,
    };
    Ok(Client::try_from(config)?)
}

pub type MapEvents =
    Pin<Box<dyn Stream<Item = Result<Event<DynamicObject>, watcher::Error>> + Send>>;
pub type NodeEvents = Pin<Box<dyn Stream<Item = Result<Event<Node>, watcher::Error>> + Send>>;

/// Watches every NetworkMap, as raw objects: one that does not decode is
/// reported on its own instead of breaking the watch for all.
pub fn watch_maps(client: Client) -> MapEvents {
    let api: Api<DynamicObject> = Api::all_with(client, &ApiResource::erase::<NetworkMap>(&()));
    watcher::watcher(api, watcher::Config::default())
        .default_backoff()
        .boxed()
}

/// Watches this node's Node object (its labels feed nodeSelectors).
pub fn watch_node(client: Client, node: &str) -> NodeEvents {
    let api: Api<Node> = Api::all(client);
    let config = watcher::Config::default().fields(&format!("metadata.name={node}"));
    watcher::watcher(api, config).default_backoff().boxed()
}

/// The Node's labels that may select networks: Surveyor's own labels are
/// left out, so a map cannot select on its own result and flap.
pub fn selector_labels(node: &Node) -> BTreeMap<String, String> {
    node.metadata
        .labels
        .iter()
        .flatten()
        .filter(|(k, _)| !k.starts_with(LABEL_PREFIX))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// What the state dir remembers from the API: the maps in force
/// (`maps.json`) and this node's labels (`node.json`), so an agent
/// restarted while the API is down resolves as it did before.
pub fn remembered(state_dir: &Path, node: &str) -> (MapStore, Option<BTreeMap<String, String>>) {
    let maps = crate::snapshot::read_maps(state_dir)
        .map(|l| l.items)
        .unwrap_or_default();
    if !maps.is_empty() {
        tracing::info!(
            "starting from {} NetworkMap(s) saved in maps.json",
            maps.len()
        );
    }
    let labels = crate::snapshot::read_node(state_dir)
        .ok()
        .filter(|n| n.node == node)
        .map(|n| n.labels);
    (MapStore::from_saved(maps), labels)
}

/// NetworkMaps as the API has them, keeping each map's last valid version.
#[derive(Debug, Default)]
pub struct MapStore {
    valid: BTreeMap<String, LoadedMap>,
    malformed: BTreeMap<String, String>,
    /// Objects of a relist in progress (between Init and InitDone).
    relist: Option<Vec<DynamicObject>>,
    /// A list has completed since start.
    listed: bool,
}

impl MapStore {
    /// Starts from the maps last saved (maps.json), until the API answers.
    pub fn from_saved(maps: Vec<NetworkMap>) -> Self {
        let mut store = MapStore::default();
        for map in maps {
            if let Ok(loaded) = load(map) {
                store.valid.insert(loaded.compiled.name.clone(), loaded);
            }
        }
        store
    }

    pub fn maps(&self) -> Vec<LoadedMap> {
        self.valid.values().cloned().collect()
    }

    /// Refused maps, `NetworkMap NAME: why`.
    pub fn malformed(&self) -> Vec<String> {
        self.malformed
            .iter()
            .map(|(n, e)| format!("NetworkMap {n}: {e}"))
            .collect()
    }

    /// Whether the maps come from a completed API list.
    pub fn listed(&self) -> bool {
        self.listed
    }

    /// Applies one watch event; true when the maps in force changed.
    pub fn apply(&mut self, event: Event<DynamicObject>) -> bool {
        let before: Vec<NetworkMap> = self.valid.values().map(|m| m.map.clone()).collect();
        match event {
            Event::Init => self.relist = Some(Vec::new()),
            Event::InitApply(obj) => self.relist.get_or_insert_with(Vec::new).push(obj),
            Event::InitDone => {
                let objects = self.relist.take().unwrap_or_default();
                let names: BTreeSet<String> = objects
                    .iter()
                    .filter_map(|o| o.metadata.name.clone())
                    .collect();
                // What the list does not hold is gone.
                self.valid.retain(|n, _| names.contains(n));
                self.malformed.retain(|n, _| names.contains(n));
                for obj in objects {
                    self.upsert(obj);
                }
                self.listed = true;
            }
            Event::Apply(obj) => self.upsert(obj),
            Event::Delete(obj) => {
                let name = obj.metadata.name.unwrap_or_default();
                self.valid.remove(&name);
                self.malformed.remove(&name);
            }
        }
        let after: Vec<NetworkMap> = self.valid.values().map(|m| m.map.clone()).collect();
        before != after
    }

    fn upsert(&mut self, obj: DynamicObject) {
        let name = obj.metadata.name.clone().unwrap_or_default();
        match serde_json::to_value(&obj)
            .map_err(|e| e.to_string())
            .and_then(|v| serde_json::from_value::<NetworkMap>(v).map_err(|e| e.to_string()))
            .and_then(load)
        {
            Ok(loaded) => {
                self.malformed.remove(&name);
                self.valid.insert(name, loaded);
            }
            Err(reason) => {
                if self.malformed.get(&name) != Some(&reason) {
                    let kept = if self.valid.contains_key(&name) {
                        "keeping its last valid version"
                    } else {
                        "ignoring it"
                    };
                    tracing::error!("NetworkMap {name}: {reason}; {kept}");
                }
                self.malformed.insert(name, reason);
            }
        }
    }
}

/// A map as stored: only what the spec says (no server metadata), checked.
fn load(map: NetworkMap) -> Result<LoadedMap, String> {
    let mut clean = NetworkMap::new(map.metadata.name.as_deref().unwrap_or_default(), map.spec);
    clean.metadata.name = map.metadata.name;
    let compiled = CompiledMap::compile(&clean).map_err(|e| e.to_string())?;
    Ok(LoadedMap {
        map: clean,
        compiled,
    })
}

/// What the agent wants the API to show.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Desired {
    pub status: NodeSurveyStatus,
    /// Networks resolved here: each is a node label.
    pub networks: BTreeSet<String>,
}

/// Starts the writer task. It writes what `desired` holds, no more than
/// once per `pace.interval`, skipping anything already written, retrying
/// with backoff (jittered by node, so a rack does not retry in step).
pub fn spawn_publisher(
    client: Client,
    node: String,
    desired: watch::Receiver<Option<Desired>>,
    metrics: Arc<Metrics>,
    pace: Pace,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(publish_loop(client, node, desired, metrics, pace))
}

#[derive(Debug, thiserror::Error)]
enum WriteError {
    #[error(transparent)]
    Api(#[from] kube::Error),
    #[error("no answer within {0:?}")]
    Timeout(Duration),
}

async fn publish_loop(
    client: Client,
    node: String,
    mut desired: watch::Receiver<Option<Desired>>,
    metrics: Arc<Metrics>,
    pace: Pace,
) {
    let mut writer = Writer {
        surveys: Api::all(client.clone()),
        nodes: Api::all(client),
        node,
        created: false,
        status: None,
        networks: None,
        metrics,
    };
    let jitter = jitter(&writer.node);
    let mut last_write: Option<Instant> = None;
    let mut failures = 0u32;
    loop {
        if failures == 0 && desired.changed().await.is_err() {
            return; // the agent stopped
        }
        if let Some(at) = last_write {
            tokio::time::sleep_until(at + pace.interval).await;
        }
        let Some(want) = desired.borrow_and_update().clone() else {
            continue;
        };
        if writer.is_written(&want) {
            failures = 0;
            continue;
        }
        let attempt = tokio::time::timeout(pace.timeout, writer.write(&want));
        match attempt
            .await
            .unwrap_or(Err(WriteError::Timeout(pace.timeout)))
        {
            Ok(()) => {
                failures = 0;
                last_write = Some(Instant::now());
            }
            Err(e) => {
                failures += 1;
                writer.metrics.api_errors.inc();
                let wait = backoff(failures, jitter);
                tracing::warn!(
                    "Kubernetes API write failed ({e}); retrying in {wait:?} (the node-local snapshot stays current)"
                );
                tokio::time::sleep(wait).await;
            }
        }
    }
}

/// 500 ms doubling to 30 s, scaled by a per-node factor in [0.5, 1.5).
fn backoff(failures: u32, jitter: f64) -> Duration {
    let base = BACKOFF_FIRST.saturating_mul(1 << failures.saturating_sub(1).min(10));
    base.min(BACKOFF_MAX).mul_f64(jitter)
}

fn jitter(node: &str) -> f64 {
    let hash = node.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    });
    0.5 + (hash % 1000) as f64 / 1000.0
}

struct Writer {
    surveys: Api<NodeSurvey>,
    nodes: Api<Node>,
    node: String,
    created: bool,
    /// What the API holds from us, each part as last written; `None` until
    /// written (so a restarted agent corrects what an earlier one left).
    status: Option<NodeSurveyStatus>,
    networks: Option<BTreeSet<String>>,
    metrics: Arc<Metrics>,
}

impl Writer {
    fn count(&self, kind: &'static str) {
        self.metrics
            .api_writes
            .get_or_create(&KindLabel { kind })
            .inc();
    }

    fn is_written(&self, want: &Desired) -> bool {
        self.status.as_ref() == Some(&want.status) && self.networks.as_ref() == Some(&want.networks)
    }

    /// Applies what differs from what was last written.
    async fn write(&mut self, want: &Desired) -> Result<(), WriteError> {
        let params = PatchParams::apply(FIELD_MANAGER).force();
        let (api_version, kind) = (NodeSurvey::api_version(&()), NodeSurvey::kind(&()));
        if !self.created {
            let object =
                json!({"apiVersion": api_version, "kind": kind, "metadata": {"name": self.node}});
            self.surveys
                .patch(&self.node, &params, &Patch::Apply(&object))
                .await?;
            self.count("create");
            self.created = true;
        }
        if self.status.as_ref() != Some(&want.status) {
            let object = json!({
                "apiVersion": api_version, "kind": kind,
                "metadata": {"name": self.node},
                "status": want.status,
            });
            if let Err(e) = self
                .surveys
                .patch_status(&self.node, &params, &Patch::Apply(&object))
                .await
            {
                // Deleted under us: create it again next time.
                if matches!(&e, kube::Error::Api(s) if s.code == 404) {
                    self.created = false;
                }
                return Err(e.into());
            }
            self.count("status");
            self.status = Some(want.status.clone());
        }
        if self.networks.as_ref() != Some(&want.networks) {
            // Server-side apply: labels this manager set before and omits
            // now are removed; labels of other managers are never touched.
            let labels: BTreeMap<String, &str> = want
                .networks
                .iter()
                .map(|n| (format!("{LABEL_PREFIX}{n}"), "true"))
                .collect();
            let object = json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": self.node, "labels": labels}});
            self.nodes
                .patch(&self.node, &params, &Patch::Apply(&object))
                .await?;
            self.count("labels");
            self.networks = Some(want.networks.clone());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obj(name: &str, spec: serde_json::Value) -> DynamicObject {
        serde_json::from_value(json!({
            "apiVersion": "surveyor.dev/v1alpha1", "kind": "NetworkMap",
            "metadata": {"name": name, "resourceVersion": "7", "uid": "u"},
            "spec": spec,
        }))
        .unwrap()
    }

    fn names(s: &MapStore) -> Vec<String> {
        s.maps().into_iter().map(|m| m.compiled.name).collect()
    }

    #[test]
    fn malformed_maps_keep_the_last_valid_version() {
        let mut s = MapStore::from_saved(vec![]);
        assert!(s.apply(Event::Apply(obj(
            "green",
            json!({"match": {"names": ["ens*"]}})
        ))));
        assert!(!s.apply(Event::Apply(obj(
            "green",
            json!({"match": {"names": ["ens["]}})
        ))));
        assert_eq!(names(&s), ["green"]);
        assert_eq!(
            s.maps()[0].map.spec.match_rule.as_ref().unwrap().names,
            ["ens*"]
        );
        assert!(
            s.malformed()[0].contains("spec.match.names"),
            "{:?}",
            s.malformed()
        );
        // Wrong shape: refused on its own, the rest unaffected.
        assert!(!s.apply(Event::Apply(obj(
            "red",
            json!({"match": {"minSpeedMbps": "fast"}})
        ))));
        assert_eq!(s.malformed().len(), 2);
        assert!(s.apply(Event::Apply(obj(
            "green",
            json!({"match": {"names": ["eth*"]}})
        ))));
        assert_eq!(s.malformed().len(), 1);
        assert!(s.apply(Event::Delete(obj("green", json!({})))));
        assert!(names(&s).is_empty());
        // Stored maps carry no server metadata.
        s.apply(Event::Apply(obj("blue", json!({}))));
        assert_eq!(s.maps()[0].map.metadata.resource_version, None);
    }

    #[test]
    fn a_relist_replaces_everything_and_marks_the_store_listed() {
        let saved = vec![NetworkMap::new("old", Default::default())];
        let mut s = MapStore::from_saved(saved);
        assert_eq!(names(&s), ["old"]);
        assert!(!s.listed());
        s.apply(Event::Init);
        s.apply(Event::InitApply(obj("green", json!({}))));
        assert_eq!(names(&s), ["old"], "nothing changes before InitDone");
        assert!(s.apply(Event::InitDone));
        assert_eq!(names(&s), ["green"]);
        assert!(s.listed());
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        assert_eq!(backoff(1, 1.0), Duration::from_millis(500));
        assert_eq!(backoff(3, 1.0), Duration::from_secs(2));
        assert_eq!(backoff(30, 1.0), BACKOFF_MAX);
        let j = jitter("node07");
        assert!((0.5..1.5).contains(&j));
        assert_eq!(j, jitter("node07"));
        assert_ne!(jitter("node07"), jitter("node08"));
    }

    #[test]
    fn our_own_labels_never_select() {
        let node: Node = serde_json::from_value(json!({"metadata": {"name": "n1", "labels": {
            "rack": "r1", "network.surveyor.dev/green": "true"}}}))
        .unwrap();
        let labels = selector_labels(&node);
        assert_eq!(labels.len(), 1);
        assert_eq!(labels["rack"], "r1");
    }
}
