//! `llm.chat` on an OpenAI-compatible inference server: the executor behind an LLM node.
//!
//! # Theory of operation
//! An LLM node (dialect `llm`, docs/protocol.md section 8) runs each task as the command
//! `llm.chat` ([`nodelink_core::node::LLM_COMMAND`]). [`OpenAiChat`] turns the task's params
//! ([`ChatParams`]) into `POST {backend}/chat/completions` with `"stream": true`, reads the
//! server-sent events ([`sse`]) and hands each delta's text to [`RunContext::stream_text`] as it
//! arrives; the node's link cuts it into result frames. vLLM, llama.cpp's server and Ollama all
//! serve this endpoint under `/v1`.
//!
//! **Stopping.** A stop frame cancels the command. `is_cancelled` is checked between events, and
//! a watcher thread polls it every [`OpenAiConfig::cancel_poll`] while the executor waits on the
//! socket: on cancellation it shuts the request's connection down (`ureq::Agent::shutdown`), so
//! the blocked read returns at once and the backend sees the client go away and stops generating.
//! Each task has its own agent, so that shutdown touches no other task's connection.
//!
//! **Errors** become command errors a person can act on: `backend_unavailable` (no connection),
//! `backend_error` (an HTTP error status, an error event in the stream, a broken or truncated
//! stream), `timeout` (the command's deadline, or no byte for [`OpenAiConfig::idle_timeout`]),
//! `invalid_params`, `cancelled`. The dialect has no error frame: the node ends such a task with
//! its finished frame, and the error goes to the node's log.

pub mod request;
pub mod sse;

use std::fmt;
use std::io::{BufReader, Read};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use nodelink_core::node::commands::{CommandSpec, ExecuteRequest, Outcome};
use nodelink_core::node::executor::{command_error, Executor, RunContext};
use nodelink_core::node::LLM_COMMAND;
use nodelink_core::wire::dto::{CommandError, ErrorCode};
use serde_json::{json, Value};

pub use request::{clamp_temperature, ChatParams};
pub use sse::{parse_chunk, Chunk, SseEvent, SseReader};

/// The scope `llm.chat` requires on a hub node (an LLM-dialect node allows every scope).
pub const LLM_SCOPE: &str = "llm.chat";

/// The error code for a backend that cannot be reached.
pub const BACKEND_UNAVAILABLE: &str = "backend_unavailable";
/// The error code for a backend that answered with an error or broke its stream.
pub const BACKEND_ERROR: &str = "backend_error";

/// The most of an error response's body that is read for its message.
const ERROR_BODY_LIMIT: u64 = 64 * 1024;
/// The most of a non-streamed answer that is read (a server that ignored `"stream": true`).
const JSON_BODY_LIMIT: u64 = 16 * 1024 * 1024;

/// Where and how [`OpenAiChat`] reaches its backend.
#[derive(Clone)]
pub struct OpenAiConfig {
    /// The API base, `http://127.0.0.1:8000/v1`; `/chat/completions` is appended.
    pub backend_url: String,
    /// The `model` of each request: the name the backend serves the model under.
    pub model: String,
    /// Sent as `Authorization: Bearer ..` when set (never logged).
    pub api_key: Option<String>,
    /// How long opening the connection may take.
    pub connect_timeout: Duration,
    /// How long the backend may send nothing at all (prefill of a long prompt counts).
    pub idle_timeout: Duration,
    /// The most `max_tokens` asked of the backend, whatever the task says.
    pub max_tokens_cap: Option<u32>,
    /// How often the watcher looks for a cancellation while a read blocks.
    pub cancel_poll: Duration,
}

impl OpenAiConfig {
    /// A backend at `backend_url` serving `model`, with the default timeouts (connect 10 s,
    /// idle 120 s) and a cancellation poll of 10 ms.
    pub fn new(backend_url: impl Into<String>, model: impl Into<String>) -> OpenAiConfig {
        OpenAiConfig {
            backend_url: backend_url.into(),
            model: model.into(),
            api_key: None,
            connect_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(120),
            max_tokens_cap: None,
            cancel_poll: Duration::from_millis(10),
        }
    }

    /// `{backend_url}/chat/completions`.
    pub fn chat_url(&self) -> String {
        format!(
            "{}/chat/completions",
            self.backend_url.trim_end_matches('/')
        )
    }
}

impl fmt::Debug for OpenAiConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OpenAiConfig")
            .field("backend_url", &self.backend_url)
            .field("model", &self.model)
            .field("api_key", &self.api_key.as_ref().map(|_| "<redacted>"))
            .field("connect_timeout", &self.connect_timeout)
            .field("idle_timeout", &self.idle_timeout)
            .field("max_tokens_cap", &self.max_tokens_cap)
            .field("cancel_poll", &self.cancel_poll)
            .finish()
    }
}

/// Why an [`OpenAiConfig`] was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OpenAiConfigError {
    /// The backend URL is not `http://` or `https://` with a host.
    BadBackendUrl(String),
    /// The model name is empty.
    EmptyModel,
}

impl fmt::Display for OpenAiConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OpenAiConfigError::BadBackendUrl(url) => write!(
                f,
                "the LLM backend URL `{url}` must be http:// or https:// with a host, like http://127.0.0.1:8000/v1"
            ),
            OpenAiConfigError::EmptyModel => f.write_str("the backend model name is empty"),
        }
    }
}

impl std::error::Error for OpenAiConfigError {}

/// The `llm.chat` executor; see the module docs.
#[derive(Debug)]
pub struct OpenAiChat {
    config: OpenAiConfig,
    url: String,
}

impl OpenAiChat {
    /// An executor for `config`; refuses a URL that is not http(s) and an empty model.
    pub fn new(config: OpenAiConfig) -> Result<OpenAiChat, OpenAiConfigError> {
        let url = config.chat_url();
        let host = url
            .strip_prefix("http://")
            .or_else(|| url.strip_prefix("https://"))
            .and_then(|rest| rest.split('/').next())
            .unwrap_or("");
        if host.is_empty() || url.parse::<ureq::http::Uri>().is_err() {
            return Err(OpenAiConfigError::BadBackendUrl(config.backend_url));
        }
        if config.model.is_empty() {
            return Err(OpenAiConfigError::EmptyModel);
        }
        Ok(OpenAiChat { config, url })
    }

    pub fn config(&self) -> &OpenAiConfig {
        &self.config
    }

    /// Streams one chat to `context`; see the module docs.
    pub fn chat(&self, chat: &ChatParams, deadline: Instant, context: &dyn RunContext) -> Outcome {
        if context.is_cancelled() {
            return Err(cancelled());
        }
        let body = chat.to_request(&self.config.model, self.config.max_tokens_cap);
        if body["max_tokens"] == json!(0) {
            // Backends refuse `max_tokens: 0`; nothing to generate is an empty answer.
            return Ok(json!({"finish_reason": "length", "text_bytes": 0}));
        }
        #[allow(clippy::disallowed_methods)] // shells and executors keep time; core does not
        let remaining = deadline.saturating_duration_since(Instant::now());
        if remaining.is_zero() {
            return Err(command_error(
                ErrorCode::Timeout,
                "the command's deadline passed before it started",
            ));
        }
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(remaining))
            .timeout_connect(Some(self.config.connect_timeout))
            .timeout_per_read(Some(self.config.idle_timeout))
            .build()
            .into();
        let (done, finished) = mpsc::channel::<()>();
        std::thread::scope(|scope| {
            let watcher_agent = agent.clone();
            let poll = self.config.cancel_poll;
            scope.spawn(move || loop {
                match finished.recv_timeout(poll) {
                    Err(mpsc::RecvTimeoutError::Timeout) if context.is_cancelled() => {
                        watcher_agent.shutdown();
                        return;
                    }
                    Err(mpsc::RecvTimeoutError::Timeout) => {}
                    _ => return,
                }
            });
            let outcome = self.stream(&agent, &body, context);
            drop(done);
            outcome
        })
    }

    fn stream(&self, agent: &ureq::Agent, body: &Value, context: &dyn RunContext) -> Outcome {
        let mut request = agent
            .post(&self.url)
            .header("content-type", "application/json")
            .header("accept", "text/event-stream");
        if let Some(key) = &self.config.api_key {
            request = request.header("authorization", format!("Bearer {key}"));
        }
        let response = match request.send(body.to_string().as_bytes()) {
            Ok(response) => response,
            Err(_) if context.is_cancelled() => return Err(cancelled()),
            Err(e) => return Err(self.request_error(e)),
        };
        let status = response.status().as_u16();
        let json_answer = response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.trim_start().starts_with("application/json"));
        let reader = response.into_body().into_with_config();
        if status != 200 {
            let mut text = Vec::new();
            let _ = reader
                .limit(ERROR_BODY_LIMIT)
                .reader()
                .read_to_end(&mut text);
            return Err(backend_error(format!(
                "the LLM backend at {} answered HTTP {status}: {}",
                self.url,
                error_message(&String::from_utf8_lossy(&text))
            )));
        }
        if json_answer {
            return self.whole_answer(reader.limit(JSON_BODY_LIMIT).reader(), context);
        }
        let mut events = SseReader::new(BufReader::new(reader.reader()));
        let mut text_bytes = 0usize;
        let mut finish_reason: Option<String> = None;
        loop {
            if context.is_cancelled() {
                return Err(cancelled());
            }
            let event = match events.next_event() {
                Ok(event) => event,
                Err(_) if context.is_cancelled() => return Err(cancelled()),
                Err(e) => return Err(self.stream_error(e)),
            };
            match event {
                Some(SseEvent::Done) => break,
                Some(SseEvent::Data(data)) => {
                    let chunk = parse_chunk(&data).map_err(backend_error)?;
                    if context.is_cancelled() {
                        return Err(cancelled());
                    }
                    if let Some(text) = chunk.text {
                        text_bytes += text.len();
                        context.stream_text(&text);
                    }
                    if chunk.finish_reason.is_some() {
                        finish_reason = chunk.finish_reason;
                    }
                }
                None if finish_reason.is_some() => break,
                None => {
                    return Err(backend_error(format!(
                        "the LLM backend at {} closed the stream before it finished ({text_bytes} bytes of text received)",
                        self.url
                    )))
                }
            }
        }
        Ok(json!({"finish_reason": finish_reason, "text_bytes": text_bytes}))
    }

    /// A server that ignored `"stream": true` and sent a whole `chat.completion`.
    fn whole_answer(&self, mut reader: impl Read, context: &dyn RunContext) -> Outcome {
        let mut text = Vec::new();
        if let Err(e) = reader.read_to_end(&mut text) {
            if context.is_cancelled() {
                return Err(cancelled());
            }
            return Err(self.stream_error(sse::SseError::Io(e)));
        }
        let value: Value = serde_json::from_slice(&text).map_err(|e| {
            backend_error(format!(
                "the LLM backend at {} sent JSON that does not parse: {e}",
                self.url
            ))
        })?;
        let choice = value.get("choices").and_then(|c| c.get(0));
        let content = choice
            .and_then(|c| c.get("message"))
            .and_then(|m| m.get("content"))
            .and_then(Value::as_str)
            .unwrap_or("");
        if context.is_cancelled() {
            return Err(cancelled());
        }
        if !content.is_empty() {
            context.stream_text(content);
        }
        let finish_reason = choice.and_then(|c| c.get("finish_reason")).cloned();
        Ok(json!({"finish_reason": finish_reason, "text_bytes": content.len()}))
    }

    fn request_error(&self, error: ureq::Error) -> CommandError {
        match error {
            ureq::Error::Timeout(which) => command_error(
                ErrorCode::Timeout,
                format!(
                    "the LLM backend at {} did not answer in time ({which})",
                    self.url
                ),
            ),
            ureq::Error::Io(_) | ureq::Error::ConnectionFailed | ureq::Error::HostNotFound => {
                command_error(
                    ErrorCode::Other(BACKEND_UNAVAILABLE.into()),
                    format!("cannot reach the LLM backend at {}: {error}", self.url),
                )
            }
            other => backend_error(format!(
                "the request to the LLM backend at {} failed: {other}",
                self.url
            )),
        }
    }

    fn stream_error(&self, error: sse::SseError) -> CommandError {
        match error {
            sse::SseError::Io(e) => {
                match e.into_inner().map(|inner| inner.downcast::<ureq::Error>()) {
                    Some(Ok(inner)) if matches!(*inner, ureq::Error::Timeout(_)) => command_error(
                        ErrorCode::Timeout,
                        format!("the LLM backend at {} stopped sending ({inner})", self.url),
                    ),
                    Some(Ok(inner)) => backend_error(format!(
                        "the stream from the LLM backend at {} broke: {inner}",
                        self.url
                    )),
                    Some(Err(inner)) => backend_error(format!(
                        "the stream from the LLM backend at {} broke: {inner}",
                        self.url
                    )),
                    None => backend_error(format!(
                        "the stream from the LLM backend at {} broke",
                        self.url
                    )),
                }
            }
            sse::SseError::LineTooLong => backend_error(format!(
                "the LLM backend at {} sent a line longer than {} bytes",
                self.url,
                sse::MAX_LINE
            )),
            sse::SseError::NotUtf8 => backend_error(format!(
                "the LLM backend at {} sent text that is not UTF-8",
                self.url
            )),
        }
    }
}

impl Executor for OpenAiChat {
    fn spec(&self) -> CommandSpec {
        CommandSpec::new(LLM_COMMAND)
            .scope(LLM_SCOPE)
            .validated_by(|params| {
                ChatParams::from_params(params)
                    .map(|_| ())
                    .map_err(|e| e.message)
            })
    }

    fn run(&self, request: &ExecuteRequest, context: &dyn RunContext) -> Outcome {
        let chat = ChatParams::from_params(&request.params)?;
        self.chat(&chat, request.deadline, context)
    }
}

fn backend_error(message: impl Into<String>) -> CommandError {
    command_error(ErrorCode::Other(BACKEND_ERROR.into()), message)
}

fn cancelled() -> CommandError {
    crate::cancelled()
}

/// The message of an OpenAI-style error body (`{"error":{"message":..}}`, `{"message":..}`,
/// `{"detail":..}`), or the body itself, clipped.
fn error_message(body: &str) -> String {
    let message = serde_json::from_str::<Value>(body).ok().and_then(|v| {
        let error = v.get("error").unwrap_or(&v);
        error
            .get("message")
            .or_else(|| error.get("detail"))
            .and_then(Value::as_str)
            .or_else(|| error.as_str())
            .map(str::to_owned)
    });
    let message = message.unwrap_or_else(|| body.trim().to_owned());
    if message.is_empty() {
        "(no message)".to_owned()
    } else {
        sse::clip(&message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_bad_urls_and_models() {
        for url in [
            "ftp://x/v1",
            "http:///v1",
            "127.0.0.1:8000",
            "http://a b/v1",
        ] {
            assert_eq!(
                OpenAiChat::new(OpenAiConfig::new(url, "m")).unwrap_err(),
                OpenAiConfigError::BadBackendUrl(url.into())
            );
        }
        assert_eq!(
            OpenAiChat::new(OpenAiConfig::new("http://h:1/v1", "")).unwrap_err(),
            OpenAiConfigError::EmptyModel
        );
        let chat = OpenAiChat::new(OpenAiConfig::new("https://h:1/v1/", "m")).unwrap();
        assert_eq!(chat.url, "https://h:1/v1/chat/completions");
    }

    #[test]
    fn hides_the_api_key() {
        let mut config = OpenAiConfig::new("http://h/v1", "m");
        config.api_key = Some("sk-secret".into());
        assert!(!format!("{config:?}").contains("sk-secret"));
    }

    #[test]
    fn reads_error_bodies() {
        assert_eq!(
            error_message(r#"{"error":{"message":"no such model"}}"#),
            "no such model"
        );
        assert_eq!(error_message(r#"{"object":"error","message":"m"}"#), "m");
        assert_eq!(error_message(r#"{"detail":"Not Found"}"#), "Not Found");
        assert_eq!(error_message(r#"{"error":"plain"}"#), "plain");
        assert_eq!(error_message(" gateway down \n"), "gateway down");
        assert_eq!(error_message(""), "(no message)");
    }
}
