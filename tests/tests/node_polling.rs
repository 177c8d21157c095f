//! A node on the HTTP polling transport, end to end: pairing, the REST heartbeat, commands
//! taken by polling, a result of several parts posted part by part.

mod node_support;

use std::time::Duration;

use node_support::*;
use nodelink_core::node::{NodeState, Transport};
use serde_json::json;

#[test]
fn a_polling_node_heartbeats_and_runs_commands_over_rest() {
    let dir = temp_dir("polling");
    let gw = gateway_at(&dir, "127.0.0.1:0");
    let operator = operator(&gw);
    let node = paired_node(
        &gw.url(),
        &operator,
        &dir,
        "poll-node",
        Transport::Polling,
        &["demo.echo", "demo.blob"],
        NodeState::Polling,
    );
    wait_until("a REST heartbeat", || {
        operator.nodes().unwrap().iter().any(|n| {
            n["nodeId"] == json!("poll-node")
                && n["online"] == json!(true)
                && !n["lastHeartbeat"].is_null()
        })
    });
    let echo = operator
        .send(
            "poll-node",
            "demo.echo",
            json!({"over": "rest"}),
            Duration::from_secs(5),
            true,
        )
        .unwrap();
    assert_eq!(echo["ok"], json!(true), "{echo}");
    assert_eq!(echo["result"]["result"], json!({"over": "rest"}));
    // 1.5 MiB: over the 1 MiB field cap, so two parts, each POSTed to the result path.
    let bytes = 1536 * 1024;
    let blob = operator
        .send(
            "poll-node",
            "demo.blob",
            json!({"bytes": bytes}),
            Duration::from_secs(8),
            true,
        )
        .unwrap();
    assert_eq!(blob["ok"], json!(true), "{}", blob["result"]["error"]);
    assert_eq!(
        blob["result"]["result"]["data"].as_str(),
        Some(nodelink::demo::blob(bytes).as_str())
    );
    assert_eq!(node.handle.state(), NodeState::Polling);
    node.handle.stop();
    gw.shutdown();
    let _ = std::fs::remove_dir_all(&dir);
}
