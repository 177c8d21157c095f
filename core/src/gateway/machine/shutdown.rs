//! Graceful shutdown: every hub connection is told to come back later.

use std::time::Instant;

use super::Gateway;
use crate::gateway::ConnId;

impl Gateway {
    /// Ends every hub connection with a Close message carrying `reason` and
    /// `allowReconnect: true` (a connection still in its handshake just has its socket closed),
    /// so nodes reconnect with their usual backoff once the gateway is back. The shell then
    /// delivers the outputs, stops accepting and flushes its store; polling nodes need nothing:
    /// their next poll fails and they retry.
    pub fn shutdown(&mut self, now: Instant, reason: &str) {
        let conns: Vec<ConnId> = self.hub.connections().map(|(conn, _)| conn).collect();
        for conn in conns {
            // Every id comes from the hub's own list: it cannot be unknown.
            let _ = self.hub.close(now, conn, Some(reason.to_owned()), true);
        }
        self.pump(now);
    }
}
