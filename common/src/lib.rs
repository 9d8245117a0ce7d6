//! Shared foundation of the OpenStack image tools.
//!
//! Every tool is a filter over JSON Lines records (DESIGN.md section 2). This
//! crate holds the pieces all of them need, once:
//!
//! - [`record`]: the record (a bag of facets), the error facet and its fixed
//!   `kind` codes;
//! - [`jsonl`]: a tolerant JSON Lines reader and a per-record-flushing writer;
//! - [`status`]: the exit-status policy (0/1/2/75);
//! - [`cli`]: shared flags, `--generate man|bash|zsh|fish`, and the one
//!   [`cli::main`] wrapper every tool's `main.rs` calls;
//! - [`files`]: opening inputs and creating outputs by the fail-closed
//!   rules (regular files unless streaming, never block, never replace a
//!   non-regular file, byte file names);
//! - [`tree`]: walking and changing a tree from directory handles, never
//!   following a link below the root, files compared by identity;
//! - [`hook`]: named points where tests change the world between two steps;
//! - [`exec`]: running child programs (no shell, fixed locale, limits);
//! - [`size`]: exact byte sizes (`10G`, `1.5 GiB`) and qemu's human sizes;
//! - [`text`]: byte strings that may not be UTF-8, base64, RFC 3339 times.

pub mod atomic;
pub mod cli;
pub mod exec;
pub mod files;
pub mod formats;
pub mod glance;
pub mod hash;
pub mod hook;
pub mod http_source;
pub mod jobs;
pub mod jsonl;
pub mod keystone;
pub mod lock;
pub mod progress;
pub mod record;
pub mod signal;
pub mod size;
pub mod status;
pub mod text;
pub mod tree;
pub mod xattr;

pub use record::{ErrorFacet, ErrorKind, Record};
pub use status::Status;
