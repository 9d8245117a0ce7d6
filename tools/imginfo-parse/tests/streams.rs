//! Streams as image arguments (`-`, /dev/stdin, FIFOs, `<(...)`, /dev/zero):
//! read for real up to the probe bound and judged on what was read, never
//! on what was not; a directory and `--qemu` on a stream are refused.
#![cfg(test)]

mod support;

use serde_json::Value;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use support::*;
use test_support::mkfifo;

/// A qcow2 whose backing file is /etc/passwd, as qemu-img makes it.
fn evil(d: &Path) -> PathBuf {
    sh(
        d,
        &[
            "qemu-img",
            "create",
            "-q",
            "-f",
            "qcow2",
            "-b",
            "/etc/passwd",
            "-F",
            "raw",
            "evil.qcow2",
            "1M",
        ],
    );
    d.join("evil.qcow2")
}

fn one(r: &Run) -> &Value {
    assert_eq!(r.records.len(), 1, "{}", r.stdout);
    &r.records[0]
}

fn failed(rec: &Value) -> Vec<String> {
    rec["check"]["failures"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["check"].as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn a_piped_qcow2_with_a_backing_file_is_read_and_refused() {
    let Some(d) = qemu_images(&[]) else { return };
    let img = std::fs::read(evil(d.path())).unwrap();
    for name in ["/dev/stdin", "-"] {
        let r = run(&["--check", "--expect-format", "raw", name], &img);
        assert_eq!(r.code, 1, "{name}: {}", r.stdout);
        let rec = one(&r);
        assert_eq!(rec["path"], name);
        assert_eq!(rec["info"]["format"], "qcow2", "{name}");
        assert_eq!(rec["info"]["backing_filename"], "/etc/passwd");
        assert_eq!(rec["check"]["acceptable"], false);
        let f = failed(rec);
        assert!(f.contains(&"backing_file".to_owned()), "{f:?}");
        assert!(f.contains(&"format_mismatch".to_owned()), "{f:?}");
        assert_eq!(rec["probe"]["end_of_stream"], true);
        assert_eq!(rec["probe"]["bytes_read"], img.len());
    }
}

#[test]
fn a_fifo_and_process_substitution_are_read() {
    let Some(d) = qemu_images(&[]) else { return };
    let img = evil(d.path());
    let fifo = d.path().join("fifo");
    mkfifo(&fifo);
    let (f2, i2) = (fifo.clone(), img.clone());
    let w = std::thread::spawn(move || {
        let mut f = std::fs::OpenOptions::new().write(true).open(f2).unwrap();
        f.write_all(&std::fs::read(i2).unwrap()).unwrap();
    });
    let r = run(&["--check", fifo.to_str().unwrap()], b"");
    w.join().unwrap();
    assert_eq!(r.code, 1, "{}", r.stdout);
    assert_eq!(one(&r)["info"]["backing_filename"], "/etc/passwd");

    let out = Command::new("bash")
        .arg("-c")
        .arg(format!(
            "{BIN} --check --expect-format raw <(cat {}); echo \"rc=$?\"",
            img.display()
        ))
        .output()
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    let (rec, rc) = text.split_once("\nrc=").unwrap();
    assert_eq!(rc.trim(), "1", "{text}");
    let rec: Value = serde_json::from_str(rec).unwrap();
    assert_eq!(rec["info"]["format"], "qcow2");
    assert_eq!(rec["check"]["acceptable"], false);
}

#[test]
fn the_hostile_corpus_piped_gets_the_verdicts_of_its_files() {
    let dir = corpus().join("../hostile/images");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e != "tsv"))
        .collect();
    files.sort();
    assert!(files.len() >= 25);
    let args = ["-q", "--check", "--volume-size", "1G"];
    for f in files {
        let as_file = run(&[&args[..], &[f.to_str().unwrap()]].concat(), b"");
        let bytes = std::fs::read(&f).unwrap();
        if bytes.len() > 16 << 20 {
            continue;
        }
        let piped = run(&[&args[..], &["-"]].concat(), &bytes);
        let (a, b) = (one(&as_file), one(&piped));
        assert_eq!(as_file.code, piped.code, "{f:?}: {a}\n{b}");
        assert_eq!(a["check"], b["check"], "{f:?}");
        assert_eq!(a["info"]["format"], b["info"]["format"], "{f:?}");
        assert_eq!(
            a["info"]["virtual_size"], b["info"]["virtual_size"],
            "{f:?}"
        );
        assert_eq!(a["error"]["kind"], b["error"]["kind"], "{f:?}: {a}\n{b}");
    }
}

#[test]
fn dev_zero_is_raw_of_unknown_size_and_never_passes() {
    let t = Instant::now();
    let r = run(&["--check", "/dev/zero"], b"");
    assert!(t.elapsed() < Duration::from_secs(5));
    assert_eq!(r.code, 1, "{}", r.stdout);
    let rec = one(&r);
    assert_eq!(rec["info"]["format"], "raw");
    assert_eq!(rec["info"]["virtual_size"], Value::Null);
    assert_eq!(rec["check"]["acceptable"], false);
    assert_eq!(failed(rec), ["not_read"]);
    assert_eq!(rec["probe"]["end_of_stream"], false);
    assert_eq!(rec["probe"]["bytes_read"], 16u64 << 20);
    assert!(
        rec["probe"]["not_read"]
            .as_str()
            .unwrap()
            .contains("its end")
    );
    // Without --check it is information, not an error.
    let r = run(&["/dev/zero"], b"");
    assert_eq!(r.code, 0, "{}", r.stdout);
    assert_eq!(one(&r)["info"]["virtual_size"], Value::Null);
}

#[test]
fn a_header_past_the_bound_is_not_read_not_absent() {
    // A snapshot table written after 20 MiB of data: a file shows it; the
    // same bytes streamed stop at the bound, before it.
    let Some(d) = qemu_images(&["-f qcow2 snap.qcow2 64M"]) else {
        return;
    };
    sh(
        d.path(),
        &["qemu-io", "-c", "write -P 0x55 0 20M", "snap.qcow2"],
    );
    sh(
        d.path(),
        &["qemu-img", "snapshot", "-c", "s1", "snap.qcow2"],
    );
    let file = run_in(Some(d.path()), &["--check", "snap.qcow2"], &[], b"");
    assert_eq!(file.code, 0, "{}", file.stdout);
    assert_eq!(one(&file)["info"]["snapshots"][0]["name"], "s1");
    let bytes = std::fs::read(d.path().join("snap.qcow2")).unwrap();
    let r = run(&["--check", "-"], &bytes);
    assert_eq!(r.code, 2, "{}", r.stdout);
    let rec = one(&r);
    assert_eq!(rec["error"]["kind"], "limit_exceeded");
    let msg = rec["error"]["message"].as_str().unwrap();
    assert!(msg.contains("not read"), "{msg}");
    assert!(!msg.contains("truncated"), "{msg}");
    assert_eq!(rec["check"]["acceptable"], false);
    assert_eq!(rec["probe"]["end_of_stream"], false);
}

#[test]
fn directories_and_streams_under_qemu_are_refused() {
    let d = tempfile::tempdir().unwrap();
    let r = run(&["--check", d.path().to_str().unwrap()], b"");
    assert_eq!(r.code, 2);
    assert_eq!(one(&r)["error"]["kind"], "not_regular");
    assert_eq!(one(&r)["check"]["acceptable"], false);
    // qemu-img is never handed a stream: this one would say it ran.
    let fake = d.path().join("qemu-img");
    std::fs::write(&fake, "#!/bin/sh\necho ran >&2\nexit 3\n").unwrap();
    std::fs::set_permissions(&fake, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    for name in ["/dev/stdin", "-", "/dev/zero"] {
        let r = run(
            &["--qemu", "--qemu-img", fake.to_str().unwrap(), name],
            b"data",
        );
        assert_eq!(r.code, 2, "{name}");
        assert_eq!(one(&r)["error"]["kind"], "not_regular", "{name}");
        assert!(!r.stderr.contains("ran"), "{name}: {}", r.stderr);
    }
}

#[test]
fn a_fifo_without_a_writer_ends_on_sigterm() {
    let d = tempfile::tempdir().unwrap();
    let fifo = d.path().join("fifo");
    mkfifo(&fifo);
    let mut child = Command::new(BIN)
        .arg(&fifo)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    assert!(child.try_wait().unwrap().is_none(), "it waits for a writer");
    let t = Instant::now();
    #[allow(unsafe_code)]
    // SAFETY: signalling our own child.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGTERM);
    }
    let st = child.wait().unwrap();
    assert!(t.elapsed() < Duration::from_secs(2));
    assert!(!st.success());
}

/// A record on stdin cannot name `-` (stdin carries the records: probing
/// it would read the records that follow as the image); the stream goes
/// on. Named on the command line, `-` is stdin (as in checksum-tee).
#[test]
fn a_record_on_stdin_cannot_name_stdin() {
    let d = tempfile::tempdir().unwrap();
    let raw = d.path().join("a.raw");
    std::fs::write(&raw, vec![0u8; 4096]).unwrap();
    let mut input = b"{\"path\":\"-\"}\n".to_vec();
    for _ in 0..200 {
        input.extend_from_slice(
            format!("{{\"path\":{}}}\n", Value::from(raw.to_str().unwrap())).as_bytes(),
        );
    }
    for args in [&[][..], &["--qemu"][..]] {
        let r = run(args, &input);
        assert_eq!(r.code, 2, "{args:?}: {}", r.stderr);
        assert_eq!(r.records.len(), 201, "{args:?}");
        assert_eq!(r.records[0]["error"]["kind"], "bad_record", "{args:?}");
        assert!(
            r.records[1..]
                .iter()
                .all(|rec| rec["path"] == raw.to_str().unwrap())
        );
    }
    let r = run(&["-"], &[0u8; 512]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(one(&r)["info"]["format"], "raw");
}
