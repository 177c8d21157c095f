//! The pump: reacting to what the sub-machines say until none has anything left to say.

use std::sync::Arc;
use std::time::Instant;

use crate::gateway::auth::AuthPersist;
use crate::gateway::dispatch::{DispatchOutput, ResultAck, Transport};
use crate::gateway::hub::{HubServerEvent, HubServerOutput};
use crate::gateway::pairing::PairingEvent;
use crate::gateway::ConnId;
use crate::scope::ScopeSet;
use crate::wire::contract::{answer_hello, GatewayCall, NodeCall};
use crate::wire::signalr::CompletionOutcome;

use super::{Gateway, GatewayEvent, GatewayOutput, KeptHeartbeat, StoreRecord};

impl Gateway {
    /// Drains every sub-machine until none moves.
    pub(super) fn pump(&mut self, now: Instant) {
        loop {
            let mut moved = false;
            while let Some(persist) = self.book.poll_persist() {
                moved = true;
                let AuthPersist::Node(record) = persist;
                self.outputs
                    .push_back(GatewayOutput::Persist(StoreRecord::Node(Box::new(record))));
            }
            while let Some(persist) = self.pairing.poll_persist() {
                moved = true;
                self.outputs
                    .push_back(GatewayOutput::Persist(StoreRecord::Pairing(Box::new(
                        persist,
                    ))));
            }
            while let Some(event) = self.pairing.poll_event() {
                moved = true;
                self.on_pairing_event(now, event);
            }
            while let Some(event) = self.hub.poll_event() {
                moved = true;
                self.on_hub_event(now, event);
            }
            while let Some(output) = self.dispatcher.poll_output() {
                moved = true;
                self.on_dispatch_output(now, output);
            }
            while let Some(output) = self.hub.poll_output() {
                moved = true;
                self.outputs.push_back(match output {
                    HubServerOutput::Send { conn, frame } => GatewayOutput::Send { conn, frame },
                    HubServerOutput::CloseSocket { conn, code, reason } => {
                        GatewayOutput::CloseSocket { conn, code, reason }
                    }
                });
            }
            if !moved {
                return;
            }
        }
    }

    fn on_pairing_event(&mut self, now: Instant, event: PairingEvent) {
        match event {
            PairingEvent::Requested { code, node_id, .. } => {
                self.event(GatewayEvent::PairingRequested { code, node_id });
            }
            PairingEvent::Delivered { node_id, reissued } => {
                // The node exists from its first token on; its grant is what dispatch checks.
                let scopes = self
                    .book
                    .get(&node_id)
                    .map(|r| r.scopes.clone())
                    .unwrap_or_default();
                self.dispatcher.register(&node_id);
                self.dispatcher
                    .set_scopes(now, &node_id, ScopeSet::parse_lenient(scopes).0);
                if reissued {
                    // A connection that used the previous token must not outlive it.
                    if let Some(conn) = self.node_conns.get(node_id.as_str()).copied() {
                        let _ = self.hub.close(
                            now,
                            conn,
                            Some("token reissued: connect with the new token".to_string()),
                            true,
                        );
                    }
                }
                self.event(GatewayEvent::Paired { node_id });
            }
            _ => {}
        }
    }

    fn on_hub_event(&mut self, now: Instant, event: HubServerEvent) {
        match event {
            HubServerEvent::Connected { conn, node, .. } => {
                // A second connection of the same node replaces the first.
                if let Some(old) = self.node_conns.insert(node.clone(), conn) {
                    if old != conn {
                        self.conn_nodes.remove(&old);
                        self.unattached.remove(&old);
                        let _ = self.hub.close(
                            now,
                            old,
                            Some("replaced by a newer connection of this node".to_string()),
                            false,
                        );
                    }
                }
                self.conn_nodes.insert(conn, node.clone());
                self.unattached.insert(conn);
                self.event(GatewayEvent::NodeConnected {
                    node: node.to_string(),
                    conn,
                });
            }
            HubServerEvent::Reconnected {
                conn,
                previous,
                node,
            } => {
                self.conn_nodes.remove(&previous);
                if self.unattached.remove(&previous) {
                    self.unattached.insert(conn);
                }
                self.conn_nodes.insert(conn, node.clone());
                self.node_conns.insert(node, conn);
            }
            HubServerEvent::Disconnected {
                conn,
                node,
                will_resume,
                ..
            } => {
                if will_resume {
                    return;
                }
                self.conn_nodes.remove(&conn);
                self.unattached.remove(&conn);
                if self.node_conns.get(&node) == Some(&conn) {
                    self.node_conns.remove(&node);
                }
                self.dispatcher.node_disconnected(now, &node, conn);
                self.event(GatewayEvent::NodeDisconnected {
                    node: node.to_string(),
                    conn,
                });
            }
            HubServerEvent::Misbehaved { node, error, .. } => {
                self.event(GatewayEvent::PeerMisbehaved {
                    node: node.to_string(),
                    detail: error.to_string(),
                });
            }
            HubServerEvent::Call {
                conn,
                node,
                invocation_id,
                call,
            } => self.on_call(now, conn, node, invocation_id, call),
            HubServerEvent::Heartbeat {
                conn,
                node,
                heartbeat,
            } => {
                // As a decoded Heartbeat `Call`, without decoding it: the dispatcher needs only
                // its slots, operators get it decoded when they ask.
                self.attach(now, conn, &node, None, None);
                self.dispatcher
                    .heartbeat_slots(now, &node, heartbeat.slots());
                self.keep_heartbeat(now, &node, KeptHeartbeat::Raw(heartbeat));
            }
        }
    }

    /// The node on `conn` takes commands from now on (after its `Hello`, or at its first other
    /// message for a node that does not say Hello), and learns its granted scopes.
    fn attach(
        &mut self,
        now: Instant,
        conn: ConnId,
        node: &str,
        protocol_version: Option<String>,
        slots: Option<u32>,
    ) {
        if !self.unattached.remove(&conn) {
            return;
        }
        let transport = Transport::Hub {
            conn,
            protocol_version: protocol_version.map(Arc::from),
        };
        self.dispatcher.node_connected(now, node, transport, slots);
        if let Some(record) = self.book.get(node) {
            let call = GatewayCall::RefreshScopes(record.scopes.clone());
            let _ = self.hub.send(now, conn, &call);
        }
    }

    fn on_call(
        &mut self,
        now: Instant,
        conn: ConnId,
        node: Arc<str>,
        invocation_id: Option<String>,
        call: NodeCall,
    ) {
        if let NodeCall::Hello(hello) = &call {
            let protocol = self.protocol_of(conn);
            let outcome = answer_hello(protocol, hello, self.supported_versions())
                .unwrap_or_else(|e| CompletionOutcome::Error(e.to_string()));
            let version = match &outcome {
                CompletionOutcome::Result(_) => crate::wire::contract::choose_protocol_version(
                    &hello.protocol_versions,
                    self.supported_versions(),
                ),
                _ => None,
            };
            let shared = matches!(outcome, CompletionOutcome::Result(_));
            if let Some(id) = invocation_id {
                let _ = self.hub.complete(now, conn, id, outcome);
            }
            // Without a shared version the node ends the link itself: no command goes out.
            if shared {
                let slots = hello.capabilities.as_ref().map(|c| c.slots);
                self.attach(now, conn, &node, version, slots);
            }
            return;
        }
        // A node that does not say Hello (a plain Sophon node) is attached at its first call.
        self.attach(now, conn, &node, None, None);
        match call {
            NodeCall::Heartbeat(heartbeat) => {
                self.dispatcher.heartbeat(now, &node, &heartbeat);
                self.keep_heartbeat(now, &node, KeptHeartbeat::Decoded(heartbeat));
            }
            NodeCall::CommandResult(result) => {
                let outcome = match self.dispatcher.result(now, &node, result) {
                    ResultAck::Ack => CompletionOutcome::Void,
                    ResultAck::Refuse(refusal) => CompletionOutcome::Error(refusal.message()),
                };
                if let Some(id) = invocation_id {
                    let _ = self.hub.complete(now, conn, id, outcome);
                }
            }
            NodeCall::CommandProgress(progress) => self.dispatcher.progress(now, &node, progress),
            NodeCall::ScopeChanged(scopes) => {
                // What the node enforces, never more than it was granted.
                let granted = self
                    .book
                    .get(&node)
                    .map(|r| ScopeSet::parse_lenient(r.scopes.clone()).0)
                    .unwrap_or_default();
                let effective = ScopeSet::parse_lenient(scopes).0.intersect(&granted);
                self.dispatcher.set_scopes(now, &node, effective);
            }
            NodeCall::Hello(_) => {}
        }
    }

    /// Where a call for `node` made for its connection `conn` goes: routed by node, since a
    /// stateful reconnect may have moved it to a new connection. Usually it is still on `conn`
    /// (one cheap lookup by number, not by name).
    fn route(&self, conn: ConnId, node: &str) -> Option<ConnId> {
        match self.conn_nodes.get(&conn) {
            Some(owner) if **owner == *node => Some(conn),
            _ => self.node_conns.get(node).copied(),
        }
    }

    fn on_dispatch_output(&mut self, _now: Instant, output: DispatchOutput) {
        match output {
            DispatchOutput::Execute {
                node,
                conn,
                execute,
            } => {
                if let Some(conn) = self.route(conn, &node) {
                    let _ = self.hub.send_execute(_now, conn, &execute);
                }
            }
            DispatchOutput::Send { node, conn, call } => {
                if let Some(conn) = self.route(conn, &node) {
                    let _ = self.hub.send(_now, conn, &call);
                }
            }
            DispatchOutput::Finished {
                command_id,
                node,
                outcome,
            } => self.outputs.push_back(GatewayOutput::Finished {
                command_id,
                node,
                outcome,
            }),
            DispatchOutput::Status { command_id, status } => {
                self.event(GatewayEvent::CommandStatus { command_id, status });
            }
            DispatchOutput::NodeOnline { node } => self.event(GatewayEvent::NodeOnline { node }),
            DispatchOutput::NodeOffline { node, .. } => {
                self.event(GatewayEvent::NodeOffline { node })
            }
            DispatchOutput::Persist(record) => self
                .outputs
                .push_back(GatewayOutput::Persist(StoreRecord::Dispatch(record))),
            DispatchOutput::Event(event) => self.event(GatewayEvent::Dispatch(event)),
        }
    }
}
