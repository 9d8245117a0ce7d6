//! `--dir DIR`: a dump directory as records, ours (glance-dump --dir: v2
//! metadata) or an old glance-replicator dump (v1 metadata, mapped to v2).
//! As the replicator does, only entries named by a UUID are metadata; the
//! data is `<id>.img` beside it, the members (ours) `<id>.members`.
//! Symlinks are refused: a dump is plain files, and a link could make us
//! upload a file from elsewhere.

use common::{ErrorKind, Record};
use serde_json::{Map, Value};
use std::path::{Path, PathBuf};

/// The largest metadata file read (a v2 image with many properties is a
/// few KiB).
const MAX_META: u64 = 1 << 20;

/// Keys of v1 metadata with no v2 counterpart (or one the server owns).
const V1_DROPPED: &[&str] = &[
    "deleted",
    "deleted_at",
    "location",
    "is_public",
    "properties",
];

/// Whether `name` is a UUID in its canonical 8-4-4-4-12 hex form.
pub fn is_uuid(name: &str) -> bool {
    let b = name.as_bytes();
    b.len() == 36
        && b.iter().enumerate().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => *c == b'-',
            _ => c.is_ascii_hexdigit(),
        })
}

/// The metadata files of `dir`, by name (the order is stable across runs).
pub fn entries(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut v = Vec::new();
    for e in std::fs::read_dir(dir)? {
        let e = e?;
        if e.file_name().to_str().is_some_and(is_uuid) {
            v.push(e.path());
        }
    }
    v.sort();
    Ok(v)
}

/// Why an entry could not be read.
// The record's `path` is the metadata file: messages name only the other
// files (`<id>.img`, `<id>.members`), and by name, never the whole path.
#[derive(Debug, thiserror::Error)]
pub enum DirError {
    /// Reading failed.
    #[error("{}{source}", other(path))]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Not a regular file (a symlink, a directory, ...).
    #[error("{}not a regular file (a dump holds plain files only)", other(.0))]
    NotAFile(PathBuf),
    /// Not a JSON object, or too large.
    #[error("{}{why}", other(path))]
    Bad {
        /// The file.
        path: PathBuf,
        /// Why.
        why: String,
    },
    /// The metadata's id is not its file name: `<id>.img` would be
    /// loaded as another image.
    #[error("the metadata's id {id:?} is not its file name")]
    IdMismatch {
        /// The id in the metadata.
        id: String,
    },
}

impl DirError {
    /// The record's `error.kind`.
    pub fn kind(&self) -> ErrorKind {
        match self {
            DirError::Io { source, .. } => ErrorKind::from_io(source),
            DirError::NotAFile(_) => ErrorKind::Refused,
            DirError::Bad { .. } => ErrorKind::BadJson,
            DirError::IdMismatch { .. } => ErrorKind::BadRecord,
        }
    }
}

/// A regular file's metadata; symlinks are not followed.
fn plain_file(path: &Path) -> Result<Option<std::fs::Metadata>, DirError> {
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_file() => Ok(Some(m)),
        Ok(_) => Err(DirError::NotAFile(path.to_path_buf())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(DirError::Io {
            path: path.to_path_buf(),
            source,
        }),
    }
}

fn read_json(path: &Path) -> Result<Value, DirError> {
    let m = plain_file(path)?.ok_or_else(|| DirError::Io {
        path: path.to_path_buf(),
        source: std::io::ErrorKind::NotFound.into(),
    })?;
    if m.len() > MAX_META {
        return Err(DirError::Bad {
            path: path.to_path_buf(),
            why: format!("{} bytes: larger than any image metadata", m.len()),
        });
    }
    let text = std::fs::read(path).map_err(|source| DirError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    serde_json::from_slice(&text).map_err(|e| DirError::Bad {
        path: path.to_path_buf(),
        why: format!("not JSON: {e}"),
    })
}

/// The record for the metadata file `meta`: top-level `path` (the data
/// file, when there is one), `image` (v2, mapped from v1 if need be) and
/// `dump` (`meta_path`, `format`: v2 or v1, `members`). The bare record
/// (with `path` naming the metadata) on error.
pub fn record(meta: &Path) -> Result<Record, (Record, DirError)> {
    let fail = |e: DirError| {
        let mut r = Record::from_path(&meta.to_string_lossy());
        r.set(
            "dump",
            serde_json::json!({"meta_path": meta.to_string_lossy()}),
        );
        (r, e)
    };
    let v = read_json(meta).map_err(fail)?;
    let Value::Object(img) = v else {
        return Err(fail(DirError::Bad {
            path: meta.to_path_buf(),
            why: "not a JSON object".into(),
        }));
    };
    let id = img.get("id").and_then(Value::as_str).unwrap_or("");
    if id != file_name(meta) {
        return Err(fail(DirError::IdMismatch { id: id.to_owned() }));
    }
    let legacy = is_v1(&img);
    let img = if legacy { from_v1(img) } else { img };
    let data = meta.with_file_name(format!("{}.img", file_name(meta)));
    let members = meta.with_file_name(format!("{}.members", file_name(meta)));
    let has_data = plain_file(&data).map_err(fail)?.is_some();
    let members = match plain_file(&members).map_err(fail)? {
        Some(_) => Some(read_json(&members).map_err(fail)?),
        None => None,
    };
    let mut m = Map::new();
    if has_data {
        m.insert("path".into(), data.to_string_lossy().into_owned().into());
    }
    m.insert("image".into(), Value::Object(img));
    let mut dump = Map::new();
    dump.insert(
        "meta_path".into(),
        meta.to_string_lossy().into_owned().into(),
    );
    dump.insert("format".into(), (if legacy { "v1" } else { "v2" }).into());
    if let Some(ms) = members {
        dump.insert("members".into(), ms);
    }
    m.insert("dump".into(), Value::Object(dump));
    Ok(Record::from_map(m))
}

/// `name: ` for a file other than the metadata (whose name is a UUID, and
/// the record's `path`), else nothing.
fn other(p: &Path) -> String {
    let name = p.file_name().unwrap_or(p.as_os_str()).to_string_lossy();
    if is_uuid(&name) {
        String::new()
    } else {
        format!("{name}: ")
    }
}

fn file_name(p: &Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// v1 metadata (the replicator's `dump` of a v1 server) has `is_public`
/// and a `properties` object; v2 has neither.
fn is_v1(img: &Map<String, Value>) -> bool {
    img.contains_key("is_public") || img.get("properties").is_some_and(Value::is_object)
}

/// v1 → v2: `is_public` becomes `visibility`, `properties` are flattened
/// (a null property is dropped, never "None"; a base key is not
/// overwritten by a property), `deleted*` and `location` go.
pub fn from_v1(mut img: Map<String, Value>) -> Map<String, Value> {
    let public = img.get("is_public").and_then(Value::as_bool);
    let props = img.remove("properties");
    for k in V1_DROPPED {
        img.remove(*k);
    }
    if let Some(p) = public {
        img.insert(
            "visibility".into(),
            (if p { "public" } else { "private" }).into(),
        );
    }
    if let Some(Value::Object(props)) = props {
        for (k, v) in props {
            if img.contains_key(&k) {
                continue;
            }
            let v = match v {
                Value::Null => continue,
                Value::String(s) => s,
                other => other.to_string(),
            };
            img.insert(k, v.into());
        }
    }
    img
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn uuids_only() {
        assert!(is_uuid("4fe257e0-c119-408e-9053-0be3f4940d6d"));
        assert!(is_uuid("4FE257E0-C119-408E-9053-0BE3F4940D6D"));
        assert!(!is_uuid("4fe257e0-c119-408e-9053-0be3f4940d6d.img"));
        assert!(!is_uuid("4fe257e0c119408e90530be3f4940d6d"));
        assert!(!is_uuid("4fe257e0-c119-408e-9053-0be3f4940d6g"));
        assert!(!is_uuid("README"));
    }

    #[test]
    fn v1_metadata_maps_to_v2() {
        // The replicator's dump of a Pike v1 server (notes: A.3).
        let v1 = json!({"status": "active", "virtual_size": null, "name": "cirros-test",
            "deleted": false, "container_format": "bare", "created_at": "2026-11-22T18:13:35.277990",
            "disk_format": "raw", "updated_at": "2026-11-22T18:13:35.381449",
            "properties": {"os_distro": "cirros", "gone": null, "name": "not the name"},
            "owner": null, "protected": false, "min_ram": 64,
            "checksum": "ca192a1bde18c914cd9828513156361f", "min_disk": 0, "is_public": true,
            "deleted_at": null, "id": "4fe257e0-c119-408e-9053-0be3f4940d6d", "size": 2000000});
        let Value::Object(m) = v1 else { unreachable!() };
        assert!(is_v1(&m));
        let v2 = from_v1(m);
        assert_eq!(v2["visibility"], "public");
        assert_eq!(v2["os_distro"], "cirros");
        assert_eq!(v2["name"], "cirros-test");
        for k in ["deleted", "deleted_at", "is_public", "properties", "gone"] {
            assert!(!v2.contains_key(k), "{k}");
        }
        assert_eq!(v2["min_ram"], 64);
        let private = from_v1(
            json!({"is_public": false, "location": "file:///x"})
                .as_object()
                .cloned()
                .unwrap_or_default(),
        );
        assert_eq!(private.get("visibility"), Some(&json!("private")));
        assert!(!private.contains_key("location"));
    }
}
