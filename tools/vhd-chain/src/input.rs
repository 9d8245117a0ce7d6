//! How vhd-chain opens the files it reads and changes.
//!
//! One rule, by construction:
//! - A file **named on the command line and only read** (info, check
//!   FILE, cat FILE, a set-parent PARENT) is opened through the shared
//!   input layer ([`common::files::open_input`]): the operator's link is
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

use common::ErrorKind;
use common::files::{Accept, Input, open_input, refusal};
use common::formats::Source;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
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

/// The refusal for a link where none is followed.
pub fn symlink_refusal() -> io::Error {
    refusal(
        ErrorKind::Symlink,
        "is a symbolic link; a file vhd-chain changes, or a chain member, is never reached through a link",
    )
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
            format!("is a {}, not a regular file", common::files::describe(&md)),
        ));
    }
    // O_NONBLOCK stays: it changes nothing for a regular file.
    Ok(file)
}

/// A regular file or block device read at offsets for the format probes
/// and checks: opened by path ([`RegularSource::open`], following the
/// operator's link) or from a handle already opened and judged
/// ([`RegularSource::from_file`], a chain member).
#[derive(Debug)]
pub struct RegularSource {
    file: File,
    len: u64,
    allocated: u64,
}

impl RegularSource {
    /// Open `path` as [`open_volume`] does.
    pub fn open(path: &Path) -> io::Result<RegularSource> {
        let (file, len) = open_volume(path)?;
        RegularSource::with_len(file, len)
    }

    /// An open regular file (its length from `fstat`).
    pub fn from_file(file: File) -> io::Result<RegularSource> {
        let len = file.metadata()?.len();
        RegularSource::with_len(file, len)
    }

    fn with_len(file: File, len: u64) -> io::Result<RegularSource> {
        let allocated = file.metadata()?.blocks().saturating_mul(512);
        Ok(RegularSource {
            file,
            len,
            allocated,
        })
    }
}

impl Source for RegularSource {
    fn len(&self) -> u64 {
        self.len
    }
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
        use std::os::unix::fs::FileExt;
        let mut done = 0;
        while done < buf.len() {
            match self
                .file
                .read_at(&mut buf[done..], offset.saturating_add(done as u64))
            {
                Ok(0) => break,
                Ok(n) => done += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {
                    if let Some(sig) = common::signal::pending() {
                        return Err(common::files::stopped(sig));
                    }
                }
                Err(e) => return Err(e),
            }
        }
        Ok(done)
    }
    fn allocated(&self) -> Option<u64> {
        Some(self.allocated)
    }
}
