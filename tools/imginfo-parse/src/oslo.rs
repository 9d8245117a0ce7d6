//! `check.oslo`: the verdict oslo.utils' format inspector (10.2.0,
//! `imageutils.format_inspector`) reaches on an image's bytes, the way
//! Nova, Glance's image conversion and Cinder call it since 2024:
//! `detect_file_format(path)`, then `safety_check()` on the inspector it
//! returns.
//!
//! This is a model of that code, not a port of its words: the same
//! inspectors (qcow2, vhd, vhdx, vmdk, vdi, qed, iso, gpt, luks, raw), fed
//! the same 4096-byte chunks, capturing the same regions with the same
//! quirks (a region created after its offset went by captures whatever
//! comes next; an inspector that raised keeps the state it had and still
//! counts when the formats are tallied), the same early stop (every
//! inspector complete) and the same end-of-file decision. Its rules are
//! stricter than qemu's in places (a protective MBR's exact shape, LUKS
//! version 1 only, the VMDK descriptor at sector 1 and every descriptor
//! line known), so an image qemu opens safely may still be one Glance and
//! Nova refuse: this says so.
//!
//! Only the regions oslo keeps are read (headers, the VMDK descriptor up
//! to 1 MiB, the VHDX tables, the last 1536 bytes for a VMDK footer):
//! chunks no region wants are skipped unread. Every capture is bounded by
//! a region length oslo itself caps (at most 1 MiB); nothing is allocated
//! from a length read from the file.
//!
//! The answer: `{acceptable, format, failures}`: `format` is the name oslo
//! detected (`null` when detection raised), `failures` oslo's check names
//! (`backing_file`, `data_file`, `unknown_features`, `banned`,
//! `descriptor`, `footer`, `mbr`, `version`) or what stopped it:
//! `incomplete` (the file ends inside the inspector's regions: "Incomplete
//! file cannot be safety checked"), `multiple_formats` (more than one
//! format matched), `inspector_error` (oslo itself raises, e.g. the
//! AttributeError of its VMDK inspector on a text sector followed by a
//! non-ASCII byte), `not_read` (a stream whose end was not read, or a read
//! error: no verdict is guessed).

use formats::Source;
use serde_json::{Value, json};

/// oslo's `detect_file_format` reads 4096 bytes at a time.
const CHUNK: u64 = 4096;
/// VMDK: the only descriptor location oslo accepts, and its size cap.
const VMDK_DESC_OFFSET: u128 = 0x200;
const VMDK_DESC_MAX: u128 = (1 << 20) - 1;
const VMDK_MIN_SPARSE_HEADER: u128 = 64;
const VMDK_GD_AT_END: u64 = u64::MAX;
/// VHDX: region table and metadata table captures.
const VHDX_HEADER_AT: u128 = 192 * 1024;
const VHDX_TABLE: u128 = 64 * 1024;
/// GUIDs as they lie on disk (the first three fields little-endian).
const VHDX_METAREGION: [u8; 16] = [
    0x06, 0xA2, 0x7C, 0x8B, 0x90, 0x47, 0x9A, 0x4B, 0xB8, 0xFE, 0x57, 0x5F, 0x05, 0x0F, 0x88, 0x6E,
];
const VHDX_VIRTUAL_DISK_SIZE: [u8; 16] = [
    0x24, 0x42, 0xA5, 0x2F, 0x1B, 0xCD, 0x76, 0x48, 0xB2, 0x11, 0x5D, 0xBE, 0xD8, 0x3B, 0xF4, 0xB8,
];

/// The non-raw inspectors, in no meaningful order (oslo keeps a set).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Qcow2,
    Vhd,
    Vhdx,
    Vmdk,
    Vdi,
    Qed,
    Iso,
    Gpt,
    Luks,
}

const KINDS: [Kind; 9] = [
    Kind::Qcow2,
    Kind::Vhd,
    Kind::Vhdx,
    Kind::Vmdk,
    Kind::Vdi,
    Kind::Qed,
    Kind::Iso,
    Kind::Gpt,
    Kind::Luks,
];

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Qcow2 => "qcow2",
            Kind::Vhd => "vhd",
            Kind::Vhdx => "vhdx",
            Kind::Vmdk => "vmdk",
            Kind::Vdi => "vdi",
            Kind::Qed => "qed",
            Kind::Iso => "iso",
            Kind::Gpt => "gpt",
            Kind::Luks => "luks",
        }
    }
}

/// A raised exception inside an inspector's hooks (oslo then drops the
/// inspector from the stream, keeping its state).
#[derive(Debug)]
struct Raised;

/// A byte range an inspector keeps, filled as chunks go by.
#[derive(Debug)]
struct Region {
    id: u64,
    name: &'static str,
    offset: u128,
    length: u128,
    min_length: Option<u128>,
    /// The last `length` bytes of the stream, complete only at its end.
    end: bool,
    finished: bool,
    data: Vec<u8>,
}

impl Region {
    fn len(&self) -> u128 {
        self.data.len() as u128
    }

    fn complete(&self) -> bool {
        let whole = match self.min_length {
            Some(m) => m <= self.len(),
            None => self.length == self.len(),
        };
        whole && (!self.end || self.finished)
    }

    /// Take what `chunk` (ending at `current`) holds for this region;
    /// whether data (outside an end region) was added.
    fn capture(&mut self, chunk: &[u8], current: u128) -> bool {
        let cap = usize::try_from(self.length).unwrap_or(usize::MAX);
        if self.end {
            self.data.extend_from_slice(chunk);
            if self.data.len() > cap {
                let cut = self.data.len() - cap;
                self.data.drain(..cut);
            }
            self.offset = current.saturating_sub(self.len());
            return false;
        }
        let read_start = current.saturating_sub(chunk.len() as u128);
        let hit = (read_start <= self.offset && self.offset <= current)
            || (self.offset <= read_start && read_start <= self.offset.saturating_add(self.length));
        if !hit {
            return false;
        }
        let lead = usize::try_from(self.offset.saturating_sub(read_start))
            .unwrap_or(usize::MAX)
            .min(chunk.len());
        let before = self.data.len();
        let room = cap.saturating_sub(before);
        let take = chunk.len().saturating_sub(lead).min(room);
        if let Some(part) = chunk.get(lead..lead + take) {
            self.data.extend_from_slice(part);
        }
        self.data.len() != before
    }
}

fn u16_le(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(b.get(at..at + 2)?.try_into().ok()?))
}
fn u32_le(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
}
fn u64_le(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(b.get(at..at + 8)?.try_into().ok()?))
}
fn u16_be(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes(b.get(at..at + 2)?.try_into().ok()?))
}
fn u32_be(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_be_bytes(b.get(at..at + 4)?.try_into().ok()?))
}
fn u64_be(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_be_bytes(b.get(at..at + 8)?.try_into().ok()?))
}

/// Python's `str.isspace()` on an ASCII character.
fn py_space(c: u8) -> bool {
    matches!(c, 0x09..=0x0d | 0x1c..=0x20)
}

/// Python's `str.strip()` on ASCII text.
fn py_strip(s: &str) -> &str {
    s.trim_matches(|c: char| c.is_ascii() && py_space(c as u8))
}

/// The fields of a VMDK "hosted sparse extent" header oslo compares.
#[derive(Debug, PartialEq, Eq)]
struct SparseHeader {
    sig: [u8; 4],
    ver: u32,
    desc_sec: u64,
    desc_num: u64,
    gd_offset: u64,
}

fn sparse_header(b: &[u8], at: usize) -> Option<SparseHeader> {
    let h = b.get(at..at + 64)?;
    Some(SparseHeader {
        sig: h.get(0..4)?.try_into().ok()?,
        ver: u32_le(h, 4)?,
        desc_sec: u64_le(h, 28)?,
        desc_num: u64_le(h, 36)?,
        gd_offset: u64_le(h, 56)?,
    })
}

/// One of oslo's inspectors, with the state it keeps between chunks.
#[derive(Debug)]
struct Inspector {
    kind: Kind,
    regions: Vec<Region>,
    total: u128,
    /// Raised while eating a chunk: fed nothing more, still tallied.
    errored: bool,
    /// Bumped on every change that can alter what the next chunk does.
    generation: u64,
    next_id: u64,
    checks: Vec<&'static str>,
    /// qcow2: the header's version, once a header with the magic is in.
    qcow2_version: Option<u32>,
    /// VMDK: the lowered descriptor text and its create type (`None`:
    /// never set; oslo's `vmdktype` attribute is then missing).
    desc_text: Option<String>,
    vmdk_type: Option<String>,
}

impl Inspector {
    fn new(kind: Kind) -> Self {
        let mut i = Inspector {
            kind,
            regions: Vec::new(),
            total: 0,
            errored: false,
            generation: 0,
            next_id: 0,
            checks: Vec::new(),
            qcow2_version: None,
            desc_text: None,
            vmdk_type: None,
        };
        match kind {
            Kind::Qcow2 => {
                i.add("header", 0, 512, None);
                i.checks = vec!["backing_file", "data_file", "unknown_features"];
            }
            Kind::Qed => {
                i.add("header", 0, 512, None);
                i.checks = vec!["banned"];
            }
            Kind::Vhd | Kind::Vdi => {
                i.add("header", 0, 512, None);
                i.checks = vec!["null"];
            }
            Kind::Vhdx => {
                i.add("ident", 0, 32, None);
                i.add("header", VHDX_HEADER_AT, VHDX_TABLE, None);
                i.checks = vec!["null"];
            }
            Kind::Vmdk => {
                i.add("header", 0, 512, Some(VMDK_MIN_SPARSE_HEADER));
                i.add("descriptor", 0, VMDK_DESC_MAX, Some(4));
                i.checks = vec!["descriptor"];
            }
            Kind::Iso => {
                i.add("system_area", 0, 32 * 1024, None);
                i.add("header", 32 * 1024, 2 * 1024, None);
                i.checks = vec!["null"];
            }
            Kind::Gpt => {
                i.add("mbr", 0, 512, None);
                i.checks = vec!["mbr"];
            }
            Kind::Luks => {
                i.add("header", 0, 592, None);
                // Without a passphrase (as Nova, Glance and Cinder call
                // it) "passphrase" and "inner_safety" always pass.
                i.checks = vec!["version", "passphrase", "inner_safety"];
            }
        }
        i
    }

    fn add(&mut self, name: &'static str, offset: u128, length: u128, min: Option<u128>) {
        self.push(Region {
            id: 0,
            name,
            offset,
            length,
            min_length: min,
            end: false,
            finished: false,
            data: Vec::new(),
        });
    }

    fn push(&mut self, mut r: Region) {
        r.id = self.next_id;
        self.next_id += 1;
        self.generation += 1;
        self.regions.push(r);
    }

    fn delete(&mut self, name: &str) {
        self.regions.retain(|r| r.name != name);
        self.generation += 1;
    }

    fn region(&self, name: &str) -> Option<&Region> {
        self.regions.iter().find(|r| r.name == name)
    }

    fn data(&self, name: &str) -> &[u8] {
        self.region(name).map_or(&[][..], |r| r.data.as_slice())
    }

    fn has(&self, name: &str) -> bool {
        self.region(name).is_some()
    }

    fn region_complete(&self, name: &str) -> bool {
        self.region(name).is_some_and(Region::complete)
    }

    /// Every region complete (no regions: complete).
    fn complete(&self) -> bool {
        self.regions.iter().all(Region::complete)
    }

    fn capture(&mut self, chunk: &[u8], only: Option<&[u64]>) {
        let current = self.total;
        let mut grew = false;
        for r in &mut self.regions {
            if only.is_some_and(|ids| !ids.contains(&r.id)) {
                continue;
            }
            if r.end || !r.complete() {
                grew |= r.capture(chunk, current);
            }
        }
        if grew {
            self.generation += 1;
        }
    }

    /// oslo's `eat_chunk`: capture, post-process, let regions the
    /// post-processing added see this chunk, then handle regions that
    /// became complete.
    /// `end`: the stream position after `chunk` (chunks nobody wants are
    /// skipped, not fed, so the position is given, not counted).
    fn eat(&mut self, chunk: &[u8], end: u128) -> Result<(), Raised> {
        let pre: Vec<u64> = self.regions.iter().map(|r| r.id).collect();
        let pre_complete: Vec<u64> = self
            .regions
            .iter()
            .filter(|r| r.complete())
            .map(|r| r.id)
            .collect();
        self.total = end;
        self.capture(chunk, None);
        self.post_process()?;
        let new: Vec<u64> = self
            .regions
            .iter()
            .map(|r| r.id)
            .filter(|id| !pre.contains(id))
            .collect();
        if !new.is_empty() {
            self.capture(chunk, Some(&new));
        }
        let done: Vec<&'static str> = self
            .regions
            .iter()
            .filter(|r| r.complete() && !pre_complete.contains(&r.id))
            .map(|r| r.name)
            .collect();
        for name in done {
            self.on_complete(name);
        }
        Ok(())
    }

    fn finish(&mut self) {
        for r in &mut self.regions {
            if r.end {
                r.finished = true;
            }
        }
    }

    fn post_process(&mut self) -> Result<(), Raised> {
        match self.kind {
            Kind::Vmdk => self.vmdk_post_process(),
            Kind::Vhdx => self.vhdx_post_process(),
            _ => Ok(()),
        }
    }

    fn on_complete(&mut self, name: &str) {
        match self.kind {
            Kind::Qcow2 => {
                let h = self.data("header");
                self.qcow2_version = (h.get(0..4) == Some(b"QFI\xfb"))
                    .then(|| u32_be(h, 4))
                    .flatten();
                self.generation += 1;
            }
            Kind::Vmdk if name == "descriptor" => {
                self.vmdk_parse_descriptor();
                self.generation += 1;
            }
            _ => {}
        }
    }

    // ------------------------------------------------------------ VMDK

    fn vmdk_post_process(&mut self) -> Result<(), Raised> {
        if !self.region_complete("header") {
            return Ok(());
        }
        let data = self.data("header");
        let h = sparse_header(data, 0).ok_or(Raised)?;
        let is_text = data
            .iter()
            .all(|&c| (0x20..0x7f).contains(&c) || py_space(c));
        if &h.sig != b"KDMV" {
            if is_text {
                // A descriptor file: its text is the descriptor region
                // already captured from the start.
                self.delete("header");
                return Ok(());
            }
            return Err(Raised);
        }
        if !(1..=3).contains(&h.ver) {
            return Err(Raised);
        }
        if h.gd_offset == VMDK_GD_AT_END && !self.has("footer") {
            self.push(Region {
                id: 0,
                name: "footer",
                offset: 1536,
                length: 1536,
                min_length: None,
                end: true,
                finished: false,
                data: Vec::new(),
            });
            self.checks.push("footer");
        }
        let desc_offset = u128::from(h.desc_sec) * 512;
        let desc_size = (u128::from(h.desc_num) * 512).min(VMDK_DESC_MAX);
        if desc_offset != VMDK_DESC_OFFSET {
            return Err(Raised);
        }
        if self.region("descriptor").is_some_and(|r| r.offset == 0) {
            self.delete("descriptor");
            self.add("descriptor", desc_offset, desc_size, None);
        }
        Ok(())
    }

    fn vmdk_parse_descriptor(&mut self) {
        let mut data = self.data("descriptor");
        if let Some(nul) = data.iter().position(|&c| c == 0) {
            data = data.get(..nul).unwrap_or_default();
        }
        if !data.is_ascii() {
            // oslo logs and returns: neither the text nor the type is set.
            return;
        }
        let text = String::from_utf8_lossy(data).to_ascii_lowercase();
        const KEY: &str = "createtype=\"";
        let vmdk_type = match text.find(KEY) {
            None => "formatnotfound".to_owned(),
            Some(i) => {
                let start = i + KEY.len();
                // Python's str.find: -1 when absent, and a slice ending at
                // -1 stops before the last character.
                let end = text
                    .get(start..)
                    .and_then(|t| t.find('"'))
                    .map(|e| (start + e) as i64)
                    .unwrap_or(-1);
                if end - (start as i64) < 64 {
                    let stop = if end < 0 {
                        text.len().saturating_sub(1)
                    } else {
                        end as usize
                    };
                    text.get(start..stop.max(start)).unwrap_or("").to_owned()
                } else {
                    "formatnotfound".to_owned()
                }
            }
        };
        self.desc_text = Some(text);
        self.vmdk_type = Some(vmdk_type);
    }

    fn vmdk_format_match(&self) -> Result<bool, Raised> {
        if self.has("header") {
            Ok(self.data("header").starts_with(b"KDMV"))
        } else {
            // oslo reads `self.vmdktype`, never set if the descriptor did
            // not decode: AttributeError.
            self.vmdk_type
                .as_deref()
                .map(|t| t != "formatnotfound")
                .ok_or(Raised)
        }
    }

    /// oslo's `check_descriptor`.
    fn vmdk_descriptor_ok(&self) -> bool {
        let Some(text) = self.desc_text.as_deref().filter(|t| !t.is_empty()) else {
            return false;
        };
        if !matches!(
            self.vmdk_type.as_deref(),
            Some("monolithicsparse" | "streamoptimized")
        ) {
            return false;
        }
        let mut extents = Vec::new();
        for line in text.split('\n').map(py_strip) {
            if line.is_empty() || line.starts_with('#') || line.starts_with("ddb") {
                continue;
            }
            let key = line.split('=').next().unwrap_or("");
            if line.contains('=') && !key.contains(' ') {
                continue;
            }
            let first = line.split(' ').next().unwrap_or("");
            if matches!(first, "rw" | "rdonly" | "noaccess") {
                extents.push(line);
            } else {
                return false;
            }
        }
        !extents.is_empty() && !extents.iter().any(|l| l.contains('/'))
    }

    /// oslo's `check_footer`.
    fn vmdk_footer_ok(&self) -> bool {
        let footer = self.data("footer");
        let (Some(h), Some(f)) = (
            sparse_header(self.data("header"), 0),
            sparse_header(footer, 512),
        ) else {
            return false;
        };
        if h.sig != f.sig
            || h.ver != f.ver
            || h.desc_sec != f.desc_sec
            || h.desc_num != f.desc_num
            || f.gd_offset == VMDK_GD_AT_END
        {
            return false;
        }
        let marker = |b: Option<&[u8]>, val_zero: bool, typ: u32| {
            b.is_some_and(|m| {
                (!val_zero || u64_le(m, 0) == Some(0))
                    && u32_le(m, 8) == Some(0)
                    && u32_le(m, 12) == Some(typ)
                    && m.get(16..).is_some_and(|z| z.iter().all(|&c| c == 0))
            })
        };
        let last = footer.len().checked_sub(512).and_then(|s| footer.get(s..));
        marker(footer.get(..512), false, 3) && marker(last, true, 0)
    }

    // ------------------------------------------------------------ VHDX

    fn vhdx_post_process(&mut self) -> Result<(), Raised> {
        if self.region_complete("header") && !self.has("metadata") {
            let h = self.data("header");
            if u32_le(h, 0) != Some(0x6967_6572) {
                return Err(Raised);
            }
            let count = u32_le(h, 8).ok_or(Raised)?;
            if count >= 2048 {
                return Err(Raised);
            }
            for i in 0..count as usize {
                let e = 16 + i * 32;
                if h.get(e..e + 16) == Some(&VHDX_METAREGION[..]) {
                    let off = u64_le(h, e + 16).ok_or(Raised)?;
                    self.add("metadata", u128::from(off), VHDX_TABLE, None);
                    return Ok(());
                }
            }
        } else if self.has("metadata") && !self.has("vds") {
            let m = self.data("metadata");
            if m.len() < 32 {
                return Ok(());
            }
            if m.get(0..8) != Some(b"metadata") {
                return Err(Raised);
            }
            let count = usize::from(u16_le(m, 10).ok_or(Raised)?);
            if m.len() < 32 + count * 32 {
                return Ok(());
            }
            if count >= 2048 {
                return Err(Raised);
            }
            for i in 0..count {
                let e = 32 + i * 32;
                if m.get(e..e + 16) == Some(&VHDX_VIRTUAL_DISK_SIZE[..]) {
                    let item_off = u32_le(m, e + 16).ok_or(Raised)?;
                    let item_len = u32_le(m, e + 20).ok_or(Raised)?;
                    let have = m.len() as u128;
                    let base = self.region("metadata").map_or(0, |r| r.offset);
                    if let Some(r) = self.regions.iter_mut().find(|r| r.name == "metadata") {
                        // oslo stops the metadata capture where it is.
                        r.length = have;
                    }
                    self.add(
                        "vds",
                        base + u128::from(item_off),
                        u128::from(item_len).min(VHDX_TABLE),
                        None,
                    );
                    return Ok(());
                }
            }
        }
        Ok(())
    }

    // ------------------------------------------------------------ verdicts

    /// oslo's `format_match`; `Err` where oslo raises.
    fn format_match(&self) -> Result<bool, Raised> {
        let header = self.data("header");
        Ok(match self.kind {
            Kind::Qcow2 => self.region_complete("header") && self.qcow2_version.is_some(),
            Kind::Qed => self.region_complete("header") && header.starts_with(b"QED\0"),
            Kind::Vhd => header.starts_with(&formats::vhd::FOOTER_COOKIE),
            Kind::Vhdx => self.data("ident").starts_with(b"vhdxfile"),
            Kind::Vmdk => return self.vmdk_format_match(),
            Kind::Vdi => {
                self.region_complete("header") && u32_le(header, 0x40) == Some(0xBEDA_107F)
            }
            Kind::Iso => {
                self.complete() && matches!(header.get(1..6), Some(b"CD001" | b"NSR02" | b"NSR03"))
            }
            Kind::Gpt => {
                let mbr = self.data("mbr");
                let fat = mbr.get(0x10) == Some(&2) && mbr.get(0x15) == Some(&0xF8);
                self.region_complete("mbr") && u16_le(mbr, 510) == Some(0xAA55) && !fat
            }
            Kind::Luks => header.get(..6) == Some(b"LUKS\xba\xbe"),
        })
    }

    /// Whether the named safety check passes.
    fn passes(&self, check: &str) -> bool {
        let header = self.data("header");
        match check {
            "null" | "passphrase" | "inner_safety" => true,
            "banned" => false,
            "backing_file" => u64_be(header, 8) == Some(0),
            "data_file" => header.get(0x4f).is_some_and(|b| b & 4 == 0),
            "unknown_features" => match self.qcow2_version {
                Some(2) => true,
                Some(3) => {
                    header
                        .get(0x48..0x4f)
                        .is_some_and(|b| b.iter().all(|&c| c == 0))
                        && header.get(0x4f).is_some_and(|b| b & 0xf0 == 0)
                }
                _ => false,
            },
            "descriptor" => self.vmdk_descriptor_ok(),
            "footer" => self.vmdk_footer_ok(),
            "mbr" => gpt_mbr_ok(self.data("mbr")),
            "version" => u16_be(header, 6) == Some(1),
            _ => false,
        }
    }

    /// oslo's `safety_check()`: the failed check names.
    fn safety_check(&self) -> Result<Vec<&'static str>, &'static str> {
        if !self.complete() {
            return Err("incomplete");
        }
        if !self.format_match().map_err(|_| "inspector_error")? {
            return Err("inspector_error");
        }
        Ok(self
            .checks
            .iter()
            .copied()
            .filter(|c| !self.passes(c))
            .collect())
    }
}

/// oslo's `check_mbr_partitions` on a 512-byte first sector.
fn gpt_mbr_ok(mbr: &[u8]) -> bool {
    let mut valid = Vec::new();
    let mut found_gpt = false;
    for i in 0..4 {
        let Some(pte) = mbr.get(446 + 16 * i..446 + 16 * (i + 1)) else {
            return false;
        };
        let (boot, chs, ostype) = (pte[0], (pte[1], pte[2], pte[3]), pte[4]);
        if boot != 0 && boot != 0x80 {
            return false;
        }
        if ostype != 0 {
            valid.push(i);
        }
        if ostype == 0xEE {
            found_gpt = true;
            if chs != (0, 2, 0) || u32_le(pte, 8) != Some(1) {
                return false;
            }
        }
    }
    !valid.is_empty() && (!found_gpt || valid == [0])
}

/// What oslo's detection came to.
enum Detected {
    /// `None`: raw (nothing specific matched).
    Format(Option<usize>),
    Multiple,
    Raised,
    NotRead,
}

/// `InspectWrapper.formats` then `.format`: `Ok(None)` while undecided.
fn decide(insps: &[Inspector], finished: bool) -> Result<Option<Detected>, Raised> {
    let complete = insps.iter().all(Inspector::complete);
    let mut matches = Vec::new();
    for (n, i) in insps.iter().enumerate() {
        if i.format_match()? {
            matches.push(n);
        }
    }
    if !complete && !finished {
        return Ok(None);
    }
    Ok(Some(match matches.as_slice() {
        [] => Detected::Format(None),
        [one] => Detected::Format(Some(*one)),
        _ => Detected::Multiple,
    }))
}

/// The chunk at or after `from` that any live region next wants, or
/// `chunks` (the end) when none does.
fn next_wanted(insps: &[Inspector], from: u64, chunks: u64, size: u64) -> u64 {
    let start = u128::from(from) * u128::from(CHUNK);
    let mut best = u128::from(chunks);
    for i in insps.iter().filter(|i| !i.errored) {
        for r in &i.regions {
            let want = if r.end {
                (u128::from(size).saturating_sub(r.length) / u128::from(CHUNK))
                    .max(u128::from(from))
            } else if r.complete() {
                continue;
            } else if r.offset >= start {
                r.offset / u128::from(CHUNK)
            } else if start <= r.offset.saturating_add(r.length) {
                u128::from(from)
            } else {
                continue;
            };
            best = best.min(want);
        }
    }
    u64::try_from(best).unwrap_or(chunks).min(chunks)
}

/// Run oslo's `detect_file_format` over `src`. `readable`: for a stream
/// whose end was not reached, how many bytes were read (the model never
/// reads past them, and never guesses what lies there).
fn detect(src: &dyn Source, readable: Option<u64>) -> (Vec<Inspector>, Detected) {
    let mut insps: Vec<Inspector> = KINDS.iter().map(|&k| Inspector::new(k)).collect();
    let size = src.len();
    let chunks = size.div_ceil(CHUNK);
    let mut k = 0u64;
    let mut buf = vec![0u8; CHUNK as usize];
    while k < chunks {
        let at = k * CHUNK;
        let want = (size - at).min(CHUNK) as usize;
        if readable.is_some_and(|n| at + want as u64 > n) {
            return (insps, Detected::NotRead);
        }
        let Some(chunk) = buf.get_mut(..want) else {
            return (insps, Detected::NotRead);
        };
        match src.read_at(at, chunk) {
            Ok(n) if n == want => {}
            _ => return (insps, Detected::NotRead),
        }
        let before: Vec<(u64, bool)> = insps.iter().map(|i| (i.generation, i.errored)).collect();
        for i in insps.iter_mut().filter(|i| !i.errored) {
            if i.eat(chunk, u128::from(at) + want as u128).is_err() {
                i.errored = true;
            }
        }
        match decide(&insps, false) {
            Err(Raised) => return (insps, Detected::Raised),
            Ok(Some(d)) => {
                for i in &mut insps {
                    i.finish();
                }
                return (insps, d);
            }
            Ok(None) => {}
        }
        let changed = insps
            .iter()
            .zip(&before)
            .any(|(i, &(g, e))| i.generation != g || i.errored != e);
        k = if changed {
            k + 1
        } else {
            next_wanted(&insps, k + 1, chunks, size)
        };
    }
    if readable.is_some() {
        return (insps, Detected::NotRead);
    }
    // The empty read at the end is fed too, then the wrapper is closed.
    for i in insps.iter_mut().filter(|i| !i.errored) {
        if i.eat(&[], u128::from(size)).is_err() {
            i.errored = true;
        }
    }
    for i in &mut insps {
        i.finish();
    }
    match decide(&insps, true) {
        Ok(Some(d)) => (insps, d),
        Ok(None) | Err(Raised) => (insps, Detected::Raised),
    }
}

/// The `check.oslo` object for the image `src`. `readable` as in
/// [`detect`]: `Some(bytes read)` for a stream whose end was not read.
pub fn verdict(src: &dyn Source, readable: Option<u64>) -> Value {
    let (insps, detected) = detect(src, readable);
    let (format, failures): (Option<&str>, Vec<&str>) = match detected {
        Detected::Format(None) => (Some("raw"), Vec::new()),
        Detected::Format(Some(n)) => match insps.get(n) {
            Some(i) => (
                Some(i.kind.name()),
                i.safety_check().unwrap_or_else(|e| vec![e]),
            ),
            None => (None, vec!["inspector_error"]),
        },
        Detected::Multiple => (None, vec!["multiple_formats"]),
        Detected::Raised => (None, vec!["inspector_error"]),
        Detected::NotRead => (None, vec!["not_read"]),
    };
    json!({
        "acceptable": failures.is_empty(),
        "format": format,
        "failures": failures,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(b: &[u8]) -> Value {
        let s = crate::source::StreamBytes::from_prefix(b.to_vec(), true);
        verdict(&s, None)
    }

    fn put(b: &mut Vec<u8>, at: usize, bytes: &[u8]) {
        if b.len() < at + bytes.len() {
            b.resize(at + bytes.len(), 0);
        }
        b[at..at + bytes.len()].copy_from_slice(bytes);
    }

    fn fails(b: &[u8]) -> Vec<String> {
        v(b)["failures"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f.as_str().unwrap().to_owned())
            .collect()
    }

    fn qcow2(version: u32) -> Vec<u8> {
        let mut b = vec![0u8; 64 * 1024];
        put(&mut b, 0, b"QFI\xfb");
        put(&mut b, 4, &version.to_be_bytes());
        put(&mut b, 20, &16u32.to_be_bytes());
        put(&mut b, 24, &(1u64 << 20).to_be_bytes());
        b
    }

    #[test]
    fn empty_and_zeros_are_raw_and_safe() {
        assert_eq!(
            v(b""),
            json!({"acceptable": true, "format": "raw", "failures": []})
        );
        assert_eq!(v(&vec![0u8; 300_000])["format"], "raw");
    }

    #[test]
    fn qcow2_rules() {
        assert_eq!(
            v(&qcow2(3)),
            json!({"acceptable": true, "format": "qcow2", "failures": []})
        );
        assert_eq!(v(&qcow2(2))["acceptable"], true);
        let mut b = qcow2(3);
        put(&mut b, 8, &0x200u64.to_be_bytes());
        assert_eq!(fails(&b), ["backing_file"]);
        let mut b = qcow2(3);
        b[0x4f] = 4;
        assert_eq!(fails(&b), ["data_file"]);
        // Bits 0-3 known, 4 (extended L2) not.
        b[0x4f] = 0x0b;
        assert!(fails(&b).is_empty());
        b[0x4f] = 0x10;
        assert_eq!(fails(&b), ["unknown_features"]);
        let mut b = qcow2(3);
        b[0x48] = 1;
        assert_eq!(fails(&b), ["unknown_features"]);
        // Version 1 (qcow) and 0 are not 2 or 3.
        assert_eq!(fails(&qcow2(1)), ["unknown_features"]);
        // A header shorter than oslo's 512-byte capture: not qcow2 at all.
        assert_eq!(v(&qcow2(3)[..300])["format"], "raw");
    }

    #[test]
    fn qed_is_banned_vhd_and_vdi_pass() {
        let mut b = vec![0u8; 4096];
        put(&mut b, 0, b"QED\0");
        assert_eq!(
            v(&b),
            json!({"acceptable": false, "format": "qed", "failures": ["banned"]})
        );
        let mut b = vec![0u8; 4096];
        put(&mut b, 0, b"conectix");
        assert_eq!(v(&b)["format"], "vhd");
        assert_eq!(v(&b)["acceptable"], true);
        // Shorter than 512: matched, never complete.
        assert_eq!(
            v(&b[..100]),
            json!({"acceptable": false, "format": "vhd", "failures": ["incomplete"]})
        );
        let mut b = vec![0u8; 4096];
        put(&mut b, 0x40, &0xBEDA_107Fu32.to_le_bytes());
        assert_eq!(v(&b)["format"], "vdi");
    }

    fn gpt() -> Vec<u8> {
        let mut b = vec![0u8; 64 * 1024];
        put(&mut b, 446, &[0, 0, 2, 0, 0xEE, 0xff, 0xff, 0xff]);
        put(&mut b, 446 + 8, &1u32.to_le_bytes());
        put(&mut b, 446 + 12, &127u32.to_le_bytes());
        put(&mut b, 510, &[0x55, 0xAA]);
        b
    }

    #[test]
    fn gpt_protective_mbr_rules() {
        assert_eq!(
            v(&gpt()),
            json!({"acceptable": true, "format": "gpt", "failures": []})
        );
        let mut b = gpt();
        b[446 + 1..446 + 4].copy_from_slice(&[0, 1, 0]);
        assert_eq!(fails(&b), ["mbr"]);
        let mut b = gpt();
        put(&mut b, 446 + 8, &2u32.to_le_bytes());
        assert_eq!(fails(&b), ["mbr"]);
        let mut b = gpt();
        b[446] = 1;
        assert_eq!(fails(&b), ["mbr"]);
        let mut b = gpt();
        b[446 + 16 + 4] = 0x83;
        assert_eq!(fails(&b), ["mbr"]);
        // No partitions at all.
        let mut b = vec![0u8; 4096];
        put(&mut b, 510, &[0x55, 0xAA]);
        assert_eq!(fails(&b), ["mbr"]);
        // A FAT boot sector is not an MBR to oslo.
        b[0x10] = 2;
        b[0x15] = 0xF8;
        assert_eq!(v(&b)["format"], "raw");
        // An MBR with a plain partition is fine.
        let mut b = vec![0u8; 4096];
        put(&mut b, 446, &[0x80, 0, 1, 0, 0x83]);
        put(&mut b, 510, &[0x55, 0xAA]);
        assert!(fails(&b).is_empty());
    }

    #[test]
    fn luks_version_and_short_header() {
        let mut b = vec![0u8; 4096];
        put(&mut b, 0, b"LUKS\xba\xbe\x00\x01");
        assert_eq!(
            v(&b),
            json!({"acceptable": true, "format": "luks", "failures": []})
        );
        put(&mut b, 6, &2u16.to_be_bytes());
        assert_eq!(fails(&b), ["version"]);
        assert_eq!(fails(&b[..500]), ["incomplete"]);
    }

    #[test]
    fn iso_needs_the_whole_descriptor() {
        let mut b = vec![0u8; 40 * 1024];
        put(&mut b, 0x8000, b"\x01CD001\x01");
        assert_eq!(v(&b)["format"], "iso");
        assert_eq!(v(&b[..0x8000 + 100])["format"], "raw");
        // A hybrid ISO (an MBR in its system area) is two formats.
        put(&mut b, 446, &[0x80, 0, 1, 0, 0x17]);
        put(&mut b, 510, &[0x55, 0xAA]);
        assert_eq!(
            v(&b),
            json!({"acceptable": false, "format": null, "failures": ["multiple_formats"]})
        );
    }

    fn sparse_vmdk(desc: &[u8], gd: u64) -> Vec<u8> {
        let mut b = vec![0u8; 64 * 1024];
        put(&mut b, 0, b"KDMV");
        put(&mut b, 4, &1u32.to_le_bytes());
        put(&mut b, 12, &2048u64.to_le_bytes());
        put(&mut b, 28, &1u64.to_le_bytes());
        put(&mut b, 36, &20u64.to_le_bytes());
        put(&mut b, 56, &gd.to_le_bytes());
        put(&mut b, 512, desc);
        b
    }

    const DESC: &[u8] = b"# Disk DescriptorFile\nversion=1\nCID=fffffffe\nparentCID=ffffffff\ncreateType=\"monolithicSparse\"\n\nRW 2048 SPARSE \"x.vmdk\"\n\nddb.virtualHWVersion = \"4\"\n";

    #[test]
    fn vmdk_descriptor_rules() {
        assert_eq!(
            v(&sparse_vmdk(DESC, 21)),
            json!({"acceptable": true, "format": "vmdk", "failures": []})
        );
        let flat = String::from_utf8_lossy(DESC).replace("monolithicSparse", "monolithicFlat");
        assert_eq!(fails(&sparse_vmdk(flat.as_bytes(), 21)), ["descriptor"]);
        let path = String::from_utf8_lossy(DESC).replace("\"x.vmdk\"", "\"/etc/passwd\"");
        assert_eq!(fails(&sparse_vmdk(path.as_bytes(), 21)), ["descriptor"]);
        let odd = [DESC, b"what is this\n"].concat();
        assert_eq!(fails(&sparse_vmdk(&odd, 21)), ["descriptor"]);
        let no_extent = String::from_utf8_lossy(DESC).replace("RW 2048", "#");
        assert_eq!(
            fails(&sparse_vmdk(no_extent.as_bytes(), 21)),
            ["descriptor"]
        );
        // The descriptor anywhere but sector 1: oslo's inspector raises
        // and drops out, yet its magic still matches at the end.
        let mut b = sparse_vmdk(DESC, 21);
        put(&mut b, 28, &2u64.to_le_bytes());
        assert_eq!(fails(&b), ["descriptor"]);
        // A descriptor size over 1 MiB is capped, and the file is short.
        let mut b = sparse_vmdk(DESC, 21);
        put(&mut b, 36, &4096u64.to_le_bytes());
        assert_eq!(fails(&b), ["incomplete"]);
        // An unsupported version raises; the magic still matches.
        let mut b = sparse_vmdk(DESC, 21);
        put(&mut b, 4, &7u32.to_le_bytes());
        assert_eq!(fails(&b), ["descriptor"]);
    }

    #[test]
    fn vmdk_text_descriptor_and_attribute_error() {
        let mut b =
            b"# Disk DescriptorFile\ncreateType=\"monolithicSparse\"\nRW 2048 SPARSE \"x.vmdk\"\n"
                .to_vec();
        assert_eq!(v(&b)["format"], "vmdk");
        assert_eq!(v(&b)["acceptable"], true);
        // Text, then a non-ASCII byte before the first NUL: oslo raises.
        b = vec![b'a'; 600];
        b.push(0xFF);
        b.extend_from_slice(&[0u8; 100]);
        assert_eq!(
            v(&b),
            json!({"acceptable": false, "format": null, "failures": ["inspector_error"]})
        );
        // Only the first chunk is the descriptor: a byte past 4096 is not read.
        let mut b = vec![b'a'; 5000];
        b[4500] = 0xFF;
        assert_eq!(v(&b)["format"], "raw");
    }

    #[test]
    fn vmdk_footer_rules() {
        // streamOptimized with the grain directory at the end: footer,
        // then an end-of-stream marker.
        let desc = String::from_utf8_lossy(DESC).replace("monolithicSparse", "streamOptimized");
        let mut b = sparse_vmdk(desc.as_bytes(), VMDK_GD_AT_END);
        let n = b.len();
        let mut footer = vec![0u8; 1536];
        put(&mut footer, 12, &3u32.to_le_bytes());
        footer[512..1024].copy_from_slice(&b[..512]);
        put(&mut footer, 512 + 56, &100u64.to_le_bytes());
        b.extend_from_slice(&footer);
        assert_eq!(
            v(&b),
            json!({"acceptable": true, "format": "vmdk", "failures": []})
        );
        // A footer naming another footer.
        let mut c = b.clone();
        put(&mut c, n + 512 + 56, &u64::MAX.to_le_bytes());
        assert_eq!(fails(&c), ["footer"]);
        // A bad end-of-stream marker.
        let mut c = b.clone();
        let last = c.len() - 1;
        c[last] = 1;
        assert_eq!(fails(&c), ["footer"]);
        // Without a footer at all (the stream just ends).
        assert_eq!(fails(&b[..n]), ["footer"]);
    }

    #[test]
    fn vhdx_tables() {
        let mut b = vec![0u8; 320 * 1024];
        put(&mut b, 0, b"vhdxfile");
        // No region table: oslo's VHDX inspector raises, yet matches.
        assert_eq!(v(&b)["format"], "vhdx");
        put(&mut b, 192 * 1024, b"regi");
        put(&mut b, 192 * 1024 + 8, &1u32.to_le_bytes());
        put(&mut b, 192 * 1024 + 16, &VHDX_METAREGION);
        put(&mut b, 192 * 1024 + 32, &(288u64 * 1024).to_le_bytes());
        put(&mut b, 288 * 1024, b"metadata");
        put(&mut b, 288 * 1024 + 10, &1u16.to_le_bytes());
        put(&mut b, 288 * 1024 + 32, &VHDX_VIRTUAL_DISK_SIZE);
        put(&mut b, 288 * 1024 + 48, &8192u32.to_le_bytes());
        put(&mut b, 288 * 1024 + 52, &8u32.to_le_bytes());
        assert_eq!(
            v(&b),
            json!({"acceptable": true, "format": "vhdx", "failures": []})
        );
        // The size item past the end: never complete.
        put(&mut b, 288 * 1024 + 48, &(1u32 << 30).to_le_bytes());
        assert_eq!(fails(&b), ["incomplete"]);
        // Shorter than the region table: matched, incomplete.
        assert_eq!(fails(&b[..100 * 1024]), ["incomplete"]);
    }

    #[test]
    fn a_stream_whose_end_was_not_read_is_not_judged() {
        // oslo decides zeros within 256 KiB: the rest is never read.
        let s = crate::source::StreamBytes::from_prefix(vec![0u8; 1 << 20], false);
        assert_eq!(verdict(&s, Some(s.bytes_read()))["format"], "raw");
        // A VMDK with its footer at the end needs the end.
        let b = sparse_vmdk(DESC, VMDK_GD_AT_END);
        let s = crate::source::StreamBytes::from_prefix(b, false);
        assert_eq!(
            verdict(&s, Some(s.bytes_read())),
            json!({"acceptable": false, "format": null, "failures": ["not_read"]})
        );
        // A qcow2 is decided within the first 256 KiB.
        let s = crate::source::StreamBytes::from_prefix(qcow2(3).repeat(8), false);
        assert_eq!(verdict(&s, Some(s.bytes_read()))["format"], "qcow2");
    }

    #[test]
    fn big_sparse_files_are_read_only_where_oslo_looks() {
        struct Counting<'a>(&'a [u8], u64, std::cell::Cell<u64>);
        impl Source for Counting<'_> {
            fn len(&self) -> u64 {
                self.1
            }
            fn read_at(&self, offset: u64, buf: &mut [u8]) -> std::io::Result<usize> {
                self.2.set(self.2.get() + 1);
                buf.fill(0);
                if let Some(src) = usize::try_from(offset).ok().and_then(|o| self.0.get(o..)) {
                    let n = src.len().min(buf.len());
                    buf[..n].copy_from_slice(&src[..n]);
                }
                Ok(buf
                    .len()
                    .min(usize::try_from(self.1 - offset).unwrap_or(usize::MAX)))
            }
        }
        // A 1 TiB streamOptimized VMDK: header, descriptor, then the tail.
        let desc = String::from_utf8_lossy(DESC).replace("monolithicSparse", "streamOptimized");
        let head = sparse_vmdk(desc.as_bytes(), VMDK_GD_AT_END);
        let src = Counting(&head, 1 << 40, std::cell::Cell::new(0));
        let out = verdict(&src, None);
        assert_eq!(out["format"], "vmdk");
        assert!(src.2.get() < 200, "{} reads", src.2.get());
    }
}
