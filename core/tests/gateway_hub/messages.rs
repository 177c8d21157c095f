//! Records in and out of an open connection: framing, node calls, answers, misbehaviour,
//! batching.

use super::*;
use nodelink_core::gateway::hub::{HubPeerError, CLOSE_PROTOCOL_ERROR, CLOSE_TOO_BIG};
use nodelink_core::wire::contract::{ContractError, NodeCall};
use nodelink_core::wire::dto::HelloAckDto;
use nodelink_core::wire::signalr::{CompletionOutcome, DecodeError};

fn calls(step: &Step) -> Vec<(Option<String>, NodeCall)> {
    step.events
        .iter()
        .filter_map(|e| match e {
            HubServerEvent::Call {
                invocation_id,
                call,
                ..
            } => Some((invocation_id.clone(), call.clone())),
            _ => None,
        })
        .collect()
}

fn misbehaviour(step: &Step) -> Vec<HubPeerError> {
    step.events
        .iter()
        .filter_map(|e| match e {
            HubServerEvent::Misbehaved { error, .. } => Some(error.clone()),
            _ => None,
        })
        .collect()
}

#[test]
fn records_split_across_frames_and_several_per_frame() {
    for protocol in BOTH {
        let mut sim = Sim::new();
        sim.connected(0.0, 1, protocol);
        let mut bytes = Vec::new();
        protocol.encode(&heartbeat(protocol), &mut bytes).unwrap();
        let (a, rest) = bytes.split_at(1);
        let (b, c) = rest.split_at(rest.len() / 2);
        assert!(sim.frame(1.0, 1, WsFrame::Binary(a.to_vec())).is_empty());
        assert!(sim.frame(1.1, 1, WsFrame::Binary(b.to_vec())).is_empty());
        let step = sim.frame(1.2, 1, WsFrame::Binary(c.to_vec()));
        assert_eq!(
            calls(&step),
            vec![(None, NodeCall::Heartbeat(heartbeat_dto()))]
        );

        let step = sim.node_sends(
            2.0,
            1,
            protocol,
            &[heartbeat(protocol), heartbeat(protocol)],
        );
        assert_eq!(calls(&step).len(), 2, "{protocol:?}");
    }
}

#[test]
fn hello_is_answered_through_complete() {
    let mut sim = Sim::new();
    sim.connected(0.0, 1, HubProtocol::Json);
    let hello = HubMessage::Invocation(Invocation {
        headers: Headers::new(),
        invocation_id: Some("1".into()),
        target: "Hello".into(),
        arguments: vec![Payload::from_raw_json(
            serde_json::value::RawValue::from_string(
                r#"{"nodeId":"abc123","protocolVersions":["2026-04-01","2025-10-01"]}"#.into(),
            )
            .unwrap(),
        )],
        stream_ids: Vec::new(),
    });
    let step = sim.node_sends(1.0, 1, HubProtocol::Json, &[hello]);
    let [(Some(id), NodeCall::Hello(dto))]: [_; 1] = calls(&step).try_into().unwrap() else {
        panic!("{step:?}")
    };
    assert_eq!(dto.protocol_versions, ["2026-04-01", "2025-10-01"]);
    let ack = HelloAckDto {
        protocol_version: "2026-04-01".into(),
    };
    let outcome = CompletionOutcome::Result(Payload::encode(HubProtocol::Json, &ack).unwrap());
    let now = sim.at(1.0);
    sim.server.complete(now, ConnId(1), id, outcome).unwrap();
    assert_eq!(
        sim.drain().texts(ConnId(1)),
        vec!["{\"type\":3,\"invocationId\":\"1\",\"result\":{\"protocolVersion\":\"2026-04-01\"}}\\x1e"]
    );
}

#[test]
fn a_command_result_is_acknowledged_with_a_void_completion() {
    let mut sim = Sim::new();
    sim.connected(0.0, 1, HubProtocol::MessagePack);
    let result = serde_json::json!({"commandId": "cmd_1", "ok": true, "durationMs": 5});
    let message = invocation(
        HubProtocol::MessagePack,
        Some("2"),
        "commandresult",
        &result,
    );
    let step = sim.node_sends(1.0, 1, HubProtocol::MessagePack, &[message]);
    let [(Some(id), NodeCall::CommandResult(dto))]: [_; 1] = calls(&step).try_into().unwrap()
    else {
        panic!("{step:?}")
    };
    assert_eq!(dto.command_id, "cmd_1");
    let now = sim.at(1.0);
    sim.server
        .complete(now, ConnId(1), id, CompletionOutcome::Void)
        .unwrap();
    // The void Completion of section 4.5, with id "2".
    assert_eq!(
        sim.drain().frames(ConnId(1)),
        vec![WsFrame::Binary(vec![
            0x06, 0x94, 0x03, 0x80, 0xa1, b'2', 0x02
        ])]
    );
}

#[test]
fn unknown_target_with_id_gets_a_completion_error() {
    let mut sim = Sim::new();
    sim.connected(0.0, 1, HubProtocol::Json);
    let step = sim.frame(
        1.0,
        1,
        text(
            "{\"type\":1,\"invocationId\":\"7\",\"target\":\"Nope\",\"arguments\":[1]}\u{1e}\
             {\"type\":1,\"target\":\"Nope\",\"arguments\":[1]}\u{1e}",
        ),
    );
    let unknown = HubPeerError::Contract(ContractError::UnknownTarget {
        target: "Nope".into(),
    });
    assert_eq!(misbehaviour(&step), vec![unknown.clone(), unknown]);
    // Only the one with an id is answered.
    assert_eq!(
        step.texts(ConnId(1)),
        vec!["{\"type\":3,\"invocationId\":\"7\",\"error\":\"Unknown hub method 'Nope'\"}\\x1e"]
    );
}

#[test]
fn invalid_arguments_with_an_id_get_a_completion_error_that_says_what_is_wrong() {
    let mut sim = Sim::new();
    sim.connected(0.0, 1, HubProtocol::Json);
    let step = sim.frame(
        1.0,
        1,
        text("{\"type\":1,\"invocationId\":\"3\",\"target\":\"CommandResult\",\"arguments\":[{\"ok\":true}]}\u{1e}"),
    );
    assert!(matches!(
        misbehaviour(&step).as_slice(),
        [HubPeerError::Contract(
            ContractError::InvalidArgument { .. }
        )]
    ));
    let texts = step.texts(ConnId(1));
    assert!(
        texts[0].starts_with(
            "{\"type\":3,\"invocationId\":\"3\",\"error\":\"hub method CommandResult: argument 0 is invalid: "
        ),
        "{texts:?}"
    );
    assert!(calls(&step).is_empty());
}

#[test]
fn messages_a_node_has_no_business_sending_are_reported() {
    let mut sim = Sim::new();
    sim.connected(0.0, 1, HubProtocol::Json);
    let step = sim.frame(
        1.0,
        1,
        text(
            "{\"type\":3,\"invocationId\":\"1\"}\u{1e}\
             {\"type\":4,\"invocationId\":\"2\",\"target\":\"Tail\",\"arguments\":[]}\u{1e}\
             {\"type\":2,\"invocationId\":\"2\",\"item\":1}\u{1e}\
             {\"type\":5,\"invocationId\":\"2\"}\u{1e}\
             {\"type\":8,\"sequenceId\":1}\u{1e}\
             {\"type\":9,\"sequenceId\":1}\u{1e}",
        ),
    );
    let names: Vec<&str> = misbehaviour(&step)
        .iter()
        .map(|e| match e {
            HubPeerError::UnexpectedMessage { message, .. } => *message,
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(
        names,
        [
            "Completion",
            "StreamInvocation",
            "StreamItem",
            "CancelInvocation",
            "Ack",
            "Sequence"
        ]
    );
    assert_eq!(
        step.texts(ConnId(1)),
        vec!["{\"type\":3,\"invocationId\":\"2\",\"error\":\"Streaming hub method 'Tail' is not supported\"}\\x1e"]
    );
    assert_eq!(disconnects(&step), vec![]);
}

#[test]
fn unknown_types_are_skipped_silently_and_bad_records_lose_only_themselves() {
    let mut sim = Sim::new();
    sim.connected(0.0, 1, HubProtocol::Json);
    let step = sim.frame(
        1.0,
        1,
        text("{\"type\":99,\"x\":1}\u{1e}{\"type\":\u{1e}{\"type\":6}\u{1e}"),
    );
    assert!(matches!(
        misbehaviour(&step).as_slice(),
        [HubPeerError::Decode(DecodeError::Syntax { .. })]
    ));
    let mut heartbeat_bytes = Vec::new();
    HubProtocol::Json
        .encode(&heartbeat(HubProtocol::Json), &mut heartbeat_bytes)
        .unwrap();
    let step = sim.frame(
        2.0,
        1,
        WsFrame::Text(String::from_utf8(heartbeat_bytes).unwrap()),
    );
    assert_eq!(calls(&step).len(), 1);
}

#[test]
fn a_record_over_the_limit_closes_with_1009() {
    let mut sim = Sim::with(HubServerConfig {
        max_record_len: 100,
        ..HubServerConfig::default()
    });
    sim.connected(0.0, 1, HubProtocol::Json);
    let step = sim.frame(1.0, 1, text(&"x".repeat(101)));
    let error = HubPeerError::Decode(DecodeError::RecordTooLarge {
        size: 101,
        limit: 100,
    });
    assert_eq!(misbehaviour(&step), vec![error.clone()]);
    let reason = "Connection closed with an error: undecodable record: record of at least 101 \
                  bytes exceeds the limit of 100 bytes";
    assert_eq!(
        step.texts(ConnId(1)),
        vec![format!("{{\"type\":7,\"error\":\"{reason}\"}}\\x1e")]
    );
    assert_eq!(
        step.closes(),
        vec![(ConnId(1), CLOSE_TOO_BIG, reason.into())]
    );
    assert_eq!(
        disconnects(&step),
        vec![(ConnId(1), DisconnectReason::ProtocolError(error), false)]
    );
}

#[test]
fn a_broken_length_prefix_closes_with_1002() {
    let mut sim = Sim::new();
    sim.connected(0.0, 1, HubProtocol::MessagePack);
    let step = sim.frame(1.0, 1, WsFrame::Binary(vec![0xff; 6]));
    assert!(matches!(
        misbehaviour(&step).as_slice(),
        [HubPeerError::Decode(
            DecodeError::InvalidLengthPrefix { .. }
        )]
    ));
    let frames = step.frames(ConnId(1));
    let sent = decode_frame(HubProtocol::MessagePack, &frames[0]).unwrap();
    assert!(matches!(
        &sent[..],
        [HubMessage::Close {
            error: Some(_),
            allow_reconnect: None
        }]
    ));
    assert_eq!(step.closes()[0].1, CLOSE_PROTOCOL_ERROR);
}

#[test]
fn sends_are_batched_per_connection_and_never_split() {
    let mut sim = Sim::with(HubServerConfig {
        max_batch_len: 300,
        ..HubServerConfig::default()
    });
    sim.connected(0.0, 1, HubProtocol::Json);
    sim.connected(0.0, 2, HubProtocol::MessagePack);
    let now = sim.at(1.0);
    for i in 0..5 {
        let call = execute(&format!("cmd_{i}"));
        sim.server.send(now, ConnId(1), &call).unwrap();
        sim.server.send(now, ConnId(2), &call).unwrap();
    }
    let big = GatewayCall::RefreshScopes(vec!["s".repeat(400)]);
    sim.server.send(now, ConnId(1), &big).unwrap();
    sim.server
        .send(now, ConnId(1), &execute("cmd_last"))
        .unwrap();
    let step = sim.drain();
    for (conn, protocol) in [
        (ConnId(1), HubProtocol::Json),
        (ConnId(2), HubProtocol::MessagePack),
    ] {
        let frames = step.frames(conn);
        let mut ids = Vec::new();
        for frame in &frames {
            let messages = decode_frame(protocol, frame).unwrap();
            assert!(
                frame.as_bytes().len() <= 300 || messages.len() == 1,
                "a frame over the batch limit holds one record"
            );
            for message in messages {
                let HubMessage::Invocation(invocation) = message else {
                    panic!()
                };
                match GatewayCall::from_invocation(&invocation).unwrap() {
                    GatewayCall::ExecuteCommand(dto) => ids.push(dto.command_id),
                    GatewayCall::RefreshScopes(_) => ids.push("scopes".into()),
                    other => panic!("{other:?}"),
                }
            }
        }
        assert!(
            frames.len() >= 2 && frames.len() < ids.len(),
            "{conn:?}: {} frames",
            frames.len()
        );
        let mut expected: Vec<String> = (0..5).map(|i| format!("cmd_{i}")).collect();
        if conn == ConnId(1) {
            expected.extend(["scopes".into(), "cmd_last".into()]);
        }
        assert_eq!(ids, expected, "in order");
    }
}

#[test]
fn a_large_record_split_across_frames_then_small_ones_decode() {
    let mut sim = Sim::new();
    sim.connected(0.0, 1, HubProtocol::Json);
    let result =
        serde_json::json!({"commandId": "cmd_1", "ok": true, "result": "r".repeat(100_000)});
    let mut bytes = Vec::new();
    HubProtocol::Json
        .encode(
            &invocation(HubProtocol::Json, Some("2"), "CommandResult", &result),
            &mut bytes,
        )
        .unwrap();
    let (a, b) = bytes.split_at(40_000);
    assert!(sim.frame(1.0, 1, WsFrame::Binary(a.to_vec())).is_empty());
    let step = sim.frame(1.0, 1, WsFrame::Binary(b.to_vec()));
    assert!(matches!(
        &calls(&step)[..],
        [(Some(_), NodeCall::CommandResult(_))]
    ));
    for secs in [2.0, 3.0] {
        let step = sim.node_sends(secs, 1, HubProtocol::Json, &[heartbeat(HubProtocol::Json)]);
        assert_eq!(calls(&step).len(), 1);
    }
}

/// A `CommandResult` record alone in its frame is decoded from the frame itself; the same
/// records split across frames, two in one frame, or behind a partial record take the decoder's
/// path: the events are the same, in the same order.
#[test]
fn a_lone_command_result_frame_decodes_as_the_buffered_path_does() {
    let record = |invocation: &str, id: &str| {
        format!(
            "{{\"type\":1,\"invocationId\":\"{invocation}\",\"target\":\"CommandResult\",\
             \"arguments\":[{{\"commandId\":\"{id}\",\"ok\":true,\"result\":{{\"a\":[1,\"x\"]}},\
             \"durationMs\":3,\"protocolVersion\":\"2026-04-01\"}}]}}\u{1e}"
        )
    };
    let (a, b) = (record("2", "cmd-a"), record("3", "cmd-b"));
    let ways: [Vec<String>; 4] = [
        // Each alone in its frame: the direct path.
        vec![a.clone(), b.clone()],
        // Both in one frame.
        vec![format!("{a}{b}")],
        // Split inside the first, the second behind its tail.
        vec![a[..20].to_owned(), format!("{}{b}", &a[20..])],
        // The first split, the second alone after it (the decoder is empty again).
        vec![a[..20].to_owned(), a[20..].to_owned(), b.clone()],
    ];
    let mut seen = Vec::new();
    for frames in ways {
        let mut sim = Sim::new();
        sim.connected(0.0, 1, HubProtocol::Json);
        let mut events = Vec::new();
        for frame in frames {
            events.extend(calls(&sim.frame(1.0, 1, text(&frame))));
        }
        seen.push(events);
    }
    assert_eq!(seen[0].len(), 2, "{:?}", seen[0]);
    let [(Some(first), NodeCall::CommandResult(dto)), (Some(second), _)] = &seen[0][..] else {
        panic!("{:?}", seen[0])
    };
    assert_eq!((first.as_str(), second.as_str()), ("2", "3"));
    assert_eq!(dto.command_id, "cmd-a");
    assert_eq!(dto.result, Some(serde_json::json!({"a": [1, "x"]})));
    for other in &seen[1..] {
        assert_eq!(other, &seen[0]);
    }
}

/// A lone `CommandResult` frame with something wrong in it is refused exactly as the buffered
/// path refuses it (the direct path only ever answers for records it decodes whole).
#[test]
fn a_lone_command_result_frame_the_scan_refuses_goes_the_usual_way() {
    for frame in [
        // No commandId: a Completion error.
        "{\"type\":1,\"invocationId\":\"3\",\"target\":\"CommandResult\",\"arguments\":[{\"ok\":true}]}\u{1e}",
        // A record separator inside: two records, the first broken.
        "{\"type\":1,\"invocationId\":\"3\",\"target\":\"CommandResult\"\u{1e}{}\u{1e}",
    ] {
        let mut direct = Sim::new();
        direct.connected(0.0, 1, HubProtocol::Json);
        let one = direct.frame(1.0, 1, text(frame));
        let mut split = Sim::new();
        split.connected(0.0, 1, HubProtocol::Json);
        let mut two = split.frame(1.0, 1, text(&frame[..7]));
        let rest = split.frame(1.0, 1, text(&frame[7..]));
        two.out.extend(rest.out);
        two.events.extend(rest.events);
        assert_eq!(one.texts(ConnId(1)), two.texts(ConnId(1)), "{frame}");
        assert_eq!(one.events, two.events, "{frame}");
    }
}
