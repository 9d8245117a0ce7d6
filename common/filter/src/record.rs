//! Records: one JSON object per line, a bag of facets (DESIGN.md section 2).
//!
//! A tool owns one top-level key (its facet) and writes only there; every
//! other key of its input record is copied unchanged and in order. `path`
//! names the local file a record is about, `error` says what went wrong with
//! it, `summary` ends a stream where a count helps.

use serde::Serialize;
use serde_json::{Map, Value};
use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;
use std::path::{Path, PathBuf};

pub use system::kind::{Classified, ErrorKind};

/// Top-level key holding the local file a record is about.
pub const PATH: &str = "path";
/// Top-level key of the error facet, which any tool may set.
pub const ERROR: &str = "error";
/// Top-level key of the optional last record of a run.
pub const SUMMARY: &str = "summary";

/// A record: an ordered JSON object.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(transparent)]
pub struct Record(Map<String, Value>);

impl Record {
    /// An empty record.
    pub fn new() -> Self {
        Record(Map::new())
    }

    /// The record a file argument stands for: `{"path": ARG}`.
    pub fn from_path(path: &str) -> Self {
        let mut r = Record::new();
        r.0.insert(PATH.into(), Value::String(path.into()));
        r
    }

    /// Wrap a JSON object read from input.
    pub fn from_map(map: Map<String, Value>) -> Self {
        Record(map)
    }

    /// The underlying object.
    pub fn as_map(&self) -> &Map<String, Value> {
        &self.0
    }

    /// Consume into the underlying object.
    pub fn into_map(self) -> Map<String, Value> {
        self.0
    }

    /// The `path` key, when it is a string.
    pub fn path(&self) -> Option<&str> {
        self.0.get(PATH).and_then(Value::as_str)
    }

    /// A facet by key.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.0.get(key)
    }

    /// Whether an upstream tool already marked this record as failed.
    pub fn has_error(&self) -> bool {
        self.0.get(ERROR).is_some_and(|v| !v.is_null())
    }

    /// Set a tool's own facet, replacing only that key. An existing key keeps
    /// its position; a new one goes last.
    pub fn set(&mut self, key: &str, value: impl Into<Value>) {
        self.0.insert(key.to_owned(), value.into());
    }

    /// Set a facet from anything serialisable.
    pub fn set_facet<T: Serialize>(&mut self, key: &str, value: &T) -> serde_json::Result<()> {
        let v = serde_json::to_value(value)?;
        self.set(key, v);
        Ok(())
    }

    /// Remove a key (used only by the owner of that key).
    pub fn remove(&mut self, key: &str) -> Option<Value> {
        self.0.shift_remove(key)
    }

    /// Attach the error facet.
    pub fn set_error(&mut self, err: &ErrorFacet) {
        // Serialising a struct of strings and integers cannot fail.
        if let Ok(v) = serde_json::to_value(err) {
            self.set(ERROR, v);
        }
    }
}

/// The key holding the exact bytes of a non-UTF-8 `path` (base64).
pub const PATH_BYTES: &str = "path_bytes";

/// The local file a record names: `path_bytes` (base64 of the exact
/// bytes) when present, else `path`. A malformed `path_bytes` is an error,
/// never a fallback to the lossy `path`.
pub fn path_of(rec: &Record) -> Result<Option<PathBuf>, String> {
    if let Some(v) = rec.get(PATH_BYTES) {
        let s = v
            .as_str()
            .ok_or_else(|| format!("`{PATH_BYTES}` is not a string"))?;
        let bytes = system::text::base64_decode(s)
            .ok_or_else(|| format!("`{PATH_BYTES}` is not base64"))?;
        return Ok(Some(PathBuf::from(OsString::from_vec(bytes))));
    }
    match rec.get(PATH) {
        None => Ok(None),
        Some(v) => v
            .as_str()
            .map(|s| Some(PathBuf::from(s)))
            .ok_or_else(|| "`path` is not a string".to_owned()),
    }
}

/// Set `path` (and `path_bytes` when the name is not UTF-8; removed when
/// it is) on a record.
pub fn set_path(rec: &mut Record, path: &Path) {
    let (text, exact) = system::files::name_fields(path.as_os_str());
    rec.set(PATH, text);
    match exact {
        Some(b) => rec.set(PATH_BYTES, b),
        None => {
            rec.remove(PATH_BYTES);
        }
    }
}

/// The record a file argument stands for: `{"path": ARG}` (plus
/// `path_bytes` for a non-UTF-8 name).
pub fn record_for(path: &Path) -> Record {
    let mut r = Record::new();
    set_path(&mut r, path);
    r
}

/// A record of one file and one facet, serialized straight from the types
/// (for a tool that emits many at once, [`crate::cli::Ctx::emit_batch`]):
/// `{"path": NAME, "path_bytes"?: EXACT, KEY: FACET}`.
#[derive(Debug)]
pub struct FileRecord<'a, T> {
    path: String,
    path_bytes: Option<String>,
    key: &'static str,
    facet: &'a T,
}

impl<'a, T: Serialize> FileRecord<'a, T> {
    /// The record of `path` with `facet` under `key`.
    pub fn new(path: &Path, key: &'static str, facet: &'a T) -> Self {
        let (path, path_bytes) = system::files::name_fields(path.as_os_str());
        FileRecord {
            path,
            path_bytes,
            key,
            facet,
        }
    }
}

impl<T: Serialize> Serialize for FileRecord<'_, T> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut m = s.serialize_map(None)?;
        m.serialize_entry(PATH, &self.path)?;
        if let Some(b) = &self.path_bytes {
            m.serialize_entry(PATH_BYTES, b)?;
        }
        m.serialize_entry(self.key, self.facet)?;
        m.end()
    }
}

/// The `error` facet: `{tool, kind, message, line?, detail?}`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ErrorFacet {
    /// The tool that found the problem.
    pub tool: String,
    /// The fixed code.
    pub kind: ErrorKind,
    /// Free text for people.
    pub message: String,
    /// The input line (from 1) a malformed line or document started on.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub line: Option<u64>,
    /// Structured extras: a child's exit status and stderr tail, etc.
    #[serde(skip_serializing_if = "Map::is_empty")]
    pub detail: Map<String, Value>,
}

impl ErrorFacet {
    /// A new error facet.
    pub fn new(tool: &str, kind: ErrorKind, message: impl Into<String>) -> Self {
        ErrorFacet {
            tool: tool.to_owned(),
            kind,
            message: message.into(),
            line: None,
            detail: Map::new(),
        }
    }

    /// With the input line number.
    pub fn at_line(mut self, line: u64) -> Self {
        self.line = Some(line);
        self
    }

    /// With one detail field.
    pub fn with(mut self, key: &str, value: impl Into<Value>) -> Self {
        self.detail.insert(key.to_owned(), value.into());
        self
    }

    /// The facet for an error that classifies itself (an HTTP error: its
    /// kind, message and the server's status, message and request id).
    pub fn classified(tool: &str, e: &dyn Classified) -> Self {
        let mut err = ErrorFacet::new(tool, e.kind(), e.to_string());
        for (k, v) in e.details() {
            err = err.with(k, v);
        }
        err
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_names_round_trip_through_records() {
        let p = PathBuf::from(OsString::from_vec(b"a\xffb.img".to_vec()));
        let r = record_for(&p);
        assert_eq!(r.get("path").unwrap(), "a\u{fffd}b.img");
        assert!(r.get(PATH_BYTES).is_some());
        assert_eq!(path_of(&r).unwrap().unwrap(), p);
        let r = record_for(Path::new("plain.img"));
        assert!(r.get(PATH_BYTES).is_none());
        assert_eq!(path_of(&r).unwrap().unwrap(), Path::new("plain.img"));
        let mut bad = Record::from_path("x");
        bad.set(PATH_BYTES, "%%%");
        assert!(path_of(&bad).is_err());
    }
    use serde_json::json;

    #[test]
    fn set_keeps_order_and_position() {
        let v: Value = serde_json::from_str(r#"{"z":1,"info":{"a":1},"a":2}"#).unwrap();
        let Value::Object(m) = v else { unreachable!() };
        let mut r = Record::from_map(m);
        r.set("info", json!({"b": 2}));
        r.set("check", json!(true));
        assert_eq!(
            serde_json::to_string(&r).unwrap(),
            r#"{"z":1,"info":{"b":2},"a":2,"check":true}"#
        );
    }

    #[test]
    fn big_integers_pass_through_exactly() {
        let text = r#"{"n":18446744073709551615,"big":123456789012345678901234567890,"f":1.50}"#;
        let v: Value = serde_json::from_str(text).unwrap();
        assert_eq!(serde_json::to_string(&v).unwrap(), text);
    }

    #[test]
    fn error_facet_shape() {
        let mut r = Record::from_path("x.img");
        r.set_error(
            &ErrorFacet::new("imginfo-parse", ErrorKind::QemuImgFailed, "boom")
                .with("exit_status", 1),
        );
        assert!(r.has_error());
        assert_eq!(
            serde_json::to_string(&r).unwrap(),
            r#"{"path":"x.img","error":{"tool":"imginfo-parse","kind":"qemu_img_failed","message":"boom","detail":{"exit_status":1}}}"#
        );
    }

    #[test]
    fn kinds_are_unique_snake_case() {
        let mut seen = std::collections::BTreeSet::new();
        for k in ErrorKind::ALL {
            let s = k.as_str();
            assert!(s.chars().all(|c| c.is_ascii_lowercase() || c == '_'), "{s}");
            assert!(seen.insert(s), "duplicate {s}");
        }
    }
}
