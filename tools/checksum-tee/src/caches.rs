//! Filling the Glance image cache and the Nova `_base` cache with the
//! owners' own state machines, so a file appears under its final name only
//! when it is whole and verified.
//!
//! Glance: `incomplete/<id>` while writing; `<id>` on success (queue
//! marker removed, metadata row or xattr added as its driver does);
//! `invalid/<id>` on a mismatch, a short or failed read, or a reader that
//! left early. Nova: `_base/<sha1(id)>.part` while writing, renamed to
//! `_base/<sha1(id)>`, all under Nova's own fcntl lock
//! `locks/nova-<sha1(id)>`; Nova expects raw files there.
//!
//! Every directory a fill touches (the cache root, `incomplete`, `invalid`,
//! `queue`, `_base`, `locks`) is opened once as a [`Dir`], before any byte
//! is written, and every create, rename and unlink is relative to those
//! handles: a subdirectory or `cache.db` that is a symbolic link is refused
//! (kind `symlink`), and a directory swapped for a link later cannot
//! redirect the commit. Nothing is ever written, renamed or removed through
//! a link, and a link under the final name is never replaced.

use crate::fault::Fault;
use filter::ErrorKind;
use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io::{self, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use system::files::{FileId, refusal};
use system::lock::{LockError, NovaLock};
use system::tree::{Dir, Kind, Status};

/// Which metadata the Glance cache keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Driver {
    /// sqlite when `cache.db` is there; otherwise refuse (say which).
    Auto,
    /// `cache.db` with the `cached_images` table.
    Sqlite,
    /// `user.hits` / `user.error` extended attributes.
    Xattr,
    /// Rows in Glance's own database: unreachable from here.
    CentralizedDb,
}

/// Why a cache fill could not start or finish.
#[derive(Debug)]
pub enum CacheError {
    /// Someone else is writing this entry (Glance's `incomplete/<id>`, or
    /// Nova's lock is held): try again later (exit 75).
    Busy(String),
    /// The entry is already cached; it is never replaced.
    Exists(PathBuf),
    /// The request cannot be carried out as asked.
    Refused(String),
    /// I/O.
    Io(Fault),
}

impl std::fmt::Display for CacheError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CacheError::Busy(m) | CacheError::Refused(m) => f.write_str(m),
            CacheError::Io(m) => write!(f, "{m}"),
            CacheError::Exists(p) => {
                write!(f, "{} is already cached; not replacing it", p.display())
            }
        }
    }
}

fn io_err(what: &str, e: io::Error) -> CacheError {
    CacheError::Io(Fault::io(what, &e))
}

/// An image id usable as a file name: no `/`, not `.`/`..`, not empty,
/// no NUL, newline or other control character.
pub fn check_image_id(id: &str) -> Result<(), CacheError> {
    system::files::safe_file_name(id)
        .map(drop)
        .map_err(|e| CacheError::Refused(format!("{e}; refused as a cache file name")))
}

/// A subdirectory of a cache that could not be opened: not a directory
/// means the cache is unusable (refused); a link keeps its kind.
fn subdir_err(parent: &Dir, name: &str, e: io::Error) -> CacheError {
    let path = parent.join(name);
    if ErrorKind::from_io(&e) == ErrorKind::NotRegular {
        CacheError::Refused(format!(
            "{} is not a directory: the cache is unusable",
            path.display()
        ))
    } else {
        io_err(&path.display().to_string(), e)
    }
}

/// How [`CacheTemp::place`] treats an entry already under the new name.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Place {
    /// Never replaced (whatever it is, a link included): `already_exists`.
    New,
    /// A regular file is replaced (Glance's `invalid/<id>`, a side file);
    /// a link or anything else is refused and left alone.
    ReplaceFile,
}

/// A cache file being written under its temporary name, relative to its
/// pinned directory (Glance's `incomplete/<id>`, Nova's `<name>.part`).
/// Dropped without being placed, it is removed, if it is still the file
/// this fill created. The signal watchdog knows it by the directory's
/// `/proc/self/fd` path, so it too removes it from the pinned directory.
pub struct CacheTemp {
    file: File,
    dir: Arc<Dir>,
    name: OsString,
    id: FileId,
    tracked: Option<PathBuf>,
    done: bool,
}

impl CacheTemp {
    /// Create `name` in `dir` (`O_CREAT|O_EXCL|O_NOFOLLOW`: an existing
    /// file or link there is `AlreadyExists`).
    pub fn create(dir: &Arc<Dir>, name: impl AsRef<OsStr>) -> io::Result<CacheTemp> {
        let name = name.as_ref();
        let file = dir.create_new(name, 0o644)?;
        let id = Status::of_file(&file)?.id;
        let tracked = dir.pinned_path(name).ok();
        if let Some(t) = &tracked {
            system::signal::track_temp(t);
        }
        Ok(CacheTemp {
            file,
            dir: Arc::clone(dir),
            name: name.to_owned(),
            id,
            tracked,
            done: false,
        })
    }

    /// Where it is (messages and records).
    pub fn path(&self) -> PathBuf {
        self.dir.join(&self.name)
    }

    /// The file written, open again for reading (by its pinned name,
    /// without following a link, and checked to be the same file).
    pub fn reader(&self) -> io::Result<File> {
        let f = self.dir.open_file(&self.name)?;
        let now = Status::of_file(&f)?;
        if now.id != self.id {
            return Err(system::tree::changed(now.kind));
        }
        Ok(f)
    }

    /// The temporary name still holds the file written (not a link or
    /// another file swapped in since).
    fn check_ours(&self) -> io::Result<()> {
        let now = self.dir.status(&self.name)?;
        if now.id != self.id {
            return Err(system::tree::changed(now.kind));
        }
        Ok(())
    }

    fn untrack(&mut self) {
        if let Some(t) = self.tracked.take() {
            system::signal::untrack_temp(&t);
        }
    }

    /// fsync, rename to `to` in `dest`, fsync the directories; returns
    /// the file (still open, for attributes set after the rename).
    fn place(mut self, dest: &Dir, to: &str, how: Place) -> io::Result<File> {
        self.file.sync_all()?;
        self.check_ours()?;
        let replace = match (how, dest.status_if_exists(to)?) {
            (_, None) => false,
            (Place::New, Some(_)) => return Err(already_exists(dest, to)),
            (Place::ReplaceFile, Some(s)) if s.kind == Kind::File => true,
            (Place::ReplaceFile, Some(s)) if s.kind == Kind::Symlink => {
                return Err(system::tree::symlink_refusal("a cache file"));
            }
            (Place::ReplaceFile, Some(s)) => {
                return Err(refusal(
                    ErrorKind::NotRegular,
                    format!(
                        "{} is a {}; not replacing it",
                        dest.join(to).display(),
                        s.kind.describe()
                    ),
                ));
            }
        };
        if replace {
            self.dir.rename(&self.name, dest, to)?;
        } else {
            rename_noreplace(&self.dir, &self.name, dest, to)?;
        }
        self.done = true;
        self.untrack();
        // What now has the name must be what was written and verified: a
        // file swapped in between the check and the rename is taken back
        // out (by its identity) rather than served.
        let now = dest.status(to)?;
        if now.id != self.id {
            let _ = dest.remove_file_if(to, now.id);
            return Err(system::tree::changed(now.kind));
        }
        dest.sync()?;
        if dest.id() != self.dir.id() {
            self.dir.sync()?;
        }
        self.file.try_clone()
    }

    /// Remove the temporary file (if it is still ours).
    pub fn abort(mut self) -> io::Result<()> {
        self.done = true;
        self.untrack();
        self.dir.remove_file_if(&self.name, self.id)
    }
}

impl Write for CacheTemp {
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

impl Drop for CacheTemp {
    fn drop(&mut self) {
        // Untracked first: the watchdog never sees a name this fill no
        // longer owns.
        self.untrack();
        if !self.done {
            let _ = self.dir.remove_file_if(&self.name, self.id);
        }
    }
}

fn already_exists(dir: &Dir, name: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::AlreadyExists,
        format!(
            "{}: already exists, not replacing it",
            dir.join(name).display()
        ),
    )
}

/// `renameat2(RENAME_NOREPLACE)`, or where the filesystem has no such
/// flag (NFS), `linkat` then `unlinkat`, which also never replaces.
fn rename_noreplace(from_dir: &Dir, from: &OsStr, dest: &Dir, to: &str) -> io::Result<()> {
    match from_dir.rename_new(from, dest, to) {
        Err(e) if matches!(e.raw_os_error(), Some(libc::EINVAL | libc::ENOSYS)) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            return Err(already_exists(dest, to));
        }
        r => return r,
    }
    match link_at(from_dir, from, dest, to) {
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Err(already_exists(dest, to)),
        Err(e) => Err(e),
        Ok(()) => from_dir.remove_file(from),
    }
}

/// `linkat(2)` between two pinned directories, never following a link.
#[allow(unsafe_code)]
fn link_at(from_dir: &Dir, from: &OsStr, dest: &Dir, to: &str) -> io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let cstr = |b: &[u8]| {
        std::ffi::CString::new(b)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "name contains NUL"))
    };
    let (f, t) = (cstr(from.as_bytes())?, cstr(to.as_bytes())?);
    // SAFETY: two open directory descriptors and two NUL-terminated names
    // that outlive the call; flags 0 (a link is linked, not followed).
    let r = unsafe {
        libc::linkat(
            from_dir.fd().as_raw_fd(),
            f.as_ptr(),
            dest.fd().as_raw_fd(),
            t.as_ptr(),
            0,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Set extended attribute `name` on an open file (`fsetxattr`: by handle,
/// so no path is resolved).
#[allow(unsafe_code)]
fn set_xattr(file: &File, name: &str, value: &[u8]) -> io::Result<()> {
    let n = std::ffi::CString::new(name)?;
    // SAFETY: an open descriptor, a NUL-terminated name and a buffer with
    // its length, all outliving the call.
    let r = unsafe {
        libc::fsetxattr(
            file.as_raw_fd(),
            n.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// The sqlite files beside `cache.db` that sqlite opens by name.
const DB_FILES: [&str; 4] = [
    "cache.db",
    "cache.db-journal",
    "cache.db-wal",
    "cache.db-shm",
];

/// A Glance cache entry being written (the file itself, open at
/// `incomplete/<id>`, is returned beside it by [`GlanceFill::start`]).
pub struct GlanceFill {
    root: Dir,
    invalid: Dir,
    queue: Option<Dir>,
    id: String,
    driver: Driver,
}

impl GlanceFill {
    /// Start writing `<root>/incomplete/<id>`, as Glance's caching
    /// iterator does; refuse what Glance would not do, and a cache whose
    /// own subdirectories or `cache.db` are links, before any byte is
    /// written.
    pub fn start(
        root_path: &Path,
        id: &str,
        driver: Driver,
        no_metadata: bool,
    ) -> Result<(Self, CacheTemp), CacheError> {
        check_image_id(id)?;
        let not_dir = || {
            CacheError::Refused(format!(
                "{} is not a directory (the Glance image_cache_dir)",
                root_path.display()
            ))
        };
        let root = Dir::open(root_path).map_err(|e| {
            if e.kind() == io::ErrorKind::NotFound
                || ErrorKind::from_io(&e) == ErrorKind::NotRegular
            {
                not_dir()
            } else {
                io_err(&root_path.display().to_string(), e)
            }
        })?;
        let has_db = if matches!(driver, Driver::Auto | Driver::Sqlite) {
            check_db_links(&root)?.is_some_and(|s| s.kind == Kind::File)
        } else {
            false
        };
        let driver = match driver {
            Driver::Auto if has_db => Driver::Sqlite,
            Driver::Auto if no_metadata => Driver::Auto,
            Driver::Auto => {
                return Err(CacheError::Refused(format!(
                    "{} has no cache.db: the cache uses the xattr or centralized_db driver; \
say --cache-driver xattr, or --no-metadata (Glance never prunes a file without metadata; \
queue the image with PUT /v2/cache/{{id}} instead)",
                    root_path.display()
                )));
            }
            Driver::CentralizedDb if !no_metadata => {
                return Err(CacheError::Refused(
                    "the centralized_db driver keeps its rows in Glance's own database, which \
this tool cannot reach: a file placed here would never be pruned. Queue the image with \
PUT /v2/cache/{id} instead, or pass --no-metadata to accept that"
                        .into(),
                ));
            }
            d => d,
        };
        // Every subdirectory is looked at before any is created.
        let open = |name: &str| {
            root.subdir_if_exists(name)
                .map_err(|e| subdir_err(&root, name, e))
        };
        let (incomplete, invalid, queue) = (open("incomplete")?, open("invalid")?, open("queue")?);
        let create = |d: Option<Dir>, name: &str| match d {
            Some(d) => Ok(d),
            None => root
                .create_subdir(name)
                .map_err(|e| subdir_err(&root, name, e)),
        };
        let incomplete = Arc::new(create(incomplete, "incomplete")?);
        let invalid = create(invalid, "invalid")?;
        if root
            .status_if_exists(id)
            .map_err(|e| io_err(&root.join(id).display().to_string(), e))?
            .is_some()
        {
            return Err(CacheError::Exists(root.join(id)));
        }
        let busy = || {
            CacheError::Busy(format!(
                "{} exists: the image is being cached (or a download stalled; Glance's cleaner \
removes it after image_cache_stall_time)",
                incomplete.join(id).display()
            ))
        };
        if incomplete
            .status_if_exists(id)
            .map_err(|e| io_err(&incomplete.join(id).display().to_string(), e))?
            .is_some()
        {
            return Err(busy());
        }
        let driver = if no_metadata { Driver::Auto } else { driver };
        if driver == Driver::Sqlite {
            // Opened (and its table made) before any byte, so a database
            // sqlite cannot use is refused now; opened again for the row,
            // since sqlite names its journal by path, and refuses to write
            // a database whose directory moved since it was opened.
            open_db(&root)?;
        }
        let file = CacheTemp::create(&incomplete, id).map_err(|e| match e.kind() {
            io::ErrorKind::AlreadyExists => busy(),
            _ => io_err(&incomplete.join(id).display().to_string(), e),
        })?;
        Ok((
            GlanceFill {
                root,
                invalid,
                queue,
                id: id.to_owned(),
                driver,
            },
            file,
        ))
    }

    /// The cache's driver as used (Auto: no metadata written).
    pub fn driver(&self) -> Driver {
        self.driver
    }

    /// Rename into place, drop the queue marker, add the metadata.
    /// Returns the final path and whether metadata was written.
    pub fn commit(self, file: CacheTemp, size: u64) -> Result<(PathBuf, bool), CacheError> {
        system::hook::point("checksum-tee.before_commit");
        let final_path = self.root.join(&self.id);
        let placed = file
            .place(&self.root, &self.id, Place::New)
            .map_err(|e| match e.kind() {
                io::ErrorKind::AlreadyExists => CacheError::Exists(final_path.clone()),
                _ => io_err("committing into the cache", e),
            })?;
        if let Some(queue) = &self.queue {
            // Only a regular file is Glance's marker; anything else there
            // is left alone.
            let marker = queue
                .status_if_exists(&self.id)
                .map_err(|e| io_err(&queue.join(&self.id).display().to_string(), e))?;
            if let Some(m) = marker.filter(|m| m.kind == Kind::File) {
                match queue.remove_file_if(&self.id, m.id) {
                    Err(e) if e.kind() != io::ErrorKind::NotFound => {
                        return Err(io_err(&queue.join(&self.id).display().to_string(), e));
                    }
                    _ => {}
                }
            }
        }
        let meta = match self.driver {
            Driver::Sqlite => {
                let conn = open_db(&self.root)?;
                add_sqlite_row(&conn, &self.root.join("cache.db"), &self.id, size)?;
                true
            }
            Driver::Xattr => {
                set_xattr(&placed, "user.hits", b"0")
                    .map_err(|e| io_err("setting user.hits", e))?;
                true
            }
            _ => false,
        };
        Ok((final_path, meta))
    }

    /// Move to `invalid/<id>` (replacing an older regular file, as Glance
    /// does; never a link), with `user.error` first under the xattr
    /// driver.
    pub fn invalidate(self, file: CacheTemp, reason: &str) -> Result<PathBuf, CacheError> {
        if self.driver == Driver::Xattr {
            let _ = set_xattr(&file.file, "user.error", reason.as_bytes());
        }
        let dest = self.invalid.join(&self.id);
        file.place(&self.invalid, &self.id, Place::ReplaceFile)
            .map_err(|e| io_err(&dest.display().to_string(), e))?;
        Ok(dest)
    }
}

/// Refuse links at the names sqlite opens (it would follow one, creating
/// a root-owned file at a dangling link's target); `cache.db`'s status.
fn check_db_links(root: &Dir) -> Result<Option<Status>, CacheError> {
    let mut db = None;
    for name in DB_FILES {
        let shown = || root.join(name).display().to_string();
        let st = root
            .status_if_exists(name)
            .map_err(|e| io_err(&shown(), e))?;
        if st.is_some_and(|s| s.kind == Kind::Symlink) {
            return Err(io_err(
                &shown(),
                system::tree::symlink_refusal("the cache's database"),
            ));
        }
        if name == "cache.db" {
            db = st;
        }
    }
    Ok(db)
}

/// Open `cache.db` in the pinned cache root without following a link.
///
/// sqlite resolves every link in the path it is given, and with
/// `SQLITE_OPEN_NOFOLLOW` refuses any (so `/proc/self/fd/N/cache.db`
/// cannot be used). It is given the pinned directory's own current path as
/// the kernel reports it, which has no link in it, so `NOFOLLOW` refuses a
/// link anywhere on the way, `cache.db` included (and sqlite opens its
/// files `O_NOFOLLOW`).
fn open_db(root: &Dir) -> Result<rusqlite::Connection, CacheError> {
    use rusqlite::OpenFlags;
    let shown = root.join("cache.db");
    check_db_links(root)?;
    let real = root
        .current_path()
        .map_err(|e| io_err(&root.path().display().to_string(), e))?;
    let conn = rusqlite::Connection::open_with_flags(
        real.join("cache.db"),
        OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NOFOLLOW
            | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| sql_err(&shown, e))?;
    conn.busy_timeout(Duration::from_secs(2))
        .map_err(|e| sql_err(&shown, e))?;
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS cached_images (
            image_id TEXT PRIMARY KEY,
            last_accessed REAL DEFAULT 0.0,
            last_modified REAL DEFAULT 0.0,
            size INTEGER DEFAULT 0,
            hits INTEGER DEFAULT 0,
            checksum TEXT);",
    )
    .map_err(|e| sql_err(&shown, e))?;
    Ok(conn)
}

/// sqlite's extended code for a link refused under `SQLITE_OPEN_NOFOLLOW`
/// (`SQLITE_CANTOPEN | 6 << 8`; not in every binding's constants).
const SQLITE_CANTOPEN_SYMLINK: std::ffi::c_int = 14 | (6 << 8);

/// An sqlite failure; a link sqlite refused keeps kind `symlink`.
fn sql_err(db: &Path, e: rusqlite::Error) -> CacheError {
    let kind = match &e {
        rusqlite::Error::SqliteFailure(f, _) if f.extended_code == SQLITE_CANTOPEN_SYMLINK => {
            ErrorKind::Symlink
        }
        _ => ErrorKind::Io,
    };
    CacheError::Io(Fault {
        kind,
        message: format!("{}: {e}", db.display()),
    })
}

/// Glance's sqlite driver's commit: one row, hits 0, both times now.
fn add_sqlite_row(
    conn: &rusqlite::Connection,
    db: &Path,
    id: &str,
    size: u64,
) -> Result<(), CacheError> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64());
    let size = i64::try_from(size).unwrap_or(i64::MAX);
    conn.execute(
        "INSERT INTO cached_images (image_id, last_accessed, last_modified, hits, size)
         VALUES (?1, ?2, ?3, 0, ?4)",
        rusqlite::params![id, now, now, size],
    )
    .map_err(|e| sql_err(db, e))?;
    Ok(())
}

/// A Nova `_base` entry being written, under Nova's lock.
pub struct NovaFill {
    /// `_base/<name>` (messages and records).
    pub final_path: PathBuf,
    /// Nova's cache name: SHA-1 of the image id.
    pub name: String,
    /// A stale `.part` (from a crashed download) was removed first.
    pub removed_stale_part: bool,
    base: Arc<Dir>,
    /// Held until the fill is dropped (after the commit and side file).
    _lock: NovaLock,
}

impl NovaFill {
    /// Take `locks/nova-<name>` (waiting up to `timeout`), then start
    /// `_base/<name>.part`. `_base` and `locks` that are links are
    /// refused.
    pub fn start(
        instances: &Path,
        id: &str,
        timeout: Duration,
    ) -> Result<(Self, CacheTemp), CacheError> {
        check_image_id(id)?;
        let missing = || {
            CacheError::Refused(format!(
                "{} does not exist: is {} Nova's instances_path?",
                instances.join("_base").display(),
                instances.display()
            ))
        };
        let inst = Dir::open(instances).map_err(|e| {
            if e.kind() == io::ErrorKind::NotFound
                || ErrorKind::from_io(&e) == ErrorKind::NotRegular
            {
                missing()
            } else {
                io_err(&instances.display().to_string(), e)
            }
        })?;
        let base = inst
            .subdir_if_exists("_base")
            .map_err(|e| subdir_err(&inst, "_base", e))?
            .ok_or_else(missing)?;
        let name = system::hash::sha1_hex(id);
        // Nova creates its lock directory on first use; so do we.
        let locks = inst
            .create_subdir("locks")
            .map_err(|e| subdir_err(&inst, "locks", e))?;
        let lock_name = format!("nova-{name}");
        let shown = locks.join(&lock_name);
        // The lock file is opened (O_NOFOLLOW) in the pinned locks/.
        let pinned = locks
            .pinned_path(OsStr::new(&lock_name))
            .map_err(|e| io_err(&shown.display().to_string(), e))?;
        let lock = NovaLock::acquire(&pinned, timeout).map_err(|e| lock_err(e, &shown))?;
        let final_path = base.join(&name);
        if base
            .status_if_exists(&name)
            .map_err(|e| io_err(&final_path.display().to_string(), e))?
            .is_some()
        {
            return Err(CacheError::Exists(final_path));
        }
        let part = format!("{name}.part");
        let part_path = base.join(&part);
        let part_err = |e| io_err(&part_path.display().to_string(), e);
        // Under the lock no one else writes the .part: one left over is
        // from a download that died. A link there is nobody's download.
        let removed_stale_part = match base.status_if_exists(&part).map_err(part_err)? {
            None => false,
            Some(s) if s.kind == Kind::File => {
                base.remove_file_if(&part, s.id).map_err(part_err)?;
                true
            }
            Some(s) if s.kind == Kind::Symlink => {
                return Err(part_err(system::tree::symlink_refusal("a cache file")));
            }
            Some(s) => {
                return Err(part_err(refusal(
                    ErrorKind::NotRegular,
                    format!("is a {}; not replacing it", s.kind.describe()),
                )));
            }
        };
        let base = Arc::new(base);
        let file = CacheTemp::create(&base, &part).map_err(part_err)?;
        Ok((
            NovaFill {
                final_path,
                name,
                removed_stale_part,
                base,
                _lock: lock,
            },
            file,
        ))
    }

    /// Rename `<name>.part` to `<name>` in the pinned `_base` (never
    /// replacing anything, a link included).
    pub fn commit(&self, file: CacheTemp) -> Result<PathBuf, CacheError> {
        system::hook::point("checksum-tee.before_commit");
        file.place(&self.base, &self.name, Place::New)
            .map_err(|e| match e.kind() {
                io::ErrorKind::AlreadyExists => CacheError::Exists(self.final_path.clone()),
                _ => io_err("committing into _base", e),
            })?;
        Ok(self.final_path.clone())
    }

    /// The legacy `_base/<name>.info` side file (Grizzly to Mitaka): the
    /// content's SHA-1 and when it was taken; replaces an older regular
    /// file, never a link.
    pub fn write_sidecar(&self, sha1: &str) -> io::Result<PathBuf> {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let info = format!("{}.info", self.name);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        let body = serde_json::json!({"sha1": sha1, "sha1-timestamp": now}).to_string();
        // system::atomic's temporary name pattern, so stale ones are swept.
        let temp = format!(
            ".{info}.tmp-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        let mut f = CacheTemp::create(&self.base, temp)?;
        f.write_all(body.as_bytes())?;
        f.place(&self.base, &info, Place::ReplaceFile)?;
        Ok(self.base.join(info))
    }
}

/// Nova's lock could not be taken: messages name the lock file as the
/// operator knows it, kinds say why.
fn lock_err(e: LockError, shown: &Path) -> CacheError {
    let fault = |kind, what: &str| {
        CacheError::Io(Fault {
            kind,
            message: format!("{}: {what}", shown.display()),
        })
    };
    match e {
        LockError::Busy { .. } => CacheError::Busy(format!(
            "{} is held (Nova is downloading or removing this image)",
            shown.display()
        )),
        LockError::Symlink { .. } => fault(
            ErrorKind::Symlink,
            "lock file is a symbolic link, refusing to follow it",
        ),
        LockError::NotAFile { .. } => {
            fault(ErrorKind::NotRegular, "lock file is not a regular file")
        }
        LockError::Io { source, .. } => io_err(&shown.display().to_string(), source),
        other => CacheError::Io(other.to_string().into()),
    }
}
