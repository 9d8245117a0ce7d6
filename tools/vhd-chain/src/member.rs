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
//! first ([`common::tree::check_same`]) and another file there is refused
//! (`changed`).

use common::ErrorKind;
use common::tree::{Dir, Status};
use std::ffi::OsString;
use std::fs::File;
use std::path::{Path, PathBuf};

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

/// The directory holding `path` (a file named on the command line), and
/// the file's name in it: a file changed is opened relative to that
/// directory, never through a link in its last component.
pub fn dir_and_name(path: &Path) -> std::io::Result<(Dir, OsString)> {
    let name = path.file_name().ok_or_else(|| {
        common::files::refusal(ErrorKind::Refused, "names no file (it ends in .. or /)")
    })?;
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    Ok((Dir::open(parent)?, name.to_os_string()))
}
