//! `vhd-chain info` and `discover` on real VHDs made by qemu-img (children
//! turned into differencing disks by patching their footers and headers,
//! as XenServer writes them), and Cinder's chain-discovery tests
//! (test_empty_chain, test_single_vhd_file_chain,
//! test_chain_with_two_elements) as directories.
#![cfg(test)]

mod support;
use support::have_qemu;

use serde_json::Value;
use std::path::Path;
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_vhd-chain");

fn vhd(dir: &Path, name: &str, size: &str, subformat: &str) {
    let st = Command::new("qemu-img")
        .args([
            "create",
            "-q",
            "-f",
            "vpc",
            "-o",
            &format!("subformat={subformat}"),
            name,
            size,
        ])
        .current_dir(dir)
        .status()
        .unwrap();
    assert!(st.success());
}

/// Make `child` a differencing disk of `parent`: disk type 4 in both footer
/// copies, the parent's UUID in the dynamic header, checksums redone.
fn make_differencing(dir: &Path, child: &str, parent: &str) {
    let script = r#"
import struct, sys
def fix(b, at):
    b[at:at + 4] = b'\0' * 4
    b[at:at + 4] = struct.pack('>I', (~sum(b)) & 0xffffffff)
child, parent = sys.argv[1], sys.argv[2]
p = open(parent, 'rb').read()
puuid = p[len(p) - 512 + 68:len(p) - 512 + 84]
b = bytearray(open(child, 'rb').read())
for off in (0, len(b) - 512):
    f = bytearray(b[off:off + 512]); f[60:64] = struct.pack('>I', 4); fix(f, 64); b[off:off + 512] = f
h = bytearray(b[512:1536]); h[40:56] = puuid; fix(h, 36); b[512:1536] = h
open(child, 'wb').write(b)
"#;
    let st = Command::new("python3")
        .args(["-c", script, child, parent])
        .current_dir(dir)
        .status()
        .unwrap();
    assert!(st.success());
}

fn run(dir: &Path, args: &[&str]) -> (i32, Vec<Value>) {
    let out = Command::new(BIN)
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    let recs = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    (out.status.code().unwrap_or(-1), recs)
}

#[test]
fn info_reports_what_qemu_believes() {
    if !have_qemu() {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    vhd(p, "dyn.vhd", "100M", "dynamic");
    vhd(p, "fixed.vhd", "100M", "fixed");
    std::fs::write(p.join("text.vhd"), b"not a vhd at all").unwrap();
    let (code, recs) = run(p, &["info", "dyn.vhd", "fixed.vhd", "text.vhd"]);
    assert_eq!(code, 2);
    for (rec, file) in recs.iter().zip(["dyn.vhd", "fixed.vhd"]) {
        let q = Command::new("qemu-img")
            .args(["info", "-f", "vpc", "--output=json", file])
            .current_dir(p)
            .output()
            .unwrap();
        let q: Value = serde_json::from_slice(&q.stdout).unwrap();
        assert_eq!(rec["vhd"]["virtual_size"], q["virtual-size"], "{file}");
        assert_eq!(rec["vhd"]["creator_app"], "qemu");
    }
    assert_eq!(recs[0]["vhd"]["disk_type"], "dynamic");
    assert_eq!(recs[1]["vhd"]["disk_type"], "fixed");
    assert_eq!(recs[2]["error"]["kind"], "not_a_vhd");
}

#[test]
fn discover_a_three_member_chain_leaf_first() {
    if !have_qemu() {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    for n in ["0.vhd", "1.vhd", "2.vhd"] {
        vhd(p, n, "64M", "dynamic");
    }
    make_differencing(p, "1.vhd", "2.vhd");
    make_differencing(p, "0.vhd", "1.vhd");
    let (code, recs) = run(p, &["discover", "."]);
    assert_eq!(code, 0, "{recs:?}");
    let roles: Vec<&str> = recs
        .iter()
        .map(|r| r["vhd"]["role"].as_str().unwrap())
        .collect();
    assert_eq!(roles, ["leaf", "middle", "base"]);
    assert_eq!(recs[0]["path"], "./0.vhd");
    assert_eq!(recs[0]["vhd"]["chain_length"], 3);
    assert_eq!(recs[0]["vhd"]["parent_uuid_matches"], true);
    assert_eq!(recs[1]["vhd"]["parent_uuid_matches"], true);
    assert!(recs[2]["vhd"].get("parent_uuid_matches").is_none());
    assert_eq!(recs[2]["vhd"]["disk_type"], "dynamic");
}

#[test]
fn cinder_discovery_cases() {
    if !have_qemu() {
        return;
    }
    // test_empty_chain: nothing → chain_empty (Cinder returned []).
    let d = tempfile::tempdir().unwrap();
    let (code, recs) = run(d.path(), &["discover", "."]);
    assert_eq!(
        (code, recs[0]["error"]["kind"].as_str()),
        (2, Some("chain_empty"))
    );
    // test_single_vhd_file_chain: 0.vhd alone.
    vhd(d.path(), "0.vhd", "64M", "dynamic");
    let (code, recs) = run(d.path(), &["discover", "."]);
    assert_eq!((code, recs.len()), (0, 1));
    assert_eq!(recs[0]["vhd"]["role"], "single");
    // test_chain_with_two_elements.
    vhd(d.path(), "1.vhd", "64M", "dynamic");
    make_differencing(d.path(), "0.vhd", "1.vhd");
    let (code, recs) = run(d.path(), &["discover", "."]);
    assert_eq!((code, recs.len()), (0, 2));
    // A numbered member past a gap is an error, never dropped.
    vhd(d.path(), "3.vhd", "64M", "dynamic");
    let (code, recs) = run(d.path(), &["discover", "."]);
    assert_eq!(
        (code, recs[0]["error"]["kind"].as_str()),
        (2, Some("chain_gap"))
    );
    std::fs::remove_file(d.path().join("3.vhd")).unwrap();
    // A differencing base: its parent is missing.
    vhd(d.path(), "2.vhd", "64M", "dynamic");
    make_differencing(d.path(), "1.vhd", "2.vhd");
    std::fs::remove_file(d.path().join("2.vhd")).unwrap();
    let (code, recs) = run(d.path(), &["discover", "."]);
    assert_eq!(
        (code, recs[0]["error"]["kind"].as_str()),
        (2, Some("chain_incomplete"))
    );
    // A plain dynamic disk in front of another member.
    let e = tempfile::tempdir().unwrap();
    vhd(e.path(), "0.vhd", "64M", "dynamic");
    vhd(e.path(), "1.vhd", "64M", "dynamic");
    let (code, recs) = run(e.path(), &["discover", "."]);
    assert_eq!(
        (code, recs[0]["error"]["kind"].as_str()),
        (2, Some("not_differencing"))
    );
    assert_eq!(recs[0]["path"], "./0.vhd");
}

#[test]
fn fix_links_the_discovered_chain_and_set_parent_guards_uuids() {
    if !have_qemu() {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    for n in ["0.vhd", "1.vhd", "2.vhd", "other.vhd"] {
        vhd(p, n, "64M", "dynamic");
    }
    make_differencing(p, "1.vhd", "2.vhd");
    make_differencing(p, "0.vhd", "1.vhd");
    // Cinder's fix_vhd_chain: each member linked to the next.
    let (code, recs) = run(p, &["fix", "."]);
    assert_eq!(code, 0, "{recs:?}");
    assert_eq!(recs.len(), 2);
    assert_eq!(recs[0]["vhd"]["step"], "relink");
    assert_eq!(recs[0]["path"], "./0.vhd");
    assert_eq!(recs[0]["vhd"]["parent_name"], "1.vhd");
    let (_, chain) = run(p, &["discover", "."]);
    assert!(
        chain[..2]
            .iter()
            .all(|r| r["vhd"]["parent_uuid_matches"] == true)
    );
    // Linking to a disk that is not the recorded parent is refused...
    let (code, recs) = run(p, &["set-parent", "0.vhd", "other.vhd"]);
    assert_eq!(
        (code, recs[0]["error"]["kind"].as_str()),
        (2, Some("refused"))
    );
    // ...unless forced, and then the old UUID is on record.
    let (code, recs) = run(p, &["set-parent", "--no-uuid-check", "0.vhd", "other.vhd"]);
    assert_eq!(code, 0);
    assert_eq!(recs[0]["vhd"]["forced"], true);
    assert_ne!(
        recs[0]["vhd"]["old_parent_uuid"],
        recs[0]["vhd"]["new_parent_uuid"]
    );
    // A chain of one is left alone.
    let e = tempfile::tempdir().unwrap();
    vhd(e.path(), "0.vhd", "64M", "dynamic");
    let (code, recs) = run(e.path(), &["fix", "."]);
    assert_eq!((code, recs.len()), (0, 0));
}

#[test]
fn check_answers_yes_or_no_like_xenserver_import() {
    if !have_qemu() {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    vhd(p, "ok.vhd", "64M", "dynamic");
    let st = Command::new("qemu-img")
        .args([
            "create",
            "-q",
            "-f",
            "vpc",
            "-o",
            "force_size=on",
            "q2.vhd",
            "64M",
        ])
        .current_dir(p)
        .status()
        .unwrap();
    assert!(st.success());
    let (code, recs) = run(p, &["check", "ok.vhd"]);
    assert_eq!(
        (code, recs[0]["vhd"]["valid"].clone()),
        (0, Value::Bool(true))
    );
    // qemu's force_size images are refused by XenServer's import.
    let (code, recs) = run(p, &["check", "ok.vhd", "q2.vhd"]);
    assert_eq!(code, 1);
    assert_eq!(recs[1]["vhd"]["valid"], false);
    assert_eq!(recs[1]["vhd"]["findings"][0]["rule"], "geometry_too_large");
    // A chain whose link is wrong.
    let c = tempfile::tempdir().unwrap();
    for n in ["0.vhd", "1.vhd", "x.vhd"] {
        vhd(c.path(), n, "64M", "dynamic");
    }
    make_differencing(c.path(), "0.vhd", "x.vhd");
    let (code, recs) = run(c.path(), &["check", "--chain", "."]);
    assert_eq!(code, 1, "{recs:?}");
    let rules: Vec<&str> = recs[0]["vhd"]["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["rule"].as_str().unwrap())
        .collect();
    assert!(rules.contains(&"parent_uuid_mismatch"), "{rules:?}");
}

#[test]
fn cat_streams_what_qemu_reads() {
    if !have_qemu() {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    vhd(p, "d.vhd", "64M", "dynamic");
    let st = Command::new("qemu-io")
        .args([
            "-f",
            "vpc",
            "-c",
            "write -P 0xab 1M 3M",
            "-c",
            "write -P 0x5a 40M 512",
            "d.vhd",
        ])
        .current_dir(p)
        .output()
        .unwrap();
    assert!(st.status.success());
    let ours = Command::new(BIN)
        .args(["cat", "d.vhd"])
        .current_dir(p)
        .output()
        .unwrap();
    assert_eq!(ours.status.code(), Some(0));
    let st = Command::new("qemu-img")
        .args(["convert", "-f", "vpc", "-O", "raw", "d.vhd", "d.raw"])
        .current_dir(p)
        .status()
        .unwrap();
    assert!(st.success());
    let theirs = std::fs::read(p.join("d.raw")).unwrap();
    assert!(ours.stdout == theirs, "cat differs from qemu-img convert");
    // A closed pipe ends quietly.
    let out = Command::new("bash")
        .arg("-c")
        .arg(format!(
            "'{BIN}' cat d.vhd | head -c 10 > /dev/null; echo ${{PIPESTATUS[0]}}"
        ))
        .current_dir(p)
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "0");
    assert!(out.stderr.is_empty());
}

#[test]
fn flatten_a_tarball_into_one_verified_vhd() {
    if !have_qemu() {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    std::fs::create_dir(p.join("src")).unwrap();
    vhd(&p.join("src"), "1.vhd", "64M", "dynamic");
    vhd(&p.join("src"), "0.vhd", "64M", "dynamic");
    for (file, cmd) in [
        ("1.vhd", "write -P 0x11 0 4M"),
        ("0.vhd", "write -P 0x22 2M 1M"),
    ] {
        let st = Command::new("qemu-io")
            .args(["-f", "vpc", "-c", cmd, file])
            .current_dir(p.join("src"))
            .output()
            .unwrap();
        assert!(st.status.success());
    }
    make_differencing(&p.join("src"), "0.vhd", "1.vhd");
    let st = Command::new("tar")
        .args(["-czf", "image.tgz", "-C", "src", "."])
        .current_dir(p)
        .status()
        .unwrap();
    assert!(st.success());
    let (code, recs) = run(p, &["flatten", "image.tgz", "-o", "disk.vhd"]);
    assert_eq!(code, 0, "{recs:?}");
    assert_eq!(recs[0]["path"], "disk.vhd");
    assert_eq!(recs[0]["vhd"]["chain_length"], 2);
    // The chain's content, as our reader and an overlay model see it.
    let flat = Command::new(BIN)
        .args(["cat", "disk.vhd"])
        .current_dir(p)
        .output()
        .unwrap();
    let chain = Command::new(BIN)
        .args(["cat", "src"])
        .current_dir(p)
        .output()
        .unwrap();
    assert!(flat.stdout == chain.stdout);
    let mut model = vec![0u8; flat.stdout.len()];
    model[..2 << 20].fill(0x11);
    // qemu-io allocates whole 2 MiB blocks with full bitmaps: the child's
    // block 1 (2-4 MiB) hides the base there, its unwritten half as zeros.
    model[2 << 20..3 << 20].fill(0x22);
    assert!(
        flat.stdout == model,
        "flattened content differs from the model"
    );
    // qemu reads the result as one plain dynamic VHD of the same size.
    let info = Command::new("qemu-img")
        .args(["info", "-f", "vpc", "--output=json", "disk.vhd"])
        .current_dir(p)
        .output()
        .unwrap();
    let info: Value = serde_json::from_slice(&info.stdout).unwrap();
    assert_eq!(info["virtual-size"], recs[0]["vhd"]["virtual_size"]);
    assert!(info.get("backing-filename").is_none());
    // Never replaced; nothing left behind when refused.
    let (code, recs) = run(p, &["flatten", "image.tgz", "-o", "disk.vhd"]);
    assert_eq!(
        (code, recs[0]["error"]["kind"].as_str()),
        (2, Some("already_exists"))
    );
    let names: Vec<String> = std::fs::read_dir(p)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.'))
        .collect();
    assert!(names.is_empty(), "{names:?}");
}

/// os-xenapi's old-style tarballs: snap.vhd (leaf), image.vhd, base.vhd,
/// and a legacy swap.vhd that is never part of the chain.
#[test]
fn old_style_names_make_a_chain_and_swap_is_left_out() {
    if !have_qemu() {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("src");
    std::fs::create_dir(&src).unwrap();
    for n in ["snap.vhd", "image.vhd", "base.vhd", "swap.vhd"] {
        vhd(&src, n, "8M", "dynamic");
    }
    make_differencing(&src, "image.vhd", "base.vhd");
    make_differencing(&src, "snap.vhd", "image.vhd");
    let tgz = t.path().join("image.tgz");
    let st = Command::new("tar")
        .arg("-czf")
        .arg(&tgz)
        .arg("-C")
        .arg(&src)
        .arg(".")
        .status()
        .unwrap();
    assert!(st.success());
    let scratch = t.path().join("scratch");
    std::fs::create_dir(&scratch).unwrap();
    let (code, recs) = run(t.path(), &["extract", "image.tgz", "scratch"]);
    assert_eq!(code, 0, "{recs:?}");
    assert_eq!(recs.len(), 4);
    let out = Command::new(BIN)
        .args(["discover", "scratch"])
        .current_dir(t.path())
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("swap.vhd"));
    let recs: Vec<Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let names: Vec<&str> = recs.iter().map(|r| r["path"].as_str().unwrap()).collect();
    assert_eq!(
        names,
        ["scratch/snap.vhd", "scratch/image.vhd", "scratch/base.vhd"]
    );
    assert_eq!(recs[0]["vhd"]["role"], "leaf");
    assert_eq!(recs[2]["vhd"]["role"], "base");
    let (code, recs) = run(t.path(), &["flatten", "image.tgz", "-o", "flat.vhd"]);
    assert_eq!(code, 0, "{recs:?}");
    assert_eq!(recs[0]["vhd"]["chain_length"], 3);

    // Both kinds of names together: which is the chain? Refused.
    std::fs::copy(scratch.join("base.vhd"), scratch.join("0.vhd")).unwrap();
    let (code, recs) = run(t.path(), &["discover", "scratch"]);
    assert_eq!(code, 2);
    assert_eq!(recs[0]["error"]["kind"], "unexpected_member");
}
