//! `cachewalk remove`: delete exactly the files of the records given
//! (typically `cachewalk nova ... | jq 'select(.cache.verdict ==
//! "candidate")'`), each only after (notes/caches.md sections 1.6-1.7, 4):
//! 1. the record is a Nova `_base` candidate whose `path` is
//!    `root/rel_path`, directly in the cache directory;
//! 2. Nova's lock `locks/nova-<name>` is taken the way Nova takes it (POSIX
//!    `fcntl` write lock, never `flock`; non-blocking, a bounded retry);
//!    busy → `skipped_lock_busy`, exit 75;
//! 3. under the lock, the file is re-stat'ed: still a regular file, same
//!    device, inode, size and mtime as in the record, still older than its
//!    threshold; else `changed_since_walk`;
//! 4. under the lock, no instance disk's backing chain reaches it now and
//!    no process holds it open (a disk that cannot be read, or processes
//!    whose files cannot be listed, count as use; with `--instances`, a
//!    disk that cannot be read counts only for its instance's base files,
//!    as in the walk); else `still_in_use`.
//!
//! Then the file is unlinked and, as Nova does, its `.info`/`.sha1`
//! sidecars and its lock file. Every record comes back with
//! `cache.action`: `deleted` (`would_delete` with `--dry-run`),
//! `skipped_lock_busy`, `changed_since_walk`, `still_in_use`,
//! `skipped_not_candidate`, `limit_reached`, `delete_failed`.

use crate::glance::{self, Driver};
use crate::names::{self, NovaClass};
use crate::nova::{self, DiskCache};
use filter::record::ErrorKind;
use serde_json::Value;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::ffi::OsStringExt;
use std::path::{Path, PathBuf};
use std::time::Duration;
use system::files::FileId;
use system::lock::{LockError, NovaLock};
use system::tree::{Dir, Kind};

/// How long to retry a busy lock before skipping the file.
pub const LOCK_WAIT: Duration = Duration::from_millis(500);

/// Limits and mode.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Decide, but delete nothing.
    pub dry_run: bool,
    /// Delete at most this many files.
    pub max_count: Option<u64>,
    /// Delete at most this many bytes (by `allocated`).
    pub max_bytes: Option<u64>,
    /// "Now", for the age re-check.
    pub now: i64,
    /// Where processes are listed.
    pub proc_root: PathBuf,
    /// The instance inventory (bounds what an unreadable disk keeps).
    pub inventory: Option<Vec<crate::inventory::Instance>>,
}

/// The outcome for one record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// `cache.action`.
    pub action: &'static str,
    /// Why, when not deleted.
    pub why: Option<String>,
    /// Sidecars and lock file removed with it.
    pub also_removed: Vec<String>,
    /// For `delete_failed`: the record's `error.kind` (a read-only or
    /// forbidden directory says so).
    pub error: Option<ErrorKind>,
}

impl Outcome {
    fn no(action: &'static str, why: impl Into<String>) -> Outcome {
        Outcome {
            action,
            why: Some(why.into()),
            also_removed: Vec::new(),
            error: None,
        }
    }

    /// `delete_failed`, with the error's kind.
    fn failed(kind: ErrorKind, why: impl Into<String>) -> Outcome {
        Outcome {
            error: Some(kind),
            ..Outcome::no("delete_failed", why)
        }
    }
}

/// The state of a run: limits consumed, the disk cache for re-checks.
#[derive(Debug, Default)]
pub struct Remover {
    opts: Options,
    deleted: u64,
    bytes: u64,
    disks: DiskCache,
}

fn field<'a>(c: &'a Value, k: &str) -> Option<&'a Value> {
    c.get(k)
}

/// Test hook: with `CACHEWALK_TEST_HOLD_LOCK_MS=N`, hold each lock N ms
/// before deleting, so a test can see it held by another process.
const HOLD_HOOK: &str = "CACHEWALK_TEST_HOLD_LOCK_MS";

impl Remover {
    /// Just before a deletion: `--max-count`/`--max-bytes`, and
    /// `--dry-run`'s answer (counted as a deletion would be).
    fn before_delete(&mut self, allocated: u64) -> Option<Outcome> {
        if self.opts.max_count.is_some_and(|m| self.deleted >= m)
            || self
                .opts
                .max_bytes
                .is_some_and(|m| self.bytes + allocated > m)
        {
            return Some(Outcome::no(
                "limit_reached",
                "--max-count or --max-bytes reached",
            ));
        }
        if self.opts.dry_run {
            self.deleted += 1;
            self.bytes += allocated;
            return Some(Outcome {
                action: "would_delete",
                why: None,
                also_removed: Vec::new(),
                error: None,
            });
        }
        None
    }

    /// A run with `opts`.
    pub fn new(opts: Options) -> Remover {
        Remover {
            opts,
            ..Remover::default()
        }
    }

    /// Handle one record: `path` is the record's top-level path, `c` its
    /// `cache` facet (module docs).
    pub fn remove(&mut self, path: &Path, c: &Value) -> Outcome {
        let s = |k: &str| field(c, k).and_then(Value::as_str).unwrap_or("");
        let n = |k: &str| field(c, k).and_then(Value::as_u64);
        if s("cache") == "glance" && s("record") == "entry" {
            return self.remove_glance(path, c);
        }
        if s("cache") != "nova_base" || s("record") != "entry" || s("verdict") != "candidate" {
            return Outcome::no(
                "skipped_not_candidate",
                "only nova_base entries with verdict candidate are removed",
            );
        }
        // The file must be root/<subdirectory>/<name>, named as the record
        // says (the exact bytes when the name is not UTF-8), each part one
        // plain name: anything else is refused, never resolved.
        let refused = |why: &str| Outcome {
            error: Some(ErrorKind::Refused),
            ..Outcome::no("skipped_not_candidate", why)
        };
        let root = PathBuf::from(s("root"));
        let rel: PathBuf = match field(c, "rel_path_bytes").and_then(Value::as_str) {
            Some(b) => match system::text::base64_decode(b) {
                Some(bytes) => PathBuf::from(std::ffi::OsString::from_vec(bytes)),
                None => {
                    return refused("rel_path_bytes is not base64");
                }
            },
            None => PathBuf::from(s("rel_path")),
        };
        let plain = |p: &[u8]| !p.is_empty() && p != b"." && p != b".." && !p.contains(&b'/');
        let rel_bytes = rel.as_os_str().as_bytes();
        let parts: Vec<&[u8]> = rel_bytes.split(|&b| b == b'/').collect();
        let [dir, name] = parts[..] else {
            return refused("rel_path is not <subdirectory>/<name>");
        };
        if !plain(dir) || !plain(name) || dir == b"locks" {
            return refused("rel_path is not <subdirectory>/<name> of plain names");
        }
        let (dir, name) = (OsStr::from_bytes(dir), OsStr::from_bytes(name));
        if path != root.join(&rel) {
            return refused("path is not root/rel_path");
        }
        let text = name.to_string_lossy().into_owned();
        // Only a name Nova itself removes is ever judged again.
        let named = names::classify(&text);
        if named.nova == NovaClass::Ignored || !names::removable(named.class) {
            return refused("not a name Nova removes");
        }
        let (Some(dev), Some(ino), Some(size), Some(threshold)) =
            (n("dev"), n("ino"), n("size"), n("threshold_s"))
        else {
            return Outcome::no(
                "skipped_not_candidate",
                "the record lacks dev, ino, size or threshold_s",
            );
        };
        let mtime = system::text::parse_time(s("mtime"));
        let allocated = n("allocated").unwrap_or(size);
        // The root as the operator named it (links followed once), the
        // cache and lock directories from it, never through a link.
        let dirs = Dir::open(&root).and_then(|r| {
            let base = r.subdir(dir)?;
            Ok((r, base))
        });
        let (root_dir, base_dir) = match dirs {
            Ok(d) => d,
            Err(e) => {
                return Outcome::failed(
                    ErrorKind::from_io(&e),
                    format!("{}: {e}", root.join(dir).display()),
                );
            }
        };
        // 2. Nova's lock: oslo's lock file nova-<name> (the name's exact
        // bytes) in locks/, created as fasteners does (the root holds this
        // very _base, so its locks/ is the one Nova would use); a link
        // there is refused and nothing is created through it.
        let lock_name = {
            let mut n = std::ffi::OsString::from("nova-");
            n.push(name);
            n
        };
        let lock_shown = root.join("locks").join(&lock_name);
        let locks_dir = match root_dir.create_subdir("locks") {
            Ok(d) => d,
            Err(e) => {
                return Outcome::failed(
                    ErrorKind::from_io(&e),
                    format!("{}: {e}", root.join("locks").display()),
                );
            }
        };
        let lock_path = match locks_dir.pinned_path(&lock_name) {
            Ok(p) => p,
            Err(e) => return Outcome::failed(ErrorKind::from_io(&e), e.to_string()),
        };
        let lock = match NovaLock::acquire(&lock_path, LOCK_WAIT) {
            Ok(l) => l,
            Err(LockError::Busy { .. }) => {
                return Outcome::no(
                    "skipped_lock_busy",
                    format!("{} is held", lock_shown.display()),
                );
            }
            Err(e) => {
                let kind = match &e {
                    LockError::Io { source, .. } => ErrorKind::from_io(source),
                    LockError::Symlink { .. } => ErrorKind::Symlink,
                    _ => ErrorKind::Refused,
                };
                return Outcome::failed(kind, format!("{}: {e}", lock_shown.display()));
            }
        };
        let lock_id = locks_dir.status(&lock_name).ok().map(|s| s.id);
        if let Some(ms) = std::env::var(HOLD_HOOK).ok().and_then(|v| v.parse().ok()) {
            std::thread::sleep(Duration::from_millis(ms));
        }
        // 3. Re-stat under the lock, through the cache directory's handle.
        let now = match base_dir.status(name) {
            Ok(m) => m,
            Err(e) => return Outcome::no("changed_since_walk", format!("gone: {e}")),
        };
        let same = now.kind == Kind::File
            && now.id == (FileId { dev, ino })
            && now.size == size
            && mtime.is_some_and(|t| t == now.mtime.0);
        if !same {
            return Outcome::no(
                "changed_since_walk",
                "not the same file, size or mtime as walked",
            );
        }
        if nova::too_young(self.opts.now - now.mtime.0, now.mtime.1, threshold) {
            return Outcome::no("changed_since_walk", "younger than its threshold now");
        }
        // 4. Nothing uses it now, and nothing unknown might.
        let users = nova::backing_users(
            &root_dir,
            &base_dir,
            &dir.to_string_lossy(),
            &self.disks,
            self.opts.inventory.as_deref(),
        );
        if let Some(why) = users.keeps(&text) {
            return Outcome::no("still_in_use", why);
        }
        let (fds, fds_complete) = nova::open_files(&self.opts.proc_root);
        if let Some(pids) = fds.get(&(dev, ino)) {
            return Outcome::no("still_in_use", format!("open by pid {pids:?}"));
        }
        if !fds_complete {
            return Outcome::no(
                "still_in_use",
                "open files of other users could not be listed",
            );
        }
        if let Some(out) = self.before_delete(allocated) {
            return out;
        }
        // A test swaps the file here; the unlink below compares identity.
        system::hook::point("cachewalk.nova.before_remove");
        if let Err(e) = base_dir.remove_file_if(name, FileId { dev, ino }) {
            let kind = ErrorKind::from_io(&e);
            if kind == ErrorKind::Changed || e.kind() == std::io::ErrorKind::NotFound {
                return Outcome {
                    error: (kind == ErrorKind::Changed).then_some(kind),
                    ..Outcome::no("changed_since_walk", e.to_string())
                };
            }
            return Outcome::failed(kind, e.to_string());
        }
        self.deleted += 1;
        self.bytes += allocated;
        let mut also = Vec::new();
        for ext in [".info", ".sha1"] {
            let mut side = name.to_os_string();
            side.push(ext);
            if let Ok(st) = base_dir.status(&side)
                && st.kind == Kind::File
                && base_dir.remove_file_if(&side, st.id).is_ok()
            {
                also.push(format!(
                    "{}/{}",
                    dir.to_string_lossy(),
                    side.to_string_lossy()
                ));
            }
        }
        // Nova removes the lock file of a removed base file (bug 1256306):
        // the one locked, in the locks directory held.
        if let Some(id) = lock_id
            && locks_dir.remove_file_if(&lock_name, id).is_ok()
        {
            also.push(format!("locks/{}", lock_name.to_string_lossy()));
        }
        drop(lock);
        Outcome {
            action: "deleted",
            why: None,
            also_removed: also,
            error: None,
        }
    }
}

impl Remover {
    /// A Glance cache record: `would_prune` (Glance's prune), `orphan_temp`
    /// (its clean: stalled or invalid downloads), `orphan_file` (a file
    /// without metadata), `orphan_row` (a row without a file). The verdict
    /// is never taken from the record: under Glance's locks (its oslo lock
    /// file when it lives in the cache root, and `cache.db`'s write lock,
    /// which holds every hit and row still) the entry is judged again with
    /// the record's `max_size` and `stall_time`, and a record whose verdict
    /// is not what the cache says now is refused. With the sqlite driver
    /// the file and its `cache.db` row go in one transaction; with
    /// `centralized_db` the rows live in Glance's database, so this refuses
    /// and points to Glance's cache API. Everything goes through the
    /// root's handle: `rel_path` must be `<name>` or
    /// `<incomplete|invalid|queue>/<name>`, a subdirectory, lock file or
    /// `cache.db` that is a link is refused (kind `symlink`), and the file
    /// unlinked is the one judged (kind `changed` otherwise).
    fn remove_glance(&mut self, path: &Path, c: &Value) -> Outcome {
        let s = |k: &str| field(c, k).and_then(Value::as_str).unwrap_or("");
        let n = |k: &str| field(c, k).and_then(Value::as_u64);
        let verdict = s("verdict");
        if !matches!(
            verdict,
            "would_prune" | "orphan_temp" | "orphan_file" | "orphan_row"
        ) {
            return Outcome::no(
                "skipped_not_candidate",
                "only would_prune, orphan_temp, orphan_file and orphan_row Glance entries are removed",
            );
        }
        let driver = match s("driver") {
            "sqlite" => Driver::Sqlite,
            "xattr" => Driver::Xattr,
            _ => return refused_centralized(),
        };
        let root = PathBuf::from(s("root"));
        let rel = s("rel_path");
        let Some((sub, name)) = glance::split_rel(rel) else {
            return refused(
                ErrorKind::Refused,
                "rel_path is not <image id> or <incomplete|invalid|queue>/<name>",
            );
        };
        if path != root.join(rel) {
            return Outcome::no("skipped_not_candidate", "path is not root/rel_path");
        }
        let (Some(max_size), Some(stall_time)) = (n("max_size"), n("stall_time")) else {
            return Outcome::no(
                "skipped_not_candidate",
                "the record lacks the max_size and stall_time it was judged by",
            );
        };
        let id = s("image_id").to_owned();
        let dir = match system::tree::Dir::open(&root) {
            Ok(d) => d,
            Err(e) => return io_failed(&root, &e),
        };
        let lock_name = if verdict == "orphan_temp" {
            "glance-cache-clean"
        } else {
            "glance-cache-prune"
        };
        let held = match GlanceLocked::take(&dir, driver, sub.is_none(), Some(lock_name)) {
            Ok(h) => h,
            Err(out) => return out,
        };
        // Judge the entry again, under the locks.
        let opts = glance::Options {
            now: self.opts.now,
            max_size,
            stall_time,
            driver: Some(driver),
            verify: false,
            images: std::collections::HashMap::new(),
        };
        let now = match glance::entry_now(&dir, rel, &opts) {
            Ok(Some(e)) => e,
            Ok(None) => return Outcome::no("changed_since_walk", "gone"),
            Err(glance::GlanceError::Io { path, source }) => return io_failed(&path, &source),
            Err(e) => return Outcome::failed(ErrorKind::Io, e.to_string()),
        };
        if verdict != "orphan_row" {
            let mtime = system::text::parse_time(s("mtime"));
            if n("dev") != Some(now.dev)
                || n("ino") != Some(now.ino)
                || n("size") != Some(now.size)
                || mtime.is_none_or(|t| Some(t) != system::text::parse_time(&now.mtime))
            {
                return Outcome::no(
                    "changed_since_walk",
                    "not the same file, size or mtime as walked",
                );
            }
        }
        if now.verdict != verdict {
            return refused(
                ErrorKind::Refused,
                format!(
                    "the record's verdict is not what the cache says now ({})",
                    now.verdict
                ),
            );
        }
        let allocated = now.allocated;
        // A download still being written is not stalled, whatever its age.
        if sub == Some("incomplete") {
            let (fds, complete) = nova::open_files(&self.opts.proc_root);
            if fds.contains_key(&(now.dev, now.ino)) || !complete {
                return Outcome::no("still_in_use", "open by a process (or that cannot be told)");
            }
        }
        let file = if verdict == "orphan_row" {
            None
        } else {
            let parent = match sub {
                None => dir,
                Some(sub) => match dir.subdir(sub) {
                    Ok(d) => d,
                    Err(e) => return io_failed(&root.join(sub), &e),
                },
            };
            Some(Judged {
                dir: parent,
                name: name.to_owned(),
                id: system::files::FileId {
                    dev: now.dev,
                    ino: now.ino,
                },
            })
        };
        self.glance_delete(held, &id, file, allocated)
    }

    /// Delete a Glance entry under the locks `held`: its file (when there is
    /// one) and its row, counted.
    fn glance_delete(
        &mut self,
        held: GlanceLocked,
        id: &str,
        file: Option<Judged>,
        allocated: u64,
    ) -> Outcome {
        if let Some(out) = self.before_delete(allocated) {
            return out;
        }
        match held.delete(id, file) {
            Ok(row) => {
                self.deleted += 1;
                self.bytes += allocated;
                Outcome {
                    action: "deleted",
                    why: None,
                    error: None,
                    also_removed: if row {
                        vec![format!("cache.db:cached_images:{id}")]
                    } else {
                        Vec::new()
                    },
                }
            }
            Err((ErrorKind::Changed, why)) => {
                refused_as("changed_since_walk", ErrorKind::Changed, why)
            }
            Err((kind, why)) => Outcome::failed(kind, why),
        }
    }
}

impl Remover {
    /// Delete one cached image of the Glance cache at `root`, as
    /// `glance-cache-manage delete-cached-image` does (the file
    /// `<root>/<id>` and its metadata row), refusing an image being
    /// written: an `incomplete/<id>` (Glance's own "being cached" test)
    /// is `skipped_busy` (kind busy, exit 75), checked again under
    /// `cache.db`'s write lock. `id` is a safe file name (the caller
    /// checks). Through the root's handle, as [`Remover::remove`] for a
    /// Glance record: an `incomplete/` that is a link is refused.
    pub fn delete_cached(&mut self, root: &Path, id: &str, driver: Option<Driver>) -> Outcome {
        let Some(driver) = driver.filter(|d| *d != Driver::CentralizedDb) else {
            return Outcome {
                error: Some(ErrorKind::Refused),
                ..refused_centralized()
            };
        };
        let dir = match system::tree::Dir::open(root) {
            Ok(d) => d,
            Err(e) => return io_failed(root, &e),
        };
        let being_written = |s: &Self| -> Option<Outcome> {
            let inc = match dir.subdir_if_exists("incomplete") {
                Ok(Some(d)) => d,
                Ok(None) => return None,
                // Whether it is being written cannot be told.
                Err(e) => return Some(io_failed(&root.join("incomplete"), &e)),
            };
            let m = inc.status_if_exists(id).ok()??;
            let (fds, _) = nova::open_files(&s.opts.proc_root);
            let by = fds
                .get(&(m.id.dev, m.id.ino))
                .map(|p| format!(" by pid {p:?}"))
                .unwrap_or_default();
            Some(Outcome {
                error: Some(ErrorKind::Busy),
                ..Outcome::no(
                    "skipped_busy",
                    format!("being written{by} (incomplete/{id} exists)"),
                )
            })
        };
        if let Some(out) = being_written(self) {
            return out;
        }
        let held = match GlanceLocked::take(&dir, driver, true, None) {
            Ok(h) => h,
            Err(out) => return out,
        };
        // Under the lock: a download may have started since.
        if let Some(out) = being_written(self) {
            return out;
        }
        let meta = match dir.status_if_exists(id) {
            Ok(m) => m,
            Err(e) => return io_failed(&root.join(id), &e),
        };
        let row = held.has_row(id);
        let allocated = match &meta {
            Some(m) if m.kind == system::tree::Kind::File => m.allocated,
            Some(m) => {
                let kind = if m.kind == system::tree::Kind::Symlink {
                    ErrorKind::Symlink
                } else {
                    ErrorKind::NotRegular
                };
                return refused(
                    kind,
                    format!("a {}, not a regular file: never deleted", m.kind.describe()),
                );
            }
            None if row => 0,
            None => return Outcome::no("not_cached", "not in the cache"),
        };
        let file = meta.map(|m| Judged {
            dir,
            name: id.to_owned(),
            id: m.id,
        });
        self.glance_delete(held, id, file, allocated)
    }
}

/// `refused`, with the error's kind.
fn refused(kind: ErrorKind, why: impl Into<String>) -> Outcome {
    refused_as("refused", kind, why)
}

fn refused_as(action: &'static str, kind: ErrorKind, why: impl Into<String>) -> Outcome {
    Outcome {
        error: Some(kind),
        ..Outcome::no(action, why)
    }
}

/// A failure to reach `path`: a link is `refused`, the rest
/// `delete_failed`, each with its kind.
fn io_failed(path: &Path, e: &std::io::Error) -> Outcome {
    let kind = ErrorKind::from_io(e);
    let why = format!("{}: {e}", path.display());
    match kind {
        ErrorKind::Symlink | ErrorKind::Refused | ErrorKind::NotRegular => refused(kind, why),
        _ => Outcome::failed(kind, why),
    }
}

/// The refusal for a cache whose metadata is not in the cache directory.
fn refused_centralized() -> Outcome {
    Outcome::no(
        "refused_centralized_db",
        "the metadata is in Glance's database (or unknown): use Glance's cache API \
         (DELETE /v2/cache/{image_id}, POST /v2/cache/prune or /v2/cache/clean)",
    )
}

/// The file judged under the locks: its directory's handle, its name
/// there and its identity then.
struct Judged {
    dir: system::tree::Dir,
    name: String,
    id: system::files::FileId,
}

impl Judged {
    /// Unlink it if it is still the file judged (kind `changed`
    /// otherwise, left alone).
    fn remove(&self) -> Result<(), (ErrorKind, String)> {
        system::hook::point("cachewalk.glance.before_remove");
        self.dir.remove_file_if(&self.name, self.id).map_err(|e| {
            (
                ErrorKind::from_io(&e),
                format!("{}: {e}", self.dir.join(&self.name).display()),
            )
        })
    }
}

/// Glance's locks, held while an entry is judged again and deleted:
/// Glance's oslo lock file (`glance-cache-prune` or `-clean`), only when
/// it exists in the cache root (Glance's default `lock_path` there; never
/// created, since the xattr driver counts every root file as an image;
/// never deleted, as oslo never deletes it; a link there is refused), and
/// for a root entry of the sqlite driver `cache.db`'s write lock
/// (`BEGIN IMMEDIATE`: Glance cannot record a hit or a row meanwhile),
/// `cache.db` opened without following a link.
struct GlanceLocked {
    _oslo: Option<NovaLock>,
    db: Option<(PathBuf, rusqlite::Connection)>,
}

fn sql_err(db: &Path, e: &rusqlite::Error) -> (ErrorKind, String) {
    let kind = match e.sqlite_error_code() {
        Some(rusqlite::ErrorCode::ReadOnly) => ErrorKind::ReadOnly,
        Some(rusqlite::ErrorCode::DiskFull) => ErrorKind::NoSpace,
        Some(rusqlite::ErrorCode::PermissionDenied) => ErrorKind::PermissionDenied,
        _ => ErrorKind::Io,
    };
    (kind, format!("{}: {e}", db.display()))
}

impl GlanceLocked {
    fn take(
        dir: &system::tree::Dir,
        driver: Driver,
        root_entry: bool,
        lock_name: Option<&str>,
    ) -> Result<GlanceLocked, Outcome> {
        use system::tree::Kind;
        let oslo = match lock_name {
            Some(name) => {
                let shown = dir.join(name);
                match dir.status_if_exists(name) {
                    Ok(Some(s)) if s.kind == Kind::File => {
                        // Through the pinned root; the lock file itself is
                        // opened with O_NOFOLLOW.
                        let pinned = dir
                            .pinned_path(std::ffi::OsStr::new(name))
                            .map_err(|e| io_failed(&shown, &e))?;
                        match NovaLock::acquire(&pinned, LOCK_WAIT) {
                            Ok(l) => Some(l),
                            Err(LockError::Busy { .. }) => {
                                return Err(Outcome::no(
                                    "skipped_lock_busy",
                                    format!("{} is held", shown.display()),
                                ));
                            }
                            Err(LockError::Io { source, .. }) => {
                                return Err(io_failed(&shown, &source));
                            }
                            Err(LockError::Symlink { .. }) => {
                                return Err(refused(
                                    ErrorKind::Symlink,
                                    format!(
                                        "{}: the lock file is a symbolic link",
                                        shown.display()
                                    ),
                                ));
                            }
                            Err(_) => {
                                return Err(refused(
                                    ErrorKind::Refused,
                                    format!("{}: not a lock file", shown.display()),
                                ));
                            }
                        }
                    }
                    Ok(Some(s)) if s.kind == Kind::Symlink => {
                        return Err(refused(
                            ErrorKind::Symlink,
                            format!(
                                "{}: Glance's lock file is a symbolic link; never locked or followed",
                                shown.display()
                            ),
                        ));
                    }
                    Ok(_) => None,
                    Err(e) => return Err(io_failed(&shown, &e)),
                }
            }
            None => None,
        };
        let db_path = dir.join("cache.db");
        let present = match dir.status_if_exists("cache.db") {
            Ok(s) => s.is_some(),
            Err(e) => return Err(io_failed(&db_path, &e)),
        };
        let db = if driver == Driver::Sqlite && root_entry && present {
            let fail = |e: rusqlite::Error| {
                let (kind, why) = sql_err(&db_path, &e);
                Outcome::failed(kind, why)
            };
            let conn =
                glance::open_db(dir, "cache.db", rusqlite::OpenFlags::SQLITE_OPEN_READ_WRITE)
                    .map_err(|e| match e {
                        glance::OpenDbError::Io(e) => io_failed(&db_path, &e),
                        glance::OpenDbError::Sql(e) => fail(e),
                    })?;
            conn.busy_timeout(Duration::from_secs(2)).map_err(fail)?;
            conn.execute_batch("BEGIN IMMEDIATE").map_err(fail)?;
            Some((db_path, conn))
        } else {
            None
        };
        Ok(GlanceLocked { _oslo: oslo, db })
    }

    /// Whether `cache.db` (when held) has a row for `id`.
    fn has_row(&self, id: &str) -> bool {
        self.db.as_ref().is_some_and(|(_, conn)| {
            conn.query_row(
                "SELECT 1 FROM cached_images WHERE image_id = ?1",
                [id],
                |_| Ok(()),
            )
            .is_ok()
        })
    }

    /// Delete `id`'s row (when `cache.db` is held) and the file (when
    /// given) as one unit: the row goes only if the file did (Glance's own
    /// delete does both; a row without its file is what Glance calls
    /// corrupt state). Returns whether a row was deleted.
    fn delete(self, id: &str, file: Option<Judged>) -> Result<bool, (ErrorKind, String)> {
        let Some((db, conn)) = self.db else {
            return match file {
                Some(f) => f.remove().map(|()| false),
                None => Err((
                    ErrorKind::NotFound,
                    "no cache.db to delete the row from".to_owned(),
                )),
            };
        };
        conn.execute("DELETE FROM cached_images WHERE image_id = ?1", [id])
            .map_err(|e| sql_err(&db, &e))?;
        if let Some(f) = file {
            // Rolled back (the connection closes without COMMIT) on failure.
            f.remove()?;
        }
        conn.execute_batch("COMMIT").map_err(|e| sql_err(&db, &e))?;
        Ok(true)
    }
}
