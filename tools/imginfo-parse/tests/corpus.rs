//! The qemu-img 10.0.2 corpus (tests/fixtures/qemu): every capture parses,
//! JSON and human captures of the same image agree, and the hand-written
//! old-generation captures give the values worked out by hand.
#![cfg(test)]

mod support;

use serde_json::Value;
use std::path::Path;
use support::*;

fn v10() -> std::path::PathBuf {
    corpus().join("10.0.2")
}

/// Cases whose human text is forged on purpose (a backing name with
/// newlines): the human parse must be flagged, not agree.
const FORGED: &[&str] = &["qcow2-backing-inject", "qcow2-backing-inject.chain"];

#[test]
fn every_json_capture_gives_qemus_virtual_size() {
    let dir = v10();
    let mut checked = 0;
    for path in captures(&dir, ".json") {
        let name = path.file_name().unwrap().to_str().unwrap().to_owned();
        if name == "MANIFEST.tsv" {
            continue;
        }
        let r = run_file(&path);
        if capture_status(&dir, &name) != 0 {
            // qemu-img failed and printed nothing: no records; under
            // --check an error, never a pass.
            assert_eq!((r.code, r.records.len()), (0, 0), "{name}");
            let c = run(&["-q", "--check"], &std::fs::read(&path).unwrap());
            assert_eq!(c.code, 2, "{name}");
            assert_eq!(c.records[0]["error"]["kind"], "empty_input", "{name}");
            assert_eq!(c.records[0]["check"]["acceptable"], false, "{name}");
            continue;
        }
        assert_eq!(r.code, 0, "{name}: {}", r.stderr);
        let raw: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        let images: Vec<&Value> = match &raw {
            Value::Array(a) => a.iter().collect(),
            one => vec![one],
        };
        assert_eq!(r.records.len(), images.len(), "{name}");
        for (i, (rec, img)) in r.records.iter().zip(&images).enumerate() {
            let info = &rec["info"];
            assert_eq!(info["source"], "qemu_json");
            assert_eq!(info["virtual_size"], img["virtual-size"], "{name}");
            assert_eq!(info["filename"], img["filename"], "{name}");
            assert_eq!(info["format"], img["format"], "{name}");
            assert_eq!(info["actual_size"], img["actual-size"], "{name}");
            assert_eq!(
                info["encrypted"],
                img.get("encrypted").cloned().unwrap_or(Value::Bool(false))
            );
            if raw.is_array() {
                assert_eq!(info["backing_chain_depth"], i, "{name}");
            } else {
                assert!(info.get("backing_chain_depth").is_none(), "{name}");
            }
            // Every key qemu wrote is kept, snake_cased.
            for k in img.as_object().unwrap().keys() {
                let snake = k.replace('-', "_");
                assert!(info.get(&snake).is_some(), "{name}: {k} dropped");
            }
        }
        checked += 1;
    }
    assert!(checked >= 55, "only {checked} JSON captures found");
}

fn close(json: &Value, human: &Value) -> bool {
    let (Some(a), Some(b)) = (json.as_u64(), human.as_u64()) else {
        return json == human;
    };
    // Three significant digits: within 0.5 % (plus rounding at the unit).
    a.abs_diff(b) as f64 <= a as f64 * 0.005 + 512.0
}

fn compare_info(case: &str, j: &Value, h: &Value, top: bool) {
    let approx = h.get("approximate").cloned().unwrap_or(Value::Null);
    for k in [
        "filename",
        "format",
        "virtual_size",
        "cluster_size",
        "encrypted",
        "backing_filename",
        "full_backing_filename",
        "backing_filename_format",
        "backing_chain_depth",
        "glance_disk_format",
    ] {
        if !top && (k == "backing_chain_depth" || k == "glance_disk_format") {
            continue;
        }
        assert_eq!(j.get(k), h.get(k), "{case}: {k}");
    }
    // qemu omits dirty-flag for parallels; the human text cannot say
    // "absent", so it reads as false (documented in the man page).
    match j.get("dirty_flag") {
        Some(d) => assert_eq!(Some(d), h.get("dirty_flag"), "{case}: dirty_flag"),
        None => assert_eq!(h["dirty_flag"], false, "{case}"),
    }
    match approx.get("actual_size") {
        Some(text) => {
            assert!(
                close(&j["actual_size"], &h["actual_size"]),
                "{case}: {text} vs {}",
                j["actual_size"]
            );
        }
        None => assert_eq!(
            j.get("actual_size"),
            h.get("actual_size"),
            "{case}: actual_size"
        ),
    }
    // Children: the human text has no format-specific data for protocol
    // nodes; names, files, formats and sizes agree.
    let kids = |v: &Value| -> Vec<(String, Value)> {
        let mut k: Vec<(String, Value)> = v
            .get("children")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .map(|c| (c["name"].as_str().unwrap().to_owned(), c["info"].clone()))
                    .collect()
            })
            .unwrap_or_default();
        k.sort_by(|a, b| a.0.cmp(&b.0));
        k
    };
    let (jk, hk) = (kids(j), kids(h));
    assert_eq!(
        jk.iter().map(|c| &c.0).collect::<Vec<_>>(),
        hk.iter().map(|c| &c.0).collect::<Vec<_>>(),
        "{case}: children"
    );
    for ((name, jc), (_, hc)) in jk.iter().zip(&hk) {
        compare_info(&format!("{case}/{name}"), jc, hc, false);
    }
    if top {
        // Format-specific data: the same tree, types and snake_case keys.
        let fs_j = j.get("format_specific");
        let fs_h = h.get("format_specific");
        assert_eq!(fs_j, fs_h, "{case}: format_specific");
        let sj = j
            .get("snapshots")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        let sh = h
            .get("snapshots")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        assert_eq!(sj.len(), sh.len(), "{case}: snapshots");
        for (a, b) in sj.iter().zip(&sh) {
            for k in [
                "id",
                "name",
                "vm_state_size",
                "vm_clock_sec",
                "vm_clock_nsec",
                "icount",
            ] {
                assert_eq!(a.get(k), b.get(k), "{case}: snapshot {k}");
            }
            // Captured with TZ=UTC, so the local date is the UTC one.
            let utc = a["date"].as_str().unwrap().replace('T', " ");
            assert_eq!(&utc[..19], b["date_local"].as_str().unwrap(), "{case}");
        }
    }
}

#[test]
fn human_and_json_captures_agree() {
    let dir = v10();
    let mut compared = 0;
    for human in captures(&dir, ".human.txt") {
        let name = human.file_name().unwrap().to_str().unwrap();
        let case = name.strip_suffix(".human.txt").unwrap();
        let json = dir.join(format!("{case}.json"));
        if capture_status(&dir, name) != 0 {
            let r = run(&["-q", "--check"], &std::fs::read(&human).unwrap());
            assert_eq!(r.records[0]["error"]["kind"], "empty_input", "{case}");
            continue;
        }
        let (rj, rh) = (run_file(&json), run_file(&human));
        assert_eq!(rj.records.len(), rh.records.len(), "{case}: image count");
        if FORGED.contains(&case) {
            assert_eq!(rh.code, 2, "{case}");
            for r in &rh.records {
                assert_eq!(r["info"]["ambiguous"], true, "{case}");
                assert_eq!(r["error"]["kind"], "ambiguous_human_output", "{case}");
                assert!(
                    r["error"]["message"]
                        .as_str()
                        .unwrap()
                        .contains("--output=json")
                );
            }
            continue;
        }
        assert_eq!(rh.code, 0, "{case}: {}", rh.stderr);
        for (j, h) in rj.records.iter().zip(&rh.records) {
            assert_eq!(h["info"]["source"], "qemu_human");
            assert!(h["info"].get("ambiguous").is_none(), "{case}");
            compare_info(case, &j["info"], &h["info"], true);
        }
        compared += 1;
    }
    assert!(compared >= 60, "only {compared} pairs compared");
}

#[test]
fn forged_backing_name_is_kept_exactly_from_json() {
    let r = run_file(&v10().join("qcow2-backing-inject.json"));
    assert_eq!(r.code, 0);
    let name = r.records[0]["info"]["backing_filename"].as_str().unwrap();
    assert!(name.contains("\nvirtual size: 1 TiB"), "{name:?}");
    assert_eq!(r.records[0]["info"]["virtual_size"], 67108864);
}

#[test]
fn non_utf8_backing_name_is_kept_losslessly() {
    let path = v10().join("qcow2-backing-nonutf8.human.txt");
    let raw = std::fs::read(&path).unwrap();
    let r = run_file(&path);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let info = &r.records[0]["info"];
    assert_eq!(info["non_utf8"], true);
    let b64 = info["backing_filename_bytes"].as_str().unwrap();
    let bytes = decode_base64(b64);
    assert!(bytes.contains(&0xff) && bytes.contains(&0xfe));
    // The decoded name is exactly what qemu printed after "backing file: ".
    let mut needle = b"backing file: ".to_vec();
    needle.extend_from_slice(&bytes);
    assert!(raw.windows(needle.len()).any(|w| w == needle.as_slice()));
    // JSON capture: qemu already replaced the bytes; it parses as is.
    let j = run_file(&v10().join("qcow2-backing-nonutf8.json"));
    assert_eq!(
        j.records[0]["info"]["backing_filename"],
        info["backing_filename"]
    );
}

fn decode_base64(s: &str) -> Vec<u8> {
    let val = |c: u8| -> u32 {
        match c {
            b'A'..=b'Z' => u32::from(c - b'A'),
            b'a'..=b'z' => u32::from(c - b'a') + 26,
            b'0'..=b'9' => u32::from(c - b'0') + 52,
            b'+' => 62,
            b'/' => 63,
            _ => panic!("bad base64"),
        }
    };
    let mut out = Vec::new();
    for chunk in s.as_bytes().chunks(4) {
        let n = chunk
            .iter()
            .filter(|&&c| c != b'=')
            .fold(0u32, |acc, &c| (acc << 6) | val(c));
        let pad = chunk.iter().filter(|&&c| c == b'=').count();
        let n = n << (6 * pad);
        let bytes = [(n >> 16) as u8, (n >> 8) as u8, n as u8];
        out.extend_from_slice(&bytes[..3 - pad]);
    }
    out
}

#[test]
fn backing_chains_become_one_record_per_image() {
    for f in ["qcow2-chain3.chain.json", "qcow2-chain3.chain.human.txt"] {
        let r = run_file(&v10().join(f));
        assert_eq!(r.code, 0, "{f}");
        let got: Vec<(String, u64)> = r
            .records
            .iter()
            .map(|r| {
                (
                    r["info"]["filename"].as_str().unwrap().to_owned(),
                    r["info"]["backing_chain_depth"].as_u64().unwrap(),
                )
            })
            .collect();
        assert_eq!(
            got,
            [
                ("chain/top.qcow2".to_string(), 0),
                ("chain/mid.qcow2".to_string(), 1),
                ("chain/base.qcow2".to_string(), 2)
            ],
            "{f}"
        );
        assert_eq!(
            r.records[0]["info"]["full_backing_filename"],
            "chain/mid.qcow2"
        );
    }
}

#[test]
fn concatenated_captures_are_split_per_document() {
    let dir = v10();
    let mut input = Vec::new();
    let mut expect = Vec::new();
    for case in [
        "qcow2-v3",
        "vmdk-twoGbMaxExtentSparse-5g",
        "vpc-dynamic",
        "qcow2-chain3.chain",
    ] {
        let raw: Value =
            serde_json::from_slice(&std::fs::read(dir.join(format!("{case}.json"))).unwrap())
                .unwrap();
        match raw {
            Value::Array(a) => expect.extend(a.iter().map(|i| i["virtual-size"].clone())),
            o => expect.push(o["virtual-size"].clone()),
        }
        input.extend(std::fs::read(dir.join(format!("{case}.json"))).unwrap());
    }
    let r = run(&[], &input);
    assert_eq!(r.code, 0);
    let got: Vec<Value> = r
        .records
        .iter()
        .map(|r| r["info"]["virtual_size"].clone())
        .collect();
    assert_eq!(got, expect);
    // Human text of several runs, one after the other (no blank lines).
    let mut text = Vec::new();
    for case in ["qcow2-v3", "vmdk-twoGbMaxExtentSparse-5g", "vpc-dynamic"] {
        text.extend(std::fs::read(dir.join(format!("{case}.human.txt"))).unwrap());
    }
    let r = run(&[], &text);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let got: Vec<Value> = r
        .records
        .iter()
        .map(|r| r["info"]["virtual_size"].clone())
        .collect();
    assert_eq!(got, expect[..3]);
    assert!(
        r.records
            .iter()
            .all(|r| r["info"].get("backing_chain_depth").is_none())
    );
}

fn check_expectations(human: &Path) {
    let expect = human
        .to_string_lossy()
        .replace(".human.txt", ".expect.json");
    let want: Vec<Value> = std::fs::read_to_string(&expect)
        .unwrap()
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let r = run_file(human);
    assert_eq!(r.code, 0, "{}: {}", human.display(), r.stderr);
    assert_eq!(r.records.len(), want.len(), "{}", human.display());
    for (got, want) in r.records.iter().zip(&want) {
        let info = &got["info"];
        for k in [
            "filename",
            "format",
            "virtual_size",
            "actual_size",
            "cluster_size",
            "backing_filename",
            "full_backing_filename",
            "backing_filename_format",
        ] {
            let g = info.get(k).cloned().unwrap_or(Value::Null);
            assert_eq!(g, want[k], "{}: {k}", human.display());
        }
        let snaps = info
            .get("snapshots")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        assert_eq!(snaps.len() as u64, want["snapshot_count"].as_u64().unwrap());
        for (s, w) in snaps.iter().zip(want["snapshots"].as_array().unwrap()) {
            assert_eq!(s["id"], w["id"]);
            assert_eq!(s["name"], w["name"]);
            assert_eq!(s["date_local"], w["date"]);
            let clock = w["vm_clock"].as_str().unwrap();
            let (hms, ms) = clock.split_once('.').unwrap();
            let p: Vec<u64> = hms.split(':').map(|x| x.parse().unwrap()).collect();
            assert_eq!(s["vm_clock_sec"], p[0] * 3600 + p[1] * 60 + p[2]);
            assert_eq!(s["vm_clock_nsec"], ms.parse::<u64>().unwrap() * 1_000_000);
        }
    }
}

#[test]
fn old_qemu_generations_parse_to_hand_checked_values() {
    let dir = corpus().join("old");
    let files = captures(&dir, ".human.txt");
    assert!(files.len() >= 3);
    for f in files {
        check_expectations(&f);
    }
}
