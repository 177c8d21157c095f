//! The command table: what happens to every `ExecuteCommand` a node receives, from admission to
//! its one terminal result.
//!
//! # Theory of operation
//! The same table serves the hub and HTTP polling: it knows no transport. The Node feeds it
//! ExecuteCommands ([`CommandTable::receive`]), CancelCommands ([`CommandTable::cancel`]), the
//! executors' outcomes and progress ([`CommandTable::finish`], [`CommandTable::progress`]) and
//! the time; it drains [`CommandAction`]s: commands to hand to executors, executors to stop,
//! results and progress to send, and events to log.
//!
//! **Admission.** A received command is checked in this order, and the first failure is answered
//! at once with `ok: false`, `durationMs: 0` and the command's `protocolVersion`:
//! 1. a `protocolVersion` the node does not speak ([`CommandLimits::protocol_versions`]):
//!    `invalid_params` (docs/protocol.md 5.8);
//! 2. no executor of that name: `platform_unsupported` (no scope is checked: there is none);
//! 3. the executor's `required_scope` not allowed by the node's scopes: `not_authorized`;
//! 4. the executor's params hook refuses `params` (`{}` when absent): `invalid_params` with the
//!    hook's message;
//! 5. `timeoutMs: 0`: `timeout` (the deadline has already passed; the command never runs);
//! 6. as many commands executing or queued as there are slots: `busy` with `retryAfterMs`.
//!
//! An empty `commandId` cannot be answered: it becomes a [`CommandEvent::InvalidCommand`].
//! Rejected commands are not remembered: a redelivery is judged again (a `busy` command may fit
//! later, a `not_authorized` one after a `RefreshScopes`).
//!
//! **Running.** An admitted command's deadline is its arrival plus `timeoutMs` (absent: the
//! default, 30 s; larger than [`CommandLimits::max_timeout`]: clamped). A command without a
//! serialization key, or whose group is idle, is handed to its executor at once
//! ([`CommandAction::Execute`]); otherwise it waits in its group's FIFO queue and starts when the
//! previous command of the group is answered. A queued command holds a slot, and its deadline
//! runs from arrival: it can time out before it starts (a `timeout` result, no `Cancel`).
//!
//! **Answering.** Every admitted command gets exactly one result: the executor's outcome
//! ([`CommandTable::finish`]), `timeout` at its deadline, or `cancelled` on a CancelCommand. When
//! the table answers a command its executor still runs (timeout, cancel), it also emits
//! [`CommandAction::Cancel`], frees the slot and the group at once, and drops the executor's
//! later outcome ([`Finish::Late`], an event). `durationMs` is the time from arrival to the
//! answer; the result echoes the command's `protocolVersion` (absent when it had none: the Node
//! fills in the connection's version).
//!
//! **Exactly once.** A redelivered ExecuteCommand (same `commandId`) for a command that is queued
//! or executing is ignored; for a finished one, its stored result is emitted again and it is not
//! run again. Results are remembered for [`CommandLimits::remember_for`] after the answer and at
//! most [`CommandLimits::remembered_results`] of them (the oldest is forgotten first); a
//! forgotten command is new to the table again, unless its executor was abandoned and has not
//! finished yet (then a redelivery is still ignored).
//!
//! **Progress** is sent at most once per [`CommandLimits::progress_interval`] per command: a
//! report within the interval replaces the waiting one, which is sent when the interval ends
//! (a timer), unless the command is answered first. The fraction is clamped to 0..=1 and never
//! decreases (a lower value is sent as the highest so far); NaN is caller misuse.
//!
//! **Stopping.** [`CommandTable::shutdown`] answers every command `cancelled` and stops the
//! executors; [`CommandTable::abort_all`] (RevokeAccess: a revoked node sends nothing more) stops
//! them and answers nothing. Either closes the table: later ExecuteCommands are events only.
//!
//! `Result` is for caller misuse only ([`CommandUsageError`]); whatever the gateway sends, and
//! the normal races of executors against deadlines and cancels, are events.

mod admission;
mod lifecycle;
mod memory;
mod types;

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;

use self::lifecycle::timeout_result;
use self::memory::Memory;
use self::types::{clip, error_result, millis};
pub use self::types::{
    CancelReason, CommandAction, CommandEvent, CommandLimits, CommandSpec, CommandState,
    CommandUsageError, ExecuteRequest, Finish, Outcome, ParamsValidator, Progress,
};
use crate::scope::{validate_scope, ScopeSet};
use crate::time::{saturating_add, DeadlineQueue};
use crate::wire::dto::{CommandProgressDto, CommandResultDto, ErrorCode, ExecuteCommandDto};

/// How much peer-supplied text (a command name, a cancel reason) a message repeats.
const CLIP: usize = 128;

/// A timer of one command. Equal instants fire progress flushes before deadlines.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Timer {
    Progress(String),
    Deadline(String),
}

/// The rate limit of one executing command's progress.
#[derive(Debug, Default)]
struct ProgressGate {
    last_sent: Option<Instant>,
    pending: Option<CommandProgressDto>,
    highest: f64,
}

#[derive(Debug)]
enum Stage {
    Queued(ExecuteRequest),
    Executing(ProgressGate),
}

/// A command that is queued or executing.
#[derive(Debug)]
struct Live {
    group: Option<String>,
    arrival: Instant,
    timeout: Duration,
    deadline: Instant,
    protocol_version: Option<String>,
    stage: Stage,
}

/// One serialization group: the command it runs and the ones waiting, in arrival order.
#[derive(Debug, Default)]
struct Group {
    running: Option<String>,
    queue: VecDeque<String>,
}

/// The command table; see the module docs.
pub struct CommandTable {
    specs: BTreeMap<String, CommandSpec>,
    limits: CommandLimits,
    live: BTreeMap<String, Live>,
    groups: BTreeMap<String, Group>,
    timers: DeadlineQueue<Timer>,
    memory: Memory,
    actions: VecDeque<CommandAction>,
    executing: usize,
    closed: bool,
}

impl std::fmt::Debug for CommandTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CommandTable")
            .field("commands", &self.specs.keys().collect::<Vec<_>>())
            .field("live", &self.live.keys().collect::<Vec<_>>())
            .field("executing", &self.executing)
            .field("remembered", &self.memory.len())
            .field("closed", &self.closed)
            .finish()
    }
}

impl CommandTable {
    /// A table for the executors `specs`. Errors: an empty or repeated name, a `required_scope`
    /// that is not a concrete scope, zero slots.
    pub fn new(
        specs: impl IntoIterator<Item = CommandSpec>,
        limits: CommandLimits,
    ) -> Result<Self, CommandUsageError> {
        if limits.slots == 0 {
            return Err(CommandUsageError::ZeroSlots);
        }
        let mut by_name = BTreeMap::new();
        for spec in specs {
            if spec.name.is_empty() {
                return Err(CommandUsageError::EmptyCommandName);
            }
            if let Some(scope) = &spec.required_scope {
                validate_scope(scope).map_err(|error| CommandUsageError::InvalidScope {
                    name: spec.name.clone(),
                    error,
                })?;
            }
            if by_name.contains_key(&spec.name) {
                return Err(CommandUsageError::DuplicateCommand { name: spec.name });
            }
            by_name.insert(spec.name.clone(), spec);
        }
        let memory = Memory::new(
            limits.remembered_results,
            limits.remember_for,
            limits.remembered_results.max(limits.slots),
        );
        Ok(Self {
            specs: by_name,
            limits,
            live: BTreeMap::new(),
            groups: BTreeMap::new(),
            timers: DeadlineQueue::new(),
            memory,
            actions: VecDeque::new(),
            executing: 0,
            closed: false,
        })
    }

    // --- A. Getters -------------------------------------------------------------------------

    /// Commands handed to an executor and not answered yet.
    pub fn executing(&self) -> usize {
        self.executing
    }

    /// Commands waiting in a serialization group.
    pub fn queued(&self) -> usize {
        self.live.len() - self.executing
    }

    /// Executing plus queued: the slots in use.
    pub fn in_flight(&self) -> usize {
        self.live.len()
    }

    /// How many commands may be in flight before the node answers `busy`.
    pub fn slots(&self) -> usize {
        self.limits.slots
    }

    /// The registered commands, sorted (the heartbeat's `capabilities.commands`).
    pub fn command_names(&self) -> Vec<String> {
        self.specs.keys().cloned().collect()
    }

    /// The limits the table was built with.
    pub fn limits(&self) -> &CommandLimits {
        &self.limits
    }

    /// Where `command_id` stands; `None`: a redelivery would be a new command.
    pub fn command_state(&self, command_id: &str) -> Option<CommandState> {
        if let Some(live) = self.live.get(command_id) {
            return Some(match live.stage {
                Stage::Queued(_) => CommandState::Queued,
                Stage::Executing(_) => CommandState::Executing,
            });
        }
        if self.memory.result(command_id).is_some() {
            Some(CommandState::Finished)
        } else if self.memory.is_abandoned(command_id) {
            Some(CommandState::Abandoned)
        } else {
            None
        }
    }

    /// Whether the table knows `command_id` (a redelivery would not run it).
    pub fn is_known(&self, command_id: &str) -> bool {
        self.command_state(command_id).is_some()
    }

    /// Whether [`shutdown`](Self::shutdown) or [`abort_all`](Self::abort_all) closed the table.
    pub fn is_closed(&self) -> bool {
        self.closed
    }

    // --- B. Inputs --------------------------------------------------------------------------

    /// An ExecuteCommand from the gateway (hub or polling), judged against the node's effective
    /// `scopes`. Never fails: every outcome is an action.
    pub fn receive(&mut self, now: Instant, dto: ExecuteCommandDto, scopes: &ScopeSet) {
        if self.closed {
            self.event(CommandEvent::ReceivedAfterShutdown {
                command_id: dto.command_id,
            });
            return;
        }
        if dto.command_id.is_empty() {
            self.event(CommandEvent::InvalidCommand {
                reason: format!(
                    "ExecuteCommand {:?} has an empty commandId: there is nothing to answer to",
                    clip(&dto.command, CLIP)
                ),
            });
            return;
        }
        match self.command_state(&dto.command_id) {
            None => {}
            Some(CommandState::Finished) => {
                if let Some(result) = self.memory.result(&dto.command_id) {
                    self.actions
                        .push_back(CommandAction::Result(Arc::clone(result)));
                }
                self.event(CommandEvent::ResultResent {
                    command_id: dto.command_id,
                });
                return;
            }
            Some(state) => {
                self.event(CommandEvent::DuplicateIgnored {
                    command_id: dto.command_id,
                    state,
                });
                return;
            }
        }
        if let Err(rejection) = self.admit(now, dto, scopes) {
            self.actions
                .push_back(CommandAction::Result(Arc::new(*rejection)));
        }
    }

    /// A CancelCommand from the gateway: an executing command is stopped and answered
    /// `cancelled`, a queued one is dropped and answered `cancelled`; anything else is ignored
    /// (an event). `reason` is the CancelCommand's, repeated in the message.
    pub fn cancel(&mut self, now: Instant, command_id: &str, reason: Option<&str>) {
        let Some(live) = self.live.get(command_id) else {
            self.event(CommandEvent::CancelIgnored {
                command_id: command_id.to_owned(),
                state: self.command_state(command_id),
            });
            return;
        };
        let message = match reason {
            Some(reason) if !reason.is_empty() => {
                format!("cancelled by the gateway: {}", clip(reason, CLIP))
            }
            _ => "cancelled by the gateway".to_owned(),
        };
        let result = error_result(
            command_id,
            ErrorCode::Cancelled,
            message,
            now.saturating_duration_since(live.arrival),
            live.protocol_version.clone(),
        );
        self.conclude(now, command_id, result, Some(CancelReason::Cancelled));
    }

    /// An executor's outcome. Answers an executing command; a command the table already answered
    /// (timeout, cancel, shutdown) gets [`Finish::Late`] and one finished before
    /// [`Finish::Repeated`], each with an event. Errors: an id the table does not know (never
    /// received, or forgotten), or a queued command (never handed to an executor).
    pub fn finish(
        &mut self,
        now: Instant,
        command_id: &str,
        outcome: Outcome,
    ) -> Result<Finish, CommandUsageError> {
        if let Some(live) = self.live.get(command_id) {
            if let Stage::Queued(_) = live.stage {
                return Err(CommandUsageError::NotStarted {
                    command_id: command_id.to_owned(),
                });
            }
            let (ok, result, error) = match outcome {
                Ok(Value::Null) => (true, None, None),
                Ok(value) => (true, Some(value), None),
                Err(error) => (false, None, Some(error)),
            };
            let result = CommandResultDto {
                command_id: command_id.to_owned(),
                ok,
                result,
                error,
                duration_ms: Some(millis(now.saturating_duration_since(live.arrival))),
                part_index: None,
                is_last: None,
                protocol_version: live.protocol_version.clone(),
            };
            self.conclude(now, command_id, result, None);
            return Ok(Finish::Answered);
        }
        if self.memory.take_abandoned(command_id) {
            self.event(CommandEvent::LateFinishDropped {
                command_id: command_id.to_owned(),
            });
            return Ok(Finish::Late);
        }
        if self.memory.result(command_id).is_some() {
            self.event(CommandEvent::RepeatedFinishIgnored {
                command_id: command_id.to_owned(),
            });
            return Ok(Finish::Repeated);
        }
        Err(CommandUsageError::UnknownCommand {
            command_id: command_id.to_owned(),
        })
    }

    /// An executor's progress report; see the module docs for the rate limit. Reports for a
    /// command already answered are ignored. Errors: as [`finish`](Self::finish), and a NaN
    /// fraction.
    pub fn progress(
        &mut self,
        now: Instant,
        command_id: &str,
        progress: Progress,
    ) -> Result<(), CommandUsageError> {
        let interval = self.limits.progress_interval;
        let Some(live) = self.live.get_mut(command_id) else {
            return if self.is_known(command_id) || self.closed {
                Ok(())
            } else {
                Err(CommandUsageError::UnknownCommand {
                    command_id: command_id.to_owned(),
                })
            };
        };
        let Stage::Executing(gate) = &mut live.stage else {
            return Err(CommandUsageError::NotStarted {
                command_id: command_id.to_owned(),
            });
        };
        if progress.progress.is_nan() {
            return Err(CommandUsageError::ProgressNotANumber {
                command_id: command_id.to_owned(),
            });
        }
        gate.highest = gate.highest.max(progress.progress.clamp(0.0, 1.0));
        let dto = CommandProgressDto {
            command_id: command_id.to_owned(),
            progress: gate.highest,
            step: progress.step,
            step_count: progress.step_count,
            eta_ms: progress.eta.map(millis),
            message: progress.message,
        };
        let next_allowed = gate.last_sent.map(|at| saturating_add(at, interval));
        match next_allowed {
            Some(at) if now < at => {
                gate.pending = Some(dto);
                self.timers
                    .insert(Timer::Progress(command_id.to_owned()), at);
            }
            _ => {
                gate.last_sent = Some(now);
                gate.pending = None;
                self.timers.remove(&Timer::Progress(command_id.to_owned()));
                self.actions.push_back(CommandAction::Progress(dto));
            }
        }
        Ok(())
    }

    /// Fires every timer due at `now`: progress flushes, deadlines, forgetting results. Early or
    /// spurious calls are no-ops.
    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some(timer) = self.timers.pop_expired(now) {
            match timer {
                Timer::Progress(id) => {
                    if let Some(Live {
                        stage: Stage::Executing(gate),
                        ..
                    }) = self.live.get_mut(&id)
                    {
                        if let Some(dto) = gate.pending.take() {
                            gate.last_sent = Some(now);
                            self.actions.push_back(CommandAction::Progress(dto));
                        }
                    }
                }
                Timer::Deadline(id) => {
                    if let Some(live) = self.live.get(&id) {
                        let executing = matches!(live.stage, Stage::Executing(_));
                        let result = timeout_result(&id, live, now);
                        let cancel = executing.then_some(CancelReason::Timeout);
                        self.conclude(now, &id, result, cancel);
                    }
                }
            }
        }
        self.memory.expire(now);
    }

    // --- C. Mutators for the host -----------------------------------------------------------

    /// Stops the node's commands and says goodbye: every executing command is stopped
    /// (`Cancel{Shutdown}`), and every executing or queued command is answered `cancelled`
    /// ("the node is shutting down"). Then the table is closed.
    pub fn shutdown(&mut self, now: Instant) {
        self.stop_all(now, true);
    }

    /// Stops the node's commands without a word (RevokeAccess: a revoked node sends nothing
    /// more): every executing command is stopped (`Cancel{Shutdown}`), queued ones are dropped,
    /// no result is emitted, and results not yet drained are withdrawn. Then the table is closed.
    pub fn abort_all(&mut self, now: Instant) {
        self.actions.retain(|action| {
            !matches!(
                action,
                CommandAction::Result(_) | CommandAction::Progress(_)
            )
        });
        self.stop_all(now, false);
    }

    // --- D. Outputs -------------------------------------------------------------------------

    /// The next action, in the order the table decided them.
    #[must_use]
    pub fn poll_action(&mut self) -> Option<CommandAction> {
        self.actions.pop_front()
    }

    /// When [`handle_timeout`](Self::handle_timeout) is next due: the earliest command deadline,
    /// progress flush or result expiry.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        match (self.timers.next_deadline(), self.memory.next_expiry()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    fn event(&mut self, event: CommandEvent) {
        self.actions.push_back(CommandAction::Event(event));
    }
}
