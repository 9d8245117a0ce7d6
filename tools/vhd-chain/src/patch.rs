//! Applying a planned change to a file the user gave, crash-safely, in one
//! of two ways (issue: "work on a copy next to the target and rename it
//! into place; `--in-place` writes an undo journal first"):
//! - [`Mode::Copy`]: the file is copied to a temporary file next to it
//!   (`copy_file_range`, so a reflink or a server-side copy where the
//!   filesystem can), keeping its permission bits; the change is made
//!   there, fsynced and renamed over the target ([`AtomicFile`]). A crash
//!   leaves the old file or the new one. Needs room for a second copy.
//! - [`Mode::InPlace`]: for files too large to copy. The original bytes of
//!   every range the change overwrites go to an undo journal first
//!   ([`crate::journal`]); the VHD footers are then poisoned (`v_poison`,
//!   as vhd-util does, so that no VHD reader uses a half-changed file), the
//!   change is written, the footers last, and the journal removed. A re-run
//!   after a crash finds the journal and rolls the file back first.
//!
//! In both modes the target is opened once ([`Target`]): the handle the
//! change was planned from is the one copied or written, it must still be
//! unchanged (size, mtime) before anything is written, and the copy
//! replaces the name only by an atomic exchange checked afterwards (a file
//! put at that name meanwhile is put back, never replaced).

use crate::journal::{self, Journal, JournalError, Rollback};
use crate::member::Target;
use filter::ErrorKind;
use std::fs::File;
use std::io::{self, Seek, SeekFrom};
use std::os::unix::fs::{FileExt, PermissionsExt};
use std::path::{Path, PathBuf};
use system::atomic::AtomicFile;

/// How to change the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode<'a> {
    /// Copy, change the copy, rename it over the target.
    Copy,
    /// Change the file itself, under this undo journal.
    InPlace {
        /// The journal's path.
        journal: &'a Path,
    },
}

/// A change: byte writes, applied in order (a later one wins where they
/// overlap), and the file's new length.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Edit {
    /// (offset, bytes).
    pub writes: Vec<(u64, Vec<u8>)>,
    /// The length afterwards (the file is extended with zeros or cut).
    pub new_len: u64,
    /// Offsets of footers (cookie first) to poison while an in-place
    /// change is under way; the writes must rewrite them.
    pub poison: Vec<u64>,
}

/// Why the change was not made. The target is unchanged (or, for a
/// failure after the journal was written, restorable by a re-run).
#[derive(Debug, thiserror::Error)]
pub enum PatchError {
    /// I/O on the target, its copy or the journal.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
    /// The target changed (or was replaced) since the change was planned.
    #[error("{}: changed while being worked on; nothing was written", path.display())]
    Changed {
        /// The target.
        path: PathBuf,
    },
    /// The journal could not be written or used.
    #[error(transparent)]
    Journal(#[from] JournalError),
    /// The changed file failed its check; it was not put in place (or was
    /// rolled back).
    #[error("{}: verification failed, nothing changed: {why}", path.display())]
    Verify {
        /// The target.
        path: PathBuf,
        /// What the check found.
        why: String,
    },
}

impl PatchError {
    /// The record's `error.kind`.
    pub fn kind(&self) -> ErrorKind {
        match self {
            PatchError::Io { source, .. } => ErrorKind::from_io(source),
            PatchError::Changed { .. } => ErrorKind::Changed,
            PatchError::Journal(e) => e.kind(),
            PatchError::Verify { .. } => ErrorKind::Internal,
        }
    }
}

fn io_at(path: &Path) -> impl FnOnce(io::Error) -> PatchError + '_ {
    move |source| PatchError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Roll back an interrupted in-place change of `target` if `journal`
/// exists (a re-run's first step).
pub fn recover(journal: &Path, target: &Path) -> Result<Rollback, PatchError> {
    Ok(journal::rollback(journal, target)?)
}

/// A check of the changed file before it replaces the target or its
/// journal is dropped: a path for messages, and the open file to read
/// (the copy, or the target itself).
pub type Verify<'a> = &'a dyn Fn(&Path, &File) -> Result<(), String>;

/// The ranges an in-place `edit` overwrites (within the old length), for
/// its journal.
fn edit_ranges(edit: &Edit, old_len: u64) -> Vec<(u64, u64)> {
    let mut ranges: Vec<(u64, u64)> = edit
        .writes
        .iter()
        .map(|(o, d)| (*o, d.len() as u64))
        .collect();
    if edit.new_len < old_len {
        ranges.push((edit.new_len, old_len - edit.new_len));
    }
    ranges
}

/// Apply `edit` to `target` (opened and judged: the plan was made from
/// its handle) and `verify` the result before it counts (module docs).
pub fn apply(target: &Target, edit: &Edit, mode: Mode, verify: Verify) -> Result<(), PatchError> {
    let ranges = edit_ranges(edit, target.status.size);
    let crash_after = std::env::var(CRASH_HOOK).ok().and_then(|v| v.parse().ok());
    let mut work = |f: &File| match mode {
        Mode::Copy => write_edit(f, edit),
        Mode::InPlace { .. } => write_edit_with(f, edit, crash_after),
    };
    apply_with(target, mode, &ranges, &edit.poison, &mut work, verify)
}

/// The general form of [`apply`]: `work` changes the file it is given
/// (the copy, or the target itself under a journal of `ranges`, after
/// the footers at `poison` were poisoned; it must rewrite them), then
/// `verify` checks the result before it counts.
pub fn apply_with(
    target: &Target,
    mode: Mode,
    ranges: &[(u64, u64)],
    poison: &[u64],
    work: &mut dyn FnMut(&File) -> io::Result<()>,
    verify: Verify,
) -> Result<(), PatchError> {
    // Between judging the file and the first write: a test swaps or
    // changes it here.
    system::hook::point("vhd-chain.before_write");
    // The handle judged is the one copied or written; it must still be
    // what was judged (size, mtime), or nothing is written.
    target.unchanged().map_err(|_| PatchError::Changed {
        path: target.path.clone(),
    })?;
    match mode {
        Mode::Copy => apply_copy(target, work, verify),
        Mode::InPlace { journal } => apply_in_place(target, ranges, poison, work, journal, verify),
    }
}

/// Crash here (abort, no cleanup) when the test hook asks for a crash
/// before write number `i` of an in-place change ([`CRASH_HOOK`]).
pub fn crash_point(i: usize) {
    thread_local! {
        static AT: Option<usize> = std::env::var(CRASH_HOOK).ok().and_then(|v| v.parse().ok());
    }
    if AT.with(|a| *a == Some(i)) {
        std::process::abort();
    }
}

fn apply_copy(
    target: &Target,
    work: &mut dyn FnMut(&File) -> io::Result<()>,
    verify: Verify,
) -> Result<(), PatchError> {
    let path = &target.path;
    let changed = || PatchError::Changed { path: path.clone() };
    // The copy is made in the target's own directory (its pinned handle,
    // whatever the path names now).
    let temp_at = target.dir.pinned_path(&target.name).map_err(io_at(path))?;
    // A crashed earlier run's copy is garbage now.
    system::atomic::remove_stale_temps(&temp_at);
    let mut out = AtomicFile::create(&temp_at, true).map_err(io_at(path))?;
    let perm = target.file.metadata().map_err(io_at(path))?.permissions();
    let perm = std::fs::Permissions::from_mode(perm.mode() & 0o7777);
    out.file().set_permissions(perm).map_err(io_at(path))?;
    // The whole judged file, from offset 0 (std uses copy_file_range).
    let mut src = &target.file;
    src.seek(SeekFrom::Start(0)).map_err(io_at(path))?;
    let copied = io::copy(&mut src, out.file()).map_err(io_at(path))?;
    if copied != target.status.size {
        return Err(changed());
    }
    system::signal::check()
        .and_then(|()| work(out.file()))
        .map_err(io_at(path))?;
    verify(path, out.file()).map_err(|why| PatchError::Verify {
        path: path.clone(),
        why,
    })?;
    // Put in place only over the file judged and copied, unchanged: the
    // names are exchanged and what came out is checked (another file given
    // that name is put back, never replaced).
    target.unchanged().map_err(|_| changed())?;
    match out.replace_in(&target.dir, &target.name, &target.status) {
        Ok(()) => Ok(()),
        Err(e) if ErrorKind::from_io(&e) == ErrorKind::Changed => Err(changed()),
        Err(e) => Err(io_at(path)(e)),
    }
}

/// Test hook, as vhd-util's `VHD_UTIL_TEST_FAIL_*`: with
/// `VHD_CHAIN_TEST_CRASH_AFTER_WRITES=N` set, an in-place change aborts the
/// process (no cleanup, like a crash or SIGKILL) after its first N writes
/// reached the file, so tests can prove the journal's rollback.
const CRASH_HOOK: &str = "VHD_CHAIN_TEST_CRASH_AFTER_WRITES";

fn write_edit_with(f: &File, edit: &Edit, crash_after: Option<usize>) -> io::Result<()> {
    for (i, (off, data)) in edit.writes.iter().enumerate() {
        if crash_after == Some(i) {
            let _ = f.sync_data();
            std::process::abort();
        }
        system::signal::check()?;
        f.write_all_at(data, *off)?;
    }
    f.set_len(edit.new_len)
}

/// Write `edit` into `f`.
pub fn write_edit(f: &File, edit: &Edit) -> io::Result<()> {
    write_edit_with(f, edit, None)
}

fn apply_in_place(
    target: &Target,
    ranges: &[(u64, u64)],
    poison: &[u64],
    work: &mut dyn FnMut(&File) -> io::Result<()>,
    journal: &Path,
    verify: Verify,
) -> Result<(), PatchError> {
    let path = &target.path;
    let f = &target.file;
    let mut ranges = ranges.to_vec();
    ranges.extend(poison.iter().map(|&o| (o, 8)));
    let j = Journal::begin(journal, path, f, &ranges)?;
    let done = (|| -> io::Result<()> {
        for &off in poison {
            f.write_all_at(&formats::vhd::POISON_COOKIE, off)?;
        }
        f.sync_data()?;
        work(f)
    })()
    .map_err(io_at(path))
    .and_then(|()| {
        verify(path, f).map_err(|why| PatchError::Verify {
            path: path.clone(),
            why,
        })
    });
    match done {
        Ok(()) => Ok(j.commit(f)?),
        Err(e) => {
            // Undo now rather than leave a poisoned file; if even that
            // fails, the journal stays for the next run.
            drop(j);
            let _ = journal::rollback(journal, path);
            Err(e)
        }
    }
}
