//! Helpers for the integration tests of every tool and of `tests/`: the
//! real Glance and Keystone servers ([`glance_server`]) and the small
//! helpers several tools' tests need alike. A dev-dependency only.
// Test code: a failed helper is a failed test, and skips are said on
// stderr. The workspace denies these outside tests, and this crate is not
// compiled with cfg(test), so clippy.toml's allow-*-in-tests do not reach it.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stderr
)]

pub mod glance_server;

use serde_json::Value;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};

/// Whether `program` runs (`PROGRAM --version` can be spawned).
pub fn runs(program: &str) -> bool {
    Command::new(program).arg("--version").output().is_ok()
}

/// `present`, for a test that needs `what`: CI installs everything, so
/// there an absence fails the test; elsewhere it skips, saying so.
pub fn require(what: &str, present: bool) -> bool {
    if !present {
        assert!(std::env::var_os("CI").is_none(), "{what} is required in CI");
        eprintln!("skipping: {what} is not installed");
    }
    present
}

/// Run `cmd` to the end with stdin, stdout and stderr piped, feeding
/// `stdin` from a thread (so a child that stops reading early cannot
/// deadlock the test).
pub fn run_fed(cmd: &mut Command, stdin: &[u8]) -> Output {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    let mut input = child.stdin.take().unwrap();
    let data = stdin.to_vec();
    let writer = std::thread::spawn(move || {
        let _ = input.write_all(&data);
    });
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap();
    out
}

/// Run a command that must succeed; its stdout.
pub fn run_ok(cmd: &mut Command) -> Vec<u8> {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// The JSON Lines records a tool printed (every stdout line must be one).
pub fn records(out: &Output) -> Vec<Value> {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON: {l:?}: {e}")))
        .collect()
}

/// A FIFO at `p` (mode 0600).
pub fn mkfifo(p: &Path) {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(p.as_os_str().as_bytes()).unwrap();
    // SAFETY: a NUL-terminated path, valid for the call.
    #[allow(unsafe_code)]
    let rc = unsafe { libc::mkfifo(c.as_ptr(), 0o600) };
    assert_eq!(rc, 0, "mkfifo {}", p.display());
}
