//! The node's link in the LLM node dialect: one WebSocket at a time to a server of the dialect
//! (docs/protocol.md section 8).
//!
//! # Theory of operation
//! The node machine calls [`LlmLink::connect`]; the link asks its shell to open
//! `server_url?token=..&model=..&max_concurrency=..&name=..` and waits [`LlmConfig::connect_timeout`]
//! for [`LlmLink::handle_ws_opened`] or [`LlmLink::handle_ws_failed`]. While the socket is open:
//! - **Heartbeat.** The empty text frame every `heartbeat_interval` (10 s), counted from the
//!   open and advancing from the previous deadline (design rule 7), whether or not results are
//!   flowing. The original Go node beats only after 30 s without sending, which is exactly a
//!   strict server's silence limit; beating on a fixed cadence costs a few bytes and never lets
//!   a busy-then-idle node drift towards that limit, so no sent frame resets it.
//! - **Tasks.** A decoded task becomes [`LlmEvent::Task`] and is *active* until the node
//!   machine calls [`LlmLink::finish`], or a stop, or the end of the connection. Results of an
//!   active task go out as binary frames: [`LlmLink::send_text`] cuts text into frames of at most
//!   `max_frame_text` bytes on character boundaries (never an empty data frame), and `finish`
//!   sends the id alone.
//! - **What the server gets wrong** becomes [`LlmEvent::PeerMisbehaved`] plus the reply section
//!   8.4 prescribes: a task that cannot be run (undecodable, not pending, or beyond
//!   `max_concurrency`) is answered with its finished frame when its id could be read and no
//!   active task has that id; a duplicate of an active task and a binary frame are ignored. An
//!   empty text frame and a stop for a task that is not active (the server stops finished tasks)
//!   are ignored silently.
//! - **Races.** `send_text` and `finish` for a task that is not active (stopped, finished, or
//!   ended with its connection) do nothing: the node machine may learn of a stop after its
//!   executor produced more text. After a stop nothing more is sent for that id, not even
//!   frames already queued and not yet drained.
//! - **Server liveness.** The original server sends nothing periodic, so by default silence is
//!   never fatal. With `peer_timeout` set, each heartbeat also sends a WebSocket Ping and the
//!   link closes the connection once nothing (a frame or a Pong) has arrived for that long.
//!
//! Every end (the server's close, a socket failure, the connect timeout, `close`, silence)
//! leaves the link [`LlmState::Idle`] and emits exactly one [`LlmEvent::Ended`] carrying the
//! active tasks, so the node machine can cancel their executors, and how long the socket was
//! open. Reconnect backoff is the node machine's: [`LlmEnd::retry_floor`] says how long a
//! rejected node (4001, 4002) waits at least.
//!
//! Outputs: control (events, heartbeats, pings, opens, closes) drains before bulk (result
//! frames), design rule 6. A close the node starts first flushes the queued result frames, so
//! nothing follows the `Close` output. A close by the server drops them.
//!
//! The shell contract: at most one socket; after a [`LlmOutput::Close`] (or when a new
//! `OpenWebSocket` comes) it reports nothing more about the old socket. Inputs that do not fit
//! the state (a frame while idle, `handle_ws_opened` while open) are stale and ignored.

mod types;

pub use types::{
    redact_token, LlmConfig, LlmConfigError, LlmEnd, LlmEvent, LlmOutput, LlmProtocolError,
    LlmState, LlmUsageError, WsFrame, DEFAULT_CONNECT_TIMEOUT, DEFAULT_FRAME_TEXT, MAX_FRAME_TEXT,
    MAX_RESULT_FRAME, NORMAL_CLOSURE, REJECTED_RETRY_FLOOR,
};

use std::collections::{BTreeSet, VecDeque};
use std::time::Instant;

use crate::time::{next_periodic, saturating_add, TimerKind, TimerTable};
use crate::wire::llm::{
    decode_server_text, split_text, ResultFrame, ServerFrame, ServerFrameError, Task, TaskState,
    HEARTBEAT,
};

/// The link's timers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Timer {
    /// The WebSocket must open by then.
    Connect,
    /// The next empty text frame.
    Heartbeat,
    /// Nothing arrived since `peer_timeout` before this.
    PeerSilence,
}

impl TimerKind for Timer {
    const ALL: &'static [Timer] = &[Timer::Connect, Timer::Heartbeat, Timer::PeerSilence];

    fn index(self) -> usize {
        match self {
            Timer::Connect => 0,
            Timer::Heartbeat => 1,
            Timer::PeerSilence => 2,
        }
    }
}

/// A result frame waiting in the bulk queue.
#[derive(Clone, Debug)]
struct ResultOut {
    id: u32,
    bytes: Vec<u8>,
}

/// The LLM dialect link; see the module docs.
#[derive(Debug)]
pub struct LlmLink {
    config: LlmConfig,
    state: LlmState,
    timers: TimerTable<Timer>,
    /// Tasks received on this connection and not yet finished or stopped.
    active: BTreeSet<u32>,
    /// When the socket opened (while open).
    opened_at: Option<Instant>,
    control: VecDeque<LlmOutput>,
    bulk: VecDeque<ResultOut>,
}

impl LlmLink {
    /// A link that is idle until [`connect`](Self::connect). Refuses a configuration that would
    /// be rejected by the server or the wire ([`LlmConfig::validate`]).
    pub fn new(config: LlmConfig) -> Result<LlmLink, LlmConfigError> {
        config.validate()?;
        Ok(LlmLink {
            config,
            state: LlmState::Idle,
            timers: TimerTable::new(),
            active: BTreeSet::new(),
            opened_at: None,
            control: VecDeque::new(),
            bulk: VecDeque::new(),
        })
    }

    // --- A. Getters -----------------------------------------------------------------------

    /// Where the link is.
    pub fn state(&self) -> LlmState {
        self.state
    }

    /// The active tasks of this connection, ascending.
    pub fn active_tasks(&self) -> impl Iterator<Item = u32> + '_ {
        self.active.iter().copied()
    }

    /// Whether task `id` is active.
    pub fn is_active(&self, id: u32) -> bool {
        self.active.contains(&id)
    }

    /// The configuration.
    pub fn config(&self) -> &LlmConfig {
        &self.config
    }

    /// The URL `connect` dials (it carries the token: never log it).
    pub fn connect_url(&self) -> String {
        self.config.params.connect_url(&self.config.server_url)
    }

    // --- B. Inputs from the shell ---------------------------------------------------------

    /// The WebSocket opened: start the heartbeat (and the silence timer). Stale unless
    /// connecting.
    pub fn handle_ws_opened(&mut self, now: Instant) {
        if self.state != LlmState::Connecting {
            return;
        }
        self.state = LlmState::Open;
        self.opened_at = Some(now);
        self.timers.stop(Timer::Connect);
        self.timers.set(
            Timer::Heartbeat,
            saturating_add(now, self.config.heartbeat_interval),
        );
        self.arm_silence(now);
        self.control.push_back(LlmOutput::Event(LlmEvent::Open));
    }

    /// The WebSocket could not be opened, or failed while open (`detail` says why). Ends the
    /// connection. Stale while idle.
    pub fn handle_ws_failed(&mut self, now: Instant, detail: impl Into<String>) {
        match self.state {
            LlmState::Idle => {}
            LlmState::Connecting => self.end(now, LlmEnd::ConnectFailed(detail.into())),
            LlmState::Open => self.end(
                now,
                LlmEnd::Closed {
                    code: None,
                    reason: detail.into(),
                },
            ),
        }
    }

    /// The server closed the WebSocket (`code: None`: no close frame). Ends the connection. Stale
    /// while idle.
    pub fn handle_ws_closed(&mut self, now: Instant, code: Option<u16>, reason: impl Into<String>) {
        if self.state == LlmState::Idle {
            return;
        }
        self.end(now, LlmEnd::from_close(code, reason.into()));
    }

    /// A frame from the server. Stale unless open.
    pub fn handle_frame(&mut self, now: Instant, frame: WsFrame) {
        if self.state != LlmState::Open {
            return;
        }
        self.arm_silence(now);
        match frame {
            WsFrame::Text(text) => self.on_text(&text),
            WsFrame::Binary(bytes) => {
                self.misbehaved(LlmProtocolError::BinaryFrame { len: bytes.len() });
            }
            WsFrame::Ping(_) | WsFrame::Pong(_) => {}
        }
    }

    /// Fires the timers due at `now`; an early or spurious call does nothing. Afterwards
    /// `poll_timeout()` is later than `now` or `None` (design rule 8).
    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some((timer, deadline)) = self.timers.pop_expired(now) {
            match timer {
                Timer::Connect => {
                    let after = self.config.connect_timeout;
                    self.control.push_back(LlmOutput::Close {
                        code: NORMAL_CLOSURE,
                        reason: "connect timed out".to_owned(),
                    });
                    self.end(
                        now,
                        LlmEnd::ConnectFailed(format!(
                            "the WebSocket did not open within {} ms",
                            after.as_millis()
                        )),
                    );
                }
                Timer::Heartbeat => {
                    self.control
                        .push_back(LlmOutput::Send(WsFrame::Text(HEARTBEAT.to_owned())));
                    if self.config.peer_timeout.is_some() {
                        self.control
                            .push_back(LlmOutput::Send(WsFrame::Ping(Vec::new())));
                    }
                    let next = next_periodic(deadline, self.config.heartbeat_interval, now);
                    self.timers.set(Timer::Heartbeat, next);
                }
                Timer::PeerSilence => {
                    let after = self.config.peer_timeout.unwrap_or_default();
                    self.flush_bulk();
                    self.control.push_back(LlmOutput::Close {
                        code: NORMAL_CLOSURE,
                        reason: format!("server silent for {} ms", after.as_millis()),
                    });
                    self.end(now, LlmEnd::PeerSilent { after });
                }
            }
        }
    }

    // --- C. Calls from the node machine ---------------------------------------------------

    /// Dials the server. Only while idle: `close` an open link first.
    pub fn connect(&mut self, now: Instant) -> Result<(), LlmUsageError> {
        if self.state != LlmState::Idle {
            return Err(LlmUsageError::AlreadyConnected { state: self.state });
        }
        self.state = LlmState::Connecting;
        self.timers.set(
            Timer::Connect,
            saturating_add(now, self.config.connect_timeout),
        );
        self.control.push_back(LlmOutput::OpenWebSocket {
            url: self.connect_url(),
        });
        Ok(())
    }

    /// Streams `text` of task `id`: frames of at most `max_frame_text` bytes of text, cut between
    /// characters; nothing for an empty text. Does nothing when `id` is not active (stopped,
    /// finished, or its connection ended: a race the node machine need not avoid).
    pub fn send_text(&mut self, _now: Instant, id: u32, text: &str) {
        if self.state != LlmState::Open || !self.active.contains(&id) {
            return;
        }
        // `max_frame_text >= 4` was validated in `new`, so `split_text` cannot refuse it.
        let Ok(pieces) = split_text(text, self.config.max_frame_text) else {
            return;
        };
        for piece in pieces {
            // Pieces are never empty, so the data frame always encodes.
            if let Ok(bytes) = ResultFrame::data(id, piece).to_bytes() {
                self.bulk.push_back(ResultOut { id, bytes });
            }
        }
    }

    /// Ends task `id` with its finished frame (the id alone); it is no longer active. Does
    /// nothing when `id` is not active.
    pub fn finish(&mut self, _now: Instant, id: u32) {
        if self.state != LlmState::Open || !self.active.remove(&id) {
            return;
        }
        self.push_finished(id);
    }

    /// Closes the link from the node's side: queued result frames go out first, then a close
    /// with code 1000, then [`LlmEvent::Ended`] with [`LlmEnd::ClosedByNode`]. While connecting
    /// it aborts the attempt. Does nothing while idle.
    pub fn close(&mut self, now: Instant) {
        if self.state == LlmState::Idle {
            return;
        }
        self.flush_bulk();
        self.control.push_back(LlmOutput::Close {
            code: NORMAL_CLOSURE,
            reason: String::new(),
        });
        self.end(now, LlmEnd::ClosedByNode);
    }

    // --- D. Outputs -------------------------------------------------------------------------

    /// The next output: control before bulk.
    #[must_use]
    pub fn poll_output(&mut self) -> Option<LlmOutput> {
        if let Some(output) = self.control.pop_front() {
            return Some(output);
        }
        self.bulk
            .pop_front()
            .map(|out| LlmOutput::Send(WsFrame::Binary(out.bytes)))
    }

    /// When [`handle_timeout`](Self::handle_timeout) should be called next.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timers.next_expiry()
    }

    // --- Internals --------------------------------------------------------------------------

    fn on_text(&mut self, text: &str) {
        match decode_server_text(text) {
            Ok(ServerFrame::Task(task)) => self.on_task(task),
            Ok(ServerFrame::Stop { id }) => {
                if self.active.remove(&id) {
                    self.bulk.retain(|out| out.id != id);
                    self.control
                        .push_back(LlmOutput::Event(LlmEvent::Stop { id }));
                }
            }
            // The original nodes skip an empty frame; the dialect gives it no meaning.
            Err(ServerFrameError::Empty) => {}
            Err(error) => {
                let answered = self.answer_unrunnable(error.id());
                self.misbehaved(LlmProtocolError::Undecodable { error, answered });
            }
        }
    }

    fn on_task(&mut self, task: Task) {
        let id = task.id;
        if self.active.contains(&id) {
            self.misbehaved(LlmProtocolError::DuplicateTask { id });
        } else if task.state != TaskState::Pending {
            let answered = self.answer_unrunnable(Some(id));
            self.misbehaved(LlmProtocolError::TaskNotPending {
                id,
                state: task.state,
                answered,
            });
        } else if self.active.len() >= self.max_concurrency() {
            self.push_finished(id);
            self.misbehaved(LlmProtocolError::OverConcurrency {
                id,
                max: self.config.params.max_concurrency,
            });
        } else {
            self.active.insert(id);
            self.control
                .push_back(LlmOutput::Event(LlmEvent::Task(task)));
        }
    }

    /// Sends the finished frame for a task the node will not run, unless an active task has that
    /// id (it is left alone). Returns whether it was sent.
    fn answer_unrunnable(&mut self, id: Option<u32>) -> bool {
        match id {
            Some(id) if !self.active.contains(&id) => {
                self.push_finished(id);
                true
            }
            _ => false,
        }
    }

    fn push_finished(&mut self, id: u32) {
        self.bulk.push_back(ResultOut {
            id,
            bytes: ResultFrame::finished(id).to_bytes().unwrap_or_default(),
        });
    }

    fn misbehaved(&mut self, error: LlmProtocolError) {
        self.control
            .push_back(LlmOutput::Event(LlmEvent::PeerMisbehaved(error)));
    }

    fn max_concurrency(&self) -> usize {
        usize::try_from(self.config.params.max_concurrency).unwrap_or(usize::MAX)
    }

    fn arm_silence(&mut self, now: Instant) {
        if let Some(after) = self.config.peer_timeout {
            self.timers
                .set(Timer::PeerSilence, saturating_add(now, after));
        }
    }

    /// Moves the queued result frames into the control queue, behind what is there, so a close
    /// that follows them does not overtake them.
    fn flush_bulk(&mut self) {
        let bulk = std::mem::take(&mut self.bulk);
        self.control.extend(
            bulk.into_iter()
                .map(|out| LlmOutput::Send(WsFrame::Binary(out.bytes))),
        );
    }

    /// Ends the connection: the link is idle, its timers stop, frames not yet drained are
    /// dropped (a flush has already moved those the node's own close sends), and one `Ended`
    /// event reports the active tasks.
    fn end(&mut self, now: Instant, end: LlmEnd) {
        self.state = LlmState::Idle;
        self.timers.stop_all();
        self.bulk.clear();
        // Frames queued before a `Close` output (a flush) still go out; others cannot.
        let last_close = self
            .control
            .iter()
            .rposition(|out| matches!(out, LlmOutput::Close { .. }));
        let mut at = 0;
        self.control.retain(|out| {
            let keep = !matches!(out, LlmOutput::Send(_)) || last_close.is_some_and(|c| at < c);
            at += 1;
            keep
        });
        let open_for = self
            .opened_at
            .take()
            .map(|opened| now.saturating_duration_since(opened));
        let active_tasks = std::mem::take(&mut self.active).into_iter().collect();
        self.control.push_back(LlmOutput::Event(LlmEvent::Ended {
            end,
            active_tasks,
            open_for,
        }));
    }
}
