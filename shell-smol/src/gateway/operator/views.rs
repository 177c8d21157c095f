//! The JSON shapes of the operator API (docs/gateway.md lists them) and the request bodies.

use std::time::Instant;

use nodelink_core::gateway::dispatch::{CommandOutcome, CommandStatus, DispatchError};
use nodelink_core::gateway::pairing::{PairingError, PendingPairing};
use nodelink_core::gateway::{GatewayError, NodeView};
use serde::Deserialize;
use serde_json::{json, Value};

pub(crate) fn node(view: &NodeView) -> Value {
    json!({
        "nodeId": view.node_id,
        "status": if view.revoked { "revoked" } else if view.online { "online" } else { "offline" },
        "online": view.online,
        "connected": view.connected,
        "revoked": view.revoked,
        "name": view.name,
        "platform": view.platform,
        "scopes": view.scopes,
        "lastHeartbeat": view.last_heartbeat,
        "lastContactUnixMs": view.last_contact_unix_ms,
        "inFlight": view.in_flight,
    })
}

pub(crate) fn pairing(p: &PendingPairing) -> Value {
    json!({
        "code": p.code,
        "nodeId": p.node_id,
        "name": p.name,
        "platform": p.platform,
        "requestedAtUnixMs": p.requested_at_unix_ms,
        "ageMs": u64::try_from(p.age.as_millis()).unwrap_or(u64::MAX),
        "expiresInMs": u64::try_from(p.expires_in.as_millis()).unwrap_or(u64::MAX),
        "approvedScopes": p.approved_scopes,
    })
}

/// A command's status; a finished one carries its outcome.
pub(crate) fn command(command_id: &str, status: &CommandStatus, now: Instant) -> Value {
    let ms = |at: &Instant| u64::try_from(now.saturating_duration_since(*at).as_millis()).ok();
    match status {
        CommandStatus::AwaitingApproval => {
            json!({"commandId": command_id, "status": "awaitingApproval"})
        }
        CommandStatus::Queued { position } => {
            json!({"commandId": command_id, "status": "queued", "position": position})
        }
        CommandStatus::Dispatched { at } => {
            json!({"commandId": command_id, "status": "dispatched", "sinceMs": ms(at)})
        }
        CommandStatus::Running { progress } => {
            json!({"commandId": command_id, "status": "running", "progress": progress})
        }
        CommandStatus::Cancelling { since } => {
            json!({"commandId": command_id, "status": "cancelling", "sinceMs": ms(since)})
        }
        CommandStatus::Finished(outcome) => finished(command_id, outcome),
    }
}

pub(crate) fn finished(command_id: &str, outcome: &CommandOutcome) -> Value {
    json!({
        "commandId": command_id,
        "status": "finished",
        "ok": outcome.result.ok,
        "synthesized": outcome.synthesized,
        "result": &*outcome.result,
    })
}

/// The HTTP status and message of a refused operator action.
pub(crate) fn gateway_error(error: &GatewayError) -> (u16, String) {
    let status = match error {
        GatewayError::UnknownNode(_) => 404,
        GatewayError::Dispatch(e) => match e {
            DispatchError::UnknownNode { .. } | DispatchError::UnknownCommand { .. } => 404,
            DispatchError::QueueFull { .. } => 429,
            DispatchError::NotAuthorized { .. } => 403,
            DispatchError::InvalidTimeout { .. } => 400,
            DispatchError::NotAwaitingApproval { .. } | DispatchError::AlreadyFinished { .. } => {
                409
            }
            _ => 500,
        },
        GatewayError::Pairing(e) => match e {
            PairingError::UnknownCode { .. } => 404,
            PairingError::AlreadyApproved { .. } | PairingError::AlreadyPaired { .. } => 409,
            PairingError::InvalidScopes(_) => 400,
            _ => 400,
        },
        _ => 500,
    };
    (status, error.to_string())
}

/// `POST /api/admin/commands`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct DispatchBody {
    pub node: String,
    pub command: String,
    #[serde(default)]
    pub params: Option<Value>,
    /// Absent: the gateway's default command timeout.
    #[serde(default)]
    pub timeout_ms: Option<u64>,
    /// Wait for the outcome (up to the timeout) instead of returning the id at once.
    #[serde(default)]
    pub wait: bool,
    #[serde(default)]
    pub critical: bool,
    #[serde(default)]
    pub required_scope: Option<String>,
}

/// `POST .../approve` of a pairing, `PUT .../scopes` of a node.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct ScopesBody {
    #[serde(default)]
    pub scopes: Vec<String>,
}

/// `POST .../revoke`, `.../reject`, `.../cancel`.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct ReasonBody {
    #[serde(default)]
    pub reason: Option<String>,
}
