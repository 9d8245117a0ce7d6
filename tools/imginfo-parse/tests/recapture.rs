//! Re-create the corpus with the installed qemu-img and compare it with the
//! committed captures, field by field after parsing, leaving out the fields
//! that vary from run to run (allocation, snapshot dates, LUKS iteration
//! counts). Runs only where the installed qemu-img is the version the
//! corpus was made with; elsewhere it says why it skipped.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stderr
)]

mod support;

use serde_json::Value;
use std::process::Command;
use support::*;

const VOLATILE: &[&str] = &[
    "actual_size",
    "approximate",
    "date",
    "date_sec",
    "date_nsec",
    "date_local",
    "iters",
    "master_key_iters",
];

fn strip(v: &mut Value) {
    match v {
        Value::Object(m) => {
            for k in VOLATILE {
                m.shift_remove(*k);
            }
            m.values_mut().for_each(strip);
        }
        Value::Array(a) => a.iter_mut().for_each(strip),
        _ => {}
    }
}

#[test]
fn fresh_captures_match_the_committed_corpus() {
    if qemu_img().is_none() {
        return;
    }
    let committed = corpus().join("10.0.2");
    let want = std::fs::read_to_string(committed.join("VERSION")).unwrap();
    let out = Command::new("qemu-img").arg("--version").output().unwrap();
    let have = String::from_utf8_lossy(&out.stdout)
        .lines()
        .next()
        .unwrap_or("")
        .to_owned();
    if have.trim() != want.trim() {
        eprintln!(
            "skipping re-capture: installed {:?}, corpus made with {:?}; \
             other versions print other layouts (the committed captures are still tested)",
            have.trim(),
            want.trim()
        );
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let fresh = tmp.path().join("out");
    let script = corpus().join("make-fixtures.sh");
    let run_script = Command::new("bash")
        .arg(&script)
        .arg(&fresh)
        .output()
        .unwrap();
    if run_script.status.code() == Some(2) && std::env::var_os("CI").is_none() {
        eprintln!(
            "skipping re-capture: {}",
            String::from_utf8_lossy(&run_script.stderr).trim()
        );
        return;
    }
    assert!(
        run_script.status.success(),
        "make-fixtures.sh failed: {}",
        String::from_utf8_lossy(&run_script.stderr)
    );
    assert_eq!(
        std::fs::read_to_string(fresh.join("MANIFEST.tsv")).unwrap(),
        std::fs::read_to_string(committed.join("MANIFEST.tsv")).unwrap(),
        "the same captures with the same argv and exit statuses"
    );
    let mut compared = 0;
    for suffix in [".json", ".human.txt"] {
        for old in captures(&committed, suffix) {
            let name = old.file_name().unwrap();
            let (mut a, mut b) = (run_file(&old), run_file(&fresh.join(name)));
            assert_eq!(a.code, b.code, "{name:?}");
            assert_eq!(a.records.len(), b.records.len(), "{name:?}");
            for (x, y) in a.records.iter_mut().zip(b.records.iter_mut()) {
                strip(x);
                strip(y);
                assert_eq!(x, y, "{name:?} differs from a fresh capture");
            }
            compared += 1;
        }
    }
    assert!(compared >= 130, "{compared}");
}
