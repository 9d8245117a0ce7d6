//! Runs the README's ```console glance block against three real Glances
//! (`$SRC` with the two images the README describes, `$DST` and `$DR`
//! empty), in one scratch directory, and compares each command's output
//! with the lines shown. The headerauth test server takes identity headers
//! instead of a token: a shell prelude adds them to the two tools, which
//! is the only thing it changes.
#![cfg(test)]

use glance_server::{AUTH, create, start, upload};
use test_support::glance_server;

use pipeline_tests::{readme_steps, tool, tools_path, workspace};
use std::process::Command;

/// Shell functions putting the test identity on every endpoint flag.
fn prelude() -> String {
    let q = |h: &str| format!("'{h}'");
    let headers: Vec<String> = AUTH.iter().map(|h| format!("--header {}", q(h))).collect();
    let source: Vec<String> = AUTH
        .iter()
        .map(|h| format!("--source-header {}", q(h)))
        .collect();
    format!(
        "glance-dump() {{ command glance-dump \"$@\" {h}; }}\n\
         imginfo-parse() {{ command imginfo-parse \"$@\" {h}; }}\n\
         glance-load() {{ local s=(); for a in \"$@\"; do [ \"$a\" = --source-url ] && s=({s}); done; \
         command glance-load \"$@\" {h} \"${{s[@]}}\"; }}\n",
        h = headers.join(" "),
        s = source.join(" "),
    )
}

#[test]
fn readme_glance_commands_give_the_output_shown() {
    let readme = std::fs::read_to_string(workspace().join("README.md")).unwrap();
    let steps = readme_steps(&readme, Some("glance"));
    assert!(
        steps.len() >= 5,
        "only {} Glance README commands",
        steps.len()
    );
    if tool("glance-load").is_err() {
        assert!(std::env::var_os("CI").is_none(), "glance-load is not built");
        eprintln!("skipping: glance-load is not built");
        return;
    };
    let Some(src) = start() else { return };
    let Some(dst) = start() else { return };
    let Some(dr) = start() else { return };
    let scratch = tempfile::tempdir().unwrap();
    let data = scratch.path().join("cirros.raw");
    std::fs::write(&data, glance_server::bytes_of(7, 1 << 20)).unwrap();
    let id = create(
        &src.url,
        r#"{"name":"cirros","disk_format":"raw","container_format":"bare","os_distro":"cirros"}"#,
    );
    upload(&src.url, &id, &data);
    std::fs::remove_file(&data).unwrap();
    create(
        &src.url,
        r#"{"name":"empty","disk_format":"qcow2","container_format":"bare"}"#,
    );
    let path = tools_path();
    let prelude = prelude();
    for step in &steps {
        let out = Command::new("bash")
            .args(["--noprofile", "--norc", "-o", "pipefail", "-c"])
            .arg(format!("{prelude}{}", step.command))
            .current_dir(scratch.path())
            .env("PATH", &path)
            .env("SRC", &src.url)
            .env("DST", &dst.url)
            .env("DR", &dr.url)
            .env("LC_ALL", "C")
            .env_remove("OS_AUTH_TOKEN")
            .env_remove("OS_IMAGE_URL")
            .output()
            .unwrap();
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            step.expected,
            "README.md line {}: `{}`\nstderr: {}",
            step.line,
            step.command,
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            out.status.success(),
            "README.md line {}: exit {:?}",
            step.line,
            out.status.code()
        );
    }
}
