//! glance-dump against a tiny fake Glance (tests/fake-glance.py, Python's
//! http.server on 127.0.0.1): listings no real Glance sends (a `next` link
//! or marker that leads back), the exact query a `--filter` becomes, ids
//! that are no file names, and fatal errors as records. Quick: part of
//! `make test`, each run bounded in time.
#![cfg(test)]

use serde_json::Value;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// No run here takes more than a second; a loop would take for ever.
const DEADLINE: Duration = Duration::from_secs(20);

/// The fake server, stopped when dropped.
struct Fake {
    child: Child,
    port: u16,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Drop for Fake {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Fake {
    /// The server, or `None` (test skipped, and why) without python3.
    fn start() -> Option<Fake> {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("requests");
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fake-glance.py");
        let child = Command::new("python3")
            .arg(&script)
            .arg(&log)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn();
        let mut child = match child {
            Ok(c) => c,
            Err(e) => {
                assert!(std::env::var_os("CI").is_none(), "python3: {e}");
                eprintln!("SKIPPED: no python3 for the fake Glance: {e}");
                return None;
            }
        };
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let port = line.trim().parse().expect("the fake Glance's port");
        Some(Fake {
            child,
            port,
            log,
            _dir: dir,
        })
    }

    /// The endpoint of a mode (fake-glance.py's docs).
    fn url(&self, mode: &str) -> String {
        format!("http://127.0.0.1:{}/{mode}", self.port)
    }

    /// Every request of `mode` so far, as sent (path and query).
    fn requests(&self, mode: &str) -> Vec<String> {
        let prefix = format!("/{mode}/");
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .filter(|l| l.starts_with(&prefix))
            .map(str::to_owned)
            .collect()
    }

    /// The list requests of `mode`, without the mode prefix.
    fn listings(&self, mode: &str) -> Vec<String> {
        let prefix = format!("/{mode}");
        self.requests(mode)
            .into_iter()
            .filter_map(|l| l.strip_prefix(&prefix).map(str::to_owned))
            .filter(|l| l.starts_with("/v2/images?"))
            .collect()
    }
}

struct Run {
    code: i32,
    records: Vec<Value>,
    stderr: String,
}

/// glance-dump with `args`, killed (and the test failed) past the deadline.
fn dump(args: &[&str]) -> Run {
    let mut child = Command::new(env!("CARGO_BIN_EXE_glance-dump"))
        .args(args)
        .env_remove("OS_IMAGE_URL")
        .env_remove("OS_AUTH_URL")
        .env_remove("OS_AUTH_TOKEN")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Read both pipes while waiting: a looping run fills them.
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let out = std::thread::spawn(move || {
        let mut s = String::new();
        out.read_to_string(&mut s).unwrap();
        s
    });
    let err = std::thread::spawn(move || {
        let mut s = String::new();
        err.read_to_string(&mut s).unwrap();
        s
    });
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if start.elapsed() > DEADLINE {
            let _ = child.kill();
            let _ = child.wait();
            panic!("glance-dump {args:?} still running after {DEADLINE:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let stdout = out.join().unwrap();
    let records = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l:?}: {e}")))
        .collect();
    Run {
        code: status.code().unwrap_or(-1),
        records,
        stderr: err.join().unwrap(),
    }
}

/// The error records of a run.
fn errors(r: &Run) -> Vec<&Value> {
    r.records
        .iter()
        .filter(|x| x.get("error").is_some())
        .collect()
}

#[test]
fn a_next_link_seen_before_stops_the_listing() {
    let Some(f) = Fake::start() else { return };
    let r = dump(&["--url", &f.url("same-next"), "--page-size", "1"]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    // The two pages it gave stay; then one error, last.
    let names: Vec<&str> = r
        .records
        .iter()
        .filter_map(|x| x["image"]["name"].as_str())
        .collect();
    assert_eq!(names, ["page 1", "page 2"]);
    assert_eq!(r.records.len(), 3, "{:?}", r.records);
    let e = &r.records[2]["error"];
    assert_eq!(e["tool"], "glance-dump");
    assert_eq!(e["kind"], "server_error");
    let next = "/v2/images?limit=1&marker=00000000-0000-4000-8000-000000000001";
    assert_eq!(
        e["message"],
        format!("pagination loop: the next link {next} was followed before")
    );
    assert_eq!(r.records[2]["path"], f.url("same-next"));
    // The first page and the next link, once each.
    assert_eq!(
        f.listings("same-next"),
        [
            "/v2/images?limit=1&sort=created_at:asc,id:asc&os_hidden=false&visibility=all",
            next
        ]
    );
}

#[test]
fn a_marker_seen_before_stops_the_listing() {
    let Some(f) = Fake::start() else { return };
    let r = dump(&["--url", &f.url("same-marker"), "--page-size", "1"]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert_eq!(r.records.len(), 3, "{:?}", r.records);
    let e = &r.records[2]["error"];
    assert_eq!(e["kind"], "server_error");
    let m = e["message"].as_str().unwrap();
    assert_eq!(
        m,
        "pagination loop: the next link \
         /v2/images?limit=1&marker=00000000-0000-4000-8000-000000000001&n=2 \
         repeats the marker 00000000-0000-4000-8000-000000000001"
    );
    assert_eq!(f.listings("same-marker").len(), 2);
}

#[test]
fn filters_arrive_verbatim_as_one_parameter_each() {
    let Some(f) = Fake::start() else { return };
    let r = dump(&[
        "--url",
        &f.url("one-page"),
        "--filter",
        "name=my image",
        "--filter",
        "a=b&os_hidden=true",
        "--filter",
        "tag=é#+=x%20",
    ]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.records.is_empty(), "{:?}", r.records);
    let filters = "name=my%20image&a=b%26os_hidden%3Dtrue&tag=%C3%A9%23%2B%3Dx%2520";
    let q = |hidden: bool| {
        format!(
            "/v2/images?limit=100&sort=created_at:asc,id:asc&os_hidden={hidden}\
             &visibility=all&{filters}"
        )
    };
    assert_eq!(f.listings("one-page"), [q(false), q(true)]);

    // A visibility filter replaces visibility=all.
    let r = dump(&["--url", &f.url("one-page"), "--filter", "visibility=public"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(
        f.listings("one-page")[2],
        "/v2/images?limit=100&sort=created_at:asc,id:asc&os_hidden=false&visibility=public"
    );
}

#[test]
fn a_filter_without_equals_is_a_usage_error() {
    let Some(f) = Fake::start() else { return };
    for bad in ["name", "=x", "os_hidden=true", "limit=1"] {
        let r = dump(&["--url", &f.url("one-page"), "--filter", bad]);
        assert_eq!(r.code, 2, "{bad}");
        assert_eq!(r.records.len(), 1, "{:?}", r.records);
        assert_eq!(r.records[0]["error"]["kind"], "usage");
        assert!(r.stderr.contains("--filter"), "{}", r.stderr);
    }
    // Refused before any request.
    assert!(f.requests("one-page").is_empty());
}

#[test]
fn ids_that_are_no_file_names_are_refused() {
    let Some(f) = Fake::start() else { return };
    let t = tempfile::tempdir().unwrap();
    let d = t.path().join("dump");
    let r = dump(&["--url", &f.url("bad-ids"), "--dir", d.to_str().unwrap()]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert_eq!(r.records.len(), 8, "{:?}", r.records);
    let refused = errors(&r);
    assert_eq!(refused.len(), 7, "{:?}", r.records);
    for e in &refused {
        assert_eq!(e["error"]["kind"], "bad_record", "{e}");
        let id = e["image"]["id"].as_str().unwrap();
        let m = e["error"]["message"].as_str().unwrap();
        assert!(m.starts_with("image id "), "{m}");
        assert!(m.contains("is not a plain file name"), "{m}");
        // Named escaped, never with a raw newline or NUL.
        assert!(!m.contains('\n') && !m.contains('\0'), "{m:?} for {id:?}");
        assert!(e.get("dump").is_none() && e.get("path").is_none(), "{e}");
    }
    assert!(!r.stderr.contains('\0'));
    assert_eq!(r.stderr.lines().count(), 7, "{}", r.stderr);
    let good = &r.records[7];
    assert_eq!(good["dump"]["action"], "metadata_written", "{good}");
    // Only the good image's file, and nothing beside the dump.
    let names = |p: &Path| {
        let mut v: Vec<String> = std::fs::read_dir(p)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    };
    assert_eq!(names(&d), ["00000000-0000-4000-8000-000000000001"]);
    assert_eq!(names(t.path()), ["dump"]);
}

#[test]
fn a_404_names_the_request_once() {
    let Some(f) = Fake::start() else { return };
    let url = f.url("no-list");
    let r = dump(&["--url", &url]);
    assert_eq!(r.code, 2);
    assert_eq!(r.records.len(), 1, "{:?}", r.records);
    let e = &r.records[0]["error"];
    assert_eq!(e["kind"], "not_found");
    assert_eq!(e["detail"]["http_status"], 404);
    let request = "/v2/images?limit=100&sort=created_at:asc,id:asc&os_hidden=false&visibility=all";
    assert_eq!(
        e["message"],
        format!("GET {request}: HTTP 404: no such thing")
    );
    assert_eq!(r.records[0]["path"], url.as_str());
    assert_eq!(
        r.stderr.trim_end(),
        format!("glance-dump: {url}: GET {request}: HTTP 404: no such thing")
    );
}

#[test]
fn fatal_errors_are_records_too() {
    let Some(f) = Fake::start() else { return };
    let t = tempfile::tempdir().unwrap();
    // --dir under a regular file.
    let file = t.path().join("file");
    std::fs::write(&file, b"x").unwrap();
    let under = file.join("dump");
    let r = dump(&[
        "--url",
        &f.url("one-page"),
        "--dir",
        under.to_str().unwrap(),
    ]);
    assert_eq!(r.code, 2);
    assert_eq!(r.records.len(), 1, "{:?}", r.records);
    let e = &r.records[0]["error"];
    assert_eq!(e["tool"], "glance-dump");
    assert_eq!(e["kind"], "io");
    let m = e["message"].as_str().unwrap();
    assert!(
        m.starts_with(&format!("--dir {}: ", under.display())),
        "{m}"
    );
    assert_eq!(std::fs::read(&file).unwrap(), b"x");

    // Not an http(s) URL: bad usage, nothing contacted.
    let r = dump(&["--url", "ftp://127.0.0.1/"]);
    assert_eq!(r.code, 2);
    assert_eq!(r.records.len(), 1, "{:?}", r.records);
    assert_eq!(r.records[0]["error"]["kind"], "usage");
    assert_eq!(
        r.records[0]["error"]["message"],
        "\"ftp://127.0.0.1/\": the endpoint must be an http:// or https:// URL"
    );
}
