//! The node's side of results: heartbeats and scopes, chunking results, and the results kept
//! while no link is up.

use std::sync::Arc;
use std::time::Instant;

use crate::chunk;
use crate::scope::ScopeSet;
use crate::wire::contract::NodeCall;
use crate::wire::dto::{Capabilities, CommandError, CommandResultDto, ErrorCode, HeartbeatDto};

use super::{Link, Node};
use crate::node::config::{Dialect, NodeEvent, NodeOutput};

impl Node {
    pub(super) fn capabilities(&self) -> Capabilities {
        Capabilities {
            commands: self.commands.command_names(),
            slots: u32::try_from(self.commands.slots()).unwrap_or(u32::MAX),
            gpus: self.config.gpus.clone(),
        }
    }

    pub(super) fn heartbeat(&self, now: Instant) -> HeartbeatDto {
        HeartbeatDto {
            node_id: self.node_id.clone(),
            status: "online".to_string(),
            uptime: now.saturating_duration_since(self.started).as_secs(),
            platform: self.config.platform.clone(),
            version: self.config.version.clone(),
            cpu_percent: self.stats.cpu_percent,
            memory_mb: self.stats.memory_mb,
            capabilities: Some(self.capabilities()),
        }
    }

    pub(super) fn send_heartbeat(&mut self, now: Instant) {
        let heartbeat = self.heartbeat(now);
        // Refused only by a link that is ending: its next connection heartbeats afresh.
        match &mut self.link {
            Link::Hub(hub) => {
                let _ = hub.send_call(now, NodeCall::Heartbeat(heartbeat));
            }
            Link::Polling(polling) => {
                let _ = polling.queue_heartbeat(now, heartbeat);
            }
            // The LLM link keeps its own empty-text heartbeat.
            Link::Llm(_) | Link::None => {}
        }
    }

    pub(super) fn refresh_scopes(&mut self, now: Instant, scopes: Vec<String>) {
        let (granted, rejected) = ScopeSet::parse_lenient(scopes);
        for error in rejected {
            self.outputs
                .push_back(NodeOutput::Event(NodeEvent::PeerMisbehaved(format!(
                    "RefreshScopes: {error}"
                ))));
        }
        self.granted = granted;
        self.effective = self.granted.intersect(&self.config.local_scopes);
        let effective = self.effective.to_vec();
        if let Link::Hub(hub) = &mut self.link {
            let _ = hub.send_call(now, NodeCall::ScopeChanged(effective.clone()));
        }
        self.outputs
            .push_back(NodeOutput::Event(NodeEvent::ScopesChanged(effective)));
    }

    /// A terminal result from the table: chunked, then sent or kept for the next link.
    pub(super) fn send_result(&mut self, now: Instant, result: Arc<CommandResultDto>) {
        if matches!(self.config.dialect, Dialect::Llm { .. }) {
            // The LLM dialect has no error frame: every end is the finished frame, and a task
            // whose connection is gone is not answered at all.
            if let (Link::Llm(llm), Ok(id)) = (&mut self.link, result.command_id.parse::<u32>()) {
                llm.finish(now, id);
            }
            return;
        }
        let parts = match chunk::split(&result, self.config.field_cap) {
            Ok(parts) => parts,
            Err(error) => vec![internal_error(
                &result,
                format!("cannot split result: {error}"),
            )],
        };
        for mut part in parts {
            // A command that named no version is answered in the link's.
            if part.protocol_version.is_none() {
                part.protocol_version = Some(self.protocol_version.clone());
            }
            self.send_part(now, part);
        }
    }

    pub(super) fn send_part(&mut self, now: Instant, part: CommandResultDto) {
        // The links refuse a part only on misuse (a hub that is not ready, which is checked; a
        // polling client already stopped, which is replaced before it could be asked; an id no
        // URL can carry, which no retry would fix): the part is not worth a clone per send.
        match &mut self.link {
            Link::Hub(hub) if hub.is_ready() => {
                let _ = hub.send_result(now, part);
            }
            Link::Polling(polling) => {
                let _ = polling.queue_result(now, part);
            }
            _ => self.keep_part(part),
        }
    }

    /// Keeps a part until a link is ready, within `max_pending_result_bytes`: beyond it the
    /// oldest whole results give way, each replaced by a small `internal_error` result in its
    /// place, so that the gateway still learns how every command ended.
    pub(super) fn keep_part(&mut self, part: CommandResultDto) {
        let pending = PendingPart::new(part, false);
        self.pending_bytes += pending.size;
        self.pending_results.push_back(pending);
        self.enforce_pending_bound();
    }

    /// Parts a link gave back (sent but not acknowledged) go first on the next link, and count
    /// against the same bound.
    pub(super) fn requeue_front(&mut self, parts: Vec<CommandResultDto>) {
        for part in parts.into_iter().rev() {
            let pending = PendingPart::new(part, false);
            self.pending_bytes += pending.size;
            self.pending_results.push_front(pending);
        }
        self.enforce_pending_bound();
    }

    fn enforce_pending_bound(&mut self) {
        while self.pending_bytes > self.config.max_pending_result_bytes {
            let Some(at) = self.pending_results.iter().position(|p| !p.stand_in) else {
                break;
            };
            let victim = self.pending_results[at].part.clone();
            self.pending_results
                .retain(|p| p.stand_in || p.part.command_id != victim.command_id);
            self.pending_bytes = self.pending_results.iter().map(|p| p.size).sum();
            let stand_in = PendingPart::new(
                internal_error(
                    &victim,
                    format!(
                        "result discarded: more than {} bytes of results waited for a connection",
                        self.config.max_pending_result_bytes
                    ),
                ),
                true,
            );
            self.pending_bytes += stand_in.size;
            self.pending_results.insert(at, stand_in);
            self.event(NodeEvent::ResultDiscarded {
                command_id: victim.command_id,
            });
        }
    }
}

/// A result part waiting for a link, with its JSON size.
pub(super) struct PendingPart {
    pub(super) part: CommandResultDto,
    pub(super) size: usize,
    /// An `internal_error` standing in for a result discarded for room: never discarded itself.
    stand_in: bool,
}

impl PendingPart {
    pub(super) fn new(part: CommandResultDto, stand_in: bool) -> PendingPart {
        let size = serde_json::to_vec(&part).map_or(0, |bytes| bytes.len());
        PendingPart {
            part,
            size,
            stand_in,
        }
    }
}

/// A one-part `internal_error` result standing in for `result`.
fn internal_error(result: &CommandResultDto, message: String) -> CommandResultDto {
    CommandResultDto {
        command_id: result.command_id.clone(),
        ok: false,
        result: None,
        error: Some(CommandError {
            code: ErrorCode::InternalError,
            message,
            details: None,
            retry_after_ms: None,
        }),
        duration_ms: result.duration_ms,
        part_index: None,
        is_last: None,
        protocol_version: result.protocol_version.clone(),
    }
}
