//! How vhd-chain opens the files it reads, through the shared input layer
//! ([`common::files::open_input`]): a VHD, a chain member or a file to
//! inspect must be a regular file (it is read at offsets, and its end
//! holds the footer), so a FIFO, device, socket or directory is refused
//! with kind `not_regular`, and nothing ever blocks in `open()`. Only a
//! tarball, read front to back, may be a stream (pipe, FIFO, `-`).

use common::files::{Accept, Input, open_input, refusal};
use common::formats::Source;
use std::fs::File;
use std::io;
use std::os::unix::fs::{FileExt, FileTypeExt, MetadataExt, OpenOptionsExt};
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

/// Open a parent VHD whose footer is read: a regular file or a block
/// device (a VHD on a logical volume, as vhd-util allows), never anything
/// that could block the open or the read.
pub fn open_regular_or_block(path: &Path) -> io::Result<File> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)?;
    let md = file.metadata()?;
    let ft = md.file_type();
    if ft.is_file() || ft.is_block_device() {
        return Ok(file);
    }
    Err(refusal(
        common::ErrorKind::NotRegular,
        format!(
            "is a {}, not a regular file or block device",
            common::files::describe(&md)
        ),
    ))
}

/// A regular file as a [`Source`] for the format probes and checks
/// (what `common::formats::FileSource` is, opened through
/// [`open_regular`]).
#[derive(Debug)]
pub struct RegularSource {
    file: File,
    len: u64,
    allocated: u64,
}

impl RegularSource {
    /// Open `path`, which must be a regular file.
    pub fn open(path: &Path) -> io::Result<RegularSource> {
        let (file, len) = open_volume(path)?;
        let md = file.metadata()?;
        Ok(RegularSource {
            len,
            allocated: md.blocks().saturating_mul(512),
            file,
        })
    }
}

impl Source for RegularSource {
    fn len(&self) -> u64 {
        self.len
    }
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
        let mut done = 0;
        while done < buf.len() {
            match self.file.read_at(&mut buf[done..], offset + done as u64) {
                Ok(0) => break,
                Ok(n) => done += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(done)
    }
    fn allocated(&self) -> Option<u64> {
        Some(self.allocated)
    }
}
