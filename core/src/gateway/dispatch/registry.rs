//! The registry: nodes attaching and detaching, heartbeats, online and offline, scopes,
//! revocation, polling leases, and moving each node's queue.

use std::time::Instant;

use super::commands::command_grace_deadline;
use super::{
    DispatchError, DispatchOutput, DispatchRecord, Dispatcher, Key, NodeEntry, NodeRecord, Stage,
    Timer, Transport,
};
use crate::gateway::ConnId;
use crate::scope::ScopeSet;
use crate::time::saturating_add;
use crate::wire::contract::GatewayCall;
use crate::wire::dto::{CancelCommandDto, ErrorCode, ExecuteCommandDto, HeartbeatDto};

impl Dispatcher {
    /// Makes `node` known (a paired node), offline and unattached, with no scopes. Idempotent.
    /// Attaching, a heartbeat, a poll and [`set_scopes`](Self::set_scopes) register a node too.
    pub fn register(&mut self, node: &str) {
        self.started = true;
        if !self.nodes.contains_key(node) {
            self.nodes.insert(node.to_owned(), NodeEntry::new());
            self.persist_node(node);
        }
    }

    /// The node is attached: a hub connection became ready (`Transport::Hub`, which counts as
    /// a heartbeat: the node is online), or it takes commands by polling (`Transport::Poll`,
    /// which does not: a poll is not a heartbeat). `slots`, when given, replaces the advertised
    /// slots. A new hub connection replaces any previous attachment. The commands the node was
    /// given and has not answered are given again at once on a hub connection (same
    /// `commandId`; `CancelCommand` for those whose cancellation is pending), or on the next
    /// poll; then queued commands follow as capacity allows. A `busy` pause ends.
    pub fn node_connected(
        &mut self,
        now: Instant,
        node: &str,
        transport: Transport,
        slots: Option<u32>,
    ) {
        self.register(node);
        let entry = self.nodes.get_mut(node).expect("registered above");
        if let Some(slots) = slots {
            entry.slots = slots;
        }
        entry.paused_until = None;
        let hub = match &transport {
            Transport::Hub {
                conn,
                protocol_version,
            } => Some((*conn, protocol_version.clone())),
            Transport::Poll => None,
        };
        entry.attached = Some(transport);
        match hub {
            Some((conn, version)) => {
                entry.lease_until = None;
                self.touch(now, node);
                self.resend_in_flight(now, node, conn, version);
            }
            None => self.renew_lease(now, node),
        }
        self.pump(now, node);
    }

    /// The hub connection `conn` of `node` ended. Nothing else changes: the node stays online
    /// until `offline_after` after its last heartbeat, and its commands wait for it to attach
    /// again. A `conn` that is not the node's current connection is ignored.
    pub fn node_disconnected(&mut self, now: Instant, node: &str, conn: ConnId) {
        let _ = now;
        if let Some(entry) = self.nodes.get_mut(node) {
            if matches!(&entry.attached, Some(Transport::Hub { conn: c, .. }) if *c == conn) {
                entry.attached = None;
            }
        }
    }

    /// A heartbeat (hub or REST): the node is online until `offline_after` from now. Its
    /// `capabilities.slots`, when present, replace the advertised slots.
    pub fn heartbeat(&mut self, now: Instant, node: &str, heartbeat: &HeartbeatDto) {
        let slots = heartbeat.capabilities.as_ref().map(|c| c.slots);
        // The hot path: an online node, nothing to persist. One lookup, no allocation.
        let every = self.config.persist_seen_every;
        if let Some(entry) = self.nodes.get_mut(node) {
            let persist_due = entry
                .seen_persisted_at
                .is_none_or(|at| saturating_add(at, every) <= now);
            if entry.online && entry.offline_timer.is_some() && !persist_due {
                entry.last_contact = Some(now);
                let default = self.config.default_slots;
                let more_room = slots.is_some_and(|slots| {
                    effective_slots(slots, default) > effective_slots(entry.slots, default)
                });
                if let Some(slots) = slots {
                    entry.slots = slots;
                }
                if more_room {
                    self.pump(now, node);
                }
                return;
            }
        }
        if !self.nodes.contains_key(node) {
            self.register(node);
        }
        let entry = self.nodes.get_mut(node).expect("registered above");
        let mut more_room = false;
        if let Some(slots) = slots {
            let default = self.config.default_slots;
            more_room = effective_slots(slots, default) > effective_slots(entry.slots, default);
            entry.slots = slots;
        }
        let became_online = self.touch(now, node);
        if became_online || more_room {
            self.pump(now, node);
        }
    }

    /// The node's effective scopes from now on (its `ScopeChanged`, or the grant at approval).
    /// Commands waiting for it (queued or awaiting approval) whose `required_scope` the new set
    /// does not allow end `not_authorized`; commands with the node are left to it (the node
    /// checks scopes too).
    pub fn set_scopes(&mut self, now: Instant, node: &str, scopes: ScopeSet) {
        self.register(node);
        let entry = self.nodes.get_mut(node).expect("registered above");
        entry.scopes = scopes;
        self.persist_node(node);
        let entry = &self.nodes[node];
        let refused: Vec<(Key, String)> = entry
            .awaiting
            .iter()
            .chain(entry.queue.values())
            .filter_map(|key| {
                let scope = self.commands.get(key)?.required_scope.as_ref()?;
                (!entry.scopes.allows(scope)).then(|| (*key, scope.clone()))
            })
            .collect();
        for (key, scope) in refused {
            let message = format!("the node no longer holds scope {scope}");
            self.finish_synthesized(now, key, ErrorCode::NotAuthorized, message);
        }
    }

    /// The node's access is revoked: every command of it that has not ended (awaiting approval,
    /// queued, or with the node) ends `cancelled`, and the node is forgotten (offline, no longer
    /// registered: a new `dispatch` to it is [`DispatchError::UnknownNode`]). Returns how many
    /// commands it cancelled.
    pub fn revoke(&mut self, now: Instant, node: &str) -> Result<usize, DispatchError> {
        self.started = true;
        let Some(entry) = self.nodes.get_mut(node) else {
            return Err(DispatchError::UnknownNode {
                node: node.to_owned(),
            });
        };
        // Detached first, so that no freed slot sends anything.
        entry.attached = None;
        let keys: Vec<Key> = entry
            .awaiting
            .iter()
            .copied()
            .chain(entry.queue.values().copied())
            .chain(entry.in_flight.values().copied())
            .collect();
        for key in &keys {
            let message = "cancelled: the node's access was revoked".to_owned();
            self.finish_synthesized(now, *key, ErrorCode::Cancelled, message);
        }
        let entry = self.nodes.remove(node).expect("present above");
        for timer in [
            Timer::Offline(node.to_owned()),
            Timer::Resume(node.to_owned()),
            Timer::Lease(node.to_owned()),
        ] {
            self.timers.remove(&timer);
        }
        if entry.online {
            self.emit(DispatchOutput::NodeOffline {
                node: node.to_owned(),
                at: now,
            });
        }
        self.persist(DispatchRecord::NodeRemoved {
            node: node.to_owned(),
        });
        Ok(keys.len())
    }

    /// A poll by a polling node: it is attached by polling (a poll is not a heartbeat) and holds
    /// its leases for `lease_for` from now. Queued commands are leased as capacity allows (only
    /// while the node is online and not paused by `busy`), and the answer lists every command
    /// leased to the node that has not ended, in dispatch order, at most `max` of them, each
    /// with the time left to its deadline as `timeoutMs` (docs/protocol.md 7.4: the same command
    /// appears in every answer until its result is recorded).
    pub fn lease(&mut self, now: Instant, node: &str, max: usize) -> Vec<ExecuteCommandDto> {
        self.register(node);
        let entry = self.nodes.get_mut(node).expect("registered above");
        if !matches!(entry.attached, Some(Transport::Poll)) {
            entry.attached = Some(Transport::Poll);
            entry.paused_until = None;
        }
        self.renew_lease(now, node);
        self.take_from_queue(now, node, None);
        let entry = &self.nodes[node];
        entry
            .in_flight
            .values()
            .filter_map(|key| self.commands.get(key))
            .filter(|command| command.cancel.is_none())
            .take(max)
            .map(|command| Self::execute_dto(command, now, None))
            .collect()
    }

    /// Sends queued commands to a hub node as capacity allows.
    pub(super) fn pump(&mut self, now: Instant, node: &str) {
        let Some(entry) = self.nodes.get(node) else {
            return;
        };
        if let Some(Transport::Hub {
            conn,
            protocol_version,
        }) = &entry.attached
        {
            let push = (*conn, protocol_version.clone());
            self.take_from_queue(now, node, Some(push));
        }
    }

    /// Moves commands from the head of the queue to the node while it is online, not paused,
    /// and below its slots: sent on `push`'s connection, or leased (`None`). A command whose
    /// deadline has come ends `timeout` instead.
    fn take_from_queue(
        &mut self,
        now: Instant,
        node: &str,
        push: Option<(ConnId, Option<String>)>,
    ) {
        loop {
            let Some(entry) = self.nodes.get_mut(node) else {
                return;
            };
            let slots = effective_slots(entry.slots, self.config.default_slots);
            if !entry.online
                || entry.paused_until.is_some()
                || entry.in_flight.len() >= slots as usize
            {
                return;
            }
            let Some((_, key)) = entry.queue.pop_first() else {
                return;
            };
            let command = self
                .commands
                .get_mut(&key)
                .expect("queued keys name commands");
            if command.deadline <= now {
                // Detached already; a queued command frees no slot, so nothing recurses.
                let ms = command.timeout.as_millis();
                let message = format!("not dispatched within the timeout of {ms} ms");
                self.finish_synthesized(now, key, ErrorCode::Timeout, message);
                continue;
            }
            let seq = self.next_seq;
            self.next_seq += 1;
            entry.in_flight.insert(seq, key);
            command.stage = Stage::InFlight {
                seq,
                at: now,
                progress: None,
            };
            let until = command_grace_deadline(command, self.config.result_grace);
            self.timers.insert(Timer::Deadline(key), until);
            if let Some((conn, version)) = &push {
                let call =
                    GatewayCall::ExecuteCommand(Self::execute_dto(command, now, version.clone()));
                self.emit(DispatchOutput::Send {
                    node: node.to_owned(),
                    conn: *conn,
                    call,
                });
            }
            self.status_changed(key);
        }
    }

    /// A new hub connection: every command with the node goes out again, in dispatch order.
    fn resend_in_flight(
        &mut self,
        now: Instant,
        node: &str,
        conn: ConnId,
        version: Option<String>,
    ) {
        let Some(entry) = self.nodes.get(node) else {
            return;
        };
        let keys: Vec<Key> = entry.in_flight.values().copied().collect();
        for key in keys {
            let Some(command) = self.commands.get_mut(&key) else {
                continue;
            };
            let call = if command.cancel.is_some() {
                GatewayCall::CancelCommand(CancelCommandDto {
                    command_id: command.id.clone(),
                    reason: None,
                })
            } else {
                if let Stage::InFlight { at, .. } = &mut command.stage {
                    *at = now;
                }
                GatewayCall::ExecuteCommand(Self::execute_dto(command, now, version.clone()))
            };
            self.emit(DispatchOutput::Send {
                node: node.to_owned(),
                conn,
                call,
            });
        }
    }

    /// A heartbeat or a hub connection: returns whether the node became online.
    fn touch(&mut self, now: Instant, node: &str) -> bool {
        let offline_after = self.config.offline_after;
        let every = self.config.persist_seen_every;
        let entry = self.nodes.get_mut(node).expect("callers register the node");
        entry.last_contact = Some(now);
        if entry.offline_timer.is_none() {
            let at = saturating_add(now, offline_after);
            entry.offline_timer = Some(at);
            self.timers.insert(Timer::Offline(node.to_owned()), at);
        }
        let became_online = !entry.online;
        let persist = became_online
            || entry
                .seen_persisted_at
                .is_none_or(|at| saturating_add(at, every) <= now);
        if became_online {
            entry.online = true;
            self.emit(DispatchOutput::NodeOnline {
                node: node.to_owned(),
            });
        }
        if persist {
            let ms = self.unix_ms(now);
            let entry = self.nodes.get_mut(node).expect("present above");
            entry.last_seen_ms = Some(ms);
            entry.seen_persisted_at = Some(now);
            self.persist_node(node);
        }
        became_online
    }

    fn persist_node(&mut self, node: &str) {
        if let Some(entry) = self.nodes.get(node) {
            let record = NodeRecord {
                node: node.to_owned(),
                scopes: entry.scopes.to_vec(),
                last_seen_ms: entry.last_seen_ms,
            };
            self.persist(DispatchRecord::Node(record));
        }
    }

    /// The `Offline` timer: the node goes offline at exactly its last heartbeat plus
    /// `offline_after`, or the timer moves to that instant.
    pub(super) fn offline_timer(&mut self, now: Instant, node: String) {
        let offline_after = self.config.offline_after;
        let last = match self.nodes.get_mut(&node) {
            Some(entry) => {
                entry.offline_timer = None;
                entry.last_contact
            }
            None => return,
        };
        let Some(last) = last else {
            return;
        };
        let due = saturating_add(last, offline_after);
        let last_ms = self.unix_ms(last);
        let entry = self.nodes.get_mut(&node).expect("present above");
        if due > now {
            entry.offline_timer = Some(due);
            self.timers.insert(Timer::Offline(node), due);
            return;
        }
        if entry.online {
            entry.online = false;
            entry.last_seen_ms = Some(last_ms);
            entry.seen_persisted_at = Some(now);
            self.persist_node(&node);
            self.emit(DispatchOutput::NodeOffline { node, at: due });
        }
    }

    /// The `Resume` timer: a `busy` pause ended.
    pub(super) fn resume_timer(&mut self, now: Instant, node: &str) {
        let Some(entry) = self.nodes.get_mut(node) else {
            return;
        };
        match entry.paused_until {
            Some(until) if until > now => {
                self.timers.insert(Timer::Resume(node.to_owned()), until);
            }
            _ => {
                entry.paused_until = None;
                self.pump(now, node);
            }
        }
    }

    /// Pauses the node after a `busy` answer, until `until` at the earliest.
    pub(super) fn pause(&mut self, node: &str, until: Instant) {
        if let Some(entry) = self.nodes.get_mut(node) {
            let until = entry.paused_until.map_or(until, |at| at.max(until));
            entry.paused_until = Some(until);
            self.timers.insert(Timer::Resume(node.to_owned()), until);
        }
    }

    fn renew_lease(&mut self, now: Instant, node: &str) {
        let until = saturating_add(now, self.config.lease_for);
        let entry = self.nodes.get_mut(node).expect("callers register the node");
        entry.lease_until = Some(until);
        if entry.lease_timer.is_none() {
            entry.lease_timer = Some(until);
            self.timers.insert(Timer::Lease(node.to_owned()), until);
        }
    }

    /// The `Lease` timer: a polling node that has not polled for `lease_for` loses its leases:
    /// the commands go back to the head of its queue, in dispatch order.
    pub(super) fn lease_timer(&mut self, now: Instant, node: String) {
        let Some(entry) = self.nodes.get_mut(&node) else {
            return;
        };
        entry.lease_timer = None;
        if !matches!(entry.attached, Some(Transport::Poll)) {
            return;
        }
        match entry.lease_until {
            Some(until) if until > now => {
                entry.lease_timer = Some(until);
                self.timers.insert(Timer::Lease(node), until);
                return;
            }
            _ => {}
        }
        entry.attached = None;
        entry.lease_until = None;
        let keys: Vec<Key> = entry.in_flight.values().rev().copied().collect();
        let mut returned = Vec::with_capacity(keys.len());
        for key in keys {
            if self.commands.get(&key).is_some_and(|c| c.cancel.is_some()) {
                let message = "cancelled; the node did not confirm in time".to_owned();
                self.finish_synthesized(now, key, ErrorCode::Cancelled, message);
                continue;
            }
            self.detach_command(key);
            self.enqueue_front(key);
            returned.push(key);
        }
        for key in returned.into_iter().rev() {
            self.status_changed(key);
        }
    }
}

/// A node's capacity: its advertised slots, or the default (at least 1) when it advertised none.
fn effective_slots(advertised: u32, default: u32) -> u32 {
    match advertised {
        0 => default.max(1),
        slots => slots,
    }
}
