//! An image over HTTP(S) as a [`Source`] for the native probe: bytes come
//! in Range requests of a few blocks, cached, within a budget of requests
//! and bytes per image, so a hostile header cannot make the probe read a
//! whole cloud. The probe reads a few KiB at the start, and where a header
//! points (a VHD footer at the end, a VMDK descriptor, qcow2 extensions).

use crate::glance::{Glance, HttpError};
use formats::Source;
use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::io;

/// The unit of fetching and caching.
const BLOCK: u64 = 16 << 10;
/// The first request: most headers live in the first 64 KiB.
const FIRST: u64 = 64 << 10;

/// How much one image's probe may fetch.
#[derive(Debug, Clone, Copy)]
pub struct Budget {
    /// Range requests, the first included.
    pub requests: u32,
    /// Bytes in all.
    pub bytes: u64,
}

impl Default for Budget {
    fn default() -> Self {
        Budget {
            requests: 32,
            bytes: 2 << 20,
        }
    }
}

/// Why an image could not be opened for probing.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// The request failed.
    #[error(transparent)]
    Http(#[from] HttpError),
    /// The server sent the whole object instead of a part.
    #[error("the server does not honour Range requests (it answered 200 with the whole object)")]
    NoRange,
}

/// An HTTP object read by ranges.
pub struct HttpSource<'a> {
    glance: &'a Glance,
    path: String,
    len: u64,
    blocks: RefCell<BTreeMap<u64, Vec<u8>>>,
    budget: Budget,
    requests: Cell<u32>,
    bytes: Cell<u64>,
}

impl<'a> HttpSource<'a> {
    /// Open `path` of `glance` (the whole URL when `path` is empty): the
    /// first bytes and the size.
    pub fn open(glance: &'a Glance, path: &str, budget: Budget) -> Result<Self, OpenError> {
        let Some((first, len)) = glance.get_range(path, 0, FIRST - 1)? else {
            return Err(OpenError::NoRange);
        };
        let s = HttpSource {
            glance,
            path: path.to_owned(),
            len,
            blocks: RefCell::new(BTreeMap::new()),
            budget,
            requests: Cell::new(1),
            bytes: Cell::new(first.len() as u64),
        };
        s.store(0, first);
        Ok(s)
    }

    /// Range requests made so far.
    pub fn requests(&self) -> u32 {
        self.requests.get()
    }

    /// Bytes fetched so far.
    pub fn bytes(&self) -> u64 {
        self.bytes.get()
    }

    /// Cut `data` fetched at `start` into blocks.
    fn store(&self, start: u64, data: Vec<u8>) {
        let mut blocks = self.blocks.borrow_mut();
        for (i, chunk) in data.chunks(BLOCK as usize).enumerate() {
            blocks.insert(start / BLOCK + i as u64, chunk.to_vec());
        }
    }

    fn fetch(&self, index: u64) -> io::Result<()> {
        let start = index * BLOCK;
        let end = (start + BLOCK).min(self.len) - 1;
        let want = end - start + 1;
        if self.requests.get() >= self.budget.requests
            || self.bytes.get() + want > self.budget.bytes
        {
            return Err(io::Error::other(format!(
                "probe budget spent ({} requests, {} bytes): the header points too far",
                self.requests.get(),
                self.bytes.get()
            )));
        }
        self.requests.set(self.requests.get() + 1);
        let part = self
            .glance
            .get_range(&self.path, start, end)
            .map_err(io::Error::other)?
            .ok_or_else(|| io::Error::other(OpenError::NoRange.to_string()))?;
        self.bytes.set(self.bytes.get() + part.0.len() as u64);
        self.store(start, part.0);
        Ok(())
    }
}

impl Source for HttpSource<'_> {
    fn len(&self) -> u64 {
        self.len
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
        let mut done = 0usize;
        while done < buf.len() {
            let pos = offset + done as u64;
            if pos >= self.len {
                break;
            }
            let index = pos / BLOCK;
            if !self.blocks.borrow().contains_key(&index) {
                self.fetch(index)?;
            }
            let blocks = self.blocks.borrow();
            let Some(block) = blocks.get(&index) else {
                break;
            };
            let within = (pos - index * BLOCK) as usize;
            if within >= block.len() {
                // The server sent less than asked: the end as it sees it.
                break;
            }
            let n = (block.len() - within).min(buf.len() - done);
            buf[done..done + n].copy_from_slice(&block[within..within + n]);
            done += n;
        }
        Ok(done)
    }
}
