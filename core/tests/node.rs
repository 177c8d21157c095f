//! The node machine end to end against the scripted gateway of `support::sim`, at exact
//! simulated instants: lifecycle, heartbeat, commands, chunked results, scopes, reconnect,
//! revoke, pairing and polling.
mod support;

use std::time::Duration;

use nodelink_core::node::commands::{CommandLimits, CommandSpec};
use nodelink_core::node::http::HttpResponse;
use nodelink_core::node::{Dialect, Identity, NodeConfig, NodeEvent, NodeState, Transport};
use nodelink_core::scope::ScopeSet;
use nodelink_core::wire::contract::GatewayCall;
use nodelink_core::wire::dto::{ErrorCode, ExecuteCommandDto};
use nodelink_core::wire::rest::NodeToken;
use nodelink_core::wire::signalr::HubProtocol;
use support::sim::{Behaviour, PairingScript, Sim};

const GATEWAY: &str = "https://gw.example.com";

fn token() -> NodeToken {
    NodeToken::parse("node1.c2VjcmV0c2VjcmV0").expect("a valid token")
}

fn config(protocol: HubProtocol) -> NodeConfig {
    let mut config = NodeConfig::new(
        GATEWAY,
        Dialect::Hub {
            protocol,
            transport: Transport::WebSocket,
        },
        Identity::Paired(token()),
    );
    config.platform = "linux".to_string();
    config.version = "0.1.0".to_string();
    config.commands = vec![
        CommandSpec::new("system.info"),
        CommandSpec::new("slow"),
        CommandSpec::new("big"),
        CommandSpec::new("screen.capture").scope("screen.capture"),
        CommandSpec::new("input.click")
            .scope("input.control")
            .serialized_by("input"),
    ];
    config.limits = CommandLimits {
        slots: 4,
        ..CommandLimits::default()
    };
    config
}

fn execute(id: &str, command: &str) -> GatewayCall {
    GatewayCall::ExecuteCommand(ExecuteCommandDto {
        command_id: id.to_string(),
        command: command.to_string(),
        params: None,
        timeout_ms: None,
        originated_by: None,
        protocol_version: None,
    })
}

/// A node that has connected and said Hello: ready at 0.080 s (10 ms each way: negotiate,
/// upgrade, handshake, Hello).
fn ready(protocol: HubProtocol) -> Sim {
    let mut sim = Sim::new(config(protocol), 7);
    assert!(sim.run_until(Duration::from_secs(1), |s| s.node.state()
        == NodeState::Ready));
    sim
}

fn secs(values: &[f64]) -> Vec<String> {
    values.iter().map(|v| format!("{v:.3}")).collect()
}

#[test]
fn connects_negotiates_handshakes_says_hello_and_is_ready_at_80ms() {
    for protocol in [HubProtocol::Json, HubProtocol::MessagePack] {
        let sim = ready(protocol);
        assert_eq!(format!("{:.3}", sim.t()), "0.080", "{protocol:?}");
        assert_eq!(sim.node.protocol_version(), "2026-04-01");
        assert!(sim.has_event(|e| matches!(e, NodeEvent::Connected { .. })));
    }
}

#[test]
fn heartbeat_every_30s_from_previous_deadline() {
    let mut sim = ready(HubProtocol::Json);
    sim.run_for(Duration::from_secs(95));
    assert_eq!(
        secs(&sim.heartbeat_times()),
        ["0.090", "30.090", "60.090", "90.090"],
        "the first on connect, then every 30 s from the previous deadline"
    );
    let (_, last) = sim.heartbeats.last().expect("heartbeats");
    assert_eq!(last.node_id, "node1");
    assert_eq!(last.uptime, 90);
    assert_eq!(last.platform, "linux");
    let capabilities = last.capabilities.as_ref().expect("nodelink capabilities");
    assert_eq!(capabilities.slots, 4);
    assert!(capabilities.commands.contains(&"system.info".to_string()));
}

#[test]
fn a_command_runs_and_its_result_reaches_the_gateway() {
    let mut sim = ready(HubProtocol::MessagePack);
    sim.gateway_call(execute("c1", "system.info"));
    sim.run_for(Duration::from_secs(1));
    let results = sim.results_for("c1");
    assert_eq!(results.len(), 1);
    assert!(results[0].ok);
    assert_eq!(results[0].protocol_version.as_deref(), Some("2026-04-01"));
    assert_eq!(
        results[0].part_index, None,
        "a result that fits is one message"
    );
}

#[test]
fn command_times_out_at_30s_with_timeout_code() {
    let mut sim = ready(HubProtocol::Json);
    sim.behaviours.insert("slow".to_string(), Behaviour::Hang);
    sim.gateway_call(execute("c1", "slow")); // arrives at 0.090
    sim.run_for(Duration::from_secs(31));
    let (at, result) = sim
        .results
        .iter()
        .find(|(_, r)| r.command_id == "c1")
        .expect("a result");
    assert_eq!(format!("{:.3}", sim.clock.secs(*at)), "30.100");
    let error = result.error.as_ref().expect("an error");
    assert_eq!(error.code, ErrorCode::Timeout);
    let (cancelled_at, id) = &sim.cancelled[0];
    assert_eq!(
        (format!("{:.3}", sim.clock.secs(*cancelled_at)), id.as_str()),
        ("30.090".to_string(), "c1")
    );
}

#[test]
fn slow_command_does_not_delay_heartbeat() {
    let mut sim = ready(HubProtocol::Json);
    // A result of 6 parts that the gateway never acknowledges: the window of 4 fills up.
    sim.ack_results = false;
    sim.behaviours.insert(
        "big".to_string(),
        Behaviour::Finish(
            Duration::from_secs(29),
            Ok(serde_json::json!({ "data": "x".repeat(6 * 1024 * 1024 - 100) })),
        ),
    );
    sim.behaviours.insert("slow".to_string(), Behaviour::Hang);
    sim.gateway_call(execute("c1", "big"));
    sim.gateway_call(execute("c2", "slow"));
    sim.run_for(Duration::from_secs(61));
    assert_eq!(secs(&sim.heartbeat_times()), ["0.090", "30.090", "60.090"]);
    assert_eq!(
        sim.results_for("c1").len(),
        4,
        "4 parts in flight, 2 held back"
    );
}

#[test]
fn result_of_2_5_mib_arrives_in_3_parts() {
    let mut sim = ready(HubProtocol::Json);
    let text = "y".repeat(5 * 512 * 1024);
    sim.behaviours.insert(
        "big".to_string(),
        Behaviour::Finish(Duration::ZERO, Ok(serde_json::json!({ "text": text }))),
    );
    sim.gateway_call(execute("c1", "big"));
    sim.run_for(Duration::from_secs(1));
    let parts = sim.results_for("c1");
    let indices: Vec<_> = parts.iter().map(|p| (p.part_index, p.is_last)).collect();
    assert_eq!(
        indices,
        [
            (Some(0), Some(false)),
            (Some(1), Some(false)),
            (Some(2), Some(true))
        ]
    );
    let mut reassembler = nodelink_core::chunk::Reassembler::new("c1", Default::default());
    let mut whole = None;
    for part in parts {
        whole = reassembler.push(part.clone()).expect("valid parts");
    }
    let whole = whole.expect("complete");
    assert_eq!(whole.result, Some(serde_json::json!({ "text": text })));
}

#[test]
fn redelivered_command_runs_once() {
    let mut sim = ready(HubProtocol::Json);
    sim.behaviours.insert(
        "system.info".to_string(),
        Behaviour::Finish(Duration::from_secs(1), Ok(serde_json::json!({"n": 1}))),
    );
    sim.gateway_call(execute("c1", "system.info"));
    sim.gateway_call(execute("c1", "system.info")); // while running: ignored
    sim.run_for(Duration::from_secs(2));
    sim.gateway_call(execute("c1", "system.info")); // after: the stored result again
    sim.run_for(Duration::from_secs(1));
    assert_eq!(sim.executed.len(), 1);
    let results = sim.results_for("c1");
    assert_eq!(results.len(), 2);
    assert_eq!(results[0], results[1]);
}

#[test]
fn refresh_scopes_is_acknowledged_with_the_effective_scopes_and_enforced() {
    let mut config = config(HubProtocol::Json);
    config.local_scopes = ScopeSet::parse(["screen.*"]).expect("valid");
    let mut sim = Sim::new(config, 1);
    sim.run_for(Duration::from_secs(1));
    sim.gateway_call(GatewayCall::RefreshScopes(vec![
        "screen.capture".to_string(),
        "input.control".to_string(),
    ]));
    sim.run_for(Duration::from_secs(1));
    assert_eq!(sim.node.effective_scopes().to_vec(), ["screen.capture"]);
    assert!(sim
        .received
        .iter()
        .any(|(_, m)| format!("{m:?}").contains("ScopeChanged")));
    sim.gateway_call(execute("c1", "input.click"));
    sim.gateway_call(execute("c2", "screen.capture"));
    sim.run_for(Duration::from_secs(1));
    let refused = sim.results_for("c1");
    assert_eq!(
        refused[0].error.as_ref().map(|e| e.code.clone()),
        Some(ErrorCode::NotAuthorized),
        "the gateway granted input.control, the local policy does not"
    );
    assert!(sim.results_for("c2")[0].ok);
}

#[test]
fn revoked_node_never_reconnects() {
    let mut sim = ready(HubProtocol::Json);
    sim.behaviours.insert("slow".to_string(), Behaviour::Hang);
    sim.gateway_call(execute("c1", "slow"));
    sim.run_for(Duration::from_secs(1));
    sim.gateway_call(GatewayCall::RevokeAccess {
        reason: "admin_revoked".to_string(),
    });
    sim.run_for(Duration::from_secs(1));
    assert_eq!(sim.node.state(), NodeState::Revoked);
    assert!(sim.node.token().is_none());
    assert!(sim.has_event(
        |e| matches!(e, NodeEvent::TokenRevoked { reason } if reason == "admin_revoked")
    ));
    assert_eq!(sim.cancelled.len(), 1, "the running command is stopped");
    let requests = sim.http_requests.len();
    let transcript = sim.transcript.len();
    sim.run_for(Duration::from_secs(3600));
    assert_eq!(
        sim.http_requests.len(),
        requests,
        "no negotiate after revoke"
    );
    assert_eq!(
        sim.transcript.len(),
        transcript,
        "nothing at all happens after revoke"
    );
    assert_eq!(sim.node.poll_timeout(), None);
    assert!(
        sim.results_for("c1").is_empty(),
        "a revoked node sends no result"
    );
}

#[test]
fn a_dropped_socket_reconnects_after_a_jittered_backoff_and_sends_kept_results() {
    let mut sim = ready(HubProtocol::Json);
    sim.behaviours.insert(
        "slow".to_string(),
        Behaviour::Finish(Duration::from_secs(2), Ok(serde_json::json!("done"))),
    );
    sim.gateway_call(execute("c1", "slow"));
    sim.run_for(Duration::from_millis(500));
    sim.drop_socket();
    sim.run_for(Duration::from_secs(5));
    let disconnected = sim.retry_delays().first().copied().expect("a disconnect");
    assert!(
        disconnected <= Duration::from_secs(1),
        "first retry within the 1 s base: {disconnected:?}"
    );
    assert_eq!(sim.node.state(), NodeState::Ready);
    let results = sim.results_for("c1");
    assert_eq!(
        results.len(),
        1,
        "finished while disconnected, sent after the reconnect"
    );
}

#[test]
fn a_close_without_allow_reconnect_waits_at_least_the_refusal_floor() {
    let mut sim = ready(HubProtocol::Json);
    sim.gateway_close(Some("Unauthorized: token revoked"), None);
    sim.run_for(Duration::from_secs(1));
    let retry = sim.retry_delays().first().copied().expect("a disconnect");
    assert!(retry >= Duration::from_secs(30), "{retry:?}");
}

#[test]
fn the_connection_is_dead_after_30s_without_receiving() {
    let mut sim = ready(HubProtocol::Json);
    sim.gateway_pings = false;
    sim.run_for(Duration::from_secs(31));
    let (at, _) = sim
        .events
        .iter()
        .find(|(_, e)| matches!(e, NodeEvent::Disconnected { .. }))
        .expect("a disconnect");
    // The last thing received was the Hello Completion, at 0.080.
    assert_eq!(format!("{:.3}", sim.clock.secs(*at)), "30.080");
}

#[test]
fn failed_upgrades_back_off_exponentially_up_to_the_cap() {
    let mut sim = Sim::new(config(HubProtocol::Json), 3);
    sim.refuse_upgrade = Some(503);
    sim.run_for(Duration::from_secs(600));
    let delays: Vec<Duration> = sim.retry_delays();
    assert!(delays.len() > 8);
    for (attempt, delay) in delays.iter().enumerate() {
        let window = Duration::from_secs(1u64 << attempt.min(6)).min(Duration::from_secs(60));
        assert!(
            *delay <= window,
            "attempt {attempt}: {delay:?} > {window:?}"
        );
    }
}

#[test]
fn pairing_polls_every_3s_and_expires_at_15min() {
    let mut config = config(HubProtocol::Json);
    config.identity = Identity::Unpaired {
        node_id: Some("node9".to_string()),
    };
    let mut sim = Sim::new(config, 5);
    sim.pairing = Some(PairingScript {
        pending: usize::MAX,
        then: HttpResponse {
            status: 500,
            body: Vec::new(),
        },
    });
    sim.run_for(Duration::from_secs(1000));
    let times: Vec<f64> = sim
        .http_requests
        .iter()
        .map(|(at, _, _)| sim.clock.secs(*at))
        .collect();
    assert_eq!(secs(&times[..4]), ["0.000", "3.000", "6.000", "9.000"]);
    assert_eq!(times.len(), 300, "one every 3 s for 15 min");
    assert!(sim.has_event(|e| matches!(e, NodeEvent::PairingCode(code) if code == "ABC-123")));
    let (expired_at, _) = sim
        .events
        .iter()
        .find(|(_, e)| *e == NodeEvent::PairingExpired)
        .expect("expired");
    assert_eq!(format!("{:.3}", sim.clock.secs(*expired_at)), "900.000");
    assert_eq!(sim.node.state(), NodeState::Unpaired);
}

#[test]
fn approved_pairing_yields_a_token_and_the_node_connects() {
    let mut config = config(HubProtocol::MessagePack);
    config.identity = Identity::Unpaired {
        node_id: Some("node9".to_string()),
    };
    let mut sim = Sim::new(config, 5);
    sim.pairing = Some(PairingScript {
        pending: 2,
        then: HttpResponse {
            status: 200,
            body: br#"{"status":"approved","token":"node9.abcdef","gatewayUrl":"https://gw.example.com"}"#.to_vec(),
        },
    });
    assert!(sim.run_until(Duration::from_secs(60), |s| s.node.state()
        == NodeState::Ready));
    assert_eq!(
        sim.node.token().map(|t| t.node_id().to_string()).as_deref(),
        Some("node9")
    );
    assert!(sim.has_event(|e| matches!(e, NodeEvent::Paired { .. })));
    assert_eq!(
        format!("{:.3}", sim.t()),
        "6.100",
        "approved on the third request, at 6 s"
    );
}

#[test]
fn the_same_seed_gives_the_same_transcript() {
    let run = |seed| {
        let mut sim = Sim::new(config(HubProtocol::Json), seed);
        sim.refuse_upgrade = Some(503);
        sim.run_for(Duration::from_secs(30));
        sim.refuse_upgrade = None;
        sim.run_for(Duration::from_secs(60));
        sim.gateway_call(execute("c1", "system.info"));
        sim.run_for(Duration::from_secs(35));
        sim.transcript.join("\n")
    };
    assert_eq!(run(9), run(9));
    assert_ne!(run(9), run(10), "the seed drives the jitter");
}

#[test]
fn transcript_of_a_connection() {
    let mut sim = ready(HubProtocol::Json);
    sim.gateway_call(execute("c1", "system.info"));
    sim.run_for(Duration::from_secs(31));
    insta::assert_snapshot!(
        "node_transcript_connect_command_heartbeat",
        sim.transcript.join("\n")
    );
}

fn polling_config(transport: Transport) -> NodeConfig {
    let mut config = config(HubProtocol::Json);
    config.dialect = Dialect::Hub {
        protocol: HubProtocol::Json,
        transport,
    };
    config
}

fn dto(id: &str, command: &str) -> ExecuteCommandDto {
    match execute(id, command) {
        GatewayCall::ExecuteCommand(dto) => dto,
        _ => unreachable!("execute builds an ExecuteCommand"),
    }
}

#[test]
fn polling_gets_commands_every_2s_posts_results_and_heartbeats_over_rest() {
    let mut sim = Sim::new(polling_config(Transport::Polling), 2);
    sim.run_for(Duration::from_secs(3));
    sim.poll_commands.push(dto("c1", "system.info"));
    sim.run_for(Duration::from_secs(3));
    let gets: Vec<f64> = sim
        .http_requests
        .iter()
        .filter(|(_, url, _)| url.ends_with("/api/nodes/me/commands"))
        .map(|(at, _, _)| sim.clock.secs(*at))
        .collect();
    assert_eq!(
        secs(&gets[..3]),
        ["0.020", "2.000", "4.000"],
        "after the first heartbeat, every 2 s"
    );
    assert_eq!(sim.node.state(), NodeState::Polling);
    assert!(sim.results_for("c1")[0].ok);
    assert_eq!(
        secs(&sim.heartbeat_times()),
        ["0.000"],
        "the first REST heartbeat at once"
    );
}

#[test]
fn auto_transport_falls_back_to_polling_after_three_failed_upgrades() {
    let mut sim = Sim::new(polling_config(Transport::Auto), 4);
    sim.refuse_upgrade = Some(403);
    sim.run_for(Duration::from_secs(300));
    assert_eq!(sim.node.state(), NodeState::Polling);
    let opens = sim
        .transcript
        .iter()
        .filter(|l| l.contains(" open wss://"))
        .count();
    assert_eq!(opens, 3);
    sim.poll_commands.push(dto("c1", "system.info"));
    sim.run_for(Duration::from_secs(3));
    assert!(sim.results_for("c1")[0].ok, "commands flow over polling");
}

#[test]
fn llm_node_runs_a_task_streams_text_and_sends_the_finished_frame() {
    let params = nodelink_core::wire::llm::ConnectParams {
        token: "t0ken".to_string(),
        model: "llama-3".to_string(),
        max_concurrency: 2,
        name: "gpu-1".to_string(),
    };
    let mut config = NodeConfig::new(
        "http://127.0.0.1:9000",
        Dialect::Llm {
            server_url: "ws://127.0.0.1:9000/ws".to_string(),
            params,
        },
        Identity::Unpaired { node_id: None },
    );
    config.commands = vec![CommandSpec::new(nodelink_core::node::LLM_COMMAND)];
    let mut sim = Sim::new(config, 8);
    sim.behaviours.insert(
        nodelink_core::node::LLM_COMMAND.to_string(),
        Behaviour::Hang,
    );
    assert!(sim.run_until(Duration::from_secs(1), |s| s.node.state()
        == NodeState::Ready));
    sim.server_text(
        r#"{"state":0,"id":7,"messages":[{"role":"user","content":"hi"}],"max_new_tokens":5}"#,
    );
    sim.run_for(Duration::from_millis(100));
    assert_eq!(sim.executed.len(), 1);
    let now = sim.now;
    sim.node.stream_text(now, "7", "héllo");
    sim.node
        .finish_command(now, "7", Ok(serde_json::Value::Null))
        .expect("running");
    sim.run_for(Duration::from_secs(25));
    let results: Vec<_> = sim
        .llm_results
        .iter()
        .map(|(_, id, text)| (*id, text.clone()))
        .collect();
    assert_eq!(results, [(7, Some("héllo".to_string())), (7, None)]);
    let beats: Vec<f64> = sim
        .llm_text
        .iter()
        .filter(|(_, text)| text.is_empty())
        .map(|(at, _)| sim.clock.secs(*at))
        .collect();
    assert_eq!(
        secs(&beats),
        ["10.030", "20.030"],
        "the empty-text heartbeat every 10 s"
    );
}

#[test]
fn parts_of_two_large_results_are_interleaved_fairly() {
    let mut sim = ready(HubProtocol::Json);
    // 6 parts each; the first 4 of `a` fill the window before `b` has finished.
    let big = serde_json::json!({ "data": "z".repeat(6 * 1024 * 1024 - 100) });
    sim.behaviours.insert(
        "big".to_string(),
        Behaviour::Finish(Duration::ZERO, Ok(big)),
    );
    sim.gateway_call(execute("a", "big"));
    sim.gateway_call(execute("b", "big"));
    sim.run_for(Duration::from_secs(1));
    let order: Vec<String> = sim
        .results
        .iter()
        .map(|(_, r)| format!("{}{}", r.command_id, r.part_index.unwrap_or(99)))
        .collect();
    assert_eq!(
        order,
        ["a0", "a1", "a2", "a3", "a4", "b0", "a5", "b1", "b2", "b3", "b4", "b5"]
            .map(String::from)
            .to_vec(),
        "once the window opens, the two results take turns"
    );
}

#[test]
fn an_unauthorized_upgrade_waits_at_least_the_refusal_floor() {
    let mut sim = Sim::new(config(HubProtocol::Json), 6);
    sim.refuse_upgrade = Some(401);
    sim.run_for(Duration::from_secs(200));
    let delays: Vec<Duration> = sim.retry_delays();
    assert!(!delays.is_empty());
    assert!(
        delays.iter().all(|d| *d >= Duration::from_secs(30)),
        "{delays:?}"
    );
    assert!(
        delays.len() <= 6,
        "no fast loop: {} attempts in 200 s",
        delays.len()
    );
}

#[test]
fn results_kept_while_disconnected_beyond_the_bound_become_internal_errors() {
    let mut config = config(HubProtocol::Json);
    config.max_pending_result_bytes = 4096;
    let mut sim = Sim::new(config, 11);
    sim.run_for(Duration::from_secs(1));
    sim.behaviours.insert(
        "slow".to_string(),
        Behaviour::Finish(
            Duration::from_secs(2),
            Ok(serde_json::json!({ "data": "d".repeat(3000) })),
        ),
    );
    sim.gateway_call(execute("c1", "slow"));
    sim.gateway_call(execute("c2", "slow"));
    sim.run_for(Duration::from_millis(100));
    // Both finish while the node is cut off: 6 KB of results for a 4 KB bound.
    sim.partition();
    sim.run_for(Duration::from_secs(31)); // the node gives the silent link up at 30 s
    sim.heal();
    sim.run_for(Duration::from_secs(60));
    assert!(sim.has_event(
        |e| matches!(e, NodeEvent::ResultDiscarded { command_id } if command_id == "c1")
    ));
    let c1 = sim.results_for("c1");
    let error = c1[0].error.as_ref().expect("a stand-in error");
    assert_eq!(error.code, ErrorCode::InternalError);
    assert!(
        error.message.starts_with("result discarded"),
        "{}",
        error.message
    );
    assert!(
        sim.results_for("c2")[0].ok,
        "the newer result is kept whole"
    );
}
