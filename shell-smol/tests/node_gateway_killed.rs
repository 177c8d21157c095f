//! The gateway binary is SIGKILLed while a node (the smol runtime, in this process) runs a
//! command, then started again on the same port and store: the node reconnects with backoff, its
//! result reaches the restarted gateway, and the command ran exactly once.
mod gateway_process;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use gateway_process::{free_port, GatewayProcess};
use nodelink::demo::{demo_executors, DemoCounters};
use nodelink::node::{spawn_node, NodeHandle, RuntimeConfig, StateDir};
use nodelink_core::node::{Dialect, Identity, NodeConfig, NodeEvent, NodeState, Transport};
use nodelink_core::wire::signalr::HubProtocol;
use serde_json::json;

const LIMIT: Duration = Duration::from_secs(15);

fn wait_until(what: &str, mut probe: impl FnMut() -> bool) {
    let deadline = Instant::now() + LIMIT;
    while !probe() {
        assert!(
            Instant::now() < deadline,
            "{what} did not happen within {LIMIT:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn next_pairing_code(handle: &NodeHandle) -> String {
    let deadline = Instant::now() + LIMIT;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match handle.next_event(left) {
            Some(NodeEvent::PairingCode(code)) => return code,
            Some(_) => {}
            None => panic!("no pairing code within {LIMIT:?}"),
        }
    }
}

#[test]
fn a_killed_gateway_comes_back_and_the_running_command_completes_once() {
    let dir = std::env::temp_dir().join(format!("nodelink-killed-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("a scratch dir");
    let db = dir.join("gateway.db");
    let port = free_port();
    let first = GatewayProcess::start(&db, port, &[]);
    let url = first.url.clone();

    let dialect = Dialect::Hub {
        protocol: HubProtocol::Json,
        transport: Transport::WebSocket,
    };
    let identity = Identity::Unpaired {
        node_id: Some("survivor".into()),
    };
    let mut node = NodeConfig::new(url.clone(), dialect, identity);
    node.heartbeat_interval = Duration::from_millis(300);
    node.reconnect_base = Duration::from_millis(100);
    node.reconnect_cap = Duration::from_millis(400);
    let mut runtime = RuntimeConfig::new(node);
    runtime.state_dir = Some(StateDir::new(dir.join("node")));
    let counters = Arc::new(DemoCounters::default());
    let handle = spawn_node(runtime, demo_executors(&counters)).expect("the node starts");

    let code = next_pairing_code(&handle);
    first
        .client()
        .approve(&code, &["demo.sleep".to_owned()])
        .expect("approved");
    wait_until("the node ready", || handle.state() == NodeState::Ready);

    let sent = first
        .client()
        .send(
            "survivor",
            "demo.sleep",
            json!({"ms": 1500}),
            Duration::from_secs(20),
            false,
        )
        .expect("dispatched");
    let id = sent["commandId"].as_str().expect("an id").to_owned();
    wait_until("the command to start", || {
        counters.sleeps_started.load(Ordering::SeqCst) == 1
    });

    first.kill();
    let second = GatewayProcess::start(&db, port, &[]);
    let operator = second.client();
    wait_until("the command to finish on the restarted gateway", || {
        operator
            .command(&id)
            .is_ok_and(|view| view["status"] == json!("finished"))
    });
    let view = operator.command(&id).expect("the command's view");
    assert_eq!(view["ok"], json!(true), "{view}");
    assert_eq!(view["result"]["result"], json!({"sleptMs": 1500}), "{view}");
    assert_eq!(
        counters.sleeps_started.load(Ordering::SeqCst),
        1,
        "the command ran once, not again after the reconnect"
    );
    wait_until("the node online again", || {
        operator
            .node("survivor")
            .is_ok_and(|n| n["online"] == json!(true))
    });
    handle.stop();
    second.kill();
    let _ = std::fs::remove_dir_all(&dir);
}
