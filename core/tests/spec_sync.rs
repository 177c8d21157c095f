//! docs/protocol.md is normative and shows every message with its exact bytes; the insta
//! snapshots pin the same bytes. This test ties the two: every snapshot body must appear verbatim
//! in the spec, so neither can change without the other.

use std::fs;
use std::path::Path;

#[test]
fn every_snapshot_body_appears_verbatim_in_the_spec() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let spec =
        fs::read_to_string(root.join("../docs/protocol.md")).expect("docs/protocol.md exists");
    let mut checked = 0;
    let mut missing = Vec::new();
    for path in snapshot_files(&root.join("tests")) {
        if path.extension().is_none_or(|ext| ext != "snap") {
            continue;
        }
        // Transcripts of simulated scenarios (core/tests/node.rs) pin behaviour over time, not
        // the bytes of a message: the spec states their rules, not their lines.
        if path
            .file_name()
            .is_some_and(|name| name.to_string_lossy().starts_with("node__"))
        {
            continue;
        }
        let snap = fs::read_to_string(&path).expect("readable snapshot");
        let body = snapshot_body(&snap);
        checked += 1;
        if !spec.contains(body) {
            missing.push(
                path.file_name()
                    .expect("file name")
                    .to_string_lossy()
                    .into_owned(),
            );
        }
    }
    assert!(checked > 0, "no snapshots found");
    assert!(
        missing.is_empty(),
        "{} of {checked} snapshots are not shown verbatim in docs/protocol.md:\n  {}",
        missing.len(),
        missing.join("\n  ")
    );
}

/// Every `.snap` file under `tests/snapshots/` and under the `snapshots/` folder of a test's
/// submodule directory (`tests/<test>/snapshots/`, where insta puts the snapshots of a test split
/// into files).
fn snapshot_files(tests: &Path) -> Vec<std::path::PathBuf> {
    let mut dirs = vec![tests.join("snapshots")];
    for entry in fs::read_dir(tests).expect("the tests directory exists") {
        let path = entry.expect("readable directory entry").path();
        if path.is_dir() && path.join("snapshots").is_dir() && !path.ends_with("snapshots") {
            dirs.push(path.join("snapshots"));
        }
    }
    let mut files = Vec::new();
    for dir in dirs {
        for entry in fs::read_dir(&dir).expect("a snapshot directory") {
            files.push(entry.expect("readable directory entry").path());
        }
    }
    files.sort();
    files
}

/// An insta `.snap` file is a `---`-delimited YAML header followed by the body.
fn snapshot_body(snap: &str) -> &str {
    let after_open = snap.strip_prefix("---\n").unwrap_or(snap);
    let body = after_open
        .split_once("\n---\n")
        .map_or(after_open, |(_, body)| body);
    body.trim_end_matches('\n')
}
