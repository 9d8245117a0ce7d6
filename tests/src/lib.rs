//! Support for the cross-tool tests: finding the built binaries.
//!
//! Cargo gives a test crate no `CARGO_BIN_EXE_*` for other packages'
//! binaries, so `make test` builds them first and points
//! `IMAGE_TOOLS_BIN_DIR` at them; without it the workspace's
//! `target/debug` is used. A missing binary fails loudly: a stale or
//! absent build must never make a test pass. Packagers can point the
//! variable at installed binaries (e.g. `/usr/bin`).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

pub mod corpus;
pub mod summary;
pub mod upstream;

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

/// Run `cmd` to its end (stdin null and stderr dropped unless the caller
/// set them); its exit status (-1 for a signal) and the records it
/// printed. A line that is not JSON fails the test: every tool's stdout
/// is records only.
#[allow(clippy::unwrap_used, clippy::expect_used, reason = "test support")]
pub fn records_of(cmd: &mut Command) -> (i32, Vec<serde_json::Value>) {
    let out = cmd
        .stdout(Stdio::piped())
        .output()
        .expect("the command could not be started");
    let recs = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic_line(l, &e)))
        .collect();
    (out.status.code().unwrap_or(-1), recs)
}

#[allow(clippy::panic, reason = "test support")]
fn panic_line(line: &str, e: &serde_json::Error) -> serde_json::Value {
    panic!("not a JSON record ({e}): {line}")
}

/// `$PATH` with the tools' directory first, for shell pipelines.
pub fn tools_path() -> String {
    format!(
        "{}:{}",
        bin_dir().display(),
        std::env::var("PATH").unwrap_or_default()
    )
}

/// One command of a README ```console block and the output shown under it.
#[derive(Debug, PartialEq, Eq)]
pub struct Step {
    /// The command, without its `$ ` prompt.
    pub command: String,
    /// The lines shown under it, each ending in a newline.
    pub expected: String,
    /// Its line number in the README.
    pub line: usize,
}

/// The commands of the README's ```console blocks whose info string has
/// `tag` after `console` (no tag: plain ```console blocks), in order.
pub fn readme_steps(readme: &str, tag: Option<&str>) -> Vec<Step> {
    let mut out: Vec<Step> = Vec::new();
    let mut in_block = false;
    for (i, line) in readme.lines().enumerate() {
        if let Some(info) = line.strip_prefix("```console") {
            in_block = info.trim() == tag.unwrap_or("");
            continue;
        }
        if line.starts_with("```") {
            in_block = false;
            continue;
        }
        if !in_block {
            continue;
        }
        if let Some(cmd) = line.strip_prefix("$ ") {
            out.push(Step {
                command: cmd.to_owned(),
                expected: String::new(),
                line: i + 1,
            });
        } else if let Some(step) = out.last_mut() {
            step.expected.push_str(line);
            step.expected.push('\n');
        }
    }
    out
}
