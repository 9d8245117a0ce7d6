//! Fail closed (issue 16): a journal name never costs a file that is not
//! a journal of this very image; inputs never hang (FIFOs, devices,
//! directories as members) and a blocked run ends on SIGTERM; outputs
//! never replace a non-regular file nor an input; extraction is bounded
//! and a member that is not a VHD is refused from its first bytes;
//! non-UTF-8 names work and messages name each thing once.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::fs;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};
use support::{Spec, build_vhd};

const MIB: u64 = 1 << 20;

fn vc() -> Command {
    Command::new(env!("CARGO_BIN_EXE_vhd-chain"))
}

/// Run vhd-chain with `args` (stdin empty), killed if it takes more than
/// 5 s: nothing here may hang.
fn run(args: &[&std::ffi::OsStr]) -> Output {
    run_cmd(vc().args(args))
}

fn run_cmd(c: &mut Command) -> Output {
    let mut child = c
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    loop {
        if child.try_wait().unwrap().is_some() {
            break;
        }
        if start.elapsed() > Duration::from_secs(5) {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!(
                "{c:?} hung for 5 s: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    child.wait_with_output().unwrap()
}

fn os(s: &str) -> &std::ffi::OsStr {
    std::ffi::OsStr::new(s)
}

/// The records printed.
fn records(out: &Output) -> Vec<serde_json::Value> {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// The run failed with exit 2 and a record of `kind`.
fn refused(out: &Output, kind: &str) -> serde_json::Value {
    let recs = records(out);
    assert_eq!(
        out.status.code(),
        Some(2),
        "{recs:?} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r = recs
        .iter()
        .find(|r| r["error"].is_object())
        .unwrap_or_else(|| panic!("no error record: {recs:?}"))
        .clone();
    assert_eq!(r["error"]["kind"], kind, "{r}");
    r
}

/// A small dynamic VHD (4 MiB, some data).
fn small_vhd(p: &Path, uuid: u8) {
    build_vhd(
        p,
        &Spec::base(4 * MIB, 2 * MIB, uuid, &[(0, 64, 0x5a), (5000, 8, 0x6b)]),
    );
}

fn precious(p: &Path) -> Vec<u8> {
    let b = b"precious: never to be deleted or changed\n".repeat(100);
    fs::write(p, &b).unwrap();
    b
}

#[test]
fn a_journal_path_holding_anything_but_this_files_journal_is_left_alone() {
    let t = tempfile::tempdir().unwrap();
    let d = t.path();
    let img = d.join("r.vhd");
    small_vhd(&img, 1);
    let img_bytes = fs::read(&img).unwrap();
    let keep = d.join("precious.txt");
    let keep_bytes = precious(&keep);
    let link = d.join("hardlink.vhd");
    fs::hard_link(&img, &link).unwrap();
    let sym = d.join("sym");
    std::os::unix::fs::symlink(&keep, &sym).unwrap();
    // A real, complete journal of another image (its resize crashed).
    let other = d.join("other.vhd");
    small_vhd(&other, 2);
    let other_bytes = fs::read(&other).unwrap();
    let other_j = d.join("other.journal");
    let mut c = vc();
    c.args([
        os("resize"),
        other.as_os_str(),
        os("200M"),
        os("--in-place"),
    ])
    .args([os("--journal"), other_j.as_os_str()])
    .env("VHD_CHAIN_TEST_CRASH_AFTER_WRITES", "1");
    let out = run_cmd(&mut c);
    assert_eq!(out.status.signal(), Some(libc::SIGABRT));
    let other_j_bytes = fs::read(&other_j).unwrap();

    let cases: [(&Path, &str); 6] = [
        (&keep, "already_exists"),
        (&img, "same_file"),
        (&link, "same_file"),
        (&sym, "already_exists"),
        (&other_j, "already_exists"),
        (d, "already_exists"),
    ];
    for (j, kind) in cases {
        let out = run(&[
            os("resize"),
            os("--in-place"),
            os("--journal"),
            j.as_os_str(),
            img.as_os_str(),
            os("200M"),
        ]);
        let r = refused(&out, kind);
        assert!(r["vhd"].is_null(), "{r}");
        assert!(fs::read(&img).unwrap() == img_bytes, "{j:?}: image changed");
        assert!(fs::read(&keep).unwrap() == keep_bytes, "{j:?}");
        assert!(fs::read(&other_j).unwrap() == other_j_bytes, "{j:?}");
        assert!(sym.symlink_metadata().unwrap().file_type().is_symlink());
    }
    // /etc/passwd as a journal: refused, not even opened for writing.
    if let Ok(passwd) = fs::read("/etc/passwd") {
        let out = run(&[
            os("resize"),
            os("--in-place"),
            os("--journal"),
            os("/etc/passwd"),
            img.as_os_str(),
            os("200M"),
        ]);
        refused(&out, "already_exists");
        assert_eq!(fs::read("/etc/passwd").unwrap(), passwd);
    }
    // The other image's journal still rolls it back.
    let mut c = vc();
    c.args([os("resize"), other.as_os_str(), os("4M"), os("--in-place")])
        .args([os("--journal"), other_j.as_os_str()]);
    let out = run_cmd(&mut c);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(records(&out)[0]["vhd"]["journal"], "restored");
    assert!(fs::read(&other).unwrap() == other_bytes);
    assert!(!other_j.exists());
    // And with nothing in the way, the named journal is used and removed.
    let fresh = d.join("fresh.journal");
    let out = run(&[
        os("resize"),
        os("--in-place"),
        os("--journal"),
        fresh.as_os_str(),
        img.as_os_str(),
        os("200M"),
    ]);
    assert!(out.status.success(), "{out:?}");
    assert!(!fresh.exists());
}

#[test]
fn coalesce_in_place_never_takes_a_foreign_file_as_its_journal() {
    let t = tempfile::tempdir().unwrap();
    let d = t.path();
    let (child, parent) = (d.join("0.vhd"), d.join("1.vhd"));
    build_vhd(&parent, &Spec::base(4 * MIB, 2 * MIB, 7, &[(0, 64, 0x11)]));
    build_vhd(
        &child,
        &Spec::child(4 * MIB, 2 * MIB, 8, (7, "1.vhd"), &[(8, 8, 0x22)]),
    );
    let (cb, pb) = (fs::read(&child).unwrap(), fs::read(&parent).unwrap());
    let keep = d.join("precious.txt");
    let keep_bytes = precious(&keep);
    for (j, kind) in [
        (&keep, "already_exists"),
        (&child, "already_exists"),
        (&parent, "same_file"),
    ] {
        let out = run(&[
            os("coalesce"),
            os("--in-place"),
            os("--journal"),
            j.as_os_str(),
            child.as_os_str(),
        ]);
        refused(&out, kind);
        assert!(fs::read(&child).unwrap() == cb, "{j:?}");
        assert!(fs::read(&parent).unwrap() == pb, "{j:?}");
        assert!(fs::read(&keep).unwrap() == keep_bytes, "{j:?}");
    }
}
