//! What the bench reads about a process from /proc, and the file-descriptor limit (Linux).

use std::time::Duration;

/// Resident memory and CPU time of one process at one instant.
#[derive(Clone, Copy, Debug)]
pub struct Sample {
    /// VmRSS, KiB.
    pub rss_kib: u64,
    /// utime + stime.
    pub cpu: Duration,
}

/// Reads `pid`'s VmRSS and CPU time; `None` when the process is gone or /proc is missing.
pub fn sample(pid: u32) -> Option<Sample> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let rss_kib = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())?;
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces) start after the last ')'; utime and
    // stime are fields 14 and 15 of stat, so 11 and 12 after the name and the state.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|v| v.parse::<u64>().ok());
    let ticks = ticks(11)? + ticks(12)?;
    Some(Sample {
        rss_kib,
        cpu: tick() * u32::try_from(ticks).unwrap_or(u32::MAX),
    })
}

/// The kernel's CPU accounting tick (`_SC_CLK_TCK`, 100 Hz nearly everywhere).
pub fn tick() -> Duration {
    let hz = rustix::param::clock_ticks_per_second().max(1);
    Duration::from_nanos(1_000_000_000 / hz)
}

/// Raises the soft RLIMIT_NOFILE to the hard limit (children inherit it); returns the soft
/// limit now in force (`u64::MAX`: unlimited).
pub fn raise_nofile() -> u64 {
    use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
    let limit = getrlimit(Resource::Nofile);
    if limit.current < limit.maximum || (limit.current.is_some() && limit.maximum.is_none()) {
        let raised = Rlimit {
            current: limit.maximum,
            maximum: limit.maximum,
        };
        if setrlimit(Resource::Nofile, raised).is_ok() {
            return limit.maximum.unwrap_or(u64::MAX);
        }
    }
    limit.current.unwrap_or(u64::MAX)
}
