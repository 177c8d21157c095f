//! Size and idle memory of `nodelink-node` (issue 9), next to the smol shell's `nodelink node`
//! measured in the same run: the stripped binary's bytes, and the resident set (VmRSS from /proc)
//! of a node connected to a real gateway on loopback and idle. Targets (the blocking node):
//! <= 3 MB binary, <= 4 MB idle RSS.
//!
//! The targets are read strictly, in decimal units: 3,000,000 bytes and 4,000,000 bytes.
//!
//! The minimal-host build is the static musl one (docs/blocking.md): build it and the smol node
//! in the size profile, then measure both, plus the dynamically linked blocking node, in one run:
//!
//! ```text
//! cargo build -p nodelink -p nodelink-blocking --profile min-size --bins
//! cargo build -p nodelink-blocking --profile min-size --bin nodelink-node --target x86_64-unknown-linux-musl
//! NODELINK_NODE_BIN=target/x86_64-unknown-linux-musl/min-size/nodelink-node:target/min-size/nodelink-node \
//!   NODELINK_SMOL_BIN=target/min-size/nodelink cargo test -p nodelink-blocking --bench size_rss
//! ```
//!
//! `NODELINK_NODE_BIN` is a `:`-separated list of blocking-node binaries; without it the bench
//! measures the one built with it.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nodelink::gateway::{OperatorClient, ServerConfig};

/// The binaries under test: `$NODELINK_NODE_BIN` (`:`-separated), else the one built with
/// this bench.
fn bins() -> Vec<String> {
    match std::env::var_os("NODELINK_NODE_BIN") {
        Some(list) => std::env::split_paths(&list)
            .map(|p| p.to_string_lossy().into_owned())
            .collect(),
        None => vec![env!("CARGO_BIN_EXE_nodelink-node").to_string()],
    }
}
const MIB: f64 = 1024.0 * 1024.0;
/// The issue's targets for the blocking node, in bytes (decimal megabytes).
const SIZE_TARGET: u64 = 3_000_000;
const RSS_TARGET: u64 = 4_000_000;

struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The binary's size after `strip` (a copy is stripped when the build kept symbols).
fn stripped_size(bin: &str, dir: &Path) -> (u64, &'static str) {
    let name = Path::new(bin)
        .file_name()
        .map_or("bin".into(), |n| n.to_string_lossy().into_owned());
    let copy = dir.join(format!("{name}.stripped"));
    let stripped = std::fs::copy(bin, &copy).is_ok()
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
        let size = std::fs::metadata(bin).map(|m| m.len()).unwrap_or(0);
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

/// One node binary under test, and how to run its node subcommands.
struct Subject {
    label: &'static str,
    bin: String,
    /// What goes before `pair` / `run` (`node` for `nodelink node pair`).
    prefix: &'static [&'static str],
}

/// The smol shell's `nodelink` binary: `$NODELINK_SMOL_BIN`, else the one next to the first
/// binary under test when the same build made it (`cargo build -p nodelink --profile min-size`).
fn smol_bin(first: &str) -> Option<String> {
    if let Ok(bin) = std::env::var("NODELINK_SMOL_BIN") {
        return Some(bin);
    }
    let sibling = Path::new(first).with_file_name("nodelink");
    sibling
        .exists()
        .then(|| sibling.to_string_lossy().into_owned())
}

fn main() {
    let dir = std::env::temp_dir().join(format!("nodelink-size-rss-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("a scratch dir");

    let mut config = ServerConfig::new("127.0.0.1:0".parse().expect("addr"), dir.join("gw.db"));
    config.threads = Some(2);
    let gateway = nodelink::gateway::start(config).expect("the gateway starts");
    let client = OperatorClient::new(&gateway.url(), gateway.admin_token());

    let blocking = bins();
    let mut subjects: Vec<Subject> = blocking
        .iter()
        .map(|bin| Subject {
            label: "nodelink-node (blocking shell)",
            bin: bin.clone(),
            prefix: &[],
        })
        .collect();
    match smol_bin(&blocking[0]) {
        Some(bin) => subjects.push(Subject {
            label: "nodelink node (smol shell)",
            bin,
            prefix: &["node"],
        }),
        None => println!(
            "(the smol node is not measured: no `nodelink` next to {}; build it in the same \
             profile or set NODELINK_SMOL_BIN)",
            blocking[0]
        ),
    }
    for (index, subject) in subjects.iter().enumerate() {
        measure(&gateway.url(), &client, &dir, index, subject);
    }
    gateway.shutdown();
    let _ = std::fs::remove_dir_all(dir);
}

/// Pairs the subject's node through the operator API, runs it connected and idle, and prints
/// its stripped size and idle memory.
fn measure(url: &str, client: &OperatorClient, dir: &Path, index: usize, subject: &Subject) {
    let (size, how) = stripped_size(&subject.bin, dir);
    let state = dir.join(format!("state-{index}"));
    let node_id = format!("bench-{index}");
    let mut pair = Guard(
        Command::new(&subject.bin)
            .args(subject.prefix)
            .args(["pair", "--gateway", url, "--node-id", &node_id])
            .arg("--state-dir")
            .arg(&state)
            .env("NODELINK_LOG", "quiet")
            .stdout(Stdio::null())
            .spawn()
            .expect("pair starts"),
    );
    let mut code = None;
    wait("the pairing request", Duration::from_secs(10), || {
        code = client.pairings().ok().and_then(|pairings| {
            pairings
                .iter()
                .find(|p| p["nodeId"] == node_id.as_str())
                .and_then(|p| p["code"].as_str().map(str::to_owned))
        });
        code.is_some()
    });
    client
        .approve(code.as_deref().expect("a code"), &[])
        .expect("approved");
    wait("pairing", Duration::from_secs(10), || {
        pair.0.try_wait().ok().flatten().is_some()
    });

    let run = Guard(
        Command::new(&subject.bin)
            .args(subject.prefix)
            .args(["run", "--transport", "ws"])
            .arg("--state-dir")
            .arg(&state)
            .env("NODELINK_LOG", "quiet")
            .stdout(Stdio::null())
            .spawn()
            .expect("run starts"),
    );
    wait("the node online", Duration::from_secs(10), || {
        client.node(&node_id).is_ok_and(|v| v["online"] == true)
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

    let size_mb = size as f64 / MIB;
    let rss_mb = rss_kb as f64 / 1024.0;
    let verdict = |met: bool| if met { "met" } else { "NOT met" };
    println!("{} ({})", subject.label, subject.bin);
    println!(
        "  binary size ({how}): {size} bytes = {size_mb:.2} MiB  (blocking target <= 3,000,000 bytes: {})",
        verdict(size <= SIZE_TARGET)
    );
    println!(
        "  idle RSS, connected: {rss_kb} KiB = {rss_mb:.2} MiB, peak {hwm_kb} KiB, {threads} threads  (blocking target <= 4,000,000 bytes: {})",
        verdict(rss_kb * 1024 <= RSS_TARGET)
    );
    println!("  of which anonymous (heap, stacks): {anon_kb} KiB, file-backed (the binary, libc): {file_kb} KiB");
    println!("  PSS (shared libc pages divided among their users): {pss} KiB");
    for (name, kb) in rss_by_mapping(pid).into_iter().take(6) {
        println!("    {kb:>6} KiB  {name}");
    }
    drop(run);
    drop(pair);
}
