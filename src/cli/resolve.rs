//! `surveyor resolve NETWORK`: what the CNI plugin would pick here.

use std::path::PathBuf;

use clap::Args;

use crate::snapshot::{DEFAULT_STATE_DIR, read_networks};

#[derive(Debug, Args)]
pub struct ResolveArgs {
    /// The network (NetworkMap name), e.g. green.
    pub network: String,
    /// The agent's state dir.
    #[arg(long, value_name = "DIR", default_value = DEFAULT_STATE_DIR)]
    pub state_dir: PathBuf,
}

/// Prints the device; fails (exit 1) saying why there is none.
pub fn run(args: ResolveArgs) -> anyhow::Result<()> {
    let snapshot = read_networks(&args.state_dir)?;
    let node = &snapshot.node;
    let Some(net) = snapshot.networks.get(&args.network) else {
        let known: Vec<&str> = snapshot.networks.keys().map(String::as_str).collect();
        anyhow::bail!(
            "no network {:?} is mapped on node {node} (known: {}); is there a NetworkMap named {:?}?",
            args.network,
            if known.is_empty() {
                "none".to_string()
            } else {
                known.join(", ")
            },
            args.network
        );
    };
    match &net.device {
        Some(device) => {
            println!("{device}");
            Ok(())
        }
        None => anyhow::bail!(
            "network {:?} has no device on node {node}: {}",
            args.network,
            net.reason.as_deref().unwrap_or("no candidate")
        ),
    }
}
