//! The command-line interface across the six tools:
//!
//! - each tool ships one man page (man/<tool>.1), and it documents every
//!   subcommand and every option clap accepts, and names no page that is
//!   not shipped (`vhd-chain-extract(1)`). `make man-check` keeps the
//!   committed page equal to the generated one; this checks what it says;
//! - one flag name per concept: a renamed flag's old spelling still parses,
//!   to exactly what the new name gives, and is shown nowhere.
#![cfg(test)]

use clap::FromArgMatches;
use filter::cli::Tool;
use pipeline_tests::workspace;

/// `--max-bytes` as roff writes it in a page.
fn roff_flag(long: &str) -> String {
    format!("\\fB\\-\\-{}\\fR", long.replace('-', "\\-"))
}

/// Every visible long option of `cmd` and its subcommands, with the
/// command path that takes it.
fn long_options(cmd: &clap::Command, path: &str, out: &mut Vec<(String, String)>) {
    for a in cmd.get_arguments().filter(|a| !a.is_hide_set()) {
        if let Some(long) = a.get_long() {
            out.push((path.to_owned(), long.to_owned()));
        }
    }
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        long_options(sub, &format!("{path} {}", sub.get_name()), out);
    }
}

fn check<T: Tool>() {
    let name = T::NAME;
    let page = std::fs::read_to_string(workspace().join("man").join(format!("{name}.1")))
        .unwrap_or_else(|e| panic!("man/{name}.1: {e}"));
    let mut cmd = filter::cli::command::<T>();
    cmd.build();
    let mut opts = Vec::new();
    long_options(&cmd, name, &mut opts);
    assert!(!opts.is_empty(), "{name}: no options found");
    let missing: Vec<String> = opts
        .iter()
        .filter(|(_, long)| !page.contains(&roff_flag(long)))
        .map(|(path, long)| format!("{path} --{long}"))
        .collect();
    assert!(
        missing.is_empty(),
        "man/{name}.1 lacks {missing:?}: run `make man`"
    );
    let subs: Vec<&str> = cmd
        .get_subcommands()
        .filter(|s| !s.is_hide_set() && s.get_name() != "help")
        .map(|s| s.get_name())
        .collect();
    for sub in &subs {
        let heading = format!(".SS {}\n", sub.replace('-', "\\-"));
        assert!(page.contains(&heading), "man/{name}.1 lacks {heading:?}");
    }
    // The page names itself and other tools' pages, never a per-subcommand
    // page: those are not shipped.
    let own = format!("{}\\-", name.replace('-', "\\-"));
    for line in page.lines().filter(|l| l.contains("(1)")) {
        assert!(
            !line.contains(&own),
            "man/{name}.1 names an unshipped page: {line}"
        );
    }
}

#[test]
fn every_option_of_every_subcommand_is_in_the_man_page() {
    check::<imginfo_parse::Cli>();
    check::<checksum_tee::Cli>();
    check::<vhd_chain::Cli>();
    check::<cachewalk::Cli>();
    check::<glance_dump::Cli>();
    check::<glance_load::Cli>();
}

/// The parsed command line, as `main` parses it.
fn parse<T: Tool + std::fmt::Debug>(args: &[&str]) -> String {
    let m = filter::cli::command::<T>()
        .try_get_matches_from(std::iter::once(T::NAME).chain(args.iter().copied()))
        .unwrap_or_else(|e| panic!("{} {args:?}: {e}", T::NAME));
    format!("{:?}", T::from_arg_matches(&m).unwrap())
}

/// Each `(old, new)` command line parses the same, and the old flag (the
/// first `--` word of `old` that `new` lacks) is not in the man page
/// (in the subcommand's part of it, when `old` starts with one).
fn old_spellings_work<T: Tool + std::fmt::Debug>(pairs: &[(&[&str], &[&str])]) {
    for (old, new) in pairs {
        assert_eq!(parse::<T>(old), parse::<T>(new), "{old:?} vs {new:?}");
        hidden::<T>(old, new);
    }
}

/// The flag `old` has and `new` lacks is nowhere in the (sub)command's
/// part of the man page.
fn hidden<T: Tool>(old: &[&str], new: &[&str]) {
    let page = String::from_utf8(filter::cli::man_page::<T>().unwrap()).unwrap();
    let part = match old.first() {
        Some(sub) if !sub.starts_with('-') => {
            let heading = format!(".SS {}\n", sub.replace('-', "\\-"));
            let from = page
                .find(&heading)
                .unwrap_or_else(|| panic!("no {heading:?}"));
            let rest = &page[from + heading.len()..];
            let to = [rest.find(".SS "), rest.find(".SH ")]
                .into_iter()
                .flatten()
                .min()
                .unwrap_or(rest.len());
            &rest[..to]
        }
        _ => &page[..],
    };
    {
        let gone = old
            .iter()
            .map(|w| w.split('=').next().unwrap_or(w))
            .find(|w| w.starts_with("--") && !new.iter().any(|n| n.starts_with(*w)))
            .unwrap_or_else(|| panic!("{old:?}: no old flag"));
        assert!(
            !part.contains(&roff_flag(&gone[2..])),
            "{}: hidden alias {gone} is documented",
            T::NAME
        );
    }
}

#[test]
fn imginfo_parse_old_flag_names() {
    old_spellings_work::<imginfo_parse::Cli>(&[(
        &["--url", "http://h/i", "--timeout", "5"],
        &["--image-url", "http://h/i", "--timeout", "5"],
    )]);
    // --volume-size-gb N is a hidden flag of its own (its bare number is
    // GiB, --volume-size's bytes), giving the same volume.
    let gib = |args: &[&str]| {
        let m = filter::cli::command::<imginfo_parse::Cli>()
            .try_get_matches_from(std::iter::once("imginfo-parse").chain(args.iter().copied()))
            .unwrap();
        imginfo_parse::Cli::from_arg_matches(&m)
            .unwrap()
            .volume_size_gib()
    };
    for (old, new, want) in [
        (
            &["--check", "--volume-size-gb", "20", "x"][..],
            &["--check", "--volume-size", "20G", "x"][..],
            20,
        ),
        (
            &["--check", "--volume-size-gb=0", "x"],
            &["--check", "--volume-size=0", "x"],
            0,
        ),
    ] {
        assert_eq!(gib(old), Some(want), "{old:?}");
        assert_eq!(gib(new), Some(want), "{new:?}");
        hidden::<imginfo_parse::Cli>(old, new);
    }
    // A volume size is whole GiB; the old and the new spelling together
    // are refused, never one silently preferred.
    let cmd = || filter::cli::command::<imginfo_parse::Cli>();
    for bad in [
        &["--check", "--volume-size", "1.5G", "x"][..],
        &["--check", "--volume-size", "20", "x"],
        &[
            "--check",
            "--volume-size",
            "1G",
            "--volume-size-gb",
            "1",
            "x",
        ],
    ] {
        let r =
            cmd().try_get_matches_from(std::iter::once("imginfo-parse").chain(bad.iter().copied()));
        assert!(r.is_err(), "{bad:?} accepted");
    }
}

#[test]
fn vhd_chain_old_flag_names() {
    old_spellings_work::<vhd_chain::Cli>(&[
        (
            &["extract", "--max-members", "3", "t.tgz", "d"],
            &["extract", "--max-count", "3", "t.tgz", "d"],
        ),
        (
            &["check", "--ignore-timestamps", "a.vhd"],
            &["check", "--no-timestamp-check", "a.vhd"],
        ),
        (
            &["set-parent", "--force", "c.vhd", "p.vhd"],
            &["set-parent", "--no-uuid-check", "c.vhd", "p.vhd"],
        ),
        (&["fix", "--force", "d"], &["fix", "--no-uuid-check", "d"]),
    ]);
}

#[test]
fn cachewalk_old_flag_names() {
    old_spellings_work::<cachewalk::Cli>(&[
        (
            &["glance", "--max-size", "5K", "--driver", "xattr", "c"],
            &[
                "glance",
                "--cache-max-size",
                "5K",
                "--cache-driver",
                "xattr",
                "c",
            ],
        ),
        (
            &[
                "remove",
                "--glance-cache",
                "c",
                "--image",
                "a",
                "b",
                "--driver",
                "sqlite",
            ],
            &[
                "remove",
                "--glance-cache",
                "c",
                "--image-id",
                "a",
                "b",
                "--cache-driver",
                "sqlite",
            ],
        ),
    ]);
}

#[test]
fn glance_dump_old_flag_names() {
    old_spellings_work::<glance_dump::Cli>(&[(
        &["--url", "http://g", "--limit", "2"],
        &["--url", "http://g", "--max-count", "2"],
    )]);
}
