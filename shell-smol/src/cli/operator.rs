//! `nodelink gateway`, `nodelink nodes ...` and `nodelink send` (issue 6; docs/gateway.md).

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Subcommand};
use serde_json::Value;

use super::CliResult;
use crate::gateway::{self, OperatorClient, ServerConfig, TlsFiles};

/// `nodelink gateway`: serve the hub, the node REST API, the operator API and the metrics.
#[derive(Debug, Args)]
#[command(
    after_help = "The admin token of the operator API is read from --admin-token, else \
NODELINK_ADMIN_TOKEN, else <DB>.admin-token (created with mode 0600 at first start).\n\
SIGTERM or ctrl-c shut the gateway down gracefully: it stops accepting, tells connected \
nodes to reconnect later, flushes the store and exits 0."
)]
pub struct GatewayArgs {
    /// Address and port to listen on (one port serves everything).
    #[arg(long, default_value = "127.0.0.1:7300", value_name = "ADDR:PORT")]
    pub listen: SocketAddr,
    /// The SQLite store (created if missing); the admin token file sits next to it.
    #[arg(long, default_value = "nodelink.db", value_name = "FILE")]
    pub db: PathBuf,
    /// Serve TLS with this PEM certificate chain (needs --tls-key).
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The PEM private key of --tls-cert.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// The URL nodes reach this gateway at, when it differs from the listening address
    /// (behind a proxy or NAT). Default: `http(s)://<listen address>`.
    #[arg(long, value_name = "URL")]
    pub public_url: Option<String>,
    /// The operator API's bearer token, instead of the token file.
    #[arg(long, env = "NODELINK_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,
    /// LLM node dialect: a shared token any LLM node may connect to /ws with (the original
    /// server's scheme). Without it only per-node tokens from pairing are accepted.
    #[arg(long, env = "NODELINK_LLM_TOKEN", hide_env_values = true)]
    pub llm_token: Option<String>,
    /// LLM user APIs (POST /api/chat, /v1/chat/completions): the bearer token users present.
    /// The admin token is accepted too.
    #[arg(long, env = "NODELINK_LLM_API_TOKEN", hide_env_values = true)]
    pub llm_api_token: Option<String>,
}

/// Where the operator commands find the gateway and its admin token.
#[derive(Debug, Args)]
pub struct Target {
    /// The gateway's base URL.
    #[arg(
        long,
        env = "NODELINK_GATEWAY",
        default_value = "http://127.0.0.1:7300",
        value_name = "URL"
    )]
    pub gateway: String,
    /// The admin token; default: the token file of --db.
    #[arg(long, env = "NODELINK_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,
    /// The gateway's store, whose `<DB>.admin-token` holds the token when none is given.
    #[arg(
        long,
        default_value = "nodelink.db",
        global = true,
        value_name = "FILE"
    )]
    pub db: PathBuf,
    /// Trust only this PEM file's CAs for an https:// gateway (a private CA, or the gateway's
    /// self-signed certificate) instead of the platform's roots.
    #[arg(long, env = "NODELINK_CA_CERT", value_name = "PEM")]
    pub ca_cert: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum NodesCommand {
    /// List the nodes (status, last contact, scopes, commands in flight) and the pairing
    /// requests waiting for approval.
    List {
        /// Print JSON: {"nodes": [...], "pairings": [...]}.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        target: Target,
    },
    /// Approve a pairing request by the code the node shows; the node gets its token at its next
    /// poll.
    Approve {
        /// The code the node shows (and `nodes list` lists), e.g. `ABC-123`.
        #[arg(value_name = "PAIRING-CODE")]
        code: String,
        /// Scopes granted to the node, comma-separated (e.g. `system.*,screen.capture`).
        #[arg(long, value_delimiter = ',', value_name = "a,b")]
        scopes: Vec<String>,
        #[command(flatten)]
        target: Target,
    },
    /// Reject a pairing request.
    Reject {
        /// The code the node shows (and `nodes list` lists), e.g. `ABC-123`.
        #[arg(value_name = "PAIRING-CODE")]
        code: String,
        #[command(flatten)]
        target: Target,
    },
    /// Revoke a node: its token stops working, its commands are cancelled, a connected node is
    /// told and disconnected for good.
    Revoke {
        /// The node to revoke.
        #[arg(value_name = "NODE-ID")]
        node: String,
        /// What the node is told.
        #[arg(long, default_value = "revoked by the operator", value_name = "R")]
        reason: String,
        #[command(flatten)]
        target: Target,
    },
    /// Set a node's granted scopes (replacing them; none: no scope at all).
    Scopes {
        /// The node whose scopes to set.
        #[arg(value_name = "NODE-ID")]
        node: String,
        /// The scopes granted from now on (patterns like `system.*` allowed).
        #[arg(value_name = "SCOPE")]
        scopes: Vec<String>,
        #[command(flatten)]
        target: Target,
    },
}

/// `nodelink send`: dispatch a command, wait for its outcome, print it. Exit status 0 when the
/// command succeeded, 1 when it failed (its error is printed), 2 when it could not be sent.
#[derive(Debug, Args)]
#[command(
    after_help = "Waits for the outcome (up to --timeout) and prints the command's result, \
or with --json the whole outcome. Exit status: 0 the command succeeded, 1 it failed (its error is \
printed), 2 it could not be sent."
)]
pub struct SendArgs {
    /// The node to run the command on.
    #[arg(value_name = "NODE-ID")]
    pub node: String,
    /// The command's name (e.g. `system.info`).
    #[arg(value_name = "COMMAND")]
    pub command: String,
    /// The command's parameters, a JSON object.
    #[arg(long, default_value = "{}", value_name = "JSON")]
    pub params: String,
    /// How long the command may take (`500ms`, `30s`, `5m`, `1h`; a bare number is seconds).
    #[arg(long, default_value = "30s", value_parser = parse_duration, value_name = "DURATION")]
    pub timeout: Duration,
    /// Print the outcome as JSON.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub target: Target,
}

/// `500ms`, `30s`, `5m`, `1h`, or a bare number of seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: f64 = number
        .parse()
        .map_err(|_| format!("`{text}` is not a duration (e.g. 500ms, 30s, 5m)"))?;
    let seconds = match unit {
        "ms" => value / 1000.0,
        "" | "s" => value,
        "m" => value * 60.0,
        "h" => value * 3600.0,
        _ => return Err(format!("unknown unit `{unit}` (ms, s, m or h)")),
    };
    if !(seconds.is_finite() && seconds > 0.0) {
        return Err("the duration must be above zero".into());
    }
    Duration::try_from_secs_f64(seconds).map_err(|e| e.to_string())
}

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

pub fn run_gateway(args: GatewayArgs) -> CliResult {
    init_tracing();
    let mut config = ServerConfig::new(args.listen, args.db.clone());
    config.public_url = args.public_url;
    config.admin_token = args.admin_token.clone();
    config.llm.machine.shared_token = args.llm_token.clone().filter(|t| !t.is_empty());
    config.llm.api_token = args.llm_api_token.clone().filter(|t| !t.is_empty());
    config.tls = match (args.tls_cert, args.tls_key) {
        (Some(cert), Some(key)) => Some(TlsFiles { cert, key }),
        _ => None,
    };
    // Signals first: a SIGTERM during start-up must not kill the process mid-write.
    let mut signals =
        async_signal::Signals::new([async_signal::Signal::Term, async_signal::Signal::Int])?;
    let running = gateway::start(config)?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "nodelink gateway listening on {}", running.url())?;
    if args.admin_token.is_none() {
        writeln!(
            out,
            "admin token in {}",
            gateway::token_path(&args.db).display()
        )?;
    }
    out.flush()?;
    drop(out);
    let failed = smol::block_on(futures_lite::future::or(
        async {
            let signal = futures_lite::StreamExt::next(&mut signals).await;
            tracing::info!(?signal, "signal received");
            None
        },
        async { Some(running.failed().await) },
    ));
    running.shutdown();
    match failed {
        None => Ok(ExitCode::SUCCESS),
        Some(why) => Err(why.into()),
    }
}

fn client(target: &Target) -> Result<OperatorClient, Box<dyn std::error::Error + Send + Sync>> {
    let token = match &target.admin_token {
        Some(token) => token.clone(),
        None => {
            let path = gateway::token_path(&target.db);
            std::fs::read_to_string(&path)
                .map_err(|e| {
                    format!(
                        "no admin token: give --admin-token or NODELINK_ADMIN_TOKEN, or run where \
                         {} is readable ({e})",
                        path.display()
                    )
                })?
                .trim()
                .to_string()
        }
    };
    match &target.ca_cert {
        None => Ok(OperatorClient::new(&target.gateway, &token)),
        Some(path) => {
            let pem = std::fs::read(path)
                .map_err(|e| format!("cannot read --ca-cert {}: {e}", path.display()))?;
            Ok(OperatorClient::with_root_certs_pem(
                &target.gateway,
                &token,
                &pem,
            )?)
        }
    }
}

pub fn run_nodes(command: NodesCommand) -> CliResult {
    match command {
        NodesCommand::List { json, target } => {
            let client = client(&target)?;
            let nodes = client.nodes()?;
            let pairings = client.pairings()?;
            if json {
                println!(
                    "{}",
                    serde_json::json!({ "nodes": nodes, "pairings": pairings })
                );
            } else {
                print!("{}", render_list(&nodes, &pairings));
            }
        }
        NodesCommand::Approve {
            code,
            scopes,
            target,
        } => {
            let scopes: Vec<String> = scopes.into_iter().filter(|s| !s.is_empty()).collect();
            client(&target)?.approve(&code, &scopes)?;
            println!("approved {code}");
        }
        NodesCommand::Reject { code, target } => {
            client(&target)?.reject(&code)?;
            println!("rejected {code}");
        }
        NodesCommand::Revoke {
            node,
            reason,
            target,
        } => {
            client(&target)?.revoke(&node, &reason)?;
            println!("revoked {node}");
        }
        NodesCommand::Scopes {
            node,
            scopes,
            target,
        } => {
            client(&target)?.set_scopes(&node, &scopes)?;
            println!("{node}: scopes [{}]", scopes.join(", "));
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The human table of `nodes list`.
fn render_list(nodes: &[Value], pairings: &[Value]) -> String {
    let text = |v: &Value| match v {
        Value::Null => "-".to_string(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    let mut out = String::new();
    if nodes.is_empty() {
        out.push_str("no nodes\n");
    } else {
        out.push_str(&format!(
            "{:<24} {:<8} {:<9} {:<24} {:>9} {}\n",
            "NODE", "STATUS", "CONNECTED", "LAST CONTACT (UNIX MS)", "IN-FLIGHT", "SCOPES"
        ));
        for node in nodes {
            let scopes: Vec<String> = node["scopes"]
                .as_array()
                .map(|a| a.iter().map(text).collect())
                .unwrap_or_default();
            out.push_str(&format!(
                "{:<24} {:<8} {:<9} {:<24} {:>9} {}\n",
                text(&node["nodeId"]),
                text(&node["status"]),
                if node["connected"] == true {
                    "yes"
                } else {
                    "no"
                },
                text(&node["lastContactUnixMs"]),
                node["inFlight"].as_array().map_or(0, Vec::len),
                if scopes.is_empty() {
                    "-".to_string()
                } else {
                    scopes.join(",")
                },
            ));
        }
    }
    if !pairings.is_empty() {
        out.push_str(&format!(
            "\n{:<10} {:<24} {:<16} {:<10} {}\n",
            "CODE", "PAIRING NODE", "NAME", "PLATFORM", "STATE"
        ));
        for p in pairings {
            out.push_str(&format!(
                "{:<10} {:<24} {:<16} {:<10} {}\n",
                text(&p["code"]),
                text(&p["nodeId"]),
                text(&p["name"]),
                text(&p["platform"]),
                if p["approvedScopes"].is_null() {
                    "waiting"
                } else {
                    "approved"
                },
            ));
        }
    }
    out
}

pub fn run_send(args: SendArgs) -> CliResult {
    let params: Value =
        serde_json::from_str(&args.params).map_err(|e| format!("--params is not JSON: {e}"))?;
    if !params.is_object() {
        return Err("--params must be a JSON object".into());
    }
    let client = client(&args.target)?;
    let outcome = match client.send(&args.node, &args.command, params, args.timeout, true) {
        Ok(outcome) => outcome,
        Err(e) => {
            eprintln!("nodelink: {e}");
            return Ok(ExitCode::from(2));
        }
    };
    let ok = outcome["ok"] == true;
    if args.json {
        println!("{outcome}");
    } else if ok {
        let result = &outcome["result"]["result"];
        match serde_json::to_string_pretty(result) {
            Ok(text) => println!("{text}"),
            Err(_) => println!("{result}"),
        }
    } else {
        let error = &outcome["result"]["error"];
        eprintln!(
            "{} failed: {} ({})",
            args.command,
            error["message"].as_str().unwrap_or("no message"),
            error["code"].as_str().unwrap_or("error")
        );
    }
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration("7"), Ok(Duration::from_secs(7)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("5d").is_err());
        assert!(parse_duration("s").is_err());
    }

    #[test]
    fn the_list_shows_nodes_and_pairings() {
        let nodes = vec![serde_json::json!({"nodeId": "gpu-1", "status": "online",
            "connected": true, "lastContactUnixMs": 17, "inFlight": ["c1"], "scopes": ["a.*"]})];
        let pairings = vec![serde_json::json!({"code": "ABC-123", "nodeId": "gpu-2",
            "name": null, "platform": "linux", "approvedScopes": null})];
        let text = render_list(&nodes, &pairings);
        assert!(text.contains("gpu-1"), "{text}");
        assert!(text.contains("online"));
        assert!(text.contains("a.*"));
        assert!(text.contains("ABC-123"));
        assert!(text.contains("waiting"));
        assert_eq!(render_list(&[], &[]), "no nodes\n");
    }
}
