//! The LLM dialect end to end: our node on the in-repo OpenAI backend, our gateway, and the two
//! user APIs (`/api/chat` and `/v1/chat/completions`, streamed and whole).

mod gateway_support;
mod llm_support;

use std::time::Duration;

use gateway_support::pair_quickly;
use llm_support::*;
use nodelink_tests::openai_backend::{OpenAiBackend, Reply};
use serde_json::{json, Value};

const TEXT: &str = "Grüße 🎉 日本語, ok";

#[test]
fn api_chat_streams_the_backends_text_through_our_node() {
    let scratch = Scratch::new("api-chat");
    let gateway = start_gateway(&scratch, |_| {});
    let backend = OpenAiBackend::start(Reply::Echo {
        delay: Duration::from_millis(1),
    })
    .unwrap();
    let node = start_node(&gateway, &backend.base_url(), "tiny", "n1", 2);

    let user = UserStream::open(&gateway, "/api/chat", API_TOKEN, &chat_body("tiny", TEXT));
    assert_eq!(user.status, 200);
    assert!(user
        .headers
        .contains(&"content-type: application/x-ndjson".to_string()));
    let lines = user.lines();
    let (text, last) = ndjson_result(&lines);
    assert_eq!(text, TEXT);
    assert_eq!(last, json!({"done": true}));
    assert!(lines.len() > 3, "streamed in pieces: {lines:?}");
    // The task reached the backend as the node maps it.
    let request = &backend.requests()[0];
    assert_eq!(request["model"], "tiny");
    assert_eq!(
        request["messages"],
        json!([{"role": "system", "content": "Be brief."}, {"role": "user", "content": TEXT}])
    );
    assert_eq!(request["max_tokens"], 64);
    assert_eq!(request["temperature"], 0.2);
    node.stop();
    node.wait();
}

#[test]
fn openai_api_streams_events_and_answers_whole() {
    let scratch = Scratch::new("openai");
    let gateway = start_gateway(&scratch, |_| {});
    let backend = OpenAiBackend::start(Reply::Echo {
        delay: Duration::ZERO,
    })
    .unwrap();
    let node = start_node(&gateway, &backend.base_url(), "tiny", "n1", 2);
    let body = json!({
        "model": "tiny", "stream": true, "max_tokens": 20,
        "messages": [{"role": "system", "content": "S"}, {"role": "user", "content": TEXT}]
    });

    let user = UserStream::open(&gateway, "/v1/chat/completions", API_TOKEN, &body);
    assert_eq!(user.status, 200);
    assert!(user
        .headers
        .contains(&"content-type: text/event-stream".to_string()));
    let lines = user.lines();
    let events: Vec<&str> = lines
        .iter()
        .filter_map(|l| l.trim_end().strip_prefix("data: "))
        .collect();
    assert_eq!(events.last(), Some(&"[DONE]"));
    // Each event is a `data:` line and a blank line.
    assert_eq!(lines.len(), events.len() * 2, "{lines:?}");
    let chunks: Vec<Value> = events[..events.len() - 1]
        .iter()
        .map(|e| serde_json::from_str(e).expect("a JSON chunk"))
        .collect();
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    let text: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(text, TEXT);
    let last = chunks.last().unwrap();
    assert_eq!(last["choices"][0]["finish_reason"], "stop");
    assert_eq!(last["object"], "chat.completion.chunk");
    assert_eq!(
        backend.requests()[0]["messages"][0],
        json!({"role": "system", "content": "S"})
    );
    assert_eq!(backend.requests()[0]["max_tokens"], 20);

    let mut whole = body.clone();
    whole["stream"] = json!(false);
    let user = UserStream::open(&gateway, "/v1/chat/completions", API_TOKEN, &whole);
    assert_eq!(user.status, 200);
    let answer: Value = serde_json::from_str(&user.lines().concat()).expect("a JSON completion");
    assert_eq!(answer["object"], "chat.completion");
    assert_eq!(answer["choices"][0]["message"]["content"], TEXT);
    assert_eq!(answer["model"], "tiny");
    node.stop();
    node.wait();
}

#[test]
fn users_need_a_token_and_a_valid_body() {
    let scratch = Scratch::new("refusals");
    let gateway = start_gateway(&scratch, |_| {});
    for path in ["/api/chat", "/v1/chat/completions"] {
        let user = UserStream::open(&gateway, path, "wrong", &chat_body("tiny", "hi"));
        assert_eq!(user.status, 401, "{path}");
        let user = UserStream::open(&gateway, path, API_TOKEN, &json!({"messages": []}));
        assert_eq!(user.status, 400, "{path}");
        assert!(
            user.lines().concat().contains("`model` is required"),
            "{path}"
        );
    }
    // The admin token is a user token too.
    let admin = gateway.admin_token().to_string();
    let user = UserStream::open(&gateway, "/api/chat", &admin, &json!({"model": "m"}));
    assert_eq!(user.status, 400);
}

#[test]
fn a_model_without_a_node_times_out_in_each_api() {
    let scratch = Scratch::new("no-node");
    let gateway = start_gateway(&scratch, |c| c.queue_timeout = Duration::from_millis(300));
    let user = UserStream::open(&gateway, "/api/chat", API_TOKEN, &chat_body("absent", "hi"));
    assert_eq!(user.status, 200);
    assert_eq!(user.lines(), ["{\"err\":\"timeout waiting for node\"}\n"]);

    let body = json!({"model": "absent", "messages": [{"role": "user", "content": "hi"}]});
    let user = UserStream::open(&gateway, "/v1/chat/completions", API_TOKEN, &body);
    assert_eq!(user.status, 503);
    let answer: Value = serde_json::from_str(&user.lines().concat()).unwrap();
    assert_eq!(answer["error"]["message"], "timeout waiting for node");
}

/// A node paired on the hub authenticates on `/ws` with its own token (no shared token needed);
/// once revoked, the same token is refused with 4002.
#[test]
fn a_paired_nodes_own_token_serves_llm_tasks_until_it_is_revoked() {
    let scratch = Scratch::new("llm-paired");
    let gateway = start_gateway(&scratch, |_| {});
    let backend = OpenAiBackend::start(Reply::Echo {
        delay: Duration::ZERO,
    })
    .unwrap();
    let operator = nodelink::gateway::OperatorClient::new(&gateway.url(), gateway.admin_token());
    let token = pair_quickly(&gateway.url(), &operator, "llm-paired-1", &[]).to_string();
    let node = start_node_with_token(&gateway, &backend.base_url(), "tiny", "n1", 1, &token);

    let user = UserStream::open(&gateway, "/api/chat", API_TOKEN, &chat_body("tiny", TEXT));
    assert_eq!(user.status, 200);
    let (text, last) = ndjson_result(&user.lines());
    assert_eq!(text, TEXT);
    assert_eq!(last, json!({"done": true}));
    node.stop();
    node.wait();

    let operator = nodelink::gateway::OperatorClient::new(&gateway.url(), gateway.admin_token());
    operator.revoke("llm-paired-1", "test").expect("revoked");
    let mut raw = RawNode::connect(
        &gateway,
        &format!("token={token}&model=tiny&max_concurrency=1&name=n2"),
    );
    assert_eq!(raw.close_code().0, 4002);
}
