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
//! `Ok(None)` when the bytes are not that format, `Ok(Some)` with the
//! facts typed (the common ones in [`Parsed`], the format's own in its
//! `Details` struct), and `Err` when the magic matches but the header is
//! broken or hostile. Nothing here builds JSON: the types serialize to
//! qemu's JSON shape (snake_case keys, in qemu's order) where a record is
//! written ([`Probe::to_info`]).
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

use serde::Serialize;
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
    /// Where the parser expects to read next, once a header has pointed
    /// there (VHDX: its metadata and BAT). A hint only: a remote source
    /// may fetch nearby ranges in one request; the reads still decide what
    /// is read and what is found.
    fn will_read(&self, _ranges: &[std::ops::Range<u64>]) {}
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

impl FileSource {
    /// A regular file the caller opened and `fstat`ed itself (as
    /// `system::tree::Dir::open_if_file` does), with the length and
    /// allocation that status of this very handle gives: no second stat
    /// per file. Anything but a regular file is `not_regular`.
    pub fn from_status(file: std::fs::File, st: &system::tree::Status) -> io::Result<Self> {
        if st.kind != system::tree::Kind::File {
            return Err(system::files::refusal(
                system::kind::ErrorKind::NotRegular,
                "is not a regular file",
            ));
        }
        Ok(FileSource {
            len: st.size,
            allocated: st.allocated,
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
    /// Reads this large go to the source in one piece, uncached: a 64 KiB
    /// VHDX region table is read once, and copying it through sixteen
    /// cached blocks (sixteen reads, sixteen buffers) cost more than the
    /// rest of the probe.
    const DIRECT: usize = 16 << 10;

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
        if len >= Self::DIRECT {
            return self.src.read_vec(offset, len);
        }
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
    fn will_read(&self, ranges: &[std::ops::Range<u64>]) {
        self.src.will_read(ranges);
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

    /// Tell the source where this parser will read next ([`Source::will_read`]).
    pub fn will_read(&self, ranges: &[std::ops::Range<u64>]) {
        self.src.will_read(ranges);
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

/// What a probe can find: a qemu driver name, or a layout qemu reads as
/// raw (`iso`, `gpt`, `mbr`: never a probe's [`Probe::format`], only in
/// [`Probe::detected`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Format {
    /// No header qemu probes: the bytes are the disk.
    Raw,
    /// QEMU copy-on-write v2/v3.
    Qcow2,
    /// QEMU copy-on-write v1.
    Qcow,
    /// QEMU enhanced disk.
    Qed,
    /// LUKS1 encrypted volume.
    Luks,
    /// VMware disk (sparse, stream-optimized or a descriptor).
    Vmdk,
    /// VHD (qemu calls it `vpc`).
    Vpc,
    /// Hyper-V VHDX.
    Vhdx,
    /// VirtualBox disk.
    Vdi,
    /// Parallels/Virtuozzo (`ploop`).
    Parallels,
    /// Bochs growing disk.
    Bochs,
    /// Apple disk image (UDIF).
    Dmg,
    /// Compressed loop (cloop).
    Cloop,
    /// ISO 9660 / UDF, a layout qemu reads as raw.
    Iso,
    /// A GPT partition table, a layout qemu reads as raw.
    Gpt,
    /// An MBR partition table, a layout qemu reads as raw.
    Mbr,
}

impl Format {
    /// The name qemu (and every record) uses.
    pub fn as_str(self) -> &'static str {
        match self {
            Format::Raw => "raw",
            Format::Qcow2 => "qcow2",
            Format::Qcow => "qcow",
            Format::Qed => "qed",
            Format::Luks => "luks",
            Format::Vmdk => "vmdk",
            Format::Vpc => "vpc",
            Format::Vhdx => "vhdx",
            Format::Vdi => "vdi",
            Format::Parallels => "parallels",
            Format::Bochs => "bochs",
            Format::Dmg => "dmg",
            Format::Cloop => "cloop",
            Format::Iso => "iso",
            Format::Gpt => "gpt",
            Format::Mbr => "mbr",
        }
    }

    /// Whether this is a layout qemu reads as raw (`iso`, `gpt`, `mbr`).
    pub fn is_layout(self) -> bool {
        matches!(self, Format::Iso | Format::Gpt | Format::Mbr)
    }

    /// Every format, in declaration order.
    pub const ALL: [Format; 16] = [
        Format::Raw,
        Format::Qcow2,
        Format::Qcow,
        Format::Qed,
        Format::Luks,
        Format::Vmdk,
        Format::Vpc,
        Format::Vhdx,
        Format::Vdi,
        Format::Parallels,
        Format::Bochs,
        Format::Dmg,
        Format::Cloop,
        Format::Iso,
        Format::Gpt,
        Format::Mbr,
    ];

    /// The format qemu (or a record) names `name`.
    pub fn from_name(name: &str) -> Option<Format> {
        Format::ALL.into_iter().find(|f| f.as_str() == name)
    }

    /// How far from the start this format keeps structures at fixed
    /// offsets: what a probe reads before the header says where else to
    /// look. VHDX's identifier, two headers and two region tables reach
    /// 320 KiB; every other format's fixed part lies in the first 64 KiB.
    /// A remote reader fetches this much at once when it is told the
    /// format to expect (a hint only: the bytes decide what they are).
    pub fn fixed_head(self) -> u64 {
        match self {
            Format::Vhdx => vhdx::FIXED_HEAD,
            _ => 64 << 10,
        }
    }
}

impl std::fmt::Display for Format {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl PartialEq<str> for Format {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for Format {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl Serialize for Format {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// A string from a header as qemu prints it: the (lossy) text, and, when
/// the bytes are not UTF-8, their standard base64 for the `<key>_bytes`
/// twin.
pub(crate) fn text(b: &[u8]) -> (String, Option<String>) {
    system::text::with_bytes(b)
}

/// A backing file as a header names it (nothing is opened).
#[derive(Debug, Clone, PartialEq)]
pub struct Backing {
    /// The name's exact bytes (not always UTF-8).
    pub name: Vec<u8>,
    /// The backing format recorded with it (qemu-img's `-F`), if any.
    pub format: Option<Vec<u8>>,
    /// qemu's `full-backing-filename` (see [`full_backing_filename`]).
    full: String,
    /// Its exact bytes, where it is printed (a non-UTF-8 name).
    full_bytes: Option<Vec<u8>>,
}

impl Backing {
    /// The backing name `name` of image `image`, resolved as qemu does;
    /// a non-UTF-8 name also gets its resolved bytes.
    pub(crate) fn new(image: &str, name: &[u8]) -> Self {
        let lossy = String::from_utf8_lossy(name);
        let full = full_backing_filename(image, &lossy);
        let full_bytes = match std::str::from_utf8(name) {
            Ok(_) => None,
            Err(_) => full.strip_suffix(lossy.as_ref()).map(|prefix| {
                let mut raw = prefix.as_bytes().to_vec();
                raw.extend_from_slice(name);
                raw
            }),
        };
        Backing {
            name: name.to_vec(),
            format: None,
            full,
            full_bytes,
        }
    }

    /// Without the resolved name's bytes: VMDK's parent hint has always
    /// been reported so.
    pub(crate) fn without_full_bytes(mut self) -> Self {
        self.full_bytes = None;
        self
    }

    /// With the backing format `f`.
    pub(crate) fn with_format(mut self, f: &[u8]) -> Self {
        self.format = Some(f.to_vec());
        self
    }

    /// The name as text (invalid UTF-8 replaced).
    pub fn name_lossy(&self) -> std::borrow::Cow<'_, str> {
        String::from_utf8_lossy(&self.name)
    }

    /// The backing format as text, if recorded.
    pub fn format_lossy(&self) -> Option<std::borrow::Cow<'_, str>> {
        self.format.as_deref().map(String::from_utf8_lossy)
    }

    /// qemu's `full-backing-filename`.
    pub fn full(&self) -> &str {
        &self.full
    }
}

impl Serialize for Backing {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut m = s.serialize_map(None)?;
        let (name, name_bytes) = text(&self.name);
        m.serialize_entry("backing_filename", &name)?;
        if let Some(b) = &name_bytes {
            m.serialize_entry("backing_filename_bytes", b)?;
        }
        if let Some(b) = &self.full_bytes {
            m.serialize_entry("full_backing_filename_bytes", &system::text::base64(b))?;
        }
        m.serialize_entry("full_backing_filename", &self.full)?;
        if let Some(f) = &self.format {
            let (f, f_bytes) = text(f);
            m.serialize_entry("backing_filename_format", &f)?;
            if let Some(b) = &f_bytes {
                m.serialize_entry("backing_filename_format_bytes", b)?;
            }
        }
        m.end()
    }
}

/// qemu's `format-specific`: the driver's name and its own data.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FormatSpecific<T> {
    /// The driver (`qcow2`, `luks`, `vmdk`).
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// What that driver reports.
    pub data: T,
}

/// The facts one format reports beyond the common ones, in qemu's JSON
/// shape (snake_case keys, in the order they are written).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
// The big headers are boxed: a probe moves its Details around.
pub enum Details {
    /// Raw bytes: nothing beyond the common fields.
    Raw,
    /// LUKS1.
    Luks(Box<luks::Details>),
    /// qcow2.
    Qcow2(Box<qcow2::Details>),
    /// qcow (v1).
    Qcow(qcow::Details),
    /// QED.
    Qed(qed::Details),
    /// VHD.
    Vpc(Box<vhd::Details>),
    /// VHDX.
    Vhdx(Box<vhdx::Details>),
    /// VMDK.
    Vmdk(Box<vmdk::Details>),
    /// VDI.
    Vdi(vdi::Details),
    /// Parallels.
    Parallels(parallels::Details),
    /// Bochs.
    Bochs(bochs::Details),
    /// UDIF (dmg).
    Dmg(dmg::Details),
    /// cloop.
    Cloop(cloop::Details),
    /// An ISO 9660/UDF layout (never a probe's format).
    Iso(iso::Iso),
    /// A partition table (never a probe's format).
    Partition(partition::Table),
}

/// One format found in the bytes.
#[derive(Debug, Clone, PartialEq)]
pub struct Parsed {
    /// What was found: a qemu driver or a layout qemu reads as raw.
    pub kind: Format,
    /// Whether qemu-img, probing without `-f`, picks this driver (a fixed
    /// VHD has no header at offset 0, so qemu does not; nor for ISO/GPT/MBR).
    pub qemu_probes: bool,
    /// The disk's size as qemu reports it (0 for a layout).
    pub virtual_size: u64,
    /// qemu's `cluster-size`, where the format has one (an `int` in
    /// qemu: VHD's 2 GiB blocks print negative).
    pub cluster_size: Option<i64>,
    /// Whether the data is encrypted.
    pub encrypted: bool,
    /// qemu's `dirty-flag`, where the format reports one.
    pub dirty_flag: Option<bool>,
    /// The backing file the header names.
    pub backing: Option<Backing>,
    /// The external data file the header names (qcow2).
    pub data_file: Option<Vec<u8>>,
    /// Everything else: qemu's `snapshots` and `format_specific`, plus `header` with facts qemu does not print
    /// (used by the acceptance checks); for a layout, its details.
    pub details: Details,
}

impl Parsed {
    /// A disk of `kind` that qemu probes, of `virtual_size` bytes, with no
    /// cluster size, encryption, dirty flag, backing or data file (set
    /// those with struct update syntax).
    pub fn new(kind: Format, virtual_size: u64, details: Details) -> Parsed {
        Parsed {
            kind,
            qemu_probes: true,
            virtual_size,
            cluster_size: None,
            encrypted: false,
            dirty_flag: None,
            backing: None,
            data_file: None,
            details,
        }
    }

    /// A layout qemu reads as raw (ISO, GPT, MBR): no size of its own.
    pub fn layout(kind: Format, details: Details) -> Parsed {
        Parsed {
            qemu_probes: false,
            ..Parsed::new(kind, 0, details)
        }
    }

    /// The fields as qemu's JSON (what the probe prints for this format;
    /// for a layout, its details alone): for tests.
    #[cfg(test)]
    pub(crate) fn info(&self) -> Map<String, Value> {
        #[derive(Serialize)]
        struct View<'a> {
            format: Format,
            virtual_size: u64,
            #[serde(skip_serializing_if = "Option::is_none")]
            cluster_size: Option<i64>,
            encrypted: bool,
            #[serde(skip_serializing_if = "Option::is_none")]
            dirty_flag: Option<bool>,
            #[serde(flatten)]
            backing: &'a Option<Backing>,
            #[serde(flatten)]
            details: &'a Details,
        }
        let v = if self.kind.is_layout() {
            serde_json::to_value(&self.details)
        } else {
            serde_json::to_value(View {
                format: self.kind,
                virtual_size: self.virtual_size,
                cluster_size: self.cluster_size,
                encrypted: self.encrypted,
                dirty_flag: self.dirty_flag,
                backing: &self.backing,
                details: &self.details,
            })
        };
        match v {
            Ok(Value::Object(m)) => m,
            _ => Map::new(),
        }
    }
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

/// What probing found: the facts every caller needs, typed, and the
/// format's own [`Details`]. Serialized, it is qemu's `info` in JSON
/// (snake_case keys), as the records print it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Probe {
    /// The format qemu reads the image as (`raw` when it probes none).
    pub format: Format,
    /// The disk's size in bytes, as qemu reports it.
    pub virtual_size: u64,
    /// qemu's `cluster-size`, where the format has one (an `int` in
    /// qemu: VHD's 2 GiB blocks print negative).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cluster_size: Option<i64>,
    /// Whether the data is encrypted.
    pub encrypted: bool,
    /// qemu's `dirty-flag`, where the format reports one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dirty_flag: Option<bool>,
    /// The backing file the header names, if any.
    #[serde(flatten)]
    pub backing: Option<Backing>,
    /// The external data file the header names (qcow2), if any; printed
    /// inside `format_specific`.
    #[serde(skip)]
    pub data_file: Option<Vec<u8>>,
    /// The format's own facts.
    #[serde(flatten)]
    pub details: Details,
    /// An ISO 9660/UDF layout found in the bytes too.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub iso: Option<iso::Iso>,
    /// A partition table found in the bytes too.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub partition_table: Option<partition::Table>,
    /// Every format the bytes match (`raw` first when qemu probes none);
    /// more than one is a polyglot.
    #[serde(rename = "detected_formats")]
    pub detected: Vec<Format>,
    /// The name the image was probed under.
    pub filename: String,
    /// Bytes allocated on the host, where known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub actual_size: Option<u64>,
}

impl Probe {
    /// The probe as qemu's `info` JSON object (the record's shape).
    pub fn to_info(&self) -> Map<String, Value> {
        match serde_json::to_value(self) {
            Ok(Value::Object(m)) => m,
            // Serializing these types to a Value cannot fail (string keys,
            // no non-finite floats).
            _ => Map::new(),
        }
    }
}

/// Raw: whole 512-byte sectors, nothing encrypted, nothing dirty.
fn raw(len: u64) -> Parsed {
    Parsed {
        kind: Format::Raw,
        qemu_probes: true,
        // qemu sees whole 512-byte sectors: a 7-byte file is 512 bytes to it.
        virtual_size: len.div_ceil(512).saturating_mul(512),
        cluster_size: None,
        encrypted: false,
        dirty_flag: Some(false),
        backing: None,
        data_file: None,
        details: Details::Raw,
    }
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
    let mut detected: Vec<Format> = found.iter().map(|p| p.kind).collect();
    if forced.is_none() && !found.iter().any(|p| p.qemu_probes) {
        detected.insert(0, Format::Raw);
    }
    // The winner gives the facts; layouts qemu reads as raw are attached
    // as details. Moved, not copied.
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
        // A layout forced (`iso`, `partition`: no qemu format) is read as
        // raw, with the layout attached.
        Some(_) if found[0].kind.is_layout() => None,
        Some(_) => Some(0),
        None => picked.or_else(|| found.iter().position(|p| p.qemu_probes)),
    };
    let top = match winner {
        Some(i) => found.swap_remove(i),
        None => raw(src.len()),
    };
    let (mut iso, mut partition_table) = (None, None);
    for p in found {
        match (p.kind, p.details) {
            (_, Details::Iso(i)) => iso = Some(i),
            (_, Details::Partition(t)) => partition_table = Some(t),
            _ => {}
        }
    }
    Ok(Probe {
        format: top.kind,
        virtual_size: top.virtual_size,
        cluster_size: top.cluster_size,
        encrypted: top.encrypted,
        dirty_flag: top.dirty_flag,
        backing: top.backing,
        data_file: top.data_file,
        details: top.details,
        iso,
        partition_table,
        detected,
        filename: name.to_owned(),
        actual_size: src.allocated(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_format_by_its_name_and_its_fixed_head() {
        for f in Format::ALL {
            assert_eq!(Format::from_name(f.as_str()), Some(f));
            assert!(f.fixed_head() >= 64 << 10);
        }
        assert_eq!(Format::from_name("vhd"), None, "Glance's name, not qemu's");
        // The second region table ends the fixed part of a VHDX.
        assert_eq!(Format::Vhdx.fixed_head(), 320 << 10);
    }

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
            assert_eq!(p.format, Format::Raw);
            assert_eq!(p.virtual_size, size);
        }
    }
}
