//! The progress meter seen from outside: a tool whose stderr is a terminal
//! (a pseudo-terminal from python3's `pty`) draws a progress line while
//! slow input trickles in, and erases it before a warning and at the end;
//! with stderr a pipe, or with `-q`, stderr holds nothing but warnings.
//! stdout is records only in every case.
#![cfg(test)]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use pipeline_tests::tool;
use std::path::Path;
use std::process::Command;

/// Runs ARGV with stdin fed from DATA in CHUNKS pieces 0.15 s apart (so
/// the work outlasts the meter's 250 ms), stdout to OUT, and stderr a
/// pseudo-terminal (`pty`) or a pipe (`pipe`); writes what reached stderr
/// to its own stdout and exits with the tool's status.
const HARNESS: &str = r#"
import os, pty, subprocess, sys, threading, time
out, data, chunks, how = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
argv = sys.argv[5:]
if how == "pty":
    master, slave = pty.openpty()
    err = slave
else:
    master, err = os.pipe()
with open(out, "wb") as o:
    p = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=o, stderr=err)
os.close(err)
got = bytearray()
def drain():
    while True:
        try:
            b = os.read(master, 65536)
        except OSError:
            break
        if not b:
            break
        got.extend(b)
t = threading.Thread(target=drain)
t.start()
body = open(data, "rb").read()
step = max(1, -(-len(body) // chunks))
try:
    for i in range(0, len(body), step):
        p.stdin.write(body[i:i + step])
        p.stdin.flush()
        time.sleep(0.15)
    p.stdin.close()
except BrokenPipeError:
    pass
code = p.wait()
t.join()
sys.stdout.buffer.write(bytes(got))
sys.exit(code)
"#;

const CLEAR: &str = "\r\x1b[K";

/// What a run left on stderr, stdout and its status.
struct Run {
    stderr: String,
    stdout: String,
    code: i32,
}

fn python() -> bool {
    test_support::require("python3", test_support::runs("python3"))
}

fn run(dir: &Path, data: &[u8], how: &str, name: &str, args: &[&str]) -> Run {
    let input = dir.join("input.bin");
    std::fs::write(&input, data).unwrap();
    let out = dir.join("stdout");
    let got = Command::new("python3")
        .arg("-c")
        .arg(HARNESS)
        .arg(&out)
        .arg(&input)
        .arg("8")
        .arg(how)
        .arg(tool(name).unwrap())
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(
        got.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&got.stderr)
    );
    Run {
        stderr: String::from_utf8_lossy(&got.stdout).into_owned(),
        stdout: std::fs::read_to_string(&out).unwrap(),
        code: got.status.code().unwrap_or(-1),
    }
}

/// Every stdout line is a record.
fn records(r: &Run) -> Vec<serde_json::Value> {
    r.stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON: {l:?}: {e}")))
        .collect()
}

/// The progress lines drawn (each begins with CLEAR), and what stderr
/// holds besides them, the terminal's CR LF read as LF.
fn split(stderr: &str) -> (Vec<&str>, String) {
    let mut drawn = Vec::new();
    let mut rest = String::new();
    for (i, part) in stderr.split(CLEAR).enumerate() {
        // A message follows its clear with a line of its own.
        let (line, after) = match part.find('\n') {
            Some(n) if i > 0 => {
                let (l, a) = part.split_at(n + 1);
                (l, a)
            }
            _ if i > 0 => (part, ""),
            _ => ("", part),
        };
        if line.ends_with('\n') {
            rest.push_str(line);
        } else if !line.is_empty() {
            drawn.push(line);
        }
        rest.push_str(after);
    }
    (drawn, rest.replace("\r\n", "\n"))
}

fn data() -> Vec<u8> {
    (0..8u32 << 20)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect()
}

#[test]
fn checksum_tee_sink_draws_on_a_terminal_and_clears_at_the_end() {
    if !python() {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let args = ["-o", "copy.img", "--expect-size", "8388608"];
    let r = run(t.path(), &data(), "pty", "checksum-tee", &args);
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    let (drawn, rest) = split(&r.stderr);
    assert!(!drawn.is_empty(), "no progress line: {:?}", r.stderr);
    assert!(
        drawn.iter().any(|l| l.starts_with("copy.img: ")
            && l.contains(" of 8 MiB (")
            && l.contains("left")),
        "{drawn:?}"
    );
    // Erased at the end: nothing else on stderr, the line gone.
    assert_eq!(rest, "", "{:?}", r.stderr);
    assert!(r.stderr.ends_with(CLEAR), "{:?}", r.stderr);
    assert_eq!(records(&r)[0]["checksums"]["state"], "committed");
}

#[test]
fn a_warning_comes_after_the_line_is_erased() {
    if !python() {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let args = [
        "-o",
        "copy.img",
        "--expect",
        "md5:00000000000000000000000000000000",
    ];
    let r = run(t.path(), &data(), "pty", "checksum-tee", &args);
    assert_eq!(r.code, 1, "{}{}", r.stdout, r.stderr);
    let (drawn, rest) = split(&r.stderr);
    // No size known (stdin is a pipe): bytes and rate.
    assert!(
        drawn
            .iter()
            .any(|l| l.starts_with("copy.img: ") && l.ends_with("/s")),
        "{drawn:?}"
    );
    assert_eq!(rest, "checksum-tee: mismatch: md5\n", "{:?}", r.stderr);
    // The warning starts a line of its own.
    let at = r.stderr.find("checksum-tee:").unwrap();
    assert!(r.stderr[..at].ends_with(CLEAR), "{:?}", r.stderr);
}

#[test]
fn verify_and_vhd_extract_draw_too() {
    if !python() {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let r = run(t.path(), &data(), "pty", "checksum-tee", &["--verify", "-"]);
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    let (drawn, rest) = split(&r.stderr);
    assert!(drawn.iter().any(|l| l.starts_with("-: ")), "{:?}", r.stderr);
    assert_eq!(rest, "");
    assert_eq!(records(&r)[0]["checksums"]["bytes"], 8u64 << 20);

    // A fixed VHD in a tarball, trickling into `vhd-chain extract -`.
    let d = t.path();
    std::fs::create_dir(d.join("chain")).unwrap();
    let mut disk = data();
    let mut f = formats::vhd::Footer::blank();
    f.features = 2;
    f.format_version = formats::vhd::FORMAT_VERSION;
    f.data_offset = formats::vhd::NO_OFFSET;
    f.original_size = disk.len() as u64;
    f.current_size = disk.len() as u64;
    f.geometry = formats::vhd::Geometry::for_size(disk.len() as u64);
    f.disk_type_code = 2;
    f.uuid = [7; 16];
    disk.extend_from_slice(&f.sealed());
    std::fs::write(d.join("chain/0.vhd"), &disk).unwrap();
    let tar = Command::new("tar")
        .args(["-cf", "image.tar", "-C", "chain", "0.vhd"])
        .current_dir(d)
        .status()
        .unwrap();
    assert!(tar.success());
    let tarball = std::fs::read(d.join("image.tar")).unwrap();
    std::fs::create_dir(d.join("out")).unwrap();
    let r = run(d, &tarball, "pty", "vhd-chain", &["extract", "-", "out"]);
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    let (drawn, rest) = split(&r.stderr);
    assert!(
        drawn.iter().any(|l| l.starts_with("extracting -: ")),
        "{:?}",
        r.stderr
    );
    assert_eq!(rest, "");
    assert_eq!(records(&r)[0]["vhd"]["member"], "0.vhd");

    // flatten reads the same trickling tarball through the same meter.
    let r = run(
        d,
        &tarball,
        "pty",
        "vhd-chain",
        &["flatten", "-", "-o", "disk.vhd"],
    );
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    let (drawn, rest) = split(&r.stderr);
    assert!(
        drawn.iter().any(|l| l.starts_with("extracting -: ")),
        "{:?}",
        r.stderr
    );
    assert_eq!(rest, "");
    assert_eq!(records(&r)[0]["vhd"]["step"], "flatten");
}

#[test]
fn silent_with_stderr_a_pipe_or_with_q() {
    if !python() {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let bad = ["--expect", "md5:00000000000000000000000000000000"];
    for (how, quiet) in [("pipe", false), ("pty", true)] {
        let mut args = vec!["-o", "copy.img"];
        args.extend(bad);
        if quiet {
            args.push("-q");
        }
        let r = run(t.path(), &data(), how, "checksum-tee", &args);
        assert_eq!(r.code, 1, "{how}: {}{}", r.stdout, r.stderr);
        let want = if quiet {
            ""
        } else {
            "checksum-tee: mismatch: md5\n"
        };
        assert_eq!(r.stderr.replace("\r\n", "\n"), want, "{how} -q={quiet}");
        assert_eq!(records(&r)[0]["checksums"]["state"], "invalid");
        let r = run(t.path(), &data(), how, "checksum-tee", &{
            let mut v = vec!["--verify", "-"];
            if quiet {
                v.push("-q");
            }
            v
        });
        assert_eq!(r.code, 0);
        assert_eq!(r.stderr, "", "{how} -q={quiet}");
    }
}

/// A Glance that answers only its version document, on an ephemeral port
/// printed first: enough for an audit of images with no data (queued),
/// which are judged without reading a byte.
const VERSIONS_ONLY: &str = r#"
import json, sys
from http.server import BaseHTTPRequestHandler, HTTPServer
class H(BaseHTTPRequestHandler):
    def log_message(self, *a):
        pass
    def do_GET(self):
        body = json.dumps({"versions": [{"id": "v2.9", "status": "CURRENT"}]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
s = HTTPServer(("127.0.0.1", 0), H)
print(s.server_address[1], flush=True)
s.serve_forever()
"#;

#[test]
fn the_glance_audit_counts_images() {
    if !python() {
        return;
    }
    use std::io::BufRead;
    let mut server = Command::new("python3")
        .arg("-c")
        .arg(VERSIONS_ONLY)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut port = String::new();
    std::io::BufReader::new(server.stdout.take().unwrap())
        .read_line(&mut port)
        .unwrap();
    let url = format!("http://127.0.0.1:{}", port.trim());
    let t = tempfile::tempdir().unwrap();
    let input: String = (0..40)
        .map(|i| format!("{{\"image\":{{\"id\":\"img-{i}\",\"status\":\"queued\"}}}}\n"))
        .collect();
    let args = ["--check", "--from-glance", &url, "--token", "t"];
    let r = run(t.path(), input.as_bytes(), "pty", "imginfo-parse", &args);
    let quiet = {
        let mut a = args.to_vec();
        a.push("-q");
        run(t.path(), input.as_bytes(), "pty", "imginfo-parse", &a)
    };
    let _ = server.kill();
    let _ = server.wait();
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    let (drawn, rest) = split(&r.stderr);
    assert!(
        drawn
            .iter()
            .any(|l| l.starts_with("auditing Glance: ") && l.contains(" images, ")),
        "{:?}",
        r.stderr
    );
    assert_eq!(rest, "");
    assert_eq!(records(&r).len(), 40);
    assert_eq!(quiet.code, 0);
    assert_eq!(quiet.stderr, "");
    assert_eq!(records(&quiet).len(), 40);
}
