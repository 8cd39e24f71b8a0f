//! NetworkMaps from a directory of YAML/JSON files (standalone mode),
//! re-read when inotify says the directory changed.
//!
//! A file that stops parsing keeps its last good maps: a half-saved edit or
//! a typo never takes a network away. A file that is deleted takes its maps
//! with it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use notify::{RecursiveMode, Watcher as _};
use tokio::sync::mpsc;

use crate::crd::NetworkMap;
use crate::network_map::{CompiledMap, parse_documents};

#[derive(Debug, thiserror::Error)]
pub enum MapsDirError {
    #[error("maps directory {0}: {1}")]
    Read(PathBuf, std::io::Error),
    #[error("cannot watch maps directory {0}: {1}")]
    Watch(PathBuf, notify::Error),
}

/// One map and its compiled form.
#[derive(Clone, Debug)]
pub struct LoadedMap {
    pub map: NetworkMap,
    pub compiled: CompiledMap,
}

pub struct MapsDir {
    dir: PathBuf,
    /// The last good maps of each file.
    files: BTreeMap<PathBuf, Vec<LoadedMap>>,
    /// The last error reported for each file, so it is logged once.
    errors: BTreeMap<PathBuf, String>,
}

impl MapsDir {
    /// Reads the directory once. It must exist.
    pub fn open(dir: impl Into<PathBuf>) -> Result<Self, MapsDirError> {
        let mut maps = MapsDir {
            dir: dir.into(),
            files: BTreeMap::new(),
            errors: BTreeMap::new(),
        };
        maps.reload()?;
        Ok(maps)
    }

    /// Re-reads every file. Returns whether the set of maps changed.
    pub fn reload(&mut self) -> Result<bool, MapsDirError> {
        let before = self.maps_fingerprint();
        let entries =
            std::fs::read_dir(&self.dir).map_err(|e| MapsDirError::Read(self.dir.clone(), e))?;
        let mut seen = Vec::new();
        for entry in entries.flatten() {
            let path = entry.path();
            if !is_map_file(&path) {
                continue;
            }
            seen.push(path.clone());
            let loaded = std::fs::read_to_string(&path)
                .map_err(|e| e.to_string())
                .and_then(|text| load(&text));
            match loaded {
                Ok(maps) => {
                    if self.errors.remove(&path).is_some() {
                        tracing::info!("{}: fixed, {} map(s) loaded", path.display(), maps.len());
                    }
                    self.files.insert(path, maps);
                }
                Err(reason) => {
                    if self.errors.get(&path) != Some(&reason) {
                        let kept = self.files.get(&path).map_or(0, Vec::len);
                        tracing::error!(
                            "{}: {reason}; ignoring this version of the file (keeping its last good {kept} map(s))",
                            path.display()
                        );
                        self.errors.insert(path, reason);
                    }
                }
            }
        }
        self.files.retain(|p, _| seen.contains(p));
        self.errors.retain(|p, _| seen.contains(p));
        Ok(self.maps_fingerprint() != before)
    }

    /// The maps in force: by file path order; a name defined twice keeps
    /// its first definition.
    pub fn maps(&self) -> Vec<LoadedMap> {
        let mut by_name: BTreeMap<&str, (&Path, &LoadedMap)> = BTreeMap::new();
        for (path, maps) in &self.files {
            for m in maps {
                match by_name.get(m.compiled.name.as_str()) {
                    Some((first, _)) => tracing::warn!(
                        "network {} is defined in {} and again in {}; using the first",
                        m.compiled.name,
                        first.display(),
                        path.display()
                    ),
                    None => {
                        by_name.insert(&m.compiled.name, (path, m));
                    }
                }
            }
        }
        by_name.into_values().map(|(_, m)| m.clone()).collect()
    }

    /// Files currently refused, with why.
    pub fn errors(&self) -> &BTreeMap<PathBuf, String> {
        &self.errors
    }

    fn maps_fingerprint(&self) -> Vec<(PathBuf, Vec<NetworkMap>)> {
        self.files
            .iter()
            .map(|(p, ms)| (p.clone(), ms.iter().map(|m| m.map.clone()).collect()))
            .collect()
    }

    /// Starts watching the directory: the receiver gets a message whenever
    /// something in it changes. Keep the returned watcher alive.
    pub fn watch(
        &self,
    ) -> Result<(notify::RecommendedWatcher, mpsc::UnboundedReceiver<()>), MapsDirError> {
        let (tx, rx) = mpsc::unbounded_channel();
        let mut watcher =
            notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
                if event.is_ok_and(|e| !e.kind.is_access()) {
                    let _ = tx.send(());
                }
            })
            .map_err(|e| MapsDirError::Watch(self.dir.clone(), e))?;
        watcher
            .watch(&self.dir, RecursiveMode::NonRecursive)
            .map_err(|e| MapsDirError::Watch(self.dir.clone(), e))?;
        Ok((watcher, rx))
    }
}

/// `*.yaml`, `*.yml`, `*.json`, not hidden (editor swap files, the `..data`
/// links of a mounted ConfigMap).
fn is_map_file(path: &Path) -> bool {
    let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
        return false;
    };
    !name.starts_with('.')
        && [".yaml", ".yml", ".json"]
            .iter()
            .any(|ext| name.ends_with(ext))
}

/// Parses and checks one file: every map in it must be valid, or the whole
/// file is refused.
fn load(text: &str) -> Result<Vec<LoadedMap>, String> {
    let maps = parse_documents(text).map_err(|e| e.to_string())?;
    maps.into_iter()
        .map(|map| {
            let compiled = CompiledMap::compile(&map).map_err(|e| match &map.metadata.name {
                Some(name) => format!("NetworkMap {name}: {e}"),
                None => e.to_string(),
            })?;
            Ok(LoadedMap { map, compiled })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) {
        std::fs::write(dir.join(name), text).unwrap();
    }

    fn map(name: &str, glob: &str) -> String {
        format!(
            "apiVersion: surveyor.dev/v1alpha1\nkind: NetworkMap\nmetadata: {{name: {name}}}\nspec:\n  match: {{names: ['{glob}']}}\n"
        )
    }

    fn names(d: &MapsDir) -> Vec<String> {
        d.maps().into_iter().map(|m| m.compiled.name).collect()
    }

    #[test]
    fn broken_files_keep_their_last_good_maps_and_deleted_files_drop_them() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        write(dir, "green.yaml", &map("green", "ens*"));
        write(dir, "red.yml", &map("red", "eth*"));
        write(dir, "notes.txt", "not a map");
        write(dir, ".green.yaml.swp", "garbage");
        let mut d = MapsDir::open(dir).unwrap();
        assert_eq!(names(&d), ["green", "red"]);

        write(
            dir,
            "green.yaml",
            "apiVersion: surveyor.dev/v1alpha1\nkind: NetworkMap\nmetadata: {name: green}\nspec: {match: {names: ['ens[']}}\n",
        );
        assert!(!d.reload().unwrap(), "a broken file changes nothing");
        assert_eq!(names(&d), ["green", "red"]);
        assert!(d.errors()[&dir.join("green.yaml")].contains("spec.match.names"));

        write(dir, "green.yaml", &map("green", "eth9"));
        assert!(d.reload().unwrap());
        assert!(d.errors().is_empty());

        std::fs::remove_file(dir.join("red.yml")).unwrap();
        assert!(d.reload().unwrap());
        assert_eq!(names(&d), ["green"]);

        // A new broken file contributes nothing.
        write(dir, "blue.json", "{");
        assert!(!d.reload().unwrap());
        assert_eq!(names(&d), ["green"]);
    }

    #[test]
    fn first_definition_of_a_name_wins() {
        let tmp = tempfile::tempdir().unwrap();
        write(tmp.path(), "a.yaml", &map("green", "ens*"));
        write(tmp.path(), "b.yaml", &map("green", "eth*"));
        let d = MapsDir::open(tmp.path()).unwrap();
        let maps = d.maps();
        assert_eq!(maps.len(), 1);
        let rule = maps[0].map.spec.match_rule.as_ref().unwrap();
        assert_eq!(rule.names, vec!["ens*"]);
    }

    #[test]
    fn a_missing_directory_is_a_clear_error() {
        let e = MapsDir::open("/nonexistent/maps").err().unwrap();
        assert!(e.to_string().contains("/nonexistent/maps"), "{e}");
    }
}
