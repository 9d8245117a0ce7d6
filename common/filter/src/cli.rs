//! What every tool's command line shares: `--quiet`, `--version`, the hidden
//! `--generate man|bash|zsh|fish`, and the one `main` wrapper that maps
//! results to exit statuses (DESIGN.md section 2).

use crate::jsonl::RecordWriter;
use crate::record::{ErrorFacet, Record};
use crate::status::Status;
use clap::{ArgMatches, Command};
use std::io::{self, Write};
use std::path::PathBuf;
use std::process::ExitCode;

/// The one version all tools report.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Flags every tool has; flatten into the tool's clap struct with
/// `#[command(flatten)]`.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct SharedArgs {
    /// Do not print error lines on stderr (the records still carry them,
    /// and the exit status still tells)
    #[arg(short, long, global = true)]
    pub quiet: bool,

    /// Write a man page or a shell completion script to stdout and exit
    #[arg(long, value_name = "WHAT", hide = true, value_enum)]
    pub generate: Option<Generate>,
}

/// What `--generate` writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Generate {
    /// The roff man page.
    Man,
    /// bash completion.
    Bash,
    /// zsh completion.
    Zsh,
    /// fish completion.
    Fish,
}

/// A tool: its clap definition plus how to run it.
pub trait Tool: clap::Parser {
    /// The binary name (`imginfo-parse`).
    const NAME: &'static str;
    /// Hand-written roff sections appended to the generated man page
    /// (OUTPUT FORMAT, EXIT STATUS, EXAMPLES, ...).
    const MAN_EXTRA: &'static str = "";
    /// The shared flags inside the parsed arguments.
    fn shared(&self) -> &SharedArgs;
    /// Do the work, writing records through `ctx`.
    fn run(self, ctx: &mut Ctx) -> anyhow::Result<()>;
}

/// The tool's clap command with the shared version.
pub fn command<T: Tool>() -> Command {
    T::command()
        .name(T::NAME)
        .bin_name(T::NAME)
        .version(VERSION)
}

/// The running tool's output side: the record writer, stderr messages and
/// the exit status being accumulated.
pub struct Ctx {
    tool: &'static str,
    quiet: bool,
    out: RecordWriter<Box<dyn Write>>,
    status: Status,
    stopped_reported: bool,
    /// Records go to the terminal a progress meter draws on: its line is
    /// cleared before each.
    tty: bool,
    /// Records are held and written in large pieces ([`Ctx::hold_output`]).
    held: bool,
    /// When held records were last written out.
    flushed_at: std::time::Instant,
}

impl Ctx {
    /// A context writing records to `out`.
    pub fn new(tool: &'static str, quiet: bool, out: Box<dyn Write>) -> Self {
        Ctx {
            tool,
            quiet,
            out: RecordWriter::new(out),
            status: Status::Ok,
            stopped_reported: false,
            tty: io::IsTerminal::is_terminal(&io::stdout()),
            held: false,
            flushed_at: std::time::Instant::now(),
        }
    }

    /// How long a held record may wait for the next one to be written.
    const HOLD: std::time::Duration = std::time::Duration::from_millis(100);

    /// Hold records and write them in large pieces rather than one write
    /// per record: for a tool turning out many records a second. The tool
    /// calls [`Ctx::flush`] before it waits for input, so a pipe still
    /// sees each record as soon as nothing more can be done; a record is
    /// also written out with the next one emitted after [`Ctx::HOLD`], and
    /// everything is when the run ends. Not on a terminal: a person sees
    /// each record as it comes.
    pub fn hold_output(&mut self) {
        self.held = !self.tty;
    }

    /// Write out the records held.
    pub fn flush(&mut self) -> io::Result<()> {
        self.flushed_at = std::time::Instant::now();
        self.out.flush()
    }

    /// Stop holding records, and write out those held (at the end of a
    /// run).
    pub fn release(&mut self) -> io::Result<()> {
        self.held = false;
        if self.out.holds() {
            return self.flush();
        }
        Ok(())
    }

    /// The tool's name, for error facets.
    pub fn tool(&self) -> &'static str {
        self.tool
    }

    /// Write one record (a [`Record`], or anything serialized as one).
    pub fn emit<T: serde::Serialize + ?Sized>(&mut self, rec: &T) -> io::Result<()> {
        if self.tty {
            system::progress::clear();
        }
        if self.held {
            self.out.append(rec)?;
            if self.flushed_at.elapsed() >= Self::HOLD {
                return self.flush();
            }
            return Ok(());
        }
        self.out.write(rec)
    }

    /// Emit records computed all at once, in few large writes.
    pub fn emit_batch<T: serde::Serialize>(&mut self, recs: &[T]) -> io::Result<()> {
        if self.tty {
            system::progress::clear();
        }
        self.out.write_batch(recs)
    }

    /// [`Ctx::emit_batch`], serialized on `jobs` threads (written in order).
    pub fn emit_batch_on<T: serde::Serialize + Sync>(
        &mut self,
        recs: &[T],
        jobs: usize,
    ) -> io::Result<()> {
        if self.tty {
            system::progress::clear();
        }
        self.out.write_batch_on(recs, jobs)
    }

    /// [`Ctx::fail`] for the file (or endpoint) `path` with an error that
    /// classifies itself (an HTTP error from the client layer).
    pub fn fail_on(&mut self, path: &str, e: &dyn crate::record::Classified) -> io::Result<()> {
        let err = ErrorFacet::classified(self.tool(), e);
        self.fail(Record::from_path(path), err)
    }

    /// Attach `err` to `rec`, emit it, say so on stderr, and remember that
    /// the run failed (exit 2).
    pub fn fail(&mut self, mut rec: Record, err: ErrorFacet) -> io::Result<()> {
        let what = match (rec.path(), err.line) {
            (Some(p), _) => format!("{p}: "),
            (None, Some(l)) => format!("line {l}: "),
            (None, None) => String::new(),
        };
        // The records before it reach stdout before its message reaches
        // stderr (the order a shared terminal or log shows).
        if self.held {
            self.flush()?;
        }
        self.warn(&format!("{what}{}", err.message));
        rec.set_error(&err);
        self.status.merge(Status::Error);
        self.emit(&rec)?;
        // Stopped by a signal: this record says so; the run ends here.
        if err.kind == crate::ErrorKind::Interrupted
            && let Some(sig) = system::signal::pending()
        {
            self.stopped_reported = true;
            return Err(system::files::stopped(sig));
        }
        Ok(())
    }

    /// A new error facet from this tool.
    pub fn error(&self, kind: crate::ErrorKind, message: impl Into<String>) -> ErrorFacet {
        ErrorFacet::new(self.tool, kind, message)
    }

    /// One line on stderr, `tool: message`, unless `--quiet`. A closed
    /// stderr is ignored: there is nobody left to tell.
    pub fn warn(&self, message: &str) {
        if !self.quiet {
            warn(self.tool, message);
        }
    }

    /// Merge a status into the run's exit status.
    pub fn merge(&mut self, s: Status) {
        self.status.merge(s);
    }

    /// The exit status so far.
    pub fn status(&self) -> Status {
        self.status
    }
}

/// Read JSON Lines records from stdin and hand each to `f`: records that
/// already carry an `error` pass through unchanged, malformed lines become
/// error records with their line number, and the stream goes on.
pub fn each_stdin_record(
    ctx: &mut Ctx,
    mut f: impl FnMut(&mut Ctx, Record) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    // A signal ends a read blocked on stdin (std's line reader would retry).
    let stdin =
        io::BufReader::with_capacity(64 * 1024, system::files::Stoppable(io::stdin().lock()));
    let mut reader = crate::jsonl::RecordReader::new(stdin);
    while let Some(item) = reader.next_record()? {
        match item {
            Ok(rec) if rec.has_error() => ctx.emit(&rec)?,
            Ok(rec) => f(ctx, rec)?,
            Err(bad) => {
                let e = ctx.error(bad.kind, bad.message).at_line(bad.line);
                ctx.fail(Record::new(), e)?;
            }
        }
    }
    Ok(())
}

/// The file a record names ([`crate::record::path_of`]). A record read
/// from stdin cannot name `-`: stdin carries the records.
pub fn record_input_path(rec: &Record, from_stdin: bool) -> Result<PathBuf, String> {
    match crate::record::path_of(rec)? {
        Some(p) if from_stdin && system::files::is_dash(&p) => {
            Err("`-` names stdin, which carries the records".to_owned())
        }
        Some(p) => Ok(p),
        None => Err("record has no string `path`".to_owned()),
    }
}

/// The inputs of a tool taking FILE arguments or, without them, records
/// naming files on stdin: `f` gets each record (`{"path": FILE}` for an
/// argument, where `-` is stdin) with the file it names. A stdin record
/// naming no file, or `-`, is an error record (`bad_record`) and the
/// stream goes on; records with an `error` pass through
/// ([`each_stdin_record`]).
pub fn each_input_file(
    ctx: &mut Ctx,
    files: &[PathBuf],
    mut f: impl FnMut(&mut Ctx, Record, PathBuf) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    if files.is_empty() {
        return each_stdin_record(ctx, |ctx, rec| match record_input_path(&rec, true) {
            Ok(p) => f(ctx, rec, p),
            Err(why) => {
                let e = ctx.error(crate::ErrorKind::BadRecord, why);
                Ok(ctx.fail(rec, e)?)
            }
        });
    }
    for p in files {
        f(ctx, crate::record::record_for(p), p.clone())?;
    }
    Ok(())
}

/// Write `tool: message` to stderr, with control characters made visible
/// so a hostile file name cannot forge lines or move the cursor.
pub fn warn(tool: &str, message: &str) {
    // A progress line on the terminal goes first, not the message's start.
    system::progress::clear();
    let _ = writeln!(io::stderr().lock(), "{tool}: {}", visible(message));
}

/// Control characters (but tab) replaced by U+FFFD.
fn visible(message: &str) -> String {
    message
        .chars()
        .map(|c| {
            if c.is_control() && c != '\t' {
                char::REPLACEMENT_CHARACTER
            } else {
                c
            }
        })
        .collect()
}

/// The line a tool prints when the watchdog ends it after a signal.
fn warn_stopped(sig: i32) {
    let name = std::env::args_os()
        .next()
        .map(|a| {
            std::path::Path::new(&a)
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default()
        })
        .unwrap_or_default();
    warn(&name, &format!("interrupted by signal {sig}; stopped"));
}

/// Returned (through `anyhow`) by a tool that stopped on a signal after
/// cleaning up: the process exits 128+N.
#[derive(Debug, thiserror::Error)]
#[error("interrupted by signal {0}; cleaned up")]
pub struct Interrupted(pub i32);

/// Whether an error is, somewhere in its chain, a closed pipe.
pub fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<io::Error>()
            .is_some_and(|io| io.kind() == io::ErrorKind::BrokenPipe)
    })
}

/// Render the man page: clap's NAME, SYNOPSIS, DESCRIPTION and OPTIONS,
/// then the tool's hand-written sections, then the version. No date, so the
/// page is reproducible.
pub fn man_page<T: Tool>() -> io::Result<Vec<u8>> {
    let cmd = command::<T>();
    let man = clap_mangen::Man::new(cmd.clone());
    let mut out = Vec::new();
    man.render_title(&mut out)?;
    man.render_name_section(&mut out)?;
    man.render_synopsis_section(&mut out)?;
    man.render_description_section(&mut out)?;
    man.render_options_section(&mut out)?;
    render_subcommands(&cmd, &mut out)?;
    out.extend_from_slice(T::MAN_EXTRA.as_bytes());
    if !T::MAN_EXTRA.is_empty() && !T::MAN_EXTRA.ends_with('\n') {
        out.push(b'\n');
    }
    man.render_version_section(&mut out)?;
    Ok(out)
}

/// SUBCOMMANDS: each visible subcommand's synopsis, description and
/// options, rendered from clap so the one page cannot drift from the
/// parser. (clap_mangen's own section only names `tool-sub(1)` pages,
/// which are not shipped.) The global flags and `--help` are under OPTIONS
/// once.
fn render_subcommands(cmd: &Command, out: &mut Vec<u8>) -> io::Result<()> {
    let mut cmd = cmd.clone();
    // Gives each subcommand its bin name (`vhd-chain info`) and the globals.
    cmd.build();
    let subs: Vec<Command> = cmd
        .get_subcommands()
        .filter(|s| !s.is_hide_set() && s.get_name() != "help")
        .cloned()
        .collect();
    if subs.is_empty() {
        return Ok(());
    }
    out.extend_from_slice(b".SH SUBCOMMANDS\n");
    for sub in subs {
        let name = sub.get_name().replace('-', "\\-");
        let sub = sub.mut_args(|a| {
            if a.is_global_set() || a.get_id() == "help" {
                a.hide(true)
            } else {
                a
            }
        });
        let man = clap_mangen::Man::new(sub);
        out.extend_from_slice(format!(".SS {name}\n").as_bytes());
        let mut part = Vec::new();
        man.render_synopsis_section(&mut part)?;
        subsection_body(out, &mut part, ".SH SYNOPSIS");
        out.extend_from_slice(b".PP\n");
        man.render_description_section(&mut part)?;
        subsection_body(out, &mut part, ".SH DESCRIPTION");
        out.extend_from_slice(b".PP\n");
        man.render_options_section(&mut part)?;
        subsection_body(out, &mut part, ".SH OPTIONS");
    }
    Ok(())
}

/// Append a section clap_mangen rendered, less its heading (it is a
/// subsection here) and the page preamble (already at the page's top);
/// `part` is emptied.
fn subsection_body(out: &mut Vec<u8>, part: &mut Vec<u8>, heading: &str) {
    for line in part.split_inclusive(|&b| b == b'\n') {
        let l = line.trim_ascii_end();
        if l != heading.as_bytes() && !l.ends_with(b".ds Aq \\(aq") && !l.ends_with(b".ds Aq '") {
            out.extend_from_slice(line);
        }
    }
    part.clear();
}

fn generate<T: Tool>(what: Generate, out: &mut dyn Write) -> io::Result<()> {
    use clap_complete::Shell;
    let shell = match what {
        Generate::Man => return out.write_all(&man_page::<T>()?),
        Generate::Bash => Shell::Bash,
        Generate::Zsh => Shell::Zsh,
        Generate::Fish => Shell::Fish,
    };
    let mut cmd = command::<T>();
    clap_complete::generate(shell, &mut cmd, T::NAME, out);
    Ok(())
}

/// Parse arguments, run the tool, and turn the outcome into an exit
/// status. Every tool's `main.rs` is one call to this.
///
/// - `--help`/`--version`: 0; bad usage: 2 (clap's message on stderr);
/// - the tool's accumulated [`Status`] otherwise;
/// - an error returned by the tool: `tool: message` on stderr, 2;
/// - stdout closed by the reader (`| head -1`): quiet 0.
pub fn main<T: Tool>() -> ExitCode {
    // Every tool stops within a second of SIGINT/SIGTERM, wherever it is.
    system::signal::install_with_watchdog(warn_stopped);
    let matches = match command::<T>().try_get_matches() {
        Ok(m) => m,
        Err(e) => return clap_failure::<T>(&e),
    };
    run_matches::<T>(&matches)
}

/// Bad usage: clap's message on stderr and, so a script reading stdout
/// sees it too, an error record of kind `usage`; `--help`/`--version`
/// print as usual.
fn clap_failure<T: Tool>(e: &clap::Error) -> ExitCode {
    use clap::error::ErrorKind as K;
    let _ = e.print();
    let code = e.exit_code().clamp(0, 255) as u8;
    if !matches!(
        e.kind(),
        K::DisplayHelp | K::DisplayVersion | K::DisplayHelpOnMissingArgumentOrSubcommand
    ) {
        let first = e.to_string();
        let first = first.lines().next().unwrap_or("bad usage");
        let message = first.strip_prefix("error: ").unwrap_or(first);
        emit_fatal(T::NAME, crate::ErrorKind::Usage, message);
    }
    ExitCode::from(code)
}

/// One error record on stdout for a failure that ends the run.
fn emit_fatal(tool: &str, kind: crate::ErrorKind, message: &str) {
    let mut rec = Record::new();
    rec.set_error(&ErrorFacet::new(tool, kind, message));
    let mut w = RecordWriter::new(io::stdout().lock());
    let _ = w.write(&rec);
}

// A usage error found by the tool itself (a flag that does nothing in
// this mode): exit 2, kind `usage`. Defined below the records so the
// client layers can raise it too.
pub use system::kind::{UsageError, usage};

/// The kind of a fatal error: the first classified cause in its chain.
pub fn fatal_kind(e: &anyhow::Error) -> crate::ErrorKind {
    for c in e.chain() {
        if c.downcast_ref::<UsageError>().is_some() {
            return crate::ErrorKind::Usage;
        }
        if let Some(r) = c.downcast_ref::<system::files::Refusal>() {
            return r.kind;
        }
        if let Some(io) = c.downcast_ref::<io::Error>() {
            return crate::ErrorKind::from_io(io);
        }
    }
    crate::ErrorKind::Io
}

fn run_matches<T: Tool>(matches: &ArgMatches) -> ExitCode {
    let cli = match T::from_arg_matches(matches) {
        Ok(c) => c,
        Err(e) => return clap_failure::<T>(&e),
    };
    if let Some(what) = cli.shared().generate {
        let mut out = io::stdout().lock();
        return match generate::<T>(what, &mut out).and_then(|()| out.flush()) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) if e.kind() == io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
            Err(e) => {
                warn(T::NAME, &e.to_string());
                ExitCode::from(2)
            }
        };
    }
    let mut ctx = Ctx::new(T::NAME, cli.shared().quiet, Box::new(io::stdout().lock()));
    let mut result = cli.run(&mut ctx);
    // Records held back are written before anything else is said.
    if let Err(e) = ctx.release()
        && result.is_ok()
    {
        result = Err(anyhow::Error::from(e).context("writing stdout"));
    }
    // A tool stopped by a signal exits 128+N however it wound down (a
    // per-record `interrupted` error, a stopped read, a clean return).
    let signalled = system::signal::pending().or_else(|| match &result {
        Err(e) => e.downcast_ref::<Interrupted>().map(|i| i.0),
        Ok(()) => None,
    });
    match result {
        Err(e) if is_broken_pipe(&e) => ExitCode::SUCCESS,
        result if signalled.is_some() => {
            let sig = signalled.unwrap_or(0);
            let message = format!("interrupted by signal {sig}; cleaned up");
            warn(T::NAME, &message);
            if result.is_err() && !ctx.stopped_reported {
                let mut rec = Record::new();
                rec.set_error(&ErrorFacet::new(
                    T::NAME,
                    crate::ErrorKind::Interrupted,
                    message,
                ));
                let _ = ctx.emit(&rec);
            }
            ExitCode::from(system::signal::exit_code(sig))
        }
        Ok(()) => ctx.status().into(),
        Err(e) => {
            let message = format!("{e:#}");
            warn(T::NAME, &message);
            let mut rec = Record::new();
            rec.set_error(&ErrorFacet::new(T::NAME, fatal_kind(&e), message));
            let _ = ctx.emit(&rec);
            ExitCode::from(Status::Error.code())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broken_pipe_found_in_chain() {
        let e = anyhow::Error::from(io::Error::from(io::ErrorKind::BrokenPipe)).context("writing");
        assert!(is_broken_pipe(&e));
        let e = anyhow::anyhow!("other");
        assert!(!is_broken_pipe(&e));
    }

    #[derive(Debug, clap::Parser)]
    #[command(about = "A test tool")]
    struct Demo {
        #[command(flatten)]
        shared: SharedArgs,
        /// A file
        file: Vec<String>,
    }

    impl Tool for Demo {
        const NAME: &'static str = "demo";
        const MAN_EXTRA: &'static str = ".SH \"EXIT STATUS\"\n0 fine\n";
        fn shared(&self) -> &SharedArgs {
            &self.shared
        }
        fn run(self, _ctx: &mut Ctx) -> anyhow::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn man_page_has_generated_and_hand_written_sections() {
        let page = String::from_utf8(man_page::<Demo>().unwrap()).unwrap();
        assert!(page.contains(".TH demo 1"), "{page}");
        assert!(page.contains("\\-\\-quiet"));
        assert!(!page.contains("generate"), "hidden flag leaked: {page}");
        let status = page.find("EXIT STATUS").unwrap();
        assert!(page.find("OPTIONS").unwrap() < status);
        assert!(page.contains(VERSION));
    }

    #[derive(Debug, clap::Parser)]
    #[command(about = "A tool with subcommands")]
    struct Multi {
        #[command(subcommand)]
        command: Option<Sub>,
        #[command(flatten)]
        shared: SharedArgs,
    }

    #[derive(Debug, clap::Subcommand)]
    enum Sub {
        /// Walk it
        Walk {
            /// How far
            #[arg(long, value_name = "N")]
            max_count: Option<u64>,
            /// Old name
            #[arg(long = "new-name", alias = "old-name")]
            renamed: bool,
        },
        /// Set the parent
        SetParent {
            /// The child
            child: String,
        },
    }

    impl Tool for Multi {
        const NAME: &'static str = "multi";
        fn shared(&self) -> &SharedArgs {
            &self.shared
        }
        fn run(self, _ctx: &mut Ctx) -> anyhow::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn man_page_documents_every_subcommand_in_place() {
        let page = String::from_utf8(man_page::<Multi>().unwrap()).unwrap();
        assert!(page.contains(".SH SUBCOMMANDS\n.SS walk\n"), "{page}");
        assert!(page.contains(".SS set\\-parent\n"), "{page}");
        assert!(page.contains("\\fBmulti walk\\fR"), "{page}");
        assert!(
            page.contains("\\fB\\-\\-max\\-count\\fR \\fI<N>\\fR\nHow far"),
            "{page}"
        );
        assert!(page.contains("\\-\\-new\\-name"), "{page}");
        // No pointer to a page that is not shipped, no hidden alias, and
        // the globals once.
        assert!(!page.contains("(1)"), "{page}");
        assert!(!page.contains("old\\-name"), "{page}");
        assert_eq!(page.matches("\\-\\-quiet").count(), 2, "{page}");
        assert_eq!(page.matches(".SH OPTIONS").count(), 1, "{page}");
    }

    #[test]
    fn completions_render_for_each_shell() {
        for g in [Generate::Bash, Generate::Zsh, Generate::Fish] {
            let mut out = Vec::new();
            generate::<Demo>(g, &mut out).unwrap();
            let s = String::from_utf8(out).unwrap();
            assert!(s.contains("quiet"), "{g:?}: {s}");
        }
    }

    #[test]
    fn stdin_records_cannot_name_stdin() {
        let rec = |j: serde_json::Value| match j {
            serde_json::Value::Object(m) => Record::from_map(m),
            _ => Record::new(),
        };
        let dash = rec(serde_json::json!({"path": "-"}));
        // Named on the command line, `-` is stdin; in a record on stdin,
        // which carries the records, it is refused (fail closed).
        assert_eq!(record_input_path(&dash, false), Ok(PathBuf::from("-")));
        assert!(
            record_input_path(&dash, true)
                .is_err_and(|e| e.contains("stdin, which carries the records"))
        );
        let none = rec(serde_json::json!({"name": "x"}));
        assert_eq!(
            record_input_path(&none, true),
            Err("record has no string `path`".to_owned())
        );
        let file = rec(serde_json::json!({"path": "a.vhd"}));
        assert_eq!(record_input_path(&file, true), Ok(PathBuf::from("a.vhd")));
    }

    #[test]
    fn file_arguments_become_records() {
        let mut ctx = Ctx::new("demo", true, Box::new(io::sink()));
        let mut seen = Vec::new();
        let files = [PathBuf::from("-"), PathBuf::from("b")];
        each_input_file(&mut ctx, &files, |_, rec, p| {
            seen.push((rec.path().map(str::to_owned), p));
            Ok(())
        })
        .unwrap();
        assert_eq!(
            seen,
            [
                (Some("-".to_owned()), PathBuf::from("-")),
                (Some("b".to_owned()), PathBuf::from("b"))
            ]
        );
    }

    #[test]
    fn warn_neutralises_control_characters() {
        let clean = visible("a\nb\x1b[2J\tc");
        assert_eq!(clean, "a\u{fffd}b\u{fffd}[2J\tc");
    }
}
