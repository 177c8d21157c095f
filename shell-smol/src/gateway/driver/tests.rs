//! The driver answers after persisting, and stops rather than answer what it could not store.

use super::*;
use nodelink_core::gateway::GatewayConfig;
use nodelink_core::node::http::Method;

fn driver(
    name: &str,
) -> (
    Driver,
    Sender<ToDriver>,
    Receiver<String>,
    std::path::PathBuf,
) {
    let dir = std::env::temp_dir().join(format!("nodelink-driver-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("a scratch dir");
    let store = Store::open(&dir.join("d.db")).expect("a store");
    let gateway = Gateway::new(
        GatewayConfig::new("http://127.0.0.1:1"),
        Instant::now(),
        Duration::from_secs(1_764_000_000),
        [7; 32],
    )
    .expect("a gateway");
    let (tx, rx) = smol::channel::bounded(16);
    let mut driver = Driver::new(gateway, store, rx, Arc::default(), Duration::from_secs(30));
    let (failed_tx, failed_rx) = smol::channel::bounded(1);
    driver.on_failure(failed_tx);
    (driver, tx, failed_rx, dir)
}

/// A pairing request: the machine persists the new pairing before it answers.
fn pair(tx: &Sender<ToDriver>) -> Receiver<HttpReply> {
    let (reply, reply_rx) = smol::channel::bounded(1);
    let body = br#"{"nodeId":"n1","pairingSecret":"a-secret-0123456789"}"#.to_vec();
    tx.send_blocking(ToDriver::Http {
        conn: ConnId(1),
        source: Source("127.0.0.1".into()),
        request: HttpRequest {
            method: Method::Post,
            target: "/api/nodes/me/pair".into(),
            authorization: None,
            body,
        },
        reply,
    })
    .expect("sent");
    reply_rx
}

#[test]
fn a_reply_comes_after_its_records_are_stored() {
    let (driver, tx, _failed, dir) = driver("ok");
    let thread = std::thread::spawn(move || driver.run());
    let reply = pair(&tx).recv_blocking().expect("a reply");
    assert_eq!(reply.status, 200);
    drop(tx);
    thread
        .join()
        .expect("the driver ends when every sender is gone");
    let stored = Store::open(&dir.join("d.db"))
        .expect("reopens")
        .load()
        .expect("loads");
    assert!(
        stored.iter().any(|r| matches!(r, StoreRecord::Pairing(_))),
        "{stored:?}"
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_store_that_cannot_be_written_stops_the_driver_without_answering() {
    let (driver, tx, failed, dir) = driver("fail");
    driver
        .store
        .conn_for_tests()
        .pragma_update(None, "query_only", true)
        .expect("read-only");
    let thread = std::thread::spawn(move || driver.run());
    let reply = pair(&tx).recv_blocking();
    assert!(reply.is_err(), "answered without storing: {reply:?}");
    let why = failed.recv_blocking().expect("told why");
    assert!(why.contains("store"), "{why}");
    thread.join().expect("the driver stopped");
    assert!(tx
        .send_blocking(ToDriver::Closed {
            conn: ConnId(9),
            code: None
        })
        .is_err());
    let _ = std::fs::remove_dir_all(dir);
}

/// Approving the pending pairing `code`: the answer arrives only after the approval is stored.
fn approve(driver: &mut Driver, code: String) -> Receiver<bool> {
    let (tx, rx) = smol::channel::bounded(1);
    let call = answering(
        move |ctx| ctx.gateway.approve_pairing(ctx.now, &code, &[]).is_ok(),
        tx,
    );
    driver.handle(Instant::now(), ToDriver::Call(call));
    rx
}

#[test]
fn an_operator_answer_waits_for_the_store() {
    for store_works in [true, false] {
        let (mut driver, tx, _failed, dir) =
            driver(if store_works { "call-ok" } else { "call-fail" });
        let reply = pair(&tx);
        let message = driver.rx.try_recv().expect("queued");
        driver.handle(Instant::now(), message);
        driver.drain();
        let body = reply.try_recv().expect("a reply").body;
        let pending: serde_json::Value = serde_json::from_slice(&body).expect("JSON");
        let code = pending["pairingCode"].as_str().expect("a code").to_string();
        if !store_works {
            driver
                .store
                .conn_for_tests()
                .pragma_update(None, "query_only", true)
                .expect("read-only");
        }
        let answer = approve(&mut driver, code);
        assert!(
            answer.try_recv().is_err(),
            "answered before the drain stored anything"
        );
        driver.drain();
        if store_works {
            assert_eq!(answer.try_recv(), Ok(true));
        } else {
            assert!(answer.try_recv().is_err(), "answered what was not stored");
            assert!(driver.failure.is_some());
        }
        let _ = std::fs::remove_dir_all(dir);
    }
}
