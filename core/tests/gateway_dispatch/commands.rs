//! The application's calls: dispatch and its refusals, deadlines, busy retries, approval,
//! cancellation, status and progress, and how long outcomes are remembered.

use super::*;

/// A hub node `n1` on connection 1, online from 0 s, outputs drained.
fn connected() -> Gw {
    let mut gw = Gw::new();
    gw.connect(0.0, "n1", 1);
    gw.drain();
    gw
}

fn finished_at(out: &[DispatchOutput], id: &str) -> Option<(Instant, String, bool)> {
    out.iter().find_map(|o| match o {
        DispatchOutput::Finished {
            command_id,
            outcome,
            ..
        } if **command_id == *id => Some((
            outcome.finished_at,
            outcome
                .result
                .error
                .as_ref()
                .map_or(String::new(), |e| format!("{}: {}", e.code, e.message)),
            outcome.synthesized,
        )),
        _ => None,
    })
}

#[test]
fn busy_result_is_retried_after_retry_after_ms() {
    let mut gw = connected();
    let id = gw.dispatch(1.0, request("n1"));
    assert_eq!(sent_ids(&gw.drain()), vec![id.clone()]);
    let busy = failed(&id, ErrorCode::Busy, Some(5_000));
    assert_eq!(gw.d.result(gw.at(2.0), "n1", busy), ResultAck::Ack);
    let out = gw.drain();
    assert!(finished(&out).is_empty(), "the caller sees only the end");
    assert_eq!(gw.status(&id), CommandStatus::Queued { position: 0 });
    // Nothing else goes to the node while it is paused either.
    let other = gw.dispatch(3.0, request("n1"));
    gw.run_until(6.999);
    assert!(sent_ids(&gw.drain()).is_empty());
    gw.run_until(7.0);
    let sent = executes(&gw.drain());
    assert_eq!(
        sent.iter()
            .map(|s| (s.2.command_id.clone(), s.2.timeout_ms))
            .collect::<Vec<_>>(),
        vec![(id.clone(), Some(24_000)), (other, Some(30_000 - 4_000))]
    );
    assert_eq!(gw.d.result(gw.at(8.0), "n1", ok(&id)), ResultAck::Ack);
    assert_eq!(finished(&gw.drain()), vec![(id, true, None)]);
}

#[test]
fn busy_without_retry_after_ms_waits_the_default() {
    let mut gw = connected();
    let id = gw.dispatch(1.0, request("n1"));
    gw.drain();
    let _ =
        gw.d.result(gw.at(2.0), "n1", failed(&id, ErrorCode::Busy, None));
    gw.run_until(2.999);
    assert!(sent_ids(&gw.drain()).is_empty());
    gw.run_until(3.0);
    assert_eq!(sent_ids(&gw.drain()), vec![id]);
}

#[test]
fn busy_until_the_deadline_ends_in_timeout() {
    let mut gw = connected();
    let id = gw.dispatch(0.0, request("n1").timeout(Duration::from_secs(10)));
    gw.drain();
    let _ =
        gw.d.result(gw.at(1.0), "n1", failed(&id, ErrorCode::Busy, Some(4_000)));
    gw.run_until(5.0);
    assert_eq!(sent_ids(&gw.drain()), vec![id.clone()]);
    let _ =
        gw.d.result(gw.at(6.0), "n1", failed(&id, ErrorCode::Busy, Some(4_000)));
    // The pause ends at 10 s, the deadline: the command ends, it does not go out with no time.
    gw.run_until(10.0);
    let out = gw.drain();
    assert!(sent_ids(&out).is_empty());
    assert_eq!(
        finished_at(&out, &id),
        Some((
            gw.at(10.0),
            "timeout: not dispatched within the timeout of 10000 ms".to_owned(),
            true
        ))
    );
    assert_eq!(finished(&out).len(), 1);
}

#[test]
fn a_queued_command_times_out_at_its_deadline_exactly() {
    let mut gw = Gw::new();
    gw.d.register("n1");
    let id = gw.dispatch(1.0, request("n1").timeout(Duration::from_secs(5)));
    gw.run_until(5.999);
    assert!(finished(&gw.drain()).is_empty());
    gw.run_until(6.0);
    let out = gw.drain();
    assert_eq!(finished_at(&out, &id).map(|f| f.0), Some(gw.at(6.0)));
    let outcome = match gw.status(&id) {
        CommandStatus::Finished(outcome) => outcome,
        other => panic!("not finished: {other:?}"),
    };
    assert_eq!(outcome.result.duration_ms, Some(5_000));
    assert!(outcome.synthesized);
}

#[test]
fn a_dispatched_command_times_out_at_its_deadline_plus_the_grace() {
    let mut gw = connected();
    let id = gw.dispatch(0.0, request("n1").timeout(Duration::from_secs(10)));
    gw.run_until(11.999);
    assert!(finished(&gw.drain()).is_empty());
    gw.run_until(12.0);
    assert_eq!(
        finished_at(&gw.drain(), &id),
        Some((
            gw.at(12.0),
            "timeout: no result within the timeout of 10000 ms".to_owned(),
            true
        ))
    );
    assert_eq!(
        gw.d.result(gw.at(13.0), "n1", ok(&id)),
        ResultAck::Refuse(Refusal::Ended(ErrorCode::Timeout))
    );
}

#[test]
fn the_nodes_own_timeout_inside_the_grace_is_the_outcome() {
    let mut gw = connected();
    let id = gw.dispatch(0.0, request("n1").timeout(Duration::from_secs(10)));
    gw.drain();
    let node_timeout = failed(&id, ErrorCode::Timeout, None);
    assert_eq!(
        gw.d.result(gw.at(10.5), "n1", node_timeout.clone()),
        ResultAck::Ack
    );
    let out = gw.drain();
    assert_eq!(finished_at(&out, &id).map(|f| f.2), Some(false));
    gw.run_until(20.0);
    assert!(finished(&gw.drain()).is_empty());
}

#[test]
fn critical_command_waits_for_approval_and_rejection_is_approval_rejected() {
    let mut gw = connected();
    let rejected = gw.dispatch(1.0, request("n1").critical());
    let out = gw.drain();
    assert!(sent_ids(&out).is_empty());
    assert!(out.contains(&DispatchOutput::Status {
        command_id: rejected.as_str().into(),
        status: CommandStatus::AwaitingApproval
    }));
    assert_eq!(gw.status(&rejected), CommandStatus::AwaitingApproval);
    gw.d.reject(gw.at(3.0), &rejected, Some("not now")).unwrap();
    assert_eq!(
        finished_at(&gw.drain(), &rejected),
        Some((
            gw.at(3.0),
            "approval_rejected: rejected by an operator: not now".to_owned(),
            true
        ))
    );

    let approved = gw.dispatch(2.0, request("n1").critical());
    gw.drain();
    gw.d.approve(gw.at(4.0), &approved).unwrap();
    let out = gw.drain();
    assert!(records(&out).contains(&DispatchRecord::Approved {
        command_id: approved.clone()
    }));
    let sent = executes(&out);
    assert_eq!(sent.len(), 1);
    // The deadline runs from the dispatch, not from the approval.
    assert_eq!(sent[0].2.timeout_ms, Some(28_000));
}

#[test]
fn approval_errors_are_clear() {
    let mut gw = connected();
    let plain = gw.dispatch(1.0, request("n1"));
    let critical = gw.dispatch(1.0, request("n1").critical());
    let now = gw.at(2.0);
    assert_eq!(
        gw.d.approve(now, &plain),
        Err(DispatchError::NotAwaitingApproval {
            command_id: plain.clone()
        })
    );
    assert_eq!(
        gw.d.approve(now, "nope"),
        Err(DispatchError::UnknownCommand {
            command_id: "nope".to_owned()
        })
    );
    gw.d.approve(now, &critical).unwrap();
    assert_eq!(
        gw.d.reject(now, &critical, None),
        Err(DispatchError::NotAwaitingApproval {
            command_id: critical.clone()
        })
    );
    gw.d.result(now, "n1", ok(&critical));
    assert_eq!(
        gw.d.approve(now, &critical),
        Err(DispatchError::AlreadyFinished {
            command_id: critical
        })
    );
}

#[test]
fn a_critical_command_not_approved_before_its_deadline_times_out() {
    let mut gw = connected();
    let id = gw.dispatch(
        0.0,
        request("n1").critical().timeout(Duration::from_secs(60)),
    );
    gw.run_until(60.0);
    assert_eq!(
        finished_at(&gw.drain(), &id).map(|f| f.1),
        Some("timeout: not approved within the timeout of 60000 ms".to_owned())
    );
}

#[test]
fn cancel_of_a_queued_and_of_a_dispatched_command() {
    let mut gw = Gw::new();
    gw.d.register("n1");
    let queued = gw.dispatch(0.0, request("n1"));
    gw.drain();
    assert_eq!(
        gw.d.cancel(gw.at(1.0), &queued, Some("user")),
        Ok(CancelOutcome::Cancelled)
    );
    assert_eq!(
        finished_at(&gw.drain(), &queued),
        Some((gw.at(1.0), "cancelled: cancelled: user".to_owned(), true))
    );

    gw.connect(2.0, "n1", 1);
    let sent = gw.dispatch(2.0, request("n1"));
    gw.drain();
    assert_eq!(
        gw.d.cancel(gw.at(3.0), &sent, Some("user_cancelled")),
        Ok(CancelOutcome::Requested)
    );
    let out = gw.drain();
    assert!(out.contains(&DispatchOutput::Send {
        node: "n1".into(),
        conn: ConnId(1),
        call: Box::new(GatewayCall::CancelCommand(
            nodelink_core::wire::dto::CancelCommandDto {
                command_id: sent.clone(),
                reason: Some("user_cancelled".to_owned()),
            }
        )),
    }));
    assert!(records(&out).contains(&DispatchRecord::CancelRequested {
        command_id: sent.clone()
    }));
    assert_eq!(
        gw.status(&sent),
        CommandStatus::Cancelling { since: gw.at(3.0) }
    );
    // Asking again sends nothing more.
    assert_eq!(
        gw.d.cancel(gw.at(3.5), &sent, None),
        Ok(CancelOutcome::Requested)
    );
    assert!(gw.drain().is_empty());
    // The node's answer ends it.
    let answer = failed(&sent, ErrorCode::Cancelled, None);
    assert_eq!(gw.d.result(gw.at(4.0), "n1", answer), ResultAck::Ack);
    assert_eq!(
        finished(&gw.drain()),
        vec![(sent.clone(), false, Some(ErrorCode::Cancelled))]
    );
    assert_eq!(
        gw.d.cancel(gw.at(5.0), &sent, None),
        Err(DispatchError::AlreadyFinished { command_id: sent })
    );
    assert_eq!(
        gw.d.cancel(gw.at(5.0), "nope", None),
        Err(DispatchError::UnknownCommand {
            command_id: "nope".to_owned()
        })
    );
}

#[test]
fn a_cancel_the_node_does_not_answer_ends_after_cancel_wait() {
    let mut gw = connected();
    let id = gw.dispatch(0.0, request("n1"));
    gw.d.cancel(gw.at(1.0), &id, None).unwrap();
    gw.run_until(10.999);
    assert!(finished(&gw.drain()).is_empty());
    gw.run_until(11.0);
    assert_eq!(
        finished_at(&gw.drain(), &id),
        Some((
            gw.at(11.0),
            "cancelled: cancelled; the node did not confirm in time".to_owned(),
            true
        ))
    );
}

#[test]
fn a_cancel_near_the_deadline_waits_only_until_deadline_plus_grace() {
    let mut gw = connected();
    let id = gw.dispatch(0.0, request("n1").timeout(Duration::from_secs(5)));
    gw.d.cancel(gw.at(4.0), &id, None).unwrap();
    gw.run_until(7.0);
    assert_eq!(finished_at(&gw.drain(), &id).map(|f| f.0), Some(gw.at(7.0)));
}

#[test]
fn the_real_result_wins_over_a_pending_cancel_and_busy_means_cancelled() {
    let mut gw = connected();
    let a = gw.dispatch(0.0, request("n1"));
    let b = gw.dispatch(0.0, request("n1"));
    gw.d.cancel(gw.at(1.0), &a, None).unwrap();
    gw.d.cancel(gw.at(1.0), &b, None).unwrap();
    gw.drain();
    gw.d.result(gw.at(2.0), "n1", ok(&a));
    gw.d.result(gw.at(2.0), "n1", failed(&b, ErrorCode::Busy, Some(1000)));
    assert_eq!(
        finished(&gw.drain()),
        vec![(a, true, None), (b, false, Some(ErrorCode::Cancelled))]
    );
}

#[test]
fn a_cancel_for_a_command_whose_connection_ended_is_immediate() {
    let mut gw = connected();
    let id = gw.dispatch(0.0, request("n1"));
    gw.d.node_disconnected(gw.at(1.0), "n1", ConnId(1));
    gw.drain();
    assert_eq!(
        gw.d.cancel(gw.at(2.0), &id, None),
        Ok(CancelOutcome::Cancelled)
    );
    assert!(gw
        .drain()
        .iter()
        .all(|o| !matches!(o, DispatchOutput::Send { .. })));
}

#[test]
fn a_reconnect_while_a_cancel_is_pending_repeats_the_cancel() {
    let mut gw = connected();
    let id = gw.dispatch(0.0, request("n1"));
    gw.d.cancel(gw.at(1.0), &id, None).unwrap();
    gw.d.node_disconnected(gw.at(2.0), "n1", ConnId(1));
    gw.drain();
    gw.connect(3.0, "n1", 2);
    let out = gw.drain();
    assert!(sent_ids(&out).is_empty());
    assert!(out.contains(&DispatchOutput::Send {
        node: "n1".into(),
        conn: ConnId(2),
        call: Box::new(GatewayCall::CancelCommand(
            nodelink_core::wire::dto::CancelCommandDto {
                command_id: id,
                reason: None,
            }
        )),
    }));
}

#[test]
fn queue_full_is_a_clear_error() {
    let mut gw = Gw::with(DispatchConfig {
        max_queued_per_node: 2,
        ..DispatchConfig::default()
    });
    gw.connect(0.0, "n1", 1);
    gw.d.heartbeat(gw.at(0.0), "n1", &heartbeat("n1", Some(1)));
    gw.dispatch(1.0, request("n1")); // in flight: not waiting
    gw.dispatch(1.0, request("n1"));
    gw.dispatch(1.0, request("n1").critical()); // awaiting approval counts
    let full = gw.d.dispatch(gw.at(1.0), &mut gw.rng, request("n1"));
    assert_eq!(
        full,
        Err(DispatchError::QueueFull {
            node: "n1".to_owned(),
            limit: 2
        })
    );
    assert_eq!(
        full.unwrap_err().to_string(),
        "the queue of node \"n1\" is full (2 commands waiting)"
    );
    assert_eq!(gw.d.command_count(), 3);
}

#[test]
fn invalid_timeouts_and_unknown_nodes_are_refused() {
    let mut gw = connected();
    let now = gw.at(1.0);
    let max = Duration::from_secs(24 * 3600);
    for timeout in [Duration::ZERO, max + Duration::from_millis(1)] {
        assert_eq!(
            gw.d.dispatch(now, &mut gw.rng, request("n1").timeout(timeout)),
            Err(DispatchError::InvalidTimeout { timeout, max })
        );
    }
    assert!(gw
        .d
        .dispatch(now, &mut gw.rng, request("n1").timeout(max))
        .is_ok());
    assert_eq!(
        gw.d.dispatch(now, &mut gw.rng, request("ghost")),
        Err(DispatchError::UnknownNode {
            node: "ghost".to_owned()
        })
    );
}

#[test]
fn command_ids_are_uuids_from_the_rng_and_the_request_travels_whole() {
    let mut gw = connected();
    let who = nodelink_core::wire::dto::OriginatedBy {
        user_id: Some("usr_abc".to_owned()),
        agent_id: None,
        session_id: None,
    };
    let id = gw.dispatch(
        1.0,
        DispatchRequest::new("n1", "screen.capture")
            .params(json!({"quality": 80}))
            .originated_by(who.clone()),
    );
    let mut rng = Rng::from_seed([7; 32]);
    assert_eq!(id, rng.uuid_v4());
    let sent = executes(&gw.drain());
    assert_eq!(
        sent[0].2,
        ExecuteCommandDto {
            command_id: id,
            command: "screen.capture".to_owned(),
            params: Some(json!({"quality": 80})),
            timeout_ms: Some(30_000),
            originated_by: Some(who),
            protocol_version: Some("2026-04-01".to_owned()),
        }
    );
}

#[test]
fn status_outputs_follow_a_command_and_progress_makes_it_running() {
    let mut gw = Gw::new();
    gw.d.register("n1");
    let id = gw.dispatch(0.0, request("n1"));
    gw.connect(1.0, "n1", 1);
    let progress = nodelink_core::wire::dto::CommandProgressDto {
        command_id: id.clone(),
        progress: 0.5,
        step: None,
        step_count: None,
        eta_ms: Some(100),
        message: None,
    };
    gw.d.progress(gw.at(2.0), "n1", progress.clone());
    assert_eq!(
        gw.status(&id),
        CommandStatus::Running {
            progress: progress.clone()
        }
    );
    gw.d.result(gw.at(3.0), "n1", ok(&id));
    let statuses: Vec<CommandStatus> = gw
        .drain()
        .into_iter()
        .filter_map(|o| match o {
            DispatchOutput::Status { status, .. } => Some(status),
            _ => None,
        })
        .collect();
    assert_eq!(
        statuses,
        vec![
            CommandStatus::Queued { position: 0 },
            CommandStatus::Dispatched { at: gw.at(1.0) },
            CommandStatus::Running { progress },
        ]
    );
}

#[test]
fn without_emit_status_there_are_no_status_outputs() {
    let mut gw = Gw::with(DispatchConfig {
        emit_status: false,
        ..DispatchConfig::default()
    });
    gw.connect(0.0, "n1", 1);
    gw.dispatch(0.0, request("n1"));
    gw.dispatch(0.0, request("n1").critical());
    assert!(gw
        .drain()
        .iter()
        .all(|o| !matches!(o, DispatchOutput::Status { .. })));
}

#[test]
fn progress_that_cannot_be_used_is_an_event() {
    let mut gw = connected();
    gw.d.register("n2");
    let id = gw.dispatch(0.0, request("n1"));
    let critical = gw.dispatch(0.0, request("n1").critical());
    gw.drain();
    let report = |command_id: &str| nodelink_core::wire::dto::CommandProgressDto {
        command_id: command_id.to_owned(),
        progress: 0.1,
        step: None,
        step_count: None,
        eta_ms: None,
        message: None,
    };
    gw.d.progress(gw.at(1.0), "n1", report("nope"));
    gw.d.progress(gw.at(1.0), "n2", report(&id));
    gw.d.progress(gw.at(1.0), "n1", report(&critical));
    let n = |s: &str| s.to_owned();
    assert_eq!(
        gw.drain(),
        vec![
            DispatchOutput::Event(DispatchEvent::UnknownCommand {
                node: n("n1"),
                command_id: n("nope"),
                input: PeerInput::Progress
            }),
            DispatchOutput::Event(DispatchEvent::WrongNode {
                node: n("n2"),
                command_id: id.clone(),
                owner: n("n1"),
                input: PeerInput::Progress
            }),
            DispatchOutput::Event(DispatchEvent::NotDispatched {
                node: n("n1"),
                command_id: critical,
                input: PeerInput::Progress
            }),
        ]
    );
    assert_eq!(gw.status(&id), CommandStatus::Dispatched { at: gw.at(0.0) });
    gw.d.result(gw.at(1.0), "n1", ok(&id));
    gw.drain();
    gw.d.progress(gw.at(2.0), "n1", report(&id));
    assert_eq!(
        gw.drain(),
        vec![DispatchOutput::Event(DispatchEvent::AfterEnd {
            node: n("n1"),
            command_id: id.clone(),
            input: PeerInput::Progress
        })]
    );
}

#[test]
fn finished_outcomes_are_forgotten_after_finished_memory_and_beyond_finished_max() {
    let mut gw = Gw::with(DispatchConfig {
        finished_max: 2,
        ..DispatchConfig::default()
    });
    gw.connect(0.0, "n1", 1);
    let ids: Vec<String> = (0..3).map(|_| gw.dispatch(0.0, request("n1"))).collect();
    for (i, id) in ids.iter().enumerate() {
        gw.d.result(gw.at(1.0 + i as f64), "n1", ok(id));
    }
    let out = gw.drain();
    assert!(records(&out).contains(&DispatchRecord::Forgotten {
        command_id: ids[0].as_str().into()
    }));
    assert_eq!(gw.d.status(&ids[0]), None);
    assert!(matches!(gw.status(&ids[1]), CommandStatus::Finished(_)));
    gw.run_until(601.999);
    assert!(gw.d.status(&ids[1]).is_some());
    gw.run_until(602.0);
    assert_eq!(gw.d.status(&ids[1]), None);
    assert!(gw.d.status(&ids[2]).is_some());
    gw.run_until(603.0);
    assert_eq!(gw.d.command_count(), 0);
    // A result for a forgotten command is an unknown command.
    assert_eq!(
        gw.d.result(gw.at(604.0), "n1", ok(&ids[2])),
        ResultAck::Refuse(Refusal::NotFound)
    );
}
