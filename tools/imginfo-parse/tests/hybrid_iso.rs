//! Hybrid ISOs (ISO 9660 plus an MBR or GPT boot record in its system
//! area, the form of most distribution ISOs) are one layout to `--check`:
//! raw to qemu and acceptable as `--expect-format iso`. An ISO that also
//! carries a disk-image header qemu or Glance's inspector reads (qcow2,
//! QED, VMDK, a VHD footer) stays refused as `multiple_formats`, and the
//! reason names the structure found.
//!
//! Real images come from Debian packages when installed: iPXE's
//! `/usr/lib/ipxe/ipxe.iso` (package `ipxe`, which `.ci/run` installs, so
//! under CI it must be there) and memtest86+'s ISOs (package `memtest86+`,
//! used when present). The rest is built here with xorriso, the way
//! isohybrid and distribution build scripts lay hybrids out, and with
//! qemu-img for the planted headers.
#![cfg(test)]

mod support;

use serde_json::Value;
use std::path::Path;
use support::*;

fn failed_checks(rec: &Value) -> Vec<String> {
    rec["check"]["failures"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["check"].as_str().unwrap().to_owned())
        .collect()
}

/// One record for `args` (run in `dir`), with its exit status.
fn one(dir: Option<&Path>, args: &[&str]) -> (i32, Value) {
    let r = run_in(dir, args, &[], b"");
    assert_eq!(r.records.len(), 1, "{args:?}: {}{}", r.stdout, r.stderr);
    (r.code, r.records[0].clone())
}

/// A hybrid ISO is accepted as iso and as raw, natively and through
/// qemu-img, and is raw to qemu.
fn assert_accepted(dir: Option<&Path>, file: &str, table: &str) {
    for expect in ["iso", "raw"] {
        let (code, r) = one(dir, &["--check", "--expect-format", expect, file]);
        assert_eq!(code, 0, "{file} as {expect}: {r}");
        assert_eq!(r["check"]["acceptable"], true, "{file} as {expect}: {r}");
        let info = &r["info"];
        assert_eq!(info["format"], "raw", "{file}: {info}");
        let det: Vec<&str> = info["detected_formats"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        assert_eq!(det, ["raw", "iso", table], "{file}");
        assert_eq!(info["partition_table"]["partitions_within_file"], true);
    }
    // Read as -f raw: the detection beside the forced read keeps the
    // table's details, so the verdict is the same.
    let (code, r) = one(
        dir,
        &["-f", "raw", "--check", "--expect-format", "iso", file],
    );
    assert_eq!(code, 0, "{file} -f raw: {r}");
    if qemu_img().is_some() {
        for args in [&["--qemu"][..], &["--qemu", "-f", "raw"]] {
            let mut argv = args.to_vec();
            argv.extend(["--check", "--expect-format", "iso", file]);
            let (code, r) = one(dir, &argv);
            assert_eq!(code, 0, "{file} through qemu-img {args:?}: {r}");
            assert_eq!(r["info"]["format"], "raw", "{file}: qemu-img: {r}");
            assert_eq!(r["info"]["source"], "qemu_json");
            // The differential: the native reading is qemu-img's.
            let (_, n) = one(dir, &[file]);
            for k in ["format", "virtual_size", "encrypted", "dirty_flag"] {
                assert_eq!(n["info"][k], r["info"][k], "{file}: {k}");
            }
        }
    }
}

#[test]
fn debian_packaged_isos_are_isos() {
    // (path, package, required under CI)
    let images = [
        ("/usr/lib/ipxe/ipxe.iso", "ipxe", true),
        ("/usr/lib/memtest86+/memtest86+x64.iso", "memtest86+", true),
        ("/usr/lib/memtest86+/memtest86+ia32.iso", "memtest86+", true),
    ];
    for (path, package, required) in images {
        if !Path::new(path).is_file() {
            assert!(
                !(required && std::env::var_os("CI").is_some()),
                "{path} is required in CI (apt-get install {package})"
            );
            eprintln!("SKIPPED {path}: package {package} is not installed");
            continue;
        }
        assert_accepted(None, path, "mbr");
        let (_, r) = one(None, &[path]);
        let iso = &r["info"]["iso"];
        assert_eq!(iso["type"], "iso9660", "{path}: {iso}");
        assert_eq!(iso["el_torito"], true, "{path}: {iso}");
    }
}

/// xorriso, or a skip (a failure under CI, which installs it).
fn xorriso() -> bool {
    test_support::require("xorriso", test_support::runs("xorriso"))
}

/// A tree with a BIOS boot image and an EFI image, plus a blank MBR
/// template (xorriso copies its first 432 bytes of code; any will do).
fn iso_tree() -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    let tree = d.path().join("tree");
    std::fs::create_dir_all(tree.join("boot")).unwrap();
    std::fs::write(tree.join("hello.txt"), b"hello\n").unwrap();
    std::fs::write(tree.join("boot/boot.img"), vec![0u8; 2048]).unwrap();
    std::fs::write(tree.join("efi.img"), vec![0u8; 1440 << 10]).unwrap();
    std::fs::write(d.path().join("mbr.bin"), vec![0u8; 512]).unwrap();
    d
}

fn xorriso_iso(dir: &Path, out: &str, args: &[&str]) {
    let mut argv = vec!["xorriso", "-as", "mkisofs", "-quiet", "-V", "HYBRID"];
    argv.extend(args);
    argv.extend(["-o", out, "tree"]);
    sh(dir, &argv);
}

const BIOS: &[&str] = &["-b", "boot/boot.img", "-no-emul-boot"];

/// The layouts of real hybrids: (file, xorriso options, table kind).
fn hybrids() -> Vec<(&'static str, Vec<&'static str>, &'static str)> {
    let with_bios = |more: &[&'static str]| {
        let mut v = BIOS.to_vec();
        v.extend(more);
        v
    };
    vec![
        // isohybrid's layout (iPXE's): one bootable 0x17 partition from
        // sector 0 over the whole image, padded to a cylinder.
        ("mbr.iso", with_bios(&["-isohybrid-mbr", "mbr.bin"]), "mbr"),
        // memtest86+'s and Debian's: an EFI partition over the El Torito
        // EFI image inside the ISO.
        (
            "efi-inside.iso",
            with_bios(&[
                "-eltorito-alt-boot",
                "-e",
                "efi.img",
                "-no-emul-boot",
                "-isohybrid-mbr",
                "mbr.bin",
                "-isohybrid-gpt-basdat",
            ]),
            "mbr",
        ),
        // An EFI partition appended after the ISO's volume.
        (
            "efi-appended.iso",
            with_bios(&[
                "-isohybrid-mbr",
                "mbr.bin",
                "-append_partition",
                "2",
                "0xef",
                "tree/efi.img",
            ]),
            "mbr",
        ),
        // Ubuntu's: a GPT (protective MBR) with the appended EFI partition.
        (
            "gpt.iso",
            vec![
                "-e",
                "efi.img",
                "-no-emul-boot",
                "-append_partition",
                "2",
                "0xef",
                "tree/efi.img",
                "-appended_part_as_gpt",
                "--mbr-force-bootable",
            ],
            "gpt",
        ),
    ]
}

#[test]
fn hybrids_built_with_xorriso_are_isos() {
    if !xorriso() {
        return;
    }
    let d = iso_tree();
    for (file, args, table) in hybrids() {
        xorriso_iso(d.path(), file, &args);
        assert_accepted(Some(d.path()), file, table);
    }
}

#[test]
fn a_boot_table_pointing_past_the_file_is_a_second_layout() {
    if !xorriso() {
        return;
    }
    let d = iso_tree();
    xorriso_iso(
        d.path(),
        "mbr.iso",
        &[BIOS, &["-isohybrid-mbr", "mbr.bin"]].concat(),
    );
    // Partition 1's sector count (at 446 + 12) made to reach past the end.
    let path = d.path().join("mbr.iso");
    let mut b = std::fs::read(&path).unwrap();
    b[458..462].copy_from_slice(&0x0010_0000u32.to_le_bytes());
    std::fs::write(&path, &b).unwrap();
    let (code, r) = one(
        Some(d.path()),
        &["--check", "--expect-format", "iso", "mbr.iso"],
    );
    assert_eq!(code, 1, "{r}");
    assert_eq!(failed_checks(&r), ["multiple_formats"], "{r}");
    let why = r["check"]["failures"][0]["reason"].as_str().unwrap();
    assert!(
        why.contains("mbr: an MBR partition table, not the ISO's boot record")
            && why.contains("past the end of the file"),
        "{why}"
    );
    // --allow-multi (as the reason says) still lets it through.
    assert!(why.ends_with("(allow with --allow-multi iso,mbr)"), "{why}");
    let (code, _) = one(
        Some(d.path()),
        &[
            "--check",
            "--expect-format",
            "iso",
            "--allow-multi",
            "iso,mbr",
            "mbr.iso",
        ],
    );
    assert_eq!(code, 0);
}

/// Copy `len` bytes from the start of `from` over the start of `to`.
fn plant(dir: &Path, from: &str, to: &str, len: usize) {
    let src = std::fs::read(dir.join(from)).unwrap();
    let mut dst = std::fs::read(dir.join(to)).unwrap();
    let n = len.min(src.len());
    dst[..n].copy_from_slice(&src[..n]);
    std::fs::write(dir.join(to), dst).unwrap();
}

#[test]
fn an_iso_carrying_a_disk_image_header_is_refused() {
    if !xorriso() || qemu_img().is_none() {
        return;
    }
    let d = iso_tree();
    let dir = d.path();
    for (img, fmt, opts) in [
        ("q.qcow2", "qcow2", "cluster_size=512"),
        ("q.qed", "qed", ""),
        ("v.vmdk", "vmdk", "subformat=monolithicFlat"),
        ("f.vhd", "vpc", "subformat=fixed,force_size=on"),
    ] {
        let mut argv = vec!["qemu-img", "create", "-q", "-f", fmt];
        if !opts.is_empty() {
            argv.extend(["-o", opts]);
        }
        argv.extend([img, "2M"]);
        sh(dir, &argv);
    }
    let hybrid = [BIOS, &["-isohybrid-mbr", "mbr.bin"]].concat();
    let cases: &[(&str, &str, usize, &str, &[&str])] = &[
        // The whole 32 KiB system area replaced by a qcow2 (its metadata
        // fits in 32 KiB with 512-byte clusters): the MBR is gone.
        (
            "qcow2-area.iso",
            "q.qcow2",
            32 << 10,
            "qcow2",
            &["qcow2", "iso"],
        ),
        // Only the header planted, the MBR partition table kept.
        (
            "qcow2-head.iso",
            "q.qcow2",
            440,
            "qcow2",
            &["qcow2", "iso", "mbr"],
        ),
        ("qed.iso", "q.qed", 440, "qed", &["qed", "iso", "mbr"]),
        // A VMDK descriptor (text at offset 0, which qemu probes).
        ("vmdk.iso", "v.vmdk", 440, "vmdk", &["vmdk", "iso", "mbr"]),
    ];
    for (file, from, len, fmt, detected) in cases {
        xorriso_iso(dir, file, &hybrid);
        plant(dir, from, file, *len);
        let (code, r) = one(Some(dir), &["--check", "--expect-format", "iso", file]);
        assert_eq!(code, 1, "{file}: {r}");
        assert_eq!(r["info"]["format"], *fmt, "{file}: {r}");
        assert_eq!(r["info"]["detected_formats"], serde_json::json!(detected));
        let checks = failed_checks(&r);
        assert!(
            checks.contains(&"format_mismatch".to_owned()),
            "{file}: {r}"
        );
        let why = r["check"]["failures"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["check"] == "multiple_formats")
            .unwrap_or_else(|| panic!("{file}: no multiple_formats: {r}"))["reason"]
            .as_str()
            .unwrap()
            .to_owned();
        assert!(
            why.contains(&format!(
                "{fmt}: a {fmt} header, which qemu's probe reads the file as"
            )),
            "{file}: {why}"
        );
        // qemu agrees: not raw.
        let (_, q) = one(Some(dir), &["--qemu", file]);
        assert_eq!(q["info"]["format"], *fmt, "{file}: qemu-img: {q}");
    }
    // A fixed VHD's footer appended: raw to qemu's probe, a VHD to -f vpc
    // and to Glance's inspector.
    xorriso_iso(dir, "vhd.iso", &hybrid);
    let vhd = std::fs::read(dir.join("f.vhd")).unwrap();
    let mut iso = std::fs::read(dir.join("vhd.iso")).unwrap();
    iso.extend_from_slice(&vhd[vhd.len() - 512..]);
    std::fs::write(dir.join("vhd.iso"), iso).unwrap();
    let (code, r) = one(Some(dir), &["--check", "--expect-format", "iso", "vhd.iso"]);
    assert_eq!(code, 1, "{r}");
    assert_eq!(r["info"]["format"], "raw", "{r}");
    assert_eq!(failed_checks(&r), ["multiple_formats"], "{r}");
    let why = r["check"]["failures"][0]["reason"].as_str().unwrap();
    assert!(
        why.starts_with("the data matches vpc, iso at once")
            && why.contains("vpc: a vpc header or footer, read as vpc with -f vpc"),
        "{why}"
    );
}
