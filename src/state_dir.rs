//! The agent's state dir: held by one agent at a time (an exclusive
//! `flock` on `agent.lock`, which names the holder), each file replaced
//! atomically (see [`crate::atomic`]) and only when its content changes, so
//! a reader never sees a torn file and an idle node never writes.
//!
//! A write that fails (disk full, read-only) changes nothing on disk and
//! nothing in what this remembers as written: the next publish writes it
//! again.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read as _, Seek as _, Write as _};
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg};

use crate::atomic::{self, Durability};
use crate::crd::NodeSurveyStatus;
use crate::snapshot::{
    MAPS, MapList, NEIGHBORS, NETWORKS, NODE, NodeLabels, SURVEY, SavedNeighbors, Snapshot,
    SnapshotError, encode, read_networks,
};

/// The lock file, holding the PID of the agent that has the dir.
pub const LOCK: &str = "agent.lock";

#[derive(Debug, thiserror::Error)]
pub enum StateDirError {
    #[error("cannot create or open the state dir {dir}: {source}")]
    Open { dir: PathBuf, source: io::Error },
    #[error(
        "the state dir {dir} is in use by another surveyor agent ({holder}); one agent per node and state dir: stop the other, or give this one its own --state-dir"
    )]
    Locked { dir: PathBuf, holder: String },
    #[error(transparent)]
    Snapshot(#[from] SnapshotError),
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
    /// Held for as long as this lives: the flock is the claim on the dir.
    _lock: Flock<File>,
}

impl StateDir {
    /// Opens (creating) and locks the state dir, and reads what is already
    /// there, so a restarted agent continues the generation and skips
    /// identical writes.
    pub fn open(path: impl Into<PathBuf>) -> Result<Self, StateDirError> {
        let path = path.into();
        let open_err = |source| StateDirError::Open {
            dir: path.clone(),
            source,
        };
        fs::create_dir_all(&path).map_err(open_err)?;
        let lock = lock(&path)?;
        let networks = read_networks(&path).ok();
        let files = [SURVEY, MAPS, NODE, NEIGHBORS]
            .into_iter()
            .filter_map(|name| Some((name, fs::read(path.join(name)).ok()?)))
            .collect();
        Ok(StateDir {
            networks,
            files,
            path,
            writes: 0,
            _lock: lock,
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

    /// The NodeSurvey status last written (or found at start).
    pub fn survey(&self) -> Option<NodeSurveyStatus> {
        serde_json::from_slice(self.files.get(SURVEY)?).ok()
    }

    /// Writes whichever files changed, `networks.json` first: it is what
    /// pods wait on. Stops at the first failure; what was not written is
    /// written by the next call.
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
            self.write(NETWORKS, &encode(NETWORKS, &next)?)?;
            self.networks = Some(next);
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

    /// Records the LLDP neighbors (`neighbors.json`) when they changed.
    pub fn save_neighbors(&mut self, saved: &SavedNeighbors) -> Result<bool, SnapshotError> {
        self.replace(NEIGHBORS, encode(NEIGHBORS, saved)?)
    }

    /// Writes `name` when `bytes` differ from what it last held.
    fn replace(&mut self, name: &'static str, bytes: Vec<u8>) -> Result<bool, SnapshotError> {
        if self.files.get(name) == Some(&bytes) {
            return Ok(false);
        }
        self.write(name, &bytes)?;
        self.files.insert(name, bytes);
        Ok(true)
    }

    fn write(&mut self, name: &str, bytes: &[u8]) -> Result<(), SnapshotError> {
        atomic::replace(&self.path, name, bytes, Durability::Synced).map_err(|source| {
            SnapshotError::Write {
                path: self.path.join(name),
                source,
            }
        })?;
        self.writes += 1;
        Ok(())
    }
}

/// Who holds the state dir `dir`, if an agent does now. A dir without a
/// lock file is held by no one (nothing is created); a free lock is taken
/// for a moment to tell.
pub fn holder(dir: &Path) -> Result<Option<String>, StateDirError> {
    match fs::symlink_metadata(dir.join(LOCK)) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(StateDirError::Open {
                dir: dir.to_path_buf(),
                source,
            });
        }
        Ok(_) => {}
    }
    match lock(dir) {
        Ok(_released) => Ok(None),
        Err(StateDirError::Locked { holder, .. }) => Ok(Some(holder)),
        Err(e) => Err(e),
    }
}

/// Takes the dir's lock, or says who has it.
fn lock(dir: &Path) -> Result<Flock<File>, StateDirError> {
    let path = dir.join(LOCK);
    let open_err = |source| StateDirError::Open {
        dir: dir.to_path_buf(),
        source,
    };
    // Never through a symlink planted at the lock's name.
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o644)
        .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_CLOEXEC)
        .open(&path)
        .map_err(open_err)?;
    let mut lock = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
        Ok(lock) => lock,
        Err((mut file, errno)) if errno == nix::errno::Errno::EWOULDBLOCK => {
            let mut holder = String::new();
            let _ = file.read_to_string(&mut holder);
            let holder = match holder.trim() {
                "" => "a process that has not written its PID yet".to_string(),
                pid => format!("{pid}, as {} says", path.display()),
            };
            return Err(StateDirError::Locked {
                dir: dir.to_path_buf(),
                holder,
            });
        }
        Err((_, errno)) => return Err(open_err(io::Error::from(errno))),
    };
    // Ours now: say who holds it. Only the holder writes this file.
    let me = format!("pid {}\n", std::process::id());
    lock.set_len(0)
        .and_then(|()| lock.rewind())
        .and_then(|()| lock.write_all(me.as_bytes()))
        .map_err(open_err)?;
    Ok(lock)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snapshot::{SnapshotNetwork, read_networks};

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

    fn names(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        names
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
        assert_eq!(
            names(state.path()),
            ["agent.lock", "maps.json", "networks.json", "survey.json"]
        );
    }

    #[test]
    fn a_restarted_writer_continues_the_generation_and_skips_identical_content() {
        let dir = tempfile::tempdir().unwrap();
        let status = NodeSurveyStatus::default();
        let maps = MapList::new(vec![]);
        {
            let mut first = StateDir::open(dir.path()).unwrap();
            first.publish(snapshot("ens4"), &status, &maps).unwrap();
            first.publish(snapshot("ens5"), &status, &maps).unwrap();
        }
        let mut second = StateDir::open(dir.path()).unwrap();
        assert_eq!(second.generation(), 2);
        assert_eq!(second.survey(), Some(status.clone()));
        assert_eq!(
            second.publish(snapshot("ens5"), &status, &maps).unwrap(),
            Written::default()
        );
        second.publish(snapshot("ens4"), &status, &maps).unwrap();
        assert_eq!(read_networks(dir.path()).unwrap().generation, 3);
    }

    #[test]
    fn a_second_agent_on_the_dir_is_refused_naming_the_holder() {
        let dir = tempfile::tempdir().unwrap();
        let first = StateDir::open(dir.path()).unwrap();
        let e = StateDir::open(dir.path()).unwrap_err();
        let msg = e.to_string();
        assert!(matches!(e, StateDirError::Locked { .. }), "{msg}");
        assert!(
            msg.contains(&dir.path().display().to_string())
                && msg.contains(&format!("pid {}", std::process::id())),
            "{msg}"
        );
        drop(first);
        StateDir::open(dir.path()).expect("free again once the first is gone");
    }

    #[test]
    fn a_lock_file_that_is_a_symlink_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        fs::write(&victim, "keep").unwrap();
        std::os::unix::fs::symlink(&victim, dir.path().join(LOCK)).unwrap();
        let e = StateDir::open(dir.path()).unwrap_err();
        assert!(matches!(e, StateDirError::Open { .. }), "{e}");
        assert_eq!(fs::read_to_string(&victim).unwrap(), "keep");
    }
}
