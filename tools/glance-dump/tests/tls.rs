//! TLS is verified by default, and `--cacert` trusts a private CA: against
//! a real TLS server (`openssl s_server -www`, which answers any GET with
//! an HTML status page), with a CA and a server certificate made by
//! `openssl` for 127.0.0.1.
#![cfg(test)]

use serde_json::Value;
use std::path::Path;
use std::process::{Command, Stdio};

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A CA named `name` (name.pem, name.key).
fn ca(dir: &Path, name: &str) {
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            &format!("/CN={name}"),
            "-keyout",
            &format!("{name}.key"),
            "-out",
            &format!("{name}.pem"),
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ],
    );
}

fn dump(url: &str, extra: &[&str]) -> (i32, Vec<Value>, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_glance-dump"))
        .args(["--url", url, "--timeout", "10"])
        .args(extra)
        .env_remove("OS_AUTH_TOKEN")
        .output()
        .unwrap();
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
fn tls_is_verified_and_cacert_trusts_a_private_ca() {
    if Command::new("openssl").arg("version").output().is_err() {
        assert!(std::env::var_os("CI").is_none(), "openssl is needed in CI");
        eprintln!("skipping: no openssl");
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let d = t.path();
    ca(d, "ca");
    ca(d, "other");
    openssl(
        d,
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            "/CN=127.0.0.1",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
        ],
    );
    std::fs::write(
        d.join("ext.cnf"),
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    openssl(
        d,
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            "ext.cnf",
            "-out",
            "server.pem",
        ],
    );
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut server = Command::new("openssl")
        .args(["s_server", "-quiet", "-www", "-accept"])
        .arg(format!("127.0.0.1:{port}"))
        .args(["-cert", "server.pem", "-key", "server.key"])
        .current_dir(d)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    for _ in 0..100 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let url = format!("https://127.0.0.1:{port}");

    // Not trusted: a TLS error, never a silent fallback.
    let (code, recs, err) = dump(&url, &[]);
    assert_eq!(code, 2);
    assert_eq!(recs[0]["error"]["kind"], "io", "{recs:?}");
    assert!(err.to_lowercase().contains("certificate"), "{err}");
    // Another CA: the same.
    let other = d.join("other.pem");
    let (code, recs, _) = dump(&url, &["--cacert", other.to_str().unwrap()]);
    assert_eq!(code, 2);
    assert_eq!(recs[0]["error"]["kind"], "io");
    // The right CA: TLS works, and the HTML page is not the Images API.
    let ca = d.join("ca.pem");
    let (code, recs, err) = dump(&url, &["--cacert", ca.to_str().unwrap()]);
    assert_eq!(code, 2);
    assert_eq!(recs[0]["error"]["kind"], "server_error", "{err}");
    assert!(err.contains("not JSON"), "{err}");
    // A file that holds no certificate is a usage error.
    let (code, recs, err) = dump(&url, &["--cacert", d.join("ext.cnf").to_str().unwrap()]);
    assert_eq!(code, 2);
    assert_eq!(recs.len(), 1, "{recs:?}");
    assert_eq!(recs[0]["error"]["kind"], "usage");
    assert!(err.contains("no PEM certificate"), "{err}");
    let _ = server.kill();
    let _ = server.wait();
}
