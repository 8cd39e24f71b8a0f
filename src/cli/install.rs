//! `surveyor install-cni`: copies this binary into the node's CNI plugin
//! directory as `surveyor` (the DaemonSet's init container runs it), so
//! the image needs no shell, and writes the node-level setting that says
//! where the plugin finds the agent's snapshot and keeps its ADD cache.

use std::io::Write as _;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use clap::Args;

use crate::cni::node_config::{self, NodeConfig};

#[derive(Debug, Args)]
pub struct InstallArgs {
    /// The CNI plugin directory (the host's /opt/cni/bin, as mounted).
    #[arg(long, value_name = "DIR", default_value = "/host/opt/cni/bin")]
    pub dir: PathBuf,
    /// Where to write the plugin's node-level setting: the host's
    /// /etc/cni/net.d/surveyor.d/surveyor.json, as mounted. Nothing is
    /// written without it.
    #[arg(long, value_name = "FILE")]
    pub node_config: Option<PathBuf>,
    /// The agent's state dir as the host sees it (goes in --node-config).
    #[arg(long, value_name = "DIR", default_value = crate::snapshot::DEFAULT_STATE_DIR, requires = "node_config")]
    pub state_dir: PathBuf,
    /// The plugin's ADD cache as the host sees it (goes in --node-config).
    #[arg(long, value_name = "DIR", default_value = node_config::DEFAULT_CACHE_DIR, requires = "node_config")]
    pub cache_dir: PathBuf,
}

pub fn run(args: InstallArgs) -> anyhow::Result<()> {
    let me = std::env::current_exe().context("finding this binary")?;
    let target = args.dir.join("surveyor");
    install(&me, &target)?;
    println!("installed {}", target.display());
    if let Some(path) = &args.node_config {
        let config = NodeConfig {
            state_dir: args.state_dir.clone(),
            cache_dir: args.cache_dir.clone(),
        };
        for dir in [&config.state_dir, &config.cache_dir] {
            anyhow::ensure!(
                dir.is_absolute(),
                "{} is not an absolute path (the plugin runs on the host)",
                dir.display()
            );
        }
        config
            .save(path)
            .with_context(|| format!("writing {}", path.display()))?;
        println!(
            "wrote {} (snapshot in {}, cache in {})",
            path.display(),
            config.state_dir.display(),
            config.cache_dir.display()
        );
    }
    Ok(())
}

/// Copy to an exclusively created temp file beside the target, then
/// rename: a runtime exec'ing the plugin mid-install sees the old binary or
/// the new one, never half of one, and nothing planted at a temp name is
/// written through.
fn install(from: &Path, target: &Path) -> anyhow::Result<()> {
    let dir = target.parent().unwrap_or(Path::new("."));
    let mut source =
        std::fs::File::open(from).with_context(|| format!("opening {}", from.display()))?;
    let mut tmp = tempfile::Builder::new()
        .prefix(".surveyor.")
        .tempfile_in(dir)
        .with_context(|| format!("creating a temp file in {}", dir.display()))?;
    std::io::copy(&mut source, &mut tmp)
        .and_then(|_| tmp.flush())
        .and_then(|()| tmp.as_file().sync_all())
        .with_context(|| format!("copying {} into {}", from.display(), dir.display()))?;
    std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755))
        .with_context(|| format!("making {} executable", tmp.path().display()))?;
    tmp.persist(target)
        .map_err(|e| e.error)
        .with_context(|| format!("installing {}", target.display()))?;
    Ok(())
}
