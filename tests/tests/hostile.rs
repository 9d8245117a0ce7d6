//! The hostile-input matrix (DESIGN.md section 4): every tool and mode
//! against inputs that are a regular file, a directory, a FIFO, a character
//! device, a symlink loop, a vanished file, a non-UTF-8 name, a name with
//! a newline and `-`; and every output against an existing file, a device,
//! a FIFO, a directory, a symlink and the input itself.
//!
//! For each case: the exit status and error kind are the expected ones,
//! nothing hangs (each case is killed and failed after 5 s), and nothing
//! outside the case's scratch directory changed (every neighbour's type,
//! bytes and link target are compared before and after). A SIGTERM sent
//! to a tool blocked on a FIFO or on stdin ends it with 143 within a
//! second. Device nodes need root (CI runs as root); elsewhere those
//! cases print `SKIPPED` with the reason.
#![cfg(test)]

use pipeline_tests::tool;
use std::collections::BTreeMap;
use std::ffi::OsString;
use std::io::Read;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use test_support::mkfifo;

const CASE_LIMIT: Duration = Duration::from_secs(5);

/// What a case's input is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum In {
    Regular,
    Dir,
    Fifo,
    CharDev,
    SymlinkLoop,
    Vanished,
    NonUtf8,
    Newline,
    Dash,
    BlockDev,
}

const INPUTS: [In; 10] = [
    In::Regular,
    In::Dir,
    In::Fifo,
    In::CharDev,
    In::SymlinkLoop,
    In::Vanished,
    In::NonUtf8,
    In::Newline,
    In::Dash,
    In::BlockDev,
];

/// What a mode's input content is.
#[derive(Debug, Clone, Copy)]
enum Content {
    Raw,
    Vhd,
    Tarball,
}

/// A tool and mode taking one input file.
struct Mode {
    name: &'static str,
    tool: &'static str,
    content: Content,
    /// Reads a stream (pipe, FIFO, `-`, character device) front to back.
    streams: bool,
    /// The argv after the tool's name, given the input and the case dir.
    args: fn(&Path, &Path) -> Vec<OsString>,
}

fn os(v: &[&str]) -> Vec<OsString> {
    v.iter().map(OsString::from).collect()
}

fn with(mut v: Vec<OsString>, input: &Path) -> Vec<OsString> {
    v.push(input.as_os_str().to_owned());
    v
}

fn modes() -> Vec<Mode> {
    vec![
        Mode {
            name: "imginfo-parse",
            tool: "imginfo-parse",
            content: Content::Raw,
            streams: true,
            args: |i, _| with(os(&["--"]), i),
        },
        Mode {
            name: "imginfo-parse --check",
            tool: "imginfo-parse",
            content: Content::Raw,
            streams: true,
            args: |i, _| with(os(&["--check", "--"]), i),
        },
        Mode {
            name: "checksum-tee --verify",
            tool: "checksum-tee",
            content: Content::Raw,
            streams: true,
            args: |i, _| {
                with(
                    os(&["--verify", "-a", "sha256", "--expect-size", "256K", "--"]),
                    i,
                )
            },
        },
        Mode {
            name: "vhd-chain info",
            tool: "vhd-chain",
            content: Content::Vhd,
            streams: false,
            args: |i, _| with(os(&["info", "--"]), i),
        },
        Mode {
            name: "vhd-chain check",
            tool: "vhd-chain",
            content: Content::Vhd,
            streams: false,
            args: |i, _| with(os(&["check", "--"]), i),
        },
        Mode {
            name: "vhd-chain resize",
            tool: "vhd-chain",
            content: Content::Vhd,
            streams: false,
            args: |i, _| {
                let mut v = with(os(&["resize", "--"]), i);
                v.push("4M".into());
                v
            },
        },
        Mode {
            name: "vhd-chain extract",
            tool: "vhd-chain",
            content: Content::Tarball,
            streams: true,
            args: |i, case| {
                let mut v = with(os(&["extract", "--"]), i);
                v.push(case.join("out").into_os_string());
                v
            },
        },
        Mode {
            name: "vhd-chain flatten",
            tool: "vhd-chain",
            content: Content::Tarball,
            streams: true,
            args: |i, case| {
                let mut v = with(os(&["flatten", "-o"]), &case.join("flat.vhd"));
                v.push("--".into());
                v.push(i.as_os_str().to_owned());
                v
            },
        },
    ]
}

/// The expected outcome of a case.
#[derive(Debug, Clone)]
enum Expect {
    /// Worked: one of these exit statuses, no error record.
    Exit(&'static [i32]),
    /// Refused: exit 2 (1 where a check answered), an error record with one of these kinds.
    Kind(&'static [&'static str]),
}

fn expect(mode: &Mode, input: In) -> Expect {
    match input {
        In::Regular | In::NonUtf8 | In::Newline => Expect::Exit(&[0]),
        // A volume is read at offsets like a file, but never replaced.
        In::BlockDev if mode.name == "vhd-chain resize" => Expect::Kind(&["not_regular"]),
        In::BlockDev => Expect::Exit(&[0]),
        // flatten also takes a chain directory: an empty one has no chain.
        In::Dir if mode.name == "vhd-chain flatten" => Expect::Kind(&["chain_empty"]),
        In::Dir => Expect::Kind(&["not_regular"]),
        // A file changed in place is never reached through a link (issue 17).
        In::SymlinkLoop if mode.name == "vhd-chain resize" => Expect::Kind(&["symlink"]),
        In::SymlinkLoop => Expect::Kind(&["io", "not_found", "not_regular"]),
        In::Vanished => Expect::Kind(&["not_found"]),
        In::Fifo | In::Dash if mode.streams => Expect::Exit(&[0]),
        // An endless device: a stream mode stops at its bound and says it
        // did not read it all (or, for checksum-tee, that the size is wrong).
        In::CharDev if mode.streams => match mode.name {
            "checksum-tee --verify" => Expect::Exit(&[1]),
            "imginfo-parse --check" => Expect::Exit(&[1]),
            "imginfo-parse" => Expect::Exit(&[0]),
            // An endless stream of zeros is no tarball.
            _ => Expect::Kind(&[
                "not_a_tarball",
                "limit_exceeded",
                "unsafe_member",
                "not_regular",
            ]),
        },
        In::Fifo | In::CharDev | In::Dash => Expect::Kind(&["not_regular", "usage"]),
    }
}

/// A scratch root: `case/` (the case's own files) and `neighbours/` (what
/// must never change), with the mode's content at `neighbours/src`.
struct Scratch {
    _root: tempfile::TempDir,
    case: PathBuf,
    neighbours: PathBuf,
}

impl Scratch {
    fn new(fixtures: &Fixtures, content: Content) -> Scratch {
        let root = tempfile::tempdir().unwrap();
        let case = root.path().join("case");
        let neighbours = root.path().join("neighbours");
        std::fs::create_dir(&case).unwrap();
        std::fs::create_dir(&neighbours).unwrap();
        std::fs::write(neighbours.join("secret.txt"), b"never to be touched\n").unwrap();
        std::fs::write(neighbours.join("src"), fixtures.bytes(content)).unwrap();
        std::os::unix::fs::symlink("secret.txt", neighbours.join("link")).unwrap();
        Scratch {
            _root: root,
            case,
            neighbours,
        }
    }

    fn src(&self) -> PathBuf {
        self.neighbours.join("src")
    }
}

/// What a tree holds: per entry, its type and its bytes or link target.
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, String> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            let md = std::fs::symlink_metadata(&p).unwrap();
            let ft = md.file_type();
            let what = if ft.is_symlink() {
                format!("link {:?}", std::fs::read_link(&p).unwrap())
            } else if ft.is_dir() {
                stack.push(p.clone());
                "dir".into()
            } else if ft.is_file() {
                format!("file {:x?}", md5ish(&std::fs::read(&p).unwrap()))
            } else {
                format!("special {:o} {}", md.mode(), md.rdev())
            };
            out.insert(p, what);
        }
    }
    out
}

/// A cheap content fingerprint (FNV-1a), enough to see a change.
fn md5ish(b: &[u8]) -> (u64, usize) {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &x in b {
        h = (h ^ u64::from(x)).wrapping_mul(0x100_0000_01b3);
    }
    (h, b.len())
}

struct Fixtures {
    raw: Vec<u8>,
    vhd: Vec<u8>,
    tarball: Vec<u8>,
}

impl Fixtures {
    fn new() -> Fixtures {
        let d = tempfile::tempdir().unwrap();
        let raw: Vec<u8> = (0..256 * 1024u32).map(|i| (i % 251) as u8).collect();
        let vhd = d.path().join("0.vhd");
        let st = Command::new("qemu-img")
            .args(["create", "-q", "-f", "vpc", "-o", "subformat=dynamic"])
            .arg(&vhd)
            .arg("2M")
            .status()
            .expect("qemu-img is needed for the hostile matrix");
        assert!(st.success());
        let tgz = d.path().join("image.tgz");
        let st = Command::new("tar")
            .arg("czf")
            .arg(&tgz)
            .arg("-C")
            .arg(d.path())
            .arg("0.vhd")
            .status()
            .unwrap();
        assert!(st.success());
        Fixtures {
            raw,
            vhd: std::fs::read(&vhd).unwrap(),
            tarball: std::fs::read(&tgz).unwrap(),
        }
    }

    fn bytes(&self, c: Content) -> &[u8] {
        match c {
            Content::Raw => &self.raw,
            Content::Vhd => &self.vhd,
            Content::Tarball => &self.tarball,
        }
    }
}

/// A character device node (1,3 is /dev/null, 1,5 /dev/zero); Err with
/// the reason where mknod is not allowed.
fn mknod_char(p: &Path, minor: u32) -> Result<(), String> {
    let c = std::ffi::CString::new(p.as_os_str().as_bytes()).unwrap();
    #[allow(unsafe_code)]
    // SAFETY: a NUL-terminated path; makedev is pure.
    let rc = unsafe { libc::mknod(c.as_ptr(), libc::S_IFCHR | 0o666, libc::makedev(1, minor)) };
    if rc == 0 {
        Ok(())
    } else {
        Err(format!("mknod: {}", std::io::Error::last_os_error()))
    }
}

/// Run to the end or fail after [`CASE_LIMIT`]: (exit status, stdout, stderr).
fn run_bounded(mut child: Child, what: &str) -> (i32, String, String) {
    let start = Instant::now();
    loop {
        if let Some(st) = child.try_wait().unwrap() {
            let mut out = String::new();
            let mut err = String::new();
            if let Some(mut o) = child.stdout.take() {
                let _ = o.read_to_string(&mut out);
            }
            if let Some(mut e) = child.stderr.take() {
                let _ = e.read_to_string(&mut err);
            }
            return (st.code().unwrap_or(-1), out, err);
        }
        if start.elapsed() > CASE_LIMIT {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what}: still running after {CASE_LIMIT:?} (a hang)");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Lay out the case's input; Err(reason) to skip.
fn make_input(s: &Scratch, input: In) -> Result<(PathBuf, Option<Child>), String> {
    let src = s.src();
    let at = |name: &[u8]| s.case.join(OsString::from_vec(name.to_vec()));
    Ok(match input {
        In::Regular => {
            let p = at(b"in.img");
            std::fs::copy(&src, &p).unwrap();
            (p, None)
        }
        In::NonUtf8 => {
            let p = at(b"in\xff\xfe.img");
            std::fs::copy(&src, &p).unwrap();
            (p, None)
        }
        In::Newline => {
            let p = at(b"in\nforged: yes.img");
            std::fs::copy(&src, &p).unwrap();
            (p, None)
        }
        In::Dir => {
            let p = at(b"in.d");
            std::fs::create_dir(&p).unwrap();
            (p, None)
        }
        In::Fifo => {
            let p = at(b"in.fifo");
            mkfifo(&p);
            // A writer that comes, writes the content and goes: a stream
            // mode reads it all; a regular-only mode refuses without ever
            // waiting for it (the writer is killed at the end).
            let w = Command::new("sh")
                .arg("-c")
                .arg("exec cat -- \"$1\" > \"$2\"")
                .arg("sh")
                .arg(&src)
                .arg(&p)
                .spawn()
                .unwrap();
            (p, Some(w))
        }
        In::CharDev => {
            let p = at(b"in.dev");
            mknod_char(&p, 5)?;
            (p, None)
        }
        In::SymlinkLoop => {
            let a = at(b"loop-a");
            std::os::unix::fs::symlink("loop-b", &a).unwrap();
            std::os::unix::fs::symlink("loop-a", at(b"loop-b")).unwrap();
            (a, None)
        }
        In::Vanished => {
            let p = at(b"gone.img");
            std::fs::write(&p, b"x").unwrap();
            std::fs::remove_file(&p).unwrap();
            (p, None)
        }
        In::Dash => (PathBuf::from("-"), None),
        In::BlockDev => {
            let backing = at(b"volume.bin");
            std::fs::copy(&src, &backing).unwrap();
            let out = Command::new("losetup")
                .args(["-f", "--show"])
                .arg(&backing)
                .output()
                .map_err(|e| format!("losetup: {e}"))?;
            if !out.status.success() {
                return Err(format!(
                    "losetup: {}",
                    String::from_utf8_lossy(&out.stderr).trim()
                ));
            }
            let dev = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
            (dev, None)
        }
    })
}

fn error_kinds(stdout: &str) -> Vec<String> {
    stdout
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l)
                .unwrap_or_else(|e| panic!("stdout is not records ({e}): {l}"))
        })
        .filter_map(|r| r["error"]["kind"].as_str().map(str::to_owned))
        .collect()
}

#[test]
fn inputs_matrix() {
    let fx = Fixtures::new();
    let mut failures = Vec::new();
    let mut ran = 0;
    for mode in modes() {
        for input in INPUTS {
            let what = format!("{} × {input:?}", mode.name);
            if input == In::BlockDev && matches!(mode.content, Content::Tarball) {
                // A loop device rounds the tarball down to 512 bytes.
                continue;
            }
            let s = Scratch::new(&fx, mode.content);
            let (path, writer) = match make_input(&s, input) {
                Ok(x) => x,
                Err(why) => {
                    eprintln!("SKIPPED {what} ({why})");
                    continue;
                }
            };
            std::fs::create_dir(s.case.join("out")).unwrap();
            let before = snapshot(&s.neighbours);
            let mut cmd = Command::new(tool(mode.tool).unwrap());
            cmd.args((mode.args)(&path, &s.case))
                .current_dir(&s.case)
                .stdout(Stdio::piped())
                .stderr(Stdio::piped());
            if input == In::Dash {
                // A pipe, not a regular file: feed it through cat.
                let mut cat = Command::new("cat")
                    .arg(s.src())
                    .stdout(Stdio::piped())
                    .spawn()
                    .unwrap();
                cmd.stdin(Stdio::from(cat.stdout.take().unwrap()));
                let child = cmd.spawn().unwrap();
                let out = run_bounded(child, &what);
                let _ = cat.kill();
                let _ = cat.wait();
                check_case(&mode, input, &what, out, &mut failures);
            } else {
                cmd.stdin(Stdio::null());
                let child = cmd.spawn().unwrap();
                let out = run_bounded(child, &what);
                check_case(&mode, input, &what, out, &mut failures);
            }
            if let Some(mut w) = writer {
                let _ = w.kill();
                let _ = w.wait();
            }
            if input == In::BlockDev {
                let _ = Command::new("losetup").arg("-d").arg(&path).status();
            }
            if snapshot(&s.neighbours) != before {
                failures.push(format!("{what}: a file outside the case directory changed"));
            }
            ran += 1;
        }
    }
    eprintln!("inputs matrix: {ran} cases run");
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

fn check_case(
    mode: &Mode,
    input: In,
    what: &str,
    (code, out, err): (i32, String, String),
    failures: &mut Vec<String>,
) {
    let kinds = error_kinds(&out);
    match expect(mode, input) {
        Expect::Exit(codes) => {
            if !codes.contains(&code) || !kinds.is_empty() {
                failures.push(format!(
                    "{what}: exit {code}, error kinds {kinds:?}; expected exit {codes:?} and no error\n  stderr: {}",
                    err.trim()
                ));
            }
            if matches!(input, In::NonUtf8)
                && !out.contains("\"path_bytes\"")
                && mode.tool != "vhd-chain"
            {
                failures.push(format!(
                    "{what}: no path_bytes for a non-UTF-8 name: {}",
                    out.trim()
                ));
            }
        }
        Expect::Kind(allowed) => {
            let ok_code = code == 2 || (code == 1 && mode.name.ends_with("--check"));
            if !ok_code || !kinds.iter().any(|k| allowed.contains(&k.as_str())) {
                failures.push(format!(
                    "{what}: exit {code}, error kinds {kinds:?}; expected exit 2 and one of {allowed:?}\n  stderr: {}",
                    err.trim()
                ));
            }
        }
    }
    // A name with a newline never forges a line on stderr.
    if input == In::Newline && err.lines().any(|l| l.starts_with("forged")) {
        failures.push(format!("{what}: a newline in a name reached stderr raw"));
    }
}

/// What a case's output is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Out {
    Existing,
    Device,
    Fifo,
    Dir,
    Symlink,
    Input,
}

const OUTPUTS: [Out; 6] = [
    Out::Existing,
    Out::Device,
    Out::Fifo,
    Out::Dir,
    Out::Symlink,
    Out::Input,
];

/// A writer: the tool, its input content and how to name the output.
struct Writer {
    name: &'static str,
    tool: &'static str,
    content: Content,
    /// argv given (input, output); stdin is the input when `stdin_input`.
    args: fn(&Path, &Path) -> Vec<OsString>,
    stdin_input: bool,
}

fn writers() -> Vec<Writer> {
    vec![
        Writer {
            name: "checksum-tee -o",
            tool: "checksum-tee",
            content: Content::Raw,
            args: |_, o| with(os(&["-a", "sha256", "--force", "-o"]), o),
            stdin_input: true,
        },
        Writer {
            name: "vhd-chain flatten -o",
            tool: "vhd-chain",
            content: Content::Tarball,
            args: |i, o| {
                let mut v = with(os(&["flatten", "--force", "-o"]), o);
                v.push("--".into());
                v.push(i.as_os_str().to_owned());
                v
            },
            stdin_input: false,
        },
    ]
}

#[test]
fn outputs_matrix() {
    let fx = Fixtures::new();
    let mut failures = Vec::new();
    for w in writers() {
        for out in OUTPUTS {
            let what = format!("{} × {out:?}", w.name);
            let s = Scratch::new(&fx, w.content);
            let input = s.case.join("in.img");
            std::fs::copy(s.src(), &input).unwrap();
            let target = match out {
                Out::Existing => {
                    let p = s.case.join("out");
                    std::fs::write(&p, b"old\n").unwrap();
                    p
                }
                Out::Device => {
                    let p = s.case.join("out.dev");
                    if let Err(why) = mknod_char(&p, 3) {
                        eprintln!("SKIPPED {what} ({why})");
                        continue;
                    }
                    p
                }
                Out::Fifo => {
                    let p = s.case.join("out.fifo");
                    mkfifo(&p);
                    p
                }
                Out::Dir => {
                    let p = s.case.join("out.d");
                    std::fs::create_dir(&p).unwrap();
                    p
                }
                Out::Symlink => {
                    let p = s.case.join("out.link");
                    std::os::unix::fs::symlink(s.neighbours.join("secret.txt"), &p).unwrap();
                    p
                }
                Out::Input => input.clone(),
            };
            let before_n = snapshot(&s.neighbours);
            let before_t = std::fs::symlink_metadata(&target).unwrap();
            let before_in = std::fs::read(&input).unwrap();
            let mut cmd = Command::new(tool(w.tool).unwrap());
            cmd.args((w.args)(&input, &target))
                .current_dir(&s.case)
                .stdout(Stdio::piped())
                .stderr(Stdio::piped());
            if w.stdin_input {
                cmd.stdin(std::fs::File::open(&input).unwrap());
            } else {
                cmd.stdin(Stdio::null());
            }
            let (code, stdout, stderr) = run_bounded(cmd.spawn().unwrap(), &what);
            let kinds = error_kinds(&stdout);
            let after_t = std::fs::symlink_metadata(&target).unwrap();
            match out {
                Out::Existing => {
                    if code != 0
                        || !after_t.is_file()
                        || std::fs::read(&target).unwrap() == b"old\n"
                    {
                        failures.push(format!("{what}: --force did not replace a regular file (exit {code}, {kinds:?}): {}", stderr.trim()));
                    }
                }
                _ => {
                    let want = if out == Out::Input {
                        "same_file"
                    } else {
                        "not_regular"
                    };
                    if code != 2 || !kinds.iter().any(|k| k == want) {
                        failures.push(format!(
                            "{what}: exit {code}, kinds {kinds:?}; expected 2 and {want}: {}",
                            stderr.trim()
                        ));
                    }
                    if after_t.file_type() != before_t.file_type()
                        || after_t.ino() != before_t.ino()
                    {
                        failures.push(format!("{what}: the target was replaced"));
                    }
                    if std::fs::read(&input).unwrap() != before_in {
                        failures.push(format!("{what}: the input changed"));
                    }
                }
            }
            if snapshot(&s.neighbours) != before_n {
                failures.push(format!("{what}: a file outside the case directory changed"));
            }
            let strays: Vec<_> = std::fs::read_dir(&s.case)
                .unwrap()
                .map(|e| e.unwrap().file_name())
                .filter(|n| n.as_bytes().windows(5).any(|w| w == b".tmp-"))
                .collect();
            if !strays.is_empty() {
                failures.push(format!("{what}: temporaries left: {strays:?}"));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// `-o -` is stdout, never a file named `-`.
#[test]
fn dash_output_is_never_a_file() {
    let d = tempfile::tempdir().unwrap();
    let child = Command::new(tool("checksum-tee").unwrap())
        .args(["-a", "md5", "-o", "-"])
        .current_dir(d.path())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (code, _, err) = run_bounded(child, "checksum-tee -o -");
    assert!(!d.path().join("-").exists(), "a file named - was created");
    assert!(code == 0 || code == 2, "exit {code}: {err}");
}

/// A tool blocked on a FIFO without a writer, or on a stdin that never
/// ends, stops within a second of SIGTERM with 143 and leaves nothing.
#[test]
fn sigterm_ends_blocked_tools() {
    let d = tempfile::tempdir().unwrap();
    let fifo = d.path().join("f");
    mkfifo(&fifo);
    std::fs::create_dir(d.path().join("x")).unwrap();
    // Connections are accepted (into the backlog) and never answered.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", silent.local_addr().unwrap());
    let f = fifo.as_os_str().to_owned();
    let cases: Vec<(&str, &str, Vec<OsString>)> = vec![
        ("imginfo-parse FIFO", "imginfo-parse", vec![f.clone()]),
        (
            "checksum-tee --verify FIFO",
            "checksum-tee",
            vec!["--verify".into(), f.clone()],
        ),
        ("imginfo-parse stdin", "imginfo-parse", vec![]),
        (
            "checksum-tee stdin",
            "checksum-tee",
            vec!["-o".into(), d.path().join("o").into_os_string()],
        ),
        ("cachewalk remove stdin", "cachewalk", os(&["remove"])),
        (
            "vhd-chain extract -",
            "vhd-chain",
            vec![
                "extract".into(),
                "-".into(),
                d.path().join("x").into_os_string(),
            ],
        ),
        (
            "glance-load, a server that never answers",
            "glance-load",
            os(&["--url", &url, "--token", "t"]),
        ),
        (
            "glance-dump, a server that never answers",
            "glance-dump",
            os(&["--url", &url, "--token", "t"]),
        ),
        ("vhd-chain info stdin", "vhd-chain", os(&["info"])),
    ];
    let mut failures = Vec::new();
    for (what, t, args) in cases {
        // stdin: a pipe whose writer stays (this process holds it open).
        let mut child = Command::new(tool(t).unwrap())
            .args(&args)
            .current_dir(d.path())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(400));
        if let Some(st) = child.try_wait().unwrap() {
            failures.push(format!("{what}: ended by itself before the signal ({st})"));
            continue;
        }
        #[allow(unsafe_code)]
        // SAFETY: signalling our own child.
        unsafe {
            libc::kill(child.id() as i32, libc::SIGTERM);
        }
        let sent = Instant::now();
        let mut status = None;
        while sent.elapsed() < Duration::from_millis(1500) {
            if let Some(st) = child.try_wait().unwrap() {
                status = Some(st);
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        match status {
            Some(st) if st.code() == Some(143) => {
                let took = sent.elapsed();
                if took > Duration::from_millis(1100) {
                    failures.push(format!("{what}: took {took:?} to stop"));
                }
            }
            Some(st) => failures.push(format!("{what}: ended with {st}, not 143")),
            None => {
                let _ = child.kill();
                let _ = child.wait();
                failures.push(format!("{what}: still running 1.5 s after SIGTERM"));
            }
        }
        drop(child.stdin.take());
    }
    let left: Vec<_> = std::fs::read_dir(d.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .filter(|n| n != "f")
        .collect();
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert!(
        left.is_empty() || left.iter().all(|n| n == "x"),
        "left behind: {left:?}"
    );
}
