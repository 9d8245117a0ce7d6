//! glance-dump against a real Glance 33 (uWSGI, SQLite, file store, no
//! keystone; tests/glance-server/start-glance.sh): every image listed
//! (hidden and queued ones too, across pages), the replicator's dump
//! layout written and verified, `checksum-tee --verify` re-checking it, a
//! re-run fetching nothing, a cut download resumed with Range, and a
//! server without v2 or without credentials an error. One test function,
//! so the server starts once (about 95 s the first time: pip; seconds after,
//! the venv is kept under target/).
#![cfg(test)]

use serde_json::Value;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

use glance_server::{AUTH, create, free_port, start, upload};
use test_support::glance_server;

fn dump(url: &str, args: &[&str], auth: bool) -> (Output, Vec<Value>) {
    let mut c = Command::new(env!("CARGO_BIN_EXE_glance-dump"));
    c.args(["--url", url]);
    if auth {
        for h in AUTH {
            c.args(["--header", h]);
        }
    }
    let out = c.args(args).output().unwrap();
    let recs = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    (out, recs)
}

fn names(recs: &[Value]) -> Vec<String> {
    recs.iter()
        .filter_map(|r| r["image"]["name"].as_str().map(str::to_owned))
        .collect()
}

/// checksum-tee: from IMAGE_TOOLS_BIN_DIR (`make test`), else the sibling
/// of this test's binary (a workspace test run builds every tool).
fn checksum_tee() -> Option<PathBuf> {
    let p = match std::env::var_os("IMAGE_TOOLS_BIN_DIR") {
        Some(d) => PathBuf::from(d).join("checksum-tee"),
        None => PathBuf::from(env!("CARGO_BIN_EXE_glance-dump")).with_file_name("checksum-tee"),
    };
    if p.is_file() {
        return Some(p);
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "checksum-tee is not built"
    );
    eprintln!(
        "skipping the checksum-tee check: {} is not built",
        p.display()
    );
    None
}

#[test]
fn dump_a_real_glance() {
    let Some(server) = start() else { return };
    let url = server.url.clone();
    let t = tempfile::tempdir().unwrap();
    let data = t.path().join("data.bin");
    let bytes: Vec<u8> = (0..3_000_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    std::fs::write(&data, &bytes).unwrap();
    let a = create(
        &url,
        r#"{"name":"a-queued","disk_format":"raw","container_format":"bare"}"#,
    );
    let b = create(
        &url,
        r#"{"name":"b-active","disk_format":"raw","container_format":"bare","visibility":"public"}"#,
    );
    upload(&url, &b, &data);
    let c = create(
        &url,
        r#"{"name":"c-hidden","disk_format":"raw","container_format":"bare","os_hidden":true}"#,
    );
    upload(&url, &c, &data);

    // Every image, hidden and queued too, in creation order, across pages.
    let (out, recs) = dump(&url, &["--page-size", "1", "--summary"], true);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(names(&recs), ["a-queued", "b-active", "c-hidden"]);
    assert_eq!(recs[0]["image"]["id"], a.as_str());
    assert_eq!(recs[0]["dump"]["action"], "listed");
    let s = &recs.last().unwrap()["summary"];
    assert_eq!(s["images"], 3);
    assert_eq!(s["active_images"], 2);
    assert_eq!(s["active_bytes"], 6_000_000);
    let (_, recs) = dump(&url, &["--max-count", "1"], true);
    assert_eq!(names(&recs), ["a-queued"]);
    let (_, recs) = dump(&url, &["--filter", "name=b-active"], true);
    assert_eq!(names(&recs), ["b-active"]);

    // The replicator's layout, verified, and checksum-tee agreeing.
    let dir = t.path().join("dump");
    let d = dir.to_str().unwrap();
    let (out, recs) = dump(&url, &["--dir", d, "--md5"], true);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(recs[0]["dump"]["action"], "metadata_written");
    assert!(recs[0].get("path").is_none());
    for r in &recs[1..] {
        assert_eq!(r["dump"]["action"], "downloaded");
        assert_eq!(r["dump"]["verified"], true);
        assert_eq!(r["dump"]["os_hash_algo"], "sha512");
        assert_eq!(r["dump"]["os_hash_value"], r["image"]["os_hash_value"]);
        assert_eq!(r["dump"]["md5"], r["image"]["checksum"]);
    }
    assert!(std::fs::read(dir.join(format!("{b}.img"))).unwrap() == bytes);
    assert!(!dir.join(format!("{a}.img")).exists());
    let meta: Value = serde_json::from_slice(&std::fs::read(dir.join(&c)).unwrap()).unwrap();
    assert_eq!(meta["os_hidden"], true);
    let records: String = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.contains("\"path\""))
        .map(|l| format!("{l}\n"))
        .collect();
    if let Some(ct) = checksum_tee() {
        let mut ct = Command::new(ct)
            .args(["--verify", "-a", "md5,sha512"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        {
            use std::io::Write;
            ct.stdin
                .take()
                .unwrap()
                .write_all(records.as_bytes())
                .unwrap();
        }
        let v = ct.wait_with_output().unwrap();
        assert!(v.status.success(), "{}", String::from_utf8_lossy(&v.stdout));
        let verified: Vec<Value> = String::from_utf8_lossy(&v.stdout)
            .lines()
            .map(|l| serde_json::from_str::<Value>(l).unwrap()["checksums"]["verified"].clone())
            .collect();
        assert_eq!(verified, vec![Value::Bool(true), Value::Bool(true)]);
    }

    // A re-run fetches nothing; a cut download resumes with Range.
    let (_, recs) = dump(&url, &["--dir", d], true);
    assert_eq!(recs[1]["dump"]["action"], "present_verified");
    let img = dir.join(format!("{c}.img"));
    std::fs::write(dir.join(format!("{c}.img.part")), &bytes[..1_000_000]).unwrap();
    std::fs::remove_file(&img).unwrap();
    let (_, recs) = dump(&url, &["--dir", d], true);
    assert_eq!(recs[2]["dump"]["action"], "resumed");
    assert_eq!(recs[2]["dump"]["resumed_from"], 1_000_000);
    assert!(std::fs::read(&img).unwrap() == bytes);
    assert!(!dir.join(format!("{c}.img.part")).exists());
    // A .img that does not verify is fetched again.
    std::fs::write(&img, b"rot").unwrap();
    let (_, recs) = dump(&url, &["--dir", d], true);
    assert_eq!(recs[2]["dump"]["action"], "downloaded");
    assert!(std::fs::read(&img).unwrap() == bytes);

    // No credentials: 401 is an error, not an empty cloud.
    let (out, recs) = dump(&url, &[], false);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(recs[0]["error"]["kind"], "permission_denied");
    drop(server);

    // A server offering only v1: an error, never "no images".
    let port = free_port();
    let mut v1 = Command::new("python3")
        .args([
            "-c",
            "import http.server, sys\nclass H(http.server.BaseHTTPRequestHandler):\n    def do_GET(self):\n        b = b'{\"versions\": [{\"id\": \"v1.1\", \"status\": \"CURRENT\"}]}'\n        self.send_response(300); self.send_header('Content-Type', 'application/json'); self.send_header('Content-Length', str(len(b))); self.end_headers(); self.wfile.write(b)\n    def log_message(self, *a): pass\nhttp.server.HTTPServer(('127.0.0.1', int(sys.argv[1])), H).serve_forever()\n",
        ])
        .arg(port.to_string())
        .spawn()
        .unwrap();
    let v1_url = format!("http://127.0.0.1:{port}");
    let mut tries = 0;
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() && tries < 100 {
        std::thread::sleep(std::time::Duration::from_millis(50));
        tries += 1;
    }
    let (out, recs) = dump(&v1_url, &[], true);
    let _ = v1.kill();
    let _ = v1.wait();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        recs[0]["error"]["message"]
            .as_str()
            .unwrap()
            .contains("no Images v2 API"),
        "{recs:?}"
    );
}
