//! Re-parenting a differencing VHD: `vhd-util modify -n CHILD -p PARENT`
//! (notes/vhd.md section 3.2), without ever writing into the child in place.
//!
//! What is rewritten, all in the child's dynamic header and in the data
//! areas of its existing parent locators, exactly as libvhd's
//! `vhd_change_parent` does:
//! - parent unique id (header + 40): the parent's footer UUID;
//! - parent timestamp (header + 56): the parent file's mtime minus
//!   946684800, as a u32 (or a caller-supplied mtime, e.g. the tar member's,
//!   see [`Options::parent_mtime`]);
//! - parent unicode name (header + 64, 512 bytes): zeroed, then the UTF-16BE
//!   basename of the canonical parent path;
//! - every existing `MacX`, `W2ku` and `W2ru` locator: rewritten in place at
//!   its data offset with the parent's path relative to the child
//!   (`file://./NAME` UTF-8; `.\NAME` UTF-16LE, no BOM, no terminator),
//!   zero-padded to whole sectors; `data length` = the payload length,
//!   `data space` = the padded size in bytes. Bytes past the padded size are
//!   left as they were. Other locators are untouched; none are added.
//! - the header checksum.
//!
//! The footer (both copies), the BAT, the data and the file length are not
//! changed.
//!
//! Where we differ from vhd-util, deliberately:
//! - **Copy, then rename.** The whole child is copied to a temporary file
//!   next to it ([`AtomicFile`]), patched there, fsynced and renamed over
//!   the child (then the directory is fsynced). A crash leaves the old child
//!   or the new one. The copy keeps the child's permission bits.
//! - **Identity check.** The child's current parent UUID must equal the new
//!   parent's UUID, unless forced ([`RelinkError::UuidMismatch`]); the result
//!   records both.
//! - **Hostile input.** Every offset is checked against the file length. A
//!   locator whose data area would leave the file or overlap the footers,
//!   the dynamic header or the BAT is refused ([`RelinkError::BadLocator`]),
//!   as is one with an unusable `data space` (vhd-util would then write
//!   without a limit).
//! - Non-ASCII parent names are encoded as UTF-16 (vhd-util's iconv from
//!   ASCII fails on them); names that are not UTF-8 are refused.

use crate::member::ChainDir;
use filter::ErrorKind;
use formats::vhd::{
    self, DiskType, FOOTER_LEN, HEADER_COOKIE_NAME, HEADER_LEN, PARENT_NAME_LEN, ParentLocator,
    SECTOR, uuid_string,
};
use formats::{FormatError, Reader};
use serde::Serialize;
use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io;
use std::os::unix::fs::{FileExt, FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};
use system::atomic::AtomicFile;
use system::files::FileId;
use system::tree::{Dir, Status, check_same};

const FOOTER: u64 = FOOTER_LEN as u64;
/// Largest locator data area we write (vhd-util's paths are < 1 KiB).
const MAX_LOCATOR_SPACE: u64 = 64 * 1024;

/// One re-parented child.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Relinked {
    /// The child that was rewritten (as given).
    #[serde(serialize_with = "crate::lossy_path")]
    pub child: PathBuf,
    /// Its new parent (as given).
    #[serde(serialize_with = "crate::lossy_path")]
    pub parent: PathBuf,
    /// The child's parent UUID before (lower-case, hyphenated).
    pub old_parent_uuid: String,
    /// The new parent's footer UUID, now in the child's header.
    pub new_parent_uuid: String,
    /// The parent name written into the header (the parent's basename).
    pub parent_name: String,
    /// The relative path written into the locators (`./1.vhd`).
    pub locator_path: String,
    /// The parent timestamp written (seconds since 2000-01-01 UTC).
    pub parent_timestamp_epoch2000: u32,
    /// Platform codes of the locators rewritten, in header order.
    pub locators_rewritten: Vec<String>,
    /// Whether the UUIDs differed and `force` made us go on.
    pub forced: bool,
}

/// Options for [`set_parent_with`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Options {
    /// Go on when the child's parent UUID is not the new parent's UUID.
    pub force: bool,
    /// The parent's mtime (Unix seconds) to use instead of the file's,
    /// e.g. the tar member's mtime (deterministic, notes section 6).
    pub parent_mtime: Option<i64>,
}

/// Why a child was not re-parented. Nothing was written in every case.
#[derive(Debug, thiserror::Error)]
pub enum RelinkError {
    /// The child is not a differencing disk.
    #[error("{path}: would-be child is {disk_type}, not a differencing disk")]
    NotDifferencing {
        /// The child.
        path: PathBuf,
        /// What it is (`dynamic`, `fixed`, ...).
        disk_type: String,
    },
    /// A file that should be a VHD is not one (or is broken).
    #[error("{path}: not a usable VHD: {why}")]
    NotAVhd {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        why: String,
    },
    /// The child's parent UUID is not the new parent's UUID.
    #[error(
        "{child}: its parent UUID is {old}, but {parent} has UUID {new}; refusing to relink (--no-uuid-check to override)"
    )]
    UuidMismatch {
        /// The child.
        child: PathBuf,
        /// The would-be parent.
        parent: PathBuf,
        /// The child's current parent UUID.
        old: String,
        /// The new parent's UUID.
        new: String,
    },
    /// The new name does not fit (a locator's old space, or the 512-byte
    /// name field).
    #[error(
        "{path}: the new parent path does not fit in the {code} field ({need} bytes, room for {room})"
    )]
    NameTooLong {
        /// The child.
        path: PathBuf,
        /// The locator code (`MacX`, `W2ku`, `W2ru`) or `parent_name`.
        code: String,
        /// Bytes needed (padded, for locators).
        need: u64,
        /// Bytes available.
        room: u64,
    },
    /// The parent's name cannot be written (not UTF-8, empty).
    #[error("{path}: parent name cannot be encoded: {why}")]
    BadName {
        /// The parent.
        path: PathBuf,
        /// Why.
        why: String,
    },
    /// A locator entry points somewhere it must not be written.
    #[error("{path}: {code} locator #{index}: {why}")]
    BadLocator {
        /// The child.
        path: PathBuf,
        /// Its platform code.
        code: String,
        /// Its index (0..8).
        index: usize,
        /// What is wrong.
        why: String,
    },
    /// The child is its own would-be parent (the same name, or the same
    /// file under another name: a hard link).
    #[error("{path}: a VHD cannot be its own parent")]
    SelfParent {
        /// The file.
        path: PathBuf,
    },
    /// The child changed (or its name was given to another file) while
    /// we worked on it.
    #[error("{path}: changed or replaced while being relinked; nothing was replaced")]
    Changed {
        /// The child.
        path: PathBuf,
    },
    /// Reading or writing failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
}

impl RelinkError {
    /// The record's `error.kind`.
    pub fn kind(&self) -> ErrorKind {
        match self {
            RelinkError::NotDifferencing { .. } => ErrorKind::NotDifferencing,
            RelinkError::NotAVhd { .. } => ErrorKind::NotAVhd,
            RelinkError::UuidMismatch { .. }
            | RelinkError::NameTooLong { .. }
            | RelinkError::BadName { .. } => ErrorKind::Refused,
            RelinkError::SelfParent { .. } => ErrorKind::SameFile,
            RelinkError::BadLocator { .. } => ErrorKind::BadImage,
            RelinkError::Changed { .. } => ErrorKind::Changed,
            RelinkError::Io { source, .. } => ErrorKind::from_io(source),
        }
    }

    /// For [`RelinkError::UuidMismatch`]: the child's current parent UUID
    /// and the new parent's UUID, for the error record.
    pub fn uuids(&self) -> Option<(&str, &str)> {
        match self {
            RelinkError::UuidMismatch { old, new, .. } => Some((old, new)),
            _ => None,
        }
    }

    /// The file the error is about.
    pub fn path(&self) -> &Path {
        match self {
            RelinkError::NotDifferencing { path, .. }
            | RelinkError::NotAVhd { path, .. }
            | RelinkError::NameTooLong { path, .. }
            | RelinkError::BadName { path, .. }
            | RelinkError::BadLocator { path, .. }
            | RelinkError::SelfParent { path }
            | RelinkError::Changed { path }
            | RelinkError::Io { path, .. } => path,
            RelinkError::UuidMismatch { child, .. } => child,
        }
    }
}

/// `vhd-util modify -n CHILD -p PARENT`, on a copy of `child` renamed into
/// place. Refuses a parent-UUID mismatch unless `force`.
pub fn set_parent(child: &Path, parent: &Path, force: bool) -> Result<Relinked, RelinkError> {
    set_parent_with(
        child,
        parent,
        &Options {
            force,
            parent_mtime: None,
        },
    )
}

/// [`set_parent`] with all the options. CHILD is changed, so it is opened
/// relative to its directory without following a link (a link is refused,
/// `symlink`); PARENT is only read, so the operator's link is followed.
pub fn set_parent_with(
    child: &Path,
    parent: &Path,
    opts: &Options,
) -> Result<Relinked, RelinkError> {
    let (dir, name) = crate::member::dir_and_name(child).map_err(io_err(child))?;
    let dir_real = real_dir(&dir);
    let pfile = crate::input::open_regular(parent).map_err(io_err(parent))?;
    let parent_real = std::fs::canonicalize(parent).map_err(io_err(parent))?;
    let child = ChildRef {
        path: child,
        dir: &dir,
        name: &name,
        dir_real: &dir_real,
    };
    plan(&child, parent, pfile, &parent_real, opts)?.apply()
}

/// Where `dir` is, as a canonical path, for the locators' relative path
/// (the handle itself is what is written through).
fn real_dir(dir: &Dir) -> PathBuf {
    std::fs::canonicalize(dir.path()).unwrap_or_else(|_| dir.path().to_path_buf())
}

/// Cinder's `fix_vhd_chain`: link member `i` to member `i + 1` for every
/// member but the last (`0.vhd` is the leaf). Every link is checked before
/// anything is written; a chain of 1 member is a no-op. Members are
/// opened relative to the directory, never through a link (`symlink`).
pub fn fix_dir(chain: &ChainDir, force: bool) -> Result<Vec<Relinked>, RelinkError> {
    fix_dir_with(chain, force, &[])
}

/// [`fix_dir`] with per-member mtimes (Unix seconds, index = chain index,
/// e.g. from extraction): `mtimes[i + 1]`, when present, is used as the
/// parent timestamp of member `i`.
pub fn fix_dir_with(
    chain: &ChainDir,
    force: bool,
    mtimes: &[Option<i64>],
) -> Result<Vec<Relinked>, RelinkError> {
    let dir = chain.dir();
    let dir_real = real_dir(dir);
    let paths = chain.paths();
    let refs: Vec<ChildRef<'_, '_>> = paths
        .iter()
        .zip(chain.names())
        .map(|(path, name)| ChildRef {
            path,
            dir,
            name,
            dir_real: &dir_real,
        })
        .collect();
    fix_refs(&refs, force, mtimes)
}

/// [`fix_dir`] over members named by path (each opened relative to its
/// own directory, never through a link).
pub fn fix(chain: &[PathBuf], force: bool) -> Result<Vec<Relinked>, RelinkError> {
    fix_with(chain, force, &[])
}

/// [`fix_dir_with`] over members named by path.
pub fn fix_with(
    chain: &[PathBuf],
    force: bool,
    mtimes: &[Option<i64>],
) -> Result<Vec<Relinked>, RelinkError> {
    let mut opened = Vec::with_capacity(chain.len());
    for p in chain {
        let (dir, name) = crate::member::dir_and_name(p).map_err(io_err(p))?;
        let real = real_dir(&dir);
        opened.push((dir, name, real));
    }
    let refs: Vec<ChildRef<'_, '_>> = chain
        .iter()
        .zip(&opened)
        .map(|(path, (dir, name, dir_real))| ChildRef {
            path,
            dir,
            name,
            dir_real,
        })
        .collect();
    fix_refs(&refs, force, mtimes)
}

/// Plan every link `refs[i]` -> `refs[i + 1]`, then write them.
fn fix_refs(
    refs: &[ChildRef<'_, '_>],
    force: bool,
    mtimes: &[Option<i64>],
) -> Result<Vec<Relinked>, RelinkError> {
    let mut plans = Vec::with_capacity(refs.len().saturating_sub(1));
    for (i, pair) in refs.windows(2).enumerate() {
        let opts = Options {
            force,
            parent_mtime: mtimes.get(i + 1).copied().flatten(),
        };
        let p = &pair[1];
        // A member: opened relative to its directory, never via a link.
        let pfile = p.dir.open_file(p.name).map_err(io_err(p.path))?;
        plans.push(plan(
            &pair[0],
            p.path,
            pfile,
            &p.dir_real.join(p.name),
            &opts,
        )?);
    }
    plans.into_iter().map(Plan::apply).collect()
}

/// The child: its directory's handle and its name there.
struct ChildRef<'a, 'd> {
    /// As given (messages and records).
    path: &'a Path,
    dir: &'d Dir,
    name: &'a OsStr,
    /// The directory's canonical path (for the locators).
    dir_real: &'a Path,
}

/// Everything decided, nothing written yet.
struct Plan<'a> {
    /// The child as given (for messages).
    child: PathBuf,
    /// Its directory: the copy is made there and renamed over `name`.
    dir: &'a Dir,
    name: OsString,
    /// The judged handle: what is copied.
    file: File,
    meta: std::fs::Metadata,
    /// The judged handle's identity, size and mtime.
    status: Status,
    header_offset: u64,
    header: Vec<u8>,
    /// (offset, padded payload) per rewritten locator.
    writes: Vec<(u64, Vec<u8>)>,
    result: Relinked,
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> RelinkError + '_ {
    move |source| RelinkError::Io {
        path: path.to_owned(),
        source,
    }
}

/// The file opened as qemu opens a VHD (footer copy at 0 for dynamic and
/// differencing disks, strict checksums: what `vhd-chain info` reports).
fn qemu_open(path: &Path, file: &File) -> Result<vhd::QemuOpen, RelinkError> {
    // A second handle on the very file judged (the caller keeps its own).
    let src = formats::FileSource::from_file(file.try_clone().map_err(io_err(path))?)
        .map_err(io_err(path))?;
    match vhd::open_qemu(&Reader::new(&src, "vpc")) {
        Ok(Some(o)) => Ok(o),
        Ok(None) => Err(RelinkError::NotAVhd {
            path: path.to_owned(),
            why: "no VHD footer".into(),
        }),
        Err(FormatError::Io(source)) => Err(RelinkError::Io {
            path: path.to_owned(),
            source,
        }),
        Err(other) => Err(RelinkError::NotAVhd {
            path: path.to_owned(),
            why: other.to_string(),
        }),
    }
}

/// Whole sectors, at least one (libvhd's `vhd_bytes_padded`).
fn bytes_padded(len: u64) -> u64 {
    vhd::padded(len).max(SECTOR)
}

/// blktap's `relative_path_to(child, parent)`: from the child's directory
/// to the parent, both canonical: `./NAME` in the same directory, else
/// `../` per level up, then the rest of the parent's path.
fn relative_path(child_dir: &Path, parent: &Path) -> Option<String> {
    let names = |p: &Path| -> Option<Vec<String>> {
        p.components()
            .filter(|c| matches!(c, Component::Normal(_)))
            .map(|c| c.as_os_str().to_str().map(str::to_owned))
            .collect()
    };
    let from = names(child_dir)?;
    let to = names(parent)?;
    let common = from.iter().zip(&to).take_while(|(a, b)| a == b).count();
    let up = from.len() - common;
    let mut s = if up == 0 {
        "./".to_string()
    } else {
        "../".repeat(up)
    };
    s.push_str(&to.get(common..)?.join("/"));
    Some(s)
}

/// Whether `[a, a + alen)` and `[b, b + blen)` overlap.
fn overlaps(a: u64, alen: u64, b: u64, blen: u64) -> bool {
    a < b.saturating_add(blen) && b < a.saturating_add(alen)
}

fn plan<'d>(
    c: &ChildRef<'_, 'd>,
    parent: &Path,
    pfile: File,
    parent_real: &Path,
    opts: &Options,
) -> Result<Plan<'d>, RelinkError> {
    let child = c.path;
    // The child: opened once, relative to its directory, never through a
    // link; this handle is judged, copied and checked again before the
    // rename.
    let file = c.dir.open_file(c.name).map_err(io_err(child))?;
    let meta = file.metadata().map_err(io_err(child))?;
    let status = Status::of_file(&file).map_err(io_err(child))?;
    if FileId::of_file(&pfile).map_err(io_err(parent))? == status.id {
        return Err(RelinkError::SelfParent {
            path: child.to_owned(),
        });
    }
    let len = meta.len();
    let opened = qemu_open(child, &file)?;
    let disk_type = opened.footer.disk_type();
    if disk_type != Some(DiskType::Differencing) || !opened.at_start {
        return Err(RelinkError::NotDifferencing {
            path: child.to_owned(),
            disk_type: disk_type.map_or("unknown", DiskType::name).to_string(),
        });
    }
    let Some(dynamic) = opened.dynamic else {
        return Err(RelinkError::NotAVhd {
            path: child.to_owned(),
            why: "no dynamic header".into(),
        });
    };
    let header_offset = dynamic.offset;
    let not_vhd = |why: &str| RelinkError::NotAVhd {
        path: child.to_owned(),
        why: why.to_string(),
    };
    // The whole header must be in the file, clear of both footers.
    let header_end = header_offset
        .checked_add(HEADER_LEN as u64)
        .ok_or_else(|| not_vhd("dynamic header offset out of range"))?;
    if header_offset < FOOTER || len < FOOTER || header_end > len - FOOTER {
        return Err(not_vhd(
            "dynamic header overlaps a footer or is past the end",
        ));
    }
    let mut header = dynamic.header;
    if !header.has_cookie() {
        return Err(not_vhd(&format!(
            "no dynamic header ({HEADER_COOKIE_NAME})"
        )));
    }
    let table_offset = header.table_offset;
    let table_len = bytes_padded(u64::from(header.max_table_entries) * 4);

    // The parent: its footer UUID.
    let pmeta = pfile.metadata().map_err(io_err(parent))?;
    if !pmeta.is_file() && !pmeta.file_type().is_block_device() {
        return Err(RelinkError::NotAVhd {
            path: parent.to_owned(),
            why: "not a regular file or block device".into(),
        });
    }
    let new_uuid_bytes = qemu_open(parent, &pfile)?.footer.uuid;
    let new_uuid = uuid_string(&new_uuid_bytes);
    let old_uuid = uuid_string(&header.parent_uuid);
    let mismatch = header.parent_uuid != new_uuid_bytes;
    if mismatch && !opts.force {
        return Err(RelinkError::UuidMismatch {
            child: child.to_owned(),
            parent: parent.to_owned(),
            old: old_uuid,
            new: new_uuid,
        });
    }

    // Parent name: UTF-16BE basename of the canonical path.
    let bad_name = |why: &str| RelinkError::BadName {
        path: parent.to_owned(),
        why: why.to_string(),
    };
    let base = parent_real
        .file_name()
        .ok_or_else(|| bad_name("no file name"))?
        .to_str()
        .ok_or_else(|| bad_name("not UTF-8"))?
        .to_string();
    if let Err(need) = header.set_parent_name(&base) {
        return Err(RelinkError::NameTooLong {
            path: child.to_owned(),
            code: "parent_name".into(),
            need: need as u64,
            room: PARENT_NAME_LEN as u64,
        });
    }
    let rel = relative_path(c.dir_real, parent_real).ok_or_else(|| bad_name("not UTF-8"))?;

    // Parent timestamp: mtime - 946684800 as u32 (C's truncation).
    let mtime = opts.parent_mtime.unwrap_or_else(|| pmeta.mtime());
    let ts = mtime.wrapping_sub(vhd::VHD_EPOCH as i64) as u32;

    header.parent_uuid = new_uuid_bytes;
    header.parent_timestamp = ts;

    // Locators, in place.
    let mut writes: Vec<(u64, Vec<u8>)> = Vec::new();
    let mut codes = Vec::new();
    for (i, loc) in header.locators.iter_mut().enumerate() {
        let Some(payload) = ParentLocator::encode_path(loc.code, &rel) else {
            continue;
        };
        let code = loc.code_string();
        let bad = |why: String| RelinkError::BadLocator {
            path: child.to_owned(),
            code: code.clone(),
            index: i,
            why,
        };
        let space = loc.space_bytes();
        let off = loc.data_offset;
        let need = bytes_padded(payload.len() as u64);
        if space == 0 || need > space {
            return Err(RelinkError::NameTooLong {
                path: child.to_owned(),
                code,
                need,
                room: space,
            });
        }
        if space > MAX_LOCATOR_SPACE {
            return Err(bad(format!("data space {space} is implausibly large")));
        }
        if !off.is_multiple_of(SECTOR) {
            return Err(bad(format!("data offset {off} is not sector-aligned")));
        }
        // Written: [off, off + need). It must be inside the file and miss
        // both footers, the dynamic header and the BAT.
        if off
            .checked_add(need)
            .is_none_or(|end| end > len.saturating_sub(FOOTER))
        {
            return Err(bad(format!(
                "data area at {off} ({need} bytes) is past the end of the data"
            )));
        }
        if overlaps(off, need, 0, FOOTER)
            || overlaps(off, need, header_offset, HEADER_LEN as u64)
            || overlaps(off, need, table_offset, table_len)
        {
            return Err(bad(format!(
                "data area at {off} ({need} bytes) overlaps the footer, header or BAT"
            )));
        }
        if writes
            .iter()
            .any(|(o, d)| overlaps(off, need, *o, d.len() as u64))
        {
            return Err(bad(format!(
                "data area at {off} overlaps another locator's"
            )));
        }
        loc.data_length = u32::try_from(payload.len()).unwrap_or(u32::MAX);
        loc.data_space = u32::try_from(need).unwrap_or(u32::MAX);
        let mut data = payload;
        data.resize(usize::try_from(need).unwrap_or(0), 0);
        writes.push((off, data));
        codes.push(code);
    }

    let header = header.sealed().to_vec();

    Ok(Plan {
        child: child.to_owned(),
        dir: c.dir,
        name: c.name.to_os_string(),
        file,
        meta,
        status,
        header_offset,
        header,
        writes,
        result: Relinked {
            child: child.to_owned(),
            parent: parent.to_owned(),
            old_parent_uuid: old_uuid,
            new_parent_uuid: new_uuid,
            parent_name: base,
            locator_path: rel,
            parent_timestamp_epoch2000: ts,
            locators_rewritten: codes,
            forced: mismatch,
        },
    })
}

impl Plan<'_> {
    fn apply(self) -> Result<Relinked, RelinkError> {
        let child = &self.child;
        let changed = || RelinkError::Changed {
            path: child.clone(),
        };
        // Between judging the child and writing: a test swaps it here.
        system::hook::point("vhd-chain.before_write");
        // The copy is made in the child's own directory (the pinned
        // handle, whatever its path names now) and renamed over the name.
        let target = self.dir.pinned_path(&self.name).map_err(io_err(child))?;
        let mut out = AtomicFile::create(&target, true).map_err(io_err(child))?;
        let perm = std::fs::Permissions::from_mode(self.meta.mode() & 0o7777);
        out.file().set_permissions(perm).map_err(io_err(child))?;
        // Copy the whole judged child from offset 0 (std uses
        // copy_file_range).
        let mut src = &self.file;
        {
            use std::io::{Seek, SeekFrom};
            src.seek(SeekFrom::Start(0)).map_err(io_err(child))?;
        }
        let copied = io::copy(&mut src, out.file()).map_err(io_err(child))?;
        if copied != self.meta.len() {
            return Err(changed());
        }
        for (off, data) in &self.writes {
            out.file().write_all_at(data, *off).map_err(io_err(child))?;
        }
        out.file()
            .write_all_at(&self.header, self.header_offset)
            .map_err(io_err(child))?;
        // The name must still be the file we judged and copied, unchanged:
        // the names are exchanged and what came out is checked, so another
        // file given that name meanwhile is put back, never replaced.
        check_same(&self.file, &self.status).map_err(|_| changed())?;
        match out.replace_in(self.dir, &self.name, &self.status) {
            Ok(()) => Ok(self.result),
            Err(e) if ErrorKind::from_io(&e) == ErrorKind::Changed => Err(changed()),
            Err(e) => Err(io_err(child)(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn relative_paths_follow_blktap() {
        let r = |a: &str, b: &str| relative_path(Path::new(a), Path::new(b)).unwrap();
        assert_eq!(r("/s/x", "/s/x/1.vhd"), "./1.vhd");
        assert_eq!(r("/s/x", "/s/y/1.vhd"), "../y/1.vhd");
        assert_eq!(r("/s/x/z", "/s/1.vhd"), "../../1.vhd");
        assert_eq!(r("/", "/1.vhd"), "./1.vhd");
    }

    #[test]
    fn padding_is_at_least_a_sector() {
        assert_eq!(bytes_padded(0), 512);
        assert_eq!(bytes_padded(17), 512);
        assert_eq!(bytes_padded(513), 1024);
    }
}
