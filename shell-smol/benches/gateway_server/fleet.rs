//! Many simulated nodes on one executor: each connects, then heartbeats every `heartbeat` (with
//! a keep-alive Ping half-way, as the node runtime does) and answers every ExecuteCommand at once.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use futures_lite::future;
use smol::channel::{Receiver, Sender};
use smol::{Executor, Timer};

use super::node::{Heard, HubNode};

/// Connections being set up at once (the gateway's accept loop and the driver are shared).
const CONNECTING_AT_ONCE: usize = 64;

#[derive(Default)]
pub struct Stats {
    pub connected: AtomicU64,
    pub failed: AtomicU64,
    pub heartbeats: AtomicU64,
    pub answered: AtomicU64,
    pub first_error: Mutex<Option<String>>,
}

impl Stats {
    fn fail(&self, error: String) {
        self.failed.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut first) = self.first_error.lock() {
            first.get_or_insert(error);
        }
    }

    pub fn first_error(&self) -> String {
        self.first_error
            .lock()
            .ok()
            .and_then(|e| e.clone())
            .unwrap_or_default()
    }
}

/// The running fleet; stops (and closes every socket) when dropped.
pub struct Fleet {
    pub stats: Arc<Stats>,
    stop: Option<Sender<()>>,
    threads: Vec<JoinHandle<()>>,
}

impl Fleet {
    /// Starts nodes `ids` against `addr` on `threads` executor threads. Heartbeat phases are
    /// spread evenly over the interval so the gateway sees a steady rate.
    pub fn start(addr: SocketAddr, ids: Vec<String>, heartbeat: Duration, threads: usize) -> Fleet {
        let stats = Arc::new(Stats::default());
        let executor = Arc::new(Executor::new());
        let (stop_tx, stop_rx) = smol::channel::bounded::<()>(1);
        let (permits_tx, permits_rx) = smol::channel::bounded(CONNECTING_AT_ONCE);
        let count = ids.len().max(1) as u32;
        for (i, id) in ids.into_iter().enumerate() {
            let phase = heartbeat * i as u32 / count;
            let run = run_node(
                addr,
                id,
                heartbeat,
                phase,
                Arc::clone(&stats),
                stop_rx.clone(),
                (permits_tx.clone(), permits_rx.clone()),
            );
            executor.spawn(run).detach();
        }
        let threads = (0..threads.max(1))
            .map(|_| {
                let executor = Arc::clone(&executor);
                let stop_rx = stop_rx.clone();
                std::thread::spawn(move || {
                    let _ = smol::block_on(executor.run(stop_rx.recv()));
                })
            })
            .collect();
        Fleet {
            stats,
            stop: Some(stop_tx),
            threads,
        }
    }

    /// Waits until every node connected or failed; `Err` on a failure or after `limit`.
    pub fn wait_connected(&self, total: usize, limit: Duration) -> Result<Duration, String> {
        let started = Instant::now();
        loop {
            let connected = self.stats.connected.load(Ordering::Relaxed) as usize;
            let failed = self.stats.failed.load(Ordering::Relaxed);
            if failed > 0 {
                return Err(format!(
                    "{failed} nodes failed ({connected} connected): {}",
                    self.stats.first_error()
                ));
            }
            if connected >= total {
                return Ok(started.elapsed());
            }
            if started.elapsed() > limit {
                return Err(format!(
                    "only {connected} of {total} nodes connected in {limit:?}"
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        self.stop.take();
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

enum Event {
    Heard(Result<Heard, String>),
    Tick,
    Stop,
}

async fn run_node(
    addr: SocketAddr,
    id: String,
    heartbeat: Duration,
    phase: Duration,
    stats: Arc<Stats>,
    stop: Receiver<()>,
    (permit, permits): (Sender<()>, Receiver<()>),
) {
    // A bounded channel as a semaphore: a slot taken while connecting.
    if permit.send(()).await.is_err() {
        return;
    }
    let connected = HubNode::connect(addr, &id).await;
    let _ = permits.recv().await;
    let mut node = match connected {
        Ok(node) => node,
        Err(e) => return stats.fail(format!("{id}: {e}")),
    };
    stats.connected.fetch_add(1, Ordering::Relaxed);
    let born = Instant::now();
    let half = heartbeat / 2;
    // Ticks alternate: a Ping at half the interval, a Heartbeat at the full interval.
    let mut next = Instant::now() + phase.max(Duration::from_millis(1));
    let mut heartbeat_next = false;
    loop {
        let event = future::or(
            async { Event::Heard(node.next().await) },
            future::or(
                async {
                    Timer::at(next).await;
                    Event::Tick
                },
                async {
                    let _ = stop.recv().await;
                    Event::Stop
                },
            ),
        )
        .await;
        let sent = match event {
            Event::Stop => return,
            Event::Heard(Ok(Heard::Execute(command))) => {
                let sent = node.answer(&command).await;
                stats.answered.fetch_add(1, Ordering::Relaxed);
                sent
            }
            Event::Heard(Ok(Heard::Completion(_, Some(error)))) => Err(error),
            Event::Heard(Ok(_)) => Ok(()),
            Event::Heard(Err(e)) => Err(e),
            Event::Tick => {
                next += half;
                heartbeat_next = !heartbeat_next;
                if heartbeat_next {
                    stats.heartbeats.fetch_add(1, Ordering::Relaxed);
                    node.heartbeat(born.elapsed().as_secs()).await
                } else {
                    node.ping().await
                }
            }
        };
        if let Err(e) = sent {
            return stats.fail(format!("{id}: {e}"));
        }
    }
}
