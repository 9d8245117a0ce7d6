//! `coalesce CHILD [PARENT]`: merge a differencing VHD's sectors into its
//! parent (`vhd-util coalesce`, notes/vhd.md section 3.4), and `coalesce
//! --chain DIR`: every member into the next, leaf first, so the base ends
//! up holding the whole disk (Cinder's `coalesce_chain`, which returns the
//! base).
//!
//! What is written into the parent, as libvhd's write path does it but in
//! one pass: for each allocated block of the child, each run of set bitmap
//! bits (zeros included: a set bit overrides the parent) is written at the
//! same virtual sectors of the parent. A fixed parent gets plain writes. A
//! dynamic or differencing parent gets the data in its block, allocating
//! missing blocks at the end of the file (data 4 KiB-aligned, the gap and
//! the rest of the block zeroed), the covered bitmap bits set, the blktap
//! batmap bit set when a block becomes full (checksum recomputed), then the
//! BAT, and the footer at the new end plus its copy at 0, unchanged. The
//! child is not modified.
//!
//! Where we differ from vhd-util, deliberately:
//! - **Any block size**, in child and parent alike, mixed (libvhd visits
//!   only `ceil(size / 2 MiB)` child blocks and loses the rest of a
//!   small-block child).
//! - **A child larger than its parent** grows the parent first
//!   ([`crate::resize`]) instead of failing half-merged with ERANGE.
//! - **Atomic**: the work happens on a copy of the parent renamed into
//!   place, or with `--in-place` under an undo journal ([`crate::patch`]).
//! - **Checked**: the parent's UUID must be the child's recorded parent
//!   UUID; afterwards the chain below the child must read, over the
//!   child's size, exactly as child-over-parent did before (compared by
//!   [`BlockDigest`](crate::write::BlockDigest)), and beyond it as the
//!   parent did; otherwise nothing is replaced.
//! - **The parent is found safely**: given, or by the name in the child's
//!   header resolved in the child's own directory, a plain file name only
//!   (no separators, no `..`, no symlink).

use crate::journal::Rollback;
use crate::layout::{FOOTER, Kind, Layout, LayoutError};
use crate::member::Target;
use crate::patch::{self, Edit, Mode, PatchError};
use crate::raw::aligned;
use crate::read::{Chain, ReadError};
use crate::resize::{self, ResizeError};
use filter::ErrorKind;
use formats::vhd::{self, SECTOR, UNALLOCATED, padded};
use serde::Serialize;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// How deep a chain of parent names we follow.
const MAX_DEPTH: usize = 64;
/// Largest piece of child data read at once.
const PIECE: u64 = 1 << 20;

/// What `coalesce` did to one parent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Coalesced {
    /// The differencing disk merged (unchanged).
    #[serde(serialize_with = "crate::lossy_path")]
    pub child: PathBuf,
    /// The disk it was merged into.
    #[serde(serialize_with = "crate::lossy_path")]
    pub parent: PathBuf,
    /// Members below the parent (read to verify, not changed).
    pub ancestors: usize,
    /// Sectors written into the parent.
    pub sectors_coalesced: u64,
    /// Blocks the parent had to allocate.
    pub blocks_allocated: u64,
    /// The parent's size before and after, when it had to grow to the
    /// child's.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parent_resized: Option<[u64; 2]>,
    /// The digest both sides of the check agreed on.
    pub block_digest: String,
    /// `copy` or `in_place`.
    pub mode: &'static str,
    /// What a crashed earlier run's journal needed (in-place only).
    pub journal: Rollback,
}

/// Why coalescing failed; the parent is unchanged.
#[derive(Debug, thiserror::Error)]
pub enum CoalesceError {
    /// The child is not a differencing disk.
    #[error("{}: not a differencing disk: there is no parent to coalesce into", path.display())]
    NotDifferencing {
        /// The child.
        path: PathBuf,
    },
    /// The parent could not be found, or its name is unsafe to follow.
    #[error("{}: {why}", path.display())]
    Parent {
        /// The child.
        path: PathBuf,
        /// Why.
        why: String,
    },
    /// A member could not be read, or the members do not form a chain.
    #[error(transparent)]
    Read(#[from] ReadError),
    /// The parent could not be grown, or is not a VHD we change.
    #[error(transparent)]
    Resize(#[from] ResizeError),
    /// The change could not be made (or failed its check).
    #[error(transparent)]
    Patch(#[from] PatchError),
}

impl CoalesceError {
    /// The record's `error.kind`.
    pub fn kind(&self) -> ErrorKind {
        match self {
            CoalesceError::NotDifferencing { .. } => ErrorKind::NotDifferencing,
            CoalesceError::Parent { .. } => ErrorKind::ChainIncomplete,
            CoalesceError::Read(e) => e.kind(),
            CoalesceError::Resize(e) => e.kind(),
            CoalesceError::Patch(e) => e.kind(),
        }
    }
}

fn layout_of(path: &Path) -> Result<(File, Layout), CoalesceError> {
    let io_err = |source| {
        CoalesceError::Resize(ResizeError::Io {
            path: path.to_path_buf(),
            source,
        })
    };
    // Never through a link (`symlink`), never blocks (a FIFO is refused).
    let f = crate::input::open_nofollow(path, false).map_err(io_err)?;
    let l = Layout::read(&f).map_err(|e| CoalesceError::Resize(resize::layout_error(path, e)))?;
    Ok((f, l))
}

/// The parent named in differencing `child`'s header (`l`), as a file in
/// the child's directory (module docs).
fn named_parent(child: &Path, l: &Layout) -> Result<PathBuf, CoalesceError> {
    let bad = |why: String| CoalesceError::Parent {
        path: child.to_path_buf(),
        why,
    };
    let name = l
        .hdr
        .parent_name()
        .map_err(|_| bad("the parent name in its header is not valid UTF-16".into()))?;
    if name.is_empty() {
        return Err(bad("its header names no parent: give PARENT".into()));
    }
    if name.contains(['/', '\\']) || name == "." || name == ".." {
        return Err(bad(format!(
            "the parent name {name:?} is not a plain file name; give PARENT"
        )));
    }
    let dir = match child.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let p = dir.join(&name);
    match std::fs::symlink_metadata(&p) {
        Ok(m) if m.is_file() => Ok(p),
        // A FIFO, device or directory: never opened (it could block).
        Ok(m) if !m.file_type().is_symlink() => Err(CoalesceError::Resize(ResizeError::Io {
            path: p,
            source: system::files::refusal(
                ErrorKind::NotRegular,
                format!("is a {}, not a regular file", system::files::describe(&m)),
            ),
        })),
        Ok(_) => Err(bad(format!(
            "its parent {} is not a regular file",
            p.display()
        ))),
        Err(e) => Err(bad(format!("its parent {}: {e}", p.display()))),
    }
}

/// The parent to coalesce `child` into: `parent` if given, else the one
/// its header names (module docs). Only the child is read.
pub fn parent_of(child: &Path, parent: Option<&Path>) -> Result<PathBuf, CoalesceError> {
    let (_, l) = layout_of(child)?;
    if l.kind != Kind::Differencing {
        return Err(CoalesceError::NotDifferencing {
            path: child.to_path_buf(),
        });
    }
    match parent {
        Some(p) => Ok(p.to_path_buf()),
        None => named_parent(child, &l),
    }
}

/// `[child, parent, grandparent, ..., base]`: the given parent (or the
/// named one), then each differencing member's named parent.
pub fn find_chain(child: &Path, parent: Option<&Path>) -> Result<Vec<PathBuf>, CoalesceError> {
    let first = parent_of(child, parent)?;
    let mut chain = vec![child.to_path_buf(), first];
    loop {
        let last = chain.last().cloned().unwrap_or_default();
        let (_, l) = layout_of(&last)?;
        if l.kind != Kind::Differencing {
            return Ok(chain);
        }
        let next = named_parent(&last, &l)?;
        if chain.len() > MAX_DEPTH || chain.contains(&next) {
            return Err(CoalesceError::Parent {
                path: child.to_path_buf(),
                why: format!("the chain of parents loops or is deeper than {MAX_DEPTH}"),
            });
        }
        chain.push(next);
    }
}

/// A dynamic, differencing or fixed VHD being written into (the parent).
struct Editor<'a> {
    f: &'a File,
    l: Layout,
    data_end: u64,
    allocated: u64,
    writes: usize,
    crash: bool,
}

impl<'a> Editor<'a> {
    fn new(f: &'a File, l: Layout, crash: bool) -> Self {
        let data_end = l.footer_off;
        Editor {
            f,
            l,
            data_end,
            allocated: 0,
            writes: 0,
            crash,
        }
    }

    fn write_at(&mut self, data: &[u8], off: u64) -> io::Result<()> {
        if self.crash {
            patch::crash_point(self.writes);
        }
        self.writes += 1;
        system::signal::check()?;
        self.f.write_all_at(data, off)
    }

    /// Write `data` (whole sectors) at virtual sector `s`.
    fn write(&mut self, mut s: u64, mut data: &[u8]) -> io::Result<()> {
        if self.l.kind == Kind::Fixed {
            return self.write_at(data, s * SECTOR);
        }
        let spb = self.l.block / SECTOR;
        while !data.is_empty() {
            let blk = s / spb;
            let within = s % spb;
            let n = (spb - within).min(data.len() as u64 / SECTOR);
            let bytes = (n * SECTOR) as usize;
            let whole = within == 0 && n == spb;
            let entry = self.entry_for(blk, whole)?;
            let base = u64::from(entry) * SECTOR;
            self.write_at(&data[..bytes], base + self.l.bitmap_bytes + within * SECTOR)?;
            // The bitmap: set the covered bits.
            let mut bm = vec![0u8; self.l.bitmap_bytes as usize];
            self.f.read_exact_at(&mut bm, base)?;
            for i in within..within + n {
                vhd::set_bit(&mut bm, i);
            }
            self.write_at(&bm, base)?;
            let full = (0..spb).all(|i| vhd::bit(&bm, i));
            if full && let Some(b) = &mut self.l.batmap {
                vhd::set_bit(&mut b.map, blk);
            }
            data = &data[bytes..];
            s += n;
        }
        Ok(())
    }

    /// The BAT entry of block `blk`, allocating it at the end of the data
    /// when missing (zeroed, unless `whole` is about to be written).
    fn entry_for(&mut self, blk: u64, whole: bool) -> io::Result<u32> {
        let i = usize::try_from(blk).unwrap_or(usize::MAX);
        let Some(&e) = self.l.bat.get(i) else {
            return Err(io::Error::other(format!(
                "block {blk} is beyond the parent's BAT"
            )));
        };
        if e != UNALLOCATED {
            return Ok(e);
        }
        let sector = aligned(self.data_end.div_ceil(SECTOR));
        let entry = u32::try_from(sector)
            .ok()
            .filter(|&s| s != UNALLOCATED)
            .ok_or_else(|| io::Error::other("the parent would exceed 2 TiB"))?;
        let start = sector * SECTOR;
        // Zero the gap (it holds the old end footer) and, unless the whole
        // block is written next, the bitmap and data; else the bitmap only.
        let end = if whole {
            start + self.l.bitmap_bytes
        } else {
            start + self.l.block_bytes()
        };
        let zeros = vec![0u8; PIECE as usize];
        let mut at = self.data_end;
        while at < end {
            let n = (end - at).min(PIECE) as usize;
            self.write_at(&zeros[..n], at)?;
            at += n as u64;
        }
        self.l.bat[i] = entry;
        self.data_end = start + self.l.block_bytes();
        self.allocated += 1;
        Ok(entry)
    }

    /// The BAT, the batmap, the footers; the file's new length.
    fn finish(mut self) -> io::Result<u64> {
        if self.l.kind != Kind::Fixed {
            let table = vhd::encode_bat(&self.l.bat, self.l.bat.len());
            self.write_at(&table, self.l.table_off)?;
            if let Some(mut b) = self.l.batmap.take() {
                b.hdr.checksum = b.checksum(self.l.size);
                self.write_at(&b.map, b.map_off)?;
                self.write_at(&b.hdr.encode(), b.hdr_off)?;
            }
        }
        let footer = self.l.footer.sealed();
        let end = padded(self.data_end);
        self.write_at(&footer, end)?;
        if self.l.kind != Kind::Fixed {
            self.write_at(&footer, 0)?;
        }
        self.f.set_len(end + FOOTER)?;
        Ok(end + FOOTER)
    }
}

/// The set-bit runs of `child`'s blocks, in order: (virtual sector,
/// sectors, file offset of the data).
fn child_runs(f: &File, l: &Layout) -> io::Result<Vec<(u64, u64, u64)>> {
    let spb = l.block / SECTOR;
    let total = l.size / SECTOR;
    let mut runs = Vec::new();
    let mut bm = vec![0u8; l.bitmap_bytes as usize];
    for (blk, &e) in l.bat.iter().enumerate() {
        if e == UNALLOCATED {
            continue;
        }
        let first = blk as u64 * spb;
        if first >= total {
            break;
        }
        let base = u64::from(e) * SECTOR;
        f.read_exact_at(&mut bm, base)?;
        let n = spb.min(total - first);
        let bit = |i: u64| vhd::bit(&bm, i);
        let mut i = 0;
        while i < n {
            if !bit(i) {
                i += 1;
                continue;
            }
            let start = i;
            while i < n && bit(i) {
                i += 1;
            }
            runs.push((
                first + start,
                i - start,
                base + l.bitmap_bytes + start * SECTOR,
            ));
        }
    }
    Ok(runs)
}

/// The chain the opened members form (handles of their own).
fn chain_of(members: &[Target]) -> Result<Chain, ReadError> {
    let mut files = Vec::with_capacity(members.len());
    for t in members {
        let f = t.handle().map_err(|source| ReadError::Io {
            path: t.path.clone(),
            source,
        })?;
        files.push((t.path.clone(), f));
    }
    Chain::from_files(files)
}

/// The layout of an opened member.
fn layout(t: &Target) -> Result<Layout, CoalesceError> {
    Layout::read(&t.file).map_err(|e| CoalesceError::Resize(resize::layout_error(&t.path, e)))
}

/// Open the members of `chain` (paths, child first) once, without
/// following a link; the parent for writing when `mode` is in place.
pub fn open_members(chain: &[PathBuf], mode: Mode) -> Result<Vec<Target>, CoalesceError> {
    let in_place = matches!(mode, Mode::InPlace { .. });
    chain
        .iter()
        .enumerate()
        .map(|(i, p)| {
            Target::open(p, in_place && i == 1).map_err(|source| {
                CoalesceError::Resize(ResizeError::Io {
                    path: p.clone(),
                    source,
                })
            })
        })
        .collect()
}

/// Merge `child` into its parent (`parent`, or the one its header names),
/// the rest of the chain found by name (module docs). In place, a crashed
/// earlier run's journal is rolled back first.
pub fn coalesce(
    child: &Path,
    parent: Option<&Path>,
    mode: Mode,
) -> Result<Coalesced, CoalesceError> {
    coalesce_with(child, parent, mode, false)
}

/// [`coalesce`], showing the copy on a terminal when `progress`.
pub fn coalesce_with(
    child: &Path,
    parent: Option<&Path>,
    mode: Mode,
    progress: bool,
) -> Result<Coalesced, CoalesceError> {
    let journal = recover(&parent_of(child, parent)?, mode)?;
    let chain = open_members(&find_chain(child, parent)?, mode)?;
    let mut done = coalesce_chain_step(&chain, mode, progress)?;
    done.journal = journal;
    Ok(done)
}

/// In place, roll back what a crashed run left of a change to `parent`.
pub fn recover(parent: &Path, mode: Mode) -> Result<Rollback, CoalesceError> {
    Ok(match mode {
        Mode::InPlace { journal } => patch::recover(journal, parent)?,
        Mode::Copy => Rollback::None,
    })
}

/// Merge `chain[0]` into `chain[1]`; `chain[2..]` are the ancestors, all
/// opened once ([`open_members`], or from a chain directory's handle; the
/// parent read-write when in place): they are judged, read and the parent
/// changed through those handles only. A journal of an earlier in-place
/// run must have been [`recover`]ed. `progress`: show the bytes merged on
/// a terminal.
pub fn coalesce_chain_step(
    chain: &[Target],
    mode: Mode,
    progress: bool,
) -> Result<Coalesced, CoalesceError> {
    let (child_t, parent_t) = match chain {
        [c, p, ..] => (c, p),
        _ => {
            return Err(CoalesceError::Parent {
                path: chain.first().map(|t| t.path.clone()).unwrap_or_default(),
                why: "no parent to coalesce into".into(),
            });
        }
    };
    let (child, parent) = (child_t.path.as_path(), parent_t.path.as_path());
    // The parent is written: it must not be the child (or another member)
    // under a second name, a hard link.
    let mut seen = Vec::with_capacity(chain.len());
    for t in chain {
        if seen.contains(&t.status.id) {
            return Err(CoalesceError::Resize(ResizeError::Io {
                path: parent.to_path_buf(),
                source: system::files::refusal(
                    ErrorKind::SameFile,
                    format!(
                        "{} is the same file as another member of the chain; refusing to write over it",
                        t.path.display()
                    ),
                ),
            }));
        }
        seen.push(t.status.id);
    }
    // The chain as it reads now (this also checks the links by UUID).
    let mut before = chain_of(chain)?;
    let child_size = before.virtual_size();
    // One meter over the whole step: the chain read before, the child's
    // data merged, the merged chain read back (its total is learnt once
    // the child's runs are known).
    let label = format!("coalescing {}", child.display());
    let mut meter = system::progress::Progress::new(&label, None, progress);
    let want = before.digest_metered(0, child_size, &mut meter)?;
    drop(before);
    let (cf, cl) = (&child_t.file, layout(child_t)?);
    if cl.kind != Kind::Differencing {
        return Err(CoalesceError::NotDifferencing {
            path: child.to_path_buf(),
        });
    }
    let (pf, pl) = (&parent_t.file, layout(parent_t)?);
    let parent_size = pl.size;
    let rest = &chain[1..];
    let want_tail = if parent_size > child_size {
        chain_of(rest)?.digest(child_size, parent_size)?
    } else {
        String::new()
    };
    // Judged from the parent's handle, not from its name again.
    let judged = parent_t.handle().map_err(|source| ResizeError::Io {
        path: parent.to_path_buf(),
        source,
    })?;
    let valid_before =
        crate::check::check_opened(parent, judged, &crate::check::Options::default())
            .map(|r| r.valid)
            .unwrap_or(false);

    // Grow the parent first when the child is larger.
    let grow: Option<Edit> = if child_size > parent_size {
        Some(resize::plan(parent, pf, child_size)?.0)
    } else {
        None
    };
    let runs = child_runs(cf, &cl).map_err(|source| ResizeError::Io {
        path: child.to_path_buf(),
        source,
    })?;
    let sectors: u64 = runs.iter().map(|r| r.1).sum();
    meter.set_total(Some(2 * child_size + sectors * SECTOR));
    let meter = std::cell::RefCell::new(meter);

    // In place: journal the front metadata, the old end footer, whatever
    // growing rewrites, and every existing parent block the child touches.
    let mut ranges = pl.metadata_extents();
    if let Some(e) = &grow {
        ranges.extend(e.writes.iter().map(|(o, d)| (*o, d.len() as u64)));
    }
    if pl.kind == Kind::Fixed {
        ranges.extend(runs.iter().map(|r| (r.0 * SECTOR, r.1 * SECTOR)));
    } else {
        let spb = pl.block / SECTOR;
        for r in &runs {
            for blk in r.0 / spb..=(r.0 + r.1 - 1) / spb {
                if let Some(&e) = pl.bat.get(blk as usize)
                    && e != UNALLOCATED
                {
                    ranges.push((u64::from(e) * SECTOR, pl.block_bytes()));
                }
            }
        }
    }
    let poison: Vec<u64> = if pl.kind == Kind::Fixed {
        vec![pl.footer_off]
    } else {
        vec![0, pl.footer_off]
    };

    let mut allocated = 0;
    let in_place = matches!(mode, Mode::InPlace { .. });

    let mut work = |f: &File| -> io::Result<()> {
        let layout = match &grow {
            Some(e) => {
                patch::write_edit(f, e)?;
                Layout::read(f).map_err(|e| match e {
                    LayoutError::Io(e) => e,
                    other => io::Error::other(format!("after growing: {other:?}")),
                })?
            }
            None => pl.clone(),
        };
        let mut ed = Editor::new(f, layout, in_place);
        let mut buf = vec![0u8; PIECE as usize];
        for &(s, n, off) in &runs {
            let mut done = 0;
            while done < n {
                let k = (n - done).min(PIECE / SECTOR);
                let b = &mut buf[..(k * SECTOR) as usize];
                cf.read_exact_at(b, off + done * SECTOR)?;
                ed.write(s + done, b)?;
                meter.borrow_mut().add(k * SECTOR);
                done += k;
            }
        }
        allocated = ed.allocated;
        ed.finish()?;
        Ok(())
    };
    let verify = |p: &Path, f: &File| -> Result<(), String> {
        let mut after = vec![(p.to_path_buf(), f.try_clone().map_err(|e| e.to_string())?)];
        for t in &rest[1..] {
            after.push((t.path.clone(), t.handle().map_err(|e| e.to_string())?));
        }
        let mut c = Chain::from_files(after).map_err(|e| e.to_string())?;
        let got = c
            .digest_metered(0, child_size, &mut meter.borrow_mut())
            .map_err(|e| e.to_string())?;
        if got != want {
            return Err(format!(
                "the merged chain reads {got}, child over parent read {want}"
            ));
        }
        if !want_tail.is_empty() {
            let tail = c
                .digest(child_size, parent_size)
                .map_err(|e| e.to_string())?;
            if tail != want_tail {
                return Err("the parent beyond the child's size changed".into());
            }
        }
        if valid_before {
            let h = f.try_clone().map_err(|e| e.to_string())?;
            let r = crate::check::check_opened(p, h, &crate::check::Options::default())
                .map_err(|e| e.to_string())?;
            if !r.valid {
                let names: Vec<&str> = r.findings.iter().map(|f| f.rule.as_str()).collect();
                return Err(format!("the merged parent fails: {}", names.join(", ")));
            }
        }
        Ok(())
    };
    patch::apply_with(parent_t, mode, &ranges, &poison, &mut work, &verify)?;
    drop(meter);
    Ok(Coalesced {
        child: child.to_path_buf(),
        parent: parent.to_path_buf(),
        ancestors: chain.len() - 2,
        sectors_coalesced: sectors,
        blocks_allocated: allocated,
        parent_resized: grow.map(|_| [parent_size, child_size]),
        block_digest: want,
        mode: if in_place { "in_place" } else { "copy" },
        journal: Rollback::None,
    })
}
