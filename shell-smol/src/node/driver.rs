//! The driver: the one task that owns the `Node` machine (design.md section 2's run loop).
//!
//! Loop: drain `poll_output()` and act on each output (open or write a link, start an HTTP call,
//! start or cancel an executor, store or delete the token, publish an event); then wait for the
//! first of a message on the driver's channel (link events, HTTP answers, executor reports, host
//! stats, stop) or `poll_timeout()`; feed it with `Instant::now()`; loop. Everything slow runs
//! elsewhere (links on smol tasks, HTTP on the blocking pool, executors on their own threads), so
//! the driver only ever waits here.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_lite::FutureExt;
use nodelink_core::node::executor::ExecutorSet;
use nodelink_core::node::http::HttpResult;
use nodelink_core::node::{
    HostStats, LinkId, Node, NodeEvent, NodeInput, NodeOutput, NodeState, RequestId,
};
use smol::channel::{Receiver, Sender};

use super::exec::{ExecEvent, Running};
use super::http::HttpClient;
use super::state::Credentials;
use super::tls::TrustRoots;
use super::ws::{Link, LinkEvent, WriteOp};
use super::{NodeExit, RuntimeConfig, Status};

/// Everything that wakes the driver.
#[derive(Debug)]
pub enum Wake {
    Link(LinkId, LinkEvent),
    Http(RequestId, HttpResult),
    Exec(String, ExecEvent),
    Stats(HostStats),
    Stop,
}

/// How long the close frames of the last link may take to go out when the node ends.
const CLOSE_GRACE: Duration = Duration::from_secs(1);

pub struct Driver {
    node: Node,
    config: RuntimeConfig,
    executors: Arc<ExecutorSet>,
    roots: TrustRoots,
    http: HttpClient,
    wake_tx: Sender<Wake>,
    wake_rx: Receiver<Wake>,
    /// Inputs produced by the driver itself (a command whose thread could not start), fed
    /// before waiting, one per turn like any other.
    backlog: VecDeque<Wake>,
    link: Option<Link>,
    closing: Vec<smol::Task<()>>,
    running: Running,
    events: Sender<NodeEvent>,
    status: Arc<Mutex<Status>>,
    exit: Option<NodeExit>,
    _tasks: Vec<smol::Task<()>>,
}

impl Driver {
    pub fn new(
        node: Node,
        config: RuntimeConfig,
        executors: Arc<ExecutorSet>,
        roots: TrustRoots,
        wake: (Sender<Wake>, Receiver<Wake>),
        events: Sender<NodeEvent>,
        status: Arc<Mutex<Status>>,
    ) -> Driver {
        let http = HttpClient::new(&roots, config.http_timeout);
        let (wake_tx, wake_rx) = wake;
        Driver {
            node,
            config,
            executors,
            roots,
            http,
            wake_tx,
            wake_rx,
            backlog: VecDeque::new(),
            link: None,
            closing: Vec::new(),
            running: Running::default(),
            events,
            status,
            exit: None,
            _tasks: Vec::new(),
        }
    }

    /// Runs until the node ends (revoked, unpaired, stopped, or paired when asked to stop there).
    pub async fn run(mut self) -> NodeExit {
        self.start_stats();
        loop {
            self.drain();
            if let Some(exit) = self.exit.take() {
                return self.finish(exit).await;
            }
            let wake = match self.backlog.pop_front() {
                Some(wake) => Some(wake),
                None => self.wait().await,
            };
            let now = Instant::now();
            match wake {
                None => self.node.handle_timeout(now),
                Some(wake) => self.handle(now, wake),
            }
        }
    }

    /// The next message, or `None` when the machine's timer is due first.
    async fn wait(&self) -> Option<Wake> {
        let message = async {
            match self.wake_rx.recv().await {
                Ok(wake) => Some(wake),
                // Unreachable while `self.wake_tx` lives; stopping is the safe reading.
                Err(_) => Some(Wake::Stop),
            }
        };
        match self.node.poll_timeout() {
            Some(at) => {
                message
                    .or(async {
                        smol::Timer::at(at).await;
                        None
                    })
                    .await
            }
            None => message.await,
        }
    }

    fn handle(&mut self, now: Instant, wake: Wake) {
        match wake {
            Wake::Link(link, event) => {
                let input = match event {
                    LinkEvent::Opened => NodeInput::WebSocketOpened { link },
                    LinkEvent::Failed { status, detail } => NodeInput::WebSocketFailed {
                        link,
                        status,
                        detail,
                    },
                    LinkEvent::Frame(frame) => NodeInput::Frame { link, frame },
                    LinkEvent::Closed { code, reason } => {
                        if self.link.as_ref().is_some_and(|l| l.id == link) {
                            self.link = None;
                        }
                        NodeInput::WebSocketClosed { link, code, reason }
                    }
                };
                self.node.handle_input(now, input);
            }
            Wake::Http(request, result) => {
                self.node
                    .handle_input(now, NodeInput::HttpResponse { request, result });
            }
            Wake::Stats(stats) => self.node.handle_input(now, NodeInput::HostStats(stats)),
            Wake::Exec(command_id, event) => self.handle_exec(now, &command_id, event),
            Wake::Stop => {
                self.exit = Some(NodeExit::Stopped);
            }
        }
    }

    fn handle_exec(&mut self, now: Instant, command_id: &str, event: ExecEvent) {
        // A report about a command the machine already answered is normal (a race with a
        // cancel or timeout); the machine drops it. Other usage errors are logged: they are bugs.
        let result = match event {
            ExecEvent::Progress(progress) => self.node.report_progress(now, command_id, progress),
            ExecEvent::Text(text) => {
                self.node.stream_text(now, command_id, &text);
                Ok(())
            }
            ExecEvent::Finished(outcome) => {
                self.running.finished(command_id);
                self.node.finish_command(now, command_id, outcome)
            }
        };
        if let Err(error) = result {
            tracing::debug!(command_id, %error, "executor report not taken");
        }
    }

    /// Acts on every output the machine has.
    fn drain(&mut self) {
        while let Some(output) = self.node.poll_output() {
            self.act(output);
        }
        let mut status = self.status.lock().unwrap_or_else(|e| e.into_inner());
        status.state = self.node.state();
        status.node_id = self.node.node_id().to_owned();
        status.commands_running = self.running.len();
    }

    fn act(&mut self, output: NodeOutput) {
        match output {
            NodeOutput::Http { request, url, call } => {
                let http = self.http.clone();
                let wake = self.wake_tx.clone();
                smol::spawn(async move {
                    let result = http.call(url, call).await;
                    let _ = wake.send(Wake::Http(request, result)).await;
                })
                .detach();
            }
            NodeOutput::OpenWebSocket { link, url, bearer } => {
                // The machine opens a new link only after the old one ended; close any leftover.
                self.close_link(1000, "replaced".into());
                self.link = Some(Link::open(
                    link,
                    url,
                    bearer,
                    self.roots.clone(),
                    self.config.connect_timeout,
                    self.wake_tx.clone(),
                ));
            }
            NodeOutput::Send { link, frame } => match &self.link {
                Some(current) if current.id == link => {
                    if !current.write(WriteOp::Frame(frame)) {
                        // The peer stopped reading (or the writer died): the link is dead.
                        self.close_link(1001, "write queue full".into());
                        self.backlog.push_back(Wake::Link(
                            link,
                            LinkEvent::Closed {
                                code: None,
                                reason: "the gateway stopped reading (write queue full)".into(),
                            },
                        ));
                    }
                }
                _ => tracing::debug!(?link, "frame for a link that is gone: dropped"),
            },
            NodeOutput::CloseWebSocket { link, code, reason } => {
                if self.link.as_ref().is_some_and(|l| l.id == link) {
                    self.close_link(code, reason);
                }
            }
            NodeOutput::Execute(request) => {
                let id = request.command_id.clone();
                if let Err(outcome) = self.running.start(&self.executors, request, &self.wake_tx) {
                    self.backlog
                        .push_back(Wake::Exec(id, ExecEvent::Finished(outcome)));
                }
            }
            NodeOutput::Cancel { command_id, .. } => self.running.cancel(&command_id),
            NodeOutput::Event(event) => self.event(event),
        }
    }

    fn event(&mut self, event: NodeEvent) {
        log_event(&event);
        match &event {
            NodeEvent::Paired { token, gateway_url } => {
                if let Some(state) = &self.config.state_dir {
                    let credentials = Credentials {
                        gateway_url: gateway_url.clone(),
                        token: token.clone(),
                    };
                    if let Err(error) = state.save(&credentials) {
                        self.exit = Some(NodeExit::Failed(format!(
                            "paired, but the token could not be stored: {error}"
                        )));
                    }
                }
                if self.config.exit_when_paired && self.exit.is_none() {
                    self.exit = Some(NodeExit::Paired {
                        node_id: token.node_id().to_owned(),
                        gateway_url: gateway_url.clone(),
                    });
                }
            }
            NodeEvent::TokenRevoked { reason } => {
                let mut message = String::new();
                if let Some(state) = &self.config.state_dir {
                    if let Err(error) = state.remove() {
                        message = format!(" (the token file could not be deleted: {error})");
                    }
                }
                self.exit = Some(NodeExit::Revoked {
                    reason: format!("{reason}{message}"),
                });
            }
            NodeEvent::PairingRejected { reason } => {
                self.exit = Some(NodeExit::PairingRejected {
                    reason: reason.clone(),
                });
            }
            NodeEvent::PairingExpired => self.exit = Some(NodeExit::PairingExpired),
            NodeEvent::StateChanged(NodeState::Unpaired) if self.exit.is_none() => {
                self.exit = Some(NodeExit::Failed("the node cannot pair".into()));
            }
            _ => {}
        }
        if self.events.try_send(event).is_err() && !self.events.is_closed() {
            tracing::warn!("node events are not being read: one dropped");
        }
    }

    fn close_link(&mut self, code: u16, reason: String) {
        if let Some(link) = self.link.take() {
            if let Some(writer) = link.close(code, reason) {
                self.closing.push(writer);
            }
        }
    }

    /// Ends the node: stops executors, closes the link, lets close frames go out (bounded).
    async fn finish(mut self, exit: NodeExit) -> NodeExit {
        self.running.cancel_all();
        let reason = match &exit {
            NodeExit::Stopped => "node stopping",
            _ => "node ending",
        };
        self.close_link(1000, reason.into());
        let closing = std::mem::take(&mut self.closing);
        let all = async {
            for writer in closing {
                writer.await;
            }
        };
        all.or(async {
            smol::Timer::after(CLOSE_GRACE).await;
        })
        .await;
        {
            let mut status = self.status.lock().unwrap_or_else(|e| e.into_inner());
            status.state = self.node.state();
            status.exit = Some(exit.clone());
        }
        exit
    }

    /// Samples host stats now and every heartbeat interval, off the driver.
    fn start_stats(&mut self) {
        let Some(sampler) = self.config.host_stats.clone() else {
            return;
        };
        let interval = self.config.stats_interval;
        let wake = self.wake_tx.clone();
        self._tasks.push(smol::spawn(async move {
            loop {
                let sampler = sampler.clone();
                let stats = smol::unblock(move || sampler()).await;
                if wake.send(Wake::Stats(stats)).await.is_err() {
                    return;
                }
                smol::Timer::after(interval).await;
            }
        }));
    }
}

/// One line per event in the log (tracing); tokens are never printed (their `Debug` redacts).
fn log_event(event: &NodeEvent) {
    match event {
        NodeEvent::PeerMisbehaved(what) => {
            tracing::warn!(%what, "the gateway sent something unusable")
        }
        NodeEvent::RequestFailed(what) => tracing::info!(%what, "request failed, will retry"),
        NodeEvent::Disconnected { reason, retry_in } => {
            tracing::info!(%reason, ?retry_in, "disconnected")
        }
        NodeEvent::TokenRevoked { reason } => tracing::warn!(%reason, "token revoked"),
        other => tracing::debug!(event = ?other, "node event"),
    }
}
