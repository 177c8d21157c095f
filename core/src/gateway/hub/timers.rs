//! The server's timers: one deadline queue per kind, handled in deadline order.

use std::sync::Arc;
use std::time::Instant;

use super::conn::TokenEntry;
use super::{ConnState, DisconnectReason, HubServer, CLOSE_NORMAL};
use crate::gateway::ConnId;
use crate::time::{saturating_add, DeadlineQueue};
use crate::wire::signalr::HubMessage;

/// Every deadline of the server. `client` and `keep_alive` are lazy (see the module docs of
/// `hub`): a queued deadline may be earlier than the true one, never later.
#[derive(Debug, Default)]
pub(super) struct Timers {
    pub handshake: DeadlineQueue<ConnId>,
    pub client: DeadlineQueue<ConnId>,
    pub keep_alive: DeadlineQueue<ConnId>,
    pub ack: DeadlineQueue<ConnId>,
    pub window: DeadlineQueue<ConnId>,
    pub negotiations: DeadlineQueue<Arc<str>>,
}

/// The kinds, in the order they are handled when due at the same instant: a connection found
/// dead ends before anything would be sent on it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    Client,
    Handshake,
    Window,
    Negotiation,
    Ack,
    KeepAlive,
}

impl Timers {
    /// The earliest deadline of all.
    pub fn next(&self) -> Option<Instant> {
        [
            self.client.next_deadline(),
            self.handshake.next_deadline(),
            self.window.next_deadline(),
            self.negotiations.next_deadline(),
            self.ack.next_deadline(),
            self.keep_alive.next_deadline(),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// The kind of the earliest deadline that is due at `now`.
    fn due(&self, now: Instant) -> Option<Kind> {
        [
            (Kind::Client, self.client.next_deadline()),
            (Kind::Handshake, self.handshake.next_deadline()),
            (Kind::Window, self.window.next_deadline()),
            (Kind::Negotiation, self.negotiations.next_deadline()),
            (Kind::Ack, self.ack.next_deadline()),
            (Kind::KeepAlive, self.keep_alive.next_deadline()),
        ]
        .into_iter()
        .filter_map(|(kind, at)| at.filter(|at| *at <= now).map(|at| (at, kind)))
        .min()
        .map(|(_, kind)| kind)
    }

    /// Removes every deadline of a connection.
    pub fn forget(&mut self, id: ConnId) {
        self.handshake.remove(&id);
        self.client.remove(&id);
        self.keep_alive.remove(&id);
        self.ack.remove(&id);
        self.window.remove(&id);
    }
}

impl HubServer {
    /// Fires every timer due at `now`, earliest first; early or spurious calls do nothing.
    /// Afterwards [`HubServer::poll_timeout`] is later than `now` (or `None`).
    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some(kind) = self.shared.timers.due(now) {
            let timers = &mut self.shared.timers;
            match kind {
                Kind::Negotiation => {
                    if let Some(token) = timers.negotiations.pop_expired(now) {
                        self.forget_negotiation(&token);
                    }
                }
                Kind::Client => {
                    if let Some(id) = timers.client.pop_expired(now) {
                        self.on_client_timer(now, id);
                    }
                }
                Kind::Handshake => {
                    if let Some(id) = timers.handshake.pop_expired(now) {
                        let close = (CLOSE_NORMAL, "handshake timeout".to_owned());
                        self.end(now, id, DisconnectReason::HandshakeTimeout, Some(close));
                    }
                }
                Kind::Window => {
                    if let Some(id) = timers.window.pop_expired(now) {
                        self.end(now, id, DisconnectReason::ReconnectWindowExpired, None);
                    }
                }
                Kind::Ack => {
                    if let Some(id) = timers.ack.pop_expired(now) {
                        self.on_ack_timer(now, id);
                    }
                }
                Kind::KeepAlive => {
                    if let Some(id) = timers.keep_alive.pop_expired(now) {
                        self.on_keep_alive_timer(now, id);
                    }
                }
            }
        }
    }

    /// When [`HubServer::handle_timeout`] wants to be called next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.shared.timers.next()
    }

    fn forget_negotiation(&mut self, token: &Arc<str>) {
        if let Some(TokenEntry::Negotiated { node, .. }) = self.tokens.get(token) {
            let node = node.clone();
            self.tokens.remove(token);
            self.unpend(&node);
        }
    }

    /// The queued client deadline came: the connection is dead if nothing arrived since.
    fn on_client_timer(&mut self, now: Instant, id: ConnId) {
        let Some(conn) = self.conns.get(&id).filter(|c| c.state == ConnState::Open) else {
            return;
        };
        let due = saturating_add(conn.last_received, self.shared.config.client_timeout);
        if due > now {
            self.shared.timers.client.insert(id, due);
        } else if conn.is_resumable() {
            let close = Some("client timeout");
            self.detach(now, id, DisconnectReason::ClientTimeout, close);
        } else {
            let close = (CLOSE_NORMAL, "client timeout".to_owned());
            self.end(now, id, DisconnectReason::ClientTimeout, Some(close));
        }
    }

    /// The queued keep-alive deadline came: a Ping goes out if nothing was sent since.
    fn on_keep_alive_timer(&mut self, now: Instant, id: ConnId) {
        let Some(conn) = self.conns.get(&id).filter(|c| c.state == ConnState::Open) else {
            return;
        };
        let keep_alive = self.shared.config.keep_alive;
        let due = saturating_add(conn.last_sent, keep_alive);
        if due > now {
            self.shared.timers.keep_alive.insert(id, due);
            return;
        }
        // A Ping has no payload and is not trackable: writing it cannot fail.
        let _ = self.write(now, id, &HubMessage::Ping);
        let next = saturating_add(now, keep_alive);
        self.shared.timers.keep_alive.insert(id, next);
    }

    /// The Ack delay is over: acknowledge everything received since the last Ack.
    fn on_ack_timer(&mut self, now: Instant, id: ConnId) {
        let Some(conn) = self.conns.get_mut(&id) else {
            return;
        };
        let open = conn.state == ConnState::Open;
        let Some(replay) = conn.replay.as_mut() else {
            return;
        };
        replay.ack_armed = false;
        if !open || !replay.ack_due() {
            return;
        }
        let sequence_id = replay.latest_received;
        replay.last_acked = sequence_id;
        // An Ack has no payload and is not trackable: writing it cannot fail.
        let _ = self.write(now, id, &HubMessage::Ack { sequence_id });
    }
}
