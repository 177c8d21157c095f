//! The one interface a command implementation is written against, whichever shell runs it.
//!
//! The node machine only sees [`CommandSpec`]s and hands out [`ExecuteRequest`]s; an
//! [`Executor`] is the code behind a spec. Shells (smol, blocking) run `Executor::run` on a worker
//! thread, never on the connection's task, so a slow command cannot delay a heartbeat, and feed
//! what it reports ([`RunContext`]) back into the machine (`Node::report_progress`,
//! `Node::stream_text`, `Node::finish_command`). Core defines the trait and the registry; it runs
//! nothing itself.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::Value;

use super::commands::{CommandSpec, ExecuteRequest, Outcome, Progress};
use crate::wire::dto::{CommandError, ErrorCode};

/// A command implementation: its name, scope and params check, and the blocking code that runs it.
pub trait Executor: Send + Sync + 'static {
    /// How the node machine admits the command (name, required scope, serialization key,
    /// params validation). Called once, at registration.
    fn spec(&self) -> CommandSpec;

    /// Runs one command to its end and returns its outcome. Blocking; called on a worker thread.
    /// Check `context.is_cancelled()` between steps of long work: once it is true the node has
    /// already answered the command and will drop whatever this returns.
    fn run(&self, request: &ExecuteRequest, context: &dyn RunContext) -> Outcome;
}

/// What a running command can tell its node, and ask of it.
pub trait RunContext: Send + Sync {
    /// True once the command was cancelled, timed out, or the node is shutting down.
    fn is_cancelled(&self) -> bool;
    /// A progress report (the node rate-limits what it sends).
    fn progress(&self, progress: Progress);
    /// LLM dialect: text produced so far, relayed at once. Ignored by hub links.
    fn stream_text(&self, text: &str);
}

/// The executors a node offers, by command name.
#[derive(Clone, Default)]
pub struct ExecutorSet {
    executors: BTreeMap<String, Arc<dyn Executor>>,
}

impl std::fmt::Debug for ExecutorSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_set().entries(self.executors.keys()).finish()
    }
}

impl ExecutorSet {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `executor` under its spec's name, replacing any earlier one of that name.
    pub fn register(&mut self, executor: impl Executor) -> &mut Self {
        self.register_shared(Arc::new(executor))
    }

    /// Adds a shared executor under its spec's name, replacing any earlier one of that name.
    pub fn register_shared(&mut self, executor: Arc<dyn Executor>) -> &mut Self {
        self.executors.insert(executor.spec().name, executor);
        self
    }

    /// The executor for `command`, if one is registered.
    pub fn get(&self, command: &str) -> Option<&Arc<dyn Executor>> {
        self.executors.get(command)
    }

    /// The specs to put in `NodeConfig::commands`, in name order.
    pub fn specs(&self) -> Vec<CommandSpec> {
        self.executors.values().map(|e| e.spec()).collect()
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.executors.keys().map(String::as_str)
    }

    pub fn len(&self) -> usize {
        self.executors.len()
    }

    pub fn is_empty(&self) -> bool {
        self.executors.is_empty()
    }

    /// Runs `request` on its executor. A command with no executor (the machine admitted a name
    /// that was not registered here) is answered `platform_unsupported` rather than dropped.
    pub fn run(&self, request: &ExecuteRequest, context: &dyn RunContext) -> Outcome {
        match self.executors.get(&request.command) {
            Some(executor) => executor.run(request, context),
            None => Err(command_error(
                ErrorCode::PlatformUnsupported,
                format!("no executor for command `{}` on this node", request.command),
            )),
        }
    }
}

/// A command error with no details (the common case for executors).
pub fn command_error(code: ErrorCode, message: impl Into<String>) -> CommandError {
    CommandError {
        code,
        message: message.into(),
        details: None,
        retry_after_ms: None,
    }
}

/// `invalid_params` with `message`: what an executor returns for params its spec's hook let
/// through but that fail later (a value out of range, say).
pub fn invalid_params(message: impl Into<String>) -> CommandError {
    command_error(ErrorCode::InvalidParams, message)
}

/// Reads `params[key]` as an optional value of type `T`; `invalid_params` names the key when the
/// value has the wrong shape.
pub fn param<T: serde::de::DeserializeOwned>(
    params: &Value,
    key: &str,
) -> Result<Option<T>, CommandError> {
    match params.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(value) => T::deserialize(value)
            .map(Some)
            .map_err(|e| invalid_params(format!("`{key}`: {e}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::Instant;

    struct Echo;
    impl Executor for Echo {
        fn spec(&self) -> CommandSpec {
            CommandSpec::new("test.echo").scope("test")
        }
        fn run(&self, request: &ExecuteRequest, context: &dyn RunContext) -> Outcome {
            if context.is_cancelled() {
                return Err(command_error(ErrorCode::Cancelled, "cancelled"));
            }
            Ok(request.params.clone())
        }
    }

    #[derive(Default)]
    struct Flag(AtomicBool);
    impl RunContext for Flag {
        fn is_cancelled(&self) -> bool {
            self.0.load(Ordering::Relaxed)
        }
        fn progress(&self, _: Progress) {}
        fn stream_text(&self, _: &str) {}
    }

    #[allow(clippy::disallowed_methods)] // an arbitrary deadline: these executors never read it
    fn request(command: &str) -> ExecuteRequest {
        ExecuteRequest {
            command_id: "c1".into(),
            command: command.into(),
            params: serde_json::json!({"n": 3}),
            deadline: Instant::now(),
            originated_by: None,
        }
    }

    #[test]
    fn runs_the_registered_executor_and_refuses_an_unknown_command() {
        let mut set = ExecutorSet::new();
        set.register(Echo);
        assert_eq!(set.specs()[0].required_scope.as_deref(), Some("test"));
        let context = Flag::default();
        assert_eq!(
            set.run(&request("test.echo"), &context),
            Ok(serde_json::json!({"n": 3}))
        );
        let refused = set.run(&request("test.missing"), &context).unwrap_err();
        assert_eq!(refused.code, ErrorCode::PlatformUnsupported);
        assert!(refused.message.contains("test.missing"));
        context.0.store(true, Ordering::Relaxed);
        assert_eq!(
            set.run(&request("test.echo"), &context).unwrap_err().code,
            ErrorCode::Cancelled
        );
    }

    #[test]
    fn param_names_the_key_of_a_wrong_value() {
        let params = serde_json::json!({"n": "three", "m": 2});
        assert_eq!(param::<u32>(&params, "m"), Ok(Some(2)));
        assert_eq!(param::<u32>(&params, "absent"), Ok(None));
        let error = param::<u32>(&params, "n").unwrap_err();
        assert_eq!(error.code, ErrorCode::InvalidParams);
        assert!(error.message.starts_with("`n`:"), "{}", error.message);
    }
}
