//! The one-line summary of `make test-upstream`: each differential test
//! records its counts here, and `tests/upstream/summary.py` prints
//!
//! ```text
//! upstream differential: nova A/B, glance C/D, oslo E/F, cinder G/H agree (K documented differences)
//! ```
//!
//! For each component, of the B cases run, A agree with the upstream code:
//! the same answer, or a difference a row of its `differences-*.json`
//! table documents; K counts the documented ones over all components. A
//! test fails on any other difference, so A is B in every passing run.

use std::path::PathBuf;

/// Where the counts go: `$UPSTREAM_SUMMARY_DIR`, or the workspace's
/// `target/upstream-summary`.
pub fn dir() -> PathBuf {
    std::env::var_os("UPSTREAM_SUMMARY_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| crate::workspace().join("target/upstream-summary"))
}

/// Record one component's counts (`nova`, `glance`, `oslo`, `cinder`):
/// cases that agree exactly, cases run, cases that differ as documented.
pub fn record(component: &str, agree: usize, total: usize, documented: usize) {
    let d = dir();
    let body = serde_json::json!({
        "component": component,
        "agree": agree,
        "total": total,
        "documented": documented,
    });
    // A summary that cannot be written is seen as a missing count.
    let _ = std::fs::create_dir_all(&d);
    let _ = std::fs::write(d.join(format!("{component}.json")), format!("{body}\n"));
}
