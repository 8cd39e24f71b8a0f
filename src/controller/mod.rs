//! `surveyor controller`: the cluster view. It watches NetworkMaps, Nodes
//! and NodeSurveys, keeps a small [`model::Model`] of them, and, while it
//! holds the Lease ([`leader`]), puts in the API what the model says
//! should be there and is not: each NetworkMap's status (server-side
//! apply, field manager `surveyor-controller`) and each Node's
//! `network.surveyor.dev/*` labels, and with DRA one DeviceClass per
//! NetworkMap (`<network>.surveyor.dev`, removed with the map). Writes are paced per object
//! ([`pacer`]), compared with what the API has (so a restart, a relist or
//! a quiet cluster writes nothing), and their own echoes are recognised
//! by resource version. Every replica serves the fabric at `/topology`.

pub mod http;
pub mod leader;
pub mod metrics;
pub mod model;
pub mod pacer;
pub mod watches;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt as _;
use futures::stream::FuturesUnordered;
use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, ApiResource, DynamicObject, Patch, PatchParams};
use kube::core::PartialObjectMeta;
use kube::runtime::watcher;
use kube::{Client, Resource as _};
use serde_json::{Value, json};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::crd::{NetworkMap, NetworkMapStatus};
use crate::events::{self, Notice, Reason, reference};
use metrics::{KindLabel, MapLabel, Metrics, View};
use model::{ClassSeen, LABEL_PREFIX, Model, NodeEntry, SurveyEntry};
use pacer::Pacer;
use watches::{Change, Events, MapObject, Relist};

pub const FIELD_MANAGER: &str = "surveyor-controller";

/// Every API request the controller makes, as RBAC sees it: (API group,
/// resource, verbs). Its ClusterRole and Role in deploy/ grant exactly
/// this (tests/deploy.rs), and it makes nothing else (tests/controller.rs
/// checks every request recorded).
pub const API_REQUESTS: &[(&str, &str, &[&str])] = &[
    ("surveyor.dev", "networkmaps", &["get", "list", "watch"]),
    ("surveyor.dev", "networkmaps/status", &["patch"]),
    ("surveyor.dev", "nodesurveys", &["list", "watch"]),
    ("", "nodes", &["list", "watch", "patch"]),
    // With --dra: a DeviceClass per NetworkMap, ours only (by label).
    (
        "resource.k8s.io",
        "deviceclasses",
        &["list", "watch", "patch", "delete"],
    ),
    // Events: a refused map, a label or DeviceClass put back.
    ("events.k8s.io", "events", &["create", "patch"]),
    // The Lease, in the controller's namespace only (a Role).
    (
        "coordination.k8s.io",
        "leases",
        &["get", "create", "update"],
    ),
];

/// How writes are paced.
#[derive(Clone, Copy, Debug)]
pub struct Pace {
    /// One object is written at most once per interval.
    pub interval: Duration,
    /// A change waits this long for the changes that come with it.
    pub settle: Duration,
    /// A request not answered by then counts as failed and is retried.
    pub timeout: Duration,
    /// Writes in flight at once.
    pub concurrency: usize,
}

impl Default for Pace {
    fn default() -> Self {
        Pace {
            interval: Duration::from_secs(1),
            settle: Duration::from_millis(100),
            timeout: Duration::from_secs(10),
            concurrency: 16,
        }
    }
}

/// The watches the controller learns from.
pub struct Sources {
    pub maps: Events<DynamicObject>,
    pub surveys: Events<DynamicObject>,
    pub nodes: Events<PartialObjectMeta<Node>>,
    /// Our DeviceClasses, when the controller keeps them (DRA).
    pub classes: Option<Events<DynamicObject>>,
}

impl Sources {
    /// The watches; `dra`: DeviceClasses too.
    pub fn watch(client: &Client, dra: bool) -> Sources {
        Sources {
            maps: watches::maps(client.clone()),
            surveys: watches::surveys(client.clone()),
            nodes: watches::nodes(client.clone()),
            classes: dra.then(|| watches::classes(client.clone())),
        }
    }
}

/// An object the controller writes.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
enum Target {
    Map(String),
    Node(String),
    /// A network's DeviceClass.
    Class(String),
}

/// What a write put in the API.
enum Wrote {
    /// With whether it newly says the spec is refused (the API's status
    /// did not, before the write).
    Status(NetworkMapStatus, bool),
    /// network -> its label's value, `None` removed.
    Labels(BTreeMap<String, Option<String>>),
    /// The DeviceClass now there (`None`: deleted).
    Class(Option<ClassSeen>),
}

#[derive(Debug, thiserror::Error)]
enum WriteError {
    #[error(transparent)]
    Api(#[from] kube::Error),
    #[error("no answer within {0:?}")]
    Timeout(Duration),
}

type Outcome = (Target, Result<(Wrote, Option<u64>), WriteError>);
type Writing = Pin<Box<dyn Future<Output = Outcome> + Send>>;

/// Runs the controller until `shutdown`; it never gives up on the API (a
/// watch that fails is retried with backoff, a write that fails is
/// retried).
pub async fn run(
    client: Client,
    mut sources: Sources,
    mut leader: watch::Receiver<bool>,
    pace: Pace,
    metrics: Arc<Metrics>,
    events: Option<events::Events>,
    shutdown: impl Future<Output = ()>,
) {
    let mut c = Controller::new(&client, pace, metrics, sources.classes.is_some());
    c.events = events;
    c.set_leader(*leader.borrow_and_update());
    let mut writing: FuturesUnordered<Writing> = FuturesUnordered::new();
    let mut leader_open = true;
    tokio::pin!(shutdown);
    loop {
        let room = writing.len() < pace.concurrency;
        let due = c.pacer.next().filter(|_| room && c.writes_allowed());
        tokio::select! {
            () = &mut shutdown => return,
            event = sources.maps.next() => match event {
                Some(Ok(e)) => {
                    let change = c.maps_relist.step(e, map_in);
                    c.on_maps(change);
                }
                Some(Err(e)) => c.watch_failed("NetworkMaps", &e),
                None => sources.maps = Box::pin(futures::stream::pending()),
            },
            event = sources.surveys.next() => match event {
                Some(Ok(e)) => {
                    let change = c.surveys_relist.step(e, survey_in);
                    c.on_surveys(change);
                }
                Some(Err(e)) => c.watch_failed("NodeSurveys", &e),
                None => sources.surveys = Box::pin(futures::stream::pending()),
            },
            event = sources.nodes.next() => match event {
                Some(Ok(e)) => {
                    let change = c.nodes_relist.step(e, node_in);
                    c.on_nodes(change);
                }
                Some(Err(e)) => c.watch_failed("Nodes", &e),
                None => sources.nodes = Box::pin(futures::stream::pending()),
            },
            Some(event) = next_class(sources.classes.as_mut()) => match event {
                Ok(e) => {
                    let change = c.classes_relist.step(e, watches::class_entry);
                    c.on_classes(change);
                }
                Err(e) => c.watch_failed("DeviceClasses", &e),
            },
            changed = leader.changed(), if leader_open => {
                let now = changed.is_ok() && *leader.borrow_and_update();
                leader_open = changed.is_ok();
                if !c.set_leader(now) {
                    // Stepped down: what is in flight is abandoned.
                    writing.clear();
                }
            }
            Some((target, result)) = writing.next(), if !writing.is_empty() => {
                c.on_written(target, result);
            }
            () = sleep_until(due) => {
                let limit = pace.concurrency - writing.len();
                for write in c.start_writes(limit) {
                    writing.push(write);
                }
            }
            () = sleep_until(c.view_due) => c.publish(),
        }
    }
}

fn map_in(obj: &DynamicObject) -> (String, Option<u64>, MapObject) {
    let (name, rv) = watches::identity(&obj.metadata);
    (name, rv, watches::map_object(obj))
}

fn survey_in(obj: &DynamicObject) -> (String, SurveyEntry) {
    let (name, _) = watches::identity(&obj.metadata);
    let entry = watches::survey_entry(&name, obj);
    (name, entry)
}

fn node_in(obj: &PartialObjectMeta<Node>) -> (String, Option<u64>, NodeEntry) {
    let (name, rv) = watches::identity(&obj.metadata);
    (name, rv, watches::node_entry(obj))
}

/// The next event of the DeviceClass watch; pending without one.
async fn next_class(
    classes: Option<&mut Events<DynamicObject>>,
) -> Option<Result<watcher::Event<DynamicObject>, watcher::Error>> {
    match classes {
        Some(events) => events.next().await,
        None => std::future::pending().await,
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

struct Controller {
    model: Model,
    pacer: Pacer<Target>,
    pace: Pace,
    /// NetworkMaps, NodeSurveys, Nodes: listed, and not relisting (after
    /// a watch failed, what is known may be stale: nothing is written
    /// from it, or a replica back from a partition would write from a
    /// half-old view).
    /// (and DeviceClasses, with DRA).
    synced: [bool; 4],
    /// DeviceClasses are kept (DRA).
    dra: bool,
    /// Ready: all three have been listed once.
    ready: bool,
    leader: bool,
    /// The resource version our last write of each object returned: watch
    /// events older than it are echoes of states before the write.
    written_rv: HashMap<Target, u64>,
    maps_relist: Relist<(String, Option<u64>, MapObject)>,
    surveys_relist: Relist<(String, SurveyEntry)>,
    nodes_relist: Relist<(String, Option<u64>, NodeEntry)>,
    classes_relist: Relist<(String, Option<u64>, ClassSeen)>,
    maps_api: Api<DynamicObject>,
    nodes_api: Api<DynamicObject>,
    classes_api: Api<DynamicObject>,
    metrics: Arc<Metrics>,
    view_due: Option<Instant>,
    view_last: Option<Instant>,
    /// Maps with per-map gauges.
    gauged: BTreeSet<String>,
    /// Where Events go (the writing replica's: only it repairs).
    events: Option<events::Events>,
    /// Nodes whose labels someone else changed: their next label write
    /// is a repair.
    label_repairs: BTreeSet<String>,
    /// Networks whose DeviceClass someone edited or deleted.
    class_repairs: BTreeSet<String>,
}

impl Controller {
    fn new(client: &Client, pace: Pace, metrics: Arc<Metrics>, dra: bool) -> Self {
        let class = ApiResource::erase::<k8s_openapi::api::resource::v1::DeviceClass>(&());
        Controller {
            model: Model::default(),
            pacer: Pacer::new(pace.interval, pace.settle),
            pace,
            synced: [false, false, false, !dra],
            dra,
            ready: false,
            leader: false,
            written_rv: HashMap::new(),
            maps_relist: Relist::default(),
            surveys_relist: Relist::default(),
            nodes_relist: Relist::default(),
            classes_relist: Relist::default(),
            maps_api: Api::all_with(client.clone(), &ApiResource::erase::<NetworkMap>(&())),
            nodes_api: Api::all_with(client.clone(), &ApiResource::erase::<Node>(&())),
            classes_api: Api::all_with(client.clone(), &class),
            metrics,
            view_due: None,
            view_last: None,
            gauged: BTreeSet::new(),
            events: None,
            label_repairs: BTreeSet::new(),
            class_repairs: BTreeSet::new(),
        }
    }

    fn synced(&self) -> bool {
        self.synced.iter().all(|s| *s)
    }

    /// Nothing is written on a partial view (a node whose NodeSurvey is not
    /// listed yet would lose its labels), nor by a replica not leading.
    fn writes_allowed(&self) -> bool {
        self.leader && self.synced()
    }

    fn mark(&mut self, target: Target) {
        if self.writes_allowed() {
            self.pacer.mark(&target, Instant::now());
        }
    }

    fn mark_all(&mut self) {
        if !self.writes_allowed() {
            return;
        }
        let now = Instant::now();
        for name in self.model.maps.keys() {
            self.pacer.mark(&Target::Map(name.clone()), now);
        }
        let nodes = self.model.nodes.keys().chain(self.model.surveys.keys());
        for name in nodes {
            self.pacer.mark(&Target::Node(name.clone()), now);
        }
        if self.dra {
            let networks = self.model.maps.keys().chain(self.model.classes.keys());
            for name in networks {
                self.pacer.mark(&Target::Class(name.clone()), now);
            }
        }
    }

    fn mark_maps(&mut self) {
        let names: Vec<String> = self.model.maps.keys().cloned().collect();
        for name in names {
            self.mark(Target::Map(name));
        }
    }

    /// The picture and the gauges are rebuilt at most once a second.
    fn view_changed(&mut self) {
        if self.view_due.is_some() {
            return;
        }
        let now = Instant::now();
        let at = self.view_last.map_or(now, |last| {
            (last + self.pace.interval).max(now + self.pace.settle)
        });
        self.view_due = Some(at);
    }

    /// Takes a leadership change in; false when this replica stepped down.
    fn set_leader(&mut self, leader: bool) -> bool {
        if leader == self.leader {
            return true;
        }
        self.leader = leader;
        // Repairs are the writer's to tell.
        self.label_repairs.clear();
        self.class_repairs.clear();
        self.metrics.leader.set(i64::from(leader));
        if leader {
            self.mark_all();
        } else {
            self.pacer.reset();
        }
        leader
    }

    fn relisting(&mut self, which: usize) {
        self.synced[which] = false;
    }

    fn listed(&mut self, which: usize) {
        let was = self.synced();
        self.synced[which] = true;
        if !was && self.synced() {
            if !self.ready {
                tracing::info!(
                    "listed {} NetworkMap(s), {} Node(s), {} NodeSurvey(s)",
                    self.model.maps.len(),
                    self.model.nodes.len(),
                    self.model.surveys.len()
                );
                self.ready = true;
                self.metrics.set_ready();
            }
            self.mark_all();
        }
        self.view_changed();
    }

    fn watch_failed(&self, what: &str, e: &watcher::Error) {
        self.metrics.api_errors.inc();
        tracing::warn!("watching {what} failed ({e}); retrying with backoff");
    }

    /// An event older than our last write of the object is its past.
    fn stale(&self, target: &Target, rv: Option<u64>) -> bool {
        matches!((self.written_rv.get(target), rv), (Some(ours), Some(rv)) if rv < *ours)
    }

    fn on_maps(&mut self, change: Change<(String, Option<u64>, MapObject)>) {
        match change {
            Change::Nothing => return,
            Change::Relisting => return self.relisting(0),
            Change::Upsert((name, rv, obj)) => self.upsert_map(name, rv, obj),
            Change::Remove(name) => self.remove_map(&name),
            Change::Replace(list) => {
                let names: BTreeSet<&String> = list.iter().map(|(n, _, _)| n).collect();
                let gone: Vec<String> = self
                    .model
                    .maps
                    .keys()
                    .filter(|n| !names.contains(n))
                    .cloned()
                    .collect();
                for name in gone {
                    self.remove_map(&name);
                }
                for (name, rv, obj) in list {
                    self.upsert_map(name, rv, obj);
                }
                self.listed(0);
            }
        }
        self.metrics.maps.set(self.model.maps.len() as i64);
        self.view_changed();
    }

    fn upsert_map(&mut self, name: String, rv: Option<u64>, obj: MapObject) {
        let target = Target::Map(name.clone());
        if self.stale(&target, rv) {
            return;
        }
        let entry = self.model.maps.entry(name.clone()).or_default();
        if let Err(why) = &obj.compiled {
            if entry.invalid.as_ref() != Some(why) {
                tracing::error!("NetworkMap {name}: {why}; its status says so");
            }
        }
        entry.update(obj.generation, obj.compiled);
        entry.observed = obj.status;
        entry.uid = obj.uid;
        self.mark(target);
        if self.dra {
            self.mark(Target::Class(name));
        }
    }

    fn remove_map(&mut self, name: &str) {
        self.model.maps.remove(name);
        let target = Target::Map(name.to_string());
        self.pacer.forget(&target);
        self.written_rv.remove(&target);
        if self.dra {
            self.mark(Target::Class(name.to_string()));
        }
    }

    fn on_classes(&mut self, change: Change<(String, Option<u64>, ClassSeen)>) {
        match change {
            Change::Nothing => {}
            Change::Relisting => self.relisting(3),
            Change::Upsert((network, rv, seen)) => self.upsert_class(network, rv, seen),
            Change::Remove(name) => {
                let network = self
                    .model
                    .classes
                    .iter()
                    .find(|(_, seen)| seen.name == name)
                    .map(|(n, _)| n.clone());
                if let Some(network) = network {
                    self.model.classes.remove(&network);
                    if self.model.class_wanted(&network).1 {
                        self.class_repairs.insert(network.clone());
                    }
                    self.mark(Target::Class(network));
                }
            }
            Change::Replace(list) => {
                let before: Vec<String> = self.model.classes.keys().cloned().collect();
                self.model.classes.clear();
                for network in before {
                    self.mark(Target::Class(network));
                }
                for (network, rv, seen) in list {
                    self.upsert_class(network, rv, seen);
                }
                self.listed(3);
            }
        }
    }

    fn upsert_class(&mut self, network: String, rv: Option<u64>, seen: ClassSeen) {
        let target = Target::Class(network.clone());
        if network.is_empty() || self.stale(&target, rv) {
            return;
        }
        let known = self.model.classes.insert(network.clone(), seen).is_some();
        // Not our write's echo (that leaves nothing to do): an edit.
        if known && self.model.class_wanted(&network).1 {
            self.class_repairs.insert(network);
        }
        self.mark(target);
    }

    fn on_surveys(&mut self, change: Change<(String, SurveyEntry)>) {
        match change {
            Change::Nothing => return,
            Change::Relisting => return self.relisting(1),
            Change::Upsert((name, entry)) => {
                let old = self.model.surveys.insert(name.clone(), entry);
                let new = &self.model.surveys[&name];
                match old {
                    None => self.mark_maps(),
                    Some(old) => {
                        // Only the maps whose result on this node moved.
                        let moved: Vec<String> = old
                            .networks
                            .keys()
                            .chain(new.networks.keys())
                            .filter(|n| old.networks.get(*n) != new.networks.get(*n))
                            .filter(|n| self.model.maps.contains_key(*n))
                            .cloned()
                            .collect();
                        for map in moved {
                            self.mark(Target::Map(map));
                        }
                    }
                }
                self.mark(Target::Node(name));
            }
            Change::Remove(name) => {
                self.model.surveys.remove(&name);
                self.mark_maps();
                self.mark(Target::Node(name));
            }
            Change::Replace(list) => {
                self.model.surveys = list.into_iter().collect();
                self.listed(1);
                self.mark_all();
            }
        }
        self.metrics.surveys.set(self.model.surveys.len() as i64);
        self.view_changed();
    }

    fn on_nodes(&mut self, change: Change<(String, Option<u64>, NodeEntry)>) {
        match change {
            Change::Nothing => return,
            Change::Relisting => return self.relisting(2),
            Change::Upsert((name, rv, entry)) => {
                let target = Target::Node(name.clone());
                if self.stale(&target, rv) {
                    return;
                }
                let old = self.model.nodes.insert(name.clone(), entry.clone());
                if old.as_ref().map(|o| &o.selector_labels) != Some(&entry.selector_labels) {
                    self.mark_maps();
                    self.view_changed();
                }
                if old.as_ref().map(|o| &o.network_labels) != Some(&entry.network_labels) {
                    // Changed by someone else (our own echo leaves nothing
                    // to write): the write that follows puts it back.
                    if old.is_some() && self.model.label_patch(&name).is_some() {
                        self.label_repairs.insert(name.clone());
                    }
                    self.mark(target);
                }
            }
            Change::Remove(name) => {
                self.model.nodes.remove(&name);
                let target = Target::Node(name);
                self.pacer.forget(&target);
                self.written_rv.remove(&target);
                self.mark_maps();
                self.view_changed();
            }
            Change::Replace(list) => {
                let mut nodes = BTreeMap::new();
                for (name, rv, entry) in list {
                    let target = Target::Node(name.clone());
                    let kept = self
                        .model
                        .nodes
                        .get(&name)
                        .filter(|_| self.stale(&target, rv));
                    nodes.insert(name, kept.cloned().unwrap_or(entry));
                }
                self.model.nodes = nodes;
                self.listed(2);
                self.mark_all();
            }
        }
        self.metrics.nodes.set(self.model.nodes.len() as i64);
    }

    /// Starts the writes that are due and needed; those not needed end
    /// here.
    fn start_writes(&mut self, limit: usize) -> Vec<Writing> {
        let now = Instant::now();
        let time = crate::condition::now();
        let mut out: Vec<Writing> = Vec::new();
        let params = PatchParams::apply(FIELD_MANAGER).force();
        let timeout = self.pace.timeout;
        for target in self.pacer.take(now, limit) {
            match &target {
                Target::Map(name) => {
                    let Some(entry) = self.model.maps.get(name) else {
                        self.pacer.finish(&target, None, now);
                        continue;
                    };
                    let Some(status) = self.model.map_status(name, &time) else {
                        self.pacer.finish(&target, None, now);
                        continue;
                    };
                    if entry.observed.as_ref() == Some(&status) {
                        self.pacer.finish(&target, None, now);
                        continue;
                    }
                    let newly = rejected(&status) && !entry.observed.as_ref().is_some_and(rejected);
                    let api = self.maps_api.clone();
                    let body = json!({
                        "apiVersion": NetworkMap::api_version(&()),
                        "kind": NetworkMap::kind(&()),
                        "metadata": {"name": name},
                        "status": status,
                    });
                    let (name, params) = (name.clone(), params.clone());
                    out.push(Box::pin(async move {
                        let patch = Patch::Apply(&body);
                        let write = api.patch_status(&name, &params, &patch);
                        let result = tokio::time::timeout(timeout, write).await;
                        let result = match result {
                            Err(_) => Err(WriteError::Timeout(timeout)),
                            Ok(Err(e)) => Err(e.into()),
                            Ok(Ok(obj)) => {
                                let rv = watches::identity(&obj.metadata).1;
                                Ok((Wrote::Status(status, newly), rv))
                            }
                        };
                        (Target::Map(name), result)
                    }));
                }
                Target::Node(name) => {
                    let Some(patch) = self.model.label_patch(name) else {
                        self.pacer.finish(&target, None, now);
                        continue;
                    };
                    let api = self.nodes_api.clone();
                    let name = name.clone();
                    let params = PatchParams {
                        field_manager: Some(FIELD_MANAGER.into()),
                        ..PatchParams::default()
                    };
                    out.push(Box::pin(async move {
                        let wrote = Wrote::Labels(label_changes(&patch));
                        let merge = Patch::Merge(&patch);
                        let write = api.patch(&name, &params, &merge);
                        let result = match tokio::time::timeout(timeout, write).await {
                            Err(_) => Err(WriteError::Timeout(timeout)),
                            Ok(Err(e)) => Err(e.into()),
                            Ok(Ok(obj)) => Ok((wrote, watches::identity(&obj.metadata).1)),
                        };
                        (Target::Node(name), result)
                    }));
                }
                Target::Class(network) => {
                    let (want, differs) = self.model.class_wanted(network);
                    if !self.dra || !differs {
                        self.pacer.finish(&target, None, now);
                        continue;
                    }
                    let api = self.classes_api.clone();
                    let gone = self.model.classes.get(network).map(|s| s.name.clone());
                    let (network, params) = (network.clone(), params.clone());
                    out.push(Box::pin(async move {
                        let result = tokio::time::timeout(timeout, async {
                            match want {
                                Some(body) => {
                                    let name = crate::dra::class_name(&network);
                                    let obj =
                                        api.patch(&name, &params, &Patch::Apply(&body)).await?;
                                    let (_, rv) = watches::identity(&obj.metadata);
                                    let (_, _, seen) = watches::class_entry(&obj);
                                    Ok((Wrote::Class(Some(seen)), rv))
                                }
                                None => {
                                    let name = gone.unwrap_or_default();
                                    api.delete(&name, &Default::default()).await?;
                                    Ok((Wrote::Class(None), None))
                                }
                            }
                        })
                        .await;
                        let result = match result {
                            Err(_) => Err(WriteError::Timeout(timeout)),
                            Ok(r) => r.map_err(|e: kube::Error| WriteError::Api(e)),
                        };
                        (Target::Class(network), result)
                    }));
                }
            }
        }
        out
    }

    fn on_written(&mut self, target: Target, result: Result<(Wrote, Option<u64>), WriteError>) {
        let now = Instant::now();
        match result {
            Ok((wrote, rv)) => {
                if let Some(rv) = rv {
                    self.written_rv.insert(target.clone(), rv);
                }
                match (&target, wrote) {
                    (Target::Map(name), Wrote::Status(status, newly)) => {
                        if let Some(entry) = self.model.maps.get_mut(name) {
                            entry.observed = Some(status);
                            if newly {
                                let why = entry.invalid.clone().unwrap_or_default();
                                let uid = entry.uid.clone();
                                self.tell(Notice {
                                    reason: Reason::MapRejected,
                                    note: format!(
                                        "NetworkMap {name} cannot be used ({why}); nodes keep resolving its last valid version"
                                    ),
                                    regarding: reference(crate::crd::API_VERSION, "NetworkMap", name, uid.as_deref()),
                                    related: None,
                                });
                            }
                        }
                        self.count("status");
                    }
                    (Target::Node(name), Wrote::Labels(changes)) => {
                        if self.label_repairs.remove(name) {
                            let uid = self.model.nodes.get(name).and_then(|n| n.uid.clone());
                            self.tell(Notice {
                                reason: Reason::LabelRepaired,
                                note: format!(
                                    "Node {name}'s {LABEL_PREFIX}* labels were changed by someone else; put back as its NodeSurvey says: {}",
                                    describe_labels(&changes)
                                ),
                                regarding: reference("v1", "Node", name, uid.as_deref()),
                                related: None,
                            });
                        }
                        if let Some(node) = self.model.nodes.get_mut(name) {
                            for (network, value) in changes {
                                match value {
                                    Some(v) => node.network_labels.insert(network, v),
                                    None => node.network_labels.remove(&network),
                                };
                            }
                        }
                        self.count("labels");
                    }
                    (Target::Class(network), Wrote::Class(seen)) => {
                        if self.class_repairs.remove(network)
                            && self.model.maps.contains_key(network)
                        {
                            let class = crate::dra::class_name(network);
                            let uid = self.model.maps.get(network).and_then(|m| m.uid.clone());
                            self.tell(Notice {
                                reason: Reason::DeviceClassRepaired,
                                note: format!(
                                    "DeviceClass {class} was edited or deleted by someone else; put back as NetworkMap {network} says"
                                ),
                                regarding: reference(crate::crd::API_VERSION, "NetworkMap", network, uid.as_deref()),
                                related: Some(reference("resource.k8s.io/v1", "DeviceClass", &class, None)),
                            });
                        }
                        match seen {
                            Some(seen) => self.model.classes.insert(network.clone(), seen),
                            None => self.model.classes.remove(network),
                        };
                        self.count("device_class");
                    }
                    _ => {}
                }
                self.pacer.finish(&target, Some(true), now);
            }
            Err(WriteError::Api(kube::Error::Api(s))) if s.code == 404 => {
                // Deleted meanwhile: its watch event says so.
                self.pacer.finish(&target, None, now);
            }
            Err(e) => {
                self.metrics.api_errors.inc();
                let what = match &target {
                    Target::Map(n) => format!("status of NetworkMap {n}"),
                    Target::Node(n) => format!("labels of Node {n}"),
                    Target::Class(n) => format!("DeviceClass of network {n}"),
                };
                tracing::warn!("writing the {what} failed ({e}); retrying with backoff");
                self.pacer.finish(&target, Some(false), now);
            }
        }
    }

    fn tell(&self, notice: Notice) {
        if let Some(events) = &self.events {
            events.emit(notice);
        }
    }

    fn count(&self, kind: &'static str) {
        self.metrics.writes.get_or_create(&KindLabel { kind }).inc();
    }

    /// Rebuilds the picture and the per-map gauges.
    fn publish(&mut self) {
        self.view_due = None;
        self.view_last = Some(Instant::now());
        let time = crate::condition::now();
        let mut summary = Vec::with_capacity(self.model.maps.len());
        let mut gauged = BTreeSet::new();
        for name in self.model.maps.keys() {
            let Some(status) = self.model.map_status(name, &time) else {
                continue;
            };
            let label = MapLabel { map: name.clone() };
            self.metrics
                .selected
                .get_or_create(&label)
                .set(i64::from(status.selected_nodes));
            self.metrics
                .resolved
                .get_or_create(&label)
                .set(i64::from(status.resolved_nodes));
            let missing = status.selected_nodes.saturating_sub(status.resolved_nodes);
            self.metrics
                .unresolved
                .get_or_create(&label)
                .set(i64::from(missing));
            summary.push((name.clone(), status.resolved));
            gauged.insert(name.clone());
        }
        for gone in self.gauged.difference(&gauged) {
            let label = MapLabel { map: gone.clone() };
            self.metrics.selected.remove(&label);
            self.metrics.resolved.remove(&label);
            self.metrics.unresolved.remove(&label);
        }
        self.gauged = gauged;
        self.metrics.publish(View {
            topology: self.model.topology(),
            summary,
        });
    }
}

/// Whether a status says the map's spec is refused.
fn rejected(status: &NetworkMapStatus) -> bool {
    status.conditions.iter().any(|c| c.reason == "InvalidSpec")
}

/// `green=true, blue removed`, from a label write's changes.
fn describe_labels(changes: &BTreeMap<String, Option<String>>) -> String {
    changes
        .iter()
        .map(|(network, value)| match value {
            Some(v) => format!("{LABEL_PREFIX}{network}={v}"),
            None => format!("{LABEL_PREFIX}{network} removed"),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// network -> new value (`None`: removed) from a label merge patch.
fn label_changes(patch: &Value) -> BTreeMap<String, Option<String>> {
    patch["metadata"]["labels"]
        .as_object()
        .into_iter()
        .flatten()
        .filter_map(|(k, v)| {
            let network = k.strip_prefix(LABEL_PREFIX)?;
            Some((network.to_string(), v.as_str().map(str::to_string)))
        })
        .collect()
}
