//! The node contract's data types exactly as they appear on the wire (seed 002, "Sophon"), plus
//! the nodelink extensions that a plain Sophon-style gateway ignores.
//!
//! Field names are camelCase on the wire. Optional fields are omitted when absent, never sent as
//! `null`. Unknown fields are ignored on input (forward compatibility).

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;

/// The protocol version this build speaks by default (the seed's current version).
pub const PROTOCOL_VERSION: &str = "2026-04-01";

/// The default per-command timeout when `timeoutMs` is absent (seed: "global 30-second default").
pub const DEFAULT_COMMAND_TIMEOUT_MS: u64 = 30_000;

/// `Heartbeat(dto)`, node -> gateway, every 30 s.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HeartbeatDto {
    pub node_id: String,
    /// `"online"` in practice; kept as text so that other states pass through.
    pub status: String,
    /// Seconds since the node process started.
    pub uptime: u64,
    pub platform: String,
    pub version: String,
    /// Must be finite: JSON has no NaN or infinity (serde_json would write `null`, which a
    /// receiver rejects as the wrong type).
    pub cpu_percent: f64,
    pub memory_mb: u64,
    /// nodelink extension: what this node can run. Absent from plain Sophon nodes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capabilities: Option<Capabilities>,
}

/// nodelink extension carried in the heartbeat: the node's executors and hardware.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Capabilities {
    /// Commands this node will accept (its registered executors).
    #[serde(default)]
    pub commands: Vec<String>,
    /// How many commands may run at once before the node answers `busy`.
    #[serde(default)]
    pub slots: u32,
    /// GPUs found by the node's probe; empty without one.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub gpus: Vec<GpuInfo>,
}

/// One GPU as the node's probe reports it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GpuInfo {
    pub index: u32,
    pub name: String,
    pub memory_total_mb: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compute_capability: Option<String>,
}

/// `ExecuteCommand(dto)`, gateway -> node.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ExecuteCommandDto {
    pub command_id: String,
    pub command: String,
    /// Command-specific parameters; absent means `{}` to the executor.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub params: Option<Value>,
    /// Absent: [`DEFAULT_COMMAND_TIMEOUT_MS`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub originated_by: Option<OriginatedBy>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol_version: Option<String>,
}

impl ExecuteCommandDto {
    /// The timeout that applies: `timeoutMs` or the 30 s default.
    pub fn effective_timeout_ms(&self) -> u64 {
        self.timeout_ms.unwrap_or(DEFAULT_COMMAND_TIMEOUT_MS)
    }
}

/// Who asked for a command (audit trail; opaque to the node).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OriginatedBy {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_id: Option<String>,
}

/// `CommandResult(dto)`, node -> gateway: one result, or one part of a chunked result.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CommandResultDto {
    pub command_id: String,
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<CommandError>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<u64>,
    /// Present on chunked results only: the part's index from 0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub part_index: Option<u32>,
    /// Present on chunked results only: true on the final part.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub is_last: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol_version: Option<String>,
}

/// The `error` object of a failed command.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CommandError {
    pub code: ErrorCode,
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub details: Option<Value>,
    /// Set with `busy`: when the gateway may try again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after_ms: Option<u64>,
}

/// `CommandResult.error.code`. Codes this build does not know are preserved in
/// [`ErrorCode::Other`], never rejected, so a newer peer's code survives a round trip.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ErrorCode {
    NotAuthorized,
    ApprovalRejected,
    Timeout,
    PlatformUnsupported,
    InvalidParams,
    Busy,
    Cancelled,
    InternalError,
    Other(String),
}

impl ErrorCode {
    /// The code as it appears on the wire.
    pub fn as_str(&self) -> &str {
        match self {
            ErrorCode::NotAuthorized => "not_authorized",
            ErrorCode::ApprovalRejected => "approval_rejected",
            ErrorCode::Timeout => "timeout",
            ErrorCode::PlatformUnsupported => "platform_unsupported",
            ErrorCode::InvalidParams => "invalid_params",
            ErrorCode::Busy => "busy",
            ErrorCode::Cancelled => "cancelled",
            ErrorCode::InternalError => "internal_error",
            ErrorCode::Other(code) => code,
        }
    }

    /// Parses a wire code; unknown codes become [`ErrorCode::Other`].
    pub fn parse(code: &str) -> ErrorCode {
        match code {
            "not_authorized" => ErrorCode::NotAuthorized,
            "approval_rejected" => ErrorCode::ApprovalRejected,
            "timeout" => ErrorCode::Timeout,
            "platform_unsupported" => ErrorCode::PlatformUnsupported,
            "invalid_params" => ErrorCode::InvalidParams,
            "busy" => ErrorCode::Busy,
            "cancelled" => ErrorCode::Cancelled,
            "internal_error" => ErrorCode::InternalError,
            other => ErrorCode::Other(other.to_string()),
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for ErrorCode {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for ErrorCode {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let code = std::borrow::Cow::<'de, str>::deserialize(deserializer)?;
        Ok(ErrorCode::parse(&code))
    }
}

/// nodelink extension `CommandProgress(dto)`, node -> gateway, rate-limited by the node.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CommandProgressDto {
    pub command_id: String,
    /// Fraction done, 0.0 to 1.0.
    pub progress: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step_count: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eta_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// nodelink extension `CancelCommand(dto)`, gateway -> node.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CancelCommandDto {
    pub command_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// nodelink extension `Hello(dto)`, node -> gateway, invoked once right after the SignalR
/// handshake and answered by a Completion carrying a [`HelloAckDto`] (protocolVersion
/// negotiation; see [`crate::wire::contract`]).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HelloDto {
    /// Must equal the nodeId part of the connection's token.
    pub node_id: String,
    /// The protocol versions this node speaks, newest first (ISO dates, `YYYY-MM-DD`).
    pub protocol_versions: Vec<String>,
    /// What this node can run; the same object the heartbeat may carry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capabilities: Option<Capabilities>,
}

/// The result of `Hello`: the version both sides speak on this connection from now on.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HelloAckDto {
    pub protocol_version: String,
}
