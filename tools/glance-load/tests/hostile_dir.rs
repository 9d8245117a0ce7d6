//! glance-load --dir against hostile dump directories (issue 17), with no
//! real Glance (part of `make test`): the target is a small fake Images v2
//! server in Rust that records every request and every uploaded byte, so
//! a test can say exactly which bytes reached it.
//!
//! Races are driven by the tool's test hooks, not timing:
//! `glance-load.before_upload` runs after the directory was listed and
//! the record judged, before the data file is opened; `before_send` runs
//! after it was opened and checked, right before its bytes go out. Decoy
//! files live outside the dump directory and are hashed before and after.
#![cfg(test)]

use serde_json::{Map, Value, json};
use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use system::hash::{Algorithm, MultiHasher};

const A: &str = "4fe257e0-c119-408e-9053-0be3f4940d6a";
const B: &str = "4fe257e0-c119-408e-9053-0be3f4940d6b";
const C: &str = "4fe257e0-c119-408e-9053-0be3f4940d6c";
const D: &str = "4fe257e0-c119-408e-9053-0be3f4940d6d";
const E: &str = "4fe257e0-c119-408e-9053-0be3f4940d6e";
const F: &str = "4fe257e0-c119-408e-9053-0be3f4940d6f";
const G: &str = "4fe257e0-c119-408e-9053-0be3f4940d60";
const H: &str = "4fe257e0-c119-408e-9053-0be3f4940d61";

const BEFORE_UPLOAD: &str = "IMAGE_TOOLS_TEST_HOOK_GLANCE_LOAD_BEFORE_UPLOAD";
const BEFORE_SEND: &str = "IMAGE_TOOLS_TEST_HOOK_GLANCE_LOAD_BEFORE_SEND";

#[derive(Default)]
struct State {
    /// Request lines ("METHOD /path").
    requests: Vec<String>,
    /// The images, by id.
    images: HashMap<String, Map<String, Value>>,
    /// Every upload: the id and the bytes received.
    uploads: Vec<(String, Vec<u8>)>,
}

/// A fake Glance: the version document, create, show, upload (the image
/// becomes active with the size received), PATCH, members, actions.
struct Fake {
    url: String,
    state: Arc<Mutex<State>>,
}

impl Fake {
    fn start() -> Fake {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", l.local_addr().unwrap());
        let state = Arc::new(Mutex::new(State::default()));
        let st = state.clone();
        std::thread::spawn(move || {
            for s in l.incoming() {
                let Ok(s) = s else { continue };
                let st = st.clone();
                std::thread::spawn(move || serve(s, &st));
            }
        });
        Fake { url, state }
    }

    fn requests(&self) -> Vec<String> {
        self.state.lock().unwrap().requests.clone()
    }

    fn uploads(&self) -> Vec<(String, Vec<u8>)> {
        self.state.lock().unwrap().uploads.clone()
    }

    /// Requests other than reads (what changed the target).
    fn writes(&self) -> Vec<String> {
        self.requests()
            .into_iter()
            .filter(|r| !r.starts_with("GET "))
            .collect()
    }
}

fn serve(mut s: TcpStream, st: &Mutex<State>) {
    let mut r = BufReader::new(s.try_clone().unwrap());
    let mut line = String::new();
    if r.read_line(&mut line).unwrap_or(0) == 0 {
        return;
    }
    let mut len = 0usize;
    let mut chunked = false;
    loop {
        let mut h = String::new();
        if r.read_line(&mut h).unwrap_or(0) == 0 || h == "\r\n" || h == "\n" {
            break;
        }
        let lower = h.to_ascii_lowercase();
        if let Some(v) = lower.strip_prefix("content-length:") {
            len = v.trim().parse().unwrap_or(0);
        }
        if lower.starts_with("transfer-encoding:") && lower.contains("chunked") {
            chunked = true;
        }
    }
    let mut body = Vec::new();
    if chunked {
        loop {
            let mut size = String::new();
            r.read_line(&mut size).unwrap();
            let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
            let mut chunk = vec![0; n + 2];
            r.read_exact(&mut chunk).unwrap();
            if n == 0 {
                break;
            }
            body.extend_from_slice(&chunk[..n]);
        }
    } else {
        body.resize(len, 0);
        if r.read_exact(&mut body).is_err() {
            return;
        }
    }
    let mut parts = line.split_whitespace();
    let method = parts.next().unwrap_or("").to_owned();
    let path = parts.next().unwrap_or("").to_owned();
    let (status, answer) = route(st, &method, &path, body);
    let text = answer.map(|v| v.to_string()).unwrap_or_default();
    let _ = write!(
        s,
        "HTTP/1.1 {status}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{text}",
        text.len()
    );
}

fn route(
    st: &Mutex<State>,
    method: &str,
    path: &str,
    body: Vec<u8>,
) -> (&'static str, Option<Value>) {
    let mut st = st.lock().unwrap();
    st.requests.push(format!("{method} {path}"));
    let seg: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    match (method, seg.as_slice()) {
        ("GET", [""]) => (
            "300 Multiple Choices",
            Some(json!({"versions": [{"id": "v2.9", "status": "CURRENT"}]})),
        ),
        ("POST", ["v2", "images"]) => {
            let Ok(Value::Object(mut img)) = serde_json::from_slice::<Value>(&body) else {
                return ("400 Bad Request", None);
            };
            let id = img
                .get("id")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_owned();
            if st.images.contains_key(&id) {
                return ("409 Conflict", None);
            }
            img.insert("status".into(), "queued".into());
            img.insert("size".into(), Value::Null);
            st.images.insert(id, img.clone());
            ("201 Created", Some(Value::Object(img)))
        }
        ("GET", ["v2", "images", id]) => match st.images.get(*id) {
            Some(img) => ("200 OK", Some(Value::Object(img.clone()))),
            None => ("404 Not Found", None),
        },
        ("PUT", ["v2", "images", id, "file"]) => {
            let id = (*id).to_owned();
            let Some(img) = st.images.get_mut(&id) else {
                return ("404 Not Found", None);
            };
            img.insert("status".into(), "active".into());
            img.insert("size".into(), body.len().into());
            st.uploads.push((id, body));
            ("204 No Content", None)
        }
        ("PATCH", ["v2", "images", id]) => {
            let ops: Vec<Value> = serde_json::from_slice(&body).unwrap_or_default();
            let Some(img) = st.images.get_mut(*id) else {
                return ("404 Not Found", None);
            };
            for op in ops {
                let key = op["path"].as_str().unwrap_or("/").trim_start_matches('/');
                match op["op"].as_str() {
                    Some("remove") => {
                        img.remove(key);
                    }
                    _ => {
                        img.insert(key.to_owned(), op["value"].clone());
                    }
                }
            }
            ("200 OK", Some(Value::Object(img.clone())))
        }
        ("GET", ["v2", "images", _, "members"]) => ("200 OK", Some(json!({"members": []}))),
        ("POST", ["v2", "images", _, "actions", _]) => ("204 No Content", None),
        _ => ("404 Not Found", Some(json!({"message": "nothing here"}))),
    }
}

/// A run's exit code, records and stderr.
struct Run {
    code: i32,
    recs: Vec<Value>,
    err: String,
}

impl Run {
    fn by_id(&self, id: &str) -> &Value {
        self.recs
            .iter()
            .find(|r| {
                r["image"]["id"] == id
                    || r["path"]
                        .as_str()
                        .is_some_and(|p| p.ends_with(id) || p.ends_with(&format!("{id}.img")))
            })
            .unwrap_or_else(|| panic!("{id}: {:#?}\n{}", self.recs, self.err))
    }
}

/// glance-load with `args`, `env` and `stdin`, bounded at 20 s (a FIFO
/// that blocked it would show as a timeout, never as a hang).
fn load(args: &[&str], env: &[(&str, String)], stdin: &str) -> Run {
    let mut c = Command::new(env!("CARGO_BIN_EXE_glance-load"));
    c.args(args)
        .env_remove("OS_IMAGE_URL")
        .env_remove("OS_AUTH_URL")
        .env_remove("OS_AUTH_TOKEN")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        c.env(k, v);
    }
    run_bounded(c, stdin)
}

fn run_bounded(mut c: Command, stdin: &str) -> Run {
    let mut child = c.spawn().unwrap();
    let mut i = child.stdin.take().unwrap();
    let _ = i.write_all(stdin.as_bytes());
    drop(i);
    let mut out = child.stdout.take().unwrap();
    let mut errp = child.stderr.take().unwrap();
    let t_out = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = out.read_to_end(&mut v);
        v
    });
    let t_err = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = errp.read_to_end(&mut v);
        v
    });
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if start.elapsed() > Duration::from_secs(20) {
            let _ = child.kill();
            let _ = child.wait();
            panic!("glance-load did not finish within 20 s (blocked?)");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let stdout = t_out.join().unwrap();
    let err = String::from_utf8_lossy(&t_err.join().unwrap()).into_owned();
    let recs = String::from_utf8_lossy(&stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l:?}: {e}")))
        .collect();
    Run {
        code: status.code().unwrap_or(-1),
        recs,
        err,
    }
}

fn sha256(p: &Path) -> String {
    let mut h = MultiHasher::new(&[Algorithm::Sha256]);
    h.update(&bytes::Bytes::from(std::fs::read(p).unwrap()));
    h.finish().remove(0).1
}

/// `n` bytes of `seed` (raw to the probe: no format's magic).
fn data(seed: u8, n: usize) -> Vec<u8> {
    (0..n)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed) | 0x80)
        .collect()
}

const SIZE: usize = 300_000;

/// Metadata of an active raw image of SIZE bytes, with no checksum: the
/// bytes uploaded are whatever the data file holds, so only the identity
/// checks stand between a swapped file and the target.
fn meta(id: &str, v1: bool) -> String {
    if v1 {
        json!({"id": id, "status": "active", "size": SIZE, "disk_format": "raw",
            "container_format": "bare", "name": format!("v1-{id}"), "is_public": false,
            "deleted": false, "properties": {"os_distro": "cirros"}, "checksum": null})
        .to_string()
    } else {
        json!({"id": id, "status": "active", "size": SIZE, "disk_format": "raw",
            "container_format": "bare", "name": format!("v2-{id}"), "visibility": "private"})
        .to_string()
    }
}

/// A scratch directory: `dump/` and, beside it, a decoy of SIZE bytes.
struct Scratch {
    _t: tempfile::TempDir,
    dump: PathBuf,
    decoy: PathBuf,
    decoy_hash: String,
}

impl Scratch {
    fn new() -> Scratch {
        let t = tempfile::tempdir().unwrap();
        let dump = t.path().join("dump");
        std::fs::create_dir(&dump).unwrap();
        let decoy = t.path().join("decoy.img");
        std::fs::write(&decoy, data(200, SIZE)).unwrap();
        let decoy_hash = sha256(&decoy);
        Scratch {
            _t: t,
            dump,
            decoy,
            decoy_hash,
        }
    }

    /// An image of the dump: metadata and data (seeded by `seed`).
    fn image(&self, id: &str, v1: bool, seed: u8) -> Vec<u8> {
        std::fs::write(self.dump.join(id), meta(id, v1)).unwrap();
        let d = data(seed, SIZE);
        std::fs::write(self.img(id), &d).unwrap();
        d
    }

    fn img(&self, id: &str) -> PathBuf {
        self.dump.join(format!("{id}.img"))
    }

    fn dir(&self) -> &str {
        self.dump.to_str().unwrap()
    }

    fn decoy_untouched(&self) {
        assert_eq!(sha256(&self.decoy), self.decoy_hash, "the decoy changed");
    }
}

fn sh_quote(p: &Path) -> String {
    format!("'{}'", p.to_str().unwrap().replace('\'', r"'\''"))
}

fn kind(r: &Value) -> &str {
    r["error"]["kind"].as_str().unwrap_or("")
}

/// The data file swapped for a link to a decoy between the listing and
/// the upload: refused as a link, and the decoy's bytes never reach the
/// target (both layouts); the other image of the same run loads.
#[test]
fn a_data_file_swapped_for_a_link_after_listing_is_not_uploaded() {
    for v1 in [false, true] {
        let s = Scratch::new();
        let g = Fake::start();
        s.image(A, v1, 1);
        let good = s.image(B, v1, 2);
        let hook = format!("ln -sfn {} {}", sh_quote(&s.decoy), sh_quote(&s.img(A)));
        let run = load(
            &["--url", &g.url, "--dir", s.dir()],
            &[(BEFORE_UPLOAD, hook)],
            "",
        );
        assert_eq!(run.code, 2, "{:#?} {}", run.recs, run.err);
        let a = run.by_id(A);
        assert_eq!(kind(a), "symlink", "{a}");
        assert_eq!(a["load"]["action"], "failed");
        assert!(s.img(A).is_symlink(), "the hook ran");
        assert_eq!(run.by_id(B)["load"]["action"], "created", "{:#?}", run.recs);
        // Only B was created, and only B's bytes were sent.
        assert_eq!(g.uploads(), [(B.to_owned(), good)]);
        assert!(
            g.writes().iter().all(|w| !w.contains(A)),
            "{:?}",
            g.writes()
        );
        s.decoy_untouched();
    }
}

/// The data file replaced by another regular file (renamed over it) or
/// rewritten in place after the listing: `changed`, nothing sent.
#[test]
fn a_data_file_replaced_or_rewritten_after_listing_is_changed() {
    let s = Scratch::new();
    let staged = s.dump.parent().unwrap().join("staged");
    let hooks = [
        // Another file of the same size renamed over it.
        format!(
            "cp {} {} && mv {} {}",
            sh_quote(&s.decoy),
            sh_quote(&staged),
            sh_quote(&staged),
            sh_quote(&s.img(A))
        ),
        // The same inode rewritten in place, same size, later mtime.
        format!(
            "dd if={} of={} conv=notrunc status=none && touch -d '+1 hour' {}",
            sh_quote(&s.decoy),
            sh_quote(&s.img(A)),
            sh_quote(&s.img(A))
        ),
    ];
    for hook in hooks {
        let g = Fake::start();
        s.image(A, false, 1);
        let run = load(
            &["--url", &g.url, "--dir", s.dir()],
            &[(BEFORE_UPLOAD, hook.clone())],
            "",
        );
        assert_eq!(run.code, 2, "{hook}: {:#?}", run.recs);
        let a = run.by_id(A);
        assert_eq!(kind(a), "changed", "{hook}: {a}");
        assert!(
            a["error"]["message"]
                .as_str()
                .unwrap()
                .starts_with("the data file: "),
            "{a}"
        );
        assert_eq!(sha256(&s.img(A)), s.decoy_hash, "{hook}: the hook ran");
        assert!(g.uploads().is_empty(), "{hook}");
        assert!(g.writes().is_empty(), "{hook}: {:?}", g.writes());
        s.decoy_untouched();
    }
}

/// Once the data file is open and judged, a link or another file swapped
/// in changes nothing: the bytes sent are the judged file's. A rewrite in
/// place (the same inode) is caught right before the bytes go out.
#[test]
fn a_swap_after_the_file_was_opened_sends_the_judged_bytes() {
    let s = Scratch::new();
    let g = Fake::start();
    let original = s.image(A, false, 1);
    let hook = format!("ln -sfn {} {}", sh_quote(&s.decoy), sh_quote(&s.img(A)));
    let run = load(
        &["--url", &g.url, "--dir", s.dir()],
        &[(BEFORE_SEND, hook)],
        "",
    );
    assert_eq!(run.code, 0, "{:#?} {}", run.recs, run.err);
    assert_eq!(run.by_id(A)["load"]["action"], "created");
    assert!(s.img(A).is_symlink(), "the hook ran");
    assert_eq!(g.uploads(), [(A.to_owned(), original)]);
    s.decoy_untouched();

    // In place: same inode, same size, new bytes and mtime.
    let g = Fake::start();
    s.image(B, false, 2);
    let hook = format!(
        "dd if={} of={} conv=notrunc status=none && touch -d '+1 hour' {}",
        sh_quote(&s.decoy),
        sh_quote(&s.img(B)),
        sh_quote(&s.img(B))
    );
    std::fs::remove_file(s.dump.join(A)).unwrap();
    std::fs::remove_file(s.img(A)).unwrap();
    let run = load(
        &["--url", &g.url, "--dir", s.dir()],
        &[(BEFORE_SEND, hook)],
        "",
    );
    assert_eq!(run.code, 2, "{:#?}", run.recs);
    assert_eq!(kind(run.by_id(B)), "changed", "{:#?}", run.recs);
    assert!(g.uploads().is_empty());
    s.decoy_untouched();
}

/// FIFOs, devices, directories and links where a dump holds plain files:
/// each refused with its kind, without blocking, nothing read through a
/// link; the one good image of the dump still loads.
#[test]
fn special_files_and_links_in_a_dump_are_refused_without_blocking() {
    let s = Scratch::new();
    let g = Fake::start();
    let outside = s.dump.parent().unwrap();
    let mkfifo = |p: &Path| {
        assert!(Command::new("mkfifo").arg(p).status().unwrap().success());
    };
    // A: the data a FIFO (a writer that never comes would block a read).
    std::fs::write(s.dump.join(A), meta(A, false)).unwrap();
    mkfifo(&s.img(A));
    // B: the data a character device (/dev/zero's numbers: endless bytes).
    std::fs::write(s.dump.join(B), meta(B, false)).unwrap();
    let made = Command::new("mknod")
        .arg(s.img(B))
        .args(["c", "1", "5"])
        .stderr(Stdio::null())
        .status()
        .unwrap()
        .success();
    if !made {
        eprintln!("SKIPPED: the character-device case (mknod needs root)");
        std::fs::write(s.img(B), data(9, SIZE)).unwrap();
    }
    // C: the metadata a link to a valid metadata file outside.
    let outside_meta = outside.join("outside-meta.json");
    std::fs::write(&outside_meta, meta(C, false)).unwrap();
    std::os::unix::fs::symlink(&outside_meta, s.dump.join(C)).unwrap();
    std::fs::write(s.img(C), data(3, SIZE)).unwrap();
    // D: the metadata a FIFO.
    mkfifo(&s.dump.join(D));
    // E: the data a directory.
    std::fs::write(s.dump.join(E), meta(E, false)).unwrap();
    std::fs::create_dir(s.img(E)).unwrap();
    // F: the members file a link to a members file outside.
    s.image(F, false, 6);
    let outside_members = outside.join("members.json");
    std::fs::write(
        &outside_members,
        r#"[{"member_id":"tenant","status":"accepted"}]"#,
    )
    .unwrap();
    std::os::unix::fs::symlink(&outside_members, s.dump.join(format!("{F}.members"))).unwrap();
    // G: the data a link to the decoy.
    std::fs::write(s.dump.join(G), meta(G, false)).unwrap();
    std::os::unix::fs::symlink(&s.decoy, s.img(G)).unwrap();
    // H: fine.
    let good = s.image(H, false, 8);
    let hashes = [&outside_meta, &outside_members].map(|p| sha256(p));

    let start = Instant::now();
    let run = load(&["--url", &g.url, "--dir", s.dir()], &[], "");
    assert!(start.elapsed() < Duration::from_secs(10));
    assert_eq!(run.code, 2, "{:#?}", run.recs);
    assert_eq!(run.recs.len(), 8, "{:#?}", run.recs);
    let want = [
        (A, "not_regular"),
        (B, if made { "not_regular" } else { "" }),
        (C, "symlink"),
        (D, "not_regular"),
        (E, "not_regular"),
        (F, "symlink"),
        (G, "symlink"),
        (H, ""),
    ];
    for (id, k) in want {
        let r = run.by_id(id);
        if k.is_empty() {
            assert_eq!(r["load"]["action"], "created", "{id}: {r}");
        } else {
            assert_eq!(kind(r), k, "{id}: {r}");
        }
    }
    // The messages say which file, by name.
    let g_msg = run.by_id(G)["error"]["message"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        g_msg.starts_with(&format!("{G}.img: is a symbolic link")),
        "{g_msg}"
    );
    let f_msg = run.by_id(F)["error"]["message"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(f_msg.starts_with(&format!("{F}.members: ")), "{f_msg}");
    let mut uploaded: Vec<String> = g.uploads().into_iter().map(|(id, _)| id).collect();
    uploaded.sort();
    let mut want_up = vec![H.to_owned()];
    if !made {
        want_up.push(B.to_owned());
        want_up.sort();
    }
    assert_eq!(uploaded, want_up);
    assert!(g.uploads().iter().any(|(id, d)| id == H && *d == good));
    s.decoy_untouched();
    assert_eq!([&outside_meta, &outside_members].map(|p| sha256(p)), hashes);
    // Nothing in the dump was changed either.
    assert!(s.img(G).is_symlink() && s.dump.join(C).is_symlink());
}

/// Names that lie: a metadata file `A` whose id is `B` (ours and the
/// replicator's layout) is refused, and the genuine `B` loads with its own
/// bytes; a stdin record pointing at another image's data file never
/// gives its image those bytes.
#[test]
fn names_that_lie_are_refused_and_stdin_paths_are_verified() {
    let s = Scratch::new();
    let g = Fake::start();
    // A (v2) and C (v1) say they are B; their .img hold other bytes.
    std::fs::write(s.dump.join(A), meta(B, false)).unwrap();
    std::fs::write(s.img(A), data(1, SIZE)).unwrap();
    std::fs::write(s.dump.join(C), meta(B, true)).unwrap();
    std::fs::write(s.img(C), data(3, SIZE)).unwrap();
    let genuine = s.image(B, false, 2);
    let run = load(&["--url", &g.url, "--dir", s.dir()], &[], "");
    assert_eq!(run.code, 2, "{:#?}", run.recs);
    assert_eq!(run.recs.len(), 3);
    for (r, name) in [(&run.recs[0], A), (&run.recs[2], C)] {
        assert_eq!(r["path"], s.dump.join(name).to_str().unwrap(), "{r}");
        assert_eq!(kind(r), "bad_record", "{r}");
        assert_eq!(
            r["error"]["message"],
            format!("the metadata's id {B:?} is not its file name")
        );
    }
    assert_eq!(run.recs[1]["image"]["id"], B);
    assert_eq!(run.recs[1]["load"]["action"], "created");
    assert_eq!(g.uploads(), [(B.to_owned(), genuine.clone())]);

    // From stdin, a record is the operator's statement: its path may name
    // any file (the same bytes under a new id is a real use), and the
    // bytes must be what the record says. A record for E pointing at B's
    // data never gives E B's bytes: the upload is abandoned before its
    // last byte and E stays queued with no data.
    let g = Fake::start();
    let honest = s.image(D, false, 4);
    let rec = |id: &str, path: &Path, bytes: &[u8]| {
        let mut img: Value = serde_json::from_str(&meta(id, false)).unwrap();
        let mut h = MultiHasher::new(&[Algorithm::Md5]);
        h.update(&bytes::Bytes::copy_from_slice(bytes));
        img["checksum"] = h.finish().remove(0).1.into();
        format!(
            "{}\n",
            json!({"path": path, "image": img, "dump": {"meta_path": s.dump.join(id)}})
        )
    };
    let input = [
        rec(D, &s.img(D), &honest),
        rec(E, &s.img(B), &data(5, SIZE)),
    ]
    .concat();
    let run = load(&["--url", &g.url], &[], &input);
    assert_eq!(run.code, 2, "{:#?}", run.recs);
    assert_eq!(run.recs[0]["load"]["action"], "created", "{:#?}", run.recs);
    assert_eq!(kind(&run.recs[1]), "bad_image", "{:#?}", run.recs);
    assert_eq!(g.uploads(), [(D.to_owned(), honest)]);
    let e = g.state.lock().unwrap().images[E].clone();
    assert_eq!(e["status"], "queued", "{e:?}");
    assert_eq!(sha256(&s.img(B)), sha256_bytes(&genuine));
    s.decoy_untouched();
}

fn sha256_bytes(b: &[u8]) -> String {
    let mut h = MultiHasher::new(&[Algorithm::Sha256]);
    h.update(&bytes::Bytes::copy_from_slice(b));
    h.finish().remove(0).1
}

/// strace shows the data file opened once, by its bare name relative to
/// the dump directory's handle, with O_NOFOLLOW: never reopened by path.
#[test]
fn the_data_file_is_opened_once_relative_to_the_dump_directory() {
    if Command::new("strace").arg("-V").output().is_err() {
        eprintln!("SKIPPED: no strace");
        return;
    }
    let s = Scratch::new();
    let g = Fake::start();
    let original = s.image(A, false, 1);
    let log = s.dump.parent().unwrap().join("strace.log");
    let mut c = Command::new("strace");
    c.args(["-f", "-qq", "-e", "trace=open,openat,openat2,creat", "-o"])
        .arg(&log)
        .arg(env!("CARGO_BIN_EXE_glance-load"))
        .args(["--url", &g.url, "--dir", s.dir()])
        .env_remove("OS_IMAGE_URL")
        .env_remove("OS_AUTH_URL")
        .env_remove("OS_AUTH_TOKEN")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let run = run_bounded(c, "");
    assert_eq!(run.code, 0, "{:#?} {}", run.recs, run.err);
    assert_eq!(g.uploads(), [(A.to_owned(), original)]);
    let trace = std::fs::read_to_string(&log).unwrap();
    let opens: Vec<&str> = trace.lines().filter(|l| l.contains(".img")).collect();
    assert_eq!(opens.len(), 1, "{opens:#?}");
    assert!(opens[0].contains(&format!("\"{A}.img\"")), "{}", opens[0]);
    assert!(opens[0].contains("O_NOFOLLOW"), "{}", opens[0]);
    assert!(!opens[0].contains("AT_FDCWD"), "{}", opens[0]);
    // The metadata too: by name, relative, not following.
    let metas: Vec<&str> = trace
        .lines()
        .filter(|l| l.contains(&format!("\"{A}\"")))
        .collect();
    assert_eq!(metas.len(), 1, "{metas:#?}");
    assert!(metas[0].contains("O_NOFOLLOW"), "{}", metas[0]);
}
