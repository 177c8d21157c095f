//! `llm.chat` against the in-repo OpenAI streaming backend on loopback.

mod support;

#[path = "../../tests/src/openai_backend.rs"]
mod openai_backend;

use std::net::TcpListener;
use std::time::{Duration, Instant};

use nodelink_core::node::executor::Executor;
use nodelink_core::wire::dto::ErrorCode;
use nodelink_worker_cuda::llm::{OpenAiChat, OpenAiConfig, BACKEND_ERROR, BACKEND_UNAVAILABLE};
use openai_backend::{Framing, OpenAiBackend, Reply};
use serde_json::{json, Value};
use support::{request, request_due, FakeContext};

fn tokens(list: &[&str]) -> Reply {
    Reply::Tokens {
        tokens: list.iter().map(|t| t.to_string()).collect(),
        delay: Duration::ZERO,
    }
}

fn executor(backend: &OpenAiBackend) -> OpenAiChat {
    OpenAiChat::new(OpenAiConfig::new(backend.base_url(), "served-model")).unwrap()
}

fn chat_params() -> Value {
    json!({
        "system": "Be brief.",
        "messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "Hello"},
                     {"role": "user", "content": "more", "leaked": 1}],
        "max_new_tokens": 64,
        "temperature": 0.5,
        "created_at": 1700000000
    })
}

fn run(
    chat: &OpenAiChat,
    params: Value,
    context: &FakeContext,
) -> nodelink_core::node::commands::Outcome {
    chat.run(&request("llm.chat", params), context)
}

fn code(outcome: &nodelink_core::node::commands::Outcome) -> ErrorCode {
    outcome.as_ref().unwrap_err().code.clone()
}

#[test]
fn streams_each_delta_in_order_and_maps_the_task() {
    let backend = OpenAiBackend::start(tokens(&["Hello", ", ", "world"])).unwrap();
    let mut config = OpenAiConfig::new(backend.base_url(), "served-model");
    config.api_key = Some("sk-test".into());
    config.max_tokens_cap = Some(32);
    let chat = OpenAiChat::new(config).unwrap();
    let context = FakeContext::new();
    let outcome = run(&chat, chat_params(), &context).unwrap();
    assert_eq!(context.texts(), ["Hello", ", ", "world"]);
    assert_eq!(outcome, json!({"finish_reason": "stop", "text_bytes": 12}));
    assert_eq!(
        backend.requests(),
        [json!({
            "model": "served-model",
            "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"},
                         {"role": "assistant", "content": "Hello"}, {"role": "user", "content": "more"}],
            "max_tokens": 32,
            "temperature": 0.5,
            "stream": true
        })]
    );
    assert_eq!(
        backend.authorizations(),
        [Some("Bearer sk-test".to_string())]
    );
}

#[test]
fn multibyte_text_survives_escapes_and_split_segments() {
    let pieces = ["Grü", "ße ", "🎉", " 日本語", "\u{10FFFF}é"];
    for framing in [
        Framing::default(),
        Framing {
            ascii_escape: true,
            piece_bytes: Some(1),
            ..Framing::default()
        },
        Framing {
            ascii_escape: false,
            piece_bytes: Some(3),
            ..Framing::default()
        },
    ] {
        let backend = OpenAiBackend::start(tokens(&pieces)).unwrap();
        backend.set_framing(framing.clone());
        let context = FakeContext::new();
        run(&executor(&backend), chat_params(), &context).unwrap();
        assert_eq!(context.texts(), pieces, "{framing:?}");
    }
}

#[test]
fn a_server_that_ignores_stream_true_still_answers() {
    let backend = OpenAiBackend::start(tokens(&["whole ", "answer"])).unwrap();
    backend.set_framing(Framing {
        ignore_stream: true,
        ..Framing::default()
    });
    let context = FakeContext::new();
    let outcome = run(&executor(&backend), chat_params(), &context).unwrap();
    assert_eq!(context.texts(), ["whole answer"]);
    assert_eq!(outcome["finish_reason"], "stop");
}

#[test]
fn cancellation_between_tokens_stops_reading_and_drops_the_stream() {
    let backend = OpenAiBackend::start(Reply::counting(1000, Duration::from_millis(40))).unwrap();
    let context = FakeContext::new();
    context.cancel_after(Duration::from_millis(200));
    let started = Instant::now();
    let outcome = run(&executor(&backend), chat_params(), &context);
    let returned = Instant::now();
    assert_eq!(code(&outcome), ErrorCode::Cancelled);
    assert!(
        returned - started < Duration::from_secs(2),
        "took {:?}",
        returned - started
    );
    let logs = backend
        .wait_for_logs(1, Duration::from_secs(3))
        .expect("the backend saw the end");
    assert!(logs[0].client_gone, "{logs:?}");
    assert!(logs[0].tokens_sent < 100, "{logs:?}");
    // The backend saw the connection go within a token interval or so of the return.
    assert!(logs[0].ended_at.saturating_duration_since(returned) < Duration::from_millis(500));
    assert!(context.texts().len() <= logs[0].tokens_sent);
    assert!(!context.texts().is_empty());
}

#[test]
fn cancellation_interrupts_a_read_that_waits_for_a_slow_token() {
    let backend = OpenAiBackend::start(Reply::counting(3, Duration::from_secs(20))).unwrap();
    let context = FakeContext::new();
    context.cancel_after(Duration::from_millis(100));
    let started = Instant::now();
    let outcome = run(&executor(&backend), chat_params(), &context);
    assert_eq!(code(&outcome), ErrorCode::Cancelled);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "took {:?}",
        started.elapsed()
    );
    let logs = backend
        .wait_for_logs(1, Duration::from_secs(3))
        .expect("the backend saw the end");
    assert!(logs[0].client_gone);
    assert_eq!(logs[0].tokens_sent, 0);
    assert!(context.texts().is_empty());
}

#[test]
fn a_backend_that_is_down_is_a_clear_error() {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("http://127.0.0.1:{port}/v1");
    let chat = OpenAiChat::new(OpenAiConfig::new(&url, "m")).unwrap();
    let outcome = run(&chat, chat_params(), &FakeContext::new());
    let error = outcome.unwrap_err();
    assert_eq!(error.code, ErrorCode::Other(BACKEND_UNAVAILABLE.into()));
    assert!(
        error.message.contains(&format!("{url}/chat/completions")),
        "{}",
        error.message
    );
}

#[test]
fn error_statuses_and_error_events_name_the_backends_message() {
    let backend = OpenAiBackend::start(Reply::Status {
        status: 404,
        message: "model `x` not found".into(),
    })
    .unwrap();
    let error = run(&executor(&backend), chat_params(), &FakeContext::new()).unwrap_err();
    assert_eq!(error.code, ErrorCode::Other(BACKEND_ERROR.into()));
    assert!(
        error.message.contains("HTTP 404: model `x` not found"),
        "{}",
        error.message
    );

    backend.set_reply(Reply::FailAfter {
        tokens: vec!["par".into(), "tial".into()],
        message: "out of memory".into(),
    });
    let context = FakeContext::new();
    let error = run(&executor(&backend), chat_params(), &context).unwrap_err();
    assert_eq!(error.code, ErrorCode::Other(BACKEND_ERROR.into()));
    assert!(
        error.message.ends_with("out of memory"),
        "{}",
        error.message
    );
    assert_eq!(context.texts(), ["par", "tial"]);

    backend.set_reply(Reply::DropAfter {
        tokens: vec!["cut".into()],
    });
    let error = run(&executor(&backend), chat_params(), &FakeContext::new()).unwrap_err();
    assert_eq!(error.code, ErrorCode::Other(BACKEND_ERROR.into()));
    assert!(error.message.contains("stream"), "{}", error.message);
}

#[test]
fn a_silent_backend_and_a_passed_deadline_time_out() {
    let backend = OpenAiBackend::start(Reply::counting(3, Duration::from_secs(20))).unwrap();
    let mut config = OpenAiConfig::new(backend.base_url(), "m");
    config.idle_timeout = Duration::from_millis(200);
    let started = Instant::now();
    let outcome = run(
        &OpenAiChat::new(config).unwrap(),
        chat_params(),
        &FakeContext::new(),
    );
    assert_eq!(code(&outcome), ErrorCode::Timeout);
    assert!(started.elapsed() < Duration::from_secs(2));

    backend.set_reply(Reply::counting(100, Duration::from_millis(50)));
    let started = Instant::now();
    let request = request_due("llm.chat", chat_params(), Duration::from_millis(300));
    let outcome = executor(&backend).run(&request, &*FakeContext::new());
    assert_eq!(code(&outcome), ErrorCode::Timeout, "{outcome:?}");
    assert!(started.elapsed() < Duration::from_secs(2));
}

#[test]
fn bad_params_and_zero_tokens_never_reach_the_backend() {
    let backend = OpenAiBackend::start(tokens(&["x"])).unwrap();
    let chat = executor(&backend);
    let validate = chat.spec().validate.expect("llm.chat checks its params");
    assert!(validate(&json!({"messages": ["a string"]}))
        .unwrap_err()
        .contains("`messages`"));
    assert!(validate(&chat_params()).is_ok());
    assert_eq!(
        code(&run(&chat, json!({"messages": 3}), &FakeContext::new())),
        ErrorCode::InvalidParams
    );
    let context = FakeContext::new();
    let outcome = run(
        &chat,
        json!({"messages": [], "max_new_tokens": 0}),
        &context,
    )
    .unwrap();
    assert_eq!(outcome["text_bytes"], 0);
    assert!(context.texts().is_empty());
    let cancelled = FakeContext::new();
    cancelled.cancel();
    assert_eq!(
        code(&run(&chat, chat_params(), &cancelled)),
        ErrorCode::Cancelled
    );
    assert!(backend.requests().is_empty());
    assert_eq!(chat.spec().required_scope.as_deref(), Some("llm.chat"));
}
