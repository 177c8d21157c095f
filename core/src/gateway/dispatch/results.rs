//! What nodes send about commands: results (whole or in parts) and progress.

use std::time::{Duration, Instant};

use super::{
    digest, DispatchEvent, DispatchRecord, Dispatcher, Ix, PeerInput, Refusal, ResultAck, Stage,
};
use crate::chunk::Reassembler;
use crate::time::saturating_add;
use crate::wire::dto::{CommandProgressDto, CommandResultDto, ErrorCode};

impl Dispatcher {
    /// A `CommandResult` (or one part of a chunked one) from `node`, over the hub or REST.
    ///
    /// - No such command (never created, or forgotten), another node's, or one never handed to
    ///   a node (awaiting approval): an event, and [`Refusal::NotFound`].
    /// - A command that has ended: a repeat of the result that ended it (the same message, or
    ///   the same part) is acknowledged again; anything else is an event and
    ///   [`Refusal::Ended`] (the gateway ended it: timeout, cancel, ...) or
    ///   [`Refusal::Different`].
    /// - Otherwise the message is recorded and acknowledged: a part is buffered (a repeat of a
    ///   buffered part is acknowledged and ignored); the whole result ends the command, except
    ///   `busy`, which puts it back at the head of the queue and pauses the node for
    ///   `retryAfterMs` (`busy_retry_default` when absent). A part that breaks
    ///   docs/protocol.md 6.3 ends the command `internal_error`, with an event and
    ///   [`Refusal::Rejected`].
    ///
    /// Every record the call queues must be stored before the acknowledgment is sent.
    pub fn result(&mut self, now: Instant, node: &str, part: CommandResultDto) -> ResultAck {
        self.started = true;
        let Some(ix) = self.check_peer(node, &part.command_id, PeerInput::Result) else {
            return ResultAck::Refuse(Refusal::NotFound);
        };
        let command = &self.commands[ix];
        match &command.stage {
            Stage::Finished(outcome) => {
                let repeat = !outcome.synthesized
                    && match part.part_index {
                        None if part.is_last.is_none() => *outcome.result == part,
                        None => false,
                        Some(index) => command.part_digests.get(&index) == Some(&digest(&part)),
                    };
                if repeat {
                    return ResultAck::Ack;
                }
                let refusal = match &outcome.synthesized {
                    true => Refusal::Ended(
                        outcome
                            .result
                            .error
                            .as_ref()
                            .map_or(ErrorCode::InternalError, |e| e.code.clone()),
                    ),
                    false => Refusal::Different,
                };
                self.event(DispatchEvent::AfterEnd {
                    node: node.to_owned(),
                    command_id: part.command_id,
                    input: PeerInput::Result,
                });
                ResultAck::Refuse(refusal)
            }
            Stage::AwaitingApproval => {
                self.event(DispatchEvent::NotDispatched {
                    node: node.to_owned(),
                    command_id: part.command_id,
                    input: PeerInput::Result,
                });
                ResultAck::Refuse(Refusal::NotFound)
            }
            Stage::Queued(_) | Stage::InFlight { .. } => {
                self.accept_result(now, node, ix, part, true)
            }
        }
    }

    /// A `CommandProgress` from `node`: the command is `Running` with it. Progress for an
    /// unknown command, another node's, or one that has ended is an event and is dropped;
    /// progress for a command that is not with the node (queued again) is dropped silently.
    pub fn progress(&mut self, now: Instant, node: &str, progress: CommandProgressDto) {
        let _ = now;
        self.started = true;
        let Some(ix) = self.check_peer(node, &progress.command_id, PeerInput::Progress) else {
            return;
        };
        let command = &mut self.commands[ix];
        match &mut command.stage {
            Stage::InFlight { progress: slot, .. } => {
                *slot = Some(progress);
                self.status_changed(ix);
            }
            Stage::Finished(_) => self.event(DispatchEvent::AfterEnd {
                node: node.to_owned(),
                command_id: progress.command_id,
                input: PeerInput::Progress,
            }),
            Stage::AwaitingApproval => self.event(DispatchEvent::NotDispatched {
                node: node.to_owned(),
                command_id: progress.command_id,
                input: PeerInput::Progress,
            }),
            Stage::Queued(_) => {}
        }
    }

    /// The command's slot, if it exists and belongs to `node`; otherwise an event.
    fn check_peer(&mut self, node: &str, command_id: &str, input: PeerInput) -> Option<Ix> {
        let Some(ix) = self.ids.get(command_id) else {
            self.event(DispatchEvent::UnknownCommand {
                node: node.to_owned(),
                command_id: command_id.to_owned(),
                input,
            });
            return None;
        };
        let owner = &self.commands[ix].node;
        if **owner != *node {
            let owner = String::from(&**owner);
            self.event(DispatchEvent::WrongNode {
                node: node.to_owned(),
                command_id: command_id.to_owned(),
                owner,
                input,
            });
            return None;
        }
        Some(ix)
    }

    /// Records a result message of a live command (`persist`: emit the `Part` record; restore
    /// replays parts without it).
    pub(super) fn accept_result(
        &mut self,
        now: Instant,
        node: &str,
        ix: Ix,
        part: CommandResultDto,
        persist: bool,
    ) -> ResultAck {
        let limits = self.config.reassembly;
        let command = &mut self.commands[ix];
        let whole =
            if part.part_index.is_none() && part.is_last.is_none() && command.reassembler.is_none()
            {
                part
            } else {
                let reassembler = command.reassembler.get_or_insert_with(|| {
                    Box::new(Reassembler::new(String::from(&*command.id), limits))
                });
                let before = reassembler.buffered_parts();
                let index = part.part_index;
                let fingerprint = index.map(|_| digest(&part));
                let record = persist.then(|| part.clone());
                match reassembler.push(part) {
                    Ok(None) => {
                        if reassembler.buffered_parts() > before {
                            if let (Some(index), Some(fingerprint)) = (index, fingerprint) {
                                command.part_digests.insert(index, fingerprint);
                            }
                            if let Some(part) = record {
                                let command_id = String::from(&*command.id);
                                self.persist(DispatchRecord::Part {
                                    command_id,
                                    part: Box::new(part),
                                });
                            }
                        }
                        return ResultAck::Ack;
                    }
                    Ok(Some(whole)) => {
                        if let (Some(index), Some(fingerprint)) = (index, fingerprint) {
                            command.part_digests.insert(index, fingerprint);
                        }
                        whole
                    }
                    Err(error) => {
                        let command_id = String::from(&*command.id);
                        self.event(DispatchEvent::ResultRejected {
                            node: node.to_owned(),
                            command_id,
                            error: error.clone(),
                        });
                        let message = format!("the result was rejected: {error}");
                        self.finish_synthesized(now, ix, ErrorCode::InternalError, message);
                        return ResultAck::Refuse(Refusal::Rejected(error));
                    }
                }
            };
        let busy = !whole.ok
            && whole
                .error
                .as_ref()
                .is_some_and(|e| e.code == ErrorCode::Busy);
        if !busy {
            self.finish(now, ix, whole, false);
            return ResultAck::Ack;
        }
        if command.cancel.is_some() {
            let message = "cancelled before the node ran it".to_owned();
            self.finish_synthesized(now, ix, ErrorCode::Cancelled, message);
            return ResultAck::Ack;
        }
        // busy: back to the head of the queue, and the node pauses.
        command.reassembler = None;
        command.part_digests.clear();
        let retry = whole
            .error
            .as_ref()
            .and_then(|e| e.retry_after_ms)
            .map_or(self.config.busy_retry_default, Duration::from_millis);
        if matches!(command.stage, Stage::InFlight { .. }) {
            self.detach_command(ix);
            self.enqueue_front(ix);
        }
        self.pause(node, saturating_add(now, retry));
        debug_assert!(self.commands[ix].timer.is_some());
        self.status_changed(ix);
        ResultAck::Ack
    }
}
