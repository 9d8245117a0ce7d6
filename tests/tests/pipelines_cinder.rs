//! Cinder's `resize_image` as a checked pipeline (`examples/resize-image`):
//! the behaviour of its unit test (`qemu-img resize FILE NG`) on real
//! images, plus what the plain call never checked: a backing file, a
//! shrink that would cut data off, a missing qemu-img. Each refusal is a
//! record and a non-zero exit, with the file untouched.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use pipeline_tests::{records_of, tool, tools_path, workspace};
use serde_json::Value;
use std::path::Path;
use std::process::Command;

const GIB: u64 = 1 << 30;

fn qemu(dir: &Path, args: &[&str]) {
    let st = Command::new("qemu-img")
        .args(args)
        .current_dir(dir)
        .status()
        .unwrap();
    assert!(st.success(), "qemu-img {args:?}");
}

/// The virtual size qemu-img itself reports.
fn virtual_size(file: &Path) -> u64 {
    let out = Command::new("qemu-img")
        .args(["info", "--output=json"])
        .arg(file)
        .output()
        .unwrap();
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    v["virtual-size"].as_u64().unwrap()
}

fn resize(dir: &Path, file: &str, gb: &str, env: &[(&str, &str)]) -> (i32, Vec<Value>) {
    records_of(
        Command::new(workspace().join("examples/resize-image"))
            .args([file, gb])
            .current_dir(dir)
            .env("PATH", tools_path())
            .envs(env.iter().copied()),
    )
}

#[test]
fn cinder_resize_image() {
    if tool("imginfo-parse").is_err() || Command::new("qemu-img").arg("--version").output().is_err()
    {
        assert!(
            std::env::var_os("CI").is_none(),
            "the tools and qemu-img are needed in CI"
        );
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let d = t.path();

    // A qcow2 and a raw file grow to 1 GiB; the raw file's data stays.
    qemu(d, &["create", "-q", "-f", "qcow2", "a.qcow2", "64M"]);
    let data: Vec<u8> = (0..8u32 << 20).map(|i| (i % 251) as u8).collect();
    std::fs::write(d.join("b.raw"), &data).unwrap();
    for (file, format) in [("a.qcow2", "qcow2"), ("b.raw", "raw")] {
        let (code, recs) = resize(d, file, "1", &[]);
        assert_eq!(code, 0, "{file}: {recs:#?}");
        assert_eq!(recs.len(), 1);
        assert_eq!(recs[0]["info"]["format"], format);
        assert_eq!(recs[0]["info"]["virtual_size"], GIB);
        assert_eq!(recs[0]["check"]["acceptable"], true);
        assert_eq!(virtual_size(&d.join(file)), GIB, "{file}");
    }
    let raw = std::fs::read(d.join("b.raw")).unwrap();
    assert!(raw[..data.len()] == data[..], "the raw file's data changed");
    assert!(raw[data.len()..].iter().all(|&b| b == 0));

    // Refused, untouched: a backing file (checked before qemu-img opens
    // it), a shrink, no qemu-img.
    qemu(
        d,
        &[
            "create",
            "-q",
            "-f",
            "qcow2",
            "-u",
            "-F",
            "raw",
            "-b",
            "/etc/passwd",
            "c.qcow2",
            "64M",
        ],
    );
    qemu(d, &["create", "-q", "-f", "qcow2", "big.qcow2", "2G"]);
    let before = |f: &str| std::fs::read(d.join(f)).unwrap();
    let (c, big) = (before("c.qcow2"), before("big.qcow2"));

    let (code, recs) = resize(d, "c.qcow2", "1", &[]);
    assert_eq!(code, 1, "{recs:#?}");
    assert_eq!(recs[0]["check"]["failures"][0]["check"], "backing_file");
    assert!(before("c.qcow2") == c);

    let (code, recs) = resize(d, "big.qcow2", "1", &[]);
    assert_eq!(code, 2, "{recs:#?}");
    assert_eq!(recs[0]["error"]["kind"], "refused");
    assert!(
        recs[0]["error"]["message"]
            .as_str()
            .unwrap()
            .contains("lose data")
    );
    assert!(before("big.qcow2") == big);
    assert_eq!(virtual_size(&d.join("big.qcow2")), 2 * GIB);

    let (code, recs) = resize(
        d,
        "big.qcow2",
        "4",
        &[("QEMU_IMG", "/nonexistent/qemu-img")],
    );
    assert_eq!(code, 2, "{recs:#?}");
    assert_eq!(recs[0]["error"]["kind"], "qemu_img_missing");
    assert!(before("big.qcow2") == big);

    let left: Vec<_> = std::fs::read_dir(std::env::temp_dir())
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("resize-image."))
        .collect();
    assert!(left.is_empty(), "temporary directories left: {left:?}");
}
