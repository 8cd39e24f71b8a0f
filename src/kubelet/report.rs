//! Keeps the network data of prepared claims current (KEP-4817): each
//! time the CNI plugin records or forgets an attachment (inotify on the
//! state dir's `attachments/`), and each time a claim is prepared, the
//! attachments are read again and the claims whose data changed get one
//! server-side apply of their status. Failures are retried with backoff;
//! the API down delays the data, it never holds up a pod.

use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::resource::v1::ResourceClaim;
use kube::Api;
use kube::api::{Patch, PatchParams};
use notify::{RecursiveMode, Watcher as _};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use super::Handler;
use super::network_data;
use super::network_data::Report;
use crate::agent::cluster::FIELD_MANAGER;
use crate::agent::writer::{backoff, jitter, sleep_until};
use crate::attachment;

/// Events of one CNI write (temp file, rename) come as a burst.
const SETTLE: Duration = Duration::from_millis(20);

/// How one claim's write went.
enum Outcome {
    Written,
    /// Not to be tried again for this data (the claim is gone or was
    /// replaced, or the API refuses the data).
    Dropped,
    Retry,
}

/// Runs until `stop` says so.
pub(super) async fn run(handler: Arc<Handler>, mut stop: watch::Receiver<bool>) {
    let dir = handler.config.state_dir.join(attachment::DIR);
    let (tx, mut events) = mpsc::unbounded_channel();
    let _watcher = match std::fs::create_dir_all(&dir)
        .map_err(notify::Error::io)
        .and_then(|()| {
            let mut w = notify::recommended_watcher(move |_: notify::Result<notify::Event>| {
                let _ = tx.send(());
            })?;
            w.watch(&dir, RecursiveMode::NonRecursive)?;
            Ok(w)
        }) {
        Ok(w) => Some(w),
        Err(e) => {
            tracing::warn!(
                "cannot watch {} ({e}): claims' network data is updated only when a claim is prepared",
                dir.display()
            );
            None
        }
    };
    let jitter = jitter(&handler.config.node);
    let mut failures = 0u32;
    let mut warned = HashSet::new();
    let stopping = async move {
        let _ = stop.wait_for(|s| *s).await;
    };
    tokio::pin!(stopping);
    loop {
        let retry = if handler.report(&dir, &mut warned).await {
            failures = 0;
            None
        } else {
            failures += 1;
            Some(Instant::now() + backoff(failures, jitter))
        };
        tokio::select! {
            () = &mut stopping => return,
            Some(()) = events.recv() => {
                tokio::time::sleep(SETTLE).await;
                while events.try_recv().is_ok() {}
            }
            () = handler.changed.notified() => {}
            () = sleep_until(retry) => {}
        }
    }
}

impl Handler {
    /// One pass; false when a write is to be tried again.
    async fn report(&self, dir: &std::path::Path, warned: &mut HashSet<PathBuf>) -> bool {
        let scan = match attachment::scan(dir) {
            Ok(scan) => scan,
            Err(e) => {
                tracing::warn!("cannot read {}: {e}", dir.display());
                return false;
            }
        };
        for (path, why) in &scan.unreadable {
            if warned.insert(path.clone()) {
                tracing::warn!("skipping {}: {why}", path.display());
            }
        }
        let prepared = self.lock().clone();
        let wanted = network_data::wanted(&prepared, &scan.attachments);
        let mut done = true;
        for uid in network_data::changed(&prepared, &wanted) {
            let (Some(claim), Some(data)) = (prepared.get(uid), wanted.get(uid)) else {
                continue;
            };
            match self.write(uid, claim, data).await {
                Outcome::Written | Outcome::Dropped => self.reported(uid, data),
                Outcome::Retry => done = false,
            }
        }
        done
    }

    async fn write(
        &self,
        uid: &str,
        claim: &super::prepare::PreparedClaim,
        data: &BTreeMap<usize, Report>,
    ) -> Outcome {
        let label = format!("{}/{}", claim.namespace, claim.name);
        let body = network_data::status_body(uid, claim, data);
        let api: Api<ResourceClaim> = Api::namespaced(self.client.clone(), &claim.namespace);
        let params = PatchParams::apply(FIELD_MANAGER).force();
        let patch = Patch::Apply(&body);
        let patch = api.patch_status(&claim.name, &params, &patch);
        match tokio::time::timeout(super::CLAIM_TIMEOUT, patch).await {
            Ok(Ok(_)) => {
                tracing::debug!("ResourceClaim {label}: network data written");
                Outcome::Written
            }
            Ok(Err(kube::Error::Api(e))) if e.code == 404 || e.code == 409 => {
                tracing::debug!(
                    "ResourceClaim {label} is gone or was replaced: {}",
                    e.message
                );
                Outcome::Dropped
            }
            Ok(Err(kube::Error::Api(e))) if e.code == 400 || e.code == 422 => {
                tracing::warn!(
                    "ResourceClaim {label}: the API refuses the network data: {}",
                    e.message
                );
                Outcome::Dropped
            }
            Ok(Err(kube::Error::Api(e))) if e.code == 403 => {
                tracing::warn!(
                    "ResourceClaim {label}: not allowed to write its status ({}); the agent's ClusterRole needs patch on resourceclaims/status (deploy/rbac.yaml)",
                    e.message
                );
                Outcome::Retry
            }
            Ok(Err(e)) => {
                tracing::warn!("ResourceClaim {label}: cannot write its network data: {e}");
                Outcome::Retry
            }
            Err(_) => {
                tracing::warn!(
                    "ResourceClaim {label}: the API did not answer within {:?}",
                    super::CLAIM_TIMEOUT
                );
                Outcome::Retry
            }
        }
    }

    /// Records what a claim now shows, so it is not written again (nor
    /// after a restart).
    fn reported(&self, uid: &str, data: &BTreeMap<usize, Report>) {
        let mut record = self.lock();
        let Some(claim) = record.get_mut(uid) else {
            return; // unprepared meanwhile
        };
        for (i, device) in claim.devices.iter_mut().enumerate() {
            let report = data.get(&i);
            device.reported = report.map(|r| r.network.clone());
            device.reported_data = report.and_then(|r| r.data.clone());
        }
        if let Err(e) = self.save(&record) {
            tracing::warn!(
                "cannot record the network data written: {e}; a restarted agent writes it again"
            );
        }
    }
}
