//! The `llm.chat` params (what the node machine makes of a dialect task) and the OpenAI request
//! body they become.
//!
//! The params are `{"system":..,"messages":[{"role":..,"content":..}],"max_new_tokens":..,
//! "temperature":..}` (`nodelink_core::node` writes them from a `wire::llm::Task`); unknown members
//! are ignored, as the dialect ignores them in tasks (docs/protocol.md section 8.4).

use nodelink_core::node::executor::{invalid_params, param};
use nodelink_core::wire::dto::CommandError;
use nodelink_core::wire::llm::{ChatMessage, Task};
use serde::Deserialize;
use serde_json::{json, Value};

/// The highest temperature the OpenAI API accepts; higher values are clamped to it.
pub const MAX_TEMPERATURE: f64 = 2.0;

/// One `llm.chat` request, decoded.
#[derive(Clone, Debug, PartialEq)]
pub struct ChatParams {
    /// The system prompt; `None` or empty: none is sent.
    pub system: Option<String>,
    pub messages: Vec<ChatMessage>,
    pub max_new_tokens: u32,
    pub temperature: f64,
}

#[derive(Deserialize)]
struct WireMessage {
    role: String,
    content: String,
}

impl ChatParams {
    /// Reads the params; `invalid_params` names the member that is wrong. Absent
    /// `max_new_tokens` and `temperature` take the original server's defaults (50 and 0).
    pub fn from_params(params: &Value) -> Result<ChatParams, CommandError> {
        if !params.is_object() {
            return Err(invalid_params("llm.chat params must be a JSON object"));
        }
        let messages: Vec<WireMessage> =
            param(params, "messages")?.ok_or_else(|| invalid_params("`messages` is required"))?;
        let temperature: f64 = param(params, "temperature")?.unwrap_or(Task::DEFAULT_TEMPERATURE);
        Ok(ChatParams {
            system: param(params, "system")?,
            messages: messages
                .into_iter()
                .map(|m| ChatMessage::new(m.role, m.content))
                .collect(),
            max_new_tokens: param(params, "max_new_tokens")?
                .unwrap_or(Task::DEFAULT_MAX_NEW_TOKENS),
            temperature,
        })
    }

    /// The body of `POST {backend}/chat/completions`, streaming. The dialect's roles become the
    /// OpenAI ones as the original nodes read them: `assistant` (any case) stays the assistant,
    /// anything else is the user; the system prompt goes first. A temperature that is not a
    /// finite number reads as 0, and one outside 0..=2 is clamped (the OpenAI range).
    pub fn to_request(&self, model: &str, max_tokens_cap: Option<u32>) -> Value {
        let mut messages = Vec::with_capacity(self.messages.len() + 1);
        if let Some(system) = self.system.as_deref().filter(|s| !s.is_empty()) {
            messages.push(json!({"role": "system", "content": system}));
        }
        for m in &self.messages {
            let role = if m.role.eq_ignore_ascii_case("assistant") {
                "assistant"
            } else {
                "user"
            };
            messages.push(json!({"role": role, "content": m.content}));
        }
        let max_tokens = match max_tokens_cap {
            Some(cap) => self.max_new_tokens.min(cap),
            None => self.max_new_tokens,
        };
        json!({
            "model": model,
            "messages": messages,
            "max_tokens": max_tokens,
            "temperature": clamp_temperature(self.temperature),
            "stream": true,
        })
    }
}

/// A temperature the OpenAI API accepts.
pub fn clamp_temperature(t: f64) -> f64 {
    if t.is_finite() {
        t.clamp(0.0, MAX_TEMPERATURE)
    } else {
        0.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_roles_system_and_limits() {
        let params = json!({
            "system": "Be brief.",
            "messages": [
                {"role": "user", "content": "hi", "extra": 1},
                {"role": "Assistant", "content": "Hello"},
                {"role": "tool", "content": "日本語"}
            ],
            "max_new_tokens": 500,
            "temperature": 3.5,
            "unknown": true
        });
        let chat = ChatParams::from_params(&params).unwrap();
        let body = chat.to_request("m1", Some(128));
        assert_eq!(
            body,
            json!({
                "model": "m1",
                "messages": [
                    {"role": "system", "content": "Be brief."},
                    {"role": "user", "content": "hi"},
                    {"role": "assistant", "content": "Hello"},
                    {"role": "user", "content": "日本語"}
                ],
                "max_tokens": 128,
                "temperature": 2.0,
                "stream": true
            })
        );
    }

    #[test]
    fn defaults_and_empty_system() {
        let chat = ChatParams::from_params(&json!({"system": "", "messages": []})).unwrap();
        assert_eq!(chat.max_new_tokens, 50);
        assert_eq!(chat.temperature, 0.0);
        let body = chat.to_request("m", None);
        assert_eq!(body["messages"], json!([]));
        assert_eq!(body["max_tokens"], json!(50));
        assert_eq!(clamp_temperature(f64::NAN), 0.0);
        assert_eq!(clamp_temperature(-1.0), 0.0);
    }

    #[test]
    fn names_the_bad_member() {
        for (params, needle) in [
            (json!({}), "`messages` is required"),
            (json!({"messages": ["hi"]}), "`messages`"),
            (
                json!({"messages": [], "max_new_tokens": -1}),
                "`max_new_tokens`",
            ),
            (json!({"messages": [], "system": 5}), "`system`"),
            (json!([1]), "JSON object"),
        ] {
            let error = ChatParams::from_params(&params).unwrap_err();
            assert!(
                error.message.contains(needle),
                "{params}: {}",
                error.message
            );
        }
    }
}
