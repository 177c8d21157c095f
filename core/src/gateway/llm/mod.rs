//! The gateway side of the LLM node dialect (docs/protocol.md section 8): many node connections,
//! the users' chat tasks, and which task runs where. Sans-IO; the normative text is section 8.12
//! of docs/protocol.md (written in docs/llm-gateway-spec.md until it is merged there).
//!
//! Cost: routing scans the connections of the task's model (a handful per model in practice);
//! everything else is O(log n) in the connections and live tasks.
//!
//! # Theory of operation
//! The shell numbers every WebSocket ([`ConnId`]) and reports it opening
//! ([`LlmGateway::handle_connect`] with the request target and a borrowed [`NodeTokenCheck`]),
//! its frames ([`LlmGateway::handle_frame`]) and its end ([`LlmGateway::handle_closed`]). Users
//! come through [`LlmGateway::submit`] and [`LlmGateway::stop`]. Everything the gateway decides
//! comes out of [`LlmGateway::poll_output`] in the order it was decided: frames and closes for
//! nodes, [`TaskUpdate`]s for the users' streams, and events for logs.
//!
//! - **Connecting.** Bad parameters close with 4001, a token that is neither the shared token
//!   (constant-time) nor an approved node token closes with 4002. A node's identity is model +
//!   name; a second connection with it replaces the first, which is closed with 4000 `Bye`.
//! - **Scheduling.** Each model has one FIFO queue. A task goes to the connection of its model
//!   with a free slot (fewer than `max_concurrency` tasks) and the lowest load (tasks /
//!   `max_concurrency`; then the most free slots; then the oldest connection). A task still queued
//!   `queue_timeout` (30 s) after it entered the queue fails with `timeout waiting for node`; one
//!   not finished `finish_timeout` (300 s) after submission fails and its node is told to stop.
//! - **Losing a node** (replaced, silent for `silent_intervals` heartbeat intervals, or closed):
//!   each of its tasks is queued again, once, unless text of it already reached the user; a task
//!   that cannot be queued again fails with `node disconnected`. Nothing stays counted against a
//!   connection that is gone (the original server's leak).
//! - **Results.** A task's data frames are decoded in order through a [`Utf8Cutter`]: a character
//!   a node cut across two frames is carried and completed, so the user only ever receives whole
//!   characters; bytes that are not UTF-8 fail the task. Data for a task the connection does not
//!   run is answered with a stop (once per task); a finished frame for one is ignored.
//!
//! Every input first fires the timers due at its instant, so an outcome never depends on whether
//! the shell called [`LlmGateway::handle_timeout`] before or after another input at the same
//! instant. Silence is tracked lazily: a frame only stores its instant, and the silence timer
//! moves when it fires early.

mod results;
mod sched;
mod types;

pub use types::{
    ChatRequest, Credential, GoneBecause, LlmConfigError, LlmGatewayConfig, LlmGatewayEvent,
    LlmGatewayOutput, LlmUsageError, NoNodeTokens, NodeFrameError, NodeTokenCheck, Refusal,
    TaskError, TaskId, TaskUpdate, WsFrame, DEFAULT_FINISH_TIMEOUT, DEFAULT_MAX_NEW_TOKENS,
    DEFAULT_QUEUE_TIMEOUT, MAX_TASK_ID,
};

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::{Duration, Instant};

use subtle::ConstantTimeEq;

use crate::gateway::auth::{hash_secret, UnixClock};
use crate::gateway::{ConnId, Source};
use crate::time::{saturating_add, DeadlineQueue};
use crate::wire::llm::{CloseCode, ConnectParams, NodeIdentity, Task, TaskState, Utf8Cutter};

/// A timer. At one instant they fire in this order: silence, queue, finish.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Timer {
    /// The connection's silence limit (moved lazily: see the module docs).
    Silence(ConnId),
    /// The queued task's wait ends.
    Queue(u32),
    /// The task's finish deadline.
    Finish(u32),
}

/// How many stopped task ids a connection remembers, so that their late data is dropped
/// silently instead of answered with another stop.
const STOPPED_MEMORY: usize = 64;

/// A node connection that was accepted.
#[derive(Debug)]
struct Conn {
    identity: NodeIdentity,
    max_concurrency: u32,
    /// Accept order: the tie-break of routing.
    seq: u64,
    running: BTreeSet<u32>,
    /// Tasks this connection was told to stop, most recent last.
    stopped: VecDeque<u32>,
    last_seen: Instant,
}

impl Conn {
    fn has_free_slot(&self) -> bool {
        (self.running.len() as u64) < u64::from(self.max_concurrency)
    }

    fn remember_stopped(&mut self, id: u32) {
        if self.stopped.len() == STOPPED_MEMORY {
            self.stopped.pop_front();
        }
        self.stopped.push_back(id);
    }
}

/// A task from submission to its terminal update.
#[derive(Debug)]
struct TaskEntry {
    model: String,
    /// Submission order: the queue's order.
    seq: u64,
    /// The task frame, encoded once.
    frame: String,
    /// Whether it was queued again after losing its node (it is not a second time).
    requeued: bool,
    stage: Stage,
}

#[derive(Debug)]
enum Stage {
    Queued,
    Running {
        conn: ConnId,
        cutter: Utf8Cutter,
        /// Whether any text reached the user (then it cannot be run again).
        streamed: bool,
    },
}

/// Where a task is, for status pages and tests.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TaskView {
    Queued,
    Running { conn: ConnId },
}

/// A connected node, for status pages and tests.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LlmNodeView {
    pub conn: ConnId,
    pub identity: NodeIdentity,
    pub max_concurrency: u32,
    /// Its tasks, ascending.
    pub running: Vec<TaskId>,
}

/// The gateway of the LLM node dialect; see the module docs.
#[derive(Debug)]
pub struct LlmGateway {
    config: LlmGatewayConfig,
    shared_token_sha256: Option<[u8; 32]>,
    unix: UnixClock,
    conns: BTreeMap<ConnId, Conn>,
    by_identity: BTreeMap<NodeIdentity, ConnId>,
    by_model: BTreeMap<String, BTreeSet<ConnId>>,
    tasks: BTreeMap<u32, TaskEntry>,
    /// Per model: queued tasks by (submission order, id).
    queues: BTreeMap<String, BTreeSet<(u64, u32)>>,
    timers: DeadlineQueue<Timer>,
    outputs: VecDeque<LlmGatewayOutput>,
    next_id: u32,
    next_seq: u64,
}

impl LlmGateway {
    /// A gateway with no node and no task. `unix_now` is the Unix time at `now` (for the tasks'
    /// `created_at`).
    pub fn new(
        config: LlmGatewayConfig,
        now: Instant,
        unix_now: Duration,
    ) -> Result<LlmGateway, LlmConfigError> {
        config.validate()?;
        Ok(LlmGateway {
            shared_token_sha256: config.shared_token.as_deref().map(hash_secret),
            config,
            unix: UnixClock::new(now, unix_now),
            conns: BTreeMap::new(),
            by_identity: BTreeMap::new(),
            by_model: BTreeMap::new(),
            tasks: BTreeMap::new(),
            queues: BTreeMap::new(),
            timers: DeadlineQueue::new(),
            outputs: VecDeque::new(),
            next_id: 1,
            next_seq: 0,
        })
    }

    // --- A. Getters ---------------------------------------------------------------------------

    pub fn config(&self) -> &LlmGatewayConfig {
        &self.config
    }

    /// The connected nodes, by `ConnId`.
    pub fn nodes(&self) -> Vec<LlmNodeView> {
        self.conns
            .iter()
            .map(|(conn, c)| LlmNodeView {
                conn: *conn,
                identity: c.identity.clone(),
                max_concurrency: c.max_concurrency,
                running: c.running.iter().map(|id| TaskId(*id)).collect(),
            })
            .collect()
    }

    /// Where a live task is; `None` once it has ended (or never existed).
    pub fn task(&self, task: TaskId) -> Option<TaskView> {
        self.tasks.get(&task.0).map(|t| match t.stage {
            Stage::Queued => TaskView::Queued,
            Stage::Running { conn, .. } => TaskView::Running { conn },
        })
    }

    /// How many tasks are live (queued or running).
    pub fn live_tasks(&self) -> usize {
        self.tasks.len()
    }

    // --- B. Inputs from the shell -------------------------------------------------------------

    /// A WebSocket opened at `target` (the request's path and query, e.g. `/ws?token=..`) from
    /// `source`. Accepts the node, or closes the connection with 4001 or 4002. Per-node tokens
    /// are checked with `tokens`. Errs only when `conn` is already open (caller misuse).
    pub fn handle_connect(
        &mut self,
        now: Instant,
        conn: ConnId,
        target: &str,
        source: &Source,
        tokens: &mut dyn NodeTokenCheck,
    ) -> Result<(), LlmUsageError> {
        self.handle_timeout(now);
        if self.conns.contains_key(&conn) {
            return Err(LlmUsageError::ConnInUse(conn));
        }
        let params = match ConnectParams::from_request_target(target) {
            Ok(params) => params,
            Err(error) => {
                self.emit(LlmGatewayOutput::Close {
                    conn,
                    code: error.close_code().code(),
                    reason: error.close_reason(),
                });
                self.event(LlmGatewayEvent::NodeRefused {
                    conn,
                    refusal: Refusal::Parameters(error),
                });
                return Ok(());
            }
        };
        let credential = match self.check_token(now, &params.token, source, tokens) {
            Ok(credential) => credential,
            Err(error) => {
                let code = CloseCode::InvalidToken;
                self.emit(LlmGatewayOutput::Close {
                    conn,
                    code: code.code(),
                    reason: code.reason().to_owned(),
                });
                self.event(LlmGatewayEvent::NodeRefused {
                    conn,
                    refusal: Refusal::Token(error),
                });
                return Ok(());
            }
        };
        self.accept(now, conn, params, credential);
        Ok(())
    }

    /// A frame from a node. Any frame is a sign of life. Frames of a connection the gateway does
    /// not hold (refused, replaced, dropped) are ignored.
    pub fn handle_frame(&mut self, now: Instant, conn: ConnId, frame: WsFrame) {
        self.handle_timeout(now);
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        c.last_seen = now;
        match frame {
            WsFrame::Text(text) if text.is_empty() => {}
            WsFrame::Text(text) => self.event(LlmGatewayEvent::PeerMisbehaved {
                conn,
                error: NodeFrameError::UnexpectedText { len: text.len() },
            }),
            WsFrame::Binary(bytes) => self.on_result(conn, &bytes),
            WsFrame::Ping(_) | WsFrame::Pong(_) => {}
        }
    }

    /// The node's WebSocket closed or failed. Its tasks are queued again or failed.
    pub fn handle_closed(&mut self, now: Instant, conn: ConnId) {
        self.handle_timeout(now);
        if self.conns.contains_key(&conn) {
            self.drop_conn(now, conn, GoneBecause::Closed, false);
        }
    }

    /// Fires the timers due at `now`; early or spurious calls do nothing. Afterwards
    /// `poll_timeout()` is later than `now` or `None`.
    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some(timer) = self.timers.pop_expired(now) {
            match timer {
                Timer::Silence(conn) => {
                    let limit = self.config.silence_limit();
                    let Some(c) = self.conns.get(&conn) else {
                        continue;
                    };
                    let due = saturating_add(c.last_seen, limit);
                    if due > now {
                        self.timers.insert(Timer::Silence(conn), due);
                    } else {
                        self.drop_conn(now, conn, GoneBecause::Silent { after: limit }, true);
                    }
                }
                Timer::Queue(id) => {
                    if matches!(self.tasks.get(&id), Some(t) if matches!(t.stage, Stage::Queued)) {
                        self.end_task(id, TaskUpdate::Failed(TaskError::QueueTimeout), false);
                    }
                }
                Timer::Finish(id) => {
                    if self.tasks.contains_key(&id) {
                        self.end_task(id, TaskUpdate::Failed(TaskError::FinishTimeout), false);
                    }
                }
            }
        }
    }

    // --- C. The application API ---------------------------------------------------------------

    /// A user's chat task for `model`: queued, and sent to a node as soon as one has a free slot.
    /// Its updates come out as [`LlmGatewayOutput::Task`].
    pub fn submit(&mut self, now: Instant, model: &str, request: ChatRequest) -> TaskId {
        self.handle_timeout(now);
        let id = self.allocate_id();
        let temperature = request.temperature.filter(|t| t.is_finite()).unwrap_or(0.0);
        let task = Task {
            state: TaskState::Pending,
            id,
            system: Some(request.system.unwrap_or_default()),
            messages: request.messages,
            max_new_tokens: Some(
                request
                    .max_new_tokens
                    .unwrap_or(self.config.default_max_new_tokens),
            ),
            temperature: Some(temperature),
            created_at: Some(self.unix.unix_ms(now) / 1000),
        };
        let seq = self.next_seq;
        self.next_seq += 1;
        self.tasks.insert(
            id,
            TaskEntry {
                model: model.to_owned(),
                seq,
                frame: task.encode(),
                requeued: false,
                stage: Stage::Queued,
            },
        );
        if let Some(after) = self.config.finish_timeout {
            self.timers
                .insert(Timer::Finish(id), saturating_add(now, after));
        }
        self.enqueue(now, id);
        self.pump(model);
        TaskId(id)
    }

    /// The user of `task` went away: a running task's node gets a stop frame at once and its slot
    /// is free; a queued task leaves the queue. Ends with [`TaskUpdate::Stopped`]. Returns whether
    /// the task was live.
    pub fn stop(&mut self, now: Instant, task: TaskId) -> bool {
        self.handle_timeout(now);
        if !self.tasks.contains_key(&task.0) {
            return false;
        }
        self.end_task(task.0, TaskUpdate::Stopped, false);
        true
    }

    // --- D. Outputs ---------------------------------------------------------------------------

    /// The next output, in the order decided.
    #[must_use]
    pub fn poll_output(&mut self) -> Option<LlmGatewayOutput> {
        self.outputs.pop_front()
    }

    /// When [`handle_timeout`](Self::handle_timeout) wants to be called.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timers.next_deadline()
    }

    // --- E. Internals -------------------------------------------------------------------------

    fn emit(&mut self, output: LlmGatewayOutput) {
        self.outputs.push_back(output);
    }

    fn event(&mut self, event: LlmGatewayEvent) {
        self.outputs.push_back(LlmGatewayOutput::Event(event));
    }

    /// The shared token (hashes compared in constant time, so neither its length nor its
    /// content leaks through timing), else a node token.
    fn check_token(
        &self,
        now: Instant,
        token: &str,
        source: &Source,
        tokens: &mut dyn NodeTokenCheck,
    ) -> Result<Credential, crate::gateway::auth::AuthError> {
        if let Some(shared) = &self.shared_token_sha256 {
            if bool::from(hash_secret(token).ct_eq(shared)) {
                return Ok(Credential::Shared);
            }
        }
        tokens
            .check_node_token(now, token, source)
            .map(Credential::Node)
    }

    /// The next free id from 1 to [`MAX_TASK_ID`], wrapping. Live tasks are far fewer than 2^31,
    /// so the search ends.
    fn allocate_id(&mut self) -> u32 {
        loop {
            let id = self.next_id;
            self.next_id = if id >= MAX_TASK_ID { 1 } else { id + 1 };
            if !self.tasks.contains_key(&id) {
                return id;
            }
        }
    }
}
