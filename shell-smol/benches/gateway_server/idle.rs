//! Case 1: N connected, authenticated nodes heartbeating; the gateway child's RSS per connection
//! and its CPU use at the heartbeat rate.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::child::GatewayChild;
use super::fleet::Fleet;

pub struct IdleParams {
    pub nodes: usize,
    pub heartbeat: Duration,
    /// How long CPU is measured, after everything settled.
    pub window: Duration,
    pub client_threads: usize,
}

pub struct IdleFigures {
    pub nodes: usize,
    pub connect_time: Duration,
    pub rss_empty_kib: u64,
    pub rss_connected_kib: u64,
    pub rss_end_kib: u64,
    /// Gateway CPU over the window.
    pub cpu: Duration,
    pub window: Duration,
    pub heartbeats: u64,
}

impl IdleFigures {
    /// (RSS with N heartbeating - RSS with 0) / N, bytes.
    pub fn bytes_per_connection(&self) -> f64 {
        self.rss_end_kib.saturating_sub(self.rss_empty_kib) as f64 * 1024.0 / self.nodes as f64
    }

    /// The same, right after the connections were made (before a heartbeat cycle).
    pub fn bytes_per_connection_at_connect(&self) -> f64 {
        self.rss_connected_kib.saturating_sub(self.rss_empty_kib) as f64 * 1024.0
            / self.nodes as f64
    }

    /// Gateway CPU as a percentage of one core.
    pub fn cpu_percent(&self) -> f64 {
        self.cpu.as_secs_f64() * 100.0 / self.window.as_secs_f64()
    }

    pub fn cpu_per_heartbeat_us(&self) -> f64 {
        self.cpu.as_secs_f64() * 1e6 / self.heartbeats.max(1) as f64
    }
}

pub fn run(params: &IdleParams) -> Result<IdleFigures, String> {
    let ids: Vec<String> = (0..params.nodes).map(|i| format!("idle-{i}")).collect();
    let gateway = GatewayChild::start("idle", &ids)?;
    // Let start-up (store restore of N node records) settle before the empty figure.
    std::thread::sleep(Duration::from_millis(500));
    let empty = gateway.sample()?;

    let fleet = Fleet::start(gateway.addr, ids, params.heartbeat, params.client_threads);
    let connect_time = fleet.wait_connected(params.nodes, Duration::from_secs(300))?;
    let connections = gateway.metric("nodelink_hub_connections");
    if connections != Some(params.nodes as f64) {
        return Err(format!(
            "the gateway counts {connections:?} hub connections, expected {}",
            params.nodes
        ));
    }
    std::thread::sleep(Duration::from_secs(1));
    let connected = gateway.sample()?;

    let beats_before = fleet.stats.heartbeats.load(Ordering::Relaxed);
    let started = Instant::now();
    let before = gateway.sample()?;
    std::thread::sleep(params.window);
    let after = gateway.sample()?;
    let window = started.elapsed();
    let heartbeats = fleet.stats.heartbeats.load(Ordering::Relaxed) - beats_before;
    if fleet.stats.failed.load(Ordering::Relaxed) > 0 {
        return Err(format!("a node failed: {}", fleet.stats.first_error()));
    }
    let online = gateway.metric("nodelink_nodes_online");
    if online != Some(params.nodes as f64) {
        return Err(format!(
            "the gateway counts {online:?} nodes online, expected {}",
            params.nodes
        ));
    }
    drop(fleet);
    Ok(IdleFigures {
        nodes: params.nodes,
        connect_time,
        rss_empty_kib: empty.rss_kib,
        rss_connected_kib: connected.rss_kib,
        rss_end_kib: after.rss_kib,
        cpu: after.cpu.saturating_sub(before.cpu),
        window,
        heartbeats,
    })
}
