//! Cinder's XenServer image tests (`cinder/tests/test_image_utils.py`:
//! TestCoalesceChain, TestXenServerImageToCoalescedVhd; discovery and
//! fix_vhd_chain are in tests/chain.rs and tests/relink.rs) as data through
//! the CLI, on real images: coalesce_chain returns the base (one member:
//! the member itself; two: the parent, grown to the child's size first),
//! and replace_xenserver_image_with_coalesced_vhd replaces the image file
//! with the coalesced VHD, atomically. Plus what Cinder cannot do:
//! `--dry-run` writes nothing, a re-run is a no-op, records on stdin.
#![cfg(test)]

mod support;

use std::fs;
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use support::{Spec, build_vhd, convert, have_qemu, listing, model_runs};

const MIB: u64 = 1 << 20;

fn vc(dir: &Path, args: &[&str], stdin: Option<&str>) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_vhd-chain"));
    c.args(args).current_dir(dir);
    c.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    });
    c.stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = c.spawn().unwrap();
    if let Some(text) = stdin {
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
    }
    child.wait_with_output().unwrap()
}

fn records(out: &Output) -> Vec<serde_json::Value> {
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// A XenServer-style chain in `dir`: 0.vhd (12 MiB child, 64 KiB blocks)
/// over 1.vhd (8 MiB base); the model of its disk.
fn two_deep(dir: &Path) -> Vec<u8> {
    fs::create_dir_all(dir).unwrap();
    let base_runs = vec![(0, 2048, 0x11), (10_000, 64, 0x12)];
    let leaf_runs = vec![(8, 8, 0x21), (10_000, 8, 0), (20_000, 128, 0x22)];
    build_vhd(
        &dir.join("1.vhd"),
        &Spec::base(8 * MIB, 2 * MIB, 1, &base_runs),
    );
    build_vhd(
        &dir.join("0.vhd"),
        &Spec::child(12 * MIB, 64 * 1024, 2, (1, "1.vhd"), &leaf_runs),
    );
    let mut want = vec![0u8; 12 * MIB as usize];
    model_runs(&mut want[..8 * MIB as usize], &base_runs);
    model_runs(&mut want, &leaf_runs);
    want
}

fn tar_czf(tgz: &Path, dir: &Path) {
    let st = Command::new("tar")
        .arg("-czf")
        .arg(tgz)
        .arg("-C")
        .arg(dir)
        .arg(".")
        .status()
        .unwrap();
    assert!(st.success());
}

/// TestCoalesceChain.test_single_vhd: a chain of one is its own base;
/// nothing is resized or coalesced.
#[test]
fn coalesce_chain_of_one_returns_the_member_untouched() {
    let t = tempfile::tempdir().unwrap();
    let d = t.path();
    build_vhd(
        &d.join("0.vhd"),
        &Spec::base(4 * MIB, 2 * MIB, 5, &[(0, 8, 1)]),
    );
    let before = fs::read(d.join("0.vhd")).unwrap();
    let r = records(&vc(d, &["coalesce", "--chain", "."], None));
    assert_eq!(r.len(), 1);
    assert_eq!(r[0]["path"], "./0.vhd");
    assert_eq!(r[0]["vhd"]["role"], "base");
    assert!(fs::read(d.join("0.vhd")).unwrap() == before);
}

/// TestCoalesceChain.test_chain_of_two_vhds: the parent is resized to the
/// child's size, the child coalesced into it, and the parent returned.
#[test]
fn coalesce_chain_of_two_grows_the_parent_and_returns_it() {
    if !have_qemu() {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let d = t.path();
    let want = two_deep(d);
    let r = records(&vc(d, &["coalesce", "--chain", "."], None));
    assert_eq!(r.len(), 2);
    assert_eq!(
        r[0]["vhd"]["parent_resized"],
        serde_json::json!([8 * MIB, 12 * MIB])
    );
    assert_eq!(r[1]["path"], "./1.vhd");
    assert_eq!(r[1]["vhd"]["role"], "base");
    assert_eq!(r[1]["vhd"]["current_size"], 12 * MIB);
    assert!(convert(&d.join("1.vhd")) == want);
}

/// TestXenServerImageToCoalescedVhd.test_calls: the image file (a
/// tarball) is replaced by the coalesced VHD. Here by one rename: a
/// reader of the old file keeps reading the tarball, nothing else is left
/// beside it, and a second run finds a single VHD and leaves it alone.
#[test]
fn replace_xenserver_image_with_coalesced_vhd() {
    if !have_qemu() {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let d = t.path();
    let want = two_deep(&d.join("chain"));
    let image = d.join("image");
    tar_czf(&image, &d.join("chain"));
    fs::remove_dir_all(d.join("chain")).unwrap();
    let tarball = fs::read(&image).unwrap();
    let old_ino = fs::metadata(&image).unwrap().ino();
    let mut reader = fs::File::open(&image).unwrap();

    // --dry-run: the archive is read through, nothing is written.
    let r = records(&vc(
        d,
        &["flatten", "--dry-run", "--replace", "image"],
        None,
    ));
    assert_eq!(r[0]["vhd"]["dry_run"], true);
    assert_eq!(r[0]["vhd"]["chain"], serde_json::json!(["0.vhd", "1.vhd"]));
    assert_eq!(r[0]["vhd"]["would_write"], "image");
    assert!(fs::read(&image).unwrap() == tarball);
    assert_eq!(listing(d), vec!["image".to_string()]);

    let r = records(&vc(d, &["flatten", "--replace", "image"], None));
    assert_eq!(r[0]["path"], "image");
    assert_eq!(r[0]["vhd"]["status"], "replaced");
    assert_eq!(r[0]["vhd"]["chain_length"], 2);
    assert_eq!(r[0]["vhd"]["virtual_size"], 12 * MIB);
    assert!(convert(&image) == want, "the image is the chain's disk");
    assert_ne!(
        fs::metadata(&image).unwrap().ino(),
        old_ino,
        "a new file, renamed in"
    );
    let mut old = Vec::new();
    reader.read_to_end(&mut old).unwrap();
    assert!(old == tarball, "the old file was never written to");
    assert_eq!(listing(d), vec!["image".to_string()], "no scratch left");

    // Re-run: already a single VHD, nothing changes.
    let vhd = fs::read(&image).unwrap();
    let r = records(&vc(d, &["flatten", "--replace", "image"], None));
    assert_eq!(r[0]["vhd"]["status"], "already_single");
    assert!(fs::read(&image).unwrap() == vhd);
}

/// The same through a pipeline: records with a `path` on stdin; a file
/// that is neither a tarball nor a VHD, and error records, pass unchanged.
#[test]
fn records_on_stdin_are_replaced_or_passed_on() {
    if !have_qemu() {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let d = t.path();
    let want = two_deep(&d.join("chain"));
    tar_czf(&d.join("a.tgz"), &d.join("chain"));
    fs::write(d.join("notes.txt"), "hello\n").unwrap();
    let input = concat!(
        "{\"path\":\"a.tgz\",\"id\":\"img-1\"}\n",
        "{\"path\":\"notes.txt\",\"id\":\"img-2\"}\n",
        "{\"path\":\"x\",\"error\":{\"tool\":\"glance-dump\",\"kind\":\"io\",\"message\":\"m\"}}\n",
    );
    let r = records(&vc(d, &["flatten", "--replace"], Some(input)));
    assert_eq!(r.len(), 3);
    assert_eq!(r[0]["id"], "img-1");
    assert_eq!(r[0]["vhd"]["status"], "replaced");
    assert!(convert(&d.join("a.tgz")) == want);
    assert_eq!(
        r[1],
        serde_json::json!({"path": "notes.txt", "id": "img-2"})
    );
    assert_eq!(r[2]["error"]["tool"], "glance-dump");
    // Without --replace or --dry-run, stdin makes no sense: usage error.
    let out = vc(d, &["flatten"], Some(""));
    assert_eq!(out.status.code(), Some(2));
}
