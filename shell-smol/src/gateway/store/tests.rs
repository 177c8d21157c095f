//! The store keeps what restore needs, compacts as the dispatcher's record docs allow, and
//! refuses what it cannot read.

use super::*;
use serde_json::json;

fn scratch(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("nodelink-store-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("a scratch dir");
    dir.join("test.db")
}

fn record(value: serde_json::Value) -> StoreRecord {
    serde_json::from_value(value).expect("a valid record")
}

fn node(id: &str, status: &str) -> StoreRecord {
    let state = if status == "approved" {
        json!({"status": "approved"})
    } else {
        json!({"status": "revoked", "reason": "gone"})
    };
    record(json!({"kind": "node", "record": {
        "nodeId": id, "secretSha256": "ab".repeat(32), "state": state,
        "scopes": ["system.*"], "pairedAtUnixMs": 1
    }}))
}

fn pairing(id: &str, secret: &str) -> StoreRecord {
    record(json!({"kind": "pairing", "record": {"kind": "put",
        "nodeId": id, "secretSha256": secret.repeat(32), "code": "ABC-123",
        "requestedAtUnixMs": 1, "expiresAtUnixMs": 2, "stage": "waiting"
    }}))
}

fn dispatch(value: serde_json::Value) -> StoreRecord {
    record(json!({"kind": "dispatch", "record": value}))
}

fn created(id: &str) -> StoreRecord {
    dispatch(
        json!({"type": "created", "commandId": id, "node": "n1", "command": "echo",
        "timeoutMs": 1000, "createdAtMs": 5}),
    )
}

fn part(id: &str) -> StoreRecord {
    dispatch(json!({"type": "part", "commandId": id,
        "part": {"commandId": id, "ok": true, "partIndex": 0, "isLast": false}}))
}

fn finished(id: &str) -> StoreRecord {
    dispatch(json!({"type": "finished", "commandId": id,
        "result": {"commandId": id, "ok": true}, "finishedAtMs": 9, "synthesized": false}))
}

#[test]
fn records_survive_a_reopen_in_restore_order_and_compact() {
    let path = scratch("reopen");
    let records = vec![
        node("n1", "approved"),
        node("n2", "approved"),
        node("n2", "revoked"),
        pairing("p1", "01"),
        pairing("p2", "02"),
        record(json!({"kind": "pairing", "record": {"kind": "delete",
            "nodeId": "p2", "secretSha256": "02".repeat(32)}})),
        dispatch(json!({"type": "node", "node": "n1", "scopes": ["system.*"]})),
        dispatch(json!({"type": "node", "node": "n2", "scopes": []})),
        dispatch(json!({"type": "nodeRemoved", "node": "n2"})),
        created("c1"),
        created("c2"),
        part("c1"),
        dispatch(json!({"type": "approved", "commandId": "c2"})),
        finished("c1"),
        created("c3"),
        finished("c3"),
        dispatch(json!({"type": "forgotten", "commandId": "c3"})),
    ];
    {
        let mut store = Store::open(&path).expect("opens");
        // Two drains, as the driver would write them.
        store.write(&records[..5]).expect("written");
        store.write(&records[5..]).expect("written");
    }
    let store = Store::open(&path).expect("reopens");
    let loaded = store.load().expect("loads");
    let kinds: Vec<String> = loaded
        .iter()
        .map(|r| {
            let v = serde_json::to_value(r).expect("json");
            let inner = &v["record"];
            match v["kind"].as_str() {
                Some("node") => format!(
                    "node {} {}",
                    inner["nodeId"].as_str().unwrap_or("?"),
                    inner["state"]["status"].as_str().unwrap_or("?")
                ),
                Some("pairing") => format!("pairing {}", inner["nodeId"].as_str().unwrap_or("?")),
                _ => format!(
                    "{} {}",
                    inner["type"].as_str().unwrap_or("?"),
                    inner["commandId"]
                        .as_str()
                        .or(inner["node"].as_str())
                        .unwrap_or("?")
                ),
            }
        })
        .collect();
    assert_eq!(
        kinds,
        [
            "node n1 approved",
            "node n2 revoked",
            "pairing p1",
            "node n1",
            // c1: its part dropped once finished; c2 keeps its approval; c3 forgotten.
            "created c1",
            "created c2",
            "approved c2",
            "finished c1",
        ]
    );
    let _ = std::fs::remove_dir_all(path.parent().expect("a dir"));
}

#[test]
fn a_newer_schema_and_a_corrupt_row_are_refused() {
    let path = scratch("refuse");
    {
        let mut store = Store::open(&path).expect("opens");
        store.write(&[node("n1", "approved")]).expect("written");
        store
            .conn
            .execute(
                "INSERT INTO nodes (node_id, record) VALUES ('bad', '{not json')",
                [],
            )
            .expect("inserted");
    }
    let store = Store::open(&path).expect("reopens");
    assert!(matches!(store.load(), Err(StoreError::Corrupt(_))));
    store
        .conn
        .pragma_update(None, "user_version", SCHEMA_VERSION + 1)
        .expect("set");
    drop(store);
    assert!(matches!(
        Store::open(&path),
        Err(StoreError::NewerSchema { .. })
    ));
    let _ = std::fs::remove_dir_all(path.parent().expect("a dir"));
}
