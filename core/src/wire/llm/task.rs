//! Server -> node text frames: the task and the stop.
//!
//! The original server is Node.js: it writes frames with `JSON.stringify` and its nodes read them
//! with `json.loads` (Python) or `encoding/json` (Go). So numbers are IEEE doubles, and an integer
//! field is read by its *value*, not its spelling: `123`, `123.0` and `1.23e2` are the same id,
//! as they are to `JSON.parse`. A value that is not a whole number in the field's range
//! (`1.5`, `-1`, `4294967296`) is an error that names the field and the value.
//!
//! The encoders reproduce `JSON.stringify` byte for byte: the original key order, no whitespace,
//! the same string escapes as serde_json, and numbers in ECMAScript's `Number::toString` form
//! ([`format_js_number`]: `0`, not `0.0`; `1e+21`, not `1e21`).

use serde::ser::{SerializeMap, SerializeStruct};
use serde::{Serialize, Serializer};
use serde_json::{Map, Value};

/// The largest integer a double holds exactly (`Number.MAX_SAFE_INTEGER`), the bound of
/// `created_at`.
const MAX_SAFE_INTEGER: u64 = (1 << 53) - 1;

/// What the server thinks of a task when it sends it. The original server sends every task while
/// it is still pending, so `0` is all a node sees in practice.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum TaskState {
    /// 0: waiting for a node.
    #[default]
    Pending,
    /// 1: running on a node.
    Running,
    /// 2: finished, cancelled or failed.
    Finished,
}

impl TaskState {
    /// The number on the wire.
    pub fn as_u8(self) -> u8 {
        match self {
            TaskState::Pending => 0,
            TaskState::Running => 1,
            TaskState::Finished => 2,
        }
    }

    /// The state for a wire number, if known.
    pub fn from_u8(value: u8) -> Option<TaskState> {
        match value {
            0 => Some(TaskState::Pending),
            1 => Some(TaskState::Running),
            2 => Some(TaskState::Finished),
            _ => None,
        }
    }
}

/// One message of the conversation: `{"role":"user","content":"hi"}`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ChatMessage {
    /// `"user"`, `"assistant"`, or whatever the API client sent (the original server passes it
    /// through; nodes treat anything but `assistant`, case-insensitively, as the user).
    pub role: String,
    pub content: String,
}

impl ChatMessage {
    /// A message with the given role and content.
    pub fn new(role: impl Into<String>, content: impl Into<String>) -> ChatMessage {
        ChatMessage {
            role: role.into(),
            content: content.into(),
        }
    }
}

impl Serialize for ChatMessage {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut s = serializer.serialize_struct("ChatMessage", 2)?;
        s.serialize_field("role", &self.role)?;
        s.serialize_field("content", &self.content)?;
        s.end()
    }
}

/// A task to run. `id` and `messages` are required; the other fields are optional on input so a
/// node accepts any server, but the original server always sends all of them, and a server MUST
/// send `system`, `max_new_tokens` and `temperature` (the original Python node fails without).
#[derive(Clone, Debug, PartialEq)]
pub struct Task {
    /// Absent on input reads as [`TaskState::Pending`]; always written.
    pub state: TaskState,
    pub id: u32,
    /// The system prompt. Absent: none.
    pub system: Option<String>,
    pub messages: Vec<ChatMessage>,
    /// Absent: the node's default; [`Task::DEFAULT_MAX_NEW_TOKENS`] is the original server's.
    pub max_new_tokens: Option<u32>,
    /// Absent: [`Task::DEFAULT_TEMPERATURE`]. Any finite number is accepted; the node clamps.
    pub temperature: Option<f64>,
    /// Unix time in seconds when the server created the task (informational).
    pub created_at: Option<u64>,
}

impl Task {
    /// The original server's `max_new_tokens` when the API request has none.
    pub const DEFAULT_MAX_NEW_TOKENS: u32 = 50;
    /// The original server's temperature when the API request has none (greedy decoding).
    pub const DEFAULT_TEMPERATURE: f64 = 0.0;

    /// A pending task with only the required fields.
    pub fn new(id: u32, messages: Vec<ChatMessage>) -> Task {
        Task {
            state: TaskState::Pending,
            id,
            system: None,
            messages,
            max_new_tokens: None,
            temperature: None,
            created_at: None,
        }
    }

    /// `max_new_tokens`, or the original server's default of 50.
    pub fn effective_max_new_tokens(&self) -> u32 {
        self.max_new_tokens.unwrap_or(Task::DEFAULT_MAX_NEW_TOKENS)
    }

    /// `temperature`, or the original server's default of 0.
    pub fn effective_temperature(&self) -> f64 {
        self.temperature.unwrap_or(Task::DEFAULT_TEMPERATURE)
    }

    /// The text frame, as the original server's `JSON.stringify(task)` writes it; absent optional
    /// fields are omitted. A non-finite temperature is written `null`, as `JSON.stringify` does
    /// (and reads back as absent).
    pub fn encode(&self) -> String {
        to_json(self)
    }
}

impl Serialize for Task {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut m = serializer.serialize_map(None)?;
        m.serialize_entry("state", &self.state.as_u8())?;
        m.serialize_entry("id", &self.id)?;
        if let Some(system) = &self.system {
            m.serialize_entry("system", system)?;
        }
        m.serialize_entry("messages", &self.messages)?;
        if let Some(max_new_tokens) = self.max_new_tokens {
            m.serialize_entry("max_new_tokens", &max_new_tokens)?;
        }
        if let Some(temperature) = self.temperature {
            m.serialize_entry("temperature", &JsNumber(temperature))?;
        }
        if let Some(created_at) = self.created_at {
            m.serialize_entry("created_at", &created_at)?;
        }
        m.end()
    }
}

/// A double written as `JSON.stringify` writes it.
struct JsNumber(f64);

impl Serialize for JsNumber {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let raw = serde_json::value::RawValue::from_string(format_js_number(self.0))
            .map_err(serde::ser::Error::custom)?;
        raw.serialize(serializer)
    }
}

/// Serializes to JSON text. Our types contain only strings, integers and pre-formatted numbers,
/// which serde_json always accepts, so the fallback is unreachable.
fn to_json<T: Serialize>(value: &T) -> String {
    serde_json::to_string(value).unwrap_or_default()
}

/// Formats a double as ECMAScript's `Number::toString` (and so `JSON.stringify`) does: the
/// shortest digits that read back to the same double; plain notation from 1e-6 up to below 1e21,
/// exponent notation (`1e+21`, `1.5e-7`) outside; `-0` as `0`; NaN and infinities as `null`.
pub fn format_js_number(x: f64) -> String {
    if !x.is_finite() {
        return "null".to_owned();
    }
    if x == 0.0 {
        return "0".to_owned();
    }
    // Rust's `{:e}` also prints the shortest round-trip digits: "1.2345e-7", "5e-1".
    let sci = format!("{:e}", x.abs());
    let (mantissa, exponent) = sci.split_once('e').unwrap_or((&sci, "0"));
    let digits: String = mantissa.chars().filter(char::is_ascii_digit).collect();
    let exponent: i32 = exponent.parse().unwrap_or(0);
    let k = digits.len() as i32;
    // ECMAScript's n: the decimal point sits after n digits.
    let n = exponent + 1;
    let mut out = String::new();
    if x < 0.0 {
        out.push('-');
    }
    if k <= n && n <= 21 {
        out.push_str(&digits);
        out.extend(std::iter::repeat_n('0', (n - k) as usize));
    } else if 0 < n && n <= 21 {
        let (int, frac) = digits.split_at(n as usize);
        out.push_str(int);
        out.push('.');
        out.push_str(frac);
    } else if -6 < n && n <= 0 {
        out.push_str("0.");
        out.extend(std::iter::repeat_n('0', (-n) as usize));
        out.push_str(&digits);
    } else {
        let (first, rest) = digits.split_at(1);
        out.push_str(first);
        if !rest.is_empty() {
            out.push('.');
            out.push_str(rest);
        }
        out.push('e');
        out.push(if n - 1 < 0 { '-' } else { '+' });
        out.push_str(&(n - 1).abs().to_string());
    }
    out
}

/// A text frame from the server.
#[derive(Clone, Debug, PartialEq)]
pub enum ServerFrame {
    /// Run this task.
    Task(Task),
    /// Stop the task with this id: `{"id":N,"stop":true}`. Not acknowledged.
    Stop { id: u32 },
}

impl ServerFrame {
    /// The text frame, as the original server writes it.
    pub fn encode(&self) -> String {
        match self {
            ServerFrame::Task(task) => task.encode(),
            ServerFrame::Stop { id } => format!(r#"{{"id":{id},"stop":true}}"#),
        }
    }

    /// The task id this frame is about.
    pub fn id(&self) -> u32 {
        match self {
            ServerFrame::Task(task) => task.id,
            ServerFrame::Stop { id } => *id,
        }
    }
}

/// Why a server text frame could not be decoded. Where the frame's `id` could be read it is
/// given (`id()`), so a node can still answer that task with the finished frame.
#[non_exhaustive]
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ServerFrameError {
    /// The frame is empty (the original nodes ignore it).
    #[error("empty text frame from the server; expected a task or a stop")]
    Empty,
    /// Not JSON at all.
    #[error("text frame from the server is not valid JSON: {detail}")]
    Malformed { detail: String },
    /// Valid JSON, but not an object.
    #[error("text frame from the server must be a JSON object, found {found}")]
    NotAnObject { found: &'static str },
    /// A required field is absent (or `null`).
    #[error("{frame} frame is missing the required field `{field}`")]
    MissingField {
        frame: &'static str,
        field: String,
        id: Option<u32>,
    },
    /// A field has the wrong JSON type. `field` is a path such as `messages[2].content`.
    #[error("{frame} frame: field `{field}` must be {expected}, found {found}")]
    WrongType {
        frame: &'static str,
        field: String,
        expected: &'static str,
        found: &'static str,
        id: Option<u32>,
    },
    /// A field has the right type but a value outside its range.
    #[error("{frame} frame: field `{field}` is invalid: {detail}")]
    InvalidValue {
        frame: &'static str,
        field: String,
        detail: String,
        id: Option<u32>,
    },
}

impl ServerFrameError {
    /// The task id of the frame, when it could be read.
    pub fn id(&self) -> Option<u32> {
        match self {
            ServerFrameError::MissingField { id, .. }
            | ServerFrameError::WrongType { id, .. }
            | ServerFrameError::InvalidValue { id, .. } => *id,
            _ => None,
        }
    }
}

const TASK: &str = "task";
const STOP: &str = "stop";

/// Decodes a text frame from the server. An object with a `stop` member is a stop frame (the
/// original Python node tests for the key); `stop` must then be `true`. Anything else is a task.
/// Unknown fields are ignored.
pub fn decode_server_text(text: &str) -> Result<ServerFrame, ServerFrameError> {
    if text.is_empty() {
        return Err(ServerFrameError::Empty);
    }
    let value: Value = serde_json::from_str(text).map_err(|e| ServerFrameError::Malformed {
        detail: e.to_string(),
    })?;
    let Value::Object(object) = value else {
        return Err(ServerFrameError::NotAnObject {
            found: kind(&value),
        });
    };
    let frame = Fields { object: &object };
    if let Some(stop) = object.get("stop") {
        let id = frame.integer(STOP, "id", u64::from(u32::MAX), None)?;
        let id = narrow(id);
        if stop != &Value::Bool(true) {
            return Err(ServerFrameError::WrongType {
                frame: STOP,
                field: "stop".to_owned(),
                expected: "true",
                found: kind(stop),
                id: Some(id),
            });
        }
        return Ok(ServerFrame::Stop { id });
    }
    decode_task(&frame).map(ServerFrame::Task)
}

fn decode_task(frame: &Fields<'_>) -> Result<Task, ServerFrameError> {
    let id = narrow(frame.integer(TASK, "id", u64::from(u32::MAX), None)?);
    let id_known = Some(id);
    let state = match frame.optional_integer(TASK, "state", u64::from(u8::MAX), id_known)? {
        None => TaskState::Pending,
        Some(n) => u8::try_from(n)
            .ok()
            .and_then(TaskState::from_u8)
            .ok_or_else(|| ServerFrameError::InvalidValue {
                frame: TASK,
                field: "state".to_owned(),
                detail: format!(
                    "unknown state {n}; expected 0 (pending), 1 (running) or 2 (finished)"
                ),
                id: id_known,
            })?,
    };
    let system = frame.optional_string(TASK, "system", id_known)?;
    let messages = decode_messages(frame, id)?;
    let max_new_tokens = frame
        .optional_integer(TASK, "max_new_tokens", u64::from(u32::MAX), id_known)?
        .map(narrow);
    let temperature = match frame.get("temperature") {
        None => None,
        Some(value) => Some(value.as_f64().ok_or_else(|| ServerFrameError::WrongType {
            frame: TASK,
            field: "temperature".to_owned(),
            expected: "a number",
            found: kind(value),
            id: id_known,
        })?),
    };
    let created_at = frame.optional_integer(TASK, "created_at", MAX_SAFE_INTEGER, id_known)?;
    Ok(Task {
        state,
        id,
        system,
        messages,
        max_new_tokens,
        temperature,
        created_at,
    })
}

fn decode_messages(frame: &Fields<'_>, id: u32) -> Result<Vec<ChatMessage>, ServerFrameError> {
    let value = frame
        .get("messages")
        .ok_or(ServerFrameError::MissingField {
            frame: TASK,
            field: "messages".to_owned(),
            id: Some(id),
        })?;
    let Value::Array(items) = value else {
        return Err(ServerFrameError::WrongType {
            frame: TASK,
            field: "messages".to_owned(),
            expected: "an array of {\"role\",\"content\"} objects",
            found: kind(value),
            id: Some(id),
        });
    };
    let mut messages = Vec::with_capacity(items.len());
    for (at, item) in items.iter().enumerate() {
        let Value::Object(object) = item else {
            return Err(ServerFrameError::WrongType {
                frame: TASK,
                field: format!("messages[{at}]"),
                expected: "an object with string fields `role` and `content`",
                found: kind(item),
                id: Some(id),
            });
        };
        let message = Fields { object };
        let string = |name: &str| -> Result<String, ServerFrameError> {
            let field = format!("messages[{at}].{name}");
            match message.get(name) {
                None => Err(ServerFrameError::MissingField {
                    frame: TASK,
                    field,
                    id: Some(id),
                }),
                Some(Value::String(s)) => Ok(s.clone()),
                Some(other) => Err(ServerFrameError::WrongType {
                    frame: TASK,
                    field,
                    expected: "a string",
                    found: kind(other),
                    id: Some(id),
                }),
            }
        };
        let role = string("role")?;
        let content = string("content")?;
        messages.push(ChatMessage { role, content });
    }
    Ok(messages)
}

/// Field access on a JSON object where `null` reads as absent (the original server never writes
/// `null`; `undefined` members are simply omitted by `JSON.stringify`).
struct Fields<'a> {
    object: &'a Map<String, Value>,
}

impl Fields<'_> {
    fn get(&self, name: &str) -> Option<&Value> {
        self.object.get(name).filter(|value| !value.is_null())
    }

    fn integer(
        &self,
        frame: &'static str,
        name: &str,
        max: u64,
        id: Option<u32>,
    ) -> Result<u64, ServerFrameError> {
        self.optional_integer(frame, name, max, id)?
            .ok_or_else(|| ServerFrameError::MissingField {
                frame,
                field: name.to_owned(),
                id,
            })
    }

    fn optional_integer(
        &self,
        frame: &'static str,
        name: &str,
        max: u64,
        id: Option<u32>,
    ) -> Result<Option<u64>, ServerFrameError> {
        let Some(value) = self.get(name) else {
            return Ok(None);
        };
        let Value::Number(number) = value else {
            return Err(ServerFrameError::WrongType {
                frame,
                field: name.to_owned(),
                expected: "a number",
                found: kind(value),
                id,
            });
        };
        whole_number(number, max)
            .map(Some)
            .map_err(|detail| ServerFrameError::InvalidValue {
                frame,
                field: name.to_owned(),
                detail,
                id,
            })
    }

    fn optional_string(
        &self,
        frame: &'static str,
        name: &str,
        id: Option<u32>,
    ) -> Result<Option<String>, ServerFrameError> {
        match self.get(name) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(other) => Err(ServerFrameError::WrongType {
                frame,
                field: name.to_owned(),
                expected: "a string",
                found: kind(other),
                id,
            }),
        }
    }
}

/// A JSON number as a whole number from 0 to `max`, judged by value as JavaScript does: `1e3`
/// and `7.0` are whole, `-0` is 0.
fn whole_number(number: &serde_json::Number, max: u64) -> Result<u64, String> {
    let range = || format!("{number} is out of range; expected a whole number from 0 to {max}");
    if let Some(n) = number.as_u64() {
        return if n <= max { Ok(n) } else { Err(range()) };
    }
    if number.is_i64() {
        return Err(range());
    }
    let x = number.as_f64().unwrap_or(f64::NAN);
    if x.fract() != 0.0 || !x.is_finite() {
        return Err(format!("{number} is not a whole number"));
    }
    // `max` is at most 2^53 - 1 here and `x` is whole, so both conversions are exact.
    if x < 0.0 || x > max as f64 {
        return Err(range());
    }
    Ok(x as u64)
}

/// Narrows a value already checked against `u32::MAX`.
fn narrow(n: u64) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// The JSON type of a value, for error messages.
fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}
