//! Real node machines against the real gateway machine, at exact simulated instants: pairing,
//! approval, connection, heartbeats, commands, offline detection, busy retries, revoke, and a
//! gateway killed and restarted from its store.
mod support;

use std::time::Duration;

use nodelink_core::gateway::dispatch::DispatchRequest;
use nodelink_core::gateway::{GatewayConfig, GatewayEvent};
use nodelink_core::node::commands::{CommandLimits, CommandSpec};
use nodelink_core::node::{Dialect, Identity, NodeConfig, NodeEvent, NodeState, Transport};
use nodelink_core::wire::dto::{CommandError, ErrorCode};
use nodelink_core::wire::signalr::HubProtocol;
use support::world::{Exec, World, GATEWAY_URL};

fn node_config(protocol: HubProtocol, node_id: &str) -> NodeConfig {
    let mut config = NodeConfig::new(
        GATEWAY_URL,
        Dialect::Hub {
            protocol,
            transport: Transport::WebSocket,
        },
        Identity::Unpaired {
            node_id: Some(node_id.to_string()),
        },
    );
    config.platform = "linux".to_string();
    config.version = "0.1.0".to_string();
    config.commands = vec![
        CommandSpec::new("system.info"),
        CommandSpec::new("slow"),
        CommandSpec::new("screen.capture").scope("screen.capture"),
    ];
    config.limits = CommandLimits {
        slots: 2,
        ..CommandLimits::default()
    };
    config
}

/// A world with one node paired (approved with `scopes`) and connected.
fn paired(protocol: HubProtocol, scopes: &[&str]) -> World {
    let mut world = World::new(GatewayConfig::new(GATEWAY_URL));
    world.add_node("n1", node_config(protocol, "n1"), 3);
    assert!(world.run_until(Duration::from_secs(5), |w| !w
        .gateway
        .pending_pairings(w.now)
        .is_empty()));
    let code = world.gateway.pending_pairings(world.now)[0].code.clone();
    let now = world.now;
    let scopes: Vec<String> = scopes.iter().map(|s| s.to_string()).collect();
    world
        .gateway
        .approve_pairing(now, &code, &scopes)
        .expect("a pending code");
    assert!(
        world.run_until(Duration::from_secs(10), |w| w.nodes[0].node.state()
            == NodeState::Ready)
    );
    world
}

fn dispatch(world: &mut World, command: &str) -> String {
    let now = world.now;
    world
        .gateway
        .dispatch(now, DispatchRequest::new("n1", command))
        .expect("dispatched")
}

#[test]
fn pair_approve_connect_heartbeat_and_run_a_command() {
    for protocol in [HubProtocol::Json, HubProtocol::MessagePack] {
        let mut world = paired(protocol, &[]);
        assert!(world.nodes[0]
            .events
            .iter()
            .any(|(_, e)| matches!(e, NodeEvent::PairingCode(_))));
        world.run_for(Duration::from_secs(1));
        let view = world.gateway.node(world.now, "n1").expect("known");
        assert!(view.online && view.connected, "{protocol:?}");
        assert_eq!(view.last_heartbeat.expect("a heartbeat").platform, "linux");
        let id = dispatch(&mut world, "system.info");
        world.run_for(Duration::from_secs(1));
        let outcome = world.outcome(&id).expect("finished");
        assert!(outcome.result.ok, "{protocol:?}");
        assert_eq!(world.finished_count(&id), 1);
    }
}

#[test]
fn gateway_marks_offline_at_exactly_90s() {
    let mut world = paired(HubProtocol::Json, &[]);
    world.run_for(Duration::from_secs(40));
    // Heartbeats arrive every 30 s; the node falls silent after the one at about 30 s.
    let last = world
        .gateway
        .node(world.now, "n1")
        .and_then(|v| v.last_contact_unix_ms)
        .expect("a heartbeat");
    world.nodes[0].cut = true;
    world.run_for(Duration::from_secs(120));
    let (offline_at, _) = world
        .gateway_events
        .iter()
        .find(|(_, e)| matches!(e, GatewayEvent::NodeOffline { .. }))
        .expect("offline");
    let view_unix = |at: std::time::Instant| {
        1_764_000_000_000 + at.duration_since(world.clock.origin).as_millis() as u64
    };
    assert_eq!(
        view_unix(*offline_at) - last,
        90_000,
        "offline exactly 90 s after the last heartbeat"
    );
}

#[test]
fn a_command_outside_the_granted_scopes_fails_at_once() {
    let mut world = paired(HubProtocol::Json, &["system.*"]);
    let now = world.now;
    let refused = world.gateway.dispatch(
        now,
        DispatchRequest::new("n1", "screen.capture").scope("screen.capture"),
    );
    assert!(refused.is_err(), "{refused:?}");
    let ok = world
        .gateway
        .dispatch(
            now,
            DispatchRequest::new("n1", "system.info").scope("system.info"),
        )
        .expect("allowed");
    world.run_for(Duration::from_secs(1));
    assert!(world.outcome(&ok).expect("finished").result.ok);
}

#[test]
fn busy_result_is_retried_after_retry_after_ms() {
    let mut world = paired(HubProtocol::Json, &[]);
    let busy = CommandError {
        code: ErrorCode::Busy,
        message: "GPU full".to_string(),
        details: None,
        retry_after_ms: Some(2000),
    };
    world.nodes[0].execs.insert(
        "slow".to_string(),
        Exec::Finish(
            Duration::from_millis(100),
            vec![Err(busy), Ok(serde_json::json!("done"))],
        ),
    );
    let id = dispatch(&mut world, "slow");
    world.run_for(Duration::from_secs(5));
    let runs: Vec<f64> = world.nodes[0]
        .executed
        .iter()
        .map(|(at, _)| world.clock.secs(*at))
        .collect();
    assert_eq!(runs.len(), 2, "ran again after the busy answer");
    assert!(
        runs[1] - runs[0] >= 2.0,
        "not before retryAfterMs: {runs:?}"
    );
    let outcome = world.outcome(&id).expect("finished");
    assert!(outcome.result.ok);
    assert_eq!(world.finished_count(&id), 1, "the caller sees one outcome");
}

#[test]
fn revoke_cancels_pending_commands_and_the_node_stops_for_good() {
    let mut world = paired(HubProtocol::MessagePack, &[]);
    world.nodes[0].execs.insert("slow".to_string(), Exec::Hang);
    let running = dispatch(&mut world, "slow");
    let also = dispatch(&mut world, "slow");
    let queued = dispatch(&mut world, "slow");
    world.run_for(Duration::from_secs(1));
    let now = world.now;
    world
        .gateway
        .revoke(now, "n1", "stolen laptop")
        .expect("known node");
    world.run_for(Duration::from_secs(120));
    for id in [&running, &also, &queued] {
        let outcome = world.outcome(id).expect("ended");
        assert_eq!(
            outcome.result.error.as_ref().map(|e| e.code.clone()),
            Some(ErrorCode::Cancelled),
            "{id}"
        );
        assert_eq!(world.finished_count(id), 1);
    }
    assert_eq!(world.nodes[0].node.state(), NodeState::Revoked);
    assert!(world.nodes[0].events.iter().any(
        |(_, e)| matches!(e, NodeEvent::TokenRevoked { reason } if reason == "stolen laptop")
    ));
}

#[test]
fn restart_from_persisted_state_loses_no_command() {
    let mut world = paired(HubProtocol::Json, &[]);
    // The node is cut off; a command is queued for it; the gateway dies and comes back.
    world.nodes[0].cut = true;
    world.run_for(Duration::from_secs(100));
    let now = world.now;
    let id = world
        .gateway
        .dispatch(
            now,
            DispatchRequest::new("n1", "system.info").timeout(Duration::from_secs(600)),
        )
        .expect("queued");
    world.run_for(Duration::from_secs(1));
    world.restart_gateway();
    world.nodes[0].cut = false;
    assert!(world.run_until(Duration::from_secs(180), |w| w.outcome(&id).is_some()));
    let outcome = world.outcome(&id).expect("finished");
    assert!(
        outcome.result.ok,
        "{:?}\n{}",
        outcome.result,
        world.transcript.join("\n")
    );
    assert_eq!(world.nodes[0].executed.len(), 1, "ran exactly once");
    assert_eq!(world.finished_count(&id), 1);
}

#[test]
fn a_gateway_killed_during_a_command_completes_it_once_after_the_node_reconnects() {
    let mut world = paired(HubProtocol::Json, &[]);
    world.nodes[0].execs.insert(
        "slow".to_string(),
        Exec::Finish(Duration::from_secs(3), vec![Ok(serde_json::json!("done"))]),
    );
    let id = dispatch(&mut world, "slow");
    world.run_for(Duration::from_secs(1));
    world.restart_gateway();
    assert!(world.run_until(Duration::from_secs(120), |w| w.outcome(&id).is_some()));
    assert!(world.outcome(&id).expect("finished").result.ok);
    assert_eq!(
        world.nodes[0].executed.len(),
        1,
        "the redelivery did not run it again"
    );
    world.run_for(Duration::from_secs(30));
    assert_eq!(world.finished_count(&id), 1);
}

#[test]
fn a_polling_node_leases_commands_posts_results_and_heartbeats_over_rest() {
    let mut world = World::new(GatewayConfig::new(GATEWAY_URL));
    let mut config = node_config(HubProtocol::Json, "p1");
    config.dialect = Dialect::Hub {
        protocol: HubProtocol::Json,
        transport: Transport::Polling,
    };
    world.add_node("p1", config, 9);
    assert!(world.run_until(Duration::from_secs(5), |w| !w
        .gateway
        .pending_pairings(w.now)
        .is_empty()));
    let code = world.gateway.pending_pairings(world.now)[0].code.clone();
    let now = world.now;
    world
        .gateway
        .approve_pairing(now, &code, &[])
        .expect("pending");
    assert!(
        world.run_until(Duration::from_secs(10), |w| w.nodes[0].node.state()
            == NodeState::Polling)
    );
    world.run_for(Duration::from_secs(1));
    let view = world.gateway.node(world.now, "p1").expect("known");
    assert!(view.online, "the REST heartbeat keeps it online");
    assert!(!view.connected, "no hub connection");
    let now = world.now;
    let id = world
        .gateway
        .dispatch(now, DispatchRequest::new("p1", "system.info"))
        .expect("queued for the next poll");
    assert!(world.run_until(Duration::from_secs(10), |w| w.outcome(&id).is_some()));
    assert!(world.outcome(&id).expect("finished").result.ok);
    assert_eq!(world.nodes[0].executed.len(), 1);
}
