//! `nodelink-node`: the minimal node binary (the blocking shell), with the `pair` / `run` flags of
//! `nodelink node`. Arguments are parsed with lexopt: clap would cost several hundred KB of the
//! 3 MB size budget for the same two subcommands.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use lexopt::prelude::*;
use nodelink_blocking::{default_state_dir, Exit, Flow, NodeOptions, Runner, StateDir};
use nodelink_core::node::executor::ExecutorSet;
use nodelink_core::node::{Dialect, Identity, NodeConfig, NodeEvent, Transport};
use nodelink_core::scope::ScopeSet;
use nodelink_core::wire::llm::ConnectParams;
use nodelink_core::wire::signalr::HubProtocol;

const HELP: &str = "\
nodelink-node: a nodelink worker node for minimal hosts (mio + std threads)

USAGE:
    nodelink-node pair --gateway URL [--node-id ID] [--name NAME] [--state-dir DIR] [--force]
                       [--ca-cert PEM]
    nodelink-node run [--state-dir DIR] [--transport auto|ws|polling] [--protocol json|messagepack]
                      [--allow SCOPE...] [--slots N] [--gateway URL] [--ca-cert PEM]
    nodelink-node run --dialect llm --server URL --token TOKEN --model MODEL --name NAME
                      [--max-concurrency N] [--ca-cert PEM]

COMMANDS:
    pair    Ask the gateway to pair: prints a pairing code for the operator to approve, waits
            until approved (or rejected, or expired), and stores the token in the state
            directory (token.json, mode 0600). Refuses when a token is stored already.
            Exits 0 when paired, 4 when rejected or expired.
    run     Connect with the stored token, heartbeat with host statistics, run commands,
            reconnect with backoff. Exits 3 when the gateway revokes the node (its token file
            is deleted first), 4 when the gateway refuses the token for good. Other exit
            statuses: 1 an error (message on stderr), 2 a usage error.

OPTIONS:
    --gateway URL           The gateway's base URL (http:// or https://)          [pair]
    --node-id ID            The node id to ask for (default: one is generated)     [pair]
    --name NAME             A display name sent with the pairing request           [pair]
    --force                 Pair again although a token is stored; the new token replaces
                            it once approved                                       [pair]
    --gateway URL           Use this gateway URL instead of the stored one          [run]
    --slots N               Commands run at once (default 4); one more is `busy`   [run]
    --state-dir DIR         Where the token is kept (default: $NODELINK_STATE_DIR,
                            else $XDG_STATE_HOME/nodelink, else ~/.local/state/nodelink)
    --transport MODE        auto (WebSocket, falling back to HTTP polling; default),
                            ws (WebSocket only) or polling (HTTP polling only)     [run]
    --protocol NAME         SignalR hub protocol: json (default) or messagepack   [run]
    --allow SCOPE...        Scopes the node allows beyond those of its commands, and the
                            consent needed for system.execute (run a program) and
                            gpu.kernel (kernel.run), which are off otherwise, whatever
                            the gateway grants. Repeat the flag or list values.    [run]
    --ca-cert PEM           Trust only the CA certificates in this PEM file for wss:// and
                            https:// (instead of the built-in Mozilla roots); also
                            $NODELINK_CA_CERT. (--ca-file is an alias.)
    --dialect hub|llm       hub (default): the SignalR node contract; llm: the LLM node
                            dialect (one WebSocket to --server, tasks run as llm.chat) [run]
    --server URL            LLM dialect: ws(s)://host/ws                          [run]
    --token TOKEN           LLM dialect: the shared node token                     [run]
    --model MODEL           LLM dialect: the model this node serves                [run]
    --max-concurrency N     LLM dialect: tasks at once (default 1)                 [run]
    -h, --help              Print this help
    -V, --version           Print the version

ENVIRONMENT:
    NODELINK_LOG=quiet      Print only the pairing code, errors and the final outcome.
    NODELINK_STATE_DIR      The default state directory.
    NODELINK_CA_CERT        The default --ca-cert.
";

/// Exit status when the gateway revoked the node.
const EXIT_REVOKED: u8 = 3;
/// Exit status when pairing ended without a token.
const EXIT_UNPAIRED: u8 = 4;

#[derive(Default)]
struct Args {
    command: Option<String>,
    gateway: Option<String>,
    node_id: Option<String>,
    name: Option<String>,
    state_dir: Option<PathBuf>,
    transport: Option<String>,
    protocol: Option<String>,
    allow: Vec<String>,
    ca_file: Option<PathBuf>,
    force: bool,
    slots: Option<usize>,
    dialect: Option<String>,
    server: Option<String>,
    token: Option<String>,
    model: Option<String>,
    max_concurrency: Option<u32>,
}

fn parse_args() -> Result<Option<Args>, lexopt::Error> {
    let mut args = Args::default();
    let mut parser = lexopt::Parser::from_env();
    while let Some(arg) = parser.next()? {
        match arg {
            Short('h') | Long("help") => {
                print!("{HELP}");
                return Ok(None);
            }
            Short('V') | Long("version") => {
                println!("nodelink-node {}", env!("CARGO_PKG_VERSION"));
                return Ok(None);
            }
            Long("gateway") => args.gateway = Some(parser.value()?.string()?),
            Long("node-id") => args.node_id = Some(parser.value()?.string()?),
            Long("name") => args.name = Some(parser.value()?.string()?),
            Long("state-dir") => args.state_dir = Some(parser.value()?.into()),
            Long("transport") => args.transport = Some(parser.value()?.string()?),
            Long("protocol") => args.protocol = Some(parser.value()?.string()?),
            Long("allow") => {
                for value in parser.values()? {
                    let value = value.string()?;
                    args.allow
                        .extend(value.split(',').filter(|s| !s.is_empty()).map(String::from));
                }
            }
            Long("ca-cert") | Long("ca-file") => args.ca_file = Some(parser.value()?.into()),
            Long("force") => args.force = true,
            Long("slots") => args.slots = Some(parser.value()?.parse()?),
            Long("dialect") => args.dialect = Some(parser.value()?.string()?),
            Long("server") => args.server = Some(parser.value()?.string()?),
            Long("token") => args.token = Some(parser.value()?.string()?),
            Long("model") => args.model = Some(parser.value()?.string()?),
            Long("max-concurrency") => args.max_concurrency = Some(parser.value()?.parse()?),
            Value(command) if args.command.is_none() => args.command = Some(command.string()?),
            _ => return Err(arg.unexpected()),
        }
    }
    Ok(Some(args))
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(Some(args)) => args,
        Ok(None) => return ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("nodelink-node: {e}\nTry `nodelink-node --help`.");
            return ExitCode::from(2);
        }
    };
    let result = match args.command.as_deref() {
        Some("pair") => pair(&args),
        Some("run") => run(&args),
        Some(other) => Err(format!("unknown command `{other}` (expected pair or run)")),
        None => Err("a command is needed: pair or run".into()),
    };
    match result {
        Ok(code) => code,
        Err(message) => {
            eprintln!("nodelink-node: {message}");
            ExitCode::from(1)
        }
    }
}

fn quiet() -> bool {
    std::env::var("NODELINK_LOG").is_ok_and(|v| v == "quiet")
}

fn log(event: &NodeEvent) {
    if let NodeEvent::PairingCode(code) = event {
        // Always shown: the operator needs it, whatever the log level.
        println!("pairing code: {code}  (approve it on the gateway)");
        return;
    }
    if quiet() {
        return;
    }
    match event {
        // The token never goes to a log (NodeToken's Debug redacts it too).
        NodeEvent::Paired { gateway_url, .. } => eprintln!("paired with {gateway_url}"),
        other => eprintln!("{other:?}"),
    }
}

fn state_dir(args: &Args) -> StateDir {
    StateDir::new(args.state_dir.clone().unwrap_or_else(default_state_dir))
}

fn pair(args: &Args) -> Result<ExitCode, String> {
    let gateway = args.gateway.clone().ok_or("pair needs --gateway URL")?;
    let state = state_dir(args);
    if !args.force && state.load().map_err(|e| e.to_string())?.is_some() {
        return Err(format!(
            "a token is stored in {} already; pass --force to pair again",
            state.token_path().display()
        ));
    }
    let dialect = Dialect::Hub {
        protocol: HubProtocol::Json,
        transport: Transport::Auto,
    };
    let identity = Identity::Unpaired {
        node_id: args.node_id.clone(),
    };
    let mut config = NodeConfig::new(gateway, dialect, identity);
    config.name = args.name.clone();
    config.platform = platform();
    let mut options = NodeOptions::new(config, ExecutorSet::new());
    options.state_dir = Some(state.clone());
    options.ca_file = ca_file(args);
    let runner = Runner::new(options).map_err(|e| e.to_string())?;
    let exit = runner
        .run(|event| {
            log(event);
            match event {
                NodeEvent::Paired { .. } => Flow::Stop,
                _ => Flow::Continue,
            }
        })
        .map_err(|e| e.to_string())?;
    match exit {
        Exit::Stopped => {
            println!("paired; token stored in {}", state.token_path().display());
            Ok(ExitCode::SUCCESS)
        }
        Exit::Unpaired { reason } => {
            eprintln!("nodelink-node: not paired: {reason}");
            Ok(ExitCode::from(EXIT_UNPAIRED))
        }
        Exit::Revoked { reason } => {
            eprintln!("nodelink-node: revoked while pairing: {reason}");
            Ok(ExitCode::from(EXIT_REVOKED))
        }
    }
}

fn run(args: &Args) -> Result<ExitCode, String> {
    let llm = match args.dialect.as_deref() {
        None | Some("hub") => false,
        Some("llm") => true,
        Some(other) => return Err(format!("--dialect: `{other}` is not hub or llm")),
    };
    let state = state_dir(args);
    let allow = ScopeSet::parse(&args.allow).map_err(|e| format!("--allow: {e}"))?;
    let executors = executors(&allow);
    // The local policy: the scopes of the commands offered, plus what --allow names.
    let offered = executors
        .specs()
        .into_iter()
        .filter_map(|s| s.required_scope);
    let local_scopes = ScopeSet::parse(offered.chain(args.allow.iter().cloned()))
        .map_err(|e| format!("--allow: {e}"))?;
    let mut config = if llm {
        let need = |value: &Option<String>, flag: &str| {
            value
                .clone()
                .ok_or_else(|| format!("--dialect llm needs {flag}"))
        };
        let server_url = need(&args.server, "--server URL")?;
        let params = ConnectParams {
            token: need(&args.token, "--token TOKEN")?,
            model: need(&args.model, "--model MODEL")?,
            max_concurrency: args.max_concurrency.unwrap_or(1),
            name: need(&args.name, "--name NAME")?,
        };
        NodeConfig::new(
            String::new(),
            Dialect::Llm { server_url, params },
            Identity::Unpaired { node_id: None },
        )
    } else {
        let stored = state.load().map_err(|e| e.to_string())?.ok_or_else(|| {
            format!(
                "no token in {}: run `nodelink-node pair --gateway URL` first",
                state.token_path().display()
            )
        })?;
        let transport = match args.transport.as_deref() {
            None | Some("auto") => Transport::Auto,
            Some("ws") => Transport::WebSocket,
            Some("polling") => Transport::Polling,
            Some(other) => {
                return Err(format!("--transport: `{other}` is not auto, ws or polling"))
            }
        };
        let protocol = match args.protocol.as_deref() {
            None | Some("json") => HubProtocol::Json,
            Some("messagepack") => HubProtocol::MessagePack,
            Some(other) => return Err(format!("--protocol: `{other}` is not json or messagepack")),
        };
        let dialect = Dialect::Hub {
            protocol,
            transport,
        };
        let url = args.gateway.clone().unwrap_or(stored.gateway_url);
        NodeConfig::new(url, dialect, Identity::Paired(stored.token))
    };
    config.local_scopes = local_scopes;
    if let Some(slots) = args.slots {
        config.limits.slots = slots.max(1);
    }
    config.platform = platform();
    config.version = env!("CARGO_PKG_VERSION").to_owned();
    let mut options = NodeOptions::new(config, executors);
    options.state_dir = Some(state.clone());
    options.ca_file = ca_file(args);
    options.stats = stats_sampler();
    options.stats_interval = Duration::from_secs(10);
    let runner = Runner::new(options).map_err(|e| e.to_string())?;
    let exit = runner
        .run(|event| {
            log(event);
            Flow::Continue
        })
        .map_err(|e| e.to_string())?;
    match exit {
        Exit::Stopped => Ok(ExitCode::SUCCESS),
        Exit::Revoked { reason } => {
            eprintln!(
                "nodelink-node: the gateway revoked this node ({reason}); its token was deleted \
                 from {}. Pair again with `nodelink-node pair --gateway URL`.",
                state.path().display()
            );
            Ok(ExitCode::from(EXIT_REVOKED))
        }
        Exit::Unpaired { reason } => {
            eprintln!("nodelink-node: {reason}");
            Ok(ExitCode::from(EXIT_UNPAIRED))
        }
    }
}

fn ca_file(args: &Args) -> Option<PathBuf> {
    args.ca_file.clone().or_else(|| {
        std::env::var_os("NODELINK_CA_CERT")
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    })
}

fn platform() -> String {
    format!("{}-{}", std::env::consts::OS, std::env::consts::ARCH)
}

#[cfg(feature = "builtins")]
fn executors(allow: &ScopeSet) -> ExecutorSet {
    let options = nodelink_worker_cuda::BuiltinOptions {
        allow_system_execute: allow.allows("system.execute"),
        allow_kernel_run: allow.allows("gpu.kernel"),
        ..Default::default()
    };
    nodelink_worker_cuda::builtin_executors(&options)
}

#[cfg(not(feature = "builtins"))]
fn executors(_allow: &ScopeSet) -> ExecutorSet {
    ExecutorSet::new()
}

#[cfg(feature = "builtins")]
fn stats_sampler() -> Option<nodelink_blocking::StatsSampler> {
    Some(Box::new(nodelink_worker_cuda::host::sample_stats))
}

#[cfg(not(feature = "builtins"))]
fn stats_sampler() -> Option<nodelink_blocking::StatsSampler> {
    None
}
