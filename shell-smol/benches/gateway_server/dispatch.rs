//! Case 2: the dispatch round trip, operator API -> gateway -> node -> result -> caller, with
//! many connected nodes: latency with one caller, then commands/s and latency at saturation
//! (many concurrent callers, each waiting for its command's outcome).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use nodelink::gateway::OperatorClient;
use serde_json::json;

use super::child::{GatewayChild, ADMIN_TOKEN};
use super::fleet::Fleet;
use super::node::ECHO;

pub struct DispatchParams {
    pub nodes: usize,
    /// Commands sent one after another by one caller.
    pub sequential: usize,
    /// Concurrent callers of each saturation phase (two levels show whether it saturated).
    pub callers: Vec<usize>,
    /// How long the callers keep sending.
    pub saturation: Duration,
    pub client_threads: usize,
}

/// Latencies of one phase, sorted.
pub struct Phase {
    pub latencies: Vec<Duration>,
    pub elapsed: Duration,
}

impl Phase {
    pub fn percentile(&self, p: f64) -> Duration {
        if self.latencies.is_empty() {
            return Duration::ZERO;
        }
        let rank = ((self.latencies.len() as f64 * p / 100.0).ceil() as usize).max(1);
        self.latencies[rank.min(self.latencies.len()) - 1]
    }

    pub fn per_second(&self) -> f64 {
        self.latencies.len() as f64 / self.elapsed.as_secs_f64()
    }
}

pub struct DispatchFigures {
    pub nodes: usize,
    pub sequential: Phase,
    /// (callers, their phase) for each level of `DispatchParams::callers`.
    pub saturated: Vec<(usize, Phase)>,
}

/// One waiting dispatch; `Err` unless the node's own successful result came back.
fn round_trip(client: &OperatorClient, node: &str, n: u64) -> Result<Duration, String> {
    let started = Instant::now();
    let answer = client
        .send(node, ECHO, json!({ "n": n }), Duration::from_secs(30), true)
        .map_err(|e| format!("dispatch to {node}: {e}"))?;
    let took = started.elapsed();
    let echoed = answer
        .pointer("/result/result/echo/n")
        .and_then(|v| v.as_u64());
    if answer.get("ok").and_then(|v| v.as_bool()) != Some(true) || echoed != Some(n) {
        return Err(format!("dispatch to {node}: unexpected outcome {answer}"));
    }
    Ok(took)
}

pub fn run(params: &DispatchParams) -> Result<DispatchFigures, String> {
    let ids: Vec<String> = (0..params.nodes).map(|i| format!("disp-{i}")).collect();
    let gateway = GatewayChild::start("dispatch", &ids)?;
    let fleet = Fleet::start(
        gateway.addr,
        ids.clone(),
        Duration::from_secs(30),
        params.client_threads,
    );
    fleet.wait_connected(params.nodes, Duration::from_secs(120))?;
    let client = Arc::new(OperatorClient::new(&gateway.url, ADMIN_TOKEN));
    let ids = Arc::new(ids);

    // Warm-up: connections to the operator API, every node's first command.
    for (i, node) in ids.iter().enumerate().take(100) {
        round_trip(&client, node, i as u64)?;
    }
    let started = Instant::now();
    let mut latencies = Vec::with_capacity(params.sequential);
    for i in 0..params.sequential {
        latencies.push(round_trip(&client, &ids[i % ids.len()], i as u64)?);
    }
    latencies.sort();
    let sequential = Phase {
        latencies,
        elapsed: started.elapsed(),
    };

    let mut saturated = Vec::new();
    for &callers in &params.callers {
        let phase = saturate(&client, &ids, callers, params.saturation)?;
        saturated.push((callers, phase));
    }
    if fleet.stats.failed.load(Ordering::Relaxed) > 0 {
        return Err(format!("a node failed: {}", fleet.stats.first_error()));
    }
    Ok(DispatchFigures {
        nodes: params.nodes,
        sequential,
        saturated,
    })
}

/// `callers` threads, each dispatching and waiting, one command after another, for `how_long`.
fn saturate(
    client: &Arc<OperatorClient>,
    ids: &Arc<Vec<String>>,
    callers: usize,
    how_long: Duration,
) -> Result<Phase, String> {
    let stop = Arc::new(AtomicBool::new(false));
    let counter = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let threads: Vec<_> = (0..callers)
        .map(|_| {
            let (client, ids) = (Arc::clone(client), Arc::clone(ids));
            let (stop, counter) = (Arc::clone(&stop), Arc::clone(&counter));
            std::thread::spawn(move || {
                let mut latencies = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    let n = counter.fetch_add(1, Ordering::Relaxed);
                    let node = &ids[(n as usize) % ids.len()];
                    latencies.push(round_trip(&client, node, n)?);
                }
                Ok::<_, String>(latencies)
            })
        })
        .collect();
    std::thread::sleep(how_long);
    stop.store(true, Ordering::Relaxed);
    let mut latencies = Vec::new();
    for thread in threads {
        latencies.extend(thread.join().map_err(|_| "a caller panicked")??);
    }
    let elapsed = started.elapsed();
    latencies.sort();
    Ok(Phase { latencies, elapsed })
}
