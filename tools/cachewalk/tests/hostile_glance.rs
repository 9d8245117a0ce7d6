//! Hostile Glance caches: subdirectories, `cache.db` and lock files that
//! are links, forged records, and a file swapped between the judgement and
//! the unlink (a test hook, not timing). Decoy files sit beside the cache;
//! they are read before and after and must be exactly as they were.
#![cfg(test)]

use serde_json::Value;
use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use test_support::records;

const NOW: i64 = 1_795_626_000;

/// A cache with one image (with its row), one invalid download and one
/// stalled one, and a decoy directory beside it.
struct Scene {
    _t: tempfile::TempDir,
    root: PathBuf,
    decoy: PathBuf,
}

fn scene() -> Scene {
    let t = tempfile::tempdir().unwrap();
    let root = t.path().join("cache");
    let decoy = t.path().join("decoy");
    for d in ["incomplete", "invalid", "queue"] {
        fs::create_dir_all(root.join(d)).unwrap();
    }
    fs::create_dir_all(&decoy).unwrap();
    for n in ["img-a", "bad", "part"] {
        fs::write(decoy.join(n), format!("decoy {n}")).unwrap();
    }
    fs::write(root.join("img-a"), vec![1u8; 4096]).unwrap();
    fs::write(root.join("invalid/bad"), b"failed").unwrap();
    fs::write(root.join("incomplete/part"), b"stalled").unwrap();
    touch(&root.join("incomplete/part"), NOW - 10 * 86_400);
    cache_db(&root.join("cache.db"), &[("img-a", 1000.0), ("gone", 10.0)]);
    Scene { _t: t, root, decoy }
}

fn touch(p: &Path, t: i64) {
    let st = Command::new("touch")
        .args(["-h", "-d", &format!("@{t}")])
        .arg(p)
        .status()
        .unwrap();
    assert!(st.success());
}

/// A cache.db with Glance's schema, written by Python's sqlite3.
fn cache_db(path: &Path, rows: &[(&str, f64)]) {
    let mut script = String::from(
        "import sqlite3,sys\nc=sqlite3.connect(sys.argv[1])\nc.execute('CREATE TABLE IF NOT EXISTS cached_images (image_id TEXT PRIMARY KEY, last_accessed REAL DEFAULT 0.0, last_modified REAL DEFAULT 0.0, size INTEGER DEFAULT 0, hits INTEGER DEFAULT 0, checksum TEXT)')\n",
    );
    for (id, la) in rows {
        script.push_str(&format!(
            "c.execute('INSERT INTO cached_images VALUES (?, ?, ?, 4096, 1, NULL)', ('{id}', {la}, {la}))\n"
        ));
    }
    script.push_str("c.commit()\n");
    let st = Command::new("python3")
        .args(["-c", &script])
        .arg(path)
        .status()
        .unwrap();
    assert!(st.success());
}

/// Every file under `dir` (not following links) with its bytes (a link:
/// its target) and mtime: what must not change.
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, (Vec<u8>, i64)> {
    use std::os::unix::fs::MetadataExt;
    let mut out = BTreeMap::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            let m = fs::symlink_metadata(&p).unwrap();
            if m.is_dir() {
                todo.push(p);
            } else if m.file_type().is_symlink() {
                let target = fs::read_link(&p).unwrap();
                out.insert(p, (target.into_os_string().into_encoded_bytes(), 0));
            } else {
                out.insert(p.clone(), (fs::read(&p).unwrap(), m.mtime()));
            }
        }
    }
    out
}

fn run(args: &[&str], stdin: &str, env: &[(&str, String)]) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_cachewalk"));
    c.args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        c.env(k, v);
    }
    let mut child = c.spawn().unwrap();
    {
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(stdin.as_bytes())
            .unwrap();
    }
    child.wait_with_output().unwrap()
}

fn walk(root: &Path, extra: &[&str]) -> Output {
    let now = NOW.to_string();
    let mut args = vec!["glance", root.to_str().unwrap(), "--now", &now];
    args.extend_from_slice(extra);
    run(&args, "", &[])
}

/// `remove` fed with these records (JSON lines).
fn remove(input: &str, env: &[(&str, String)]) -> Vec<Value> {
    let now = NOW.to_string();
    records(&run(&["remove", "--now", &now], input, env))
}

fn rel(r: &Value) -> &str {
    r["cache"]["rel_path"].as_str().unwrap_or("")
}

/// A subdirectory swapped for a link to the decoys: never listed, its
/// root entry carries the refusal, and `remove` of every record the walk
/// gave deletes nothing outside (and nothing through the link).
#[test]
fn linked_subdirectories_are_refused_never_listed_or_deleted_through() {
    for sub in ["invalid", "incomplete", "queue"] {
        let s = scene();
        fs::remove_dir_all(s.root.join(sub)).unwrap();
        symlink(&s.decoy, s.root.join(sub)).unwrap();
        let before = snapshot(&s.decoy);
        let out = walk(&s.root, &["--cache-max-size", "0"]);
        assert_eq!(out.status.code(), Some(2), "{sub}");
        let recs = records(&out);
        assert!(
            !recs.iter().any(|r| rel(r).starts_with(&format!("{sub}/"))),
            "{sub}: {recs:?}"
        );
        let link = recs.iter().find(|r| rel(r) == sub).unwrap();
        assert_eq!(link["error"]["kind"], "symlink", "{link}");
        assert_eq!(link["cache"]["verdict"], "keep");
        assert!(
            link["cache"]["reasons"]
                .as_array()
                .unwrap()
                .contains(&Value::from("symlink"))
        );
        // Every record, and forged ones naming the decoys through the link.
        let mut all = String::from_utf8_lossy(&out.stdout).into_owned();
        for name in ["img-a", "bad", "part"] {
            let forged = serde_json::json!({
                "path": s.root.join(sub).join(name),
                "cache": {
                    "record": "entry", "cache": "glance", "root": s.root,
                    "rel_path": format!("{sub}/{name}"), "image_id": name,
                    "verdict": "orphan_temp", "driver": "sqlite",
                    "max_size": 0, "stall_time": 86400, "dev": 0, "ino": 0,
                    "size": 0, "mtime": "2026-01-01T00:00:00Z",
                },
            });
            all.push_str(&format!("{forged}\n"));
        }
        let r = remove(&all, &[]);
        for x in r.iter().filter(|x| rel(x).starts_with(&format!("{sub}/"))) {
            assert_eq!(x["cache"]["action"], "refused", "{x}");
            assert_eq!(x["error"]["kind"], "symlink", "{x}");
        }
        assert_eq!(snapshot(&s.decoy), before, "{sub}");
        assert!(fs::symlink_metadata(s.root.join(sub)).unwrap().is_symlink());
    }
}

/// `cache.db` a dangling link: the walk refuses it (kind symlink) and
/// sqlite never creates a file at its target; a link to a decoy database
/// is never read or written either, nor by `remove --glance-cache`.
#[test]
fn a_linked_cache_db_is_refused_and_nothing_is_created_at_its_target() {
    let s = scene();
    fs::remove_file(s.root.join("cache.db")).unwrap();
    let target = s.decoy.join("planted.db");
    symlink(&target, s.root.join("cache.db")).unwrap();
    let out = walk(&s.root, &[]);
    assert_eq!(out.status.code(), Some(2));
    let recs = records(&out);
    assert_eq!(recs.len(), 1, "{recs:?}");
    assert_eq!(recs[0]["error"]["kind"], "symlink");
    assert!(
        recs[0]["error"]["message"]
            .as_str()
            .unwrap()
            .contains("cache.db"),
        "{}",
        recs[0]
    );
    let out = run(
        &[
            "remove",
            "--glance-cache",
            s.root.to_str().unwrap(),
            "--image-id",
            "img-a",
            "--cache-driver",
            "sqlite",
        ],
        "",
        &[],
    );
    assert_ne!(out.status.code(), Some(0));
    assert!(!target.exists() && fs::symlink_metadata(&target).is_err());
    assert!(s.root.join("img-a").exists());

    // A link to a real database elsewhere: refused, untouched.
    cache_db(&target, &[("img-a", 5.0)]);
    let before = snapshot(&s.decoy);
    let out = walk(&s.root, &[]);
    assert_eq!(records(&out)[0]["error"]["kind"], "symlink");
    let out = run(
        &[
            "remove",
            "--glance-cache",
            s.root.to_str().unwrap(),
            "--all",
        ],
        "",
        &[],
    );
    assert_ne!(out.status.code(), Some(0));
    assert_eq!(snapshot(&s.decoy), before);
    assert!(s.root.join("img-a").exists());
}

/// Records that name something outside the cache, or deeper than one
/// name, are refused before anything is opened.
#[test]
fn forged_rel_paths_are_refused() {
    let s = scene();
    let before = snapshot(&s.decoy);
    let mut recs = String::new();
    for rel in [
        "../decoy/img-a",
        "invalid/../../decoy/bad",
        "..",
        "invalid/x/y",
        "elsewhere/bad",
        "",
    ] {
        let forged = serde_json::json!({
            "path": s.root.join(rel),
            "cache": {
                "record": "entry", "cache": "glance", "root": s.root,
                "rel_path": rel, "image_id": "img-a", "verdict": "orphan_temp",
                "driver": "sqlite", "max_size": 0, "stall_time": 0,
                "dev": 0, "ino": 0, "size": 0, "mtime": "2026-01-01T00:00:00Z",
            },
        });
        recs.push_str(&format!("{forged}\n"));
    }
    let r = remove(&recs, &[]);
    assert_eq!(r.len(), 6);
    for x in &r {
        assert_eq!(x["cache"]["action"], "refused", "{x}");
        assert_eq!(x["error"]["kind"], "refused", "{x}");
    }
    assert_eq!(snapshot(&s.decoy), before);
    assert!(s.root.join("invalid/bad").exists());
}

/// Glance's lock file a link to a decoy: never locked through, never
/// deleted; the removal is refused.
#[test]
fn a_linked_glance_lock_file_is_refused() {
    let s = scene();
    symlink(s.decoy.join("bad"), s.root.join("glance-cache-clean")).unwrap();
    let before = snapshot(&s.decoy);
    let out = walk(&s.root, &[]);
    let bad = records(&out)
        .into_iter()
        .find(|r| rel(r) == "invalid/bad")
        .unwrap();
    assert_eq!(bad["cache"]["verdict"], "orphan_temp");
    let r = remove(&format!("{bad}\n"), &[]);
    assert_eq!(r[0]["cache"]["action"], "refused", "{}", r[0]);
    assert_eq!(r[0]["error"]["kind"], "symlink");
    assert!(s.root.join("invalid/bad").exists());
    assert!(
        fs::symlink_metadata(s.root.join("glance-cache-clean"))
            .unwrap()
            .is_symlink()
    );
    assert_eq!(snapshot(&s.decoy), before);
}

/// Links inside the cache's subdirectories are findings, kept: `remove`
/// deletes neither them nor their targets.
#[test]
fn links_inside_the_cache_are_kept_findings() {
    let s = scene();
    symlink(s.decoy.join("bad"), s.root.join("invalid/link")).unwrap();
    symlink(s.decoy.join("part"), s.root.join("incomplete/link")).unwrap();
    symlink(s.decoy.join("img-a"), s.root.join("img-b")).unwrap();
    let before = snapshot(&s.decoy);
    let out = walk(&s.root, &["--cache-max-size", "0"]);
    let recs = records(&out);
    for name in ["invalid/link", "incomplete/link", "img-b"] {
        let r = recs.iter().find(|r| rel(r) == name).unwrap();
        assert_eq!(r["cache"]["verdict"], "keep", "{r}");
        assert!(
            r["cache"]["reasons"]
                .as_array()
                .unwrap()
                .contains(&Value::from("symlink")),
            "{r}"
        );
    }
    let r = remove(&String::from_utf8_lossy(&out.stdout), &[]);
    // The real files went as judged; the links stayed.
    let action = |n: &str| {
        r.iter().find(|x| rel(x) == n).unwrap()["cache"]["action"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    assert_eq!(action("invalid/bad"), "deleted");
    assert_eq!(action("incomplete/part"), "deleted");
    assert_eq!(action("invalid/link"), "skipped_not_candidate");
    for l in ["invalid/link", "incomplete/link", "img-b"] {
        assert!(fs::symlink_metadata(s.root.join(l)).unwrap().is_symlink());
    }
    assert_eq!(snapshot(&s.decoy), before);
}

/// A file swapped in after the judgement, right before the unlink (hook
/// cachewalk.glance.before_remove): left alone, kind changed, and its
/// cache.db row kept (the transaction rolled back).
#[test]
fn a_file_swapped_after_the_judgement_is_left_alone() {
    let s = scene();
    // A root image the pruner deletes, and an invalid download.
    let out = walk(&s.root, &["--cache-max-size", "0"]);
    let recs = records(&out);
    let img = recs.iter().find(|r| rel(r) == "img-a").unwrap();
    assert_eq!(img["cache"]["verdict"], "would_prune");
    let bad = recs.iter().find(|r| rel(r) == "invalid/bad").unwrap();
    for (rec, file) in [(img, "img-a"), (bad, "invalid/bad")] {
        let target = s.root.join(file);
        let swap = format!(
            "printf swapped > '{0}.new' && mv -f '{0}.new' '{0}'",
            target.display()
        );
        let var = "IMAGE_TOOLS_TEST_HOOK_CACHEWALK_GLANCE_BEFORE_REMOVE";
        let r = remove(&format!("{rec}\n"), &[(var, swap)]);
        assert_eq!(r[0]["cache"]["action"], "changed_since_walk", "{}", r[0]);
        assert_eq!(r[0]["error"]["kind"], "changed", "{}", r[0]);
        assert_eq!(fs::read(&target).unwrap(), b"swapped");
    }
    let out = Command::new("python3")
        .args([
            "-c",
            "import sqlite3,sys;print(sqlite3.connect(sys.argv[1]).execute(\"SELECT count(*) FROM cached_images WHERE image_id='img-a'\").fetchone()[0])",
        ])
        .arg(s.root.join("cache.db"))
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "1");
}

/// Queue markers are never written through a linked queue/ or judged
/// through a linked incomplete/.
#[test]
fn queueing_never_writes_through_a_link() {
    let s = scene();
    fs::remove_dir_all(s.root.join("queue")).unwrap();
    symlink(&s.decoy, s.root.join("queue")).unwrap();
    let before = snapshot(&s.decoy);
    let out = run(
        &["glance", s.root.to_str().unwrap(), "--queue", "new-image"],
        "",
        &[],
    );
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(records(&out)[0]["error"]["kind"], "symlink");
    assert_eq!(snapshot(&s.decoy), before);
    assert!(!s.decoy.join("new-image").exists());
}
