//! Admission: the checks a new command passes, in order, and handing it to its executor or its
//! group's queue.

use std::time::{Duration, Instant};

use serde_json::Value;

use super::types::{clip, error_result, millis};
use super::{CommandAction, CommandTable, ExecuteRequest, Live, ProgressGate, Stage, Timer, CLIP};
use crate::scope::ScopeSet;
use crate::time::saturating_add;
use crate::wire::dto::{CommandResultDto, ErrorCode, ExecuteCommandDto};

impl CommandTable {
    /// Admits `dto` (already known to be new) or returns the rejection to send.
    pub(super) fn admit(
        &mut self,
        now: Instant,
        dto: ExecuteCommandDto,
        scopes: &ScopeSet,
    ) -> Result<(), Box<CommandResultDto>> {
        let id = dto.command_id.as_str();
        let version = dto.protocol_version.clone();
        let reject = |code, message| {
            Box::new(error_result(
                id,
                code,
                message,
                Duration::ZERO,
                version.clone(),
            ))
        };
        if let Some(v) = &dto.protocol_version {
            if !self.limits.protocol_versions.iter().any(|known| known == v) {
                return Err(reject(
                    ErrorCode::InvalidParams,
                    format!(
                        "protocolVersion {:?} is not one this node speaks ({})",
                        clip(v, CLIP),
                        self.limits.protocol_versions.join(", ")
                    ),
                ));
            }
        }
        let Some(spec) = self.specs.get(&dto.command) else {
            return Err(reject(
                ErrorCode::PlatformUnsupported,
                format!(
                    "unknown command {:?}: this node has no executor for it (no scope was checked)",
                    clip(&dto.command, CLIP)
                ),
            ));
        };
        if let Some(scope) = &spec.required_scope {
            if !scopes.allows(scope) {
                return Err(reject(
                    ErrorCode::NotAuthorized,
                    format!(
                        "command {:?} needs scope {:?}, which this node does not hold",
                        spec.name, scope
                    ),
                ));
            }
        }
        let params = dto
            .params
            .clone()
            .unwrap_or_else(|| Value::Object(serde_json::Map::new()));
        if let Some(validate) = &spec.validate {
            if let Err(message) = validate(&params) {
                return Err(reject(ErrorCode::InvalidParams, message));
            }
        }
        let timeout = match dto.timeout_ms {
            Some(ms) => Duration::from_millis(ms),
            None => self.limits.default_timeout,
        }
        .min(self.limits.max_timeout);
        let deadline = saturating_add(now, timeout);
        if deadline <= now {
            return Err(reject(
                ErrorCode::Timeout,
                format!(
                    "timeoutMs is {}: the deadline has passed before the command could start",
                    millis(timeout)
                ),
            ));
        }
        if self.live.len() >= self.limits.slots {
            let mut rejection = reject(
                ErrorCode::Busy,
                format!("all {} slots in use", self.limits.slots),
            );
            if let Some(error) = rejection.error.as_mut() {
                error.retry_after_ms = Some(millis(self.limits.busy_retry_after));
            }
            return Err(rejection);
        }
        let group = spec.serialization_key.clone();
        let request = ExecuteRequest {
            command_id: dto.command_id.clone(),
            command: dto.command,
            params,
            deadline,
            originated_by: dto.originated_by,
        };
        let id = dto.command_id;
        self.live.insert(
            id.clone(),
            Live {
                group: group.clone(),
                arrival: now,
                timeout,
                deadline,
                protocol_version: dto.protocol_version,
                stage: Stage::Queued(request),
            },
        );
        self.timers.insert(Timer::Deadline(id.clone()), deadline);
        match group {
            None => self.start(&id),
            Some(key) => {
                let group = self.groups.entry(key).or_default();
                if group.running.is_none() {
                    group.running = Some(id.clone());
                    self.start(&id);
                } else {
                    group.queue.push_back(id);
                }
            }
        }
        Ok(())
    }

    /// Hands the queued command `id` to its executor.
    pub(super) fn start(&mut self, id: &str) {
        let Some(live) = self.live.get_mut(id) else {
            return;
        };
        let stage = std::mem::replace(&mut live.stage, Stage::Executing(ProgressGate::default()));
        if let Stage::Queued(request) = stage {
            self.executing += 1;
            self.actions.push_back(CommandAction::Execute(request));
        }
    }
}
