//! `nodelink node pair|run` and `nodelink demo` (issue 7). Placeholder until the node runtime
//! lands.

use clap::{Args, Subcommand};

use super::CliResult;

#[derive(Debug, Subcommand)]
pub enum NodeCommand {
    /// Pair this node with a gateway.
    Pair,
}

#[derive(Debug, Args)]
pub struct DemoArgs {}

pub fn run_node(_: NodeCommand) -> CliResult {
    Err("the node runtime is not built yet (issue 7)".into())
}

pub fn run_demo(_: DemoArgs) -> CliResult {
    Err("the demo is not built yet (issue 7)".into())
}
