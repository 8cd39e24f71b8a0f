//! Leader election: one controller replica writes, the others keep the
//! same view and serve it. A `coordination.k8s.io` Lease, the way
//! client-go's leader election holds one: read it, and claim or renew it by
//! a replace conditioned on the resourceVersion read (two candidates
//! cannot both win); a holder's claim expires a lease duration after a
//! candidate last saw it change, by the candidate's own clock (no clock
//! skew between nodes matters). The holder stops leading when it has not
//! renewed for a renew deadline shorter than the lease duration, so a
//! replica cut off from the API stops writing before another can take
//! over. Released on shutdown, so a rollout hands over at once.
//!
//! (kube-lease-manager keeps leading while its renewals fail, and
//! kube-leader-election is built on an older kube.)

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;
use kube::Client;
use kube::api::{Api, ObjectMeta, PostParams};
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// The Lease's name in the controller's namespace.
pub const LEASE_NAME: &str = "surveyor-controller";

/// How the Lease is held.
#[derive(Clone, Debug)]
pub struct LeaseConfig {
    pub namespace: String,
    /// This replica's name in the Lease (the pod name).
    pub identity: String,
    /// A leader that stops renewing is replaced after this.
    pub duration: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum LeaderError {
    #[error("the lease duration must be at least 2 s, not {0:?}")]
    TooShort(Duration),
    #[error("the lease identity is empty (set POD_NAME or --identity)")]
    NoIdentity,
}

/// The lease duration, the renew deadline (two thirds of it) and the retry
/// period (a sixth), as client-go's defaults are (15 s, 10 s, 2 s).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Timing {
    duration: Duration,
    deadline: Duration,
    retry: Duration,
}

impl LeaseConfig {
    fn timing(&self) -> Result<Timing, LeaderError> {
        if self.duration < Duration::from_secs(2) {
            return Err(LeaderError::TooShort(self.duration));
        }
        if self.identity.trim().is_empty() {
            return Err(LeaderError::NoIdentity);
        }
        let duration = Duration::from_secs(self.duration.as_secs());
        Ok(Timing {
            duration,
            deadline: duration * 2 / 3,
            retry: duration / 6,
        })
    }

    pub fn check(&self) -> Result<(), LeaderError> {
        self.timing().map(|_| ())
    }
}

/// What a candidate knows and decides, pure.
#[derive(Debug)]
struct Elector {
    identity: String,
    timing: Timing,
    /// The Lease record as last seen to change, and when.
    observed: Option<(Record, Instant)>,
    /// When this replica last claimed or renewed the Lease.
    renewed: Option<Instant>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct Record {
    holder: Option<String>,
    renew_time: Option<String>,
    duration: Option<i32>,
}

impl Record {
    fn of(spec: &LeaseSpec) -> Record {
        Record {
            holder: spec.holder_identity.clone().filter(|h| !h.is_empty()),
            renew_time: spec.renew_time.as_ref().map(|t| t.0.to_string()),
            duration: spec.lease_duration_seconds,
        }
    }
}

impl Elector {
    fn new(identity: String, timing: Timing) -> Self {
        Elector {
            identity,
            timing,
            observed: None,
            renewed: None,
        }
    }

    fn observe(&mut self, spec: &LeaseSpec, now: Instant) {
        let record = Record::of(spec);
        if self.observed.as_ref().map(|(r, _)| r) != Some(&record) {
            self.observed = Some((record, now));
        }
    }

    /// Whether this replica may write itself into the Lease: it is free,
    /// ours, or its holder has not renewed for its duration.
    fn may_claim(&self, now: Instant) -> bool {
        let Some((record, seen)) = &self.observed else {
            return true;
        };
        match &record.holder {
            None => true,
            Some(h) if *h == self.identity => true,
            Some(_) => {
                let secs = record.duration.and_then(|d| u64::try_from(d).ok());
                let duration = secs.map_or(self.timing.duration, Duration::from_secs);
                now >= *seen + duration
            }
        }
    }

    /// The spec that claims or renews the Lease.
    fn claim(&self, current: &LeaseSpec, at: Timestamp) -> LeaseSpec {
        let ours = current.holder_identity.as_deref() == Some(self.identity.as_str());
        let transitions = current.lease_transitions.unwrap_or(0);
        LeaseSpec {
            holder_identity: Some(self.identity.clone()),
            lease_duration_seconds: i32::try_from(self.timing.duration.as_secs()).ok(),
            acquire_time: if ours {
                current.acquire_time.clone()
            } else {
                Some(MicroTime(at))
            },
            renew_time: Some(MicroTime(at)),
            lease_transitions: Some(if ours { transitions } else { transitions + 1 }),
            ..current.clone()
        }
    }

    fn renewed(&mut self, now: Instant) {
        self.renewed = Some(now);
    }

    fn lost(&mut self) {
        self.renewed = None;
    }

    /// Leading: renewed within the renew deadline.
    fn leading(&self, now: Instant) -> bool {
        self.renewed
            .is_some_and(|at| now < at + self.timing.deadline)
    }
}

/// This replica's leadership, as it changes.
pub struct Leadership {
    receiver: watch::Receiver<bool>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl Leadership {
    /// Always the leader (a single replica, no Lease).
    pub fn always() -> Leadership {
        let (tx, receiver) = watch::channel(true);
        // The sender lives as long as this.
        let task = tokio::spawn(async move { tx.closed().await });
        Leadership {
            receiver,
            stop: None,
            task: Some(task),
        }
    }

    /// Campaigns for the Lease for as long as this runs. An API that does
    /// not answer (down, no RBAC) is retried every retry period, never
    /// fatal; while it does not, a holder steps down at its renew deadline.
    pub fn campaign(client: Client, config: LeaseConfig) -> Result<Leadership, LeaderError> {
        let timing = config.timing()?;
        let (tx, receiver) = watch::channel(false);
        let (stop, stopped) = oneshot::channel();
        let api: Api<Lease> = Api::namespaced(client, &config.namespace);
        let elector = Elector::new(config.identity.clone(), timing);
        let task = tokio::spawn(campaign(api, config, elector, tx, stopped));
        Ok(Leadership {
            receiver,
            stop: Some(stop),
            task: Some(task),
        })
    }

    pub fn receiver(&self) -> watch::Receiver<bool> {
        self.receiver.clone()
    }

    /// Gives the Lease up (if held) and waits, briefly, until it is.
    pub async fn release(mut self) {
        let Some(task) = self.task.take() else { return };
        match self.stop.take() {
            Some(stop) => {
                let _ = stop.send(());
                let _ = tokio::time::timeout(Duration::from_secs(3), task).await;
            }
            None => task.abort(),
        }
    }
}

async fn campaign(
    api: Api<Lease>,
    config: LeaseConfig,
    mut elector: Elector,
    tx: watch::Sender<bool>,
    mut stopped: oneshot::Receiver<()>,
) {
    let retry = elector.timing.retry;
    let mut failing = false;
    loop {
        let attempt = tokio::time::timeout(retry, try_acquire_or_renew(&api, &mut elector)).await;
        let now = Instant::now();
        match attempt {
            Ok(Ok(true)) => {
                elector.renewed(now);
                failing = false;
            }
            Ok(Ok(false)) => {
                elector.lost();
                failing = false;
            }
            Ok(Err(e)) => {
                if !failing {
                    tracing::warn!(
                        "Lease {}/{LEASE_NAME}: {e}; retrying every {retry:?}",
                        config.namespace
                    );
                }
                failing = true;
            }
            Err(_) => failing = true,
        }
        let leading = elector.leading(now);
        if tx.send_if_modified(|was| std::mem::replace(was, leading) != leading) {
            tracing::info!(
                "{} {} Lease {}/{LEASE_NAME}",
                config.identity,
                if leading { "holds" } else { "does not hold" },
                config.namespace
            );
        }
        tokio::select! {
            () = tokio::time::sleep(retry) => {}
            _ = &mut stopped => {
                tx.send_replace(false);
                if elector.renewed.is_some() {
                    release(&api, &config.identity).await;
                }
                return;
            }
        }
    }
}

/// One round: true when this replica holds the Lease after it.
async fn try_acquire_or_renew(
    api: &Api<Lease>,
    elector: &mut Elector,
) -> Result<bool, kube::Error> {
    let Some(lease) = api.get_opt(LEASE_NAME).await? else {
        let lease = Lease {
            metadata: ObjectMeta {
                name: Some(LEASE_NAME.into()),
                ..ObjectMeta::default()
            },
            spec: Some(elector.claim(&LeaseSpec::default(), Timestamp::now())),
        };
        return match api.create(&PostParams::default(), &lease).await {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(false), // another was first
            Err(e) => Err(e),
        };
    };
    let spec = lease.spec.clone().unwrap_or_default();
    elector.observe(&spec, Instant::now());
    if !elector.may_claim(Instant::now()) {
        return Ok(false);
    }
    let mut claimed = lease;
    claimed.spec = Some(elector.claim(&spec, Timestamp::now()));
    // Conditioned on the resourceVersion read: a concurrent claim wins.
    match api
        .replace(LEASE_NAME, &PostParams::default(), &claimed)
        .await
    {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
        Err(e) => Err(e),
    }
}

/// Clears the holder, if it is still us, so a follower claims it at its
/// next retry instead of after the lease duration.
async fn release(api: &Api<Lease>, identity: &str) {
    let attempt = async {
        let mut lease = api.get(LEASE_NAME).await?;
        let Some(spec) = lease.spec.as_mut() else {
            return Ok(());
        };
        if spec.holder_identity.as_deref() != Some(identity) {
            return Ok(());
        }
        spec.holder_identity = None;
        spec.lease_duration_seconds = Some(1);
        api.replace(LEASE_NAME, &PostParams::default(), &lease)
            .await
            .map(|_| ())
    };
    match tokio::time::timeout(Duration::from_secs(2), attempt).await {
        Ok(Ok(())) => tracing::info!("{identity} gave Lease {LEASE_NAME} up"),
        Ok(Err(e)) => tracing::warn!("could not give Lease {LEASE_NAME} up ({e}); it expires"),
        Err(_) => tracing::warn!("could not give Lease {LEASE_NAME} up (no answer); it expires"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(secs: u64, id: &str) -> LeaseConfig {
        LeaseConfig {
            namespace: "surveyor".into(),
            identity: id.into(),
            duration: Duration::from_secs(secs),
        }
    }

    #[test]
    fn timing_is_client_gos_proportions() {
        let t = config(15, "a").timing().unwrap();
        assert_eq!(
            (t.duration, t.deadline, t.retry),
            (
                Duration::from_secs(15),
                Duration::from_secs(10),
                Duration::from_millis(2500)
            )
        );
        assert!(matches!(
            config(1, "a").timing(),
            Err(LeaderError::TooShort(_))
        ));
        assert!(matches!(
            config(15, " ").timing(),
            Err(LeaderError::NoIdentity)
        ));
    }

    fn spec(holder: Option<&str>, renewed: i64) -> LeaseSpec {
        LeaseSpec {
            holder_identity: holder.map(str::to_string),
            lease_duration_seconds: Some(15),
            renew_time: Some(MicroTime(Timestamp::from_second(renewed).unwrap())),
            lease_transitions: Some(3),
            ..LeaseSpec::default()
        }
    }

    #[test]
    fn another_holder_is_waited_out_by_our_own_clock() {
        let t0 = Instant::now();
        let mut e = Elector::new("b".into(), config(15, "b").timing().unwrap());
        assert!(e.may_claim(t0), "nothing seen: try");
        e.observe(&spec(Some("a"), 100), t0);
        assert!(!e.may_claim(t0 + Duration::from_secs(14)));
        // a renews: the wait starts again when that is seen.
        e.observe(&spec(Some("a"), 110), t0 + Duration::from_secs(10));
        assert!(!e.may_claim(t0 + Duration::from_secs(20)));
        assert!(e.may_claim(t0 + Duration::from_secs(25)));
        // Renew times from a clock far off change nothing: only change counts.
        e.observe(&spec(Some("a"), 110), t0 + Duration::from_secs(24));
        assert!(e.may_claim(t0 + Duration::from_secs(25)));
        e.observe(&spec(None, 110), t0 + Duration::from_secs(26));
        assert!(e.may_claim(t0 + Duration::from_secs(26)), "released: free");
        let at = Timestamp::from_second(200).unwrap();
        let claimed = e.claim(&spec(Some("a"), 110), at);
        assert_eq!(claimed.holder_identity.as_deref(), Some("b"));
        assert_eq!(claimed.lease_transitions, Some(4));
        assert_eq!(claimed.acquire_time, Some(MicroTime(at)));
        // Renewing our own keeps the acquire time and the transitions.
        let ours = e.claim(&claimed, Timestamp::from_second(210).unwrap());
        assert_eq!(
            (ours.acquire_time, ours.lease_transitions),
            (Some(MicroTime(at)), Some(4))
        );
    }

    #[test]
    fn a_holder_that_cannot_renew_stops_leading_before_another_may_claim() {
        let t0 = Instant::now();
        let timing = config(15, "a").timing().unwrap();
        let mut a = Elector::new("a".into(), timing);
        a.renewed(t0);
        assert!(a.leading(t0 + Duration::from_secs(9)));
        assert!(!a.leading(t0 + Duration::from_secs(10)), "renew deadline");
        // The earliest another can claim: a lease duration after it saw
        // our last renewal, which was no earlier than t0.
        assert!(timing.deadline < timing.duration);
        a.renewed(t0);
        a.lost();
        assert!(!a.leading(t0));
    }
}
