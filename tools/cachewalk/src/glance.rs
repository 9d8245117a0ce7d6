//! `cachewalk glance CACHE_DIR`: the Glance API node's image cache
//! (notes/caches.md section 2): every file of the root, `incomplete/`,
//! `invalid/` and `queue/`; the metadata of the sqlite driver (`cache.db`,
//! opened read-only with a busy timeout, never written) or of the xattr
//! driver (`user.hits`, atime); orphans both ways; where Glance's pruner
//! would rank each image and what it would prune for `--cache-max-size`; which
//! downloads are stalled. And `--queue ID`: a `queue/ID` marker for the
//! prefetcher, as `glance-cache-manage queue-image` makes it.

use filter::ErrorKind;
use serde::Serialize;
use serde_json::Value;
use std::collections::{BTreeMap, HashMap};
use std::ffi::{OsStr, OsString};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use system::files::refusal;
use system::tree::{Dir, Kind, Status};

/// Glance's default `image_cache_max_size` (10 GiB).
pub const DEFAULT_MAX_SIZE: u64 = 10 << 30;
/// Glance's default `image_cache_stall_time`.
pub const DEFAULT_STALL_TIME: u64 = 86_400;
/// oslo lock files the DB drivers leave in the cache root.
const LOCK_NAMES: &[&str] = &[
    "image_cache_db_init",
    "sqlite_centralized_migrate",
    "glance-cache",
    "glance-cache-clean",
    "glance-cache-prune",
];

/// Which metadata driver the cache uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum Driver {
    /// `cache.db` in the root.
    Sqlite,
    /// `user.hits` xattrs, atime as last access.
    Xattr,
    /// Rows in Glance's own database, reachable only through its API.
    CentralizedDb,
}

/// How to walk.
#[derive(Debug, Clone)]
pub struct Options {
    /// "Now", epoch seconds.
    pub now: i64,
    /// Prune target.
    pub max_size: u64,
    /// Age after which an `incomplete/` file is stalled.
    pub stall_time: u64,
    /// The driver, or None to detect it.
    pub driver: Option<Driver>,
    /// Hash the cached images and compare (`--verify`).
    pub verify: bool,
    /// Glance's images by id (`--images`).
    pub images: HashMap<String, crate::verify::ImageMeta>,
}

/// One record of the Glance cache.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Entry {
    /// `entry` or `summary`.
    pub record: &'static str,
    /// The openable path (the record's top-level `path`).
    #[serde(skip)]
    pub path: PathBuf,
    /// `glance`.
    pub cache: &'static str,
    /// CACHE_DIR as given.
    pub root: String,
    /// Relative to the root.
    pub rel_path: String,
    /// `active`, `incomplete`, `invalid`, `queued`, `metadata_db`, `lock`,
    /// `probe`, `unknown`.
    pub class: &'static str,
    /// The image id (the file name) for cache entries.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image_id: Option<String>,
    /// The metadata driver the walk found (or was told).
    pub driver: Option<Driver>,
    /// `st_dev` and `st_ino`: `remove` deletes only this very file.
    pub dev: u64,
    /// See `dev`.
    pub ino: u64,
    /// `st_size` (what Glance prunes by).
    pub size: u64,
    /// `st_blocks * 512`.
    pub allocated: u64,
    /// RFC 3339 UTC.
    pub mtime: String,
    /// RFC 3339 UTC.
    pub atime: String,
    /// `now - last access` (xattr: atime; sqlite: the row's
    /// `last_accessed`; otherwise mtime).
    pub age_s: i64,
    /// The metadata driver's hit count.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hits: Option<i64>,
    /// RFC 3339 UTC, from the driver.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_accessed: Option<String>,
    /// Whether the sqlite driver has a row for it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub db_row: Option<bool>,
    /// An xattr that could not be read.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub xattr_error: Option<String>,
    /// 1 for the entry Glance's pruner deletes first.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prune_rank: Option<u64>,
    /// Whether pruning to `--cache-max-size` deletes it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub would_prune: Option<bool>,
    /// An `incomplete/` file older than `--stall-time`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stalled: Option<bool>,
    /// `keep`, `orphan_file`, `orphan_row`, `orphan_temp`, `would_prune`,
    /// `corrupt`.
    pub verdict: &'static str,
    /// Why, as short codes.
    pub reasons: Vec<String>,
    /// The image's status in Glance (`--images`): a cached image that is
    /// deleted or deactivated there is worth knowing about.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image_status: Option<String>,
    /// The prune target the verdict was judged by (`--cache-max-size`):
    /// `remove` re-derives the verdict with it.
    pub max_size: u64,
    /// The stall time the verdict was judged by (`--stall-time`).
    pub stall_time: u64,
    /// `--verify`'s digests and verdict.
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    pub verification: Option<crate::verify::Verification>,
    /// Why this entry could not be looked into (a subdirectory that is a
    /// link: kind `symlink`): the record's `error` facet.
    #[serde(skip)]
    pub error: Option<(ErrorKind, String)>,
}

/// Why the walk could not run.
#[derive(Debug, thiserror::Error)]
pub enum GlanceError {
    /// The cache directory.
    #[error("{}: {source}", path.display())]
    Io {
        /// The path.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// `cache.db` could not be read.
    #[error("{}: {why}", path.display())]
    Db {
        /// The database.
        path: PathBuf,
        /// Why.
        why: String,
    },
}

/// A `cached_images` row, with its place in the pruner's order over every
/// row (1-based, before rows that name something else in the root are
/// left out).
#[derive(Debug, Clone, PartialEq)]
struct Row {
    id: String,
    last_accessed: f64,
    hits: i64,
    raw_rank: u64,
}

fn rfc(secs: i64) -> String {
    system::text::rfc3339_utc(secs, 0).unwrap_or_default()
}

/// The path sqlite is given for `name` in `dir`: the directory's current
/// real path ([`Dir::current_path`]). sqlite resolves every link of a path
/// itself (`/proc/self/fd/N` included), so with `SQLITE_OPEN_NOFOLLOW`
/// only a path without any link opens.
fn sqlite_path(dir: &Dir, name: &str) -> std::io::Result<PathBuf> {
    Ok(dir.current_path()?.join(name))
}

/// Why `cache.db` (or another sqlite file of the cache) was not opened.
#[derive(Debug)]
pub(crate) enum OpenDbError {
    /// Not there, a link, not a regular file, or changed while opening.
    Io(std::io::Error),
    /// sqlite's own error.
    Sql(rusqlite::Error),
}

/// Open `name` in `dir` with sqlite (`flags`, never creating it), never
/// through a link: a link there is refused (kind `symlink`), the last
/// component and every directory above it are opened by sqlite with
/// `SQLITE_OPEN_NOFOLLOW`, and the file it opened is checked to be the one
/// listed in `dir` before and after (kind `changed` otherwise).
pub(crate) fn open_db(
    dir: &Dir,
    name: &str,
    flags: rusqlite::OpenFlags,
) -> Result<rusqlite::Connection, OpenDbError> {
    use rusqlite::OpenFlags;
    let listed = dir.status(name).map_err(OpenDbError::Io)?;
    match listed.kind {
        Kind::File => {}
        Kind::Symlink => {
            return Err(OpenDbError::Io(refusal(
                ErrorKind::Symlink,
                "is a symbolic link; the cache's database is never opened through a link",
            )));
        }
        k => {
            return Err(OpenDbError::Io(refusal(
                ErrorKind::NotRegular,
                format!("is a {}, not a regular file", k.describe()),
            )));
        }
    }
    let path = sqlite_path(dir, name).map_err(OpenDbError::Io)?;
    let conn = rusqlite::Connection::open_with_flags(
        &path,
        (flags - OpenFlags::SQLITE_OPEN_CREATE) | OpenFlags::SQLITE_OPEN_NOFOLLOW,
    )
    .map_err(OpenDbError::Sql)?;
    // sqlite opened it by path: it must still be the file listed through
    // the handle, and the handle's directory still at that path.
    let same = std::fs::symlink_metadata(&path)
        .is_ok_and(|m| m.dev() == listed.id.dev && m.ino() == listed.id.ino)
        && dir.status(name).is_ok_and(|s| s.id == listed.id)
        && sqlite_path(dir, name).is_ok_and(|p| p == path);
    if !same {
        return Err(OpenDbError::Io(system::tree::changed(Kind::File)));
    }
    Ok(conn)
}

/// The rows of `cache.db`, opened read-only with a busy timeout, in one
/// pass ordered by image id, each with its place in the pruner's order
/// (`last_accessed`, then id: sqlite sorts, in its own bounded memory).
/// Rows go to `each`; reading stops at the first error.
fn read_db(root: &Dir, mut each: impl FnMut(Row) -> Result<(), String>) -> Result<(), GlanceError> {
    use rusqlite::OpenFlags;
    let path = root.join("cache.db");
    let err = |why: String| GlanceError::Db {
        path: path.clone(),
        why,
    };
    let conn = open_db(
        root,
        "cache.db",
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| match e {
        OpenDbError::Io(source) => GlanceError::Io {
            path: path.clone(),
            source,
        },
        OpenDbError::Sql(e) => err(e.to_string()),
    })?;
    conn.busy_timeout(std::time::Duration::from_secs(2))
        .map_err(|e| err(e.to_string()))?;
    let mut st = conn
        .prepare(
            "SELECT image_id, last_accessed, hits, \
             ROW_NUMBER() OVER (ORDER BY COALESCE(last_accessed, 0.0), image_id) \
             FROM cached_images ORDER BY image_id",
        )
        .map_err(|e| err(e.to_string()))?;
    let mut rows = st.query([]).map_err(|e| err(e.to_string()))?;
    let mut last: Option<String> = None;
    while let Some(r) = rows.next().map_err(|e| err(e.to_string()))? {
        let row = (|| {
            Ok::<_, rusqlite::Error>(Row {
                id: r.get::<_, String>(0)?,
                last_accessed: r.get::<_, Option<f64>>(1)?.unwrap_or(0.0),
                hits: r.get::<_, Option<i64>>(2)?.unwrap_or(0),
                raw_rank: r.get::<_, i64>(3)?.try_into().unwrap_or(0),
            })
        })()
        .map_err(|e| err(e.to_string()))?;
        // The output is merged by id in Rust's (byte) order: a database
        // that sorts otherwise (UTF-16) is an error, never a wrong order.
        if last.as_deref().is_some_and(|l| l > row.id.as_str()) {
            return Err(err("rows do not sort by their UTF-8 bytes".into()));
        }
        last = Some(row.id.clone());
        each(row).map_err(err)?;
    }
    Ok(())
}

/// Rows without files, kept out of memory: a file of their own, written
/// in id order and read back once.
struct Spool {
    file: std::io::BufWriter<std::fs::File>,
    count: u64,
}

impl Spool {
    fn new() -> std::io::Result<Spool> {
        Ok(Spool {
            file: std::io::BufWriter::new(tempfile::tempfile()?),
            count: 0,
        })
    }

    fn push(&mut self, r: &Row) -> std::io::Result<()> {
        use std::io::Write;
        let id = r.id.as_bytes();
        self.file.write_all(&(id.len() as u64).to_le_bytes())?;
        self.file.write_all(id)?;
        self.file.write_all(&r.last_accessed.to_le_bytes())?;
        self.file.write_all(&r.hits.to_le_bytes())?;
        self.file.write_all(&r.raw_rank.to_le_bytes())?;
        self.count += 1;
        Ok(())
    }

    fn reader(self) -> std::io::Result<SpoolReader> {
        use std::io::Seek;
        let mut f = self.file.into_inner().map_err(|e| e.into_error())?;
        f.rewind()?;
        Ok(SpoolReader {
            file: std::io::BufReader::new(f),
            left: self.count,
        })
    }
}

struct SpoolReader {
    file: std::io::BufReader<std::fs::File>,
    left: u64,
}

impl SpoolReader {
    fn next_row(&mut self) -> std::io::Result<Option<Row>> {
        use std::io::Read;
        if self.left == 0 {
            return Ok(None);
        }
        self.left -= 1;
        let mut w = [0u8; 8];
        let mut word = |f: &mut std::io::BufReader<std::fs::File>| -> std::io::Result<[u8; 8]> {
            f.read_exact(&mut w)?;
            Ok(w)
        };
        let len = u64::from_le_bytes(word(&mut self.file)?);
        let mut id = vec![0u8; usize::try_from(len).unwrap_or(0)];
        self.file.read_exact(&mut id)?;
        let last_accessed = f64::from_le_bytes(word(&mut self.file)?);
        let hits = i64::from_le_bytes(word(&mut self.file)?);
        let raw_rank = u64::from_le_bytes(word(&mut self.file)?);
        Ok(Some(Row {
            id: String::from_utf8_lossy(&id).into_owned(),
            last_accessed,
            hits,
            raw_rank,
        }))
    }
}

/// One listed directory entry: its name as found and as text.
struct Listed {
    name: OsString,
    text: String,
    st: Status,
}

/// The entries of `dir`, by name, each `lstat`ed through the handle (one
/// that vanished since the listing: nothing to say).
fn list(dir: &Dir) -> std::io::Result<Vec<Listed>> {
    let mut v: Vec<Listed> = dir
        .names()?
        .into_iter()
        .filter_map(|name| {
            let st = dir.status(&name).ok()?;
            Some(Listed {
                text: name.to_string_lossy().into_owned(),
                name,
                st,
            })
        })
        .collect();
    v.sort_by(|a, b| a.text.cmp(&b.text));
    Ok(v)
}

fn entry(root: &Path, rel: &str, class: &'static str, m: &Status, now: i64) -> Entry {
    Entry {
        record: "entry",
        path: root.join(rel),
        cache: "glance",
        root: root.to_string_lossy().into_owned(),
        rel_path: rel.to_owned(),
        class,
        image_id: None,
        driver: None,
        dev: m.id.dev,
        ino: m.id.ino,
        size: m.size,
        allocated: m.allocated,
        mtime: rfc(m.mtime.0),
        atime: rfc(m.atime.0),
        age_s: now - m.mtime.0,
        hits: None,
        last_accessed: None,
        db_row: None,
        xattr_error: None,
        prune_rank: None,
        would_prune: None,
        stalled: None,
        verdict: "keep",
        reasons: Vec::new(),
        image_status: None,
        max_size: 0,
        stall_time: 0,
        verification: None,
        error: None,
    }
}

/// `user.hits` of `name` in `dir`, not following it (the directory
/// reached through its pinned handle).
fn hits_xattr(dir: &Dir, name: &OsStr) -> std::io::Result<Option<Vec<u8>>> {
    system::xattr::get(&dir.pinned_path(name)?, "user.hits")
}

/// The driver from the evidence: `cache.db` (a link there too: it is then
/// refused, never read) → sqlite; a `user.hits` on some cached file →
/// xattr; else unknown (centralized_db, or an empty cache).
fn detect(root: &Dir, files: &[Listed]) -> Option<Driver> {
    if files
        .iter()
        .any(|l| l.text == "cache.db" && matches!(l.st.kind, Kind::File | Kind::Symlink))
    {
        return Some(Driver::Sqlite);
    }
    files
        .iter()
        .filter(|l| l.st.kind == Kind::File)
        .any(|l| matches!(hits_xattr(root, &l.name), Ok(Some(_))))
        .then_some(Driver::Xattr)
}

/// A walk of the cache, streamed: the files' entries are in memory (they
/// were listed), the rows without files are read back from a spool in id
/// order and merged in, so a `cache.db` of any size walks in constant
/// memory. Entries come sorted by `rel_path`; then [`Walk::summary`].
pub struct Walk<'a> {
    opts: &'a Options,
    root: PathBuf,
    driver: Option<Driver>,
    head: std::iter::Peekable<std::vec::IntoIter<Entry>>,
    rows: Option<SpoolReader>,
    pending: Option<Row>,
    /// Raw ranks of rows that name something else in the root, sorted.
    excluded: Vec<u64>,
    /// Ranks of the active files with rows, sorted, and the sum of the
    /// sizes of those before each (the pruner's progress).
    active_ranks: Vec<(u64, u64)>,
    counted: u64,
    pruned: (usize, u64),
}

impl Walk<'_> {
    /// The driver the walk found (or was told).
    pub fn driver(&self) -> Option<Driver> {
        self.driver
    }

    /// The `summary` record (complete once every entry was taken).
    pub fn summary(&self) -> Value {
        serde_json::json!({
            "record": "summary",
            "cache": "glance",
            "root": self.root.to_string_lossy(),
            "driver": self.driver,
            "size": self.counted,
            "max_size": self.opts.max_size,
            "over_max_size": self.counted > self.opts.max_size,
            "would_prune_count": self.pruned.0,
            "would_prune_bytes": self.pruned.1,
        })
    }

    /// The pruner's rank of a row: its place among the rows Glance's
    /// pruner orders (those naming another root entry left out).
    fn rank(&self, raw: u64) -> u64 {
        raw - self.excluded.partition_point(|x| *x < raw) as u64
    }

    /// Whether the pruner still deletes at rank `k`: the cache is over
    /// `max_size` after every active file ranked before it went.
    fn prunes_at(&self, k: u64) -> bool {
        let i = self.active_ranks.partition_point(|(r, _)| *r < k);
        let before = if i == 0 {
            0
        } else {
            self.active_ranks[i - 1].1
        };
        self.counted.saturating_sub(before) > self.opts.max_size
    }

    fn orphan_row(&self, r: Row) -> Entry {
        let la = r.last_accessed as i64;
        let rank = self.rank(r.raw_rank);
        let mut e = Entry {
            record: "entry",
            path: self.root.join(&r.id),
            cache: "glance",
            root: self.root.to_string_lossy().into_owned(),
            rel_path: r.id.clone(),
            class: "active",
            image_id: Some(r.id),
            driver: self.driver,
            dev: 0,
            ino: 0,
            size: 0,
            allocated: 0,
            mtime: String::new(),
            atime: String::new(),
            age_s: self.opts.now - la,
            hits: Some(r.hits),
            last_accessed: Some(rfc(la)),
            db_row: Some(true),
            xattr_error: None,
            prune_rank: Some(rank),
            would_prune: Some(self.prunes_at(rank)),
            stalled: None,
            verdict: "orphan_row",
            reasons: vec!["no_file_for_cache_db_row".into()],
            image_status: None,
            max_size: self.opts.max_size,
            stall_time: self.opts.stall_time,
            verification: None,
            error: None,
        };
        glance_status(&mut e, self.opts);
        e
    }

    fn next_row(&mut self) -> Result<Option<Row>, GlanceError> {
        if self.pending.is_none()
            && let Some(rows) = &mut self.rows
        {
            match rows.next_row() {
                Ok(Some(r)) => self.pending = Some(r),
                Ok(None) => self.rows = None,
                Err(source) => {
                    self.rows = None;
                    return Err(GlanceError::Io {
                        path: std::env::temp_dir(),
                        source,
                    });
                }
            }
        }
        Ok(self.pending.take())
    }
}

impl Iterator for Walk<'_> {
    type Item = Result<Entry, GlanceError>;

    fn next(&mut self) -> Option<Self::Item> {
        let row = match self.next_row() {
            Ok(r) => r,
            Err(e) => return Some(Err(e)),
        };
        // Rows sort before files of the same rel_path (as they were
        // listed before the subdirectories' files).
        let head_first = match (&row, self.head.peek()) {
            (Some(r), Some(h)) => r.id.as_str() > h.rel_path.as_str(),
            (Some(_), None) => false,
            (None, _) => true,
        };
        let e = match row {
            Some(r) if !head_first => self.orphan_row(r),
            r => {
                self.pending = r;
                self.head.next()?
            }
        };
        if e.would_prune == Some(true) {
            self.pruned.0 += 1;
            self.pruned.1 += e.size;
        }
        Some(Ok(e))
    }
}

/// `--images`: the image's status in Glance, a reason when not active.
fn glance_status(e: &mut Entry, opts: &Options) {
    if let Some(m) = e.image_id.as_ref().and_then(|id| opts.images.get(id)) {
        e.image_status = m.status.clone();
        if let Some(s) = m.status.as_deref().filter(|s| *s != "active") {
            e.reasons.push(format!("glance_status_{s}"));
        }
    }
}

fn io_err(path: &Path) -> impl Fn(std::io::Error) -> GlanceError + '_ {
    move |source| GlanceError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Walk the cache (module docs); entries sorted by `rel_path`, then the
/// `summary`, all in memory (see [`stream`] for a large `cache.db`).
pub fn walk(root: &Path, opts: &Options) -> Result<(Vec<Entry>, Value), GlanceError> {
    let mut w = stream(root, opts)?;
    let entries = w.by_ref().collect::<Result<Vec<_>, _>>()?;
    Ok((entries, w.summary()))
}

/// Open the cache root (links in the operator's path followed once) and
/// walk it.
pub fn stream<'a>(root: &Path, opts: &'a Options) -> Result<Walk<'a>, GlanceError> {
    let dir = Dir::open(root).map_err(io_err(root))?;
    stream_in(&dir, opts)
}

/// Walk the cache whose root is the open `dir` (module docs): everything
/// through the handle, nothing ever through a link. A subdirectory that is
/// a link is not listed: its root entry says so (kind `symlink`).
pub fn stream_in<'a>(dir: &Dir, opts: &'a Options) -> Result<Walk<'a>, GlanceError> {
    let root = dir.path().to_path_buf();
    let top = list(dir).map_err(io_err(&root))?;
    let driver = opts.driver.or_else(|| detect(dir, &top));

    let mut entries = Vec::new();
    // What Glance counts towards the size: regular files directly in the
    // root; sqlite skips cache.db, centralized_db any *.db, xattr nothing.
    let mut counted: u64 = 0;
    let mut active: HashMap<&str, usize> = HashMap::new();
    for l in &top {
        let (name, m) = (&l.text, &l.st);
        if m.kind == Kind::Dir {
            continue;
        }
        let is_file = m.kind == Kind::File;
        let class: &'static str = if name == "cache.db" || name == "cache.db-journal" {
            "metadata_db"
        } else if name == "checkme" {
            "probe"
        } else if LOCK_NAMES.contains(&name.as_str()) {
            "lock"
        } else if is_file {
            "active"
        } else {
            "unknown"
        };
        let skipped_by_size = match driver {
            Some(Driver::Sqlite) => name == "cache.db",
            Some(Driver::CentralizedDb) => name.ends_with(".db"),
            _ => false,
        };
        if is_file && !skipped_by_size {
            counted += m.size;
        }
        let mut e = entry(&root, name, class, m, opts.now);
        if class == "active" {
            e.image_id = Some(name.clone());
            match driver {
                Some(Driver::Sqlite) => {
                    // Rows are matched below.
                    e.db_row = Some(false);
                    active.insert(name.as_str(), entries.len());
                }
                Some(Driver::Xattr) => {
                    match hits_xattr(dir, &l.name) {
                        Ok(Some(v)) => {
                            e.hits = String::from_utf8_lossy(&v).trim().parse().ok();
                        }
                        Ok(None) => e.xattr_error = Some("no user.hits".into()),
                        Err(err) => e.xattr_error = Some(err.to_string()),
                    }
                    e.last_accessed = Some(rfc(m.atime.0));
                    e.age_s = opts.now - m.atime.0;
                }
                _ => {}
            }
        } else if class != "metadata_db" {
            e.reasons.push(format!("{class}_file"));
            if m.kind == Kind::Symlink {
                e.reasons.push("symlink".into());
            }
        }
        entries.push(e);
    }

    // The rows, in one pass: those of active files attach to them, those
    // naming another root entry are left out of the pruner's order, the
    // rest (rows without files) are spooled.
    let mut excluded = Vec::new();
    let mut spool = None;
    let has_db = top.iter().any(|l| l.text == "cache.db");
    if driver == Some(Driver::Sqlite) && has_db {
        let names: std::collections::HashSet<&str> = top.iter().map(|l| l.text.as_str()).collect();
        let mut s = Spool::new().map_err(io_err(&std::env::temp_dir()))?;
        let mut matched: Vec<(usize, Row)> = Vec::new();
        read_db(dir, |row| {
            if let Some(i) = active.get(row.id.as_str()) {
                matched.push((*i, row));
            } else if names.contains(row.id.as_str()) {
                excluded.push(row.raw_rank);
            } else {
                s.push(&row).map_err(|e| e.to_string())?;
            }
            Ok(())
        })?;
        excluded.sort_unstable();
        for (i, r) in matched {
            let e = &mut entries[i];
            e.db_row = Some(true);
            e.hits = Some(r.hits);
            let la = r.last_accessed as i64;
            e.last_accessed = Some(rfc(la));
            e.age_s = opts.now - la;
            e.prune_rank = Some(r.raw_rank - excluded.partition_point(|x| *x < r.raw_rank) as u64);
        }
        spool = Some(s);
    }
    for e in &mut entries {
        if e.db_row == Some(false) {
            e.verdict = "orphan_file";
            e.reasons.push("no_cache_db_row".into());
        }
    }
    let active_ranks = match driver {
        Some(Driver::Sqlite) => prune_sqlite(&mut entries, counted, opts.max_size),
        Some(Driver::Xattr) => {
            prune_xattr(&mut entries, counted, opts.max_size);
            Vec::new()
        }
        _ => Vec::new(),
    };

    for (sub, class) in SUBDIRS {
        match dir.subdir(sub) {
            Ok(d) => {
                for l in list(&d).map_err(io_err(d.path()))? {
                    entries.push(sub_entry(&root, sub, class, l.text, &l.st, opts));
                }
            }
            Err(e)
                if e.kind() == std::io::ErrorKind::NotFound
                    || ErrorKind::from_io(&e) == ErrorKind::NotRegular => {}
            Err(err) => {
                // Never listed through: the root entry says why.
                let kind = ErrorKind::from_io(&err);
                let why = format!("{sub}/ not listed: {err}");
                match entries.iter_mut().find(|e| e.rel_path == sub) {
                    Some(e) => e.error = Some((kind, why)),
                    None => {
                        let st = dir.status(sub).map_err(io_err(&root.join(sub)))?;
                        let mut e = entry(&root, sub, "unknown", &st, opts.now);
                        e.reasons.push("unknown_file".into());
                        e.error = Some((kind, why));
                        entries.push(e);
                    }
                }
            }
        }
    }
    entries.sort_by(|a, b| a.rel_path.cmp(&b.rel_path));
    for e in &mut entries {
        e.driver = driver;
        e.max_size = opts.max_size;
        e.stall_time = opts.stall_time;
        glance_status(e, opts);
        // Glance's cache holds the image's exact bytes: always comparable.
        if opts.verify
            && e.class == "active"
            && !e.mtime.is_empty()
            && e.rel_path == e.image_id.clone().unwrap_or_default()
        {
            let meta = e.image_id.as_ref().and_then(|id| opts.images.get(id));
            let v = verify_entry(dir, e, meta);
            if v.verified == Value::Bool(false) {
                let was = format!("was:{}", e.verdict);
                e.reasons = v.mismatch.iter().map(|m| format!("mismatch:{m}")).collect();
                e.reasons.push(was);
                e.verdict = "corrupt";
            }
            e.verification = Some(v);
        }
    }
    let rows = match spool {
        Some(s) => Some(s.reader().map_err(io_err(&std::env::temp_dir()))?),
        None => None,
    };
    Ok(Walk {
        opts,
        root,
        driver,
        head: entries.into_iter().peekable(),
        rows,
        pending: None,
        excluded,
        active_ranks,
        counted,
        pruned: (0, 0),
    })
}

/// Hash the very file listed: opened through the root's handle without
/// following it, checked against what was listed, then read by its own
/// handle.
fn verify_entry(
    dir: &Dir,
    e: &Entry,
    meta: Option<&crate::verify::ImageMeta>,
) -> crate::verify::Verification {
    let opened = dir.open_file(&e.rel_path).and_then(|f| {
        let listed = dir.status(&e.rel_path)?;
        let same = listed.id.dev == e.dev && listed.id.ino == e.ino;
        if !same {
            return Err(system::tree::changed(listed.kind));
        }
        system::tree::check_same(&f, &listed)?;
        Ok(f)
    });
    match opened {
        Ok(f) => crate::verify::verify(
            &system::tree::fd_path(&f),
            &crate::verify::Expect {
                glance: meta,
                ..crate::verify::Expect::default()
            },
        ),
        Err(err) => crate::verify::Verification {
            error: Some(err.to_string()),
            ..crate::verify::Verification::default()
        },
    }
}

/// The subdirectories and the class of their files.
const SUBDIRS: [(&str, &str); 3] = [
    ("incomplete", "incomplete"),
    ("invalid", "invalid"),
    ("queue", "queued"),
];

/// The entry of `sub/name`: an `incomplete/` file is stalled (Glance's
/// cleaner deletes it) past the stall time, an `invalid/` one is deleted
/// at once, a `queue/` marker is kept. Anything but a regular file there
/// (a link above all) is a finding, kept.
fn sub_entry(
    root: &Path,
    sub: &str,
    class: &'static str,
    name: String,
    m: &Status,
    opts: &Options,
) -> Entry {
    let rel = format!("{sub}/{name}");
    let mut e = entry(root, &rel, class, m, opts.now);
    e.image_id = Some(name);
    match (class, m.kind) {
        (_, Kind::Symlink) => e.reasons.push("symlink".into()),
        (_, Kind::Dir | Kind::Special) => e.reasons.push("not_regular_file".into()),
        ("incomplete", _) => {
            let stalled = e.age_s > opts.stall_time as i64;
            e.stalled = Some(stalled);
            if stalled {
                e.verdict = "orphan_temp";
                e.reasons
                    .push(format!("older_than_stall_time_{}s", opts.stall_time));
            } else {
                e.reasons.push("download_in_progress".into());
            }
        }
        ("invalid", _) => {
            // Glance's cleaner deletes these at once.
            e.verdict = "orphan_temp";
            e.reasons.push("failed_download".into());
        }
        _ => e.reasons.push("queued_for_prefetch".into()),
    }
    e.driver = opts.driver;
    e.max_size = opts.max_size;
    e.stall_time = opts.stall_time;
    e
}

/// Split a record's `rel_path` into the directory it names (None: the
/// root) and one plain name: `<name>` or `<incomplete|invalid|queue>/<name>`,
/// nothing else (a `..`, an empty or a deeper path is refused).
pub fn split_rel(rel: &str) -> Option<(Option<&'static str>, &str)> {
    let plain = |n: &str| !n.is_empty() && n != "." && n != ".." && !n.contains(['/', '\0']);
    match rel.split_once('/') {
        None => plain(rel).then_some((None, rel)),
        Some((sub, name)) => {
            let sub = SUBDIRS.iter().find(|(d, _)| *d == sub)?.0;
            plain(name).then_some((Some(sub), name))
        }
    }
}

/// What the walk would say now about the entry at `rel` in the cache
/// whose root is `dir` (None: no such entry), for `remove`'s re-check. A
/// file of a subdirectory is judged by itself; a root entry by a whole
/// walk, since the pruner's choice depends on every other entry (with the
/// sqlite driver, call this while holding `cache.db`'s write lock, so no
/// hit or row changes meanwhile). A subdirectory that is a link is an
/// error (kind `symlink`).
pub fn entry_now(dir: &Dir, rel: &str, opts: &Options) -> Result<Option<Entry>, GlanceError> {
    let Some((sub, name)) = split_rel(rel) else {
        return Ok(None);
    };
    if let Some(sub) = sub {
        let class = SUBDIRS
            .iter()
            .find(|(d, _)| *d == sub)
            .map_or("unknown", |(_, c)| *c);
        let Some(d) = dir.subdir_if_exists(sub).map_err(io_err(&dir.join(sub)))? else {
            return Ok(None);
        };
        return Ok(d
            .status_if_exists(name)
            .map_err(io_err(&d.join(name)))?
            .map(|m| sub_entry(dir.path(), sub, class, name.to_owned(), &m, opts)));
    }
    for e in stream_in(dir, opts)? {
        let e = e?;
        if e.rel_path == rel {
            return Ok(Some(e));
        }
    }
    Ok(None)
}

/// Rank the active files with rows as Glance's sqlite pruner picks them
/// (by the row's `last_accessed`, then id: the rank was read with the
/// row; a file without a row is never picked), and mark those it deletes
/// to bring `counted` under `max` (section 2.5). Returns the ranks of the
/// files with the sum of the sizes before each (rows without files are
/// judged from them as they stream).
fn prune_sqlite(entries: &mut [Entry], counted: u64, max: u64) -> Vec<(u64, u64)> {
    let mut order: Vec<(u64, usize)> = entries
        .iter()
        .enumerate()
        .filter(|(_, e)| e.db_row == Some(true))
        .filter_map(|(i, e)| Some((e.prune_rank?, i)))
        .collect();
    order.sort_unstable();
    let mut current = counted;
    let mut sum = 0u64;
    let mut out = Vec::with_capacity(order.len());
    for (rank, i) in order {
        let e = &mut entries[i];
        let prune = current > max;
        if prune {
            current = current.saturating_sub(e.size);
        }
        sum = sum.saturating_add(e.size);
        out.push((rank, sum));
        mark(e, prune, max);
    }
    out
}

fn mark(e: &mut Entry, prune: bool, max: u64) {
    e.would_prune = Some(prune);
    if prune && e.verdict == "keep" {
        e.verdict = "would_prune";
        e.reasons.push(format!("lru_over_max_size_{max}"));
    }
}

/// Rank as Glance's xattr pruner: every regular root file by (atime,
/// size, path), and mark those it deletes to bring `counted` under `max`.
fn prune_xattr(entries: &mut [Entry], counted: u64, max: u64) {
    let mut order: Vec<(f64, u64, String, usize)> = Vec::new();
    for (i, e) in entries.iter().enumerate() {
        if e.record == "entry" && !e.mtime.is_empty() && !e.rel_path.contains('/') {
            let at = system::text::parse_time(&e.atime).unwrap_or(0) as f64;
            order.push((at, e.size, e.rel_path.clone(), i));
        }
    }
    order.sort_by(|a, b| {
        a.0.partial_cmp(&b.0)
            .unwrap_or(std::cmp::Ordering::Equal)
            .then(a.1.cmp(&b.1))
            .then(a.2.cmp(&b.2))
    });
    let mut current = counted;
    let mut prune_sizes: BTreeMap<usize, bool> = BTreeMap::new();
    for (rank, (_, _, _, i)) in order.iter().enumerate() {
        let e = &mut entries[*i];
        e.prune_rank = Some(rank as u64 + 1);
        let prune = current > max;
        if prune {
            current = current.saturating_sub(e.size);
        }
        prune_sizes.insert(*i, prune);
    }
    for (i, prune) in prune_sizes {
        mark(&mut entries[i], prune, max);
    }
}

/// Why an image could not be queued.
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    /// Already cached, being cached, or queued (Glance skips these too).
    #[error("{id}: already {state}")]
    Already {
        /// The image id.
        id: String,
        /// `cached`, `being cached`, `queued`.
        state: &'static str,
    },
    /// Not a plain image id.
    #[error("{0:?}: not an image id (a plain file name is needed)")]
    BadId(String),
    /// Writing the marker failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The marker.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
}

/// Queue `id` for Glance's prefetcher: an empty `queue/<id>`, as
/// `glance-cache-manage queue-image` makes it. Everything through the
/// root's handle: a `queue/` (or `incomplete/`) that is a link is refused
/// (kind `symlink`), never written through.
pub fn queue(root: &Path, id: &str) -> Result<PathBuf, QueueError> {
    if id.is_empty() || id.contains('/') || id == "." || id == ".." || id.contains('\0') {
        return Err(QueueError::BadId(id.to_owned()));
    }
    let already = |state| QueueError::Already {
        id: id.to_owned(),
        state,
    };
    let at = |path: PathBuf| move |source| QueueError::Io { path, source };
    let dir = Dir::open(root).map_err(at(root.to_path_buf()))?;
    if dir
        .status_if_exists(id)
        .map_err(at(root.join(id)))?
        .is_some()
    {
        return Err(already("cached"));
    }
    if let Some(inc) = dir
        .subdir_if_exists("incomplete")
        .map_err(at(root.join("incomplete")))?
        && inc
            .status_if_exists(id)
            .map_err(at(inc.join(id)))?
            .is_some()
    {
        return Err(already("being cached"));
    }
    let path = root.join("queue").join(id);
    let q = dir.create_subdir("queue").map_err(at(root.join("queue")))?;
    match q.create_new(id, 0o666) {
        Ok(_) => Ok(path),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Err(already("queued")),
        Err(e) => Err(at(path)(e)),
    }
}
