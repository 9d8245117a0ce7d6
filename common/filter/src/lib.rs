//! The filter plumbing every tool stands on (DESIGN.md section 2): each
//! tool is a filter over JSON Lines records, and this crate is the only
//! one that reads or writes them.
//!
//! - [`record`]: the record (a bag of facets), the error facet, and the
//!   file a record names (`path`, `path_bytes`);
//! - [`jsonl`]: a tolerant, bounded JSON Lines reader and a
//!   per-record-flushing writer;
//! - [`status`]: the exit-status policy (0/1/2/75);
//! - [`cli`]: shared flags, `--generate man|bash|zsh|fish`, and the one
//!   [`cli::main`] wrapper every tool's `main.rs` calls (signals, exit
//!   statuses, fatal records).
//!
//! The error kinds themselves live in `system::kind`, below every layer
//! that classifies errors.

pub mod cli;
pub mod jsonl;
pub mod record;
pub mod status;

pub use record::{ErrorFacet, ErrorKind, Record};
pub use status::Status;
