//! Helpers shared by vhd-chain's integration tests.
#![allow(dead_code, clippy::print_stderr, clippy::panic)]

use std::process::Command;

/// qemu-img and qemu-io (the oracles and image makers) are installed.
/// CI installs them, so there a missing one fails the test instead of
/// skipping it.
pub fn have_qemu() -> bool {
    let ok = Command::new("qemu-img").arg("--version").output().is_ok()
        && Command::new("qemu-io").arg("--version").output().is_ok();
    if !ok {
        assert!(
            std::env::var_os("CI").is_none(),
            "qemu-img and qemu-io are required in CI"
        );
        eprintln!("skipping: qemu-img / qemu-io are not installed");
    }
    ok
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

/// A dynamic VHD made by qemu-img.
pub fn create_dynamic(p: &std::path::Path, size: &str) {
    run_ok(
        Command::new("qemu-img")
            .args(["create", "-q", "-f", "vpc", "-o", "subformat=dynamic"])
            .arg(p)
            .arg(size),
    );
}
