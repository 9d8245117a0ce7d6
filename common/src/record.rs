//! Records: one JSON object per line, a bag of facets (DESIGN.md section 2).
//!
//! A tool owns one top-level key (its facet) and writes only there; every
//! other key of its input record is copied unchanged and in order. `path`
//! names the local file a record is about, `error` says what went wrong with
//! it, `summary` ends a stream where a count helps.

use serde::Serialize;
use serde_json::{Map, Value};
use std::fmt;

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

/// The fixed, documented `error.kind` codes. Scripts select on them
/// (`select(.error.kind == "qemu_img_failed")`), so they never change;
/// new ones are only added.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorKind {
    /// Reading or writing failed for another reason.
    Io,
    /// A named file does not exist.
    NotFound,
    /// A named file could not be opened for lack of permission.
    PermissionDenied,
    /// An input line or document is not valid JSON.
    BadJson,
    /// Valid JSON, but not a record this tool can use (not an object, no
    /// `path`, wrong type of a field).
    BadRecord,
    /// Input text that does not follow the format it claims to be.
    ParseError,
    /// Nothing to read where something was required.
    EmptyInput,
    /// Input too large for the tool's bounds (a line, a document).
    TooLarge,
    /// Human `qemu-img info` text whose fields cannot be trusted (duplicated
    /// keys, newline injection through a file name).
    AmbiguousHumanOutput,
    /// A format the tool does not handle.
    UnsupportedFormat,
    /// An image whose header is broken or hostile (truncated, offsets
    /// outside the file, impossible sizes).
    BadImage,
    /// The `qemu-img` program was not found.
    QemuImgMissing,
    /// `qemu-img` ran and failed (non-zero exit, signal, bad output).
    QemuImgFailed,
    /// A child program ran past its time limit and was killed, or a
    /// server did not answer (or stalled mid-body) within `--timeout`.
    Timeout,
    /// Someone else holds the resource (a lock, a file being written): try
    /// again later (exit 75).
    Busy,
    /// The target already exists and is never replaced.
    AlreadyExists,
    /// The request was refused as unsafe or impossible here.
    Refused,
    /// Not a (gzip'd) tar archive.
    NotATarball,
    /// An archive member that could write outside its directory or is not a plain file (absolute, `..`, link, device).
    UnsafeMember,
    /// An archive member the format does not allow (XenServer: only `N.vhd`).
    UnexpectedMember,
    /// A byte, member or size limit was reached.
    LimitExceeded,
    /// No chain members (no `0.vhd`).
    ChainEmpty,
    /// A numbered chain member is missing while later ones exist.
    ChainGap,
    /// The base of a chain is itself differencing: its parent is missing.
    ChainIncomplete,
    /// A chain member that should have a parent (all but the base) does not.
    NotDifferencing,
    /// A file that should be a VHD is not one.
    NotAVhd,
    /// A bug: a state the tool should never reach.
    Internal,
    /// Stopped by SIGINT, SIGTERM or SIGHUP before this record was done
    /// (what it had written was cleaned up).
    Interrupted,
    /// A server answered with an error status (HTTP 400, 5xx, ...).
    ServerError,
    /// The data is not in the format its metadata declares (checked
    /// before an upload, or refused by the server with 415).
    FormatMismatch,
    /// The filesystem (or a quota) is full: ENOSPC, EDQUOT, EFBIG.
    NoSpace,
    /// The target is on a read-only filesystem: EROFS.
    ReadOnly,
    /// Not a regular file where the mode needs one (a directory, FIFO,
    /// device or socket as input; anything but a regular file as the
    /// target of an output, which is never replaced).
    NotRegular,
    /// An output that is the same file (device and inode) as an input.
    SameFile,
    /// The command line asks for something that makes no sense (a flag
    /// that does nothing in this mode, a missing argument).
    Usage,
    /// A symbolic link where the tool never follows one (a cache's own
    /// subdirectory, a file of a tree it walks or changes).
    Symlink,
    /// A file that is no longer the one listed (another device and inode,
    /// or another size or modification time): swapped between two steps.
    Changed,
}

impl ErrorKind {
    /// The snake_case code written into records.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::Io => "io",
            ErrorKind::NotFound => "not_found",
            ErrorKind::PermissionDenied => "permission_denied",
            ErrorKind::BadJson => "bad_json",
            ErrorKind::BadRecord => "bad_record",
            ErrorKind::ParseError => "parse_error",
            ErrorKind::EmptyInput => "empty_input",
            ErrorKind::TooLarge => "too_large",
            ErrorKind::AmbiguousHumanOutput => "ambiguous_human_output",
            ErrorKind::UnsupportedFormat => "unsupported_format",
            ErrorKind::BadImage => "bad_image",
            ErrorKind::QemuImgMissing => "qemu_img_missing",
            ErrorKind::QemuImgFailed => "qemu_img_failed",
            ErrorKind::Timeout => "timeout",
            ErrorKind::Busy => "busy",
            ErrorKind::AlreadyExists => "already_exists",
            ErrorKind::Refused => "refused",
            ErrorKind::NotATarball => "not_a_tarball",
            ErrorKind::UnsafeMember => "unsafe_member",
            ErrorKind::UnexpectedMember => "unexpected_member",
            ErrorKind::LimitExceeded => "limit_exceeded",
            ErrorKind::ChainEmpty => "chain_empty",
            ErrorKind::ChainGap => "chain_gap",
            ErrorKind::ChainIncomplete => "chain_incomplete",
            ErrorKind::NotDifferencing => "not_differencing",
            ErrorKind::NotAVhd => "not_a_vhd",
            ErrorKind::Internal => "internal",
            ErrorKind::Interrupted => "interrupted",
            ErrorKind::ServerError => "server_error",
            ErrorKind::FormatMismatch => "format_mismatch",
            ErrorKind::NoSpace => "no_space",
            ErrorKind::ReadOnly => "read_only",
            ErrorKind::NotRegular => "not_regular",
            ErrorKind::SameFile => "same_file",
            ErrorKind::Usage => "usage",
            ErrorKind::Symlink => "symlink",
            ErrorKind::Changed => "changed",
        }
    }

    /// Every kind, for documentation and tests.
    pub const ALL: &'static [ErrorKind] = &[
        ErrorKind::Io,
        ErrorKind::NotFound,
        ErrorKind::PermissionDenied,
        ErrorKind::BadJson,
        ErrorKind::BadRecord,
        ErrorKind::ParseError,
        ErrorKind::EmptyInput,
        ErrorKind::TooLarge,
        ErrorKind::AmbiguousHumanOutput,
        ErrorKind::UnsupportedFormat,
        ErrorKind::BadImage,
        ErrorKind::QemuImgMissing,
        ErrorKind::QemuImgFailed,
        ErrorKind::Timeout,
        ErrorKind::Busy,
        ErrorKind::AlreadyExists,
        ErrorKind::Refused,
        ErrorKind::NotATarball,
        ErrorKind::UnsafeMember,
        ErrorKind::UnexpectedMember,
        ErrorKind::LimitExceeded,
        ErrorKind::ChainEmpty,
        ErrorKind::ChainGap,
        ErrorKind::ChainIncomplete,
        ErrorKind::NotDifferencing,
        ErrorKind::NotAVhd,
        ErrorKind::Internal,
        ErrorKind::Interrupted,
        ErrorKind::ServerError,
        ErrorKind::FormatMismatch,
        ErrorKind::NoSpace,
        ErrorKind::ReadOnly,
        ErrorKind::NotRegular,
        ErrorKind::SameFile,
        ErrorKind::Usage,
        ErrorKind::Symlink,
        ErrorKind::Changed,
    ];

    /// The kind for an I/O error on a named file.
    pub fn from_io(e: &std::io::Error) -> ErrorKind {
        if let Some(r) = crate::files::refusal_of(e) {
            return r.kind;
        }
        match e.kind() {
            std::io::ErrorKind::NotFound => ErrorKind::NotFound,
            std::io::ErrorKind::PermissionDenied => ErrorKind::PermissionDenied,
            // A full disk is the operator's to fix, not a bug: scripts
            // select on it (and retry elsewhere).
            std::io::ErrorKind::StorageFull
            | std::io::ErrorKind::QuotaExceeded
            | std::io::ErrorKind::FileTooLarge => ErrorKind::NoSpace,
            std::io::ErrorKind::ReadOnlyFilesystem => ErrorKind::ReadOnly,
            // Our own signal checks report this kind (common::signal::check).
            std::io::ErrorKind::Interrupted if crate::signal::pending().is_some() => {
                ErrorKind::Interrupted
            }
            _ => ErrorKind::Io,
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for ErrorKind {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
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
}

#[cfg(test)]
mod tests {
    use super::*;
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
