//! Stops both ways and replacement, end to end: a user who goes away stops the backend's
//! stream through the gateway and the node; a node that goes away fails or re-dispatches its
//! tasks; a new connection with the same identity takes over the tasks of the old one.

mod llm_support;

use std::time::{Duration, Instant};

use llm_support::*;
use nodelink_tests::openai_backend::{OpenAiBackend, Reply};
use serde_json::json;

/// Waits until the backend has received `n` requests.
fn wait_requests(backend: &OpenAiBackend, n: usize) {
    let deadline = Instant::now() + LIMIT;
    while backend.requests().len() < n {
        assert!(Instant::now() < deadline, "the backend got no request");
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn a_user_who_goes_away_stops_the_backend_stream_at_once() {
    let scratch = Scratch::new("user-away");
    let gateway = start_gateway(&scratch, |_| {});
    let backend = OpenAiBackend::start(Reply::counting(500, Duration::from_millis(20))).unwrap();
    let node = start_node(&gateway, &backend.base_url(), "tiny", "n1", 1);

    let mut user = UserStream::open(&gateway, "/api/chat", API_TOKEN, &chat_body("tiny", "hi"));
    assert_eq!(user.status, 200);
    let first = user.next_line().expect("a first line");
    assert!(first.starts_with("{\"o\":"), "{first}");
    let left = Instant::now();
    user.leave();
    let logs = backend
        .wait_for_logs(1, LIMIT)
        .expect("the backend stream ended");
    assert!(logs[0].client_gone, "{logs:?}");
    assert!(logs[0].tokens_sent < 100, "{logs:?}");
    assert!(
        logs[0].ended_at.saturating_duration_since(left) < Duration::from_secs(1),
        "the stop took {:?}",
        logs[0].ended_at.saturating_duration_since(left)
    );

    // The slot is free again (max_concurrency 1): the next user is served.
    backend.set_reply(Reply::counting(3, Duration::ZERO));
    let user = UserStream::open(
        &gateway,
        "/api/chat",
        API_TOKEN,
        &chat_body("tiny", "again"),
    );
    let (text, last) = ndjson_result(&user.lines());
    assert_eq!(text, "t0 t1 t2 ");
    assert_eq!(last, json!({"done": true}));
    node.stop();
    node.wait();
}

#[test]
fn a_node_that_goes_away_mid_stream_fails_its_task_and_drops_the_backend_stream() {
    let scratch = Scratch::new("node-away");
    let gateway = start_gateway(&scratch, |_| {});
    let backend = OpenAiBackend::start(Reply::counting(500, Duration::from_millis(20))).unwrap();
    let node = start_node(&gateway, &backend.base_url(), "tiny", "n1", 1);

    let mut user = UserStream::open(&gateway, "/api/chat", API_TOKEN, &chat_body("tiny", "hi"));
    assert!(user
        .next_line()
        .expect("a first line")
        .starts_with("{\"o\":"));
    node.stop();
    let (_, last) = ndjson_result(&user.lines());
    // Text already reached the user, so the task cannot run again elsewhere.
    assert_eq!(last, json!({"err": "node disconnected"}));
    let logs = backend
        .wait_for_logs(1, LIMIT)
        .expect("the backend stream ended");
    assert!(logs[0].client_gone, "{logs:?}");
    node.wait();
}

#[test]
fn a_replacing_connection_takes_over_the_tasks_in_flight() {
    let scratch = Scratch::new("replace");
    let gateway = start_gateway(&scratch, |_| {});
    // The first node's backend is slow to start: no text reaches the user before the replacement.
    let slow = OpenAiBackend::start(Reply::counting(3, Duration::from_secs(30))).unwrap();
    let fast = OpenAiBackend::start(Reply::counting(4, Duration::ZERO)).unwrap();
    let first = start_node(&gateway, &slow.base_url(), "tiny", "same", 1);

    let user = UserStream::open(&gateway, "/api/chat", API_TOKEN, &chat_body("tiny", "hi"));
    wait_requests(&slow, 1);
    // Same model and name: the gateway closes the first connection with 4000 and sends the task
    // to the new one (the original server leaked it).
    let second = start_node(&gateway, &fast.base_url(), "tiny", "same", 1);
    let (text, last) = ndjson_result(&user.lines());
    assert_eq!(text, "t0 t1 t2 t3 ");
    assert_eq!(last, json!({"done": true}));
    assert_eq!(fast.requests().len(), 1);
    // The replaced node's executor was cancelled: its backend stream was dropped.
    let logs = slow.wait_for_logs(1, LIMIT).expect("the slow stream ended");
    assert!(logs[0].client_gone);
    first.stop();
    second.stop();
    first.wait();
    second.wait();
}

#[test]
fn a_user_who_leaves_a_whole_openai_request_stops_it_too() {
    let scratch = Scratch::new("whole-away");
    let gateway = start_gateway(&scratch, |_| {});
    let backend = OpenAiBackend::start(Reply::counting(500, Duration::from_millis(20))).unwrap();
    let node = start_node(&gateway, &backend.base_url(), "tiny", "n1", 1);
    let body = json!({"model": "tiny", "messages": [{"role": "user", "content": "hi"}]});
    let (tx, rx) = std::sync::mpsc::channel();
    let addr = gateway.local_addr();
    // The request is sent and then the socket closed, before any answer.
    std::thread::spawn(move || {
        let stream = std::net::TcpStream::connect(addr).unwrap();
        let body = body.to_string();
        let request = format!(
            "POST /v1/chat/completions HTTP/1.1\r\nhost: gw\r\nauthorization: Bearer {API_TOKEN}\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        );
        std::io::Write::write_all(&mut &stream, request.as_bytes()).unwrap();
        let _ = tx.send(stream);
    });
    let stream = rx.recv_timeout(LIMIT).expect("the request was sent");
    wait_requests(&backend, 1);
    let left = Instant::now();
    drop(stream);
    let logs = backend
        .wait_for_logs(1, LIMIT)
        .expect("the backend stream ended");
    assert!(logs[0].client_gone, "{logs:?}");
    assert!(logs[0].ended_at.saturating_duration_since(left) < Duration::from_secs(1));
    node.stop();
    node.wait();
}
