//! The receiving side: frames to records, the handshake, records to node calls, answers and
//! events, sequence ids of stateful connections.

use std::time::Instant;

use super::conn::{trackable_of_error, Conn, Receipt, Replay};
use super::heartbeat::{raw_heartbeat, raw_usual_heartbeat, RawHeartbeat};
use super::{
    ConnState, DisconnectReason, HubPeerError, HubServer, HubServerEvent, Shared, WsFrame,
    CLOSE_NORMAL, CLOSE_PROTOCOL_ERROR, CLOSE_TOO_BIG,
};
use crate::gateway::ConnId;
use crate::time::saturating_add;
use crate::wire::contract::{ContractError, NodeCall};
use crate::wire::signalr::framing::RecordDecoder;
use crate::wire::signalr::handshake::{HandshakeRequest, HandshakeResponse};
use crate::wire::signalr::json::{self, TypedCall};
use crate::wire::signalr::{
    msgpack, CompletionOutcome, DecodeError, Headers, HubMessage, HubProtocol, RECORD_SEPARATOR,
};

/// A decoder that buffered a frame larger than this is replaced once it is empty again.
const DECODER_KEEP_BYTES: usize = 16 * 1024;

/// The protocols a nodelink gateway accepts in the handshake.
const PROTOCOLS: [HubProtocol; 2] = [HubProtocol::Json, HubProtocol::MessagePack];

/// One step of decoding the buffered bytes, owned so that the decoder's borrow ends.
enum Item {
    /// No whole record buffered.
    NeedMore,
    Handshake(Result<HandshakeRequest, DecodeError>),
    /// An invocation decoded by the JSON fast path.
    Call(TypedCall<NodeCall>),
    /// A Heartbeat kept as text (raw heartbeats on).
    Heartbeat(RawHeartbeat),
    Message(HubMessage),
    Error(DecodeError),
}

/// How a connection must end after a record, decided while it was borrowed.
struct Ending {
    reason: DisconnectReason,
    close: (u16, String),
    /// A Close message to send first (only once the handshake is done).
    message: Option<HubMessage>,
}

impl HubServer {
    /// One WebSocket message from the node on socket `conn`. Text and Binary frames are read the
    /// same way (the bytes are what count), records split across frames are reassembled, and
    /// records that follow the handshake in one frame are decoded with the negotiated protocol.
    /// WebSocket Ping and Pong frames only prove the node alive. Frames of unknown or detached
    /// sockets are ignored. Everything after a record that ends the connection is dropped.
    pub fn handle_frame(&mut self, now: Instant, conn: ConnId, frame: WsFrame) {
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        if c.state == ConnState::Detached {
            return;
        }
        c.last_received = now;
        let len = match &frame {
            WsFrame::Text(text) => {
                // The two records a node sends most, read from the frame when it is one alone.
                let taken = if text.starts_with(COMMAND_RESULT_HEAD) {
                    lone_command_result(&mut self.shared, now, conn, c, text)
                } else {
                    heartbeat_frame(&mut self.shared, now, conn, c, text)
                };
                if taken {
                    return;
                }
                c.decoder.push(text.as_bytes());
                text.len()
            }
            WsFrame::Binary(bytes) => {
                c.decoder.push(bytes);
                bytes.len()
            }
            WsFrame::Ping(_) | WsFrame::Pong(_) => return,
        };
        let Some(ending) = receive_records(&mut self.shared, now, conn, c) else {
            // A decoder keeps the capacity of the largest frame it buffered: after a large
            // frame, an idle connection gives it back (thousands of idle connections add up).
            if len > DECODER_KEEP_BYTES
                && c.decoder.buffered_len() == 0
                && c.state == ConnState::Open
            {
                c.decoder = RecordDecoder::new(self.shared.config.max_record_len);
                c.decoder.set_protocol(c.protocol);
            }
            return;
        };
        if let Some(message) = ending.message {
            // A Close has no payload and is not trackable: writing it cannot fail.
            let _ = self.write(now, conn, &message);
        }
        self.end(now, conn, ending.reason, Some(ending.close));
    }
}

/// A text frame that is exactly one `CommandResult` record as nodes write it, on an open JSON
/// connection with nothing buffered: decoded from the frame itself (no copy into the decoder,
/// no UTF-8 check: it is text already). Anything else is `None`: the frame takes the usual path,
/// which decodes the same record the same way.
///
/// Handled as `receive_records` handles the record (`true`), or left alone (`false`). Kept out of
/// line: the heartbeat's path through `handle_frame` stays as it was.
#[inline(never)]
fn lone_command_result(
    shared: &mut Shared,
    now: Instant,
    id: ConnId,
    conn: &mut Conn,
    text: &str,
) -> bool {
    let Some(record) = lone_json_record(shared, conn, text) else {
        return false;
    };
    if memchr::memchr(RECORD_SEPARATOR, record.as_bytes()).is_some() {
        return false;
    }
    let Some(TypedCall {
        invocation_id,
        call,
    }) = json::decode_command_result_text(record)
    else {
        return false;
    };
    if fresh(shared, now, id, conn, "Invocation") {
        on_call(
            shared,
            id,
            conn,
            invocation_id,
            NodeCall::CommandResult(call),
        );
    }
    true
}

/// The record of a Text frame that ends in 0x1E, within the record limit, on an open JSON
/// connection with nothing buffered: one the fast paths may read from the frame itself instead
/// of through the connection's decoder. `None`: the frame goes through the decoder.
#[inline(always)]
fn lone_json_record<'t>(shared: &Shared, conn: &Conn, text: &'t str) -> Option<&'t str> {
    if conn.state != ConnState::Open
        || conn.protocol != HubProtocol::Json
        || conn.decoder.buffered_len() != 0
    {
        return None;
    }
    let record = text.strip_suffix(char::from(RECORD_SEPARATOR))?;
    (record.len() <= shared.config.max_record_len).then_some(record)
}

/// How a `CommandResult` record as nodes write it begins (`decode_command_result` checks it
/// whole).
const COMMAND_RESULT_HEAD: &str = "{\"type\":1,\"invocationId\":\"";

/// Handles every whole record buffered; stops at the first one that ends the connection.
#[inline(always)] // its one caller; a call here costs a heartbeat about 3 %
fn receive_records(
    shared: &mut Shared,
    now: Instant,
    id: ConnId,
    conn: &mut Conn,
) -> Option<Ending> {
    loop {
        let raw = shared.raw_heartbeats.then_some(&mut shared.spare_heartbeat);
        let ending = match next_item(conn, raw) {
            Item::NeedMore => return None,
            Item::Handshake(request) => on_handshake(shared, now, id, conn, request),
            Item::Call(TypedCall {
                invocation_id,
                call,
            }) => {
                if fresh(shared, now, id, conn, "Invocation") {
                    on_call(shared, id, conn, invocation_id, call);
                }
                None
            }
            Item::Heartbeat(heartbeat) => {
                on_heartbeat(shared, now, id, conn, heartbeat);
                None
            }
            Item::Message(message) => on_message(shared, now, id, conn, message),
            Item::Error(error) => on_decode_error(shared, now, id, conn, error),
        };
        if ending.is_some() {
            return ending;
        }
    }
}

/// A Text frame that is exactly one usual Heartbeat record, on an open JSON connection with
/// nothing buffered (a node sends one record per message): handled from the frame itself, with
/// no copy into the decoder and no UTF-8 check (the frame is text). `false`, nothing done: the
/// caller takes the general path, which decides and reports anything else.
fn heartbeat_frame(
    shared: &mut Shared,
    now: Instant,
    id: ConnId,
    conn: &mut Conn,
    text: &str,
) -> bool {
    if !shared.raw_heartbeats {
        return false;
    }
    // A record ends at its first 0x1E: one inside would end the scan early (a control byte is
    // no JSON token and no string byte), so a frame of several records is never taken here.
    let Some(record) = lone_json_record(shared, conn, text) else {
        return false;
    };
    let spare = &mut shared.spare_heartbeat;
    let Some(heartbeat) = raw_usual_heartbeat(record, &mut conn.capabilities, spare) else {
        return false;
    };
    on_heartbeat(shared, now, id, conn, heartbeat);
    true
}

fn on_heartbeat(
    shared: &mut Shared,
    now: Instant,
    id: ConnId,
    conn: &mut Conn,
    heartbeat: RawHeartbeat,
) {
    if fresh(shared, now, id, conn, "Invocation") {
        shared.events.push_back(HubServerEvent::Heartbeat {
            conn: id,
            node: conn.node.clone(),
            heartbeat,
        });
    }
}

/// The next record as an item; `raw_heartbeats`: usual JSON heartbeats kept as text, in the
/// spare buffer if there is one.
fn next_item(conn: &mut Conn, raw_heartbeats: Option<&mut Option<String>>) -> Item {
    let handshaking = conn.state == ConnState::Handshaking;
    let protocol = conn.protocol;
    let capabilities = &mut conn.capabilities;
    let record = match conn.decoder.next_record() {
        Err(error) => return Item::Error(error),
        Ok(None) => return Item::NeedMore,
        Ok(Some(record)) => record,
    };
    if handshaking {
        return Item::Handshake(HandshakeRequest::decode(record));
    }
    let decoded = match protocol {
        HubProtocol::Json => {
            if let Some(spare) = raw_heartbeats {
                if let Some(heartbeat) = raw_heartbeat(record, capabilities, spare) {
                    return Item::Heartbeat(heartbeat);
                }
            }
            if let Some(TypedCall {
                invocation_id,
                call,
            }) = json::decode_command_result(record)
            {
                return Item::Call(TypedCall {
                    invocation_id,
                    call: NodeCall::CommandResult(call),
                });
            }
            if let Some(call) = json::decode_invocation::<NodeCall>(record) {
                return Item::Call(call);
            }
            json::decode_record(record)
        }
        HubProtocol::MessagePack => msgpack::decode_body(record),
    };
    match decoded {
        Ok(message) => Item::Message(message),
        Err(error) => Item::Error(error),
    }
}

fn on_handshake(
    shared: &mut Shared,
    now: Instant,
    id: ConnId,
    conn: &mut Conn,
    request: Result<HandshakeRequest, DecodeError>,
) -> Option<Ending> {
    let accepted = match &request {
        Ok(request) => request.accept(&PROTOCOLS),
        Err(error) => Err(error.to_string()),
    };
    let handshake = match accepted {
        Ok(handshake) => handshake,
        Err(text) => {
            let mut record = Vec::new();
            HandshakeResponse::Rejected(text.clone()).encode(&mut record);
            shared.tx.send_handshake(now, id, conn, record);
            let close = match request {
                Ok(_) => (CLOSE_NORMAL, "handshake refused".to_owned()),
                Err(error) => {
                    misbehaved(shared, id, conn, HubPeerError::Decode(error));
                    (CLOSE_PROTOCOL_ERROR, "invalid handshake request".to_owned())
                }
            };
            return Some(Ending {
                reason: DisconnectReason::HandshakeRefused(text),
                close,
                message: None,
            });
        }
    };
    let config = &shared.config;
    conn.state = ConnState::Open;
    conn.protocol = handshake.protocol;
    conn.decoder.set_protocol(handshake.protocol);
    if handshake.version >= 2 && conn.stateful_granted {
        conn.replay = Some(Box::new(Replay::new()));
    }
    let mut record = Vec::new();
    HandshakeResponse::Accepted.encode(&mut record);
    shared.tx.send_handshake(now, id, conn, record);
    let timers = &mut shared.timers;
    timers.handshake.remove(&id);
    timers
        .client
        .insert(id, saturating_add(now, config.client_timeout));
    timers
        .keep_alive
        .insert(id, saturating_add(now, config.keep_alive));
    shared.events.push_back(HubServerEvent::Connected {
        conn: id,
        node: conn.node.clone(),
        protocol: handshake.protocol,
        stateful: conn.replay.is_some(),
    });
    None
}

/// Counts a trackable message on a stateful connection: whether to act on it. Arms the Ack.
fn fresh(
    shared: &mut Shared,
    now: Instant,
    id: ConnId,
    conn: &mut Conn,
    message: &'static str,
) -> bool {
    let Some(replay) = conn.replay.as_mut() else {
        return true;
    };
    match replay.receive(message) {
        Receipt::Fresh => {
            if !replay.ack_armed {
                replay.ack_armed = true;
                let at = saturating_add(now, shared.config.ack_interval);
                shared.timers.ack.insert(id, at);
            }
            true
        }
        Receipt::Duplicate => false,
        Receipt::Early(error) => {
            misbehaved(shared, id, conn, error);
            false
        }
    }
}

fn on_call(
    shared: &mut Shared,
    id: ConnId,
    conn: &Conn,
    invocation_id: Option<String>,
    call: NodeCall,
) {
    shared.events.push_back(HubServerEvent::Call {
        conn: id,
        node: conn.node.clone(),
        invocation_id,
        call,
    });
}

fn on_message(
    shared: &mut Shared,
    now: Instant,
    id: ConnId,
    conn: &mut Conn,
    message: HubMessage,
) -> Option<Ending> {
    let name = message_name(&message);
    if message.is_trackable() && !fresh(shared, now, id, conn, name) {
        return None;
    }
    match message {
        HubMessage::Invocation(invocation) => match NodeCall::from_invocation(&invocation) {
            Ok(call) => on_call(shared, id, conn, invocation.invocation_id, call),
            Err(error) => {
                let reply = match &error {
                    ContractError::UnknownTarget { target } => {
                        format!("Unknown hub method '{target}'")
                    }
                    other => other.to_string(),
                };
                misbehaved(shared, id, conn, HubPeerError::Contract(error));
                if let Some(invocation_id) = invocation.invocation_id {
                    answer_error(shared, now, id, conn, invocation_id, reply);
                }
            }
        },
        HubMessage::StreamInvocation(invocation) => {
            unexpected(
                shared,
                id,
                conn,
                name,
                "the node contract has no streaming methods",
            );
            if let Some(invocation_id) = invocation.invocation_id {
                let reply = format!(
                    "Streaming hub method '{}' is not supported",
                    invocation.target
                );
                answer_error(shared, now, id, conn, invocation_id, reply);
            }
        }
        HubMessage::StreamItem { .. } | HubMessage::CancelInvocation { .. } => {
            unexpected(shared, id, conn, name, "the node contract uses no streams");
        }
        HubMessage::Completion { .. } => unexpected(
            shared,
            id,
            conn,
            name,
            "gateway calls are fire-and-forget: no invocation awaits a Completion",
        ),
        HubMessage::Ping => {}
        HubMessage::Close { error, .. } => {
            return Some(Ending {
                reason: DisconnectReason::ClosedByNode { error },
                close: (CLOSE_NORMAL, "closed by the node".to_owned()),
                message: None,
            })
        }
        HubMessage::Ack { sequence_id } => match conn.replay.as_mut() {
            Some(replay) => {
                if let Err(error) = replay.ack(sequence_id) {
                    misbehaved(shared, id, conn, error);
                }
            }
            None => unexpected(shared, id, conn, name, NOT_STATEFUL),
        },
        HubMessage::Sequence { sequence_id } => match conn.replay.as_mut() {
            Some(replay) => {
                if let Err(error) = replay.sequence(sequence_id) {
                    return Some(protocol_error(
                        shared,
                        id,
                        conn,
                        error,
                        CLOSE_PROTOCOL_ERROR,
                    ));
                }
            }
            None => unexpected(shared, id, conn, name, NOT_STATEFUL),
        },
    }
    None
}

const NOT_STATEFUL: &str = "stateful reconnect is not in use on this connection";

fn on_decode_error(
    shared: &mut Shared,
    now: Instant,
    id: ConnId,
    conn: &mut Conn,
    error: DecodeError,
) -> Option<Ending> {
    if error.is_ignorable() {
        return None;
    }
    if error.is_fatal() {
        let code = match error {
            DecodeError::RecordTooLarge { .. } => CLOSE_TOO_BIG,
            _ => CLOSE_PROTOCOL_ERROR,
        };
        return Some(protocol_error(
            shared,
            id,
            conn,
            HubPeerError::Decode(error),
            code,
        ));
    }
    if conn.replay.is_some() {
        match trackable_of_error(&error) {
            // The sender numbered it: so must we, or every later id is off by one.
            Some(true) => {
                fresh(shared, now, id, conn, "undecodable");
            }
            Some(false) => {}
            // Not even its type is known: the sequence ids can no longer be trusted.
            None => {
                let error = HubPeerError::Decode(error);
                return Some(protocol_error(
                    shared,
                    id,
                    conn,
                    error,
                    CLOSE_PROTOCOL_ERROR,
                ));
            }
        }
    }
    misbehaved(shared, id, conn, HubPeerError::Decode(error));
    None
}

/// A protocol error that ends the connection: reported, then a Close message with the error
/// (once the handshake is done) and the socket closed with `code`.
fn protocol_error(
    shared: &mut Shared,
    id: ConnId,
    conn: &Conn,
    error: HubPeerError,
    code: u16,
) -> Ending {
    misbehaved(shared, id, conn, error.clone());
    let text = format!("Connection closed with an error: {error}");
    let message = (conn.state == ConnState::Open).then(|| HubMessage::Close {
        error: Some(text.clone()),
        allow_reconnect: None,
    });
    Ending {
        reason: DisconnectReason::ProtocolError(error),
        close: (code, text),
        message,
    }
}

fn answer_error(
    shared: &mut Shared,
    now: Instant,
    id: ConnId,
    conn: &mut Conn,
    invocation_id: String,
    error: String,
) {
    let message = HubMessage::Completion {
        headers: Headers::new(),
        invocation_id,
        outcome: CompletionOutcome::Error(error),
    };
    let limit = shared.config.reconnect_buffer_bytes;
    // An error Completion has no payload, and the connection is open: this cannot fail.
    let _ = shared.tx.write(now, id, conn, &message, limit);
}

fn unexpected(
    shared: &mut Shared,
    id: ConnId,
    conn: &Conn,
    message: &'static str,
    detail: &'static str,
) {
    misbehaved(
        shared,
        id,
        conn,
        HubPeerError::UnexpectedMessage { message, detail },
    );
}

fn misbehaved(shared: &mut Shared, id: ConnId, conn: &Conn, error: HubPeerError) {
    shared.events.push_back(HubServerEvent::Misbehaved {
        conn: id,
        node: conn.node.clone(),
        error,
    });
}

fn message_name(message: &HubMessage) -> &'static str {
    match message {
        HubMessage::Invocation(_) => "Invocation",
        HubMessage::StreamItem { .. } => "StreamItem",
        HubMessage::Completion { .. } => "Completion",
        HubMessage::StreamInvocation(_) => "StreamInvocation",
        HubMessage::CancelInvocation { .. } => "CancelInvocation",
        HubMessage::Ping => "Ping",
        HubMessage::Close { .. } => "Close",
        HubMessage::Ack { .. } => "Ack",
        HubMessage::Sequence { .. } => "Sequence",
    }
}
