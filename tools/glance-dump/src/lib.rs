//! glance-dump: every image of a Glance (Images API v2) as records, and
//! with `--dir` the replicator's dump layout (`DIR/<id>` metadata,
//! `DIR/<id>.img` data), streamed, hashed while streaming, verified,
//! written as `.part` then renamed, resumed with `Range`.

use anyhow::Context;
use clap::Parser;
use filter::cli::{Ctx, SharedArgs, Tool};
use filter::{ErrorKind, Record};
use openstack::glance::{Glance, HttpError, UnsafeName, safe_file_name};
use serde_json::{Map, Value};
use std::collections::HashSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use system::hash::{Algorithm, Expected, Mismatch, MultiHasher};

/// The facet of the raw image.
pub const IMAGE: &str = "image";
/// The facet this tool owns.
pub const FACET: &str = "dump";

const AFTER_HELP: &str = "\
Records: {\"image\": <the v2 image object, unchanged>, \"dump\": {...}}, one
per image as it arrives (all visibilities, hidden images too, sorted by
created_at then id). With --dir the top-level \"path\" is the data file, so
`checksum-tee --verify` can re-check it; dump holds action (listed,
metadata_written, downloaded, resumed, present_verified), meta_path,
data_path, bytes, os_hash_algo, os_hash_value (md5 where Glance has no
multihash, or with --md5), verified, and for a
shared image its members ([{member_id, status}]).

The replicator's `size`: glance-dump --url URL --summary | tail -n 1
  or: glance-dump --url URL | jq -s '[.[] | select(.image.status == \"active\") | .image.size] | {count: length, bytes: add}'

A listing whose next link, or its marker, leads back to a page already
read ends with an error record (kind server_error, \"pagination loop: ...\"
naming the link); the records before it stay. --filter values are sent
percent-encoded, one query parameter each. With --dir, an image whose id
cannot be a file name (empty, . or .., a /, a control character such as a
newline or NUL, over 200 bytes) is an error record of kind bad_record, and
no file is written for it.

Exit status: 0 fine, 2 an error (the server has no v2 API, a request
failed, the listing loops, a download did not verify, an id that cannot
be a file name), 128+N stopped by signal N (130 SIGINT, 143 SIGTERM).
Fatal errors (bad usage, a --dir that cannot be created) are error records
too.";

/// Command-line arguments.
#[derive(Debug, Parser)]
#[command(
    about = "Every Glance image over the v2 API as records, and a verified dump",
    long_about = "List every image of a Glance (Images API v2: all visibilities, hidden images too, \
following next links) as JSON Lines, one record per image as it arrives; with --dir also write \
the glance-replicator dump layout, data streamed, hashed and verified.",
    after_help = "Run with --help for the records and examples.",
    after_long_help = AFTER_HELP
)]
pub struct Cli {
    #[command(flatten)]
    pub endpoint: openstack::args::EndpointArgs,
    /// Also write DIR/<id> (metadata), DIR/<id>.img (data of active and
    /// deactivated images) and DIR/<id>.members (of shared images)
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
    /// Metadata only: with --dir no data files (without --dir, what the
    /// listing gives anyway; the replicator's flag, for its pipelines)
    #[arg(long)]
    pub metaonly: bool,
    /// With --dir, also compute the MD5 (Glance's old checksum) of images
    /// that have a multihash (which alone is checked otherwise: MD5 costs
    /// about as much CPU again)
    #[arg(long, requires = "dir")]
    pub md5: bool,
    /// Do not fetch the members of shared images (one request less per
    /// shared image, which is every image by Glance's default; for audits,
    /// not for replication)
    #[arg(long)]
    pub no_members: bool,
    /// End with a summary record: count and bytes of active images
    #[arg(long)]
    pub summary: bool,
    /// Stop after N images
    // One name for a count limit in every tool (was --limit, which
    // Glance's API uses for the page size).
    #[arg(long = "max-count", alias = "limit", value_name = "N")]
    pub limit: Option<u64>,
    /// Images per list request (at most 1000)
    #[arg(long, value_name = "N", default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..=1000))]
    pub page_size: u64,
    /// A server-side list filter KEY=VALUE, sent percent-encoded as one
    /// query parameter, whatever the value holds (repeatable: name, status,
    /// owner, tag, size_min, size_max, ...; not limit, marker, sort or
    /// os_hidden, which glance-dump sets)
    #[arg(long = "filter", value_name = "KEY=VALUE", value_parser = parse_filter)]
    pub filters: Vec<(String, String)>,

    #[command(flatten)]
    pub shared: SharedArgs,
}

impl Tool for Cli {
    const NAME: &'static str = "glance-dump";
    const MAN_EXTRA: &'static str = include_str!("../doc/glance-dump.extra.roff");

    fn shared(&self) -> &SharedArgs {
        &self.shared
    }

    fn run(self, ctx: &mut Ctx) -> anyhow::Result<()> {
        let glance = match self.endpoint.connect()? {
            Ok(g) => g,
            Err(u) => return Ok(ctx.fail_on(&u.endpoint, &u.error)?),
        };
        system::signal::install();
        if let Some(d) = &self.dir {
            // The io::Error stays in the chain: it gives the fatal record's kind.
            std::fs::create_dir_all(d).with_context(|| format!("--dir {}", d.display()))?;
            // A run killed mid-write left temporaries: gone now (a killed
            // download's .part stays, to be resumed).
            system::atomic::remove_stale_temps_in(d);
        }
        let mut seen = 0u64;
        let (mut count, mut bytes) = (0u64, 0u64);
        'passes: for hidden in [false, true] {
            let first = self.first_page(hidden);
            let mut pages = Pages::new(&first);
            let mut next = Some(first);
            while let Some(path) = next.take() {
                let page = match glance.get_json(&path, &[200]) {
                    Ok(p) => p,
                    Err(e) => {
                        ctx.fail_on(glance.base(), &e)?;
                        break 'passes;
                    }
                };
                for img in page
                    .get("images")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                {
                    if self.limit.is_some_and(|l| seen >= l) {
                        break 'passes;
                    }
                    seen += 1;
                    if img.get("status").and_then(Value::as_str) == Some("active") {
                        count += 1;
                        bytes += img.get("size").and_then(Value::as_u64).unwrap_or(0);
                    }
                    self.emit_image(ctx, &glance, img)?;
                    if let Some(sig) = system::signal::pending() {
                        return Err(filter::cli::Interrupted(sig).into());
                    }
                }
                next = page.get("next").and_then(Value::as_str).map(str::to_owned);
                // A server that sends us back where we were would be
                // listed for ever: an error, after what it gave once.
                if let Some(n) = &next
                    && let Err(why) = pages.follow(n)
                {
                    let err = ctx.error(ErrorKind::ServerError, why);
                    ctx.fail(Record::from_path(glance.base()), err)?;
                    break 'passes;
                }
            }
        }
        if self.summary {
            let mut rec = Record::new();
            rec.set(
                "summary",
                serde_json::json!({"images": seen, "active_images": count, "active_bytes": bytes}),
            );
            ctx.emit(&rec)?;
        }
        Ok(())
    }
}

impl Cli {
    /// The first list request of a pass (hidden images need their own).
    fn first_page(&self, hidden: bool) -> String {
        let mut q = vec![
            format!("limit={}", self.page_size),
            "sort=created_at:asc,id:asc".to_owned(),
            format!("os_hidden={hidden}"),
        ];
        if !self.filters.iter().any(|(k, _)| k == "visibility") {
            q.push("visibility=all".to_owned());
        }
        q.extend(
            self.filters
                .iter()
                .map(|(k, v)| format!("{}={}", percent_encode(k), percent_encode(v))),
        );
        format!("/v2/images?{}", q.join("&"))
    }

    fn emit_image(&self, ctx: &mut Ctx, glance: &Glance, img: &Value) -> anyhow::Result<()> {
        let id = img
            .get("id")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned();
        let mut rec = Record::new();
        rec.set(IMAGE, img.clone());
        let members = match members_of(glance, img, &id, self.no_members) {
            Ok(m) => m,
            Err(e) => {
                let err = e.facet(ctx);
                return Ok(ctx.fail(rec, err)?);
            }
        };
        let Some(dir) = &self.dir else {
            let mut facet = Map::new();
            facet.insert("action".into(), "listed".into());
            if let Some(m) = members {
                facet.insert("members".into(), m);
            }
            rec.set(FACET, Value::Object(facet));
            return Ok(ctx.emit(&rec)?);
        };
        match dump_one(
            dir,
            glance,
            img,
            &id,
            self.metaonly,
            self.md5,
            !self.shared.quiet,
        )
        .and_then(|r| write_members(dir, &id, members, r))
        {
            Ok((facet, data)) => {
                if let Some(p) = data {
                    rec = prepend_path(rec, &p);
                }
                rec.set(FACET, Value::Object(facet));
                ctx.emit(&rec)?;
            }
            Err(e) => {
                let err = e.facet(ctx);
                ctx.fail(rec, err)?;
            }
        }
        Ok(())
    }
}

/// The list parameters glance-dump sets itself: a filter naming one would
/// send it twice and change the paging (or skip the hidden pass).
const OWN_PARAMS: &[&str] = &[
    "limit",
    "marker",
    "sort",
    "sort_key",
    "sort_dir",
    "os_hidden",
];

/// `--filter KEY=VALUE`: split at the first `=` (the value may hold more);
/// the key must not be empty, nor one of the paging parameters.
pub fn parse_filter(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, _)) if OWN_PARAMS.contains(&k) => Err(format!(
            "{k:?} is set by glance-dump itself (--page-size; every listing has \
             both passes, hidden images and the others)"
        )),
        Some((k, v)) if !k.is_empty() => Ok((k.to_owned(), v.to_owned())),
        _ => Err(format!("{s:?}: expected KEY=VALUE")),
    }
}

/// `s` as one query parameter's key or value, or one path segment: every
/// byte but RFC 3986's unreserved ones as `%XX`, so `&`, `=`, `#`, `+`,
/// `/`, spaces and non-ASCII arrive verbatim and can inject nothing.
pub fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The pages of one listing pass: every link followed and every marker,
/// so a `next` that leads back is caught instead of followed for ever.
pub struct Pages {
    links: HashSet<String>,
    markers: HashSet<String>,
}

impl Pages {
    /// A pass that starts at `first`.
    pub fn new(first: &str) -> Pages {
        let mut p = Pages {
            links: HashSet::new(),
            markers: HashSet::new(),
        };
        p.links.insert(first.to_owned());
        p
    }

    /// Take `next` as the page to fetch, or say why not: the link, or
    /// its marker, came before (Glance's markers only move forward).
    pub fn follow(&mut self, next: &str) -> Result<(), String> {
        if !self.links.insert(next.to_owned()) {
            return Err(format!(
                "pagination loop: the next link {next} was followed before"
            ));
        }
        if let Some(m) = marker_of(next)
            && !self.markers.insert(m.to_owned())
        {
            return Err(format!(
                "pagination loop: the next link {next} repeats the marker {m}"
            ));
        }
        Ok(())
    }
}

/// The raw `marker` parameter of a link's query.
fn marker_of(link: &str) -> Option<&str> {
    let (_, q) = link.split_once('?')?;
    let q = q.split('#').next().unwrap_or("");
    q.split('&').find_map(|kv| kv.strip_prefix("marker="))
}

/// Whether Glance holds data for the image: active, or deactivated (which
/// an admin can still download).
pub fn has_data(img: &Value) -> bool {
    matches!(
        img.get("status").and_then(Value::as_str),
        Some("active" | "deactivated")
    )
}

/// The members of a shared image, as `[{member_id, status}]`.
fn members_of(
    glance: &Glance,
    img: &Value,
    id: &str,
    skip: bool,
) -> Result<Option<Value>, DumpError> {
    if skip || img.get("visibility").and_then(Value::as_str) != Some("shared") {
        return Ok(None);
    }
    let id = percent_encode(safe_file_name(id)?);
    let v = glance.get_json(&format!("/v2/images/{id}/members"), &[200])?;
    let list: Vec<Value> = v
        .get("members")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|m| serde_json::json!({"member_id": m.get("member_id"), "status": m.get("status")}))
        .collect();
    Ok(Some(Value::Array(list)))
}

/// With `--dir`, the members of a shared image go to `DIR/<id>.members`
/// (one JSON line; not a UUID name, so the old replicator skips it), and
/// into the facet.
fn write_members(
    dir: &Path,
    id: &str,
    members: Option<Value>,
    (mut facet, data): (Map<String, Value>, Option<PathBuf>),
) -> Result<(Map<String, Value>, Option<PathBuf>), DumpError> {
    let Some(m) = members else {
        return Ok((facet, data));
    };
    let path = dir.join(format!("{id}.members"));
    let io = |source| DumpError::Io {
        path: path.clone(),
        source,
    };
    let mut f = system::atomic::AtomicFile::create(&path, true).map_err(io)?;
    let mut line = m.to_string().into_bytes();
    line.push(b'\n');
    f.file().write_all(&line).map_err(io)?;
    f.commit().map_err(io)?;
    facet.insert("members".into(), m);
    Ok((facet, data))
}

/// `rec` with a top-level `path` first.
fn prepend_path(rec: Record, p: &Path) -> Record {
    let mut m = Map::new();
    m.insert("path".into(), p.to_string_lossy().into_owned().into());
    for (k, v) in rec.into_map() {
        m.insert(k, v);
    }
    Record::from_map(m)
}

/// Why one image could not be dumped.
#[derive(Debug, thiserror::Error)]
pub enum DumpError {
    /// The image id cannot be a file name (nor a path segment).
    #[error(transparent)]
    BadId(#[from] UnsafeName),
    /// Writing a file failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// The download failed.
    #[error(transparent)]
    Http(#[from] HttpError),
    /// The data does not match Glance's size or hash.
    #[error("{id}: downloaded data does not verify: {why}")]
    Mismatch {
        /// The image.
        id: String,
        /// What differs.
        why: String,
    },
}

impl DumpError {
    /// The error facet (with the HTTP details of a failed call).
    pub fn facet(&self, ctx: &Ctx) -> filter::ErrorFacet {
        match self {
            DumpError::Http(h) => filter::ErrorFacet::classified(ctx.tool(), h),
            _ => ctx.error(self.kind(), self.to_string()),
        }
    }

    /// The record's `error.kind`.
    pub fn kind(&self) -> ErrorKind {
        match self {
            DumpError::BadId(_) => ErrorKind::BadRecord,
            DumpError::Io { source, .. } => ErrorKind::from_io(source),
            DumpError::Http(e) => e.kind(),
            DumpError::Mismatch { .. } => ErrorKind::BadImage,
        }
    }
}

/// Hash a whole file (resuming or checking a present one).
fn hash_existing(
    path: &Path,
    algs: &[Algorithm],
) -> std::io::Result<(u64, Vec<(Algorithm, String)>)> {
    let d = system::hash::hash_file(path, algs)?;
    Ok((d.bytes, d.digests))
}

/// Write `DIR/<id>` and, for an active image, `DIR/<id>.img` (module
/// docs). The facet, and the data file when there is one.
fn dump_one(
    dir: &Path,
    glance: &Glance,
    img: &Value,
    id: &str,
    metaonly: bool,
    md5: bool,
    progress: bool,
) -> Result<(Map<String, Value>, Option<PathBuf>), DumpError> {
    let id = safe_file_name(id)?;
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| DumpError::Io { path, source }
    };
    let meta_path = dir.join(id);
    let mut facet = Map::new();
    // Metadata: one JSON line, replaced atomically.
    let mut meta = system::atomic::AtomicFile::create(&meta_path, true).map_err(io(&meta_path))?;
    let mut line = serde_json::to_vec(img).map_err(|e| io(&meta_path)(std::io::Error::other(e)))?;
    line.push(b'\n');
    meta.file().write_all(&line).map_err(io(&meta_path))?;
    meta.commit().map_err(io(&meta_path))?;
    facet.insert(
        "meta_path".into(),
        meta_path.to_string_lossy().into_owned().into(),
    );
    if metaonly || !has_data(img) {
        facet.insert("action".into(), "metadata_written".into());
        return Ok((facet, None));
    }
    // glanceclient's digest (the multihash, else MD5) is always checked;
    // MD5 beside a multihash costs as much CPU again, so only with --md5
    // (and then it is checked too).
    let stated = Expected::from_glance(img);
    let primary = stated.primary().map_or(Algorithm::Md5, |(a, _)| *a);
    let mut algs = vec![primary];
    if md5 && primary != Algorithm::Md5 {
        algs.insert(0, Algorithm::Md5);
    }
    let expected = stated.only(&algs);
    let size = expected.size;
    let data = dir.join(format!("{id}.img"));
    let part = dir.join(format!("{id}.img.part"));
    let check = |bytes: u64, digests: &[(Algorithm, String)]| -> Result<(), String> {
        let why: Vec<String> = expected
            .mismatches(bytes, digests)
            .into_iter()
            .map(|m| match m {
                Mismatch::Size { want, got } => format!("{got} bytes, Glance says {want}"),
                Mismatch::Digest {
                    algorithm,
                    want,
                    got,
                } => format!(
                    "{} {}, Glance says {want}",
                    algorithm.name(),
                    got.as_deref().unwrap_or("?")
                ),
            })
            .collect();
        if why.is_empty() {
            Ok(())
        } else {
            Err(why.join("; "))
        }
    };
    let record = |facet: &mut Map<String, Value>, bytes: u64, digests: &[(Algorithm, String)]| {
        facet.insert(
            "data_path".into(),
            data.to_string_lossy().into_owned().into(),
        );
        facet.insert("bytes".into(), bytes.into());
        for (a, h) in digests {
            if *a == Algorithm::Md5 {
                facet.insert("md5".into(), h.as_str().into());
            } else {
                facet.insert("os_hash_algo".into(), a.name().into());
                facet.insert("os_hash_value".into(), h.as_str().into());
            }
        }
        facet.insert("verified".into(), (!expected.digests.is_empty()).into());
    };
    // Already there and verified: nothing to fetch.
    if data.is_file() {
        let (bytes, digests) = hash_existing(&data, &algs).map_err(io(&data))?;
        if check(bytes, &digests).is_ok() {
            facet.insert("action".into(), "present_verified".into());
            record(&mut facet, bytes, &digests);
            return Ok((facet, Some(data)));
        }
    }
    // Resume a partial download: hash what is there, ask for the rest.
    let mut hasher = MultiHasher::new(&algs);
    let mut from = 0u64;
    if let Ok(m) = std::fs::symlink_metadata(&part)
        && m.file_type().is_file()
        && size.is_some_and(|s| m.len() <= s)
    {
        let mut f = std::fs::File::open(&part).map_err(io(&part))?;
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = std::io::Read::read(&mut f, &mut buf).map_err(io(&part))?;
            if n == 0 {
                break;
            }
            hasher.update(&bytes::Bytes::copy_from_slice(&buf[..n]));
            from += n as u64;
        }
    }
    let mut out = std::fs::OpenOptions::new()
        .create(true)
        .append(from > 0)
        .write(true)
        .truncate(from == 0)
        .open(&part)
        .map_err(io(&part))?;
    let path = format!("/v2/images/{}/file", percent_encode(id));
    let got = if size.is_some_and(|s| from == s && s > 0) {
        Ok(0)
    } else {
        let mut meter = system::progress::Progress::new(id, size, progress);
        glance.download(&path, from, &mut |chunk| {
            meter.add(chunk.len() as u64);
            out.write_all(chunk)?;
            hasher.update(&bytes::Bytes::copy_from_slice(chunk));
            Ok(())
        })
    };
    let got = match got {
        Err(HttpError::Status { status: 416, .. }) if from > 0 => {
            // The part was not a prefix after all: start over.
            drop(out);
            let _ = std::fs::remove_file(&part);
            return dump_one(dir, glance, img, id, metaonly, md5, progress);
        }
        r => r?,
    };
    out.sync_all().map_err(io(&part))?;
    drop(out);
    let total = from + got;
    let digests = hasher.finish();
    if let Err(why) = check(total, &digests) {
        let _ = std::fs::remove_file(&part);
        return Err(DumpError::Mismatch {
            id: id.to_owned(),
            why,
        });
    }
    std::fs::rename(&part, &data).map_err(io(&data))?;
    system::atomic::sync_dir(dir).map_err(io(dir))?;
    facet.insert(
        "action".into(),
        (if from > 0 { "resumed" } else { "downloaded" }).into(),
    );
    if from > 0 {
        facet.insert("resumed_from".into(), from.into());
    }
    record(&mut facet, total, &digests);
    Ok((facet, Some(data)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_are_one_parameter_each() {
        assert_eq!(
            parse_filter("a=b&os_hidden=true"),
            Ok(("a".into(), "b&os_hidden=true".into()))
        );
        assert_eq!(parse_filter("name="), Ok(("name".into(), String::new())));
        assert!(parse_filter("name").is_err());
        assert!(parse_filter("=x").is_err());
        for own in ["limit=1", "marker=x", "os_hidden=true", "sort=name:asc"] {
            assert!(
                parse_filter(own)
                    .unwrap_err()
                    .contains("set by glance-dump")
            );
        }
        assert_eq!(percent_encode("my image"), "my%20image");
        assert_eq!(
            percent_encode("b&os_hidden=true#+/é~-._"),
            "b%26os_hidden%3Dtrue%23%2B%2F%C3%A9~-._"
        );
    }

    #[test]
    fn a_link_or_marker_seen_before_is_a_loop() {
        let mut p = Pages::new("/v2/images?limit=1");
        assert!(p.follow("/v2/images?limit=1&marker=a").is_ok());
        assert!(p.follow("/v2/images?marker=b&limit=1").is_ok());
        let e = p.follow("/v2/images?marker=b&limit=1").unwrap_err();
        assert!(e.starts_with("pagination loop: "), "{e}");
        assert!(e.contains("/v2/images?marker=b&limit=1"), "{e}");
        let e = p.follow("/v2/images?limit=2&marker=a").unwrap_err();
        assert!(e.contains("marker a"), "{e}");
        // Back to the first page.
        assert!(
            Pages::new("/v2/images?limit=1")
                .follow("/v2/images?limit=1")
                .is_err()
        );
        assert_eq!(marker_of("/v2/images?limit=1"), None);
    }

    #[test]
    fn ids_that_are_not_file_names_are_refused() {
        let g = Glance::new(
            "http://127.0.0.1:9",
            Vec::new(),
            std::time::Duration::from_secs(1),
            None,
        );
        let t = std::env::temp_dir();
        for id in ["", ".", "..", "a/b", "a\nb", "a\0b"] {
            let r = dump_one(
                &t,
                &g,
                &serde_json::json!({"id": id}),
                id,
                true,
                false,
                false,
            );
            assert!(matches!(r, Err(DumpError::BadId(_))), "{id:?}");
        }
    }
}
