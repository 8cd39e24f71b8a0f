//! Replacing a file whole: an exclusively created temp file beside it
//! (random name, `O_EXCL`, so never a planted symlink and never one shared
//! with another writer), written, optionally synced, then renamed over the
//! target. A reader sees the old content or the new, never a mix; a writer
//! that fails or is killed leaves the old file as it was.

use std::fs::File;
use std::io::{self, Write as _};
use std::path::Path;

/// How far a replacement must survive a crash.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Durability {
    /// The data and the rename are on disk before this returns.
    Synced,
    /// Atomic for readers; a power loss may take the new content back.
    Unsynced,
}

/// A replacement made, its data and rename not yet known to be on disk:
/// [`Unsynced::sync`] makes them so, while the caller does other work.
pub struct Unsynced {
    file: File,
    dir: std::path::PathBuf,
}

impl Unsynced {
    /// Flushes the new file and the rename to disk.
    pub fn sync(self) -> io::Result<()> {
        self.file.sync_all()?;
        File::open(&self.dir)?.sync_all()
    }
}

/// Replaces `dir/name` with `bytes` now (atomically for readers) and
/// leaves the flush to disk to the caller. Until then a crash may leave
/// the old content, or an empty file.
pub fn replace_deferred(dir: &Path, name: &str, bytes: &[u8]) -> io::Result<Unsynced> {
    let mut tmp = tempfile::Builder::new()
        .prefix(&format!(".{name}."))
        .suffix(".tmp")
        .tempfile_in(dir)?;
    tmp.write_all(bytes)?;
    let file = tmp.persist(dir.join(name)).map_err(|e| e.error)?;
    Ok(Unsynced {
        file,
        dir: dir.to_path_buf(),
    })
}

/// Replaces `dir/name` with `bytes`.
pub fn replace(dir: &Path, name: &str, bytes: &[u8], durability: Durability) -> io::Result<()> {
    let mut tmp = tempfile::Builder::new()
        .prefix(&format!(".{name}."))
        .suffix(".tmp")
        .tempfile_in(dir)?;
    tmp.write_all(bytes)?;
    if durability == Durability::Synced {
        tmp.as_file().sync_all()?;
    }
    // On error the temp file is removed as `tmp` drops.
    tmp.persist(dir.join(name)).map_err(|e| e.error)?;
    if durability == Durability::Synced {
        // The rename is durable once the directory is.
        File::open(dir)?.sync_all()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn replaces_whole_and_leaves_no_temp_file() {
        let dir = tempfile::tempdir().unwrap();
        replace(dir.path(), "a.json", b"one", Durability::Synced).unwrap();
        replace(dir.path(), "a.json", b"two", Durability::Unsynced).unwrap();
        assert_eq!(std::fs::read(dir.path().join("a.json")).unwrap(), b"two");
        let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(names.len(), 1);
    }

    #[test]
    fn a_deferred_replacement_is_in_place_before_it_is_synced() {
        let dir = tempfile::tempdir().unwrap();
        let pending = replace_deferred(dir.path(), "a.json", b"one").unwrap();
        assert_eq!(std::fs::read(dir.path().join("a.json")).unwrap(), b"one");
        pending.sync().unwrap();
        let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(names.len(), 1);
    }

    #[test]
    fn never_writes_through_a_planted_symlink() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        std::fs::write(&victim, b"keep me").unwrap();
        // Every name a fixed-name writer might use.
        for name in [".a.json.tmp", ".a.json.tmp.tmp", ".a.json..tmp"] {
            symlink(&victim, dir.path().join(name)).unwrap();
        }
        replace(dir.path(), "a.json", b"new", Durability::Synced).unwrap();
        assert_eq!(std::fs::read(&victim).unwrap(), b"keep me");
        // The target itself a symlink: replaced, not followed.
        symlink(&victim, dir.path().join("b.json")).unwrap();
        replace(dir.path(), "b.json", b"new", Durability::Synced).unwrap();
        assert_eq!(std::fs::read(&victim).unwrap(), b"keep me");
        assert!(!dir.path().join("b.json").is_symlink());
    }
}
