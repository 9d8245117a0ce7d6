//! Bochs growing ("Redolog"/"Growing") images, read the way qemu 10.0's
//! `block/bochs.c` opens them (qemu only ever reads this kind).
//!
//! The 512-byte little-endian header: magic `Bochs Virtual HD Image` [32]
//! @0, type `Redolog` [16] @32, subtype `Growing` [16] @48 (each a C string
//! compared with `strcmp`, so the NUL after it counts), version u32 @64
//! (`0x00020000`, or `0x00010000` for the old layout), header size u32 @68
//! (where the catalog starts), catalog entries u32 @72, bitmap size u32
//! @76, extent size u32 @80, then the disk size u64 @88 (version 2, after
//! a reserved u32) or @84 (version 1).
//!
//! `Ok(None)` unless the four probe fields match (qemu scores that 100).
//! Anything qemu's open refuses is an `Err`: more than 2^20 catalog
//! entries, an extent size below 512, not a power of two or above 8 MiB,
//! and a catalog too small for the disk. The catalog itself is not read:
//! qemu reads it as zeros past the end of the file, so nothing in it stops
//! an open.
//!
//! Info: `format` `bochs`, `virtual_size` (the disk size rounded down to
//! whole sectors), `encrypted` (false); qemu prints no `dirty-flag` for
//! bochs. `header`: `version`, `header_size`, `catalog_entries`,
//! `bitmap_size`, `extent_size`, `disk_size`.

use super::bytes::{le32, le64};
use super::{FormatError, Parsed, Reader};
use serde::Serialize;

/// The magic field's text.
pub const MAGIC: &[u8] = b"Bochs Virtual HD Image";
/// The type field's text.
pub const TYPE: &[u8] = b"Redolog";
/// The subtype field's text (the only one qemu reads).
pub const SUBTYPE: &[u8] = b"Growing";
/// The current header version.
pub const VERSION_2: u32 = 0x0002_0000;
/// The old header version (disk size 4 bytes earlier).
pub const VERSION_1: u32 = 0x0001_0000;
const HEADER: usize = 512;
const MAX_CATALOG: u32 = 0x10_0000;
const MAX_EXTENT: u32 = 0x80_0000;

/// `block/bochs.c`: the magic, type `Redolog` and subtype `Growing` (each
/// a C string in its field) and version 1 or 2.
pub fn probe_score(buf: &[u8], _name: &str) -> u8 {
    let v = le32(buf, 64);
    if super::bytes::c_str_eq(buf, 0, MAGIC)
        && super::bytes::c_str_eq(buf, 32, TYPE)
        && super::bytes::c_str_eq(buf, 48, SUBTYPE)
        && (v == VERSION_2 || v == VERSION_1)
    {
        100
    } else {
        0
    }
}

/// What a Bochs image reports beyond the common fields.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Details {
    /// Header facts qemu does not print.
    pub header: Header,
}

/// Bochs header facts.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Header {
    /// Header version.
    pub version: u32,
    /// Header size.
    pub header_size: u32,
    /// Catalog entries.
    pub catalog_entries: u32,
    /// Bitmap size.
    pub bitmap_size: u32,
    /// Extent size in bytes.
    pub extent_size: u32,
    /// Disk size in bytes.
    pub disk_size: u64,
}

/// Parse the bochs header, if the bytes are bochs.
pub fn parse(r: &Reader, _name: &str) -> Result<Option<Parsed>, FormatError> {
    // qemu probes and opens with zeros past the end of the file.
    let mut h = r.read_upto(0, HEADER)?;
    h.resize(HEADER, 0);
    if probe_score(&h, "") == 0 {
        return Ok(None);
    }
    let version = le32(&h, 64);
    let disk = if version == VERSION_1 {
        le64(&h, 84)
    } else {
        le64(&h, 88)
    };
    let sectors = disk / 512;
    let catalog = le32(&h, 72);
    if catalog > MAX_CATALOG {
        return Err(r.invalid(format!("catalog of {catalog} entries is too large")));
    }
    let extent = le32(&h, 80);
    if extent < 512 {
        return Err(r.invalid(format!("extent size {extent} is below 512")));
    }
    if !extent.is_power_of_two() {
        return Err(r.invalid(format!("extent size {extent} is not a power of two")));
    }
    if extent > MAX_EXTENT {
        return Err(r.invalid(format!("extent size {extent} is too large")));
    }
    if u64::from(catalog) < sectors.div_ceil(u64::from(extent / 512)) {
        return Err(r.invalid(format!(
            "catalog of {catalog} entries is too small for {disk} bytes"
        )));
    }

    let header = Header {
        version,
        header_size: le32(&h, 68),
        catalog_entries: catalog,
        bitmap_size: le32(&h, 76),
        extent_size: extent,
        disk_size: disk,
    };
    Ok(Some(Parsed::new(
        super::Format::Bochs,
        sectors * 512,
        super::Details::Bochs(Details { header }),
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A 1 MiB version-2 image with 4 KiB extents, catalog all unallocated.
    pub(crate) fn image(version: u32, disk: u64) -> Vec<u8> {
        let mut h = vec![0u8; HEADER + 256 * 4];
        h[..MAGIC.len()].copy_from_slice(MAGIC);
        h[32..32 + TYPE.len()].copy_from_slice(TYPE);
        h[48..48 + SUBTYPE.len()].copy_from_slice(SUBTYPE);
        h[64..68].copy_from_slice(&version.to_le_bytes());
        h[68..72].copy_from_slice(&512u32.to_le_bytes());
        h[72..76].copy_from_slice(&256u32.to_le_bytes());
        h[76..80].copy_from_slice(&512u32.to_le_bytes());
        h[80..84].copy_from_slice(&4096u32.to_le_bytes());
        let at = if version == VERSION_1 { 84 } else { 88 };
        h[at..at + 8].copy_from_slice(&disk.to_le_bytes());
        for b in &mut h[HEADER..] {
            *b = 0xff;
        }
        h
    }

    fn parse_buf(b: &[u8]) -> Result<Option<Parsed>, FormatError> {
        let v = b.to_vec();
        parse(&Reader::new(&v, "bochs"), "x")
    }

    #[test]
    fn both_versions_decode() {
        let p = parse_buf(&image(VERSION_2, 1 << 20)).unwrap().unwrap();
        assert_eq!(p.info()["format"], "bochs");
        assert_eq!(p.info()["virtual_size"], 1 << 20);
        assert!(p.info().get("dirty_flag").is_none());
        assert_eq!(p.info()["header"]["extent_size"], 4096);
        let p = parse_buf(&image(VERSION_1, (1 << 20) - 1))
            .unwrap()
            .unwrap();
        // rounded down to whole sectors, as qemu does
        assert_eq!(p.info()["virtual_size"], (1 << 20) - 512);
    }

    #[test]
    fn the_nul_after_each_field_counts() {
        let mut img = image(VERSION_2, 1 << 20);
        img[MAGIC.len()] = b'!';
        assert!(parse_buf(&img).unwrap().is_none());
        let mut img = image(VERSION_2, 1 << 20);
        img[48..55].copy_from_slice(b"Undoabl");
        assert!(parse_buf(&img).unwrap().is_none());
        let mut img = image(VERSION_2, 1 << 20);
        img[64..68].copy_from_slice(&0x0003_0000u32.to_le_bytes());
        assert!(parse_buf(&img).unwrap().is_none());
        assert!(parse_buf(&[0u8; 512]).unwrap().is_none());
    }

    #[test]
    fn hostile_fields_are_errors() {
        let set = |o: usize, v: u32| {
            let mut img = image(VERSION_2, 1 << 20);
            img[o..o + 4].copy_from_slice(&v.to_le_bytes());
            img
        };
        for img in [
            set(72, MAX_CATALOG + 1),
            set(72, u32::MAX),
            set(72, 255),
            set(80, 0),
            set(80, 256),
            set(80, 4097),
            set(80, MAX_EXTENT * 2),
            set(92, 1),
        ] {
            assert!(parse_buf(&img).is_err());
        }
        let mut img = image(VERSION_2, 1 << 20);
        img[88..96].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(parse_buf(&img).is_err());
    }

    #[test]
    fn every_prefix_is_handled() {
        let img = image(VERSION_2, 1 << 20);
        for n in 0..=img.len() {
            // zeros past the end: once the probe fields are in, the
            // extent size (@80) decides
            let r = parse_buf(&img[..n]);
            if n < 67 {
                assert!(matches!(r, Ok(None)), "{n}");
            } else if n < 82 {
                assert!(r.is_err(), "{n}");
            } else {
                assert!(matches!(r, Ok(Some(_))), "{n}");
            }
        }
    }
}
