//! The upload body: the image's bytes, hashed as they stream, with the
//! last byte held back until the whole stream has been checked against the
//! source's size and hash. A short or corrupt stream therefore fails the
//! upload before it is complete, and Glance (told the size) refuses it and
//! leaves the image `queued` with no data: bad bytes never become an
//! active image, and the id stays usable for a retry.

use bytes::Bytes;
use std::io::{self, Read};
use system::hash::{Expected, Mismatch, MultiHasher};

/// Reads exactly `size` bytes of `inner`, verified (module docs).
pub struct Verified<R> {
    inner: R,
    /// Bytes of `inner` not read yet.
    left: u64,
    size: u64,
    hasher: Option<MultiHasher>,
    want: Expected,
    /// Why the data was refused, once it was.
    failed: Option<String>,
    progress: Option<system::progress::Progress>,
}

impl<R: Read> Verified<R> {
    /// `inner` must yield `size` bytes hashing to `want`'s digests.
    pub fn new(inner: R, size: u64, want: Expected) -> Self {
        let algs = want.algorithms();
        Verified {
            inner,
            left: size,
            size,
            hasher: Some(MultiHasher::new(&algs)),
            want,
            failed: None,
            progress: None,
        }
    }

    /// Show progress on stderr (when it is a terminal).
    pub fn with_progress(mut self, p: system::progress::Progress) -> Self {
        self.progress = Some(p);
        self
    }

    /// Why the data was refused (an upload error may come from the data
    /// rather than the network).
    pub fn failure(&self) -> Option<String> {
        self.failed.clone()
    }

    fn refuse(&mut self, kind: io::ErrorKind, why: String) -> io::Error {
        self.failed = Some(why.clone());
        io::Error::new(kind, why)
    }

    /// The stream ended: the digest must be the source's.
    fn check(&mut self) -> io::Result<()> {
        let Some(h) = self.hasher.take() else {
            return Ok(());
        };
        let digests = h.finish();
        let why = match self.want.mismatches(self.size, &digests).into_iter().next() {
            None => return Ok(()),
            Some(Mismatch::Size { want, got }) => {
                format!("the data has {got} bytes, the source image {want}: upload abandoned")
            }
            Some(Mismatch::Digest {
                algorithm,
                want,
                got,
            }) => format!(
                "the data's {} is {}, the source image says {want}: upload abandoned",
                algorithm.name(),
                got.unwrap_or_default()
            ),
        };
        Err(self.refuse(io::ErrorKind::InvalidData, why))
    }

    fn short(&mut self) -> io::Error {
        let why = format!(
            "the data ends after {} of {} bytes: upload abandoned",
            self.size - self.left,
            self.size
        );
        self.refuse(io::ErrorKind::UnexpectedEof, why)
    }
}

impl<R: Read> Read for Verified<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        system::signal::check()?;
        if self.left == 0 {
            // An empty image, or the end: nothing more may come.
            self.check()?;
            return Ok(0);
        }
        if buf.is_empty() {
            return Ok(0);
        }
        // Everything but the last byte goes out as it comes; the last byte
        // is read alone and released only once the digest matches.
        let cap = if self.left > 1 {
            (self.left - 1).min(buf.len() as u64) as usize
        } else {
            1
        };
        let n = self.inner.read(&mut buf[..cap])?;
        if n == 0 {
            return Err(self.short());
        }
        if let Some(h) = &mut self.hasher {
            h.update(&Bytes::copy_from_slice(&buf[..n]));
        }
        self.left -= n as u64;
        if let Some(p) = &mut self.progress {
            p.add(n as u64);
        }
        if self.left == 0 {
            // Anything beyond `size` means the sizes disagree.
            let mut extra = [0u8; 1];
            if self.inner.read(&mut extra)? != 0 {
                let why = format!(
                    "the data is longer than the image's {} bytes: upload abandoned",
                    self.size
                );
                return Err(self.refuse(io::ErrorKind::InvalidData, why));
            }
            self.check()?;
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn md5(data: &[u8]) -> Expected {
        let mut h = MultiHasher::new(&[system::hash::Algorithm::Md5]);
        h.update(&Bytes::copy_from_slice(data));
        Expected {
            size: None,
            digests: h.finish(),
        }
    }

    fn drain(r: &mut dyn Read) -> (Vec<u8>, io::Result<()>) {
        let mut out = Vec::new();
        let mut buf = [0u8; 7];
        loop {
            match r.read(&mut buf) {
                Ok(0) => return (out, Ok(())),
                Ok(n) => out.extend_from_slice(&buf[..n]),
                Err(e) => return (out, Err(e)),
            }
        }
    }

    #[test]
    fn good_data_passes_whole() {
        let data = b"hello, glance".to_vec();
        let mut r = Verified::new(&data[..], data.len() as u64, md5(&data));
        let (out, res) = drain(&mut r);
        assert!(res.is_ok());
        assert_eq!(out, data);
    }

    #[test]
    fn bad_data_never_releases_its_last_byte() {
        let data = b"hello, glance".to_vec();
        let mut r = Verified::new(&data[..], data.len() as u64, md5(b"other bytes!!"));
        let (out, res) = drain(&mut r);
        assert!(res.is_err());
        assert_eq!(out.len(), data.len() - 1);
    }

    #[test]
    fn short_and_long_data_fail() {
        let data = b"0123456789".to_vec();
        let mut r = Verified::new(&data[..5], 10, Expected::default());
        let (out, res) = drain(&mut r);
        assert_eq!(res.unwrap_err().kind(), io::ErrorKind::UnexpectedEof);
        assert_eq!(out.len(), 5);
        let mut r = Verified::new(&data[..], 4, Expected::default());
        let (out, res) = drain(&mut r);
        assert!(res.is_err());
        assert!(out.len() < 4);
    }

    #[test]
    fn empty_image() {
        let mut r = Verified::new(&b""[..], 0, md5(b""));
        assert!(drain(&mut r).1.is_ok());
        let mut r = Verified::new(&b""[..], 0, md5(b"x"));
        assert!(drain(&mut r).1.is_err());
    }
}
