//! `flatten`: a XenServer tarball (or a chain directory) to one dynamic VHD
//! with the leaf's virtual size and no parent (notes/vhd.md section 6).
//!
//! Steps, nothing renamed into place unless all of them succeed:
//! 1. the output's temporary file is created first
//!    ([`AtomicFile::create`]), so an existing output is refused (unless
//!    `overwrite`) before any work; then the leftovers of crashed runs
//!    for the same output (scratch directories and temporary files whose
//!    pid is no running process) are removed and counted
//!    ([`Flattened::stale_removed`]);
//! 2. a tarball is extracted safely ([`crate::extract::extract`]) into a
//!    scratch directory `.<outname>.scratch-<pid>` next to the output,
//!    removed at the end whatever happens;
//! 3. the chain is found ([`crate::discover`]) and opened
//!    ([`read::Chain::open`]: linkage by UUID is checked);
//! 4. its virtual disk is copied block by block into a [`DynamicWriter`]
//!    (creator `tap\0`, hidden 0, zero blocks unallocated); blocks no
//!    member holds are neither read nor written, so the cost follows the
//!    allocated data, not the virtual size;
//! 5. verification: a second thread reads every block back from the
//!    temporary file as soon as it is written (bitmap all ones, data into
//!    a [`BlockDigest`](crate::write::BlockDigest) compared with the
//!    writer's), and the finished file is opened as a VHD: its BAT must be
//!    the writer's, its size the chain's, and it must pass
//!    [`crate::check`]; any difference is [`FlattenError::Mismatch`]
//!    ([`ErrorKind::Internal`]);
//! 6. commit: fsync, rename (never replacing without `overwrite`), fsync
//!    the directory.
//!
//! Memory stays constant: one 2 MiB block, the BAT (4 bytes per 2 MiB of
//! disk) and the reader's pieces.

use crate::read::{self, ReadError};
use crate::write::{BLOCK_SIZE, DynamicWriter, random_uuid};
use filter::ErrorKind;
use serde::Serialize;
use std::ffi::OsString;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use system::atomic::AtomicFile;
use system::files::FileId;

/// Blocks (of 2 MiB) written between two starts of writeback.
const WRITEBACK_BLOCKS: u64 = 16;

/// What `flatten` made.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Flattened {
    /// The VHD written.
    #[serde(serialize_with = "crate::lossy_path")]
    pub output: PathBuf,
    /// Members of the source chain.
    pub chain_length: usize,
    /// Virtual size in bytes (the leaf's `current_size`).
    pub virtual_size: u64,
    /// 2 MiB blocks holding data (all-zero blocks are left unallocated).
    pub blocks_allocated: u64,
    /// Size of the output file.
    pub bytes_written: u64,
    /// The [`BlockDigest`] of the virtual disk (XXH3-128 over its non-zero
    /// 2 MiB blocks and their indices), as written and as read back. For
    /// the SHA-256 of the raw disk: `vhd-chain cat OUT | checksum-tee`.
    pub block_digest: String,
    /// Leftovers of crashed runs for the same output removed before
    /// starting: scratch directories `.<outname>.scratch-<pid>` and
    /// temporary files `.<outname>.tmp-<pid>-<n>` whose process is gone.
    pub stale_removed: u64,
}

/// Why flattening failed. Nothing was left under the output name.
#[derive(Debug, thiserror::Error)]
pub enum FlattenError {
    /// The output could not be created, written or committed (an existing
    /// output without `overwrite` is `AlreadyExists`).
    #[error("{}: {source}", path.display())]
    Output {
        /// The output path.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
    /// The scratch directory could not be made.
    #[error("{}: scratch directory: {source}", path.display())]
    Scratch {
        /// The scratch directory.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
    /// The tarball could not be extracted safely.
    #[error("extract: {0}")]
    Extract(#[from] crate::extract::ExtractError),
    /// No usable chain in the directory (no 0.vhd: `chain_empty`; a gap).
    #[error("{message}")]
    Discover {
        /// The kind discover gave.
        kind: ErrorKind,
        /// Its message.
        message: String,
    },
    /// The chain (or the written output, on verification) could not be
    /// read.
    #[error("{0}")]
    Read(#[from] ReadError),
    /// The output read back differs from what was written: a bug.
    #[error(
        "{}: verification failed: wrote block digest {written}, read back {read}",
        path.display()
    )]
    Mismatch {
        /// The output path.
        path: PathBuf,
        /// Block digest of the data written.
        written: String,
        /// Block digest of the output read back.
        read: String,
    },
}

impl FlattenError {
    /// The record's `error.kind`.
    pub fn kind(&self) -> ErrorKind {
        match self {
            FlattenError::Output { source, .. } => match source.kind() {
                io::ErrorKind::AlreadyExists => ErrorKind::AlreadyExists,
                _ => ErrorKind::from_io(source),
            },
            FlattenError::Scratch { source, .. } => ErrorKind::from_io(source),
            FlattenError::Extract(e) => e.kind(),
            FlattenError::Discover { kind, .. } => *kind,
            FlattenError::Read(e) => e.kind(),
            FlattenError::Mismatch { .. } => ErrorKind::Internal,
        }
    }
}

/// The pid in a scratch directory name `.<outname>.scratch-<pid>`.
fn parse_scratch_name(name: &std::ffi::OsStr, outname: &std::ffi::OsStr) -> Option<u32> {
    use std::os::unix::ffi::OsStrExt;
    let rest = name
        .as_bytes()
        .strip_prefix(b".")?
        .strip_prefix(outname.as_bytes())?
        .strip_prefix(b".scratch-")?;
    if rest.is_empty() || !rest.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(rest).ok()?.parse().ok()
}

/// Remove the leftovers of crashed flattens to `outname` in `parent`:
/// scratch directories (here) and temporary files
/// ([`system::atomic::remove_stale_temps`]) whose pid is not a running
/// process (never our own). Best effort: an entry that cannot be removed
/// is left alone. Nothing is done without `/proc` (no way to tell a live
/// pid from a dead one). Returns how many were removed.
fn remove_stale(parent: &Path, outname: &std::ffi::OsStr) -> u64 {
    let mut removed = system::atomic::remove_stale_temps(&parent.join(outname));
    let Ok(entries) = std::fs::read_dir(parent) else {
        return removed;
    };
    let me = std::process::id();
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = parse_scratch_name(&name, outname) else {
            continue;
        };
        if pid == me || system::atomic::pid_alive(pid) != Some(false) {
            continue;
        }
        // Directly in `parent` (read_dir's entries are), never followed.
        let path = parent.join(&name);
        let is_dir = std::fs::symlink_metadata(&path).is_ok_and(|m| m.file_type().is_dir());
        if is_dir && std::fs::remove_dir_all(&path).is_ok() {
            removed += 1;
        }
    }
    removed
}

/// The identities of what `source` names: the tarball (stdin's file for
/// `-`), or a chain directory's members.
fn input_ids(source: &Path) -> Vec<FileId> {
    if system::files::is_dash(source) {
        return FileId::of_stdio(0).into_iter().collect();
    }
    let mut files = vec![source.to_path_buf()];
    if source.is_dir() {
        files.extend(crate::discover(source).unwrap_or_default());
        files.extend(crate::ignored_members(source));
    }
    files
        .iter()
        .filter_map(|p| std::fs::metadata(p).ok())
        .map(|m| FileId::of_metadata(&m))
        .collect()
}

/// Reads written blocks back on its own thread: each bitmap must be all
/// ones, and the data goes into a [`BlockDigest`].
struct Verifier {
    tx: Option<std::sync::mpsc::Sender<Vec<(u64, u64, usize)>>>,
    handle: std::thread::JoinHandle<io::Result<String>>,
}

impl Verifier {
    fn start(path: &Path) -> io::Result<Verifier> {
        use std::os::unix::fs::FileExt;
        let file = std::fs::File::open(path)?;
        let (tx, rx) = std::sync::mpsc::channel::<Vec<(u64, u64, usize)>>();
        let handle = std::thread::spawn(move || {
            let mut digest = crate::write::BlockDigest::default();
            let mut buf = vec![0u8; (formats::vhd::SECTOR + BLOCK_SIZE) as usize];
            for batch in rx {
                for (index, off, valid) in batch {
                    file.read_exact_at(&mut buf, off)?;
                    let (bitmap, data) = buf.split_at(formats::vhd::SECTOR as usize);
                    if bitmap.iter().any(|b| *b != 0xff) {
                        return Err(io::Error::other(format!(
                            "block {index}: its bitmap reads back wrong"
                        )));
                    }
                    digest.add(index, &data[..valid.min(data.len())]);
                }
            }
            Ok(digest.finish())
        });
        Ok(Verifier {
            tx: Some(tx),
            handle,
        })
    }

    fn send(&self, batch: Vec<(u64, u64, usize)>) {
        if !batch.is_empty()
            && let Some(tx) = &self.tx
        {
            // A send fails only when the thread stopped on an error, which
            // finish() reports.
            let _ = tx.send(batch);
        }
    }

    /// Wait for the thread; the digest of everything it read back.
    fn finish(mut self) -> io::Result<String> {
        drop(self.tx.take());
        self.handle
            .join()
            .unwrap_or_else(|_| Err(io::Error::other("the verifier thread panicked")))
    }
}

/// A scratch directory removed (with its contents) when dropped.
struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Flatten `source` (a `.tgz`/`.tar` XenServer tarball, or a directory
/// holding `0.vhd` ...) into one dynamic VHD at `output` (module docs).
/// An output that is one of the inputs (the tarball, a member of the
/// chain directory) is refused, `same_file`; extraction has the default
/// bounds.
pub fn flatten(source: &Path, output: &Path, overwrite: bool) -> Result<Flattened, FlattenError> {
    flatten_with(
        source,
        output,
        &Options {
            overwrite,
            ..Options::default()
        },
    )
}

/// How to flatten.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Replace an existing output file (a regular file only).
    pub overwrite: bool,
    /// The output is the source tarball itself, on purpose (`--replace`).
    pub replacing: bool,
    /// Bounds on the extraction of a tarball (the free space of the
    /// output's filesystem bounds it too).
    pub limits: crate::extract::Limits,
    /// Show the extraction and the copy on a terminal (not `-q`).
    pub progress: bool,
}

/// [`flatten`] with [`Options`].
pub fn flatten_with(
    source: &Path,
    output: &Path,
    opts: &Options,
) -> Result<Flattened, FlattenError> {
    let overwrite = opts.overwrite || opts.replacing;
    let out_err = |source| FlattenError::Output {
        path: output.to_path_buf(),
        source,
    };
    if !opts.replacing {
        system::files::check_output(output, overwrite, &input_ids(source)).map_err(out_err)?;
    }
    let mut atomic = AtomicFile::create(output, overwrite).map_err(out_err)?;
    let stale_removed = match (output.parent(), output.file_name()) {
        (Some(p), Some(name)) if !p.as_os_str().is_empty() => remove_stale(p, name),
        (_, Some(name)) => remove_stale(Path::new("."), name),
        _ => 0,
    };

    // The scratch directory lives as long as the chain is being read.
    let mut _scratch = None;
    let dir = if source.is_dir() {
        source.to_path_buf()
    } else {
        let name = output.file_name().ok_or_else(|| {
            out_err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "the output has no file name",
            ))
        })?;
        let mut scratch_name = OsString::from(".");
        scratch_name.push(name);
        scratch_name.push(format!(".scratch-{}", std::process::id()));
        let parent = match output.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        let path = parent.join(scratch_name);
        std::fs::create_dir(&path).map_err(|source| FlattenError::Scratch {
            path: path.clone(),
            source,
        })?;
        let guard = Scratch(path.clone());
        crate::extract::extract_vhds(source, &path, &opts.limits, opts.progress)?;
        _scratch = Some(guard);
        path
    };
    // Members opened relative to the directory, never through a link;
    // these handles are the ones read.
    let members = crate::member::ChainDir::open(&dir)
        .and_then(|c| c.open_all())
        .map_err(|(kind, message)| FlattenError::Discover { kind, message })?;
    let chain_length = members.len();
    let mut chain =
        read::Chain::from_files(members.into_iter().map(|m| (m.path, m.file)).collect())?;
    let size = chain.virtual_size();

    let uuid = random_uuid().map_err(out_err)?;
    let temp = atomic.temp_path().to_path_buf();
    // The verifier reads each block back from the file as soon as it is
    // written, on its own thread, while the rest is still being copied.
    let verifier = Verifier::start(&temp).map_err(out_err)?;
    let mut writer = DynamicWriter::new(atomic.file(), size, uuid, formats::vhd::timestamp_now())
        .map_err(out_err)?;
    // Holes (no member holds a block there) cost neither reads nor writes.
    // Writeback is started every WRITEBACK_BLOCKS blocks written, so the
    // disk works while we do and the final fsync has little left.
    let mut kicked = 0;
    let label = format!("flattening into {}", output.display());
    let mut meter = system::progress::Progress::new(&label, Some(size), opts.progress);
    let copied = chain.for_each_piece(BLOCK_SIZE, |_, data, len| {
        system::signal::check().map_err(out_err)?;
        meter.add(len);
        match data {
            Some(d) => writer.write_all(d).map_err(out_err)?,
            None => writer.write_hole(len).map_err(out_err)?,
        }
        verifier.send(writer.take_placed());
        if writer.allocated() >= kicked + WRITEBACK_BLOCKS {
            kicked = writer.allocated();
            system::atomic::start_writeback(writer.get_ref());
        }
        Ok::<(), FlattenError>(())
    });
    let finished = copied.and_then(|()| {
        let mut w = writer;
        w.end_data().map_err(out_err)?;
        let bat = w.bat().to_vec();
        let placed = w.take_placed();
        let (_, written) = w.finish().map_err(out_err)?;
        verifier.send(placed);
        Ok((bat, written))
    });
    drop(meter);
    // Always stop the verifier before leaving.
    let read_back = verifier.finish();
    let (bat, written) = finished?;
    drop(chain);
    drop(_scratch);

    // The blocks read back hash as written; the file, opened as a VHD,
    // has the writer's BAT and size and passes XenServer's checks.
    let mismatch = |read: String| FlattenError::Mismatch {
        path: output.to_path_buf(),
        written: written.block_digest.clone(),
        read,
    };
    let read_sha = read_back.map_err(out_err)?;
    if read_sha != written.block_digest {
        return Err(mismatch(read_sha));
    }
    let back = read::Chain::open(std::slice::from_ref(&temp))?;
    let layout = std::fs::File::open(&temp)
        .map_err(out_err)
        .map(|f| crate::layout::Layout::read(&f))?;
    let structure_ok = back.virtual_size() == size
        && layout.is_ok_and(|l| l.bat == bat)
        && crate::check::check_file(&temp, &crate::check::Options::default())
            .is_ok_and(|r| r.valid);
    if !structure_ok {
        return Err(mismatch(
            "a BAT, size or metadata different from what was written".into(),
        ));
    }
    drop(back);
    let output = atomic.commit().map_err(out_err)?;
    Ok(Flattened {
        output,
        chain_length,
        virtual_size: size,
        blocks_allocated: written.blocks_allocated,
        bytes_written: written.file_size,
        block_digest: written.block_digest,
        stale_removed,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::ffi::OsStr;

    #[test]
    fn scratch_names() {
        let out = OsStr::new("out.vhd");
        let p = |n: &str| parse_scratch_name(OsStr::new(n), out);
        assert_eq!(p(".out.vhd.scratch-123"), Some(123));
        for bad in [
            "out.vhd.scratch-123",
            ".out.vhd.scratch-",
            ".out.vhd.scratch-12x",
            ".out.vhd.scratch--1",
            ".other.vhd.scratch-1",
            ".out.vhd.tmp-1-2",
            ".out.vhd.scratch-99999999999",
        ] {
            assert_eq!(p(bad), None, "{bad}");
        }
    }

    #[test]
    fn stale_leftovers_of_dead_pids_only() {
        let t = tempfile::tempdir().unwrap();
        let d = t.path();
        // pid 0 is never a process; our own pid and pid 1 are alive.
        let me = std::process::id();
        std::fs::create_dir(d.join(".out.vhd.scratch-0")).unwrap();
        std::fs::write(d.join(".out.vhd.scratch-0/0.vhd"), b"x").unwrap();
        std::fs::write(d.join(".out.vhd.tmp-0-3"), b"x").unwrap();
        std::fs::create_dir(d.join(format!(".out.vhd.scratch-{me}"))).unwrap();
        std::fs::write(d.join(format!(".out.vhd.tmp-{me}-0")), b"x").unwrap();
        std::fs::write(d.join(".out.vhd.tmp-1-0"), b"x").unwrap();
        // Another output's leftovers, and a symlink posing as scratch.
        std::fs::write(d.join(".other.vhd.tmp-0-0"), b"x").unwrap();
        std::fs::create_dir(d.join("target")).unwrap();
        std::fs::write(d.join("target/keep"), b"x").unwrap();
        std::os::unix::fs::symlink(d.join("target"), d.join(".out.vhd.scratch-00")).unwrap();
        let removed = remove_stale(d, OsStr::new("out.vhd"));
        let mut left: Vec<String> = std::fs::read_dir(d)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        if !Path::new("/proc/self").exists() {
            assert_eq!(removed, 0);
            return;
        }
        assert_eq!(removed, 2, "{left:?}");
        let mut want = vec![
            format!(".out.vhd.scratch-{me}"),
            format!(".out.vhd.tmp-{me}-0"),
            ".out.vhd.tmp-1-0".to_string(),
            ".other.vhd.tmp-0-0".to_string(),
            ".out.vhd.scratch-00".to_string(),
            "target".to_string(),
        ];
        want.sort();
        assert_eq!(left, want);
        assert!(d.join("target/keep").exists());
    }
}
