//! Opening and ending connections: negotiate, the WebSocket upgrade (new, skip-negotiation, or a
//! stateful resume), socket loss, and the end of a connection.

use std::sync::Arc;
use std::time::Instant;

use super::conn::{Conn, TokenEntry};
use super::{ConnState, DisconnectReason, HubServer, HubServerEvent, CLOSE_NORMAL};
use crate::gateway::{ConnId, HttpReply};
use crate::rng::Rng;
use crate::time::saturating_add;
use crate::wire::signalr::framing::RecordDecoder;
use crate::wire::signalr::negotiate::{
    query_param, AvailableTransport, NegotiateError, NegotiateRequest, NegotiateResponse,
    NegotiatedConnection,
};
use crate::wire::signalr::HubMessage;

/// Random bytes in a connection id and in a connection token (128 bits, 22 characters).
const ID_BYTES: usize = 16;

/// The body of the 404 answered to an unknown (or another node's) connection token.
pub const UNKNOWN_ID_ERROR: &str = "No Connection with that ID";
/// The body of the 409 answered to a second socket for a connection that has one.
pub const ID_IN_USE_ERROR: &str = "Connection ID already in use";

fn error_reply(status: u16, error: &str) -> HttpReply {
    HttpReply {
        status,
        body: NegotiateResponse::Error(error.to_owned()).encode(),
    }
}

/// Parses the negotiate query; a `negotiateVersion` that is a non-negative integer too large for
/// a `u32` is still a version (the highest), as docs/protocol.md 2.2 says.
fn negotiate_request(query: &str) -> Result<NegotiateRequest, NegotiateError> {
    match NegotiateRequest::from_query(query) {
        Err(NegotiateError::InvalidQuery {
            param: "negotiateVersion",
            value,
        }) if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) => {
            let stateful = NegotiateRequest::from_query(&strip_param(query, "negotiateVersion"))?;
            Ok(NegotiateRequest {
                requested_version: u32::MAX,
                use_stateful_reconnect: stateful.use_stateful_reconnect,
            })
        }
        other => other,
    }
}

/// `query` without the parameter `name`.
fn strip_param(query: &str, name: &str) -> String {
    let mut out = form_urlencoded::Serializer::new(String::new());
    out.extend_pairs(form_urlencoded::parse(query.as_bytes()).filter(|(key, _)| key != name));
    out.finish()
}

impl HubServer {
    /// `POST {hub}/negotiate` for `node`, already authenticated by the caller. `query` is the
    /// request's query without `?`. Answers 200 with a version 0 or 1 body (docs/protocol.md 2.2),
    /// granting stateful reconnect when asked for with version 1 and allowed by the config; 400
    /// for a bad query; 429 when the node already holds `max_pending_negotiations` unused ids.
    /// Ids and tokens are 128 random bits from `rng`; an id no socket opens within
    /// `negotiate_ttl` is forgotten.
    pub fn negotiate(&mut self, now: Instant, node: &str, query: &str, rng: &mut Rng) -> HttpReply {
        let request = match negotiate_request(query) {
            Ok(request) => request,
            Err(error) => return error_reply(400, &error.to_string()),
        };
        let pending = self.pending_per_node.get(node).copied().unwrap_or(0);
        if pending >= self.shared.config.max_pending_negotiations {
            return error_reply(429, "Too many pending negotiations for this node");
        }
        let version = request.answered_version();
        let stateful =
            request.use_stateful_reconnect && self.shared.config.stateful_reconnect && version >= 1;
        let (connection_id, token) = loop {
            let connection_id = rng.token_urlsafe(ID_BYTES);
            let token = if version >= 1 {
                rng.token_urlsafe(ID_BYTES)
            } else {
                connection_id.clone()
            };
            // 128 random bits never collide in practice; a collision must not hijack an entry.
            if !self.tokens.contains_key(token.as_str()) {
                break (connection_id, token);
            }
        };
        let node: Arc<str> = self
            .pending_per_node
            .get_key_value(node)
            .map_or_else(|| Arc::from(node), |(key, _)| key.clone());
        *self.pending_per_node.entry(node.clone()).or_insert(0) += 1;
        let key: Arc<str> = Arc::from(token.as_str());
        self.tokens
            .insert(key.clone(), TokenEntry::Negotiated { node, stateful });
        let expiry = saturating_add(now, self.shared.config.negotiate_ttl);
        self.shared.timers.negotiations.insert(key, expiry);
        let body = NegotiateResponse::Connection(NegotiatedConnection {
            negotiate_version: version,
            connection_id,
            connection_token: (version >= 1).then_some(token),
            use_stateful_reconnect: stateful,
            available_transports: vec![AvailableTransport::websockets()],
        })
        .encode();
        HttpReply { status: 200, body }
    }

    /// A WebSocket upgrade of `node` (authenticated by the caller) on the socket `conn`, with the
    /// request's `query` (without `?`). Without `id` it is a skip-negotiation connection. With a
    /// negotiated `id` it opens that connection; with the `id` of a detached stateful connection
    /// of the same node it resumes it (no handshake; [`HubServerEvent::Reconnected`]), taking it
    /// over from its old socket if that one still looks alive. Refusals, which the shell answers
    /// instead of upgrading: 404 for an id that is unknown, forgotten or another node's; 409 for
    /// an id whose connection already has a socket; 500 when `conn` is already in use (a shell
    /// must never reuse a socket number).
    pub fn open_socket(
        &mut self,
        now: Instant,
        conn: ConnId,
        node: &str,
        query: &str,
    ) -> Result<(), HttpReply> {
        if self.conns.contains_key(&conn) {
            return Err(error_reply(
                500,
                "Internal error: this socket number is already in use",
            ));
        }
        let Some(id) = query_param(query, "id").filter(|id| !id.is_empty()) else {
            self.start(now, conn, Arc::from(node), None, false);
            return Ok(());
        };
        let Some((key, entry)) = self.tokens.get_key_value(&*id) else {
            return Err(error_reply(404, UNKNOWN_ID_ERROR));
        };
        let key = key.clone();
        match entry.clone() {
            TokenEntry::Negotiated {
                node: owner,
                stateful,
            } => {
                if &*owner != node {
                    return Err(error_reply(404, UNKNOWN_ID_ERROR));
                }
                self.shared.timers.negotiations.remove(&key);
                self.unpend(&owner);
                self.tokens.insert(key.clone(), TokenEntry::Bound(conn));
                self.start(now, conn, owner, Some(key), stateful);
                Ok(())
            }
            TokenEntry::Bound(current) => {
                let existing = self
                    .conns
                    .get(&current)
                    .expect("a bound token names a live connection (tokens go with their conn)");
                if &*existing.node != node {
                    return Err(error_reply(404, UNKNOWN_ID_ERROR));
                }
                match existing.state {
                    ConnState::Detached => {}
                    ConnState::Open if existing.is_resumable() => {
                        self.detach(
                            now,
                            current,
                            DisconnectReason::Replaced,
                            Some("replaced by a new socket"),
                        );
                    }
                    _ => return Err(error_reply(409, ID_IN_USE_ERROR)),
                }
                self.resume(now, current, conn, key);
                Ok(())
            }
        }
    }

    /// The shell saw the socket close (`code`: its close frame's code; `None`: it broke without
    /// one). A stateful connection whose socket broke (anything but a normal close, 1000) is
    /// detached and waits `reconnect_window` for the node; any other connection ends. A socket
    /// the server already closed or never knew is ignored.
    pub fn socket_closed(&mut self, now: Instant, conn: ConnId, code: Option<u16>) {
        let Some(c) = self.conns.get(&conn) else {
            return;
        };
        let reason = DisconnectReason::SocketClosed { code };
        match c.state {
            ConnState::Detached => {}
            ConnState::Open if c.is_resumable() && code != Some(CLOSE_NORMAL) => {
                self.detach(now, conn, reason, None);
            }
            _ => self.end(now, conn, reason, None),
        }
    }

    /// A new connection on socket `id`, waiting for its handshake.
    fn start(
        &mut self,
        now: Instant,
        id: ConnId,
        node: Arc<str>,
        token: Option<Arc<str>>,
        stateful: bool,
    ) {
        let max = self.shared.config.max_record_len;
        let conn = Conn::new(node, token, stateful, now, max);
        self.conns.insert(id, conn);
        let deadline = saturating_add(now, self.shared.config.handshake_timeout);
        self.shared.timers.handshake.insert(id, deadline);
    }

    /// A detached stateful connection comes back on socket `new`: it takes the new number, sends
    /// Sequence and replays every unacknowledged message, and waits for the node's Sequence.
    fn resume(&mut self, now: Instant, old: ConnId, new: ConnId, token: Arc<str>) {
        let mut conn = self
            .conns
            .remove(&old)
            .expect("resume is called with a detached connection's number");
        self.shared.timers.forget(old);
        let config = &self.shared.config;
        conn.state = ConnState::Open;
        conn.decoder = RecordDecoder::new(config.max_record_len);
        conn.decoder.set_protocol(conn.protocol);
        conn.last_received = now;
        conn.pending.clear();
        conn.dirty = false;
        let replay = conn
            .replay
            .take()
            .expect("only stateful connections are detached");
        let mut sequence = Vec::new();
        let message = HubMessage::Sequence {
            sequence_id: replay.first_unacked(),
        };
        // A Sequence has no payload: encoding it cannot fail.
        let _ = conn.protocol.encode(&message, &mut sequence);
        let tx = &mut self.shared.tx;
        tx.write_encoded(now, new, &mut conn, &sequence);
        for (_, record) in &replay.buffer {
            tx.write_encoded(now, new, &mut conn, record);
        }
        let mut replay = replay;
        replay.awaiting_sequence = true;
        replay.ack_armed = replay.ack_due();
        if replay.ack_armed {
            let at = saturating_add(now, config.ack_interval);
            self.shared.timers.ack.insert(new, at);
        }
        conn.replay = Some(replay);
        let timers = &mut self.shared.timers;
        timers
            .client
            .insert(new, saturating_add(now, config.client_timeout));
        timers
            .keep_alive
            .insert(new, saturating_add(now, config.keep_alive));
        let node = conn.node.clone();
        self.conns.insert(new, conn);
        self.tokens.insert(token, TokenEntry::Bound(new));
        self.shared.events.push_back(HubServerEvent::Reconnected {
            conn: new,
            previous: old,
            node,
        });
    }

    /// A stateful connection loses its socket (closing it first when `close` has a reason): it
    /// waits `reconnect_window` for the node, keeping what is sent to it meanwhile.
    pub(super) fn detach(
        &mut self,
        now: Instant,
        id: ConnId,
        reason: DisconnectReason,
        close: Option<&str>,
    ) {
        let Some(conn) = self.conns.get_mut(&id) else {
            return;
        };
        conn.state = ConnState::Detached;
        conn.pending = Vec::new();
        conn.decoder = RecordDecoder::new(self.shared.config.max_record_len);
        if let Some(replay) = conn.replay.as_mut() {
            replay.ack_armed = false;
        }
        let node = conn.node.clone();
        let timers = &mut self.shared.timers;
        timers.forget(id);
        let window = saturating_add(now, self.shared.config.reconnect_window);
        timers.window.insert(id, window);
        if let Some(reason) = close {
            self.shared.tx.close_socket(id, CLOSE_NORMAL, reason);
        }
        self.shared.events.push_back(HubServerEvent::Disconnected {
            conn: id,
            node,
            reason,
            will_resume: true,
        });
    }

    /// Ends a connection for good. With `close`, what it has pending goes out first and then the
    /// socket is closed with that code and reason.
    pub(super) fn end(
        &mut self,
        _now: Instant,
        id: ConnId,
        reason: DisconnectReason,
        close: Option<(u16, String)>,
    ) {
        let Some(mut conn) = self.conns.remove(&id) else {
            return;
        };
        self.shared.timers.forget(id);
        if let Some((code, text)) = close {
            if conn.state != ConnState::Detached {
                self.shared.tx.flush(id, &mut conn);
                self.shared.tx.close_socket(id, code, &text);
            }
        }
        if let Some(token) = &conn.token {
            if matches!(self.tokens.get(token), Some(TokenEntry::Bound(bound)) if *bound == id) {
                self.tokens.remove(token);
            }
        }
        self.shared.events.push_back(HubServerEvent::Disconnected {
            conn: id,
            node: conn.node,
            reason,
            will_resume: false,
        });
    }

    /// A negotiated id is used or forgotten: one fewer pending for its node.
    pub(super) fn unpend(&mut self, node: &str) {
        if let Some(count) = self.pending_per_node.get_mut(node) {
            *count -= 1;
            if *count == 0 {
                self.pending_per_node.remove(node);
            }
        }
    }
}
