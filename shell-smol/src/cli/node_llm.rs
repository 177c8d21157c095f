//! `nodelink node run --dialect llm`: a node of the LLM node dialect (docs/llm.md). It dials
//! `--gateway ws://host:port/ws` with its token, model, name and concurrency, and runs each task
//! as `llm.chat` on an OpenAI-compatible backend (vLLM, llama.cpp's server, Ollama).

use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use nodelink_core::node::commands::{CommandSpec, ExecuteRequest, Outcome};
use nodelink_core::node::executor::{Executor, ExecutorSet, RunContext};
use nodelink_core::node::{Dialect, Identity, NodeConfig};
use nodelink_core::wire::dto::ErrorCode;
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
    executors.register(Reported(chat));

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

/// Logs a task's failure: the dialect has no error frame (the server only sees the finished
/// frame), so the node's log is the one place a backend error shows.
struct Reported(OpenAiChat);

impl Executor for Reported {
    fn spec(&self) -> CommandSpec {
        self.0.spec()
    }

    fn run(&self, request: &ExecuteRequest, context: &dyn RunContext) -> Outcome {
        let outcome = self.0.run(request, context);
        if let Err(error) = &outcome {
            if error.code != ErrorCode::Cancelled {
                tracing::warn!(
                    task = %request.command_id,
                    code = error.code.as_str(),
                    "task failed: {}",
                    error.message
                );
            }
        }
        outcome
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::super::node::{DialectArg, NodeCommand};
    use super::super::{Cli, Command};
    use super::*;

    fn run_args(args: &[&str]) -> RunArgs {
        let mut argv = vec!["nodelink", "node", "run"];
        argv.extend_from_slice(args);
        match Cli::try_parse_from(argv).expect("the flags parse").command {
            Command::Node(NodeCommand::Run(args)) => args,
            other => panic!("not node run: {other:?}"),
        }
    }

    #[test]
    fn parses_the_llm_flags() {
        let args = run_args(&[
            "--dialect",
            "llm",
            "--gateway",
            "ws://h:1/ws",
            "--token",
            "T",
            "--model",
            "M",
            "--name",
            "N",
            "--max-concurrency",
            "3",
            "--backend",
            "http://127.0.0.1:8000/v1",
            "--backend-idle-timeout",
            "5s",
        ]);
        assert_eq!(args.dialect, DialectArg::Llm);
        assert_eq!(args.llm.max_concurrency, 3);
        assert_eq!(
            args.llm.backend.as_deref(),
            Some("http://127.0.0.1:8000/v1")
        );
        assert_eq!(args.llm.backend_idle_timeout, Duration::from_secs(5));
        assert!(Cli::try_parse_from([
            "nodelink",
            "node",
            "run",
            "--dialect",
            "llm",
            "--max-concurrency",
            "0"
        ])
        .is_err());
    }

    #[test]
    fn names_each_missing_flag_and_a_bad_backend() {
        let error = run_llm(run_args(&["--dialect", "llm", "--gateway", "ws://h:1/ws"]))
            .unwrap_err()
            .to_string();
        assert!(error.contains("--token"), "{error}");
        let error = run_llm(run_args(&[
            "--dialect",
            "llm",
            "--gateway",
            "ws://h:1/ws",
            "--token",
            "T",
            "--model",
            "M",
            "--name",
            "N",
            "--backend",
            "127.0.0.1:8000",
        ]))
        .unwrap_err()
        .to_string();
        assert!(error.contains("must be http:// or https://"), "{error}");
    }
}
