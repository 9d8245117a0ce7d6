//! Hostile chain directories (issue 17): a member that is a symbolic link
//! to a decoy VHD outside the directory is refused (`symlink`) by every
//! subcommand, never read or written through; a file changed in place
//! that is a link is refused even when named directly; and a file swapped
//! between judging and writing (driven by the `vhd-chain.before_write`
//! hook, not by timing) is never written, nor replaced by the copy when
//! swapped in right before the copy is put in place (`tree.before_replace`:
//! the names are exchanged, checked and exchanged back): the decoys and the
//! swapped-in file keep their bytes, inode and mtime. `coalesce --chain`
//! stays in the directory it opened when the path is swapped for a link
//! between two steps (`vhd-chain.coalesce.next_step`).
#![cfg(test)]

mod support;

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use support::{create_dynamic, have_qemu, make_child};

const HOOK: &str = "IMAGE_TOOLS_TEST_HOOK_VHD_CHAIN_BEFORE_WRITE";

fn vc(args: &[&std::ffi::OsStr], hook: Option<&str>) -> Output {
    vc_at(args, HOOK, hook)
}

/// Run with the hook `var` set to `hook`.
fn vc_at(args: &[&std::ffi::OsStr], var: &str, hook: Option<&str>) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_vhd-chain"));
    c.args(args).stdin(Stdio::null());
    if let Some(h) = hook {
        c.env(var, h);
    }
    c.output().unwrap()
}

fn records(out: &Output) -> Vec<serde_json::Value> {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// Bytes, inode and mtime: what must not change.
#[derive(Debug, PartialEq, Eq)]
struct Print {
    bytes: Vec<u8>,
    ino: u64,
    mtime: (i64, i64),
}

fn print(p: &Path) -> Print {
    let m = fs::symlink_metadata(p).unwrap();
    Print {
        bytes: fs::read(p).unwrap(),
        ino: m.ino(),
        mtime: (m.mtime(), m.mtime_nsec()),
    }
}

/// Exit 2 and an error record of `kind`.
fn refused(out: &Output, kind: &str, what: &str) {
    let r = records(out);
    assert_eq!(
        out.status.code(),
        Some(2),
        "{what}: {r:?} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        r.iter().any(|r| r["error"]["kind"] == kind),
        "{what}: want {kind}: {r:?}"
    );
}

fn os(s: &str) -> &std::ffi::OsStr {
    std::ffi::OsStr::new(s)
}

/// `root/chain/` holding a linked two-member chain (`0.vhd` leaf over
/// `1.vhd`), and `root/decoy/` holding a copy of both, outside it.
struct Tree {
    _t: tempfile::TempDir,
    chain: PathBuf,
    decoy: PathBuf,
}

fn tree() -> Tree {
    let t = tempfile::tempdir().unwrap();
    let chain = t.path().join("chain");
    let decoy = t.path().join("decoy");
    fs::create_dir(&chain).unwrap();
    fs::create_dir(&decoy).unwrap();
    for d in [&chain, &decoy] {
        create_dynamic(&d.join("1.vhd"), "8M");
        support::qemu_write(&d.join("1.vhd"), &[(0x11, 0, 65536)]);
        create_dynamic(&d.join("0.vhd"), "8M");
        make_child(&d.join("0.vhd"), &d.join("1.vhd"));
    }
    Tree {
        _t: t,
        chain,
        decoy,
    }
}

/// Every subcommand that takes a chain directory, as arguments.
fn dir_commands(dir: &Path, out: &Path) -> Vec<(&'static str, Vec<std::ffi::OsString>)> {
    let d = dir.as_os_str().to_owned();
    let o = out.as_os_str().to_owned();
    let v = |a: &[&std::ffi::OsStr]| a.iter().map(|x| (*x).to_owned()).collect::<Vec<_>>();
    vec![
        ("discover", v(&[os("discover"), &d])),
        ("check --chain", v(&[os("check"), os("--chain"), &d])),
        ("cat", v(&[os("cat"), &d])),
        ("flatten", v(&[os("flatten"), &d, os("-o"), &o])),
        (
            "flatten --dry-run",
            v(&[os("flatten"), os("--dry-run"), &d]),
        ),
        ("fix", v(&[os("fix"), &d])),
        (
            "fix --no-uuid-check",
            v(&[os("fix"), os("--no-uuid-check"), &d]),
        ),
        ("coalesce --chain", v(&[os("coalesce"), os("--chain"), &d])),
        (
            "coalesce --chain --in-place",
            v(&[os("coalesce"), os("--chain"), os("--in-place"), &d]),
        ),
    ]
}

#[test]
fn a_symlinked_member_is_refused_by_every_subcommand() {
    if !have_qemu() {
        return;
    }
    // The leaf (fix and set-parent rewrite it) and the base (coalesce
    // writes it; cat and flatten read it) in turn.
    for linked in ["0.vhd", "1.vhd"] {
        let t = tree();
        let member = t.chain.join(linked);
        fs::remove_file(&member).unwrap();
        std::os::unix::fs::symlink(t.decoy.join(linked), &member).unwrap();
        let decoys = [print(&t.decoy.join("0.vhd")), print(&t.decoy.join("1.vhd"))];
        let out_vhd = t.chain.parent().unwrap().join("out.vhd");
        for (what, args) in dir_commands(&t.chain, &out_vhd) {
            let what = format!("{what} with {linked} a link");
            let a: Vec<&std::ffi::OsStr> = args.iter().map(|x| x.as_os_str()).collect();
            let out = vc(&a, None);
            refused(&out, "symlink", &what);
            if what.starts_with("cat") {
                assert!(out.stdout.starts_with(b"{"), "{what}: disk bytes written");
            }
            assert_eq!(print(&t.decoy.join("0.vhd")), decoys[0], "{what}");
            assert_eq!(print(&t.decoy.join("1.vhd")), decoys[1], "{what}");
            assert!(
                fs::symlink_metadata(&member).unwrap().is_symlink(),
                "{what}"
            );
            assert!(!out_vhd.exists(), "{what}: wrote an output");
        }
    }
}

#[test]
fn a_fifo_member_is_not_regular_and_never_blocks() {
    if !have_qemu() {
        return;
    }
    let t = tree();
    fs::remove_file(t.chain.join("1.vhd")).unwrap();
    let st = Command::new("mkfifo")
        .arg(t.chain.join("1.vhd"))
        .status()
        .unwrap();
    assert!(st.success());
    let out_vhd = t.chain.parent().unwrap().join("out.vhd");
    for (what, args) in dir_commands(&t.chain, &out_vhd) {
        let a: Vec<&std::ffi::OsStr> = args.iter().map(|x| x.as_os_str()).collect();
        refused(&vc(&a, None), "not_regular", what);
    }
}

#[test]
fn files_changed_are_never_reached_through_a_link_named_directly() {
    if !have_qemu() {
        return;
    }
    let t = tree();
    let link = t.chain.join("link.vhd");
    let plink = t.chain.join("plink.vhd");
    std::os::unix::fs::symlink(t.decoy.join("0.vhd"), &link).unwrap();
    std::os::unix::fs::symlink(t.decoy.join("1.vhd"), &plink).unwrap();
    let decoys = [print(&t.decoy.join("0.vhd")), print(&t.decoy.join("1.vhd"))];
    let parent = t.chain.join("1.vhd");
    let child = t.chain.join("0.vhd");
    let cases: Vec<(&str, Vec<&std::ffi::OsStr>)> = vec![
        (
            "set-parent LINK",
            vec![os("set-parent"), link.as_os_str(), parent.as_os_str()],
        ),
        (
            "set-parent --no-uuid-check LINK",
            vec![
                os("set-parent"),
                os("--no-uuid-check"),
                link.as_os_str(),
                parent.as_os_str(),
            ],
        ),
        (
            "resize LINK",
            vec![os("resize"), link.as_os_str(), os("16M")],
        ),
        (
            "resize --in-place LINK",
            vec![os("resize"), os("--in-place"), link.as_os_str(), os("16M")],
        ),
        (
            "coalesce CHILD LINK",
            vec![os("coalesce"), child.as_os_str(), plink.as_os_str()],
        ),
        (
            "coalesce --in-place CHILD LINK",
            vec![
                os("coalesce"),
                os("--in-place"),
                child.as_os_str(),
                plink.as_os_str(),
            ],
        ),
    ];
    for (what, args) in cases {
        refused(&vc(&args, None), "symlink", what);
        assert_eq!(print(&t.decoy.join("0.vhd")), decoys[0], "{what}");
        assert_eq!(print(&t.decoy.join("1.vhd")), decoys[1], "{what}");
        assert!(fs::symlink_metadata(&link).unwrap().is_symlink());
    }
    // Only read, a link named directly is the operator's: followed, as
    // qemu-img follows it.
    let out = vc(&[os("info"), link.as_os_str()], None);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(records(&out)[0]["vhd"]["disk_type"], "differencing");
    let out = vc(&[os("check"), plink.as_os_str()], None);
    assert_eq!(out.status.code(), Some(0), "{:?}", records(&out));
    let out = vc(&[os("cat"), plink.as_os_str()], None);
    assert_eq!(out.status.code(), Some(0));
    assert!(out.stdout.len() >= 8 << 20);
    assert_eq!(print(&t.decoy.join("0.vhd")), decoys[0]);
}

/// A shell command that moves `other` over `target` (a rename: the name
/// now holds another file).
fn swap(other: &Path, target: &Path) -> String {
    format!(
        "mv -f '{}' '{}'",
        other.to_str().unwrap(),
        target.to_str().unwrap()
    )
}

#[test]
fn a_file_swapped_between_judging_and_writing_is_never_written() {
    if !have_qemu() {
        return;
    }
    type Case = (
        &'static str,
        fn(&Path) -> Vec<std::ffi::OsString>,
        &'static str,
    );
    let cases: Vec<Case> = vec![
        (
            "fix",
            |d| vec!["fix".into(), d.as_os_str().to_owned()],
            "0.vhd",
        ),
        (
            "set-parent",
            |d| {
                vec![
                    "set-parent".into(),
                    d.join("0.vhd").into(),
                    d.join("1.vhd").into(),
                ]
            },
            "0.vhd",
        ),
        (
            "resize",
            |d| vec!["resize".into(), d.join("1.vhd").into(), "16M".into()],
            "1.vhd",
        ),
        (
            "resize --in-place",
            |d| {
                vec![
                    "resize".into(),
                    "--in-place".into(),
                    d.join("1.vhd").into(),
                    "16M".into(),
                ]
            },
            "1.vhd",
        ),
        (
            "coalesce",
            |d| {
                vec![
                    "coalesce".into(),
                    d.join("0.vhd").into(),
                    d.join("1.vhd").into(),
                ]
            },
            "1.vhd",
        ),
        (
            "coalesce --in-place",
            |d| {
                vec![
                    "coalesce".into(),
                    "--in-place".into(),
                    d.join("0.vhd").into(),
                    d.join("1.vhd").into(),
                ]
            },
            "1.vhd",
        ),
        (
            "coalesce --chain",
            |d| {
                vec![
                    "coalesce".into(),
                    "--chain".into(),
                    d.as_os_str().to_owned(),
                ]
            },
            "1.vhd",
        ),
    ];
    for (var, when) in [
        (HOOK, "before writing"),
        (
            "IMAGE_TOOLS_TEST_HOOK_TREE_BEFORE_REPLACE",
            "before the replace",
        ),
    ] {
        for (what, argv, victim) in &cases {
            if var != HOOK && what.contains("--in-place") {
                // Changed in place: nothing is renamed.
                continue;
            }
            let what = format!("{what} ({when})");
            let t = tree();
            // The file swapped in: a real VHD of its own, outside the chain
            // until the hook moves it over the member being changed.
            let other = t.decoy.join("other.vhd");
            create_dynamic(&other, "8M");
            support::qemu_write(&other, &[(0x77, 0, 4096)]);
            let before = print(&other);
            let target = t.chain.join(victim);
            let a = argv(&t.chain);
            let a: Vec<&std::ffi::OsStr> = a.iter().map(|x| x.as_os_str()).collect();
            let out = vc_at(&a, var, Some(&swap(&other, &target)));
            refused(&out, "changed", &what);
            // The name holds the swapped-in file, bytes, inode and mtime as
            // they were: nothing was written into it or over it.
            assert_eq!(print(&target), before, "{what}");
            let left: Vec<String> = fs::read_dir(&t.chain)
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with('.'))
                .collect();
            assert!(left.is_empty(), "{what}: left behind {left:?}");
        }
    }
}

/// `coalesce --chain DIR` over three members: between its two steps the
/// path DIR is moved away and replaced by a link to a decoy chain. The
/// second step still works in the directory opened at the start (now
/// under its new name); the decoy chain is not read or written.
#[test]
fn coalesce_chain_stays_in_the_directory_it_opened() {
    if !have_qemu() {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let top = t.path();
    let (chain, moved, decoy) = (top.join("chain"), top.join("moved"), top.join("decoy"));
    for d in [&chain, &decoy] {
        fs::create_dir(d).unwrap();
        create_dynamic(&d.join("2.vhd"), "8M");
        support::qemu_write(&d.join("2.vhd"), &[(0x22, 0, 65536)]);
        create_dynamic(&d.join("1.vhd"), "8M");
        make_child(&d.join("1.vhd"), &d.join("2.vhd"));
        support::qemu_write(&d.join("1.vhd"), &[(0x11, 65536, 65536)]);
        create_dynamic(&d.join("0.vhd"), "8M");
        make_child(&d.join("0.vhd"), &d.join("1.vhd"));
        support::qemu_write(&d.join("0.vhd"), &[(0x33, 131072, 4096)]);
    }
    let want = support::convert(&chain.join("0.vhd"));
    let decoys: Vec<Print> = ["0.vhd", "1.vhd", "2.vhd"]
        .iter()
        .map(|n| print(&decoy.join(n)))
        .collect();
    let hook = format!(
        "mv '{}' '{}' && ln -s '{}' '{}'",
        chain.display(),
        moved.display(),
        decoy.display(),
        chain.display()
    );
    let out = vc_at(
        &[os("coalesce"), os("--chain"), chain.as_os_str()],
        "IMAGE_TOOLS_TEST_HOOK_VHD_CHAIN_COALESCE_NEXT_STEP",
        Some(&hook),
    );
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        fs::symlink_metadata(&chain)
            .unwrap()
            .file_type()
            .is_symlink()
    );
    for (n, p) in ["0.vhd", "1.vhd", "2.vhd"].iter().zip(&decoys) {
        assert_eq!(&print(&decoy.join(n)), p, "decoy {n} changed");
    }
    // The base of the directory opened holds the whole disk.
    let base = support::convert(&moved.join("2.vhd"));
    assert_eq!(base, want);
}
