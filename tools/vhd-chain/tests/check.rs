//! `check::check_file` / `check::check_chain` (vhd-util `check [-p] [-c]`)
//! on VHDs made by qemu-img and qemu-io, then broken one rule at a time by
//! patching bytes here (checksums fixed unless the checksum is the rule).
#![cfg(test)]

mod support;
use support::have_qemu;

use filter::ErrorKind;
use std::fs;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use vhd_chain::check::{CheckError, Options, Report, check_chain, check_file};

const H: u64 = 512;

fn create(dir: &Path, name: &str, opts: &str) -> PathBuf {
    let st = Command::new("qemu-img")
        .args(["create", "-q", "-f", "vpc", "-o", opts, name, "64M"])
        .current_dir(dir)
        .status()
        .unwrap();
    assert!(st.success());
    dir.join(name)
}

fn dynamic(dir: &Path, name: &str) -> PathBuf {
    create(dir, name, "subformat=dynamic")
}

/// A dynamic VHD with 0xab written at 1M..3M (blocks 0 and 1).
fn with_data(dir: &Path, name: &str) -> PathBuf {
    let p = dynamic(dir, name);
    let st = Command::new("qemu-io")
        .args(["-f", "vpc", "-c", "write -P 0xab 1M 2M"])
        .arg(&p)
        .stdout(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(st.success());
    p
}

fn read(p: &Path, off: u64, len: usize) -> Vec<u8> {
    let mut b = vec![0u8; len];
    fs::File::open(p)
        .unwrap()
        .read_exact_at(&mut b, off)
        .unwrap();
    b
}

fn write(p: &Path, off: u64, b: &[u8]) {
    fs::OpenOptions::new()
        .write(true)
        .open(p)
        .unwrap()
        .write_all_at(b, off)
        .unwrap();
}

fn len(p: &Path) -> u64 {
    fs::metadata(p).unwrap().len()
}

fn be32(b: &[u8], o: usize) -> u32 {
    u32::from_be_bytes(b[o..o + 4].try_into().unwrap())
}

fn checksum(b: &[u8], skip: usize) -> u32 {
    let mut s = 0u32;
    for (i, v) in b.iter().enumerate() {
        if i < skip || i >= skip + 4 {
            s = s.wrapping_add(u32::from(*v));
        }
    }
    !s
}

/// Recompute the checksum of the structure of `size` bytes at `off`.
fn fix_sum(p: &Path, off: u64, size: usize, at: usize) {
    let mut b = read(p, off, size);
    let c = checksum(&b, at);
    b[at..at + 4].copy_from_slice(&c.to_be_bytes());
    write(p, off, &b);
}

fn is_fixed(p: &Path) -> bool {
    read(p, 0, 8) != b"conectix"
}

/// Patch both footer copies (the end one only for fixed disks) and fix
/// their checksums.
fn patch_footers(p: &Path, off: usize, bytes: &[u8]) {
    let end = len(p) - H;
    let mut at = vec![end];
    if !is_fixed(p) {
        at.push(0);
    }
    for f in at {
        write(p, f + off as u64, bytes);
        fix_sum(p, f, 512, 64);
    }
}

/// Patch the dynamic header at 512 and fix its checksum.
fn patch_header(p: &Path, off: usize, bytes: &[u8]) {
    write(p, H + off as u64, bytes);
    fix_sum(p, H, 1024, 36);
}

fn rules(r: &Report) -> Vec<&str> {
    r.findings.iter().map(|f| f.rule.as_str()).collect()
}

fn check(p: &Path) -> Report {
    check_file(p, &Options::default()).unwrap()
}

fn assert_valid(r: &Report) {
    assert!(r.valid, "{:#?}", r.findings);
    assert!(r.findings.is_empty());
}

fn assert_rule(r: &Report, rule: &str) {
    assert!(!r.valid, "{rule}: {:#?}", r);
    assert!(rules(r).contains(&rule), "{rule} not in {:#?}", r.findings);
}

/// A fresh copy of `src` named `name` in `dir`.
fn copy(src: &Path, dir: &Path, name: &str) -> PathBuf {
    let d = dir.join(name);
    fs::copy(src, &d).unwrap();
    d
}

#[test]
fn qemu_images_are_valid() {
    if !have_qemu() {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let d = dynamic(t.path(), "d.vhd");
    let r = check(&d);
    assert_valid(&r);
    assert_eq!(r.checked, ["footer", "header", "bat"]);
    let f = create(t.path(), "f.vhd", "subformat=fixed");
    let r = check(&f);
    assert_valid(&r);
    assert_eq!(r.checked, ["footer"]);
    let w = with_data(t.path(), "w.vhd");
    let opts = Options {
        data: true,
        ignore_timestamps: false,
    };
    let r = check_file(&w, &opts).unwrap();
    assert_valid(&r);
    assert!(r.checked.iter().any(|c| c == "data"));
    // JSON shape
    let v = serde_json::to_value(&r).unwrap();
    assert_eq!(v["valid"], true);
    assert!(v["findings"].as_array().unwrap().is_empty());
}

#[test]
fn force_size_images_fail_geometry_too_large() {
    if !have_qemu() {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let q = create(t.path(), "q.vhd", "force_size=on");
    assert_eq!(&read(&q, 28, 4), b"qem2");
    let r = check(&q);
    assert_rule(&r, "geometry_too_large");
    assert!(
        r.findings.iter().all(|f| f.rule == "geometry_too_large"),
        "{:#?}",
        r.findings
    );
}

#[test]
fn footer_rules() {
    if !have_qemu() {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let base = dynamic(t.path(), "base.vhd");
    let now2000 = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        - 946_684_800;
    let cases: Vec<(&str, usize, Vec<u8>)> = vec![
        ("footer_features", 8, 0u32.to_be_bytes().to_vec()),
        ("footer_features", 8, 6u32.to_be_bytes().to_vec()),
        ("footer_version", 12, 0x0002_0000u32.to_be_bytes().to_vec()),
        (
            "footer_timestamp_future",
            24,
            ((now2000 + 86_400) as u32).to_be_bytes().to_vec(),
        ),
        (
            "tap_creator_version",
            28,
            [b"tap\0".as_slice(), &0x0001_0004u32.to_be_bytes()].concat(),
        ),
        ("geometry_too_large", 56, vec![0xff, 0xff, 16, 255]),
        ("disk_type", 60, 5u32.to_be_bytes().to_vec()),
        ("footer_saved_state", 84, vec![2]),
        ("footer_hidden", 85, vec![2]),
        ("footer_reserved", 300, vec![1]),
        ("uuid_null", 68, vec![0; 16]),
        ("footer_poisoned", 0, b"v_poison".to_vec()),
    ];
    for (i, (rule, off, bytes)) in cases.into_iter().enumerate() {
        let p = copy(&base, t.path(), &format!("f{i}.vhd"));
        patch_footers(&p, off, &bytes);
        assert_rule(&check(&p), rule);
    }
    // a future timestamp is fine with ignore_timestamps
    let p = copy(&base, t.path(), "ts.vhd");
    patch_footers(&p, 24, &((now2000 + 86_400) as u32).to_be_bytes());
    let opts = Options {
        data: false,
        ignore_timestamps: true,
    };
    assert_valid(&check_file(&p, &opts).unwrap());

    // checksum: the end footer only
    let p = copy(&base, t.path(), "sum.vhd");
    let end = len(&p) - H;
    let b = read(&p, end + 64, 1);
    write(&p, end + 64, &[b[0] ^ 1]);
    assert_rule(&check(&p), "footer_checksum");
    // the copy at 0 only
    let p = copy(&base, t.path(), "sum0.vhd");
    let b = read(&p, 64, 1);
    write(&p, 64, &[b[0] ^ 1]);
    assert_rule(&check(&p), "footer_checksum");
    // copies differ (both valid)
    let p = copy(&base, t.path(), "differ.vhd");
    write(&p, 40, &[1]);
    fix_sum(&p, 0, 512, 64);
    assert_rule(&check(&p), "footer_copies_differ");
    // end footer missing (truncated to the header and BAT)
    let p = copy(&base, t.path(), "cut.vhd");
    let f = fs::OpenOptions::new().write(true).open(&p).unwrap();
    f.set_len(len(&p) - H).unwrap();
    let r = check(&p);
    assert_rule(&r, "footer_cookie");
}

#[test]
fn fixed_rules() {
    if !have_qemu() {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let f = create(t.path(), "f.vhd", "subformat=fixed");
    patch_footers(&f, 16, &512u64.to_be_bytes());
    assert_rule(&check(&f), "footer_data_offset");
    let f = create(t.path(), "g.vhd", "subformat=fixed");
    let l = len(&f);
    let foot = read(&f, l - H, 512);
    write(&f, l, &foot); // now 512 more bytes of "data" before the footer
    assert_rule(&check(&f), "fixed_size_mismatch");
    let f = create(t.path(), "h.vhd", "subformat=fixed");
    patch_footers(&f, 60, &5u32.to_be_bytes());
    assert_rule(&check(&f), "disk_type");
}

#[test]
fn header_rules() {
    if !have_qemu() {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let base = dynamic(t.path(), "base.vhd");
    let cases: Vec<(&str, usize, Vec<u8>)> = vec![
        ("header_cookie", 0, b"cxspars!".to_vec()),
        ("header_data_offset", 8, 0u64.to_be_bytes().to_vec()),
        ("table_offset", 16, 1600u64.to_be_bytes().to_vec()),
        ("table_offset", 16, 0u64.to_be_bytes().to_vec()),
        ("header_version", 24, 0x0001_0001u32.to_be_bytes().to_vec()),
        ("bat_outside_file", 28, 100_000u32.to_be_bytes().to_vec()),
        ("bat_too_small", 28, 10u32.to_be_bytes().to_vec()),
        (
            "block_size_not_power_of_two",
            32,
            (3u32 << 20).to_be_bytes().to_vec(),
        ),
        (
            "block_size_too_large",
            32,
            (4u32 << 20).to_be_bytes().to_vec(),
        ),
        ("block_size_too_small", 32, 256u32.to_be_bytes().to_vec()),
        ("header_reserved", 60, vec![1]),
        ("header_reserved", 900, vec![1]),
        ("parent_fields_nonzero", 40, vec![7; 16]),
        ("parent_fields_nonzero", 56, vec![0, 0, 0, 1]),
        ("parent_fields_nonzero", 64, vec![0, b'x']),
        ("parent_fields_nonzero", 576, b"W2ku".to_vec()),
    ];
    for (i, (rule, off, bytes)) in cases.into_iter().enumerate() {
        let p = copy(&base, t.path(), &format!("h{i}.vhd"));
        patch_header(&p, off, &bytes);
        assert_rule(&check(&p), rule);
    }
    let p = copy(&base, t.path(), "sum.vhd");
    write(&p, H + 36, &[0]);
    assert_rule(&check(&p), "header_checksum");
    // header offset out of the file
    let p = copy(&base, t.path(), "off.vhd");
    patch_footers(&p, 16, &(1u64 << 40).to_be_bytes());
    assert_rule(&check(&p), "header_offset");
}

/// Make `child` a differencing disk of `parent` (footer type 4, header
/// parent UUID = the parent's footer UUID), checksums fixed.
fn make_child(child: &Path, parent: &Path) {
    patch_footers(child, 60, &4u32.to_be_bytes());
    let l = len(parent);
    let uuid = read(parent, l - H + 68, 16);
    patch_header(child, 40, &uuid);
}

#[test]
fn differencing_and_locator_rules() {
    if !have_qemu() {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let base = dynamic(t.path(), "base.vhd");
    let child = dynamic(t.path(), "child.vhd");
    make_child(&child, &base);
    assert_valid(&check(&child));
    // a good W2ku locator in a sector appended before the end footer
    let good = copy(&child, t.path(), "loc.vhd");
    let l = len(&good);
    let foot = read(&good, l - H, 512);
    let data: Vec<u8> = ".\\base.vhd"
        .encode_utf16()
        .flat_map(u16::to_le_bytes)
        .collect();
    let mut sector = data.clone();
    sector.resize(512, 0);
    write(&good, l - H, &sector);
    write(&good, l, &foot);
    let loc_off = l - H;
    let entry = |code: &[u8], space: u32, dlen: u32, res: u32, off: u64| -> Vec<u8> {
        [
            code,
            &space.to_be_bytes(),
            &dlen.to_be_bytes(),
            &res.to_be_bytes(),
            &off.to_be_bytes(),
        ]
        .concat()
    };
    patch_header(
        &good,
        576,
        &entry(b"W2ku", 512, data.len() as u32, 0, loc_off),
    );
    let r = check(&good);
    assert_valid(&r);
    assert!(r.checked.iter().any(|c| c == "locators"));

    let dl = data.len() as u32;
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("locator_outside_file", entry(b"W2ku", 512, dl, 0, l + 4096)),
        (
            "locator_outside_file",
            entry(b"W2ku", 512, dl, 0, u64::MAX - 3),
        ),
        ("locator_code", entry(b"XXXX", 512, dl, 0, loc_off)),
        ("locator_fields", entry(b"W2ku", 512, dl, 0, 0)),
        ("locator_fields", entry(b"W2ku", 0, dl, 0, loc_off)),
        ("locator_fields", entry(b"W2ku", 513, dl, 0, loc_off)),
        ("locator_fields", entry(b"W2ku", 512, 0, 0, loc_off)),
        ("locator_fields", entry(b"W2ku", 512, dl, 9, loc_off)),
        ("locator_fields", entry(b"W2ku", 1, 600, 0, loc_off)),
        (
            "locator_empty_not_zero",
            entry(&[0; 4], 512, dl, 0, loc_off),
        ),
    ];
    for (i, (rule, e)) in cases.into_iter().enumerate() {
        let p = copy(&good, t.path(), &format!("l{i}.vhd"));
        patch_header(&p, 576 + 24, &e);
        assert_rule(&check(&p), rule);
    }
    // parent name and timestamp
    let p = copy(&child, t.path(), "name.vhd");
    let name: Vec<u8> = "bäse.vhd"
        .encode_utf16()
        .flat_map(u16::to_be_bytes)
        .collect();
    patch_header(&p, 64, &name);
    assert_rule(&check(&p), "parent_name_not_ascii");
    let p = copy(&child, t.path(), "name2.vhd");
    patch_header(&p, 64, &[0xd8, 0x00, 0x00, 0x41]); // lone surrogate
    assert_rule(&check(&p), "parent_name");
    let p = copy(&child, t.path(), "pts.vhd");
    patch_header(&p, 56, &u32::MAX.to_be_bytes());
    assert_rule(&check(&p), "parent_timestamp_future");
    let opts = Options {
        data: false,
        ignore_timestamps: true,
    };
    assert_valid(&check_file(&p, &opts).unwrap());
}

fn bat_entry(p: &Path, i: u64) -> u32 {
    be32(&read(p, 1536 + 4 * i, 4), 0)
}

#[test]
fn bat_rules() {
    if !have_qemu() {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let w = with_data(t.path(), "w.vhd");
    let b0 = bat_entry(&w, 0);
    let b1 = bat_entry(&w, 1);
    assert_ne!(b0, u32::MAX);
    assert_ne!(b1, u32::MAX);
    assert_valid(&check(&w));

    let p = copy(&w, t.path(), "same.vhd");
    write(&p, 1536 + 4, &b0.to_be_bytes());
    assert_rule(&check(&p), "bat_overlap");
    // one sector apart still overlaps
    let p = copy(&w, t.path(), "near.vhd");
    write(&p, 1536 + 4, &(b0 + 1).to_be_bytes());
    assert_rule(&check(&p), "bat_overlap");
    let p = copy(&w, t.path(), "meta.vhd");
    write(&p, 1536 + 8, &3u32.to_be_bytes());
    assert_rule(&check(&p), "bat_overlaps_metadata");
    let p = copy(&w, t.path(), "past.vhd");
    write(&p, 1536 + 8, &((len(&p) / H) as u32 - 2).to_be_bytes());
    assert_rule(&check(&p), "block_outside_file");
    let p = copy(&w, t.path(), "far.vhd");
    write(&p, 1536 + 8, &(u32::MAX - 1).to_be_bytes());
    assert_rule(&check(&p), "block_outside_file");
}

#[test]
fn data_under_clear_bits_only_with_the_option() {
    if !have_qemu() {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let w = with_data(t.path(), "w.vhd");
    let b0 = u64::from(bat_entry(&w, 0)) * H;
    // 1M..2M is sectors 2048..4095 of block 0: clear the bit of 2048
    let bm = read(&w, b0 + 256, 1);
    assert_eq!(bm[0], 0xff);
    write(&w, b0 + 256, &[0x7f]);
    assert_valid(&check(&w));
    let opts = Options {
        data: true,
        ignore_timestamps: false,
    };
    let r = check_file(&w, &opts).unwrap();
    assert_rule(&r, "data_under_clear_bits");
    assert_eq!(rules(&r), ["data_under_clear_bits"]);
    // a clear bit over zeros is fine
    let z = with_data(t.path(), "z.vhd");
    let b0 = u64::from(bat_entry(&z, 0)) * H;
    write(&z, b0, &[0x7f]); // sector 0 of block 0 was never written
    assert_valid(&check_file(&z, &opts).unwrap());
    // differencing disks are not checked for it
    let base = dynamic(t.path(), "base.vhd");
    make_child(&w, &base);
    assert_valid(&check_file(&w, &opts).unwrap());
}

/// A `tap` 1.3 image from a qemu one: a batmap header and a one-sector
/// map inserted after the BAT, the end footer moved behind them. With
/// `full`, block 0 is allocated with a full bitmap and marked in the map.
fn tap_image(dir: &Path, name: &str, full: bool) -> PathBuf {
    let p = dynamic(dir, name);
    let l = len(&p);
    let foot = read(&p, l - H, 512);
    let f = fs::OpenOptions::new().write(true).open(&p).unwrap();
    f.set_len(l - H).unwrap();
    let bm_off = l - H; // right after the padded BAT
    let mut hdr = vec![0u8; 512];
    hdr[..8].copy_from_slice(b"tdbatmap");
    hdr[8..16].copy_from_slice(&(bm_off + H).to_be_bytes());
    hdr[16..20].copy_from_slice(&1u32.to_be_bytes());
    hdr[20..24].copy_from_slice(&0x0001_0002u32.to_be_bytes());
    let mut map = vec![0u8; 512];
    let mut end = bm_off + 2 * H;
    if full {
        map[0] = 0x80;
        // block at the next 4 KiB-aligned data start
        let sector = end.div_ceil(4096) * 8 - 1;
        let mut block = vec![0u8; 512 + (2 << 20)];
        block[..512].fill(0xff);
        write(&p, sector * H, &block);
        write(&p, 1536, &(sector as u32).to_be_bytes());
        end = sector * H + block.len() as u64;
    }
    let sum = !map.iter().fold(0u32, |s, b| s.wrapping_add(u32::from(*b)));
    hdr[24..28].copy_from_slice(&sum.to_be_bytes());
    write(&p, bm_off, &hdr);
    write(&p, bm_off + H, &map);
    write(&p, end, &foot);
    patch_footers(
        &p,
        28,
        &[b"tap\0".as_slice(), &0x0001_0003u32.to_be_bytes()].concat(),
    );
    p
}

#[test]
fn batmap_rules() {
    if !have_qemu() {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let tap = tap_image(t.path(), "tap.vhd", false);
    let r = check(&tap);
    assert_valid(&r);
    assert!(r.checked.iter().any(|c| c == "batmap"));
    let full = tap_image(t.path(), "full.vhd", true);
    assert_valid(&check(&full));
    let bm = 2048u64; // batmap header of a 64M qemu image

    let p = copy(&tap, t.path(), "sum.vhd");
    write(&p, bm + H, &[1]);
    assert_rule(&check(&p), "batmap_checksum");
    let p = copy(&tap, t.path(), "cookie.vhd");
    write(&p, bm, b"tdbatmaX");
    assert_rule(&check(&p), "batmap_cookie");
    let p = copy(&tap, t.path(), "ver.vhd");
    write(&p, bm + 20, &0x0001_0003u32.to_be_bytes());
    assert_rule(&check(&p), "batmap_version");
    let p = copy(&tap, t.path(), "size.vhd");
    write(&p, bm + 16, &0u32.to_be_bytes());
    assert_rule(&check(&p), "batmap_size");
    let p = copy(&tap, t.path(), "fits.vhd");
    write(&p, bm + 16, &1000u32.to_be_bytes());
    assert_rule(&check(&p), "batmap_outside_file");
    // a bit for an unallocated block (checksum fixed)
    let p = copy(&tap, t.path(), "unalloc.vhd");
    write(&p, bm + H, &[0x40]);
    write(&p, bm + 24, &(!0x40u32).to_be_bytes());
    assert_rule(&check(&p), "batmap_bit_unallocated");
    // a bit for a block whose bitmap is not full
    let p = copy(&full, t.path(), "notfull.vhd");
    let b0 = u64::from(bat_entry(&p, 0)) * H;
    write(&p, b0 + 17, &[0xfe]);
    assert_rule(&check(&p), "batmap_bit_not_full");
    // a tap 1.3 image without a batmap (no room for one)
    let p = dynamic(t.path(), "nomap.vhd");
    patch_footers(
        &p,
        28,
        &[b"tap\0".as_slice(), &0x0001_0003u32.to_be_bytes()].concat(),
    );
    assert_rule(&check(&p), "batmap_outside_file");
    // tap 1.1 without one is fine
    let p = dynamic(t.path(), "old.vhd");
    patch_footers(
        &p,
        28,
        &[b"tap\0".as_slice(), &0x0001_0001u32.to_be_bytes()].concat(),
    );
    assert_valid(&check(&p));
}

#[test]
fn chains() {
    if !have_qemu() {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let base = dynamic(t.path(), "1.vhd");
    let child = with_data(t.path(), "0.vhd");
    make_child(&child, &base);
    let chain = [child.clone(), base.clone()];
    let rs = check_chain(&chain, &Options::default()).unwrap();
    assert_eq!(rs.len(), 2);
    for r in &rs {
        assert_valid(r);
    }
    assert!(rs[0].checked.iter().any(|c| c == "parent"));

    // wrong parent UUID
    patch_header(&child, 40, &[0x42; 16]);
    let rs = check_chain(&chain, &Options::default()).unwrap();
    assert_rule(&rs[0], "parent_uuid_mismatch");
    assert_valid(&rs[1]);
    // check_file alone does not know the parent
    assert_valid(&check(&child));

    // a non-differencing member before another, a differencing base
    let a = dynamic(t.path(), "a.vhd");
    let b = dynamic(t.path(), "b.vhd");
    let rs = check_chain(&[a.clone(), b], &Options::default()).unwrap();
    assert_rule(&rs[0], "chain_not_differencing");
    let rs = check_chain(std::slice::from_ref(&child), &Options::default()).unwrap();
    assert_rule(&rs[0], "parent_missing");
    // a member that is not a VHD is an error
    let junk = t.path().join("junk");
    fs::write(&junk, vec![0u8; 4096]).unwrap();
    let e = check_chain(&[a, junk], &Options::default()).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotAVhd);
}

#[test]
fn garbage_never_panics() {
    if !have_qemu() {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let missing = check_file(&t.path().join("nope.vhd"), &Options::default()).unwrap_err();
    assert!(matches!(missing, CheckError::Io { .. }));
    assert_eq!(missing.kind(), ErrorKind::NotFound);
    for (i, n) in [0usize, 100, 511, 512, 4096].into_iter().enumerate() {
        let p = t.path().join(format!("z{i}"));
        fs::write(&p, vec![0u8; n]).unwrap();
        let e = check_file(&p, &Options::default()).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::NotAVhd, "{n}");
    }
    // every prefix of an image with data: an error or findings
    let w = with_data(t.path(), "w.vhd");
    let all = fs::read(&w).unwrap();
    let opts = Options {
        data: true,
        ignore_timestamps: false,
    };
    let mut cuts: Vec<usize> = (0..4096).step_by(37).collect();
    cuts.extend((0..all.len()).step_by(65_537));
    cuts.extend([all.len() - 2, all.len() - 511, all.len() - 512]);
    for n in cuts {
        let p = t.path().join("cut.vhd");
        fs::write(&p, &all[..n]).unwrap();
        match check_file(&p, &opts) {
            Ok(r) => assert!(!r.valid, "prefix {n} valid"),
            Err(e) => assert_eq!(e.kind(), ErrorKind::NotAVhd, "{n}: {e}"),
        }
    }
    // blktap's 511-byte footer: the last (reserved, zero) byte cut off
    let p = t.path().join("cut511.vhd");
    fs::write(&p, &all[..all.len() - 1]).unwrap();
    assert_valid(&check_file(&p, &opts).unwrap());
    // pseudo-random bytes behind a valid footer copy and in the header
    let mut x = 0x1234_5678u32;
    for round in 0..200 {
        let mut img = all.clone();
        for _ in 0..8 {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            let at = 8 + (x as usize) % 4088;
            img[at] = (x >> 24) as u8;
        }
        let p = t.path().join("fuzz.vhd");
        fs::write(&p, &img).unwrap();
        if let Err(e) = check_file(&p, &opts) {
            assert_eq!(e.kind(), ErrorKind::NotAVhd, "{round}: {e}");
        }
    }
}
