//! `system.execute`: runs one program (no shell unless the caller names one), with a bounded
//! output, a timeout, and a kill of its whole process group on cancellation or deadline.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use base64::Engine as _;
use nodelink_core::node::commands::{CommandSpec, ExecuteRequest, Outcome};
use nodelink_core::node::executor::{command_error, invalid_params, Executor, RunContext};
use nodelink_core::wire::dto::ErrorCode;
use serde::Deserialize;
use serde_json::{json, Value};

/// The scope `system.execute` requires; the executor is registered only when the operator allows
/// it (`BuiltinOptions::allow_system_execute`).
pub const SYSTEM_EXECUTE_SCOPE: &str = "system.execute";
/// Bytes kept of each of stdout and stderr when `maxOutputBytes` is absent (1 MiB).
pub const DEFAULT_OUTPUT_CAP: usize = 1 << 20;
/// The largest `maxOutputBytes` accepted (16 MiB per stream).
pub const MAX_OUTPUT_CAP: usize = 16 << 20;

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct ExecParams {
    program: String,
    #[serde(default)]
    args: Vec<String>,
    cwd: Option<String>,
    #[serde(default)]
    env: BTreeMap<String, String>,
    #[serde(default)]
    clear_env: bool,
    stdin: Option<String>,
    timeout_ms: Option<u64>,
    max_output_bytes: Option<usize>,
    #[serde(default)]
    encoding: Encoding,
}

#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
enum Encoding {
    /// Output as text, invalid UTF-8 replaced by U+FFFD.
    #[default]
    Utf8,
    /// Output as base64 of the raw bytes.
    Base64,
}

fn parse(params: &Value) -> Result<ExecParams, String> {
    let p = ExecParams::deserialize(params).map_err(|e| e.to_string())?;
    if p.program.is_empty() {
        return Err("`program` is empty".into());
    }
    if let Some(cap) = p.max_output_bytes {
        if cap > MAX_OUTPUT_CAP {
            return Err(format!(
                "`maxOutputBytes`: {cap} is over the maximum {MAX_OUTPUT_CAP}"
            ));
        }
    }
    if p.env.keys().any(|k| k.is_empty() || k.contains('=')) {
        return Err("`env`: a name is empty or contains '='".into());
    }
    let nul = |s: &str| s.contains('\0');
    if nul(&p.program)
        || p.args.iter().any(|a| nul(a))
        || p.cwd.as_deref().is_some_and(nul)
        || p.env.iter().any(|(k, v)| nul(k) || nul(v))
    {
        return Err("a program, argument, cwd or env entry contains a NUL byte".into());
    }
    Ok(p)
}

/// `system.execute`. Params: `program` (required), `args`, `cwd`, `env` (added to the node's
/// environment, or replacing it with `clearEnv: true`), `stdin` (text), `timeoutMs`,
/// `maxOutputBytes` (per stream), `encoding` (`utf8` or `base64`). See docs/executors.md.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemExecute;

impl Executor for SystemExecute {
    fn spec(&self) -> CommandSpec {
        CommandSpec::new("system.execute")
            .scope(SYSTEM_EXECUTE_SCOPE)
            .validated_by(|params| parse(params).map(|_| ()))
    }

    fn run(&self, request: &ExecuteRequest, context: &dyn RunContext) -> Outcome {
        let p = parse(&request.params).map_err(invalid_params)?;
        run_program(&p, request.deadline, context)
    }
}

/// What one output stream produced: the first `cap` bytes, and how many there were in all.
#[derive(Default)]
struct Captured {
    kept: Vec<u8>,
    total: u64,
}

/// A reader thread's progress, shared so that a pipe held open by an escaped grandchild (one
/// that left the process group) cannot hold the command past [`DRAIN_GRACE`].
struct Capture {
    shared: Arc<Mutex<Captured>>,
    done: mpsc::Receiver<()>,
}

/// How long the output pipes may stay open after the program ended and its group was killed.
const DRAIN_GRACE: Duration = Duration::from_secs(2);

fn capture(mut stream: impl Read + Send + 'static, cap: usize) -> Capture {
    let shared = Arc::new(Mutex::new(Captured::default()));
    let (tx, done) = mpsc::channel();
    let out = Arc::clone(&shared);
    thread::spawn(move || {
        let mut buf = [0u8; 16 * 1024];
        // Keep draining past the cap so the child never blocks on a full pipe.
        loop {
            match stream.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    let mut c = out.lock().unwrap_or_else(|p| p.into_inner());
                    c.total += n as u64;
                    let room = cap.saturating_sub(c.kept.len()).min(n);
                    c.kept.extend_from_slice(&buf[..room]);
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => break,
            }
        }
        let _ = tx.send(());
    });
    Capture { shared, done }
}

impl Capture {
    /// What was read, once the stream ended or `until` passed.
    fn finish(self, until: Instant) -> Captured {
        let _ = self
            .done
            .recv_timeout(until.saturating_duration_since(Instant::now()));
        let mut c = self.shared.lock().unwrap_or_else(|p| p.into_inner());
        std::mem::take(&mut *c)
    }
}

/// Why the child was stopped before it exited by itself.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Stop {
    Cancelled,
    Deadline,
    OwnTimeout,
}

fn run_program(p: &ExecParams, deadline: Instant, context: &dyn RunContext) -> Outcome {
    let started = Instant::now();
    let mut command = Command::new(&p.program);
    command
        .args(&p.args)
        .stdin(if p.stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if p.clear_env {
        command.env_clear();
    }
    command.envs(&p.env);
    if let Some(cwd) = &p.cwd {
        command.current_dir(cwd);
    }
    #[cfg(unix)]
    {
        // Its own process group, so a kill reaches what a shell started too.
        use std::os::unix::process::CommandExt;
        command.process_group(0);
    }
    let mut child = command.spawn().map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound | std::io::ErrorKind::PermissionDenied => {
            invalid_params(format!("cannot run `{}`{}: {e}", p.program, cwd_note(p)))
        }
        _ => command_error(
            ErrorCode::InternalError,
            format!("cannot start `{}`: {e}", p.program),
        ),
    })?;
    let cap = p.max_output_bytes.unwrap_or(DEFAULT_OUTPUT_CAP);
    let (stdout, stderr) = match (child.stdout.take(), child.stderr.take()) {
        (Some(out), Some(err)) => (capture(out, cap), capture(err, cap)),
        _ => {
            kill_group(&mut child);
            return Err(command_error(
                ErrorCode::InternalError,
                "the child's output pipes are missing",
            ));
        }
    };
    let writer = match (child.stdin.take(), &p.stdin) {
        (Some(mut pipe), Some(text)) => {
            let bytes = text.clone().into_bytes();
            // A child that exits without reading gets EPIPE here: not an error of the command.
            Some(thread::spawn(move || drop(pipe.write_all(&bytes))))
        }
        _ => None,
    };
    let own_deadline = p.timeout_ms.map(|ms| started + Duration::from_millis(ms));
    let (status, stop) = wait(&mut child, deadline, own_deadline, context);
    // What the program left running in its group ends with it (and releases the pipes).
    kill_group(&mut child);
    let grace = Instant::now() + DRAIN_GRACE;
    let stdout = stdout.finish(grace);
    let stderr = stderr.finish(grace);
    // The stdin writer is not joined: a child that never read its stdin may leave it blocked
    // until the pipe closes, and it owns nothing the result needs.
    drop(writer);
    match stop {
        Some(Stop::Cancelled) => return Err(crate::cancelled()),
        Some(Stop::Deadline) => {
            return Err(command_error(
                ErrorCode::Timeout,
                "the command's deadline passed: the program was killed",
            ))
        }
        _ => {}
    }
    let encode = |c: &Captured| match p.encoding {
        Encoding::Utf8 => Value::String(String::from_utf8_lossy(&c.kept).into_owned()),
        Encoding::Base64 => {
            Value::String(base64::engine::general_purpose::STANDARD.encode(&c.kept))
        }
    };
    let (code, signal) = exit_parts(status);
    Ok(json!({
        "exitCode": code,
        "signal": signal,
        "timedOut": stop == Some(Stop::OwnTimeout),
        "stdout": encode(&stdout),
        "stderr": encode(&stderr),
        "stdoutBytes": stdout.total,
        "stderrBytes": stderr.total,
        "stdoutTruncated": stdout.total > stdout.kept.len() as u64,
        "stderrTruncated": stderr.total > stderr.kept.len() as u64,
        "encoding": match p.encoding { Encoding::Utf8 => "utf8", Encoding::Base64 => "base64" },
        "durationMs": u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
    }))
}

fn cwd_note(p: &ExecParams) -> String {
    p.cwd
        .as_deref()
        .map(|cwd| format!(" in `{cwd}`"))
        .unwrap_or_default()
}

/// Polls the child until it exits or must be stopped (then kills it and reaps it).
fn wait(
    child: &mut Child,
    deadline: Instant,
    own_deadline: Option<Instant>,
    context: &dyn RunContext,
) -> (Option<ExitStatus>, Option<Stop>) {
    let mut pause = Duration::from_millis(1);
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return (Some(status), None),
            Ok(None) => {}
            Err(_) => break,
        }
        let now = Instant::now();
        let stop = if context.is_cancelled() {
            Some(Stop::Cancelled)
        } else if now >= deadline {
            Some(Stop::Deadline)
        } else if own_deadline.is_some_and(|d| now >= d) {
            Some(Stop::OwnTimeout)
        } else {
            None
        };
        if let Some(stop) = stop {
            kill_group(child);
            return (child.wait().ok(), Some(stop));
        }
        thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(20));
    }
    kill_group(child);
    (child.wait().ok(), None)
}

#[cfg(unix)]
fn exit_parts(status: Option<ExitStatus>) -> (Option<i32>, Option<i32>) {
    use std::os::unix::process::ExitStatusExt;
    status.map_or((None, None), |s| (s.code(), s.signal()))
}

#[cfg(not(unix))]
fn exit_parts(status: Option<ExitStatus>) -> (Option<i32>, Option<i32>) {
    (status.and_then(|s| s.code()), None)
}

/// SIGKILL to the child's process group (its own, see `process_group(0)`), then to the child.
#[cfg(unix)]
#[allow(unsafe_code)]
fn kill_group(child: &mut Child) {
    if let Ok(pid) = libc::pid_t::try_from(child.id()) {
        if pid > 0 {
            // SAFETY: kill(2) takes plain integers; a group that is gone gives ESRCH, ignored.
            unsafe {
                libc::kill(-pid, libc::SIGKILL);
            }
        }
    }
    let _ = child.kill();
}

#[cfg(not(unix))]
fn kill_group(child: &mut Child) {
    let _ = child.kill();
}
