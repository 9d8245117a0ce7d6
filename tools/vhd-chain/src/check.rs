//! `vhd-chain check FILE...`: what `vhd-util check [-p] [-t] [-c]` validates
//! before XenServer imports a VHD (notes/vhd.md section 3.5), as findings
//! with stable rule names instead of the first error message.
//!
//! Why raw bytes and not only `formats::probe`: the probe opens a
//! file the way qemu does and *refuses* what qemu refuses (a bad footer
//! checksum at offset 0 is an error, a bad end footer makes a fixed disk
//! "not a VHD"), while a checker must report those as findings and go on.
//! It also does not report reserved bytes, feature bits, versions, data
//! offsets, the batmap or the raw locator fields. So the footer (both
//! copies), the dynamic header, the BAT (read once), the batmap and, per
//! allocated block, the sector bitmap are read here, with bounded reads.
//!
//! Which footer: the last 512 bytes (the last 511 when the file length is
//! `512k + 511`), as blktap; for dynamic and differencing disks also the
//! copy at offset 0, which must match (blktap's hidden-flag quirk allowed).
//! When the end footer is missing (a truncated file), the copy at 0 drives
//! the remaining checks. Neither copy carrying the footer cookie (or
//! `v_poison`) is [`CheckError::NotAVhd`]. Footers, header, locators, BAT
//! and batmap are read through `formats::vhd`, and blktap's
//! hidden-flag quirk is its rule ([`Footer::checksum_accepted`],
//! [`Footer::same_as`]).
//!
//! Rules (`Finding::rule`), by group (`Report::checked`):
//! - `footer`: `footer_cookie`, `footer_poisoned`, `footer_checksum`,
//!   `footer_features`, `footer_version`, `footer_data_offset`,
//!   `footer_timestamp_future`, `tap_creator_version`, `geometry_too_large`,
//!   `disk_type`, `footer_saved_state`, `footer_hidden`, `footer_reserved`,
//!   `uuid_null`, `footer_copies_differ`, `fixed_size_mismatch`;
//! - `header`: `header_offset`, `header_cookie`, `header_checksum`,
//!   `header_version`, `header_data_offset`, `table_offset`,
//!   `bat_outside_file`, `block_size_not_power_of_two`,
//!   `block_size_too_small`, `block_size_too_large`, `header_reserved`,
//!   `parent_timestamp_future`, `parent_name`, `parent_name_not_ascii`,
//!   `parent_fields_nonzero`;
//! - `locators`: `locator_code`, `locator_empty_not_zero`, `locator_fields`,
//!   `locator_outside_file`;
//! - `bat`: `bat_too_small`, `bat_too_large`, `block_outside_file`,
//!   `bat_overlaps_metadata`, `bat_overlap`;
//! - `batmap` (`tap` creator >= 1.2, or 1.1 with a batmap present):
//!   `batmap_outside_file`, `batmap_cookie`, `batmap_version`,
//!   `batmap_size`, `batmap_checksum`, `batmap_bit_unallocated`,
//!   `batmap_bit_not_full`;
//! - `data` (only with [`Options::data`], dynamic disks):
//!   `data_under_clear_bits`;
//! - `parent` ([`check_chain`]): `parent_uuid_mismatch`,
//!   `chain_not_differencing`, `parent_missing`.
//!
//! Deliberate differences from vhd-util: every finding is reported, not the
//! first; a `v_poison` footer (interrupted `vhd-util resize`) is a finding;
//! the BAT must cover `ceil(current_size / block_size)` blocks (vhd-util
//! assumes 2 MiB blocks); a block size under 512 bytes is a finding.
//! One rule reports at most [`MAX_PER_RULE`] findings, then one summary.

use crate::input::RegularSource;
use crate::raw::all_zero;
use filter::ErrorKind;
use formats::Source;
use formats::vhd::{
    self, BatmapHeader, DiskType, DynamicHeader, FEATURE_RESERVED, FEATURE_TEMPORARY,
    FOOTER_COOKIE_NAME, FOOTER_LEN, FORMAT_VERSION, Footer, FooterChecksum, Geometry,
    HEADER_COOKIE_NAME, HEADER_LEN, LOCATOR_CODES, NO_OFFSET, ParentLocator, SECTOR, TAP_VERSION,
    UNALLOCATED, uuid_string,
};
use serde::Serialize;
use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};

/// At most this many findings per rule (then one "... more" finding).
pub const MAX_PER_RULE: usize = 16;
/// The most BAT entries we read (16 MiB of BAT; 2040 GiB needs 1 044 480
/// entries of 2 MiB, 4 177 920 of 512 KiB).
pub const MAX_BAT_ENTRIES: u32 = 1 << 22;

const FUTURE_SLACK: i64 = 1800;
const MAX_BLOCK: u32 = 2 << 20;
/// Largest single read.
const CHUNK: usize = 1 << 20;

/// One broken rule.
#[derive(Debug, Clone, Serialize)]
pub struct Finding {
    /// Stable snake_case rule name (see the module documentation).
    pub rule: String,
    /// What is wrong, for people.
    pub message: String,
}

/// The result of checking one file.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// No findings.
    pub valid: bool,
    /// Every broken rule (at most [`MAX_PER_RULE`] per rule, plus a summary).
    pub findings: Vec<Finding>,
    /// Rule groups that were checked: `footer`, `header`, `locators`,
    /// `bat`, `batmap`, `data`, `parent`.
    pub checked: Vec<String>,
}

/// Operational failures only: invalid content is a [`Report`].
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    /// Opening or reading failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
    /// No VHD footer anywhere: nothing to check.
    #[error("{}: not a VHD: {why}", path.display())]
    NotAVhd {
        /// The file.
        path: PathBuf,
        /// Why.
        why: String,
    },
}

impl CheckError {
    /// The record's `error.kind`.
    pub fn kind(&self) -> ErrorKind {
        match self {
            CheckError::Io { source, .. } => ErrorKind::from_io(source),
            CheckError::NotAVhd { .. } => ErrorKind::NotAVhd,
        }
    }

    /// The file the error is about.
    pub fn path(&self) -> &Path {
        match self {
            CheckError::Io { path, .. } | CheckError::NotAVhd { path, .. } => path,
        }
    }
}

/// What to check beyond the metadata.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Options {
    /// Like `vhd-util check -c`: read every allocated block of a dynamic
    /// disk and report non-zero data under clear bitmap bits.
    pub data: bool,
    /// Like `-t`: do not compare timestamps with the clock.
    pub ignore_timestamps: bool,
}

/// Check one VHD.
pub fn check_file(path: &Path, opts: &Options) -> Result<Report, CheckError> {
    Ok(check_inner(path, opts)?.0)
}

/// Like `vhd-util check -p`: check every member, and that each child's
/// parent UUID equals the next member's footer UUID (`chain[0]` is the
/// leaf, the last member the base). Every member but the base must be
/// differencing, the base must not be.
pub fn check_chain(chain: &[PathBuf], opts: &Options) -> Result<Vec<Report>, CheckError> {
    let mut checked = Vec::with_capacity(chain.len());
    for p in chain {
        checked.push(check_inner(p, opts)?);
    }
    Ok(chain_rules(checked))
}

/// [`check_chain`] over files already opened (a chain directory's
/// members, opened without following links): these handles are read.
pub fn check_chain_files(
    chain: Vec<(PathBuf, std::fs::File)>,
    opts: &Options,
) -> Result<Vec<Report>, CheckError> {
    let mut checked = Vec::with_capacity(chain.len());
    for (p, f) in chain {
        let src = RegularSource::from_file(f).map_err(|source| CheckError::Io {
            path: p.clone(),
            source,
        })?;
        checked.push(check_source(&p, src, opts)?);
    }
    Ok(chain_rules(checked))
}

/// Check one file already opened (and judged) by the caller.
pub fn check_opened(
    path: &Path,
    file: std::fs::File,
    opts: &Options,
) -> Result<Report, CheckError> {
    let src = RegularSource::from_file(file).map_err(|source| CheckError::Io {
        path: path.to_owned(),
        source,
    })?;
    Ok(check_source(path, src, opts)?.0)
}

/// The chain rules over checked members, leaf first.
fn chain_rules(mut checked: Vec<(Report, Facts)>) -> Vec<Report> {
    let n = checked.len();
    for i in 0..n {
        let parent = checked.get(i + 1).map(|(_, f)| f.clone());
        let Some((report, facts)) = checked.get_mut(i) else {
            continue;
        };
        let mut c = Collector::default();
        let diff = facts.disk_type == Some(DiskType::Differencing.code());
        match parent {
            Some(pf) => {
                if !diff {
                    c.add(
                        "chain_not_differencing",
                        format!(
                            "chain member {i} is not a differencing disk (type {}) but member {} follows it",
                            facts.disk_type.unwrap_or(0),
                            i + 1
                        ),
                    );
                } else if let (Some(pu), Some(u)) = (facts.parent_uuid, pf.uuid)
                    && pu != u
                {
                    c.add(
                        "parent_uuid_mismatch",
                        format!(
                            "parent UUID {} is not the footer UUID {} of chain member {}",
                            uuid_string(&pu),
                            uuid_string(&u),
                            i + 1
                        ),
                    );
                }
            }
            None if diff => c.add(
                "parent_missing",
                format!("chain member {i}, the base, is differencing: its parent is missing"),
            ),
            None => {}
        }
        report.checked.push("parent".into());
        report.findings.extend(c.finish());
        report.valid = report.findings.is_empty();
    }
    checked.into_iter().map(|(r, _)| r).collect()
}

/// What a chain check needs from each member.
#[derive(Debug, Clone, Default)]
struct Facts {
    disk_type: Option<u32>,
    uuid: Option<[u8; 16]>,
    parent_uuid: Option<[u8; 16]>,
}

#[derive(Default)]
struct Collector {
    findings: Vec<Finding>,
    counts: HashMap<&'static str, usize>,
    order: Vec<&'static str>,
}

impl Collector {
    fn add(&mut self, rule: &'static str, message: impl Into<String>) {
        let n = self.counts.entry(rule).or_insert(0);
        if *n == 0 {
            self.order.push(rule);
        }
        *n += 1;
        if *n <= MAX_PER_RULE {
            self.findings.push(Finding {
                rule: rule.into(),
                message: message.into(),
            });
        }
    }

    fn has(&self, rule: &str) -> bool {
        self.counts.contains_key(rule)
    }

    fn finish(mut self) -> Vec<Finding> {
        for rule in &self.order {
            let n = self.counts.get(rule).copied().unwrap_or(0);
            if n > MAX_PER_RULE {
                self.findings.push(Finding {
                    rule: (*rule).into(),
                    message: format!("... and {} more", n - MAX_PER_RULE),
                });
            }
        }
        self.findings
    }
}

fn now_vhd() -> i64 {
    let unix = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    unix as i64 - vhd::VHD_EPOCH as i64
}

struct File<'a> {
    path: &'a Path,
    src: RegularSource,
    len: u64,
}

impl File<'_> {
    fn io(&self, source: io::Error) -> CheckError {
        CheckError::Io {
            path: self.path.to_owned(),
            source,
        }
    }

    /// `len` bytes at `off`, zero-filled past the end (`len` <= CHUNK).
    fn read(&self, off: u64, len: usize) -> Result<Vec<u8>, CheckError> {
        let mut v = if off >= self.len {
            Vec::new()
        } else {
            self.src.read_vec(off, len).map_err(|e| self.io(e))?
        };
        v.resize(len, 0);
        Ok(v)
    }
}

/// What is wrong with one footer copy (`what` names it in messages).
fn footer_rules(c: &mut Collector, f: &Footer, what: &str, opts: &Options) {
    if f.is_poisoned() {
        c.add(
            "footer_poisoned",
            format!("{what}: cookie v_poison: an interrupted vhd-util resize (revert it with its journal)"),
        );
    } else if !f.has_cookie() {
        c.add(
            "footer_cookie",
            format!("{what}: no {FOOTER_COOKIE_NAME} cookie"),
        );
        return;
    }
    if let FooterChecksum::Mismatch { stored, computed } = f.checksum_state() {
        c.add(
            "footer_checksum",
            format!("{what}: checksum {stored:#010x}, computed {computed:#010x}"),
        );
    }
    let features = f.features;
    if features & FEATURE_RESERVED == 0 || features & !(FEATURE_RESERVED | FEATURE_TEMPORARY) != 0 {
        c.add(
            "footer_features",
            format!("{what}: features {features:#x}: bit 0x2 must be set, only 0x1 may be added"),
        );
    }
    let version = f.format_version;
    if version != FORMAT_VERSION {
        c.add(
            "footer_version",
            format!("{what}: file format version {version:#010x}, not 0x00010000"),
        );
    }
    let dtype = f.disk_type_code;
    let data_offset = f.data_offset;
    if !matches!(
        f.disk_type(),
        Some(DiskType::Dynamic | DiskType::Differencing)
    ) && data_offset != NO_OFFSET
    {
        c.add(
            "footer_data_offset",
            format!(
                "{what}: data offset {data_offset:#x} of a disk of type {dtype} is not all ones"
            ),
        );
    }
    let ts = f.timestamp;
    if !opts.ignore_timestamps && i64::from(ts) > now_vhd() + FUTURE_SLACK {
        c.add(
            "footer_timestamp_future",
            format!("{what}: creation time {ts} (seconds since 2000) is in the future"),
        );
    }
    let crtr_ver = f.creator_version;
    if f.is_tap() && crtr_ver > TAP_VERSION {
        c.add(
            "tap_creator_version",
            format!(
                "{what}: tap creator version {}.{} is newer than 1.3",
                crtr_ver >> 16,
                crtr_ver & 0xffff
            ),
        );
    }
    let size = f.current_size;
    let want = Geometry::for_size(size);
    if want.packed() < f.geometry.packed() {
        c.add(
            "geometry_too_large",
            format!(
                "{what}: geometry {} is larger than {want} for the current size {size}",
                f.geometry
            ),
        );
    }
    if f.disk_type().is_none() {
        c.add(
            "disk_type",
            format!("{what}: disk type {dtype} is not fixed (2), dynamic (3) or differencing (4)"),
        );
    }
    if f.saved_state > 1 {
        c.add(
            "footer_saved_state",
            format!("{what}: saved state {}, not 0 or 1", f.saved_state),
        );
    }
    if f.hidden > 1 {
        c.add(
            "footer_hidden",
            format!("{what}: hidden {}, not 0 or 1", f.hidden),
        );
    }
    if !all_zero(&f.reserved) {
        c.add(
            "footer_reserved",
            format!("{what}: reserved bytes 86..511 are not zero"),
        );
    }
    if all_zero(&f.uuid) {
        c.add("uuid_null", format!("{what}: unique id is all zero"));
    }
}

fn has_cookie(f: &Footer) -> bool {
    f.has_cookie() || f.is_poisoned()
}

/// A footer to go by: a cookie and a checksum blktap accepts.
fn footer_ok(f: &Footer) -> bool {
    has_cookie(f) && f.checksum_accepted()
}

/// A named byte range of metadata.
struct Extent {
    start: u64,
    len: u64,
    what: String,
}

fn overlaps(a: u64, alen: u64, b: u64, blen: u64) -> bool {
    a < b.saturating_add(blen) && b < a.saturating_add(alen)
}

fn check_inner(path: &Path, opts: &Options) -> Result<(Report, Facts), CheckError> {
    let src = crate::input::RegularSource::open(path).map_err(|source| CheckError::Io {
        path: path.to_owned(),
        source,
    })?;
    check_source(path, src, opts)
}

fn check_source(
    path: &Path,
    src: RegularSource,
    opts: &Options,
) -> Result<(Report, Facts), CheckError> {
    let len = src.len();
    let file = File { path, src, len };
    let not_vhd = |why: &str| CheckError::NotAVhd {
        path: path.to_owned(),
        why: why.to_owned(),
    };
    if len < 511 {
        return Err(not_vhd("shorter than a footer"));
    }
    // blktap: a 511-byte footer in a file of 512k + 511 bytes.
    let footer_start = if len % SECTOR == 511 {
        len - 511
    } else {
        len - 512
    };
    let primary = Footer::decode(&file.read(footer_start, FOOTER_LEN)?);
    let backup = Footer::decode(&file.read(0, FOOTER_LEN)?);
    if !has_cookie(&primary) && !has_cookie(&backup) {
        return Err(not_vhd(&format!(
            "no footer ({FOOTER_COOKIE_NAME}) at the end of the file or at offset 0"
        )));
    }

    let mut c = Collector::default();
    let mut checked = vec!["footer".to_string()];
    let mut facts = Facts::default();
    let end_what = format!("footer at the end (offset {footer_start})");
    if has_cookie(&primary) {
        footer_rules(&mut c, &primary, &end_what, opts);
    } else {
        c.add(
            "footer_cookie",
            format!(
                "{end_what}: no {FOOTER_COOKIE_NAME} cookie (truncated, or the copy at 0 is stray)"
            ),
        );
    }
    let footer: &Footer = if footer_ok(&primary) || (has_cookie(&primary) && !footer_ok(&backup)) {
        &primary
    } else {
        &backup
    };
    let dtype = footer.disk_type_code;
    facts.disk_type = Some(dtype);
    facts.uuid = Some(footer.uuid);
    let current_size = footer.current_size;

    if footer.disk_type() == Some(DiskType::Fixed) {
        if footer_start != current_size {
            c.add(
                "fixed_size_mismatch",
                format!(
                    "fixed disk of current size {current_size} has {footer_start} bytes of data"
                ),
            );
        }
        return Ok((finish(c, checked), facts));
    }
    if !matches!(
        footer.disk_type(),
        Some(DiskType::Dynamic | DiskType::Differencing)
    ) {
        return Ok((finish(c, checked), facts));
    }
    // Dynamic and differencing disks keep a copy at 0.
    if has_cookie(&primary) {
        if has_cookie(&backup) {
            footer_rules(&mut c, &backup, "footer copy at offset 0", opts);
            if !primary.same_as(&backup) {
                c.add(
                    "footer_copies_differ",
                    "the footer at the end and its copy at offset 0 differ",
                );
            }
        } else {
            c.add(
                "footer_cookie",
                format!("footer copy at offset 0: no {FOOTER_COOKIE_NAME} cookie"),
            );
        }
    } else {
        footer_rules(&mut c, &backup, "footer copy at offset 0", opts);
    }

    // Dynamic header.
    let data_offset = footer.data_offset;
    checked.push("header".into());
    if data_offset < FOOTER_LEN as u64
        || data_offset
            .checked_add(HEADER_LEN as u64)
            .is_none_or(|e| e > footer_start)
    {
        c.add(
            "header_offset",
            format!("dynamic header offset {data_offset} is not between the footers"),
        );
        return Ok((finish(c, checked), facts));
    }
    let hdr = DynamicHeader::decode(&file.read(data_offset, HEADER_LEN)?);
    if !hdr.has_cookie() {
        c.add(
            "header_cookie",
            format!("no {HEADER_COOKIE_NAME} cookie at offset {data_offset}"),
        );
        return Ok((finish(c, checked), facts));
    }
    let stored = hdr.checksum;
    let computed = hdr.computed_checksum();
    if computed != stored {
        c.add(
            "header_checksum",
            format!("header checksum {stored:#010x}, computed {computed:#010x}"),
        );
    }
    let hver = hdr.version;
    if hver != FORMAT_VERSION {
        c.add(
            "header_version",
            format!("header version {hver:#010x}, not 0x00010000"),
        );
    }
    if hdr.data_offset != NO_OFFSET {
        c.add(
            "header_data_offset",
            format!("header data offset {:#x} is not all ones", hdr.data_offset),
        );
    }
    let table_offset = hdr.table_offset;
    let entries = hdr.max_table_entries;
    let bat_bytes = hdr.bat_bytes();
    if table_offset == 0 || !table_offset.is_multiple_of(SECTOR) {
        c.add(
            "table_offset",
            format!("table offset {table_offset} is zero or not sector-aligned"),
        );
    }
    let bat_end = table_offset.checked_add(bat_bytes);
    let bat_fits = bat_end.is_some_and(|e| e <= footer_start) && table_offset >= FOOTER_LEN as u64;
    if !bat_fits {
        c.add(
            "bat_outside_file",
            format!(
                "BAT of {entries} entries at {table_offset} does not fit between offset 512 and the end footer at {footer_start}"
            ),
        );
    }
    let block_size = hdr.block_size;
    let block_ok = block_size.is_power_of_two() && block_size >= 512;
    if !block_size.is_power_of_two() {
        c.add(
            "block_size_not_power_of_two",
            format!("block size {block_size} is not a power of two"),
        );
    } else if block_size < 512 {
        c.add(
            "block_size_too_small",
            format!("block size {block_size} is smaller than a sector"),
        );
    }
    if block_size > MAX_BLOCK {
        c.add(
            "block_size_too_large",
            format!("block size {block_size} is larger than 2 MiB (blktap refuses it)"),
        );
    }
    if hdr.reserved1 != 0 || !all_zero(&hdr.reserved2) {
        c.add(
            "header_reserved",
            "reserved header bytes (60..63, 768..1023) are not zero",
        );
    }

    // Parent fields and locators.
    let mut meta = vec![
        Extent {
            start: 0,
            len: FOOTER_LEN as u64,
            what: "the footer copy".into(),
        },
        Extent {
            start: data_offset,
            len: HEADER_LEN as u64,
            what: "the dynamic header".into(),
        },
        Extent {
            start: table_offset,
            len: bat_bytes,
            what: "the BAT".into(),
        },
    ];
    if footer.disk_type() == Some(DiskType::Differencing) {
        facts.parent_uuid = Some(hdr.parent_uuid);
        let pts = hdr.parent_timestamp;
        if !opts.ignore_timestamps && i64::from(pts) > now_vhd() {
            c.add(
                "parent_timestamp_future",
                format!("parent timestamp {pts} (seconds since 2000) is in the future"),
            );
        }
        match hdr.parent_name() {
            Err(_) => c.add("parent_name", "parent name is not valid UTF-16BE"),
            Ok(s) if !s.is_ascii() => c.add(
                "parent_name_not_ascii",
                format!("parent name {s:?} is not ASCII (vhd-util cannot decode it)"),
            ),
            Ok(_) => {}
        }
        checked.push("locators".into());
        locator_rules(&mut c, &hdr, footer_start, &mut meta);
    } else {
        let mut bad = Vec::new();
        if !all_zero(&hdr.parent_name) {
            bad.push("name");
        }
        if hdr.locators.iter().any(|l| *l != ParentLocator::default()) {
            bad.push("locators");
        }
        if !all_zero(&hdr.parent_uuid) {
            bad.push("UUID");
        }
        if hdr.parent_timestamp != 0 {
            bad.push("timestamp");
        }
        if !bad.is_empty() {
            c.add(
                "parent_fields_nonzero",
                format!(
                    "a disk that is not differencing has a parent {}",
                    bad.join(", ")
                ),
            );
        }
    }

    // BAT.
    if !bat_fits || !block_ok {
        return Ok((finish(c, checked), facts));
    }
    checked.push("bat".into());
    let needed = current_size.div_ceil(u64::from(block_size));
    if u64::from(entries) < needed {
        c.add(
            "bat_too_small",
            format!(
                "{entries} BAT entries cannot map {current_size} bytes in blocks of {block_size}"
            ),
        );
    }
    if entries > MAX_BAT_ENTRIES {
        c.add(
            "bat_too_large",
            format!("{entries} BAT entries: more than {MAX_BAT_ENTRIES}, not read"),
        );
        return Ok((finish(c, checked), facts));
    }
    let bat = read_bat(&file, table_offset, entries)?;
    let bitmap_bytes = vhd::bitmap_bytes(u64::from(block_size));
    let block_len = bitmap_bytes + u64::from(block_size);

    // Batmap (adds metadata extents before the overlap check).
    let batmap = batmap_rules(
        &mut c,
        &mut checked,
        &file,
        footer,
        table_offset + bat_bytes,
        entries,
        footer_start,
        &mut meta,
    )?;

    let mut blocks: Vec<(u64, u32)> = Vec::new();
    for (i, &v) in bat.iter().enumerate() {
        if v == UNALLOCATED {
            continue;
        }
        let i = i as u32;
        let start = u64::from(v) * SECTOR;
        if start + block_len > footer_start {
            c.add(
                "block_outside_file",
                format!(
                    "block {i} at {start} ({block_len} bytes) runs into the end footer at {footer_start}"
                ),
            );
        }
        for m in &meta {
            if overlaps(start, block_len, m.start, m.len) {
                c.add(
                    "bat_overlaps_metadata",
                    format!("block {i} at {start} overlaps {}", m.what),
                );
            }
        }
        blocks.push((start, i));
    }
    blocks.sort_unstable();
    let mut prev: Option<(u64, u32)> = None;
    for &(start, i) in &blocks {
        if let Some((pstart, pi)) = prev
            && start < pstart + block_len
        {
            c.add(
                "bat_overlap",
                format!("block {i} at {start} overlaps block {pi} at {pstart}"),
            );
            // keep the block reaching furthest
            if start + block_len <= pstart + block_len {
                continue;
            }
        }
        prev = Some((start, i));
    }

    // Batmap bits against the BAT and the sector bitmaps.
    if let Some(map) = batmap {
        let spb = u64::from(block_size / 512);
        for (i, &v) in bat.iter().enumerate() {
            if !vhd::bit(&map, i as u64) {
                continue;
            }
            if v == UNALLOCATED {
                c.add(
                    "batmap_bit_unallocated",
                    format!("batmap marks block {i} full but it is not allocated"),
                );
                continue;
            }
            let start = u64::from(v) * SECTOR;
            if start + block_len > footer_start {
                continue;
            }
            let bm = read_bitmap(&file, start, bitmap_bytes)?;
            if !(0..spb).all(|s| bit(&bm, s)) {
                c.add(
                    "batmap_bit_not_full",
                    format!("batmap marks block {i} full but its sector bitmap is not"),
                );
            }
        }
    }

    // Data under clear bits (dynamic disks only).
    if opts.data && footer.disk_type() == Some(DiskType::Dynamic) {
        checked.push("data".into());
        let spb = u64::from(block_size / 512);
        for (i, &v) in bat.iter().enumerate() {
            if v == UNALLOCATED {
                continue;
            }
            let start = u64::from(v) * SECTOR;
            if start + block_len > footer_start {
                continue;
            }
            let bm = read_bitmap(&file, start, bitmap_bytes)?;
            let data = start + bitmap_bytes;
            let mut s = 0u64;
            while s < spb {
                if bit(&bm, s) {
                    s += 1;
                    continue;
                }
                let mut e = s;
                while e < spb && !bit(&bm, e) && (e - s) * SECTOR < CHUNK as u64 {
                    e += 1;
                }
                let n = ((e - s) * SECTOR) as usize;
                let buf = file.read(data + s * SECTOR, n)?;
                if let Some(pos) = buf.iter().position(|b| *b != 0) {
                    let sector = s + pos as u64 / SECTOR;
                    c.add(
                        "data_under_clear_bits",
                        format!(
                            "block {i}, sector {sector} (virtual sector {}) has data where the bitmap is clear",
                            i as u64 * spb + sector
                        ),
                    );
                    // one finding per block
                    break;
                }
                s = e;
            }
        }
    }
    Ok((finish(c, checked), facts))
}

fn finish(c: Collector, checked: Vec<String>) -> Report {
    let findings = c.finish();
    Report {
        valid: findings.is_empty(),
        findings,
        checked,
    }
}

fn bit(bm: &[u8], s: u64) -> bool {
    vhd::bit(bm, s)
}

fn read_bitmap(file: &File, start: u64, bytes: u64) -> Result<Vec<u8>, CheckError> {
    // block_size <= 2^31: the bitmap is at most 512 KiB
    file.read(start, usize::try_from(bytes).unwrap_or(0).min(CHUNK))
}

fn read_bat(file: &File, table_offset: u64, entries: u32) -> Result<Vec<u32>, CheckError> {
    let total = u64::from(entries) * 4;
    let mut bat = Vec::with_capacity(entries as usize);
    let mut off = 0u64;
    while off < total {
        let n = (total - off).min(CHUNK as u64) as usize;
        bat.extend(vhd::decode_bat(&file.read(table_offset + off, n)?));
        off += n as u64;
    }
    Ok(bat)
}

fn locator_rules(
    c: &mut Collector,
    hdr: &DynamicHeader,
    footer_start: u64,
    meta: &mut Vec<Extent>,
) {
    for (i, l) in hdr.locators.iter().enumerate() {
        let code = u32::from_be_bytes(l.code);
        let (space, dlen, reserved, off) = (l.data_space, l.data_length, l.reserved, l.data_offset);
        let name = l.code_string();
        if l.is_empty() {
            if space != 0 || dlen != 0 || reserved != 0 || off != 0 {
                c.add(
                    "locator_empty_not_zero",
                    format!("locator {i} has no platform code but non-zero fields"),
                );
            }
            continue;
        }
        if !LOCATOR_CODES.contains(&l.code) {
            c.add(
                "locator_code",
                format!("locator {i}: unknown platform code {code:#010x} ({name:?})"),
            );
        }
        let size = l.space_bytes();
        let mut bad = Vec::new();
        if off == 0 {
            bad.push("zero data offset".to_string());
        }
        if space == 0 || size == 0 {
            bad.push(format!("invalid data space {space}"));
        }
        if dlen == 0 {
            bad.push("zero data length".to_string());
        } else if size != 0 && u64::from(dlen) > size {
            bad.push(format!("data length {dlen} exceeds its space {size}"));
        }
        if reserved != 0 {
            bad.push("non-zero reserved field".to_string());
        }
        if !bad.is_empty() {
            c.add(
                "locator_fields",
                format!("locator {i} ({name}): {}", bad.join(", ")),
            );
        }
        let span = size.max(u64::from(dlen));
        if off != 0 && off.checked_add(span).is_none_or(|e| e > footer_start) {
            c.add(
                "locator_outside_file",
                format!(
                    "locator {i} ({name}): data at {off} ({span} bytes) does not end before the end footer at {footer_start}"
                ),
            );
        } else if off != 0 && span != 0 {
            meta.push(Extent {
                start: off,
                len: span,
                what: format!("the data of locator {i} ({name})"),
            });
        }
    }
}

/// The batmap of `tap` images; returns the map bits (one per BAT entry)
/// when the batmap is usable.
#[allow(clippy::too_many_arguments)]
fn batmap_rules(
    c: &mut Collector,
    checked: &mut Vec<String>,
    file: &File,
    footer: &Footer,
    header_off: u64,
    entries: u32,
    footer_start: u64,
    meta: &mut Vec<Extent>,
) -> Result<Option<Vec<u8>>, CheckError> {
    if !footer.is_tap() {
        return Ok(None);
    }
    let ver = footer.creator_version;
    let fits = header_off + SECTOR <= footer_start;
    let required = ver >= 0x0001_0002;
    let hdr = BatmapHeader::decode(&if fits {
        file.read(header_off, 512)?
    } else {
        Vec::new()
    });
    // 1.1 images have a batmap only when its header is there.
    if !required && (ver != 0x0001_0001 || !hdr.has_cookie()) {
        return Ok(None);
    }
    checked.push("batmap".into());
    if !fits {
        c.add(
            "batmap_outside_file",
            format!("batmap header at {header_off} does not fit before the end footer"),
        );
        return Ok(None);
    }
    if !hdr.has_cookie() {
        c.add(
            "batmap_cookie",
            format!("no tdbatmap cookie at {header_off} (required for tap 1.2 and later)"),
        );
        return Ok(None);
    }
    meta.push(Extent {
        start: header_off,
        len: SECTOR,
        what: "the batmap header".into(),
    });
    let map_off = hdr.map_offset;
    let map_secs = hdr.map_sectors;
    let bver = hdr.version;
    let stored = hdr.checksum;
    let mut usable = true;
    if bver > vhd::BATMAP_VERSION {
        c.add(
            "batmap_version",
            format!("batmap version {bver:#010x} is newer than 1.2"),
        );
        usable = false;
    }
    let map_len = hdr.map_bytes();
    if map_secs == 0 || map_len * 8 < u64::from(entries) {
        c.add(
            "batmap_size",
            format!("batmap of {map_secs} sectors does not cover {entries} BAT entries"),
        );
        usable = false;
    }
    if map_off
        .checked_add(map_len)
        .is_none_or(|e| e > footer_start)
        || map_off < FOOTER_LEN as u64
    {
        c.add(
            "batmap_outside_file",
            format!("batmap at {map_off} ({map_secs} sectors) does not fit before the end footer"),
        );
        return Ok(None);
    }
    meta.push(Extent {
        start: map_off,
        len: map_len,
        what: "the batmap".into(),
    });
    // The checksum covers at most 128 KiB (for 2040 GiB).
    let sum_len = vhd::batmap_checksum_len(footer.current_size);
    let bits_len = u64::from(entries).div_ceil(8);
    let want = sum_len.max(bits_len).min(CHUNK as u64 * 4);
    let mut map = Vec::new();
    let mut off = 0u64;
    while off < want {
        let n = (want - off).min(CHUNK as u64) as usize;
        map.extend(file.read(map_off + off, n)?);
        off += n as u64;
    }
    let computed = vhd::batmap_checksum(&map, footer.current_size, bver);
    if computed != stored {
        c.add(
            "batmap_checksum",
            format!("batmap checksum {stored:#010x}, computed {computed:#010x}"),
        );
    }
    if !usable || c.has("batmap_checksum") {
        return Ok(None);
    }
    Ok(Some(map))
}
