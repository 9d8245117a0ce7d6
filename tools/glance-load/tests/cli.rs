//! glance-load's failures that need no real Glance (part of `make test`,
//! quick): fatal errors as error records (a missing or unreadable --dir,
//! bad usage), ids that are no plain names refused before any request,
//! and messages that name the metadata file once. The target, where one
//! is needed, is a few lines of Rust answering Glance's version document
//! and recording every request.
#![cfg(test)]

use serde_json::{Value, json};
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};

const UUID: &str = "4fe257e0-c119-408e-9053-0be3f4940d6d";

/// A target that offers Images v2 (`GET /`) and answers 404 to anything
/// else; its URL and the request lines it saw.
fn versions_only() -> (String, Arc<Mutex<Vec<String>>>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", l.local_addr().unwrap());
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { continue };
            let mut r = BufReader::new(s.try_clone().unwrap());
            let mut line = String::new();
            let _ = r.read_line(&mut line);
            // The rest of the head (the requests here carry no body).
            let mut h = String::new();
            while r.read_line(&mut h).is_ok_and(|n| n > 2) {
                h.clear();
            }
            let line = line.trim_end().to_owned();
            let (status, body) = if line.starts_with("GET / ") {
                (
                    "300 Multiple Choices",
                    r#"{"versions":[{"id":"v2.9","status":"CURRENT"}]}"#,
                )
            } else {
                ("404 Not Found", r#"{"message":"nothing here"}"#)
            };
            log.lock().unwrap().push(line);
            let _ = write!(
                s,
                "HTTP/1.1 {status}\r\nContent-Type: application/json\r\n\
                 Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    (url, seen)
}

/// glance-load with `args` and `stdin`: exit code, records, stderr.
fn load(args: &[&str], stdin: &str) -> (i32, Vec<Value>, String) {
    let mut c = Command::new(env!("CARGO_BIN_EXE_glance-load"))
        .args(args)
        .env_remove("OS_IMAGE_URL")
        .env_remove("OS_AUTH_URL")
        .env_remove("OS_AUTH_TOKEN")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut i = c.stdin.take().unwrap();
    let _ = i.write_all(stdin.as_bytes());
    drop(i);
    let out = c.wait_with_output().unwrap();
    let recs = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l:?}: {e}")))
        .collect();
    (
        out.status.code().unwrap_or(-1),
        recs,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The one record of a failed run, its `error` facet checked.
fn fatal<'a>(recs: &'a [Value], kind: &str) -> &'a Value {
    assert_eq!(recs.len(), 1, "{recs:?}");
    let e = &recs[0]["error"];
    assert_eq!(e["tool"], "glance-load", "{e}");
    assert_eq!(e["kind"], kind, "{e}");
    e
}

#[test]
fn a_dir_that_cannot_be_read_is_an_error_record() {
    let t = tempfile::tempdir().unwrap();
    // Nothing listens on port 1: the directory is read before any
    // connection, so its error is the one reported.
    let url = "http://127.0.0.1:1";
    let missing = t.path().join("nonexist");
    let (code, recs, err) = load(&["--url", url, "--dir", missing.to_str().unwrap()], "");
    assert_eq!(code, 2);
    let e = fatal(&recs, "not_found");
    let m = e["message"].as_str().unwrap();
    assert!(
        m.starts_with(&format!("--dir {}: ", missing.display())),
        "{m}"
    );
    assert!(err.contains(m), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");

    // A regular file.
    let file = t.path().join("file");
    std::fs::write(&file, b"x").unwrap();
    let (code, recs, _) = load(&["--url", url, "--dir", file.to_str().unwrap()], "");
    assert_eq!(code, 2);
    let e = fatal(&recs, "not_regular");
    assert_eq!(
        e["message"],
        format!("--dir {}: is not a directory", file.display())
    );

    // No permission (skipped where the test may read it anyway: root).
    let locked = t.path().join("locked");
    std::fs::create_dir(&locked).unwrap();
    let mode = |m| std::fs::set_permissions(&locked, std::fs::Permissions::from_mode(m)).unwrap();
    mode(0o000);
    if std::fs::read_dir(&locked).is_ok() {
        mode(0o700);
        eprintln!("SKIPPED: unreadable --dir: this user reads a mode 000 directory (root)");
        return;
    }
    let (code, recs, _) = load(&["--url", url, "--dir", locked.to_str().unwrap()], "");
    mode(0o700);
    assert_eq!(code, 2);
    fatal(&recs, "permission_denied");
}

#[test]
fn bad_usage_is_an_error_record() {
    let (code, recs, err) = load(&[], "");
    assert_eq!(code, 2);
    let e = fatal(&recs, "usage");
    assert!(
        e["message"].as_str().unwrap().starts_with("--url URL"),
        "{e}"
    );
    assert!(!err.is_empty());
    let (code, recs, _) = load(&["--url", "ftp://example.org"], "");
    assert_eq!(code, 2);
    let e = fatal(&recs, "usage");
    assert_eq!(
        e["message"],
        "\"ftp://example.org\": the endpoint must be an http:// or https:// URL"
    );
    // A source that is not http(s) either, before anything is read.
    let (code, recs, _) = load(
        &["--url", "http://127.0.0.1:1", "--source-url", "file:///etc"],
        "",
    );
    assert_eq!(code, 2);
    fatal(&recs, "usage");
}

#[test]
fn ids_that_are_no_plain_names_are_refused_before_any_request() {
    let (url, seen) = versions_only();
    let ids = [
        "a/b",
        "..",
        ".",
        "",
        "x\ny",
        "nul\0",
        "a?b",
        "a b",
        "../../etc/x",
    ];
    let input: String = ids
        .iter()
        .map(|id| {
            format!(
                "{}\n",
                json!({"image": {"id": id, "status": "active", "size": 1}})
            )
        })
        .collect();
    let (code, recs, err) = load(&["--url", &url], &input);
    assert_eq!(code, 2, "{err}");
    assert_eq!(recs.len(), ids.len(), "{recs:?}");
    for (r, id) in recs.iter().zip(ids) {
        assert_eq!(r["image"]["id"], id);
        assert_eq!(r["error"]["kind"], "bad_record", "{r}");
        assert_eq!(r["load"]["action"], "failed", "{r}");
        let m = r["error"]["message"].as_str().unwrap();
        assert!(m.starts_with("image id "), "{m}");
        assert!(!m.contains('\n') && !m.contains('\0'), "{m:?}");
    }
    assert_eq!(err.lines().count(), ids.len(), "{err}");
    // Only the version check reached the target.
    assert_eq!(*seen.lock().unwrap(), ["GET / HTTP/1.1"]);
}

#[test]
fn a_dump_whose_metadata_is_not_its_file_is_refused() {
    let (url, seen) = versions_only();
    let t = tempfile::tempdir().unwrap();
    let d = t.path();
    let write = |name: &str, body: &str| std::fs::write(d.join(name), body).unwrap();
    // Another image's id, a traversal, a newline: the file's name is the
    // id, or nothing is loaded.
    let other = "11111111-2222-4333-8444-555555555555";
    let bad = [
        ("4fe257e0-c119-408e-9053-0be3f4940d6a", other),
        ("4fe257e0-c119-408e-9053-0be3f4940d6b", "../../etc/passwd"),
        ("4fe257e0-c119-408e-9053-0be3f4940d6c", "x\ny"),
    ];
    for (name, id) in bad {
        write(
            name,
            &json!({"id": id, "status": "active", "size": 1}).to_string(),
        );
        write(&format!("{name}.img"), "x");
    }
    // Not JSON: the message does not repeat the file the record names.
    write(UUID, "not json");
    let (code, recs, err) = load(&["--url", &url, "--dir", d.to_str().unwrap()], "");
    assert_eq!(code, 2, "{err}");
    assert_eq!(recs.len(), 4, "{recs:?}");
    for (r, (name, id)) in recs.iter().zip(bad) {
        assert_eq!(r["path"], d.join(name).to_str().unwrap(), "{r}");
        assert_eq!(r["error"]["kind"], "bad_record", "{r}");
        assert_eq!(
            r["error"]["message"],
            format!("the metadata's id {id:?} is not its file name")
        );
    }
    let json = &recs[3];
    assert_eq!(json["error"]["kind"], "bad_json");
    let m = json["error"]["message"].as_str().unwrap();
    assert!(m.starts_with("not JSON: "), "{m}");
    let line = err.lines().last().unwrap();
    assert_eq!(
        line,
        format!("glance-load: {}: {m}", d.join(UUID).display())
    );
    assert_eq!(line.matches(UUID).count(), 1, "{line}");
    assert_eq!(*seen.lock().unwrap(), ["GET / HTTP/1.1"]);
    assert!(Path::new(&d.join(UUID)).is_file());
}

#[test]
fn empty_stdin_is_no_records_and_exit_0() {
    let (url, seen) = versions_only();
    let (code, recs, err) = load(&["--url", &url], "");
    assert_eq!((code, recs.len()), (0, 0), "{recs:?} {err}");
    // The target was reached (a wrong URL shows even with nothing to load),
    // and nothing but the version document was asked for.
    let seen = seen.lock().unwrap();
    assert!(seen.iter().all(|l| l.starts_with("GET / ")), "{seen:?}");
    assert!(!seen.is_empty());
}
