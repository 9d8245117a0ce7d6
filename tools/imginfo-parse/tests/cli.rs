//! imginfo-parse as a user runs it: streams, errors, exit statuses, and
//! `--qemu` against the real qemu-img.
#![cfg(test)]

mod support;

use serde_json::{Value, json};
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};
use support::*;

#[test]
fn help_and_version_exit_zero_usage_errors_exit_two() {
    let h = run(&["--help"], b"");
    assert_eq!(h.code, 0);
    for word in [
        "backing_chain_depth",
        "glance_disk_format",
        "approximate",
        "--qemu",
        "Exit status",
    ] {
        assert!(h.stdout.contains(word), "--help lacks {word}");
    }
    let v = run(&["--version"], b"");
    assert_eq!(v.code, 0);
    assert!(v.stdout.starts_with("imginfo-parse "));
    let bad = run(&["--no-such-flag"], b"");
    assert_eq!(bad.code, 2);
    assert_eq!(bad.records.len(), 1, "{}", bad.stdout);
    assert_eq!(bad.records[0]["error"]["kind"], "usage");
    // --backing-chain only makes sense with --qemu; check options need --check.
    assert_eq!(run(&["--backing-chain", "x"], b"").code, 2);
    assert_eq!(run(&["--volume-size", "1G", "x"], b"").code, 2);
    // A missing file is an error record, and the stream goes on.
    let f = run(&["disk.img"], b"");
    assert_eq!(f.code, 2);
    assert_eq!(f.records[0]["error"]["kind"], "not_found");
    assert!(
        f.stderr.starts_with("imginfo-parse: disk.img: "),
        "{}",
        f.stderr
    );
}

#[test]
fn generate_man_and_completions() {
    let m = run(&["--generate", "man"], b"");
    assert_eq!(m.code, 0);
    assert!(m.stdout.contains(".SH \"OUTPUT FORMAT\""));
    assert!(m.stdout.contains(".SH \"EXIT STATUS\""));
    assert!(m.stdout.contains(".SH EXAMPLES"));
    let committed = std::fs::read_to_string(corpus().join("../../../man/imginfo-parse.1")).unwrap();
    assert_eq!(
        m.stdout, committed,
        "man/imginfo-parse.1 is stale: run `make man`"
    );
    for sh in ["bash", "zsh", "fish"] {
        let c = run(&["--generate", sh], b"");
        assert_eq!(c.code, 0);
        assert!(c.stdout.contains("backing-chain"), "{sh}");
    }
}

#[test]
fn empty_input_is_no_records_but_never_a_pass() {
    for input in [&b""[..], b"\n\n   \n"] {
        let r = run(&[], input);
        assert_eq!(r.code, 0, "{}", r.stdout);
        assert!(r.stdout.is_empty() && r.stderr.is_empty(), "{}", r.stderr);
        // --check asked for a verdict and nothing was judged.
        let r = run(&["--check"], input);
        assert_eq!(r.code, 2);
        assert_eq!(r.records.len(), 1);
        assert_eq!(r.records[0]["error"]["kind"], "empty_input");
        assert_eq!(r.records[0]["error"]["tool"], "imginfo-parse");
        assert_eq!(r.records[0]["check"]["acceptable"], false);
        assert!(r.stderr.starts_with("imginfo-parse: "), "{}", r.stderr);
    }
    assert!(run(&["--help"], b"").stdout.contains("Empty stdin"));
}

#[test]
fn flags_that_do_nothing_in_a_mode_are_usage_errors() {
    for args in [
        &["--summary", "x.img"][..],
        &["--jobs", "2"],
        &["--cpu-limit", "3", "x.img"],
        &["--memory-limit", "1G", "x.img"],
        &["--timeout", "3", "x.img"],
        &["--input", "json", "x.img"],
        &["--banned-formats", "qed", "x.img"],
        &["--vmdk-create-types", "", "x.img"],
        &["--header", "A: b", "x.img"],
        &["--cacert", "ca.pem", "x.img"],
    ] {
        let r = run(args, b"");
        assert_eq!(r.code, 2, "{args:?}: {}", r.stdout);
        assert_eq!(r.records.len(), 1, "{args:?}");
        assert_eq!(r.records[0]["error"]["kind"], "usage", "{args:?}");
        let msg = r.records[0]["error"]["message"].as_str().unwrap();
        assert_eq!(msg.matches(args[0]).count(), 1, "{msg}");
    }
    // Where they mean something they are accepted.
    let r = run(
        &[
            "--check",
            "--banned-formats",
            "",
            "--timeout",
            "5",
            "--qemu",
            "/nonexistent",
        ],
        b"",
    );
    assert_eq!(r.records[0]["error"]["kind"], "not_found", "{}", r.stdout);
    let r = run(&["--input", "json"], b"");
    assert_eq!(r.code, 0);
}

#[test]
fn a_format_the_probe_does_not_know_is_a_usage_error() {
    // `-f iso` used to give a record with no format at all.
    for (f, says) in [("iso", "reads that layout as raw"), ("bogus", "qcow2")] {
        let r = run(&["-f", f, "x.img"], b"");
        assert_eq!(r.code, 2, "{f}: {}", r.stdout);
        assert_eq!(r.records.len(), 1, "{f}");
        assert_eq!(r.records[0]["error"]["kind"], "usage", "{f}");
        let msg = r.records[0]["error"]["message"].as_str().unwrap();
        assert!(
            msg.starts_with(&format!("-f {f}: ")) && msg.contains(says),
            "{msg}"
        );
    }
    // Every name the probe knows is taken (the file is what fails).
    for f in ["raw", "qcow2", "vpc", "vhdx", "dmg"] {
        let r = run(&["-f", f, "/nonexistent.img"], b"");
        assert_eq!(
            r.records[0]["error"]["kind"], "not_found",
            "{f}: {}",
            r.stdout
        );
    }
}

#[test]
fn non_utf8_names_round_trip_through_records() {
    use std::os::unix::ffi::OsStrExt;
    let d = tempfile::tempdir().unwrap();
    let name = std::ffi::OsStr::from_bytes(b"disk-\xff.raw");
    std::fs::write(d.path().join(name), vec![0u8; 4096]).unwrap();
    let out = Command::new(BIN)
        .arg(name)
        .current_dir(d.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let rec: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(rec["path"], "disk-\u{fffd}.raw");
    assert_eq!(rec["path_bytes"], system::text::base64(b"disk-\xff.raw"));
    assert_eq!(rec["info"]["filename_bytes"], rec["path_bytes"]);
    assert_eq!(rec["info"]["virtual_size"], 4096);
    // As another tool writes it (cachewalk nova): path_bytes wins over the
    // lossy path, natively and with --qemu.
    let line = format!(
        "{{\"path\":\"disk-\u{fffd}.raw\",\"path_bytes\":{}}}\n",
        rec["path_bytes"]
    );
    let mut argsets: Vec<Vec<&str>> = vec![vec![]];
    if qemu_img().is_some() {
        argsets.push(vec!["--qemu"]);
    }
    for args in argsets {
        let r = in_dir(d.path(), &args, line.as_bytes());
        assert_eq!(r.code, 0, "{args:?}: {}", r.stdout);
        assert_eq!(r.records[0]["info"]["virtual_size"], 4096, "{args:?}");
        assert_eq!(r.records[0]["path_bytes"], rec["path_bytes"]);
    }
    // A malformed path_bytes is an error, never the lossy path.
    let r = in_dir(d.path(), &[], b"{\"path\":\"x\",\"path_bytes\":\"%%\"}\n");
    assert_eq!(r.records[0]["error"]["kind"], "bad_record");
}

#[test]
fn malformed_json_lines_give_numbered_errors_and_the_stream_goes_on() {
    let input = b"{\"filename\":\"a\",\"format\":\"raw\",\"virtual-size\":1024}\n\
{\"filename\":\"b\",\n\
{\"filename\":\"c\",\"format\":\"raw\",\"virtual-size\":2048}\n\
[1, 2]\n\
42\n\
{\"filename\":\"d\",\"format\":\"raw\",\"virtual-size\":\"big\"}\n\
{\"no\":\"path\"}\n";
    let r = run(&[], input);
    assert_eq!(r.code, 2);
    let summary: Vec<(Value, Value)> = r
        .records
        .iter()
        .map(|r| {
            (
                r["info"]["virtual_size"].clone(),
                r.get("error")
                    .map_or(Value::Null, |e| json!([e["kind"], e["line"]])),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            (json!(1024), Value::Null),
            (Value::Null, json!(["bad_json", 2])),
            (json!(2048), Value::Null),
            (Value::Null, json!(["parse_error", 4])),
            (Value::Null, json!(["parse_error", 4])),
            (Value::Null, json!(["bad_json", 5])),
            (Value::Null, json!(["parse_error", 6])),
            (Value::Null, json!(["bad_record", 7])),
        ]
    );
    // One stderr line per error, prefixed with the tool's name.
    assert_eq!(r.stderr.lines().count(), 6, "{}", r.stderr);
    assert!(
        r.stderr
            .lines()
            .all(|l| l.starts_with("imginfo-parse: line "))
    );
    // --quiet silences stderr, not the records or the status.
    let q = run(&["-q"], input);
    assert_eq!((q.code, q.stderr.as_str(), q.records.len()), (2, "", 8));
}

#[test]
fn upstream_error_records_pass_through_unchanged() {
    let line = r#"{"path":"x.img","cache":{"class":"original"},"error":{"tool":"cachewalk","kind":"io","message":"gone"}}"#;
    let r = run(&["--qemu"], format!("{line}\n").as_bytes());
    assert_eq!(r.code, 0);
    assert_eq!(r.stdout, format!("{line}\n"));
}

#[test]
fn closed_stdout_ends_quietly_with_status_zero() {
    let one = std::fs::read(corpus().join("10.0.2/qcow2-v3.json")).unwrap();
    let input: Vec<u8> = one.iter().copied().cycle().take(one.len() * 2000).collect();
    let mut child = Command::new(BIN)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take()); // the reader is gone before the first record
    let mut stdin = child.stdin.take().unwrap();
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(&input);
    });
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn head_one_through_a_shell_pipe() {
    let corpus = corpus().join("10.0.2");
    let script = format!(
        "for i in $(seq 500); do cat '{}'; done | '{BIN}' | head -1 >/dev/null; echo \"${{PIPESTATUS[1]}}\"",
        corpus.join("qcow2-v3.json").display()
    );
    let out = Command::new("bash").args(["-c", &script]).output().unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "0");
    assert!(!String::from_utf8_lossy(&out.stderr).contains("panicked"));
}

#[test]
fn records_are_one_compact_line_each() {
    let r = run(
        &[],
        &std::fs::read(corpus().join("10.0.2/qcow2-chain3.chain.json")).unwrap(),
    );
    assert_eq!(r.records.len(), 3);
    assert_eq!(r.stdout.lines().count(), 3);
    assert!(r.stdout.ends_with('\n'));
    assert!(!r.stdout.contains("\n\n") && !r.stdout.contains("  "));
}

#[test]
fn huge_sizes_stay_exact() {
    let input = br#"{"filename":"x","format":"qcow2","virtual-size":18446744073709551615}"#;
    let r = run(&[], input);
    assert!(
        r.stdout.contains("\"virtual_size\":18446744073709551615"),
        "{}",
        r.stdout
    );
    let r = run(
        &[],
        &std::fs::read(corpus().join("10.0.2/qcow2-size-16p.human.txt")).unwrap(),
    );
    assert_eq!(r.records[0]["info"]["virtual_size"].as_u64(), Some(1 << 54));
}

// ---- --qemu against the real qemu-img -----------------------------------

fn qemu_dir() -> Option<tempfile::TempDir> {
    qemu_images(&[
        "-f raw base.raw 64M",
        "-f qcow2 -b base.raw -F raw top.qcow2 1G",
    ])
}

fn in_dir(d: &Path, args: &[&str], stdin: &[u8]) -> Run {
    run_in(Some(d), args, &[], stdin)
}

#[test]
fn qemu_mode_equals_parsing_qemus_own_output() {
    let Some(d) = qemu_dir() else { return };
    let direct = in_dir(d.path(), &["--qemu", "--backing-chain", "top.qcow2"], b"");
    assert_eq!(direct.code, 0, "{}", direct.stderr);
    let captured = Command::new("qemu-img")
        .args(["info", "--output=json", "--backing-chain", "top.qcow2"])
        .current_dir(d.path())
        .output()
        .unwrap();
    let parsed = in_dir(d.path(), &[], &captured.stdout);
    assert_eq!(direct.records.len(), 2);
    for (a, b) in direct.records.iter().zip(&parsed.records) {
        assert_eq!(a["info"], b["info"]);
    }
    // Top record keeps the file argument; the member below gets its own path.
    assert_eq!(direct.records[0]["path"], "top.qcow2");
    assert_eq!(direct.records[1]["path"], "base.raw");
    assert_eq!(direct.records[1]["info"]["backing_chain_depth"], 1);
}

#[test]
fn qemu_mode_keeps_record_keys_and_order() {
    let Some(d) = qemu_dir() else { return };
    let r = in_dir(
        d.path(),
        &["--qemu"],
        b"{\"cache\":{\"class\":\"original\"},\"path\":\"top.qcow2\",\"info\":{\"stale\":true},\"z\":1}\n",
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    let keys: Vec<&String> = r.records[0].as_object().unwrap().keys().collect();
    assert_eq!(keys, ["cache", "path", "info", "z"]);
    assert!(r.records[0]["info"].get("stale").is_none());
    assert_eq!(r.records[0]["info"]["virtual_size"], 1u64 << 30);
}

#[test]
fn qemu_mode_errors_name_their_kind() {
    let Some(d) = qemu_dir() else { return };
    // A missing file, and a record without a path, among good ones.
    let r = in_dir(
        d.path(),
        &["--qemu"],
        b"{\"path\":\"nope.img\"}\n{\"path\":\"base.raw\"}\n{\"name\":\"x\"}\n",
    );
    assert_eq!(r.code, 2);
    let kinds: Vec<Value> = r
        .records
        .iter()
        .map(|r| r["error"]["kind"].clone())
        .collect();
    assert_eq!(
        kinds,
        [json!("not_found"), Value::Null, json!("bad_record")]
    );
    // The wrong -f: qemu-img refuses, and its message is kept.
    let r = in_dir(d.path(), &["--qemu", "-f", "qcow2", "base.raw"], b"");
    assert_eq!(r.code, 2);
    let e = &r.records[0]["error"];
    assert_eq!(e["kind"], "qemu_img_failed");
    assert_eq!(e["detail"]["exit_status"], 1);
    assert!(
        e["detail"]["stderr"].as_str().unwrap().contains("qcow2"),
        "{e}"
    );
    // --backing-chain with a missing backing file fails as a whole.
    std::fs::remove_file(d.path().join("base.raw")).unwrap();
    let r = in_dir(d.path(), &["--qemu", "--backing-chain", "top.qcow2"], b"");
    assert_eq!(r.records[0]["error"]["kind"], "qemu_img_failed");
    assert!(
        r.records[0]["error"]["detail"]["stderr"]
            .as_str()
            .unwrap()
            .contains("base.raw")
    );
    // Without it, the top image alone is described.
    let r = in_dir(d.path(), &["--qemu", "top.qcow2"], b"");
    assert_eq!(r.code, 0);
    assert_eq!(r.records[0]["info"]["backing_filename"], "base.raw");
}

#[test]
fn protocol_looking_paths_are_opened_as_local_files() {
    let Some(d) = qemu_dir() else { return };
    // A file literally named like a qemu protocol specification.
    // Handed to qemu as is, this would open a null device, not the file.
    let name = r#"json:{"driver":"null-co","size":"1"}"#;
    std::fs::copy(d.path().join("base.raw"), d.path().join(name)).unwrap();
    let r = in_dir(d.path(), &["--qemu", name], b"");
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(r.records[0]["path"], name);
    assert_eq!(r.records[0]["info"]["filename"], format!("./{name}"));
    assert_eq!(r.records[0]["info"]["virtual_size"], 64u64 << 20);
    // A path that starts with a dash is not an option.
    std::fs::copy(d.path().join("base.raw"), d.path().join("-U")).unwrap();
    let r = in_dir(d.path(), &["--qemu", "--", "-U"], b"");
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(r.records[0]["info"]["filename"], "./-U");
}

fn fake_qemu(dir: &Path, body: &str) -> String {
    let p = dir.join("fake-qemu-img");
    std::fs::write(&p, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    p.to_string_lossy().into_owned()
}

#[test]
fn missing_qemu_img_is_its_own_kind() {
    let d = tempfile::tempdir().unwrap();
    std::fs::write(d.path().join("a.img"), b"x").unwrap();
    let r = run_in(
        Some(d.path()),
        &["--qemu", "a.img"],
        &[("QEMU_IMG", "/nonexistent/qemu-img")],
        b"",
    );
    assert_eq!(r.code, 2);
    assert_eq!(r.records[0]["error"]["kind"], "qemu_img_missing");
    assert!(
        r.records[0]["error"]["message"]
            .as_str()
            .unwrap()
            .contains("qemu-utils")
    );
    let r = run_in(
        Some(d.path()),
        &["--qemu", "--qemu-img", "no-such-qemu-img", "a.img"],
        &[],
        b"",
    );
    assert_eq!(r.records[0]["error"]["kind"], "qemu_img_missing");
}

#[test]
fn the_child_runs_with_c_locale_utc_closed_stdin_and_limits() {
    let d = tempfile::tempdir().unwrap();
    std::fs::write(d.path().join("a.img"), b"x").unwrap();
    // The fake prints what it sees as qemu-img's JSON "filename".
    let fake = fake_qemu(
        d.path(),
        r#"stdin=$(cat); printf '{"filename": "%s %s [%s] %s %s %s", "format": "raw", "virtual-size": 1}' "$LC_ALL" "$TZ" "$stdin" "$(ulimit -t)" "$(ulimit -v)" "$*""#,
    );
    let r = run_in(
        Some(d.path()),
        &[
            "--qemu",
            "--qemu-img",
            &fake,
            "-f",
            "raw",
            "-U",
            "--cpu-limit",
            "7",
            "--memory-limit",
            "512M",
            "a.img",
        ],
        &[("LC_ALL", "de_DE.UTF-8"), ("TZ", "Asia/Kolkata")],
        b"this is our stdin, not the child's",
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(
        r.records[0]["info"]["filename"],
        "C UTC [] 7 524288 info --output=json -f raw -U a.img"
    );
}

#[test]
fn failing_and_hanging_qemu_img() {
    let d = tempfile::tempdir().unwrap();
    std::fs::write(d.path().join("a.img"), b"x").unwrap();
    let fail = fake_qemu(
        d.path(),
        "echo 'qemu-img: Could not open a.img: boom' >&2; exit 1",
    );
    let r = run_in(
        Some(d.path()),
        &["--qemu", "--qemu-img", &fail, "a.img"],
        &[],
        b"",
    );
    let e = &r.records[0]["error"];
    assert_eq!(
        (
            e["kind"].clone(),
            e["detail"]["exit_status"].clone(),
            e["detail"]["stderr"].clone()
        ),
        (
            json!("qemu_img_failed"),
            json!(1),
            json!("qemu-img: Could not open a.img: boom")
        )
    );
    let garbage = fake_qemu(d.path(), "echo 'image: a.img'");
    let r = run_in(
        Some(d.path()),
        &["--qemu", "--qemu-img", &garbage, "a.img"],
        &[],
        b"",
    );
    assert_eq!(r.records[0]["error"]["kind"], "qemu_img_failed");
    let hang = fake_qemu(d.path(), "exec sleep 30");
    let t = std::time::Instant::now();
    let r = run_in(
        Some(d.path()),
        &["--qemu", "--qemu-img", &hang, "--timeout", "1", "a.img"],
        &[],
        b"",
    );
    assert_eq!(r.records[0]["error"]["kind"], "timeout");
    assert!(t.elapsed().as_secs() < 10);
}

#[test]
fn files_on_several_threads_give_the_same_bytes_as_on_one() {
    // Mixed images (every kind the hostile corpus has: clean, refused,
    // broken headers), with missing files and a directory between them:
    // records, messages and exit status are those of one thread.
    let images = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/hostile/images");
    let mut names: Vec<String> = std::fs::read_dir(&images)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n != "expect.tsv")
        .collect();
    names.sort();
    assert!(names.len() > 20, "{names:?}");
    let mut files = Vec::new();
    for (i, n) in names.iter().enumerate() {
        files.push(n.clone());
        if i % 7 == 3 {
            files.push(format!("missing-{i}.img"));
        }
        if i == 11 {
            files.push(".".to_owned());
        }
    }
    for extra in [
        &[][..],
        &["--check"],
        &["--check", "--expect-format", "qcow2"],
    ] {
        let one: Vec<&str> = extra
            .iter()
            .copied()
            .chain(["--jobs", "1"])
            .chain(files.iter().map(String::as_str))
            .collect();
        let base = run_in(Some(&images), &one, &[], b"");
        assert_eq!(base.records.len(), files.len(), "{}", base.stdout);
        assert_eq!(base.code, 2, "{extra:?}");
        for jobs in ["2", "4", "16"] {
            let many: Vec<&str> = one
                .iter()
                .map(|a| if *a == "1" { jobs } else { a })
                .collect();
            let r = run_in(Some(&images), &many, &[], b"");
            assert_eq!(r.stdout, base.stdout, "{extra:?} --jobs {jobs}");
            assert_eq!(r.stderr, base.stderr, "{extra:?} --jobs {jobs}");
            assert_eq!(r.code, base.code, "{extra:?} --jobs {jobs}");
        }
        // The default (one per core) too.
        let default: Vec<&str> = extra
            .iter()
            .copied()
            .chain(files.iter().map(String::as_str))
            .collect();
        let r = run_in(Some(&images), &default, &[], b"");
        assert_eq!((r.stdout, r.code), (base.stdout.clone(), base.code));
    }
}

#[test]
fn a_pipe_gets_each_record_before_the_tool_waits_for_more_input() {
    // Records are written in large pieces, but never held while stdin has
    // nothing more: each document's record comes back before the next
    // document is sent (the test would hang, not pass, if it were held).
    use std::io::BufRead;
    let one = std::fs::read(corpus().join("10.0.2/qcow2-v3.json")).unwrap();
    let mut child = Command::new(BIN)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
    for _ in 0..3 {
        stdin.write_all(&one).unwrap();
        stdin.flush().unwrap();
        let mut line = String::new();
        out.read_line(&mut line).unwrap();
        let rec: Value = serde_json::from_str(&line).unwrap();
        assert_eq!(rec["info"]["format"], "qcow2", "{line}");
    }
    drop(stdin);
    assert!(child.wait().unwrap().success());
}
