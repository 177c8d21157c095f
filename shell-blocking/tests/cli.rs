//! The `nodelink-node` binary end to end against the real gateway on loopback: `pair` shows a
//! code and stores the token once approved; `run` connects, serves the built-in commands, and on
//! revoke deletes the token and exits 3 with a clear message. Plus `--help` and a bad flag.
//!
//! `NODELINK_NODE_BIN` runs the same tests against another build of the binary: CI runs them
//! again against the static musl build for minimal hosts (docs/blocking.md).

#![cfg(feature = "builtins")] // system.info comes from worker-cuda

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use nodelink::gateway::{OperatorClient, ServerConfig};
use serde_json::json;

/// The binary under test: `$NODELINK_NODE_BIN`, else the one cargo built for this test.
fn bin() -> String {
    std::env::var("NODELINK_NODE_BIN")
        .unwrap_or_else(|_| env!("CARGO_BIN_EXE_nodelink-node").to_string())
}

/// Whether an ELF executable is statically linked: it has no PT_INTERP program header (no
/// dynamic loader named).
fn is_static_executable(path: &str) -> bool {
    const PT_INTERP: u32 = 3;
    let elf = std::fs::read(path).expect("the binary is readable");
    let u16_at = |at: usize| u16::from_le_bytes([elf[at], elf[at + 1]]) as usize;
    let u32_at = |at: usize| u32::from_le_bytes(elf[at..at + 4].try_into().expect("4 bytes"));
    let u64_at = |at: usize| u64::from_le_bytes(elf[at..at + 8].try_into().expect("8 bytes"));
    assert_eq!(&elf[..5], b"\x7fELF\x02", "{path} is not a 64-bit ELF file");
    let (table, entry_size, entries) = (u64_at(0x20) as usize, u16_at(0x36), u16_at(0x38));
    (0..entries).all(|i| u32_at(table + i * entry_size) != PT_INTERP)
}
const LIMIT: Duration = Duration::from_secs(8);

/// Kills the child if the test fails before it ends.
struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Guard {
    /// Waits for the exit status, at most `LIMIT`.
    fn wait(&mut self) -> std::process::ExitStatus {
        let until = Instant::now() + LIMIT;
        loop {
            if let Some(status) = self.0.try_wait().expect("try_wait") {
                return status;
            }
            assert!(Instant::now() < until, "nodelink-node did not exit in time");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn stderr(&mut self) -> String {
        let mut text = String::new();
        if let Some(mut stderr) = self.0.stderr.take() {
            let _ = stderr.read_to_string(&mut text);
        }
        text
    }
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("nodelink-cli-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("a scratch dir");
    dir
}

fn node(args: &[&str], state: &Path) -> Guard {
    let child = Command::new(bin())
        .args(args)
        .arg("--state-dir")
        .arg(state)
        .env("NODELINK_LOG", "quiet")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("nodelink-node starts");
    Guard(child)
}

fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let until = Instant::now() + LIMIT;
    while !check() {
        assert!(Instant::now() < until, "{what} did not happen in time");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn pair_then_run_serves_builtins_and_a_revoke_ends_it() {
    let dir = scratch("e2e");
    let mut config = ServerConfig::new("127.0.0.1:0".parse().unwrap(), dir.join("gw.db"));
    config.threads = Some(2);
    let gateway = nodelink::gateway::start(config).expect("the gateway starts");
    let client = OperatorClient::new(&gateway.url(), gateway.admin_token());
    let state = dir.join("state");

    // pair: the code on stdout, approved by the operator, the token stored.
    let mut pair = node(
        &["pair", "--gateway", &gateway.url(), "--node-id", "cli1"],
        &state,
    );
    let stdout = pair.0.stdout.take().expect("stdout");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let line = rx.recv_timeout(LIMIT).expect("a line on stdout");
    let code = line
        .strip_prefix("pairing code: ")
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("not a pairing code line: {line}"))
        .to_string();
    client
        .approve(&code, &["system.execute".to_string()])
        .expect("approved");
    let status = pair.wait();
    assert!(
        status.success(),
        "pair failed: {status:?} {}",
        pair.stderr()
    );
    assert!(state.join("token.json").exists());
    let again = Command::new(bin())
        .args(["pair", "--gateway", &gateway.url(), "--state-dir"])
        .arg(&state)
        .output()
        .expect("pair again runs");
    assert_eq!(again.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&again.stderr).contains("--force"));

    // run: online, the built-in system.info answers; system.execute is granted by the gateway
    // but not offered: the operator did not pass `--allow system.execute`.
    let mut run = node(&["run", "--transport", "ws"], &state);
    eventually("the node online", || {
        client.node("cli1").is_ok_and(|v| v["online"] == true)
    });
    let info = client
        .send(
            "cli1",
            "system.info",
            json!({}),
            Duration::from_secs(5),
            true,
        )
        .expect("system.info");
    assert_eq!(info["ok"], true, "{info}");
    assert!(info["result"]["result"]["hostname"].is_string(), "{info}");
    // gpu.info answers on every build; a static build says at once why it has no GPU (it
    // cannot load the CUDA libraries) instead of probing.
    let gpu = client
        .send("cli1", "gpu.info", json!({}), Duration::from_secs(5), true)
        .expect("gpu.info");
    assert_eq!(gpu["ok"], true, "{gpu}");
    let gpu = &gpu["result"]["result"];
    if is_static_executable(&bin()) {
        assert_eq!(gpu["available"], false, "{gpu}");
        assert!(
            gpu["reason"]
                .as_str()
                .is_some_and(|r| r.contains("statically linked")),
            "{gpu}"
        );
    } else {
        assert!(gpu["available"].is_boolean(), "{gpu}");
    }
    let refused = client
        .send(
            "cli1",
            "system.execute",
            json!({"program": "true"}),
            Duration::from_secs(5),
            true,
        )
        .expect("an outcome");
    assert_eq!(
        refused["ok"], false,
        "system.execute must be off by default: {refused}"
    );

    // revoke: exit 3, a clear message, no token left.
    client.revoke("cli1", "retired").expect("revoked");
    let status = run.wait();
    let stderr = run.stderr();
    assert_eq!(status.code(), Some(3), "{stderr}");
    assert!(
        stderr.contains("revoked") && stderr.contains("retired"),
        "{stderr}"
    );
    assert!(
        !state.join("token.json").exists(),
        "the token must be deleted"
    );
    gateway.shutdown();
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn help_lists_both_commands_and_a_bad_flag_exits_2() {
    let help = Command::new(bin()).arg("--help").output().expect("runs");
    assert!(help.status.success());
    let text = String::from_utf8_lossy(&help.stdout);
    for needle in [
        "pair",
        "run",
        "--gateway",
        "--transport",
        "--allow",
        "--ca-cert",
        "--state-dir",
        "--slots",
        "--force",
    ] {
        assert!(text.contains(needle), "--help lacks {needle}");
    }
    let bad = Command::new(bin())
        .arg("--frobnicate")
        .output()
        .expect("runs");
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("frobnicate"));
    let no_token = Command::new(bin())
        .args(["run", "--state-dir"])
        .arg(scratch("empty"))
        .output()
        .expect("runs");
    assert_eq!(no_token.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&no_token.stderr).contains("pair"));
}
