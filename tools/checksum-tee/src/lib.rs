//! checksum-tee: every digest Glance and Nova use, in one pass over a
//! stream, each on its own thread; byte-exact pass-through (tee), atomic
//! files (sink), and re-verification of files named by records.

pub mod caches;
pub mod fault;
pub mod pump;

use anyhow::{Context, bail};
use clap::Parser;
use filter::cli::{Ctx, Interrupted, SharedArgs, Tool};
use filter::status::Status;
use filter::{ErrorKind, Record};
use pump::{Expected, Fault, Outcome, PumpError, Sink, verdict};
use serde_json::{Map, Value};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use system::files::{self, Accept, FileId};
use system::hash::{Algorithm, sha1_hex};

/// The facet this tool owns.
pub const FACET: &str = "checksums";

const AFTER_HELP: &str = "\
Modes:
  tee     producer | checksum-tee [-a md5,sha1,sha512] | consumer
          bytes pass through unchanged; the report goes to --report (stderr)
  sink    checksum-tee -o FILE [-o FILE...] < data
          each FILE written atomically (temp, fsync, verify, rename); the
          report record goes to stdout. Never replaced: a device, FIFO,
          directory or symlink (even with --force), or the input itself.
          -o - is stdout: the bytes go there (as --tee), the report to --report
  verify  checksum-tee --verify FILE...   or records with \"path\" on stdin
          expected values from --expect or the record's Glance \"image\" facet;
          a FIFO, pipe or device is read front to back (- is stdin), a
          directory is refused (not_regular); nothing blocks in open()
  cache   checksum-tee --glance-cache DIR | --nova-base DIR --image-id ID
          --expect ALG:HEX --expect-size N < data: commits only what matches
          both; without them refused, unless --unverified (UNSAFE)

Empty stdin: in verify mode, no records, no output, exit 0; in the data
modes an empty stream is data: 0 bytes hashed (and committed if expected).
Flags that do nothing in the chosen mode are usage errors (exit 2).

The report is the \"checksums\" facet: bytes, one hex digest per algorithm,
os_hash_algo/os_hash_value (Glance's multihash), nova_cache_name (with
--image-id), expected, verified (true, false, or null when there was nothing
to compare), mismatch[], state (passed, committed, refused, invalid, aborted,
verified_in_place), final_path.

Exit status: 0 fine, 1 a digest or size did not match, 2 an error, 75 a
cache entry busy (try again),
128+N stopped by signal N (nothing committed).";

/// Command-line arguments.
#[derive(Debug, Parser)]
#[command(
    about = "Every image digest in one pass: tee, atomic sink, or verify",
    long_about = "Compute MD5, SHA-1 and the SHA-2/SHA-3 family in one pass, each on its own \
thread, while passing the bytes through (tee), writing them atomically to files (sink), or \
re-reading files named by records (verify); compare with expected values; report one JSON \
record.",
    after_help = "Run with --help for modes, the report and exit statuses.",
    after_long_help = AFTER_HELP
)]
pub struct Cli {
    /// With --verify: files to re-read (without FILEs, records are read
    /// from stdin)
    #[arg(value_name = "FILE", requires = "verify", value_parser = clap::value_parser!(PathBuf))]
    pub files: Vec<PathBuf>,

    /// Digests to compute (md5, sha1, sha224, sha256, sha384, sha512,
    /// sha3_224, sha3_256, sha3_384, sha3_512)
    #[arg(
        short,
        long = "algorithms",
        value_name = "LIST",
        value_delimiter = ',',
        default_value = "md5,sha1,sha512"
    )]
    pub algorithms: Vec<Algorithm>,

    /// Glance's multihash algorithm, reported as os_hash_algo/os_hash_value
    /// and added to the digests computed; default sha512 with
    /// --glance-cache, otherwise only computed when in -a (exactly the -a
    /// digests are computed unless this is given)
    #[arg(long, value_name = "ALG")]
    pub os_hash_algo: Option<Algorithm>,

    /// Write the stream to FILE atomically (repeatable); stdout then carries
    /// the report record. `-` is stdout: the bytes go there, as with --tee,
    /// and the report to --report
    #[arg(short, long = "output", value_name = "FILE", value_parser = clap::value_parser!(PathBuf))]
    pub outputs: Vec<PathBuf>,

    /// Replace an existing output file (it is never replaced otherwise)
    #[arg(long)]
    pub force: bool,

    /// With -o: also pass the bytes to stdout (the report then goes to
    /// --report)
    #[arg(long)]
    pub tee: bool,

    /// Where the report goes when stdout carries data (default: stderr);
    /// a regular file is replaced atomically, a FIFO or device written to
    #[arg(long, value_name = "FILE", value_parser = clap::value_parser!(PathBuf))]
    pub report: Option<PathBuf>,

    /// An expected digest, ALG:HEX (repeatable)
    #[arg(long = "expect", value_name = "ALG:HEX", value_parser = parse_expect)]
    pub expect: Vec<(Algorithm, String)>,

    /// The expected size (e.g. 1073741824, 1G): a short stream fails, and
    /// reading stops once past it (a size mismatch)
    #[arg(long, value_name = "SIZE", value_parser = parse_size_arg)]
    pub expect_size: Option<u64>,

    /// Re-read FILEs (or records' paths) and compare with expected values
    #[arg(long)]
    pub verify: bool,

    /// The image id: reports Nova's cache name for it (SHA-1 of the id)
    #[arg(long, value_name = "ID")]
    pub image_id: Option<String>,

    /// When stdout closes early, keep reading to finish the digests and
    /// commit the files (default: stop and commit nothing)
    #[arg(long)]
    pub drain: bool,

    /// With --tee: a failing output file, or a cache that refuses or fails
    /// (entry busy, already cached, unusable, unverified), does not stop the
    /// bytes: every byte reaches stdout (Glance's behaviour: the image is
    /// served uncached); the report says the copy failed or was refused
    #[arg(long)]
    pub best_effort_cache: bool,

    /// Fill the Glance image cache CACHE_DIR (image_cache_dir) with image
    /// --image-id: incomplete/ID, then ID, or invalid/ID on any failure
    #[arg(long, value_name = "CACHE_DIR", requires = "image_id", conflicts_with_all = ["outputs", "verify", "nova_base"])]
    pub glance_cache: Option<PathBuf>,

    /// With --glance-cache: the cache's metadata driver
    #[arg(
        long,
        value_enum,
        default_value = "auto",
        value_name = "DRIVER",
        requires = "glance_cache"
    )]
    pub cache_driver: caches::Driver,

    /// With --glance-cache: write no metadata (Glance never prunes such a
    /// file)
    #[arg(long, requires = "glance_cache")]
    pub no_metadata: bool,

    /// Fill Nova's _base under INSTANCES_PATH with image --image-id, as
    /// _base/<sha1(id)>, under Nova's lock
    #[arg(long, value_name = "INSTANCES_PATH", requires = "image_id", conflicts_with_all = ["outputs", "verify"])]
    pub nova_base: Option<PathBuf>,

    /// With --glance-cache or --nova-base: commit bytes that were not
    /// verified against both a digest (--expect) and a size (--expect-size).
    /// UNSAFE: a truncated or corrupted download is then cached and served
    /// to every later reader; without this flag such a fill is refused
    #[arg(long)]
    pub unverified: bool,

    /// With --nova-base: also write the legacy _base/<name>.info side file
    #[arg(long, requires = "nova_base")]
    pub sidecar: bool,

    /// With --nova-base: formats accepted besides raw (Nova expects raw
    /// base files unless force_raw_images is off)
    #[arg(
        long,
        value_name = "LIST",
        value_delimiter = ',',
        requires = "nova_base"
    )]
    pub allow_format: Vec<String>,

    /// With --nova-base: how long to wait for Nova's lock
    #[arg(
        long,
        value_name = "SECONDS",
        default_value_t = 30,
        requires = "nova_base"
    )]
    pub lock_timeout: u64,

    #[command(flatten)]
    pub shared: SharedArgs,
}

fn parse_size_arg(s: &str) -> Result<u64, String> {
    system::size::parse_size(s).map_err(|e| e.to_string())
}

fn parse_expect(s: &str) -> Result<(Algorithm, String), String> {
    let (alg, hex) = s.split_once(':').ok_or_else(|| {
        format!("{s:?}: expected ALG:HEX, e.g. md5:d41d8cd98f00b204e9800998ecf8427e")
    })?;
    let alg: Algorithm = alg.parse()?;
    let hex = hex.trim().to_ascii_lowercase();
    if hex.len() != alg.hex_len() || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(format!(
            "{s:?}: a {alg} digest is {} hex digits",
            alg.hex_len()
        ));
    }
    Ok((alg, hex))
}

impl Tool for Cli {
    const NAME: &'static str = "checksum-tee";
    const MAN_EXTRA: &'static str = include_str!("../doc/checksum-tee.extra.roff");

    fn shared(&self) -> &SharedArgs {
        &self.shared
    }

    fn run(mut self, ctx: &mut Ctx) -> anyhow::Result<()> {
        system::signal::install();
        self.check_usage()?;
        if self.verify {
            verify(&self, ctx)
        } else if self.glance_cache.is_some() || self.nova_base.is_some() {
            cache_fill(&self, ctx)
        } else if self.outputs.is_empty() {
            tee(&self, ctx)
        } else {
            sink(&self, ctx)
        }
    }
}

impl Cli {
    /// Refuse flags that would do nothing in the chosen mode (a usage
    /// error, never silently ignored), and turn `-o -` into --tee.
    fn check_usage(&mut self) -> anyhow::Result<()> {
        use filter::cli::usage;
        let cache = self.glance_cache.is_some() || self.nova_base.is_some();
        let dashes = self.outputs.iter().filter(|p| files::is_dash(p)).count();
        if self.verify {
            for (set, flag) in [
                (!self.outputs.is_empty(), "-o"),
                (self.tee, "--tee"),
                (self.force, "--force"),
                (self.drain, "--drain"),
                (self.best_effort_cache, "--best-effort-cache"),
                (self.report.is_some(), "--report"),
                (self.unverified, "--unverified"),
            ] {
                if set {
                    return Err(usage(format!(
                        "{flag} does nothing with --verify, which re-reads files and writes records"
                    )));
                }
            }
            if self.files.iter().filter(|p| files::is_dash(p)).count() > 1 {
                return Err(usage("- (stdin) can be read once"));
            }
            return Ok(());
        }
        if dashes > 1 || (dashes == 1 && self.tee) {
            return Err(usage(
                "-o - and --tee both name stdout, which carries the bytes once",
            ));
        }
        if self.tee && self.outputs.is_empty() && !cache {
            return Err(usage(
                "--tee does nothing without -o FILE or a cache: the bytes already go to stdout",
            ));
        }
        if dashes == 1 {
            self.outputs.retain(|p| !files::is_dash(p));
            self.tee = true;
        }
        // Stdout carries the bytes: plain tee mode, or --tee.
        let data_on_stdout = self.tee || (self.outputs.is_empty() && !cache);
        if self.force && self.outputs.is_empty() {
            return Err(usage(
                "--force does nothing without -o FILE (a cache entry is never replaced)",
            ));
        }
        if !data_on_stdout {
            for (set, flag) in [(self.report.is_some(), "--report"), (self.drain, "--drain")] {
                if set {
                    return Err(usage(format!(
                        "{flag} does nothing unless stdout carries the bytes (--tee): the report \
is the record on stdout"
                    )));
                }
            }
        }
        if self.report.as_deref().is_some_and(files::is_dash) {
            return Err(usage(
                "--report - would mix the report into the data on stdout; name a file",
            ));
        }
        if self.best_effort_cache && !(self.tee && (cache || !self.outputs.is_empty())) {
            return Err(usage(
                "--best-effort-cache needs --tee and -o FILE or a cache: it keeps the bytes \
flowing to stdout when the copy fails",
            ));
        }
        if self.unverified {
            if !cache {
                return Err(usage(
                    "--unverified does nothing without --glance-cache or --nova-base",
                ));
            }
            if !self.expect.is_empty() && self.expect_size.is_some() {
                return Err(usage(
                    "--unverified does nothing with both --expect and --expect-size: the fill \
is verified",
                ));
            }
        }
        Ok(())
    }

    fn algorithms(&self, extra: &[Algorithm]) -> Vec<Algorithm> {
        let mut v = self.algorithms.clone();
        v.extend(self.os_hash());
        v.extend(self.expect.iter().map(|(a, _)| *a));
        v.extend_from_slice(extra);
        v.sort();
        v.dedup();
        v
    }

    /// The multihash algorithm added to -a: asked for, or Glance's default
    /// in Glance's mode.
    fn os_hash(&self) -> Option<Algorithm> {
        self.os_hash_algo
            .or(self.glance_cache.is_some().then_some(Algorithm::Sha512))
    }

    /// The algorithm reported as os_hash_algo when its digest was
    /// computed anyway.
    fn os_hash_reported(&self) -> Algorithm {
        self.os_hash().unwrap_or(Algorithm::Sha512)
    }

    /// Where reading stops: past the expected size (with
    /// --best-effort-cache only the copy stops; stdout gets every byte).
    fn read_limit(&self) -> Option<u64> {
        self.expect_size
    }

    /// Why a cache fill may not start: it would commit bytes checked
    /// against less than a digest and a size (Glance's own fill checks
    /// both), and the operator did not say --unverified.
    fn unverified_refusal(&self) -> Option<String> {
        let missing: Vec<&str> = [
            (self.expect.is_empty(), "a digest (--expect ALG:HEX)"),
            (self.expect_size.is_none(), "a size (--expect-size)"),
        ]
        .into_iter()
        .filter_map(|(m, what)| m.then_some(what))
        .collect();
        if missing.is_empty() || self.unverified {
            return None;
        }
        Some(format!(
            "a cache fill commits only verified bytes, and {} {} missing (take them from \
Glance's image record: checksum or os_hash_value, and size); --unverified commits unchecked \
bytes (unsafe)",
            missing.join(" and "),
            if missing.len() == 1 { "is" } else { "are" }
        ))
    }

    /// The progress meter of one pass over `label`'s bytes (on a terminal,
    /// unless -q): of the size expected, or else of stdin's when it is a
    /// file (in --verify, the caller passes the file's).
    fn meter(&self, label: &str, total: Option<u64>) -> system::progress::Progress {
        let total = total.or_else(|| if self.verify { None } else { stdin_len() });
        system::progress::Progress::new(label, total, !self.shared.quiet)
    }

    fn expected(&self) -> Expected {
        Expected {
            size: self.expect_size,
            digests: self.expect.clone(),
        }
    }
}

/// The `checksums` facet for an outcome.
fn facet(cli: &Cli, out: &Outcome, expected: &Expected, state: &str) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("bytes".into(), out.bytes.into());
    // Past the expected size, the digests are of a prefix: left out.
    let digests: &[(Algorithm, String)] = if out.overrun { &[] } else { &out.digests };
    for (alg, hex) in digests {
        m.insert(alg.name().into(), hex.clone().into());
    }
    let os = cli.os_hash_reported();
    if let Some((_, v)) = digests.iter().find(|(a, _)| *a == os) {
        m.insert("os_hash_algo".into(), os.name().into());
        m.insert("os_hash_value".into(), v.clone().into());
    }
    if let Some(id) = &cli.image_id {
        m.insert("image_id".into(), id.clone().into());
        m.insert("nova_cache_name".into(), sha1_hex(id).into());
    }
    if !expected.is_empty() {
        let mut e = Map::new();
        if let Some(s) = expected.size {
            e.insert("size".into(), s.into());
        }
        for (a, h) in &expected.digests {
            e.insert(a.name().into(), h.clone().into());
        }
        m.insert("expected".into(), Value::Object(e));
    }
    let (verified, mismatch) = verdict(expected, out);
    m.insert("verified".into(), verified.map_or(Value::Null, Value::Bool));
    m.insert(
        "mismatch".into(),
        Value::Array(mismatch.into_iter().map(Value::from).collect()),
    );
    m.insert("state".into(), state.into());
    m
}

fn stop_on_signal(out: &Outcome) -> anyhow::Result<()> {
    if let Some(sig) = out.signal {
        return Err(Interrupted(sig).into());
    }
    Ok(())
}

/// Tee: stdin to stdout, report to --report or stderr.
fn tee(cli: &Cli, ctx: &mut Ctx) -> anyhow::Result<()> {
    let expected = cli.expected();
    check_report_target(cli)?;
    let stdin = files::Stoppable(io::stdin().lock());
    let stdout = io::stdout().lock();
    let out = pump::pump(
        stdin,
        Some(Box::new(stdout)),
        Vec::new(),
        &cli.algorithms(&[]),
        cli.drain,
        false,
        cli.read_limit(),
        // Tee sits inside a pipeline whose ends show their own progress.
        &mut system::progress::Progress::off(),
    );
    let state = if out.complete() { "passed" } else { "aborted" };
    let mut rec = Record::new();
    rec.set(FACET, Value::Object(facet(cli, &out, &expected, state)));
    let status = report_status(ctx, &mut rec, &out, &expected);
    write_report(cli, &rec)?;
    ctx.merge(status);
    stop_on_signal(&out)
}

/// Sink: stdin to files, committed only when everything verified.
fn sink(cli: &Cli, ctx: &mut Ctx) -> anyhow::Result<()> {
    let expected = cli.expected();
    check_report_target(cli)?;
    let mut sinks = Vec::new();
    // `checksum-tee -o x < x` would read what it writes.
    let inputs: Vec<FileId> = FileId::of_stdio(0).into_iter().collect();
    for p in &cli.outputs {
        match files::check_output(p, cli.force, &inputs).and_then(|()| Sink::create(p, cli.force)) {
            Ok(s) => sinks.push(s),
            Err(e) => {
                // A read-only, full or forbidden target is the record's
                // failure (before any byte is read), not a usage error.
                let msg = format!("cannot write {}: {}", p.display(), io_message(&e));
                ctx.warn(&msg);
                let mut rec = Record::new();
                rec.set_error(
                    &ctx.error(
                        if e.kind() == io::ErrorKind::AlreadyExists {
                            ErrorKind::AlreadyExists
                        } else {
                            ErrorKind::from_io(&e)
                        },
                        msg,
                    )
                    .with("output", files::name_fields(p.as_os_str()).0),
                );
                emit_report(cli, ctx, &rec)?;
                ctx.merge(Status::Error);
                // The temporaries already made are removed on drop.
                return Ok(());
            }
        }
    }
    let stdin = files::Stoppable(io::stdin().lock());
    let passthrough: Option<Box<dyn Write>> = if cli.tee {
        Some(Box::new(io::stdout().lock()))
    } else {
        None
    };
    let mut out = pump::pump(
        stdin,
        passthrough,
        sinks,
        &cli.algorithms(&[]),
        cli.drain,
        cli.best_effort_cache,
        cli.read_limit(),
        &mut cli.meter(
            &cli.outputs
                .first()
                .map(|p| p.display().to_string())
                .unwrap_or_default(),
            expected.size,
        ),
    );
    // With --best-effort-cache a failed copy did not stop the stream; it
    // still failed.
    let copy_errors: Vec<PumpError> = out
        .sinks
        .iter()
        .filter_map(|s| s.error.clone())
        .map(PumpError::Output)
        .filter(|e| !out.errors.contains(e))
        .collect();
    out.errors.extend(copy_errors);
    let (verified, _) = verdict(&expected, &out);
    let short = expected.size.is_some_and(|s| out.bytes < s);
    let commit = out.complete() && verified != Some(false) && !short;
    let mut finals = Vec::new();
    let mut commit_error = None;
    for s in std::mem::take(&mut out.sinks) {
        if commit && s.error.is_none() {
            match s.commit() {
                Ok(p) => finals.push(p),
                Err(e) => commit_error = Some(e),
            }
        } else {
            let _ = s.abort();
        }
    }
    let state = match (commit, &commit_error) {
        (true, None) if finals.len() == cli.outputs.len() => "committed",
        _ if verified == Some(false) && (out.complete() || out.overrun) && !short => "invalid",
        _ => "aborted",
    };
    let mut rec = Record::new();
    if let Some(first) = finals.first() {
        filter::record::set_path(&mut rec, first);
    }
    let mut f = facet(cli, &out, &expected, state);
    if !finals.is_empty() {
        f.insert(
            "final_path".into(),
            Value::Array(
                finals
                    .iter()
                    .map(|p| p.to_string_lossy().into_owned().into())
                    .collect(),
            ),
        );
    }
    rec.set(FACET, Value::Object(f));
    if let Some(e) = commit_error {
        out.errors
            .push(PumpError::Output(Fault::io("commit failed", &e)));
    }
    let status = report_status(ctx, &mut rec, &out, &expected);
    emit_report(cli, ctx, &rec)?;
    ctx.merge(status);
    stop_on_signal(&out)
}

/// Which cache is being filled.
enum Fill {
    Glance(caches::GlanceFill),
    Nova(caches::NovaFill),
}

/// Fill the Glance or Nova cache from stdin.
fn cache_fill(cli: &Cli, ctx: &mut Ctx) -> anyhow::Result<()> {
    let expected = cli.expected();
    check_report_target(cli)?;
    let id = cli.image_id.clone().unwrap_or_default();
    let refusal = cli.unverified_refusal();
    let started = match (&cli.glance_cache, &cli.nova_base) {
        _ if refusal.is_some() => Err(caches::CacheError::Refused(refusal.unwrap_or_default())),
        (Some(root), _) => caches::GlanceFill::start(root, &id, cli.cache_driver, cli.no_metadata)
            .map(|(f, file)| (Fill::Glance(f), file)),
        (None, Some(inst)) => {
            caches::NovaFill::start(inst, &id, std::time::Duration::from_secs(cli.lock_timeout))
                .map(|(f, file)| (Fill::Nova(f), file))
        }
        (None, None) => bail!("no cache to fill"),
    };
    let (fill, file) = match started {
        Ok(x) => x,
        Err(e) => {
            let (kind, status) = match &e {
                caches::CacheError::Busy(_) => (ErrorKind::Busy, Status::TempFail),
                caches::CacheError::Exists(_) => (ErrorKind::AlreadyExists, Status::Error),
                caches::CacheError::Refused(_) => (ErrorKind::Refused, Status::Error),
                caches::CacheError::Io(f) => (f.kind, Status::Error),
            };
            let mut rec = Record::new();
            let err = ctx.error(kind, e.to_string());
            ctx.warn(&e.to_string());
            if cli.tee && cli.best_effort_cache {
                // Glance serves the image uncached when its cache cannot
                // take it: every byte still goes to stdout, hashed and
                // checked as in tee mode.
                let out = pump::pump(
                    files::Stoppable(io::stdin().lock()),
                    Some(Box::new(io::stdout().lock())),
                    Vec::new(),
                    &cli.algorithms(&[]),
                    cli.drain,
                    true,
                    None,
                    &mut cli.meter(&id, expected.size),
                );
                rec.set(FACET, Value::Object(facet(cli, &out, &expected, "refused")));
                let pass_status = report_status(ctx, &mut rec, &out, &expected);
                if !rec.has_error() {
                    rec.set_error(&err);
                }
                write_report(cli, &rec)?;
                ctx.merge(pass_status);
                ctx.merge(status);
                return stop_on_signal(&out);
            }
            let mut f = Map::new();
            f.insert("image_id".into(), id.clone().into());
            f.insert("nova_cache_name".into(), sha1_hex(&id).into());
            f.insert("state".into(), "refused".into());
            rec.set(FACET, Value::Object(f));
            rec.set_error(&err);
            emit_report(cli, ctx, &rec)?;
            ctx.merge(status);
            return Ok(());
        }
    };
    let sink = pump::Sink::from_cache(file);
    let passthrough: Option<Box<dyn Write>> = if cli.tee {
        Some(Box::new(io::stdout().lock()))
    } else {
        None
    };
    let extra: &[Algorithm] = if cli.sidecar { &[Algorithm::Sha1] } else { &[] };
    let mut out = pump::pump(
        files::Stoppable(io::stdin().lock()),
        passthrough,
        vec![sink],
        &cli.algorithms(extra),
        cli.drain,
        cli.best_effort_cache,
        cli.read_limit(),
        &mut cli.meter(&id, expected.size),
    );
    let mut sinks = std::mem::take(&mut out.sinks);
    let Some(sink) = sinks.pop() else {
        bail!("internal: the cache file went missing");
    };
    if let Some(e) = sink.error.clone()
        && !out.errors.contains(&PumpError::Output(e.clone()))
    {
        out.errors.push(PumpError::Output(e));
    }
    let (verified, mismatch) = verdict(&expected, &out);
    let short = expected.size.is_some_and(|s| out.bytes < s);
    let mut ok = out.complete() && verified != Some(false) && !short;
    let pump::SinkFile::Cache(file) = sink.into_file() else {
        bail!("internal: the cache file is not the cache's");
    };
    let mut rec = Record::new();
    let mut extra_fields = Map::new();
    // Nova expects raw base files: refuse other formats unless allowed.
    if ok && let Fill::Nova(_) = &fill {
        // Probed through the file written, opened again in the pinned
        // _base without following a link.
        let format = file
            .reader()
            .ok()
            .and_then(|f| formats::FileSource::from_file(f).ok())
            .and_then(|src| formats::probe(&src, "", None).ok())
            .map(|p| p.format.as_str().to_owned())
            .unwrap_or_else(|| "unknown".into());
        extra_fields.insert("format".into(), format.clone().into());
        if format != "raw" && !cli.allow_format.iter().any(|a| a == &format) {
            ok = false;
            out.errors.push(PumpError::Output(format!(
                "the data is {format}, and Nova expects raw base files (--allow-format {format} to accept it)"
            ).into()));
        }
    }
    let reason = match (out.errors.first(), &mismatch) {
        (Some(e), _) => e.to_string(),
        (None, m) if !m.is_empty() => format!("checksum mismatch: {}", m.join(", ")),
        _ if short => format!("short read: {} bytes", out.bytes),
        _ if out.overrun => format!(
            "size mismatch: more than the {} bytes expected",
            expected.size.unwrap_or_default()
        ),
        _ => "incomplete fetch".to_string(),
    };
    let state = match fill {
        Fill::Glance(g) => {
            if ok {
                match g.commit(file, out.bytes) {
                    Ok((p, meta)) => {
                        rec.set(filter::record::PATH, p.to_string_lossy().into_owned());
                        extra_fields
                            .insert("final_path".into(), p.to_string_lossy().into_owned().into());
                        extra_fields.insert("metadata".into(), meta.into());
                        "committed"
                    }
                    Err(e) => {
                        out.errors.push(PumpError::Output(cache_fault(e)));
                        "aborted"
                    }
                }
            } else {
                match g.invalidate(file, &reason) {
                    Ok(p) => {
                        extra_fields.insert(
                            "invalid_path".into(),
                            p.to_string_lossy().into_owned().into(),
                        );
                    }
                    Err(e) => out.errors.push(PumpError::Output(cache_fault(e))),
                }
                "invalid"
            }
        }
        Fill::Nova(n) => {
            extra_fields.insert("removed_stale_part".into(), n.removed_stale_part.into());
            if ok {
                match n.commit(file) {
                    Ok(p) => {
                        rec.set(filter::record::PATH, p.to_string_lossy().into_owned());
                        extra_fields
                            .insert("final_path".into(), p.to_string_lossy().into_owned().into());
                        if cli.sidecar
                            && let Some((_, sha1)) =
                                out.digests.iter().find(|(a, _)| *a == Algorithm::Sha1)
                        {
                            match n.write_sidecar(sha1) {
                                Ok(p) => {
                                    extra_fields.insert(
                                        "sidecar".into(),
                                        p.to_string_lossy().into_owned().into(),
                                    );
                                }
                                Err(e) => {
                                    out.errors.push(PumpError::Output(Fault::io("sidecar", &e)))
                                }
                            }
                        }
                        "committed"
                    }
                    Err(e) => {
                        out.errors.push(PumpError::Output(cache_fault(e)));
                        "aborted"
                    }
                }
            } else {
                let _ = file.abort();
                if verified == Some(false) && (out.complete() || out.overrun) {
                    "invalid"
                } else {
                    "aborted"
                }
            }
        }
    };
    let mut f = facet(cli, &out, &expected, state);
    f.extend(extra_fields);
    rec.set(FACET, Value::Object(f));
    let status = report_status(ctx, &mut rec, &out, &expected);
    emit_report(cli, ctx, &rec)?;
    ctx.merge(status);
    stop_on_signal(&out)
}

/// The report goes to stdout, unless stdout carries the data (--tee).
fn emit_report(cli: &Cli, ctx: &mut Ctx, rec: &Record) -> anyhow::Result<()> {
    if cli.tee {
        write_report(cli, rec)
    } else {
        Ok(ctx.emit(rec)?)
    }
}

/// A cache's failure as a pump fault, keeping its kind.
fn cache_fault(e: caches::CacheError) -> Fault {
    let kind = match &e {
        caches::CacheError::Io(f) => return f.clone(),
        caches::CacheError::Busy(_) => ErrorKind::Busy,
        caches::CacheError::Exists(_) => ErrorKind::AlreadyExists,
        caches::CacheError::Refused(_) => ErrorKind::Refused,
    };
    Fault {
        kind,
        message: e.to_string(),
    }
}

/// Attach an error facet for failures; the status for the run. A stream
/// that ended before the expected size is a failed read (Glance's "corrupt
/// image download"), not merely a mismatch.
fn report_status(ctx: &Ctx, rec: &mut Record, out: &Outcome, expected: &Expected) -> Status {
    let short = expected
        .size
        .filter(|&s| out.eof && out.bytes < s)
        .map(|s| {
            PumpError::Input(
                format!(
                    "the stream ended after {} of the {s} bytes expected",
                    out.bytes
                )
                .into(),
            )
        });
    if let Some(e) = out.errors.first().or(short.as_ref()) {
        let kind = match e {
            PumpError::Input(f) | PumpError::Output(f) => f.kind,
            PumpError::DownstreamClosed => ErrorKind::Io,
        };
        let mut err = ctx.error(kind, e.to_string()).with("bytes_read", out.bytes);
        if let Some(s) = expected.size {
            err = err.with("expected_size", s);
        }
        ctx.warn(&e.to_string());
        rec.set_error(&err);
        return Status::Error;
    }
    match verdict(expected, out).0 {
        Some(false) if out.overrun => {
            ctx.warn(&format!(
                "size mismatch: longer than the {} bytes expected (stopped reading after {})",
                expected.size.unwrap_or_default(),
                out.bytes
            ));
            Status::No
        }
        Some(false) => {
            let (_, mismatch) = verdict(expected, out);
            ctx.warn(&format!("mismatch: {}", mismatch.join(", ")));
            Status::No
        }
        _ => Status::Ok,
    }
}

fn write_report(cli: &Cli, rec: &Record) -> anyhow::Result<()> {
    let mut line = serde_json::to_vec(rec)?;
    line.push(b'\n');
    match &cli.report {
        Some(p) => write_report_to(p, &line)
            .with_context(|| format!("cannot write the report to {}", p.display()))?,
        None => {
            system::progress::clear();
            let _ = io::stderr().lock().write_all(&line);
        }
    }
    Ok(())
}

/// Verify: re-read each file and compare.
fn verify(cli: &Cli, ctx: &mut Ctx) -> anyhow::Result<()> {
    filter::cli::each_input_file(ctx, &cli.files, |ctx, rec, path| {
        verify_record(cli, ctx, rec, &path)?;
        if let Some(sig) = system::signal::pending() {
            return Err(Interrupted(sig).into());
        }
        Ok(())
    })
}

/// Verify the file `path` that `rec` names.
fn verify_record(cli: &Cli, ctx: &mut Ctx, mut rec: Record, path: &Path) -> anyhow::Result<()> {
    let mut expected = cli.expected();
    if expected.is_empty()
        && let Some(image) = rec.get("image")
    {
        expected = Expected::from_glance(image);
    }
    let extra = expected.algorithms();
    // Never blocks in open(); a stream (FIFO, pipe, device) is read front
    // to back like a file; a directory is not_regular.
    let file = match files::open_input(path, Accept::Streams) {
        Ok(f) => f,
        Err(err) => {
            let e = ctx.error(ErrorKind::from_io(&err), io_message(&err));
            ctx.fail(rec, e)?;
            return Ok(());
        }
    };
    let noatime = file.kind() == files::InputKind::Regular && set_noatime(file.file());
    let len = file.len();
    let out = pump::pump(
        file,
        None,
        Vec::new(),
        &cli.algorithms(&extra),
        false,
        false,
        expected.size,
        &mut cli.meter(&path.display().to_string(), expected.size.or(len)),
    );
    let state = if out.complete() || out.overrun {
        "verified_in_place"
    } else {
        "aborted"
    };
    let mut f = facet(cli, &out, &expected, state);
    f.insert("noatime".into(), noatime.into());
    rec.set(FACET, Value::Object(f));
    let status = report_status(ctx, &mut rec, &out, &expected);
    ctx.emit(&rec)?;
    ctx.merge(status);
    stop_on_signal(&out)
}

/// The length of stdin when it is a regular file.
fn stdin_len() -> Option<u64> {
    use std::os::fd::AsFd;
    let f = std::fs::File::from(io::stdin().as_fd().try_clone_to_owned().ok()?);
    let md = f.metadata().ok()?;
    md.is_file().then_some(md.len())
}

/// An I/O error's text without the OS's "(os error N)" suffix.
fn io_message(e: &io::Error) -> String {
    let text = e.to_string();
    match text.rfind(" (os error ") {
        Some(i) if text.ends_with(')') => text[..i].to_owned(),
        _ => text,
    }
}

/// Spare the access time of a regular file opened for reading
/// (`O_NOATIME`, allowed for the owner or root: the Glance xattr driver's
/// LRU clock is the atime). Whether it worked.
#[allow(unsafe_code)]
fn set_noatime(f: &std::fs::File) -> bool {
    use std::os::fd::AsRawFd;
    let fd = f.as_raw_fd();
    // SAFETY: fcntl on a descriptor we hold open; no pointers.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    // SAFETY: as above.
    flags >= 0 && unsafe { libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NOATIME) } == 0
}

/// Before any byte is read: the report may not replace anything but a
/// regular file (a FIFO or a device is written to, never replaced), nor
/// the input itself.
fn check_report_target(cli: &Cli) -> anyhow::Result<()> {
    let Some(p) = &cli.report else {
        return Ok(());
    };
    if report_is_stream(p) {
        return Ok(());
    }
    let inputs: Vec<FileId> = FileId::of_stdio(0).into_iter().collect();
    files::check_output(p, true, &inputs)
        .with_context(|| format!("cannot write the report to {}", p.display()))
}

/// A FIFO, pipe, character device or socket (`/dev/null`, `>(jq ...)`):
/// written to in place.
fn report_is_stream(p: &Path) -> bool {
    use std::os::unix::fs::FileTypeExt;
    std::fs::metadata(p).is_ok_and(|m| {
        let t = m.file_type();
        t.is_fifo() || t.is_char_device() || t.is_socket()
    })
}

/// Write the report line: in place into a stream (a FIFO without a reader
/// is an error, never a hang), atomically into a regular file.
fn write_report_to(p: &Path, line: &[u8]) -> io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    if report_is_stream(p) {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
            .open(p)?;
        set_blocking(&f)?;
        return f.write_all(line);
    }
    let mut f = system::atomic::AtomicFile::create(p, true)?;
    f.write_all(line)?;
    f.commit().map(drop)
}

/// Clear `O_NONBLOCK` (set only so that open() could not block).
#[allow(unsafe_code)]
fn set_blocking(f: &std::fs::File) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let fd = f.as_raw_fd();
    // SAFETY: fcntl on a descriptor we hold open; no pointers.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    // SAFETY: as above.
    if flags < 0 || unsafe { libc::fcntl(fd, libc::F_SETFL, flags & !libc::O_NONBLOCK) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}
