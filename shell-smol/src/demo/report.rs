//! What the demo saw: a timeline, one row per command, one line per check; printed as text or
//! as JSON (`--json`).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

/// The demo's record, shared by the orchestrator and the node event threads.
#[derive(Clone)]
pub struct Report {
    start: Instant,
    inner: Arc<Mutex<Inner>>,
}

#[derive(Default)]
struct Inner {
    timeline: Vec<(Duration, String, String)>,
    commands: Vec<CommandRow>,
    checks: Vec<Check>,
}

/// One command the demo sent.
#[derive(Clone, Debug)]
pub struct CommandRow {
    pub command: String,
    pub node: String,
    /// `ok`, or the error code.
    pub outcome: String,
    pub latency: Duration,
    pub note: String,
}

/// One expectation and whether it held.
#[derive(Clone, Debug)]
pub struct Check {
    pub name: String,
    pub ok: bool,
    pub detail: String,
}

impl Report {
    pub fn new(start: Instant) -> Report {
        Report {
            start,
            inner: Arc::default(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn elapsed(&self) -> Duration {
        self.start.elapsed()
    }

    /// A timeline line: `who` did or saw `what`, now.
    pub fn log(&self, who: &str, what: impl Into<String>) {
        let at = self.start.elapsed();
        self.lock().timeline.push((at, who.to_owned(), what.into()));
    }

    pub fn command(&self, row: CommandRow) {
        self.lock().commands.push(row);
    }

    /// Records a check; returns `ok` so callers can stop early.
    pub fn check(&self, name: &str, ok: bool, detail: impl Into<String>) -> bool {
        let detail = detail.into();
        self.log(
            "check",
            format!("{} {name}: {detail}", if ok { "PASS" } else { "FAIL" }),
        );
        self.lock().checks.push(Check {
            name: name.to_owned(),
            ok,
            detail,
        });
        ok
    }

    pub fn all_passed(&self) -> bool {
        let inner = self.lock();
        !inner.checks.is_empty() && inner.checks.iter().all(|c| c.ok)
    }

    pub fn failed(&self) -> Vec<Check> {
        self.lock()
            .checks
            .iter()
            .filter(|c| !c.ok)
            .cloned()
            .collect()
    }

    /// The timeline, the command table and the checks, for people.
    pub fn text(&self, shortened: &[String]) -> String {
        let inner = self.lock();
        let mut timeline = inner.timeline.clone();
        timeline.sort_by_key(|(at, _, _)| *at);
        let mut out = String::new();
        out.push_str("nodelink demo: a gateway and three nodes on loopback\n");
        out.push_str("Timers shortened for the demo:\n");
        for line in shortened {
            out.push_str(&format!("  - {line}\n"));
        }
        out.push_str("\nTimeline\n");
        for (at, who, what) in &timeline {
            out.push_str(&format!("  {:>7.3}s  {who:<8} {what}\n", at.as_secs_f64()));
        }
        out.push_str("\nCommands\n");
        out.push_str(&format!(
            "  {:<12} {:<12} {:<16} {:>9}  {}\n",
            "command", "node", "outcome", "latency", "note"
        ));
        for row in &inner.commands {
            out.push_str(&format!(
                "  {:<12} {:<12} {:<16} {:>7}ms  {}\n",
                row.command,
                row.node,
                row.outcome,
                row.latency.as_millis(),
                row.note
            ));
        }
        let passed = inner.checks.iter().filter(|c| c.ok).count();
        out.push_str(&format!(
            "\nChecks: {passed} of {} passed\n",
            inner.checks.len()
        ));
        for check in inner.checks.iter().filter(|c| !c.ok) {
            out.push_str(&format!("  FAILED {}: {}\n", check.name, check.detail));
        }
        out
    }

    /// The same, as JSON.
    pub fn json(&self, shortened: &[String]) -> Value {
        let inner = self.lock();
        let ms = |d: &Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        json!({
            "ok": !inner.checks.is_empty() && inner.checks.iter().all(|c| c.ok),
            "durationMs": ms(&self.start.elapsed()),
            "shortenedTimers": shortened,
            "checks": inner.checks.iter().map(|c| json!({
                "name": c.name, "ok": c.ok, "detail": c.detail,
            })).collect::<Vec<_>>(),
            "commands": inner.commands.iter().map(|r| json!({
                "command": r.command, "node": r.node, "outcome": r.outcome,
                "latencyMs": ms(&r.latency), "note": r.note,
            })).collect::<Vec<_>>(),
            "timeline": inner.timeline.iter().map(|(at, who, what)| json!({
                "atMs": ms(at), "who": who, "what": what,
            })).collect::<Vec<_>>(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_failed_check_fails_the_report_and_is_listed() {
        let report = Report::new(Instant::now());
        assert!(!report.all_passed(), "no checks: nothing was shown");
        report.check("a", true, "fine");
        assert!(report.all_passed());
        report.check("b", false, "wrong");
        assert!(!report.all_passed());
        let text = report.text(&["heartbeat 1 s".into()]);
        assert!(text.contains("FAILED b: wrong"), "{text}");
        assert!(text.contains("heartbeat 1 s"), "{text}");
        assert_eq!(report.json(&[])["ok"], json!(false));
    }
}
