//! system.execute: output, exit codes, caps, timeouts, cancellation, and the scope it needs.
#![cfg(unix)]

mod support;

use std::time::{Duration, Instant};

use base64::Engine as _;
use nodelink_core::node::commands::{CommandAction, CommandLimits, CommandTable};
use nodelink_core::node::executor::Executor;
use nodelink_core::scope::ScopeSet;
use nodelink_core::wire::dto::{ErrorCode, ExecuteCommandDto};
use nodelink_worker_cuda::host::SystemExecute;
use serde_json::{json, Value};
use support::{request, request_due, FakeContext};

fn exec(params: Value) -> Result<Value, nodelink_core::wire::dto::CommandError> {
    let context = FakeContext::new();
    SystemExecute.run(&request("system.execute", params), &*context)
}

#[test]
fn echo_returns_its_output_and_exit_code() {
    let out = exec(json!({"program": "/bin/echo", "args": ["hello", "world"]})).unwrap();
    assert_eq!(out["stdout"], "hello world\n");
    assert_eq!(out["stderr"], "");
    assert_eq!(out["exitCode"], 0);
    assert_eq!(out["signal"], Value::Null);
    assert_eq!(out["timedOut"], false);
    assert_eq!(out["stdoutTruncated"], false);
    assert_eq!(out["stdoutBytes"], 12);
    assert!(out["durationMs"].as_u64().is_some());

    let failed = exec(json!({"program": "sh", "args": ["-c", "echo oops >&2; exit 3"]})).unwrap();
    assert_eq!(failed["exitCode"], 3);
    assert_eq!(failed["stderr"], "oops\n");
}

#[test]
fn stdin_env_and_cwd_reach_the_program() {
    let out = exec(json!({
        "program": "sh",
        "args": ["-c", "read line; echo \"$line/$GREETING/$(pwd)\""],
        "stdin": "from stdin\n",
        "env": {"GREETING": "hi"},
        "cwd": "/",
    }))
    .unwrap();
    assert_eq!(out["stdout"], "from stdin/hi//\n");

    let cleared = exec(json!({
        "program": "/bin/sh",
        "args": ["-c", "echo \"[$HOME]\""],
        "clearEnv": true,
    }))
    .unwrap();
    assert_eq!(cleared["stdout"], "[]\n");
}

#[test]
fn output_is_capped_and_counted_and_can_come_as_base64() {
    let out = exec(json!({
        "program": "sh",
        "args": ["-c", "head -c 300000 /dev/zero; printf 'ab' >&2"],
        "maxOutputBytes": 1000,
        "encoding": "base64",
    }))
    .unwrap();
    assert_eq!(out["stdoutBytes"], 300_000);
    assert_eq!(out["stdoutTruncated"], true);
    assert_eq!(out["stderrTruncated"], false);
    assert_eq!(out["encoding"], "base64");
    let engine = base64::engine::general_purpose::STANDARD;
    let kept = engine.decode(out["stdout"].as_str().unwrap()).unwrap();
    assert_eq!(kept, vec![0u8; 1000]);
    assert_eq!(
        engine.decode(out["stderr"].as_str().unwrap()).unwrap(),
        b"ab"
    );
}

#[test]
fn its_own_timeout_kills_the_program_and_keeps_the_output() {
    let started = Instant::now();
    let out = exec(json!({
        "program": "sh",
        "args": ["-c", "echo started; exec sleep 30"],
        "timeoutMs": 200,
    }))
    .unwrap();
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(out["timedOut"], true);
    assert_eq!(out["exitCode"], Value::Null);
    assert_eq!(out["signal"], 9);
    assert_eq!(out["stdout"], "started\n");
}

#[test]
fn the_command_deadline_kills_the_program() {
    let context = FakeContext::new();
    let started = Instant::now();
    let error = SystemExecute
        .run(
            &request_due(
                "system.execute",
                json!({"program": "sleep", "args": ["30"]}),
                Duration::from_millis(150),
            ),
            &*context,
        )
        .unwrap_err();
    assert_eq!(error.code, ErrorCode::Timeout);
    assert!(started.elapsed() < Duration::from_secs(5));
}

/// Whether `pid` still runs (a zombie waiting for a reaper does not).
fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}

#[test]
fn cancellation_kills_the_program_and_what_it_started() {
    let dir = std::env::temp_dir().join(format!("nodelink-exec-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let pidfile = dir.join("sleep.pid");
    let context = FakeContext::new();
    context.cancel_after(Duration::from_millis(300));
    let started = Instant::now();
    let script = format!("sleep 30 & echo $! > {}; wait", pidfile.display());
    let error = SystemExecute
        .run(
            &request(
                "system.execute",
                json!({"program": "sh", "args": ["-c", script]}),
            ),
            &*context,
        )
        .unwrap_err();
    assert_eq!(error.code, ErrorCode::Cancelled);
    assert!(started.elapsed() < Duration::from_secs(5));
    if cfg!(target_os = "linux") {
        let pid: u32 = std::fs::read_to_string(&pidfile)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        let until = Instant::now() + Duration::from_secs(2);
        while alive(pid) && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(!alive(pid), "the shell's child {pid} survived the cancel");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn bad_params_are_invalid_params() {
    let spec = SystemExecute.spec();
    let validate = spec.validate.as_ref().unwrap();
    for params in [
        json!({}),
        json!({"program": ""}),
        json!({"program": "ls", "args": "-l"}),
        json!({"program": "ls", "shell": true}),
        json!({"program": "ls", "maxOutputBytes": 1u64 << 30}),
        json!({"program": "ls", "env": {"A=B": "c"}}),
        json!({"program": "ls", "encoding": "hex"}),
    ] {
        assert!(validate(&params).is_err(), "{params} passed");
        assert_eq!(exec(params).unwrap_err().code, ErrorCode::InvalidParams);
    }
    let missing = exec(json!({"program": "/nonexistent/nodelink-no-such-program"})).unwrap_err();
    assert_eq!(missing.code, ErrorCode::InvalidParams);
    assert!(missing.message.contains("nodelink-no-such-program"));
    let bad_cwd = exec(json!({"program": "/bin/echo", "cwd": "/nonexistent-dir"})).unwrap_err();
    assert_eq!(bad_cwd.code, ErrorCode::InvalidParams);
    assert!(bad_cwd.message.contains("/nonexistent-dir"));
}

#[test]
fn the_node_refuses_it_without_the_scope() {
    let mut table = CommandTable::new([SystemExecute.spec()], CommandLimits::default()).unwrap();
    let dto = |id: &str| ExecuteCommandDto {
        command_id: id.into(),
        command: "system.execute".into(),
        params: Some(json!({"program": "/bin/echo"})),
        timeout_ms: None,
        originated_by: None,
        protocol_version: None,
    };
    let now = Instant::now();
    table.receive(now, dto("a"), &ScopeSet::parse(["system.info"]).unwrap());
    match table.poll_action() {
        Some(CommandAction::Result(result)) => {
            assert_eq!(
                result.error.as_ref().unwrap().code,
                ErrorCode::NotAuthorized
            )
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    table.receive(now, dto("b"), &ScopeSet::parse(["system.execute"]).unwrap());
    assert!(matches!(
        table.poll_action(),
        Some(CommandAction::Execute(request)) if request.command_id == "b"
    ));
}
