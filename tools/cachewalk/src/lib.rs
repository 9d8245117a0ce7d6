//! cachewalk: Nova's `_base` image cache as records — what each file is,
//! what uses it, what Nova would do with it, and what is provably safe to
//! remove. This release: `fname` (Nova's cache name of an image id),
//! `nova` (the walk), `remove` (deletion under Nova's lock, re-checked)
//! and `glance` (the Glance API node's cache, and queueing).

pub mod audit;
pub mod glance;
pub mod inventory;
pub mod names;
pub mod nova;
pub mod remove;
pub mod verify;

use clap::{Parser, Subcommand};
use filter::cli::{Ctx, SharedArgs, Tool};
use filter::record::FileRecord;
use filter::status::Status;
use filter::{ErrorKind, Record};
use serde_json::Value;
use std::path::PathBuf;

/// The facet this tool owns.
pub const FACET: &str = "cache";

const AFTER_HELP: &str = "\
Records: top-level \"path\" is the file's openable path (so the stream pipes
into imginfo-parse and checksum-tee --verify); the \"cache\" facet has
rel_path, class, fingerprint, image_id, size, allocated, mtime, age_s,
format, in_use (yes, no, unknown), used_by[], Nova's own view (nova_class,
nova_in_use, nova_reason, nova_threshold_s, nova_eligible_at) and
cachewalk's verdict
(candidate, keep_in_use, keep_young, keep_unknown,
keep_inventory_incomplete, orphan_temp, orphan_file, dangling_reference)
with reasons[].

Examples:
  cachewalk fname fd0cb2f1-8375-44c9-b1f4-3e1f4c4a8ef0
  cachewalk nova /var/lib/nova/instances --instances inv.jsonl \\
    | jq -c 'select(.cache.verdict == \"candidate\")' > plan.jsonl
  cachewalk remove --dry-run < plan.jsonl && cachewalk remove < plan.jsonl
  cachewalk remove --glance-cache /var/lib/glance/image-cache --image-id ID
  cachewalk nova /var/lib/nova/instances --instances inv.jsonl \\
    | jq -c 'select(.cache.nova_in_use == false and .cache.in_use == \"yes\")'

Exit status: 0 fine, 1 with --check when a dangling reference, a corrupt
file or a malformed sidecar was found,
2 an error (also written as an error record on stdout; a flag that does
nothing in the chosen mode is a usage error), 75 (remove) a lock was busy
or an image is being written, 128+N stopped by signal N (130 SIGINT, 143
SIGTERM; nothing half-deleted). Empty stdin (remove, fname): no records, no
output, exit 0. A name that is not UTF-8 comes with path_bytes (base64 of
the exact bytes), which remove reads back.";

/// Command-line arguments.
#[derive(Debug, Parser)]
#[command(
    about = "Nova's _base and Glance's image caches: what is there, what uses it, what would be deleted and why",
    long_about = "Walk Nova's image cache (INSTANCES_PATH/_base) and report every file as a \
record: its class, the image it caches, its size and age, every instance disk, inventory entry \
and process that uses it, what Nova's image cache manager would do with it, and cachewalk's \
own, more conservative verdict. Nothing is changed.",
    after_help = "Run with --help for the records and examples.",
    after_long_help = AFTER_HELP
)]
pub struct Cli {
    // Optional so that the shared `--generate` works without one.
    #[command(subcommand)]
    pub command: Option<Command>,

    #[command(flatten)]
    pub shared: SharedArgs,
}

/// What to do.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Nova's cache file name of each image id: the SHA-1 of the id string
    /// (without IDs: records with an `image_id` on stdin)
    Fname {
        /// Image ids
        #[arg(value_name = "IMAGE_ID")]
        ids: Vec<String>,
    },
    /// Every file of Nova's image cache under INSTANCES_PATH (_base/,
    /// locks/, compute_nodes), sorted, with its users, Nova's view and a
    /// verdict; nothing is changed
    Nova {
        /// Nova's instances_path (e.g. /var/lib/nova/instances)
        #[arg(value_name = "INSTANCES_PATH")]
        root: PathBuf,
        /// The instance inventory as JSON lines (`-` for stdin): uuid,
        /// name, host, image_ref, kernel_id, ramdisk_id, task_state,
        /// vm_state, swap_mb, ephemeral_gb, ephemeral_format. Without it
        /// nothing is a candidate
        #[arg(long, value_name = "FILE|-", value_parser = clap::value_parser!(PathBuf))]
        instances: Option<PathBuf>,
        /// The time to judge ages by: epoch seconds or RFC 3339 UTC
        /// (default: now), for reproducible output
        #[arg(long, value_name = "TIME", value_parser = parse_time_arg)]
        now: Option<i64>,
        /// Minimum age of unused originals, swap and ephemeral files
        /// (Nova's remove_unused_original_minimum_age_seconds)
        #[arg(long, value_name = "SECONDS", default_value_t = 86_400)]
        original_age: u64,
        /// Minimum age of unused resized files (Nova's
        /// remove_unused_resized_minimum_age_seconds)
        #[arg(long, value_name = "SECONDS", default_value_t = 3_600)]
        resized_age: u64,
        /// This compute host's name as Nova knows it (default: the
        /// hostname)
        #[arg(long, value_name = "NAME")]
        host: Option<String>,
        /// INSTANCES_PATH is shared storage: without a compute_nodes file
        /// naming the hosts, nothing is a candidate
        #[arg(long)]
        shared: bool,
        /// A host listed in compute_nodes that has no instances here
        /// (repeatable)
        #[arg(long, value_name = "HOST")]
        assume_no_instances_on: Vec<String>,
        /// The label Nova hashes into ephemeral file names when an
        /// instance gives none (default_ephemeral_format)
        #[arg(long, value_name = "LABEL", default_value = "vfat")]
        ephemeral_format: String,
        /// The cache subdirectory (Nova's [image_cache] subdirectory_name)
        #[arg(long, value_name = "NAME", default_value = "_base")]
        subdirectory: String,
        /// Exit 1 when a dangling reference (a backing file an instance
        /// needs is missing), a corrupt file or a malformed .sha1/.info
        /// sidecar was found
        #[arg(long)]
        check: bool,
        /// Hash every cached image file (atime untouched) and compare with
        /// its .sha1/.info sidecar and, where the bytes can be Glance's,
        /// the --images checksums; mismatches are verdict corrupt
        #[arg(long)]
        verify: bool,
        /// Glance's images as JSON lines (glance-dump output, or image
        /// objects): names fingerprints, gives checksums to --verify, and
        /// the images' status
        #[arg(long, value_name = "FILE")]
        images: Option<PathBuf>,
        /// Instead: audit every instance disk and _base file for hostile
        /// headers where Nova expects raw (format_confusion), qcow2 data
        /// files and backing files outside _base; exit 1 on any
        #[arg(long, conflicts_with_all = [
            "instances", "verify", "images", "check", "now", "original_age", "resized_age",
            "host", "shared", "assume_no_instances_on", "ephemeral_format",
        ])]
        audit: bool,
        /// With --audit: treat disks that disk.info does not name as raw
        #[arg(long, requires = "audit")]
        assume_raw: bool,
    },
    /// Every file of a Glance API node's image cache (root, incomplete/,
    /// invalid/, queue/) with its metadata (cache.db read-only, or
    /// xattrs), orphans both ways, the pruner's order and what it would
    /// prune, stalled downloads; a summary record last. With --queue:
    /// queue images for the prefetcher instead
    Glance {
        /// Glance's image_cache_dir
        #[arg(value_name = "CACHE_DIR")]
        root: PathBuf,
        /// The prune target (Glance's image_cache_max_size; reported as
        /// cache.max_size)
        // Not --max-size: a run's own limits are --max-bytes/--max-count;
        // this is the cache's setting, named like --cache-driver.
        #[arg(long = "cache-max-size", alias = "max-size", value_name = "SIZE",
              value_parser = parse_size_arg, default_value = "10G")]
        max_size: u64,
        /// Age after which an incomplete download is stalled (Glance's
        /// image_cache_stall_time)
        #[arg(long, value_name = "SECONDS", default_value_t = glance::DEFAULT_STALL_TIME)]
        stall_time: u64,
        /// The metadata driver (default: cache.db means sqlite, user.hits
        /// xattrs mean xattr)
        // checksum-tee's name for the same setting (was --driver).
        #[arg(long = "cache-driver", alias = "driver", value_name = "DRIVER")]
        driver: Option<glance::Driver>,
        /// The time to judge ages by (default: now)
        #[arg(long, value_name = "TIME", value_parser = parse_time_arg)]
        now: Option<i64>,
        /// Queue these images for Glance's prefetcher (a queue/ID marker,
        /// as glance-cache-manage queue-image); refused when already
        /// cached, being cached or queued
        #[arg(long, value_name = "IMAGE_ID", num_args = 1.., conflicts_with_all = [
            "max_size", "stall_time", "driver", "now", "verify", "images", "check",
        ])]
        queue: Vec<String>,
        /// Hash every cached image (atime untouched) and compare with
        /// Glance's checksum and os_hash_value from --images (what Glance
        /// itself never re-checks); mismatches are verdict corrupt
        #[arg(long)]
        verify: bool,
        /// Glance's images as JSON lines (glance-dump output, or image
        /// objects)
        #[arg(long, value_name = "FILE")]
        images: Option<PathBuf>,
        /// Exit 1 when a corrupt file or an orphan was found
        #[arg(long)]
        check: bool,
    },
    /// Delete the files of the candidate records on stdin, each under
    /// Nova's lock after checking again that it is unchanged, old enough
    /// and unused (with its .info/.sha1 sidecars and lock file, as Nova
    /// does); Glance records are judged again under Glance's locks and
    /// refused when their verdict is not what the cache says now; every
    /// record comes back with cache.action
    Remove {
        /// Say what would be deleted, delete nothing
        #[arg(long)]
        dry_run: bool,
        /// Delete at most N files
        #[arg(long, value_name = "N")]
        max_count: Option<u64>,
        /// Delete at most SIZE bytes (allocated; suffixes K, M, G, T)
        #[arg(long, value_name = "SIZE", value_parser = parse_size_arg)]
        max_bytes: Option<u64>,
        /// The time to judge ages by (default: now)
        #[arg(long, value_name = "TIME", value_parser = parse_time_arg)]
        now: Option<i64>,
        /// Instead of records on stdin: delete cached images of this Glance
        /// cache (--image-id or --all), as glance-cache-manage
        /// delete-cached-image and delete-all-cached-images do: the file
        /// and its cache.db row; an image being written (incomplete/ID) is
        /// skipped_busy, exit 75
        #[arg(
            long,
            value_name = "CACHE_DIR",
            value_parser = clap::value_parser!(PathBuf),
            conflicts_with = "now"
        )]
        glance_cache: Option<PathBuf>,
        /// With --glance-cache: the images to delete
        // checksum-tee's name for an image id; --images is a file (was
        // --image).
        #[arg(
            long = "image-id",
            alias = "image",
            value_name = "IMAGE_ID",
            num_args = 1..,
            requires = "glance_cache",
            conflicts_with = "all"
        )]
        image: Vec<String>,
        /// With --glance-cache: delete every cached image (not cache.db,
        /// lock files or anything else Glance did not cache)
        #[arg(long, requires = "glance_cache")]
        all: bool,
        /// With --glance-cache: the metadata driver (default: detected as
        /// by `cachewalk glance`)
        #[arg(
            long = "cache-driver",
            alias = "driver",
            value_name = "DRIVER",
            requires = "glance_cache"
        )]
        driver: Option<glance::Driver>,
        /// The inventory the walk was given (`cachewalk nova --instances`):
        /// an instance disk that cannot be read then keeps only the base
        /// files of its instance's images, swap and ephemeral files, as in
        /// the walk; without it such a disk keeps every base file. Not
        /// `-` (stdin holds the records)
        #[arg(long, value_name = "FILE", conflicts_with = "glance_cache")]
        instances: Option<PathBuf>,
    },
}

fn parse_size_arg(s: &str) -> Result<u64, String> {
    system::size::parse_size(s).map_err(|e| e.to_string())
}

fn parse_time_arg(s: &str) -> Result<i64, String> {
    system::text::parse_time(s)
        .ok_or_else(|| format!("{s:?} is not a time: give epoch seconds or an RFC 3339 UTC time that exists (2026-02-28T12:00:00Z)"))
}

impl Tool for Cli {
    const NAME: &'static str = "cachewalk";
    const MAN_EXTRA: &'static str = concat!(
        include_str!("../doc/cachewalk.extra.roff"),
        include_str!("../doc/upstream.roff"),
        include_str!("../doc/cachewalk.see-also.roff")
    );

    fn shared(&self) -> &SharedArgs {
        &self.shared
    }

    fn run(self, ctx: &mut Ctx) -> anyhow::Result<()> {
        let Some(command) = self.command else {
            return Err(filter::cli::usage("a subcommand is needed (see --help)"));
        };
        match command {
            Command::Fname { ids } => fname_cmd(ctx, &ids),
            Command::Nova {
                root,
                instances,
                now,
                original_age,
                resized_age,
                host,
                shared,
                assume_no_instances_on,
                ephemeral_format,
                subdirectory,
                check,
                verify,
                images,
                audit,
                assume_raw,
            } => {
                if audit {
                    return audit_cmd(ctx, &root, &subdirectory, assume_raw);
                }
                let Some(images) = read_images(ctx, images.as_deref())? else {
                    return Ok(());
                };
                let Some(inventory) = load_inventory(ctx, instances.as_deref())? else {
                    return Ok(());
                };
                let opts = nova::Options {
                    now: now.unwrap_or_else(now_epoch),
                    original_age,
                    resized_age,
                    inventory,
                    host: host.unwrap_or_else(hostname),
                    shared,
                    assume_no_instances_on,
                    ephemeral_format,
                    proc_root: PathBuf::from("/proc"),
                    base_name: subdirectory,
                    verify,
                    images,
                };
                nova_cmd(ctx, &root, &opts, check)
            }
            Command::Glance {
                root,
                max_size,
                stall_time,
                driver,
                now,
                queue,
                verify,
                images,
                check,
            } => {
                if !queue.is_empty() {
                    return queue_cmd(ctx, &root, &queue);
                }
                let opts = glance::Options {
                    now: now.unwrap_or_else(now_epoch),
                    max_size,
                    stall_time,
                    driver,
                    verify,
                    images: match read_images(ctx, images.as_deref())? {
                        Some(i) => i,
                        None => return Ok(()),
                    },
                };
                glance_cmd(ctx, &root, &opts, check)
            }
            Command::Remove {
                dry_run,
                max_count,
                max_bytes,
                now,
                glance_cache,
                image,
                all,
                driver,
                instances,
            } => {
                if instances.as_deref() == Some(std::path::Path::new("-")) {
                    return Err(filter::cli::usage(
                        "remove --instances cannot be - (stdin holds the records)",
                    ));
                }
                let Some(inventory) = load_inventory(ctx, instances.as_deref())? else {
                    return Ok(());
                };
                let opts = remove::Options {
                    dry_run,
                    max_count,
                    max_bytes,
                    now: now.unwrap_or_else(now_epoch),
                    proc_root: PathBuf::from("/proc"),
                    inventory,
                };
                let remover = remove::Remover::new(opts);
                match glance_cache {
                    Some(root) if all || !image.is_empty() => {
                        glance_delete_cmd(ctx, remover, &root, &image, driver)
                    }
                    Some(_) => Err(filter::cli::usage(
                        "--glance-cache needs --image-id ID... or --all",
                    )),
                    None => remove_cmd(ctx, remover),
                }
            }
        }
    }
}

/// The inventory of `--instances`: `Some(None)` without the option,
/// `None` when it could not be read (the error record is written).
fn load_inventory(
    ctx: &mut Ctx,
    path: Option<&std::path::Path>,
) -> anyhow::Result<Option<Option<Vec<inventory::Instance>>>> {
    let Some(f) = path else {
        return Ok(Some(None));
    };
    let read =
        |r: &mut dyn std::io::BufRead| inventory::read(r).map_err(|e| (e.kind, e.to_string()));
    Ok(load(ctx, f, read)?.map(Some))
}

/// Read a file of records given to an option (`-`: stdin; a pipe or
/// FIFO is read too) with `parse`. When it cannot be opened or parsed, the
/// run's one error record names the file and says why, and None ends the
/// run (exit 2).
fn load<T>(
    ctx: &mut Ctx,
    path: &std::path::Path,
    parse: impl FnOnce(&mut dyn std::io::BufRead) -> Result<T, (ErrorKind, String)>,
) -> anyhow::Result<Option<T>> {
    let result = system::files::open_input(path, system::files::Accept::Streams)
        .map_err(|e| (ErrorKind::from_io(&e), e.to_string()))
        .and_then(|input| parse(&mut std::io::BufReader::new(input)));
    match result {
        Ok(t) => Ok(Some(t)),
        Err((kind, message)) => {
            let e = ctx.error(kind, message);
            ctx.fail(filter::record::record_for(path), e)?;
            Ok(None)
        }
    }
}

/// `--images FILE`: Glance's images by id (none without it).
fn read_images(
    ctx: &mut Ctx,
    path: Option<&std::path::Path>,
) -> anyhow::Result<Option<std::collections::HashMap<String, verify::ImageMeta>>> {
    let Some(p) = path else {
        return Ok(Some(std::collections::HashMap::new()));
    };
    load(ctx, p, |r| {
        verify::read_images(r).map_err(|e| (e.kind, e.to_string()))
    })
}

fn now_epoch() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// The machine's hostname (Nova's default `CONF.host`).
#[allow(unsafe_code)]
fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its length; gethostname writes at
    // most that many bytes.
    let r = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if r != 0 {
        return String::new();
    }
    let end = buf.iter().position(|b| *b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

/// Nova's cache name facet for `id`.
fn fname_facet(id: &str) -> Value {
    let fp = system::hash::sha1_hex(id);
    serde_json::json!({ "fingerprint": fp, "rel_path": format!("_base/{fp}") })
}

fn fname_cmd(ctx: &mut Ctx, ids: &[String]) -> anyhow::Result<()> {
    if !ids.is_empty() {
        for id in ids {
            let mut rec = Record::new();
            rec.set("image_id", id.as_str());
            rec.set(FACET, fname_facet(id));
            ctx.emit(&rec)?;
        }
        return Ok(());
    }
    filter::cli::each_stdin_record(ctx, |ctx, mut rec| {
        let Some(id) = rec
            .get("image_id")
            .and_then(Value::as_str)
            .map(str::to_owned)
        else {
            let e = ctx.error(ErrorKind::BadRecord, "record has no string `image_id`");
            return Ok(ctx.fail(rec, e)?);
        };
        rec.set(FACET, fname_facet(&id));
        Ok(ctx.emit(&rec)?)
    })
}

fn glance_cmd(
    ctx: &mut Ctx,
    root: &std::path::Path,
    opts: &glance::Options,
    check: bool,
) -> anyhow::Result<()> {
    // Streamed: the rows of a large cache.db are never all in memory.
    let mut walk = match glance::stream(root, opts) {
        Ok(w) => w,
        Err(err) => return glance_walk_failed(ctx, root, &err),
    };
    let mut flagged = false;
    for e in walk.by_ref() {
        let e = match e {
            Ok(e) => e,
            Err(err) => return glance_walk_failed(ctx, root, &err),
        };
        flagged |= matches!(e.verdict, "corrupt" | "orphan_file" | "orphan_row");
        emit_glance_entry(ctx, &e)?;
    }
    if check && flagged {
        ctx.merge(Status::No);
    }
    let mut rec = filter::record::record_for(root);
    rec.set(FACET, walk.summary());
    ctx.emit(&rec)?;
    Ok(())
}

/// One entry of a Glance walk; one that could not be looked into (a
/// subdirectory that is a link) carries its error facet.
fn emit_glance_entry(ctx: &mut Ctx, e: &glance::Entry) -> anyhow::Result<()> {
    let mut rec = filter::record::record_for(&e.path);
    rec.set(FACET, serde_json::to_value(e)?);
    match &e.error {
        Some((kind, why)) => {
            let err = ctx.error(*kind, why.as_str());
            ctx.fail(rec, err)?;
        }
        None => ctx.emit(&rec)?,
    }
    Ok(())
}

fn queue_cmd(ctx: &mut Ctx, root: &std::path::Path, ids: &[String]) -> anyhow::Result<()> {
    for id in ids {
        match glance::queue(root, id) {
            Ok(path) => {
                let mut rec = filter::record::record_for(&path);
                rec.set(
                    FACET,
                    serde_json::json!({
                        "cache": "glance", "root": root.to_string_lossy(),
                        "rel_path": format!("queue/{id}"), "image_id": id, "action": "queued",
                    }),
                );
                ctx.emit(&rec)?;
            }
            Err(err) => {
                let kind = match &err {
                    glance::QueueError::Already { .. } => ErrorKind::AlreadyExists,
                    glance::QueueError::BadId(_) => ErrorKind::BadRecord,
                    glance::QueueError::Io { source, .. } => ErrorKind::from_io(source),
                };
                let e = ctx.error(kind, err.to_string());
                let mut rec = Record::new();
                rec.set("image_id", id.as_str());
                ctx.fail(rec, e)?;
            }
        }
    }
    Ok(())
}

/// Put `out` into a record being returned: `cache.action`, its reason,
/// what went with it, the error facet and the run's status.
fn apply_outcome(
    ctx: &mut Ctx,
    rec: &mut Record,
    mut facet: serde_json::Map<String, Value>,
    out: remove::Outcome,
) {
    match out.action {
        "skipped_lock_busy" | "skipped_busy" => ctx.merge(Status::TempFail),
        _ if out.error.is_some() => ctx.merge(Status::Error),
        _ => {}
    }
    if let Some(why) = &out.why {
        let what = rec.path().unwrap_or("").to_owned();
        ctx.warn(&format!("{what}: {}: {why}", out.action));
        facet.insert("action_reason".into(), why.as_str().into());
    }
    facet.insert("action".into(), out.action.into());
    if !out.also_removed.is_empty() {
        facet.insert("also_removed".into(), out.also_removed.into());
    }
    rec.set(FACET, Value::Object(facet));
    if let Some(kind) = out.error {
        // The record's path says which file; the message says why.
        let e = ctx.error(kind, out.why.as_deref().unwrap_or(out.action));
        rec.set_error(&e);
    }
}

/// `remove --glance-cache DIR --image-id ID... | --all`: each image as a
/// record (its walk entry as the `cache` facet) with the action taken.
fn glance_delete_cmd(
    ctx: &mut Ctx,
    mut remover: remove::Remover,
    root: &std::path::Path,
    ids: &[String],
    driver: Option<glance::Driver>,
) -> anyhow::Result<()> {
    for id in ids {
        system::files::safe_file_name(id).map_err(|e| filter::cli::usage(e.to_string()))?;
    }
    let opts = glance::Options {
        now: now_epoch(),
        max_size: glance::DEFAULT_MAX_SIZE,
        stall_time: glance::DEFAULT_STALL_TIME,
        driver,
        verify: false,
        images: std::collections::HashMap::new(),
    };
    let Some((entries, _)) = glance_walk(ctx, root, &opts)? else {
        return Ok(());
    };
    // What the walk found (every entry carries it), or what was told.
    let driver = entries.first().and_then(|e| e.driver).or(driver);
    let targets: std::collections::BTreeSet<String> = if ids.is_empty() {
        // Every cached image: root files Glance cached (rows without a
        // file too) and downloads in progress (refused as busy).
        entries
            .iter()
            .filter(|e| {
                (e.class == "active" && !e.rel_path.contains('/')) || e.class == "incomplete"
            })
            .filter_map(|e| e.image_id.clone())
            .collect()
    } else {
        ids.iter().cloned().collect()
    };
    for id in targets {
        let facet = match entries.iter().find(|e| e.rel_path == id) {
            Some(e) => serde_json::to_value(e)?,
            None => serde_json::json!({
                "record": "entry", "cache": "glance", "root": root.to_string_lossy(),
                "rel_path": id, "image_id": id, "driver": driver,
            }),
        };
        let Value::Object(facet) = facet else {
            continue;
        };
        let mut rec = filter::record::record_for(&root.join(&id));
        let out = remover.delete_cached(root, &id, driver);
        apply_outcome(ctx, &mut rec, facet, out);
        ctx.emit(&rec)?;
    }
    Ok(())
}

/// Walk the Glance cache at `root`; a walk that fails is an error record
/// for the cache (and `None`).
fn glance_walk(
    ctx: &mut Ctx,
    root: &std::path::Path,
    opts: &glance::Options,
) -> anyhow::Result<Option<(Vec<glance::Entry>, serde_json::Value)>> {
    match glance::walk(root, opts) {
        Ok(x) => Ok(Some(x)),
        Err(err) => {
            glance_walk_failed(ctx, root, &err)?;
            Ok(None)
        }
    }
}

/// The error record of a Glance walk that could not run (or go on).
fn glance_walk_failed(
    ctx: &mut Ctx,
    root: &std::path::Path,
    err: &glance::GlanceError,
) -> anyhow::Result<()> {
    let kind = match err {
        glance::GlanceError::Io { source, .. } => ErrorKind::from_io(source),
        glance::GlanceError::Db { .. } => ErrorKind::Io,
    };
    let e = ctx.error(kind, glance_error_message(root, err));
    ctx.fail(filter::record::record_for(root), e)?;
    Ok(())
}

/// A walk error's message without the path its record already names.
fn glance_error_message(root: &std::path::Path, err: &glance::GlanceError) -> String {
    match err {
        // Something below the root (cache.db, a subdirectory): named.
        glance::GlanceError::Io { path, source } => match path.strip_prefix(root) {
            Ok(rel) if !rel.as_os_str().is_empty() => {
                format!("{}: {source}", rel.display())
            }
            _ => source.to_string(),
        },
        glance::GlanceError::Db { path, why } => format!(
            "{}: {why}",
            path.file_name()
                .map(|n| n.to_string_lossy())
                .unwrap_or_default()
        ),
    }
}

fn remove_cmd(ctx: &mut Ctx, mut remover: remove::Remover) -> anyhow::Result<()> {
    filter::cli::each_stdin_record(ctx, |ctx, mut rec| {
        let path = match filter::record::path_of(&rec) {
            Ok(p) => p.unwrap_or_default(),
            Err(why) => {
                let e = ctx.error(ErrorKind::BadRecord, why);
                return Ok(ctx.fail(rec, e)?);
            }
        };
        let facet = match rec.get(FACET) {
            Some(Value::Object(m)) => m.clone(),
            _ => {
                let e = ctx.error(ErrorKind::BadRecord, "record has no `cache` facet");
                return Ok(ctx.fail(rec, e)?);
            }
        };
        let out = remover.remove(&path, &Value::Object(facet.clone()));
        apply_outcome(ctx, &mut rec, facet, out);
        Ok(ctx.emit(&rec)?)
    })
}

fn audit_cmd(
    ctx: &mut Ctx,
    root: &std::path::Path,
    base_name: &str,
    assume_raw: bool,
) -> anyhow::Result<()> {
    let findings = match audit::audit(root, base_name, assume_raw) {
        Ok(f) => f,
        Err(err) => {
            let e = ctx.error(ErrorKind::from_io(&err), err.to_string());
            ctx.fail(filter::record::record_for(root), e)?;
            return Ok(());
        }
    };
    let recs: Vec<_> = findings
        .iter()
        .map(|f| FileRecord::new(&f.path, "audit", f))
        .collect();
    ctx.emit_batch(&recs)?;
    if findings.iter().any(|f| f.verdict == "unsafe") {
        ctx.merge(Status::No);
    }
    Ok(())
}

fn nova_cmd(
    ctx: &mut Ctx,
    root: &std::path::Path,
    opts: &nova::Options,
    check: bool,
) -> anyhow::Result<()> {
    let entries = match nova::walk(root, opts) {
        Ok(e) => e,
        Err(err) => {
            // The record names the directory (the root, or the `_base` or
            // `locks` refused in it); the message says why.
            let e = ctx.error(ErrorKind::from_io(&err.source), err.source.to_string());
            ctx.fail(filter::record::record_for(&err.path), e)?;
            return Ok(());
        }
    };
    let dangling = entries.iter().any(|e| e.record == "dangling_reference");
    let corrupt = entries.iter().any(|e| e.verdict == "corrupt");
    let malformed = entries
        .iter()
        .any(|e| e.reasons.iter().any(|r| r == "sidecar_malformed"));
    let recs: Vec<_> = entries
        .iter()
        .map(|e| FileRecord::new(&e.path, "cache", e))
        .collect();
    let jobs = std::thread::available_parallelism().map_or(1, |n| n.get());
    ctx.emit_batch_on(&recs, jobs)?;
    // The run ends here: a large cache's records (hundreds of thousands of
    // small strings) are left to the process's exit, not freed one by one.
    std::mem::forget(recs);
    std::mem::forget(entries);
    if dangling {
        ctx.warn("dangling references: instance disks name backing files that are missing");
    }
    if corrupt {
        ctx.warn("corrupt base files: their content does not match the checksums known");
    }
    if malformed {
        ctx.warn("malformed checksum sidecars: .sha1/.info files that hold no SHA-1");
    }
    if check && (dangling || corrupt || malformed) {
        ctx.merge(Status::No);
    }
    Ok(())
}
