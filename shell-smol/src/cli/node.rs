//! `nodelink node pair|run` and `nodelink demo` (issue 7). The runtime is [`crate::node`]; this
//! module turns flags into its configuration and its events into what an operator reads.
//!
//! Exit status: 0 done (paired; stopped), 1 error, 2 usage (clap), 3 revoked by the gateway
//! (the token file is deleted), 4 pairing rejected or expired.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, Subcommand, ValueEnum};
use nodelink_core::node::executor::ExecutorSet;
use nodelink_core::node::{Dialect, Identity, NodeConfig, NodeEvent, NodeState, Transport};
use nodelink_core::scope::ScopeSet;
use nodelink_core::wire::signalr::HubProtocol;

use super::CliResult;
use crate::node::{spawn_node, NodeExit, RuntimeConfig, StateDir, StatsSampler, TlsOptions};

/// Exit status of a node the gateway revoked.
pub const EXIT_REVOKED: u8 = 3;
/// Exit status of a pairing that was rejected or expired.
pub const EXIT_UNPAIRED: u8 = 4;

/// Scopes a node never enables on its own: the operator must pass `--allow` for each
/// (the consent rule: a gateway cannot make a node run programs it did not agree to).
pub const CONSENT_SCOPES: &[&str] = &["system.execute"];

#[derive(Debug, Subcommand)]
pub enum NodeCommand {
    /// Pair this node with a gateway: shows a pairing code, waits for the operator to approve
    /// it, and stores the node's token in the state directory (mode 0600).
    Pair(PairArgs),
    /// Run the node: connect with the stored token, heartbeat, execute commands, reconnect with
    /// backoff. Ends when the gateway revokes the node (exit status 3, token deleted).
    Run(RunArgs),
}

/// Flags both `pair` and `run` take.
#[derive(Debug, Args)]
pub struct CommonArgs {
    /// Where the token is kept [default: $XDG_STATE_HOME/nodelink, else
    /// ~/.local/state/nodelink].
    #[arg(long, env = "NODELINK_STATE_DIR", value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    /// A PEM file of CA certificates to trust besides the platform's roots (a gateway behind a
    /// private CA).
    #[arg(long, env = "NODELINK_CA_CERT", value_name = "PEM")]
    pub ca_cert: Option<PathBuf>,
    /// Trust only --ca-cert, not the platform's roots.
    #[arg(long, requires = "ca_cert")]
    pub no_platform_roots: bool,
    /// Timers, shortened for tests and demos: heartbeat interval (e.g. 30s, 500ms).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, hide = true)]
    pub heartbeat_interval: Option<Duration>,
    /// Longest reconnect delay (the backoff's cap).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, hide = true)]
    pub reconnect_cap: Option<Duration>,
    /// Least delay after a refusal (bad token, Close without allowReconnect).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, hide = true)]
    pub refusal_floor: Option<Duration>,
    /// Interval of HTTP polling.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, hide = true)]
    pub poll_interval: Option<Duration>,
}

#[derive(Debug, Args)]
pub struct PairArgs {
    /// The gateway's base URL (https://gw.example.com).
    #[arg(long, env = "NODELINK_GATEWAY", value_name = "URL")]
    pub gateway: String,
    /// The node id to ask for (A-Z a-z 0-9 - _, up to 128) [default: generated].
    #[arg(long, value_name = "ID")]
    pub node_id: Option<String>,
    /// A name shown to the operator who approves the pairing [default: the host name].
    #[arg(long)]
    pub name: Option<String>,
    /// Pair again even though a token is stored (it is replaced once the new pairing is
    /// approved).
    #[arg(long)]
    pub force: bool,
    #[command(flatten)]
    pub common: CommonArgs,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// How to reach the gateway: `auto` (WebSocket, HTTP polling after 3 failed attempts, the
    /// WebSocket again every 5 min), `ws` (WebSocket only), `polling` (HTTP polling only).
    #[arg(long, value_enum, default_value_t = TransportArg::Auto)]
    pub transport: TransportArg,
    /// The hub protocol over the WebSocket.
    #[arg(long, value_enum, default_value_t = ProtocolArg::Json)]
    pub protocol: ProtocolArg,
    /// Allow a scope (or `prefix.*`) that needs the operator's consent; repeatable. Without
    /// `--allow system.execute` the node refuses `system.execute` whatever the gateway grants.
    #[arg(long, value_name = "SCOPE")]
    pub allow: Vec<String>,
    /// Override the stored gateway URL.
    #[arg(long, value_name = "URL")]
    pub gateway: Option<String>,
    /// Commands running at once; one more is answered `busy`.
    #[arg(long, default_value_t = 4)]
    pub slots: usize,
    /// Register the demo's commands (demo.echo, demo.sleep, demo.blob, system.info): tests.
    #[arg(long, hide = true)]
    pub demo_commands: bool,
    /// Which protocol: `hub` (the node contract, after `nodelink node pair`) or `llm` (the LLM
    /// node dialect: a plain WebSocket to --gateway ws://host:port/ws, tasks streamed from
    /// --backend; no pairing needed).
    #[arg(long, value_enum, default_value_t = DialectArg::Hub)]
    pub dialect: DialectArg,
    #[command(flatten)]
    pub llm: super::node_llm::LlmArgs,
    #[command(flatten)]
    pub common: CommonArgs,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum DialectArg {
    Hub,
    Llm,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum TransportArg {
    Auto,
    Ws,
    Polling,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum ProtocolArg {
    Json,
    Messagepack,
}

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Print a machine-readable summary (JSON) instead of the timeline and table.
    #[arg(long)]
    pub json: bool,
}

pub fn run_node(command: NodeCommand) -> CliResult {
    init_logging();
    match command {
        NodeCommand::Pair(args) => pair(args),
        NodeCommand::Run(args) => run(args),
    }
}

pub fn run_demo(args: DemoArgs) -> CliResult {
    crate::demo::run(&crate::demo::DemoOptions { json: args.json })
}

/// The built-in commands (`nodelink-worker-cuda`): `system.execute` is registered only with
/// `--allow system.execute`, `kernel.run` only with `--allow gpu.kernel` (the consent rule).
fn builtin_executors(allow: &[String]) -> ExecutorSet {
    let allowed = |scope: &str| allow.iter().any(|a| a == scope);
    nodelink_worker_cuda::builtin_executors(&nodelink_worker_cuda::BuiltinOptions {
        allow_system_execute: allowed("system.execute"),
        allow_kernel_run: allowed("gpu.kernel"),
        ..Default::default()
    })
}

/// The heartbeat's CPU % and memory: this node process's own, as the contract defines them.
fn host_stats_sampler() -> Option<StatsSampler> {
    Some(Arc::new(nodelink_worker_cuda::sample_stats))
}

pub(super) fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("NODELINK_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

fn pair(args: PairArgs) -> CliResult {
    let state = StateDir::resolve(args.common.state_dir.clone())?;
    if let Some(existing) = state.load()? {
        if !args.force {
            return Err(format!(
                "already paired as {} with {} (token in {}); pass --force to pair again",
                existing.token.node_id(),
                existing.gateway_url,
                state.token_path().display()
            )
            .into());
        }
    }
    let dialect = Dialect::Hub {
        protocol: HubProtocol::Json,
        transport: Transport::Auto,
    };
    let identity = Identity::Unpaired {
        node_id: args.node_id.clone(),
    };
    let mut node = NodeConfig::new(args.gateway.trim_end_matches('/'), dialect, identity);
    node.name = args.name.clone().or_else(host_name);
    node.platform = std::env::consts::OS.to_owned();
    node.version = env!("CARGO_PKG_VERSION").to_owned();
    let mut config = runtime_config(node, &args.common);
    config.state_dir = Some(state.clone());
    config.exit_when_paired = true;
    let handle = spawn_node(config, ExecutorSet::new())?;
    println!(
        "Pairing node {} with {} ...",
        handle.node_id(),
        args.gateway
    );
    flush();
    let mut shown = None;
    while let Ok(event) = handle.events().recv_blocking() {
        match event {
            NodeEvent::PairingCode(code) if shown.as_ref() != Some(&code) => {
                println!();
                println!("    Pairing code:  {code}");
                println!();
                println!("Ask the gateway's operator to approve this code. Waiting...");
                flush();
                shown = Some(code);
            }
            NodeEvent::RequestFailed(why) => eprintln!("nodelink: {why} (retrying)"),
            _ => {}
        }
    }
    let exit = handle.wait();
    match &exit {
        NodeExit::Paired { node_id, .. } => {
            println!(
                "Paired as {node_id}. Token stored in {}.",
                state.token_path().display()
            );
            println!("Start the node with: nodelink node run");
            flush();
            Ok(ExitCode::SUCCESS)
        }
        NodeExit::PairingRejected { .. } | NodeExit::PairingExpired => {
            eprintln!("nodelink: {exit}");
            Ok(ExitCode::from(EXIT_UNPAIRED))
        }
        other => Err(other.to_string().into()),
    }
}

fn run(args: RunArgs) -> CliResult {
    if args.dialect == DialectArg::Llm {
        return super::node_llm::run_llm(args);
    }
    let state = StateDir::resolve(args.common.state_dir.clone())?;
    let Some(credentials) = state.load()? else {
        return Err(format!(
            "not paired: no token in {}; run `nodelink node pair --gateway URL` first",
            state.token_path().display()
        )
        .into());
    };
    let mut executors = builtin_executors(&args.allow);
    if args.demo_commands {
        crate::demo::register_demo_executors(&mut executors);
    }
    let local_scopes = local_policy(&executors, &args.allow)?;
    let transport = match args.transport {
        TransportArg::Auto => Transport::Auto,
        TransportArg::Ws => Transport::WebSocket,
        TransportArg::Polling => Transport::Polling,
    };
    let protocol = match args.protocol {
        ProtocolArg::Json => HubProtocol::Json,
        ProtocolArg::Messagepack => HubProtocol::MessagePack,
    };
    let gateway = args
        .gateway
        .clone()
        .unwrap_or_else(|| credentials.gateway_url.clone());
    let dialect = Dialect::Hub {
        protocol,
        transport,
    };
    let mut node = NodeConfig::new(
        gateway.trim_end_matches('/'),
        dialect,
        Identity::Paired(credentials.token.clone()),
    );
    node.platform = std::env::consts::OS.to_owned();
    node.version = env!("CARGO_PKG_VERSION").to_owned();
    node.local_scopes = local_scopes;
    node.limits.slots = args.slots.max(1);
    node.gpus = nodelink_worker_cuda::gpu_inventory();
    let mut config = runtime_config(node, &args.common);
    config.state_dir = Some(state.clone());
    config.host_stats = host_stats_sampler();
    let handle = spawn_node(config, executors.clone())?;
    println!(
        "Node {} -> {gateway} ({} commands: {})",
        credentials.token.node_id(),
        executors.len(),
        executors.names().collect::<Vec<_>>().join(", ")
    );
    flush();
    while let Ok(event) = handle.events().recv_blocking() {
        print_event(&event);
    }
    let exit = handle.wait();
    match &exit {
        NodeExit::Stopped => Ok(ExitCode::SUCCESS),
        NodeExit::Revoked { .. } => {
            eprintln!(
                "nodelink: {exit}. The token in {} was deleted; pair again with `nodelink node pair`.",
                state.path().display()
            );
            Ok(ExitCode::from(EXIT_REVOKED))
        }
        other => Err(other.to_string().into()),
    }
}

/// The node's local scope policy: the scopes its commands need, except those needing consent
/// unless `--allow`ed, plus whatever `--allow` names.
pub fn local_policy(
    executors: &ExecutorSet,
    allow: &[String],
) -> Result<ScopeSet, Box<dyn std::error::Error + Send + Sync>> {
    let allowed =
        ScopeSet::parse(allow.iter().map(String::as_str)).map_err(|e| format!("--allow: {e}"))?;
    let mut entries = executors
        .specs()
        .into_iter()
        .filter_map(|spec| spec.required_scope)
        .filter(|scope| !CONSENT_SCOPES.contains(&scope.as_str()) || allowed.allows(scope))
        .collect::<Vec<_>>();
    entries.extend(allowed.iter().map(str::to_owned));
    let policy = ScopeSet::parse(entries.iter().map(String::as_str))
        .map_err(|e| format!("an executor's scope: {e}"))?;
    Ok(policy)
}

pub(super) fn runtime_config(node: NodeConfig, common: &CommonArgs) -> RuntimeConfig {
    let mut node = node;
    if let Some(d) = common.heartbeat_interval {
        node.heartbeat_interval = d;
    }
    if let Some(d) = common.reconnect_cap {
        node.reconnect_cap = d;
        node.reconnect_base = node.reconnect_base.min(d);
    }
    if let Some(d) = common.refusal_floor {
        node.refusal_floor = d;
    }
    if let Some(d) = common.poll_interval {
        node.poll_interval = d;
    }
    let mut config = RuntimeConfig::new(node);
    config.tls = TlsOptions {
        extra_ca_pem: common.ca_cert.clone(),
        skip_platform_roots: common.no_platform_roots,
    };
    config
}

/// One line per event worth an operator's eye, on stdout (tests read these lines).
pub(super) fn print_event(event: &NodeEvent) {
    let line = match event {
        NodeEvent::StateChanged(NodeState::Polling) => "polling the gateway over HTTP".to_owned(),
        NodeEvent::StateChanged(state) => format!("state: {state:?}"),
        NodeEvent::Connected { protocol_version } => {
            format!("connected (protocol {protocol_version})")
        }
        NodeEvent::Disconnected { reason, retry_in } => {
            format!(
                "disconnected: {reason}; retrying in {:.1}s",
                retry_in.as_secs_f64()
            )
        }
        NodeEvent::ScopesChanged(scopes) => format!("scopes: {}", scopes.join(", ")),
        NodeEvent::ResultDiscarded { command_id } => {
            format!("result of {command_id} discarded (buffer full while disconnected)")
        }
        NodeEvent::PeerMisbehaved(what) => format!("gateway sent something unusable: {what}"),
        NodeEvent::RequestFailed(what) => format!("request failed: {what}"),
        NodeEvent::TokenRevoked { reason } => format!("revoked: {reason}"),
        NodeEvent::Command(event) => format!("command: {event:?}"),
        _ => return,
    };
    println!("{line}");
    flush();
}

fn flush() {
    let _ = std::io::stdout().flush();
}

pub(super) fn host_name() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .ok()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
}

/// `500ms`, `2s`, `1.5s`, `3m`, or a bare number of seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let (number, unit) = match text.find(|c: char| c.is_ascii_alphabetic()) {
        Some(at) => text.split_at(at),
        None => (text, "s"),
    };
    let value: f64 = number
        .trim()
        .parse()
        .map_err(|_| format!("not a duration: {text:?} (e.g. 500ms, 2s, 3m)"))?;
    let seconds = match unit {
        "ms" => value / 1000.0,
        "s" => value,
        "m" => value * 60.0,
        "h" => value * 3600.0,
        _ => return Err(format!("unknown unit {unit:?} in {text:?} (ms, s, m, h)")),
    };
    Duration::try_from_secs_f64(seconds).map_err(|e| format!("{text:?}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use nodelink_core::node::commands::{CommandSpec, ExecuteRequest, Outcome};
    use nodelink_core::node::executor::{Executor, RunContext};

    struct Needs(&'static str, &'static str);
    impl Executor for Needs {
        fn spec(&self) -> CommandSpec {
            CommandSpec::new(self.0).scope(self.1)
        }
        fn run(&self, _: &ExecuteRequest, _: &dyn RunContext) -> Outcome {
            Ok(serde_json::Value::Null)
        }
    }

    #[test]
    fn system_execute_needs_the_operators_consent() {
        let mut set = ExecutorSet::new();
        set.register(Needs("system.execute", "system.execute"));
        set.register(Needs("system.info", "system.info"));
        let policy = local_policy(&set, &[]).unwrap();
        assert!(policy.allows("system.info"));
        assert!(!policy.allows("system.execute"));
        let policy = local_policy(&set, &["system.execute".into()]).unwrap();
        assert!(policy.allows("system.execute"));
        assert!(local_policy(&set, &["Bad Scope".into()]).is_err());
    }

    #[test]
    fn durations_take_units() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("3m"), Ok(Duration::from_secs(180)));
        assert!(parse_duration("3 parsecs").is_err());
        assert!(parse_duration("-1s").is_err());
    }
}
