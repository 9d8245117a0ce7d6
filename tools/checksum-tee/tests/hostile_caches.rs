//! Hostile caches (issue 17): a Glance image cache or a Nova `_base` whose
//! own subdirectories, `cache.db`, lock file or entry names are symbolic
//! links, and directories swapped for links between two steps of a fill
//! (driven by the `checksum-tee.before_commit` hook, not by timing). Each
//! case is built in a scratch directory with decoy files OUTSIDE the cache,
//! snapshotted (content hashes, link targets, every name) before and after:
//! nothing outside is written, created, renamed or removed.
#![cfg(test)]

use serde_json::Value;
use std::collections::BTreeMap;
use std::os::unix::fs::symlink;
use std::path::Path;
use std::process::{Command, Output, Stdio};

mod support;

use support::BIN;

const DATA: &[u8] = b"the verified image bytes";
const ID: &str = "fd0cb2f1-8375-44c9-b1f4-3e1f4c4a8ef0";
/// Nova's cache name for ID: its SHA-1.
const NAME: &str = "0d5e6b61602d758984b3bf038267614d6016eb2a";
const HOOK: &str = "IMAGE_TOOLS_TEST_HOOK_CHECKSUM_TEE_BEFORE_COMMIT";

fn sha256(bytes: &[u8]) -> String {
    let mut h = system::hash::MultiHasher::new(&[system::hash::Algorithm::Sha256]);
    h.update(&bytes::Bytes::copy_from_slice(bytes));
    h.finish().remove(0).1
}

/// `--expect md5:.. --expect-size N` for `bytes`.
fn verified_by(bytes: &[u8]) -> Vec<String> {
    let mut h = system::hash::MultiHasher::new(&[system::hash::Algorithm::Md5]);
    h.update(&bytes::Bytes::copy_from_slice(bytes));
    let md5 = h.finish().remove(0).1;
    vec![
        "--expect".into(),
        format!("md5:{md5}"),
        "--expect-size".into(),
        bytes.len().to_string(),
    ]
}

/// Every name under `dir` (not following links): a file's SHA-256, a
/// link's target, a directory as such.
fn snapshot(dir: &Path) -> BTreeMap<String, String> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, String>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            let rel = p.strip_prefix(root).unwrap().display().to_string();
            let m = std::fs::symlink_metadata(&p).unwrap();
            if m.file_type().is_symlink() {
                let t = std::fs::read_link(&p).unwrap();
                out.insert(rel, format!("link -> {}", t.display()));
            } else if m.is_dir() {
                out.insert(rel, "dir".into());
                walk(root, &p, out);
            } else {
                out.insert(rel, sha256(&std::fs::read(&p).unwrap()));
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(dir, dir, &mut out);
    out
}

/// A scratch tree: `outside/` with decoys (a file named like the image,
/// a sqlite database, a lock-like file), beside which the cache is built.
struct Scratch {
    dir: tempfile::TempDir,
    before: BTreeMap<String, String>,
}

impl Scratch {
    fn new() -> Scratch {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("outside");
        std::fs::create_dir(&out).unwrap();
        std::fs::write(out.join(ID), b"decoy named like the image").unwrap();
        std::fs::write(out.join(NAME), b"decoy named like the base file").unwrap();
        std::fs::write(out.join("decoy"), b"an operator's file").unwrap();
        std::fs::write(out.join(format!("nova-{NAME}")), b"decoy lock").unwrap();
        sqlite(
            &out.join("real.db"),
            "CREATE TABLE keep (x); INSERT INTO keep VALUES (42)",
        );
        Scratch {
            dir,
            before: BTreeMap::new(),
        }
    }

    fn p(&self) -> &Path {
        self.dir.path()
    }

    fn outside(&self) -> std::path::PathBuf {
        self.p().join("outside")
    }

    /// Take the decoys' snapshot (after the attack is planted).
    fn seal(&mut self) {
        self.before = snapshot(&self.outside());
        assert!(self.before.len() >= 4);
    }

    /// Nothing outside the cache changed, appeared or went.
    fn assert_outside_untouched(&self, what: &str) {
        assert_eq!(
            snapshot(&self.outside()),
            self.before,
            "{what}: the decoys outside the cache changed"
        );
    }
}

fn sqlite(db: &Path, sql: &str) {
    let st = Command::new("python3")
        .args([
            "-c",
            "import sqlite3,sys; c=sqlite3.connect(sys.argv[1]); c.executescript(sys.argv[2]); c.commit()",
        ])
        .arg(db)
        .arg(sql)
        .status()
        .unwrap();
    assert!(st.success());
}

const CACHED_IMAGES: &str = "CREATE TABLE cached_images (image_id TEXT PRIMARY KEY, \
last_accessed REAL DEFAULT 0.0, last_modified REAL DEFAULT 0.0, size INTEGER DEFAULT 0, \
hits INTEGER DEFAULT 0, checksum TEXT)";

/// A Glance cache as glance-api's sqlite driver leaves it, with the image
/// queued.
fn glance_cache(cache: &Path) {
    for sub in ["incomplete", "invalid", "queue"] {
        std::fs::create_dir_all(cache.join(sub)).unwrap();
    }
    std::fs::write(cache.join("queue").join(ID), b"").unwrap();
    sqlite(&cache.join("cache.db"), CACHED_IMAGES);
}

fn rows(db: &Path) -> String {
    let out = Command::new("python3")
        .args([
            "-c",
            "import sqlite3,sys; print([(r[0], r[1]) for r in sqlite3.connect(sys.argv[1]).execute('select image_id, size from cached_images')])",
        ])
        .arg(db)
        .output()
        .unwrap();
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

/// Run checksum-tee in `dir` with `args`, `envs` and `stdin`.
fn run_env(dir: &Path, args: &[&str], envs: &[(&str, String)], stdin: &[u8]) -> Output {
    let mut cmd = Command::new(BIN);
    cmd.args(args)
        .current_dir(dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().unwrap();
    let mut input = child.stdin.take().unwrap();
    let data = stdin.to_vec();
    let w = std::thread::spawn(move || {
        let _ = std::io::Write::write_all(&mut input, &data);
    });
    let out = child.wait_with_output().unwrap();
    w.join().unwrap();
    out
}

/// A verified Glance fill of DATA into `cache`.
fn glance_fill(dir: &Path, extra: &[&str], envs: &[(&str, String)], data: &[u8]) -> Output {
    let mut args: Vec<String> = ["--glance-cache", "cache", "--image-id", ID]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
    args.extend(extra.iter().map(|s| (*s).to_owned()));
    args.extend(verified_by(DATA));
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    run_env(dir, &refs, envs, data)
}

/// A verified Nova fill of DATA into `inst/_base`.
fn nova_fill(dir: &Path, envs: &[(&str, String)]) -> Output {
    let mut args: Vec<String> = [
        "--nova-base",
        "inst",
        "--image-id",
        ID,
        "--lock-timeout",
        "1",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    args.extend(verified_by(DATA));
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    run_env(dir, &refs, envs, DATA)
}

fn record(out: &Output) -> Value {
    let text = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(text.lines().last().unwrap_or("{}"))
        .unwrap_or_else(|e| panic!("{e}: {text:?} / {}", String::from_utf8_lossy(&out.stderr)))
}

/// Exit 2, refused before any byte, with `kind`.
fn assert_refused(out: &Output, kind: &str, what: &str) {
    let r = record(out);
    assert_eq!(
        out.status.code(),
        Some(2),
        "{what}: {r} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(r["error"]["kind"], kind, "{what}: {r}");
    assert_eq!(r["checksums"]["state"], "refused", "{what}: {r}");
}

fn is_link(p: &Path) -> bool {
    std::fs::symlink_metadata(p).is_ok_and(|m| m.file_type().is_symlink())
}

#[test]
fn glance_symlinked_subdirectories_are_refused_before_any_byte() {
    for sub in ["incomplete", "invalid", "queue"] {
        let mut s = Scratch::new();
        let cache = s.p().join("cache");
        glance_cache(&cache);
        std::fs::remove_dir_all(cache.join(sub)).unwrap();
        symlink(s.outside(), cache.join(sub)).unwrap();
        s.seal();
        // A mismatch would go to invalid/ (the attack: an outside
        // file replaced by the unverified stream); a match would remove
        // queue/ID.
        for data in [DATA, b"not the verified bytes!!".as_slice()] {
            let out = glance_fill(s.p(), &[], &[], data);
            assert_refused(&out, "symlink", sub);
            let msg = record(&out)["error"]["message"]
                .as_str()
                .unwrap()
                .to_owned();
            assert!(msg.contains(&format!("cache/{sub}")), "{sub}: {msg}");
            s.assert_outside_untouched(sub);
            assert!(is_link(&cache.join(sub)), "{sub}: the link itself stays");
            assert!(!cache.join(ID).exists(), "{sub}");
            assert_eq!(rows(&cache.join("cache.db")), "[]", "{sub}");
        }
    }
}

#[test]
fn glance_symlinked_cache_db_is_refused_and_never_created_at_its_target() {
    // Dangling (sqlite would create a root-owned file there), pointing at
    // another database, and a planted journal.
    for (what, name, target) in [
        ("dangling cache.db", "cache.db", "outside/new.db"),
        ("cache.db to a database", "cache.db", "outside/real.db"),
        ("journal", "cache.db-journal", "outside/decoy"),
        ("wal", "cache.db-wal", "outside/wal"),
    ] {
        for driver in ["auto", "sqlite"] {
            let mut s = Scratch::new();
            let cache = s.p().join("cache");
            glance_cache(&cache);
            if name == "cache.db" {
                std::fs::remove_file(cache.join("cache.db")).unwrap();
            }
            symlink(s.p().join(target), cache.join(name)).unwrap();
            s.seal();
            let out = glance_fill(s.p(), &["--cache-driver", driver], &[], DATA);
            assert_refused(&out, "symlink", what);
            s.assert_outside_untouched(what);
            assert!(!s.p().join("outside/new.db").exists(), "{what}");
            assert!(!s.p().join("outside/wal").exists(), "{what}");
            assert!(is_link(&cache.join(name)), "{what}");
            assert!(!cache.join(ID).exists(), "{what}");
            assert!(cache.join("queue").join(ID).exists(), "{what}");
            assert_eq!(
                std::fs::read_dir(cache.join("incomplete")).unwrap().count(),
                0,
                "{what}"
            );
        }
    }
}

#[test]
fn best_effort_still_serves_every_byte_when_a_subdirectory_is_a_link() {
    let mut s = Scratch::new();
    let cache = s.p().join("cache");
    glance_cache(&cache);
    std::fs::remove_dir(cache.join("invalid")).unwrap();
    symlink(s.outside(), cache.join("invalid")).unwrap();
    s.seal();
    let big: Vec<u8> = (0..(3u32 << 20) + 17).map(|i| (i * 7) as u8).collect();
    let out = glance_fill(
        s.p(),
        &["--tee", "--best-effort-cache", "--report", "r.json", "-q"],
        &[],
        &big,
    );
    assert!(out.stdout == big, "stdout is not the input");
    assert_eq!(out.status.code(), Some(2));
    let r: Value = serde_json::from_slice(&std::fs::read(s.p().join("r.json")).unwrap()).unwrap();
    assert_eq!(r["checksums"]["state"], "refused", "{r}");
    assert_eq!(r["checksums"]["bytes"], big.len() as u64);
    assert_eq!(r["error"]["kind"], "symlink", "{r}");
    s.assert_outside_untouched("best effort");
}

#[test]
fn glance_final_name_as_a_link_is_never_followed_or_replaced() {
    let mut s = Scratch::new();
    let cache = s.p().join("cache");
    glance_cache(&cache);
    symlink(s.outside().join(ID), cache.join(ID)).unwrap();
    // And dangling: nothing is created at its target either.
    let other = "0aa3d3d5-4d2b-4f3e-9f1c-8f3f3f1f0c5e";
    symlink(s.outside().join("created"), cache.join(other)).unwrap();
    s.seal();
    let out = glance_fill(s.p(), &[], &[], DATA);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(record(&out)["error"]["kind"], "already_exists");
    let mut args: Vec<String> = ["--glance-cache", "cache", "--image-id", other]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
    args.extend(verified_by(DATA));
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = run_env(s.p(), &refs, &[], DATA);
    assert_eq!(record(&out)["error"]["kind"], "already_exists");
    s.assert_outside_untouched("final name");
    assert!(is_link(&cache.join(ID)) && is_link(&cache.join(other)));
    assert_eq!(rows(&cache.join("cache.db")), "[]");
}

#[test]
fn glance_race_incomplete_swapped_for_a_link_before_the_rename() {
    let mut s = Scratch::new();
    let cache = s.p().join("cache");
    glance_cache(&cache);
    s.seal();
    // Between the write and the rename, incomplete/ becomes a link to the
    // decoys (one of them named like the image).
    let hook = "mv cache/incomplete cache/incomplete.real && ln -s ../outside cache/incomplete";
    let out = glance_fill(s.p(), &[], &[(HOOK, hook.into())], DATA);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(record(&out)["checksums"]["state"], "committed");
    assert!(is_link(&cache.join("incomplete")), "the hook ran");
    // The commit came from the directory written to, not through the link.
    assert_eq!(std::fs::read(cache.join(ID)).unwrap(), DATA);
    assert_eq!(
        std::fs::read_dir(cache.join("incomplete.real"))
            .unwrap()
            .count(),
        0
    );
    assert_eq!(
        rows(&cache.join("cache.db")),
        format!("[('{ID}', {})]", DATA.len())
    );
    s.assert_outside_untouched("incomplete swapped");
}

#[test]
fn glance_race_cache_root_swapped_for_a_link_before_the_rename() {
    let mut s = Scratch::new();
    let cache = s.p().join("cache");
    glance_cache(&cache);
    // The decoy directory looks like a cache: its queue marker must stay.
    std::fs::create_dir(s.outside().join("queue")).unwrap();
    std::fs::write(s.outside().join("queue").join(ID), b"decoy marker").unwrap();
    std::fs::remove_file(s.outside().join(ID)).unwrap();
    s.seal();
    let hook = "mv cache cache.real && ln -s outside cache";
    let out = glance_fill(s.p(), &[], &[(HOOK, hook.into())], DATA);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(is_link(&cache), "the hook ran");
    let real = s.p().join("cache.real");
    assert_eq!(std::fs::read(real.join(ID)).unwrap(), DATA);
    assert!(
        !real.join("queue").join(ID).exists(),
        "the real marker went"
    );
    assert_eq!(
        rows(&real.join("cache.db")),
        format!("[('{ID}', {})]", DATA.len())
    );
    s.assert_outside_untouched("root swapped");
    assert!(!s.outside().join("cache.db").exists());
}

#[test]
fn glance_race_temp_swapped_for_a_link_is_never_committed() {
    for (what, hook) in [
        (
            "temp became a link to a decoy",
            "rm cache/incomplete/* && ln -s ../../outside/decoy cache/incomplete/$ID",
        ),
        (
            "final name planted as a link",
            "ln -s ../outside/decoy cache/$ID",
        ),
    ] {
        let mut s = Scratch::new();
        let cache = s.p().join("cache");
        glance_cache(&cache);
        s.seal();
        let hook = hook.replace("$ID", ID);
        let out = glance_fill(s.p(), &[], &[(HOOK, hook)], DATA);
        assert_eq!(out.status.code(), Some(2), "{what}");
        let r = record(&out);
        let want = if what.starts_with("final") {
            "already_exists"
        } else {
            "changed"
        };
        assert_eq!(r["error"]["kind"], want, "{what}: {r}");
        assert_eq!(r["checksums"]["state"], "aborted", "{what}: {r}");
        s.assert_outside_untouched(what);
        if what.starts_with("final") {
            assert!(is_link(&cache.join(ID)), "{what}: the planted link stays");
            assert!(
                std::fs::read_dir(cache.join("incomplete"))
                    .unwrap()
                    .next()
                    .is_none(),
                "{what}: our temp removed"
            );
        } else {
            assert!(
                !cache.join(ID).exists(),
                "{what}: nothing under the final name"
            );
            // The planted link is not ours: left alone.
            assert!(is_link(&cache.join("incomplete").join(ID)), "{what}");
        }
        assert_eq!(rows(&cache.join("cache.db")), "[]", "{what}");
    }
}

#[test]
fn sigterm_while_blocked_removes_the_temp_from_the_real_directory() {
    let mut s = Scratch::new();
    let cache = s.p().join("cache");
    glance_cache(&cache);
    s.seal();
    // The hook swaps incomplete/ for a link to the decoys (one named like
    // the image), then blocks: the signal watchdog must remove the temp
    // from the directory written to, never the decoy through the link.
    let hook = "exec >/dev/null 2>&1; mv cache/incomplete cache/incomplete.real && \
ln -s ../outside cache/incomplete && touch hooked && sleep 10";
    let mut args: Vec<String> = ["--glance-cache", "cache", "--image-id", ID]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
    args.extend(verified_by(DATA));
    let mut child = Command::new(BIN)
        .args(&args)
        .current_dir(s.p())
        .env(HOOK, hook)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    {
        let mut input = child.stdin.take().unwrap();
        std::io::Write::write_all(&mut input, DATA).unwrap();
    }
    let t = std::time::Instant::now();
    while !s.p().join("hooked").exists() {
        assert!(t.elapsed().as_secs() < 20, "the hook never ran");
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    assert_eq!(
        std::fs::read(cache.join("incomplete.real").join(ID)).unwrap(),
        DATA,
        "the temp is there while blocked"
    );
    let sent = std::time::Instant::now();
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(sent.elapsed().as_secs() < 5, "the watchdog ended it");
    assert_eq!(out.status.code(), Some(143));
    assert!(
        !cache.join("incomplete.real").join(ID).exists(),
        "temp removed"
    );
    assert!(!cache.join(ID).exists());
    s.assert_outside_untouched("sigterm");
}

#[test]
fn nova_symlinked_base_locks_and_names_are_refused() {
    type Plant = fn(&Path, &Path);
    let cases: [(&str, Plant, &str); 5] = [
        (
            "_base",
            |inst, out| {
                std::fs::remove_dir(inst.join("_base")).unwrap();
                symlink(out, inst.join("_base")).unwrap();
            },
            "symlink",
        ),
        (
            "locks",
            |inst, out| {
                std::fs::remove_dir(inst.join("locks")).unwrap();
                symlink(out, inst.join("locks")).unwrap();
            },
            "symlink",
        ),
        (
            "lock file",
            |inst, out| {
                symlink(out.join("decoy"), inst.join(format!("locks/nova-{NAME}"))).unwrap();
            },
            "symlink",
        ),
        (
            "stale .part",
            |inst, out| {
                symlink(out.join("decoy"), inst.join(format!("_base/{NAME}.part"))).unwrap();
            },
            "symlink",
        ),
        (
            "final name",
            |inst, out| {
                symlink(out.join(NAME), inst.join(format!("_base/{NAME}"))).unwrap();
            },
            "already_exists",
        ),
    ];
    for (what, plant, kind) in cases {
        let mut s = Scratch::new();
        let inst = s.p().join("inst");
        std::fs::create_dir_all(inst.join("_base")).unwrap();
        std::fs::create_dir_all(inst.join("locks")).unwrap();
        plant(&inst, &s.outside());
        s.seal();
        let out = nova_fill(s.p(), &[]);
        assert_refused(&out, kind, what);
        s.assert_outside_untouched(what);
    }
}

#[test]
fn nova_race_base_swapped_for_a_link_before_the_rename() {
    let mut s = Scratch::new();
    let inst = s.p().join("inst");
    std::fs::create_dir_all(inst.join("_base")).unwrap();
    std::fs::remove_file(s.outside().join(NAME)).unwrap();
    s.seal();
    let hook = "mv inst/_base inst/_base.real && ln -s ../outside inst/_base";
    let out = nova_fill(s.p(), &[(HOOK, hook.into())]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(is_link(&inst.join("_base")), "the hook ran");
    assert_eq!(
        std::fs::read(inst.join("_base.real").join(NAME)).unwrap(),
        DATA
    );
    s.assert_outside_untouched("_base swapped");
    // The lock was taken in the real locks/.
    assert!(inst.join("locks").join(format!("nova-{NAME}")).exists());
}

#[test]
fn glance_invalid_entry_as_a_link_is_never_replaced_or_followed() {
    let mut s = Scratch::new();
    let cache = s.p().join("cache");
    glance_cache(&cache);
    symlink(s.outside().join("decoy"), cache.join("invalid").join(ID)).unwrap();
    s.seal();
    // A mismatch goes to invalid/ID, which Glance replaces when it is an
    // older failed download; a link there is left alone.
    let out = glance_fill(s.p(), &[], &[], b"not the verified bytes!!");
    let r = record(&out);
    assert_eq!(out.status.code(), Some(2), "{r}");
    assert_eq!(r["checksums"]["state"], "invalid", "{r}");
    assert_eq!(r["error"]["kind"], "symlink", "{r}");
    assert!(r["checksums"].get("invalid_path").is_none(), "{r}");
    s.assert_outside_untouched("invalid/ID a link");
    assert!(is_link(&cache.join("invalid").join(ID)));
    assert_eq!(
        std::fs::read_dir(cache.join("incomplete")).unwrap().count(),
        0
    );
    // An older regular file there is replaced, as Glance does.
    std::fs::remove_file(cache.join("invalid").join(ID)).unwrap();
    std::fs::write(cache.join("invalid").join(ID), b"older failure").unwrap();
    let out = glance_fill(s.p(), &["-q"], &[], b"not the verified bytes!!");
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        std::fs::read(cache.join("invalid").join(ID)).unwrap(),
        b"not the verified bytes!!"
    );
    s.assert_outside_untouched("invalid/ID replaced");
}
