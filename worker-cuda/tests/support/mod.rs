//! A fake `RunContext` and request builder shared by the integration tests.
#![allow(dead_code)]

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nodelink_core::node::commands::{ExecuteRequest, Progress};
use nodelink_core::node::executor::RunContext;
use serde_json::Value;

/// Records progress and lets a test cancel the command.
#[derive(Default)]
pub struct FakeContext {
    pub cancelled: AtomicBool,
    pub progress: Mutex<Vec<Progress>>,
    /// What `stream_text` was given, call by call.
    pub texts: Mutex<Vec<String>>,
}

impl FakeContext {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    pub fn cancel(&self) {
        self.cancelled.store(true, Ordering::SeqCst);
    }

    /// Cancels from another thread after `delay`.
    pub fn cancel_after(self: &Arc<Self>, delay: Duration) {
        let me = Arc::clone(self);
        std::thread::spawn(move || {
            std::thread::sleep(delay);
            me.cancel();
        });
    }

    /// The texts streamed so far, call by call.
    pub fn texts(&self) -> Vec<String> {
        self.texts.lock().unwrap().clone()
    }

    pub fn progress_reports(&self) -> Vec<Progress> {
        self.progress.lock().unwrap().clone()
    }
}

impl RunContext for FakeContext {
    fn is_cancelled(&self) -> bool {
        self.cancelled.load(Ordering::SeqCst)
    }
    fn progress(&self, progress: Progress) {
        self.progress.lock().unwrap().push(progress);
    }
    fn stream_text(&self, text: &str) {
        self.texts.lock().unwrap().push(text.to_owned());
    }
}

/// A request for `command` with `params`, due in 30 s.
pub fn request(command: &str, params: Value) -> ExecuteRequest {
    request_due(command, params, Duration::from_secs(30))
}

pub fn request_due(command: &str, params: Value, due_in: Duration) -> ExecuteRequest {
    ExecuteRequest {
        command_id: "c1".into(),
        command: command.into(),
        params,
        deadline: Instant::now() + due_in,
        originated_by: None,
    }
}
