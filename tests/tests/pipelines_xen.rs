//! The XenServer import as an operator pipeline: `vhd-chain flatten
//! image.tgz -o disk.vhd | imginfo-parse --check --expect-format vhd |
//! checksum-tee --verify`, on a tarball made with qemu-img and tar; and a
//! hostile tarball (a `../` member) stopping the pipeline with its error
//! record carried to the end, nothing written outside.
#![cfg(test)]

use pipeline_tests::{records_of, tool, tools_path};
use serde_json::Value;
use std::path::Path;
use std::process::Command;

fn sh(dir: &Path, script: &str) -> (i32, Vec<Value>) {
    records_of(
        Command::new("bash")
            .args(["-o", "pipefail", "-c", script])
            .current_dir(dir)
            .env("PATH", tools_path())
            .stderr(std::process::Stdio::inherit()),
    )
}

#[test]
fn xenserver_import_pipeline() {
    let have = |p: &str| Command::new(p).arg("--version").output().is_ok();
    if !have("qemu-img") || !have("python3") || tool("vhd-chain").is_err() {
        assert!(
            std::env::var_os("CI").is_none(),
            "qemu-img, python3 and the tools are needed in CI"
        );
        eprintln!("skipping: qemu-img, python3 or the tools missing");
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let d = t.path();
    let data: Vec<u8> = (0..8u32 << 20)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    std::fs::write(d.join("disk.raw"), &data).unwrap();
    let (code, _) = sh(
        d,
        "mkdir chain && qemu-img convert -f raw -O vpc -o subformat=dynamic disk.raw chain/0.vhd \
         && tar -czf image.tgz -C chain 0.vhd",
    );
    assert_eq!(code, 0);

    let (code, recs) = sh(
        d,
        "vhd-chain flatten image.tgz -o disk.vhd | imginfo-parse --check --expect-format vhd \
         | checksum-tee --verify",
    );
    assert_eq!(code, 0, "{recs:#?}");
    assert_eq!(recs.len(), 1);
    let r = &recs[0];
    assert!(r["path"].as_str().unwrap().ends_with("disk.vhd"));
    assert_eq!(r["info"]["format"], "vpc", "{r:#}");
    assert_eq!(r["check"]["acceptable"], true, "{r:#}");
    assert!(r["checksums"]["sha512"].is_string(), "{r:#}");
    assert!(r["vhd"].is_object(), "{r:#}");
    // The imported disk holds the data.
    let (code, _) = sh(d, "qemu-img convert -f vpc -O raw disk.vhd back.raw");
    assert_eq!(code, 0);
    let back = std::fs::read(d.join("back.raw")).unwrap();
    assert!(back[..data.len()] == data[..]);

    // A member that climbs out of the extraction directory.
    let (code, _) = sh(
        d,
        "python3 -c \"import tarfile; t = tarfile.open('bad.tgz', 'w:gz'); \
         t.add('chain/0.vhd', arcname='../0.vhd'); t.close()\"",
    );
    assert_eq!(code, 0);
    let (code, recs) = sh(
        d,
        "vhd-chain flatten bad.tgz -o bad.vhd | imginfo-parse --check | checksum-tee --verify",
    );
    assert_ne!(code, 0);
    assert_eq!(recs.len(), 1, "{recs:#?}");
    assert_eq!(recs[0]["error"]["kind"], "unsafe_member", "{recs:#?}");
    assert_eq!(recs[0]["check"]["acceptable"], false);
    assert!(!d.join("bad.vhd").exists());
    assert!(!d.parent().unwrap().join("0.vhd").exists());
}
