//! Apple disk images (UDIF, `.dmg`), read the way qemu 10.0's
//! `block/dmg.c` opens them.
//!
//! qemu's probe looks at the **name only**: a file whose name is longer
//! than 4 bytes and ends in `.dmg` (case matters) scores 2, above raw's 1,
//! whatever its bytes. So `qemu-img info x.dmg` opens any such file as dmg
//! unless a header at offset 0 scores higher (qcow2, vmdk, ...), and a raw
//! disk named `x.dmg` is not raw to qemu: its open fails ("Could not
//! locate UDIF trailer"). A dmg's bytes under another name are raw to qemu.
//!
//! The open finds the 512-byte big-endian `koly` trailer: the four bytes
//! `koly` anywhere in the last 515 bytes (the last 511 bytes of the
//! second-last sector or the first 4 of the last; the file length is
//! rounded up to whole sectors, the rounding read as zeros). From the
//! trailer: version u32 @4, header size u32 @8, flags u32 @12, data fork
//! offset u64 @0x18 and length @0x20, resource fork offset @0x28 and
//! length @0x30, XML property list offset @0xd8 and length @0xe0, image
//! variant u32 @0x1e8, sector count u64 @0x1ec.
//!
//! - `Ok(None)`: no `koly` trailer (or one qemu would refuse) and the name
//!   does not end in `.dmg`: the bytes are raw to qemu.
//! - `Ok(Some)`, `qemu_probes` true: named `*.dmg`, with a trailer qemu
//!   accepts. `qemu_probes` false: a trailer qemu accepts under another
//!   name (reported beside raw, like a fixed VHD's footer; `-f dmg` reads
//!   it).
//! - `Err`: named `*.dmg` and no trailer, or one qemu refuses (a file
//!   under 512 bytes; a data fork starting after the trailer; a resource
//!   fork or property list not wholly before it; neither of them; a
//!   property list above 16 MiB; a sector count above `INT64_MAX / 512`).
//!
//! Not checked: the block map inside the resource fork or property list
//! (`mish` blocks), which qemu also parses at open and may refuse; here
//! such a file still reads as dmg. It is never raw either way.
//!
//! Info: `format` `dmg`, `virtual_size` (sector count * 512), `encrypted`
//! (false); qemu prints no `dirty-flag` for dmg. `header`: `named_dmg`,
//! `trailer_offset`, `version`, `header_size`, `flags`,
//! `data_fork_offset`, `data_fork_length`, `resource_fork_offset`,
//! `resource_fork_length`, `xml_offset`, `xml_length`, `image_variant`,
//! `sector_count`.

use super::bytes::{be32, be64};
use super::{FormatError, Parsed, Reader};
use serde::Serialize;

const TRAILER: usize = 512;
const MAX_XML: u64 = 16 << 20;

/// Whether qemu's dmg probe picks a file by this name: longer than 4
/// bytes and ending in `.dmg` (`strcmp`, so case matters).
pub fn named_dmg(name: &str) -> bool {
    name.len() > 4 && name.ends_with(".dmg")
}

/// Where qemu's `dmg_find_koly_offset()` finds the trailer, if anywhere.
fn find_koly(r: &Reader) -> Result<Option<u64>, FormatError> {
    let len = r.len().div_ceil(512) * 512;
    let start = len.saturating_sub(511 + 512);
    let want = len.min(515) as usize;
    let mut w = r.read_upto(start, want)?;
    w.resize(want, 0);
    // Matched byte by byte: a slice comparison per window is a memcmp call.
    Ok(w.windows(4)
        .position(|x| matches!(x, [b'k', b'o', b'l', b'y']))
        .map(|i| start + i as u64))
}

/// What a UDIF image reports beyond the common fields.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Details {
    /// Header facts qemu does not print.
    pub header: Header,
}

/// UDIF header facts.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Header {
    /// Whether the name ends in `.dmg` (qemu probes by name).
    pub named_dmg: bool,
    /// Where the trailer is.
    pub trailer_offset: u64,
    /// Trailer version.
    pub version: u32,
    /// Trailer header size.
    pub header_size: u32,
    /// Flags.
    pub flags: u32,
    /// Data fork offset.
    pub data_fork_offset: u64,
    /// Data fork length.
    pub data_fork_length: u64,
    /// Resource fork offset.
    pub resource_fork_offset: u64,
    /// Resource fork length.
    pub resource_fork_length: u64,
    /// Property list offset.
    pub xml_offset: u64,
    /// Property list length.
    pub xml_length: u64,
    /// Image variant.
    pub image_variant: u32,
    /// Sector count.
    pub sector_count: u64,
}

/// Parse the dmg trailer, if the file is dmg to qemu (see the module
/// documentation for when the name decides).
pub fn parse(r: &Reader, name: &str) -> Result<Option<Parsed>, FormatError> {
    let by_name = named_dmg(name);
    if r.is_empty() {
        // qemu never probes an empty file: it is raw.
        return Ok(None);
    }
    let Some(at) = find_koly(r)? else {
        if by_name {
            return Err(r.invalid(
                "named *.dmg, so qemu probes it as dmg by its name, but there is no UDIF \
(koly) trailer in its last 515 bytes: qemu cannot open it, and it is not raw to qemu",
            ));
        }
        return Ok(None);
    };
    let mut t = r.read_upto(at, TRAILER)?;
    t.resize(TRAILER, 0);
    let data_fork = be64(&t, 0x18);
    let rsrc = (be64(&t, 0x28), be64(&t, 0x30));
    let xml = (be64(&t, 0xd8), be64(&t, 0xe0));
    let sectors = be64(&t, 0x1ec);
    let refused = if data_fork > at {
        Some(format!("data fork at {data_fork} starts after the trailer"))
    } else if rsrc.0 >= at || rsrc.1 > at - rsrc.0 {
        Some(format!(
            "resource fork ({} bytes at {}) is not before the trailer",
            rsrc.1, rsrc.0
        ))
    } else if xml.0 >= at || xml.1 > at - xml.0 {
        Some(format!(
            "property list ({} bytes at {}) is not before the trailer",
            xml.1, xml.0
        ))
    } else if sectors > i64::MAX as u64 / 512 {
        Some(format!("sector count {sectors} is too large"))
    } else if rsrc.1 == 0 && xml.1 == 0 {
        Some("neither a resource fork nor a property list".to_owned())
    } else if rsrc.1 == 0 && xml.1 > MAX_XML {
        Some(format!("property list of {} bytes is above 16 MiB", xml.1))
    } else {
        None
    };
    if let Some(why) = refused {
        // Under another name qemu reads the file as raw and never looks.
        return if by_name {
            Err(r.invalid(format!("UDIF trailer at {at}: {why}")))
        } else {
            Ok(None)
        };
    }

    let header = Header {
        named_dmg: by_name,
        trailer_offset: at,
        version: be32(&t, 4),
        header_size: be32(&t, 8),
        flags: be32(&t, 12),
        data_fork_offset: data_fork,
        data_fork_length: be64(&t, 0x20),
        resource_fork_offset: rsrc.0,
        resource_fork_length: rsrc.1,
        xml_offset: xml.0,
        xml_length: xml.1,
        image_variant: be32(&t, 0x1e8),
        sector_count: sectors,
    };
    Ok(Some(Parsed {
        qemu_probes: by_name,
        ..Parsed::new(
            super::Format::Dmg,
            sectors * 512,
            super::Details::Dmg(Details { header }),
        )
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A property list of `xml` bytes, then the trailer for `sectors`.
    fn image(xml: usize, sectors: u64) -> Vec<u8> {
        let mut v = vec![b' '; xml];
        let mut t = vec![0u8; TRAILER];
        t[..4].copy_from_slice(b"koly");
        t[4..8].copy_from_slice(&4u32.to_be_bytes());
        t[8..12].copy_from_slice(&512u32.to_be_bytes());
        t[0xe0..0xe8].copy_from_slice(&(xml as u64).to_be_bytes());
        t[0x1ec..0x1f4].copy_from_slice(&sectors.to_be_bytes());
        v.extend_from_slice(&t);
        v
    }

    fn parse_as(b: &[u8], name: &str) -> Result<Option<Parsed>, FormatError> {
        let v = b.to_vec();
        parse(&Reader::new(&v, "dmg"), name)
    }

    #[test]
    fn trailer_decodes_and_the_name_decides_probing() {
        let img = image(700, 2048);
        let p = parse_as(&img, "d/x.dmg").unwrap().unwrap();
        assert!(p.qemu_probes);
        assert_eq!(p.info()["virtual_size"], 1 << 20);
        assert_eq!(p.info()["header"]["trailer_offset"], 700);
        let p = parse_as(&img, "d/x.img").unwrap().unwrap();
        assert!(!p.qemu_probes);
    }

    #[test]
    fn a_raw_disk_named_dmg_is_an_error_not_raw() {
        let raw = vec![0u8; 4096];
        assert!(parse_as(&raw, "x.dmg").is_err());
        assert!(parse_as(&raw, "x.img").unwrap().is_none());
        assert!(parse_as(&raw, ".dmg").unwrap().is_none());
        assert!(parse_as(&raw, "x.DMG").unwrap().is_none());
        assert!(parse_as(&[], "x.dmg").unwrap().is_none());
    }

    #[test]
    fn the_trailer_may_sit_at_an_odd_offset() {
        // 3 bytes more: the trailer ends 3 bytes into a padded sector.
        let img = image(703, 8);
        let p = parse_as(&img, "x.dmg").unwrap().unwrap();
        assert_eq!(p.info()["header"]["trailer_offset"], 703);
        assert_eq!(p.info()["virtual_size"], 4096);
    }

    #[test]
    fn refused_trailers() {
        let set = |o: usize, v: u64| {
            let mut img = image(700, 8);
            img[700 + o..700 + o + 8].copy_from_slice(&v.to_be_bytes());
            img
        };
        for img in [
            set(0x18, 701),
            set(0x28, 700),
            set(0x30, 701),
            set(0xd8, 1),
            set(0xe0, 0),
            set(0xe0, u64::MAX),
            set(0x1ec, u64::MAX),
        ] {
            assert!(parse_as(&img, "x.dmg").is_err());
            assert!(parse_as(&img, "x").unwrap().is_none());
        }
        assert!(parse_as(&image(0, 8), "x.dmg").is_err());
    }

    #[test]
    fn every_prefix_is_handled() {
        let img = image(700, 8);
        for n in 0..=img.len() {
            let _ = parse_as(&img[..n], "x.dmg");
            let _ = parse_as(&img[..n], "x");
        }
    }
}
