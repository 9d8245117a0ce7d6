//! An undo journal for changing a file in place (`--in-place`): what
//! `vhd-util resize -j` and `vhd-util revert` do (notes/vhd.md section
//! 3.3), in a portable format of our own.
//!
//! Protocol:
//! 1. [`Journal::begin`]: before the first write, the original bytes of every
//!    range about to be overwritten (clipped to the file's current length:
//!    what is appended needs no undo) and the original length are written
//!    to a temporary file beside the journal, fsynced, and renamed to the
//!    journal's name without replacing anything (`RENAME_NOREPLACE`), so a
//!    file under the journal's name is always a complete journal (an
//!    existing one is a crashed run's: [`rollback`] it first);
//! 2. the caller writes into the file;
//! 3. [`Journal::commit`]: the file is fsynced, then the journal removed and
//!    its directory fsynced.
//!
//! After a crash between 1 and 3, [`rollback`] writes the saved bytes back,
//! truncates the file to its old length, fsyncs it and removes the journal:
//! the file is byte-for-byte what it was. A crash during step 1 leaves only
//! the temporary file (swept by the next run, its writer being dead).
//!
//! The journal's name is the user's to give (`--journal`), so whatever is
//! there is judged before anything is done with it, and only a complete,
//! intact journal recording this very file (its device and inode) is ever
//! applied or removed. Anything else there (a file of the user's, one of
//! ours for another file, a torn one, a directory, a symlink) is refused
//! with kind `already_exists` and left untouched; the image itself (or a
//! hard link to it) as its own journal is `same_file`.
//!
//! Format (all integers big-endian): the magic `VHD-CHAIN-UNDO-1`
//! (16 bytes), the target's device, inode and original length, the number
//! of entries (u64 each); each entry its offset and length (u64, u64) and
//! the original bytes; then `END!` and the XXH3-128 of everything before
//! it (16 bytes).

use std::fs::{File, Metadata, OpenOptions};
use std::io::{self, BufWriter, Read, Write};
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use system::atomic::AtomicFile;
use system::files::FileId;

const MAGIC: &[u8; 16] = b"VHD-CHAIN-UNDO-1";
const TRAILER: &[u8; 4] = b"END!";
/// The most original bytes one journal saves (4 GiB): more is refused
/// before anything is written.
pub const MAX_SAVED: u64 = 4 << 30;

/// Why journaling failed.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    /// Reading or writing the journal or the file failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The journal or the file.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
    /// Something that is not a journal of this file is where the journal
    /// would go: it was left alone.
    #[error("journal {}: {why}; it was left alone", path.display())]
    Occupied {
        /// The journal's path.
        path: PathBuf,
        /// What is there.
        why: String,
    },
    /// The journal's path names the file being changed.
    #[error("journal {} is the file being changed itself", path.display())]
    IsTarget {
        /// The journal's path.
        path: PathBuf,
    },
    /// The ranges would need more than [`MAX_SAVED`] bytes of journal.
    #[error("{}: {bytes} bytes to journal is more than {MAX_SAVED}", path.display())]
    TooLarge {
        /// The file.
        path: PathBuf,
        /// Bytes the journal would hold.
        bytes: u64,
    },
}

impl JournalError {
    /// The record's `error.kind`.
    pub fn kind(&self) -> filter::ErrorKind {
        match self {
            JournalError::Io { source, .. } => filter::ErrorKind::from_io(source),
            JournalError::Occupied { .. } => filter::ErrorKind::AlreadyExists,
            JournalError::IsTarget { .. } => filter::ErrorKind::SameFile,
            JournalError::TooLarge { .. } => filter::ErrorKind::LimitExceeded,
        }
    }
}

fn io_at(path: &Path) -> impl FnOnce(io::Error) -> JournalError + '_ {
    move |source| JournalError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn parent_dir(p: &Path) -> &Path {
    match p.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    }
}

/// Sort and merge `ranges` (offset, length), clipped to `len`.
fn normalize(ranges: &[(u64, u64)], len: u64) -> Vec<(u64, u64)> {
    let mut r: Vec<(u64, u64)> = ranges
        .iter()
        .filter(|(o, n)| *n > 0 && *o < len)
        .map(|&(o, n)| (o, o.saturating_add(n).min(len)))
        .collect();
    r.sort_unstable();
    let mut out: Vec<(u64, u64)> = Vec::with_capacity(r.len());
    for (s, e) in r {
        match out.last_mut() {
            Some(last) if s <= last.1 => last.1 = last.1.max(e),
            _ => out.push((s, e)),
        }
    }
    out.into_iter().map(|(s, e)| (s, e - s)).collect()
}

/// A journal covering writes in progress on one file.
#[derive(Debug)]
pub struct Journal {
    path: PathBuf,
    target: PathBuf,
    /// The journal file's identity, so that commit removes only it.
    id: FileId,
}

impl Journal {
    /// Save the original bytes of `ranges` of `file` (open read-write, at
    /// `target`) into a new journal at `path` (module docs, step 1).
    pub fn begin(
        path: &Path,
        target: &Path,
        file: &File,
        ranges: &[(u64, u64)],
    ) -> Result<Journal, JournalError> {
        let meta = file.metadata().map_err(io_at(target))?;
        let ranges = normalize(ranges, meta.len());
        let bytes: u64 = ranges.iter().map(|r| r.1).sum();
        if bytes > MAX_SAVED {
            return Err(JournalError::TooLarge {
                path: target.to_path_buf(),
                bytes,
            });
        }
        // Whatever is under the journal's name is never replaced.
        if inspect(path, Some(FileId::of_metadata(&meta)))?.is_some() {
            return Err(JournalError::Occupied {
                path: path.to_path_buf(),
                why: "a file is already there (a journal must not exist before a change)".into(),
            });
        }
        // A crashed earlier begin's temporary file is garbage.
        system::atomic::remove_stale_temps(path);
        let mut out = AtomicFile::create(path, false).map_err(|e| occupied_or_io(path, e))?;
        let written = (|| -> io::Result<()> {
            // It holds the image's bytes: readable by the owner only.
            out.file()
                .set_permissions(std::fs::Permissions::from_mode(0o600))?;
            let j: &File = out.file();
            let mut hasher = xxhash_rust::xxh3::Xxh3::new();
            let mut w = BufWriter::with_capacity(1 << 20, j);
            let mut put = |b: &[u8], w: &mut BufWriter<&File>| -> io::Result<()> {
                hasher.update(b);
                w.write_all(b)
            };
            put(MAGIC, &mut w)?;
            for v in [meta.dev(), meta.ino(), meta.len(), ranges.len() as u64] {
                put(&v.to_be_bytes(), &mut w)?;
            }
            let mut buf = vec![0u8; 1 << 20];
            for &(off, len) in &ranges {
                put(&off.to_be_bytes(), &mut w)?;
                put(&len.to_be_bytes(), &mut w)?;
                let mut done = 0u64;
                while done < len {
                    let n = (len - done).min(buf.len() as u64) as usize;
                    file.read_exact_at(&mut buf[..n], off + done)?;
                    put(&buf[..n], &mut w)?;
                    done += n as u64;
                }
            }
            w.write_all(TRAILER)?;
            w.write_all(&hasher.digest128().to_be_bytes())?;
            w.flush()
        })();
        // On error the temporary file is removed when `out` drops.
        written.map_err(io_at(path))?;
        // fsync, rename without replacing, fsync the directory.
        let id = FileId::of_file(out.file()).map_err(io_at(path))?;
        out.commit().map_err(|e| occupied_or_io(path, e))?;
        let journal = Journal {
            path: path.to_path_buf(),
            target: target.to_path_buf(),
            id,
        };
        Ok(journal)
    }

    /// The writes are done: fsync `file`, remove the journal, fsync its
    /// directory (module docs, step 3).
    pub fn commit(self, file: &File) -> Result<(), JournalError> {
        file.sync_all().map_err(io_at(&self.target))?;
        remove_if_same(&self.path, self.id)
    }
}

fn occupied(path: &Path, why: &str) -> JournalError {
    JournalError::Occupied {
        path: path.to_path_buf(),
        why: why.to_owned(),
    }
}

/// An error creating the journal: something appeared under its name
/// (kind `already_exists`), or another I/O error.
fn occupied_or_io(path: &Path, e: io::Error) -> JournalError {
    match filter::ErrorKind::from_io(&e) {
        filter::ErrorKind::AlreadyExists | filter::ErrorKind::NotRegular => {
            occupied(path, "a file appeared there while the journal was written")
        }
        _ => io_at(path)(e),
    }
}

/// What is under the journal's name: nothing (None), or a regular file
/// that is not the target (its metadata, to be judged by its content).
/// The target itself (a hard link, or the same name) is
/// [`JournalError::IsTarget`]; anything but a regular file is
/// [`JournalError::Occupied`]. Symlinks are not followed: a link is
/// refused whatever it points to.
fn inspect(path: &Path, target: Option<FileId>) -> Result<Option<Metadata>, JournalError> {
    let md = match std::fs::symlink_metadata(path) {
        Ok(md) => md,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_at(path)(e)),
    };
    if target == Some(FileId::of_metadata(&md)) {
        return Err(JournalError::IsTarget {
            path: path.to_path_buf(),
        });
    }
    if !md.is_file() {
        return Err(occupied(
            path,
            &format!(
                "a {} is there, not a vhd-chain journal",
                system::files::describe(&md)
            ),
        ));
    }
    Ok(Some(md))
}

/// Remove the journal, provided its name still holds the file that was
/// read (`id`), then fsync its directory.
fn remove_if_same(path: &Path, id: FileId) -> Result<(), JournalError> {
    let now = std::fs::symlink_metadata(path).map_err(io_at(path))?;
    if FileId::of_metadata(&now) != id {
        return Err(occupied(path, "it was replaced while being applied"));
    }
    std::fs::remove_file(path).map_err(io_at(path))?;
    system::atomic::sync_dir(parent_dir(path)).map_err(io_at(path))
}

/// What [`rollback`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Rollback {
    /// No journal: nothing to do.
    None,
    /// The file was restored from the journal, which was removed.
    Restored,
}

/// If the journal at `path` exists, undo the interrupted change of
/// `target` it records (module docs).
pub fn rollback(path: &Path, target: &Path) -> Result<Rollback, JournalError> {
    let target_id = std::fs::symlink_metadata(target)
        .ok()
        .map(|m| FileId::of_metadata(&m));
    let Some(seen) = inspect(path, target_id)? else {
        return Ok(Rollback::None);
    };
    let j = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
        .map_err(io_at(path))?;
    let opened = FileId::of_file(&j).map_err(io_at(path))?;
    if opened != FileId::of_metadata(&seen) {
        return Err(occupied(path, "it changed while being looked at"));
    }
    // Pass 1, in constant memory: is it a complete, intact journal? (A
    // file that does not start with the magic is rejected at once.)
    let Some(head) = check(&j).map_err(io_at(path))? else {
        return Err(occupied(
            path,
            "a file is there that is not a complete vhd-chain journal",
        ));
    };
    let Some(target_id) = target_id else {
        return Err(io_at(target)(io::Error::from(io::ErrorKind::NotFound)));
    };
    if (head.dev, head.ino) != (target_id.dev, target_id.ino) {
        return Err(occupied(
            path,
            "it is a journal of another file (device/inode differ)",
        ));
    }
    let file = OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(target)
        .map_err(io_at(target))?;
    let meta = file.metadata().map_err(io_at(target))?;
    if meta.dev() != head.dev || meta.ino() != head.ino {
        return Err(occupied(
            path,
            "it is a journal of another file (device/inode differ)",
        ));
    }
    // Pass 2: put the saved bytes back, a piece at a time.
    io::Seek::seek(&mut &j, io::SeekFrom::Start(0)).map_err(io_at(path))?;
    let mut r = io::BufReader::with_capacity(1 << 20, &j);
    let mut skip = [0u8; HEAD];
    r.read_exact(&mut skip).map_err(io_at(path))?;
    let mut buf = vec![0u8; 1 << 20];
    for _ in 0..head.count {
        let (off, len) = (
            read_u64(&mut r).map_err(io_at(path))?,
            read_u64(&mut r).map_err(io_at(path))?,
        );
        let mut done = 0u64;
        while done < len {
            let n = (len - done).min(buf.len() as u64) as usize;
            r.read_exact(&mut buf[..n]).map_err(io_at(path))?;
            file.write_all_at(&buf[..n], off + done)
                .map_err(io_at(target))?;
            done += n as u64;
        }
    }
    file.set_len(head.len).map_err(io_at(target))?;
    file.sync_all().map_err(io_at(target))?;
    remove_if_same(path, opened)?;
    Ok(Rollback::Restored)
}

/// Bytes before the first entry: magic, dev, ino, length, count.
const HEAD: usize = 16 + 4 * 8;

/// What a complete journal's head says.
struct Head {
    dev: u64,
    ino: u64,
    len: u64,
    count: u64,
}

fn read_u64(r: &mut impl Read) -> io::Result<u64> {
    let mut b = [0u8; 8];
    r.read_exact(&mut b)?;
    Ok(u64::from_be_bytes(b))
}

/// Read the journal through once: its head if it is complete (the
/// entries add up to the body, the trailer and digest match), None when
/// it is incomplete or damaged.
fn check(j: &File) -> io::Result<Option<Head>> {
    let total = j.metadata()?.len();
    let Some(body_len) = total.checked_sub((TRAILER.len() + 16) as u64) else {
        return Ok(None);
    };
    if body_len < HEAD as u64 {
        return Ok(None);
    }
    let mut r = io::BufReader::with_capacity(1 << 20, j);
    let mut hasher = xxhash_rust::xxh3::Xxh3::new();
    let mut head = [0u8; HEAD];
    r.read_exact(&mut head)?;
    hasher.update(&head);
    if &head[..16] != MAGIC {
        return Ok(None);
    }
    let field = |i: usize| {
        let mut b = [0u8; 8];
        b.copy_from_slice(&head[16 + 8 * i..24 + 8 * i]);
        u64::from_be_bytes(b)
    };
    let h = Head {
        dev: field(0),
        ino: field(1),
        len: field(2),
        count: field(3),
    };
    let mut at = HEAD as u64;
    let mut buf = vec![0u8; 1 << 20];
    for _ in 0..h.count {
        if at + 16 > body_len {
            return Ok(None);
        }
        let mut e = [0u8; 16];
        r.read_exact(&mut e)?;
        hasher.update(&e);
        let mut l = [0u8; 8];
        l.copy_from_slice(&e[8..]);
        let len = u64::from_be_bytes(l);
        at += 16;
        if len > body_len - at {
            return Ok(None);
        }
        let mut left = len;
        while left > 0 {
            let n = left.min(buf.len() as u64) as usize;
            r.read_exact(&mut buf[..n])?;
            hasher.update(&buf[..n]);
            left -= n as u64;
        }
        at += len;
    }
    if at != body_len {
        return Ok(None);
    }
    let mut tail = [0u8; 20];
    r.read_exact(&mut tail)?;
    let ok = &tail[..4] == TRAILER && tail[4..] == hasher.digest128().to_be_bytes();
    Ok(ok.then_some(h))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn ranges_are_clipped_sorted_and_merged() {
        assert_eq!(
            normalize(
                &[(10, 5), (0, 4), (12, 10), (100, 1), (3, 0), (95, 10)],
                100
            ),
            vec![(0, 4), (10, 12), (95, 5)]
        );
    }

    fn file_with(d: &Path, content: &[u8]) -> (PathBuf, File) {
        let p = d.join("f");
        std::fs::write(&p, content).unwrap();
        let f = OpenOptions::new().read(true).write(true).open(&p).unwrap();
        (p, f)
    }

    #[test]
    fn a_crash_after_writes_rolls_back_byte_for_byte() {
        let t = tempfile::tempdir().unwrap();
        let orig: Vec<u8> = (0..10_000u32).map(|i| (i * 7) as u8).collect();
        let (p, f) = file_with(t.path(), &orig);
        let jp = t.path().join("j");
        let j = Journal::begin(&jp, &p, &f, &[(0, 512), (9_000, 2_000)]).unwrap();
        f.write_all_at(&[0xee; 512], 0).unwrap();
        f.write_all_at(&[0xdd; 3_000], 9_000).unwrap();
        // Crash: the journal is not committed.
        drop(j);
        assert_ne!(std::fs::read(&p).unwrap(), orig);
        assert_eq!(rollback(&jp, &p).unwrap(), Rollback::Restored);
        assert_eq!(std::fs::read(&p).unwrap(), orig);
        assert!(!jp.exists());
        assert_eq!(rollback(&jp, &p).unwrap(), Rollback::None);
    }

    #[test]
    fn commit_removes_the_journal_and_an_existing_one_blocks_begin() {
        let t = tempfile::tempdir().unwrap();
        let (p, f) = file_with(t.path(), &[1; 4096]);
        let jp = t.path().join("j");
        let j = Journal::begin(&jp, &p, &f, &[(0, 10)]).unwrap();
        assert!(Journal::begin(&jp, &p, &f, &[(0, 10)]).is_err());
        f.write_all_at(&[2; 10], 0).unwrap();
        j.commit(&f).unwrap();
        assert!(!jp.exists());
        assert_eq!(std::fs::read(&p).unwrap()[..10], [2; 10]);
    }

    fn kind(e: &JournalError) -> filter::ErrorKind {
        e.kind()
    }

    #[test]
    fn only_a_complete_journal_of_this_file_is_applied_or_removed() {
        let t = tempfile::tempdir().unwrap();
        let (p, f) = file_with(t.path(), &[1; 4096]);
        let jp = t.path().join("j");
        let j = Journal::begin(&jp, &p, &f, &[(0, 100)]).unwrap();
        drop(j);
        let full = std::fs::read(&jp).unwrap();
        // Torn or damaged: not ours to judge, left alone.
        let mut bad = full.clone();
        bad[40] ^= 1;
        for content in [&full[..0], &full[..10], &full[..full.len() / 2], &bad[..]] {
            std::fs::write(&jp, content).unwrap();
            let e = rollback(&jp, &p).unwrap_err();
            assert_eq!(kind(&e), filter::ErrorKind::AlreadyExists, "{e}");
            assert_eq!(std::fs::read(&jp).unwrap(), content);
        }
        // Another file (a new inode) with the same name.
        std::fs::write(&jp, &full).unwrap();
        std::fs::remove_file(&p).unwrap();
        std::fs::write(&p, [9; 4096]).unwrap();
        let e = rollback(&jp, &p).unwrap_err();
        assert_eq!(kind(&e), filter::ErrorKind::AlreadyExists, "{e}");
        assert_eq!(std::fs::read(&jp).unwrap(), full);
        assert_eq!(std::fs::read(&p).unwrap(), vec![9; 4096]);
        // The image itself, by its name or a hard link.
        let link = t.path().join("link");
        std::fs::hard_link(&p, &link).unwrap();
        for j in [&p, &link] {
            let e = rollback(j, &p).unwrap_err();
            assert_eq!(kind(&e), filter::ErrorKind::SameFile, "{e}");
            let f = OpenOptions::new().read(true).write(true).open(&p).unwrap();
            let e = Journal::begin(j, &p, &f, &[(0, 10)]).unwrap_err();
            assert_eq!(kind(&e), filter::ErrorKind::SameFile, "{e}");
        }
        assert_eq!(std::fs::read(&p).unwrap(), vec![9; 4096]);
        // A symlink, even to a journal, and a directory.
        let sl = t.path().join("sl");
        std::os::unix::fs::symlink(&jp, &sl).unwrap();
        let e = rollback(&sl, &p).unwrap_err();
        assert_eq!(kind(&e), filter::ErrorKind::AlreadyExists, "{e}");
        let e = rollback(t.path(), &p).unwrap_err();
        assert_eq!(kind(&e), filter::ErrorKind::AlreadyExists, "{e}");
        assert!(jp.exists() && sl.exists());
    }
}
