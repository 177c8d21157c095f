//! Idle node cost: resident memory (VmRSS) and CPU time per heartbeat of a node that is
//! connected to a gateway and does nothing else (issue 7's target: <= 10 MB RSS).
//!
//! The node runs in a child process (this binary again, with `NODELINK_BENCH_CHILD` set) so that
//! the gateway, which runs here, is not counted. Linux only (/proc).
//!
//! `cargo bench -p nodelink --bench node_idle` (release); `cargo test -p nodelink --bench
//! node_idle` runs it briefly in the dev profile. `NODELINK_BENCH_SECS` (default 10) and
//! `NODELINK_BENCH_HEARTBEAT_MS` (default 100) set the measurement.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nodelink::gateway::{start, OperatorClient, ServerConfig};
use nodelink::node::{spawn_node, NodeExit, RuntimeConfig};
use nodelink_core::node::executor::ExecutorSet;
use nodelink_core::node::{Dialect, Identity, NodeConfig, NodeEvent, Transport};
use nodelink_core::wire::rest::NodeToken;
use nodelink_core::wire::signalr::HubProtocol;

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn config(url: &str, identity: Identity, heartbeat: Duration) -> NodeConfig {
    let dialect = Dialect::Hub {
        protocol: HubProtocol::Json,
        transport: Transport::WebSocket,
    };
    let mut node = NodeConfig::new(url, dialect, identity);
    node.heartbeat_interval = heartbeat;
    node
}

/// The child: a paired node that connects and idles until killed.
fn child(url: &str, token: &str, heartbeat: Duration) {
    let token = NodeToken::parse(token).expect("a token from the parent");
    let node = spawn_node(
        RuntimeConfig::new(config(url, Identity::Paired(token), heartbeat)),
        ExecutorSet::new(),
    )
    .expect("the node starts");
    while let Ok(event) = node.events().recv_blocking() {
        if matches!(event, NodeEvent::Connected { .. }) {
            println!("connected");
        }
    }
}

/// (VmRSS in KiB, utime + stime in clock ticks) of `pid`.
fn sample(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let rss = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0);
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces) start after the last ')'.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    // utime and stime are fields 14 and 15 of stat: 11 and 12 after the name and state.
    (rss, ticks(11) + ticks(12))
}

fn main() {
    let heartbeat = Duration::from_millis(env_u64("NODELINK_BENCH_HEARTBEAT_MS", 100));
    if let (Ok(url), Ok(token)) = (
        std::env::var("NODELINK_BENCH_CHILD"),
        std::env::var("NODELINK_BENCH_TOKEN"),
    ) {
        return child(&url, &token, heartbeat);
    }
    // `cargo test --benches` passes no `--bench`: measure briefly.
    let quick = !std::env::args().any(|a| a == "--bench");
    let secs = env_u64("NODELINK_BENCH_SECS", if quick { 2 } else { 10 });

    let dir = std::env::temp_dir().join(format!("nodelink-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("a temp dir");
    let mut server = ServerConfig::new(
        "127.0.0.1:0".parse().expect("an address"),
        dir.join("gw.db"),
    );
    server.admin_token = Some("bench".into());
    server.threads = Some(1);
    let gateway = start(server).expect("the gateway starts");
    let url = gateway.url();
    let operator = OperatorClient::new(&url, gateway.admin_token());

    // Pair once, here, to get a token for the child.
    let mut pairing = RuntimeConfig::new(config(
        &url,
        Identity::Unpaired {
            node_id: Some("bench-node".into()),
        },
        heartbeat,
    ));
    pairing.exit_when_paired = true;
    let pair = spawn_node(pairing, ExecutorSet::new()).expect("the pairing node starts");
    let mut token = None;
    while let Ok(event) = pair.events().recv_blocking() {
        match event {
            NodeEvent::PairingCode(code) => operator.approve(&code, &[]).expect("approved"),
            NodeEvent::Paired { token: t, .. } => token = Some(t),
            _ => {}
        }
    }
    assert!(matches!(pair.wait(), NodeExit::Paired { .. }));
    let token = token.expect("a token");

    let mut child = Command::new(std::env::current_exe().expect("this binary"))
        .env("NODELINK_BENCH_CHILD", &url)
        .env("NODELINK_BENCH_TOKEN", token.to_string())
        .env(
            "NODELINK_BENCH_HEARTBEAT_MS",
            heartbeat.as_millis().to_string(),
        )
        .stdout(Stdio::piped())
        .spawn()
        .expect("the child starts");
    let mut stdout = std::io::BufReader::new(child.stdout.take().expect("stdout"));
    let mut line = String::new();
    std::io::BufRead::read_line(&mut stdout, &mut line).expect("the child reports");
    assert_eq!(line.trim(), "connected");
    // Let start-up allocations settle before measuring.
    std::thread::sleep(Duration::from_secs(1));
    let pid = child.id();
    let (rss_start, cpu_start) = sample(pid);
    let started = Instant::now();
    std::thread::sleep(Duration::from_secs(secs));
    let (rss_end, cpu_end) = sample(pid);
    let elapsed = started.elapsed();
    let _ = child.kill();
    let _ = child.wait();
    gateway.shutdown();
    let _ = std::fs::remove_dir_all(&dir);

    // The tick rate is 100 Hz on the Linux systems we run on (reading it needs libc's sysconf).
    let tick = Duration::from_millis(10);
    let heartbeats = (elapsed.as_secs_f64() / heartbeat.as_secs_f64())
        .floor()
        .max(1.0);
    let cpu = tick * u32::try_from(cpu_end.saturating_sub(cpu_start)).unwrap_or(u32::MAX);
    let per_heartbeat_us = cpu.as_secs_f64() * 1e6 / heartbeats;
    println!(
        "node_idle: RSS {:.1} MB (start {:.1} MB); CPU {:.0} us per heartbeat ({} heartbeats of {:?} in {:.1} s, {:?} CPU, tick resolution 10 ms){}",
        rss_end as f64 / 1024.0,
        rss_start as f64 / 1024.0,
        per_heartbeat_us,
        heartbeats,
        heartbeat,
        elapsed.as_secs_f64(),
        cpu,
        if quick { " [quick, dev profile]" } else { "" }
    );
    assert!(rss_end > 0, "VmRSS was read from /proc");
}
