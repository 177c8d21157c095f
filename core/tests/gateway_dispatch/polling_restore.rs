//! Polling leases, and restarting from the persisted records.

use super::*;

/// The ids and `timeoutMs` of a lease answer.
fn ids(lease: &[ExecuteCommandDto]) -> Vec<(String, Option<u64>)> {
    lease
        .iter()
        .map(|c| (c.command_id.clone(), c.timeout_ms))
        .collect()
}

#[test]
fn polling_lease_returns_to_the_queue_when_unanswered() {
    let mut gw = Gw::new();
    gw.heartbeat(0.0, "n1");
    let a = gw.dispatch(0.0, request("n1").timeout(Duration::from_secs(120)));
    assert_eq!(gw.status(&a), CommandStatus::Queued { position: 0 });
    let lease = gw.d.lease(gw.at(1.0), "n1", 10);
    assert_eq!(ids(&lease), vec![(a.clone(), Some(119_000))]);
    assert_eq!(lease[0].protocol_version, None);
    assert_eq!(gw.status(&a), CommandStatus::Dispatched { at: gw.at(1.0) });
    // The same command appears in every answer until its result is recorded.
    assert_eq!(
        ids(&gw.d.lease(gw.at(3.0), "n1", 10)),
        vec![(a.clone(), Some(117_000))]
    );
    gw.heartbeat(30.0, "n1");
    gw.drain();
    // No poll for 30 s after the last one: the lease ends at exactly 33 s.
    gw.run_until(32.999);
    assert_eq!(gw.status(&a), CommandStatus::Dispatched { at: gw.at(1.0) });
    gw.run_until(33.0);
    assert_eq!(gw.status(&a), CommandStatus::Queued { position: 0 });
    assert!(gw.drain().contains(&DispatchOutput::Status {
        command_id: a.as_str().into(),
        status: CommandStatus::Queued { position: 0 }
    }));
    assert_eq!(gw.d.transport("n1"), None);
    // The next poll leases it again; a result for it is recorded as usual.
    assert_eq!(
        ids(&gw.d.lease(gw.at(41.0), "n1", 10)),
        vec![(a.clone(), Some(79_000))]
    );
    assert_eq!(gw.d.result(gw.at(42.0), "n1", ok(&a)), ResultAck::Ack);
    assert!(gw.d.lease(gw.at(43.0), "n1", 10).is_empty());
    assert_eq!(finished(&gw.drain()), vec![(a, true, None)]);
}

#[test]
fn a_result_for_a_command_whose_lease_ended_is_recorded() {
    let mut gw = Gw::new();
    gw.heartbeat(0.0, "n1");
    let a = gw.dispatch(0.0, request("n1").timeout(Duration::from_secs(120)));
    let _ = gw.d.lease(gw.at(0.0), "n1", 10);
    gw.run_until(30.0);
    assert_eq!(gw.status(&a), CommandStatus::Queued { position: 0 });
    assert_eq!(gw.d.result(gw.at(31.0), "n1", ok(&a)), ResultAck::Ack);
    assert_eq!(finished(&gw.drain()), vec![(a, true, None)]);
}

#[test]
fn a_lease_respects_slots_max_and_dispatch_order() {
    let mut gw = Gw::new();
    gw.d.heartbeat(gw.at(0.0), "n1", &heartbeat("n1", Some(2)));
    let ids3: Vec<String> = (0..3).map(|_| gw.dispatch(0.0, request("n1"))).collect();
    let first = gw.d.lease(gw.at(1.0), "n1", 1);
    assert_eq!(ids(&first), vec![(ids3[0].clone(), Some(29_000))]);
    // Two are leased (slots), one is listed (max).
    assert_eq!(gw.d.in_flight("n1"), ids3[..2].to_vec());
    assert_eq!(gw.status(&ids3[2]), CommandStatus::Queued { position: 0 });
    gw.d.result(gw.at(2.0), "n1", ok(&ids3[0]));
    assert_eq!(
        ids(&gw.d.lease(gw.at(3.0), "n1", 10))
            .into_iter()
            .map(|(id, _)| id)
            .collect::<Vec<_>>(),
        ids3[1..].to_vec()
    );
}

#[test]
fn an_offline_polling_node_leases_nothing_new() {
    let mut gw = Gw::new();
    gw.d.register("n1");
    let a = gw.dispatch(0.0, request("n1"));
    assert!(gw.d.lease(gw.at(1.0), "n1", 10).is_empty());
    gw.heartbeat(2.0, "n1");
    assert_eq!(
        ids(&gw.d.lease(gw.at(3.0), "n1", 10)),
        vec![(a, Some(27_000))]
    );
}

#[test]
fn a_busy_polled_command_waits_for_retry_after_ms() {
    let mut gw = Gw::new();
    gw.heartbeat(0.0, "n1");
    let a = gw.dispatch(0.0, request("n1"));
    let _ = gw.d.lease(gw.at(1.0), "n1", 10);
    gw.d.result(gw.at(2.0), "n1", failed(&a, ErrorCode::Busy, Some(3_000)));
    assert!(gw.d.lease(gw.at(4.0), "n1", 10).is_empty());
    gw.run_until(5.0);
    assert_eq!(
        ids(&gw.d.lease(gw.at(5.0), "n1", 10)),
        vec![(a, Some(25_000))]
    );
}

#[test]
fn a_cancelled_leased_command_disappears_and_its_result_is_refused() {
    let mut gw = Gw::new();
    gw.heartbeat(0.0, "n1");
    let a = gw.dispatch(0.0, request("n1"));
    let _ = gw.d.lease(gw.at(1.0), "n1", 10);
    assert_eq!(
        gw.d.cancel(gw.at(2.0), &a, None),
        Ok(CancelOutcome::Cancelled)
    );
    assert!(gw.d.lease(gw.at(3.0), "n1", 10).is_empty());
    let refusal = match gw.d.result(gw.at(4.0), "n1", ok(&a)) {
        ResultAck::Refuse(refusal) => refusal,
        ResultAck::Ack => panic!("a cancelled command's result must be refused"),
    };
    assert_eq!(refusal, Refusal::Ended(ErrorCode::Cancelled));
    assert_eq!(refusal.http_status(), 409);
}

#[test]
fn a_polling_node_that_connects_to_the_hub_gets_its_leases_pushed() {
    let mut gw = Gw::new();
    gw.heartbeat(0.0, "n1");
    let a = gw.dispatch(0.0, request("n1").timeout(Duration::from_secs(120)));
    let _ = gw.d.lease(gw.at(1.0), "n1", 10);
    gw.drain();
    gw.connect(2.0, "n1", 9);
    let sent = executes(&gw.drain());
    assert_eq!(
        sent.iter()
            .map(|s| (s.1, s.2.command_id.clone()))
            .collect::<Vec<_>>(),
        vec![(9, a)]
    );
    // The hub attachment ends polling leases: no lease timer moves the command back.
    gw.run_until(40.0);
    assert_eq!(gw.d.in_flight("n1").len(), 1);
}

/// Every record among `outputs`, through JSON and back, as a store would keep them.
fn stored(outputs: &[DispatchOutput]) -> Vec<DispatchRecord> {
    records(outputs)
        .iter()
        .map(|r| {
            let json = serde_json::to_string(r).expect("records serialize");
            serde_json::from_str(&json).expect("records deserialize")
        })
        .collect()
}

#[test]
fn restart_from_persisted_state_loses_no_command() {
    let mut gw = Gw::new();
    let mut log = Vec::new();
    gw.connect(0.0, "n1", 1);
    gw.d.heartbeat(gw.at(0.0), "n1", &heartbeat("n1", Some(3)));
    gw.d.set_scopes(gw.at(0.0), "n1", scopes(&["screen.*"]));
    let a = gw.dispatch(1.0, request("n1").timeout(Duration::from_secs(100)));
    let f = gw.dispatch(1.0, request("n1"));
    let g = gw.dispatch(1.0, request("n1").scope("screen.capture"));
    let e = gw.dispatch(1.0, request("n1"));
    let b = gw.dispatch(2.0, request("n1").params(json!({"n": 1})));
    let c = gw.dispatch(2.0, request("n1").critical());
    let d = gw.dispatch(2.0, request("n1").critical());
    let h = gw.dispatch(2.0, request("n1").timeout(Duration::from_secs(5)));
    gw.d.approve(gw.at(3.0), &d).unwrap();
    gw.d.cancel(gw.at(3.0), &f, None).unwrap();
    gw.d.result(gw.at(3.0), "n1", part(&g, 0, false, "hello "));
    // a ends, e takes its slot and ends, b takes the slot.
    gw.d.result(gw.at(4.0), "n1", ok(&a));
    let e_result = ok(&e);
    gw.d.result(gw.at(4.5), "n1", e_result.clone());
    log.extend(gw.drain());
    assert_eq!(gw.d.in_flight("n1"), vec![f.clone(), g.clone(), b.clone()]);

    // The gateway stops at 5 s and starts again at 10 s.
    let records = stored(&log);
    let mut again = Dispatcher::new(
        DispatchConfig::default(),
        gw.at(10.0),
        UNIX_ORIGIN + Duration::from_secs(10),
    );
    again.restore(gw.at(10.0), records).unwrap();
    let out: Vec<DispatchOutput> = std::iter::from_fn(|| again.poll_output()).collect();
    assert_eq!(
        finished(&out),
        vec![(f.clone(), false, Some(ErrorCode::Cancelled))]
    );
    assert!(!again.is_online(gw.at(10.0), "n1"));
    assert_eq!(again.scopes("n1"), Some(&scopes(&["screen.*"])));
    assert_eq!(
        again.last_seen_unix_ms("n1"),
        Some(UNIX_ORIGIN.as_millis() as u64)
    );
    assert!(matches!(again.status(&a), Some(CommandStatus::Finished(_))));
    assert!(matches!(again.status(&e), Some(CommandStatus::Finished(_))));
    assert_eq!(again.status(&c), Some(CommandStatus::AwaitingApproval));
    assert_eq!(
        again.status(&g),
        Some(CommandStatus::Queued { position: 0 })
    );
    assert_eq!(
        again.status(&b),
        Some(CommandStatus::Queued { position: 1 })
    );
    // Creation order: d (approved after h was created) comes before h now.
    assert_eq!(
        again.status(&d),
        Some(CommandStatus::Queued { position: 2 })
    );
    // h's deadline passed while the gateway was down.
    again.handle_timeout(gw.at(10.0));
    let out: Vec<DispatchOutput> = std::iter::from_fn(|| again.poll_output()).collect();
    assert_eq!(finished(&out), vec![(h, false, Some(ErrorCode::Timeout))]);

    // The node comes back: what it had and what waited go out, deadlines as they were.
    again.node_connected(gw.at(11.0), "n1", hub(2), None);
    let out: Vec<DispatchOutput> = std::iter::from_fn(|| again.poll_output()).collect();
    let sent = executes(&out);
    assert_eq!(
        sent.iter()
            .map(|s| (s.2.command_id.clone(), s.2.timeout_ms))
            .collect::<Vec<_>>(),
        vec![
            (g.clone(), Some(20_000)),
            (b.clone(), Some(21_000)),
            (d.clone(), Some(21_000))
        ]
    );
    assert_eq!(sent[1].2.params, Some(json!({"n": 1})));
    // The part buffered before the restart completes with the next one.
    assert_eq!(
        again.result(gw.at(12.0), "n1", part(&g, 1, true, "world")),
        ResultAck::Ack
    );
    match again.status(&g) {
        Some(CommandStatus::Finished(outcome)) => {
            assert_eq!(outcome.result.result, Some(json!({"text": "hello world"})))
        }
        other => panic!("g did not finish: {other:?}"),
    }
    // A finished result is still recognized when the node resends it.
    assert_eq!(again.result(gw.at(12.0), "n1", e_result), ResultAck::Ack);
    assert_eq!(
        again.result(gw.at(12.0), "n1", part(&g, 0, false, "hello ")),
        ResultAck::Ack
    );
}

#[test]
fn restore_only_on_a_fresh_dispatcher_and_skips_what_does_not_fit() {
    let mut gw = Gw::new();
    gw.d.register("n1");
    assert_eq!(
        gw.d.restore(gw.at(0.0), Vec::new()),
        Err(DispatchError::NotFresh)
    );
    let mut fresh = Dispatcher::new(DispatchConfig::default(), gw.at(0.0), UNIX_ORIGIN);
    fresh
        .restore(
            gw.at(0.0),
            vec![DispatchRecord::Approved {
                command_id: "ghost".to_owned(),
            }],
        )
        .unwrap();
    assert_eq!(
        fresh.poll_output(),
        Some(DispatchOutput::Event(DispatchEvent::RestoreSkipped {
            reason: "a record for unknown command ghost".to_owned()
        }))
    );
}

#[test]
fn restore_takes_node_and_command_records_in_any_relative_order() {
    let mut gw = Gw::new();
    gw.d.register("n1");
    gw.d.register("gone");
    let a = gw.dispatch(1.0, request("n1"));
    let b = gw.dispatch(1.0, request("gone"));
    let mut log = records(&gw.drain());
    // Commands first, then the nodes; and "gone" was removed meanwhile (a store that lost the
    // command's end): its command cannot wait for it.
    log.sort_by_key(|r| matches!(r, DispatchRecord::Node(_)));
    log.push(DispatchRecord::NodeRemoved {
        node: "gone".to_owned(),
    });
    let mut again = Dispatcher::new(DispatchConfig::default(), gw.at(2.0), UNIX_ORIGIN);
    again.restore(gw.at(2.0), log).unwrap();
    let out: Vec<DispatchOutput> = std::iter::from_fn(|| again.poll_output()).collect();
    assert_eq!(finished(&out), vec![(b, false, Some(ErrorCode::Cancelled))]);
    assert_eq!(
        again.status(&a),
        Some(CommandStatus::Queued { position: 0 })
    );
    assert!(!again.is_registered("gone"));
}

#[test]
fn records_serialize_as_documented() {
    let mut gw = Gw::new();
    gw.connect(0.0, "n1", 1);
    let id = gw.dispatch(
        1.5,
        DispatchRequest::new("n1", "system.info")
            .params(json!({"verbose": true}))
            .timeout(Duration::from_secs(10)),
    );
    gw.d.result(gw.at(2.0), "n1", ok(&id));
    let json: Vec<String> = records(&gw.drain())
        .iter()
        .map(|r| serde_json::to_string(r).unwrap().replace(&id, "ID"))
        .collect();
    assert_eq!(
        json,
        vec![
            r#"{"type":"node","node":"n1","scopes":[]}"#,
            r#"{"type":"node","node":"n1","scopes":[],"lastSeenMs":1700000000000}"#,
            r#"{"type":"created","commandId":"ID","node":"n1","command":"system.info","params":{"verbose":true},"timeoutMs":10000,"createdAtMs":1700000001500,"critical":false}"#,
            r#"{"type":"finished","commandId":"ID","result":{"commandId":"ID","ok":true,"result":{"hostname":"build-01"},"durationMs":5},"finishedAtMs":1700000002000,"synthesized":false}"#,
        ]
    );
}
