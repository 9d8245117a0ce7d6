//! How vhd-chain opens the files it reads, through the shared input layer
//! ([`common::files::open_input`]): a VHD, a chain member or a file to
//! inspect must be a regular file (it is read at offsets, and its end
//! holds the footer), so a FIFO, device, socket or directory is refused
//! with kind `not_regular`, and nothing ever blocks in `open()`. Only a
//! tarball, read front to back, may be a stream (pipe, FIFO, `-`).

use common::files::{Accept, Input, open_input};
use std::fs::File;
use std::io;
use std::path::Path;

/// Open a file that must be regular, or a block device (a volume, read
/// at offsets like a file); `-` is stdin, when it is one.
pub fn open_regular(path: &Path) -> io::Result<File> {
    Ok(open_volume(path)?.0)
}

/// [`open_regular`], with the length (a block device's from its end).
pub fn open_volume(path: &Path) -> io::Result<(File, u64)> {
    let input = open_input(path, Accept::Regular)?;
    let len = input.len().unwrap_or(0);
    Ok((input.into_file(), len))
}

/// Open a tarball: a regular file, or a stream read once (a pipe, FIFO,
/// `-` for stdin), whose reads end on SIGINT/SIGTERM.
pub fn open_tarball(path: &Path) -> io::Result<Input> {
    open_input(path, Accept::Streams)
}

/// A regular file or block device as a [`common::formats::Source`] for
/// the format probes and checks.
pub type RegularSource = common::formats::FileSource;
