//! The ADD cache: the exact delegate configuration used at ADD, so DEL,
//! CHECK and GC send the delegate the same one even after the map changed
//! or the agent is gone. One file per attachment,
//! `<cacheDir>/<containerID>:<ifname>.json`: `:` is in neither a container
//! ID nor an interface name, so no two attachments share a file.
//!
//! Entries are replaced whole and durably through exclusively created temp
//! files. ADD, DEL and GC of one attachment are serialized by a lock file
//! beside its entry (`<containerID>:<ifname>.lock`), so a GC never
//! releases an attachment an ADD is making.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::{MetadataExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use nix::fcntl::{Flock, FlockArg};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::error::{CACHE_FAILED, CniError};
use crate::atomic;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Entry {
    pub container_id: String,
    pub ifname: String,
    /// The CNI network name (`name` in the config).
    pub name: String,
    /// The semantic network.
    pub network: String,
    /// The master device chosen.
    pub device: String,
    /// The delegate's configuration, exactly as sent at ADD.
    pub config: Map<String, Value>,
    /// How the pod's interface is shaped, when it is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shaping: Option<super::shaper::Shaping>,
}

/// An entry that is there but cannot be used.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unusable {
    pub path: PathBuf,
    pub why: String,
}

/// One file of the cache, as listed.
#[derive(Debug)]
pub struct Listed {
    pub container_id: String,
    pub ifname: String,
    /// How long ago it was written.
    pub age: Duration,
    pub entry: Result<Entry, Unusable>,
}

/// The lock on one attachment, held until dropped.
pub struct AttachmentLock {
    _lock: Flock<File>,
}

pub struct Cache {
    dir: PathBuf,
}

impl Cache {
    pub fn new(dir: &Path) -> Self {
        Cache {
            dir: dir.to_path_buf(),
        }
    }

    /// `<containerID>:<ifname>`. Both are checked before they get here
    /// (no `/`, neither `.` nor `..`, no `:`), so the name stays inside the
    /// directory and names one attachment only.
    fn key(container_id: &str, ifname: &str) -> String {
        format!("{container_id}:{ifname}")
    }

    fn path(&self, container_id: &str, ifname: &str) -> PathBuf {
        self.dir
            .join(format!("{}.json", Self::key(container_id, ifname)))
    }

    fn fail(&self, what: &str, e: impl std::fmt::Display) -> CniError {
        CniError::new(
            CACHE_FAILED,
            format!("{what} the ADD cache in {}: {e}", self.dir.display()),
        )
    }

    /// Waits for, and takes, the lock of one attachment.
    pub fn lock(&self, container_id: &str, ifname: &str) -> Result<AttachmentLock, CniError> {
        fs::create_dir_all(&self.dir).map_err(|e| self.fail("cannot create", e))?;
        self.take(container_id, ifname, FlockArg::LockExclusive)?
            .ok_or_else(|| self.fail("cannot lock in", "the lock reported busy to a waiter"))
    }

    /// The lock of one attachment if no one holds it; `None` when busy.
    pub fn try_lock(
        &self,
        container_id: &str,
        ifname: &str,
    ) -> Result<Option<AttachmentLock>, CniError> {
        self.take(container_id, ifname, FlockArg::LockExclusiveNonblock)
    }

    fn take(
        &self,
        container_id: &str,
        ifname: &str,
        how: FlockArg,
    ) -> Result<Option<AttachmentLock>, CniError> {
        let path = self
            .dir
            .join(format!("{}.lock", Self::key(container_id, ifname)));
        loop {
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .mode(0o600)
                .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_CLOEXEC)
                .open(&path)
                .map_err(|e| self.fail("cannot open a lock in", e))?;
            let lock = match Flock::lock(file, how) {
                Ok(lock) => lock,
                Err((_, nix::errno::Errno::EWOULDBLOCK)) => return Ok(None),
                Err((_, errno)) => return Err(self.fail("cannot lock in", errno)),
            };
            // The holder before us may have removed the file once done: a
            // lock on a file no longer at the path locks nothing.
            let held = lock.metadata().map(|m| (m.dev(), m.ino()));
            let there = fs::symlink_metadata(&path).map(|m| (m.dev(), m.ino()));
            if let (Ok(held), Ok(there)) = (held, there) {
                if held == there {
                    return Ok(Some(AttachmentLock { _lock: lock }));
                }
            }
        }
    }

    /// Records an attachment, durably. Hold its lock.
    pub fn write(&self, entry: &Entry) -> Result<(), CniError> {
        self.write_deferred(entry)?
            .sync()
            .map_err(|e| self.fail("cannot flush", e))
    }

    /// Records an attachment now and leaves the flush to disk to the caller
    /// (ADD flushes while the delegate runs: the entry is in place before
    /// the delegate starts, so a crash after it leaves one DEL can use, and
    /// on disk before ADD answers). Hold its lock.
    pub fn write_deferred(&self, entry: &Entry) -> Result<atomic::Unsynced, CniError> {
        fs::create_dir_all(&self.dir).map_err(|e| self.fail("cannot create", e))?;
        let bytes =
            serde_json::to_vec(entry).map_err(|e| self.fail("cannot encode an entry for", e))?;
        let name = format!("{}.json", Self::key(&entry.container_id, &entry.ifname));
        atomic::replace_deferred(&self.dir, &name, &bytes)
            .map_err(|e| self.fail("cannot write to", e))
    }

    /// The entry of an attachment: `Ok(None)` when none was recorded,
    /// `Err` when one is there but cannot be used (truncated, not JSON,
    /// another attachment's).
    pub fn read(&self, container_id: &str, ifname: &str) -> Result<Option<Entry>, Unusable> {
        let path = self.path(container_id, ifname);
        let entry = match read_entry(&path) {
            Ok(Some(entry)) => entry,
            Ok(None) => return Ok(None),
            Err(why) => return Err(Unusable { path, why }),
        };
        if entry.container_id == container_id && entry.ifname == ifname {
            Ok(Some(entry))
        } else {
            Err(Unusable {
                why: format!(
                    "it records {}/{}, not {container_id}/{ifname}",
                    entry.container_id, entry.ifname
                ),
                path,
            })
        }
    }

    /// Forgets an attachment, with its lock file; absent entries are fine.
    /// Hold its lock.
    pub fn remove(&self, container_id: &str, ifname: &str) -> Result<(), CniError> {
        let key = Self::key(container_id, ifname);
        for name in [format!("{key}.json"), format!("{key}.lock")] {
            match fs::remove_file(self.dir.join(name)) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => {
                    return Err(self.fail("cannot remove an entry from", e));
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// Every entry, usable or not (GC). A missing directory holds none.
    pub fn list(&self) -> Result<Vec<Listed>, CniError> {
        let dir = match fs::read_dir(&self.dir) {
            Ok(d) => d,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(self.fail("cannot list", e)),
        };
        let now = SystemTime::now();
        let mut listed: Vec<Listed> = dir
            .flatten()
            .filter_map(|d| {
                let name = d.file_name().into_string().ok()?;
                let key = name
                    .strip_suffix(".json")
                    .filter(|_| !name.starts_with('.'))?;
                let (container_id, ifname) = key.split_once(':')?;
                let path = d.path();
                let age = fs::symlink_metadata(&path)
                    .and_then(|m| m.modified())
                    .ok()
                    .and_then(|t| now.duration_since(t).ok())
                    .unwrap_or_default();
                let entry = match read_entry(&path) {
                    Ok(Some(e)) if e.container_id == container_id && e.ifname == ifname => Ok(e),
                    Ok(Some(e)) => Err(Unusable {
                        why: format!("it records {}/{}", e.container_id, e.ifname),
                        path,
                    }),
                    Ok(None) => return None, // gone since listed
                    Err(why) => Err(Unusable { path, why }),
                };
                Some(Listed {
                    container_id: container_id.to_string(),
                    ifname: ifname.to_string(),
                    age,
                    entry,
                })
            })
            .collect();
        listed.sort_by(|a, b| (&a.container_id, &a.ifname).cmp(&(&b.container_id, &b.ifname)));
        Ok(listed)
    }
}

/// One entry file: `Ok(None)` when absent.
fn read_entry(path: &Path) -> Result<Option<Entry>, String> {
    let bytes = match fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("cannot read it: {e}")),
    };
    if bytes.is_empty() {
        return Err("it is empty (truncated)".into());
    }
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|e| format!("it is not a cache entry: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(id: &str, ifname: &str) -> Entry {
        Entry {
            container_id: id.into(),
            ifname: ifname.into(),
            name: "green".into(),
            network: "green".into(),
            device: "ens4".into(),
            config: serde_json::from_str(r#"{"type":"macvlan","master":"ens4"}"#).unwrap(),
            shaping: None,
        }
    }

    #[test]
    fn write_read_list_remove() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::new(&dir.path().join("cache"));
        assert_eq!(cache.read("c1", "net1"), Ok(None));
        assert!(cache.list().unwrap().is_empty(), "missing dir holds none");
        {
            let _lock = cache.lock("c1", "net1").unwrap();
            cache.write(&entry("c1", "net1")).unwrap();
        }
        cache.write(&entry("c2", "net1")).unwrap();
        assert_eq!(cache.read("c1", "net1"), Ok(Some(entry("c1", "net1"))));
        assert!(dir.path().join("cache/c1:net1.json").exists());
        let listed = cache.list().unwrap();
        assert_eq!(listed.len(), 2, "lock files are not entries");
        assert!(listed[0].age < Duration::from_secs(5));
        cache.remove("c1", "net1").unwrap();
        cache.remove("c1", "net1").unwrap();
        assert!(!dir.path().join("cache/c1:net1.lock").exists());
        let listed = cache.list().unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].entry.as_ref().unwrap(), &entry("c2", "net1"));
    }

    #[test]
    fn attachments_whose_names_share_dashes_are_apart() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::new(dir.path());
        cache.write(&entry("a-b", "c")).unwrap();
        cache.write(&entry("a", "b-c")).unwrap();
        cache.remove("a", "b-c").unwrap();
        assert_eq!(cache.read("a-b", "c"), Ok(Some(entry("a-b", "c"))));
        assert_eq!(cache.read("a", "b-c"), Ok(None));
    }

    #[test]
    fn truncated_garbage_and_foreign_entries_are_unusable_not_fatal() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::new(dir.path());
        fs::write(dir.path().join("x:net1.json"), "").unwrap();
        let e = cache.read("x", "net1").unwrap_err();
        assert!(e.why.contains("empty"), "{e:?}");
        fs::write(dir.path().join("x:net1.json"), "{").unwrap();
        assert!(
            cache
                .read("x", "net1")
                .unwrap_err()
                .why
                .contains("not a cache entry")
        );
        fs::write(
            dir.path().join("y:net1.json"),
            serde_json::to_vec(&entry("z", "net1")).unwrap(),
        )
        .unwrap();
        assert!(cache.read("y", "net1").unwrap_err().why.contains("z/net1"));
        let listed = cache.list().unwrap();
        assert_eq!(listed.len(), 2);
        assert!(listed.iter().all(|l| l.entry.is_err()));
    }

    #[test]
    fn the_lock_serializes_and_survives_its_file_being_removed() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::new(dir.path());
        let held = cache.lock("c1", "net1").unwrap();
        assert!(cache.try_lock("c1", "net1").unwrap().is_none(), "busy");
        assert!(
            cache.try_lock("c2", "net1").unwrap().is_some(),
            "another attachment"
        );
        // The holder finishes: removes entry and lock file, then lets go.
        cache.remove("c1", "net1").unwrap();
        drop(held);
        let again = cache.try_lock("c1", "net1").unwrap();
        assert!(again.is_some());
        assert!(
            dir.path().join("c1:net1.lock").exists(),
            "a fresh lock file"
        );
        // A waiter on the removed file retries onto the fresh one.
        let dir2 = dir.path().to_path_buf();
        let waiter = std::thread::spawn(move || {
            let cache = Cache::new(&dir2);
            let _l = cache.lock("c1", "net1").unwrap();
            cache.try_lock("c1", "net1").unwrap().is_none()
        });
        std::thread::sleep(Duration::from_millis(100));
        cache.remove("c1", "net1").unwrap();
        drop(again);
        assert!(
            waiter.join().unwrap(),
            "the waiter holds the only live lock"
        );
    }

    #[test]
    fn no_write_through_a_planted_symlink() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        fs::write(&victim, "keep").unwrap();
        let cache_dir = dir.path().join("cache");
        fs::create_dir(&cache_dir).unwrap();
        for name in [".c1-net1.tmp", ".c1:net1.json.tmp", "c1:net1.lock"] {
            std::os::unix::fs::symlink(&victim, cache_dir.join(name)).unwrap();
        }
        let cache = Cache::new(&cache_dir);
        cache.write(&entry("c1", "net1")).unwrap();
        assert_eq!(fs::read_to_string(&victim).unwrap(), "keep");
        assert!(
            cache.lock("c1", "net1").is_err(),
            "a lock file that is a symlink"
        );
        assert_eq!(fs::read_to_string(&victim).unwrap(), "keep");
    }
}
