//! The SIGKILL campaign (`make faults`, part of `make check`): every tool
//! that writes is killed at pseudo-random points of its run (at least 100
//! runs in all), then: nothing half-written ever sits under a final name,
//! and a re-run converges to the right state, leaving no temporary file.
//! Writers: checksum-tee's atomic sink, vhd-chain flatten, cachewalk
//! remove (Nova's `_base`; Glance's cache, file and `cache.db` row),
//! glance-dump --dir and glance-load (against real Glances).
#![cfg(test)]

use glance_server::{AUTH, bytes_of, create, curl, start, upload};
use test_support::glance_server;

use pipeline_tests::tool;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Deterministic delays (a fixed seed: a failure can be replayed).
struct Delays(u64);

impl Delays {
    /// A delay in `0..max`.
    fn next(&mut self, max: Duration) -> Duration {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        let nanos = max.as_nanos().max(1) as u64;
        Duration::from_nanos(self.0 % nanos)
    }
}

/// Run `cmd` (stdin from `input`), SIGKILL it after `after` unless it is
/// done; whether it was killed.
fn kill_after(cmd: &mut Command, input: Option<&Path>, after: Duration) -> bool {
    let stdin = match input {
        Some(p) => Stdio::from(std::fs::File::open(p).unwrap()),
        None => Stdio::null(),
    };
    let mut child = cmd
        .stdin(stdin)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while start.elapsed() < after {
        if child.try_wait().unwrap().is_some() {
            return false;
        }
        std::thread::sleep(Duration::from_millis(2).min(after));
    }
    let _ = child.kill();
    let _ = child.wait();
    true
}

/// How long a whole run takes (the range the kills are spread over).
fn timed(cmd: &mut Command, input: Option<&Path>) -> Duration {
    let t = Instant::now();
    assert!(!kill_after(cmd, input, Duration::from_secs(600)));
    t.elapsed()
}

fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// Files of `dir` whose names say "temporary".
fn temps(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".tmp-") || n.ends_with(".part") || n.contains("scratch"))
        .collect()
}

fn have(tools: &[&str]) -> bool {
    let ok = tools.iter().all(|t| tool(t).is_ok())
        && Command::new("qemu-img").arg("--version").output().is_ok();
    if !ok {
        assert!(
            std::env::var_os("CI").is_none(),
            "tools or qemu-img missing in CI"
        );
        eprintln!("skipping: tools or qemu-img missing");
    }
    ok
}

#[test]
fn killed_writers_leave_no_half_file_and_converge() {
    if !have(&["checksum-tee", "vhd-chain", "cachewalk"]) {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let d = t.path();
    let data = bytes_of(77, 48 << 20);
    let input = d.join("input");
    std::fs::write(&input, &data).unwrap();
    let mut delays = Delays(0x9e37_79b9_7f4a_7c15);
    let (mut runs, mut kills) = (0, 0);

    // checksum-tee's sink: out.img is the whole input or absent.
    let ct = tool("checksum-tee").unwrap();
    let out = d.join("out.img");
    let sink = |force: bool| {
        let mut c = Command::new(&ct);
        c.arg("-o").arg(&out).current_dir(d);
        if force {
            c.arg("--force");
        }
        c
    };
    let whole = timed(&mut sink(false), Some(&input));
    for _ in 0..30 {
        let _ = std::fs::remove_file(&out);
        kills += u32::from(kill_after(
            &mut sink(false),
            Some(&input),
            delays.next(whole),
        ));
        runs += 1;
        if out.exists() {
            assert!(
                std::fs::read(&out).unwrap() == data,
                "a half file under the final name"
            );
        }
        // A re-run converges and leaves no temporary file.
        assert!(!kill_after(
            &mut sink(true),
            Some(&input),
            Duration::from_secs(120)
        ));
        assert!(std::fs::read(&out).unwrap() == data);
        assert!(temps(d).is_empty(), "{:?}", temps(d));
    }

    // vhd-chain flatten: disk.vhd is a whole, valid VHD or absent.
    let st = Command::new("bash")
        .args([
            "-c",
            "mkdir -p chain && qemu-img convert -f raw -O vpc -o subformat=dynamic input chain/0.vhd \
             && tar -cf image.tar -C chain 0.vhd && qemu-img convert -f vpc -O raw chain/0.vhd want.raw",
        ])
        .current_dir(d)
        .status()
        .unwrap();
    assert!(st.success());
    let vc = tool("vhd-chain").unwrap();
    let disk = d.join("disk.vhd");
    let flatten = || {
        let mut c = Command::new(&vc);
        c.args(["flatten", "image.tar", "-o", "disk.vhd", "--force"])
            .current_dir(d);
        c
    };
    let check = |p: &Path| {
        let out = Command::new("qemu-img")
            .args(["compare", "-q", "-f", "vpc", "-F", "raw"])
            .arg(p)
            .arg(d.join("want.raw"))
            .status()
            .unwrap();
        assert!(out.success(), "{} is not the image", p.display());
    };
    let whole = timed(&mut flatten(), None);
    for _ in 0..30 {
        let _ = std::fs::remove_file(&disk);
        kills += u32::from(kill_after(&mut flatten(), None, delays.next(whole)));
        runs += 1;
        if disk.exists() {
            check(&disk);
        }
        assert!(!kill_after(&mut flatten(), None, Duration::from_secs(120)));
        check(&disk);
        assert!(temps(d).is_empty(), "{:?}", temps(d));
    }
    // cachewalk remove: Nova's unused base files, each whole or gone; a
    // file an instance uses never touched; a re-run removes the rest.
    let cw = tool("cachewalk").unwrap();
    let nova = d.join("nova");
    let ages = format!("@{}", now_secs() - 30 * 86_400);
    for _ in 0..10 {
        let _ = std::fs::remove_dir_all(&nova);
        std::fs::create_dir_all(nova.join("_base")).unwrap();
        std::fs::create_dir_all(nova.join("vm-1")).unwrap();
        for i in 0..150 {
            std::fs::write(
                nova.join(format!("_base/{i:040x}")),
                vec![i as u8; 64 << 10],
            )
            .unwrap();
        }
        let used = nova.join("_base/used");
        std::fs::write(&used, b"used").unwrap();
        let st = Command::new("qemu-img")
            .args(["create", "-q", "-f", "qcow2", "-F", "raw", "-b"])
            .arg(&used)
            .arg(nova.join("vm-1/disk"))
            .arg("1M")
            .status()
            .unwrap();
        assert!(st.success());
        assert!(
            Command::new("touch")
                .args(["-h", "-d", &ages])
                .args(
                    std::fs::read_dir(nova.join("_base"))
                        .unwrap()
                        .flatten()
                        .map(|e| e.path())
                )
                .status()
                .unwrap()
                .success()
        );
        std::fs::write(d.join("inv.jsonl"), "").unwrap();
        let cands = Command::new("bash")
            .args(["-c"])
            .arg(format!(
                "{} nova \"$PWD/nova\" --instances inv.jsonl --host h \
                 | jq -c 'select(.cache.verdict == \"candidate\")' > cands.jsonl",
                cw.display()
            ))
            .current_dir(d)
            .status()
            .unwrap();
        assert!(cands.success());
        let n = std::fs::read_to_string(d.join("cands.jsonl"))
            .unwrap()
            .lines()
            .count();
        assert_eq!(n, 150);
        let remove = || {
            let mut c = Command::new(&cw);
            c.arg("remove").current_dir(d);
            c
        };
        let cands_file = d.join("cands.jsonl");
        kills += u32::from(kill_after(
            &mut remove(),
            Some(&cands_file),
            delays.next(Duration::from_millis(60)),
        ));
        runs += 1;
        for i in 0..150 {
            let p = nova.join(format!("_base/{i:040x}"));
            if let Ok(b) = std::fs::read(&p) {
                assert!(b == vec![i as u8; 64 << 10], "a half file");
            }
        }
        assert!(used.exists());
        assert!(!kill_after(
            &mut remove(),
            Some(&cands_file),
            Duration::from_secs(60)
        ));
        let left: Vec<_> = std::fs::read_dir(nova.join("_base"))
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(left, ["used"], "the re-run did not converge");
    }
    eprintln!("faults: {runs} local runs, {kills} killed before they finished");
    assert!(runs >= 70 && kills * 2 >= runs);
}

/// Glance's cache.db rows (image ids), read with Python's sqlite3 (which
/// rolls back a killed writer's hot journal, as Glance would).
fn cache_rows(db: &Path) -> std::collections::BTreeSet<String> {
    let out = Command::new("python3")
        .args([
            "-c",
            "import sqlite3,sys\nc=sqlite3.connect(sys.argv[1])\n\
             assert c.execute('PRAGMA integrity_check').fetchone()[0] == 'ok'\n\
             print('\\n'.join(r[0] for r in c.execute('SELECT image_id FROM cached_images')))",
        ])
        .arg(db)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect()
}

#[test]
fn killed_glance_cache_remove_never_leaves_a_file_without_its_row() {
    if !have(&["cachewalk"]) {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let d = t.path();
    let root = d.join("cache");
    let cw = tool("cachewalk").unwrap();
    let ids: Vec<String> = (0..120)
        .map(|i| format!("{i:08x}-0000-4000-8000-000000000000"))
        .collect();
    let mut delays = Delays(0x1234_5678_9abc_def1);
    let (mut runs, mut kills) = (0, 0);
    let select = |verdicts: &str| {
        let st = Command::new("bash")
            .args(["-c"])
            .arg(format!(
                "{} glance \"$PWD/cache\" --max-size 1 | jq -c 'select(.cache.verdict | IN({verdicts}))' > cands.jsonl",
                cw.display()
            ))
            .current_dir(d)
            .status()
            .unwrap();
        assert!(st.success());
        d.join("cands.jsonl")
    };
    let remove = || {
        let mut c = Command::new(&cw);
        c.arg("remove").current_dir(d);
        c
    };
    let mut whole = None;
    for _ in 0..10 {
        let _ = std::fs::remove_dir_all(&root);
        for sub in ["", "incomplete", "invalid", "queue"] {
            std::fs::create_dir_all(root.join(sub)).unwrap();
        }
        let mut script = String::from(
            "import sqlite3,sys\nc=sqlite3.connect(sys.argv[1])\nc.execute('CREATE TABLE cached_images (image_id TEXT PRIMARY KEY, last_accessed REAL DEFAULT 0.0, last_modified REAL DEFAULT 0.0, size INTEGER DEFAULT 0, hits INTEGER DEFAULT 0, checksum TEXT)')\n",
        );
        for (i, id) in ids.iter().enumerate() {
            std::fs::write(root.join(id), vec![i as u8; 64 << 10]).unwrap();
            script.push_str(&format!(
                "c.execute('INSERT INTO cached_images VALUES (?, ?, ?, 65536, 1, NULL)', ('{id}', {i}, {i}))\n"
            ));
        }
        script.push_str("c.commit()\n");
        let st = Command::new("python3")
            .args(["-c", &script])
            .arg(root.join("cache.db"))
            .status()
            .unwrap();
        assert!(st.success());
        let cands = select("\"would_prune\"");
        assert_eq!(
            std::fs::read_to_string(&cands).unwrap().lines().count(),
            ids.len()
        );
        let span = *whole.get_or_insert_with(|| {
            // Measured once on a copy, so the kills spread over a real run.
            let copy = d.join("copy");
            let _ = std::fs::remove_dir_all(&copy);
            assert!(
                Command::new("cp")
                    .arg("-a")
                    .arg(&root)
                    .arg(&copy)
                    .status()
                    .unwrap()
                    .success()
            );
            let t = timed(&mut remove(), Some(&cands));
            let _ = std::fs::remove_dir_all(&root);
            std::fs::rename(&copy, &root).unwrap();
            t
        });
        kills += u32::from(kill_after(&mut remove(), Some(&cands), delays.next(span)));
        runs += 1;
        // A file is never left without its row (Glance would serve it and
        // never prune it); a row may outlive its file (orphan_row).
        let rows = cache_rows(&root.join("cache.db"));
        for (i, id) in ids.iter().enumerate() {
            if let Ok(b) = std::fs::read(root.join(id)) {
                assert!(b == vec![i as u8; 64 << 10], "a half file");
                assert!(rows.contains(id), "{id}: a file without its row");
            }
        }
        // The re-run, from a new walk, removes the rest and the orphan rows.
        let cands = select("\"would_prune\", \"orphan_row\"");
        assert!(!kill_after(
            &mut remove(),
            Some(&cands),
            Duration::from_secs(60)
        ));
        assert!(cache_rows(&root.join("cache.db")).is_empty());
        let left: Vec<String> = std::fs::read_dir(&root)
            .unwrap()
            .flatten()
            .filter(|e| e.file_type().unwrap().is_file())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| !n.starts_with("cache.db"))
            .collect();
        assert!(left.is_empty(), "the re-run did not converge: {left:?}");
    }
    eprintln!("faults: glance cache remove: {runs} runs, {kills} killed before they finished");
    assert!(kills * 2 >= runs);
}

#[test]
fn killed_glance_transfers_leave_no_bad_image_and_converge() {
    if !have(&["glance-dump", "glance-load"]) {
        return;
    }
    let Some(a) = start() else { return };
    let Some(b) = start() else { return };
    let t = tempfile::tempdir().unwrap();
    let d = t.path();
    let data = bytes_of(78, 64 << 20);
    std::fs::write(d.join("data"), &data).unwrap();
    let id = create(
        &a.url,
        r#"{"name":"big","disk_format":"raw","container_format":"bare"}"#,
    );
    upload(&a.url, &id, &d.join("data"));
    let want = curl(&[&format!("{}/v2/images/{id}", a.url)])["os_hash_value"].clone();
    let mut delays = Delays(0x2545_f491_4f6c_dd1d);
    let (mut runs, mut kills) = (0, 0);
    let auth = |c: &mut Command, flag: &str| {
        for h in AUTH {
            c.args([flag, h]);
        }
    };

    // glance-dump --dir: the .img is whole and verified, or absent.
    let gd = tool("glance-dump").unwrap();
    let dump = || {
        let mut c = Command::new(&gd);
        c.args(["--url", &a.url, "--dir", "D"]).current_dir(d);
        auth(&mut c, "--header");
        c
    };
    let img = d.join("D").join(format!("{id}.img"));
    let whole = timed(&mut dump(), None);
    for _ in 0..20 {
        let _ = std::fs::remove_file(&img);
        kills += u32::from(kill_after(&mut dump(), None, delays.next(whole)));
        runs += 1;
        if img.exists() {
            assert!(std::fs::read(&img).unwrap() == data, "a half .img");
        }
        assert!(!kill_after(&mut dump(), None, Duration::from_secs(120)));
        assert!(std::fs::read(&img).unwrap() == data);
        assert!(temps(&d.join("D")).is_empty(), "{:?}", temps(&d.join("D")));
    }

    // glance-load: each run a new id on B; after a kill the image is
    // absent, queued, or active with the source's hash, never other data;
    // a re-run makes it active with the source's hash.
    let records = {
        let out = dump().stdout(Stdio::piped()).output().unwrap();
        String::from_utf8(out.stdout).unwrap()
    };
    let gl = tool("glance-load").unwrap();
    let mut load_whole = None;
    for i in 0..21 {
        let new_id = format!("00000000-0000-4000-8000-{:012}", i + 1);
        let rec = records
            .replace(&id, &new_id)
            .replace(&format!("D/{new_id}.img"), &format!("D/{id}.img"));
        let input = d.join("load.in");
        std::fs::write(&input, &rec).unwrap();
        let load = || {
            let mut c = Command::new(&gl);
            c.args(["--url", &b.url]).current_dir(d);
            auth(&mut c, "--header");
            c
        };
        let whole = *load_whole.get_or_insert_with(|| timed(&mut load(), Some(&input)));
        if i > 0 {
            kills += u32::from(kill_after(&mut load(), Some(&input), delays.next(whole)));
            runs += 1;
        }
        let state = || {
            let (code, body) =
                glance_server::curl_as(&AUTH, &[&format!("{}/v2/images/{new_id}", b.url)]);
            (code == 200).then(|| serde_json::from_str::<serde_json::Value>(&body).unwrap())
        };
        // Glance finishes with a cut upload after the client is gone.
        let mut s = state();
        for _ in 0..100 {
            if !s.as_ref().is_some_and(|v| v["status"] == "saving") {
                break;
            }
            std::thread::sleep(Duration::from_millis(200));
            s = state();
        }
        if let Some(v) = &s {
            match v["status"].as_str().unwrap() {
                "queued" => assert!(v["os_hash_value"].is_null(), "{v}"),
                "active" => assert_eq!(v["os_hash_value"], want, "{v}"),
                other => panic!("{new_id} is {other} after a kill: {v}"),
            }
        }
        assert!(!kill_after(
            &mut load(),
            Some(&input),
            Duration::from_secs(120)
        ));
        let v = state().unwrap();
        assert_eq!(v["status"], "active", "{v}");
        assert_eq!(v["os_hash_value"], want);
    }
    eprintln!("faults: {runs} Glance runs, {kills} killed before they finished");
    assert!(runs >= 40 && kills * 2 >= runs);
}
