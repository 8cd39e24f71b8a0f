//! `surveyor agent`: the per-node daemon.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context as _;
use clap::Args;
use tokio::sync::watch;

use super::SurveyArgs;
use crate::agent::cluster;
use crate::agent::maps_dir::MapsDir;
use crate::agent::metrics::{self, Metrics};
use crate::agent::slices::{SliceOptions, spawn_slices};
use crate::agent::writer::{Pace, spawn_publisher};
use crate::agent::{Agent, Cluster, Config, Source, parse_labels};
use crate::dra::{Bandwidth, Policy};
use crate::events::{Budget, Events};
use crate::kubelet::{self, PluginConfig, Registration};
use crate::node::node_name;
use crate::snapshot::DEFAULT_STATE_DIR;
use kube::runtime::events::Reporter;

#[derive(Debug, Args)]
pub struct AgentArgs {
    /// This node's name [default: $NODE_NAME, else the hostname].
    #[arg(long, value_name = "NAME")]
    pub node_name: Option<String>,
    /// Where networks.json, survey.json and maps.json are kept.
    #[arg(long, value_name = "DIR", default_value = DEFAULT_STATE_DIR)]
    pub state_dir: PathBuf,
    /// A directory of NetworkMap YAML/JSON files, re-read when a file in it
    /// is rewritten. Standalone: the maps. With a cluster: the maps until
    /// the API lists them.
    #[arg(long, value_name = "DIR")]
    pub maps: Option<PathBuf>,
    /// Run without a cluster: maps from --maps, results to --state-dir only.
    #[arg(long, requires = "maps")]
    pub standalone: bool,
    /// Kubeconfig to reach the cluster [default: in-cluster config, else $KUBECONFIG or ~/.kube/config].
    #[arg(long, value_name = "PATH", conflicts_with = "standalone")]
    pub kubeconfig: Option<PathBuf>,
    /// Do not listen for neighbor protocols at all: LLDP, CDP, EDP, FDP,
    /// SONMP (no neighbors; lldp.* and neighbor.* match rules never hold).
    #[arg(long, conflicts_with = "neighbor_protocols")]
    pub no_lldp: bool,
    #[command(flatten)]
    pub neighbors: super::NeighborArgs,
    #[command(flatten)]
    pub survey: SurveyArgs,
    /// Labels of this node for spec.nodeSelector, e.g. rack=r1,zone=a
    /// (standalone; with a cluster, the Node's labels replace them).
    #[arg(long, value_name = "K=V,...", default_value = "")]
    pub node_labels: String,
    /// Serve /healthz, /readyz and /metrics on this address, e.g. 127.0.0.1:9464.
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<SocketAddr>,
    /// Publish this node's resolved networks as DRA devices (a
    /// ResourceSlice of driver surveyor.dev, resource.k8s.io/v1, Kubernetes
    /// 1.34+), so pods can claim bandwidth of a network.
    #[arg(long, conflicts_with = "standalone")]
    pub dra: bool,
    /// Bandwidth a claim gets when it asks for none (bits/s: 1G, 100M).
    #[arg(long, value_name = "RATE", default_value = "1G", requires = "dra")]
    pub dra_bandwidth_default: Bandwidth,
    /// Least bandwidth a claim may ask for (bits/s).
    #[arg(long, value_name = "RATE", default_value = "100M", requires = "dra")]
    pub dra_bandwidth_min: Bandwidth,
    /// Exclusive devices per network when the cluster cannot share one
    /// device between claims (feature gate DRAConsumableCapacity off).
    #[arg(long, value_name = "N", default_value_t = crate::dra::DEFAULT_NUMBERED,
          value_parser = clap::value_parser!(u16).range(1..=128), requires = "dra")]
    pub dra_numbered_devices: u16,
    /// The kubelet's plugin directory: the DRA service listens in
    /// DIR/surveyor.dev/dra.sock.
    #[arg(long, value_name = "DIR", default_value = kubelet::DEFAULT_PLUGINS_DIR, requires = "dra")]
    pub kubelet_plugins_dir: PathBuf,
    /// The kubelet's plugin registry, where it finds plugins.
    #[arg(long, value_name = "DIR", default_value = kubelet::DEFAULT_REGISTRY_DIR, requires = "dra")]
    pub kubelet_registry_dir: PathBuf,
    /// How long the kubelet gets to register the DRA plugin before the
    /// agent reports it unregistered (condition KubeletPlugin, /readyz).
    #[arg(long, value_name = "DURATION", default_value = "60s",
          value_parser = super::parse_duration, requires = "dra")]
    pub kubelet_registration_grace: std::time::Duration,
}

pub fn run(args: AgentArgs) -> anyhow::Result<()> {
    crate::memory::keep_small();
    // Bad DRA settings are refused before anything starts.
    slice_options(&args)?;
    let node = node_name(
        args.node_name.as_deref(),
        std::env::var("NODE_NAME").ok().as_deref(),
    )?;
    let mut config = Config {
        node,
        labels: parse_labels(&args.node_labels)?,
        state_dir: args.state_dir.clone(),
        filter: args.survey.filter()?,
        lldp: !args.no_lldp,
        protocols: args.neighbors.protocols(),
    };
    super::runtime()?.block_on(async {
        // First: a SIGTERM during start-up stops the agent cleanly too.
        let signalled = shutdown();
        let metrics = Arc::new(Metrics::new());
        metrics.count_shaping_in(config.state_dir.join(crate::attachment::DIR));
        if let Some(addr) = args.listen {
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("cannot listen on {addr}"))?;
            tokio::spawn(metrics::serve(listener, metrics.clone()));
        }
        let (registration, registration_rx) = watch::channel(Registration::default());
        let (source, client) = source(
            &args,
            &mut config,
            &metrics,
            args.dra.then_some(registration_rx),
        )
        .await?;
        let plugin = PluginConfig {
            node: config.node.clone(),
            state_dir: config.state_dir.clone(),
            plugins_dir: args.kubelet_plugins_dir.clone(),
            registry_dir: args.kubelet_registry_dir.clone(),
            registration_grace: args.kubelet_registration_grace,
            slices: slice_options(&args)?.unwrap_or_default(),
        };
        let mut agent = Agent::start(config, metrics)
            .await
            .context("starting the agent")?;
        // One stop for both: the agent's loop and the kubelet plugin, which
        // is awaited so that its sockets are gone before the process is.
        let (stop, stopping) = watch::channel(false);
        let stop = Arc::new(stop);
        tokio::spawn({
            let stop = stop.clone();
            async move {
                signalled.await;
                stop.send_replace(true);
            }
        });
        // Only once this agent holds the state dir: a second one must not
        // take the kubelet's sockets from the first.
        let plugin = client.filter(|_| args.dra).map(|client| {
            let stopping = stopped(stopping.clone());
            tokio::spawn(async move {
                if let Err(e) = kubelet::serve(client, plugin, registration, stopping).await {
                    tracing::error!("DRA kubelet plugin: {e}");
                }
            })
        });
        let result = agent.run(source, stopped(stopping)).await;
        stop.send_replace(true);
        if let Some(plugin) = plugin {
            let _ = plugin.await;
        }
        result?;
        anyhow::Ok(())
    })
}

/// Completes once `stop` says so.
async fn stopped(mut stop: watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

/// Standalone with `--standalone`, or with `--maps` when there is no
/// cluster configuration; otherwise the cluster (with `--maps`, its maps
/// until the API lists the NetworkMaps).
async fn source(
    args: &AgentArgs,
    config: &mut Config,
    metrics: &Arc<Metrics>,
    kubelet: Option<watch::Receiver<Registration>>,
) -> anyhow::Result<(Source, Option<kube::Client>)> {
    if args.standalone {
        return Ok((standalone(args)?, None));
    }
    let client = match crate::connect::connect(args.kubeconfig.as_deref()).await {
        Ok(client) => client,
        Err(e) if args.maps.is_some() && args.kubeconfig.is_none() => {
            tracing::info!("no cluster configuration ({e}); running standalone with --maps");
            return Ok((standalone(args)?, None));
        }
        Err(e) => {
            return Err(e).context("connecting to the cluster (for a single machine, run with --standalone --maps DIR)");
        }
    };
    // Until the API answers, resolve with the maps and labels last seen.
    let (store, labels) = cluster::remembered(&config.state_dir, &config.node);
    if let Some(labels) = labels.filter(|_| config.labels.is_empty()) {
        config.labels = labels;
    }
    let (desired, rx) = tokio::sync::watch::channel(None);
    let sharing = if let Some(options) = slice_options(args)? {
        let (mode, sharing) = tokio::sync::watch::channel(None);
        spawn_slices(
            client.clone(),
            config.node.clone(),
            rx.clone(),
            mode,
            metrics.clone(),
            options,
            Pace::default(),
        );
        Some(sharing)
    } else {
        None
    };
    spawn_publisher(
        client.clone(),
        config.node.clone(),
        rx,
        metrics.clone(),
        Pace::default(),
    );
    // The API may not answer yet (or ever): --maps serves meanwhile.
    let fallback = args.maps.as_ref().map(MapsDir::open).transpose()?;
    Ok((
        Source::Cluster(Cluster {
            store,
            maps: cluster::watch_maps(client.clone()),
            node: cluster::watch_node(client.clone(), &config.node),
            desired,
            fallback,
            node_wait: crate::agent::NODE_WAIT,
            sharing,
            kubelet,
            events: Some(Events::spawn(
                client.clone(),
                Reporter {
                    controller: AGENT_REPORTER.into(),
                    instance: Some(config.node.clone()),
                },
                Budget::new(EVENT_BURST, EVENT_REFILL, std::time::Instant::now()),
                metrics.event_counters(),
            )),
        }),
        Some(client),
    ))
}

/// Events name the agent so (with the node as instance).
pub const AGENT_REPORTER: &str = "surveyor.dev/agent";
/// A node's Events: at most 5 at once, then one every 12 s (5 a minute),
/// whatever its links do.
const EVENT_BURST: u32 = 5;
const EVENT_REFILL: std::time::Duration = std::time::Duration::from_secs(12);

/// `--dra`'s settings, checked.
fn slice_options(args: &AgentArgs) -> anyhow::Result<Option<SliceOptions>> {
    if !args.dra {
        return Ok(None);
    }
    let policy = Policy::new(args.dra_bandwidth_default, args.dra_bandwidth_min)
        .context("--dra-bandwidth-default and --dra-bandwidth-min")?;
    Ok(Some(SliceOptions {
        policy,
        numbered: args.dra_numbered_devices,
    }))
}

fn standalone(args: &AgentArgs) -> anyhow::Result<Source> {
    let dir = args
        .maps
        .as_ref()
        .context("standalone mode needs --maps DIR (a directory of NetworkMap YAML files)")?;
    Ok(Source::Dir(MapsDir::open(dir)?))
}

/// Completes on SIGTERM or SIGINT. The handlers are installed at once
/// (inside a runtime), not when the future is first polled: a signal that
/// comes before is not the default's (death).
pub fn shutdown() -> impl std::future::Future<Output = ()> + Send + 'static {
    use tokio::signal::unix::{SignalKind, signal};
    let signals = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    );
    async move {
        match signals {
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
}
