//! The sending side: writing messages to a connection (numbered and kept for replay on stateful
//! connections), batching records into frames, and the application calls that send.

use std::collections::VecDeque;
use std::time::Instant;

use super::conn::Conn;
use super::{
    close_reason, ConnState, DisconnectReason, HubServer, HubServerOutput, HubUsageError, WsFrame,
    CLOSE_NORMAL,
};
use crate::gateway::dispatch::Execute;
use crate::gateway::ConnId;
use crate::wire::contract::GatewayCall;
use crate::wire::signalr::{
    json, CompletionOutcome, Headers, HubMessage, HubProtocol, PayloadError, RECORD_SEPARATOR,
};

/// The room a new frame starts with: an `ExecuteCommand` with small params, a Completion.
const FRAME_START_CAPACITY: usize = 256;

/// The transmit queue: frames ready for the shell, and the connections with a pending frame.
#[derive(Debug)]
pub(super) struct Tx {
    pub out: VecDeque<HubServerOutput>,
    /// Connections whose `pending` frame is cut when `poll_output` runs dry, in the order they
    /// first wrote (a connection is in it at most once, see `Conn::dirty`).
    pub dirty: VecDeque<ConnId>,
    max_batch_len: usize,
}

/// What became of a message written to a connection.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Written {
    Ok,
    /// A detached connection's replay buffer overflowed: the connection must end.
    Overflowed {
        bytes: usize,
    },
}

impl Tx {
    pub fn new(max_batch_len: usize) -> Tx {
        Tx {
            out: VecDeque::new(),
            dirty: VecDeque::new(),
            max_batch_len,
        }
    }

    /// Writes one message to an open or detached connection. On a stateful connection a trackable
    /// message (types 1 to 5) takes the next sequence id and a copy is kept until acknowledged;
    /// on an open one the record joins the pending frame (which is cut first if the record would
    /// take it over the batch limit). A buffer overflow on an open connection makes it
    /// non-resumable; on a detached one it is reported to the caller.
    pub fn write(
        &mut self,
        now: Instant,
        id: ConnId,
        conn: &mut Conn,
        message: &HubMessage,
        buffer_limit: usize,
    ) -> Result<Written, PayloadError> {
        let protocol = conn.protocol;
        let trackable = message.is_trackable();
        self.write_with(now, id, conn, trackable, buffer_limit, |out| {
            protocol.encode(message, out)
        })
    }

    /// [`Tx::write`] of a message that `encode` appends as whole records of the connection's
    /// protocol (leaving `out` as it was on failure); `trackable` as the message's type says.
    pub fn write_with(
        &mut self,
        now: Instant,
        id: ConnId,
        conn: &mut Conn,
        trackable: bool,
        buffer_limit: usize,
        encode: impl FnOnce(&mut Vec<u8>) -> Result<(), PayloadError>,
    ) -> Result<Written, PayloadError> {
        if conn.state != ConnState::Open {
            let mut record = Vec::new();
            encode(&mut record)?;
            if let Some(replay) = conn.replay.as_mut().filter(|_| trackable) {
                if !replay.track(&record, buffer_limit) {
                    let bytes = replay.buffered_bytes;
                    return Ok(Written::Overflowed { bytes });
                }
            }
            return Ok(Written::Ok);
        }
        let start = conn.pending.len();
        if start == 0 {
            // A new frame: one allocation of a usual frame's size rather than a string of
            // reallocations while the records are written.
            conn.pending.reserve(FRAME_START_CAPACITY);
        }
        encode(&mut conn.pending)?;
        if let Some(replay) = conn.replay.as_mut() {
            if trackable && !replay.track(&conn.pending[start..], buffer_limit) {
                replay.give_up_resuming();
            }
        }
        if start > 0 && conn.pending.len() > self.max_batch_len {
            let record = conn.pending.split_off(start);
            self.flush(id, conn);
            conn.pending = record;
        }
        conn.last_sent = now;
        self.mark_dirty(id, conn);
        Ok(Written::Ok)
    }

    /// Queues bytes that are already whole records of the connection's protocol (a replay).
    pub fn write_encoded(&mut self, now: Instant, id: ConnId, conn: &mut Conn, record: &[u8]) {
        if !conn.pending.is_empty() && conn.pending.len() + record.len() > self.max_batch_len {
            self.flush(id, conn);
        }
        conn.pending.extend_from_slice(record);
        conn.last_sent = now;
        self.mark_dirty(id, conn);
    }

    /// Sends a handshake record in a Text frame of its own, after anything pending.
    pub fn send_handshake(&mut self, now: Instant, id: ConnId, conn: &mut Conn, record: Vec<u8>) {
        self.flush(id, conn);
        let text = String::from_utf8(record).expect("handshake records are JSON, hence UTF-8");
        self.out.push_back(HubServerOutput::Send {
            conn: id,
            frame: WsFrame::Text(text),
        });
        conn.last_sent = now;
    }

    /// Cuts the pending frame now.
    pub fn flush(&mut self, id: ConnId, conn: &mut Conn) {
        if let Some(frame) = Self::cut(conn) {
            self.out
                .push_back(HubServerOutput::Send { conn: id, frame });
        }
    }

    /// The pending frame, taken from the connection; `None` when nothing is pending.
    #[inline]
    pub fn cut(conn: &mut Conn) -> Option<WsFrame> {
        if conn.pending.is_empty() {
            return None;
        }
        let bytes = std::mem::take(&mut conn.pending);
        Some(match conn.protocol {
            HubProtocol::Json => WsFrame::Text(
                String::from_utf8(bytes).expect("JSON records are written as UTF-8 text"),
            ),
            HubProtocol::MessagePack => WsFrame::Binary(bytes),
        })
    }

    pub fn close_socket(&mut self, id: ConnId, code: u16, reason: &str) {
        self.out.push_back(HubServerOutput::CloseSocket {
            conn: id,
            code,
            reason: close_reason(reason),
        });
    }

    fn mark_dirty(&mut self, id: ConnId, conn: &mut Conn) {
        if !conn.dirty {
            conn.dirty = true;
            self.dirty.push_back(id);
        }
    }
}

/// The JSON record of a void Completion without headers: the bytes `encode_record` writes for
/// `HubMessage::Completion { headers: empty, invocation_id, outcome: Void }`.
fn write_void_completion(invocation_id: &str, out: &mut Vec<u8>) {
    out.extend_from_slice(b"{\"type\":3,\"invocationId\":");
    json::write_str(invocation_id, out);
    out.push(b'}');
    out.push(RECORD_SEPARATOR);
}

impl HubServer {
    /// Invokes a gateway method on the node, fire-and-forget (no invocationId: the node does not
    /// answer). On a detached stateful connection the call is kept and replayed when the node
    /// comes back; if that overflows the replay buffer the connection ends
    /// ([`DisconnectReason::ReplayBufferFull`]).
    ///
    /// Errors (caller misuse): no connection on `conn`, its handshake is not done, or the call
    /// cannot be encoded in its hub protocol.
    pub fn send(
        &mut self,
        now: Instant,
        conn: ConnId,
        call: &GatewayCall,
    ) -> Result<(), HubUsageError> {
        let protocol = self.open_protocol(conn)?;
        if protocol == HubProtocol::Json {
            // Straight into the frame: the same bytes as the message below, without building it.
            return self.write_with(now, conn, true, |out| call.encode_json_record(out));
        }
        let message = call
            .to_message(protocol, None)
            .map_err(|e| HubUsageError::Unencodable(e.0))?;
        self.write(now, conn, &message)
    }

    /// [`HubServer::send`] of an `ExecuteCommand` kept as shared parts: on a JSON connection
    /// written from them (the same bytes as `send` of `execute.to_call()`), without a DTO.
    pub fn send_execute(
        &mut self,
        now: Instant,
        conn: ConnId,
        execute: &Execute,
    ) -> Result<(), HubUsageError> {
        let protocol = self.open_protocol(conn)?;
        if protocol == HubProtocol::Json {
            return self.write_with(now, conn, true, |out| execute.encode_json_record(out));
        }
        self.send(now, conn, &execute.to_call())
    }

    /// Answers a node's invocation (`Hello`, `CommandResult`) with a Completion: `Void`
    /// acknowledges a result, `Result` carries `Hello`'s `HelloAckDto`, `Error` refuses.
    /// Errors as [`HubServer::send`].
    pub fn complete(
        &mut self,
        now: Instant,
        conn: ConnId,
        invocation_id: String,
        outcome: CompletionOutcome,
    ) -> Result<(), HubUsageError> {
        let protocol = self.open_protocol(conn)?;
        if protocol == HubProtocol::Json && matches!(outcome, CompletionOutcome::Void) {
            // A result's acknowledgment, once per result: written at once, no message built.
            return self.write_with(now, conn, true, |out| {
                write_void_completion(&invocation_id, out);
                Ok(())
            });
        }
        let message = HubMessage::Completion {
            headers: Headers::new(),
            invocation_id,
            outcome,
        };
        self.write(now, conn, &message)
    }

    /// Ends the connection: a Close message (with `error`, and `allowReconnect: true` when
    /// `allow_reconnect`) goes out after everything already written, then the socket is closed
    /// (1000) and [`HubServerEvent::Disconnected`] follows. A revocation is `close(.., Some(reason),
    /// false)` after the `RevokeAccess` call. Before the handshake only the socket is closed; a
    /// detached connection just ends. Errors: no connection on `conn`.
    ///
    /// [`HubServerEvent::Disconnected`]: super::HubServerEvent::Disconnected
    pub fn close(
        &mut self,
        now: Instant,
        conn: ConnId,
        error: Option<String>,
        allow_reconnect: bool,
    ) -> Result<(), HubUsageError> {
        let state = self
            .conns
            .get(&conn)
            .ok_or(HubUsageError::UnknownConnection(conn))?
            .state;
        let socket_reason = error
            .clone()
            .unwrap_or_else(|| "closed by the gateway".to_owned());
        let close = match state {
            ConnState::Detached => None,
            ConnState::Handshaking => Some((CLOSE_NORMAL, socket_reason)),
            ConnState::Open => {
                let message = HubMessage::Close {
                    error: error.clone(),
                    allow_reconnect: allow_reconnect.then_some(true),
                };
                // A Close has no payload and is not trackable: writing it cannot fail.
                let _ = self.write(now, conn, &message);
                Some((CLOSE_NORMAL, socket_reason))
            }
        };
        self.end(
            now,
            conn,
            DisconnectReason::ClosedByGateway { error },
            close,
        );
        Ok(())
    }

    /// The protocol of an open or detached connection, or why nothing may be sent on it.
    fn open_protocol(&self, conn: ConnId) -> Result<HubProtocol, HubUsageError> {
        let c = self
            .conns
            .get(&conn)
            .ok_or(HubUsageError::UnknownConnection(conn))?;
        match c.state {
            ConnState::Handshaking => Err(HubUsageError::NotOpen(conn)),
            ConnState::Open | ConnState::Detached => Ok(c.protocol),
        }
    }

    /// Writes a message to a connection; ends a detached one whose replay buffer overflows.
    pub(super) fn write(
        &mut self,
        now: Instant,
        id: ConnId,
        message: &HubMessage,
    ) -> Result<(), HubUsageError> {
        let protocol = self
            .conns
            .get(&id)
            .ok_or(HubUsageError::UnknownConnection(id))?
            .protocol;
        self.write_with(now, id, message.is_trackable(), |out| {
            protocol.encode(message, out)
        })
    }

    /// [`HubServer::write`] of records that `encode` appends (see [`Tx::write_with`]).
    fn write_with(
        &mut self,
        now: Instant,
        id: ConnId,
        trackable: bool,
        encode: impl FnOnce(&mut Vec<u8>) -> Result<(), PayloadError>,
    ) -> Result<(), HubUsageError> {
        let conn = self
            .conns
            .get_mut(&id)
            .ok_or(HubUsageError::UnknownConnection(id))?;
        let limit = self.shared.config.reconnect_buffer_bytes;
        let written = self
            .shared
            .tx
            .write_with(now, id, conn, trackable, limit, encode)
            .map_err(|e| HubUsageError::Unencodable(e.0))?;
        if let Written::Overflowed { bytes } = written {
            let reason = DisconnectReason::ReplayBufferFull { bytes, limit };
            self.end(now, id, reason, None);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_void_completion_is_written_as_the_general_encoder_writes_it() {
        for id in ["1", "42", "a\"b\\c", "\u{1e}\n", "é✓", ""] {
            let message = HubMessage::Completion {
                headers: Headers::new(),
                invocation_id: id.to_owned(),
                outcome: CompletionOutcome::Void,
            };
            let mut expected = b"x".to_vec();
            HubProtocol::Json.encode(&message, &mut expected).unwrap();
            let mut direct = b"x".to_vec();
            write_void_completion(id, &mut direct);
            assert_eq!(
                String::from_utf8_lossy(&direct),
                String::from_utf8_lossy(&expected)
            );
        }
    }
}
