//! Executors on their own threads: a slow command never delays the loop (and so never a
//! heartbeat). What a command reports goes back through the [`Notifier`].

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use nodelink_core::node::commands::{ExecuteRequest, Progress};
use nodelink_core::node::executor::{command_error, ExecutorSet, RunContext};
use nodelink_core::wire::dto::ErrorCode;

use crate::notify::{Msg, Notifier};

struct Context {
    command_id: String,
    cancelled: Arc<AtomicBool>,
    notify: Notifier,
}

impl RunContext for Context {
    fn is_cancelled(&self) -> bool {
        self.cancelled.load(Ordering::Relaxed)
    }

    fn progress(&self, progress: Progress) {
        self.notify.send(Msg::Progress {
            command_id: self.command_id.clone(),
            progress,
        });
    }

    fn stream_text(&self, text: &str) {
        self.notify.send(Msg::Text {
            command_id: self.command_id.clone(),
            text: text.to_owned(),
        });
    }
}

/// The commands running on executor threads, by id, with their cancel flags.
pub(crate) struct Executors {
    set: Arc<ExecutorSet>,
    running: HashMap<String, Arc<AtomicBool>>,
}

impl Executors {
    pub(crate) fn new(set: ExecutorSet) -> Executors {
        Executors {
            set: Arc::new(set),
            running: HashMap::new(),
        }
    }

    pub(crate) fn start(&mut self, request: ExecuteRequest, notify: &Notifier) {
        let command_id = request.command_id.clone();
        let cancelled = Arc::new(AtomicBool::new(false));
        self.running.insert(command_id.clone(), cancelled.clone());
        let set = self.set.clone();
        let context = Context {
            command_id: request.command_id.clone(),
            cancelled,
            notify: notify.clone(),
        };
        let spawned = std::thread::Builder::new()
            .name("nodelink-cmd".into())
            .spawn(move || {
                // A panicking executor still answers its command, and the node lives on.
                let run = std::panic::AssertUnwindSafe(|| set.run(&request, &context));
                let outcome = std::panic::catch_unwind(run).unwrap_or_else(|_| {
                    Err(command_error(
                        ErrorCode::InternalError,
                        format!("the executor of `{}` panicked", request.command),
                    ))
                });
                context.notify.send(Msg::Finished {
                    command_id: request.command_id,
                    outcome,
                });
            });
        if let Err(e) = spawned {
            // The command table expects an answer: an error is one.
            notify.send(Msg::Finished {
                command_id,
                outcome: Err(command_error(
                    ErrorCode::InternalError,
                    format!("cannot start an executor thread: {e}"),
                )),
            });
        }
    }

    /// Sets the command's cancel flag; its executor sees it at its next check.
    pub(crate) fn cancel(&mut self, command_id: &str) {
        if let Some(flag) = self.running.remove(command_id) {
            flag.store(true, Ordering::Relaxed);
        }
    }

    pub(crate) fn finished(&mut self, command_id: &str) {
        self.running.remove(command_id);
    }

    /// Cancels everything (the loop is ending).
    pub(crate) fn cancel_all(&mut self) {
        for (_, flag) in self.running.drain() {
            flag.store(true, Ordering::Relaxed);
        }
    }
}
