//! The one way the tools open inputs and create outputs, so the fail-closed
//! rules hold by construction rather than by each tool remembering them:
//!
//! - **Inputs** ([`open_input`]) are opened with `O_NONBLOCK`, so a FIFO
//!   with no writer, a tty or a device can never block the `open()`. A
//!   regular file (or a block device: a volume) is what every mode reads;
//!   a pipe, FIFO, `-` (stdin), a
//!   character device or a socket is a *stream*, accepted only where the
//!   mode reads a stream front to back ([`Accept::Streams`]) and refused
//!   otherwise with kind `not_regular`, as is a directory. A stream FIFO
//!   waits for its writer in `poll()`, which a signal ends.
//! - **Reads** through [`Input`] turn an `EINTR` that a pending SIGINT or
//!   SIGTERM caused into an error that `read_exact`/`io::copy` do not
//!   retry, so a blocked read ends with the signal.
//! - **Outputs**: [`check_output`] refuses to replace anything that is not a
//!   regular file (device, FIFO, directory, socket, symlink), even when the
//!   caller may overwrite, and refuses an output that is the same file
//!   (device and inode) as one of the run's inputs. `crate::atomic`
//!   applies it to every file it creates.
//! - **Names** are bytes: [`name_fields`] gives a non-UTF-8 name as text
//!   (lossy, for people) plus its exact bytes in base64, the form records
//!   carry (`path` and `path_bytes`).

use crate::kind::ErrorKind;
use std::ffi::OsStr;
use std::fs::{File, Metadata};
use std::io::{self, Read};
use std::os::fd::AsFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::Path;

// Refusals are error kinds carried in an `io::Error`: defined with the
// kinds, named here where the file rules raise them.
pub use crate::kind::{Refusal, refusal, refusal_of};

/// What a mode can read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accept {
    /// Regular files only: the mode seeks, reads twice, or judges a file
    /// by its size.
    Regular,
    /// Regular files and streams (pipe, FIFO, stdin, character device,
    /// socket), read once, front to back.
    Streams,
}

/// What an opened input is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InputKind {
    /// A regular file or a block device: its length is known and it can
    /// be read at offsets.
    Regular,
    /// Anything read once, front to back: its length is unknown.
    Stream,
}

/// A file's identity: device and inode. Two names are the same file when
/// these are equal, however the names are spelled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FileId {
    /// `st_dev`.
    pub dev: u64,
    /// `st_ino`.
    pub ino: u64,
}

impl FileId {
    /// The identity in `md`.
    pub fn of_metadata(md: &Metadata) -> FileId {
        FileId {
            dev: md.dev(),
            ino: md.ino(),
        }
    }

    /// The identity of an open file.
    pub fn of_file(f: &File) -> io::Result<FileId> {
        Ok(FileId::of_metadata(&f.metadata()?))
    }

    /// The identity of what stdin (or stdout) is, when it is a regular
    /// file (`< file`, `> file`); None for a pipe, tty or a closed fd.
    pub fn of_stdio(fd: i32) -> Option<FileId> {
        let f = dup_fd(fd).ok()?;
        let md = f.metadata().ok()?;
        md.file_type().is_file().then(|| FileId::of_metadata(&md))
    }
}

/// An opened input.
#[derive(Debug)]
pub struct Input {
    file: File,
    kind: InputKind,
    id: FileId,
    len: Option<u64>,
}

impl Input {
    /// Regular file or stream.
    pub fn kind(&self) -> InputKind {
        self.kind
    }

    /// The file's identity (device, inode).
    pub fn id(&self) -> FileId {
        self.id
    }

    /// The length of a regular file when it was opened; None for a stream.
    pub fn len(&self) -> Option<u64> {
        self.len
    }

    /// Whether a regular file was empty when opened.
    pub fn is_empty(&self) -> bool {
        self.len == Some(0)
    }

    /// The open file (for positioned reads of a regular file).
    pub fn file(&self) -> &File {
        &self.file
    }

    /// The open file, taken out.
    pub fn into_file(self) -> File {
        self.file
    }
}

impl Read for Input {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        stoppable(self.file.read(buf))
    }
}

/// A reader whose reads end when SIGINT/SIGTERM/SIGHUP is pending: an
/// `EINTR` then becomes an `interrupted` refusal, which the standard
/// library's retry loops (`read_exact`, `io::copy`, `read_until`) pass up
/// instead of retrying.
#[derive(Debug)]
pub struct Stoppable<R>(pub R);

impl<R: Read> Read for Stoppable<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        stoppable(self.0.read(buf))
    }
}

fn stoppable(r: io::Result<usize>) -> io::Result<usize> {
    match r {
        Err(e) if e.kind() == io::ErrorKind::Interrupted => match crate::signal::pending() {
            Some(sig) => Err(stopped(sig)),
            None => Err(e),
        },
        other => other,
    }
}

/// The error a signal-stopped read or wait returns.
pub fn stopped(sig: i32) -> io::Error {
    refusal(ErrorKind::Interrupted, format!("stopped by signal {sig}"))
}

/// Whether `path` is `-`, the conventional name of stdin (or stdout).
pub fn is_dash(path: &Path) -> bool {
    path.as_os_str() == "-"
}

/// Open an input named by the user or a record. `-` is stdin. Symlinks
/// given as the name are followed (as `cat` does); nothing ever blocks in
/// `open()`; see the module documentation for what `accept` allows.
pub fn open_input(path: &Path, accept: Accept) -> io::Result<Input> {
    let file = if is_dash(path) {
        dup_fd(0)?
    } else {
        std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
            .open(path)?
    };
    from_file(file, accept)
}

/// [`open_input`] on stdin.
pub fn stdin_input(accept: Accept) -> io::Result<Input> {
    from_file(dup_fd(0)?, accept)
}

fn from_file(file: File, accept: Accept) -> io::Result<Input> {
    let md = file.metadata()?;
    let ft = md.file_type();
    let id = FileId::of_metadata(&md);
    if ft.is_file() {
        set_blocking(&file)?;
        return Ok(Input {
            file,
            kind: InputKind::Regular,
            id,
            len: Some(md.len()),
        });
    }
    let what = describe(&md);
    if ft.is_dir() {
        // `IsADirectory`, so a caller tells it from the other refusals by
        // kind, never by the message.
        return Err(io::Error::new(
            io::ErrorKind::IsADirectory,
            Refusal {
                kind: ErrorKind::NotRegular,
                message: "is a directory".into(),
            },
        ));
    }
    if ft.is_block_device() {
        // A volume (Cinder's LVM, XenServer's LVHD): read at offsets like a
        // file, its length from seeking to its end.
        let len = volume_len(&file)?;
        set_blocking(&file)?;
        return Ok(Input {
            file,
            kind: InputKind::Regular,
            id,
            len: Some(len),
        });
    }
    if accept == Accept::Regular {
        return Err(refusal(
            ErrorKind::NotRegular,
            format!("is a {what}, not a regular file; this mode reads regular files only"),
        ));
    }
    if ft.is_fifo() {
        wait_readable(&file)?;
    }
    set_blocking(&file)?;
    Ok(Input {
        file,
        kind: InputKind::Stream,
        id,
        len: None,
    })
}

/// The length of an open regular file, or of a block device (a volume:
/// from seeking to its end, then back to its start).
pub fn volume_len(file: &File) -> io::Result<u64> {
    let md = file.metadata()?;
    if !md.file_type().is_block_device() {
        return Ok(md.len());
    }
    use std::io::{Seek, SeekFrom};
    let mut f = file;
    let len = f.seek(SeekFrom::End(0))?;
    f.seek(SeekFrom::Start(0))?;
    Ok(len)
}

/// A person's name for a file type.
pub fn describe(md: &Metadata) -> &'static str {
    let ft = md.file_type();
    if ft.is_file() {
        "regular file"
    } else if ft.is_dir() {
        "directory"
    } else if ft.is_symlink() {
        "symbolic link"
    } else if ft.is_fifo() {
        "FIFO or pipe"
    } else if ft.is_char_device() {
        "character device"
    } else if ft.is_block_device() {
        "block device"
    } else if ft.is_socket() {
        "socket"
    } else {
        "special file"
    }
}

/// Wait until a FIFO opened without blocking has data or a writer that
/// came and went, polling so that a pending signal ends the wait. (A read
/// before any writer connected would return end-of-file at once.)
#[allow(unsafe_code)]
fn wait_readable(file: &File) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    loop {
        if let Some(sig) = crate::signal::pending() {
            return Err(stopped(sig));
        }
        let mut pfd = libc::pollfd {
            fd: file.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd for the duration of the call.
        let n = unsafe { libc::poll(&mut pfd, 1, 100) };
        if n > 0 {
            return Ok(());
        }
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
    }
}

#[allow(unsafe_code)]
fn set_blocking(file: &File) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let fd = file.as_raw_fd();
    // SAFETY: fcntl on a file descriptor we own; no pointers.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    if flags < 0 {
        return Err(io::Error::last_os_error());
    }
    if flags & libc::O_NONBLOCK != 0 {
        // SAFETY: as above.
        if unsafe { libc::fcntl(fd, libc::F_SETFL, flags & !libc::O_NONBLOCK) } < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

fn dup_fd(fd: i32) -> io::Result<File> {
    let owned = match fd {
        0 => io::stdin().as_fd().try_clone_to_owned()?,
        1 => io::stdout().as_fd().try_clone_to_owned()?,
        _ => return Err(io::Error::from(io::ErrorKind::InvalidInput)),
    };
    Ok(File::from(owned))
}

/// Whether an output may be created at `path`: refused when something
/// other than a regular file is there (a device, FIFO, directory, socket,
/// or a symlink, whose target may be anywhere), even with `overwrite`; an
/// existing regular file without `overwrite` is `already_exists`; and a
/// file that is one of `inputs` (the same device and inode) is
/// `same_file`. Nothing there is fine.
pub fn check_output(path: &Path, overwrite: bool, inputs: &[FileId]) -> io::Result<()> {
    let md = match std::fs::symlink_metadata(path) {
        Ok(md) => md,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    if !md.file_type().is_file() {
        return Err(refusal(
            ErrorKind::NotRegular,
            format!(
                "is a {}; an output never replaces anything but a regular file",
                describe(&md)
            ),
        ));
    }
    if inputs.contains(&FileId::of_metadata(&md)) {
        return Err(refusal(
            ErrorKind::SameFile,
            "is also an input of this run; refusing to write over it",
        ));
    }
    if !overwrite {
        return Err(refusal(
            ErrorKind::AlreadyExists,
            "already exists, not replacing it (--force replaces a regular file)",
        ));
    }
    Ok(())
}

/// Free bytes for an unprivileged writer on the filesystem holding `dir`
/// (`statvfs`'s `f_bavail * f_frsize`).
#[allow(unsafe_code)]
pub fn available_bytes(dir: &Path) -> io::Result<u64> {
    let c = std::ffi::CString::new(dir.as_os_str().as_bytes())
        .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: a zeroed statvfs out-parameter and a NUL-terminated path.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
        return Err(io::Error::last_os_error());
    }
    #[allow(clippy::unnecessary_cast)] // the field types differ per platform
    Ok((st.f_bavail as u64).saturating_mul(st.f_frsize as u64))
}

/// A name as JSON: the text (lossy where needed) and, when lossy, the
/// exact bytes in base64 (the DESIGN's `*_bytes` form).
pub fn name_fields(name: &OsStr) -> (String, Option<String>) {
    crate::text::with_bytes(name.as_bytes())
}

/// Why an image id cannot be a file name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("image id {id:?} is not a plain file name: {why}")]
pub struct UnsafeName {
    /// The id, as the server or record gave it.
    pub id: String,
    /// What is wrong with it.
    pub why: &'static str,
}

/// The longest id taken as a file name: room for `.img.part` and a
/// temporary's suffix within NAME_MAX (Glance ids are 36 bytes).
const MAX_ID_NAME: usize = 200;

/// `id` when it can be a file name in a dump directory as it is: not
/// empty, `.` or `..`, no `/`, no control character (NUL, newline, ...:
/// a name that breaks lines in listings and logs), at most 200 bytes.
/// Every place an id from data (an image id) becomes a path goes
/// through here.
pub fn safe_file_name(id: &str) -> Result<&str, UnsafeName> {
    let why = if id.is_empty() {
        "empty"
    } else if id == "." || id == ".." {
        "a directory entry"
    } else if id.contains('/') {
        "contains /"
    } else if id.chars().any(char::is_control) {
        "contains a control character"
    } else if id.len() > MAX_ID_NAME {
        "longer than 200 bytes"
    } else {
        return Ok(id);
    };
    Err(UnsafeName {
        id: id.to_owned(),
        why,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn kind(e: &io::Error) -> ErrorKind {
        ErrorKind::from_io(e)
    }

    #[test]
    fn regular_file_and_directory() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("f");
        std::fs::write(&f, b"abc").unwrap();
        let mut i = open_input(&f, Accept::Regular).unwrap();
        assert_eq!(i.kind(), InputKind::Regular);
        assert_eq!(i.len(), Some(3));
        let mut s = String::new();
        i.read_to_string(&mut s).unwrap();
        assert_eq!(s, "abc");
        let e = open_input(d.path(), Accept::Streams).unwrap_err();
        assert_eq!(kind(&e), ErrorKind::NotRegular);
    }

    #[test]
    fn fifo_refused_without_blocking_where_streams_are_not_read() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("fifo");
        let c = std::ffi::CString::new(p.as_os_str().as_bytes()).unwrap();
        #[allow(unsafe_code)]
        // SAFETY: a NUL-terminated path.
        let rc = unsafe { libc::mkfifo(c.as_ptr(), 0o600) };
        assert_eq!(rc, 0);
        let e = open_input(&p, Accept::Regular).unwrap_err();
        assert_eq!(kind(&e), ErrorKind::NotRegular);
        assert!(e.to_string().contains("FIFO"), "{e}");
        // As a stream it waits for a writer, then reads what it wrote.
        let p2 = p.clone();
        let w = std::thread::spawn(move || {
            let mut f = std::fs::OpenOptions::new().write(true).open(p2).unwrap();
            f.write_all(b"hello").unwrap();
        });
        let mut i = open_input(&p, Accept::Streams).unwrap();
        assert_eq!(i.kind(), InputKind::Stream);
        let mut s = Vec::new();
        i.read_to_end(&mut s).unwrap();
        w.join().unwrap();
        assert_eq!(s, b"hello");
    }

    #[test]
    fn char_device_is_a_stream() {
        let e = open_input(Path::new("/dev/null"), Accept::Regular).unwrap_err();
        assert_eq!(kind(&e), ErrorKind::NotRegular);
        let i = open_input(Path::new("/dev/null"), Accept::Streams).unwrap();
        assert_eq!(i.kind(), InputKind::Stream);
    }

    #[test]
    fn outputs_never_replace_non_regular_files() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("f");
        std::fs::write(&f, b"x").unwrap();
        assert!(check_output(&d.path().join("new"), false, &[]).is_ok());
        assert_eq!(
            kind(&check_output(&f, false, &[]).unwrap_err()),
            ErrorKind::AlreadyExists
        );
        assert!(check_output(&f, true, &[]).is_ok());
        let id = FileId::of_metadata(&std::fs::metadata(&f).unwrap());
        assert_eq!(
            kind(&check_output(&f, true, &[id]).unwrap_err()),
            ErrorKind::SameFile
        );
        let l = d.path().join("l");
        std::os::unix::fs::symlink(&f, &l).unwrap();
        assert_eq!(
            kind(&check_output(&l, true, &[]).unwrap_err()),
            ErrorKind::NotRegular
        );
        for p in [Path::new("/dev/null"), d.path()] {
            assert_eq!(
                kind(&check_output(p, true, &[]).unwrap_err()),
                ErrorKind::NotRegular
            );
        }
    }

    #[test]
    fn only_plain_names_are_file_names() {
        for ok in [
            "4fe257e0-c119-408e-9053-0be3f4940d6d",
            "a b",
            "é",
            "-x",
            "...",
        ] {
            assert_eq!(safe_file_name(ok), Ok(ok));
        }
        let long = "a".repeat(201);
        for bad in [
            "",
            ".",
            "..",
            "a/b",
            "/",
            "../etc",
            "a\0b",
            "a\nb",
            "a\rb",
            "\t",
            "a\u{7f}",
            "a\u{85}",
            long.as_str(),
        ] {
            let e = safe_file_name(bad).unwrap_err();
            assert_eq!(e.id, bad);
            // The message shows the id escaped: never a raw newline.
            assert!(!e.to_string().contains('\n'), "{e}");
        }
        assert!(safe_file_name(&"a".repeat(200)).is_ok());
    }

    #[test]
    fn free_space_is_reported() {
        assert!(available_bytes(Path::new("/")).is_ok());
    }
}
