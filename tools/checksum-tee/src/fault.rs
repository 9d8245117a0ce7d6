//! A failure with the record kind it reports: what the sinks, the pump
//! and the caches return.

use filter::record::ErrorKind;
use std::fmt;
use std::io;

/// A failure's text, with the `error.kind` its record reports (a full
/// disk is `no_space`, not just `io`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fault {
    /// The record's error kind.
    pub kind: ErrorKind,
    /// What happened.
    pub message: String,
}

impl Fault {
    /// An I/O failure, after what was being done.
    pub fn io(what: impl fmt::Display, e: &io::Error) -> Fault {
        Fault {
            kind: ErrorKind::from_io(e),
            message: format!("{what}: {e}"),
        }
    }
}

impl From<String> for Fault {
    fn from(message: String) -> Fault {
        Fault {
            kind: ErrorKind::Io,
            message,
        }
    }
}

impl From<&io::Error> for Fault {
    fn from(e: &io::Error) -> Fault {
        Fault {
            kind: ErrorKind::from_io(e),
            message: e.to_string(),
        }
    }
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}
