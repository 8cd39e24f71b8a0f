//! The node-local files in the state dir (`/run/surveyor` by default),
//! their shapes and how to read them:
//!
//! - `networks.json`: what the CNI plugin reads at ADD time;
//! - `survey.json`: the NodeSurvey status;
//! - `maps.json`: the last NetworkMaps seen, as a `v1/List`, so an agent
//!   restarted without the API still resolves;
//! - `node.json`: the Node's labels last seen;
//! - `neighbors.json`: the LLDP neighbors with their wall-clock expiry, so
//!   a restarted agent resolves as before while the switches' TTLs run.
//!
//! The agent's [`crate::state_dir::StateDir`] writes them.

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use k8s_openapi::jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::crd::NetworkMap;
use crate::inventory::Neighbor;
use crate::resolve::Resolution;

pub const NETWORKS: &str = "networks.json";
pub const SURVEY: &str = "survey.json";
pub const MAPS: &str = "maps.json";
/// The Node's labels last seen from the API, so a restart with the API
/// down still honours nodeSelectors.
pub const NODE: &str = "node.json";
pub const NEIGHBORS: &str = "neighbors.json";
pub const DEFAULT_STATE_DIR: &str = "/run/surveyor";

#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("no snapshot at {0} (is the surveyor agent running on this node?)")]
    Missing(PathBuf),
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error("{path} is not a valid snapshot: {source}")]
    Corrupt {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("cannot write {path}: {source}")]
    Write { path: PathBuf, source: io::Error },
    #[error("cannot encode {file}: {source}")]
    Encode {
        file: &'static str,
        source: serde_json::Error,
    },
}

/// `networks.json`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    pub node: String,
    pub generation: u64,
    pub networks: BTreeMap<String, SnapshotNetwork>,
}

/// One network in `networks.json`. Resolved networks carry the device and
/// what identifies it; unresolved ones carry the reason instead.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotNetwork {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub index: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
    #[serde(default)]
    pub candidates: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

impl Snapshot {
    /// The snapshot of a resolution (generation left at 0 for the writer).
    pub fn of(node: &str, resolution: &Resolution) -> Snapshot {
        let networks = resolution
            .iter()
            .map(|(name, r)| {
                let entry = SnapshotNetwork {
                    device: r.device.as_ref().map(|d| d.name.clone()),
                    index: r.device.as_ref().map(|d| d.index),
                    mac: r.device.as_ref().and_then(|d| d.mac.clone()),
                    candidates: r.candidates.clone(),
                    reason: r.reason.clone(),
                };
                (name.clone(), entry)
            })
            .collect();
        Snapshot {
            node: node.to_string(),
            generation: 0,
            networks,
        }
    }
}

/// A `v1/List` of NetworkMaps, the shape of `maps.json`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MapList {
    pub api_version: String,
    pub kind: String,
    pub items: Vec<NetworkMap>,
}

impl MapList {
    pub fn new(items: Vec<NetworkMap>) -> Self {
        MapList {
            api_version: "v1".into(),
            kind: "List".into(),
            items,
        }
    }
}

/// Reads `networks.json` from `dir`.
pub fn read_networks(dir: &Path) -> Result<Snapshot, SnapshotError> {
    read_json(&dir.join(NETWORKS))
}

/// `node.json`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeLabels {
    pub node: String,
    pub labels: BTreeMap<String, String>,
}

/// Reads `node.json` from `dir`.
pub fn read_node(dir: &Path) -> Result<NodeLabels, SnapshotError> {
    read_json(&dir.join(NODE))
}

/// `neighbors.json`: every LLDP neighbor held, with the interface it was
/// heard on (index, name and MAC must still match to be restored).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct SavedNeighbors {
    pub node: String,
    pub neighbors: Vec<SavedNeighbor>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SavedNeighbor {
    pub interface: String,
    pub index: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
    /// When the neighbor's TTL runs out unless it is heard again.
    pub expires: Timestamp,
    pub neighbor: Neighbor,
}

/// Reads `neighbors.json` from `dir`.
pub fn read_neighbors(dir: &Path) -> Result<SavedNeighbors, SnapshotError> {
    read_json(&dir.join(NEIGHBORS))
}

/// Reads `maps.json` from `dir`.
pub fn read_maps(dir: &Path) -> Result<MapList, SnapshotError> {
    read_json(&dir.join(MAPS))
}

/// Reads `survey.json` from `dir`.
pub fn read_survey(dir: &Path) -> Result<crate::crd::NodeSurveyStatus, SnapshotError> {
    read_json(&dir.join(SURVEY))
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T, SnapshotError> {
    let bytes = fs::read(path).map_err(|source| match source.kind() {
        io::ErrorKind::NotFound => SnapshotError::Missing(path.to_path_buf()),
        _ => SnapshotError::Read {
            path: path.to_path_buf(),
            source,
        },
    })?;
    serde_json::from_slice(&bytes).map_err(|source| SnapshotError::Corrupt {
        path: path.to_path_buf(),
        source,
    })
}

/// Every file is pretty JSON with a trailing newline, for people who
/// `cat` them.
pub fn encode<T: Serialize>(file: &'static str, value: &T) -> Result<Vec<u8>, SnapshotError> {
    let mut out = serde_json::to_vec_pretty(value)
        .map_err(|source| SnapshotError::Encode { file, source })?;
    out.push(b'\n');
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snapshot(device: &str) -> Snapshot {
        let mut networks = BTreeMap::new();
        networks.insert(
            "green".to_string(),
            SnapshotNetwork {
                device: Some(device.into()),
                index: Some(4),
                mac: Some("52:54:00:aa:bb:01".into()),
                candidates: vec![device.into()],
                reason: None,
            },
        );
        Snapshot {
            node: "node01".into(),
            generation: 0,
            networks,
        }
    }

    #[test]
    fn snapshot_json_is_the_documented_shape() {
        let json = serde_json::to_value(Snapshot {
            generation: 7,
            ..snapshot("ens4")
        })
        .unwrap();
        assert_eq!(
            json,
            serde_json::json!({"node":"node01","generation":7,"networks":{"green":{"device":"ens4","index":4,"mac":"52:54:00:aa:bb:01","candidates":["ens4"]}}})
        );
    }

    #[test]
    fn read_errors_say_what_is_wrong() {
        let dir = tempfile::tempdir().unwrap();
        let e = read_networks(dir.path()).unwrap_err();
        assert!(matches!(e, SnapshotError::Missing(_)));
        assert!(e.to_string().contains("agent running"), "{e}");
        fs::write(dir.path().join(NETWORKS), b"{\"node\": ").unwrap();
        assert!(matches!(
            read_networks(dir.path()),
            Err(SnapshotError::Corrupt { .. })
        ));
    }
}
