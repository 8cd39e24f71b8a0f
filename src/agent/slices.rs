//! The agent's ResourceSlice (DRA, resource.k8s.io/v1): its node's
//! resolved networks as devices of driver `surveyor.dev` in the pool named
//! after the node (see [`crate::dra`] for the devices). A task of its own
//! beside the NodeSurvey writer, fed the same desired status.
//!
//! Written by server-side apply (field manager `surveyor-agent`), owned by
//! the Node (so it goes with a deleted Node), only when the devices
//! change: each change bumps the pool's generation, as the API asks of a
//! pool's writer; at steady state and across an unchanged restart nothing
//! is written. No resolved network: the slice is deleted. The slice is
//! watched, so one deleted or edited by hand is put back (paced like any
//! write); the echo of our own write changes nothing.
//!
//! Whether the cluster keeps `allowMultipleAllocations` (the
//! `DRAConsumableCapacity` gate) is asked once at start with a dry-run
//! apply (not a write); when it does not, each network is published as
//! numbered exclusive devices, and the mode is reported back for the
//! NodeSurvey's `DeviceSharing` condition.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt as _;
use k8s_openapi::api::resource::v1::{Device, ResourcePool, ResourceSlice, ResourceSliceSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::Client;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use kube::runtime::WatchStreamExt as _;
use kube::runtime::watcher::{self, Event};
use tokio::sync::watch;
use tokio::time::Instant;

use super::cluster::FIELD_MANAGER;
use super::metrics::{KindLabel, Metrics};
use super::writer::{Desired, Pace, backoff, jitter, sleep_until};
use crate::dra::{self, Policy, Sharing};

/// How the node's networks are offered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SliceOptions {
    pub policy: Policy,
    /// Numbered devices per network when the cluster cannot share one.
    pub numbered: u16,
}

impl Default for SliceOptions {
    fn default() -> Self {
        SliceOptions {
            policy: Policy::default(),
            numbered: dra::DEFAULT_NUMBERED,
        }
    }
}

/// The one slice of a node's pool.
pub fn slice_name(node: &str) -> String {
    format!("{node}-{}", dra::DRIVER)
}

/// Starts the slice task. `mode` hears which sharing mode is in force once
/// the cluster has been asked.
pub fn spawn_slices(
    client: Client,
    node: String,
    desired: watch::Receiver<Option<Desired>>,
    mode: watch::Sender<Option<Sharing>>,
    metrics: Arc<Metrics>,
    options: SliceOptions,
    pace: Pace,
) -> tokio::task::JoinHandle<()> {
    let task = Slices {
        api: Api::all(client),
        name: slice_name(&node),
        node,
        options,
        metrics,
        mode,
        sharing: None,
        there: None,
        written: None,
        left_out: Vec::new(),
    };
    tokio::spawn(task.run(desired, pace))
}

#[derive(Debug, thiserror::Error)]
enum SliceError {
    #[error(transparent)]
    Api(#[from] kube::Error),
    #[error("no answer within {0:?}")]
    Timeout(Duration),
}

/// What the API holds, as far as this agent knows.
#[derive(Clone, Debug, PartialEq)]
struct There {
    devices: Vec<Device>,
    generation: i64,
    owner: Option<String>,
}

struct Slices {
    api: Api<ResourceSlice>,
    node: String,
    name: String,
    options: SliceOptions,
    metrics: Arc<Metrics>,
    mode: watch::Sender<Option<Sharing>>,
    /// Asked of the cluster once.
    sharing: Option<Sharing>,
    /// `None`: not looked yet; `Some(None)`: no slice.
    there: Option<Option<There>>,
    /// The resource version our last write returned: watch events older
    /// than it are echoes of earlier states.
    written: Option<u64>,
    left_out: Vec<String>,
}

impl Slices {
    async fn run(mut self, mut desired: watch::Receiver<Option<Desired>>, pace: Pace) {
        let mut want: Option<Desired> = None;
        let mut due: Option<Instant> = None;
        let mut last: Option<Instant> = None;
        let mut failures = 0u32;
        let config = watcher::Config::default().fields(&format!("metadata.name={}", self.name));
        let mut events = watcher::watcher(self.api.clone(), config)
            .default_backoff()
            .boxed();
        let mut listed: Option<Option<ResourceSlice>> = None;
        loop {
            tokio::select! {
                event = events.next() => {
                    let seen = match event {
                        Some(Ok(Event::Init)) => {
                            listed = Some(None);
                            continue;
                        }
                        Some(Ok(Event::InitApply(obj))) => {
                            listed = Some(Some(obj));
                            continue;
                        }
                        Some(Ok(Event::InitDone)) => listed.take().unwrap_or_default(),
                        Some(Ok(Event::Apply(obj))) => Some(obj),
                        Some(Ok(Event::Delete(_))) => None,
                        Some(Err(e)) => {
                            tracing::debug!("ResourceSlice watch: {e}");
                            continue;
                        }
                        None => continue,
                    };
                    if self.observe(seen.as_ref()) && want.is_some() {
                        let earliest = last.map_or_else(Instant::now, |at| at + pace.interval);
                        due.get_or_insert(earliest);
                    }
                }
                changed = desired.changed() => {
                    if changed.is_err() {
                        return; // the agent stopped
                    }
                    want = desired.borrow_and_update().clone();
                    let earliest = last.map_or_else(Instant::now, |at| at + pace.interval);
                    due.get_or_insert(earliest);
                }
                () = sleep_until(due) => {
                    due = None;
                    let Some(target) = want.as_ref() else { continue };
                    let attempt = tokio::time::timeout(pace.timeout, self.sync(target));
                    match attempt.await.unwrap_or(Err(SliceError::Timeout(pace.timeout))) {
                        Ok(wrote) => {
                            failures = 0;
                            if wrote {
                                last = Some(Instant::now());
                            }
                        }
                        Err(e) => {
                            failures += 1;
                            self.metrics.api_errors.inc();
                            let wait = backoff(failures, jitter(&self.node));
                            let hint = match &e {
                                SliceError::Api(kube::Error::Api(s)) if s.code == 404 => {
                                    " (does the cluster serve resource.k8s.io/v1? --dra needs Kubernetes 1.34+)"
                                }
                                _ => "",
                            };
                            tracing::warn!("ResourceSlice {}: {e}{hint}; retrying in {wait:?}", self.name);
                            // What is there is unknown after a failure.
                            self.there = None;
                            due = Some(Instant::now() + wait);
                        }
                    }
                }
            }
        }
    }

    /// Takes in what the watch says is there (`None`: no slice); true when
    /// that differs from what this agent knew, so the slice is looked at
    /// again.
    fn observe(&mut self, seen: Option<&ResourceSlice>) -> bool {
        let version =
            |s: &ResourceSlice| s.metadata.resource_version.as_deref()?.parse::<u64>().ok();
        if let (Some(obj), Some(ours)) = (seen, self.written) {
            if version(obj).is_some_and(|v| v < ours) {
                return false;
            }
        }
        let now = Some(seen.map(there_of));
        if self.there.is_none() || self.there == now {
            // Not looked yet (the first sync reads it), or as known.
            return false;
        }
        tracing::info!(
            "ResourceSlice {} {} by someone else; putting it back",
            self.name,
            if seen.is_some() { "changed" } else { "deleted" }
        );
        self.there = now;
        true
    }

    /// Puts the slice the status calls for in place; true when it wrote.
    async fn sync(&mut self, want: &Desired) -> Result<bool, SliceError> {
        if self.there.is_none() {
            let got = self.api.get_opt(&self.name).await?;
            self.there = Some(got.as_ref().map(there_of));
        }
        let sharing = match self.sharing {
            Some(sharing) => sharing,
            None => {
                let sharing = self.ask_sharing(want).await?;
                self.sharing = Some(sharing);
                let _ = self.mode.send(Some(sharing));
                sharing
            }
        };
        let built = dra::devices(&want.status, &self.options.policy, sharing);
        let left_out: Vec<String> = built.left_out.iter().map(ToString::to_string).collect();
        if left_out != self.left_out {
            for l in left_out.iter().filter(|l| !self.left_out.contains(l)) {
                tracing::info!("ResourceSlice {}: {l}", self.name);
            }
            self.metrics.dra_left_out.set(left_out.len() as i64);
            self.left_out = left_out;
        }
        let there = self.there.clone().flatten();
        if built.devices.is_empty() {
            if there.is_none() {
                return Ok(false);
            }
            match self.api.delete(&self.name, &DeleteParams::default()).await {
                Ok(_) => {}
                Err(kube::Error::Api(s)) if s.code == 404 => {}
                Err(e) => return Err(e.into()),
            }
            self.count("slice_delete");
            self.there = Some(None);
            return Ok(true);
        }
        if there
            .as_ref()
            .is_some_and(|t| t.devices == built.devices && t.owner == want.node_uid)
        {
            return Ok(false);
        }
        let generation = there.as_ref().map_or(1, |t| t.generation + 1);
        let slice = self.slice(built.devices, generation, want.node_uid.as_deref());
        let params = PatchParams::apply(FIELD_MANAGER).force();
        let made = self
            .api
            .patch(&self.name, &params, &Patch::Apply(&slice))
            .await?;
        self.count("slice");
        self.there = Some(Some(there_of(&made)));
        self.written = made
            .metadata
            .resource_version
            .as_deref()
            .and_then(|v| v.parse().ok());
        Ok(true)
    }

    /// A dry-run apply of the shared form: the answer shows whether the
    /// cluster keeps `allowMultipleAllocations`. Nothing is stored.
    async fn ask_sharing(&self, want: &Desired) -> Result<Sharing, SliceError> {
        let mut probe = dra::devices(&want.status, &self.options.policy, Sharing::Shared).devices;
        if probe.is_empty() {
            // Nothing resolves yet: ask with a stand-in device.
            probe.push(Device {
                name: "probe".into(),
                allow_multiple_allocations: Some(true),
                ..Device::default()
            });
        }
        let generation = self.there.clone().flatten().map_or(1, |t| t.generation + 1);
        let slice = self.slice(probe, generation, want.node_uid.as_deref());
        let mut params = PatchParams::apply(FIELD_MANAGER).force();
        params.dry_run = true;
        let answer = self
            .api
            .patch(&self.name, &params, &Patch::Apply(&slice))
            .await?;
        let devices = answer.spec.devices.unwrap_or_default();
        let sharing = if dra::sharing_kept(&devices) {
            tracing::info!(
                "DRA: the cluster shares devices between claims; each network is one device with consumable bandwidth"
            );
            Sharing::Shared
        } else {
            let n = self.options.numbered;
            tracing::warn!(
                "DRA: the cluster drops allowMultipleAllocations (feature gate DRAConsumableCapacity off); each network is published as {n} numbered exclusive devices"
            );
            Sharing::Numbered(n)
        };
        Ok(sharing)
    }

    fn slice(&self, devices: Vec<Device>, generation: i64, owner: Option<&str>) -> ResourceSlice {
        ResourceSlice {
            metadata: ObjectMeta {
                name: Some(self.name.clone()),
                owner_references: owner.map(|uid| {
                    vec![OwnerReference {
                        api_version: "v1".into(),
                        kind: "Node".into(),
                        name: self.node.clone(),
                        uid: uid.into(),
                        ..OwnerReference::default()
                    }]
                }),
                ..ObjectMeta::default()
            },
            spec: ResourceSliceSpec {
                driver: dra::DRIVER.into(),
                node_name: Some(self.node.clone()),
                pool: ResourcePool {
                    name: self.node.clone(),
                    generation,
                    resource_slice_count: 1,
                },
                devices: Some(devices),
                ..ResourceSliceSpec::default()
            },
        }
    }

    fn count(&self, kind: &'static str) {
        self.metrics
            .api_writes
            .get_or_create(&KindLabel { kind })
            .inc();
    }
}

fn there_of(s: &ResourceSlice) -> There {
    There {
        devices: s.spec.devices.clone().unwrap_or_default(),
        generation: s.spec.pool.generation,
        owner: s
            .metadata
            .owner_references
            .iter()
            .flatten()
            .find(|o| o.kind == "Node")
            .map(|o| o.uid.clone()),
    }
}
