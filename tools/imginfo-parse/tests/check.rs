//! `--check`: the hostile corpus gets the right verdicts, nothing but the
//! named files is ever opened, and Cinder's image rules (its unit tests'
//! scenarios, as pipes) hold.
#![cfg(test)]

mod support;

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;
use support::*;

fn hostile() -> PathBuf {
    corpus().join("../hostile/images")
}

fn expectations() -> Vec<(String, Vec<String>)> {
    std::fs::read_to_string(hostile().join("expect.tsv"))
        .unwrap()
        .lines()
        .map(|l| {
            let (f, c) = l.split_once('\t').unwrap();
            let checks = c
                .split(',')
                .filter(|s| !s.is_empty())
                .map(String::from)
                .collect();
            (f.to_owned(), checks)
        })
        .collect()
}

fn failed_checks(rec: &Value) -> Vec<String> {
    let mut v: Vec<String> = rec["check"]["failures"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["check"].as_str().unwrap().to_owned())
        .collect();
    v.dedup();
    v
}

#[test]
fn hostile_corpus_verdicts_natively() {
    let exp = expectations();
    assert!(exp.len() >= 25);
    let mut args = vec!["-q", "--check", "--volume-size", "1G"];
    args.extend(exp.iter().map(|(f, _)| f.as_str()));
    let r = run_in(Some(&hostile()), &args, &[], b"");
    assert_eq!(r.records.len(), exp.len());
    let mut wrong = Vec::new();
    for ((file, want), rec) in exp.iter().zip(&r.records) {
        assert_eq!(rec["path"], file.as_str());
        let got = failed_checks(rec);
        if &got != want {
            wrong.push(format!(
                "{file}: want {want:?}, got {got:?} ({})",
                rec["check"]
            ));
        }
        assert_eq!(rec["check"]["acceptable"], want.is_empty(), "{file}");
        if want == &["info".to_string()] {
            assert_eq!(rec["error"]["kind"], "bad_image", "{file}: {rec}");
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    // Broken headers are errors (2), which outrank "not acceptable" (1).
    assert_eq!(r.code, 2);
}

#[test]
fn backing_file_flags_name_the_danger() {
    let cases = [
        ("backing-passwd.qcow2", "absolute"),
        ("backing-json.qcow2", "json"),
        ("backing-url.qcow2", "url"),
        ("backing-dotdot.qcow2", "parent_directory"),
        ("backing-newline.qcow2", "newline"),
    ];
    for (file, flag) in cases {
        let r = run_in(Some(&hostile()), &["--check", file], &[], b"");
        assert_eq!(r.code, 1, "{file}");
        let f = &r.records[0]["check"]["failures"][0];
        assert_eq!(f["check"], "backing_file");
        assert!(
            f["flags"].as_array().unwrap().iter().any(|x| x == flag),
            "{file}: {f}"
        );
    }
}

/// Every file the process opened, from strace.
fn opened_files(dir: &Path, args: &[&str]) -> Option<Vec<String>> {
    if system::exec::which(std::ffi::OsStr::new("strace")).is_none() {
        assert!(std::env::var_os("CI").is_none(), "strace is required in CI");
        eprintln!("skipping: strace is not installed");
        return None;
    }
    let log = dir.join("strace.log");
    let st = Command::new("strace")
        .args(["-f", "-qq", "-e", "trace=open,openat,openat2,creat", "-o"])
        .arg(&log)
        .arg(BIN)
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(st.status.code().is_some());
    let text = std::fs::read_to_string(&log).unwrap();
    let mut files: Vec<String> = text
        .lines()
        .filter(|l| !l.contains("ENOENT"))
        .filter_map(|l| {
            let start = l.find('"')? + 1;
            let end = start + l[start..].find('"')?;
            Some(l[start..end].to_owned())
        })
        .collect();
    files.sort();
    files.dedup();
    Some(files)
}

#[test]
fn nothing_but_the_named_files_is_opened() {
    let tmp = tempfile::tempdir().unwrap();
    let exp = expectations();
    for (f, _) in &exp {
        std::fs::copy(hostile().join(f), tmp.path().join(f)).unwrap();
    }
    let mut args = vec!["-q", "--check"];
    args.extend(exp.iter().map(|(f, _)| f.as_str()));
    let Some(opened) = opened_files(tmp.path(), &args) else {
        return;
    };
    let system = [
        "/etc/ld.so",
        "/lib",
        "/usr/lib",
        "/proc/self",
        // glibc's malloc, for the arena of a probe thread (--jobs).
        "/proc/sys/vm/overcommit_memory",
        "/sys/",
        "/dev/null",
    ];
    let unexpected: Vec<&String> = opened
        .iter()
        .filter(|p| !system.iter().any(|s| p.starts_with(s)))
        .filter(|p| !exp.iter().any(|(f, _)| f == *p))
        .collect();
    assert!(
        unexpected.is_empty(),
        "opened beyond the arguments: {unexpected:?}"
    );
    assert!(opened.iter().any(|p| p == "backing-passwd.qcow2"));
    assert!(
        !opened
            .iter()
            .any(|p| p.contains("passwd") && p.starts_with('/'))
    );
    assert!(!opened.iter().any(|p| p.contains("shadow")));
}

#[test]
fn exit_status_zero_when_all_acceptable_one_when_not() {
    let h = hostile();
    let ok = run_in(
        Some(&h),
        &["--check", "clean-v3.qcow2", "clean.raw"],
        &[],
        b"",
    );
    assert_eq!(ok.code, 0);
    assert!(ok.records.iter().all(|r| r["check"]["acceptable"] == true));
    let no = run_in(
        Some(&h),
        &["--check", "clean-v3.qcow2", "corrupt.qcow2"],
        &[],
        b"",
    );
    assert_eq!(no.code, 1);
    // Without --check there is no verdict and no "no".
    let plain = run_in(Some(&h), &["corrupt.qcow2"], &[], b"");
    assert_eq!(plain.code, 0);
    assert!(plain.records[0].get("check").is_none());
}

#[test]
fn policy_flags() {
    let h = hostile();
    let run_check = |args: &[&str]| run_in(Some(&h), args, &[], b"").records[0].clone();
    // A hybrid ISO/polyglot is refused unless its extra formats are allowed.
    let r = run_check(&["--check", "--allow-multi", "iso", "poly.iso"]);
    assert_eq!(r["check"]["acceptable"], true, "{r}");
    // The claimed Glance format must match the data.
    let r = run_check(&["--check", "--expect-format", "raw", "clean-v3.qcow2"]);
    assert_eq!(failed_checks(&r), ["format_mismatch"]);
    let r = run_check(&["--check", "--expect-format", "qcow2", "clean-v3.qcow2"]);
    assert_eq!(r["check"]["acceptable"], true);
    // The VMDK create-type list can be changed; empty refuses all VMDK.
    let r = run_check(&[
        "--check",
        "--vmdk-create-types",
        "monolithicFlat",
        "flat.vmdk",
    ]);
    assert_eq!(r["check"]["acceptable"], true, "{r}");
    let r = run_check(&["--check", "--vmdk-create-types", "", "clean-stream.vmdk"]);
    assert_eq!(failed_checks(&r), ["create_type"]);
    // qed can be allowed; a backing file can be allowed (Cinder remotefs).
    let r = run_check(&["--check", "--banned-formats", "", "banned.qed"]);
    assert_eq!(r["check"]["acceptable"], true);
    let r = run_check(&["--check", "--allow-backing-file", "backing-passwd.qcow2"]);
    assert_eq!(r["check"]["acceptable"], true);
    let r = run_check(&["--check", "--max-virtual-size", "512K", "clean-v3.qcow2"]);
    assert_eq!(failed_checks(&r), ["virtual_size"]);
}

// ---- Cinder's image_utils rules, as pipelines ------------------------------

fn qemu_workdir() -> Option<tempfile::TempDir> {
    qemu_images(&[
        "-f qcow2 img.qcow2 64M",
        "-f raw base.raw 64M",
        "-f qcow2 -b base.raw -F raw backed.qcow2",
    ])
}

#[test]
fn cinder_fetch_to_raw_rules() {
    let Some(d) = qemu_workdir() else { return };
    let p = d.path();
    let verdict = |args: &[&str], stdin: &[u8]| run_in(Some(p), args, &[], stdin);
    // fetch_to_raw: a good image fits, converts, and is raw afterwards.
    let r = verdict(&["--check", "--volume-size", "1G", "img.qcow2"], b"");
    assert_eq!(r.code, 0);
    sh(
        p,
        &["qemu-img", "convert", "-O", "raw", "img.qcow2", "img.raw"],
    );
    let r = verdict(&["--check", "--require-format", "raw", "img.raw"], b"");
    assert_eq!(r.code, 0);
    // test_fetch_to_raw_on_error_not_convert_to_raw: still qcow2 → refused.
    let r = verdict(&["--check", "--require-format", "raw", "img.qcow2"], b"");
    assert_eq!(
        (r.code, failed_checks(&r.records[0])),
        (1, vec!["require_format".to_string()])
    );
    // test_fetch_to_raw_on_error_backing_file.
    let r = verdict(&["--check", "backed.qcow2"], b"");
    assert_eq!(
        (r.code, failed_checks(&r.records[0])),
        (1, vec!["backing_file".to_string()])
    );
    // test_fetch_to_raw_on_error_image_size: 64 MiB into a 0 GiB volume.
    let r = verdict(&["--check", "--volume-size", "0", "img.qcow2"], b"");
    assert_eq!(failed_checks(&r.records[0]), ["virtual_size"]);
    // test_fetch_to_raw_no_qemu_img: only --qemu needs it, and says so.
    let r = run_in(
        Some(p),
        &["--qemu", "--check", "img.qcow2"],
        &[("QEMU_IMG", "/nonexistent")],
        b"",
    );
    assert_eq!(
        (r.code, r.records[0]["error"]["kind"].as_str()),
        (2, Some("qemu_img_missing"))
    );
    assert_eq!(r.records[0]["check"]["acceptable"], false);
    let r = run_in(
        Some(p),
        &["--check", "img.qcow2"],
        &[("QEMU_IMG", "/nonexistent")],
        b"",
    );
    assert_eq!(r.code, 0, "the native probe needs no qemu-img");
    // test_fetch_to_raw_on_error_parsing_failed: output without a format.
    let r = verdict(
        &["--check"],
        b"image: x\nvirtual size: 0 (0 bytes)\ndisk size: 0\n",
    );
    assert_eq!(r.code, 2);
    assert_eq!(r.records[0]["check"]["acceptable"], false);
    // Cinder's own fake qemu-img text (QEMU 1.x layout) is understood.
    let r = verdict(
        &["--check"],
        b"image: qemu.qcow2\nfile format: raw\nvirtual size: 0 (0 bytes)\ndisk size: 0\n",
    );
    assert_eq!(
        (r.code, r.records[0]["check"]["acceptable"].clone()),
        (0, Value::Bool(true))
    );
}

#[test]
fn every_source_gets_the_same_verdict() {
    let Some(d) = qemu_workdir() else { return };
    let p = d.path();
    for file in ["img.qcow2", "backed.qcow2", "base.raw"] {
        let native = run_in(Some(p), &["--check", file], &[], b"");
        let qemu = run_in(Some(p), &["--check", "--qemu", file], &[], b"");
        let out = Command::new("qemu-img")
            .args(["info", file])
            .current_dir(p)
            .output()
            .unwrap();
        let human = run_in(Some(p), &["--check"], &[], &out.stdout);
        let n = failed_checks(&native.records[0]);
        assert_eq!(n, failed_checks(&qemu.records[0]), "{file}");
        assert_eq!(n, failed_checks(&human.records[0]), "{file}");
        // oslo's verdict is on the file's bytes, whoever read them; qemu-img's
        // text alone has no bytes to judge.
        let oslo = &native.records[0]["check"]["oslo"];
        assert!(oslo["acceptable"].is_boolean(), "{file}: {oslo}");
        assert_eq!(&qemu.records[0]["check"]["oslo"], oslo, "{file}");
        assert!(human.records[0]["check"].get("oslo").is_none(), "{file}");
    }
}

/// `-f` states a claim; detection still runs, so raw bytes that start with
/// a qemu-img-made qcow2 header (backing file /etc/passwd) are refused
/// whatever is claimed, natively, with --qemu, and from a stream.
#[test]
fn a_format_claim_never_suppresses_detection() {
    let Some(d) = qemu_images(&[
        "-f qcow2 -b /etc/passwd -F raw evil.qcow2 1M",
        "-f qcow2 clean.qcow2 1M",
        "-f raw plain.raw 1M",
    ]) else {
        return;
    };
    let mut poly = std::fs::read(d.path().join("evil.qcow2")).unwrap();
    poly.resize(4 << 20, 0);
    std::fs::write(d.path().join("poly.img"), &poly).unwrap();
    let verdict = |args: &[&str], stdin: &[u8]| {
        let r = run_in(Some(d.path()), args, &[], stdin);
        assert_eq!(r.records.len(), 1, "{args:?}: {}", r.stdout);
        (r.code, r.records[0].clone())
    };
    for args in [
        &["--check", "-f", "raw", "--expect-format", "raw", "poly.img"][..],
        &["--check", "-f", "raw", "poly.img"],
        &[
            "--qemu",
            "--check",
            "-f",
            "raw",
            "--expect-format",
            "raw",
            "poly.img",
        ],
    ] {
        let (code, rec) = verdict(args, b"");
        assert_eq!(code, 1, "{args:?}: {rec}");
        assert_eq!(rec["info"]["format"], "raw", "{args:?}");
        assert_eq!(rec["info"]["claimed_format"], "raw");
        assert_eq!(rec["info"]["detected_format"], "qcow2");
        assert_eq!(failed_checks(&rec), ["format_mismatch"], "{args:?}: {rec}");
    }
    let (code, rec) = verdict(&["--check", "-f", "raw", "-"], &poly);
    assert_eq!(code, 1, "{rec}");
    assert_eq!(failed_checks(&rec), ["format_mismatch"]);
    // Without -f the bytes speak for themselves: qcow2, backing file.
    let (code, rec) = verdict(&["--check", "--expect-format", "raw", "poly.img"], b"");
    assert_eq!(code, 1);
    assert!(failed_checks(&rec).contains(&"backing_file".to_owned()));
    // Without --check: both the claim and what was detected, exit 0.
    let (code, rec) = verdict(&["-f", "raw", "poly.img"], b"");
    assert_eq!(code, 0);
    assert_eq!(rec["info"]["virtual_size"], 4 << 20);
    assert_eq!(
        rec["info"]["detected_formats"],
        serde_json::json!(["qcow2"])
    );
    // A true claim passes.
    for (f, img) in [("qcow2", "clean.qcow2"), ("raw", "plain.raw")] {
        for q in [&[][..], &["--qemu"]] {
            let args = [q, &["--check", "-f", f, img]].concat();
            let (code, rec) = verdict(&args, b"");
            assert_eq!(code, 0, "{args:?}: {rec}");
            assert_eq!(rec["info"]["claimed_format"], f);
        }
    }
}
