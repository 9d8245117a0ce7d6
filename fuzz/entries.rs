//! What each fuzz target does with the fuzzer's bytes: one function per
//! target, calling the real parser. Shared, through `#[path]`, by the
//! cargo-fuzz targets (`fuzz/fuzz_targets/<target>.rs`, nightly) and by the
//! stable replay of every seed and regression input
//! (`tests/tests/fuzz_regressions.rs`, run by `make test`), so a replay runs
//! exactly what the fuzzer ran.
//!
//! An entry returns normally on any input; a panic, an abort (allocation
//! failure, stack overflow) or a hang is the bug the fuzzer reports. Every
//! input is hostile: image parsers get the bytes in memory under a name in
//! a directory that does not exist, so a backing file or an extent they
//! name resolves to nothing; the parsers that take a path get one file in a
//! private scratch directory, rewritten on every run.
#![allow(dead_code, clippy::expect_used)]

use formats::{self, Source};
use imginfo_parse::check::{self, Policy};
use imginfo_parse::info::{self, finish};
use imginfo_parse::input::{Doc, DocReader, InputMode};
use imginfo_parse::qjson::{self, Node};
use serde_json::{Map, Value};
use std::io;
use std::path::Path;

/// What a fuzz target runs on the fuzzer's bytes.
pub type Entry = fn(&[u8]);

/// Every target: its name (the file `fuzz/fuzz_targets/<name>.rs`, the
/// directories `fuzz/seeds/<name>/` and `fuzz/regressions/<name>/`) and its
/// entry.
pub const TARGETS: &[(&str, Entry)] = &[
    ("qcow2", qcow2),
    ("qcow", qcow),
    ("qed", qed),
    ("luks", luks),
    ("vmdk", vmdk),
    ("vhd", vhd),
    ("vhdx", vhdx),
    ("vdi", vdi),
    ("parallels", parallels),
    ("iso", iso),
    ("partition", partition),
    ("probe", probe),
    ("imginfo_json", imginfo_json),
    ("imginfo_human", imginfo_human),
    ("jsonl", jsonl),
    ("size", size),
    ("time", time),
    ("vhd_check", vhd_check),
    ("vhd_read", vhd_read),
    ("vhd_tar", vhd_tar),
    ("cachewalk_inventory", cachewalk_inventory),
    ("cachewalk_disk_info", cachewalk_disk_info),
    ("glance_load_meta", glance_load_meta),
];

/// The entry of target `name`.
pub fn entry(name: &str) -> Option<Entry> {
    TARGETS.iter().find(|(n, _)| *n == name).map(|(_, f)| *f)
}

/// The name an in-memory image is probed under: relative backing files
/// and extents resolve inside a directory that does not exist (the
/// parsers only report them; nothing may be opened).
const IMAGE_NAME: &str = "/nonexistent/image-tools-fuzz/image";

/// The fuzzer's bytes as an image file (a file's length and allocation).
struct Mem<'a>(&'a [u8]);

impl Source for Mem<'_> {
    fn len(&self) -> u64 {
        self.0.len() as u64
    }
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
        <[u8] as Source>::read_at(self.0, offset, buf)
    }
    fn allocated(&self) -> Option<u64> {
        Some(self.0.len() as u64)
    }
}

/// imginfo-parse's `--check` with every rule switched on.
fn policy() -> Policy {
    Policy {
        expect_format: Some("qcow2".into()),
        require_format: Some("raw".into()),
        max_virtual_size: Some(1 << 40),
        volume_size_gb: Some(20),
        allow_multi: vec!["iso".into(), "mbr".into()],
        vmdk_create_types: vec!["monolithicSparse".into(), "streamOptimized".into()],
        banned: vec!["qed".into()],
        ..Policy::default()
    }
}

/// An `info` facet as imginfo-parse finishes and checks it.
fn finish_and_check(m: Map<String, Value>, source: info::Source) {
    let info = Value::Object(finish(m, Some(source)));
    let verdict = check::check(&info, &policy());
    assert!(
        verdict["acceptable"].is_boolean(),
        "a verdict without `acceptable`: {verdict}"
    );
}

/// One format parser, forced as with `qemu-img info -f FORMAT`.
fn forced(data: &[u8], format: &str) {
    let _ = formats::probe(&Mem(data), IMAGE_NAME, Some(format));
}

/// qcow2 (`formats::qcow2`).
pub fn qcow2(data: &[u8]) {
    forced(data, "qcow2");
}

/// qcow version 1.
pub fn qcow(data: &[u8]) {
    forced(data, "qcow");
}

/// QED.
pub fn qed(data: &[u8]) {
    forced(data, "qed");
}

/// LUKS1.
pub fn luks(data: &[u8]) {
    forced(data, "luks");
}

/// VMDK: sparse, streamOptimized and descriptor files.
pub fn vmdk(data: &[u8]) {
    forced(data, "vmdk");
}

/// VHD (qemu's `vpc`): fixed, dynamic, differencing.
pub fn vhd(data: &[u8]) {
    forced(data, "vpc");
}

/// VHDX.
pub fn vhdx(data: &[u8]) {
    forced(data, "vhdx");
}

/// VDI.
pub fn vdi(data: &[u8]) {
    forced(data, "vdi");
}

/// Parallels.
pub fn parallels(data: &[u8]) {
    forced(data, "parallels");
}

/// ISO 9660 (a layout qemu reads as raw).
pub fn iso(data: &[u8]) {
    forced(data, "iso");
}

/// MBR and GPT partition tables.
pub fn partition(data: &[u8]) {
    forced(data, "partition");
}

/// Auto-detection, as imginfo-parse probes a file (every parser runs),
/// then the info finished and `--check`ed.
pub fn probe(data: &[u8]) {
    if let Ok(p) = formats::probe(&Mem(data), IMAGE_NAME, None) {
        finish_and_check(p.to_info(), info::Source::Native);
    }
}

/// imginfo-parse's stdin in `mode`: every document, as the tool handles it.
fn imginfo_stdin(data: &[u8], mode: InputMode) {
    let mut docs = DocReader::new(data, mode);
    // Reading from memory never fails; an error ends the input as it would.
    while let Ok(Some(doc)) = docs.next_doc() {
        match doc {
            Doc::Json { text, line } => match imginfo_parse::input::parse_json(&text, line) {
                Ok(Node::Obj(m)) => qemu_json_object(m),
                Ok(Node::Arr(items)) => {
                    for item in items {
                        if let Node::Obj(m) = item {
                            qemu_json_object(m);
                        }
                    }
                }
                Ok(_) | Err(_) => {}
            },
            Doc::Bad { .. } => {}
            Doc::Human { lines, .. } => {
                let img = imginfo_parse::human::parse_block(&lines);
                let _ = img.has_backing();
                finish_and_check(img.info.clone().into_map(), info::Source::QemuHuman);
                // As the tool writes it without --check.
                let info = info::finish_fields(img.info.0, Some(info::Source::QemuHuman));
                let _ = serde_json::to_vec(&info::WithInfo {
                    rec: &filter::Record::new(),
                    info: &info,
                });
            }
        }
    }
}

/// One object of `qemu-img info --output=json` (or `--backing-chain`).
fn qemu_json_object(m: qjson::Obj<'_>) {
    if !qjson::looks_like_qemu_info(&m) {
        return;
    }
    if let Ok(info) = qjson::convert(m) {
        // Written as the tool writes it without --check, and as a map
        // (what --check judges).
        let info = info::finish_entries(info, Some(info::Source::QemuJson));
        let rec = filter::Record::new();
        let _ = serde_json::to_vec(&info::WithInfo {
            rec: &rec,
            info: &info,
        });
        if let Value::Object(m) = Node::Obj(info).into_value() {
            finish_and_check(m, info::Source::QemuJson);
        }
    }
}

/// imginfo-parse reading `qemu-img info --output=json` (objects, chain
/// arrays, concatenated documents, JSON Lines records).
pub fn imginfo_json(data: &[u8]) {
    imginfo_stdin(data, InputMode::Json);
}

/// imginfo-parse reading the human text of `qemu-img info`, of any QEMU
/// version; auto-detection too.
pub fn imginfo_human(data: &[u8]) {
    imginfo_stdin(data, InputMode::Human);
    imginfo_stdin(data, InputMode::Auto);
}

/// JSON Lines records, as every tool reads stdin.
pub fn jsonl(data: &[u8]) {
    let mut r = filter::jsonl::RecordReader::new(data);
    while let Ok(Some(rec)) = r.next_record() {
        if let Ok(rec) = rec {
            let _ = rec.path();
            let _ = rec.has_error();
        }
    }
    let _ = filter::jsonl::parse_record(data, 1);
}

/// Sizes: a user's (`10G`, `1.5 GiB`) and qemu's human ones.
pub fn size(data: &[u8]) {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(n) = system::size::parse_size(s) {
        let _ = system::size::format_size(n);
    }
    let _ = system::size::parse_human_size(s);
}

/// Points in time on a command line (epoch seconds or RFC 3339 UTC).
pub fn time(data: &[u8]) {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    if let Some(t) = system::text::parse_time(s)
        && let Some(text) = system::text::rfc3339_utc(t, 0)
    {
        // What we print, we read back as the same second.
        assert_eq!(
            system::text::parse_time(&text),
            Some(t),
            "{s:?} -> {t} -> {text:?}"
        );
    }
}

thread_local! {
    /// This thread's scratch directory, for the parsers that take a path.
    static SCRATCH: tempfile::TempDir = tempfile::Builder::new()
        .prefix("image-tools-fuzz.")
        .tempdir()
        .expect("a scratch directory for the fuzz input files");
}

/// Write `data` to `name` in the scratch directory (the same file every
/// run) and hand its path to `f`.
fn with_file(name: &str, data: &[u8], f: impl FnOnce(&Path)) {
    SCRATCH.with(|dir| {
        let path = dir.path().join(name);
        std::fs::write(&path, data).expect("writing the fuzz input file");
        f(&path);
    });
}

/// vhd-chain's VHD reading: `info` (the facts) and `check` (every rule,
/// `-c`: the data under clear bitmap bits too).
pub fn vhd_check(data: &[u8]) {
    with_file("input.vhd", data, |p| {
        let _ = vhd_chain::vhd_facts(p);
        let opts = vhd_chain::check::Options {
            data: true,
            ignore_timestamps: true,
        };
        if let Ok(report) = vhd_chain::check::check_file(p, &opts) {
            assert_eq!(report.valid, report.findings.is_empty(), "{report:?}");
        }
    });
}

/// vhd-chain's chain reader (flatten, coalesce): open the VHD as a
/// one-member chain and read the whole virtual disk through, as the
/// digest coalesce verifies with.
pub fn vhd_read(data: &[u8]) {
    with_file("input.vhd", data, |p| {
        if let Ok(mut chain) = vhd_chain::read::Chain::open(&[p.to_path_buf()]) {
            let size = chain.virtual_size();
            let _ = chain.digest(0, size);
        }
    });
}

/// vhd-chain's tarball reader (`extract --dry-run`, `flatten` of a
/// tarball): every safety rule, nothing written.
pub fn vhd_tar(data: &[u8]) {
    with_file("input.tgz", data, |p| {
        let limits = vhd_chain::extract::Limits {
            max_bytes: 64 << 20,
            max_members: 1000,
        };
        if let Ok(members) = vhd_chain::extract::scan(p, &limits) {
            let total: u64 = members.iter().map(|m| m.size).sum();
            assert!(total <= limits.max_bytes, "{total} bytes passed the limit");
            for m in &members {
                assert!(
                    !m.name.contains('/') && m.name.ends_with(".vhd"),
                    "member {:?} accepted",
                    m.name
                );
            }
        }
    });
}

/// cachewalk's instance inventory (`--instances`): JSON lines, and each
/// object on its own.
pub fn cachewalk_inventory(data: &[u8]) {
    let _ = cachewalk::inventory::read(data);
    for line in data.split(|&b| b == b'\n') {
        if let Ok(Value::Object(m)) = serde_json::from_slice::<Value>(line)
            && let Ok(inst) = cachewalk::inventory::parse_instance(&m)
        {
            let _ = (inst.resizing(), inst.who());
        }
    }
}

/// cachewalk's reading of an instance's `disk.info` (`nova --audit`).
pub fn cachewalk_disk_info(data: &[u8]) {
    with_file("disk.info", data, |p| {
        if let Some(dir) = p.parent() {
            let _ = cachewalk::audit::disk_info(dir);
        }
    });
}

/// glance-load's reading of a dump directory's metadata file (ours, v2,
/// or an old glance-replicator dump's v1), named by an image id.
pub fn glance_load_meta(data: &[u8]) {
    with_file("4b5a5e6e-3c2a-4f38-9d8e-1b2c3d4e5f60", data, |p| {
        if let Ok(rec) = glance_load::dir::record(p) {
            let _ = serde_json::to_string(&rec);
        }
    });
}
