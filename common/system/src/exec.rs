//! Running child programs (`qemu-img` and the like) safely.
//!
//! No shell: an explicit argv. `LC_ALL=C` and `TZ=UTC`, so output does not
//! depend on the operator's locale or zone. Stdin is `/dev/null` (our stdin
//! is the record stream), stdout and stderr are captured concurrently (a
//! noisy child cannot deadlock on a full pipe) and bounded. A wall-clock
//! timeout kills the child; CPU-time and address-space limits are set in the
//! child before `exec`, as Nova and Cinder do with `prlimit` for
//! `qemu-img info` (a hostile image must not eat the host).

use std::ffi::{OsStr, OsString};
use std::io::{self, Read};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread;
use std::time::Duration;
use thiserror::Error;
use wait_timeout::ChildExt;

/// How much of stderr an error keeps (the tail: the last message matters).
pub const STDERR_TAIL: usize = 2048;

/// What to run and under which limits.
#[derive(Debug, Clone)]
pub struct Exec {
    program: OsString,
    args: Vec<OsString>,
    timeout: Duration,
    cpu_seconds: Option<u64>,
    address_space: Option<u64>,
    max_stdout: usize,
}

/// A finished child that exited 0.
#[derive(Debug, Clone)]
pub struct Output {
    /// Everything it wrote to stdout.
    pub stdout: Vec<u8>,
    /// Everything it wrote to stderr (bounded).
    pub stderr: Vec<u8>,
}

/// Why running a child failed.
#[derive(Debug, Error)]
pub enum ExecError {
    /// The program is not installed (or not executable).
    #[error("{program}: program not found")]
    NotFound {
        /// The program name as given.
        program: String,
    },
    /// The program could not be started.
    #[error("{program}: cannot run: {source}")]
    Spawn {
        /// The program name as given.
        program: String,
        /// Why.
        source: io::Error,
    },
    /// Killed after the wall-clock limit.
    #[error("{program}: no answer after {seconds} s, killed")]
    Timeout {
        /// The program name as given.
        program: String,
        /// The limit.
        seconds: u64,
        /// What it had written to stderr.
        stderr_tail: String,
    },
    /// Exited non-zero or died by a signal.
    #[error("{program}: {}{}", describe(.status), tail_suffix(.stderr_tail))]
    Failed {
        /// The program name as given.
        program: String,
        /// Exit status.
        status: ExitStatus,
        /// Its stdout, which may hold partial results.
        stdout: Vec<u8>,
        /// The last bytes of its stderr, lossily decoded.
        stderr_tail: String,
    },
    /// Wrote more than the allowed bytes to stdout.
    #[error("{program}: output larger than {limit} bytes, killed")]
    OutputTooLarge {
        /// The program name as given.
        program: String,
        /// The limit.
        limit: usize,
    },
    /// Reading its pipes or waiting failed.
    #[error("{program}: {source}")]
    Io {
        /// The program name as given.
        program: String,
        /// Why.
        source: io::Error,
    },
}

fn describe(status: &ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(c), _) => format!("exit status {c}"),
        (None, Some(s)) => format!("killed by signal {s}"),
        _ => "failed".into(),
    }
}

fn tail_suffix(tail: &str) -> String {
    let t = tail.trim();
    if t.is_empty() {
        String::new()
    } else {
        format!(": {t}")
    }
}

impl ExecError {
    /// The exit code, when the child exited normally.
    pub fn exit_code(&self) -> Option<i32> {
        match self {
            ExecError::Failed { status, .. } => status.code(),
            _ => None,
        }
    }

    /// The signal that killed the child, if any.
    pub fn signal(&self) -> Option<i32> {
        use std::os::unix::process::ExitStatusExt;
        match self {
            ExecError::Failed { status, .. } => status.signal(),
            _ => None,
        }
    }

    /// The captured stderr tail, if any.
    pub fn stderr_tail(&self) -> Option<&str> {
        match self {
            ExecError::Failed { stderr_tail, .. } | ExecError::Timeout { stderr_tail, .. } => {
                Some(stderr_tail)
            }
            _ => None,
        }
    }
}

impl Exec {
    /// Run `program` (looked up in `PATH` unless it contains a `/`).
    /// Defaults: 60 s wall clock, no rlimits, 64 MiB of stdout.
    pub fn new(program: impl AsRef<OsStr>) -> Self {
        Exec {
            program: program.as_ref().to_owned(),
            args: Vec::new(),
            timeout: Duration::from_secs(60),
            cpu_seconds: None,
            address_space: None,
            max_stdout: 64 << 20,
        }
    }

    /// Add one argument.
    pub fn arg(mut self, a: impl AsRef<OsStr>) -> Self {
        self.args.push(a.as_ref().to_owned());
        self
    }

    /// Add arguments.
    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.args
            .extend(args.into_iter().map(|a| a.as_ref().to_owned()));
        self
    }

    /// Wall-clock limit.
    pub fn timeout(mut self, t: Duration) -> Self {
        self.timeout = t;
        self
    }

    /// CPU-time limit (`RLIMIT_CPU`), seconds.
    pub fn cpu_limit(mut self, seconds: Option<u64>) -> Self {
        self.cpu_seconds = seconds;
        self
    }

    /// Address-space limit (`RLIMIT_AS`), bytes.
    pub fn address_space_limit(mut self, bytes: Option<u64>) -> Self {
        self.address_space = bytes;
        self
    }

    /// Most stdout bytes accepted before the child is killed.
    pub fn max_stdout(mut self, bytes: usize) -> Self {
        self.max_stdout = bytes;
        self
    }

    /// The argv, for messages.
    pub fn argv(&self) -> Vec<OsString> {
        std::iter::once(self.program.clone())
            .chain(self.args.iter().cloned())
            .collect()
    }

    fn program_name(&self) -> String {
        self.program.to_string_lossy().into_owned()
    }

    fn spawn(&self) -> Result<Child, ExecError> {
        let mut cmd = Command::new(&self.program);
        cmd.args(&self.args)
            .env("LC_ALL", "C")
            .env("TZ", "UTC")
            .env_remove("LANGUAGE")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        set_limits(&mut cmd, self.cpu_seconds, self.address_space);
        cmd.spawn().map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => ExecError::NotFound {
                program: self.program_name(),
            },
            io::ErrorKind::PermissionDenied if !self.program.as_encoded_bytes().contains(&b'/') => {
                ExecError::NotFound {
                    program: self.program_name(),
                }
            }
            _ => ExecError::Spawn {
                program: self.program_name(),
                source: e,
            },
        })
    }

    /// Run to completion. Exit 0 gives the output; anything else an error
    /// carrying the status, partial stdout and the tail of stderr.
    pub fn run(&self) -> Result<Output, ExecError> {
        let program = self.program_name();
        let io_err = |source| ExecError::Io {
            program: program.clone(),
            source,
        };
        let mut child = self.spawn()?;
        let (Some(out), Some(err)) = (child.stdout.take(), child.stderr.take()) else {
            let _ = child.kill();
            let _ = child.wait();
            return Err(io_err(io::Error::other("child pipes missing")));
        };
        let limit = self.max_stdout;
        let out_thread = thread::spawn(move || read_bounded(out, limit));
        // stderr is kept whole up to a bound but only its tail is reported.
        let err_thread = thread::spawn(move || read_bounded(err, 1 << 20));

        // Waited in slices so a SIGINT/SIGTERM kills the child at once
        // instead of leaving it to the end of its time limit.
        let deadline = std::time::Instant::now() + self.timeout;
        let status = loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            let slice = left.min(Duration::from_millis(50));
            match child.wait_timeout(slice) {
                Ok(Some(s)) => break Some(s),
                Ok(None) if left.is_zero() => break None,
                Ok(None) => {}
                Err(e) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(io_err(e));
                }
            }
            if let Some(sig) = crate::signal::pending() {
                let _ = child.kill();
                let _ = child.wait();
                let _ = join(err_thread);
                let _ = join(out_thread);
                return Err(io_err(crate::files::stopped(sig)));
            }
        };
        let status = match status {
            Some(s) => s,
            None => {
                let _ = child.kill();
                let _ = child.wait();
                let (stderr, _) = join(err_thread).map_err(io_err)?;
                let _ = join(out_thread);
                return Err(ExecError::Timeout {
                    program,
                    seconds: self.timeout.as_secs(),
                    stderr_tail: tail(&stderr),
                });
            }
        };
        let (stdout, overflow) = join(out_thread).map_err(io_err)?;
        let (stderr, _) = join(err_thread).map_err(io_err)?;
        if overflow {
            return Err(ExecError::OutputTooLarge { program, limit });
        }
        if !status.success() {
            return Err(ExecError::Failed {
                program,
                status,
                stdout,
                stderr_tail: tail(&stderr),
            });
        }
        Ok(Output { stdout, stderr })
    }
}

type Bounded = (Vec<u8>, bool);

/// Read everything, keeping at most `limit` bytes; drain the rest so the
/// child never blocks on a full pipe. Returns (data, overflowed).
fn read_bounded(mut r: impl Read, limit: usize) -> io::Result<Bounded> {
    let mut data = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    let mut overflow = false;
    loop {
        let n = match r.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        let room = limit.saturating_sub(data.len());
        if n > room {
            overflow = true;
        }
        data.extend_from_slice(&buf[..n.min(room)]);
    }
    Ok((data, overflow))
}

fn join(h: thread::JoinHandle<io::Result<Bounded>>) -> io::Result<Bounded> {
    h.join()
        .map_err(|_| io::Error::other("pipe reader thread failed"))?
}

fn tail(stderr: &[u8]) -> String {
    let start = stderr.len().saturating_sub(STDERR_TAIL);
    String::from_utf8_lossy(&stderr[start..]).trim().to_owned()
}

/// Find a program the way `Command` will: a path with a `/` as is, else the
/// first executable match in `PATH`.
pub fn which(program: &OsStr) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let is_exec = |p: &std::path::Path| {
        p.metadata()
            .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
            .unwrap_or(false)
    };
    if program.as_encoded_bytes().contains(&b'/') {
        let p = PathBuf::from(program);
        return is_exec(&p).then_some(p);
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(program))
        .find(|p| is_exec(p))
}

#[allow(unsafe_code)]
fn set_limits(cmd: &mut Command, cpu: Option<u64>, address_space: Option<u64>) {
    use std::os::unix::process::CommandExt;
    if cpu.is_none() && address_space.is_none() {
        return;
    }
    // SAFETY: the closure runs in the forked child before exec and calls
    // only setrlimit, which is async-signal-safe; it allocates nothing.
    unsafe {
        cmd.pre_exec(move || {
            if let Some(s) = cpu {
                // SIGXCPU at the soft limit names the cause; the hard limit
                // a second later kills a child that ignores it.
                let lim = libc::rlimit {
                    rlim_cur: s as libc::rlim_t,
                    rlim_max: s.saturating_add(1) as libc::rlim_t,
                };
                if libc::setrlimit(libc::RLIMIT_CPU, &lim) != 0 {
                    return Err(io::Error::last_os_error());
                }
            }
            if let Some(b) = address_space {
                let lim = libc::rlimit {
                    rlim_cur: b as libc::rlim_t,
                    rlim_max: b as libc::rlim_t,
                };
                if libc::setrlimit(libc::RLIMIT_AS, &lim) != 0 {
                    return Err(io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn captures_stdout_and_sets_locale_and_zone() {
        let out = Exec::new("sh")
            .args(["-c", "echo \"$LC_ALL $TZ\"; echo err >&2"])
            .run()
            .unwrap();
        assert_eq!(out.stdout, b"C UTC\n");
        assert_eq!(out.stderr, b"err\n");
    }

    #[test]
    fn stdin_is_closed() {
        let out = Exec::new("cat").run().unwrap();
        assert!(out.stdout.is_empty());
    }

    #[test]
    fn no_shell_interpretation_of_arguments() {
        let out = Exec::new("printf")
            .args(["%s|", "$(id)", "a b;c"])
            .run()
            .unwrap();
        assert_eq!(out.stdout, b"$(id)|a b;c|");
    }

    #[test]
    fn missing_program_is_not_found() {
        let e = Exec::new("no-such-program-xyz").run().unwrap_err();
        assert!(matches!(e, ExecError::NotFound { .. }), "{e}");
        assert!(which(OsStr::new("no-such-program-xyz")).is_none());
        assert!(which(OsStr::new("sh")).is_some());
    }

    #[test]
    fn failure_carries_status_stdout_and_stderr_tail() {
        let e = Exec::new("sh")
            .args([
                "-c",
                "echo partial; echo 'first line' >&2; echo 'it broke' >&2; exit 3",
            ])
            .run()
            .unwrap_err();
        assert_eq!(e.exit_code(), Some(3));
        assert_eq!(e.stderr_tail(), Some("first line\nit broke"));
        assert!(e.to_string().contains("exit status 3: first line"), "{e}");
        let ExecError::Failed { stdout, .. } = e else {
            unreachable!()
        };
        assert_eq!(stdout, b"partial\n");
    }

    #[test]
    fn large_stderr_and_stdout_do_not_deadlock() {
        // 1 MiB on each pipe: far beyond a pipe buffer, read concurrently.
        let out = Exec::new("sh")
            .args([
                "-c",
                "head -c 1048576 /dev/zero; head -c 1048576 /dev/zero >&2",
            ])
            .timeout(Duration::from_secs(20))
            .run()
            .unwrap();
        assert_eq!(out.stdout.len(), 1 << 20);
    }

    #[test]
    fn stdout_bound_kills_nothing_but_reports() {
        let e = Exec::new("head")
            .args(["-c", "100000", "/dev/zero"])
            .max_stdout(1000)
            .run()
            .unwrap_err();
        assert!(
            matches!(e, ExecError::OutputTooLarge { limit: 1000, .. }),
            "{e}"
        );
    }

    #[test]
    fn timeout_kills_the_child() {
        let t = std::time::Instant::now();
        let e = Exec::new("sleep")
            .arg("30")
            .timeout(Duration::from_millis(200))
            .run()
            .unwrap_err();
        assert!(matches!(e, ExecError::Timeout { .. }), "{e}");
        assert!(t.elapsed() < Duration::from_secs(10));
    }

    #[test]
    fn cpu_limit_stops_a_spinning_child() {
        let e = Exec::new("sh")
            .args(["-c", "while :; do :; done"])
            .cpu_limit(Some(1))
            .timeout(Duration::from_secs(30))
            .run()
            .unwrap_err();
        // RLIMIT_CPU sends SIGXCPU (24) at the soft limit.
        assert_eq!(e.signal(), Some(libc::SIGXCPU), "{e}");
    }

    #[test]
    fn address_space_limit_applies() {
        let out = Exec::new("sh")
            .args(["-c", "ulimit -v"])
            .address_space_limit(Some(512 << 20))
            .run()
            .unwrap();
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "524288");
    }
}
