//! `--dir DIR`: a dump directory as records, ours (glance-dump --dir: v2
//! metadata) or an old glance-replicator dump (v1 metadata, mapped to v2).
//! As the replicator does, only entries named by a UUID are metadata; the
//! data is `<id>.img` beside it, the members (ours) `<id>.members`.
//!
//! The directory is opened once ([`Dir`]) and every file in it is reached
//! relative to that handle, never following a link: a dump is plain files,
//! and a link (or a FIFO, a device) could make us upload, or block on, a
//! file from elsewhere. The data file is only listed here (its status kept
//! in [`Listed`]); it is opened once, later, and that handle is checked
//! against the listing, then probed, hashed and uploaded.

use filter::{ErrorKind, Record};
use serde_json::{Map, Value};
use std::io::Read;
use std::path::Path;
use system::tree::{Dir, Kind, Status};

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

/// Open the dump directory `path` (links in the operator's path are
/// followed, once) and list its metadata files by name (the order is
/// stable across runs).
pub fn open(path: &Path) -> std::io::Result<(Dir, Vec<String>)> {
    let dir = Dir::open(path)?;
    let mut v: Vec<String> = dir
        .names()?
        .into_iter()
        .filter_map(|n| n.into_string().ok())
        .filter(|n| is_uuid(n))
        .collect();
    v.sort();
    Ok((dir, v))
}

/// A record of the dump and, when it has a data file, that file as it was
/// listed: what is uploaded must still be this file.
#[derive(Debug)]
pub struct Listed {
    /// The record.
    pub record: Record,
    /// The data file: its name in the dump directory and its status.
    pub data: Option<(String, Status)>,
}

/// Why an entry could not be read.
// The record's `path` is the metadata file: messages name only the other
// files (`<id>.img`, `<id>.members`), and by name, never the whole path.
#[derive(Debug, thiserror::Error)]
pub enum DirError {
    /// Reading failed, or the file is not a plain file (a link: kind
    /// `symlink`; a FIFO, device or directory: `not_regular`).
    #[error("{}{source}", other(name))]
    Io {
        /// The file's name in the dump directory.
        name: String,
        /// Why.
        source: std::io::Error,
    },
    /// Not a JSON object, or too large.
    #[error("{}{why}", other(name))]
    Bad {
        /// The file's name in the dump directory.
        name: String,
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
            DirError::Bad { .. } => ErrorKind::BadJson,
            DirError::IdMismatch { .. } => ErrorKind::BadRecord,
        }
    }
}

fn io_error(name: &str) -> impl Fn(std::io::Error) -> DirError + '_ {
    move |source| DirError::Io {
        name: name.to_owned(),
        source,
    }
}

/// The JSON of `name`, read from one handle opened without following a
/// link; None when there is no such file.
fn read_json(dir: &Dir, name: &str) -> Result<Option<Value>, DirError> {
    let f = match dir.open_file(name) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_error(name)(e)),
    };
    let len = f.metadata().map_err(io_error(name))?.len();
    if len > MAX_META {
        return Err(DirError::Bad {
            name: name.to_owned(),
            why: format!("{len} bytes: larger than any image metadata"),
        });
    }
    let mut text = Vec::new();
    // Bounded even if the file grows after the check.
    f.take(MAX_META + 1)
        .read_to_end(&mut text)
        .map_err(io_error(name))?;
    serde_json::from_slice(&text)
        .map(Some)
        .map_err(|e| DirError::Bad {
            name: name.to_owned(),
            why: format!("not JSON: {e}"),
        })
}

/// The data file `name` as listed: a regular file, or nothing; a link, a
/// FIFO, a device or a directory is refused without being opened.
fn listed_data(dir: &Dir, name: &str) -> Result<Option<Status>, DirError> {
    let Some(st) = dir.status_if_exists(name).map_err(io_error(name))? else {
        return Ok(None);
    };
    let refuse = |kind, why: String| {
        Err(DirError::Io {
            name: name.to_owned(),
            source: system::files::refusal(kind, why),
        })
    };
    match st.kind {
        Kind::File => Ok(Some(st)),
        Kind::Symlink => refuse(
            ErrorKind::Symlink,
            "is a symbolic link; a dump holds plain files only, and a link could upload a \
             file from elsewhere"
                .into(),
        ),
        k => refuse(
            ErrorKind::NotRegular,
            format!("is a {}; a dump holds plain files only", k.describe()),
        ),
    }
}

/// The record for the metadata file `meta` (one component) of `dir`:
/// top-level `path` (the data file, when there is one), `image` (v2,
/// mapped from v1 if need be) and `dump` (`meta_path`, `format`: v2 or
/// v1, `members`). The bare record (with `path` naming the metadata) on
/// error.
pub fn record_in(dir: &Dir, meta: &str) -> Result<Listed, (Record, DirError)> {
    let meta_path = dir.join(meta);
    let fail = |e: DirError| {
        let mut r = Record::from_path(&meta_path.to_string_lossy());
        r.set(
            "dump",
            serde_json::json!({"meta_path": meta_path.to_string_lossy()}),
        );
        (r, e)
    };
    let v = read_json(dir, meta)
        .map_err(fail)?
        .ok_or_else(|| fail(io_error(meta)(std::io::ErrorKind::NotFound.into())))?;
    let Value::Object(img) = v else {
        return Err(fail(DirError::Bad {
            name: meta.to_owned(),
            why: "not a JSON object".into(),
        }));
    };
    let id = img.get("id").and_then(Value::as_str).unwrap_or("");
    if id != meta {
        return Err(fail(DirError::IdMismatch { id: id.to_owned() }));
    }
    let legacy = is_v1(&img);
    let img = if legacy { from_v1(img) } else { img };
    let data_name = format!("{meta}.img");
    let data = listed_data(dir, &data_name).map_err(fail)?;
    let members = read_json(dir, &format!("{meta}.members")).map_err(fail)?;
    let mut m = Map::new();
    if data.is_some() {
        m.insert(
            "path".into(),
            dir.join(&data_name).to_string_lossy().into_owned().into(),
        );
    }
    m.insert("image".into(), Value::Object(img));
    let mut dump = Map::new();
    dump.insert(
        "meta_path".into(),
        meta_path.to_string_lossy().into_owned().into(),
    );
    dump.insert("format".into(), (if legacy { "v1" } else { "v2" }).into());
    if let Some(ms) = members {
        dump.insert("members".into(), ms);
    }
    m.insert("dump".into(), Value::Object(dump));
    Ok(Listed {
        record: Record::from_map(m),
        data: data.map(|st| (data_name, st)),
    })
}

/// [`record_in`] for the metadata file at `meta` (its directory opened
/// for this one record).
pub fn record(meta: &Path) -> Result<Record, (Record, DirError)> {
    let name = meta
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let parent = match meta.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let dir = Dir::open(parent).map_err(|source| {
        (
            Record::from_path(&meta.to_string_lossy()),
            DirError::Io {
                name: String::new(),
                source,
            },
        )
    })?;
    record_in(&dir, &name).map(|l| l.record)
}

/// `name: ` for a file other than the metadata (whose name is a UUID, and
/// the record's `path`), else nothing.
fn other(name: &str) -> String {
    if name.is_empty() || is_uuid(name) {
        String::new()
    } else {
        format!("{name}: ")
    }
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
