//! The command line: argument types and one module per subcommand. This is
//! the program's edge, so errors here are `anyhow` with context for people.

pub mod agent;
pub mod controller;
pub mod discover;
pub mod install;
pub mod resolve;
pub mod topology;
pub mod uninstall;

use clap::{Args, Parser, Subcommand};

use crate::survey::SurveyFilter;

#[derive(Debug, Parser)]
#[command(
    name = "surveyor",
    version,
    about = "Gives network interfaces meaning: which NIC is cabled to which switch, \
             and which semantic network (\"green\") it serves on this node.",
    long_about = None,
    after_help = "Run as a CNI plugin (type: surveyor) whenever CNI_COMMAND is set.\n\
                  Logs go to stderr; set SURVEYOR_LOG (e.g. debug, surveyor=trace) for more."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// List this node's interfaces with their facts (one shot, no cluster needed).
    #[command(after_help = "\
Examples:
  surveyor discover                        physical NICs, as a table
  surveyor discover --all -o json          every link, as JSON
  surveyor discover --include 'sv-*'       also veths named sv-*, whatever their kind
  ip netns exec NS surveyor discover --all inside a network namespace")]
    Discover(discover::DiscoverArgs),
    /// Run the per-node agent: survey, listen for LLDP, resolve networks, keep the snapshot.
    #[command(after_help = "\
Examples:
  surveyor agent --standalone --maps /etc/surveyor/maps
      resolve the NetworkMaps in that directory on this machine
  surveyor agent --standalone --maps maps/ --include 'sv-*' --state-dir /tmp/sv --node-labels rack=r1
  surveyor agent --dra
      in a cluster (NODE_NAME set): also publish the networks for DRA claims and serve
      the kubelet's DRA plugin API

The state dir gets networks.json (read by the CNI plugin), survey.json, maps.json,
neighbors.json (and node.json with a cluster, claims.json with --dra), each replaced
atomically and only when it changes; agent.lock keeps a second agent off it.")]
    Agent(agent::AgentArgs),
    /// Print the device the CNI plugin would use for NETWORK on this node.
    Resolve(resolve::ResolveArgs),
    /// Run the cluster view: NetworkMap status, Node labels, /topology (a Deployment).
    #[command(after_help = "\
Examples:
  surveyor controller                      in a pod: in-cluster config, Lease from POD_NAME/POD_NAMESPACE
  surveyor controller --kubeconfig ~/.kube/config --no-leader-election
      one controller from a laptop; the fabric at http://localhost:9465/topology

Replicas campaign for Lease surveyor-controller in --namespace; the holder writes each
NetworkMap's status and the network.surveyor.dev/* Node labels, every replica serves
/topology (.svg, .json, .dot), /metrics, /healthz and /readyz.")]
    Controller(controller::ControllerArgs),
    /// Draw the fabric: switches, their ports, node interfaces and their networks.
    #[command(after_help = "\
Examples:
  surveyor topology > fabric.svg                    from the cluster (kubeconfig)
  surveyor topology -o dot | dot -Tpng > fabric.png
  kubectl get nodesurveys -o json > all.json && surveyor topology --surveys all.json
  surveyor topology --surveys surveys/ -o json
      a directory of NODE.json or NODE/survey.json (each node's /run/surveyor/survey.json)

Interfaces are coloured by network; grey ones match no NetworkMap. Nodes with a
selected map unresolved are marked, and so are switches only one node sees.")]
    Topology(topology::TopologyArgs),
    /// Print the NetworkMap and NodeSurvey CustomResourceDefinitions (YAML).
    #[command(after_help = "Example:\n  surveyor crds | kubectl apply -f -")]
    Crds,
    /// Install this binary as the `surveyor` CNI plugin (the DaemonSet's init container).
    #[command(after_help = "\
Examples:
  surveyor install-cni --dir /host/opt/cni/bin \\
      --node-config /host/etc/cni/net.d/surveyor.d/surveyor.json
  surveyor install-cni --dir /opt/cni/bin --node-config /etc/cni/net.d/surveyor.d/surveyor.json \\
      --state-dir /var/run/surveyor --cache-dir /var/lib/cni/surveyor

The plugin reads where the agent's snapshot and its own ADD cache are from the node
config (SURVEYOR_CNI_CONFIG, if the runtime's environment sets it, else
/etc/cni/net.d/surveyor.d/surveyor.json, else the defaults), never from a network config.")]
    InstallCni(install::InstallArgs),
    /// Remove Surveyor for good: from a host, or from the cluster (deploy/uninstall/).
    #[command(after_help = "\
Examples:
  kubectl delete -k deploy/ && kubectl apply -k deploy/uninstall/
      runs `uninstall cluster` as a Job and `uninstall node` on every node
  surveyor uninstall node --cni-bin-dir /opt/cni/bin --node-config /etc/cni/net.d/surveyor.d/surveyor.json \\
      --state-dir /run/surveyor --cache-dir /var/lib/cni/surveyor \\
      --kubelet-plugins-dir /var/lib/kubelet/plugins --kubelet-registry-dir /var/lib/kubelet/plugins_registry
      by hand, on a host

Only Surveyor's own files are removed, by name; anything else found beside them is
left and listed. NetworkMaps are never removed: they go with the CRDs (kubectl delete -k crds/).
A stopping agent removes nothing: it cannot tell a rollout from an uninstall.")]
    Uninstall(uninstall::UninstallArgs),
    /// Print the version.
    Version,
}

/// Which links are surveyed; shared by `discover` and `agent`.
#[derive(Clone, Debug, Default, Args)]
pub struct SurveyArgs {
    /// Survey every link, virtual ones (veth, bridge, bond, ...) included.
    #[arg(long)]
    pub all: bool,
    /// Also survey links whose name or altName matches GLOB, whatever their kind.
    #[arg(long, value_name = "GLOB")]
    pub include: Vec<String>,
    /// Never survey links whose name or altName matches GLOB (wins over --include).
    #[arg(long, value_name = "GLOB")]
    pub exclude: Vec<String>,
}

impl SurveyArgs {
    pub fn filter(&self) -> anyhow::Result<SurveyFilter> {
        Ok(SurveyFilter::new(self.all, &self.include, &self.exclude)?)
    }
}

/// Which neighbor protocols are listened for; shared by `discover` and
/// `agent`.
#[derive(Clone, Debug, Args)]
pub struct NeighborArgs {
    /// Listen only for these neighbor protocols (comma-separated: lldp,
    /// cdp, edp, fdp, sonmp) [default: all five].
    #[arg(long, value_name = "LIST", value_delimiter = ',', value_parser = parse_protocol)]
    pub neighbor_protocols: Vec<crate::inventory::Protocol>,
}

impl NeighborArgs {
    pub fn protocols(&self) -> crate::lldp::Protocols {
        if self.neighbor_protocols.is_empty() {
            crate::lldp::Protocols::all()
        } else {
            self.neighbor_protocols.iter().copied().collect()
        }
    }
}

fn parse_protocol(s: &str) -> Result<crate::inventory::Protocol, String> {
    s.parse()
}

/// Parses a duration: `4s`, `500ms`, `2m`, or a bare number of seconds.
pub fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(s.len());
    let (number, unit) = s.split_at(split);
    let value: f64 = number
        .parse()
        .map_err(|_| format!("{s:?} is not a duration (try 4s, 500ms or 2m)"))?;
    let seconds = match unit {
        "" | "s" => value,
        "ms" => value / 1000.0,
        "m" => value * 60.0,
        "h" => value * 3600.0,
        _ => {
            return Err(format!(
                "unknown unit {unit:?} in {s:?} (use ms, s, m or h)"
            ));
        }
    };
    std::time::Duration::try_from_secs_f64(seconds).map_err(|e| format!("{s:?}: {e}"))
}

/// Logs to stderr, at `default` unless SURVEYOR_LOG or RUST_LOG says otherwise.
pub fn init_logging(default: &str) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("SURVEYOR_LOG")
        .or_else(|_| EnvFilter::try_from_default_env())
        .unwrap_or_else(|_| EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .with_target(false)
        .try_init();
}

/// An error and its causes on one line, each said once: many errors (ours
/// and libraries') already quote their cause in their own message.
pub fn report(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if out.contains(&text) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&text);
    }
    out
}

/// A single-threaded runtime: every I/O path here is one event loop.
pub fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?)
}

#[cfg(test)]
mod tests {
    use super::parse_duration;
    use std::time::Duration;

    #[test]
    fn reports_say_each_cause_once() {
        let inner = std::io::Error::other("disk on fire");
        let e = anyhow::Error::new(inner)
            .context("writing /run/x: disk on fire")
            .context("publishing");
        assert_eq!(
            super::report(&e),
            "publishing: writing /run/x: disk on fire"
        );
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("4s"), Ok(Duration::from_secs(4)));
        assert_eq!(parse_duration("4"), Ok(Duration::from_secs(4)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert!(parse_duration("4x").unwrap_err().contains("unit"));
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("").is_err());
    }
}
