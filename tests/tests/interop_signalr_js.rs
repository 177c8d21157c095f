//! The official `@microsoft/signalr` client (npm, pinned by tests/interop/package-lock.json) acting
//! as a node against the real gateway server on loopback (issue 6): JSON and MessagePack, with
//! and without negotiation, the token in the header and in the query; heartbeats, commands,
//! a chunked result over 1 MiB, scopes, revocation, and stateful reconnect across cut sockets.

mod gateway_support;
mod interop_support;

use std::collections::BTreeMap;
use std::process::Command;
use std::time::{Duration, Instant};

use interop_support::{installed, Client, Fixture, Proxy};
use serde_json::{json, Value};

const SECONDS: Duration = Duration::from_secs(10);

fn js_client_installed() -> bool {
    installed(
        "node_modules/@microsoft/signalr",
        "run `npm ci` in tests/interop",
    )
}

struct Variant {
    protocol: &'static str,
    skip_negotiation: bool,
    token_in: &'static str,
    stateful: bool,
}

fn spawn_client(hub_url: &str, node_id: &str, token: &str, variant: &Variant) -> Client {
    let mut command = Command::new("node");
    command
        .arg("node-client.mjs")
        .env("NL_HUB_URL", hub_url)
        .env("NL_NODE_ID", node_id)
        .env("NL_TOKEN", token)
        .env("NL_PROTOCOL", variant.protocol)
        .env(
            "NL_SKIP_NEGOTIATION",
            if variant.skip_negotiation { "1" } else { "0" },
        )
        .env("NL_TOKEN_IN", variant.token_in)
        .env("NL_STATEFUL", if variant.stateful { "1" } else { "0" })
        .env("NL_HEARTBEAT_MS", "500");
    Client::spawn(&format!("signalr-js {node_id}"), command)
}

/// The whole life of a node over one variant: ready, online, commands (one chunked over 1 MiB),
/// scopes, revocation without reconnect.
fn node_lifecycle(variant: Variant) {
    if !js_client_installed() {
        return;
    }
    let fixture = Fixture::start();
    let node_id = format!(
        "js-{}-{}-{}",
        variant.protocol,
        if variant.skip_negotiation {
            "skip"
        } else {
            "neg"
        },
        variant.token_in
    );
    let token = fixture.pair(&node_id);
    let mut client = spawn_client(&fixture.hub_url(), &node_id, &token, &variant);

    let ready = client.expect("ready", SECONDS, |_| true);
    assert_eq!(ready["protocolVersion"], "2026-04-01");
    let node = fixture.wait_node(&node_id, "online", |n| n["online"] == true);
    assert!(node["lastHeartbeat"].is_object() || node["online"] == true);

    // A command and its result.
    let outcome = fixture.send(&node_id, "echo", json!({"text": "héllo", "n": 7}));
    assert_eq!(outcome["ok"], true, "{outcome}");
    assert_eq!(
        outcome["result"]["result"],
        json!({"text": "héllo", "n": 7})
    );

    // A result over 1 MiB, sent in two parts and reassembled by the gateway.
    let outcome = fixture.send(&node_id, "big", json!({"size": 1_500_000}));
    assert_eq!(outcome["ok"], true, "{}", truncated(&outcome));
    let data = outcome["result"]["result"]["data"].as_str().expect("data");
    assert_eq!(data.len(), 1_500_000);
    assert!(data.bytes().all(|b| b == b'x'));

    // An unknown command gets the node's own refusal.
    let outcome = fixture.send(&node_id, "nope", json!({}));
    assert_eq!(outcome["ok"], false, "{outcome}");

    // RefreshScopes -> ScopeChanged -> the gateway records what the node enforces.
    let scopes = vec!["system.info".to_owned(), "gpu.read".to_owned()];
    fixture
        .operator
        .set_scopes(&node_id, &scopes)
        .expect("set scopes");
    // The gateway keeps a grant minimal and sorted.
    let seen = client.expect("scopes", SECONDS, |_| true);
    assert_eq!(seen["scopes"], json!(["gpu.read", "system.info"]));
    fixture.wait_node(&node_id, "reported its scopes", |n| {
        n["scopes"] == json!(["gpu.read", "system.info"])
    });

    // RevokeAccess -> the client is closed and does not reconnect.
    fixture
        .operator
        .revoke(&node_id, "interop test")
        .expect("revoke");
    let revoked = client.expect("revoked", SECONDS, |_| true);
    assert_eq!(revoked["reason"], "interop test");
    client.expect("closed", SECONDS, |_| true);
    assert!(client.wait_exit(SECONDS).success());
    let node = fixture.wait_node(&node_id, "revoked", |n| n["revoked"] == true);
    assert_eq!(node["connected"], false, "{node}");
}

fn truncated(value: &Value) -> String {
    let text = value.to_string();
    text.chars().take(300).collect()
}

#[test]
fn json_with_negotiation_and_the_token_in_the_header() {
    node_lifecycle(Variant {
        protocol: "json",
        skip_negotiation: false,
        token_in: "header",
        stateful: false,
    });
}

#[test]
fn messagepack_without_negotiation_and_the_token_in_the_query() {
    node_lifecycle(Variant {
        protocol: "msgpack",
        skip_negotiation: true,
        token_in: "query",
        stateful: false,
    });
}

#[test]
fn json_without_negotiation_and_the_token_in_the_query() {
    node_lifecycle(Variant {
        protocol: "json",
        skip_negotiation: true,
        token_in: "query",
        stateful: false,
    });
}

#[test]
fn messagepack_with_negotiation_and_the_token_in_the_header() {
    node_lifecycle(Variant {
        protocol: "msgpack",
        skip_negotiation: false,
        token_in: "header",
        stateful: false,
    });
}

/// withStatefulReconnect(): sockets cut in the middle of traffic; every command runs once and
/// ends once with its own result.
#[test]
fn stateful_reconnect_loses_and_duplicates_nothing_across_cut_sockets() {
    if !js_client_installed() {
        return;
    }
    let fixture = Fixture::start();
    let node_id = "js-stateful";
    let token = fixture.pair(node_id);
    let proxy = Proxy::start(fixture.gateway.local_addr());
    let hub_url = format!("http://{}/hubs/node", proxy.addr);
    let variant = Variant {
        protocol: "json",
        skip_negotiation: false,
        token_in: "header",
        stateful: true,
    };
    let mut client = spawn_client(&hub_url, node_id, &token, &variant);
    client.expect("ready", SECONDS, |_| true);
    fixture.wait_node(node_id, "online", |n| n["online"] == true);

    let mut ids = Vec::new();
    for round in 0..3 {
        proxy.wait_connected(SECONDS);
        for i in 0..10 {
            let n = round * 10 + i;
            let started = fixture
                .operator
                .send(node_id, "echo", json!({ "n": n }), SECONDS, false)
                .expect("dispatch");
            let id = started["commandId"].as_str().expect("commandId").to_owned();
            ids.push((id, n));
        }
        assert!(
            proxy.cut_all() >= 1,
            "the client was connected through the proxy"
        );
    }

    let deadline = Instant::now() + Duration::from_secs(15);
    for (id, n) in &ids {
        let outcome = loop {
            let status = fixture.operator.command(id).expect("command status");
            if status["status"] == "finished" {
                break status;
            }
            assert!(
                Instant::now() < deadline,
                "command {n} never finished: {status}"
            );
            std::thread::sleep(Duration::from_millis(50));
        };
        assert_eq!(outcome["ok"], true, "command {n}: {outcome}");
        assert_eq!(outcome["result"]["result"], json!({ "n": n }));
    }

    let mut executions = BTreeMap::<String, usize>::new();
    for event in client.drain(Duration::from_millis(300)) {
        if event["event"] == "execute" {
            *executions
                .entry(event["commandId"].as_str().unwrap_or_default().to_owned())
                .or_default() += 1;
        }
        assert_ne!(
            event["event"], "closed",
            "the connection must survive: {event}"
        );
    }
    for (id, n) in &ids {
        assert_eq!(
            executions.get(id),
            Some(&1),
            "command {n} ran {:?} times",
            executions.get(id)
        );
    }
}
