//! Filesystem faults (`make faults`, part of `make test`): a full disk (a
//! small tmpfs), EIO (strace's syscall fault injection), a read-only
//! target (the tmpfs remounted read-only), permission denied (the tool run
//! as `nobody`) and files vanishing mid-run. Each gives an error record
//! with its kind and exit status 2, and nothing is lost: no half file
//! under a final name, no temporary left behind, inputs untouched. Where
//! the sandbox forbids a mount, ptrace or a change of user, the test says
//! so on stderr and skips that part; it never passes silently.
#![cfg(test)]

use test_support::glance_server;

use pipeline_tests::{records_of, tool};
use serde_json::Value;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// A tmpfs mounted on a temporary directory, unmounted when dropped.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    /// Mount one of `size` (mount(8) syntax), or say why not.
    fn mount(size: &str) -> Result<Tmpfs, String> {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let out = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0755"),
                "tmpfs",
            ])
            .arg(dir.path())
            .output()
            .map_err(|e| format!("mount: {e}"))?;
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).trim().to_owned());
        }
        Ok(Tmpfs { dir })
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn remount_ro(&self) {
        let st = Command::new("mount")
            .args(["-o", "remount,ro"])
            .arg(self.path())
            .status()
            .unwrap();
        assert!(st.success(), "remount read-only");
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(self.path()).status();
    }
}

/// A tmpfs, or `None` after saying on stderr why this part is skipped.
fn tmpfs_or_skip(what: &str, size: &str) -> Option<Tmpfs> {
    match Tmpfs::mount(size) {
        Ok(t) => Some(t),
        Err(e) => {
            eprintln!("SKIPPED {what}: cannot mount a tmpfs here ({e})");
            None
        }
    }
}

/// Run a built tool (stdin from `input`); its exit status and records.
fn run(cmd: &mut Command, input: Option<&Path>) -> (i32, Vec<Value>) {
    let stdin = match input {
        Some(p) => Stdio::from(std::fs::File::open(p).unwrap()),
        None => Stdio::null(),
    };
    records_of(cmd.stdin(stdin))
}

/// The one record's `error.kind`, asserting exit 2 and one record.
fn failed(what: &str, (code, recs): (i32, Vec<Value>)) -> (String, Value) {
    assert_eq!(code, 2, "{what}: exit status, records {recs:?}");
    assert_eq!(recs.len(), 1, "{what}: {recs:?}");
    let kind = recs[0]["error"]["kind"].as_str();
    assert!(kind.is_some(), "{what}: no error record: {recs:?}");
    (kind.unwrap().to_owned(), recs[0].clone())
}

/// Every name in `dir`, hidden ones too (temporaries are hidden).
fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

fn sh(dir: &Path, script: &str) {
    let st = Command::new("bash")
        .args(["-c", script])
        .current_dir(dir)
        .status()
        .unwrap();
    assert!(st.success(), "{script}");
}

/// A work directory with `input` (8 MB of noise), `image.tar` (a XenServer
/// tarball of it as one dynamic VHD) and a Nova `_base` candidate record.
struct Fixture {
    dir: tempfile::TempDir,
    data: Vec<u8>,
}

impl Fixture {
    fn new() -> Option<Fixture> {
        if Command::new("qemu-img").arg("--version").output().is_err() {
            eprintln!("SKIPPED: no qemu-img");
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let data = glance_server::bytes_of(7, 8 << 20);
        std::fs::write(dir.path().join("input"), &data).unwrap();
        sh(
            dir.path(),
            "mkdir chain && qemu-img convert -f raw -O vpc -o subformat=dynamic input chain/0.vhd \
             && tar -cf image.tar -C chain 0.vhd",
        );
        Some(Fixture { dir, data })
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn tar_bytes(&self) -> Vec<u8> {
        std::fs::read(self.path("image.tar")).unwrap()
    }

    /// checksum-tee's sink: `input` into `out`.
    fn sink_into(&self, out: &Path) -> (i32, Vec<Value>) {
        run(
            Command::new(tool("checksum-tee").unwrap())
                .arg("-o")
                .arg(out),
            Some(&self.path("input")),
        )
    }

    /// vhd-chain flatten of `image.tar` into `out`.
    fn flatten_into(&self, out: &Path) -> (i32, Vec<Value>) {
        run(
            Command::new(tool("vhd-chain").unwrap())
                .arg("flatten")
                .arg(self.path("image.tar"))
                .arg("-o")
                .arg(out),
            None,
        )
    }
}

/// A Nova instances tree under `root` with one old, unused base file; the
/// candidate record cachewalk gives for it.
fn nova_candidate(root: &Path) -> String {
    std::fs::create_dir_all(root.join("_base")).unwrap();
    std::fs::write(
        root.join("_base/0123456789abcdef0123456789abcdef01234567"),
        vec![5u8; 1 << 16],
    )
    .unwrap();
    sh(
        root,
        "touch -d @1000000000 _base/0123456789abcdef0123456789abcdef01234567 && : > inv.jsonl",
    );
    let out = Command::new(tool("cachewalk").unwrap())
        .arg("nova")
        .arg(root)
        .args(["--instances", "inv.jsonl", "--host", "h"])
        .current_dir(root)
        .output()
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    let cand = text
        .lines()
        .find(|l| l.contains("\"candidate\""))
        .unwrap_or_else(|| panic!("no candidate in {text}"));
    format!("{cand}\n")
}

#[test]
fn full_disk() {
    let Some(f) = Fixture::new() else { return };
    let Some(t) = tmpfs_or_skip("full_disk", "2m") else {
        return;
    };
    let tar = f.tar_bytes();

    // checksum-tee's sink: 8 MB into 2 MB.
    let (kind, rec) = failed("checksum-tee -o", f.sink_into(&t.path().join("out.img")));
    assert_eq!(kind, "no_space", "{rec}");
    assert_eq!(rec["checksums"]["state"], "aborted");
    assert!(names(t.path()).is_empty(), "{:?}", names(t.path()));

    // vhd-chain flatten: the scratch extraction fills the disk.
    let (kind, rec) = failed(
        "vhd-chain flatten",
        f.flatten_into(&t.path().join("disk.vhd")),
    );
    assert_eq!(kind, "no_space", "{rec}");
    assert!(names(t.path()).is_empty(), "{:?}", names(t.path()));
    assert!(f.tar_bytes() == tar, "the tarball changed");

    // Once there is room it goes through: nothing was lost on the way.
    let (code, _) = f.sink_into(&f.path("out.img"));
    assert_eq!(code, 0);
    assert!(std::fs::read(f.path("out.img")).unwrap() == f.data);
}

#[test]
fn read_only_target() {
    let Some(f) = Fixture::new() else { return };
    let Some(t) = tmpfs_or_skip("read_only_target", "16m") else {
        return;
    };
    let nova = t.path().join("nova");
    let cand = nova_candidate(&nova);
    std::fs::write(f.path("cand.jsonl"), &cand).unwrap();
    t.remount_ro();

    let (kind, rec) = failed("checksum-tee -o", f.sink_into(&t.path().join("out.img")));
    assert_eq!(kind, "read_only", "{rec}");

    let (kind, rec) = failed(
        "vhd-chain flatten",
        f.flatten_into(&t.path().join("disk.vhd")),
    );
    assert_eq!(kind, "read_only", "{rec}");

    // cachewalk remove cannot take Nova's lock (nor unlink): the record
    // says delete_failed, with the error, and the base file is still there.
    let (kind, rec) = failed(
        "cachewalk remove",
        run(
            Command::new(tool("cachewalk").unwrap()).arg("remove"),
            Some(&f.path("cand.jsonl")),
        ),
    );
    assert_eq!(kind, "read_only", "{rec}");
    assert_eq!(rec["cache"]["action"], "delete_failed", "{rec}");
    assert_eq!(
        std::fs::read(nova.join("_base/0123456789abcdef0123456789abcdef01234567")).unwrap(),
        vec![5u8; 1 << 16]
    );
    assert_eq!(names(t.path()), ["nova"]);
}

/// A copy of a built tool that `nobody` can run (the checkout may sit in a
/// home directory only its owner can enter).
fn runnable_copy(name: &str, dir: &Path) -> PathBuf {
    let to = dir.join(name);
    std::fs::copy(tool(name).unwrap(), &to).unwrap();
    std::fs::set_permissions(&to, std::fs::Permissions::from_mode(0o755)).unwrap();
    to
}

/// `exe` run as `nobody` when we are root (root ignores permissions), as
/// ourselves otherwise; `None` when that cannot be arranged.
fn as_nobody(exe: &Path) -> Option<Command> {
    // SAFETY: geteuid has no preconditions.
    #[allow(unsafe_code)]
    let root = unsafe { libc::geteuid() } == 0;
    if !root {
        return Some(Command::new(exe));
    }
    let probe = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "true"])
        .status();
    if !probe.is_ok_and(|s| s.success()) {
        eprintln!("SKIPPED permission_denied: running as root and setpriv cannot drop to nobody");
        return None;
    }
    let mut c = Command::new("setpriv");
    c.args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(exe);
    Some(c)
}

#[test]
fn permission_denied() {
    let Some(f) = Fixture::new() else { return };
    let bins = tempfile::tempdir().unwrap();
    std::fs::set_permissions(bins.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let ct = runnable_copy("checksum-tee", bins.path());
    let ip = runnable_copy("imginfo-parse", bins.path());
    let cw = runnable_copy("cachewalk", bins.path());
    let Some(_) = as_nobody(&ct) else { return };
    // A directory only its owner may write, a file only its owner may read.
    let locked = tempfile::tempdir().unwrap();
    std::fs::set_permissions(locked.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let secret = locked.path().join("secret.img");
    std::fs::write(&secret, &f.data[..1 << 20]).unwrap();
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
    let nova = locked.path().join("nova");
    let cand = nova_candidate(&nova);
    std::fs::write(f.path("cand.jsonl"), &cand).unwrap();
    std::fs::set_permissions(f.dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(f.path("input"), std::fs::Permissions::from_mode(0o644)).unwrap();

    let out = locked.path().join("out.img");
    let (kind, rec) = failed(
        "checksum-tee -o",
        run(
            as_nobody(&ct).unwrap().arg("-o").arg(&out),
            Some(&f.path("input")),
        ),
    );
    assert_eq!(kind, "permission_denied", "{rec}");

    let (kind, rec) = failed(
        "imginfo-parse",
        run(as_nobody(&ip).unwrap().arg(&secret), None),
    );
    assert_eq!(kind, "permission_denied", "{rec}");
    assert_eq!(rec["path"], secret.to_str().unwrap());

    let (kind, rec) = failed(
        "cachewalk remove",
        run(
            as_nobody(&cw).unwrap().arg("remove"),
            Some(&f.path("cand.jsonl")),
        ),
    );
    assert_eq!(kind, "permission_denied", "{rec}");
    assert_eq!(rec["cache"]["action"], "delete_failed", "{rec}");
    assert!(
        nova.join("_base/0123456789abcdef0123456789abcdef01234567")
            .is_file()
    );

    let mut left = names(locked.path());
    left.retain(|n| n != "nova");
    assert_eq!(left, ["secret.img"]);
}

/// `args` run under strace with `inject` (an strace -e inject=... spec)
/// on the syscalls touching `path` (all when `None`); `None` when strace
/// cannot run here.
fn injected(inject: &str, path: Option<&Path>, args: &[&std::ffi::OsStr]) -> Option<Command> {
    let ok = Command::new("strace")
        .args(["-qq", "-o", "/dev/null", "true"])
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        eprintln!("SKIPPED eio: strace is missing or ptrace is not allowed here");
        return None;
    }
    let mut c = Command::new("strace");
    c.args(["-f", "-qq", "-o", "/dev/null"]);
    if let Some(p) = path {
        c.arg("-P").arg(p);
    }
    c.args(["-e", inject]).args(args);
    Some(c)
}

#[test]
fn eio() {
    let Some(f) = Fixture::new() else { return };
    let ct = tool("checksum-tee").unwrap();
    let input = f.path("input");

    // A read fails: no verdict, an io error.
    let Some(mut c) = injected(
        "inject=read:error=EIO:when=2+",
        Some(&input),
        &[ct.as_os_str(), "--verify".as_ref(), input.as_os_str()],
    ) else {
        return;
    };
    let (kind, rec) = failed("checksum-tee --verify", run(&mut c, None));
    assert_eq!(kind, "io", "{rec}");
    assert!(rec["checksums"]["verified"] != true, "{rec}");

    // fsync fails (a writeback error): never renamed into place.
    let out = f.path("out.img");
    let mut c = injected(
        "inject=fsync,fdatasync:error=EIO",
        None,
        &[ct.as_os_str(), "-o".as_ref(), out.as_os_str()],
    )
    .unwrap();
    let (kind, rec) = failed("checksum-tee -o", run(&mut c, Some(&input)));
    assert_eq!(kind, "io", "{rec}");
    assert!(!out.exists());

    // vhd-chain flatten cannot read its tarball.
    let tar = f.path("image.tar");
    let disk = f.path("disk.vhd");
    let vc = tool("vhd-chain").unwrap();
    let mut c = injected(
        "inject=read:error=EIO:when=3+",
        Some(&tar),
        &[
            vc.as_os_str(),
            "flatten".as_ref(),
            tar.as_os_str(),
            "-o".as_ref(),
            disk.as_os_str(),
        ],
    )
    .unwrap();
    let (kind, rec) = failed("vhd-chain flatten", run(&mut c, None));
    assert_eq!(kind, "io", "{rec}");

    // imginfo-parse's own probe cannot read the image's header.
    let vhd = f.path("chain/0.vhd");
    let ip = tool("imginfo-parse").unwrap();
    let mut c = injected(
        "inject=read,pread64:error=EIO",
        Some(&vhd),
        &[ip.as_os_str(), vhd.as_os_str()],
    )
    .unwrap();
    let (kind, rec) = failed("imginfo-parse", run(&mut c, None));
    assert_eq!(kind, "io", "{rec}");

    let mut left = names(f.dir.path());
    left.retain(|n| !["input", "image.tar", "chain"].contains(&n.as_str()));
    assert!(left.is_empty(), "left behind: {left:?}");
}

/// Records fed one at a time: after the first answer, `between` runs
/// (removing a file the second record names), then the second is sent.
fn one_then_other(
    cmd: &mut Command,
    first: &str,
    between: impl FnOnce(),
    second: &str,
) -> (i32, Vec<Value>) {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    writeln!(stdin, "{first}").unwrap();
    stdin.flush().unwrap();
    let one = lines.next().unwrap().unwrap();
    between();
    writeln!(stdin, "{second}").unwrap();
    drop(stdin);
    let mut recs = vec![serde_json::from_str(&one).unwrap()];
    recs.extend(lines.map(|l| serde_json::from_str(&l.unwrap()).unwrap()));
    let code = child.wait().unwrap().code().unwrap_or(-1);
    (code, recs)
}

#[test]
fn files_vanishing_mid_run() {
    let Some(f) = Fixture::new() else { return };
    for name in ["a.img", "b.img"] {
        std::fs::copy(f.path("input"), f.path(name)).unwrap();
    }
    let rec_of = |n: &str| format!("{{\"path\":\"{}\"}}", f.path(n).display());

    // imginfo-parse and checksum-tee --verify read records from a pipe;
    // b.img disappears after a.img's answer.
    for (tool_name, args) in [
        ("imginfo-parse", &[][..]),
        ("checksum-tee", &["--verify"][..]),
    ] {
        std::fs::copy(f.path("input"), f.path("b.img")).unwrap();
        let (code, recs) = one_then_other(
            Command::new(tool(tool_name).unwrap()).args(args),
            &rec_of("a.img"),
            || std::fs::remove_file(f.path("b.img")).unwrap(),
            &rec_of("b.img"),
        );
        assert_eq!(code, 2, "{tool_name}: {recs:?}");
        assert_eq!(recs.len(), 2, "{tool_name}: {recs:?}");
        assert!(recs[0].get("error").is_none(), "{tool_name}: {recs:?}");
        assert_eq!(
            recs[1]["error"]["kind"], "not_found",
            "{tool_name}: {recs:?}"
        );
        assert_eq!(recs[1]["path"], f.path("b.img").to_str().unwrap());
    }
    assert!(std::fs::read(f.path("a.img")).unwrap() == f.data);

    // cachewalk remove: the candidate went away between the walk and the
    // removal (someone else removed it): reported, nothing else touched.
    let nova = f.path("nova");
    let cand = nova_candidate(&nova);
    std::fs::write(nova.join("_base/keep"), b"keep").unwrap();
    std::fs::remove_file(nova.join("_base/0123456789abcdef0123456789abcdef01234567")).unwrap();
    std::fs::write(f.path("cand.jsonl"), &cand).unwrap();
    let (code, recs) = run(
        Command::new(tool("cachewalk").unwrap()).arg("remove"),
        Some(&f.path("cand.jsonl")),
    );
    assert_eq!(recs.len(), 1, "{recs:?}");
    assert_eq!(recs[0]["cache"]["action"], "changed_since_walk", "{recs:?}");
    // What was to be removed is gone: refusing to act on a stale record is
    // not a failure.
    assert_eq!(code, 0);
    assert_eq!(std::fs::read(nova.join("_base/keep")).unwrap(), b"keep");
}

#[test]
fn glance_dump_into_a_full_or_read_only_dir() {
    let Some(t) = tmpfs_or_skip("glance_dump full disk", "3m") else {
        return;
    };
    let Some(g) = glance_server::start() else {
        return;
    };
    let w = tempfile::tempdir().unwrap();
    let small = glance_server::bytes_of(11, 100_000);
    let big = glance_server::bytes_of(12, 8 << 20);
    let mut ids = Vec::new();
    for (name, data) in [("small", &small), ("big", &big)] {
        let id = glance_server::create(
            &g.url,
            &format!(r#"{{"name":"{name}","disk_format":"raw","container_format":"bare"}}"#),
        );
        std::fs::write(w.path().join(name), data).unwrap();
        glance_server::upload(&g.url, &id, &w.path().join(name));
        ids.push(id);
    }
    let dump = |dir: &Path| {
        let mut c = Command::new(tool("glance-dump").unwrap());
        c.args(["--url", &g.url, "--dir"]).arg(dir);
        for h in glance_server::AUTH {
            c.args(["--header", h]);
        }
        run(&mut c, None)
    };
    let d = t.path().join("D");
    let (code, recs) = dump(&d);
    assert_eq!(code, 2, "{recs:?}");
    assert!(
        glance_server::of_image(&recs, &ids[0])
            .get("error")
            .is_none(),
        "{recs:?}"
    );
    assert_eq!(
        glance_server::of_image(&recs, &ids[1])["error"]["kind"],
        "no_space",
        "{recs:?}"
    );
    // The small image whole, the big one absent; no temporary.
    assert!(std::fs::read(d.join(format!("{}.img", ids[0]))).unwrap() == small);
    let left: Vec<String> = names(&d)
        .into_iter()
        .filter(|n| n.ends_with(".img") || n.starts_with('.'))
        .collect();
    assert_eq!(left, [format!("{}.img", ids[0])], "{left:?}");

    // Read-only: an error record for each image, nothing written.
    std::fs::remove_dir_all(&d).unwrap();
    std::fs::create_dir(&d).unwrap();
    t.remount_ro();
    let (code, recs) = dump(&d);
    assert_eq!(code, 2, "{recs:?}");
    for id in &ids {
        assert_eq!(
            glance_server::of_image(&recs, id)["error"]["kind"],
            "read_only",
            "{recs:?}"
        );
    }
    assert!(names(&d).is_empty(), "{:?}", names(&d));
}
