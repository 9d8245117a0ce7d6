//! The oslo.utils differential: oslo.utils' format inspector (what Nova,
//! Glance and Cinder run on every image since 2024), driven in-process by
//! `tests/upstream/oslo_inspect.py` from the pinned Glance 33 venv, beside
//! `imginfo-parse --check` (native probe, default options: the VMDK create
//! types and banned formats Nova and Glance use) on the same files.
//!
//! Inputs: the committed image corpus (tests/fixtures/hostile/images, the
//! fuzz seeds of every image format), images written by the real qemu-img
//! in every format it can create, hand-built cases (GPT with odd protective
//! MBRs, LUKS2, a VMDK descriptor away from sector 1, ...) and seeded
//! mutations of all those (flipped and planted header bytes, truncations,
//! planted magics). `UPSTREAM_SEED` reproduces a run (the seed is printed);
//! `UPSTREAM_OSLO_MUTATIONS` sets the number of mutations (default 240).
//!
//! Compared per file: the format (oslo's names mapped to ours), the virtual
//! size when the formats agree, and the verdict (oslo safe vs our
//! `check.acceptable`). Every disagreement falls in a class; every class
//! must be a row of tests/upstream/differences-oslo.json, and every row's
//! listed cases must still show it (no silent drift either way).
#![cfg(test)]

use pipeline_tests::{tool, workspace};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

/// A file both sides look at.
type Case = pipeline_tests::corpus::Image;

/// splitmix64: small, seeded, good enough to pick offsets.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        if n == 0 { 0 } else { self.next() % n }
    }
    fn pick<'a, T>(&mut self, v: &'a [T]) -> &'a T {
        &v[self.below(v.len() as u64) as usize]
    }
}

fn in_ci() -> bool {
    std::env::var_os("CI").is_some()
}

/// Skip (outside CI) or fail (in CI) for a missing prerequisite.
fn missing(what: &str) -> Option<PathBuf> {
    assert!(!in_ci(), "{what} (required in CI)");
    eprintln!("SKIPPED: the oslo.utils differential: {what}");
    None
}

fn have_qemu_img() -> bool {
    if Command::new("qemu-img").arg("--version").output().is_ok() {
        return true;
    }
    missing("qemu-img is not installed (apt-get install qemu-utils)").is_some()
}

// ---------------------------------------------------------------- inputs

fn put(buf: &mut Vec<u8>, off: usize, bytes: &[u8]) {
    if buf.len() < off + bytes.len() {
        buf.resize(off + bytes.len(), 0);
    }
    buf[off..off + bytes.len()].copy_from_slice(bytes);
}

/// Cases built by hand: the shapes the issue names (GPT with an unusual
/// protective MBR, LUKS version 2, a VMDK descriptor away from sector 1)
/// and the classes the mutations found, each made deterministic here.
fn crafted(dir: &Path, qemu_dir: Option<&Path>, cases: &mut Vec<Case>) {
    let ws = workspace();
    let read = |p: &str| std::fs::read(ws.join(p)).unwrap();
    let gpt = read("fuzz/seeds/partition/gpt.img");
    let iso = read("fuzz/seeds/iso/tiny.iso");
    let mut made: Vec<(&str, Vec<u8>)> = Vec::new();

    // GPT whose protective MBR entry starts at CHS 0/0/1 (some tools write
    // it so); oslo wants exactly 0/2/0.
    let mut b = gpt.clone();
    put(&mut b, 446 + 1, &[0, 1, 0]);
    made.push(("gpt-pmbr-chs", b));
    // A hybrid MBR: the protective entry plus a second, real partition.
    let mut b = gpt.clone();
    put(&mut b, 446 + 16, &[0x80, 0, 0x22, 0, 0x83, 0, 0x31, 0]);
    put(&mut b, 446 + 16 + 8, &34u32.to_le_bytes());
    put(&mut b, 446 + 16 + 12, &16u32.to_le_bytes());
    made.push(("gpt-hybrid-mbr", b));
    // The protective entry not at LBA 1.
    let mut b = gpt.clone();
    put(&mut b, 446 + 8, &2u32.to_le_bytes());
    made.push(("gpt-pmbr-lba2", b));
    // A boot flag that is neither 0x00 nor 0x80.
    let mut b = gpt.clone();
    put(&mut b, 446, &[0x01]);
    made.push(("gpt-pmbr-bootflag", b));
    // A boot sector (0x55AA) with no partition table: a kernel, a VBR.
    let mut b = vec![0u8; 64 * 1024];
    put(&mut b, 0, &[0xEB, 0x3C, 0x90]);
    put(&mut b, 510, &[0x55, 0xAA]);
    made.push(("mbr-no-partitions", b));
    // A hybrid ISO: ISO 9660 with an MBR in its system area (the form of
    // most distribution ISOs).
    let mut b = iso.clone();
    put(&mut b, 446, &[0x80, 0, 1, 0, 0x17, 0, 0x20, 0]);
    put(&mut b, 446 + 8, &0u32.to_le_bytes());
    put(&mut b, 446 + 12, &((iso.len() / 512) as u32).to_le_bytes());
    put(&mut b, 510, &[0x55, 0xAA]);
    made.push(("iso-hybrid-mbr", b));
    // LUKS version 2: binary header (magic, version 2, header size) and a
    // JSON area, as cryptsetup writes it; qemu has no LUKS2 driver.
    let mut b = vec![0u8; 1024 * 1024];
    put(&mut b, 0, b"LUKS\xba\xbe");
    put(&mut b, 6, &2u16.to_be_bytes());
    put(&mut b, 8, &16384u64.to_be_bytes());
    put(&mut b, 16, &1u64.to_be_bytes());
    put(&mut b, 72, b"sha256");
    put(&mut b, 168, b"8f0a4b4c-6b7e-4d0c-9d0a-3f1c2e5b6a7d");
    put(&mut b, 4096, br#"{"keyslots":{},"tokens":{},"segments":{"0":{"type":"crypt","offset":"16777216","size":"dynamic","iv_tweak":"0","encryption":"aes-xts-plain64","sector_size":512}},"digests":{},"config":{"json_size":"12288","keyslots_size":"16744448"}}"#);
    made.push(("luks2", b));

    // A plain file with only an ISO 9660 signature (no volume size).
    let mut b = vec![0u8; 64 * 1024];
    put(&mut b, 0x8000, b"\x01CD001\x01");
    made.push(("iso-signature-only", b));
    // A fixed VHD (footer at the end only: raw to qemu and oslo) with an
    // ISO 9660 descriptor inside.
    let mut b = read("fuzz/seeds/vhd/fixed.vhd");
    put(&mut b, 0x8000, b"\x01CD001\x01");
    made.push(("vpc-fixed-iso", b));
    // A qcow2 (or VDI, VMDK) whose header holds 0x55AA at 510.
    let mut b = read("fuzz/seeds/qcow2/v3.qcow2");
    put(&mut b, 510, &[0x55, 0xAA]);
    made.push(("qcow2-55aa", b));
    // A VHDX with the VDI magic at 0x40 (inside its file identifier).
    let mut b = read("fuzz/seeds/vhdx/small.vhdx");
    put(&mut b, 0x40, b"\x7f\x10\xda\xbe");
    made.push(("vhdx-vdi-magic", b));
    // A parallels image with the VDI magic at 0x40.
    let mut b = read("fuzz/seeds/parallels/p.parallels");
    put(&mut b, 0x40, b"\x7f\x10\xda\xbe");
    made.push(("parallels-vdi-magic", b));
    // A VDI header cut short of 512 bytes (qemu reads zeros past the end).
    let mut b = read("fuzz/seeds/vdi/dynamic.vdi");
    b.truncate(500);
    made.push(("vdi-short-header", b));
    // A qcow v1 header cut short of 512 bytes.
    let mut b = read("fuzz/seeds/probe/v1-backing.qcow");
    b.truncate(237);
    made.push(("qcow1-short-header", b));
    // A qcow2 magic with version 0: raw to qemu, qcow2 to oslo.
    let mut b = read("fuzz/seeds/qcow2/v3.qcow2");
    put(&mut b, 4, &0u32.to_be_bytes());
    made.push(("qcow2-version0", b));
    // A qcow2 v3 with a backing file offset but a zero name length:
    // qemu reads no backing file.
    let mut b = read("fuzz/seeds/qcow2/v3.qcow2");
    put(&mut b, 8, &0x200u64.to_be_bytes());
    made.push(("qcow2-backing-offset-no-name", b));
    // A VMDK descriptor file with one non-text byte in a comment.
    let mut b = read("fuzz/seeds/vmdk/monolithicFlat.vmdk");
    if let Some(i) = b.iter().position(|&c| c == b'#') {
        b[i + 1] = 0x01;
    }
    made.push(("vmdk-descriptor-binary-byte", b));
    // A raw disk whose first sector is a VMDK descriptor text.
    let mut b = vec![0u8; 1024 * 1024];
    put(
        &mut b,
        0,
        b"# Disk DescriptorFile\ncreateType=\"monolithicSparse\"\n",
    );
    made.push(("raw-descriptor-text", b));
    // A monolithicSparse VMDK with a line oslo does not know in its
    // descriptor (qemu ignores it).
    let mut b = read("fuzz/seeds/vmdk/sparse.vmdk");
    let end = 512 + b[512..].iter().position(|&c| c == 0).unwrap();
    put(&mut b, end, b"unknown line\n");
    made.push(("vmdk-descriptor-unknown-line", b));
    // A LUKS magic on a VDI header cut short of oslo's 592-byte capture.
    let mut b = read("fuzz/seeds/vdi/dynamic.vdi");
    b.truncate(500);
    put(&mut b, 0, b"LUKS\xba\xbe\x00\x01");
    made.push(("luks-magic-short-vdi", b));
    // A first sector of text, then a non-ASCII byte before the first NUL:
    // oslo's VMDK inspector never sets its create type and raises
    // AttributeError.
    let mut b = vec![b'a'; 600];
    b.push(0xFF);
    b.extend_from_slice(&[0u8; 100]);
    made.push(("text-then-non-ascii", b));
    // A qcow2 naming a data file in its header extension with the
    // incompatible "external data file" bit (2) clear.
    let mut b = read("tests/fixtures/hostile/images/datafile.qcow2");
    b[0x4f] &= !4;
    made.push(("qcow2-datafile-bit-clear", b));
    // A VMDK descriptor file (refused: monolithicFlat) with 0x55AA at 510.
    let mut b = read("fuzz/seeds/vmdk/monolithicFlat.vmdk");
    put(&mut b, 510, &[0x55, 0xAA]);
    made.push(("vmdk-flat-55aa", b));
    // A short VMDK descriptor text without a version= line: qemu's probe
    // needs one, oslo's does not.
    made.push((
        "vmdk-descriptor-no-version",
        b"# Disk DescriptorFile\ncreateType=\"monolithicSparse\"\nRW 2048 SPARSE \"x.vmdk\"\n"
            .to_vec(),
    ));
    // A GPT disk whose length is not whole sectors.
    let mut b = gpt.clone();
    b.extend_from_slice(&[0u8; 100]);
    made.push(("gpt-odd-length", b));
    // A qcow v1 whose size field is not whole sectors.
    let mut b = read("tests/fixtures/hostile/images/v1.qcow");
    let size = u64::from_be_bytes(b[24..32].try_into().unwrap());
    put(&mut b, 24, &(size + 8).to_be_bytes());
    made.push(("qcow1-odd-size", b));

    // oslo's quirks, for check.oslo's model of them: a text first chunk
    // with a non-ASCII byte after 4 KiB (detection's chunk reads text, a
    // whole-file read with larger chunks raises)...
    let mut b = vec![b'a'; 5000];
    b[4500] = 0xFF;
    b.extend_from_slice(&[0u8; 100]);
    made.push(("text-non-ascii-after-4k", b));
    // ... a VHDX whose metadata region lies behind the region table (oslo
    // captures what follows the table instead)...
    let mut b = read("fuzz/seeds/vhdx/small.vhdx");
    let meta_guid = [
        0x06, 0xA2, 0x7C, 0x8B, 0x90, 0x47, 0x9A, 0x4B, 0xB8, 0xFE, 0x57, 0x5F, 0x05, 0x0F, 0x88,
        0x6E,
    ];
    let table = 192 * 1024;
    if let Some(e) = (0..8)
        .map(|i| table + 16 + i * 32)
        .find(|&e| b.get(e..e + 16) == Some(&meta_guid[..]))
    {
        put(&mut b, e + 16, &65536u64.to_le_bytes());
    }
    made.push(("vhdx-metadata-behind-table", b));
    // ... and a sparse VMDK header with its grain directory "at the end"
    // and its descriptor at sector 2 (oslo adds the footer, then raises).
    let mut b = read("fuzz/seeds/vmdk/sparse.vmdk");
    put(&mut b, 56, &u64::MAX.to_le_bytes());
    put(&mut b, 28, &2u64.to_le_bytes());
    made.push(("vmdk-gd-at-end-desc-sector2", b));

    if let Some(q) = qemu_dir {
        let mut stream = std::fs::read(q.join("vmdk-streamOptimized.img")).unwrap();
        // A streamOptimized footer, one that names yet another footer, and
        // one whose end-of-stream marker is damaged (the header's grain directory "at the end" makes oslo read them;
        // qemu-img create writes none: one is appended, as a streaming
        // writer ends the file: footer marker, header copy, end of stream).
        let mut copy = stream[..512].to_vec();
        put(&mut stream, 56, &u64::MAX.to_le_bytes());
        put(&mut copy, 56, &1u64.to_le_bytes());
        let mut marker = vec![0u8; 512];
        put(&mut marker, 12, &3u32.to_le_bytes());
        stream.extend_from_slice(&marker);
        stream.extend_from_slice(&copy);
        stream.extend_from_slice(&[0u8; 512]);
        let n = stream.len();
        made.push(("vmdk-stream-footer", stream.clone()));
        let mut b = stream.clone();
        put(&mut b, n - 1024 + 56, &u64::MAX.to_le_bytes());
        made.push(("vmdk-stream-footer-footer", b));
        let mut b = stream.clone();
        put(&mut b, n - 512 + 12, &1u32.to_le_bytes());
        made.push(("vmdk-stream-bad-eos", b));
        let sparse = std::fs::read(q.join("vmdk-monolithicSparse.img")).unwrap();
        // A VMDK whose descriptor is at sector 2 (the header says so, and
        // the text is there): qemu reads it; oslo wants sector 1.
        let mut b = sparse.clone();
        let desc = sparse[512..1024].to_vec();
        put(&mut b, 1024, &desc);
        put(&mut b, 28, &2u64.to_le_bytes());
        put(&mut b, 36, &19u64.to_le_bytes());
        made.push(("vmdk-desc-sector2", b));
        // A descriptor size field over 1 MiB (qemu never reads it).
        let mut b = sparse.clone();
        put(&mut b, 36, &4096u64.to_le_bytes());
        made.push(("vmdk-desc-size-2m", b));
        // A qcow2 v3 with the corrupt bit set.
        let mut b = std::fs::read(q.join("qcow2-v3.img")).unwrap();
        b[0x4f] |= 2;
        made.push(("qcow2-corrupt-bit", b));
    }
    for (name, bytes) in made {
        let path = dir.join(name);
        std::fs::write(&path, bytes).unwrap();
        cases.push(Case {
            id: format!("crafted/{name}"),
            path,
            fixed: true,
        });
    }
}

/// Magics of the formats either side knows, at the offsets they are read.
const MAGICS: &[(&[u8], usize)] = &[
    (b"QFI\xfb\x00\x00\x00\x03", 0),
    (b"KDMV\x01\x00\x00\x00", 0),
    (b"conectix", 0),
    (b"vhdxfile", 0),
    (b"LUKS\xba\xbe\x00\x01", 0),
    (b"QED\x00", 0),
    (b"\x7f\x10\xda\xbe", 0x40),
    (b"\x55\xaa", 510),
    (b"\x01CD001\x01", 0x8000),
    (
        b"# Disk DescriptorFile\ncreateType=\"monolithicSparse\"\n",
        0,
    ),
];

/// Seeded mutations of the fixed cases: flipped or planted header bytes,
/// truncations, planted magics (one to three each).
fn mutations(dir: &Path, rng: &mut Rng, count: usize, cases: &mut Vec<Case>) {
    let bases: Vec<(String, Vec<u8>)> = cases
        .iter()
        .filter(|c| c.fixed)
        .filter_map(|c| {
            let len = std::fs::metadata(&c.path).ok()?.len();
            (len <= 4 << 20).then(|| (c.id.clone(), std::fs::read(&c.path).unwrap()))
        })
        .collect();
    for n in 0..count {
        let (base_id, base) = rng.pick(&bases);
        let mut b = base.clone();
        let mut ops = Vec::new();
        for _ in 0..=rng.below(3) {
            match rng.below(5) {
                0 | 1 => {
                    // A header byte: first 1 KiB mostly, anywhere in 64 KiB.
                    let span = if rng.below(4) == 0 { 65536 } else { 1024 };
                    let off = rng.below(span.min(b.len() as u64).max(1)) as usize;
                    if off < b.len() {
                        b[off] ^= 1 << rng.below(8);
                    }
                    ops.push(format!("flip@{off}"));
                }
                2 => {
                    // A field planted: 0, all-ones, or a random word.
                    let off = (rng.below(128) * 4) as usize;
                    let v = match rng.below(3) {
                        0 => 0u32,
                        1 => u32::MAX,
                        _ => rng.next() as u32,
                    };
                    put(&mut b, off, &v.to_be_bytes());
                    ops.push(format!("word@{off}"));
                }
                3 => {
                    let (magic, off) = rng.pick(MAGICS);
                    // Mostly where it is read, sometimes one sector later.
                    let off = off + if rng.below(4) == 0 { 512 } else { 0 };
                    put(&mut b, off, magic);
                    ops.push(format!("magic@{off}"));
                }
                _ => {
                    let len = rng.below(b.len().min(70_000) as u64 + 1) as usize;
                    b.truncate(len);
                    ops.push(format!("trunc@{len}"));
                }
            }
        }
        let path = dir.join(format!("m{n:04}"));
        std::fs::write(&path, &b).unwrap();
        cases.push(Case {
            id: format!("mut/{n}:{base_id}:{}", ops.join(",")),
            path,
            fixed: false,
        });
    }
}

// ---------------------------------------------------------------- running

fn run_oslo(python: &Path, cases: &[Case]) -> Vec<Value> {
    let mut child = Command::new(python)
        .arg(workspace().join("tests/upstream/oslo_inspect.py"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut input = String::new();
    for c in cases {
        let line = serde_json::json!({"id": c.id, "path": c.path});
        input.push_str(&line.to_string());
        input.push('\n');
    }
    let mut stdin = child.stdin.take().unwrap();
    let writer = std::thread::spawn(move || stdin.write_all(input.as_bytes()));
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap().unwrap();
    assert!(out.status.success(), "oslo_inspect.py failed");
    let recs: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(recs.len(), cases.len(), "oslo_inspect.py lost records");
    recs
}

fn run_ours(cases: &[Case]) -> Vec<Value> {
    let bin = tool("imginfo-parse").unwrap();
    let mut recs = Vec::new();
    for chunk in cases.chunks(200) {
        let out = Command::new(&bin)
            .args(["-q", "--check"])
            .args(chunk.iter().map(|c| &c.path))
            .stderr(Stdio::null())
            .output()
            .unwrap();
        let code = out.status.code();
        assert!(matches!(code, Some(0..=2)), "imginfo-parse exited {code:?}");
        let got: Vec<Value> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(got.len(), chunk.len(), "imginfo-parse: one record per file");
        for (c, r) in chunk.iter().zip(&got) {
            assert_eq!(r["path"], c.path.to_string_lossy().as_ref());
        }
        recs.extend(got);
    }
    recs
}

// ---------------------------------------------------------------- comparing

/// oslo's format names as ours: VHD is qemu's vpc, qcow v1 is matched by
/// oslo's qcow2 inspector (same magic).
fn oslo_name(n: &str) -> &str {
    match n {
        "vhd" => "vpc",
        other => other,
    }
}

/// Our format in oslo's terms: qemu's primary format, except that raw is
/// named by what oslo would see in it (gpt for any MBR signature, iso);
/// "multiple" where we refuse a polyglot, "error" for an error record.
fn our_format(r: &Value) -> String {
    if r.get("error").is_some_and(|e| !e.is_null()) {
        return "error".into();
    }
    let checks = failed_checks(r);
    if checks.contains("multiple_formats") {
        return "multiple".into();
    }
    let fmt = r["info"]["format"].as_str().unwrap_or("?");
    let detected = detected(r);
    match fmt {
        "raw" if detected.contains("iso") => "iso".into(),
        "raw" if detected.contains("gpt") || detected.contains("mbr") => "gpt".into(),
        "qcow" => "qcow2".into(),
        other => other.into(),
    }
}

/// Our `detected_formats`.
fn detected(r: &Value) -> BTreeSet<&str> {
    r["info"]["detected_formats"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default()
}

fn failed_checks(r: &Value) -> BTreeSet<String> {
    r["check"]["failures"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|f| f["check"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// The disagreement classes of one file (empty: both sides agree).
///
/// - `format:OSLO/OURS:V` when the formats differ (V: oslo's verdict and
///   ours, `safe`/`refused`: a different format explains the verdict);
/// - `virtual_size:FMT:HOW` when they agree on the format but not the size
///   (`sector_rounding`: ours is oslo's rounded up to 512 bytes, as qemu's
///   block layer does);
/// - `verdict:we_refuse:FMT:CHECK` for each check of ours when only we
///   refuse (`verdict:we_refuse:bad_image` when our record is an error:
///   a header qemu would not open), `verdict:oslo_refuses:FMT:CHECK` for
///   each of oslo's failures (`format_error` for an ImageFormatError) when
///   only oslo refuses.
fn classify(oslo: &Value, ours: &Value) -> Vec<String> {
    let mut classes = Vec::new();
    let o_fmt = match oslo["format"].as_str() {
        Some(f) => oslo_name(f).to_owned(),
        None if oslo["error"]
            .as_str()
            .is_some_and(|e| e.contains("Multiple formats")) =>
        {
            "multiple".into()
        }
        None => "error".into(),
    };
    let u_fmt = our_format(ours);
    let o_safe = oslo["safe"].as_bool().unwrap();
    let u_safe = ours["check"]["acceptable"].as_bool().unwrap();
    let word = |safe: bool| if safe { "we_accept" } else { "we_refuse" };
    if u_fmt == "error" {
        // No format or size to compare: only the verdict counts.
        if o_safe {
            classes.push("verdict:we_refuse:bad_image".to_owned());
        }
        return classes;
    }
    let o_error = oslo["error"].as_str().unwrap_or("");
    if o_error.starts_with("ImageFormatError: Incomplete") || o_fmt == "error" {
        // oslo could not finish: a header shorter than its capture
        // region, or an exception inside an inspector. Refused.
        if u_safe {
            let kind = o_error.split(':').next().unwrap_or("");
            let kind = if kind == "ImageFormatError" {
                "incomplete_header"
            } else {
                kind
            };
            classes.push(format!("verdict:oslo_refuses:{kind}"));
        }
        return classes;
    }
    let oslo_formats: BTreeSet<&str> = oslo["formats"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let detected = detected(ours);
    if oslo_formats.contains("gpt") && !detected.contains("gpt") && !detected.contains("mbr") {
        // Any 0x55AA at 510 is an MBR to oslo; not to qemu or us.
        classes.push(format!("format:mbr_signature_only:{}", word(u_safe)));
        return classes;
    }
    if o_fmt == "multiple" && u_fmt != "multiple" {
        classes.push("format:polyglot_oslo_only".to_owned());
        return classes;
    }
    if u_fmt == "multiple" && o_fmt != "multiple" {
        classes.push("format:polyglot_ours_only".to_owned());
        return classes;
    }
    if o_fmt != u_fmt {
        classes.push(format!("format:{o_fmt}/{u_fmt}"));
        return classes;
    }
    if o_fmt != "multiple" && o_fmt != "error" {
        let (a, b) = (
            oslo["virtual_size"].as_u64(),
            ours["info"]["virtual_size"].as_u64(),
        );
        if a != b {
            let how = match (a, b) {
                (Some(x), Some(y)) if y == x.div_ceil(512) * 512 || y == x / 512 * 512 => {
                    "sector_rounding"
                }
                (Some(0), _) => "oslo_zero",
                (Some(x), Some(y)) if x < y => "oslo_smaller",
                (Some(_), Some(_)) => "oslo_larger",
                _ => "unknown",
            };
            classes.push(format!("virtual_size:{o_fmt}:{how}"));
        }
    }
    if o_safe && !u_safe {
        for check in failed_checks(ours) {
            classes.push(format!("verdict:we_refuse:{u_fmt}:{check}"));
        }
    } else if !o_safe && u_safe {
        match oslo["failures"].as_object() {
            Some(f) if !f.is_empty() => {
                for name in f.keys() {
                    classes.push(format!("verdict:oslo_refuses:{o_fmt}:{name}"));
                }
            }
            _ => classes.push(format!("verdict:oslo_refuses:{o_fmt}:format_error")),
        }
    }
    classes
}

/// What `check.oslo` must say for oslo's answer: its verdict, the format
/// detect_file_format returned (null when it raised) and the failure names
/// (oslo's check names; `incomplete`, `multiple_formats` and
/// `inspector_error` for what it raised).
fn oslo_expected(oslo: &Value) -> Value {
    let error = oslo["error"].as_str().unwrap_or("");
    let mut failures: BTreeSet<String> = oslo["failures"]
        .as_object()
        .map(|f| f.keys().cloned().collect())
        .unwrap_or_default();
    if error.starts_with("ImageFormatError: Incomplete") {
        failures.insert("incomplete".into());
    } else if error.contains("Multiple formats detected") {
        failures.insert("multiple_formats".into());
    } else if !error.is_empty() {
        failures.insert("inspector_error".into());
    }
    serde_json::json!({
        "acceptable": oslo["safe"],
        "format": oslo["format"],
        "failures": failures,
    })
}

/// Our `check.oslo`, failures as a set.
fn oslo_ours(ours: &Value) -> Value {
    let o = &ours["check"]["oslo"];
    let failures: BTreeSet<&str> = o["failures"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    serde_json::json!({
        "acceptable": o["acceptable"],
        "format": o["format"],
        "failures": failures,
    })
}

/// Cases where `check.oslo` may differ from oslo itself, with the reason
/// (none: every case must agree).
const OSLO_MODEL_GAPS: &[(&str, &str)] = &[];

#[derive(Debug)]
struct Row {
    class: String,
    cases: Vec<String>,
}

fn table() -> Vec<Row> {
    let path = workspace().join("tests/upstream/differences-oslo.json");
    let v: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    v["differences"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            for k in ["class", "upstream", "ours", "why"] {
                assert!(
                    r[k].is_string(),
                    "{}: a row without {k}: {r}",
                    path.display()
                );
            }
            let cases: Vec<String> = r["cases"]
                .as_array()
                .unwrap()
                .iter()
                .map(|c| c.as_str().unwrap().to_owned())
                .collect();
            assert!(!cases.is_empty(), "row {} names no case", r["class"]);
            Row {
                class: r["class"].as_str().unwrap().to_owned(),
                cases,
            }
        })
        .collect()
}

#[test]
fn oslo_format_inspector_beside_imginfo_parse() {
    let t0 = Instant::now();
    let Some(python) = pipeline_tests::upstream::glance_python(
        "the oslo.utils differential",
        "oslo_utils.imageutils.format_inspector",
    ) else {
        return;
    };
    let seed = pipeline_tests::upstream::seed();
    let count: usize = std::env::var("UPSTREAM_OSLO_MUTATIONS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(240);
    eprintln!("oslo differential: UPSTREAM_SEED={seed} UPSTREAM_OSLO_MUTATIONS={count}");
    let mut rng = Rng(seed);

    let tmp = tempfile::tempdir().unwrap();
    let mut cases = Vec::new();
    cases.extend(pipeline_tests::corpus::committed());
    cases.extend(pipeline_tests::corpus::distribution().unwrap());
    let qdir = tmp.path().join("qemu");
    std::fs::create_dir(&qdir).unwrap();
    let qemu = have_qemu_img();
    if qemu {
        cases.extend(pipeline_tests::corpus::qemu_built(&qdir).unwrap());
    }
    let cdir = tmp.path().join("crafted");
    std::fs::create_dir(&cdir).unwrap();
    crafted(&cdir, qemu.then_some(qdir.as_path()), &mut cases);
    let mdir = tmp.path().join("mut");
    std::fs::create_dir(&mdir).unwrap();
    mutations(&mdir, &mut rng, count, &mut cases);

    let oslo = run_oslo(&python, &cases);
    let ours = run_ours(&cases);

    let rows = table();
    let known: BTreeSet<&str> = rows.iter().map(|r| r.class.as_str()).collect();
    let mut seen: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut agree = 0;
    let mut unlisted = Vec::new();
    let mut dump = String::new();
    let mut model_agree = 0;
    let mut model_wrong = Vec::new();
    for ((c, o), u) in cases.iter().zip(&oslo).zip(&ours) {
        assert_eq!(o["id"], c.id.as_str());
        // check.oslo is a model of oslo itself: it must give oslo's answer.
        let (want, got) = (oslo_expected(o), oslo_ours(u));
        if want == got {
            model_agree += 1;
        } else if !OSLO_MODEL_GAPS.iter().any(|(id, _)| *id == c.id) {
            model_wrong.push(format!(
                "case {}\n    oslo:       {want}\n    check.oslo: {got}\n    oslo said:  {o}",
                c.id
            ));
        }
        let classes = classify(o, u);
        let row = serde_json::json!({"id": c.id, "classes": classes, "oslo": o,
            "ours": {"format": u["info"]["format"], "detected_formats": u["info"]["detected_formats"],
                     "virtual_size": u["info"]["virtual_size"], "check": u["check"], "error": u["error"]}});
        dump.push_str(&row.to_string());
        dump.push('\n');
        if classes.is_empty() {
            agree += 1;
        }
        for class in classes {
            if !known.contains(class.as_str()) {
                unlisted.push(format!(
                    "{class}\n    case {}\n    oslo: {}\n    ours: format {} size {} check {}",
                    c.id, o, u["info"]["format"], u["info"]["virtual_size"], u["check"]
                ));
            }
            seen.entry(class).or_default().insert(c.id.clone());
        }
    }
    if let Some(p) = std::env::var_os("UPSTREAM_OSLO_DUMP") {
        std::fs::write(p, dump).unwrap();
    }
    let mut stale = Vec::new();
    for row in &rows {
        for case in &row.cases {
            if !cases.iter().any(|c| c.fixed && &c.id == case) {
                if !qemu {
                    // Without qemu-img, its images and the cases made from them are absent.
                    continue;
                }
                stale.push(format!("{}: case {case} does not exist", row.class));
            } else if !seen.get(&row.class).is_some_and(|s| s.contains(case)) {
                stale.push(format!("{}: case {case} no longer shows it", row.class));
            }
        }
    }
    let classes_found = seen.len();
    eprintln!(
        "oslo differential: {agree}/{} cases agree, {} differ in {classes_found} documented classes ({} table rows), {:.1} s",
        cases.len(),
        cases.len() - agree,
        rows.len(),
        t0.elapsed().as_secs_f64()
    );
    for (class, ids) in &seen {
        eprintln!("  {class}: {} cases", ids.len());
    }
    eprintln!(
        "oslo differential: check.oslo gives oslo's answer on {model_agree}/{} cases",
        cases.len()
    );
    assert!(
        model_wrong.is_empty(),
        "UPSTREAM_SEED={seed}: check.oslo differs from oslo.utils itself on {} cases:\n{}",
        model_wrong.len(),
        model_wrong.join("\n")
    );
    assert!(
        unlisted.is_empty() && stale.is_empty(),
        "UPSTREAM_SEED={seed}: disagreements not in tests/upstream/differences-oslo.json:\n{}\n\nrows that no longer hold:\n{}",
        unlisted.join("\n"),
        stale.join("\n")
    );
    pipeline_tests::summary::record("oslo", agree, cases.len(), cases.len() - agree);
}
