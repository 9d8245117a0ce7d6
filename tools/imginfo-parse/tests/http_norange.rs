//! `--url` against a real HTTP server that ignores Range (Python's
//! http.server answers 200 with the whole file): the image is reported
//! not_probed, never passed: with --check, `acceptable: false` and exit 1,
//! so `--check ... && upload` does not upload.
#![cfg(test)]

use serde_json::Value;
use std::process::{Command, Stdio};

#[test]
fn a_server_without_range_gets_not_probed() {
    if Command::new("python3").arg("--version").output().is_err() {
        assert!(std::env::var_os("CI").is_none(), "python3 is needed in CI");
        return;
    }
    let t = tempfile::tempdir().unwrap();
    std::fs::write(t.path().join("disk.raw"), vec![7u8; 4 << 20]).unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut server = Command::new("python3")
        .args([
            "-m",
            "http.server",
            "--bind",
            "127.0.0.1",
            &port.to_string(),
        ])
        .current_dir(t.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    for _ in 0..100 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let url = format!("http://127.0.0.1:{port}/disk.raw");
    let run = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_imginfo-parse"))
            .args(args)
            .output()
            .unwrap()
    };
    let out = run(&["--check", "--image-url", &url]);
    // The pipeline the check guards: nothing uploaded.
    let guarded = Command::new("bash")
        .args([
            "-c",
            "\"$0\" --check --url \"$1\" >/dev/null && echo UPLOADED",
        ])
        .arg(env!("CARGO_BIN_EXE_imginfo-parse"))
        .arg(&url)
        .output()
        .unwrap();
    let plain = run(&["--image-url", &url]);
    let _ = server.kill();
    let _ = server.wait();
    let rec: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(out.status.code(), Some(1), "{rec}");
    assert!(
        rec["check"]["not_probed"]
            .as_str()
            .unwrap()
            .contains("Range")
    );
    assert_eq!(rec["check"]["acceptable"], false, "{rec}");
    assert_eq!(rec["check"]["failures"][0]["check"], "not_probed");
    assert_eq!(rec["url"], url.as_str());
    assert!(rec.get("info").is_none());
    assert!(guarded.stdout.is_empty(), "{guarded:?}");
    // Without --check it is information: said, exit 0.
    let rec: Value = serde_json::from_slice(&plain.stdout).unwrap();
    assert_eq!(plain.status.code(), Some(0), "{rec}");
    assert!(
        rec["probe"]["not_probed"]
            .as_str()
            .unwrap()
            .contains("Range")
    );
    assert!(rec.get("check").is_none());
}

/// A fake Glance (Python, on loopback) whose store ignores Range: `/`
/// offers v2, every image file is answered 200 with all its bytes.
const FAKE_GLANCE: &str = r#"
import http.server, json, sys
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        if self.path == "/":
            body = json.dumps({"versions": [{"id": "v2.9", "status": "CURRENT"}]}).encode()
            ctype = "application/json"
        elif self.path.startswith("/v2/images/") and self.path.endswith("/file"):
            body = b"\x07" * (1 << 20)
            ctype = "application/octet-stream"
        else:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a):
        pass
s = http.server.HTTPServer(("127.0.0.1", 0), H)
print(s.server_address[1], flush=True)
s.serve_forever()
"#;

#[test]
fn a_glance_store_without_range_is_not_judged() {
    use std::io::{BufRead, Write};
    if Command::new("python3").arg("--version").output().is_err() {
        assert!(std::env::var_os("CI").is_none(), "python3 is needed in CI");
        return;
    }
    let mut server = Command::new("python3")
        .args(["-c", FAKE_GLANCE])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut port = String::new();
    std::io::BufReader::new(server.stdout.take().unwrap())
        .read_line(&mut port)
        .unwrap();
    let url = format!("http://127.0.0.1:{}", port.trim());
    let listing = concat!(
        r#"{"image":{"id":"11111111-aaaa","name":"active","status":"active","disk_format":"raw"}}"#,
        "\n",
        r#"{"image":{"id":"22222222-bbbb","name":"queued","status":"queued","disk_format":"raw"}}"#,
        "\n"
    );
    let mut child = Command::new(env!("CARGO_BIN_EXE_imginfo-parse"))
        .args([
            "--check",
            "--summary",
            "--from-glance",
            &url,
            "--token",
            "x",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(listing.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let _ = server.kill();
    let _ = server.wait();
    let recs: Vec<Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(out.status.code(), Some(1), "{recs:#?}");
    assert_eq!(recs.len(), 3, "{recs:#?}");
    let active = &recs[0];
    assert_eq!(active["check"]["acceptable"], false, "{active}");
    assert_eq!(active["check"]["failures"][0]["check"], "not_probed");
    // No data: nothing to hand anyone, so it stays acceptable.
    let queued = &recs[1];
    assert_eq!(queued["check"]["acceptable"], true, "{queued}");
    assert!(
        queued["check"]["not_probed"]
            .as_str()
            .unwrap()
            .contains("queued")
    );
    let summary = &recs[2]["summary"];
    assert_eq!(summary["images"], 2);
    assert_eq!(summary["not_probed"], 2);
    assert_eq!(summary["acceptable"], 0);
}
