//! Memory per hub connection (issue 6: at most 16 KiB, goal 8 KiB): N authenticated WebSocket
//! connections past the SignalR handshake, RSS measured before and after. Ignored by default (it
//! needs thousands of sockets and a quiet process); run it with
//! `N=3000 cargo test -p nodelink-tests --test gateway_memory -- --ignored --nocapture`.
mod gateway_support;

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use nodelink_core::gateway::auth::{hash_secret, NodeRecord, NodeState};
use nodelink_core::gateway::StoreRecord;

const SECRET: &str = "s3cr3t-abcdefghijklmnop";
const WARM_UP: usize = 100;

/// This process's resident set, in KiB (Linux).
fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("procfs");
    status
        .lines()
        .find(|l| l.starts_with("VmRSS"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .expect("VmRSS")
}

/// Upgrades with the token in the query, then sends the JSON hub handshake (a masked frame).
fn connect(addr: &str, node: usize) -> std::net::TcpStream {
    let mut socket = std::net::TcpStream::connect(addr).expect("connects");
    write!(
        socket,
        "GET /hubs/node?access_token=node-{node}.{SECRET} HTTP/1.1\r\nhost: x\r\n\
         connection: Upgrade\r\nupgrade: websocket\r\nsec-websocket-version: 13\r\n\
         sec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
    )
    .expect("written");
    let mut buf = [0u8; 256];
    let n = socket.read(&mut buf).expect("read");
    assert!(
        buf[..n].starts_with(b"HTTP/1.1 101"),
        "{}",
        String::from_utf8_lossy(&buf[..n])
    );
    let payload = b"{\"protocol\":\"json\",\"version\":1}\x1e";
    let mut frame = vec![0x81u8, 0x80 | payload.len() as u8, 0, 0, 0, 0];
    frame.extend_from_slice(payload);
    socket.write_all(&frame).expect("handshake");
    socket
}

#[test]
#[ignore = "a measurement: thousands of sockets, run on purpose"]
fn memory_per_hub_connection_is_under_16_kib() {
    let n: usize = std::env::var("N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3000);
    let scratch = gateway_support::Scratch::new("memory");
    {
        // Approved nodes straight into the store: pairing thousands would take minutes.
        let mut store = nodelink::gateway::store::Store::open(&scratch.db()).expect("a store");
        let records: Vec<StoreRecord> = (0..n + WARM_UP)
            .map(|i| {
                StoreRecord::Node(Box::new(NodeRecord {
                    node_id: format!("node-{i}"),
                    secret_sha256: hash_secret(SECRET),
                    state: NodeState::Approved,
                    scopes: vec![],
                    name: None,
                    platform: None,
                    paired_at_unix_ms: 1,
                }))
            })
            .collect();
        store.write(&records).expect("written");
    }
    let gateway = gateway_support::start_gateway(&scratch);
    let addr = gateway.local_addr().to_string();
    let mut sockets: Vec<_> = (0..WARM_UP).map(|i| connect(&addr, i)).collect();
    std::thread::sleep(Duration::from_millis(500));
    let before = rss_kib();
    let started = Instant::now();
    sockets.extend((WARM_UP..WARM_UP + n).map(|i| connect(&addr, i)));
    let took = started.elapsed();
    std::thread::sleep(Duration::from_secs(1));
    let after = rss_kib();
    let per_connection = (after.saturating_sub(before)) * 1024 / n as u64;
    let metrics = ureq::get(&format!("{}/metrics", gateway.url()))
        .call()
        .expect("metrics")
        .body_mut()
        .read_to_string()
        .expect("text");
    eprintln!(
        "{n} connections in {took:?}: RSS {before} -> {after} KiB, {per_connection} bytes each"
    );
    assert!(
        metrics.contains(&format!("nodelink_hub_connections {}\n", n + WARM_UP)),
        "{metrics}"
    );
    assert!(
        per_connection <= 16 * 1024,
        "{per_connection} bytes per connection"
    );
}
