//! The ADD cache: the exact delegate configuration used at ADD, so DEL,
//! CHECK and GC send the delegate the same one even after the map changed
//! or the agent is gone. One file per attachment:
//! `<cacheDir>/<containerID>-<ifname>.json`.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::error::{CACHE_FAILED, CniError};

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

    /// The file of one attachment. Container IDs and interface names are
    /// checked before they get here (no `/`, no leading `.`), so the path
    /// stays inside the directory.
    fn path(&self, container_id: &str, ifname: &str) -> PathBuf {
        self.dir.join(format!("{container_id}-{ifname}.json"))
    }

    fn fail(&self, what: &str, e: impl std::fmt::Display) -> CniError {
        CniError::new(
            CACHE_FAILED,
            format!("{what} the ADD cache in {}: {e}", self.dir.display()),
        )
    }

    /// Records an attachment (before its delegate runs, so a crash after
    /// the delegate leaves an entry DEL can use).
    pub fn write(&self, entry: &Entry) -> Result<(), CniError> {
        fs::create_dir_all(&self.dir).map_err(|e| self.fail("cannot create", e))?;
        let path = self.path(&entry.container_id, &entry.ifname);
        let bytes =
            serde_json::to_vec(entry).map_err(|e| self.fail("cannot encode an entry for", e))?;
        // Temp + rename: a reader never sees half an entry. No fsync: after
        // a power loss the pods are gone too, and GC tidies what is left.
        let tmp = self
            .dir
            .join(format!(".{}-{}.tmp", entry.container_id, entry.ifname));
        fs::write(&tmp, bytes)
            .and_then(|()| fs::rename(&tmp, &path))
            .map_err(|e| self.fail("cannot write to", e))
    }

    /// The entry of an attachment, if one was recorded.
    pub fn read(&self, container_id: &str, ifname: &str) -> Result<Option<Entry>, CniError> {
        let path = self.path(container_id, ifname);
        let bytes = match fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(self.fail("cannot read", e)),
        };
        let entry: Entry = serde_json::from_slice(&bytes)
            .map_err(|e| self.fail(&format!("corrupt entry {} in", path.display()), e))?;
        // `a-b` + `c` and `a` + `b-c` share a file name: only ours counts.
        Ok((entry.container_id == container_id && entry.ifname == ifname).then_some(entry))
    }

    /// Forgets an attachment; absent entries are fine.
    pub fn remove(&self, container_id: &str, ifname: &str) -> Result<(), CniError> {
        match fs::remove_file(self.path(container_id, ifname)) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => {
                Err(self.fail("cannot remove an entry from", e))
            }
            _ => Ok(()),
        }
    }

    /// Every readable entry (GC). A missing directory holds none.
    pub fn list(&self) -> Result<Vec<Entry>, CniError> {
        let dir = match fs::read_dir(&self.dir) {
            Ok(d) => d,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(self.fail("cannot list", e)),
        };
        let mut entries: Vec<Entry> = dir
            .flatten()
            .filter(|d| {
                d.file_name()
                    .to_str()
                    .is_some_and(|n| n.ends_with(".json") && !n.starts_with('.'))
            })
            .filter_map(|d| serde_json::from_slice(&fs::read(d.path()).ok()?).ok())
            .collect();
        entries.sort_by(|a, b| (&a.container_id, &a.ifname).cmp(&(&b.container_id, &b.ifname)));
        Ok(entries)
    }
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
        }
    }

    #[test]
    fn write_read_list_remove() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::new(&dir.path().join("cache"));
        assert_eq!(cache.read("c1", "net1").unwrap(), None);
        assert!(cache.list().unwrap().is_empty(), "missing dir holds none");
        cache.write(&entry("c1", "net1")).unwrap();
        cache.write(&entry("c2", "net1")).unwrap();
        assert_eq!(cache.read("c1", "net1").unwrap(), Some(entry("c1", "net1")));
        assert!(dir.path().join("cache/c1-net1.json").exists());
        assert_eq!(cache.list().unwrap().len(), 2);
        cache.remove("c1", "net1").unwrap();
        cache.remove("c1", "net1").unwrap();
        assert_eq!(cache.list().unwrap(), vec![entry("c2", "net1")]);
    }

    #[test]
    fn a_colliding_file_name_is_not_our_entry() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::new(dir.path());
        cache.write(&entry("a-b", "c")).unwrap();
        assert_eq!(cache.read("a", "b-c").unwrap(), None);
        std::fs::write(dir.path().join("x-net1.json"), "{").unwrap();
        assert_eq!(cache.read("x", "net1").unwrap_err().code, CACHE_FAILED);
    }
}
