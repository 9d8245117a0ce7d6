//! The fuzz campaign's inputs, replayed on stable Rust in `make test`:
//! every seed (`fuzz/seeds/<target>/`) and every input that once crashed,
//! exhausted memory or hung a parser (`fuzz/regressions/<target>/`) goes
//! through the very entry its fuzz target calls (`fuzz/entries.rs`), which
//! must return. And every fuzz target has an entry and seeds, so none can
//! be added without them.
#![cfg(test)]

#[path = "../../fuzz/entries.rs"]
mod entries;

use pipeline_tests::workspace;
use std::path::{Path, PathBuf};

/// The subdirectories of `dir`, sorted (none if it does not exist).
fn subdirs(dir: &Path) -> Vec<PathBuf> {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut v: Vec<PathBuf> = rd
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir())
        .collect();
    v.sort();
    v
}

/// The files under `dir`, recursively, symlinks followed (libFuzzer reads a
/// corpus directory the same way), sorted.
fn files(dir: &Path) -> Vec<PathBuf> {
    let mut v = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            v.extend(files(&p));
        } else {
            v.push(p);
        }
    }
    v.sort();
    v
}

fn name(p: &Path) -> String {
    p.file_name().unwrap().to_string_lossy().into_owned()
}

/// Run every file under `fuzz/<corpus>/<target>/` through the target's
/// entry; the failures (panics, unreadable files) are listed, not just the
/// first. Returns how many inputs ran.
fn replay(corpus: &str) -> usize {
    let root = workspace().join("fuzz").join(corpus);
    let mut ran = 0;
    let mut failed = Vec::new();
    for dir in subdirs(&root) {
        let target = name(&dir);
        let Some(entry) = entries::entry(&target) else {
            failed.push(format!("{}: no fuzz target {target}", dir.display()));
            continue;
        };
        for f in files(&dir) {
            let data = match std::fs::read(&f) {
                Ok(d) => d,
                Err(e) => {
                    failed.push(format!("{}: {e}", f.display()));
                    continue;
                }
            };
            ran += 1;
            if std::panic::catch_unwind(|| entry(&data)).is_err() {
                failed.push(format!("{}: {target} panicked", f.display()));
            }
        }
    }
    assert!(failed.is_empty(), "{}", failed.join("\n"));
    ran
}

#[test]
fn seeds_replay() {
    let n = replay("seeds");
    assert!(n >= entries::TARGETS.len(), "only {n} seeds");
}

#[test]
fn regressions_replay() {
    replay("regressions");
}

#[test]
fn every_target_has_its_entry_and_seeds() {
    let fuzz = workspace().join("fuzz");
    let manifest = std::fs::read_to_string(fuzz.join("Cargo.toml")).unwrap();
    let mut on_disk = Vec::new();
    for f in files(&fuzz.join("fuzz_targets")) {
        let Some(target) = name(&f).strip_suffix(".rs").map(str::to_owned) else {
            continue;
        };
        let src = std::fs::read_to_string(&f).unwrap();
        assert!(
            entries::entry(&target).is_some(),
            "{}: no entry {target} in fuzz/entries.rs TARGETS",
            f.display()
        );
        assert!(
            src.contains(&format!("entries::{target}(data)")),
            "{}: must call entries::{target}(data)",
            f.display()
        );
        assert!(
            manifest.contains(&format!("path = \"fuzz_targets/{target}.rs\"")),
            "fuzz/Cargo.toml has no [[bin]] for {target}"
        );
        let seeds = fuzz.join("seeds").join(&target);
        assert!(
            seeds.is_dir() && !files(&seeds).is_empty(),
            "fuzz target {target} has no seeds: add valid inputs to {} (see fuzz/make-seeds.sh)",
            seeds.display()
        );
        on_disk.push(target);
    }
    for (target, _) in entries::TARGETS {
        assert!(
            on_disk.iter().any(|t| t == target),
            "entries.rs names {target}, but fuzz/fuzz_targets/{target}.rs is missing"
        );
    }
}
