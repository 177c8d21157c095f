//! What the link does with what it receives: calls, Completions, Close, streams, garbage, splits.
use super::*;

#[test]
fn records_split_across_frames_are_reassembled() {
    for protocol in BOTH {
        let mut sim = Sim::ready(protocol);
        let mut bytes = Vec::new();
        protocol
            .encode(&execute(protocol, "cmd_1"), &mut bytes)
            .unwrap();
        protocol
            .encode(&execute(protocol, "cmd_2"), &mut bytes)
            .unwrap();
        let mut seen = Vec::new();
        // One byte per frame, in the frame kind of the protocol.
        for (i, byte) in bytes.iter().enumerate() {
            let frame = match protocol {
                HubProtocol::Json => WsFrame::Text(String::from_utf8(vec![*byte]).unwrap()),
                HubProtocol::MessagePack => WsFrame::Binary(vec![*byte]),
            };
            let out = sim.frame(5.0 + i as f64 / 1024.0, frame);
            seen.extend(events(&out));
        }
        assert_eq!(
            seen,
            vec![
                HubEvent::Call(GatewayCall::ExecuteCommand(execute_dto("cmd_1"))),
                HubEvent::Call(GatewayCall::ExecuteCommand(execute_dto("cmd_2"))),
            ],
            "{protocol:?}"
        );
    }
}

#[test]
fn every_gateway_call_becomes_an_event() {
    for protocol in BOTH {
        let mut sim = Sim::ready(protocol);
        let calls = [
            GatewayCall::ExecuteCommand(execute_dto("cmd_1")),
            GatewayCall::CancelCommand(nodelink_core::wire::dto::CancelCommandDto {
                command_id: "cmd_1".to_owned(),
                reason: Some("user_cancelled".to_owned()),
            }),
            GatewayCall::RefreshScopes(vec!["screen.capture".to_owned()]),
            GatewayCall::RevokeAccess {
                reason: "admin_revoked".to_owned(),
            },
        ];
        let messages: Vec<HubMessage> = calls
            .iter()
            .map(|c| c.to_message(protocol, None).unwrap())
            .collect();
        let out = sim.gateway(5.0, &messages);
        let expected: Vec<HubEvent> = calls.iter().cloned().map(HubEvent::Call).collect();
        assert_eq!(events(&out), expected, "{protocol:?}");
        assert_eq!(frames(&out), vec![], "fire-and-forget: no answer");
    }
}

#[test]
fn a_gateway_call_with_an_invocation_id_gets_a_void_completion() {
    let mut sim = Sim::ready(HubProtocol::Json);
    let message = GatewayCall::ExecuteCommand(execute_dto("cmd_1"))
        .to_message(HubProtocol::Json, Some("g7".to_owned()))
        .unwrap();
    let out = sim.gateway(5.0, &[message]);
    assert_eq!(
        events(&out),
        vec![HubEvent::Call(GatewayCall::ExecuteCommand(execute_dto(
            "cmd_1"
        )))]
    );
    assert_eq!(
        support::text(frames(&out)[0].as_bytes()),
        r#"{"type":3,"invocationId":"g7"}\x1e"#
    );
}

#[test]
fn unknown_target_with_id_gets_a_completion_error() {
    for protocol in BOTH {
        let mut sim = Sim::ready(protocol);
        let invocation = |id: Option<&str>| {
            HubMessage::Invocation(nodelink_core::wire::signalr::Invocation {
                headers: Headers::new(),
                invocation_id: id.map(str::to_owned),
                target: "Reboot".to_owned(),
                arguments: vec![],
                stream_ids: vec![],
            })
        };
        let out = sim.gateway(5.0, &[invocation(Some("9"))]);
        assert_eq!(
            events(&out),
            vec![HubEvent::PeerMisbehaved(PeerError::Contract(
                nodelink_core::wire::contract::ContractError::UnknownTarget {
                    target: "Reboot".to_owned()
                }
            ))]
        );
        assert_eq!(
            sent(protocol, &out),
            vec![completion(
                "9",
                CompletionOutcome::Error("Unknown hub method 'Reboot'".to_owned())
            )]
        );
        // Fire-and-forget: reported, never answered.
        let out = sim.gateway(6.0, &[invocation(None)]);
        assert_eq!(events(&out).len(), 1);
        assert_eq!(frames(&out), vec![]);
    }
}

#[test]
fn an_invalid_argument_is_reported_and_answered_when_it_has_an_id() {
    let mut sim = Sim::ready(HubProtocol::Json);
    let record = "{\"type\":1,\"invocationId\":\"5\",\"target\":\"ExecuteCommand\",\"arguments\":[{\"command\":\"x\"}]}\u{1e}";
    let out = sim.frame(5.0, WsFrame::Text(record.to_owned()));
    assert!(matches!(
        events(&out)[..],
        [HubEvent::PeerMisbehaved(PeerError::Contract(_))]
    ));
    match &sent(HubProtocol::Json, &out)[..] {
        [HubMessage::Completion {
            invocation_id,
            outcome: CompletionOutcome::Error(error),
            ..
        }] => {
            assert_eq!(invocation_id, "5");
            assert!(error.contains("commandId"), "{error}");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn an_undecodable_revoke_still_revokes() {
    let mut sim = Sim::ready(HubProtocol::Json);
    let record = "{\"type\":1,\"target\":\"revokeaccess\",\"arguments\":[42]}\u{1e}";
    let out = sim.frame(5.0, WsFrame::Text(record.to_owned()));
    let events = events(&out);
    assert!(matches!(
        events[0],
        HubEvent::PeerMisbehaved(PeerError::Contract(_))
    ));
    assert_eq!(
        events[1],
        HubEvent::Call(GatewayCall::RevokeAccess {
            reason: String::new()
        })
    );
}

#[test]
fn a_revoke_before_ready_is_reported_at_once_other_calls_wait() {
    let mut sim = Sim::new(HubProtocol::Json);
    sim.connect(0.0);
    sim.http(1.0, 200, NEGOTIATE_V1);
    sim.opened(2.0);
    sim.frame(3.0, handshake_ok());
    let revoke = GatewayCall::RevokeAccess {
        reason: "admin_revoked".to_owned(),
    };
    let out = sim.gateway(
        3.5,
        &[
            execute(HubProtocol::Json, "cmd_1"),
            revoke.to_message(HubProtocol::Json, None).unwrap(),
        ],
    );
    assert_eq!(events(&out), vec![HubEvent::Call(revoke)]);
}

#[test]
fn close_from_gateway_ends_the_link_with_its_reason() {
    for protocol in BOTH {
        for (error, allow_reconnect, expected_allow) in [
            (Some("revoked"), None, false),
            (Some("restart"), Some(true), true),
            (None, Some(false), false),
        ] {
            let mut sim = Sim::ready(protocol);
            sim.send_result(4.5, part("cmd_1", None));
            let close = HubMessage::Close {
                error: error.map(str::to_owned),
                allow_reconnect,
            };
            // What follows the Close in the same frame belongs to a dead connection.
            let out = sim.gateway(5.0, &[close, execute(protocol, "cmd_2")]);
            assert_eq!(
                out,
                vec![
                    HubOutput::Close {
                        code: CLOSE_NORMAL,
                        reason: "closed by the gateway".to_owned()
                    },
                    HubOutput::Event(HubEvent::Ended(LinkEnd::ClosedByGateway {
                        error: error.map(str::to_owned),
                        allow_reconnect: expected_allow
                    })),
                ]
            );
            assert_eq!(sim.link.take_unacknowledged().len(), 1);
        }
    }
}

#[test]
fn streams_and_stateful_reconnect_messages_are_misbehaviour() {
    for protocol in BOTH {
        let mut sim = Sim::ready(protocol);
        let payload = Payload::encode(protocol, &1).unwrap();
        let stream_invocation =
            HubMessage::StreamInvocation(nodelink_core::wire::signalr::Invocation {
                headers: Headers::new(),
                invocation_id: Some("s1".to_owned()),
                target: "Tail".to_owned(),
                arguments: vec![payload.clone()],
                stream_ids: vec![],
            });
        let out = sim.gateway(
            5.0,
            &[
                HubMessage::StreamItem {
                    headers: Headers::new(),
                    invocation_id: "s0".to_owned(),
                    item: payload,
                },
                stream_invocation,
                HubMessage::CancelInvocation {
                    headers: Headers::new(),
                    invocation_id: "s1".to_owned(),
                },
                HubMessage::Ack { sequence_id: 1 },
                HubMessage::Sequence { sequence_id: 1 },
                HubMessage::Ping,
            ],
        );
        let kinds: Vec<&str> = events(&out)
            .iter()
            .map(|e| match e {
                HubEvent::PeerMisbehaved(PeerError::UnexpectedMessage { message, .. }) => *message,
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(
            kinds,
            vec![
                "StreamItem",
                "StreamInvocation",
                "CancelInvocation",
                "Ack",
                "Sequence"
            ]
        );
        assert_eq!(
            sent(protocol, &out),
            vec![completion(
                "s1",
                CompletionOutcome::Error("Streaming hub method 'Tail' is not supported".to_owned())
            )]
        );
        assert!(sim.link.is_ready());
    }
}

#[test]
fn a_bad_record_is_dropped_and_the_next_one_still_counts() {
    let mut sim = Sim::ready(HubProtocol::Json);
    let mut text = String::from("{\"type\":1,\"target\":5}\u{1e}not json\u{1e}{\"type\":42}\u{1e}");
    text.push_str(
        &String::from_utf8({
            let mut b = Vec::new();
            HubProtocol::Json
                .encode(&execute(HubProtocol::Json, "cmd_1"), &mut b)
                .unwrap();
            b
        })
        .unwrap(),
    );
    let out = sim.frame(5.0, WsFrame::Text(text));
    let events = events(&out);
    assert_eq!(events.len(), 3, "{events:?}");
    assert!(matches!(
        events[0],
        HubEvent::PeerMisbehaved(PeerError::Decode(_))
    ));
    assert!(matches!(
        events[1],
        HubEvent::PeerMisbehaved(PeerError::Decode(_))
    ));
    // The unknown type 42 is skipped silently.
    assert_eq!(
        events[2],
        HubEvent::Call(GatewayCall::ExecuteCommand(execute_dto("cmd_1")))
    );
}

#[test]
fn a_record_over_the_limit_closes_with_1009() {
    let mut config = config(HubProtocol::Json);
    config.max_record_len = 128;
    let mut sim = Sim::with(config);
    sim.ready_at(0.0);
    let out = sim.frame(5.0, WsFrame::Text("x".repeat(129)));
    assert_eq!(closes(&out).len(), 1);
    assert_eq!(closes(&out)[0].0, 1009);
    assert!(matches!(
        ended(&out),
        Some(LinkEnd::ProtocolError(PeerError::Decode(
            nodelink_core::wire::signalr::DecodeError::RecordTooLarge { .. }
        )))
    ));

    let mut sim = Sim::ready(HubProtocol::MessagePack);
    let out = sim.frame(5.0, WsFrame::Binary(vec![0xff; 6]));
    assert_eq!(closes(&out)[0].0, CLOSE_PROTOCOL_ERROR);
    assert!(matches!(ended(&out), Some(LinkEnd::ProtocolError(_))));
}

#[test]
fn a_completion_nobody_awaits_is_misbehaviour() {
    let mut sim = Sim::ready(HubProtocol::Json);
    for id in ["1", "2", "01", "x"] {
        let out = sim.gateway(5.0, &[void_completion(id)]);
        assert_eq!(
            events(&out),
            vec![HubEvent::PeerMisbehaved(PeerError::UnknownCompletion {
                invocation_id: id.to_owned()
            })]
        );
    }
}
