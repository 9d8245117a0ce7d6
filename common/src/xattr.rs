//! Extended attributes, for the Glance cache's xattr driver (`user.hits`,
//! `user.error`). Symlinks are never followed.

use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// The most bytes of an attribute value read (Glance's are short decimal
/// numbers or an exception text).
pub const MAX_VALUE: usize = 64 * 1024;

fn cstrings(path: &Path, name: &str) -> io::Result<(CString, CString)> {
    Ok((
        CString::new(path.as_os_str().as_bytes())?,
        CString::new(name)?,
    ))
}

/// Set attribute `name` of the file at `path` (not following a symlink).
#[allow(unsafe_code)]
pub fn set(path: &Path, name: &str, value: &[u8]) -> io::Result<()> {
    let (p, n) = cstrings(path, name)?;
    // SAFETY: valid NUL-terminated strings and a buffer with its length.
    let rc = unsafe {
        libc::lsetxattr(
            p.as_ptr(),
            n.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Attribute `name` of the file at `path` (not following a symlink):
/// `Ok(None)` when the file has no such attribute; an error when the
/// filesystem has no xattrs (`Unsupported`) or the value is longer than
/// [`MAX_VALUE`].
#[allow(unsafe_code)]
pub fn get(path: &Path, name: &str) -> io::Result<Option<Vec<u8>>> {
    let (p, n) = cstrings(path, name)?;
    let mut buf = vec![0u8; MAX_VALUE];
    // SAFETY: valid NUL-terminated strings; the buffer is writable for its
    // length, which is passed.
    let rc = unsafe { libc::lgetxattr(p.as_ptr(), n.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    if rc >= 0 {
        buf.truncate(usize::try_from(rc).unwrap_or(0));
        return Ok(Some(buf));
    }
    let e = io::Error::last_os_error();
    match e.raw_os_error() {
        Some(libc::ENODATA) => Ok(None),
        Some(libc::EOPNOTSUPP) => Err(io::Error::new(io::ErrorKind::Unsupported, e)),
        _ => Err(e),
    }
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
