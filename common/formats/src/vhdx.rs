//! VHDX (Hyper-V): the file identifier, the two headers, the region tables,
//! the metadata region and the BAT, read the way qemu 10.0's
//! `block/vhdx.c` opens an image.
//!
//! qemu probes VHDX on `vhdxfile` at offset 0. Opening:
//! - reads both 4 KiB headers (64 KiB and 128 KiB); a header is valid if
//!   its CRC32C, signature `head` and version 1 check out. The current one
//!   is the valid one, or the one with the higher sequence number; equal
//!   sequence numbers are accepted only for byte-identical headers
//!   (Disk2VHD writes those). No valid header is an error;
//! - checks the log: its offset must be a non-zero multiple of 1 MiB and
//!   its version 0. If the log GUID and length are non-zero and the log
//!   holds a valid entry, a read-only open (`qemu-img info`) fails ("contains
//!   a log that needs to be replayed"). We scan the log for any entry with
//!   the `loge` signature, the header's log GUID, a whole number of 4 KiB
//!   sectors and a valid CRC32C, and refuse the image if one is found
//!   (qemu also follows the sequence; a log above 64 MiB is refused here);
//! - reads **only the first region table** (192 KiB): CRC32C, signature
//!   `regi`, at most 2047 entries, no entry overlapping another region or
//!   the log, exactly one BAT and one metadata region, no unknown region
//!   marked required. The second copy (256 KiB) is checked and reported
//!   but, as in qemu, never used. We also refuse regions overlapping the
//!   1 MiB header section, which qemu does not check;
//! - reads the metadata table (signature `metadata`, entries fitting in
//!   64 KiB): the five required items exactly once each (file parameters,
//!   virtual disk size, page 83 data, logical and physical sector size); a
//!   parent locator or the has-parent bit (differencing VHDX) is refused,
//!   as are unknown required items, block sizes outside 1..256 MiB or not
//!   a power of two, and logical sector sizes other than 512 (qemu 10
//!   refuses 4096 with "Operation not supported");
//! - sizes the disk as qemu does: the virtual disk size rounded down to
//!   whole 512-byte sectors, refused above 2^63 - 2^30 bytes; counts BAT entries
//!   with qemu's 32-bit arithmetic; refuses a BAT region too small for them
//!   or larger than one qemu read, and fully-present payload blocks that
//!   lie outside the file or overlap a region. Only the first 6 MiB of BAT
//!   entries are checked (the read budget), see `bat_fully_checked`.
//!
//! Reads past the end of the file give zeros, as in qemu.
//!
//! `info` keys: `format` (`vhdx`), `virtual_size`, `cluster_size` (the
//! block size), `encrypted` (false), `dirty_flag` (false: qemu has no
//! dirty flag for VHDX; see `header.log_guid_nonzero`).
//!
//! `header` keys:
//! - `creator`: the UTF-16LE creator string of the file identifier;
//! - `headers_valid`: `[bool, bool]` for the headers at 64 and 128 KiB;
//!   `active_header`: 1 or 2; `sequence_number` of the active header;
//! - `log_guid_nonzero` (the image was not closed cleanly, but its log
//!   holds nothing to replay), `log_offset`, `log_length`, `log_version`;
//! - `data_write_guid`, `file_write_guid` (Microsoft GUID text form);
//! - `region_table_ok`: `[bool, bool]` for the tables at 192 and 256 KiB
//!   (CRC32C and signature); `region_tables_match`: whether their bytes
//!   are equal;
//! - `bat_offset`, `bat_length`, `metadata_offset`, `metadata_length`;
//! - `block_size`, `logical_sector_size`, `physical_sector_size`,
//!   `leave_blocks_allocated` (fixed VHDX), `has_parent`,
//!   `virtual_disk_size` (as stored), `bat_entries`, `present_blocks`
//!   (fully present payload blocks among those checked),
//!   `bat_fully_checked` (false when the BAT is larger than 6 MiB).

use super::bytes::{le16, le32, le64};
use super::{FormatError, MAX_READ, Parsed, Reader};
// CRC32C as VHDX uses it, with SSE4.2's instruction where the CPU has it: a
// probe checksums about 140 KiB of headers, region tables and log, which
// in software tables was most of its time.
use crc32c::{crc32c, crc32c_append};
use serde::Serialize;

const HEADER1: u64 = 64 << 10;
const HEADER2: u64 = 128 << 10;
const HEADER_SIZE: usize = 4096;
const REGION1: u64 = 192 << 10;
const REGION2: u64 = 256 << 10;
const BLOCK64K: usize = 64 << 10;
/// How much of the metadata region a probe is expected to read: the table
/// and the items after it.
const HINT_METADATA: u64 = 68 << 10;
/// How much of the BAT: its first entries (32 KiB covers 4,096 blocks,
/// 128 GiB at qemu's default 32 MiB blocks).
const HINT_BAT: u64 = 32 << 10;
/// The end of the structures at fixed offsets (the second region table).
pub const FIXED_HEAD: u64 = REGION2 + BLOCK64K as u64;
const MIB: u64 = 1 << 20;
const MAX_LOG_SCAN: u64 = 64 << 20;
/// The most BAT bytes we check (the read budget is 8 MiB in all).
const MAX_BAT_CHECK: u64 = 6 << 20;
/// qemu's BDRV_REQUEST_MAX_BYTES.
const REQUEST_MAX: u64 = 0x7fff_fe00;
/// qemu's BDRV_MAX_LENGTH.
const MAX_LENGTH: u64 = (1u64 << 63) - (1 << 30);

/// A GUID from its text form in the VHDX specification
/// (`2DC27766-F623-4200-9D64-115E9BFD4A08`), in the byte order files store
/// it: the first three fields little-endian. Evaluated at compile time,
/// where a malformed text fails the build.
const fn guid(text: &str) -> [u8; 16] {
    const fn nibble(c: u8) -> u8 {
        match c {
            b'0'..=b'9' => c - b'0',
            b'a'..=b'f' => c - b'a' + 10,
            b'A'..=b'F' => c - b'A' + 10,
            // Out of range: a compile error in the const that uses it.
            _ => [0u8; 0][c as usize],
        }
    }
    let t = text.as_bytes();
    let mut hex = [0u8; 16];
    let (mut i, mut n) = (0, 0);
    while i < t.len() {
        if t[i] != b'-' {
            hex[n / 2] |= nibble(t[i]) << (4 * (1 - n % 2));
            n += 1;
        }
        i += 1;
    }
    // Fields 1-3 are little-endian in the file.
    [
        hex[3], hex[2], hex[1], hex[0], hex[5], hex[4], hex[7], hex[6], hex[8], hex[9], hex[10],
        hex[11], hex[12], hex[13], hex[14], hex[15],
    ]
}

const BAT_GUID: [u8; 16] = guid("2DC27766-F623-4200-9D64-115E9BFD4A08");
const METADATA_GUID: [u8; 16] = guid("8B7CA206-4790-4B9A-B8FE-575F050F886E");
const FILE_PARAM_GUID: [u8; 16] = guid("CAA16737-FA36-4D43-B3B6-33F0AA44E76B");
const VIRTUAL_SIZE_GUID: [u8; 16] = guid("2FA54224-CD1B-4876-B211-5DBED83BF4B8");
const PAGE83_GUID: [u8; 16] = guid("BECA12AB-B2E6-4523-93EF-C309E000C746");
const PHYS_SECTOR_GUID: [u8; 16] = guid("CDA348C7-445D-4471-9CC9-E9885251C556");
const LOGICAL_SECTOR_GUID: [u8; 16] = guid("8141BF1D-A96F-4709-BA47-F233A8FAAB5F");
const PARENT_LOCATOR_GUID: [u8; 16] = guid("A8D35F2D-B30B-454D-ABF7-D3D84834AB0C");

const META_FILE_PARAMETER: u32 = 0x01;
const META_VIRTUAL_DISK_SIZE: u32 = 0x02;
const META_PAGE_83: u32 = 0x04;
const META_LOGICAL_SECTOR_SIZE: u32 = 0x08;
const META_PHYS_SECTOR_SIZE: u32 = 0x10;
const META_PARENT_LOCATOR: u32 = 0x20;
const META_ALL: u32 = 0x1f;

/// Whether the CRC32C stored at offset 4 matches `buf` (that field zeroed).
fn checksum_ok(buf: &[u8]) -> bool {
    let (Some(head), Some(tail)) = (buf.get(..4), buf.get(8..)) else {
        return false;
    };
    let c = crc32c_append(crc32c(head), &[0; 4]);
    crc32c_append(c, tail) == le32(buf, 4)
}

fn read_padded(r: &Reader, offset: u64, len: usize) -> Result<Vec<u8>, FormatError> {
    let mut v = r.read_upto(offset, len)?;
    v.resize(len, 0);
    Ok(v)
}

fn is_zero(b: &[u8]) -> bool {
    b.iter().all(|x| *x == 0)
}

/// Registered file ranges, checked for overlap with C's wrapping `end`.
struct Regions(Vec<(u64, u64)>);

impl Regions {
    fn overlaps(&self, start: u64, len: u64) -> bool {
        let end = start.wrapping_add(len);
        self.0.iter().any(|&(s, e)| !(start >= e || end <= s))
    }
    fn add(&mut self, start: u64, len: u64) {
        self.0.push((start, start.wrapping_add(len)));
    }
}

/// What a VHDX image reports beyond the common fields.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Details {
    /// Header, region and metadata facts (module docs).
    pub header: Header,
}

/// VHDX facts qemu does not print.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Header {
    /// The file identifier's creator (UTF-16LE).
    pub creator: String,
    /// Whether each of the two headers is valid.
    pub headers_valid: [bool; 2],
    /// The header in use (1 or 2).
    pub active_header: u8,
    /// Its sequence number.
    pub sequence_number: u64,
    /// File write GUID.
    pub file_write_guid: String,
    /// Data write GUID.
    pub data_write_guid: String,
    /// Whether the log GUID is set.
    pub log_guid_nonzero: bool,
    /// Log offset.
    pub log_offset: u64,
    /// Log length.
    pub log_length: u32,
    /// Log version.
    pub log_version: u16,
    /// Whether each region table is valid.
    pub region_table_ok: [bool; 2],
    /// Whether the two region tables are identical.
    pub region_tables_match: bool,
    /// BAT region offset.
    pub bat_offset: u64,
    /// BAT region length.
    pub bat_length: u32,
    /// Metadata region offset.
    pub metadata_offset: u64,
    /// Metadata region length.
    pub metadata_length: u32,
    /// File parameter bit 0.
    pub leave_blocks_allocated: bool,
    /// File parameter bit 1.
    pub has_parent: bool,
    /// Block size.
    pub block_size: u32,
    /// Logical sector size.
    pub logical_sector_size: u32,
    /// Physical sector size.
    pub physical_sector_size: u32,
    /// Virtual disk size field.
    pub virtual_disk_size: u64,
    /// BAT entries.
    pub bat_entries: u32,
    /// Whether every BAT entry was checked.
    pub bat_fully_checked: bool,
    /// Blocks present in the entries checked.
    pub present_blocks: u64,
}

/// Parse the VHDX headers, if the bytes are VHDX.
pub fn parse(r: &Reader, _name: &str) -> Result<Option<Parsed>, FormatError> {
    let id = r.read_upto(0, 8)?;
    if id != b"vhdxfile" {
        return Ok(None);
    }
    // qemu sees the file in whole sectors.
    let len = r.len().div_ceil(512) * 512;
    let creator = read_padded(r, 8, 512)?;
    let units: Vec<u16> = creator
        .chunks_exact(2)
        .map(|c| u16::from_le_bytes([c[0], c[1]]))
        .take_while(|u| *u != 0)
        .collect();
    let creator = String::from_utf16_lossy(&units);

    // Headers.
    let h1 = read_padded(r, HEADER1, HEADER_SIZE)?;
    let h2 = read_padded(r, HEADER2, HEADER_SIZE)?;
    let valid = |h: &[u8]| checksum_ok(h) && h.starts_with(b"head") && le16(h, 66) == 1;
    let (v1, v2) = (valid(&h1), valid(&h2));
    let cur = match (v1, v2) {
        (true, false) => 1u8,
        (false, true) => 2,
        (false, false) => return Err(r.invalid("no valid VHDX header found")),
        (true, true) => {
            let (s1, s2) = (le64(&h1, 8), le64(&h2, 8));
            if s1 > s2 {
                1
            } else if s2 > s1 {
                2
            } else if h1 == h2 {
                1
            } else {
                return Err(r.invalid("both VHDX headers have the same sequence number"));
            }
        }
    };
    let h = if cur == 1 { &h1 } else { &h2 };
    let log_guid = h.get(48..64).unwrap_or(&[]).to_vec();
    let log_version = le16(h, 64);
    let log_length = le32(h, 68);
    let log_offset = le64(h, 72);
    let mut regions = Regions(Vec::new());
    // Not in qemu: nothing may overlap the 1 MiB header section.
    regions.add(0, MIB);
    regions.add(log_offset, u64::from(log_length));

    // Log.
    if log_offset < MIB || !log_offset.is_multiple_of(MIB) {
        return Err(r.invalid(format!("invalid log offset {log_offset}")));
    }
    if log_version != 0 {
        return Err(r.invalid(format!("unsupported log version {log_version}")));
    }
    if !is_zero(&log_guid) && log_length != 0 {
        check_log(r, log_offset, log_length, &log_guid)?;
    }

    // Region tables: only the first is used, as in qemu. The second is
    // only checksummed and compared, a piece at a time: a probe holds
    // one 64 KiB table, not two.
    let rt1 = read_padded(r, REGION1, BLOCK64K)?;
    let rt1_crc = checksum_ok(&rt1);
    let (rt2_crc, rt2_regi, region_tables_match) = second_region_table(r, &rt1)?;
    let region_table_ok = [rt1_crc && rt1.starts_with(b"regi"), rt2_crc && rt2_regi];
    if !rt1_crc {
        return Err(r.invalid("region table checksum mismatch"));
    }
    if !rt1.starts_with(b"regi") {
        return Err(r.invalid("region table signature mismatch"));
    }
    let count = le32(&rt1, 8);
    if count > 2047 {
        return Err(r.invalid(format!("region table has {count} entries (max 2047)")));
    }
    let mut bat_rt: Option<(u64, u32)> = None;
    let mut meta_rt: Option<(u64, u32)> = None;
    for i in 0..count as usize {
        let e = rt1.get(16 + 32 * i..48 + 32 * i).unwrap_or(&[]);
        let off = le64(e, 16);
        let rlen = le32(e, 24);
        if regions.overlaps(off, u64::from(rlen)) {
            return Err(r.invalid(format!("region {off}+{rlen} overlaps another region")));
        }
        regions.add(off, u64::from(rlen));
        let g = e.get(..16).unwrap_or(&[]);
        if g == BAT_GUID {
            if bat_rt.replace((off, rlen)).is_some() {
                return Err(r.invalid("duplicate BAT region"));
            }
        } else if g == METADATA_GUID {
            if meta_rt.replace((off, rlen)).is_some() {
                return Err(r.invalid("duplicate metadata region"));
            }
        } else if le32(e, 28) & 1 != 0 {
            return Err(r.invalid("unknown required region"));
        }
    }
    let (Some((bat_off, bat_len)), Some((meta_off, meta_len))) = (bat_rt, meta_rt) else {
        return Err(r.invalid("missing BAT or metadata region"));
    };
    // Read next: the metadata table and its items (qemu puts them 64 KiB
    // in), then the BAT's first entries; a remote source fetches both in
    // one request where they lie close.
    r.will_read(&[
        meta_off..meta_off.saturating_add(u64::from(meta_len).min(HINT_METADATA)),
        bat_off..bat_off.saturating_add(u64::from(bat_len).min(HINT_BAT)),
    ]);

    // Metadata: the table's header, then only the entries it counts (the
    // table is 64 KiB, its entries usually a few hundred bytes).
    let md_head = read_padded(r, meta_off, 32)?;
    if !md_head.starts_with(b"metadata") {
        return Err(r.invalid("metadata table signature mismatch"));
    }
    let md_count = usize::from(le16(&md_head, 10));
    if md_count * 32 > BLOCK64K - 32 {
        return Err(r.invalid(format!("metadata table has {md_count} entries")));
    }
    let md = read_padded(r, meta_off.saturating_add(32), md_count * 32)?;
    let mut present = 0u32;
    let mut item_off = [0u32; 6];
    for i in 0..md_count {
        let e = md.get(32 * i..32 + 32 * i).unwrap_or(&[]);
        let g = e.get(..16).unwrap_or(&[]);
        let bit = match g {
            x if x == FILE_PARAM_GUID => META_FILE_PARAMETER,
            x if x == VIRTUAL_SIZE_GUID => META_VIRTUAL_DISK_SIZE,
            x if x == PAGE83_GUID => META_PAGE_83,
            x if x == LOGICAL_SECTOR_GUID => META_LOGICAL_SECTOR_SIZE,
            x if x == PHYS_SECTOR_GUID => META_PHYS_SECTOR_SIZE,
            x if x == PARENT_LOCATOR_GUID => META_PARENT_LOCATOR,
            _ => {
                if le32(e, 24) & 4 != 0 {
                    return Err(r.invalid("unknown required metadata item"));
                }
                continue;
            }
        };
        if present & bit != 0 {
            return Err(r.invalid("duplicate metadata item"));
        }
        present |= bit;
        item_off[bit.trailing_zeros() as usize] = le32(e, 16);
    }
    if present & META_PARENT_LOCATOR != 0 {
        return Err(r.invalid("differencing VHDX (parent locator) is not supported by qemu"));
    }
    if present != META_ALL {
        return Err(r.invalid("required metadata items missing"));
    }
    let item = |bit: u32, n: usize| -> Result<Vec<u8>, FormatError> {
        let at = meta_off.wrapping_add(u64::from(item_off[bit.trailing_zeros() as usize]));
        read_padded(r, at, n)
    };
    let params = item(META_FILE_PARAMETER, 8)?;
    let block_size = le32(&params, 0);
    let data_bits = le32(&params, 4);
    if data_bits & 2 != 0 {
        return Err(r.invalid("has-parent set without a parent locator"));
    }
    let vds = le64(&item(META_VIRTUAL_DISK_SIZE, 8)?, 0);
    let lss = le32(&item(META_LOGICAL_SECTOR_SIZE, 4)?, 0);
    let pss = le32(&item(META_PHYS_SECTOR_SIZE, 4)?, 0);
    if !(MIB..=256 * MIB).contains(&u64::from(block_size)) || !block_size.is_power_of_two() {
        return Err(r.invalid(format!("invalid block size {block_size}")));
    }
    if lss != 512 && lss != 4096 {
        return Err(r.invalid(format!("invalid logical sector size {lss}")));
    }
    // qemu 10 opens only 512-byte logical sectors ("Operation not
    // supported" for 4096, verified).
    if lss != 512 {
        return Err(r.invalid(format!(
            "logical sector size {lss} is not supported by qemu"
        )));
    }
    let chunk_ratio = (1u64 << 23) * u64::from(lss) / u64::from(block_size);
    let total_sectors = vds >> lss.trailing_zeros();
    if total_sectors > MAX_LENGTH / 512 {
        return Err(r.invalid(format!("virtual size {vds} is too large")));
    }
    let total_bytes = total_sectors * 512;

    // BAT entries, with qemu's 32-bit arithmetic.
    let data_blocks = (vds.wrapping_add(u64::from(block_size) - 1) / u64::from(block_size)) as u32;
    let bat_entries =
        data_blocks.wrapping_add(data_blocks.wrapping_sub(1) >> chunk_ratio.trailing_zeros());
    if u64::from(bat_entries) > u64::from(bat_len) / 8 {
        return Err(r.invalid(format!(
            "BAT region of {bat_len} bytes too small for {bat_entries} entries"
        )));
    }
    if u64::from(bat_len) > REQUEST_MAX {
        return Err(r.invalid(format!("BAT region of {bat_len} bytes is too large")));
    }
    // qemu checks every entry; within the read budget we check the first
    // 6 MiB of them (786432 entries: all of them below ~48 TiB at the
    // default block sizes) and say so in `bat_fully_checked`.
    let bat_bytes = (u64::from(bat_entries) * 8).min(MAX_BAT_CHECK);
    let mut payblocks = chunk_ratio;
    let mut present_blocks = 0u64;
    let mut done = 0u64;
    let mut i = 0u64;
    while done < bat_bytes {
        let n = usize::try_from((bat_bytes - done).min(MAX_READ as u64)).unwrap_or(0);
        let chunk = read_padded(r, bat_off.wrapping_add(done), n)?;
        for e in chunk.chunks_exact(8) {
            let v = le64(e, 0);
            if v & 7 == 6 {
                present_blocks += 1;
                let off = v & 0xffff_ffff_fff0_0000;
                let rest = total_bytes.wrapping_sub(i.wrapping_mul(u64::from(block_size)));
                let blen = rest.min(u64::from(block_size)) & 0xffff_ffff;
                if off > i64::MAX as u64 - u64::from(block_size) {
                    return Err(r.invalid(format!("BAT entry {i} offset overflows")));
                }
                if off >= len || off + blen > len {
                    return Err(
                        r.truncated(format!("BAT entry {i} points past the end of the file"))
                    );
                }
                if payblocks != 0 {
                    payblocks -= 1;
                    if regions.overlaps(off, u64::from(block_size)) {
                        return Err(r.invalid(format!("BAT entry {i} overlaps a region")));
                    }
                } else {
                    payblocks = chunk_ratio;
                }
            }
            i += 1;
        }
        done += n as u64;
    }
    let header = Header {
        creator,
        headers_valid: [v1, v2],
        active_header: cur,
        sequence_number: le64(h, 8),
        file_write_guid: super::vhd::guid_string(h.get(16..32).unwrap_or(&[])),
        data_write_guid: super::vhd::guid_string(h.get(32..48).unwrap_or(&[])),
        log_guid_nonzero: !is_zero(&log_guid),
        log_offset,
        log_length,
        log_version,
        region_table_ok,
        region_tables_match,
        bat_offset: bat_off,
        bat_length: bat_len,
        metadata_offset: meta_off,
        metadata_length: meta_len,
        leave_blocks_allocated: data_bits & 1 != 0,
        has_parent: data_bits & 2 != 0,
        block_size,
        logical_sector_size: lss,
        physical_sector_size: pss,
        virtual_disk_size: vds,
        bat_entries,
        bat_fully_checked: u64::from(bat_entries) * 8 <= MAX_BAT_CHECK,
        present_blocks,
    };
    Ok(Some(Parsed {
        cluster_size: Some(i64::from(block_size)),
        dirty_flag: Some(false),
        ..Parsed::new(
            super::Format::Vhdx,
            total_bytes,
            super::Details::Vhdx(Box::new(Details { header })),
        )
    }))
}

/// The second region table, read a piece at a time against the first:
/// whether its CRC32C checks out, whether it starts with `regi`, and
/// whether its bytes equal `rt1`'s (64 KiB, zero-padded like it).
fn second_region_table(r: &Reader, rt1: &[u8]) -> Result<(bool, bool, bool), FormatError> {
    const PIECE: usize = 16 << 10;
    let mut crc = 0u32;
    let (mut stored, mut regi, mut same) = (0u32, false, true);
    let mut at = 0usize;
    while at < BLOCK64K {
        let piece = read_padded(r, REGION2 + at as u64, PIECE)?;
        same &= rt1.get(at..at + PIECE) == Some(&piece[..]);
        if at == 0 {
            regi = piece.starts_with(b"regi");
            stored = le32(&piece, 4);
            // The checksum field counts as zero.
            crc = crc32c_append(crc32c(piece.get(..4).unwrap_or(&[])), &[0; 4]);
            crc = crc32c_append(crc, piece.get(8..).unwrap_or(&[]));
        } else {
            crc = crc32c_append(crc, &piece);
        }
        at += PIECE;
    }
    Ok((crc == stored, regi, same))
}

/// Refuse an image whose log holds a valid entry (qemu would need to
/// replay it, which a read-only open cannot).
fn check_log(r: &Reader, offset: u64, length: u32, guid: &[u8]) -> Result<(), FormatError> {
    let length = u64::from(length);
    if length > MAX_LOG_SCAN {
        return Err(r.invalid(format!("log of {length} bytes is too large to check")));
    }
    // Entry headers sit on 4 KiB boundaries. The log is read a chunk at a
    // time (not 64 bytes per boundary: a 1 MiB log is 256 of them).
    let mut at = 0u64;
    let mut chunk: Vec<u8> = Vec::new();
    let mut chunk_at = 0u64;
    while at + 64 <= length {
        if at < chunk_at || at + 64 > chunk_at + chunk.len() as u64 {
            chunk_at = at;
            let n = usize::try_from((length - at).min(MAX_READ as u64)).unwrap_or(0);
            chunk = read_padded(r, offset.wrapping_add(at), n)?;
        }
        let from = (at - chunk_at) as usize;
        let e = chunk.get(from..from + 64).unwrap_or(&[]).to_vec();
        let elen = u64::from(le32(&e, 8));
        if e.starts_with(b"loge")
            && e.get(32..48) == Some(guid)
            && elen != 0
            && elen.is_multiple_of(4096)
            && elen <= length - at
        {
            // CRC32C over the whole entry, its checksum field as zero,
            // read in bounded chunks.
            let start = offset.wrapping_add(at);
            let mut c = crc32c_append(crc32c(e.get(..4).unwrap_or(&[])), &[0; 4]);
            let mut done = 8u64;
            while done < elen {
                let n = usize::try_from((elen - done).min(MAX_READ as u64)).unwrap_or(0);
                c = crc32c_append(c, &read_padded(r, start.wrapping_add(done), n)?);
                done += n as u64;
            }
            if c == le32(&e, 4) {
                return Err(r.invalid("the log holds entries that need to be replayed"));
            }
        }
        at += 4096;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guids_read_as_the_specification_writes_them() {
        assert_eq!(
            BAT_GUID,
            [
                0x66, 0x77, 0xc2, 0x2d, 0x23, 0xf6, 0x00, 0x42, 0x9d, 0x64, 0x11, 0x5e, 0x9b, 0xfd,
                0x4a, 0x08
            ]
        );
        assert_eq!(
            super::super::vhd::guid_string(&PARENT_LOCATOR_GUID),
            "a8d35f2d-b30b-454d-abf7-d3d84834ab0c"
        );
    }

    fn put_crc(b: &mut [u8]) {
        b[4..8].fill(0);
        let c = crc32c(b);
        b[4..8].copy_from_slice(&c.to_le_bytes());
    }

    /// A minimal dynamic VHDX: headers, region tables, log at 1 MiB,
    /// metadata at 2 MiB, BAT at 3 MiB; 4 MiB long.
    fn image(vds: u64, block: u32) -> Vec<u8> {
        let mut b = vec![0u8; 4 << 20];
        b[..8].copy_from_slice(b"vhdxfile");
        for (i, off) in [HEADER1, HEADER2].iter().enumerate() {
            let o = *off as usize;
            let h = &mut b[o..o + 4096];
            h[..4].copy_from_slice(b"head");
            h[8..16].copy_from_slice(&(i as u64 + 1).to_le_bytes());
            h[66..68].copy_from_slice(&1u16.to_le_bytes());
            h[68..72].copy_from_slice(&(1u32 << 20).to_le_bytes());
            h[72..80].copy_from_slice(&(1u64 << 20).to_le_bytes());
            put_crc(h);
        }
        for off in [REGION1, REGION2] {
            let o = off as usize;
            let t = &mut b[o..o + BLOCK64K];
            t[..4].copy_from_slice(b"regi");
            t[8..12].copy_from_slice(&2u32.to_le_bytes());
            t[16..32].copy_from_slice(&BAT_GUID);
            t[32..40].copy_from_slice(&(3u64 << 20).to_le_bytes());
            t[40..44].copy_from_slice(&(1u32 << 20).to_le_bytes());
            t[44..48].copy_from_slice(&1u32.to_le_bytes());
            t[48..64].copy_from_slice(&METADATA_GUID);
            t[64..72].copy_from_slice(&(2u64 << 20).to_le_bytes());
            t[72..76].copy_from_slice(&(1u32 << 20).to_le_bytes());
            t[76..80].copy_from_slice(&1u32.to_le_bytes());
            put_crc(t);
        }
        let m = 2 << 20;
        b[m..m + 8].copy_from_slice(b"metadata");
        b[m + 10..m + 12].copy_from_slice(&5u16.to_le_bytes());
        let items: [([u8; 16], u32, Vec<u8>); 5] = [
            (
                FILE_PARAM_GUID,
                0x10000,
                [block.to_le_bytes(), 0u32.to_le_bytes()].concat(),
            ),
            (VIRTUAL_SIZE_GUID, 0x10008, vds.to_le_bytes().to_vec()),
            (PAGE83_GUID, 0x10010, vec![7; 16]),
            (LOGICAL_SECTOR_GUID, 0x10020, 512u32.to_le_bytes().to_vec()),
            (PHYS_SECTOR_GUID, 0x10024, 4096u32.to_le_bytes().to_vec()),
        ];
        for (i, (g, off, data)) in items.iter().enumerate() {
            let e = m + 32 + 32 * i;
            b[e..e + 16].copy_from_slice(g);
            b[e + 16..e + 20].copy_from_slice(&off.to_le_bytes());
            b[e + 20..e + 24].copy_from_slice(&(data.len() as u32).to_le_bytes());
            b[e + 24..e + 28].copy_from_slice(&4u32.to_le_bytes());
            let d = m + *off as usize;
            b[d..d + data.len()].copy_from_slice(data);
        }
        b
    }

    fn parse_buf(b: &[u8]) -> Result<Option<Parsed>, FormatError> {
        let v = b.to_vec();
        parse(&Reader::new(&v, "vhdx"), "x.vhdx")
    }

    #[test]
    fn crc32c_known_value() {
        assert_eq!(crc32c(b"123456789"), 0xe306_9283);
    }

    #[test]
    fn valid_image() {
        let p = parse_buf(&image(64 << 20, 8 << 20)).unwrap().unwrap();
        assert_eq!(p.info()["virtual_size"], 64u64 << 20);
        assert_eq!(p.info()["cluster_size"], 8 << 20);
        let h = &p.info()["header"];
        assert_eq!(h["active_header"], 2);
        assert_eq!(h["sequence_number"], 2);
        assert_eq!(h["region_table_ok"], serde_json::json!([true, true]));
        assert_eq!(h["logical_sector_size"], 512);
        assert_eq!(h["bat_entries"], 8);
    }

    #[test]
    fn header_choice() {
        // header 2 broken: header 1 is used
        let mut img = image(64 << 20, 8 << 20);
        img[HEADER2 as usize + 100] ^= 1;
        let p = parse_buf(&img).unwrap().unwrap();
        assert_eq!(p.info()["header"]["active_header"], 1);
        // both broken
        img[HEADER1 as usize + 100] ^= 1;
        assert!(parse_buf(&img).is_err());
        // equal sequence numbers, different headers
        let mut img = image(64 << 20, 8 << 20);
        let o = HEADER2 as usize;
        img[o + 8..o + 16].copy_from_slice(&1u64.to_le_bytes());
        put_crc(&mut img[o..o + 4096]);
        let o1 = HEADER1 as usize;
        img[o1 + 16] = 9;
        put_crc(&mut img[o1..o1 + 4096]);
        assert!(parse_buf(&img).is_err());
    }

    #[test]
    fn second_region_table_is_reported_not_used() {
        let mut img = image(64 << 20, 8 << 20);
        img[REGION2 as usize + 100] ^= 1;
        let p = parse_buf(&img).unwrap().unwrap();
        assert_eq!(
            p.info()["header"]["region_table_ok"],
            serde_json::json!([true, false])
        );
        let mut img = image(64 << 20, 8 << 20);
        img[REGION1 as usize + 100] ^= 1;
        assert!(parse_buf(&img).is_err());
    }

    fn with_region(img: &mut [u8], f: impl Fn(&mut [u8])) {
        let o = REGION1 as usize;
        f(&mut img[o..o + BLOCK64K]);
        put_crc(&mut img[o..o + BLOCK64K]);
    }

    #[test]
    fn hostile_region_tables() {
        let mut img = image(64 << 20, 8 << 20);
        with_region(&mut img, |t| {
            t[8..12].copy_from_slice(&2048u32.to_le_bytes())
        });
        assert!(parse_buf(&img).is_err());
        let mut img = image(64 << 20, 8 << 20);
        with_region(&mut img, |t| {
            t[8..12].copy_from_slice(&u32::MAX.to_le_bytes())
        });
        assert!(parse_buf(&img).is_err());
        // overlapping the header section
        let mut img = image(64 << 20, 8 << 20);
        with_region(&mut img, |t| {
            t[32..40].copy_from_slice(&4096u64.to_le_bytes())
        });
        assert!(parse_buf(&img).is_err());
        // overlapping the log
        let mut img = image(64 << 20, 8 << 20);
        with_region(&mut img, |t| {
            t[64..72].copy_from_slice(&(1u64 << 20).to_le_bytes())
        });
        assert!(parse_buf(&img).is_err());
        // offset near 2^64
        let mut img = image(64 << 20, 8 << 20);
        with_region(&mut img, |t| {
            t[64..72].copy_from_slice(&(u64::MAX - 5).to_le_bytes())
        });
        assert!(parse_buf(&img).is_err());
        // BAT region too small
        let mut img = image(64 << 20, 8 << 20);
        with_region(&mut img, |t| t[40..44].copy_from_slice(&8u32.to_le_bytes()));
        assert!(parse_buf(&img).is_err());
    }

    #[test]
    fn hostile_metadata() {
        let m = 2 << 20;
        // huge virtual size
        let mut img = image(u64::MAX, 8 << 20);
        assert!(parse_buf(&img).is_err());
        // bad block size
        img = image(64 << 20, 3 << 20);
        assert!(parse_buf(&img).is_err());
        // too many metadata entries
        let mut img = image(64 << 20, 8 << 20);
        img[m + 10..m + 12].copy_from_slice(&u16::MAX.to_le_bytes());
        assert!(parse_buf(&img).is_err());
        // has_parent
        let mut img = image(64 << 20, 8 << 20);
        img[m + 0x10004] = 2;
        assert!(parse_buf(&img).is_err());
        // present block past the end of the file
        let mut img = image(64 << 20, 8 << 20);
        let b = 3 << 20;
        img[b..b + 8].copy_from_slice(&((1u64 << 40) | 6).to_le_bytes());
        assert!(parse_buf(&img).is_err());
        // present block overlapping the metadata region
        let mut img = image(64 << 20, 8 << 20);
        img[b..b + 8].copy_from_slice(&((2u64 << 20) | 6).to_le_bytes());
        assert!(parse_buf(&img).is_err());
    }

    #[test]
    fn huge_bat_is_checked_within_the_budget() {
        // 800000 MiB at 1 MiB blocks: 800196 entries, 6.4 MB of BAT
        let mut img = image(800_000 << 20, 1 << 20);
        with_region(&mut img, |t| {
            t[40..44].copy_from_slice(&(8u32 << 20).to_le_bytes())
        });
        let p = parse_buf(&img).unwrap().unwrap();
        assert_eq!(p.info()["virtual_size"], 800_000u64 << 20);
        assert_eq!(p.info()["header"]["bat_fully_checked"], false);
    }

    #[test]
    fn log_with_entries_is_refused() {
        let mut img = image(64 << 20, 8 << 20);
        let o = HEADER2 as usize;
        img[o + 48..o + 64].copy_from_slice(&[5; 16]);
        put_crc(&mut img[o..o + 4096]);
        // a non-zero log GUID with an empty log is fine
        let p = parse_buf(&img).unwrap().unwrap();
        assert_eq!(p.info()["header"]["log_guid_nonzero"], true);
        let l = 1 << 20;
        img[l..l + 4].copy_from_slice(b"loge");
        img[l + 8..l + 12].copy_from_slice(&4096u32.to_le_bytes());
        img[l + 32..l + 48].copy_from_slice(&[5; 16]);
        put_crc(&mut img[l..l + 4096]);
        assert!(parse_buf(&img).is_err());
    }

    #[test]
    fn every_prefix_is_handled() {
        let img = image(64 << 20, 8 << 20);
        let mut n = 0;
        while n < img.len() {
            let _ = parse_buf(&img[..n]);
            n += if n < 4096 { 1 } else { 4093 };
        }
        assert!(parse_buf(&img[..7]).unwrap().is_none());
        assert!(parse_buf(&img[..1000]).is_err());
    }
}
