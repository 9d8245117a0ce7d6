//! `cachewalk nova --audit`: hostile headers where Nova expects raw. A
//! guest writes what it likes to a raw root or ephemeral disk, including a
//! qcow2 header naming a host file; a later resize or snapshot that probes
//! the format reads it as qcow2 (CVE-2026-24708). A `_base` file holds a
//! raw image (Nova's force_raw_images). So every instance disk and cache
//! file is probed by its headers (read-only, no qemu-img): a file Nova
//! treats as raw that carries another format's header is
//! `format_confusion`; a qcow2 with a data file, or whose backing file is
//! outside `_base`, is flagged too.

use formats::{FileSource, FormatError, probe};
use serde::Serialize;
use serde_json::Value;
use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Component, Path, PathBuf};

/// Cache sidecars, not images.
const SIDECARS: &[&str] = &[".info", ".sha1"];

/// One audited file.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Finding {
    /// The file (the record's top-level `path`).
    #[serde(skip)]
    pub path: PathBuf,
    /// Relative to INSTANCES_PATH.
    pub rel_path: String,
    /// `instance_disk` or `base`.
    pub role: &'static str,
    /// The format Nova treats the file as, where known.
    pub expected: Option<String>,
    /// Where that comes from: `disk.info`, `base` (force_raw_images) or
    /// `assume_raw`.
    pub expected_from: Option<&'static str>,
    /// The format its headers say (qemu's names), or the one whose broken
    /// header it carries.
    pub found: String,
    /// The backing file its header names.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backing_file: Option<String>,
    /// The data file its header names.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_file: Option<String>,
    /// `format_confusion`, `data_file`, `backing_outside_base`,
    /// `unreadable`.
    pub flags: Vec<&'static str>,
    /// `ok` or `unsafe`.
    pub verdict: &'static str,
}

/// An instance's `disk.info`: disk file name → the format Nova recorded.
/// Its keys are absolute paths as Nova saw them (the tree may be mounted
/// elsewhere now), so only their file names count.
pub fn disk_info(dir: &Path) -> BTreeMap<String, String> {
    match system::tree::Dir::open(dir) {
        Ok(d) => disk_info_of(&d),
        Err(_) => BTreeMap::new(),
    }
}

/// [`disk_info`] through a directory handle: `disk.info` is opened
/// without following a link (a link there is not Nova's).
pub fn disk_info_of(dir: &system::tree::Dir) -> BTreeMap<String, String> {
    let Ok(f) = dir.open_file("disk.info") else {
        return BTreeMap::new();
    };
    // A disk.info is a few hundred bytes; a huge one is not Nova's.
    let mut text = Vec::new();
    if f.take((1 << 20) + 1).read_to_end(&mut text).is_err() || text.len() > 1 << 20 {
        return BTreeMap::new();
    }
    let Ok(Value::Object(map)) = serde_json::from_slice::<Value>(&text) else {
        return BTreeMap::new();
    };
    map.into_iter()
        .filter_map(|(k, v)| {
            let name = Path::new(&k).file_name()?.to_string_lossy().into_owned();
            Some((name, v.as_str()?.to_owned()))
        })
        .collect()
}

/// Regular files (never symlinks) of `dir` passing `keep`, sorted.
fn files(dir: &Path, keep: impl Fn(&str) -> bool) -> Vec<PathBuf> {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut v: Vec<PathBuf> = rd
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
        .filter(|e| keep(&e.file_name().to_string_lossy()))
        .map(|e| e.path())
        .collect();
    v.sort();
    v
}

/// Audit every instance disk and cache file under `root` (module docs).
pub fn audit(root: &Path, base_name: &str, assume_raw: bool) -> std::io::Result<Vec<Finding>> {
    // A _base that is a link is refused (kind symlink), as the walk does:
    // its files are not the cache's.
    let root_dir = system::tree::Dir::open(root)?;
    root_dir.subdir_if_exists(base_name).map_err(|e| {
        system::files::refusal(filter::ErrorKind::from_io(&e), format!("{base_name}: {e}"))
    })?;
    let base = root.join(base_name);
    let base_norm = normalize(&base);
    let mut out = Vec::new();
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(root)?
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .filter(|e| {
            let n = e.file_name();
            n != base_name && n != "locks"
        })
        .map(|e| e.path())
        .collect();
    dirs.sort();
    for dir in &dirs {
        let info = disk_info(dir);
        for disk in files(dir, |n| n.starts_with("disk") && n != "disk.info") {
            let name = disk
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let (expected, from) = match info.get(&name) {
                Some(f) => (Some(f.clone()), Some("disk.info")),
                None if assume_raw => (Some("raw".to_owned()), Some("assume_raw")),
                None => (None, None),
            };
            out.push(judge(
                root,
                &disk,
                "instance_disk",
                expected,
                from,
                &base_norm,
            ));
        }
    }
    for f in files(&base, |n| !SIDECARS.iter().any(|s| n.ends_with(s))) {
        out.push(judge(
            root,
            &f,
            "base",
            Some("raw".to_owned()),
            Some("base"),
            &base_norm,
        ));
    }
    Ok(out)
}

fn judge(
    root: &Path,
    path: &Path,
    role: &'static str,
    expected: Option<String>,
    expected_from: Option<&'static str>,
    base_norm: &Path,
) -> Finding {
    let rel_path = path
        .strip_prefix(root)
        .unwrap_or(path)
        .to_string_lossy()
        .into_owned();
    let mut flags = Vec::new();
    let (found, info) = match FileSource::open(path)
        .map_err(FormatError::Io)
        .and_then(|src| probe(&src, &path.to_string_lossy(), None))
    {
        Ok(p) => (p.format.as_str().to_owned(), Some(p)),
        // A header that carries a format's magic but does not parse is
        // that format's as far as a prober is concerned.
        Err(FormatError::Io(_)) => {
            flags.push("unreadable");
            ("unknown".to_owned(), None)
        }
        Err(e) => (broken_format(&e), None),
    };
    let backing_file = info
        .as_ref()
        .and_then(|p| p.backing.as_ref())
        .map(|b| b.name_lossy().into_owned());
    let data_file = info
        .as_ref()
        .and_then(|p| p.data_file.as_deref())
        .map(|d| String::from_utf8_lossy(d).into_owned());
    let raw = |f: &str| f == "raw" || f == "unknown";
    if let Some(e) = &expected
        && (e == "raw" || e == "iso")
        && !raw(&found)
    {
        flags.push("format_confusion");
    }
    if data_file.is_some() {
        flags.push("data_file");
    }
    if let Some(b) = &backing_file {
        let target = if Path::new(b).is_absolute() {
            PathBuf::from(b)
        } else {
            path.parent().unwrap_or(Path::new(".")).join(b)
        };
        if normalize(&target).parent() != Some(base_norm) || b.contains(':') {
            flags.push("backing_outside_base");
        }
    }
    let verdict = if flags.iter().any(|f| *f != "unreadable") {
        "unsafe"
    } else {
        "ok"
    };
    Finding {
        path: path.to_path_buf(),
        rel_path,
        role,
        expected,
        expected_from,
        found,
        backing_file,
        data_file,
        flags,
        verdict,
    }
}

/// The format whose header failed to parse.
fn broken_format(e: &FormatError) -> String {
    match e {
        FormatError::Invalid { format, .. }
        | FormatError::Truncated { format, .. }
        | FormatError::TooLarge { format, .. } => (*format).to_owned(),
        FormatError::Io(_) => "unknown".to_owned(),
    }
}

/// `p` with `.` and `..` resolved lexically (never through the
/// filesystem, so symlinks are not followed).
fn normalize(p: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            other => out.push(other.as_os_str()),
        }
    }
    out
}
