//! Test harness for the Glance tools: a real Glance 33 (and Keystone)
//! started with the scripts in tests/glance-server and
//! tests/keystone-server, and curl with the test identity.

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The identity headers of Glance's headerauth mode.
pub const AUTH: [&str; 4] = [
    "X-Identity-Status: Confirmed",
    "X-User-Id: tester",
    "X-Project-Id: project-1",
    "X-Roles: admin,member,reader",
];

/// The workspace root (where the server scripts are).
pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .find(|d| d.join("tests/glance-server/start-glance.sh").is_file())
        .unwrap()
        .to_path_buf()
}

/// A port nobody listens on now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A running Glance, stopped when dropped.
pub struct Server {
    /// Its endpoint.
    pub url: String,
    state: tempfile::TempDir,
}

impl Server {
    /// Its state directory (the file store is `images/` in it).
    pub fn state(&self) -> &Path {
        self.state.path()
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.url.rsplit(':').next().unwrap().parse().unwrap()
    }

    /// Kill it hard, as the OOM killer or a crash would: SIGKILL to the
    /// uWSGI master and its workers (its process group: start-glance.sh
    /// runs it under setsid), and wait until they are gone. The state
    /// (database, store, logs) stays, for [`Server::restart`].
    pub fn kill_hard(&self) {
        let pidfile = self.state().join("run/uwsgi.pid");
        let pgid: i32 = std::fs::read_to_string(&pidfile)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        assert_eq!(
            process_group(pgid),
            Some(pgid),
            "uWSGI {pgid} does not lead its own process group"
        );
        let st = Command::new("kill")
            .args(["-KILL", "--", &format!("-{pgid}")])
            .status()
            .unwrap();
        assert!(st.success(), "kill -KILL -{pgid}");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while !group_members(pgid).is_empty() {
            assert!(
                std::time::Instant::now() < deadline,
                "uWSGI group {pgid} still has {:?}",
                group_members(pgid)
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        // Dead pids can be reused: stop-glance.sh must not find them.
        for f in ["run/uwsgi.pid", "run/launcher.pid"] {
            let _ = std::fs::remove_file(self.state().join(f));
        }
    }

    /// Start it again on the same state dir and port (after
    /// [`Server::kill_hard`]): the same database and store.
    pub fn restart(&self) {
        let out = Command::new(workspace().join("tests/glance-server/start-glance.sh"))
            .arg(self.state())
            .arg(self.port().to_string())
            .env("GLANCE_VENV", workspace().join("target/glance-venv"))
            .stderr(Stdio::inherit())
            .output()
            .unwrap();
        assert!(out.status.success(), "Glance did not start again");
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), self.url);
    }
}

/// The process group of `pid` (field 5 of /proc/PID/stat), if it lives
/// (a zombie counts as gone).
fn process_group(pid: i32) -> Option<i32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // "PID (COMM) STATE PPID PGRP ...": COMM may hold spaces and ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    let mut f = rest.split(' ');
    let state = f.next()?;
    let pgrp = f.nth(1)?.parse().ok()?;
    (state != "Z").then_some(pgrp)
}

/// The live processes of process group `pgid`.
fn group_members(pgid: i32) -> Vec<i32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|&p| process_group(p) == Some(pgid))
        .collect()
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = Command::new(workspace().join("tests/glance-server/stop-glance.sh"))
            .arg(self.state.path())
            .status();
    }
}

/// Whether python3.11 (Glance's, and the test servers') is here; outside
/// CI its absence skips `what`, saying so.
pub fn have_python311(what: &str) -> bool {
    if Command::new("python3.11").arg("--version").output().is_ok() {
        return true;
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "python3.11 is required in CI"
    );
    eprintln!("skipping: no python3.11 to run {what}");
    false
}

/// The image `id` as Glance shows it, or None when it answers otherwise.
pub fn image(url: &str, id: &str) -> Option<Value> {
    let (code, body) = curl_as(&AUTH, &[&format!("{url}/v2/images/{id}")]);
    (code == 200).then(|| serde_json::from_str(&body).unwrap())
}

/// A file's MD5 (Glance's `checksum`), by md5sum.
pub fn md5_hex(path: &Path) -> String {
    let out = Command::new("md5sum").arg(path).output().unwrap();
    String::from_utf8_lossy(&out.stdout)[..32].to_owned()
}

/// The record about image `id` among a Glance tool's records.
pub fn of_image<'a>(recs: &'a [Value], id: &str) -> &'a Value {
    recs.iter()
        .find(|r| r["image"]["id"] == id)
        .unwrap_or_else(|| panic!("no record of {id}: {recs:#?}"))
}

/// Run a server start script (`tests/<script>`) on a fresh state dir and
/// a free port, its venv kept under target/ for the next run: the URL it
/// prints. None, with the reason printed, where it cannot run outside CI.
fn launch(
    what: &str,
    script: &str,
    venv: (&str, &str),
    extra: &[&str],
    env: &[(&str, String)],
) -> Option<(String, tempfile::TempDir)> {
    if !have_python311(what) {
        return None;
    }
    let state = tempfile::tempdir().unwrap();
    let out = Command::new(workspace().join("tests").join(script))
        .arg(state.path())
        .arg(free_port().to_string())
        .args(extra)
        .env(venv.0, workspace().join("target").join(venv.1))
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stderr(Stdio::inherit())
        .output()
        .unwrap();
    if !out.status.success() {
        assert!(std::env::var_os("CI").is_none(), "{what} did not start");
        eprintln!("skipping: {what} did not start");
        return None;
    }
    let url = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    Some((url, state))
}

/// Start a Glance (module docs of [`launch`]).
pub fn start() -> Option<Server> {
    start_workers(1)
}

/// Start a Glance with `workers` uWSGI processes (concurrent reads).
pub fn start_workers(workers: u32) -> Option<Server> {
    let (url, state) = launch(
        "Glance",
        "glance-server/start-glance.sh",
        ("GLANCE_VENV", "glance-venv"),
        &[],
        &[("GLANCE_WORKERS", workers.to_string())],
    )?;
    Some(Server { url, state })
}

/// `curl` with the test identity; the body as JSON (or null).
pub fn curl(args: &[&str]) -> Value {
    let mut c = Command::new("curl");
    c.args(["-s", "-f"]);
    for h in AUTH {
        c.args(["-H", h]);
    }
    let out = c.args(args).output().unwrap();
    assert!(
        out.status.success(),
        "curl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or(Value::Null)
}

/// Create an image from a JSON body; its id.
pub fn create(url: &str, body: &str) -> String {
    let v = curl(&[
        "-X",
        "POST",
        "-H",
        "Content-Type: application/json",
        "-d",
        body,
        &format!("{url}/v2/images"),
    ]);
    v["id"].as_str().unwrap().to_owned()
}

/// Upload `file` as the image's data (streamed, with its length).
pub fn upload(url: &str, id: &str, file: &Path) {
    curl(&[
        "-H",
        "Content-Type: application/octet-stream",
        "-T",
        file.to_str().unwrap(),
        &format!("{url}/v2/images/{id}/file"),
    ]);
}

/// `curl` with other identity headers (another project, fewer roles);
/// the HTTP status and the body.
pub fn curl_as(auth: &[&str], args: &[&str]) -> (u16, String) {
    let mut c = Command::new("curl");
    c.args(["-s", "-o", "-", "-w", "\n%{http_code}"]);
    for h in auth {
        c.args(["-H", h]);
    }
    let out = c.args(args).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (code.trim().parse().unwrap_or(0), body.to_owned())
}

/// Apply a JSON patch to an image.
pub fn patch(url: &str, id: &str, ops: &str) -> Value {
    curl(&[
        "-X",
        "PATCH",
        "-H",
        "Content-Type: application/openstack-images-v2.1-json-patch",
        "-d",
        ops,
        &format!("{url}/v2/images/{id}"),
    ])
}

/// Run `exe` with `args`, `input` on stdin; the exit code and the output
/// records.
pub fn run_tool(exe: PathBuf, args: &[&str], input: &str) -> (i32, Vec<Value>) {
    let mut c = Command::new(exe);
    c.args(args);
    let (code, out, _) = run_with_rss(c, input.as_bytes());
    let recs = String::from_utf8_lossy(&out)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    (code, recs)
}

/// A workspace binary: in `IMAGE_TOOLS_BIN_DIR`, else beside the test's
/// own (`target/debug/deps/..`).
pub fn bin(name: &str) -> PathBuf {
    if let Some(d) = std::env::var_os("IMAGE_TOOLS_BIN_DIR") {
        return PathBuf::from(d).join(name);
    }
    let exe = std::env::current_exe().unwrap();
    exe.parent().unwrap().parent().unwrap().join(name)
}

/// Whether the tools are built; in CI they must be.
pub fn have_bins(names: &[&str]) -> bool {
    for n in names {
        if !bin(n).is_file() {
            assert!(std::env::var_os("CI").is_none(), "{n} is not built");
            eprintln!("skipping: {n} is not built");
            return false;
        }
    }
    true
}

/// `glance-dump` or `glance-load` against `url` with the test identity,
/// `input` on stdin: the exit code and the records.
pub fn glance_tool(name: &str, url: &str, extra: &[&str], input: &str) -> (i32, Vec<Value>) {
    let auth = auth_flags("--header");
    let mut args = vec!["--url", url];
    args.extend(auth.iter().map(String::as_str));
    args.extend(extra);
    run_tool(bin(name), &args, input)
}

/// `glance-dump --url URL [extra]` must succeed: its records as text.
pub fn dump_text(url: &str, extra: &[&str]) -> String {
    let (code, recs) = glance_tool("glance-dump", url, extra, "");
    assert_eq!(code, 0, "{recs:?}");
    recs.iter().map(|r| format!("{r}\n")).collect()
}

/// `--header H` for each identity header.
pub fn auth_flags(flag: &str) -> Vec<String> {
    AUTH.iter()
        .flat_map(|h| [flag.to_owned(), (*h).to_owned()])
        .collect()
}

/// Incompressible-looking bytes, different for each seed.
pub fn bytes_of(seed: u32, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(2_654_435_761) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            (x >> 11) as u8
        })
        .collect()
}

/// Run `cmd` to the end with `input` on stdin; its exit code, stdout, and
/// peak RSS in KiB (wait4's, of that process alone).
#[allow(unsafe_code)]
pub fn run_with_rss(mut cmd: Command, input: &[u8]) -> (i32, Vec<u8>, u64) {
    use std::io::{Read, Write};
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let input = input.to_vec();
    let feeder = std::thread::spawn(move || {
        let _ = stdin.write_all(&input);
    });
    let mut stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut v = Vec::new();
        stdout.read_to_end(&mut v).unwrap();
        v
    });
    let pid = child.id() as libc::pid_t;
    let mut status = 0;
    // SAFETY: plain wait4 on our own child, into locals; std never waits
    // for it after this (the Child is forgotten).
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let r = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    assert_eq!(r, pid);
    std::mem::forget(child);
    feeder.join().unwrap();
    let out = reader.join().unwrap();
    let code = if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else {
        -1
    };
    (code, out, usage.ru_maxrss as u64)
}

/// A running Keystone (tests/keystone-server), stopped when dropped.
pub struct Keystone {
    /// Its v3 endpoint (`OS_AUTH_URL`).
    pub url: String,
    state: tempfile::TempDir,
}

impl Drop for Keystone {
    fn drop(&mut self) {
        let _ = Command::new(workspace().join("tests/keystone-server/stop-keystone.sh"))
            .arg(self.state.path())
            .status();
    }
}

/// Start a Keystone (admin / secret in project admin) whose catalog
/// points the image service at `glance_url`.
pub fn start_keystone(glance_url: &str) -> Option<Keystone> {
    let (url, state) = launch(
        "Keystone",
        "keystone-server/start-keystone.sh",
        ("KEYSTONE_VENV", "keystone-venv"),
        &[glance_url],
        &[],
    )?;
    Some(Keystone { url, state })
}
