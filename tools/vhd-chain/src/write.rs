//! Writing a dynamic VHD from a raw stream of known size (notes/vhd.md
//! sections 2.2-2.8), in constant memory.
//!
//! Layout, as blktap (`vhd-util create`, notes section 2.9) lays out a
//! fresh image: the footer copy at 0, the dynamic header at 512, the BAT
//! at 1536 (padded with zeros to a sector), the batmap header and its map
//! (one bit per block, set for every allocated block: their sector
//! bitmaps are full), then the allocated blocks in disk order, each a
//! one-sector bitmap (all bits set) followed by its 2 MiB of data placed
//! on a 4 KiB boundary, then the end footer. A block whose data is all zeros is left unallocated (BAT entry
//! `0xFFFFFFFF`): the image has no parent, so it reads as zeros.
//!
//! The footer says creator `tap\0` version 1.3 (what XenServer writes),
//! host OS 0, `current_size` exactly the size given (qemu believes
//! `current_size` for `tap\0`, so `qemu-img info` reports it unchanged),
//! the [`Geometry::for_size`] of that size, hidden 0.
//!
//! A `tap` 1.2+ image without a batmap fails `vhd-util check`, hence the
//! batmap (version 1.2, checksum over `current_size >> 24` bytes in whole
//! sectors, marker 0).
//!
//! Only one block is buffered; the BAT (4 bytes per block) is kept in
//! memory and written by seeking back at [`DynamicWriter::finish`], with
//! the header and both footers.

use crate::raw::{aligned, all_zero};
use formats::vhd::{
    self, BatmapHeader, DiskType, DynamicHeader, FEATURE_RESERVED, FOOTER_LEN, FORMAT_VERSION,
    Footer, Geometry, NO_OFFSET, SECTOR, TAP_CREATOR, TAP_VERSION, UNALLOCATED,
};
use std::io::{self, Seek, SeekFrom, Write};

/// Bytes per block (the blktap and qemu default).
pub const BLOCK_SIZE: u64 = 2 << 20;
const HEADER_OFFSET: u64 = 512;
const TABLE_OFFSET: u64 = 1536;

/// What was written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Written {
    /// The virtual size (`current_size`).
    pub virtual_size: u64,
    /// BAT entries.
    pub blocks: u64,
    /// Blocks holding data (the others are all zeros and unallocated).
    pub blocks_allocated: u64,
    /// The [`BlockDigest`] of the raw disk written.
    pub block_digest: String,
    /// The size of the VHD file.
    pub file_size: u64,
}

/// A digest of the non-zero blocks of a virtual disk: for each
/// [`BLOCK_SIZE`] block that is not all zeros, in order, its index (u64,
/// big-endian) and its bytes (the last block only as far as the disk goes),
/// through XXH3-128. Two disks of the same size give the same digest when
/// their contents are equal, and a difference shows with overwhelming
/// odds; computing it costs nothing for the zeros a sparse disk is mostly
/// made of, and little for the rest (XXH3 runs at memory speed). `flatten`
/// uses it to check the image it wrote against the chain: the check guards
/// against our own bugs and lost writes, not against an adversary, so a
/// cryptographic hash would only cost time (the SHA-256 of the raw disk is
/// `vhd-chain cat | checksum-tee`).
#[derive(Default, Clone)]
pub struct BlockDigest {
    hasher: xxhash_rust::xxh3::Xxh3,
}

impl std::fmt::Debug for BlockDigest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlockDigest").finish_non_exhaustive()
    }
}

impl BlockDigest {
    /// Add block `index` of the disk (ignored when all zeros).
    pub fn add(&mut self, index: u64, data: &[u8]) {
        if !all_zero(data) {
            self.add_nonzero(index, data);
        }
    }

    /// [`BlockDigest::add`] of a block known not to be all zeros.
    fn add_nonzero(&mut self, index: u64, data: &[u8]) {
        self.hasher.update(&index.to_be_bytes());
        self.hasher.update(data);
    }

    /// The digest, as `xxh3-128:` and 32 hex digits.
    pub fn finish(&self) -> String {
        format!("xxh3-128:{:032x}", self.hasher.digest128())
    }
}

/// A dynamic VHD being written into `W` from the raw disk, in order,
/// through [`Write`]; [`DynamicWriter::finish`] completes it.
pub struct DynamicWriter<W: Write + Seek> {
    out: W,
    size: u64,
    uuid: [u8; 16],
    timestamp: u32,
    bat: Vec<u32>,
    /// The block being filled (always `BLOCK_SIZE` long).
    block: Vec<u8>,
    filled: usize,
    /// Raw bytes received so far.
    received: u64,
    /// Sector where the next allocated block (its bitmap) goes.
    next_sector: u64,
    allocated: u64,
    /// End of the metadata or of the last block written: the end footer
    /// goes there.
    data_end: u64,
    /// Where the batmap header is (the map follows it).
    batmap_offset: u64,
    /// Sectors of the map.
    batmap_sectors: u64,
    digest: BlockDigest,
    /// Blocks written since [`DynamicWriter::take_placed`]: (index, file
    /// offset of the bitmap, bytes of the disk in the block).
    placed: Vec<(u64, u64, usize)>,
}

impl<W: Write + Seek> std::fmt::Debug for DynamicWriter<W> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DynamicWriter")
            .field("size", &self.size)
            .field("received", &self.received)
            .field("allocated", &self.allocated)
            .finish()
    }
}

fn invalid(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, msg)
}

/// A random (version 4) UUID from `/dev/urandom`.
pub fn random_uuid() -> io::Result<[u8; 16]> {
    let mut u = [0u8; 16];
    io::Read::read_exact(&mut std::fs::File::open("/dev/urandom")?, &mut u)?;
    u[6] = (u[6] & 0x0f) | 0x40;
    u[8] = (u[8] & 0x3f) | 0x80;
    Ok(u)
}

impl<W: Write + Seek> DynamicWriter<W> {
    /// Start a dynamic VHD of `size` bytes (a multiple of 512) with this
    /// footer UUID and timestamp (VHD epoch) at the start of `out`, which
    /// should be empty. Nothing is written before the first full block.
    pub fn new(out: W, size: u64, uuid: [u8; 16], timestamp: u32) -> io::Result<Self> {
        if !size.is_multiple_of(SECTOR) {
            return Err(invalid(format!(
                "virtual size {size} is not a multiple of 512"
            )));
        }
        let blocks = size.div_ceil(BLOCK_SIZE);
        let entries = u32::try_from(blocks)
            .ok()
            // No bigger a BAT than the reader (which verifies) accepts.
            .filter(|&b| u64::from(b) * 4 <= formats::vhd::MAX_BAT_BYTES)
            .ok_or_else(|| invalid(format!("virtual size {size} needs too many blocks")))?;
        let bat_bytes = (u64::from(entries) * 4).div_ceil(SECTOR) * SECTOR;
        let batmap_offset = TABLE_OFFSET + bat_bytes;
        let batmap_sectors = u64::from(entries).div_ceil(8).div_ceil(SECTOR).max(1);
        let free = batmap_offset + SECTOR + batmap_sectors * SECTOR;
        let block = vec![0u8; BLOCK_SIZE as usize];
        Ok(DynamicWriter {
            out,
            size,
            uuid,
            timestamp,
            bat: Vec::with_capacity(entries as usize),
            block,
            filled: 0,
            received: 0,
            next_sector: aligned(free / SECTOR),
            allocated: 0,
            data_end: free,
            batmap_offset,
            batmap_sectors,
            digest: BlockDigest::default(),
            placed: Vec::new(),
        })
    }

    /// Raw bytes received so far.
    pub fn received(&self) -> u64 {
        self.received
    }

    /// Blocks allocated (written to the output) so far.
    pub fn allocated(&self) -> u64 {
        self.allocated
    }

    /// The output.
    pub fn get_ref(&self) -> &W {
        &self.out
    }

    /// The blocks written since the last call: (block index, file offset
    /// of its bitmap, bytes of the disk in it), so a reader can check them
    /// while the rest is written.
    pub fn take_placed(&mut self) -> Vec<(u64, u64, usize)> {
        std::mem::take(&mut self.placed)
    }

    /// Write out a last, partial block now (once all the data is in),
    /// instead of in [`DynamicWriter::finish`], so that
    /// [`DynamicWriter::take_placed`] sees it.
    pub fn end_data(&mut self) -> io::Result<()> {
        if self.received == self.size && self.filled > 0 {
            self.emit_block()?;
        }
        Ok(())
    }

    /// The BAT so far.
    pub fn bat(&self) -> &[u32] {
        &self.bat
    }

    /// Append `len` bytes of zeros without passing them: whole blocks
    /// become unallocated BAT entries at no cost (what a sparse source's
    /// holes should cost), partial ones are buffered as zeros.
    pub fn write_hole(&mut self, mut len: u64) -> io::Result<()> {
        if len > self.size - self.received {
            return Err(invalid(format!(
                "more raw data than the virtual size of {}",
                self.size
            )));
        }
        while len > 0 {
            if self.filled == 0 && len >= BLOCK_SIZE {
                self.bat.push(UNALLOCATED);
                self.received += BLOCK_SIZE;
                len -= BLOCK_SIZE;
                continue;
            }
            let room = (self.block.len() - self.filled) as u64;
            let n = room.min(len) as usize;
            self.block[self.filled..self.filled + n].fill(0);
            self.filled += n;
            self.received += n as u64;
            len -= n as u64;
            if self.filled == self.block.len() {
                self.emit_block()?;
            }
        }
        Ok(())
    }

    /// Write out the buffered block (padded with zeros) and start the
    /// next one.
    fn emit_block(&mut self) -> io::Result<()> {
        let mut block = std::mem::take(&mut self.block);
        block[self.filled..].fill(0);
        let r = self.emit(&block, self.filled);
        self.block = block;
        self.filled = 0;
        r
    }

    /// Append block `self.bat.len()`, `data` ([`BLOCK_SIZE`] bytes, of
    /// which the first `valid` are the disk's): unallocated when all zeros.
    fn emit(&mut self, data: &[u8], valid: usize) -> io::Result<()> {
        let index = self.bat.len() as u64;
        if all_zero(data) {
            self.bat.push(UNALLOCATED);
            return Ok(());
        }
        self.digest.add_nonzero(index, &data[..valid]);
        let sector = u32::try_from(self.next_sector)
            .ok()
            .filter(|&s| s != UNALLOCATED)
            .ok_or_else(|| invalid("the VHD would exceed 2 TiB".to_string()))?;
        let off = self.next_sector * SECTOR;
        self.out.seek(SeekFrom::Start(off))?;
        self.out.write_all(&[0xffu8; SECTOR as usize])?;
        self.out.write_all(data)?;
        self.data_end = off + SECTOR + BLOCK_SIZE;
        self.placed.push((index, off, valid));
        self.bat.push(sector);
        self.next_sector = aligned(self.next_sector + 1 + BLOCK_SIZE / SECTOR);
        self.allocated += 1;
        Ok(())
    }

    fn footer(&self) -> Footer {
        let mut f = Footer {
            features: FEATURE_RESERVED,
            format_version: FORMAT_VERSION,
            data_offset: HEADER_OFFSET,
            timestamp: self.timestamp,
            creator_app: TAP_CREATOR,
            creator_version: TAP_VERSION,
            // Host OS 0, as blktap writes; saved state 0, hidden 0.
            original_size: self.size,
            current_size: self.size,
            geometry: Geometry::for_size(self.size),
            disk_type_code: DiskType::Dynamic.code(),
            uuid: self.uuid,
            ..Footer::blank()
        };
        f.seal();
        f
    }

    fn header(&self) -> DynamicHeader {
        let mut h = DynamicHeader {
            data_offset: NO_OFFSET,
            table_offset: TABLE_OFFSET,
            version: FORMAT_VERSION,
            max_table_entries: u32::try_from(self.bat.len()).unwrap_or(u32::MAX),
            block_size: BLOCK_SIZE as u32,
            ..DynamicHeader::blank()
        };
        h.seal();
        h
    }

    /// The batmap header and its map.
    fn batmap(&self) -> Vec<u8> {
        let map_len = (self.batmap_sectors * SECTOR) as usize;
        let mut map = vec![0u8; map_len];
        for (i, e) in self.bat.iter().enumerate() {
            if *e != UNALLOCATED {
                vhd::set_bit(&mut map, i as u64);
            }
        }
        let secs = u32::try_from(self.batmap_sectors).unwrap_or(u32::MAX);
        let mut h = BatmapHeader::new(self.batmap_offset + SECTOR, secs);
        h.checksum = vhd::batmap_checksum(&map, self.size, h.version);
        let mut out = h.encode().to_vec();
        out.extend_from_slice(&map);
        out
    }

    /// Complete the image: the last (partial) block, the BAT, the header
    /// and both footers. Fails unless exactly `size` bytes were written.
    /// Returns the output (not flushed to disk: the caller fsyncs) and
    /// what was written.
    pub fn finish(mut self) -> io::Result<(W, Written)> {
        if self.received != self.size {
            return Err(invalid(format!(
                "{} bytes of raw data for a virtual size of {}",
                self.received, self.size
            )));
        }
        if self.filled > 0 {
            self.emit_block()?;
        }
        let blocks = self.size.div_ceil(BLOCK_SIZE);
        if self.bat.len() as u64 != blocks {
            return Err(io::Error::other(format!(
                "internal: {} BAT entries for {blocks} blocks",
                self.bat.len()
            )));
        }
        let table = vhd::encode_bat(&self.bat, self.bat.len());
        let footer = self.footer().encode();
        let header = self.header().encode();
        let end = self.data_end;
        self.out.seek(SeekFrom::Start(end))?;
        self.out.write_all(&footer)?;
        self.out.seek(SeekFrom::Start(0))?;
        self.out.write_all(&footer)?;
        self.out.write_all(&header)?;
        self.out.write_all(&table)?;
        self.out.seek(SeekFrom::Start(self.batmap_offset))?;
        self.out.write_all(&self.batmap())?;
        self.out.flush()?;
        let written = Written {
            virtual_size: self.size,
            blocks,
            blocks_allocated: self.allocated,
            block_digest: self.digest.finish(),
            file_size: end + FOOTER_LEN as u64,
        };
        Ok((self.out, written))
    }
}

impl<W: Write + Seek> Write for DynamicWriter<W> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let left = self.size - self.received;
        if data.len() as u64 > left {
            return Err(invalid(format!(
                "more raw data than the virtual size of {}",
                self.size
            )));
        }
        let mut rest = data;
        while !rest.is_empty() {
            // Whole blocks go out from the caller's buffer, uncopied.
            if self.filled == 0 && rest.len() >= self.block.len() {
                let (whole, tail) = rest.split_at(self.block.len());
                self.emit(whole, whole.len())?;
                rest = tail;
                continue;
            }
            let room = self.block.len() - self.filled;
            let n = room.min(rest.len());
            self.block[self.filled..self.filled + n].copy_from_slice(&rest[..n]);
            self.filled += n;
            rest = &rest[n..];
            if self.filled == self.block.len() {
                self.emit_block()?;
            }
        }
        self.received += data.len() as u64;
        Ok(data.len())
    }

    /// Nothing to do: a partial block stays buffered until it is full or
    /// [`DynamicWriter::finish`] pads it.
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::io::Cursor;

    /// Write `parts` (Some: bytes, None: a hole of that many zeros)
    /// through a writer; returns the file and what was written.
    fn build(size: u64, parts: &[(Option<u8>, u64)], holes: bool) -> (Vec<u8>, Written) {
        let mut w = DynamicWriter::new(Cursor::new(Vec::new()), size, [7; 16], 1234).unwrap();
        for (fill, len) in parts {
            match fill {
                Some(b) => w.write_all(&vec![*b; *len as usize]).unwrap(),
                None if holes => w.write_hole(*len).unwrap(),
                None => w.write_all(&vec![0; *len as usize]).unwrap(),
            }
        }
        let (c, written) = w.finish().unwrap();
        (c.into_inner(), written)
    }

    #[test]
    fn holes_give_the_same_image_as_written_zeros() {
        let size = 5 * BLOCK_SIZE + 3 * SECTOR;
        let parts = [
            (None, 1000 * SECTOR),
            (Some(0xab), 3 * SECTOR),
            (None, 3 * BLOCK_SIZE),
            (Some(0), SECTOR),
            (
                None,
                size - 1000 * SECTOR - 3 * SECTOR - 3 * BLOCK_SIZE - 2 * SECTOR,
            ),
            (Some(1), SECTOR),
        ];
        let (a, wa) = build(size, &parts, true);
        let (b, wb) = build(size, &parts, false);
        assert!(a == b);
        assert_eq!(wa, wb);
        assert_eq!(wa.blocks, 6);
        assert_eq!(wa.blocks_allocated, 2);
        assert_eq!(wa.file_size, a.len() as u64);
    }

    #[test]
    fn the_block_digest_sees_content_and_place_but_not_zeros() {
        let size = 4 * BLOCK_SIZE;
        let d = |parts: &[(Option<u8>, u64)]| build(size, parts, true).1.block_digest;
        let empty = d(&[(None, size)]);
        let one = d(&[(Some(1), SECTOR), (None, size - SECTOR)]);
        let moved = d(&[
            (None, BLOCK_SIZE),
            (Some(1), SECTOR),
            (None, size - BLOCK_SIZE - SECTOR),
        ]);
        let zeros = d(&[(Some(0), size)]);
        assert_eq!(empty, zeros);
        assert_ne!(empty, one);
        assert_ne!(one, moved);
        assert_eq!(empty.len(), 9 + 32);
    }

    #[test]
    fn too_much_data_or_hole_is_refused() {
        let mut w = DynamicWriter::new(Cursor::new(Vec::new()), BLOCK_SIZE, [0; 16], 0).unwrap();
        assert!(w.write_hole(BLOCK_SIZE + SECTOR).is_err());
        w.write_hole(BLOCK_SIZE - SECTOR).unwrap();
        assert!(w.write_all(&[0; 1024]).is_err());
        w.write_all(&[0; 512]).unwrap();
        assert!(w.finish().is_ok());
    }
}
