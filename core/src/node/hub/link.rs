//! The connection's lifecycle: negotiate, WebSocket, handshake, timers, close and the end.

use std::collections::{BTreeMap, VecDeque};
use std::time::Instant;

use super::{
    close_reason, split_origin, HubConfig, HubConfigError, HubEvent, HubLink, HubOutput, HubState,
    HubTimer, HubUsageError, LinkEnd, WsFrame, CLOSE_NORMAL,
};
use crate::node::http::{HttpCall, HttpResult, Method};
use crate::time::{saturating_add, TimerTable};
use crate::wire::rest::NodeToken;
use crate::wire::signalr::framing::RecordDecoder;
use crate::wire::signalr::handshake::HandshakeRequest;
use crate::wire::signalr::negotiate::{negotiate_url, websocket_url, NegotiateResponse};
use crate::wire::signalr::HubMessage;

/// The hub protocol version the handshake asks for: 1, no stateful reconnect.
const HUB_PROTOCOL_VERSION: u32 = 1;

/// How much of an HTTP body a `LinkEnd` detail quotes.
const MAX_DETAIL_LEN: usize = 200;

impl HubLink {
    /// An idle link. Fails when the configuration cannot work.
    pub fn new(config: HubConfig) -> Result<HubLink, HubConfigError> {
        config.validate()?;
        Ok(HubLink {
            hub_url: config.hub_url.clone(),
            bearer: config.token.clone(),
            redirected: false,
            state: HubState::Idle,
            timers: TimerTable::new(),
            decoder: RecordDecoder::new(config.max_record_len),
            last_invocation_id: 0,
            hello_id: None,
            out: VecDeque::new(),
            control: VecDeque::new(),
            deferred: VecDeque::new(),
            early_calls: Vec::new(),
            bulk: super::fair::FairQueue::default(),
            in_flight: BTreeMap::new(),
            protocol_version: None,
            negotiated: false,
            config,
        })
    }

    // ---- getters ----------------------------------------------------------------------------

    /// Where the link stands.
    pub fn state(&self) -> HubState {
        self.state
    }

    /// Whether calls flow (handshake accepted and `Hello` answered).
    pub fn is_ready(&self) -> bool {
        self.state == HubState::Ready
    }

    /// The protocol version of the current connection, once `Ready`.
    pub fn protocol_version(&self) -> Option<&str> {
        self.protocol_version.as_deref()
    }

    /// Whether the gateway answered `Hello` with a version (false for a legacy gateway).
    pub fn is_negotiated(&self) -> bool {
        self.negotiated
    }

    /// `scheme://host[:port]` of the hub URL: the base the negotiate path is relative to.
    pub fn origin(&self) -> &str {
        split_origin(&self.config.hub_url)
            .map(|(origin, _)| origin)
            .unwrap_or_default()
    }

    /// The configuration.
    pub fn config(&self) -> &HubConfig {
        &self.config
    }

    /// Result parts sent and awaiting their Completion.
    pub fn results_in_flight(&self) -> usize {
        self.in_flight.len()
    }

    /// Result parts not sent yet.
    pub fn results_queued(&self) -> usize {
        self.bulk.len()
    }

    // ---- inputs ------------------------------------------------------------------------------

    /// Starts a connection attempt: the negotiate request goes out.
    pub fn connect(&mut self, _now: Instant) -> Result<(), HubUsageError> {
        if self.state != HubState::Idle {
            return Err(HubUsageError::AlreadyConnected);
        }
        self.hub_url = self.config.hub_url.clone();
        self.bearer = self.config.token.clone();
        self.redirected = false;
        self.last_invocation_id = 0;
        self.hello_id = None;
        self.protocol_version = None;
        self.negotiated = false;
        self.decoder = RecordDecoder::new(self.config.max_record_len);
        self.negotiate();
        Ok(())
    }

    fn negotiate(&mut self) {
        self.state = HubState::Negotiating;
        let url = negotiate_url(&self.hub_url, 1, false);
        // `hub_url` is validated (or a same-origin redirect), so its negotiate URL splits.
        let path = split_origin(&url).map_or_else(|| "/".to_owned(), |(_, path)| path);
        self.out.push_back(HubOutput::Http(HttpCall {
            method: Method::Post,
            path,
            bearer: Some(self.bearer.clone()),
            body: None,
        }));
    }

    /// The shell's answer to the negotiate request. Ignored unless one is awaited.
    pub fn handle_http_response(&mut self, now: Instant, result: HttpResult) {
        if self.state != HubState::Negotiating {
            return;
        }
        let response = match result {
            Ok(response) => response,
            Err(error) => {
                return self.end(
                    now,
                    LinkEnd::NegotiateFailed {
                        status: None,
                        detail: error.0,
                    },
                    None,
                )
            }
        };
        let status = response.status;
        let decoded = NegotiateResponse::decode(&response.body);
        if status == 401 || status == 403 {
            let detail = match decoded {
                Ok(NegotiateResponse::Error(error)) => error,
                _ => body_detail(&response.body),
            };
            return self.end(now, LinkEnd::Unauthorized { status, detail }, None);
        }
        let failed = |detail: String| LinkEnd::NegotiateFailed {
            status: Some(status),
            detail,
        };
        if !(200..300).contains(&status) {
            let detail = match decoded {
                Ok(NegotiateResponse::Error(error)) => error,
                _ => body_detail(&response.body),
            };
            return self.end(now, failed(detail), None);
        }
        match decoded {
            Err(error) => self.end(now, failed(error.to_string()), None),
            Ok(NegotiateResponse::Error(error)) => self.end(now, failed(error), None),
            Ok(NegotiateResponse::Redirect { url, access_token }) => {
                match self.redirect(&url, access_token.as_deref()) {
                    Ok(()) => self.negotiate(),
                    Err(detail) => self.end(now, failed(detail), None),
                }
            }
            Ok(NegotiateResponse::Connection(connection)) => {
                let format = self.config.protocol.transfer_format();
                if !connection.offers_websockets(format) {
                    let detail =
                        format!("the gateway offers no WebSockets transport with {format} frames");
                    return self.end(now, failed(detail), None);
                }
                self.state = HubState::OpeningSocket;
                self.out.push_back(HubOutput::OpenWebSocket {
                    url: websocket_url(&self.hub_url, Some(connection.websocket_id())),
                    bearer: self.bearer.clone(),
                });
            }
        }
    }

    /// Follows a negotiate redirect: once, to the same origin (the negotiate path is relative to
    /// [`HubLink::origin`]), with its access token when it is a node token.
    fn redirect(&mut self, url: &str, access_token: Option<&str>) -> Result<(), String> {
        if self.redirected {
            return Err(format!("a second redirect (to {url}) is not followed"));
        }
        let same_origin =
            split_origin(url).is_some_and(|(origin, _)| origin.eq_ignore_ascii_case(self.origin()));
        if !same_origin {
            return Err(format!(
                "redirect to {url} is not followed: only a redirect to the hub's origin is"
            ));
        }
        if let Some(token) = access_token {
            self.bearer = NodeToken::parse(token).map_err(|e| {
                format!("redirect to {url} is not followed: its access token is unusable ({e})")
            })?;
        }
        self.redirected = true;
        self.hub_url = url.to_owned();
        Ok(())
    }

    /// The WebSocket is open: the handshake request goes out and its timer starts.
    pub fn handle_ws_opened(&mut self, now: Instant) {
        match self.state {
            HubState::OpeningSocket => {}
            // A socket nobody waits for (a stale open): close it.
            HubState::Idle | HubState::Negotiating => {
                self.out.push_back(HubOutput::Close {
                    code: CLOSE_NORMAL,
                    reason: "unexpected socket".to_owned(),
                });
                return;
            }
            _ => return,
        }
        self.state = HubState::Handshaking;
        let mut record = Vec::new();
        HandshakeRequest::new(self.config.protocol, HUB_PROTOCOL_VERSION).encode(&mut record);
        let text = String::from_utf8(record).expect("the handshake request is JSON, hence UTF-8");
        self.out.push_back(HubOutput::Send(WsFrame::Text(text)));
        self.timers.set(
            HubTimer::Handshake,
            saturating_add(now, self.config.handshake_timeout),
        );
    }

    /// The WebSocket could not be opened (`status`: the HTTP status of a refused upgrade).
    pub fn handle_ws_failed(&mut self, now: Instant, status: Option<u16>, detail: String) {
        if self.state != HubState::OpeningSocket {
            return;
        }
        let end = match status {
            Some(status @ (401 | 403)) => LinkEnd::Unauthorized { status, detail },
            status => LinkEnd::WebSocketFailed { status, detail },
        };
        self.end(now, end, None);
    }

    /// The socket closed or broke (`code` None: no close frame).
    pub fn handle_ws_closed(&mut self, now: Instant, code: Option<u16>, reason: String) {
        match self.state {
            HubState::Idle | HubState::Negotiating => {}
            HubState::OpeningSocket => self.end(
                now,
                LinkEnd::WebSocketFailed {
                    status: None,
                    detail: reason,
                },
                None,
            ),
            _ => self.end(now, LinkEnd::SocketClosed { code, reason }, None),
        }
    }

    /// Closes cleanly (after a revocation, or at shutdown): nothing else goes out, a hub Close
    /// message is sent once the handshake is done, then the socket is closed, and the link ends
    /// with [`LinkEnd::ClosedByNode`]. A no-op when idle.
    pub fn close(&mut self, now: Instant, reason: &str) {
        let close_socket = match self.state {
            HubState::Idle => return,
            HubState::Negotiating => false,
            HubState::OpeningSocket | HubState::Handshaking => true,
            HubState::AwaitingHello | HubState::Ready => {
                self.control.clear();
                self.deferred.clear();
                let mut record = Vec::new();
                let close = HubMessage::Close {
                    error: None,
                    allow_reconnect: None,
                };
                // A Close has no payload to transcode: encoding it cannot fail.
                if self.config.protocol.encode(&close, &mut record).is_ok() {
                    self.control.push_back(record);
                    self.pump_control(now);
                }
                true
            }
        };
        let code = close_socket.then_some(CLOSE_NORMAL);
        self.end(
            now,
            LinkEnd::ClosedByNode {
                reason: reason.to_owned(),
            },
            code.map(|code| (code, reason.to_owned())),
        );
    }

    /// Fires the timers due at `now`; early or spurious calls do nothing.
    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some((timer, _)) = self.timers.pop_expired(now) {
            match timer {
                HubTimer::Handshake => {
                    let reason = "handshake timeout".to_owned();
                    self.end(now, LinkEnd::HandshakeTimeout, Some((CLOSE_NORMAL, reason)));
                }
                HubTimer::Hello => {
                    let reason = "Hello timeout".to_owned();
                    self.end(now, LinkEnd::HelloTimeout, Some((CLOSE_NORMAL, reason)));
                }
                HubTimer::PeerTimeout => {
                    let reason = "server timeout".to_owned();
                    self.end(now, LinkEnd::PeerTimeout, Some((CLOSE_NORMAL, reason)));
                }
                HubTimer::KeepAlive => {
                    let mut record = Vec::new();
                    // A Ping has no payload: encoding it cannot fail.
                    if self
                        .config
                        .protocol
                        .encode(&HubMessage::Ping, &mut record)
                        .is_ok()
                    {
                        self.control.push_back(record);
                    }
                    // Sending re-arms the timer from now, later than now (design rule 8).
                    self.pump(now);
                }
            }
        }
    }

    /// When [`HubLink::handle_timeout`] wants to be called next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timers.next_expiry()
    }

    /// The next output; drain until `None` after every input.
    #[must_use]
    pub fn poll_output(&mut self) -> Option<HubOutput> {
        self.out.pop_front()
    }

    /// The handshake response arrived: accepted (send `Hello`) or rejected (end).
    pub(super) fn handshake_accepted(&mut self, now: Instant) {
        self.timers.stop(HubTimer::Handshake);
        self.decoder.set_protocol(self.config.protocol);
        self.state = HubState::AwaitingHello;
        self.timers.set(
            HubTimer::Hello,
            saturating_add(now, self.config.handshake_timeout),
        );
        self.timers.set(
            HubTimer::PeerTimeout,
            saturating_add(now, self.config.peer_timeout),
        );
        self.send_hello(now);
    }

    /// The `Hello` Completion settled the version: calls flow.
    pub(super) fn become_ready(&mut self, protocol_version: String, negotiated: bool) {
        self.timers.stop(HubTimer::Hello);
        self.state = HubState::Ready;
        self.protocol_version = Some(protocol_version.clone());
        self.negotiated = negotiated;
        self.out.push_back(HubOutput::Event(HubEvent::Ready {
            protocol_version,
            negotiated,
        }));
        for call in std::mem::take(&mut self.early_calls) {
            self.out.push_back(HubOutput::Event(HubEvent::Call(call)));
        }
        self.control.append(&mut self.deferred);
    }

    /// Ends the connection: closes the socket when `close` says so, drops control records, keeps
    /// unacknowledged result parts (in order) for the next connection, reports `Ended`.
    pub(super) fn end(&mut self, _now: Instant, end: LinkEnd, close: Option<(u16, String)>) {
        if let Some((code, reason)) = close {
            self.out.push_back(HubOutput::Close {
                code,
                reason: close_reason(&reason),
            });
        }
        self.timers.stop_all();
        self.control.clear();
        self.deferred.clear();
        self.early_calls.clear();
        let sent = std::mem::take(&mut self.in_flight);
        for part in sent.into_values().rev() {
            let key = part.dto.command_id.clone();
            self.bulk.push_front(key, part);
        }
        self.decoder = RecordDecoder::new(self.config.max_record_len);
        self.hello_id = None;
        self.protocol_version = None;
        self.negotiated = false;
        self.state = HubState::Idle;
        self.out.push_back(HubOutput::Event(HubEvent::Ended(end)));
    }

    /// Marks a receive: the peer timer restarts from `now`.
    pub(super) fn received(&mut self, now: Instant) {
        if self.timers.is_armed(HubTimer::PeerTimeout) {
            self.timers.set(
                HubTimer::PeerTimeout,
                saturating_add(now, self.config.peer_timeout),
            );
        }
    }
}

/// A short, printable excerpt of an HTTP body for a `LinkEnd` detail.
fn body_detail(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    if text.is_empty() {
        return "(empty body)".to_owned();
    }
    let mut end = text.len().min(MAX_DETAIL_LEN);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_owned()
}
