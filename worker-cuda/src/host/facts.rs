//! Host facts read straight from `/proc` (Linux) and a few libc calls, with `None` elsewhere.
//!
//! Why not `sysinfo`: the blocking shell's binary must stay <= 3 MB, and `sysinfo` brings a
//! refresh model, per-process tables and (off Linux) platform frameworks for the handful of
//! numbers a heartbeat needs. Everything here is a small text file or one syscall; a platform
//! without `/proc` gets `None` (serialized as `null`) for what it cannot read, never an error.

use std::fs;
use std::time::Duration;

/// Aggregate CPU time counters from the first line of `/proc/stat`, in clock ticks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CpuTimes {
    /// Ticks spent doing anything but idling or waiting for I/O.
    pub busy: u64,
    /// All ticks (busy + idle + iowait).
    pub total: u64,
}

impl CpuTimes {
    /// Busy share of the time between `earlier` and `self`, 0 to 100; `None` when no tick passed.
    pub fn percent_since(&self, earlier: &CpuTimes) -> Option<f64> {
        let total = self.total.checked_sub(earlier.total)?;
        let busy = self.busy.checked_sub(earlier.busy)?;
        if total == 0 {
            return None;
        }
        Some((busy as f64 * 100.0 / total as f64).clamp(0.0, 100.0))
    }
}

/// Parses the `cpu ` line of `/proc/stat`: user nice system idle iowait irq softirq steal ...
/// (guest time is already inside user/nice and is not added twice).
pub fn parse_proc_stat(text: &str) -> Option<CpuTimes> {
    let line = text.lines().find(|l| l.starts_with("cpu "))?;
    let fields: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .take(8)
        .map(|f| f.parse().ok())
        .collect::<Option<_>>()?;
    if fields.len() < 4 {
        return None;
    }
    let idle = fields[3] + fields.get(4).copied().unwrap_or(0);
    let total: u64 = fields.iter().sum();
    Some(CpuTimes {
        busy: total - idle,
        total,
    })
}

/// The host's CPU counters now.
pub fn cpu_times() -> Option<CpuTimes> {
    parse_proc_stat(&fs::read_to_string("/proc/stat").ok()?)
}

/// Host memory from `/proc/meminfo`, in MB (MiB, as the heartbeat's `memoryMb`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Memory {
    pub total_mb: u64,
    /// What new work can still get without swapping (`MemAvailable`).
    pub available_mb: u64,
    pub swap_total_mb: u64,
    pub swap_free_mb: u64,
}

impl Memory {
    /// `total - available`: what is in use, page cache that can be dropped not included.
    pub fn used_mb(&self) -> u64 {
        self.total_mb.saturating_sub(self.available_mb)
    }
}

/// Parses `/proc/meminfo` (values in kB).
pub fn parse_meminfo(text: &str) -> Option<Memory> {
    let field = |name: &str| -> Option<u64> {
        let line = text.lines().find(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with(':'))
        })?;
        let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kb / 1024)
    };
    let total_mb = field("MemTotal")?;
    // Kernels before 3.14 have no MemAvailable: free + cached is the classic estimate.
    let available_mb = field("MemAvailable")
        .or_else(|| Some(field("MemFree")? + field("Cached").unwrap_or(0)))
        .unwrap_or(0);
    Some(Memory {
        total_mb,
        available_mb,
        swap_total_mb: field("SwapTotal").unwrap_or(0),
        swap_free_mb: field("SwapFree").unwrap_or(0),
    })
}

pub fn memory() -> Option<Memory> {
    parse_meminfo(&fs::read_to_string("/proc/meminfo").ok()?)
}

/// Time since boot, from `/proc/uptime`.
pub fn uptime() -> Option<Duration> {
    let text = fs::read_to_string("/proc/uptime").ok()?;
    let seconds: f64 = text.split_whitespace().next()?.parse().ok()?;
    (seconds.is_finite() && seconds >= 0.0).then(|| Duration::from_secs_f64(seconds))
}

/// The 1, 5 and 15 minute load averages, from `/proc/loadavg`.
pub fn load_average() -> Option<[f64; 3]> {
    parse_loadavg(&fs::read_to_string("/proc/loadavg").ok()?)
}

pub fn parse_loadavg(text: &str) -> Option<[f64; 3]> {
    let mut it = text.split_whitespace().map(|f| f.parse::<f64>().ok());
    Some([it.next()??, it.next()??, it.next()??])
}

/// This process's resident set size in MB, from `VmRSS` in `/proc/self/status`; off Linux, the
/// peak RSS from getrusage (the closest portable figure).
pub fn process_rss_mb() -> Option<u64> {
    if let Ok(text) = fs::read_to_string("/proc/self/status") {
        let kb: u64 = text
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))?
            .split_whitespace()
            .next()?
            .parse()
            .ok()?;
        return Some(kb / 1024);
    }
    peak_rss_mb()
}

#[cfg(target_os = "macos")]
fn peak_rss_mb() -> Option<u64> {
    rusage().map(|u| u.ru_maxrss as u64 / (1024 * 1024)) // bytes on macOS
}

#[cfg(all(unix, not(target_os = "macos")))]
fn peak_rss_mb() -> Option<u64> {
    rusage().map(|u| u.ru_maxrss as u64 / 1024) // kB elsewhere
}

#[cfg(not(unix))]
fn peak_rss_mb() -> Option<u64> {
    None
}

#[cfg(unix)]
#[allow(unsafe_code)]
fn rusage() -> Option<libc::rusage> {
    // SAFETY: getrusage only writes into the zeroed struct we own.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
    (rc == 0).then_some(usage)
}

/// CPU time (user + system) this process has used, all threads together.
#[cfg(unix)]
pub fn process_cpu_time() -> Option<Duration> {
    let usage = rusage()?;
    let micros = |t: libc::timeval| {
        Duration::from_secs(u64::try_from(t.tv_sec).unwrap_or(0))
            + Duration::from_micros(u64::try_from(t.tv_usec).unwrap_or(0))
    };
    Some(micros(usage.ru_utime) + micros(usage.ru_stime))
}

#[cfg(not(unix))]
pub fn process_cpu_time() -> Option<Duration> {
    None
}

/// The host's name: `/proc/sys/kernel/hostname`, else `$HOSTNAME` / `%COMPUTERNAME%`.
pub fn hostname() -> Option<String> {
    let name = fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .or_else(|| std::env::var("COMPUTERNAME").ok())?;
    let name = name.trim();
    (!name.is_empty()).then(|| name.to_owned())
}

/// The kernel release (`uname -r`).
pub fn kernel_release() -> Option<String> {
    let text = fs::read_to_string("/proc/sys/kernel/osrelease").ok()?;
    Some(text.trim().to_owned()).filter(|s| !s.is_empty())
}

/// The distribution's `PRETTY_NAME` from `/etc/os-release`, e.g. "Debian GNU/Linux 13 (trixie)".
pub fn os_pretty_name() -> Option<String> {
    let text = fs::read_to_string("/etc/os-release")
        .or_else(|_| fs::read_to_string("/usr/lib/os-release"))
        .ok()?;
    parse_os_release(&text)
}

pub fn parse_os_release(text: &str) -> Option<String> {
    let value = text.lines().find_map(|l| l.strip_prefix("PRETTY_NAME="))?;
    let value = value.trim().trim_matches('"').trim_matches('\'');
    Some(value.to_owned()).filter(|s| !s.is_empty())
}

/// The first `model name` of `/proc/cpuinfo` (x86 and most ARM kernels have one).
pub fn cpu_model() -> Option<String> {
    let text = fs::read_to_string("/proc/cpuinfo").ok()?;
    text.lines()
        .find(|l| l.starts_with("model name") || l.starts_with("Model"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, v)| v.trim().to_owned())
        .filter(|s| !s.is_empty())
}

/// Logical CPUs this process may use.
pub fn logical_cpus() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_stat_counts_iowait_as_idle() {
        let text = "cpu  100 0 50 800 50 0 0 0 0 0\ncpu0 1 2 3 4\n";
        let t = parse_proc_stat(text).unwrap();
        assert_eq!(
            t,
            CpuTimes {
                busy: 150,
                total: 1000
            }
        );
        let later = CpuTimes {
            busy: 200,
            total: 1100,
        };
        assert_eq!(later.percent_since(&t), Some(50.0));
        assert_eq!(t.percent_since(&t), None);
        assert_eq!(t.percent_since(&later), None);
        assert_eq!(parse_proc_stat("cpu0 1 2 3 4\n"), None);
        assert_eq!(parse_proc_stat("cpu  1 x 3 4\n"), None);
    }

    #[test]
    fn meminfo_in_mb_with_and_without_mem_available() {
        let text = "MemTotal:       16384000 kB\nMemFree:         1024000 kB\nMemAvailable:    8192000 kB\nCached: 2048000 kB\nSwapTotal: 1024 kB\nSwapFree: 512 kB\n";
        let m = parse_meminfo(text).unwrap();
        assert_eq!(
            (m.total_mb, m.available_mb, m.used_mb()),
            (16000, 8000, 8000)
        );
        assert_eq!((m.swap_total_mb, m.swap_free_mb), (1, 0));
        let old = "MemTotal: 2048 kB\nMemFree: 1024 kB\nCached: 512 kB\n";
        assert_eq!(parse_meminfo(old).unwrap().available_mb, 1);
        assert_eq!(parse_meminfo("MemFree: 1 kB\n"), None);
    }

    #[test]
    fn loadavg_and_os_release() {
        assert_eq!(
            parse_loadavg("0.50 1.25 2.00 1/234 5678\n"),
            Some([0.5, 1.25, 2.0])
        );
        assert_eq!(parse_loadavg("0.5 x"), None);
        assert_eq!(
            parse_os_release("NAME=x\nPRETTY_NAME=\"Debian GNU/Linux 13 (trixie)\"\n").as_deref(),
            Some("Debian GNU/Linux 13 (trixie)")
        );
        assert_eq!(parse_os_release("NAME=x\n"), None);
    }
}
