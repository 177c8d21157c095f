//! The handshake, keep-alive, client timeout and the ways a connection ends.

use super::*;
use nodelink_core::gateway::hub::{
    ConnState, HubPeerError, HubServerConfigError, HubUsageError, CLOSE_PROTOCOL_ERROR,
};
use nodelink_core::wire::contract::NodeCall;
use nodelink_core::wire::signalr::CompletionOutcome;

#[test]
fn handshake_timeout_closes_at_15s() {
    let mut sim = Sim::new();
    sim.open(0.0, 1, "").unwrap();
    assert_eq!(sim.poll_timeout_secs(), Some(15.0));
    assert!(sim.timeout(14.999).is_empty());
    let step = sim.timeout(15.0);
    assert_eq!(
        step.closes(),
        vec![(ConnId(1), 1000, "handshake timeout".into())]
    );
    assert_eq!(
        disconnects(&step),
        vec![(ConnId(1), DisconnectReason::HandshakeTimeout, false)]
    );
    assert_eq!(sim.server.connection_count(), 0);
    assert_eq!(sim.poll_timeout_secs(), None);
}

#[test]
fn a_handshake_split_across_frames_is_reassembled() {
    let mut sim = Sim::new();
    sim.open(0.0, 1, "").unwrap();
    assert!(sim.frame(1.0, 1, text("{\"protocol\":\"js")).is_empty());
    let step = sim.frame(2.0, 1, text("on\",\"version\":1}\u{1e}"));
    assert_eq!(step.texts(ConnId(1)), vec!["{}\\x1e"]);
    assert_eq!(step.events.len(), 1);
}

#[test]
fn an_unknown_protocol_is_refused_and_the_socket_closed() {
    let mut sim = Sim::new();
    sim.open(0.0, 1, "").unwrap();
    let step = sim.frame(1.0, 1, text("{\"protocol\":\"xml\",\"version\":1}\u{1e}"));
    assert_eq!(
        step.texts(ConnId(1)),
        vec!["{\"error\":\"The protocol 'xml' is not supported.\"}\\x1e"]
    );
    assert_eq!(
        step.closes(),
        vec![(ConnId(1), 1000, "handshake refused".into())]
    );
    assert_eq!(
        disconnects(&step),
        vec![(
            ConnId(1),
            DisconnectReason::HandshakeRefused("The protocol 'xml' is not supported.".into()),
            false
        )]
    );
}

#[test]
fn a_version_above_2_is_refused() {
    let mut sim = Sim::new();
    sim.open(0.0, 1, "").unwrap();
    let step = sim.frame(1.0, 1, handshake(HubProtocol::MessagePack, 3));
    assert_eq!(
        step.texts(ConnId(1)),
        vec![
            "{\"error\":\"The server does not support version 3 of the 'messagepack' protocol.\"}\\x1e"
        ]
    );
    assert_eq!(step.closes().len(), 1);
}

#[test]
fn an_invalid_handshake_request_is_misbehaviour_and_closes_with_1002() {
    let mut sim = Sim::new();
    sim.open(0.0, 1, "").unwrap();
    let step = sim.frame(1.0, 1, text("{\"version\":1}\u{1e}"));
    assert_eq!(
        step.texts(ConnId(1)),
        vec!["{\"error\":\"handshake request message is missing the required field `protocol`\"}\\x1e"]
    );
    assert_eq!(
        step.closes(),
        vec![(
            ConnId(1),
            CLOSE_PROTOCOL_ERROR,
            "invalid handshake request".into()
        )]
    );
    assert!(matches!(
        &step.events[0],
        HubServerEvent::Misbehaved {
            error: HubPeerError::Decode(_),
            ..
        }
    ));
    assert_eq!(disconnects(&step).len(), 1);
}

#[test]
fn messagepack_connection_round_trips_a_heartbeat() {
    let mut sim = Sim::new();
    sim.connected(0.0, 1, HubProtocol::MessagePack);
    let step = sim.node_sends(
        1.0,
        1,
        HubProtocol::MessagePack,
        &[heartbeat(HubProtocol::MessagePack)],
    );
    assert_eq!(
        step.events,
        vec![HubServerEvent::Call {
            conn: ConnId(1),
            node: NODE.into(),
            invocation_id: None,
            call: NodeCall::Heartbeat(heartbeat_dto())
        }]
    );
    assert!(step.out.is_empty(), "a heartbeat is not answered");
    let step = sim.send(2.0, 1, &execute("cmd_1"));
    let frames = step.frames(ConnId(1));
    assert!(matches!(frames.as_slice(), [WsFrame::Binary(_)]));
    let sent = step.messages(ConnId(1), HubProtocol::MessagePack);
    let HubMessage::Invocation(invocation) = &sent[0] else {
        panic!("{sent:?}")
    };
    assert_eq!(
        invocation.invocation_id, None,
        "gateway calls are fire-and-forget"
    );
    assert_eq!(
        GatewayCall::from_invocation(invocation).unwrap(),
        execute("cmd_1")
    );
}

#[test]
fn records_that_follow_the_handshake_in_its_frame_are_decoded_with_the_protocol() {
    for protocol in BOTH {
        let mut sim = Sim::new();
        sim.open(0.0, 1, "").unwrap();
        let mut bytes = match handshake(protocol, 1) {
            WsFrame::Text(t) => t.into_bytes(),
            _ => unreachable!(),
        };
        protocol.encode(&heartbeat(protocol), &mut bytes).unwrap();
        let step = sim.frame(1.0, 1, WsFrame::Binary(bytes));
        assert!(matches!(step.events[0], HubServerEvent::Connected { .. }));
        assert!(
            matches!(
                &step.events[1],
                HubServerEvent::Call {
                    call: NodeCall::Heartbeat(_),
                    ..
                }
            ),
            "{protocol:?}: {:?}",
            step.events
        );
    }
}

#[test]
fn ping_after_15s_without_sending() {
    let mut sim = Sim::new();
    sim.connected(0.0, 1, HubProtocol::Json);
    // The client keeps talking: only sending resets the keep-alive.
    sim.node_sends(10.0, 1, HubProtocol::Json, &[HubMessage::Ping]);
    assert_eq!(sim.poll_timeout_secs(), Some(15.0));
    assert!(sim.timeout(14.999).is_empty());
    let step = sim.timeout(15.0);
    assert_eq!(step.texts(ConnId(1)), vec!["{\"type\":6}\\x1e"]);
    // Something sent at 20 moves the next Ping to 35, not 30.
    sim.send(20.0, 1, &execute("cmd_1"));
    assert!(sim.timeout(30.0).is_empty());
    assert_eq!(
        sim.timeout(35.0).texts(ConnId(1)),
        vec!["{\"type\":6}\\x1e"]
    );
}

#[test]
fn client_dead_after_30s_without_receiving() {
    let mut sim = Sim::new();
    sim.connected(0.0, 1, HubProtocol::Json);
    sim.node_sends(10.0, 1, HubProtocol::Json, &[HubMessage::Ping]);
    assert_eq!(
        sim.timeout(15.0).texts(ConnId(1)),
        vec!["{\"type\":6}\\x1e"]
    );
    assert_eq!(
        sim.timeout(30.0).texts(ConnId(1)),
        vec!["{\"type\":6}\\x1e"]
    );
    assert!(sim.timeout(39.999).is_empty());
    let step = sim.timeout(40.0);
    assert_eq!(step.out.len(), 1, "{:?}", step.out);
    assert_eq!(
        step.closes(),
        vec![(ConnId(1), 1000, "client timeout".into())]
    );
    assert_eq!(
        disconnects(&step),
        vec![(ConnId(1), DisconnectReason::ClientTimeout, false)]
    );
    assert_eq!(sim.poll_timeout_secs(), None);
}

#[test]
fn a_dead_client_gets_no_last_ping_when_both_fall_due_at_once() {
    let mut sim = Sim::new();
    sim.connected(0.0, 1, HubProtocol::Json);
    assert_eq!(
        sim.timeout(15.0).texts(ConnId(1)),
        vec!["{\"type\":6}\\x1e"]
    );
    // 30 s: the keep-alive (15 s after the Ping) and the client timeout at the same instant.
    let step = sim.timeout(30.0);
    assert!(step.frames(ConnId(1)).is_empty(), "{:?}", step.out);
    assert_eq!(
        disconnects(&step),
        vec![(ConnId(1), DisconnectReason::ClientTimeout, false)]
    );
}

#[test]
fn websocket_ping_frames_prove_the_client_alive() {
    let mut sim = Sim::new();
    sim.connected(0.0, 1, HubProtocol::Json);
    assert!(sim.frame(29.0, 1, WsFrame::Ping(Vec::new())).is_empty());
    sim.timeout(30.0);
    assert_eq!(sim.server.state_of(ConnId(1)), Some(ConnState::Open));
    assert_eq!(disconnects(&sim.timeout(59.0)).len(), 1);
}

#[test]
fn a_close_from_the_node_ends_the_connection() {
    let mut sim = Sim::new();
    sim.connected(0.0, 1, HubProtocol::Json);
    let close = HubMessage::Close {
        error: Some("bye".into()),
        allow_reconnect: None,
    };
    // Nothing after the Close in the same frame is acted on.
    let step = sim.node_sends(
        1.0,
        1,
        HubProtocol::Json,
        &[close, heartbeat(HubProtocol::Json)],
    );
    assert_eq!(
        step.closes(),
        vec![(ConnId(1), 1000, "closed by the node".into())]
    );
    assert_eq!(
        step.events,
        vec![HubServerEvent::Disconnected {
            conn: ConnId(1),
            node: NODE.into(),
            reason: DisconnectReason::ClosedByNode {
                error: Some("bye".into())
            },
            will_resume: false
        }]
    );
}

#[test]
fn a_revocation_sends_the_call_and_the_close_in_one_frame_then_closes() {
    let mut sim = Sim::new();
    sim.connected(0.0, 1, HubProtocol::Json);
    let now = sim.at(1.0);
    let revoke = GatewayCall::RevokeAccess {
        reason: "admin_revoked".into(),
    };
    sim.server.send(now, ConnId(1), &revoke).unwrap();
    sim.server
        .close(now, ConnId(1), Some("admin_revoked".into()), false)
        .unwrap();
    let step = sim.drain();
    assert_eq!(
        step.texts(ConnId(1)),
        vec![
            "{\"type\":1,\"target\":\"RevokeAccess\",\"arguments\":[\"admin_revoked\"]}\\x1e\
             {\"type\":7,\"error\":\"admin_revoked\"}\\x1e"
        ]
    );
    assert_eq!(
        step.closes(),
        vec![(ConnId(1), 1000, "admin_revoked".into())]
    );
    assert!(matches!(
        step.out.last(),
        Some(HubServerOutput::CloseSocket { .. })
    ));
    assert_eq!(
        disconnects(&step),
        vec![(
            ConnId(1),
            DisconnectReason::ClosedByGateway {
                error: Some("admin_revoked".into())
            },
            false
        )]
    );
    // The connection is gone: frames on its socket are ignored, calls are misuse.
    assert!(sim
        .frame(2.0, 1, frame_of(HubProtocol::Json, &[HubMessage::Ping]))
        .is_empty());
    assert_eq!(
        sim.server.send(now, ConnId(1), &revoke),
        Err(HubUsageError::UnknownConnection(ConnId(1)))
    );
}

#[test]
fn a_close_that_allows_reconnecting_says_so() {
    let mut sim = Sim::new();
    sim.connected(0.0, 1, HubProtocol::MessagePack);
    let now = sim.at(1.0);
    sim.server
        .close(now, ConnId(1), Some("restart".into()), true)
        .unwrap();
    let step = sim.drain();
    assert_eq!(
        step.frames(ConnId(1)),
        vec![WsFrame::Binary(vec![
            0x0b, 0x93, 0x07, 0xa7, b'r', b'e', b's', b't', b'a', b'r', b't', 0xc3
        ])]
    );
    assert_eq!(step.closes(), vec![(ConnId(1), 1000, "restart".into())]);
}

#[test]
fn closing_before_the_handshake_only_closes_the_socket() {
    let mut sim = Sim::new();
    sim.open(0.0, 1, "").unwrap();
    let now = sim.at(1.0);
    sim.server.close(now, ConnId(1), None, false).unwrap();
    let step = sim.drain();
    assert_eq!(step.out.len(), 1);
    assert_eq!(
        step.closes(),
        vec![(ConnId(1), 1000, "closed by the gateway".into())]
    );
    assert_eq!(disconnects(&step).len(), 1);
}

#[test]
fn caller_misuse_is_an_error() {
    let mut sim = Sim::new();
    let now = sim.at(0.0);
    let unknown = Err(HubUsageError::UnknownConnection(ConnId(9)));
    assert_eq!(sim.server.send(now, ConnId(9), &execute("c")), unknown);
    assert_eq!(
        sim.server
            .complete(now, ConnId(9), "1".into(), CompletionOutcome::Void),
        unknown
    );
    assert_eq!(sim.server.close(now, ConnId(9), None, false), unknown);
    sim.open(0.0, 1, "").unwrap();
    assert_eq!(
        sim.server.send(now, ConnId(1), &execute("c")),
        Err(HubUsageError::NotOpen(ConnId(1)))
    );
    assert!(sim.drain().is_empty());
    let zero = HubServerConfig {
        keep_alive: std::time::Duration::ZERO,
        ..HubServerConfig::default()
    };
    assert_eq!(
        HubServer::new(zero).unwrap_err(),
        HubServerConfigError::Zero("keep_alive")
    );
}

#[test]
fn close_reasons_are_cut_to_123_bytes_on_a_character_boundary() {
    let mut sim = Sim::new();
    sim.connected(0.0, 1, HubProtocol::Json);
    let now = sim.at(1.0);
    let long = "é".repeat(100);
    sim.server.close(now, ConnId(1), Some(long), false).unwrap();
    let (_, _, reason) = sim.drain().closes().remove(0);
    assert_eq!(reason.len(), 122);
}

#[test]
fn a_socket_closed_by_the_shell_ends_a_plain_connection_without_output() {
    let mut sim = Sim::new();
    sim.connected(0.0, 1, HubProtocol::Json);
    let step = sim.closed(1.0, 1, Some(1006));
    assert!(step.out.is_empty());
    assert_eq!(
        disconnects(&step),
        vec![(
            ConnId(1),
            DisconnectReason::SocketClosed { code: Some(1006) },
            false
        )]
    );
    // Reported twice: the second is ignored.
    assert!(sim.closed(1.0, 1, None).is_empty());
}
