//! `pysignalr` (PyPI, pinned by tests/interop/requirements.txt), an independent SignalR client,
//! acting as a node against the real gateway server: heartbeat and a command round trip.

mod gateway_support;
mod interop_support;

use std::process::Command;
use std::time::Duration;

use interop_support::{installed, interop_dir, Client, Fixture};
use serde_json::json;

#[test]
fn pysignalr_heartbeats_and_answers_a_command() {
    if !installed(
        ".venv/bin/python",
        "python3 -m venv tests/interop/.venv && tests/interop/.venv/bin/pip install -r tests/interop/requirements.txt",
    ) {
        return;
    }
    let fixture = Fixture::start();
    let node_id = "pysignalr-1";
    let token = fixture.pair(node_id);
    let mut command = Command::new(interop_dir().join(".venv/bin/python"));
    command
        .arg("py-client.py")
        .env("NL_HUB_URL", fixture.hub_url())
        .env("NL_NODE_ID", node_id)
        .env("NL_TOKEN", &token)
        .env("NL_HEARTBEAT_MS", "300");
    let mut client = Client::spawn("pysignalr", command);

    let ready = client.expect("ready", Duration::from_secs(10), |_| true);
    assert_eq!(ready["protocolVersion"], "2026-04-01");
    let node = fixture.wait_node(node_id, "sent a heartbeat", |n| {
        n["online"] == true && n["lastHeartbeat"]["version"] == "pysignalr"
    });
    assert_eq!(node["lastHeartbeat"]["memoryMb"], 30, "{node}");

    let outcome = fixture.send(node_id, "echo", json!({"from": "python", "n": [1, 2, 3]}));
    assert_eq!(outcome["ok"], true, "{outcome}");
    assert_eq!(
        outcome["result"]["result"],
        json!({"from": "python", "n": [1, 2, 3]})
    );
    client.expect("acknowledged", Duration::from_secs(5), |e| {
        e["error"].is_null()
    });
}
