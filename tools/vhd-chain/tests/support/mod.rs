//! Helpers shared by vhd-chain's integration tests.
#![allow(dead_code)]

use std::process::Command;

/// qemu-img and qemu-io (the oracles and image makers) are installed.
/// CI installs them, so there a missing one fails the test instead of
/// skipping it.
pub fn have_qemu() -> bool {
    let ok = test_support::runs("qemu-img") && test_support::runs("qemu-io");
    test_support::require("qemu-img and qemu-io", ok)
}

use test_support::run_ok;

/// A dynamic VHD made by qemu-img.
pub fn create_dynamic(p: &std::path::Path, size: &str) {
    run_ok(
        Command::new("qemu-img")
            .args(["create", "-q", "-f", "vpc", "-o", "subformat=dynamic"])
            .arg(p)
            .arg(size),
    );
}

/// `qemu-io -f vpc -c 'write -P PAT OFF LEN' ...` on `p`.
pub fn qemu_write(p: &std::path::Path, writes: &[(u8, u64, u64)]) {
    let mut c = Command::new("qemu-io");
    c.args(["-f", "vpc"]);
    for (pat, off, len) in writes {
        c.arg("-c").arg(format!("write -P {pat:#x} {off} {len}"));
    }
    c.arg(p);
    run_ok(&mut c);
}

/// The raw virtual disk of `p` as qemu-img converts it.
pub fn convert(p: &std::path::Path) -> Vec<u8> {
    let raw = p.with_extension("qemu-raw");
    run_ok(
        Command::new("qemu-img")
            .args(["convert", "-f", "vpc", "-O", "raw"])
            .arg(p)
            .arg(&raw),
    );
    let b = std::fs::read(&raw).unwrap_or_else(|e| panic!("{}: {e}", raw.display()));
    let _ = std::fs::remove_file(&raw);
    b
}

/// The big-endian u32 at `o`.
pub fn be32(b: &[u8], o: usize) -> u32 {
    let mut w = [0u8; 4];
    w.copy_from_slice(&b[o..o + 4]);
    u32::from_be_bytes(w)
}

/// Recompute the VHD checksum stored at `at` in `b`.
pub fn fix_sum(b: &mut [u8], at: usize) {
    b[at..at + 4].fill(0);
    let s: u32 = b.iter().fold(0u32, |a, x| a.wrapping_add(u32::from(*x)));
    b[at..at + 4].copy_from_slice(&(!s).to_be_bytes());
}

/// Make a qemu dynamic VHD a differencing child of `parent` (disk type 4
/// in both footer copies, parent UUID in the header, checksums fixed).
pub fn make_child(child: &std::path::Path, parent: &std::path::Path) {
    let read = |p: &std::path::Path| std::fs::read(p).unwrap_or_else(|e| panic!("{e}"));
    let pb = read(parent);
    let puuid = pb[pb.len() - 512 + 68..pb.len() - 512 + 84].to_vec();
    let mut b = read(child);
    let l = b.len();
    for at in [0, l - 512] {
        let f = &mut b[at..at + 512];
        f[60..64].copy_from_slice(&4u32.to_be_bytes());
        fix_sum(f, 64);
    }
    let h = &mut b[512..1536];
    h[40..56].copy_from_slice(&puuid);
    fix_sum(h, 36);
    std::fs::write(child, &b).unwrap_or_else(|e| panic!("{e}"));
}

/// Apply `writes` to a model disk.
pub fn model(disk: &mut [u8], writes: &[(u8, u64, u64)]) {
    for (pat, off, len) in writes {
        disk[*off as usize..(*off + *len) as usize].fill(*pat);
    }
}

/// Debian's python3 with pyvhdi (python3-libvhdi), the independent VHD
/// reader; CI installs it, so there its absence fails.
pub fn have_libvhdi() -> bool {
    let ok = Command::new("/usr/bin/python3")
        .args(["-c", "import pyvhdi"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    test_support::require("pyvhdi (python3-libvhdi) for /usr/bin/python3", ok)
}

/// The virtual disk of `chain` (leaf first, each member `set_parent` to
/// the next) as libvhdi reads it. Reads go in pieces of `piece` bytes at
/// multiples of `piece`, so that none spans two blocks (libvhdi misreads
/// those when block sizes differ; notes/vhd.md addendum). The length is
/// libvhdi's media size, which is the footer's *original* size (offset
/// 40), not `current_size`: a grown image reads short (checked against
/// libvhdi 20210425 by tests/resize.rs).
pub fn libvhdi_raw(chain: &[&std::path::Path], piece: u64) -> Vec<u8> {
    let script = r#"
import pyvhdi, sys
piece = int(sys.argv[1])
files = []
for p in sys.argv[2:]:
    f = pyvhdi.file(); f.open(p); files.append(f)
for c, p in zip(files, files[1:]):
    c.set_parent(p)
leaf = files[0]
size = leaf.get_media_size()
out = sys.stdout.buffer
off = 0
while off < size:
    n = min(piece, size - off)
    b = leaf.read_buffer_at_offset(n, off)
    assert len(b) == n, (off, n, len(b))
    out.write(b)
    off += n
"#;
    let mut c = Command::new("/usr/bin/python3");
    c.args(["-c", script]).arg(piece.to_string());
    for p in chain {
        c.arg(p);
    }
    run_ok(&mut c)
}

/// A dynamic (no parent) or differencing VHD to build, sector by sector,
/// independently of the crate's writer: any block size, bitmaps exactly
/// the sectors given.
pub struct Spec {
    /// Virtual size (a multiple of 512).
    pub size: u64,
    /// Block size (a power of two, at least 512).
    pub block: u64,
    /// Footer creator application.
    pub creator: [u8; 4],
    /// This image's UUID.
    pub uuid: [u8; 16],
    /// For a differencing disk: the parent's UUID and file name.
    pub parent: Option<([u8; 16], String)>,
    /// Set sectors: (first sector, sectors, fill byte). Zeros are set
    /// sectors too.
    pub runs: Vec<(u64, u64, u8)>,
}

impl Spec {
    /// A dynamic disk (creator `tap`).
    pub fn base(size: u64, block: u64, uuid: u8, runs: &[(u64, u64, u8)]) -> Spec {
        Spec {
            size,
            block,
            creator: *b"tap\0",
            uuid: [uuid; 16],
            parent: None,
            runs: runs.to_vec(),
        }
    }

    /// A differencing disk of the disk with UUID `[parent; 16]`, named
    /// `name` in its header.
    pub fn child(
        size: u64,
        block: u64,
        uuid: u8,
        (parent, name): (u8, &str),
        runs: &[(u64, u64, u8)],
    ) -> Spec {
        Spec {
            parent: Some(([parent; 16], name.to_owned())),
            ..Spec::base(size, block, uuid, runs)
        }
    }

    /// The same with another creator application.
    pub fn by(mut self, creator: &[u8; 4]) -> Spec {
        self.creator = *creator;
        self
    }
}

/// Write `spec` to `p` (footer copy, header at 512, BAT at 1536, blocks
/// in index order, end footer).
pub fn build_vhd(p: &std::path::Path, spec: &Spec) {
    let spb = spec.block / 512;
    let entries = spec.size.div_ceil(spec.block);
    let bat_bytes = (entries * 4).div_ceil(512) * 512;
    let bitmap = spb.div_ceil(8).div_ceil(512) * 512;
    let mut footer = vec![0u8; 512];
    footer[0..8].copy_from_slice(b"conectix");
    footer[8..12].copy_from_slice(&2u32.to_be_bytes());
    footer[12..16].copy_from_slice(&0x0001_0000u32.to_be_bytes());
    footer[16..24].copy_from_slice(&512u64.to_be_bytes());
    footer[28..32].copy_from_slice(&spec.creator);
    footer[32..36].copy_from_slice(&0x0001_0000u32.to_be_bytes());
    footer[40..48].copy_from_slice(&spec.size.to_be_bytes());
    footer[48..56].copy_from_slice(&spec.size.to_be_bytes());
    let kind: u32 = if spec.parent.is_some() { 4 } else { 3 };
    footer[60..64].copy_from_slice(&kind.to_be_bytes());
    footer[68..84].copy_from_slice(&spec.uuid);
    fix_sum(&mut footer, 64);
    let mut hdr = vec![0u8; 1024];
    hdr[0..8].copy_from_slice(b"cxsparse");
    hdr[8..16].copy_from_slice(&u64::MAX.to_be_bytes());
    hdr[16..24].copy_from_slice(&1536u64.to_be_bytes());
    hdr[24..28].copy_from_slice(&0x0001_0000u32.to_be_bytes());
    hdr[28..32].copy_from_slice(&(entries as u32).to_be_bytes());
    hdr[32..36].copy_from_slice(&(spec.block as u32).to_be_bytes());
    if let Some((uuid, name)) = &spec.parent {
        hdr[40..56].copy_from_slice(uuid);
        let units: Vec<u8> = name.encode_utf16().flat_map(u16::to_be_bytes).collect();
        hdr[64..64 + units.len()].copy_from_slice(&units);
    }
    fix_sum(&mut hdr, 36);
    // Which blocks hold set sectors, their bitmaps and data.
    let mut blocks: std::collections::BTreeMap<u64, (Vec<u8>, Vec<u8>)> = Default::default();
    for &(first, n, fill) in &spec.runs {
        for s in first..first + n {
            let (bm, data) = blocks
                .entry(s / spb)
                .or_insert_with(|| (vec![0u8; bitmap as usize], vec![0u8; spec.block as usize]));
            let i = (s % spb) as usize;
            bm[i / 8] |= 0x80 >> (i % 8);
            data[i * 512..(i + 1) * 512].fill(fill);
        }
    }
    let mut bat = vec![0xffu8; bat_bytes as usize];
    let mut body = Vec::new();
    let mut at = 1536 + bat_bytes;
    for (blk, (bm, data)) in &blocks {
        let e = (at / 512) as u32;
        bat[*blk as usize * 4..*blk as usize * 4 + 4].copy_from_slice(&e.to_be_bytes());
        body.extend_from_slice(bm);
        body.extend_from_slice(data);
        at += bitmap + spec.block;
    }
    let mut file = footer.clone();
    file.extend_from_slice(&hdr);
    file.extend_from_slice(&bat);
    file.extend_from_slice(&body);
    file.extend_from_slice(&footer);
    std::fs::write(p, &file).unwrap_or_else(|e| panic!("{e}"));
}

/// Apply a [`Spec`]'s runs to a model disk.
pub fn model_runs(disk: &mut [u8], runs: &[(u64, u64, u8)]) {
    for &(first, n, fill) in runs {
        let end = ((first + n) * 512).min(disk.len() as u64) as usize;
        let start = ((first * 512) as usize).min(end);
        disk[start..end].fill(fill);
    }
}

/// The footer UUID of the VHD at `p`.
pub fn footer_uuid(p: &std::path::Path) -> [u8; 16] {
    let b = std::fs::read(p).unwrap_or_else(|e| panic!("{e}"));
    let mut u = [0u8; 16];
    u.copy_from_slice(&b[b.len() - 512 + 68..b.len() - 512 + 84]);
    u
}

/// qemu's vpc driver marks every sector of a block it allocates as
/// present (the bitmap is written all ones; checked: a 4 KiB write gives a
/// 512-byte bitmap of 0xff). To exercise per-sector bitmaps, rewrite each
/// allocated block's bitmap to exactly the sectors in `writes`, as blktap
/// would have left it.
pub fn exact_bitmaps(p: &std::path::Path, writes: &[(u8, u64, u64)]) {
    let mut b = std::fs::read(p).unwrap_or_else(|e| panic!("{e}"));
    let table = u64::from_be_bytes(b[512 + 16..512 + 24].try_into().unwrap()) as usize;
    let entries = be32(&b, 512 + 28) as usize;
    let bs = u64::from(be32(&b, 512 + 32));
    let spb = bs / 512;
    let bm_len = (spb / 8).div_ceil(512) as usize * 512;
    let mut touched = 0;
    for blk in 0..entries {
        let e = be32(&b, table + 4 * blk);
        if e == u32::MAX {
            continue;
        }
        touched += 1;
        let mut bm = vec![0u8; bm_len];
        for (_, off, len) in writes {
            for s in off / 512..(off + len) / 512 {
                if s / spb == blk as u64 {
                    let i = (s % spb) as usize;
                    bm[i / 8] |= 0x80 >> (i % 8);
                }
            }
        }
        assert!(
            bm.iter().any(|x| *x != 0),
            "block {blk} allocated but not written"
        );
        let at = e as usize * 512;
        b[at..at + bm_len].copy_from_slice(&bm);
    }
    assert!(touched > 0);
    std::fs::write(p, &b).unwrap_or_else(|e| panic!("{e}"));
}

/// Names in `dir`, sorted.
pub fn listing(dir: &std::path::Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{e}"))
        .map(|e| {
            e.unwrap_or_else(|e| panic!("{e}"))
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    v.sort();
    v
}

/// The virtual size qemu-img reports for the VHD at `p`.
pub fn qemu_virtual_size(p: &std::path::Path) -> u64 {
    let out = run_ok(
        Command::new("qemu-img")
            .args(["info", "-f", "vpc", "--output=json"])
            .arg(p),
    );
    let v: serde_json::Value = serde_json::from_slice(&out).unwrap_or_else(|e| panic!("{e}"));
    v["virtual-size"]
        .as_u64()
        .unwrap_or_else(|| panic!("no virtual-size: {v}"))
}
