//! Helpers shared by checksum-tee's integration tests.
#![allow(dead_code)]

use std::path::Path;
use std::process::{Command, Output};

pub const BIN: &str = env!("CARGO_BIN_EXE_checksum-tee");

/// Run checksum-tee in `dir` with `args`, `stdin` fed from a thread.
pub fn run(dir: &Path, args: &[&str], stdin: &[u8]) -> Output {
    test_support::run_fed(Command::new(BIN).args(args).current_dir(dir), stdin)
}
