//! The pump: reacting to what the sub-machines say until none has anything left to say.

use std::time::Instant;

use crate::wire::contract::{GatewayCall, NodeCall};
use crate::wire::dto::ExecuteCommandDto;

use super::{Link, Node, Requester};
use crate::node::commands::CommandAction;
use crate::node::config::{NodeEvent, NodeOutput, NodeState, LLM_COMMAND};
use crate::node::http::{HttpCall, HttpResult};
use crate::node::hub::{HubEvent, HubOutput, LinkEnd};
use crate::node::llm_link::{LlmEnd, LlmEvent, LlmOutput};
use crate::node::pairing::{PairingClient, PairingEvent};
use crate::node::polling::PollingEvent;
use crate::node::RequestId;

impl Node {
    pub(super) fn handle_http(&mut self, now: Instant, request: RequestId, result: HttpResult) {
        let Some(requester) = self.requests.remove(&request) else {
            return;
        };
        match (requester, &mut self.link) {
            // The sub-machines refuse an answer only when none is in flight, which the request
            // numbering rules out.
            (Requester::Pairing, _) => {
                if let Some(pairing) = &mut self.pairing {
                    let _ = pairing.handle_response(now, result);
                }
            }
            (Requester::Hub, Link::Hub(hub)) => hub.handle_http_response(now, result),
            (Requester::Polling, Link::Polling(polling)) => {
                let _ = polling.handle_response(now, result);
            }
            _ => {}
        }
    }

    /// Numbers a request and joins its path with `base` (the gateway URL, or the hub's origin).
    pub(super) fn http(&mut self, requester: Requester, base: &str, call: HttpCall) {
        let request = RequestId(self.next_request);
        self.next_request += 1;
        self.requests.insert(request, requester);
        let url = format!("{}{}", base.trim_end_matches('/'), call.path);
        self.outputs
            .push_back(NodeOutput::Http { request, url, call });
    }

    /// Reacts to the sub-machines' outputs until none has anything left to say.
    pub(super) fn pump(&mut self, now: Instant) {
        loop {
            let mut moved = false;
            moved |= self.drain_pairing(now);
            moved |= self.drain_commands(now);
            moved |= self.drain_link(now);
            if !moved {
                break;
            }
        }
    }

    pub(super) fn drain_pairing(&mut self, now: Instant) -> bool {
        let mut moved = false;
        while let Some(call) = self.pairing.as_mut().and_then(PairingClient::poll_request) {
            let base = self.config.gateway_url.clone();
            self.http(Requester::Pairing, &base, call);
            moved = true;
        }
        while let Some(event) = self.pairing.as_mut().and_then(PairingClient::poll_event) {
            moved = true;
            match event {
                PairingEvent::Code(code) => self.event(NodeEvent::PairingCode(code)),
                PairingEvent::Approved { token, gateway_url } => {
                    self.pairing = None;
                    self.node_id = token.node_id().to_string();
                    self.token = Some(token.clone());
                    self.event(NodeEvent::Paired { token, gateway_url });
                    self.start_link(now);
                }
                PairingEvent::Rejected { reason } => {
                    self.pairing = None;
                    self.set_state(NodeState::Unpaired);
                    self.event(NodeEvent::PairingRejected { reason });
                }
                PairingEvent::Expired => {
                    self.pairing = None;
                    self.set_state(NodeState::Unpaired);
                    self.event(NodeEvent::PairingExpired);
                }
                PairingEvent::Refused { status, error } => {
                    self.pairing = None;
                    self.set_state(NodeState::Unpaired);
                    self.event(NodeEvent::RequestFailed(format!(
                        "the gateway refused the pairing request with status {status}: {error:?}"
                    )));
                }
                PairingEvent::RequestFailed { failure } => {
                    self.event(NodeEvent::RequestFailed(format!("pairing: {failure}")));
                }
            }
        }
        moved
    }

    pub(super) fn drain_commands(&mut self, now: Instant) -> bool {
        let mut moved = false;
        while let Some(action) = self.commands.poll_action() {
            moved = true;
            match action {
                CommandAction::Execute(request) => {
                    self.outputs.push_back(NodeOutput::Execute(request));
                }
                CommandAction::Cancel { command_id, reason } => {
                    self.outputs
                        .push_back(NodeOutput::Cancel { command_id, reason });
                }
                CommandAction::Result(result) => self.send_result(now, result),
                CommandAction::Progress(progress) => {
                    if let Link::Hub(hub) = &mut self.link {
                        let _ = hub.send_call(now, NodeCall::CommandProgress(progress));
                    }
                }
                CommandAction::Event(event) => self.event(NodeEvent::Command(event)),
            }
        }
        moved
    }

    pub(super) fn drain_link(&mut self, now: Instant) -> bool {
        let mut moved = false;
        loop {
            let link = self.link_id;
            let step = match &mut self.link {
                Link::Hub(hub) => hub.poll_output().map(Step::Hub),
                Link::Llm(llm) => llm.poll_output().map(Step::Llm),
                Link::Polling(polling) => polling
                    .poll_request()
                    .map(Step::PollingRequest)
                    .or_else(|| polling.poll_event().map(Step::Polling)),
                Link::None => None,
            };
            let Some(step) = step else {
                return moved;
            };
            moved = true;
            match step {
                Step::Hub(HubOutput::Http(call)) => {
                    let origin = match &self.link {
                        Link::Hub(hub) => hub.origin().to_string(),
                        _ => self.config.gateway_url.clone(),
                    };
                    self.http(Requester::Hub, &origin, call);
                }
                Step::Hub(HubOutput::OpenWebSocket { url, bearer }) => {
                    self.outputs.push_back(NodeOutput::OpenWebSocket {
                        link,
                        url,
                        bearer: Some(bearer),
                    });
                }
                Step::Hub(HubOutput::Send(frame)) | Step::Llm(LlmOutput::Send(frame)) => {
                    self.outputs.push_back(NodeOutput::Send { link, frame });
                }
                Step::Hub(HubOutput::Close { code, reason })
                | Step::Llm(LlmOutput::Close { code, reason }) => {
                    self.outputs
                        .push_back(NodeOutput::CloseWebSocket { link, code, reason });
                }
                Step::Hub(HubOutput::Event(event)) => self.on_hub_event(now, event),
                Step::Llm(LlmOutput::OpenWebSocket { url }) => {
                    self.outputs.push_back(NodeOutput::OpenWebSocket {
                        link,
                        url,
                        bearer: None,
                    });
                }
                Step::Llm(LlmOutput::Event(event)) => self.on_llm_event(now, event),
                Step::PollingRequest(call) => {
                    let base = self.config.gateway_url.clone();
                    self.http(Requester::Polling, &base, call);
                }
                Step::Polling(event) => self.on_polling_event(now, event),
            }
        }
    }

    pub(super) fn on_hub_event(&mut self, now: Instant, event: HubEvent) {
        match event {
            HubEvent::Ready {
                protocol_version, ..
            } => {
                self.protocol_version = protocol_version.clone();
                self.set_state(NodeState::Ready);
                self.event(NodeEvent::Connected { protocol_version });
                self.on_link_ready(now);
            }
            HubEvent::Call(call) => self.on_gateway_call(now, call),
            HubEvent::ResultAcknowledged { .. } => {}
            HubEvent::ResultRefused {
                command_id, error, ..
            } => self.event(NodeEvent::PeerMisbehaved(format!(
                "the gateway refused the result of {command_id}: {error}"
            ))),
            HubEvent::PeerMisbehaved(what) => {
                self.event(NodeEvent::PeerMisbehaved(what.to_string()))
            }
            HubEvent::Ended(end) => {
                let unacknowledged = match &mut self.link {
                    Link::Hub(hub) => hub.take_unacknowledged(),
                    _ => Vec::new(),
                };
                self.requeue_front(unacknowledged);
                // Failures that will not heal by themselves get the refusal floor.
                let refused = matches!(
                    end,
                    LinkEnd::Unauthorized { .. }
                        | LinkEnd::HandshakeRejected(_)
                        | LinkEnd::NoSharedVersion { .. }
                        | LinkEnd::ClosedByGateway {
                            allow_reconnect: false,
                            ..
                        }
                );
                self.on_link_ended(now, end.to_string(), refused, true);
            }
        }
    }

    pub(super) fn on_gateway_call(&mut self, now: Instant, call: GatewayCall) {
        match call {
            GatewayCall::ExecuteCommand(dto) => {
                let scopes = self.effective.clone();
                self.commands.receive(now, dto, &scopes);
            }
            GatewayCall::CancelCommand(dto) => {
                self.commands
                    .cancel(now, &dto.command_id, dto.reason.as_deref());
            }
            GatewayCall::RefreshScopes(scopes) => self.refresh_scopes(now, scopes),
            GatewayCall::RevokeAccess { reason } => self.revoke(now, reason),
        }
    }

    pub(super) fn on_llm_event(&mut self, now: Instant, event: LlmEvent) {
        match event {
            LlmEvent::Open => {
                self.set_state(NodeState::Ready);
                self.event(NodeEvent::Connected {
                    protocol_version: "llm".to_string(),
                });
                self.on_link_ready(now);
            }
            LlmEvent::Task(task) => {
                let dto = ExecuteCommandDto {
                    command_id: task.id.to_string(),
                    command: LLM_COMMAND.to_string(),
                    params: Some(task_params(&task)),
                    timeout_ms: Some(
                        u64::try_from(self.config.llm_task_timeout.as_millis()).unwrap_or(u64::MAX),
                    ),
                    originated_by: None,
                    protocol_version: None,
                };
                let scopes = self.effective.clone();
                self.commands.receive(now, dto, &scopes);
            }
            LlmEvent::Stop { id } => self.commands.cancel(now, &id.to_string(), None),
            LlmEvent::PeerMisbehaved(what) => {
                self.event(NodeEvent::PeerMisbehaved(what.to_string()))
            }
            LlmEvent::Ended {
                end, active_tasks, ..
            } => {
                // The server forgets a connection's tasks: stop their executors.
                for id in active_tasks {
                    self.commands.cancel(now, &id.to_string(), None);
                }
                let refused = matches!(end, LlmEnd::Rejected { .. } | LlmEnd::Replaced { .. });
                self.on_link_ended(now, format!("{end:?}"), refused, true);
            }
        }
    }

    pub(super) fn on_polling_event(&mut self, now: Instant, event: PollingEvent) {
        match event {
            PollingEvent::Commands {
                commands, scopes, ..
            } => {
                if let Some(scopes) = scopes {
                    self.refresh_scopes(now, scopes);
                }
                for dto in commands {
                    let scopes = self.effective.clone();
                    self.commands.receive(now, dto, &scopes);
                }
            }
            PollingEvent::Revoked { reason } => self.revoke(now, reason),
            PollingEvent::Unauthorized { .. } | PollingEvent::Forbidden { .. } => {
                let unsent = match &mut self.link {
                    Link::Polling(polling) => polling.take_queued_results(),
                    _ => Vec::new(),
                };
                self.requeue_front(unsent);
                self.on_link_ended(now, "unauthorized".to_string(), true, false);
            }
            PollingEvent::RequestFailed { failure, .. } => {
                self.event(NodeEvent::RequestFailed(format!("polling: {failure}")))
            }
            PollingEvent::ResultRefused {
                command_id, status, ..
            } => self.event(NodeEvent::PeerMisbehaved(format!(
                "the gateway refused the result of {command_id} with status {status}"
            ))),
            PollingEvent::ResultAccepted { .. } | PollingEvent::HeartbeatAccepted => {}
        }
    }

    pub(super) fn event(&mut self, event: NodeEvent) {
        self.outputs.push_back(NodeOutput::Event(event));
    }
}

enum Step {
    Hub(HubOutput),
    Llm(LlmOutput),
    PollingRequest(HttpCall),
    Polling(PollingEvent),
}

/// The params an `llm.chat` executor receives: the task's conversation and sampling settings,
/// with the dialect's defaults filled in.
fn task_params(task: &crate::wire::llm::Task) -> serde_json::Value {
    serde_json::json!({
        "system": task.system,
        "messages": task.messages.iter().map(|m| serde_json::json!({"role": m.role, "content": m.content})).collect::<Vec<_>>(),
        "max_new_tokens": task.effective_max_new_tokens(),
        "temperature": task.effective_temperature(),
    })
}
