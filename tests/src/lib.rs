//! Support for the cross-tool tests: finding the built binaries.
//!
//! Cargo gives a test crate no `CARGO_BIN_EXE_*` for other packages'
//! binaries, so `make test` builds them first and points
//! `IMAGE_TOOLS_BIN_DIR` at them; without it the workspace's
//! `target/debug` is used. A missing binary fails loudly: a stale or
//! absent build must never make a test pass. Packagers can point the
//! variable at installed binaries (e.g. `/usr/bin`).

use std::path::{Path, PathBuf};

/// The workspace root.
pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default()
}

/// The directory holding the tools' binaries.
pub fn bin_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("IMAGE_TOOLS_BIN_DIR") {
        return PathBuf::from(d);
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace().join("target"));
    target.join("debug")
}

/// The path of one tool, which must exist.
pub fn tool(name: &str) -> Result<PathBuf, String> {
    let p = bin_dir().join(name);
    if p.is_file() {
        Ok(p)
    } else {
        Err(format!(
            "{} not found: build first (`make test` does), or set IMAGE_TOOLS_BIN_DIR",
            p.display()
        ))
    }
}
