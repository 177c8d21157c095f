//! The node machine alone: a stream of ExecuteCommand records in, Execute out, finish, the
//! CommandResult record out, its Completion in. No sockets: the bench plays the gateway with
//! pre-encoded records and counts full round trips per second on one core.
//!
//! `cargo bench -p nodelink-core --bench node` (`--quick` for a smoke run). Issue 4's target:
//! at least 200,000 commands per second.
#![allow(clippy::disallowed_methods)] // a benchmark reads the clock; core's library code never does

use std::hint::black_box;
use std::time::{Duration, Instant};

use nodelink_core::node::commands::{CommandLimits, CommandSpec};
use nodelink_core::node::http::HttpResponse;
use nodelink_core::node::{
    Dialect, Identity, LinkId, Node, NodeConfig, NodeInput, NodeOutput, NodeState, Transport,
    WsFrame,
};
use nodelink_core::wire::rest::NodeToken;
use nodelink_core::wire::signalr::negotiate::{
    AvailableTransport, NegotiateResponse, NegotiatedConnection,
};
use nodelink_core::wire::signalr::HubProtocol;

const TARGET_PER_SECOND: f64 = 200_000.0;

/// A ready node and the link it is on.
fn ready_node(now: Instant) -> (Node, LinkId) {
    let mut config = NodeConfig::new(
        "http://127.0.0.1:7300",
        Dialect::Hub {
            protocol: HubProtocol::Json,
            transport: Transport::WebSocket,
        },
        Identity::Paired(NodeToken::parse("node1.secret").expect("valid")),
    );
    config.commands = vec![CommandSpec::new("system.info")];
    config.limits = CommandLimits {
        slots: 64,
        ..CommandLimits::default()
    };
    let mut node = Node::new(config, now, [1; 32]).expect("valid configuration");
    let mut link = LinkId(0);
    let mut hello_id = None;
    // Play the gateway until the node is ready.
    for _ in 0..16 {
        while let Some(output) = node.poll_output() {
            match output {
                NodeOutput::Http { request, .. } => {
                    let body = NegotiateResponse::Connection(NegotiatedConnection {
                        negotiate_version: 1,
                        connection_id: "c".to_string(),
                        connection_token: Some("t".to_string()),
                        use_stateful_reconnect: false,
                        available_transports: vec![AvailableTransport::websockets()],
                    })
                    .encode();
                    node.handle_input(
                        now,
                        NodeInput::HttpResponse {
                            request,
                            result: Ok(HttpResponse { status: 200, body }),
                        },
                    );
                }
                NodeOutput::OpenWebSocket { link: l, .. } => {
                    link = l;
                    node.handle_input(now, NodeInput::WebSocketOpened { link });
                }
                NodeOutput::Send { frame, .. } => {
                    let text = String::from_utf8_lossy(frame.as_bytes()).into_owned();
                    if text.starts_with("{\"protocol\"") {
                        node.handle_input(
                            now,
                            NodeInput::Frame {
                                link,
                                frame: WsFrame::Text("{}\u{1e}".to_string()),
                            },
                        );
                    } else if text.contains("\"Hello\"") {
                        hello_id = Some(());
                        node.handle_input(
                            now,
                            NodeInput::Frame {
                                link,
                                frame: WsFrame::Text(
                                    "{\"type\":3,\"invocationId\":\"1\",\"result\":{\"protocolVersion\":\"2026-04-01\"}}\u{1e}"
                                        .to_string(),
                                ),
                            },
                        );
                    }
                }
                _ => {}
            }
        }
        if node.state() == NodeState::Ready {
            break;
        }
    }
    assert!(
        hello_id.is_some() && node.state() == NodeState::Ready,
        "the node became ready"
    );
    (node, link)
}

/// Runs `count` commands through the node; returns the elapsed time.
fn run(count: u64) -> Duration {
    let start_instant = Instant::now();
    let (mut node, link) = ready_node(start_instant);
    let now = start_instant;
    let started = Instant::now();
    for i in 0..count {
        let record = format!(
            "{{\"type\":1,\"target\":\"ExecuteCommand\",\"arguments\":[{{\"commandId\":\"cmd-{i}\",\"command\":\"system.info\",\"timeoutMs\":30000,\"protocolVersion\":\"2026-04-01\"}}]}}\u{1e}"
        );
        node.handle_input(
            now,
            NodeInput::Frame {
                link,
                frame: WsFrame::Text(record),
            },
        );
        let mut sent_result = false;
        while let Some(output) = node.poll_output() {
            match output {
                NodeOutput::Execute(request) => {
                    node.finish_command(
                        now,
                        &request.command_id,
                        Ok(serde_json::json!({"hostname": "bench", "cpus": 16})),
                    )
                    .expect("a running command");
                }
                NodeOutput::Send { frame, .. } => {
                    sent_result |= frame.as_bytes().windows(13).any(|w| w == b"CommandResult");
                    black_box(frame);
                }
                _ => {}
            }
        }
        assert!(sent_result, "command {i} produced its result");
        // Result invocation ids follow Hello's (1): 2, 3, ...
        let ack = format!("{{\"type\":3,\"invocationId\":\"{}\"}}\u{1e}", i + 2);
        node.handle_input(
            now,
            NodeInput::Frame {
                link,
                frame: WsFrame::Text(ack),
            },
        );
        while let Some(output) = node.poll_output() {
            black_box(output);
        }
    }
    started.elapsed()
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let (rounds, count) = if quick { (3, 20_000) } else { (9, 200_000) };
    run(count / 10); // warm-up
    let mut rates: Vec<f64> = (0..rounds)
        .map(|_| count as f64 / run(count).as_secs_f64())
        .collect();
    rates.sort_by(f64::total_cmp);
    let median = rates[rates.len() / 2];
    println!("node machine: ExecuteCommand record in -> Execute -> finish -> CommandResult record out -> Completion in");
    println!("{rounds} rounds of {count} commands on one core");
    println!(
        "median {:.0} commands/s (min {:.0}, max {:.0}); {:.2} us per command",
        median,
        rates[0],
        rates[rates.len() - 1],
        1e6 / median
    );
    let verdict = if median >= TARGET_PER_SECOND {
        "met"
    } else {
        "MISSED"
    };
    println!("target >= {TARGET_PER_SECOND:.0} commands/s: {verdict}");
}
