//! `cachewalk nova ... | select candidates | cachewalk remove`: exactly the
//! candidates go (with their sidecars and lock files), under Nova's lock,
//! re-checked; a Python process holding `fcntl.lockf` on the lock makes
//! remove skip (exit 75), and a lock cachewalk holds blocks Python; files
//! changed or newly used since the walk are kept.
#![cfg(test)]

mod support;
use support::{DAY, NOW, fp, have_qemu};

use serde_json::Value;
use std::fs;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use test_support::records;

/// A file of `len` bytes with mtime `NOW - age`.
fn file(p: &Path, len: usize, age: i64) {
    support::file_of(p, len, 1, age);
}

fn cachewalk(args: &[&str], stdin: &str, env: &[(&str, &str)]) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_cachewalk"));
    c.args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        c.env(k, v);
    }
    let mut child = c.spawn().unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

/// The walk's candidate records, as `jq -c 'select(.cache.verdict ==
/// "candidate")'` would pass them.
fn candidates(root: &Path, inventory: &str) -> String {
    let out = cachewalk(
        &[
            "nova",
            root.to_str().unwrap(),
            "--now",
            &NOW.to_string(),
            "--instances",
            "-",
            "--host",
            "c1",
        ],
        inventory,
        &[],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| serde_json::from_str::<Value>(l).unwrap()["cache"]["verdict"] == "candidate")
        .map(|l| format!("{l}\n"))
        .collect()
}

fn remove(input: &str, extra: &[&str], env: &[(&str, &str)]) -> Output {
    let mut args = vec!["remove", "--now"];
    let now = NOW.to_string();
    args.push(&now);
    args.extend_from_slice(extra);
    cachewalk(&args, input, env)
}

/// A host laid out as Nova lays it out.
fn host(root: &Path) {
    fs::create_dir_all(root.join("_base")).unwrap();
    fs::create_dir_all(root.join("locks")).unwrap();
    fs::create_dir_all(root.join("inst-1")).unwrap();
    file(&root.join("_base").join(fp("in-use")), 4096, 10 * DAY);
    file(&root.join("_base").join(fp("unused")), 4096, 10 * DAY);
    file(
        &root.join("_base").join(format!("{}.info", fp("unused"))),
        10,
        10 * DAY,
    );
    file(
        &root.join("locks").join(format!("nova-{}", fp("unused"))),
        0,
        10 * DAY,
    );
    file(&root.join("_base").join(fp("young")), 4096, 60);
    file(&root.join("_base").join("swap_1024"), 4096, 3 * DAY);
    let st = Command::new("qemu-img")
        .args(["create", "-q", "-f", "qcow2", "-u", "-F", "raw", "-b"])
        .arg(format!("../_base/{}", fp("in-use")))
        .arg(root.join("inst-1/disk"))
        .arg("1G")
        .status()
        .unwrap();
    assert!(st.success());
}

#[test]
fn exactly_the_candidates_go_with_their_sidecars_and_locks() {
    if !have_qemu() {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let root = t.path();
    host(root);
    let inv = "{\"uuid\":\"inst-1\",\"host\":\"c1\",\"image_ref\":\"in-use\"}\n";
    let cands = candidates(root, inv);
    let names: Vec<String> = cands
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["cache"]["rel_path"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(
        names,
        vec![
            format!("_base/{}", fp("unused")),
            "_base/swap_1024".to_string()
        ]
    );

    // --dry-run: the same list, nothing deleted.
    let out = remove(&cands, &["--dry-run"], &[]);
    assert!(out.status.success());
    let r = records(&out);
    assert!(
        r.iter().all(|x| x["cache"]["action"] == "would_delete"),
        "{r:?}"
    );
    assert!(root.join("_base").join(fp("unused")).exists());

    let out = remove(&cands, &[], &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r = records(&out);
    assert_eq!(r[0]["cache"]["action"], "deleted");
    assert_eq!(
        r[0]["cache"]["also_removed"],
        serde_json::json!([
            format!("_base/{}.info", fp("unused")),
            format!("locks/nova-{}", fp("unused"))
        ])
    );
    assert_eq!(r[1]["cache"]["action"], "deleted");
    let mut left: Vec<String> = fs::read_dir(root.join("_base"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    left.sort();
    let mut want = vec![fp("in-use"), fp("young")];
    want.sort();
    assert_eq!(left, want);
    // Replaying the same records: the files are gone, nothing else goes.
    let r = records(&remove(&cands, &[], &[]));
    assert!(
        r.iter()
            .all(|x| x["cache"]["action"] == "changed_since_walk")
    );
}

#[test]
fn a_lock_held_by_python_lockf_makes_remove_skip_with_75() {
    if !have_qemu() {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let root = t.path();
    host(root);
    let cands = candidates(
        root,
        "{\"uuid\":\"inst-1\",\"host\":\"c1\",\"image_ref\":\"in-use\"}\n",
    );
    let lock = root.join("locks").join(format!("nova-{}", fp("unused")));
    // Nova's way: fasteners opens in append mode and takes lockf.
    let mut py = Command::new("python3")
        .args([
            "-c",
            "import fcntl, sys, time\nf = open(sys.argv[1], 'a')\nfcntl.lockf(f, fcntl.LOCK_EX | fcntl.LOCK_NB)\nprint('locked', flush=True)\ntime.sleep(30)\n",
        ])
        .arg(&lock)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(py.stdout.take().unwrap()),
        &mut line,
    )
    .unwrap();
    assert_eq!(line.trim(), "locked");
    let out = remove(&cands, &[], &[]);
    let _ = py.kill();
    let _ = py.wait();
    assert_eq!(out.status.code(), Some(75));
    let r = records(&out);
    assert_eq!(r[0]["cache"]["action"], "skipped_lock_busy");
    assert!(root.join("_base").join(fp("unused")).exists());
    // The other candidate, with a free lock, went.
    assert_eq!(r[1]["cache"]["action"], "deleted");
}

#[test]
fn a_lock_held_by_cachewalk_blocks_python() {
    if !have_qemu() {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let root = t.path();
    host(root);
    let cands = candidates(
        root,
        "{\"uuid\":\"inst-1\",\"host\":\"c1\",\"image_ref\":\"in-use\"}\n",
    );
    let first = format!("{}\n", cands.lines().next().unwrap());
    let lock = root.join("locks").join(format!("nova-{}", fp("unused")));
    let mut c = Command::new(env!("CARGO_BIN_EXE_cachewalk"))
        .args(["remove", "--now", &NOW.to_string()])
        .env("CACHEWALK_TEST_HOLD_LOCK_MS", "1500")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    c.stdin.take().unwrap().write_all(first.as_bytes()).unwrap();
    // Python tries the lock the way Nova does until it finds it held.
    let py = Command::new("python3")
        .args([
            "-c",
            "import fcntl, sys, time\nend = time.time() + 5\nwhile time.time() < end:\n    f = open(sys.argv[1], 'a')\n    try:\n        fcntl.lockf(f, fcntl.LOCK_EX | fcntl.LOCK_NB)\n    except OSError:\n        print('blocked'); sys.exit(0)\n    f.close(); time.sleep(0.005)\nprint('never blocked'); sys.exit(1)\n",
        ])
        .arg(&lock)
        .output()
        .unwrap();
    let out = c.wait_with_output().unwrap();
    assert_eq!(String::from_utf8_lossy(&py.stdout).trim(), "blocked");
    assert!(out.status.success());
    assert_eq!(records(&out)[0]["cache"]["action"], "deleted");
}

#[test]
fn changed_newly_used_limited_and_non_candidates_are_kept() {
    if !have_qemu() {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let root = t.path();
    host(root);
    file(&root.join("_base").join(fp("other")), 4096, 10 * DAY);
    let inv = "{\"uuid\":\"inst-1\",\"host\":\"c1\",\"image_ref\":\"in-use\"}\n";
    let cands = candidates(root, inv);
    assert_eq!(cands.lines().count(), 3);
    // After the walk: one file rewritten, one now backs a new instance.
    file(&root.join("_base").join(fp("unused")), 4097, 10 * DAY);
    fs::create_dir(root.join("inst-2")).unwrap();
    let st = Command::new("qemu-img")
        .args(["create", "-q", "-f", "qcow2", "-u", "-F", "raw", "-b"])
        .arg(format!("../_base/{}", fp("other")))
        .arg(root.join("inst-2/disk.local"))
        .arg("1G")
        .status()
        .unwrap();
    assert!(st.success());
    let r = records(&remove(&cands, &["--max-count", "0"], &[]));
    let by: std::collections::BTreeMap<String, String> = r
        .iter()
        .map(|x| {
            (
                x["cache"]["rel_path"].as_str().unwrap().to_owned(),
                x["cache"]["action"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(by[&format!("_base/{}", fp("unused"))], "changed_since_walk");
    assert_eq!(by[&format!("_base/{}", fp("other"))], "still_in_use");
    assert_eq!(by["_base/swap_1024"], "limit_reached");
    // Not candidates: never touched.
    let walk = cachewalk(
        &[
            "nova",
            root.to_str().unwrap(),
            "--now",
            &NOW.to_string(),
            "--instances",
            "-",
            "--host",
            "c1",
        ],
        inv,
        &[],
    );
    let all = String::from_utf8_lossy(&walk.stdout).into_owned();
    let r = records(&remove(&all, &[], &[]));
    for x in &r {
        if x["cache"]["verdict"] != "candidate" {
            assert_eq!(x["cache"]["action"], "skipped_not_candidate", "{x}");
        }
    }
    assert!(root.join("_base").join(fp("in-use")).exists());
    assert!(root.join("_base").join(fp("young")).exists());
}

/// A base file whose name is not UTF-8: its record carries path_bytes
/// (and rel_path_bytes), which imginfo-parse and remove read back, and
/// remove deletes exactly that file.
#[test]
fn a_non_utf8_name_round_trips_through_remove() {
    use std::os::unix::ffi::OsStrExt;
    let t = tempfile::tempdir().unwrap();
    let root = t.path();
    fs::create_dir_all(root.join("_base")).unwrap();
    // An old ephemeral name whose suffix Nova counts as 7 characters.
    let name = std::ffi::OsStr::from_bytes(b"ephemeral_20_wi\xffdows");
    let p = root.join("_base").join(name);
    file(&p, 4096, 3 * DAY);
    let plan = candidates(root, "");
    let recs: Vec<Value> = plan
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(recs.len(), 1, "{plan}");
    let want = system::text::base64(p.as_os_str().as_bytes());
    assert_eq!(recs[0]["path_bytes"], want.as_str());
    assert_eq!(
        recs[0]["cache"]["rel_path_bytes"],
        system::text::base64(b"_base/ephemeral_20_wi\xffdows").as_str()
    );
    let out = remove(&plan, &[], &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v = &records(&out)[0];
    assert_eq!(v["cache"]["action"], "deleted", "{v}");
    assert_eq!(v["path_bytes"], want.as_str());
    assert!(!p.exists());
}
