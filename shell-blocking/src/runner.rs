//! The event loop: one `mio::Poll` around the node machine.
//!
//! Each turn: settle (drain the machine's outputs, performing each; feed the next queued input;
//! repeat until both are empty), then `poll` until the earliest deadline (the machine's
//! `poll_timeout()`, a handshake or close deadline, the next stats sample), then queue what
//! happened (socket readiness, helper threads' messages, due timers) and settle again. Inputs are
//! queued rather than fed where they arise, so the machine never gets two inputs without its
//! outputs drained in between.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::{Events, Interest, Poll, Token, Waker};
use nodelink_core::node::commands::{Outcome, Progress};
use nodelink_core::node::{LinkId, Node, NodeEvent, NodeInput, NodeOutput, NodeState, WsFrame};
use nodelink_core::wire::rest::NodeToken;
use tungstenite::handshake::client::Request;
use tungstenite::protocol::WebSocketConfig;

use crate::dial::{connect, request_for};
use crate::exec::Executors;
use crate::http::HttpClient;
use crate::notify::{Msg, Notifier};
use crate::ws::{Conn, Stream, WsEvent};
use crate::{Error, Exit, Flow, NodeOptions, StateDir, StatsSampler, Stopper, StoredToken};

const WAKER: Token = Token(usize::MAX);

/// What waits to be fed to the machine.
enum Input {
    Node(NodeInput),
    Finished {
        command_id: String,
        outcome: Outcome,
    },
    Progress {
        command_id: String,
        progress: Progress,
    },
    Text {
        command_id: String,
        text: String,
    },
}

/// A WebSocket whose TCP connection a helper thread is making.
struct Connecting {
    request: Request,
    #[cfg_attr(not(feature = "tls"), allow(dead_code))]
    host: String,
    tls: bool,
    deadline: Instant,
}

/// A node and its event loop; [`Runner::run`] blocks the calling thread until the node ends.
pub struct Runner {
    node: Node,
    poll: Poll,
    waker: Arc<Waker>,
    stop: Arc<AtomicBool>,
    rx: Receiver<Msg>,
    notify: Notifier,
    http: HttpClient,
    #[cfg(feature = "tls")]
    tls: crate::tls::Tls,
    executors: Executors,
    state_dir: Option<StateDir>,
    gateway_url: String,
    stats: Option<StatsSampler>,
    stats_interval: Duration,
    stats_at: Option<Instant>,
    ws_config: WebSocketConfig,
    connect_timeout: Duration,
    close_timeout: Duration,
    connecting: HashMap<LinkId, Connecting>,
    conns: HashMap<LinkId, Conn>,
    inbox: VecDeque<Input>,
    exit: Option<Result<Exit, Error>>,
    /// The last failure reported before pairing ended (for [`Exit::Unpaired`]).
    last_failure: Option<String>,
}

impl Runner {
    /// Builds the machine and the loop; fails on a configuration that cannot work.
    pub fn new(options: NodeOptions) -> Result<Runner, Error> {
        let NodeOptions {
            mut config,
            executors,
            state_dir,
            ca_file,
            connect_timeout,
            http_timeout,
            max_http_body,
            max_message_size,
            close_timeout,
            stats,
            stats_interval,
        } = options;
        config.commands = executors.specs();
        let gateway_url = config.gateway_url.clone();
        #[cfg(feature = "tls")]
        let tls = crate::tls::Tls::new(ca_file.as_deref())?;
        #[cfg(not(feature = "tls"))]
        if ca_file.is_some() {
            return Err(Error::Tls("built without the `tls` feature".into()));
        }
        let node = Node::new(config, Instant::now(), crate::seed::os_seed())
            .map_err(|e| Error::Config(e.to_string()))?;
        let poll = Poll::new()?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
        let (tx, rx) = mpsc::channel();
        let notify = Notifier::new(tx, waker.clone());
        let http = HttpClient::new(
            http_timeout,
            max_http_body,
            #[cfg(feature = "tls")]
            &tls,
        );
        // Design section 6: a small read buffer and no write batching keep an idle node small;
        // the write buffer is bounded and `WriteBufferFull` is the backpressure signal.
        let ws_config = WebSocketConfig::default()
            .read_buffer_size(4096)
            .write_buffer_size(0)
            .max_write_buffer_size(max_message_size.saturating_mul(2))
            .max_message_size(Some(max_message_size))
            .max_frame_size(Some(max_message_size));
        Ok(Runner {
            node,
            poll,
            waker,
            stop: Arc::new(AtomicBool::new(false)),
            rx,
            notify,
            http,
            #[cfg(feature = "tls")]
            tls,
            executors: Executors::new(executors),
            state_dir,
            gateway_url,
            stats,
            stats_interval,
            stats_at: None,
            ws_config,
            connect_timeout,
            close_timeout,
            connecting: HashMap::new(),
            conns: HashMap::new(),
            inbox: VecDeque::new(),
            exit: None,
            last_failure: None,
        })
    }

    pub fn stopper(&self) -> Stopper {
        Stopper {
            stop: self.stop.clone(),
            waker: self.waker.clone(),
        }
    }

    /// The machine's node id (generated when unpaired and none was given).
    pub fn node_id(&self) -> &str {
        self.node.node_id()
    }

    /// Runs until the node ends (revoked, unpaired) or is stopped. `on_event` sees every event
    /// of the machine, on the loop's thread.
    pub fn run(mut self, mut on_event: impl FnMut(&NodeEvent) -> Flow) -> Result<Exit, Error> {
        let mut events = Events::with_capacity(64);
        self.sample_stats(Instant::now());
        loop {
            self.settle(&mut on_event);
            if self.exit.is_none() && self.stop.load(Ordering::SeqCst) {
                self.exit = Some(Ok(Exit::Stopped));
            }
            if let Some(exit) = self.exit.take() {
                self.shutdown();
                return exit;
            }
            let timeout = self
                .next_deadline()
                .map(|at| at.saturating_duration_since(Instant::now()));
            if let Err(e) = self.poll.poll(&mut events, timeout) {
                if e.kind() == std::io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e.into());
            }
            for event in events.iter() {
                if event.token() != WAKER {
                    self.on_socket(LinkId(event.token().0 as u64));
                }
            }
            while let Ok(msg) = self.rx.try_recv() {
                self.on_msg(msg);
            }
            self.on_timers(Instant::now());
        }
    }

    // ---- feeding the machine ----------------------------------------------------------------

    fn settle(&mut self, on_event: &mut impl FnMut(&NodeEvent) -> Flow) {
        loop {
            self.drain(on_event);
            let Some(input) = self.inbox.pop_front() else {
                return;
            };
            let now = Instant::now();
            match input {
                Input::Node(input) => self.node.handle_input(now, input),
                // An error here is a result for a command that already ended: normal, dropped.
                Input::Finished {
                    command_id,
                    outcome,
                } => {
                    self.executors.finished(&command_id);
                    let _ = self.node.finish_command(now, &command_id, outcome);
                }
                Input::Progress {
                    command_id,
                    progress,
                } => {
                    let _ = self.node.report_progress(now, &command_id, progress);
                }
                Input::Text { command_id, text } => self.node.stream_text(now, &command_id, &text),
            }
        }
    }

    /// Performs every output the machine has.
    fn drain(&mut self, on_event: &mut impl FnMut(&NodeEvent) -> Flow) {
        while let Some(output) = self.node.poll_output() {
            match output {
                NodeOutput::Http { request, url, call } => {
                    self.http.start(request, url, call, self.notify.clone())
                }
                NodeOutput::OpenWebSocket { link, url, bearer } => self.open(link, &url, bearer),
                NodeOutput::Send { link, frame } => self.send(link, frame),
                NodeOutput::CloseWebSocket { link, code, reason } => {
                    self.connecting.remove(&link);
                    if let Some(conn) = self.conns.get_mut(&link) {
                        conn.close(code, reason, Instant::now() + self.close_timeout);
                        if conn.is_done() {
                            self.conns.remove(&link);
                        }
                    }
                }
                NodeOutput::Execute(request) => self.executors.start(request, &self.notify),
                NodeOutput::Cancel { command_id, .. } => self.executors.cancel(&command_id),
                NodeOutput::Event(event) => {
                    self.on_node_event(&event);
                    if on_event(&event) == Flow::Stop && self.exit.is_none() {
                        self.exit = Some(Ok(Exit::Stopped));
                    }
                }
            }
        }
    }

    /// The host's part of an event: the token file, and when the node is over.
    fn on_node_event(&mut self, event: &NodeEvent) {
        match event {
            NodeEvent::Paired { token, .. } => {
                // The gateway's own URL is where this node connects: the machine keeps using
                // the configured one, which is what reached the gateway.
                let stored = StoredToken {
                    gateway_url: self.gateway_url.clone(),
                    token: token.clone(),
                };
                if let Some(state) = &self.state_dir {
                    if let Err(e) = state.save(&stored) {
                        self.exit = Some(Err(e));
                    }
                }
            }
            NodeEvent::TokenRevoked { reason } => {
                let removed = match &self.state_dir {
                    Some(state) => state.remove(),
                    None => Ok(()),
                };
                self.exit = Some(removed.map(|()| Exit::Revoked {
                    reason: reason.clone(),
                }));
            }
            NodeEvent::PairingRejected { reason } => {
                self.last_failure = Some(match reason {
                    Some(reason) => format!("pairing rejected: {reason}"),
                    None => "pairing rejected".into(),
                })
            }
            NodeEvent::PairingExpired => {
                self.last_failure = Some("the pairing request expired before approval".into())
            }
            NodeEvent::RequestFailed(detail) => self.last_failure = Some(detail.clone()),
            NodeEvent::StateChanged(NodeState::Unpaired) if self.exit.is_none() => {
                let reason = self
                    .last_failure
                    .clone()
                    .unwrap_or_else(|| "pairing ended without a token".into());
                self.exit = Some(Ok(Exit::Unpaired { reason }));
            }
            _ => {}
        }
    }

    // ---- WebSockets -------------------------------------------------------------------------

    fn open(&mut self, link: LinkId, url: &str, bearer: Option<NodeToken>) {
        let target = request_for(url, bearer.as_ref());
        let (request, host, port, tls) = match target {
            Ok(target) => target,
            Err(detail) => return self.failed(link, None, detail),
        };
        let deadline = Instant::now() + self.connect_timeout;
        let timeout = self.connect_timeout;
        let notify = self.notify.clone();
        let resolve = host.clone();
        let spawned = std::thread::Builder::new()
            .name("nodelink-connect".into())
            .spawn(move || {
                let result = connect(&resolve, port, timeout);
                notify.send(Msg::Connected { link, result });
            });
        match spawned {
            Ok(_) => {
                self.connecting.insert(
                    link,
                    Connecting {
                        request,
                        host,
                        tls,
                        deadline,
                    },
                );
            }
            Err(e) => self.failed(link, None, format!("cannot start a connect thread: {e}")),
        }
    }

    fn connected(&mut self, link: LinkId, result: Result<std::net::TcpStream, String>) {
        let Some(pending) = self.connecting.remove(&link) else {
            return; // given up (closed or timed out) meanwhile
        };
        let tcp = match result {
            Ok(tcp) => tcp,
            Err(detail) => return self.failed(link, None, detail),
        };
        let _ = tcp.set_nodelay(true);
        if let Err(e) = tcp.set_nonblocking(true) {
            return self.failed(link, None, format!("socket: {e}"));
        }
        let mut tcp = mio::net::TcpStream::from_std(tcp);
        let token = Token(link.0 as usize);
        let interest = Interest::READABLE | Interest::WRITABLE;
        if let Err(e) = self.poll.registry().register(&mut tcp, token, interest) {
            return self.failed(link, None, format!("poll registration: {e}"));
        }
        let stream = match self.stream(tcp, &pending) {
            Ok(stream) => stream,
            Err(detail) => return self.failed(link, None, detail),
        };
        let mut events = Vec::new();
        let conn = Conn::start(
            pending.request,
            stream,
            self.ws_config,
            pending.deadline,
            &mut events,
        );
        self.conns.insert(link, conn);
        self.ws_events(link, events);
    }

    #[cfg(feature = "tls")]
    fn stream(&self, tcp: mio::net::TcpStream, pending: &Connecting) -> Result<Stream, String> {
        if !pending.tls {
            return Ok(Stream::Plain(tcp));
        }
        let host = pending.host.trim_start_matches('[').trim_end_matches(']');
        let session = self.tls.connect(host)?;
        Ok(Stream::Tls(Box::new(rustls::StreamOwned::new(
            session, tcp,
        ))))
    }

    #[cfg(not(feature = "tls"))]
    fn stream(&self, tcp: mio::net::TcpStream, pending: &Connecting) -> Result<Stream, String> {
        if pending.tls {
            return Err("wss:// needs the `tls` feature, which this build lacks".into());
        }
        Ok(Stream::Plain(tcp))
    }

    fn send(&mut self, link: LinkId, frame: WsFrame) {
        let mut events = Vec::new();
        if let Some(conn) = self.conns.get_mut(&link) {
            conn.send(frame, &mut events);
        }
        self.ws_events(link, events);
    }

    fn on_socket(&mut self, link: LinkId) {
        let mut events = Vec::new();
        if let Some(conn) = self.conns.get_mut(&link) {
            conn.on_ready(&mut events);
        }
        self.ws_events(link, events);
    }

    /// Queues what a connection reported, and forgets it once its socket is gone.
    fn ws_events(&mut self, link: LinkId, events: Vec<WsEvent>) {
        for event in events {
            let input = match event {
                WsEvent::Opened => NodeInput::WebSocketOpened { link },
                WsEvent::Failed { status, detail } => NodeInput::WebSocketFailed {
                    link,
                    status,
                    detail,
                },
                WsEvent::Frame(frame) => NodeInput::Frame { link, frame },
                WsEvent::Closed { code, reason } => {
                    NodeInput::WebSocketClosed { link, code, reason }
                }
            };
            self.inbox.push_back(Input::Node(input));
        }
        if self.conns.get(&link).is_some_and(Conn::is_done) {
            self.conns.remove(&link);
        }
    }

    fn failed(&mut self, link: LinkId, status: Option<u16>, detail: String) {
        self.inbox
            .push_back(Input::Node(NodeInput::WebSocketFailed {
                link,
                status,
                detail,
            }));
    }

    // ---- helper threads and timers ----------------------------------------------------------

    fn on_msg(&mut self, msg: Msg) {
        match msg {
            Msg::Connected { link, result } => self.connected(link, result),
            Msg::Http { request, result } => self
                .inbox
                .push_back(Input::Node(NodeInput::HttpResponse { request, result })),
            Msg::Progress {
                command_id,
                progress,
            } => self.inbox.push_back(Input::Progress {
                command_id,
                progress,
            }),
            Msg::Text { command_id, text } => {
                self.inbox.push_back(Input::Text { command_id, text })
            }
            Msg::Finished {
                command_id,
                outcome,
            } => self.inbox.push_back(Input::Finished {
                command_id,
                outcome,
            }),
        }
    }

    fn on_timers(&mut self, now: Instant) {
        let expired: Vec<LinkId> = self
            .connecting
            .iter()
            .filter(|(_, c)| c.deadline <= now)
            .map(|(link, _)| *link)
            .collect();
        for link in expired {
            self.connecting.remove(&link);
            self.failed(link, None, "connecting timed out".into());
        }
        let expired: Vec<LinkId> = self
            .conns
            .iter()
            .filter(|(_, c)| (c.is_handshaking() || c.is_closing()) && c.deadline <= now)
            .map(|(link, _)| *link)
            .collect();
        for link in expired {
            let mut events = Vec::new();
            if let Some(conn) = self.conns.get_mut(&link) {
                conn.expire(&mut events);
            }
            self.ws_events(link, events);
        }
        if self.stats_at.is_some_and(|at| at <= now) {
            self.sample_stats(now);
        }
        if self.node.poll_timeout().is_some_and(|at| at <= now) {
            self.node.handle_timeout(now);
        }
    }

    fn sample_stats(&mut self, now: Instant) {
        if let Some(sample) = &mut self.stats {
            let stats = sample();
            self.inbox
                .push_back(Input::Node(NodeInput::HostStats(stats)));
            self.stats_at = Some(now + self.stats_interval);
        }
    }

    fn next_deadline(&self) -> Option<Instant> {
        let sockets = self
            .conns
            .values()
            .filter_map(|c| (c.is_handshaking() || c.is_closing()).then_some(c.deadline));
        let connects = self.connecting.values().map(|c| c.deadline);
        [self.node.poll_timeout(), self.stats_at]
            .into_iter()
            .flatten()
            .chain(sockets)
            .chain(connects)
            .min()
    }

    /// The node is ending: cancel running commands, close the link, give close frames a moment.
    fn shutdown(&mut self) {
        self.executors.cancel_all();
        let deadline = Instant::now() + self.close_timeout;
        for conn in self.conns.values_mut() {
            if !conn.is_closing() {
                conn.close(1000, "node stopping".into(), deadline);
            }
        }
        self.conns.retain(|_, c| !c.is_done());
        let mut events = Events::with_capacity(16);
        while !self.conns.is_empty() {
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            if self.poll.poll(&mut events, Some(deadline - now)).is_err() {
                break;
            }
            let mut ignored = Vec::new();
            for conn in self.conns.values_mut() {
                conn.on_ready(&mut ignored);
            }
            self.conns.retain(|_, c| !c.is_done());
        }
    }
}
