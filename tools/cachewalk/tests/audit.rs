//! `cachewalk nova --audit` on a compute-host tree made with qemu-img:
//! a raw disk (per disk.info) whose first cluster is a qcow2 header
//! pointing at /etc/shadow (what a guest can write, CVE-2026-24708), a
//! `_base` file carrying a qcow2 header, a qcow2 disk with a data file and
//! one backed outside `_base` are flagged; clean qcow2 and raw disks are
//! not; a disk disk.info does not name counts as raw only with
//! --assume-raw.
#![cfg(test)]

mod support;

use serde_json::Value;
use std::path::Path;
use std::process::Command;

fn qemu_img(args: &[&str]) {
    let out = Command::new("qemu-img").args(args).output().unwrap();
    assert!(
        out.status.success(),
        "qemu-img {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn disk_info(dir: &Path, entries: &[(&str, &str)]) {
    // Nova's keys: the absolute paths it saw (here another mount point).
    let m: serde_json::Map<String, Value> = entries
        .iter()
        .map(|(n, f)| {
            (
                format!(
                    "/var/lib/nova/instances/{}/{n}",
                    dir.file_name().unwrap().to_string_lossy()
                ),
                Value::from(*f),
            )
        })
        .collect();
    std::fs::write(dir.join("disk.info"), Value::Object(m).to_string()).unwrap();
}

fn audit(root: &Path, extra: &[&str]) -> (i32, Vec<Value>) {
    let out = Command::new(env!("CARGO_BIN_EXE_cachewalk"))
        .arg("nova")
        .arg(root)
        .arg("--audit")
        .args(extra)
        .output()
        .unwrap();
    let recs = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    (out.status.code().unwrap_or(-1), recs)
}

fn flags_of(recs: &[Value], rel: &str) -> Vec<String> {
    let r = recs
        .iter()
        .find(|r| r["audit"]["rel_path"] == rel)
        .unwrap_or_else(|| panic!("{rel}: {recs:#?}"));
    r["audit"]["flags"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f.as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn planted_confusions_are_found_and_clean_disks_are_not() {
    if !support::have_qemu() {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let root = t.path();
    let base = root.join("_base");
    std::fs::create_dir_all(&base).unwrap();
    let fp = support::fp("fd0cb2f1-8375-44c9-b1f4-3e1f4c4a8ef0");
    let b = base.join(&fp);
    support::file_of(&b, 1 << 20, 0x11, 0);
    std::fs::write(base.join(format!("{fp}.info")), "{}").unwrap();
    let s = |p: &Path| p.to_str().unwrap().to_owned();

    // Clean: a qcow2 overlay on _base, a raw ephemeral.
    let vm1 = root.join("vm-1");
    std::fs::create_dir_all(&vm1).unwrap();
    qemu_img(&[
        "create",
        "-q",
        "-f",
        "qcow2",
        "-F",
        "raw",
        "-b",
        &s(&b),
        &s(&vm1.join("disk")),
    ]);
    support::file_of(&vm1.join("disk.eph0"), 1 << 20, 0, 0);
    disk_info(&vm1, &[("disk", "qcow2"), ("disk.eph0", "raw")]);

    // A raw root disk whose first cluster the guest made a qcow2 header
    // naming /etc/shadow.
    let vm2 = root.join("vm-2");
    std::fs::create_dir_all(&vm2).unwrap();
    let evil = t.path().join("evil.qcow2");
    qemu_img(&[
        "create",
        "-q",
        "-f",
        "qcow2",
        "-u",
        "-F",
        "raw",
        "-b",
        "/etc/shadow",
        &s(&evil),
        "1G",
    ]);
    let mut bytes = std::fs::read(&evil).unwrap();
    bytes.resize(4 << 20, 0);
    std::fs::write(vm2.join("disk"), &bytes).unwrap();
    disk_info(&vm2, &[("disk", "raw")]);
    // The same bytes in a disk that disk.info does not name.
    std::fs::write(vm2.join("disk.swap"), &bytes).unwrap();

    // qcow2 with a data file; qcow2 backed outside _base.
    let vm3 = root.join("vm-3");
    std::fs::create_dir_all(&vm3).unwrap();
    qemu_img(&[
        "create",
        "-q",
        "-f",
        "qcow2",
        "-o",
        &format!("data_file={}", s(&t.path().join("x.data"))),
        &s(&vm3.join("disk")),
        "1M",
    ]);
    let vm4 = root.join("vm-4");
    std::fs::create_dir_all(&vm4).unwrap();
    qemu_img(&[
        "create",
        "-q",
        "-f",
        "qcow2",
        "-u",
        "-F",
        "raw",
        "-b",
        "/etc/passwd",
        &s(&vm4.join("disk")),
        "1M",
    ]);
    disk_info(&vm3, &[("disk", "qcow2")]);
    disk_info(&vm4, &[("disk", "qcow2")]);

    // A _base file (raw by force_raw_images) carrying a qcow2 header.
    std::fs::write(
        base.join("0000000000000000000000000000000000000bad"),
        &bytes,
    )
    .unwrap();

    let (code, recs) = audit(root, &[]);
    assert_eq!(code, 1, "{recs:#?}");
    assert!(flags_of(&recs, "vm-1/disk").is_empty());
    assert!(flags_of(&recs, "vm-1/disk.eph0").is_empty());
    assert!(flags_of(&recs, &format!("_base/{fp}")).is_empty());
    assert_eq!(
        flags_of(&recs, "vm-2/disk"),
        ["format_confusion", "backing_outside_base"]
    );
    assert!(flags_of(&recs, "vm-2/disk.swap").contains(&"backing_outside_base".to_owned()));
    assert!(!flags_of(&recs, "vm-2/disk.swap").contains(&"format_confusion".to_owned()));
    assert_eq!(flags_of(&recs, "vm-3/disk"), ["data_file"]);
    assert_eq!(flags_of(&recs, "vm-4/disk"), ["backing_outside_base"]);
    assert!(
        flags_of(&recs, "_base/0000000000000000000000000000000000000bad")
            .contains(&"format_confusion".to_owned())
    );
    // Sidecars are not images; every record names its file.
    assert!(
        recs.iter()
            .all(|r| !r["path"].as_str().unwrap().ends_with(".info"))
    );
    let unsafe_count = recs
        .iter()
        .filter(|r| r["audit"]["verdict"] == "unsafe")
        .count();
    assert_eq!(unsafe_count, 5);
    let r = recs
        .iter()
        .find(|r| r["audit"]["rel_path"] == "vm-2/disk")
        .unwrap();
    assert_eq!(r["audit"]["expected"], "raw");
    assert_eq!(r["audit"]["expected_from"], "disk.info");
    assert_eq!(r["audit"]["found"], "qcow2");
    assert_eq!(r["audit"]["backing_file"], "/etc/shadow");

    // --assume-raw: the unnamed disk is judged as raw too.
    let (_, recs) = audit(root, &["--assume-raw"]);
    assert!(flags_of(&recs, "vm-2/disk.swap").contains(&"format_confusion".to_owned()));

    // A clean tree passes.
    std::fs::remove_dir_all(&vm2).unwrap();
    std::fs::remove_dir_all(&vm3).unwrap();
    std::fs::remove_dir_all(&vm4).unwrap();
    std::fs::remove_file(base.join("0000000000000000000000000000000000000bad")).unwrap();
    let (code, recs) = audit(root, &[]);
    assert_eq!(code, 0, "{recs:#?}");
    assert_eq!(recs.len(), 3);
}
