//! Answering: leaving the live set (timers, slot, group, the executor's Cancel), remembering the
//! result, starting a group's next command, and stopping everything.

use std::sync::Arc;
use std::time::Instant;

use super::types::{error_result, millis};
use super::{CancelReason, CommandAction, CommandTable, Live, Stage, Timer};
use crate::wire::dto::{CommandResultDto, ErrorCode};

impl CommandTable {
    /// Answers the live command `id` with `result`: stops its executor with `cancel` (when it is
    /// executing and `cancel` is set), frees its slot and its group, remembers the result.
    pub(super) fn conclude(
        &mut self,
        now: Instant,
        id: &str,
        result: CommandResultDto,
        cancel: Option<CancelReason>,
    ) {
        let Some(live) = self.live.remove(id) else {
            return;
        };
        self.release(id, &live, cancel);
        self.emit_result(now, result);
        if let Some(key) = live.group {
            let Some(group) = self.groups.get_mut(&key) else {
                return;
            };
            if group.running.as_deref() == Some(id) {
                group.running = None;
                self.advance_group(now, &key);
            } else {
                group.queue.retain(|queued| queued != id);
                if group.running.is_none() && group.queue.is_empty() {
                    self.groups.remove(&key);
                }
            }
        }
    }

    /// Removes the timers and the slot of a command leaving the live set.
    pub(super) fn release(&mut self, id: &str, live: &Live, cancel: Option<CancelReason>) {
        self.timers.remove(&Timer::Deadline(id.to_owned()));
        if let Stage::Executing(gate) = &live.stage {
            if gate.pending.is_some() {
                self.timers.remove(&Timer::Progress(id.to_owned()));
            }
            self.executing -= 1;
            if let Some(reason) = cancel {
                self.actions.push_back(CommandAction::Cancel {
                    command_id: id.to_owned(),
                    reason,
                });
                self.memory.abandon(id);
            }
        }
    }

    pub(super) fn emit_result(&mut self, now: Instant, result: CommandResultDto) {
        let result = Arc::new(result);
        // `busy` from an executor means "not done, ask again later", like a refusal at
        // admission: it is not remembered, so the gateway's retry with the same commandId runs
        // the command instead of getting `busy` back forever.
        let busy = result
            .error
            .as_ref()
            .is_some_and(|e| e.code == ErrorCode::Busy);
        if !busy {
            self.memory.remember(now, Arc::clone(&result));
        }
        self.actions.push_back(CommandAction::Result(result));
    }

    /// Starts the next command of the idle group `key`, timing out the queued ones whose deadline
    /// has passed; removes the group when it is empty.
    pub(super) fn advance_group(&mut self, now: Instant, key: &str) {
        loop {
            let Some(group) = self.groups.get_mut(key) else {
                return;
            };
            let Some(next) = group.queue.pop_front() else {
                self.groups.remove(key);
                return;
            };
            let Some(live) = self.live.get(&next) else {
                continue; // invariant: queued ids are live; skip one that is not
            };
            if live.deadline <= now {
                let result = timeout_result(&next, live, now);
                if let Some(live) = self.live.remove(&next) {
                    self.release(&next, &live, None);
                }
                self.emit_result(now, result);
                continue;
            }
            group.running = Some(next.clone());
            self.start(&next);
            return;
        }
    }

    pub(super) fn stop_all(&mut self, now: Instant, answer: bool) {
        if self.closed {
            return;
        }
        self.closed = true;
        let live = std::mem::take(&mut self.live);
        for (id, command) in live {
            if let Stage::Executing(_) = command.stage {
                self.actions.push_back(CommandAction::Cancel {
                    command_id: id.clone(),
                    reason: CancelReason::Shutdown,
                });
                self.memory.abandon(&id);
            }
            if answer {
                self.actions
                    .push_back(CommandAction::Result(Arc::new(error_result(
                        &id,
                        ErrorCode::Cancelled,
                        "the node is shutting down".to_owned(),
                        now.saturating_duration_since(command.arrival),
                        command.protocol_version,
                    ))));
            }
        }
        self.executing = 0;
        self.groups.clear();
        self.timers.clear();
        self.memory.forget_results();
    }
}

/// The `timeout` answer of `live` at `now`.
pub(super) fn timeout_result(id: &str, live: &Live, now: Instant) -> CommandResultDto {
    let queued = matches!(live.stage, Stage::Queued(_));
    let message = format!(
        "command timed out after {} ms{}",
        millis(live.timeout),
        if queued { " before it could start" } else { "" }
    );
    error_result(
        id,
        ErrorCode::Timeout,
        message,
        now.saturating_duration_since(live.arrival),
        live.protocol_version.clone(),
    )
}
