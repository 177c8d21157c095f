//! The receiving side: frames to records, records to messages, messages to events and answers.

use std::time::Instant;

use super::{
    HubEvent, HubLink, HubOutput, HubState, LinkEnd, PeerError, WsFrame, CLOSE_NORMAL,
    CLOSE_PROTOCOL_ERROR, CLOSE_TOO_BIG,
};
use crate::wire::contract::{
    interpret_hello_completion, method, ContractError, GatewayCall, HelloOutcome,
    LEGACY_PROTOCOL_VERSION,
};
use crate::wire::signalr::handshake::HandshakeResponse;
use crate::wire::signalr::json::{self, TypedCall};
use crate::wire::signalr::{msgpack, CompletionOutcome, DecodeError, HubMessage, HubProtocol};

/// One step of decoding the buffered bytes, owned so that the decoder's borrow ends.
enum Item {
    /// No whole record buffered.
    NeedMore,
    Handshake(Result<HandshakeResponse, DecodeError>),
    /// An invocation decoded by the JSON fast path.
    Call(TypedCall<GatewayCall>),
    Message(HubMessage),
    Error(DecodeError),
}

impl HubLink {
    /// One WebSocket message from the gateway (Text or Binary: the bytes are what count; records
    /// split across messages are reassembled). Ignored when no socket is open.
    pub fn handle_frame(&mut self, now: Instant, frame: WsFrame) {
        if !self.socket_open() {
            return;
        }
        self.received(now);
        match &frame {
            WsFrame::Text(text) => self.decoder.push(text.as_bytes()),
            WsFrame::Binary(bytes) => self.decoder.push(bytes),
            // WebSocket control frames prove the peer alive; they carry no records.
            WsFrame::Ping(_) | WsFrame::Pong(_) => return,
        }
        // Stop as soon as the link ends: the rest of the frame belongs to a dead connection.
        while self.socket_open() {
            match self.next_item() {
                Item::NeedMore => break,
                Item::Handshake(response) => self.on_handshake(now, response),
                Item::Call(TypedCall {
                    invocation_id,
                    call,
                }) => self.on_call(invocation_id, call),
                Item::Message(message) => self.on_message(now, message),
                Item::Error(error) => self.on_decode_error(now, error),
            }
        }
        self.pump(now);
    }

    fn socket_open(&self) -> bool {
        matches!(
            self.state,
            HubState::Handshaking | HubState::AwaitingHello | HubState::Ready
        )
    }

    fn next_item(&mut self) -> Item {
        let protocol = self.decoder.protocol();
        let record = match self.decoder.next_record() {
            Err(error) => return Item::Error(error),
            Ok(None) => return Item::NeedMore,
            Ok(Some(record)) => record,
        };
        let decoded = match protocol {
            None => return Item::Handshake(HandshakeResponse::decode(record)),
            Some(HubProtocol::Json) => {
                if let Some(call) = json::decode_invocation::<GatewayCall>(record) {
                    return Item::Call(call);
                }
                json::decode_record(record)
            }
            Some(HubProtocol::MessagePack) => msgpack::decode_body(record),
        };
        match decoded {
            Ok(message) => Item::Message(message),
            Err(error) => Item::Error(error),
        }
    }

    fn on_handshake(&mut self, now: Instant, response: Result<HandshakeResponse, DecodeError>) {
        match response {
            Ok(HandshakeResponse::Accepted) => self.handshake_accepted(now),
            Ok(HandshakeResponse::Rejected(error)) => self.end(
                now,
                LinkEnd::HandshakeRejected(error),
                Some((CLOSE_NORMAL, "handshake rejected".to_owned())),
            ),
            Err(error) => self.end(
                now,
                LinkEnd::ProtocolError(PeerError::Decode(error)),
                Some((
                    CLOSE_PROTOCOL_ERROR,
                    "invalid handshake response".to_owned(),
                )),
            ),
        }
    }

    fn on_decode_error(&mut self, now: Instant, error: DecodeError) {
        if error.is_ignorable() {
            return;
        }
        if error.is_fatal() {
            let code = match error {
                DecodeError::RecordTooLarge { .. } => CLOSE_TOO_BIG,
                _ => CLOSE_PROTOCOL_ERROR,
            };
            let reason = error.to_string();
            self.end(
                now,
                LinkEnd::ProtocolError(PeerError::Decode(error)),
                Some((code, reason)),
            );
            return;
        }
        self.misbehaved(PeerError::Decode(error));
    }

    fn on_message(&mut self, now: Instant, message: HubMessage) {
        match message {
            HubMessage::Invocation(invocation) => match GatewayCall::from_invocation(&invocation) {
                Ok(call) => self.on_call(invocation.invocation_id, call),
                Err(error) => {
                    let reply = match &error {
                        ContractError::UnknownTarget { target } => {
                            format!("Unknown hub method '{target}'")
                        }
                        other => other.to_string(),
                    };
                    self.misbehaved(PeerError::Contract(error));
                    if let Some(id) = invocation.invocation_id {
                        self.answer(id, CompletionOutcome::Error(reply));
                    }
                    // A revocation must not be lost to a format quibble (docs/protocol.md 5.6).
                    if invocation
                        .target
                        .eq_ignore_ascii_case(method::REVOKE_ACCESS)
                    {
                        let reason = String::new();
                        self.on_call(None, GatewayCall::RevokeAccess { reason });
                    }
                }
            },
            HubMessage::Completion {
                invocation_id,
                outcome,
                ..
            } => self.on_completion(now, invocation_id, outcome),
            HubMessage::Ping => {}
            HubMessage::Close {
                error,
                allow_reconnect,
            } => self.end(
                now,
                LinkEnd::ClosedByGateway {
                    error,
                    allow_reconnect: allow_reconnect == Some(true),
                },
                Some((CLOSE_NORMAL, "closed by the gateway".to_owned())),
            ),
            HubMessage::StreamInvocation(invocation) => {
                self.misbehaved(PeerError::UnexpectedMessage {
                    message: "StreamInvocation",
                    detail: "the node contract has no streaming methods",
                });
                if let Some(id) = invocation.invocation_id {
                    let error = format!(
                        "Streaming hub method '{}' is not supported",
                        invocation.target
                    );
                    self.answer(id, CompletionOutcome::Error(error));
                }
            }
            HubMessage::StreamItem { .. } => self.misbehaved(PeerError::UnexpectedMessage {
                message: "StreamItem",
                detail: "the node contract uses no streams",
            }),
            HubMessage::CancelInvocation { .. } => self.misbehaved(PeerError::UnexpectedMessage {
                message: "CancelInvocation",
                detail: "the node contract uses no streams",
            }),
            HubMessage::Ack { .. } => self.misbehaved(PeerError::UnexpectedMessage {
                message: "Ack",
                detail: "stateful reconnect is not used (hub protocol version 1)",
            }),
            HubMessage::Sequence { .. } => self.misbehaved(PeerError::UnexpectedMessage {
                message: "Sequence",
                detail: "stateful reconnect is not used (hub protocol version 1)",
            }),
        }
    }

    /// A gateway call. Gateway calls are fire-and-forget; one that carries an invocationId anyway
    /// gets a void Completion, so that a gateway waiting on it does not hang. Calls received
    /// before `Ready` are reported right after it, except `RevokeAccess`, reported at once.
    fn on_call(&mut self, invocation_id: Option<String>, call: GatewayCall) {
        if let Some(id) = invocation_id {
            self.answer(id, CompletionOutcome::Void);
        }
        if self.state == HubState::Ready || matches!(call, GatewayCall::RevokeAccess { .. }) {
            self.out.push_back(HubOutput::Event(HubEvent::Call(call)));
        } else {
            self.early_calls.push(call);
        }
    }

    fn on_completion(&mut self, now: Instant, invocation_id: String, outcome: CompletionOutcome) {
        let id = parse_invocation_id(&invocation_id);
        if id.is_some() && id == self.hello_id {
            self.hello_id = None;
            return self.on_hello_completion(now, &outcome);
        }
        let Some(part) = id.and_then(|id| self.in_flight.remove(&id)) else {
            return self.misbehaved(PeerError::UnknownCompletion { invocation_id });
        };
        let command_id = part.dto.command_id;
        let part_index = part.dto.part_index;
        let event = match outcome {
            CompletionOutcome::Error(error) => HubEvent::ResultRefused {
                command_id,
                part_index,
                error,
            },
            // A hub method that returns a value acknowledges just as well as a void one.
            CompletionOutcome::Void | CompletionOutcome::Result(_) => {
                HubEvent::ResultAcknowledged {
                    command_id,
                    part_index,
                }
            }
        };
        self.out.push_back(HubOutput::Event(event));
    }

    fn on_hello_completion(&mut self, now: Instant, outcome: &CompletionOutcome) {
        match interpret_hello_completion(outcome, &self.config.protocol_versions) {
            Ok(HelloOutcome::Negotiated(version)) => self.become_ready(version, true),
            Ok(HelloOutcome::Legacy) => {
                self.become_ready(LEGACY_PROTOCOL_VERSION.to_owned(), false)
            }
            Ok(HelloOutcome::NoSharedVersion { detail }) => self.end(
                now,
                LinkEnd::NoSharedVersion { detail },
                Some((CLOSE_NORMAL, "no shared protocol version".to_owned())),
            ),
            Err(error) => self.end(
                now,
                LinkEnd::ProtocolError(PeerError::InvalidHelloResult(error)),
                Some((CLOSE_PROTOCOL_ERROR, "invalid Hello completion".to_owned())),
            ),
        }
    }

    fn misbehaved(&mut self, error: PeerError) {
        self.out
            .push_back(HubOutput::Event(HubEvent::PeerMisbehaved(error)));
    }
}

/// Our invocation ids are decimal counters; anything else (`"01"`, `"x"`) matches none of them.
fn parse_invocation_id(id: &str) -> Option<u64> {
    id.parse::<u64>().ok().filter(|n| n.to_string() == id)
}
