//! NetworkMaps from a directory of YAML/JSON files (standalone mode, or
//! until the API answers), kept current by inotify.
//!
//! A file is read once it is whole: when its writer closes it or when it is
//! renamed into place, never on every write, so a file rewritten in place
//! is not read half written. What is read must be a regular file (a
//! symlink to one is fine: a mounted ConfigMap is made of them), opened
//! without blocking, of at most [`MAX_FILE_BYTES`].
//!
//! A file that stops parsing keeps its last good maps: a half-saved edit
//! or a typo never takes a network away. A file that reads as empty keeps
//! its maps for [`EMPTY_GRACE`] (a tool that truncates, then writes, shows
//! it empty for a moment) and loses them only if it stays empty. A file
//! that is deleted takes its maps with it; so does the directory.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::Read as _;
use std::os::unix::fs::{FileTypeExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};
use std::time::Duration;

use notify::event::{AccessKind, AccessMode, ModifyKind};
use notify::{EventKind, RecursiveMode, Watcher as _};
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::crd::NetworkMap;
use crate::network_map::{CompiledMap, MAX_FILE_BYTES, parse_documents};

/// How long a file that reads as empty keeps its maps.
pub const EMPTY_GRACE: Duration = Duration::from_secs(2);

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

/// What the watcher saw that matters.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DirEvent {
    /// This map file may have changed: read it again.
    File(PathBuf),
    /// Anything else (the directory itself, a ConfigMap swap, lost
    /// events): read everything again.
    Rescan,
}

pub struct MapsDir {
    dir: PathBuf,
    /// The last good maps of each file.
    files: BTreeMap<PathBuf, Vec<LoadedMap>>,
    /// The last error reported for each file, so it is logged once.
    errors: BTreeMap<PathBuf, String>,
    /// Files read as empty while they had maps, and when they lose them.
    emptied: BTreeMap<PathBuf, Instant>,
    /// Whether the directory was there at the last look.
    present: bool,
    watcher: Option<notify::RecommendedWatcher>,
}

/// What reading one file gave.
enum Read {
    Gone,
    Maps(Vec<LoadedMap>),
    Empty,
    Refused(String),
}

impl MapsDir {
    /// Reads the directory once. It must exist.
    pub fn open(dir: impl Into<PathBuf>) -> Result<Self, MapsDirError> {
        let dir = dir.into();
        std::fs::read_dir(&dir).map_err(|e| MapsDirError::Read(dir.clone(), e))?;
        let mut maps = MapsDir {
            dir,
            files: BTreeMap::new(),
            errors: BTreeMap::new(),
            emptied: BTreeMap::new(),
            present: true,
            watcher: None,
        };
        maps.rescan();
        Ok(maps)
    }

    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// Starts watching the directory (and its parent, to see it go and come
    /// back). The receiver gets what matters.
    pub fn watch(&mut self) -> Result<mpsc::UnboundedReceiver<DirEvent>, MapsDirError> {
        let (tx, rx) = mpsc::unbounded_channel();
        let dir = self.dir.clone();
        let mut watcher =
            notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
                for e in classify(&event, &dir) {
                    let _ = tx.send(e);
                }
            })
            .map_err(|e| MapsDirError::Watch(self.dir.clone(), e))?;
        watcher
            .watch(&self.dir, RecursiveMode::NonRecursive)
            .map_err(|e| MapsDirError::Watch(self.dir.clone(), e))?;
        if let Some(parent) = self.dir.parent().filter(|p| !p.as_os_str().is_empty()) {
            if let Err(e) = watcher.watch(parent, RecursiveMode::NonRecursive) {
                tracing::warn!(
                    "cannot watch {} ({e}): if {} is removed, its return goes unnoticed",
                    parent.display(),
                    self.dir.display()
                );
            }
        }
        self.watcher = Some(watcher);
        Ok(rx)
    }

    /// Applies one event; true when the maps in force changed.
    pub fn handle(&mut self, event: DirEvent) -> bool {
        let before = self.fingerprint();
        match event {
            DirEvent::File(path) => self.reload(&path),
            DirEvent::Rescan => self.rescan(),
        }
        self.fingerprint() != before
    }

    /// When the next emptied file loses its maps, if one is waiting.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.emptied.values().min().copied()
    }

    /// Reads again the emptied files whose grace ran out; true when the
    /// maps in force changed.
    pub fn deadline_passed(&mut self, now: Instant) -> bool {
        let before = self.fingerprint();
        let due: Vec<PathBuf> = self
            .emptied
            .iter()
            .filter(|(_, at)| **at <= now)
            .map(|(p, _)| p.clone())
            .collect();
        for path in due {
            self.emptied.remove(&path);
            match read(&path) {
                Read::Empty => {
                    tracing::warn!(
                        "{} stayed empty for {EMPTY_GRACE:?}: its maps are removed",
                        path.display()
                    );
                    self.files.insert(path, Vec::new());
                }
                _ => self.reload(&path),
            }
        }
        self.fingerprint() != before
    }

    /// Reads every file again (and watches the directory again if it came
    /// back).
    fn rescan(&mut self) {
        // Watch before listing: a file written in between is then either
        // listed or reported, never missed. Watching again is idempotent for
        // the same directory and needed for one created anew.
        let watching = match &mut self.watcher {
            Some(w) => w
                .watch(&self.dir, RecursiveMode::NonRecursive)
                .map_err(Some),
            None => Err(None),
        };
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(entries) => entries,
            Err(e) => {
                if self.present {
                    tracing::warn!(
                        "maps directory {} is gone ({e}): no maps from it until it is back",
                        self.dir.display()
                    );
                }
                self.present = false;
                self.files.clear();
                self.errors.clear();
                self.emptied.clear();
                return;
            }
        };
        if !self.present {
            tracing::info!("maps directory {} is back", self.dir.display());
            self.present = true;
        }
        if let Err(Some(e)) = watching {
            tracing::warn!("cannot watch {} again: {e}", self.dir.display());
        }
        let mut seen = Vec::new();
        for entry in entries.flatten() {
            let path = entry.path();
            if is_map_file(&path) {
                self.reload(&path);
                seen.push(path);
            }
        }
        self.files.retain(|p, _| seen.contains(p));
        self.errors.retain(|p, _| seen.contains(p));
        self.emptied.retain(|p, _| seen.contains(p));
    }

    fn reload(&mut self, path: &Path) {
        if !is_map_file(path) {
            return;
        }
        match read(path) {
            Read::Gone => {
                self.files.remove(path);
                self.errors.remove(path);
                self.emptied.remove(path);
            }
            Read::Maps(maps) => {
                if self.errors.remove(path).is_some() {
                    tracing::info!("{}: fixed, {} map(s) loaded", path.display(), maps.len());
                }
                self.emptied.remove(path);
                self.files.insert(path.to_path_buf(), maps);
            }
            Read::Empty => {
                self.errors.remove(path);
                let kept = self.files.get(path).map_or(0, Vec::len);
                if kept == 0 {
                    self.files.insert(path.to_path_buf(), Vec::new());
                } else if !self.emptied.contains_key(path) {
                    tracing::info!(
                        "{} is empty; keeping its {kept} map(s) for {EMPTY_GRACE:?} in case it is being rewritten",
                        path.display()
                    );
                    self.emptied
                        .insert(path.to_path_buf(), Instant::now() + EMPTY_GRACE);
                }
            }
            Read::Refused(reason) => {
                if self.errors.get(path) != Some(&reason) {
                    let kept = self.files.get(path).map_or(0, Vec::len);
                    tracing::error!(
                        "{}: {reason}; ignoring this version of the file (keeping its last good {kept} map(s))",
                        path.display()
                    );
                    self.errors.insert(path.to_path_buf(), reason);
                }
            }
        }
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

    fn fingerprint(&self) -> Vec<(PathBuf, Vec<NetworkMap>)> {
        self.files
            .iter()
            .map(|(p, ms)| (p.clone(), ms.iter().map(|m| m.map.clone()).collect()))
            .collect()
    }
}

/// What a watcher event means for the directory `dir`. Pure.
pub fn classify(event: &notify::Result<notify::Event>, dir: &Path) -> Vec<DirEvent> {
    let Ok(event) = event else {
        // Lost events (an overflow), or the watch failed: read it all.
        return vec![DirEvent::Rescan];
    };
    if event.need_rescan() || matches!(event.kind, EventKind::Other) {
        return vec![DirEvent::Rescan];
    }
    let mut out = Vec::new();
    for path in &event.paths {
        if path == dir {
            // The directory itself: gone, made, moved (not read: a rescan
            // reads it, and must not wake itself up).
            if matches!(
                event.kind,
                EventKind::Create(_)
                    | EventKind::Remove(_)
                    | EventKind::Modify(ModifyKind::Name(_))
            ) {
                out.push(DirEvent::Rescan);
            }
            continue;
        }
        if path.parent() != Some(dir) {
            continue; // a sibling, seen through the parent's watch
        }
        let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        // A mounted ConfigMap swaps all its files at once through `..data`.
        if name == "..data" {
            out.push(DirEvent::Rescan);
            continue;
        }
        if !is_map_file(path) {
            continue;
        }
        let whole = match &event.kind {
            EventKind::Access(AccessKind::Close(AccessMode::Write))
            | EventKind::Modify(ModifyKind::Name(_) | ModifyKind::Metadata(_))
            | EventKind::Remove(_) => true,
            // A new regular file is read once its writer closes it; a new
            // symlink, FIFO or device gets no close.
            EventKind::Create(_) => !std::fs::symlink_metadata(path).is_ok_and(|m| m.is_file()),
            // Writes in progress, opens, reads: wait for the close.
            _ => false,
        };
        if whole {
            out.push(DirEvent::File(path.clone()));
        }
    }
    out
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

/// Reads one file safely: a regular file (through symlinks), opened
/// without blocking (a FIFO must not hang the agent), of bounded size.
fn read(path: &Path) -> Read {
    let file = match OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NONBLOCK | nix::libc::O_CLOEXEC | nix::libc::O_NOCTTY)
        .open(path)
    {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Read::Gone,
        Err(e) => return Read::Refused(format!("cannot open: {e}")),
    };
    match contents(file) {
        Ok(text) => match load(&text) {
            Ok(maps) if maps.is_empty() => Read::Empty,
            Ok(maps) => Read::Maps(maps),
            Err(reason) => Read::Refused(reason),
        },
        Err(reason) => Read::Refused(reason),
    }
}

fn contents(file: File) -> Result<String, String> {
    let meta = file.metadata().map_err(|e| format!("cannot stat: {e}"))?;
    let kind = meta.file_type();
    if !kind.is_file() {
        let what = if kind.is_fifo() {
            "a FIFO"
        } else if kind.is_char_device() || kind.is_block_device() {
            "a device"
        } else if kind.is_dir() {
            "a directory"
        } else {
            "not a regular file"
        };
        return Err(format!("{what}, not a regular file: not read"));
    }
    let too_big = || format!("larger than the {MAX_FILE_BYTES}-byte limit for a map file");
    if meta.len() > MAX_FILE_BYTES {
        return Err(too_big());
    }
    let mut bytes = Vec::new();
    // The file may grow between stat and read: never past the limit.
    file.take(MAX_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("cannot read: {e}"))?;
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Err(too_big());
    }
    String::from_utf8(bytes).map_err(|_| "not UTF-8 text".to_string())
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
    use notify::event::{CreateKind, DataChange, RemoveKind, RenameMode};

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

    fn file(d: &MapsDir, name: &str) -> DirEvent {
        DirEvent::File(d.path().join(name))
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
        assert!(
            !d.handle(file(&d, "green.yaml")),
            "a broken file changes nothing"
        );
        assert_eq!(names(&d), ["green", "red"]);
        assert!(d.errors()[&dir.join("green.yaml")].contains("spec.match.names"));

        write(dir, "green.yaml", &map("green", "eth9"));
        assert!(d.handle(file(&d, "green.yaml")));
        assert!(d.errors().is_empty());

        std::fs::remove_file(dir.join("red.yml")).unwrap();
        assert!(d.handle(file(&d, "red.yml")));
        assert_eq!(names(&d), ["green"]);

        // A new broken file contributes nothing.
        write(dir, "blue.json", "{");
        assert!(!d.handle(DirEvent::Rescan));
        assert_eq!(names(&d), ["green"]);
    }

    #[test]
    fn an_emptied_file_keeps_its_maps_unless_it_stays_empty() {
        let tmp = tempfile::tempdir().unwrap();
        write(tmp.path(), "green.yaml", &map("green", "ens*"));
        let mut d = MapsDir::open(tmp.path()).unwrap();
        // Truncated (the first step of a rewrite in place).
        write(tmp.path(), "green.yaml", "");
        assert!(!d.handle(file(&d, "green.yaml")));
        assert_eq!(names(&d), ["green"]);
        let deadline = d.next_deadline().expect("a grace deadline");
        // Rewritten within the grace: the new content, the deadline gone.
        write(tmp.path(), "green.yaml", &map("green", "eth*"));
        assert!(d.handle(file(&d, "green.yaml")));
        assert_eq!(d.next_deadline(), None);
        assert!(!d.deadline_passed(deadline));
        // Emptied for good (comments only count as empty).
        write(tmp.path(), "green.yaml", "# nothing here\n");
        d.handle(file(&d, "green.yaml"));
        assert_eq!(names(&d), ["green"]);
        let deadline = d.next_deadline().unwrap();
        assert!(!d.deadline_passed(deadline - Duration::from_millis(1)));
        assert!(d.deadline_passed(deadline));
        assert!(names(&d).is_empty());
        assert_eq!(d.next_deadline(), None);
    }

    #[test]
    fn fifos_devices_and_huge_files_are_refused_without_blocking() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        nix::unistd::mkfifo(&dir.join("fifo.yaml"), nix::sys::stat::Mode::S_IRWXU).unwrap();
        std::os::unix::fs::symlink("/dev/zero", dir.join("zero.yaml")).unwrap();
        std::os::unix::fs::symlink(dir.join("nowhere"), dir.join("dangling.yaml")).unwrap();
        let big = format!("# {}\n", "x".repeat(MAX_FILE_BYTES as usize));
        write(dir, "big.yaml", &big);
        write(dir, "green.yaml", &map("green", "ens*"));
        // A ConfigMap's files are symlinks to regular files: fine.
        write(dir, "target", &map("red", "eth*"));
        std::os::unix::fs::symlink(dir.join("target"), dir.join("red.yaml")).unwrap();
        let d = MapsDir::open(dir).unwrap();
        assert_eq!(names(&d), ["green", "red"]);
        let err = |n: &str| d.errors()[&dir.join(n)].clone();
        assert!(err("fifo.yaml").contains("a FIFO"), "{}", err("fifo.yaml"));
        assert!(
            err("zero.yaml").contains("a device"),
            "{}",
            err("zero.yaml")
        );
        assert!(err("big.yaml").contains("limit"), "{}", err("big.yaml"));
        assert!(!d.errors().contains_key(&dir.join("dangling.yaml")));
    }

    #[test]
    fn a_removed_directory_means_no_maps_until_it_is_back() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("maps");
        std::fs::create_dir(&dir).unwrap();
        write(&dir, "green.yaml", &map("green", "ens*"));
        let mut d = MapsDir::open(&dir).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(d.handle(DirEvent::Rescan));
        assert!(names(&d).is_empty());
        std::fs::create_dir(&dir).unwrap();
        write(&dir, "green.yaml", &map("green", "ens*"));
        assert!(d.handle(DirEvent::Rescan));
        assert_eq!(names(&d), ["green"]);
    }

    #[test]
    fn events_are_acted_on_only_once_a_file_is_whole() {
        let dir = Path::new("/maps");
        let ev = |kind: EventKind, path: &str| {
            classify(
                &Ok(notify::Event::new(kind).add_path(PathBuf::from(path))),
                dir,
            )
        };
        let green = || vec![DirEvent::File(PathBuf::from("/maps/green.yaml"))];
        let closed = EventKind::Access(AccessKind::Close(AccessMode::Write));
        assert_eq!(ev(closed, "/maps/green.yaml"), green());
        let renamed = EventKind::Modify(ModifyKind::Name(RenameMode::To));
        assert_eq!(ev(renamed, "/maps/green.yaml"), green());
        let removed = EventKind::Remove(RemoveKind::File);
        assert_eq!(ev(removed, "/maps/green.yaml"), green());
        // Writes in progress and reads are waited out.
        let written = EventKind::Modify(ModifyKind::Data(DataChange::Any));
        assert!(ev(written, "/maps/green.yaml").is_empty());
        let opened = EventKind::Access(AccessKind::Open(AccessMode::Any));
        assert!(ev(opened, "/maps/green.yaml").is_empty());
        // Other names, and siblings seen through the parent's watch.
        assert!(ev(closed, "/maps/.green.yaml.swp").is_empty());
        assert!(ev(closed, "/maps/notes.txt").is_empty());
        assert!(ev(closed, "/other/green.yaml").is_empty());
        // The directory itself, a ConfigMap swap, lost events: read all.
        let gone = EventKind::Remove(RemoveKind::Folder);
        assert_eq!(ev(gone, "/maps"), vec![DirEvent::Rescan]);
        assert_eq!(ev(renamed, "/maps/..data"), vec![DirEvent::Rescan]);
        let overflow = notify::Event::new(EventKind::Other).set_flag(notify::event::Flag::Rescan);
        assert_eq!(classify(&Ok(overflow), dir), vec![DirEvent::Rescan]);
        let failed = Err(notify::Error::generic("inotify read failed"));
        assert_eq!(classify(&failed, dir), vec![DirEvent::Rescan]);
        // A new file that is not regular (here: missing, so not regular)
        // is read at once; a regular one waits for its close.
        let created = EventKind::Create(CreateKind::File);
        assert_eq!(ev(created, "/maps/green.yaml"), green());
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
#[cfg(test)]
mod watch_tests {
    use super::*;

    /// Everything the watcher has sent within `wait`, each handled.
    async fn drain(
        d: &mut MapsDir,
        rx: &mut mpsc::UnboundedReceiver<DirEvent>,
        wait: Duration,
    ) -> Vec<DirEvent> {
        let mut seen = Vec::new();
        let deadline = tokio::time::Instant::now() + wait;
        while let Ok(Some(e)) = tokio::time::timeout_at(deadline, rx.recv()).await {
            d.handle(e.clone());
            seen.push(e);
            assert!(seen.len() < 50, "the watcher wakes itself up: {seen:?}");
        }
        seen
    }

    /// Real inotify: a directory removed and made again is watched again;
    /// reading it (a rescan) wakes nothing.
    #[tokio::test]
    async fn a_recreated_directory_is_watched_again_and_rescans_do_not_loop() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("maps");
        std::fs::create_dir(&dir).unwrap();
        let mut d = MapsDir::open(&dir).unwrap();
        let mut rx = d.watch().unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(
            drain(&mut d, &mut rx, Duration::from_millis(300))
                .await
                .contains(&DirEvent::Rescan)
        );
        std::fs::create_dir(&dir).unwrap();
        assert!(
            drain(&mut d, &mut rx, Duration::from_millis(300))
                .await
                .contains(&DirEvent::Rescan)
        );
        let map = "apiVersion: surveyor.dev/v1alpha1\nkind: NetworkMap\nmetadata: {name: green}\nspec: {match: {names: ['*']}}\n";
        std::fs::write(dir.join("green.yaml"), map).unwrap();
        let seen = drain(&mut d, &mut rx, Duration::from_millis(300)).await;
        assert_eq!(seen, vec![DirEvent::File(dir.join("green.yaml"))]);
        assert_eq!(d.maps().len(), 1);
        assert!(
            drain(&mut d, &mut rx, Duration::from_millis(300))
                .await
                .is_empty(),
            "quiet after"
        );
    }
}
