//! The one-line summary of `make test-upstream`: each differential test
//! records its counts here, and `tests/upstream/summary.py` prints
//!
//! ```text
//! upstream differential: nova A/B, glance C/D, oslo E/F, cinder G/H agree (K documented differences)
//! ```
//!
//! For each component: how many cases agree with the upstream code
//! exactly, and how many ran; K is the number of cases, over all
//! components, that differ only as a row of a `differences-*.json` table
//! says. A test fails on any other difference, so agreeing and documented
//! cases always add up to the total.

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
