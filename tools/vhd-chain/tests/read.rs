//! `read::Chain` against real oracles: VHDs made and written by qemu-img /
//! qemu-io, compared with `qemu-img convert -O raw`; a differencing chain
//! (a qemu dynamic child patched into a differencing disk of its base, as
//! in tests/relink.rs) compared with an independent model; hostile and
//! truncated files.
#![cfg(test)]

mod support;
use support::{
    be32, convert, exact_bitmaps, fix_sum, have_qemu, make_child, model, qemu_write as write,
};

use filter::ErrorKind;
use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::Command;
use vhd_chain::read::{Chain, ReadError};

const MIB: u64 = 1 << 20;
/// What qemu-img 10 makes for "64M": it rounds up to a CHS geometry
/// (964/8/17) and stores that product as current_size, which is also the
/// size qemu reports (creator `qemu`: the CHS product). Both readers agree.
const SIZE_64M: u64 = 964 * 8 * 17 * 512;

fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn create(dir: &Path, name: &str, subformat: &str, size: &str) -> PathBuf {
    let p = dir.join(name);
    run(Command::new("qemu-img")
        .args(["create", "-q", "-f", "vpc", "-o"])
        .arg(format!("subformat={subformat}"))
        .arg(&p)
        .arg(size));
    p
}

/// Our reader's output, through a file as the CLI would use it.
fn ours(chain: &[PathBuf]) -> Result<Vec<u8>, ReadError> {
    let mut c = Chain::open(chain)?;
    let out = chain[0].with_extension("ours");
    let mut f = File::create(&out).unwrap();
    let n = c.copy_to(&mut f)?;
    drop(f);
    let b = fs::read(&out).unwrap();
    assert_eq!(n, b.len() as u64);
    assert_eq!(n, c.virtual_size());
    Ok(b)
}

fn first_difference(a: &[u8], b: &[u8]) -> Option<usize> {
    a.iter().zip(b).position(|(x, y)| x != y)
}

#[test]
fn dynamic_matches_qemu_convert() {
    if !have_qemu() {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let x = create(d.path(), "x.vhd", "dynamic", "64M");
    write(&x, &[(0xab, MIB, 3 * MIB), (0x5a, 40 * MIB, 512)]);
    let want = convert(&x);
    let got = ours(std::slice::from_ref(&x)).unwrap();
    // Sizes: ours is the footer's current_size, qemu's the CHS product;
    // qemu-img made them equal (67 125 248 bytes, 16 KiB more than 64 MiB),
    // so the whole of both is compared.
    assert_eq!(got.len() as u64, SIZE_64M);
    assert_eq!(want.len() as u64, SIZE_64M);
    assert_eq!(
        first_difference(&got, &want),
        None,
        "differs from qemu-img convert"
    );
    // and the data is really there
    assert!(
        got[MIB as usize..4 * MIB as usize]
            .iter()
            .all(|b| *b == 0xab)
    );
    assert!(
        got[40 * MIB as usize..40 * MIB as usize + 512]
            .iter()
            .all(|b| *b == 0x5a)
    );
    assert_eq!(got[40 * MIB as usize + 512], 0);
}

#[test]
fn fixed_matches_qemu_convert() {
    if !have_qemu() {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let x = create(d.path(), "x.vhd", "fixed", "64M");
    write(&x, &[(0xab, MIB, 3 * MIB), (0x5a, 40 * MIB, 512)]);
    let want = convert(&x);
    let got = ours(std::slice::from_ref(&x)).unwrap();
    // Same sizes as for dynamic: current_size is the CHS product (the file
    // is that plus the footer).
    assert_eq!(got.len() as u64, SIZE_64M);
    assert_eq!(got.len(), want.len());
    assert_eq!(fs::metadata(&x).unwrap().len(), got.len() as u64 + 512);
    assert_eq!(first_difference(&got, &want), None);
    assert!(
        got[MIB as usize..4 * MIB as usize]
            .iter()
            .all(|b| *b == 0xab)
    );
}

const BASE_WRITES: &[(u8, u64, u64)] = &[
    (0xa1, 0, 3 * MIB),
    (0xa2, 10 * MIB + 512, MIB),
    (0xa3, 33 * MIB, 2 * MIB),
    (0xa4, 62 * MIB, MIB),
];
const CHILD_WRITES: &[(u8, u64, u64)] = &[
    // overlaps the end of base's first range, crosses a block boundary
    (0xb1, 2 * MIB + 1024, 2 * MIB),
    // overlaps the start of base's second range, partly before it
    (0xb2, 10 * MIB, 4096),
    // only in the child
    (0xb3, 20 * MIB, 512),
    // zeros over non-zero base data: zeros must win
    (0x00, 34 * MIB, 7 * 512),
    // inside a block the base also holds
    (0xb4, 62 * MIB + 512, 1024),
];

fn chain_of_two(dir: &Path) -> (PathBuf, PathBuf, Vec<u8>) {
    let base = create(dir, "1.vhd", "dynamic", "64M");
    let child = create(dir, "0.vhd", "dynamic", "64M");
    write(&base, BASE_WRITES);
    write(&child, CHILD_WRITES);
    exact_bitmaps(&base, BASE_WRITES);
    exact_bitmaps(&child, CHILD_WRITES);
    make_child(&child, &base);
    let mut want = vec![0u8; SIZE_64M as usize];
    model(&mut want, BASE_WRITES);
    model(&mut want, CHILD_WRITES);
    (child, base, want)
}

#[test]
fn differencing_chain_matches_the_model() {
    if !have_qemu() {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let (child, base, want) = chain_of_two(d.path());
    let got = ours(&[child.clone(), base.clone()]).unwrap();
    assert_eq!(got.len(), want.len());
    assert_eq!(first_difference(&got, &want), None);
    // the zeroed range really overwrote base data
    let z = 34 * MIB as usize;
    assert!(got[z..z + 7 * 512].iter().all(|b| *b == 0));
    assert_eq!(got[z + 7 * 512], 0xa3);
    assert_eq!(got[z - 1], 0xa3);
    // the base alone is what qemu says it is
    let qb = convert(&base);
    let gb = ours(std::slice::from_ref(&base)).unwrap();
    assert_eq!(first_difference(&gb[..qb.len()], &qb), None);
}

#[test]
fn differencing_base_is_chain_incomplete() {
    if !have_qemu() {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let (child, base, _) = chain_of_two(d.path());
    let e = Chain::open(std::slice::from_ref(&child)).unwrap_err();
    assert!(matches!(e, ReadError::ChainIncomplete { .. }), "{e}");
    assert_eq!(e.kind(), ErrorKind::ChainIncomplete);
    let e = Chain::open(&[]).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::ChainIncomplete);
    // wrong order: the differencing disk last is still incomplete
    let e = Chain::open(&[base.clone(), child.clone()]).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::ChainIncomplete, "{e}");
    // a dynamic disk with something after it
    let other = create(d.path(), "other.vhd", "dynamic", "64M");
    let e = Chain::open(&[base.clone(), other.clone()]).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::BadImage, "{e}");
    assert!(e.to_string().contains("should be differencing"), "{e}");
    // a parent that is not the child's (UUID mismatch)
    let e = Chain::open(&[child.clone(), other]).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::BadImage, "{e}");
    assert!(e.to_string().contains("parent UUID"), "{e}");
    // not a VHD, missing
    let junk = d.path().join("junk");
    fs::write(&junk, vec![7u8; 4096]).unwrap();
    assert_eq!(Chain::open(&[junk]).unwrap_err().kind(), ErrorKind::NotAVhd);
    assert_eq!(
        Chain::open(&[d.path().join("nope.vhd")])
            .unwrap_err()
            .kind(),
        ErrorKind::NotFound
    );
}

/// Small image for the hostile cases: 8 MiB, 4 blocks, some allocated.
fn small(dir: &Path, name: &str) -> (PathBuf, Vec<u8>) {
    let x = create(dir, name, "dynamic", "8M");
    write(&x, &[(0xcd, 512, 3 * MIB), (0xef, 6 * MIB, 4096)]);
    let good = ours(std::slice::from_ref(&x)).unwrap();
    (x, good)
}

#[test]
fn hostile_bat_entries_are_errors() {
    if !have_qemu() {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let (x, _) = small(d.path(), "x.vhd");
    let orig = fs::read(&x).unwrap();
    let table = 1536usize;
    assert_ne!(be32(&orig, table), u32::MAX, "block 0 is allocated");
    let len = orig.len() as u64;
    // past the end; inside the file but overlapping the end footer; the
    // largest sector number
    for v in [
        (len / 512 + 10) as u32,
        ((len - 512) / 512 - 1) as u32,
        u32::MAX - 1,
    ] {
        let mut b = orig.clone();
        b[table..table + 4].copy_from_slice(&v.to_be_bytes());
        let p = d.path().join("bad.vhd");
        fs::write(&p, &b).unwrap();
        let e = Chain::open(&[p]).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::BadImage, "{v}: {e}");
    }
    // hostile header fields (checksum fixed, so they are reached)
    let patches: &[(usize, Vec<u8>)] = &[
        (512 + 16, (u64::MAX - 3).to_be_bytes().to_vec()), // table offset
        (512 + 28, 1u32.to_be_bytes().to_vec()),           // too few entries
        (512 + 32, 3000u32.to_be_bytes().to_vec()),        // block size
        (512 + 32, 512u32.to_be_bytes().to_vec()),         // BAT too big for the file
    ];
    for (at, bytes) in patches {
        let mut b = orig.clone();
        b[*at..*at + bytes.len()].copy_from_slice(bytes);
        fix_sum(&mut b[512..1536], 36);
        let p = d.path().join("bad.vhd");
        fs::write(&p, &b).unwrap();
        let e = Chain::open(&[p]).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::BadImage, "{at}: {e}");
    }
    // a header checksum that does not match
    let mut b = orig.clone();
    b[512 + 1000] ^= 1;
    let p = d.path().join("bad.vhd");
    fs::write(&p, &b).unwrap();
    assert_eq!(Chain::open(&[p]).unwrap_err().kind(), ErrorKind::BadImage);
    // the data offset (footer) pointing outside the file, both copies
    let mut b = orig.clone();
    let l = b.len();
    for at in [0, l - 512] {
        b[at + 16..at + 24].copy_from_slice(&(u64::MAX - 100).to_be_bytes());
        fix_sum(&mut b[at..at + 512], 64);
    }
    let p = d.path().join("bad.vhd");
    fs::write(&p, &b).unwrap();
    assert_eq!(Chain::open(&[p]).unwrap_err().kind(), ErrorKind::BadImage);
    // v_poison in both footers
    let mut b = orig.clone();
    for at in [0, l - 512] {
        b[at..at + 8].copy_from_slice(b"v_poison");
    }
    let p = d.path().join("bad.vhd");
    fs::write(&p, &b).unwrap();
    let e = Chain::open(&[p]).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotAVhd);
    assert!(e.to_string().contains("v_poison"), "{e}");
}

#[test]
fn bad_end_footer_falls_back_to_the_copy_at_0() {
    if !have_qemu() {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let (x, good) = small(d.path(), "x.vhd");
    let mut b = fs::read(&x).unwrap();
    let l = b.len();
    b[l - 512 + 100] ^= 1;
    let p = d.path().join("endbad.vhd");
    fs::write(&p, &b).unwrap();
    assert_eq!(ours(std::slice::from_ref(&p)).unwrap(), good);
    // but a fixed disk has no copy at 0
    let f = create(d.path(), "f.vhd", "fixed", "8M");
    let mut b = fs::read(&f).unwrap();
    let l = b.len();
    b[l - 512 + 100] ^= 1;
    fs::write(&f, &b).unwrap();
    assert_eq!(Chain::open(&[f]).unwrap_err().kind(), ErrorKind::NotAVhd);
}

#[test]
fn truncated_files_are_errors_or_read_correctly() {
    if !have_qemu() {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    for sub in ["dynamic", "fixed"] {
        let (x, good) = if sub == "dynamic" {
            small(d.path(), "t.vhd")
        } else {
            let f = create(d.path(), "t.vhd", "fixed", "8M");
            write(&f, &[(0xcd, 512, 3 * MIB)]);
            let g = ours(std::slice::from_ref(&f)).unwrap();
            (f, g)
        };
        let orig = fs::read(&x).unwrap();
        let l = orig.len();
        let mut cuts = vec![0, 1, 100, 511, 512, 513, 1024, 1535, 1536, 1540, 2048, 4096];
        cuts.extend([l / 2, l - 4097, l - 1024, l - 513, l - 512, l - 511, l - 1]);
        for cut in cuts {
            let p = d.path().join("cut.vhd");
            fs::write(&p, &orig[..cut]).unwrap();
            match ours(std::slice::from_ref(&p)) {
                Err(e) => assert!(
                    matches!(e.kind(), ErrorKind::NotAVhd | ErrorKind::BadImage),
                    "{sub} cut at {cut}: {e}"
                ),
                // Only the end footer lost (dynamic: the copy at 0 is
                // used), or the last byte (a 511-byte footer, as blktap
                // accepts): the data must be exactly right.
                Ok(b) => {
                    assert!(
                        cut == l - 1 || (sub == "dynamic" && cut >= l - 512),
                        "{sub} cut at {cut} opened"
                    );
                    assert!(b == good, "{sub} cut at {cut}: wrong data");
                }
            }
        }
    }
}

#[test]
fn differencing_chain_with_qemus_full_bitmaps() {
    if !have_qemu() {
        return;
    }
    // As qemu leaves them: every block the child allocated holds all its
    // sectors, so the child's whole block (zeros where it never wrote)
    // hides the base's.
    let d = tempfile::tempdir().unwrap();
    let base = create(d.path(), "1.vhd", "dynamic", "64M");
    let child = create(d.path(), "0.vhd", "dynamic", "64M");
    write(&base, BASE_WRITES);
    write(&child, CHILD_WRITES);
    make_child(&child, &base);
    let block = 2 * MIB;
    let mut want = vec![0u8; SIZE_64M as usize];
    model(&mut want, BASE_WRITES);
    for (_, off, len) in CHILD_WRITES {
        for blk in off / block..(off + len).div_ceil(block) {
            let end = ((blk + 1) * block).min(SIZE_64M);
            want[(blk * block) as usize..end as usize].fill(0);
        }
    }
    model(&mut want, CHILD_WRITES);
    let got = ours(&[child, base]).unwrap();
    assert_eq!(first_difference(&got, &want), None);
    // e.g. the base's 0xa1 at 2 MiB is hidden by the child's block
    assert_eq!(got[2 * MIB as usize], 0);
}

#[test]
fn clear_bit_in_a_dynamic_disk_reads_zero_whatever_the_data() {
    if !have_qemu() {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let (x, good) = small(d.path(), "x.vhd");
    assert_eq!(good[512], 0xcd);
    let mut b = fs::read(&x).unwrap();
    let e = be32(&b, 1536) as usize * 512;
    // clear sectors 1..=8 of block 0 (bits 1-7 of byte 0, bit 0 of byte 1)
    b[e] &= 0x80;
    b[e + 1] &= 0x7f;
    fs::write(&x, &b).unwrap();
    let got = ours(std::slice::from_ref(&x)).unwrap();
    assert!(got[512..9 * 512].iter().all(|v| *v == 0));
    assert_eq!(got[9 * 512..], good[9 * 512..]);
}

#[test]
fn file_shrinking_after_open_and_failing_output_are_io_errors() {
    if !have_qemu() {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let (x, _) = small(d.path(), "x.vhd");
    let mut c = Chain::open(std::slice::from_ref(&x)).unwrap();
    File::options()
        .write(true)
        .open(&x)
        .unwrap()
        .set_len(4096)
        .unwrap();
    let e = c.copy_to(&mut std::io::sink()).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Io, "{e}");

    struct Full;
    impl std::io::Write for Full {
        fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
            Err(std::io::Error::other("disk full"))
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let (y, _) = small(d.path(), "y.vhd");
    let mut c = Chain::open(&[y]).unwrap();
    let e = c.copy_to(&mut Full).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Io);
    assert!(e.to_string().starts_with("writing the output: "), "{e}");
}
