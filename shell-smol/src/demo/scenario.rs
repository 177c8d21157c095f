//! The demo's scenario: the gateway, three nodes, the commands, the checks.

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use nodelink_core::node::{Dialect, Identity, NodeConfig, NodeEvent, NodeState, Transport};
use nodelink_core::wire::signalr::HubProtocol;
use serde_json::{json, Value};

use super::{blob, demo_executors, CommandRow, DemoCounters, Report, BLOB_BYTES};
use crate::gateway::{start, OperatorClient, RunningGateway, ServerConfig};
use crate::node::{spawn_node, NodeExit, NodeHandle, RuntimeConfig, StateDir};

/// The scopes the operator grants: everything the demo runs except `demo.secret`.
const GRANTED: &[&str] = &[
    "system.info",
    "demo.echo",
    "demo.blob",
    "demo.sleep",
    "demo.gpu",
];
const NODES: [&str; 3] = ["demo-node-1", "demo-node-2", "demo-node-3"];
/// How long any one step may take before the demo calls it failed.
const STEP_LIMIT: Duration = Duration::from_secs(15);
const HEARTBEAT: Duration = Duration::from_secs(1);

/// The timers the demo shortens, as printed.
pub fn shortened() -> Vec<String> {
    vec![
        format!("node heartbeat every {HEARTBEAT:?} (default 30 s)"),
        "reconnect backoff 100 ms .. 1 s (default 1 s .. 60 s)".into(),
        "busy retry after 300 ms, from demo.gpu's retryAfterMs (a real executor's choice)".into(),
        "the pairing poll keeps its protocol cadence (3 s): approval is seen within 3 s".into(),
    ]
}

/// The whole demo; `Err` when a step could not even be attempted (the report says how far it
/// got).
pub fn run_demo() -> Result<Report, (Report, String)> {
    let report = Report::new(Instant::now());
    let dir = TempDir::new().map_err(|e| (report.clone(), e))?;
    let result = scenario(&report, dir.path());
    match result {
        Ok(()) => Ok(report),
        Err(error) => Err((report, error)),
    }
}

/// A node of the demo and what the demo watches on it.
struct DemoNode {
    name: &'static str,
    handle: Option<NodeHandle>,
    state: StateDir,
    counters: Arc<DemoCounters>,
    code: Arc<std::sync::Mutex<Option<String>>>,
    events: Option<std::thread::JoinHandle<()>>,
}

fn scenario(report: &Report, dir: &Path) -> Result<(), String> {
    // --- the gateway
    let mut config = ServerConfig::new(
        "127.0.0.1:0".parse().map_err(|e| format!("{e}"))?,
        dir.join("gateway.db"),
    );
    config.admin_token = Some("demo-admin-token".into());
    config.threads = Some(2);
    let gateway = start(config).map_err(|e| format!("the gateway did not start: {e}"))?;
    let url = gateway.url();
    report.log(
        "gateway",
        format!("listening at {url} (SQLite store in a temp dir)"),
    );
    let operator = OperatorClient::new(&url, gateway.admin_token());
    let result = with_gateway(report, dir, &gateway, &operator);
    gateway.shutdown();
    report.log("gateway", "shut down");
    result
}

fn with_gateway(
    report: &Report,
    dir: &Path,
    gateway: &RunningGateway,
    operator: &OperatorClient,
) -> Result<(), String> {
    // --- three nodes start unpaired
    let mut nodes = Vec::new();
    for name in NODES {
        nodes.push(start_node(report, dir, &gateway.url(), name)?);
    }
    let result = with_nodes(report, operator, &mut nodes);
    for node in &mut nodes {
        if let Some(handle) = node.handle.take() {
            handle.stop();
            let exit = handle.wait();
            report.log(node.name, format!("ended: {exit}"));
        }
        if let Some(events) = node.events.take() {
            let _ = events.join();
        }
    }
    result
}

fn start_node(
    report: &Report,
    dir: &Path,
    url: &str,
    name: &'static str,
) -> Result<DemoNode, String> {
    let dialect = Dialect::Hub {
        protocol: HubProtocol::Json,
        transport: Transport::Auto,
    };
    let identity = Identity::Unpaired {
        node_id: Some(name.to_owned()),
    };
    let mut node = NodeConfig::new(url, dialect, identity);
    node.name = Some(format!("demo {name}"));
    node.platform = std::env::consts::OS.to_owned();
    node.version = env!("CARGO_PKG_VERSION").to_owned();
    node.heartbeat_interval = HEARTBEAT;
    node.reconnect_base = Duration::from_millis(100);
    node.reconnect_cap = Duration::from_secs(1);
    node.refusal_floor = Duration::from_secs(1);
    let state = StateDir::new(dir.join(name));
    let mut config = RuntimeConfig::new(node);
    config.state_dir = Some(state.clone());
    let counters = Arc::new(DemoCounters::default());
    let handle = spawn_node(config, demo_executors(&counters))
        .map_err(|e| format!("{name} did not start: {e}"))?;
    let code = Arc::new(std::sync::Mutex::new(None));
    let events = {
        let receiver = handle.events().clone();
        let report = report.clone();
        let code = code.clone();
        std::thread::spawn(move || {
            while let Ok(event) = receiver.recv_blocking() {
                if let NodeEvent::PairingCode(shown) = &event {
                    *code.lock().unwrap_or_else(|e| e.into_inner()) = Some(shown.clone());
                }
                if let Some(line) = describe(&event) {
                    report.log(name, line);
                }
            }
        })
    };
    report.log(name, "started, unpaired");
    Ok(DemoNode {
        name,
        handle: Some(handle),
        state,
        counters,
        code,
        events: Some(events),
    })
}

fn describe(event: &NodeEvent) -> Option<String> {
    Some(match event {
        NodeEvent::PairingCode(code) => format!("pairing pending, shows code {code}"),
        NodeEvent::Paired { .. } => "pairing approved: token stored (mode 0600)".into(),
        NodeEvent::Connected { protocol_version } => {
            format!("connected over WebSocket, protocol {protocol_version}")
        }
        NodeEvent::ScopesChanged(scopes) => format!("scopes now {}", scopes.join(", ")),
        NodeEvent::Disconnected { reason, retry_in } => {
            format!("disconnected ({reason}), retry in {retry_in:?}")
        }
        NodeEvent::TokenRevoked { reason } => format!("revoked ({reason}): token deleted"),
        NodeEvent::StateChanged(NodeState::Polling) => "switched to HTTP polling".into(),
        _ => return None,
    })
}

fn with_nodes(
    report: &Report,
    operator: &OperatorClient,
    nodes: &mut [DemoNode],
) -> Result<(), String> {
    pair_all(report, operator, nodes)?;
    heartbeats(report, operator)?;
    commands(report, operator, nodes)?;
    revoke(report, operator, &mut nodes[2])?;
    Ok(())
}

/// Polls `probe` every 20 ms until it gives a value or `STEP_LIMIT` passes.
fn wait_for<T>(what: &str, mut probe: impl FnMut() -> Option<T>) -> Result<T, String> {
    let end = Instant::now() + STEP_LIMIT;
    loop {
        if let Some(value) = probe() {
            return Ok(value);
        }
        if Instant::now() >= end {
            return Err(format!("timed out after {STEP_LIMIT:?} waiting for {what}"));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn pair_all(report: &Report, operator: &OperatorClient, nodes: &[DemoNode]) -> Result<(), String> {
    // The operator sees the three pending pairings and approves each code the node shows.
    let pending = wait_for("three pending pairings", || {
        let list = operator.pairings().ok()?;
        (list.len() >= nodes.len()).then_some(list)
    })?;
    for node in nodes {
        let shown = wait_for("the node's pairing code", || {
            node.code.lock().unwrap_or_else(|e| e.into_inner()).clone()
        })?;
        let listed = pending
            .iter()
            .find(|p| p["nodeId"] == json!(node.name))
            .and_then(|p| p["code"].as_str().map(str::to_owned));
        report.check(
            &format!("{}: the gateway lists the code the node shows", node.name),
            listed.as_deref() == Some(shown.as_str()),
            format!("node shows {shown}, gateway lists {listed:?}"),
        );
        let scopes: Vec<String> = GRANTED.iter().map(|s| (*s).to_owned()).collect();
        operator
            .approve(&shown, &scopes)
            .map_err(|e| format!("approving {shown}: {e}"))?;
        report.log("operator", format!("approves {shown} for {}", node.name));
    }
    for node in nodes {
        let handle = node.handle.as_ref().ok_or("node gone")?;
        let ready = wait_for(&format!("{} to be ready", node.name), || {
            (handle.state() == NodeState::Ready).then_some(())
        });
        report.check(
            &format!("{}: paired and connected", node.name),
            ready.is_ok(),
            format!("state {:?}", handle.state()),
        );
        let stored = node.state.load().ok().flatten();
        report.check(
            &format!("{}: token stored in its state dir", node.name),
            stored.as_ref().map(|c| c.token.node_id()) == Some(node.name),
            format!("{}", node.state.token_path().display()),
        );
    }
    Ok(())
}

fn heartbeats(report: &Report, operator: &OperatorClient) -> Result<(), String> {
    let online = wait_for("three online nodes with a heartbeat", || {
        let list = operator.nodes().ok()?;
        let count = list
            .iter()
            .filter(|n| n["online"] == json!(true) && !n["lastHeartbeat"].is_null())
            .count();
        (count >= NODES.len()).then_some(count)
    });
    report.check(
        "the gateway sees three nodes online, heartbeating",
        online.is_ok(),
        match &online {
            Ok(n) => format!("{n} online"),
            Err(e) => e.clone(),
        },
    );
    Ok(())
}

/// Sends and waits; the row's outcome is `ok`, the error code, or `refused <status>`.
fn send(
    report: &Report,
    operator: &OperatorClient,
    node: &str,
    command: &str,
    params: Value,
    note: &str,
) -> (Result<Value, String>, String) {
    report.log("operator", format!("sends {command} to {node}"));
    let started = Instant::now();
    let answer = operator.send(node, command, params, Duration::from_secs(10), true);
    let latency = started.elapsed();
    let (result, outcome) = match answer {
        Ok(value) => {
            let outcome = outcome_of(&value);
            (Ok(value), outcome)
        }
        Err(error) => {
            let outcome = match error.status() {
                Some(status) => format!("refused {status}"),
                None => "error".to_owned(),
            };
            (Err(error.to_string()), outcome)
        }
    };
    report.log(
        node,
        format!("{command} -> {outcome} in {} ms", latency.as_millis()),
    );
    report.command(CommandRow {
        command: command.to_owned(),
        node: node.to_owned(),
        outcome: outcome.clone(),
        latency,
        note: note.to_owned(),
    });
    (result, outcome)
}

/// `ok` or the error code of a finished command's JSON.
fn outcome_of(value: &Value) -> String {
    if value["ok"] == json!(true) {
        return "ok".into();
    }
    value["result"]["error"]["code"]
        .as_str()
        .map(str::to_owned)
        .unwrap_or_else(|| format!("status {}", value["status"]))
}

fn commands(report: &Report, operator: &OperatorClient, nodes: &[DemoNode]) -> Result<(), String> {
    let [n1, n2, n3] = [&nodes[0], &nodes[1], &nodes[2]];

    let (info, outcome) = send(
        report,
        operator,
        n1.name,
        "system.info",
        json!({}),
        "demo executor",
    );
    let hostname = info.as_ref().ok().and_then(|v| {
        v["result"]["result"]["hostname"]
            .as_str()
            .map(str::to_owned)
    });
    report.check(
        "system.info answers the host's name",
        outcome == "ok" && hostname.is_some(),
        format!("{outcome}, hostname {hostname:?}"),
    );

    let parts = BLOB_BYTES.div_ceil(nodelink_core::chunk::DEFAULT_FIELD_CAP);
    let (blob_answer, outcome) = send(
        report,
        operator,
        n2.name,
        "demo.blob",
        json!({}),
        &format!("3 MiB result, sent in {parts}+ parts of <= 1 MiB"),
    );
    let data = blob_answer
        .as_ref()
        .ok()
        .and_then(|v| v["result"]["result"]["data"].as_str().map(str::len));
    let intact = blob_answer
        .as_ref()
        .ok()
        .is_some_and(|v| v["result"]["result"]["data"].as_str() == Some(blob(BLOB_BYTES).as_str()));
    report.check(
        "the 3 MiB result arrives whole and intact",
        outcome == "ok" && intact,
        format!("{outcome}, {data:?} bytes of data"),
    );

    let (_, outcome) = send(
        report,
        operator,
        n3.name,
        "demo.secret",
        json!({}),
        "scope demo.secret not granted",
    );
    report.check(
        "a command outside the granted scopes is refused",
        outcome == "not_authorized" || outcome == "refused 403",
        outcome.clone(),
    );

    let (_, outcome) = send(
        report,
        operator,
        n1.name,
        "demo.gpu",
        json!({"retryMs": 300}),
        "busy once (retryAfterMs 300), retried by the gateway",
    );
    let runs = n1.counters.gpu_runs.load(Ordering::SeqCst);
    report.check(
        "a busy command is retried and then succeeds",
        outcome == "ok" && runs == 2,
        format!("{outcome} after {runs} runs"),
    );

    cancel(report, operator, n2)?;
    Ok(())
}

fn cancel(report: &Report, operator: &OperatorClient, node: &DemoNode) -> Result<(), String> {
    report.log(
        "operator",
        format!("sends demo.sleep (10 s) to {}", node.name),
    );
    let started = Instant::now();
    let sent = operator
        .send(
            node.name,
            "demo.sleep",
            json!({"ms": 10_000}),
            Duration::from_secs(20),
            false,
        )
        .map_err(|e| format!("sending demo.sleep: {e}"))?;
    let id = sent["commandId"]
        .as_str()
        .ok_or_else(|| format!("no commandId in {sent}"))?
        .to_owned();
    wait_for("demo.sleep to start", || {
        (node.counters.sleeps_started.load(Ordering::SeqCst) > 0).then_some(())
    })?;
    report.log("operator", format!("cancels {id}"));
    operator
        .cancel(&id)
        .map_err(|e| format!("cancelling {id}: {e}"))?;
    let finished = wait_for("the cancelled command to finish", || {
        let view = operator.command(&id).ok()?;
        (view["status"] == json!("finished")).then_some(view)
    });
    let latency = started.elapsed();
    let outcome = finished
        .as_ref()
        .map(outcome_of)
        .unwrap_or_else(|e| e.clone());
    let stopped = wait_for("the executor to stop", || {
        (node.counters.sleeps_cancelled.load(Ordering::SeqCst) > 0).then_some(())
    })
    .is_ok();
    report.command(CommandRow {
        command: "demo.sleep".into(),
        node: node.name.into(),
        outcome: outcome.clone(),
        latency,
        note: "10 s sleep, cancelled while running".into(),
    });
    report.log(
        node.name,
        format!("demo.sleep -> {outcome}; executor stopped: {stopped}"),
    );
    report.check(
        "a cancelled command ends `cancelled` and its executor stops",
        outcome == "cancelled" && stopped,
        format!("{outcome}, executor stopped: {stopped}"),
    );
    Ok(())
}

fn revoke(report: &Report, operator: &OperatorClient, node: &mut DemoNode) -> Result<(), String> {
    report.log("operator", format!("revokes {}", node.name));
    operator
        .revoke(node.name, "demo: decommissioned")
        .map_err(|e| format!("revoking {}: {e}", node.name))?;
    let handle = node.handle.take().ok_or("node gone")?;
    let ended = wait_for("the revoked node to end", || {
        handle.is_finished().then_some(())
    });
    if ended.is_err() {
        handle.stop();
    }
    let exit = handle.wait();
    report.log(node.name, format!("ended: {exit}"));
    report.check(
        "a revoked node stops and deletes its token",
        matches!(exit, NodeExit::Revoked { .. }) && !node.state.token_path().exists(),
        format!(
            "{exit}; token file exists: {}",
            node.state.token_path().exists()
        ),
    );
    let status = wait_for("the gateway to list the node as revoked", || {
        let view = operator.nodes().ok()?;
        view.into_iter()
            .find(|n| n["nodeId"] == json!(node.name) && n["revoked"] == json!(true))
    });
    report.check(
        "the gateway lists the node as revoked",
        status.is_ok(),
        status
            .map(|v| v["status"].to_string())
            .unwrap_or_else(|e| e),
    );
    Ok(())
}

/// A temporary directory removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> Result<TempDir, String> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let path =
            std::env::temp_dir().join(format!("nodelink-demo-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&path)
            .map_err(|e| format!("cannot create {}: {e}", path.display()))?;
        Ok(TempDir(path))
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
