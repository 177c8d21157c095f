//! End-to-end node scenarios against the real gateway server on loopback, written once for any
//! shell: a scenario is a generic function over [`NodeUnderTest`], and each shell gets one
//! `#[test]` per scenario: `blocking_*` for the blocking shell (`nodelink-blocking`), `smol_*` for
//! the async shell (`nodelink::node`).
//!
//! Every scenario pairs through the real flow (the node's pairing POST repeats every 3 s, a
//! protocol constant, so each scenario takes a little over 3 s) and bounds every wait.
mod gateway_support;
#[path = "node_scenarios/proxy.rs"]
mod proxy;

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use gateway_support::Scratch;
use nodelink::gateway::{OperatorClient, RunningGateway, ServerConfig};
use nodelink_blocking::{Exit, NodeHandle, NodeOptions, StateDir};
use nodelink_core::node::commands::{CommandSpec, ExecuteRequest, Outcome};
use nodelink_core::node::executor::{Executor, ExecutorSet, RunContext};
use nodelink_core::node::{
    Dialect, HostStats, Identity, NodeConfig, NodeEvent, NodeState, Transport,
};
use nodelink_core::wire::signalr::HubProtocol;
use serde_json::{json, Value};

const LIMIT: Duration = Duration::from_secs(8);

// ---- the shell-independent part ---------------------------------------------------------------

/// What a scenario asks of a node.
pub struct NodeSpec {
    pub gateway_url: String,
    pub node_id: String,
    /// Holds `token.json`: a node with a token there connects, one without pairs first.
    pub state_dir: PathBuf,
    pub protocol: HubProtocol,
    pub transport: Transport,
    /// The scenario's executors ([`test_executors`]).
    pub executors: ExecutorSet,
    /// The host statistics the node must report (instead of sampling the host).
    pub stats: HostStats,
}

impl NodeSpec {
    /// The machine configuration both shells use: the spec's link, shortened timers.
    pub fn config(&self) -> NodeConfig {
        let state = StateDir::new(&self.state_dir);
        let (url, identity) = match state.load().expect("a readable state dir") {
            Some(stored) => (stored.gateway_url, Identity::Paired(stored.token)),
            None => (
                self.gateway_url.clone(),
                Identity::Unpaired {
                    node_id: Some(self.node_id.clone()),
                },
            ),
        };
        let dialect = Dialect::Hub {
            protocol: self.protocol,
            transport: self.transport,
        };
        let mut config = NodeConfig::new(url, dialect, identity);
        config.platform = "e2e-platform".into();
        config.version = "0.0.1-e2e".into();
        config.heartbeat_interval = Duration::from_millis(300);
        config.reconnect_base = Duration::from_millis(100);
        config.reconnect_cap = Duration::from_millis(400);
        config.refusal_floor = Duration::from_millis(200);
        config.poll_interval = Duration::from_millis(100);
        config
    }
}

/// How a node ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Ended {
    Stopped,
    Revoked(String),
    Other(String),
}

/// One shell's node, as the scenarios drive it.
pub trait NodeUnderTest: Sized {
    /// Starts the node on its own thread(s).
    fn start(spec: NodeSpec) -> Self;
    /// The next event, waiting at most `timeout`.
    fn next_event(&mut self, timeout: Duration) -> Option<NodeEvent>;
    /// Waits at most `timeout` for the node to end by itself.
    fn wait_end(&mut self, timeout: Duration) -> Option<Ended>;
    /// Stops the node and waits for it.
    fn stop(self) -> Ended;
}

/// Waits for an event matching `pred`, keeping the ones seen for the failure message.
fn wait_event<N: NodeUnderTest>(
    node: &mut N,
    what: &str,
    pred: impl Fn(&NodeEvent) -> bool,
) -> NodeEvent {
    let until = Instant::now() + LIMIT;
    let mut seen = Vec::new();
    while let Some(left) = until.checked_duration_since(Instant::now()) {
        match node.next_event(left) {
            Some(event) if pred(&event) => return event,
            Some(event) => seen.push(event),
            None => break,
        }
    }
    panic!("no {what} within {LIMIT:?}; events: {seen:?}");
}

/// Polls `check` until it holds (the gateway's view changes asynchronously).
fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let until = Instant::now() + LIMIT;
    while !check() {
        assert!(
            Instant::now() < until,
            "{what} did not happen within {LIMIT:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The executors every scenario registers.
pub fn test_executors() -> ExecutorSet {
    let mut set = ExecutorSet::new();
    set.register(Echo)
        .register(Big)
        .register(Secret)
        .register(Slow);
    set
}

/// `test.echo`: its params back.
struct Echo;
impl Executor for Echo {
    fn spec(&self) -> CommandSpec {
        CommandSpec::new("test.echo").scope("test.basic")
    }
    fn run(&self, request: &ExecuteRequest, _: &dyn RunContext) -> Outcome {
        Ok(json!({"echo": request.params}))
    }
}

/// `test.big`: a result of `bytes` characters (over the 1 MiB field cap: sent in parts).
struct Big;
impl Executor for Big {
    fn spec(&self) -> CommandSpec {
        CommandSpec::new("test.big").scope("test.basic")
    }
    fn run(&self, request: &ExecuteRequest, _: &dyn RunContext) -> Outcome {
        let bytes = request.params["bytes"].as_u64().unwrap_or(0) as usize;
        let data: String = (0..bytes)
            .map(|i| char::from(b'a' + (i % 26) as u8))
            .collect();
        Ok(json!({"data": data}))
    }
}

/// `test.secret`: needs a scope the first grant leaves out.
struct Secret;
impl Executor for Secret {
    fn spec(&self) -> CommandSpec {
        CommandSpec::new("test.secret").scope("test.secret")
    }
    fn run(&self, _: &ExecuteRequest, _: &dyn RunContext) -> Outcome {
        Ok(json!("revealed"))
    }
}

/// The `tag`s of the `test.slow` commands that started, in this test process (a tag per
/// scenario run, so scenarios of both shells running in parallel do not count each other's).
static SLOW_STARTED: Mutex<Vec<String>> = Mutex::new(Vec::new());

fn slow_started(tag: &str) -> usize {
    let started = SLOW_STARTED.lock().unwrap_or_else(|e| e.into_inner());
    started.iter().filter(|t| *t == tag).count()
}

/// `test.slow`: finishes after `ms` milliseconds.
struct Slow;
impl Executor for Slow {
    fn spec(&self) -> CommandSpec {
        CommandSpec::new("test.slow").scope("test.basic")
    }
    fn run(&self, request: &ExecuteRequest, _: &dyn RunContext) -> Outcome {
        let tag = request.params["tag"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        SLOW_STARTED
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(tag);
        let ms = request.params["ms"].as_u64().unwrap_or(0);
        std::thread::sleep(Duration::from_millis(ms));
        Ok(json!({"slept": ms}))
    }
}

fn start_gateway(scratch: &Scratch, listen: &str) -> RunningGateway {
    let mut config = ServerConfig::new(listen.parse().expect("an address"), scratch.db());
    config.threads = Some(2);
    nodelink::gateway::start(config).expect("the gateway starts")
}

fn spec(gateway: &RunningGateway, scratch: &Scratch, node_id: &str) -> NodeSpec {
    NodeSpec {
        gateway_url: gateway.url(),
        node_id: node_id.into(),
        state_dir: scratch.0.join(format!("state-{node_id}")),
        protocol: HubProtocol::Json,
        transport: Transport::WebSocket,
        executors: test_executors(),
        stats: HostStats {
            cpu_percent: 12.5,
            memory_mb: 345,
        },
    }
}

/// Pairs through the real flow (code shown, operator approves with `scopes`) until `ready`.
fn pair<N: NodeUnderTest>(
    node: &mut N,
    client: &OperatorClient,
    scopes: &[&str],
    ready: NodeState,
) {
    let code = match wait_event(node, "pairing code", |e| {
        matches!(e, NodeEvent::PairingCode(_))
    }) {
        NodeEvent::PairingCode(code) => code,
        _ => unreachable!(),
    };
    let listed = client.pairings().expect("pairings");
    assert!(
        listed.iter().any(|p| p["code"] == code.as_str()),
        "{listed:?}"
    );
    let scopes: Vec<String> = scopes.iter().map(|s| s.to_string()).collect();
    client.approve(&code, &scopes).expect("approved");
    wait_event(node, "Paired", |e| matches!(e, NodeEvent::Paired { .. }));
    wait_event(node, "ready", |e| *e == NodeEvent::StateChanged(ready));
}

fn send(client: &OperatorClient, node: &str, command: &str, params: Value) -> Value {
    client
        .send(node, command, params, Duration::from_secs(5), true)
        .expect("the command's outcome")
}

fn token_file(dir: &Path) -> PathBuf {
    dir.join(nodelink_blocking::TOKEN_FILE)
}

// ---- scenarios ----------------------------------------------------------------------------------

/// pair -> approve -> connect -> heartbeat (with host stats) -> commands, a result > 1 MiB.
fn pairs_heartbeats_and_runs_commands<N: NodeUnderTest>(protocol: HubProtocol) {
    let scratch = Scratch::new("e2e-run");
    let gateway = start_gateway(&scratch, "127.0.0.1:0");
    let client = OperatorClient::new(&gateway.url(), gateway.admin_token());
    let mut spec = spec(&gateway, &scratch, "n1");
    spec.protocol = protocol;
    let state_dir = spec.state_dir.clone();
    let mut node = N::start(spec);
    pair(&mut node, &client, &["test.basic"], NodeState::Ready);

    // The token is stored, private.
    let file = token_file(&state_dir);
    let stored = std::fs::read_to_string(&file).expect("token.json");
    let stored: Value = serde_json::from_str(&stored).expect("token.json is JSON");
    assert!(
        stored["token"]
            .as_str()
            .is_some_and(|t| t.starts_with("n1.")),
        "{stored}"
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&file).expect("meta").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    eventually("a heartbeat with the host's stats", || {
        client.node("n1").is_ok_and(|v| {
            v["online"] == true
                && v["lastHeartbeat"]["platform"] == "e2e-platform"
                && v["lastHeartbeat"]["memoryMb"] == 345
        })
    });

    // A slow command does not hold the heartbeat back: the reported uptime moves on while it
    // runs (the heartbeat interval is 300 ms here).
    let tag = scratch.0.display().to_string();
    let slow = client
        .send(
            "n1",
            "test.slow",
            json!({"ms": 2500, "tag": tag}),
            Duration::from_secs(5),
            false,
        )
        .expect("dispatched");
    let slow_id = slow["commandId"].as_str().expect("an id").to_string();
    eventually("the slow command's start", || slow_started(&tag) == 1);
    let uptime = || {
        client
            .node("n1")
            .ok()
            .and_then(|v| v["lastHeartbeat"]["uptime"].as_u64())
            .unwrap_or(0)
    };
    let before = uptime();
    eventually("a heartbeat during the slow command", || uptime() > before);
    let status = client.command(&slow_id).expect("the slow command");
    assert_ne!(
        status["status"], "finished",
        "the heartbeat came only after: {status}"
    );

    let outcome = send(&client, "n1", "test.echo", json!({"x": 1}));
    assert_eq!(outcome["ok"], true, "{outcome}");
    assert_eq!(outcome["result"]["result"]["echo"]["x"], 1, "{outcome}");

    let bytes = 1_600_000;
    let outcome = send(&client, "n1", "test.big", json!({"bytes": bytes}));
    assert_eq!(outcome["ok"], true, "{outcome:.300}");
    let data = outcome["result"]["result"]["data"]
        .as_str()
        .expect("the data");
    assert_eq!(data.len(), bytes);
    assert!(data.starts_with("abcdefghijklmnopqrstuvwxyza"));

    assert_eq!(node.stop(), Ended::Stopped);
    gateway.shutdown();
}

/// A command beyond the grant is refused by the node; granting the scope lets it run.
fn scopes_refuse_then_allow<N: NodeUnderTest>() {
    let scratch = Scratch::new("e2e-scopes");
    let gateway = start_gateway(&scratch, "127.0.0.1:0");
    let client = OperatorClient::new(&gateway.url(), gateway.admin_token());
    let mut node = N::start(spec(&gateway, &scratch, "n2"));
    pair(&mut node, &client, &["test.basic"], NodeState::Ready);

    let refused = send(&client, "n2", "test.secret", json!({}));
    assert_eq!(refused["ok"], false, "{refused}");
    assert_eq!(
        refused["result"]["error"]["code"], "not_authorized",
        "{refused}"
    );

    client
        .set_scopes("n2", &["test.basic".into(), "test.secret".into()])
        .expect("scopes set");
    wait_event(
        &mut node,
        "the new scopes",
        |e| matches!(e, NodeEvent::ScopesChanged(s) if s.iter().any(|s| s == "test.secret")),
    );
    let allowed = send(&client, "n2", "test.secret", json!({}));
    assert_eq!(allowed["ok"], true, "{allowed}");
    assert_eq!(allowed["result"]["result"], "revealed", "{allowed}");
    node.stop();
    gateway.shutdown();
}

/// Revoke: the node deletes its token and ends by itself.
fn revoke_deletes_the_token_and_ends<N: NodeUnderTest>() {
    let scratch = Scratch::new("e2e-revoke");
    let gateway = start_gateway(&scratch, "127.0.0.1:0");
    let client = OperatorClient::new(&gateway.url(), gateway.admin_token());
    let spec = spec(&gateway, &scratch, "n3");
    let file = token_file(&spec.state_dir);
    let mut node = N::start(spec);
    pair(&mut node, &client, &["test.basic"], NodeState::Ready);
    assert!(file.exists());

    client.revoke("n3", "decommissioned").expect("revoked");
    match node.wait_end(LIMIT) {
        Some(Ended::Revoked(reason)) => assert!(reason.contains("decommissioned"), "{reason}"),
        other => panic!("expected the node to end revoked, got {other:?}"),
    }
    assert!(!file.exists(), "the token file must be deleted");
    gateway.shutdown();
}

/// The gateway restarts (same port, same store) while a command runs: the node reconnects with
/// backoff and the command's result arrives once.
fn reconnects_after_a_gateway_restart<N: NodeUnderTest>() {
    let scratch = Scratch::new("e2e-restart");
    let gateway = start_gateway(&scratch, "127.0.0.1:0");
    let addr = gateway.local_addr().to_string();
    let client = OperatorClient::new(&gateway.url(), gateway.admin_token());
    let mut node = N::start(spec(&gateway, &scratch, "n4"));
    pair(&mut node, &client, &["test.basic"], NodeState::Ready);

    let tag = scratch.0.display().to_string();
    let sent = client
        .send(
            "n4",
            "test.slow",
            json!({"ms": 600, "tag": tag}),
            Duration::from_secs(10),
            false,
        )
        .expect("dispatched");
    let id = sent["commandId"].as_str().expect("an id").to_string();
    eventually("the command's start", || slow_started(&tag) == 1);
    gateway.shutdown();
    wait_event(&mut node, "the disconnect", |e| {
        matches!(e, NodeEvent::Disconnected { .. })
    });

    let gateway = start_gateway(&scratch, &addr);
    let client = OperatorClient::new(&gateway.url(), gateway.admin_token());
    wait_event(&mut node, "the reconnect", |e| {
        matches!(e, NodeEvent::Connected { .. })
    });
    eventually("the command's result after the restart", || {
        client.command(&id).is_ok_and(|c| c["status"] == "finished")
    });
    let finished = client.command(&id).expect("the command");
    assert_eq!(finished["ok"], true, "{finished}");
    assert_eq!(finished["result"]["result"]["slept"], 600, "{finished}");
    assert_eq!(slow_started(&tag), 1, "the command ran once");
    // And the node serves new commands.
    let outcome = send(&client, "n4", "test.echo", json!({"after": "restart"}));
    assert_eq!(
        outcome["result"]["result"]["echo"]["after"], "restart",
        "{outcome}"
    );
    node.stop();
    gateway.shutdown();
}

/// HTTP polling only: commands and the REST heartbeat.
fn polling_transport_runs_commands<N: NodeUnderTest>() {
    let scratch = Scratch::new("e2e-polling");
    let gateway = start_gateway(&scratch, "127.0.0.1:0");
    let client = OperatorClient::new(&gateway.url(), gateway.admin_token());
    let mut spec = spec(&gateway, &scratch, "n5");
    spec.transport = Transport::Polling;
    let mut node = N::start(spec);
    pair(&mut node, &client, &["test.basic"], NodeState::Polling);
    eventually("a REST heartbeat", || {
        client
            .node("n5")
            .is_ok_and(|v| v["lastHeartbeat"]["platform"] == "e2e-platform")
    });
    let outcome = send(&client, "n5", "test.echo", json!({"via": "polling"}));
    assert_eq!(outcome["ok"], true, "{outcome}");
    assert_eq!(
        outcome["result"]["result"]["echo"]["via"], "polling",
        "{outcome}"
    );
    node.stop();
    gateway.shutdown();
}

/// `Transport::Auto` behind a proxy that refuses WebSocket upgrades: after the configured number
/// of failed attempts the node polls over HTTP, and commands still run.
fn falls_back_to_polling_when_websockets_are_blocked<N: NodeUnderTest>() {
    let scratch = Scratch::new("e2e-fallback");
    let gateway = start_gateway(&scratch, "127.0.0.1:0");
    let client = OperatorClient::new(&gateway.url(), gateway.admin_token());
    let proxy = proxy::no_websocket_proxy(gateway.local_addr());
    let mut spec = spec(&gateway, &scratch, "n6");
    spec.gateway_url = format!("http://{proxy}");
    spec.transport = Transport::Auto;
    let mut node = N::start(spec);
    pair(&mut node, &client, &["test.basic"], NodeState::Connecting);
    wait_event(&mut node, "the fallback to polling", |e| {
        *e == NodeEvent::StateChanged(NodeState::Polling)
    });
    let outcome = send(&client, "n6", "test.echo", json!({"via": "fallback"}));
    assert_eq!(outcome["ok"], true, "{outcome}");
    assert_eq!(
        outcome["result"]["result"]["echo"]["via"], "fallback",
        "{outcome}"
    );
    node.stop();
    gateway.shutdown();
}

// ---- the blocking shell -------------------------------------------------------------------------

struct BlockingNode {
    handle: Option<NodeHandle>,
}

impl NodeUnderTest for BlockingNode {
    fn start(spec: NodeSpec) -> Self {
        let config = spec.config();
        let mut options = NodeOptions::new(config, spec.executors);
        options.state_dir = Some(StateDir::new(&spec.state_dir));
        let stats = spec.stats;
        options.stats = Some(Box::new(move || stats));
        options.stats_interval = Duration::from_millis(100);
        options.connect_timeout = Duration::from_secs(2);
        let handle = nodelink_blocking::spawn(options).expect("the node starts");
        BlockingNode {
            handle: Some(handle),
        }
    }

    fn next_event(&mut self, timeout: Duration) -> Option<NodeEvent> {
        let handle = self.handle.as_ref()?;
        // Timeout or a finished loop: no event either way.
        handle.events().recv_timeout(timeout).ok()
    }

    fn wait_end(&mut self, timeout: Duration) -> Option<Ended> {
        let until = Instant::now() + timeout;
        while !self.handle.as_ref()?.is_finished() {
            if Instant::now() >= until {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        Some(ended(self.handle.take()?.join()))
    }

    fn stop(mut self) -> Ended {
        match self.handle.take() {
            Some(handle) => ended(handle.stop()),
            None => Ended::Other("already ended".into()),
        }
    }
}

fn ended(result: Result<Exit, nodelink_blocking::Error>) -> Ended {
    match result {
        Ok(Exit::Stopped) => Ended::Stopped,
        Ok(Exit::Revoked { reason }) => Ended::Revoked(reason),
        Ok(other) => Ended::Other(format!("{other:?}")),
        Err(e) => Ended::Other(e.to_string()),
    }
}

#[test]
fn blocking_pairs_heartbeats_and_runs_commands_json() {
    pairs_heartbeats_and_runs_commands::<BlockingNode>(HubProtocol::Json);
}

#[test]
fn blocking_pairs_heartbeats_and_runs_commands_messagepack() {
    pairs_heartbeats_and_runs_commands::<BlockingNode>(HubProtocol::MessagePack);
}

#[test]
fn blocking_scopes_refuse_then_allow() {
    scopes_refuse_then_allow::<BlockingNode>();
}

#[test]
fn blocking_revoke_deletes_the_token_and_ends() {
    revoke_deletes_the_token_and_ends::<BlockingNode>();
}

#[test]
fn blocking_reconnects_after_a_gateway_restart() {
    reconnects_after_a_gateway_restart::<BlockingNode>();
}

#[test]
fn blocking_falls_back_to_polling_when_websockets_are_blocked() {
    falls_back_to_polling_when_websockets_are_blocked::<BlockingNode>();
}

#[test]
fn blocking_polling_transport_runs_commands() {
    polling_transport_runs_commands::<BlockingNode>();
}

// ---- the smol shell -----------------------------------------------------------------------------

struct SmolNode {
    handle: Option<nodelink::node::NodeHandle>,
}

impl NodeUnderTest for SmolNode {
    fn start(spec: NodeSpec) -> Self {
        let mut config = nodelink::node::RuntimeConfig::new(spec.config());
        config.state_dir = Some(nodelink::node::StateDir::new(&spec.state_dir));
        let stats = spec.stats;
        config.host_stats = Some(std::sync::Arc::new(move || stats));
        config.stats_interval = Duration::from_millis(100);
        config.connect_timeout = Duration::from_secs(2);
        let handle = nodelink::node::spawn_node(config, spec.executors).expect("the node starts");
        SmolNode {
            handle: Some(handle),
        }
    }

    fn next_event(&mut self, timeout: Duration) -> Option<NodeEvent> {
        self.handle.as_ref()?.next_event(timeout)
    }

    fn wait_end(&mut self, timeout: Duration) -> Option<Ended> {
        let until = Instant::now() + timeout;
        while !self.handle.as_ref()?.is_finished() {
            if Instant::now() >= until {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        Some(smol_ended(self.handle.take()?.wait()))
    }

    fn stop(mut self) -> Ended {
        match self.handle.take() {
            Some(handle) => {
                handle.stop();
                smol_ended(handle.wait())
            }
            None => Ended::Other("already ended".into()),
        }
    }
}

fn smol_ended(exit: nodelink::node::NodeExit) -> Ended {
    match exit {
        nodelink::node::NodeExit::Stopped => Ended::Stopped,
        nodelink::node::NodeExit::Revoked { reason } => Ended::Revoked(reason),
        other => Ended::Other(format!("{other:?}")),
    }
}

#[test]
fn smol_pairs_heartbeats_and_runs_commands_json() {
    pairs_heartbeats_and_runs_commands::<SmolNode>(HubProtocol::Json);
}

#[test]
fn smol_pairs_heartbeats_and_runs_commands_messagepack() {
    pairs_heartbeats_and_runs_commands::<SmolNode>(HubProtocol::MessagePack);
}

#[test]
fn smol_scopes_refuse_then_allow() {
    scopes_refuse_then_allow::<SmolNode>();
}

#[test]
fn smol_revoke_deletes_the_token_and_ends() {
    revoke_deletes_the_token_and_ends::<SmolNode>();
}

#[test]
fn smol_reconnects_after_a_gateway_restart() {
    reconnects_after_a_gateway_restart::<SmolNode>();
}

#[test]
fn smol_falls_back_to_polling_when_websockets_are_blocked() {
    falls_back_to_polling_when_websockets_are_blocked::<SmolNode>();
}

#[test]
fn smol_polling_transport_runs_commands() {
    polling_transport_runs_commands::<SmolNode>();
}
