//! The metadata of one VHD opened for changing (`resize`, `coalesce`):
//! the end footer, and for dynamic and differencing disks the dynamic
//! header, the BAT and blktap's batmap, every offset checked against the
//! file (notes/vhd.md sections 2.2-2.9). Unlike [`crate::read`], which
//! also accepts the footer copy at 0, a file to be changed must have a
//! good end footer: the change rewrites it.

use crate::raw::{SECTOR, UNALLOCATED, be32, be64, checksum, padded};
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

/// Bytes of a footer.
pub const FOOTER: u64 = 512;
/// Bytes of a dynamic header.
pub const HEADER: usize = 1024;
/// The largest batmap map we read (1 MiB: 8 Mi blocks).
const MAX_BATMAP: u64 = 1 << 20;
/// The largest block size changed (blktap allows 2 MiB; Hyper-V up to
/// 256 MiB): a block is held in memory when it moves.
pub const MAX_BLOCK: u64 = 256 << 20;
/// Bytes a fixed disk may hold between its data and its footer.
const MAX_SLACK: u64 = 64 * 1024;

/// The disk type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Type 2.
    Fixed,
    /// Type 3.
    Dynamic,
    /// Type 4.
    Differencing,
}

impl Kind {
    /// The name in records.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Fixed => "fixed",
            Kind::Dynamic => "dynamic",
            Kind::Differencing => "differencing",
        }
    }
}

/// blktap's batmap: a header right after the BAT and a bit per block set
/// when the block's bitmap is full.
#[derive(Debug, Clone)]
pub struct Batmap {
    /// Where the header is.
    pub hdr_off: u64,
    /// The header (512 bytes).
    pub hdr: Vec<u8>,
    /// Where the map is.
    pub map_off: u64,
    /// The map.
    pub map: Vec<u8>,
}

impl Batmap {
    /// The checksum of `map` for a disk of `size` bytes: blktap sums
    /// `size >> 24` bytes in whole sectors (at least one); version 1.1
    /// summed signed chars.
    pub fn checksum(&self, size: u64) -> u32 {
        let n = padded((size >> 24).max(1)) as usize;
        let signed = be32(&self.hdr, 20) == 0x0001_0001;
        let sum = (0..n).fold(0u32, |a, i| {
            let b = self.map.get(i).copied().unwrap_or(0);
            let v = if signed {
                (b as i8) as i32 as u32
            } else {
                u32::from(b)
            };
            a.wrapping_add(v)
        });
        !sum
    }
}

/// What is wrong with a file, for [`Layout::read`]'s callers to wrap.
#[derive(Debug)]
pub enum LayoutError {
    /// Reading failed.
    Io(io::Error),
    /// No valid end footer.
    NotAVhd(String),
    /// Poisoned by an interrupted resize.
    Poisoned,
    /// Metadata that does not add up.
    Broken(String),
}

impl From<io::Error> for LayoutError {
    fn from(e: io::Error) -> Self {
        LayoutError::Io(e)
    }
}

/// The metadata of a VHD (module docs).
#[derive(Debug, Clone)]
pub struct Layout {
    /// The file's length.
    pub len: u64,
    /// The end footer.
    pub footer: Vec<u8>,
    /// Where it is (`len - 512`).
    pub footer_off: u64,
    /// The disk type.
    pub kind: Kind,
    /// `current_size`.
    pub size: u64,
    /// Dynamic header offset and bytes (empty for fixed).
    pub hdr_off: u64,
    /// The dynamic header.
    pub hdr: Vec<u8>,
    /// BAT offset.
    pub table_off: u64,
    /// Block size in bytes (0 for fixed).
    pub block: u64,
    /// Bytes of a block's sector bitmap.
    pub bitmap_bytes: u64,
    /// The BAT (`max_table_entries` entries).
    pub bat: Vec<u32>,
    /// blktap's batmap, when there is one.
    pub batmap: Option<Batmap>,
}

impl Layout {
    /// Read the metadata of `file`.
    pub fn read(file: &File) -> Result<Layout, LayoutError> {
        let len = file.metadata()?.len();
        let read = |off: u64, n: usize| -> Result<Vec<u8>, LayoutError> {
            let mut b = vec![0u8; n];
            file.read_exact_at(&mut b, off)?;
            Ok(b)
        };
        if len < FOOTER || !len.is_multiple_of(SECTOR) {
            return Err(LayoutError::NotAVhd(format!(
                "{len} bytes is not a whole number of sectors holding a footer"
            )));
        }
        let footer_off = len - FOOTER;
        let footer = read(footer_off, FOOTER as usize)?;
        if footer.starts_with(b"v_poison") || read(0, 8)?.starts_with(b"v_poison") {
            return Err(LayoutError::Poisoned);
        }
        if !footer.starts_with(b"conectix") || checksum(&footer, 64) != be32(&footer, 64) {
            return Err(LayoutError::NotAVhd(
                "no valid footer at the end (cookie conectix, matching checksum)".into(),
            ));
        }
        let size = be64(&footer, 48);
        let kind = match be32(&footer, 60) {
            2 => Kind::Fixed,
            3 => Kind::Dynamic,
            4 => Kind::Differencing,
            t => return Err(LayoutError::Broken(format!("unknown disk type {t}"))),
        };
        if !size.is_multiple_of(SECTOR) {
            return Err(LayoutError::Broken(format!(
                "current size {size} is not a multiple of 512"
            )));
        }
        let mut l = Layout {
            len,
            footer,
            footer_off,
            kind,
            size,
            hdr_off: 0,
            hdr: Vec::new(),
            table_off: 0,
            block: 0,
            bitmap_bytes: 0,
            bat: Vec::new(),
            batmap: None,
        };
        if kind == Kind::Fixed {
            if size > footer_off {
                return Err(LayoutError::Broken(format!(
                    "fixed disk of {size} bytes, but only {footer_off} bytes before its footer"
                )));
            }
            // The data ends where the footer starts; a hostile footer
            // claiming a tiny disk in a huge file is not ours to "fix".
            if footer_off - size > MAX_SLACK {
                return Err(LayoutError::Broken(format!(
                    "fixed disk of {size} bytes, but its footer is at {footer_off}"
                )));
            }
            return Ok(l);
        }
        let hdr_off = be64(&l.footer, 16);
        if hdr_off < FOOTER
            || hdr_off
                .checked_add(HEADER as u64)
                .is_none_or(|e| e > footer_off)
        {
            return Err(LayoutError::Broken(format!(
                "dynamic header offset {hdr_off} is outside the file"
            )));
        }
        let hdr = read(hdr_off, HEADER)?;
        if !hdr.starts_with(b"cxsparse") || checksum(&hdr, 36) != be32(&hdr, 36) {
            return Err(LayoutError::Broken(format!(
                "no valid dynamic header at {hdr_off}"
            )));
        }
        let table_off = be64(&hdr, 16);
        let entries = u64::from(be32(&hdr, 28));
        let block = u64::from(be32(&hdr, 32));
        if !block.is_power_of_two() || !(SECTOR..=MAX_BLOCK).contains(&block) {
            return Err(LayoutError::Broken(format!(
                "block size {block} is not a power of two from 512 to {MAX_BLOCK}"
            )));
        }
        if entries < size.div_ceil(block) {
            return Err(LayoutError::Broken(format!(
                "{entries} BAT entries cannot cover {size} bytes in blocks of {block}"
            )));
        }
        let bitmap_bytes = padded((block / SECTOR).div_ceil(8));
        let block_bytes = bitmap_bytes + block;
        if entries * 4 > crate::read::MAX_BAT_BYTES
            || table_off < FOOTER
            || table_off
                .checked_add(padded(entries * 4))
                .is_none_or(|e| e > footer_off)
        {
            return Err(LayoutError::Broken(format!(
                "BAT of {entries} entries at {table_off} is outside the file"
            )));
        }
        let bat: Vec<u32> = read(table_off, (entries * 4) as usize)?
            .chunks_exact(4)
            .map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        for (i, &e) in bat.iter().enumerate() {
            if e != UNALLOCATED
                && (u64::from(e) * SECTOR)
                    .checked_add(block_bytes)
                    .is_none_or(|end| end > footer_off)
            {
                return Err(LayoutError::Broken(format!(
                    "BAT entry {i} puts its block past the end footer"
                )));
            }
        }
        // blktap 1.1+ keeps its batmap right after the BAT.
        let bm_hdr_off = table_off + padded(entries * 4);
        let creator = l.footer.get(28..31).unwrap_or_default();
        if creator == b"tap"
            && be32(&l.footer, 32) >= 0x0001_0001
            && bm_hdr_off + SECTOR <= footer_off
        {
            let bh = read(bm_hdr_off, SECTOR as usize)?;
            if bh.starts_with(b"tdbatmap") {
                let map_off = be64(&bh, 8);
                let map_len = u64::from(be32(&bh, 16)) * SECTOR;
                if map_len > MAX_BATMAP
                    || map_off.checked_add(map_len).is_none_or(|e| e > footer_off)
                {
                    return Err(LayoutError::Broken(format!(
                        "batmap at {map_off} is outside the file"
                    )));
                }
                let map = read(map_off, map_len as usize)?;
                l.batmap = Some(Batmap {
                    hdr_off: bm_hdr_off,
                    hdr: bh,
                    map_off,
                    map,
                });
            }
        }
        l.hdr_off = hdr_off;
        l.hdr = hdr;
        l.table_off = table_off;
        l.block = block;
        l.bitmap_bytes = bitmap_bytes;
        l.bat = bat;
        Ok(l)
    }

    /// Bytes of a block with its bitmap.
    pub fn block_bytes(&self) -> u64 {
        self.bitmap_bytes + self.block
    }

    /// The creator application (4 bytes).
    pub fn creator(&self) -> &[u8] {
        self.footer.get(28..32).unwrap_or_default()
    }

    /// The extents of the metadata at the front of a dynamic disk that a
    /// change rewrites: the footer copy, the header, the BAT and the
    /// batmap (offset, length).
    pub fn metadata_extents(&self) -> Vec<(u64, u64)> {
        let mut v = vec![(0, FOOTER), (self.footer_off, FOOTER)];
        if self.kind != Kind::Fixed {
            v.push((self.hdr_off, HEADER as u64));
            v.push((self.table_off, padded(self.bat.len() as u64 * 4)));
            if let Some(b) = &self.batmap {
                v.push((b.hdr_off, SECTOR));
                v.push((b.map_off, b.map.len() as u64));
            }
        }
        v
    }
}
