//! `surveyor discover`: one look at this node's interfaces.

use std::io::Write as _;

use anyhow::Context as _;
use clap::Args;

use super::SurveyArgs;
use crate::discovery::Discovery;
use crate::node::node_name;
use crate::report::{Format, Survey, render};

#[derive(Debug, Args)]
pub struct DiscoverArgs {
    /// Output format.
    #[arg(short, long, value_enum, default_value_t = Format::Table)]
    pub output: Format,
    #[command(flatten)]
    pub survey: SurveyArgs,
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
        anyhow::Ok(discovery.interfaces())
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
