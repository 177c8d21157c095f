//! nodelink's built-in command executors: host facts and programs ([`host`]), GPU work
//! through cudarc with a CPU path ([`gpu`]), and `llm.chat` on an OpenAI-compatible server
//! ([`llm`], for LLM-dialect nodes).
//!
//! Both node CLIs call [`builtin_executors`] and put the result in their node's config; the
//! heartbeat's numbers come from [`host::sample_stats`] and [`gpu::gpu_inventory`]. Everything
//! here builds and runs on a machine with no CUDA: the GPU probe looks for the libraries with
//! dlopen before cudarc is touched, and each GPU command then takes its CPU path or answers
//! `platform_unsupported`. docs/executors.md documents every command.

use std::sync::Arc;
use std::time::Duration;

use nodelink_core::node::executor::{command_error, ExecutorSet};
use nodelink_core::wire::dto::{CommandError, ErrorCode};

pub mod gpu;
pub mod host;
pub mod llm;
pub mod tensor;

pub use gpu::gpu_inventory;
pub use host::sample_stats;

/// What the operator allows beyond the always-on built-ins.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BuiltinOptions {
    /// Registers `system.execute` (scope `system.execute`); off unless the operator passes
    /// `--allow system.execute`.
    pub allow_system_execute: bool,
    /// Registers `kernel.run` (scope `gpu.kernel`): arbitrary CUDA C from the gateway.
    pub allow_kernel_run: bool,
    /// The `retryAfterMs` of `busy` when every GPU lane is taken.
    pub busy_retry_after: Duration,
}

impl Default for BuiltinOptions {
    fn default() -> Self {
        Self {
            allow_system_execute: false,
            allow_kernel_run: false,
            busy_retry_after: Duration::from_secs(1),
        }
    }
}

/// The built-in executors a node offers: `system.info`, `system.stats`, `gpu.info`,
/// `tensor.matmul`, `tensor.reduce`, `tensor.saxpy`, and, when allowed, `system.execute` and
/// `kernel.run`. The GPU commands share one set of lanes, one per GPU the probe found.
pub fn builtin_executors(options: &BuiltinOptions) -> ExecutorSet {
    builtin_executors_on(options, gpu::Gpu::detect(options.busy_retry_after))
}

/// [`builtin_executors`] on the given GPUs (`gpu::Gpu::none` for a CPU-only set).
pub fn builtin_executors_on(options: &BuiltinOptions, gpu: Arc<gpu::Gpu>) -> ExecutorSet {
    let mut set = ExecutorSet::new();
    set.register(host::SystemInfo)
        .register(host::SystemStats)
        .register(gpu::GpuInfoCommand::new(Arc::clone(&gpu)))
        .register(tensor::TensorMatmul::new(Arc::clone(&gpu)))
        .register(tensor::TensorReduce::new(Arc::clone(&gpu)))
        .register(tensor::TensorSaxpy::new(Arc::clone(&gpu)));
    if options.allow_system_execute {
        set.register(host::SystemExecute);
    }
    if options.allow_kernel_run {
        set.register(gpu::KernelRun::new(gpu));
    }
    set
}

/// What an executor returns once its context says stop (the node has already answered).
pub(crate) fn cancelled() -> CommandError {
    command_error(ErrorCode::Cancelled, "the command was cancelled")
}
