//! The application's calls (dispatch, approve, reject, cancel, status) and how commands end.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::Execute;
use super::{
    CancelOutcome, Command, CommandOutcome, CommandStatus, DispatchError, DispatchOutput,
    DispatchRecord, DispatchRequest, Dispatcher, Ix, Stage, Transport,
};
use crate::gateway::dispatch::records::CommandRecord;
use crate::rng::{uuid_text, Rng};
use crate::time::saturating_add;
use crate::wire::contract::GatewayCall;
use crate::wire::dto::ExecuteCommandDto;
use crate::wire::dto::{CancelCommandDto, CommandError, CommandResultDto, ErrorCode};

impl Dispatcher {
    /// Creates a command for `request.node` and returns its id (a UUID v4 from `rng`).
    ///
    /// Refused at once, creating nothing: an unregistered node ([`DispatchError::UnknownNode`]),
    /// a zero timeout or one above `max_timeout` ([`DispatchError::InvalidTimeout`]), a
    /// `required_scope` the node's effective scopes do not allow
    /// ([`DispatchError::NotAuthorized`]), a node with `max_queued_per_node` commands waiting
    /// ([`DispatchError::QueueFull`]). Otherwise the command awaits approval (critical) or is
    /// queued and goes out as soon as its node can take it; its deadline is `now` plus the
    /// timeout.
    pub fn dispatch(
        &mut self,
        now: Instant,
        rng: &mut Rng,
        request: DispatchRequest,
    ) -> Result<String, DispatchError> {
        self.started = true;
        let Some(nix) = self.node_ix(&request.node) else {
            return Err(DispatchError::UnknownNode { node: request.node });
        };
        let entry = &self.nodes[nix];
        let timeout = request.timeout.unwrap_or(self.config.default_timeout);
        if timeout.is_zero() || timeout > self.config.max_timeout {
            return Err(DispatchError::InvalidTimeout {
                timeout,
                max: self.config.max_timeout,
            });
        }
        if let Some(scope) = &request.required_scope {
            if !entry.scopes.allows(scope) {
                return Err(DispatchError::NotAuthorized {
                    node: request.node,
                    scope: scope.clone(),
                });
            }
        }
        if entry.waiting() >= self.config.max_queued_per_node {
            return Err(DispatchError::QueueFull {
                node: request.node,
                limit: self.config.max_queued_per_node,
            });
        }
        let node = Arc::clone(&entry.name);
        let ix = self.commands.vacant();
        // Keyed by its value: the text is written once and never parsed back.
        let text = loop {
            let value = rng.uuid_v4_value();
            if self.ids.insert_new_uuid(value, ix) {
                break uuid_text(value);
            }
        };
        let id: Arc<str> = Arc::from(text.as_str());
        let key = self.next_key;
        self.next_key += 1;
        let deadline = saturating_add(now, timeout);
        let DispatchRequest {
            node: node_name,
            command,
            params,
            originated_by,
            critical,
            required_scope,
            ..
        } = request;
        // The command keeps the record it persists: no copy of its name or params.
        let record = Arc::new(CommandRecord {
            command_id: Arc::clone(&id),
            node: node_name,
            command,
            params,
            timeout_ms: u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX),
            created_at_ms: self.unix_ms(now),
            originated_by,
            critical,
            required_scope,
        });
        self.persist(DispatchRecord::Created(Arc::clone(&record)));
        let inserted = self.commands.insert(Command {
            key,
            id: id.clone(),
            node,
            node_ix: Some(nix),
            record,
            timeout,
            created: now,
            deadline,
            stage: Stage::AwaitingApproval,
            cancel: None,
            reassembler: None,
            part_digests: Default::default(),
            timer: None,
            forget_at: None,
        });
        debug_assert_eq!(inserted, ix);
        if critical {
            self.arm(ix, deadline);
            self.nodes[nix].awaiting.insert(key, ix);
        } else if !self.send_at_once(now, nix, ix) {
            self.arm(ix, deadline);
            self.enqueue_back(ix);
            self.pump(now, nix);
        }
        if !matches!(self.commands[ix].stage, Stage::InFlight { .. }) {
            self.status_changed(ix);
        }
        Ok(text)
    }

    /// An operator approves a critical command: it is queued (its deadline still runs from its
    /// dispatch).
    pub fn approve(&mut self, now: Instant, command_id: &str) -> Result<(), DispatchError> {
        self.started = true;
        let ix = self.awaiting_ix(command_id)?;
        let command = &self.commands[ix];
        let (key, nix) = (command.key, command.node_ix);
        if let Some(entry) = nix.and_then(|nix| self.nodes.get_mut(nix)) {
            entry.awaiting.remove(&key);
        }
        self.persist(DispatchRecord::Approved {
            command_id: command_id.to_owned(),
        });
        self.enqueue_back(ix);
        if let Some(nix) = nix {
            self.pump(now, nix);
        }
        if matches!(self.commands[ix].stage, Stage::Queued(_)) {
            self.status_changed(ix);
        }
        Ok(())
    }

    /// An operator rejects a critical command: it ends `approval_rejected` (the message repeats
    /// `reason`, when given).
    pub fn reject(
        &mut self,
        now: Instant,
        command_id: &str,
        reason: Option<&str>,
    ) -> Result<(), DispatchError> {
        self.started = true;
        let ix = self.awaiting_ix(command_id)?;
        let message = match reason {
            Some(reason) => format!("rejected by an operator: {reason}"),
            None => "rejected by an operator".to_owned(),
        };
        self.finish_synthesized(now, ix, ErrorCode::ApprovalRejected, message);
        Ok(())
    }

    /// Cancels a command. One that is not running on a live hub connection (awaiting approval,
    /// queued, leased to a polling node, or sent on a connection that has ended) ends `cancelled`
    /// at once. One sent on the node's live hub connection gets a `CancelCommand` and ends when
    /// the node answers (`cancelled`, or its real result if it finished first), or `cancelled`
    /// after `cancel_wait` (never later than its deadline plus `result_grace`). Cancelling a
    /// command whose cancellation is pending again does nothing.
    pub fn cancel(
        &mut self,
        now: Instant,
        command_id: &str,
        reason: Option<&str>,
    ) -> Result<CancelOutcome, DispatchError> {
        self.started = true;
        let ix = self.live_ix(command_id)?;
        let command = &self.commands[ix];
        if command.cancel.is_some() {
            return Ok(CancelOutcome::Requested);
        }
        let entry = command.node_ix.and_then(|nix| self.nodes.get(nix));
        let conn = match (&command.stage, entry) {
            (Stage::InFlight { .. }, Some(entry)) => match &entry.attached {
                Some(Transport::Hub { conn, .. }) => Some(*conn),
                _ => None,
            },
            _ => None,
        };
        let Some(conn) = conn else {
            let message = match reason {
                Some(reason) => format!("cancelled: {reason}"),
                None => "cancelled".to_owned(),
            };
            self.finish_synthesized(now, ix, ErrorCode::Cancelled, message);
            return Ok(CancelOutcome::Cancelled);
        };
        let node = Arc::clone(&command.node);
        let until = command_grace_deadline(command, self.config.result_grace)
            .min(saturating_add(now, self.config.cancel_wait));
        self.commands[ix].cancel = Some(now);
        self.arm(ix, until);
        self.persist(DispatchRecord::CancelRequested {
            command_id: command_id.to_owned(),
        });
        self.emit(DispatchOutput::Send {
            node,
            conn,
            call: Box::new(GatewayCall::CancelCommand(CancelCommandDto {
                command_id: command_id.to_owned(),
                reason: reason.map(str::to_owned),
            })),
        });
        self.status_changed(ix);
        Ok(CancelOutcome::Requested)
    }

    /// Where the command stands; `None` for an unknown (or forgotten) command.
    pub fn status(&self, command_id: &str) -> Option<CommandStatus> {
        let ix = self.ids.get(command_id)?;
        Some(self.status_of(ix))
    }

    fn status_of(&self, ix: Ix) -> CommandStatus {
        let command = &self.commands[ix];
        match &command.stage {
            Stage::AwaitingApproval => CommandStatus::AwaitingApproval,
            Stage::Queued(pos) => {
                let entry = command.node_ix.and_then(|nix| self.nodes.get(nix));
                let position = entry.map_or(0, |entry| match entry.queue.last_key_value() {
                    Some((last, _)) if last == pos => entry.queue.len() - 1,
                    _ => entry.queue.range(..*pos).count(),
                });
                CommandStatus::Queued { position }
            }
            Stage::InFlight { at, progress, .. } => match (command.cancel, progress) {
                (Some(since), _) => CommandStatus::Cancelling { since },
                (None, Some(progress)) => CommandStatus::Running {
                    progress: progress.clone(),
                },
                (None, None) => CommandStatus::Dispatched { at: *at },
            },
            Stage::Finished(outcome) => CommandStatus::Finished(outcome.clone()),
        }
    }

    pub(super) fn status_changed(&mut self, ix: Ix) {
        if !self.config.emit_status {
            return;
        }
        let status = self.status_of(ix);
        let command_id = self.commands[ix].id.clone();
        self.emit(DispatchOutput::Status { command_id, status });
    }

    fn awaiting_ix(&self, command_id: &str) -> Result<Ix, DispatchError> {
        let ix = self.live_ix(command_id)?;
        if !matches!(self.commands[ix].stage, Stage::AwaitingApproval) {
            return Err(DispatchError::NotAwaitingApproval {
                command_id: command_id.to_owned(),
            });
        }
        Ok(ix)
    }

    fn live_ix(&self, command_id: &str) -> Result<Ix, DispatchError> {
        let Some(ix) = self.ids.get(command_id) else {
            return Err(DispatchError::UnknownCommand {
                command_id: command_id.to_owned(),
            });
        };
        if matches!(self.commands[ix].stage, Stage::Finished(_)) {
            return Err(DispatchError::AlreadyFinished {
                command_id: command_id.to_owned(),
            });
        }
        Ok(ix)
    }

    /// The deadline timer fired: the command ends `timeout`, or `cancelled` when its
    /// cancellation was pending.
    pub(super) fn deadline_passed(&mut self, now: Instant, ix: Ix) {
        let Some(command) = self.commands.get(ix) else {
            return;
        };
        let ms = command.timeout.as_millis();
        let (code, message) = match (&command.stage, command.cancel) {
            (Stage::Finished(_), _) => return,
            (_, Some(_)) => (
                ErrorCode::Cancelled,
                "cancelled; the node did not confirm in time".to_owned(),
            ),
            (Stage::AwaitingApproval, None) => (
                ErrorCode::Timeout,
                format!("not approved within the timeout of {ms} ms"),
            ),
            (Stage::Queued(_), None) => (
                ErrorCode::Timeout,
                format!("not dispatched within the timeout of {ms} ms"),
            ),
            (Stage::InFlight { .. }, None) => (
                ErrorCode::Timeout,
                format!("no result within the timeout of {ms} ms"),
            ),
        };
        self.finish_synthesized(now, ix, code, message);
    }

    /// Ends the command with a result the gateway writes.
    pub(super) fn finish_synthesized(
        &mut self,
        now: Instant,
        ix: Ix,
        code: ErrorCode,
        message: String,
    ) {
        let Some(command) = self.commands.get(ix) else {
            return;
        };
        let elapsed = now.saturating_duration_since(command.created);
        let result = CommandResultDto {
            command_id: String::from(&*command.id),
            ok: false,
            result: None,
            error: Some(CommandError {
                code,
                message,
                details: None,
                retry_after_ms: None,
            }),
            duration_ms: Some(u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX)),
            part_index: None,
            is_last: None,
            protocol_version: None,
        };
        self.finish(now, ix, result, true);
    }

    /// Ends the command with `result`: exactly once. A command that was with its node frees a
    /// slot, and the node's queue moves.
    pub(super) fn finish(
        &mut self,
        now: Instant,
        ix: Ix,
        result: CommandResultDto,
        synthesized: bool,
    ) {
        let Some(command) = self.commands.get(ix) else {
            return;
        };
        let was_in_flight = match command.stage {
            Stage::Finished(_) => return,
            Stage::InFlight { .. } => true,
            _ => false,
        };
        self.detach_command(ix);
        self.disarm(ix);
        let finished_at_ms = self.unix_ms(now);
        let command = &mut self.commands[ix];
        let nix = command.node_ix.take();
        drop_params(command);
        command.reassembler = None;
        command.cancel = None;
        if synthesized {
            command.part_digests.clear();
        }
        let outcome = CommandOutcome {
            result: Arc::new(result),
            finished_at: now,
            synthesized,
        };
        command.stage = Stage::Finished(outcome.clone());
        let record = DispatchRecord::Finished {
            command_id: Arc::clone(&command.id),
            result: Arc::clone(&outcome.result),
            finished_at_ms,
            synthesized,
            part_digests: command.part_digests.values().copied().collect(),
        };
        let output = DispatchOutput::Finished {
            command_id: Arc::clone(&command.id),
            node: Arc::clone(&command.node),
            outcome,
        };
        self.persist(record);
        self.emit(output);
        self.remember(ix, now);
        if let (true, Some(nix)) = (was_in_flight, nix) {
            self.pump(now, nix);
        }
    }

    /// Keeps a finished outcome for `finished_memory` (from `finished_at`), and at most
    /// `finished_max` of them.
    pub(super) fn remember(&mut self, ix: Ix, finished_at: Instant) {
        let at = saturating_add(finished_at, self.config.finished_memory);
        let command = &mut self.commands[ix];
        let key = command.key;
        if let Some(previous) = command.forget_at.replace(at) {
            self.forgets.remove((previous, key, ix));
        }
        self.forgets.insert((at, key, ix));
        while self.forgets.len() > self.config.finished_max {
            let Some((_, _, oldest)) = self.forgets.pop_first() else {
                break;
            };
            self.commands[oldest].forget_at = None;
            self.forget(oldest);
        }
    }

    pub(super) fn forget(&mut self, ix: Ix) {
        if let Some(command) = self.remove_command(ix) {
            self.persist(DispatchRecord::Forgotten {
                command_id: command.id,
            });
        }
    }

    /// Removes the command from its node's tables (its stage is left as it was).
    pub(super) fn detach_command(&mut self, ix: Ix) {
        let Some(command) = self.commands.get(ix) else {
            return;
        };
        let Some(entry) = command.node_ix.and_then(|nix| self.nodes.get_mut(nix)) else {
            return;
        };
        match &command.stage {
            Stage::AwaitingApproval => {
                entry.awaiting.remove(&command.key);
            }
            Stage::Queued(pos) => {
                entry.queue.remove(pos);
            }
            Stage::InFlight { seq, .. } => {
                entry.in_flight.remove(seq);
            }
            Stage::Finished(_) => {}
        }
    }

    /// Queues a detached command at the back of its node's queue.
    pub(super) fn enqueue_back(&mut self, ix: Ix) {
        self.enqueue(ix, false);
    }

    /// Queues a detached command at the head of its node's queue (busy, lease ended).
    pub(super) fn enqueue_front(&mut self, ix: Ix) {
        self.enqueue(ix, true);
    }

    fn enqueue(&mut self, ix: Ix, front: bool) {
        let Some(command) = self.commands.get_mut(ix) else {
            return;
        };
        let Some(entry) = command.node_ix.and_then(|nix| self.nodes.get_mut(nix)) else {
            return;
        };
        let pos = if front {
            entry.queue.first_key_value().map_or(0, |(pos, _)| pos - 1)
        } else {
            entry.queue.last_key_value().map_or(0, |(pos, _)| pos + 1)
        };
        entry.queue.insert(pos, ix);
        command.stage = Stage::Queued(pos);
        let deadline = command.deadline;
        self.arm(ix, deadline);
    }

    /// The `ExecuteCommand` of a command, with the time left to its deadline as `timeoutMs`
    /// (rounded up to whole milliseconds).
    pub(super) fn execute_dto(
        command: &Command,
        now: Instant,
        protocol_version: Option<&str>,
    ) -> ExecuteCommandDto {
        Self::execute(command, now, protocol_version.map(Arc::from)).to_dto()
    }

    /// [`Dispatcher::execute_dto`] as shared parts, for a hub connection that writes it.
    pub(super) fn execute(
        command: &Command,
        now: Instant,
        protocol_version: Option<Arc<str>>,
    ) -> Execute {
        let left = command.deadline.saturating_duration_since(now);
        let ms = left.as_nanos().div_ceil(1_000_000);
        Execute {
            record: Arc::clone(&command.record),
            timeout_ms: u64::try_from(ms).unwrap_or(u64::MAX),
            protocol_version,
        }
    }
}

/// Frees a finished command's params, unless its `Created` record is still held elsewhere.
pub(super) fn drop_params(command: &mut Command) {
    if command.record.params.is_some() {
        if let Some(record) = Arc::get_mut(&mut command.record) {
            record.params = None;
        }
    }
}

/// When a command with its node ends `timeout` unless the node answers: its deadline plus the
/// grace.
pub(super) fn command_grace_deadline(command: &Command, grace: Duration) -> Instant {
    saturating_add(command.deadline, grace)
}
