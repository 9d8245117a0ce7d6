//! An undo journal for changing a file in place (`--in-place`): what
//! `vhd-util resize -j` and `vhd-util revert` do (notes/vhd.md section
//! 3.3), in a portable format of our own.
//!
//! Protocol:
//! 1. [`Journal::begin`]: before the first write, the original bytes of every
//!    range about to be overwritten (clipped to the file's current length:
//!    what is appended needs no undo) and the original length are written
//!    to the journal file, which is created exclusively (an existing journal
//!    is a crashed run's: [`rollback`] it first), then fsynced with its
//!    directory;
//! 2. the caller writes into the file;
//! 3. [`Journal::commit`]: the file is fsynced, then the journal removed and
//!    its directory fsynced.
//!
//! After a crash between 1 and 3, [`rollback`] writes the saved bytes back,
//! truncates the file to its old length, fsyncs it and removes the journal:
//! the file is byte-for-byte what it was. A journal that is incomplete (a
//! crash while it was being written: no valid trailer) is removed without
//! touching the file, which had not been written yet. A journal made for
//! another file (device and inode differ) is refused, never applied.
//!
//! Format (all integers big-endian): the magic `VHD-CHAIN-UNDO-1`
//! (16 bytes), the target's device, inode and original length, the number
//! of entries (u64 each); each entry its offset and length (u64, u64) and
//! the original bytes; then `END!` and the XXH3-128 of everything before
//! it (16 bytes).

use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Read, Write};
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

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
    /// The journal belongs to another file.
    #[error(
        "{}: this journal was written for another file (device/inode differ); it was left alone",
        path.display()
    )]
    Foreign {
        /// The journal.
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
    pub fn kind(&self) -> common::ErrorKind {
        match self {
            JournalError::Io { source, .. } => common::ErrorKind::from_io(source),
            JournalError::Foreign { .. } => common::ErrorKind::Refused,
            JournalError::TooLarge { .. } => common::ErrorKind::LimitExceeded,
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
        let j = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(path)
            .map_err(io_at(path))?;
        let journal = Journal {
            path: path.to_path_buf(),
            target: target.to_path_buf(),
        };
        let written = (|| -> io::Result<()> {
            let mut hasher = xxhash_rust::xxh3::Xxh3::new();
            let mut w = BufWriter::with_capacity(1 << 20, &j);
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
            w.flush()?;
            drop(w);
            j.sync_all()?;
            common::atomic::sync_dir(parent_dir(path))
        })();
        if let Err(e) = written {
            let _ = std::fs::remove_file(path);
            return Err(JournalError::Io {
                path: path.to_path_buf(),
                source: e,
            });
        }
        Ok(journal)
    }

    /// The writes are done: fsync `file`, remove the journal, fsync its
    /// directory (module docs, step 3).
    pub fn commit(self, file: &File) -> Result<(), JournalError> {
        file.sync_all().map_err(io_at(&self.target))?;
        std::fs::remove_file(&self.path).map_err(io_at(&self.path))?;
        common::atomic::sync_dir(parent_dir(&self.path)).map_err(io_at(&self.path))
    }
}

/// What [`rollback`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Rollback {
    /// No journal: nothing to do.
    None,
    /// The journal was incomplete (the file had not been written): it was
    /// removed.
    Discarded,
    /// The file was restored from the journal, which was removed.
    Restored,
}

/// If the journal at `path` exists, undo the interrupted change of
/// `target` it records (module docs).
pub fn rollback(path: &Path, target: &Path) -> Result<Rollback, JournalError> {
    let mut j = match OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
    {
        Ok(j) => j,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Rollback::None),
        Err(e) => return Err(io_at(path)(e)),
    };
    let mut data = Vec::new();
    let limit = MAX_SAVED + (1 << 20);
    (&mut j)
        .take(limit)
        .read_to_end(&mut data)
        .map_err(io_at(path))?;
    let Some(entries) = parse(&data) else {
        // Incomplete or damaged: begin() had not finished, so the file was
        // never written.
        std::fs::remove_file(path).map_err(io_at(path))?;
        common::atomic::sync_dir(parent_dir(path)).map_err(io_at(path))?;
        return Ok(Rollback::Discarded);
    };
    let file = OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(target)
        .map_err(io_at(target))?;
    let meta = file.metadata().map_err(io_at(target))?;
    if meta.dev() != entries.dev || meta.ino() != entries.ino {
        return Err(JournalError::Foreign {
            path: path.to_path_buf(),
        });
    }
    for (off, bytes) in &entries.ranges {
        file.write_all_at(bytes, *off).map_err(io_at(target))?;
    }
    file.set_len(entries.len).map_err(io_at(target))?;
    file.sync_all().map_err(io_at(target))?;
    std::fs::remove_file(path).map_err(io_at(path))?;
    common::atomic::sync_dir(parent_dir(path)).map_err(io_at(path))?;
    Ok(Rollback::Restored)
}

struct Entries<'a> {
    dev: u64,
    ino: u64,
    len: u64,
    ranges: Vec<(u64, &'a [u8])>,
}

/// Reads fields off a byte slice, None past its end.
struct Cursor<'a> {
    data: &'a [u8],
    at: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let s = self.data.get(self.at..self.at.checked_add(n)?)?;
        self.at += n;
        Some(s)
    }

    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_be_bytes(self.take(8)?.try_into().ok()?))
    }
}

/// A complete journal's contents, or None when it is incomplete or
/// damaged (no trailer, a digest mismatch, lengths that do not add up).
fn parse(data: &[u8]) -> Option<Entries<'_>> {
    let body_len = data.len().checked_sub(TRAILER.len() + 16)?;
    let (body, tail) = data.split_at(body_len);
    let (trailer, digest) = tail.split_at(TRAILER.len());
    if trailer != TRAILER || xxhash_rust::xxh3::xxh3_128(body).to_be_bytes() != digest {
        return None;
    }
    let mut c = Cursor { data: body, at: 0 };
    if c.take(16)? != MAGIC {
        return None;
    }
    let dev = c.u64()?;
    let ino = c.u64()?;
    let len = c.u64()?;
    let count = c.u64()?;
    let mut ranges = Vec::new();
    for _ in 0..count {
        let off = c.u64()?;
        let n = usize::try_from(c.u64()?).ok()?;
        ranges.push((off, c.take(n)?));
    }
    let at = c.at;
    if at != body.len() {
        return None;
    }
    Some(Entries {
        dev,
        ino,
        len,
        ranges,
    })
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

    #[test]
    fn torn_journals_are_discarded_and_foreign_ones_refused() {
        let t = tempfile::tempdir().unwrap();
        let (p, f) = file_with(t.path(), &[1; 4096]);
        let jp = t.path().join("j");
        let j = Journal::begin(&jp, &p, &f, &[(0, 100)]).unwrap();
        drop(j);
        let full = std::fs::read(&jp).unwrap();
        for cut in [0, 10, full.len() / 2, full.len() - 1] {
            std::fs::write(&jp, &full[..cut]).unwrap();
            assert_eq!(rollback(&jp, &p).unwrap(), Rollback::Discarded, "{cut}");
            assert!(!jp.exists());
        }
        let mut bad = full.clone();
        bad[40] ^= 1;
        std::fs::write(&jp, &bad).unwrap();
        assert_eq!(rollback(&jp, &p).unwrap(), Rollback::Discarded);
        // Another file (a new inode) with the same name.
        std::fs::write(&jp, &full).unwrap();
        std::fs::remove_file(&p).unwrap();
        std::fs::write(&p, [9; 4096]).unwrap();
        assert!(matches!(
            rollback(&jp, &p),
            Err(JournalError::Foreign { .. })
        ));
        assert!(jp.exists());
        assert_eq!(std::fs::read(&p).unwrap(), vec![9; 4096]);
    }
}
