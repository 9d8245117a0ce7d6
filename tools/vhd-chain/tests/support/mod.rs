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
