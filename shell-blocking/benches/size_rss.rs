//! Size and idle memory of `nodelink-node` (issue 9): the stripped binary's bytes, and the
//! resident set (VmRSS from /proc) of a node connected to a real gateway on loopback and idle.
//! Targets: <= 3 MB binary, <= 4 MB idle RSS.
//!
//! Run with the size profile (the binary under test is built with the bench's profile):
//! `cargo bench -p nodelink-blocking --bench size_rss --profile min-size`; or measure a binary
//! built apart (`cargo build -p nodelink-blocking --profile min-size`) without building the
//! gateway in that profile: `NODELINK_NODE_BIN=target/min-size/nodelink-node cargo test -p
//! nodelink-blocking --bench size_rss`.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nodelink::gateway::{OperatorClient, ServerConfig};

/// The binary under test: `$NODELINK_NODE_BIN`, else the one built with this bench.
fn bin() -> String {
    std::env::var("NODELINK_NODE_BIN")
        .unwrap_or_else(|_| env!("CARGO_BIN_EXE_nodelink-node").to_string())
}
const MB: f64 = 1024.0 * 1024.0;

struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The binary's size after `strip` (a copy is stripped when the build kept symbols).
fn stripped_size(dir: &Path) -> (u64, &'static str) {
    let copy = dir.join("nodelink-node.stripped");
    let stripped = std::fs::copy(bin(), &copy).is_ok()
        && Command::new("strip")
            .arg(&copy)
            .status()
            .is_ok_and(|s| s.success());
    if stripped {
        (
            std::fs::metadata(&copy).map(|m| m.len()).unwrap_or(0),
            "stripped",
        )
    } else {
        let size = std::fs::metadata(bin()).map(|m| m.len()).unwrap_or(0);
        (size, "as built (no `strip` found)")
    }
}

/// The proportional set size (shared pages divided among their users), KiB.
fn pss_kb(pid: u32) -> Option<u64> {
    let rollup = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).ok()?;
    let line = rollup.lines().find(|l| l.starts_with("Pss:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn proc_status(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Resident KiB per mapped file (and `[anon]`), largest first: where the RSS goes.
fn rss_by_mapping(pid: u32) -> Vec<(String, u64)> {
    let smaps = std::fs::read_to_string(format!("/proc/{pid}/smaps")).unwrap_or_default();
    let mut totals: Vec<(String, u64)> = Vec::new();
    let mut current = String::new();
    for line in smaps.lines() {
        let first = line.split_whitespace().next().unwrap_or_default();
        if first.contains('-') && !first.ends_with(':') {
            current = line
                .split_whitespace()
                .nth(5)
                .map(|p| p.rsplit('/').next().unwrap_or(p).to_string())
                .unwrap_or_else(|| "[anon]".into());
        } else if let Some(rest) = line.strip_prefix("Rss:") {
            let kb: u64 = rest
                .trim()
                .trim_end_matches("kB")
                .trim()
                .parse()
                .unwrap_or(0);
            match totals.iter_mut().find(|(name, _)| *name == current) {
                Some((_, total)) => *total += kb,
                None => totals.push((current.clone(), kb)),
            }
        }
    }
    totals.sort_by_key(|(_, kb)| std::cmp::Reverse(*kb));
    totals
}

fn wait(what: &str, limit: Duration, mut check: impl FnMut() -> bool) {
    let until = Instant::now() + limit;
    while !check() {
        assert!(Instant::now() < until, "{what} did not happen in time");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn main() {
    let dir = std::env::temp_dir().join(format!("nodelink-size-rss-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("a scratch dir");
    let (size, how) = stripped_size(&dir);

    let mut config = ServerConfig::new("127.0.0.1:0".parse().expect("addr"), dir.join("gw.db"));
    config.threads = Some(2);
    let gateway = nodelink::gateway::start(config).expect("the gateway starts");
    let client = OperatorClient::new(&gateway.url(), gateway.admin_token());
    let state = dir.join("state");

    let mut pair = Guard(
        Command::new(bin())
            .args(["pair", "--gateway", &gateway.url(), "--node-id", "bench"])
            .arg("--state-dir")
            .arg(&state)
            .env("NODELINK_LOG", "quiet")
            .stdout(Stdio::piped())
            .spawn()
            .expect("pair starts"),
    );
    let stdout = pair.0.stdout.take().expect("stdout");
    // Keep the pipe open until `pair` exits: it prints once more when paired.
    let mut lines = BufReader::new(stdout).lines();
    let line = lines
        .next()
        .and_then(Result::ok)
        .expect("the pairing code line");
    let code = line
        .strip_prefix("pairing code: ")
        .and_then(|r| r.split_whitespace().next())
        .expect("a code")
        .to_string();
    client.approve(&code, &[]).expect("approved");
    wait("pairing", Duration::from_secs(10), || {
        pair.0.try_wait().ok().flatten().is_some()
    });

    let run = Guard(
        Command::new(bin())
            .args(["run", "--transport", "ws"])
            .arg("--state-dir")
            .arg(&state)
            .env("NODELINK_LOG", "quiet")
            .spawn()
            .expect("run starts"),
    );
    wait("the node online", Duration::from_secs(10), || {
        client.node("bench").is_ok_and(|v| v["online"] == true)
    });
    // Idle: connected, heartbeating, no commands.
    std::thread::sleep(Duration::from_secs(3));
    let pid = run.0.id();
    let rss_kb = proc_status(pid, "VmRSS:").unwrap_or(0);
    let hwm_kb = proc_status(pid, "VmHWM:").unwrap_or(0);
    let threads = proc_status(pid, "Threads:").unwrap_or(0);
    let anon_kb = proc_status(pid, "RssAnon:").unwrap_or(0);
    let file_kb = proc_status(pid, "RssFile:").unwrap_or(0);
    let pss = pss_kb(pid).unwrap_or(0);

    let size_mb = size as f64 / MB;
    let rss_mb = rss_kb as f64 / 1024.0;
    println!("nodelink-node ({})", bin());
    println!(
        "  binary size ({how}): {size} bytes = {size_mb:.2} MiB  (target <= 3 MB: {})",
        if size_mb <= 3.0 { "met" } else { "NOT met" }
    );
    println!(
        "  idle RSS, connected: {rss_kb} KiB = {rss_mb:.2} MiB, peak {hwm_kb} KiB, {threads} threads  (target <= 4 MB: {})",
        if rss_mb <= 4.0 { "met" } else { "NOT met" }
    );
    println!("  of which anonymous (heap, stacks): {anon_kb} KiB, file-backed (the binary, libc): {file_kb} KiB");
    println!("  PSS (shared libc pages divided among their users): {pss} KiB");
    for (name, kb) in rss_by_mapping(pid).into_iter().take(6) {
        println!("    {kb:>6} KiB  {name}");
    }
    drop(lines);
    drop(run);
    gateway.shutdown();
    let _ = std::fs::remove_dir_all(dir);
}
