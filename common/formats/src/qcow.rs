//! qcow (version 1) header parser, following qemu's `qcow_open()`
//! (`block/qcow.c`) as `qemu-img info` runs it (no I/O to guest data, so an
//! AES key is never needed).
//!
//! The 48-byte big-endian header: magic `QFI\xfb` @0, version u32 @4 (1),
//! backing file offset u64 @8, backing name length u32 @16, mtime u32 @20,
//! size u64 @24, cluster bits u8 @32, L2 bits u8 @33, padding @34, crypt
//! method u32 @36 (0 none, 1 AES), L1 table offset u64 @40.
//!
//! `Ok(None)` unless the magic matches and the version is 1 (versions 2
//! and 3 are [`super::qcow2`]). Headers qemu refuses (size below 2,
//! cluster bits outside 9..=16, L2 bits outside 6..=13, unknown crypt
//! method, an image too large for its L1 table, a backing name over 1023
//! bytes) and an L1 table or backing name beyond the end of the file are
//! an `Err`.
//!
//! Info: `format` `qcow`, `virtual_size` (size rounded down to 512),
//! `cluster_size`, `encrypted`, `dirty_flag` (always false),
//! `backing_filename` and `full_backing_filename` (each plus a `_bytes`
//! twin, base64, when not UTF-8). qemu prints no `format_specific` and no
//! backing format for qcow.
//!
//! `header` (facts qemu does not print):
//! - `version`: always 1;
//! - `crypt_method`: 0 none, 1 AES;
//! - `cluster_bits`, `l2_bits`, `mtime`, `l1_table_offset`, `l1_size`
//!   (entries), `backing_file_offset`, `backing_file_size`.

use super::bytes::cstr;
use super::qcow2::read_exact;
use super::{Backing, FormatError, Parsed, Reader, bytes::be32, bytes::be64};
use serde::Serialize;

const MAGIC: &[u8; 4] = b"QFI\xfb";
const HEADER_LEN: usize = 48;

/// What a qcow image reports beyond the common fields.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Details {
    /// Header facts qemu does not print.
    pub header: Header,
}

/// qcow (v1) header facts.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Header {
    /// Always 1.
    pub version: u32,
    /// 0 none, 1 AES.
    pub crypt_method: u32,
    /// log2 of the cluster size.
    pub cluster_bits: u32,
    /// log2 of the L2 table entries.
    pub l2_bits: u32,
    /// Modification time.
    pub mtime: u32,
    /// L1 table offset.
    pub l1_table_offset: u64,
    /// L1 entries.
    pub l1_size: u64,
    /// Where the backing name is.
    pub backing_file_offset: u64,
    /// Its length.
    pub backing_file_size: u32,
}

/// Parse the qcow header, if the bytes are qcow.
pub fn parse(r: &Reader, name: &str) -> Result<Option<Parsed>, FormatError> {
    if r.len() < 8 {
        return Ok(None);
    }
    let head = r.read(0, 8)?;
    if head.get(..4) != Some(MAGIC.as_slice()) || be32(&head, 4) != 1 {
        return Ok(None);
    }
    let h = read_exact(r, 0, HEADER_LEN as u64, "header")?;
    let backing_offset = be64(&h, 8);
    let backing_size = be32(&h, 16);
    let mtime = be32(&h, 20);
    let size = be64(&h, 24);
    let cluster_bits = u32::from(h[32]);
    let l2_bits = u32::from(h[33]);
    let crypt_method = be32(&h, 36);
    let l1_offset = be64(&h, 40);

    if size <= 1 {
        return Err(r.invalid("image size is too small (must be at least 2 bytes)"));
    }
    if !(9..=16).contains(&cluster_bits) {
        return Err(r.invalid("cluster size must be between 512 and 64k"));
    }
    if !(6..=13).contains(&l2_bits) {
        return Err(r.invalid("L2 table size must be between 512 and 64k"));
    }
    if crypt_method > 1 {
        return Err(r.invalid("invalid encryption method in qcow header"));
    }
    let shift = cluster_bits + l2_bits;
    if size > u64::MAX - (1u64 << shift) {
        return Err(r.invalid("image too large"));
    }
    let l1_size = (size + (1u64 << shift) - 1) >> shift;
    if l1_size > (i32::MAX as u64) / 8 {
        return Err(r.invalid("image too large"));
    }
    if l1_offset
        .checked_add(l1_size * 8)
        .is_none_or(|e| e > r.len())
    {
        return Err(r.truncated("L1 table is beyond the end of the file"));
    }
    let total_sectors = size / 512;
    if total_sectors > (i64::MAX as u64) / 512 {
        return Err(r.invalid("image is too big"));
    }

    let mut backing: Option<Vec<u8>> = None;
    if backing_offset != 0 {
        let len = u64::from(backing_size);
        if len > 1023 {
            return Err(r.invalid("backing file name too long"));
        }
        let b = read_exact(r, backing_offset, len, "backing file name")?;
        let n = cstr(&b);
        if !n.is_empty() {
            backing = Some(n.to_vec());
        }
    }

    Ok(Some(Parsed {
        kind: super::Format::Qcow,
        qemu_probes: true,
        virtual_size: total_sectors * 512,
        cluster_size: Some(1i64 << cluster_bits),
        encrypted: crypt_method != 0,
        dirty_flag: Some(false),
        backing: backing.map(|b| Backing::new(name, &b)),
        data_file: None,
        details: super::Details::Qcow(Details {
            header: Header {
                version: 1,
                crypt_method,
                cluster_bits,
                l2_bits,
                mtime,
                l1_table_offset: l1_offset,
                l1_size,
                backing_file_offset: backing_offset,
                backing_file_size: backing_size,
            },
        }),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 64 MiB, 4 KiB clusters, L1 at 48 (32 entries), backing name at 304.
    fn image(backing: &[u8]) -> Vec<u8> {
        let mut v = vec![0u8; 512];
        v[..4].copy_from_slice(MAGIC);
        v[4..8].copy_from_slice(&1u32.to_be_bytes());
        if !backing.is_empty() {
            v[8..16].copy_from_slice(&304u64.to_be_bytes());
            v[16..20].copy_from_slice(&(backing.len() as u32).to_be_bytes());
            v[304..304 + backing.len()].copy_from_slice(backing);
        }
        v[20..24].copy_from_slice(&7u32.to_be_bytes());
        v[24..32].copy_from_slice(&(64u64 << 20).to_be_bytes());
        v[32] = 12;
        v[33] = 9;
        v[40..48].copy_from_slice(&48u64.to_be_bytes());
        v
    }

    #[test]
    fn valid_header_decodes() {
        let img = image(b"base.raw");
        let r = Reader::new(&img, "qcow");
        let p = parse(&r, "dir/x.qcow").unwrap().unwrap();
        assert_eq!(p.kind, "qcow");
        assert_eq!(p.info()["format"], "qcow");
        assert_eq!(p.info()["virtual_size"], 64u64 << 20);
        assert_eq!(p.info()["cluster_size"], 4096);
        assert_eq!(p.info()["encrypted"], false);
        assert_eq!(p.info()["dirty_flag"], false);
        assert_eq!(p.info()["backing_filename"], "base.raw");
        assert_eq!(p.info()["full_backing_filename"], "dir/base.raw");
        assert!(p.info().get("backing_filename_format").is_none());
        assert_eq!(p.info()["header"]["version"], 1);
        assert_eq!(p.info()["header"]["crypt_method"], 0);
        assert_eq!(p.info()["header"]["mtime"], 7);
        assert_eq!(p.info()["header"]["l1_size"], 32);
    }

    #[test]
    fn encrypted_and_non_utf8_backing() {
        let mut img = image(b"b\xff.raw");
        img[36..40].copy_from_slice(&1u32.to_be_bytes());
        let r = Reader::new(&img, "qcow");
        let p = parse(&r, "x").unwrap().unwrap();
        assert_eq!(p.info()["encrypted"], true);
        assert_eq!(p.info()["backing_filename"], "b\u{fffd}.raw");
        assert_eq!(
            p.info()["backing_filename_bytes"],
            system::text::base64(b"b\xff.raw")
        );
        let p = parse(&r, "d/x").unwrap().unwrap();
        assert_eq!(p.info()["full_backing_filename"], "d/b\u{fffd}.raw");
        assert_eq!(
            p.info()["full_backing_filename_bytes"],
            system::text::base64(b"d/b\xff.raw")
        );
    }

    #[test]
    fn other_versions_are_none() {
        for ver in [0u32, 2, 3, 9] {
            let mut img = image(b"");
            img[4..8].copy_from_slice(&ver.to_be_bytes());
            let r = Reader::new(&img, "qcow");
            assert!(parse(&r, "x").unwrap().is_none());
        }
    }

    #[test]
    fn truncation_never_panics() {
        // The header, the L1 table (48..304) and the backing name
        // (304..312) must all be there.
        let img = image(b"base.raw");
        for n in 0..img.len() {
            let v = img[..n].to_vec();
            let r = Reader::new(&v, "qcow");
            let p = parse(&r, "x");
            if n < 312 {
                assert!(!matches!(p, Ok(Some(_))), "prefix {n}");
            } else {
                assert!(p.unwrap().is_some(), "prefix {n}");
            }
        }
    }

    #[test]
    fn hostile_fields_are_errors() {
        let base = image(b"base.raw");
        type Edit = Box<dyn Fn(&mut Vec<u8>)>;
        let cases: Vec<Edit> = vec![
            Box::new(|h| h[24..32].copy_from_slice(&1u64.to_be_bytes())),
            Box::new(|h| h[24..32].copy_from_slice(&u64::MAX.to_be_bytes())),
            Box::new(|h| h[24..32].copy_from_slice(&(1u64 << 62).to_be_bytes())),
            Box::new(|h| h[32] = 8),
            Box::new(|h| h[32] = 17),
            Box::new(|h| h[33] = 5),
            Box::new(|h| h[33] = 14),
            Box::new(|h| h[36..40].copy_from_slice(&2u32.to_be_bytes())),
            Box::new(|h| h[40..48].copy_from_slice(&u64::MAX.to_be_bytes())),
            Box::new(|h| h[40..48].copy_from_slice(&500u64.to_be_bytes())),
            Box::new(|h| h[8..16].copy_from_slice(&u64::MAX.to_be_bytes())),
            Box::new(|h| h[16..20].copy_from_slice(&1024u32.to_be_bytes())),
            Box::new(|h| h[16..20].copy_from_slice(&u32::MAX.to_be_bytes())),
            Box::new(|h| h[8..16].copy_from_slice(&510u64.to_be_bytes())),
        ];
        for (i, f) in cases.iter().enumerate() {
            let mut h = base.clone();
            f(&mut h);
            let r = Reader::new(&h, "qcow");
            assert!(parse(&r, "x").is_err(), "case {i}");
        }
    }

    #[test]
    fn random_mutations_never_panic() {
        use crate::qcow2::tests::mutate;
        let base = image(b"base.raw");
        let mut st = 0x2545_f491_4f6c_dd1d;
        for _ in 0..5000 {
            let mut v = base.clone();
            mutate(&mut v, 0..320, &mut st);
            let r = Reader::new(&v, "qcow");
            let _ = parse(&r, "x");
        }
    }
}
