//! How vhd-chain opens the files it reads and changes.
//!
//! One rule, by construction:
//! - A file **named on the command line and only read** (info, check
//!   FILE, cat FILE, a set-parent PARENT) is opened through the shared
//!   input layer ([`system::files::open_input`]): the operator's link is
//!   followed, as qemu-img does; it must be a regular file or a block
//!   device (a FIFO, socket, character device or directory is refused,
//!   `not_regular`, and nothing ever blocks in `open()`). Only a tarball,
//!   read front to back, may be a stream (pipe, FIFO, `-`).
//! - A **member of a chain directory** is opened relative to the
//!   directory's handle ([`crate::member`]) with `O_NOFOLLOW`: a link is
//!   refused (`symlink`), never read or written through.
//! - A file **changed** (set-parent, fix, resize, coalesce and their
//!   journals) is opened with `O_NOFOLLOW` ([`open_nofollow`]) even when
//!   named directly: a link there is refused (`symlink`), because
//!   rewriting a link's target outside its directory is the attack.

use filter::ErrorKind;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use system::files::{Accept, Input, open_input, refusal};

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

/// The refusal for a link where none is followed.
pub fn symlink_refusal() -> io::Error {
    system::tree::symlink_refusal("a file vhd-chain changes, or a chain member,")
}

/// Open the regular file `path` (for reading, and writing when `write`)
/// without following a link in its last component: a link is refused
/// (`symlink`), anything but a regular file is `not_regular`, and the
/// open never blocks.
pub fn open_nofollow(path: &Path, write: bool) -> io::Result<File> {
    let file = OpenOptions::new()
        .read(true)
        .write(write)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
        .map_err(|e| {
            if e.raw_os_error() == Some(libc::ELOOP) {
                symlink_refusal()
            } else {
                e
            }
        })?;
    let md = file.metadata()?;
    if !md.is_file() {
        return Err(refusal(
            ErrorKind::NotRegular,
            format!("is a {}, not a regular file", system::files::describe(&md)),
        ));
    }
    // O_NONBLOCK stays: it changes nothing for a regular file.
    Ok(file)
}

/// A regular file or block device read at offsets for the format probes
/// and checks: opened by path (`RegularSource::open`, following the
/// operator's link, a block device's length from its end) or from a
/// handle already opened and judged (`RegularSource::from_file`, a chain
/// member).
pub type RegularSource = formats::FileSource;
