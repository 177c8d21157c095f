//! One connection's state, and the stateful-reconnect bookkeeping (sequence ids both ways, the
//! replay buffer, acknowledgments).

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Instant;

use super::heartbeat::CapabilitiesMemo;
use super::{ConnState, HubPeerError};
use crate::gateway::ConnId;
use crate::wire::signalr::framing::RecordDecoder;
use crate::wire::signalr::{DecodeError, HubProtocol};

/// What a connection token (`?id=`) stands for.
#[derive(Clone, Debug)]
pub(super) enum TokenEntry {
    /// Negotiated, no socket yet. `stateful`: stateful reconnect was granted.
    Negotiated { node: Arc<str>, stateful: bool },
    /// The connection it opened, on its current socket.
    Bound(ConnId),
}

/// One SignalR connection.
#[derive(Debug)]
pub(super) struct Conn {
    pub node: Arc<str>,
    /// The `?id=` it was opened with; `None` for a skip-negotiation connection.
    pub token: Option<Arc<str>>,
    pub state: ConnState,
    /// Meaningful once the handshake is accepted.
    pub protocol: HubProtocol,
    /// Negotiate granted stateful reconnect (the handshake must still ask for version 2).
    pub stateful_granted: bool,
    pub decoder: RecordDecoder,
    pub last_sent: Instant,
    pub last_received: Instant,
    /// Records written and not yet cut into a frame.
    pub pending: Vec<u8>,
    /// Whether this connection is in the transmit queue's dirty list.
    pub dirty: bool,
    /// Stateful reconnect is on (handshake version 2 and granted by negotiate).
    pub replay: Option<Box<Replay>>,
    /// The last heartbeat `capabilities` decoded (raw heartbeats only).
    pub capabilities: Option<CapabilitiesMemo>,
}

impl Conn {
    pub fn new(
        node: Arc<str>,
        token: Option<Arc<str>>,
        stateful_granted: bool,
        now: Instant,
        max_record_len: usize,
    ) -> Conn {
        Conn {
            node,
            token,
            state: ConnState::Handshaking,
            protocol: HubProtocol::Json,
            stateful_granted,
            decoder: RecordDecoder::new(max_record_len),
            last_sent: now,
            last_received: now,
            pending: Vec::new(),
            dirty: false,
            replay: None,
            capabilities: None,
        }
    }

    /// Whether losing the socket now would detach the connection rather than end it.
    pub fn is_resumable(&self) -> bool {
        self.state != ConnState::Handshaking && self.replay.as_ref().is_some_and(|r| r.resumable)
    }
}

/// Stateful reconnect (hub protocol version 2): what each side has sent and received.
#[derive(Debug)]
pub(super) struct Replay {
    /// False once the buffer overflowed on a live socket: the connection goes on, but a lost
    /// socket now ends it.
    pub resumable: bool,
    /// The sequence id of the next trackable message sent (ids start at 1).
    pub next_send_id: u64,
    /// Unacknowledged trackable messages sent, as encoded records, with their ids.
    pub buffer: VecDeque<(u64, Vec<u8>)>,
    pub buffered_bytes: usize,
    /// The id the next trackable message received has.
    pub next_receive_id: u64,
    /// The highest id received and acted on (0: none).
    pub latest_received: u64,
    /// The highest id acknowledged to the node.
    pub last_acked: u64,
    /// A resumed socket must start with the node's Sequence.
    pub awaiting_sequence: bool,
    /// An Ack timer is queued for this connection.
    pub ack_armed: bool,
}

/// What to do with a trackable message received on a stateful connection.
pub(super) enum Receipt {
    /// New: act on it (and acknowledge it).
    Fresh,
    /// Already received before a reconnect: drop it silently.
    Duplicate,
    /// Received on a resumed socket before its Sequence: drop it and report it.
    Early(HubPeerError),
}

impl Replay {
    pub fn new() -> Replay {
        Replay {
            resumable: true,
            next_send_id: 1,
            buffer: VecDeque::new(),
            buffered_bytes: 0,
            next_receive_id: 1,
            latest_received: 0,
            last_acked: 0,
            awaiting_sequence: false,
            ack_armed: false,
        }
    }

    /// Numbers a trackable record being sent and keeps a copy for replay. Returns false when the
    /// buffer now exceeds `limit` (the caller decides what that costs).
    pub fn track(&mut self, record: &[u8], limit: usize) -> bool {
        let id = self.next_send_id;
        self.next_send_id += 1;
        if !self.resumable {
            return true;
        }
        self.buffered_bytes += record.len();
        self.buffer.push_back((id, record.to_vec()));
        self.buffered_bytes <= limit
    }

    /// The buffer overflowed on a live socket: stop keeping messages; the connection is no
    /// longer resumable.
    pub fn give_up_resuming(&mut self) {
        self.resumable = false;
        self.buffer.clear();
        self.buffered_bytes = 0;
    }

    /// The node's Ack: forget what it acknowledges.
    pub fn ack(&mut self, sequence_id: u64) -> Result<(), HubPeerError> {
        let last_sent = self.next_send_id - 1;
        while self
            .buffer
            .front()
            .is_some_and(|(id, _)| *id <= sequence_id)
        {
            if let Some((_, record)) = self.buffer.pop_front() {
                self.buffered_bytes -= record.len();
            }
        }
        if sequence_id > last_sent {
            return Err(HubPeerError::AckBeyondSent {
                sequence_id,
                last_sent,
            });
        }
        Ok(())
    }

    /// The node's Sequence: the id of the first message it is about to (re)send.
    pub fn sequence(&mut self, sequence_id: u64) -> Result<(), HubPeerError> {
        if sequence_id > self.next_receive_id {
            return Err(HubPeerError::SequenceTooHigh {
                sequence_id,
                expected: self.next_receive_id,
            });
        }
        self.next_receive_id = sequence_id;
        self.awaiting_sequence = false;
        Ok(())
    }

    /// A trackable message arrived (`message`: its type's name).
    pub fn receive(&mut self, message: &'static str) -> Receipt {
        if self.awaiting_sequence {
            return Receipt::Early(HubPeerError::BeforeSequence { message });
        }
        let id = self.next_receive_id;
        self.next_receive_id += 1;
        if id <= self.latest_received {
            return Receipt::Duplicate;
        }
        self.latest_received = id;
        Receipt::Fresh
    }

    /// The id a Sequence sent on a resumed socket announces: the first message replayed.
    pub fn first_unacked(&self) -> u64 {
        self.buffer.front().map_or(self.next_send_id, |(id, _)| *id)
    }

    /// Whether an Ack is owed to the node.
    pub fn ack_due(&self) -> bool {
        self.latest_received > self.last_acked
    }
}

/// Whether an undecodable record was a trackable message (types 1 to 5), as far as its error
/// tells: `None` when the type is unknown (the record is not even an object with a type).
pub(super) fn trackable_of_error(error: &DecodeError) -> Option<bool> {
    let message = match error {
        DecodeError::ResultAndError => return Some(true),
        DecodeError::UnknownMessageType { .. } => return Some(false),
        DecodeError::MissingField { message, .. }
        | DecodeError::WrongType { message, .. }
        | DecodeError::InvalidValue { message, .. } => *message,
        _ => return None,
    };
    match message {
        "Invocation" | "StreamItem" | "Completion" | "StreamInvocation" | "CancelInvocation" => {
            Some(true)
        }
        "Ping" | "Close" | "Ack" | "Sequence" => Some(false),
        _ => None,
    }
}
