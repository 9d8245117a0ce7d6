//! imginfo-parse: what `qemu-img info` says about images, as JSON Lines
//! records with an `info` facet, from qemu-img's output of any QEMU version
//! (JSON or human text) or by running qemu-img itself (`--qemu`).

pub mod check;
pub mod human;
pub mod info;
pub mod input;
pub mod local;
pub mod oslo;
pub mod qemu;
pub mod qjson;
mod remote;
pub mod source;

use anyhow::Context;
use clap::Parser;
use filter::cli::{Ctx, SharedArgs, Tool};
use filter::status::Status;
use filter::{ErrorKind, Record};
use formats::{self, FormatError};
use human::HumanImage;
use info::Source;
use input::{Doc, DocReader, InputMode};
use local::with_oslo;
use qjson::Node;
use serde_json::{Map, Value};
use std::ffi::OsString;
use std::io;
use std::path::PathBuf;
use std::time::Duration;
use system::exec::ExecError;
use system::files::{self, Accept};

/// The facet this tool owns.
pub const FACET: &str = "info";
/// The facet `--check` adds.
pub const CHECK: &str = "check";
/// The tool's name, for error facets built outside lib.rs.
pub const NAME: &str = <Cli as Tool>::NAME;

const AFTER_HELP: &str = "\
Input: FILE arguments (or records with a \"path\" on stdin) are images: their
headers are read natively (nothing is spawned, no backing file, data file or
extent is ever opened), or with --qemu through `qemu-img info --output=json`.
A FILE may be a stream (-, /dev/stdin, a FIFO, <(...)): it is read for real up
to 16 MiB and probed from those bytes; what was not read (a longer stream's
end, a header past the bound) is never judged: --check fails (not_read).
Without FILEs, stdin may also hold qemu-img info output, detected without
flags: a JSON object, a --backing-chain array, several concatenated documents,
or the human text of any QEMU version (one record per image).
Empty stdin: no records, exit 0; with --check, nothing was judged: an
empty_input error record (exit 2), never a pass. Flags that do nothing in the
chosen mode (--summary without --from-glance, --cpu-limit without --qemu...)
are usage errors.

Output: one JSON line per image: {\"info\": {...}} (other keys of an input
record are kept). info holds qemu's JSON fields in snake_case: filename,
format, glance_disk_format, virtual_size, actual_size, cluster_size,
encrypted, dirty_flag, backing_filename, full_backing_filename,
backing_filename_format, backing_chain_depth, snapshots[], format_specific,
children[], plus source (native|qemu_json|qemu_human), detected_formats,
iso, partition_table, header (native), approximate (human sizes rounded by
qemu), non_utf8 and ambiguous. With --check: check {acceptable, failures:
[{check, reason}]}, checks backing_file, data_file, unknown_features,
version, corrupt, legacy_aes, create_type, extents, banned, format_mismatch,
require_format, multiple_formats, virtual_size, not_read, not_probed,
ambiguous, info; and check.oslo {acceptable, format, failures} for a file or
stream (natively or with --qemu): the verdict of oslo.utils' format inspector (what Nova and Glance run)
on the same bytes, as information (it changes neither acceptable nor the exit
status).
See `man imginfo-parse`.

Examples:
  imginfo-parse --check --expect-format qcow2 --max-virtual-size 20G *.img
  qemu-img info --output=json --backing-chain top.qcow2 | imginfo-parse
  qemu-img info disk.img | imginfo-parse | jq .info.virtual_size

Exit status: 0 all fine, 1 an image is not acceptable or was not judged
(--check: not probed, not read), 2 an error, 128+N stopped by signal N
(130 SIGINT, 143 SIGTERM). A closed stdout (| head -1) ends it with 0.";

/// Command-line arguments.
#[derive(Debug, Parser)]
#[command(
    about = "What qemu-img info says about images, as JSON Lines: read natively, by qemu-img, \
or from its output (any QEMU version)",
    long_about = "What `qemu-img info` says about images, as JSON Lines records with an \
`info` facet, one per image, for jq and the other image tools. Image files are read \
natively from their headers (qemu-img's answer, without spawning it or opening any other \
file), or with --qemu by qemu-img itself (no shell, C locale, time, CPU and memory \
limits). qemu-img's own output, JSON or human text of any QEMU version, is parsed from \
stdin. --check adds the acceptance verdict Cinder, Nova and Glance apply to uploads.",
    after_help = "Run with --help for input, output and examples.",
    after_long_help = AFTER_HELP
)]
pub struct Cli {
    /// Images to inspect, read natively (without FILEs, stdin is read)
    #[arg(value_name = "FILE", value_parser = clap::value_parser!(PathBuf))]
    pub files: Vec<PathBuf>,

    /// Run `qemu-img info --output=json` on each FILE, or on the `path` of
    /// each record read from stdin, instead of reading headers natively
    #[arg(long)]
    pub qemu: bool,

    /// How to read stdin (without FILEs or --image-url): auto (from the first
    /// document; the default), json, or human
    #[arg(long, value_enum, value_name = "KIND")]
    pub input: Option<InputMode>,

    /// The image format claimed (qemu's names: raw, qcow2, vpc, vmdk,
    /// ...): the file is read as that format (with --qemu, passed as
    /// `qemu-img -f`), and detection still runs: info gains
    /// claimed_format, detected_format and detected_formats, and --check
    /// refuses bytes of another format (format_mismatch)
    #[arg(short = 'f', long = "format", value_name = "FMT")]
    pub format: Option<String>,

    /// Add the `check` facet: is the image acceptable as an upload (no
    /// backing or data file, known features, allowed format and size...)?
    /// Exit 1 when one is not
    #[arg(long)]
    pub check: bool,

    /// With --check: the format the image is claimed to be (Glance
    /// disk_format: qcow2, raw, vhd, vmdk, ploop, iso, ...; ami is exempt)
    #[arg(long, value_name = "FMT", requires = "check")]
    pub expect_format: Option<String>,

    /// With --check: the format the image must be, e.g. raw after a
    /// conversion
    #[arg(long, value_name = "FMT", requires = "check")]
    pub require_format: Option<String>,

    /// With --check: the largest acceptable virtual size (e.g. 20G)
    #[arg(long, value_name = "SIZE", value_parser = parse_size_arg, requires = "check")]
    pub max_virtual_size: Option<u64>,

    /// With --check: the image must fit a volume of SIZE, a whole number
    /// of GiB (e.g. 20G): its virtual size rounded up to whole GiB, as
    /// Cinder does, is at most that
    #[arg(long, value_name = "SIZE", value_parser = parse_volume_size,
          requires = "check", conflicts_with = "volume_size_gb")]
    pub volume_size: Option<u64>,

    /// The old spelling of --volume-size: N GiB as a bare number
    // Hidden, not an alias: a bare number here is GiB, in --volume-size
    // bytes (every SIZE flag takes the same syntax).
    #[arg(long, value_name = "N", requires = "check", hide = true)]
    pub volume_size_gb: Option<u64>,

    /// With --check: other formats a file may also match, e.g. iso,vpc
    /// (a hybrid ISO's own MBR or GPT needs none)
    #[arg(long, value_name = "LIST", value_delimiter = ',', requires = "check")]
    pub allow_multi: Vec<String>,

    /// With --check: accepted VMDK create types (empty: no VMDK at all;
    /// default monolithicSparse,streamOptimized)
    #[arg(long, value_name = "LIST", value_delimiter = ',')]
    pub vmdk_create_types: Option<Vec<String>>,

    /// With --check: formats refused outright (default qed)
    #[arg(long, value_name = "LIST", value_delimiter = ',')]
    pub banned_formats: Option<Vec<String>>,

    /// With --check: accept a backing file (data files and unknown features
    /// are still refused)
    #[arg(long, requires = "check")]
    pub allow_backing_file: bool,

    /// With --qemu: describe the whole backing chain, one record per image
    /// (the native reader never opens a backing file)
    #[arg(long, requires = "qemu")]
    pub backing_chain: bool,

    /// With --qemu: open images that another process holds (qemu-img -U)
    #[arg(short = 'U', long, requires = "qemu")]
    pub force_share: bool,

    /// The qemu-img program to run
    #[arg(
        long,
        value_name = "PATH",
        env = "QEMU_IMG",
        default_value = "qemu-img"
    )]
    pub qemu_img: OsString,

    /// With --qemu: kill qemu-img after this many seconds of wall-clock
    /// time; with --image-url or --from-glance: the HTTP timeout (default 60)
    #[arg(long, value_name = "SECONDS")]
    pub timeout: Option<u64>,

    /// With --qemu: CPU-time limit for qemu-img, seconds (0: none; default
    /// 30)
    #[arg(long, value_name = "SECONDS")]
    pub cpu_limit: Option<u64>,

    /// With --qemu: address-space limit for qemu-img (e.g. 1G; 0: none;
    /// default 1G)
    #[arg(long, value_name = "SIZE", value_parser = parse_size_arg)]
    pub memory_limit: Option<u64>,

    /// Probe an image over HTTP(S) with Range requests, reading only its
    /// headers (repeatable)
    // Not --url: that is the Glance endpoint in glance-dump and
    // glance-load (here --from-glance). Was --url.
    #[arg(long = "image-url", alias = "url", value_name = "URL",
          conflicts_with_all = ["files", "qemu"])]
    pub urls: Vec<String>,

    /// Probe the data of the Glance image records on stdin (glance-dump
    /// output) through this Glance with Range requests: `--check` then
    /// also flags data that is not the record's disk_format
    #[arg(long, value_name = "URL", conflicts_with_all = ["files", "qemu", "urls"])]
    pub from_glance: Option<String>,

    /// FILEs read natively at once (default: one per core), or with
    /// --from-glance, images probed at once (default 4); the records come
    /// in input order either way
    #[arg(long, value_name = "N",
          value_parser = clap::value_parser!(u16).range(1..=64))]
    pub jobs: Option<u16>,

    /// With --from-glance, end with a summary record: images, probed,
    /// acceptable, unacceptable, not_probed, errors, requests, bytes_read
    #[arg(long, requires = "from_glance")]
    pub summary: bool,

    #[command(flatten)]
    pub auth: openstack::args::AuthArgs,

    #[command(flatten)]
    pub shared: SharedArgs,
}

fn parse_size_arg(s: &str) -> Result<u64, String> {
    system::size::parse_size(s).map_err(|e| e.to_string())
}

/// `--volume-size`: a SIZE that is whole GiB (Cinder's volumes are), as
/// GiB.
fn parse_volume_size(s: &str) -> Result<u64, String> {
    const GIB: u64 = 1 << 30;
    let bytes = parse_size_arg(s)?;
    if bytes % GIB != 0 {
        return Err(format!(
            "{s:?} is not a whole number of GiB (a volume's size is; e.g. 20G)"
        ));
    }
    Ok(bytes / GIB)
}

impl Cli {
    /// The volume the image must fit, GiB: `--volume-size`, or its old
    /// spelling `--volume-size-gb` (clap lets only one be given).
    pub fn volume_size_gib(&self) -> Option<u64> {
        self.volume_size.or(self.volume_size_gb)
    }
}

impl Tool for Cli {
    const NAME: &'static str = "imginfo-parse";
    const MAN_EXTRA: &'static str = concat!(
        include_str!("../doc/imginfo-parse.extra.roff"),
        include_str!("../doc/upstream.roff"),
        include_str!("../doc/imginfo-parse.see-also.roff")
    );

    fn shared(&self) -> &SharedArgs {
        &self.shared
    }

    fn run(self, ctx: &mut Ctx) -> anyhow::Result<()> {
        run(self, ctx)
    }
}

struct Runner<'a> {
    ctx: &'a mut Ctx,
    cli: &'a Cli,
    policy: check::Policy,
    /// A human image held back until we know whether the next block is
    /// the next member of its `--backing-chain`.
    pending: Option<(HumanImage, Option<u64>)>,
    /// `--from-glance`: the Glance, and the audit's counts.
    glance: Option<openstack::glance::Glance>,
    audit: remote::Audit,
    /// `--qemu -f`: what native detection found, for the next image.
    detection: Option<Map<String, Value>>,
    /// `--check` on a file or stream read natively: oslo's verdict on its
    /// bytes (`check.oslo`), for the record about to be emitted.
    oslo: Option<Value>,
}

/// `--timeout`'s default, seconds.
const DEFAULT_TIMEOUT: u64 = 60;

/// A list flag's values (an empty value clears it), or its default.
fn list_or(given: Option<&[String]>, default: &[&str]) -> Vec<String> {
    match given {
        Some(v) => v.iter().filter(|t| !t.is_empty()).cloned().collect(),
        None => default.iter().map(|s| (*s).to_owned()).collect(),
    }
}

/// Flags that would do nothing in the chosen mode are usage errors, never
/// silently ignored. (clap's `requires` is waived when the required flag
/// conflicts with one given, so `--summary FILE` passed it.)
fn validate(cli: &Cli) -> anyhow::Result<()> {
    let glance = cli.from_glance.is_some();
    let http = glance || !cli.urls.is_empty();
    let stdin_docs = cli.files.is_empty() && cli.urls.is_empty();
    let only = |given: bool, flag: &str, needs: &str| {
        if given {
            Err(filter::cli::usage(format!(
                "{flag} does nothing without {needs}"
            )))
        } else {
            Ok(())
        }
    };
    only(!glance && cli.summary, "--summary", "--from-glance")?;
    only(
        !glance && (cli.files.is_empty() || cli.qemu) && cli.jobs.is_some(),
        "--jobs",
        "--from-glance or FILEs read natively",
    )?;
    only(
        !cli.qemu && cli.cpu_limit.is_some(),
        "--cpu-limit",
        "--qemu",
    )?;
    only(
        !cli.qemu && cli.memory_limit.is_some(),
        "--memory-limit",
        "--qemu",
    )?;
    only(!cli.qemu && cli.backing_chain, "--backing-chain", "--qemu")?;
    only(!cli.qemu && cli.force_share, "--force-share", "--qemu")?;
    only(
        !cli.qemu && !http && cli.timeout.is_some(),
        "--timeout",
        "--qemu, --image-url or --from-glance",
    )?;
    only(
        !stdin_docs && cli.input.is_some(),
        "--input",
        "documents on stdin (no FILE, no --image-url)",
    )?;
    for (given, flag) in [
        (cli.vmdk_create_types.is_some(), "--vmdk-create-types"),
        (cli.banned_formats.is_some(), "--banned-formats"),
    ] {
        only(!cli.check && given, flag, "--check")?;
    }
    let a = &cli.auth;
    for (given, flag) in [
        (a.token_file.is_some(), "--token-file"),
        (!a.headers.is_empty(), "--header"),
        (a.cacert.is_some(), "--cacert"),
    ] {
        only(!http && given, flag, "--image-url or --from-glance")?;
    }
    // The native probe reads qemu's formats only; a name it does not know
    // would give a record without a format. (qemu-img judges its own -f.)
    if let Some(f) = cli.format.as_deref().filter(|_| !cli.qemu) {
        let known = formats::known_formats();
        if !known.contains(&f) {
            return Err(filter::cli::usage(match f {
                "iso" | "mbr" | "gpt" | "partition" => format!(
                    "-f {f}: not a qemu format: qemu reads that layout as raw (-f raw; with \
                     --check, --expect-format iso checks an ISO)"
                ),
                _ => format!(
                    "-f {f}: not a format qemu probes (one of {})",
                    known.join(", ")
                ),
            }));
        }
    }
    Ok(())
}

fn run(cli: Cli, ctx: &mut Ctx) -> anyhow::Result<()> {
    validate(&cli)?;
    let policy = check::Policy {
        expect_format: cli.expect_format.clone(),
        require_format: cli.require_format.clone(),
        max_virtual_size: cli.max_virtual_size,
        volume_size_gb: cli.volume_size_gib(),
        allow_multi: cli.allow_multi.clone(),
        vmdk_create_types: list_or(
            cli.vmdk_create_types.as_deref(),
            &["monolithicSparse", "streamOptimized"],
        ),
        banned: list_or(cli.banned_formats.as_deref(), &["qed"]),
        allow_backing_file: cli.allow_backing_file,
    };
    let timeout = Duration::from_secs(cli.timeout.unwrap_or(DEFAULT_TIMEOUT));
    let glance = match &cli.from_glance {
        Some(url) => {
            let g = cli.auth.client(Some(url), "--from-glance", true, timeout)?;
            if let Err(e) = g.check_v2() {
                ctx.fail_on(g.base(), &e)?;
                return Ok(());
            }
            Some(g)
        }
        None => None,
    };
    let mut r = Runner {
        ctx,
        cli: &cli,
        policy,
        pending: None,
        glance,
        audit: remote::Audit::default(),
        detection: None,
        oslo: None,
    };
    if !cli.urls.is_empty() {
        for url in &cli.urls {
            let g = cli.auth.client(Some(url), "--image-url", true, timeout)?;
            let opts = remote_options(&cli);
            let job = remote::Job {
                opts: &opts,
                policy: &r.policy,
                glance: None,
            };
            let o = job.http(&g, "", url, Record::new());
            r.apply(o)?;
        }
        return Ok(());
    }
    if let Some(g) = r.glance.take() {
        return from_glance(r, &g);
    }
    if !cli.files.is_empty() {
        // Records in large writes, not one per image.
        r.ctx.hold_output();
        let jobs = cli.jobs.map_or_else(default_jobs, usize::from);
        if cli.qemu || jobs == 1 || cli.files.len() == 1 {
            for f in &cli.files {
                r.path_record(filter::record::record_for(f), f.clone())?;
            }
            return Ok(());
        }
        return local_files(r, jobs);
    }
    let stdin = io::BufReader::with_capacity(64 << 10, io::stdin().lock());
    let mut docs = DocReader::new(stdin, cli.input.unwrap_or(InputMode::Auto));
    let mut any = false;
    // Records in large writes, written out whenever the next document
    // would wait for input.
    r.ctx.hold_output();
    loop {
        if !docs.input_pending() {
            r.ctx.flush()?;
        }
        let Some(doc) = docs.next_doc().context("reading stdin")? else {
            break;
        };
        any = true;
        r.doc(doc)?;
    }
    r.flush_pending()?;
    if !any && cli.check {
        // Empty stdin is no records, as in every tool, except under
        // --check: a verdict was asked for and nothing was judged (the
        // `qemu-img info x | imginfo-parse --check && ...` whose qemu-img
        // printed nothing must not pass).
        let e = r.ctx.error(
            ErrorKind::EmptyInput,
            "nothing on stdin to judge: expected qemu-img info output (JSON or text) or records",
        );
        r.fail(Record::new(), e)?;
    }
    Ok(())
}

/// `--jobs`' default for FILEs: one per core (at most the flag's 64).
fn default_jobs() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get().min(64))
}

/// FILEs read natively on `jobs` threads, the records in input order (the
/// same bytes, exit status and messages as one thread gives).
fn local_files(mut r: Runner<'_>, jobs: usize) -> anyhow::Result<()> {
    let cli = r.cli;
    let policy = r.policy.clone();
    let opts = remote_options(cli);
    let job = local::Job {
        opts: &opts,
        policy: &policy,
    };
    // A few FILEs per hand-over: one image's probe takes tens of
    // microseconds, about what passing it between threads costs.
    let batch = (cli.files.len() / (jobs * 8)).clamp(1, 16);
    let inputs = cli.files.chunks(batch).map(Ok);
    // A record that needs nothing more from the runner is also turned
    // into text on the worker: serializing is a large share of the work,
    // and the runner's thread would otherwise do it all.
    let work = |files: &[PathBuf]| -> Vec<Ready> {
        files
            .iter()
            .map(|f| {
                let o = job.native(filter::record::record_for(f), f);
                if o.error.is_some() {
                    return Ready::Outcome(Box::new(o));
                }
                match serde_json::value::to_raw_value(&o.rec) {
                    Ok(text) => Ready::Text(text, o.unacceptable),
                    Err(_) => Ready::Outcome(Box::new(o)),
                }
            })
            .collect()
    };
    system::jobs::ordered(jobs, inputs, &work, &mut |ready| {
        for o in ready {
            match o {
                Ready::Outcome(o) => r.apply_local(*o)?,
                Ready::Text(text, unacceptable) => {
                    if unacceptable {
                        r.ctx.merge(Status::No);
                    }
                    r.ctx.emit(&*text)?;
                }
            }
        }
        Ok(())
    })
}

/// One FILE's result from a worker: its record as text already, or the
/// outcome for the runner (errors go through it: messages and kinds).
enum Ready {
    Text(Box<serde_json::value::RawValue>, bool),
    Outcome(Box<remote::Outcome>),
}

/// `--from-glance`: every record's image probed through `g`, `--jobs` at a
/// time, in input order; other documents as usual; the summary last.
fn from_glance(mut r: Runner<'_>, g: &openstack::glance::Glance) -> anyhow::Result<()> {
    let cli = r.cli;
    let policy = r.policy.clone();
    let opts = remote_options(cli);
    let job = remote::Job {
        opts: &opts,
        policy: &policy,
        glance: Some(g),
    };
    let mut docs = DocReader::new(io::stdin().lock(), cli.input.unwrap_or(InputMode::Auto));
    let inputs = std::iter::from_fn(|| docs.next_doc().context("reading stdin").transpose());
    let work = |doc: Doc| job.doc(doc);
    // The stream's length is not known: images done and the rate.
    let mut meter =
        system::progress::Progress::count("auditing Glance", "images", None, !cli.shared.quiet);
    system::jobs::ordered(
        usize::from(cli.jobs.unwrap_or(4)),
        inputs,
        &work,
        &mut |item| {
            match item {
                remote::Item::Probed(o) => {
                    r.apply(*o)?;
                    meter.add(1);
                }
                remote::Item::Other(doc) => r.doc(doc)?,
            }
            Ok(())
        },
    )?;
    drop(meter);
    r.flush_pending()?;
    if cli.summary {
        let mut rec = Record::new();
        rec.set("summary", serde_json::to_value(&r.audit)?);
        r.ctx.emit(&rec)?;
    }
    Ok(())
}

impl Runner<'_> {
    fn doc(&mut self, doc: Doc) -> io::Result<()> {
        match doc {
            Doc::Human {
                lines,
                blank_before,
            } => self.human(human::parse_block(&lines), blank_before),
            other => {
                self.flush_pending()?;
                match other {
                    Doc::Json { text, line } => match input::parse_json(&text, line) {
                        Ok(node) => self.json(node, line),
                        Err(bad) => {
                            let e = self
                                .ctx
                                .error(ErrorKind::BadJson, bad.message)
                                .at_line(bad.line);
                            self.fail(Record::new(), e)
                        }
                    },
                    Doc::Bad {
                        line,
                        kind,
                        message,
                    } => {
                        let e = self.ctx.error(kind, message).at_line(line);
                        self.fail(Record::new(), e)
                    }
                    Doc::Human { .. } => Ok(()),
                }
            }
        }
    }

    fn json(&mut self, value: Node<'_>, line: u64) -> io::Result<()> {
        match value {
            Node::Obj(m) if qjson::looks_like_qemu_info(&m) => {
                self.qemu_object(Record::new(), m, None, line)
            }
            Node::Obj(m) => {
                let mut rec = Record::from_map(qjson::into_map(m));
                if rec.has_error() {
                    // Upstream failures pass through; with --check they
                    // are not acceptable either.
                    if self.cli.check {
                        let msg = rec
                            .get(filter::record::ERROR)
                            .and_then(|e| e.get("message"))
                            .and_then(Value::as_str)
                            .unwrap_or("upstream error")
                            .to_owned();
                        rec.set(CHECK, check::no_info(&msg));
                        self.ctx.merge(Status::No);
                    }
                    return self.ctx.emit(&rec);
                }
                if rec.path().is_some() {
                    // On stdin, `-` cannot name the image: stdin carries
                    // the records.
                    return match filter::cli::record_input_path(&rec, true) {
                        Ok(p) => self.path_record(rec, p),
                        Err(why) => {
                            let e = self.ctx.error(ErrorKind::BadRecord, why);
                            self.fail(rec, e)
                        }
                    };
                }
                let msg = "not qemu-img info output (no `format`) and not a record with a `path`";
                let e = self.ctx.error(ErrorKind::BadRecord, msg).at_line(line);
                self.fail(rec, e)
            }
            Node::Arr(items) => self.chain(Record::new(), items, line),
            other => {
                let e = self
                    .ctx
                    .error(
                        ErrorKind::BadRecord,
                        format!(
                            "expected a JSON object or array, found {}",
                            other.json_type()
                        ),
                    )
                    .at_line(line);
                self.fail(Record::new(), e)
            }
        }
    }

    /// A `--backing-chain` array: one record per image, with its depth.
    /// `base` is the record the top image belongs to.
    fn chain(&mut self, base: Record, items: Vec<Node<'_>>, line: u64) -> io::Result<()> {
        if items.is_empty() {
            let e = self
                .ctx
                .error(ErrorKind::ParseError, "an empty --backing-chain array")
                .at_line(line);
            return self.fail(base, e);
        }
        for (depth, item) in items.into_iter().enumerate() {
            let rec = if depth == 0 {
                base.clone()
            } else {
                member_record(&item)
            };
            match item {
                Node::Obj(m) if qjson::looks_like_qemu_info(&m) => {
                    self.qemu_object(rec, m, Some(depth as u64), line)?
                }
                _ => {
                    let e = self
                        .ctx
                        .error(
                            ErrorKind::ParseError,
                            format!("backing chain element {depth} is not a qemu-img image object"),
                        )
                        .at_line(line);
                    self.fail(rec, e)?
                }
            }
        }
        Ok(())
    }

    fn qemu_object(
        &mut self,
        mut rec: Record,
        m: qjson::Obj<'_>,
        depth: Option<u64>,
        line: u64,
    ) -> io::Result<()> {
        // The native detection behind `--qemu -f`, for the top image.
        let detection = if depth.unwrap_or(0) == 0 {
            self.detection.take()
        } else {
            None
        };
        match qjson::convert(m) {
            Ok(mut info) => {
                if let Some(d) = depth {
                    info.push(("backing_chain_depth".into(), Node::U64(d)));
                }
                let detection = detection.unwrap_or_default().into_iter();
                info.extend(detection.map(|(k, v)| (k.into(), Node::Value(v))));
                let info = info::finish_entries(info, Some(Source::QemuJson));
                if self.cli.check || rec.get(FACET).is_some() {
                    rec.set(FACET, Node::Obj(info).into_value());
                    return self.emit_info(rec, None);
                }
                // Nothing to judge: the info is written as it is, never
                // built as a map.
                self.oslo = None;
                self.ctx.emit(&info::WithInfo {
                    rec: &rec,
                    info: &info,
                })
            }
            Err(msg) => {
                let e = self
                    .ctx
                    .error(ErrorKind::ParseError, format!("qemu-img JSON: {msg}"))
                    .at_line(line);
                self.fail(rec, e)
            }
        }
    }

    fn human(&mut self, img: HumanImage, blank_before: bool) -> io::Result<()> {
        let mut depth = None;
        if let Some((mut prev, prev_depth)) = self.pending.take() {
            let img_ok = img.info.contains_key("format");
            if blank_before && img_ok && prev.has_backing() && prev.ambiguous.is_empty() {
                let d = prev_depth.unwrap_or(0);
                depth = Some(d + 1);
                self.emit_human(prev, Some(d))?;
            } else {
                if !blank_before && !img_ok {
                    prev.ambiguous.push(format!(
                        "line {}: followed by an `image:` line without `file format:` (a name with a newline?)",
                        img.line
                    ));
                }
                self.emit_human(prev, prev_depth)?;
            }
        }
        self.pending = Some((img, depth));
        Ok(())
    }

    fn flush_pending(&mut self) -> io::Result<()> {
        match self.pending.take() {
            Some((img, depth)) => self.emit_human(img, depth),
            None => Ok(()),
        }
    }

    fn emit_human(&mut self, img: HumanImage, depth: Option<u64>) -> io::Result<()> {
        let mut rec = Record::new();
        let looks_like_info = img.info.contains_key("format")
            || img.info.contains_key("filename")
            || img.info.contains_key("virtual_size");
        if !looks_like_info {
            let e = self
                .ctx
                .error(
                    ErrorKind::ParseError,
                    "not qemu-img info output (no `image:` or `file format:` line)",
                )
                .at_line(img.line);
            return self.fail(rec, e);
        }
        let mut info = img.info;
        if let Some(d) = depth {
            info.insert("backing_chain_depth", d.into());
        }
        if !img.ambiguous.is_empty() {
            info.insert("ambiguous", Value::Bool(true));
        }
        let info = info::finish_fields(info.0, Some(Source::QemuHuman));
        if !self.cli.check && img.ambiguous.is_empty() && img.errors.is_empty() {
            // Nothing to judge: the info is written as it is, never
            // built as a map.
            self.oslo = None;
            return self.ctx.emit(&info::WithInfo {
                rec: &rec,
                info: &info,
            });
        }
        rec.set(FACET, Value::Object(human::Fields(info).into_map()));
        if !img.ambiguous.is_empty() {
            let e = self
                .ctx
                .error(
                    ErrorKind::AmbiguousHumanOutput,
                    format!(
                        "qemu-img's text output cannot be trusted here ({}); use `qemu-img info --output=json`",
                        img.ambiguous.join("; ")
                    ),
                )
                .at_line(img.line)
                .with("reasons", img.ambiguous);
            return self.fail(rec, e);
        }
        if !img.errors.is_empty() {
            let e = self
                .ctx
                .error(ErrorKind::ParseError, img.errors.join("; "))
                .at_line(img.line);
            return self.fail(rec, e);
        }
        self.emit_info(rec, None)
    }

    /// Emit a record that carries `info`, adding the verdict with --check;
    /// `not_read` says what the probe could not read (never a pass).
    fn emit_info(&mut self, mut rec: Record, not_read: Option<&str>) -> io::Result<()> {
        let oslo = self.oslo.take();
        if self.cli.check
            && let Some(info) = rec.get(FACET)
        {
            let mut verdict = check::check(info, &self.policy);
            if let Some(why) = not_read {
                check::add_failure(&mut verdict, "not_read", why);
            }
            with_oslo(&mut verdict, oslo);
            if verdict["acceptable"] != true {
                self.ctx.merge(Status::No);
            }
            rec.set(CHECK, verdict);
        }
        self.ctx.emit(&rec)
    }

    /// Emit an error record (with a failed verdict under --check).
    fn fail(&mut self, mut rec: Record, e: filter::ErrorFacet) -> io::Result<()> {
        let oslo = self.oslo.take();
        if self.cli.check {
            let mut verdict = match rec.get(FACET) {
                Some(info) => check::check(info, &self.policy),
                None => check::no_info(&e.message),
            };
            with_oslo(&mut verdict, oslo);
            rec.set(CHECK, verdict);
        }
        self.ctx.fail(rec, e)
    }

    /// A record naming a local file: read it natively, or with qemu-img.
    fn path_record(&mut self, rec: Record, path: PathBuf) -> io::Result<()> {
        if self.cli.qemu {
            self.qemu_record(rec, path)
        } else {
            self.native_record(rec, path)
        }
    }

    /// Read the image's headers ourselves (see [`local::Job::native`]).
    fn native_record(&mut self, rec: Record, path: PathBuf) -> io::Result<()> {
        let opts = remote_options(self.cli);
        let job = local::Job {
            opts: &opts,
            policy: &self.policy,
        };
        let o = job.native(rec, &path);
        self.apply_local(o)
    }

    /// Apply a local image's outcome, in input order: its verdict is in
    /// the record already (oslo's beside ours).
    fn apply_local(&mut self, o: remote::Outcome) -> io::Result<()> {
        if o.unacceptable {
            self.ctx.merge(Status::No);
        }
        match o.error {
            Some(e) => self.ctx.fail(o.rec, e),
            None => self.ctx.emit(&o.rec),
        }
    }

    /// Apply what probing one image over HTTP came to, in input order.
    fn apply(&mut self, o: remote::Outcome) -> io::Result<()> {
        self.audit.add(&o.delta);
        if o.unacceptable {
            self.ctx.merge(Status::No);
        }
        match o.error {
            Some(e) => self.fail(o.rec, e),
            None => self.ctx.emit(&o.rec),
        }
    }

    /// `--qemu`: run qemu-img on a record's `path`, a regular file: a
    /// stream cannot be handed to qemu-img safely (it would read it
    /// again, or probe what it was given on another open), so it is
    /// refused.
    fn qemu_record(&mut self, rec: Record, path: PathBuf) -> io::Result<()> {
        if files::is_dash(&path) {
            let e = self.ctx.error(
                ErrorKind::NotRegular,
                "stdin cannot be handed to qemu-img; name the file, or probe it natively (without --qemu)",
            );
            return self.fail(rec, e);
        }
        let input = match files::open_input(&path, Accept::Regular) {
            Ok(i) => i,
            Err(err) => {
                let kind = ErrorKind::from_io(&err);
                let mut message = err.to_string();
                if kind == ErrorKind::NotRegular && err.kind() != std::io::ErrorKind::IsADirectory {
                    message.push_str(" (qemu-img cannot be given a stream safely; probe it natively, without --qemu)");
                }
                let e = self.ctx.error(kind, message);
                return self.fail(rec, e);
            }
        };
        let cli = self.cli;
        let bytes = source::FileBytes::from_input(input);
        // oslo's verdict on the file qemu-img is about to read (the first
        // record of a chain carries it: the image named).
        if cli.check {
            self.oslo = bytes.as_ref().ok().map(|src| oslo::verdict(src, None));
        }
        // `-f` is a claim that qemu-img does not check: detection still
        // runs, natively, so --check sees bytes of another format.
        self.detection = cli.format.as_ref().map(|f| {
            let mut m = Map::new();
            m.insert("claimed_format".into(), f.as_str().into());
            let (name, _) = files::name_fields(path.as_os_str());
            let found = bytes
                .as_ref()
                .map_err(|e| FormatError::Io(std::io::Error::new(e.kind(), e.to_string())))
                .and_then(|src| formats::probe(src, &name, None));
            if let Ok(p) = found {
                m.insert("detected_format".into(), p.format.as_str().into());
                let detected = p.detected.iter().map(|f| Value::from(f.as_str()));
                m.insert("detected_formats".into(), detected.collect());
                // The layouts, serialized here at the edge.
                if let Some(Ok(iso)) = p.iso.as_ref().map(serde_json::to_value) {
                    m.insert("iso".into(), iso);
                }
                if let Some(Ok(t)) = p.partition_table.as_ref().map(serde_json::to_value) {
                    m.insert("partition_table".into(), t);
                }
            }
            m
        });
        let opts = qemu::QemuOpts {
            program: cli.qemu_img.clone(),
            format: cli.format.clone(),
            backing_chain: cli.backing_chain,
            force_share: cli.force_share,
            timeout: Duration::from_secs(cli.timeout.unwrap_or(DEFAULT_TIMEOUT).max(1)),
            cpu_limit: Some(cli.cpu_limit.unwrap_or(30)).filter(|&c| c > 0),
            address_space: Some(cli.memory_limit.unwrap_or(1 << 30)).filter(|&m| m > 0),
        };
        let out = match qemu::info(&opts, &path) {
            Ok(out) => out,
            Err(err) => {
                self.detection = None;
                let e = exec_error(self.ctx, &err);
                return self.fail(rec, e);
            }
        };
        match qjson::parse(&out) {
            Ok(Node::Obj(m)) => self.qemu_object(rec, m, None, 0),
            Ok(Node::Arr(items)) => self.chain(rec, items, 0),
            Ok(_) | Err(_) => {
                self.detection = None;
                let e = self.ctx.error(
                    ErrorKind::QemuImgFailed,
                    "qemu-img printed something that is not its JSON image description",
                );
                self.fail(rec, e)
            }
        }
    }
}

/// What a remote probe needs of the command line.
fn remote_options(cli: &Cli) -> remote::Options {
    remote::Options {
        check: cli.check,
        expect_format: cli.expect_format.clone(),
        format: cli.format.clone(),
    }
}

/// The record of a backing-chain member below the top: its `path` when
/// qemu names a plain local file.
fn member_record(item: &Node<'_>) -> Record {
    match item.get("filename").and_then(Node::as_str) {
        Some(f) if qemu::is_local_path(f) => Record::from_path(f),
        _ => Record::new(),
    }
}

fn exec_error(ctx: &Ctx, err: &ExecError) -> filter::ErrorFacet {
    let kind = match err {
        ExecError::NotFound { .. } => {
            return ctx.error(
                ErrorKind::QemuImgMissing,
                format!(
                    "{err}: install qemu-utils (Debian, Ubuntu) or qemu-img (Fedora, RHEL), \
or name the program with --qemu-img or QEMU_IMG"
                ),
            );
        }
        ExecError::Timeout { .. } => ErrorKind::Timeout,
        _ => ErrorKind::QemuImgFailed,
    };
    let mut e = ctx.error(kind, err.to_string());
    if let Some(c) = err.exit_code() {
        e = e.with("exit_status", c);
    }
    if let Some(s) = err.signal() {
        e = e.with("signal", s);
    }
    if let Some(t) = err.stderr_tail() {
        e = e.with("stderr", t);
    }
    e
}
