//! `system::lock` against the real thing: Python's `fcntl.lockf`, which is
//! what fasteners (and so Nova) uses. POSIX record locks only exclude across
//! processes, so every test here runs a second process. Needs `python3`.
#![cfg(test)]

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};
use system::lock::{LockError, NovaLock};

/// Lock like fasteners (append mode, blocking `lockf`), say so, hold until
/// stdin closes.
const HOLD: &str = r#"
import fcntl, sys
f = open(sys.argv[1], 'a')
fcntl.lockf(f, fcntl.LOCK_EX)
print('locked', flush=True)
sys.stdin.read()
"#;

/// One non-blocking try, like one round of fasteners' loop; report it.
const TRY: &str = r#"
import fcntl, sys
f = open(sys.argv[1], 'a')
try:
    fcntl.lockf(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    print('acquired')
except (BlockingIOError, PermissionError) as e:
    print('busy', type(e).__name__)
"#;

fn python(script: &str, path: &Path) -> Command {
    let mut c = Command::new("python3");
    c.arg("-c").arg(script).arg(path);
    c
}

/// A Python process holding the lock; dropping `stdin` releases it.
struct Holder {
    child: Child,
    _out: BufReader<ChildStdout>,
}

impl Holder {
    fn start(path: &Path) -> Holder {
        let mut child = python(HOLD, path)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3 is required for these tests");
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        out.read_line(&mut line).unwrap();
        assert_eq!(line.trim(), "locked");
        Holder { child, _out: out }
    }

    fn release(mut self) {
        drop(self.child.stdin.take());
        assert!(self.child.wait().unwrap().success());
    }
}

fn python_try(path: &Path) -> String {
    let out = python(TRY, path).output().expect("python3 is required");
    assert!(out.status.success(), "{out:?}");
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

#[test]
fn python_holder_excludes_us() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("nova-abc");
    let h = Holder::start(&p);
    match NovaLock::try_acquire(&p) {
        Err(LockError::Busy { path }) => assert_eq!(path, p),
        r => panic!("expected Busy, got {r:?}"),
    }
    let t = Instant::now();
    assert!(matches!(
        NovaLock::acquire(&p, Duration::from_millis(150)),
        Err(LockError::Busy { .. })
    ));
    assert!(t.elapsed() >= Duration::from_millis(150));
    h.release();
    drop(NovaLock::try_acquire(&p).unwrap());
}

#[test]
fn python_holder_killed_releases() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("nova-abc");
    let mut h = Holder::start(&p);
    assert!(NovaLock::try_acquire(&p).is_err());
    h.child.kill().unwrap();
    h.child.wait().unwrap();
    drop(NovaLock::try_acquire(&p).unwrap());
}

#[test]
fn we_exclude_python() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("nova-abc");
    let l = NovaLock::try_acquire(&p).unwrap();
    let r = python_try(&p);
    assert!(r.starts_with("busy"), "{r}");
    // A second in-process try is refused without opening (and so without
    // closing, which would silently release the first): Python still waits.
    assert!(matches!(
        NovaLock::try_acquire(&p),
        Err(LockError::Busy { .. })
    ));
    assert!(python_try(&p).starts_with("busy"));
    drop(l);
    assert_eq!(python_try(&p), "acquired");
}

#[test]
fn acquire_waits_for_release_mid_wait() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("nova-abc");
    let h = Holder::start(&p);
    let t = Instant::now();
    let releaser = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(300));
        h.release();
    });
    let l = NovaLock::acquire(&p, Duration::from_secs(20)).unwrap();
    let waited = t.elapsed();
    releaser.join().unwrap();
    assert!(waited >= Duration::from_millis(300), "{waited:?}");
    // And now we hold it against Python.
    assert!(python_try(&p).starts_with("busy"));
    drop(l);
}
