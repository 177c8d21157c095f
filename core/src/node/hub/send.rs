//! The sending side: control and bulk queues, the result window, batching records into frames.

use std::collections::VecDeque;
use std::time::Instant;

use super::{HubEvent, HubLink, HubOutput, HubState, HubTimer, HubUsageError, Part, WsFrame};
use crate::time::saturating_add;
use crate::wire::contract::{method, NodeCall};
use crate::wire::dto::{CommandResultDto, HelloDto};
use crate::wire::signalr::{
    CompletionOutcome, Headers, HubMessage, HubProtocol, Invocation, Payload,
};

impl HubLink {
    /// Sends a fire-and-forget call: `Heartbeat`, `ScopeChanged` or `CommandProgress`. Before
    /// `Ready` it waits; it is dropped if the connection ends first.
    ///
    /// Errors (caller misuse): no connection attempt under way, `Hello` or `CommandResult`
    /// (use [`HubLink::send_result`]), or an argument that cannot be encoded.
    pub fn send_call(&mut self, now: Instant, call: NodeCall) -> Result<(), HubUsageError> {
        match &call {
            NodeCall::Hello(_) => {
                return Err(HubUsageError::WrongMethod(
                    "Hello",
                    "the link sends it after the handshake",
                ))
            }
            NodeCall::CommandResult(_) => {
                return Err(HubUsageError::WrongMethod(
                    "CommandResult",
                    "use send_result, which waits for the acknowledgment",
                ))
            }
            _ => {}
        }
        if self.state == HubState::Idle {
            return Err(HubUsageError::NotConnected);
        }
        let message = call
            .to_message(self.config.protocol, None)
            .map_err(|e| HubUsageError::Unencodable(e.0))?;
        let mut record = Vec::new();
        self.config
            .protocol
            .encode(&message, &mut record)
            .map_err(|e| HubUsageError::Unencodable(e.0))?;
        if self.state == HubState::Ready {
            self.control.push_back(record);
            self.pump(now);
        } else {
            self.deferred.push_back(record);
        }
        Ok(())
    }

    /// Queues one `CommandResult` message (a whole result or one part of a chunked one). It is
    /// sent with an invocationId once the link is ready and the window has room, and kept until
    /// the gateway's Completion: [`HubEvent::ResultAcknowledged`] or [`HubEvent::ResultRefused`].
    /// Parts queued while idle wait for the next connection. Errors only when the part cannot be
    /// encoded in the link's hub protocol.
    pub fn send_result(
        &mut self,
        now: Instant,
        part: CommandResultDto,
    ) -> Result<(), HubUsageError> {
        let argument = Payload::encode(self.config.protocol, &part)
            .map_err(|e| HubUsageError::Unencodable(e.0))?;
        let key = part.command_id.clone();
        self.bulk.push_back(
            key,
            Part {
                dto: part,
                argument,
            },
        );
        self.pump(now);
        Ok(())
    }

    /// The result parts not acknowledged, in the order they were handed over, removed from the
    /// link: after [`HubEvent::Ended`], every part sent or queued but not acknowledged. While a
    /// connection is up, only the parts not sent yet (those in flight await their Completion).
    /// Parts left here are resent, with new invocation ids, once the next connection is ready.
    pub fn take_unacknowledged(&mut self) -> Vec<CommandResultDto> {
        self.bulk.drain().into_iter().map(|part| part.dto).collect()
    }

    /// Queues `Hello` right after the handshake (always invocation id 1) and sends it.
    pub(super) fn send_hello(&mut self, now: Instant) {
        let id = self.next_invocation_id();
        self.hello_id = Some(id);
        let hello = NodeCall::Hello(HelloDto {
            node_id: self.config.node_id.clone(),
            protocol_versions: self.config.protocol_versions.clone(),
            capabilities: self.config.capabilities.clone(),
        });
        let mut record = Vec::new();
        hello
            .to_message(self.config.protocol, Some(id.to_string()))
            .and_then(|message| self.config.protocol.encode(&message, &mut record))
            .expect("a HelloDto of strings and plain numbers encodes in both hub protocols");
        self.control.push_back(record);
        self.pump(now);
    }

    /// Answers an invocation of the gateway with a Completion (held back until `Ready`).
    pub(super) fn answer(&mut self, invocation_id: String, outcome: CompletionOutcome) {
        let completion = HubMessage::Completion {
            headers: Headers::new(),
            invocation_id,
            outcome,
        };
        let mut record = Vec::new();
        // Void and error Completions carry no payload: encoding cannot fail.
        if self
            .config
            .protocol
            .encode(&completion, &mut record)
            .is_ok()
        {
            if self.state == HubState::Ready {
                self.control.push_back(record);
            } else {
                self.deferred.push_back(record);
            }
        }
    }

    pub(super) fn next_invocation_id(&mut self) -> u64 {
        self.last_invocation_id += 1;
        self.last_invocation_id
    }

    /// Sends what may go out now: control records (from the handshake on), then result parts
    /// (once `Ready`) while the window has room.
    pub(super) fn pump(&mut self, now: Instant) {
        let bulk = self.state == HubState::Ready;
        self.pump_queues(now, bulk);
    }

    /// Sends the control records only (a clean close sends its Close record and nothing else).
    pub(super) fn pump_control(&mut self, now: Instant) {
        self.pump_queues(now, false);
    }

    fn pump_queues(&mut self, now: Instant, bulk: bool) {
        if !matches!(self.state, HubState::AwaitingHello | HubState::Ready) {
            return;
        }
        let mut batch = Batch::new(self.config.protocol, self.config.max_batch_len);
        while let Some(record) = self.control.pop_front() {
            batch.push(record, &mut self.out);
        }
        while bulk && self.in_flight.len() < self.config.results_in_flight {
            let Some(Part { dto, argument }) = self.bulk.pop_front() else {
                break;
            };
            let id = self.next_invocation_id();
            let message = HubMessage::Invocation(Invocation {
                headers: Headers::new(),
                invocation_id: Some(id.to_string()),
                target: method::COMMAND_RESULT.to_owned(),
                arguments: vec![argument],
                stream_ids: Vec::new(),
            });
            let mut record = Vec::new();
            let encoded = self.config.protocol.encode(&message, &mut record);
            // Take the (possibly large) argument back instead of cloning it.
            let HubMessage::Invocation(Invocation { mut arguments, .. }) = message else {
                unreachable!("built as an Invocation just above")
            };
            let argument = arguments.pop().expect("built with exactly one argument");
            match encoded {
                Ok(()) => {
                    batch.push(record, &mut self.out);
                    self.in_flight.insert(id, Part { dto, argument });
                }
                // The argument is already in this protocol: only a MessagePack message over the
                // 2 GiB limit gets here. It can never be sent.
                Err(error) => self
                    .out
                    .push_back(HubOutput::Event(HubEvent::ResultRefused {
                        command_id: dto.command_id,
                        part_index: dto.part_index,
                        error: format!("the result cannot be sent: {error}"),
                    })),
            }
        }
        if batch.finish(&mut self.out) {
            self.timers.set(
                HubTimer::KeepAlive,
                saturating_add(now, self.config.keep_alive),
            );
        }
    }
}

/// Whole records gathered into frames of at most `max_len` bytes (a larger record alone).
struct Batch {
    protocol: HubProtocol,
    max_len: usize,
    frame: Vec<u8>,
    sent: bool,
}

impl Batch {
    fn new(protocol: HubProtocol, max_len: usize) -> Batch {
        Batch {
            protocol,
            max_len,
            frame: Vec::new(),
            sent: false,
        }
    }

    fn push(&mut self, record: Vec<u8>, out: &mut VecDeque<HubOutput>) {
        if !self.frame.is_empty() && self.frame.len() + record.len() > self.max_len {
            self.flush(out);
        }
        if self.frame.is_empty() {
            self.frame = record;
        } else {
            self.frame.extend_from_slice(&record);
        }
    }

    fn flush(&mut self, out: &mut VecDeque<HubOutput>) {
        if self.frame.is_empty() {
            return;
        }
        let bytes = std::mem::take(&mut self.frame);
        let frame = match self.protocol {
            HubProtocol::Json => WsFrame::Text(
                String::from_utf8(bytes).expect("JSON records are written as UTF-8 text"),
            ),
            HubProtocol::MessagePack => WsFrame::Binary(bytes),
        };
        out.push_back(HubOutput::Send(frame));
        self.sent = true;
    }

    /// Sends the last frame; whether anything was sent at all.
    fn finish(mut self, out: &mut VecDeque<HubOutput>) -> bool {
        self.flush(out);
        self.sent
    }
}
