//! The gateway is stopped and started again (same port, same SQLite store) while a node runs a
//! command: the node reconnects and the command completes exactly once.

mod node_support;

use std::sync::atomic::Ordering;
use std::time::Duration;

use node_support::*;
use nodelink_core::node::{NodeEvent, NodeState, Transport};
use serde_json::json;

#[test]
fn a_gateway_restart_during_a_command_the_node_reconnects_and_the_command_completes_once() {
    let dir = temp_dir("restart");
    let first = gateway_at(&dir, "127.0.0.1:0");
    let addr = first.local_addr();
    let url = first.url();
    let node = paired_node(
        &url,
        &operator(&first),
        &dir,
        "restart-node",
        Transport::WebSocket,
        &["demo.sleep"],
        NodeState::Ready,
    );
    let sent = operator(&first)
        .send(
            "restart-node",
            "demo.sleep",
            json!({"ms": 800}),
            Duration::from_secs(10),
            false,
        )
        .expect("dispatched");
    let id = sent["commandId"].as_str().expect("an id").to_owned();
    wait_until("the command to start", || {
        node.counters.sleeps_started.load(Ordering::SeqCst) == 1
    });

    first.shutdown();
    let second = gateway_at(&dir, &addr.to_string());
    let operator = operator(&second);
    wait_until("the command to finish on the restarted gateway", || {
        operator
            .command(&id)
            .is_ok_and(|view| view["status"] == json!("finished"))
    });
    let view = operator.command(&id).unwrap();
    assert_eq!(view["ok"], json!(true), "{view}");
    assert_eq!(view["result"]["result"], json!({"sleptMs": 800}), "{view}");
    assert_eq!(
        node.counters.sleeps_started.load(Ordering::SeqCst),
        1,
        "executed once, not again after the reconnect"
    );
    wait_until("the node to be ready again", || {
        node.handle.state() == NodeState::Ready
    });
    let mut reconnected = false;
    let mut connections = 0;
    while let Ok(event) = node.handle.events().try_recv() {
        reconnected |= matches!(event, NodeEvent::Disconnected { .. });
        connections += usize::from(matches!(event, NodeEvent::Connected { .. }));
    }
    assert!(
        reconnected && connections >= 2,
        "the node lost its link and connected again"
    );

    // A long command never holds the heartbeat back: a new one arrives while it runs.
    let heartbeat = || {
        operator
            .nodes()
            .unwrap()
            .into_iter()
            .find(|n| n["nodeId"] == json!("restart-node"))
            .map(|n| n["lastHeartbeat"].clone())
            .unwrap_or_default()
    };
    operator
        .send(
            "restart-node",
            "demo.sleep",
            json!({"ms": 2000}),
            Duration::from_secs(10),
            false,
        )
        .expect("dispatched");
    wait_until("the second command to start", || {
        node.counters.sleeps_started.load(Ordering::SeqCst) == 2
    });
    // `uptime` (whole seconds) changes at the first heartbeat of each new second.
    let before = heartbeat();
    wait_until("a new heartbeat while the command runs", || {
        heartbeat() != before
    });
    let seen = (before, heartbeat());
    assert_eq!(
        node.handle.status().commands_running,
        1,
        "the command still runs: {seen:?}"
    );
    node.handle.stop();
    second.shutdown();
    let _ = std::fs::remove_dir_all(&dir);
}
