//! Executors run on their own threads, one per command, never on the driver: a slow or blocking
//! command cannot delay a heartbeat. What a command reports (progress, streamed text, its
//! outcome) goes to the driver over its channel; the driver feeds it to the machine. A panic in
//! an executor becomes an `internal_error` result instead of a lost command.

use std::collections::HashMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use nodelink_core::node::commands::{ExecuteRequest, Outcome, Progress};
use nodelink_core::node::executor::{command_error, ExecutorSet, RunContext};
use nodelink_core::wire::dto::ErrorCode;
use smol::channel::Sender;

use super::driver::Wake;

/// What a running command tells the driver.
#[derive(Debug)]
pub enum ExecEvent {
    Progress(Progress),
    Text(String),
    Finished(Outcome),
}

/// The commands running now, by id, with the flag that cancels each.
#[derive(Default)]
pub struct Running {
    flags: HashMap<String, Arc<AtomicBool>>,
}

impl Running {
    /// Starts `request` on a new thread. `Err(outcome)` when no thread could be started: the
    /// caller finishes the command with that outcome.
    pub fn start(
        &mut self,
        executors: &Arc<ExecutorSet>,
        request: ExecuteRequest,
        wake: &Sender<Wake>,
    ) -> Result<(), Outcome> {
        let cancelled = Arc::new(AtomicBool::new(false));
        let context = Context {
            command_id: request.command_id.clone(),
            cancelled: cancelled.clone(),
            wake: wake.clone(),
        };
        let executors = executors.clone();
        let id = request.command_id.clone();
        let spawned = std::thread::Builder::new()
            .name(format!("nodelink-cmd-{}", request.command))
            .spawn(move || {
                let outcome = catch_unwind(AssertUnwindSafe(|| executors.run(&request, &context)))
                    .unwrap_or_else(|panic| {
                        let what = panic
                            .downcast_ref::<&str>()
                            .map(|s| (*s).to_owned())
                            .or_else(|| panic.downcast_ref::<String>().cloned())
                            .unwrap_or_else(|| "a panic".to_owned());
                        Err(command_error(
                            ErrorCode::InternalError,
                            format!("the executor of `{}` panicked: {what}", request.command),
                        ))
                    });
                context.send(ExecEvent::Finished(outcome));
            });
        match spawned {
            Ok(_) => {
                self.flags.insert(id, cancelled);
                Ok(())
            }
            Err(error) => Err(Err(command_error(
                ErrorCode::InternalError,
                format!("cannot start a thread for the command: {error}"),
            ))),
        }
    }

    /// The machine answered the command (cancel, timeout, shutdown): tell its executor to stop.
    pub fn cancel(&mut self, command_id: &str) {
        if let Some(flag) = self.flags.remove(command_id) {
            flag.store(true, Ordering::SeqCst);
        }
    }

    /// The executor finished.
    pub fn finished(&mut self, command_id: &str) {
        self.flags.remove(command_id);
    }

    /// Stops every executor (the node is stopping).
    pub fn cancel_all(&mut self) {
        for (_, flag) in self.flags.drain() {
            flag.store(true, Ordering::SeqCst);
        }
    }

    pub fn len(&self) -> usize {
        self.flags.len()
    }

    pub fn is_empty(&self) -> bool {
        self.flags.is_empty()
    }
}

/// The [`RunContext`] of one command.
struct Context {
    command_id: String,
    cancelled: Arc<AtomicBool>,
    wake: Sender<Wake>,
}

impl Context {
    fn send(&self, event: ExecEvent) {
        // Blocks while the driver's queue is full (back-pressure on a chatty executor); fails
        // only once the driver is gone, when nobody needs the report.
        let _ = self
            .wake
            .send_blocking(Wake::Exec(self.command_id.clone(), event));
    }
}

impl RunContext for Context {
    fn is_cancelled(&self) -> bool {
        self.cancelled.load(Ordering::SeqCst) || self.wake.is_closed()
    }

    fn progress(&self, progress: Progress) {
        if !self.is_cancelled() {
            self.send(ExecEvent::Progress(progress));
        }
    }

    fn stream_text(&self, text: &str) {
        if !self.is_cancelled() {
            self.send(ExecEvent::Text(text.to_owned()));
        }
    }
}
