//! The `nodelink` command line; everything lives in [`nodelink::cli`].

fn main() -> std::process::ExitCode {
    nodelink::cli::main()
}
