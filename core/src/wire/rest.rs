//! The REST bodies of seed 002: pairing, HTTP polling of commands, posting results, the REST
//! heartbeat, and the error body every endpoint shares.
//!
//! # Theory of operation
//! Pairing happens over REST before a node has a token: it POSTs its nodeId and a pairing secret
//! every [`PAIRING_POLL_INTERVAL`] until the answer is `approved` (with the token and the gateway
//! URL), `rejected` or `expired` ([`PAIRING_SECRET_LIFETIME`] after the first request). When
//! WebSockets are blocked, a node polls [`COMMANDS_PATH`] every [`DEFAULT_POLL_INTERVAL`], POSTs
//! each result to [`command_result_path`] (the commandId moves from the body into the path), and
//! POSTs its heartbeat to [`HEARTBEAT_PATH`]. Every request but pairing carries
//! `Authorization: Bearer <node-token>` ([`NodeToken::bearer`]).
//!
//! These are plain serde types plus decoders that report which body and which field was wrong.
//! One malformed command in a poll answer does not hide the others ([`PolledCommands`]). The
//! normative text is section "REST" of docs/protocol.md.

use std::fmt;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;

use super::contract::scopes_from_value;
use super::dto::{CommandError, CommandResultDto, ExecuteCommandDto};

mod token;

pub use token::{validate_node_id, NodeToken, TokenError, MAX_NODE_ID_LEN};

/// `POST`: pairing (no Authorization; the pairing secret authenticates).
pub const PAIR_PATH: &str = "/api/nodes/me/pair";
/// `GET`: the commands waiting for this node (HTTP polling).
pub const COMMANDS_PATH: &str = "/api/nodes/me/commands";
/// `POST`: the REST heartbeat, a `HeartbeatDto` body.
pub const HEARTBEAT_PATH: &str = "/api/nodes/me/heartbeat";

/// How often a node repeats its pairing request while the answer is `pending`.
pub const PAIRING_POLL_INTERVAL: Duration = Duration::from_secs(3);
/// How long a pairing secret stays valid after the gateway first sees it.
pub const PAIRING_SECRET_LIFETIME: Duration = Duration::from_secs(15 * 60);
/// The default interval between two `GET` [`COMMANDS_PATH`] (configurable on the node).
pub const DEFAULT_POLL_INTERVAL: Duration = Duration::from_secs(2);

/// Why a REST body or path could not be built or decoded.
#[non_exhaustive]
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RestError {
    /// A body is not the JSON the endpoint expects; `detail` names the field (serde's words).
    #[error("{body} body is invalid: {detail}")]
    InvalidBody { body: &'static str, detail: String },
    /// A commandId cannot be empty: it would not form a path segment.
    #[error("commandId is empty; it cannot form a path segment")]
    EmptyCommandId,
    /// `.` and `..` (and their percent-encoded forms) are removed by URL normalization, so such a
    /// commandId cannot travel in a path.
    #[error("commandId `{command_id}` is a dot segment and cannot travel in a URL path")]
    DotSegmentCommandId { command_id: String },
    /// A request path that is not the expected endpoint.
    #[error("path `{path}` is not of the form {expected}")]
    UnexpectedPath {
        path: String,
        expected: &'static str,
    },
    /// A path segment with a bad `%XX` escape, or that decodes to something other than UTF-8.
    #[error("path segment `{segment}` is not valid percent-encoded UTF-8")]
    BadPercentEncoding { segment: String },
}

/// Decodes a JSON body; `body` names it in the error (for example `"pair response"`).
pub fn decode_body<T: DeserializeOwned>(body: &'static str, bytes: &[u8]) -> Result<T, RestError> {
    serde_json::from_slice(bytes).map_err(|e| RestError::InvalidBody {
        body,
        detail: e.to_string(),
    })
}

// ---------------------------------------------------------------------------------------------
// Pairing

/// `POST /api/nodes/me/pair` request. `name` and `platform` are nodelink extensions shown to the
/// operator who approves the node; a plain gateway ignores them.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PairRequest {
    pub node_id: String,
    pub pairing_secret: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<String>,
}

impl PairRequest {
    /// Decodes the body and checks that `nodeId` can become the first part of a token
    /// ([`validate_node_id`]) and that the secret is not empty.
    pub fn from_json(bytes: &[u8]) -> Result<PairRequest, RestError> {
        let request: PairRequest = decode_body("pair request", bytes)?;
        let invalid = |detail: String| RestError::InvalidBody {
            body: "pair request",
            detail,
        };
        validate_node_id(&request.node_id).map_err(|e| invalid(format!("field `nodeId`: {e}")))?;
        if request.pairing_secret.is_empty() {
            return Err(invalid("field `pairingSecret` is empty".to_owned()));
        }
        Ok(request)
    }
}

impl fmt::Debug for PairRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PairRequest")
            .field("node_id", &self.node_id)
            .field("pairing_secret", &"<redacted>")
            .field("name", &self.name)
            .field("platform", &self.platform)
            .finish()
    }
}

/// `POST /api/nodes/me/pair` response, by `status`. An unknown status is a decode error: a node
/// cannot guess whether to keep polling, so it treats it like a failed request and retries
/// until its secret expires.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(
    tag = "status",
    rename_all = "lowercase",
    rename_all_fields = "camelCase"
)]
pub enum PairResponse {
    /// Waiting for an operator; show `pairingCode` so they can match it.
    Pending { pairing_code: String },
    /// Approved: connect to `gatewayUrl` with `token`.
    Approved {
        token: NodeToken,
        gateway_url: String,
    },
    /// An operator refused the node.
    Rejected {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
    /// The pairing secret's 15 minutes have passed: start again with a new secret.
    Expired,
}

impl PairResponse {
    pub fn from_json(bytes: &[u8]) -> Result<PairResponse, RestError> {
        decode_body("pair response", bytes)
    }

    /// Whether the node should poll again after [`PAIRING_POLL_INTERVAL`].
    pub fn is_pending(&self) -> bool {
        matches!(self, PairResponse::Pending { .. })
    }
}

// ---------------------------------------------------------------------------------------------
// HTTP polling

/// `GET /api/nodes/me/commands` response: every command dispatched to the node that has neither
/// a result nor timed out. `scopes` is a nodelink extension: the node's effective scopes, which
/// replace `RefreshScopes` for a polling node.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CommandsResponse {
    pub commands: Vec<ExecuteCommandDto>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scopes: Option<Vec<String>>,
}

/// A decoded poll answer. Each command is decoded on its own, so one malformed command is
/// reported in `rejected` and the others still run.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct PolledCommands {
    pub commands: Vec<ExecuteCommandDto>,
    pub rejected: Vec<RejectedCommand>,
    /// Present when the gateway sent `scopes` (duplicates removed, order kept).
    pub scopes: Option<Vec<String>>,
}

/// A command of a poll answer that did not decode.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RejectedCommand {
    /// Its position in `commands`.
    pub index: usize,
    /// Its `commandId` when that much could be read, so the node can answer `invalid_params`.
    pub command_id: Option<String>,
    pub detail: String,
}

impl PolledCommands {
    /// Decodes a poll answer. The body must be an object with a `commands` array; a malformed
    /// `scopes` fails the whole body (a node must not guess its scopes).
    pub fn from_json(bytes: &[u8]) -> Result<PolledCommands, RestError> {
        #[derive(Deserialize)]
        struct Raw {
            commands: Vec<Value>,
            #[serde(default)]
            scopes: Option<Value>,
        }
        const BODY: &str = "commands response";
        let raw: Raw = decode_body(BODY, bytes)?;
        let scopes = match raw.scopes {
            None | Some(Value::Null) => None,
            Some(value) => {
                Some(
                    scopes_from_value(value).map_err(|detail| RestError::InvalidBody {
                        body: BODY,
                        detail: format!("field `scopes`: {detail}"),
                    })?,
                )
            }
        };
        let mut polled = PolledCommands {
            scopes,
            ..PolledCommands::default()
        };
        for (index, value) in raw.commands.into_iter().enumerate() {
            let command_id = value
                .get("commandId")
                .and_then(Value::as_str)
                .map(str::to_owned);
            match serde_json::from_value::<ExecuteCommandDto>(value) {
                Ok(command) => polled.commands.push(command),
                Err(e) => polled.rejected.push(RejectedCommand {
                    index,
                    command_id,
                    detail: format!("commands[{index}]: {e}"),
                }),
            }
        }
        Ok(polled)
    }
}

/// `POST /api/nodes/me/commands/{commandId}/result` body: a `CommandResultDto` without
/// `commandId`, which is in the path. A `commandId` in the body is ignored: the path wins.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CommandResultBody {
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<CommandError>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub part_index: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub is_last: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol_version: Option<String>,
}

impl CommandResultBody {
    pub fn from_json(bytes: &[u8]) -> Result<CommandResultBody, RestError> {
        decode_body("command result", bytes)
    }

    /// Splits a result into its commandId (for the path) and the body.
    pub fn from_dto(dto: CommandResultDto) -> (String, CommandResultBody) {
        let body = CommandResultBody {
            ok: dto.ok,
            result: dto.result,
            error: dto.error,
            duration_ms: dto.duration_ms,
            part_index: dto.part_index,
            is_last: dto.is_last,
            protocol_version: dto.protocol_version,
        };
        (dto.command_id, body)
    }

    /// The result again, with the commandId taken from the path.
    pub fn into_dto(self, command_id: String) -> CommandResultDto {
        CommandResultDto {
            command_id,
            ok: self.ok,
            result: self.result,
            error: self.error,
            duration_ms: self.duration_ms,
            part_index: self.part_index,
            is_last: self.is_last,
            protocol_version: self.protocol_version,
        }
    }
}

const RESULT_PATH_PREFIX: &str = "/api/nodes/me/commands/";
const RESULT_PATH_SUFFIX: &str = "/result";
const RESULT_PATH_FORM: &str = "/api/nodes/me/commands/{commandId}/result";

/// `/api/nodes/me/commands/{commandId}/result`, the id percent-encoded: every byte outside
/// `A-Z a-z 0-9 - . _ ~` becomes `%XX` (uppercase hex). Empty ids and the dot segments `.` and
/// `..` are refused: no URL can carry them.
pub fn command_result_path(command_id: &str) -> Result<String, RestError> {
    check_command_id(command_id)?;
    let mut path = String::with_capacity(
        RESULT_PATH_PREFIX.len() + command_id.len() * 3 + RESULT_PATH_SUFFIX.len(),
    );
    path.push_str(RESULT_PATH_PREFIX);
    for byte in command_id.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            path.push(char::from(byte));
        } else {
            path.push_str(&format!("%{byte:02X}"));
        }
    }
    path.push_str(RESULT_PATH_SUFFIX);
    Ok(path)
}

/// Gateway side: the commandId of a result path (a query string, if any, is ignored).
pub fn parse_command_result_path(path: &str) -> Result<String, RestError> {
    let path_only = path.split_once('?').map_or(path, |(p, _)| p);
    let unexpected = || RestError::UnexpectedPath {
        path: path.to_owned(),
        expected: RESULT_PATH_FORM,
    };
    let segment = path_only
        .strip_prefix(RESULT_PATH_PREFIX)
        .and_then(|rest| rest.strip_suffix(RESULT_PATH_SUFFIX))
        .filter(|segment| !segment.contains('/'))
        .ok_or_else(unexpected)?;
    let command_id = percent_decode(segment).ok_or_else(|| RestError::BadPercentEncoding {
        segment: segment.to_owned(),
    })?;
    check_command_id(&command_id)?;
    Ok(command_id)
}

fn check_command_id(command_id: &str) -> Result<(), RestError> {
    match command_id {
        "" => Err(RestError::EmptyCommandId),
        "." | ".." => Err(RestError::DotSegmentCommandId {
            command_id: command_id.to_owned(),
        }),
        _ => Ok(()),
    }
}

fn percent_decode(segment: &str) -> Option<String> {
    let bytes = segment.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut at = 0;
    while at < bytes.len() {
        if bytes[at] == b'%' {
            let hex = bytes.get(at + 1..at + 3)?;
            let hex = std::str::from_utf8(hex).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            at += 3;
        } else {
            out.push(bytes[at]);
            at += 1;
        }
    }
    String::from_utf8(out).ok()
}

// ---------------------------------------------------------------------------------------------
// Errors

/// The body of every REST error response (400, 401, 403, 404, 409, 429).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RestErrorBody {
    pub error: RestErrorCode,
    /// For humans; may be empty.
    #[serde(default)]
    pub message: String,
    /// With `rate_limited`: when to try again (the `Retry-After` header says the same in seconds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after_ms: Option<u64>,
}

impl RestErrorBody {
    pub fn new(error: RestErrorCode, message: impl Into<String>) -> RestErrorBody {
        RestErrorBody {
            error,
            message: message.into(),
            retry_after_ms: None,
        }
    }

    pub fn from_json(bytes: &[u8]) -> Result<RestErrorBody, RestError> {
        decode_body("error", bytes)
    }
}

/// The `error` code of a REST error body. Unknown codes are preserved in
/// [`RestErrorCode::Other`]; a client then acts on the HTTP status alone.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RestErrorCode {
    /// 400: a malformed body or path.
    InvalidRequest,
    /// 401: no token, or a token the gateway does not know. Pair again.
    Unauthorized,
    /// 403: the request is authenticated but not allowed (a pairing secret that does not match
    /// the one first sent for this nodeId, or a node not approved).
    Forbidden,
    /// 403: the node's access was revoked. Stop; pair again.
    Revoked,
    /// 404: no such command for this node.
    NotFound,
    /// 409: the command already has a different result, or was cancelled or timed out.
    Conflict,
    /// 429: too many requests; wait `retryAfterMs`.
    RateLimited,
    Other(String),
}

impl RestErrorCode {
    pub fn as_str(&self) -> &str {
        match self {
            RestErrorCode::InvalidRequest => "invalid_request",
            RestErrorCode::Unauthorized => "unauthorized",
            RestErrorCode::Forbidden => "forbidden",
            RestErrorCode::Revoked => "revoked",
            RestErrorCode::NotFound => "not_found",
            RestErrorCode::Conflict => "conflict",
            RestErrorCode::RateLimited => "rate_limited",
            RestErrorCode::Other(code) => code,
        }
    }

    pub fn parse(code: &str) -> RestErrorCode {
        match code {
            "invalid_request" => RestErrorCode::InvalidRequest,
            "unauthorized" => RestErrorCode::Unauthorized,
            "forbidden" => RestErrorCode::Forbidden,
            "revoked" => RestErrorCode::Revoked,
            "not_found" => RestErrorCode::NotFound,
            "conflict" => RestErrorCode::Conflict,
            "rate_limited" => RestErrorCode::RateLimited,
            other => RestErrorCode::Other(other.to_owned()),
        }
    }

    /// The HTTP status that goes with the code; `None` for unknown codes.
    pub fn http_status(&self) -> Option<u16> {
        Some(match self {
            RestErrorCode::InvalidRequest => 400,
            RestErrorCode::Unauthorized => 401,
            RestErrorCode::Forbidden | RestErrorCode::Revoked => 403,
            RestErrorCode::NotFound => 404,
            RestErrorCode::Conflict => 409,
            RestErrorCode::RateLimited => 429,
            RestErrorCode::Other(_) => return None,
        })
    }
}

impl fmt::Display for RestErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for RestErrorCode {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for RestErrorCode {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let code = String::deserialize(deserializer)?;
        Ok(RestErrorCode::parse(&code))
    }
}
