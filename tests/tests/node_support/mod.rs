//! Shared by the node end-to-end tests: a gateway on loopback and a node paired with it through
//! the real flow (pending -> approved -> token), with the demo's executors and short timers.
#![allow(dead_code)] // each test file uses a subset

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use nodelink::demo::{demo_executors, DemoCounters};
use nodelink::gateway::{start, OperatorClient, RunningGateway, ServerConfig};
use nodelink::node::{spawn_node, NodeHandle, RuntimeConfig, StateDir};
use nodelink_core::node::{Dialect, Identity, NodeConfig, NodeEvent, NodeState, Transport};
use nodelink_core::wire::signalr::HubProtocol;

/// The longest any one wait may take.
pub const LIMIT: Duration = Duration::from_secs(10);

pub fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("nodelink-e2e-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

pub fn gateway_at(dir: &Path, listen: &str) -> RunningGateway {
    let mut config = ServerConfig::new(listen.parse().unwrap(), dir.join("gw.db"));
    config.admin_token = Some("test-admin".into());
    config.threads = Some(1);
    start(config).expect("the gateway starts")
}

pub fn operator(gateway: &RunningGateway) -> OperatorClient {
    OperatorClient::new(&gateway.url(), gateway.admin_token())
}

pub fn wait_until(what: &str, mut probe: impl FnMut() -> bool) {
    let end = Instant::now() + LIMIT;
    while !probe() {
        assert!(
            Instant::now() < end,
            "timed out after {LIMIT:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

pub struct PairedNode {
    pub handle: NodeHandle,
    pub state: StateDir,
    pub counters: Arc<DemoCounters>,
}

/// Starts node `name`, approves its pairing code with `scopes`, and waits until it is `ready`.
pub fn paired_node(
    url: &str,
    operator: &OperatorClient,
    dir: &Path,
    name: &str,
    transport: Transport,
    scopes: &[&str],
    ready: NodeState,
) -> PairedNode {
    let dialect = Dialect::Hub {
        protocol: HubProtocol::Json,
        transport,
    };
    let identity = Identity::Unpaired {
        node_id: Some(name.to_owned()),
    };
    let mut node = NodeConfig::new(url, dialect, identity);
    node.heartbeat_interval = Duration::from_millis(300);
    node.reconnect_base = Duration::from_millis(50);
    node.reconnect_cap = Duration::from_millis(300);
    node.refusal_floor = Duration::from_millis(300);
    node.poll_interval = Duration::from_millis(100);
    let state = StateDir::new(dir.join(name));
    let mut config = RuntimeConfig::new(node);
    config.state_dir = Some(state.clone());
    let counters = Arc::new(DemoCounters::default());
    let handle = spawn_node(config, demo_executors(&counters)).expect("the node starts");
    let end = Instant::now() + LIMIT;
    let code = loop {
        let left = end.saturating_duration_since(Instant::now());
        match handle.next_event(left) {
            Some(NodeEvent::PairingCode(code)) => break code,
            Some(_) => {}
            None => panic!("no pairing code within {LIMIT:?}"),
        }
    };
    let scopes: Vec<String> = scopes.iter().map(|s| (*s).to_owned()).collect();
    operator.approve(&code, &scopes).expect("approved");
    wait_until(&format!("{name} to be {ready:?}"), || {
        handle.state() == ready
    });
    assert!(state.load().unwrap().is_some(), "the token is stored");
    PairedNode {
        handle,
        state,
        counters,
    }
}
