//! Start-up, the accept loop, and graceful shutdown.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures_rustls::TlsAcceptor;
use nodelink_core::gateway::{ConnId, Gateway};
use smol::channel::Sender;
use smol::net::TcpListener;
use smol::{Executor, Task};

use super::driver::{Driver, ToDriver};
use super::metrics::Metrics;
use super::store::Store;
use super::{token, ServerConfig, ServerError};

/// Messages waiting for the driver before senders wait (backpressure on busy connections).
const DRIVER_QUEUE: usize = 4096;
/// Framing allowance above the record limit, for WebSocket messages and REST bodies.
const FRAMING_ALLOWANCE: usize = 64 * 1024;
/// How long shutdown waits for sockets to write their Close.
const CLOSE_GRACE: Duration = Duration::from_secs(2);

/// What every connection task shares.
pub(crate) struct Shared {
    pub to_driver: Sender<ToDriver>,
    pub metrics: Arc<Metrics>,
    pub admin_token: String,
    pub tls: Option<TlsAcceptor>,
    /// The largest WebSocket message accepted.
    pub max_message: usize,
    /// The largest HTTP request body accepted (413 beyond).
    pub max_body: usize,
    pub handshake_timeout: Duration,
    pub outbound_bytes: usize,
    /// The LLM user APIs' bearer token (the admin token is accepted too).
    pub llm_api_token: Option<String>,
    /// Where upgraded sockets get their own task (weak: the executor owns the tasks).
    pub executor: std::sync::Weak<Executor<'static>>,
    next_conn: AtomicU64,
}

impl Shared {
    pub fn next_conn(&self) -> ConnId {
        ConnId(self.next_conn.fetch_add(1, Ordering::Relaxed))
    }
}

/// A gateway running on its own threads. Dropping it shuts it down too.
pub struct RunningGateway {
    local_addr: SocketAddr,
    url: String,
    admin_token: String,
    shared: Arc<Shared>,
    accept: Option<Task<()>>,
    executor: Arc<Executor<'static>>,
    stop_executor: Option<Sender<()>>,
    threads: Vec<JoinHandle<()>>,
    driver: Option<JoinHandle<()>>,
    /// Why the driver stopped on its own (a store failure).
    failed: smol::channel::Receiver<String>,
}

pub(crate) fn start(config: ServerConfig) -> Result<RunningGateway, ServerError> {
    let store = Store::open(&config.db_path)?;
    let records = store.load()?;
    let admin_token = token::resolve(config.admin_token.clone(), &config.db_path)?;
    let tls = match &config.tls {
        Some(files) => Some(super::tls::acceptor(files)?),
        None => None,
    };
    let std_listener =
        std::net::TcpListener::bind(config.listen).map_err(|source| ServerError::Listen {
            addr: config.listen,
            source,
        })?;
    let local_addr = std_listener.local_addr()?;
    let listener = TcpListener::try_from(std_listener)?;
    let scheme = if tls.is_some() { "https" } else { "http" };
    let url = config
        .public_url
        .clone()
        .unwrap_or_else(|| format!("{scheme}://{local_addr}"));
    let url = url.trim_end_matches('/').to_string();

    let mut machine = config.machine.clone();
    machine.public_url = url.clone();
    machine.pairing.gateway_url = url.clone();
    let max_message = machine.hub.max_record_len.saturating_add(FRAMING_ALLOWANCE);
    let now = Instant::now();
    let unix_now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let seed = token::seed().map_err(|e| ServerError::Tls(format!("OS randomness: {e}")))?;
    let default_timeout = machine.dispatch.default_timeout;
    let mut gateway = Gateway::new(machine, now, unix_now, seed)?;
    let restored = records.len();
    gateway.restore(now, records)?;
    tracing::info!(records = restored, "store restored");

    let metrics = Arc::new(Metrics::default());
    let (to_driver, driver_rx) = smol::channel::bounded(DRIVER_QUEUE);
    let mut driver = Driver::new(
        gateway,
        store,
        driver_rx,
        Arc::clone(&metrics),
        default_timeout,
    );
    let (failed_tx, failed) = smol::channel::bounded(1);
    driver.on_failure(failed_tx);
    driver.set_llm(super::llm::LlmPart::new(
        config.llm.machine.clone(),
        now,
        unix_now,
    )?);
    let driver = std::thread::Builder::new()
        .name("nodelink-driver".into())
        .spawn(move || driver.run())?;

    let executor = Arc::new(Executor::new());
    let shared = Arc::new(Shared {
        executor: Arc::downgrade(&executor),
        to_driver,
        metrics,
        admin_token: admin_token.clone(),
        tls,
        max_message,
        max_body: max_message,
        handshake_timeout: config.handshake_timeout,
        outbound_bytes: config.outbound_bytes.max(1),
        llm_api_token: config.llm.api_token.clone(),
        next_conn: AtomicU64::new(1),
    });
    let (stop_executor, stop_rx) = smol::channel::bounded::<()>(1);
    let threads = (0..thread_count(config.threads))
        .map(|i| {
            let executor = Arc::clone(&executor);
            let stop_rx = stop_rx.clone();
            std::thread::Builder::new()
                .name(format!("nodelink-io-{i}"))
                .spawn(move || {
                    let _ = smol::block_on(executor.run(stop_rx.recv()));
                })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let accept = executor.spawn(accept_loop(
        listener,
        Arc::clone(&shared),
        Arc::downgrade(&executor),
    ));
    tracing::info!(%url, "gateway listening");
    Ok(RunningGateway {
        local_addr,
        url,
        admin_token,
        shared,
        accept: Some(accept),
        executor,
        stop_executor: Some(stop_executor),
        threads,
        driver: Some(driver),
        failed,
    })
}

/// Executor threads: the configured number, else `SMOL_THREADS`, else the cores.
fn thread_count(configured: Option<usize>) -> usize {
    configured
        .or_else(|| {
            std::env::var("SMOL_THREADS")
                .ok()
                .and_then(|v| v.parse().ok())
        })
        .or_else(|| std::thread::available_parallelism().ok().map(|n| n.get()))
        .unwrap_or(1)
        .max(1)
}

async fn accept_loop(
    listener: TcpListener,
    shared: Arc<Shared>,
    executor: std::sync::Weak<Executor<'static>>,
) {
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                let Some(executor) = executor.upgrade() else {
                    return;
                };
                let task = super::http::serve_connection(Arc::clone(&shared), stream, peer);
                executor.spawn(task).detach();
            }
            Err(e) => {
                // Out of file descriptors, most likely: wait rather than spin.
                tracing::warn!("accept: {e}");
                smol::Timer::after(Duration::from_millis(50)).await;
            }
        }
    }
}

impl RunningGateway {
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The base URL nodes use, e.g. `http://127.0.0.1:7300`.
    pub fn url(&self) -> String {
        self.url.clone()
    }

    pub fn admin_token(&self) -> &str {
        &self.admin_token
    }

    /// Resolves when the gateway stopped on its own, with why (the store could not be written:
    /// it then answers nothing more). A graceful [`shutdown`](Self::shutdown) never resolves it.
    pub async fn failed(&self) -> String {
        match self.failed.recv().await {
            Ok(why) => why,
            Err(_) => std::future::pending().await,
        }
    }

    /// Graceful shutdown: stop accepting, close every hub connection with allowReconnect, flush
    /// the store, stop the threads. Returns when the store is flushed.
    pub fn shutdown(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        let Some(driver) = self.driver.take() else {
            return;
        };
        if let Some(accept) = self.accept.take() {
            smol::block_on(accept.cancel());
        }
        let (done_tx, done_rx) = smol::channel::bounded(1);
        let message = ToDriver::Shutdown {
            reason: "the gateway is shutting down".into(),
            done: done_tx,
        };
        if smol::block_on(self.shared.to_driver.send(message)).is_ok() {
            let _ = smol::block_on(done_rx.recv());
        }
        let _ = driver.join();
        // Let the sockets write their Close before their tasks are dropped.
        let deadline = Instant::now() + CLOSE_GRACE;
        while self.shared.metrics.open_sockets() > 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        self.stop_executor.take();
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
        let _ = &self.executor;
    }
}

impl Drop for RunningGateway {
    fn drop(&mut self) {
        self.stop();
    }
}
