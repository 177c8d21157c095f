//! LLM relay: concurrent chat streams through the gateway (issue 8's benchmark). Raw LLM nodes
//! (tungstenite, in this process) answer every task with `LLM_RELAY_TOKENS` result frames whose
//! text is the send time; users read `/api/chat` on raw sockets. Two phases:
//! - **paced**: each stream sends a token every 10 ms; per-token latency from the node's
//!   `send` to the user's read of that line (the gateway's decode, routing, HTTP framing, plus
//!   two loopback hops): p50 / p99 / max.
//! - **flood**: the nodes send as fast as the gateway takes frames: tokens/s relayed end to end.
//!
//! `cargo bench -p nodelink --bench llm_relay` (release); `cargo test -p nodelink --bench
//! llm_relay` runs it briefly in the dev profile. `LLM_RELAY_STREAMS` (default 100),
//! `LLM_RELAY_TOKENS` (default 200), `LLM_RELAY_NODES` (default 4).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use async_tungstenite::tungstenite::{self, Message};
use nodelink::gateway::{start, ServerConfig};

const TOKEN: &str = "bench-node";
const API: &str = "bench-user";

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The shared time origin: tokens carry nanoseconds since it.
fn origin() -> Instant {
    static ORIGIN: OnceLock<Instant> = OnceLock::new();
    *ORIGIN.get_or_init(Instant::now)
}

fn nanos() -> u64 {
    u64::try_from(origin().elapsed().as_nanos()).unwrap_or(u64::MAX)
}

/// A raw node: takes tasks, sends `tokens` frames per task (`pace` apart per task, or flat out),
/// then the finished frame. Runs until `stop`.
fn node(
    addr: SocketAddr,
    name: String,
    slots: usize,
    tokens: usize,
    pace: Option<Duration>,
    stop: Arc<AtomicBool>,
) {
    let stream = TcpStream::connect(addr).expect("connect");
    stream.set_nodelay(true).expect("nodelay");
    let url =
        format!("ws://{addr}/ws?token={TOKEN}&model=bench&max_concurrency={slots}&name={name}");
    let (mut ws, _) = tungstenite::client::client(url, stream).expect("the WebSocket opens");
    // Non-blocking: a socket read timeout is rounded up to the kernel's tick (10 ms), which
    // would pace the node instead of the gateway.
    ws.get_ref().set_nonblocking(true).expect("non-blocking");
    let would_block = |e: &tungstenite::Error| matches!(e, tungstenite::Error::Io(e) if e.kind() == std::io::ErrorKind::WouldBlock);
    // (task id, tokens sent, next send)
    let mut active: Vec<(u32, usize, Instant)> = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        let mut busy = false;
        match ws.read() {
            Ok(Message::Text(text)) => {
                busy = true;
                let value: serde_json::Value =
                    serde_json::from_str(text.as_str()).unwrap_or_default();
                if let Some(id) = value["id"].as_u64().filter(|_| value.get("stop").is_none()) {
                    active.push((u32::try_from(id).unwrap_or(0), 0, Instant::now()));
                }
            }
            Ok(_) => busy = true,
            Err(e) if would_block(&e) => {}
            Err(_) => return,
        }
        let now = Instant::now();
        for task in active.iter_mut() {
            if task.2 > now {
                continue;
            }
            busy = true;
            let mut frame = task.0.to_be_bytes().to_vec();
            if task.1 < tokens {
                frame.extend_from_slice(format!("{} ", nanos()).as_bytes());
            }
            task.1 += 1;
            if let Some(pace) = pace {
                task.2 += pace;
            }
            // WouldBlock: the frame is queued and goes out with a later flush.
            match ws.write(Message::Binary(frame.into())) {
                Ok(()) => {}
                Err(e) if would_block(&e) => {}
                Err(_) => return,
            }
        }
        match ws.flush() {
            Ok(()) => {}
            Err(e) if would_block(&e) => {}
            Err(_) => return,
        }
        active.retain(|t| t.1 <= tokens);
        if !busy {
            std::thread::sleep(Duration::from_micros(50));
        }
    }
}

/// One user: `/api/chat`, every line's latency pushed to `samples`; returns the tokens read.
fn user(addr: SocketAddr, samples: &Mutex<Vec<u64>>) -> usize {
    let stream = TcpStream::connect(addr).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    let body =
        r#"{"model":"bench","messages":[{"role":"user","content":"go"}],"max_new_tokens":1000}"#;
    let request = format!(
        "POST /api/chat HTTP/1.1\r\nhost: b\r\nauthorization: Bearer {API}\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    (&stream).write_all(request.as_bytes()).expect("send");
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    loop {
        line.clear();
        if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
            break;
        }
    }
    let mut local = Vec::new();
    let mut pending = String::new();
    loop {
        let mut size = String::new();
        if reader.read_line(&mut size).unwrap_or(0) == 0 {
            break;
        }
        let Ok(size) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if size == 0 {
            break;
        }
        let mut data = vec![0; size + 2];
        if reader.read_exact(&mut data).is_err() {
            break;
        }
        let now = nanos();
        pending.push_str(&String::from_utf8_lossy(&data[..size]));
        while let Some(at) = pending.find('\n') {
            let text: String = pending.drain(..=at).collect();
            let value: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
            if let Some(o) = value["o"].as_str() {
                for sent in o.split_whitespace().filter_map(|t| t.parse::<u64>().ok()) {
                    local.push(now.saturating_sub(sent));
                }
            }
        }
    }
    let n = local.len();
    samples
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .extend(local);
    n
}

/// Runs `streams` users against `nodes` raw nodes; (tokens read, seconds, latencies in ns).
fn phase(
    addr: SocketAddr,
    streams: usize,
    nodes: usize,
    tokens: usize,
    pace: Option<Duration>,
    tag: &str,
) -> (usize, f64, Vec<u64>) {
    let stop = Arc::new(AtomicBool::new(false));
    let slots = streams.div_ceil(nodes);
    let node_threads: Vec<_> = (0..nodes)
        .map(|i| {
            let stop = Arc::clone(&stop);
            let name = format!("{tag}{i}");
            std::thread::spawn(move || node(addr, name, slots, tokens, pace, stop))
        })
        .collect();
    std::thread::sleep(Duration::from_millis(200));
    let samples = Arc::new(Mutex::new(Vec::new()));
    let started = Instant::now();
    let users: Vec<_> = (0..streams)
        .map(|_| {
            let samples = Arc::clone(&samples);
            std::thread::spawn(move || user(addr, &samples))
        })
        .collect();
    let read: usize = users.into_iter().map(|u| u.join().unwrap_or(0)).sum();
    let seconds = started.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    for n in node_threads {
        let _ = n.join();
    }
    let mut samples = std::mem::take(&mut *samples.lock().unwrap_or_else(|p| p.into_inner()));
    samples.sort_unstable();
    (read, seconds, samples)
}

fn pct(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let at = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[at] as f64 / 1000.0
}

fn main() {
    let quick = std::env::args().any(|a| a == "--test") || cfg!(debug_assertions);
    let streams = env_usize("LLM_RELAY_STREAMS", if quick { 20 } else { 100 });
    let tokens = env_usize("LLM_RELAY_TOKENS", if quick { 20 } else { 200 });
    let nodes = env_usize("LLM_RELAY_NODES", 4).max(1);
    let _ = origin();
    let scratch = std::env::temp_dir().join(format!("nodelink-llm-relay-{}", std::process::id()));
    let _ = std::fs::create_dir_all(&scratch);
    let mut config = ServerConfig::new("127.0.0.1:0".parse().expect("addr"), scratch.join("gw.db"));
    config.llm.machine.shared_token = Some(TOKEN.into());
    config.llm.api_token = Some(API.into());
    config.outbound_bytes = 64 * 1024 * 1024;
    let gateway = start(config).expect("the gateway starts");
    let addr = gateway.local_addr();

    let (read, seconds, lat) = phase(
        addr,
        streams,
        nodes,
        tokens,
        Some(Duration::from_millis(10)),
        "p",
    );
    println!(
        "llm_relay paced: {streams} streams x {tokens} tokens every 10 ms via {nodes} nodes: {read} tokens in {seconds:.2} s; gateway latency per token p50 {:.0} us, p99 {:.0} us, max {:.0} us",
        pct(&lat, 0.5),
        pct(&lat, 0.99),
        pct(&lat, 1.0)
    );
    assert_eq!(read, streams * tokens, "every token reached its user");
    let (read, seconds, lat) = phase(addr, streams, nodes, tokens, None, "f");
    println!(
        "llm_relay flood: {streams} streams x {tokens} tokens via {nodes} nodes: {read} tokens in {seconds:.2} s = {:.0} tokens/s; latency under flood p50 {:.0} us, p99 {:.0} us",
        read as f64 / seconds,
        pct(&lat, 0.5),
        pct(&lat, 0.99)
    );
    assert_eq!(read, streams * tokens, "every token reached its user");
    gateway.shutdown();
    let _ = std::fs::remove_dir_all(&scratch);
}
