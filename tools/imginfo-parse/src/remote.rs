//! Images over HTTP: `--image-url`, and `--from-glance` (each Glance record's
//! data through `/v2/images/{id}/file`), probed by bounded Range requests
//! (openstack::http_source). The work of one image is a pure function of the
//! record, so `--jobs` can run it on worker threads; the runner applies
//! the outcomes in input order.

use crate::info::{Source, finish};
use crate::input::Doc;
use crate::{CHECK, FACET, NAME, check};
use filter::{ErrorFacet, ErrorKind, Record};
use formats::{self, FormatError};
use openstack::glance::Glance;
use openstack::http_source::{Budget, GlanceObject, HttpSource, OpenError};
use serde_json::Value;

/// What a `--from-glance` run saw, for its summary record.
#[derive(Debug, Default, serde::Serialize)]
pub struct Audit {
    images: u64,
    probed: u64,
    acceptable: u64,
    unacceptable: u64,
    not_probed: u64,
    errors: u64,
    requests: u64,
    bytes_read: u64,
}

impl Audit {
    /// Add another's counts.
    pub fn add(&mut self, o: &Audit) {
        self.images += o.images;
        self.probed += o.probed;
        self.acceptable += o.acceptable;
        self.unacceptable += o.unacceptable;
        self.not_probed += o.not_probed;
        self.errors += o.errors;
        self.requests += o.requests;
        self.bytes_read += o.bytes_read;
    }
}

/// What probing one image came to.
pub struct Outcome {
    /// The record, with its facets.
    pub rec: Record,
    /// Its counts.
    pub delta: Audit,
    /// The error to attach (the record then fails).
    pub error: Option<ErrorFacet>,
    /// Whether the verdict is not acceptable (exit 1).
    pub unacceptable: bool,
}

/// One input of `--from-glance`.
pub enum Item {
    /// A Glance record, probed.
    Probed(Box<Outcome>),
    /// Anything else, for the runner as usual.
    Other(Doc),
}

/// A native probe as imginfo-parse reports it: the probe, and what a
/// claim made of it.
#[derive(Debug, Clone)]
pub struct Probed {
    /// What the bytes were read as.
    pub probe: formats::Probe,
    /// With a claim that changed how the bytes were read: what qemu-img
    /// would pick by probing.
    pub detected_format: Option<formats::Format>,
    /// The format forced (`-f`), if any.
    pub claimed_format: Option<String>,
}

impl Probed {
    /// The record's `info` (before [`finish`] orders it).
    pub fn to_info(&self) -> serde_json::Map<String, Value> {
        let mut info = self.probe.to_info();
        if let Some(d) = self.detected_format {
            info.insert("detected_format".into(), d.as_str().into());
        }
        if let Some(f) = &self.claimed_format {
            info.insert("claimed_format".into(), f.as_str().into());
        }
        info
    }
}

/// The native probe of `src`. Detection always runs: a claim picks how the
/// bytes are read, never what they are found to be. Read as `forced`
/// (`-f`, qemu-img's `-f`: the info gains `claimed_format`), else as
/// `claimed` (the expected format) where the bytes also match it (as
/// Cinder passes `-f`: a fixed VHD claimed as vhd is a VHD), else as the
/// bytes say. Either way `detected_formats` is what detection found, and
/// `detected_format` what qemu-img would pick by probing, so `--check`
/// sees bytes of another format behind any claim.
pub fn probe_as(
    src: &dyn formats::Source,
    name: &str,
    forced: Option<&str>,
    claimed: Option<&str>,
) -> Result<Probed, FormatError> {
    let auto = formats::probe(src, name, None)?;
    let read_as = match (forced, claimed) {
        (Some(f), _) => Some(f.to_owned()),
        (None, Some(claimed)) => {
            let want = check::qemu_format_name(claimed);
            let matches = auto.detected.iter().any(|k| *k == want.as_str());
            (matches && auto.format != want.as_str()).then_some(want)
        }
        (None, None) => None,
    };
    let Some(read_as) = read_as else {
        return Ok(Probed {
            probe: auto,
            detected_format: None,
            claimed_format: None,
        });
    };
    let mut p = formats::probe(src, name, Some(&read_as))?;
    p.detected = auto.detected;
    // The layouts found beside it (a forced read runs one parser only):
    // --check needs them to tell an ISO's boot record from a polyglot.
    if p.iso.is_none() {
        p.iso = auto.iso;
    }
    if p.partition_table.is_none() {
        p.partition_table = auto.partition_table;
    }
    Ok(Probed {
        probe: p,
        detected_format: Some(auto.format),
        claimed_format: forced.map(str::to_owned),
    })
}

/// What a remote probe is asked, from the command line (built once, in
/// lib.rs).
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Judge the image (`--check`).
    pub check: bool,
    /// The format the image is claimed to be (`--expect-format`).
    pub expect_format: Option<String>,
    /// The format to read it as (`-f`).
    pub format: Option<String>,
}

/// What the work needs: shared, read-only.
pub struct Job<'a> {
    pub opts: &'a Options,
    pub policy: &'a check::Policy,
    pub glance: Option<&'a Glance>,
}

impl Job<'_> {
    fn error(&self, kind: ErrorKind, message: impl Into<String>) -> ErrorFacet {
        ErrorFacet::new(NAME, kind, message)
    }

    fn outcome(&self, rec: Record, delta: Audit) -> Outcome {
        Outcome {
            rec,
            delta,
            error: None,
            unacceptable: false,
        }
    }

    /// A document of stdin: a Glance record is probed, anything else goes
    /// back to the runner.
    pub fn doc(&self, doc: Doc) -> Item {
        if let Doc::Json { text, line } = &doc
            && let Ok(crate::qjson::Node::Obj(m)) = crate::input::parse_json(text, *line)
            && m.iter().any(|(k, _)| k == "image")
            && !m.iter().any(|(k, _)| k == filter::record::ERROR)
        {
            let m = crate::qjson::into_map(m);
            return Item::Probed(Box::new(self.glance_record(Record::from_map(m))));
        }
        Item::Other(doc)
    }

    /// A glance-dump record: its data probed through Glance, or said why
    /// not.
    pub fn glance_record(&self, rec: Record) -> Outcome {
        let img = rec.get("image").cloned().unwrap_or_default();
        let id = img.get("id").and_then(Value::as_str).unwrap_or("");
        let mut delta = Audit {
            images: 1,
            ..Audit::default()
        };
        let Some(g) = self.glance else {
            return self.outcome(rec, delta);
        };
        if id.is_empty() || !id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
            delta.errors += 1;
            let e = self.error(
                ErrorKind::BadRecord,
                "record has no `image` with a plain `id`",
            );
            let mut o = self.outcome(rec, delta);
            o.error = Some(e);
            return o;
        }
        let status = img.get("status").and_then(Value::as_str).unwrap_or("?");
        if !matches!(status, "active" | "deactivated") {
            // No bytes, nothing anyone could be handed: acceptable, and
            // said why it was not read.
            return self.not_probed(rec, delta, &format!("no data: the image is {status}"), true);
        }
        let path = format!("/v2/images/{id}/file");
        let url = g.url(&path);
        let mut o = self.http(g, &path, &url, rec);
        o.delta.add(&delta);
        o
    }

    /// An image whose headers were not read, and why. Without data
    /// (`empty`) there is nothing to judge and no byte to hand anyone:
    /// acceptable, with the reason. Otherwise (a store that ignores Range)
    /// nothing was judged, so under --check it fails closed: `acceptable:
    /// false` with a `not_probed` failure, exit 1 ("the check answered
    /// no"), so `--check ... && upload` never uploads it.
    fn not_probed(&self, mut rec: Record, mut delta: Audit, why: &str, empty: bool) -> Outcome {
        delta.not_probed += 1;
        rec.set("probe", serde_json::json!({"not_probed": why}));
        let mut unacceptable = false;
        if self.opts.check {
            let c = if empty {
                serde_json::json!({"acceptable": true, "failures": [], "not_probed": why})
            } else {
                unacceptable = true;
                serde_json::json!({
                    "acceptable": false,
                    "failures": [{"check": "not_probed", "reason": why}],
                    "not_probed": why,
                })
            };
            rec.set(CHECK, c);
        }
        let mut o = self.outcome(rec, delta);
        o.unacceptable = unacceptable;
        o
    }

    /// An image over HTTP (`--image-url`, or a Glance record's data): probed by
    /// Range requests; `rec` gets `url`, `info`, `probe` and (with
    /// --check) the verdict, judged against the claimed format (the
    /// record's disk_format unless --expect-format).
    pub fn http(&self, g: &Glance, path: &str, url: &str, mut rec: Record) -> Outcome {
        let claimed = self.opts.expect_format.clone().or_else(|| {
            rec.get("image")
                .and_then(|i| i.get("disk_format"))
                .and_then(Value::as_str)
                .filter(|f| !["ami", "aki", "ari"].contains(f))
                .map(str::to_owned)
        });
        rec.set("url", url);
        let mut delta = Audit::default();
        // Glance's `size` picks the first range (a small image comes
        // whole); the server's answer decides what is read.
        let size = rec
            .get("image")
            .and_then(|i| i.get("size"))
            .and_then(Value::as_u64);
        // The format expected (forced, else claimed) picks how much of the
        // head comes first: VHDX's fixed structures in one request.
        let head = self
            .opts
            .format
            .as_deref()
            .map(str::to_owned)
            .or_else(|| claimed.as_deref().map(check::qemu_format_name))
            .and_then(|f| formats::Format::from_name(&f))
            .map(formats::Format::fixed_head);
        let object = GlanceObject { glance: g, path };
        let src = match HttpSource::open(&object, Budget::default(), size, head) {
            Ok(s) => s,
            Err(OpenError::NoRange) => {
                return self.not_probed(
                    rec,
                    delta,
                    "the store does not honour Range requests",
                    false,
                );
            }
            Err(OpenError::Http(e)) => {
                delta.errors += 1;
                let mut o = self.outcome(rec, delta);
                o.error = Some(filter::ErrorFacet::classified(NAME, &e));
                return o;
            }
        };
        let probed = probe_as(&src, url, self.opts.format.as_deref(), claimed.as_deref());
        delta.requests += u64::from(src.requests());
        delta.bytes_read += src.bytes();
        rec.set(
            "probe",
            serde_json::json!({"requests": src.requests(), "bytes_read": src.bytes()}),
        );
        match probed {
            Ok(p) => {
                delta.probed += 1;
                rec.set(
                    FACET,
                    Value::Object(finish(p.to_info(), Some(Source::Native))),
                );
                let mut unacceptable = false;
                if self.opts.check
                    && let Some(info) = rec.get(FACET)
                {
                    let policy = check::Policy {
                        expect_format: claimed,
                        ..self.policy.clone()
                    };
                    let verdict = check::check(info, &policy);
                    if verdict["acceptable"] == true {
                        delta.acceptable += 1;
                    } else {
                        delta.unacceptable += 1;
                        unacceptable = true;
                    }
                    rec.set(CHECK, verdict);
                }
                let mut o = self.outcome(rec, delta);
                o.unacceptable = unacceptable;
                o
            }
            Err(err) => {
                delta.errors += 1;
                let kind = match &err {
                    FormatError::Io(e) => ErrorKind::from_io(e),
                    _ => ErrorKind::BadImage,
                };
                let mut o = self.outcome(rec, delta);
                o.error = Some(self.error(kind, format!("{url}: {err}")));
                o
            }
        }
    }
}
