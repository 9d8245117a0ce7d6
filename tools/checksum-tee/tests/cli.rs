//! checksum-tee as users run it: digests agree with coreutils and Python's
//! hashlib, bytes pass through exactly, files are committed only when they
//! verify, and every failure leaves nothing under the final name.
#![cfg(test)]

use serde_json::Value;
use std::io::{Read, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

mod support;

use support::{BIN, run};
const CHUNK: usize = 1 << 20;

fn record(bytes: &[u8]) -> Value {
    let text = String::from_utf8_lossy(bytes);
    let line = text
        .lines()
        .last()
        .unwrap_or_else(|| panic!("no record in {text:?}"));
    serde_json::from_str(line).unwrap()
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

fn tool_sum(tool: &str, file: &Path) -> String {
    let out = Command::new(tool).arg(file).output().unwrap();
    String::from_utf8(out.stdout)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .to_owned()
}

fn python_sum(alg: &str, file: &Path) -> String {
    let out = Command::new("python3")
        .args([
            "-c",
            "import hashlib,sys; print(hashlib.new(sys.argv[1], open(sys.argv[2],'rb').read()).hexdigest())",
            alg,
        ])
        .arg(file)
        .output()
        .unwrap();
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

#[test]
fn tee_is_byte_exact_and_digests_agree_with_coreutils_and_hashlib() {
    let dir = tempfile::tempdir().unwrap();
    for (i, len) in [0, 1, 511, CHUNK - 1, CHUNK, CHUNK + 1, 3 * CHUNK + 17]
        .into_iter()
        .enumerate()
    {
        let bytes = data(len, i as u64);
        let file = dir.path().join(format!("f{i}"));
        std::fs::write(&file, &bytes).unwrap();
        let out = run(
            dir.path(),
            &[
                "-a",
                "md5,sha1,sha224,sha256,sha384,sha512,sha3_256,sha3_384,sha3_512",
            ],
            &bytes,
        );
        assert_eq!(out.status.code(), Some(0));
        assert!(out.stdout == bytes, "tee changed the bytes (len {len})");
        let r = record(&out.stderr);
        let c = &r["checksums"];
        assert_eq!(c["bytes"], len as u64);
        assert_eq!(c["state"], "passed");
        assert!(c["verified"].is_null());
        for (alg, tool) in [
            ("md5", "md5sum"),
            ("sha1", "sha1sum"),
            ("sha224", "sha224sum"),
            ("sha256", "sha256sum"),
            ("sha384", "sha384sum"),
            ("sha512", "sha512sum"),
        ] {
            assert_eq!(c[alg], tool_sum(tool, &file), "{alg}, len {len}");
        }
        for alg in ["sha3_256", "sha3_384", "sha3_512"] {
            assert_eq!(c[alg], python_sum(alg, &file), "{alg}, len {len}");
        }
        assert_eq!(c["os_hash_algo"], "sha512");
        assert_eq!(c["os_hash_value"], c["sha512"]);
        // --verify on the same file agrees too.
        let v = run(
            dir.path(),
            &["--verify", "-a", "md5,sha1,sha512", file.to_str().unwrap()],
            b"",
        );
        let v = record(&v.stdout);
        for alg in ["md5", "sha1", "sha512"] {
            assert_eq!(v["checksums"][alg], c[alg]);
        }
        assert_eq!(v["checksums"]["state"], "verified_in_place");
    }
}

#[test]
fn report_destination() {
    let dir = tempfile::tempdir().unwrap();
    let out = run(dir.path(), &["--report", "r.json"], b"abc");
    assert_eq!(out.stdout, b"abc");
    assert!(out.stderr.is_empty());
    let r: Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("r.json")).unwrap()).unwrap();
    assert_eq!(r["checksums"]["md5"], "900150983cd24fb0d6963f7d28e17f72");
    // The report cannot go to stdout when stdout carries the data.
    let bad = run(dir.path(), &["--report", "-"], b"abc");
    assert_eq!(bad.status.code(), Some(2));
    // Not one byte of data: only the usage error record.
    assert_eq!(record(&bad.stdout)["error"]["kind"], "usage");
    assert_eq!(String::from_utf8_lossy(&bad.stdout).lines().count(), 1);
    // Image id: Nova's cache name is the SHA-1 of the id string.
    let out = run(
        dir.path(),
        &["--image-id", "fd0cb2f1-8375-44c9-b1f4-3e1f4c4a8ef0"],
        b"",
    );
    let r = record(&out.stderr);
    assert_eq!(
        r["checksums"]["nova_cache_name"],
        "0d5e6b61602d758984b3bf038267614d6016eb2a"
    );
}

#[test]
fn expectations_in_tee_mode_pass_all_bytes_and_exit_one() {
    let dir = tempfile::tempdir().unwrap();
    let out = run(
        dir.path(),
        &["--expect", "md5:00000000000000000000000000000000"],
        b"abc",
    );
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(out.stdout, b"abc");
    let r = record(&out.stderr);
    assert_eq!(r["checksums"]["verified"], false);
    assert_eq!(r["checksums"]["mismatch"], serde_json::json!(["md5"]));
    let ok = run(
        dir.path(),
        &[
            "--expect",
            "MD5:900150983CD24FB0D6963F7D28E17F72",
            "--expect-size",
            "3",
        ],
        b"abc",
    );
    assert_eq!(ok.status.code(), Some(0));
    assert_eq!(record(&ok.stderr)["checksums"]["verified"], true);
    // Bad expectations are usage errors.
    for bad in [
        ["--expect", "md5:xyz"],
        ["--expect", "crc:00"],
        ["--expect", "nocolon"],
    ] {
        assert_eq!(run(dir.path(), &bad, b"").status.code(), Some(2), "{bad:?}");
    }
}

#[test]
fn sink_commits_only_what_verifies() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path();
    let bytes = data(2 * CHUNK + 5, 9);
    let md5 = {
        std::fs::write(p.join("src"), &bytes).unwrap();
        tool_sum("md5sum", &p.join("src"))
    };
    let out = run(
        p,
        &[
            "-o",
            "a.img",
            "-o",
            "b.img",
            "--expect",
            &format!("md5:{md5}"),
        ],
        &bytes,
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r = record(&out.stdout);
    assert_eq!(r["path"], "a.img");
    assert_eq!(r["checksums"]["state"], "committed");
    assert_eq!(r["checksums"]["verified"], true);
    assert!(std::fs::read(p.join("a.img")).unwrap() == bytes);
    assert!(std::fs::read(p.join("b.img")).unwrap() == bytes);
    // Never replaced without --force; replaced with it.
    let again = run(p, &["-o", "a.img"], b"other");
    assert_eq!(again.status.code(), Some(2));
    assert!(std::fs::read(p.join("a.img")).unwrap() == bytes);
    let forced = run(p, &["-o", "a.img", "--force"], b"other");
    assert_eq!(forced.status.code(), Some(0));
    assert_eq!(std::fs::read(p.join("a.img")).unwrap(), b"other");
    // A mismatch commits nothing and leaves no temporary file.
    let bad = run(
        p,
        &[
            "-o",
            "c.img",
            "--expect",
            "md5:00000000000000000000000000000000",
        ],
        &bytes,
    );
    assert_eq!(bad.status.code(), Some(1));
    assert_eq!(record(&bad.stdout)["checksums"]["state"], "invalid");
    assert!(!p.join("c.img").exists());
    // A short stream is a failed read: error record, exit 2, nothing committed.
    let short = run(
        p,
        &["-o", "d.img", "--expect-size", "100"],
        b"only 20 bytes here..",
    );
    assert_eq!(short.status.code(), Some(2));
    let r = record(&short.stdout);
    assert_eq!(r["checksums"]["state"], "aborted");
    assert_eq!(r["error"]["detail"]["bytes_read"], 20);
    assert_eq!(r["error"]["detail"]["expected_size"], 100);
    assert!(!p.join("d.img").exists());
    let left: Vec<_> = std::fs::read_dir(p)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.'))
        .collect();
    assert!(left.is_empty(), "temporary files left: {left:?}");
}

#[test]
fn downstream_closing_early_commits_nothing_unless_drain() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path();
    let bytes = data(8 * CHUNK, 3);
    let input = p.join("input");
    std::fs::write(&input, &bytes).unwrap();
    let script = |extra: &str| {
        format!(
            "'{BIN}' -o out.img --tee --report r.json {extra} < input | head -c 10 > /dev/null; echo \"${{PIPESTATUS[0]}}\""
        )
    };
    let out = Command::new("bash")
        .arg("-c")
        .arg(script(""))
        .current_dir(p)
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "2");
    assert!(!p.join("out.img").exists());
    let r: Value = serde_json::from_slice(&std::fs::read(p.join("r.json")).unwrap()).unwrap();
    assert_eq!(r["checksums"]["state"], "aborted");
    let out = Command::new("bash")
        .arg("-c")
        .arg(script("--drain"))
        .current_dir(p)
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "0");
    assert!(std::fs::read(p.join("out.img")).unwrap() == bytes);
}

#[test]
fn write_errors_stop_or_are_skipped_with_best_effort() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path();
    let bytes = data(4 * CHUNK, 5);
    std::fs::write(p.join("input"), &bytes).unwrap();
    // A full disk, simulated with a file-size limit (SIGXFSZ ignored, so
    // the write fails with EFBIG as it would with ENOSPC).
    let sh = |args: &str| {
        Command::new("bash")
            .arg("-c")
            .arg(format!(
                "(trap '' XFSZ; ulimit -f 1024; exec '{BIN}' {args} < input 2> err) | cat > passed; exit ${{PIPESTATUS[0]}}"
            ))
            .current_dir(p)
            .status()
            .unwrap()
    };
    let st = sh("-o out.img");
    assert_eq!(st.code(), Some(2));
    assert!(!p.join("out.img").exists());
    // With --tee --best-effort-cache the bytes keep flowing to stdout.
    let st = sh("-o out.img --tee --best-effort-cache --report r.json");
    assert_eq!(st.code(), Some(2));
    assert!(
        std::fs::read(p.join("passed")).unwrap() == bytes,
        "stdout lost bytes"
    );
    assert!(!p.join("out.img").exists());
}

fn slow_producer_into(p: &Path, args: &[&str]) -> std::process::Child {
    // A producer that writes 1 MiB and then stalls.
    let mut child = Command::new(BIN)
        .args(args)
        .current_dir(p)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(&data(CHUNK + 7, 1)).unwrap();
    std::mem::forget(stdin); // keep the pipe open: the tool waits for more
    std::thread::sleep(Duration::from_millis(300));
    child
}

#[test]
fn sigterm_mid_stream_cleans_up_and_exits_143() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path();
    let mut child = slow_producer_into(p, &["-o", "out.img"]);
    let pid = child.id() as libc::pid_t;
    #[allow(unsafe_code)]
    // SAFETY: signalling our own child.
    unsafe {
        libc::kill(pid, libc::SIGTERM);
    }
    let st = child.wait().unwrap();
    assert_eq!(st.code(), Some(143));
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert!(err.contains("signal 15"), "{err}");
    let names: Vec<_> = std::fs::read_dir(p)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(names.is_empty(), "left behind: {names:?}");
}

#[test]
fn kill_9_mid_stream_never_leaves_a_final_file() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path();
    let mut child = slow_producer_into(p, &["-o", "out.img"]);
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(!p.join("out.img").exists());
    // Only a temporary file, named so tools can report it as stale.
    for e in std::fs::read_dir(p).unwrap() {
        let n = e.unwrap().file_name().to_string_lossy().into_owned();
        assert!(n.starts_with(".out.img.tmp-"), "{n}");
    }
}

#[test]
fn verify_records_from_glance_metadata() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path();
    std::fs::write(p.join("good.img"), b"abc").unwrap();
    std::fs::write(p.join("bad.img"), b"abd").unwrap();
    let sha512 = tool_sum("sha512sum", &p.join("good.img"));
    let image = |path: &str| {
        format!(
            r#"{{"path":"{path}","image":{{"id":"x","size":3,"checksum":"900150983cd24fb0d6963f7d28e17f72","os_hash_algo":"sha512","os_hash_value":"{sha512}"}},"dump":{{"kept":true}}}}"#
        )
    };
    let input = format!(
        "{}\n{}\n{{\"path\":\"good.img\"}}\n{{\"path\":\"missing.img\"}}\n{{\"error\":{{\"kind\":\"io\"}}}}\n",
        image("good.img"),
        image("bad.img")
    );
    let out = run(p, &["--verify"], input.as_bytes());
    assert_eq!(out.status.code(), Some(2));
    let recs: Vec<Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(recs.len(), 5);
    assert_eq!(recs[0]["checksums"]["verified"], true);
    assert_eq!(recs[0]["dump"]["kept"], true, "other facets are kept");
    assert_eq!(recs[1]["checksums"]["verified"], false);
    assert_eq!(
        recs[1]["checksums"]["mismatch"],
        serde_json::json!(["md5", "sha512"])
    );
    assert!(
        recs[2]["checksums"]["verified"].is_null(),
        "nothing expected: null, not true"
    );
    assert_eq!(recs[3]["error"]["kind"], "not_found");
    assert_eq!(
        recs[4]["error"]["kind"], "io",
        "upstream errors pass through"
    );
    // Only a mismatch: exit 1.
    let out = run(
        p,
        &["--verify"],
        format!("{}\n", image("bad.img")).as_bytes(),
    );
    assert_eq!(out.status.code(), Some(1));
}

#[test]
fn verify_spares_the_access_time() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("old.img");
    std::fs::write(&f, b"data").unwrap();
    let old = std::time::SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000_000);
    let file = std::fs::File::options().write(true).open(&f).unwrap();
    file.set_times(
        std::fs::FileTimes::new()
            .set_accessed(old)
            .set_modified(old),
    )
    .unwrap();
    drop(file);
    let out = run(dir.path(), &["--verify", "old.img"], b"");
    assert_eq!(record(&out.stdout)["checksums"]["noatime"], true);
    let md = std::fs::metadata(&f).unwrap();
    assert_eq!(md.accessed().unwrap(), old);
    assert_eq!(md.modified().unwrap(), old);
}

/// The digest keys of a `checksums` facet.
fn digest_keys(c: &Value) -> Vec<String> {
    let algs = [
        "md5", "sha1", "sha224", "sha256", "sha384", "sha512", "sha3_224", "sha3_256", "sha3_384",
        "sha3_512",
    ];
    let mut v: Vec<String> = c
        .as_object()
        .unwrap()
        .keys()
        .filter(|k| algs.contains(&k.as_str()))
        .cloned()
        .collect();
    v.sort();
    v
}

#[test]
fn algorithms_are_exactly_those_listed() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path();
    let out = run(p, &["-a", "md5,sha1"], b"abc");
    let c = &record(&out.stderr)["checksums"];
    assert_eq!(digest_keys(c), ["md5", "sha1"]);
    assert!(c.get("os_hash_algo").is_none(), "{c}");
    // The multihash when asked: added, and reported as such.
    let out = run(p, &["-a", "md5", "--os-hash-algo", "sha256"], b"abc");
    let c = &record(&out.stderr)["checksums"];
    assert_eq!(digest_keys(c), ["md5", "sha256"]);
    assert_eq!(c["os_hash_algo"], "sha256");
    assert_eq!(c["os_hash_value"], c["sha256"]);
    // Sink and verify alike.
    let out = run(p, &["-a", "sha1", "-o", "f"], b"abc");
    assert_eq!(digest_keys(&record(&out.stdout)["checksums"]), ["sha1"]);
    let out = run(p, &["--verify", "-a", "md5", "f"], b"");
    assert_eq!(digest_keys(&record(&out.stdout)["checksums"]), ["md5"]);
    // An expected digest is computed to be compared.
    let out = run(
        p,
        &[
            "--verify",
            "-a",
            "md5",
            "--expect",
            "sha1:a9993e364706816aba3e25717850c26c9cd0d89d",
            "f",
        ],
        b"",
    );
    let c = &record(&out.stdout)["checksums"];
    assert_eq!(digest_keys(c), ["md5", "sha1"]);
    assert_eq!(c["verified"], true);
}

/// Run with stdin from `/dev/zero`, under a 20 s guard.
fn run_on_zero(dir: &Path, args: &[&str]) -> std::process::Output {
    let mut child = Command::new(BIN)
        .args(args)
        .current_dir(dir)
        .stdin(std::fs::File::open("/dev/zero").unwrap())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let guard = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_secs(20));
        let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
    });
    let mut out = Vec::new();
    child.stdout.take().unwrap().read_to_end(&mut out).unwrap();
    let mut err = Vec::new();
    child.stderr.take().unwrap().read_to_end(&mut err).unwrap();
    let status = child.wait().unwrap();
    drop(guard);
    std::process::Output {
        status,
        stdout: out,
        stderr: err,
    }
}

#[test]
fn expect_size_stops_reading_once_past_it() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path();
    let mib = 1u64 << 20;
    let check = |c: &Value| {
        let bytes = c["bytes"].as_u64().unwrap();
        assert!(bytes > mib && bytes <= 3 * mib, "read {bytes} bytes");
        assert_eq!(c["verified"], false);
        assert_eq!(c["mismatch"], serde_json::json!(["size"]));
        assert!(
            c.get("md5").is_none(),
            "a prefix's digest is not reported: {c}"
        );
    };
    // The issue's case: verify a file that never ends.
    let out = run_on_zero(p, &["--verify", "--expect-size", "1M", "/dev/zero"]);
    assert_eq!(out.status.code(), Some(1));
    let r = record(&out.stdout);
    check(&r["checksums"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("size mismatch"));
    // A stream that never ends, in tee mode and into a file.
    let out = run_on_zero(p, &["--expect-size", "1M", "--report", "r.json"]);
    assert_eq!(out.status.code(), Some(1));
    let r: Value = serde_json::from_slice(&std::fs::read(p.join("r.json")).unwrap()).unwrap();
    check(&r["checksums"]);
    let out = run_on_zero(p, &["--expect-size", "1M", "-o", "z.img"]);
    assert_eq!(out.status.code(), Some(1));
    let c = &record(&out.stdout)["checksums"];
    check(c);
    assert_eq!(c["state"], "invalid");
    assert!(!p.join("z.img").exists());
    assert_eq!(std::fs::read_dir(p).unwrap().count(), 1, "only r.json");
    // With --tee --best-effort-cache every byte still reaches stdout; the
    // file is not committed.
    let bytes = data(3 * CHUNK, 4);
    let out = run(
        p,
        &[
            "-o",
            "b.img",
            "--tee",
            "--best-effort-cache",
            "--expect-size",
            "1M",
            "--report",
            "r.json",
        ],
        &bytes,
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout == bytes, "stdout lost bytes");
    assert!(!p.join("b.img").exists());
}
