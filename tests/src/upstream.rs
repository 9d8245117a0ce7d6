//! What the differential tests against the upstream code share: the
//! seed, the pinned venvs the upstream code runs from, and the scenario
//! generators' runner.

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::workspace;

/// `UPSTREAM_SEED`; else 1 under CI (a landing must not hinge on a seed
/// no one ran), or one from the clock elsewhere, to explore (every test
/// prints the seed it used, so a failure can be run again).
pub fn seed() -> u64 {
    std::env::var("UPSTREAM_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .or_else(|| std::env::var_os("CI").map(|_| 1))
        .unwrap_or_else(|| {
            let t = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(1);
            u64::try_from(t % 1_000_000_007).unwrap_or(1)
        })
}

/// Run a scenario generator and driver (`tests/upstream/<driver>`) with
/// `python`: `run --seed S --count N --work DIR`, one JSON line per
/// scenario (or header) on its stdout.
pub fn run_generator(
    python: &Path,
    driver: &str,
    seed: u64,
    count: usize,
    work: &Path,
) -> Result<Vec<Value>, String> {
    let out = Command::new(python)
        .args(["-W", "ignore"])
        .arg(workspace().join("tests/upstream").join(driver))
        .args([
            "run",
            "--seed",
            &seed.to_string(),
            "--count",
            &count.to_string(),
        ])
        .arg("--work")
        .arg(work)
        .stderr(Stdio::inherit())
        .output()
        .map_err(|e| format!("{driver}: {e}"))?;
    if !out.status.success() {
        return Err(format!("{driver} run failed (UPSTREAM_SEED={seed})"));
    }
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).map_err(|e| format!("{driver}: {e}: {l}")))
        .collect()
}

/// The python of the pinned Glance 33 venv (`target/glance-venv`: Glance,
/// oslo.utils 10.x, xattr), made by `tests/glance-server/ensure-venv.sh`.
pub fn glance_python(what: &str, module: &str) -> Option<PathBuf> {
    venv_python(
        what,
        "glance-venv",
        module,
        &["tests/glance-server/ensure-venv.sh"],
    )
}

/// Nova 34.0.0 (`target/nova-venv`).
pub const NOVA: &str = "nova==34.0.0";
/// Cinder 29.0.0 (`target/cinder-venv`).
pub const CINDER: &str = "cinder==29.0.0";

/// The python of the pinned Nova venv (`target/nova-venv`, [`NOVA`]).
pub fn nova_python(what: &str) -> Option<PathBuf> {
    pip_venv_python(what, "nova-venv", NOVA, "nova.virt.libvirt.imagecache")
}

/// The python of the pinned Cinder venv (`target/cinder-venv`, [`CINDER`]).
pub fn cinder_python(what: &str) -> Option<PathBuf> {
    pip_venv_python(what, "cinder-venv", CINDER, "cinder.image.image_utils")
}

/// A venv of one pinned PyPI requirement, made by
/// `tests/upstream/ensure-pip-venv.sh`.
fn pip_venv_python(what: &str, venv: &str, requirement: &str, module: &str) -> Option<PathBuf> {
    venv_python(
        what,
        venv,
        module,
        &[
            "tests/upstream/ensure-pip-venv.sh",
            "{venv}",
            requirement,
            module,
        ],
    )
}

/// The python of the venv `target/<venv>` in which `module` imports,
/// made by the command `ensure` (a workspace-relative script, then its
/// arguments, `{venv}` standing for the venv's path; the path is the
/// only argument when none is given) when it does not. Where python3.11
/// or PyPI is missing: `None` after a SKIPPED line naming `what`, or a
/// failure under CI.
#[allow(clippy::print_stderr, clippy::panic)] // SKIPPED lines are its purpose
pub fn venv_python(what: &str, venv: &str, module: &str, ensure: &[&str]) -> Option<PathBuf> {
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
    let (script, args) = ensure.split_first()?;
    let mut cmd = Command::new(workspace().join(script));
    if args.is_empty() {
        cmd.arg(&venv);
    }
    for a in args {
        if *a == "{venv}" {
            cmd.arg(&venv);
        } else {
            cmd.arg(a);
        }
    }
    let built = cmd
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !built || !importable(&python) {
        return missing("the venv could not be built (no PyPI?)");
    }
    Some(python)
}
