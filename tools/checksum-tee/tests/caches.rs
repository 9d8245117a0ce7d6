//! Filling the Glance image cache and Nova's `_base` with their own state
//! machines: the Glance caching iterator's outcomes (upstream
//! glance/tests/unit/test_image_cache.py: checksum verified, mismatch,
//! failed read, consumer stopping early) and Nova's lock, as pipes.
#![cfg(test)]

use serde_json::Value;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Output, Stdio};

mod support;

use support::{BIN, run};
const HELLO_MD5: &str = "5d41402abc4b2a76b9719d911017c592";

/// `--expect md5:.. --expect-size N` for `bytes`: a cache fill commits only
/// what was verified against a digest and a size.
fn verified_by(bytes: &[u8]) -> Vec<String> {
    let mut h = system::hash::MultiHasher::new(&[system::hash::Algorithm::Md5]);
    h.update(&bytes::Bytes::copy_from_slice(bytes));
    let md5 = h.finish().remove(0).1;
    vec![
        "--expect".into(),
        format!("md5:{md5}"),
        "--expect-size".into(),
        bytes.len().to_string(),
    ]
}

/// `args` then the expectations of `bytes`.
fn with_expect(args: &[&str], bytes: &[u8]) -> Vec<String> {
    let mut v: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
    v.extend(verified_by(bytes));
    v
}

/// Run with the expectations of `stdin` appended.
fn run_verified(dir: &Path, args: &[&str], stdin: &[u8]) -> Output {
    let v = with_expect(args, stdin);
    let refs: Vec<&str> = v.iter().map(String::as_str).collect();
    run(dir, &refs, stdin)
}

fn record(out: &Output) -> Value {
    let text = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(text.lines().last().unwrap_or("{}")).unwrap()
}

/// A Glance cache as glance-api's sqlite driver leaves it.
fn glance_cache(dir: &Path) {
    std::fs::create_dir_all(dir.join("cache/queue")).unwrap();
    let st = Command::new("python3")
        .args([
            "-c",
            "import sqlite3,sys; c=sqlite3.connect(sys.argv[1]); c.execute('CREATE TABLE cached_images (image_id TEXT PRIMARY KEY, last_accessed REAL DEFAULT 0.0, last_modified REAL DEFAULT 0.0, size INTEGER DEFAULT 0, hits INTEGER DEFAULT 0, checksum TEXT)'); c.commit()",
        ])
        .arg(dir.join("cache/cache.db"))
        .status()
        .unwrap();
    assert!(st.success());
}

fn rows(dir: &Path) -> String {
    let out = Command::new("python3")
        .args([
            "-c",
            "import sqlite3,sys; print([(r[0], r[3], r[4], r[1] == r[2] and r[1] > 0) for r in sqlite3.connect(sys.argv[1]).execute('select image_id, last_accessed, last_modified, size, hits from cached_images order by image_id')])",
        ])
        .arg(dir.join("cache/cache.db"))
        .output()
        .unwrap();
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[test]
fn glance_fill_commits_verified_data_with_its_metadata_row() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    glance_cache(p);
    std::fs::write(p.join("cache/queue/img1"), b"").unwrap();
    let out = run(
        p,
        &[
            "--glance-cache",
            "cache",
            "--image-id",
            "img1",
            "--expect",
            &format!("md5:{HELLO_MD5}"),
            "--expect-size",
            "5",
        ],
        b"hello",
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r = record(&out);
    assert_eq!(r["path"], "cache/img1");
    assert_eq!(r["checksums"]["state"], "committed");
    assert_eq!(r["checksums"]["metadata"], true);
    assert_eq!(std::fs::read(p.join("cache/img1")).unwrap(), b"hello");
    assert!(
        names(&p.join("cache/queue")).is_empty(),
        "queue marker removed"
    );
    assert!(names(&p.join("cache/incomplete")).is_empty());
    // Glance's row: hits 0, size, last_accessed = last_modified = now.
    assert_eq!(rows(p), "[('img1', 5, 0, True)]");
    // Never replaced.
    let again = run_verified(
        p,
        &["--glance-cache", "cache", "--image-id", "img1"],
        b"other",
    );
    assert_eq!(again.status.code(), Some(2));
    assert_eq!(record(&again)["error"]["kind"], "already_exists");
    assert_eq!(std::fs::read(p.join("cache/img1")).unwrap(), b"hello");
}

#[test]
fn glance_fill_moves_failures_to_invalid() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    glance_cache(p);
    // test_checksum_v1_mismatch: checksum verification failed.
    let bad = run(
        p,
        &[
            "-q",
            "--glance-cache",
            "cache",
            "--image-id",
            "bad",
            "--expect",
            &format!("md5:{HELLO_MD5}"),
            "--expect-size",
            "5",
        ],
        b"hellx",
    );
    assert_eq!(bad.status.code(), Some(1));
    assert_eq!(record(&bad)["checksums"]["state"], "invalid");
    assert_eq!(
        std::fs::read(p.join("cache/invalid/bad")).unwrap(),
        b"hellx"
    );
    assert!(!p.join("cache/bad").exists());
    // A short stream (Glance's "Corrupt image download").
    let short = run(
        p,
        &[
            "-q",
            "--glance-cache",
            "cache",
            "--image-id",
            "short",
            "--expect-size",
            "10",
            "--expect",
            &format!("md5:{HELLO_MD5}"),
        ],
        b"hello",
    );
    assert_eq!(short.status.code(), Some(2));
    assert!(p.join("cache/invalid/short").exists());
    // test_gate_caching_iter_fall_off_end / consumer stops early: the
    // reader of the bytes leaves; nothing is committed.
    let big: Vec<u8> = (0..8u32 << 20).map(|i| i as u8).collect();
    std::fs::write(p.join("big"), &big).unwrap();
    let sh = format!(
        "'{BIN}' -q --glance-cache cache --image-id early --tee --report r.json {} < big | head -c 100 > /dev/null; echo ${{PIPESTATUS[0]}}",
        verified_by(&big).join(" ")
    );
    let out = Command::new("bash")
        .arg("-c")
        .arg(&sh)
        .current_dir(p)
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "2");
    assert!(!p.join("cache/early").exists());
    assert!(p.join("cache/invalid/early").exists());
    // No rows for any of them.
    assert_eq!(rows(p), "[]");
    assert!(names(&p.join("cache/incomplete")).is_empty());
}

#[test]
fn glance_fill_refusals() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    glance_cache(p);
    // Another download in progress: busy, exit 75, nothing touched.
    std::fs::create_dir_all(p.join("cache/incomplete")).unwrap();
    std::fs::write(p.join("cache/incomplete/img"), b"partial").unwrap();
    let busy = run_verified(
        p,
        &["--glance-cache", "cache", "--image-id", "img"],
        b"hello",
    );
    assert_eq!(busy.status.code(), Some(75));
    assert_eq!(record(&busy)["error"]["kind"], "busy");
    assert_eq!(
        std::fs::read(p.join("cache/incomplete/img")).unwrap(),
        b"partial"
    );
    // Hostile ids never become paths.
    for id in ["../x", ".", "a/b", ""] {
        let r = run_verified(p, &["--glance-cache", "cache", "--image-id", id], b"hello");
        assert_eq!(r.status.code(), Some(2), "{id:?}");
        assert!(
            record(&r)["error"]["message"]
                .as_str()
                .unwrap()
                .contains("cache file name"),
            "{id:?}: {}",
            String::from_utf8_lossy(&r.stdout)
        );
    }
    // Without cache.db the driver is xattr or centralized_db: say which.
    let e = tempfile::tempdir().unwrap();
    std::fs::create_dir(e.path().join("cache")).unwrap();
    let r = run_verified(
        e.path(),
        &["--glance-cache", "cache", "--image-id", "x"],
        b"hello",
    );
    assert_eq!(r.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&r.stderr).contains("--cache-driver"));
    let r = run_verified(
        e.path(),
        &[
            "--glance-cache",
            "cache",
            "--image-id",
            "x",
            "--cache-driver",
            "centralized-db",
        ],
        b"hello",
    );
    assert_eq!(r.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&r.stderr).contains("never be pruned"));
    let r = run_verified(
        e.path(),
        &[
            "--glance-cache",
            "cache",
            "--image-id",
            "x",
            "--cache-driver",
            "centralized-db",
            "--no-metadata",
        ],
        b"hello",
    );
    assert_eq!(r.status.code(), Some(0));
    assert_eq!(record(&r)["checksums"]["metadata"], false);
}

#[test]
fn glance_xattr_driver_sets_hits() {
    let e = tempfile::tempdir().unwrap();
    std::fs::create_dir(e.path().join("cache")).unwrap();
    let r = run_verified(
        e.path(),
        &[
            "--glance-cache",
            "cache",
            "--image-id",
            "x",
            "--cache-driver",
            "xattr",
        ],
        b"hello",
    );
    if r.status.code() == Some(2)
        && String::from_utf8_lossy(&r.stderr).contains("Operation not supported")
    {
        eprintln!("skipping: this file system has no user xattrs");
        return;
    }
    assert_eq!(
        r.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&r.stderr)
    );
    let out = Command::new("python3")
        .args([
            "-c",
            "import os,sys; print(os.getxattr(sys.argv[1], 'user.hits').decode())",
        ])
        .arg(e.path().join("cache/x"))
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "0");
}

const ID: &str = "fd0cb2f1-8375-44c9-b1f4-3e1f4c4a8ef0";
const NAME: &str = "0d5e6b61602d758984b3bf038267614d6016eb2a";

fn nova(dir: &Path) {
    std::fs::create_dir_all(dir.join("inst/_base")).unwrap();
}

#[test]
fn nova_fill_under_the_lock_with_sidecar() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    nova(p);
    // A .part left by a download that died is replaced under the lock.
    std::fs::write(p.join(format!("inst/_base/{NAME}.part")), b"stale").unwrap();
    let out = run_verified(
        p,
        &["--nova-base", "inst", "--image-id", ID, "--sidecar"],
        b"raw disk bytes",
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r = record(&out);
    assert_eq!(r["checksums"]["nova_cache_name"], NAME);
    assert_eq!(r["checksums"]["state"], "committed");
    assert_eq!(r["checksums"]["format"], "raw");
    assert_eq!(r["checksums"]["removed_stale_part"], true);
    assert_eq!(r["path"], format!("inst/_base/{NAME}"));
    assert_eq!(
        std::fs::read(p.join(format!("inst/_base/{NAME}"))).unwrap(),
        b"raw disk bytes"
    );
    assert!(p.join(format!("inst/locks/nova-{NAME}")).exists());
    let info: Value =
        serde_json::from_slice(&std::fs::read(p.join(format!("inst/_base/{NAME}.info"))).unwrap())
            .unwrap();
    assert_eq!(info["sha1"], r["checksums"]["sha1"]);
    assert!(info["sha1-timestamp"].as_f64().unwrap() > 1.7e9);
    assert_eq!(
        names(&p.join("inst/_base")),
        [NAME.to_string(), format!("{NAME}.info")]
    );
    // Never replaced.
    let again = run_verified(p, &["--nova-base", "inst", "--image-id", ID], b"x");
    assert_eq!(record(&again)["error"]["kind"], "already_exists");
}

#[test]
fn nova_fill_refuses_non_raw_unless_allowed() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    nova(p);
    let qcow2 = std::fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../tests/fixtures/hostile/images/clean-v3.qcow2"),
    )
    .unwrap();
    let r = run_verified(p, &["-q", "--nova-base", "inst", "--image-id", ID], &qcow2);
    assert_eq!(r.status.code(), Some(2));
    assert!(
        record(&r)["error"]["message"]
            .as_str()
            .unwrap()
            .contains("qcow2")
    );
    assert!(
        names(&p.join("inst/_base")).is_empty(),
        "nothing left behind"
    );
    let r = run(
        p,
        &[
            "--nova-base",
            "inst",
            "--image-id",
            ID,
            "--allow-format",
            "qcow2",
            "--unverified",
        ],
        &qcow2,
    );
    assert_eq!(r.status.code(), Some(0));
    assert_eq!(record(&r)["checksums"]["format"], "qcow2");
}

#[test]
fn nova_lock_held_by_python_means_busy_then_success() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    nova(p);
    std::fs::create_dir(p.join("inst/locks")).unwrap();
    let lock = p.join(format!("inst/locks/nova-{NAME}"));
    // Nova's way: fasteners opens in append mode and takes lockf.
    let mut holder = Command::new("python3")
        .args([
            "-c",
            "import fcntl,sys; f=open(sys.argv[1],'a'); fcntl.lockf(f, fcntl.LOCK_EX); print('locked', flush=True); sys.stdin.read()",
        ])
        .arg(&lock)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(holder.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line.trim(), "locked");
    let busy = run_verified(
        p,
        &[
            "--nova-base",
            "inst",
            "--image-id",
            ID,
            "--lock-timeout",
            "0",
        ],
        b"data",
    );
    assert_eq!(busy.status.code(), Some(75));
    assert_eq!(record(&busy)["error"]["kind"], "busy");
    assert!(names(&p.join("inst/_base")).is_empty());
    // Waiting: released while we wait, then we write.
    let mut waiter = Command::new(BIN)
        .args(with_expect(
            &[
                "--nova-base",
                "inst",
                "--image-id",
                ID,
                "--lock-timeout",
                "20",
            ],
            b"data",
        ))
        .current_dir(p)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    waiter.stdin.take().unwrap().write_all(b"data").unwrap();
    std::thread::sleep(std::time::Duration::from_millis(300));
    drop(holder.stdin.take()); // the Python holder exits, releasing the lock
    holder.wait().unwrap();
    let out = waiter.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(
        std::fs::read(p.join(format!("inst/_base/{NAME}"))).unwrap(),
        b"data"
    );
}

#[test]
fn nova_fill_needs_a_real_instances_path() {
    let d = tempfile::tempdir().unwrap();
    let r = run_verified(
        d.path(),
        &["--nova-base", "nowhere", "--image-id", ID],
        b"x",
    );
    assert_eq!(r.status.code(), Some(2));
    assert_eq!(record(&r)["error"]["kind"], "refused");
}

/// Deterministic pseudo-random bytes.
fn data(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// `script` under bash in `dir`.
fn bash(dir: &Path, script: &str) -> Output {
    Command::new("bash")
        .arg("-c")
        .arg(script)
        .current_dir(dir)
        .output()
        .unwrap()
}

#[test]
fn truncated_glance_fill_is_refused_unless_verified_or_unverified_said() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    glance_cache(p);
    let full = data(3 << 20, 11);
    std::fs::write(p.join("data"), &full).unwrap();
    let exp = verified_by(&full).join(" ");
    // The stream: the producer dies after 1000 bytes.
    let trunc = "(head -c 1000 data; exit 1)";
    let out = bash(
        p,
        &format!("{trunc} | '{BIN}' -q --glance-cache cache --image-id X"),
    );
    assert_eq!(out.status.code(), Some(2));
    let r = record(&out);
    assert_eq!(r["error"]["kind"], "refused", "{r}");
    assert_eq!(r["checksums"]["state"], "refused");
    assert!(!p.join("cache/X").exists());
    assert!(!p.join("cache/incomplete/X").exists());
    assert!(!p.join("cache/invalid/X").exists());
    assert_eq!(rows(p), "[]");
    // A digest alone, or a size alone, is not enough.
    for half in [
        format!("--expect-size {}", full.len()),
        verified_by(&full)[..2].join(" "),
    ] {
        let out = bash(
            p,
            &format!("{trunc} | '{BIN}' -q --glance-cache cache --image-id X {half}"),
        );
        assert_eq!(record(&out)["error"]["kind"], "refused", "{half}");
    }
    // The same truncated stream checked against the image: invalid/, no row.
    let out = bash(
        p,
        &format!("{trunc} | '{BIN}' -q --glance-cache cache --image-id X {exp}"),
    );
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(record(&out)["checksums"]["state"], "invalid");
    assert!(!p.join("cache/X").exists());
    assert_eq!(
        std::fs::read(p.join("cache/invalid/X")).unwrap().len(),
        1000
    );
    assert_eq!(rows(p), "[]");
    // The whole stream with a wrong size, either way: invalid/, no row.
    for (size, code) in [(full.len() + 1, 2), (full.len() - 1, 1)] {
        let out = bash(
            p,
            &format!(
                "'{BIN}' -q --glance-cache cache --image-id X {} --expect-size {size} < data",
                verified_by(&full)[..2].join(" ")
            ),
        );
        assert_eq!(out.status.code(), Some(code), "size {size}");
        let r = record(&out);
        assert_eq!(r["checksums"]["state"], "invalid", "{r}");
        assert_eq!(r["checksums"]["mismatch"][0], "size", "{r}");
        assert!(!p.join("cache/X").exists());
        assert!(p.join("cache/invalid/X").exists());
        assert_eq!(rows(p), "[]");
    }
    // The right digest and size: committed, with its row.
    let out = bash(
        p,
        &format!("'{BIN}' -q --glance-cache cache --image-id X -a md5 {exp} < data"),
    );
    assert_eq!(out.status.code(), Some(0));
    let r = record(&out);
    // Glance's multihash is computed in Glance's mode, whatever -a says.
    assert_eq!(r["checksums"]["os_hash_algo"], "sha512");
    assert_eq!(r["checksums"]["os_hash_value"].as_str().unwrap().len(), 128);
    assert_eq!(r["checksums"]["state"], "committed");
    assert_eq!(r["checksums"]["verified"], true);
    assert!(std::fs::read(p.join("cache/X")).unwrap() == full);
    assert_eq!(rows(p), format!("[('X', {}, 0, True)]", full.len()));
    // --unverified: the operator's explicit choice, said in the record.
    let out = bash(
        p,
        &format!("{trunc} | '{BIN}' -q --glance-cache cache --image-id Y --unverified"),
    );
    assert_eq!(out.status.code(), Some(0));
    let r = record(&out);
    assert_eq!(r["checksums"]["state"], "committed");
    assert!(r["checksums"]["verified"].is_null());
    assert_eq!(std::fs::read(p.join("cache/Y")).unwrap().len(), 1000);
    assert!(names(&p.join("cache/incomplete")).is_empty());
}

#[test]
fn truncated_nova_fill_is_refused_unless_verified_or_unverified_said() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    nova(p);
    let full = data(3 << 20, 12);
    std::fs::write(p.join("data"), &full).unwrap();
    let exp = verified_by(&full).join(" ");
    let trunc = "(head -c 1000 data; exit 1)";
    let fill = format!("'{BIN}' -q --nova-base inst --image-id {ID}");
    let out = bash(p, &format!("{trunc} | {fill}"));
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(record(&out)["error"]["kind"], "refused");
    assert!(names(&p.join("inst/_base")).is_empty(), "no file, no .part");
    let out = bash(p, &format!("{trunc} | {fill} {exp}"));
    assert_eq!(out.status.code(), Some(2));
    assert!(names(&p.join("inst/_base")).is_empty());
    for (size, code) in [(full.len() + 1, 2), (full.len() - 1, 1)] {
        let out = bash(
            p,
            &format!(
                "{fill} {} --expect-size {size} < data",
                verified_by(&full)[..2].join(" ")
            ),
        );
        assert_eq!(out.status.code(), Some(code), "size {size}");
        assert_eq!(record(&out)["checksums"]["state"], "invalid");
        assert!(names(&p.join("inst/_base")).is_empty(), "size {size}");
    }
    let out = bash(p, &format!("{fill} {exp} < data"));
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(record(&out)["checksums"]["verified"], true);
    assert!(std::fs::read(p.join(format!("inst/_base/{NAME}"))).unwrap() == full);
    std::fs::remove_file(p.join(format!("inst/_base/{NAME}"))).unwrap();
    let out = bash(p, &format!("{trunc} | {fill} --unverified"));
    assert_eq!(out.status.code(), Some(0));
    let r = record(&out);
    assert_eq!(r["checksums"]["state"], "committed");
    assert!(r["checksums"]["verified"].is_null());
    assert_eq!(names(&p.join("inst/_base")), [NAME.to_string()]);
}

#[test]
fn best_effort_cache_passes_every_byte_when_the_cache_refuses() {
    let full = data((2 << 20) + 333, 13);
    type Case = (&'static str, fn(&Path), i32, &'static str);
    let cases: [Case; 5] = [
        (
            "busy",
            |p| std::fs::write(p.join("cache/incomplete/img"), b"partial").unwrap(),
            75,
            "busy",
        ),
        (
            "already cached",
            |p| std::fs::write(p.join("cache/img"), b"cached").unwrap(),
            2,
            "already_exists",
        ),
        (
            "incomplete/ unusable",
            |p| {
                std::fs::remove_dir(p.join("cache/incomplete")).unwrap();
                std::fs::write(p.join("cache/incomplete"), b"not a directory").unwrap();
            },
            2,
            "refused",
        ),
        (
            "no cache.db",
            |p| std::fs::remove_file(p.join("cache/cache.db")).unwrap(),
            2,
            "refused",
        ),
        ("unverified", |_| {}, 2, "refused"),
    ];
    for (what, setup, code, kind) in cases {
        let d = tempfile::tempdir().unwrap();
        let p = d.path();
        glance_cache(p);
        std::fs::create_dir(p.join("cache/incomplete")).unwrap();
        setup(p);
        let mut args = vec![
            "-q",
            "--glance-cache",
            "cache",
            "--image-id",
            "img",
            "--tee",
            "--best-effort-cache",
            "--report",
            "r.json",
        ];
        let exp = verified_by(&full);
        if what != "unverified" {
            args.extend(exp.iter().map(String::as_str));
        }
        let out = run(p, &args, &full);
        assert!(out.stdout == full, "{what}: stdout is not the input");
        assert_eq!(out.status.code(), Some(code), "{what}");
        let r: Value = serde_json::from_slice(&std::fs::read(p.join("r.json")).unwrap()).unwrap();
        assert_eq!(r["checksums"]["state"], "refused", "{what}: {r}");
        assert_eq!(r["checksums"]["bytes"], full.len() as u64, "{what}");
        assert_eq!(r["error"]["kind"], kind, "{what}: {r}");
        assert!(!p.join("cache/invalid/img").exists(), "{what}");
        assert_eq!(rows_or_none(p), "[]", "{what}");
        if what == "already cached" {
            assert_eq!(std::fs::read(p.join("cache/img")).unwrap(), b"cached");
        }
        // Without --best-effort-cache no byte passes, as before.
        let mut plain = args.clone();
        plain.retain(|a| *a != "--best-effort-cache");
        let out = run(p, &plain, &full);
        assert!(out.stdout.is_empty(), "{what}");
    }
}

/// The rows, or `[]` when there is no cache.db.
fn rows_or_none(dir: &Path) -> String {
    if dir.join("cache/cache.db").exists() {
        rows(dir)
    } else {
        "[]".into()
    }
}
