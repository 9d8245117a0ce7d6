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

use crate::pump::Fault;
use common::atomic::AtomicFile;
use common::lock::{LockError, NovaLock};
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

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
    common::files::safe_file_name(id)
        .map(drop)
        .map_err(|e| CacheError::Refused(format!("{e}; refused as a cache file name")))
}

/// A Glance cache entry being written (the file itself, open at
/// `incomplete/<id>`, is returned beside it by [`GlanceFill::start`]).
pub struct GlanceFill {
    root: PathBuf,
    id: String,
    driver: Driver,
}

impl GlanceFill {
    /// Start writing `<root>/incomplete/<id>`, as Glance's caching
    /// iterator does; refuse what Glance would not do.
    pub fn start(
        root: &Path,
        id: &str,
        driver: Driver,
        no_metadata: bool,
    ) -> Result<(Self, AtomicFile), CacheError> {
        check_image_id(id)?;
        if !root.is_dir() {
            return Err(CacheError::Refused(format!(
                "{} is not a directory (the Glance image_cache_dir)",
                root.display()
            )));
        }
        let has_db = root.join("cache.db").is_file();
        let driver = match driver {
            Driver::Auto if has_db => Driver::Sqlite,
            Driver::Auto if no_metadata => Driver::Auto,
            Driver::Auto => {
                return Err(CacheError::Refused(format!(
                    "{} has no cache.db: the cache uses the xattr or centralized_db driver; \
say --cache-driver xattr, or --no-metadata (Glance never prunes a file without metadata; \
queue the image with PUT /v2/cache/{{id}} instead)",
                    root.display()
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
        for sub in ["incomplete", "invalid"] {
            let d = root.join(sub);
            if d.symlink_metadata().is_ok_and(|m| !m.is_dir()) {
                return Err(CacheError::Refused(format!(
                    "{} is not a directory: the cache is unusable",
                    d.display()
                )));
            }
            if !d.is_dir() {
                std::fs::create_dir(&d).map_err(|e| io_err(&d.display().to_string(), e))?;
            }
        }
        let final_path = root.join(id);
        if final_path.symlink_metadata().is_ok() {
            return Err(CacheError::Exists(final_path));
        }
        let temp = root.join("incomplete").join(id);
        if temp.symlink_metadata().is_ok() {
            return Err(CacheError::Busy(format!(
                "{} exists: the image is being cached (or a download stalled; Glance's cleaner \
removes it after image_cache_stall_time)",
                temp.display()
            )));
        }
        let file =
            AtomicFile::create_at(&temp, &final_path, false).map_err(|e| match e.kind() {
                io::ErrorKind::AlreadyExists => {
                    CacheError::Busy(format!("{}: {e}", temp.display()))
                }
                _ => io_err(&temp.display().to_string(), e),
            })?;
        Ok((
            GlanceFill {
                root: root.to_owned(),
                id: id.to_owned(),
                driver: if no_metadata { Driver::Auto } else { driver },
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
    pub fn commit(self, file: AtomicFile, size: u64) -> Result<(PathBuf, bool), CacheError> {
        let final_path = file
            .commit()
            .map_err(|e| io_err("committing into the cache", e))?;
        let queued = self.root.join("queue").join(&self.id);
        if queued.is_file() {
            std::fs::remove_file(&queued).map_err(|e| io_err(&queued.display().to_string(), e))?;
        }
        let meta = match self.driver {
            Driver::Sqlite => {
                add_sqlite_row(&self.root.join("cache.db"), &self.id, size)?;
                true
            }
            Driver::Xattr => {
                common::xattr::set(&final_path, "user.hits", b"0")
                    .map_err(|e| io_err("setting user.hits", e))?;
                true
            }
            Driver::Auto | Driver::CentralizedDb => false,
        };
        Ok((final_path, meta))
    }

    /// Move to `invalid/<id>` (replacing an older one, as Glance does),
    /// with `user.error` first under the xattr driver.
    pub fn invalidate(self, file: AtomicFile, reason: &str) -> Result<PathBuf, CacheError> {
        if self.driver == Driver::Xattr {
            let _ = common::xattr::set(file.temp_path(), "user.error", reason.as_bytes());
        }
        let dest = self.root.join("invalid").join(&self.id);
        if dest.symlink_metadata().is_ok() {
            std::fs::remove_file(&dest).map_err(|e| io_err(&dest.display().to_string(), e))?;
        }
        file.divert(&dest)
            .map_err(|e| io_err("moving to invalid/", e))
    }
}

/// Glance's sqlite driver's commit: one row, hits 0, both times now.
fn add_sqlite_row(db: &Path, id: &str, size: u64) -> Result<(), CacheError> {
    let sql_err = |e: rusqlite::Error| CacheError::Io(format!("{}: {e}", db.display()).into());
    let conn = rusqlite::Connection::open(db).map_err(sql_err)?;
    conn.busy_timeout(Duration::from_secs(2)).map_err(sql_err)?;
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS cached_images (
            image_id TEXT PRIMARY KEY,
            last_accessed REAL DEFAULT 0.0,
            last_modified REAL DEFAULT 0.0,
            size INTEGER DEFAULT 0,
            hits INTEGER DEFAULT 0,
            checksum TEXT);",
    )
    .map_err(sql_err)?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64());
    let size = i64::try_from(size).unwrap_or(i64::MAX);
    conn.execute(
        "INSERT INTO cached_images (image_id, last_accessed, last_modified, hits, size)
         VALUES (?1, ?2, ?3, 0, ?4)",
        rusqlite::params![id, now, now, size],
    )
    .map_err(sql_err)?;
    Ok(())
}

/// A Nova `_base` entry being written, under Nova's lock.
pub struct NovaFill {
    /// `_base/<name>`.
    pub final_path: PathBuf,
    /// Nova's cache name: SHA-1 of the image id.
    pub name: String,
    /// A stale `.part` (from a crashed download) was removed first.
    pub removed_stale_part: bool,
    /// Held until the fill is dropped (after the commit).
    _lock: NovaLock,
}

impl NovaFill {
    /// Take `locks/nova-<name>` (waiting up to `timeout`), then start
    /// `_base/<name>.part`.
    pub fn start(
        instances: &Path,
        id: &str,
        timeout: Duration,
    ) -> Result<(Self, AtomicFile), CacheError> {
        check_image_id(id)?;
        let base = instances.join("_base");
        if !base.is_dir() {
            return Err(CacheError::Refused(format!(
                "{} does not exist: is {} Nova's instances_path?",
                base.display(),
                instances.display()
            )));
        }
        let name = common::hash::sha1_hex(id);
        let lock_path = NovaLock::path_for(instances, &name);
        // Nova creates its lock directory on first use; so do we.
        NovaLock::create_lock_dir(&lock_path)
            .map_err(|e| io_err(&lock_path.display().to_string(), e))?;
        let lock = NovaLock::acquire(&lock_path, timeout).map_err(|e| match e {
            LockError::Busy { path } => CacheError::Busy(format!(
                "{} is held (Nova is downloading or removing this image)",
                path.display()
            )),
            other => CacheError::Io(other.to_string().into()),
        })?;
        let final_path = base.join(&name);
        if final_path.symlink_metadata().is_ok() {
            return Err(CacheError::Exists(final_path));
        }
        let part = base.join(format!("{name}.part"));
        // Under the lock no one else writes the .part: one left over is
        // from a download that died.
        let removed_stale_part = part.symlink_metadata().is_ok();
        if removed_stale_part {
            std::fs::remove_file(&part).map_err(|e| io_err(&part.display().to_string(), e))?;
        }
        let file = AtomicFile::create_at(&part, &final_path, false)
            .map_err(|e| io_err(&part.display().to_string(), e))?;
        Ok((
            NovaFill {
                final_path,
                name,
                removed_stale_part,
                _lock: lock,
            },
            file,
        ))
    }
}

/// The legacy `_base/<name>.info` side file (Grizzly to Mitaka): the
/// content's SHA-1 and when it was taken.
pub fn write_sidecar(final_path: &Path, sha1: &str) -> io::Result<PathBuf> {
    let mut info = final_path.as_os_str().to_owned();
    info.push(".info");
    let info = PathBuf::from(info);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64());
    let body = serde_json::json!({"sha1": sha1, "sha1-timestamp": now}).to_string();
    let mut f = AtomicFile::create(&info, true)?;
    io::Write::write_all(&mut f, body.as_bytes())?;
    f.commit()
}
