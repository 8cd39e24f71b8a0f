//! The agent's writes to the API, in a task of their own: its NodeSurvey
//! (created with an ownerReference to its Node, its status through the
//! status subresource), by server-side apply with field manager
//! `surveyor-agent`. Node labels are the controller's: an agent holds no
//! write access to any Node.
//!
//! It writes what should be there and is not: it watches its own
//! NodeSurvey, so one deleted or edited by hand is put right within
//! seconds, and a restarted agent that finds its status already in place
//! writes nothing. Writes are paced (at most one burst per
//! [`Pace::interval`], the last state always follows), time out, and are
//! retried with backoff jittered by node, so a slow or absent API never
//! holds up the event loop or the node-local snapshot.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures::{Stream, StreamExt as _};
use kube::api::{Api, ApiResource, DynamicObject, Patch, PatchParams};
use kube::runtime::WatchStreamExt as _;
use kube::runtime::watcher::{self, Event};
use kube::{Client, Resource as _};
use serde_json::json;
use tokio::sync::watch;
use tokio::time::Instant;

use super::cluster::FIELD_MANAGER;
use super::metrics::{KindLabel, Metrics};
use crate::crd::{NodeSurvey, NodeSurveyStatus};

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

/// What the agent wants the API to show.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Desired {
    pub status: NodeSurveyStatus,
    /// The Node's UID, once the Node is known: the NodeSurvey's owner (so
    /// it goes with a deleted Node).
    pub node_uid: Option<String>,
}

/// Starts the writer task.
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

type SurveyEvents =
    Pin<Box<dyn Stream<Item = Result<Event<DynamicObject>, watcher::Error>> + Send>>;

/// This node's NodeSurvey, as the API has it (raw: a status edited into
/// something that does not decode must not break the watch).
fn watch_survey(client: Client, node: &str) -> SurveyEvents {
    let api: Api<DynamicObject> = Api::all_with(client, &ApiResource::erase::<NodeSurvey>(&()));
    let config = watcher::Config::default().fields(&format!("metadata.name={node}"));
    watcher::watcher(api, config).default_backoff().boxed()
}

/// What is in the API, each part as this agent last wrote it; `None` when
/// unknown or not written (so it is written).
#[derive(Debug, Default)]
struct Written {
    /// The NodeSurvey exists, with this owner.
    object: Option<Option<String>>,
    status: Option<NodeSurveyStatus>,
    /// The resource version our last write of the NodeSurvey returned:
    /// watch events older than it are echoes of earlier states.
    version: Option<u64>,
}

impl Written {
    fn covers(&self, want: &Desired) -> bool {
        self.object.as_ref() == Some(&want.node_uid) && self.status.as_ref() == Some(&want.status)
    }

    /// Takes in what the watch says is there; true when that is not what
    /// was written (drift to repair). At the first look (`initial`), what
    /// is there is what an earlier run of this agent left: taken as
    /// written, so an unchanged restart writes nothing.
    fn observe(&mut self, seen: Option<&DynamicObject>, initial: bool) -> bool {
        let version =
            |o: &DynamicObject| o.metadata.resource_version.as_deref()?.parse::<u64>().ok();
        if let (Some(obj), Some(ours)) = (seen, self.version) {
            if version(obj).is_some_and(|v| v < ours) {
                return false; // from before our last write
            }
        }
        let Some(obj) = seen else {
            let had = self.object.is_some() || self.status.is_some();
            self.object = None;
            self.status = None;
            return had;
        };
        let mut drift = false;
        let owner = obj
            .metadata
            .owner_references
            .iter()
            .flatten()
            .find(|o| o.kind == "Node")
            .map(|o| o.uid.clone());
        if let Some(written) = &self.object {
            if *written != owner {
                self.object = None;
                drift = true;
            }
        }
        let status = obj
            .data
            .get("status")
            .and_then(|s| serde_json::from_value::<NodeSurveyStatus>(s.clone()).ok());
        if let Some(written) = &self.status {
            if status.as_ref() != Some(written) {
                self.status = None;
                drift = true;
            }
        } else if initial {
            self.object = Some(owner);
            self.status = status;
        }
        drift
    }
}

async fn publish_loop(
    client: Client,
    node: String,
    mut desired: watch::Receiver<Option<Desired>>,
    metrics: Arc<Metrics>,
    pace: Pace,
) {
    let writer = Writer {
        surveys: Api::all(client.clone()),
        node: node.clone(),
        metrics,
    };
    let mut survey = watch_survey(client, &node);
    let jitter = jitter(&node);
    let mut written = Written::default();
    // Nothing is written before the first look at what is there.
    let mut synced = false;
    let mut relist: Option<Vec<DynamicObject>> = None;
    let mut want: Option<Desired> = None;
    let mut next_write: Option<Instant> = None;
    let mut last_write: Option<Instant> = None;
    let mut failures = 0u32;
    let mut repairs = 0u32;
    loop {
        let due = next_write.filter(|_| synced);
        tokio::select! {
            changed = desired.changed() => {
                if changed.is_err() {
                    return; // the agent stopped
                }
                want = desired.borrow_and_update().clone();
                repairs = 0;
                let earliest = last_write.map_or_else(Instant::now, |at| at + pace.interval);
                next_write.get_or_insert(earliest);
            }
            event = survey.next() => {
                let drift = match event {
                    Some(Ok(Event::Init)) => {
                        relist = Some(Vec::new());
                        false
                    }
                    Some(Ok(Event::InitApply(obj))) => {
                        relist.get_or_insert_with(Vec::new).push(obj);
                        false
                    }
                    Some(Ok(Event::InitDone)) => {
                        let listed = relist.take().unwrap_or_default();
                        let ours = listed.iter().find(|o| o.metadata.name.as_deref() == Some(node.as_str()));
                        let drift = written.observe(ours, !synced);
                        synced = true;
                        drift
                    }
                    Some(Ok(Event::Apply(obj))) => written.observe(Some(&obj), false),
                    Some(Ok(Event::Delete(_))) => written.observe(None, false),
                    Some(Err(e)) => {
                        writer.metrics.api_errors.inc();
                        tracing::debug!("NodeSurvey watch: {e}");
                        false
                    }
                    None => false,
                };
                if drift {
                    // Someone else's hand: put it right, but never race
                    // another writer in a tight loop.
                    repairs += 1;
                    let wait = backoff(repairs, jitter).saturating_sub(BACKOFF_FIRST);
                    tracing::info!("NodeSurvey {node} differs from what this agent wrote; writing it again");
                    next_write.get_or_insert(Instant::now() + wait);
                }
            }
            () = sleep_until(due) => {
                next_write = None;
                let Some(target) = want.as_ref() else { continue };
                if written.covers(target) {
                    failures = 0;
                    continue;
                }
                let attempt = tokio::time::timeout(pace.timeout, writer.write(target, &mut written));
                match attempt.await.unwrap_or(Err(WriteError::Timeout(pace.timeout))) {
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
                        next_write = Some(Instant::now() + wait);
                    }
                }
            }
        }
    }
}

fn version(o: &NodeSurvey) -> Option<u64> {
    o.metadata.resource_version.as_deref()?.parse().ok()
}

pub(crate) async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// 500 ms doubling to 30 s, scaled by a per-node factor in [0.5, 1.5).
pub(crate) fn backoff(failures: u32, jitter: f64) -> Duration {
    let base = BACKOFF_FIRST.saturating_mul(1 << failures.saturating_sub(1).min(10));
    base.min(BACKOFF_MAX).mul_f64(jitter)
}

pub(crate) fn jitter(node: &str) -> f64 {
    let hash = node.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    });
    0.5 + (hash % 1000) as f64 / 1000.0
}

struct Writer {
    surveys: Api<NodeSurvey>,
    node: String,
    metrics: Arc<Metrics>,
}

impl Writer {
    fn count(&self, kind: &'static str) {
        self.metrics
            .api_writes
            .get_or_create(&KindLabel { kind })
            .inc();
    }

    /// Applies what differs from what is there.
    async fn write(&self, want: &Desired, written: &mut Written) -> Result<(), WriteError> {
        let params = PatchParams::apply(FIELD_MANAGER).force();
        let (api_version, kind) = (NodeSurvey::api_version(&()), NodeSurvey::kind(&()));
        if written.object.as_ref() != Some(&want.node_uid) {
            let mut metadata = json!({"name": self.node});
            if let Some(uid) = &want.node_uid {
                metadata["ownerReferences"] = json!([{
                    "apiVersion": "v1", "kind": "Node", "name": self.node, "uid": uid,
                }]);
            }
            let object = json!({"apiVersion": api_version, "kind": kind, "metadata": metadata});
            let made = self
                .surveys
                .patch(&self.node, &params, &Patch::Apply(&object))
                .await?;
            self.count("create");
            written.object = Some(want.node_uid.clone());
            written.version = version(&made);
        }
        if written.status.as_ref() != Some(&want.status) {
            let object = json!({
                "apiVersion": api_version, "kind": kind,
                "metadata": {"name": self.node},
                "status": want.status,
            });
            let made = match self
                .surveys
                .patch_status(&self.node, &params, &Patch::Apply(&object))
                .await
            {
                Ok(made) => made,
                Err(e) => {
                    // Deleted under us: create it again next time.
                    if matches!(&e, kube::Error::Api(s) if s.code == 404) {
                        written.object = None;
                    }
                    return Err(e.into());
                }
            };
            self.count("status");
            written.status = Some(want.status.clone());
            written.version = version(&made);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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

    fn survey(status: Option<NodeSurveyStatus>, owner: Option<&str>) -> DynamicObject {
        versioned(status, owner, 10)
    }

    fn versioned(status: Option<NodeSurveyStatus>, owner: Option<&str>, rv: u64) -> DynamicObject {
        let mut obj = json!({"apiVersion": "surveyor.dev/v1alpha1", "kind": "NodeSurvey",
            "metadata": {"name": "node1", "resourceVersion": rv.to_string()}});
        if let Some(uid) = owner {
            obj["metadata"]["ownerReferences"] =
                json!([{"apiVersion": "v1", "kind": "Node", "name": "node1", "uid": uid}]);
        }
        if let Some(s) = status {
            obj["status"] = serde_json::to_value(s).unwrap();
        }
        serde_json::from_value(obj).unwrap()
    }

    fn status(up: u32) -> NodeSurveyStatus {
        let mut s = NodeSurveyStatus::default();
        s.summary.up = up;
        s
    }

    #[test]
    fn what_is_there_is_compared_with_what_was_written() {
        let mut w = Written::default();
        // At start, a previous run's object is taken as written.
        assert!(!w.observe(Some(&survey(Some(status(1)), Some("u1"))), true));
        let want = Desired {
            status: status(1),
            node_uid: Some("u1".into()),
        };
        assert!(
            w.covers(&want),
            "a restart with nothing changed writes nothing"
        );
        // Our own write's echo is no drift; echoes of states from before
        // it (its metadata-only create, the write before) are none either.
        w.status = Some(status(2));
        w.version = Some(10);
        assert!(!w.observe(Some(&versioned(None, Some("u1"), 8)), false));
        assert!(!w.observe(Some(&versioned(Some(status(1)), Some("u1"), 9)), false));
        assert!(!w.observe(Some(&survey(Some(status(2)), Some("u1"))), false));
        // An edit by hand is.
        assert!(w.observe(Some(&versioned(Some(status(7)), Some("u1"), 11)), false));
        assert_eq!(w.status, None);
        // ... and is not adopted as written once past the first look.
        assert!(!w.observe(Some(&versioned(Some(status(7)), Some("u1"), 11)), false));
        assert_eq!(w.status, None);
        // So is an owner taken away, and a deletion.
        w.status = Some(status(2));
        assert!(w.observe(Some(&versioned(Some(status(2)), None, 12)), false));
        assert_eq!(w.object, None);
        w.object = Some(Some("u1".into()));
        assert!(w.observe(None, false));
        assert!(!w.covers(&want));
        // A Node re-created (new UID) needs its owner again.
        let mut w = Written {
            object: Some(Some("u1".into())),
            status: Some(status(1)),
            version: None,
        };
        let renewed = Desired {
            node_uid: Some("u2".into()),
            ..want
        };
        assert!(!w.covers(&renewed));
        w.object = Some(Some("u2".into()));
        assert!(w.covers(&renewed));
    }
}
