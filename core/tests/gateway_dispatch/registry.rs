//! Online and offline, attaching and detaching, capacity, scopes and revocation.

use super::*;

#[test]
fn node_is_offline_at_exactly_90s_after_its_last_heartbeat() {
    let mut gw = Gw::new();
    gw.heartbeat(10.0, "n1");
    assert_eq!(
        gw.drain()
            .into_iter()
            .filter(|o| !matches!(o, DispatchOutput::Persist(_)))
            .collect::<Vec<_>>(),
        vec![DispatchOutput::NodeOnline {
            node: "n1".to_owned()
        }]
    );
    gw.heartbeat(40.0, "n1");
    gw.heartbeat(70.0, "n1");
    gw.run_until(159.999);
    assert!(gw.d.is_online(gw.at(159.999), "n1"));
    assert!(gw
        .drain()
        .iter()
        .all(|o| !matches!(o, DispatchOutput::NodeOffline { .. })));
    gw.run_until(160.0);
    assert!(!gw.d.is_online(gw.at(160.0), "n1"));
    let out = gw.drain();
    assert!(out.contains(&DispatchOutput::NodeOffline {
        node: "n1".to_owned(),
        at: gw.at(160.0)
    }));
    assert_eq!(gw.d.last_heartbeat("n1"), Some(gw.at(70.0)));
    // The offline change is persisted with the last heartbeat as last-seen.
    assert_eq!(
        gw.d.last_seen_unix_ms("n1"),
        Some(UNIX_ORIGIN.as_millis() as u64 + 70_000)
    );
}

#[test]
fn a_late_handle_timeout_still_reports_the_exact_offline_instant() {
    let mut gw = Gw::new();
    gw.heartbeat(0.0, "n1");
    gw.d.handle_timeout(gw.at(500.0));
    assert!(gw.drain().contains(&DispatchOutput::NodeOffline {
        node: "n1".to_owned(),
        at: gw.at(90.0)
    }));
}

#[test]
fn heartbeats_touch_no_timer_and_the_offline_timer_moves_when_it_fires_early() {
    let mut gw = Gw::new();
    gw.heartbeat(0.0, "n1");
    assert_eq!(gw.d.poll_timeout(), Some(gw.at(90.0)));
    gw.heartbeat(30.0, "n1");
    // The timer still says 90: a spurious wake-up that re-arms it at 120.
    assert_eq!(gw.d.poll_timeout(), Some(gw.at(90.0)));
    gw.d.handle_timeout(gw.at(90.0));
    assert_eq!(gw.d.poll_timeout(), Some(gw.at(120.0)));
    assert!(gw.d.is_online(gw.at(119.0), "n1"));
    gw.d.handle_timeout(gw.at(120.0));
    assert!(!gw.d.is_online(gw.at(120.0), "n1"));
    assert_eq!(gw.d.poll_timeout(), None);
}

#[test]
fn a_hub_connection_counts_as_a_heartbeat_and_a_poll_does_not() {
    let mut gw = Gw::new();
    gw.connect(5.0, "hub-node", 1);
    assert!(gw.d.is_online(gw.at(94.9), "hub-node"));
    assert!(!gw.d.is_online(gw.at(95.0), "hub-node"));
    let _ = gw.d.lease(gw.at(5.0), "poll-node", 10);
    assert!(!gw.d.is_online(gw.at(5.0), "poll-node"));
    assert!(gw.d.is_registered("poll-node"));
    assert_eq!(gw.d.transport("poll-node"), Some(&Transport::Poll));
}

#[test]
fn a_disconnected_node_stays_online_until_90s_and_its_commands_queue() {
    let mut gw = Gw::new();
    gw.connect(0.0, "n1", 1);
    gw.d.node_disconnected(gw.at(10.0), "n1", ConnId(1));
    assert!(gw.d.is_online(gw.at(10.0), "n1"));
    assert_eq!(gw.d.transport("n1"), None);
    gw.drain();
    let id = gw.dispatch(20.0, request("n1"));
    assert!(sent_ids(&gw.drain()).is_empty());
    assert_eq!(gw.status(&id), CommandStatus::Queued { position: 0 });
    gw.run_until(90.0);
    assert!(gw.drain().contains(&DispatchOutput::NodeOffline {
        node: "n1".to_owned(),
        at: gw.at(90.0)
    }));
}

#[test]
fn a_stale_disconnect_does_not_detach_the_new_connection() {
    let mut gw = Gw::new();
    gw.connect(0.0, "n1", 1);
    gw.connect(1.0, "n1", 2);
    gw.d.node_disconnected(gw.at(2.0), "n1", ConnId(1));
    assert_eq!(gw.d.transport("n1"), Some(&hub(2)));
    gw.drain();
    let id = gw.dispatch(3.0, request("n1"));
    let sent = executes(&gw.drain());
    assert_eq!(sent.len(), 1);
    assert_eq!((sent[0].1, sent[0].2.command_id.as_str()), (2, id.as_str()));
}

#[test]
fn queued_commands_go_out_when_the_node_connects() {
    let mut gw = Gw::new();
    gw.d.register("n1");
    let a = gw.dispatch(0.0, request("n1").timeout(Duration::from_secs(60)));
    let b = gw.dispatch(1.0, request("n1"));
    assert_eq!(gw.status(&b), CommandStatus::Queued { position: 1 });
    assert!(sent_ids(&gw.drain()).is_empty());
    gw.connect(10.0, "n1", 1);
    let sent = executes(&gw.drain());
    assert_eq!(
        sent.iter()
            .map(|s| s.2.command_id.clone())
            .collect::<Vec<_>>(),
        vec![a.clone(), b.clone()]
    );
    // timeoutMs is the time left to each command's deadline; the connection's version rides along.
    assert_eq!(sent[0].2.timeout_ms, Some(50_000));
    assert_eq!(sent[1].2.timeout_ms, Some(21_000));
    assert_eq!(sent[0].2.protocol_version.as_deref(), Some("2026-04-01"));
    assert_eq!(gw.status(&a), CommandStatus::Dispatched { at: gw.at(10.0) });
}

#[test]
fn an_offline_node_gets_nothing_until_it_heartbeats_again() {
    let mut gw = Gw::new();
    gw.connect(0.0, "n1", 1);
    gw.run_until(90.0);
    gw.drain();
    let id = gw.dispatch(100.0, request("n1"));
    assert!(sent_ids(&gw.drain()).is_empty());
    gw.heartbeat(105.0, "n1");
    let out = gw.drain();
    assert!(out.contains(&DispatchOutput::NodeOnline {
        node: "n1".to_owned()
    }));
    assert_eq!(sent_ids(&out), vec![id]);
}

#[test]
fn capacity_limits_commands_in_flight_and_the_rest_queue_fifo() {
    let mut gw = Gw::new();
    gw.connect(0.0, "n1", 1);
    gw.d.heartbeat(gw.at(0.0), "n1", &heartbeat("n1", Some(2)));
    gw.drain();
    let ids: Vec<String> = (0..4).map(|_| gw.dispatch(1.0, request("n1"))).collect();
    assert_eq!(sent_ids(&gw.drain()), ids[..2].to_vec());
    assert_eq!(gw.status(&ids[2]), CommandStatus::Queued { position: 0 });
    assert_eq!(gw.status(&ids[3]), CommandStatus::Queued { position: 1 });
    assert_eq!(gw.d.result(gw.at(2.0), "n1", ok(&ids[1])), ResultAck::Ack);
    assert_eq!(sent_ids(&gw.drain()), vec![ids[2].clone()]);
    // More slots in a heartbeat: the queue moves at once.
    gw.d.heartbeat(gw.at(3.0), "n1", &heartbeat("n1", Some(3)));
    assert_eq!(sent_ids(&gw.drain()), vec![ids[3].clone()]);
}

#[test]
fn unknown_slots_mean_the_default_of_4() {
    let mut gw = Gw::new();
    gw.connect(0.0, "n1", 1);
    gw.d.heartbeat(gw.at(0.0), "n1", &heartbeat("n1", Some(0)));
    gw.drain();
    for _ in 0..6 {
        gw.dispatch(1.0, request("n1"));
    }
    assert_eq!(sent_ids(&gw.drain()).len(), 4);
}

#[test]
fn pending_commands_redispatched_on_reconnect() {
    let mut gw = Gw::new();
    gw.connect(0.0, "n1", 1);
    let a = gw.dispatch(1.0, request("n1").timeout(Duration::from_secs(100)));
    let b = gw.dispatch(2.0, request("n1").timeout(Duration::from_secs(100)));
    assert_eq!(sent_ids(&gw.drain()), vec![a.clone(), b.clone()]);
    assert_eq!(gw.d.result(gw.at(3.0), "n1", ok(&a)), ResultAck::Ack);
    gw.d.node_disconnected(gw.at(4.0), "n1", ConnId(1));
    let c = gw.dispatch(5.0, request("n1"));
    gw.drain();
    gw.connect(30.0, "n1", 2);
    let sent = executes(&gw.drain());
    // The unanswered one first (same id, the time it has left), then the queued one.
    assert_eq!(
        sent.iter()
            .map(|s| (s.1, s.2.command_id.clone(), s.2.timeout_ms))
            .collect::<Vec<_>>(),
        vec![(2, b, Some(72_000)), (2, c, Some(5_000))]
    );
}

#[test]
fn command_outside_scopes_is_not_authorized_at_once() {
    let mut gw = Gw::new();
    gw.connect(0.0, "n1", 1);
    gw.d.set_scopes(gw.at(0.0), "n1", scopes(&["screen.*"]));
    gw.drain();
    let refused = gw.d.dispatch(
        gw.at(1.0),
        &mut gw.rng,
        request("n1").scope("input.control"),
    );
    assert_eq!(
        refused,
        Err(DispatchError::NotAuthorized {
            node: "n1".to_owned(),
            scope: "input.control".to_owned()
        })
    );
    // Nothing was created: no record, no output, no timer.
    assert!(gw.drain().is_empty());
    assert_eq!(gw.d.command_count(), 0);
    let id = gw.dispatch(1.0, request("n1").scope("screen.capture"));
    assert_eq!(sent_ids(&gw.drain()), vec![id]);
}

#[test]
fn narrowed_scopes_end_waiting_commands_not_authorized() {
    let mut gw = Gw::new();
    gw.d.set_scopes(
        gw.at(0.0),
        "n1",
        scopes(&["screen.capture", "input.control"]),
    );
    let a = gw.dispatch(1.0, request("n1").scope("screen.capture"));
    let b = gw.dispatch(1.0, request("n1").scope("input.control").critical());
    let c = gw.dispatch(1.0, request("n1"));
    gw.drain();
    gw.d.set_scopes(gw.at(2.0), "n1", scopes(&[]));
    let out = gw.drain();
    let ended = finished(&out);
    assert_eq!(
        ended,
        vec![
            (b.clone(), false, Some(ErrorCode::NotAuthorized)),
            (a.clone(), false, Some(ErrorCode::NotAuthorized)),
        ]
    );
    assert_eq!(gw.status(&c), CommandStatus::Queued { position: 0 });
    assert_eq!(gw.d.scopes("n1"), Some(&scopes(&[])));
}

#[test]
fn revoke_cancels_pending_commands() {
    let mut gw = Gw::new();
    gw.connect(0.0, "n1", 1);
    gw.d.heartbeat(gw.at(0.0), "n1", &heartbeat("n1", Some(1)));
    let running = gw.dispatch(1.0, request("n1"));
    let queued = gw.dispatch(1.0, request("n1"));
    let awaiting = gw.dispatch(1.0, request("n1").critical());
    gw.drain();
    assert_eq!(gw.d.revoke(gw.at(5.0), "n1"), Ok(3));
    let out = gw.drain();
    // Nothing more is sent to a revoked node, not even to a freed slot.
    assert!(sent_ids(&out).is_empty());
    let mut ended = finished(&out);
    ended.sort();
    let mut expected = vec![
        (running.clone(), false, Some(ErrorCode::Cancelled)),
        (queued, false, Some(ErrorCode::Cancelled)),
        (awaiting, false, Some(ErrorCode::Cancelled)),
    ];
    expected.sort();
    assert_eq!(ended, expected);
    assert!(out.contains(&DispatchOutput::NodeOffline {
        node: "n1".to_owned(),
        at: gw.at(5.0)
    }));
    assert!(records(&out).contains(&DispatchRecord::NodeRemoved {
        node: "n1".to_owned()
    }));
    assert!(!gw.d.is_online(gw.at(5.0), "n1"));
    assert_eq!(
        gw.d.dispatch(gw.at(6.0), &mut gw.rng, request("n1")),
        Err(DispatchError::UnknownNode {
            node: "n1".to_owned()
        })
    );
    assert_eq!(
        gw.d.revoke(gw.at(6.0), "n1"),
        Err(DispatchError::UnknownNode {
            node: "n1".to_owned()
        })
    );
    // The node's late result is refused: the command ended.
    assert_eq!(
        gw.d.result(gw.at(7.0), "n1", ok(&running)),
        ResultAck::Refuse(Refusal::Ended(ErrorCode::Cancelled))
    );
}

#[test]
fn last_seen_is_persisted_online_every_5_minutes_and_offline() {
    let mut gw = Gw::new();
    let seen = |out: &[DispatchOutput]| -> Vec<Option<u64>> {
        records(out)
            .into_iter()
            .filter_map(|r| match r {
                DispatchRecord::Node(n) => Some(n.last_seen_ms.map(|ms| ms - 1_700_000_000_000)),
                _ => None,
            })
            .collect()
    };
    gw.heartbeat(0.0, "n1");
    // Registered (no last-seen yet), then online.
    assert_eq!(seen(&gw.drain()), vec![None, Some(0)]);
    let mut t = 30.0;
    while t < 300.0 {
        gw.heartbeat(t, "n1");
        t += 30.0;
    }
    assert_eq!(seen(&gw.drain()), vec![]);
    gw.heartbeat(300.0, "n1");
    assert_eq!(seen(&gw.drain()), vec![Some(300_000)]);
    gw.run_until(390.0);
    assert_eq!(seen(&gw.drain()), vec![Some(300_000)]);
}

#[test]
fn slots_come_from_the_connection_or_the_heartbeat_and_zero_means_the_default() {
    let mut gw = Gw::new();
    gw.d.node_connected(gw.at(0.0), "n1", hub(1), Some(1));
    let ids: Vec<String> = (0..5).map(|_| gw.dispatch(0.0, request("n1"))).collect();
    assert_eq!(sent_ids(&gw.drain()), ids[..1].to_vec());
    // Back to "unknown": the default of 4, and the queue moves at once.
    gw.d.heartbeat(gw.at(1.0), "n1", &heartbeat("n1", Some(0)));
    assert_eq!(sent_ids(&gw.drain()), ids[1..4].to_vec());
}

#[test]
fn a_poll_attachment_from_node_connected_holds_leases_like_a_poll() {
    let mut gw = Gw::new();
    gw.heartbeat(0.0, "n1");
    gw.d.node_connected(gw.at(0.0), "n1", Transport::Poll, None);
    assert_eq!(gw.d.transport("n1"), Some(&Transport::Poll));
    let id = gw.dispatch(1.0, request("n1"));
    // Nothing is pushed to a polling node.
    assert!(sent_ids(&gw.drain()).is_empty());
    assert_eq!(gw.d.lease(gw.at(2.0), "n1", 5)[0].command_id, id);
    gw.run_until(32.0);
    assert_eq!(gw.d.transport("n1"), None);
}
