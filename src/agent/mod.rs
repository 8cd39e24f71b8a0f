//! The agent: one event loop over link events, LLDP neighbor changes and
//! NetworkMap changes; after a short coalescing window it resolves every
//! network and writes the state dir (and, with a cluster, the API).

pub mod maps_dir;

use std::collections::BTreeMap;
use std::future::Future;
use std::path::PathBuf;
use std::time::Duration;

use tokio::time::Instant;

use crate::crd::{NodeSurveyStatus, Summary};
use crate::discovery::{Discovery, DiscoveryError};
use crate::inventory::{Interface, neighbor_label};
use crate::lldp::Lldp;
use crate::resolve::{self, Resolution};
use crate::snapshot::{MapList, Snapshot, SnapshotError, StateDir};
use crate::survey::SurveyFilter;

use self::maps_dir::{LoadedMap, MapsDir, MapsDirError};

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
    /// Labels for nodeSelector (standalone: `--node-labels`).
    pub labels: BTreeMap<String, String>,
    pub state_dir: PathBuf,
    pub maps_dir: PathBuf,
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

/// What the agent knows and last published.
pub struct Agent {
    config: Config,
    discovery: Discovery,
    lldp: Option<Lldp>,
    maps: Vec<LoadedMap>,
    state: StateDir,
    resolution: Resolution,
}

impl Agent {
    /// Starts discovery (and LLDP) and opens the state dir.
    pub async fn start(config: Config, maps: Vec<LoadedMap>) -> Result<Self, AgentError> {
        let discovery = Discovery::watch(config.filter.clone()).await?;
        let state = StateDir::open(&config.state_dir)?;
        let mut agent = Agent {
            lldp: config.lldp.then(Lldp::new),
            config,
            discovery,
            maps,
            state,
            resolution: Resolution::new(),
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

    /// Replaces the maps in force.
    pub fn set_maps(&mut self, maps: Vec<LoadedMap>) {
        self.maps = maps;
    }

    /// Resolves every network and writes what changed, logging each
    /// network whose resolution moved and why.
    pub fn publish(&mut self) -> Result<(), AgentError> {
        let mut interfaces = self.interfaces();
        let compiled: Vec<_> = self.maps.iter().map(|m| m.compiled.clone()).collect();
        let resolution = resolve::resolve(
            &interfaces,
            &compiled,
            &self.config.node,
            &self.config.labels,
        );
        resolve::annotate(&mut interfaces, &resolution);
        let names: std::collections::BTreeSet<&String> =
            self.resolution.keys().chain(resolution.keys()).collect();
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
        let status = status(interfaces, &resolution);
        let maps = MapList::new(self.maps.iter().map(|m| m.map.clone()).collect());
        let written =
            self.state
                .publish(Snapshot::of(&self.config.node, &resolution), &status, &maps)?;
        if written.networks {
            tracing::debug!("networks.json generation {}", self.state.generation());
        }
        self.resolution = resolution;
        Ok(())
    }

    /// Runs until `shutdown` completes, with maps from `maps_dir`.
    pub async fn run_standalone(
        &mut self,
        maps_dir: &mut MapsDir,
        shutdown: impl Future<Output = ()>,
    ) -> Result<(), AgentError> {
        let (_watcher, mut map_events) = maps_dir.watch()?;
        self.publish()?;
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
                Some(()) = map_events.recv() => {
                    while map_events.try_recv().is_ok() {}
                    if !maps_dir.reload()? {
                        continue;
                    }
                    self.set_maps(maps_dir.maps());
                }
                () = sleep_until(deadline) => {
                    due = None;
                    self.publish()?;
                    continue;
                }
            }
            due.get_or_insert_with(|| Instant::now() + COALESCE);
        }
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

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// The NodeSurvey status for these interfaces and this resolution.
pub fn status(interfaces: Vec<Interface>, resolution: &Resolution) -> NodeSurveyStatus {
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
        conditions: Vec::new(),
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
