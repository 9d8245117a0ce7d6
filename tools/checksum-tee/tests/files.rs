//! Inputs and outputs through the shared layer: nothing blocks in open(),
//! a device, FIFO, directory or symlink is never replaced (even with
//! --force), the input itself is never written over, `-` is stdin/stdout,
//! and flags that would do nothing are usage errors.
#![cfg(test)]

use serde_json::Value;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileTypeExt;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

mod support;

use support::{BIN, run};
use test_support::mkfifo;

fn record(bytes: &[u8]) -> Value {
    let text = String::from_utf8_lossy(bytes);
    let line = text
        .lines()
        .last()
        .unwrap_or_else(|| panic!("no record in {text:?}"));
    serde_json::from_str(line).unwrap()
}

/// `args` with stdin from `input`, in `dir`.
fn run_from(dir: &Path, args: &[&str], input: &Path) -> Output {
    Command::new(BIN)
        .args(args)
        .current_dir(dir)
        .stdin(std::fs::File::open(input).unwrap())
        .output()
        .unwrap()
}

#[test]
fn verify_never_blocks_in_open_and_reads_streams() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    let fifo = p.join("fifo");
    mkfifo(&fifo);
    // No writer: the tool waits, but SIGTERM ends it at once.
    let child = Command::new(BIN)
        .args(["--verify", "fifo"])
        .current_dir(p)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let t = Instant::now();
    assert!(
        Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .unwrap()
            .success()
    );
    let out = child.wait_with_output().unwrap();
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
    assert_eq!(out.status.code(), Some(143));
    // With a writer, the FIFO's bytes are hashed front to back.
    let w = std::thread::spawn({
        let fifo = fifo.clone();
        move || std::fs::write(fifo, b"abc").unwrap()
    });
    let out = run(p, &["--verify", "-a", "md5", "fifo"], b"");
    w.join().unwrap();
    assert_eq!(out.status.code(), Some(0));
    let r = record(&out.stdout);
    assert_eq!(r["checksums"]["md5"], "900150983cd24fb0d6963f7d28e17f72");
    assert_eq!(r["checksums"]["noatime"], false);
    // `-` is stdin when named as an argument.
    let out = run(p, &["--verify", "-a", "md5", "-"], b"abc");
    assert_eq!(
        record(&out.stdout)["checksums"]["md5"],
        "900150983cd24fb0d6963f7d28e17f72"
    );
    // A directory is not_regular, named once.
    std::fs::create_dir(p.join("dir")).unwrap();
    let out = run(p, &["--verify", "dir"], b"");
    assert_eq!(out.status.code(), Some(2));
    let r = record(&out.stdout);
    assert_eq!(r["error"]["kind"], "not_regular");
    assert_eq!(r["path"], "dir");
    assert!(!r["error"]["message"].as_str().unwrap().contains("dir:"));
    // A non-UTF-8 name: argument and record round trip (path_bytes).
    let name = OsStr::from_bytes(b"im\xffg.img");
    std::fs::write(p.join(name), b"abc").unwrap();
    let out = Command::new(BIN)
        .args(["--verify", "-a", "md5"])
        .arg(name)
        .current_dir(p)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let line = String::from_utf8(out.stdout).unwrap();
    let r: Value = serde_json::from_str(line.trim()).unwrap();
    assert!(r.get("path_bytes").is_some(), "{r}");
    let again = run(p, &["--verify", "-a", "md5"], line.as_bytes());
    assert_eq!(again.status.code(), Some(0));
    assert_eq!(
        record(&again.stdout)["checksums"]["md5"],
        "900150983cd24fb0d6963f7d28e17f72"
    );
    // In records, stdin carries the records: `-` is refused.
    let out = run(p, &["--verify"], b"{\"path\":\"-\"}\n");
    assert_eq!(record(&out.stdout)["error"]["kind"], "bad_record");
    // Empty stdin: no records, no output, exit 0.
    let out = run(p, &["--verify"], b"");
    assert_eq!(out.status.code(), Some(0));
    assert!(out.stdout.is_empty());
}

#[test]
fn outputs_are_never_anything_but_regular_files() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    std::fs::write(p.join("data"), b"the bytes").unwrap();
    std::fs::write(p.join("target"), b"elsewhere").unwrap();
    mkfifo(&p.join("fifo"));
    std::fs::create_dir(p.join("dir")).unwrap();
    std::os::unix::fs::symlink("target", p.join("link")).unwrap();
    let mut outputs = vec!["fifo", "dir", "link"];
    // A /dev/null-like device node (needs root; CI runs as root).
    let made = Command::new("mknod")
        .arg(p.join("null"))
        .args(["c", "1", "3"])
        .output()
        .unwrap();
    if made.status.success() {
        outputs.push("null");
    } else {
        eprintln!(
            "skipping the device node case: mknod failed: {}",
            String::from_utf8_lossy(&made.stderr).trim()
        );
    }
    for o in outputs {
        for force in [false, true] {
            let mut args = vec!["-o", o];
            if force {
                args.push("--force");
            }
            let out = run_from(p, &args, &p.join("data"));
            assert_eq!(out.status.code(), Some(2), "{o} {force}");
            let r = record(&out.stdout);
            assert_eq!(r["error"]["kind"], "not_regular", "{o} {force}: {r}");
            assert_eq!(r["error"]["detail"]["output"], o);
        }
    }
    let md = |n: &str| std::fs::symlink_metadata(p.join(n)).unwrap();
    assert!(md("fifo").file_type().is_fifo());
    assert!(md("dir").is_dir());
    assert!(md("link").file_type().is_symlink());
    assert_eq!(std::fs::read(p.join("target")).unwrap(), b"elsewhere");
    if p.join("null").exists() {
        assert!(md("null").file_type().is_char_device());
    }
    // The input itself, even with --force: same_file, untouched.
    let out = run_from(p, &["-o", "data", "--force"], &p.join("data"));
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(record(&out.stdout)["error"]["kind"], "same_file");
    assert_eq!(std::fs::read(p.join("data")).unwrap(), b"the bytes");
    // Nor can the report be the input.
    let out = run_from(
        p,
        &["-o", "copy", "--tee", "--report", "data"],
        &p.join("data"),
    );
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(std::fs::read(p.join("data")).unwrap(), b"the bytes");
    assert!(!p.join("copy").exists());
    // Nothing else appeared (no temporaries).
    let mut names: Vec<String> = std::fs::read_dir(p)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names.retain(|n| n != "null");
    assert_eq!(names, ["data", "dir", "fifo", "link", "target"]);
}

#[test]
fn dash_output_is_stdout() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    let out = run(p, &["-o", "-", "-a", "md5"], b"abc");
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(out.stdout, b"abc");
    let r = record(&out.stderr);
    assert_eq!(r["checksums"]["md5"], "900150983cd24fb0d6963f7d28e17f72");
    assert!(!p.join("-").exists(), "no file named -");
    // With a file too: the file committed, the bytes on stdout.
    let out = run(p, &["-o", "-", "-o", "f", "--report", "r.json"], b"abc");
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(out.stdout, b"abc");
    assert_eq!(std::fs::read(p.join("f")).unwrap(), b"abc");
    assert!(!p.join("-").exists());
    // The report to a FIFO that nobody reads: an error, never a hang.
    mkfifo(&p.join("rfifo"));
    let t = Instant::now();
    let out = run(p, &["--report", "rfifo"], b"abc");
    assert!(t.elapsed() < Duration::from_secs(5));
    assert_eq!(out.status.code(), Some(2));
    assert!(p.join("rfifo").metadata().unwrap().file_type().is_fifo());
}

#[test]
fn flags_that_do_nothing_are_usage_errors() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    std::fs::write(p.join("f"), b"abc").unwrap();
    std::fs::create_dir(p.join("cache")).unwrap();
    let cases: &[&[&str]] = &[
        &["--verify", "-o", "x", "f"],
        &["--verify", "--tee", "f"],
        &["--verify", "--force", "f"],
        &["--verify", "--report", "x", "f"],
        &["--verify", "--drain", "f"],
        &["--verify", "-", "-"],
        &["--tee"],
        &["--tee", "--report", "x"],
        &["--force"],
        &["-o", "x", "--report", "r"],
        &["-o", "x", "--drain"],
        &["-o", "-", "--tee", "-o", "x"],
        &["-o", "-", "-o", "-"],
        &["--report", "-"],
        &["-o", "x", "--best-effort-cache"],
        &["--best-effort-cache"],
        &["--unverified"],
        &["-o", "x", "--unverified"],
        &[
            "--glance-cache",
            "cache",
            "--image-id",
            "i",
            "--unverified",
            "--expect",
            "md5:900150983cd24fb0d6963f7d28e17f72",
            "--expect-size",
            "3",
        ],
    ];
    for args in cases {
        let out = run(p, args, b"abc");
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let r = record(&out.stdout);
        assert_eq!(r["error"]["kind"], "usage", "{args:?}: {r}");
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).lines().count(),
            1,
            "{args:?}: only the error record"
        );
        for n in ["x", "r", "-"] {
            assert!(!p.join(n).exists(), "{args:?} made {n}");
        }
    }
    assert!(std::fs::read_dir(p.join("cache")).unwrap().next().is_none());
    // An empty stream is data: 0 bytes hashed, in every data mode.
    let out = run(p, &["-a", "md5"], b"");
    assert_eq!(out.status.code(), Some(0));
    let r = record(&out.stderr);
    assert_eq!(r["checksums"]["bytes"], 0);
    assert_eq!(r["checksums"]["md5"], "d41d8cd98f00b204e9800998ecf8427e");
}

#[test]
fn image_ids_that_cannot_be_file_names_are_refused() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    std::fs::create_dir_all(p.join("inst/_base")).unwrap();
    std::fs::create_dir(p.join("cache")).unwrap();
    for id in ["a/b", "a\nb", "a\u{1b}b", "..", ""] {
        for mode in [
            &["--glance-cache", "cache", "--no-metadata"][..],
            &["--nova-base", "inst"][..],
        ] {
            let mut args = mode.to_vec();
            args.extend(["--image-id", id, "--unverified"]);
            let out = run(p, &args, b"abc");
            assert_eq!(out.status.code(), Some(2), "{id:?} {mode:?}");
            let r = record(&out.stdout);
            assert_eq!(r["error"]["kind"], "refused", "{id:?}: {r}");
        }
    }
    assert!(std::fs::read_dir(p.join("cache")).unwrap().next().is_none());
    assert!(
        std::fs::read_dir(p.join("inst/_base"))
            .unwrap()
            .next()
            .is_none()
    );
}
