//! The hub methods of the node contract: who calls which method, with which argument, and
//! whether the call expects a Completion.
//!
//! # Theory of operation
//! The contract (seed 002, "Sophon", plus nodelink extensions) rides on SignalR invocations. Every
//! method takes exactly one argument. This module sits between the hub layer ([`Invocation`],
//! [`Payload`], encoding-agnostic) and the machines: [`NodeCall`] is everything a node invokes on
//! the gateway, [`GatewayCall`] everything a gateway invokes on a node. `to_message` builds the
//! [`HubMessage::Invocation`] in either hub protocol; `from_invocation` decodes one received
//! invocation, ignoring unknown fields, and says exactly what was wrong otherwise.
//!
//! Who waits for a Completion ([`expects_completion`]): `Hello` (its result is the negotiated
//! protocol version) and `CommandResult` (a void Completion is the gateway's acknowledgment; the
//! node keeps a result until then and resends it after a reconnect). Everything else is
//! fire-and-forget (no invocationId), including every gateway -> node call, which is what .NET's
//! `Clients.Client(id).SendAsync` produces.
//!
//! Method names are matched ASCII-case-insensitively on input, as both the .NET hub dispatcher and
//! the JS client do, and always written in their canonical case.
//!
//! protocolVersion negotiation ([`choose_protocol_version`], [`interpret_hello_completion`]): the
//! node offers its versions in `Hello`; the gateway answers with the highest shared one, or with
//! a Completion error starting with [`NO_SHARED_VERSION_ERROR`]. A gateway that does not know
//! `Hello` (plain Sophon) answers some other Completion error, and the node then speaks
//! [`LEGACY_PROTOCOL_VERSION`]. The normative text is section "The node contract" of
//! docs/protocol.md.

use serde::de::{DeserializeOwned, Deserializer, Error as _};
use serde::Deserialize;
use serde_json::Value;

use super::dto::{
    CancelCommandDto, CommandProgressDto, CommandResultDto, ExecuteCommandDto, HeartbeatDto,
    HelloAckDto, HelloDto, OriginatedBy,
};
use super::signalr::json::{self, TypedInvocation};
use super::signalr::{
    CompletionOutcome, Headers, HubMessage, HubProtocol, Invocation, Payload, PayloadError,
    RECORD_SEPARATOR,
};

/// The hub method names, in their canonical case.
pub mod method {
    /// Node -> gateway, fire-and-forget, every 30 s.
    pub const HEARTBEAT: &str = "Heartbeat";
    /// Node -> gateway, with an invocationId; acknowledged by a void Completion.
    pub const COMMAND_RESULT: &str = "CommandResult";
    /// Node -> gateway, fire-and-forget: the ack of `RefreshScopes`.
    pub const SCOPE_CHANGED: &str = "ScopeChanged";
    /// nodelink extension, node -> gateway, fire-and-forget.
    pub const COMMAND_PROGRESS: &str = "CommandProgress";
    /// nodelink extension, node -> gateway, with an invocationId; the Completion carries the
    /// negotiated protocol version.
    pub const HELLO: &str = "Hello";
    /// Gateway -> node, fire-and-forget.
    pub const EXECUTE_COMMAND: &str = "ExecuteCommand";
    /// Gateway -> node, fire-and-forget.
    pub const REFRESH_SCOPES: &str = "RefreshScopes";
    /// Gateway -> node, fire-and-forget.
    pub const REVOKE_ACCESS: &str = "RevokeAccess";
    /// nodelink extension, gateway -> node, fire-and-forget.
    pub const CANCEL_COMMAND: &str = "CancelCommand";
}

/// The protocol versions a nodelink peer speaks, newest first: the current one and the previous
/// one (the seed: "Gateway supports the last two protocol versions concurrently").
pub const SUPPORTED_PROTOCOL_VERSIONS: [&str; 2] = ["2026-04-01", "2025-10-01"];

/// The version spoken with a gateway that does not know `Hello` (the seed's current version).
pub const LEGACY_PROTOCOL_VERSION: &str = "2026-04-01";

/// The prefix of the Completion error a nodelink gateway sends when it shares no version with the
/// node; any other error to `Hello` means "this gateway does not know Hello".
pub const NO_SHARED_VERSION_ERROR: &str = "unsupported_protocol_version";

/// Why a received invocation (or the Completion of `Hello`) does not fit the contract.
#[non_exhaustive]
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ContractError {
    /// The target is not a method this side of the contract implements.
    #[error("unknown hub method `{target}`")]
    UnknownTarget { target: String },
    /// The method takes a different number of arguments.
    #[error("hub method {target} takes {expected} argument(s), got {got}")]
    ArgumentCount {
        target: &'static str,
        expected: usize,
        got: usize,
    },
    /// An argument does not decode as the method's argument type.
    #[error("hub method {target}: argument {index} is invalid: {detail}")]
    InvalidArgument {
        target: &'static str,
        index: usize,
        detail: String,
    },
    /// The Completion of an invocation carries a result that does not fit the method.
    #[error("completion of hub method {target} is invalid: {detail}")]
    InvalidResult {
        target: &'static str,
        detail: String,
    },
}

/// Whether an invocation of `target` is sent with an invocationId and answered by a Completion.
/// Unknown targets: `false`.
pub fn expects_completion(target: &str) -> bool {
    target.eq_ignore_ascii_case(method::HELLO)
        || target.eq_ignore_ascii_case(method::COMMAND_RESULT)
}

/// Everything a node invokes on the gateway.
#[derive(Clone, Debug, PartialEq)]
pub enum NodeCall {
    Heartbeat(HeartbeatDto),
    CommandResult(CommandResultDto),
    /// The scopes the node now enforces (ack of `RefreshScopes`).
    ScopeChanged(Vec<String>),
    CommandProgress(CommandProgressDto),
    Hello(HelloDto),
}

impl NodeCall {
    /// The hub method name.
    pub fn target(&self) -> &'static str {
        match self {
            NodeCall::Heartbeat(_) => method::HEARTBEAT,
            NodeCall::CommandResult(_) => method::COMMAND_RESULT,
            NodeCall::ScopeChanged(_) => method::SCOPE_CHANGED,
            NodeCall::CommandProgress(_) => method::COMMAND_PROGRESS,
            NodeCall::Hello(_) => method::HELLO,
        }
    }

    /// Whether this call is sent with an invocationId and waits for a Completion.
    pub fn expects_completion(&self) -> bool {
        expects_completion(self.target())
    }

    /// The invocation, its one argument encoded in `protocol`. Pass an `invocation_id` exactly
    /// when [`NodeCall::expects_completion`] is true.
    pub fn to_message(
        &self,
        protocol: HubProtocol,
        invocation_id: Option<String>,
    ) -> Result<HubMessage, PayloadError> {
        let argument = match self {
            NodeCall::Heartbeat(dto) => Payload::encode(protocol, dto)?,
            NodeCall::CommandResult(dto) => Payload::encode(protocol, dto)?,
            NodeCall::ScopeChanged(scopes) => Payload::encode(protocol, scopes)?,
            NodeCall::CommandProgress(dto) => Payload::encode(protocol, dto)?,
            NodeCall::Hello(dto) => Payload::encode(protocol, dto)?,
        };
        Ok(invocation(self.target(), invocation_id, argument))
    }

    /// Decodes an invocation received by the gateway.
    pub fn from_invocation(inv: &Invocation) -> Result<NodeCall, ContractError> {
        let target = canonical(
            &inv.target,
            &[
                method::HEARTBEAT,
                method::COMMAND_RESULT,
                method::SCOPE_CHANGED,
                method::COMMAND_PROGRESS,
                method::HELLO,
            ],
        )?;
        let argument = single_argument(target, inv)?;
        Ok(match target {
            method::HEARTBEAT => NodeCall::Heartbeat(decode_dto(target, "HeartbeatDto", argument)?),
            method::COMMAND_RESULT => {
                NodeCall::CommandResult(decode_dto(target, "CommandResultDto", argument)?)
            }
            method::SCOPE_CHANGED => NodeCall::ScopeChanged(decode_scopes(target, argument)?),
            method::COMMAND_PROGRESS => {
                NodeCall::CommandProgress(decode_dto(target, "CommandProgressDto", argument)?)
            }
            _ => NodeCall::Hello(decode_dto(target, "HelloDto", argument)?),
        })
    }
}

/// The one-pass JSON fast path for the calls that dominate a gateway's traffic; `Hello` and
/// `ScopeChanged` (rare, and with extra validation) always take the general path.
impl TypedInvocation for NodeCall {
    fn has_fast_path(target: &str) -> bool {
        [
            method::HEARTBEAT,
            method::COMMAND_RESULT,
            method::COMMAND_PROGRESS,
        ]
        .iter()
        .any(|name| name.eq_ignore_ascii_case(target))
    }

    fn decode_argument<'de, D: Deserializer<'de>>(
        target: &str,
        deserializer: D,
    ) -> Result<NodeCall, D::Error> {
        if target.eq_ignore_ascii_case(method::HEARTBEAT) {
            HeartbeatDto::deserialize(deserializer).map(NodeCall::Heartbeat)
        } else if target.eq_ignore_ascii_case(method::COMMAND_RESULT) {
            CommandResultDto::deserialize(deserializer).map(NodeCall::CommandResult)
        } else if target.eq_ignore_ascii_case(method::COMMAND_PROGRESS) {
            CommandProgressDto::deserialize(deserializer).map(NodeCall::CommandProgress)
        } else {
            Err(D::Error::custom("no fast path"))
        }
    }
}

/// An `ExecuteCommandDto` by reference: what a gateway that keeps the command's parts elsewhere
/// (shared, not copied) writes without building the DTO.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ExecuteCommandRef<'a> {
    pub command_id: &'a str,
    pub command: &'a str,
    pub params: Option<&'a Value>,
    pub timeout_ms: Option<u64>,
    pub originated_by: Option<&'a OriginatedBy>,
    pub protocol_version: Option<&'a str>,
}

impl<'a> ExecuteCommandRef<'a> {
    /// The parts of `dto`.
    pub fn of(dto: &'a ExecuteCommandDto) -> Self {
        // Every member named: a new one does not compile until it is carried here too.
        let ExecuteCommandDto {
            command_id,
            command,
            params,
            timeout_ms,
            originated_by,
            protocol_version,
        } = dto;
        ExecuteCommandRef {
            command_id,
            command,
            params: params.as_ref(),
            timeout_ms: *timeout_ms,
            originated_by: originated_by.as_ref(),
            protocol_version: protocol_version.as_deref(),
        }
    }

    /// The owned DTO.
    pub fn to_dto(&self) -> ExecuteCommandDto {
        ExecuteCommandDto {
            command_id: self.command_id.to_owned(),
            command: self.command.to_owned(),
            params: self.params.cloned(),
            timeout_ms: self.timeout_ms,
            originated_by: self.originated_by.cloned(),
            protocol_version: self.protocol_version.map(str::to_owned),
        }
    }

    /// Appends the JSON record of `GatewayCall::ExecuteCommand(self.to_dto())` (which
    /// [`GatewayCall::encode_json_record`] writes through here). On failure `out` is left as it
    /// was.
    pub fn encode_json_record(&self, out: &mut Vec<u8>) -> Result<(), PayloadError> {
        // `json::encode_invocation_with` with its target spelled out in the literal: the
        // gateway's hottest record, and the target needs no escape check.
        const HEAD: &[u8] = b"{\"type\":1,\"target\":\"ExecuteCommand\",\"arguments\":[";
        let start = out.len();
        out.extend_from_slice(HEAD);
        if let Err(error) = write_execute(self, out) {
            out.truncate(start);
            return Err(error);
        }
        out.extend_from_slice(b"]}");
        out.push(RECORD_SEPARATOR);
        Ok(())
    }
}

/// An `ExecuteCommandDto` as serde_json writes it (its derive's member order and omissions),
/// with its strings copied at once when they need no escape: the gateway's hottest encoding.
fn write_execute(dto: &ExecuteCommandRef<'_>, out: &mut Vec<u8>) -> Result<(), PayloadError> {
    let ExecuteCommandRef {
        command_id,
        command,
        params,
        timeout_ms,
        originated_by,
        protocol_version,
    } = *dto;
    let serde = |e: serde_json::Error| PayloadError(format!("cannot encode as JSON: {e}"));
    out.extend_from_slice(b"{\"commandId\":");
    json::write_str(command_id, out);
    out.extend_from_slice(b",\"command\":");
    json::write_str(command, out);
    if let Some(params) = params {
        out.extend_from_slice(b",\"params\":");
        serde_json::to_writer(&mut *out, params).map_err(serde)?;
    }
    if let Some(ms) = timeout_ms {
        out.extend_from_slice(b",\"timeoutMs\":");
        let mut digits = [0u8; 20];
        let mut at = digits.len();
        let mut value = ms;
        loop {
            at -= 1;
            digits[at] = b'0' + (value % 10) as u8;
            value /= 10;
            if value == 0 {
                break;
            }
        }
        out.extend_from_slice(&digits[at..]);
    }
    if let Some(originated_by) = originated_by {
        out.extend_from_slice(b",\"originatedBy\":");
        serde_json::to_writer(&mut *out, originated_by).map_err(serde)?;
    }
    if let Some(version) = protocol_version {
        out.extend_from_slice(b",\"protocolVersion\":");
        json::write_str(version, out);
    }
    out.push(b'}');
    Ok(())
}

/// Everything a gateway invokes on a node. All of these are fire-and-forget.
#[derive(Clone, Debug, PartialEq)]
pub enum GatewayCall {
    ExecuteCommand(ExecuteCommandDto),
    /// The node's effective scopes from now on.
    RefreshScopes(Vec<String>),
    /// The node must close and not reconnect without pairing again. `reason` may be empty.
    RevokeAccess {
        reason: String,
    },
    CancelCommand(CancelCommandDto),
}

impl GatewayCall {
    /// The hub method name.
    pub fn target(&self) -> &'static str {
        match self {
            GatewayCall::ExecuteCommand(_) => method::EXECUTE_COMMAND,
            GatewayCall::RefreshScopes(_) => method::REFRESH_SCOPES,
            GatewayCall::RevokeAccess { .. } => method::REVOKE_ACCESS,
            GatewayCall::CancelCommand(_) => method::CANCEL_COMMAND,
        }
    }

    /// Always `false`: the gateway never waits on a node (`SendAsync` semantics).
    pub fn expects_completion(&self) -> bool {
        expects_completion(self.target())
    }

    /// The invocation, its one argument encoded in `protocol`. `RevokeAccess` sends its reason
    /// as a plain string (the seed's signature), never as an object. Pass `None` as
    /// `invocation_id`: every gateway call is fire-and-forget.
    pub fn to_message(
        &self,
        protocol: HubProtocol,
        invocation_id: Option<String>,
    ) -> Result<HubMessage, PayloadError> {
        let argument = match self {
            GatewayCall::ExecuteCommand(dto) => Payload::encode(protocol, dto)?,
            GatewayCall::RefreshScopes(scopes) => Payload::encode(protocol, scopes)?,
            GatewayCall::RevokeAccess { reason } => Payload::encode(protocol, reason)?,
            GatewayCall::CancelCommand(dto) => Payload::encode(protocol, dto)?,
        };
        Ok(invocation(self.target(), invocation_id, argument))
    }

    /// Appends the JSON record of `to_message(HubProtocol::Json, None)`: the same bytes,
    /// serialized straight into `out` (the gateway's hot path for `ExecuteCommand`).
    pub fn encode_json_record(&self, out: &mut Vec<u8>) -> Result<(), PayloadError> {
        let target = self.target();
        match self {
            GatewayCall::ExecuteCommand(dto) => ExecuteCommandRef::of(dto).encode_json_record(out),
            GatewayCall::RefreshScopes(scopes) => json::encode_invocation(target, scopes, out),
            GatewayCall::RevokeAccess { reason } => json::encode_invocation(target, reason, out),
            GatewayCall::CancelCommand(dto) => json::encode_invocation(target, dto, out),
        }
    }

    /// Decodes an invocation received by a node.
    ///
    /// `RevokeAccess` is decoded leniently, because a revocation must not be lost to a format
    /// quibble: no argument, `null`, a string, or an object with an optional string `reason`
    /// (the seed's example) are all accepted.
    pub fn from_invocation(inv: &Invocation) -> Result<GatewayCall, ContractError> {
        let target = canonical(
            &inv.target,
            &[
                method::EXECUTE_COMMAND,
                method::REFRESH_SCOPES,
                method::REVOKE_ACCESS,
                method::CANCEL_COMMAND,
            ],
        )?;
        if target == method::REVOKE_ACCESS && inv.arguments.is_empty() {
            return Ok(GatewayCall::RevokeAccess {
                reason: String::new(),
            });
        }
        let argument = single_argument(target, inv)?;
        Ok(match target {
            method::EXECUTE_COMMAND => {
                GatewayCall::ExecuteCommand(decode_dto(target, "ExecuteCommandDto", argument)?)
            }
            method::REFRESH_SCOPES => GatewayCall::RefreshScopes(decode_scopes(target, argument)?),
            method::REVOKE_ACCESS => GatewayCall::RevokeAccess {
                reason: decode_revoke_reason(target, argument)?,
            },
            _ => GatewayCall::CancelCommand(decode_dto(target, "CancelCommandDto", argument)?),
        })
    }
}

/// Removes duplicate scopes, keeping the first occurrence and the order. Receivers apply it to
/// every scope list; senders should not send duplicates in the first place.
pub fn normalize_scopes(scopes: Vec<String>) -> Vec<String> {
    let mut seen = std::collections::BTreeSet::new();
    scopes
        .into_iter()
        .filter(|scope| seen.insert(scope.clone()))
        .collect()
}

/// Whether `version` has the `YYYY-MM-DD` form of a protocol version (month 01-12, day 01-31).
/// Such strings order like the dates they name, so versions compare as strings.
pub fn is_protocol_version(version: &str) -> bool {
    let b = version.as_bytes();
    if b.len() != 10 || b[4] != b'-' || b[7] != b'-' {
        return false;
    }
    let digits = |range: std::ops::Range<usize>| b[range].iter().all(u8::is_ascii_digit);
    if !(digits(0..4) && digits(5..7) && digits(8..10)) {
        return false;
    }
    let two = |at: usize| (b[at] - b'0') * 10 + (b[at + 1] - b'0');
    (1..=12).contains(&two(5)) && (1..=31).contains(&two(8))
}

/// The highest version both sides speak: the greatest well-formed version in `offered` that is
/// also in `supported`. Malformed offers are ignored. `None` when nothing is shared.
pub fn choose_protocol_version(offered: &[String], supported: &[&str]) -> Option<String> {
    offered
        .iter()
        .filter(|v| is_protocol_version(v) && supported.contains(&v.as_str()))
        .max()
        .cloned()
}

/// Gateway side: the outcome of a `Hello` given the versions this gateway supports: a result
/// carrying [`HelloAckDto`], or an error starting with [`NO_SHARED_VERSION_ERROR`].
pub fn answer_hello(
    protocol: HubProtocol,
    hello: &HelloDto,
    supported: &[&str],
) -> Result<CompletionOutcome, PayloadError> {
    match choose_protocol_version(&hello.protocol_versions, supported) {
        Some(protocol_version) => Ok(CompletionOutcome::Result(Payload::encode(
            protocol,
            &HelloAckDto { protocol_version },
        )?)),
        None => Ok(CompletionOutcome::Error(format!(
            "{NO_SHARED_VERSION_ERROR}: the node offers [{}], this gateway supports [{}]",
            hello.protocol_versions.join(", "),
            supported.join(", ")
        ))),
    }
}

/// What a node learned from the Completion of its `Hello`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HelloOutcome {
    /// The gateway chose this version (one the node offered).
    Negotiated(String),
    /// The gateway does not know `Hello` (a plain Sophon gateway): speak
    /// [`LEGACY_PROTOCOL_VERSION`], and no nodelink extension but heartbeat capabilities.
    Legacy,
    /// No version is shared: close the connection and do not reconnect until one side upgrades.
    NoSharedVersion { detail: String },
}

impl HelloOutcome {
    /// The version to speak on this connection, if any.
    pub fn protocol_version(&self) -> Option<&str> {
        match self {
            HelloOutcome::Negotiated(version) => Some(version),
            HelloOutcome::Legacy => Some(LEGACY_PROTOCOL_VERSION),
            HelloOutcome::NoSharedVersion { .. } => None,
        }
    }
}

/// Node side: interprets the Completion of `Hello` given the versions the node offered.
///
/// A result must be a [`HelloAckDto`] naming an offered version, else [`ContractError::InvalidResult`].
/// An error starting with [`NO_SHARED_VERSION_ERROR`] means no shared version; any other error,
/// or a void Completion, means the gateway does not know `Hello` ([`HelloOutcome::Legacy`], or
/// `NoSharedVersion` when the node does not offer [`LEGACY_PROTOCOL_VERSION`]).
pub fn interpret_hello_completion(
    outcome: &CompletionOutcome,
    offered: &[String],
) -> Result<HelloOutcome, ContractError> {
    let legacy = |why: &str| {
        if offered.iter().any(|v| v == LEGACY_PROTOCOL_VERSION) {
            HelloOutcome::Legacy
        } else {
            HelloOutcome::NoSharedVersion {
                detail: format!(
                    "the gateway does not negotiate ({why}) and speaks only \
                     {LEGACY_PROTOCOL_VERSION}, which this node does not offer"
                ),
            }
        }
    };
    match outcome {
        CompletionOutcome::Error(message) if message.starts_with(NO_SHARED_VERSION_ERROR) => {
            Ok(HelloOutcome::NoSharedVersion {
                detail: message.clone(),
            })
        }
        CompletionOutcome::Error(message) => Ok(legacy(message)),
        CompletionOutcome::Void => Ok(legacy("void completion")),
        CompletionOutcome::Result(payload) => {
            let ack: HelloAckDto = payload.decode().map_err(|e| ContractError::InvalidResult {
                target: method::HELLO,
                detail: format!("expected {{\"protocolVersion\": string}}: {e}"),
            })?;
            if !offered.contains(&ack.protocol_version) {
                return Err(ContractError::InvalidResult {
                    target: method::HELLO,
                    detail: format!(
                        "the gateway chose protocolVersion `{}`, which the node did not offer \
                         (offered: [{}])",
                        ack.protocol_version,
                        offered.join(", ")
                    ),
                });
            }
            Ok(HelloOutcome::Negotiated(ack.protocol_version))
        }
    }
}

fn invocation(target: &str, invocation_id: Option<String>, argument: Payload) -> HubMessage {
    HubMessage::Invocation(Invocation {
        headers: Headers::new(),
        invocation_id,
        target: target.to_owned(),
        arguments: vec![argument],
        stream_ids: Vec::new(),
    })
}

/// The canonical name of `target` among `known`, compared ASCII-case-insensitively.
fn canonical(target: &str, known: &[&'static str]) -> Result<&'static str, ContractError> {
    known
        .iter()
        .find(|name| name.eq_ignore_ascii_case(target))
        .copied()
        .ok_or_else(|| ContractError::UnknownTarget {
            target: target.to_owned(),
        })
}

fn single_argument<'a>(
    target: &'static str,
    inv: &'a Invocation,
) -> Result<&'a Payload, ContractError> {
    match inv.arguments.as_slice() {
        [argument] => Ok(argument),
        other => Err(ContractError::ArgumentCount {
            target,
            expected: 1,
            got: other.len(),
        }),
    }
}

fn decode_dto<T: DeserializeOwned>(
    target: &'static str,
    dto: &'static str,
    argument: &Payload,
) -> Result<T, ContractError> {
    argument
        .decode()
        .map_err(|e| invalid(target, format!("expected {dto}: {e}")))
}

fn decode_scopes(target: &'static str, argument: &Payload) -> Result<Vec<String>, ContractError> {
    scopes_from_value(decode_value(target, argument)?).map_err(|detail| invalid(target, detail))
}

/// The one-pass JSON fast path for the calls that dominate a node's traffic; the rest always take
/// the general path (`RevokeAccess` is decoded leniently there).
impl TypedInvocation for GatewayCall {
    fn has_fast_path(target: &str) -> bool {
        [method::EXECUTE_COMMAND, method::CANCEL_COMMAND]
            .iter()
            .any(|name| name.eq_ignore_ascii_case(target))
    }

    fn decode_argument<'de, D: Deserializer<'de>>(
        target: &str,
        deserializer: D,
    ) -> Result<GatewayCall, D::Error> {
        if target.eq_ignore_ascii_case(method::EXECUTE_COMMAND) {
            ExecuteCommandDto::deserialize(deserializer).map(GatewayCall::ExecuteCommand)
        } else if target.eq_ignore_ascii_case(method::CANCEL_COMMAND) {
            CancelCommandDto::deserialize(deserializer).map(GatewayCall::CancelCommand)
        } else {
            Err(D::Error::custom("no fast path"))
        }
    }
}

/// A list of non-empty scope strings, duplicates removed (first occurrence kept, order kept).
/// Shared with the REST `scopes` field; the error is a human-readable detail.
pub(crate) fn scopes_from_value(value: Value) -> Result<Vec<String>, String> {
    let Value::Array(items) = value else {
        return Err(format!(
            "expected an array of scope strings, got {}",
            kind_of(&value)
        ));
    };
    let mut scopes = Vec::with_capacity(items.len());
    for (at, item) in items.into_iter().enumerate() {
        match item {
            Value::String(scope) if !scope.is_empty() => scopes.push(scope),
            Value::String(_) => return Err(format!("scope at index {at} is empty")),
            other => {
                return Err(format!(
                    "scope at index {at} must be a string, got {}",
                    kind_of(&other)
                ))
            }
        }
    }
    Ok(normalize_scopes(scopes))
}

/// The reason of `RevokeAccess`: a string (the seed's signature), `null`, or an object with an
/// optional string `reason` (the seed's example).
fn decode_revoke_reason(target: &'static str, argument: &Payload) -> Result<String, ContractError> {
    match decode_value(target, argument)? {
        Value::String(reason) => Ok(reason),
        Value::Null => Ok(String::new()),
        Value::Object(fields) => match fields.get("reason") {
            Some(Value::String(reason)) => Ok(reason.clone()),
            None | Some(Value::Null) => Ok(String::new()),
            Some(other) => Err(invalid(
                target,
                format!("field `reason` must be a string, got {}", kind_of(other)),
            )),
        },
        other => Err(invalid(
            target,
            format!(
                "expected a reason string or {{\"reason\": string}}, got {}",
                kind_of(&other)
            ),
        )),
    }
}

fn decode_value(target: &'static str, argument: &Payload) -> Result<Value, ContractError> {
    argument.decode().map_err(|e| invalid(target, e.0))
}

fn invalid(target: &'static str, detail: String) -> ContractError {
    ContractError::InvalidArgument {
        target,
        index: 0,
        detail,
    }
}

fn kind_of(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}
