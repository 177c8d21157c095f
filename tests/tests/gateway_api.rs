//! The operator API's refusals (status and `{"error"}` for every kind of bad input), the size
//! limits, the upgrade's refusals, the admin token file, and waiting/cancelling commands.
mod gateway_support;

use std::time::Duration;

use gateway_support::{pair_quickly, paired_config, start_gateway, Scratch, TestNode};
use nodelink::gateway::OperatorClient;
use nodelink_core::node::NodeState;
use serde_json::{json, Value};

struct Api {
    url: String,
    token: String,
    agent: ureq::Agent,
}

impl Api {
    fn new(url: &str, token: &str) -> Api {
        Api {
            url: url.to_string(),
            token: token.to_string(),
            agent: ureq::Agent::config_builder()
                .http_status_as_error(false)
                .timeout_global(Some(Duration::from_secs(5)))
                .build()
                .into(),
        }
    }

    /// `method path` with the admin token (unless `token` says otherwise) and `body`.
    fn call(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<&str>,
    ) -> (u16, Value) {
        let token = token.unwrap_or(&self.token);
        let request = ureq::http::Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.url))
            .header("authorization", format!("Bearer {token}"))
            .header("content-type", "application/json")
            .body(body.unwrap_or("").to_string())
            .expect("a request");
        let mut response = self.agent.run(request).expect("an answer");
        let status = response.status().as_u16();
        let text = response.body_mut().read_to_string().unwrap_or_default();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    /// Asserts `status` and a non-empty `error` message.
    fn refused(&self, method: &str, path: &str, body: Option<&str>, status: u16) -> String {
        let (got, value) = self.call(method, path, None, body);
        assert_eq!(got, status, "{method} {path} {body:?}: {value}");
        let message = value["error"].as_str().unwrap_or_default().to_string();
        assert!(!message.is_empty(), "{method} {path}: {value}");
        message
    }
}

#[test]
fn bad_operator_requests_get_clear_errors() {
    let scratch = Scratch::new("api");
    let gateway = start_gateway(&scratch);
    let api = Api::new(&gateway.url(), gateway.admin_token());
    let client = OperatorClient::new(&gateway.url(), gateway.admin_token());
    let _ = pair_quickly(&gateway.url(), &client, "n1", &["echo".to_string()]);

    for token in ["", "wrong"] {
        let (status, value) = api.call("GET", "/api/admin/nodes", Some(token), None);
        assert_eq!(status, 401, "{value}");
        assert!(value["error"].is_string());
    }
    assert_eq!(api.call("GET", "/api/admin/nodes", None, None).0, 200);
    api.refused("GET", "/api/admin/nothing", None, 404);
    api.refused("DELETE", "/api/admin/nodes", None, 405);
    api.refused("GET", "/api/admin/nodes/ghost", None, 404);

    let post =
        |body: &str, status: u16| api.refused("POST", "/api/admin/commands", Some(body), status);
    assert!(post("{bad", 400).contains("invalid JSON"));
    assert!(post(r#"{"node":"n1","command":"echo","colour":1}"#, 400).contains("colour"));
    post(r#"{"command":"echo"}"#, 400);
    post("", 400);
    post(r#"{"node":"","command":"echo"}"#, 400);
    post(r#"{"node":"ghost","command":"echo"}"#, 404);
    post(r#"{"node":"n1","command":"echo","timeoutMs":0}"#, 400);
    post(
        r#"{"node":"n1","command":"echo","requiredScope":"screen.capture"}"#,
        403,
    );
    post(
        r#"{"node":"n1","command":"echo","requiredScope":"not a scope"}"#,
        400,
    );

    api.refused(
        "POST",
        "/api/admin/pairings/XYZ-999/approve",
        Some("{}"),
        404,
    );
    api.refused("POST", "/api/admin/pairings/XYZ-999/reject", None, 404);
    api.refused(
        "PUT",
        "/api/admin/nodes/ghost/scopes",
        Some(r#"{"scopes":[]}"#),
        404,
    );
    api.refused(
        "PUT",
        "/api/admin/nodes/n1/scopes",
        Some(r#"{"scopes":["bad scope"]}"#),
        400,
    );
    api.refused("PUT", "/api/admin/nodes/n1/scopes", None, 400);
    api.refused("POST", "/api/admin/nodes/ghost/revoke", None, 404);
    api.refused("GET", "/api/admin/commands/nope", None, 404);
    api.refused("POST", "/api/admin/commands/nope/cancel", None, 404);
    api.refused("POST", "/api/admin/commands/nope/approve", None, 404);

    // The node REST routes: the machine's JSON errors, and the size cap before it.
    api.refused("GET", "/api/nodes/me/nothing", None, 404);
    api.refused("PUT", "/api/nodes/me/pair", None, 405);
    let (status, _) = api.call("GET", "/api/nodes/me/commands", Some("n1.forged"), None);
    assert_eq!(status, 401);
    // A body declared over the cap is refused before it is read (the client would get a reset
    // if it kept writing, so this one sends only the head and a little).
    for path in ["/api/nodes/me/heartbeat", "/api/admin/commands"] {
        let answer = raw_exchange(
            &gateway.url(),
            &format!(
                "POST {path} HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {}\r\n\
                 content-length: 6000000\r\n\r\n{{\"a\":",
                gateway.admin_token()
            ),
        );
        assert!(answer.starts_with("HTTP/1.1 413"), "{path}: {answer}");
        assert!(answer.contains("\"error\""), "{answer}");
    }
    // A body just under the cap is read (and then refused for what it is, not its size).
    let large = format!("{{\"pad\":\"{}\"}}", "x".repeat(4 * 1024 * 1024));
    api.refused("POST", "/api/admin/commands", Some(&large), 400);
    // A request head over the limit is refused by hyper (431), not read whole.
    let long = ureq::http::Request::builder()
        .uri(format!("{}/api/admin/nodes", gateway.url()))
        .header("x-padding", "p".repeat(20 * 1024))
        .body(())
        .expect("a request");
    // An error means the connection was closed: refused as well.
    if let Ok(response) = api.agent.run(long) {
        assert_eq!(response.status().as_u16(), 431);
    }
    assert_eq!(
        api.call("GET", "/api/admin/nodes", None, None).0,
        200,
        "still serving"
    );
}

/// Writes `request` on a fresh connection and reads what comes back (bounded in time).
fn raw_exchange(url: &str, request: &str) -> String {
    use std::io::{Read, Write};
    let addr = url.trim_start_matches("http://");
    let mut stream = std::net::TcpStream::connect(addr).expect("connects");
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    stream.write_all(request.as_bytes()).expect("written");
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    while let Ok(n) = stream.read(&mut buf) {
        if n == 0 {
            break;
        }
        answer.extend_from_slice(&buf[..n]);
        let head_done = answer.windows(4).any(|w| w == b"\r\n\r\n");
        if head_done && (answer.ends_with(b"}") || answer.starts_with(b"HTTP/1.1 101")) {
            break;
        }
    }
    String::from_utf8_lossy(&answer).into_owned()
}

#[test]
fn websocket_upgrades_are_refused_without_a_token_or_version() {
    let scratch = Scratch::new("upgrade");
    let gateway = start_gateway(&scratch);
    let api = Api::new(&gateway.url(), gateway.admin_token());
    let upgrade = |version: &str, token: Option<&str>| {
        let mut request = ureq::http::Request::builder()
            .uri(format!("{}/hubs/node?id=x", gateway.url()))
            .header("connection", "Upgrade")
            .header("upgrade", "websocket")
            .header("sec-websocket-version", version)
            .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==");
        if let Some(token) = token {
            request = request.header("authorization", format!("Bearer {token}"));
        }
        let response = api
            .agent
            .run(request.body(()).expect("a request"))
            .expect("an answer");
        response.status().as_u16()
    };
    assert_eq!(upgrade("13", None), 401);
    // A valid token in `?access_token=` (browsers cannot set headers) switches protocols.
    let client = OperatorClient::new(&gateway.url(), gateway.admin_token());
    let token = pair_quickly(&gateway.url(), &client, "q1", &[]);
    let answer = raw_exchange(
        &gateway.url(),
        &format!(
            "GET /hubs/node?access_token={token} HTTP/1.1\r\nhost: x\r\nconnection: Upgrade\r\n\
             upgrade: websocket\r\nsec-websocket-version: 13\r\n\
             sec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
        ),
    );
    assert!(answer.starts_with("HTTP/1.1 101"), "{answer}");
    assert!(answer.contains("s3pPLMBiTxaQ9kYGzzhZRbK+xOo="), "{answer}");
    assert_eq!(upgrade("13", Some("n1.not-a-real-token")), 401);
    assert_eq!(upgrade("8", None), 426);
}

#[test]
fn the_admin_token_file_is_made_once_with_mode_0600() {
    let scratch = Scratch::new("token");
    let first = start_gateway(&scratch);
    let token = first.admin_token().to_string();
    first.shutdown();
    let path = nodelink::gateway::token_path(&scratch.db());
    assert_eq!(
        std::fs::read_to_string(&path).expect("the file").trim(),
        token
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path)
            .expect("metadata")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let second = start_gateway(&scratch);
    assert_eq!(
        second.admin_token(),
        token,
        "the same token after a restart"
    );
    second.shutdown();
    let mut config =
        nodelink::gateway::ServerConfig::new("127.0.0.1:0".parse().expect("addr"), scratch.db());
    config.admin_token = Some("given-token".into());
    let third = nodelink::gateway::start(config).expect("starts");
    assert_eq!(third.admin_token(), "given-token");
    let api = Api::new(&third.url(), "given-token");
    assert_eq!(api.call("GET", "/api/admin/nodes", None, None).0, 200);
    assert_eq!(
        api.call("GET", "/api/admin/nodes", Some(&token), None).0,
        401
    );
}

#[test]
fn waiting_for_a_hanging_command_ends_at_its_timeout_and_cancel_ends_another() {
    let scratch = Scratch::new("wait");
    let gateway = start_gateway(&scratch);
    let client = OperatorClient::new(&gateway.url(), gateway.admin_token());
    let token = pair_quickly(&gateway.url(), &client, "n1", &[]);
    let mut node = TestNode::new(paired_config(&gateway.url(), token), 4);
    assert!(node.run_until(Duration::from_secs(3), |n| n.state() == NodeState::Ready));

    let (url, admin) = (gateway.url(), gateway.admin_token().to_string());
    let waiting = std::thread::spawn(move || {
        OperatorClient::new(&url, &admin).send(
            "n1",
            "hang",
            json!({}),
            Duration::from_millis(300),
            true,
        )
    });
    assert!(node.run_until(Duration::from_secs(3), |_| waiting.is_finished()));
    let outcome = waiting.join().expect("joined").expect("an outcome");
    assert_eq!(outcome["ok"], false, "{outcome}");
    assert_eq!(outcome["result"]["error"]["code"], "timeout", "{outcome}");

    let id = client
        .send("n1", "hang", json!({}), Duration::from_secs(30), false)
        .expect("sent")["commandId"]
        .as_str()
        .expect("an id")
        .to_string();
    assert!(node.run_until(Duration::from_secs(2), |n| n.executed.len() == 2));
    assert_eq!(client.command(&id).expect("status")["status"], "dispatched");
    client.cancel(&id).expect("cancelled");
    assert!(node.run_until(Duration::from_secs(3), |_| client
        .command(&id)
        .is_ok_and(|c| c["status"] == "finished")));
    let ended = client.command(&id).expect("status");
    assert_eq!(ended["result"]["error"]["code"], "cancelled", "{ended}");
    let error = client.cancel(&id).expect_err("already finished");
    assert_eq!(error.status(), Some(409), "{error}");
}
