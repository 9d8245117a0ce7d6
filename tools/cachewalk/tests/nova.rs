//! `cachewalk nova` on real instance directories: qcow2 disks made by
//! `qemu-img create -b ../_base/<fp> -F raw`, base files with set mtimes,
//! a process holding a base file open, hostile names. Ports the scenarios
//! of Nova's image cache tests (`nova/tests/unit/virt/libvirt/
//! test_imagecache.py`: list_base_images, list_backing_images_*,
//! handle_base_image_* / verify_base_images, age_and_verify_swap_images)
//! as records.
#![cfg(test)]

mod support;
use support::set_age;
use support::{DAY, NOW, fp, have_qemu};

use serde_json::Value;
use std::collections::BTreeMap;
use std::fs;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use test_support::run_ok;

/// A file of `len` bytes with mtime `NOW - age`.
fn file(p: &Path, len: usize, age: i64) {
    support::file_of(p, len, 0, age);
}

/// A qcow2 instance disk backed by `backing` (as Nova names it).
fn disk(p: &Path, backing: &str) {
    run_ok(
        Command::new("qemu-img")
            .args([
                "create", "-q", "-f", "qcow2", "-u", "-b", backing, "-F", "raw",
            ])
            .arg(p)
            .arg("1G"),
    );
}

fn walk(root: &Path, args: &[&str], inventory: Option<&str>) -> (Output, Vec<Value>) {
    let mut c = Command::new(env!("CARGO_BIN_EXE_cachewalk"));
    c.arg("nova")
        .arg(root)
        .args(["--now", &NOW.to_string(), "--host", "compute-1"]);
    c.args(args);
    if inventory.is_some() {
        c.args(["--instances", "-"]);
    }
    c.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = c.spawn().unwrap();
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(inventory.unwrap_or("").as_bytes()).unwrap();
    }
    let out = child.wait_with_output().unwrap();
    let recs = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    (out, recs)
}

/// rel_path → cache facet.
fn by_rel(recs: &[Value]) -> BTreeMap<String, Value> {
    recs.iter()
        .filter(|r| r["cache"]["record"] == "entry")
        .map(|r| {
            (
                r["cache"]["rel_path"].as_str().unwrap().to_owned(),
                r["cache"].clone(),
            )
        })
        .collect()
}

/// test_list_base_images: every name's class, and Nova's bucket as today's
/// code has it (Train dropped the `.info` exclusion that the Mitaka-era
/// test relied on, so a resized file's `.info` is in the resized bucket).
#[test]
fn base_names_are_classified_as_nova_does_and_better() {
    let t = tempfile::tempdir().unwrap();
    let base = t.path().join("_base");
    fs::create_dir(&base).unwrap();
    let names = [
        ("00000001", "kernel_raw_id", "ignored"),
        ("ephemeral_0_20_None", "ephemeral_legacy", "ignored"),
        (
            "17d1b00b81642842e514494a78e804e9a511637c_5368709120.info",
            "info_sidecar",
            "resized",
        ),
        ("00000004", "kernel_raw_id", "ignored"),
        ("swap_1000", "swap", "swap"),
        (
            "e97222e91fc4241f49a7f520d1dcf446751129b3_sm",
            "small_legacy",
            "resized",
        ),
        (
            "e09c675c2d1cfac32dae3c2d83689c8c94bc693b_sm",
            "small_legacy",
            "resized",
        ),
        (
            "e97222e91fc4241f49a7f520d1dcf446751129b3",
            "original",
            "original",
        ),
        (
            "17d1b00b81642842e514494a78e804e9a511637c",
            "original",
            "original",
        ),
        (
            "17d1b00b81642842e514494a78e804e9a511637c_5368709120",
            "resized_legacy",
            "resized",
        ),
        (
            "17d1b00b81642842e514494a78e804e9a511637c_10737418240",
            "resized_legacy",
            "resized",
        ),
        (
            "17d1b00b81642842e514494a78e804e9a511637c.part",
            "partial_download",
            "ignored",
        ),
        ("ephemeral_20_0706d66", "ephemeral", "ephemeral"),
    ];
    for (n, _, _) in names {
        file(&base.join(n), 16, 10 * DAY);
    }
    fs::write(
        base.join("17d1b00b81642842e514494a78e804e9a511637c_5368709120.info"),
        r#"{"sha1": "ab", "sha1-timestamp": 1.5}"#,
    )
    .unwrap();
    let (out, recs) = walk(t.path(), &[], Some(""));
    assert!(out.status.success());
    let m = by_rel(&recs);
    assert_eq!(m.len(), names.len());
    for (n, class, nova) in names {
        let e = &m[&format!("_base/{n}")];
        assert_eq!(e["class"], class, "{n}");
        assert_eq!(e["nova_class"], nova, "{n}");
    }
    let e = &m["_base/17d1b00b81642842e514494a78e804e9a511637c_10737418240"];
    assert_eq!(e["resize_suffix"], "10737418240");
    assert_eq!(e["fingerprint"], "17d1b00b81642842e514494a78e804e9a511637c");
    let info = &m["_base/17d1b00b81642842e514494a78e804e9a511637c_5368709120.info"];
    assert_eq!(info["contents"]["generation"], "grizzly");
    // Nova deletes the resized file's sidecar after an hour; we keep it
    // with its base file.
    assert_eq!(info["nova_threshold_s"], 3600);
    assert_eq!(info["verdict"], "keep_in_use");
    // Raw-id kernels: Nova never looks at them, and neither do we.
    assert_eq!(m["_base/00000001"]["verdict"], "keep_unknown");
}

/// test_list_backing_images_small / _resized / _instancename, and
/// handle_base_image_used: the backing file of an instance disk is in use,
/// whatever the directory is called; Nova only sees it for directories
/// named after current instances.
#[test]
fn backing_chains_of_every_disk_protect_their_base_files() {
    if !have_qemu() {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let root = t.path();
    let base = root.join("_base");
    fs::create_dir(&base).unwrap();
    let small = "e97222e91fc4241f49a7f520d1dcf446751129b3_sm";
    let resized = "e97222e91fc4241f49a7f520d1dcf446751129b3_10737418240";
    let eph = "ephemeral_20_0706d66";
    for n in [small, resized, eph] {
        file(&base.join(n), 4096, 10 * DAY);
    }
    for d in ["instance-00000001", "banana-42-hamster"] {
        fs::create_dir(root.join(d)).unwrap();
    }
    disk(
        &root.join("instance-00000001/disk"),
        &format!("../_base/{small}"),
    );
    disk(
        &root.join("banana-42-hamster/disk"),
        &format!("../_base/{resized}"),
    );
    // Nova reads only `disk`; the ephemeral disk is protected only by its
    // predicted name, which this inventory does not give.
    disk(
        &root.join("instance-00000001/disk.local"),
        &format!("../_base/{eph}"),
    );
    let inventory = r#"{"uuid":"u-1","name":"instance-00000001","host":"compute-1"}"#;
    let (_, recs) = walk(root, &[], Some(inventory));
    let m = by_rel(&recs);
    let s = &m[&format!("_base/{small}")];
    assert_eq!(s["in_use"], "yes");
    assert_eq!(
        s["used_by"],
        serde_json::json!(["instance-00000001:backing:disk"])
    );
    assert_eq!(s["nova_in_use"], true);
    assert_eq!(s["verdict"], "keep_in_use");
    let r = &m[&format!("_base/{resized}")];
    assert_eq!(r["verdict"], "keep_in_use");
    assert_eq!(r["nova_in_use"], false, "Nova does not know this directory");
    assert!(r["nova_eligible_at"].is_string());
    let e = &m[&format!("_base/{eph}")];
    assert_eq!(
        e["used_by"],
        serde_json::json!(["instance-00000001:backing:disk.local"])
    );
    assert_eq!(e["verdict"], "keep_in_use");
    assert_eq!(
        e["nova_in_use"], false,
        "Nova would delete a used ephemeral base"
    );
}

/// test_list_backing_images_disk_notexist: a disk that cannot be read stops
/// Nova's pass; here it makes every verdict keep_unknown.
#[test]
fn an_unreadable_instance_disk_keeps_everything() {
    let t = tempfile::tempdir().unwrap();
    let root = t.path();
    fs::create_dir_all(root.join("_base")).unwrap();
    file(&root.join("_base").join(fp("img-1")), 16, 10 * DAY);
    fs::create_dir(root.join("inst")).unwrap();
    // A qcow2 magic and a header that does not hold together.
    let mut bad = b"QFI\xfb\0\0\0\x03".to_vec();
    bad.extend_from_slice(&[0xff; 200]);
    fs::write(root.join("inst/disk"), &bad).unwrap();
    let (_, recs) = walk(root, &[], Some(""));
    let m = by_rel(&recs);
    let e = &m[&format!("_base/{}", fp("img-1"))];
    assert_eq!(e["verdict"], "keep_unknown");
    assert_eq!(e["in_use"], "unknown");
    assert!(
        e["reasons"][0]
            .as_str()
            .unwrap()
            .starts_with("instance_disk_unreadable:")
    );
}

/// handle_base_image_unused / verify_base_images / age_and_verify_swap:
/// unused originals go after 86400 s, resized after 3600 s, swap after
/// 86400 s; in use by the inventory (here or on another host) is kept;
/// Nova's eligibility time is mtime + threshold.
#[test]
fn ages_thresholds_and_the_inventory() {
    let t = tempfile::tempdir().unwrap();
    let root = t.path();
    let base = root.join("_base");
    fs::create_dir(&base).unwrap();
    let cases: Vec<(String, i64, &str)> = vec![
        (fp("old-unused"), DAY + 1, "candidate"),
        (fp("young-unused"), DAY - 60, "keep_young"),
        (format!("{}_10", fp("old-unused")), 3601, "candidate"),
        (format!("{}_10", fp("young-unused")), 3599, "keep_young"),
        (fp("used-here"), 10 * DAY, "keep_in_use"),
        (fp("used-remote"), 10 * DAY, "keep_in_use"),
        ("swap_512".into(), 10 * DAY, "keep_in_use"),
        ("swap_1024".into(), DAY + 1, "candidate"),
        ("swap_2048".into(), 60, "keep_young"),
        (format!("{}.part", fp("crashed")), 2 * DAY, "orphan_temp"),
        // Nova never looks at a Grizzly-era `linux` ephemeral: not ours
        // to remove either.
        ("ephemeral_20_linux".into(), 10 * DAY, "keep_unknown"),
    ];
    for (n, age, _) in &cases {
        file(&base.join(n), 16, *age);
    }
    let inventory = concat!(
        "{\"uuid\":\"a\",\"host\":\"compute-1\",\"image_ref\":\"used-here\",\"swap_mb\":512}\n",
        "{\"uuid\":\"b\",\"host\":\"compute-2\",\"image_ref\":\"used-remote\"}\n",
    );
    let (_, recs) = walk(root, &[], Some(inventory));
    let m = by_rel(&recs);
    for (n, _, verdict) in &cases {
        assert_eq!(m[&format!("_base/{n}")]["verdict"], *verdict, "{n}");
    }
    // Done when: every candidate is a file Nova itself would delete now.
    let now_text = system::text::rfc3339_utc(NOW, 0).unwrap();
    for (rel, e) in &m {
        if e["verdict"] == "candidate" {
            assert_eq!(e["nova_in_use"], false, "{rel}");
            assert!(
                e["nova_eligible_at"].as_str().unwrap() <= now_text.as_str(),
                "{rel}"
            );
        }
    }
    let u = &m[&format!("_base/{}", fp("used-remote"))];
    assert_eq!(u["used_by"], serde_json::json!(["b@compute-2:image_ref"]));
    assert_eq!(u["image_id"], "used-remote");
    assert_eq!(u["image_id_source"], "inventory");
    let o = &m[&format!("_base/{}", fp("old-unused"))];
    assert_eq!(o["nova_in_use"], false);
    assert_eq!(o["nova_threshold_s"], 86400);
    assert_eq!(
        o["nova_eligible_at"],
        system::text::rfc3339_utc(NOW - DAY - 1 + DAY, 0).unwrap()
    );
    assert_eq!(o["lock"], format!("nova-{}", fp("old-unused")));

    // Without an inventory nothing is a candidate.
    let (_, recs) = walk(root, &[], None);
    let m = by_rel(&recs);
    let o = &m[&format!("_base/{}", fp("old-unused"))];
    assert_eq!(o["verdict"], "keep_inventory_incomplete");
    assert_eq!(o["reasons"], serde_json::json!(["no_inventory"]));
    assert!(o["nova_in_use"].is_null());
    // Other thresholds.
    let (_, recs) = walk(root, &["--original-age", "172800"], Some(inventory));
    assert_eq!(
        by_rel(&recs)[&format!("_base/{}", fp("old-unused"))]["verdict"],
        "keep_young"
    );
}

/// Shared storage: a host seen in compute_nodes within 24 h that the
/// inventory does not cover blocks every candidate (Nova's "disappearing
/// images"), unless the operator vouches for it; hosts unseen for a day
/// drop out as in Nova.
#[test]
fn shared_storage_needs_every_hosts_inventory() {
    let t = tempfile::tempdir().unwrap();
    let root = t.path();
    fs::create_dir(root.join("_base")).unwrap();
    let name = fp("unused");
    file(&root.join("_base").join(&name), 16, 10 * DAY);
    let nodes = format!(
        "{{\"compute-1\": {}, \"compute-7\": {}.25, \"compute-9\": {}}}",
        NOW - 100,
        NOW - 3600,
        NOW - 2 * DAY
    );
    fs::write(root.join("compute_nodes"), nodes).unwrap();
    let inv = "{\"uuid\":\"a\",\"host\":\"compute-1\"}";
    let (_, recs) = walk(root, &[], Some(inv));
    let m = by_rel(&recs);
    let e = &m[&format!("_base/{name}")];
    assert_eq!(e["verdict"], "keep_inventory_incomplete");
    assert_eq!(
        e["reasons"],
        serde_json::json!(["inventory_missing_host_compute-7"])
    );
    assert_eq!(m["compute_nodes"]["class"], "registry");
    assert!(m["compute_nodes"]["contents"]["compute-7"].is_number());
    let (_, recs) = walk(root, &["--assume-no-instances-on", "compute-7"], Some(inv));
    assert_eq!(
        by_rel(&recs)[&format!("_base/{name}")]["verdict"],
        "candidate"
    );
    // Shared, but no compute_nodes to say who shares it: keep.
    fs::remove_file(root.join("compute_nodes")).unwrap();
    let (_, recs) = walk(root, &["--shared"], Some(inv));
    assert_eq!(
        by_rel(&recs)[&format!("_base/{name}")]["reasons"],
        serde_json::json!(["shared_storage_hosts_unknown"])
    );
}

/// handle_base_image_used_missing and the backing file nobody has: both
/// are dangling_reference records; --check makes them exit 1.
#[test]
fn dangling_references_and_check() {
    if !have_qemu() {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let root = t.path();
    fs::create_dir(root.join("_base")).unwrap();
    fs::create_dir(root.join("inst-1")).unwrap();
    disk(
        &root.join("inst-1/disk"),
        &format!("../_base/{}", fp("gone")),
    );
    let inv = "{\"uuid\":\"inst-1\",\"host\":\"compute-1\",\"image_ref\":\"never-cached\"}";
    let (out, recs) = walk(root, &[], Some(inv));
    assert!(out.status.success());
    let d: Vec<&Value> = recs
        .iter()
        .filter(|r| r["cache"]["record"] == "dangling_reference")
        .collect();
    assert_eq!(d.len(), 2, "{recs:?}");
    assert_eq!(d[0]["path"], root.join("inst-1/disk").to_str().unwrap());
    assert_eq!(
        d[0]["cache"]["reasons"][0],
        format!("backing_file_missing:{}", fp("gone"))
    );
    assert_eq!(d[1]["cache"]["image_id"], "never-cached");
    assert_eq!(
        d[1]["cache"]["reasons"][0],
        "image_in_use_without_base_file"
    );
    let (out, _) = walk(root, &["--check"], Some(inv));
    assert_eq!(out.status.code(), Some(1));
}

/// A process holding a base file open (qemu keeps its backing files open)
/// keeps it, with the pid.
#[test]
fn an_open_file_is_in_use() {
    let t = tempfile::tempdir().unwrap();
    let root = t.path();
    fs::create_dir(root.join("_base")).unwrap();
    let p = root.join("_base").join(fp("open"));
    file(&p, 16, 10 * DAY);
    let mut holder = Command::new("sleep")
        .arg("30")
        .stdin(fs::File::open(&p).unwrap())
        .spawn()
        .unwrap();
    let (_, recs) = walk(root, &[], Some(""));
    let _ = holder.kill();
    let _ = holder.wait();
    let e = &by_rel(&recs)[&format!("_base/{}", fp("open"))];
    assert_eq!(e["verdict"], "keep_in_use", "{e}");
    assert_eq!(
        e["used_by"],
        serde_json::json!([format!("pid:{}", holder.id())])
    );
}

/// Hostile names and symlinks: reported, never followed, never
/// candidates; locks of vanished base files are orphans; a missing _base is
/// an empty cache; a missing root is an error.
#[test]
fn hostile_names_symlinks_locks_and_missing_dirs() {
    use std::os::unix::ffi::OsStrExt;
    let t = tempfile::tempdir().unwrap();
    let root = t.path();
    let (_, recs) = walk(root, &[], Some(""));
    assert!(recs.is_empty(), "no _base: an empty cache");
    let base = root.join("_base");
    fs::create_dir(&base).unwrap();
    fs::create_dir(root.join("locks")).unwrap();
    let outside = root.join("precious");
    file(&outside, 16, 10 * DAY);
    std::os::unix::fs::symlink(&outside, base.join(fp("link"))).unwrap();
    set_age(&base.join(fp("link")), 10 * DAY);
    file(&base.join("a name\nwith newline"), 1, 10 * DAY);
    file(
        &base.join(std::ffi::OsStr::from_bytes(b"bad\xffname")),
        1,
        10 * DAY,
    );
    file(
        &root.join("locks").join(format!("nova-{}", fp("gone"))),
        0,
        DAY,
    );
    let (out, recs) = walk(root, &[], Some(""));
    assert!(out.status.success());
    let m = by_rel(&recs);
    let l = &m[&format!("_base/{}", fp("link"))];
    assert_eq!(l["file_type"], "symlink");
    assert_eq!(l["verdict"], "keep_unknown");
    assert_eq!(
        l["reasons"],
        serde_json::json!(["not_a_regular_file:symlink"])
    );
    assert_eq!(m["_base/a name\nwith newline"]["verdict"], "keep_unknown");
    let bad = recs
        .iter()
        .find(|r| r["cache"]["rel_path_bytes"].is_string())
        .unwrap();
    assert_eq!(
        bad["cache"]["rel_path_bytes"],
        system::text::base64(b"_base/bad\xffname")
    );
    assert_eq!(
        m[&format!("locks/nova-{}", fp("gone"))]["verdict"],
        "orphan_file"
    );
    assert!(outside.exists());
    let (out, recs) = walk(&root.join("nope"), &[], None);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(recs[0]["error"]["kind"], "not_found");
}

#[test]
fn fname_is_the_sha1_of_the_id() {
    let out = Command::new(env!("CARGO_BIN_EXE_cachewalk"))
        .args(["fname", "fd0cb2f1-8375-44c9-b1f4-3e1f4c4a8ef0"])
        .output()
        .unwrap();
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        v["cache"]["fingerprint"],
        "0d5e6b61602d758984b3bf038267614d6016eb2a"
    );
    assert_eq!(
        v["cache"]["rel_path"],
        "_base/0d5e6b61602d758984b3bf038267614d6016eb2a"
    );
    let mut c = Command::new(env!("CARGO_BIN_EXE_cachewalk"))
        .arg("fname")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        c.stdin
            .take()
            .unwrap()
            .write_all(b"{\"image_id\":\"img-1\",\"name\":\"cirros\"}\n")
            .unwrap();
    }
    let out = c.wait_with_output().unwrap();
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["name"], "cirros");
    assert_eq!(v["cache"]["fingerprint"], fp("img-1"));
}

/// --verify: the SHA-1 of a sidecar (Essex .sha1, Folsom .info) and, where
/// the bytes can be Glance's (raw images), Glance's MD5 and multihash from
/// --images; a converted image is not comparable; a mismatch is corrupt
/// (and --check exits 1); nothing is deleted for it.
#[test]
fn verify_against_sidecars_and_glance() {
    let t = tempfile::tempdir().unwrap();
    let root = t.path();
    let base = root.join("_base");
    fs::create_dir(&base).unwrap();
    let data = b"base image bytes";
    let sha1 = system::hash::sha1_hex(std::str::from_utf8(data).unwrap());
    let md5 = {
        use md5::Digest;
        system::hash::hex(&md5::Md5::digest(data))
    };
    for id in ["good", "bad-sidecar", "raw-img", "raw-bad", "qcow-img"] {
        fs::write(base.join(fp(id)), data).unwrap();
    }
    fs::write(
        base.join(format!("{}.sha1", fp("good"))),
        format!("{sha1}\n"),
    )
    .unwrap();
    fs::write(
        base.join(format!("{}.info", fp("bad-sidecar"))),
        format!("{{\"sha1\": \"{}\"}}", "0".repeat(40)),
    )
    .unwrap();
    let images = t.path().join("images.jsonl");
    fs::write(
        &images,
        format!(
            "{{\"image\":{{\"id\":\"raw-img\",\"disk_format\":\"raw\",\"checksum\":\"{md5}\",\"status\":\"active\"}}}}\n\
             {{\"image\":{{\"id\":\"raw-bad\",\"disk_format\":\"raw\",\"checksum\":\"{}\",\"status\":\"deleted\"}}}}\n\
             {{\"image\":{{\"id\":\"qcow-img\",\"disk_format\":\"qcow2\",\"checksum\":\"{md5}\"}}}}\n",
            "1".repeat(32)
        ),
    )
    .unwrap();
    let img = images.to_str().unwrap();
    let (out, recs) = walk(root, &["--verify", "--images", img], Some(""));
    assert!(out.status.success());
    let m = by_rel(&recs);
    let g = |id: &str| m[&format!("_base/{}", fp(id))].clone();
    assert_eq!(g("good")["verified"], true);
    assert_eq!(g("good")["sha1"], sha1.as_str());
    assert_eq!(g("good")["checksum_stored"], sha1.as_str());
    assert_eq!(g("bad-sidecar")["verified"], false);
    assert_eq!(g("bad-sidecar")["verdict"], "corrupt");
    assert_eq!(g("raw-img")["verified"], true);
    assert_eq!(g("raw-img")["md5"], md5.as_str());
    assert_eq!(g("raw-img")["image_id_source"], "glance");
    assert_eq!(g("raw-bad")["verdict"], "corrupt");
    assert_eq!(g("raw-bad")["image_status"], "deleted");
    assert_eq!(g("qcow-img")["verified"], "not_comparable");
    let (out, _) = walk(root, &["--verify", "--images", img, "--check"], Some(""));
    assert_eq!(out.status.code(), Some(1));
    assert!(base.join(fp("bad-sidecar")).exists());
}

/// A sidecar that holds no SHA-1 (`banana`, a truncated digest, broken
/// JSON) is a finding, not an absence: Nova compares it and logs a
/// verification failure, so --verify says verified false (mismatch
/// sidecar_malformed, sidecar_error why) and corrupt, the sidecar's own
/// record says contents.malformed and reason sidecar_malformed, and
/// --check exits 1 with or without --verify. An empty .sha1 (Nova creates
/// it empty first) stays "nothing stored".
#[test]
fn a_malformed_sidecar_is_a_finding() {
    let t = tempfile::tempdir().unwrap();
    let root = t.path();
    let base = root.join("_base");
    fs::create_dir(&base).unwrap();
    for id in ["banana", "short", "broken-info", "empty"] {
        fs::write(base.join(fp(id)), b"bytes").unwrap();
    }
    fs::write(base.join(format!("{}.sha1", fp("banana"))), "banana\n").unwrap();
    fs::write(base.join(format!("{}.sha1", fp("short"))), "a".repeat(39)).unwrap();
    fs::write(
        base.join(format!("{}.info", fp("broken-info"))),
        "{\"sha1\": ",
    )
    .unwrap();
    fs::write(base.join(format!("{}.sha1", fp("empty"))), "").unwrap();
    let (out, recs) = walk(root, &["--verify"], Some(""));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let m = by_rel(&recs);
    let g = |name: String| m[&format!("_base/{name}")].clone();
    for (id, why) in [
        ("banana", ".sha1: not a SHA-1"),
        ("short", ".sha1: not a SHA-1"),
        ("broken-info", ".info: not JSON"),
    ] {
        let e = g(fp(id));
        assert_eq!(e["verified"], false, "{id}");
        assert_eq!(
            e["mismatch"],
            serde_json::json!(["sidecar_malformed"]),
            "{id}"
        );
        assert!(
            e["sidecar_error"].as_str().unwrap().starts_with(why),
            "{id}: {e}"
        );
        assert_eq!(e["verdict"], "corrupt", "{id}");
    }
    assert!(g(fp("empty"))["verified"].is_null());
    assert_eq!(g(fp("empty"))["verdict"], "keep_young");
    let side = g(format!("{}.sha1", fp("banana")));
    assert_eq!(side["contents"]["sha1"], Value::Null);
    assert!(side["contents"]["malformed"].is_string());
    assert!(
        side["reasons"]
            .as_array()
            .unwrap()
            .contains(&"sidecar_malformed".into())
    );
    let side = g(format!("{}.info", fp("broken-info")));
    assert!(
        side["contents"]["malformed"]
            .as_str()
            .unwrap()
            .starts_with("not JSON")
    );
    let empty = g(format!("{}.sha1", fp("empty")));
    assert_eq!(empty["contents"]["empty"], true);
    assert!(empty["contents"].get("malformed").is_none());
    for args in [&["--check"][..], &["--check", "--verify"]] {
        let (out, _) = walk(root, args, Some(""));
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        assert!(String::from_utf8_lossy(&out.stderr).contains("malformed"));
    }
    // Fixed, the findings go.
    fs::remove_file(base.join(format!("{}.sha1", fp("banana")))).unwrap();
    fs::remove_file(base.join(format!("{}.sha1", fp("short")))).unwrap();
    fs::remove_file(base.join(format!("{}.info", fp("broken-info")))).unwrap();
    let (out, _) = walk(root, &["--check", "--verify"], Some(""));
    assert_eq!(out.status.code(), Some(0));
}

/// Nova's pass, transcribed from nova/virt/libvirt/imagecache.py
/// (_scan_base_images, _find_base_file, _mark_in_use, then the backing
/// files of `disk`), run by Python on the real directory in os.listdir's
/// order: the base names Nova leaves unexplained, i.e. removes.
const NOVA_PASS: &str = r#"
import os, sys, re, json, hashlib
base, used, backing = sys.argv[1], json.loads(sys.argv[2]), json.loads(sys.argv[3])
unexplained = []
for ent in os.listdir(base):
    path = os.path.join(base, ent)
    if len(ent) == 40 or (len(ent) > 42 and ent[40] == '_'):
        if os.path.isfile(path):
            unexplained.append(path)
def find_base_file(fp):
    f = os.path.join(base, fp)
    if os.path.exists(f):
        yield f
    f = os.path.join(base, fp + '_sm')
    if os.path.exists(f):
        yield f
    resize_re = re.compile('.*/%s_[0-9]+$' % fp)
    for img in unexplained:
        if resize_re.match(img):
            yield img
for img in used:
    fp = hashlib.sha1(img.encode()).hexdigest()
    for f in find_base_file(fp):
        if f in unexplained:
            unexplained.remove(f)
for b in backing:
    f = os.path.join(base, b)
    if f in unexplained:
        unexplained.remove(f)
print(json.dumps(sorted(os.path.basename(f) for f in unexplained)))
"#;

/// test_verify_base_images on a real directory: image 1 is used by two
/// instances whose `disk` is backed by `<h1>_5368709120`, 21 and 22 are a
/// kernel and ramdisk. nova_in_use is exactly what Nova's own pass (above)
/// decides on this directory's listing order, including the resized
/// variant its list iteration skips (`<h1>_10737418240` when it follows
/// `<h1>_5368709120`: upstream removes it); cachewalk keeps every variant
/// of a used image and a base file that instance-3 (not an instance Nova
/// knows) is backed by, and says where Nova would remove it.
#[test]
fn nova_in_use_matches_nova_verify_base_images() {
    if !have_qemu() {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let root = t.path();
    let base = root.join("_base");
    fs::create_dir(&base).unwrap();
    let h = |id: &str| fp(id);
    let (h1, h21, h22, h42) = (h("1"), h("21"), h("22"), h("42"));
    let names = [
        "00000001".to_owned(),
        "ephemeral_0_20_None".to_owned(),
        "e97222e91fc4241f49a7f520d1dcf446751129b3_sm".to_owned(),
        "e09c675c2d1cfac32dae3c2d83689c8c94bc693b_sm".to_owned(),
        h42.clone(),
        h1.clone(),
        h21.clone(),
        h22.clone(),
        format!("{h1}_5368709120"),
        format!("{h1}_10737418240"),
        "00000004".to_owned(),
    ];
    for n in &names {
        file(&base.join(n), 512, 30 * DAY);
    }
    for (dir, backing) in [
        ("instance-1", format!("{h1}_5368709120")),
        ("instance-2", format!("{h1}_5368709120")),
        ("instance-3", h42.clone()),
    ] {
        fs::create_dir(root.join(dir)).unwrap();
        disk(&root.join(dir).join("disk"), &format!("../_base/{backing}"));
    }
    let inventory = "{\"uuid\":\"u1\",\"name\":\"instance-1\",\"host\":\"compute-1\",\"image_ref\":\"1\"}\n\
                     {\"uuid\":\"u2\",\"name\":\"instance-2\",\"host\":\"compute-1\",\"image_ref\":\"1\",\"kernel_id\":\"21\",\"ramdisk_id\":\"22\"}\n";
    let (out, recs) = walk(root, &[], Some(inventory));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let m = by_rel(&recs);
    let oracle = Command::new("python3")
        .args(["-c", NOVA_PASS])
        .arg(&base)
        .arg(r#"["1", "21", "22"]"#)
        .arg(format!(r#"["{h1}_5368709120"]"#))
        .output()
        .unwrap();
    assert!(
        oracle.status.success(),
        "{}",
        String::from_utf8_lossy(&oracle.stderr)
    );
    let removed: Vec<String> = serde_json::from_slice(&oracle.stdout).unwrap();
    for n in &names {
        let e = &m[&format!("_base/{n}")];
        if !matches!(e["nova_class"].as_str(), Some("original" | "resized")) {
            continue;
        }
        assert_eq!(e["nova_in_use"], !removed.contains(n), "{n}: {e}");
    }
    // Upstream's fixed part: these are active, these are removed.
    for n in [h1.clone(), h21, h22, format!("{h1}_5368709120")] {
        assert_eq!(m[&format!("_base/{n}")]["nova_in_use"], true, "{n}");
    }
    for n in [
        "e97222e91fc4241f49a7f520d1dcf446751129b3_sm".to_owned(),
        h42.clone(),
    ] {
        assert_eq!(m[&format!("_base/{n}")]["nova_in_use"], false, "{n}");
    }
    // The variant: Nova's answer follows the listing order; cachewalk
    // keeps it (image 1 is in use) and says where Nova differs.
    let v = &m[&format!("_base/{h1}_10737418240")];
    assert_eq!(v["in_use"], "yes");
    assert_eq!(v["verdict"], "keep_in_use");
    if removed.contains(&format!("{h1}_10737418240")) {
        assert_eq!(v["nova_in_use"], false);
        assert_eq!(
            v["nova_reason"],
            format!("skipped_after:{h1}_5368709120").as_str()
        );
        assert!(
            v["reasons"]
                .as_array()
                .unwrap()
                .contains(&format!("nova_would_remove:skipped_after:{h1}_5368709120").into())
        );
    }
    // 42 backs instance-3's disk, a directory Nova never reads.
    let e = &m[&format!("_base/{h42}")];
    assert_eq!(e["in_use"], "yes");
    assert_eq!(e["nova_reason"], "unexplained");
    assert!(
        e["reasons"]
            .as_array()
            .unwrap()
            .contains(&"nova_would_remove:unexplained".into())
    );
}

/// Files appearing and vanishing during the walk are no error: a walk
/// racing a writer always succeeds with well-formed records.
#[test]
fn files_vanishing_mid_walk_are_not_errors() {
    let t = tempfile::tempdir().unwrap();
    let root = t.path().to_path_buf();
    let base = root.join("_base");
    fs::create_dir(&base).unwrap();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let churn = {
        let (base, stop) = (base.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut i = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let p = base.join(fp(&format!("img-{}", i % 300)));
                if p.exists() {
                    let _ = fs::remove_file(&p);
                } else {
                    let _ = fs::write(&p, b"x");
                }
                i += 1;
            }
        })
    };
    for _ in 0..15 {
        let (out, _) = walk(&root, &[], Some(""));
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    churn.join().unwrap();
}

/// Not root: other users' open files cannot be listed, so that evidence
/// is unknown and nothing is a candidate (run as nobody with setpriv;
/// skipped where the test does not run as root).
#[test]
fn without_root_open_files_are_unknown_and_keep_everything() {
    let uid = Command::new("id").arg("-u").output().unwrap();
    if String::from_utf8_lossy(&uid.stdout).trim() != "0"
        || Command::new("setpriv").arg("--version").output().is_err()
    {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let root = t.path();
    fs::create_dir(root.join("_base")).unwrap();
    file(&root.join("_base").join(fp("unused")), 16, 10 * DAY);
    for p in [root.to_path_buf(), root.join("_base")] {
        let st = Command::new("chmod").arg("755").arg(&p).status().unwrap();
        assert!(st.success());
    }
    let out = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
        .arg(env!("CARGO_BIN_EXE_cachewalk"))
        .arg("nova")
        .arg(root)
        .args(["--now", &NOW.to_string(), "--instances", "/dev/null"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["cache"]["in_use"], "unknown");
    assert_eq!(v["cache"]["verdict"], "keep_unknown");
    assert_eq!(
        v["cache"]["reasons"],
        serde_json::json!(["open_files_unknown"])
    );
}

/// Fatal errors are error records on stdout too, with the right kind, the
/// file named once (as the record's path, not again in the message):
/// an inventory that is not JSON, one that does not exist, a directory;
/// a flag that does nothing in the mode is a usage error.
#[test]
fn fatal_errors_are_error_records() {
    let t = tempfile::tempdir().unwrap();
    let root = t.path();
    fs::create_dir(root.join("_base")).unwrap();
    let bad = root.join("bad.jsonl");
    fs::write(&bad, "{\"uuid\":\"u1\"}\nnot json\n").unwrap();
    let images = root.join("images.jsonl");
    fs::write(&images, "{\"image\":{\"name\":\"no id\"}}\n").unwrap();
    let cases: Vec<(Vec<std::ffi::OsString>, &str, Option<&Path>)> = vec![
        (
            vec!["--instances".into(), bad.clone().into()],
            "bad_json",
            Some(&bad),
        ),
        (
            vec!["--instances".into(), root.join("nonexist").into()],
            "not_found",
            None,
        ),
        (
            vec!["--instances".into(), root.join("_base").into()],
            "not_regular",
            None,
        ),
        (
            vec!["--images".into(), images.clone().into()],
            "bad_record",
            Some(&images),
        ),
        (
            vec!["--audit".into(), "--host".into(), "x".into()],
            "usage",
            None,
        ),
    ];
    for (args, kind, path) in cases {
        let out = Command::new(env!("CARGO_BIN_EXE_cachewalk"))
            .arg("nova")
            .arg(root)
            .args(&args)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let recs: Vec<Value> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(recs.len(), 1, "{args:?}: {recs:?}");
        assert_eq!(recs[0]["error"]["kind"], kind, "{args:?}: {recs:?}");
        assert_eq!(recs[0]["error"]["tool"], "cachewalk");
        let msg = recs[0]["error"]["message"].as_str().unwrap();
        if let Some(p) = path {
            assert_eq!(recs[0]["path"], p.to_str().unwrap());
            assert!(!msg.contains(p.to_str().unwrap()), "{msg}");
            assert!(msg.starts_with("line "), "{msg}");
        }
    }
    // A missing INSTANCES_PATH: the record names it, the message says why.
    let gone = root.join("gone");
    let out = Command::new(env!("CARGO_BIN_EXE_cachewalk"))
        .arg("nova")
        .arg(&gone)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["error"]["kind"], "not_found");
    assert_eq!(v["path"], gone.to_str().unwrap());
    assert!(!v["error"]["message"].as_str().unwrap().contains("gone"));
}

/// Found by the Nova differential (tests/tests/upstream_nova.rs): Nova
/// ages files by a float (`time.time() - getmtime`), counts an empty
/// image_ref as the id "" (keeping SHA-1("") in use), and predicts use
/// only for instances on the hosts sharing the storage.
#[test]
fn sub_second_ages_empty_ids_and_other_hosts_as_nova_sees_them() {
    let t = tempfile::tempdir().unwrap();
    let root = t.path();
    fs::create_dir_all(root.join("_base")).unwrap();
    // Exactly the threshold old, plus half a second younger: too young.
    let young = root.join("_base").join(fp("half-second"));
    fs::write(&young, b"x").unwrap();
    let st = Command::new("touch")
        .arg("-d")
        .arg(format!("@{}.5", NOW - DAY))
        .arg(&young)
        .status()
        .unwrap();
    assert!(st.success());
    let exact = root.join("_base").join(fp("exact"));
    file(&exact, 1, DAY);
    let empty = root.join("_base").join(fp(""));
    file(&empty, 1, 10 * DAY);
    let other = root.join("_base").join(fp("elsewhere"));
    file(&other, 1, 10 * DAY);
    let inv = concat!(
        "{\"uuid\":\"u1\",\"host\":\"compute-1\",\"image_ref\":\"\"}\n",
        "{\"uuid\":\"u2\",\"host\":\"compute-9\",\"image_ref\":\"elsewhere\"}\n",
    );
    let (out, recs) = walk(root, &["--assume-no-instances-on", "compute-9"], Some(inv));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let m = by_rel(&recs);
    let e = &m[&format!("_base/{}", fp("half-second"))];
    assert_eq!(e["verdict"], "keep_young", "{e}");
    assert!(
        e["nova_eligible_at"].as_str().unwrap()
            > system::text::rfc3339_utc(NOW, 0).unwrap().as_str(),
        "{e}"
    );
    assert_eq!(m[&format!("_base/{}", fp("exact"))]["verdict"], "candidate");
    let e = &m[&format!("_base/{}", fp(""))];
    assert_eq!(e["verdict"], "keep_in_use", "{e}");
    assert_eq!(e["nova_in_use"], true, "{e}");
    // Used by an instance on a host not sharing this storage: Nova does
    // not count it; cachewalk keeps it all the same.
    let e = &m[&format!("_base/{}", fp("elsewhere"))];
    assert_eq!(e["nova_in_use"], false, "{e}");
    assert_eq!(e["verdict"], "keep_in_use", "{e}");
    // No dangling record for the empty id.
    assert!(
        recs.iter()
            .all(|r| r["cache"]["record"] != "dangling_reference" || r["cache"]["image_id"] != "")
    );
}
