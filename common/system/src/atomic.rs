//! Atomic creation of a file in a directory, the record contract's rule:
//! temporary file in the target directory, write, fsync, verify, rename,
//! fsync the directory. A crash or kill at any moment leaves either the old
//! state or the new one, never a half-written file under the final name; and
//! nothing is overwritten unless asked.
//!
//! **Temporary names.** [`AtomicFile::create`] names its temporary file
//! `.<basename>.tmp-<pid>-<n>` in the final file's directory: hidden, so
//! shell globs and most scanners skip it; `<pid>` is the writer's process id
//! (decimal), so a tool can tell a stale temp (dead pid) from a live one; `<n>`
//! is a per-process decimal counter. [`parse_temp_name`] recognises the
//! pattern. [`AtomicFile::create_at`] takes an explicit temporary path
//! instead, for the caches' own state machines (Glance's `incomplete/<id>`,
//! Nova's `<name>.part`).
//!
//! **Verification** is the caller's: the temp file is opened read-write, so
//! it can be re-read through [`AtomicFile::file`] before [`AtomicFile::commit`]
//! (or [`AtomicFile::divert`] on a mismatch).

use std::ffi::{OsStr, OsString};
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// Per-process counter for temporary names.
static COUNTER: AtomicU64 = AtomicU64::new(0);

/// How many taken temporary names (stale temps of a recycled pid) to skip.
const NAME_TRIES: u32 = 1000;

/// A file being written under a temporary name, renamed into place by
/// [`AtomicFile::commit`]. Dropped without commit, divert or keep, the
/// temporary file is removed.
#[derive(Debug)]
pub struct AtomicFile {
    file: File,
    temp: PathBuf,
    final_path: PathBuf,
    overwrite: bool,
    done: bool,
}

impl AtomicFile {
    /// Create a temp file `.<basename>.tmp-<pid>-<n>` next to `final_path`
    /// (`O_CREAT|O_EXCL|O_NOFOLLOW|O_CLOEXEC`, mode 0644 before umask).
    /// Fails with `AlreadyExists` if `final_path` exists (even as a dangling
    /// symlink) unless `overwrite`, and with `InvalidInput` if it has no file
    /// name (`/`, `..`, `dir/..`).
    pub fn create(final_path: &Path, overwrite: bool) -> io::Result<AtomicFile> {
        let base = final_path.file_name().ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{}: not a file name", final_path.display()),
            )
        })?;
        check_final(final_path, overwrite)?;
        let dir = parent(final_path);
        let pid = std::process::id();
        let mut last = None;
        for _ in 0..NAME_TRIES {
            let n = COUNTER.fetch_add(1, Ordering::Relaxed);
            let mut name = OsString::from(".");
            name.push(base);
            name.push(format!(".tmp-{pid}-{n}"));
            let temp = dir.join(name);
            match open_excl(&temp) {
                Ok(file) => return Ok(Self::new(file, temp, final_path, overwrite)),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => last = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(last.unwrap_or_else(|| io::Error::other("no temporary name available")))
    }

    /// Create at an explicit temporary path (`O_EXCL`, so an existing file
    /// or a planted symlink there is refused with `AlreadyExists`). It must
    /// be on the same filesystem as `final_path`.
    pub fn create_at(
        temp_path: &Path,
        final_path: &Path,
        overwrite: bool,
    ) -> io::Result<AtomicFile> {
        check_final(final_path, overwrite)?;
        let file = open_excl(temp_path)?;
        Ok(Self::new(file, temp_path.to_owned(), final_path, overwrite))
    }

    fn new(file: File, temp: PathBuf, final_path: &Path, overwrite: bool) -> AtomicFile {
        crate::signal::track_temp(&temp);
        AtomicFile {
            file,
            temp,
            final_path: final_path.to_owned(),
            overwrite,
            done: false,
        }
    }

    /// The open temporary file (read-write: write, then re-read to verify).
    pub fn file(&mut self) -> &mut File {
        &mut self.file
    }

    /// Where the data is until commit.
    pub fn temp_path(&self) -> &Path {
        &self.temp
    }

    /// Where commit puts it.
    pub fn final_path(&self) -> &Path {
        &self.final_path
    }

    /// Start writing what is in the file so far to disk, without waiting
    /// (Linux `sync_file_range(SYNC_FILE_RANGE_WRITE)`; elsewhere nothing),
    /// so the fsync of [`AtomicFile::commit`] finds less to do. A writer
    /// that calls this every few MiB overlaps its writes with the disk's;
    /// durability still comes from commit's fsync alone.
    pub fn start_writeback(&self) {
        start_writeback(&self.file);
    }

    /// fsync the file, rename it to the final path, fsync the directory;
    /// returns the final path. Without `overwrite` an existing final file is
    /// never replaced, atomically: `renameat2(RENAME_NOREPLACE)` on Linux;
    /// where that is unavailable (other systems, or a filesystem that
    /// rejects the flag), `link()` then `unlink()` of the temp, which also
    /// fails on an existing target (a crash between the two leaves the
    /// complete file under both names). On a failure before the rename the
    /// temp is removed; an error from the final directory fsync means the
    /// file is in place but its durability is unknown.
    pub fn commit(mut self) -> io::Result<PathBuf> {
        self.file.sync_all()?;
        let (temp, dest) = (self.temp.clone(), self.final_path.clone());
        move_file(&temp, &dest, self.overwrite)?;
        self.done = true;
        sync_dir(parent(&dest))?;
        Ok(dest)
    }

    /// fsync the file and put it in place of `name` in `dir` (where the
    /// temp file must be, created through `dir`'s pinned path) only if
    /// `name` is still the file `expected`
    /// ([`crate::tree::Dir::replace_if`]); fsync the directory. On a
    /// refusal the temp file is removed and the named file left alone.
    pub fn replace_in(
        mut self,
        dir: &crate::tree::Dir,
        name: &OsStr,
        expected: &crate::tree::Status,
    ) -> io::Result<()> {
        self.file.sync_all()?;
        let temp = self.temp.file_name().unwrap_or_default().to_os_string();
        let ours = crate::files::FileId::of_file(&self.file)?;
        if dir.status(&temp)?.id != ours {
            return Err(io::Error::other(format!(
                "{}: the temporary file is not in {}",
                self.temp.display(),
                dir.path().display()
            )));
        }
        dir.replace_if(&temp, name, expected)?;
        self.done = true;
        dir.sync()
    }

    /// After fsync, move the temp file to `dest` instead of the final path
    /// (Glance's `invalid/<id>` on a verification failure). Never replaces
    /// an existing `dest`. Both directories are fsynced.
    pub fn divert(mut self, dest: &Path) -> io::Result<PathBuf> {
        self.file.sync_all()?;
        let temp = self.temp.clone();
        move_file(&temp, dest, false)?;
        self.done = true;
        sync_dir(parent(dest))?;
        sync_dir(parent(&temp))?;
        Ok(dest.to_owned())
    }

    /// fsync and leave the temp file where it is (nothing is renamed);
    /// returns its path.
    pub fn keep(mut self) -> io::Result<PathBuf> {
        self.done = true;
        self.file.sync_all()?;
        Ok(self.temp.clone())
    }

    /// Remove the temp file (Drop does this too, ignoring errors).
    pub fn abort(mut self) -> io::Result<()> {
        self.done = true;
        std::fs::remove_file(&self.temp)
    }
}

impl Write for AtomicFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.file.write(buf)
    }
    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        self.file.write_all(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

impl Drop for AtomicFile {
    fn drop(&mut self) {
        if !self.done {
            let _ = std::fs::remove_file(&self.temp);
        }
        crate::signal::untrack_temp(&self.temp);
    }
}

/// fsync a directory, making renames and unlinks in it durable.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// If `name` follows the [`AtomicFile::create`] pattern
/// `.<basename>.tmp-<pid>-<n>`, the basename and the pid that wrote it.
pub fn parse_temp_name(name: &OsStr) -> Option<(&OsStr, u32)> {
    let b = name.as_bytes().strip_prefix(b".")?;
    let i = b.windows(5).rposition(|w| w == b".tmp-")?;
    let (base, rest) = (&b[..i], &b[i + 5..]);
    let (pid, n) = std::str::from_utf8(rest).ok()?.split_once('-')?;
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|c| c.is_ascii_digit());
    if base.is_empty() || !digits(pid) || !digits(n) {
        return None;
    }
    Some((OsStr::from_bytes(base), pid.parse().ok()?))
}

/// Whether process `pid` is running (`/proc/<pid>` exists); None where
/// there is no `/proc` to tell.
pub fn pid_alive(pid: u32) -> Option<bool> {
    if !Path::new("/proc/self").exists() {
        return None;
    }
    Some(Path::new("/proc").join(pid.to_string()).exists())
}

/// Remove the temporary files a crashed writer of `final_path` left beside
/// it (`.<basename>.tmp-<pid>-<n>` of a pid that is no running process,
/// never our own; regular files only, never followed). Best effort;
/// returns how many were removed. Nothing is removed without `/proc`.
pub fn remove_stale_temps(final_path: &Path) -> u64 {
    let Some(base) = final_path.file_name() else {
        return 0;
    };
    sweep(parent(final_path), Some(base))
}

/// [`remove_stale_temps`] for every final name in `dir` at once (one
/// listing, for a tool that writes many files there, e.g. a dump).
pub fn remove_stale_temps_in(dir: &Path) -> u64 {
    sweep(dir, None)
}

fn sweep(dir: &Path, only: Option<&OsStr>) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    let me = std::process::id();
    let mut removed = 0;
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some((b, pid)) = parse_temp_name(&name) else {
            continue;
        };
        if only.is_some_and(|base| b != base) || pid == me || pid_alive(pid) != Some(false) {
            continue;
        }
        let path = dir.join(&name);
        let is_file = std::fs::symlink_metadata(&path).is_ok_and(|m| m.file_type().is_file());
        if is_file && std::fs::remove_file(&path).is_ok() {
            removed += 1;
        }
    }
    removed
}

fn parent(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

fn already_exists(path: &Path) -> io::Error {
    io::Error::new(
        io::ErrorKind::AlreadyExists,
        format!("{}: already exists, not replacing it", path.display()),
    )
}

fn check_final(final_path: &Path, overwrite: bool) -> io::Result<()> {
    match crate::files::check_output(final_path, overwrite, &[]) {
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Err(already_exists(final_path)),
        r => r,
    }
}

fn open_excl(path: &Path) -> io::Result<File> {
    // create_new = O_CREAT|O_EXCL, which never follows a symlink; O_NOFOLLOW
    // says so again. std sets O_CLOEXEC.
    OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .mode(0o644)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
}

fn move_file(from: &Path, to: &Path, overwrite: bool) -> io::Result<()> {
    if overwrite {
        // Looked at again just before the rename: a device, FIFO, directory
        // or symlink put there since the create is still never replaced.
        crate::files::check_output(to, true, &[])?;
        return std::fs::rename(from, to);
    }
    match rename_noreplace(from, to) {
        Err(e) if matches!(e.raw_os_error(), Some(libc::EINVAL | libc::ENOSYS)) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => return Err(already_exists(to)),
        r => return r,
    }
    link_then_unlink(from, to)
}

/// The portable no-replace move: `link()` fails on an existing target.
fn link_then_unlink(from: &Path, to: &Path) -> io::Result<()> {
    match std::fs::hard_link(from, to) {
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Err(already_exists(to)),
        Err(e) => Err(e),
        Ok(()) => std::fs::remove_file(from),
    }
}

#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
fn rename_noreplace(from: &Path, to: &Path) -> io::Result<()> {
    use std::ffi::CString;
    let c = |p: &Path| {
        CString::new(p.as_os_str().as_bytes())
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains NUL"))
    };
    let (f, t) = (c(from)?, c(to)?);
    // SAFETY: both pointers are valid NUL-terminated strings that outlive
    // the call; AT_FDCWD makes relative paths relative to the cwd.
    let r = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            f.as_ptr(),
            libc::AT_FDCWD,
            t.as_ptr(),
            libc::RENAME_NOREPLACE,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Ask the kernel to start writing `file`'s dirty pages back, without
/// waiting (a hint: errors are for the later fsync to report).
#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
pub fn start_writeback(file: &File) {
    use std::os::fd::AsRawFd;
    // SAFETY: a valid open descriptor; the call only schedules I/O.
    unsafe {
        libc::sync_file_range(file.as_raw_fd(), 0, 0, libc::SYNC_FILE_RANGE_WRITE);
    }
}

/// Elsewhere a no-op: commit's fsync does all the work.
#[cfg(not(target_os = "linux"))]
pub fn start_writeback(_: &File) {}

#[cfg(not(target_os = "linux"))]
fn rename_noreplace(_: &Path, _: &Path) -> io::Result<()> {
    Err(io::Error::from_raw_os_error(libc::ENOSYS))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Seek, SeekFrom};
    use std::os::unix::fs::symlink;
    use std::process::Command;
    use std::time::{Duration, Instant};

    fn names(dir: &Path) -> Vec<OsString> {
        let mut v: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn commit_creates_final_and_removes_temp() {
        let d = tempfile::tempdir().unwrap();
        let fin = d.path().join("abc");
        let mut a = AtomicFile::create(&fin, false).unwrap();
        let temp = a.temp_path().to_owned();
        let (base, pid) = parse_temp_name(temp.file_name().unwrap()).unwrap();
        assert_eq!((base, pid), (OsStr::new("abc"), std::process::id()));
        a.write_all(b"hello").unwrap();
        // Verify by re-reading before commit.
        let f = a.file();
        f.seek(SeekFrom::Start(0)).unwrap();
        let mut s = String::new();
        f.read_to_string(&mut s).unwrap();
        assert_eq!(s, "hello");
        assert_eq!(a.commit().unwrap(), fin);
        assert_eq!(std::fs::read(&fin).unwrap(), b"hello");
        assert_eq!(names(d.path()), vec![OsString::from("abc")]);
    }

    #[test]
    fn existing_final_never_replaced_without_overwrite() {
        let d = tempfile::tempdir().unwrap();
        let fin = d.path().join("abc");
        std::fs::write(&fin, b"old").unwrap();
        let e = AtomicFile::create(&fin, false).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::AlreadyExists);
        assert!(e.to_string().contains("already exists"), "{e}");
        // Appearing between create and commit: refused atomically.
        let fin2 = d.path().join("def");
        let mut a = AtomicFile::create(&fin2, false).unwrap();
        a.write_all(b"new").unwrap();
        std::fs::write(&fin2, b"raced").unwrap();
        let e = a.commit().unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::AlreadyExists, "{e}");
        assert_eq!(std::fs::read(&fin2).unwrap(), b"raced");
        assert_eq!(names(d.path()), vec![OsString::from("abc"), "def".into()]);
        // A dangling symlink counts as existing.
        let fin3 = d.path().join("ghi");
        symlink(d.path().join("nowhere"), &fin3).unwrap();
        assert!(AtomicFile::create(&fin3, false).is_err());
        // Asked to: replaced.
        let mut a = AtomicFile::create(&fin, true).unwrap();
        a.write_all(b"new").unwrap();
        a.commit().unwrap();
        assert_eq!(std::fs::read(&fin).unwrap(), b"new");
    }

    #[test]
    fn noreplace_and_link_fallback_refuse_existing() {
        let d = tempfile::tempdir().unwrap();
        let (a, b) = (d.path().join("a"), d.path().join("b"));
        std::fs::write(&a, b"1").unwrap();
        std::fs::write(&b, b"2").unwrap();
        for f in [move_file, |a: &Path, b: &Path, _| link_then_unlink(a, b)] {
            assert_eq!(
                f(&a, &b, false).unwrap_err().kind(),
                io::ErrorKind::AlreadyExists
            );
            assert_eq!(std::fs::read(&b).unwrap(), b"2");
        }
        let c = d.path().join("c");
        link_then_unlink(&a, &c).unwrap();
        assert!(!a.exists());
        assert_eq!(std::fs::read(&c).unwrap(), b"1");
    }

    #[test]
    fn drop_and_abort_leave_nothing() {
        let d = tempfile::tempdir().unwrap();
        let fin = d.path().join("abc");
        let mut a = AtomicFile::create(&fin, false).unwrap();
        a.write_all(b"partial").unwrap();
        drop(a);
        let a = AtomicFile::create(&fin, false).unwrap();
        a.abort().unwrap();
        assert!(names(d.path()).is_empty());
    }

    #[test]
    fn divert_moves_to_dest() {
        let d = tempfile::tempdir().unwrap();
        for sub in ["incomplete", "invalid"] {
            std::fs::create_dir(d.path().join(sub)).unwrap();
        }
        let (tmp, fin, bad) = (
            d.path().join("incomplete/id"),
            d.path().join("id"),
            d.path().join("invalid/id"),
        );
        let mut a = AtomicFile::create_at(&tmp, &fin, false).unwrap();
        a.write_all(b"corrupt").unwrap();
        assert_eq!(a.divert(&bad).unwrap(), bad);
        assert_eq!(std::fs::read(&bad).unwrap(), b"corrupt");
        assert!(!tmp.exists() && !fin.exists());
    }

    #[test]
    fn keep_leaves_temp() {
        let d = tempfile::tempdir().unwrap();
        let a =
            AtomicFile::create_at(&d.path().join("x.part"), &d.path().join("x"), false).unwrap();
        assert_eq!(a.keep().unwrap(), d.path().join("x.part"));
        assert_eq!(names(d.path()), vec![OsString::from("x.part")]);
    }

    #[test]
    fn create_at_refuses_existing_temp_and_symlink() {
        let d = tempfile::tempdir().unwrap();
        let (tmp, fin) = (d.path().join("x.part"), d.path().join("x"));
        std::fs::write(&tmp, b"someone else's").unwrap();
        let e = AtomicFile::create_at(&tmp, &fin, false).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::AlreadyExists);
        assert_eq!(std::fs::read(&tmp).unwrap(), b"someone else's");
        let victim = d.path().join("victim");
        let tmp2 = d.path().join("y.part");
        symlink(&victim, &tmp2).unwrap();
        assert!(AtomicFile::create_at(&tmp2, &d.path().join("y"), false).is_err());
        assert!(!victim.exists());
        std::fs::write(&victim, b"v").unwrap();
        assert!(AtomicFile::create_at(&tmp2, &d.path().join("y"), false).is_err());
        assert_eq!(std::fs::read(&victim).unwrap(), b"v");
    }

    #[test]
    fn hostile_final_paths_refused() {
        for p in ["/", "..", "a/.."] {
            let e = AtomicFile::create(Path::new(p), false).unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::InvalidInput, "{p}");
        }
    }

    #[test]
    fn temp_name_pattern() {
        fn ok(s: &str) -> Option<(&OsStr, u32)> {
            parse_temp_name(OsStr::new(s))
        }
        assert_eq!(ok(".abc.tmp-12-0"), Some((OsStr::new("abc"), 12)));
        assert_eq!(ok(".a.tmp-1-2.tmp-3-4"), Some((OsStr::new("a.tmp-1-2"), 3)));
        for bad in [
            "abc.tmp-1-2",
            "..tmp-1-2",
            ".abc.tmp-1-",
            ".abc.tmp-x-1",
            ".abc.tmp-1",
        ] {
            assert_eq!(ok(bad), None, "{bad}");
        }
    }

    const CHILD_ENV: &str = "COMMON_ATOMIC_KILL_CHILD_DIR";

    /// Not a test on its own: the child of `kill_mid_write_leaves_no_final`.
    #[test]
    fn kill_child_writer() {
        let Some(dir) = std::env::var_os(CHILD_ENV) else {
            return;
        };
        let dir = PathBuf::from(dir);
        let mut a = AtomicFile::create(&dir.join("final"), false).unwrap();
        let chunk = vec![0x5a_u8; 64 << 10];
        a.write_all(&chunk).unwrap();
        std::fs::write(dir.join("started"), b"").unwrap();
        let end = Instant::now() + Duration::from_secs(60);
        while Instant::now() < end {
            if a.file().stream_position().unwrap() > 16 << 20 {
                a.file().seek(SeekFrom::Start(0)).unwrap();
            }
            a.write_all(&chunk).unwrap();
            std::thread::sleep(Duration::from_millis(1));
        }
        panic!("parent never killed us");
    }

    #[test]
    fn kill_mid_write_leaves_no_final() {
        let d = tempfile::tempdir().unwrap();
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "atomic::tests::kill_child_writer", "--nocapture"])
            .env(CHILD_ENV, d.path())
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let t = Instant::now();
        while !d.path().join("started").exists() {
            assert!(t.elapsed() < Duration::from_secs(30), "child never started");
            std::thread::sleep(Duration::from_millis(10));
        }
        std::thread::sleep(Duration::from_millis(50));
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        let left: Vec<_> = names(d.path())
            .into_iter()
            .filter(|n| n != "started")
            .collect();
        assert!(!d.path().join("final").exists());
        assert_eq!(left.len(), 1, "{left:?}");
        assert_eq!(
            parse_temp_name(&left[0]),
            Some((OsStr::new("final"), child.id()))
        );
    }
}
