//! JSON Lines input and output.
//!
//! The reader takes bytes, yields one record per non-blank line, and turns a
//! malformed line into an error value carrying its line number: it never
//! panics and never stops the stream. The writer emits compact JSON, one
//! object per line, flushed per record, so `head -1` and slow consumers see
//! records as they are made; a closed pipe surfaces as
//! `io::ErrorKind::BrokenPipe`, which [`crate::cli::main`] turns into a quiet
//! exit 0.

use crate::record::{ErrorKind, Record};
use serde::Serialize;
use serde_json::Value;
use std::io::{self, BufRead, Read, Write};

/// Longest accepted input line. A record is metadata; a longer line is
/// hostile or not JSON Lines, and is skipped rather than buffered whole.
pub const MAX_LINE: usize = 16 * 1024 * 1024;

/// A line that could not be read as a record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadLine {
    /// Line number, from 1.
    pub line: u64,
    /// `bad_json`, `bad_record` or `too_large`.
    pub kind: ErrorKind,
    /// What was wrong.
    pub message: String,
}

/// Reads records from JSON Lines.
pub struct RecordReader<R> {
    inner: R,
    line: u64,
    buf: Vec<u8>,
}

impl<R: BufRead> RecordReader<R> {
    /// Read from any buffered byte source.
    pub fn new(inner: R) -> Self {
        RecordReader {
            inner,
            line: 0,
            buf: Vec::new(),
        }
    }

    /// Read one line into `buf`, at most `MAX_LINE` bytes of it; the rest of
    /// an over-long line is consumed and dropped. Returns (bytes seen, too long).
    fn read_line(&mut self) -> io::Result<(usize, bool)> {
        self.buf.clear();
        let n = (&mut self.inner)
            .take(MAX_LINE as u64 + 1)
            .read_until(b'\n', &mut self.buf)?;
        if n > MAX_LINE && self.buf.last() != Some(&b'\n') {
            // Drain to the end of this line without keeping it.
            let mut total = n;
            loop {
                let (done, used) = {
                    let avail = self.inner.fill_buf()?;
                    if avail.is_empty() {
                        (true, 0)
                    } else if let Some(i) = avail.iter().position(|&b| b == b'\n') {
                        (true, i + 1)
                    } else {
                        (false, avail.len())
                    }
                };
                self.inner.consume(used);
                total += used;
                if done {
                    break;
                }
            }
            return Ok((total, true));
        }
        Ok((n, false))
    }

    /// The next record, `Ok(None)` at the end. I/O errors are returned as
    /// `Err`; bad lines as `Ok(Some(Err(..)))` so the caller can go on.
    pub fn next_record(&mut self) -> io::Result<Option<Result<Record, BadLine>>> {
        loop {
            let (n, too_long) = self.read_line()?;
            if n == 0 {
                return Ok(None);
            }
            self.line += 1;
            if too_long {
                return Ok(Some(Err(BadLine {
                    line: self.line,
                    kind: ErrorKind::TooLarge,
                    message: format!("line longer than {MAX_LINE} bytes"),
                })));
            }
            let text = trim_ascii(&self.buf);
            if text.is_empty() {
                continue;
            }
            return Ok(Some(parse_record(text, self.line)));
        }
    }

    /// Number of the last line read, from 1.
    pub fn line(&self) -> u64 {
        self.line
    }
}

impl<R: BufRead> Iterator for RecordReader<R> {
    type Item = io::Result<Result<Record, BadLine>>;
    fn next(&mut self) -> Option<Self::Item> {
        self.next_record().transpose()
    }
}

/// The records of a file read whole (an option's `--instances FILE`),
/// each with its line number, lines bounded as [`RecordReader`] bounds
/// them; the first bad line or read error is the last item, an `Err`
/// (a read error as a `BadLine` of its kind): one bad line makes such a
/// file unusable.
pub fn read_strict<R: BufRead>(input: R) -> impl Iterator<Item = Result<(u64, Record), BadLine>> {
    let mut reader = RecordReader::new(input);
    let mut done = false;
    std::iter::from_fn(move || {
        if done {
            return None;
        }
        let item = match reader.next_record() {
            Ok(None) => return None,
            Ok(Some(Ok(rec))) => return Some(Ok((reader.line(), rec))),
            Ok(Some(Err(bad))) => bad,
            Err(e) => BadLine {
                line: reader.line() + 1,
                kind: ErrorKind::from_io(&e),
                message: e.to_string(),
            },
        };
        done = true;
        Some(Err(item))
    })
}

fn trim_ascii(b: &[u8]) -> &[u8] {
    b.trim_ascii()
}

/// Parse one line's text as a record (a JSON object).
pub fn parse_record(text: &[u8], line: u64) -> Result<Record, BadLine> {
    match serde_json::from_slice::<Value>(text) {
        Ok(Value::Object(m)) => Ok(Record::from_map(m)),
        Ok(other) => Err(BadLine {
            line,
            kind: ErrorKind::BadRecord,
            message: format!("expected a JSON object, found {}", json_type(&other)),
        }),
        Err(e) => Err(BadLine {
            line,
            kind: ErrorKind::BadJson,
            message: format!("invalid JSON: {e}"),
        }),
    }
}

/// The JSON type name of a value, for messages.
pub fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Writes records as JSON Lines: [`RecordWriter::write`] sends each at once,
/// [`RecordWriter::append`] holds them (up to 64 KiB) until a flush.
pub struct RecordWriter<W: Write> {
    out: W,
    buf: Vec<u8>,
}

impl<W: Write> RecordWriter<W> {
    /// Write to `out` (normally the locked stdout).
    pub fn new(out: W) -> Self {
        RecordWriter {
            out,
            buf: Vec::with_capacity(4096),
        }
    }

    /// Write one record (or any object) as one line and flush it (with
    /// any lines held before it).
    pub fn write<T: Serialize + ?Sized>(&mut self, rec: &T) -> io::Result<()> {
        self.append(rec)?;
        self.flush()
    }

    /// Add one record as one line, written out in 64 KiB pieces: nothing
    /// reaches `out` for sure before [`RecordWriter::flush`].
    pub fn append<T: Serialize + ?Sized>(&mut self, rec: &T) -> io::Result<()> {
        let at = self.buf.len();
        if let Err(e) = serde_json::to_writer(&mut self.buf, rec) {
            // Never half a line.
            self.buf.truncate(at);
            return Err(io::Error::other(e));
        }
        self.buf.push(b'\n');
        if self.buf.len() >= 64 * 1024 {
            self.out.write_all(&self.buf)?;
            self.buf.clear();
        }
        Ok(())
    }

    /// Write out the lines held, and flush `out`.
    pub fn flush(&mut self) -> io::Result<()> {
        if !self.buf.is_empty() {
            let r = self.out.write_all(&self.buf);
            self.buf.clear();
            r?;
        }
        self.out.flush()
    }

    /// Whether lines are held, not yet written.
    pub fn holds(&self) -> bool {
        !self.buf.is_empty()
    }

    /// Write records produced all at once (a walk's result) in few large
    /// writes, flushing at the end: one syscall per 64 KiB instead of per
    /// record.
    pub fn write_batch<T: Serialize>(&mut self, recs: &[T]) -> io::Result<()> {
        for rec in recs {
            self.append(rec)?;
        }
        self.flush()
    }

    /// [`RecordWriter::write_batch`] with the records serialized on `jobs`
    /// threads, a chunk at a time, and written in their order: a walk's
    /// tens of thousands of records are not turned into text on one core.
    pub fn write_batch_on<T: Serialize + Sync>(
        &mut self,
        recs: &[T],
        jobs: usize,
    ) -> io::Result<()> {
        // About 256 KiB of text per chunk: few writes, little in flight.
        const CHUNK: usize = 256;
        if jobs <= 1 || recs.len() <= CHUNK {
            return self.write_batch(recs);
        }
        // Lines held so far go first.
        self.flush()?;
        let out = &mut self.out;
        let serialize = |chunk: &[T]| -> io::Result<Vec<u8>> {
            let mut buf = Vec::with_capacity(chunk.len() * 1024);
            for rec in chunk {
                serde_json::to_writer(&mut buf, rec).map_err(io::Error::other)?;
                buf.push(b'\n');
            }
            Ok(buf)
        };
        system::jobs::ordered(jobs, recs.chunks(CHUNK).map(Ok), &serialize, &mut |text| {
            Ok(out.write_all(&text?)?)
        })
        .map_err(|e| match e.downcast::<io::Error>() {
            Ok(e) => e,
            Err(e) => io::Error::other(e),
        })?;
        self.out.flush()
    }

    /// The underlying writer.
    pub fn into_inner(self) -> W {
        self.out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_all(input: &[u8]) -> Vec<Result<Record, BadLine>> {
        RecordReader::new(input).map(|r| r.unwrap()).collect()
    }

    #[test]
    fn appended_records_wait_for_a_flush_then_come_in_order() {
        let mut w = RecordWriter::new(Vec::new());
        w.append(&serde_json::json!({"a": 1})).unwrap();
        w.append(&serde_json::json!({"b": 2})).unwrap();
        assert!(w.holds());
        w.write(&serde_json::json!({"c": 3})).unwrap();
        assert!(!w.holds());
        assert_eq!(w.into_inner(), b"{\"a\":1}\n{\"b\":2}\n{\"c\":3}\n");
        // Past 64 KiB they go out without a flush.
        let mut w = RecordWriter::new(Vec::new());
        let big = "x".repeat(70_000);
        w.append(&big).unwrap();
        assert!(!w.holds());
    }

    #[test]
    fn a_batch_serialized_on_threads_comes_out_in_order() {
        let recs: Vec<serde_json::Value> = (0..2000)
            .map(|i| serde_json::json!({"n": i, "pad": "x".repeat(i % 37)}))
            .collect();
        let mut one = RecordWriter::new(Vec::new());
        one.write_batch(&recs).unwrap();
        for jobs in [1, 2, 5] {
            let mut many = RecordWriter::new(Vec::new());
            many.write_batch_on(&recs, jobs).unwrap();
            assert_eq!(many.into_inner(), one.out, "jobs {jobs}");
        }
        // Lines held before a threaded batch come out before it.
        let mut w = RecordWriter::new(Vec::new());
        w.append(&serde_json::json!({"first": true})).unwrap();
        w.write_batch_on(&recs, 2).unwrap();
        let text = w.into_inner();
        assert!(text.starts_with(b"{\"first\":true}\n{\"n\":0,"));
        assert_eq!(text.len(), one.out.len() + b"{\"first\":true}\n".len());
    }

    #[test]
    fn skips_blank_lines_and_counts_lines() {
        let out = read_all(b"{\"a\":1}\n\n  \r\n{\"b\":2}\r\n");
        assert_eq!(out.len(), 2);
        assert!(out.iter().all(Result::is_ok));
        let mut r = RecordReader::new(&b"\n\n{bad\n"[..]);
        let e = r.next_record().unwrap().unwrap().unwrap_err();
        assert_eq!((e.line, e.kind), (3, ErrorKind::BadJson));
    }

    #[test]
    fn malformed_lines_do_not_stop_the_stream() {
        let out = read_all(b"{\"a\":1}\nnot json\n[1,2]\n\"s\"\n{\"b\":2}");
        assert_eq!(out.len(), 5);
        assert!(out[0].is_ok());
        let e1 = out[1].as_ref().unwrap_err();
        assert_eq!((e1.line, e1.kind), (2, ErrorKind::BadJson));
        let e2 = out[2].as_ref().unwrap_err();
        assert_eq!((e2.line, e2.kind), (3, ErrorKind::BadRecord));
        assert!(e2.message.contains("an array"));
        assert!(out[3].is_err());
        assert_eq!(out[4].as_ref().unwrap().get("b").unwrap(), 2);
    }

    #[test]
    fn invalid_utf8_is_an_error_record_not_a_panic() {
        let out = read_all(b"{\"a\":\"\xff\xfe\"}\n{\"ok\":true}\n");
        assert_eq!(out[0].as_ref().unwrap_err().kind, ErrorKind::BadJson);
        assert!(out[1].is_ok());
    }

    #[test]
    fn over_long_line_is_skipped_whole() {
        let mut input = vec![b'{'; MAX_LINE + 10];
        input.extend_from_slice(b"\n{\"next\":1}\n");
        let out = read_all(&input);
        assert_eq!(out.len(), 2);
        assert_eq!(out[0].as_ref().unwrap_err().kind, ErrorKind::TooLarge);
        assert_eq!(out[1].as_ref().unwrap().get("next").unwrap(), 1);
    }

    #[test]
    fn strict_reading_stops_at_the_first_bad_line() {
        let mut input = b"{\"a\":1}\n\n".to_vec();
        input.extend(vec![b'x'; MAX_LINE + 1]);
        input.extend_from_slice(b"\n{\"b\":2}\n");
        let out: Vec<_> = read_strict(&input[..]).collect();
        assert_eq!(out.len(), 2);
        assert_eq!(out[0].as_ref().unwrap().0, 1);
        let e = out[1].as_ref().unwrap_err();
        assert_eq!((e.line, e.kind), (3, ErrorKind::TooLarge));
    }

    #[test]
    fn writer_writes_compact_lines_in_order() {
        let mut w = RecordWriter::new(Vec::new());
        let r = parse_record(br#"{ "z" : 1, "a" : [1, 2] }"#, 1).unwrap();
        w.write(&r).unwrap();
        w.write(&r).unwrap();
        assert_eq!(
            String::from_utf8(w.into_inner()).unwrap(),
            "{\"z\":1,\"a\":[1,2]}\n{\"z\":1,\"a\":[1,2]}\n"
        );
    }

    struct ClosedPipe;
    impl Write for ClosedPipe {
        fn write(&mut self, _: &[u8]) -> io::Result<usize> {
            Err(io::ErrorKind::BrokenPipe.into())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn closed_pipe_is_reported_as_broken_pipe() {
        let mut w = RecordWriter::new(ClosedPipe);
        let e = w.write(&Record::new()).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::BrokenPipe);
    }
}
