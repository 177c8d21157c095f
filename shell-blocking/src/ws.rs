//! One WebSocket over a non-blocking `mio` socket: the TLS and HTTP-upgrade handshakes resumed on
//! readiness, frames read until `WouldBlock`, writes buffered by tungstenite and flushed when the
//! socket is writable again.
//!
//! mio readiness is edge-triggered: after every event the connection reads until `WouldBlock` and
//! tries to flush, otherwise a byte already in the kernel buffer would never be noticed.

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::time::Instant;

use mio::net::TcpStream;
use nodelink_core::node::WsFrame;
use tungstenite::handshake::client::ClientHandshake;
use tungstenite::handshake::client::Request;
use tungstenite::handshake::MidHandshake;
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::protocol::{CloseFrame, WebSocketConfig};
use tungstenite::{Error, HandshakeError, Message, WebSocket};

/// How much of a refused upgrade's body is quoted in the failure detail.
const MAX_DETAIL: usize = 200;

/// The byte stream under tungstenite: plain TCP, or TLS over it.
pub(crate) enum Stream {
    Plain(TcpStream),
    #[cfg(feature = "tls")]
    Tls(Box<rustls::StreamOwned<rustls::ClientConnection, TcpStream>>),
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(tcp) => tcp.read(buf),
            #[cfg(feature = "tls")]
            Stream::Tls(tls) => tls.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(tcp) => tcp.write(buf),
            #[cfg(feature = "tls")]
            Stream::Tls(tls) => tls.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Stream::Plain(tcp) => tcp.flush(),
            #[cfg(feature = "tls")]
            Stream::Tls(tls) => tls.flush(),
        }
    }
}

/// What a connection reports to the loop (which turns it into a `NodeInput`).
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum WsEvent {
    Opened,
    Failed { status: Option<u16>, detail: String },
    Frame(WsFrame),
    Closed { code: Option<u16>, reason: String },
}

enum Phase {
    Handshaking(MidHandshake<ClientHandshake<Stream>>),
    Open(WebSocket<Stream>),
    /// The socket is gone (or about to be dropped).
    Done,
}

/// One WebSocket connection.
pub(crate) struct Conn {
    phase: Phase,
    /// Frames tungstenite refused with `WriteBufferFull`, in order, sent as its buffer drains.
    backlog: VecDeque<Message>,
    /// The node asked to close: report nothing more, drop once the close frame is out.
    closing: bool,
    /// Until when the handshake (or our close) may take.
    pub(crate) deadline: Instant,
}

impl Conn {
    /// Starts the upgrade on a connected socket; `events` receives `Opened` or `Failed` when the
    /// handshake ends at once.
    pub(crate) fn start(
        request: Request,
        stream: Stream,
        config: WebSocketConfig,
        deadline: Instant,
        events: &mut Vec<WsEvent>,
    ) -> Conn {
        let mut conn = Conn {
            phase: Phase::Done,
            backlog: VecDeque::new(),
            closing: false,
            deadline,
        };
        let result = tungstenite::client::client_with_config(request, stream, Some(config));
        conn.after_handshake(result, events);
        conn
    }

    pub(crate) fn is_done(&self) -> bool {
        matches!(self.phase, Phase::Done)
    }

    pub(crate) fn is_handshaking(&self) -> bool {
        matches!(self.phase, Phase::Handshaking(_))
    }

    pub(crate) fn is_closing(&self) -> bool {
        self.closing
    }

    /// The socket is readable or writable (or may be): move the handshake on, read every frame
    /// that arrived, flush what waits.
    pub(crate) fn on_ready(&mut self, events: &mut Vec<WsEvent>) {
        match std::mem::replace(&mut self.phase, Phase::Done) {
            Phase::Handshaking(mid) => {
                let result = mid.handshake();
                self.after_handshake(result, events);
                if matches!(self.phase, Phase::Open(_)) {
                    // Frames may have arrived with the upgrade's answer.
                    self.on_ready(events);
                }
            }
            Phase::Open(ws) => {
                self.phase = Phase::Open(ws);
                self.read_all(events);
                self.flush(events);
            }
            Phase::Done => {}
        }
    }

    /// Queues one frame and tries to write it out.
    pub(crate) fn send(&mut self, frame: WsFrame, events: &mut Vec<WsEvent>) {
        let message = match frame {
            WsFrame::Text(text) => Message::text(text),
            WsFrame::Binary(bytes) => Message::binary(bytes),
            WsFrame::Ping(bytes) => Message::Ping(bytes.into()),
            WsFrame::Pong(bytes) => Message::Pong(bytes.into()),
        };
        if self.closing || !matches!(self.phase, Phase::Open(_)) {
            return;
        }
        self.backlog.push_back(message);
        self.flush(events);
    }

    /// Sends a close frame; the connection is dropped once it is out (or at `deadline`).
    pub(crate) fn close(&mut self, code: u16, reason: String, deadline: Instant) {
        self.closing = true;
        self.deadline = deadline;
        self.backlog.clear();
        match &mut self.phase {
            Phase::Open(ws) => {
                let frame = CloseFrame {
                    code: CloseCode::from(code),
                    reason: reason.into(),
                };
                if ws.close(Some(frame)).is_err() {
                    self.phase = Phase::Done;
                }
            }
            _ => self.phase = Phase::Done,
        }
        let mut ignored = Vec::new();
        self.flush(&mut ignored);
    }

    /// The deadline passed: a handshake fails, a close ends.
    pub(crate) fn expire(&mut self, events: &mut Vec<WsEvent>) {
        if self.is_handshaking() && !self.closing {
            events.push(WsEvent::Failed {
                status: None,
                detail: "the WebSocket upgrade timed out".into(),
            });
        }
        self.phase = Phase::Done;
    }

    fn after_handshake(
        &mut self,
        result: Result<
            (WebSocket<Stream>, tungstenite::handshake::client::Response),
            HandshakeError<ClientHandshake<Stream>>,
        >,
        events: &mut Vec<WsEvent>,
    ) {
        match result {
            Ok((ws, _response)) => {
                self.phase = Phase::Open(ws);
                events.push(WsEvent::Opened);
            }
            Err(HandshakeError::Interrupted(mid)) => self.phase = Phase::Handshaking(mid),
            Err(HandshakeError::Failure(error)) => {
                self.phase = Phase::Done;
                let (status, detail) = match error {
                    Error::Http(response) => {
                        let status = response.status().as_u16();
                        let body = response
                            .body()
                            .as_deref()
                            .map(|b| String::from_utf8_lossy(&b[..b.len().min(MAX_DETAIL)]))
                            .unwrap_or_default()
                            .into_owned();
                        (
                            Some(status),
                            format!("upgrade refused with {status}: {body}"),
                        )
                    }
                    other => (None, format!("WebSocket upgrade failed: {other}")),
                };
                events.push(WsEvent::Failed { status, detail });
            }
        }
    }

    fn read_all(&mut self, events: &mut Vec<WsEvent>) {
        loop {
            let Phase::Open(ws) = &mut self.phase else {
                return;
            };
            let frame = match ws.read() {
                Ok(Message::Text(text)) => WsFrame::Text(text.as_str().to_owned()),
                Ok(Message::Binary(bytes)) => WsFrame::Binary(bytes.to_vec()),
                Ok(Message::Ping(bytes)) => WsFrame::Ping(bytes.to_vec()),
                Ok(Message::Pong(bytes)) => WsFrame::Pong(bytes.to_vec()),
                Ok(Message::Frame(_)) => continue,
                Ok(Message::Close(frame)) => {
                    // tungstenite queued the echo; flush it, then the socket is done.
                    let _ = ws.flush();
                    self.phase = Phase::Done;
                    if !self.closing {
                        let (code, reason) = match frame {
                            Some(frame) => (Some(u16::from(frame.code)), frame.reason.to_string()),
                            None => (None, String::new()),
                        };
                        events.push(WsEvent::Closed { code, reason });
                    }
                    return;
                }
                Err(Error::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(error) => {
                    self.fail(error, events);
                    return;
                }
            };
            if !self.closing {
                events.push(WsEvent::Frame(frame));
            }
        }
    }

    /// Hands the backlog to tungstenite and writes as much as the socket takes.
    fn flush(&mut self, events: &mut Vec<WsEvent>) {
        let Phase::Open(ws) = &mut self.phase else {
            return;
        };
        while let Some(message) = self.backlog.pop_front() {
            match ws.write(message) {
                Ok(()) => {}
                Err(Error::WriteBufferFull(message)) => {
                    // Backpressure: keep it (first in line) until the buffer drains.
                    self.backlog.push_front(*message);
                    break;
                }
                Err(Error::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(error) => return self.fail(error, events),
            }
        }
        match ws.flush() {
            Ok(()) => {
                if self.closing && self.backlog.is_empty() {
                    // Our close frame is out; the server will end the TCP connection.
                    self.phase = Phase::Done;
                }
            }
            Err(Error::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(error) => self.fail(error, events),
        }
    }

    fn fail(&mut self, error: Error, events: &mut Vec<WsEvent>) {
        self.phase = Phase::Done;
        if self.closing {
            return;
        }
        let reason = match error {
            Error::ConnectionClosed | Error::AlreadyClosed => "the connection closed".to_owned(),
            other => other.to_string(),
        };
        events.push(WsEvent::Closed { code: None, reason });
    }
}
