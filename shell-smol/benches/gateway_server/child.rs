//! The gateway under test runs in a child process (this binary again, in "gateway" mode) so that
//! its RSS and CPU time are read alone from /proc while the simulated nodes run here.

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};

use nodelink::gateway::store::Store;
use nodelink::gateway::{start, ServerConfig};
use nodelink_core::gateway::auth::{hash_secret, NodeRecord, NodeState};
use nodelink_core::gateway::StoreRecord;

use super::procfs::{self, Sample};

/// Set in the child's environment: the store to serve.
const DB_ENV: &str = "NODELINK_BENCH_GATEWAY_DB";
/// Overrides `ServerConfig::outbound_bytes` in the child (bytes; inherited from the bench's environment).
const OUTBOUND_QUEUE_ENV: &str = "NODELINK_BENCH_OUTBOUND_QUEUE";
/// The operator API's token in the bench's gateways.
pub const ADMIN_TOKEN: &str = "bench-admin-token";
/// Every simulated node's token secret.
pub const SECRET: &str = "bench-secret-0123456789abcdef";
/// The largest chunked result the bench's gateway reassembles (the default is 64 MiB; the
/// stream case sends 100 MiB).
const MAX_RESULT: usize = 256 * 1024 * 1024;

/// Runs the child when this process is one: serves until its stdin closes. Returns false in the
/// parent.
pub fn run_if_child() -> bool {
    let Ok(db) = std::env::var(DB_ENV) else {
        return false;
    };
    // Warnings (a store failure, slow consumers) reach the bench's stderr.
    let _ = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(tracing_subscriber::EnvFilter::new("warn"))
        .try_init();
    let mut config = ServerConfig::new(
        "127.0.0.1:0".parse().expect("a literal address"),
        PathBuf::from(db),
    );
    config.admin_token = Some(ADMIN_TOKEN.into());
    config.machine.dispatch.reassembly.max_total_bytes = MAX_RESULT;
    // For experiments only (docs/benchmarks.md): the per-connection queue of outbound messages.
    if let Some(queue) = std::env::var(OUTBOUND_QUEUE_ENV)
        .ok()
        .and_then(|v| v.parse().ok())
    {
        config.outbound_bytes = queue;
    }
    let gateway = match start(config) {
        Ok(gateway) => gateway,
        Err(e) => {
            eprintln!("gateway child: {e}");
            std::process::exit(1);
        }
    };
    println!("{}", gateway.url());
    // The parent holds our stdin: EOF (the parent is done, or died) ends the gateway.
    let _ = std::io::stdin().read_to_end(&mut Vec::new());
    gateway.shutdown();
    true
}

/// Approved nodes `ids` written straight into a fresh store: pairing thousands of nodes through
/// the REST flow (one poll per second per node) would take minutes.
pub fn seed(db: &Path, ids: &[String]) -> Result<(), String> {
    let mut store = Store::open(db).map_err(|e| e.to_string())?;
    let digest = hash_secret(SECRET);
    let records: Vec<StoreRecord> = ids
        .iter()
        .map(|id| {
            StoreRecord::Node(Box::new(NodeRecord {
                node_id: id.clone(),
                secret_sha256: digest,
                state: NodeState::Approved,
                scopes: vec![],
                name: None,
                platform: Some("linux".into()),
                paired_at_unix_ms: 1,
            }))
        })
        .collect();
    store.write(&records).map_err(|e| e.to_string())
}

/// A running gateway child; killed when dropped.
pub struct GatewayChild {
    child: Child,
    stdin: Option<ChildStdin>,
    pub url: String,
    pub addr: std::net::SocketAddr,
    dir: PathBuf,
}

impl GatewayChild {
    /// Seeds a store with `nodes` in a fresh directory and starts a gateway on it.
    pub fn start(name: &str, nodes: &[String]) -> Result<GatewayChild, String> {
        let dir =
            std::env::temp_dir().join(format!("nodelink-gwbench-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let db = dir.join("gateway.db");
        seed(&db, nodes)?;
        let exe = std::env::current_exe().map_err(|e| e.to_string())?;
        let mut child = Command::new(exe)
            .env(DB_ENV, &db)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .map_err(|e| format!("spawning the gateway child: {e}"))?;
        let stdin = child.stdin.take();
        let mut line = String::new();
        let read = child
            .stdout
            .take()
            .map(|out| BufReader::new(out).read_line(&mut line));
        let url = line.trim().to_string();
        let addr = url
            .strip_prefix("http://")
            .and_then(|a| a.parse().ok())
            .ok_or_else(|| format!("the gateway child did not start ({read:?}, said {url:?})"))?;
        Ok(GatewayChild {
            child,
            stdin,
            url,
            addr,
            dir,
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn sample(&self) -> Result<Sample, String> {
        procfs::sample(self.pid()).ok_or_else(|| "the gateway child is gone".to_string())
    }

    /// `GET /metrics`, one gauge's value.
    pub fn metric(&self, name: &str) -> Option<f64> {
        let text = ureq::get(&format!("{}/metrics", self.url))
            .call()
            .ok()?
            .body_mut()
            .read_to_string()
            .ok()?;
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
    }
}

impl Drop for GatewayChild {
    fn drop(&mut self) {
        // Closing stdin asks for a graceful stop; the kill makes sure of it.
        self.stdin.take();
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
