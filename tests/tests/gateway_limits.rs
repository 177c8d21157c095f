//! Limits that protect the gateway: a connection that never sends its request head is closed
//! after the handshake timeout, and a node that stops reading is disconnected when its bounded
//! queue fills, without holding up anyone else.
mod gateway_support;

use std::io::Read;
use std::time::{Duration, Instant};

use gateway_support::{pair_quickly, paired_config, Scratch, TestNode};
use nodelink::gateway::{OperatorClient, ServerConfig};
use nodelink_core::node::NodeState;
use serde_json::json;

fn start(scratch: &Scratch) -> nodelink::gateway::RunningGateway {
    let mut config = ServerConfig::new("127.0.0.1:0".parse().expect("addr"), scratch.db());
    config.threads = Some(2);
    config.handshake_timeout = Duration::from_millis(300);
    config.outbound_bytes = 2 * 1024 * 1024;
    nodelink::gateway::start(config).expect("starts")
}

#[test]
fn a_silent_or_slow_request_head_is_cut_off() {
    let scratch = Scratch::new("limits-head");
    let gateway = start(&scratch);
    for partial in ["", "GET /api/admin/nodes HTTP/1.1\r\nhost: x\r\n"] {
        let mut stream = std::net::TcpStream::connect(gateway.local_addr()).expect("connects");
        stream
            .set_read_timeout(Some(Duration::from_secs(3)))
            .expect("timeout");
        std::io::Write::write_all(&mut stream, partial.as_bytes()).expect("written");
        let started = Instant::now();
        let mut buf = [0u8; 512];
        // The server closes (EOF, or a 408 first); a read timeout here would fail the test.
        let mut seen = Vec::new();
        loop {
            match stream.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => seen.extend_from_slice(&buf[..n]),
                Err(e) => panic!("the connection stayed open: {e}"),
            }
        }
        let waited = started.elapsed();
        assert!(waited >= Duration::from_millis(250), "{waited:?}");
        assert!(waited < Duration::from_secs(2), "{waited:?}");
        let seen = String::from_utf8_lossy(&seen);
        assert!(
            seen.is_empty() || seen.starts_with("HTTP/1.1 408"),
            "{seen}"
        );
    }
}

#[test]
fn a_node_that_stops_reading_is_disconnected_and_others_carry_on() {
    let scratch = Scratch::new("limits-slow");
    let gateway = start(&scratch);
    let client = OperatorClient::new(&gateway.url(), gateway.admin_token());
    let token = pair_quickly(&gateway.url(), &client, "slow", &[]);
    let mut config = paired_config(&gateway.url(), token);
    config.limits.slots = 64;
    let mut node = TestNode::new(config, 3);
    assert!(node.run_until(Duration::from_secs(3), |n| n.state() == NodeState::Ready));
    assert!(node.run_until(Duration::from_secs(2), |_| client
        .node("slow")
        .is_ok_and(|v| v["connected"] == true)));

    // The node stops stepping: nothing reads its socket. Each command sends it an
    // ExecuteCommand of 1 MB until its kernel buffers and its queue of 2 are full.
    let params = json!({ "pad": "p".repeat(1_000_000) });
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut sent = 0;
    let started = Instant::now();
    while client.node("slow").is_ok_and(|v| v["connected"] == true) {
        assert!(
            Instant::now() < deadline,
            "never disconnected after {sent} commands"
        );
        client
            .send(
                "slow",
                "hang",
                params.clone(),
                Duration::from_secs(60),
                false,
            )
            .expect("sent");
        sent += 1;
    }
    eprintln!(
        "slow reader cut after {sent} commands in {:?}",
        started.elapsed()
    );
    let metrics = ureq::get(&format!("{}/metrics", gateway.url()))
        .call()
        .expect("metrics")
        .body_mut()
        .read_to_string()
        .expect("text");
    assert!(
        metrics.contains("nodelink_slow_consumers_total 1\n"),
        "{metrics}"
    );
    assert!(
        metrics.contains("nodelink_hub_connections 0\n"),
        "{metrics}"
    );

    // The gateway still serves, and the node, reading again, reconnects.
    assert_eq!(client.nodes().expect("nodes").len(), 1);
    assert!(node.run_until(Duration::from_secs(5), |_| client
        .node("slow")
        .is_ok_and(|v| v["connected"] == true)));
}

#[test]
fn a_message_over_the_limit_closes_the_socket_with_1009() {
    use async_tungstenite::tungstenite::{Error, Message};
    let scratch = Scratch::new("limits-big");
    let gateway = start(&scratch);
    let client = OperatorClient::new(&gateway.url(), gateway.admin_token());
    let token = pair_quickly(&gateway.url(), &client, "big", &[]);
    let url = format!("{}/hubs/node", gateway.url().replace("http://", "ws://"));
    let mut socket = gateway_support::open_socket(&url, Some(token.bearer())).expect("upgraded");
    socket
        .get_ref()
        .set_read_timeout(Some(Duration::from_secs(3)))
        .expect("timeout");
    let huge = vec![b'x'; 6 * 1024 * 1024];
    // The gateway may close while this is still being written.
    let _ = socket.send(Message::Binary(huge.into()));
    let closed_with = loop {
        match socket.read() {
            Ok(Message::Close(frame)) => break frame.map(|f| u16::from(f.code)),
            Ok(_) => continue,
            Err(Error::Io(e)) if e.kind() == std::io::ErrorKind::WouldBlock => {
                panic!("the socket stayed open")
            }
            Err(_) => break None,
        }
    };
    // The Close with 1009 arrives unless the reset of the unread rest of the message beat it.
    if let Some(code) = closed_with {
        assert_eq!(code, 1009);
    }
    assert!(
        (0..100).any(|_| {
            std::thread::sleep(Duration::from_millis(10));
            client.node("big").is_ok_and(|v| v["connected"] == false)
        }),
        "the gateway let the connection go"
    );
}
