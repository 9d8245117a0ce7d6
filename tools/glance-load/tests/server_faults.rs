//! The Glance server fails under the tools: killed (SIGKILL, uWSGI master
//! and workers) mid-download and mid-upload, then restarted on the same
//! database and store; a server that accepts and never answers, or stalls
//! in a body. Each time an error record and exit 2, nothing half-written
//! under a final name, and a re-run that converges or says precisely why
//! it cannot. (A 500 on PUT is in errors.rs.)
#![cfg(test)]

use glance_server::{
    AUTH, Server, auth_flags, bin, bytes_of, create, curl_as, have_bins, have_python311, image,
    md5_hex, of_image, start, upload,
};
use test_support::glance_server;

use serde_json::{Value, json};
use std::io::{Read, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const MIB: u64 = 1 << 20;

/// A tool running in the background: its stdin fed, its stdout collected.
struct Running {
    child: Child,
    out: std::thread::JoinHandle<Vec<u8>>,
    started: Instant,
}

impl Running {
    /// `tool args` with the test identity, `input` on stdin.
    fn spawn(tool: &str, url: &str, args: &[&str], input: &str) -> Running {
        let mut child = Command::new(bin(tool))
            .args(["--url", url])
            .args(auth_flags("--header"))
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let mut stdin = child.stdin.take().unwrap();
        let input = input.to_owned();
        std::thread::spawn(move || {
            let _ = stdin.write_all(input.as_bytes());
        });
        let mut stdout = child.stdout.take().unwrap();
        let out = std::thread::spawn(move || {
            let mut v = Vec::new();
            stdout.read_to_end(&mut v).unwrap();
            v
        });
        Running {
            child,
            out,
            started: Instant::now(),
        }
    }

    fn signal(&self, sig: &str) {
        let st = Command::new("kill")
            .args([sig, &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(st.success());
    }

    /// Its exit code, records and run time; killed (and the test failed)
    /// if it runs past `limit`: a hang must not hang the suite.
    fn finish(mut self, limit: Duration) -> (i32, Vec<Value>, Duration) {
        let code = loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                break st.code().unwrap_or(-1);
            }
            if self.started.elapsed() > limit {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!("still running after {limit:?}: it hangs");
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let took = self.started.elapsed();
        let out = self.out.join().unwrap();
        let recs = String::from_utf8_lossy(&out)
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        (code, recs, took)
    }
}

/// Run `tool` to the end (failing the test past two minutes).
fn run(tool: &str, url: &str, args: &[&str], input: &str) -> (i32, Vec<Value>, Duration) {
    Running::spawn(tool, url, args, input).finish(Duration::from_secs(120))
}

/// `n` MiB of incompressible bytes (each MiB its own seed) in `path`.
fn write_data(path: &Path, seed: u32, n: u64) {
    let mut f = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    for i in 0..n as u32 {
        f.write_all(&bytes_of(seed.wrapping_add(i), MIB as usize))
            .unwrap();
    }
    f.flush().unwrap();
}

fn len(p: &Path) -> u64 {
    std::fs::metadata(p).map(|m| m.len()).unwrap_or(0)
}

/// Wait until `p` holds at least `n` bytes (it is being written).
fn grows_past(p: &Path, n: u64) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while len(p) < n {
        assert!(
            Instant::now() < deadline,
            "{} never reached {n}",
            p.display()
        );
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// The atomic writers' temporaries (`.NAME.tmp-PID-N`) in `dir`.
fn temps(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".tmp-"))
        .collect()
}

/// Stop `tool` (SIGSTOP) once `file` has grown past 16 MiB, kill the
/// Glance under it, and let the tool go on: whatever the machine's speed,
/// the server dies with the transfer half done.
fn kill_glance_midway(tool: &Running, file: &Path, glance: &Server) {
    grows_past(file, 16 * MIB);
    tool.signal("-STOP");
    glance.kill_hard();
    tool.signal("-CONT");
}

/// glance-dump --dir, its Glance killed mid-download: an error record
/// naming how far it got, exit 2, no .img, no temporary; the .part kept.
/// Restarted on the same state, a re-run resumes the .part (Range) into a
/// whole, verified .img.
#[test]
fn glance_killed_mid_download_then_a_rerun_resumes() {
    if !have_bins(&["glance-dump"]) {
        return;
    }
    let Some(a) = start() else { return };
    let t = tempfile::tempdir().unwrap();
    let data = t.path().join("data.raw");
    let size = 256 * MIB;
    write_data(&data, 11, 256);
    let id = create(
        &a.url,
        r#"{"name":"big","disk_format":"raw","container_format":"bare"}"#,
    );
    upload(&a.url, &id, &data);
    let d = t.path().join("dump");
    let dir = d.to_str().unwrap();
    let img = d.join(format!("{id}.img"));
    let part = d.join(format!("{id}.img.part"));

    let dump = Running::spawn("glance-dump", &a.url, &["--dir", dir], "");
    kill_glance_midway(&dump, &part, &a);
    let (code, recs, took) = dump.finish(Duration::from_secs(120));
    eprintln!("glance-dump, Glance killed mid-download: {took:?}: {recs:?}");
    assert_eq!(code, 2);
    let r = of_image(&recs, &id);
    assert_eq!(r["error"]["kind"], "io", "{r}");
    let msg = r["error"]["message"].as_str().unwrap();
    assert!(
        msg.contains("the server closed the connection after")
            && msg.contains(&format!("of {size} bytes")),
        "{msg}"
    );
    assert!(r.get("dump").is_none(), "{r}");
    // Nothing under the final name; the .part a prefix of the data.
    assert!(!img.exists());
    let got = std::fs::read(&part).unwrap();
    assert!(got.len() as u64 >= 16 * MIB && (got.len() as u64) < size);
    assert!(std::fs::read(&data).unwrap().starts_with(&got));
    assert!(temps(&d).is_empty(), "{:?}", temps(&d));
    // The rest of the listing (the hidden pass) is an error too.
    assert!(recs.iter().all(|r| r["error"]["kind"] == "io"), "{recs:?}");

    a.restart();
    let (code, recs, took) = run("glance-dump", &a.url, &["--dir", dir], "");
    eprintln!("glance-dump re-run: {took:?}");
    assert_eq!(code, 0, "{recs:?}");
    let r = of_image(&recs, &id);
    assert_eq!(r["dump"]["action"], "resumed", "{r}");
    assert_eq!(r["dump"]["resumed_from"], got.len() as u64);
    assert_eq!(r["dump"]["verified"], true);
    assert_eq!(r["dump"]["bytes"], size);
    assert!(std::fs::read(&img).unwrap() == std::fs::read(&data).unwrap());
    assert!(!part.exists());
    assert!(temps(&d).is_empty(), "{:?}", temps(&d));
}

/// glance-load, its target killed mid-upload: an error record naming how
/// far it got, exit 2. Glance 33, restarted, keeps the image `saving` for
/// ever with the partial data in its store and refuses every upload
/// (409): the re-run says so (server_error, what to do), exit 2, instead
/// of "busy" with exit 0. Done as the record says (status back to queued,
/// the partial data removed), the next run uploads, and the one after
/// writes nothing.
#[test]
fn glance_killed_mid_upload_then_the_stuck_image_is_reported() {
    if !have_bins(&["glance-load"]) {
        return;
    }
    let Some(b) = start() else { return };
    let t = tempfile::tempdir().unwrap();
    let d = t.path().join("dump");
    std::fs::create_dir(&d).unwrap();
    let id = "6f1c2a7e-4b3d-4c8e-9a51-0d2e7f3b9c11";
    let data = d.join(format!("{id}.img"));
    let size = 256 * MIB;
    write_data(&data, 21, 256);
    let md5 = md5_hex(&data);
    let meta = json!({"id": id, "name": "big", "status": "active", "disk_format": "raw",
        "container_format": "bare", "visibility": "private", "size": size, "checksum": md5});
    std::fs::write(d.join(id), format!("{meta}\n")).unwrap();
    let dir = d.to_str().unwrap();
    let stored = b.state().join("images").join(id);

    let load = Running::spawn("glance-load", &b.url, &["--dir", dir], "");
    kill_glance_midway(&load, &stored, &b);
    let (code, recs, took) = load.finish(Duration::from_secs(120));
    eprintln!("glance-load, Glance killed mid-upload: {took:?}: {recs:?}");
    assert_eq!(code, 2);
    assert_eq!(recs.len(), 1);
    assert_eq!(recs[0]["load"]["action"], "failed");
    assert_eq!(recs[0]["error"]["kind"], "io", "{recs:?}");
    let msg = recs[0]["error"]["message"].as_str().unwrap();
    assert!(msg.contains(&format!("of {size} bytes)")), "{msg}");
    assert!(took < Duration::from_secs(30), "{took:?}");

    // What Glance 33 makes of it: `saving` for ever, partial data stored.
    b.restart();
    let v = image(&b.url, id).unwrap();
    assert_eq!(v["status"], "saving", "{v}");
    assert_eq!(v["size"], Value::Null);
    let partial = len(&stored);
    assert!(partial >= 16 * MIB && partial < size, "{partial}");
    let (code, body) = curl_as(
        &AUTH,
        &[
            "-X",
            "PUT",
            "-H",
            "Content-Type: application/octet-stream",
            "--data-binary",
            "x",
            &format!("{}/v2/images/{id}/file", b.url),
        ],
    );
    assert_eq!(code, 409, "{body}");
    assert!(body.contains("saving to saving"), "{body}");

    // The re-run waits for it to settle (a cut upload whose client went
    // away is queued again within seconds), then says it is stuck.
    let (code, recs, took) = run("glance-load", &b.url, &["--dir", dir], "");
    eprintln!("glance-load re-run on the stuck image: {took:?}: {recs:?}");
    assert_eq!(code, 2);
    assert_eq!(recs[0]["load"]["action"], "failed");
    assert_eq!(recs[0]["error"]["kind"], "server_error", "{recs:?}");
    let msg = recs[0]["error"]["message"].as_str().unwrap();
    for want in [
        format!("saving since {}", v["updated_at"].as_str().unwrap()).as_str(),
        "interrupted",
        "remove the partial data",
        "status back to queued",
        "delete the image",
    ] {
        assert!(msg.contains(want), "{want:?} not in {msg}");
    }
    assert!(took < Duration::from_secs(60), "{took:?}");
    assert_eq!(image(&b.url, id).unwrap()["status"], "saving");

    // As the record says: status back to queued, partial data removed.
    std::fs::remove_file(&stored).unwrap();
    let st = Command::new("python3.11")
        .args([
            "-c",
            "import sqlite3, sys; c = sqlite3.connect(sys.argv[1]); \
             c.execute(\"UPDATE images SET status='queued' WHERE id=?\", (sys.argv[2],)); \
             c.commit()",
        ])
        .arg(b.state().join("glance.sqlite"))
        .arg(id)
        .status()
        .unwrap();
    assert!(st.success());
    let (code, recs, _) = run("glance-load", &b.url, &["--dir", dir], "");
    assert_eq!(code, 0, "{recs:?}");
    assert_eq!(recs[0]["load"]["action"], "uploaded");
    let v = image(&b.url, id).unwrap();
    assert_eq!(v["status"], "active");
    assert_eq!(v["checksum"], md5.as_str());
    assert_eq!(v["size"], size);
    let (code, recs, _) = run("glance-load", &b.url, &["--dir", dir], "");
    assert_eq!(code, 0, "{recs:?}");
    assert_eq!(recs[0]["load"]["action"], "unchanged");
}

/// A fake endpoint that stalls: `silent` accepts, reads the request and
/// never answers; `stall` answers like Glance (versions, a list of one
/// image) but sends only the first part of any data (1 MiB, or half of a
/// Range) and then nothing, takes a POST, and reads no PUT body at all.
const STALLER: &str = r#"
import http.server, json, os, re, sys, time
port, mode, data_path, img = int(sys.argv[1]), sys.argv[2], sys.argv[3], json.loads(sys.argv[4])
total = os.path.getsize(data_path)
with open(data_path, "rb") as f:
    head = f.read(1 << 20)

class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def log_message(self, *a):
        pass
    def stall(self):
        time.sleep(3600)
    def reply(self, code, v):
        b = json.dumps(v).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(b)))
        self.end_headers()
        self.wfile.write(b)
    def do_GET(self):
        if mode == "silent":
            self.stall()
        p = self.path
        if p == "/":
            return self.reply(300, {"versions": [{"id": "v2.17", "status": "CURRENT"}]})
        if p.startswith("/v2/images?"):
            return self.reply(200, {"images": [img] if "os_hidden=false" in p else []})
        if p in ("/v2/images/%s/file" % img["id"], "/disk.img"):
            m = re.match(r"bytes=(\d+)-(\d*)", self.headers.get("Range") or "")
            if m:
                s = int(m.group(1))
                e = int(m.group(2)) if m.group(2) else total - 1
                self.send_response(206)
                self.send_header("Content-Range", "bytes %d-%d/%d" % (s, e, total))
            else:
                s, e = 0, total - 1
                self.send_response(200)
            self.send_header("Content-Length", str(e - s + 1))
            self.end_headers()
            self.wfile.write(head[s:s + min((e - s + 1) // 2, len(head))])
            self.wfile.flush()
            self.stall()
        return self.reply(404, {"message": "no such image"})
    def do_POST(self):
        if mode == "silent":
            self.stall()
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.reply(201, dict(img, status="queued", size=None, checksum=None))
    def do_PUT(self):
        self.stall()

class S(http.server.ThreadingHTTPServer):
    daemon_threads = True
    def handle_error(self, request, client_address):
        pass  # a client gone mid-request (the tool timed out) is the point

S(("127.0.0.1", port), H).serve_forever()
"#;

/// A [`STALLER`] in `mode`, killed when dropped.
struct Staller {
    url: String,
    child: Child,
}

impl Staller {
    fn start(dir: &Path, mode: &str, data: &Path, img: &Value) -> Staller {
        let script = dir.join("staller.py");
        std::fs::write(&script, STALLER).unwrap();
        let port = glance_server::free_port();
        let child = Command::new("python3.11")
            .arg(&script)
            .arg(port.to_string())
            .arg(mode)
            .arg(data)
            .arg(img.to_string())
            .stdin(Stdio::null())
            .spawn()
            .unwrap();
        for _ in 0..200 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                break;
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        Staller {
            url: format!("http://127.0.0.1:{port}"),
            child,
        }
    }
}

impl Drop for Staller {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The error record of a timed-out run: kind `timeout`, naming it.
fn timed_out(what: &str, code: i32, recs: &[Value], took: Duration) -> String {
    eprintln!("{what}: {took:?}: {recs:?}");
    assert_eq!(code, 2, "{what}: {recs:?}");
    let r = recs
        .iter()
        .find(|r| r.get("error").is_some())
        .unwrap_or_else(|| panic!("{what}: no error record: {recs:?}"));
    assert_eq!(r["error"]["kind"], "timeout", "{what}: {r}");
    let msg = r["error"]["message"].as_str().unwrap().to_owned();
    assert!(
        msg.contains("timed out") && msg.contains("for 2 s (--timeout)"),
        "{what}: {msg}"
    );
    assert!(took < Duration::from_secs(30), "{what}: {took:?}");
    msg
}

/// `--timeout 2` against a server that never answers, and one that stalls
/// mid-body (download, upload, Range probe): each tool ends in seconds
/// with a `timeout` record and exit 2 (a stalled body used to hang them:
/// ureq's response timeout ends with the headers). Then the same runs
/// against healthy Glances succeed, the dump resuming the stalled .part.
#[test]
fn a_stalled_server_times_out_then_a_rerun_succeeds() {
    if !have_bins(&["glance-dump", "glance-load", "imginfo-parse"]) {
        return;
    }
    // The stalling servers are Python, as Glance is.
    if !have_python311("the stalling servers") {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let data = t.path().join("data.raw");
    let size = 64 * MIB;
    write_data(&data, 31, 64);
    let md5 = md5_hex(&data);
    let id = "3a9d5f2b-7c1e-4e6a-8b0d-5c4f1e2a9b77";
    let img = json!({"id": id, "name": "slow", "status": "active", "disk_format": "raw",
        "container_format": "bare", "visibility": "private", "size": size, "checksum": md5});
    let silent = Staller::start(t.path(), "silent", &data, &img);
    let stall = Staller::start(t.path(), "stall", &data, &img);
    let d = t.path().join("dump");
    let dir = d.to_str().unwrap();
    let rec = format!("{}\n", json!({"path": data, "image": img}));
    let timeout = ["--timeout", "2"];

    // No answer at all: the version check times out.
    let (c, r, took) = run("glance-dump", &silent.url, &timeout, "");
    let msg = timed_out("glance-dump, silent", c, &r, took);
    assert!(msg.contains("no response"), "{msg}");
    let (c, r, took) = run("glance-load", &silent.url, &timeout, &rec);
    timed_out("glance-load, silent", c, &r, took);
    let probe = |url: &str| run("imginfo-parse", url, &timeout, "");
    let (c, r, took) = probe(&format!("{}/disk.img", silent.url));
    let msg = timed_out("imginfo-parse, silent", c, &r, took);
    assert!(
        msg.starts_with(&format!("{}/disk.img: timed out", silent.url)),
        "{msg}"
    );

    // Headers, then a body that stops.
    let (c, r, took) = run(
        "glance-dump",
        &stall.url,
        &["--timeout", "2", "--dir", dir],
        "",
    );
    let msg = timed_out("glance-dump, stalled download", c, &r, took);
    assert!(msg.contains("nothing arrived"), "{msg}");
    assert_eq!(of_image(&r, id)["error"]["kind"], "timeout");
    assert!(!d.join(format!("{id}.img")).exists());
    assert_eq!(len(&d.join(format!("{id}.img.part"))), MIB);
    let (c, r, took) = run("glance-load", &stall.url, &timeout, &rec);
    let msg = timed_out("glance-load, stalled upload", c, &r, took);
    assert!(msg.contains("the server took nothing"), "{msg}");
    assert_eq!(r[0]["load"]["action"], "failed");
    let (c, r, took) = probe(&format!("{}/disk.img", stall.url));
    let msg = timed_out("imginfo-parse, stalled Range", c, &r, took);
    assert!(msg.contains("nothing arrived"), "{msg}");

    // The re-runs, against healthy Glances (the image under the same id).
    drop((silent, stall));
    let Some(g) = start() else { return };
    let Some(h) = start() else { return };
    create(
        &g.url,
        &json!({"id": id, "name": "slow", "disk_format": "raw", "container_format": "bare",
            "visibility": "private"})
        .to_string(),
    );
    upload(&g.url, id, &data);
    let (c, r, _) = run("glance-dump", &g.url, &["--timeout", "2", "--dir", dir], "");
    assert_eq!(c, 0, "{r:?}");
    assert_eq!(of_image(&r, id)["dump"]["action"], "resumed");
    assert_eq!(of_image(&r, id)["dump"]["resumed_from"], MIB);
    assert!(std::fs::read(d.join(format!("{id}.img"))).unwrap() == std::fs::read(&data).unwrap());
    assert!(temps(&d).is_empty() && !d.join(format!("{id}.img.part")).exists());
    let (c, r, _) = run("glance-load", &h.url, &timeout, &rec);
    assert_eq!(c, 0, "{r:?}");
    assert_eq!(r[0]["load"]["action"], "created");
    assert_eq!(image(&h.url, id).unwrap()["checksum"], md5.as_str());
    let (c, r, _) = probe(&format!("{}/v2/images/{id}/file", g.url));
    assert_eq!(c, 0, "{r:?}");
    assert_eq!(r[0]["info"]["format"], "raw", "{r:?}");
}
