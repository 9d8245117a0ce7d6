//! QED header parser, following qemu's `bdrv_qed_do_open()`
//! (`block/qed.c`) as `qemu-img info` runs it (read-only: no consistency
//! check, autoclear bits left alone).
//!
//! The 64-byte little-endian header: magic `QED\0` @0, cluster size u32
//! @4, table size u32 @8 (clusters per table), header size u32 @12
//! (clusters), features u64 @16 (bit 0 backing file, bit 1 needs check,
//! bit 2 backing format is raw), compatible features u64 @24, autoclear
//! features u64 @32, L1 table offset u64 @40, image size u64 @48, backing
//! name offset u32 @56 and length u32 @60.
//!
//! `Ok(None)` unless the file starts with `QED\0`. Anything qemu refuses
//! (unknown feature bits, cluster size not a power of two in 4 KiB..64 MiB,
//! table size not a power of two in 1..16, image size not a multiple of 512
//! or too large for the tables, an L1 table outside the file, a backing
//! name outside the header clusters or of 4096 bytes or more) is an `Err`.
//!
//! Info: `format` `qed`, `virtual_size`, `cluster_size`, `encrypted`
//! (false), `dirty_flag` (the needs-check feature), `backing_filename`,
//! `full_backing_filename` (each plus a `_bytes` twin when not UTF-8),
//! and `backing_filename_format` `raw` when feature bit 2 is set. qemu
//! prints no `format_specific` for QED.
//!
//! `header` (facts qemu does not print):
//! - `features`, `compat_features`, `autoclear_features`: the raw bitmaps;
//! - `cluster_size`, `table_size`, `header_size`, `l1_table_offset`,
//!   `image_size`, `backing_filename_offset`, `backing_filename_size`.

use super::bytes::cstr;
use super::qcow2::read_exact;
use super::{Backing, FormatError, Parsed, Reader, bytes::le32, bytes::le64};
use serde::Serialize;

const MAGIC: &[u8; 4] = b"QED\0";
const F_BACKING_FILE: u64 = 1;
const F_NEED_CHECK: u64 = 2;
const F_BACKING_FORMAT_NO_PROBE: u64 = 4;
const FEATURE_MASK: u64 = 7;
const MIN_CLUSTER_SIZE: u32 = 4096;
const MAX_CLUSTER_SIZE: u32 = 64 << 20;
const MAX_TABLE_SIZE: u32 = 16;
/// `sizeof(bs->backing_file)` in qemu.
const BACKING_NAME_BUF: u64 = 4096;

/// What a QED image reports beyond the common fields.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Details {
    /// Header facts qemu does not print.
    pub header: Header,
}

/// QED header facts.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Header {
    /// Feature bits.
    pub features: u64,
    /// Compatible feature bits.
    pub compat_features: u64,
    /// Autoclear feature bits.
    pub autoclear_features: u64,
    /// Cluster size in bytes.
    pub cluster_size: u32,
    /// Table size in clusters.
    pub table_size: u32,
    /// Header size in clusters.
    pub header_size: u32,
    /// L1 table offset.
    pub l1_table_offset: u64,
    /// Virtual size.
    pub image_size: u64,
    /// Where the backing name is.
    pub backing_filename_offset: u32,
    /// Its length.
    pub backing_filename_size: u32,
}

/// Parse the qed header, if the bytes are qed.
pub fn parse(r: &Reader, name: &str) -> Result<Option<Parsed>, FormatError> {
    if r.len() < 4 {
        return Ok(None);
    }
    if r.read(0, 4)?.as_slice() != MAGIC {
        return Ok(None);
    }
    let h = read_exact(r, 0, 64, "header")?;
    let cluster_size = le32(&h, 4);
    let table_size = le32(&h, 8);
    let header_size = le32(&h, 12);
    let features = le64(&h, 16);
    let compat = le64(&h, 24);
    let autoclear = le64(&h, 32);
    let l1_offset = le64(&h, 40);
    let image_size = le64(&h, 48);
    let backing_offset = le32(&h, 56);
    let backing_size = le32(&h, 60);

    if features & !FEATURE_MASK != 0 {
        return Err(r.invalid(format!(
            "unsupported QED features: {:x}",
            features & !FEATURE_MASK
        )));
    }
    if !cluster_size.is_power_of_two()
        || !(MIN_CLUSTER_SIZE..=MAX_CLUSTER_SIZE).contains(&cluster_size)
    {
        return Err(r.invalid(format!("invalid cluster size {cluster_size}")));
    }
    let cs = u64::from(cluster_size);
    let file_size = r.len() / cs * cs;
    if !table_size.is_power_of_two() || table_size > MAX_TABLE_SIZE {
        return Err(r.invalid(format!("invalid table size {table_size}")));
    }
    // qemu's qed_max_image_size(), with its C integer widths.
    let table_entries = u64::from(table_size.wrapping_mul(cluster_size)) / 8;
    let max_size = table_entries.wrapping_mul(cs).wrapping_mul(table_entries);
    if !image_size.is_multiple_of(512) || image_size > max_size {
        return Err(r.invalid(format!("invalid image size {image_size}")));
    }
    // qed_check_table_offset()
    let header_bytes = u64::from(header_size) * cs;
    let cluster_ok = |o: u64| o.is_multiple_of(cs) && o >= header_bytes && o < file_size;
    let end = l1_offset.wrapping_add(u64::from(table_size - 1).wrapping_mul(cs));
    if end <= l1_offset || !cluster_ok(l1_offset) || !cluster_ok(end) {
        return Err(r.invalid(format!("invalid L1 table offset {l1_offset}")));
    }

    let mut backing: Option<Vec<u8>> = None;
    if features & F_BACKING_FILE != 0 {
        let limit = u64::from(cluster_size.wrapping_mul(header_size));
        if u64::from(backing_offset) + u64::from(backing_size) > limit {
            return Err(r.invalid("backing file name outside the header"));
        }
        if u64::from(backing_size) >= BACKING_NAME_BUF {
            return Err(r.invalid("backing file name too long"));
        }
        let b = read_exact(
            r,
            u64::from(backing_offset),
            u64::from(backing_size),
            "backing file name",
        )?;
        let n = cstr(&b);
        if !n.is_empty() {
            backing = Some(n.to_vec());
        }
    }

    let backing = backing.map(|b| {
        let bk = Backing::new(name, &b);
        if features & F_BACKING_FORMAT_NO_PROBE != 0 {
            bk.with_format(b"raw")
        } else {
            bk
        }
    });
    Ok(Some(Parsed {
        kind: super::Format::Qed,
        qemu_probes: true,
        virtual_size: image_size,
        cluster_size: Some(i64::from(cluster_size)),
        encrypted: false,
        dirty_flag: Some(features & F_NEED_CHECK != 0),
        backing,
        data_file: None,
        details: super::Details::Qed(Details {
            header: Header {
                features,
                compat_features: compat,
                autoclear_features: autoclear,
                cluster_size,
                table_size,
                header_size,
                l1_table_offset: l1_offset,
                image_size,
                backing_filename_offset: backing_offset,
                backing_filename_size: backing_size,
            },
        }),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 64 MiB, 64 KiB clusters, table size 4, L1 at cluster 1.
    fn image(backing: &[u8], features: u64) -> Vec<u8> {
        let mut v = vec![0u8; 5 * 65536];
        v[..4].copy_from_slice(MAGIC);
        v[4..8].copy_from_slice(&65536u32.to_le_bytes());
        v[8..12].copy_from_slice(&4u32.to_le_bytes());
        v[12..16].copy_from_slice(&1u32.to_le_bytes());
        v[16..24].copy_from_slice(&features.to_le_bytes());
        v[32..40].copy_from_slice(&8u64.to_le_bytes());
        v[40..48].copy_from_slice(&65536u64.to_le_bytes());
        v[48..56].copy_from_slice(&(64u64 << 20).to_le_bytes());
        v[56..60].copy_from_slice(&64u32.to_le_bytes());
        v[60..64].copy_from_slice(&(backing.len() as u32).to_le_bytes());
        v[64..64 + backing.len()].copy_from_slice(backing);
        v
    }

    #[test]
    fn valid_header_decodes() {
        let img = image(b"base.raw", 5);
        let r = Reader::new(&img, "qed");
        let p = parse(&r, "d/x.qed").unwrap().unwrap();
        assert_eq!(p.info()["format"], "qed");
        assert_eq!(p.info()["virtual_size"], 64u64 << 20);
        assert_eq!(p.info()["cluster_size"], 65536);
        assert_eq!(p.info()["encrypted"], false);
        assert_eq!(p.info()["dirty_flag"], false);
        assert_eq!(p.info()["backing_filename"], "base.raw");
        assert_eq!(p.info()["full_backing_filename"], "d/base.raw");
        assert_eq!(p.info()["backing_filename_format"], "raw");
        assert_eq!(p.info()["header"]["features"], 5);
        assert_eq!(p.info()["header"]["autoclear_features"], 8);
    }

    #[test]
    fn dirty_without_backing() {
        let img = image(b"base.raw", 2);
        let r = Reader::new(&img, "qed");
        let p = parse(&r, "x").unwrap().unwrap();
        assert_eq!(p.info()["dirty_flag"], true);
        assert!(p.info().get("backing_filename").is_none());
        let img = image(b"base.raw", 1);
        let r = Reader::new(&img, "qed");
        let p = parse(&r, "x").unwrap().unwrap();
        assert!(p.info().get("backing_filename_format").is_none());
    }

    #[test]
    fn not_qed_is_none() {
        let v = b"QED\x01aaaaaaaa".to_vec();
        let r = Reader::new(&v, "qed");
        assert!(parse(&r, "x").unwrap().is_none());
    }

    #[test]
    fn truncation_never_panics() {
        let img = image(b"base.raw", 5);
        for n in (0..200).chain((65536..img.len()).step_by(4099)) {
            let v = img[..n].to_vec();
            let r = Reader::new(&v, "qed");
            assert!(!matches!(parse(&r, "x"), Ok(Some(_))), "prefix {n}");
        }
    }

    #[test]
    fn hostile_fields_are_errors() {
        let base = image(b"base.raw", 5);
        type Edit = Box<dyn Fn(&mut Vec<u8>)>;
        let cases: Vec<Edit> = vec![
            Box::new(|h| h[16..24].copy_from_slice(&8u64.to_le_bytes())),
            Box::new(|h| h[4..8].copy_from_slice(&1000u32.to_le_bytes())),
            Box::new(|h| h[4..8].copy_from_slice(&(128u32 << 20).to_le_bytes())),
            Box::new(|h| h[8..12].copy_from_slice(&32u32.to_le_bytes())),
            Box::new(|h| h[8..12].copy_from_slice(&3u32.to_le_bytes())),
            Box::new(|h| h[8..12].copy_from_slice(&1u32.to_le_bytes())),
            Box::new(|h| h[48..56].copy_from_slice(&u64::MAX.to_le_bytes())),
            Box::new(|h| h[48..56].copy_from_slice(&1000u64.to_le_bytes())),
            Box::new(|h| h[40..48].copy_from_slice(&u64::MAX.to_le_bytes())),
            Box::new(|h| h[40..48].copy_from_slice(&0u64.to_le_bytes())),
            Box::new(|h| h[40..48].copy_from_slice(&(4 * 65536u64).to_le_bytes())),
            Box::new(|h| h[56..60].copy_from_slice(&u32::MAX.to_le_bytes())),
            Box::new(|h| h[60..64].copy_from_slice(&u32::MAX.to_le_bytes())),
            Box::new(|h| h[12..16].copy_from_slice(&0u32.to_le_bytes())),
        ];
        for (i, f) in cases.iter().enumerate() {
            let mut h = base.clone();
            f(&mut h);
            let r = Reader::new(&h, "qed");
            assert!(parse(&r, "x").is_err(), "case {i}");
        }
    }

    #[test]
    fn random_mutations_never_panic() {
        use crate::qcow2::tests::mutate;
        let base = image(b"base.raw", 5);
        let mut st = 0x2545_f491_4f6c_dd1d;
        for _ in 0..5000 {
            let mut v = base.clone();
            mutate(&mut v, 0..128, &mut st);
            let r = Reader::new(&v, "qed");
            let _ = parse(&r, "x");
        }
    }
}
