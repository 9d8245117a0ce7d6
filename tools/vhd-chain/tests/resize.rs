//! `vhd-chain resize`: grown images read as before plus zeros, by qemu-img
//! and libvhdi; the BAT grows in place with blocks moved out of its way;
//! refusals change nothing; an in-place resize killed mid-way is rolled
//! back byte-for-byte by the next run.
#![cfg(test)]

mod support;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use support::{
    be32, convert, create_dynamic, have_libvhdi, have_qemu, libvhdi_raw, listing, make_child,
    model, qemu_virtual_size, qemu_write,
};
use test_support::run_ok;
use vhd_chain::read::Chain;

const MIB: u64 = 1 << 20;
/// qemu-img's "64M": the CHS product it rounds up to (tests/read.rs).
const SIZE_64M: u64 = 964 * 8 * 17 * 512;
const WRITES: &[(u8, u64, u64)] = &[(0xab, 0, 3 * MIB), (0x5a, 60 * MIB, MIB)];

fn vc() -> Command {
    Command::new(env!("CARGO_BIN_EXE_vhd-chain"))
}

/// Run vhd-chain; the output.
fn vc_run(args: &[&str], env: Option<(&str, &str)>) -> Output {
    let mut c = vc();
    c.args(args);
    if let Some((k, v)) = env {
        c.env(k, v);
    }
    c.output().unwrap()
}

/// The `vhd` facet of the one record printed.
fn facet(out: &Output) -> serde_json::Value {
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{e}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    v["vhd"].clone()
}

fn resize_ok(p: &Path, size: &str, extra: &[&str]) -> serde_json::Value {
    let mut args = vec!["resize", p.to_str().unwrap(), size];
    args.extend_from_slice(extra);
    let out = vc_run(&args, None);
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    facet(&out)
}

fn check_valid(p: &Path) {
    let out = vc_run(&["check", p.to_str().unwrap()], None);
    assert!(
        out.status.success(),
        "check: {}",
        String::from_utf8_lossy(&out.stdout)
    );
}

/// `before` followed by zeros up to `size`.
fn grown(before: &[u8], size: u64) -> Vec<u8> {
    let mut v = before.to_vec();
    v.resize(size as usize, 0);
    v
}

#[test]
fn a_qemu_image_grows_past_its_bat_and_reads_the_same_plus_zeros() {
    if !have_qemu() {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let p = t.path().join("disk.vhd");
    create_dynamic(&p, "64M");
    qemu_write(&p, WRITES);
    fs::set_permissions(&p, fs::Permissions::from_mode(0o640)).unwrap();
    let before = convert(&p);
    assert_eq!(before.len() as u64, SIZE_64M);

    // A crashed run's copy (pid 0 is never a process) is cleaned up.
    fs::write(t.path().join(".disk.vhd.tmp-0-7"), b"half a copy").unwrap();
    let new = 300 * MIB;
    let f = resize_ok(&p, "300M", &[]);
    assert_eq!(f["step"], "resize");
    assert_eq!(f["method"], "bat_grown");
    assert_eq!(f["from_size"], SIZE_64M);
    assert_eq!(f["to_size"], new);
    assert_eq!(f["bat_entries"], serde_json::json!([33, 150]));
    // qemu puts block 0 right after its one-sector BAT.
    assert!(f["blocks_moved"].as_u64().unwrap() >= 1, "{f}");
    // 300 MiB is no CHS product: qemu would read a smaller disk from the
    // geometry of a `qemu` image, so the creator becomes qem2.
    assert_eq!(f["creator_was"], "qemu");
    assert_eq!(f["mode"], "copy");

    assert_eq!(qemu_virtual_size(&p), new);
    let want = grown(&before, new);
    assert!(
        convert(&p) == want,
        "qemu-img reads the old disk plus zeros"
    );
    if have_libvhdi() {
        // libvhdi believes the original size (support::libvhdi_raw).
        let l = libvhdi_raw(&[&p], MIB);
        assert_eq!(l.len() as u64, SIZE_64M);
        assert!(l[..] == want[..l.len()], "and so does libvhdi");
    }
    let mut ours = Vec::new();
    Chain::open(std::slice::from_ref(&p))
        .unwrap()
        .copy_to(&mut ours)
        .unwrap();
    assert!(ours == want, "and our reader");
    check_valid(&p);
    assert_eq!(
        fs::metadata(&p).unwrap().permissions().mode() & 0o777,
        0o640
    );
    assert_eq!(listing(t.path()), vec!["disk.vhd".to_string()]);

    // The same size again changes nothing.
    let bytes = fs::read(&p).unwrap();
    let f = resize_ok(&p, &new.to_string(), &[]);
    assert_eq!(f["method"], "unchanged");
    assert!(fs::read(&p).unwrap() == bytes);
}

#[test]
fn within_the_bat_only_the_footer_changes() {
    if !have_qemu() {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let p = t.path().join("disk.vhd");
    create_dynamic(&p, "64M");
    qemu_write(&p, WRITES);
    let before = fs::read(&p).unwrap();
    let raw = convert(&p);
    // 33 entries of 2 MiB cover 66 MiB (a CHS product? no: qem2 again).
    let f = resize_ok(&p, "66M", &[]);
    assert_eq!(f["method"], "footer");
    assert_eq!(f["blocks_moved"], 0);
    let after = fs::read(&p).unwrap();
    assert_eq!(after.len(), before.len());
    // Only the two footer copies differ.
    let l = before.len();
    assert!(after[512..l - 512] == before[512..l - 512]);
    assert_eq!(qemu_virtual_size(&p), 66 * MIB);
    assert!(convert(&p) == grown(&raw, 66 * MIB));
    check_valid(&p);
}

#[test]
fn a_fixed_disk_grows() {
    if !have_qemu() {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let p = t.path().join("fixed.vhd");
    run_ok(
        Command::new("qemu-img")
            .args(["create", "-q", "-f", "vpc", "-o", "subformat=fixed"])
            .arg(&p)
            .arg("8M"),
    );
    qemu_write(&p, &[(0x77, MIB, MIB), (0x78, 7 * MIB, 4096)]);
    let raw = convert(&p);
    let f = resize_ok(&p, "20M", &[]);
    assert_eq!(f["disk_type"], "fixed");
    assert_eq!(f["method"], "fixed_extended");
    assert_eq!(fs::metadata(&p).unwrap().len(), 20 * MIB + 512);
    assert_eq!(qemu_virtual_size(&p), 20 * MIB);
    assert!(convert(&p) == grown(&raw, 20 * MIB));
    check_valid(&p);
}

#[test]
fn a_differencing_child_grows_larger_than_its_parent() {
    if !have_qemu() {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let (child, parent) = (t.path().join("0.vhd"), t.path().join("1.vhd"));
    create_dynamic(&parent, "64M");
    create_dynamic(&child, "64M");
    let base_writes = [(0x11, 0, 4 * MIB), (0x22, 62 * MIB, MIB)];
    // Whole blocks: qemu sets every bitmap bit of a block it allocates.
    let child_writes = [(0x33, 2 * MIB, 2 * MIB), (0x44, 40 * MIB, 2 * MIB)];
    qemu_write(&parent, &base_writes);
    qemu_write(&child, &child_writes);
    make_child(&child, &parent);
    let new = 100 * MIB;
    let f = resize_ok(&child, "100M", &[]);
    assert_eq!(f["disk_type"], "differencing");
    // Beyond the parent's size the chain reads zeros.
    let mut want = vec![0u8; new as usize];
    model(&mut want, &base_writes);
    model(&mut want, &child_writes);
    let mut ours = Vec::new();
    let mut c = Chain::open(&[child.clone(), parent.clone()]).unwrap();
    assert_eq!(c.virtual_size(), new);
    c.copy_to(&mut ours).unwrap();
    assert!(ours == want);
    // Still a child of the same parent.
    let b = fs::read(&child).unwrap();
    assert_eq!(be32(&b, b.len() - 512 + 60), 4);
    check_valid(&child);
    // The flattened chain has the child's size and content.
    let out = t.path().join("flat.vhd");
    let o = vc_run(
        &[
            "flatten",
            t.path().to_str().unwrap(),
            "-o",
            out.to_str().unwrap(),
        ],
        None,
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stdout));
    assert!(convert(&out) == want);
}

#[test]
fn a_blktap_image_with_a_batmap_grows_in_place() {
    if !have_qemu() {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let dir = t.path().join("chain");
    fs::create_dir(&dir).unwrap();
    create_dynamic(&dir.join("0.vhd"), "64M");
    qemu_write(&dir.join("0.vhd"), WRITES);
    let raw = convert(&dir.join("0.vhd"));
    // flatten writes a tap 1.3 image with a batmap right after its BAT.
    let p = t.path().join("tap.vhd");
    let o = vc_run(
        &["flatten", dir.to_str().unwrap(), "-o", p.to_str().unwrap()],
        None,
    );
    assert!(o.status.success());
    let f = resize_ok(&p, "2G", &["--in-place"]);
    assert_eq!(f["mode"], "in_place");
    assert_eq!(f["method"], "bat_grown");
    assert_eq!(f["journal"], "none");
    assert!(
        f.get("creator_was").is_none(),
        "tap images keep their creator"
    );
    check_valid(&p);
    assert_eq!(qemu_virtual_size(&p), 2048 * MIB);
    let want = grown(&raw, 2048 * MIB);
    assert!(convert(&p) == want);
    if have_libvhdi() {
        let l = libvhdi_raw(&[&p], MIB);
        assert_eq!(l.len() as u64, SIZE_64M);
        assert!(l[..] == want[..l.len()]);
    }
    // No journal left behind.
    assert_eq!(
        listing(t.path()),
        vec!["chain".to_string(), "tap.vhd".to_string()]
    );
}

#[test]
fn refusals_change_nothing() {
    if !have_qemu() {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let p = t.path().join("disk.vhd");
    create_dynamic(&p, "64M");
    qemu_write(&p, WRITES);
    let bytes = fs::read(&p).unwrap();
    let text = t.path().join("notes.txt");
    fs::write(&text, "not a vhd\n".repeat(100)).unwrap();
    for (file, size, kind) in [
        (&p, "32M", "refused"),
        (&p, "100000001", "refused"),
        (&p, "3000G", "refused"),
        (&text, "1G", "not_a_vhd"),
    ] {
        let out = vc_run(&["resize", file.to_str().unwrap(), size], None);
        assert_eq!(out.status.code(), Some(2), "{size}");
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(v["error"]["kind"], kind, "{size}: {v}");
    }
    assert!(fs::read(&p).unwrap() == bytes);
    assert_eq!(
        listing(t.path()),
        vec!["disk.vhd".to_string(), "notes.txt".to_string()]
    );
    // --journal needs --in-place.
    let out = vc_run(
        &["resize", p.to_str().unwrap(), "1G", "--journal", "j"],
        None,
    );
    assert_eq!(out.status.code(), Some(2));
}

/// Every way an in-place resize can die between its first and last write:
/// the file is left poisoned (no VHD reader takes it), and the next run
/// rolls it back byte-for-byte before doing its own work.
#[test]
fn an_in_place_resize_killed_mid_way_is_rolled_back_by_the_next_run() {
    if !have_qemu() {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let orig = t.path().join("orig.vhd");
    create_dynamic(&orig, "64M");
    qemu_write(&orig, WRITES);
    let orig_bytes = fs::read(&orig).unwrap();
    let raw = convert(&orig);
    // Writes of a BAT-growing resize: zeroing, the moved block, the BAT,
    // header and footers; crash before each of the first few and the last.
    for crash in [0usize, 1, 2, 4, 6] {
        let p: PathBuf = t.path().join(format!("disk{crash}.vhd"));
        fs::copy(&orig, &p).unwrap();
        let journal = t.path().join(format!(".disk{crash}.vhd.vhd-chain-journal"));
        let out = vc_run(
            &["resize", p.to_str().unwrap(), "300M", "--in-place"],
            Some(("VHD_CHAIN_TEST_CRASH_AFTER_WRITES", &crash.to_string())),
        );
        assert_eq!(out.status.signal(), Some(libc::SIGABRT), "crash {crash}");
        assert!(journal.exists(), "crash {crash}: the journal stays");
        // Poisoned: qemu and our reader refuse it, saying why.
        let q = Command::new("qemu-img")
            .args(["info", "-f", "vpc"])
            .arg(&p)
            .output()
            .unwrap();
        assert!(
            !q.status.success(),
            "crash {crash}: qemu opened a half-resized image"
        );
        let e = Chain::open(std::slice::from_ref(&p))
            .unwrap_err()
            .to_string();
        assert!(e.contains("v_poison"), "{e}");
        let o = vc_run(&["resize", p.to_str().unwrap(), "1G"], None);
        assert!(String::from_utf8_lossy(&o.stdout).contains("poisoned"));

        // Re-run at the old size: rolled back, nothing else to do.
        let f = resize_ok(&p, &SIZE_64M.to_string(), &["--in-place"]);
        assert_eq!(f["journal"], "restored", "crash {crash}");
        assert_eq!(f["method"], "unchanged");
        assert!(
            fs::read(&p).unwrap() == orig_bytes,
            "crash {crash}: byte-for-byte"
        );
        assert!(!journal.exists());
        // And the resize itself, after another crash, on re-run.
        let _ = vc_run(
            &["resize", p.to_str().unwrap(), "300M", "--in-place"],
            Some(("VHD_CHAIN_TEST_CRASH_AFTER_WRITES", &crash.to_string())),
        );
        let f = resize_ok(&p, "300M", &["--in-place"]);
        assert_eq!(f["journal"], "restored");
        assert_eq!(f["method"], "bat_grown");
        assert!(convert(&p) == grown(&raw, 300 * MIB), "crash {crash}");
        assert!(!journal.exists());
    }
    // A journal named explicitly works the same way.
    let p = t.path().join("named.vhd");
    fs::copy(&orig, &p).unwrap();
    let j = t.path().join("resize.journal");
    let args = [
        "resize",
        p.to_str().unwrap(),
        "200M",
        "--in-place",
        "--journal",
        j.to_str().unwrap(),
    ];
    let out = vc_run(&args, Some(("VHD_CHAIN_TEST_CRASH_AFTER_WRITES", "3")));
    assert!(!out.status.success());
    assert!(j.exists());
    let out = vc_run(&args, None);
    assert!(out.status.success());
    assert_eq!(facet(&out)["journal"], "restored");
    assert!(!j.exists());
    assert!(convert(&p) == grown(&raw, 200 * MIB));
}

/// Hostile metadata is refused before anything is allocated from it: a
/// fixed footer claiming 512 bytes at the end of a 1 GiB (sparse) file.
#[test]
fn a_fixed_footer_far_from_its_data_is_refused() {
    if !have_qemu() {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("small.vhd");
    run_ok(
        Command::new("qemu-img")
            .args(["create", "-q", "-f", "vpc", "-o", "subformat=fixed"])
            .arg(&src)
            .arg("1M"),
    );
    let b = fs::read(&src).unwrap();
    let mut footer = b[b.len() - 512..].to_vec();
    footer[40..48].copy_from_slice(&512u64.to_be_bytes());
    footer[48..56].copy_from_slice(&512u64.to_be_bytes());
    support::fix_sum(&mut footer, 64);
    let p = t.path().join("hostile.vhd");
    let f = fs::File::create(&p).unwrap();
    f.set_len(1 << 30).unwrap();
    std::os::unix::fs::FileExt::write_all_at(&f, &footer, (1 << 30) - 512).unwrap();
    drop(f);
    let out = vc_run(&["resize", p.to_str().unwrap(), "2G"], None);
    assert_eq!(out.status.code(), Some(2));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["error"]["kind"], "bad_image", "{v}");
}
