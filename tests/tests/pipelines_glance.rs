//! Operator pipelines across the tools, against two real Glances:
//! replication with verification (`glance-dump --dir | checksum-tee
//! --verify | glance-load`), and every tool passing the others' facets
//! through (`glance-dump | cachewalk fname | imginfo-parse | checksum-tee
//! --verify | glance-load`) while glance-load still sends only `image`;
//! and the cache audit (`glance-dump --metaonly > images.jsonl; cachewalk
//! nova INSTANCES --images images.jsonl --verify | jq 'select(corrupt or
//! dangling)'`) finding a corrupted `_base` file and a missing one.
#![cfg(test)]

use glance_server::{AUTH, bytes_of, create, curl, start, upload};
use test_support::glance_server;

use pipeline_tests::{records_of, tool, tools_path};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Run `script` in bash with the tools first on PATH and `$A`, `$B`,
/// `$H` (the identity flags) set; its records and exit status.
fn pipeline(script: &str, a: &str, b: &str, dir: &std::path::Path) -> (i32, Vec<Value>) {
    let h: Vec<String> = AUTH.iter().map(|x| format!("--header '{x}'")).collect();
    records_of(
        Command::new("bash")
            .args(["-o", "pipefail", "-c"])
            .arg(format!(
                "H=\"{}\"; {script}",
                h.join(" ").replace('"', "\\\"")
            ))
            .current_dir(dir)
            .env("PATH", tools_path())
            .env("A", a)
            .env("B", b)
            .stderr(std::process::Stdio::inherit()),
    )
}

/// Nova's cache name of an image id: its SHA-1, as `cachewalk fname`
/// computes it (asked of the tool, so the test checks the pipeline, not a
/// copy of its code).
fn common_sha1(id: &str) -> String {
    let out = Command::new(tool("cachewalk").unwrap())
        .args(["fname", id])
        .output()
        .unwrap();
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    v["cache"]["fingerprint"].as_str().unwrap().to_owned()
}

#[test]
fn replication_with_verification_and_facets_passed_through() {
    if tool("glance-load").is_err() || tool("checksum-tee").is_err() {
        assert!(std::env::var_os("CI").is_none(), "the tools are not built");
        return;
    }
    let Some(a) = start() else { return };
    let Some(b) = start() else { return };
    let t = tempfile::tempdir().unwrap();
    let mut ids = Vec::new();
    for (i, name) in ["one", "two"].iter().enumerate() {
        let id = create(
            &a.url,
            &format!(r#"{{"name":"{name}","disk_format":"raw","container_format":"bare"}}"#),
        );
        let f = t.path().join(name);
        std::fs::write(&f, bytes_of(40 + i as u32, 500_000)).unwrap();
        upload(&a.url, &id, &f);
        ids.push(id);
    }

    // Replication with verification: the dump re-read and checked against
    // Glance's hashes before anything is loaded.
    let (code, recs) = pipeline(
        r#"eval "glance-dump --url \"$A\" $H --dir D" | checksum-tee --verify | eval "glance-load --url \"$B\" $H""#,
        &a.url,
        &b.url,
        t.path(),
    );
    assert_eq!(code, 0, "{recs:#?}");
    assert_eq!(recs.len(), 2);
    for r in &recs {
        assert_eq!(r["load"]["action"], "created", "{r:#}");
        assert_eq!(r["checksums"]["verified"], true, "{r:#}");
        assert!(r["dump"].is_object());
    }

    // Every tool's facet survives the others; glance-load sends only the
    // image's own keys.
    let (code, recs) = pipeline(
        r#"eval "glance-dump --url \"$A\" $H --dir D" | jq -c '.image_id = .image.id' \
           | cachewalk fname | imginfo-parse | checksum-tee --verify \
           | eval "glance-load --url \"$B\" $H""#,
        &a.url,
        &b.url,
        t.path(),
    );
    assert_eq!(code, 0, "{recs:#?}");
    for r in &recs {
        for facet in ["image", "dump", "cache", "info", "checksums", "load"] {
            assert!(r.get(facet).is_some(), "{facet} missing: {r:#}");
        }
        assert_eq!(r["info"]["format"], "raw");
        assert_eq!(r["load"]["action"], "unchanged", "{r:#}");
    }
    // The cache audit: _base files named by the images' fingerprints, one
    // with Glance's bytes, one corrupted; an instance disk needing a third
    // that is gone.
    let nova = t.path().join("nova");
    std::fs::create_dir_all(nova.join("_base")).unwrap();
    std::fs::create_dir_all(nova.join("vm-1")).unwrap();
    let fp = |id: &str| common_sha1(id);
    std::fs::write(nova.join("_base").join(fp(&ids[0])), bytes_of(40, 500_000)).unwrap();
    let mut bad = bytes_of(41, 500_000);
    bad[4096] ^= 1;
    std::fs::write(nova.join("_base").join(fp(&ids[1])), bad).unwrap();
    let gone = nova
        .join("_base")
        .join("0000000000000000000000000000000000000000");
    let st = Command::new("qemu-img")
        .args(["create", "-q", "-f", "qcow2", "-u", "-F", "raw", "-b"])
        .arg(&gone)
        .arg(nova.join("vm-1/disk"))
        .arg("1M")
        .status();
    if st.is_ok_and(|s| s.success()) {
        let (code, recs) = pipeline(
            r#"eval "glance-dump --url \"$A\" $H --metaonly" > images.jsonl && \
               cachewalk nova "$PWD/nova" --images images.jsonl --verify \
               | jq -c 'select(.cache.verdict == "corrupt" or .cache.record == "dangling_reference")'"#,
            &a.url,
            &b.url,
            t.path(),
        );
        assert_eq!(code, 0, "{recs:#?}");
        let mut found: Vec<String> = recs
            .iter()
            .map(|r| r["cache"]["rel_path"].as_str().unwrap_or("?").to_owned())
            .collect();
        found.sort();
        let mut want = vec![
            format!("_base/{}", fp(&ids[1])),
            "_base/0000000000000000000000000000000000000000".to_owned(),
        ];
        want.sort();
        assert_eq!(found, want, "{recs:#?}");
    } else {
        assert!(std::env::var_os("CI").is_none(), "qemu-img is needed in CI");
    }

    for id in &ids {
        let img = curl(&[&format!("{}/v2/images/{id}", b.url)]);
        for k in [
            "dump",
            "cache",
            "info",
            "checksums",
            "load",
            "image_id",
            "path",
        ] {
            assert!(img.get(k).is_none(), "{k} reached Glance: {img:#}");
        }
    }
}

/// Cinder's `fetch_to_raw` as a pipeline (`examples/fetch-to-raw`): a
/// qcow2 becomes a raw volume file; every refusal of Cinder's tests (a
/// backing file, too large for the volume, not the claimed format, no
/// qemu-img) gives its record and a non-zero exit, and the temporary
/// files are gone. An image claimed raw whose bytes are a qcow2 backed by
/// a host file is refused, and that file's bytes reach no file the script
/// wrote. Then Cinder's `upload_volume` (`examples/upload-volume`), with
/// the same attack from a guest-written volume.
#[test]
fn cinder_fetch_to_raw() {
    if tool("glance-dump").is_err() || Command::new("qemu-img").arg("--version").output().is_err() {
        assert!(
            std::env::var_os("CI").is_none(),
            "the tools and qemu-img are needed in CI"
        );
        return;
    }
    let Some(g) = start() else { return };
    let t = tempfile::tempdir().unwrap();
    let d = t.path();
    let qemu = |args: &[&str]| {
        assert!(
            Command::new("qemu-img")
                .args(args)
                .current_dir(d)
                .status()
                .unwrap()
                .success()
        );
    };
    // name, disk_format, file uploaded, file then planted in the store.
    qemu(&["create", "-q", "-f", "qcow2", "good.qcow2", "64M"]);
    qemu(&["create", "-q", "-f", "qcow2", "big.qcow2", "3G"]);
    qemu(&[
        "create",
        "-q",
        "-f",
        "qcow2",
        "-u",
        "-F",
        "raw",
        "-b",
        "/etc/passwd",
        "backed.qcow2",
        "64M",
    ]);
    // A host file the images below name as their backing file.
    let (host, marker) = secret(d);
    let host = host.to_str().unwrap();
    qemu(&[
        "create",
        "-q",
        "-f",
        "qcow2",
        "-b",
        host,
        "-F",
        "raw",
        "secret.qcow2",
        "64M",
    ]);
    // A qcow2 no reader can parse: a cluster size of 2^40 bytes.
    let mut broken = std::fs::read(d.join("good.qcow2")).unwrap();
    broken[20..24].copy_from_slice(&40u32.to_be_bytes());
    std::fs::write(d.join("broken.qcow2"), broken).unwrap();
    let mut ids = std::collections::HashMap::new();
    for (name, fmt) in [
        ("good", "qcow2"),
        ("big", "qcow2"),
        ("backed", "qcow2"),
        ("broken", "qcow2"),
        ("liar", "raw"),
        ("secret", "raw"),
    ] {
        let id = create(
            &g.url,
            &format!(r#"{{"name":"{name}","disk_format":"{fmt}","container_format":"bare"}}"#),
        );
        // Glance 33 refuses a backing file or a mismatch at upload: those
        // are planted in its store under a clean upload of the same size.
        let (clean, planted) = match name {
            "backed" => ("good.qcow2", Some("backed.qcow2")),
            "broken" => ("good.qcow2", Some("broken.qcow2")),
            "liar" => ("", Some("good.qcow2")),
            "secret" => ("", Some("secret.qcow2")),
            other => (
                if other == "big" {
                    "big.qcow2"
                } else {
                    "good.qcow2"
                },
                None,
            ),
        };
        let src = match (clean, planted) {
            ("", Some(p)) => {
                let n = std::fs::metadata(d.join(p)).unwrap().len() as usize;
                std::fs::write(d.join("liar.raw"), bytes_of(9, n)).unwrap();
                d.join("liar.raw")
            }
            (c, _) => d.join(c),
        };
        if let Some(p) = planted {
            let mut bytes = std::fs::read(d.join(p)).unwrap();
            bytes.resize(std::fs::metadata(&src).unwrap().len() as usize, 0);
            upload(&g.url, &id, &src);
            let stored = g.state().join("images").join(&id);
            std::fs::write(&stored, bytes).unwrap();
            // As stored before the checks existed: Glance's hashes are
            // those of these bytes.
            let sum = |prog: &str| {
                let out = Command::new(prog).arg(&stored).output().unwrap();
                String::from_utf8_lossy(&out.stdout)
                    .split_whitespace()
                    .next()
                    .unwrap()
                    .to_owned()
            };
            let st = Command::new("python3")
                .args([
                    "-c",
                    "import sqlite3, sys; c = sqlite3.connect(sys.argv[1]); \
                     c.execute('update images set checksum = ?, os_hash_value = ? where id = ?', \
                     sys.argv[2:5]); c.commit()",
                ])
                .arg(g.state().join("glance.sqlite"))
                .args([sum("md5sum"), sum("sha512sum"), id.clone()])
                .status()
                .unwrap();
            assert!(st.success());
        } else {
            upload(&g.url, &id, &src);
        }
        ids.insert(name, id);
    }
    let script = glance_server::workspace().join("examples/fetch-to-raw");
    // Every temporary directory the scripts remove is kept in `spy/`.
    let (spy_bin, spy) = spy_rm(d);
    let spied = format!("{}:{}", spy_bin.display(), tools_path());
    let run = |name: &str, gb: &str, env: &[(&str, &str)]| -> (i32, Vec<Value>) {
        let mut args = vec![
            g.url.clone(),
            ids[name].clone(),
            format!("{name}.vol"),
            gb.to_owned(),
        ];
        for h in AUTH {
            args.push("--header".into());
            args.push(h.into());
        }
        let got = records_of(
            Command::new(&script)
                .args(&args)
                .current_dir(d)
                .env("PATH", &spied)
                .envs(env.iter().copied()),
        );
        let left: Vec<_> = std::fs::read_dir(d)
            .unwrap()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with(".fetch-to-raw"))
            .collect();
        assert!(left.is_empty(), "{name}: temporary files left");
        got
    };
    let (code, recs) = run("good", "1", &[]);
    assert_eq!(code, 0, "{recs:#?}");
    assert_eq!(recs[0]["info"]["format"], "raw");
    assert_eq!(recs[0]["check"]["acceptable"], true);
    assert_eq!(
        std::fs::metadata(d.join("good.vol")).unwrap().len(),
        64 << 20
    );

    let failures = |recs: &[Value]| -> Vec<String> {
        recs.iter()
            .flat_map(|r| {
                r["check"]["failures"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default()
            })
            .map(|f| f["check"].as_str().unwrap_or("?").to_owned())
            .collect()
    };
    for (name, gb, want) in [
        ("big", "1", "virtual_size"),
        ("backed", "1", "backing_file"),
        ("liar", "1", "format_mismatch"),
    ] {
        let (code, recs) = run(name, gb, &[]);
        assert_eq!(code, 1, "{name}: {recs:#?}");
        assert!(
            failures(&recs).contains(&want.to_owned()),
            "{name}: {recs:#?}"
        );
        assert!(!d.join(format!("{name}.vol")).exists());
    }
    // Claimed raw, a qcow2 backed by a host file: refused before qemu-img
    // opens it, and the host file's bytes are in none of the files the
    // script wrote (kept by the spy) nor in its output.
    std::fs::remove_dir_all(&spy).unwrap();
    std::fs::create_dir(&spy).unwrap();
    let (code, recs) = run("secret", "1", &[]);
    assert_eq!(code, 1, "{recs:#?}");
    for want in ["format_mismatch", "backing_file"] {
        assert!(failures(&recs).contains(&want.to_owned()), "{recs:#?}");
    }
    assert!(!d.join("secret.vol").exists());
    assert_eq!(
        std::fs::read_dir(&spy).unwrap().count(),
        1,
        "no temporary directory kept"
    );
    assert_eq!(leaks(d, &marker), Vec::<PathBuf>::new());
    assert!(
        !serde_json::to_string(&recs)
            .unwrap()
            .contains(std::str::from_utf8(&marker).unwrap())
    );

    let (code, recs) = run("good", "1", &[("QEMU_IMG", "/nonexistent/qemu-img")]);
    assert_eq!(code, 2, "{recs:#?}");
    assert_eq!(recs[0]["error"]["kind"], "qemu_img_missing");
    // No reader can parse it (Cinder's ProcessExecutionError): refused by
    // the native check, before qemu-img runs.
    let (code, recs) = run("broken", "1", &[]);
    assert_eq!(code, 2, "{recs:#?}");
    assert_eq!(recs[0]["error"]["kind"], "bad_image", "{recs:#?}");
    assert!(!d.join("broken.vol").exists());
    // DEST a directory (or a device, a FIFO): never replaced, refused
    // before anything is fetched.
    std::fs::create_dir(d.join("adir.vol")).unwrap();
    let (code, recs) = run("good", "1", &[]);
    assert_eq!(code, 0, "{recs:#?}");
    std::fs::remove_file(d.join("good.vol")).unwrap();
    std::os::unix::fs::symlink("adir.vol", d.join("good.vol")).unwrap();
    let (code, recs) = run("good", "1", &[]);
    assert_eq!(code, 2, "{recs:#?}");
    assert_eq!(recs[0]["error"]["kind"], "not_regular", "{recs:#?}");
    assert_eq!(std::fs::read_dir(d.join("adir.vol")).unwrap().count(), 0);
    std::fs::remove_file(d.join("good.vol")).unwrap();
    std::fs::create_dir(d.join("good.vol")).unwrap();
    let (code, recs) = run("good", "1", &[]);
    assert_eq!(code, 2, "{recs:#?}");
    assert_eq!(recs[0]["error"]["kind"], "not_regular", "{recs:#?}");
    assert_eq!(std::fs::read_dir(d.join("good.vol")).unwrap().count(), 0);
    std::fs::remove_dir(d.join("good.vol")).unwrap();
    // A regular DEST is replaced only by a checked volume.
    std::fs::write(d.join("good.vol"), b"old").unwrap();
    // Not raw after conversion: a qemu-img whose convert ignores `-O raw`
    // (the real qemu-img, told qcow2) makes the last check refuse.
    let real = String::from_utf8(
        Command::new("bash")
            .args(["-c", "command -v qemu-img"])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    let wrap = d.join("wrap");
    std::fs::create_dir(&wrap).unwrap();
    std::fs::write(
        wrap.join("qemu-img"),
        format!(
            "#!/bin/bash\nargs=(\"$@\")\nif [ \"$1\" = convert ]; then\n  for i in \"${{!args[@]}}\"; do\n    [ \"${{args[$i]}}\" = -O ] && args[$((i + 1))]=qcow2\n  done\nfi\nexec {} \"${{args[@]}}\"\n",
            real.trim()
        ),
    )
    .unwrap();
    std::fs::set_permissions(
        wrap.join("qemu-img"),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let path = format!("{}:{}", wrap.display(), tools_path());
    let (code, recs) = run("good", "1", &[("PATH", &path)]);
    assert_eq!(code, 1, "{recs:#?}");
    assert_eq!(recs[0]["info"]["format"], "qcow2");
    assert!(
        failures(&recs).contains(&"require_format".to_owned()),
        "{recs:#?}"
    );
    assert_eq!(
        std::fs::read(d.join("good.vol")).unwrap(),
        b"old",
        "DEST changed"
    );

    // Cinder's upload_volume (examples/upload-volume): the volume's format
    // declared (default raw), converted only when it differs, checked,
    // uploaded with a new id and verified.
    let upload_script = glance_server::workspace().join("examples/upload-volume");
    let volume = d.join("volume.raw");
    std::fs::write(&volume, bytes_of(12, 8 << 20)).unwrap();
    let scratch = d.join("tmp");
    std::fs::create_dir(&scratch).unwrap();
    let up_as = |vfmt: Option<&str>, vol: &Path, name: &str, fmt: &str| -> (i32, Vec<Value>) {
        let mut c = Command::new(&upload_script);
        if let Some(v) = vfmt {
            c.args(["--volume-format", v]);
        }
        c.arg(&g.url).arg(vol).args([name, fmt]);
        for h in AUTH {
            c.args(["--header", h]);
        }
        records_of(c.current_dir(d).env("PATH", &spied).env("TMPDIR", &scratch))
    };
    let up = |vol: &Path, name: &str, fmt: &str| up_as(None, vol, name, fmt);
    let (code, recs) = up(&volume, "vol-raw", "raw");
    assert_eq!(code, 0, "{recs:#?}");
    assert_eq!(recs[0]["load"]["action"], "created");
    let img = curl(&[&format!(
        "{}/v2/images/{}",
        g.url,
        recs[0]["image"]["id"].as_str().unwrap()
    )]);
    assert_eq!(img["status"], "active");
    assert_eq!(img["size"], 8 << 20);
    let (code, recs) = up(&volume, "vol-qcow2", "qcow2");
    assert_eq!(code, 0, "{recs:#?}");
    let id = recs[0]["image"]["id"].as_str().unwrap().to_owned();
    assert_eq!(
        curl(&[&format!("{}/v2/images/{id}", g.url)])["disk_format"],
        "qcow2"
    );
    let got = d.join("got.qcow2");
    let st = Command::new("curl")
        .args(["-s", "-f", "-o"])
        .arg(&got)
        .args(AUTH.iter().flat_map(|h| ["-H", h]))
        .arg(format!("{}/v2/images/{id}/file", g.url))
        .status()
        .unwrap();
    assert!(st.success());
    let same = Command::new("qemu-img")
        .args(["compare", "-q", "-f", "qcow2", "-F", "raw"])
        .arg(&got)
        .arg(&volume)
        .status()
        .unwrap();
    assert!(same.success(), "the uploaded qcow2 is not the volume");
    // A qcow2 volume (declared by its driver) uploaded as raw: converted
    // with -f qcow2, the volume's data.
    qemu(&[
        "convert",
        "-q",
        "-f",
        "raw",
        "-O",
        "qcow2",
        "volume.raw",
        "volume.qcow2",
    ]);
    let (code, recs) = up_as(Some("qcow2"), &d.join("volume.qcow2"), "vol-q2r", "raw");
    assert_eq!(code, 0, "{recs:#?}");
    let id = recs[0]["image"]["id"].as_str().unwrap().to_owned();
    let got = d.join("got.raw");
    let st = Command::new("curl")
        .args(["-s", "-f", "-o"])
        .arg(&got)
        .args(AUTH.iter().flat_map(|h| ["-H", h]))
        .arg(format!("{}/v2/images/{id}/file", g.url))
        .status()
        .unwrap();
    assert!(st.success());
    assert!(std::fs::read(&got).unwrap() == std::fs::read(&volume).unwrap());
    // A volume with a backing file is refused before anything is created.
    let before = curl(&[&format!("{}/v2/images", g.url)])["images"]
        .as_array()
        .unwrap()
        .len();
    let (code, recs) = up_as(
        Some("qcow2"),
        &d.join("backed.qcow2"),
        "vol-backed",
        "qcow2",
    );
    assert_eq!(code, 1, "{recs:#?}");
    assert!(
        failures(&recs).contains(&"backing_file".to_owned()),
        "{recs:#?}"
    );
    // CVE-2015-1850's class: a raw volume (the default) whose guest wrote a
    // qcow2 header with a backing file naming a host file. Whatever the
    // image's format and whatever the volume is declared as, it is refused
    // before anything is converted or created, and the host file's bytes
    // are in no file the script wrote, not in its output and not in
    // Glance's store.
    std::fs::remove_dir_all(&spy).unwrap();
    std::fs::create_dir(&spy).unwrap();
    let vol = d.join("guest.img");
    std::fs::copy(d.join("secret.qcow2"), &vol).unwrap();
    let vol_bytes = std::fs::read(&vol).unwrap();
    for (vfmt, fmt, want) in [
        (None, "raw", "format_mismatch"),
        (None, "qcow2", "format_mismatch"),
        (Some("raw"), "vmdk", "format_mismatch"),
        (Some("qcow2"), "raw", "backing_file"),
    ] {
        let (code, recs) = up_as(vfmt, &vol, "vol-guest", fmt);
        assert_eq!(code, 1, "{vfmt:?} {fmt}: {recs:#?}");
        assert!(failures(&recs).contains(&want.to_owned()), "{recs:#?}");
        assert!(
            !serde_json::to_string(&recs)
                .unwrap()
                .contains(std::str::from_utf8(&marker).unwrap())
        );
    }
    assert!(std::fs::read(&vol).unwrap() == vol_bytes);
    assert_eq!(
        std::fs::read_dir(&spy).unwrap().count(),
        4,
        "temporary directories kept"
    );
    assert_eq!(leaks(d, &marker), Vec::<PathBuf>::new());
    assert_eq!(std::fs::read_dir(&scratch).unwrap().count(), 0);
    assert_eq!(
        holding(&g.state().join("images"), &marker),
        Vec::<PathBuf>::new(),
        "the host file reached Glance"
    );
    let after = curl(&[&format!("{}/v2/images", g.url)])["images"]
        .as_array()
        .unwrap()
        .len();
    assert_eq!(before, after);
}

/// A directory whose `rm` first copies every directory it is asked to
/// remove into `spy/`: the scripts remove their temporary directory on
/// exit, so this keeps every file they wrote there for the test to scan.
fn spy_rm(dir: &Path) -> (PathBuf, PathBuf) {
    let bin = dir.join("spy-bin");
    let spy = dir.join("spy");
    std::fs::create_dir_all(&bin).unwrap();
    std::fs::create_dir_all(&spy).unwrap();
    let rm = std::env::split_paths(&std::env::var_os("PATH").unwrap())
        .map(|d| d.join("rm"))
        .find(|p| p.is_file())
        .unwrap();
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

/// The files under `dir` holding `needle`, but the host file itself.
fn leaks(dir: &Path, needle: &[u8]) -> Vec<PathBuf> {
    holding(dir, needle)
        .into_iter()
        .filter(|p| p.file_name() != Some("secret.txt".as_ref()))
        .collect()
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
