//! cloop (compressed loop, V2.0) images, read the way qemu 10.0's
//! `block/cloop.c` opens them.
//!
//! The file starts with a shell script, `#!/bin/sh`, `#V2.0 Format`,
//! `modprobe cloop file=$0 && mount -r -t iso9660 /dev/cloop $1` (each
//! line ending in LF): qemu's probe scores that prefix 2, above raw's 1,
//! so such a file is never raw to qemu. Then, big-endian: block size u32
//! @128 (uncompressed bytes per block), block count u32 @132, and
//! `count + 1` u64 offsets @136 (where each compressed block starts, the
//! last one where the data ends).
//!
//! `Ok(None)` unless the script prefix is there. Anything qemu's open
//! refuses is an `Err`: a block size of 0, not a multiple of 512 or above
//! 64 MiB; a count whose offsets table would pass 512 MiB; offsets that go
//! backwards or a compressed block above 128 MiB. Like qemu, bytes past the
//! end of the file read as zeros. The offsets are read only within the
//! per-format read budget (a larger table is an `Err` here; qemu would
//! read it).
//!
//! Info: `format` `cloop`, `virtual_size` (`count * block_size / 512`
//! sectors, computed in 32 bits as qemu does: it wraps), `encrypted`
//! (false); qemu prints no `dirty-flag` for cloop. `header`:
//! `block_size`, `blocks`, `data_end` (the last offset).

use super::bytes::{be32, be64};
use super::{FormatError, MAX_READ, Parsed, Reader};
use serde::Serialize;

/// The shell-script prefix qemu probes for.
pub const MAGIC: &[u8] =
    b"#!/bin/sh\n#V2.0 Format\nmodprobe cloop file=$0 && mount -r -t iso9660 /dev/cloop $1\n";
const MAX_BLOCK_SIZE: u32 = 64 << 20;
const MAX_OFFSETS_BYTES: u64 = 512 << 20;
const OFFSETS_AT: u64 = 136;

/// What a cloop image reports beyond the common fields.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Details {
    /// Header facts qemu does not print.
    pub header: Header,
}

/// cloop header facts.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Header {
    /// Block size.
    pub block_size: u32,
    /// Blocks.
    pub blocks: u32,
    /// Where the compressed data ends.
    pub data_end: u64,
}

/// Parse the cloop header, if the bytes are cloop.
pub fn parse(r: &Reader, _name: &str) -> Result<Option<Parsed>, FormatError> {
    let mut h = r.read_upto(0, OFFSETS_AT as usize)?;
    h.resize(OFFSETS_AT as usize, 0);
    if !h.starts_with(MAGIC) {
        return Ok(None);
    }
    let block_size = be32(&h, 128);
    if block_size == 0 || !block_size.is_multiple_of(512) {
        return Err(r.invalid(format!(
            "block size {block_size} is not a non-zero multiple of 512"
        )));
    }
    if block_size > MAX_BLOCK_SIZE {
        return Err(r.invalid(format!("block size {block_size} is above 64 MiB")));
    }
    let blocks = be32(&h, 132);
    if blocks > (u32::MAX - 1) / 8 {
        return Err(r.invalid(format!("{blocks} blocks is too many")));
    }
    let entries = u64::from(blocks) + 1;
    if entries * 8 > MAX_OFFSETS_BYTES {
        return Err(r.invalid(format!("{blocks} blocks need too many offsets")));
    }
    let data_end = check_offsets(r, entries)?;
    // qemu: n_blocks * sectors_per_block, both uint32_t.
    let sectors = blocks.wrapping_mul(block_size / 512);

    let header = Header {
        block_size,
        blocks,
        data_end,
    };
    Ok(Some(Parsed::new(
        super::Format::Cloop,
        u64::from(sectors) * 512,
        super::Details::Cloop(Details { header }),
    )))
}

/// The offsets table as qemu checks it (never decreasing, no compressed
/// block above 128 MiB), read a chunk at a time; entries past the end of
/// the file are zeros. Returns the last offset.
fn check_offsets(r: &Reader, entries: u64) -> Result<u64, FormatError> {
    let mut prev: Option<u64> = None;
    let mut index = 0u64;
    while index < entries {
        let at = OFFSETS_AT + index * 8;
        if at >= r.len() {
            // The rest read as zeros: fine only if every offset so far was.
            return match prev {
                Some(p) if p > 0 => Err(r.invalid(format!(
                    "offsets go backwards at block {index} (past the end of the file)"
                ))),
                _ => Ok(0),
            };
        }
        let n = ((entries - index) * 8).min(MAX_READ as u64 / 8 * 8) as usize;
        let mut chunk = r.read_upto(at, n)?;
        // A last entry cut by the end of the file reads as zeros after it.
        chunk.resize(chunk.len().div_ceil(8) * 8, 0);
        for e in chunk.chunks_exact(8) {
            let o = be64(e, 0);
            if let Some(p) = prev {
                if o < p {
                    return Err(r.invalid(format!("offsets go backwards at block {index}")));
                }
                if o - p > 2 * u64::from(MAX_BLOCK_SIZE) {
                    return Err(r.invalid(format!(
                        "compressed block {index} of {} bytes is too large",
                        o - p
                    )));
                }
            }
            prev = Some(o);
            index += 1;
        }
    }
    Ok(prev.unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `blocks` blocks of 64 KiB, each "compressed" to 100 bytes.
    fn image(blocks: u32) -> Vec<u8> {
        let mut v = vec![0u8; 136];
        v[..MAGIC.len()].copy_from_slice(MAGIC);
        v[128..132].copy_from_slice(&65536u32.to_be_bytes());
        v[132..136].copy_from_slice(&blocks.to_be_bytes());
        let first = 136 + 8 * (u64::from(blocks) + 1);
        for i in 0..=u64::from(blocks) {
            v.extend_from_slice(&(first + 100 * i).to_be_bytes());
        }
        v.resize(first as usize + 100 * blocks as usize, 0x5a);
        v
    }

    fn parse_buf(b: &[u8]) -> Result<Option<Parsed>, FormatError> {
        let v = b.to_vec();
        parse(&Reader::new(&v, "cloop"), "x")
    }

    #[test]
    fn valid_header_decodes() {
        let p = parse_buf(&image(4)).unwrap().unwrap();
        assert_eq!(p.info()["format"], "cloop");
        assert_eq!(p.info()["virtual_size"], 4 * 65536);
        assert_eq!(p.info()["header"]["blocks"], 4);
        assert!(p.info().get("dirty_flag").is_none());
    }

    #[test]
    fn the_size_wraps_in_32_bits_like_qemus() {
        let mut v = vec![0u8; 136];
        v[..MAGIC.len()].copy_from_slice(MAGIC);
        v[128..132].copy_from_slice(&(64u32 << 20).to_be_bytes());
        // 2^23 blocks of 2^17 sectors: 2^40 wraps to 0; the offsets are
        // all past the end (zeros, which never go backwards).
        v[132..136].copy_from_slice(&(1u32 << 23).to_be_bytes());
        let p = parse_buf(&v).unwrap().unwrap();
        assert_eq!(p.info()["virtual_size"], 0);
        // (2^15 + 1) * 2^17 sectors wraps to 2^17 sectors: 64 MiB.
        v[132..136].copy_from_slice(&((1u32 << 15) + 1).to_be_bytes());
        let p = parse_buf(&v).unwrap().unwrap();
        assert_eq!(p.info()["virtual_size"], 64u64 << 20);
    }

    #[test]
    fn not_cloop() {
        assert!(parse_buf(b"#!/bin/sh\n").unwrap().is_none());
        let mut v = image(2);
        v[20] = b'1';
        assert!(parse_buf(&v).unwrap().is_none());
    }

    #[test]
    fn hostile_fields_are_errors() {
        let set = |o: usize, v: &[u8]| {
            let mut img = image(4);
            img[o..o + v.len()].copy_from_slice(v);
            img
        };
        for img in [
            set(128, &0u32.to_be_bytes()),
            set(128, &1000u32.to_be_bytes()),
            set(128, &(128u32 << 20).to_be_bytes()),
            set(132, &u32::MAX.to_be_bytes()),
            set(132, &(100u32 << 20).to_be_bytes()),
            set(144, &u64::MAX.to_be_bytes()),
            set(152, &0u64.to_be_bytes()),
            set(168, &(1u64 << 40).to_be_bytes()),
            // a table running past the end after non-zero offsets
            set(132, &1000u32.to_be_bytes()),
        ] {
            assert!(parse_buf(&img).is_err());
        }
        // the script alone: block size 0 (zeros past the end)
        assert!(parse_buf(MAGIC).is_err());
    }

    #[test]
    fn every_prefix_is_handled() {
        let img = image(4);
        for n in 0..=img.len() {
            let r = parse_buf(&img[..n]);
            if n < MAGIC.len() {
                assert!(matches!(r, Ok(None)), "{n}");
            }
        }
    }
}
