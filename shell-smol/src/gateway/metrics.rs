//! Counters for `GET /metrics` (Prometheus text format 0.0.4). Atomics, updated by connection
//! tasks (bytes) and by the driver (everything the machine reports).

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

/// Upper bounds of the dispatch latency buckets, in seconds.
const LATENCY_BUCKETS: [f64; 14] = [
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

#[derive(Default)]
pub(crate) struct Metrics {
    pub nodes_online: AtomicI64,
    pub hub_connections: AtomicI64,
    pub bytes_in: AtomicU64,
    pub bytes_out: AtomicU64,
    pub slow_consumers: AtomicU64,
    pub http_requests: AtomicU64,
    /// Live WebSocket tasks (shutdown waits for them to write their Close).
    pub sockets: AtomicI64,
    commands: Mutex<BTreeMap<String, u64>>,
    latency: Mutex<Histogram>,
}

#[derive(Default)]
struct Histogram {
    counts: [u64; LATENCY_BUCKETS.len()],
    count: u64,
    sum: f64,
}

impl Metrics {
    pub fn open_sockets(&self) -> i64 {
        self.sockets.load(Ordering::Relaxed)
    }

    pub fn add_in(&self, n: usize) {
        self.bytes_in.fetch_add(n as u64, Ordering::Relaxed);
    }

    pub fn add_out(&self, n: usize) {
        self.bytes_out.fetch_add(n as u64, Ordering::Relaxed);
    }

    /// A command ended with `outcome` (`ok`, or its error code).
    pub fn command_finished(&self, outcome: &str) {
        if let Ok(mut map) = self.commands.lock() {
            *map.entry(outcome.to_string()).or_default() += 1;
        }
    }

    /// From an operator's dispatch to the command's end.
    pub fn observe_latency(&self, latency: Duration) {
        let secs = latency.as_secs_f64();
        if let Ok(mut h) = self.latency.lock() {
            for (i, bound) in LATENCY_BUCKETS.iter().enumerate() {
                if secs <= *bound {
                    h.counts[i] += 1;
                }
            }
            h.count += 1;
            h.sum += secs;
        }
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let gauge = |out: &mut String, name: &str, help: &str, value: i64| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}"
            );
        };
        let counter = |out: &mut String, name: &str, help: &str, value: u64| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}"
            );
        };
        gauge(
            &mut out,
            "nodelink_nodes_online",
            "Nodes the gateway considers online.",
            self.nodes_online.load(Ordering::Relaxed).max(0),
        );
        gauge(
            &mut out,
            "nodelink_hub_connections",
            "Open hub (WebSocket) connections.",
            self.hub_connections.load(Ordering::Relaxed).max(0),
        );
        counter(
            &mut out,
            "nodelink_bytes_received_total",
            "Bytes received: WebSocket message payloads and HTTP request bodies.",
            self.bytes_in.load(Ordering::Relaxed),
        );
        counter(
            &mut out,
            "nodelink_bytes_sent_total",
            "Bytes sent: WebSocket message payloads and HTTP response bodies.",
            self.bytes_out.load(Ordering::Relaxed),
        );
        counter(
            &mut out,
            "nodelink_slow_consumers_total",
            "Connections closed because their outbound queue was full.",
            self.slow_consumers.load(Ordering::Relaxed),
        );
        counter(
            &mut out,
            "nodelink_http_requests_total",
            "HTTP requests served (upgrades included).",
            self.http_requests.load(Ordering::Relaxed),
        );
        let _ = writeln!(
            out,
            "# HELP nodelink_commands_total Commands ended, by outcome (ok or the error code).\n\
             # TYPE nodelink_commands_total counter"
        );
        if let Ok(map) = self.commands.lock() {
            for (outcome, n) in map.iter() {
                let _ = writeln!(out, "nodelink_commands_total{{outcome=\"{outcome}\"}} {n}");
            }
        }
        let name = "nodelink_dispatch_latency_seconds";
        let _ = writeln!(
            out,
            "# HELP {name} From an operator's dispatch to the command's end.\n# TYPE {name} histogram"
        );
        if let Ok(h) = self.latency.lock() {
            for (bound, n) in LATENCY_BUCKETS.iter().zip(h.counts) {
                let _ = writeln!(out, "{name}_bucket{{le=\"{bound}\"}} {n}");
            }
            let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {}", h.count);
            let _ = writeln!(out, "{name}_sum {}", h.sum);
            let _ = writeln!(out, "{name}_count {}", h.count);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_and_a_cumulative_histogram() {
        let m = Metrics::default();
        m.nodes_online.fetch_add(2, Ordering::Relaxed);
        m.add_in(10);
        m.add_out(7);
        m.command_finished("ok");
        m.command_finished("ok");
        m.command_finished("timeout");
        m.observe_latency(Duration::from_millis(3));
        m.observe_latency(Duration::from_secs(2));
        let text = m.render();
        assert!(text.contains("nodelink_nodes_online 2\n"), "{text}");
        assert!(text.contains("nodelink_bytes_received_total 10\n"));
        assert!(text.contains("nodelink_bytes_sent_total 7\n"));
        assert!(text.contains("nodelink_commands_total{outcome=\"ok\"} 2\n"));
        assert!(text.contains("nodelink_commands_total{outcome=\"timeout\"} 1\n"));
        assert!(text.contains("nodelink_dispatch_latency_seconds_bucket{le=\"0.001\"} 0\n"));
        assert!(text.contains("nodelink_dispatch_latency_seconds_bucket{le=\"0.005\"} 1\n"));
        assert!(text.contains("nodelink_dispatch_latency_seconds_bucket{le=\"2.5\"} 2\n"));
        assert!(text.contains("nodelink_dispatch_latency_seconds_bucket{le=\"+Inf\"} 2\n"));
        assert!(text.contains("nodelink_dispatch_latency_seconds_count 2\n"));
    }
}
