//! The system pieces of the OpenStack image tools: how they touch files,
//! trees, processes and signals, by the fail-closed rules, with no idea of
//! records, formats or the network.
//!
//! - [`kind`]: the record contract's error kinds, usage errors, and
//!   [`kind::Classified`] errors (the bottom of every error chain);
//! - [`files`]: opening inputs and creating outputs (regular files unless
//!   streaming, never block, never replace a non-regular file, byte names);
//! - [`atomic`]: outputs that appear whole or not at all;
//! - [`tree`]: walking and changing a tree from directory handles, never
//!   following a link below the root, files compared by identity;
//! - [`lock`], [`xattr`]: the image caches' locks and extended attributes;
//! - [`exec`]: running child programs (no shell, fixed locale, limits);
//! - [`jobs`]: bounded worker pools that keep input order;
//! - [`signal`]: stopping cleanly on SIGINT/SIGTERM/SIGHUP;
//! - [`hash`]: the digests and the expected-digest rule;
//! - [`progress`]: progress lines on a terminal;
//! - [`size`]: exact byte sizes (`10G`, `1.5 GiB`) and qemu's human sizes;
//! - [`text`]: byte strings that may not be UTF-8, base64, RFC 3339 times;
//! - [`hook`]: named points where tests change the world between two steps.

pub mod atomic;
pub mod exec;
pub mod files;
pub mod hash;
pub mod hook;
pub mod jobs;
pub mod kind;
pub mod lock;
pub mod progress;
pub mod signal;
pub mod size;
pub mod text;
pub mod tree;
pub mod xattr;
