//! Results: correlation, reassembly, protocol errors, repeats and refusals.

use nodelink_core::chunk::{ChunkError, ReassemblyLimits};

use super::*;

/// A hub node `n1` with one command in flight; outputs drained.
fn one_in_flight(config: DispatchConfig) -> (Gw, String) {
    let mut gw = Gw::with(config);
    gw.connect(0.0, "n1", 1);
    let id = gw.dispatch(0.0, request("n1"));
    gw.drain();
    (gw, id)
}

fn outcome(gw: &Gw, id: &str) -> CommandResultDto {
    match gw.status(id) {
        CommandStatus::Finished(outcome) => (*outcome.result).clone(),
        other => panic!("not finished: {other:?}"),
    }
}

#[test]
fn parts_are_reassembled_and_a_gap_is_a_protocol_error() {
    let (mut gw, id) = one_in_flight(DispatchConfig::default());
    // Parts may come in any order (HTTP polling); a gap is only a wait.
    let last = part(&id, 2, true, "!");
    assert_eq!(gw.d.result(gw.at(1.0), "n1", last.clone()), ResultAck::Ack);
    assert_eq!(
        gw.d.result(gw.at(1.1), "n1", part(&id, 0, false, "hello")),
        ResultAck::Ack
    );
    let out = gw.drain();
    assert!(finished(&out).is_empty());
    assert_eq!(
        records(&out),
        vec![
            DispatchRecord::Part {
                command_id: id.clone(),
                part: Box::new(last)
            },
            DispatchRecord::Part {
                command_id: id.clone(),
                part: Box::new(part(&id, 0, false, "hello"))
            },
        ]
    );
    assert_eq!(
        gw.d.result(gw.at(1.2), "n1", part(&id, 1, false, " world")),
        ResultAck::Ack
    );
    let out = gw.drain();
    assert_eq!(finished(&out), vec![(id.clone(), true, None)]);
    let whole = outcome(&gw, &id);
    assert_eq!(whole.result, Some(json!({"text": "hello world!"})));
    assert_eq!((whole.part_index, whole.is_last), (None, None));
    assert_eq!(whole.duration_ms, Some(7));

    // A part beyond the one marked last: the command ends internal_error.
    let (mut gw, id) = one_in_flight(DispatchConfig::default());
    gw.d.result(gw.at(1.0), "n1", part(&id, 1, true, "b"));
    let ack = gw.d.result(gw.at(1.1), "n1", part(&id, 3, false, "d"));
    let error = ChunkError::BeyondLast {
        part_index: 3,
        last_index: 1,
    };
    assert_eq!(ack, ResultAck::Refuse(Refusal::Rejected(error.clone())));
    let out = gw.drain();
    assert!(
        out.contains(&DispatchOutput::Event(DispatchEvent::ResultRejected {
            node: "n1".to_owned(),
            command_id: id.clone(),
            error: error.clone()
        }))
    );
    assert_eq!(
        finished(&out),
        vec![(id.clone(), false, Some(ErrorCode::InternalError))]
    );
    assert_eq!(
        outcome(&gw, &id).error.unwrap().message,
        format!("the result was rejected: {error}")
    );
    // Nothing more is accepted for it.
    assert_eq!(
        gw.d.result(gw.at(1.2), "n1", part(&id, 0, false, "a")),
        ResultAck::Refuse(Refusal::Ended(ErrorCode::InternalError))
    );
}

#[test]
fn a_second_is_last_a_different_duplicate_and_the_limits_are_protocol_errors() {
    let limits = ReassemblyLimits {
        max_parts: 4,
        max_total_bytes: 64,
    };
    let config = DispatchConfig {
        reassembly: limits,
        ..DispatchConfig::default()
    };
    let cases: Vec<(Vec<CommandResultDto>, ChunkError)> = vec![
        (
            vec![part("ID", 1, true, "b"), part("ID", 2, true, "c")],
            ChunkError::SecondLast {
                last_index: 1,
                part_index: 2,
            },
        ),
        (
            vec![part("ID", 0, false, "a"), part("ID", 0, false, "A")],
            ChunkError::DuplicatePart { part_index: 0 },
        ),
        (
            vec![part("ID", 4, false, "a")],
            ChunkError::TooManyParts {
                part_index: 4,
                max_parts: 4,
            },
        ),
        (
            vec![part("ID", 0, false, &"x".repeat(70))],
            ChunkError::TooManyBytes {
                max_total_bytes: 64,
            },
        ),
        (
            vec![part("ID", 0, false, "a"), ok("ID")],
            ChunkError::MissingPartIndex,
        ),
    ];
    for (parts, error) in cases {
        let (mut gw, id) = one_in_flight(config.clone());
        let mut acks = Vec::new();
        for mut p in parts {
            p.command_id = id.clone();
            acks.push(gw.d.result(gw.at(1.0), "n1", p));
        }
        assert_eq!(
            acks.last(),
            Some(&ResultAck::Refuse(Refusal::Rejected(error.clone()))),
            "{error:?}"
        );
        assert_eq!(
            finished(&gw.drain()),
            vec![(id, false, Some(ErrorCode::InternalError))]
        );
    }
}

#[test]
fn a_repeated_part_while_collecting_is_acknowledged_and_recorded_once() {
    let (mut gw, id) = one_in_flight(DispatchConfig::default());
    let p = part(&id, 0, false, "a");
    assert_eq!(gw.d.result(gw.at(1.0), "n1", p.clone()), ResultAck::Ack);
    assert_eq!(gw.d.result(gw.at(2.0), "n1", p), ResultAck::Ack);
    assert_eq!(records(&gw.drain()).len(), 1);
}

#[test]
fn repeats_of_a_recorded_result_are_acknowledged_again() {
    let (mut gw, id) = one_in_flight(DispatchConfig::default());
    assert_eq!(gw.d.result(gw.at(1.0), "n1", ok(&id)), ResultAck::Ack);
    gw.drain();
    // The node lost our acknowledgment and resends: acknowledged, not recorded twice.
    assert_eq!(gw.d.result(gw.at(2.0), "n1", ok(&id)), ResultAck::Ack);
    assert!(gw.drain().is_empty());
    let mut other = ok(&id);
    other.result = Some(json!({"hostname": "other"}));
    assert_eq!(
        gw.d.result(gw.at(3.0), "n1", other),
        ResultAck::Refuse(Refusal::Different)
    );
    assert_eq!(
        gw.drain(),
        vec![DispatchOutput::Event(DispatchEvent::AfterEnd {
            node: "n1".to_owned(),
            command_id: id,
            input: PeerInput::Result
        })]
    );

    // The same for the parts of a chunked result.
    let (mut gw, id) = one_in_flight(DispatchConfig::default());
    gw.d.result(gw.at(1.0), "n1", part(&id, 0, false, "a"));
    gw.d.result(gw.at(1.0), "n1", part(&id, 1, true, "b"));
    gw.drain();
    assert_eq!(
        gw.d.result(gw.at(2.0), "n1", part(&id, 0, false, "a")),
        ResultAck::Ack
    );
    assert_eq!(
        gw.d.result(gw.at(2.0), "n1", part(&id, 1, true, "b")),
        ResultAck::Ack
    );
    assert_eq!(
        gw.d.result(gw.at(2.0), "n1", part(&id, 1, true, "B")),
        ResultAck::Refuse(Refusal::Different)
    );
    assert_eq!(
        gw.d.result(gw.at(2.0), "n1", part(&id, 2, true, "c")),
        ResultAck::Refuse(Refusal::Different)
    );
    assert_eq!(finished(&gw.drain()), vec![]);
}

#[test]
fn a_result_for_an_unknown_command_is_reported_and_dropped() {
    let (mut gw, id) = one_in_flight(DispatchConfig::default());
    gw.d.register("n2");
    let critical = gw.dispatch(0.0, request("n1").critical());
    gw.drain();
    let now = gw.at(1.0);
    assert_eq!(
        gw.d.result(now, "n1", ok("nope")),
        ResultAck::Refuse(Refusal::NotFound)
    );
    assert_eq!(
        gw.d.result(now, "n2", ok(&id)),
        ResultAck::Refuse(Refusal::NotFound)
    );
    assert_eq!(
        gw.d.result(now, "n1", ok(&critical)),
        ResultAck::Refuse(Refusal::NotFound)
    );
    let n = |s: &str| s.to_owned();
    assert_eq!(
        gw.drain(),
        vec![
            DispatchOutput::Event(DispatchEvent::UnknownCommand {
                node: n("n1"),
                command_id: n("nope"),
                input: PeerInput::Result
            }),
            DispatchOutput::Event(DispatchEvent::WrongNode {
                node: n("n2"),
                command_id: id.clone(),
                owner: n("n1"),
                input: PeerInput::Result
            }),
            DispatchOutput::Event(DispatchEvent::NotDispatched {
                node: n("n1"),
                command_id: critical,
                input: PeerInput::Result
            }),
        ]
    );
    // The command itself is untouched.
    assert_eq!(gw.status(&id), CommandStatus::Dispatched { at: gw.at(0.0) });
}

#[test]
fn refusals_say_why_and_map_to_rest_statuses() {
    let cases = [
        (Refusal::NotFound, "no such command for this node", 404),
        (
            Refusal::Ended(ErrorCode::Timeout),
            "the command already ended: timeout",
            409,
        ),
        (
            Refusal::Different,
            "a different result is already recorded",
            409,
        ),
        (
            Refusal::Rejected(ChunkError::DuplicatePart { part_index: 3 }),
            "the result was rejected: CommandResult part 3: partIndex 3 was already received with different content",
            409,
        ),
    ];
    for (refusal, message, status) in cases {
        assert_eq!(refusal.message(), message);
        assert_eq!(refusal.http_status(), status);
    }
}

#[test]
fn unknown_error_codes_and_failures_pass_through_unchanged() {
    let (mut gw, id) = one_in_flight(DispatchConfig::default());
    let strange = failed(&id, ErrorCode::Other("gpu_on_fire".to_owned()), Some(5));
    assert_eq!(
        gw.d.result(gw.at(1.0), "n1", strange.clone()),
        ResultAck::Ack
    );
    assert_eq!(outcome(&gw, &id), strange);
    let out = gw.drain();
    assert!(records(&out).iter().any(|r| matches!(
        r,
        DispatchRecord::Finished { command_id, synthesized: false, .. } if **command_id == *id
    )));
}

#[test]
fn a_finished_command_frees_its_slot_for_the_next() {
    let mut gw = Gw::new();
    gw.connect(0.0, "n1", 1);
    gw.d.heartbeat(gw.at(0.0), "n1", &heartbeat("n1", Some(1)));
    let a = gw.dispatch(0.0, request("n1"));
    let b = gw.dispatch(0.0, request("n1"));
    assert_eq!(sent_ids(&gw.drain()), vec![a.clone()]);
    gw.d.result(gw.at(1.0), "n1", failed(&a, ErrorCode::InvalidParams, None));
    assert_eq!(sent_ids(&gw.drain()), vec![b]);
}
