//! The native probe against qemu-img: for every image the fixture script
//! makes, `imginfo-parse FILE` and `imginfo-parse --qemu FILE` agree on the
//! differential set of fields. Runs where the installed qemu-img is the
//! version the corpus was made with (other versions print other things);
//! elsewhere it says why it skipped.
#![cfg(test)]

mod support;

use serde_json::Value;
use std::collections::BTreeSet;
use support::*;

/// Deliberate differences, also listed in the man page: (case, field, why).
const DELIBERATE: &[(&str, &str, &str)] = &[
    // qemu opens each sparse extent file to read its grain size; the
    // native reader never opens another file.
    (
        "vmdk-twoGbMaxExtentSparse",
        "cluster_size",
        "read from the extent files",
    ),
    (
        "vmdk-twoGbMaxExtentSparse",
        "format_specific_keys",
        "extents' cluster_size, compressed",
    ),
    (
        "vmdk-twoGbMaxExtentSparse-5g",
        "cluster_size",
        "read from the extent files",
    ),
    (
        "vmdk-twoGbMaxExtentSparse-5g",
        "format_specific_keys",
        "extents' cluster_size, compressed",
    ),
];

/// Where the `--check` verdicts differ between the sources, and why: the
/// native probe sees more than qemu-img's JSON says.
const VERDICT_DIFFERS: &[(&str, &str)] = &[(
    "polyglot-iso-qcow2",
    "native sees the ISO under the qcow2 header: multiple_formats",
)];

fn failed_checks(rec: &Value) -> Vec<String> {
    rec["check"]["failures"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|f| f["check"].as_str().unwrap_or("").to_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// Keys of format_specific data, recursively (list items merged), as
/// dotted paths.
fn key_paths(v: &Value, prefix: &str, out: &mut BTreeSet<String>) {
    match v {
        Value::Object(m) => {
            for (k, v) in m {
                let p = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                out.insert(p.clone());
                key_paths(v, &p, out);
            }
        }
        Value::Array(a) => a
            .iter()
            .for_each(|x| key_paths(x, &format!("{prefix}[]"), out)),
        _ => {}
    }
}

fn field(info: &Value, k: &str) -> Value {
    match k {
        "snapshot_count" => info
            .get("snapshots")
            .and_then(Value::as_array)
            .map_or(0, Vec::len)
            .into(),
        "format_specific_keys" => {
            let mut s = BTreeSet::new();
            if let Some(fs) = info.get("format_specific") {
                key_paths(fs, "", &mut s);
            }
            Value::from(s.into_iter().collect::<Vec<_>>())
        }
        _ => info.get(k).cloned().unwrap_or(Value::Null),
    }
}

const FIELDS: &[&str] = &[
    "format",
    "virtual_size",
    "cluster_size",
    "encrypted",
    "dirty_flag",
    "backing_filename",
    "full_backing_filename",
    "backing_filename_format",
    "snapshot_count",
    "format_specific_keys",
];

#[test]
fn native_probe_agrees_with_qemu_img() {
    let Some((_tmp, _caps, images)) = fresh_corpus() else {
        return;
    };
    let committed = corpus().join("10.0.2");
    let manifest = std::fs::read_to_string(committed.join("MANIFEST.tsv")).unwrap();
    let mut compared = 0;
    let mut diffs = Vec::new();
    for line in manifest.lines() {
        let cols: Vec<&str> = line.split('\t').collect();
        let (file, status, argv) = (cols[0], cols[1], cols[2]);
        // One image per case: the single-image JSON captures that worked.
        if !file.ends_with(".json") || file.contains(".chain.") || status != "0" {
            continue;
        }
        let args: Vec<&str> = argv
            .split(' ')
            .skip(2)
            .filter(|a| *a != "--output=json")
            .collect();
        let image = *args.last().unwrap();
        if image.starts_with("json:") {
            continue; // a qemu protocol specification, not a file
        }
        let case = file.trim_end_matches(".json");
        let mut native_args: Vec<&str> = args.clone();
        native_args.insert(0, "-q");
        native_args.insert(1, "--check");
        native_args.insert(2, "--volume-size=1G");
        let mut qemu_args = native_args.clone();
        qemu_args.insert(0, "--qemu");
        let n = run_in(Some(&images), &native_args, &[], b"");
        let q = run_in(Some(&images), &qemu_args, &[], b"");
        assert!(q.code <= 1, "{case}: qemu-img: {}", q.stdout);
        let (vn, vq) = (failed_checks(&n.records[0]), failed_checks(&q.records[0]));
        let listed = VERDICT_DIFFERS.iter().any(|(c, _)| *c == case);
        if vn != vq && !listed {
            diffs.push(format!("{case}: --check: native {vn:?} vs qemu-img {vq:?}"));
        }
        // No silent drift: a listed difference that is gone is unlisted.
        if vn == vq && listed {
            diffs.push(format!(
                "{case}: listed in VERDICT_DIFFERS but now agrees: {vn:?}"
            ));
        }
        if n.code > 1 {
            diffs.push(format!("{case}: native failed: {}", n.stdout.trim()));
            continue;
        }
        assert_eq!(n.records[0]["info"]["source"], "native");
        for k in FIELDS {
            let (a, b) = (
                field(&n.records[0]["info"], k),
                field(&q.records[0]["info"], k),
            );
            if a != b && !DELIBERATE.iter().any(|(c, f, _)| *c == case && f == k) {
                diffs.push(format!("{case}: {k}: native {a} vs qemu-img {b}"));
            }
        }
        compared += 1;
    }
    assert!(
        diffs.is_empty(),
        "{} differences:\n{}",
        diffs.len(),
        diffs.join("\n")
    );
    assert!(compared >= 55, "{compared}");
}
