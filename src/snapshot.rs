//! The node-local files in the state dir (`/run/surveyor` by default):
//!
//! - `networks.json`: what the CNI plugin reads at ADD time;
//! - `survey.json`: the NodeSurvey status;
//! - `maps.json`: the last NetworkMaps seen, as a `v1/List`, so an agent
//!   restarted without the API still resolves.
//!
//! Every file is replaced atomically (temp file, fsync, rename, fsync of
//! the directory) and only when its content changes, so a reader never
//! sees a torn file and an idle node never writes.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::crd::{NetworkMap, NodeSurveyStatus};
use crate::resolve::Resolution;

pub const NETWORKS: &str = "networks.json";
pub const SURVEY: &str = "survey.json";
pub const MAPS: &str = "maps.json";
/// The Node's labels last seen from the API, so a restart with the API
/// down still honours nodeSelectors.
pub const NODE: &str = "node.json";
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

/// Reads `maps.json` from `dir`.
pub fn read_maps(dir: &Path) -> Result<MapList, SnapshotError> {
    read_json(&dir.join(MAPS))
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

/// Replaces `dir/name` with `bytes` atomically and durably.
pub fn write_atomic(dir: &Path, name: &str, bytes: &[u8]) -> Result<(), SnapshotError> {
    let path = dir.join(name);
    let err = |source| SnapshotError::Write {
        path: path.clone(),
        source,
    };
    // A fixed temp name per file: a leftover from a killed writer is simply
    // overwritten by the next write.
    let tmp = dir.join(format!(".{name}.tmp"));
    let mut file = File::create(&tmp).map_err(err)?;
    file.write_all(bytes).map_err(err)?;
    file.sync_all().map_err(err)?;
    drop(file);
    fs::rename(&tmp, &path).map_err(err)?;
    // The rename is durable once the directory is.
    File::open(dir).and_then(|d| d.sync_all()).map_err(err)?;
    Ok(())
}

/// What one [`StateDir::publish`] wrote.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Written {
    pub networks: bool,
    pub survey: bool,
    pub maps: bool,
}

/// The state dir, remembering what it last wrote so unchanged content is
/// never rewritten.
#[derive(Debug)]
pub struct StateDir {
    path: PathBuf,
    networks: Option<Snapshot>,
    /// The bytes last written to the other files, by file name.
    files: BTreeMap<&'static str, Vec<u8>>,
    writes: u64,
}

impl StateDir {
    /// Opens (creating) the state dir and reads what is already there, so a
    /// restarted agent continues the generation and skips identical writes.
    pub fn open(path: impl Into<PathBuf>) -> Result<Self, SnapshotError> {
        let path = path.into();
        fs::create_dir_all(&path).map_err(|source| SnapshotError::Write {
            path: path.clone(),
            source,
        })?;
        let networks = read_networks(&path).ok();
        let files = [SURVEY, MAPS, NODE]
            .into_iter()
            .filter_map(|name| Some((name, fs::read(path.join(name)).ok()?)))
            .collect();
        Ok(StateDir {
            networks,
            files,
            path,
            writes: 0,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Files written since opened.
    pub fn writes(&self) -> u64 {
        self.writes
    }

    /// The generation of the last `networks.json` written or found.
    pub fn generation(&self) -> u64 {
        self.networks.as_ref().map_or(0, |s| s.generation)
    }

    /// Writes whichever files changed, `networks.json` first: it is what
    /// pods wait on.
    pub fn publish(
        &mut self,
        snapshot: Snapshot,
        status: &NodeSurveyStatus,
        maps: &MapList,
    ) -> Result<Written, SnapshotError> {
        let mut written = Written::default();
        let unchanged = self
            .networks
            .as_ref()
            .is_some_and(|last| last.node == snapshot.node && last.networks == snapshot.networks);
        if !unchanged {
            let next = Snapshot {
                generation: self.generation() + 1,
                ..snapshot
            };
            write_atomic(&self.path, NETWORKS, &encode(NETWORKS, &next)?)?;
            self.networks = Some(next);
            self.writes += 1;
            written.networks = true;
        }
        written.survey = self.replace(SURVEY, encode(SURVEY, status)?)?;
        written.maps = self.replace(MAPS, encode(MAPS, maps)?)?;
        Ok(written)
    }

    /// Records the Node's labels (`node.json`) when they changed.
    pub fn save_labels(&mut self, node: &NodeLabels) -> Result<bool, SnapshotError> {
        self.replace(NODE, encode(NODE, node)?)
    }

    /// Writes `name` when `bytes` differ from what it last held.
    fn replace(&mut self, name: &'static str, bytes: Vec<u8>) -> Result<bool, SnapshotError> {
        if self.files.get(name) == Some(&bytes) {
            return Ok(false);
        }
        write_atomic(&self.path, name, &bytes)?;
        self.files.insert(name, bytes);
        self.writes += 1;
        Ok(true)
    }
}

/// Every file is pretty JSON with a trailing newline, for people who
/// `cat` them.
fn encode<T: Serialize>(file: &'static str, value: &T) -> Result<Vec<u8>, SnapshotError> {
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
    fn writes_only_on_change_and_bumps_the_generation() {
        let dir = tempfile::tempdir().unwrap();
        let mut state = StateDir::open(dir.path().join("state")).unwrap();
        let status = NodeSurveyStatus::default();
        let maps = MapList::new(vec![]);
        let w = state.publish(snapshot("ens4"), &status, &maps).unwrap();
        assert_eq!(
            w,
            Written {
                networks: true,
                survey: true,
                maps: true
            }
        );
        assert_eq!(state.generation(), 1);
        let w = state.publish(snapshot("ens4"), &status, &maps).unwrap();
        assert_eq!(w, Written::default(), "nothing changed, nothing written");
        let w = state.publish(snapshot("ens5"), &status, &maps).unwrap();
        assert_eq!(
            w,
            Written {
                networks: true,
                survey: false,
                maps: false
            }
        );
        let read = read_networks(state.path()).unwrap();
        assert_eq!(read.generation, 2);
        assert_eq!(read.networks["green"].device.as_deref(), Some("ens5"));
        assert_eq!(state.writes(), 4);
        // No temp files are left behind.
        let names: Vec<String> = fs::read_dir(state.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(names.len(), 3, "{names:?}");
    }

    #[test]
    fn a_restarted_writer_continues_the_generation_and_skips_identical_content() {
        let dir = tempfile::tempdir().unwrap();
        let status = NodeSurveyStatus::default();
        let maps = MapList::new(vec![]);
        let mut first = StateDir::open(dir.path()).unwrap();
        first.publish(snapshot("ens4"), &status, &maps).unwrap();
        first.publish(snapshot("ens5"), &status, &maps).unwrap();
        let mut second = StateDir::open(dir.path()).unwrap();
        assert_eq!(second.generation(), 2);
        assert_eq!(
            second.publish(snapshot("ens5"), &status, &maps).unwrap(),
            Written::default()
        );
        second.publish(snapshot("ens4"), &status, &maps).unwrap();
        assert_eq!(read_networks(dir.path()).unwrap().generation, 3);
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
