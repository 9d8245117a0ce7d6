//! SIGINT, SIGTERM: a command that writes stops at the next chunk, removes
//! what it made (temporary output, scratch directory) or rolls an in-place
//! change back from its journal, writes an `interrupted` error record and
//! exits 128+N.
#![cfg(test)]

mod support;

use std::fs;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use support::{create_dynamic, have_qemu, listing, make_child, qemu_write};
use test_support::run_ok;

const MIB: u64 = 1 << 20;

/// Start vhd-chain with `args` in `dir`, wait until `ready` names a file
/// that exists in `dir` (the command is then mid-way), send `sig`; the
/// exit code and the records printed.
fn interrupt(
    dir: &Path,
    args: &[&str],
    ready: &dyn Fn(&[String]) -> bool,
    sig: i32,
) -> (i32, Vec<serde_json::Value>) {
    let child = Command::new(env!("CARGO_BIN_EXE_vhd-chain"))
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while !ready(&listing(dir)) {
        assert!(start.elapsed() < Duration::from_secs(60), "never got ready");
        std::thread::sleep(Duration::from_millis(2));
    }
    let pid = i32::try_from(child.id()).unwrap();
    // SAFETY-free: kill(2) through the kill command keeps the test simple.
    run_ok(
        Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(pid.to_string()),
    );
    let out = child.wait_with_output().unwrap();
    let recs = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    (out.status.code().unwrap_or(-1), recs)
}

/// A 2-deep chain in `dir/chain` with 768 MiB of data in the child.
fn big_chain(dir: &Path) {
    let c = dir.join("chain");
    fs::create_dir(&c).unwrap();
    create_dynamic(&c.join("1.vhd"), "1G");
    create_dynamic(&c.join("0.vhd"), "1G");
    qemu_write(&c.join("1.vhd"), &[(0x11, 0, 64 * MIB)]);
    qemu_write(&c.join("0.vhd"), &[(0x22, 128 * MIB, 768 * MIB)]);
    make_child(&c.join("0.vhd"), &c.join("1.vhd"));
}

#[test]
fn flatten_stopped_by_sigint_leaves_nothing() {
    if !have_qemu() {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let d = t.path();
    big_chain(d);
    let (code, recs) = interrupt(
        d,
        &["flatten", "chain", "-o", "out.vhd"],
        &|names| names.iter().any(|n| n.starts_with(".out.vhd.tmp-")),
        libc::SIGINT,
    );
    assert_eq!(code, 130);
    // The file's record, then the run's (every fatal error is a record).
    assert!(
        !recs.is_empty() && recs.len() <= 2 && recs[0]["path"] == "chain",
        "{recs:?}"
    );
    for r in &recs {
        assert_eq!(r["error"]["kind"], "interrupted", "{recs:?}");
        let m = r["error"]["message"].as_str().unwrap();
        assert!(!m.contains('<') && !m.contains("chain: "), "{m}");
    }
    assert_eq!(listing(d), vec!["chain".to_string()]);

    // From a tarball, stopped while extracting: the scratch goes too.
    let st = Command::new("tar")
        .args(["-czf", "image.tgz", "-C", "chain", "."])
        .current_dir(d)
        .status()
        .unwrap();
    assert!(st.success());
    let (code, recs) = interrupt(
        d,
        &["flatten", "image.tgz", "-o", "out.vhd"],
        &|names| names.iter().any(|n| n.starts_with(".out.vhd.scratch-")),
        libc::SIGTERM,
    );
    assert_eq!(code, 143);
    assert_eq!(recs[0]["error"]["kind"], "interrupted");
    assert_eq!(
        listing(d),
        vec!["chain".to_string(), "image.tgz".to_string()]
    );
}

#[test]
fn an_in_place_coalesce_stopped_by_sigterm_is_rolled_back() {
    if !have_qemu() {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let d = t.path();
    big_chain(d);
    let c = d.join("chain");
    let before = fs::read(c.join("1.vhd")).unwrap();
    let (code, recs) = interrupt(
        &c,
        &["coalesce", "0.vhd", "1.vhd", "--in-place"],
        &|names| names.iter().any(|n| n == ".1.vhd.vhd-chain-journal"),
        libc::SIGTERM,
    );
    assert_eq!(code, 143);
    assert_eq!(recs[0]["error"]["kind"], "interrupted", "{recs:?}");
    assert!(fs::read(c.join("1.vhd")).unwrap() == before, "rolled back");
    assert_eq!(listing(&c), vec!["0.vhd".to_string(), "1.vhd".to_string()]);
}
