//! `cachewalk nova INSTANCES_PATH`: every file of Nova's image cache
//! (`_base/`, `locks/`, `compute_nodes`), what it is, what uses it, what
//! Nova would do with it and what cachewalk, more conservatively, says
//! (notes/caches.md sections 1 and 4).
//!
//! Evidence that a base file is in use, all of it gathered before any
//! verdict:
//! - **backing chains**: every `disk*` file of every directory under
//!   INSTANCES_PATH (not only those named after known instances, unlike
//!   Nova, which reads `disk` of current instances only; links to disks
//!   and to instance directories followed read-only, as Nova follows
//!   them), read natively (the qcow2/QED/VMDK/VHDX header via
//!   the `formats` crate, bounded, never opening the backing file). Each
//!   backing name is resolved as qemu resolves it (relative to the
//!   directory of the image naming it) and matched by identity: by name
//!   when its directory is `_base` itself (same device and inode as the
//!   handle, as Nova matches by name), elsewhere by device and inode; the
//!   chain is followed inside `_base` only, through its handle. A name
//!   that cannot be matched keeps the base file of the same name
//!   (`keep_unknown`, with the reason). A disk recorded raw in
//!   `disk.info`, or a base file named with backing format raw, is not
//!   read for a chain (qemu reads none). A missing backing file is a
//!   `dangling_reference` record. A disk or chain member that cannot be
//!   read, or a chain longer than `MAX_CHAIN` (256), keeps base files
//!   `keep_unknown`, the reason naming that file (Nova's pass stops
//!   there): every one, since its backing could be any of them, except
//!   for a disk Nova builds from its instance's images (`disk`,
//!   `disk.local`, `disk.swap`, `disk.eph<N>`) of an instance the
//!   inventory names, which keeps only that instance's base files
//!   ([`Missing`]);
//! - **the inventory** (`--instances`): `image_ref`, `kernel_id`,
//!   `ramdisk_id` hashed to fingerprints, swap and ephemeral names;
//! - **open files**: every process's `/proc/<pid>/fd` (qemu keeps its
//!   backing files open); when one cannot be read (not root), this
//!   evidence is unknown and counts as in use.
//!
//! A file is a `candidate` only when cachewalk understands its name, Nova
//! itself would remove it (its name is in one of Nova's buckets), no
//! evidence says it is used, no evidence is missing, it is older than the
//! threshold (Nova's: 86400 s originals, swap, ephemeral; 3600 s resized),
//! it is a regular file (never a symlink) and the inventory covers every
//! host that shares the storage.

use crate::inventory::Instance;
use crate::names::{self, Class, NovaClass};
use filter::ErrorKind;
use formats::probe;
use serde::Serialize;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use system::files::FileId;
use system::tree::{Dir, Kind, Status};

/// Hosts that have not written `compute_nodes` for this long no longer
/// count as sharing the storage (Nova's `TWENTY_FOUR_HOURS`).
pub const HOST_WINDOW_S: i64 = 86_400;

/// How to walk.
#[derive(Debug, Clone)]
pub struct Options {
    /// "Now", seconds since the epoch (`--now`).
    pub now: i64,
    /// Minimum age of unused originals, swap and ephemeral files.
    pub original_age: u64,
    /// Minimum age of unused resized files.
    pub resized_age: u64,
    /// The instance inventory, if given.
    pub inventory: Option<Vec<Instance>>,
    /// This compute host's name (Nova's `CONF.host`).
    pub host: String,
    /// The operator says `INSTANCES_PATH` is shared storage.
    pub shared: bool,
    /// Hosts the operator vouches have no instances here.
    pub assume_no_instances_on: Vec<String>,
    /// The label Nova hashes into ephemeral names when an instance gives
    /// none (`default_ephemeral_format`, or `vfat`).
    pub ephemeral_format: String,
    /// Where processes are listed (`/proc`).
    pub proc_root: PathBuf,
    /// The cache subdirectory (`_base`).
    pub base_name: String,
    /// Hash the files and compare (`--verify`).
    pub verify: bool,
    /// Glance's images by id (`--images`).
    pub images: HashMap<String, crate::verify::ImageMeta>,
}

/// One record: a file of the cache, or a dangling reference.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Entry {
    /// `entry` or `dangling_reference`.
    pub record: &'static str,
    /// The openable path (the record's top-level `path`).
    #[serde(skip)]
    pub path: PathBuf,
    /// `nova_base`.
    pub cache: &'static str,
    /// INSTANCES_PATH as given.
    pub root: String,
    /// Relative to the root (`_base/<name>`).
    pub rel_path: String,
    /// The name as bytes (base64) when it is not UTF-8.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rel_path_bytes: Option<String>,
    /// What it is.
    pub class: String,
    /// `file`, `symlink`, `directory`, `other`.
    pub file_type: &'static str,
    /// The image-id fingerprint in the name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fingerprint: Option<String>,
    /// `_<N>` / `_sm` as in the name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resize_suffix: Option<String>,
    /// The image id whose SHA-1 the fingerprint is.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image_id: Option<String>,
    /// Where that id came from (`inventory`, `argument`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image_id_source: Option<&'static str>,
    /// `st_dev` and `st_ino`: `remove` deletes only this very file.
    pub dev: u64,
    /// See `dev`.
    pub ino: u64,
    /// `st_size`.
    pub size: u64,
    /// `st_blocks * 512` (raw base files are sparse).
    pub allocated: u64,
    /// RFC 3339 UTC.
    pub mtime: String,
    /// `now - mtime`, seconds.
    pub age_s: i64,
    /// The sub-second part of the mtime: an age equal to a threshold is
    /// old enough only when it is 0 (Nova compares float ages).
    #[serde(skip)]
    pub mtime_nsec: u32,
    /// The mtime Nova reads (`os.path.getmtime` follows a link), when it
    /// differs from the entry's own (a link).
    #[serde(skip)]
    pub nova_mtime: Option<(i64, u32)>,
    /// From the file's header (`raw` when nothing else matches).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub format: Option<String>,
    /// `yes`, `no`, `unknown`.
    pub in_use: &'static str,
    /// Who uses it: `<uuid>@<host>:<via>`, `<dir>:backing:<disk>`,
    /// `pid:<n>`.
    pub used_by: Vec<String>,
    /// Nova's bucket.
    pub nova_class: NovaClass,
    /// Whether Nova would count it in use (null without an inventory:
    /// Nova always has one).
    pub nova_in_use: Option<bool>,
    /// Nova's age threshold for it (null when Nova never removes it).
    pub nova_threshold_s: Option<u64>,
    /// When Nova would remove it if nothing changes (null: never, or in
    /// use).
    pub nova_eligible_at: Option<String>,
    /// Why Nova counts it in use or not: `image_in_use`,
    /// `backing_file_of_disk`, `predicted_name_in_use`, `unexplained`, or
    /// `skipped_after:<name>` (its list iteration skipped it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nova_reason: Option<String>,
    /// The minimum age cachewalk applied (`remove` checks it again).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub threshold_s: Option<u64>,
    /// cachewalk's decision.
    pub verdict: &'static str,
    /// Why, as short codes.
    pub reasons: Vec<String>,
    /// The Nova lock guarding it (`nova-<name>`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lock: Option<String>,
    /// Parsed sidecar (`.sha1`/`.info`) or registry contents.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub contents: Option<Value>,
    /// For a dangling reference: the disk and the backing name it gives.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub referenced_by: Option<String>,
    /// The image's status in Glance (`--images`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image_status: Option<String>,
    /// `--verify`'s digests and verdict.
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    pub verification: Option<crate::verify::Verification>,
}

/// Why the walk could not run at all.
#[derive(Debug, thiserror::Error)]
#[error("{}: {source}", path.display())]
pub struct WalkError {
    /// The directory.
    pub path: PathBuf,
    /// The error.
    pub source: std::io::Error,
}

/// A backing reference read from an instance disk, matched to a `_base`
/// entry (by name in the `_base` directory itself, as Nova matches, or by
/// device and inode).
#[derive(Debug, Clone)]
struct Reference {
    /// `<dir>:backing:<disk>` (or the chain member inside `_base`).
    via: String,
    /// The disk's path (messages and records).
    disk: PathBuf,
    /// The backing file name inside `_base`.
    base_name: String,
}

fn lossy(b: &OsStr) -> String {
    // Names are UTF-8 almost always: the fast check first.
    match b.to_str() {
        Some(s) => s.to_owned(),
        None => String::from_utf8_lossy(b.as_bytes()).into_owned(),
    }
}

/// Probe the open image `file`, whose status `st` its own handle gave
/// (no second stat): a regular file, or a block device reached through a
/// link.
fn probe_opened(file: File, st: &Status, label: &str) -> Result<formats::Probe, String> {
    let src = if st.kind == Kind::File {
        formats::FileSource::from_status(file, st)
    } else {
        formats::FileSource::from_file(file)
    }
    .map_err(|e| e.to_string())?;
    probe(&src, label, None).map_err(|e| e.to_string())
}

/// What a header says about its backing file: the name's exact bytes
/// and the backing format recorded with it (`-F`), if any.
#[derive(Debug, Clone)]
struct BackingName {
    name: Vec<u8>,
    format: Option<String>,
}

/// A header's backing file, none, or why it could not be read.
type Backing = Result<Option<BackingName>, String>;

/// What a header says: the format qemu reads the file as and its backing
/// file, or why it could not be read.
type Header = Result<(formats::Format, Option<BackingName>), String>;

fn header_of(p: Result<formats::Probe, String>) -> Header {
    let p = p?;
    let backing = p
        .backing
        .filter(|b| !b.name.is_empty())
        .map(|b| BackingName {
            format: b.format_lossy().map(|f| f.into_owned()),
            name: b.name,
        });
    Ok((p.format, backing))
}

fn backing_in(h: Header) -> Backing {
    h.map(|(_, b)| b)
}

/// Open `name` in `dir` for reading as Nova and qemu do: a link is
/// followed (read-only). Only a regular file or a block device is opened
/// for reading (through an `O_PATH` handle first, so a FIFO or a
/// character device is never opened); anything else is `not_regular`.
fn open_following(dir: &Dir, name: &OsStr) -> std::io::Result<Option<File>> {
    let pinned = dir.pinned_path(name)?;
    let at = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_PATH)
        .open(&pinned)?;
    let ft = at.metadata()?.file_type();
    if ft.is_dir() {
        // A directory named disk* (or a link to one) is no disk.
        return Ok(None);
    }
    if !(ft.is_file() || ft.is_block_device()) {
        return Err(system::files::refusal(
            ErrorKind::NotRegular,
            "is not a regular file or a block device",
        ));
    }
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(system::tree::fd_path(&at))
        .map(Some)
}

/// `f` over `items` on every core, results in order. Threads take small
/// batches in turn, so a thread that gets less of a busy machine (or
/// slower files) does less, and no one waits on the last big chunk.
fn par_map<T: Sync, R: Send>(items: &[T], f: impl Fn(&T) -> R + Sync) -> Vec<R> {
    const BATCH: usize = 32;
    let n = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(8);
    if n <= 1 || items.len() < 2 * BATCH {
        return items.iter().map(f).collect();
    }
    let next = std::sync::atomic::AtomicUsize::new(0);
    let work = || {
        let mut done: Vec<(usize, Vec<R>)> = Vec::new();
        loop {
            let at = next.fetch_add(BATCH, std::sync::atomic::Ordering::Relaxed);
            let Some(batch) = items.get(at..items.len().min(at + BATCH)) else {
                return done;
            };
            if batch.is_empty() {
                return done;
            }
            done.push((at, batch.iter().map(&f).collect()));
        }
    };
    let mut batches: Vec<(usize, Vec<R>)> = std::thread::scope(|s| {
        let handles: Vec<_> = (1..n).map(|_| s.spawn(work)).collect();
        // This thread works too.
        let mut all = work();
        for h in handles {
            all.extend(h.join().unwrap_or_else(|e| std::panic::resume_unwind(e)));
        }
        all
    });
    batches.sort_unstable_by_key(|(at, _)| *at);
    batches.into_iter().flat_map(|(_, b)| b).collect()
}

/// What the walk learned from instance directories.
#[derive(Debug, Default)]
struct Disks {
    /// Backing references matched to `_base` entries, chains followed.
    refs: Vec<Reference>,
    /// Evidence that is missing: a disk or chain member that could not
    /// be read, a chain longer than the limit (each a reason naming the
    /// file).
    unknown: Vec<Unknown>,
    /// Base names that a reference which could not be matched might mean
    /// (Nova matches by the last component): name → reasons.
    maybe: Vec<(String, String)>,
    /// Nova's own view (`_list_backing_images`): the instance directory
    /// and the last component of the backing file of its `disk`.
    nova_backing: Vec<(String, String)>,
}

impl Disks {
    fn extend(&mut self, o: Disks) {
        self.refs.extend(o.refs);
        self.unknown.extend(o.unknown);
        self.maybe.extend(o.maybe);
        self.nova_backing.extend(o.nova_backing);
    }
}

/// Evidence that is missing (a reason naming the file).
#[derive(Debug, Clone)]
struct Unknown {
    reason: String,
    /// The instance directory of a disk Nova builds only on base files
    /// of that instance's own images, swap and ephemeral sizes (`disk`,
    /// `disk.local`, `disk.swap`, `disk.eph<N>`); `None`: it could
    /// concern any base file.
    instance_dir: Option<String>,
}

impl Unknown {
    fn host(reason: String) -> Unknown {
        Unknown {
            reason,
            instance_dir: None,
        }
    }

    fn disk(dir_name: &str, disk: &OsStr, reason: String) -> Unknown {
        let built = disk.to_str().is_some_and(|n| {
            matches!(n, "disk" | "disk.local" | "disk.swap")
                || n.strip_prefix("disk.eph")
                    .is_some_and(|d| !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit()))
        });
        Unknown {
            reason,
            instance_dir: built.then(|| dir_name.to_owned()),
        }
    }
}

/// What missing evidence keeps. An unreadable disk Nova built for an
/// instance the inventory names keeps only the base files that instance
/// may use: names starting with the fingerprint (or the raw id) of its
/// `image_ref`, `kernel_id` or `ramdisk_id`, every resized variant of
/// them, and every swap and ephemeral file (sizes change on resize).
/// Anything else missing (an unreadable directory, a base file's own
/// backing, a chain over the limit, a disk of an instance the inventory
/// does not name, `disk.rescue`) keeps every base file.
#[derive(Debug, Default)]
pub struct Missing {
    host: Vec<String>,
    /// (fingerprints and raw ids, reason).
    bounded: Vec<(Vec<String>, String)>,
}

impl Missing {
    fn new(unknown: Vec<Unknown>, inventory: Option<&[Instance]>) -> Missing {
        let mut m = Missing::default();
        for u in unknown {
            let inst = u.instance_dir.as_deref().and_then(|d| {
                let d = d.strip_suffix("_resize").unwrap_or(d);
                inventory?
                    .iter()
                    .find(|i| i.uuid == d || i.name.as_deref() == Some(d))
            });
            match inst {
                Some(i) if i.image_ids.iter().any(|(_, id)| !id.is_empty()) => {
                    let mut prefixes = Vec::new();
                    for (_, id) in i.image_ids.iter().filter(|(_, id)| !id.is_empty()) {
                        prefixes.push(system::hash::sha1_hex(id));
                        prefixes.push(id.clone());
                    }
                    m.bounded.push((prefixes, u.reason));
                }
                _ => m.host.push(u.reason),
            }
        }
        m
    }

    /// The reasons that keep the base file `name` (empty: none).
    pub fn reasons_for(&self, name: &str) -> Vec<String> {
        self.reasons_for_named(name, names::classify(name).class)
    }

    /// [`Missing::reasons_for`] of a name already classified.
    fn reasons_for_named(&self, name: &str, class: Class) -> Vec<String> {
        let mut out = self.host.clone();
        let spare = matches!(
            class,
            Class::Swap | Class::Ephemeral | Class::EphemeralLegacy
        );
        for (prefixes, why) in &self.bounded {
            if spare || prefixes.iter().any(|p| name.starts_with(p.as_str())) {
                out.push(why.clone());
            }
        }
        out
    }
}

/// Backing names read from image headers, kept while the file is
/// unchanged (same device, inode, size and mtime), so that `remove` can
/// re-check every instance disk before each deletion without re-reading
/// them all.
#[derive(Debug, Default)]
pub struct DiskCache {
    seen: std::sync::Mutex<HashMap<FileKey, Header>>,
}

/// Device, inode, size, mtime: "the same file, unchanged".
type FileKey = (u64, u64, u64, i64, u32);

fn key_of(st: &Status) -> FileKey {
    (st.id.dev, st.id.ino, st.size, st.mtime.0, st.mtime.1)
}

impl DiskCache {
    /// What was read from the file `st` describes, if it is unchanged.
    fn cached(&self, st: &Status) -> Option<Header> {
        self.seen
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(&key_of(st))
            .cloned()
    }

    /// Whether nothing was read yet (a walk, not `remove`'s re-check).
    fn is_empty(&self) -> bool {
        self.seen
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .is_empty()
    }

    /// The header of the open `file`, whose status `st` its own handle
    /// gave: read once per unchanged file (a base file backing many disks,
    /// and the `_base` listing after the chains).
    fn header(&self, file: File, st: &Status, label: &str) -> Header {
        if let Some(v) = self.cached(st) {
            return v;
        }
        let v = header_of(probe_opened(file, st, label));
        self.seen
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(key_of(st), v.clone());
        v
    }

    /// [`DiskCache::header`] for the last reader of a file (the `_base`
    /// listing): what was read is not kept.
    fn header_once(&self, file: File, st: &Status, label: &str) -> Header {
        match self.cached(st) {
            Some(v) => v,
            None => header_of(probe_opened(file, st, label)),
        }
    }
}

/// The `_base` directory a walk matches references against: its handle
/// and, listed only when first needed (a reference that resolves outside
/// `_base`'s own directory, a disk reached through a link or with other
/// hard links), its entries by identity (from `lstat`).
struct Base<'a> {
    dir: &'a Dir,
    ids: std::sync::OnceLock<HashMap<FileId, OsString>>,
}

impl<'a> Base<'a> {
    fn new(dir: &'a Dir) -> Base<'a> {
        Base {
            dir,
            ids: std::sync::OnceLock::new(),
        }
    }

    /// The `_base` entry that is the file `id`, if any.
    fn name_of(&self, id: FileId) -> Option<&OsString> {
        self.ids
            .get_or_init(|| {
                let mut ids = HashMap::new();
                for n in self.dir.names().unwrap_or_default() {
                    if let Ok(st) = self.dir.status(&n) {
                        ids.insert(st.id, n);
                    }
                }
                ids
            })
            .get(&id)
    }
}

/// What a backing reference names, resolved as qemu resolves it.
enum Resolved {
    /// `_base/<name>`: its directory is `_base` itself (same device and
    /// inode as the handle), matched by name as Nova does; or a path
    /// elsewhere that is the same file as a `_base` entry (the directory
    /// it is in, for the next reference of the chain).
    Base(OsString, Option<File>),
    /// `_base/<name>`, which is not there.
    Missing(OsString),
    /// A file outside `_base`.
    Outside,
    /// Nothing that can be matched here (why).
    Unmatched(String),
}

/// Resolve `backing` as qemu does: an absolute path as it is, a relative
/// one from the directory of the image that names it (`ctx`, a handle).
/// Directories are followed as the kernel follows them for qemu; the
/// last component is matched by name only inside `_base` itself, and
/// elsewhere by identity (stat, read-only), never read.
fn resolve(ctx: std::os::fd::BorrowedFd<'_>, backing: &[u8], base: &Base) -> Resolved {
    let (parent, last): (&[u8], &[u8]) = match backing.iter().rposition(|&b| b == b'/') {
        Some(0) => (b"/", &backing[1..]),
        Some(i) => (&backing[..i], &backing[i + 1..]),
        None => (b".", backing),
    };
    let parent = OsStr::from_bytes(parent);
    let last = OsStr::from_bytes(last);
    // Relative to the directory handle itself (an absolute path as it is).
    let dir = match system::tree::open_dir_path_at(ctx, parent) {
        Ok(d) => d,
        Err(e) => return Resolved::Unmatched(format!("directory: {e}")),
    };
    let plain = !last.is_empty() && last != "." && last != "..";
    if FileId::of_file(&dir).is_ok_and(|id| id == base.dir.id()) && plain {
        return match base.dir.status_if_exists(last) {
            Ok(Some(_)) => Resolved::Base(last.to_os_string(), None),
            Ok(None) => Resolved::Missing(last.to_os_string()),
            Err(e) => Resolved::Unmatched(e.to_string()),
        };
    }
    match std::fs::metadata(system::tree::fd_path(&dir).join(last)) {
        Ok(m) => match base.name_of(FileId::of_metadata(&m)) {
            Some(n) => Resolved::Base(n.clone(), Some(dir)),
            None => Resolved::Outside,
        },
        Err(e) => Resolved::Unmatched(e.to_string()),
    }
}

/// The last component of a backing name (what Nova matches by).
fn last_component(b: &[u8]) -> String {
    let last = b.rsplit(|&c| c == b'/').next().unwrap_or(b);
    String::from_utf8_lossy(last).into_owned()
}

/// Instance directories of `root`: every directory (a link to one
/// followed, as Nova's `os.path.exists(<entry>/disk)` follows it) but
/// `_base` and `locks`. Listed, then scanned on every core.
fn scan_disks(root: &Dir, base: &Base, base_name: &str, cache: &DiskCache) -> Disks {
    let mut d = Disks::default();
    let mut names = match root.entries() {
        Ok(n) => n,
        Err(e) => {
            d.unknown.push(Unknown::host(format!(
                "instances_path_unreadable:{}: {e}",
                root.path().display()
            )));
            return d;
        }
    };
    names.retain(|(n, _)| n != OsStr::new(base_name) && n != "locks");
    names.sort_unstable_by(|a, b| a.0.cmp(&b.0));
    let parts = par_map(&names, |(name, hint)| {
        scan_entry(root, name, *hint, base, cache)
    });
    for p in parts {
        d.extend(p);
    }
    d
}

/// One entry of the instances path: a directory (or a link to one) is
/// scanned; anything else has no disks. `hint`: what the listing says it
/// is (a directory is opened at once, without following a link; when that
/// fails, its `lstat` decides as for any other entry).
fn scan_entry(
    root: &Dir,
    name: &OsStr,
    hint: Option<Kind>,
    base: &Base,
    cache: &DiskCache,
) -> Disks {
    let display = root.join(name);
    if hint == Some(Kind::Dir)
        && let Ok(dir) = root.subdir(name)
    {
        return scan_instance_dir(dir, name, &display, base, cache);
    }
    let mut d = Disks::default();
    let dir = match root.status(name).map(|s| s.kind) {
        Ok(Kind::Dir) => root.subdir(name),
        // Followed read-only, as Nova follows it.
        Ok(Kind::Symlink) => root.pinned_path(name).and_then(|p| Dir::open(&p)),
        Ok(_) => return d,
        // Gone since the listing: nothing to read.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return d,
        Err(e) => Err(e),
    };
    let dir = match dir {
        Ok(dir) => dir,
        Err(e)
            if e.kind() == std::io::ErrorKind::NotFound
                || ErrorKind::from_io(&e) == ErrorKind::NotRegular
                || e.raw_os_error() == Some(libc::ELOOP) =>
        {
            // A dangling link, a link to a file or a link loop: no
            // `disk` in it for Nova or qemu either.
            return d;
        }
        Err(e) => {
            d.unknown.push(Unknown::host(format!(
                "instance_dir_unreadable:{}: {e}",
                display.display()
            )));
            return d;
        }
    };
    scan_instance_dir(dir, name, &display, base, cache)
}

fn scan_instance_dir(
    dir: Dir,
    name: &OsStr,
    display: &Path,
    base: &Base,
    cache: &DiskCache,
) -> Disks {
    // `_base` reached through a link is not an instance directory.
    if dir.id() == base.dir.id() {
        return Disks::default();
    }
    scan_dir(&dir, &lossy(name), display, base, cache)
}

/// How deep a backing chain is followed; a longer one keeps every base
/// file (what lies below could be any of them).
const MAX_CHAIN: usize = 256;

/// The backing chains of the `disk*` files of one instance directory.
fn scan_dir(dir: &Dir, dir_name: &str, display: &Path, base: &Base, cache: &DiskCache) -> Disks {
    let mut d = Disks::default();
    let files = match dir.entries() {
        Ok(f) => f,
        Err(e) => {
            d.unknown.push(Unknown::host(format!(
                "instance_dir_unreadable:{}: {e}",
                display.display()
            )));
            return d;
        }
    };
    let has_info = files.iter().any(|(n, _)| n == "disk.info");
    let mut disks: Vec<(OsString, Option<Kind>)> = files
        .into_iter()
        .filter(|(n, _)| n.as_bytes().starts_with(b"disk") && n != "disk.info")
        .collect();
    if disks.is_empty() {
        return d;
    }
    disks.sort_unstable_by(|a, b| a.0.cmp(&b.0));
    // Not listed: not there to open (one failed open less per directory).
    let info = if has_info {
        crate::audit::disk_info_of(dir)
    } else {
        BTreeMap::new()
    };
    for (disk, hint) in disks {
        let raw = info.get(&lossy(&disk)).is_some_and(|f| f == "raw");
        scan_disk(
            dir,
            dir_name,
            (&disk, hint),
            &display.join(&disk),
            raw,
            base,
            cache,
            &mut d,
        );
    }
    d
}

/// Whether the header of the listed disk `st` is cached (never needed
/// when the disk is read as raw).
fn d_cached(cache: &DiskCache, st: &Status, raw: bool) -> Option<Backing> {
    if raw {
        return Some(Ok(None));
    }
    cache.cached(st).map(backing_in)
}

/// One disk's backing chain (module docs).
#[allow(clippy::too_many_arguments)]
fn scan_disk(
    dir: &Dir,
    dir_name: &str,
    (disk, hint): (&OsStr, Option<Kind>),
    display: &Path,
    raw: bool,
    base: &Base,
    cache: &DiskCache,
    d: &mut Disks,
) {
    let disk_label = lossy(disk);
    let unreadable = |d: &mut Disks, e: &dyn std::fmt::Display| {
        d.unknown.push(Unknown::disk(
            dir_name,
            disk,
            format!("instance_disk_unreadable:{}: {e}", display.display()),
        ));
    };
    let reference = |via: &str, name: &OsStr| Reference {
        via: via.to_owned(),
        disk: display.to_path_buf(),
        base_name: lossy(name),
    };
    // A walk opens a disk listed as a plain file at once, without
    // following anything: one openat, and the status from the handle.
    // Otherwise (raw, listed as something else, or remove's re-check with
    // headers read before) its lstat comes first.
    let open_first = hint == Some(Kind::File) && !raw && cache.is_empty();
    let listed = if open_first {
        dir.open_if_file(disk)
    } else {
        dir.status(disk).map(|st| (None, st))
    };
    let (opened, listed) = match listed {
        Ok(x) => x,
        // Vanished since the listing: no evidence either way.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return,
        Err(e) => return unreadable(d, &e),
    };
    // A plain file is read without following anything (and not at all
    // when its header was read before, unchanged); a link is followed
    // read-only, as Nova and qemu follow it.
    let (st, file) = if let Some(f) = opened {
        (listed, Some(f))
    } else if listed.kind == Kind::File {
        let cached = d_cached(cache, &listed, raw);
        match cached {
            Some(_) => (listed, None),
            None => match dir.open_if_file(disk) {
                Ok((Some(f), now)) => (now, Some(f)),
                Ok((None, now)) => {
                    return unreadable(
                        d,
                        &format!("was replaced by a {} while read", now.kind.describe()),
                    );
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return,
                Err(e) => return unreadable(d, &e),
            },
        }
    } else if listed.kind == Kind::Dir {
        return;
    } else {
        match open_following(dir, disk) {
            Ok(Some(f)) => match Status::of_file(&f) {
                Ok(st) => (st, Some(f)),
                Err(e) => return unreadable(d, &e),
            },
            // A directory: no disk.
            Ok(None) => return,
            // A dangling link: Nova's os.path.exists is false and qemu has
            // nothing to open.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return,
            Err(e) => return unreadable(d, &e),
        }
    };
    let mut visited: HashSet<FileId> = HashSet::from([st.id]);
    // The disk is a base file itself: reached through a link, or a hard
    // link (a plain entry with one link cannot also be in _base).
    if (listed.kind != Kind::File || st.nlink > 1)
        && let Some(n) = base.name_of(st.id)
    {
        d.refs
            .push(reference(&format!("{dir_name}:disk:{disk_label}"), n));
    }
    if raw {
        // Nova recorded it raw (disk.info): qemu reads no chain from it,
        // whatever a guest wrote at its start.
        return;
    }
    let mut current_label = display.to_path_buf();
    let mut backing = match (file, cache.cached(&st)) {
        (_, Some(h)) => backing_in(h),
        (Some(f), None) => backing_in(cache.header(f, &st, &current_label.to_string_lossy())),
        (None, None) => return,
    };
    // The directory relative backing names start from: the instance
    // directory (qemu resolves from the disk's path as libvirt gives it),
    // then `_base`, or the directory a reference was matched in.
    // `ctx_owned`: the directory a reference was matched in; `in_base`:
    // past the disk itself.
    let mut ctx_owned: Option<File> = None;
    let mut in_base = false;
    let mut via = format!("{dir_name}:backing:{disk_label}");
    for step in 0.. {
        if step == MAX_CHAIN {
            d.unknown.push(Unknown::host(format!(
                "backing_chain_longer_than_{MAX_CHAIN}:{}",
                display.display()
            )));
            return;
        }
        let b = match backing {
            Ok(Some(b)) => b,
            Ok(None) => return,
            Err(why) => {
                // The disk itself is bounded by what its instance uses; a
                // base file's own backing could be anything.
                d.unknown.push(if step == 0 {
                    Unknown::disk(
                        dir_name,
                        disk,
                        format!(
                            "instance_disk_unreadable:{}: {why}",
                            current_label.display()
                        ),
                    )
                } else {
                    Unknown::host(format!(
                        "backing_file_unreadable:{}: {why}",
                        current_label.display()
                    ))
                });
                return;
            }
        };
        if step == 0 && disk == "disk" {
            d.nova_backing
                .push((dir_name.to_owned(), last_component(&b.name)));
        }
        use std::os::fd::AsFd;
        let ctx = match &ctx_owned {
            Some(p) => p.as_fd(),
            None if in_base => base.dir.fd(),
            None => dir.fd(),
        };
        let shown = || String::from_utf8_lossy(&b.name).into_owned();
        match resolve(ctx, &b.name, base) {
            Resolved::Base(name, parent) => {
                d.refs.push(reference(&via, &name));
                if b.format.as_deref() == Some("raw") {
                    // qemu opens it as raw: no chain is read from it.
                    return;
                }
                // Never followed out of _base: a link there ends it (the
                // link itself is kept as not a regular file).
                let Ok((Some(next), next_st)) = base.dir.open_if_file(&name) else {
                    return;
                };
                if !visited.insert(next_st.id) {
                    return;
                }
                via = format!("{dir_name}:backing:{disk_label}>{}", lossy(&name));
                current_label = base.dir.join(&name);
                backing =
                    backing_in(cache.header(next, &next_st, &current_label.to_string_lossy()));
                ctx_owned = parent;
                in_base = true;
            }
            Resolved::Missing(name) => {
                d.refs.push(reference(&via, &name));
                return;
            }
            Resolved::Outside => {
                d.maybe.push((
                    last_component(&b.name),
                    format!("backing_outside_base:{via}:{}", shown()),
                ));
                return;
            }
            Resolved::Unmatched(why) => {
                d.maybe.push((
                    last_component(&b.name),
                    format!("backing_unmatched:{via}:{}: {why}", shown()),
                ));
                return;
            }
        }
    }
}

/// What instance disks say about `_base` now (`remove`'s re-check).
#[derive(Debug, Default)]
pub struct Users {
    /// Base names some backing chain reaches → who.
    pub by_name: HashMap<String, Vec<String>>,
    /// Base names an unmatched reference might mean → why.
    pub maybe: HashMap<String, Vec<String>>,
    /// Missing evidence and the base files it keeps.
    pub missing: Missing,
}

impl Users {
    /// Why `name` must be kept, if anything says so.
    pub fn keeps(&self, name: &str) -> Option<String> {
        if let Some(who) = self.by_name.get(name) {
            return Some(format!("backing file of {}", who.join(", ")));
        }
        if let Some(why) = self.maybe.get(name) {
            return Some(why.join(", "));
        }
        self.missing.reasons_for(name).into_iter().next()
    }
}

/// Names in `_base` that some instance disk's backing chain reaches now,
/// and what is unknown (for `remove`'s re-check, through the same
/// handles it deletes through).
pub fn backing_users(
    root: &Dir,
    base: &Dir,
    base_name: &str,
    cache: &DiskCache,
    inventory: Option<&[Instance]>,
) -> Users {
    let base = Base::new(base);
    let d = scan_disks(root, &base, base_name, cache);
    let mut u = Users {
        missing: Missing::new(d.unknown, inventory),
        ..Users::default()
    };
    for r in d.refs {
        u.by_name.entry(r.base_name).or_default().push(r.via);
    }
    for (n, why) in d.maybe {
        u.maybe.entry(n).or_default().push(why);
    }
    u
}

/// Open files: (dev, ino) → pids; `false` when some process's
/// descriptors could not be read.
pub fn open_files(proc_root: &Path) -> (HashMap<(u64, u64), Vec<u32>>, bool) {
    let mut map: HashMap<(u64, u64), Vec<u32>> = HashMap::new();
    let mut complete = true;
    let Ok(procs) = std::fs::read_dir(proc_root) else {
        return (map, false);
    };
    let me = std::process::id();
    for p in procs.flatten() {
        let Some(pid) = p.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        if pid == me {
            continue;
        }
        let fds = match std::fs::read_dir(p.path().join("fd")) {
            Ok(f) => f,
            // Gone meanwhile: no evidence lost.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(_) => {
                complete = false;
                continue;
            }
        };
        for fd in fds.flatten() {
            // metadata() follows the magic link to the open file itself.
            if let Ok(m) = std::fs::metadata(fd.path())
                && m.is_file()
            {
                map.entry((m.dev(), m.ino())).or_default().push(pid);
            }
        }
    }
    (map, complete)
}

/// `compute_nodes`: host → last seen (epoch seconds), read through the
/// root handle (a link there is not followed).
fn read_compute_nodes(root: &Dir) -> Option<BTreeMap<String, f64>> {
    let f = root.open_file("compute_nodes").ok()?;
    let mut text = String::new();
    // A registry is a few hundred bytes; a huge one is not Nova's.
    f.take(16 << 20).read_to_string(&mut text).ok()?;
    let v: Value = serde_json::from_str(&text).ok()?;
    let m = v.as_object()?;
    Some(
        m.iter()
            .filter_map(|(h, t)| t.as_f64().map(|t| (h.clone(), t)))
            .collect(),
    )
}

/// Parse a `.sha1` (plain hex) or `.info` (JSON: `sha1`, Grizzly's
/// `sha1-timestamp`) sidecar; one that holds no SHA-1 where it should gets
/// `malformed` (why), a finding (`--check` exits 1).
fn read_sidecar(path: &Path, class: Class) -> Option<Value> {
    use crate::verify::Stored;
    let info = match class {
        Class::ChecksumSidecar => false,
        Class::InfoSidecar => true,
        _ => return None,
    };
    let (sha1, malformed) = match crate::verify::parse_sidecar(path, info) {
        Stored::Sha1(h) => (Value::from(h), None),
        Stored::Absent => (Value::Null, None),
        Stored::Malformed(why) => (Value::Null, Some(why)),
    };
    let small = std::fs::symlink_metadata(path).is_ok_and(|m| m.is_file() && m.len() <= 64 * 1024);
    let text = small
        .then(|| std::fs::read_to_string(path).ok())
        .flatten()
        .unwrap_or_default();
    let mut out = if info {
        let ts = serde_json::from_str::<Value>(&text)
            .ok()
            .and_then(|v| v.get("sha1-timestamp").cloned());
        serde_json::json!({
            "generation": if ts.is_some() { "grizzly" } else { "folsom" },
            "sha1": sha1,
            "sha1_timestamp": ts.unwrap_or(Value::Null),
        })
    } else {
        serde_json::json!({
            "generation": "essex",
            "sha1": sha1,
            "empty": malformed.is_none() && text.trim().is_empty(),
        })
    };
    if let (Some(why), Some(m)) = (malformed, out.as_object_mut()) {
        m.insert("malformed".into(), Value::from(why));
    }
    Some(out)
}

/// What every host sharing the storage needs: the reasons the inventory
/// does not cover them (empty when it does).
fn coverage(nodes: &Option<BTreeMap<String, f64>>, opts: &Options) -> (Vec<String>, Option<Value>) {
    let contents = nodes.as_ref().map(|n| serde_json::json!(n));
    let mut reasons = Vec::new();
    let Some(inv) = &opts.inventory else {
        reasons.push("no_inventory".to_owned());
        return (reasons, contents);
    };
    let covered: HashSet<&str> = inv
        .iter()
        .filter_map(|i| i.host.as_deref())
        .chain(opts.assume_no_instances_on.iter().map(String::as_str))
        .chain(std::iter::once(opts.host.as_str()))
        .collect();
    match &nodes {
        Some(n) => {
            for (h, seen) in n {
                let recent = opts.now as f64 - seen < HOST_WINDOW_S as f64;
                if recent && !covered.contains(h.as_str()) {
                    reasons.push(format!("inventory_missing_host_{h}"));
                }
            }
        }
        None if opts.shared => reasons.push("shared_storage_hosts_unknown".to_owned()),
        None => {}
    }
    (reasons, contents)
}

/// Walk `root` (module docs). Entries sorted by `rel_path`, dangling
/// references after them. The root is opened once (the operator's links
/// followed there); `_base` and `locks` are opened from it without
/// following a link: either being a link is refused (kind `symlink`).
pub fn walk(root: &Path, opts: &Options) -> Result<Vec<Entry>, WalkError> {
    let fail = |path: PathBuf| move |source| WalkError { path, source };
    let root_dir = Dir::open(root).map_err(fail(root.to_path_buf()))?;
    let base_dir = root_dir
        .subdir_if_exists(&opts.base_name)
        .map_err(fail(root.join(&opts.base_name)))?;
    let locks_dir = root_dir
        .subdir_if_exists("locks")
        .map_err(fail(root.join("locks")))?;
    let base_path = root.join(&opts.base_name);
    let base = base_dir.as_ref().map(Base::new);
    // Headers read once: a base file a chain went through is not probed
    // again for the listing.
    let cache = DiskCache::default();
    // Open files are listed while the disks are read (independent).
    let (disks, (fds, fds_complete)) = std::thread::scope(|s| {
        let fds = s.spawn(|| open_files(&opts.proc_root));
        let disks = match &base {
            Some(b) => scan_disks(&root_dir, b, &opts.base_name, &cache),
            // No cache: nothing to protect.
            None => Disks::default(),
        };
        let fds = fds.join().unwrap_or_else(|e| std::panic::resume_unwind(e));
        (disks, fds)
    });
    let compute_nodes = read_compute_nodes(&root_dir);
    let (inventory_gaps, nodes) = coverage(&compute_nodes, opts);

    // Evidence from the inventory: base names → used_by, and Nova's own
    // (narrower) view.
    let mut fp_ids: HashMap<String, String> = HashMap::new();
    let mut used: HashMap<String, Vec<String>> = HashMap::new(); // fp or name → who
    let mut nova_used_names: HashSet<String> = HashSet::new();
    // Nova's used_images, in its (insertion) order: it matters (nova_marks).
    let mut nova_fps: Vec<String> = Vec::new();
    let mut nova_backing: HashSet<String> = HashSet::new();
    let mut nova_dirs: HashSet<String> = HashSet::new();
    // Glance's images name fingerprints too (the inventory's ids win).
    for id in opts.images.keys() {
        fp_ids.insert(system::hash::sha1_hex(id), id.clone());
    }
    let mut inventory_ids: HashSet<String> = HashSet::new();
    // Nova's update() is given only the instances of the hosts sharing the
    // storage: this one and those compute_nodes has seen within 24 h (an
    // instance with no host is on none of them).
    let nova_hosts: HashSet<String> = compute_nodes
        .iter()
        .flatten()
        .filter(|(_, seen)| (opts.now as f64) - **seen < HOST_WINDOW_S as f64)
        .map(|(h, _)| h.clone())
        .chain(std::iter::once(opts.host.clone()))
        .collect();
    for inst in opts.inventory.iter().flatten() {
        let nova_counts = inst.host.as_ref().is_some_and(|h| nova_hosts.contains(h));
        for (field, id) in &inst.image_ids {
            let fp = system::hash::sha1_hex(id);
            inventory_ids.insert(id.clone());
            fp_ids.insert(fp.clone(), id.clone());
            used.entry(fp.clone())
                .or_default()
                .push(format!("{}:{field}", inst.who()));
            if nova_counts && !nova_fps.contains(&fp) {
                nova_fps.push(fp);
            }
        }
        if let Some(mb) = inst.swap_mb {
            let n = format!("swap_{mb}");
            used.entry(n.clone())
                .or_default()
                .push(format!("{}:swap_bdm", inst.who()));
            if nova_counts {
                nova_used_names.insert(n);
            }
        }
        let label = inst
            .ephemeral_format
            .as_deref()
            .unwrap_or(&opts.ephemeral_format);
        for (i, gb) in inst.ephemeral_gb.iter().enumerate() {
            let n = names::ephemeral_name(*gb, label);
            used.entry(n.clone())
                .or_default()
                .push(format!("{}:ephemeral_bdm", inst.who()));
            // Nova predicts the first ephemeral only.
            if i == 0 && nova_counts {
                nova_used_names.insert(n);
            }
        }
        let dirs = [Some(inst.uuid.clone()), inst.name.clone()];
        for d in dirs.into_iter().flatten().filter(|_| nova_counts) {
            if inst.resizing() {
                nova_dirs.insert(format!("{d}_resize"));
            }
            nova_dirs.insert(d);
        }
    }
    for r in &disks.refs {
        used.entry(r.base_name.clone())
            .or_default()
            .push(r.via.clone());
    }
    // Nova reads only `disk`, only of current instances' directories,
    // only the first link, and keeps the last component of what it names
    // (`_base/<basename>`), wherever the path points.
    for (dir, name) in &disks.nova_backing {
        if nova_dirs.contains(dir) {
            nova_backing.insert(name.clone());
        }
    }

    let mut refs_by_name: HashMap<&str, Vec<String>> = HashMap::new();
    for r in &disks.refs {
        refs_by_name
            .entry(r.base_name.as_str())
            .or_default()
            .push(r.via.clone());
    }
    // Unmatched references keep what they might name.
    let mut maybe_by_name: HashMap<&str, Vec<String>> = HashMap::new();
    for (name, why) in &disks.maybe {
        maybe_by_name
            .entry(name.as_str())
            .or_default()
            .push(why.clone());
    }
    let missing = Missing::new(disks.unknown.clone(), opts.inventory.as_deref());

    let mut entries = Vec::new();
    let mut present: BTreeSet<String> = BTreeSet::new();
    let listed = match &base_dir {
        Some(b) => b.entries().map_err(fail(base_path.clone()))?,
        None => Vec::new(),
    };
    if let Some(base_dir) = &base_dir {
        // Open, stat and read the headers on every core: tens of
        // thousands of files are normal on a busy host.
        let files = par_map(&listed, |(name, hint)| {
            base_file(base_dir, name, *hint, &cache)
        });
        // Nova's view depends on os.listdir's (readdir) order, and its
        // os.path.exists / isfile follow links.
        // (Nothing to mark without used images or backing files.)
        let nova_used = !nova_fps.is_empty() || !nova_backing.is_empty();
        let listing: Vec<(String, bool, bool)> = files
            .iter()
            .zip(&listed)
            .filter(|_| nova_used)
            .map(|(f, (n, _))| match f.as_ref().and_then(|f| f.followed) {
                Some((is_file, _)) => (lossy(n), true, is_file),
                None => (lossy(n), false, false),
            })
            .collect();
        let marks = nova_marks(&listing, &nova_fps, &nova_backing);
        let mut order: Vec<usize> = (0..listed.len()).collect();
        order.sort_unstable_by(|a, b| listed[*a].0.cmp(&listed[*b].0));
        let judge = Judge {
            root,
            base_dir,
            base_path: &base_path,
            opts,
            fp_ids: &fp_ids,
            inventory_ids: &inventory_ids,
            used: &used,
            refs_by_name: &refs_by_name,
            maybe_by_name: &maybe_by_name,
            fds: &fds,
            fds_complete,
            missing: &missing,
            nova_used_names: &nova_used_names,
            marks: &marks,
            inventory_gaps: &inventory_gaps,
        };
        // Vanished since the listing: nothing to say.
        let todo: Vec<(&OsString, &BaseFile)> = order
            .iter()
            .filter_map(|&i| Some((&listed[i].0, files[i].as_ref()?)))
            .collect();
        entries = par_map(&todo, |(name, f)| judge.entry(name, f));
        present.extend(entries.iter().map(|e| lossy(name_in(&e.path))));
    }
    if opts.verify {
        verify_entries(&mut entries, opts);
    }
    // Sidecars whose base file is gone are orphans (Nova never cleans them).
    let present_names = present.clone();
    for e in &mut entries {
        // A sidecar an instance disk is backed by stays what its use says.
        if matches!(e.class.as_str(), "checksum_sidecar" | "info_sidecar")
            && e.in_use != "yes"
            && let Some(owner) =
                names::classify(e.rel_path.rsplit('/').next().unwrap_or("")).belongs_to
        {
            if present_names.contains(&owner) {
                e.verdict = "keep_in_use";
                e.reasons = vec![format!("sidecar_of:{owner}")];
            } else {
                e.verdict = "orphan_file";
                e.reasons = vec!["sidecar_without_base_file".into()];
            }
        }
    }

    for e in &mut entries {
        if e.contents
            .as_ref()
            .is_some_and(|c| c.get("malformed").is_some())
        {
            e.reasons.push("sidecar_malformed".into());
        }
    }

    // locks/ and compute_nodes.
    if let Some(locks) = &locks_dir {
        let mut names = locks.names().map_err(fail(root.join("locks")))?;
        names.sort();
        for name in names {
            let path = root.join("locks").join(&name);
            let Ok(st) = locks.status(&name) else {
                continue;
            };
            let text = lossy(&name);
            let rel = format!("locks/{text}");
            let mut e = side_entry(root, &path, &rel, &name, &st, opts.now, "lock");
            let base_file = text.strip_prefix("nova-").filter(|b| present.contains(*b));
            match (text.strip_prefix("nova-"), base_file) {
                (Some(_), Some(b)) => {
                    e.verdict = "keep_in_use";
                    e.reasons = vec![format!("lock_of:{b}")];
                }
                (Some(_), None) => {
                    e.verdict = "orphan_file";
                    e.reasons = vec!["lock_without_base_file".into()];
                }
                (None, _) => {
                    e.verdict = "keep_unknown";
                    e.reasons = vec!["not_a_nova_lock".into()];
                }
            }
            entries.push(e);
        }
    }
    if let Ok(Some(st)) = root_dir.status_if_exists("compute_nodes") {
        let path = root.join("compute_nodes");
        let name = OsStr::new("compute_nodes");
        let mut e = side_entry(
            root,
            &path,
            "compute_nodes",
            name,
            &st,
            opts.now,
            "registry",
        );
        e.contents = nodes;
        e.verdict = "keep_in_use";
        e.reasons = vec!["nova_registry".into()];
        entries.push(e);
    }
    entries.sort_by(|a, b| a.rel_path.cmp(&b.rel_path));

    // Dangling references: backing files named but missing, and images
    // the inventory says are in use that have no base file at all.
    let mut dangling = Vec::new();
    let mut seen: BTreeSet<(String, String)> = BTreeSet::new();
    for r in &disks.refs {
        if present.contains(&r.base_name) || !seen.insert((r.via.clone(), r.base_name.clone())) {
            continue;
        }
        let rel = format!("{}/{}", opts.base_name, r.base_name);
        dangling.push(dangling_entry(
            root,
            &r.disk,
            &rel,
            &r.via,
            vec![format!("backing_file_missing:{}", r.base_name)],
        ));
    }
    for inst in opts.inventory.iter().flatten() {
        // An empty id (a volume-backed instance's image_ref "") names no
        // image that could be missing.
        for (field, id) in inst.image_ids.iter().filter(|(_, id)| !id.is_empty()) {
            let fp = system::hash::sha1_hex(id);
            let has = present
                .range(fp.clone()..)
                .next()
                .is_some_and(|n| n.starts_with(&fp));
            if !has && seen.insert((inst.uuid.clone(), fp.clone())) {
                let rel = format!("{}/{fp}", opts.base_name);
                let mut d = dangling_entry(
                    root,
                    &base_path.join(&fp),
                    &rel,
                    &format!("{}:{field}", inst.who()),
                    vec!["image_in_use_without_base_file".into()],
                );
                d.fingerprint = Some(fp);
                d.image_id = Some(id.clone());
                d.image_id_source = Some("inventory");
                dangling.push(d);
            }
        }
    }
    entries.extend(dangling);
    Ok(entries)
}

/// A `_base` entry as read: its status (from the handle opened for a
/// regular file, `lstat` otherwise), the format of its header, what its
/// name says, and what Nova sees of it (links followed: whether it is a
/// regular file, and its mtime; `None`: it does not exist for Nova).
struct BaseFile {
    st: Status,
    format: Option<formats::Format>,
    named: names::Named,
    followed: Option<(bool, (i64, u32))>,
}

/// Read the `_base` entry `name` (`hint`: what the listing says it is):
/// a regular file with one openat and one fstat through the directory
/// handle, never following a link, and its header read from that handle
/// (sidecars and partial downloads are not images: not read). `None`:
/// gone since the listing.
fn base_file(base: &Dir, name: &OsStr, hint: Option<Kind>, cache: &DiskCache) -> Option<BaseFile> {
    let named = names::classify(&lossy(name));
    let image = !matches!(
        named.class,
        Class::ChecksumSidecar | Class::InfoSidecar | Class::PartialDownload
    );
    let (st, format) = match hint {
        Some(Kind::File) | None => match base.open_if_file(name) {
            Ok((Some(f), st)) if image => {
                let h = cache.header_once(f, &st, &base.join(name).to_string_lossy());
                (st, h.ok().map(|(format, _)| format))
            }
            Ok((_, st)) => (st, None),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
            // Not readable: what lstat says, and no format.
            Err(_) => (base.status(name).ok()?, None),
        },
        Some(_) => (base.status(name).ok()?, None),
    };
    let followed = match st.kind {
        Kind::Symlink => base
            .pinned_path(name)
            .and_then(std::fs::metadata)
            .ok()
            .map(|m| {
                let nsec = u32::try_from(m.mtime_nsec()).unwrap_or(0);
                (m.is_file(), (m.mtime(), nsec))
            }),
        // Not a link: what Nova sees is the entry itself.
        k => Some((k == Kind::File, st.mtime)),
    };
    Some(BaseFile {
        st,
        format,
        named,
        followed,
    })
}

/// `map.get(key)`, without hashing the key when the map is empty (most
/// of the evidence maps, for most of a large cache's names).
fn lookup<'m, K, V, Q>(map: &'m HashMap<K, V>, key: &Q) -> Option<&'m V>
where
    K: std::borrow::Borrow<Q> + std::hash::Hash + Eq,
    Q: std::hash::Hash + Eq + ?Sized,
{
    if map.is_empty() {
        return None;
    }
    map.get(key)
}

/// The last component of a record's path (a `_base` entry's name).
fn name_in(path: &Path) -> &OsStr {
    path.file_name().unwrap_or(path.as_os_str())
}

/// Everything a `_base` entry is judged by (read-only, shared by the
/// threads that judge).
struct Judge<'a> {
    root: &'a Path,
    base_dir: &'a Dir,
    base_path: &'a Path,
    opts: &'a Options,
    fp_ids: &'a HashMap<String, String>,
    inventory_ids: &'a HashSet<String>,
    used: &'a HashMap<String, Vec<String>>,
    refs_by_name: &'a HashMap<&'a str, Vec<String>>,
    maybe_by_name: &'a HashMap<&'a str, Vec<String>>,
    fds: &'a HashMap<(u64, u64), Vec<u32>>,
    fds_complete: bool,
    missing: &'a Missing,
    nova_used_names: &'a HashSet<String>,
    marks: &'a HashMap<String, Mark>,
    inventory_gaps: &'a [String],
}

impl Judge<'_> {
    /// The record of the `_base` entry `name` (module docs).
    fn entry(&self, name: &OsStr, f: &BaseFile) -> Entry {
        let Judge {
            root,
            base_dir,
            base_path,
            opts,
            fp_ids,
            inventory_ids,
            used,
            refs_by_name,
            maybe_by_name,
            fds,
            fds_complete,
            missing,
            nova_used_names,
            marks,
            inventory_gaps,
        } = *self;
        let BaseFile {
            st,
            format,
            named,
            followed,
        } = f;
        let st = *st;
        let path = base_path.join(name);
        let text = lossy(name);
        let file_type = match st.kind {
            Kind::Symlink => "symlink",
            Kind::File => "file",
            Kind::Dir => "directory",
            Kind::Special => "other",
        };
        let rel = format!("{}/{}", opts.base_name, text);
        let mut e = new_entry(root, &path, &rel, name, &st, opts.now);
        e.file_type = file_type;
        e.class = named.class.as_str().to_owned();
        // Nova's scan keeps only what os.path.isfile accepts (links
        // followed), and ages a link by its target's mtime.
        let seen = followed.as_ref();
        e.nova_class = if seen.is_some_and(|f| f.0) {
            named.nova
        } else {
            NovaClass::Ignored
        };
        if st.kind == Kind::Symlink {
            e.nova_mtime = seen.map(|f| f.1);
        }
        e.fingerprint = named.fingerprint.clone();
        e.resize_suffix = named.resize_suffix.clone();
        if let Some(fp) = &named.fingerprint
            && let Some(id) = lookup(fp_ids, fp.as_str())
        {
            e.image_id = Some(id.clone());
            e.image_id_source = Some(if inventory_ids.contains(id) {
                "inventory"
            } else {
                "glance"
            });
            e.image_status = opts.images.get(id).and_then(|m| m.status.clone());
        }
        if st.kind == Kind::File
            && matches!(named.class, Class::ChecksumSidecar | Class::InfoSidecar)
            && let Ok(pinned) = base_dir.pinned_path(name)
        {
            e.contents = read_sidecar(&pinned, named.class);
        }
        e.format = format.map(|f| f.as_str().to_owned());
        if !matches!(named.class, Class::Unknown) {
            e.lock = Some(format!("nova-{text}"));
        }
        // Evidence.
        let mut who: Vec<String> = Vec::new();
        let fp_owner = named.fingerprint.as_ref().filter(|_| {
            matches!(
                named.class,
                Class::Original | Class::ResizedLegacy | Class::SmallLegacy
            )
        });
        if let Some(fp) = fp_owner {
            who.extend(lookup(used, fp.as_str()).into_iter().flatten().cloned());
        }
        if matches!(
            named.class,
            Class::Swap | Class::Ephemeral | Class::EphemeralLegacy
        ) {
            who.extend(lookup(used, text.as_str()).into_iter().flatten().cloned());
        }
        for via in lookup(refs_by_name, text.as_str()).into_iter().flatten() {
            if !who.contains(via) {
                who.push(via.clone());
            }
        }
        if let Some(pids) = lookup(fds, &(st.id.dev, st.id.ino))
            && st.kind == Kind::File
        {
            who.extend(pids.iter().map(|p| format!("pid:{p}")));
        }
        who.sort();
        who.dedup();
        let mut reasons = missing.reasons_for_named(&text, named.class);
        if !fds_complete {
            reasons.push("open_files_unknown".to_owned());
        }
        reasons.extend(
            lookup(maybe_by_name, text.as_str())
                .into_iter()
                .flatten()
                .cloned(),
        );
        e.in_use = if !who.is_empty() {
            "yes"
        } else if reasons.is_empty() {
            "no"
        } else {
            "unknown"
        };
        e.used_by = who;
        nova_view(&mut e, &text, nova_used_names, marks, opts);
        decide(
            &mut e,
            named,
            st.kind == Kind::File,
            &reasons,
            inventory_gaps,
            opts,
        );
        // Where cachewalk keeps what Nova deletes, say so.
        if e.verdict == "keep_in_use"
            && e.nova_in_use == Some(false)
            && let Some(why) = &e.nova_reason
        {
            e.reasons.push(format!("nova_would_remove:{why}"));
        }
        e
    }
}

/// The entry of a file Nova keeps beside its base files (a lock, the
/// registry): `class`, never a base file to Nova.
fn side_entry(
    root: &Path,
    path: &Path,
    rel: &str,
    name: &OsStr,
    st: &Status,
    now: i64,
    class: &str,
) -> Entry {
    let mut e = new_entry(root, path, rel, name, st, now);
    e.class = class.into();
    e.file_type = if st.kind == Kind::File {
        "file"
    } else {
        "other"
    };
    e.nova_class = NovaClass::Ignored;
    e
}

fn new_entry(root: &Path, path: &Path, rel: &str, name: &OsStr, st: &Status, now: i64) -> Entry {
    let bytes = std::str::from_utf8(name.as_bytes()).is_err().then(|| {
        let mut full = rel
            .rsplit_once('/')
            .map(|(dir, _)| format!("{dir}/").into_bytes())
            .unwrap_or_default();
        full.extend_from_slice(name.as_bytes());
        system::text::base64(&full)
    });
    Entry {
        record: "entry",
        path: path.to_path_buf(),
        cache: "nova_base",
        root: root.to_string_lossy().into_owned(),
        rel_path: rel.to_owned(),
        rel_path_bytes: bytes,
        class: "unknown".into(),
        file_type: "file",
        fingerprint: None,
        resize_suffix: None,
        image_id: None,
        image_id_source: None,
        dev: st.id.dev,
        ino: st.id.ino,
        size: st.size,
        allocated: st.allocated,
        mtime: system::text::rfc3339_utc(st.mtime.0, 0).unwrap_or_default(),
        age_s: now - st.mtime.0,
        mtime_nsec: st.mtime.1,
        nova_mtime: None,
        format: None,
        in_use: "unknown",
        used_by: Vec::new(),
        nova_class: NovaClass::Ignored,
        nova_in_use: None,
        nova_threshold_s: None,
        nova_eligible_at: None,
        nova_reason: None,
        threshold_s: None,
        verdict: "keep_unknown",
        reasons: Vec::new(),
        lock: None,
        contents: None,
        referenced_by: None,
        image_status: None,
        verification: None,
    }
}

fn dangling_entry(root: &Path, path: &Path, rel: &str, via: &str, reasons: Vec<String>) -> Entry {
    Entry {
        record: "dangling_reference",
        path: path.to_path_buf(),
        cache: "nova_base",
        root: root.to_string_lossy().into_owned(),
        rel_path: rel.to_owned(),
        rel_path_bytes: None,
        class: "missing".into(),
        file_type: "missing",
        fingerprint: None,
        resize_suffix: None,
        image_id: None,
        image_id_source: None,
        dev: 0,
        ino: 0,
        size: 0,
        allocated: 0,
        mtime: String::new(),
        age_s: 0,
        mtime_nsec: 0,
        nova_mtime: None,
        format: None,
        in_use: "yes",
        used_by: vec![via.to_owned()],
        nova_class: NovaClass::Ignored,
        nova_in_use: None,
        nova_threshold_s: None,
        nova_eligible_at: None,
        nova_reason: None,
        threshold_s: None,
        verdict: "dangling_reference",
        reasons,
        lock: None,
        contents: None,
        referenced_by: Some(via.to_owned()),
        image_status: None,
        verification: None,
    }
}

/// `--verify`: hash every cached image file (on every core) against its
/// sidecar and, where the bytes can be Glance's, Glance's digests; a
/// mismatch makes the verdict `corrupt` (nothing is deleted for it).
fn verify_entries(entries: &mut [Entry], opts: &Options) {
    let todo: Vec<usize> = entries
        .iter()
        .enumerate()
        .filter(|(_, e)| {
            e.file_type == "file"
                && !matches!(
                    e.class.as_str(),
                    "checksum_sidecar" | "info_sidecar" | "partial_download" | "unknown"
                )
        })
        .map(|(i, _)| i)
        .collect();
    let results = par_map(&todo, |&i| {
        let e = &entries[i];
        let meta = e.image_id.as_ref().and_then(|id| opts.images.get(id));
        // force_raw_images converts: Glance's digests describe the bytes
        // only when the image is raw or was cached in its own format.
        let comparable = meta
            .is_some_and(|m| m.disk_format.as_deref() == Some("raw") || m.disk_format == e.format);
        let (sidecar_sha1, sidecar_malformed) = match crate::verify::sidecar_sha1(&e.path) {
            crate::verify::Stored::Sha1(h) => (Some(h), None),
            crate::verify::Stored::Absent => (None, None),
            crate::verify::Stored::Malformed(why) => (None, Some(why)),
        };
        let expect = crate::verify::Expect {
            sidecar_sha1,
            sidecar_malformed,
            glance: meta.filter(|_| comparable),
            converted: meta.is_some() && !comparable,
        };
        crate::verify::verify(&e.path, &expect)
    });
    for (i, v) in todo.into_iter().zip(results) {
        let e = &mut entries[i];
        if v.verified == Value::Bool(false) {
            let was = format!("was:{}", e.verdict);
            let mut reasons: Vec<String> =
                v.mismatch.iter().map(|m| format!("mismatch:{m}")).collect();
            reasons.push(was);
            e.verdict = "corrupt";
            e.reasons = reasons;
        }
        e.verification = Some(v);
    }
}

/// Why Nova counts an original or resized file in use, or why not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Mark {
    /// Found by `_find_base_file` for a used image id.
    ImageInUse,
    /// The backing file of a current instance's `disk`.
    BackingFile,
    /// Skipped by `_find_base_file`'s loop: the entry before it in the
    /// list it iterates was struck off that list meanwhile.
    Skipped(String),
}

/// Whether `name` is `<fp>_<digits>` as Nova's `'.*/%s_[0-9]+$'` matches
/// it (`$` also matches before a final newline).
fn is_resized_of(name: &str, fp: &str) -> bool {
    let Some(rest) = name.strip_prefix(fp).and_then(|r| r.strip_prefix('_')) else {
        return false;
    };
    let digits = rest.strip_suffix('\n').unwrap_or(rest);
    !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit())
}

/// Nova's pass over the original and resized buckets, step by step as
/// `nova/virt/libvirt/imagecache.py` runs it, on `listing` in
/// `os.listdir` order (name, exists, is a file following symlinks):
/// `_scan_base_images` puts every 40-character name and every longer one
/// with `_` at 40 that is a file into `unexplained_images`; for each used
/// image's fingerprint in order, `_find_base_file` yields `<fp>` and
/// `<fp>_sm` if they exist, then walks `unexplained_images` for
/// `<fp>_<digits>` while `_mark_in_use` removes each match from that very
/// list, so Python's iterator skips the entry after each match (upstream
/// test_verify_base_images: `<fp>_10737418240` right after
/// `<fp>_5368709120` is left for removal); then `_list_backing_images`
/// strikes off the backing files of `disk`. Names left out are what Nova
/// removes once old enough.
pub(crate) fn nova_marks(
    listing: &[(String, bool, bool)],
    used_fps: &[String],
    backing: &HashSet<String>,
) -> HashMap<String, Mark> {
    let mut marks: HashMap<String, Mark> = HashMap::new();
    if used_fps.is_empty() && backing.is_empty() {
        return marks;
    }
    // Nova's list, with removals as flags and a count of what is left
    // (the same steps without shifting a list of every name for each
    // image: linear in names and used images, not their product).
    let mut list = Unexplained::new(
        listing
            .iter()
            .filter(|(n, _, file)| {
                *file
                    && matches!(
                        names::nova_class(n),
                        NovaClass::Original | NovaClass::Resized
                    )
            })
            .map(|(n, _, _)| n.as_str())
            .collect(),
    );
    let exists: HashSet<&str> = listing
        .iter()
        .filter(|(_, e, _)| *e)
        .map(|(n, _, _)| n.as_str())
        .collect();
    // `<fp>_<digits>` names by `<fp>`, in list order.
    let mut resized: HashMap<&str, Vec<usize>> = HashMap::new();
    for (i, n) in list.names.iter().enumerate() {
        if let Some((fp, _)) = n.rsplit_once('_')
            && is_resized_of(n, fp)
        {
            resized.entry(fp).or_default().push(i);
        }
    }
    for fp in used_fps {
        for cand in [fp.clone(), format!("{fp}_sm")] {
            if exists.contains(cand.as_str()) {
                list.strike(&cand);
                marks.insert(cand, Mark::ImageInUse);
            }
        }
        // Python's iterator moves on after each removal, so the entry
        // right after a match is skipped: a match there is left alone.
        let hits: Vec<usize> = resized
            .get(fp.as_str())
            .into_iter()
            .flatten()
            .copied()
            .filter(|&i| list.alive(i))
            .collect();
        let mut k = 0;
        while k < hits.len() {
            let hit = list.names[hits[k]];
            list.remove(hits[k]);
            if let Some(&next) = hits.get(k + 1)
                && list.left_between(hits[k], next) == 0
            {
                marks
                    .entry(list.names[next].to_owned())
                    .or_insert_with(|| Mark::Skipped(hit.to_owned()));
                k += 1;
            }
            marks.insert(hit.to_owned(), Mark::ImageInUse);
            k += 1;
        }
    }
    // A skip matters only for what is still unexplained.
    marks.retain(|n, m| !matches!(m, Mark::Skipped(_)) || list.contains(n));
    for b in backing {
        if list.contains(b) {
            list.strike(b);
            marks.insert(b.clone(), Mark::BackingFile);
        }
    }
    marks
}

/// Nova's `unexplained_images` list: names in list order, each struck
/// off at most once, with how many are left before each position (a
/// Fenwick tree) to tell whether two entries are next to each other.
struct Unexplained<'a> {
    names: Vec<&'a str>,
    at: HashMap<&'a str, usize>,
    left: Vec<bool>,
    tree: Vec<i64>,
}

impl<'a> Unexplained<'a> {
    fn new(names: Vec<&'a str>) -> Self {
        let mut at = HashMap::with_capacity(names.len());
        for (i, n) in names.iter().enumerate() {
            // `list.remove(name)` strikes the first of equal names.
            at.entry(*n).or_insert(i);
        }
        let mut u = Unexplained {
            left: vec![true; names.len()],
            tree: vec![0; names.len() + 1],
            at,
            names,
        };
        for i in 0..u.names.len() {
            u.add(i, 1);
        }
        u
    }

    fn add(&mut self, i: usize, d: i64) {
        let mut j = i + 1;
        while j < self.tree.len() {
            self.tree[j] += d;
            j += j & j.wrapping_neg();
        }
    }

    /// Entries left in `0..i`.
    fn before(&self, i: usize) -> i64 {
        let (mut j, mut sum) = (i, 0);
        while j > 0 {
            sum += self.tree[j];
            j -= j & j.wrapping_neg();
        }
        sum
    }

    /// Entries left strictly between positions `a < b`.
    fn left_between(&self, a: usize, b: usize) -> i64 {
        self.before(b) - self.before(a + 1)
    }

    fn alive(&self, i: usize) -> bool {
        self.left[i]
    }

    fn remove(&mut self, i: usize) {
        if std::mem::replace(&mut self.left[i], false) {
            self.add(i, -1);
        }
    }

    fn contains(&self, name: &str) -> bool {
        self.at.get(name).is_some_and(|&i| self.left[i])
    }

    fn strike(&mut self, name: &str) {
        if let Some(&i) = self.at.get(name) {
            self.remove(i);
        }
    }
}

/// Nova's view of `e` (section 1.3-1.6, today's code, [`nova_marks`]).
fn nova_view(
    e: &mut Entry,
    name: &str,
    nova_used_names: &HashSet<String>,
    marks: &HashMap<String, Mark>,
    opts: &Options,
) {
    let threshold = match e.nova_class {
        NovaClass::Original | NovaClass::Swap | NovaClass::Ephemeral => Some(opts.original_age),
        NovaClass::Resized => Some(opts.resized_age),
        NovaClass::Ignored => None,
    };
    e.nova_threshold_s = threshold;
    if threshold.is_none() {
        return;
    }
    let Some(_) = &opts.inventory else {
        return;
    };
    let (in_use, why) = match e.nova_class {
        NovaClass::Original | NovaClass::Resized => match marks.get(name) {
            Some(Mark::ImageInUse) => (true, "image_in_use".to_owned()),
            Some(Mark::BackingFile) => (true, "backing_file_of_disk".to_owned()),
            Some(Mark::Skipped(after)) => (false, format!("skipped_after:{after}")),
            None => (false, "unexplained".to_owned()),
        },
        _ if nova_used_names.contains(name) => (true, "predicted_name_in_use".to_owned()),
        _ => (false, "unexplained".to_owned()),
    };
    e.nova_in_use = Some(in_use);
    e.nova_reason = Some(why);
    if !in_use && let Some(t) = threshold {
        let (secs, nsec) = e.nova_mtime.unwrap_or((opts.now - e.age_s, e.mtime_nsec));
        // The first whole second at which Nova's float age reaches t.
        let at = secs + t as i64 + i64::from(nsec > 0);
        e.nova_eligible_at = system::text::rfc3339_utc(at, 0);
    }
}

/// Whether a file `age_s` seconds old by whole seconds, with `nsec` past
/// its mtime's second, is younger than `threshold`, as Nova's float age
/// (`time.time() - os.path.getmtime()`) compares: an age of exactly the
/// threshold is old enough only when the mtime has no sub-second part.
pub fn too_young(age_s: i64, nsec: u32, threshold: u64) -> bool {
    let t = i64::try_from(threshold).unwrap_or(i64::MAX);
    age_s < t || (age_s == t && nsec > 0)
}

/// cachewalk's verdict (module docs).
fn decide(
    e: &mut Entry,
    named: &names::Named,
    regular: bool,
    walk_reasons: &[String],
    inventory_gaps: &[String],
    opts: &Options,
) {
    let understood = names::removable(named.class) || named.class == Class::PartialDownload;
    let threshold = match named.class {
        Class::ResizedLegacy | Class::SmallLegacy => opts.resized_age,
        _ => opts.original_age,
    };
    let mut reasons = Vec::new();
    let verdict = if !regular {
        reasons.push(format!("not_a_regular_file:{}", e.file_type));
        "keep_unknown"
    } else if !understood {
        reasons.push("name_not_understood".to_owned());
        "keep_unknown"
    } else if e.in_use == "yes" {
        reasons.extend(e.used_by.iter().map(|w| format!("used_by:{w}")));
        "keep_in_use"
    } else if !walk_reasons.is_empty() {
        reasons.extend(walk_reasons.iter().cloned());
        "keep_unknown"
    } else if too_young(e.age_s, e.mtime_nsec, threshold) {
        reasons.push(format!("younger_than_{threshold}s"));
        "keep_young"
    } else if named.class == Class::PartialDownload {
        // Not open, old: a download that died. Nova never cleans these.
        reasons.push("not_referenced".to_owned());
        reasons.push("not_open".to_owned());
        "orphan_temp"
    } else if named.nova == NovaClass::Ignored {
        // Candidates are what Nova itself would delete, once proven
        // unused; what Nova never touches is left to the operator.
        reasons.push("nova_never_removes_it".to_owned());
        "keep_unknown"
    } else if !inventory_gaps.is_empty() {
        reasons.extend(inventory_gaps.iter().cloned());
        "keep_inventory_incomplete"
    } else if let Some(s) = e
        .image_status
        .as_deref()
        .filter(|s| *s != "active" && *s != "deleted")
    {
        // A deactivated image may be reactivated; deleted ones may go.
        reasons.push(format!("glance_status_{s}"));
        "keep_unknown"
    } else {
        reasons.push("not_referenced".to_owned());
        reasons.push("not_open".to_owned());
        reasons.push(format!("older_than_{threshold}s"));
        "candidate"
    };
    e.threshold_s = understood.then_some(threshold);
    e.verdict = verdict;
    e.reasons = reasons;
}

#[cfg(test)]
mod nova_marks_tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// Nova's test_verify_base_images, in its listing order: image 1 is
    /// used (its `_5368709120` backs both disks), 21 and 22 are its
    /// kernel and ramdisk; `_10737418240`, right after `_5368709120` in
    /// the list Nova iterates while striking entries off, is skipped and
    /// removed, like 42 and the `_sm` files nobody uses.
    #[test]
    fn upstream_verify_base_images() {
        let h1 = "356a192b7913b04c54574d18c28d46e6395428ab";
        let h21 = "472b07b9fcf2c2451e8781e944bf5f77cd8457c8";
        let h22 = "12c6fc06c99a462375eeb3f43dfd832b08ca9e17";
        let h42 = "92cfceb39d57d914ed8b14d0e37643de0797ae56";
        assert_eq!(system::hash::sha1_hex("1"), h1);
        let listing: Vec<(String, bool, bool)> = [
            "00000001",
            "ephemeral_0_20_None",
            "e97222e91fc4241f49a7f520d1dcf446751129b3_sm",
            "e09c675c2d1cfac32dae3c2d83689c8c94bc693b_sm",
            h42,
            h1,
            h21,
            h22,
            &format!("{h1}_5368709120"),
            &format!("{h1}_10737418240"),
            "00000004",
        ]
        .iter()
        .map(|n| ((*n).to_owned(), true, true))
        .collect();
        let used: Vec<String> = ["1", "21", "22"]
            .iter()
            .map(|i| system::hash::sha1_hex(i))
            .collect();
        let backing = HashSet::from([format!("{h1}_5368709120")]);
        let m = nova_marks(&listing, &used, &backing);
        let active: BTreeSet<&str> = m
            .iter()
            .filter(|(_, v)| !matches!(v, Mark::Skipped(_)))
            .map(|(k, _)| k.as_str())
            .collect();
        let want_5g = format!("{h1}_5368709120");
        assert_eq!(active, BTreeSet::from([h1, h21, h22, want_5g.as_str()]));
        assert_eq!(
            m.get(&format!("{h1}_10737418240")),
            Some(&Mark::Skipped(want_5g.clone()))
        );
        assert_eq!(m[&want_5g], Mark::ImageInUse);
        // In the other order Nova marks _10737418240 and skips
        // _5368709120, which its disk's backing file then protects.
        let mut other = listing.clone();
        other.swap(8, 9);
        let m = nova_marks(&other, &used, &backing);
        assert_eq!(m[&format!("{h1}_10737418240")], Mark::ImageInUse);
        assert_eq!(m[&want_5g], Mark::BackingFile);
        // Nova's pattern: digits only, `$` allowing a final newline.
        assert!(is_resized_of(&format!("{h1}_12\n"), h1));
        assert!(!is_resized_of(&format!("{h1}_sm"), h1));
        assert!(!is_resized_of(&format!("{h1}_"), h1));
    }

    /// The list-shifting model of Nova's loop, step by step (the reference
    /// the indexed version is checked against).
    fn nova_marks_by_list(
        listing: &[(String, bool, bool)],
        used_fps: &[String],
        backing: &HashSet<String>,
    ) -> HashMap<String, Mark> {
        let mut unexplained: Vec<&str> = listing
            .iter()
            .filter(|(n, _, file)| {
                *file
                    && matches!(
                        names::nova_class(n),
                        NovaClass::Original | NovaClass::Resized
                    )
            })
            .map(|(n, _, _)| n.as_str())
            .collect();
        let exists: HashSet<&str> = listing
            .iter()
            .filter(|(_, e, _)| *e)
            .map(|(n, _, _)| n.as_str())
            .collect();
        let mut marks: HashMap<String, Mark> = HashMap::new();
        let strike = |list: &mut Vec<&str>, name: &str| {
            if let Some(i) = list.iter().position(|n| *n == name) {
                list.remove(i);
            }
        };
        for fp in used_fps {
            for cand in [fp.clone(), format!("{fp}_sm")] {
                if exists.contains(cand.as_str()) {
                    strike(&mut unexplained, &cand);
                    marks.insert(cand, Mark::ImageInUse);
                }
            }
            let mut i = 0;
            while i < unexplained.len() {
                if is_resized_of(unexplained[i], fp) {
                    let hit = unexplained.remove(i).to_owned();
                    if let Some(next) = unexplained.get(i).filter(|n| is_resized_of(n, fp)) {
                        marks
                            .entry((*next).to_owned())
                            .or_insert_with(|| Mark::Skipped(hit.clone()));
                    }
                    marks.insert(hit, Mark::ImageInUse);
                }
                i += 1;
            }
        }
        // A skip matters only for what is still unexplained.
        marks.retain(|n, m| !matches!(m, Mark::Skipped(_)) || unexplained.contains(&n.as_str()));
        for b in backing {
            if unexplained.contains(&b.as_str()) {
                strike(&mut unexplained, b);
                marks.insert(b.clone(), Mark::BackingFile);
            }
        }
        marks
    }

    /// Names around two fingerprints, with gaps, in every order a seed
    /// gives: the indexed model marks exactly what the list model marks.
    #[test]
    fn indexed_marks_are_the_list_models() {
        let fps: Vec<String> = ["a", "b"]
            .iter()
            .map(|i| system::hash::sha1_hex(i))
            .collect();
        let pool: Vec<String> = fps
            .iter()
            .flat_map(|fp| {
                [
                    fp.clone(),
                    format!("{fp}_sm"),
                    // Nova's resized bucket: longer than 42 characters.
                    format!("{fp}_11"),
                    format!("{fp}_22"),
                    format!("{fp}_33"),
                    format!("{fp}_4"),
                    format!("{fp}_10\n"),
                    format!("{fp}_x"),
                ]
            })
            .chain(["swap_1".to_owned(), "z".repeat(40)])
            .collect();
        let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let mut skipped = 0;
        for _ in 0..2000 {
            let mut names = pool.clone();
            for i in (1..names.len()).rev() {
                names.swap(i, (next() % (i as u64 + 1)) as usize);
            }
            names.truncate(4 + (next() % names.len() as u64) as usize % (names.len() - 3));
            let listing: Vec<(String, bool, bool)> = names
                .iter()
                .map(|n| (n.clone(), next() % 8 != 0, next() % 6 != 0))
                .collect();
            let used: Vec<String> = fps.iter().filter(|_| next() % 4 != 0).cloned().collect();
            let backing: HashSet<String> =
                names.iter().filter(|_| next() % 5 == 0).cloned().collect();
            let want = nova_marks_by_list(&listing, &used, &backing);
            skipped += want
                .values()
                .filter(|m| matches!(m, Mark::Skipped(_)))
                .count();
            assert_eq!(
                nova_marks(&listing, &used, &backing),
                want,
                "{listing:?} {used:?} {backing:?}"
            );
        }
        // The case that matters was met, many times.
        assert!(skipped > 100, "{skipped} skips");
    }
}
