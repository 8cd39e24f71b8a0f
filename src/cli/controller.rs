//! `surveyor controller`: the cluster view (a Deployment; one replica
//! writes, chosen by a Lease).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::Args;

use crate::controller::leader::{Leadership, LeaseConfig};
use crate::controller::metrics::Metrics;
use crate::controller::{self, Pace, Sources, http};
use crate::events::{Budget, Events};
use kube::runtime::events::Reporter;

#[derive(Debug, Args)]
pub struct ControllerArgs {
    /// Kubeconfig to reach the cluster [default: in-cluster config, else $KUBECONFIG or ~/.kube/config].
    #[arg(long, value_name = "PATH")]
    pub kubeconfig: Option<PathBuf>,
    /// Serve /topology, /metrics, /healthz and /readyz on this address.
    #[arg(long, value_name = "ADDR", default_value = "0.0.0.0:9465")]
    pub listen: SocketAddr,
    /// Namespace of the Lease that picks the one replica that writes.
    #[arg(
        long,
        value_name = "NS",
        env = "POD_NAMESPACE",
        default_value = "surveyor"
    )]
    pub namespace: String,
    /// This replica's name in the Lease [default: $POD_NAME, else HOSTNAME-PID].
    #[arg(long, value_name = "NAME", env = "POD_NAME")]
    pub identity: Option<String>,
    /// A leader that stops renewing its Lease is replaced after this (at least 2s).
    #[arg(long, value_name = "DURATION", default_value = "15s", value_parser = super::parse_duration)]
    pub lease_duration: Duration,
    /// No Lease: this process is the only controller (one replica, or a laptop).
    #[arg(long)]
    pub no_leader_election: bool,
    /// Keep one DeviceClass per NetworkMap (`<network>.surveyor.dev`, DRA,
    /// resource.k8s.io/v1) for ResourceClaims to name; for agents run with
    /// --dra.
    #[arg(long)]
    pub dra: bool,
}

/// Events name the controller so (with the replica as instance).
pub const CONTROLLER_REPORTER: &str = "surveyor.dev/controller";
/// The controller's Events (repairs, refused maps): 10 at once, then one
/// every 6 s.
const EVENT_BURST: u32 = 10;
const EVENT_REFILL: Duration = Duration::from_secs(6);

pub fn run(args: ControllerArgs) -> anyhow::Result<()> {
    let identity = match args.identity.as_deref().map(str::trim) {
        Some(id) if !id.is_empty() => id.to_string(),
        _ => format!(
            "{}-{}",
            crate::node::node_name(None, None)?,
            std::process::id()
        ),
    };
    let lease = LeaseConfig {
        namespace: args.namespace.clone(),
        identity: identity.clone(),
        duration: args.lease_duration,
    };
    if !args.no_leader_election {
        lease.check().context("--lease-duration / --identity")?;
    }
    super::runtime()?.block_on(async {
        let client = crate::connect::connect(args.kubeconfig.as_deref())
            .await
            .context("connecting to the cluster")?;
        let metrics = Arc::new(Metrics::new());
        let listener = tokio::net::TcpListener::bind(args.listen)
            .await
            .with_context(|| format!("cannot listen on {}", args.listen))?;
        tokio::spawn(http::serve(listener, metrics.clone()));
        let leadership = if args.no_leader_election {
            Leadership::always()
        } else {
            tracing::info!(
                "campaigning for Lease {}/{} as {}",
                lease.namespace,
                controller::leader::LEASE_NAME,
                lease.identity
            );
            Leadership::campaign(client.clone(), lease)?
        };
        let sources = Sources::watch(&client, args.dra);
        let events = Events::spawn(
            client.clone(),
            Reporter {
                controller: CONTROLLER_REPORTER.into(),
                instance: Some(identity.clone()),
            },
            Budget::new(EVENT_BURST, EVENT_REFILL, std::time::Instant::now()),
            metrics.event_counters(),
        );
        controller::run(
            client,
            sources,
            leadership.receiver(),
            Pace::default(),
            metrics,
            Some(events),
            super::agent::shutdown(),
        )
        .await;
        tracing::info!("stopping; giving the Lease up");
        leadership.release().await;
        anyhow::Ok(())
    })
}
