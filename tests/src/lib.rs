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

/// The python of the pinned Glance 33 venv (`target/glance-venv`: Glance,
/// oslo.utils 10.x, xattr), made by `tests/glance-server/ensure-venv.sh`
/// ([`upstream_venv`]).
pub fn upstream_python(what: &str, module: &str) -> Option<PathBuf> {
    upstream_venv(
        what,
        "glance-venv",
        "tests/glance-server/ensure-venv.sh",
        module,
    )
}

/// The python of the pinned Nova venv (`target/nova-venv`: nova 34.0.0,
/// kept apart from Glance's, whose pins conflict), made by
/// `tests/upstream/ensure-nova-venv.sh` ([`upstream_venv`]).
pub fn upstream_nova_python(what: &str, module: &str) -> Option<PathBuf> {
    upstream_venv(
        what,
        "nova-venv",
        "tests/upstream/ensure-nova-venv.sh",
        module,
    )
}

/// The python of a pinned upstream venv `target/<venv>` in which `module`
/// imports, made by the script `ensure` (workspace-relative, given the
/// venv's path) when it does not. Where python3.11 or PyPI is missing:
/// `None` after a SKIPPED line naming `what`, or a failure under CI.
#[allow(clippy::print_stderr, clippy::panic)] // SKIPPED lines are its purpose
pub fn upstream_venv(what: &str, venv: &str, ensure: &str, module: &str) -> Option<PathBuf> {
    let ci = std::env::var_os("CI").is_some();
    let missing = |why: &str| {
        assert!(!ci, "{what}: {why} (required in CI)");
        eprintln!("SKIPPED: {what}: {why}");
        None
    };
    let venv = workspace().join("target").join(venv);
    let python = venv.join("bin/python");
    let importable = |p: &Path| {
        Command::new(p)
            .args(["-c", &format!("import {module}")])
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    if importable(&python) {
        return Some(python);
    }
    if Command::new("python3.11")
        .arg("--version")
        .output()
        .is_err()
    {
        return missing("no python3.11 to build the venv");
    }
    let built = Command::new(workspace().join(ensure))
        .arg(&venv)
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !built || !importable(&python) {
        return missing("the venv could not be built (no PyPI?)");
    }
    Some(python)
}
