//! ISO 9660 and UDF: the volume descriptors from 32 KiB on. qemu reads
//! these images as raw (`qemu_probes: false`); this is only a detail
//! reported beside qemu's view (`info.iso`), so garbage gives `Ok(None)`,
//! never an error.
//!
//! We walk the descriptors in 2 KiB steps from offset 32768 (at most 64):
//! ISO 9660 descriptors (`CD001`: type 0 boot record, 1 primary, 2
//! supplementary, 255 terminator) and the UDF volume recognition sequence
//! (`BEA01`, `NSR02`/`NSR03`, `TEA01`, also `BOOT2`, `CDW02`), stopping at
//! the first block that is neither. The first block must be one of them.
//!
//! Keys of the info:
//!
//! - `type`: `"udf"` when an `NSR02`/`NSR03` descriptor is present (a UDF
//!   bridge disc with an ISO 9660 tree too is `udf`), else `"iso9660"`;
//! - `volume_id`: the primary volume descriptor's volume identifier,
//!   trailing spaces removed (null without a primary descriptor);
//!   `volume_id_bytes` (base64) when not UTF-8;
//! - `volume_space_size`: bytes, the primary descriptor's block count (u32
//!   LE at 80) × logical block size (u16 LE at 128), or null;
//! - `el_torito`: a boot record descriptor with the system identifier
//!   `EL TORITO SPECIFICATION` is present (a bootable CD);
//! - `joliet`: a supplementary descriptor with a Joliet escape sequence.

use super::{FormatError, Parsed, Reader, text};
use serde::Serialize;

const START: u64 = 32 * 1024;
const BLOCK: u64 = 2048;
const MAX_DESCRIPTORS: u64 = 64;

/// An ISO 9660 / UDF layout (module docs).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Iso {
    /// `iso9660` or `udf`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// The primary volume's id (lossy text), or null without one.
    pub volume_id: Option<String>,
    /// Its bytes (base64) when not UTF-8.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub volume_id_bytes: Option<String>,
    /// The primary volume's size in bytes, or null without one.
    pub volume_space_size: Option<u64>,
    /// Whether an El Torito boot record is present.
    pub el_torito: bool,
    /// Whether a Joliet descriptor is present.
    pub joliet: bool,
}

/// Parse the ISO 9660 / UDF descriptors, if the bytes are an ISO.
pub fn parse(r: &Reader, _name: &str) -> Result<Option<Parsed>, FormatError> {
    if r.len() < START + BLOCK {
        return Ok(None);
    }
    let mut pvd: Option<Vec<u8>> = None;
    let (mut udf, mut el_torito, mut joliet, mut any) = (false, false, false, false);
    for i in 0..MAX_DESCRIPTORS {
        let off = START + i * BLOCK;
        if off + BLOCK > r.len() {
            break;
        }
        let Ok(d) = r.read(off, BLOCK as usize) else {
            break;
        };
        let kind = d.first().copied().unwrap_or(0);
        match d.get(1..6) {
            Some(b"CD001") => match kind {
                0 if d.get(7..30) == Some(b"EL TORITO SPECIFICATION".as_slice()) => {
                    el_torito = true;
                }
                1 if pvd.is_none() => pvd = Some(d),
                2 if matches!(d.get(88..91), Some(b"%/@" | b"%/C" | b"%/E")) => joliet = true,
                _ => {}
            },
            Some(b"NSR02" | b"NSR03") => udf = true,
            Some(b"BEA01" | b"TEA01" | b"BOOT2" | b"CDW02") => {}
            _ => break,
        }
        any = true;
    }
    if !any {
        return Ok(None);
    }
    let (mut volume_id, mut volume_id_bytes, mut volume_space_size) = (None, None, None);
    if let Some(p) = &pvd {
        let raw = p.get(40..72).unwrap_or(&[]);
        let end = raw
            .iter()
            .rposition(|&c| c != b' ' && c != 0)
            .map_or(0, |i| i + 1);
        let (id, id_bytes) = text(&raw[..end]);
        (volume_id, volume_id_bytes) = (Some(id), id_bytes);
        let blocks = u64::from(super::bytes::le32(p, 80));
        let bsize = u64::from(super::bytes::le16(p, 128));
        volume_space_size = Some(blocks * bsize);
    }
    let iso = Iso {
        kind: if udf { "udf" } else { "iso9660" },
        volume_id,
        volume_id_bytes,
        volume_space_size,
        el_torito,
        joliet,
    };
    Ok(Some(Parsed::layout(
        super::Format::Iso,
        super::Details::Iso(iso),
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn desc(kind: u8, id: &[u8; 5]) -> Vec<u8> {
        let mut d = vec![0u8; 2048];
        d[0] = kind;
        d[1..6].copy_from_slice(id);
        d[6] = 1;
        d
    }

    fn iso(udf: bool, boot: bool) -> Vec<u8> {
        let mut b = vec![0u8; 32768];
        let mut p = desc(1, b"CD001");
        p[40..72].copy_from_slice(b"MY_VOLUME                       ");
        p[80..84].copy_from_slice(&184u32.to_le_bytes());
        p[128..130].copy_from_slice(&2048u16.to_le_bytes());
        b.extend_from_slice(&p);
        if boot {
            let mut e = desc(0, b"CD001");
            e[7..30].copy_from_slice(b"EL TORITO SPECIFICATION");
            b.extend_from_slice(&e);
        }
        b.extend_from_slice(&desc(255, b"CD001"));
        if udf {
            b.extend_from_slice(&desc(0, b"BEA01"));
            b.extend_from_slice(&desc(0, b"NSR02"));
            b.extend_from_slice(&desc(0, b"TEA01"));
        }
        b.extend_from_slice(&[0u8; 4096]);
        b
    }

    fn run(b: &[u8]) -> Option<Parsed> {
        let v = b.to_vec();
        parse(&Reader::new(&v, "iso"), "x").unwrap()
    }

    #[test]
    fn pvd() {
        let p = run(&iso(false, true)).unwrap();
        assert_eq!(p.info()["type"], "iso9660");
        assert_eq!(p.info()["volume_id"], "MY_VOLUME");
        assert_eq!(p.info()["volume_space_size"], 184 * 2048);
        assert_eq!(p.info()["el_torito"], true);
        assert!(!p.qemu_probes);
    }

    #[test]
    fn udf_bridge() {
        let p = run(&iso(true, false)).unwrap();
        assert_eq!(p.info()["type"], "udf");
        assert_eq!(p.info()["el_torito"], false);
    }

    #[test]
    fn mutated_descriptors_never_panic() {
        let base = iso(true, true);
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        for _ in 0..500 {
            let mut b = base.clone();
            for _ in 0..16 {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                let at = 32768 + (seed % (b.len() as u64 - 32768)) as usize;
                b[at] = (seed >> 32) as u8;
            }
            let _ = run(&b);
        }
    }

    #[test]
    fn not_iso_and_prefixes() {
        assert!(run(&[0u8; 40000]).is_none());
        assert!(run(&[0xffu8; 40000]).is_none());
        let img = iso(true, true);
        for n in 0..img.len() {
            let _ = run(&img[..n]);
        }
    }
}
