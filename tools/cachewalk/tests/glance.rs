//! `cachewalk glance` on a real Glance cache layout: a `cache.db` written
//! with Glance's schema by Python's sqlite3, xattrs where the filesystem
//! has them. Ports Glance's image cache tests (test_prune,
//! test_prune_to_zero, test_clean_stalled(_nonzero_stall_time),
//! test_queue) as records: what the pruner and cleaner would delete, and
//! the queue markers the prefetcher reads.
#![cfg(test)]

use serde_json::Value;
use std::collections::BTreeMap;
use std::fs;
use std::path::Path;
use std::process::Command;

const NOW: i64 = 1_795_626_000;

fn touch(p: &Path, mtime: i64) {
    let st = Command::new("touch")
        .arg("-d")
        .arg(format!("@{mtime}"))
        .arg(p)
        .status()
        .unwrap();
    assert!(st.success());
}

/// A cache.db with Glance's schema and these rows (id, last_accessed,
/// hits), written by Python's sqlite3 as Glance's driver would.
fn cache_db(root: &Path, rows: &[(&str, f64, i64)]) {
    let mut script = String::from(
        "import sqlite3,sys\nc=sqlite3.connect(sys.argv[1])\nc.execute('CREATE TABLE IF NOT EXISTS cached_images (image_id TEXT PRIMARY KEY, last_accessed REAL DEFAULT 0.0, last_modified REAL DEFAULT 0.0, size INTEGER DEFAULT 0, hits INTEGER DEFAULT 0, checksum TEXT)')\n",
    );
    for (id, la, hits) in rows {
        script.push_str(&format!(
            "c.execute('INSERT INTO cached_images (image_id, last_accessed, last_modified, size, hits) VALUES (?, ?, ?, 1024, ?)', ('{id}', {la}, {la}, {hits}))\n"
        ));
    }
    script.push_str("c.commit()\n");
    let st = Command::new("python3")
        .args(["-c", &script])
        .arg(root.join("cache.db"))
        .status()
        .unwrap();
    assert!(st.success());
}

fn walk(root: &Path, args: &[&str]) -> (BTreeMap<String, Value>, Value) {
    let out = Command::new(env!("CARGO_BIN_EXE_cachewalk"))
        .arg("glance")
        .arg(root)
        .args(["--now", &NOW.to_string()])
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let recs: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let summary = recs.last().unwrap()["cache"].clone();
    assert_eq!(summary["record"], "summary");
    let m = recs[..recs.len() - 1]
        .iter()
        .map(|r| {
            (
                r["cache"]["rel_path"].as_str().unwrap().to_owned(),
                r["cache"].clone(),
            )
        })
        .collect();
    (m, summary)
}

fn layout(root: &Path) {
    for d in ["incomplete", "invalid", "queue"] {
        fs::create_dir_all(root.join(d)).unwrap();
    }
}

/// test_prune: ten 1 KiB images, 5 KiB max: the five least recently
/// accessed go, in last_accessed order (hits do not matter).
#[test]
fn prune_ranks_by_last_access_and_stops_under_max_size() {
    let t = tempfile::tempdir().unwrap();
    let root = t.path();
    layout(root);
    let mut rows = Vec::new();
    let ids: Vec<String> = (0..10).map(|x| x.to_string()).collect();
    for (x, id) in ids.iter().enumerate() {
        fs::write(root.join(id), vec![0u8; 1024]).unwrap();
        // Image 9 was read least recently; hits are the reverse.
        rows.push((
            id.as_str(),
            (NOW - 1000 + 100 * (9 - x as i64)) as f64,
            x as i64,
        ));
    }
    let rows: Vec<(&str, f64, i64)> = rows;
    cache_db(root, &rows);
    let (m, s) = walk(root, &["--cache-max-size", "5K"]);
    assert_eq!(s["driver"], "sqlite");
    assert_eq!(s["size"], 10 * 1024);
    assert_eq!(s["would_prune_count"], 5);
    for (x, id) in ids.iter().enumerate() {
        let e = &m[id];
        assert_eq!(e["class"], "active");
        assert_eq!(e["db_row"], true);
        assert_eq!(e["hits"], x as i64);
        assert_eq!(e["prune_rank"], 10 - x as i64, "{id}");
        assert_eq!(e["would_prune"], x >= 5, "{id}");
        assert_eq!(e["verdict"], if x >= 5 { "would_prune" } else { "keep" });
    }
    // Under the limit nothing goes; test_prune_to_zero: max 0 takes all.
    let (_, s) = walk(root, &["--cache-max-size", "10K"]);
    assert_eq!(s["would_prune_count"], 0);
    let (_, s) = walk(root, &["--cache-max-size", "0"]);
    assert_eq!(s["would_prune_count"], 10);
}

/// Orphans both ways: a file without a row (counted in the size, never
/// pruned: Glance's pruner cannot pick it) and a row without a file.
#[test]
fn orphan_files_and_rows() {
    let t = tempfile::tempdir().unwrap();
    let root = t.path();
    layout(root);
    fs::write(root.join("with-row"), vec![0u8; 2048]).unwrap();
    fs::write(root.join("no-row"), vec![0u8; 4096]).unwrap();
    fs::write(root.join("glance-cache-prune"), b"").unwrap();
    cache_db(
        root,
        &[
            ("with-row", (NOW - 10) as f64, 3),
            ("gone", (NOW - 20) as f64, 1),
        ],
    );
    let (m, s) = walk(root, &["--cache-max-size", "1K"]);
    assert_eq!(m["no-row"]["verdict"], "orphan_file");
    assert_eq!(m["no-row"]["db_row"], false);
    assert!(m["no-row"]["prune_rank"].is_null());
    assert_eq!(m["gone"]["verdict"], "orphan_row");
    assert_eq!(m["with-row"]["verdict"], "would_prune");
    assert_eq!(m["glance-cache-prune"]["class"], "lock");
    assert_eq!(m["cache.db"]["class"], "metadata_db");
    // Size: files in the root but cache.db (the lock file is empty).
    assert_eq!(s["size"], 2048 + 4096);
}

/// test_clean_stalled(_nonzero_stall_time), invalid entries, and the
/// queue's markers.
#[test]
fn stalled_invalid_and_queued() {
    let t = tempfile::tempdir().unwrap();
    let root = t.path();
    layout(root);
    cache_db(root, &[]);
    fs::write(root.join("incomplete/1"), b"x").unwrap();
    fs::write(root.join("incomplete/2"), b"x").unwrap();
    touch(&root.join("incomplete/1"), NOW - 86_400 - 1);
    touch(&root.join("incomplete/2"), NOW - 60);
    fs::write(root.join("invalid/3"), b"x").unwrap();
    fs::write(root.join("queue/4"), b"").unwrap();
    let (m, _) = walk(root, &[]);
    assert_eq!(m["incomplete/1"]["stalled"], true);
    assert_eq!(m["incomplete/1"]["verdict"], "orphan_temp");
    assert_eq!(m["incomplete/2"]["stalled"], false);
    assert_eq!(m["incomplete/2"]["verdict"], "keep");
    assert_eq!(m["invalid/3"]["verdict"], "orphan_temp");
    assert_eq!(m["queue/4"]["class"], "queued");
    // A shorter stall time catches both.
    let (m, _) = walk(root, &["--stall-time", "30"]);
    assert_eq!(m["incomplete/2"]["stalled"], true);
}

/// test_queue: queued once; refused when cached, being cached or queued.
#[test]
fn queue_markers_as_glance_cache_manage_makes_them() {
    let t = tempfile::tempdir().unwrap();
    let root = t.path();
    fs::create_dir_all(root.join("incomplete")).unwrap();
    fs::write(root.join("1"), b"cached").unwrap();
    fs::write(root.join("incomplete/2"), b"half").unwrap();
    let run = |ids: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_cachewalk"))
            .arg("glance")
            .arg(root)
            .arg("--queue")
            .args(ids)
            .output()
            .unwrap()
    };
    let out = run(&["0", "1", "2", "0", "../x"]);
    assert_eq!(out.status.code(), Some(2));
    let recs: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(recs[0]["cache"]["action"], "queued");
    assert_eq!(recs[1]["error"]["kind"], "already_exists");
    assert!(
        recs[1]["error"]["message"]
            .as_str()
            .unwrap()
            .contains("cached")
    );
    assert!(
        recs[2]["error"]["message"]
            .as_str()
            .unwrap()
            .contains("being cached")
    );
    assert!(
        recs[3]["error"]["message"]
            .as_str()
            .unwrap()
            .contains("queued")
    );
    assert_eq!(recs[4]["error"]["kind"], "bad_record");
    assert_eq!(fs::read(root.join("queue/0")).unwrap().len(), 0);
    assert!(!root.join("x").exists());
}

/// The xattr driver: hits from user.hits, last access from atime, every
/// regular root file ranked by (atime, size, path). Skipped (with the
/// reason printed) where the filesystem has no user xattrs.
#[test]
fn the_xattr_driver() {
    let t = tempfile::tempdir().unwrap();
    let root = t.path();
    layout(root);
    for (id, atime, hits) in [
        ("a", NOW - 300, "4"),
        ("b", NOW - 100, "9"),
        ("c", NOW - 200, "0"),
    ] {
        let p = root.join(id);
        fs::write(&p, vec![0u8; 1024]).unwrap();
        if let Err(e) = system::xattr::set(&p, "user.hits", hits.as_bytes()) {
            eprintln!("skipping: no user xattrs on {}: {e}", root.display());
            return;
        }
        let st = Command::new("touch")
            .args(["-a", "-d"])
            .arg(format!("@{atime}"))
            .arg(&p)
            .status()
            .unwrap();
        assert!(st.success());
    }
    let (m, s) = walk(root, &["--cache-max-size", "1K"]);
    assert_eq!(s["driver"], "xattr");
    assert_eq!(m["a"]["hits"], 4);
    assert_eq!(m["a"]["prune_rank"], 1);
    assert_eq!(m["c"]["prune_rank"], 2);
    assert_eq!(m["b"]["prune_rank"], 3);
    assert_eq!(m["a"]["would_prune"], true);
    assert_eq!(m["c"]["would_prune"], true);
    assert_eq!(m["b"]["would_prune"], false);
    assert_eq!(m["b"]["age_s"], 100);
}

/// --verify: MD5 against Glance's checksum and the multihash against
/// os_hash_value, what Glance itself never re-checks on a hit; a mismatch
/// is corrupt, --check exits 1, nothing is deleted.
#[test]
fn verify_cached_images_against_glance() {
    let t = tempfile::tempdir().unwrap();
    let root = t.path();
    layout(root);
    fs::write(root.join("good"), b"abc").unwrap();
    fs::write(root.join("rotten"), b"abd").unwrap();
    cache_db(
        root,
        &[
            ("good", (NOW - 5) as f64, 1),
            ("rotten", (NOW - 5) as f64, 1),
        ],
    );
    let sha512_abc = "ddaf35a193617abacc417349ae20413112e6fa4e89a97ea20a9eeee64b55d39a2192992a274fc1a836ba3c23a3feebbd454d4423643ce80e2a9ac94fa54ca49f";
    let images = root.join("images.jsonl");
    let line = |id: &str| {
        format!(
            "{{\"image\":{{\"id\":\"{id}\",\"checksum\":\"900150983cd24fb0d6963f7d28e17f72\",\"os_hash_algo\":\"sha512\",\"os_hash_value\":\"{sha512_abc}\",\"status\":\"active\"}}}}\n"
        )
    };
    fs::write(&images, format!("{}{}", line("good"), line("rotten"))).unwrap();
    let img = images.to_str().unwrap().to_owned();
    let (m, _) = walk(root, &["--verify", "--images", &img]);
    assert_eq!(m["good"]["verified"], true);
    assert_eq!(m["good"]["os_hash_value"], sha512_abc);
    assert_eq!(m["rotten"]["verified"], false);
    assert_eq!(m["rotten"]["verdict"], "corrupt");
    assert_eq!(
        m["rotten"]["mismatch"],
        serde_json::json!(["glance_checksum", "glance_os_hash_value"])
    );
    let out = Command::new(env!("CARGO_BIN_EXE_cachewalk"))
        .arg("glance")
        .arg(root)
        .args(["--verify", "--images", &img, "--check"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(root.join("rotten").exists());
}

/// cachewalk glance | select | cachewalk remove: Glance's prune (file and
/// cache.db row together), clean (stalled and invalid downloads), orphans
/// both ways; nothing else; and with centralized_db a refusal.
#[test]
fn remove_prunes_cleans_and_drops_orphans() {
    let t = tempfile::tempdir().unwrap();
    let root = t.path();
    layout(root);
    for id in ["old", "new", "no-row"] {
        fs::write(root.join(id), vec![0u8; 1024]).unwrap();
    }
    cache_db(
        root,
        &[
            ("old", (NOW - 500) as f64, 1),
            ("new", (NOW - 5) as f64, 9),
            ("gone", 1.0, 0),
        ],
    );
    fs::write(root.join("incomplete/stalled"), b"x").unwrap();
    touch(&root.join("incomplete/stalled"), NOW - 2 * 86_400);
    fs::write(root.join("incomplete/fresh"), b"x").unwrap();
    fs::write(root.join("invalid/failed"), b"x").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_cachewalk"))
        .arg("glance")
        .arg(root)
        .args(["--now", &NOW.to_string(), "--cache-max-size", "2K"])
        .output()
        .unwrap();
    let plan: String = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            v["cache"]["record"] == "entry" && v["cache"]["verdict"] != "keep"
        })
        .map(|l| format!("{l}\n"))
        .collect();
    let remove = |input: &str| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_cachewalk"))
            .arg("remove")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write;
        c.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
        c.wait_with_output().unwrap()
    };
    let out = remove(&plan);
    // Once the orphan file is gone the cache is within --cache-max-size: the
    // pruner would no longer pick "old", and remove, judging it again,
    // refuses it (exit 2).
    assert_eq!(
        out.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let acts: BTreeMap<String, String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            (
                v["cache"]["rel_path"].as_str().unwrap().to_owned(),
                v["cache"]["action"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let want: BTreeMap<String, String> = [
        ("gone", "deleted"),
        ("incomplete/stalled", "deleted"),
        ("invalid/failed", "deleted"),
        ("no-row", "deleted"),
        ("old", "refused"),
    ]
    .into_iter()
    .map(|(a, b)| (a.to_owned(), b.to_owned()))
    .collect();
    assert_eq!(acts, want);
    let mut left: Vec<String> = ["", "incomplete", "invalid"]
        .iter()
        .flat_map(|d| {
            fs::read_dir(root.join(d))
                .unwrap()
                .map(move |e| format!("{d}/{}", e.unwrap().file_name().to_string_lossy()))
        })
        .filter(|p| {
            !p.ends_with("/incomplete") && !p.ends_with("/invalid") && !p.ends_with("/queue")
        })
        .collect();
    left.sort();
    assert_eq!(left, vec!["/cache.db", "/new", "/old", "incomplete/fresh"]);
    // The rows of the removed images are gone, the kept one stays.
    let rows = Command::new("python3")
        .args(["-c", "import sqlite3,sys; print(sorted(r[0] for r in sqlite3.connect(sys.argv[1]).execute('SELECT image_id FROM cached_images')))"])
        .arg(root.join("cache.db"))
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&rows.stdout).trim(),
        "['new', 'old']"
    );

    // centralized_db: the rows are Glance's; refuse.
    fs::write(root.join("x"), vec![0u8; 4096]).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_cachewalk"))
        .arg("glance")
        .arg(root)
        .args([
            "--now",
            &NOW.to_string(),
            "--cache-max-size",
            "0",
            "--cache-driver",
            "centralized-db",
        ])
        .output()
        .unwrap();
    let line = String::from_utf8_lossy(&out.stdout)
        .lines()
        .find(|l| l.contains("\"rel_path\":\"x\""))
        .map(|l| {
            let mut v: Value = serde_json::from_str(l).unwrap();
            v["cache"]["verdict"] = "would_prune".into();
            format!("{v}\n")
        })
        .unwrap();
    let out = remove(&line);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["cache"]["action"], "refused_centralized_db");
    assert!(root.join("x").exists());
}

/// A removal that fails is reported (`delete_failed`, exit 2) and the run
/// goes on: here Glance's cache.db is held by another writer (Python in an
/// exclusive transaction), so the pruned image and its row both stay,
/// while the failed download that needs no row is cleaned.
#[test]
fn a_failed_removal_is_reported_and_the_run_goes_on() {
    let t = tempfile::tempdir().unwrap();
    let root = t.path();
    layout(root);
    fs::write(root.join("img"), vec![0u8; 4096]).unwrap();
    fs::write(root.join("invalid/bad"), b"x").unwrap();
    cache_db(root, &[("img", (NOW - 50) as f64, 1)]);
    let out = Command::new(env!("CARGO_BIN_EXE_cachewalk"))
        .arg("glance")
        .arg(root)
        .args(["--now", &NOW.to_string(), "--cache-max-size", "0"])
        .output()
        .unwrap();
    let plan: String = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| {
            l.contains("\"verdict\":\"would_prune\"") || l.contains("\"verdict\":\"orphan_temp\"")
        })
        .map(|l| format!("{l}\n"))
        .collect();
    assert_eq!(plan.lines().count(), 2);
    let mut holder = Command::new("python3")
        .args([
            "-c",
            "import sqlite3,sys,time\nc=sqlite3.connect(sys.argv[1], isolation_level=None)\nc.execute('BEGIN EXCLUSIVE')\nprint('held', flush=True)\ntime.sleep(20)\n",
        ])
        .arg(root.join("cache.db"))
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(holder.stdout.take().unwrap()),
        &mut line,
    )
    .unwrap();
    assert_eq!(line.trim(), "held");
    let mut c = Command::new(env!("CARGO_BIN_EXE_cachewalk"))
        .arg("remove")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        c.stdin.take().unwrap().write_all(plan.as_bytes()).unwrap();
    }
    let out = c.wait_with_output().unwrap();
    let _ = holder.kill();
    let _ = holder.wait();
    assert_eq!(out.status.code(), Some(2));
    let acts: Vec<(String, String)> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            (
                v["cache"]["rel_path"].as_str().unwrap().to_owned(),
                v["cache"]["action"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        acts,
        vec![
            ("img".to_string(), "delete_failed".to_string()),
            ("invalid/bad".to_string(), "deleted".to_string()),
        ]
    );
    assert!(root.join("img").exists(), "the file stays with its row");
    assert!(!root.join("invalid/bad").exists());
}

/// A record is not evidence: a `keep` entry turned into `would_prune` with
/// jq is judged again under cache.db's write lock and refused (kind
/// refused, exit 2), its file and its row stay; the true prune victim of
/// the same walk, judged the same way again, goes.
#[test]
fn remove_judges_each_glance_verdict_again_and_refuses_an_edited_one() {
    let t = tempfile::tempdir().unwrap();
    let root = t.path();
    layout(root);
    for id in ["lru", "mru"] {
        fs::write(root.join(id), vec![0u8; 1024]).unwrap();
    }
    cache_db(
        root,
        &[("lru", (NOW - 500) as f64, 1), ("mru", (NOW - 5) as f64, 1)],
    );
    let (m, _) = walk(root, &["--cache-max-size", "1K"]);
    assert_eq!(m["lru"]["verdict"], "would_prune");
    assert_eq!(m["mru"]["verdict"], "keep");
    let script = format!(
        "{} glance {} --now {NOW} --max-size 1K \
         | jq -c 'select(.cache.record == \"entry\" and .cache.class == \"active\") \
                  | .cache.verdict = \"would_prune\"' \
         | {} remove --now {NOW}",
        env!("CARGO_BIN_EXE_cachewalk"),
        root.display(),
        env!("CARGO_BIN_EXE_cachewalk"),
    );
    let out = Command::new("sh").args(["-c", &script]).output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let recs: BTreeMap<String, Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            (v["cache"]["rel_path"].as_str().unwrap().to_owned(), v)
        })
        .collect();
    assert_eq!(recs["lru"]["cache"]["action"], "deleted");
    assert!(recs["lru"].get("error").is_none());
    let mru = &recs["mru"];
    assert_eq!(mru["cache"]["action"], "refused");
    assert_eq!(mru["error"]["kind"], "refused");
    let msg = mru["error"]["message"].as_str().unwrap();
    assert!(
        msg.starts_with("the record's verdict is not what the cache says now"),
        "{msg}"
    );
    assert!(
        !msg.contains(root.to_str().unwrap()),
        "path named twice: {msg}"
    );
    assert!(!root.join("lru").exists());
    assert!(root.join("mru").exists(), "the edited record's file stays");
    let rows = Command::new("python3")
        .args(["-c", "import sqlite3,sys; print(sorted(r[0] for r in sqlite3.connect(sys.argv[1]).execute('SELECT image_id FROM cached_images')))"])
        .arg(root.join("cache.db"))
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&rows.stdout).trim(), "['mru']");

    // A record without the limit it was judged by is not acted on.
    let (m, _) = walk(root, &["--cache-max-size", "0"]);
    let mut rec = serde_json::json!({"path": root.join("mru"), "cache": m["mru"].clone()});
    rec["cache"].as_object_mut().unwrap().remove("max_size");
    let mut c = Command::new(env!("CARGO_BIN_EXE_cachewalk"))
        .arg("remove")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        c.stdin
            .take()
            .unwrap()
            .write_all(format!("{rec}\n").as_bytes())
            .unwrap();
    }
    let out = c.wait_with_output().unwrap();
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["cache"]["action"], "skipped_not_candidate");
    assert!(root.join("mru").exists());
}

/// `cachewalk remove --glance-cache DIR` with its output records and exit.
fn delete_cached(root: &Path, args: &[&str]) -> (Option<i32>, BTreeMap<String, Value>) {
    let out = Command::new(env!("CARGO_BIN_EXE_cachewalk"))
        .arg("remove")
        .arg("--glance-cache")
        .arg(root)
        .args(args)
        .output()
        .unwrap();
    let recs = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            let key = v["cache"]["image_id"]
                .as_str()
                .map_or_else(|| "-".to_owned(), str::to_owned);
            (key, v)
        })
        .collect();
    (out.status.code(), recs)
}

fn rows(root: &Path) -> String {
    let out = Command::new("python3")
        .args(["-c", "import sqlite3,sys; print(sorted(r[0] for r in sqlite3.connect(sys.argv[1]).execute('SELECT image_id FROM cached_images')))"])
        .arg(root.join("cache.db"))
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// glance-cache-manage delete-cached-image / delete-all-cached-images on a
/// real sqlite cache: a named image goes with its cache.db row; --all takes
/// every cached image and nothing else (cache.db, Glance's lock files stay);
/// an image being written (incomplete/ID, held open by a live writer) is
/// skipped_busy, kind busy, exit 75, and its download is untouched.
#[test]
fn delete_named_and_all_cached_images() {
    let t = tempfile::tempdir().unwrap();
    let root = t.path();
    layout(root);
    for id in ["a", "b", "c"] {
        fs::write(root.join(id), vec![1u8; 2048]).unwrap();
    }
    fs::write(root.join("glance-cache-prune"), b"").unwrap();
    cache_db(
        root,
        &[
            ("a", (NOW - 50) as f64, 1),
            ("b", (NOW - 40) as f64, 1),
            ("c", (NOW - 30) as f64, 1),
            ("row-only", (NOW - 30) as f64, 1),
        ],
    );
    // A download in progress: its writer keeps incomplete/w open.
    let mut writer = Command::new("python3")
        .args([
            "-c",
            "import sys,time\nf=open(sys.argv[1],'wb')\nf.write(b'x'*100)\nf.flush()\nprint('open',flush=True)\ntime.sleep(30)\n",
        ])
        .arg(root.join("incomplete/w"))
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(writer.stdout.take().unwrap()),
        &mut line,
    )
    .unwrap();
    assert_eq!(line.trim(), "open");

    // Named: a goes, file and row; --dry-run first changes nothing.
    let (code, r) = delete_cached(root, &["--image-id", "a", "--dry-run"]);
    assert_eq!(code, Some(0));
    assert_eq!(r["a"]["cache"]["action"], "would_delete");
    assert!(root.join("a").exists());
    let (code, r) = delete_cached(root, &["--image-id", "a", "nothing-here"]);
    assert_eq!(code, Some(0));
    assert_eq!(r["a"]["cache"]["action"], "deleted");
    assert_eq!(
        r["a"]["cache"]["also_removed"],
        serde_json::json!(["cache.db:cached_images:a"])
    );
    assert_eq!(r["a"]["path"], root.join("a").to_str().unwrap());
    assert_eq!(r["nothing-here"]["cache"]["action"], "not_cached");
    assert!(!root.join("a").exists());
    assert_eq!(rows(root), "['b', 'c', 'row-only']");

    // Named, being written: refused as busy, nothing touched.
    let (code, r) = delete_cached(root, &["--image-id", "w"]);
    assert_eq!(code, Some(75));
    assert_eq!(r["w"]["cache"]["action"], "skipped_busy");
    assert_eq!(r["w"]["error"]["kind"], "busy");
    let why = r["w"]["error"]["message"].as_str().unwrap();
    assert!(why.contains(&format!("pid [{}]", writer.id())), "{why}");
    assert_eq!(fs::read(root.join("incomplete/w")).unwrap().len(), 100);

    // All: every cached image and row, the busy one refused (exit 75).
    let (code, r) = delete_cached(root, &["--all"]);
    assert_eq!(code, Some(75));
    let acts: BTreeMap<&str, &str> = r
        .iter()
        .map(|(k, v)| (k.as_str(), v["cache"]["action"].as_str().unwrap()))
        .collect();
    assert_eq!(
        acts,
        BTreeMap::from([
            ("b", "deleted"),
            ("c", "deleted"),
            ("row-only", "deleted"),
            ("w", "skipped_busy"),
        ])
    );
    assert_eq!(rows(root), "[]");
    let mut left: Vec<String> = fs::read_dir(root)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    left.sort();
    assert_eq!(
        left,
        vec![
            "cache.db",
            "glance-cache-prune",
            "incomplete",
            "invalid",
            "queue"
        ]
    );
    assert!(root.join("incomplete/w").exists());
    let _ = writer.kill();
    let _ = writer.wait();

    // Usage: no --image/--all, a flag of the other mode, a bad id; each
    // an error record of kind usage, exit 2, nothing deleted.
    fs::write(root.join("d"), b"x").unwrap();
    for args in [
        vec![],
        vec!["--all", "--now", "0"],
        vec!["--image-id", "../d"],
        vec!["--image-id", "d", "--all"],
    ] {
        let (code, r) = delete_cached(root, &args);
        assert_eq!(code, Some(2), "{args:?}");
        assert_eq!(r["-"]["error"]["kind"], "usage", "{args:?}");
    }
    let out = Command::new(env!("CARGO_BIN_EXE_cachewalk"))
        .args(["remove", "--image-id", "d"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(root.join("d").exists());
}

/// The same on an xattr cache (skipped where the filesystem has no user
/// xattrs): the file goes; there is no row.
#[test]
fn delete_cached_images_of_an_xattr_cache() {
    let t = tempfile::tempdir().unwrap();
    let root = t.path();
    layout(root);
    for id in ["x", "y"] {
        let p = root.join(id);
        fs::write(&p, b"data").unwrap();
        if let Err(e) = system::xattr::set(&p, "user.hits", b"1") {
            eprintln!("skipping: no user xattrs on {}: {e}", root.display());
            return;
        }
    }
    let (code, r) = delete_cached(root, &["--image-id", "x"]);
    assert_eq!(code, Some(0));
    assert_eq!(r["x"]["cache"]["driver"], "xattr");
    assert_eq!(r["x"]["cache"]["action"], "deleted");
    assert!(!root.join("x").exists());
    assert!(root.join("y").exists());
    let (code, r) = delete_cached(root, &["--all"]);
    assert_eq!(code, Some(0));
    assert_eq!(r["y"]["cache"]["action"], "deleted");
    assert!(!root.join("y").exists());
    // Without evidence of a driver (no cache.db, no xattrs): refused.
    fs::write(root.join("z"), b"data").unwrap();
    let (code, r) = delete_cached(root, &["--image-id", "z"]);
    assert_eq!(code, Some(2));
    assert_eq!(r["z"]["cache"]["action"], "refused_centralized_db");
    assert_eq!(r["z"]["error"]["kind"], "refused");
    assert!(root.join("z").exists());
}
