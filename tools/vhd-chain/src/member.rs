//! Chain directories: the directory is opened once ([`Dir`]) and every
//! member is opened relative to that handle with `O_NOFOLLOW`, so a member
//! that is a symbolic link is refused (`symlink`) in every subcommand,
//! never read or written through, and a FIFO or device is `not_regular`
//! (never opened in a way that blocks). The directory path the operator
//! gave may go through links (resolved once, when it is opened).
//!
//! A member is judged from the handle opened here, and that handle is the
//! one read (and, for `fix`, copied); where a name must be used again (a
//! rename into place), its identity is compared with the judged handle
//! first ([`system::tree::check_same`]) and another file there is refused
//! (`changed`).

use filter::ErrorKind;
use std::ffi::OsString;
use std::fs::File;
use std::path::{Path, PathBuf};
use system::tree::{Dir, Status};

/// An error as the subcommands report it: kind and message (the message
/// names the file).
pub type Failure = (ErrorKind, String);

/// A chain directory, opened once, and its chain's member names, leaf
/// first ([`crate::chain_of_names`]).
#[derive(Debug)]
pub struct ChainDir {
    dir: Dir,
    names: Vec<OsString>,
}

/// One member, opened relative to its directory and judged from this
/// handle.
#[derive(Debug)]
pub struct Member {
    /// `DIR/NAME`, for records and messages only.
    pub path: PathBuf,
    /// Its name in the directory.
    pub name: OsString,
    /// The open file.
    pub file: File,
    /// What it was when opened (identity, size, mtime).
    pub status: Status,
}

fn failure(path: &Path, e: &std::io::Error) -> Failure {
    (ErrorKind::from_io(e), format!("{}: {e}", path.display()))
}

impl ChainDir {
    /// Open `path` and find its chain by name (Cinder's rule, see
    /// [`crate::discover`]). Nothing is opened but the directory.
    pub fn open(path: &Path) -> Result<ChainDir, Failure> {
        let dir = Dir::open(path).map_err(|e| failure(path, &e))?;
        let names: Vec<String> = dir
            .names()
            .map_err(|e| failure(path, &e))?
            .into_iter()
            .filter_map(|n| n.into_string().ok())
            .collect();
        let chain = crate::chain_of_names(&path.display().to_string(), &names)?;
        Ok(ChainDir {
            dir,
            names: chain.into_iter().map(OsString::from).collect(),
        })
    }

    /// The directory handle.
    pub fn dir(&self) -> &Dir {
        &self.dir
    }

    /// How many members.
    pub fn len(&self) -> usize {
        self.names.len()
    }

    /// Whether there are none (never, once opened).
    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    /// The members' names, leaf first.
    pub fn names(&self) -> &[OsString] {
        &self.names
    }

    /// `DIR/NAME` of every member, leaf first (records and messages).
    pub fn paths(&self) -> Vec<PathBuf> {
        self.names.iter().map(|n| self.dir.join(n)).collect()
    }

    /// Open member `i` for reading (module docs).
    pub fn open_member(&self, i: usize) -> Result<Member, Failure> {
        let name = self.names.get(i).cloned().unwrap_or_default();
        let path = self.dir.join(&name);
        let file = self.dir.open_file(&name).map_err(|e| failure(&path, &e))?;
        let status = Status::of_file(&file).map_err(|e| failure(&path, &e))?;
        Ok(Member {
            path,
            name,
            file,
            status,
        })
    }

    /// Open every member, leaf first; the first refusal stops.
    pub fn open_all(&self) -> Result<Vec<Member>, Failure> {
        (0..self.names.len()).map(|i| self.open_member(i)).collect()
    }

    /// Open every member and check that they form one chain (as
    /// [`crate::read::Chain::open`] does for paths).
    pub fn read_chain(&self) -> Result<crate::read::Chain, Failure> {
        let members = self.open_all()?;
        crate::read::Chain::from_files(members.into_iter().map(|m| (m.path, m.file)).collect())
            .map_err(|e| (e.kind(), e.to_string()))
    }
}

/// A file vhd-chain changes (resize, coalesce's parent) or reads beside
/// it (coalesce's child and ancestors): opened once, relative to its
/// directory's handle, without following a link; judged, read and, for
/// the one changed, rewritten (in place) or replaced (by exchange,
/// [`Dir::replace_if`]) through these handles only.
#[derive(Debug)]
pub struct Target {
    /// The path given (records and messages only).
    pub path: PathBuf,
    /// Its directory, opened once.
    pub dir: Dir,
    /// Its name there.
    pub name: OsString,
    /// The open file (read-write when changed in place).
    pub file: File,
    /// What it was when opened (identity, size, mtime).
    pub status: Status,
}

impl Target {
    /// Open `path` (its directory through the operator's links, the file
    /// itself never through one), for writing too when `write`.
    pub fn open(path: &Path, write: bool) -> std::io::Result<Target> {
        let (dir, name) = dir_and_name(path)?;
        Target::open_in(dir, name, path.to_path_buf(), write)
    }

    /// Open `name` in `dir` (`path` names it in records).
    pub fn open_in(
        dir: Dir,
        name: OsString,
        path: PathBuf,
        write: bool,
    ) -> std::io::Result<Target> {
        let file = if write {
            dir.open_file_rw(&name)
        } else {
            dir.open_file(&name)
        }
        .map_err(|e| {
            if ErrorKind::from_io(&e) == ErrorKind::Symlink {
                crate::input::symlink_refusal()
            } else {
                e
            }
        })?;
        let status = Status::of_file(&file)?;
        Ok(Target {
            path,
            dir,
            name,
            file,
            status,
        })
    }

    /// A second handle on the opened file (a reader with its own
    /// position).
    pub fn handle(&self) -> std::io::Result<File> {
        self.file.try_clone()
    }

    /// Whether the opened file is still what was judged, and still the
    /// file its name in its directory holds (a file renamed over it
    /// meanwhile is `changed`: writing the judged one would change what
    /// no name reaches).
    pub fn unchanged(&self) -> std::io::Result<()> {
        system::tree::check_same(&self.file, &self.status)?;
        let now = self.dir.status(&self.name)?;
        if now.kind == system::tree::Kind::File && now.same_as(&self.status) {
            Ok(())
        } else {
            Err(system::tree::changed(now.kind))
        }
    }
}

impl ChainDir {
    /// Member `i` as a [`Target`] (for writing when `write`), relative to
    /// the directory's handle.
    pub fn open_target(&self, i: usize, write: bool) -> Result<Target, Failure> {
        let name = self.names.get(i).cloned().unwrap_or_default();
        let path = self.dir.join(&name);
        self.dir
            .try_clone()
            .and_then(|d| Target::open_in(d, name, path.clone(), write))
            .map_err(|e| failure(&path, &e))
    }
}

/// The directory holding `path` (a file named on the command line), and
/// the file's name in it: a file changed is opened relative to that
/// directory, never through a link in its last component.
pub fn dir_and_name(path: &Path) -> std::io::Result<(Dir, OsString)> {
    let name = path.file_name().ok_or_else(|| {
        system::files::refusal(ErrorKind::Refused, "names no file (it ends in .. or /)")
    })?;
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    Ok((Dir::open(parent)?, name.to_os_string()))
}
