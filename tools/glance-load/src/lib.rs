//! glance-load: images into a Glance (Images API v2) from glance-dump
//! records or a dump directory, each planned by the target's state and
//! then acted on: absent → create with the same id, upload the data
//! (always with its size, verified while it streams and read back after),
//! then set `protected`, deactivate and add members; queued → upload;
//! active with the same data → PATCH only the differing keys, or nothing;
//! active with other data → `conflict` (images are immutable); killed, or
//! queued with data stuck in the store → `spoiled`. A second run over an
//! unchanged source writes nothing.

pub mod dir;
mod plan;
mod stream;

pub use dir::{from_v1, is_uuid};
pub use plan::LoadError;

use anyhow::Context;
use clap::Parser;
use filter::cli::{Ctx, SharedArgs, Tool};
use filter::{ErrorKind, Record};
use openstack::args::EndpointArgs;
use serde_json::{Map, Value};
use std::path::PathBuf;

/// The facet this tool owns.
pub const FACET: &str = "load";

const AFTER_HELP: &str = "\
Records: each input record (glance-dump output, possibly filtered with jq,
or one per image of --dir) comes back with a \"load\" facet: action
(created, uploaded, updated, unchanged, skipped, conflict, spoiled,
already_present, failed; with --dry-run would_create, would_upload,
would_update; with --compare in_sync, missing, data_mismatch, diff),
changes[] (the keys sent), reason, and members_added / members_status when
members were recreated. A failure carries the HTTP status, Glance's message
and request id in the error facet (401/403 permission_denied, 409
already_exists, 415 format_mismatch, 400/5xx server_error).

Examples:
  glance-dump --url $SRC --dir dump && glance-load --url $DST --dir dump
  glance-dump --url $SRC | glance-load --url $DST --source-url $SRC
  glance-dump --url $SRC | glance-load --url $DST --compare

An image id that is not a plain name (empty, . or .., a /, a control
character, anything but letters, digits, - and _), and a dump's metadata
file whose id is not its own name, are refused before any request (kind
bad_record). In --dir, files are never reached through a link (kind
symlink) nor read when they are FIFOs or devices (not_regular); a data
file swapped or rewritten after it was listed is refused (changed).

Exit status: 0 fine (in sync), 1 a conflict, a spoiled id or (--compare) a
difference, 2 an error, 128+N stopped by signal N (130 SIGINT, 143
SIGTERM). Fatal errors (bad usage, an unreadable --dir) are
error records too. Empty stdin: no records, exit 0 (the target is still
reached first, so a wrong URL or token shows).";

/// Command-line arguments.
#[derive(Debug, Parser)]
#[command(
    about = "Load glance-dump records into a Glance over the v2 API, idempotently",
    long_about = "Make the target Glance hold the images of glance-dump records (stdin) or of a \
dump directory (ours or an old glance-replicator dump): create absent ones with the same id and \
upload their data (always with its size, verified as it streams and after), from the record's data \
file or straight from the source Glance; upload into queued ones; patch only the keys that differ; \
apply protected, deactivation and members after the upload; report conflicts and spoiled ids. A \
second run writes nothing.",
    after_help = "Run with --help for the records and examples.",
    after_long_help = AFTER_HELP
)]
pub struct Cli {
    #[command(flatten)]
    pub endpoint: EndpointArgs,
    /// Read a dump directory instead of stdin: glance-dump --dir's, or an
    /// old glance-replicator dump (v1 metadata is mapped to v2); entries
    /// not named by a UUID are ignored
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
    /// Stream each image's data from this Glance when the record has no
    /// data file (livecopy: nothing touches the disk)
    #[arg(long, value_name = "URL")]
    pub source_url: Option<String>,
    /// The source's token (default: $OS_SOURCE_AUTH_TOKEN); never printed
    #[arg(
        long,
        value_name = "TOKEN",
        env = "OS_SOURCE_AUTH_TOKEN",
        hide_env_values = true,
        requires = "source_url",
        conflicts_with = "source_token_file"
    )]
    pub source_token: Option<String>,
    /// Read the source's token from FILE
    #[arg(long, value_name = "FILE", requires = "source_url")]
    pub source_token_file: Option<PathBuf>,
    /// An extra header 'Name: value' for the source (repeatable)
    #[arg(
        long = "source-header",
        value_name = "NAME: VALUE",
        requires = "source_url"
    )]
    pub source_headers: Vec<String>,
    /// Plan only: say what would be done, write nothing
    #[arg(long)]
    pub dry_run: bool,
    /// Compare only (the replicator's compare): each image in_sync,
    /// missing, data_mismatch or diff (each differing key with both
    /// values; target-only keys as extra); writes nothing, exit 1 when
    /// anything differs
    #[arg(long, conflicts_with = "dry_run")]
    pub compare: bool,
    /// With --compare, count target-only keys (extra) as differences
    #[arg(long, requires = "compare")]
    pub strict: bool,
    /// Remove properties the target has and the source lacks
    #[arg(long, conflicts_with = "compare")]
    pub prune_keys: bool,
    /// Also send owner (needs an admin token on the target)
    #[arg(long)]
    pub keep_owner: bool,
    /// A key never sent nor compared (repeatable; added to the read-only
    /// keys, like the replicator's dontreplicate)
    #[arg(long = "exclude-key", value_name = "KEY")]
    pub exclude_keys: Vec<String>,
    /// Upload without checking that the data is in its disk_format (Glance
    /// 33 refuses a mismatch with 415, and the id is then spoiled)
    #[arg(long)]
    pub no_format_check: bool,
    /// Images loaded at once
    #[arg(long, value_name = "N", default_value_t = 1,
          value_parser = clap::value_parser!(u16).range(1..=64))]
    pub jobs: u16,
    /// Tries after a transient failure (no answer, 502-504), only where a
    /// retry cannot do harm (the target is still queued with no data)
    #[arg(long, value_name = "N", default_value_t = 3)]
    pub retries: u32,

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
        let source_args = self.source_url.as_ref().map(|u| EndpointArgs {
            url: Some(u.clone()),
            auth: openstack::args::AuthArgs {
                token: self.source_token.clone(),
                token_file: self.source_token_file.clone(),
                headers: self.source_headers.clone(),
                cacert: self.endpoint.auth.cacert.clone(),
            },
            timeout: self.endpoint.timeout,
            keystone: false,
        });
        // The source's usage errors, and an unreadable --dir, before any
        // connection.
        if let Some(s) = &source_args {
            s.glance("--source-url")?;
        }
        let (dump_dir, names) = match &self.dir {
            // The io::Error stays in the chain: it gives the fatal record's kind.
            Some(d) => {
                let (h, names) = dir::open(d).with_context(|| format!("--dir {}", d.display()))?;
                (Some(h), Some(names))
            }
            None => (None, None),
        };
        let target = match self.endpoint.connect()? {
            Ok(g) => g,
            Err(u) => return Ok(ctx.fail_on(&u.endpoint, &u.error)?),
        };
        let source = match source_args.as_ref().map(|s| s.connect()).transpose()? {
            Some(Ok(g)) => Some(g),
            Some(Err(u)) => return Ok(ctx.fail_on(&u.endpoint, &u.error)?),
            None => None,
        };
        system::signal::install();
        let opts = plan::Options {
            dry_run: self.dry_run,
            strict: self.strict,
            prune_keys: self.prune_keys,
            keep_owner: self.keep_owner,
            exclude_keys: self.exclude_keys.clone(),
            check_format: !self.no_format_check,
            retries: self.retries,
            progress: !self.shared.quiet && self.jobs == 1,
        };
        let loader = plan::Loader {
            opts: &opts,
            target: &target,
            source: source.as_ref(),
            dir: dump_dir.as_ref(),
        };
        let inputs: Box<dyn Iterator<Item = anyhow::Result<Input>>> = match (&dump_dir, names) {
            (Some(d), Some(names)) => Box::new(names.into_iter().map(move |m| {
                Ok(match dir::record_in(d, &m) {
                    Ok(l) => Input::Work(l.record, l.data),
                    Err((r, e)) => Input::Fail(r, e.kind(), e.to_string(), None),
                })
            })),
            _ => Box::new(stdin_inputs()),
        };
        let work = |input: Input| match input {
            Input::Work(rec, listed) => {
                let r = if self.compare {
                    loader.compare_one(&rec)
                } else {
                    loader.load_one(&rec, listed.as_ref())
                };
                Output::Done(rec, r)
            }
            other => Output::Input(other),
        };
        system::jobs::ordered(usize::from(self.jobs), inputs, &work, &mut |o| emit(ctx, o))?;
        match system::signal::pending() {
            Some(sig) => Err(filter::cli::Interrupted(sig).into()),
            None => Ok(()),
        }
    }
}

/// One input, in order.
enum Input {
    /// A record to load, with its data file as the dump directory listed
    /// it (None for a record from stdin).
    Work(Record, Option<(String, system::tree::Status)>),
    /// A record passed through (it already carries an error).
    Pass(Record),
    /// An input that could not be read as a record.
    Fail(Record, ErrorKind, String, Option<u64>),
}

/// What became of one input.
enum Output {
    Done(Record, Result<Map<String, Value>, LoadError>),
    Input(Input),
}

fn stdin_inputs() -> impl Iterator<Item = anyhow::Result<Input>> {
    let mut reader = filter::jsonl::RecordReader::new(std::io::stdin().lock());
    std::iter::from_fn(move || match reader.next_record() {
        Err(e) => Some(Err(e.into())),
        Ok(None) => None,
        Ok(Some(Ok(r))) if r.has_error() => Some(Ok(Input::Pass(r))),
        Ok(Some(Ok(r))) => Some(Ok(Input::Work(r, None))),
        Ok(Some(Err(bad))) => Some(Ok(Input::Fail(
            Record::new(),
            bad.kind,
            bad.message,
            Some(bad.line),
        ))),
    })
}

fn emit(ctx: &mut Ctx, o: Output) -> anyhow::Result<()> {
    match o {
        Output::Input(Input::Pass(rec)) | Output::Input(Input::Work(rec, _)) => ctx.emit(&rec)?,
        Output::Input(Input::Fail(rec, kind, msg, line)) => {
            let mut e = ctx.error(kind, msg);
            if let Some(l) = line {
                e = e.at_line(l);
            }
            ctx.fail(rec, e)?;
        }
        Output::Done(mut rec, Ok(facet)) => {
            let action = facet.get("action").and_then(Value::as_str).unwrap_or("");
            if plan::DIFFERS.contains(&action) {
                ctx.merge(filter::status::Status::No);
            }
            rec.set(FACET, Value::Object(facet));
            ctx.emit(&rec)?;
        }
        Output::Done(mut rec, Err(e)) => {
            rec.set(FACET, serde_json::json!({"action": "failed"}));
            let err = match &e {
                LoadError::Http(h) => filter::ErrorFacet::classified(ctx.tool(), h),
                _ => ctx.error(e.kind(), e.to_string()),
            };
            ctx.fail(rec, err)?;
        }
    }
    Ok(())
}
