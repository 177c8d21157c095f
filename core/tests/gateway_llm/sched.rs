//! Routing, queues, the queue and finish timeouts, liveness and stops.

use super::*;
use nodelink_core::gateway::llm::{GoneBecause, NodeFrameError, TaskError, TaskView};

#[test]
fn tasks_go_to_the_least_loaded_node_with_a_free_slot() {
    let mut g = Gw::new();
    g.node(0.0, 1, MODEL, "small", 2);
    g.node(0.0, 2, MODEL, "big", 4);
    g.node(0.0, 3, "other-model", "x", 8);
    let mut route = Vec::new();
    for _ in 0..7 {
        let (_, out) = g.submit(1.0, MODEL);
        route.push(sent_tasks(&out).first().map(|(conn, _)| *conn));
    }
    // Loads (running/max) after each: equal at 0 -> more free slots (big); small 0/2 < big 1/4;
    // big 1/4 < small 1/2; 1/2 = 2/4 -> more free slots (big); small 1/2 < big 3/4; small full.
    assert_eq!(
        route,
        vec![Some(2), Some(1), Some(2), Some(2), Some(1), Some(2), None]
    );
    // The other model's node got nothing.
    let other =
        g.gw.nodes()
            .into_iter()
            .find(|n| n.conn == ConnId(3))
            .unwrap();
    assert!(other.running.is_empty());
}

#[test]
fn equal_nodes_take_turns_oldest_first() {
    let mut g = Gw::new();
    g.node(0.0, 7, MODEL, "a", 2);
    g.node(0.0, 3, MODEL, "b", 2);
    let mut route = Vec::new();
    for _ in 0..4 {
        route.push(sent_tasks(&g.submit(1.0, MODEL).1)[0].0);
    }
    assert_eq!(route, vec![7, 3, 7, 3]);
}

#[test]
fn max_concurrency_is_honoured_and_the_queue_is_fifo() {
    let mut g = Gw::new();
    g.node(0.0, 1, MODEL, "n", 1);
    let (t1, out) = g.submit(1.0, MODEL);
    assert_eq!(sent_tasks(&out), vec![(1, t1.0)]);
    let (t2, out) = g.submit(2.0, MODEL);
    assert!(sent_tasks(&out).is_empty());
    let (t3, _) = g.submit(3.0, MODEL);
    assert_eq!(g.gw.task(t2), Some(TaskView::Queued));
    let out = g.finished(4.0, 1, t1);
    assert_eq!(updates(&out), vec![(t1, TaskUpdate::Done)]);
    assert_eq!(sent_tasks(&out), vec![(1, t2.0)]);
    let out = g.finished(5.0, 1, t2);
    assert_eq!(sent_tasks(&out), vec![(1, t3.0)]);
    assert_eq!(g.gw.task(t3), Some(TaskView::Running { conn: ConnId(1) }));
}

#[test]
fn a_task_without_a_node_fails_at_exactly_30_s() {
    let mut g = Gw::new();
    let (t, out) = g.submit(0.0, MODEL);
    assert!(out.is_empty());
    assert_eq!(g.next_timeout_secs(), Some(30.0));
    assert!(g.timeout(29.999).is_empty());
    let out = g.timeout(30.0);
    assert_eq!(
        updates(&out),
        vec![(t, TaskUpdate::Failed(TaskError::QueueTimeout))]
    );
    assert_eq!(
        TaskError::QueueTimeout.to_string(),
        "timeout waiting for node"
    );
    assert_eq!(g.gw.task(t), None);
    assert_eq!(g.next_timeout_secs(), None);
}

#[test]
fn a_node_that_comes_within_30_s_gets_the_queued_task() {
    let mut g = Gw::new();
    let (t, _) = g.submit(0.0, MODEL);
    let out = g.node(29.999, 1, MODEL, "late", 1);
    assert_eq!(sent_tasks(&out), vec![(1, t.0)]);
    assert!(updates(&g.timeout(30.0)).is_empty());
}

#[test]
fn a_node_connecting_at_the_deadline_is_too_late_whatever_the_call_order() {
    let mut g = Gw::new();
    let (t, _) = g.submit(0.0, MODEL);
    // The shell reports the connect before calling handle_timeout(30 s): same outcome.
    let out = g.node(30.0, 1, MODEL, "late", 1);
    assert_eq!(
        updates(&out),
        vec![(t, TaskUpdate::Failed(TaskError::QueueTimeout))]
    );
    assert!(sent_tasks(&out).is_empty());
}

#[test]
fn a_silent_node_is_dropped_at_exactly_3_intervals_and_its_tasks_move() {
    let mut g = Gw::new();
    g.node(0.0, 1, MODEL, "quiet", 2);
    let (t, _) = g.submit(1.0, MODEL);
    assert!(g.heartbeat(5.0, 1).is_empty());
    // Any frame is a sign of life: a WebSocket Pong too.
    assert!(g.frame(8.0, 1, WsFrame::Pong(vec![])).is_empty());
    assert!(
        g.timeout(30.0).is_empty(),
        "the first deadline (30 s) moves"
    );
    assert_eq!(g.next_timeout_secs(), Some(38.0), "30 s after the Pong");
    assert!(g.timeout(37.999).is_empty());
    g.node(37.5, 2, MODEL, "spare", 1);
    let out = g.timeout(38.0);
    assert_eq!(closes(&out), vec![(1, 4000, "Bye".to_owned())]);
    assert!(events(&out).contains(&LlmGatewayEvent::NodeGone {
        conn: ConnId(1),
        identity: nodelink_core::wire::llm::NodeIdentity {
            model: MODEL.to_owned(),
            name: "quiet".to_owned()
        },
        because: GoneBecause::Silent {
            after: Duration::from_secs(30)
        },
        requeued: vec![t],
        failed: vec![],
    }));
    assert_eq!(sent_tasks(&out), vec![(2, t.0)]);
    // Dispatched once again already: if this node goes silent too, the task fails.
    let out = g.timeout(67.499);
    assert!(out.is_empty(), "{out:?}");
    let out = g.timeout(67.5);
    assert_eq!(
        updates(&out),
        vec![(t, TaskUpdate::Failed(TaskError::NodeLost))]
    );
}

#[test]
fn a_closed_node_hands_its_tasks_to_another() {
    let mut g = Gw::new();
    g.node(0.0, 1, MODEL, "a", 1);
    let (t, _) = g.submit(1.0, MODEL);
    let (u, _) = g.submit(1.0, MODEL);
    assert_eq!(g.gw.task(u), Some(TaskView::Queued));
    let out = g.closed(2.0, 1);
    assert!(closes(&out).is_empty(), "the shell knows it is closed");
    assert!(updates(&out).is_empty());
    // Queued again with a fresh 30 s wait, ahead of u (it was submitted first).
    assert_eq!(g.gw.task(t), Some(TaskView::Queued));
    let out = g.node(31.9, 2, MODEL, "b", 1);
    assert_eq!(sent_tasks(&out), vec![(2, t.0)]);
    // u has waited since 1 s: it failed at 31 s, inside the connect's catch-up.
    assert!(updates(&out).contains(&(u, TaskUpdate::Failed(TaskError::QueueTimeout))));
}

#[test]
fn a_task_not_finished_in_300_s_is_stopped_and_fails() {
    let mut g = Gw::new();
    g.node(0.0, 1, MODEL, "slow", 1);
    let (t, _) = g.submit(0.0, MODEL);
    for s in (10..300).step_by(10) {
        g.heartbeat(s as f64, 1);
    }
    assert!(g.timeout(299.999).is_empty());
    let out = g.timeout(300.0);
    assert_eq!(stops(&out), vec![(1, t.0)]);
    assert_eq!(
        updates(&out),
        vec![(t, TaskUpdate::Failed(TaskError::FinishTimeout))]
    );
    assert_eq!(
        TaskError::FinishTimeout.to_string(),
        "timeout waiting for finish"
    );
}

#[test]
fn a_user_going_away_sends_a_stop_at_once_and_frees_the_slot() {
    let mut g = Gw::new();
    g.node(0.0, 1, MODEL, "n", 1);
    let (t1, _) = g.submit(1.0, MODEL);
    let (t2, _) = g.submit(1.0, MODEL);
    g.data(2.0, 1, t1, b"partial");
    let (live, out) = g.stop(3.0, t1);
    assert!(live);
    insta::assert_snapshot!(
        "gwllm_stop",
        match &out[0] {
            LlmGatewayOutput::Send {
                frame: WsFrame::Text(text),
                ..
            } => support::text(text.as_bytes()),
            other => panic!("{other:?}"),
        }
    );
    assert_eq!(stops(&out), vec![(1, t1.0)]);
    assert_eq!(updates(&out), vec![(t1, TaskUpdate::Stopped)]);
    assert_eq!(sent_tasks(&out), vec![(1, t2.0)]);
    // What the node still sends for t1 is dropped silently, its finished frame too.
    assert!(g.data(3.1, 1, t1, b" more").is_empty());
    assert!(g.finished(3.2, 1, t1).is_empty());
    // A second stop, or a stop of an unknown task, does nothing.
    assert_eq!(g.stop(4.0, t1), (false, vec![]));
    assert_eq!(g.stop(4.0, TaskId(999)), (false, vec![]));
}

#[test]
fn stopping_a_queued_task_sends_nothing() {
    let mut g = Gw::new();
    let (t, _) = g.submit(0.0, MODEL);
    let (live, out) = g.stop(1.0, t);
    assert!(live);
    assert_eq!(
        out,
        vec![LlmGatewayOutput::Task {
            task: t,
            update: TaskUpdate::Stopped
        }]
    );
    assert!(g.timeout(30.0).is_empty());
    let out = g.node(31.0, 1, MODEL, "n", 1);
    assert!(sent_tasks(&out).is_empty());
}

#[test]
fn data_for_a_task_the_node_does_not_run_is_answered_with_one_stop() {
    let mut g = Gw::new();
    g.node(0.0, 1, MODEL, "n", 1);
    g.node(0.0, 2, MODEL, "m", 1);
    let (t, out) = g.submit(0.0, MODEL);
    assert_eq!(sent_tasks(&out), vec![(1, t.0)]);
    // Conn 2 claims t; 77 is nobody's.
    for (conn, id) in [(2, t.0), (1, 77)] {
        let out = g.data(1.0, conn, TaskId(id), b"x");
        assert_eq!(stops(&out), vec![(conn, id)]);
        assert_eq!(
            events(&out),
            vec![LlmGatewayEvent::PeerMisbehaved {
                conn: ConnId(conn),
                error: NodeFrameError::UnknownTask { id }
            }]
        );
        assert!(
            g.data(1.1, conn, TaskId(id), b"y").is_empty(),
            "stopped once"
        );
    }
    // A finished frame for an unknown task is ignored.
    assert!(g.finished(1.2, 1, TaskId(78)).is_empty());
    // t itself is untouched.
    assert_eq!(texts(&g.data(1.3, 1, t, b"ok")), vec!["ok"]);
}

#[test]
fn task_ids_are_unique_and_below_2_pow_31() {
    let mut g = Gw::new();
    let ids: Vec<u32> = (0..5).map(|_| g.submit(0.0, MODEL).0 .0).collect();
    assert_eq!(ids, vec![1, 2, 3, 4, 5]);
}

#[test]
fn a_frame_at_exactly_the_silence_limit_comes_too_late() {
    let mut g = Gw::new();
    g.node(0.0, 1, MODEL, "n", 1);
    assert!(g.heartbeat(10.0, 1).is_empty());
    // The shell reports the frame before calling handle_timeout(40 s): the node is gone anyway.
    let out = g.heartbeat(40.0, 1);
    assert_eq!(closes(&out), vec![(1, 4000, "Bye".to_owned())]);
    assert!(g.gw.nodes().is_empty());
    // One nanosecond earlier it would have counted.
    let mut g = Gw::new();
    g.node(0.0, 1, MODEL, "n", 1);
    g.heartbeat(10.0, 1);
    let just_before = g.at(40.0) - Duration::from_nanos(1);
    g.gw.handle_frame(just_before, ConnId(1), WsFrame::Text(String::new()));
    assert!(g.drain().is_empty());
    assert!(g.timeout(40.0).is_empty());
    assert_eq!(
        g.gw.poll_timeout(),
        Some(just_before + Duration::from_secs(30))
    );
}

#[test]
fn shortened_timers_through_the_config() {
    let mut g = Gw::with(LlmGatewayConfig {
        heartbeat_interval: Duration::from_millis(100),
        silent_intervals: 2,
        queue_timeout: Duration::from_secs(1),
        finish_timeout: None,
        ..config()
    });
    let (t, _) = g.submit(0.0, MODEL);
    assert_eq!(
        updates(&g.timeout(1.0)),
        vec![(t, TaskUpdate::Failed(TaskError::QueueTimeout))]
    );
    g.node(2.0, 1, MODEL, "n", 1);
    let (u, _) = g.submit(2.0, MODEL);
    g.heartbeat(2.1, 1);
    assert!(g.timeout(2.299).is_empty());
    let out = g.timeout(2.3);
    assert_eq!(closes(&out), vec![(1, 4000, "Bye".to_owned())]);
    // No finish timeout: the re-queued task only has its queue wait.
    assert_eq!(g.gw.task(u), Some(TaskView::Queued));
    assert_eq!(g.next_timeout_secs(), Some(3.3));
}

#[test]
fn a_config_that_would_spin_or_accept_anything_is_refused() {
    use nodelink_core::gateway::llm::LlmConfigError;
    let now = support::SimClock::new().at(0.0);
    let refuse = |config: LlmGatewayConfig| LlmGateway::new(config, now, UNIX_ORIGIN).unwrap_err();
    assert_eq!(
        refuse(LlmGatewayConfig {
            shared_token: Some(String::new()),
            ..config()
        }),
        LlmConfigError::EmptySharedToken
    );
    assert_eq!(
        refuse(LlmGatewayConfig {
            silent_intervals: 0,
            ..config()
        }),
        LlmConfigError::Zero {
            name: "silent_intervals"
        }
    );
    assert_eq!(
        refuse(LlmGatewayConfig {
            queue_timeout: Duration::ZERO,
            ..config()
        }),
        LlmConfigError::Zero {
            name: "queue_timeout"
        }
    );
    assert!(!format!("{:?}", config()).contains(SHARED));
}
