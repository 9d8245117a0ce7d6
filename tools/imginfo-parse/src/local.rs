//! Local images read natively: a regular file at offsets, a stream (pipe,
//! FIFO, `-`, a character device) for real up to its probe bound. The work
//! of one image is a pure function of its record and path, so `--jobs` can
//! run it on worker threads; the runner applies the outcomes in input
//! order, and one thread or many give the same bytes.

use crate::info::{Source as InfoSource, finish};
use crate::remote::{Audit, Options, Outcome, probe_as};
use crate::{CHECK, FACET, NAME, check, oslo, source};
use filter::{ErrorFacet, ErrorKind, Record};
use formats::{FormatError, Source as _};
use serde_json::{Map, Value};
use std::path::Path;
use system::files::{self, Accept};

/// What the work needs: shared, read-only.
pub struct Job<'a> {
    /// What the command line asks of each image.
    pub opts: &'a Options,
    /// The acceptance policy (`--check`).
    pub policy: &'a check::Policy,
}

impl Job<'_> {
    fn outcome(rec: Record, error: Option<ErrorFacet>, unacceptable: bool) -> Outcome {
        Outcome {
            rec,
            delta: Audit::default(),
            error,
            unacceptable,
        }
    }

    /// A record that failed: with --check, the failed verdict (from what
    /// `info` there is, else from the message) and oslo's beside it.
    fn failed(&self, mut rec: Record, e: ErrorFacet, oslo: Option<Value>) -> Outcome {
        if self.opts.check {
            let mut verdict = match rec.get(FACET) {
                Some(info) => check::check(info, self.policy),
                None => check::no_info(&e.message),
            };
            with_oslo(&mut verdict, oslo);
            rec.set(CHECK, verdict);
        }
        Self::outcome(rec, Some(e), false)
    }

    /// Read the image's headers ourselves; `rec` gets `info` (and `probe`
    /// for a stream, `check` with --check), or the error.
    pub fn native(&self, mut rec: Record, path: &Path) -> Outcome {
        let opened = files::open_input(path, Accept::Streams).and_then(source::Opened::from_input);
        let opened = match opened {
            Ok(o) => o,
            Err(err) => {
                let e = ErrorFacet::new(NAME, ErrorKind::from_io(&err), err.to_string());
                return self.failed(rec, e, None);
            }
        };
        let (name, name_bytes) = files::name_fields(path.as_os_str());
        let src = opened.source();
        let probed = probe_as(
            src,
            &name,
            self.opts.format.as_deref(),
            self.opts.expect_format.as_deref(),
        );
        let stream = match &opened {
            source::Opened::Stream(s) => Some(s),
            source::Opened::File(_) => None,
        };
        let not_read = stream.and_then(|s| s.not_read());
        // oslo's verdict on the same bytes, never past what a stream gave
        // (its unread end is `not_read`, not a guess).
        let oslo = self.opts.check.then(|| match &opened {
            source::Opened::File(f) => oslo::verdict(f, None),
            source::Opened::Stream(s) => oslo::verdict(s, (!s.complete()).then(|| s.bytes_read())),
        });
        if let Some(s) = stream {
            let mut probe = Map::new();
            probe.insert("bytes_read".into(), s.bytes_read().into());
            probe.insert("end_of_stream".into(), s.complete().into());
            if let Some(why) = &not_read {
                probe.insert("not_read".into(), why.as_str().into());
            }
            rec.set("probe", Value::Object(probe));
        }
        match probed {
            Ok(p) => {
                let mut info = p.to_info();
                if let Some(b) = name_bytes {
                    info.insert("filename_bytes".into(), b.into());
                }
                match &opened {
                    source::Opened::File(f) => {
                        info.insert("children".into(), file_child(&name, f));
                    }
                    source::Opened::Stream(s) if !s.complete() => {
                        // Sizes read from the length are unknown; those
                        // from a header stand.
                        if matches!(p.probe.format, formats::Format::Raw | formats::Format::Luks) {
                            info.insert("virtual_size".into(), Value::Null);
                        }
                    }
                    source::Opened::Stream(_) => {}
                }
                rec.set(FACET, Value::Object(finish(info, Some(InfoSource::Native))));
                let mut unacceptable = false;
                if self.opts.check
                    && let Some(info) = rec.get(FACET)
                {
                    let mut verdict = check::check(info, self.policy);
                    if let Some(why) = &not_read {
                        check::add_failure(&mut verdict, "not_read", why);
                    }
                    with_oslo(&mut verdict, oslo);
                    unacceptable = verdict["acceptable"] != true;
                    rec.set(CHECK, verdict);
                }
                Self::outcome(rec, None, unacceptable)
            }
            Err(err) => {
                // A probe that wanted bytes the stream did not give failed
                // for want of them, whatever the parser made of it.
                let missed = stream.is_some_and(|s| s.missed().is_some());
                let kind = match &err {
                    _ if missed => ErrorKind::LimitExceeded,
                    FormatError::Io(e) => ErrorKind::from_io(e),
                    _ => ErrorKind::BadImage,
                };
                // Not "truncated": the bytes were not read, not absent.
                let message = match (stream.and_then(|s| s.missed()), &not_read) {
                    (Some(at), _) => format!(
                        "the probe needs bytes at offset {at}, past the {} bytes read from the stream \
(its probe bound): not read, so not judged",
                        stream.map_or(0, |s| s.bytes_read())
                    ),
                    (None, Some(why)) => format!("{err}; {why}"),
                    (None, None) => err.to_string(),
                };
                self.failed(rec, ErrorFacet::new(NAME, kind, message), oslo)
            }
        }
    }
}

/// Add oslo's verdict (`check.oslo`) to a `check` facet: information
/// beside ours, it changes neither `acceptable` nor the exit status.
pub fn with_oslo(verdict: &mut Value, oslo: Option<Value>) {
    if let (Some(m), Some(o)) = (verdict.as_object_mut(), oslo) {
        m.insert("oslo".into(), o);
    }
}

/// The protocol node qemu lists under every image read from a file.
pub fn file_child(path: &str, src: &source::FileBytes) -> Value {
    let mut info = Map::new();
    info.insert("filename".into(), path.into());
    info.insert("format".into(), "file".into());
    info.insert("virtual_size".into(), src.len().into());
    if let Some(a) = src.allocated() {
        info.insert("actual_size".into(), a.into());
    }
    info.insert("encrypted".into(), false.into());
    info.insert("dirty_flag".into(), false.into());
    info.insert(
        "format_specific".into(),
        serde_json::json!({"type": "file", "data": {}}),
    );
    info.insert("children".into(), Value::Array(Vec::new()));
    let mut child = Map::new();
    child.insert("name".into(), "file".into());
    child.insert("info".into(), Value::Object(info));
    Value::Array(vec![Value::Object(child)])
}
