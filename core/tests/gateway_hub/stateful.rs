//! Stateful reconnect: sequence ids, Acks, the replay buffer, detaching and resuming.

use super::*;
use nodelink_core::gateway::hub::{ConnState, HubPeerError, HubUsageError, CLOSE_PROTOCOL_ERROR};

const STATEFUL: &str = "negotiateVersion=1&useStatefulReconnect=true";

/// A stateful connection on socket `conn`, negotiated, opened and handshaken at `secs`.
fn stateful(sim: &mut Sim, secs: f64, conn: u64, protocol: HubProtocol) -> String {
    let token = sim.negotiate_token(secs, STATEFUL);
    sim.open(secs, conn, &format!("id={token}")).unwrap();
    let step = sim.frame(secs, conn, handshake(protocol, 2));
    assert_eq!(
        step.events,
        vec![HubServerEvent::Connected {
            conn: ConnId(conn),
            node: NODE.into(),
            protocol,
            stateful: true
        }]
    );
    token
}

fn call_count(step: &Step) -> usize {
    step.events
        .iter()
        .filter(|e| matches!(e, HubServerEvent::Call { .. }))
        .count()
}

fn command_ids(messages: &[HubMessage]) -> Vec<String> {
    messages
        .iter()
        .filter_map(|m| match m {
            HubMessage::Invocation(invocation) => {
                match GatewayCall::from_invocation(invocation).unwrap() {
                    GatewayCall::ExecuteCommand(dto) => Some(dto.command_id),
                    _ => None,
                }
            }
            _ => None,
        })
        .collect()
}

#[test]
fn stateful_reconnect_needs_version_2_and_a_grant_from_negotiate() {
    let mut sim = Sim::new();
    let token = sim.negotiate_token(0.0, STATEFUL);
    sim.open(0.0, 1, &format!("id={token}")).unwrap();
    let step = sim.frame(0.0, 1, handshake(HubProtocol::Json, 1));
    assert!(matches!(
        step.events[0],
        HubServerEvent::Connected {
            stateful: false,
            ..
        }
    ));
    sim.open(0.0, 2, "").unwrap();
    let step = sim.frame(0.0, 2, handshake(HubProtocol::Json, 2));
    assert!(matches!(
        step.events[0],
        HubServerEvent::Connected {
            stateful: false,
            ..
        }
    ));
    assert!(!sim.server.is_resumable(ConnId(1)));
    assert!(!sim.server.is_resumable(ConnId(2)));
}

#[test]
fn received_messages_are_acknowledged_a_second_later() {
    let mut sim = Sim::new();
    stateful(&mut sim, 0.0, 1, HubProtocol::Json);
    sim.node_sends(
        5.0,
        1,
        HubProtocol::Json,
        &[heartbeat(HubProtocol::Json), HubMessage::Ping],
    );
    assert_eq!(sim.poll_timeout_secs(), Some(6.0));
    assert_eq!(
        sim.timeout(6.0).texts(ConnId(1)),
        vec!["{\"type\":8,\"sequenceId\":1}\\x1e"]
    );
    let two = [heartbeat(HubProtocol::Json), heartbeat(HubProtocol::Json)];
    sim.node_sends(6.5, 1, HubProtocol::Json, &two);
    assert!(sim.timeout(7.499).is_empty());
    assert_eq!(
        sim.timeout(7.5).texts(ConnId(1)),
        vec!["{\"type\":8,\"sequenceId\":3}\\x1e"]
    );
    // Nothing new: no Ack.
    assert!(sim.timeout(8.5).is_empty());
}

#[test]
fn a_messagepack_ack_is_binary() {
    let mut sim = Sim::new();
    stateful(&mut sim, 0.0, 1, HubProtocol::MessagePack);
    sim.node_sends(
        1.0,
        1,
        HubProtocol::MessagePack,
        &[heartbeat(HubProtocol::MessagePack)],
    );
    assert_eq!(
        sim.timeout(2.0).frames(ConnId(1)),
        vec![WsFrame::Binary(vec![0x03, 0x92, 0x08, 0x01])]
    );
}

#[test]
fn stateful_reconnect_replays_unacked_messages() {
    let mut sim = Sim::new();
    let token = stateful(&mut sim, 0.0, 1, HubProtocol::Json);
    let now = sim.at(1.0);
    for id in ["cmd_1", "cmd_2", "cmd_3"] {
        sim.server.send(now, ConnId(1), &execute(id)).unwrap();
    }
    assert_eq!(sim.drain().frames(ConnId(1)).len(), 1);
    let step = sim.node_sends(
        2.0,
        1,
        HubProtocol::Json,
        &[
            HubMessage::Ack { sequence_id: 1 },
            heartbeat(HubProtocol::Json),
        ],
    );
    assert_eq!(call_count(&step), 1);

    let step = sim.closed(3.0, 1, None);
    assert!(step.out.is_empty());
    assert_eq!(
        disconnects(&step),
        vec![(
            ConnId(1),
            DisconnectReason::SocketClosed { code: None },
            true
        )]
    );
    assert_eq!(sim.server.state_of(ConnId(1)), Some(ConnState::Detached));
    assert_eq!(sim.poll_timeout_secs(), Some(33.0));

    // Sent while the node is away: kept for the replay.
    assert!(sim.send(4.0, 1, &execute("cmd_4")).is_empty());

    let step = sim.open(5.0, 2, &format!("id={token}")).unwrap();
    assert_eq!(
        step.events,
        vec![HubServerEvent::Reconnected {
            conn: ConnId(2),
            previous: ConnId(1),
            node: NODE.into()
        }]
    );
    let sent = step.messages(ConnId(2), HubProtocol::Json);
    assert_eq!(sent[0], HubMessage::Sequence { sequence_id: 2 });
    assert_eq!(command_ids(&sent[1..]), ["cmd_2", "cmd_3", "cmd_4"]);
    assert_eq!(sim.server.state_of(ConnId(2)), Some(ConnState::Open));
    assert_eq!(sim.server.state_of(ConnId(1)), None);
    assert_eq!(
        sim.server.send(sim.at(5.0), ConnId(1), &execute("x")),
        Err(HubUsageError::UnknownConnection(ConnId(1)))
    );

    // The node replays from its first unacknowledged message: the heartbeat already received
    // is dropped, the new one is acted on.
    let step = sim.node_sends(
        5.5,
        2,
        HubProtocol::Json,
        &[
            HubMessage::Sequence { sequence_id: 1 },
            heartbeat(HubProtocol::Json),
            heartbeat(HubProtocol::Json),
        ],
    );
    assert_eq!(call_count(&step), 1);
    assert_eq!(step.events.len(), 1, "{:?}", step.events);
    assert_eq!(
        sim.timeout(6.0).texts(ConnId(2)),
        vec!["{\"type\":8,\"sequenceId\":2}\\x1e"]
    );
    // The node acknowledges the replay: the buffer empties.
    sim.node_sends(
        7.0,
        2,
        HubProtocol::Json,
        &[HubMessage::Ack { sequence_id: 4 }],
    );
    assert_eq!(sim.server.replay_buffer_len(ConnId(2)), 0);
}

#[test]
fn stateful_reconnect_window_expires() {
    let mut sim = Sim::new();
    let token = stateful(&mut sim, 0.0, 1, HubProtocol::Json);
    sim.closed(3.0, 1, Some(1006));
    assert!(sim.timeout(32.999).is_empty());
    let step = sim.timeout(33.0);
    assert!(step.out.is_empty());
    assert_eq!(
        disconnects(&step),
        vec![(ConnId(1), DisconnectReason::ReconnectWindowExpired, false)]
    );
    assert_eq!(sim.poll_timeout_secs(), None);
    assert_eq!(
        sim.open(34.0, 2, &format!("id={token}"))
            .unwrap_err()
            .status,
        404
    );
}

#[test]
fn a_sequence_beyond_the_next_expected_id_closes_the_connection() {
    let mut sim = Sim::new();
    let token = stateful(&mut sim, 0.0, 1, HubProtocol::Json);
    sim.node_sends(1.0, 1, HubProtocol::Json, &[heartbeat(HubProtocol::Json)]);
    sim.closed(2.0, 1, None);
    sim.open(3.0, 2, &format!("id={token}")).unwrap();
    let step = sim.node_sends(
        4.0,
        2,
        HubProtocol::Json,
        &[HubMessage::Sequence { sequence_id: 5 }],
    );
    let error = HubPeerError::SequenceTooHigh {
        sequence_id: 5,
        expected: 2,
    };
    assert_eq!(
        step.events[0],
        HubServerEvent::Misbehaved {
            conn: ConnId(2),
            node: NODE.into(),
            error: error.clone()
        }
    );
    let reason =
        "Connection closed with an error: Sequence 5 is beyond the next expected id 2".to_owned();
    assert_eq!(
        step.texts(ConnId(2)),
        vec![format!("{{\"type\":7,\"error\":\"{reason}\"}}\\x1e")]
    );
    assert_eq!(
        step.closes(),
        vec![(ConnId(2), CLOSE_PROTOCOL_ERROR, reason)]
    );
    assert_eq!(
        disconnects(&step),
        vec![(ConnId(2), DisconnectReason::ProtocolError(error), false)]
    );
}

#[test]
fn messages_before_the_sequence_of_a_resumed_socket_are_dropped() {
    let mut sim = Sim::new();
    let token = stateful(&mut sim, 0.0, 1, HubProtocol::MessagePack);
    sim.closed(1.0, 1, None);
    sim.open(2.0, 2, &format!("id={token}")).unwrap();
    let hb = heartbeat(HubProtocol::MessagePack);
    let step = sim.node_sends(3.0, 2, HubProtocol::MessagePack, std::slice::from_ref(&hb));
    assert_eq!(
        step.events,
        vec![HubServerEvent::Misbehaved {
            conn: ConnId(2),
            node: NODE.into(),
            error: HubPeerError::BeforeSequence {
                message: "Invocation"
            }
        }]
    );
    let step = sim.node_sends(
        3.5,
        2,
        HubProtocol::MessagePack,
        &[HubMessage::Sequence { sequence_id: 1 }, hb],
    );
    assert_eq!(call_count(&step), 1);
}

#[test]
fn a_full_replay_buffer_ends_a_detached_connection() {
    let mut sim = Sim::with(HubServerConfig {
        reconnect_buffer_bytes: 350,
        ..HubServerConfig::default()
    });
    stateful(&mut sim, 0.0, 1, HubProtocol::Json);
    sim.closed(1.0, 1, None);
    assert!(sim.send(2.0, 1, &execute("cmd_1")).is_empty());
    assert!(sim.send(2.0, 1, &execute("cmd_2")).is_empty());
    let step = sim.send(2.0, 1, &execute("cmd_3"));
    let [(conn, DisconnectReason::ReplayBufferFull { bytes, limit: 350 }, false)]: [_; 1] =
        disconnects(&step).try_into().unwrap()
    else {
        panic!("{step:?}")
    };
    assert_eq!(conn, ConnId(1));
    assert!(bytes > 350);
    assert_eq!(sim.server.connection_count(), 0);
}

#[test]
fn a_full_replay_buffer_on_a_live_socket_makes_the_connection_non_resumable() {
    let mut sim = Sim::with(HubServerConfig {
        reconnect_buffer_bytes: 350,
        ..HubServerConfig::default()
    });
    let token = stateful(&mut sim, 0.0, 1, HubProtocol::Json);
    for id in ["cmd_1", "cmd_2", "cmd_3"] {
        assert_eq!(sim.send(1.0, 1, &execute(id)).frames(ConnId(1)).len(), 1);
    }
    assert!(!sim.server.is_resumable(ConnId(1)));
    assert_eq!(sim.server.replay_buffer_len(ConnId(1)), 0);
    // The connection goes on (and keeps acknowledging), but a lost socket now ends it.
    sim.node_sends(2.0, 1, HubProtocol::Json, &[heartbeat(HubProtocol::Json)]);
    assert_eq!(
        sim.timeout(3.0).texts(ConnId(1)),
        vec!["{\"type\":8,\"sequenceId\":1}\\x1e"]
    );
    let step = sim.closed(4.0, 1, None);
    assert_eq!(
        disconnects(&step),
        vec![(
            ConnId(1),
            DisconnectReason::SocketClosed { code: None },
            false
        )]
    );
    assert_eq!(
        sim.open(5.0, 2, &format!("id={token}")).unwrap_err().status,
        404
    );
}

#[test]
fn a_new_socket_takes_over_a_stateful_connection_whose_old_socket_looks_alive() {
    let mut sim = Sim::new();
    let token = stateful(&mut sim, 0.0, 1, HubProtocol::Json);
    let step = sim.open(1.0, 2, &format!("id={token}")).unwrap();
    assert_eq!(
        step.closes(),
        vec![(ConnId(1), 1000, "replaced by a new socket".into())]
    );
    assert_eq!(
        disconnects(&step),
        vec![(ConnId(1), DisconnectReason::Replaced, true)]
    );
    assert!(matches!(
        step.events[1],
        HubServerEvent::Reconnected {
            conn: ConnId(2),
            previous: ConnId(1),
            ..
        }
    ));
    assert_eq!(
        step.texts(ConnId(2)),
        vec!["{\"type\":9,\"sequenceId\":1}\\x1e"]
    );
    // The old socket's late frames and close are ignored.
    assert!(sim
        .node_sends(1.5, 1, HubProtocol::Json, &[heartbeat(HubProtocol::Json)])
        .is_empty());
    assert!(sim.closed(1.6, 1, None).is_empty());
}

#[test]
fn a_clean_close_of_the_socket_ends_a_stateful_connection() {
    let mut sim = Sim::new();
    stateful(&mut sim, 0.0, 1, HubProtocol::Json);
    let step = sim.closed(1.0, 1, Some(1000));
    assert_eq!(
        disconnects(&step),
        vec![(
            ConnId(1),
            DisconnectReason::SocketClosed { code: Some(1000) },
            false
        )]
    );
}

#[test]
fn a_client_timeout_detaches_a_stateful_connection() {
    let mut sim = Sim::new();
    stateful(&mut sim, 0.0, 1, HubProtocol::Json);
    sim.timeout(15.0);
    let step = sim.timeout(30.0);
    assert_eq!(
        step.closes(),
        vec![(ConnId(1), 1000, "client timeout".into())]
    );
    assert_eq!(
        disconnects(&step),
        vec![(ConnId(1), DisconnectReason::ClientTimeout, true)]
    );
    assert_eq!(sim.poll_timeout_secs(), Some(60.0));
}

#[test]
fn an_ack_beyond_what_was_sent_is_misbehaviour() {
    let mut sim = Sim::new();
    stateful(&mut sim, 0.0, 1, HubProtocol::Json);
    sim.send(1.0, 1, &execute("cmd_1"));
    let step = sim.node_sends(
        2.0,
        1,
        HubProtocol::Json,
        &[HubMessage::Ack { sequence_id: 5 }],
    );
    assert_eq!(
        step.events,
        vec![HubServerEvent::Misbehaved {
            conn: ConnId(1),
            node: NODE.into(),
            error: HubPeerError::AckBeyondSent {
                sequence_id: 5,
                last_sent: 1
            }
        }]
    );
    assert_eq!(sim.server.replay_buffer_len(ConnId(1)), 0);
}

#[test]
fn undecodable_records_keep_their_sequence_id_or_close_when_their_type_is_unknown() {
    let mut sim = Sim::new();
    stateful(&mut sim, 0.0, 1, HubProtocol::Json);
    // An Invocation with a bad target still took sequence id 1 at the node.
    let step = sim.frame(
        1.0,
        1,
        text("{\"type\":1,\"target\":5,\"arguments\":[]}\u{1e}"),
    );
    assert!(matches!(
        step.events[..],
        [HubServerEvent::Misbehaved {
            error: HubPeerError::Decode(_),
            ..
        }]
    ));
    assert_eq!(
        sim.timeout(2.0).texts(ConnId(1)),
        vec!["{\"type\":8,\"sequenceId\":1}\\x1e"]
    );
    // A record that is not even an object: the ids can no longer be trusted.
    let step = sim.frame(3.0, 1, text("nonsense\u{1e}"));
    assert_eq!(step.closes()[0].1, CLOSE_PROTOCOL_ERROR);
    assert_eq!(disconnects(&step).len(), 1);
}
