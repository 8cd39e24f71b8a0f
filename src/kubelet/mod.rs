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

pub mod grpc;
pub mod network_data;
pub mod prepare;
pub mod proto;
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
use tokio_stream::wrappers::UnixListenerStream;

use crate::atomic::{self, Durability};
use crate::dra::DRIVER;
use crate::snapshot::read_networks;
use prepare::{Prepared, PreparedClaim, prepare};
use proto::{
    Claim, Device, NodePrepareResourceResponse, NodePrepareResourcesResponse,
    NodeUnprepareResourceResponse, NodeUnprepareResourcesResponse, PluginInfo,
};

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

    fn registered(&self, status: &proto::RegistrationStatus) {
        if status.plugin_registered {
            tracing::info!("the kubelet registered DRA driver {DRIVER}");
        } else {
            tracing::error!("the kubelet refused DRA driver {DRIVER}: {}", status.error);
        }
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
        let prepared = prepare(&self.config.node, &claim.uid, &object, &snapshot)
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

/// Serves the kubelet until `shutdown`, then removes both sockets (the
/// kubelet deregisters a plugin whose socket is gone).
pub async fn serve(
    client: Client,
    config: PluginConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), PluginError> {
    let handler = Arc::new(Handler::new(client, config.clone())?);
    let endpoint = config.endpoint();
    let registration = config.registration();
    let dra = listen(&endpoint)?;
    let reg = listen(&registration)?;
    let info = PluginInfo {
        r#type: proto::PLUGIN_TYPE.into(),
        name: DRIVER.into(),
        endpoint: endpoint.to_string_lossy().into_owned(),
        supported_versions: proto::SUPPORTED_VERSIONS.map(str::to_string).to_vec(),
    };
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let reporter = tokio::spawn(report::run(handler.clone(), stopped.clone()));
    let until = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    let dra_server = tonic::transport::Server::builder()
        .add_service(grpc::Dra::<grpc::V1>::new(handler.clone()))
        .add_service(grpc::Dra::<grpc::V1beta1>::new(handler.clone()))
        .serve_with_incoming_shutdown(UnixListenerStream::new(dra), until(stopped.clone()));
    let reg_server = tonic::transport::Server::builder()
        .add_service(grpc::Registration { info, handler })
        .serve_with_incoming_shutdown(UnixListenerStream::new(reg), until(stopped));
    tracing::info!(
        "DRA kubelet plugin: {} (registration {})",
        endpoint.display(),
        registration.display()
    );
    let stopper = async move {
        shutdown.await;
        let _ = stop.send(true);
    };
    let (a, b, ()) = tokio::join!(dra_server, reg_server, stopper);
    let _ = reporter.await;
    for (what, result) in [("DRA", a), ("registration", b)] {
        if let Err(e) = result {
            tracing::warn!("the {what} socket's server ended: {e}");
        }
    }
    for path in [&registration, &endpoint] {
        let _ = std::fs::remove_file(path);
    }
    Ok(())
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
