//! The fixed `error.kind` codes of the record contract, and the typed
//! errors every layer classifies by them: a refusal carried in an
//! `io::Error` ([`crate::files::refusal`]), a usage error, and any error
//! that knows its kind and structured details ([`Classified`]). They live
//! at the bottom so the system, format and client layers can say what
//! went wrong without knowing about records.

use serde::Serialize;
use serde_json::Value;
use std::fmt;
use std::io;

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
        if let Some(r) = refusal_of(e) {
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
            // Our own signal checks report this kind (crate::signal::check).
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

/// A refusal or stop whose [`ErrorKind`] is fixed, carried inside an
/// `io::Error` (as its inner error) so [`ErrorKind::from_io`] finds it
/// wherever the error travels.
#[derive(Debug, Clone)]
pub struct Refusal {
    /// The kind the record will carry.
    pub kind: ErrorKind,
    /// For people: what was refused and why (never the path: the caller's
    /// record names it).
    pub message: String,
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Refusal {}

/// An `io::Error` carrying a [`Refusal`] of `kind`.
pub fn refusal(kind: ErrorKind, message: impl Into<String>) -> io::Error {
    let io_kind = match kind {
        ErrorKind::AlreadyExists => io::ErrorKind::AlreadyExists,
        ErrorKind::NotFound => io::ErrorKind::NotFound,
        ErrorKind::PermissionDenied => io::ErrorKind::PermissionDenied,
        ErrorKind::Interrupted => io::ErrorKind::Other, // never retried by std loops
        _ => io::ErrorKind::InvalidInput,
    };
    io::Error::new(
        io_kind,
        Refusal {
            kind,
            message: message.into(),
        },
    )
}

/// The [`Refusal`] inside an `io::Error`, if it carries one.
pub fn refusal_of(e: &io::Error) -> Option<&Refusal> {
    e.get_ref()
        .and_then(|inner| inner.downcast_ref::<Refusal>())
}

/// A command line that makes no sense: exit status 2, kind `usage`.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

/// `Err(UsageError)` as an `anyhow::Error`.
pub fn usage(message: impl Into<String>) -> anyhow::Error {
    anyhow::Error::new(UsageError(message.into()))
}

/// An error that knows its record kind and the structured extras a
/// record's error facet carries (`http_status`, ...): the layers below
/// the records describe their errors; the filter layer writes them.
pub trait Classified: std::error::Error {
    /// The fixed kind code.
    fn kind(&self) -> ErrorKind;
    /// Extras for the facet, in order.
    fn details(&self) -> Vec<(&'static str, Value)> {
        Vec::new()
    }
}
