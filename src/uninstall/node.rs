//! `surveyor uninstall node`: what Surveyor put on one host, removed.
//!
//! Which names are Surveyor's is pure ([`ours_in_state_dir`],
//! [`ours_in_cache_dir`], [`install_leftover`]); removal takes regular
//! files (and the kubelet plugin's sockets) by name, never a symlink or a
//! directory's contents wholesale, and empties a directory of ours only
//! when nothing else is in it.

use std::io;
use std::os::unix::fs::FileTypeExt as _;
use std::path::{Path, PathBuf};

use super::UninstallError;
use crate::dra::DRIVER;
use crate::state_dir;

/// Where Surveyor's files are on the host, as this process sees them.
#[derive(Clone, Debug)]
pub struct NodePaths {
    /// The CNI plugin directory `install-cni` copied the binary into.
    pub cni_bin_dir: PathBuf,
    /// The plugin's node setting `install-cni` wrote.
    pub node_config: PathBuf,
    pub state_dir: PathBuf,
    pub cache_dir: PathBuf,
    pub kubelet_plugins_dir: PathBuf,
    pub kubelet_registry_dir: PathBuf,
}

/// What a clean-up did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Cleaned {
    pub removed: Vec<PathBuf>,
    /// Files found among Surveyor's that are not Surveyor's: left.
    pub left: Vec<PathBuf>,
}

/// The agent's files in its state dir (and `attachments`, a dir of its
/// own): the snapshot, its other state, the lock, and atomic writes' temp
/// files (`.NAME.XXXX.tmp`).
pub fn ours_in_state_dir(name: &str) -> bool {
    const FILES: &[&str] = &[
        "networks.json",
        "survey.json",
        "maps.json",
        "neighbors.json",
        "node.json",
        "claims.json",
        state_dir::LOCK,
    ];
    FILES.contains(&name) || is_temp(name)
}

/// The plugin's ADD cache: `<containerID>:<ifname>.json` entries, their
/// `.lock` files, temp files.
pub fn ours_in_cache_dir(name: &str) -> bool {
    name.ends_with(".json") || name.ends_with(".lock") || is_temp(name)
}

/// A temp file `install-cni` left beside the binary (`.surveyor.XXXX`).
pub fn install_leftover(name: &str) -> bool {
    name.starts_with(".surveyor.") && name.len() > ".surveyor.".len()
}

/// An atomic write's temp file: `.NAME.XXXX.tmp`.
fn is_temp(name: &str) -> bool {
    name.starts_with('.') && name.ends_with(".tmp") && name.len() > 5
}

/// Removes Surveyor's files from the host. Refuses while an agent holds
/// the state dir (it would write them again). Running it twice is fine.
pub fn clean(paths: &NodePaths) -> Result<Cleaned, UninstallError> {
    if let Some(holder) = state_dir::holder(&paths.state_dir).map_err(|e| UninstallError::Read {
        path: paths.state_dir.clone(),
        source: io::Error::other(e.to_string()),
    })? {
        return Err(UninstallError::AgentRunning {
            dir: paths.state_dir.clone(),
            holder,
        });
    }
    let mut done = Cleaned::default();
    done.file(&paths.cni_bin_dir.join("surveyor"))?;
    done.matching(&paths.cni_bin_dir, install_leftover, false)?;
    done.file(&paths.node_config)?;
    if let Some(dir) = paths.node_config.parent() {
        done.dir_if_empty(dir)?;
    }
    let attachments = paths.state_dir.join(crate::attachment::DIR);
    done.matching(&attachments, |n| n.ends_with(".json") || is_temp(n), true)?;
    done.dir_if_empty(&attachments)?;
    done.matching(&paths.state_dir, ours_in_state_dir, true)?;
    done.dir_if_empty(&paths.state_dir)?;
    done.matching(&paths.cache_dir, ours_in_cache_dir, true)?;
    done.dir_if_empty(&paths.cache_dir)?;
    let plugin = paths.kubelet_plugins_dir.join(DRIVER);
    done.socket(&plugin.join("dra.sock"))?;
    done.dir_if_empty(&plugin)?;
    done.socket(
        &paths
            .kubelet_registry_dir
            .join(format!("{DRIVER}-reg.sock")),
    )?;
    Ok(done)
}

impl Cleaned {
    /// Removes `path` if it is a regular file.
    fn file(&mut self, path: &Path) -> Result<(), UninstallError> {
        match std::fs::symlink_metadata(path) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(source) => Err(UninstallError::Read {
                path: path.to_path_buf(),
                source,
            }),
            Ok(meta) if meta.file_type().is_file() => self.remove(path),
            Ok(_) => {
                self.left.push(path.to_path_buf());
                Ok(())
            }
        }
    }

    fn socket(&mut self, path: &Path) -> Result<(), UninstallError> {
        match std::fs::symlink_metadata(path) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(source) => Err(UninstallError::Read {
                path: path.to_path_buf(),
                source,
            }),
            Ok(meta) if meta.file_type().is_socket() => self.remove(path),
            Ok(_) => {
                self.left.push(path.to_path_buf());
                Ok(())
            }
        }
    }

    /// Removes the regular files of `dir` whose names `ours` takes; with
    /// `report`, the other entries are reported as left.
    fn matching(
        &mut self,
        dir: &Path,
        ours: impl Fn(&str) -> bool,
        report: bool,
    ) -> Result<(), UninstallError> {
        let entries = match std::fs::read_dir(dir) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(source) => {
                return Err(UninstallError::Read {
                    path: dir.to_path_buf(),
                    source,
                });
            }
            Ok(entries) => entries,
        };
        let mut names: Vec<(String, PathBuf)> = entries
            .filter_map(Result::ok)
            .map(|e| (e.file_name().to_string_lossy().into_owned(), e.path()))
            .collect();
        names.sort();
        for (name, path) in names {
            let is_file = std::fs::symlink_metadata(&path).is_ok_and(|m| m.file_type().is_file());
            if is_file && ours(&name) {
                self.remove(&path)?;
            } else if report && !path.is_dir() {
                self.left.push(path);
            }
        }
        Ok(())
    }

    fn dir_if_empty(&mut self, dir: &Path) -> Result<(), UninstallError> {
        let empty = match std::fs::read_dir(dir) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(_) => false,
            Ok(mut entries) => entries.next().is_none(),
        };
        let real_dir = std::fs::symlink_metadata(dir).is_ok_and(|m| m.file_type().is_dir());
        if !(empty && real_dir) {
            return Ok(());
        }
        std::fs::remove_dir(dir).map_err(|source| UninstallError::Remove {
            path: dir.to_path_buf(),
            source,
        })?;
        self.removed.push(dir.to_path_buf());
        Ok(())
    }

    fn remove(&mut self, path: &Path) -> Result<(), UninstallError> {
        match std::fs::remove_file(path) {
            Ok(()) => {
                self.removed.push(path.to_path_buf());
                Ok(())
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(source) => Err(UninstallError::Remove {
                path: path.to_path_buf(),
                source,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_surveyor_s_names_are_taken() {
        for name in [
            "networks.json",
            "agent.lock",
            "claims.json",
            ".networks.json.Ab3x.tmp",
        ] {
            assert!(ours_in_state_dir(name), "{name}");
        }
        for name in ["notes.txt", "networks.json.bak", ".tmp", "lost+found"] {
            assert!(!ours_in_state_dir(name), "{name}");
        }
        assert!(ours_in_cache_dir("c1:net1.json") && ours_in_cache_dir("c1:net1.lock"));
        assert!(!ours_in_cache_dir("README"));
        assert!(install_leftover(".surveyor.Xy12"));
        assert!(!install_leftover(".surveyor.") && !install_leftover("surveyor"));
    }
}
