//! `cachewalk glance CACHE_DIR`: the Glance API node's image cache
//! (notes/caches.md section 2): every file of the root, `incomplete/`,
//! `invalid/` and `queue/`; the metadata of the sqlite driver (`cache.db`,
//! opened read-only with a busy timeout, never written) or of the xattr
//! driver (`user.hits`, atime); orphans both ways; where Glance's pruner
//! would rank each image and what it would prune for `--max-size`; which
//! downloads are stalled. And `--queue ID`: a `queue/ID` marker for the
//! prefetcher, as `glance-cache-manage queue-image` makes it.

use serde::Serialize;
use serde_json::Value;
use std::collections::{BTreeMap, HashMap};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

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
    /// Whether pruning to `--max-size` deletes it.
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
    /// The prune target the verdict was judged by (`--max-size`):
    /// `remove` re-derives the verdict with it.
    pub max_size: u64,
    /// The stall time the verdict was judged by (`--stall-time`).
    pub stall_time: u64,
    /// `--verify`'s digests and verdict.
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    pub verification: Option<crate::verify::Verification>,
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

/// A `cached_images` row.
#[derive(Debug, Clone, PartialEq)]
struct Row {
    last_accessed: f64,
    hits: i64,
}

fn rfc(secs: i64) -> String {
    common::text::rfc3339_utc(secs, 0).unwrap_or_default()
}

/// The rows of `cache.db`, opened read-only with a busy timeout.
fn read_db(path: &Path) -> Result<HashMap<String, Row>, GlanceError> {
    use rusqlite::{Connection, OpenFlags};
    let err = |why: String| GlanceError::Db {
        path: path.to_path_buf(),
        why,
    };
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| err(e.to_string()))?;
    conn.busy_timeout(std::time::Duration::from_secs(2))
        .map_err(|e| err(e.to_string()))?;
    let mut st = conn
        .prepare("SELECT image_id, last_accessed, hits FROM cached_images")
        .map_err(|e| err(e.to_string()))?;
    let rows = st
        .query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                Row {
                    last_accessed: r.get::<_, Option<f64>>(1)?.unwrap_or(0.0),
                    hits: r.get::<_, Option<i64>>(2)?.unwrap_or(0),
                },
            ))
        })
        .map_err(|e| err(e.to_string()))?;
    let mut out = HashMap::new();
    for r in rows {
        let (id, row) = r.map_err(|e| err(e.to_string()))?;
        out.insert(id, row);
    }
    Ok(out)
}

fn list(dir: &Path) -> Vec<(String, std::fs::Metadata)> {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut v: Vec<(String, std::fs::Metadata)> = rd
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            // Vanished since the listing: nothing to say.
            std::fs::symlink_metadata(e.path()).ok().map(|m| (name, m))
        })
        .collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

fn entry(root: &Path, rel: &str, class: &'static str, m: &std::fs::Metadata, now: i64) -> Entry {
    Entry {
        record: "entry",
        path: root.join(rel),
        cache: "glance",
        root: root.to_string_lossy().into_owned(),
        rel_path: rel.to_owned(),
        class,
        image_id: None,
        driver: None,
        dev: m.dev(),
        ino: m.ino(),
        size: m.len(),
        allocated: m.blocks().saturating_mul(512),
        mtime: rfc(m.mtime()),
        atime: rfc(m.atime()),
        age_s: now - m.mtime(),
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
    }
}

/// The driver from the evidence: `cache.db` → sqlite; a `user.hits` on
/// some cached file → xattr; else unknown (centralized_db, or an empty
/// cache).
fn detect(root: &Path, files: &[(String, std::fs::Metadata)]) -> Option<Driver> {
    if root.join("cache.db").is_file() {
        return Some(Driver::Sqlite);
    }
    files
        .iter()
        .filter(|(_, m)| m.file_type().is_file())
        .any(|(n, _)| matches!(common::xattr::get(&root.join(n), "user.hits"), Ok(Some(_))))
        .then_some(Driver::Xattr)
}

/// Walk the cache (module docs); entries sorted by `rel_path`, then the
/// `summary`.
pub fn walk(root: &Path, opts: &Options) -> Result<(Vec<Entry>, Value), GlanceError> {
    let meta = std::fs::metadata(root).map_err(|source| GlanceError::Io {
        path: root.to_path_buf(),
        source,
    })?;
    if !meta.is_dir() {
        return Err(GlanceError::Io {
            path: root.to_path_buf(),
            source: std::io::Error::new(std::io::ErrorKind::NotADirectory, "not a directory"),
        });
    }
    let top = list(root);
    let driver = opts.driver.or_else(|| detect(root, &top));
    let rows = if driver == Some(Driver::Sqlite) && root.join("cache.db").is_file() {
        Some(read_db(&root.join("cache.db"))?)
    } else {
        None
    };

    let mut entries = Vec::new();
    // What Glance counts towards the size: regular files directly in the
    // root; sqlite skips cache.db, centralized_db any *.db, xattr nothing.
    let mut counted: u64 = 0;
    for (name, m) in &top {
        let ft = m.file_type();
        if ft.is_dir() {
            continue;
        }
        let class: &'static str = if name == "cache.db" || name == "cache.db-journal" {
            "metadata_db"
        } else if name == "checkme" {
            "probe"
        } else if LOCK_NAMES.contains(&name.as_str()) {
            "lock"
        } else if ft.is_file() {
            "active"
        } else {
            "unknown"
        };
        let skipped_by_size = match driver {
            Some(Driver::Sqlite) => name == "cache.db",
            Some(Driver::CentralizedDb) => name.ends_with(".db"),
            _ => false,
        };
        if ft.is_file() && !skipped_by_size {
            counted += m.len();
        }
        let mut e = entry(root, name, class, m, opts.now);
        if class == "active" {
            e.image_id = Some(name.clone());
            match driver {
                Some(Driver::Sqlite) => {
                    let row = rows.as_ref().and_then(|r| r.get(name));
                    e.db_row = Some(row.is_some());
                    if let Some(r) = row {
                        e.hits = Some(r.hits);
                        let la = r.last_accessed as i64;
                        e.last_accessed = Some(rfc(la));
                        e.age_s = opts.now - la;
                    } else {
                        e.verdict = "orphan_file";
                        e.reasons.push("no_cache_db_row".into());
                    }
                }
                Some(Driver::Xattr) => {
                    match common::xattr::get(&root.join(name), "user.hits") {
                        Ok(Some(v)) => {
                            e.hits = String::from_utf8_lossy(&v).trim().parse().ok();
                        }
                        Ok(None) => e.xattr_error = Some("no user.hits".into()),
                        Err(err) => e.xattr_error = Some(err.to_string()),
                    }
                    e.last_accessed = Some(rfc(m.atime()));
                    e.age_s = opts.now - m.atime();
                }
                _ => {}
            }
        } else if class != "metadata_db" {
            e.reasons.push(format!("{class}_file"));
        }
        entries.push(e);
    }
    // Rows without files.
    if let Some(rows) = &rows {
        let names: std::collections::HashSet<&str> = top.iter().map(|(n, _)| n.as_str()).collect();
        let mut missing: Vec<(&String, &Row)> = rows
            .iter()
            .filter(|(id, _)| !names.contains(id.as_str()))
            .collect();
        missing.sort_by(|a, b| a.0.cmp(b.0));
        for (id, r) in missing {
            let la = r.last_accessed as i64;
            entries.push(Entry {
                record: "entry",
                path: root.join(id),
                cache: "glance",
                root: root.to_string_lossy().into_owned(),
                rel_path: id.clone(),
                class: "active",
                image_id: Some(id.clone()),
                driver: None,
                dev: 0,
                ino: 0,
                size: 0,
                allocated: 0,
                mtime: String::new(),
                atime: String::new(),
                age_s: opts.now - la,
                hits: Some(r.hits),
                last_accessed: Some(rfc(la)),
                db_row: Some(true),
                xattr_error: None,
                prune_rank: None,
                would_prune: None,
                stalled: None,
                verdict: "orphan_row",
                reasons: vec!["no_file_for_cache_db_row".into()],
                image_status: None,
                max_size: 0,
                stall_time: 0,
                verification: None,
            });
        }
    }
    prune_plan(&mut entries, driver, counted, opts.max_size, rows.as_ref());

    for (sub, class) in SUBDIRS {
        for (name, m) in list(&root.join(sub)) {
            entries.push(sub_entry(root, sub, class, name, &m, opts));
        }
    }
    entries.sort_by(|a, b| a.rel_path.cmp(&b.rel_path));
    for e in &mut entries {
        e.driver = driver;
        e.max_size = opts.max_size;
        e.stall_time = opts.stall_time;
        if let Some(m) = e.image_id.as_ref().and_then(|id| opts.images.get(id)) {
            e.image_status = m.status.clone();
            if let Some(s) = m.status.as_deref().filter(|s| *s != "active") {
                e.reasons.push(format!("glance_status_{s}"));
            }
        }
        // Glance's cache holds the image's exact bytes: always comparable.
        if opts.verify
            && e.class == "active"
            && !e.mtime.is_empty()
            && e.rel_path == e.image_id.clone().unwrap_or_default()
        {
            let meta = e.image_id.as_ref().and_then(|id| opts.images.get(id));
            let v = crate::verify::verify(
                &e.path,
                &crate::verify::Expect {
                    glance: meta,
                    ..crate::verify::Expect::default()
                },
            );
            if v.verified == Value::Bool(false) {
                let was = format!("was:{}", e.verdict);
                e.reasons = v.mismatch.iter().map(|m| format!("mismatch:{m}")).collect();
                e.reasons.push(was);
                e.verdict = "corrupt";
            }
            e.verification = Some(v);
        }
    }
    let summary = serde_json::json!({
        "record": "summary",
        "cache": "glance",
        "root": root.to_string_lossy(),
        "driver": driver,
        "size": counted,
        "max_size": opts.max_size,
        "over_max_size": counted > opts.max_size,
        "would_prune_count": entries.iter().filter(|e| e.would_prune == Some(true)).count(),
        "would_prune_bytes": entries.iter().filter(|e| e.would_prune == Some(true)).map(|e| e.size).sum::<u64>(),
    });
    Ok((entries, summary))
}

/// The subdirectories and the class of their files.
const SUBDIRS: [(&str, &str); 3] = [
    ("incomplete", "incomplete"),
    ("invalid", "invalid"),
    ("queue", "queued"),
];

/// The entry of `sub/name`: an `incomplete/` file is stalled (Glance's
/// cleaner deletes it) past the stall time, an `invalid/` one is deleted
/// at once, a `queue/` marker is kept.
fn sub_entry(
    root: &Path,
    sub: &str,
    class: &'static str,
    name: String,
    m: &std::fs::Metadata,
    opts: &Options,
) -> Entry {
    let rel = format!("{sub}/{name}");
    let mut e = entry(root, &rel, class, m, opts.now);
    e.image_id = Some(name);
    match class {
        "incomplete" => {
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
        "invalid" => {
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

/// What the walk would say now about the entry at `rel` (None: no such
/// entry), for `remove`'s re-check. A file of a subdirectory is judged by
/// itself; a root entry by a whole walk, since the pruner's choice
/// depends on every other entry (with the sqlite driver, call this while
/// holding `cache.db`'s write lock, so no hit or row changes meanwhile).
pub fn entry_now(root: &Path, rel: &str, opts: &Options) -> Result<Option<Entry>, GlanceError> {
    if let Some((sub, name)) = rel.split_once('/') {
        let Some((_, class)) = SUBDIRS.iter().find(|(d, _)| *d == sub) else {
            return Ok(None);
        };
        return Ok(std::fs::symlink_metadata(root.join(rel))
            .ok()
            .map(|m| sub_entry(root, sub, class, name.to_owned(), &m, opts)));
    }
    let (entries, _) = walk(root, opts)?;
    Ok(entries.into_iter().find(|e| e.rel_path == rel))
}

/// Rank the active entries as Glance's pruner picks them, and mark those
/// it deletes to bring `counted` under `max` (section 2.5): sqlite by the
/// row's `last_accessed` (rows only: a file without a row is never picked);
/// xattr every regular root file by (atime, size, path).
fn prune_plan(
    entries: &mut [Entry],
    driver: Option<Driver>,
    counted: u64,
    max: u64,
    rows: Option<&HashMap<String, Row>>,
) {
    let mut order: Vec<(f64, u64, String, usize)> = Vec::new();
    for (i, e) in entries.iter().enumerate() {
        match driver {
            Some(Driver::Sqlite) if e.db_row == Some(true) => {
                let la = rows
                    .and_then(|r| e.image_id.as_ref().and_then(|id| r.get(id)))
                    .map_or(0.0, |r| r.last_accessed);
                order.push((la, 0, e.rel_path.clone(), i));
            }
            Some(Driver::Xattr)
                if e.record == "entry" && !e.mtime.is_empty() && !e.rel_path.contains('/') =>
            {
                let at = common::text::parse_time(&e.atime).unwrap_or(0) as f64;
                order.push((at, e.size, e.rel_path.clone(), i));
            }
            _ => {}
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
        let e = &mut entries[i];
        e.would_prune = Some(prune);
        if prune && e.verdict == "keep" {
            e.verdict = "would_prune";
            e.reasons.push(format!("lru_over_max_size_{max}"));
        }
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
/// `glance-cache-manage queue-image` makes it.
pub fn queue(root: &Path, id: &str) -> Result<PathBuf, QueueError> {
    if id.is_empty() || id.contains('/') || id == "." || id == ".." || id.contains('\0') {
        return Err(QueueError::BadId(id.to_owned()));
    }
    let already = |state| QueueError::Already {
        id: id.to_owned(),
        state,
    };
    if std::fs::symlink_metadata(root.join(id)).is_ok() {
        return Err(already("cached"));
    }
    if std::fs::symlink_metadata(root.join("incomplete").join(id)).is_ok() {
        return Err(already("being cached"));
    }
    let dir = root.join("queue");
    let path = dir.join(id);
    let io = |source| QueueError::Io {
        path: path.clone(),
        source,
    };
    if !dir.is_dir() {
        std::fs::create_dir(&dir).map_err(io)?;
    }
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&path)
    {
        Ok(_) => Ok(path),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Err(already("queued")),
        Err(e) => Err(io(e)),
    }
}
