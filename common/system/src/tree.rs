//! Directory handles: walk and change a tree relative to directories opened
//! once, never following a symbolic link below the root.
//!
//! The trees the tools walk and change (Nova's instances path and `_base`,
//! Glance's image cache, dump and chain directories) are written by
//! services, tenants and people. A path spelled out again at each step can
//! be redirected between two steps by a component swapped for a link; a
//! [`Dir`] pins the directory itself, and every name below it is one
//! component, opened with `O_NOFOLLOW` (`openat`, `fstatat`, `unlinkat`,
//! `renameat`). The root the operator names may go through links (they
//! chose it); they are resolved once, when the root is opened.
//!
//! Refusals carry their kind ([`ErrorKind::Symlink`] for a link where none
//! is followed, [`ErrorKind::Changed`] for a file whose identity is not the
//! one listed), so records say why.

use crate::files::{FileId, refusal};
use crate::kind::ErrorKind;
use rustix::fs::{AtFlags, Mode, OFlags, RenameFlags};
use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// What a directory entry is, from `lstat` (a link is a link, never what
/// it points to).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A regular file.
    File,
    /// A directory.
    Dir,
    /// A symbolic link.
    Symlink,
    /// A FIFO, socket or device.
    Special,
}

impl Kind {
    /// A person's name for it.
    pub fn describe(self) -> &'static str {
        match self {
            Kind::File => "regular file",
            Kind::Dir => "directory",
            Kind::Symlink => "symbolic link",
            Kind::Special => "special file (FIFO, socket or device)",
        }
    }
}

/// An entry's status, read without following it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Status {
    /// Device and inode.
    pub id: FileId,
    /// What it is.
    pub kind: Kind,
    /// `st_size`.
    pub size: u64,
    /// Bytes allocated (`st_blocks` × 512).
    pub allocated: u64,
    /// Modification time: seconds and nanoseconds since the epoch.
    pub mtime: (i64, u32),
    /// Access time: seconds and nanoseconds since the epoch.
    pub atime: (i64, u32),
    /// Hard links.
    pub nlink: u64,
}

impl Status {
    fn of(st: &rustix::fs::Stat) -> Status {
        let ft = rustix::fs::FileType::from_raw_mode(st.st_mode);
        let kind = match ft {
            rustix::fs::FileType::RegularFile => Kind::File,
            rustix::fs::FileType::Directory => Kind::Dir,
            rustix::fs::FileType::Symlink => Kind::Symlink,
            _ => Kind::Special,
        };
        // The casts only widen or reinterpret the kernel's own types.
        #[allow(clippy::useless_conversion, clippy::unnecessary_cast)]
        Status {
            id: FileId {
                dev: st.st_dev as u64,
                ino: st.st_ino as u64,
            },
            kind,
            size: u64::try_from(st.st_size).unwrap_or(0),
            allocated: u64::try_from(st.st_blocks).unwrap_or(0).saturating_mul(512),
            mtime: (st.st_mtime as i64, st.st_mtime_nsec as u32),
            atime: (st.st_atime as i64, st.st_atime_nsec as u32),
            nlink: st.st_nlink as u64,
        }
    }

    /// The status of an open file.
    pub fn of_file(f: &File) -> io::Result<Status> {
        Ok(Status::of(&rustix::fs::fstat(f)?))
    }

    /// Whether `other` is the same file, unchanged: identity, size and
    /// modification time (what was listed is what is about to be used).
    pub fn same_as(&self, other: &Status) -> bool {
        self.id == other.id && self.size == other.size && self.mtime == other.mtime
    }
}

/// An open directory and the path it was reached by (for messages and
/// records only: nothing is ever opened by that path again).
#[derive(Debug)]
pub struct Dir {
    fd: OwnedFd,
    path: PathBuf,
    id: FileId,
}

/// The one-component name `name` as a path argument, refused when it is
/// not one component (a `/`, `.`, `..`, empty or a NUL).
fn component(name: &OsStr) -> io::Result<&OsStr> {
    let b = name.as_bytes();
    if b.is_empty() || b == b"." || b == b".." || b.contains(&b'/') || b.contains(&0) {
        return Err(refusal(
            ErrorKind::Refused,
            format!(
                "{:?} is not a plain name in its directory (a /, . or .. would leave it)",
                name
            ),
        ));
    }
    Ok(name)
}

/// The refusal of a link where `what` belongs (kind `symlink`).
pub fn symlink_refusal(what: &str) -> io::Error {
    refusal(
        ErrorKind::Symlink,
        format!("is a symbolic link; {what} is never reached through a link"),
    )
}

impl Dir {
    /// Open `path` as the root of a walk. Links in the operator's path
    /// are followed once, here; nothing below the root ever is.
    pub fn open(path: &Path) -> io::Result<Dir> {
        let fd = rustix::fs::open(
            path,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC | OFlags::NONBLOCK,
            Mode::empty(),
        )
        .map_err(|e| not_a_dir(e.into()))?;
        Dir::from_fd(fd, path.to_path_buf())
    }

    fn from_fd(fd: OwnedFd, path: PathBuf) -> io::Result<Dir> {
        let st = Status::of(&rustix::fs::fstat(&fd)?);
        Ok(Dir {
            fd,
            path,
            id: st.id,
        })
    }

    /// The path this directory was reached by (messages and records).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// `path()/name` (messages and records).
    pub fn join(&self, name: impl AsRef<Path>) -> PathBuf {
        self.path.join(name)
    }

    /// The directory's own identity.
    pub fn id(&self) -> FileId {
        self.id
    }

    /// The handle, for calls this module does not wrap.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// A path to `name` in this very directory for a call that only takes
    /// paths (xattrs, a lock library): `/proc/self/fd/N/name`. The
    /// directory stays pinned, but the kernel follows `name` itself if it
    /// is a link, so check it first. Not for sqlite: with
    /// `SQLITE_OPEN_NOFOLLOW` sqlite refuses any link in the path, and
    /// `/proc/self/fd/N` is one; open the directory's real path with that
    /// flag and compare the opened file's identity with the listing.
    pub fn pinned_path(&self, name: &OsStr) -> io::Result<PathBuf> {
        let name = component(name)?;
        Ok(fd_path(&self.fd).join(name))
    }

    /// The directory's current absolute path as the kernel reports it
    /// (no link in it), checked to lead back to this very directory: for a
    /// library that opens by path and refuses every link on it (sqlite
    /// with `SQLITE_OPEN_NOFOLLOW`). A directory removed or moved away
    /// meanwhile is `changed`.
    pub fn current_path(&self) -> io::Result<PathBuf> {
        let real = std::fs::read_link(fd_path(&self.fd))?;
        let same = real.is_absolute()
            && !real.as_os_str().as_bytes().ends_with(b" (deleted)")
            && Dir::open(&real).is_ok_and(|d| d.id == self.id);
        if !same {
            return Err(refusal(
                ErrorKind::Changed,
                "the directory was removed or moved while it was used",
            ));
        }
        Ok(real)
    }

    /// The subdirectory `name`: a link there is refused (kind `symlink`),
    /// anything but a directory is `not_regular`.
    pub fn subdir(&self, name: impl AsRef<OsStr>) -> io::Result<Dir> {
        let name = component(name.as_ref())?;
        let fd = rustix::fs::openat(
            &self.fd,
            name,
            OFlags::RDONLY
                | OFlags::DIRECTORY
                | OFlags::NOFOLLOW
                | OFlags::CLOEXEC
                | OFlags::NONBLOCK,
            Mode::empty(),
        )
        .map_err(|e| match e {
            // O_DIRECTORY wins over O_NOFOLLOW: a link is ENOTDIR (or ELOOP).
            rustix::io::Errno::LOOP => symlink_refusal("a directory of this tree"),
            rustix::io::Errno::NOTDIR
                if self.status(name).is_ok_and(|s| s.kind == Kind::Symlink) =>
            {
                symlink_refusal("a directory of this tree")
            }
            e => not_a_dir(e.into()),
        })?;
        Dir::from_fd(fd, self.path.join(name))
    }

    /// [`Dir::subdir`], with a missing one as `None`.
    pub fn subdir_if_exists(&self, name: impl AsRef<OsStr>) -> io::Result<Option<Dir>> {
        match self.subdir(name) {
            Ok(d) => Ok(Some(d)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Create the subdirectory `name` (mode 0755 less the umask) if it is
    /// not there, and open it as [`Dir::subdir`] does.
    pub fn create_subdir(&self, name: impl AsRef<OsStr>) -> io::Result<Dir> {
        let name = component(name.as_ref())?;
        match rustix::fs::mkdirat(&self.fd, name, Mode::from_raw_mode(0o755)) {
            Ok(()) | Err(rustix::io::Errno::EXIST) => {}
            Err(e) => return Err(e.into()),
        }
        self.subdir(name)
    }

    /// The names in this directory (not `.` and `..`), in no order.
    pub fn names(&self) -> io::Result<Vec<OsString>> {
        let mut out = Vec::new();
        for entry in rustix::fs::Dir::read_from(&self.fd)? {
            let entry = entry?;
            let name = entry.file_name().to_bytes();
            if name != b"." && name != b".." {
                out.push(OsStr::from_bytes(name).to_os_string());
            }
        }
        Ok(out)
    }

    /// The names in this directory (not `.` and `..`), in readdir order,
    /// each with what the directory entry says it is (`None` where the
    /// filesystem does not say): a hint that saves an `lstat` per name,
    /// never a verdict (the entry can change before it is used).
    pub fn entries(&self) -> io::Result<Vec<(OsString, Option<Kind>)>> {
        let mut out = Vec::new();
        for entry in rustix::fs::Dir::read_from(&self.fd)? {
            let entry = entry?;
            let name = entry.file_name().to_bytes();
            if name == b"." || name == b".." {
                continue;
            }
            let kind = match entry.file_type() {
                rustix::fs::FileType::RegularFile => Some(Kind::File),
                rustix::fs::FileType::Directory => Some(Kind::Dir),
                rustix::fs::FileType::Symlink => Some(Kind::Symlink),
                rustix::fs::FileType::Unknown => None,
                _ => Some(Kind::Special),
            };
            out.push((OsStr::from_bytes(name).to_os_string(), kind));
        }
        Ok(out)
    }

    /// Open `name` for reading at offsets if it is a regular file, in one
    /// `openat` (never following a link, never blocking, never taking a
    /// terminal) and one `fstat` of the handle opened: the status is that
    /// of the very file the handle reads. Anything else comes back with
    /// its status and no handle (a link: its own `lstat`). The handle
    /// keeps `O_NONBLOCK`, which reads of a regular file ignore. For
    /// entries listed as regular files (a special file swapped in
    /// meanwhile is opened without blocking and closed at once, as
    /// [`Dir::open_file`] does).
    pub fn open_if_file(&self, name: impl AsRef<OsStr>) -> io::Result<(Option<File>, Status)> {
        let name = component(name.as_ref())?;
        let fd = match rustix::fs::openat(
            &self.fd,
            name,
            OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::NONBLOCK | OFlags::NOCTTY,
            Mode::empty(),
        ) {
            Ok(fd) => fd,
            // A link (ELOOP), or a socket (ENXIO): its own status.
            Err(rustix::io::Errno::LOOP | rustix::io::Errno::NXIO) => {
                return Ok((None, self.status(name)?));
            }
            Err(e) => return Err(e.into()),
        };
        let file = File::from(fd);
        let st = Status::of_file(&file)?;
        Ok(((st.kind == Kind::File).then_some(file), st))
    }

    /// The status of `name`, not following it.
    pub fn status(&self, name: impl AsRef<OsStr>) -> io::Result<Status> {
        let name = component(name.as_ref())?;
        let st = rustix::fs::statat(&self.fd, name, AtFlags::SYMLINK_NOFOLLOW)?;
        Ok(Status::of(&st))
    }

    /// [`Dir::status`], with a missing entry as `None`.
    pub fn status_if_exists(&self, name: impl AsRef<OsStr>) -> io::Result<Option<Status>> {
        match self.status(name) {
            Ok(s) => Ok(Some(s)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Open the regular file `name` for reading: a link is refused (kind
    /// `symlink`), a FIFO, device or directory is `not_regular`, and the
    /// open never blocks.
    pub fn open_file(&self, name: impl AsRef<OsStr>) -> io::Result<File> {
        self.open_with(name.as_ref(), OFlags::RDONLY)
    }

    /// Open the regular file `name` for reading and writing (changed in
    /// place), with the same refusals as [`Dir::open_file`].
    pub fn open_file_rw(&self, name: impl AsRef<OsStr>) -> io::Result<File> {
        self.open_with(name.as_ref(), OFlags::RDWR)
    }

    fn open_with(&self, name: &OsStr, mode: OFlags) -> io::Result<File> {
        let name = component(name)?;
        let fd = rustix::fs::openat(
            &self.fd,
            name,
            mode | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::NONBLOCK | OFlags::NOCTTY,
            Mode::empty(),
        )
        .map_err(|e| match e {
            rustix::io::Errno::LOOP => symlink_refusal("a file of this tree"),
            e => e.into(),
        })?;
        let file = File::from(fd);
        let st = Status::of_file(&file)?;
        if st.kind != Kind::File {
            return Err(refusal(
                ErrorKind::NotRegular,
                format!("is a {}, not a regular file", st.kind.describe()),
            ));
        }
        // Regular files never block; reads and writes need no O_NONBLOCK.
        rustix::fs::fcntl_setfl(&file, rustix::fs::fcntl_getfl(&file)? - OFlags::NONBLOCK)?;
        Ok(file)
    }

    /// Create `name`, which must not exist (not even as a dangling link),
    /// for writing, with `mode` less the umask.
    pub fn create_new(&self, name: impl AsRef<OsStr>, mode: u32) -> io::Result<File> {
        let name = component(name.as_ref())?;
        let fd = rustix::fs::openat(
            &self.fd,
            name,
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_raw_mode(mode),
        )?;
        Ok(File::from(fd))
    }

    /// Remove the file (or link) `name` if it is still `expected`: its
    /// device and inode are read again, without following it, right
    /// before `unlinkat`. Another file there is refused (kind `changed`)
    /// and left alone; a missing one is `NotFound`.
    pub fn remove_file_if(&self, name: impl AsRef<OsStr>, expected: FileId) -> io::Result<()> {
        let name = component(name.as_ref())?;
        let now = self.status(name)?;
        if now.id != expected {
            return Err(changed(now.kind));
        }
        if now.kind == Kind::Dir {
            return Err(refusal(ErrorKind::NotRegular, "is a directory"));
        }
        crate::hook::point("tree.before_unlink");
        rustix::fs::unlinkat(&self.fd, name, AtFlags::empty())?;
        Ok(())
    }

    /// Remove the file or link `name`, whatever it is now (a temporary of
    /// this tool's own, a link found where none belongs). Never a
    /// directory.
    pub fn remove_file(&self, name: impl AsRef<OsStr>) -> io::Result<()> {
        let name = component(name.as_ref())?;
        rustix::fs::unlinkat(&self.fd, name, AtFlags::empty())?;
        Ok(())
    }

    /// Rename `from` in this directory to `to` in `dest` (the same
    /// filesystem), replacing what `to` names. Neither name is followed:
    /// a link is moved or replaced as a link.
    pub fn rename(
        &self,
        from: impl AsRef<OsStr>,
        dest: &Dir,
        to: impl AsRef<OsStr>,
    ) -> io::Result<()> {
        self.rename_with(from.as_ref(), dest, to.as_ref(), RenameFlags::empty())
    }

    /// Rename as [`Dir::rename`], refused (`already_exists`) when `to`
    /// exists.
    pub fn rename_new(
        &self,
        from: impl AsRef<OsStr>,
        dest: &Dir,
        to: impl AsRef<OsStr>,
    ) -> io::Result<()> {
        self.rename_with(from.as_ref(), dest, to.as_ref(), RenameFlags::NOREPLACE)
    }

    fn rename_with(
        &self,
        from: &OsStr,
        dest: &Dir,
        to: &OsStr,
        flags: RenameFlags,
    ) -> io::Result<()> {
        let from = component(from)?;
        let to = component(to)?;
        rustix::fs::renameat_with(&self.fd, from, &dest.fd, to, flags)?;
        Ok(())
    }

    /// Put `temp` (this tool's new file) in place of `name` only if
    /// `name` is still the file `expected` (identity, size, modification
    /// time), with no moment where a file put at `name` by someone else
    /// is replaced unseen: the two names are exchanged atomically
    /// (`renameat2(RENAME_EXCHANGE)`), what now sits under `temp` is
    /// checked and, if it is not `expected`, exchanged back (kind
    /// `changed`); otherwise the old file is unlinked. Where the
    /// filesystem cannot exchange, it is checked, then renamed over.
    pub fn replace_if(
        &self,
        temp: impl AsRef<OsStr>,
        name: impl AsRef<OsStr>,
        expected: &Status,
    ) -> io::Result<()> {
        let temp = component(temp.as_ref())?;
        let name = component(name.as_ref())?;
        let mismatch = |now: &Status| {
            if now.kind == Kind::File && now.id == expected.id {
                refusal(
                    ErrorKind::Changed,
                    "changed (size or modification time) since it was judged; left alone",
                )
            } else {
                changed(now.kind)
            }
        };
        crate::hook::point("tree.before_replace");
        match rustix::fs::renameat_with(&self.fd, temp, &self.fd, name, RenameFlags::EXCHANGE) {
            Ok(()) => {
                let old = self.status(temp)?;
                if old.kind != Kind::File || !old.same_as(expected) {
                    rustix::fs::renameat_with(
                        &self.fd,
                        temp,
                        &self.fd,
                        name,
                        RenameFlags::EXCHANGE,
                    )?;
                    return Err(mismatch(&old));
                }
                rustix::fs::unlinkat(&self.fd, temp, AtFlags::empty())?;
                Ok(())
            }
            Err(rustix::io::Errno::INVAL | rustix::io::Errno::NOSYS) => {
                let now = self.status(name)?;
                if now.kind != Kind::File || !now.same_as(expected) {
                    return Err(mismatch(&now));
                }
                rustix::fs::renameat(&self.fd, temp, &self.fd, name)?;
                Ok(())
            }
            Err(rustix::io::Errno::NOENT) => Err(refusal(
                ErrorKind::Changed,
                "vanished since it was judged; nothing replaced",
            )),
            Err(e) => Err(e.into()),
        }
    }

    /// A second handle on the same directory.
    pub fn try_clone(&self) -> io::Result<Dir> {
        Ok(Dir {
            fd: self.fd.try_clone()?,
            path: self.path.clone(),
            id: self.id,
        })
    }

    /// Flush the directory's entries to disk (after a rename or unlink
    /// that must survive a crash).
    pub fn sync(&self) -> io::Result<()> {
        rustix::fs::fsync(&self.fd)?;
        Ok(())
    }
}

/// `/proc/self/fd/N`: the path of an open file or directory for a call
/// that only takes paths (the kernel resolves it to the very file open).
pub fn fd_path(fd: &impl AsRawFd) -> PathBuf {
    PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()))
}

/// Open the directory `path` as the kernel resolves it for a program
/// that reads a path written in a file (qemu, a backing file's
/// directory): relative to the open directory `at` (an absolute one as
/// it is), every link on the way followed, as an `O_PATH` handle through
/// which nothing can be read. For matching such a path by identity; the
/// trees this module walks are never opened this way.
pub fn open_dir_path_at(at: BorrowedFd<'_>, path: &OsStr) -> io::Result<File> {
    let fd = rustix::fs::openat(
        at,
        path,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    Ok(File::from(fd))
}

/// The error for a file whose identity is not the one listed.
pub fn changed(now: Kind) -> io::Error {
    refusal(
        ErrorKind::Changed,
        format!(
            "was replaced (now another {}) since it was listed; left alone",
            now.describe()
        ),
    )
}

/// Check that an opened file is still what was listed (identity, size,
/// modification time): the bytes about to be hashed, uploaded or
/// rewritten are those of the file that was judged.
pub fn check_same(file: &File, listed: &Status) -> io::Result<()> {
    let now = Status::of_file(file)?;
    if now.same_as(listed) {
        Ok(())
    } else if now.id == listed.id {
        Err(refusal(
            ErrorKind::Changed,
            "changed (size or modification time) since it was listed",
        ))
    } else {
        Err(changed(now.kind))
    }
}

fn not_a_dir(e: io::Error) -> io::Error {
    if e.raw_os_error() == Some(libc::ENOTDIR) {
        refusal(ErrorKind::NotRegular, "is not a directory")
    } else {
        e
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use std::os::unix::fs::symlink;

    fn kind(e: &io::Error) -> ErrorKind {
        ErrorKind::from_io(e)
    }

    #[test]
    fn links_below_the_root_are_never_followed() {
        let t = tempfile::tempdir().unwrap();
        let outside = t.path().join("outside");
        std::fs::create_dir(&outside).unwrap();
        std::fs::write(outside.join("decoy"), b"decoy").unwrap();
        let root = t.path().join("root");
        std::fs::create_dir(&root).unwrap();
        symlink(&outside, root.join("sub")).unwrap();
        symlink(outside.join("decoy"), root.join("file")).unwrap();
        let d = Dir::open(&root).unwrap();
        assert_eq!(kind(&d.subdir("sub").unwrap_err()), ErrorKind::Symlink);
        assert_eq!(kind(&d.open_file("file").unwrap_err()), ErrorKind::Symlink);
        assert_eq!(d.status("file").unwrap().kind, Kind::Symlink);
        assert!(d.create_new("file", 0o644).is_err());
        assert_eq!(std::fs::read(outside.join("decoy")).unwrap(), b"decoy");
        assert_eq!(
            kind(&d.open_file("../outside/decoy").unwrap_err()),
            ErrorKind::Refused
        );
        // The root itself may be reached through a link (the operator's).
        let via = t.path().join("via");
        symlink(&root, &via).unwrap();
        let d = Dir::open(&via).unwrap();
        let mut names = d.names().unwrap();
        names.sort();
        assert_eq!(names, ["file", "sub"]);
    }

    #[test]
    fn a_pinned_directory_is_not_redirected_by_a_swap() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path().join("root");
        std::fs::create_dir_all(root.join("cache")).unwrap();
        std::fs::write(root.join("cache/x"), b"cached").unwrap();
        let other = t.path().join("other");
        std::fs::create_dir(&other).unwrap();
        std::fs::write(other.join("x"), b"decoy").unwrap();
        let cache = Dir::open(&root).unwrap().subdir("cache").unwrap();
        let listed = cache.status("x").unwrap();
        // The cache directory is swapped for a link to another one.
        std::fs::rename(root.join("cache"), root.join("moved")).unwrap();
        symlink(&other, root.join("cache")).unwrap();
        cache.remove_file_if("x", listed.id).unwrap();
        assert!(!root.join("moved/x").exists());
        assert_eq!(std::fs::read(other.join("x")).unwrap(), b"decoy");
    }

    #[test]
    fn a_file_replaced_after_listing_is_left_alone() {
        let t = tempfile::tempdir().unwrap();
        std::fs::write(t.path().join("a"), b"one").unwrap();
        let d = Dir::open(t.path()).unwrap();
        let listed = d.status("a").unwrap();
        std::fs::write(t.path().join("b"), b"two").unwrap();
        std::fs::rename(t.path().join("b"), t.path().join("a")).unwrap();
        let e = d.remove_file_if("a", listed.id).unwrap_err();
        assert_eq!(kind(&e), ErrorKind::Changed);
        assert_eq!(std::fs::read(t.path().join("a")).unwrap(), b"two");
        let f = d.open_file("a").unwrap();
        assert_eq!(
            kind(&check_same(&f, &listed).unwrap_err()),
            ErrorKind::Changed
        );
    }

    #[test]
    fn open_if_file_opens_only_regular_files_and_never_follows() {
        let t = tempfile::tempdir().unwrap();
        std::fs::write(t.path().join("f"), b"data").unwrap();
        std::fs::create_dir(t.path().join("d")).unwrap();
        symlink(t.path().join("f"), t.path().join("l")).unwrap();
        rustix::fs::mknodat(
            rustix::fs::CWD,
            t.path().join("p"),
            rustix::fs::FileType::Fifo,
            Mode::from_raw_mode(0o600),
            0,
        )
        .unwrap();
        let d = Dir::open(t.path()).unwrap();
        let listed = d.entries().unwrap();
        assert_eq!(listed.len(), 4);
        let kinds: Vec<(&str, Option<Kind>)> = listed
            .iter()
            .map(|(n, k)| (n.to_str().unwrap(), *k))
            .collect();
        // tmpfs and ext4 give the type; a filesystem that does not says None.
        for (name, k) in kinds {
            let want = match name {
                "f" => Kind::File,
                "d" => Kind::Dir,
                "l" => Kind::Symlink,
                _ => Kind::Special,
            };
            assert!(k.is_none() || k == Some(want), "{name}: {k:?}");
        }
        let (f, st) = d.open_if_file("f").unwrap();
        assert!(f.is_some());
        assert_eq!((st.kind, st.size), (Kind::File, 4));
        assert_eq!(st, d.status("f").unwrap());
        for (name, kind) in [("l", Kind::Symlink), ("d", Kind::Dir), ("p", Kind::Special)] {
            let (f, st) = d.open_if_file(name).unwrap();
            assert!(f.is_none(), "{name}");
            assert_eq!(st.kind, kind, "{name}");
        }
        assert_eq!(
            d.open_if_file("gone").unwrap_err().kind(),
            io::ErrorKind::NotFound
        );
        assert_eq!(
            kind(&d.open_if_file("../f").unwrap_err()),
            ErrorKind::Refused
        );
    }

    #[test]
    fn special_files_are_not_regular_and_never_block() {
        let t = tempfile::tempdir().unwrap();
        let fifo = t.path().join("fifo");
        rustix::fs::mknodat(
            rustix::fs::CWD,
            &fifo,
            rustix::fs::FileType::Fifo,
            Mode::from_raw_mode(0o600),
            0,
        )
        .unwrap();
        let d = Dir::open(t.path()).unwrap();
        assert_eq!(
            kind(&d.open_file("fifo").unwrap_err()),
            ErrorKind::NotRegular
        );
        assert_eq!(kind(&d.subdir("fifo").unwrap_err()), ErrorKind::NotRegular);
    }
}
