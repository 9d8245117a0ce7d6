//! The metadata of one VHD opened for changing (`resize`, `coalesce`):
//! the end footer, and for dynamic and differencing disks the dynamic
//! header, the BAT and blktap's batmap, every offset checked against the
//! file (notes/vhd.md sections 2.2-2.9). Unlike [`crate::read`], which
//! also accepts the footer copy at 0, a file to be changed must have a
//! good end footer: the change rewrites it.

use formats::vhd::{
    self, BatmapHeader, DynamicHeader, FOOTER_LEN, Footer, HEADER_LEN, SECTOR, UNALLOCATED, padded,
};
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

/// The disk type.
pub use formats::vhd::DiskType as Kind;

/// Bytes of a footer.
pub const FOOTER: u64 = FOOTER_LEN as u64;
/// The largest batmap map we read (1 MiB: 8 Mi blocks).
const MAX_BATMAP: u64 = 1 << 20;
/// The largest block size changed (blktap allows 2 MiB; Hyper-V up to
/// 256 MiB): a block is held in memory when it moves.
pub const MAX_BLOCK: u64 = 256 << 20;
/// Bytes a fixed disk may hold between its data and its footer.
const MAX_SLACK: u64 = 64 * 1024;

/// blktap's batmap: a header right after the BAT and a bit per block set
/// when the block's bitmap is full.
#[derive(Debug, Clone)]
pub struct Batmap {
    /// Where the header is.
    pub hdr_off: u64,
    /// The header.
    pub hdr: BatmapHeader,
    /// Where the map is.
    pub map_off: u64,
    /// The map.
    pub map: Vec<u8>,
}

impl Batmap {
    /// The checksum of `map` for a disk of `size` bytes.
    pub fn checksum(&self, size: u64) -> u32 {
        vhd::batmap_checksum(&self.map, size, self.hdr.version)
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
    pub footer: Footer,
    /// Where it is (`len - 512`).
    pub footer_off: u64,
    /// The disk type.
    pub kind: Kind,
    /// `current_size`.
    pub size: u64,
    /// Dynamic header offset (0 for fixed).
    pub hdr_off: u64,
    /// The dynamic header (blank for fixed).
    pub hdr: DynamicHeader,
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
        let footer = Footer::decode(&read(footer_off, FOOTER_LEN)?);
        if footer.is_poisoned() || Footer::decode(&read(0, 8)?).is_poisoned() {
            return Err(LayoutError::Poisoned);
        }
        // blktap's rule, hidden quirk included, as check and read.
        if !footer.has_cookie() || !footer.checksum_accepted() {
            return Err(LayoutError::NotAVhd(format!(
                "no valid footer at the end (cookie {}, matching checksum)",
                vhd::FOOTER_COOKIE_NAME
            )));
        }
        let size = footer.current_size;
        let Some(kind) = footer.disk_type() else {
            return Err(LayoutError::Broken(format!(
                "unknown disk type {}",
                footer.disk_type_code
            )));
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
            hdr: DynamicHeader::blank(),
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
        let hdr_off = l.footer.data_offset;
        if hdr_off < FOOTER
            || hdr_off
                .checked_add(HEADER_LEN as u64)
                .is_none_or(|e| e > footer_off)
        {
            return Err(LayoutError::Broken(format!(
                "dynamic header offset {hdr_off} is outside the file"
            )));
        }
        let hdr = DynamicHeader::parse(&read(hdr_off, HEADER_LEN)?)
            .map_err(|_| LayoutError::Broken(format!("no valid dynamic header at {hdr_off}")))?;
        let table_off = hdr.table_offset;
        let entries = u64::from(hdr.max_table_entries);
        let block = u64::from(hdr.block_size);
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
        let bitmap_bytes = vhd::bitmap_bytes(block);
        let block_bytes = bitmap_bytes + block;
        if entries * 4 > formats::vhd::MAX_BAT_BYTES
            || table_off < FOOTER
            || table_off
                .checked_add(padded(entries * 4))
                .is_none_or(|e| e > footer_off)
        {
            return Err(LayoutError::Broken(format!(
                "BAT of {entries} entries at {table_off} is outside the file"
            )));
        }
        let bat = vhd::decode_bat(&read(table_off, (entries * 4) as usize)?);
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
        if l.footer.is_tap()
            && l.footer.creator_version >= 0x0001_0001
            && bm_hdr_off + SECTOR <= footer_off
        {
            let bh = BatmapHeader::decode(&read(bm_hdr_off, SECTOR as usize)?);
            if bh.has_cookie() {
                let map_off = bh.map_offset;
                let map_len = bh.map_bytes();
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

    /// The extents of the metadata at the front of a dynamic disk that a
    /// change rewrites: the footer copy, the header, the BAT and the
    /// batmap (offset, length).
    pub fn metadata_extents(&self) -> Vec<(u64, u64)> {
        let mut v = vec![(0, FOOTER), (self.footer_off, FOOTER)];
        if self.kind != Kind::Fixed {
            v.push((self.hdr_off, HEADER_LEN as u64));
            v.push((self.table_off, padded(self.bat.len() as u64 * 4)));
            if let Some(b) = &self.batmap {
                v.push((b.hdr_off, SECTOR));
                v.push((b.map_off, b.map.len() as u64));
            }
        }
        v
    }
}
