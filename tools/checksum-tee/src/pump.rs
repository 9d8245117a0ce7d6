//! The pass over the bytes: read big chunks, hand each (shared, not
//! copied) to every hashing thread, write it downstream and to the output
//! files, and stop cleanly on errors and signals.

use crate::caches::CacheTemp;
use bytes::BytesMut;
use std::fmt;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use system::atomic::AtomicFile;
use system::hash::{Algorithm, MultiHasher};

/// Bytes read per chunk: large reads keep syscalls and channel traffic
/// negligible next to hashing (measured: 1 MiB beat 256 KiB here); a few
/// chunks in flight bound memory.
pub const CHUNK: usize = 1 << 20;

/// What the stream should have been ([`system::hash::Expected`]).
pub use system::hash::Expected;

/// `Some(true)` all match, `Some(false)` some do not (listed), `None`
/// nothing was expected: never a silent "verified".
pub fn verdict(expected: &Expected, out: &Outcome) -> (Option<bool>, Vec<String>) {
    if expected.is_empty() {
        return (None, Vec::new());
    }
    if out.overrun {
        // Only a prefix was read: its digests prove nothing either way.
        return (Some(false), vec!["size".to_string()]);
    }
    let mismatch: Vec<String> = expected
        .mismatches(out.bytes, &out.digests)
        .iter()
        .map(|m| m.name().to_string())
        .collect();
    (Some(mismatch.is_empty()), mismatch)
}

pub use crate::fault::Fault;

/// Why the pass did not complete.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PumpError {
    /// Reading the input failed.
    Input(Fault),
    /// Writing an output file failed.
    Output(Fault),
    /// The downstream reader went away before the end.
    DownstreamClosed,
}

impl fmt::Display for PumpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PumpError::Input(e) => write!(f, "reading the input failed: {e}"),
            PumpError::Output(e) => write!(f, "writing an output failed: {e}"),
            PumpError::DownstreamClosed => {
                f.write_str("the reader of stdout stopped before the end; nothing committed (--drain finishes instead)")
            }
        }
    }
}

/// Where a sink's bytes go: an atomic output file (sink mode) or a
/// cache's own temporary file, written relative to its pinned directory.
pub enum SinkFile {
    /// `-o FILE`.
    Atomic(AtomicFile),
    /// Glance's `incomplete/<id>`, Nova's `<name>.part`.
    Cache(CacheTemp),
}

impl Write for SinkFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            SinkFile::Atomic(f) => f.write(buf),
            SinkFile::Cache(f) => f.write(buf),
        }
    }
    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        match self {
            SinkFile::Atomic(f) => f.write_all(buf),
            SinkFile::Cache(f) => f.write_all(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match self {
            SinkFile::Atomic(f) => f.flush(),
            SinkFile::Cache(f) => f.flush(),
        }
    }
}

/// An output file being written atomically.
pub struct Sink {
    file: SinkFile,
    /// Where it goes when committed (a cache's: where it is written).
    pub path: PathBuf,
    /// Set when a write failed (the file is then never committed).
    pub error: Option<Fault>,
}

impl Sink {
    /// A temporary file next to `path`; an existing `path` is refused
    /// unless `force`.
    pub fn create(path: &Path, force: bool) -> io::Result<Sink> {
        // A run killed before its rename left its temp behind: gone now.
        system::atomic::remove_stale_temps(path);
        Ok(Sink {
            file: SinkFile::Atomic(AtomicFile::create(path, force)?),
            path: path.to_owned(),
            error: None,
        })
    }

    /// Write into a cache's own temporary file.
    pub fn from_cache(file: CacheTemp) -> Sink {
        Sink {
            path: file.path(),
            file: SinkFile::Cache(file),
            error: None,
        }
    }

    /// The file, for a cache's own commit.
    pub fn into_file(self) -> SinkFile {
        self.file
    }

    /// Move into place (fsync, rename, fsync the directory).
    pub fn commit(self) -> io::Result<PathBuf> {
        match self.file {
            SinkFile::Atomic(f) => f.commit(),
            // Caches commit through their own state machines.
            SinkFile::Cache(f) => {
                f.abort()?;
                Err(io::Error::other("a cache file is committed by its cache"))
            }
        }
    }

    /// Remove the temporary file.
    pub fn abort(self) -> io::Result<()> {
        match self.file {
            SinkFile::Atomic(f) => f.abort(),
            SinkFile::Cache(f) => f.abort(),
        }
    }
}

/// What the pass did.
pub struct Outcome {
    /// Bytes read from the input.
    pub bytes: u64,
    /// Hex digests.
    pub digests: Vec<(Algorithm, String)>,
    /// What went wrong, first first.
    pub errors: Vec<PumpError>,
    /// The output files, to commit or abort.
    pub sinks: Vec<Sink>,
    /// The input reached its end.
    pub eof: bool,
    /// The downstream reader went away (with --drain the pass went on).
    pub downstream_closed: bool,
    /// A signal stopped the pass.
    pub signal: Option<i32>,
    /// Reading stopped once past the size limit (a size mismatch).
    pub overrun: bool,
}

impl Outcome {
    /// Whole input read, no error, no signal.
    pub fn complete(&self) -> bool {
        self.eof && self.errors.is_empty() && self.signal.is_none()
    }
}

/// Read up to a chunk, retrying short reads (pipes deliver 64 KiB at a
/// time) so each chunk is large; stop at EOF or on a signal.
fn fill(input: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match input.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) => {
                // A signal-stopped read (EINTR, or system::files' refusal of
                // kind interrupted) ends the chunk; the caller sees the signal.
                if system::signal::pending().is_some() {
                    break;
                }
                if e.kind() != io::ErrorKind::Interrupted {
                    return Err(e);
                }
            }
        }
    }
    Ok(n)
}

/// Pass `input` through the hashes, to `passthrough` and to `sinks`.
/// `drain`: keep going after the downstream reader left; `best_effort`:
/// keep serving the downstream reader after an output file failed;
/// `limit`: stop once more than this many bytes were read (with
/// `best_effort` and a reader of the bytes, only the files stop: every
/// byte still reaches the reader); `meter`: counts the bytes read (it
/// draws only on a terminal).
#[allow(clippy::too_many_arguments)]
pub fn pump(
    mut input: impl Read,
    mut passthrough: Option<Box<dyn Write>>,
    mut sinks: Vec<Sink>,
    algorithms: &[Algorithm],
    drain: bool,
    best_effort: bool,
    limit: Option<u64>,
    meter: &mut system::progress::Progress,
) -> Outcome {
    let mut hasher = MultiHasher::new(algorithms);
    let mut errors = Vec::new();
    let mut eof = false;
    let mut downstream_closed = false;
    let mut signal = None;
    let mut overrun = false;
    let mut files_stopped = false;
    loop {
        if let Some(s) = system::signal::pending() {
            signal = Some(s);
            break;
        }
        let mut buf = BytesMut::zeroed(CHUNK);
        let n = match fill(&mut input, &mut buf) {
            Ok(n) => n,
            Err(e) => {
                errors.push(PumpError::Input((&e).into()));
                break;
            }
        };
        if n == 0 {
            eof = system::signal::pending().is_none();
            if !eof {
                signal = system::signal::pending();
            }
            break;
        }
        buf.truncate(n);
        meter.add(n as u64);
        let chunk = buf.freeze();
        hasher.update(&chunk);
        if let Some(out) = passthrough.as_mut()
            && let Err(e) = out.write_all(&chunk).and_then(|()| out.flush())
        {
            if e.kind() != io::ErrorKind::BrokenPipe {
                errors.push(PumpError::Output(Fault::io("stdout", &e)));
                break;
            }
            downstream_closed = true;
            passthrough = None;
            if !drain {
                break;
            }
        }
        if limit.is_some_and(|l| hasher.bytes() > l) {
            if best_effort && passthrough.is_some() {
                // The files can no longer verify: stop writing them, keep
                // serving the reader.
                files_stopped = true;
            } else {
                overrun = true;
                break;
            }
        }
        for s in sinks
            .iter_mut()
            .filter(|s| s.error.is_none() && !files_stopped)
        {
            if let Err(e) = s.file.write_all(&chunk) {
                s.error = Some(Fault::io(s.path.display(), &e));
            }
        }
        if let Some(e) = sinks.iter().find_map(|s| s.error.clone())
            && (passthrough.is_none() || !best_effort)
        {
            // A failed output ends the pass, unless the bytes still have a
            // reader and the caller asked to keep serving it (Glance's
            // best-effort cache).
            errors.push(PumpError::Output(e));
            break;
        }
    }
    if downstream_closed && !drain && !sinks.is_empty() {
        errors.push(PumpError::DownstreamClosed);
    }
    let bytes = hasher.bytes();
    Outcome {
        bytes,
        digests: hasher.finish(),
        errors,
        sinks,
        eof,
        downstream_closed,
        signal,
        overrun,
    }
}
