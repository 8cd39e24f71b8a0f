//! The agent: one event loop over link and address events, LLDP neighbor
//! changes and NetworkMap changes (a directory, or the API); after a short
//! coalescing window it resolves every network, writes the state dir and,
//! with a cluster, hands the NodeSurvey to the writer task.
//!
//! It rides out what it can: a state dir that cannot be written (full,
//! read-only) is retried with backoff while the old files stand; a maps
//! directory that goes away means no maps until it is back; a failed link
//! subscription is opened again. It stops on SIGTERM/SIGINT, or at start
//! on an error it names.

pub mod cluster;
pub mod conditions;
pub mod map_store;
pub mod maps_dir;
pub mod metrics;
pub mod notices;
pub mod restore;
pub mod slices;
pub mod writer;

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt as _;
use k8s_openapi::api::core::v1::Node;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::api::DynamicObject;
use kube::runtime::watcher::{self, Event};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use crate::crd::{self, NodeSurveyStatus, Summary};
use crate::discovery::{Discovery, DiscoveryError};
use crate::events::{Events, Notice, reference};
use crate::inventory::{Change, Interface, Protocol, neighbor_label};
use crate::kubelet::Registration;
use crate::lldp::Lldp;
use crate::resolve::{self, Resolution};
use crate::snapshot::{MapList, NodeLabels, Snapshot, read_neighbors};
use crate::state_dir::{StateDir, StateDirError};
use crate::survey::SurveyFilter;

use self::cluster::{MapEvents, NodeEvents};
use self::conditions::{Dra, Facts, MapsFrom, Sharing};
use self::map_store::MapStore;
use self::maps_dir::{DirEvent, LoadedMap, MapsDir, MapsDirError};
use self::metrics::{Metrics, ProtocolLabel, ReasonLabel, RejectedLabel, StateLabel, catch_up};
use self::writer::Desired;

/// How long after the first change the agent waits for more before it
/// resolves: long enough to take a burst as one write, short enough that a
/// cable pull reaches the snapshot in milliseconds.
pub const COALESCE: Duration = Duration::from_millis(5);
/// How long a cluster-mode agent waits for its Node before it says so and
/// publishes without it.
pub const NODE_WAIT: Duration = Duration::from_secs(30);
/// Retries of a state dir write: first after this, doubling to the max.
const RETRY_FIRST: Duration = Duration::from_millis(100);
const RETRY_MAX: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error(transparent)]
    Discovery(#[from] DiscoveryError),
    #[error(transparent)]
    Maps(#[from] MapsDirError),
    #[error(transparent)]
    StateDir(#[from] StateDirError),
    #[error("invalid --node-labels entry {0:?}: expected key=value")]
    BadLabel(String),
}

#[derive(Clone, Debug)]
pub struct Config {
    pub node: String,
    /// Labels for nodeSelector until the API tells (standalone: all there is).
    pub labels: BTreeMap<String, String>,
    pub state_dir: PathBuf,
    pub filter: SurveyFilter,
    /// Whether to listen for neighbors, and for which protocols.
    pub lldp: bool,
    pub protocols: crate::lldp::Protocols,
}

/// Parses `k=v,k2=v2` (empty: no labels).
pub fn parse_labels(s: &str) -> Result<BTreeMap<String, String>, AgentError> {
    s.split(',')
        .map(str::trim)
        .filter(|kv| !kv.is_empty())
        .map(|kv| match kv.split_once('=') {
            Some((k, v)) if !k.trim().is_empty() => {
                Ok((k.trim().to_string(), v.trim().to_string()))
            }
            _ => Err(AgentError::BadLabel(kv.to_string())),
        })
        .collect()
}

/// Where NetworkMaps come from, and where results go besides the state dir.
pub enum Source {
    /// Standalone: a directory of map files.
    Dir(MapsDir),
    /// A cluster: watches in, the writer task out.
    Cluster(Cluster),
}

pub struct Cluster {
    pub store: MapStore,
    pub maps: MapEvents,
    pub node: NodeEvents,
    /// The writer task's input.
    pub desired: watch::Sender<Option<Desired>>,
    /// `--maps`: resolve from this directory until the API lists the maps.
    pub fallback: Option<MapsDir>,
    /// How long to wait for the Node before saying it is missing
    /// ([`NODE_WAIT`]).
    pub node_wait: Duration,
    /// The slice task's sharing mode, when DRA is on.
    pub sharing: Option<watch::Receiver<Option<Sharing>>>,
    /// What the kubelet says of the DRA plugin, when DRA is on.
    pub kubelet: Option<watch::Receiver<Registration>>,
    /// Where Events about this node's NodeSurvey go.
    pub events: Option<Events>,
}

/// What the agent knows and last published.
pub struct Agent {
    config: Config,
    discovery: Discovery,
    lldp: Option<Lldp>,
    maps: Vec<LoadedMap>,
    maps_from: MapsFrom,
    malformed: Vec<String>,
    state: StateDir,
    /// Why the state dir could not be written, while it cannot.
    state_error: Option<String>,
    /// The neighbor table changed and is not saved yet.
    neighbors_unsaved: bool,
    resolution: Resolution,
    conditions: Vec<Condition>,
    /// The conditions the last run left, until the API has been heard
    /// from: the states a restart passes through before (maps not listed
    /// yet) must not move the transition times of the states it comes
    /// back to, or every restart would rewrite the NodeSurvey.
    restored: Vec<Condition>,
    /// Whether and how the ResourceSlice offers the networks.
    dra: Dra,
    /// Whether the kubelet registered the DRA plugin (with DRA).
    kubelet: Option<Registration>,
    /// With a cluster: where Events go, and each selected network's
    /// device as last published (by this run, or the last one's
    /// survey.json), to tell what changed.
    events: Option<Events>,
    published: BTreeMap<String, Option<String>>,
    metrics: Arc<Metrics>,
}

/// The Node, as the Node watch shows it.
#[derive(Debug, Default)]
struct NodeSeen {
    uid: Option<String>,
    /// It has not appeared within [`NODE_WAIT`].
    missing: bool,
}

/// The loop's inputs, one at a time.
enum Input {
    Stop,
    Links(Result<Vec<Change>, DiscoveryError>),
    LinksRetry,
    Neighbors(Vec<u32>),
    Dir(DirEvent),
    DirDeadline,
    Maps(Box<Result<Event<DynamicObject>, watcher::Error>>),
    Node(Box<Result<Event<Node>, watcher::Error>>),
    Publish,
    NodeWait,
    Sharing(Option<Sharing>),
    Kubelet(Registration),
}

/// What the loop waits on besides the agent's own sources.
struct Inputs {
    dir: Option<MapsDir>,
    dir_events: Option<mpsc::UnboundedReceiver<DirEvent>>,
    store: Option<MapStore>,
    map_events: Option<MapEvents>,
    node_events: Option<NodeEvents>,
    desired: Option<watch::Sender<Option<Desired>>>,
    node: NodeSeen,
    node_wait: Option<Instant>,
    /// The coalescing window's end.
    due: Option<Instant>,
    /// A state dir write failed: when to try again, and the next delay.
    retry: Option<(Instant, Duration)>,
    /// The link subscription failed: when to open it again.
    links_retry: Option<Instant>,
    sharing: Option<watch::Receiver<Option<Sharing>>>,
    kubelet: Option<watch::Receiver<Registration>>,
}

impl Agent {
    /// Starts discovery (and LLDP), takes the state dir and puts back what
    /// it remembers: the LLDP neighbors, the conditions.
    pub async fn start(config: Config, metrics: Arc<Metrics>) -> Result<Self, AgentError> {
        // The lock first: a second agent must not even listen.
        let state = StateDir::open(&config.state_dir)?;
        let discovery = Discovery::watch(config.filter.clone()).await?;
        let survey = state.survey();
        let published = survey
            .iter()
            .flat_map(|s| &s.networks)
            .filter(|(_, n)| n.selected)
            .map(|(name, n)| (name.clone(), n.device.clone()))
            .collect();
        let conditions = survey.map(|s| s.conditions).unwrap_or_default();
        let mut agent = Agent {
            lldp: config.lldp.then(|| Lldp::with(config.protocols)),
            config,
            discovery,
            maps: Vec::new(),
            maps_from: MapsFrom::Dir,
            malformed: Vec::new(),
            state,
            state_error: None,
            neighbors_unsaved: false,
            resolution: Resolution::new(),
            restored: conditions.clone(),
            conditions,
            dra: Dra::Off,
            kubelet: None,
            events: None,
            published,
            metrics,
        };
        if let (Some(lldp), Ok(saved)) = (&mut agent.lldp, read_neighbors(agent.state.path())) {
            let interfaces = agent.discovery.interfaces();
            let n = restore::restore(saved, &agent.config.node, lldp, &interfaces);
            if n > 0 {
                tracing::info!("restored {n} neighbor(s) from neighbors.json");
            }
        }
        agent.follow_links();
        Ok(agent)
    }

    pub fn state(&self) -> &StateDir {
        &self.state
    }

    /// Keeps LLDP listening on the surveyed interfaces that are up.
    fn follow_links(&mut self) {
        if let Some(lldp) = &mut self.lldp {
            lldp.set_own_macs(
                self.discovery
                    .inventory()
                    .links()
                    .filter_map(|l| l.interface.mac.as_deref()),
            );
            for ifindex in lldp.follow(&self.discovery.interfaces()) {
                let name = self
                    .discovery
                    .surveyed(ifindex)
                    .map_or("?", |i| i.name.as_str());
                tracing::info!(
                    "{name}: neighbor forgotten (link down or gone: the cable may have moved)"
                );
            }
        }
    }

    /// The surveyed interfaces with their neighbors.
    fn interfaces(&self) -> Vec<Interface> {
        let mut interfaces = self.discovery.interfaces();
        if let Some(lldp) = &self.lldp {
            lldp.annotate(&mut interfaces);
        }
        interfaces
    }

    /// Resolves every network, writes what changed to the state dir and
    /// returns what the API should show. Logs each network whose
    /// resolution moved, and why. A state dir that cannot be written is
    /// reported (`Err`, the reason kept for the conditions) and retried by
    /// the caller.
    pub fn publish(&mut self, node_missing: Option<&str>) -> (Desired, Result<(), String>) {
        let failing = self.state_error.is_some();
        let published = self.publish_once(node_missing);
        if failing && published.1.is_ok() {
            // Written again: say so in the files too, not only next time.
            return self.publish_once(node_missing);
        }
        published
    }

    fn publish_once(&mut self, node_missing: Option<&str>) -> (Desired, Result<(), String>) {
        let mut interfaces = self.interfaces();
        let maps = self.maps.iter().map(|m| &m.compiled);
        let resolution =
            resolve::resolve(&interfaces, maps, &self.config.node, &self.config.labels);
        resolve::annotate(&mut interfaces, &resolution);
        let names: BTreeSet<&String> = self.resolution.keys().chain(resolution.keys()).collect();
        for name in names {
            if let Some(line) = resolve::explain(
                name,
                self.resolution.get(name),
                resolution.get(name),
                &interfaces,
            ) {
                tracing::info!("{line}");
            }
        }
        let facts = Facts {
            maps_from: self.maps_from,
            node_missing: node_missing.map(str::to_string),
            state_error: self.state_error.clone(),
            networks_resolved: resolution.values().filter(|r| r.device.is_some()).count(),
            lldp_enabled: self.lldp.is_some(),
            lldp_listening: self.lldp.as_ref().map_or(0, |l| l.listening().count()),
            lldp_neighbors: interfaces.iter().filter(|i| i.lldp.is_some()).count(),
            malformed: self.malformed.clone(),
            unresolved: resolution
                .iter()
                .filter(|(_, r)| r.selected && r.device.is_none())
                .map(|(n, _)| n.clone())
                .collect(),
            dra: self.dra,
            kubelet: self.kubelet.clone(),
        };
        let previous: Vec<Condition> = self
            .conditions
            .iter()
            .chain(&self.restored)
            .cloned()
            .collect();
        self.conditions = conditions::conditions(&previous, &facts, &crate::condition::now());
        self.tell(&resolution, &interfaces);
        let status = status(interfaces, &resolution, self.conditions.clone());
        let written = self.write_state(&resolution, &status);
        self.record(&status, &facts);
        self.resolution = resolution;
        let desired = Desired {
            status,
            node_uid: None,
        };
        (desired, written)
    }

    /// Events for the networks whose device changed since last published.
    fn tell(&mut self, resolution: &resolve::Resolution, interfaces: &[Interface]) {
        let Some(events) = &self.events else {
            return;
        };
        let node = &self.config.node;
        for n in notices::notices(node, &self.published, resolution, interfaces) {
            events.emit(Notice {
                reason: n.reason,
                note: n.note,
                regarding: reference(crd::API_VERSION, "NodeSurvey", node, None),
                related: Some(reference(crd::API_VERSION, "NetworkMap", &n.network, None)),
            });
        }
        self.published = notices::devices(resolution);
    }

    /// Writes the state dir; `Err` with why when it cannot.
    fn write_state(
        &mut self,
        resolution: &Resolution,
        status: &NodeSurveyStatus,
    ) -> Result<(), String> {
        let maps = MapList::new(self.maps.iter().map(|m| m.map.clone()).collect());
        let snapshot = Snapshot::of(&self.config.node, resolution);
        let mut result = self.state.publish(snapshot, status, &maps).map(|_| ());
        if result.is_ok() {
            self.neighbors_unsaved |= self.lldp.as_mut().is_some_and(Lldp::take_dirty);
            if self.neighbors_unsaved {
                result = self.save_neighbors();
            }
        }
        match result {
            Ok(()) => {
                if let Some(e) = self.state_error.take() {
                    tracing::info!("the state dir is written again (it was not: {e})");
                }
                Ok(())
            }
            Err(e) => {
                let reason = e.to_string();
                self.metrics.state_errors.inc();
                if self.state_error.as_deref() != Some(&reason) {
                    tracing::warn!("{reason}: keeping the last good files, retrying");
                }
                self.state_error = Some(reason.clone());
                Err(reason)
            }
        }
    }

    fn save_neighbors(&mut self) -> Result<(), crate::snapshot::SnapshotError> {
        let Some(lldp) = &self.lldp else {
            return Ok(());
        };
        let saved = restore::save(&self.config.node, lldp, &self.discovery.interfaces());
        self.state.save_neighbors(&saved)?;
        self.neighbors_unsaved = false;
        Ok(())
    }

    fn record(&self, status: &NodeSurveyStatus, facts: &Facts) {
        let m = &self.metrics;
        m.interfaces.set(i64::from(status.summary.interfaces));
        m.interfaces_up.set(i64::from(status.summary.up));
        m.neighbors.set(i64::from(status.summary.neighbors));
        let unresolved = status.networks.len() - facts.networks_resolved;
        m.networks
            .get_or_create(&StateLabel { state: "resolved" })
            .set(facts.networks_resolved as i64);
        m.networks
            .get_or_create(&StateLabel {
                state: "unresolved",
            })
            .set(unresolved as i64);
        catch_up(&m.netlink_events, self.discovery.stats().events);
        if let Some(lldp) = &self.lldp {
            let stats = lldp.stats();
            for (protocol, count) in &stats.frames {
                let label = ProtocolLabel {
                    protocol: protocol.as_str(),
                };
                catch_up(&m.neighbor_frames.get_or_create(&label), *count);
                if *protocol == Protocol::Lldp {
                    catch_up(&m.lldp_frames, *count);
                }
            }
            for ((protocol, reason), count) in &stats.rejected {
                let label = RejectedLabel {
                    protocol: protocol.as_str(),
                    reason,
                };
                catch_up(&m.neighbor_rejected.get_or_create(&label), *count);
                if *protocol == Protocol::Lldp {
                    catch_up(
                        &m.lldp_rejected.get_or_create(&ReasonLabel { reason }),
                        *count,
                    );
                }
            }
        }
        catch_up(&m.snapshot_writes, self.state.writes());
        m.set_ready();
    }

    /// Runs until `shutdown` completes.
    pub async fn run(
        &mut self,
        source: Source,
        shutdown: impl Future<Output = ()>,
    ) -> Result<(), AgentError> {
        let mut inputs = self.inputs(source)?;
        self.publish_to(&mut inputs);
        tracing::info!(
            "surveying node {}: {} interfaces, {} networks mapped, state in {}",
            self.config.node,
            self.discovery.interfaces().len(),
            self.maps.len(),
            self.state.path().display()
        );
        tokio::pin!(shutdown);
        loop {
            let input = self.next(&mut inputs, shutdown.as_mut()).await;
            let changed = match input {
                Input::Stop => break,
                Input::Links(changes) => self.on_links(changes, &mut inputs),
                Input::LinksRetry => self.on_links_retry(&mut inputs).await,
                Input::Neighbors(changed) => {
                    for ifindex in changed {
                        self.log_neighbor(ifindex);
                    }
                    true
                }
                Input::Dir(event) => self.on_dir(Some(event), &mut inputs),
                Input::DirDeadline => self.on_dir(None, &mut inputs),
                Input::Maps(event) => self.on_maps(*event, &mut inputs),
                Input::Node(event) => self.on_node(*event, &mut inputs),
                Input::NodeWait => {
                    inputs.node_wait = None;
                    if inputs.node.uid.is_none() {
                        inputs.node.missing = true;
                        tracing::warn!(
                            "no Node named {:?} has appeared: is the node name right (--node-name, else NODE_NAME, else the hostname)? Publishing the NodeSurvey without its Node meanwhile",
                            self.config.node
                        );
                    }
                    true
                }
                Input::Sharing(sharing) => {
                    self.dra = sharing.map_or(Dra::Asking, Dra::On);
                    true
                }
                Input::Kubelet(registration) => self.on_kubelet(registration),
                Input::Publish => {
                    inputs.due = None;
                    self.publish_to(&mut inputs);
                    false
                }
            };
            if changed {
                inputs.due.get_or_insert_with(|| Instant::now() + COALESCE);
            }
        }
        tracing::info!("stopping");
        // A rollout restarts every agent: leave the neighbors with their
        // expiries as they stand, so the next one resolves as this one did.
        if self.lldp.is_some() {
            if let Err(e) = self.save_neighbors() {
                tracing::warn!("cannot save the neighbors on the way out: {e}");
            }
        }
        Ok(())
    }

    /// Sets the loop up for `source`: the maps to start from, watches.
    fn inputs(&mut self, source: Source) -> Result<Inputs, AgentError> {
        let mut inputs = Inputs {
            dir: None,
            dir_events: None,
            store: None,
            map_events: None,
            node_events: None,
            desired: None,
            node: NodeSeen::default(),
            node_wait: None,
            due: None,
            retry: None,
            links_retry: None,
            sharing: None,
            kubelet: None,
        };
        let dir = match source {
            Source::Dir(dir) => {
                self.maps_from = MapsFrom::Dir;
                Some(dir)
            }
            Source::Cluster(c) => {
                self.maps = c.store.maps();
                self.maps_from = MapsFrom::Saved;
                inputs.store = Some(c.store);
                inputs.map_events = Some(c.maps);
                inputs.node_events = Some(c.node);
                inputs.desired = Some(c.desired);
                if c.sharing.is_some() {
                    self.dra = Dra::Asking;
                }
                inputs.sharing = c.sharing;
                if let Some(rx) = &c.kubelet {
                    self.on_kubelet(rx.borrow().clone());
                }
                inputs.kubelet = c.kubelet;
                self.events = c.events;
                inputs.node_wait = Some(Instant::now() + c.node_wait);
                if c.fallback.is_some() {
                    self.maps_from = MapsFrom::DirUntilApi;
                    tracing::info!(
                        "resolving with the maps of --maps until the API lists the NetworkMaps"
                    );
                }
                c.fallback
            }
        };
        if let Some(mut dir) = dir {
            inputs.dir_events = Some(dir.watch()?);
            self.take_dir(&dir);
            inputs.dir = Some(dir);
        }
        Ok(inputs)
    }

    fn take_dir(&mut self, dir: &MapsDir) {
        self.maps = dir.maps();
        self.malformed = dir
            .errors()
            .iter()
            .map(|(p, e)| format!("{}: {e}", p.display()))
            .collect();
    }

    /// The next input: one select over every source.
    async fn next(
        &mut self,
        inputs: &mut Inputs,
        shutdown: std::pin::Pin<&mut impl Future<Output = ()>>,
    ) -> Input {
        let publish_at = [inputs.due, inputs.retry.map(|(at, _)| at)]
            .into_iter()
            .flatten()
            .min();
        let dir_deadline = inputs.dir.as_ref().and_then(MapsDir::next_deadline);
        let links_ok = inputs.links_retry.is_none();
        tokio::select! {
            () = shutdown => Input::Stop,
            changes = self.discovery.changes(), if links_ok => Input::Links(changes),
            () = sleep_until(inputs.links_retry) => Input::LinksRetry,
            changed = lldp_changes(&mut self.lldp) => Input::Neighbors(changed),
            Some(event) = recv(&mut inputs.dir_events) => Input::Dir(event),
            () = sleep_until(dir_deadline) => Input::DirDeadline,
            Some(event) = next(inputs.map_events.as_mut()) => Input::Maps(Box::new(event)),
            Some(event) = next(inputs.node_events.as_mut()) => Input::Node(Box::new(event)),
            () = sleep_until(publish_at) => Input::Publish,
            () = sleep_until(inputs.node_wait) => Input::NodeWait,
            Some(sharing) = changed(inputs.sharing.as_mut()) => Input::Sharing(sharing),
            Some(registration) = changed(inputs.kubelet.as_mut()) => Input::Kubelet(registration),
        }
    }

    fn on_links(
        &mut self,
        changes: Result<Vec<Change>, DiscoveryError>,
        inputs: &mut Inputs,
    ) -> bool {
        match changes {
            Ok(changes) => {
                for change in changes {
                    tracing::info!("{change}");
                }
                self.follow_links();
                true
            }
            Err(e) => {
                tracing::warn!("link events: {e}; subscribing again in 1s");
                inputs.links_retry = Some(Instant::now() + Duration::from_secs(1));
                false
            }
        }
    }

    async fn on_links_retry(&mut self, inputs: &mut Inputs) -> bool {
        inputs.links_retry = None;
        match self.discovery.resubscribe().await {
            Ok(()) => {
                tracing::info!("link events subscribed again");
                self.follow_links();
                true
            }
            Err(e) => {
                tracing::warn!("cannot subscribe to link events ({e}); trying again in 5s");
                inputs.links_retry = Some(Instant::now() + Duration::from_secs(5));
                false
            }
        }
    }

    /// A maps directory event (or, with `None`, an emptied file's grace
    /// running out).
    fn on_dir(&mut self, event: Option<DirEvent>, inputs: &mut Inputs) -> bool {
        let Some(dir) = &mut inputs.dir else {
            return false;
        };
        let mut changed = match event {
            Some(event) => dir.handle(event),
            None => dir.deadline_passed(Instant::now()),
        };
        // Take the rest of a burst now.
        if let Some(rx) = &mut inputs.dir_events {
            while let Ok(event) = rx.try_recv() {
                changed |= dir.handle(event);
            }
        }
        let dir = &*dir;
        self.take_dir(dir);
        changed
    }

    fn on_maps(
        &mut self,
        event: Result<Event<DynamicObject>, watcher::Error>,
        inputs: &mut Inputs,
    ) -> bool {
        let Some(store) = &mut inputs.store else {
            return false;
        };
        let event = match event {
            Ok(event) => event,
            Err(e) => {
                self.metrics.api_errors.inc();
                tracing::warn!("NetworkMap watch: {e}; resolving with the maps last seen");
                return false;
            }
        };
        let changed = store.apply(event);
        if store.listed() && self.maps_from != MapsFrom::Api {
            if inputs.dir.take().is_some() {
                inputs.dir_events = None;
                tracing::info!("the API answered: NetworkMaps come from it now, not --maps");
            }
            self.maps_from = MapsFrom::Api;
            self.maps = store.maps();
            self.malformed = store.malformed();
            return true;
        }
        if self.maps_from == MapsFrom::DirUntilApi {
            return false;
        }
        if changed {
            self.maps = store.maps();
        }
        let malformed = store.malformed();
        let degraded = malformed != self.malformed;
        self.malformed = malformed;
        changed || degraded
    }

    fn on_node(&mut self, event: Result<Event<Node>, watcher::Error>, inputs: &mut Inputs) -> bool {
        match event {
            Ok(Event::Apply(node) | Event::InitApply(node)) => {
                let labels = cluster::selector_labels(&node);
                let uid = node.metadata.uid.clone();
                let first = inputs.node.uid.is_none();
                if inputs.node.missing {
                    tracing::info!("Node {} appeared", self.config.node);
                }
                inputs.node.missing = false;
                let moved = inputs.node.uid != uid;
                inputs.node.uid = uid;
                if labels == self.config.labels && !first && !moved {
                    return false;
                }
                if labels != self.config.labels {
                    tracing::info!("node labels: {labels:?}");
                }
                let saved = NodeLabels {
                    node: self.config.node.clone(),
                    labels: labels.clone(),
                };
                if let Err(e) = self.state.save_labels(&saved) {
                    tracing::warn!("cannot save the Node's labels: {e}");
                }
                self.config.labels = labels;
                true
            }
            Ok(Event::Delete(_)) => {
                tracing::warn!("Node {} was deleted", self.config.node);
                inputs.node.uid = None;
                true
            }
            Ok(_) => false,
            Err(e) => {
                self.metrics.api_errors.inc();
                tracing::warn!("Node watch: {e}");
                false
            }
        }
    }

    /// Publishes, and hands the result to the writer once the API may hear
    /// it: after the maps are listed and the Node seen (or waited for), so a
    /// restart never publishes a half-informed status (which would flap
    /// the node's labels).
    fn publish_to(&mut self, inputs: &mut Inputs) {
        let missing = inputs.node.missing.then(|| self.config.node.clone());
        let (mut desired, written) = self.publish(missing.as_deref());
        match written {
            Ok(()) => inputs.retry = None,
            Err(_) => {
                let delay = inputs
                    .retry
                    .map_or(RETRY_FIRST, |(_, d)| (d * 2).min(RETRY_MAX));
                inputs.retry = Some((Instant::now() + delay, delay));
            }
        }
        let informed = inputs.store.as_ref().is_some_and(MapStore::listed)
            && (inputs.node.uid.is_some() || inputs.node.missing);
        let Some(writer) = inputs.desired.as_ref().filter(|_| informed) else {
            return;
        };
        self.restored.clear();
        desired.node_uid = inputs.node.uid.clone();
        writer.send_if_modified(|current| {
            let changed = current.as_ref() != Some(&desired);
            if changed {
                *current = Some(desired);
            }
            changed
        });
    }

    /// What the kubelet says of the DRA plugin: the metric and readiness
    /// follow at once; the condition with the next publish.
    fn on_kubelet(&mut self, registration: Registration) -> bool {
        self.metrics.set_kubelet(&registration);
        let changed = self.kubelet.as_ref() != Some(&registration);
        self.kubelet = Some(registration);
        changed
    }

    fn log_neighbor(&self, ifindex: u32) {
        let name = self
            .discovery
            .surveyed(ifindex)
            .map_or("?", |i| i.name.as_str());
        match self.lldp.as_ref().and_then(|l| l.neighbor(ifindex)) {
            Some(n) => tracing::info!(
                "{name}: {} neighbor {}",
                n.protocol.as_str().to_uppercase(),
                neighbor_label(n)
            ),
            None => tracing::info!("{name}: neighbor gone"),
        }
    }
}

async fn lldp_changes(lldp: &mut Option<Lldp>) -> Vec<u32> {
    match lldp {
        Some(lldp) => lldp.changes().await,
        None => std::future::pending().await,
    }
}

async fn recv<T>(rx: &mut Option<mpsc::UnboundedReceiver<T>>) -> Option<T> {
    match rx {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

async fn next<S: futures::Stream + Unpin>(stream: Option<&mut S>) -> Option<S::Item> {
    match stream {
        Some(s) => s.next().await,
        None => std::future::pending().await,
    }
}

/// The next value of a watch; pending once its sender is gone.
async fn changed<T: Clone>(rx: Option<&mut watch::Receiver<T>>) -> Option<T> {
    let rx = rx?;
    match rx.changed().await {
        Ok(()) => Some(rx.borrow_and_update().clone()),
        Err(_) => std::future::pending().await,
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// The NodeSurvey status for these interfaces and this resolution.
pub fn status(
    interfaces: Vec<Interface>,
    resolution: &Resolution,
    conditions: Vec<Condition>,
) -> NodeSurveyStatus {
    let count = |f: fn(&Interface) -> bool| interfaces.iter().filter(|i| f(i)).count() as u32;
    let summary = Summary {
        interfaces: interfaces.len() as u32,
        up: count(Interface::is_up),
        neighbors: count(|i| i.lldp.is_some()),
        networks: resolution
            .iter()
            .filter(|(_, r)| r.device.is_some())
            .map(|(n, _)| n.as_str())
            .collect::<Vec<_>>()
            .join(","),
    };
    NodeSurveyStatus {
        summary,
        networks: resolution
            .iter()
            .map(|(n, r)| (n.clone(), r.status()))
            .collect(),
        interfaces,
        conditions,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_labels() {
        let l = parse_labels("rack=r1, zone = a,empty=").unwrap();
        assert_eq!(l["rack"], "r1");
        assert_eq!(l["zone"], "a");
        assert_eq!(l["empty"], "");
        assert!(parse_labels("").unwrap().is_empty());
        assert!(
            parse_labels("rack")
                .unwrap_err()
                .to_string()
                .contains("\"rack\"")
        );
        assert!(parse_labels("=x").is_err());
    }
}
