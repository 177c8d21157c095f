//! The gateway's side of the LLM dialect against a raw WebSocket node: close codes, and text
//! split inside a character at every byte offset.

mod llm_support;

use llm_support::*;
use serde_json::json;

#[test]
fn missing_parameters_close_4001_and_a_bad_token_4002() {
    let scratch = Scratch::new("closes");
    let gateway = start_gateway(&scratch, |_| {});
    let mut node = RawNode::connect(&gateway, "model=m&max_concurrency=1");
    let (code, reason) = node.close_code();
    assert_eq!(code, 4001);
    assert!(
        reason.contains("token") && reason.contains("name"),
        "{reason}"
    );
    let mut node = RawNode::connect(
        &gateway,
        &format!("token={NODE_TOKEN}&model=m&max_concurrency=0&name=n"),
    );
    assert_eq!(node.close_code().0, 4001);
    let mut node = RawNode::connect(&gateway, "token=wrong&model=m&max_concurrency=1&name=n");
    assert_eq!(node.close_code(), (4002, "Invalid token".to_string()));
    // A node-token-shaped token of a node that never paired is refused the same way.
    let mut node = RawNode::connect(&gateway, "token=n1.secret&model=m&max_concurrency=1&name=n");
    assert_eq!(node.close_code().0, 4002);
}

#[test]
fn a_second_connection_with_the_same_identity_closes_the_first_with_4000() {
    let scratch = Scratch::new("bye");
    let gateway = start_gateway(&scratch, |_| {});
    let mut first = RawNode::connect_as(&gateway, "m", "n", 1);
    // The first is accepted: it receives a task.
    let user = UserStream::open(&gateway, "/api/chat", API_TOKEN, &chat_body("m", "hi"));
    let task = first.next_text();
    assert_eq!(task["messages"], json!([{"role": "user", "content": "hi"}]));
    let mut second = RawNode::connect_as(&gateway, "m", "n", 1);
    assert_eq!(first.close_code(), (4000, "Bye".to_string()));
    // Nothing of it had reached the user: the task goes to the new connection, same id.
    let again = second.next_text();
    assert_eq!(again["id"], task["id"]);
    let id = u32::try_from(again["id"].as_u64().unwrap()).unwrap();
    second.send_result(id, "done".as_bytes());
    second.send_result(id, &[]);
    let (text, last) = ndjson_result(&user.lines());
    assert_eq!((text.as_str(), last), ("done", json!({"done": true})));
}

#[test]
fn text_split_inside_a_character_at_every_byte_offset_reaches_the_user_whole() {
    let scratch = Scratch::new("split");
    let gateway = start_gateway(&scratch, |_| {});
    let mut node = RawNode::connect_as(&gateway, "m", "n", 4);
    let text = "aé日🎉z";
    let bytes = text.as_bytes();
    for cut in 1..bytes.len() {
        let user = UserStream::open(&gateway, "/api/chat", API_TOKEN, &chat_body("m", "x"));
        let task = node.next_text();
        let id = u32::try_from(task["id"].as_u64().unwrap()).unwrap();
        node.send_result(id, &bytes[..cut]);
        node.send_result(id, &bytes[cut..]);
        node.send_result(id, &[]);
        let lines = user.lines();
        let (received, last) = ndjson_result(&lines);
        assert_eq!(received, text, "cut at byte {cut}: {lines:?}");
        assert_eq!(last, json!({"done": true}));
        assert!(!received.contains('\u{FFFD}'));
    }
    // Bytes that are not UTF-8 fail the task and the node is told to stop.
    let user = UserStream::open(&gateway, "/api/chat", API_TOKEN, &chat_body("m", "x"));
    let task = node.next_text();
    let id = u32::try_from(task["id"].as_u64().unwrap()).unwrap();
    node.send_result(id, b"ok\xff");
    let (_, last) = ndjson_result(&user.lines());
    assert_eq!(last, json!({"err": "node sent invalid UTF-8"}));
    assert_eq!(node.next_text(), json!({"id": id, "stop": true}));
}
