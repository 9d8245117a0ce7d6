//! Per image: read the target's state, plan, act (crate docs), or compare.

use crate::stream::Verified;
use filter::{ErrorKind, Record};
use openstack::glance::{Glance, HttpError, safe_file_name};
use serde_json::{Map, Value, json};
use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::Duration;
use system::hash::Expected;
use system::tree::{Dir, Status};

/// Actions that make the exit status 1.
pub const DIFFERS: &[&str] = &["conflict", "spoiled", "missing", "data_mismatch", "diff"];

/// Keys the API computes or owns: never sent nor compared.
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
];

/// The base keys of the v2 image schema: never `extra`, never pruned.
const BASE: &[&str] = &[
    "id",
    "name",
    "status",
    "visibility",
    "protected",
    "os_hidden",
    "checksum",
    "os_hash_algo",
    "os_hash_value",
    "owner",
    "size",
    "virtual_size",
    "container_format",
    "disk_format",
    "created_at",
    "updated_at",
    "tags",
    "direct_url",
    "min_ram",
    "min_disk",
    "self",
    "file",
    "schema",
    "locations",
    "stores",
];

/// Why an image could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The record has no usable `image` facet.
    #[error("record has no `image` with an `id`")]
    NoImage,
    /// The image id cannot be a path segment (nor a file name).
    #[error("{0}")]
    BadId(String),
    /// A call failed.
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
    /// The data did not verify while it streamed: the upload was
    /// abandoned before its last byte, so the target stays queued.
    #[error("{id}: {why}")]
    Stream {
        /// The image.
        id: String,
        /// What was wrong with the data.
        why: String,
    },
    /// The data file is not the image's size (a truncated dump).
    // The record's `path` names the file: messages do not repeat it.
    #[error("the data file has {got} bytes, the image {want}: refused")]
    DataSize {
        /// The data file.
        path: PathBuf,
        /// Its size.
        got: u64,
        /// The image's size.
        want: u64,
    },
    /// The data is not in the declared `disk_format`.
    #[error(
        "the data is {found}, the image says disk_format {declared}; Glance would refuse it \
         (415) and the id could never be uploaded again (use --no-format-check to send it anyway)"
    )]
    FormatMismatch {
        /// The data file.
        path: PathBuf,
        /// What the data is.
        found: String,
        /// What the image says.
        declared: String,
    },
    /// The target's image stays `saving` (its upload was cut with the
    /// Glance worker that took it) and takes no upload.
    #[error(
        "{id}: the target's image has been saving since {since} and stays so: an upload into it \
         was interrupted (Glance killed or restarted mid-upload leaves an image saving for ever, \
         with partial data in its store), or another client is uploading it now; Glance takes no \
         upload into it. If no upload is running: remove the partial data from the store (the \
         file store: filesystem_store_datadir/{id}), then either set the image's status back to \
         queued in Glance's database (UPDATE images SET status='queued' WHERE id='{id}') and run \
         glance-load again, or delete the image (the id is then used up until glance-manage db \
         purge_images_table purges it)"
    )]
    Stuck {
        /// The image.
        id: String,
        /// Its `updated_at` (when it went `saving`).
        since: String,
    },
    /// The data file could not be read.
    #[error("the data file: {source}")]
    Io {
        /// The data file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

impl LoadError {
    /// The record's `error.kind`.
    pub fn kind(&self) -> ErrorKind {
        match self {
            LoadError::NoImage | LoadError::BadId(_) => ErrorKind::BadRecord,
            LoadError::Http(e) => e.kind(),
            LoadError::Verify { .. } | LoadError::Stream { .. } | LoadError::DataSize { .. } => {
                ErrorKind::BadImage
            }
            LoadError::FormatMismatch { .. } => ErrorKind::FormatMismatch,
            LoadError::Stuck { .. } => ErrorKind::ServerError,
            LoadError::Io { source, .. } => ErrorKind::from_io(source),
        }
    }
}

/// Where an image's bytes come from.
enum Data {
    /// The record's data file, opened once: this handle is what was
    /// checked (size, format) and is what gets hashed and uploaded.
    File {
        /// For messages.
        path: PathBuf,
        /// The open file.
        file: File,
        /// Its status when opened (an upload re-checks it).
        status: Status,
    },
    /// The source Glance (`--source-url`).
    Source,
}

/// How to load, built once from the command line (in lib.rs).
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Plan only, write nothing (`--dry-run`).
    pub dry_run: bool,
    /// With --compare, target-only keys are differences (`--strict`).
    pub strict: bool,
    /// Remove properties the source lacks (`--prune-keys`).
    pub prune_keys: bool,
    /// Also send owner (`--keep-owner`).
    pub keep_owner: bool,
    /// Keys never sent nor compared (`--exclude-key`).
    pub exclude_keys: Vec<String>,
    /// Check that the data is in its disk_format before uploading (not
    /// `--no-format-check`).
    pub check_format: bool,
    /// Tries after a transient failure (`--retries`).
    pub retries: u32,
    /// Show transfer progress (not `-q`, one job at a time).
    pub progress: bool,
}

/// The work of one run.
pub struct Loader<'a> {
    pub opts: &'a Options,
    pub target: &'a Glance,
    pub source: Option<&'a Glance>,
    /// The `--dir` dump directory, opened once: its data files are opened
    /// relative to it, never through a link.
    pub dir: Option<&'a Dir>,
}

/// A data file read from its start at each upload attempt, by positioned
/// reads of the one handle (never reopened by name).
struct FromStart<'a> {
    file: &'a File,
    pos: u64,
}

impl Read for FromStart<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.file.read_at(buf, self.pos)?;
        self.pos += n as u64;
        Ok(n)
    }
}

fn facet(action: &str) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("action".into(), action.into());
    m
}

fn with_reason(action: &str, reason: &str) -> Map<String, Value> {
    let mut m = facet(action);
    m.insert("reason".into(), reason.into());
    m
}

fn status_of(v: &Value) -> &str {
    v.get("status").and_then(Value::as_str).unwrap_or("")
}

/// Whether the image holds data (an admin can read a deactivated one).
fn has_data(img: &Map<String, Value>) -> bool {
    matches!(
        img.get("status").and_then(Value::as_str),
        Some("active" | "deactivated")
    )
}

/// Whether a key's values agree (tags are a set).
fn same_value(k: &str, a: Option<&Value>, b: &Value) -> bool {
    match (k, a) {
        ("tags", Some(Value::Array(x))) => {
            let Value::Array(y) = b else { return false };
            let mut x: Vec<String> = x.iter().map(Value::to_string).collect();
            let mut y: Vec<String> = y.iter().map(Value::to_string).collect();
            x.sort();
            y.sort();
            x == y
        }
        (_, Some(a)) => a == b,
        (_, None) => false,
    }
}

impl Loader<'_> {
    /// The keys of `img` this tool sends and compares.
    fn sendable(&self, img: &Map<String, Value>) -> Map<String, Value> {
        img.iter()
            .filter(|(k, v)| {
                !READ_ONLY.contains(&k.as_str())
                    && !k.starts_with("os_glance_")
                    && (self.opts.keep_owner || k.as_str() != "owner")
                    && !self.opts.exclude_keys.iter().any(|x| x == *k)
                    // A null is never sent (and never becomes "None").
                    && !v.is_null()
            })
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }

    /// Target-only properties (not base keys, not excluded).
    fn extra(&self, img: &Map<String, Value>, target: &Value) -> Vec<String> {
        target
            .as_object()
            .into_iter()
            .flatten()
            .filter(|(k, v)| {
                !img.contains_key(*k)
                    && !v.is_null()
                    && !BASE.contains(&k.as_str())
                    && !k.starts_with("os_glance_")
                    && !self.opts.exclude_keys.iter().any(|x| x == *k)
            })
            .map(|(k, _)| k.clone())
            .collect()
    }

    /// `op`, tried again after a transient failure while `safe` says a
    /// retry can do no harm.
    fn retry<T>(
        &self,
        mut op: impl FnMut() -> Result<T, HttpError>,
        safe: impl Fn() -> bool,
    ) -> Result<T, HttpError> {
        let mut attempt = 0;
        loop {
            match op() {
                Err(e) if e.transient() && attempt < self.opts.retries && safe() => {
                    attempt += 1;
                    backoff(attempt);
                }
                r => return r,
            }
        }
    }

    /// A GET (always safe to repeat).
    fn get_opt(&self, path: &str) -> Result<Option<Value>, HttpError> {
        self.retry(|| self.target.get_opt_json(path), || true)
    }

    /// A call that sets state (PATCH of values, an action, adding a
    /// member): repeating it does what doing it once does.
    fn send(
        &self,
        method: &'static str,
        path: &str,
        ctype: &str,
        body: &Value,
        ok: &[u16],
    ) -> Result<Value, HttpError> {
        self.retry(
            || self.target.send_json(method, path, ctype, body, ok),
            || true,
        )
    }

    /// The data source of the record's image, checked as far as it can be
    /// before anything is written. A data file is opened here, once: from
    /// the dump directory's handle without following a link, and checked
    /// to be the file listed (`listed`); a record's own `path` (stdin) is
    /// the operator's, followed as a named file is. The handle is then
    /// probed, and is what gets uploaded.
    fn data_of(
        &self,
        rec: &Record,
        img: &Map<String, Value>,
        listed: Option<&(String, Status)>,
    ) -> Result<Option<Data>, LoadError> {
        let Some(p) = rec.path().map(PathBuf::from) else {
            return Ok(self.source.map(|_| Data::Source));
        };
        let io_err = |source| LoadError::Io {
            path: p.clone(),
            source,
        };
        // Listed and judged; nothing of the data file is opened yet.
        system::hook::point("glance-load.before_upload");
        let file = match (self.dir, listed) {
            (Some(dir), Some((name, st))) => {
                let f = dir.open_file(name).map_err(io_err)?;
                system::tree::check_same(&f, st).map_err(io_err)?;
                f
            }
            _ => open_regular(&p).map_err(io_err)?,
        };
        let status = Status::of_file(&file).map_err(io_err)?;
        if let Some(want) = img.get("size").and_then(Value::as_u64)
            && status.size != want
        {
            return Err(LoadError::DataSize {
                path: p,
                got: status.size,
                want,
            });
        }
        if self.opts.check_format {
            format_check(&p, &file, img)?;
        }
        Ok(Some(Data::File {
            path: p,
            file,
            status,
        }))
    }

    /// Plan and act for one record (crate docs). `listed` is the record's
    /// data file as the dump directory listed it.
    pub fn load_one(
        &self,
        rec: &Record,
        listed: Option<&(String, Status)>,
    ) -> Result<Map<String, Value>, LoadError> {
        let (img, id) = image_of(rec)?;
        let path = format!("/v2/images/{id}");
        let src_status = img.get("status").and_then(Value::as_str).unwrap_or("");
        if matches!(src_status, "deleted" | "pending_delete" | "killed") {
            // Nothing to copy (an old dump keeps deleted images' metadata).
            return Ok(with_reason(
                "skipped",
                &format!("the source image is {src_status}"),
            ));
        }
        let data = if has_data(img) {
            self.data_of(rec, img, listed)?
        } else {
            None
        };
        match self.get_opt(&path)? {
            None => self.create(rec, img, id, data),
            Some(t) => self.update(rec, img, id, data, &t),
        }
    }

    fn create(
        &self,
        rec: &Record,
        img: &Map<String, Value>,
        id: &str,
        data: Option<Data>,
    ) -> Result<Map<String, Value>, LoadError> {
        if has_data(img) && data.is_none() {
            return Ok(with_reason(
                "skipped",
                "no_data: the record has no data file (path) and there is no --source-url",
            ));
        }
        let mut body = self.sendable(img);
        // Set after the upload: a protected queued image is stuck.
        body.remove("protected");
        let mut out = facet(if self.opts.dry_run {
            "would_create"
        } else {
            "created"
        });
        out.insert(
            "changes".into(),
            body.keys()
                .filter(|k| *k != "id")
                .cloned()
                .collect::<Vec<_>>()
                .into(),
        );
        if self.opts.dry_run {
            return Ok(out);
        }
        let body = Value::Object(body);
        let created = self.retry(
            || {
                self.target
                    .send_json("POST", "/v2/images", "application/json", &body, &[201])
            },
            || {
                matches!(
                    self.target.get_opt_json(&format!("/v2/images/{id}")),
                    Ok(None)
                )
            },
        );
        match created {
            Ok(_) => {}
            // Hidden from us, or a deleted id (ids are never reused).
            Err(HttpError::Status { status: 409, .. }) => {
                return Ok(with_reason(
                    "already_present",
                    "the target refused the id (409): an image we cannot see, or a deleted id",
                ));
            }
            Err(e) if e.transient() => {
                // A create that failed half-way (Glance wrote the image
                // row, then a property failed) leaves a queued image with
                // our id: finish it as a queued one.
                let path = format!("/v2/images/{id}");
                match self.target.get_opt_json(&path) {
                    Ok(Some(t)) if status_of(&t) == "queued" => {
                        let mut out = self.update(rec, img, id, data, &t)?;
                        if matches!(
                            out.get("action").and_then(Value::as_str),
                            Some("uploaded" | "updated" | "unchanged")
                        ) {
                            out.insert("action".into(), "created".into());
                        }
                        return Ok(out);
                    }
                    _ => return Err(e.into()),
                }
            }
            Err(e) => return Err(e.into()),
        }
        let Some(data) = data else {
            out.insert(
                "reason".into(),
                format!(
                    "the source image is {}: metadata only",
                    img.get("status").and_then(Value::as_str).unwrap_or("?")
                )
                .into(),
            );
            self.members(rec, id, &mut out, true)?;
            return Ok(out);
        };
        if let Some(spoiled) = self.upload(id, img, &data)? {
            return Ok(spoiled);
        }
        let t = self.verify(id, img)?;
        self.finish(img, id, &t, &mut out)?;
        self.members(rec, id, &mut out, true)?;
        Ok(out)
    }

    fn update(
        &self,
        rec: &Record,
        img: &Map<String, Value>,
        id: &str,
        data: Option<Data>,
        target: &Value,
    ) -> Result<Map<String, Value>, LoadError> {
        let t_status = status_of(target);
        let stuck = ["os_hash_value", "checksum", "size"]
            .iter()
            .any(|k| target.get(*k).is_some_and(|v| !v.is_null()));
        match t_status {
            "killed" | "deleted" | "pending_delete" => {
                return Ok(with_reason(
                    "spoiled",
                    &format!("the target's image is {t_status}: the id cannot be used again"),
                ));
            }
            "queued" if stuck && has_data(img) => {
                return Ok(with_reason(
                    "spoiled",
                    "the target's image is queued with data stuck in its store (a refused \
                     upload): every upload would fail",
                ));
            }
            "saving" => {
                // A cut upload whose client went away is back to queued
                // within seconds; one whose Glance worker died with it
                // (killed, restarted) stays saving for ever and refuses
                // every upload (409). So wait for the first and report the
                // second: "busy" (exit 0) would never converge.
                let t = match self.settle(id) {
                    Some(t) => Some(t),
                    None => self.get_opt(&format!("/v2/images/{id}"))?,
                };
                return match t {
                    None => self.create(rec, img, id, data),
                    Some(t) if status_of(&t) != "saving" => self.update(rec, img, id, data, &t),
                    Some(t) => Err(LoadError::Stuck {
                        id: id.to_owned(),
                        since: t
                            .get("updated_at")
                            .and_then(Value::as_str)
                            .unwrap_or("?")
                            .to_owned(),
                    }),
                };
            }
            "uploading" | "importing" => {
                return Ok(with_reason(
                    "skipped",
                    &format!("busy: the target's image is {t_status}"),
                ));
            }
            _ => {}
        }
        let mut out = Map::new();
        let mut target = target.clone();
        if t_status == "queued" && has_data(img) {
            let Some(data) = data else {
                return Ok(with_reason(
                    "skipped",
                    "no_data: the record has no data file (path) and there is no --source-url",
                ));
            };
            if self.opts.dry_run {
                out = facet("would_upload");
            } else {
                if let Some(spoiled) = self.upload(id, img, &data)? {
                    return Ok(spoiled);
                }
                target = self.verify(id, img)?;
                out = facet("uploaded");
            }
        } else if has_data(img)
            && matches!(t_status, "active" | "deactivated")
            && !same_data(&target, img)
        {
            return Ok(with_reason(
                "conflict",
                "the target holds other data under this id (images are immutable)",
            ));
        }
        let changed = self.finish(img, id, &target, &mut out)?;
        let members = self.members(rec, id, &mut out, false)?;
        if !out.contains_key("action") {
            let action = match (changed || members, self.opts.dry_run) {
                (false, _) => "unchanged",
                (true, true) => "would_update",
                (true, false) => "updated",
            };
            out.insert("action".into(), action.into());
        }
        Ok(out)
    }

    /// After the data: PATCH the keys that differ (protected among them),
    /// then deactivate or reactivate to match the source. Whether anything
    /// was (or, with --dry-run, would be) changed; the keys go to
    /// `changes`.
    fn finish(
        &self,
        img: &Map<String, Value>,
        id: &str,
        target: &Value,
        out: &mut Map<String, Value>,
    ) -> Result<bool, LoadError> {
        let path = format!("/v2/images/{id}");
        let mut ops = Vec::new();
        let mut changes: Vec<String> = out
            .get("changes")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        for (k, v) in self.sendable(img) {
            if k == "id" || same_value(&k, target.get(&k), &v) {
                continue;
            }
            let op = if target.get(&k).is_some() {
                "replace"
            } else {
                "add"
            };
            ops.push(json!({"op": op, "path": format!("/{k}"), "value": v}));
            if !changes.contains(&k) {
                changes.push(k);
            }
        }
        if self.opts.prune_keys {
            for k in self.extra(img, target) {
                ops.push(json!({"op": "remove", "path": format!("/{k}")}));
                changes.push(format!("-{k}"));
            }
        }
        let src = img.get("status").and_then(Value::as_str).unwrap_or("");
        let lifecycle = match (src, status_of(target)) {
            ("deactivated", "active") => Some("deactivate"),
            ("active", "deactivated") => Some("reactivate"),
            _ => None,
        };
        if let Some(l) = lifecycle {
            changes.push(format!("status:{l}"));
        }
        let changed = !ops.is_empty() || lifecycle.is_some();
        if !changes.is_empty() {
            out.insert("changes".into(), changes.into());
        }
        if self.opts.dry_run {
            return Ok(changed);
        }
        if !ops.is_empty() {
            self.send(
                "PATCH",
                &path,
                "application/openstack-images-v2.1-json-patch",
                &Value::Array(ops),
                &[200],
            )?;
        }
        if let Some(l) = lifecycle {
            let action = format!("{path}/actions/{l}");
            self.retry(|| self.target.call("POST", &action, &[204]), || true)?;
        }
        Ok(changed)
    }

    /// Recreate the source's members (`dump.members`) on the target. A
    /// membership status other than pending can only be set by the member
    /// (with its own token): those are reported in `members_status`.
    fn members(
        &self,
        rec: &Record,
        id: &str,
        out: &mut Map<String, Value>,
        new: bool,
    ) -> Result<bool, LoadError> {
        let Some(src) = source_members(rec) else {
            return Ok(false);
        };
        let path = format!("/v2/images/{id}/members");
        let mut have: Map<String, Value> = Map::new();
        if !(new && self.opts.dry_run) {
            let t = self.retry(|| self.target.get_json(&path, &[200]), || true)?;
            for m in t
                .get("members")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                if let Some(mid) = m.get("member_id").and_then(Value::as_str) {
                    have.insert(mid.to_owned(), m.get("status").cloned().unwrap_or_default());
                }
            }
        }
        let mut added = Vec::new();
        let mut notes = Vec::new();
        for (mid, st) in &src {
            if !have.contains_key(mid) {
                if !self.opts.dry_run {
                    self.target.send_json(
                        "POST",
                        &path,
                        "application/json",
                        &json!({"member": mid}),
                        &[200],
                    )?;
                }
                added.push(Value::from(mid.as_str()));
                have.insert(mid.clone(), "pending".into());
            }
            if have.get(mid).and_then(Value::as_str) != Some(st.as_str()) {
                notes.push(json!({"member_id": mid, "source": st, "target": have[mid]}));
            }
        }
        let changed = !added.is_empty();
        if changed {
            out.insert("members_added".into(), added.into());
        }
        if !notes.is_empty() {
            out.insert("members_status".into(), notes.into());
        }
        Ok(changed)
    }

    /// Upload the data, retried while that is safe. `Some(facet)` when the
    /// id turned out spoiled.
    fn upload(
        &self,
        id: &str,
        img: &Map<String, Value>,
        data: &Data,
    ) -> Result<Option<Map<String, Value>>, LoadError> {
        // glanceclient's digest (the multihash, else MD5), checked as the
        // bytes stream: a second one would cost as much CPU again.
        let stated = Expected::from_glance(&Value::Object(img.clone()));
        let want = match stated.primary().map(|(a, _)| *a) {
            Some(a) => stated.only(&[a]),
            None => stated,
        };
        let Some(size) = want.size else {
            return Err(LoadError::Stream {
                id: id.to_owned(),
                why: "the source image has no size".into(),
            });
        };
        let path = format!("/v2/images/{id}/file");
        let mut attempt = 0;
        loop {
            let (res, failure) = match data {
                Data::File {
                    path: fpath,
                    file,
                    status,
                } => {
                    // The bytes sent are the handle's; its file must not
                    // have changed in place since it was judged.
                    system::hook::point("glance-load.before_send");
                    system::tree::check_same(file, status).map_err(|source| LoadError::Io {
                        path: fpath.clone(),
                        source,
                    })?;
                    let f = FromStart { file, pos: 0 };
                    let mut body =
                        Verified::new(f, size, want.clone()).with_progress(self.meter(id, size));
                    let r = self.target.upload(&path, &mut body, size);
                    (r, body.failure())
                }
                Data::Source => {
                    let Some(source) = self.source else {
                        return Err(LoadError::NoImage);
                    };
                    let (_, reader) = source.open(&path)?;
                    let mut body = Verified::new(reader, size, want.clone())
                        .with_progress(self.meter(id, size));
                    let r = self.target.upload(&path, &mut body, size);
                    (r, body.failure())
                }
            };
            let e = match res {
                Ok(()) => return Ok(None),
                Err(e) => e,
            };
            // Glance may still be busy with the upload (it notices a cut
            // after we do; it cleans up after a failure): judge the image
            // once it has settled.
            let state = self.settle(id);
            if let Some(why) = failure {
                return Err(LoadError::Stream {
                    id: id.to_owned(),
                    why,
                });
            }
            // A refusal (415 for the format, 400, 403) is the answer to
            // report, even where it spoiled the id: the next run says so.
            if !e.transient() {
                return Err(e.into());
            }
            let t_status = state.as_ref().map(status_of).unwrap_or("");
            let stuck = state.as_ref().is_some_and(|t| {
                ["os_hash_value", "checksum", "size"]
                    .iter()
                    .any(|k| t.get(*k).is_some_and(|v| !v.is_null()))
            });
            // The data made it after all (the error came after the store).
            if t_status == "active" && state.as_ref().is_some_and(|t| same_data(t, img)) {
                return Ok(None);
            }
            if t_status == "killed" || (t_status == "queued" && stuck) {
                return Ok(Some(with_reason(
                    "spoiled",
                    &format!("{e}; the target's image is {t_status} with data stuck in its store"),
                )));
            }
            if e.transient() && t_status == "queued" && attempt < self.opts.retries {
                attempt += 1;
                backoff(attempt);
                continue;
            }
            return Err(e.into());
        }
    }

    /// A progress meter for one upload: on a terminal, one image at a time.
    fn meter(&self, id: &str, size: u64) -> system::progress::Progress {
        system::progress::Progress::new(id, Some(size), self.opts.progress)
    }

    /// The target's image once Glance is done with a cut upload: not
    /// `saving` for a whole second (its handler may not even have started
    /// when we gave up), or after about 15 s. None when it cannot be read.
    fn settle(&self, id: &str) -> Option<Value> {
        let path = format!("/v2/images/{id}");
        let mut quiet = 0;
        for _ in 0..75 {
            let t = self.target.get_opt_json(&path).ok().flatten()?;
            if matches!(status_of(&t), "saving" | "uploading") {
                quiet = 0;
            } else {
                quiet += 1;
                if quiet >= 5 {
                    return Some(t);
                }
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        self.target.get_opt_json(&path).ok().flatten()
    }

    /// Read the image back: size and hash must be the source's, and it
    /// must be active.
    fn verify(&self, id: &str, src: &Map<String, Value>) -> Result<Value, LoadError> {
        let path = format!("/v2/images/{id}");
        let t = self.retry(|| self.target.get_json(&path, &[200]), || true)?;
        if !same_data(&t, src) || status_of(&t) != "active" {
            let show = |v: &dyn Fn(&str) -> Option<Value>| {
                format!(
                    "{} size {} {}",
                    v("status").unwrap_or(Value::Null),
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
        Ok(t)
    }

    /// `--compare`: how the target's copy of the record's image differs.
    pub fn compare_one(&self, rec: &Record) -> Result<Map<String, Value>, LoadError> {
        let (img, id) = image_of(rec)?;
        let Some(target) = self.get_opt(&format!("/v2/images/{id}"))? else {
            return Ok(facet("missing"));
        };
        if !same_data(&target, img) {
            return Ok(facet("data_mismatch"));
        }
        // Status counts too (a queued copy of an active image is behind).
        let mut diffs = Vec::new();
        let want = self.sendable(img);
        for (k, v) in want.iter().chain(img.get_key_value("status")) {
            if !same_value(k, target.get(k), v) {
                let t = target.get(k).unwrap_or(&Value::Null);
                diffs.push(json!({"key": k, "source": v, "target": t}));
            }
        }
        if let Some(src) = source_members(rec) {
            let t = self
                .target
                .get_json(&format!("/v2/images/{id}/members"), &[200])?;
            let mut have: Vec<String> = t
                .get("members")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(|m| {
                    m.get("member_id")
                        .and_then(Value::as_str)
                        .map(str::to_owned)
                })
                .collect();
            let mut want: Vec<String> = src.into_iter().map(|(m, _)| m).collect();
            have.sort();
            want.sort();
            if have != want {
                diffs.push(json!({"key": "members", "source": want, "target": have}));
            }
        }
        let extra = self.extra(img, &target);
        let differs = !diffs.is_empty() || (self.opts.strict && !extra.is_empty());
        let mut out = facet(if differs { "diff" } else { "in_sync" });
        if !diffs.is_empty() {
            out.insert("differences".into(), diffs.into());
        }
        if !extra.is_empty() {
            out.insert("extra".into(), extra.into());
        }
        Ok(out)
    }
}

/// Wait before try `attempt` (1, 2, 4 … 30 s).
fn backoff(attempt: u32) {
    let secs = 1u64 << attempt.saturating_sub(1).min(5);
    std::thread::sleep(Duration::from_secs(secs.min(30)));
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
        .ok_or(LoadError::NoImage)?;
    let id = safe_file_name(id).map_err(|e| LoadError::BadId(e.to_string()))?;
    // Stricter still: the id goes into request paths unencoded.
    if !id
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err(LoadError::BadId(format!(
            "image id {id:?} is not a plain path segment (letters, digits, - and _ only)"
        )));
    }
    Ok((img, id))
}

/// The source's members, from the record's `dump.members`.
fn source_members(rec: &Record) -> Option<Vec<(String, String)>> {
    let list = rec.get("dump")?.get("members")?.as_array()?;
    Some(
        list.iter()
            .filter_map(|m| {
                let id = m.get("member_id")?.as_str()?.to_owned();
                let st = m
                    .get("status")
                    .and_then(Value::as_str)
                    .unwrap_or("pending")
                    .to_owned();
                Some((id, st))
            })
            .collect(),
    )
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

/// The qemu format name of a Glance `disk_format` whose content can be
/// recognised; None where no check applies (ami, aki, ari, ...).
fn qemu_format(disk_format: &str) -> Option<&'static str> {
    Some(match disk_format {
        "raw" => "raw",
        "qcow2" => "qcow2",
        "vmdk" => "vmdk",
        "vdi" => "vdi",
        "vhd" => "vpc",
        "vhdx" => "vhdx",
        "ploop" => "parallels",
        "iso" => "iso",
        _ => return None,
    })
}

/// Open a record's own data file (stdin records: the operator's path,
/// links followed as for a named file), which must be a regular file; the
/// open never blocks.
fn open_regular(path: &Path) -> io::Result<File> {
    let input = system::files::open_input(path, system::files::Accept::Regular)?;
    let file = input.into_file();
    if !file.metadata()?.file_type().is_file() {
        return Err(system::files::refusal(
            ErrorKind::NotRegular,
            "is not a regular file",
        ));
    }
    Ok(file)
}

/// The data file must be what its `disk_format` says: Glance 33 refuses
/// a mismatch with 415 after storing the bytes, which spoils the id. The
/// open handle is probed (the very bytes that will be uploaded).
fn format_check(path: &Path, file: &File, img: &Map<String, Value>) -> Result<(), LoadError> {
    let Some(declared) = img.get("disk_format").and_then(Value::as_str) else {
        return Ok(());
    };
    let Some(want) = qemu_format(declared) else {
        return Ok(());
    };
    let src = file
        .try_clone()
        .and_then(formats::FileSource::from_file)
        .map_err(|source| LoadError::Io {
            path: path.to_path_buf(),
            source,
        })?;
    // An image our probe cannot read is left for Glance to judge.
    let Ok(p) = formats::probe(&src, "", None) else {
        return Ok(());
    };
    let found = p.format.as_str();
    let ok = match want {
        "iso" => p.detected.contains(&formats::Format::Iso),
        w => w == found,
    };
    if ok {
        return Ok(());
    }
    Err(LoadError::FormatMismatch {
        path: path.to_path_buf(),
        found: found.to_owned(),
        declared: declared.to_owned(),
    })
}
