//! Helpers shared by imginfo-parse's integration tests.
#![allow(dead_code)]

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;

pub const BIN: &str = env!("CARGO_BIN_EXE_imginfo-parse");

/// The committed qemu-img corpus.
pub fn corpus() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/qemu")
}

pub struct Run {
    pub code: i32,
    pub records: Vec<Value>,
    pub stdout: String,
    pub stderr: String,
}

/// Run imginfo-parse with `args`, feeding `stdin`, in a clean environment.
pub fn run_in(dir: Option<&Path>, args: &[&str], envs: &[(&str, &str)], stdin: &[u8]) -> Run {
    let mut cmd = Command::new(BIN);
    cmd.args(args).env_remove("QEMU_IMG").env("LC_ALL", "C");
    for (k, v) in envs {
        cmd.env(k, v);
    }
    if let Some(d) = dir {
        cmd.current_dir(d);
    }
    let out = test_support::run_fed(&mut cmd, stdin);
    let stdout = String::from_utf8(out.stdout).expect("stdout is UTF-8");
    // Records must be JSON lines, except for help, version and --generate.
    let text_out = args
        .iter()
        .any(|a| matches!(*a, "--help" | "-h" | "--version" | "-V" | "--generate"));
    let records = if text_out {
        Vec::new()
    } else {
        stdout
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON: {l:?}: {e}")))
            .collect()
    };
    Run {
        code: out.status.code().unwrap_or(-1),
        records,
        stdout,
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

pub fn run(args: &[&str], stdin: &[u8]) -> Run {
    run_in(None, args, &[], stdin)
}

pub fn run_file(path: &Path) -> Run {
    run(&["-q"], &std::fs::read(path).unwrap())
}

/// qemu-img, when installed. CI installs it, so there a missing qemu-img
/// fails the test instead of skipping it.
pub fn qemu_img() -> Option<PathBuf> {
    let found = system::exec::which(std::ffi::OsStr::new("qemu-img"));
    test_support::require("qemu-img (qemu-utils)", found.is_some());
    found
}

/// Run a command that must succeed (image creation in tests).
pub fn sh(dir: &Path, argv: &[&str]) {
    let st = Command::new(argv[0])
        .args(&argv[1..])
        .current_dir(dir)
        .env("LC_ALL", "C")
        .env("TZ", "UTC")
        .status()
        .unwrap();
    assert!(st.success(), "{argv:?} failed");
}

/// The capture files of the corpus for one QEMU version, sorted.
pub fn captures(version_dir: &Path, suffix: &str) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(version_dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().ends_with(suffix))
        .collect();
    v.sort();
    v
}

/// Exit status of a capture, from MANIFEST.tsv.
pub fn capture_status(version_dir: &Path, file: &str) -> i32 {
    let manifest = std::fs::read_to_string(version_dir.join("MANIFEST.tsv")).unwrap();
    manifest
        .lines()
        .find_map(|l| {
            let mut f = l.split('\t');
            (f.next() == Some(file)).then(|| f.next().unwrap().parse().unwrap())
        })
        .unwrap_or_else(|| panic!("{file} not in MANIFEST.tsv"))
}

/// A scratch directory with images made by `qemu-img create -q ARGS` for
/// each space-separated spec, or `None` (skip) without qemu-img.
pub fn qemu_images(specs: &[&str]) -> Option<tempfile::TempDir> {
    qemu_img()?;
    let d = tempfile::tempdir().unwrap();
    for spec in specs {
        let mut argv = vec!["qemu-img", "create", "-q"];
        argv.extend(spec.split(' '));
        sh(d.path(), &argv);
    }
    Some(d)
}

/// A fresh run of the corpus script, where the installed qemu-img is the
/// version the committed corpus was made with: (scratch, captures dir,
/// images dir). `None` (with the reason on stderr) elsewhere.
pub fn fresh_corpus() -> Option<(tempfile::TempDir, PathBuf, PathBuf)> {
    qemu_img()?;
    let want = std::fs::read_to_string(corpus().join("10.0.2/VERSION")).unwrap();
    let out = Command::new("qemu-img").arg("--version").output().unwrap();
    let have = String::from_utf8_lossy(&out.stdout);
    let have = have.lines().next().unwrap_or("").trim().to_owned();
    if have != want.trim() {
        eprintln!(
            "skipping: installed {have:?}, the corpus was made with {:?}; \
             other versions print other layouts (the committed captures are still tested)",
            want.trim()
        );
        return None;
    }
    let tmp = tempfile::tempdir().unwrap();
    let (caps, imgs) = (tmp.path().join("out"), tmp.path().join("img"));
    let st = Command::new("bash")
        .arg(corpus().join("make-fixtures.sh"))
        .arg(&caps)
        .env("KEEP_IMAGES", &imgs)
        .output()
        .unwrap();
    if st.status.code() == Some(2) && std::env::var_os("CI").is_none() {
        eprintln!("skipping: {}", String::from_utf8_lossy(&st.stderr).trim());
        return None;
    }
    assert!(
        st.status.success(),
        "make-fixtures.sh failed: {}",
        String::from_utf8_lossy(&st.stderr)
    );
    Some((tmp, caps, imgs))
}
