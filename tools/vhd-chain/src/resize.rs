//! `resize FILE SIZE`: grow a VHD's virtual disk (`vhd-util resize`,
//! notes/vhd.md section 3.3), on a copy renamed into place or, with
//! `--in-place`, under an undo journal ([`crate::patch`]).
//!
//! What changes:
//! - **fixed**: zeros from the old end of data to the new size, then the
//!   footer there (`current_size`, geometry).
//! - **dynamic, differencing, the BAT already covers the size**: only the
//!   footer (both copies) and, for a blktap image, the batmap checksum
//!   (which covers `current_size >> 24` bytes).
//! - **dynamic, differencing, a bigger BAT needed**: the BAT grows to
//!   `ceil(SIZE / block)` entries in place. Whatever lies where the bigger
//!   BAT (and, blktap, the batmap that must follow it) now goes (data
//!   blocks, parent locator data) is moved to the end of the file, the
//!   blocks with their data 4 KiB-aligned, and the old places zeroed; the
//!   header gets the new entry count and locator offsets.
//!
//! Where we differ from vhd-util, deliberately:
//! - `SIZE` is bytes (with the usual suffixes), a multiple of 512, and
//!   becomes `current_size` exactly; vhd-util takes MiB and rounds a
//!   dynamic disk up to whole blocks *counted from the old table size*.
//! - Any creator is accepted (vhd-util refuses all but `tap`). qemu reads
//!   the size of `vpc ` and `qemu` images from the CHS geometry, which
//!   cannot express most sizes: when the new size is not a CHS product the
//!   creator becomes `qem2` (qemu then believes `current_size`, section
//!   4.4) and the record says so.
//! - Shrinking is refused: it drops data (vhd-util truncates fixed disks
//!   and refuses dynamic ones).
//! - The result is checked ([`crate::check`]) before it replaces the file
//!   or the journal is dropped; moved blocks are read back.

use crate::check;
use crate::journal::Rollback;
use crate::layout::{FOOTER, Kind, Layout, LayoutError};
use crate::patch::{self, Edit, Mode, PatchError};
use crate::raw::aligned;
use filter::ErrorKind;
use formats::vhd::{self, Geometry, HEADER_LEN, SECTOR, UNALLOCATED, padded};
use serde::Serialize;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// The largest VHD (blktap's and Hyper-V's limit, 2040 GiB).
pub const MAX_SIZE: u64 = 2040 << 30;
/// The most block and locator bytes one resize moves (in memory).
const MAX_MOVED: u64 = 256 << 20;

/// What `resize` did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Resized {
    /// The VHD.
    #[serde(serialize_with = "crate::lossy_path")]
    pub path: PathBuf,
    /// `fixed`, `dynamic` or `differencing`.
    pub disk_type: &'static str,
    /// The old `current_size`.
    pub from_size: u64,
    /// The new `current_size`.
    pub to_size: u64,
    /// `unchanged`, `footer` (the BAT already covered the size),
    /// `bat_grown`, or `fixed_extended`.
    pub method: &'static str,
    /// BAT entries before and after.
    pub bat_entries: [u64; 2],
    /// Data blocks moved to the end to make room for the BAT.
    pub blocks_moved: u64,
    /// Parent locators whose data moved.
    pub locators_moved: u64,
    /// The creator before, when it was changed to `qem2` (module docs).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub creator_was: Option<String>,
    /// `copy` or `in_place`.
    pub mode: &'static str,
    /// What a crashed earlier run's journal needed (in-place only).
    pub journal: Rollback,
}

/// Why resizing failed; the file is unchanged.
#[derive(Debug, thiserror::Error)]
pub enum ResizeError {
    /// Reading the file failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
    /// Not a VHD we can change.
    #[error("{}: {why}", path.display())]
    NotAVhd {
        /// The file.
        path: PathBuf,
        /// Why.
        why: String,
    },
    /// A VHD whose metadata does not add up.
    #[error("{}: {why}", path.display())]
    Broken {
        /// The file.
        path: PathBuf,
        /// Why.
        why: String,
    },
    /// A size we do not resize to.
    #[error("{}: {why}", path.display())]
    Refused {
        /// The file.
        path: PathBuf,
        /// Why.
        why: String,
    },
    /// The change could not be made.
    #[error(transparent)]
    Patch(#[from] PatchError),
}

impl ResizeError {
    /// The record's `error.kind`.
    pub fn kind(&self) -> ErrorKind {
        match self {
            ResizeError::Io { source, .. } => ErrorKind::from_io(source),
            ResizeError::NotAVhd { .. } => ErrorKind::NotAVhd,
            ResizeError::Broken { .. } => ErrorKind::BadImage,
            ResizeError::Refused { .. } => ErrorKind::Refused,
            ResizeError::Patch(e) => e.kind(),
        }
    }
}

fn overlaps(a: u64, alen: u64, b: u64, blen: u64) -> bool {
    a < b.saturating_add(blen) && b < a.saturating_add(alen)
}

/// The default journal for `path`: `.<name>.vhd-chain-journal` beside it.
pub fn default_journal(path: &Path) -> PathBuf {
    let mut name = std::ffi::OsString::from(".");
    name.push(path.file_name().unwrap_or_default());
    name.push(".vhd-chain-journal");
    path.with_file_name(name)
}

/// Grow `path` to `size` bytes of virtual disk (module docs).
pub fn resize(path: &Path, size: u64, mode: Mode) -> Result<Resized, ResizeError> {
    let journal = match mode {
        Mode::InPlace { journal } => patch::recover(journal, path)?,
        Mode::Copy => Rollback::None,
    };
    let io_err = |source| ResizeError::Io {
        path: path.to_path_buf(),
        source,
    };
    // Opened once, never through a link (`symlink`), even named directly;
    // a FIFO never blocks the open and is refused. This handle is judged,
    // planned from and changed (in place) or copied.
    let in_place = matches!(mode, Mode::InPlace { .. });
    let target = crate::member::Target::open(path, in_place).map_err(io_err)?;
    let judged = target.handle().map_err(io_err)?;
    let valid_before = check::check_opened(path, judged, &check::Options::default())
        .map(|r| r.valid)
        .unwrap_or(false);
    let (edit, mut done, moved) = plan(path, &target.file, size)?;
    done.journal = journal;
    done.mode = match mode {
        Mode::Copy => "copy",
        Mode::InPlace { .. } => "in_place",
    };
    if done.method == "unchanged" {
        return Ok(done);
    }
    let verify = |p: &Path, f: &File| -> Result<(), String> {
        if valid_before {
            let h = f.try_clone().map_err(|e| e.to_string())?;
            let r =
                check::check_opened(p, h, &check::Options::default()).map_err(|e| e.to_string())?;
            if !r.valid {
                let names: Vec<&str> = r.findings.iter().map(|f| f.rule.as_str()).collect();
                return Err(format!("the resized VHD fails: {}", names.join(", ")));
            }
        }
        for (off, bytes) in &moved {
            let mut back = vec![0u8; bytes.len()];
            f.read_exact_at(&mut back, *off)
                .map_err(|e| e.to_string())?;
            if &back != bytes {
                return Err(format!("a moved block at {off} reads back differently"));
            }
        }
        Ok(())
    };
    patch::apply(&target, &edit, mode, &verify)?;
    Ok(done)
}

pub(crate) type Planned = (Edit, Resized, Vec<(u64, Vec<u8>)>);

/// Map a [`LayoutError`] to ours.
pub(crate) fn layout_error(path: &Path, e: LayoutError) -> ResizeError {
    let path = path.to_path_buf();
    match e {
        LayoutError::Io(source) => ResizeError::Io { path, source },
        LayoutError::NotAVhd(why) => ResizeError::NotAVhd { path, why },
        LayoutError::Broken(why) => ResizeError::Broken { path, why },
        LayoutError::Poisoned => ResizeError::Refused {
            path,
            why: "its footer is poisoned (v_poison): an interrupted resize; re-run with the \
                  same --in-place --journal to roll it back, or use vhd-util revert with its journal"
                .into(),
        },
    }
}

/// Plan growing the VHD in `file` (at `path`) to `size` bytes: the edit,
/// the result to report, and the moved data (new offset, bytes) to read
/// back.
pub(crate) fn plan(path: &Path, file: &File, size: u64) -> Result<Planned, ResizeError> {
    let io_err = |source| ResizeError::Io {
        path: path.to_path_buf(),
        source,
    };
    let broken = |why: String| ResizeError::Broken {
        path: path.to_path_buf(),
        why,
    };
    let refuse = |why: String| ResizeError::Refused {
        path: path.to_path_buf(),
        why,
    };
    let read = |off: u64, n: usize| -> Result<Vec<u8>, ResizeError> {
        let mut b = vec![0u8; n];
        file.read_exact_at(&mut b, off).map_err(io_err)?;
        Ok(b)
    };
    let l = Layout::read(file).map_err(|e| layout_error(path, e))?;
    let (len, footer_off, old) = (l.len, l.footer_off, l.size);
    let footer = l.footer.clone();
    let disk_type = l.kind.name();
    if !size.is_multiple_of(SECTOR) || size == 0 {
        return Err(refuse(format!(
            "{size} bytes is not a positive multiple of 512"
        )));
    }
    if size > MAX_SIZE {
        return Err(refuse(format!(
            "{size} bytes is more than a VHD holds ({MAX_SIZE})"
        )));
    }
    if size < old {
        return Err(refuse(format!(
            "shrinking from {old} to {size} bytes would drop data; not supported"
        )));
    }
    let mut done = Resized {
        path: path.to_path_buf(),
        disk_type,
        from_size: old,
        to_size: size,
        method: "unchanged",
        bat_entries: [0, 0],
        blocks_moved: 0,
        locators_moved: 0,
        creator_was: None,
        mode: "copy",
        journal: Rollback::None,
    };
    // The new footer.
    let mut f = footer;
    f.current_size = size;
    f.geometry = Geometry::for_size(size);
    let creator = f.creator_app;
    if (creator == *b"vpc " || creator == *b"qemu") && f.geometry.total_sectors() * SECTOR != size {
        f.creator_app = *b"qem2";
        done.creator_was = Some(String::from_utf8_lossy(&creator).into_owned());
    }
    let new_footer = f.sealed().to_vec();

    let mut edit = Edit::default();
    if l.kind == Kind::Fixed {
        if size == old {
            return Ok((edit, done, Vec::new()));
        }
        done.method = "fixed_extended";
        // Zeros from the old end of data through the old footer, then the
        // footer at the new end (the file grows sparse in between).
        edit.writes.push((old, vec![0u8; (len - old) as usize]));
        edit.writes.push((size, new_footer));
        edit.new_len = size + FOOTER;
        edit.poison = vec![footer_off];
        return Ok((edit, done, Vec::new()));
    }

    // Dynamic and differencing.
    let (hdr_off, table_off, block) = (l.hdr_off, l.table_off, l.block);
    let mut hdr = l.hdr.clone();
    let entries = l.bat.len() as u64;
    let block_bytes = l.block_bytes();
    let mut bat = l.bat.clone();
    let new_entries = size.div_ceil(block);
    done.bat_entries = [entries, new_entries.max(entries)];

    let bm = l.batmap.clone();
    if size == old {
        return Ok((edit, done, Vec::new()));
    }
    edit.poison = vec![0, footer_off];
    edit.writes.push((footer_off, vec![0u8; FOOTER as usize]));
    if new_entries <= entries {
        done.method = "footer";
        if let Some(mut b) = bm {
            b.hdr.checksum = b.checksum(size);
            edit.writes.push((b.hdr_off, b.hdr.encode().to_vec()));
        }
        edit.writes.push((footer_off, new_footer.clone()));
        edit.writes.push((0, new_footer));
        edit.new_len = len;
        return Ok((edit, done, Vec::new()));
    }

    // A bigger BAT (and batmap after it).
    done.method = "bat_grown";
    if new_entries * 4 > formats::vhd::MAX_BAT_BYTES {
        return Err(refuse(format!(
            "{new_entries} BAT entries is more than this tool writes"
        )));
    }
    let new_bat_len = padded(new_entries * 4);
    let new_bm_hdr = table_off + new_bat_len;
    let new_map_len = padded(new_entries.div_ceil(8));
    let meta_end = if bm.is_some() {
        new_bm_hdr + SECTOR + new_map_len
    } else {
        new_bm_hdr
    };
    let region = (table_off, meta_end - table_off);
    if overlaps(hdr_off, HEADER_LEN as u64, region.0, region.1)
        || overlaps(0, FOOTER, region.0, region.1)
    {
        return Err(broken(
            "the dynamic header lies where the BAT must grow".into(),
        ));
    }
    // What stays, what moves.
    let mut tail = meta_end.max(hdr_off + HEADER_LEN as u64);
    let mut moving_blocks = Vec::new();
    for (i, &e) in bat.iter().enumerate() {
        if e == UNALLOCATED {
            continue;
        }
        let start = u64::from(e) * SECTOR;
        if overlaps(start, block_bytes, region.0, region.1) {
            moving_blocks.push(i);
        } else {
            tail = tail.max(start + block_bytes);
        }
    }
    let mut moving_locators = Vec::new();
    for (i, loc) in hdr.locators.iter().enumerate() {
        if loc.is_empty() {
            continue;
        }
        let space = loc.space_bytes();
        let off = loc.data_offset;
        if space == 0 || off.checked_add(space).is_none_or(|e| e > footer_off) {
            return Err(broken(format!("parent locator {i} is outside the file")));
        }
        if overlaps(off, space, region.0, region.1) {
            moving_locators.push((i, off, space));
        } else {
            tail = tail.max(off + space);
        }
    }
    let moved_bytes =
        moving_blocks.len() as u64 * block_bytes + moving_locators.iter().map(|l| l.2).sum::<u64>();
    if moved_bytes > MAX_MOVED {
        return Err(refuse(format!(
            "growing the BAT would move {moved_bytes} bytes of data; more than {MAX_MOVED}"
        )));
    }
    // Old places of what moves, and of the old batmap, become zeros.
    for &i in &moving_blocks {
        edit.writes
            .push((u64::from(bat[i]) * SECTOR, vec![0u8; block_bytes as usize]));
    }
    for &(_, off, space) in &moving_locators {
        edit.writes.push((off, vec![0u8; space as usize]));
    }
    if let Some(b) = &bm {
        edit.writes.push((b.hdr_off, vec![0u8; SECTOR as usize]));
        edit.writes.push((b.map_off, vec![0u8; b.map.len()]));
    }
    // Moved blocks go to the end, in index order, data 4 KiB-aligned.
    let mut moved = Vec::new();
    for &i in &moving_blocks {
        let bytes = read(u64::from(bat[i]) * SECTOR, block_bytes as usize)?;
        let sector = aligned(tail.div_ceil(SECTOR));
        let e = u32::try_from(sector)
            .ok()
            .filter(|&s| s != UNALLOCATED)
            .ok_or_else(|| refuse("the VHD would exceed 2 TiB".into()))?;
        bat[i] = e;
        tail = sector * SECTOR + block_bytes;
        moved.push((sector * SECTOR, bytes.clone()));
        edit.writes.push((sector * SECTOR, bytes));
    }
    for &(i, off, space) in &moving_locators {
        let bytes = read(off, space as usize)?;
        let at = padded(tail);
        if let Some(loc) = hdr.locators.get_mut(i) {
            loc.data_offset = at;
        }
        tail = at + space;
        moved.push((at, bytes.clone()));
        edit.writes.push((at, bytes));
    }
    done.blocks_moved = moving_blocks.len() as u64;
    done.locators_moved = moving_locators.len() as u64;
    // The new BAT, batmap, header, footers.
    edit.writes
        .push((table_off, vhd::encode_bat(&bat, new_entries as usize)));
    if let Some(mut b) = bm {
        b.map.resize(new_map_len as usize, 0);
        b.hdr.map_offset = new_bm_hdr + SECTOR;
        b.hdr.map_sectors = u32::try_from(new_map_len / SECTOR).unwrap_or(0);
        b.hdr.checksum = b.checksum(size);
        edit.writes.push((new_bm_hdr, b.hdr.encode().to_vec()));
        edit.writes.push((new_bm_hdr + SECTOR, b.map));
    }
    hdr.max_table_entries = u32::try_from(new_entries).unwrap_or(0);
    edit.writes.push((hdr_off, hdr.sealed().to_vec()));
    let end = padded(tail);
    edit.writes.push((end, new_footer.clone()));
    edit.writes.push((0, new_footer));
    edit.new_len = end + FOOTER;
    Ok((edit, done, moved))
}
