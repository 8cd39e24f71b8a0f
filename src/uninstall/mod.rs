//! Removing Surveyor for good, which no stopping agent may do on its own
//! (it cannot tell a rollout from an uninstall): [`node`] what it put on a
//! host, [`cluster`] what it put in the API besides the admins' maps.
//!
//! Only Surveyor's own files are removed, by name, never through a symlink
//! and never recursively; anything else found where they live is left and
//! reported.

pub mod cluster;
pub mod node;

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum UninstallError {
    #[error(
        "a surveyor agent still runs on this node ({holder}, holding {dir}): delete its DaemonSet first (kubectl delete -k deploy/)"
    )]
    AgentRunning { dir: PathBuf, holder: String },
    #[error("cannot remove {path}: {source}")]
    Remove {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "{what} still exists: delete Surveyor's workloads first (kubectl delete -k deploy/), then run this again"
    )]
    StillDeployed { what: String },
    #[error("{what}: {source}")]
    Api {
        what: String,
        source: Box<kube::Error>,
    },
}
