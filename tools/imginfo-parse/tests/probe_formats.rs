//! Every format qemu's probing can pick is recognised natively, so none
//! passes as raw: bochs, cloop and dmg images built here by hand from
//! their layouts (qemu-img cannot write them), confirmed by the installed
//! qemu-img, and headers qemu probes but cannot open (short files, the
//! VDI signature beside another header, a raw disk named `*.dmg`). Each is
//! refused by `--check --expect-format raw`.
#![cfg(test)]

mod support;

use serde_json::Value;
use std::path::Path;
use std::process::Command;
use support::*;

// ---- hand-built images, from qemu's struct layouts -------------------

/// A bochs growing image (`block/bochs.c`): 512-byte header, then the
/// catalog (every extent unallocated).
fn bochs(version: u32, disk: u64, extent: u32) -> Vec<u8> {
    let catalog = disk.div_ceil(u64::from(extent)) as u32;
    let mut h = vec![0u8; 512];
    h[..22].copy_from_slice(b"Bochs Virtual HD Image");
    h[32..39].copy_from_slice(b"Redolog");
    h[48..55].copy_from_slice(b"Growing");
    for (o, v) in [
        (64, version),
        (68, 512),
        (72, catalog),
        (76, 512),
        (80, extent),
    ] {
        h[o..o + 4].copy_from_slice(&v.to_le_bytes());
    }
    let at = if version == 0x0001_0000 { 84 } else { 88 };
    h[at..at + 8].copy_from_slice(&disk.to_le_bytes());
    h.extend(std::iter::repeat_n(0xff, catalog as usize * 4));
    h
}

const CLOOP_MAGIC: &[u8] =
    b"#!/bin/sh\n#V2.0 Format\nmodprobe cloop file=$0 && mount -r -t iso9660 /dev/cloop $1\n";

/// zlib around one stored (uncompressed) deflate block.
fn zlib_stored(data: &[u8]) -> Vec<u8> {
    assert!(data.len() <= 0xffff);
    let mut v = vec![0x78, 0x01, 0x01];
    let n = data.len() as u16;
    v.extend_from_slice(&n.to_le_bytes());
    v.extend_from_slice(&(!n).to_le_bytes());
    v.extend_from_slice(data);
    let (mut a, mut b) = (1u32, 0u32);
    for &x in data {
        a = (a + u32::from(x)) % 65521;
        b = (b + a) % 65521;
    }
    v.extend_from_slice(&((b << 16) | a).to_be_bytes());
    v
}

/// A cloop V2.0 image (`block/cloop.c`): block `i` holds bytes `i + 1`.
fn cloop(blocks: u32, block_size: u32) -> Vec<u8> {
    let mut v = vec![0u8; 128];
    v[..CLOOP_MAGIC.len()].copy_from_slice(CLOOP_MAGIC);
    v.extend_from_slice(&block_size.to_be_bytes());
    v.extend_from_slice(&blocks.to_be_bytes());
    let data: Vec<Vec<u8>> = (0..blocks)
        .map(|i| zlib_stored(&vec![i as u8 + 1; block_size as usize]))
        .collect();
    let mut off = (136 + 8 * (blocks as usize + 1)) as u64;
    v.extend_from_slice(&off.to_be_bytes());
    for d in &data {
        off += d.len() as u64;
        v.extend_from_slice(&off.to_be_bytes());
    }
    for d in data {
        v.extend_from_slice(&d);
    }
    v
}

fn base64(b: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut s = String::new();
    for c in b.chunks(3) {
        let n = (u32::from(c[0]) << 16)
            | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
            | u32::from(*c.get(2).unwrap_or(&0));
        for i in 0..4 {
            if i <= c.len() {
                s.push(A[(n >> (18 - 6 * i)) as usize & 63] as char);
            } else {
                s.push('=');
            }
        }
    }
    s
}

/// A UDIF image (`block/dmg.c`): an XML property list whose one `mish`
/// block maps `sectors` zero sectors, then the 512-byte `koly` trailer.
fn dmg(sectors: u64) -> Vec<u8> {
    let mut mish = vec![0u8; 204 + 2 * 40];
    mish[..4].copy_from_slice(b"mish");
    mish[4..8].copy_from_slice(&1u32.to_be_bytes());
    mish[0x10..0x18].copy_from_slice(&sectors.to_be_bytes());
    mish[200..204].copy_from_slice(&2u32.to_be_bytes());
    // chunk 0: zeros (UDZE) over every sector; chunk 1: the last entry
    mish[204 + 0x10..204 + 0x18].copy_from_slice(&sectors.to_be_bytes());
    mish[244..248].copy_from_slice(&u32::MAX.to_be_bytes());
    mish[244 + 8..244 + 16].copy_from_slice(&sectors.to_be_bytes());
    let xml = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<plist version=\"1.0\"><dict>\
<key>resource-fork</key><dict><key>blkx</key><array><dict><key>Data</key>\
<data>{}</data></dict></array></dict></dict></plist>\n",
        base64(&mish)
    )
    .into_bytes();
    let mut t = vec![0u8; 512];
    t[..4].copy_from_slice(b"koly");
    t[4..8].copy_from_slice(&4u32.to_be_bytes());
    t[8..12].copy_from_slice(&512u32.to_be_bytes());
    t[0xe0..0xe8].copy_from_slice(&(xml.len() as u64).to_be_bytes());
    t[0x1e8..0x1ec].copy_from_slice(&1u32.to_be_bytes());
    t[0x1ec..0x1f4].copy_from_slice(&sectors.to_be_bytes());
    let mut v = xml;
    v.extend_from_slice(&t);
    v
}

// ---- helpers -----------------------------------------------------------

fn have_qemu_img() -> bool {
    test_support::require("qemu-img", test_support::runs("qemu-img"))
}

/// `qemu-img info --output=json` of `file` in `dir`: its JSON, or `None`
/// when qemu cannot open it.
fn qemu_info(dir: &Path, file: &str) -> Option<Value> {
    let out = Command::new("qemu-img")
        .args(["info", "--output=json", file])
        .current_dir(dir)
        .env("LC_ALL", "C")
        .output()
        .unwrap();
    out.status
        .success()
        .then(|| serde_json::from_slice(&out.stdout).unwrap())
}

fn native(dir: &Path, args: &[&str]) -> Run {
    let mut a = vec!["-q"];
    a.extend_from_slice(args);
    run_in(Some(dir), &a, &[], b"")
}

fn failed_checks(rec: &Value) -> Vec<String> {
    rec["check"]["failures"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["check"].as_str().unwrap().to_owned())
        .collect()
}

/// The hand-built images: (file name, bytes, qemu's format, virtual size).
fn built() -> Vec<(&'static str, Vec<u8>, &'static str, u64)> {
    vec![
        (
            "v2.bochs",
            bochs(0x0002_0000, 1 << 20, 4096),
            "bochs",
            1 << 20,
        ),
        (
            "v1.bochs",
            bochs(0x0001_0000, 3 << 20, 65536),
            "bochs",
            3 << 20,
        ),
        ("four.cloop", cloop(4, 4096), "cloop", 4 * 4096),
        ("udif.dmg", dmg(2048), "dmg", 1 << 20),
    ]
}

fn write_all(dir: &Path, images: &[(&str, Vec<u8>, &str, u64)]) {
    for (name, bytes, _, _) in images {
        std::fs::write(dir.join(name), bytes).unwrap();
    }
}

// ---- tests -------------------------------------------------------------

#[test]
fn hand_built_images_are_what_qemu_img_says_and_what_we_say() {
    let t = tempfile::tempdir().unwrap();
    let images = built();
    write_all(t.path(), &images);
    let qemu = have_qemu_img();
    for (name, _, format, size) in &images {
        let n = native(t.path(), &[name]);
        assert_eq!(n.code, 0, "{name}: {}", n.stdout);
        let info = &n.records[0]["info"];
        assert_eq!(info["format"], *format, "{name}: {info}");
        assert_eq!(info["virtual_size"], *size, "{name}");
        assert_eq!(info["detected_formats"][0], *format, "{name}");
        if qemu {
            let q = qemu_info(t.path(), name).unwrap_or_else(|| panic!("qemu-img: {name}"));
            assert_eq!(q["format"], *format, "{name}: {q}");
            assert_eq!(q["virtual-size"], *size, "{name}");
            // qemu prints no dirty flag for these drivers; neither do we
            assert!(q.get("dirty-flag").is_none() && info.get("dirty_flag").is_none());
        }
    }
    if qemu {
        // qemu reads the cloop's data back: the hand-built blocks are real.
        let out = t.path().join("cloop.raw");
        let st = Command::new("qemu-img")
            .args(["convert", "-O", "raw", "four.cloop"])
            .arg(&out)
            .current_dir(t.path())
            .status()
            .unwrap();
        assert!(st.success());
        let data = std::fs::read(&out).unwrap();
        assert_eq!(data.len(), 4 * 4096);
        assert!(
            data.chunks(4096)
                .enumerate()
                .all(|(i, c)| c.iter().all(|&b| b == i as u8 + 1))
        );
    }
}

#[test]
fn expect_format_raw_refuses_each() {
    let t = tempfile::tempdir().unwrap();
    let images = built();
    write_all(t.path(), &images);
    for (name, _, format, _) in &images {
        let r = native(t.path(), &["--check", "--expect-format", "raw", name]);
        assert_eq!(r.code, 1, "{name}: {}", r.stdout);
        let rec = &r.records[0];
        assert_eq!(rec["check"]["acceptable"], false);
        assert_eq!(failed_checks(rec), ["format_mismatch"], "{name}");
        let why = rec["check"]["failures"][0]["reason"].as_str().unwrap();
        assert!(why.contains(format), "{name}: {why}");
        // And its own name passes.
        let r = native(t.path(), &["--check", "--expect-format", format, name]);
        assert_eq!(r.code, 0, "{name}: {}", r.stdout);
    }
}

#[test]
fn banned_formats_refuse_bochs() {
    let t = tempfile::tempdir().unwrap();
    write_all(t.path(), &built());
    let r = native(
        t.path(),
        &["--check", "--banned-formats", "bochs", "v2.bochs"],
    );
    assert_eq!(r.code, 1);
    assert_eq!(failed_checks(&r.records[0]), ["banned"]);
    let r = native(
        t.path(),
        &[
            "--check",
            "--banned-formats",
            "bochs,cloop,dmg",
            "four.cloop",
            "udif.dmg",
        ],
    );
    assert_eq!(r.code, 1);
    assert!(r.records.iter().all(|x| failed_checks(x) == ["banned"]));
    // Not banned by default (only qed is): the operator decides.
    let r = native(t.path(), &["--check", "v2.bochs", "v1.bochs", "four.cloop"]);
    assert_eq!(r.code, 0, "{}", r.stdout);
}

#[test]
fn a_raw_disk_named_dmg_is_not_raw() {
    let t = tempfile::tempdir().unwrap();
    let raw = vec![0x11u8; 1 << 20];
    std::fs::write(t.path().join("disk.dmg"), &raw).unwrap();
    std::fs::write(t.path().join("disk.img"), &raw).unwrap();
    if have_qemu_img() {
        // qemu's probe picks dmg by the name, then cannot open it.
        assert!(qemu_info(t.path(), "disk.dmg").is_none());
        assert_eq!(qemu_info(t.path(), "disk.img").unwrap()["format"], "raw");
    }
    let r = native(t.path(), &["disk.dmg"]);
    assert_eq!(r.code, 2, "{}", r.stdout);
    assert_eq!(r.records[0]["error"]["kind"], "bad_image");
    let msg = r.records[0]["error"]["message"].as_str().unwrap();
    assert!(msg.contains("dmg") && msg.contains("not raw"), "{msg}");
    let r = native(t.path(), &["--check", "--expect-format", "raw", "disk.dmg"]);
    assert_eq!(r.code, 2);
    assert_eq!(r.records[0]["check"]["acceptable"], false);
    let f = &r.records[0]["check"]["failures"][0];
    assert_eq!(f["check"], "info");
    assert!(f["reason"].as_str().unwrap().contains("*.dmg"), "{f}");
    // The same bytes under another name are raw, to qemu and to us.
    let r = native(t.path(), &["--check", "--expect-format", "raw", "disk.img"]);
    assert_eq!(r.code, 0, "{}", r.stdout);
}

#[test]
fn a_dmg_under_another_name_is_raw_with_the_trailer_reported() {
    let t = tempfile::tempdir().unwrap();
    std::fs::write(t.path().join("udif.img"), dmg(2048)).unwrap();
    if have_qemu_img() {
        assert_eq!(qemu_info(t.path(), "udif.img").unwrap()["format"], "raw");
    }
    let r = native(t.path(), &["--check", "--expect-format", "raw", "udif.img"]);
    let info = &r.records[0]["info"];
    assert_eq!(info["format"], "raw");
    assert_eq!(info["detected_formats"], serde_json::json!(["raw", "dmg"]));
    assert_eq!(r.code, 0, "{}", r.stdout);
    // -f dmg reads it as qemu -f dmg does.
    let r = native(t.path(), &["-f", "dmg", "udif.img"]);
    assert_eq!(r.records[0]["info"]["format"], "dmg", "{}", r.stdout);
    assert_eq!(r.records[0]["info"]["virtual_size"], 1 << 20);
}

/// Files qemu's probe gives a score above raw's, whatever else they hold.
fn not_raw_cases(dir: &Path) -> Vec<(&'static str, Vec<u8>)> {
    let mut v: Vec<(&'static str, Vec<u8>)> = vec![
        // Short files: qemu probes 2 KiB with zeros past the end.
        ("short.qed", b"QED".to_vec()),
        ("short.qcow2", b"QFI\xfb\x01".to_vec()),
        // The cloop script alone: cloop, with a block size of 0.
        ("script.sh", CLOOP_MAGIC.to_vec()),
        // A bochs header whose extent size qemu refuses.
        ("bad-extent.bochs", {
            let mut b = bochs(0x0002_0000, 1 << 20, 4096);
            b[80..84].copy_from_slice(&1000u32.to_le_bytes());
            b
        }),
        // A cloop whose offsets go backwards.
        ("backwards.cloop", {
            let mut c = cloop(4, 4096);
            c[144..152].copy_from_slice(&0u64.to_be_bytes());
            c
        }),
        // A dmg whose trailer has neither fork nor property list.
        ("empty.dmg", {
            let mut d = dmg(8);
            let at = d.len() - 512;
            d[at + 0xe0..at + 0xe8].copy_from_slice(&0u64.to_be_bytes());
            d
        }),
    ];
    // The VDI signature at 0x40 of a real qcow2: qemu picks vdi.
    if have_qemu_img() {
        let st = Command::new("qemu-img")
            .args(["create", "-q", "-f", "qcow2", "tie.qcow2", "1M"])
            .current_dir(dir)
            .status()
            .unwrap();
        assert!(st.success());
        let mut q = std::fs::read(dir.join("tie.qcow2")).unwrap();
        q[0x40..0x44].copy_from_slice(&0xbeda_107fu32.to_le_bytes());
        v.push(("tie.qcow2", q));
    }
    v
}

#[test]
fn headers_qemu_probes_but_cannot_open_are_never_raw() {
    let t = tempfile::tempdir().unwrap();
    let cases = not_raw_cases(t.path());
    let qemu = have_qemu_img();
    for (name, bytes) in &cases {
        std::fs::write(t.path().join(name), bytes).unwrap();
        if qemu {
            // qemu does not read any of them as raw: it fails to open them.
            assert!(qemu_info(t.path(), name).is_none(), "{name}");
        }
        let r = native(t.path(), &["--check", "--expect-format", "raw", name]);
        assert_eq!(r.code, 2, "{name}: {}", r.stdout);
        let rec = &r.records[0];
        assert_eq!(rec["error"]["kind"], "bad_image", "{name}");
        assert_eq!(rec["check"]["acceptable"], false, "{name}");
        assert!(rec.get("info").is_none(), "{name}");
    }
    // The error names the format qemu would pick.
    let msg = |name: &str| {
        native(t.path(), &[name]).records[0]["error"]["message"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    assert!(
        msg("short.qed").starts_with("qed: "),
        "{}",
        msg("short.qed")
    );
    assert!(msg("short.qcow2").starts_with("qcow2: "));
    assert!(msg("script.sh").starts_with("cloop: "));
    if qemu {
        assert!(
            msg("tie.qcow2").starts_with("vdi: "),
            "{}",
            msg("tie.qcow2")
        );
    }
}

#[test]
fn variants_open_exactly_where_qemu_opens_them() {
    if !have_qemu_img() {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let bochs_with = |o: usize, v: u32| {
        let mut b = bochs(0x0002_0000, 1 << 20, 4096);
        b[o..o + 4].copy_from_slice(&v.to_le_bytes());
        b
    };
    let cloop_with = |o: usize, v: &[u8]| {
        let mut c = cloop(2, 4096);
        c[o..o + v.len()].copy_from_slice(v);
        c
    };
    let dmg_with = |o: usize, v: u64| {
        let mut d = dmg(64);
        let at = d.len() - 512 + o;
        d[at..at + 8].copy_from_slice(&v.to_be_bytes());
        d
    };
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("e512.bochs", bochs(0x0002_0000, 1 << 20, 512)),
        ("e8m.bochs", bochs(0x0002_0000, 64 << 20, 8 << 20)),
        ("e16m.bochs", bochs_with(80, 16 << 20)),
        ("cat-big.bochs", bochs_with(72, 0x10_0001)),
        ("cat-small.bochs", bochs_with(72, 255)),
        ("odd-disk.bochs", bochs(0x0002_0000, (1 << 20) + 100, 4096)),
        ("b512.cloop", cloop(3, 512)),
        ("zero.cloop", cloop(0, 4096)),
        ("b1000.cloop", cloop_with(128, &1000u32.to_be_bytes())),
        (
            "b128m.cloop",
            cloop_with(128, &(128u32 << 20).to_be_bytes()),
        ),
        (
            "huge-block.cloop",
            cloop_with(152, &(1u64 << 30).to_be_bytes()),
        ),
        ("odd.dmg", {
            let mut d = dmg(64);
            d.insert(0, b' ');
            d
        }),
        ("zero-sectors.dmg", dmg_with(0x1ec, 0)),
        ("fork-after.dmg", dmg_with(0x18, 1 << 20)),
        ("xml-after.dmg", dmg_with(0xd8, 1 << 20)),
        ("neg.dmg", dmg_with(0x1ec, u64::MAX)),
    ];
    let mut wrong = Vec::new();
    for (name, bytes) in &cases {
        std::fs::write(t.path().join(name), bytes).unwrap();
        let q = qemu_info(t.path(), name);
        let n = native(t.path(), &[name]);
        let ours = &n.records[0]["info"];
        match &q {
            Some(q) => {
                if ours["format"] != q["format"] || ours["virtual_size"] != q["virtual-size"] {
                    wrong.push(format!("{name}: qemu {q} vs ours {}", n.stdout));
                }
            }
            None => {
                if n.code != 2 {
                    wrong.push(format!("{name}: qemu refuses it, ours {}", n.stdout));
                }
            }
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}
