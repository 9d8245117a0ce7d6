//! `--url` against a real HTTP server that ignores Range (Python's
//! http.server answers 200 with the whole file): the image is reported
//! not_probed, never passed, and nothing but the first response is read.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stderr
)]

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
    let out = Command::new(env!("CARGO_BIN_EXE_imginfo-parse"))
        .args(["--check", "--url", &url])
        .output()
        .unwrap();
    let _ = server.kill();
    let _ = server.wait();
    let rec: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(out.status.code(), Some(0), "{rec}");
    assert!(
        rec["check"]["not_probed"]
            .as_str()
            .unwrap()
            .contains("Range")
    );
    assert!(rec["check"].get("acceptable").is_none(), "{rec}");
    assert_eq!(rec["url"], url.as_str());
    assert!(rec.get("info").is_none());
}
