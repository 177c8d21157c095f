//! The `nodelink gateway` binary as a child process, for the tests that kill or signal it.
#![allow(dead_code)] // each test file uses a subset

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_nodelink");

/// A free port on 127.0.0.1 (bound then released), so that a restart can reuse it.
pub fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a port");
    listener.local_addr().expect("an address").port()
}

pub struct GatewayProcess {
    pub child: Child,
    pub url: String,
    pub db: PathBuf,
}

impl GatewayProcess {
    /// Starts `nodelink gateway` on `port` with `db`, and waits for its "listening" line.
    pub fn start(db: &Path, port: u16, extra: &[&str]) -> GatewayProcess {
        let mut child = Command::new(BIN)
            .args(["gateway", "--listen", &format!("127.0.0.1:{port}"), "--db"])
            .arg(db)
            .args(extra)
            .env("RUST_LOG", "warn")
            .env_remove("NODELINK_ADMIN_TOKEN")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("the binary starts");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { return };
                let _ = tx.send(line);
            }
        });
        let line = rx
            .recv_timeout(Duration::from_secs(10))
            .expect("the gateway prints where it listens");
        let url = line
            .strip_prefix("nodelink gateway listening on ")
            .unwrap_or_else(|| panic!("unexpected first line: {line}"))
            .to_string();
        GatewayProcess {
            child,
            url,
            db: db.to_path_buf(),
        }
    }

    pub fn admin_token(&self) -> String {
        let path = nodelink::gateway::token_path(&self.db);
        std::fs::read_to_string(path)
            .expect("the token file")
            .trim()
            .to_string()
    }

    pub fn client(&self) -> nodelink::gateway::OperatorClient {
        nodelink::gateway::OperatorClient::new(&self.url, &self.admin_token())
    }

    /// SIGKILL: no shutdown, no flush.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Sends SIGTERM and waits (bounded) for the exit status.
    pub fn terminate(mut self) -> ExitStatus {
        let pid = self.child.id().to_string();
        let sent = Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("kill runs");
        assert!(sent.success());
        let end = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            assert!(
                Instant::now() < end,
                "the gateway did not exit after SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for GatewayProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
