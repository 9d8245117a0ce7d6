//! `relink::set_parent` / `relink::fix` (vhd-util `modify -p`, Cinder's
//! `fix_vhd_chain`) on real VHDs made by qemu-img, children turned into
//! differencing disks with XenServer-style locators by patching bytes here:
//! disk type 4 in both footers, the parent fields of the dynamic header,
//! and MacX / W2ku / W2ru / Wi2k locators whose data lives in sectors
//! appended before the end footer.
#![cfg(test)]

mod support;
use support::have_qemu;

use filter::ErrorKind;
use formats::{FileSource, probe};
use serde_json::Value;
use std::fs::{self, File};
use std::os::unix::fs::{FileExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use vhd_chain::relink::{self, Options, RelinkError};

const H: usize = 512;
/// Offsets of the appended locator sectors, from the end of the data.
const MACX: u64 = 0;
const W2KU: u64 = 512;
const W2RU: u64 = 1024; // two sectors of space
const WI2K: u64 = 2048;
const APPENDED: usize = 2560;

fn vhd(dir: &Path, name: &str) -> PathBuf {
    let st = Command::new("qemu-img")
        .args([
            "create",
            "-q",
            "-f",
            "vpc",
            "-o",
            "subformat=dynamic",
            name,
            "64M",
        ])
        .current_dir(dir)
        .status()
        .unwrap();
    assert!(st.success());
    dir.join(name)
}

fn be32(b: &[u8], o: usize) -> u32 {
    u32::from_be_bytes(b[o..o + 4].try_into().unwrap())
}

fn be64(b: &[u8], o: usize) -> u64 {
    u64::from_be_bytes(b[o..o + 8].try_into().unwrap())
}

fn checksum(b: &[u8], skip: usize) -> u32 {
    let mut s = 0u32;
    for (i, v) in b.iter().enumerate() {
        if i < skip || i >= skip + 4 {
            s = s.wrapping_add(u32::from(*v));
        }
    }
    !s
}

fn fix_sum(b: &mut [u8], at: usize) {
    let s = checksum(b, at);
    b[at..at + 4].copy_from_slice(&s.to_be_bytes());
}

fn utf16le(s: &str) -> Vec<u8> {
    s.encode_utf16().flat_map(u16::to_le_bytes).collect()
}

fn utf16be(s: &str) -> Vec<u8> {
    s.encode_utf16().flat_map(u16::to_be_bytes).collect()
}

fn footer_uuid(p: &Path) -> [u8; 16] {
    let b = fs::read(p).unwrap();
    b[68..84].try_into().unwrap()
}

fn uuid_str(b: &[u8]) -> String {
    let mut s = String::new();
    for (i, v) in b.iter().enumerate() {
        if matches!(i, 4 | 6 | 8 | 10) {
            s.push('-');
        }
        s.push_str(&format!("{v:02x}"));
    }
    s
}

/// Turn a qemu dynamic VHD into a differencing child of `parent_uuid`
/// named `old_name`, with locators; returns the offset of the appended
/// locator sectors.
fn make_child(path: &Path, parent_uuid: [u8; 16], old_name: &str) -> u64 {
    let mut b = fs::read(path).unwrap();
    let mut end = b.split_off(b.len() - 512);
    let l = b.len() as u64;
    assert_eq!(l % 512, 0);
    let mut area = vec![0xEEu8; APPENDED];
    let macx = format!("file://./{old_name}").into_bytes();
    let w2 = utf16le(&format!(".\\{old_name}"));
    let other = b"opaque Wi2k bytes".to_vec();
    for (off, data) in [(MACX, &macx), (W2KU, &w2), (W2RU, &w2), (WI2K, &other)] {
        let o = off as usize;
        area[o..o + data.len()].copy_from_slice(data);
    }
    // the second sector of W2ru's space: must survive the rewrite
    area[1536..2048].fill(0xDD);
    b.extend_from_slice(&area);
    for f in [&mut b[0..512], &mut end[..]] {
        f[60..64].copy_from_slice(&4u32.to_be_bytes());
        fix_sum(f, 64);
    }
    let h = &mut b[H..H + 1024];
    h[40..56].copy_from_slice(&parent_uuid);
    h[56..60].copy_from_slice(&0x1234_5678u32.to_be_bytes());
    let name = utf16be(old_name);
    h[64..64 + name.len()].copy_from_slice(&name);
    let entries: [(&[u8; 4], u32, usize, u64); 4] = [
        (b"MacX", 512, macx.len(), MACX),
        (b"W2ku", 512, w2.len(), W2KU),
        (b"W2ru", 1024, w2.len(), W2RU),
        (b"Wi2k", 1, other.len(), WI2K),
    ];
    for (i, (code, space, len, off)) in entries.iter().enumerate() {
        let e = 576 + 24 * i;
        h[e..e + 4].copy_from_slice(*code);
        h[e + 4..e + 8].copy_from_slice(&space.to_be_bytes());
        h[e + 8..e + 12].copy_from_slice(&(*len as u32).to_be_bytes());
        h[e + 16..e + 24].copy_from_slice(&(l + off).to_be_bytes());
    }
    fix_sum(h, 36);
    b.extend_from_slice(&end);
    fs::write(path, &b).unwrap();
    l
}

fn header_facts(p: &Path) -> serde_json::Map<String, Value> {
    let src = FileSource::open(p).unwrap();
    let pr = probe(&src, &p.to_string_lossy(), Some("vpc")).unwrap();
    pr.to_info()["header"].as_object().unwrap().clone()
}

fn no_temp_files(dir: &Path) {
    for e in fs::read_dir(dir).unwrap() {
        let n = e.unwrap().file_name();
        assert!(
            !n.to_string_lossy().contains(".tmp-"),
            "temp file left: {n:?}"
        );
    }
}

#[test]
fn set_parent_rewrites_exactly_what_vhd_util_does() {
    if !have_qemu() {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let parent = vhd(d.path(), "p.vhd");
    let child = vhd(d.path(), "c.vhd");
    let puuid = footer_uuid(&parent);
    let l = make_child(&child, puuid, "old-name.vhd") as usize;
    fs::set_permissions(&child, fs::Permissions::from_mode(0o640)).unwrap();
    let before = fs::read(&child).unwrap();
    let old_fd = File::open(&child).unwrap();
    let old_ino = old_fd.metadata().unwrap().ino();

    let r = relink::set_parent(&child, &parent, false).unwrap();

    let after = fs::read(&child).unwrap();
    assert_eq!(after.len(), before.len(), "file length changed");
    // Only the documented ranges changed.
    let allowed = |o: usize| {
        (H + 36..H + 40).contains(&o)
            || (H + 40..H + 60).contains(&o)
            || (H + 64..H + 576).contains(&o)
            || (H + 576..H + 768).contains(&o)
            || (l..l + 1536).contains(&o)
    };
    let changed: Vec<usize> = (0..before.len())
        .filter(|&o| before[o] != after[o])
        .collect();
    assert!(!changed.is_empty());
    for &o in &changed {
        assert!(allowed(o), "offset {o} changed");
    }
    // Footers, BAT and the untouched areas are byte-identical.
    assert_eq!(before[..H], after[..H]);
    assert_eq!(before[H + 1024..l], after[H + 1024..l]);
    assert_eq!(before[l + 1536..], after[l + 1536..]);

    let h = &after[H..H + 1024];
    assert_eq!(be32(h, 36), checksum(h, 36), "header checksum");
    assert_eq!(h[40..56], puuid);
    let mtime = fs::metadata(&parent).unwrap().mtime();
    assert_eq!(be32(h, 56), (mtime - 946_684_800) as u32);
    let name = utf16be("p.vhd");
    assert_eq!(h[64..64 + name.len()], name[..]);
    assert!(h[64 + name.len()..576].iter().all(|b| *b == 0));
    // Locators: payload, zero padding to the sector, length and space.
    let macx = b"file://./p.vhd".to_vec();
    let w2 = utf16le(".\\p.vhd");
    for (i, (code, data, off)) in [
        (b"MacX", &macx, MACX),
        (b"W2ku", &w2, W2KU),
        (b"W2ru", &w2, W2RU),
    ]
    .iter()
    .enumerate()
    {
        let e = 576 + 24 * i;
        assert_eq!(&h[e..e + 4], *code);
        assert_eq!(be32(h, e + 4), 512, "data space in bytes");
        assert_eq!(be32(h, e + 8) as usize, data.len());
        assert_eq!(be64(h, e + 16), (l as u64) + off);
        let o = l + *off as usize;
        assert_eq!(after[o..o + data.len()], data[..]);
        assert!(after[o + data.len()..o + 512].iter().all(|b| *b == 0));
    }
    // W2ru's old second sector and the Wi2k locator are left alone.
    assert!(after[l + 1536..l + 2048].iter().all(|b| *b == 0xDD));
    assert_eq!(h[576 + 72..576 + 96], before[H + 576 + 72..H + 576 + 96]);

    assert_eq!(r.new_parent_uuid, uuid_str(&puuid));
    assert_eq!(r.old_parent_uuid, uuid_str(&puuid));
    assert_eq!(r.parent_name, "p.vhd");
    assert_eq!(r.locators_rewritten, ["MacX", "W2ku", "W2ru"]);
    assert!(!r.forced);
    let json = serde_json::to_value(&r).unwrap();
    assert_eq!(json["locators_rewritten"][2], "W2ru");

    // The native reader agrees.
    let f = header_facts(&child);
    assert_eq!(f["parent_name"], "p.vhd");
    assert_eq!(f["parent_uuid"], uuid_str(&puuid));
    assert_eq!(f["dynamic_header_checksum_ok"], true);
    assert_eq!(f["parent_locators"][0]["path"], "file://./p.vhd");
    assert_eq!(f["parent_locators"][1]["path"], ".\\p.vhd");

    // Atomic replacement: new inode, the old one never written.
    let meta = fs::metadata(&child).unwrap();
    assert_ne!(meta.ino(), old_ino);
    assert_eq!(meta.mode() & 0o777, 0o640);
    let mut old = vec![0u8; before.len()];
    old_fd.read_exact_at(&mut old, 0).unwrap();
    assert_eq!(old, before);
    no_temp_files(d.path());
}

#[test]
fn caller_supplied_parent_mtime() {
    if !have_qemu() {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let parent = vhd(d.path(), "1.vhd");
    let child = vhd(d.path(), "0.vhd");
    make_child(&child, footer_uuid(&parent), "x.vhd");
    // 2021-03-04 05:06:07 UTC, a tar member's mtime
    let opts = Options {
        force: false,
        parent_mtime: Some(1_614_834_367),
    };
    let r = relink::set_parent_with(&child, &parent, &opts).unwrap();
    assert_eq!(r.parent_timestamp_epoch2000, 1_614_834_367 - 946_684_800);
    let b = fs::read(&child).unwrap();
    assert_eq!(be32(&b, H + 56), 1_614_834_367 - 946_684_800);
    // Through a symlink in another directory: refused (the child is
    // changed, and a link's target is never rewritten), nothing written.
    let other = d.path().join("links");
    fs::create_dir(&other).unwrap();
    let link = other.join("leaf.vhd");
    std::os::unix::fs::symlink(&child, &link).unwrap();
    let before = fs::read(&child).unwrap();
    let e = relink::set_parent(&link, &parent, false).unwrap_err();
    assert_eq!(e.kind(), filter::ErrorKind::Symlink, "{e}");
    assert!(
        fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink()
    );
    assert_eq!(fs::read(&child).unwrap(), before);
    no_temp_files(&other);
    no_temp_files(d.path());
}

#[test]
fn uuid_mismatch_is_refused_unless_forced() {
    if !have_qemu() {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let parent = vhd(d.path(), "p.vhd");
    let child = vhd(d.path(), "c.vhd");
    make_child(&child, [0x5a; 16], "old.vhd");
    let before = fs::read(&child).unwrap();
    let ino = fs::metadata(&child).unwrap().ino();
    let e = relink::set_parent(&child, &parent, false).unwrap_err();
    assert!(matches!(e, RelinkError::UuidMismatch { .. }), "{e}");
    assert_eq!(e.kind(), ErrorKind::Refused);
    let new = uuid_str(&footer_uuid(&parent));
    assert_eq!(
        e.uuids(),
        Some((uuid_str(&[0x5a; 16]).as_str(), new.as_str()))
    );
    let msg = e.to_string();
    assert!(
        msg.contains(&uuid_str(&[0x5a; 16])) && msg.contains(&new),
        "{msg}"
    );
    assert_eq!(fs::read(&child).unwrap(), before);
    assert_eq!(fs::metadata(&child).unwrap().ino(), ino);
    no_temp_files(d.path());

    let r = relink::set_parent(&child, &parent, true).unwrap();
    assert!(r.forced);
    assert_eq!(r.old_parent_uuid, uuid_str(&[0x5a; 16]));
    assert_eq!(r.new_parent_uuid, new);
    assert_eq!(header_facts(&child)["parent_uuid"], new);
}

#[test]
fn refusals_write_nothing() {
    if !have_qemu() {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let parent = vhd(d.path(), "p.vhd");
    // A plain dynamic disk is not a child.
    let dynamic = vhd(d.path(), "dyn.vhd");
    let before = fs::read(&dynamic).unwrap();
    let e = relink::set_parent(&dynamic, &parent, true).unwrap_err();
    assert!(matches!(e, RelinkError::NotDifferencing { .. }), "{e}");
    assert_eq!(e.kind(), ErrorKind::NotDifferencing);
    assert_eq!(fs::read(&dynamic).unwrap(), before);
    // A fixed disk neither.
    let st = Command::new("qemu-img")
        .args([
            "create",
            "-q",
            "-f",
            "vpc",
            "-o",
            "subformat=fixed",
            "fixed.vhd",
            "1M",
        ])
        .current_dir(d.path())
        .status()
        .unwrap();
    assert!(st.success());
    let e = relink::set_parent(&d.path().join("fixed.vhd"), &parent, true).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotDifferencing, "{e}");
    // Its own parent.
    let child = vhd(d.path(), "c.vhd");
    make_child(&child, footer_uuid(&parent), "p.vhd");
    let e = relink::set_parent(&child, &child, true).unwrap_err();
    assert!(matches!(e, RelinkError::SelfParent { .. }), "{e}");
    // A parent that is not a VHD, or missing.
    fs::write(d.path().join("text"), b"hello").unwrap();
    let e = relink::set_parent(&child, &d.path().join("text"), true).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotAVhd, "{e}");
    let e = relink::set_parent(&child, &d.path().join("missing.vhd"), true).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound, "{e}");
    let e = relink::set_parent(&d.path().join("missing.vhd"), &parent, true).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound, "{e}");
    // A relative path that does not fit W2ku's one sector.
    let deep = d.path().join("x".repeat(200)).join("y".repeat(200));
    fs::create_dir_all(&deep).unwrap();
    let far = deep.join("far.vhd");
    fs::copy(&parent, &far).unwrap();
    let before = fs::read(&child).unwrap();
    let e = relink::set_parent(&child, &far, true).unwrap_err();
    match &e {
        RelinkError::NameTooLong {
            code, need, room, ..
        } => {
            assert_eq!((code.as_str(), *room), ("W2ku", 512));
            assert!(*need > 512);
        }
        other => panic!("{other}"),
    }
    assert_eq!(e.kind(), ErrorKind::Refused);
    assert_eq!(fs::read(&child).unwrap(), before);
    no_temp_files(d.path());
}

#[test]
fn hostile_children_are_errors_not_panics() {
    if !have_qemu() {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let parent = vhd(d.path(), "p.vhd");
    let child = vhd(d.path(), "c.vhd");
    let l = make_child(&child, footer_uuid(&parent), "p.vhd") as usize;
    let good = fs::read(&child).unwrap();
    let t = d.path().join("t.vhd");
    // Every prefix (sector steps, plus a few odd ones), garbage, empty.
    let mut cuts: Vec<usize> = (0..good.len()).step_by(512).collect();
    cuts.extend([1, 100, 511, 513, 1535, 1537, good.len() - 1]);
    for n in cuts {
        fs::write(&t, &good[..n]).unwrap();
        let r = relink::set_parent(&t, &parent, true);
        // Enough of the file for the header and every locator to be
        // inside it is the only way to succeed.
        if let Ok(r) = r {
            assert!(n >= l + 1536 + 512, "{n}: {r:?}");
        }
    }
    fs::write(&t, vec![0xA5u8; 8192]).unwrap();
    assert_eq!(
        relink::set_parent(&t, &parent, true).unwrap_err().kind(),
        ErrorKind::NotAVhd
    );
    fs::write(&t, b"").unwrap();
    assert!(relink::set_parent(&t, &parent, true).is_err());
    // Locator data offsets outside the file, on the footer, on the header,
    // unaligned; data space invalid or huge; a header offset near 2^64.
    let patch = |f: &dyn Fn(&mut Vec<u8>)| {
        let mut b = good.clone();
        f(&mut b);
        let h = &mut b[H..H + 1024];
        fix_sum(h, 36);
        fs::write(&t, &b).unwrap();
        relink::set_parent(&t, &parent, true)
    };
    let e0 = H + 576;
    for off in [u64::MAX - 3, u64::MAX - 511, 1 << 40, 0, 512, 1024, 7] {
        let e = patch(&|b| b[e0 + 16..e0 + 24].copy_from_slice(&off.to_be_bytes())).unwrap_err();
        assert!(
            matches!(e, RelinkError::BadLocator { .. }),
            "offset {off}: {e}"
        );
        assert_eq!(e.kind(), ErrorKind::BadImage);
    }
    let end_footer = (good.len() - 512) as u64;
    let e = patch(&|b| b[e0 + 16..e0 + 24].copy_from_slice(&end_footer.to_be_bytes())).unwrap_err();
    assert!(matches!(e, RelinkError::BadLocator { .. }), "{e}");
    // Two locators sharing a data area.
    let e = patch(&|b| {
        let o = (l as u64).to_be_bytes();
        b[e0 + 24 + 16..e0 + 24 + 24].copy_from_slice(&o);
    })
    .unwrap_err();
    assert!(matches!(e, RelinkError::BadLocator { .. }), "{e}");
    for space in [0u32, 513, u32::MAX] {
        let e = patch(&|b| b[e0 + 4..e0 + 8].copy_from_slice(&space.to_be_bytes())).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Refused, "space {space}: {e}");
    }
    let e = patch(&|b| b[e0 + 4..e0 + 8].copy_from_slice(&(1u32 << 30).to_be_bytes())).unwrap_err();
    assert!(matches!(e, RelinkError::BadLocator { .. }), "{e}");
    // The footer's header offset past the end (footer checksum fixed).
    let mut b = good.clone();
    b[16..24].copy_from_slice(&u64::MAX.to_be_bytes());
    fix_sum(&mut b[..512], 64);
    fs::write(&t, &b).unwrap();
    assert!(relink::set_parent(&t, &parent, true).is_err());
    // Nothing of it was ever left behind.
    no_temp_files(d.path());
}

#[test]
fn fix_links_each_member_to_the_next() {
    if !have_qemu() {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    let chain: Vec<PathBuf> = ["0.vhd", "1.vhd", "2.vhd"]
        .iter()
        .map(|n| vhd(p, n))
        .collect();
    make_child(&chain[1], footer_uuid(&chain[2]), "mid.vhd");
    make_child(&chain[0], footer_uuid(&chain[1]), "base-old.vhd");

    // 0 and 1 members: nothing to do, nothing written.
    assert!(relink::fix(&[], false).unwrap().is_empty());
    let b0 = fs::read(&chain[0]).unwrap();
    let ino0 = fs::metadata(&chain[0]).unwrap().ino();
    assert!(relink::fix(&chain[..1], false).unwrap().is_empty());
    assert_eq!(fs::read(&chain[0]).unwrap(), b0);
    assert_eq!(fs::metadata(&chain[0]).unwrap().ino(), ino0);

    // A broken link anywhere: nothing is written at all.
    let other = vhd(p, "other.vhd");
    let broken = vec![chain[0].clone(), chain[1].clone(), other];
    let e = relink::fix(&broken, false).unwrap_err();
    assert!(matches!(e, RelinkError::UuidMismatch { .. }), "{e}");
    assert_eq!(e.path(), chain[1]);
    assert_eq!(fs::metadata(&chain[0]).unwrap().ino(), ino0);

    let r = relink::fix(&chain, false).unwrap();
    assert_eq!(r.len(), 2);
    assert_eq!(
        (r[0].child.clone(), r[0].parent.clone()),
        (chain[0].clone(), chain[1].clone())
    );
    assert_eq!(
        (r[1].child.clone(), r[1].parent.clone()),
        (chain[1].clone(), chain[2].clone())
    );
    assert_eq!(r[0].locator_path, "./1.vhd");
    let f0 = header_facts(&chain[0]);
    let f1 = header_facts(&chain[1]);
    assert_eq!(f0["parent_name"], "1.vhd");
    assert_eq!(f1["parent_name"], "2.vhd");
    assert_eq!(f0["parent_uuid"], header_facts(&chain[1])["uuid"]);
    assert_eq!(f1["parent_uuid"], header_facts(&chain[2])["uuid"]);
    assert_eq!(f0["parent_locators"][0]["path"], "file://./1.vhd");
    assert_eq!(f1["parent_locators"][2]["path"], ".\\2.vhd");
    // And the discovery view agrees.
    let facts = vhd_chain::vhd_facts(&chain[0]).unwrap();
    assert_eq!(facts["disk_type"], "differencing");

    // Per-member mtimes (from extraction) become the parent timestamps.
    let r = relink::fix_with(&chain, false, &[None, Some(1_000_000_000), None]).unwrap();
    assert_eq!(r[0].parent_timestamp_epoch2000, 1_000_000_000 - 946_684_800);
    no_temp_files(p);
}

#[test]
fn qemu_still_reads_the_rewritten_child() {
    if !have_qemu() {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    let parent = vhd(p, "p.vhd");
    let child = vhd(p, "c.vhd");
    // some data in the child, so that the comparison means something
    let st = Command::new("qemu-io")
        .args(["-f", "vpc", "-c", "write -P 0x61 1M 64k", "c.vhd"])
        .current_dir(p)
        .output();
    let wrote = matches!(st, Ok(ref o) if o.status.success());
    make_child(&child, footer_uuid(&parent), "old.vhd");
    fs::copy(&child, p.join("before.vhd")).unwrap();
    relink::set_parent(&child, &parent, false).unwrap();

    let info = |f: &str| {
        let o = Command::new("qemu-img")
            .args(["info", "-f", "vpc", "--output=json", f])
            .current_dir(p)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        serde_json::from_slice::<Value>(&o.stdout).unwrap()
    };
    assert_eq!(
        info("c.vhd")["virtual-size"],
        info("before.vhd")["virtual-size"]
    );
    // qemu has no checks for vpc: 63 "does not support checks", never a
    // corruption (2) or a leak (3).
    let o = Command::new("qemu-img")
        .args(["check", "-f", "vpc", "c.vhd"])
        .current_dir(p)
        .output()
        .unwrap();
    let code = o.status.code();
    assert!(
        matches!(code, Some(0 | 63)),
        "{code:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let o = Command::new("qemu-img")
        .args([
            "compare",
            "-q",
            "-f",
            "vpc",
            "-F",
            "vpc",
            "before.vhd",
            "c.vhd",
        ])
        .current_dir(p)
        .output()
        .unwrap();
    assert!(o.status.success(), "content changed");
    if !wrote {
        eprintln!("note: qemu-io missing, compared an empty child");
    }
}

/// libvhdi (Debian's python3-libvhdi, only under /usr/bin/python3) as an
/// independent reader: parent name, parent identifier and set_parent.
#[test]
fn libvhdi_resolves_the_new_parent() {
    if !have_qemu() {
        return;
    }
    let py = "/usr/bin/python3";
    let ok = Command::new(py)
        .args(["-c", "import pyvhdi"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !ok {
        eprintln!("skipping: pyvhdi (python3-libvhdi) is not installed for {py}");
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let parent = vhd(d.path(), "1.vhd");
    let child = vhd(d.path(), "0.vhd");
    make_child(&child, [0x11; 16], "wrong.vhd");
    relink::set_parent(&child, &parent, true).unwrap();
    let script = r#"
import pyvhdi, sys
c = pyvhdi.file(); c.open(sys.argv[1])
p = pyvhdi.file(); p.open(sys.argv[2])
assert c.get_parent_filename() == "1.vhd", c.get_parent_filename()
assert c.get_parent_identifier() == p.get_identifier(), (c.get_parent_identifier(), p.get_identifier())
c.set_parent(p)
assert c.get_media_size() == p.get_media_size()
c.read_buffer_at_offset(4096, 0)
print("ok")
"#;
    let o = Command::new(py)
        .args(["-c", script])
        .arg(&child)
        .arg(&parent)
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
}
