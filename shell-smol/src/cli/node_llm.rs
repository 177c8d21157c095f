//! `nodelink node run --dialect llm`: a node of the LLM node dialect (docs/llm.md). It dials
//! `--gateway ws://host:port/ws` with its token, model, name and concurrency, and runs each task
//! as `llm.chat` on an OpenAI-compatible backend (vLLM, llama.cpp's server, Ollama).

use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use nodelink_core::node::executor::ExecutorSet;
use nodelink_core::node::{Dialect, Identity, NodeConfig};
use nodelink_core::wire::llm::ConnectParams;
use nodelink_worker_cuda::llm::{OpenAiChat, OpenAiConfig};

use super::node::{host_name, print_event, runtime_config, RunArgs};
use super::CliResult;
use crate::node::{spawn_node, NodeExit};

/// The flags of `--dialect llm` (ignored by the hub dialect).
#[derive(Debug, Args)]
pub struct LlmArgs {
    /// LLM dialect: the token the server accepts (its shared token, or this node's token from
    /// pairing).
    #[arg(long, env = "NODELINK_LLM_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// LLM dialect: the model this node serves; the server routes tasks by it.
    #[arg(long)]
    pub model: Option<String>,
    /// LLM dialect: this node's name, unique per model [default: the host name].
    #[arg(long)]
    pub name: Option<String>,
    /// LLM dialect: how many tasks run at once.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_concurrency: u32,
    /// LLM dialect: the OpenAI-compatible API base the tasks run on
    /// (POST {backend}/chat/completions), e.g. http://127.0.0.1:8000/v1.
    #[arg(long, value_name = "URL")]
    pub backend: Option<String>,
    /// LLM dialect: the model name the backend serves [default: --model].
    #[arg(long)]
    pub backend_model: Option<String>,
    /// LLM dialect: the backend's API key, sent as a bearer token.
    #[arg(long, env = "NODELINK_BACKEND_API_KEY", hide_env_values = true)]
    pub backend_api_key: Option<String>,
    /// LLM dialect: the most tokens asked of the backend per task, whatever the task says.
    #[arg(long)]
    pub max_tokens_cap: Option<u32>,
    /// LLM dialect: how long the backend may send nothing before a task fails.
    #[arg(long, value_name = "DURATION", value_parser = super::node::parse_duration, default_value = "120s")]
    pub backend_idle_timeout: Duration,
}

/// Runs the node until it is stopped (Ctrl-C ends the process).
pub(super) fn run_llm(args: RunArgs) -> CliResult {
    let llm = &args.llm;
    let missing = |flag: &str| format!("--dialect llm needs {flag}");
    let gateway = args
        .gateway
        .clone()
        .ok_or_else(|| missing("--gateway ws://host:port/ws"))?;
    let token = llm.token.clone().ok_or_else(|| missing("--token"))?;
    let model = llm.model.clone().ok_or_else(|| missing("--model"))?;
    let backend = llm
        .backend
        .clone()
        .ok_or_else(|| missing("--backend http://host:port/v1"))?;
    let name = llm
        .name
        .clone()
        .or_else(host_name)
        .ok_or_else(|| missing("--name (no host name found)"))?;
    let mut backend_config = OpenAiConfig::new(
        backend.clone(),
        llm.backend_model.clone().unwrap_or_else(|| model.clone()),
    );
    backend_config.api_key = llm.backend_api_key.clone();
    backend_config.max_tokens_cap = llm.max_tokens_cap;
    backend_config.idle_timeout = llm.backend_idle_timeout;
    let chat = OpenAiChat::new(backend_config)?;
    let mut executors = ExecutorSet::new();
    executors.register(chat);

    let params = ConnectParams {
        token,
        model: model.clone(),
        max_concurrency: llm.max_concurrency,
        name: name.clone(),
    };
    let base_url = gateway
        .replacen("ws://", "http://", 1)
        .replacen("wss://", "https://", 1);
    let dialect = Dialect::Llm {
        server_url: gateway.clone(),
        params,
    };
    let mut node = NodeConfig::new(base_url, dialect, Identity::Unpaired { node_id: None });
    node.platform = std::env::consts::OS.to_owned();
    node.version = env!("CARGO_PKG_VERSION").to_owned();
    node.limits.slots = usize::try_from(llm.max_concurrency).unwrap_or(usize::MAX);
    let config = runtime_config(node, &args.common);
    let handle = spawn_node(config, executors)?;
    println!(
        "LLM node {name} serving {model} -> {gateway} (backend {backend}, max concurrency {})",
        llm.max_concurrency
    );
    while let Ok(event) = handle.events().recv_blocking() {
        print_event(&event);
    }
    match handle.wait() {
        NodeExit::Stopped => Ok(ExitCode::SUCCESS),
        other => Err(other.to_string().into()),
    }
}
