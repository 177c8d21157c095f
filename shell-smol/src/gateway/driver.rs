//! The driver: the one task that owns the gateway machine.
//!
//! It takes [`ToDriver`] messages from connection tasks and the operator API, feeds them to the
//! machine with `Instant::now()`, fires its timers, and drains its outputs: `Persist` records go
//! to the store in one transaction per drain BEFORE the drain's other outputs are delivered;
//! replies go to the waiting HTTP task; frames go to the socket's outbound queue (bounded in
//! bytes, [`super::outbound`]). A full
//! queue means a peer that stopped reading: that connection is aborted and the machine told, so
//! the driver never waits on a socket.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_lite::future;
use nodelink_core::gateway::dispatch::CommandOutcome;
use nodelink_core::gateway::{
    ConnId, Gateway, GatewayEvent, GatewayInput, GatewayOutput, HttpReply, HttpRequest, Source,
    StoreRecord,
};
use nodelink_core::node::WsFrame;
use smol::channel::{Receiver, Sender, TrySendError};
use smol::Timer;

use super::metrics::Metrics;
use super::outbound::OutboundSender;
use super::store::Store;

/// An operator action run on the driver with the machine in hand.
pub(crate) type Call = Box<dyn FnOnce(&mut Ctx<'_>) + Send>;

/// A [`Call`] running `f`, whose answer goes to `tx` only once the records `f` caused are
/// stored (never when the store fails).
pub(crate) fn answering<T: Send + 'static>(
    f: impl FnOnce(&mut Ctx<'_>) -> T + Send + 'static,
    tx: Sender<T>,
) -> Call {
    Box::new(move |ctx| {
        let answer = f(ctx);
        ctx.after_persist(move || {
            let _ = tx.try_send(answer);
        });
    })
}

/// What a [`Call`] gets: the machine, the instant, and the places to wait for outcomes.
pub(crate) struct Ctx<'a> {
    pub gateway: &'a mut Gateway,
    pub now: Instant,
    /// The machine's default command timeout (a dispatch without one gets it).
    pub default_timeout: Duration,
    waiters: &'a mut HashMap<String, Vec<Sender<CommandOutcome>>>,
    dispatched: &'a mut HashMap<String, Instant>,
    after_persist: &'a mut Vec<Deferred>,
}

/// Work that must wait until the drain's records are stored (an operator's answer).
type Deferred = Box<dyn FnOnce() + Send>;

impl Ctx<'_> {
    /// The outcome of `command_id` will be sent on the returned channel when it finishes.
    pub fn wait_for(&mut self, command_id: &str) -> Receiver<CommandOutcome> {
        let (tx, rx) = smol::channel::bounded(1);
        self.waiters
            .entry(command_id.to_string())
            .or_default()
            .push(tx);
        rx
    }

    /// Runs `f` once the records this action produced are stored: an answer to the operator
    /// must never get ahead of the store (a dispatch acknowledged and then lost to a crash).
    /// Dropped unrun when the store fails.
    pub fn after_persist(&mut self, f: impl FnOnce() + Send + 'static) {
        self.after_persist.push(Box::new(f));
    }

    /// Marks the operator's dispatch of `command_id` (for the latency histogram).
    pub fn dispatched(&mut self, command_id: &str) {
        self.dispatched.insert(command_id.to_string(), self.now);
    }
}

/// What a socket task's outbound queue carries.
#[derive(Debug)]
pub(crate) enum Outbound {
    Frame(WsFrame),
    Close(u16, String),
}

/// The driver's hold on one WebSocket: its outbound queue, and a way to abort it at once.
pub(crate) struct SocketHandle {
    pub outbound: OutboundSender,
    /// A message here aborts the socket task (slow reader); dropping it means nothing.
    pub abort: Sender<()>,
}

pub(crate) enum ToDriver {
    Http {
        conn: ConnId,
        source: Source,
        request: HttpRequest,
        reply: Sender<HttpReply>,
    },
    Upgrade {
        conn: ConnId,
        source: Source,
        request: HttpRequest,
        reply: Sender<Result<(), HttpReply>>,
        socket: SocketHandle,
    },
    Frame {
        conn: ConnId,
        frame: WsFrame,
    },
    /// The socket task of `conn` ended (the peer closed, or an error).
    Closed {
        conn: ConnId,
        code: Option<u16>,
    },
    Call(Call),
    /// The LLM node dialect and its user APIs.
    Llm(super::llm::LlmMessage),
    /// Graceful shutdown: close every hub connection (allowReconnect), flush, stop.
    Shutdown {
        reason: String,
        done: Sender<()>,
    },
}

enum Slot {
    Http(Sender<HttpReply>),
    Upgrading {
        reply: Sender<Result<(), HttpReply>>,
        socket: SocketHandle,
    },
    Socket(SocketHandle),
}

pub(crate) struct Driver {
    pub gateway: Gateway,
    pub store: Store,
    pub rx: Receiver<ToDriver>,
    pub metrics: Arc<Metrics>,
    default_timeout: Duration,
    slots: HashMap<ConnId, Slot>,
    waiters: HashMap<String, Vec<Sender<CommandOutcome>>>,
    dispatched: HashMap<String, Instant>,
    /// Inputs the driver itself owes the machine (sockets it aborted).
    owed: Vec<GatewayInput>,
    /// Operator answers waiting for the current drain's records to be stored.
    after_persist: Vec<Deferred>,
    stopping: Option<Sender<()>>,
    /// Set when the store cannot take a drain's records: the driver stops (fail-stop).
    failure: Option<String>,
    /// Told why the driver stopped on its own (a store failure).
    failed_tx: Option<Sender<String>>,
    /// The LLM dialect's machine, sockets and users (`None`: LLM messages are dropped).
    llm: Option<super::llm::LlmPart>,
}

/// Messages handled before one drain (bounds the latency a burst adds to the first reply).
const BATCH: usize = 256;

impl Driver {
    pub fn new(
        gateway: Gateway,
        store: Store,
        rx: Receiver<ToDriver>,
        metrics: Arc<Metrics>,
        default_timeout: Duration,
    ) -> Driver {
        Driver {
            default_timeout,
            gateway,
            store,
            rx,
            metrics,
            slots: HashMap::new(),
            waiters: HashMap::new(),
            dispatched: HashMap::new(),
            owed: Vec::new(),
            after_persist: Vec::new(),
            stopping: None,
            failure: None,
            failed_tx: None,
            llm: None,
        }
    }

    /// Serves the LLM node dialect with `llm`.
    pub fn set_llm(&mut self, llm: super::llm::LlmPart) {
        self.llm = Some(llm);
    }

    /// The earliest timer of both machines.
    fn next_timeout(&self) -> Option<Instant> {
        let llm = self.llm.as_ref().and_then(|l| l.poll_timeout());
        match (self.gateway.poll_timeout(), llm) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Where to say why the driver stopped on its own.
    pub fn on_failure(&mut self, tx: Sender<String>) {
        self.failed_tx = Some(tx);
    }

    /// Runs until shutdown, until every sender is gone, or until the store fails.
    pub fn run(mut self) {
        // What `restore` produced (commands ended while the gateway was down).
        self.drain();
        let rx = self.rx.clone();
        smol::block_on(async {
            loop {
                let message = match self.next_timeout() {
                    Some(at) => {
                        future::or(async { Some(rx.recv().await) }, async {
                            Timer::at(at).await;
                            None
                        })
                        .await
                    }
                    None => Some(rx.recv().await),
                };
                let now = Instant::now();
                match message {
                    Some(Ok(message)) => {
                        self.handle(now, message);
                        for _ in 1..BATCH {
                            match rx.try_recv() {
                                Ok(message) => self.handle(now, message),
                                Err(_) => break,
                            }
                        }
                    }
                    Some(Err(_)) => break,
                    None => {}
                }
                if self.gateway.poll_timeout().is_some_and(|at| at <= now) {
                    self.gateway.handle_timeout(now);
                }
                if let Some(llm) = &mut self.llm {
                    llm.handle_timeout(now);
                }
                self.drain();
                if let Some(failure) = self.failure.take() {
                    if let Some(tx) = &self.failed_tx {
                        let _ = tx.try_send(failure);
                    }
                    break;
                }
                if let Some(done) = self.stopping.take() {
                    if let Err(e) = self.store.checkpoint() {
                        tracing::warn!("store checkpoint at shutdown: {e}");
                    }
                    let _ = done.try_send(());
                    break;
                }
            }
        });
    }

    fn handle(&mut self, now: Instant, message: ToDriver) {
        match message {
            ToDriver::Http {
                conn,
                source,
                request,
                reply,
            } => {
                self.slots.insert(conn, Slot::Http(reply));
                self.gateway.handle_input(
                    now,
                    GatewayInput::Http {
                        conn,
                        source,
                        request,
                    },
                );
            }
            ToDriver::Upgrade {
                conn,
                source,
                request,
                reply,
                socket,
            } => {
                self.slots.insert(conn, Slot::Upgrading { reply, socket });
                self.gateway.handle_input(
                    now,
                    GatewayInput::Upgrade {
                        conn,
                        source,
                        request,
                    },
                );
            }
            ToDriver::Frame { conn, frame } => {
                if let Some(llm) = self.llm.as_mut().filter(|l| l.owns(conn)) {
                    llm.frame(now, conn, frame);
                } else if self.slots.contains_key(&conn) {
                    self.gateway
                        .handle_input(now, GatewayInput::Frame { conn, frame });
                }
            }
            ToDriver::Closed { conn, code } => {
                if let Some(llm) = self.llm.as_mut().filter(|l| l.owns(conn)) {
                    llm.closed(now, conn);
                }
                // Unknown: the machine closed it, or the driver aborted it and told it already.
                else if self.slots.remove(&conn).is_some() {
                    self.gateway
                        .handle_input(now, GatewayInput::SocketClosed { conn, code });
                }
            }
            ToDriver::Call(call) => {
                let mut ctx = Ctx {
                    gateway: &mut self.gateway,
                    now,
                    default_timeout: self.default_timeout,
                    waiters: &mut self.waiters,
                    dispatched: &mut self.dispatched,
                    after_persist: &mut self.after_persist,
                };
                call(&mut ctx);
            }
            ToDriver::Llm(message) => {
                if let Some(llm) = &mut self.llm {
                    llm.handle(now, message, &mut self.gateway);
                }
            }
            ToDriver::Shutdown { reason, done } => {
                tracing::info!("shutting down: {reason}");
                self.gateway.shutdown(now, &reason);
                self.stopping = Some(done);
            }
        }
    }

    /// Delivers every output, persisting first, until the machine is quiet.
    fn drain(&mut self) {
        loop {
            let outputs: Vec<GatewayOutput> =
                std::iter::from_fn(|| self.gateway.poll_output()).collect();
            if outputs.is_empty() {
                if self.owed.is_empty() {
                    break;
                }
                let now = Instant::now();
                for input in std::mem::take(&mut self.owed) {
                    self.gateway.handle_input(now, input);
                }
                continue;
            }
            let records: Vec<&StoreRecord> = outputs
                .iter()
                .filter_map(|o| match o {
                    GatewayOutput::Persist(record) => Some(record),
                    _ => None,
                })
                .collect();
            if !records.is_empty() {
                if let Err(e) = self.store.write(records.iter().copied()) {
                    tracing::warn!("store write failed, retrying once: {e}");
                    if let Err(e) = self.store.write(records) {
                        // Nothing that depends on these records may be answered: every waiting
                        // request fails (503), every socket is closed, and the gateway stops.
                        let failure = format!("the store cannot be written: {e}");
                        tracing::error!("{failure}; stopping");
                        self.failure = Some(failure);
                        self.slots.clear();
                        self.waiters.clear();
                        self.after_persist.clear();
                        return;
                    }
                }
            }
            for output in outputs {
                self.deliver(output);
            }
        }
        // Everything the machine produced is stored now: the operator may hear of it.
        for deferred in std::mem::take(&mut self.after_persist) {
            deferred();
        }
        if let Some(llm) = &mut self.llm {
            llm.drain();
        }
        self.metrics.hub_connections.store(
            i64::try_from(self.gateway.connection_count()).unwrap_or(i64::MAX),
            Ordering::Relaxed,
        );
    }

    fn deliver(&mut self, output: GatewayOutput) {
        match output {
            GatewayOutput::Persist(_) => {}
            GatewayOutput::Reply { conn, reply } => {
                if let Some(Slot::Http(tx)) = self.slots.remove(&conn) {
                    let _ = tx.try_send(reply);
                }
            }
            GatewayOutput::Upgrade { conn, result } => match self.slots.remove(&conn) {
                Some(Slot::Upgrading { reply, socket }) => {
                    let ok = result.is_ok();
                    if reply.try_send(result).is_ok() && ok {
                        self.slots.insert(conn, Slot::Socket(socket));
                    } else if ok {
                        // The HTTP task is gone: the socket will never open.
                        self.owed
                            .push(GatewayInput::SocketClosed { conn, code: None });
                    }
                }
                Some(other) => {
                    self.slots.insert(conn, other);
                }
                None => {}
            },
            GatewayOutput::Send { conn, frame } => self.send(conn, Outbound::Frame(frame)),
            GatewayOutput::CloseSocket { conn, code, reason } => {
                self.send(conn, Outbound::Close(code, reason));
                // The machine has forgotten the socket: its task's end needs no report.
                self.slots.remove(&conn);
            }
            GatewayOutput::Finished {
                command_id,
                node,
                outcome,
            } => {
                let label = outcome_label(&outcome);
                tracing::debug!(%command_id, %node, outcome = %label, "command finished");
                self.metrics.command_finished(&label);
                if let Some(at) = self.dispatched.remove(&*command_id) {
                    self.metrics
                        .observe_latency(outcome.finished_at.saturating_duration_since(at));
                }
                for waiter in self.waiters.remove(&*command_id).unwrap_or_default() {
                    let _ = waiter.try_send(outcome.clone());
                }
            }
            GatewayOutput::Event(event) => self.event(event),
        }
    }

    /// Queues `message` on a socket; a full queue aborts the socket (its peer stopped reading).
    fn send(&mut self, conn: ConnId, message: Outbound) {
        let socket = match self.slots.get(&conn) {
            Some(Slot::Socket(socket)) | Some(Slot::Upgrading { socket, .. }) => socket,
            _ => return,
        };
        match socket.outbound.try_send(message) {
            Ok(()) | Err(TrySendError::Closed(_)) => {}
            Err(TrySendError::Full(_)) => {
                let _ = socket.abort.try_send(());
                self.slots.remove(&conn);
                self.metrics.slow_consumers.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(
                    conn = conn.0,
                    "slow reader: outbound queue full, connection closed"
                );
                self.owed
                    .push(GatewayInput::SocketClosed { conn, code: None });
            }
        }
    }

    fn event(&mut self, event: GatewayEvent) {
        match &event {
            GatewayEvent::NodeOnline { node } => {
                self.metrics.nodes_online.fetch_add(1, Ordering::Relaxed);
                tracing::info!(%node, "node online");
            }
            GatewayEvent::NodeOffline { node } => {
                self.metrics.nodes_online.fetch_sub(1, Ordering::Relaxed);
                tracing::info!(%node, "node offline");
            }
            GatewayEvent::PairingRequested { code, node_id } => {
                tracing::info!(%node_id, %code, "pairing requested");
            }
            GatewayEvent::Paired { node_id } => tracing::info!(%node_id, "paired"),
            GatewayEvent::PeerMisbehaved { node, detail } => {
                tracing::warn!(%node, %detail, "peer misbehaved");
            }
            GatewayEvent::Refused { source, detail } => {
                tracing::info!(source = %source.0, %detail, "request refused");
            }
            other => tracing::debug!(event = ?other),
        }
    }
}

/// `ok`, or the error code of a failed command (the `outcome` label of the metrics).
pub(crate) fn outcome_label(outcome: &CommandOutcome) -> String {
    if outcome.result.ok {
        return "ok".to_string();
    }
    outcome
        .result
        .error
        .as_ref()
        .and_then(|e| serde_json::to_value(&e.code).ok())
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_else(|| "error".to_string())
}

#[cfg(test)]
mod tests;
