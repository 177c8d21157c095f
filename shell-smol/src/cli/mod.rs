//! The `nodelink` command line (clap). Each group of subcommands lives in its own module:
//! [`operator`] (the gateway server and the operator's commands), [`node`] (the node runtime and
//! the demo).

use std::process::ExitCode;

use clap::{Parser, Subcommand};

pub mod node;
pub mod node_llm;
pub mod operator;

/// nodelink: GPU and edge nodes dial out to a gateway, pair, heartbeat, take commands and stream
/// results back.
#[derive(Debug, Parser)]
#[command(name = "nodelink", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a gateway server (hub, REST, operator API, embedded SQLite store).
    Gateway(operator::GatewayArgs),
    /// Operator commands on a running gateway's nodes and pairing requests.
    #[command(subcommand)]
    Nodes(operator::NodesCommand),
    /// Send a command to a node and print its outcome.
    Send(operator::SendArgs),
    /// Pair and run a node.
    #[command(subcommand)]
    Node(node::NodeCommand),
    /// A gateway and three nodes on loopback, one command, no set-up.
    Demo(node::DemoArgs),
}

/// Parses the command line, runs it, and turns an error into a message and exit status 1.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Gateway(args) => operator::run_gateway(args),
        Command::Nodes(command) => operator::run_nodes(command),
        Command::Send(args) => operator::run_send(args),
        Command::Node(command) => node::run_node(command),
        Command::Demo(args) => node::run_demo(args),
    };
    match result {
        Ok(code) => code,
        Err(error) => {
            eprintln!("nodelink: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// What every subcommand returns: its exit status, or an error to print.
pub type CliResult = Result<ExitCode, Box<dyn std::error::Error + Send + Sync>>;
