//! Kubernetes Events (events.k8s.io/v1) for what an admin would want to
//! hear about as it happens: a network moving to another NIC, becoming
//! unresolved, a map refused, a label or DeviceClass put back. They are
//! supplemental (status stays the source of truth) and bounded: repeats
//! aggregate into a series (kube's `Recorder`), each reporter spends from
//! a small [`Budget`] (what exceeds it is dropped and counted), and they
//! are published off the caller's path, best effort.

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::ObjectReference;
use kube::Client;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use prometheus_client::metrics::counter::Counter;
use tokio::sync::mpsc;

/// How long one publish may take before it is given up.
const PUBLISH_TIMEOUT: Duration = Duration::from_secs(10);
/// Notices waiting for the publisher; more are dropped (and counted).
const QUEUE: usize = 32;

/// Why an Event is emitted: the API conventions' CamelCase reasons.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reason {
    /// A network's device changed on a node.
    NetworkMoved,
    /// A network that had a device on a node has none now.
    NetworkUnresolved,
    /// A network without a device on a node has one again.
    NetworkResolved,
    /// A NetworkMap's spec cannot be used (its last valid one stays).
    MapRejected,
    /// A Node's `network.surveyor.dev/*` labels were changed by someone
    /// else and put back.
    LabelRepaired,
    /// A network's DeviceClass was edited or deleted and put back.
    DeviceClassRepaired,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::NetworkMoved => "NetworkMoved",
            Reason::NetworkUnresolved => "NetworkUnresolved",
            Reason::NetworkResolved => "NetworkResolved",
            Reason::MapRejected => "MapRejected",
            Reason::LabelRepaired => "LabelRepaired",
            Reason::DeviceClassRepaired => "DeviceClassRepaired",
        }
    }

    fn warning(self) -> bool {
        matches!(self, Reason::NetworkUnresolved | Reason::MapRejected)
    }

    /// What was done, as Events name it (not shown by kubectl describe).
    fn action(self) -> &'static str {
        match self {
            Reason::NetworkMoved | Reason::NetworkUnresolved | Reason::NetworkResolved => "Resolve",
            Reason::MapRejected => "Validate",
            Reason::LabelRepaired | Reason::DeviceClassRepaired => "Repair",
        }
    }
}

/// One Event to emit: about `regarding`, with `related` (a NetworkMap, a
/// DeviceClass) when it concerns another object too. Repeats of the same
/// reason about the same objects within minutes become a series.
#[derive(Clone, Debug, PartialEq)]
pub struct Notice {
    pub reason: Reason,
    pub note: String,
    pub regarding: ObjectReference,
    pub related: Option<ObjectReference>,
}

/// A reference to a cluster-scoped object.
pub fn reference(api_version: &str, kind: &str, name: &str, uid: Option<&str>) -> ObjectReference {
    ObjectReference {
        api_version: Some(api_version.to_string()),
        kind: Some(kind.to_string()),
        name: Some(name.to_string()),
        uid: uid.map(str::to_string),
        ..ObjectReference::default()
    }
}

/// A token bucket: `capacity` Events at once, one more every `refill`.
/// Pure: time is passed in.
#[derive(Clone, Debug)]
pub struct Budget {
    capacity: u32,
    refill: Duration,
    tokens: u32,
    /// When the last token was credited.
    since: Instant,
}

impl Budget {
    pub fn new(capacity: u32, refill: Duration, now: Instant) -> Self {
        Budget {
            capacity,
            refill,
            tokens: capacity,
            since: now,
        }
    }

    /// Spends one token if there is one.
    pub fn take(&mut self, now: Instant) -> bool {
        if !self.refill.is_zero() {
            let earned =
                now.saturating_duration_since(self.since).as_nanos() / self.refill.as_nanos();
            let earned = u32::try_from(earned).unwrap_or(u32::MAX);
            if earned > 0 {
                self.tokens = self.tokens.saturating_add(earned).min(self.capacity);
                self.since += self.refill * earned.min(self.capacity.max(1));
                if self.tokens == self.capacity {
                    self.since = now;
                }
            }
        }
        if self.tokens == 0 {
            return false;
        }
        self.tokens -= 1;
        true
    }
}

/// Counters the publisher keeps.
#[derive(Clone, Debug, Default)]
pub struct EventCounters {
    pub published: Counter,
    /// Over the budget, the queue full, or refused by the API.
    pub dropped: Counter,
}

/// Where notices go: a task of its own publishes them. Cloning shares it.
#[derive(Clone, Debug)]
pub struct Events {
    tx: mpsc::Sender<Notice>,
    counters: EventCounters,
}

impl Events {
    /// Starts the publisher: Events reported by `reporter` (controller name
    /// and instance), within `budget`.
    pub fn spawn(
        client: Client,
        reporter: Reporter,
        budget: Budget,
        counters: EventCounters,
    ) -> Self {
        let (tx, rx) = mpsc::channel(QUEUE);
        let recorder = Recorder::new(client.clone(), reporter);
        tokio::spawn(publish(client, recorder, rx, budget, counters.clone()));
        Events { tx, counters }
    }

    /// Hands `notice` to the publisher; never waits.
    pub fn emit(&self, notice: Notice) {
        if self.tx.try_send(notice).is_err() {
            self.counters.dropped.inc();
        }
    }
}

async fn publish(
    client: Client,
    recorder: Recorder,
    mut rx: mpsc::Receiver<Notice>,
    mut budget: Budget,
    counters: EventCounters,
) {
    let mut warned = false;
    let mut uids = std::collections::HashMap::new();
    while let Some(mut notice) = rx.recv().await {
        if !budget.take(Instant::now()) {
            counters.dropped.inc();
            if !warned {
                tracing::info!(
                    "Events are coming faster than the budget allows: dropping some (surveyor_events_dropped_total; status stays current)"
                );
                warned = true;
            }
            continue;
        }
        warned = false;
        if notice.regarding.uid.is_none() {
            notice.regarding.uid = uid(&client, &mut uids, &notice.regarding).await;
        }
        let event = Event {
            type_: if notice.reason.warning() {
                EventType::Warning
            } else {
                EventType::Normal
            },
            reason: notice.reason.as_str().to_string(),
            note: Some(truncate(&notice.note, 1024)),
            action: notice.reason.action().to_string(),
            secondary: notice.related.clone(),
        };
        match tokio::time::timeout(PUBLISH_TIMEOUT, recorder.publish(&event, &notice.regarding))
            .await
        {
            Ok(Ok(())) => {
                counters.published.inc();
            }
            Ok(Err(e)) => {
                counters.dropped.inc();
                tracing::debug!("Event {} not published: {e}", notice.reason.as_str());
            }
            Err(_) => {
                counters.dropped.inc();
                tracing::debug!(
                    "Event {} not published within {PUBLISH_TIMEOUT:?}",
                    notice.reason.as_str()
                );
            }
        }
    }
}

/// The uid of `of` (a NodeSurvey, whose writer may not have told), read
/// once and kept: `kubectl describe` finds an object's Events by it.
async fn uid(
    client: &Client,
    known: &mut std::collections::HashMap<String, String>,
    of: &ObjectReference,
) -> Option<String> {
    let name = of.name.clone()?;
    if of.kind.as_deref() != Some("NodeSurvey") {
        return None;
    }
    if let Some(uid) = known.get(&name) {
        return Some(uid.clone());
    }
    let api: kube::Api<crate::crd::NodeSurvey> = kube::Api::all(client.clone());
    let found = tokio::time::timeout(PUBLISH_TIMEOUT, api.get_opt(&name)).await;
    let uid = found.ok()?.ok()??.metadata.uid?;
    known.insert(name, uid.clone());
    Some(uid)
}

/// At most `max` bytes, cut at a character boundary.
fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_budget_allows_a_burst_then_one_per_refill() {
        let t0 = Instant::now();
        let mut b = Budget::new(3, Duration::from_secs(20), t0);
        assert!((0..3).all(|_| b.take(t0)));
        assert!(!b.take(t0));
        assert!(!b.take(t0 + Duration::from_secs(19)));
        assert!(b.take(t0 + Duration::from_secs(20)));
        assert!(!b.take(t0 + Duration::from_secs(21)));
        // A long quiet refills the bucket, never past its capacity.
        let later = t0 + Duration::from_secs(3600);
        assert!((0..3).all(|_| b.take(later)));
        assert!(!b.take(later));
        // Over a minute of a flap storm: the burst and three refills.
        let mut b = Budget::new(3, Duration::from_secs(20), t0);
        let taken = (0..600)
            .filter(|i| b.take(t0 + Duration::from_millis(100 * i)))
            .count();
        assert_eq!(taken, 3 + 2);
    }

    #[test]
    fn notes_are_cut_at_a_character_boundary() {
        assert_eq!(truncate("grün", 3), "gr");
        assert_eq!(truncate("green", 1024), "green");
    }
}
