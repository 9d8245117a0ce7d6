//! vhd-chain: XenServer VHD chains without vhd-util. This release:
//! `info` (the `vhd-util query` facts of each file), `extract` (a safe,
//! streaming replacement for Cinder's `tar -xzf`), `discover` (Cinder's
//! `0.vhd, 1.vhd, ...` rule, with the broken cases as errors), and
//! `set-parent` / `fix` (`vhd-util modify -p`, guarded by UUIDs), `check`
//! (XenServer's import rules), `cat` (the chain's virtual disk) and
//! `flatten` (the whole import, verified and atomic).

pub mod check;
pub mod coalesce;
pub mod extract;
pub mod flatten;
pub mod input;
pub mod journal;
pub mod layout;
pub mod member;
pub mod patch;
pub mod raw;
pub mod read;
pub mod relink;
pub mod resize;
pub mod write;

use clap::{Parser, Subcommand};
use filter::cli::{Ctx, SharedArgs, Tool};
use filter::{ErrorKind, Record};
use formats::{FormatError, Reader, vhd};
use serde_json::{Map, Value};
use std::io;
use std::path::{Path, PathBuf};

/// A path in a facet, for people (lossy where it is not UTF-8; the
/// record's own `path_bytes` carries the exact name).
pub(crate) fn lossy_path<S: serde::Serializer>(p: &Path, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&p.to_string_lossy())
}

/// The facet this tool owns.
pub const FACET: &str = "vhd";

const AFTER_HELP: &str = "\
Records: each file gets {\"path\": FILE, \"vhd\": {...}} (plus \"path_bytes\",
the exact name in base64, when FILE is not UTF-8; records on stdin are read
by it) with the footer and
header facts (disk_type, creator_app, uuid, parent_uuid, parent_name,
current_size, original_size, geometry, block_size, allocated_blocks,
hidden, footer_source, footer_checksum_ok, virtual_size, ...). discover adds
chain_index, chain_length, role (leaf, middle, base) and parent_uuid_matches.
Errors are records with error.kind: not_a_vhd, not_a_tarball,
unsafe_member, unexpected_member, limit_exceeded, chain_empty, chain_gap,
chain_incomplete, not_differencing, bad_image, refused, busy, not_regular,
symlink, changed, same_file, already_exists, usage, io.

Inputs: a VHD (and every chain member) must be a regular file (a block
device holding a VHD may be read); a FIFO, character device, socket or
directory is refused (not_regular) without ever blocking. Links: a file
only read and named here (info, check FILE, cat FILE) may be the operator's
link and is followed, as qemu-img does; a chain directory's member, and a
file changed (set-parent, fix, resize, coalesce, journals), is never
reached through a link (symlink), and one replaced while being worked on is
left alone (changed).
Only a tarball (extract, flatten) may be a stream: `-` (stdin), a pipe or a
FIFO is read front to back. Empty stdin where records are read (info,
flatten without a source) is no records: exit 0, no output.

Examples:
  vhd-chain extract image.tgz scratch/ && vhd-chain discover scratch/
  vhd-chain fix scratch/ && vhd-chain coalesce --chain scratch/ | tail -n 1
  vhd-chain resize disk.vhd 20G --in-place
  vhd-chain flatten image.tgz -o disk.vhd && imginfo-parse --check disk.vhd
  vhd-chain info disk.vhd | jq .vhd.virtual_size

Exit status: 0 fine, 1 (check) a VHD is not valid, 2 an error record was
written (or bad usage), 128+N stopped by signal N (130 SIGINT, 143 SIGTERM,
129 SIGHUP) after cleaning up.";

/// Command-line arguments.
#[derive(Debug, Parser)]
#[command(
    about = "XenServer VHD chains: facts, safe extraction, chain discovery",
    long_about = "Native XenServer VHD chain handling for Cinder's import path, without vhd-util: \
the facts of each VHD (vhd-util query), safe extraction of XenServer tarballs (instead of \
tar -xzf), and discovery of the 0.vhd (leaf) ... N.vhd (base) chain.",
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
    /// The footer and header facts of each VHD (without FILEs: records with
    /// a `path` on stdin)
    Info {
        /// VHD files
        #[arg(value_name = "FILE")]
        files: Vec<PathBuf>,
    },
    /// Extract a XenServer image tarball (0.vhd, 1.vhd, ...) into DIR,
    /// refusing anything else; one record per member
    Extract {
        /// The .tgz (or .tar); `-` (stdin), a pipe or a FIFO is read as a
        /// stream
        #[arg(value_name = "TARBALL")]
        tarball: PathBuf,
        /// An existing, empty directory
        #[arg(value_name = "DIR")]
        dir: PathBuf,
        /// The most bytes to write in all (e.g. 100G; default 2T); never
        /// more than the free space of DIR's filesystem less a reserve (5%
        /// of it or 64 MiB, whichever is larger)
        #[arg(long, value_name = "SIZE", value_parser = parse_size_arg)]
        max_bytes: Option<u64>,
        /// The most members to accept
        // One name for a count limit in every tool (was --max-members).
        #[arg(long = "max-count", alias = "max-members", value_name = "N")]
        max_members: Option<usize>,
    },
    /// Find the chain in DIR: 0.vhd (leaf), 1.vhd, ... up to the first
    /// missing index (Cinder's rule); one record per member, leaf first
    Discover {
        /// The directory holding N.vhd files
        #[arg(value_name = "DIR")]
        dir: PathBuf,
    },
    /// Check VHDs the way XenServer's import does (vhd-util check); with
    /// --chain, also that each member's parent UUID is the next member's
    /// UUID. Exit 1 when one is invalid
    Check {
        /// VHD files (with --chain: a chain directory's members in order,
        /// leaf first; or give DIR)
        #[arg(value_name = "FILE")]
        files: Vec<PathBuf>,
        /// Treat FILE as a directory holding a chain (0.vhd ...)
        #[arg(long)]
        chain: bool,
        /// Also scan data under clear bitmap bits (reads every block)
        #[arg(long)]
        data: bool,
        /// Do not check timestamps against the clock
        // Skipping a check is --no-X-check in every tool (was
        // --ignore-timestamps, vhd-util check's -i).
        #[arg(long = "no-timestamp-check", alias = "ignore-timestamps")]
        ignore_timestamps: bool,
    },
    /// Write the virtual disk of the chain in DIR (or of one VHD) to
    /// stdout as raw bytes, e.g. to hash the guest-visible content
    Cat {
        /// A chain directory (0.vhd ...) or one VHD file
        #[arg(value_name = "DIR|FILE")]
        source: PathBuf,
    },
    /// Cinder's whole XenServer import: extract the tarball (or take the
    /// chain DIR), check the links, merge the chain into one dynamic VHD
    /// with the leaf's virtual size, verify it, and rename it into place
    /// (-o OUT.vhd, or --replace the tarball itself)
    Flatten {
        /// A XenServer .tgz/.tar (`-`, a pipe or a FIFO: read as a stream),
        /// or a directory holding 0.vhd ... (none: records with a `path` on
        /// stdin, with --replace or --dry-run)
        #[arg(value_name = "TARBALL|DIR")]
        source: Option<PathBuf>,
        /// The VHD to write
        #[arg(short, long, value_name = "OUT.vhd", conflicts_with = "replace")]
        output: Option<PathBuf>,
        /// Replace the tarball with the flattened VHD, atomically (Cinder's
        /// replace_xenserver_image_with_coalesced_vhd); a file that already
        /// is a single VHD is left alone (status already_single), and on
        /// stdin a record whose file is neither is passed on unchanged
        #[arg(long)]
        replace: bool,
        /// Check everything that can be checked without writing (a tarball
        /// is read through, a directory's chain opened and its links
        /// checked) and say what would be written
        #[arg(long)]
        dry_run: bool,
        /// Replace an existing output file (a regular file only)
        #[arg(long)]
        force: bool,
        /// The most bytes a tarball's extraction may write (as for
        /// extract; never more than the free space of the output's
        /// filesystem less a reserve)
        #[arg(long, value_name = "SIZE", value_parser = parse_size_arg)]
        max_bytes: Option<u64>,
    },
    /// Make PARENT the parent of the differencing disk CHILD (vhd-util
    /// modify -p), on a copy renamed into place; refuses when CHILD's
    /// recorded parent UUID is not PARENT's, unless --no-uuid-check
    SetParent {
        /// The differencing VHD to change
        #[arg(value_name = "CHILD")]
        child: PathBuf,
        /// Its new parent
        #[arg(value_name = "PARENT")]
        parent: PathBuf,
        /// Link even when the UUIDs disagree (the old UUID is recorded)
        // --force replaces an output file everywhere else (was --force).
        #[arg(long = "no-uuid-check", alias = "force")]
        force: bool,
    },
    /// Grow the virtual disk of FILE to SIZE bytes (vhd-util resize), on a
    /// copy renamed into place; with --in-place, under an undo journal
    /// that a re-run after a crash rolls back first
    Resize {
        /// The VHD (fixed, dynamic or differencing)
        #[arg(value_name = "FILE")]
        file: PathBuf,
        /// The new virtual size in bytes, a multiple of 512 (suffixes K, M,
        /// G, T as powers of 1024: 10G)
        #[arg(value_name = "SIZE", value_parser = parse_size_arg)]
        size: u64,
        /// Change FILE itself instead of a copy (for files too large to
        /// copy): an undo journal is written first
        #[arg(long)]
        in_place: bool,
        /// The undo journal (default .FILE.vhd-chain-journal beside it);
        /// must not exist, unless it is a crashed run's journal of this
        /// FILE to roll back: anything else there is refused
        /// (already_exists) and never touched
        #[arg(long, value_name = "J", requires = "in_place")]
        journal: Option<PathBuf>,
    },
    /// Merge the differencing disk CHILD into its parent (vhd-util
    /// coalesce; the parent is PARENT or the file its header names, beside
    /// it), on a copy of the parent renamed into place (or --in-place under
    /// a journal); with --chain, every member of the chain in DIR into the
    /// next, so the base holds the disk (the last record)
    Coalesce {
        /// The differencing VHD (with --chain: the chain directory)
        #[arg(value_name = "CHILD|DIR")]
        child: PathBuf,
        /// Its parent (default: the name in CHILD's header, in CHILD's
        /// directory)
        #[arg(value_name = "PARENT", conflicts_with = "chain")]
        parent: Option<PathBuf>,
        /// Coalesce the whole chain in DIR (0.vhd into 1.vhd, ... into the
        /// base), as Cinder's coalesce_chain
        #[arg(long)]
        chain: bool,
        /// Change the parent itself instead of a copy, under an undo
        /// journal
        #[arg(long)]
        in_place: bool,
        /// The undo journal (default .PARENT.vhd-chain-journal beside the
        /// parent); as for resize, anything there but a crashed run's
        /// journal of PARENT is refused and never touched
        #[arg(
            long,
            value_name = "J",
            requires = "in_place",
            conflicts_with = "chain"
        )]
        journal: Option<PathBuf>,
    },
    /// Link every member of the chain in DIR to the next one (Cinder's
    /// fix_vhd_chain; a chain of one or none is left alone)
    Fix {
        /// The directory holding N.vhd files
        #[arg(value_name = "DIR")]
        dir: PathBuf,
        /// Link even when the UUIDs disagree (the old UUIDs are recorded)
        // As set-parent's (was --force).
        #[arg(long = "no-uuid-check", alias = "force")]
        force: bool,
    },
}

fn parse_size_arg(s: &str) -> Result<u64, String> {
    system::size::parse_size(s).map_err(|e| e.to_string())
}

impl Tool for Cli {
    const NAME: &'static str = "vhd-chain";
    const MAN_EXTRA: &'static str = include_str!("../doc/vhd-chain.extra.roff");

    fn shared(&self) -> &SharedArgs {
        &self.shared
    }

    fn run(self, ctx: &mut Ctx) -> anyhow::Result<()> {
        let Some(command) = self.command else {
            anyhow::bail!("a subcommand is needed (see --help)");
        };
        // Commands that write stop at the next chunk on SIGINT, SIGTERM or
        // SIGHUP, remove what they made (temporary files, scratch, or an
        // in-place change rolled back from its journal), say so in an
        // `interrupted` error record, and exit 128+N.
        if command.writes() {
            system::signal::install();
        }
        // Progress of long work on a terminal, unless -q.
        let result = Cli::dispatch(command, ctx, !self.shared.quiet);
        match system::signal::pending() {
            Some(sig) if result.is_ok() => Err(filter::cli::Interrupted(sig).into()),
            _ => result,
        }
    }
}

impl Command {
    /// Flags that would do nothing in the mode asked, and `-` where no
    /// stream can be read or written: usage errors (exit 2, kind
    /// `usage`), never silently ignored.
    fn check_usage(&self) -> anyhow::Result<()> {
        use filter::cli::usage;
        use system::files::is_dash;
        match self {
            Command::Extract { dir, .. } if is_dash(dir) => Err(usage(
                "extract: DIR is a directory to write members into; `-` (stdout) cannot hold them",
            )),
            Command::Resize { file: p, .. }
            | Command::SetParent { child: p, .. }
            | Command::Coalesce { child: p, .. }
            | Command::Fix { dir: p, .. }
            | Command::Discover { dir: p }
                if is_dash(p) =>
            {
                Err(usage(
                    "`-` (stdin) cannot be changed in place or listed as a directory: name the file",
                ))
            }
            Command::SetParent { parent: p, .. }
            | Command::Coalesce {
                parent: Some(p), ..
            } if is_dash(p) => Err(usage("`-` (stdin) cannot be a parent VHD: name the file")),
            Command::Check { files, .. } if files.is_empty() => {
                Err(usage("check: give FILE... (or --chain DIR)"))
            }
            Command::Flatten {
                source,
                output,
                replace,
                dry_run,
                force,
                max_bytes,
            } => {
                if max_bytes.is_some() && source.as_deref().is_some_and(Path::is_dir) {
                    return Err(usage(
                        "flatten: --max-bytes bounds a tarball's extraction; a directory is not extracted",
                    ));
                }
                if output.as_deref().is_some_and(is_dash) {
                    return Err(usage(
                        "flatten: -o - is refused: the VHD is verified in a file and renamed into place; \
                         `vhd-chain cat DIR|FILE` writes a disk's raw bytes to stdout",
                    ));
                }
                if *replace && source.as_deref().is_some_and(is_dash) {
                    return Err(usage("flatten: --replace takes a tarball file, not stdin"));
                }
                if *force && (output.is_none() || *dry_run) {
                    return Err(usage(
                        "flatten: --force only lets -o replace an existing file (not with --replace or --dry-run)",
                    ));
                }
                if source.is_none() && output.is_some() {
                    return Err(usage(
                        "flatten: records on stdin need --replace or --dry-run (one -o cannot take many images)",
                    ));
                }
                if source.is_some() && output.is_none() && !replace && !dry_run {
                    return Err(usage("flatten: give -o OUT.vhd or --replace (see --help)"));
                }
                if source.is_none() && !(*replace || *dry_run) {
                    return Err(usage(
                        "flatten: give a TARBALL or DIR, or records on stdin with --replace or --dry-run",
                    ));
                }
                Ok(())
            }
            _ => Ok(()),
        }
    }

    /// Whether the command changes or creates files.
    fn writes(&self) -> bool {
        !matches!(
            self,
            Command::Info { .. }
                | Command::Discover { .. }
                | Command::Check { .. }
                | Command::Cat { .. }
        )
    }
}

impl Cli {
    fn dispatch(command: Command, ctx: &mut Ctx, progress: bool) -> anyhow::Result<()> {
        command.check_usage()?;
        match command {
            Command::Info { files } => info(ctx, &files),
            Command::Extract {
                tarball,
                dir,
                max_bytes,
                max_members,
            } => {
                let mut limits = extract::Limits::default();
                if let Some(b) = max_bytes {
                    limits.max_bytes = b;
                }
                if let Some(m) = max_members {
                    limits.max_members = m;
                }
                extract_cmd(ctx, &tarball, &dir, &limits, progress)
            }
            Command::Discover { dir } => discover_cmd(ctx, &dir),
            Command::Check {
                files,
                chain,
                data,
                ignore_timestamps,
            } => check_cmd(ctx, &files, chain, data, ignore_timestamps),
            Command::Cat { source } => cat_cmd(ctx, &source),
            Command::Flatten {
                source,
                output,
                replace,
                dry_run,
                force,
                max_bytes,
            } => {
                let mut limits = extract::Limits::default();
                if let Some(b) = max_bytes {
                    limits.max_bytes = b;
                }
                let how = FlattenHow {
                    limits,
                    output,
                    replace,
                    dry_run,
                    force,
                    progress,
                };
                match source {
                    Some(src) => {
                        let rec = filter::record::record_for(&src);
                        flatten_one(ctx, rec, &src, &how, false)
                    }
                    None => filter::cli::each_input_file(ctx, &[], |ctx, rec, p| {
                        flatten_one(ctx, rec, &p, &how, true)
                    }),
                }
            }
            Command::SetParent {
                child,
                parent,
                force,
            } => {
                let r = relink::set_parent(&child, &parent, force);
                relink_records(ctx, &child, r.map(|x| vec![x]))
            }
            Command::Resize {
                file,
                size,
                in_place,
                journal,
            } => {
                let j = journal.unwrap_or_else(|| resize::default_journal(&file));
                let mode = if in_place {
                    patch::Mode::InPlace { journal: &j }
                } else {
                    patch::Mode::Copy
                };
                let rec = filter::record::record_for(&file);
                match resize::resize(&file, size, mode) {
                    Ok(done) => facet_record(ctx, rec, "resize", &done),
                    Err(err) => {
                        let e = ctx.error(err.kind(), err.to_string());
                        fail_rec(ctx, rec, e)?;
                        Ok(())
                    }
                }
            }
            Command::Coalesce {
                child,
                parent,
                chain,
                in_place,
                journal,
            } => coalesce_cmd(
                ctx,
                &child,
                parent.as_deref(),
                chain,
                in_place,
                journal,
                progress,
            ),
            Command::Fix { dir, force } => match member::ChainDir::open(&dir) {
                Ok(chain) => relink_records(ctx, &dir, relink::fix_dir(&chain, force)),
                Err((kind, msg)) => {
                    let e = ctx.error(kind, msg);
                    fail_rec(ctx, filter::record::record_for(&dir), e)?;
                    Ok(())
                }
            },
        }
    }
}

/// The facts of one VHD file: the native reader's `header` plus the
/// virtual size, read as a VHD whatever qemu would probe (a fixed VHD has
/// no header at offset 0).
pub fn vhd_facts(path: &Path) -> Result<Map<String, Value>, (ErrorKind, String)> {
    let src =
        input::RegularSource::open(path).map_err(|e| (ErrorKind::from_io(&e), e.to_string()))?;
    facts_of(path, &src)
}

/// [`vhd_facts`] of a file already opened (a chain member).
pub fn vhd_facts_of(
    path: &Path,
    file: std::fs::File,
) -> Result<Map<String, Value>, (ErrorKind, String)> {
    let src = input::RegularSource::from_file(file)
        .map_err(|e| (ErrorKind::from_io(&e), e.to_string()))?;
    facts_of(path, &src)
}

fn facts_of(
    path: &Path,
    src: &input::RegularSource,
) -> Result<Map<String, Value>, (ErrorKind, String)> {
    // qemu's reading of the file, as `imginfo-parse -f vpc` reports it;
    // `Ok(None)` is the typed "not a VHD".
    let p = vhd::parse(&Reader::new(src, "vpc"), &path.to_string_lossy())
        .map_err(|e| match e {
            FormatError::Io(e) => (ErrorKind::from_io(&e), e.to_string()),
            other => (ErrorKind::NotAVhd, other.to_string()),
        })?
        .ok_or_else(|| {
            (
                ErrorKind::NotAVhd,
                "not a VHD (no valid footer)".to_string(),
            )
        })?;
    // The record is the footer/header facts, serialized here at the edge.
    let mut facts = match &p.details {
        formats::Details::Vpc(d) => match serde_json::to_value(&d.header) {
            Ok(Value::Object(h)) => h,
            _ => Map::new(),
        },
        _ => Map::new(),
    };
    facts.insert("virtual_size".into(), p.virtual_size.into());
    Ok(facts)
}

fn info_record(ctx: &mut Ctx, mut rec: Record, path: &Path) -> io::Result<()> {
    match vhd_facts(path) {
        Ok(f) => {
            rec.set(FACET, Value::Object(f));
            ctx.emit(&rec)
        }
        Err((kind, msg)) => {
            let e = ctx.error(kind, msg);
            fail_rec(ctx, rec, e)
        }
    }
}

fn info(ctx: &mut Ctx, files: &[PathBuf]) -> anyhow::Result<()> {
    filter::cli::each_input_file(ctx, files, |ctx, rec, p| Ok(info_record(ctx, rec, &p)?))
}

fn extract_cmd(
    ctx: &mut Ctx,
    tarball: &Path,
    dir: &Path,
    limits: &extract::Limits,
    progress: bool,
) -> anyhow::Result<()> {
    match extract::extract_vhds(tarball, dir, limits, progress) {
        Ok(members) => {
            for m in members {
                let mut rec = filter::record::record_for(&m.path);
                let mut f = Map::new();
                f.insert("step".into(), "extract".into());
                f.insert("member".into(), m.name.into());
                f.insert("size".into(), m.size.into());
                if let Some(t) = m.mtime {
                    f.insert("mtime_epoch".into(), t.into());
                }
                f.insert(
                    "tarball".into(),
                    tarball.to_string_lossy().into_owned().into(),
                );
                rec.set(FACET, Value::Object(f));
                ctx.emit(&rec)?;
            }
        }
        Err(err) => {
            let mut rec = filter::record::record_for(tarball);
            let mut e = ctx.error(err.kind(), err.to_string());
            if let Some(m) = err.member() {
                e = e.with("member", m);
            }
            fail_rec(ctx, rec.clone(), e)?;
            rec.remove(filter::record::PATH);
        }
    }
    Ok(())
}

fn check_cmd(
    ctx: &mut Ctx,
    files: &[PathBuf],
    chain: bool,
    data: bool,
    ignore_timestamps: bool,
) -> anyhow::Result<()> {
    let opts = check::Options {
        data,
        ignore_timestamps,
    };
    let emit = |ctx: &mut Ctx,
                path: &Path,
                r: Result<check::Report, check::CheckError>|
     -> anyhow::Result<()> {
        match r {
            Ok(report) => {
                if !report.valid {
                    ctx.merge(filter::Status::No);
                }
                emit_step(ctx, path, "check", &report)?;
            }
            Err(err) => {
                let e = ctx.error(err.kind(), err.to_string());
                fail_rec(ctx, filter::record::record_for(path), e)?;
            }
        }
        Ok(())
    };
    if chain {
        for dir in files {
            // Members opened relative to the directory, never through a
            // link; the handles opened are the ones checked.
            match member::ChainDir::open(dir).and_then(|c| c.open_all()) {
                Ok(members) => {
                    let paths: Vec<PathBuf> = members.iter().map(|m| m.path.clone()).collect();
                    let files = members.into_iter().map(|m| (m.path, m.file)).collect();
                    match check::check_chain_files(files, &opts) {
                        Ok(reports) => {
                            for (m, r) in paths.iter().zip(reports) {
                                emit(ctx, m, Ok(r))?;
                            }
                        }
                        Err(err) => emit(ctx, dir, Err(err))?,
                    }
                }
                Err((kind, msg)) => {
                    let e = ctx.error(kind, msg);
                    fail_rec(ctx, filter::record::record_for(dir), e)?;
                }
            }
        }
        return Ok(());
    }
    for f in files {
        emit(ctx, f, check::check_file(f, &opts))?;
    }
    Ok(())
}

fn cat_cmd(ctx: &mut Ctx, source: &Path) -> anyhow::Result<()> {
    // No records on success: the bytes are the output. A failure is an
    // error record (on stdout, after whatever bytes were written: the exit
    // status says the bytes are not the disk).
    let opened = if source.is_dir() {
        member::ChainDir::open(source).and_then(|c| c.read_chain())
    } else {
        // A file named here is only read: the operator's link is followed.
        read::Chain::open(&[source.to_owned()]).map_err(|e| (e.kind(), e.to_string()))
    };
    let mut chain = match opened {
        Ok(c) => c,
        Err((kind, msg)) => return fail_path(ctx, source, kind, &msg),
    };
    let mut out = io::BufWriter::with_capacity(1 << 20, io::stdout().lock());
    match chain.copy_to(&mut out) {
        Ok(_) => {}
        // The reader left (`| head`): a quiet end, as for every tool.
        Err(read::ReadError::Output { source, .. })
            if source.kind() == io::ErrorKind::BrokenPipe =>
        {
            return Err(source.into());
        }
        Err(e) => {
            let _ = io::Write::flush(&mut out);
            drop(out);
            return fail_path(ctx, source, e.kind(), &e.to_string());
        }
    }
    io::Write::flush(&mut out)?;
    Ok(())
}

/// Emit `rec` with the error `e`; a message that begins with the record's
/// own path has it removed, since [`Ctx::fail`] names it already.
fn fail_rec(ctx: &mut Ctx, rec: Record, mut e: filter::record::ErrorFacet) -> io::Result<()> {
    if let Ok(Some(p)) = filter::record::path_of(&rec) {
        e.message = without_path(&e.message, &p);
    }
    ctx.fail(rec, e)
}

/// `msg` without a leading `PATH: ` (the errors of the library modules
/// name their file; a record names it already).
fn without_path(msg: &str, path: &Path) -> String {
    let prefix = format!("{}: ", path.display());
    let mut m = msg;
    while let Some(rest) = m.strip_prefix(&prefix) {
        m = rest;
    }
    m.to_owned()
}

/// An error record for `path`.
fn fail_path(ctx: &mut Ctx, path: &Path, kind: ErrorKind, msg: &str) -> anyhow::Result<()> {
    let e = ctx.error(kind, msg);
    fail_rec(ctx, filter::record::record_for(path), e)?;
    Ok(())
}

/// What `flatten` was asked to do.
#[derive(Debug)]
struct FlattenHow {
    limits: extract::Limits,
    output: Option<PathBuf>,
    replace: bool,
    dry_run: bool,
    force: bool,
    progress: bool,
}

/// What a file is, by its first bytes: a tarball (gzip, or a tar header
/// with a ustar magic), or neither.
fn looks_like_tarball(path: &Path) -> bool {
    use std::io::Read;
    let mut b = [0u8; 512];
    let Ok(mut f) = input::open_regular(path) else {
        return false;
    };
    let mut n = 0;
    while n < b.len() {
        match f.read(&mut b[n..]) {
            Ok(0) | Err(_) => break,
            Ok(k) => n += k,
        }
    }
    b.starts_with(&[0x1f, 0x8b]) || (n == 512 && &b[257..262] == b"ustar")
}

/// Flatten one source into `rec` (module docs of [`flatten`]); `piped`:
/// `rec` came from stdin, so a file that is not ours passes unchanged.
fn flatten_one(
    ctx: &mut Ctx,
    mut rec: Record,
    source: &Path,
    how: &FlattenHow,
    piped: bool,
) -> anyhow::Result<()> {
    let mut facet = Map::new();
    facet.insert("step".into(), "flatten".into());
    facet.insert(
        "source".into(),
        source.to_string_lossy().into_owned().into(),
    );
    let fail = |ctx: &mut Ctx, rec: Record, kind: ErrorKind, msg: String| -> anyhow::Result<()> {
        let e = ctx.error(kind, msg);
        fail_rec(ctx, rec, e)?;
        Ok(())
    };
    let is_dir = source.is_dir();
    if how.replace && !is_dir && !std::fs::metadata(source).is_ok_and(|m| m.is_file()) {
        // Only a regular file is ever replaced (and a FIFO never opened).
        let kind = match std::fs::metadata(source) {
            Ok(_) => ErrorKind::NotRegular,
            Err(e) => ErrorKind::from_io(&e),
        };
        if piped && kind == ErrorKind::NotRegular {
            return Ok(ctx.emit(&rec)?);
        }
        return fail(
            ctx,
            rec,
            kind,
            "--replace takes a regular file (a tarball or a single VHD)".into(),
        );
    }
    if how.replace && !is_dir && !looks_like_tarball(source) {
        // Already a single VHD (a re-run), or not ours at all.
        return match read::Chain::open(&[source.to_path_buf()]) {
            Ok(c) => {
                facet.insert("status".into(), "already_single".into());
                facet.insert("virtual_size".into(), c.virtual_size().into());
                rec.set(FACET, Value::Object(facet));
                Ok(ctx.emit(&rec)?)
            }
            Err(_) if piped => Ok(ctx.emit(&rec)?),
            Err(e) => fail(
                ctx,
                rec,
                ErrorKind::NotATarball,
                format!(
                    "neither a tarball nor a single VHD ({})",
                    without_path(&e.to_string(), source)
                ),
            ),
        };
    }
    if how.replace && is_dir {
        return fail(
            ctx,
            rec,
            ErrorKind::Refused,
            format!(
                "{}: --replace takes a tarball, not a directory",
                source.display()
            ),
        );
    }
    let output = match (&how.output, how.replace) {
        (Some(o), _) => Some(o.clone()),
        (None, true) => Some(source.to_path_buf()),
        (None, false) => None,
    };
    if how.dry_run {
        return match flatten_dry_run(source, is_dir, &how.limits) {
            Ok(mut plan) => {
                facet.insert("dry_run".into(), true.into());
                if let Some(o) = &output {
                    facet.insert(
                        "would_write".into(),
                        o.to_string_lossy().into_owned().into(),
                    );
                }
                facet.append(&mut plan);
                rec.set(FACET, Value::Object(facet));
                Ok(ctx.emit(&rec)?)
            }
            Err((kind, msg)) => fail(ctx, rec, kind, msg),
        };
    }
    let Some(output) = output else {
        return fail(ctx, rec, ErrorKind::BadRecord, "no output".into());
    };
    let opts = flatten::Options {
        overwrite: how.force,
        replacing: how.replace,
        limits: how.limits.clone(),
        progress: how.progress,
    };
    match flatten::flatten_with(source, &output, &opts) {
        Ok(done) => {
            if let Value::Object(m) = serde_json::to_value(&done)? {
                facet.extend(m);
            }
            if how.replace {
                facet.insert("status".into(), "replaced".into());
            } else if !piped {
                rec = filter::record::record_for(&output);
            }
            rec.set(FACET, Value::Object(facet));
            ctx.emit(&rec)?;
        }
        Err(err) => fail(ctx, rec, err.kind(), err.to_string())?,
    }
    Ok(())
}

/// `--dry-run`: a directory's chain opened (links checked) and sized; a
/// tarball read through with every extraction rule, its chain found by
/// name. Nothing is written.
fn flatten_dry_run(
    source: &Path,
    is_dir: bool,
    limits: &extract::Limits,
) -> Result<Map<String, Value>, (ErrorKind, String)> {
    let mut m = Map::new();
    let names: Vec<String> = if is_dir {
        let members = member::ChainDir::open(source)?;
        let c = members.read_chain()?;
        let chain = members.paths();
        m.insert("virtual_size".into(), c.virtual_size().into());
        m.insert(
            "blocks_to_write_at_most".into(),
            c.data_pieces(write::BLOCK_SIZE).into(),
        );
        m.insert("links_checked".into(), true.into());
        chain
            .iter()
            .filter_map(|p| p.file_name())
            .map(|n| n.to_string_lossy().into_owned())
            .collect()
    } else {
        let members = extract::scan(source, limits).map_err(|e| (e.kind(), e.to_string()))?;
        let names: Vec<String> = members.iter().map(|m| m.name.clone()).collect();
        let bytes: u64 = members.iter().map(|m| m.size).sum();
        m.insert("extract_bytes".into(), bytes.into());
        m.insert("links_checked".into(), false.into());
        chain_of_names(&source.display().to_string(), &names)?
    };
    m.insert("chain_length".into(), names.len().into());
    m.insert("chain".into(), names.into());
    Ok(m)
}

fn coalesce_cmd(
    ctx: &mut Ctx,
    child: &Path,
    parent: Option<&Path>,
    chain: bool,
    in_place: bool,
    journal: Option<PathBuf>,
    progress: bool,
) -> anyhow::Result<()> {
    let fail = |ctx: &mut Ctx, path: &Path, kind: ErrorKind, msg: String| -> anyhow::Result<()> {
        let e = ctx.error(kind, msg);
        fail_rec(ctx, filter::record::record_for(path), e)?;
        Ok(())
    };
    let journal_of = |parent: &Path| {
        journal
            .clone()
            .unwrap_or_else(|| resize::default_journal(parent))
    };
    fn mode_for(in_place: bool, j: &Path) -> patch::Mode<'_> {
        if in_place {
            patch::Mode::InPlace { journal: j }
        } else {
            patch::Mode::Copy
        }
    }
    if !chain {
        let result = coalesce::parent_of(child, parent).and_then(|p| {
            let j = journal_of(&p);
            coalesce::coalesce_with(child, Some(&p), mode_for(in_place, &j), progress)
        });
        let rec = filter::record::record_for(child);
        return match result {
            Ok(done) => facet_record(ctx, rec, "coalesce", &done),
            Err(e) => fail(ctx, child, e.kind(), e.to_string()),
        };
    }
    // Only names are read to discover the chain, so a parent a crashed
    // in-place run left poisoned is found, and rolled back first. The
    // directory is opened once: every step opens its members from that
    // handle (a directory swapped between steps is not followed).
    let dir = match member::ChainDir::open(child) {
        Ok(d) => d,
        Err((kind, msg)) => return fail(ctx, child, kind, msg),
    };
    let members = dir.paths();
    let mut rolled_back = Vec::new();
    if in_place {
        for (i, p) in members.iter().enumerate().skip(1) {
            let j = journal_of(p);
            let at = dir.dir().pinned_path(&dir.names()[i]).map_err(|e| {
                coalesce::CoalesceError::Resize(resize::ResizeError::Io {
                    path: p.clone(),
                    source: e,
                })
            });
            match at.and_then(|at| coalesce::recover(&at, mode_for(in_place, &j))) {
                Ok(journal::Rollback::None) => {}
                Ok(r) => rolled_back.push((p.clone(), r)),
                Err(e) => return fail(ctx, p, e.kind(), e.to_string()),
            }
        }
    }
    for k in 0..members.len().saturating_sub(1) {
        if k > 0 {
            // Between two steps: a test swaps the directory here.
            system::hook::point("vhd-chain.coalesce.next_step");
        }
        let j = journal_of(&members[k + 1]);
        let opened: Result<Vec<member::Target>, member::Failure> = (k..members.len())
            .map(|i| dir.open_target(i, in_place && i == k + 1))
            .collect();
        let opened = match opened {
            Ok(o) => o,
            Err((kind, msg)) => return fail(ctx, &members[k], kind, msg),
        };
        match coalesce::coalesce_chain_step(&opened, mode_for(in_place, &j), progress) {
            Ok(mut done) => {
                if let Some((_, r)) = rolled_back.iter().find(|(p, _)| *p == members[k + 1]) {
                    done.journal = *r;
                }
                let rec = filter::record::record_for(&members[k]);
                facet_record(ctx, rec, "coalesce", &done)?;
            }
            Err(e) => return fail(ctx, &members[k], e.kind(), e.to_string()),
        }
    }
    // Cinder's coalesce_chain returns the base: so does the last record.
    if let Some(base) = members.last() {
        let mut rec = filter::record::record_for(base);
        let facts = dir
            .open_target(members.len() - 1, false)
            .and_then(|t| vhd_facts_of(base, t.file));
        let mut f = match facts {
            Ok(f) => f,
            Err((kind, msg)) => return fail(ctx, base, kind, msg),
        };
        f.insert("step".into(), "coalesced".into());
        f.insert("role".into(), "base".into());
        f.insert("chain_length".into(), members.len().into());
        rec.set(FACET, Value::Object(f));
        ctx.emit(&rec)?;
    }
    Ok(())
}

/// Where a facet's `step` key stands among `value`'s fields (where each
/// subcommand has always put it: scripts and golden outputs see the order).
#[derive(Clone, Copy)]
enum StepAt {
    First,
    Last,
}

/// The `vhd` facet: `value`'s fields plus `step`.
fn step_facet<T: serde::Serialize>(step: &str, value: &T, at: StepAt) -> anyhow::Result<Value> {
    let mut f = Map::new();
    if let StepAt::First = at {
        f.insert("step".into(), step.into());
    }
    if let Value::Object(m) = serde_json::to_value(value)? {
        f.extend(m);
    }
    if let StepAt::Last = at {
        f.insert("step".into(), step.into());
    }
    Ok(Value::Object(f))
}

/// Emit the record of `path` with the `vhd` facet set to `value`'s fields
/// then `step` (the order `check` and `relink` records have).
fn emit_step<T: serde::Serialize>(
    ctx: &mut Ctx,
    path: &Path,
    step: &str,
    value: &T,
) -> anyhow::Result<()> {
    let mut rec = filter::record::record_for(path);
    rec.set(FACET, step_facet(step, value, StepAt::Last)?);
    ctx.emit(&rec)?;
    Ok(())
}

/// Emit `rec` with the `vhd` facet set to `step` then `value`'s fields.
fn facet_record<T: serde::Serialize>(
    ctx: &mut Ctx,
    mut rec: Record,
    step: &str,
    value: &T,
) -> anyhow::Result<()> {
    rec.set(FACET, step_facet(step, value, StepAt::First)?);
    ctx.emit(&rec)?;
    Ok(())
}

fn relink_records(
    ctx: &mut Ctx,
    target: &Path,
    result: Result<Vec<relink::Relinked>, relink::RelinkError>,
) -> anyhow::Result<()> {
    match result {
        Ok(done) => {
            for r in done {
                emit_step(ctx, &r.child, "relink", &r)?;
            }
        }
        Err(err) => {
            let e = ctx.error(err.kind(), err.to_string());
            fail_rec(ctx, filter::record::record_for(target), e)?;
        }
    }
    Ok(())
}

/// Cinder's rule: 0.vhd, 1.vhd, ... until the next index is missing. A
/// numbered file beyond that first gap is [`ErrorKind::ChainGap`] (Cinder
/// would drop it silently), no 0.vhd is [`ErrorKind::ChainEmpty`].
/// Without numbered files, os-xenapi's old-style names make the chain:
/// `snap.vhd` (leaf), `image.vhd`, `base.vhd`, those present, in that
/// order; both kinds of names together are [`ErrorKind::UnexpectedMember`]
/// (os-xenapi would rename one over the other). `swap.vhd` is never part
/// of the chain (see [`ignored_members`]). Only names are looked at.
/// The paths are for records and messages: subcommands open the members
/// through [`member::ChainDir`], relative to the directory and never
/// through a link.
pub fn discover(dir: &Path) -> Result<Vec<PathBuf>, (ErrorKind, String)> {
    Ok(member::ChainDir::open(dir)?.paths())
}

/// [`discover`]'s rules over a list of file names (those of a directory,
/// or of a tarball's members); `place` names where they are, for messages.
pub fn chain_of_names(place: &str, names: &[String]) -> Result<Vec<String>, (ErrorKind, String)> {
    let mut numbered: Vec<u64> = Vec::new();
    let mut old: Vec<&str> = Vec::new();
    for name in names {
        if let Some(n) = name.strip_suffix(".vhd")
            && !n.is_empty()
            && n.bytes().all(|b| b.is_ascii_digit())
            && (n == "0" || !n.starts_with('0'))
            && let Ok(i) = n.parse::<u64>()
        {
            numbered.push(i);
        } else if let Some(o) = extract::OLD_STYLE[..3].iter().find(|o| **o == name) {
            old.push(o);
        }
    }
    if !old.is_empty() {
        if !numbered.is_empty() {
            return Err((
                ErrorKind::UnexpectedMember,
                format!(
                    "{place}: both numbered (N.vhd) and old-style ({}) members: which is the chain?",
                    old.join(", ")
                ),
            ));
        }
        return Ok(extract::OLD_STYLE[..3]
            .iter()
            .filter(|o| old.contains(o))
            .map(|o| (*o).to_owned())
            .collect());
    }
    numbered.sort_unstable();
    let mut chain = Vec::new();
    while numbered.binary_search(&(chain.len() as u64)).is_ok() {
        chain.push(format!("{}.vhd", chain.len()));
    }
    if chain.is_empty() {
        return Err((
            ErrorKind::ChainEmpty,
            format!("{place}: no 0.vhd, so no chain"),
        ));
    }
    if let Some(extra) = numbered.iter().find(|&&i| i >= chain.len() as u64) {
        return Err((
            ErrorKind::ChainGap,
            format!(
                "{place}: {}.vhd is missing but {extra}.vhd exists; Cinder would silently drop it",
                chain.len()
            ),
        ));
    }
    Ok(chain)
}

/// Files in `dir` that look like members but are never part of the chain
/// (the legacy `swap.vhd`), to report.
pub fn ignored_members(dir: &Path) -> Vec<PathBuf> {
    let swap = dir.join(extract::OLD_STYLE[3]);
    if std::fs::symlink_metadata(&swap).is_ok() {
        vec![swap]
    } else {
        Vec::new()
    }
}

fn discover_cmd(ctx: &mut Ctx, dir: &Path) -> anyhow::Result<()> {
    let dir_rec = || filter::record::record_for(dir);
    let members = match member::ChainDir::open(dir) {
        Ok(c) => c,
        Err((kind, msg)) => {
            let e = ctx.error(kind, msg);
            fail_rec(ctx, dir_rec(), e)?;
            return Ok(());
        }
    };
    let chain = members.paths();
    for p in ignored_members(dir) {
        ctx.warn(&format!(
            "{}: the legacy swap disk is not part of the chain; ignored",
            p.display()
        ));
    }
    let name = |i: usize| {
        chain
            .get(i)
            .and_then(|p| p.file_name())
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    };
    let mut facts = Vec::with_capacity(chain.len());
    for (i, p) in chain.iter().enumerate() {
        // Opened relative to the directory: a link is refused (symlink).
        let facts_now = members
            .open_member(i)
            .and_then(|m| vhd_facts_of(&m.path, m.file));
        match facts_now {
            Ok(f) => facts.push(f),
            Err((kind, msg)) => {
                let e = ctx.error(kind, msg);
                fail_rec(ctx, filter::record::record_for(p), e)?;
                return Ok(());
            }
        }
    }
    // Every member but the base must be differencing; the base must not.
    let n = chain.len();
    for (i, f) in facts.iter().enumerate() {
        let diff = f.get("disk_type").and_then(Value::as_str) == Some("differencing");
        let problem = if i + 1 == n && diff {
            Some((
                ErrorKind::ChainIncomplete,
                format!(
                    "{}, the base, is differencing: its parent is missing",
                    name(i)
                ),
            ))
        } else if i + 1 < n && !diff {
            Some((
                ErrorKind::NotDifferencing,
                format!(
                    "{} is {} but {} follows it: it should be differencing",
                    name(i),
                    f.get("disk_type")
                        .and_then(Value::as_str)
                        .unwrap_or("not differencing"),
                    name(i + 1)
                ),
            ))
        } else {
            None
        };
        if let Some((kind, msg)) = problem {
            let e = ctx.error(kind, msg);
            fail_rec(ctx, filter::record::record_for(&chain[i]), e)?;
            return Ok(());
        }
    }
    for (i, (p, mut f)) in chain.iter().zip(facts.clone()).enumerate() {
        f.insert("chain_index".into(), (i as u64).into());
        f.insert("chain_length".into(), (n as u64).into());
        let role = match (i, i + 1 == n) {
            (0, true) => "single",
            (0, false) => "leaf",
            (_, true) => "base",
            _ => "middle",
        };
        f.insert("role".into(), role.into());
        if let Some(parent) = facts.get(i + 1) {
            let matches =
                f.get("parent_uuid").is_some() && f.get("parent_uuid") == parent.get("uuid");
            f.insert("parent_uuid_matches".into(), matches.into());
        }
        let mut rec = filter::record::record_for(p);
        rec.set(FACET, Value::Object(f));
        ctx.emit(&rec)?;
    }
    Ok(())
}
