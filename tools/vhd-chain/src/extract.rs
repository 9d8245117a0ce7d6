//! Safe, streaming extraction of XenServer image tarballs.
//!
//! Upstream (Cinder) runs `tar -xzf IMAGE -C TMPDIR` on a tarball that came
//! from the network. GNU tar, especially as root, happily creates symlinks
//! pointing anywhere, fifos, devices and absolute-path trees, and the `tar`
//! crate's own `unpack` has had two traversal advisories (RUSTSEC-2021-0080,
//! GHSA-j4xf-2g29-59ph). So we never call `unpack`: we iterate the entries,
//! decide for each one ourselves, and write only plain files whose names we
//! built from a strict pattern.
//!
//! What is accepted (see the research note, section 6, "Tar extraction
//! safety"):
//! - a gzip'd tar (decompressed with [`flate2::read::MultiGzDecoder`], which
//!   handles concatenated gzip members like `gzip -d`), or a plain tar;
//! - regular-file members named exactly `N.vhd` (`N` decimal, no sign, no
//!   leading zeros except `0` itself), optionally prefixed with `./`, which is
//!   how os-xenapi's `tar -zc --directory=STAGING .` names them, or one of
//!   the old-style names os-xenapi still imports ([`OLD_STYLE`]: `snap.vhd`,
//!   `image.vhd`, `base.vhd`, and `swap.vhd`, which [`crate::discover`]
//!   leaves out of the chain);
//! - one `.`/`./` directory entry, which is skipped (its mode, owner and
//!   mtime are ignored: we never change `dir`).
//!
//! Everything else refuses the **whole** archive on the first bad member,
//! and every file this call created is removed before the error is returned,
//! so a refused archive leaves `dir` as it was.

use formats::vhd;
use std::cell::Cell;
use std::collections::HashSet;
use std::fs::{File, OpenOptions};
use std::io::{self, BufReader, Cursor, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use filter::ErrorKind;
use flate2::read::MultiGzDecoder;
use tar::EntryType;

/// Bounds on what an archive may make us write or hold in memory.
///
/// The defaults fit every real XenServer export and stop a hostile archive
/// long before it can fill a disk or exhaust memory; operators with larger
/// chains raise them (`--max-extract-bytes`).
#[derive(Debug, Clone)]
pub struct Limits {
    /// Total bytes of member data written, summed over all members. Checked
    /// against each member's declared size *before* writing it, and against
    /// the bytes actually written while streaming.
    pub max_bytes: u64,
    /// Members accepted (files written). Real chains are a few members deep.
    pub max_members: usize,
}

impl Default for Limits {
    /// `max_bytes` = 2 TiB: one fully allocated VHD of the largest size the
    /// format allows (2040 GiB of data plus metadata) still fits, with 8 GiB to
    /// spare for the small differencing disks of a typical chain. Anything
    /// bigger is almost certainly not an image export. `max_members` = 1000:
    /// XenServer caps VDI chains far below that (about 30), so 1000 is
    /// generous while still bounding the per-member work.
    fn default() -> Self {
        Limits {
            max_bytes: 2 << 40,
            max_members: 1000,
        }
    }
}

/// The old-style member names os-xenapi imports, leaf first, then the
/// legacy swap disk (never part of the chain).
pub const OLD_STYLE: [&str; 4] = ["snap.vhd", "image.vhd", "base.vhd", "swap.vhd"];

/// One extracted member, in archive order.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Member {
    /// The member's name with any `./` prefix removed: `N.vhd` or an
    /// [`OLD_STYLE`] name.
    pub name: String,
    /// Where it was written (`dir/NAME`).
    #[serde(serialize_with = "crate::lossy_path")]
    pub path: PathBuf,
    /// Bytes written.
    pub size: u64,
    /// The member's mtime, seconds since the epoch (from a pax `mtime`
    /// record if there is one, else the header). Kept because relinking takes
    /// `parent_ts` from it, which makes the result deterministic.
    pub mtime: Option<u64>,
    /// `N`, the member's position in the chain (`0` is the leaf); none for
    /// an old-style name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub index: Option<u32>,
}

/// Why extraction stopped. Every variant that concerns a member names it.
#[derive(Debug, thiserror::Error)]
pub enum ExtractError {
    /// The tarball could not be opened.
    #[error("{}: {source}", path.display())]
    Open {
        /// The tarball.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
    /// The destination is missing or not a directory. We never create it:
    /// the caller owns its placement and permissions (private scratch).
    #[error("{}: {source}", path.display())]
    Dir {
        /// The destination directory.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
    /// Not a gzip'd or plain tar archive (detected before any member).
    #[error("not a tarball: {reason}")]
    NotATarball {
        /// What was found instead.
        reason: String,
    },
    /// The stream ended early, inside a member or a header, or before the
    /// gzip trailer.
    #[error("archive truncated{}: {reason}", after_member(.member))]
    Truncated {
        /// The member being read, if any.
        member: Option<String>,
        /// What ended early.
        reason: String,
    },
    /// The archive was recognised but is damaged further on (bad header
    /// checksum, corrupt deflate data, gzip CRC mismatch).
    #[error("archive damaged{}: {source}", after_member(.member))]
    Corrupt {
        /// The member being read, if any.
        member: Option<String>,
        /// The decoder's or parser's message.
        source: io::Error,
    },
    /// A member that could write outside `dir`, or is not a plain file.
    #[error("unsafe member \"{member}\": {reason}")]
    Unsafe {
        /// The member's name as stored (escaped if not printable UTF-8).
        member: String,
        /// Why it is refused.
        reason: String,
    },
    /// A plain file whose name is not `N.vhd` (or an old-style name).
    #[error(
        "unexpected member \"{member}\": only N.vhd (or snap.vhd, image.vhd, base.vhd, swap.vhd) files are allowed"
    )]
    Unexpected {
        /// The member's name as stored.
        member: String,
    },
    /// A byte, member-count or metadata limit was reached.
    #[error("limit exceeded{}: {reason}", at_member(.member))]
    Limit {
        /// The member that would have crossed the limit, if any.
        member: Option<String>,
        /// Which limit.
        reason: String,
    },
    /// Writing the member would leave the target filesystem with less
    /// than its reserve ([`space_bound`]): refused before writing it.
    #[error("not enough space{}: {reason}", at_member(.member))]
    Space {
        /// The member that would not fit.
        member: Option<String>,
        /// How much was needed and what was free.
        reason: String,
    },
    /// A member whose bytes show it is not a VHD (with the VHD rules of
    /// [`extract_vhds`]).
    #[error("member \"{member}\" is not a VHD: {why}")]
    NotAVhd {
        /// The member.
        member: String,
        /// What its bytes show.
        why: String,
    },
    /// A file of that name already exists in `dir` (possibly a symlink); we
    /// never replace or follow it.
    #[error("{}: already exists, not replacing it (member \"{member}\")", path.display())]
    Exists {
        /// The member.
        member: String,
        /// The existing path.
        path: PathBuf,
    },
    /// Creating, writing or syncing a member's file failed.
    #[error("{}: {source} (member \"{member}\")", path.display())]
    Write {
        /// The member.
        member: String,
        /// The file being written.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
}

fn after_member(m: &Option<String>) -> String {
    m.as_ref()
        .map(|m| format!(" in member \"{m}\""))
        .unwrap_or_default()
}

fn at_member(m: &Option<String>) -> String {
    m.as_ref()
        .map(|m| format!(" at member \"{m}\""))
        .unwrap_or_default()
}

impl ExtractError {
    /// The record's `error.kind`.
    pub fn kind(&self) -> ErrorKind {
        match self {
            ExtractError::Open { source, .. } | ExtractError::Dir { source, .. } => {
                ErrorKind::from_io(source)
            }
            ExtractError::NotATarball { .. } => ErrorKind::NotATarball,
            // The notes: "a stream or member that ends early is `io` with
            // detail `truncated`". A damaged stream is the same class of
            // problem (the transfer or the storage), not "not a tarball".
            ExtractError::Truncated { .. } | ExtractError::Corrupt { .. } => ErrorKind::Io,
            ExtractError::Unsafe { .. } => ErrorKind::UnsafeMember,
            ExtractError::Unexpected { .. } => ErrorKind::UnexpectedMember,
            ExtractError::Limit { .. } => ErrorKind::LimitExceeded,
            ExtractError::Space { .. } => ErrorKind::NoSpace,
            ExtractError::NotAVhd { .. } => ErrorKind::NotAVhd,
            ExtractError::Exists { .. } => ErrorKind::AlreadyExists,
            ExtractError::Write { source, .. } => ErrorKind::from_io(source),
        }
    }

    /// The member the error is about, as stored in the archive (escaped when
    /// it is not printable UTF-8), if the error concerns one.
    pub fn member(&self) -> Option<&str> {
        match self {
            ExtractError::Truncated { member, .. }
            | ExtractError::Corrupt { member, .. }
            | ExtractError::Limit { member, .. }
            | ExtractError::Space { member, .. } => member.as_deref(),
            ExtractError::NotAVhd { member, .. }
            | ExtractError::Unsafe { member, .. }
            | ExtractError::Unexpected { member }
            | ExtractError::Exists { member, .. }
            | ExtractError::Write { member, .. } => Some(member),
            ExtractError::Open { .. }
            | ExtractError::Dir { .. }
            | ExtractError::NotATarball { .. } => None,
        }
    }

    /// A short machine-readable detail for the record (`truncated`,
    /// `corrupt`), where the kind alone is too coarse.
    pub fn detail(&self) -> Option<&'static str> {
        match self {
            ExtractError::Truncated { .. } => Some("truncated"),
            ExtractError::Corrupt { .. } => Some("corrupt"),
            _ => None,
        }
    }
}

/// Metadata (headers, GNU long names, pax records, padding) read between two
/// members. The `tar` crate reads long names and pax records into memory
/// whole, so without this a header claiming a 1 TiB long name (a few KiB of
/// gzip) would exhaust memory. Our names are a dozen bytes; 1 MiB leaves room
/// for pax xattr/ACL records.
const MAX_METADATA_PER_MEMBER: u64 = 1 << 20;

/// Bytes read after the end-of-archive marker. We read them to let the gzip
/// decoder verify its CRC and length trailer (a damaged or truncated stream
/// must not pass), but GNU tar pads to 10 KiB records, so more than this is
/// not padding: it is a bomb hiding behind the end marker.
const MAX_TRAILING: u64 = 16 << 20;

/// Copy buffer size.
const BUF: usize = 64 << 10;

/// `O_NOFOLLOW`: `create_new` (`O_CREAT|O_EXCL`) already never follows a
/// symlink (POSIX: `EEXIST`); this says so again. Rust's std always adds
/// `O_CLOEXEC`.
const O_NOFOLLOW: i32 = libc::O_NOFOLLOW;

/// What the stream wrapper has seen; shared with the extraction loop because
/// the `tar` crate owns the reader.
#[derive(Debug, Default)]
struct StreamState {
    /// True while we (not the tar parser) read member data.
    in_data: Cell<bool>,
    /// Metadata bytes read since the last member was handed to us.
    metadata: Cell<u64>,
    /// The metadata limit was hit.
    metadata_exceeded: Cell<bool>,
    /// The source ended (a read returned 0) or the decoder reported an
    /// unexpected EOF.
    ended: Cell<bool>,
}

/// The decompressed stream, counting what the tar parser reads on its own.
struct Counted<R> {
    inner: R,
    state: Rc<StreamState>,
}

impl<R: Read> Read for Counted<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = match self.inner.read(buf) {
            Ok(n) => n,
            Err(e) => {
                if e.kind() == io::ErrorKind::UnexpectedEof {
                    self.state.ended.set(true);
                }
                return Err(e);
            }
        };
        if n == 0 && !buf.is_empty() {
            self.state.ended.set(true);
        }
        if !self.state.in_data.get() {
            let m = self.state.metadata.get().saturating_add(n as u64);
            self.state.metadata.set(m);
            if m > MAX_METADATA_PER_MEMBER {
                self.state.metadata_exceeded.set(true);
                return Err(io::Error::other("archive metadata over the limit"));
            }
        }
        Ok(n)
    }
}

/// Extract the XenServer tarball `tarball` into the existing directory `dir`.
///
/// Returns one [`Member`] per file written, in archive order. On any error
/// every file this call created is removed first, so `dir` is left as it
/// was; files already in `dir` are never replaced (a name collision is
/// [`ExtractError::Exists`]).
pub fn extract(tarball: &Path, dir: &Path, limits: &Limits) -> Result<Vec<Member>, ExtractError> {
    extract_with(tarball, dir, limits, false, false)
}

/// [`extract`], and every member must be a VHD: whole 512-byte sectors
/// (plus a 511-byte footer, as old writers left) of at least one footer,
/// refused from its tar header otherwise, before a byte is written; a
/// member that does not begin with a footer copy (its cookie, as every
/// dynamic and differencing VHD does) can only be a fixed VHD, whose only
/// footer is its last sector, checked as the member ends (within the byte
/// bounds, like any member). `progress`: show the tarball's bytes read on
/// a terminal.
pub fn extract_vhds(
    tarball: &Path,
    dir: &Path,
    limits: &Limits,
    progress: bool,
) -> Result<Vec<Member>, ExtractError> {
    extract_with(tarball, dir, limits, true, progress)
}

/// A reader counting its bytes into a progress meter.
struct Metered<R> {
    inner: R,
    meter: system::progress::Progress,
}

impl<R: Read> Read for Metered<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.meter.add(n as u64);
        Ok(n)
    }
}

/// The minimum free space extraction leaves on the target filesystem.
pub const SPACE_RESERVE_MIN: u64 = 64 << 20;

/// The most bytes an extraction into `dir` may write by default: the free
/// space of its filesystem (for an unprivileged writer) less a reserve of
/// 5% of that free space or [`SPACE_RESERVE_MIN`], whichever is larger.
/// None when the free space cannot be read.
pub fn space_bound(dir: &Path) -> Option<u64> {
    let free = system::files::available_bytes(dir).ok()?;
    Some(free.saturating_sub((free / 20).max(SPACE_RESERVE_MIN)))
}

/// The bounds of one extraction.
#[derive(Debug, Clone)]
struct Budget {
    /// Bytes that may be written in all.
    max_bytes: u64,
    /// Whether the free space (rather than the limit asked) sets
    /// `max_bytes`: exceeding it is then [`ExtractError::Space`].
    by_space: bool,
    /// Members that may be written.
    max_members: usize,
    /// Members must be VHDs ([`extract_vhds`]).
    vhds: bool,
}

impl Budget {
    fn new(limits: &Limits, space: Option<u64>, vhds: bool) -> Budget {
        let (max_bytes, by_space) = match space {
            Some(s) if s < limits.max_bytes => (s, true),
            _ => (limits.max_bytes, false),
        };
        Budget {
            max_bytes,
            by_space,
            max_members: limits.max_members,
            vhds,
        }
    }

    /// The error for a member (or the stream) going over `max_bytes`.
    fn over(&self, member: Option<String>, what: String) -> ExtractError {
        if self.by_space {
            ExtractError::Space {
                member,
                reason: format!(
                    "{what}, more than the {} bytes the target filesystem can spare \
                     (its free space less a reserve of 5% or {SPACE_RESERVE_MIN} bytes)",
                    self.max_bytes
                ),
            }
        } else {
            ExtractError::Limit {
                member,
                reason: format!("{what}, over the {} byte extraction limit", self.max_bytes),
            }
        }
    }
}

fn extract_with(
    tarball: &Path,
    dir: &Path,
    limits: &Limits,
    vhds: bool,
    progress: bool,
) -> Result<Vec<Member>, ExtractError> {
    let meta = std::fs::metadata(dir).map_err(|source| ExtractError::Dir {
        path: dir.to_path_buf(),
        source,
    })?;
    if !meta.is_dir() {
        return Err(ExtractError::Dir {
            path: dir.to_path_buf(),
            source: io::Error::new(io::ErrorKind::NotADirectory, "not a directory"),
        });
    }
    let file = crate::input::open_tarball(tarball).map_err(|source| ExtractError::Open {
        path: tarball.to_path_buf(),
        source,
    })?;
    let budget = Budget::new(limits, space_bound(dir), vhds);
    let mut created = Vec::new();
    // The tarball's own bytes, of its size when it is a file.
    let label = format!("extracting {}", tarball.display());
    let meter = system::progress::Progress::new(&label, file.len(), progress);
    let file = Metered { inner: file, meter };
    let result = run(file, tarball, Some(dir), &budget, &mut created);
    if result.is_err() {
        // Best effort: the original error is the one to report, and `dir`
        // is the caller's private scratch directory, removed as a whole
        // later if anything survives here.
        for path in created.iter().rev() {
            let _ = std::fs::remove_file(path);
        }
    }
    result
}

/// Read the whole tarball as [`extract`] would, every rule applied, but
/// write nothing: the members it would write (their `path` is the bare
/// name). For `--dry-run`.
pub fn scan(tarball: &Path, limits: &Limits) -> Result<Vec<Member>, ExtractError> {
    let file = crate::input::open_tarball(tarball).map_err(|source| ExtractError::Open {
        path: tarball.to_path_buf(),
        source,
    })?;
    run(
        file,
        tarball,
        None,
        &Budget::new(limits, None, false),
        &mut Vec::new(),
    )
}

fn run<R: Read>(
    file: R,
    tarball: &Path,
    dir: Option<&Path>,
    budget: &Budget,
    created: &mut Vec<PathBuf>,
) -> Result<Vec<Member>, ExtractError> {
    let open_err = |source| ExtractError::Open {
        path: tarball.to_path_buf(),
        source,
    };
    let mut raw = BufReader::with_capacity(BUF, file);
    let mut magic = [0u8; 6];
    let got = read_full(&mut raw, &mut magic).map_err(open_err)?;
    let magic = &magic[..got];
    let prefixed = Cursor::new(magic.to_vec()).chain(raw);
    let mut stream: Box<dyn Read> = if magic.starts_with(&[0x1f, 0x8b]) {
        Box::new(MultiGzDecoder::new(prefixed))
    } else if let Some(what) = other_compression(magic) {
        return Err(ExtractError::NotATarball {
            reason: format!("{what}-compressed; only gzip or plain tar is accepted"),
        });
    } else {
        Box::new(prefixed)
    };

    // Look at the first block ourselves so that "this is not a tar at all"
    // (a VHD, a gzip'd text file, an empty file) is `not_a_tarball`, and
    // only damage *after* a valid first header is `io`.
    let mut first = [0u8; 512];
    let got = read_full(&mut stream, &mut first).map_err(|e| ExtractError::NotATarball {
        reason: format!("cannot decompress: {e}"),
    })?;
    if got < first.len() {
        return Err(ExtractError::NotATarball {
            reason: if got == 0 {
                "empty".to_owned()
            } else {
                format!("only {got} bytes, shorter than one tar header")
            },
        });
    }
    if first.iter().any(|&b| b != 0) && !header_checksum_ok(&first) {
        return Err(ExtractError::NotATarball {
            reason: "the first block is not a tar header (checksum mismatch)".to_owned(),
        });
    }

    let state = Rc::new(StreamState::default());
    let counted = Counted {
        inner: Cursor::new(first).chain(stream),
        state: Rc::clone(&state),
    };
    let mut archive = tar::Archive::new(counted);
    let mut members = Vec::new();
    let mut seen = HashSet::new();
    let mut seen_dot = false;
    let mut written: u64 = 0;
    let mut buf = vec![0u8; BUF];
    {
        let entries = archive
            .entries()
            .map_err(|e| stream_error(&state, None, e))?;
        for entry in entries {
            let mut entry = entry.map_err(|e| stream_error(&state, None, e))?;
            state.metadata.set(0);
            let raw_name = entry.path_bytes().into_owned();
            let shown = display_name(&raw_name);
            let pax = pax_info(&mut entry).map_err(|e| stream_error(&state, Some(&shown), e))?;
            let etype = entry.header().entry_type();
            let name = match check_member(&raw_name, etype, pax.sparse) {
                Err(e) => return Err(e.into_error(shown)),
                Ok(Verdict::SkipDot) => {
                    if seen_dot {
                        return Err(unsafe_member(shown, "duplicate `.` directory entry"));
                    }
                    seen_dot = true;
                    continue;
                }
                Ok(Verdict::File(name)) => name,
            };
            let index = chain_index(&name);
            if !seen.insert(name.clone()) {
                return Err(unsafe_member(shown, "duplicate member"));
            }
            if members.len() >= budget.max_members {
                return Err(ExtractError::Limit {
                    member: Some(shown),
                    reason: format!("more than {} members", budget.max_members),
                });
            }
            let declared = entry.size();
            let remaining = budget.max_bytes.saturating_sub(written);
            if declared > remaining {
                return Err(budget.over(
                    Some(shown),
                    format!("the member declares {declared} bytes ({written} written before it)"),
                ));
            }
            // A VHD is whole sectors plus its footer: anything else is
            // refused from its header, before a byte is written.
            if budget.vhds && (declared < 512 || !matches!(declared % 512, 0 | 511)) {
                return Err(ExtractError::NotAVhd {
                    member: shown,
                    why: format!(
                        "{declared} bytes: a VHD is whole 512-byte sectors ending with its footer"
                    ),
                });
            }
            let mut sniff = budget.vhds.then(Sniff::default);
            // A scan (no `dir`) reads the data through and writes nothing.
            let (path, out) = match dir {
                Some(dir) => {
                    let path = dir.join(&name);
                    let out = create_member(&path, &shown)?;
                    created.push(path.clone());
                    (path, Some(out))
                }
                None => (PathBuf::from(&name), None),
            };
            state.in_data.set(true);
            let copied = match out.as_ref() {
                Some(mut f) => copy_member(
                    &mut entry,
                    &mut f,
                    remaining,
                    &mut buf,
                    (&shown, &path),
                    sniff.as_mut(),
                ),
                None => copy_member(
                    &mut entry,
                    &mut io::sink(),
                    remaining,
                    &mut buf,
                    (&shown, &path),
                    sniff.as_mut(),
                ),
            }
            .map_err(|e| match e {
                CopyError::Read(e) => stream_error(&state, Some(&shown), e),
                CopyError::Done(e) => e,
            })?;
            state.in_data.set(false);
            check_copied(copied, declared, remaining, budget, &shown)?;
            if let Some(Err(why)) = sniff.as_ref().map(Sniff::finish) {
                return Err(ExtractError::NotAVhd { member: shown, why });
            }
            if let Some(f) = &out {
                f.sync_all().map_err(|source| ExtractError::Write {
                    member: shown.clone(),
                    path: path.clone(),
                    source,
                })?;
            }
            written = written.saturating_add(copied);
            members.push(Member {
                name,
                path,
                size: copied,
                mtime: pax.mtime.or_else(|| entry.header().mtime().ok()),
                index,
            });
        }
    }
    if state.ended.get() {
        // The tar crate takes EOF at a header boundary for the end of the
        // archive; a plain tar cut exactly between members would otherwise
        // pass with members missing.
        return Err(ExtractError::Truncated {
            member: None,
            reason: "the archive ends without an end-of-archive marker".to_owned(),
        });
    }
    drain_trailer(archive.into_inner(), &state)?;
    if let Some(dir) = dir {
        system::atomic::sync_dir(dir).map_err(|source| ExtractError::Dir {
            path: dir.to_path_buf(),
            source,
        })?;
    }
    Ok(members)
}

/// A member's data against its declared size and the byte limit.
fn check_copied(
    copied: u64,
    declared: u64,
    remaining: u64,
    budget: &Budget,
    shown: &str,
) -> Result<(), ExtractError> {
    if copied > remaining {
        return Err(budget.over(
            Some(shown.to_owned()),
            format!("more data than its header declared ({declared} bytes)"),
        ));
    }
    if copied < declared {
        return Err(ExtractError::Truncated {
            member: Some(shown.to_owned()),
            reason: format!("{copied} of {declared} bytes"),
        });
    }
    Ok(())
}

/// Read until `buf` is full or the stream ends; returns the bytes read.
fn read_full<R: Read>(r: &mut R, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// Other compressors' magic numbers, for a clearer refusal than "checksum
/// mismatch".
fn other_compression(magic: &[u8]) -> Option<&'static str> {
    if magic.starts_with(b"BZh") {
        Some("bzip2")
    } else if magic.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0]) {
        Some("xz")
    } else if magic.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Some("zstd")
    } else {
        None
    }
}

/// The tar header checksum rule, as the `tar` crate applies it (unsigned sum
/// of the block with the checksum field read as spaces).
fn header_checksum_ok(block: &[u8; 512]) -> bool {
    let mut header = tar::Header::new_old();
    *header.as_mut_bytes() = *block;
    let Ok(stored) = header.cksum() else {
        return false;
    };
    let sum: u32 = block[..148]
        .iter()
        .chain(&block[156..])
        .map(|&b| u32::from(b))
        .sum::<u32>()
        + 8 * 32;
    sum == stored
}

/// Classify an error from the stream or the tar parser.
fn stream_error(state: &StreamState, member: Option<&str>, e: io::Error) -> ExtractError {
    let member = member.map(str::to_owned);
    if state.metadata_exceeded.get() {
        ExtractError::Limit {
            member,
            reason: format!(
                "more than {MAX_METADATA_PER_MEMBER} bytes of headers, long names or pax records for one member"
            ),
        }
    } else if state.ended.get() {
        ExtractError::Truncated {
            member,
            reason: e.to_string(),
        }
    } else {
        ExtractError::Corrupt { member, source: e }
    }
}

/// What the member's pax records say that matters to us.
struct PaxInfo {
    /// A `GNU.sparse.*` record: a pax-format (0.1/1.0) sparse file.
    sparse: bool,
    /// A valid non-negative `mtime`, whole seconds.
    mtime: Option<u64>,
}

fn pax_info<R: Read>(entry: &mut tar::Entry<'_, R>) -> io::Result<PaxInfo> {
    let mut info = PaxInfo {
        sparse: false,
        mtime: None,
    };
    if let Some(exts) = entry.pax_extensions()? {
        for ext in exts {
            let ext = ext?;
            let key = ext.key_bytes();
            if key.starts_with(b"GNU.sparse.") {
                info.sparse = true;
            } else if key == b"mtime" {
                info.mtime = ext
                    .value()
                    .ok()
                    .and_then(|v| v.split('.').next())
                    .and_then(|s| s.parse::<u64>().ok());
            }
        }
    }
    Ok(info)
}

/// What to do with a member.
#[derive(Debug, PartialEq, Eq)]
enum Verdict {
    /// The `.` directory entry: skip it.
    SkipDot,
    /// A chain file `N.vhd` or an old-style name: the name to write.
    File(String),
}

/// A refusal before the member's display name is attached.
#[derive(Debug, PartialEq, Eq)]
enum Refusal {
    Unsafe(&'static str),
    Unexpected,
}

impl Refusal {
    fn into_error(self, member: String) -> ExtractError {
        match self {
            Refusal::Unsafe(reason) => unsafe_member(member, reason),
            Refusal::Unexpected => ExtractError::Unexpected { member },
        }
    }
}

fn unsafe_member(member: String, reason: &str) -> ExtractError {
    ExtractError::Unsafe {
        member,
        reason: reason.to_owned(),
    }
}

/// Decide on one member from its final name (after GNU long-name and pax
/// `path` processing, which is what any extractor would write) and its type.
/// Name safety comes first so that `../x` is reported as traversal whatever
/// its type.
fn check_member(raw: &[u8], etype: EntryType, pax_sparse: bool) -> Result<Verdict, Refusal> {
    if raw.is_empty() {
        return Err(Refusal::Unsafe("empty name"));
    }
    if raw.contains(&0) {
        return Err(Refusal::Unsafe("NUL in name"));
    }
    let Ok(name) = std::str::from_utf8(raw) else {
        return Err(Refusal::Unsafe("name is not UTF-8"));
    };
    if name.starts_with('/') {
        return Err(Refusal::Unsafe("absolute path"));
    }
    if name.split('/').any(|c| c == "..") {
        return Err(Refusal::Unsafe("`..` in path"));
    }
    // Before the nested-path rule: pax 1.0 sparse files are stored as
    // `GNUSparseFile.N/NAME`, and "sparse" is the useful diagnosis.
    if pax_sparse {
        return Err(Refusal::Unsafe("sparse member (pax GNU.sparse)"));
    }
    if etype == EntryType::Directory {
        return if name.trim_end_matches('/') == "." {
            Ok(Verdict::SkipDot)
        } else {
            Err(Refusal::Unsafe("directory (only plain files are allowed)"))
        };
    }
    let bare = name.strip_prefix("./").unwrap_or(name);
    if bare.contains('/') {
        return Err(Refusal::Unsafe("nested path"));
    }
    match etype {
        EntryType::Regular | EntryType::Continuous => {}
        EntryType::Symlink => return Err(Refusal::Unsafe("symbolic link")),
        EntryType::Link => return Err(Refusal::Unsafe("hard link")),
        EntryType::Char => return Err(Refusal::Unsafe("character device")),
        EntryType::Block => return Err(Refusal::Unsafe("block device")),
        EntryType::Fifo => return Err(Refusal::Unsafe("fifo")),
        EntryType::GNUSparse => return Err(Refusal::Unsafe("sparse member (GNU type S)")),
        EntryType::XGlobalHeader => {
            return Err(Refusal::Unsafe(
                "pax global header (could rename members for other extractors)",
            ));
        }
        _ => return Err(Refusal::Unsafe("not a plain file")),
    }
    match chain_index(bare) {
        Some(i) => Ok(Verdict::File(format!("{i}.vhd"))),
        None if OLD_STYLE.contains(&bare) => Ok(Verdict::File(bare.to_owned())),
        None => Err(Refusal::Unexpected),
    }
}

/// `N` from `N.vhd`: decimal, no sign, no leading zeros except `0`, fits u32.
fn chain_index(name: &str) -> Option<u32> {
    let digits = name.strip_suffix(".vhd")?;
    if digits.is_empty()
        || !digits.bytes().all(|b| b.is_ascii_digit())
        || (digits.len() > 1 && digits.starts_with('0'))
    {
        return None;
    }
    digits.parse().ok()
}

/// A member name for messages and records: UTF-8 as is, control characters
/// and invalid bytes escaped, so a hostile name cannot inject lines.
fn display_name(raw: &[u8]) -> String {
    let mut out = String::new();
    for chunk in raw.utf8_chunks() {
        for c in chunk.valid().chars() {
            if c.is_control() {
                out.extend(c.escape_default());
            } else {
                out.push(c);
            }
        }
        for b in chunk.invalid() {
            out.push_str(&format!("\\x{b:02x}"));
        }
    }
    out
}

/// Create a member's file: never an existing name, never through a symlink,
/// private until the caller decides otherwise.
fn create_member(path: &Path, member: &str) -> Result<File, ExtractError> {
    let file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(O_NOFOLLOW)
        .open(path)
        .map_err(|source| {
            if source.kind() == io::ErrorKind::AlreadyExists {
                ExtractError::Exists {
                    member: member.to_owned(),
                    path: path.to_path_buf(),
                }
            } else {
                ExtractError::Write {
                    member: member.to_owned(),
                    path: path.to_path_buf(),
                    source,
                }
            }
        })?;
    Ok(file)
}

enum CopyError {
    /// Reading the archive failed: classified by the caller.
    Read(io::Error),
    /// Already an extraction error (writing failed).
    Done(ExtractError),
}

/// Stream one member's data into `out`, reading at most `remaining + 1`
/// bytes so that a reader delivering more than the header declared is caught
/// by the caller without writing past the budget.
fn copy_member<R: Read, W: Write>(
    entry: &mut R,
    out: &mut W,
    remaining: u64,
    buf: &mut [u8],
    (member, path): (&str, &Path),
    mut sniff: Option<&mut Sniff>,
) -> Result<u64, CopyError> {
    let mut limited = entry.take(remaining.saturating_add(1));
    let mut copied: u64 = 0;
    loop {
        let n = match limited.read(buf) {
            Ok(0) => return Ok(copied),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(CopyError::Read(e)),
        };
        copied = copied.saturating_add(n as u64);
        if copied > remaining {
            return Ok(copied);
        }
        if let Some(s) = sniff.as_deref_mut() {
            s.feed(&buf[..n]);
        }
        system::signal::check()
            .and_then(|()| out.write_all(&buf[..n]))
            .map_err(|source| {
                CopyError::Done(ExtractError::Write {
                    member: member.to_owned(),
                    path: path.to_path_buf(),
                    source,
                })
            })?;
    }
}

/// What a member's bytes say about it being a VHD, as they stream: its
/// first 8 bytes (the footer copy's cookie of a dynamic or differencing
/// VHD) and its last 512 (the footer).
#[derive(Debug, Default)]
struct Sniff {
    head: Vec<u8>,
    tail: Vec<u8>,
}

const COOKIE: &[u8; 8] = &vhd::FOOTER_COOKIE;

impl Sniff {
    fn feed(&mut self, b: &[u8]) {
        if self.head.len() < COOKIE.len() {
            let k = (COOKIE.len() - self.head.len()).min(b.len());
            self.head.extend_from_slice(&b[..k]);
        }
        if b.len() >= 512 {
            self.tail.clear();
            self.tail.extend_from_slice(&b[b.len() - 512..]);
        } else {
            self.tail.extend_from_slice(b);
            let extra = self.tail.len().saturating_sub(512);
            self.tail.drain(..extra);
        }
    }

    /// The member ended: a dynamic or differencing VHD began with its
    /// footer copy; anything else can only be a fixed VHD, whose footer
    /// (cookie, disk type 2) is its last 512 (or 511) bytes.
    fn finish(&self) -> Result<(), String> {
        if self.head == COOKIE {
            return Ok(());
        }
        let fixed_at = |at: usize| {
            let f = vhd::Footer::decode(self.tail.get(at..).unwrap_or_default());
            f.has_cookie() && f.disk_type() == Some(vhd::DiskType::Fixed)
        };
        if fixed_at(0) || fixed_at(1) {
            return Ok(());
        }
        Err("no footer copy at its start and no fixed-disk footer at its end".to_owned())
    }
}

/// Read what follows the end-of-archive marker, so the gzip decoder checks
/// its CRC and length (a damaged or cut stream is refused even when the tar
/// part looked complete), but no more than [`MAX_TRAILING`] bytes.
fn drain_trailer<R: Read>(mut rest: R, state: &StreamState) -> Result<(), ExtractError> {
    state.in_data.set(true);
    let mut buf = vec![0u8; BUF];
    let mut total: u64 = 0;
    loop {
        match rest.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => {
                total = total.saturating_add(n as u64);
                if total > MAX_TRAILING {
                    return Err(ExtractError::Limit {
                        member: None,
                        reason: format!(
                            "more than {MAX_TRAILING} bytes after the end-of-archive marker"
                        ),
                    });
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                let e = io::Error::new(e.kind(), format!("after the end-of-archive marker: {e}"));
                return Err(stream_error(state, None, e));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chain_names() {
        assert_eq!(chain_index("0.vhd"), Some(0));
        assert_eq!(chain_index("12.vhd"), Some(12));
        assert_eq!(chain_index("4294967295.vhd"), Some(u32::MAX));
        for bad in [
            "00.vhd",
            "01.vhd",
            "+1.vhd",
            "-1.vhd",
            ".vhd",
            "0.VHD",
            "0.vhd.gz",
            "4294967296.vhd",
            " 1.vhd",
        ] {
            assert_eq!(chain_index(bad), None, "{bad}");
        }
    }

    #[test]
    fn member_rules() {
        let reg = EntryType::Regular;
        assert_eq!(
            check_member(b"./3.vhd", reg, false),
            Ok(Verdict::File("3.vhd".into()))
        );
        assert_eq!(
            check_member(b"./snap.vhd", reg, false),
            Ok(Verdict::File("snap.vhd".into()))
        );
        assert_eq!(
            check_member(b"./Snap.vhd", reg, false),
            Err(Refusal::Unexpected)
        );
        assert_eq!(
            check_member(b"./", EntryType::Directory, false),
            Ok(Verdict::SkipDot)
        );
        assert_eq!(
            check_member(b".", EntryType::Directory, false),
            Ok(Verdict::SkipDot)
        );
        assert!(matches!(
            check_member(b"././0.vhd", reg, false),
            Err(Refusal::Unsafe("nested path"))
        ));
        assert!(matches!(
            check_member(b"0.vhd", reg, true),
            Err(Refusal::Unsafe(_))
        ));
        assert!(matches!(
            check_member(b"a/..", EntryType::Directory, false),
            Err(Refusal::Unsafe("`..` in path"))
        ));
        assert_eq!(
            check_member(b"evil.txt", reg, false),
            Err(Refusal::Unexpected)
        );
    }

    #[test]
    fn names_are_escaped() {
        assert_eq!(display_name(b"a\nb\xff.vhd"), "a\\nb\\xff.vhd");
    }
}
