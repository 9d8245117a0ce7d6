//! With no token and no --url, the Glance tools log in to a real Keystone
//! 30 from the usual OS_* variables and take the image endpoint from its
//! catalog (here a real Glance, which in its test mode reads identity
//! headers rather than validating tokens); a wrong password is a clear
//! error that never shows the password.
#![cfg(test)]

use glance_server::{AUTH, create, start, start_keystone};
use test_support::glance_server;

use serde_json::Value;
use std::process::Command;

fn dump_with(env: &[(&str, &str)]) -> (i32, Vec<Value>, String) {
    let mut c = Command::new(env!("CARGO_BIN_EXE_glance-dump"));
    for h in AUTH {
        c.args(["--header", h]);
    }
    for k in [
        "OS_IMAGE_URL",
        "OS_AUTH_TOKEN",
        "OS_CLOUD",
        "OS_REGION_NAME",
    ] {
        c.env_remove(k);
    }
    c.envs(env.iter().copied());
    let out = c.output().unwrap();
    let recs = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    (
        out.status.code().unwrap_or(-1),
        recs,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn keystone_login_finds_the_image_endpoint() {
    let Some(glance) = start() else { return };
    let Some(keystone) = start_keystone(&glance.url) else {
        return;
    };
    let id = create(
        &glance.url,
        r#"{"name":"via-keystone","disk_format":"raw","container_format":"bare"}"#,
    );
    let login = [
        ("OS_AUTH_URL", keystone.url.as_str()),
        ("OS_USERNAME", "admin"),
        ("OS_PASSWORD", "secret"),
        ("OS_PROJECT_NAME", "admin"),
        ("OS_USER_DOMAIN_NAME", "Default"),
        ("OS_PROJECT_DOMAIN_NAME", "Default"),
    ];
    let (code, recs, err) = dump_with(&login);
    assert_eq!(code, 0, "{err}");
    assert_eq!(recs.len(), 1, "{recs:?}");
    assert_eq!(recs[0]["image"]["id"], id.as_str());

    // Another region has no image endpoint: said so.
    let mut other = login.to_vec();
    other.push(("OS_REGION_NAME", "Elsewhere"));
    let (code, recs, err) = dump_with(&other);
    assert_eq!(code, 2);
    // A fatal error: one error record, saying what stderr says.
    assert_eq!(recs.len(), 1, "{recs:?}");
    assert_eq!(recs[0]["error"]["tool"], "glance-dump");
    assert!(
        err.contains("no public image endpoint in region Elsewhere"),
        "{err}"
    );
    let m = recs[0]["error"]["message"].as_str().unwrap();
    assert!(
        m.contains("no public image endpoint in region Elsewhere"),
        "{m}"
    );

    // A wrong password: keystone's 401, and the password never printed.
    let mut wrong = login.to_vec();
    wrong[2] = ("OS_PASSWORD", "not-the-password-xyzzy");
    let (code, recs, err) = dump_with(&wrong);
    assert_eq!(code, 2);
    assert_eq!(recs.len(), 1, "{recs:?}");
    assert!(
        err.contains("keystone login") && err.contains("401"),
        "{err}"
    );
    assert!(!err.contains("xyzzy"), "{err}");
    let rec = recs[0].to_string();
    assert!(
        rec.contains("keystone login") && rec.contains("401"),
        "{rec}"
    );
    assert!(!rec.contains("xyzzy"), "{rec}");
}
