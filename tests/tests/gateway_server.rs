//! The gateway server in process: a real node machine pairs over REST, is approved through the
//! operator API, connects over the WebSocket hub, heartbeats and runs commands.
mod gateway_support;

use std::time::Duration;

use gateway_support::{node_config, pair_and_connect, start_gateway, Scratch, TestNode};
use nodelink::gateway::OperatorClient;
use nodelink_core::node::{NodeEvent, NodeState};
use serde_json::json;

#[test]
fn a_node_pairs_connects_heartbeats_and_runs_commands() {
    let scratch = Scratch::new("server");
    let gateway = start_gateway(&scratch);
    let client = OperatorClient::new(&gateway.url(), gateway.admin_token());
    let mut node = TestNode::new(node_config(&gateway.url(), "n1"), 7);
    pair_and_connect(&mut node, &client, &[]);

    // Online, connected, its heartbeat's stats visible to the operator.
    assert!(node.run_until(Duration::from_secs(2), |_| {
        client
            .node("n1")
            .is_ok_and(|v| v["online"] == true && v["lastHeartbeat"]["platform"] == "linux")
    }));
    let view = client.node("n1").expect("the node");
    assert_eq!(view["connected"], true);
    assert_eq!(view["status"], "online");
    assert_eq!(view["name"], "test n1");
    assert_eq!(client.nodes().expect("nodes").len(), 1);

    // A command without waiting: the id at once, the outcome by its status.
    let sent = client
        .send("n1", "echo", json!({"x": 1}), Duration::from_secs(5), false)
        .expect("dispatched");
    let id = sent["commandId"].as_str().expect("an id").to_string();
    assert!(node.run_until(Duration::from_secs(2), |_| {
        client.command(&id).is_ok_and(|c| c["status"] == "finished")
    }));
    let finished = client.command(&id).expect("the command");
    assert_eq!(finished["ok"], true, "{finished}");
    assert_eq!(finished["result"]["result"]["echo"]["x"], 1, "{finished}");

    // A command with waiting, from another thread while this one runs the node.
    let url = gateway.url();
    let token = gateway.admin_token().to_string();
    let waiting = std::thread::spawn(move || {
        OperatorClient::new(&url, &token).send(
            "n1",
            "echo",
            json!({"y": 2}),
            Duration::from_secs(5),
            true,
        )
    });
    assert!(node.run_until(Duration::from_secs(3), |_| waiting.is_finished()));
    let outcome = waiting.join().expect("joined").expect("an outcome");
    assert_eq!(outcome["status"], "finished");
    assert_eq!(outcome["result"]["result"]["echo"]["y"], 2, "{outcome}");
    assert_eq!(node.executed.len(), 2);

    // The metrics saw it all.
    let metrics = ureq::get(&format!("{}/metrics", gateway.url()))
        .call()
        .expect("metrics")
        .body_mut()
        .read_to_string()
        .expect("text");
    assert!(metrics.contains("nodelink_nodes_online 1\n"), "{metrics}");
    assert!(
        metrics.contains("nodelink_hub_connections 1\n"),
        "{metrics}"
    );
    assert!(
        metrics.contains("nodelink_commands_total{outcome=\"ok\"} 2\n"),
        "{metrics}"
    );
    assert!(metrics.contains("nodelink_dispatch_latency_seconds_count 2\n"));

    // Graceful shutdown: the node is told to come back later, and tries to.
    gateway.shutdown();
    assert!(node.run_until(Duration::from_secs(2), |n| n
        .events
        .iter()
        .any(|e| matches!(e, NodeEvent::Disconnected { .. }))));
    assert!(matches!(
        node.state(),
        NodeState::Backoff | NodeState::Connecting
    ));
}
