//! Re-create the corpus with the installed qemu-img and compare it with the
//! committed captures, field by field after parsing, leaving out the fields
//! that vary from run to run (allocation, snapshot dates, LUKS iteration
//! counts). Runs only where the installed qemu-img is the version the
//! corpus was made with; elsewhere it says why it skipped.
#![cfg(test)]

mod support;

use serde_json::Value;
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
    let Some((_tmp, fresh, _images)) = fresh_corpus() else {
        return;
    };
    let committed = corpus().join("10.0.2");
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
