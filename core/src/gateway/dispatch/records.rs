//! What the dispatcher persists, and how [`Dispatcher::restore`] rebuilds from it.
//!
//! # The records
//! Every durable change is one [`DispatchRecord`], emitted as
//! [`DispatchOutput::Persist`](super::DispatchOutput::Persist) in the order the changes happen.
//! Times are wall-clock unix milliseconds, so they survive a restart. Per command the records
//! are `Created`, then any of `Approved`, `CancelRequested`, `Part` (one per recorded part of a
//! chunked result), then `Finished`, and finally `Forgotten`. Per node, `Node` (the node's
//! current durable state, replacing the previous one) and `NodeRemoved`.
//!
//! A store may keep the records as a log, or compact them: once a command's `Finished` is stored
//! its `Approved`, `CancelRequested` and `Part` records may be dropped; at `Forgotten` all its
//! records may be dropped; a `Node` record replaces the node's previous one and `NodeRemoved`
//! drops it. [`Dispatcher::restore`] takes what remains with each command's records in the order
//! they were written (`Created` first) and each node's too; commands in creation order; the
//! records of nodes and of commands may come in any order relative to each other (a table of
//! nodes and a table of commands will do).
//!
//! # Restoring
//! After a restart no node is attached and none is online (their last-seen instants are kept).
//! Every command that had not finished is queued again in its creation order, whether it had
//! been sent or not (it goes out again when its node attaches: the node's exactly-once memory
//! answers a repeat), except that a command awaiting approval still awaits it, a command whose
//! cancellation was pending ends `cancelled` at once, and so does a command whose node is no
//! longer registered. Parts of a chunked result are buffered again. Deadlines are those of the
//! original dispatch: a command whose deadline passed while the gateway was down ends `timeout`
//! at the first [`Dispatcher::handle_timeout`]. Finished outcomes are remembered until their
//! original forgetting time.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;

use super::{Command, CommandOutcome, DispatchError, DispatchEvent, Dispatcher, Ix, Key, Stage};
use crate::scope::ScopeSet;
use crate::wire::dto::ErrorCode;
use crate::wire::dto::{CommandResultDto, OriginatedBy};

/// One durable change; see the module docs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "camelCase")]
pub enum DispatchRecord {
    /// A command was accepted by `dispatch`. Shared with the dispatcher, which keeps the
    /// command's request in it (no copy of the command's name and params per record).
    Created(#[serde(with = "arc")] Arc<CommandRecord>),
    /// A critical command was approved.
    #[serde(rename_all = "camelCase")]
    Approved { command_id: String },
    /// `CancelCommand` was sent for the command; it ends `cancelled` if the gateway restarts
    /// before the node answers.
    #[serde(rename_all = "camelCase")]
    CancelRequested { command_id: String },
    /// One part of a chunked result was recorded (and acknowledged).
    #[serde(rename_all = "camelCase")]
    Part {
        command_id: String,
        /// Boxed: parts are rare, and a record is moved several times on its way out.
        part: Box<CommandResultDto>,
    },
    /// The command ended with `result`.
    #[serde(rename_all = "camelCase")]
    Finished {
        #[serde(with = "arc_str")]
        command_id: Arc<str>,
        #[serde(with = "arc")]
        result: Arc<CommandResultDto>,
        finished_at_ms: u64,
        /// The gateway wrote `result` itself (timeout, cancel, ...).
        synthesized: bool,
        /// FNV-1a digests of the parts of a chunked result, by `partIndex` (empty otherwise).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        part_digests: Vec<u64>,
    },
    /// The finished command is no longer remembered.
    #[serde(rename_all = "camelCase")]
    Forgotten {
        #[serde(with = "arc_str")]
        command_id: Arc<str>,
    },
    /// A node's durable state (replaces its previous `Node` record).
    Node(NodeRecord),
    /// The node was revoked.
    NodeRemoved { node: String },
}

/// A command as `dispatch` accepted it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CommandRecord {
    /// Shared with the dispatcher's outputs that name the command.
    #[serde(with = "arc_str")]
    pub command_id: Arc<str>,
    pub node: String,
    pub command: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub params: Option<Value>,
    /// The whole timeout; the deadline is `created_at_ms + timeout_ms`.
    pub timeout_ms: u64,
    pub created_at_ms: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub originated_by: Option<OriginatedBy>,
    #[serde(default)]
    pub critical: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub required_scope: Option<String>,
}

/// A node's durable state.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeRecord {
    pub node: String,
    /// The node's effective scopes.
    pub scopes: Vec<String>,
    /// When it was last seen (a heartbeat or a hub connection), unix ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_seen_ms: Option<u64>,
}

/// An `Arc<T>` as its `T` (serde's `rc` feature, for these fields alone).
mod arc {
    use super::*;

    pub fn serialize<S: Serializer, T: Serialize>(
        value: &Arc<T>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        value.as_ref().serialize(serializer)
    }

    pub fn deserialize<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
        deserializer: D,
    ) -> Result<Arc<T>, D::Error> {
        T::deserialize(deserializer).map(Arc::new)
    }
}

/// An `Arc<str>` as a string.
mod arc_str {
    use super::*;

    pub fn serialize<S: Serializer>(value: &Arc<str>, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(value)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Arc<str>, D::Error> {
        String::deserialize(deserializer).map(Arc::from)
    }
}

impl Dispatcher {
    /// Rebuilds the state of a previous run from its records (see the module docs). Only on a
    /// fresh dispatcher, before any other input ([`DispatchError::NotFresh`]). A record that does
    /// not fit (a command created twice, a record for an unknown command) is skipped with
    /// [`DispatchEvent::RestoreSkipped`]; commands that end at once (a pending cancellation, a
    /// node no longer registered) produce their `Finished` outputs and records.
    pub fn restore(
        &mut self,
        now: Instant,
        records: impl IntoIterator<Item = DispatchRecord>,
    ) -> Result<(), DispatchError> {
        if self.started || !self.commands.is_empty() || !self.node_names.is_empty() {
            return Err(DispatchError::NotFresh);
        }
        let mut approved = BTreeSet::new();
        for record in records {
            if let Err(reason) = self.restore_one(now, record, &mut approved) {
                self.event(DispatchEvent::RestoreSkipped { reason });
            }
        }
        // Every command that has not ended takes its place, in creation order.
        let mut live: Vec<(Key, Ix, bool)> = self
            .commands
            .iter()
            .filter(|(_, c)| !matches!(c.stage, Stage::Finished(_)))
            .map(|(ix, c)| (c.key, ix, c.cancel.is_some()))
            .collect();
        live.sort_unstable();
        for (key, ix, cancel_pending) in live {
            let command = &self.commands[ix];
            let waits = command.record.critical && !approved.contains(&key);
            let nix = self.node_ix(&command.node);
            let message = if cancel_pending {
                "cancelled: the gateway restarted before the node answered"
            } else if let Some(nix) = nix {
                // The command shares its node's name from now on.
                let name = Arc::clone(&self.nodes[nix].name);
                let command = &mut self.commands[ix];
                command.node = name;
                command.node_ix = Some(nix);
                if waits {
                    self.nodes[nix].awaiting.insert(key, ix);
                } else {
                    self.enqueue_back(ix);
                }
                continue;
            } else {
                "cancelled: the node is no longer registered"
            };
            self.finish_synthesized(now, ix, ErrorCode::Cancelled, message.to_owned());
        }
        Ok(())
    }

    /// Applies one record. Live commands are placed in their queues afterwards: until then
    /// they sit in no node's tables (stage `AwaitingApproval`), so that records of nodes and of
    /// commands may come in any order relative to each other.
    fn restore_one(
        &mut self,
        now: Instant,
        record: DispatchRecord,
        approved: &mut BTreeSet<Key>,
    ) -> Result<(), String> {
        match record {
            DispatchRecord::Created(rec) => self.restore_created(now, rec),
            DispatchRecord::Approved { command_id } => {
                let ix = self.restored_ix(&command_id)?;
                approved.insert(self.commands[ix].key);
                Ok(())
            }
            DispatchRecord::CancelRequested { command_id } => {
                let ix = self.restored_ix(&command_id)?;
                self.commands[ix].cancel = Some(now);
                Ok(())
            }
            DispatchRecord::Part { command_id, part } => {
                let ix = self.restored_ix(&command_id)?;
                if matches!(self.commands[ix].stage, Stage::Finished(_)) {
                    return Err(format!("Part: {command_id} has finished"));
                }
                let node = String::from(&*self.commands[ix].node);
                // The same path as a live part; its acknowledgment went out before the restart.
                let _ = self.accept_result(now, &node, ix, *part, false);
                Ok(())
            }
            DispatchRecord::Finished {
                command_id,
                result,
                finished_at_ms,
                synthesized,
                part_digests,
            } => {
                let ix = self.restored_ix(&command_id)?;
                let finished_at = self.instant_of(finished_at_ms, now);
                self.disarm(ix);
                let command = &mut self.commands[ix];
                super::commands::drop_params(command);
                command.reassembler = None;
                command.cancel = None;
                command.part_digests = (0u32..).zip(part_digests).collect();
                command.stage = Stage::Finished(CommandOutcome {
                    result,
                    finished_at,
                    synthesized,
                });
                self.remember(ix, finished_at);
                Ok(())
            }
            DispatchRecord::Forgotten { command_id } => {
                let ix = self.restored_ix(&command_id)?;
                self.remove_command(ix);
                Ok(())
            }
            DispatchRecord::Node(rec) => {
                let (scopes, _) = ScopeSet::parse_lenient(&rec.scopes);
                let nix = match self.node_ix(&rec.node) {
                    Some(nix) => nix,
                    None => self.add_node(&rec.node),
                };
                let entry = &mut self.nodes[nix];
                entry.scopes = scopes;
                entry.last_seen_ms = rec.last_seen_ms;
                Ok(())
            }
            DispatchRecord::NodeRemoved { node } => {
                self.remove_node(&node);
                Ok(())
            }
        }
    }

    fn restored_ix(&self, command_id: &str) -> Result<Ix, String> {
        self.ids
            .get(command_id)
            .ok_or_else(|| format!("a record for unknown command {command_id}"))
    }

    fn restore_created(&mut self, now: Instant, rec: Arc<CommandRecord>) -> Result<(), String> {
        if self.ids.contains(&rec.command_id) {
            return Err(format!("Created: {} exists already", rec.command_id));
        }
        let created = self.instant_of(rec.created_at_ms, now);
        // From wall-clock time directly, so that a deadline the clock cannot represent (long
        // past) is `now`, not a later one.
        let deadline = self.instant_of(rec.created_at_ms.saturating_add(rec.timeout_ms), now);
        let key = self.next_key;
        self.next_key += 1;
        let ix = self.commands.insert(Command {
            key,
            id: Arc::clone(&rec.command_id),
            node: Arc::from(rec.node.as_str()),
            // Set once every record is in (a node's records may come later).
            node_ix: None,
            timeout: Duration::from_millis(rec.timeout_ms),
            record: rec,
            created,
            deadline,
            stage: Stage::AwaitingApproval,
            cancel: None,
            reassembler: None,
            part_digests: Default::default(),
            timer: None,
            forget_at: None,
        });
        let added = self.ids.insert_new(&self.commands[ix].id, ix);
        debug_assert!(added, "checked above");
        self.arm(ix, deadline);
        Ok(())
    }
}
