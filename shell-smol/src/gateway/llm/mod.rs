//! The LLM node dialect in the gateway server (docs/llm.md; docs/protocol.md section 8.12).
//!
//! # Shape
//! The sans-IO `LlmGateway` lives on the driver thread next to the hub machine ([`LlmPart`]), so
//! per-node tokens are checked with the hub's node book and one timer loop serves both. The HTTP
//! side ([`routes`]) serves, on the same port:
//! - `GET /ws?token=..&model=..&max_concurrency=..&name=..` upgraded to a WebSocket: an LLM node.
//!   The socket is opened first and the machine decides (4001, 4002, or accepted), as the
//!   original server does; the socket task is the hub's (`ws::run`).
//! - `POST /api/chat`: the original server's user API, newline-delimited JSON.
//! - `POST /v1/chat/completions`: the OpenAI API, streamed (server-sent events) or whole.
//!
//! A user's response body holds a guard: when the client goes away hyper drops the body (or the
//! handler future), and the guard tells the machine to stop the task, which sends the node its
//! stop frame at once.

mod api;
mod body;
pub(crate) mod routes;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use nodelink_core::gateway::llm::{
    ChatRequest, LlmGateway, LlmGatewayConfig, LlmGatewayEvent, LlmGatewayOutput, NodeTokenCheck,
    TaskId, TaskUpdate,
};
use nodelink_core::gateway::{ConnId, Source};
use smol::channel::{Sender, TrySendError};

use super::driver::{Outbound, SocketHandle};

pub use nodelink_core::gateway::llm::LlmConfigError;

/// The LLM dialect's part of a [`super::ServerConfig`].
#[derive(Clone, Debug, Default)]
pub struct LlmServerConfig {
    /// The machine's timers and the shared node token (`--llm-token`).
    pub machine: LlmGatewayConfig,
    /// The bearer token of the user APIs (`--llm-api-token`). The admin token is accepted too.
    pub api_token: Option<String>,
}

/// What HTTP tasks ask of the LLM machine on the driver.
pub(crate) enum LlmMessage {
    /// A WebSocket at `/ws` is being opened: the machine accepts it or closes it.
    Connect {
        conn: ConnId,
        source: Source,
        target: String,
        socket: SocketHandle,
    },
    /// A user's chat: its id comes back on `reply`, its updates on `updates`.
    Submit {
        model: String,
        request: ChatRequest,
        updates: Sender<TaskUpdate>,
        reply: Sender<TaskId>,
    },
    /// The user went away.
    Stop { task: TaskId },
}

/// The driver's LLM machine, its node sockets and its users' streams.
pub(crate) struct LlmPart {
    machine: LlmGateway,
    sockets: HashMap<ConnId, SocketHandle>,
    users: HashMap<TaskId, Sender<TaskUpdate>>,
    /// Sockets the driver aborted (slow readers): the machine is told at the next drain.
    aborted: Vec<ConnId>,
}

impl LlmPart {
    pub fn new(
        config: LlmGatewayConfig,
        now: Instant,
        unix_now: Duration,
    ) -> Result<LlmPart, LlmConfigError> {
        Ok(LlmPart {
            machine: LlmGateway::new(config, now, unix_now)?,
            sockets: HashMap::new(),
            users: HashMap::new(),
            aborted: Vec::new(),
        })
    }

    /// Whether `conn` is an LLM node socket the machine still holds.
    pub fn owns(&self, conn: ConnId) -> bool {
        self.sockets.contains_key(&conn)
    }

    pub fn handle(&mut self, now: Instant, message: LlmMessage, tokens: &mut dyn NodeTokenCheck) {
        match message {
            LlmMessage::Connect {
                conn,
                source,
                target,
                socket,
            } => {
                self.sockets.insert(conn, socket);
                if let Err(e) = self
                    .machine
                    .handle_connect(now, conn, &target, &source, tokens)
                {
                    tracing::warn!(conn = conn.0, "LLM connect: {e}");
                }
            }
            LlmMessage::Submit {
                model,
                request,
                updates,
                reply,
            } => {
                let task = self.machine.submit(now, &model, request);
                self.users.insert(task, updates);
                if reply.try_send(task).is_err() {
                    // The user left before learning the id.
                    self.machine.stop(now, task);
                }
            }
            LlmMessage::Stop { task } => {
                self.machine.stop(now, task);
            }
        }
    }

    pub fn frame(&mut self, now: Instant, conn: ConnId, frame: nodelink_core::node::WsFrame) {
        self.machine.handle_frame(now, conn, frame);
    }

    pub fn closed(&mut self, now: Instant, conn: ConnId) {
        if self.sockets.remove(&conn).is_some() {
            self.machine.handle_closed(now, conn);
        }
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        self.machine.poll_timeout()
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        if self.machine.poll_timeout().is_some_and(|at| at <= now) {
            self.machine.handle_timeout(now);
        }
    }

    /// Delivers every output until the machine is quiet.
    pub fn drain(&mut self) {
        loop {
            while let Some(output) = self.machine.poll_output() {
                self.deliver(output);
            }
            if self.aborted.is_empty() {
                return;
            }
            let now = Instant::now();
            for conn in std::mem::take(&mut self.aborted) {
                self.machine.handle_closed(now, conn);
            }
        }
    }

    fn deliver(&mut self, output: LlmGatewayOutput) {
        match output {
            LlmGatewayOutput::Send { conn, frame } => self.send(conn, Outbound::Frame(frame)),
            LlmGatewayOutput::Close { conn, code, reason } => {
                self.send(conn, Outbound::Close(code, reason));
                // The machine has forgotten it: the socket task's end needs no report.
                self.sockets.remove(&conn);
            }
            LlmGatewayOutput::Task { task, update } => {
                let terminal = update.is_terminal();
                if let Some(user) = self.users.get(&task) {
                    // Unbounded: a task's text is bounded by its max_new_tokens.
                    let _ = user.try_send(update);
                }
                if terminal {
                    self.users.remove(&task);
                }
            }
            LlmGatewayOutput::Event(event) => log_event(&event),
        }
    }

    /// Queues a frame; a full queue aborts the socket (its node stopped reading).
    fn send(&mut self, conn: ConnId, message: Outbound) {
        let Some(socket) = self.sockets.get(&conn) else {
            return;
        };
        match socket.outbound.try_send(message) {
            Ok(()) | Err(TrySendError::Closed(_)) => {}
            Err(TrySendError::Full(_)) => {
                let _ = socket.abort.try_send(());
                self.sockets.remove(&conn);
                tracing::warn!(conn = conn.0, "LLM node: slow reader, connection closed");
                self.aborted.push(conn);
            }
        }
    }
}

fn log_event(event: &LlmGatewayEvent) {
    match event {
        LlmGatewayEvent::NodeAccepted {
            conn,
            identity,
            max_concurrency,
            credential,
        } => tracing::info!(
            conn = conn.0,
            ?identity,
            max_concurrency,
            ?credential,
            "LLM node accepted"
        ),
        LlmGatewayEvent::NodeRefused { conn, refusal } => {
            tracing::info!(conn = conn.0, ?refusal, "LLM node refused")
        }
        LlmGatewayEvent::NodeGone {
            conn,
            identity,
            because,
            requeued,
            failed,
        } => tracing::info!(
            conn = conn.0,
            ?identity,
            ?because,
            ?requeued,
            ?failed,
            "LLM node gone"
        ),
        LlmGatewayEvent::PeerMisbehaved { conn, error } => {
            tracing::warn!(conn = conn.0, %error, "LLM node misbehaved")
        }
        other => tracing::debug!(event = ?other),
    }
}
