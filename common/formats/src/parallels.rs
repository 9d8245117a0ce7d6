//! Parallels (`.hds`, ploop): the 64-byte header at offset 0, read the way
//! qemu 10.0's `block/parallels.c` opens an image.
//!
//! qemu probes the format (on a zero-padded buffer, so a file shorter than
//! the 64-byte header counts too) when the magic is `WithoutFreeSpace` (old) or `WithouFreSpacExt` (new) and the version
//! is 2. The virtual size is `nb_sectors * 512`; for the old magic only the
//! low 32 bits of `nb_sectors` count. Opening refuses (all `Err` here):
//! zero sectors per track ("tracks"), a cluster above `INT32_MAX / 513`
//! sectors, more than `INT_MAX / 4` BAT entries, a header plus BAT larger
//! than one qemu read (about 2 GiB), a virtual size above qemu's
//! `BDRV_MAX_LENGTH` (2^63 - 2^30 bytes), and a format extension
//! (`ext_off`) whose cluster does not start with the extension magic
//! `0xAB234CEF23DCEA87` (qemu also checks an MD5 over it; we do not).
//! An image left "in use" (`inuse` = `0x746F6E59`), a bad `data_off` or
//! BAT entries outside the file do not stop a read-only `qemu-img info`,
//! so they are reported in `header` only.
//!
//! `info` keys: `format` (`parallels`), `virtual_size`, `encrypted`
//! (false). qemu prints neither `dirty-flag` nor `cluster-size` for
//! parallels (the driver has no `get_info`), so neither do we.
//!
//! `header` keys: `magic` (the 16 magic bytes), `version`, `heads`,
//! `cylinders`, `tracks` (sectors per cluster), `cluster_size` (bytes),
//! `bat_entries`, `nb_sectors` (as stored), `inuse` (bool: the image was
//! not closed cleanly), `data_off` (sectors), `flags`, `ext_off`
//! (sectors, 0 when there is no format extension).

use super::bytes::{le32, le64};
use super::{FormatError, Parsed, Reader};
use serde::Serialize;

const MAGIC_OLD: &[u8; 16] = b"WithoutFreeSpace";
const MAGIC_NEW: &[u8; 16] = b"WithouFreSpacExt";
const INUSE_MAGIC: u32 = 0x746f_6e59;
const EXT_MAGIC: u64 = 0xab23_4cef_23dc_ea87;
/// qemu's BDRV_MAX_LENGTH in sectors: (2^63 - 2^30) / 512.
const MAX_SECTORS: u64 = ((1u64 << 63) - (1 << 30)) / 512;
/// The largest header + BAT qemu reads in one request (rounded to 4 KiB).
const MAX_HEADER: u64 = 0x7fff_f000;

/// What a Parallels image reports beyond the common fields.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Details {
    /// Header facts qemu does not print.
    pub header: Header,
}

/// Parallels header facts.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Header {
    /// The magic (text).
    pub magic: String,
    /// Always 2.
    pub version: u32,
    /// Heads.
    pub heads: u32,
    /// Cylinders.
    pub cylinders: u32,
    /// Sectors per track (the cluster, in sectors).
    pub tracks: u32,
    /// Cluster size in bytes.
    pub cluster_size: u64,
    /// Catalog entries.
    pub bat_entries: u32,
    /// The stored sector count.
    pub nb_sectors: u64,
    /// Whether the in-use magic is set.
    pub inuse: bool,
    /// Data offset.
    pub data_off: u32,
    /// Flags.
    pub flags: u32,
    /// Format extension offset (sectors).
    pub ext_off: u64,
}

/// Parse the Parallels header, if the bytes are Parallels.
pub fn parse(r: &Reader, _name: &str) -> Result<Option<Parsed>, FormatError> {
    // qemu probes a zero-padded 2 KiB buffer, so a short file still counts.
    let mut h = r.read_upto(0, 64)?;
    h.resize(64, 0);
    let magic = h.get(..16).unwrap_or(&[]);
    let old = magic == MAGIC_OLD;
    if !(old || magic == MAGIC_NEW) || le32(&h, 16) != 2 {
        return Ok(None);
    }
    let stored = le64(&h, 36);
    let total_sectors = if old { stored & 0xffff_ffff } else { stored };
    let tracks = le32(&h, 28);
    if tracks == 0 {
        return Err(r.invalid("zero sectors per track"));
    }
    if tracks > i32::MAX as u32 / 513 {
        return Err(r.invalid(format!("cluster of {tracks} sectors is too big")));
    }
    let bat = le32(&h, 32);
    if bat > i32::MAX as u32 / 4 {
        return Err(r.invalid(format!("catalog of {bat} entries is too large")));
    }
    let header_size = (64 + u64::from(bat) * 4).div_ceil(4096) * 4096;
    if header_size > MAX_HEADER {
        return Err(r.invalid(format!("catalog of {bat} entries is too large")));
    }
    if total_sectors > MAX_SECTORS {
        return Err(r.invalid(format!(
            "virtual size of {total_sectors} sectors is too large"
        )));
    }
    let ext_off = le64(&h, 56);
    if ext_off != 0 {
        let at = ext_off
            .checked_mul(512)
            .ok_or_else(|| r.invalid(format!("format extension offset {ext_off} out of range")))?;
        let mut m = r.read_upto(at, 8)?;
        m.resize(8, 0);
        if le64(&m, 0) != EXT_MAGIC {
            return Err(r.invalid(format!("wrong format extension magic at sector {ext_off}")));
        }
    }

    let header = Header {
        magic: String::from_utf8_lossy(magic).into_owned(),
        version: 2,
        heads: le32(&h, 20),
        cylinders: le32(&h, 24),
        tracks,
        cluster_size: u64::from(tracks) * 512,
        bat_entries: bat,
        nb_sectors: stored,
        inuse: le32(&h, 44) == INUSE_MAGIC,
        data_off: le32(&h, 48),
        flags: le32(&h, 52),
        ext_off,
    };
    Ok(Some(Parsed::new(
        super::Format::Parallels,
        total_sectors * 512,
        super::Details::Parallels(Details { header }),
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(magic: &[u8; 16], sectors: u64) -> Vec<u8> {
        let mut h = vec![0u8; 4096];
        h[..16].copy_from_slice(magic);
        h[16..20].copy_from_slice(&2u32.to_le_bytes());
        h[20..24].copy_from_slice(&16u32.to_le_bytes());
        h[28..32].copy_from_slice(&2048u32.to_le_bytes());
        h[32..36].copy_from_slice(&64u32.to_le_bytes());
        h[36..44].copy_from_slice(&sectors.to_le_bytes());
        h[48..52].copy_from_slice(&8u32.to_le_bytes());
        h
    }

    fn parse_buf(b: &[u8]) -> Result<Option<Parsed>, FormatError> {
        let v = b.to_vec();
        parse(&Reader::new(&v, "parallels"), "x.hds")
    }

    #[test]
    fn valid_headers() {
        let p = parse_buf(&image(MAGIC_NEW, 131_072)).unwrap().unwrap();
        assert_eq!(p.info()["virtual_size"], 64u64 << 20);
        assert!(p.info().get("dirty_flag").is_none());
        assert!(p.info().get("cluster_size").is_none());
        assert_eq!(p.info()["header"]["cluster_size"], 1 << 20);
        // the old magic only counts the low 32 bits
        let p = parse_buf(&image(MAGIC_OLD, (1 << 33) + 128))
            .unwrap()
            .unwrap();
        assert_eq!(p.info()["virtual_size"], 65536);
        let mut img = image(MAGIC_NEW, 8);
        img[44..48].copy_from_slice(&INUSE_MAGIC.to_le_bytes());
        let p = parse_buf(&img).unwrap().unwrap();
        assert_eq!(p.info()["header"]["inuse"], true);
    }

    #[test]
    fn not_parallels() {
        assert!(parse_buf(&[0u8; 4096]).unwrap().is_none());
        let mut img = image(MAGIC_NEW, 8);
        img[16] = 3;
        assert!(parse_buf(&img).unwrap().is_none());
    }

    #[test]
    fn hostile_fields() {
        let set = |o: usize, v: &[u8]| {
            let mut img = image(MAGIC_NEW, 8);
            img[o..o + v.len()].copy_from_slice(v);
            img
        };
        for img in [
            set(28, &0u32.to_le_bytes()),
            set(28, &(i32::MAX as u32 / 513 + 1).to_le_bytes()),
            set(32, &u32::MAX.to_le_bytes()),
            set(32, &0x1fff_ffffu32.to_le_bytes()),
            set(36, &u64::MAX.to_le_bytes()),
            set(36, &(MAX_SECTORS + 1).to_le_bytes()),
            set(56, &u64::MAX.to_le_bytes()),
            set(56, &1u64.to_le_bytes()),
        ] {
            assert!(parse_buf(&img).is_err());
        }
        let img = set(36, &MAX_SECTORS.to_le_bytes());
        assert!(parse_buf(&img).unwrap().is_some());
    }

    #[test]
    fn every_prefix_is_handled() {
        let img = image(MAGIC_NEW, 8);
        for n in 0..img.len() {
            let r = parse_buf(&img[..n]);
            // read with zeros past the end, as qemu does: any answer but
            // a panic is fine once magic and version are there
            if n < 17 {
                assert!(matches!(r, Ok(None)), "{n}");
            }
        }
    }
}
