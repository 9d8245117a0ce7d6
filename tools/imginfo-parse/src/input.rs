//! Splitting stdin into documents: the text of JSON values (one-line records, or
//! qemu-img's pretty-printed objects and arrays, possibly concatenated) and
//! blocks of human `qemu-img info` text, one per image.
//!
//! JSON documents are found by bracket depth, so pretty-printed documents
//! need no framing. A document that never closes is reported (with the line
//! it started on) when the next one starts at column 0, as qemu-img and
//! JSON Lines always do, so one bad line never swallows the rest.

use crate::human::Line;
use crate::qjson::{self, Node};
use filter::ErrorKind;
use filter::jsonl::MAX_LINE;
use std::collections::VecDeque;
use std::io::{self, BufRead, Read};

/// Largest JSON document accepted (qemu-img's output for one image is a few
/// KiB; a chain of hundreds stays far below this).
pub const MAX_DOC: usize = 64 << 20;

/// Largest block of human text accepted for one image, counting each line
/// as its bytes plus [`LINE_COST`] (what reading and parsing keep per line).
/// qemu-img's text for one image is a few KiB (a thousand snapshots, about
/// 100 KiB). Without a bound a block grew with the input: 100 MB of short
/// lines held 8 GB.
pub const MAX_HUMAN_BLOCK: usize = 64 << 20;
const LINE_COST: usize = 128;

/// How stdin is interpreted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum InputMode {
    /// Decide from the first document: JSON if it starts with `{` or `[`,
    /// human text otherwise.
    Auto,
    /// JSON: qemu-img's `--output=json`, or JSON Lines records.
    Json,
    /// qemu-img's human text.
    Human,
}

/// One unit of input.
#[derive(Debug)]
pub enum Doc {
    /// A JSON document (its structure found, not yet parsed: see
    /// [`parse_json`]) and the line it started on.
    Json {
        /// The document's text.
        text: Vec<u8>,
        /// First line.
        line: u64,
    },
    /// Input that is not valid JSON where JSON was expected.
    Bad {
        /// The line the problem starts on.
        line: u64,
        /// `bad_json` or `too_large`.
        kind: ErrorKind,
        /// What is wrong.
        message: String,
    },
    /// The lines of one image in human text.
    Human {
        /// The lines, without blank ones.
        lines: Vec<Line>,
        /// Whether a blank line came before it (`--backing-chain` separates
        /// chain members with one).
        blank_before: bool,
    },
}

/// A JSON document that is not valid JSON: the line at fault and what is
/// wrong.
#[derive(Debug)]
pub struct BadJson {
    /// The line (of the input) the problem is on.
    pub line: u64,
    /// What is wrong.
    pub message: String,
}

/// Parse the text of a [`Doc::Json`] that started on `line`.
pub fn parse_json(text: &[u8], line: u64) -> Result<Node<'_>, BadJson> {
    qjson::parse(text).map_err(|e| BadJson {
        line: line + (e.line() as u64).saturating_sub(1),
        message: format!("invalid JSON: {e}"),
    })
}

/// Bytes that matter to [`scan`] outside strings, and inside them.
const STRUCTURE: [bool; 256] = byte_set(b"\"{}[]");
const IN_STRING: [bool; 256] = byte_set(b"\"\\");

const fn byte_set(bytes: &[u8]) -> [bool; 256] {
    let mut t = [false; 256];
    let mut i = 0;
    while i < bytes.len() {
        t[bytes[i] as usize] = true;
        i += 1;
    }
    t
}

/// Scan `text` inside a document (`acc` says where the scan stands): the
/// index of the bracket that closes it, or `None` with `acc` updated.
/// This is every byte of JSON input: the state is kept in locals, and the
/// bytes that change nothing are skipped by table.
fn scan(acc: &mut JsonAcc, text: &[u8]) -> Option<usize> {
    let (mut depth, mut in_str, mut esc) = (acc.depth, acc.in_str, acc.esc);
    let n = text.len();
    let mut i = 0;
    let mut found = None;
    while i < n {
        if in_str {
            if esc {
                esc = false;
                i += 1;
                continue;
            }
            while i < n && !IN_STRING[usize::from(text[i])] {
                i += 1;
            }
            if i == n {
                break;
            }
            if text[i] == b'\\' {
                esc = true;
            } else {
                in_str = false;
            }
            i += 1;
            continue;
        }
        while i < n && !STRUCTURE[usize::from(text[i])] {
            i += 1;
        }
        if i == n {
            break;
        }
        match text[i] {
            b'"' => in_str = true,
            b'{' | b'[' => depth += 1,
            _ => {
                depth -= 1;
                if depth == 0 {
                    found = Some(i);
                    break;
                }
            }
        }
        i += 1;
    }
    (acc.depth, acc.in_str, acc.esc) = (depth, in_str, esc);
    found
}

#[derive(Default)]
struct JsonAcc {
    buf: Vec<u8>,
    start: u64,
    depth: u64,
    in_str: bool,
    esc: bool,
    /// After an oversized document: ignore lines until one opens a new
    /// document at column 0.
    skipping: bool,
}

/// Reads documents from a byte stream.
pub struct DocReader<R> {
    r: R,
    mode: InputMode,
    line: u64,
    buf: Vec<u8>,
    out: VecDeque<Doc>,
    json: JsonAcc,
    block: Vec<Line>,
    /// What `block` costs against [`MAX_HUMAN_BLOCK`].
    block_cost: usize,
    /// After an oversized block: ignore lines until the next `image:`.
    block_skipping: bool,
    block_blank_before: bool,
    saw_blank: bool,
    eof: bool,
}

impl<R: Read> DocReader<io::BufReader<R>> {
    /// Whether the next document may come without waiting for input: one
    /// is ready, or a whole line is buffered. When not, a caller holding
    /// output writes it out first, so a pipe sees every record before the
    /// tool waits.
    pub fn input_pending(&self) -> bool {
        !self.out.is_empty() || memchr::memchr(b'\n', self.r.buffer()).is_some()
    }
}

impl<R: BufRead> DocReader<R> {
    /// Read from `r` in the given mode.
    pub fn new(r: R, mode: InputMode) -> Self {
        DocReader {
            r,
            mode,
            line: 0,
            buf: Vec::new(),
            out: VecDeque::new(),
            json: JsonAcc::default(),
            block: Vec::new(),
            block_cost: 0,
            block_skipping: false,
            block_blank_before: false,
            saw_blank: false,
            eof: false,
        }
    }

    /// The next document, `None` at the end.
    pub fn next_doc(&mut self) -> io::Result<Option<Doc>> {
        loop {
            if let Some(d) = self.out.pop_front() {
                return Ok(Some(d));
            }
            if self.eof {
                return Ok(None);
            }
            self.buf.clear();
            let n = self.read_line()?;
            if n == 0 {
                self.eof = true;
                self.finish();
                continue;
            }
            self.line += 1;
            if self.buf.last() == Some(&b'\n') {
                self.buf.pop();
                if self.buf.last() == Some(&b'\r') {
                    self.buf.pop();
                }
            } else if n == MAX_LINE {
                self.skip_rest_of_line()?;
                self.flush_block();
                self.json = JsonAcc::default();
                self.out.push_back(Doc::Bad {
                    line: self.line,
                    kind: ErrorKind::TooLarge,
                    message: format!("line longer than {MAX_LINE} bytes"),
                });
                continue;
            }
            let text = std::mem::take(&mut self.buf);
            self.handle_line(&text);
            self.buf = text;
        }
    }

    /// The next line into `buf`, with its newline, at most [`MAX_LINE`]
    /// bytes: `read_until` of a `take`, but with the memchr crate's
    /// search (this is every byte of input).
    fn read_line(&mut self) -> io::Result<usize> {
        let mut n = 0;
        loop {
            let avail = match self.r.fill_buf() {
                Ok(a) => a,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            let avail = &avail[..avail.len().min(MAX_LINE - n)];
            if avail.is_empty() {
                return Ok(n);
            }
            let (used, done) = match memchr::memchr(b'\n', avail) {
                Some(j) => (j + 1, true),
                None => (avail.len(), false),
            };
            self.buf.extend_from_slice(&avail[..used]);
            self.r.consume(used);
            n += used;
            if done || n == MAX_LINE {
                return Ok(n);
            }
        }
    }

    fn skip_rest_of_line(&mut self) -> io::Result<()> {
        loop {
            let (done, used) = {
                let avail = self.r.fill_buf()?;
                match avail.iter().position(|&b| b == b'\n') {
                    _ if avail.is_empty() => (true, 0),
                    Some(i) => (true, i + 1),
                    None => (false, avail.len()),
                }
            };
            self.r.consume(used);
            if done {
                return Ok(());
            }
        }
    }

    fn handle_line(&mut self, text: &[u8]) {
        let no = self.line;
        if !self.json.buf.is_empty() || self.json.skipping {
            self.feed_json(text, no);
            return;
        }
        let trimmed = text.trim_ascii_start();
        if trimmed.is_empty() {
            self.flush_block();
            self.saw_blank = true;
            return;
        }
        let opens_json = matches!(trimmed[0], b'{' | b'[');
        if self.mode != InputMode::Human && opens_json {
            self.flush_block();
            self.mode = InputMode::Json;
            self.feed_json(text, no);
            return;
        }
        if self.mode == InputMode::Json {
            self.out.push_back(Doc::Bad {
                line: no,
                kind: ErrorKind::BadJson,
                message: "not JSON (expected `{` or `[`)".into(),
            });
            return;
        }
        self.mode = InputMode::Human;
        if self.block_skipping {
            if !text.starts_with(b"image:") {
                return;
            }
            self.block_skipping = false;
        }
        if text.starts_with(b"image:") && !self.block.is_empty() {
            self.flush_block();
        }
        if self.block.is_empty() {
            self.block_blank_before = self.saw_blank;
            self.saw_blank = false;
        }
        self.block_cost = self.block_cost.saturating_add(text.len() + LINE_COST);
        if self.block_cost > MAX_HUMAN_BLOCK {
            let start = self.block.first().map_or(no, |l| l.no);
            self.block = Vec::new();
            self.block_cost = 0;
            self.block_skipping = true;
            self.out.push_back(Doc::Bad {
                line: start,
                kind: ErrorKind::TooLarge,
                message: format!(
                    "qemu-img text for one image larger than {MAX_HUMAN_BLOCK} bytes (or lines)"
                ),
            });
            return;
        }
        self.block.push(Line {
            no,
            text: text.to_vec(),
        });
    }

    fn flush_block(&mut self) {
        self.block_cost = 0;
        if !self.block.is_empty() {
            self.out.push_back(Doc::Human {
                lines: std::mem::take(&mut self.block),
                blank_before: self.block_blank_before,
            });
        }
    }

    fn feed_json(&mut self, text: &[u8], no: u64) {
        let col0_open = matches!(text.first(), Some(b'{' | b'['));
        if self.json.skipping {
            if !col0_open {
                return;
            }
            self.json.skipping = false;
        }
        if !self.json.buf.is_empty() && col0_open && !self.json.in_str {
            self.out.push_back(Doc::Bad {
                line: self.json.start,
                kind: ErrorKind::BadJson,
                message: "JSON document not closed before the next one starts".into(),
            });
            self.json = JsonAcc::default();
        }
        // Scan the line for the document structure, but copy it into the
        // document buffer a slice at a time.
        let mut i = 0;
        let mut from = 0; // start of the part of `text` not yet copied
        while i < text.len() {
            if self.json.buf.is_empty() {
                let b = text[i];
                if b.is_ascii_whitespace() {
                    i += 1;
                    continue;
                }
                if b != b'{' && b != b'[' {
                    self.out.push_back(Doc::Bad {
                        line: no,
                        kind: ErrorKind::BadJson,
                        message: "unexpected text after a JSON document".into(),
                    });
                    return;
                }
                let acc = &mut self.json;
                acc.start = no;
                acc.buf.push(b);
                acc.depth = 1;
                i += 1;
                from = i;
                continue;
            }
            match scan(&mut self.json, &text[i..]) {
                Some(end) => {
                    i += end;
                    self.json.buf.extend_from_slice(&text[from..=i]);
                    self.complete_json();
                    i += 1;
                    from = i;
                }
                None => break,
            }
        }
        if self.json.buf.is_empty() {
            return;
        }
        self.json.buf.extend_from_slice(&text[from..]);
        if self.json.buf.len() > MAX_DOC {
            self.out.push_back(Doc::Bad {
                line: self.json.start,
                kind: ErrorKind::TooLarge,
                message: format!("JSON document larger than {MAX_DOC} bytes"),
            });
            self.json = JsonAcc {
                skipping: true,
                ..JsonAcc::default()
            };
        } else if self.json.in_str {
            self.out.push_back(Doc::Bad {
                line: self.json.start,
                kind: ErrorKind::BadJson,
                message: "line break inside a JSON string".into(),
            });
            self.json = JsonAcc::default();
        } else {
            self.json.buf.push(b'\n');
        }
    }

    fn complete_json(&mut self) {
        let acc = std::mem::take(&mut self.json);
        self.out.push_back(Doc::Json {
            text: acc.buf,
            line: acc.start,
        });
    }

    fn finish(&mut self) {
        self.flush_block();
        if !self.json.buf.is_empty() {
            self.out.push_back(Doc::Bad {
                line: self.json.start,
                kind: ErrorKind::BadJson,
                message: "input ends inside a JSON document".into(),
            });
            self.json = JsonAcc::default();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    fn docs(input: &[u8], mode: InputMode) -> Vec<Doc> {
        let mut r = DocReader::new(input, mode);
        let mut out = Vec::new();
        while let Some(d) = r.next_doc().unwrap() {
            out.push(d);
        }
        out
    }

    #[test]
    fn concatenated_pretty_documents() {
        let d = docs(
            b"{\n    \"a\": \"}{\",\n    \"b\": [\n    ]\n}\n[\n    {}\n]\n{\"c\":1} {\"d\":2}\n",
            InputMode::Auto,
        );
        assert_eq!(d.len(), 4, "{d:?}");
        let value = |i: usize, want: u64| match &d[i] {
            Doc::Json { line, text } if *line == want => {
                parse_json(text, *line).unwrap().into_value()
            }
            other => panic!("{other:?}"),
        };
        assert_eq!(value(0, 1)["a"], "}{");
        assert!(value(1, 6).is_array());
        assert_eq!(value(3, 9)["d"], 2);
    }

    #[test]
    fn escapes_and_brackets_in_strings_through_a_small_buffer() {
        // A 7-byte read buffer: lines and documents cross every boundary.
        let input: &[u8] = b"{\"a\": \"x\\\"}{[\", \"b\": \"\\\\\",\n  \"c\": [1, {\"d\": \"]\"}]}\n[{\"e\": \"\\u005d\"}]\n";
        let mut r = DocReader::new(io::BufReader::with_capacity(7, input), InputMode::Auto);
        let mut values = Vec::new();
        while let Some(d) = r.next_doc().unwrap() {
            let Doc::Json { text, line } = d else {
                panic!("{d:?}")
            };
            values.push((line, parse_json(&text, line).unwrap().into_value()));
        }
        assert_eq!(values.len(), 2, "{values:?}");
        assert_eq!(values[0].1["a"], "x\"}{[");
        assert_eq!(values[0].1["b"], "\\");
        assert_eq!(values[0].1["c"][1]["d"], "]");
        assert_eq!((values[1].0, &values[1].1[0]["e"]), (3, &Value::from("]")));
    }

    #[test]
    fn an_overlong_line_is_refused_and_the_next_read() {
        let mut input = b"{\"a\": \"".to_vec();
        input.resize(MAX_LINE + 100, b'x');
        input.extend_from_slice(b"\"}\n{\"b\": 1}\n");
        let d = docs(&input, InputMode::Auto);
        assert_eq!(d.len(), 2);
        assert!(matches!(
            d[0],
            Doc::Bad {
                line: 1,
                kind: ErrorKind::TooLarge,
                ..
            }
        ));
        assert!(matches!(d[1], Doc::Json { line: 2, .. }));
    }

    #[test]
    fn unclosed_document_does_not_swallow_the_next() {
        let d = docs(
            b"{\"a\": 1\n{\"b\": 2}\n{\"c\": \"x\n{\"d\": 4}\n",
            InputMode::Auto,
        );
        let kinds: Vec<String> = d
            .iter()
            .map(|d| match d {
                Doc::Json { line, .. } => format!("ok@{line}"),
                Doc::Bad { line, .. } => format!("bad@{line}"),
                Doc::Human { .. } => "human".into(),
            })
            .collect();
        assert_eq!(kinds, ["bad@1", "ok@2", "bad@3", "ok@4"]);
    }

    #[test]
    fn json_mode_rejects_text_lines() {
        let d = docs(b"{\"a\":1}\nnot json\n", InputMode::Auto);
        assert!(matches!(
            d[1],
            Doc::Bad {
                line: 2,
                kind: ErrorKind::BadJson,
                ..
            }
        ));
        let d = docs(b"{\"a\":1}}\n", InputMode::Auto);
        assert!(matches!(d[1], Doc::Bad { line: 1, .. }));
        let d = docs(b"{\"a\":", InputMode::Auto);
        assert!(matches!(d[0], Doc::Bad { line: 1, .. }));
        // Parsed later: the line at fault within a document.
        let d = docs(b"{\n\"a\": 1,\n\"b\": x\n}\n", InputMode::Auto);
        let Doc::Json { text, line } = &d[0] else {
            panic!("{d:?}")
        };
        assert_eq!(parse_json(text, *line).unwrap_err().line, 3);
    }

    #[test]
    fn human_blocks_split_on_image_and_blank_lines() {
        let d = docs(
            b"image: a\nfile format: raw\nimage: b\nfile format: qcow2\n\nimage: c\nfile format: raw\n",
            InputMode::Auto,
        );
        let shape: Vec<(usize, bool)> = d
            .iter()
            .map(|d| match d {
                Doc::Human {
                    lines,
                    blank_before,
                } => (lines.len(), *blank_before),
                _ => (0, false),
            })
            .collect();
        assert_eq!(shape, [(2, false), (2, false), (2, true)]);
    }

    #[test]
    fn human_blocks_are_bounded() {
        // 600 000 one-byte lines: over the bound by their count; then the
        // next image is read again.
        let mut input = b"image: a\nfile format: raw\n".to_vec();
        input.extend(b"x\n".repeat(600_000));
        input.extend_from_slice(b"image: b\nfile format: raw\n");
        let d = docs(&input, InputMode::Auto);
        assert_eq!(d.len(), 2, "{:?}", &d[..d.len().min(3)]);
        assert!(matches!(
            d[0],
            Doc::Bad {
                line: 1,
                kind: ErrorKind::TooLarge,
                ..
            }
        ));
        let Doc::Human { lines, .. } = &d[1] else {
            panic!("{:?}", d[1])
        };
        assert_eq!(lines[0].text, b"image: b");
        assert_eq!(lines[0].no, 600_003);
    }

    #[test]
    fn crlf_is_accepted() {
        let d = docs(b"image: a\r\nfile format: raw\r\n", InputMode::Auto);
        let Doc::Human { lines, .. } = &d[0] else {
            panic!()
        };
        assert_eq!(lines[0].text, b"image: a");
    }

    #[test]
    fn forced_human_reads_brackets_as_text() {
        let d = docs(b"[0]: x\n", InputMode::Human);
        assert!(matches!(d[0], Doc::Human { .. }));
    }
}
