//! Where the plugin reads the agent's snapshot and keeps its ADD cache: a
//! node-level setting, never the network configuration (a NAD is a
//! namespaced object tenants may write; nothing in it may choose where a
//! root process reads or writes).
//!
//! The setting is a small JSON file, `{"stateDir": ..., "cacheDir": ...}`,
//! at `SURVEYOR_CNI_CONFIG` when the runtime's environment sets it (the
//! node's admin does: a pod cannot), else at [`DEFAULT_PATH`] (which
//! `surveyor install-cni` writes); without one, the defaults.

use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::error::{CniError, NODE_CONFIG};

/// In a directory runtimes do not read network configs from (only files
/// directly in `/etc/cni/net.d` are).
pub const DEFAULT_PATH: &str = "/etc/cni/net.d/surveyor.d/surveyor.json";
pub const ENV: &str = "SURVEYOR_CNI_CONFIG";
pub const DEFAULT_CACHE_DIR: &str = "/var/lib/cni/surveyor";

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NodeConfig {
    /// The agent's state dir (its networks.json).
    #[serde(default = "default_state_dir")]
    pub state_dir: PathBuf,
    /// The ADD cache.
    #[serde(default = "default_cache_dir")]
    pub cache_dir: PathBuf,
}

fn default_state_dir() -> PathBuf {
    PathBuf::from(crate::snapshot::DEFAULT_STATE_DIR)
}

fn default_cache_dir() -> PathBuf {
    PathBuf::from(DEFAULT_CACHE_DIR)
}

impl Default for NodeConfig {
    fn default() -> Self {
        NodeConfig {
            state_dir: default_state_dir(),
            cache_dir: default_cache_dir(),
        }
    }
}

impl NodeConfig {
    /// The node's setting: from `env_path` (the value of
    /// `SURVEYOR_CNI_CONFIG`), else [`DEFAULT_PATH`], else the defaults.
    /// A file named by the variable must exist; a file that exists must be
    /// valid.
    pub fn load(env_path: Option<&str>) -> Result<NodeConfig, CniError> {
        let (path, required) = match env_path.filter(|p| !p.is_empty()) {
            Some(p) => (PathBuf::from(p), true),
            None => (PathBuf::from(DEFAULT_PATH), false),
        };
        let bad = |why: String| {
            CniError::new(
                NODE_CONFIG,
                format!("surveyor's node configuration {}: {why}", path.display()),
            )
            .details(format!(
                "it says where the agent's state dir and the ADD cache are on this node ({{\"stateDir\": \"/run/surveyor\", \"cacheDir\": \"{DEFAULT_CACHE_DIR}\"}}); surveyor install-cni writes it"
            ))
        };
        let bytes = match std::fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == io::ErrorKind::NotFound && !required => {
                return Ok(NodeConfig::default());
            }
            Err(e) => return Err(bad(e.to_string())),
        };
        let config: NodeConfig =
            serde_json::from_slice(&bytes).map_err(|e| bad(format!("not valid: {e}")))?;
        for (key, dir) in [
            ("stateDir", &config.state_dir),
            ("cacheDir", &config.cache_dir),
        ] {
            if !dir.is_absolute() {
                return Err(bad(format!(
                    "{key} must be an absolute path, not {:?}",
                    dir.display()
                )));
            }
        }
        Ok(config)
    }

    /// Writes the setting to `path` (for `surveyor install-cni`).
    pub fn save(&self, path: &Path) -> io::Result<()> {
        let dir = path.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir)?;
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .ok_or_else(|| io::Error::other("the config path names no file"))?;
        let mut bytes = serde_json::to_vec_pretty(self).map_err(io::Error::other)?;
        bytes.push(b'\n');
        crate::atomic::replace(dir, name, &bytes, crate::atomic::Durability::Synced)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_env_file_and_errors() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("surveyor.json");
        let p = path.to_str().unwrap();
        // Named by the variable but missing: an error, not the defaults.
        let e = NodeConfig::load(Some(p)).unwrap_err();
        assert_eq!(e.code, NODE_CONFIG);
        assert!(e.msg.contains(p), "{e}");
        let custom = NodeConfig {
            state_dir: "/tmp/state".into(),
            cache_dir: "/tmp/cache".into(),
        };
        custom.save(&path).unwrap();
        assert_eq!(NodeConfig::load(Some(p)).unwrap(), custom);
        std::fs::write(&path, r#"{"stateDir": "/x"}"#).unwrap();
        let partial = NodeConfig::load(Some(p)).unwrap();
        assert_eq!(partial.cache_dir, PathBuf::from(DEFAULT_CACHE_DIR));
        for bad in [r#"{"stateDir": "rel"}"#, r#"{"stateDri": "/x"}"#, "{"] {
            std::fs::write(&path, bad).unwrap();
            assert_eq!(
                NodeConfig::load(Some(p)).unwrap_err().code,
                NODE_CONFIG,
                "{bad}"
            );
        }
        // An empty variable counts as unset.
        if !Path::new(DEFAULT_PATH).exists() {
            assert_eq!(NodeConfig::load(Some("")).unwrap(), NodeConfig::default());
        }
    }
}
