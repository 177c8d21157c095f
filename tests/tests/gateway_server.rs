//! The gateway server in process: a real node machine pairs over REST, is approved through the
//! operator API, connects over the WebSocket hub, heartbeats and runs commands.
mod gateway_support;

use std::time::Duration;

use gateway_support::{
    node_config, pair_and_connect, pair_quickly, paired_config, start_gateway, Scratch, TestNode,
};
use nodelink::gateway::OperatorClient;
use nodelink_core::node::{Dialect, NodeEvent, NodeState, Transport};
use nodelink_core::wire::signalr::HubProtocol;
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
    let stopping = std::thread::spawn(move || gateway.shutdown());
    assert!(node.run_until(Duration::from_secs(3), |_| stopping.is_finished()));
    assert!(node.run_until(Duration::from_secs(2), |n| n
        .events
        .iter()
        .any(|e| matches!(e, NodeEvent::Disconnected { .. }))));
    assert!(matches!(
        node.state(),
        NodeState::Backoff | NodeState::Connecting
    ));
}

/// A node with a token from a quick pairing, speaking `protocol` over `transport`.
fn node_with(
    gateway: &nodelink::gateway::RunningGateway,
    client: &OperatorClient,
    node_id: &str,
    protocol: HubProtocol,
    transport: Transport,
) -> TestNode {
    let token = pair_quickly(&gateway.url(), client, node_id, &[]);
    let mut config = paired_config(&gateway.url(), token);
    config.dialect = Dialect::Hub {
        protocol,
        transport,
    };
    config.poll_interval = Duration::from_millis(50);
    TestNode::new(config, 11)
}

/// Runs `echo` on `node_id` and returns its result, stepping `node` meanwhile.
fn echo(
    client: &OperatorClient,
    node: &mut TestNode,
    node_id: &str,
    params: serde_json::Value,
) -> serde_json::Value {
    let id = client
        .send(node_id, "echo", params, Duration::from_secs(5), false)
        .expect("dispatched")["commandId"]
        .as_str()
        .expect("an id")
        .to_string();
    assert!(
        node.run_until(Duration::from_secs(3), |_| client
            .command(&id)
            .is_ok_and(|c| c["status"] == "finished")),
        "{:?}",
        node.events
    );
    client.command(&id).expect("finished")
}

#[test]
fn a_messagepack_node_runs_a_command_over_binary_frames() {
    let scratch = Scratch::new("msgpack");
    let gateway = start_gateway(&scratch);
    let client = OperatorClient::new(&gateway.url(), gateway.admin_token());
    let mut node = node_with(
        &gateway,
        &client,
        "mp",
        HubProtocol::MessagePack,
        Transport::WebSocket,
    );
    assert!(node.run_until(Duration::from_secs(3), |n| n.state() == NodeState::Ready));
    let big = "z".repeat(200_000);
    let finished = echo(&client, &mut node, "mp", json!({"big": big}));
    assert_eq!(finished["ok"], true, "{finished}");
    assert_eq!(
        finished["result"]["result"]["echo"]["big"]
            .as_str()
            .map(str::len),
        Some(200_000)
    );
}

#[test]
fn a_polling_node_heartbeats_and_runs_a_command_over_rest() {
    let scratch = Scratch::new("polling");
    let gateway = start_gateway(&scratch);
    let client = OperatorClient::new(&gateway.url(), gateway.admin_token());
    let mut node = node_with(
        &gateway,
        &client,
        "poller",
        HubProtocol::Json,
        Transport::Polling,
    );
    assert!(node.run_until(Duration::from_secs(3), |n| n.state() == NodeState::Polling));
    assert!(node.run_until(Duration::from_secs(3), |_| {
        client
            .node("poller")
            .is_ok_and(|v| v["online"] == true && v["lastHeartbeat"]["platform"] == "linux")
    }));
    assert_eq!(client.node("poller").expect("node")["connected"], false);
    let finished = echo(&client, &mut node, "poller", json!({"via": "rest"}));
    assert_eq!(
        finished["result"]["result"]["echo"]["via"], "rest",
        "{finished}"
    );
}
