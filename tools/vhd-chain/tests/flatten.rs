//! `flatten` against real oracles: qemu-img compare / info / convert on the
//! output, an independent model of a 2-deep chain (a qemu dynamic child
//! patched into a differencing disk of its base, with exact bitmaps, as in
//! tests/read.rs), `check::check_file` (vhd-util check's rules) on the
//! output; tarballs made by tar; the error cases leave nothing behind.
#![cfg(test)]

mod support;
use support::{
    be32, convert, create_dynamic as create, exact_bitmaps, have_qemu, listing, make_child, model,
    qemu_virtual_size, qemu_write as write,
};
use test_support::run_ok as run;

use filter::ErrorKind;
use std::fs::{self, File};
use std::io::{Cursor, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use vhd_chain::flatten::{FlattenError, flatten};
use vhd_chain::read::Chain;
use vhd_chain::write::DynamicWriter;

const MIB: u64 = 1 << 20;
/// What qemu-img 10 makes for "64M" (964/8/17 sectors), as tests/read.rs.
const SIZE_64M: u64 = 964 * 8 * 17 * 512;

fn chain_raw(chain: &[PathBuf]) -> Vec<u8> {
    let mut c = Chain::open(chain).unwrap();
    let mut v = Vec::new();
    c.copy_to(&mut v).unwrap();
    v
}

const BASE_WRITES: &[(u8, u64, u64)] = &[
    (0xa1, 0, 3 * MIB),
    (0xa2, 10 * MIB + 512, MIB),
    (0xa3, 33 * MIB, 2 * MIB),
    (0xa4, 62 * MIB, MIB),
];
const CHILD_WRITES: &[(u8, u64, u64)] = &[
    (0xb1, 2 * MIB + 1024, 2 * MIB),
    (0xb2, 10 * MIB, 4096),
    (0xb3, 20 * MIB, 512),
    // zeros over all of base's block 16 data: that block becomes all zeros
    (0x00, 32 * MIB, 2 * MIB),
    (0xb4, 62 * MIB + 512, 1024),
];

/// The footer facts a XenServer import cares about, and vhd-util check's
/// rules (check::check_file).
fn assert_good_output(p: &Path, size: u64) {
    let b = fs::read(p).unwrap();
    let end = &b[b.len() - 512..];
    assert_eq!(&b[..512], end, "footer copy at 0 equals the end footer");
    assert_eq!(&end[..8], b"conectix");
    assert_eq!(&end[28..32], b"tap\0");
    assert_eq!(be32(end, 32), 0x0001_0003);
    assert_eq!(be32(end, 60), 3, "dynamic");
    assert_eq!(end[85], 0, "not hidden");
    assert_eq!(u64::from_be_bytes(end[48..56].try_into().unwrap()), size);
    assert_eq!(
        be32(end, 56),
        formats::vhd::Geometry::for_size(size).packed(),
        "vhd_chs geometry"
    );
    assert_ne!(&end[68..84], &[0u8; 16], "a UUID");
    let report = vhd_chain::check::check_file(
        p,
        &vhd_chain::check::Options {
            data: true,
            ignore_timestamps: false,
        },
    )
    .unwrap();
    assert!(report.valid, "{:?}", report.findings);
}

#[test]
fn single_dynamic_vhd_flattens_to_what_qemu_reads() {
    if !have_qemu() {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let dir = t.path().join("chain");
    let out_dir = t.path().join("out");
    fs::create_dir(&dir).unwrap();
    fs::create_dir(&out_dir).unwrap();
    let src = dir.join("0.vhd");
    create(&src, "64M");
    write(&src, &[(0xab, MIB, 3 * MIB), (0x5a, 40 * MIB, 512)]);
    let out = out_dir.join("flat.vhd");

    let r = flatten(&dir, &out, false).unwrap();
    assert_eq!(r.output, out);
    assert_eq!(r.chain_length, 1);
    let want_size = Chain::open(std::slice::from_ref(&src))
        .unwrap()
        .virtual_size();
    assert_eq!(r.virtual_size, want_size);
    // Blocks 0 and 1 (1M..4M) and 20 (40M).
    assert_eq!(r.blocks_allocated, 3);
    assert_eq!(r.bytes_written, fs::metadata(&out).unwrap().len());
    assert!(r.block_digest.starts_with("xxh3-128:"));

    run(Command::new("qemu-img")
        .args(["compare", "-f", "vpc", "-F", "vpc"])
        .arg(&src)
        .arg(&out));
    assert_eq!(qemu_virtual_size(&out), want_size);
    assert_good_output(&out, want_size);
    assert_eq!(listing(&out_dir), vec!["flat.vhd".to_string()]);
    // The JSON form has every field.
    let j = serde_json::to_value(&r).unwrap();
    for k in [
        "output",
        "chain_length",
        "virtual_size",
        "blocks_allocated",
        "bytes_written",
        "block_digest",
    ] {
        assert!(j.get(k).is_some(), "{k}");
    }
}

/// A 2-deep chain in `dir`: 0.vhd (differencing leaf), 1.vhd (base), and
/// the model of its virtual disk.
fn chain_of_two(dir: &Path) -> Vec<u8> {
    let base = dir.join("1.vhd");
    let child = dir.join("0.vhd");
    create(&base, "64M");
    create(&child, "64M");
    write(&base, BASE_WRITES);
    write(&child, CHILD_WRITES);
    exact_bitmaps(&base, BASE_WRITES);
    exact_bitmaps(&child, CHILD_WRITES);
    make_child(&child, &base);
    let mut want = vec![0u8; SIZE_64M as usize];
    model(&mut want, BASE_WRITES);
    model(&mut want, CHILD_WRITES);
    want
}

#[test]
fn two_deep_chain_and_its_tarball_flatten_to_the_chains_content() {
    if !have_qemu() {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let dir = t.path().join("chain");
    let out_dir = t.path().join("out");
    fs::create_dir(&dir).unwrap();
    fs::create_dir(&out_dir).unwrap();
    let want = chain_of_two(&dir);
    let members = vec![dir.join("0.vhd"), dir.join("1.vhd")];
    let raw = chain_raw(&members);
    assert!(raw == want, "the reader agrees with the model");

    let out = out_dir.join("flat.vhd");
    let r = flatten(&dir, &out, false).unwrap();
    assert_eq!(r.chain_length, 2);
    assert_eq!(r.virtual_size, SIZE_64M);
    let got = convert(&out);
    assert_eq!(got.len(), raw.len());
    assert!(got == raw, "qemu reads the flattened chain's content");
    assert_eq!(qemu_virtual_size(&out), SIZE_64M);
    assert_good_output(&out, SIZE_64M);
    // Non-zero blocks: 0, 1, 5, 10, 17 (33M..34M of base), 31; block 16
    // is zeros in the child over base data, so unallocated.
    let nonzero = raw
        .chunks(2 * MIB as usize)
        .filter(|c| c.iter().any(|b| *b != 0))
        .count() as u64;
    assert_eq!(r.blocks_allocated, nonzero);
    assert_eq!(
        chain_raw(std::slice::from_ref(&out)),
        raw,
        "and so does the native reader"
    );

    // The same chain as a tarball, the way XenServer exports are made.
    let tgz = t.path().join("image.tgz");
    run(Command::new("tar")
        .arg("-czf")
        .arg(&tgz)
        .arg("-C")
        .arg(&dir)
        .arg("."));
    let out2 = out_dir.join("from-tgz.vhd");
    let r2 = flatten(&tgz, &out2, false).unwrap();
    assert_eq!(r2.block_digest, r.block_digest);
    assert_eq!(r2.chain_length, 2);
    assert_eq!(r2.blocks_allocated, r.blocks_allocated);
    assert!(convert(&out2) == raw);
    // The scratch directory is gone; only the two outputs remain.
    assert_eq!(
        listing(&out_dir),
        vec!["flat.vhd".to_string(), "from-tgz.vhd".to_string()]
    );
}

#[test]
fn a_tarball_without_a_vhd_is_chain_empty_and_leaves_nothing() {
    let t = tempfile::tempdir().unwrap();
    let empty = t.path().join("empty");
    let out_dir = t.path().join("out");
    fs::create_dir(&empty).unwrap();
    fs::create_dir(&out_dir).unwrap();
    let tgz = t.path().join("empty.tgz");
    run(Command::new("tar")
        .arg("-czf")
        .arg(&tgz)
        .arg("-C")
        .arg(&empty)
        .arg("."));
    let out = out_dir.join("flat.vhd");
    let e = flatten(&tgz, &out, false).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::ChainEmpty, "{e}");
    assert!(matches!(e, FlattenError::Discover { .. }));
    assert!(listing(&out_dir).is_empty(), "{:?}", listing(&out_dir));

    // An empty chain directory is the same.
    let e = flatten(&empty, &out, false).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::ChainEmpty);
    assert!(listing(&out_dir).is_empty());

    // Not a tarball: the extract error's kind, nothing left.
    let junk = t.path().join("junk.tgz");
    fs::write(&junk, b"this is not a tarball at all").unwrap();
    let e = flatten(&junk, &out, false).unwrap_err();
    assert!(matches!(e, FlattenError::Extract(_)), "{e}");
    assert!(listing(&out_dir).is_empty(), "{:?}", listing(&out_dir));
}

#[test]
fn broken_chains_fail_and_leave_nothing() {
    if !have_qemu() {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let dir = t.path().join("chain");
    let out_dir = t.path().join("out");
    fs::create_dir(&dir).unwrap();
    fs::create_dir(&out_dir).unwrap();
    chain_of_two(&dir);
    let out = out_dir.join("flat.vhd");

    // The base missing: the leaf is a differencing base.
    fs::rename(dir.join("1.vhd"), t.path().join("1.vhd")).unwrap();
    let e = flatten(&dir, &out, false).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::ChainIncomplete, "{e}");
    assert!(listing(&out_dir).is_empty());

    // The same from a tarball: the scratch directory goes too.
    let tgz = t.path().join("image.tgz");
    run(Command::new("tar")
        .arg("-czf")
        .arg(&tgz)
        .arg("-C")
        .arg(&dir)
        .arg("."));
    let e = flatten(&tgz, &out, false).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::ChainIncomplete, "{e}");
    assert!(listing(&out_dir).is_empty(), "{:?}", listing(&out_dir));

    // A gap (0.vhd, 2.vhd): discover's chain_gap.
    fs::rename(t.path().join("1.vhd"), dir.join("2.vhd")).unwrap();
    let e = flatten(&dir, &out, false).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::ChainGap, "{e}");
    assert!(listing(&out_dir).is_empty());
}

#[test]
fn an_existing_output_is_only_replaced_with_overwrite() {
    if !have_qemu() {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let dir = t.path().join("chain");
    let out_dir = t.path().join("out");
    fs::create_dir(&dir).unwrap();
    fs::create_dir(&out_dir).unwrap();
    let src = dir.join("0.vhd");
    create(&src, "8M");
    write(&src, &[(0x11, 4096, 4096)]);
    let out = out_dir.join("flat.vhd");
    fs::write(&out, b"precious").unwrap();

    let e = flatten(&dir, &out, false).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::AlreadyExists, "{e}");
    assert_eq!(fs::read(&out).unwrap(), b"precious");
    assert_eq!(listing(&out_dir), vec!["flat.vhd".to_string()]);

    // The same from a tarball: refused before anything is extracted.
    let tgz = t.path().join("image.tgz");
    run(Command::new("tar")
        .arg("-czf")
        .arg(&tgz)
        .arg("-C")
        .arg(&dir)
        .arg("."));
    let e = flatten(&tgz, &out, false).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::AlreadyExists, "{e}");
    assert_eq!(fs::read(&out).unwrap(), b"precious");
    assert_eq!(listing(&out_dir), vec!["flat.vhd".to_string()]);

    let r = flatten(&tgz, &out, true).unwrap();
    assert_eq!(r.blocks_allocated, 1);
    run(Command::new("qemu-img")
        .args(["compare", "-f", "vpc", "-F", "vpc"])
        .arg(&src)
        .arg(&out));
    assert_eq!(listing(&out_dir), vec!["flat.vhd".to_string()]);
}

/// The writer alone: a size that is not a multiple of the block size (the
/// last block is partial), all-zero blocks unallocated, wrong amounts of
/// data refused.
#[test]
fn writer_partial_last_block_and_zero_blocks() {
    let size = 5 * MIB + 3 * 512;
    let mut raw = vec![0u8; size as usize];
    raw[100..600].fill(0x77); // block 0
    raw[(4 * MIB + 512) as usize..].fill(0x33); // block 2 (partial)
    let mut w = DynamicWriter::new(Cursor::new(Vec::new()), size, [7u8; 16], 12345).unwrap();
    // Odd-sized writes across block boundaries.
    for c in raw.chunks(777_777) {
        w.write_all(c).unwrap();
    }
    let (cur, written) = w.finish().unwrap();
    assert_eq!(written.blocks, 3);
    assert_eq!(written.blocks_allocated, 2);
    let bytes = cur.into_inner();
    assert_eq!(written.file_size, bytes.len() as u64);
    // footer, header, 1 BAT sector, batmap header and map (..3072), then
    // blocks at sectors 7 and 4111 (data on 4 KiB boundaries), footer.
    assert_eq!(bytes.len() as u64, (4111 + 1 + 4096) * 512 + 512);
    assert_eq!(&bytes[2048..2056], b"tdbatmap");
    assert_eq!(bytes[2560], 0b1010_0000, "batmap: blocks 0 and 2");
    assert_eq!(
        &bytes[1536..1548],
        &[0, 0, 0, 7, 0xff, 0xff, 0xff, 0xff, 0, 0, 0x10, 0x0f]
    );
    let t = tempfile::tempdir().unwrap();
    let p = t.path().join("w.vhd");
    File::create(&p).unwrap().write_all(&bytes).unwrap();
    assert_eq!(chain_raw(std::slice::from_ref(&p)), raw);
    assert_good_output(&p, size);
    if have_qemu() {
        assert_eq!(qemu_virtual_size(&p), size);
        assert!(convert(&p) == raw);
    }

    // Too little, too much, not a multiple of 512.
    let mut w = DynamicWriter::new(Cursor::new(Vec::new()), 1024, [1u8; 16], 0).unwrap();
    w.write_all(&[1u8; 512]).unwrap();
    assert!(w.finish().is_err());
    let mut w = DynamicWriter::new(Cursor::new(Vec::new()), 1024, [1u8; 16], 0).unwrap();
    assert!(w.write_all(&[1u8; 1536]).is_err());
    assert!(DynamicWriter::new(Cursor::new(Vec::new()), 1000, [1u8; 16], 0).is_err());
    assert!(DynamicWriter::new(Cursor::new(Vec::new()), 1 << 60, [1u8; 16], 0).is_err());

    // All zeros: blktap's 6 MiB layout, nothing allocated, footer at 3072.
    let mut w = DynamicWriter::new(Cursor::new(Vec::new()), 6 * MIB, [2u8; 16], 1).unwrap();
    w.write_all(&vec![0u8; 6 * MIB as usize]).unwrap();
    let (cur, written) = w.finish().unwrap();
    assert_eq!(written.blocks_allocated, 0);
    let bytes = cur.into_inner();
    assert_eq!(bytes.len(), 3584);
    let p = t.path().join("zero.vhd");
    fs::write(&p, &bytes).unwrap();
    assert_eq!(
        chain_raw(std::slice::from_ref(&p)),
        vec![0u8; 6 * MIB as usize]
    );
    assert_good_output(&p, 6 * MIB);
}
