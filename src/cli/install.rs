//! `surveyor install-cni`: copies this binary into the node's CNI plugin
//! directory as `surveyor` (the DaemonSet's init container runs it), so
//! the image needs no shell.

use std::os::unix::fs::PermissionsExt as _;
use std::path::PathBuf;

use anyhow::Context as _;
use clap::Args;

#[derive(Debug, Args)]
pub struct InstallArgs {
    /// The CNI plugin directory (the host's /opt/cni/bin, as mounted).
    #[arg(long, value_name = "DIR", default_value = "/host/opt/cni/bin")]
    pub dir: PathBuf,
}

pub fn run(args: InstallArgs) -> anyhow::Result<()> {
    let me = std::env::current_exe().context("finding this binary")?;
    let target = args.dir.join("surveyor");
    // Copy then rename: a runtime exec'ing the plugin mid-install sees the
    // old binary or the new one, never half of one.
    let tmp = args.dir.join(".surveyor.tmp");
    std::fs::copy(&me, &tmp)
        .with_context(|| format!("copying {} to {}", me.display(), tmp.display()))?;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o755))
        .with_context(|| format!("making {} executable", tmp.display()))?;
    std::fs::rename(&tmp, &target).with_context(|| format!("installing {}", target.display()))?;
    println!("installed {}", target.display());
    Ok(())
}
