//! The DRA kubelet plugin, run by the agent with `--dra`: a kubelet starts
//! a pod only once the driver of each of its claims has prepared them.
//!
//! Two unix sockets: the registration socket in the kubelet's
//! `plugins_registry` directory (the kubelet finds it there, asks
//! [`proto::PluginInfo`] and says whether it took us), and the DRA
//! service's in `plugins/surveyor.dev/`, serving the v1 API and, for older
//! kubelets, v1beta1. Preparing a claim reads it from the API, checks each
//! of its devices against the node's snapshot ([`prepare`]), and records
//! it in the state dir (`claims.json`), so a restarted agent still knows
//! what it prepared; unpreparing forgets it. Nothing on the node changes
//! at prepare time: the CNI plugin attaches the pod, on the device its
//! allocation names, and records what the pod's interface got; [`report`]
//! shows that on the claim's status (`networkData`).

pub mod authority;
pub mod grpc;
pub mod network_data;
pub mod prepare;
pub mod proto;
pub mod registration;
mod report;

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::resource::v1::ResourceClaim;
use kube::{Api, Client};
use tokio::net::UnixListener;

use crate::agent::slices::SliceOptions;
use crate::atomic::{self, Durability};
use crate::dra::{self, Bandwidth, DRIVER, Sharing};
use crate::snapshot::{read_networks, read_survey};
use prepare::{Prepared, PreparedClaim, prepare};
use proto::{
    Claim, Device, NodePrepareResourceResponse, NodePrepareResourcesResponse,
    NodeUnprepareResourceResponse, NodeUnprepareResourcesResponse, PluginInfo,
};
pub use registration::Registration;
use registration::Tracker;

/// The kubelet's directories, as on every node.
pub const DEFAULT_PLUGINS_DIR: &str = "/var/lib/kubelet/plugins";
pub const DEFAULT_REGISTRY_DIR: &str = "/var/lib/kubelet/plugins_registry";

/// Where prepared claims are recorded, in the state dir.
pub const CLAIMS: &str = "claims.json";

/// How long a claim may take to come from the API.
const CLAIM_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum PluginError {
    #[error("cannot create {path}: {source}")]
    Dir { path: PathBuf, source: io::Error },
    #[error("{path} exists and is not a socket; remove it if it is stale")]
    NotSocket { path: PathBuf },
    #[error("cannot listen on {path}: {source}")]
    Listen { path: PathBuf, source: io::Error },
    #[error("{path} is unreadable ({why}); move it away to start afresh")]
    Claims { path: PathBuf, why: String },
}

#[derive(Clone, Debug)]
pub struct PluginConfig {
    pub node: String,
    pub state_dir: PathBuf,
    pub plugins_dir: PathBuf,
    pub registry_dir: PathBuf,
    /// How long the kubelet gets to register the plugin before its
    /// silence is reported ([`registration::DEFAULT_GRACE`]).
    pub registration_grace: Duration,
    /// How the slice offers bandwidth: what a device the allocation
    /// records no consumption of gives its claim.
    pub slices: SliceOptions,
}

impl PluginConfig {
    pub fn endpoint(&self) -> PathBuf {
        self.plugins_dir.join(DRIVER).join("dra.sock")
    }

    pub fn registration(&self) -> PathBuf {
        self.registry_dir.join(format!("{DRIVER}-reg.sock"))
    }
}

/// What the services share: the API, the node's state dir, the record.
pub struct Handler {
    client: Client,
    config: PluginConfig,
    prepared: Mutex<Prepared>,
    /// Told when a claim is prepared: its pod's attachment may be there.
    changed: tokio::sync::Notify,
}

impl Handler {
    fn new(client: Client, config: PluginConfig) -> Result<Self, PluginError> {
        let path = config.state_dir.join(CLAIMS);
        let prepared = match std::fs::read(&path) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => Prepared::new(),
            Err(e) => {
                return Err(PluginError::Claims {
                    path,
                    why: e.to_string(),
                });
            }
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| PluginError::Claims {
                path,
                why: e.to_string(),
            })?,
        };
        Ok(Handler {
            client,
            config,
            prepared: Mutex::new(prepared),
            changed: tokio::sync::Notify::new(),
        })
    }

    /// Prepares each claim; a failure is that claim's error, never the
    /// call's (the kubelet asks again for the ones that failed).
    async fn prepare(&self, claims: Vec<Claim>) -> NodePrepareResourcesResponse {
        let mut out = HashMap::new();
        for claim in claims {
            let answer = match self.prepare_one(&claim).await {
                Ok(devices) => NodePrepareResourceResponse {
                    devices,
                    error: String::new(),
                },
                Err(error) => {
                    tracing::warn!(
                        "preparing ResourceClaim {}/{}: {error}",
                        claim.namespace,
                        claim.name
                    );
                    NodePrepareResourceResponse {
                        devices: Vec::new(),
                        error,
                    }
                }
            };
            out.insert(claim.uid, answer);
        }
        NodePrepareResourcesResponse { claims: out }
    }

    async fn prepare_one(&self, claim: &Claim) -> Result<Vec<Device>, String> {
        let known = self.lock().get(&claim.uid).cloned();
        if let Some(prepared) = known {
            // Asked again (a kubelet restart): the same answer.
            return Ok(devices(&prepared));
        }
        let api: Api<ResourceClaim> = Api::namespaced(self.client.clone(), &claim.namespace);
        let object = match tokio::time::timeout(CLAIM_TIMEOUT, api.get(&claim.name)).await {
            Err(_) => {
                return Err(format!(
                    "the API did not answer within {CLAIM_TIMEOUT:?}; try again"
                ));
            }
            Ok(Err(e)) => {
                return Err(format!(
                    "cannot read ResourceClaim {}/{}: {e}",
                    claim.namespace, claim.name
                ));
            }
            Ok(Ok(object)) => object,
        };
        let snapshot = read_networks(&self.config.state_dir).map_err(|e| e.to_string())?;
        let unconsumed = self.unconsumed();
        let prepared = prepare(
            &self.config.node,
            &claim.uid,
            &object,
            &snapshot,
            &unconsumed,
        )
        .map_err(|e| e.to_string())?;
        let answer = devices(&prepared);
        let mut record = self.lock();
        record.insert(claim.uid.clone(), prepared);
        if let Err(e) = self.save(&record) {
            // Not prepared until recorded: the kubelet asks again.
            record.remove(&claim.uid);
            return Err(format!("cannot record the prepared claim: {e}"));
        }
        drop(record);
        self.changed.notify_one();
        Ok(answer)
    }

    /// The bandwidth a device gives a claim whose allocation records none
    /// consumed, as the node's slice offers it (from the survey the slice
    /// is made of): a shared device's request default, a numbered
    /// device's share of the link; none where the link speed is unknown.
    fn unconsumed(&self) -> impl Fn(&str) -> Option<u64> + use<> {
        let status = read_survey(&self.config.state_dir).ok();
        let options = self.config.slices;
        move |device: &str| {
            let status = status.as_ref()?;
            let sharing = if status.networks.contains_key(device) {
                Sharing::Shared
            } else {
                Sharing::Numbered(options.numbered)
            };
            let devices = dra::devices(status, &options.policy, sharing).devices;
            let offered = devices
                .iter()
                .find(|d| d.name == device)?
                .capacity
                .as_ref()?
                .get("bandwidth")?;
            match sharing {
                Sharing::Shared => Some(options.policy.default.0),
                Sharing::Numbered(_) => Bandwidth::from_quantity(&offered.value.0).map(|b| b.0),
            }
        }
    }

    fn unprepare(&self, claims: Vec<Claim>) -> NodeUnprepareResourcesResponse {
        let mut record = self.lock();
        let removed: Vec<(String, PreparedClaim)> = claims
            .iter()
            .filter_map(|c| Some((c.uid.clone(), record.remove(&c.uid)?)))
            .collect();
        // Unknown claims were never prepared here (or are already
        // forgotten): nothing to undo.
        let error = match (!removed.is_empty()).then(|| self.save(&record)) {
            Some(Err(e)) => {
                // Still recorded, so the kubelet's retry finds them.
                record.extend(removed);
                format!("cannot record the unprepared claim: {e}")
            }
            _ => String::new(),
        };
        let claims = claims
            .into_iter()
            .map(|c| {
                (
                    c.uid,
                    NodeUnprepareResourceResponse {
                        error: error.clone(),
                    },
                )
            })
            .collect();
        NodeUnprepareResourcesResponse { claims }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Prepared> {
        self.prepared
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn save(&self, record: &Prepared) -> io::Result<()> {
        let bytes = crate::snapshot::encode(CLAIMS, record).map_err(io::Error::other)?;
        atomic::replace(&self.config.state_dir, CLAIMS, &bytes, Durability::Synced)
    }
}

fn devices(prepared: &PreparedClaim) -> Vec<Device> {
    prepared
        .devices
        .iter()
        .map(|d| Device {
            request_names: vec![d.request.clone()],
            pool_name: d.pool.clone(),
            device_name: d.device.clone(),
            cdi_device_ids: Vec::new(),
        })
        .collect()
}

/// How long in-flight calls get to finish once the agent stops: a
/// prepare's API read is bounded by [`CLAIM_TIMEOUT`].
const DRAIN: Duration = Duration::from_secs(12);

/// Serves the kubelet until `shutdown`, with what the kubelet says of the
/// plugin in `registration`. Then, in this order: the registration socket
/// goes (the kubelet deregisters a plugin whose socket is gone, and dials
/// it no more), calls in flight finish while new ones are refused (the
/// kubelet retries them with the next agent), and the DRA socket goes.
pub async fn serve(
    client: Client,
    config: PluginConfig,
    registration: tokio::sync::watch::Sender<Registration>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), PluginError> {
    let handler = Arc::new(Handler::new(client, config.clone())?);
    let endpoint = config.endpoint();
    let socket = config.registration();
    // The DRA socket first: the kubelet dials it as soon as it registers.
    let dra = listen(&endpoint)?;
    let reg = listen(&socket)?;
    let info = PluginInfo {
        r#type: proto::PLUGIN_TYPE.into(),
        name: DRIVER.into(),
        endpoint: endpoint.to_string_lossy().into_owned(),
        supported_versions: proto::SUPPORTED_VERSIONS.map(str::to_string).to_vec(),
    };
    let tracker = Arc::new(Tracker::new(
        registration,
        socket.to_string_lossy().into_owned(),
    ));
    let (stop_dra, dra_stopped) = tokio::sync::watch::channel(false);
    let (stop_reg, reg_stopped) = tokio::sync::watch::channel(false);
    let reporter = tokio::spawn(report::run(handler.clone(), dra_stopped.clone()));
    // The servers stop when their incoming connections end (at `stop_*`),
    // then finish the calls in flight; a signal that never fires is what
    // makes tonic's stop graceful.
    let graceful = std::future::pending::<()>;
    let mut dra_server = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(grpc::Dra::<grpc::V1>::new(handler.clone()))
            .add_service(grpc::Dra::<grpc::V1beta1>::new(handler.clone()))
            .serve_with_incoming_shutdown(incoming(dra, dra_stopped), graceful()),
    );
    let mut reg_server = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(grpc::Registration {
                info,
                tracker: tracker.clone(),
            })
            .serve_with_incoming_shutdown(incoming(reg, reg_stopped), graceful()),
    );
    let overdue = tokio::spawn({
        let tracker = tracker.clone();
        let grace = config.registration_grace;
        async move {
            tokio::time::sleep(grace).await;
            tracker.overdue(grace);
        }
    });
    tracing::info!(
        "DRA kubelet plugin: {} (registration {})",
        endpoint.display(),
        socket.display()
    );
    tokio::pin!(shutdown);
    let mut ended = None;
    tokio::select! {
        () = &mut shutdown => {}
        r = &mut dra_server => ended = Some(("DRA", r)),
        r = &mut reg_server => ended = Some(("registration", r)),
    }
    if let Some((what, result)) = ended {
        let why = match result {
            Ok(Ok(())) => "without an error".to_string(),
            Ok(Err(e)) => e.to_string(),
            Err(e) => e.to_string(),
        };
        tracing::error!(
            "the DRA kubelet plugin's {what} socket stopped serving ({why}); the plugin stops"
        );
    }
    overdue.abort();
    remove_socket(&socket);
    let _ = stop_reg.send(true);
    let _ = stop_dra.send(true);
    if tokio::time::timeout(DRAIN, &mut dra_server).await.is_err() {
        tracing::warn!("calls to the DRA socket still running after {DRAIN:?} are cut off");
        dra_server.abort();
    }
    remove_socket(&endpoint);
    if tokio::time::timeout(DRAIN, &mut reg_server).await.is_err() {
        reg_server.abort();
    }
    let _ = reporter.await;
    Ok(())
}

/// Each connection of `listener`, read so that any `:authority` is taken
/// ([`authority`]), until `stop`: then the listener is closed, so a new
/// connection is refused at once rather than left waiting in the backlog
/// while the calls in flight finish.
fn incoming(
    listener: UnixListener,
    stop: tokio::sync::watch::Receiver<bool>,
) -> impl futures::Stream<Item = io::Result<authority::Tolerant<tokio::net::UnixStream>>> {
    futures::stream::unfold(Some((listener, stop)), |state| async move {
        let (listener, mut stop) = state?;
        let accepted = tokio::select! {
            _ = stop.wait_for(|s| *s) => None,
            accepted = listener.accept() => Some(accepted),
        }?;
        let connection = accepted.map(|(c, _)| authority::Tolerant::new(c));
        Some((connection, Some((listener, stop))))
    })
}

fn remove_socket(path: &Path) {
    if let Err(e) = std::fs::remove_file(path) {
        if e.kind() != io::ErrorKind::NotFound {
            tracing::warn!("cannot remove {}: {e}", path.display());
        }
    }
}

/// Listens on `path`, replacing a stale socket there (the last run's);
/// anything else at that path is left alone.
fn listen(path: &Path) -> Result<UnixListener, PluginError> {
    use std::os::unix::fs::FileTypeExt as _;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|source| PluginError::Dir {
            path: dir.to_path_buf(),
            source,
        })?;
    }
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => {
            let _ = std::fs::remove_file(path);
        }
        Ok(_) => {
            return Err(PluginError::NotSocket {
                path: path.to_path_buf(),
            });
        }
        Err(_) => {}
    }
    UnixListener::bind(path).map_err(|source| PluginError::Listen {
        path: path.to_path_buf(),
        source,
    })
}
