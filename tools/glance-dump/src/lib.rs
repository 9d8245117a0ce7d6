//! glance-dump: every image of a Glance (Images API v2) as records, and
//! with `--dir` the replicator's dump layout (`DIR/<id>` metadata,
//! `DIR/<id>.img` data), streamed, hashed while streaming, verified,
//! written as `.part` then renamed, resumed with `Range`.

use clap::Parser;
use common::cli::{Ctx, SharedArgs, Tool};
use common::glance::{Glance, HttpError};
use common::hash::{Algorithm, MultiHasher};
use common::{ErrorKind, Record};
use serde_json::{Map, Value};
use std::io::Write;
use std::path::{Path, PathBuf};

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

Exit status: 0 fine, 2 an error (the server has no v2 API, a request
failed, a download did not verify).";

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
    pub endpoint: common::glance::EndpointArgs,
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
    #[arg(long, value_name = "N")]
    pub limit: Option<u64>,
    /// Images per list request (at most 1000)
    #[arg(long, value_name = "N", default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..=1000))]
    pub page_size: u64,
    /// A server-side list filter KEY=VALUE, passed through (repeatable:
    /// name, status, owner, tag, size_min, size_max, ...)
    #[arg(long = "filter", value_name = "KEY=VALUE")]
    pub filters: Vec<String>,

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
        let Some(glance) = self.endpoint.connect(ctx)? else {
            return Ok(());
        };
        common::signal::install();
        if let Some(d) = &self.dir {
            std::fs::create_dir_all(d).map_err(|e| anyhow::anyhow!("{}: {e}", d.display()))?;
            // A run killed mid-write left temporaries: gone now (a killed
            // download's .part stays, to be resumed).
            common::atomic::remove_stale_temps_in(d);
        }
        let mut seen = 0u64;
        let (mut count, mut bytes) = (0u64, 0u64);
        'passes: for hidden in [false, true] {
            let mut next = Some(self.first_page(hidden));
            while let Some(path) = next.take() {
                let page = match glance.get_json(&path, &[200]) {
                    Ok(p) => p,
                    Err(e) => {
                        let err = common::glance::error_facet(ctx, &e);
                        ctx.fail(Record::from_path(glance.base()), err)?;
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
                    if let Some(sig) = common::signal::pending() {
                        return Err(common::cli::Interrupted(sig).into());
                    }
                }
                next = page.get("next").and_then(Value::as_str).map(str::to_owned);
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
        if !self.filters.iter().any(|f| f.starts_with("visibility=")) {
            q.push("visibility=all".to_owned());
        }
        q.extend(self.filters.iter().cloned());
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
    if id.is_empty() || id.contains('/') {
        return Err(DumpError::BadId(id.to_owned()));
    }
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
    let mut f = common::atomic::AtomicFile::create(&path, true).map_err(io)?;
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
    /// The image id is not a plain file name.
    #[error("image id {0:?} is not a plain file name")]
    BadId(String),
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
    pub fn facet(&self, ctx: &Ctx) -> common::ErrorFacet {
        match self {
            DumpError::Http(h) => common::glance::error_facet(ctx, h),
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
    let d = common::hash::hash_file(path, algs)?;
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
    if id.is_empty() || id.contains('/') || id == "." || id == ".." || id.contains('\0') {
        return Err(DumpError::BadId(id.to_owned()));
    }
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| DumpError::Io { path, source }
    };
    let meta_path = dir.join(id);
    let mut facet = Map::new();
    // Metadata: one JSON line, replaced atomically.
    let mut meta = common::atomic::AtomicFile::create(&meta_path, true).map_err(io(&meta_path))?;
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
    let (size, hash) = common::glance::expected(img);
    // The hash Glance has (else MD5), and MD5 too when asked for.
    let mut algs = vec![hash.as_ref().map_or(Algorithm::Md5, |(a, _)| *a)];
    if md5 && !algs.contains(&Algorithm::Md5) {
        algs.insert(0, Algorithm::Md5);
    }
    let data = dir.join(format!("{id}.img"));
    let part = dir.join(format!("{id}.img.part"));
    let check = |bytes: u64, digests: &[(Algorithm, String)]| -> Result<(), String> {
        if let Some(s) = size
            && s != bytes
        {
            return Err(format!("{bytes} bytes, Glance says {s}"));
        }
        if let Some((a, want)) = &hash {
            let got = digests
                .iter()
                .find(|(x, _)| x == a)
                .map(|(_, h)| h.as_str());
            if got != Some(want.as_str()) {
                return Err(format!(
                    "{} {}, Glance says {want}",
                    a.name(),
                    got.unwrap_or("?")
                ));
            }
        }
        Ok(())
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
        facet.insert("verified".into(), hash.is_some().into());
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
    let path = format!("/v2/images/{id}/file");
    let got = if size.is_some_and(|s| from == s && s > 0) {
        Ok(0)
    } else {
        let mut meter = common::progress::Progress::new(id, size, progress);
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
    common::atomic::sync_dir(dir).map_err(io(dir))?;
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
    fn ids_that_are_not_file_names_are_refused() {
        let g = Glance::new(
            "http://127.0.0.1:9",
            Vec::new(),
            std::time::Duration::from_secs(1),
            None,
        );
        let t = std::env::temp_dir();
        for id in ["", ".", "..", "a/b"] {
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
