//! Runs every command of the README's ```console blocks, in order, in one
//! scratch directory (holding a copy of `examples/`), and compares each
//! command's standard output with the lines shown under it.
#![cfg(test)]

use pipeline_tests::{readme_steps, tool, tools_path, workspace};
use std::path::Path;
use std::process::Command;

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        // examples/fleet/ is a directory.
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &to.join(e.file_name()));
        } else {
            std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
    }
}

fn have(program: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {program}")])
        .output()
        .is_ok_and(|o| o.status.success())
}

#[test]
fn readme_cookbook_commands_give_the_output_shown() {
    let root = workspace();
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    let steps = readme_steps(&readme, None);
    assert!(
        steps.len() >= 10,
        "only {} README commands found",
        steps.len()
    );
    for needed in ["qemu-img", "jq"] {
        if !have(needed) {
            assert!(
                std::env::var_os("CI").is_none(),
                "{needed} is required to run the README cookbook in CI"
            );
            eprintln!("skipping the README cookbook: {needed} is not installed");
            return;
        }
    }
    tool("imginfo-parse").unwrap_or_else(|e| panic!("{e}"));
    let scratch = tempfile::tempdir().unwrap();
    copy_dir(&root.join("examples"), &scratch.path().join("examples"));
    let path = tools_path();
    for step in &steps {
        let out = Command::new("bash")
            .args([
                "--noprofile",
                "--norc",
                "-o",
                "pipefail",
                "-c",
                &step.command,
            ])
            .current_dir(scratch.path())
            .env("PATH", &path)
            .env("LC_ALL", "C")
            .env("TZ", "UTC")
            .env_remove("QEMU_IMG")
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert_eq!(
            stdout,
            step.expected,
            "README.md line {}: `{}`\nstderr: {}",
            step.line,
            step.command,
            String::from_utf8_lossy(&out.stderr)
        );
        // A step that shows its own exit status may fail; others must not.
        if !step.command.contains("PIPESTATUS") && !step.command.contains("$?") {
            assert!(
                out.status.success(),
                "README.md line {}: `{}` exited {:?}: {}",
                step.line,
                step.command,
                out.status.code(),
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
}

#[test]
fn steps_are_found_with_their_output() {
    let text = "text\n```console\n$ a\n1\n2\n$ b\n```\n$ not\n```sh\n$ no\n```\n\
                ```console glance\n$ g\nout\n```\n";
    let s = readme_steps(text, None);
    assert_eq!(s.len(), 2);
    assert_eq!(
        (s[0].command.as_str(), s[0].expected.as_str()),
        ("a", "1\n2\n")
    );
    assert_eq!((s[1].command.as_str(), s[1].expected.as_str()), ("b", ""));
    let g = readme_steps(text, Some("glance"));
    assert_eq!(g.len(), 1);
    assert_eq!(
        (g[0].command.as_str(), g[0].expected.as_str()),
        ("g", "out\n")
    );
}
