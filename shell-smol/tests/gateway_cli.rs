//! The operator CLI against the gateway binary: nodes list/approve/reject/revoke/scopes, send
//! (exit statuses), and SIGTERM's graceful shutdown (exit 0, nodes told to come back).
mod gateway_process;
#[path = "../../tests/tests/gateway_support/mod.rs"]
mod gateway_support;

use std::process::{Command, Output};
use std::time::{Duration, Instant};

use gateway_process::{free_port, GatewayProcess, BIN};
use gateway_support::{paired_config, Scratch, TestNode};
use nodelink_core::node::{NodeEvent, NodeState};
use serde_json::{json, Value};

/// Runs `nodelink <args>` against `gateway` while `node` (if any) keeps stepping.
fn cli(gateway: &GatewayProcess, node: Option<&mut TestNode>, args: &[&str]) -> Output {
    let mut child = Command::new(BIN)
        .args(args)
        .args(["--gateway", &gateway.url, "--db"])
        .arg(&gateway.db)
        .env_remove("NODELINK_ADMIN_TOKEN")
        .env_remove("NODELINK_GATEWAY")
        .env_remove("NODELINK_CA_CERT")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("the CLI runs");
    let end = Instant::now() + Duration::from_secs(10);
    let mut node = node;
    while child.try_wait().expect("try_wait").is_none() {
        assert!(Instant::now() < end, "nodelink {args:?} did not finish");
        match node.as_deref_mut() {
            Some(node) => node.step(),
            None => std::thread::sleep(Duration::from_millis(5)),
        }
    }
    child.wait_with_output().expect("output")
}

fn text(output: &Output) -> String {
    format!(
        "status {:?}\nstdout: {}\nstderr: {}",
        output.status.code(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

#[test]
fn operator_commands_and_a_graceful_sigterm() {
    let scratch = Scratch::new("cli");
    let gateway = GatewayProcess::start(&scratch.db(), free_port(), &[]);
    let pair_body =
        |id: &str| json!({"nodeId": id, "pairingSecret": format!("{id}-secret-0123456789")});
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let pair = |id: &str| -> Value {
        let text = agent
            .post(&format!("{}/api/nodes/me/pair", gateway.url))
            .header("content-type", "application/json")
            .send(pair_body(id).to_string())
            .expect("pair")
            .body_mut()
            .read_to_string()
            .expect("text");
        serde_json::from_str(&text).expect("JSON")
    };
    let code = pair("n1")["pairingCode"]
        .as_str()
        .expect("a code")
        .to_string();
    let reject_code = pair("n2")["pairingCode"]
        .as_str()
        .expect("a code")
        .to_string();

    let listed = cli(&gateway, None, &["nodes", "list"]);
    assert!(listed.status.success(), "{}", text(&listed));
    let out = String::from_utf8_lossy(&listed.stdout);
    assert!(
        out.contains("no nodes") && out.contains(&code) && out.contains("waiting"),
        "{out}"
    );

    let approved = cli(
        &gateway,
        None,
        &["nodes", "approve", &code, "--scopes", "echo,system.*"],
    );
    assert!(approved.status.success(), "{}", text(&approved));
    let rejected = cli(&gateway, None, &["nodes", "reject", &reject_code]);
    assert!(rejected.status.success(), "{}", text(&rejected));
    let again = cli(&gateway, None, &["nodes", "reject", &reject_code]);
    assert_eq!(again.status.code(), Some(1), "{}", text(&again));
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("404"),
        "{}",
        text(&again)
    );

    // The node collects its token (after the 1 s repeat limit) and connects.
    let end = Instant::now() + Duration::from_secs(3);
    let token = loop {
        let answer = pair("n1");
        if answer["status"] == "approved" {
            break answer["token"]
                .as_str()
                .expect("a token")
                .parse()
                .expect("valid");
        }
        assert!(Instant::now() < end, "no token: {answer}");
        std::thread::sleep(Duration::from_millis(100));
    };
    let mut node = TestNode::new(paired_config(&gateway.url, token), 5);
    assert!(node.run_until(Duration::from_secs(3), |n| n.state() == NodeState::Ready));

    let listed = cli(&gateway, Some(&mut node), &["nodes", "list", "--json"]);
    let list: Value = serde_json::from_slice(&listed.stdout).expect("JSON");
    assert_eq!(list["nodes"][0]["nodeId"], "n1", "{list}");
    assert_eq!(list["nodes"][0]["scopes"], json!(["echo", "system.*"]));

    let sent = cli(
        &gateway,
        Some(&mut node),
        &[
            "send",
            "n1",
            "echo",
            "--params",
            r#"{"a":1}"#,
            "--timeout",
            "5s",
            "--json",
        ],
    );
    assert!(sent.status.success(), "{}", text(&sent));
    let outcome: Value = serde_json::from_slice(&sent.stdout).expect("JSON");
    assert_eq!(outcome["result"]["result"]["echo"]["a"], 1, "{outcome}");
    let plain = cli(&gateway, Some(&mut node), &["send", "n1", "echo"]);
    assert!(
        String::from_utf8_lossy(&plain.stdout).contains("\"echo\""),
        "{}",
        text(&plain)
    );
    // A command the node does not have fails: exit 1.
    let failed = cli(&gateway, Some(&mut node), &["send", "n1", "system.nope"]);
    assert_eq!(failed.status.code(), Some(1), "{}", text(&failed));
    // An unknown node cannot be sent to: exit 2.
    let unknown = cli(&gateway, Some(&mut node), &["send", "ghost", "echo"]);
    assert_eq!(unknown.status.code(), Some(2), "{}", text(&unknown));
    let bad = cli(&gateway, None, &["send", "n1", "echo", "--params", "[1]"]);
    assert_eq!(bad.status.code(), Some(1), "{}", text(&bad));

    let scoped = cli(
        &gateway,
        Some(&mut node),
        &["nodes", "scopes", "n1", "echo"],
    );
    assert!(scoped.status.success(), "{}", text(&scoped));
    assert!(
        node.run_until(Duration::from_secs(2), |n| n.events.iter().any(
            |e| matches!(e, NodeEvent::ScopesChanged(s) if s == &["echo".to_string()])
        ))
    );

    // SIGTERM: exit 0, the node is told to reconnect later (a Close with allowReconnect).
    let status = gateway.terminate();
    assert!(status.success(), "{status:?}");
    assert!(node.run_until(Duration::from_secs(2), |n| n
        .events
        .iter()
        .any(|e| matches!(e, NodeEvent::Disconnected { .. }))));
    assert_ne!(node.state(), NodeState::Revoked);
}

#[test]
fn revoke_from_the_cli_ends_the_node_for_good() {
    let scratch = Scratch::new("cli-revoke");
    let gateway = GatewayProcess::start(&scratch.db(), free_port(), &[]);
    let token = gateway_support::pair_quickly(&gateway.url, &gateway.client(), "n1", &[]);
    let mut node = TestNode::new(paired_config(&gateway.url, token), 6);
    assert!(node.run_until(Duration::from_secs(3), |n| n.state() == NodeState::Ready));
    let revoked = cli(
        &gateway,
        Some(&mut node),
        &["nodes", "revoke", "n1", "--reason", "stolen"],
    );
    assert!(revoked.status.success(), "{}", text(&revoked));
    // The state changes while a frame is read; its event is drained at the next step.
    let told = node.run_until(Duration::from_secs(2), |n| {
        n.events
            .iter()
            .any(|e| matches!(e, NodeEvent::TokenRevoked { reason } if reason == "stolen"))
    });
    assert!(told, "{:?}", node.events);
    assert_eq!(node.state(), NodeState::Revoked);
    let list = cli(&gateway, None, &["nodes", "list"]);
    assert!(
        String::from_utf8_lossy(&list.stdout).contains("revoked"),
        "{}",
        text(&list)
    );
}

/// An https:// gateway with a private CA: the operator commands trust it with `--ca-cert`, and
/// without it they refuse its certificate with a clear message.
#[test]
fn operator_commands_trust_a_private_ca_with_ca_cert() {
    let data = concat!(env!("CARGO_MANIFEST_DIR"), "/../shell-blocking/tests/data");
    let scratch = Scratch::new("cli-tls");
    let gateway = GatewayProcess::start(
        &scratch.db(),
        free_port(),
        &[
            "--tls-cert",
            &format!("{data}/server.pem"),
            "--tls-key",
            &format!("{data}/server.key"),
        ],
    );
    assert!(gateway.url.starts_with("https://"), "{}", gateway.url);

    let trusted = cli(
        &gateway,
        None,
        &["nodes", "list", "--ca-cert", &format!("{data}/ca.pem")],
    );
    assert_eq!(trusted.status.code(), Some(0), "{}", text(&trusted));

    let untrusted = cli(&gateway, None, &["nodes", "list"]);
    assert_ne!(untrusted.status.code(), Some(0), "{}", text(&untrusted));
    assert!(
        String::from_utf8_lossy(&untrusted.stderr).contains("certificate"),
        "{}",
        text(&untrusted)
    );
    assert_eq!(gateway.terminate().code(), Some(0));
}
