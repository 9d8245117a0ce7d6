//! glance-load: images into a Glance (Images API v2) from glance-dump
//! records, each planned by the target's state and then acted on:
//! absent → create with the same id (and upload the record's data file,
//! always with its size, then read back and verify); queued → upload;
//! active with the same data → PATCH only the differing keys, or nothing;
//! active with other data → `conflict` (images are immutable). A second
//! run over an unchanged source writes nothing.

use clap::Parser;
use common::cli::{Ctx, SharedArgs, Tool};
use common::glance::{Glance, HttpError};
use common::{ErrorKind, Record};
use serde_json::{Map, Value, json};
use std::path::Path;

/// The facet this tool owns.
pub const FACET: &str = "load";

/// Keys the API computes or owns: never sent.
const READ_ONLY: &[&str] = &[
    "status",
    "checksum",
    "os_hash_algo",
    "os_hash_value",
    "size",
    "virtual_size",
    "created_at",
    "updated_at",
    "self",
    "file",
    "schema",
    "stores",
    "direct_url",
    "locations",
    "owner",
    "protected",
];

const AFTER_HELP: &str = "\
Records: each input record (glance-dump output, possibly filtered with jq)
comes back with a \"load\" facet: action (created, uploaded, updated,
unchanged, conflict, already_present, failed; with --dry-run would_create,
would_upload, would_update), changes[] (the keys sent), and on failure the
HTTP status, Glance's message and request id in the error facet.

Example:
  glance-dump --url $SRC --dir dump | glance-load --url $DST

Exit status: 0 fine, 1 a conflict, 2 an error.";

/// Command-line arguments.
#[derive(Debug, Parser)]
#[command(
    about = "Load glance-dump records into a Glance over the v2 API, idempotently",
    long_about = "Read glance-dump records on stdin and make the target Glance hold the same \
images: create absent ones with the same id and upload their data (always with its size, verified \
after upload), upload data into queued ones, patch only the keys that differ, and report conflicts; \
a second run writes nothing.",
    after_help = "Run with --help for the records and examples.",
    after_long_help = AFTER_HELP
)]
pub struct Cli {
    #[command(flatten)]
    pub endpoint: common::glance::EndpointArgs,
    /// Plan only: say what would be done, write nothing
    #[arg(long)]
    pub dry_run: bool,
    /// Compare only (the replicator's compare): each image in_sync,
    /// missing, data_mismatch or differs (with the differing keys and both
    /// values); writes nothing, exit 1 when anything differs
    #[arg(long, conflicts_with = "dry_run")]
    pub compare: bool,
    /// A key never sent (repeatable; added to the read-only keys)
    #[arg(long = "exclude-key", value_name = "KEY")]
    pub exclude_keys: Vec<String>,

    #[command(flatten)]
    pub shared: SharedArgs,
}

impl Tool for Cli {
    const NAME: &'static str = "glance-load";
    const MAN_EXTRA: &'static str = include_str!("../doc/glance-load.extra.roff");

    fn shared(&self) -> &SharedArgs {
        &self.shared
    }

    fn run(self, ctx: &mut Ctx) -> anyhow::Result<()> {
        let Some(glance) = self.endpoint.connect(ctx)? else {
            return Ok(());
        };
        common::signal::install();
        common::cli::each_stdin_record(ctx, |ctx, mut rec| {
            let result = if self.compare {
                self.compare_one(&glance, &rec)
            } else {
                self.load_one(&glance, &rec)
            };
            match result {
                Ok(facet) => {
                    let differs = matches!(
                        facet.get("action").and_then(Value::as_str),
                        Some("conflict" | "missing" | "data_mismatch" | "differs")
                    );
                    if differs {
                        ctx.merge(common::status::Status::No);
                    }
                    rec.set(FACET, Value::Object(facet));
                    ctx.emit(&rec)?;
                }
                Err(e) => {
                    rec.set(FACET, json!({"action": "failed"}));
                    let err = ctx.error(e.kind(), e.to_string());
                    ctx.fail(rec, err)?;
                }
            }
            if let Some(sig) = common::signal::pending() {
                return Err(common::cli::Interrupted(sig).into());
            }
            Ok(())
        })
    }
}

/// Why an image could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The record has no usable `image` facet.
    #[error("record has no `image` with an `id`")]
    NoImage,
    /// A call to the target failed.
    #[error(transparent)]
    Http(#[from] HttpError),
    /// The uploaded data does not read back as the source's.
    #[error("{id}: after upload the target says {got}, the source {want}")]
    Verify {
        /// The image.
        id: String,
        /// What the target says.
        got: String,
        /// What the source says.
        want: String,
    },
}

impl LoadError {
    /// The record's `error.kind`.
    pub fn kind(&self) -> ErrorKind {
        match self {
            LoadError::NoImage => ErrorKind::BadRecord,
            LoadError::Http(e) => e.kind(),
            LoadError::Verify { .. } => ErrorKind::BadImage,
        }
    }
}

impl Cli {
    /// The keys of `img` this tool sends (module docs).
    fn sendable(&self, img: &Map<String, Value>) -> Map<String, Value> {
        img.iter()
            .filter(|(k, v)| {
                !READ_ONLY.contains(&k.as_str())
                    && !k.starts_with("os_glance_")
                    && !self.exclude_keys.iter().any(|x| x == *k)
                    // A null is never sent (and never becomes "None").
                    && !v.is_null()
            })
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }

    fn load_one(&self, g: &Glance, rec: &Record) -> Result<Map<String, Value>, LoadError> {
        let (img, id) = image_of(rec)?;
        let id = id.to_owned();
        let data = rec
            .path()
            .map(Path::new)
            .filter(|p| p.is_file())
            .map(Path::to_path_buf);
        let active = img.get("status").and_then(Value::as_str) == Some("active");
        let size = img.get("size").and_then(Value::as_u64);
        let mut facet = Map::new();
        let path = format!("/v2/images/{id}");
        let target = g.get_opt_json(&path)?;
        let want = self.sendable(img);

        let Some(target) = target else {
            if self.dry_run {
                facet.insert("action".into(), "would_create".into());
                return Ok(facet);
            }
            match g.send_json(
                "POST",
                "/v2/images",
                "application/json",
                &Value::Object(want.clone()),
                &[201],
            ) {
                Ok(_) => {}
                // A hidden image we cannot see, or a deleted (burned) id.
                Err(HttpError::Status { status: 409, .. }) => {
                    facet.insert("action".into(), "already_present".into());
                    return Ok(facet);
                }
                Err(e) => return Err(e.into()),
            }
            facet.insert(
                "changes".into(),
                want.keys().cloned().collect::<Vec<_>>().into(),
            );
            match (active, &data, size) {
                (true, Some(file), Some(n)) => {
                    g.upload(&format!("{path}/file"), file, n)?;
                    self.verify(g, &id, img)?;
                    facet.insert("action".into(), "created".into());
                }
                (true, _, _) => {
                    facet.insert("action".into(), "created_without_data".into());
                    facet.insert(
                        "reason".into(),
                        "no data file (record path) for an active image".into(),
                    );
                }
                _ => {
                    facet.insert("action".into(), "created".into());
                    facet.insert(
                        "reason".into(),
                        "the source image is not active: metadata only".into(),
                    );
                }
            }
            return Ok(facet);
        };

        let t_status = target.get("status").and_then(Value::as_str).unwrap_or("");
        if t_status == "queued" && active {
            let (Some(file), Some(n)) = (&data, size) else {
                facet.insert("action".into(), "skipped".into());
                facet.insert("reason".into(), "no data file (record path)".into());
                return Ok(facet);
            };
            if self.dry_run {
                facet.insert("action".into(), "would_upload".into());
                return Ok(facet);
            }
            g.upload(&format!("{path}/file"), file, n)?;
            self.verify(g, &id, img)?;
            facet.insert("action".into(), "uploaded".into());
            return Ok(facet);
        }
        if t_status == "active" && active && !same_data(&target, img) {
            facet.insert("action".into(), "conflict".into());
            facet.insert(
                "reason".into(),
                "the target holds other data under this id (images are immutable)".into(),
            );
            return Ok(facet);
        }
        // Only what the source has and the target lacks or differs on.
        let mut ops = Vec::new();
        let mut changes = Vec::new();
        for (k, v) in &want {
            if k == "id" {
                continue;
            }
            match target.get(k) {
                Some(t) if t == v => {}
                Some(_) => ops.push(json!({"op": "replace", "path": format!("/{k}"), "value": v})),
                None => ops.push(json!({"op": "add", "path": format!("/{k}"), "value": v})),
            }
            if target.get(k) != Some(v) {
                changes.push(k.clone());
            }
        }
        if ops.is_empty() {
            facet.insert("action".into(), "unchanged".into());
            return Ok(facet);
        }
        facet.insert("changes".into(), changes.into());
        if self.dry_run {
            facet.insert("action".into(), "would_update".into());
            return Ok(facet);
        }
        g.send_json(
            "PATCH",
            &path,
            "application/openstack-images-v2.1-json-patch",
            &Value::Array(ops),
            &[200],
        )?;
        facet.insert("action".into(), "updated".into());
        Ok(facet)
    }

    /// `--compare`: how the target's copy of the record's image differs.
    fn compare_one(&self, g: &Glance, rec: &Record) -> Result<Map<String, Value>, LoadError> {
        let (img, id) = image_of(rec)?;
        let mut facet = Map::new();
        let Some(target) = g.get_opt_json(&format!("/v2/images/{id}"))? else {
            facet.insert("action".into(), "missing".into());
            return Ok(facet);
        };
        if !same_data(&target, img) {
            facet.insert("action".into(), "data_mismatch".into());
            return Ok(facet);
        }
        // Status counts too (a queued copy of an active image is behind).
        let mut diffs = Vec::new();
        let want = self.sendable(img);
        for (k, v) in want.iter().chain(img.get_key_value("status")) {
            let t = target.get(k).unwrap_or(&Value::Null);
            if t != v {
                diffs.push(json!({"key": k, "source": v, "target": t}));
            }
        }
        facet.insert(
            "action".into(),
            (if diffs.is_empty() {
                "in_sync"
            } else {
                "differs"
            })
            .into(),
        );
        if !diffs.is_empty() {
            facet.insert("differences".into(), diffs.into());
        }
        Ok(facet)
    }

    /// Read the image back: its size and hash must be the source's.
    fn verify(&self, g: &Glance, id: &str, src: &Map<String, Value>) -> Result<(), LoadError> {
        let t = g.get_json(&format!("/v2/images/{id}"), &[200])?;
        if !same_data(&t, src) {
            let show = |v: &dyn Fn(&str) -> Option<Value>| {
                format!(
                    "size {} {}",
                    v("size").unwrap_or(Value::Null),
                    v("os_hash_value")
                        .or_else(|| v("checksum"))
                        .unwrap_or(Value::Null)
                )
            };
            return Err(LoadError::Verify {
                id: id.to_owned(),
                got: show(&|k| t.get(k).cloned()),
                want: show(&|k| src.get(k).cloned()),
            });
        }
        Ok(())
    }
}

/// The record's `image` facet and its id (a plain path segment).
fn image_of(rec: &Record) -> Result<(&Map<String, Value>, &str), LoadError> {
    let img = rec
        .get("image")
        .and_then(Value::as_object)
        .ok_or(LoadError::NoImage)?;
    let id = img
        .get("id")
        .and_then(Value::as_str)
        .filter(|i| !i.is_empty() && !i.contains('/'))
        .ok_or(LoadError::NoImage)?;
    Ok((img, id))
}

/// Whether `t` and `src` describe the same data: size, and the multihash
/// (else the MD5) where both have one.
fn same_data(t: &Value, src: &Map<String, Value>) -> bool {
    let get = |k: &str| {
        (
            t.get(k).filter(|v| !v.is_null()),
            src.get(k).filter(|v| !v.is_null()),
        )
    };
    if let (Some(a), Some(b)) = get("size")
        && a != b
    {
        return false;
    }
    match get("os_hash_value") {
        (Some(a), Some(b)) => a == b,
        _ => match get("checksum") {
            (Some(a), Some(b)) => a == b,
            _ => true,
        },
    }
}
