//! The LLM dialect link (core/src/node/llm_link): connect URL, heartbeat cadence, tasks, stops,
//! result frames, misbehaving servers, close codes and ends, at exact instants.
mod support;

#[path = "node_llm_link/ends.rs"]
mod ends;
#[path = "node_llm_link/props.rs"]
mod props;
#[path = "node_llm_link/tasks.rs"]
mod tasks;

use std::time::{Duration, Instant};

use nodelink_core::node::llm_link::{
    LlmConfig, LlmEnd, LlmEvent, LlmLink, LlmOutput, LlmProtocolError, LlmState, LlmUsageError,
    WsFrame,
};
use nodelink_core::wire::llm::{ChatMessage, ConnectParams, ResultFrame, Task};
use support::SimClock;

// ---------------------------------------------------------------------------------------------
// Harness

pub fn params() -> ConnectParams {
    ConnectParams {
        token: "s3cr=t".to_owned(),
        model: "llama-3-8b".to_owned(),
        max_concurrency: 2,
        name: "rig 1".to_owned(),
    }
}

pub fn config() -> LlmConfig {
    LlmConfig::new("ws://127.0.0.1:8120/ws", params())
}

pub struct Sim {
    pub clock: SimClock,
    pub link: LlmLink,
}

impl Sim {
    pub fn new(config: LlmConfig) -> Sim {
        Sim {
            clock: SimClock::new(),
            link: LlmLink::new(config).expect("valid config"),
        }
    }

    pub fn at(&self, secs: f64) -> Instant {
        self.clock.at(secs)
    }

    pub fn drain(&mut self) -> Vec<LlmOutput> {
        std::iter::from_fn(|| self.link.poll_output()).collect()
    }

    /// Connects at `secs` and opens at the same instant; returns nothing (outputs drained).
    pub fn open_at(&mut self, secs: f64) {
        let now = self.at(secs);
        self.link.connect(now).expect("idle");
        self.link.handle_ws_opened(now);
        let out = self.drain();
        assert!(matches!(out[0], LlmOutput::OpenWebSocket { .. }));
        assert_eq!(out[1], LlmOutput::Event(LlmEvent::Open));
        assert_eq!(out.len(), 2);
    }

    pub fn text(&mut self, secs: f64, text: &str) -> Vec<LlmOutput> {
        let now = self.at(secs);
        self.link.handle_frame(now, WsFrame::Text(text.to_owned()));
        self.drain()
    }

    pub fn task(&mut self, secs: f64, id: u32) -> Vec<LlmOutput> {
        let task = Task::new(id, vec![ChatMessage::new("user", "hi")]);
        self.text(secs, &task.encode())
    }

    pub fn timeout(&mut self, secs: f64) -> Vec<LlmOutput> {
        let now = self.at(secs);
        self.link.handle_timeout(now);
        if let Some(next) = self.link.poll_timeout() {
            assert!(
                next > now,
                "rule 8: poll_timeout must be later than {secs}s"
            );
        }
        self.drain()
    }

    pub fn next_timeout_secs(&self) -> Option<f64> {
        self.link.poll_timeout().map(|at| self.clock.secs(at))
    }
}

pub fn heartbeat() -> LlmOutput {
    LlmOutput::Send(WsFrame::Text(String::new()))
}

pub fn binary(bytes: Vec<u8>) -> LlmOutput {
    LlmOutput::Send(WsFrame::Binary(bytes))
}

pub fn data(id: u32, text: &str) -> LlmOutput {
    binary(ResultFrame::data(id, text).to_bytes().unwrap())
}

pub fn finished(id: u32) -> LlmOutput {
    binary(ResultFrame::finished(id).to_bytes().unwrap())
}

pub fn misbehaved(error: LlmProtocolError) -> LlmOutput {
    LlmOutput::Event(LlmEvent::PeerMisbehaved(error))
}

pub fn ended(end: LlmEnd, active_tasks: Vec<u32>, open_for: Option<f64>) -> LlmOutput {
    LlmOutput::Event(LlmEvent::Ended {
        end,
        active_tasks,
        open_for: open_for.map(Duration::from_secs_f64),
    })
}

pub fn task_event(id: u32) -> LlmOutput {
    LlmOutput::Event(LlmEvent::Task(Task::new(
        id,
        vec![ChatMessage::new("user", "hi")],
    )))
}

// ---------------------------------------------------------------------------------------------
// Connecting

#[test]
fn connects_with_the_four_query_parameters() {
    let mut sim = Sim::new(config());
    assert_eq!(sim.link.state(), LlmState::Idle);
    assert_eq!(sim.link.poll_timeout(), None);
    sim.link.connect(sim.at(0.0)).unwrap();
    assert_eq!(sim.link.state(), LlmState::Connecting);
    assert_eq!(
        sim.drain(),
        vec![LlmOutput::OpenWebSocket {
            url: "ws://127.0.0.1:8120/ws?token=s3cr%3Dt&model=llama-3-8b&max_concurrency=2&name=rig+1"
                .to_owned()
        }]
    );
}

#[test]
fn a_server_url_with_a_query_gets_the_parameters_after_an_ampersand() {
    let mut config = config();
    config.server_url = "wss://llm.example/ws?region=eu".to_owned();
    let link = LlmLink::new(config).unwrap();
    assert_eq!(
        link.connect_url(),
        "wss://llm.example/ws?region=eu&token=s3cr%3Dt&model=llama-3-8b&max_concurrency=2&name=rig+1"
    );
}

#[test]
fn opened_socket_emits_open_and_nothing_else() {
    let mut sim = Sim::new(config());
    sim.link.connect(sim.at(0.0)).unwrap();
    sim.drain();
    sim.link.handle_ws_opened(sim.at(0.25));
    assert_eq!(sim.link.state(), LlmState::Open);
    assert_eq!(sim.drain(), vec![LlmOutput::Event(LlmEvent::Open)]);
}

#[test]
fn connect_times_out_at_exactly_15s_and_aborts_the_attempt() {
    let mut sim = Sim::new(config());
    sim.link.connect(sim.at(2.0)).unwrap();
    sim.drain();
    assert_eq!(sim.next_timeout_secs(), Some(17.0));
    assert_eq!(sim.timeout(16.999), vec![]);
    assert_eq!(sim.link.state(), LlmState::Connecting);
    assert_eq!(
        sim.timeout(17.0),
        vec![
            LlmOutput::Close {
                code: 1000,
                reason: "connect timed out".to_owned()
            },
            ended(
                LlmEnd::ConnectFailed("the WebSocket did not open within 15000 ms".to_owned()),
                vec![],
                None
            ),
        ]
    );
    assert_eq!(sim.link.state(), LlmState::Idle);
    assert_eq!(sim.link.poll_timeout(), None);
}

#[test]
fn a_failed_connect_is_connect_failed_and_the_link_can_dial_again() {
    let mut sim = Sim::new(config());
    sim.link.connect(sim.at(0.0)).unwrap();
    sim.drain();
    sim.link
        .handle_ws_failed(sim.at(0.5), "connection refused (os error 111)");
    assert_eq!(
        sim.drain(),
        vec![ended(
            LlmEnd::ConnectFailed("connection refused (os error 111)".to_owned()),
            vec![],
            None
        )]
    );
    assert_eq!(sim.link.poll_timeout(), None);
    sim.link.connect(sim.at(3.0)).unwrap();
    assert!(matches!(
        sim.drain().as_slice(),
        [LlmOutput::OpenWebSocket { .. }]
    ));
    assert_eq!(sim.next_timeout_secs(), Some(18.0));
}

#[test]
fn connect_while_connecting_or_open_is_a_usage_error() {
    let mut sim = Sim::new(config());
    sim.link.connect(sim.at(0.0)).unwrap();
    assert_eq!(
        sim.link.connect(sim.at(0.1)),
        Err(LlmUsageError::AlreadyConnected {
            state: LlmState::Connecting
        })
    );
    sim.link.handle_ws_opened(sim.at(0.2));
    assert_eq!(
        sim.link.connect(sim.at(0.3)),
        Err(LlmUsageError::AlreadyConnected {
            state: LlmState::Open
        })
    );
    // The refused calls changed nothing: one open request, one Open event.
    assert_eq!(sim.drain().len(), 2);
}

#[test]
fn stale_shell_inputs_are_ignored() {
    let mut sim = Sim::new(config());
    let t = sim.at(1.0);
    sim.link.handle_ws_opened(t);
    sim.link.handle_ws_failed(t, "late");
    sim.link.handle_ws_closed(t, Some(4000), "Bye");
    sim.link
        .handle_frame(t, WsFrame::Text(Task::new(1, vec![]).encode()));
    assert_eq!(sim.link.state(), LlmState::Idle);
    assert_eq!(sim.drain(), vec![]);
    // A frame while still connecting is stale too.
    sim.link.connect(t).unwrap();
    sim.drain();
    sim.link
        .handle_frame(t, WsFrame::Text(Task::new(1, vec![]).encode()));
    assert_eq!(sim.drain(), vec![]);
    // And an open while open.
    sim.link.handle_ws_opened(t);
    sim.drain();
    sim.link.handle_ws_opened(sim.at(5.0));
    assert_eq!(sim.drain(), vec![]);
    assert_eq!(sim.next_timeout_secs(), Some(11.0));
}

// ---------------------------------------------------------------------------------------------
// Heartbeat

#[test]
fn heartbeat_every_10s_while_open() {
    let mut sim = Sim::new(config());
    sim.open_at(1.0);
    assert_eq!(sim.next_timeout_secs(), Some(11.0));
    assert_eq!(sim.timeout(10.999), vec![]);
    assert_eq!(sim.timeout(11.0), vec![heartbeat()]);
    assert_eq!(sim.next_timeout_secs(), Some(21.0));
    // A late wake-up keeps the schedule.
    assert_eq!(sim.timeout(21.4), vec![heartbeat()]);
    assert_eq!(sim.next_timeout_secs(), Some(31.0));
    assert_eq!(sim.timeout(31.0), vec![heartbeat()]);
}

#[test]
fn heartbeat_after_a_long_sleep_is_one_frame_not_a_burst() {
    let mut sim = Sim::new(config());
    sim.open_at(0.0);
    assert_eq!(sim.timeout(55.0), vec![heartbeat()]);
    assert_eq!(sim.next_timeout_secs(), Some(60.0));
}

#[test]
fn heartbeat_is_not_postponed_by_result_frames() {
    let mut sim = Sim::new(config());
    sim.open_at(0.0);
    sim.task(1.0, 5);
    for secs in [2.0, 4.0, 6.0, 8.0, 9.5] {
        sim.link.send_text(sim.at(secs), 5, "token");
        assert_eq!(sim.drain(), vec![data(5, "token")]);
    }
    assert_eq!(sim.next_timeout_secs(), Some(10.0));
    assert_eq!(sim.timeout(10.0), vec![heartbeat()]);
}

#[test]
fn heartbeat_goes_out_before_queued_result_frames() {
    let mut sim = Sim::new(config());
    sim.open_at(0.0);
    sim.task(1.0, 5);
    sim.link.send_text(sim.at(9.0), 5, "queued");
    sim.link.handle_timeout(sim.at(10.0));
    assert_eq!(sim.drain(), vec![heartbeat(), data(5, "queued")]);
}

#[test]
fn no_receive_timeout_by_default_the_server_sends_nothing_periodic() {
    let mut sim = Sim::new(config());
    sim.open_at(0.0);
    for n in 1..=360 {
        let secs = f64::from(n) * 10.0;
        assert_eq!(sim.next_timeout_secs(), Some(secs));
        assert_eq!(sim.timeout(secs), vec![heartbeat()], "at {secs}s");
    }
    assert_eq!(sim.link.state(), LlmState::Open);
}

#[test]
fn peer_timeout_pings_with_each_heartbeat_and_closes_after_30s_of_silence() {
    let mut config = config();
    config.peer_timeout = Some(Duration::from_secs(30));
    let mut sim = Sim::new(config);
    sim.open_at(0.0);
    let beat = vec![heartbeat(), LlmOutput::Send(WsFrame::Ping(vec![]))];
    assert_eq!(sim.next_timeout_secs(), Some(10.0));
    assert_eq!(sim.timeout(10.0), beat);
    assert_eq!(sim.timeout(20.0), beat);
    // A Pong at 25 s moves the silence deadline to 55 s.
    sim.link.handle_frame(sim.at(25.0), WsFrame::Pong(vec![]));
    assert_eq!(sim.drain(), vec![]);
    assert_eq!(sim.timeout(30.0), beat);
    assert_eq!(sim.timeout(40.0), beat);
    assert_eq!(sim.timeout(50.0), beat);
    assert_eq!(sim.next_timeout_secs(), Some(55.0));
    assert_eq!(sim.timeout(54.999), vec![]);
    assert_eq!(
        sim.timeout(55.0),
        vec![
            LlmOutput::Close {
                code: 1000,
                reason: "server silent for 30000 ms".to_owned()
            },
            ended(
                LlmEnd::PeerSilent {
                    after: Duration::from_secs(30)
                },
                vec![],
                Some(55.0)
            ),
        ]
    );
    assert_eq!(sim.link.poll_timeout(), None);
}
