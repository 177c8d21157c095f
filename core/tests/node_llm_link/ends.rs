//! Ends of a connection and the configuration.

use std::time::Duration;

use nodelink_core::node::llm_link::{
    redact_token, LlmConfig, LlmConfigError, LlmEnd, LlmLink, LlmOutput, LlmState,
    REJECTED_RETRY_FLOOR,
};
use nodelink_core::wire::llm::CloseCode;

use crate::*;

// ---------------------------------------------------------------------------------------------
// Ends

#[test]
fn close_4002_is_rejected_not_replaced() {
    let mut sim = Sim::new(config());
    sim.open_at(0.0);
    sim.link
        .handle_ws_closed(sim.at(0.01), Some(4002), "Invalid token");
    let out = sim.drain();
    let end = LlmEnd::Rejected {
        code: CloseCode::InvalidToken,
        reason: "Invalid token".to_owned(),
    };
    assert_eq!(out, vec![ended(end.clone(), vec![], Some(0.01))]);
    assert_eq!(end.retry_floor(), REJECTED_RETRY_FLOOR);
    assert_eq!(REJECTED_RETRY_FLOOR, Duration::from_secs(30));
    assert_eq!(sim.link.state(), LlmState::Idle);
    assert_eq!(sim.link.poll_timeout(), None);
}

#[test]
fn close_codes_map_to_rejected_replaced_or_closed() {
    let reason = || "r".to_owned();
    let cases = [
        (
            Some(4001),
            LlmEnd::Rejected {
                code: CloseCode::InvalidParameters,
                reason: reason(),
            },
        ),
        (
            Some(4000),
            LlmEnd::Replaced {
                code: CloseCode::Bye,
                reason: reason(),
            },
        ),
        (
            Some(4003),
            LlmEnd::Replaced {
                code: CloseCode::ReplacedConnection,
                reason: reason(),
            },
        ),
        (
            Some(1000),
            LlmEnd::Closed {
                code: Some(1000),
                reason: reason(),
            },
        ),
        (
            Some(4004),
            LlmEnd::Closed {
                code: Some(4004),
                reason: reason(),
            },
        ),
        (
            None,
            LlmEnd::Closed {
                code: None,
                reason: reason(),
            },
        ),
    ];
    for (code, expected) in cases {
        let mut sim = Sim::new(config());
        sim.open_at(0.0);
        sim.link.handle_ws_closed(sim.at(2.0), code, "r");
        assert_eq!(
            sim.drain(),
            vec![ended(expected.clone(), vec![], Some(2.0))]
        );
        let floor = if matches!(expected, LlmEnd::Rejected { .. }) {
            REJECTED_RETRY_FLOOR
        } else {
            Duration::ZERO
        };
        assert_eq!(expected.retry_floor(), floor, "{code:?}");
    }
}

#[test]
fn a_close_while_connecting_maps_the_same_way() {
    let mut sim = Sim::new(config());
    sim.link.connect(sim.at(0.0)).unwrap();
    sim.drain();
    sim.link
        .handle_ws_closed(sim.at(0.1), Some(4001), "Missing");
    assert_eq!(
        sim.drain(),
        vec![ended(
            LlmEnd::Rejected {
                code: CloseCode::InvalidParameters,
                reason: "Missing".to_owned()
            },
            vec![],
            None
        )]
    );
}

#[test]
fn ended_reports_the_active_tasks_and_how_long_the_socket_was_open() {
    let mut sim = Sim::new(config());
    sim.open_at(10.0);
    sim.task(11.0, 9);
    sim.task(11.0, 2);
    sim.link.handle_ws_failed(sim.at(40.5), "connection reset");
    assert_eq!(
        sim.drain(),
        vec![ended(
            LlmEnd::Closed {
                code: None,
                reason: "connection reset".to_owned()
            },
            vec![2, 9],
            Some(30.5)
        )]
    );
    assert_eq!(sim.link.active_tasks().count(), 0);
    // The next connection starts with no task, and results for the old ones are dropped.
    sim.open_at(50.0);
    sim.link.send_text(sim.at(51.0), 9, "stale");
    sim.link.finish(sim.at(51.0), 2);
    assert_eq!(sim.drain(), vec![]);
    assert_eq!(sim.next_timeout_secs(), Some(60.0));
}

#[test]
fn a_close_by_the_server_drops_result_frames_not_yet_drained() {
    let mut sim = Sim::new(config());
    sim.open_at(0.0);
    sim.task(1.0, 1);
    sim.link.send_text(sim.at(2.0), 1, "never sent");
    sim.link.handle_timeout(sim.at(10.0)); // a heartbeat, also not drained
    sim.link.handle_ws_closed(sim.at(10.0), Some(4000), "Bye");
    assert_eq!(
        sim.drain(),
        vec![ended(
            LlmEnd::Replaced {
                code: CloseCode::Bye,
                reason: "Bye".to_owned()
            },
            vec![1],
            Some(10.0)
        )]
    );
}

#[test]
fn close_flushes_queued_results_then_closes_with_1000() {
    let mut sim = Sim::new(config());
    sim.open_at(0.0);
    sim.task(1.0, 1);
    sim.task(1.0, 2);
    sim.link.send_text(sim.at(2.0), 1, "done");
    sim.link.finish(sim.at(2.0), 1);
    sim.link.send_text(sim.at(2.0), 2, "half");
    sim.link.close(sim.at(2.0));
    assert_eq!(
        sim.drain(),
        vec![
            data(1, "done"),
            finished(1),
            data(2, "half"),
            LlmOutput::Close {
                code: 1000,
                reason: String::new()
            },
            ended(LlmEnd::ClosedByNode, vec![2], Some(2.0)),
        ]
    );
    assert_eq!(sim.link.state(), LlmState::Idle);
    assert_eq!(sim.link.poll_timeout(), None);
    // Closing an idle link does nothing; reports about the closed socket are stale.
    sim.link.close(sim.at(3.0));
    sim.link.handle_ws_closed(sim.at(3.0), Some(1000), "");
    assert_eq!(sim.drain(), vec![]);
}

#[test]
fn close_while_connecting_aborts_the_attempt() {
    let mut sim = Sim::new(config());
    sim.link.connect(sim.at(0.0)).unwrap();
    sim.drain();
    sim.link.close(sim.at(1.0));
    assert_eq!(
        sim.drain(),
        vec![
            LlmOutput::Close {
                code: 1000,
                reason: String::new()
            },
            ended(LlmEnd::ClosedByNode, vec![], None),
        ]
    );
    assert_eq!(sim.link.poll_timeout(), None);
}

// ---------------------------------------------------------------------------------------------
// Configuration

#[test]
fn invalid_configurations_are_refused_at_new() {
    type Mutation = fn(&mut LlmConfig);
    let cases: Vec<(Mutation, LlmConfigError)> = vec![
        (
            |c| c.server_url = "http://host/ws".to_owned(),
            LlmConfigError::ServerUrl {
                url: "http://host/ws".to_owned(),
            },
        ),
        (
            |c| c.server_url = "ws:///ws".to_owned(),
            LlmConfigError::ServerUrl {
                url: "ws:///ws".to_owned(),
            },
        ),
        (
            |c| c.params.token.clear(),
            LlmConfigError::EmptyParameter { name: "token" },
        ),
        (
            |c| c.params.model.clear(),
            LlmConfigError::EmptyParameter { name: "model" },
        ),
        (
            |c| c.params.name.clear(),
            LlmConfigError::EmptyParameter { name: "name" },
        ),
        (
            |c| c.params.max_concurrency = 0,
            LlmConfigError::ZeroMaxConcurrency,
        ),
        (
            |c| c.max_frame_text = 3,
            LlmConfigError::FrameText { value: 3 },
        ),
        (
            |c| c.max_frame_text = 65_533,
            LlmConfigError::FrameText { value: 65_533 },
        ),
        (
            |c| c.heartbeat_interval = Duration::ZERO,
            LlmConfigError::ZeroDuration {
                name: "heartbeat_interval",
            },
        ),
        (
            |c| c.connect_timeout = Duration::ZERO,
            LlmConfigError::ZeroDuration {
                name: "connect_timeout",
            },
        ),
        (
            |c| c.peer_timeout = Some(Duration::ZERO),
            LlmConfigError::ZeroDuration {
                name: "peer_timeout",
            },
        ),
    ];
    for (mutate, expected) in cases {
        let mut config = config();
        mutate(&mut config);
        assert_eq!(LlmLink::new(config).err(), Some(expected));
    }
    let mut edge = config();
    edge.max_frame_text = 65_532;
    edge.server_url = "wss://h".to_owned();
    assert!(LlmLink::new(edge).is_ok());
}

#[test]
fn defaults_are_10s_heartbeat_16_kib_frames_15s_connect_and_no_peer_timeout() {
    let config = config();
    assert_eq!(config.heartbeat_interval, Duration::from_secs(10));
    assert_eq!(config.max_frame_text, 16 * 1024);
    assert_eq!(config.connect_timeout, Duration::from_secs(15));
    assert_eq!(config.peer_timeout, None);
}

#[test]
fn debug_output_never_shows_the_token() {
    let mut link = LlmLink::new(config()).unwrap();
    assert!(!format!("{:?}", link.config()).contains("s3cr"));
    link.connect(SimClock::new().at(0.0)).unwrap();
    // The queued OpenWebSocket is inside the link's Debug too.
    let shown = format!("{link:?}");
    assert!(!shown.contains("s3cr"), "{shown}");
    let out = link.poll_output().unwrap();
    assert_eq!(
        format!("{out:?}"),
        "OpenWebSocket { url: \"ws://127.0.0.1:8120/ws?token=<redacted>&model=llama-3-8b&max_concurrency=2&name=rig+1\" }"
    );
    assert_eq!(
        redact_token("wss://h/ws?a=1&token&token=x"),
        "wss://h/ws?a=1&token=<redacted>&token=<redacted>"
    );
    assert_eq!(redact_token("wss://h/ws"), "wss://h/ws");
}
