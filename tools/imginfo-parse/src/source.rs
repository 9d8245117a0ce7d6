//! The bytes a native probe reads: a regular file at offsets, or a stream
//! (pipe, FIFO, `-`, `/dev/stdin`, a character device) read for real, once,
//! up to [`STREAM_BOUND`], into memory.
//!
//! A stream's length is unknown until it ends. One that ended within the
//! bound is whole: probed exactly like a file of that length. One that did
//! not is probed from its prefix, and every read the probe makes past that
//! prefix fails and is remembered, so the probe can never take bytes it did
//! not read for absent ones (a VHD footer at the end, a backing name past
//! the bound): the record then says what was not read, and `--check` fails
//! closed.

use formats::Source;
use std::cell::Cell;
use std::io::{self, Read};
use system::files::{Input, InputKind};

/// The most a stream is read: every header the native probe knows lives in
/// the first few MiB of an image, and a stream this size is held in memory.
pub const STREAM_BOUND: usize = 16 << 20;

/// The length a stream longer than its bound stands as: far past any
/// header offset, far from overflowing the parsers' arithmetic (1 EiB).
pub const UNKNOWN_LEN: u64 = 1 << 60;

/// A regular file or a block device, read at offsets.
pub type FileBytes = formats::FileSource;

/// The first bytes of a stream, and whether they are all of it.
#[derive(Debug)]
pub struct StreamBytes {
    buf: Vec<u8>,
    /// The stream ended within the bound: `buf` is all of it.
    complete: bool,
    /// The first offset past `buf` the probe asked for (incomplete only).
    missed: Cell<Option<u64>>,
    /// Whether the probe asked for anything past `buf` at all.
    end_missed: Cell<bool>,
}

impl StreamBytes {
    /// Read `input` up to `bound` bytes (one more tells whether it ended).
    pub fn read(input: &mut Input, bound: usize) -> io::Result<Self> {
        let mut buf = Vec::new();
        input
            .by_ref()
            .take(bound as u64 + 1)
            .read_to_end(&mut buf)?;
        let complete = buf.len() <= bound;
        buf.truncate(bound);
        Ok(Self::from_prefix(buf, complete))
    }

    /// Bytes already read; `complete` when they are the whole stream.
    pub fn from_prefix(buf: Vec<u8>, complete: bool) -> Self {
        StreamBytes {
            buf,
            complete,
            missed: Cell::new(None),
            end_missed: Cell::new(false),
        }
    }

    /// Bytes read.
    pub fn bytes_read(&self) -> u64 {
        self.buf.len() as u64
    }

    /// Whether the stream ended within the bound.
    pub fn complete(&self) -> bool {
        self.complete
    }

    /// The lowest offset past the bytes read that the probe asked for
    /// (not counting its looks at the end).
    pub fn missed(&self) -> Option<u64> {
        self.missed.get()
    }

    /// Whether the probe asked for any byte it was not given.
    pub fn any_missed(&self) -> bool {
        self.end_missed.get()
    }

    /// Why the probe's answer is not the whole story, if it is not: the
    /// stream's end was not read (its size and any footer unknown), and
    /// where the probe wanted bytes it did not get.
    pub fn not_read(&self) -> Option<String> {
        if self.complete {
            return None;
        }
        let n = self.buf.len();
        Some(match self.missed() {
            Some(at) => format!(
                "a stream read up to its probe bound ({n} bytes): the probe needs bytes at offset {at}, \
which were not read, and the stream's end (its size, any footer) was not read either"
            ),
            None => format!(
                "a stream longer than its probe bound ({n} bytes): its end (its size, any footer) was not read"
            ),
        })
    }
}

impl Source for StreamBytes {
    fn len(&self) -> u64 {
        if self.complete {
            self.buf.len() as u64
        } else {
            // Unknown: at least what was read, perhaps without end. Not
            // u64::MAX: the parsers do sector arithmetic on the length,
            // and every read near this "end" fails anyway.
            UNKNOWN_LEN
        }
    }
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
        let have = self.buf.len() as u64;
        let end = offset.saturating_add(buf.len() as u64);
        if !self.complete && end > have && !buf.is_empty() {
            // A short read, as at an end: the parser then says "not this
            // format" or "truncated", and the miss, remembered here, marks
            // whatever it concluded as not read. Reads near the stand-in
            // length look for footers at the end, which `not_read` already
            // names.
            let at = offset.max(have);
            if at < UNKNOWN_LEN / 2 && self.missed.get().is_none_or(|m| at < m) {
                self.missed.set(Some(at));
            }
            self.end_missed.set(true);
        }
        self.buf.as_slice().read_at(offset, buf)
    }
}

/// What a native probe reads.
pub enum Opened {
    /// A regular file.
    File(FileBytes),
    /// A stream, read into memory.
    Stream(StreamBytes),
}

impl Opened {
    /// Read `input` as what it is.
    pub fn from_input(mut input: Input) -> io::Result<Self> {
        match input.kind() {
            InputKind::Regular => Ok(Opened::File(FileBytes::from_input(input)?)),
            InputKind::Stream => Ok(Opened::Stream(StreamBytes::read(&mut input, STREAM_BOUND)?)),
        }
    }

    /// As a probe source.
    pub fn source(&self) -> &dyn Source {
        match self {
            Opened::File(f) => f,
            Opened::Stream(s) => s,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_whole_stream_reads_like_a_file() {
        let s = StreamBytes::from_prefix(vec![1, 2, 3], true);
        assert_eq!(s.len(), 3);
        let mut b = [0u8; 8];
        assert_eq!(s.read_at(1, &mut b).unwrap(), 2);
        assert_eq!(s.read_at(9, &mut b).unwrap(), 0);
        assert!(s.not_read().is_none());
    }

    #[test]
    fn reads_past_a_prefix_are_short_and_remembered() {
        let s = StreamBytes::from_prefix(vec![0; 100], false);
        assert_eq!(s.len(), UNKNOWN_LEN);
        let mut b = [0u8; 10];
        assert_eq!(s.read_at(90, &mut b).unwrap(), 10);
        assert!(!s.any_missed());
        assert!(s.not_read().unwrap().contains("end"));
        assert_eq!(s.read_at(95, &mut b).unwrap(), 5);
        assert_eq!(s.missed(), Some(100));
        assert_eq!(s.read_at(UNKNOWN_LEN - 512, &mut b).unwrap(), 0);
        assert_eq!(s.missed(), Some(100));
        assert!(s.any_missed());
        assert!(s.not_read().unwrap().contains("offset 100"));
    }

    #[test]
    fn the_probe_never_judges_an_unread_end() {
        // 1 MiB of zeros, cut: raw, but the VHD footer's place was not read.
        let s = StreamBytes::from_prefix(vec![0; 1 << 20], false);
        let p = formats::probe(&s, "-", None).unwrap();
        assert_eq!(p.format, formats::Format::Raw);
        assert!(s.any_missed());
        assert!(s.missed().is_none());
    }

    #[test]
    fn cut_hostile_images_probe_without_panicking() {
        // The parsers' arithmetic meets the stand-in length here, with
        // every header of the hostile corpus cut at a few places.
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../tests/fixtures/hostile/images");
        let mut n = 0;
        for e in std::fs::read_dir(dir).unwrap() {
            let data = std::fs::read(e.unwrap().path()).unwrap();
            for cut in [0, 1, 512, 4096, 65536, 1 << 20] {
                if cut < data.len() {
                    let s = StreamBytes::from_prefix(data[..cut].to_vec(), false);
                    let _ = formats::probe(&s, "-", None);
                    let _ = formats::probe(&s, "-", Some("qcow2"));
                    n += 1;
                }
            }
        }
        assert!(n > 50, "{n}");
    }
}
