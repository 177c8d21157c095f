//! SIGKILL the gateway binary with traffic in flight, start it again on the same store: approved
//! nodes, tokens, pairings, queued commands and finished results survive, and the queued
//! commands reach their node when it reconnects.
mod gateway_process;
#[path = "../../tests/tests/gateway_support/mod.rs"]
mod gateway_support;

use std::time::Duration;

use gateway_process::{free_port, GatewayProcess};
use gateway_support::{pair_quickly, paired_config, Scratch, TestNode};
use nodelink_core::node::NodeState;
use serde_json::json;

#[test]
fn a_killed_gateway_restarts_from_its_store_and_loses_nothing() {
    let scratch = Scratch::new("restart");
    let port = free_port();
    let gateway = GatewayProcess::start(&scratch.db(), port, &[]);
    let client = gateway.client();
    let token = pair_quickly(&gateway.url, &client, "n1", &["echo".to_string()]);
    let mut node = TestNode::new(paired_config(&gateway.url, token), 9);
    assert!(node.run_until(Duration::from_secs(3), |n| n.state() == NodeState::Ready));

    // A finished command, then commands queued while the node is away.
    let first = client
        .send(
            "n1",
            "echo",
            json!({"n": 0}),
            Duration::from_secs(20),
            false,
        )
        .expect("sent")["commandId"]
        .as_str()
        .expect("an id")
        .to_string();
    assert!(node.run_until(Duration::from_secs(3), |_| client
        .command(&first)
        .is_ok_and(|c| c["status"] == "finished")));
    node.drop_sockets();
    assert!(
        node.run_until(Duration::from_secs(2), |_| client
            .node("n1")
            .is_ok_and(|v| v["connected"] == false)),
        "the gateway sees the node go"
    );
    let queued: Vec<String> = (1..=3)
        .map(|n| {
            client
                .send(
                    "n1",
                    "echo",
                    json!({ "n": n }),
                    Duration::from_secs(20),
                    false,
                )
                .expect("sent")["commandId"]
                .as_str()
                .expect("an id")
                .to_string()
        })
        .collect();
    // A pairing request waiting for approval.
    let agent = ureq::agent();
    let pending = agent
        .post(&format!("{}/api/nodes/me/pair", gateway.url))
        .header("content-type", "application/json")
        .send(json!({"nodeId": "n2", "pairingSecret": "another-secret-0123456789"}).to_string())
        .expect("pair")
        .body_mut()
        .read_to_string()
        .expect("text");
    assert!(pending.contains("pending"), "{pending}");

    // Traffic at the moment of the kill: dispatches to a node that never connects; every one
    // the gateway acknowledged must survive.
    let _ = pair_quickly(&gateway.url, &client, "n3", &[]);
    let (url, admin) = (gateway.url.clone(), gateway.admin_token());
    let traffic = std::thread::spawn(move || {
        let client = nodelink::gateway::OperatorClient::new(&url, &admin);
        let mut acknowledged = Vec::new();
        while let Ok(sent) = client.send("n3", "echo", json!({}), Duration::from_secs(60), false) {
            acknowledged.push(sent["commandId"].as_str().expect("an id").to_string());
        }
        acknowledged
    });
    std::thread::sleep(Duration::from_millis(150));
    gateway.kill();
    let acknowledged = traffic.join().expect("the traffic thread");
    assert!(
        acknowledged.len() > 5,
        "traffic ran: {}",
        acknowledged.len()
    );

    let gateway = GatewayProcess::start(&scratch.db(), port, &[]);
    let client = gateway.client();
    let view = client.node("n1").expect("the approved node survived");
    assert_eq!(view["scopes"], json!(["echo"]));
    let pairings = client.pairings().expect("pairings");
    assert!(pairings.iter().any(|p| p["nodeId"] == "n2"), "{pairings:?}");
    let finished = client
        .command(&first)
        .expect("the finished result survived");
    assert_eq!(finished["result"]["result"]["echo"]["n"], 0, "{finished}");
    for id in &queued {
        assert_eq!(client.command(id).expect("queued")["status"], "queued");
    }
    for id in &acknowledged {
        assert!(client.command(id).is_ok(), "acknowledged {id} was lost");
    }

    // The node reconnects with its old token and gets every queued command, in order.
    assert!(
        node.run_until(Duration::from_secs(3), |_| queued
            .iter()
            .all(|id| client.command(id).is_ok_and(|c| c["status"] == "finished"))),
        "queued commands reach the node: {:?}",
        node.events
    );
    assert_eq!(node.state(), NodeState::Ready);
    let ran: Vec<String> = node.executed.iter().map(|r| r.command_id.clone()).collect();
    assert_eq!(ran[1..], queued[..]);
    for (n, id) in queued.iter().enumerate() {
        let outcome = client.command(id).expect("finished");
        assert_eq!(outcome["result"]["result"]["echo"]["n"], n + 1);
    }
}
