//! Helpers shared by cachewalk's integration tests.
#![allow(dead_code)]

use std::path::Path;
use std::process::Command;

/// 2026-11-25T17:00:00Z, the walks' "now".
pub const NOW: i64 = 1_795_626_000;
/// Seconds in a day.
pub const DAY: i64 = 86_400;

/// qemu-img is installed (CI installs it: there a missing one fails).
pub fn have_qemu() -> bool {
    test_support::require("qemu-img", test_support::runs("qemu-img"))
}

/// Nova's fingerprint of an image id.
pub fn fp(id: &str) -> String {
    system::hash::sha1_hex(id)
}

/// Set the mtime of `p` (not following a symlink) to `NOW - age`.
pub fn set_age(p: &Path, age: i64) {
    let st = Command::new("touch")
        .arg("-h")
        .arg("-d")
        .arg(format!("@{}", NOW - age))
        .arg(p)
        .status()
        .unwrap_or_else(|e| panic!("touch: {e}"));
    assert!(st.success());
}

/// A file of `len` bytes of `fill` with mtime `NOW - age`.
pub fn file_of(p: &Path, len: usize, fill: u8, age: i64) {
    std::fs::write(p, vec![fill; len]).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    set_age(p, age);
}
