//! The registry: nodes attaching and detaching, heartbeats, online and offline, scopes,
//! revocation, polling leases, and moving each node's queue.

use std::sync::Arc;
use std::time::Instant;

use super::commands::command_grace_deadline;
use super::{
    DispatchError, DispatchOutput, DispatchRecord, Dispatcher, Ix, NodeEntry, NodeIx, NodeRecord,
    Stage, Timer, Transport,
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
        self.register_ix(node);
    }

    pub(super) fn register_ix(&mut self, node: &str) -> NodeIx {
        self.started = true;
        if let Some(nix) = self.node_ix(node) {
            return nix;
        }
        let nix = self.add_node(node);
        self.persist_node(nix);
        nix
    }

    /// A new node entry, without any record.
    pub(super) fn add_node(&mut self, node: &str) -> NodeIx {
        let name: Arc<str> = Arc::from(node);
        let nix = self.nodes.insert(NodeEntry::new(Arc::clone(&name)));
        self.node_names.insert(name, nix);
        nix
    }

    /// Removes a node entry (its commands have been dealt with).
    pub(super) fn remove_node(&mut self, node: &str) -> Option<NodeEntry> {
        let nix = self.node_names.remove(node)?;
        self.nodes.remove(nix)
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
        let nix = self.register_ix(node);
        let entry = &mut self.nodes[nix];
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
                self.touch(now, nix);
                self.resend_in_flight(now, nix, conn, version);
            }
            None => self.renew_lease(now, nix),
        }
        self.pump(now, nix);
    }

    /// The hub connection `conn` of `node` ended. Nothing else changes: the node stays online
    /// until `offline_after` after its last heartbeat, and its commands wait for it to attach
    /// again. A `conn` that is not the node's current connection is ignored.
    pub fn node_disconnected(&mut self, now: Instant, node: &str, conn: ConnId) {
        let _ = now;
        if let Some(nix) = self.node_ix(node) {
            let entry = &mut self.nodes[nix];
            if matches!(&entry.attached, Some(Transport::Hub { conn: c, .. }) if *c == conn) {
                entry.attached = None;
            }
        }
    }

    /// A heartbeat (hub or REST): the node is online until `offline_after` from now. Its
    /// `capabilities.slots`, when present, replace the advertised slots.
    pub fn heartbeat(&mut self, now: Instant, node: &str, heartbeat: &HeartbeatDto) {
        let slots = heartbeat.capabilities.as_ref().map(|c| c.slots);
        self.heartbeat_slots(now, node, slots);
    }

    /// [`heartbeat`](Self::heartbeat) for a caller that has only the heartbeat's
    /// `capabilities.slots` (`None`: no `capabilities`).
    pub fn heartbeat_slots(&mut self, now: Instant, node: &str, slots: Option<u32>) {
        // The hot path: an online node, nothing to persist. One lookup, no allocation.
        let every = self.config.persist_seen_every;
        let default = self.config.default_slots;
        if let Some(nix) = self.node_ix(node) {
            let entry = &mut self.nodes[nix];
            let persist_due = entry
                .seen_persisted_at
                .is_none_or(|at| saturating_add(at, every) <= now);
            if entry.online && entry.offline_timer.is_some() && !persist_due {
                entry.last_contact = Some(now);
                let more_room = slots.is_some_and(|slots| {
                    effective_slots(slots, default) > effective_slots(entry.slots, default)
                });
                if let Some(slots) = slots {
                    entry.slots = slots;
                }
                if more_room {
                    self.pump(now, nix);
                }
                return;
            }
        }
        let nix = match self.node_ix(node) {
            Some(nix) => nix,
            None => self.register_ix(node),
        };
        let entry = &mut self.nodes[nix];
        let mut more_room = false;
        if let Some(slots) = slots {
            more_room = effective_slots(slots, default) > effective_slots(entry.slots, default);
            entry.slots = slots;
        }
        let became_online = self.touch(now, nix);
        if became_online || more_room {
            self.pump(now, nix);
        }
    }

    /// The node's effective scopes from now on (its `ScopeChanged`, or the grant at approval).
    /// Commands waiting for it (queued or awaiting approval) whose `required_scope` the new set
    /// does not allow end `not_authorized`; commands with the node are left to it (the node
    /// checks scopes too).
    pub fn set_scopes(&mut self, now: Instant, node: &str, scopes: ScopeSet) {
        let nix = self.register_ix(node);
        self.nodes[nix].scopes = scopes;
        self.persist_node(nix);
        let entry = &self.nodes[nix];
        let refused: Vec<(Ix, String)> = entry
            .awaiting
            .values()
            .chain(entry.queue.values())
            .filter_map(|ix| {
                let scope = self.commands.get(*ix)?.record.required_scope.as_ref()?;
                (!entry.scopes.allows(scope)).then(|| (*ix, scope.clone()))
            })
            .collect();
        for (ix, scope) in refused {
            let message = format!("the node no longer holds scope {scope}");
            self.finish_synthesized(now, ix, ErrorCode::NotAuthorized, message);
        }
    }

    /// The node's access is revoked: every command of it that has not ended (awaiting approval,
    /// queued, or with the node) ends `cancelled`, and the node is forgotten (offline, no longer
    /// registered: a new `dispatch` to it is [`DispatchError::UnknownNode`]). Returns how many
    /// commands it cancelled.
    pub fn revoke(&mut self, now: Instant, node: &str) -> Result<usize, DispatchError> {
        self.started = true;
        let Some(nix) = self.node_ix(node) else {
            return Err(DispatchError::UnknownNode {
                node: node.to_owned(),
            });
        };
        let entry = &mut self.nodes[nix];
        // Detached first, so that no freed slot sends anything.
        entry.attached = None;
        let ixs: Vec<Ix> = entry
            .awaiting
            .values()
            .chain(entry.queue.values())
            .chain(entry.in_flight.values())
            .copied()
            .collect();
        for ix in &ixs {
            let message = "cancelled: the node's access was revoked".to_owned();
            self.finish_synthesized(now, *ix, ErrorCode::Cancelled, message);
        }
        let entry = self.remove_node(node).expect("present above");
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
        Ok(ixs.len())
    }

    /// A poll by a polling node: it is attached by polling (a poll is not a heartbeat) and holds
    /// its leases for `lease_for` from now. Queued commands are leased as capacity allows (only
    /// while the node is online and not paused by `busy`), and the answer lists every command
    /// leased to the node that has not ended, in dispatch order, at most `max` of them, each
    /// with the time left to its deadline as `timeoutMs` (docs/protocol.md 7.4: the same command
    /// appears in every answer until its result is recorded).
    pub fn lease(&mut self, now: Instant, node: &str, max: usize) -> Vec<ExecuteCommandDto> {
        let nix = self.register_ix(node);
        let entry = &mut self.nodes[nix];
        if !matches!(entry.attached, Some(Transport::Poll)) {
            entry.attached = Some(Transport::Poll);
            entry.paused_until = None;
        }
        self.renew_lease(now, nix);
        self.take_from_queue(now, nix, false);
        self.nodes[nix]
            .in_flight
            .values()
            .filter_map(|ix| self.commands.get(*ix))
            .filter(|command| command.cancel.is_none())
            .take(max)
            .map(|command| Self::execute_dto(command, now, None))
            .collect()
    }

    /// Sends queued commands to a hub node as capacity allows.
    pub(super) fn pump(&mut self, now: Instant, nix: NodeIx) {
        let Some(entry) = self.nodes.get(nix) else {
            return;
        };
        if matches!(entry.attached, Some(Transport::Hub { .. })) {
            self.take_from_queue(now, nix, true);
        }
    }

    /// Whether the node can take one more command now: online, not paused, below its slots.
    fn has_room(&self, nix: NodeIx) -> bool {
        let entry = &self.nodes[nix];
        let slots = effective_slots(entry.slots, self.config.default_slots);
        entry.online && entry.paused_until.is_none() && entry.in_flight.len() < slots as usize
    }

    /// A new command goes straight to its hub node when nothing is queued before it and the
    /// node has room: what queueing it and pumping the queue would do, without the queue.
    pub(super) fn send_at_once(&mut self, now: Instant, nix: NodeIx, ix: Ix) -> bool {
        let entry = &self.nodes[nix];
        if !entry.queue.is_empty()
            || !matches!(entry.attached, Some(Transport::Hub { .. }))
            || !self.has_room(nix)
            || self.commands[ix].deadline <= now
        {
            return false;
        }
        self.go_out(now, nix, ix, true);
        true
    }

    /// Moves commands from the head of the queue to the node while it is online, not paused,
    /// and below its slots: sent on its hub connection (`hub`), or leased. A command whose
    /// deadline has come ends `timeout` instead.
    fn take_from_queue(&mut self, now: Instant, nix: NodeIx, hub: bool) {
        loop {
            if self.nodes.get(nix).is_none() || !self.has_room(nix) {
                return;
            }
            let Some((_, ix)) = self.nodes[nix].queue.pop_first() else {
                return;
            };
            let command = &self.commands[ix];
            if command.deadline <= now {
                // Detached already; a queued command frees no slot, so nothing recurses.
                let ms = command.timeout.as_millis();
                let message = format!("not dispatched within the timeout of {ms} ms");
                self.finish_synthesized(now, ix, ErrorCode::Timeout, message);
                continue;
            }
            self.go_out(now, nix, ix, hub);
        }
    }

    /// The command (detached) goes to its node under a new dispatch number: an
    /// `ExecuteCommand` on the node's hub connection (`hub`), or a lease.
    fn go_out(&mut self, now: Instant, nix: NodeIx, ix: Ix, hub: bool) {
        let seq = self.next_seq;
        self.next_seq += 1;
        let entry = &mut self.nodes[nix];
        entry.in_flight.insert(seq, ix);
        let command = &mut self.commands[ix];
        command.stage = Stage::InFlight {
            seq,
            at: now,
            progress: None,
        };
        let until = command_grace_deadline(command, self.config.result_grace);
        self.arm(ix, until);
        if hub {
            let entry = &self.nodes[nix];
            if let Some(Transport::Hub {
                conn,
                protocol_version,
            }) = &entry.attached
            {
                let command = &self.commands[ix];
                let execute = Self::execute(command, now, protocol_version.clone());
                let send = DispatchOutput::Execute {
                    node: Arc::clone(&entry.name),
                    conn: *conn,
                    execute,
                };
                self.emit(send);
            }
        }
        self.status_changed(ix);
    }

    /// A new hub connection: every command with the node goes out again, in dispatch order.
    fn resend_in_flight(
        &mut self,
        now: Instant,
        nix: NodeIx,
        conn: ConnId,
        version: Option<Arc<str>>,
    ) {
        let entry = &self.nodes[nix];
        let ixs: Vec<Ix> = entry.in_flight.values().copied().collect();
        let name = Arc::clone(&entry.name);
        for ix in ixs {
            let Some(command) = self.commands.get_mut(ix) else {
                continue;
            };
            let node = Arc::clone(&name);
            let output = if command.cancel.is_some() {
                let call = GatewayCall::CancelCommand(CancelCommandDto {
                    command_id: String::from(&*command.id),
                    reason: None,
                });
                DispatchOutput::Send {
                    node,
                    conn,
                    call: Box::new(call),
                }
            } else {
                if let Stage::InFlight { at, .. } = &mut command.stage {
                    *at = now;
                }
                let execute = Self::execute(command, now, version.clone());
                DispatchOutput::Execute {
                    node,
                    conn,
                    execute,
                }
            };
            self.emit(output);
        }
    }

    /// A heartbeat or a hub connection: returns whether the node became online.
    fn touch(&mut self, now: Instant, nix: NodeIx) -> bool {
        let offline_after = self.config.offline_after;
        let every = self.config.persist_seen_every;
        let entry = &mut self.nodes[nix];
        entry.last_contact = Some(now);
        if entry.offline_timer.is_none() {
            let at = saturating_add(now, offline_after);
            entry.offline_timer = Some(at);
            self.timers
                .insert(Timer::Offline(String::from(&*entry.name)), at);
        }
        let became_online = !entry.online;
        let persist = became_online
            || entry
                .seen_persisted_at
                .is_none_or(|at| saturating_add(at, every) <= now);
        if became_online {
            entry.online = true;
            let node = String::from(&*entry.name);
            self.emit(DispatchOutput::NodeOnline { node });
        }
        if persist {
            let ms = self.unix_ms(now);
            let entry = &mut self.nodes[nix];
            entry.last_seen_ms = Some(ms);
            entry.seen_persisted_at = Some(now);
            self.persist_node(nix);
        }
        became_online
    }

    fn persist_node(&mut self, nix: NodeIx) {
        if let Some(entry) = self.nodes.get(nix) {
            let record = NodeRecord {
                node: String::from(&*entry.name),
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
        let Some(nix) = self.node_ix(&node) else {
            return;
        };
        let entry = &mut self.nodes[nix];
        entry.offline_timer = None;
        let Some(last) = entry.last_contact else {
            return;
        };
        let due = saturating_add(last, offline_after);
        let last_ms = self.unix_ms(last);
        let entry = &mut self.nodes[nix];
        if due > now {
            entry.offline_timer = Some(due);
            self.timers.insert(Timer::Offline(node), due);
            return;
        }
        if entry.online {
            entry.online = false;
            entry.last_seen_ms = Some(last_ms);
            entry.seen_persisted_at = Some(now);
            self.persist_node(nix);
            self.emit(DispatchOutput::NodeOffline { node, at: due });
        }
    }

    /// The `Resume` timer: a `busy` pause ended.
    pub(super) fn resume_timer(&mut self, now: Instant, node: &str) {
        let Some(nix) = self.node_ix(node) else {
            return;
        };
        let entry = &mut self.nodes[nix];
        match entry.paused_until {
            Some(until) if until > now => {
                self.timers.insert(Timer::Resume(node.to_owned()), until);
            }
            _ => {
                entry.paused_until = None;
                self.pump(now, nix);
            }
        }
    }

    /// Pauses the node after a `busy` answer, until `until` at the earliest.
    pub(super) fn pause(&mut self, node: &str, until: Instant) {
        if let Some(nix) = self.node_ix(node) {
            let entry = &mut self.nodes[nix];
            let until = entry.paused_until.map_or(until, |at| at.max(until));
            entry.paused_until = Some(until);
            self.timers.insert(Timer::Resume(node.to_owned()), until);
        }
    }

    fn renew_lease(&mut self, now: Instant, nix: NodeIx) {
        let until = saturating_add(now, self.config.lease_for);
        let entry = &mut self.nodes[nix];
        entry.lease_until = Some(until);
        if entry.lease_timer.is_none() {
            entry.lease_timer = Some(until);
            self.timers
                .insert(Timer::Lease(String::from(&*entry.name)), until);
        }
    }

    /// The `Lease` timer: a polling node that has not polled for `lease_for` loses its leases:
    /// the commands go back to the head of its queue, in dispatch order.
    pub(super) fn lease_timer(&mut self, now: Instant, node: String) {
        let Some(nix) = self.node_ix(&node) else {
            return;
        };
        let entry = &mut self.nodes[nix];
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
        let ixs: Vec<Ix> = entry.in_flight.values().rev().copied().collect();
        let mut returned = Vec::with_capacity(ixs.len());
        for ix in ixs {
            if self.commands.get(ix).is_some_and(|c| c.cancel.is_some()) {
                let message = "cancelled; the node did not confirm in time".to_owned();
                self.finish_synthesized(now, ix, ErrorCode::Cancelled, message);
                continue;
            }
            self.detach_command(ix);
            self.enqueue_front(ix);
            returned.push(ix);
        }
        for ix in returned.into_iter().rev() {
            self.status_changed(ix);
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
