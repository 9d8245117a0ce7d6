//! VDI (VirtualBox): the 512-byte pre-header and header at offset 0, read
//! the way qemu 10.0's `block/vdi.c` opens an image.
//!
//! qemu probes VDI when the u32 LE at 0x40 is `0xBEDA107F` (its probe
//! buffer is zero-padded, so even a file shorter than the 512-byte header
//! counts, and is read with zeros past its end). Opening then refuses (all are `Err` here):
//! a disk size above `0x3fffffff` MiB, a version other than 1.1, a block
//! map or data offset not on a 512-byte boundary, a sector size other
//! than 512, a block size other than 1 MiB, a disk size larger than the
//! block map covers, a non-null link or parent UUID (VDI snapshots and
//! differencing images), more than `0x3fffffff` blocks, and a block map
//! larger than one qemu request (2 GiB - 512). A disk size that is not a
//! multiple of 512 is rounded up, as qemu does. qemu reads the block map
//! with zeros past the end of the file and does not check it against the
//! file length, so neither do we (see `bmap_in_file`).
//!
//! `info` keys: `format` (`vdi`), `virtual_size`, `cluster_size` (the
//! block size), `encrypted` (false), `dirty_flag` (false). VDI has no
//! backing file in qemu.
//!
//! `header` keys:
//! - `text`: the pre-header text up to the first NUL or newline;
//! - `version`: `major.minor`; `header_size`;
//! - `image_type`: `dynamic` (1), `static` (2), `undo` (3), `diff` (4) or
//!   `unknown`; `image_type_code`: the raw value; `image_flags`;
//! - `block_size`, `block_extra`, `blocks_in_image`, `blocks_allocated`;
//! - `offset_bmap`, `offset_data`, `sector_size`, `disk_size` (as stored,
//!   before rounding);
//! - `bmap_in_file`: whether the whole block map lies inside the file;
//! - `uuid_image`, `uuid_last_snap` (RFC 4122 form: the first three
//!   fields are stored little-endian).

use super::bytes::{le32, le64};
use super::{FormatError, Parsed, Reader};
use serde::Serialize;

const SIGNATURE: u32 = 0xbeda_107f;
const VERSION_1_1: u32 = 0x0001_0001;
const BLOCK_SIZE: u32 = 1 << 20;
const BLOCKS_MAX: u32 = 0x3fff_ffff;
const DISK_SIZE_MAX: u64 = BLOCKS_MAX as u64 * BLOCK_SIZE as u64;
/// qemu's BDRV_REQUEST_MAX_BYTES: the largest single read it makes.
const REQUEST_MAX: u64 = 0x7fff_fe00;

fn image_type(t: u32) -> &'static str {
    match t {
        1 => "dynamic",
        2 => "static",
        3 => "undo",
        4 => "diff",
        _ => "unknown",
    }
}

/// What a VDI image reports beyond the common fields.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Details {
    /// Header facts qemu does not print.
    pub header: Header,
}

/// VDI header facts.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Header {
    /// The pre-header text.
    pub text: String,
    /// `major.minor`.
    pub version: String,
    /// Header size.
    pub header_size: u32,
    /// Image type name.
    pub image_type: &'static str,
    /// Image type code.
    pub image_type_code: u32,
    /// Image flags.
    pub image_flags: u32,
    /// Block size.
    pub block_size: u32,
    /// Extra bytes per block.
    pub block_extra: u32,
    /// Blocks.
    pub blocks_in_image: u32,
    /// Blocks allocated.
    pub blocks_allocated: u32,
    /// Block map offset.
    pub offset_bmap: u32,
    /// Data offset.
    pub offset_data: u32,
    /// Sector size.
    pub sector_size: u32,
    /// Disk size field.
    pub disk_size: u64,
    /// Whether the block map is inside the file.
    pub bmap_in_file: bool,
    /// Image UUID.
    pub uuid_image: String,
    /// Last snapshot UUID.
    pub uuid_last_snap: String,
}

/// Parse the VDI header, if the bytes are VDI.
pub fn parse(r: &Reader, _name: &str) -> Result<Option<Parsed>, FormatError> {
    // qemu probes a zero-padded 2 KiB buffer, so a short file still counts.
    let mut h = r.read_upto(0, 512)?;
    h.resize(512, 0);
    if le32(&h, 0x40) != SIGNATURE {
        return Ok(None);
    }
    let stored_size = le64(&h, 0x170);
    if stored_size > DISK_SIZE_MAX {
        return Err(r.invalid(format!("unsupported image size {stored_size}")));
    }
    let disk_size = stored_size.div_ceil(512) * 512;
    let version = le32(&h, 0x44);
    let offset_bmap = le32(&h, 0x154);
    let offset_data = le32(&h, 0x158);
    let sector_size = le32(&h, 0x168);
    let block_size = le32(&h, 0x178);
    let blocks = le32(&h, 0x180);
    let null = |o: usize| h.get(o..o + 16).is_some_and(|s| s.iter().all(|b| *b == 0));
    if version != VERSION_1_1 {
        return Err(r.invalid(format!(
            "unsupported version {}.{}",
            version >> 16,
            version & 0xffff
        )));
    }
    if !offset_bmap.is_multiple_of(512) {
        return Err(r.invalid(format!("unaligned block map offset {offset_bmap:#x}")));
    }
    if !offset_data.is_multiple_of(512) {
        return Err(r.invalid(format!("unaligned data offset {offset_data:#x}")));
    }
    if sector_size != 512 {
        return Err(r.invalid(format!("sector size {sector_size} is not 512")));
    }
    if block_size != BLOCK_SIZE {
        return Err(r.invalid(format!("block size {block_size} is not 1 MiB")));
    }
    if disk_size > u64::from(blocks) * u64::from(block_size) {
        return Err(r.invalid(format!(
            "disk size {disk_size} larger than the block map covers"
        )));
    }
    if !null(0x1a8) {
        return Err(r.invalid("non-null link UUID (unsupported)"));
    }
    if !null(0x1b8) {
        return Err(r.invalid("non-null parent UUID (unsupported)"));
    }
    if blocks > BLOCKS_MAX {
        return Err(r.invalid(format!("too many blocks ({blocks})")));
    }
    let bmap_bytes = (u64::from(blocks) * 4).div_ceil(512) * 512;
    if bmap_bytes > REQUEST_MAX {
        return Err(r.invalid(format!("block map of {bmap_bytes} bytes is too large")));
    }
    let bmap_in_file = u64::from(offset_bmap) + bmap_bytes <= r.len();

    let text: String = String::from_utf8_lossy(h.get(..0x40).unwrap_or(&[]))
        .chars()
        .take_while(|c| *c != '\0' && *c != '\n')
        .collect();
    let itype = le32(&h, 0x4c);
    let header = Header {
        text,
        version: format!("{}.{}", version >> 16, version & 0xffff),
        header_size: le32(&h, 0x48),
        image_type: image_type(itype),
        image_type_code: itype,
        image_flags: le32(&h, 0x50),
        block_size,
        block_extra: le32(&h, 0x17c),
        blocks_in_image: blocks,
        blocks_allocated: le32(&h, 0x184),
        offset_bmap,
        offset_data,
        sector_size,
        disk_size: stored_size,
        bmap_in_file,
        uuid_image: super::vhd::guid_string(h.get(0x188..).unwrap_or(&[])),
        uuid_last_snap: super::vhd::guid_string(h.get(0x198..).unwrap_or(&[])),
    };
    Ok(Some(Parsed {
        cluster_size: Some(i64::from(block_size)),
        dirty_flag: Some(false),
        ..Parsed::new(
            super::Format::Vdi,
            disk_size,
            super::Details::Vdi(Details { header }),
        )
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p32(b: &mut [u8], o: usize, v: u32) {
        b[o..o + 4].copy_from_slice(&v.to_le_bytes());
    }

    fn image(size: u64) -> Vec<u8> {
        let mut h = vec![0u8; 1024];
        h[..36].copy_from_slice(b"<<< QEMU VM Virtual Disk Image >>>\n\0");
        p32(&mut h, 0x40, SIGNATURE);
        p32(&mut h, 0x44, VERSION_1_1);
        p32(&mut h, 0x48, 0x190);
        p32(&mut h, 0x4c, 1);
        p32(&mut h, 0x154, 512);
        p32(&mut h, 0x158, 1024);
        p32(&mut h, 0x168, 512);
        h[0x170..0x178].copy_from_slice(&size.to_le_bytes());
        p32(&mut h, 0x178, BLOCK_SIZE);
        p32(&mut h, 0x180, size.div_ceil(1 << 20) as u32);
        h[0x188..0x198].copy_from_slice(&[1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16]);
        h
    }

    fn parse_buf(b: &[u8]) -> Result<Option<Parsed>, FormatError> {
        let v = b.to_vec();
        parse(&Reader::new(&v, "vdi"), "x.vdi")
    }

    #[test]
    fn valid_header() {
        let p = parse_buf(&image(64 << 20)).unwrap().unwrap();
        assert_eq!(p.info()["virtual_size"], 64u64 << 20);
        assert_eq!(p.info()["cluster_size"], 1 << 20);
        assert_eq!(p.info()["header"]["image_type"], "dynamic");
        assert_eq!(p.info()["header"]["version"], "1.1");
        assert_eq!(
            p.info()["header"]["uuid_image"],
            "04030201-0605-0807-090a-0b0c0d0e0f10"
        );
        // odd sizes round up to a sector
        let p = parse_buf(&image(1000)).unwrap().unwrap();
        assert_eq!(p.info()["virtual_size"], 1024);
    }

    #[test]
    fn not_vdi() {
        assert!(parse_buf(&[0u8; 4096]).unwrap().is_none());
        // a short file is still VDI to qemu
        let img = image(1 << 20);
        assert!(parse_buf(&img[..511]).unwrap().is_some());
    }

    #[test]
    fn hostile_fields() {
        let cases: &[(usize, u32)] = &[
            (0x44, 0x0001_0000),
            (0x154, 100),
            (0x158, 7),
            (0x168, 4096),
            (0x178, 2 << 20),
            (0x180, 0),
            (0x180, 0x4000_0000),
            (0x1a8, 1),
            (0x1b8, 1),
        ];
        for (o, v) in cases {
            let mut img = image(1 << 20);
            p32(&mut img, *o, *v);
            assert!(parse_buf(&img).is_err(), "{o:#x}={v:#x}");
        }
        let mut img = image(1 << 20);
        img[0x170..0x178].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(parse_buf(&img).is_err());
        // a block map far outside the file is what qemu tolerates
        let mut img = image(1 << 20);
        p32(&mut img, 0x154, 0xffff_fe00);
        let p = parse_buf(&img).unwrap().unwrap();
        assert_eq!(p.info()["header"]["bmap_in_file"], false);
    }

    #[test]
    fn every_prefix_is_handled() {
        let img = image(1 << 20);
        for n in 0..img.len() {
            let r = parse_buf(&img[..n]);
            // a short file is read with zeros past its end, as qemu does:
            // any answer but a panic is fine once the signature is there
            if n < 0x44 {
                assert!(matches!(r, Ok(None)), "{n}");
            }
        }
    }
}
