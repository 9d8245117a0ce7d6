//! Extended attributes, for the Glance cache's xattr driver (`user.hits`,
//! `user.error`). Symlinks are never followed.

use std::io;
use std::path::Path;

/// Set attribute `name` of the file at `path` (not following a symlink).
pub fn set(path: &Path, name: &str, value: &[u8]) -> io::Result<()> {
    xattr::set(path, name, value)
}

/// Attribute `name` of the file at `path` (not following a symlink):
/// `Ok(None)` when the file has no such attribute (`ENODATA`); an error of
/// kind `Unsupported` when the filesystem has no xattrs (`EOPNOTSUPP`,
/// which std leaves uncategorized). The kernel bounds a value at 64 KiB.
pub fn get(path: &Path, name: &str) -> io::Result<Option<Vec<u8>>> {
    xattr::get(path, name).map_err(|e| match e.raw_os_error() {
        Some(libc::EOPNOTSUPP) => io::Error::new(io::ErrorKind::Unsupported, e),
        _ => e,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_then_get_or_unsupported() {
        let Ok(t) = tempfile::tempdir() else { return };
        let p = t.path().join("f");
        if std::fs::write(&p, b"x").is_err() {
            return;
        }
        match set(&p, "user.hits", b"7") {
            Ok(()) => {
                assert_eq!(get(&p, "user.hits").ok().flatten(), Some(b"7".to_vec()));
                assert_eq!(get(&p, "user.none").ok().flatten(), None);
            }
            // A filesystem without user xattrs (tmpfs on old kernels).
            Err(e) => {
                assert!(get(&p, "user.hits").is_err() || e.kind() == io::ErrorKind::Unsupported)
            }
        }
    }
}
