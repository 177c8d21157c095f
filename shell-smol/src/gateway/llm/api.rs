//! The user APIs' bodies: `POST /api/chat` (the original server's) and
//! `POST /v1/chat/completions` (OpenAI's), parsed into a [`ChatRequest`], and the updates of a
//! task written in each API's format.

use nodelink_core::gateway::llm::{ChatRequest, TaskError, TaskUpdate};
use nodelink_core::wire::llm::ChatMessage;
use serde::Deserialize;
use serde_json::{json, Value};

/// A user's chat, parsed.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct UserChat {
    pub model: String,
    pub request: ChatRequest,
    /// OpenAI's `stream` (the original API always streams).
    pub stream: bool,
}

#[derive(Deserialize)]
struct ApiChatBody {
    model: Option<String>,
    system: Option<String>,
    messages: Option<Vec<ApiMessage>>,
    max_new_tokens: Option<u32>,
    temperature: Option<f64>,
}

#[derive(Deserialize)]
struct ApiMessage {
    role: String,
    content: Content,
}

/// OpenAI allows a message's content as text or as parts (`[{"type":"text","text":..}]`).
#[derive(Deserialize)]
#[serde(untagged)]
enum Content {
    Text(String),
    Parts(Vec<Value>),
}

impl Content {
    fn into_text(self) -> Result<String, String> {
        match self {
            Content::Text(text) => Ok(text),
            Content::Parts(parts) => parts
                .iter()
                .map(
                    |part| match (part["type"].as_str(), part["text"].as_str()) {
                        (Some("text"), Some(text)) => Ok(text),
                        _ => Err("only text content parts are supported".to_string()),
                    },
                )
                .collect::<Result<Vec<_>, _>>()
                .map(|texts| texts.concat()),
        }
    }
}

/// `POST /api/chat`: `{"model":..,"system":..,"messages":[{"role":..,"content":..}],
/// "max_new_tokens":..,"temperature":..}` (the task's fields plus the model).
pub(crate) fn parse_api_chat(body: &[u8]) -> Result<UserChat, String> {
    let body: ApiChatBody =
        serde_json::from_slice(body).map_err(|e| format!("the body is not a chat request: {e}"))?;
    let model = required_model(body.model)?;
    let messages = body
        .messages
        .ok_or("`messages` is required")?
        .into_iter()
        .map(|m| Ok(ChatMessage::new(m.role, m.content.into_text()?)))
        .collect::<Result<Vec<_>, String>>()?;
    Ok(UserChat {
        model,
        request: ChatRequest {
            system: body.system,
            messages,
            max_new_tokens: body.max_new_tokens,
            temperature: body.temperature,
        },
        stream: true,
    })
}

#[derive(Deserialize)]
struct OpenAiBody {
    model: Option<String>,
    messages: Option<Vec<ApiMessage>>,
    max_tokens: Option<u32>,
    max_completion_tokens: Option<u32>,
    temperature: Option<f64>,
    #[serde(default)]
    stream: bool,
}

/// `POST /v1/chat/completions`. `system` messages become the task's system prompt (joined by
/// blank lines, in order); `max_completion_tokens` wins over `max_tokens`.
pub(crate) fn parse_openai(body: &[u8]) -> Result<UserChat, String> {
    let body: OpenAiBody =
        serde_json::from_slice(body).map_err(|e| format!("the body is not a chat request: {e}"))?;
    let model = required_model(body.model)?;
    let mut system: Vec<String> = Vec::new();
    let mut messages = Vec::new();
    for m in body.messages.ok_or("`messages` is required")? {
        let text = m.content.into_text()?;
        if m.role == "system" || m.role == "developer" {
            system.push(text);
        } else {
            messages.push(ChatMessage::new(m.role, text));
        }
    }
    Ok(UserChat {
        model,
        request: ChatRequest {
            system: (!system.is_empty()).then(|| system.join("\n\n")),
            messages,
            max_new_tokens: body.max_completion_tokens.or(body.max_tokens),
            temperature: body.temperature,
        },
        stream: body.stream,
    })
}

fn required_model(model: Option<String>) -> Result<String, String> {
    match model {
        Some(model) if !model.is_empty() => Ok(model),
        _ => Err("`model` is required".to_string()),
    }
}

/// `POST /api/chat`'s line for an update; `None` for [`TaskUpdate::Stopped`] (nobody reads it).
pub(crate) fn ndjson_line(update: &TaskUpdate) -> Option<String> {
    let value = match update {
        TaskUpdate::Text(text) => json!({ "o": text }),
        TaskUpdate::Done => json!({ "done": true }),
        TaskUpdate::Failed(error) => json!({ "err": error.to_string() }),
        TaskUpdate::Stopped => return None,
    };
    Some(format!("{value}\n"))
}

/// Who an OpenAI answer says it is.
#[derive(Clone, Debug)]
pub(crate) struct OpenAiIds {
    pub id: String,
    pub model: String,
    pub created: u64,
}

impl OpenAiIds {
    fn chunk(&self, delta: Value, finish_reason: Value) -> String {
        let chunk = json!({
            "id": self.id, "object": "chat.completion.chunk", "created": self.created,
            "model": self.model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}]
        });
        format!("data: {chunk}\n\n")
    }

    /// The first event: the assistant's role.
    pub fn sse_head(&self) -> String {
        self.chunk(json!({"role": "assistant", "content": ""}), Value::Null)
    }

    /// The events for an update; `None` for [`TaskUpdate::Stopped`].
    pub fn sse_events(&self, update: &TaskUpdate) -> Option<String> {
        Some(match update {
            TaskUpdate::Text(text) => self.chunk(json!({ "content": text }), Value::Null),
            TaskUpdate::Done => self.chunk(json!({}), json!("stop")) + "data: [DONE]\n\n",
            TaskUpdate::Failed(error) => {
                format!("data: {}\n\n", openai_error(error)) + "data: [DONE]\n\n"
            }
            TaskUpdate::Stopped => return None,
        })
    }

    /// The whole `chat.completion` of a non-streamed request.
    pub fn completion(&self, text: &str) -> Value {
        json!({
            "id": self.id, "object": "chat.completion", "created": self.created,
            "model": self.model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                         "finish_reason": "stop"}]
        })
    }
}

/// OpenAI's error object for a failed task.
pub(crate) fn openai_error(error: &TaskError) -> Value {
    json!({"error": {"message": error.to_string(), "type": "server_error", "code": error_code(error)}})
}

/// The HTTP status of a failed non-streamed request.
pub(crate) fn error_status(error: &TaskError) -> u16 {
    match error {
        TaskError::QueueTimeout => 503,
        TaskError::FinishTimeout => 504,
        _ => 502,
    }
}

fn error_code(error: &TaskError) -> &'static str {
    match error {
        TaskError::QueueTimeout => "no_node",
        TaskError::FinishTimeout => "timeout",
        TaskError::NodeLost => "node_lost",
        TaskError::InvalidUtf8 => "invalid_output",
        _ => "failed",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_original_request() {
        let chat = parse_api_chat(
            br#"{"model":"m","system":"s","messages":[{"role":"user","content":"hi"}],"max_new_tokens":9,"temperature":0.5,"x":1}"#,
        )
        .unwrap();
        assert_eq!(chat.model, "m");
        assert_eq!(chat.request.system.as_deref(), Some("s"));
        assert_eq!(chat.request.messages, [ChatMessage::new("user", "hi")]);
        assert_eq!(chat.request.max_new_tokens, Some(9));
        assert_eq!(chat.request.temperature, Some(0.5));
        assert!(parse_api_chat(br#"{"messages":[]}"#)
            .unwrap_err()
            .contains("`model`"));
        assert!(parse_api_chat(br#"{"model":"m"}"#)
            .unwrap_err()
            .contains("`messages`"));
        assert!(parse_api_chat(b"nope")
            .unwrap_err()
            .contains("not a chat request"));
    }

    #[test]
    fn parses_openai_requests() {
        let chat = parse_openai(
            br#"{"model":"m","stream":true,"max_tokens":5,"max_completion_tokens":7,
                "messages":[{"role":"system","content":"a"},{"role":"developer","content":"b"},
                {"role":"user","content":[{"type":"text","text":"h"},{"type":"text","text":"i"}]}]}"#,
        )
        .unwrap();
        assert!(chat.stream);
        assert_eq!(chat.request.system.as_deref(), Some("a\n\nb"));
        assert_eq!(chat.request.messages, [ChatMessage::new("user", "hi")]);
        assert_eq!(chat.request.max_new_tokens, Some(7));
        let plain = parse_openai(br#"{"model":"m","messages":[]}"#).unwrap();
        assert!(!plain.stream);
        assert_eq!(plain.request.system, None);
        assert!(parse_openai(
            br#"{"model":"m","messages":[{"role":"user","content":[{"type":"image_url"}]}]}"#
        )
        .unwrap_err()
        .contains("text content"));
    }

    #[test]
    fn writes_each_update() {
        assert_eq!(
            ndjson_line(&TaskUpdate::Text("é\"".into())).unwrap(),
            "{\"o\":\"é\\\"\"}\n"
        );
        assert_eq!(ndjson_line(&TaskUpdate::Done).unwrap(), "{\"done\":true}\n");
        assert_eq!(
            ndjson_line(&TaskUpdate::Failed(TaskError::QueueTimeout)).unwrap(),
            "{\"err\":\"timeout waiting for node\"}\n"
        );
        assert_eq!(ndjson_line(&TaskUpdate::Stopped), None);
        let ids = OpenAiIds {
            id: "chatcmpl-1".into(),
            model: "m".into(),
            created: 5,
        };
        let done = ids.sse_events(&TaskUpdate::Done).unwrap();
        assert!(done.ends_with("data: [DONE]\n\n"));
        assert!(done.contains("\"finish_reason\":\"stop\""));
        let failed = ids
            .sse_events(&TaskUpdate::Failed(TaskError::NodeLost))
            .unwrap();
        assert!(failed.starts_with(
            "data: {\"error\":{\"code\":\"node_lost\",\"message\":\"node disconnected\""
        ));
        assert_eq!(error_status(&TaskError::QueueTimeout), 503);
    }
}
