//! `nodelink gateway`, `nodelink nodes ...` and `nodelink send` (issue 6). Placeholder until the
//! gateway server lands.

use clap::{Args, Subcommand};

use super::CliResult;

#[derive(Debug, Args)]
pub struct GatewayArgs {}

#[derive(Debug, Subcommand)]
pub enum NodesCommand {
    /// List the gateway's nodes.
    List,
}

#[derive(Debug, Args)]
pub struct SendArgs {}

pub fn run_gateway(_: GatewayArgs) -> CliResult {
    Err("the gateway server is not built yet (issue 6)".into())
}

pub fn run_nodes(_: NodesCommand) -> CliResult {
    Err("the operator commands are not built yet (issue 6)".into())
}

pub fn run_send(_: SendArgs) -> CliResult {
    Err("the operator commands are not built yet (issue 6)".into())
}
