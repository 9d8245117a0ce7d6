//! Reading a VHD chain as one raw disk (notes/vhd.md sections 2.1-2.10):
//! what `vhd-util coalesce` followed by a raw read would give, without
//! writing anything.
//!
//! Each image is opened by reading its footer and (dynamic, differencing)
//! its dynamic header and BAT here, not through `qemu-img`:
//! - **Footer** (section 2.11, blktap's order): the last 512 bytes; a
//!   511-byte footer at the end of a `512k + 511` file; then, for dynamic
//!   and differencing disks only, the copy at offset 0. A candidate counts
//!   when it has the footer cookie and blktap accepts its checksum
//!   ([`Footer::checksum_accepted`]: old blktap's hidden-flag quirk
//!   included, section 2.3). `v_poison` is reported as an interrupted
//!   `vhd-util resize`.
//! - **Dynamic header**: its cookie, a valid checksum (as blktap;
//!   qemu does not check it), a power-of-two block size of at least 512,
//!   enough BAT entries for the image's `current_size`.
//! - **BAT**: only the entries that cover `current_size` are read, once;
//!   at most [`MAX_BAT_BYTES`] of them, and never more than the file holds.
//!   Every allocated entry is checked at open: its bitmap and data must lie
//!   inside the file and before the end footer (before the end of the file
//!   when only the copy at 0 was usable). So a broken image fails before a
//!   byte is written.
//!
//! Sizes: [`Chain::virtual_size`] is the leaf's footer `current_size`, as
//! blktap uses it. qemu reports the CHS product instead for creators
//! `vpc ` and `qemu` (section 2.4), which differs whenever `current_size`
//! is not itself a CHS product. qemu-img 10 sidesteps this for the images
//! it creates: asked for 64M it rounds *up* to a geometry (964/8/17) and
//! stores that product, 67 125 248 bytes, as `current_size`, so both
//! sizes agree there (tests/read.rs checks it). A `current_size` that is
//! not a multiple of 512 is refused.
//!
//! Resolution of each sector follows section 2.10 exactly, from the leaf
//! towards the base: beyond an image's `current_size` reads as zero; a
//! fixed image gives its bytes; an unallocated block defers to the next
//! image; a set bitmap bit gives this image's sector; a clear one defers
//! (differencing) or gives zero (dynamic). A differencing base is
//! [`ReadError::ChainIncomplete`], never zeros.
//!
//! The chain itself must be consistent: every member but the base must be
//! differencing, and its header's parent UUID must be the next member's
//! footer UUID (otherwise [`ReadError::Broken`]: reading a child over a
//! parent it was not made on gives silent corruption). blktap's raw
//! parents (a differencing disk with an all-zero parent UUID, section 2.10)
//! are therefore not supported; tarballs do not use them.
//!
//! [`Chain::copy_to`] works in runs of sectors that come from the same
//! place, reads them in pieces of up to [`PIECE`] bytes, writes zeros for
//! runs that no image holds without reading anything, and keeps one sector
//! bitmap per image: memory does not grow with the disk.

use filter::ErrorKind;
use formats::vhd::{
    self, DiskType, DynamicHeader, FOOTER_COOKIE_NAME, FOOTER_LEN, Footer, HEADER_COOKIE_NAME,
    HEADER_LEN, SECTOR, UNALLOCATED, VhdError,
};
use std::fs::File;
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

pub use formats::vhd::MAX_BAT_BYTES;
/// Largest single read or write.
pub const PIECE: usize = 1 << 20;

/// Why a chain cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// No usable VHD footer (or an unknown disk type).
    #[error("{path}: not a VHD: {why}")]
    NotAVhd {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        why: String,
    },
    /// A VHD whose metadata is broken or hostile (BAT entry outside the
    /// file, truncated file, bad header), or a chain whose members do not
    /// belong together.
    #[error("{path}: broken VHD: {why}")]
    Broken {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        why: String,
    },
    /// The base of the chain is differencing: its parent is missing (or
    /// the chain given was empty; then `path` is empty).
    #[error("{path}: differencing disk without its parent: the chain is incomplete")]
    ChainIncomplete {
        /// The differencing base.
        path: PathBuf,
    },
    /// Reading a member failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
    /// Writing the output failed (`what` says which), or a signal stopped
    /// the read (`what` empty).
    #[error("{what}{source}")]
    Output {
        /// What was being done, e.g. "writing the output: ".
        what: &'static str,
        /// The error.
        source: io::Error,
    },
}

impl ReadError {
    /// The record's `error.kind`.
    pub fn kind(&self) -> ErrorKind {
        match self {
            ReadError::NotAVhd { .. } => ErrorKind::NotAVhd,
            ReadError::Broken { .. } => ErrorKind::BadImage,
            ReadError::ChainIncomplete { .. } => ErrorKind::ChainIncomplete,
            ReadError::Io { source, .. } | ReadError::Output { source, .. } => {
                ErrorKind::from_io(source)
            }
        }
    }
}

/// One member of the chain, opened.
struct Image {
    path: PathBuf,
    file: File,
    kind: DiskType,
    /// In sectors.
    sectors: u64,
    uuid: [u8; 16],
    parent_uuid: [u8; 16],
    /// Dynamic/differencing only (0 for fixed).
    sectors_per_block: u64,
    bitmap_sectors: u64,
    bat: Vec<u32>,
    /// The block whose bitmap is in `bitmap`.
    cached_block: Option<u64>,
    bitmap: Vec<u8>,
}

impl Image {
    fn io(&self, source: io::Error) -> ReadError {
        ReadError::Io {
            path: self.path.clone(),
            source,
        }
    }

    fn open(path: &Path) -> Result<Image, ReadError> {
        // A regular file or a volume (block device); nothing else opens.
        let (file, len) = crate::input::open_volume(path).map_err(|source| ReadError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Image::from_file(path, file, len)
    }

    /// An image from a file already opened (and judged) by the caller.
    fn from_file(path: &Path, file: File, len: u64) -> Result<Image, ReadError> {
        let io_err = |source| ReadError::Io {
            path: path.to_path_buf(),
            source,
        };
        let broken = |why: String| ReadError::Broken {
            path: path.to_path_buf(),
            why,
        };
        let not_vhd = |why: &str| ReadError::NotAVhd {
            path: path.to_path_buf(),
            why: why.to_string(),
        };
        let read = |off: u64, n: usize| -> Result<Vec<u8>, ReadError> {
            let mut b = vec![0u8; n];
            file.read_exact_at(&mut b, off).map_err(io_err)?;
            Ok(b)
        };
        if len < FOOTER_LEN as u64 {
            return Err(not_vhd("shorter than a footer"));
        }

        // Footer: end, 511-byte end, copy at 0 (dynamic/differencing only).
        let mut poisoned = false;
        let mut chosen: Option<(Footer, u64)> = None;
        let mut ends = vec![(len - FOOTER_LEN as u64, FOOTER_LEN)];
        if len % SECTOR == 511 {
            ends.push((len - 511, 511));
        }
        for (off, n) in ends {
            // blktap's rule: the cookie and an accepted checksum (hidden
            // quirk included).
            match Footer::parse(&read(off, n)?) {
                Ok(f) => {
                    chosen = Some((f, off));
                    break;
                }
                Err(VhdError::Poisoned) => poisoned = true,
                Err(_) => {}
            }
        }
        if chosen.is_none() {
            match Footer::parse(&read(0, FOOTER_LEN)?) {
                Ok(f)
                    if matches!(
                        f.disk_type(),
                        Some(DiskType::Dynamic | DiskType::Differencing)
                    ) =>
                {
                    // No trustworthy end footer: blocks may reach the end.
                    chosen = Some((f, len));
                }
                Err(VhdError::Poisoned) => poisoned = true,
                _ => {}
            }
        }
        let Some((footer, data_end)) = chosen else {
            return Err(not_vhd(&if poisoned {
                "footer cookie is v_poison: an interrupted resize (roll it back with its journal: vhd-chain resize --in-place, or vhd-util revert)".to_string()
            } else {
                format!(
                    "no valid footer (cookie {FOOTER_COOKIE_NAME} and a matching checksum) at the end or at 0"
                )
            }));
        };

        let Some(kind) = footer.disk_type() else {
            return Err(not_vhd(&format!(
                "unknown disk type {}",
                footer.disk_type_code
            )));
        };
        // A good end footer with a poisoned copy at 0 is a resize that
        // stopped after its last footer write but one: refuse it, as qemu
        // (which reads the copy first) does.
        if kind != DiskType::Fixed && Footer::decode(&read(0, 8)?).is_poisoned() {
            return Err(not_vhd(
                "footer copy at 0 is v_poison: an interrupted resize (roll it back with its journal)",
            ));
        }
        let current_size = footer.current_size;
        if !current_size.is_multiple_of(SECTOR) {
            return Err(broken(format!(
                "current size {current_size} is not a multiple of 512"
            )));
        }
        let uuid = footer.uuid;
        let mut img = Image {
            path: path.to_path_buf(),
            file: file.try_clone().map_err(io_err)?,
            kind,
            sectors: current_size / SECTOR,
            uuid,
            parent_uuid: [0u8; 16],
            sectors_per_block: 0,
            bitmap_sectors: 0,
            bat: Vec::new(),
            cached_block: None,
            bitmap: Vec::new(),
        };
        if kind == DiskType::Fixed {
            if current_size > data_end {
                return Err(broken(format!(
                    "fixed disk of {current_size} bytes, but only {data_end} bytes before its footer (truncated?)"
                )));
            }
            return Ok(img);
        }

        // Dynamic header.
        let hdr_off = footer.data_offset;
        match hdr_off.checked_add(HEADER_LEN as u64) {
            Some(e) if e <= data_end => {}
            _ => {
                return Err(broken(format!(
                    "dynamic header offset {hdr_off} is not inside the file ({len} bytes)"
                )));
            }
        }
        let hdr = match DynamicHeader::parse(&read(hdr_off, HEADER_LEN)?) {
            Ok(h) => h,
            Err(VhdError::HeaderChecksum { .. }) => {
                return Err(broken("dynamic header checksum mismatch".into()));
            }
            Err(_) => {
                return Err(broken(format!(
                    "no dynamic header ({HEADER_COOKIE_NAME}) at {hdr_off}"
                )));
            }
        };
        let block_size = hdr.block_size;
        if !block_size.is_power_of_two() || block_size < 512 {
            return Err(broken(format!("invalid block size {block_size}")));
        }
        let block_size = u64::from(block_size);
        let spb = block_size / SECTOR;
        let bitmap_bytes = vhd::bitmap_bytes(block_size);
        let entries = u64::from(hdr.max_table_entries);
        let needed = current_size.div_ceil(block_size);
        if entries < needed {
            return Err(broken(format!(
                "{entries} BAT entries cannot cover {current_size} bytes in blocks of {block_size}"
            )));
        }
        let bat_bytes = needed * 4;
        if bat_bytes > MAX_BAT_BYTES {
            return Err(broken(format!(
                "a BAT of {needed} entries is more than this reader accepts ({MAX_BAT_BYTES} bytes)"
            )));
        }
        let table_off = hdr.table_offset;
        match table_off.checked_add(bat_bytes) {
            Some(e) if e <= data_end => {}
            _ => {
                return Err(broken(format!(
                    "BAT ({needed} entries at {table_off}) is not inside the file ({len} bytes)"
                )));
            }
        }
        let n = usize::try_from(bat_bytes).map_err(|_| broken("BAT too large".into()))?;
        let raw = read(table_off, n)?;
        let block_bytes = bitmap_bytes + block_size;
        let mut bat = Vec::with_capacity(raw.len() / 4);
        for (i, v) in vhd::decode_bat(&raw).into_iter().enumerate() {
            if v != UNALLOCATED {
                let start = u64::from(v) * SECTOR;
                if start + block_bytes > data_end {
                    return Err(broken(format!(
                        "BAT entry {i} (sector {v}) puts block bytes {start}..{} past the data end at {data_end}",
                        start + block_bytes
                    )));
                }
            }
            bat.push(v);
        }
        if kind == DiskType::Differencing {
            img.parent_uuid = hdr.parent_uuid;
        }
        img.sectors_per_block = spb;
        img.bitmap_sectors = bitmap_bytes / SECTOR;
        img.bat = bat;
        img.bitmap = vec![0u8; usize::try_from(bitmap_bytes).unwrap_or(0)];
        Ok(img)
    }

    /// The BAT entry of `block` (unallocated when out of the table).
    fn entry(&self, block: u64) -> u32 {
        usize::try_from(block)
            .ok()
            .and_then(|b| self.bat.get(b).copied())
            .unwrap_or(UNALLOCATED)
    }

    fn load_bitmap(&mut self, block: u64, entry: u32) -> Result<(), ReadError> {
        if self.cached_block == Some(block) {
            return Ok(());
        }
        let off = u64::from(entry) * SECTOR;
        let mut bm = std::mem::take(&mut self.bitmap);
        let r = self.file.read_exact_at(&mut bm, off);
        self.bitmap = bm;
        r.map_err(|e| self.io(e))?;
        self.cached_block = Some(block);
        Ok(())
    }

    fn bit(&self, i: u64) -> bool {
        vhd::bit(&self.bitmap, i)
    }
}

/// Where a run of sectors comes from.
enum Src {
    Zero,
    /// Image index and byte offset in its file.
    Data(usize, u64),
}

/// A chain opened for reading: `chain[0]` is the leaf, the last is the
/// base (as `discover` returns them).
pub struct Chain {
    images: Vec<Image>,
}

impl std::fmt::Debug for Chain {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Chain")
            .field(
                "images",
                &self.images.iter().map(|i| &i.path).collect::<Vec<_>>(),
            )
            .finish()
    }
}

impl Chain {
    /// Open every member and check that they form one chain.
    pub fn open(chain: &[PathBuf]) -> Result<Chain, ReadError> {
        let mut images = Vec::with_capacity(chain.len());
        for p in chain {
            images.push(Image::open(p)?);
        }
        Chain::from_images(images)
    }

    /// [`Chain::open`] over files already opened (a chain directory's
    /// members, opened without following links): these handles are the
    /// ones read.
    pub fn from_files(chain: Vec<(PathBuf, File)>) -> Result<Chain, ReadError> {
        let mut images = Vec::with_capacity(chain.len());
        for (p, f) in chain {
            let len = f
                .metadata()
                .map_err(|source| ReadError::Io {
                    path: p.clone(),
                    source,
                })?
                .len();
            images.push(Image::from_file(&p, f, len)?);
        }
        Chain::from_images(images)
    }

    fn from_images(images: Vec<Image>) -> Result<Chain, ReadError> {
        let Some(base) = images.last() else {
            return Err(ReadError::ChainIncomplete {
                path: PathBuf::new(),
            });
        };
        if base.kind == DiskType::Differencing {
            return Err(ReadError::ChainIncomplete {
                path: base.path.clone(),
            });
        }
        for pair in images.windows(2) {
            let (child, parent) = (&pair[0], &pair[1]);
            if child.kind != DiskType::Differencing {
                return Err(ReadError::Broken {
                    path: child.path.clone(),
                    why: format!(
                        "{:?} disk followed by {} in the chain: it should be differencing",
                        child.kind,
                        parent.path.display()
                    )
                    .to_lowercase(),
                });
            }
            if child.parent_uuid != parent.uuid {
                return Err(ReadError::Broken {
                    path: child.path.clone(),
                    why: format!(
                        "its parent UUID is not the UUID of {} (relink the chain first)",
                        parent.path.display()
                    ),
                });
            }
        }
        Ok(Chain { images })
    }

    /// The leaf's virtual size in bytes: its footer `current_size`, as
    /// blktap uses it. qemu reports the CHS product for creators `vpc ` and
    /// `qemu` instead, which may be smaller (module docs).
    pub fn virtual_size(&self) -> u64 {
        self.images.first().map_or(0, |i| i.sectors * SECTOR)
    }

    /// Where sector `s` comes from, and for how many sectors from `s` on
    /// the same decision holds (at least 1).
    fn resolve(&mut self, s: u64) -> Result<(Src, u64), ReadError> {
        let mut run = u64::MAX;
        for idx in 0..self.images.len() {
            let img = &mut self.images[idx];
            if s >= img.sectors {
                return Ok((Src::Zero, run));
            }
            run = run.min(img.sectors - s);
            if img.kind == DiskType::Fixed {
                return Ok((Src::Data(idx, s * SECTOR), run));
            }
            let spb = img.sectors_per_block;
            let block = s / spb;
            let within = s % spb;
            run = run.min(spb - within);
            let entry = img.entry(block);
            if entry == UNALLOCATED {
                if img.kind == DiskType::Dynamic {
                    return Ok((Src::Zero, run));
                }
                continue;
            }
            img.load_bitmap(block, entry)?;
            let set = img.bit(within);
            let mut same = 1;
            while same < run && img.bit(within + same) == set {
                same += 1;
            }
            run = same;
            if set {
                let off = (u64::from(entry) + img.bitmap_sectors + within) * SECTOR;
                return Ok((Src::Data(idx, off), run));
            }
            if img.kind == DiskType::Dynamic {
                return Ok((Src::Zero, run));
            }
        }
        // Only reachable past a differencing base, which open refuses.
        match self.images.last() {
            Some(b) => Err(ReadError::ChainIncomplete {
                path: b.path.clone(),
            }),
            None => Ok((Src::Zero, run)),
        }
    }

    /// Whether sectors `s .. s + n` read as zeros without looking at any
    /// data: no member holds an allocated block (or, fixed, any bytes)
    /// there. Only BATs are consulted, so a hole costs no I/O.
    pub fn is_hole(&self, s: u64, n: u64) -> bool {
        let mut end = s.saturating_add(n);
        for img in &self.images {
            end = end.min(img.sectors);
            if s >= end {
                return true;
            }
            if img.kind == DiskType::Fixed {
                return false;
            }
            let spb = img.sectors_per_block;
            if (s / spb..=(end - 1) / spb).any(|b| img.entry(b) != UNALLOCATED) {
                return false;
            }
            if img.kind == DiskType::Dynamic {
                return true;
            }
        }
        true
    }

    /// How many pieces of `piece` bytes of the virtual disk are not holes
    /// ([`Chain::is_hole`]): at most what a copy must read and write.
    pub fn data_pieces(&self, piece: u64) -> u64 {
        let total = self.virtual_size() / SECTOR;
        let per = (piece / SECTOR).max(1);
        (0..total.div_ceil(per))
            .filter(|i| !self.is_hole(i * per, per.min(total - i * per)))
            .count() as u64
    }

    /// Fill `buf` (a whole number of sectors) with the virtual disk from
    /// sector `s` on, one run of same-source sectors at a time.
    fn read_into(&mut self, mut s: u64, buf: &mut [u8]) -> Result<(), ReadError> {
        let mut at = 0usize;
        while at < buf.len() {
            let (src, run) = self.resolve(s)?;
            let left = (buf.len() - at) as u64 / SECTOR;
            let n = run.min(left);
            let bytes = usize::try_from(n * SECTOR).unwrap_or(usize::MAX);
            let piece = &mut buf[at..at + bytes];
            match src {
                Src::Zero => piece.fill(0),
                Src::Data(idx, off) => {
                    let img = &self.images[idx];
                    img.file.read_exact_at(piece, off).map_err(|e| img.io(e))?;
                }
            }
            at += bytes;
            s += n;
        }
        Ok(())
    }

    /// Visit the virtual disk in pieces of `piece` bytes (a multiple of
    /// 512; the last piece may be shorter), in order: `f(offset, None,
    /// len)` for a hole ([`Chain::is_hole`]: zeros, nothing read),
    /// `f(offset, Some(bytes), len)` otherwise. Constant memory: one piece.
    pub fn for_each_piece<E>(
        &mut self,
        piece: u64,
        f: impl FnMut(u64, Option<&[u8]>, u64) -> Result<(), E>,
    ) -> Result<(), E>
    where
        E: From<ReadError>,
    {
        let size = self.virtual_size();
        self.for_each_piece_in(0, size, piece, f)
    }

    /// [`Chain::for_each_piece`] over bytes `start .. end` only (sector
    /// multiples, clipped to the disk).
    pub fn for_each_piece_in<E>(
        &mut self,
        start: u64,
        end: u64,
        piece: u64,
        mut f: impl FnMut(u64, Option<&[u8]>, u64) -> Result<(), E>,
    ) -> Result<(), E>
    where
        E: From<ReadError>,
    {
        let total = end.min(self.virtual_size()) / SECTOR;
        let per = (piece / SECTOR).max(1);
        let mut buf = vec![0u8; usize::try_from(per * SECTOR).unwrap_or(PIECE)];
        let mut s = start / SECTOR;
        while s < total {
            system::signal::check().map_err(|source| ReadError::Output { what: "", source })?;
            let n = per.min(total - s);
            let len = n * SECTOR;
            if self.is_hole(s, n) {
                f(s * SECTOR, None, len)?;
            } else {
                let b = &mut buf[..usize::try_from(len).unwrap_or(usize::MAX)];
                self.read_into(s, b)?;
                f(s * SECTOR, Some(b), len)?;
            }
            s += n;
        }
        Ok(())
    }

    /// The [`BlockDigest`](crate::write::BlockDigest) of bytes `start ..
    /// end` of the virtual disk, in pieces of 2 MiB from `start`: equal
    /// digests over the same range mean equal content.
    pub fn digest(&mut self, start: u64, end: u64) -> Result<String, ReadError> {
        self.digest_metered(start, end, &mut system::progress::Progress::off())
    }

    /// [`Chain::digest`], counting the bytes read (holes included) into
    /// `meter`.
    pub fn digest_metered(
        &mut self,
        start: u64,
        end: u64,
        meter: &mut system::progress::Progress,
    ) -> Result<String, ReadError> {
        let mut d = crate::write::BlockDigest::default();
        let bs = crate::write::BLOCK_SIZE;
        self.for_each_piece_in(start, end, bs, |off, data, len| {
            meter.add(len);
            if let Some(b) = data {
                d.add((off - start) / bs, b);
            }
            Ok::<(), ReadError>(())
        })?;
        Ok(d.finish())
    }

    /// Write the whole virtual disk, raw, to `out` in order, in constant
    /// memory; returns the bytes written ([`Chain::virtual_size`]).
    pub fn copy_to(&mut self, out: &mut dyn Write) -> Result<u64, ReadError> {
        let zeros = vec![0u8; PIECE];
        let out_err = |source| ReadError::Output {
            what: "writing the output: ",
            source,
        };
        self.for_each_piece(PIECE as u64, |_, data, len| {
            let len = usize::try_from(len).unwrap_or(PIECE).min(PIECE);
            out.write_all(data.unwrap_or(&zeros[..len]))
                .map_err(out_err)
        })?;
        out.flush().map_err(out_err)?;
        Ok(self.virtual_size())
    }
}
