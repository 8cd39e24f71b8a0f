//! The agent: one event loop over link events, LLDP neighbor changes and
//! NetworkMap changes (a directory, or the API); after a short coalescing
//! window it resolves every network, writes the state dir and, with a
//! cluster, hands the NodeSurvey status and node labels to the writer.

pub mod cluster;
pub mod conditions;
pub mod maps_dir;
pub mod metrics;

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt as _;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::runtime::watcher::Event;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use crate::crd::{NodeSurveyStatus, Summary};
use crate::discovery::{Discovery, DiscoveryError};
use crate::inventory::{Interface, neighbor_label};
use crate::lldp::Lldp;
use crate::resolve::{self, Resolution};
use crate::snapshot::{MapList, NodeLabels, Snapshot, SnapshotError, StateDir};
use crate::survey::SurveyFilter;

use self::cluster::{Desired, MapEvents, MapStore, NodeEvents};
use self::conditions::Facts;
use self::maps_dir::{LoadedMap, MapsDir, MapsDirError};
use self::metrics::{Metrics, ReasonLabel, StateLabel, catch_up};

/// How long after the first change the agent waits for more before it
/// resolves: long enough to take a burst as one write, short enough that a
/// cable pull reaches the snapshot in milliseconds.
pub const COALESCE: Duration = Duration::from_millis(5);

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error(transparent)]
    Discovery(#[from] DiscoveryError),
    #[error(transparent)]
    Maps(#[from] MapsDirError),
    #[error(transparent)]
    Snapshot(#[from] SnapshotError),
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
    pub lldp: bool,
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
}

/// What the agent knows and last published.
pub struct Agent {
    config: Config,
    discovery: Discovery,
    lldp: Option<Lldp>,
    maps: Vec<LoadedMap>,
    /// The maps came from their source, not only from maps.json.
    maps_current: bool,
    malformed: Vec<String>,
    state: StateDir,
    resolution: Resolution,
    conditions: Vec<Condition>,
    metrics: Arc<Metrics>,
}

impl Agent {
    /// Starts discovery (and LLDP) and opens the state dir.
    pub async fn start(config: Config, metrics: Arc<Metrics>) -> Result<Self, AgentError> {
        let discovery = Discovery::watch(config.filter.clone()).await?;
        let state = StateDir::open(&config.state_dir)?;
        let mut agent = Agent {
            lldp: config.lldp.then(Lldp::new),
            config,
            discovery,
            maps: Vec::new(),
            maps_current: false,
            malformed: Vec::new(),
            state,
            resolution: Resolution::new(),
            conditions: Vec::new(),
            metrics,
        };
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
                tracing::info!("{name}: LLDP neighbor forgotten (link down or gone)");
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
    /// resolution moved, and why.
    pub fn publish(&mut self) -> Result<Desired, AgentError> {
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
            maps_current: self.maps_current,
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
        };
        let now = Time(k8s_openapi::jiff::Timestamp::now());
        self.conditions = conditions::conditions(&self.conditions, &facts, &now);
        let status = status(interfaces, &resolution, self.conditions.clone());
        let maps = MapList::new(self.maps.iter().map(|m| m.map.clone()).collect());
        self.state
            .publish(Snapshot::of(&self.config.node, &resolution), &status, &maps)?;
        self.record(&status, &facts);
        let networks = resolution
            .iter()
            .filter(|(_, r)| r.device.is_some())
            .map(|(n, _)| n.clone())
            .collect();
        self.resolution = resolution;
        Ok(Desired { status, networks })
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
            catch_up(&m.lldp_frames, stats.frames);
            for (reason, count) in &stats.rejected {
                catch_up(
                    &m.lldp_rejected.get_or_create(&ReasonLabel { reason }),
                    *count,
                );
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
        let (mut dir, cluster) = match source {
            Source::Dir(dir) => (Some(dir), None),
            Source::Cluster(cluster) => (None, Some(cluster)),
        };
        // Taken apart so each watch is borrowed on its own in the loop.
        let (mut store, mut map_events, mut node_events, desired) = match cluster {
            Some(c) => (Some(c.store), Some(c.maps), Some(c.node), Some(c.desired)),
            None => (None, None, None, None),
        };
        // The API hears from this agent only once it knows the maps and the
        // node's labels: a half-informed status (say, from before the list
        // came in) would flap the node's labels on every restart.
        let mut node_seen = false;
        // Keep the inotify watcher alive as long as the loop.
        let (_watcher, mut dir_events) = match &dir {
            Some(d) => {
                let (w, rx) = d.watch()?;
                (Some(w), Some(rx))
            }
            None => (None, None),
        };
        if let Some(d) = &dir {
            self.maps = d.maps();
            self.malformed = d
                .errors()
                .iter()
                .map(|(p, e)| format!("{}: {e}", p.display()))
                .collect();
            self.maps_current = true;
        }
        if let Some(store) = &store {
            self.maps = store.maps();
        }
        self.publish_to(None)?;
        tracing::info!(
            "surveying node {}: {} interfaces, {} networks mapped, state in {}",
            self.config.node,
            self.discovery.interfaces().len(),
            self.maps.len(),
            self.state.path().display()
        );
        tokio::pin!(shutdown);
        let mut due: Option<Instant> = None;
        loop {
            let deadline = due;
            tokio::select! {
                () = &mut shutdown => {
                    tracing::info!("stopping");
                    return Ok(());
                }
                changes = self.discovery.changes() => {
                    for change in changes? {
                        tracing::info!("{change}");
                    }
                    self.follow_links();
                }
                changed = lldp_changes(&mut self.lldp) => {
                    for ifindex in changed {
                        self.log_neighbor(ifindex);
                    }
                }
                Some(()) = recv(&mut dir_events) => {
                    let Some(dir) = &mut dir else { continue };
                    if let Some(rx) = &mut dir_events {
                        while rx.try_recv().is_ok() {}
                    }
                    let changed = dir.reload()?;
                    self.malformed = dir.errors().iter().map(|(p, e)| format!("{}: {e}", p.display())).collect();
                    if changed {
                        self.maps = dir.maps();
                    }
                }
                Some(event) = next(map_events.as_mut()) => {
                    let Some(store) = &mut store else { continue };
                    match event {
                        Ok(event) => {
                            if store.apply(event) {
                                self.maps = store.maps();
                            }
                            self.malformed = store.malformed();
                            self.maps_current = store.listed();
                        }
                        Err(e) => {
                            self.metrics.api_errors.inc();
                            tracing::warn!("NetworkMap watch: {e}; resolving with the maps last seen");
                            continue;
                        }
                    }
                }
                Some(event) = next(node_events.as_mut()) => {
                    match event {
                        Ok(Event::Apply(node) | Event::InitApply(node)) => {
                            let labels = cluster::selector_labels(&node);
                            let first = !node_seen;
                            node_seen = true;
                            if labels == self.config.labels && !first {
                                continue;
                            }
                            tracing::info!("node labels: {labels:?}");
                            let saved = NodeLabels { node: self.config.node.clone(), labels: labels.clone() };
                            self.state.save_labels(&saved)?;
                            self.config.labels = labels;
                        }
                        Ok(_) => continue,
                        Err(e) => {
                            self.metrics.api_errors.inc();
                            tracing::warn!("Node watch: {e}");
                            continue;
                        }
                    }
                }
                () = sleep_until(deadline) => {
                    due = None;
                    let informed = node_seen && store.as_ref().is_some_and(MapStore::listed);
                    self.publish_to(desired.as_ref().filter(|_| informed))?;
                    continue;
                }
            }
            due.get_or_insert_with(|| Instant::now() + COALESCE);
        }
    }

    fn publish_to(
        &mut self,
        writer: Option<&watch::Sender<Option<Desired>>>,
    ) -> Result<(), AgentError> {
        let desired = self.publish()?;
        if let Some(writer) = writer {
            writer.send_if_modified(|current| {
                let changed = current.as_ref() != Some(&desired);
                if changed {
                    *current = Some(desired);
                }
                changed
            });
        }
        Ok(())
    }

    fn log_neighbor(&self, ifindex: u32) {
        let name = self
            .discovery
            .surveyed(ifindex)
            .map_or("?", |i| i.name.as_str());
        match self.lldp.as_ref().and_then(|l| l.neighbor(ifindex)) {
            Some(n) => tracing::info!("{name}: LLDP neighbor {}", neighbor_label(n)),
            None => tracing::info!("{name}: LLDP neighbor gone"),
        }
    }
}

async fn lldp_changes(lldp: &mut Option<Lldp>) -> Vec<u32> {
    match lldp {
        Some(lldp) => lldp.changes().await,
        None => std::future::pending().await,
    }
}

async fn recv(rx: &mut Option<mpsc::UnboundedReceiver<()>>) -> Option<()> {
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
