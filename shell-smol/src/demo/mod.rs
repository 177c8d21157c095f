//! `nodelink demo`: a gateway and three nodes in one process, on loopback, with no set-up.
//!
//! The nodes go through the real pairing flow (pending -> the operator approves the code ->
//! token), connect, heartbeat, and run: `system.info`, a 3 MiB result that travels in parts, a
//! refusal for a missing scope, a `busy` that the gateway retries, a cancellation, and a revoke.
//! Every outcome is CHECKED: the demo exits non-zero when one is not what it should be, so it
//! doubles as an end-to-end test (`tests/tests/demo.rs`).

use std::process::ExitCode;

mod executors;
mod report;
mod scenario;

pub use executors::{blob, demo_executors, register_demo_executors, DemoCounters, BLOB_BYTES};
pub use report::{Check, CommandRow, Report};
pub use scenario::{run_demo, shortened};

/// How the demo prints.
#[derive(Clone, Debug, Default)]
pub struct DemoOptions {
    pub json: bool,
}

/// Runs the demo and prints its report; exit status 0 only when every check passed.
pub fn run(options: &DemoOptions) -> crate::cli::CliResult {
    let outcome = run_demo();
    let shortened = shortened();
    let report = match outcome {
        Ok(report) => report,
        Err((report, error)) => {
            report.check("demo ran to the end", false, error);
            report
        }
    };
    if options.json {
        println!("{}", report.json(&shortened));
    } else {
        print!("{}", report.text(&shortened));
    }
    if report.all_passed() {
        Ok(ExitCode::SUCCESS)
    } else {
        Ok(ExitCode::FAILURE)
    }
}
