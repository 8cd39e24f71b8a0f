//! `surveyor agent`: the per-node daemon.

use std::path::PathBuf;

use anyhow::Context as _;
use clap::Args;

use super::SurveyArgs;
use crate::agent::maps_dir::MapsDir;
use crate::agent::{Agent, Config, parse_labels};
use crate::node::node_name;
use crate::snapshot::DEFAULT_STATE_DIR;

#[derive(Debug, Args)]
pub struct AgentArgs {
    /// This node's name [default: $NODE_NAME, else the hostname].
    #[arg(long, value_name = "NAME")]
    pub node_name: Option<String>,
    /// Where networks.json, survey.json and maps.json are kept.
    #[arg(long, value_name = "DIR", default_value = DEFAULT_STATE_DIR)]
    pub state_dir: PathBuf,
    /// A directory of NetworkMap YAML/JSON files (standalone mode); re-read
    /// whenever it changes.
    #[arg(long, value_name = "DIR")]
    pub maps: Option<PathBuf>,
    /// Run without a cluster: maps from --maps, results to --state-dir only.
    #[arg(long)]
    pub standalone: bool,
    /// Do not listen for LLDP (no neighbors; lldp.* match rules never hold).
    #[arg(long)]
    pub no_lldp: bool,
    #[command(flatten)]
    pub survey: SurveyArgs,
    /// Labels of this node for spec.nodeSelector in standalone mode, e.g. rack=r1,zone=a.
    #[arg(long, value_name = "K=V,...", default_value = "")]
    pub node_labels: String,
}

pub fn run(args: AgentArgs) -> anyhow::Result<()> {
    let node = node_name(
        args.node_name.as_deref(),
        std::env::var("NODE_NAME").ok().as_deref(),
    )?;
    let Some(maps) = args
        .maps
        .clone()
        .filter(|_| args.standalone || !cluster_configured())
    else {
        anyhow::bail!(
            "cluster mode is not available in this build: run with --standalone --maps DIR \
             (NetworkMap YAML files) to resolve networks on this node"
        );
    };
    let config = Config {
        node,
        labels: parse_labels(&args.node_labels)?,
        state_dir: args.state_dir,
        maps_dir: maps,
        filter: args.survey.filter()?,
        lldp: !args.no_lldp,
    };
    super::runtime()?.block_on(async {
        let mut maps = MapsDir::open(&config.maps_dir)?;
        let mut agent = Agent::start(config, maps.maps())
            .await
            .context("starting the agent")?;
        agent.run_standalone(&mut maps, shutdown()).await?;
        anyhow::Ok(())
    })
}

/// Whether a cluster could be reached: in-cluster service env or a kubeconfig.
fn cluster_configured() -> bool {
    std::env::var_os("KUBERNETES_SERVICE_HOST").is_some()
        || std::env::var_os("KUBECONFIG").is_some()
}

/// Completes on SIGTERM or SIGINT.
pub async fn shutdown() {
    use tokio::signal::unix::{SignalKind, signal};
    match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        }
        _ => {
            tracing::warn!("cannot install signal handlers; stop with SIGKILL");
            std::future::pending::<()>().await
        }
    }
}
