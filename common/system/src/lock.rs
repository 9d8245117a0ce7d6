//! Nova's external lock on a cache file, taken the way Nova takes it.
//!
//! Nova guards each `_base` file with an oslo.concurrency "external" lock:
//! the file `$instances_path/locks/nova-<name>`, opened in append mode by
//! fasteners and locked with `fcntl.lockf(fd, LOCK_EX | LOCK_NB)` in a retry
//! loop. That is a POSIX record lock (`fcntl(F_SETLK)`, `F_WRLCK`, whole
//! file), **not** `flock(2)`: the two do not see each other on Linux, so a
//! tool that wants to exclude (and be excluded by) a running Nova must take
//! exactly this lock. The lock file is never deleted (deleting it would let
//! two holders lock two different inodes); the lock is released when the fd
//! is closed, i.e. when [`NovaLock`] is dropped or the process dies.
//!
//! **Per-process semantics.** POSIX record locks belong to the process, not
//! to the fd: two locks on one file in the same process do not exclude each
//! other, and closing *any* fd of that file releases the process's lock. To
//! keep that footgun out of our tools, this module also keeps an in-process
//! table of held lock files (by device and inode): a second `try_acquire`
//! of a file this process already holds reports [`LockError::Busy`] without
//! opening it (like oslo's in-process semaphore in front of the file lock).
//! Do not open a held lock file by other means in the same process.
//!
//! **The `locks/` directory is not created** by [`NovaLock::try_acquire`] or
//! [`NovaLock::acquire`]: Nova creates it on its first lock, so a missing
//! directory usually means a wrong `instances_path`, and locking a file Nova
//! never looks at would exclude nothing. Such a call fails with
//! [`LockError::NoLockDir`]; a caller that knows better calls
//! [`NovaLock::create_lock_dir`] first.

use std::collections::HashSet;
use std::fs::{DirBuilder, File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};
use thiserror::Error;

/// fasteners' defaults: first retry after 10 ms, doubling up to 100 ms.
const FIRST_DELAY: Duration = Duration::from_millis(10);
const MAX_DELAY: Duration = Duration::from_millis(100);

/// Lock files this process holds, by (device, inode).
static HELD: Mutex<Option<HashSet<(u64, u64)>>> = Mutex::new(None);

fn held() -> MutexGuard<'static, Option<HashSet<(u64, u64)>>> {
    // A panic while holding the table cannot leave it inconsistent (every
    // update is a single insert or remove), so a poisoned lock is usable.
    HELD.lock().unwrap_or_else(|e| e.into_inner())
}

/// Why a lock could not be taken.
#[derive(Debug, Error)]
pub enum LockError {
    /// Another process (Nova, or another tool) holds the lock, or this
    /// process already does.
    #[error("{}: locked by another holder", path.display())]
    Busy {
        /// The lock file.
        path: PathBuf,
    },
    /// The lock file's directory does not exist (see the module docs).
    #[error("{}: lock directory does not exist (wrong instances_path?)", dir.display())]
    NoLockDir {
        /// The missing directory.
        dir: PathBuf,
    },
    /// The lock file is a symlink: refused, it could point anywhere.
    #[error("{}: lock file is a symlink, refusing to follow it", path.display())]
    Symlink {
        /// The lock file.
        path: PathBuf,
    },
    /// The lock path exists but is not a regular file.
    #[error("{}: lock file is not a regular file", path.display())]
    NotAFile {
        /// The lock path.
        path: PathBuf,
    },
    /// Any other failure to open or lock.
    #[error("{}: {source}", path.display())]
    Io {
        /// The lock file.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
}

/// A held Nova external lock. Released when dropped (the fd is closed).
#[derive(Debug)]
pub struct NovaLock {
    /// `Some` until dropped; taken in `Drop` to close it before forgetting
    /// the inode, so no other thread can open (and by closing, release) it.
    file: Option<File>,
    path: PathBuf,
    id: (u64, u64),
}

impl NovaLock {
    /// The lock file nova uses for a base-file name:
    /// `<instances>/locks/nova-<name>`, with every `/` in `name` replaced by
    /// `_` as oslo's `_get_lock_path` does (so old full-path lock names such
    /// as `nova-_var_lib_nova_instances__base_<hash>` come out right).
    pub fn path_for(instances_path: &Path, name: &str) -> PathBuf {
        instances_path
            .join("locks")
            .join(format!("nova-{}", name.replace('/', "_")))
    }

    /// Create the lock file's parent directory (one level, mode 0755), as
    /// fasteners would; succeeds if it already exists. Never creates the
    /// instances path itself, so a wrong path still fails.
    pub fn create_lock_dir(lock_path: &Path) -> io::Result<()> {
        let dir = parent(lock_path);
        match DirBuilder::new().mode(0o755).create(dir) {
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists && dir.is_dir() => Ok(()),
            r => r,
        }
    }

    /// Try once, without waiting: [`LockError::Busy`] if another process
    /// (or this one) holds it. Creates the lock file (mode 0644 before
    /// umask) if missing, never its directory.
    pub fn try_acquire(path: &Path) -> Result<NovaLock, LockError> {
        let mut table = held();
        let busy = || LockError::Busy {
            path: path.to_owned(),
        };
        let io_err = |source| LockError::Io {
            path: path.to_owned(),
            source,
        };
        // Check before opening: opening and closing a held file would
        // release our own lock.
        if let Ok(m) = std::fs::symlink_metadata(path)
            && table
                .as_ref()
                .is_some_and(|t| t.contains(&(m.dev(), m.ino())))
        {
            return Err(busy());
        }
        let file = OpenOptions::new()
            .append(true)
            .create(true)
            .mode(0o644)
            // O_NONBLOCK: a FIFO planted at the path must not hang open().
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_NONBLOCK)
            .open(path)
            .map_err(|e| match e.raw_os_error() {
                Some(libc::ELOOP) => LockError::Symlink {
                    path: path.to_owned(),
                },
                Some(libc::ENXIO) => LockError::NotAFile {
                    path: path.to_owned(),
                },
                Some(libc::ENOENT) if !parent(path).is_dir() => LockError::NoLockDir {
                    dir: parent(path).to_owned(),
                },
                _ => io_err(e),
            })?;
        let m = file.metadata().map_err(io_err)?;
        if !m.is_file() {
            return Err(LockError::NotAFile {
                path: path.to_owned(),
            });
        }
        let id = (m.dev(), m.ino());
        if table.as_ref().is_some_and(|t| t.contains(&id)) {
            // Only reachable if the path was swapped between the two
            // checks; leak the fd rather than release our own lock.
            std::mem::forget(file);
            return Err(busy());
        }
        match lock_whole_file(&file) {
            Ok(()) => {}
            Err(e) if matches!(e.raw_os_error(), Some(libc::EAGAIN | libc::EACCES)) => {
                return Err(busy());
            }
            Err(e) => return Err(io_err(e)),
        }
        table.get_or_insert_with(HashSet::new).insert(id);
        Ok(NovaLock {
            file: Some(file),
            path: path.to_owned(),
            id,
        })
    }

    /// Retry until acquired or `timeout` passes (then [`LockError::Busy`]),
    /// sleeping 10 ms, doubling up to 100 ms, between tries, like fasteners.
    /// Other errors are returned at once.
    pub fn acquire(path: &Path, timeout: Duration) -> Result<NovaLock, LockError> {
        let start = Instant::now();
        let mut delay = FIRST_DELAY;
        loop {
            match Self::try_acquire(path) {
                Err(LockError::Busy { .. }) => {}
                r => return r,
            }
            let left = timeout.saturating_sub(start.elapsed());
            if left.is_zero() {
                return Err(LockError::Busy {
                    path: path.to_owned(),
                });
            }
            thread::sleep(delay.min(left));
            delay = (delay * 2).min(MAX_DELAY);
        }
    }

    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for NovaLock {
    fn drop(&mut self) {
        let mut table = held();
        drop(self.file.take());
        if let Some(t) = table.as_mut() {
            t.remove(&self.id);
        }
    }
}

fn parent(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// `fcntl(fd, F_SETLK, {F_WRLCK, SEEK_SET, 0, 0})`: what Python's
/// `fcntl.lockf(fd, LOCK_EX | LOCK_NB)` does.
#[allow(unsafe_code)]
fn lock_whole_file(file: &File) -> io::Result<()> {
    // SAFETY: all-zero is a valid `flock` (plain integers).
    let mut fl: libc::flock = unsafe { std::mem::zeroed() };
    fl.l_type = libc::F_WRLCK as libc::c_short;
    fl.l_whence = libc::SEEK_SET as libc::c_short;
    // l_start = 0, l_len = 0: the whole file, however far it grows.
    loop {
        // SAFETY: the fd is open for the duration of the call (borrowed
        // from `file`), and `fl` is a valid, initialised flock that F_SETLK
        // only reads.
        let r = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_SETLK, &fl) };
        if r != -1 {
            return Ok(());
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{PermissionsExt, symlink};

    #[test]
    fn path_for_replaces_slashes() {
        let p = NovaLock::path_for(Path::new("/var/lib/nova/instances"), "/a/_base/b");
        assert_eq!(
            p,
            Path::new("/var/lib/nova/instances/locks/nova-_a__base_b")
        );
        let h = "9e88ee2ec2b8b7ad1e5e2a8e6c7f0d4a00000000";
        assert_eq!(
            NovaLock::path_for(Path::new("i"), h),
            Path::new("i/locks").join(format!("nova-{h}"))
        );
    }

    #[test]
    fn creates_file_keeps_it_and_relocks() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("nova-x");
        let l = NovaLock::try_acquire(&p).unwrap();
        assert_eq!(l.path(), p);
        let m = std::fs::metadata(&p).unwrap();
        assert!(m.is_file());
        assert_eq!(
            m.permissions().mode() & 0o022,
            0,
            "not group/other writable"
        );
        drop(l);
        assert!(p.exists(), "the lock file is never deleted");
        drop(NovaLock::try_acquire(&p).unwrap());
    }

    #[test]
    fn same_process_second_lock_is_busy_and_first_survives() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("nova-x");
        let l = NovaLock::try_acquire(&p).unwrap();
        assert!(matches!(
            NovaLock::try_acquire(&p),
            Err(LockError::Busy { .. })
        ));
        let t = Instant::now();
        assert!(matches!(
            NovaLock::acquire(&p, Duration::from_millis(50)),
            Err(LockError::Busy { .. })
        ));
        assert!(t.elapsed() >= Duration::from_millis(50));
        drop(l);
        drop(NovaLock::acquire(&p, Duration::from_millis(50)).unwrap());
    }

    #[test]
    fn symlink_refused() {
        let d = tempfile::tempdir().unwrap();
        let target = d.path().join("target");
        std::fs::write(&target, b"").unwrap();
        let p = d.path().join("nova-x");
        symlink(&target, &p).unwrap();
        assert!(matches!(
            NovaLock::try_acquire(&p),
            Err(LockError::Symlink { .. })
        ));
        // Dangling too: nothing may be created through it.
        let p2 = d.path().join("nova-y");
        symlink(d.path().join("nowhere"), &p2).unwrap();
        assert!(matches!(
            NovaLock::try_acquire(&p2),
            Err(LockError::Symlink { .. })
        ));
        assert!(!d.path().join("nowhere").exists());
    }

    #[test]
    fn directory_is_not_a_lock_file() {
        let d = tempfile::tempdir().unwrap();
        let e = NovaLock::try_acquire(d.path()).unwrap_err();
        assert!(
            matches!(e, LockError::Io { .. } | LockError::NotAFile { .. }),
            "{e:?}"
        );
    }

    #[test]
    fn missing_lock_dir_is_not_created_unless_asked() {
        let d = tempfile::tempdir().unwrap();
        let p = NovaLock::path_for(d.path(), "abc");
        match NovaLock::try_acquire(&p) {
            Err(LockError::NoLockDir { dir }) => assert_eq!(dir, d.path().join("locks")),
            r => panic!("{r:?}"),
        }
        assert!(!d.path().join("locks").exists());
        NovaLock::create_lock_dir(&p).unwrap();
        NovaLock::create_lock_dir(&p).unwrap();
        drop(NovaLock::try_acquire(&p).unwrap());
        // One level only: a wrong instances path stays an error.
        let q = NovaLock::path_for(&d.path().join("missing"), "abc");
        assert!(NovaLock::create_lock_dir(&q).is_err());
    }
}
