//! The gateway server's benchmark (issue 6): a gateway in a child process (this binary again,
//! in "gateway" mode, so /proc shows its RSS and CPU alone) and simulated nodes here, raw
//! WebSocket clients speaking the JSON hub protocol with the core's codecs. Linux only (/proc).
//!
//! 1. `idle`: 10,000 connected, authenticated nodes heartbeating every 30 s: gateway RSS per
//!    connection, (RSS with N - RSS with 0) / N, and gateway CPU at that rate.
//! 2. `dispatch`: operator API -> gateway -> node -> result -> caller with 1,000 nodes: p50/p99
//!    with one caller, and commands/s with many concurrent callers.
//! 3. `stream`: a 100 MiB result sent in parts, as a ratio of raw loopback TCP throughput
//!    measured in the same run, round by round.
//!
//! `cargo bench -p nodelink --bench gateway_server [-- --only idle|dispatch|stream]`;
//! `--quick` (and `cargo test -p nodelink --bench gateway_server`, which passes no `--bench`)
//! runs small sizes in a few seconds. `NODELINK_BENCH_NODES`, `NODELINK_BENCH_SECS` (the CPU
//! window) and `NODELINK_BENCH_HEARTBEAT_MS` override case 1; `NODELINK_BENCH_WINDOW` (parts
//! in flight, default 4 as in the node runtime) case 3, and `NODELINK_BENCH_OUTBOUND_QUEUE` the
//! gateway's per-connection outbound queue (experiments).

/// The modules live in `benches/gateway_server/` (an inline module, since a crate root's
/// `mod x;` would look next to it).
mod gateway_server {
    pub mod child;
    pub mod dispatch;
    pub mod fleet;
    pub mod idle;
    pub mod node;
    pub mod procfs;
    pub mod stream;
}

use gateway_server::{child, dispatch, idle, procfs, stream};

use std::time::Duration;

use nodelink_core::node::hub::DEFAULT_RESULTS_IN_FLIGHT;

/// Issue 6's targets for case 1.
const RSS_TARGET: f64 = 16.0 * 1024.0;
const RSS_GOAL: f64 = 8.0 * 1024.0;

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1e3)
}

fn main() {
    if child::run_if_child() {
        return;
    }
    let args: Vec<String> = std::env::args().collect();
    let quick = args.iter().any(|a| a == "--quick") || !args.iter().any(|a| a == "--bench");
    let only = args
        .iter()
        .position(|a| a == "--only")
        .and_then(|i| args.get(i + 1))
        .cloned();
    let runs = |case: &str| only.as_deref().is_none_or(|o| o == case);
    let nofile = procfs::raise_nofile();
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut rows: Rows = Vec::new();
    let mut failed = Vec::new();

    if runs("idle") {
        idle_case(quick, nofile, threads, &mut rows, &mut failed);
    }
    if runs("dispatch") {
        dispatch_case(quick, threads, &mut rows, &mut failed);
    }
    if runs("stream") {
        stream_case(quick, &mut rows, &mut failed);
    }

    println!();
    println!("{:<48} {:>18} {:>10}  verdict", "figure", "value", "target");
    for [figure, value, target, verdict] in &rows {
        println!("{figure:<48} {value:>18} {target:>10}  {verdict}");
    }
    println!(
        "({} cores, RLIMIT_NOFILE {nofile}, {}){}",
        threads,
        if cfg!(debug_assertions) {
            "debug build"
        } else {
            "release build"
        },
        if quick { " [quick]" } else { "" }
    );
    if !failed.is_empty() {
        for f in &failed {
            eprintln!("FAILED {f}");
        }
        std::process::exit(1);
    }
}

/// The table: figure, value, target, verdict.
type Rows = Vec<[String; 4]>;

/// Case 1: prints its line, adds its rows.
fn idle_case(quick: bool, nofile: u64, threads: usize, rows: &mut Rows, failed: &mut Vec<String>) {
    let params = idle::IdleParams {
        nodes: env_u64("NODELINK_BENCH_NODES", if quick { 200 } else { 10_000 }) as usize,
        heartbeat: Duration::from_millis(env_u64(
            "NODELINK_BENCH_HEARTBEAT_MS",
            if quick { 1_000 } else { 30_000 },
        )),
        window: Duration::from_secs(env_u64("NODELINK_BENCH_SECS", if quick { 2 } else { 30 })),
        client_threads: threads,
    };
    if params.nodes + 64 > nofile as usize {
        eprintln!(
            "idle: RLIMIT_NOFILE is {nofile}, below the {} sockets needed",
            params.nodes + 64
        );
    }
    match idle::run(&params) {
        Ok(f) => {
            println!(
                "idle: {} nodes connected in {:.1} s; gateway RSS {} KiB empty, {} KiB connected, \
                 {} KiB after {:.0} s heartbeating ({} heartbeats every {:?}); CPU {:?}",
                f.nodes,
                f.connect_time.as_secs_f64(),
                f.rss_empty_kib,
                f.rss_connected_kib,
                f.rss_end_kib,
                f.window.as_secs_f64(),
                f.heartbeats,
                params.heartbeat,
                f.cpu
            );
            let per = f.bytes_per_connection();
            // A few hundred connections say nothing about the per-connection cost: the
            // executor's and allocator's fixed costs dominate.
            let verdict = match per {
                _ if quick => "none (quick run)",
                p if p <= RSS_GOAL => "met (goal met)",
                p if p <= RSS_TARGET => "met (goal 8 KiB missed)",
                _ => "MISSED",
            };
            rows.push([
                format!("RSS per connection, {} nodes heartbeating", f.nodes),
                format!("{:.1} KiB", per / 1024.0),
                "<= 16 KiB".into(),
                verdict.into(),
            ]);
            rows.push([
                "  (the same right after connecting)".into(),
                format!("{:.1} KiB", f.bytes_per_connection_at_connect() / 1024.0),
                String::new(),
                String::new(),
            ]);
            rows.push([
                format!("gateway CPU, heartbeat every {:?}", params.heartbeat),
                format!("{:.2} % of a core", f.cpu_percent()),
                "report".into(),
                "reported".into(),
            ]);
            rows.push([
                "  per heartbeat (+ its keep-alive Ping)".into(),
                format!("{:.0} us", f.cpu_per_heartbeat_us()),
                String::new(),
                format!("tick {:?}", procfs::tick()),
            ]);
        }
        Err(e) => failed.push(format!("idle: {e}")),
    }
}

/// Case 2: prints its lines, adds its rows.
fn dispatch_case(quick: bool, threads: usize, rows: &mut Rows, failed: &mut Vec<String>) {
    let params = dispatch::DispatchParams {
        nodes: if quick { 50 } else { 1_000 },
        sequential: if quick { 50 } else { 1_000 },
        callers: if quick { vec![8] } else { vec![16, 64] },
        saturation: Duration::from_secs(if quick { 1 } else { 10 }),
        client_threads: threads,
    };
    match dispatch::run(&params) {
        Ok(f) => {
            let seq = &f.sequential;
            println!(
                "dispatch: {} nodes; one caller: {} commands, p50 {}, p99 {}",
                f.nodes,
                seq.latencies.len(),
                ms(seq.percentile(50.0)),
                ms(seq.percentile(99.0)),
            );
            for p in [50.0, 99.0] {
                rows.push([
                    format!("dispatch round trip p{p:.0}, one caller"),
                    ms(seq.percentile(p)),
                    "report".into(),
                    "reported".into(),
                ]);
            }
            for (callers, sat) in &f.saturated {
                println!(
                    "dispatch: {callers} callers: {} commands in {:.1} s, p50 {}, p99 {}",
                    sat.latencies.len(),
                    sat.elapsed.as_secs_f64(),
                    ms(sat.percentile(50.0)),
                    ms(sat.percentile(99.0)),
                );
                rows.push([
                    format!("commands/s, {callers} callers, {} nodes", f.nodes),
                    format!("{:.0}", sat.per_second()),
                    "report".into(),
                    "reported".into(),
                ]);
                for p in [50.0, 99.0] {
                    rows.push([
                        format!("  round trip p{p:.0}, {callers} callers"),
                        ms(sat.percentile(p)),
                        String::new(),
                        String::new(),
                    ]);
                }
            }
        }
        Err(e) => failed.push(format!("dispatch: {e}")),
    }
}

/// Case 3: prints its lines, adds its rows.
fn stream_case(quick: bool, rows: &mut Rows, failed: &mut Vec<String>) {
    let params = stream::StreamParams {
        size: if quick { 2 << 20 } else { 100 << 20 },
        rounds: if quick { 1 } else { 3 },
        window: env_u64("NODELINK_BENCH_WINDOW", DEFAULT_RESULTS_IN_FLIGHT as u64) as usize,
    };
    match stream::run(&params) {
        Ok(f) => {
            for (i, r) in f.rounds.iter().enumerate() {
                println!(
                    "stream round {i}: {} MiB in {} parts; raw TCP {}, gateway {} \
                     (split + encode before it {}), operator GET of the result {}",
                    f.size >> 20,
                    r.parts,
                    ms(r.tcp),
                    ms(r.gateway),
                    ms(r.prepare),
                    ms(r.fetch)
                );
            }
            rows.push([
                format!("{} MiB result in parts, gateway", f.size >> 20),
                format!("{:.0} MiB/s", f.gateway_mib_s()),
                String::new(),
                String::new(),
            ]);
            rows.push([
                "  raw loopback TCP, same run".into(),
                format!("{:.0} MiB/s", f.tcp_mib_s()),
                String::new(),
                String::new(),
            ]);
            rows.push([
                "  ratio gateway / TCP (median of rounds)".into(),
                format!("{:.3}", f.ratio()),
                "report".into(),
                "reported".into(),
            ]);
        }
        Err(e) => failed.push(format!("stream: {e}")),
    }
}
