//! Random sequences of shell inputs, server frames and node calls: the link never panics, keeps
//! design rule 8, sends nothing for a task after its stop, and accounts for every task exactly
//! once.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use nodelink_core::node::llm_link::{
    LlmConfig, LlmEvent, LlmLink, LlmOutput, LlmProtocolError, LlmState, WsFrame,
};
use nodelink_core::wire::llm::{ChatMessage, Task, TaskState};
use proptest::prelude::*;

use crate::support::SimClock;

#[derive(Clone, Debug)]
enum Op {
    /// Advance the clock by this many milliseconds and call `handle_timeout`.
    Advance(u64),
    /// Jump to exactly `poll_timeout()` and call `handle_timeout`.
    Wake,
    Connect,
    Opened,
    Failed,
    Closed(Option<u16>),
    Task {
        id: u32,
        state: u8,
    },
    Stop(u32),
    MalformedWithId(u32),
    Garbage(String),
    Binary(Vec<u8>),
    Pong,
    SendText(u32, String),
    Finish(u32),
    Close,
}

fn op() -> impl Strategy<Value = Op> {
    let id = 0u32..3;
    prop_oneof![
        4 => (0u64..25_000).prop_map(Op::Advance),
        3 => Just(Op::Wake),
        2 => Just(Op::Connect),
        2 => Just(Op::Opened),
        1 => Just(Op::Failed),
        1 => prop::sample::select(vec![None, Some(1000), Some(1006), Some(4000), Some(4001), Some(4002), Some(4003)])
            .prop_map(Op::Closed),
        5 => (id.clone(), prop::sample::select(vec![0u8, 0, 0, 1, 2])).prop_map(|(id, state)| Op::Task { id, state }),
        3 => id.clone().prop_map(Op::Stop),
        1 => id.clone().prop_map(Op::MalformedWithId),
        1 => ".{0,12}".prop_map(Op::Garbage),
        1 => prop::collection::vec(any::<u8>(), 0..8).prop_map(Op::Binary),
        1 => Just(Op::Pong),
        5 => (id.clone(), "[a-zü日🎉 ]{0,20}").prop_map(|(id, text)| Op::SendText(id, text)),
        4 => id.prop_map(Op::Finish),
        1 => Just(Op::Close),
    ]
}

/// What the outputs so far say, checked against every new output.
#[derive(Default)]
struct Observer {
    /// Every input was followed by a full drain, so task accounting is exact. A shell that lets
    /// outputs queue up can see a task finished by the node machine whose finished frame was
    /// then dropped by the server's close: only the frame-level checks hold there.
    strict: bool,
    /// Between an `Open` event and the connection's `Close` output or `Ended` event.
    live: bool,
    /// Between `OpenWebSocket` and `Ended`.
    connection: bool,
    /// Tasks handed to the node machine and not yet ended (finished frame, stop or end).
    running: BTreeSet<u32>,
    /// Ids stopped by the server and not given again since.
    stopped: BTreeSet<u32>,
    /// Ids whose finished frame may go out without a running task: answered refusals.
    refusals: Vec<u32>,
}

impl Observer {
    fn see(&mut self, out: &LlmOutput, max_text: usize, max_concurrency: usize) {
        match out {
            LlmOutput::OpenWebSocket { .. } => {
                assert!(!self.connection, "a second socket before the first ended");
                self.connection = true;
            }
            LlmOutput::Close { .. } => {
                assert!(self.connection, "close without a socket");
                self.live = false;
            }
            LlmOutput::Send(frame) => {
                assert!(self.live, "frame {frame:?} sent while no socket is open");
                if let WsFrame::Binary(bytes) = frame {
                    assert!(bytes.len() >= 4);
                    let id = u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
                    assert!(!self.stopped.contains(&id), "frame for stopped task {id}");
                    let text = &bytes[4..];
                    if text.is_empty() {
                        if !self.running.remove(&id) && self.strict {
                            let at = self.refusals.iter().position(|r| *r == id);
                            let at = at.unwrap_or_else(|| {
                                panic!("finished frame for {id}: neither running nor refused")
                            });
                            self.refusals.remove(at);
                        }
                    } else {
                        assert!(
                            !self.strict || self.running.contains(&id),
                            "data for task {id} not running"
                        );
                        assert!(text.len() <= max_text, "frame text of {} bytes", text.len());
                        assert!(std::str::from_utf8(text).is_ok(), "a character was cut");
                    }
                }
            }
            LlmOutput::Event(event) => match event {
                LlmEvent::Open => {
                    assert!(self.connection);
                    self.live = true;
                }
                LlmEvent::Task(task) => {
                    assert!(self.live);
                    let new = self.running.insert(task.id);
                    assert!(new || !self.strict, "task {} given twice", task.id);
                    assert!(!self.strict || self.running.len() <= max_concurrency);
                    self.stopped.remove(&task.id);
                }
                LlmEvent::Stop { id } => {
                    let was = self.running.remove(id);
                    assert!(was || !self.strict, "stop for task {id} not running");
                    self.stopped.insert(*id);
                }
                LlmEvent::Ended { active_tasks, .. } => {
                    assert!(self.connection, "ended without a socket");
                    let running: Vec<u32> = std::mem::take(&mut self.running).into_iter().collect();
                    if self.strict {
                        assert_eq!(active_tasks, &running, "ended must list every running task");
                    }
                    self.connection = false;
                    self.live = false;
                    self.stopped.clear();
                    self.refusals.clear();
                }
                LlmEvent::PeerMisbehaved(error) => {
                    let refused = match error {
                        LlmProtocolError::Undecodable {
                            error,
                            answered: true,
                        } => error.id(),
                        LlmProtocolError::TaskNotPending {
                            id, answered: true, ..
                        } => Some(*id),
                        LlmProtocolError::OverConcurrency { id, .. } => Some(*id),
                        _ => None,
                    };
                    if let Some(id) = refused {
                        assert!(
                            !self.strict || !self.running.contains(&id),
                            "refused a running task {id}"
                        );
                        self.refusals.push(id);
                        // A refusal of a stopped id is a frame for it, which is allowed: the
                        // server sent that id again.
                        self.stopped.remove(&id);
                    }
                }
            },
        }
    }
}

fn run(ops: Vec<(Op, bool)>, max_text: usize, max_concurrency: u32, peer_timeout: bool) {
    let clock = SimClock::new();
    let mut params = crate::params();
    params.max_concurrency = max_concurrency;
    let mut config = LlmConfig::new("ws://h/ws", params);
    config.max_frame_text = max_text;
    config.peer_timeout = peer_timeout.then_some(Duration::from_secs(25));
    let mut link = LlmLink::new(config).unwrap();
    let mut now: Instant = clock.at(0.0);
    let strict = ops.iter().all(|(_, drain)| *drain);
    let mut observer = Observer {
        strict,
        ..Observer::default()
    };
    for (op, drain) in ops {
        match op {
            Op::Advance(ms) => {
                now += Duration::from_millis(ms);
                link.handle_timeout(now);
                assert!(link.poll_timeout().is_none_or(|t| t > now), "rule 8");
            }
            Op::Wake => {
                if let Some(at) = link.poll_timeout() {
                    now = now.max(at);
                }
                link.handle_timeout(now);
                assert!(link.poll_timeout().is_none_or(|t| t > now), "rule 8");
            }
            Op::Connect => {
                let idle = link.state() == LlmState::Idle;
                assert_eq!(link.connect(now).is_ok(), idle);
            }
            Op::Opened => link.handle_ws_opened(now),
            Op::Failed => link.handle_ws_failed(now, "reset"),
            Op::Closed(code) => link.handle_ws_closed(now, code, "r"),
            Op::Task { id, state } => {
                let mut task = Task::new(id, vec![ChatMessage::new("user", "x")]);
                task.state = TaskState::from_u8(state).unwrap();
                link.handle_frame(now, WsFrame::Text(task.encode()));
            }
            Op::Stop(id) => {
                link.handle_frame(now, WsFrame::Text(format!(r#"{{"id":{id},"stop":true}}"#)));
            }
            Op::MalformedWithId(id) => {
                link.handle_frame(now, WsFrame::Text(format!(r#"{{"id":{id},"messages":7}}"#)));
            }
            Op::Garbage(text) => link.handle_frame(now, WsFrame::Text(text)),
            Op::Binary(bytes) => link.handle_frame(now, WsFrame::Binary(bytes)),
            Op::Pong => link.handle_frame(now, WsFrame::Pong(vec![])),
            Op::SendText(id, text) => link.send_text(now, id, &text),
            Op::Finish(id) => link.finish(now, id),
            Op::Close => link.close(now),
        }
        assert!(link.active_tasks().count() <= max_concurrency as usize);
        if !drain {
            // A shell that lets outputs queue up across inputs: the queues must still never
            // emit a frame for a stopped task or after a close.
            continue;
        }
        while let Some(out) = link.poll_output() {
            observer.see(&out, max_text, max_concurrency as usize);
        }
        if strict {
            let active: Vec<u32> = link.active_tasks().collect();
            let running: Vec<u32> = observer.running.iter().copied().collect();
            assert_eq!(active, running, "active_tasks() must match the events");
        }
        assert_eq!(observer.connection, link.state() != LlmState::Idle);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn random_sequences_account_for_every_task_exactly_once(
        ops in prop::collection::vec(op(), 1..120),
        max_text in 4usize..12,
        max_concurrency in 1u32..4,
        peer_timeout in any::<bool>(),
    ) {
        let ops = ops.into_iter().map(|op| (op, true)).collect();
        run(ops, max_text, max_concurrency, peer_timeout);
    }

    #[test]
    fn random_sequences_with_queued_outputs_never_send_after_a_stop_or_a_close(
        ops in prop::collection::vec((op(), prop::bool::weighted(0.6)), 1..120),
        max_text in 4usize..12,
        max_concurrency in 1u32..4,
        peer_timeout in any::<bool>(),
    ) {
        let mut ops = ops;
        // End with a drain so every queued output is checked.
        ops.push((Op::Pong, true));
        run(ops, max_text, max_concurrency, peer_timeout);
    }
}
