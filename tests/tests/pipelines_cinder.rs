//! Cinder's `resize_image` as a checked pipeline (`examples/resize-image`):
//! the behaviour of its unit test (`qemu-img resize -f FMT FILE NG`) on
//! real images, plus what the plain call never checked: a backing file, a
//! shrink that would cut data off, a file whose bytes are not its declared
//! format (a guest-written qcow2 header in a raw volume), a missing
//! qemu-img. Each refusal is a record and a non-zero exit, with the file
//! untouched. And for all three Cinder scripts: no qemu-img on PATH fails
//! before anything is fetched, read or written.
#![cfg(test)]

use pipeline_tests::{bin_dir, records_of, tool, tools_path, workspace};
use serde_json::Value;
use std::path::{Path, PathBuf};
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

fn resize(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> (i32, Vec<Value>) {
    records_of(
        Command::new(workspace().join("examples/resize-image"))
            .args(args)
            .current_dir(dir)
            .env("PATH", tools_path())
            .envs(env.iter().copied()),
    )
}

/// A directory whose `rm` first copies every directory it is asked to
/// remove into `spy/`: the scripts remove their temporary directory on
/// exit, so this keeps every file they wrote there for the test to scan.
fn spy_rm(dir: &Path) -> (PathBuf, PathBuf) {
    let bin = dir.join("spy-bin");
    let spy = dir.join("spy");
    std::fs::create_dir_all(&bin).unwrap();
    std::fs::create_dir_all(&spy).unwrap();
    let rm = which("rm").unwrap();
    std::fs::write(
        bin.join("rm"),
        format!(
            "#!/bin/bash\nfor a in \"$@\"; do\n  [ \"${{a#-}}\" = \"$a\" ] && [ -d \"$a\" ] && cp -a -- \"$a\" {spy:?}/\ndone\nexec {rm:?} \"$@\"\n"
        ),
    )
    .unwrap();
    std::fs::set_permissions(
        bin.join("rm"),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    (bin, spy)
}

/// Every file under `dir` whose bytes contain `needle`.
fn holding(dir: &Path, needle: &[u8]) -> Vec<PathBuf> {
    let mut found = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        let ty = e.file_type().unwrap();
        if ty.is_dir() {
            found.extend(holding(&p, needle));
        } else if ty.is_file() {
            let b = std::fs::read(&p).unwrap();
            if b.windows(needle.len()).any(|w| w == needle) {
                found.push(p);
            }
        }
    }
    found
}

/// A unique marker, and a host file full of it.
fn secret(dir: &Path) -> (PathBuf, Vec<u8>) {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let marker = format!("HOST-SECRET-{}-{t:x}", std::process::id()).into_bytes();
    let file = dir.join("secret.txt");
    std::fs::write(&file, marker.repeat(4096)).unwrap();
    (file, marker)
}

/// The first directory of the test's PATH holding `prog`.
fn which(prog: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|d| d.join(prog))
        .find(|p| p.is_file())
}

/// A PATH with the tools and the shell utilities the scripts use, but no
/// qemu-img.
fn path_without_qemu_img(dir: &Path) -> String {
    let bin = dir.join("no-qemu-bin");
    std::fs::create_dir_all(&bin).unwrap();
    for prog in [
        "bash", "env", "jq", "mktemp", "rm", "cat", "stat", "dirname", "mv",
    ] {
        std::os::unix::fs::symlink(which(prog).unwrap(), bin.join(prog)).unwrap();
    }
    assert!(!bin_dir().join("qemu-img").exists());
    format!("{}:{}", bin_dir().display(), bin.display())
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

    // A qcow2 (declared) and a raw file (the default) grow to 1 GiB; the
    // raw file's data stays.
    qemu(d, &["create", "-q", "-f", "qcow2", "a.qcow2", "64M"]);
    let data: Vec<u8> = (0..8u32 << 20).map(|i| (i % 251) as u8).collect();
    std::fs::write(d.join("b.raw"), &data).unwrap();
    for (args, format) in [
        (&["--volume-format", "qcow2", "a.qcow2", "1"][..], "qcow2"),
        (&["b.raw", "1"][..], "raw"),
    ] {
        let (code, recs) = resize(d, args, &[]);
        assert_eq!(code, 0, "{args:?}: {recs:#?}");
        assert_eq!(recs.len(), 1);
        assert_eq!(recs[0]["info"]["format"], format);
        assert_eq!(recs[0]["info"]["virtual_size"], GIB);
        assert_eq!(recs[0]["check"]["acceptable"], true);
        assert_eq!(virtual_size(&d.join(args[args.len() - 2])), GIB, "{args:?}");
    }
    let raw = std::fs::read(d.join("b.raw")).unwrap();
    assert!(raw[..data.len()] == data[..], "the raw file's data changed");
    assert!(raw[data.len()..].iter().all(|&b| b == 0));

    // Refused, untouched: a backing file (checked before qemu-img opens
    // it), a qcow2 not declared as one, a shrink, no qemu-img.
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
    let (c, big, a) = (before("c.qcow2"), before("big.qcow2"), before("a.qcow2"));

    let (code, recs) = resize(d, &["--volume-format=qcow2", "c.qcow2", "1"], &[]);
    assert_eq!(code, 1, "{recs:#?}");
    assert_eq!(recs[0]["check"]["failures"][0]["check"], "backing_file");
    assert!(before("c.qcow2") == c);

    // Declared raw (the default), qcow2 bytes: qemu-img is never told to
    // read it as qcow2.
    let (code, recs) = resize(d, &["a.qcow2", "2"], &[]);
    assert_eq!(code, 1, "{recs:#?}");
    assert_eq!(recs[0]["check"]["failures"][0]["check"], "format_mismatch");
    assert!(before("a.qcow2") == a);

    let (code, recs) = resize(d, &["--volume-format", "qcow2", "big.qcow2", "1"], &[]);
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
        &["--volume-format", "qcow2", "big.qcow2", "4"],
        &[("QEMU_IMG", "/nonexistent/qemu-img")],
    );
    assert_eq!(code, 2, "{recs:#?}");
    assert_eq!(recs[0]["error"]["kind"], "qemu_img_missing");
    assert!(before("big.qcow2") == big);

    // A bad format name is a usage error, before anything runs.
    let (code, recs) = resize(d, &["--volume-format", "-O", "b.raw", "1"], &[]);
    assert_eq!(code, 2);
    assert!(recs.is_empty(), "{recs:#?}");

    let left: Vec<_> = std::fs::read_dir(std::env::temp_dir())
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("resize-image."))
        .collect();
    assert!(left.is_empty(), "temporary directories left: {left:?}");
}

/// CVE-2015-1850's class: a raw volume (the default) whose guest wrote a
/// qcow2 header with a backing file naming a host file. Refused; the
/// volume is untouched and the host file's bytes reach no file the script
/// wrote (its temporary directory, kept by a spying `rm`) nor its output.
#[test]
fn resize_image_guest_written_qcow2_header() {
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
    let (host, marker) = secret(d);
    let host = host.to_str().unwrap();
    qemu(
        d,
        &[
            "create", "-q", "-f", "qcow2", "-b", host, "-F", "raw", "vol.img",
        ],
    );
    let vol = std::fs::read(d.join("vol.img")).unwrap();
    let (spy_bin, spy) = spy_rm(d);
    let scratch = d.join("tmp");
    std::fs::create_dir(&scratch).unwrap();
    let path = format!("{}:{}", spy_bin.display(), tools_path());
    let out = Command::new(workspace().join("examples/resize-image"))
        .args(["vol.img", "2"])
        .current_dir(d)
        .env("PATH", &path)
        .env("TMPDIR", &scratch)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let rec: Value = serde_json::from_slice(&out.stdout).unwrap();
    let failed: Vec<&str> = rec["check"]["failures"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|f| f["check"].as_str())
        .collect();
    assert!(failed.contains(&"format_mismatch"), "{rec:#}");
    assert!(failed.contains(&"backing_file"), "{rec:#}");
    assert!(std::fs::read(d.join("vol.img")).unwrap() == vol);
    // The spy kept the script's temporary directory: the scan is not of
    // nothing.
    assert_eq!(std::fs::read_dir(&spy).unwrap().count(), 1);
    let found: Vec<_> = holding(d, &marker)
        .into_iter()
        .filter(|p| p.file_name() != Some("secret.txt".as_ref()))
        .collect();
    assert!(found.is_empty(), "the host file leaked into {found:?}");
    assert!(!out.stdout.windows(marker.len()).any(|w| w == marker));
    assert_eq!(std::fs::read_dir(&scratch).unwrap().count(), 0);
}

/// The mtime (with nanoseconds) and entries of a directory: creating or
/// removing anything in it changes them.
fn dir_state(dir: &Path) -> (std::time::SystemTime, Vec<std::ffi::OsString>) {
    let mut names: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    names.sort();
    (std::fs::metadata(dir).unwrap().modified().unwrap(), names)
}

/// No qemu-img on PATH: every Cinder script says so (a record, exit 2)
/// before it connects to Glance, creates its temporary directory or
/// touches its file.
#[test]
fn cinder_scripts_without_qemu_img_stop_before_anything() {
    if tool("imginfo-parse").is_err() || which("jq").is_none() {
        assert!(
            std::env::var_os("CI").is_none(),
            "the tools and jq are needed in CI"
        );
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let d = t.path();
    let path = path_without_qemu_img(d);
    let work = d.join("work");
    let scratch = d.join("tmp");
    std::fs::create_dir(&work).unwrap();
    std::fs::create_dir(&scratch).unwrap();
    std::fs::write(work.join("vol.raw"), vec![7u8; 1 << 20]).unwrap();
    // A "Glance" that records whether anyone connected.
    let glance = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    glance.set_nonblocking(true).unwrap();
    let url = format!("http://{}", glance.local_addr().unwrap());
    std::thread::sleep(std::time::Duration::from_millis(20));
    let (work0, scratch0) = (dir_state(&work), dir_state(&scratch));
    let vol0 = std::fs::read(work.join("vol.raw")).unwrap();

    let runs: [(&str, Vec<&str>); 3] = [
        (
            "upload-volume",
            vec![
                &url,
                "vol.raw",
                "name",
                "qcow2",
                "--header",
                "X-Roles: admin",
            ],
        ),
        ("fetch-to-raw", vec![&url, "some-id", "new.vol", "1"]),
        ("resize-image", vec!["vol.raw", "2"]),
    ];
    for (script, args) in runs {
        let out = Command::new(workspace().join("examples").join(script))
            .args(&args)
            .current_dir(&work)
            .env("PATH", &path)
            .env("TMPDIR", &scratch)
            .env_remove("QEMU_IMG")
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{script}: {out:?}");
        let rec: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(
            rec["error"]["kind"], "qemu_img_missing",
            "{script}: {rec:#}"
        );
        assert_eq!(rec["error"]["tool"], script);
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("qemu-img not found"),
            "{script}: {out:?}"
        );
        assert!(
            matches!(glance.accept(), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
            "{script} connected to Glance"
        );
        assert_eq!(dir_state(&work), work0, "{script} wrote beside its file");
        assert_eq!(dir_state(&scratch), scratch0, "{script} wrote in TMPDIR");
        assert!(std::fs::read(work.join("vol.raw")).unwrap() == vol0);
    }
}
