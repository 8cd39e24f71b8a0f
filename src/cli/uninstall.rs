//! `surveyor uninstall`: removes Surveyor for good, after its workloads
//! are gone (`deploy/uninstall/` runs it: `cluster` as a Job, `node` on
//! every node as a DaemonSet's init container, `wait` as its container).

use std::path::PathBuf;

use anyhow::Context as _;
use clap::{Args, Subcommand};

use crate::uninstall::{cluster, node};

#[derive(Debug, Args)]
pub struct UninstallArgs {
    #[command(subcommand)]
    pub what: What,
}

#[derive(Debug, Subcommand)]
pub enum What {
    /// Remove what Surveyor put on this host (paths as mounted): the CNI
    /// plugin and its node setting, the agent's state, the plugin's ADD
    /// cache, the kubelet plugin's sockets. Refuses while an agent runs.
    Node(NodeArgs),
    /// Remove what Surveyor put in the API: the network.surveyor.dev/* Node
    /// labels, ResourceSlices of driver surveyor.dev, the controller's
    /// DeviceClasses, every NodeSurvey (NetworkMaps stay). Refuses while
    /// the agent DaemonSet or the controller Deployment exists.
    Cluster(ClusterArgs),
    /// Wait for SIGTERM (the uninstall DaemonSet's container, once its init
    /// container has cleaned the node).
    Wait,
}

#[derive(Debug, Args)]
pub struct NodeArgs {
    /// The host's CNI plugin directory.
    #[arg(long, value_name = "DIR", default_value = "/host/opt/cni/bin")]
    pub cni_bin_dir: PathBuf,
    /// The plugin's node setting, as `install-cni --node-config` wrote it.
    #[arg(
        long,
        value_name = "FILE",
        default_value = "/host/etc/cni/net.d/surveyor.d/surveyor.json"
    )]
    pub node_config: PathBuf,
    /// The agent's state dir.
    #[arg(long, value_name = "DIR", default_value = "/host/run/surveyor")]
    pub state_dir: PathBuf,
    /// The CNI plugin's ADD cache.
    #[arg(long, value_name = "DIR", default_value = "/host/var/lib/cni/surveyor")]
    pub cache_dir: PathBuf,
    /// The kubelet's plugin directory (the DRA socket).
    #[arg(
        long,
        value_name = "DIR",
        default_value = "/host/var/lib/kubelet/plugins"
    )]
    pub kubelet_plugins_dir: PathBuf,
    /// The kubelet's plugin registry (the registration socket).
    #[arg(
        long,
        value_name = "DIR",
        default_value = "/host/var/lib/kubelet/plugins_registry"
    )]
    pub kubelet_registry_dir: PathBuf,
}

#[derive(Debug, Args)]
pub struct ClusterArgs {
    /// Kubeconfig to reach the cluster [default: in-cluster config, else $KUBECONFIG or ~/.kube/config].
    #[arg(long, value_name = "PATH")]
    pub kubeconfig: Option<PathBuf>,
    /// The namespace Surveyor's workloads were deployed in.
    #[arg(long, value_name = "NS", default_value = "surveyor")]
    pub namespace: String,
}

pub fn run(args: UninstallArgs) -> anyhow::Result<()> {
    match args.what {
        What::Node(a) => {
            let paths = node::NodePaths {
                cni_bin_dir: a.cni_bin_dir,
                node_config: a.node_config,
                state_dir: a.state_dir,
                cache_dir: a.cache_dir,
                kubelet_plugins_dir: a.kubelet_plugins_dir,
                kubelet_registry_dir: a.kubelet_registry_dir,
            };
            let done = node::clean(&paths)?;
            for path in &done.removed {
                println!("removed {}", path.display());
            }
            for path in &done.left {
                println!("left {} (not Surveyor's)", path.display());
            }
            println!(
                "Surveyor's files are gone from this node: {} removed, {} left alone",
                done.removed.len(),
                done.left.len()
            );
            Ok(())
        }
        What::Cluster(a) => super::runtime()?.block_on(async {
            let client = crate::connect::connect(a.kubeconfig.as_deref())
                .await
                .context("connecting to the cluster")?;
            let report = cluster::clean(client, &a.namespace).await?;
            println!("{report}");
            anyhow::Ok(())
        }),
        What::Wait => super::runtime()?.block_on(async {
            super::agent::shutdown().await;
            anyhow::Ok(())
        }),
    }
}
