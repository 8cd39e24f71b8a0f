//! `surveyor discover`: one look at this node's interfaces.

use std::io::{IsTerminal as _, Write as _};
use std::time::Duration;

use anyhow::Context as _;
use clap::Args;

use super::SurveyArgs;
use crate::discovery::Discovery;
use crate::inventory::Interface;
use crate::lldp::Lldp;
use crate::node::node_name;
use crate::report::{Format, Survey, render};

#[derive(Debug, Args)]
pub struct DiscoverArgs {
    /// Output format.
    #[arg(short, long, value_enum, default_value_t = Format::Table)]
    pub output: Format,
    #[command(flatten)]
    pub survey: SurveyArgs,
    /// Listen up to DUR for neighbors (LLDP, CDP, EDP, FDP, SONMP) on the
    /// surveyed interfaces that are up (stops early once each has one),
    /// e.g. 4s. Switches usually send every 30 s (CDP every 60 s).
    #[arg(long, value_name = "DUR", value_parser = super::parse_duration)]
    pub lldp_wait: Option<Duration>,
    #[command(flatten)]
    pub neighbors: super::NeighborArgs,
    /// Node name reported in JSON/YAML output [default: $NODE_NAME, else the hostname].
    #[arg(long, value_name = "NAME")]
    pub node_name: Option<String>,
}

pub fn run(args: DiscoverArgs) -> anyhow::Result<()> {
    let filter = args.survey.filter()?;
    let node = node_name(
        args.node_name.as_deref(),
        std::env::var("NODE_NAME").ok().as_deref(),
    )?;
    let interfaces = super::runtime()?.block_on(async {
        let discovery = Discovery::dump_once(filter.clone())
            .await
            .context("reading this namespace's links over netlink")?;
        let mut interfaces = discovery.interfaces();
        if let Some(wait) = args.lldp_wait.filter(|w| !w.is_zero()) {
            let mut lldp = Lldp::with(args.neighbors.protocols());
            lldp.set_own_macs(
                discovery
                    .inventory()
                    .links()
                    .filter_map(|l| l.interface.mac.as_deref()),
            );
            lldp.follow(&interfaces);
            listen(&mut lldp, wait).await;
            lldp.annotate(&mut interfaces);
            for hint in silence_hints(&interfaces, &lldp, wait) {
                eprintln!("surveyor: {hint}");
            }
        }
        anyhow::Ok(interfaces)
    })?;
    let out = render(
        args.output,
        &Survey {
            node: &node,
            interfaces: &interfaces,
        },
    )?;
    if interfaces.is_empty() {
        let hint = if filter.is_default() {
            "no physical interfaces here; widen the survey with --all or --include GLOB"
        } else {
            "no interface matches this survey; check --include/--exclude, or try --all"
        };
        eprintln!("surveyor: {hint}");
        if args.output == Format::Table {
            return Ok(());
        }
    }
    let mut stdout = std::io::stdout().lock();
    stdout
        .write_all(out.as_bytes())
        .context("writing to stdout")?;
    Ok(())
}

/// Listens until every listened interface has a neighbor or `wait` runs
/// out, showing progress on stderr when it is a terminal.
async fn listen(lldp: &mut Lldp, wait: Duration) {
    let listening: Vec<u32> = lldp.listening().collect();
    if listening.is_empty() {
        eprintln!("surveyor: no surveyed interface is up; not listening for neighbors");
        return;
    }
    let tty = std::io::stderr().is_terminal();
    let deadline = tokio::time::Instant::now() + wait;
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    loop {
        let heard = listening
            .iter()
            .filter(|i| lldp.neighbor(**i).is_some())
            .count();
        if heard == listening.len() {
            break;
        }
        tokio::select! {
            _ = lldp.changes() => {}
            _ = tick.tick(), if tty => {
                let left = deadline.saturating_duration_since(tokio::time::Instant::now());
                eprint!(
                    "\rlistening for {}: {heard}/{} interfaces have a neighbor, {:.0}s left ",
                    lldp.protocols(),
                    listening.len(),
                    left.as_secs_f64().ceil()
                );
            }
            () = tokio::time::sleep_until(deadline) => break,
        }
    }
    if tty {
        eprint!("\r\x1b[K");
    }
}

/// Closing hints for up interfaces still without a neighbor: those that
/// heard frames it refused say so; the others are silent.
fn silence_hints(interfaces: &[Interface], lldp: &Lldp, wait: Duration) -> Vec<String> {
    let mut silent = Vec::new();
    let mut hints = Vec::new();
    for i in interfaces.iter().filter(|i| i.is_up() && i.lldp.is_none()) {
        match lldp.rejected_on(i.index) {
            Some(r) => hints.push(format!(
                "{} frame(s) heard on {} were rejected (last: {}); the neighbor sends frames this receiver cannot use",
                r.count, i.name, r.last
            )),
            None => silent.push(i.name.as_str()),
        }
    }
    if !silent.is_empty() {
        hints.push(format!(
            "no neighbor heard within {wait:?} on {} (listening for {}: is one of them enabled on the switch port? try a longer --lldp-wait)",
            silent.join(", "),
            lldp.protocols()
        ));
    }
    hints
}
