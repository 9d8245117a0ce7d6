//! `--now` takes only times that exist: a day a month does not have, a
//! February 29 of a common year or a leap second is a usage error (exit 2,
//! one error record), in every subcommand that takes `--now`.
#![cfg(test)]

use serde_json::Value;
use std::process::{Command, Output, Stdio};

/// `cachewalk SUB --now NOW` over an empty cache directory (`remove`
/// reads its records from an empty stdin instead).
fn run(sub: &str, now: &str) -> Output {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_cachewalk"));
    cmd.args([sub, "--now", now]).stdin(Stdio::null());
    if sub != "remove" {
        cmd.arg(dir.path());
    }
    cmd.output().unwrap()
}

#[test]
fn an_impossible_now_is_a_usage_error() {
    for sub in ["nova", "glance", "remove"] {
        for now in [
            "2026-02-31T00:00:00Z",
            "2026-04-31T12:00:00Z",
            "2025-02-29T00:00:00+00:00",
            "2026-12-31T23:59:60Z",
        ] {
            let out = run(sub, now);
            assert_eq!(out.status.code(), Some(2), "{sub} --now {now}");
            let text = String::from_utf8(out.stdout).unwrap();
            let records: Vec<Value> = text
                .lines()
                .map(|l| serde_json::from_str(l).unwrap())
                .collect();
            assert_eq!(records.len(), 1, "{sub} --now {now}: {text}");
            assert_eq!(records[0]["error"]["kind"], "usage", "{text}");
            let message = records[0]["error"]["message"].as_str().unwrap();
            assert!(message.contains(now), "{message}");
        }
    }
}

#[test]
fn a_leap_day_is_a_time() {
    for sub in ["nova", "glance", "remove"] {
        for now in ["2024-02-29T00:00:00Z", "2000-02-29 12:00:00.5+00:00"] {
            let out = run(sub, now);
            assert_eq!(out.status.code(), Some(0), "{sub} --now {now}: {out:?}");
        }
    }
}

/// `-q` is global: after the subcommand as before it, it silences the
/// stderr line and leaves the error record and the exit status.
#[test]
fn quiet_goes_anywhere_on_the_line() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing");
    for args in [
        vec!["-q", "nova"],
        vec!["nova", "-q"],
        vec!["glance", "--quiet"],
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_cachewalk"))
            .args(&args)
            .arg(&missing)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(
            out.stderr.is_empty(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let rec: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(rec["error"]["kind"], "not_found", "{args:?}: {rec}");
    }
}
