//! Native image-format probing: what `qemu-img info --output=json` would
//! say, from the headers alone, without spawning anything.
//!
//! Every input is hostile. Parsers read through a [`Reader`], which refuses
//! reads past the end of the file, reads larger than [`MAX_READ`] and more
//! than a per-format byte budget, so no header field can make us allocate
//! or read without bound. Nothing here ever opens another file: backing
//! files, data files and VMDK extents are reported by name only.
//!
//! Each format module has `parse(&Reader, name) -> Result<Option<Parsed>>`:
//! `Ok(None)` when the bytes are not that format, `Ok(Some)` with the info
//! fields in qemu's JSON shape (snake_case keys), and `Err` when the magic
//! matches but the header is broken or hostile.
//!
//! Behind the parsers, [`score`] restates qemu's own probe functions: when
//! qemu's probing would not read the file as raw, the answer is never raw.
//! It is the format qemu picks, or, where that format's header cannot be
//! read, an error naming it ("not raw"), so no check can pass such a file
//! as raw. qemu's dmg probe goes by the file name (`*.dmg`), so the name
//! given to [`probe`] matters.

pub mod bochs;
pub mod cloop;
pub mod dmg;
pub mod iso;
pub mod luks;
pub mod parallels;
pub mod partition;
pub mod qcow;
pub mod qcow2;
pub mod qed;
pub mod score;
pub mod vdi;
pub mod vhd;
pub mod vhdx;
pub mod vmdk;

use serde_json::{Map, Value};
use std::cell::Cell;
use std::io;
use thiserror::Error;

/// Largest single read a parser may make.
pub const MAX_READ: usize = 1 << 20;
/// Bytes one format's parser may read in all.
pub const BUDGET: u64 = 8 << 20;

/// Random-access bytes: a file, a buffer, later an HTTP object.
pub trait Source {
    /// Total length in bytes.
    fn len(&self) -> u64;
    /// Read into `buf` at `offset`; fewer bytes only at the end.
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<usize>;
    /// Bytes allocated on the host (`st_blocks * 512`), where known.
    fn allocated(&self) -> Option<u64> {
        None
    }
    /// Up to `len` bytes at `offset` as a new buffer (fewer at the end).
    fn read_vec(&self, offset: u64, len: usize) -> io::Result<Vec<u8>> {
        let mut buf = vec![0u8; len];
        let n = self.read_at(offset, &mut buf)?;
        buf.truncate(n);
        Ok(buf)
    }
    /// Whether there is nothing to read.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Source for [u8] {
    fn len(&self) -> u64 {
        <[u8]>::len(self) as u64
    }
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
        let Ok(start) = usize::try_from(offset) else {
            return Ok(0);
        };
        if start >= <[u8]>::len(self) {
            return Ok(0);
        }
        let n = buf.len().min(<[u8]>::len(self) - start);
        buf[..n].copy_from_slice(&self[start..start + n]);
        Ok(n)
    }
}

impl Source for Vec<u8> {
    fn len(&self) -> u64 {
        self.as_slice().len() as u64
    }
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
        self.as_slice().read_at(offset, buf)
    }
}

/// A local file (or a block device), with its length and allocation read
/// once: the one positioned reader every tool probes and checks through.
#[derive(Debug)]
pub struct FileSource {
    file: std::fs::File,
    len: u64,
    allocated: u64,
}

impl FileSource {
    /// Open `path` read-only through the shared input layer: a regular
    /// file or a block device; a FIFO, device, socket or directory is
    /// `not_regular`, and nothing blocks in `open()`. Symlinks are followed
    /// for the file asked about (as qemu-img does); nothing else is ever
    /// opened.
    pub fn open(path: &std::path::Path) -> io::Result<Self> {
        Self::from_input(system::files::open_input(
            path,
            system::files::Accept::Regular,
        )?)
    }

    /// An opened input that is read at offsets (not a stream).
    pub fn from_input(input: system::files::Input) -> io::Result<Self> {
        use std::os::unix::fs::MetadataExt;
        let Some(len) = input.len() else {
            return Err(system::files::refusal(
                system::kind::ErrorKind::NotRegular,
                "is a stream, not a file that can be read at offsets",
            ));
        };
        let file = input.into_file();
        let md = file.metadata()?;
        Ok(FileSource {
            len,
            allocated: md.blocks().saturating_mul(512),
            file,
        })
    }
}

impl FileSource {
    /// A regular file or block device the caller opened itself (relative
    /// to a directory handle, without following a link): the handle it
    /// judged is the one probed. Anything else is `not_regular`.
    pub fn from_file(file: std::fs::File) -> io::Result<Self> {
        use std::os::unix::fs::{FileTypeExt, MetadataExt};
        let md = file.metadata()?;
        if !md.file_type().is_file() && !md.file_type().is_block_device() {
            return Err(system::files::refusal(
                system::kind::ErrorKind::NotRegular,
                "is not a regular file or block device",
            ));
        }
        Ok(FileSource {
            len: system::files::volume_len(&file)?,
            allocated: md.blocks().saturating_mul(512),
            file,
        })
    }
}

impl Source for FileSource {
    fn len(&self) -> u64 {
        self.len
    }
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
        use std::os::unix::fs::FileExt;
        let mut done = 0;
        while done < buf.len() {
            match self
                .file
                .read_at(&mut buf[done..], offset.saturating_add(done as u64))
            {
                Ok(0) => break,
                Ok(n) => done += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {
                    if let Some(sig) = system::signal::pending() {
                        return Err(system::files::stopped(sig));
                    }
                }
                Err(e) => return Err(e),
            }
        }
        Ok(done)
    }
    fn allocated(&self) -> Option<u64> {
        Some(self.allocated)
    }
}

/// A block cache in front of a [`Source`]: every parser probes the same
/// few places (the first sectors, 32 KiB for ISO, the last sector for VHD
/// and VMDK footers), so each 4 KiB block is read from the file once.
struct Cached<'a> {
    src: &'a dyn Source,
    blocks: std::cell::RefCell<Vec<(u64, Vec<u8>)>>,
}

impl Cached<'_> {
    const BLOCK: u64 = 4 << 10;
    /// At most this many blocks (256 KiB) are kept; the oldest goes first.
    const KEEP: usize = 64;

    /// Append up to `want` bytes from block `index` at `within` to `out`;
    /// loads the block on a miss. Returns the bytes appended (0 at the end
    /// of the file).
    fn append_from(
        &self,
        index: u64,
        within: usize,
        want: usize,
        out: &mut Vec<u8>,
    ) -> io::Result<usize> {
        let mut blocks = self.blocks.borrow_mut();
        let pos = match blocks.iter().position(|(i, _)| *i == index) {
            Some(p) => p,
            None => {
                let start = index * Self::BLOCK;
                let len = Self::BLOCK.min(self.src.len().saturating_sub(start)) as usize;
                let mut buf = vec![0u8; len];
                let n = self.src.read_at(start, &mut buf)?;
                buf.truncate(n);
                if blocks.len() >= Self::KEEP {
                    blocks.remove(0);
                }
                blocks.push((index, buf));
                blocks.len() - 1
            }
        };
        let avail = blocks[pos].1.get(within..).unwrap_or(&[]);
        let n = avail.len().min(want);
        out.extend_from_slice(&avail[..n]);
        Ok(n)
    }
}

impl Source for Cached<'_> {
    fn len(&self) -> u64 {
        self.src.len()
    }
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
        let v = self.read_vec(offset, buf.len())?;
        buf[..v.len()].copy_from_slice(&v);
        Ok(v.len())
    }
    fn read_vec(&self, offset: u64, len: usize) -> io::Result<Vec<u8>> {
        let mut out = Vec::with_capacity(len.min(MAX_READ));
        while out.len() < len {
            let at = offset.saturating_add(out.len() as u64);
            let (index, within) = (at / Self::BLOCK, (at % Self::BLOCK) as usize);
            let want = len - out.len();
            if self.append_from(index, within, want, &mut out)? == 0 {
                break;
            }
        }
        Ok(out)
    }
    fn allocated(&self) -> Option<u64> {
        self.src.allocated()
    }
}

/// Why a header could not be read.
#[derive(Debug, Error)]
pub enum FormatError {
    /// The header claims data beyond the end of the file.
    #[error("{format}: truncated: {what}")]
    Truncated {
        /// Format name.
        format: &'static str,
        /// What was missing.
        what: String,
    },
    /// A field has an impossible or hostile value.
    #[error("{format}: {what}")]
    Invalid {
        /// Format name.
        format: &'static str,
        /// What is wrong.
        what: String,
    },
    /// A read larger than [`MAX_READ`] or past the format's [`BUDGET`].
    #[error("{format}: refusing to read {bytes} bytes at {offset} (limit)")]
    TooLarge {
        /// Format name.
        format: &'static str,
        /// Where.
        offset: u64,
        /// How much.
        bytes: u64,
    },
    /// Reading failed.
    #[error("{0}")]
    Io(#[from] io::Error),
}

/// Bounded reads for one format's parser.
pub struct Reader<'a> {
    src: &'a dyn Source,
    format: &'static str,
    budget: Cell<u64>,
}

impl<'a> Reader<'a> {
    /// A reader for `format` over `src`, with the default budget.
    pub fn new(src: &'a dyn Source, format: &'static str) -> Self {
        Reader {
            src,
            format,
            budget: Cell::new(BUDGET),
        }
    }

    /// File length.
    pub fn len(&self) -> u64 {
        self.src.len()
    }

    /// Whether the file is empty.
    pub fn is_empty(&self) -> bool {
        self.src.len() == 0
    }

    /// The format this reader reads for (for errors).
    pub fn format(&self) -> &'static str {
        self.format
    }

    fn charge(&self, offset: u64, len: usize) -> Result<(), FormatError> {
        let left = self.budget.get();
        if len > MAX_READ || len as u64 > left {
            return Err(FormatError::TooLarge {
                format: self.format,
                offset,
                bytes: len as u64,
            });
        }
        self.budget.set(left - len as u64);
        Ok(())
    }

    /// Exactly `len` bytes at `offset`; an error if they are not all in
    /// the file.
    pub fn read(&self, offset: u64, len: usize) -> Result<Vec<u8>, FormatError> {
        let end = offset.checked_add(len as u64);
        if end.is_none_or(|e| e > self.len()) {
            return Err(self.truncated(format!("{len} bytes at offset {offset}")));
        }
        let v = self.read_upto(offset, len)?;
        if v.len() < len {
            return Err(self.truncated(format!("{len} bytes at offset {offset}")));
        }
        Ok(v)
    }

    /// Up to `len` bytes at `offset` (fewer at the end of the file).
    pub fn read_upto(&self, offset: u64, len: usize) -> Result<Vec<u8>, FormatError> {
        let avail = self.len().saturating_sub(offset);
        let len = len.min(usize::try_from(avail).unwrap_or(usize::MAX));
        self.charge(offset, len)?;
        Ok(self.src.read_vec(offset, len)?)
    }

    /// A `Truncated` error for this format.
    pub fn truncated(&self, what: impl Into<String>) -> FormatError {
        FormatError::Truncated {
            format: self.format,
            what: what.into(),
        }
    }

    /// An `Invalid` error for this format.
    pub fn invalid(&self, what: impl Into<String>) -> FormatError {
        FormatError::Invalid {
            format: self.format,
            what: what.into(),
        }
    }
}

/// One format found in the bytes.
#[derive(Debug, Clone, PartialEq)]
pub struct Parsed {
    /// What was found: a qemu driver name (`qcow2`, `vpc`, ...) or `iso`,
    /// `gpt`, `mbr` for layouts qemu reads as raw.
    pub kind: &'static str,
    /// Whether qemu-img, probing without `-f`, picks this driver (a fixed
    /// VHD has no header at offset 0, so qemu does not; nor for ISO/GPT/MBR).
    pub qemu_probes: bool,
    /// The fields in qemu's JSON shape, snake_case: `format`,
    /// `virtual_size`, `cluster_size`, `encrypted`, `dirty_flag`, backing
    /// fields, `snapshots`, `format_specific`; plus `header` with facts
    /// qemu does not print (used by the acceptance checks). For `iso`,
    /// `gpt` and `mbr`: the details of the layout.
    pub info: Map<String, Value>,
}

/// Big-endian and little-endian integers from a header (callers have
/// checked the length; out-of-range reads give 0, never a panic).
pub mod bytes {
    /// u16 big-endian at `o`.
    pub fn be16(b: &[u8], o: usize) -> u16 {
        b.get(o..o + 2)
            .map_or(0, |s| u16::from_be_bytes([s[0], s[1]]))
    }
    /// u32 big-endian at `o`.
    pub fn be32(b: &[u8], o: usize) -> u32 {
        b.get(o..o + 4)
            .map_or(0, |s| u32::from_be_bytes([s[0], s[1], s[2], s[3]]))
    }
    /// u64 big-endian at `o`.
    pub fn be64(b: &[u8], o: usize) -> u64 {
        b.get(o..o + 8).map_or(0, |s| {
            u64::from_be_bytes([s[0], s[1], s[2], s[3], s[4], s[5], s[6], s[7]])
        })
    }
    /// u16 little-endian at `o`.
    pub fn le16(b: &[u8], o: usize) -> u16 {
        b.get(o..o + 2)
            .map_or(0, |s| u16::from_le_bytes([s[0], s[1]]))
    }
    /// u32 little-endian at `o`.
    pub fn le32(b: &[u8], o: usize) -> u32 {
        b.get(o..o + 4)
            .map_or(0, |s| u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
    }
    /// u64 little-endian at `o`.
    pub fn le64(b: &[u8], o: usize) -> u64 {
        b.get(o..o + 8).map_or(0, |s| {
            u64::from_le_bytes([s[0], s[1], s[2], s[3], s[4], s[5], s[6], s[7]])
        })
    }

    /// `strcmp(field, s) == 0` for a field at `o`: the bytes of `s` then NUL.
    pub fn c_str_eq(buf: &[u8], o: usize, s: &[u8]) -> bool {
        buf.get(o..o + s.len()) == Some(s) && buf.get(o + s.len()) == Some(&0)
    }

    /// The bytes of a C string: everything before the first NUL.
    pub fn cstr(b: &[u8]) -> &[u8] {
        match b.iter().position(|&c| c == 0) {
            Some(n) => &b[..n],
            None => b,
        }
    }
}

/// Insert `key` as a (lossy) string; when the bytes are not UTF-8, also
/// insert `<key>_bytes` with their standard base64.
pub(crate) fn put_str(m: &mut Map<String, Value>, key: &str, b: &[u8]) {
    match std::str::from_utf8(b) {
        Ok(s) => {
            m.insert(key.into(), s.into());
        }
        Err(_) => {
            m.insert(key.into(), String::from_utf8_lossy(b).into_owned().into());
            m.insert(format!("{key}_bytes"), system::text::base64(b).into());
        }
    }
}

/// Insert `backing_filename` and qemu's resolved `full_backing_filename`
/// for the backing name `b` of image `name`, each with a `_bytes` twin
/// (base64) when `b` is not UTF-8.
pub(crate) fn put_backing(m: &mut Map<String, Value>, name: &str, b: &[u8]) {
    put_str(m, "backing_filename", b);
    let lossy = String::from_utf8_lossy(b);
    let full = full_backing_filename(name, &lossy);
    if std::str::from_utf8(b).is_err()
        && let Some(prefix) = full.strip_suffix(lossy.as_ref())
    {
        let mut raw = prefix.as_bytes().to_vec();
        raw.extend_from_slice(b);
        m.insert(
            "full_backing_filename_bytes".into(),
            system::text::base64(&raw).into(),
        );
    }
    m.insert("full_backing_filename".into(), full.into());
}

/// The path qemu reports as `full-backing-filename`: a relative backing
/// name is taken relative to the image's directory; absolute names,
/// protocol names (`http://`, `nbd:`) and `json:` are kept as they are.
pub fn full_backing_filename(image: &str, backing: &str) -> String {
    let has_protocol = match (backing.find(':'), backing.find('/')) {
        (Some(c), Some(s)) => c < s,
        (Some(_), None) => true,
        _ => false,
    };
    if backing.starts_with('/') || has_protocol || backing.is_empty() {
        return backing.to_owned();
    }
    match image.rfind('/') {
        Some(i) => format!("{}{}", &image[..=i], backing),
        None => backing.to_owned(),
    }
}

/// The order qemu's probing would prefer, then the layouts qemu reads as
/// raw. A parser listed earlier wins when several claim the bytes.
type ParseFn = fn(&Reader, &str) -> Result<Option<Parsed>, FormatError>;
const PARSERS: &[(&str, ParseFn)] = &[
    ("qcow2", qcow2::parse),
    ("qcow", qcow::parse),
    ("qed", qed::parse),
    ("luks", luks::parse),
    ("vmdk", vmdk::parse),
    ("vpc", vhd::parse),
    ("vhdx", vhdx::parse),
    ("vdi", vdi::parse),
    ("parallels", parallels::parse),
    ("bochs", bochs::parse),
    ("dmg", dmg::parse),
    ("cloop", cloop::parse),
    ("iso", iso::parse),
    ("partition", partition::parse),
];

/// The qemu format names this module can read when forced with `-f`.
pub fn known_formats() -> Vec<&'static str> {
    let mut v: Vec<&'static str> = PARSERS
        .iter()
        .map(|(n, _)| *n)
        .filter(|n| *n != "iso" && *n != "partition")
        .collect();
    v.push("raw");
    v
}

/// What probing found.
#[derive(Debug, Clone, PartialEq)]
pub struct Probe {
    /// The info fields (qemu JSON shape, snake_case), including
    /// `detected_formats` and, where found, `iso` and `partition_table`.
    pub info: Map<String, Value>,
}

fn raw_info(len: u64) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("format".into(), "raw".into());
    // qemu sees whole 512-byte sectors: a 7-byte file is 512 bytes to it.
    let size = len.div_ceil(512).saturating_mul(512);
    m.insert("virtual_size".into(), size.into());
    m.insert("encrypted".into(), false.into());
    m.insert("dirty_flag".into(), false.into());
    m
}

/// Probe `src` (named `name`, as given by the user) the way `qemu-img info`
/// would, or as `forced` (a qemu format name, like `-f`).
pub fn probe(src: &dyn Source, name: &str, forced: Option<&str>) -> Result<Probe, FormatError> {
    let cached = Cached {
        src,
        blocks: std::cell::RefCell::new(Vec::new()),
    };
    let src: &dyn Source = &cached;
    // Every parser runs, so that all matches are reported. A parser that
    // fails on bytes carrying its magic stops the probe only where qemu
    // would have chosen that format: forced, or ahead of the winner.
    let mut found: Vec<Parsed> = Vec::new();
    let mut errors: Vec<(&str, FormatError)> = Vec::new();
    let mut first_error: Option<usize> = None;
    for (fmt, parse) in PARSERS {
        if let Some(f) = forced
            && f != *fmt
        {
            continue;
        }
        let r = Reader::new(src, fmt);
        match parse(&r, name) {
            Ok(Some(p)) => found.push(p),
            Ok(None) => {}
            Err(e) if forced.is_some() => return Err(e),
            Err(e) => {
                if first_error.is_none() && !found.iter().any(|p| p.qemu_probes) {
                    first_error = Some(errors.len());
                }
                errors.push((fmt, e));
            }
        }
    }
    // What qemu's probing picks decides: the parser of that format must
    // have read it, or the probe fails naming it; never raw.
    let qemu_pick = match forced {
        Some(_) => None,
        None => {
            let head = Reader::new(src, "probe").read_upto(0, score::PROBE_BUF)?;
            score::pick(&head, src.len(), name)
        }
    };
    let picked = match qemu_pick {
        Some(q) => match found
            .iter()
            .position(|p| p.qemu_probes && p.kind == q.format)
        {
            Some(i) => Some(i),
            None => {
                return Err(match errors.iter().position(|(f, _)| *f == q.format) {
                    Some(i) => errors.swap_remove(i).1,
                    None => FormatError::Invalid {
                        format: q.format,
                        what: format!(
                            "qemu probes these bytes as {} (score {}, raw scores 1) but the header \
cannot be read: not raw",
                            q.format, q.score
                        ),
                    },
                });
            }
        },
        None => {
            if let Some(i) = first_error {
                // Only an error ahead of any format qemu would pick is
                // fatal; the ISO and partition-table readers never return
                // one.
                return Err(errors.swap_remove(i).1);
            }
            None
        }
    };
    let mut detected: Vec<Value> = found.iter().map(|p| Value::from(p.kind)).collect();
    if forced.is_none() && !found.iter().any(|p| p.qemu_probes) {
        detected.insert(0, "raw".into());
    }
    // The winner's fields become the info; layouts qemu reads as raw are
    // attached as details. Moved, not copied.
    let winner = match forced {
        Some("raw") => None,
        Some(f) if found.is_empty() => {
            return Err(FormatError::Invalid {
                format: "probe",
                what: if known_formats().contains(&f) {
                    format!("not a {f} image")
                } else {
                    format!("unknown format {f:?}")
                },
            });
        }
        Some(_) => Some(0),
        None => picked.or_else(|| found.iter().position(|p| p.qemu_probes)),
    };
    let mut info = match winner {
        Some(i) => std::mem::take(&mut found[i].info),
        None => raw_info(src.len()),
    };
    for p in found {
        match p.kind {
            "iso" => {
                info.insert("iso".into(), Value::Object(p.info));
            }
            "gpt" | "mbr" => {
                info.insert("partition_table".into(), Value::Object(p.info));
            }
            _ => {}
        }
    }
    info.insert("detected_formats".into(), Value::Array(detected));
    info.insert("filename".into(), name.into());
    if let Some(a) = src.allocated() {
        info.insert("actual_size".into(), a.into());
    }
    Ok(Probe { info })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reader_bounds() {
        let data = vec![7u8; 100];
        let r = Reader::new(&data, "t");
        assert_eq!(r.read(90, 10).unwrap().len(), 10);
        assert!(matches!(r.read(95, 10), Err(FormatError::Truncated { .. })));
        assert!(matches!(
            r.read(u64::MAX, 2),
            Err(FormatError::Truncated { .. })
        ));
        assert_eq!(r.read_upto(95, 10).unwrap().len(), 5);
        assert!(r.read_upto(1000, 10).unwrap().is_empty());
        let big = vec![0u8; MAX_READ + 1];
        let r = Reader::new(&big, "t");
        assert!(matches!(
            r.read(0, MAX_READ + 1),
            Err(FormatError::TooLarge { .. })
        ));
    }

    #[test]
    fn budget_is_enforced() {
        let data = vec![0u8; MAX_READ];
        let r = Reader::new(&data, "t");
        for _ in 0..(BUDGET / MAX_READ as u64) {
            r.read(0, MAX_READ).unwrap();
        }
        assert!(matches!(r.read(0, 1), Err(FormatError::TooLarge { .. })));
    }

    #[test]
    fn backing_names_resolve_like_qemu() {
        assert_eq!(
            full_backing_filename("chain/top.qcow2", "mid.qcow2"),
            "chain/mid.qcow2"
        );
        assert_eq!(full_backing_filename("top.qcow2", "base.raw"), "base.raw");
        assert_eq!(
            full_backing_filename("/a/top", "/etc/passwd"),
            "/etc/passwd"
        );
        assert_eq!(full_backing_filename("a/top", "http://h/x"), "http://h/x");
        assert_eq!(
            full_backing_filename("a/top", "json:{\"a\":1}"),
            "json:{\"a\":1}"
        );
        assert_eq!(full_backing_filename("a/top", "../b"), "a/../b");
    }

    #[test]
    fn empty_and_tiny_inputs_are_raw() {
        for (len, size) in [
            (0usize, 0u64),
            (1, 512),
            (17, 512),
            (511, 512),
            (4096, 4096),
        ] {
            let data = vec![0u8; len];
            let p = probe(&data, "x", None).unwrap();
            assert_eq!(p.info["format"], "raw");
            assert_eq!(p.info["virtual_size"], size);
        }
    }
}
