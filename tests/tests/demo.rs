//! `nodelink demo` runs in the suite: every outcome it checks (pairing, heartbeats, system.info,
//! a 3 MiB result in parts, a scope refusal, a retried busy, a cancellation, a revoke) must hold.

use std::time::Duration;

#[test]
fn the_demo_passes_every_check() {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(nodelink::demo::run_demo());
    });
    let report = match rx.recv_timeout(Duration::from_secs(40)) {
        Ok(Ok(report)) => report,
        Ok(Err((report, error))) => {
            panic!("the demo stopped early: {error}\n{}", report.text(&[]))
        }
        Err(_) => panic!("the demo did not finish within 40 s"),
    };
    assert!(
        report.all_passed(),
        "failed checks: {:?}\n{}",
        report.failed(),
        report.text(&[])
    );
    let json = report.json(&[]);
    assert_eq!(json["commands"].as_array().map(Vec::len), Some(5), "{json}");
}
