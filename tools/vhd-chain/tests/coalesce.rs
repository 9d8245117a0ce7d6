//! `vhd-chain coalesce`: a child's sectors end up in its parent (qemu-img,
//! libvhdi and an independent model agree on the result), for any block
//! sizes, a child larger than its parent, set-but-zero sectors; the child
//! is untouched; `--chain` leaves the base holding the disk and names it
//! last (Cinder's coalesce_chain returns the base); an in-place coalesce
//! killed mid-way is rolled back by the next run; unsafe parent names and
//! wrong parents are refused.
#![cfg(test)]

mod support;
use test_support::records;

use std::fs;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use support::{
    Spec, build_vhd, convert, create_dynamic, footer_uuid, have_libvhdi, have_qemu, libvhdi_raw,
    make_child, model, model_runs, qemu_write,
};
use vhd_chain::read::Chain;

const MIB: u64 = 1 << 20;
const SIZE_64M: u64 = 964 * 8 * 17 * 512;

fn vc(args: &[&str], env: Option<(&str, &str)>) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_vhd-chain"));
    c.args(args);
    if let Some((k, v)) = env {
        c.env(k, v);
    }
    c.output().unwrap()
}

/// The records printed, each line parsed.
fn ok(out: &Output) -> Vec<serde_json::Value> {
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    records(out)
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn chain_raw(chain: &[PathBuf]) -> Vec<u8> {
    let mut v = Vec::new();
    Chain::open(chain).unwrap().copy_to(&mut v).unwrap();
    v
}

#[test]
fn a_qemu_child_merges_into_its_qemu_parent() {
    if !have_qemu() {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let (child, parent) = (t.path().join("0.vhd"), t.path().join("1.vhd"));
    create_dynamic(&parent, "64M");
    create_dynamic(&child, "64M");
    // Whole 2 MiB blocks in the child (qemu sets every bit of a block it
    // allocates), over parent data and where the parent has none.
    let base_writes = [(0x11, 0, 6 * MIB), (0x22, 50 * MIB, MIB)];
    let child_writes = [(0x33, 2 * MIB, 2 * MIB), (0x44, 40 * MIB, 2 * MIB)];
    qemu_write(&parent, &base_writes);
    qemu_write(&child, &child_writes);
    make_child(&child, &parent);
    let child_bytes = fs::read(&child).unwrap();
    let mut want = vec![0u8; SIZE_64M as usize];
    model(&mut want, &base_writes);
    model(&mut want, &child_writes);
    assert!(chain_raw(&[child.clone(), parent.clone()]) == want);

    let r = ok(&vc(&["coalesce", s(&child), s(&parent)], None));
    assert_eq!(r.len(), 1);
    let f = &r[0]["vhd"];
    assert_eq!(f["step"], "coalesce");
    assert_eq!(f["sectors_coalesced"], 2 * 2 * MIB / 512);
    // Block 20 (40 MiB) was not in the parent.
    assert_eq!(f["blocks_allocated"], 1);
    assert_eq!(f["ancestors"], 0);
    assert!(f.get("parent_resized").is_none());
    assert!(convert(&parent) == want, "qemu reads the merged parent");
    if have_libvhdi() {
        assert!(libvhdi_raw(&[&parent], MIB) == want, "and so does libvhdi");
    }
    assert!(
        fs::read(&child).unwrap() == child_bytes,
        "the child is untouched"
    );
    let o = vc(&["check", s(&parent)], None);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stdout));
}

/// Mixed small block sizes, set-but-zero sectors, a child larger than
/// its parent, sector runs not aligned to anything.
#[test]
fn small_mixed_blocks_zeros_and_a_larger_child() {
    if !have_qemu() {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let (child, parent) = (t.path().join("0.vhd"), t.path().join("1.vhd"));
    let parent_runs = vec![(0, 3000, 0x51), (5000, 17, 0x52), (12_000, 300, 0x53)];
    build_vhd(&parent, &Spec::base(8 * MIB, 512 * 1024, 1, &parent_runs));
    // The child: 64 KiB blocks, 12 MiB, zeros over parent data, odd runs,
    // data beyond the parent's end.
    let child_runs = vec![
        (10, 5, 0x00),
        (1000, 1, 0x61),
        (2999, 10, 0x62),
        (5003, 3, 0x00),
        (16_383, 2, 0x63),
        (20_000, 129, 0x64),
    ];
    build_vhd(
        &child,
        &Spec::child(12 * MIB, 64 * 1024, 2, (1, "1.vhd"), &child_runs),
    );
    let mut want = vec![0u8; 12 * MIB as usize];
    model_runs(&mut want[..8 * MIB as usize], &parent_runs);
    model_runs(&mut want, &child_runs);
    assert!(
        chain_raw(&[child.clone(), parent.clone()]) == want,
        "our reader"
    );

    // The parent is found by the name in the child's header.
    let r = ok(&vc(&["coalesce", s(&child)], None));
    let f = &r[0]["vhd"];
    assert_eq!(f["parent"], s(&parent));
    assert_eq!(f["parent_resized"], serde_json::json!([8 * MIB, 12 * MIB]));
    assert_eq!(f["sectors_coalesced"], 5 + 1 + 10 + 3 + 2 + 129);
    assert!(chain_raw(std::slice::from_ref(&parent)) == want);
    assert!(convert(&parent) == want, "qemu reads the merged parent");
    if have_libvhdi() {
        // libvhdi believes the original size: the parent's first 8 MiB.
        let l = libvhdi_raw(&[&parent], 512 * 1024);
        assert!(l[..] == want[..l.len()]);
    }
}

#[test]
fn the_chain_coalesces_into_the_base_which_comes_last() {
    if !have_qemu() {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let dir = t.path().join("chain");
    fs::create_dir(&dir).unwrap();
    let (leaf, mid, base) = (dir.join("0.vhd"), dir.join("1.vhd"), dir.join("2.vhd"));
    let base_runs = vec![(0, 4096, 0x11), (100_000, 8, 0x12)];
    let mid_runs = vec![(8, 8, 0x21), (4096, 4096, 0x22)];
    let leaf_runs = vec![(0, 8, 0x00), (4100, 1, 0x31), (120_000, 16, 0x32)];
    build_vhd(&base, &Spec::base(64 * MIB, 2 * MIB, 3, &base_runs));
    build_vhd(
        &mid,
        &Spec::child(64 * MIB, MIB, 4, (3, "2.vhd"), &mid_runs),
    );
    build_vhd(
        &leaf,
        &Spec::child(64 * MIB, 2 * MIB, 5, (4, "1.vhd"), &leaf_runs),
    );
    let mut want = vec![0u8; 64 * MIB as usize];
    for r in [&base_runs, &mid_runs, &leaf_runs] {
        model_runs(&mut want, r);
    }
    let flat = t.path().join("flat.vhd");
    ok(&vc(&["flatten", s(&dir), "-o", s(&flat)], None));

    let r = ok(&vc(&["coalesce", "--chain", s(&dir)], None));
    assert_eq!(r.len(), 3);
    assert_eq!(r[0]["path"], s(&leaf));
    assert_eq!(r[0]["vhd"]["parent"], s(&mid));
    assert_eq!(r[0]["vhd"]["ancestors"], 1);
    assert_eq!(r[1]["path"], s(&mid));
    assert_eq!(r[1]["vhd"]["parent"], s(&base));
    // The last record is the base, holding the whole disk.
    assert_eq!(r[2]["path"], s(&base));
    assert_eq!(r[2]["vhd"]["role"], "base");
    assert_eq!(r[2]["vhd"]["chain_length"], 3);
    assert!(chain_raw(std::slice::from_ref(&base)) == want);
    assert!(convert(&base) == want);
    assert!(convert(&flat) == want, "flatten agrees");
    if have_libvhdi() {
        assert!(libvhdi_raw(&[&base], MIB) == want);
    }
    // The base's identity is kept.
    assert_eq!(footer_uuid(&base), [3; 16]);
}

#[test]
fn an_in_place_coalesce_killed_mid_way_is_rolled_back_by_the_next_run() {
    if !have_qemu() {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let parent_runs = vec![(0, 4096, 0x11), (9000, 100, 0x12)];
    let child_runs = vec![(7, 9, 0x21), (4096, 20, 0x22), (30_000, 4096, 0x23)];
    let mut want = vec![0u8; 32 * MIB as usize];
    model_runs(&mut want, &parent_runs);
    model_runs(&mut want, &child_runs);
    for crash in [0usize, 1, 3, 6, 9] {
        let d = t.path().join(format!("c{crash}"));
        fs::create_dir(&d).unwrap();
        let (child, parent) = (d.join("0.vhd"), d.join("1.vhd"));
        build_vhd(&parent, &Spec::base(32 * MIB, 2 * MIB, 7, &parent_runs));
        build_vhd(
            &child,
            &Spec::child(32 * MIB, 2 * MIB, 8, (7, "1.vhd"), &child_runs),
        );
        let orig = fs::read(&parent).unwrap();
        let journal = d.join(".1.vhd.vhd-chain-journal");
        let args = ["coalesce", s(&child), "--in-place"];
        let out = vc(
            &args,
            Some(("VHD_CHAIN_TEST_CRASH_AFTER_WRITES", &crash.to_string())),
        );
        assert_eq!(out.status.signal(), Some(libc::SIGABRT), "crash {crash}");
        assert!(journal.exists());
        assert!(
            Chain::open(std::slice::from_ref(&parent)).is_err(),
            "poisoned"
        );
        // The re-run rolls back, then coalesces.
        let r = ok(&vc(&args, None));
        assert_eq!(r[0]["vhd"]["journal"], "restored", "crash {crash}");
        assert_eq!(r[0]["vhd"]["mode"], "in_place");
        assert!(!journal.exists());
        assert!(
            chain_raw(std::slice::from_ref(&parent)) == want,
            "crash {crash}"
        );
        assert!(convert(&parent) == want);
        // And a rollback alone restores the original byte for byte.
        fs::write(&parent, &orig).unwrap();
        let _ = vc(
            &args,
            Some(("VHD_CHAIN_TEST_CRASH_AFTER_WRITES", &crash.to_string())),
        );
        vhd_chain::journal::rollback(&journal, &parent).unwrap();
        assert!(fs::read(&parent).unwrap() == orig, "crash {crash}");
    }
}

#[test]
fn wrong_parents_unsafe_names_and_non_children_are_refused() {
    if !have_qemu() {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let d = t.path();
    let base = d.join("base.vhd");
    build_vhd(&base, &Spec::base(4 * MIB, 2 * MIB, 1, &[(0, 8, 1)]));
    let other = d.join("other.vhd");
    build_vhd(&other, &Spec::base(4 * MIB, 2 * MIB, 9, &[]));
    let mk = |name: &str, pname: &str| {
        let p = d.join(name);
        build_vhd(
            &p,
            &Spec::child(4 * MIB, 2 * MIB, 2, (1, pname), &[(0, 1, 2)]),
        );
        p
    };
    let base_bytes = fs::read(&base).unwrap();
    let cases: Vec<(Vec<String>, &str)> = vec![
        // Not differencing.
        (vec![s(&base).into()], "not_differencing"),
        // The header names a path, not a file beside it.
        (
            vec![s(&mk("a.vhd", "../base.vhd")).into()],
            "chain_incomplete",
        ),
        (
            vec![s(&mk("b.vhd", "/etc/passwd")).into()],
            "chain_incomplete",
        ),
        (
            vec![s(&mk("c.vhd", "missing.vhd")).into()],
            "chain_incomplete",
        ),
        // A parent whose UUID is not the recorded one.
        (
            vec![s(&mk("e.vhd", "base.vhd")).into(), s(&other).into()],
            "bad_image",
        ),
    ];
    std::os::unix::fs::symlink(&base, d.join("link.vhd")).unwrap();
    let link_child = mk("f.vhd", "link.vhd");
    let mut cases = cases;
    cases.push((vec![s(&link_child).into()], "chain_incomplete"));
    for (args, kind) in cases {
        let mut a = vec!["coalesce".to_string()];
        a.extend(args.clone());
        let a: Vec<&str> = a.iter().map(String::as_str).collect();
        let out = vc(&a, None);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let r = records(&out);
        assert_eq!(r[0]["error"]["kind"], kind, "{args:?}: {}", r[0]);
    }
    assert!(fs::read(&base).unwrap() == base_bytes);
    // The named parent, properly: works.
    let good = mk("g.vhd", "base.vhd");
    ok(&vc(&["coalesce", s(&good)], None));
}

/// libvhdi reads every member of a chain the project's test writer built
/// (mixed block sizes; runs on 8-sector boundaries, clear of its run-end
/// bug, read in pieces that never span two blocks), the same as our
/// reader and the model; then the chain is coalesced, flattened, and the
/// results read by libvhdi and qemu. Creators Hyper-V (`win `) and `qem2`
/// (qemu believes `current_size` for both; the size is no CHS product).
#[test]
fn libvhdi_agrees_on_chains_of_hyper_v_and_qem2_images() {
    if !have_qemu() || !have_libvhdi() {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let dir = t.path().join("chain");
    fs::create_dir(&dir).unwrap();
    let size = 10 * MIB + 4096;
    let (leaf, mid, base) = (dir.join("0.vhd"), dir.join("1.vhd"), dir.join("2.vhd"));
    let base_runs = vec![(0, 4096, 0x11), (16_000, 1024, 0x12)];
    let mid_runs = vec![(8, 8, 0x21), (2048, 4096, 0x22), (20_000, 8, 0)];
    let leaf_runs = vec![(0, 8, 0x00), (4096, 16, 0x31), (16_384, 64, 0x32)];
    build_vhd(&base, &Spec::base(size, 2 * MIB, 3, &base_runs).by(b"win "));
    build_vhd(
        &mid,
        &Spec::child(size, 512 * 1024, 4, (3, "2.vhd"), &mid_runs).by(b"qem2"),
    );
    build_vhd(
        &leaf,
        &Spec::child(size, MIB, 5, (4, "1.vhd"), &leaf_runs).by(b"win "),
    );
    let mut want = vec![0u8; size as usize];
    for r in [&base_runs, &mid_runs, &leaf_runs] {
        model_runs(&mut want, r);
    }
    let members = [leaf.clone(), mid.clone(), base.clone()];
    assert!(chain_raw(&members) == want, "our reader");
    assert!(
        libvhdi_raw(&[&leaf, &mid, &base], 4096) == want,
        "libvhdi, the whole chain"
    );
    let mut mid_view = vec![0u8; size as usize];
    model_runs(&mut mid_view, &base_runs);
    model_runs(&mut mid_view, &mid_runs);
    assert!(
        libvhdi_raw(&[&mid, &base], 4096) == mid_view,
        "libvhdi, from the middle"
    );
    assert!(
        convert(&base) == libvhdi_raw(&[&base], 4096),
        "the base alone"
    );

    let flat = t.path().join("flat.vhd");
    ok(&vc(&["flatten", s(&dir), "-o", s(&flat)], None));
    assert!(convert(&flat) == want);
    assert!(libvhdi_raw(&[&flat], MIB) == want);
    ok(&vc(&["coalesce", "--chain", s(&dir)], None));
    assert!(
        convert(&base) == want,
        "qemu reads the coalesced Hyper-V base"
    );
    assert!(libvhdi_raw(&[&base], MIB) == want, "and libvhdi");
}
