//! `nodelink node pair` and `nodelink node run` as an operator runs them: the real binary
//! against an in-process gateway on loopback. pair -> approve -> run -> a command -> revoke
//! (exit status 3, token file deleted). Every wait is bounded.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use nodelink::gateway::{start, OperatorClient, RunningGateway, ServerConfig};
use serde_json::json;

const LIMIT: Duration = Duration::from_secs(10);

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("nodelink-cli-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn gateway(dir: &Path) -> RunningGateway {
    let mut config = ServerConfig::new("127.0.0.1:0".parse().unwrap(), dir.join("gw.db"));
    config.admin_token = Some("test-admin".into());
    config.threads = Some(1);
    start(config).expect("the gateway starts")
}

/// A child process whose stdout lines arrive on a channel; killed on drop.
struct Proc {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Proc {
    fn spawn(args: &[&str]) -> Proc {
        let mut child = Command::new(env!("CARGO_BIN_EXE_nodelink"))
            .args(args)
            .env("NODELINK_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the binary runs");
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Proc { child, lines }
    }

    /// The first stdout line containing `needle`.
    fn line_with(&self, needle: &str) -> String {
        let end = Instant::now() + LIMIT;
        loop {
            let left = end.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if line.contains(needle) => return line,
                Ok(_) => {}
                Err(_) => panic!("no line with {needle:?} within {LIMIT:?}"),
            }
        }
    }

    /// Exit status and stderr, waiting at most LIMIT.
    fn finish(mut self) -> (i32, String) {
        let end = Instant::now() + LIMIT;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                let mut stderr = String::new();
                use std::io::Read;
                let _ = self
                    .child
                    .stderr
                    .take()
                    .unwrap()
                    .read_to_string(&mut stderr);
                return (status.code().unwrap_or(-1), stderr);
            }
            assert!(
                Instant::now() < end,
                "the process did not exit within {LIMIT:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn wait_until(what: &str, mut probe: impl FnMut() -> bool) {
    let end = Instant::now() + LIMIT;
    while !probe() {
        assert!(Instant::now() < end, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn pair_approve_run_command_then_revoke_through_the_binary() {
    let dir = temp_dir("e2e");
    let gw = gateway(&dir);
    let operator = OperatorClient::new(&gw.url(), gw.admin_token());
    let state = dir.join("node-state");
    let state_arg = state.to_str().unwrap();

    // pair: the code is shown, the operator approves it, the token lands in the state dir.
    let pair = Proc::spawn(&[
        "node",
        "pair",
        "--gateway",
        &gw.url(),
        "--node-id",
        "cli-node",
        "--state-dir",
        state_arg,
    ]);
    let line = pair.line_with("Pairing code:");
    let code = line.split_whitespace().last().unwrap().to_owned();
    let pending = operator.pairings().unwrap();
    assert!(
        pending
            .iter()
            .any(|p| p["code"] == json!(code) && p["nodeId"] == json!("cli-node")),
        "{pending:?}"
    );
    operator.approve(&code, &["demo.echo".to_owned()]).unwrap();
    pair.line_with("Paired as cli-node");
    let (status, stderr) = pair.finish();
    assert_eq!(status, 0, "{stderr}");
    let token = state.join("token.json");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&token).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    // run: connects, heartbeats, runs a command.
    let run = Proc::spawn(&[
        "node",
        "run",
        "--state-dir",
        state_arg,
        "--demo-commands",
        "--heartbeat-interval",
        "500ms",
    ]);
    run.line_with("connected");
    wait_until("the node online with a heartbeat", || {
        operator.nodes().unwrap().iter().any(|n| {
            n["nodeId"] == json!("cli-node")
                && n["online"] == json!(true)
                && !n["lastHeartbeat"].is_null()
        })
    });
    let answer = operator
        .send(
            "cli-node",
            "demo.echo",
            json!({"x": 1}),
            Duration::from_secs(5),
            true,
        )
        .unwrap();
    assert_eq!(answer["ok"], json!(true), "{answer}");
    assert_eq!(answer["result"]["result"], json!({"x": 1}), "{answer}");
    // Not granted: the node refuses it, whatever the gateway sends.
    let refused = operator
        .send(
            "cli-node",
            "demo.blob",
            json!({}),
            Duration::from_secs(5),
            true,
        )
        .unwrap();
    assert_eq!(
        refused["result"]["error"]["code"],
        json!("not_authorized"),
        "{refused}"
    );

    // revoke: exit status 3, a clear message, the token file deleted.
    operator.revoke("cli-node", "test over").unwrap();
    let (status, stderr) = run.finish();
    assert_eq!(status, 3, "{stderr}");
    assert!(stderr.contains("revoked"), "{stderr}");
    assert!(!token.exists(), "the token file is deleted");

    // run again: not paired any more.
    let again = Proc::spawn(&["node", "run", "--state-dir", state_arg]);
    let (status, stderr) = again.finish();
    assert_eq!(status, 1);
    assert!(stderr.contains("not paired"), "{stderr}");
    gw.shutdown();
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn pair_refuses_to_replace_a_stored_token_without_force_and_help_lists_the_flags() {
    let dir = temp_dir("force");
    std::fs::write(
        dir.join("token.json"),
        r#"{"gatewayUrl":"http://127.0.0.1:9","token":"old-node.secret"}"#,
    )
    .unwrap();
    let pair = Proc::spawn(&[
        "node",
        "pair",
        "--gateway",
        "http://127.0.0.1:9",
        "--state-dir",
        dir.to_str().unwrap(),
    ]);
    let (status, stderr) = pair.finish();
    assert_eq!(status, 1);
    assert!(stderr.contains("already paired as old-node"), "{stderr}");
    assert!(!stderr.contains("secret\""), "{stderr}");

    let help = Command::new(env!("CARGO_BIN_EXE_nodelink"))
        .args(["node", "run", "--help"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&help.stdout);
    for flag in [
        "--state-dir",
        "--transport",
        "--allow",
        "--ca-cert",
        "system.execute",
    ] {
        assert!(text.contains(flag), "{flag} missing from:\n{text}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
