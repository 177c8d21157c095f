//! What the link sends: the calls' records, keep-alive, control before bulk, the result window,
//! acknowledgments, batching, the clean close.
use super::*;

#[test]
fn json_and_messagepack_links_send_the_same_calls() {
    let calls = [
        NodeCall::Heartbeat(heartbeat()),
        NodeCall::ScopeChanged(vec!["screen.capture".to_owned()]),
        NodeCall::CommandProgress(nodelink_core::wire::dto::CommandProgressDto {
            command_id: "cmd_xyz789".to_owned(),
            progress: 0.5,
            step: Some(2),
            step_count: Some(4),
            eta_ms: Some(1500),
            message: Some("compiling".to_owned()),
        }),
    ];
    let mut per_protocol = Vec::new();
    for protocol in BOTH {
        let mut sim = Sim::ready(protocol);
        let mut out = Vec::new();
        for call in &calls {
            out.extend(sim.send_call(5.0, call.clone()));
        }
        out.extend(sim.send_result(5.0, part("cmd_xyz789", None)));
        // Each call leaves at once, in its own frame, exactly as the wire codec writes it.
        let mut expected = Vec::new();
        for call in &calls {
            let mut record = Vec::new();
            protocol
                .encode(&call.to_message(protocol, None).unwrap(), &mut record)
                .unwrap();
            expected.push(record);
        }
        let mut record = Vec::new();
        let result = NodeCall::CommandResult(part("cmd_xyz789", None));
        protocol
            .encode(
                &result.to_message(protocol, Some("2".to_owned())).unwrap(),
                &mut record,
            )
            .unwrap();
        expected.push(record);
        let got: Vec<Vec<u8>> = frames(&out).iter().map(|f| f.as_bytes().to_vec()).collect();
        assert_eq!(got, expected, "{protocol:?}");
        per_protocol.push(sent(protocol, &out));
    }
    // The same messages in both encodings: the same targets, ids and argument values.
    let values = |messages: &[HubMessage]| -> Vec<(Vec<String>, Vec<serde_json::Value>)> {
        messages
            .iter()
            .map(|m| match m {
                HubMessage::Invocation(inv) => (
                    summary(std::slice::from_ref(m)),
                    inv.arguments.iter().map(|a| a.decode().unwrap()).collect(),
                ),
                other => panic!("{other:?}"),
            })
            .collect()
    };
    assert_eq!(values(&per_protocol[0]), values(&per_protocol[1]));
    // And the heartbeat's JSON record is the one docs/protocol.md 5.9 shows.
    let heartbeat_record =
        frames(&Sim::ready(HubProtocol::Json).send_call(5.0, NodeCall::Heartbeat(heartbeat())))[0]
            .clone();
    assert_eq!(
        support::text(heartbeat_record.as_bytes()),
        r#"{"type":1,"target":"Heartbeat","arguments":[{"nodeId":"abc123","status":"online","uptime":3600,"platform":"windows","version":"1.0.0","cpuPercent":2.5,"memoryMb":45}]}\x1e"#
    );
}

#[test]
fn ping_after_15s_of_silence_on_send() {
    for protocol in BOTH {
        let mut sim = Sim::ready(protocol);
        // Hello went out at 3 s: the first Ping is due at 18 s.
        assert_eq!(sim.link.poll_timeout(), Some(sim.at(18.0)));
        assert_eq!(sim.timeout(17.999), vec![]);
        let out = sim.timeout(18.0);
        assert_eq!(summary(&sent(protocol, &out)), vec!["Ping"]);
        let ping: &[u8] = match protocol {
            HubProtocol::Json => b"{\"type\":6}\x1e",
            HubProtocol::MessagePack => &[0x02, 0x91, 0x06],
        };
        assert_eq!(frames(&out)[0].as_bytes(), ping);
        assert_eq!(sim.link.poll_timeout(), Some(sim.at(33.0)));
        // Anything sent restarts the interval: a heartbeat at 20 s moves the Ping to 35 s.
        sim.gateway(19.0, &[HubMessage::Ping]); // keeps the peer alive; receiving does not count
        sim.send_call(20.0, NodeCall::Heartbeat(heartbeat()));
        assert_eq!(sim.timeout(33.0), vec![]);
        assert_eq!(sim.link.poll_timeout(), Some(sim.at(35.0)));
        let out = sim.timeout(35.0);
        assert_eq!(summary(&sent(protocol, &out)), vec!["Ping"]);
    }
}

#[test]
fn peer_dead_after_30s_without_receiving() {
    let mut sim = Sim::ready(HubProtocol::Json);
    // Last receive: the Hello Completion at 4 s. Pings keep going out meanwhile.
    assert_eq!(
        summary(&sent(HubProtocol::Json, &sim.timeout(18.0))),
        vec!["Ping"]
    );
    assert_eq!(
        summary(&sent(HubProtocol::Json, &sim.timeout(33.0))),
        vec!["Ping"]
    );
    assert_eq!(sim.link.poll_timeout(), Some(sim.at(34.0)));
    assert_eq!(sim.timeout(33.999), vec![]);
    let out = sim.timeout(34.0);
    assert_eq!(
        out,
        vec![
            HubOutput::Close {
                code: CLOSE_NORMAL,
                reason: "server timeout".to_owned()
            },
            HubOutput::Event(HubEvent::Ended(LinkEnd::PeerTimeout)),
        ]
    );

    // Any frame counts as a sign of life, a Ping included.
    let mut sim = Sim::ready(HubProtocol::Json);
    sim.gateway(30.0, &[HubMessage::Ping]);
    sim.timeout(18.0);
    assert_eq!(
        sim.timeout(34.0).len(),
        1,
        "only a Ping at 33 s; nothing ends at 34 s"
    );
    assert_eq!(sim.link.state(), HubState::Ready);
    assert_eq!(ended(&sim.timeout(60.0)), Some(LinkEnd::PeerTimeout));
}

#[test]
fn a_dead_peer_ends_the_link_before_a_ping_due_at_the_same_instant() {
    let mut config = config(HubProtocol::Json);
    config.keep_alive = std::time::Duration::from_secs(30);
    let mut sim = Sim::with(config);
    sim.ready_at(0.0);
    // Last receive at 4 s (the Hello Completion), last send at 4 s: both due at 34 s.
    sim.send_call(4.0, NodeCall::Heartbeat(heartbeat()));
    assert_eq!(sim.link.poll_timeout(), Some(sim.at(34.0)));
    let out = sim.timeout(34.0);
    assert_eq!(frames(&out), vec![], "no Ping to a dead peer");
    assert_eq!(ended(&out), Some(LinkEnd::PeerTimeout));
}

#[test]
fn calls_before_ready_wait_and_only_hello_goes_out() {
    let mut sim = Sim::new(HubProtocol::Json);
    sim.connect(0.0);
    assert_eq!(sim.send_call(0.5, NodeCall::Heartbeat(heartbeat())), vec![]);
    sim.http(1.0, 200, NEGOTIATE_V1);
    sim.opened(2.0);
    assert_eq!(sim.send_result(2.5, part("cmd_1", None)), vec![]);
    let out = sim.frame(3.0, handshake_ok());
    assert_eq!(summary(&sent(HubProtocol::Json, &out)), vec!["Hello#1"]);
    assert_eq!(
        sim.send_call(3.5, NodeCall::ScopeChanged(vec!["a".to_owned()])),
        vec![]
    );
    let out = sim.gateway(4.0, &[hello_ack(HubProtocol::Json, "1", "2026-04-01")]);
    // Ready first, then everything that waited, control before bulk, in one frame.
    assert!(matches!(out[0], HubOutput::Event(HubEvent::Ready { .. })));
    assert_eq!(frames(&out).len(), 1);
    assert_eq!(
        summary(&sent(HubProtocol::Json, &out)),
        vec!["Heartbeat", "ScopeChanged", "CommandResult#2"]
    );
}

#[test]
fn control_drains_before_bulk() {
    let mut config = config(HubProtocol::Json);
    config.results_in_flight = 2;
    let mut sim = Sim::with(config);
    sim.ready_at(0.0);
    let mut out = Vec::new();
    for i in 0..4 {
        out.extend(sim.send_result(5.0, part(&format!("cmd_{i}"), None)));
    }
    assert_eq!(
        summary(&sent(HubProtocol::Json, &out)),
        vec!["CommandResult#2", "CommandResult#3"]
    );
    // The window is full: a heartbeat still goes out at once, ahead of the waiting parts.
    let out = sim.send_call(6.0, NodeCall::Heartbeat(heartbeat()));
    assert_eq!(summary(&sent(HubProtocol::Json, &out)), vec!["Heartbeat"]);
    // An acknowledgment and a heartbeat in the same input: the heartbeat leaves first.
    sim.link
        .send_call(sim.at(7.0), NodeCall::Heartbeat(heartbeat()))
        .unwrap();
    let queued = sim.drain();
    let out = sim.gateway(7.0, &[void_completion("2")]);
    let mut all = queued;
    all.extend(out);
    assert_eq!(
        summary(&sent(HubProtocol::Json, &all)),
        vec!["Heartbeat", "CommandResult#4"]
    );
}

#[test]
fn at_most_n_result_parts_in_flight() {
    let mut config = config(HubProtocol::MessagePack);
    config.results_in_flight = 2;
    let mut sim = Sim::with(config);
    sim.ready_at(0.0);
    let mut out = Vec::new();
    for i in 0..5 {
        out.extend(sim.send_result(5.0, part("cmd_big", Some(i))));
    }
    assert_eq!(
        summary(&sent(HubProtocol::MessagePack, &out)),
        vec!["CommandResult#2", "CommandResult#3"]
    );
    assert_eq!(sim.link.results_in_flight(), 2);
    assert_eq!(sim.link.results_queued(), 3);
    let out = sim.gateway(6.0, &[void_completion("3")]);
    assert_eq!(
        events(&out),
        vec![HubEvent::ResultAcknowledged {
            command_id: "cmd_big".to_owned(),
            part_index: Some(1)
        }]
    );
    assert_eq!(
        summary(&sent(HubProtocol::MessagePack, &out)),
        vec!["CommandResult#4"]
    );
    // Two acknowledgments in one frame open the window by two.
    let out = sim.gateway(7.0, &[void_completion("2"), void_completion("4")]);
    assert_eq!(
        summary(&sent(HubProtocol::MessagePack, &out)),
        vec!["CommandResult#5", "CommandResult#6"]
    );
    assert_eq!(sim.link.results_in_flight(), 2);
    assert_eq!(sim.link.results_queued(), 0);
}

#[test]
fn completion_acknowledges_a_part() {
    let mut sim = Sim::ready(HubProtocol::Json);
    let out = sim.send_result(5.0, part("cmd_xyz789", None));
    assert_eq!(
        support::text(frames(&out)[0].as_bytes()),
        r#"{"type":1,"invocationId":"2","target":"CommandResult","arguments":[{"commandId":"cmd_xyz789","ok":true,"result":{"hostname":"build-01"},"durationMs":234,"protocolVersion":"2026-04-01"}]}\x1e"#
    );
    let out = sim.frame(
        6.0,
        WsFrame::Text("{\"type\":3,\"invocationId\":\"2\"}\u{1e}".to_owned()),
    );
    assert_eq!(
        out,
        vec![HubOutput::Event(HubEvent::ResultAcknowledged {
            command_id: "cmd_xyz789".to_owned(),
            part_index: None
        })]
    );
    assert_eq!(sim.link.results_in_flight(), 0);
    // A second Completion for the same id is unexpected.
    let out = sim.gateway(7.0, &[void_completion("2")]);
    assert_eq!(
        events(&out),
        vec![HubEvent::PeerMisbehaved(PeerError::UnknownCompletion {
            invocation_id: "2".to_owned()
        })]
    );
    // A Completion with a value acknowledges too (a hub method that returns something).
    sim.send_result(8.0, part("cmd_2", None));
    let value = Payload::encode(HubProtocol::Json, &true).unwrap();
    let out = sim.gateway(9.0, &[completion("3", CompletionOutcome::Result(value))]);
    assert!(matches!(
        events(&out)[..],
        [HubEvent::ResultAcknowledged { .. }]
    ));
}

#[test]
fn a_completion_error_refuses_a_part_for_good() {
    let mut sim = Sim::ready(HubProtocol::Json);
    sim.send_result(5.0, part("cmd_1", Some(0)));
    let out = sim.gateway(
        6.0,
        &[completion(
            "2",
            CompletionOutcome::Error("no such command".to_owned()),
        )],
    );
    assert_eq!(
        events(&out),
        vec![HubEvent::ResultRefused {
            command_id: "cmd_1".to_owned(),
            part_index: Some(0),
            error: "no such command".to_owned()
        }]
    );
    sim.link
        .handle_ws_closed(sim.at(7.0), Some(1006), String::new());
    sim.drain();
    assert_eq!(sim.link.take_unacknowledged(), vec![]);
}

#[test]
fn unacknowledged_parts_are_returned_after_the_link_ends() {
    let mut config = config(HubProtocol::Json);
    config.results_in_flight = 2;
    let mut sim = Sim::with(config);
    sim.ready_at(0.0);
    for i in 0..4 {
        sim.send_result(5.0, part("cmd_1", Some(i)));
    }
    sim.gateway(6.0, &[void_completion("2")]); // part 0 acknowledged, part 2 goes out
    sim.send_call(6.0, NodeCall::Heartbeat(heartbeat()));
    sim.link
        .handle_ws_closed(sim.at(7.0), Some(1006), "gone".to_owned());
    sim.drain();
    assert_eq!(sim.link.results_in_flight(), 0);
    let left = sim.link.take_unacknowledged();
    assert_eq!(
        left.iter().map(|p| p.part_index).collect::<Vec<_>>(),
        vec![Some(1), Some(2), Some(3)],
        "in flight and queued, in their original order"
    );
    assert_eq!(sim.link.take_unacknowledged(), vec![]);
}

#[test]
fn parts_left_in_the_link_are_resent_with_new_ids_on_the_next_connection() {
    let mut sim = Sim::ready(HubProtocol::Json);
    sim.send_result(5.0, part("cmd_1", None));
    sim.send_call(5.0, NodeCall::Heartbeat(heartbeat()));
    sim.link.handle_ws_closed(sim.at(6.0), None, String::new());
    sim.drain();
    // Parts handed over while idle wait too.
    sim.send_result(7.0, part("cmd_2", None));
    sim.connect(10.0);
    sim.http(11.0, 200, NEGOTIATE_V1);
    sim.opened(12.0);
    let out = sim.frame(13.0, handshake_ok());
    assert_eq!(
        summary(&sent(HubProtocol::Json, &out)),
        vec!["Hello#1"],
        "ids restart at 1"
    );
    let out = sim.gateway(14.0, &[hello_ack(HubProtocol::Json, "1", "2026-04-01")]);
    // The heartbeat of the old connection is gone; both parts go out with new ids.
    assert_eq!(
        summary(&sent(HubProtocol::Json, &out)),
        vec!["CommandResult#2", "CommandResult#3"]
    );
    let commands: Vec<String> = sent(HubProtocol::Json, &out)
        .iter()
        .map(|m| match m {
            HubMessage::Invocation(inv) => {
                inv.arguments[0]
                    .decode::<CommandResultDto>()
                    .unwrap()
                    .command_id
            }
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(commands, vec!["cmd_1", "cmd_2"]);
}

#[test]
fn records_are_batched_into_frames_but_never_split() {
    let mut config = config(HubProtocol::Json);
    config.max_batch_len = 400;
    let mut sim = Sim::with(config);
    sim.connect(0.0);
    for _ in 0..5 {
        sim.link
            .send_call(sim.at(0.0), NodeCall::Heartbeat(heartbeat()))
            .unwrap();
    }
    sim.http(1.0, 200, NEGOTIATE_V1);
    sim.opened(2.0);
    sim.frame(3.0, handshake_ok());
    let out = sim.gateway(4.0, &[hello_ack(HubProtocol::Json, "1", "2026-04-01")]);
    // A heartbeat record is 167 bytes: two fit in 400, the fifth goes alone.
    let sizes: Vec<usize> = frames(&out)
        .iter()
        .map(|f| decode_frame(HubProtocol::Json, f).unwrap().len())
        .collect();
    assert_eq!(sizes, vec![2, 2, 1]);
    assert!(frames(&out).iter().all(|f| f.as_bytes().len() <= 400));
    // A record larger than the cap goes alone, whole.
    let mut big = part("cmd_big", None);
    big.result = Some(serde_json::json!("x".repeat(1000)));
    let out = sim.send_result(5.0, big);
    assert_eq!(frames(&out).len(), 1);
    assert!(frames(&out)[0].as_bytes().len() > 1000);
    assert_eq!(
        decode_frame(HubProtocol::Json, &frames(&out)[0])
            .unwrap()
            .len(),
        1
    );
}

#[test]
fn close_sends_a_close_message_then_closes_and_nothing_else() {
    for protocol in BOTH {
        let mut config = config(protocol);
        config.results_in_flight = 1;
        let mut sim = Sim::with(config);
        sim.ready_at(0.0);
        sim.send_result(5.0, part("cmd_1", None));
        sim.send_result(5.0, part("cmd_2", None));
        sim.link.close(sim.at(6.0), "revoked: admin_revoked");
        let out = sim.drain();
        let close: &[u8] = match protocol {
            HubProtocol::Json => b"{\"type\":7}\x1e",
            HubProtocol::MessagePack => &[0x03, 0x92, 0x07, 0xc0],
        };
        assert_eq!(out.len(), 3, "{out:?}");
        assert_eq!(frames(&out)[0].as_bytes(), close);
        assert_eq!(
            out[1..],
            [
                HubOutput::Close {
                    code: CLOSE_NORMAL,
                    reason: "revoked: admin_revoked".to_owned()
                },
                HubOutput::Event(HubEvent::Ended(LinkEnd::ClosedByNode {
                    reason: "revoked: admin_revoked".to_owned()
                })),
            ]
        );
        assert_eq!(sim.link.state(), HubState::Idle);
        assert_eq!(sim.link.poll_timeout(), None);
        assert_eq!(sim.link.take_unacknowledged().len(), 2);
    }
}

#[test]
fn close_before_the_handshake_sends_no_close_message() {
    let mut sim = Sim::new(HubProtocol::Json);
    sim.connect(0.0);
    sim.link.close(sim.at(0.5), "shutdown");
    assert_eq!(
        sim.drain(),
        vec![HubOutput::Event(HubEvent::Ended(LinkEnd::ClosedByNode {
            reason: "shutdown".to_owned()
        }))]
    );
    sim.connect(1.0);
    sim.http(2.0, 200, NEGOTIATE_V1);
    sim.opened(3.0);
    let long = "é".repeat(100);
    sim.link.close(sim.at(4.0), &long);
    let out = sim.drain();
    match &out[..] {
        [HubOutput::Close { code, reason }, HubOutput::Event(HubEvent::Ended(_))] => {
            assert_eq!(*code, CLOSE_NORMAL);
            assert_eq!(
                reason.len(),
                122,
                "cut to 123 bytes on a character boundary"
            );
        }
        other => panic!("{other:?}"),
    }
}
