//! `--verify`: hash cached files (never touching their atime where the
//! system allows: the xattr driver's LRU clock) and compare with what is
//! known about them: Nova's `.sha1`/`.info` sidecars (SHA-1 of the file as
//! stored), Glance's `checksum` (MD5) and `os_hash_value` from image
//! records (`--images FILE`, e.g. glance-dump output), the latter only
//! where the cached bytes can be Glance's bytes. Verification reports;
//! it never deletes.

use serde::Serialize;
use serde_json::Value;
use std::collections::HashMap;
use std::io::BufRead;
use std::path::Path;
use system::hash::{Algorithm, Expected, Mismatch, hash_file};

/// What Glance says about an image.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImageMeta {
    /// What Glance states about the bytes: `size`, `checksum` (MD5) and
    /// the multihash ([`Expected::from_glance`]).
    pub expected: Expected,
    /// `raw`, `qcow2`, ...
    pub disk_format: Option<String>,
    /// `active`, `deactivated`, `deleted`, ...
    pub status: Option<String>,
}

/// Why the image records could not be read.
#[derive(Debug, thiserror::Error)]
#[error("line {line}: {why}")]
pub struct ImagesError {
    /// 1-based line.
    pub line: u64,
    /// What is wrong.
    pub why: String,
    /// Its kind: `io` (reading), `bad_json`, `bad_record`, `too_large`.
    pub kind: filter::ErrorKind,
}

/// Read image records: JSON lines whose `image` facet (glance-dump) or the
/// record itself holds a Glance image (`id`, `size`, `checksum`,
/// `os_hash_algo`, `os_hash_value`, `disk_format`, `status`). Error
/// records are skipped; lines are read bounded ([`filter::jsonl`]).
pub fn read_images(input: impl BufRead) -> Result<HashMap<String, ImageMeta>, ImagesError> {
    let mut out = HashMap::new();
    for item in filter::jsonl::read_strict(input) {
        let (line, rec) = item.map_err(|bad| ImagesError {
            line: bad.line,
            why: bad.message,
            kind: bad.kind,
        })?;
        if rec.get("error").is_some() {
            continue;
        }
        let v = Value::Object(rec.into_map());
        let img = v.get("image").filter(|i| i.is_object()).unwrap_or(&v);
        let s = |k: &str| img.get(k).and_then(Value::as_str).map(str::to_owned);
        let Some(id) = s("id") else {
            return Err(ImagesError {
                line,
                why: "no image `id`".into(),
                kind: filter::ErrorKind::BadRecord,
            });
        };
        out.insert(
            id,
            ImageMeta {
                expected: Expected::from_glance(img),
                disk_format: s("disk_format"),
                status: s("status"),
            },
        );
    }
    Ok(out)
}

/// The outcome of verifying one file (the fields `--verify` adds).
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct Verification {
    /// SHA-1 of the file.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sha1: Option<String>,
    /// MD5 of the file (compared with Glance's `checksum`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub md5: Option<String>,
    /// The multihash algorithm, when one was computed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub os_hash_algo: Option<String>,
    /// The multihash of the file.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub os_hash_value: Option<String>,
    /// The SHA-1 a Nova sidecar holds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub checksum_stored: Option<String>,
    /// `true`, `false`, `"not_comparable"`, or null (nothing to compare).
    pub verified: Value,
    /// What differed.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub mismatch: Vec<String>,
    /// Why the Nova sidecar could not be compared (mismatch
    /// `sidecar_malformed`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sidecar_error: Option<String>,
    /// Whether the atime was spared.
    pub noatime: bool,
    /// Why the file could not be read.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// What to compare a file against.
#[derive(Debug, Clone, Default)]
pub struct Expect<'a> {
    /// A Nova sidecar's SHA-1.
    pub sidecar_sha1: Option<String>,
    /// A Nova sidecar that holds no SHA-1 where it should (why).
    pub sidecar_malformed: Option<String>,
    /// Glance's view of the image, when the cached bytes can be Glance's.
    pub glance: Option<&'a ImageMeta>,
    /// Glance's view exists but the cached bytes were converted
    /// (`force_raw_images`): not comparable.
    pub converted: bool,
}

/// Hash `path` and compare (module docs).
pub fn verify(path: &Path, expect: &Expect) -> Verification {
    let mut algs = vec![Algorithm::Sha1];
    let glance = expect.glance.map(|g| &g.expected);
    if let Some(e) = glance {
        algs.push(Algorithm::Md5);
        algs.extend(e.algorithms());
    }
    let mut v = Verification::default();
    let d = match hash_file(path, &algs) {
        Ok(d) => d,
        Err(e) => {
            v.error = Some(e.to_string());
            v.verified = Value::Null;
            return v;
        }
    };
    v.noatime = d.noatime;
    let get = |a: Algorithm| {
        d.digests
            .iter()
            .find(|(x, _)| *x == a)
            .map(|(_, h)| h.clone())
    };
    v.sha1 = get(Algorithm::Sha1);
    let mut compared = false;
    if let Some(why) = &expect.sidecar_malformed {
        // Nova compares what it reads, fails, and logs a verification
        // failure: so does this.
        v.mismatch.push("sidecar_malformed".into());
        v.sidecar_error = Some(why.clone());
    }
    if let Some(s) = &expect.sidecar_sha1 {
        compared = true;
        v.checksum_stored = Some(s.clone());
        if v.sha1.as_deref() != Some(s.as_str()) {
            v.mismatch.push("sha1_sidecar".into());
        }
    }
    if let Some(e) = glance {
        v.md5 = get(Algorithm::Md5);
        if let Some((a, _)) = e.digests.iter().find(|(a, _)| *a != Algorithm::Md5) {
            v.os_hash_algo = Some(a.name().to_owned());
            v.os_hash_value = get(*a);
        }
        compared |= !e.is_empty();
        // The one rule of system::hash: every digest Glance states, and
        // its size, must match.
        for m in e.mismatches(d.bytes, &d.digests) {
            v.mismatch.push(
                match m {
                    Mismatch::Size { .. } => "glance_size",
                    Mismatch::Digest {
                        algorithm: Algorithm::Md5,
                        ..
                    } => "glance_checksum",
                    Mismatch::Digest { .. } => "glance_os_hash_value",
                }
                .into(),
            );
        }
    }
    v.verified = if !v.mismatch.is_empty() {
        Value::Bool(false)
    } else if compared {
        Value::Bool(true)
    } else if expect.converted {
        Value::from("not_comparable")
    } else {
        Value::Null
    };
    v
}

/// What a Nova sidecar (`.sha1`, `.info`) holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stored {
    /// No sidecar, or one with no checksum in it (an empty `.sha1`: Nova
    /// creates it empty before filling it; an `.info` without `sha1`).
    Absent,
    /// A SHA-1, lower-case hex.
    Sha1(String),
    /// A sidecar that cannot be read or does not hold a SHA-1 where it
    /// should (`banana`): Nova logs a verification failure for it, so it
    /// is a finding, never an absence.
    Malformed(String),
}

/// The largest sidecar read (Nova's hold 40 hex digits or a small JSON).
const MAX_SIDECAR: u64 = 64 * 1024;

fn is_sha1_hex(s: &str) -> bool {
    s.len() == 40 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Parse the sidecar at `path`: `info` false for Essex's `.sha1` (the
/// hex digest, whitespace around it stripped), true for Folsom-Grizzly's
/// `.info` (a JSON object, key `sha1`). A missing file is `Absent`; one
/// that is not a regular file, is too large or cannot be read is
/// `Malformed`.
pub fn parse_sidecar(path: &Path, info: bool) -> Stored {
    let m = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Stored::Absent,
        Err(e) => return Stored::Malformed(format!("unreadable: {e}")),
    };
    if !m.file_type().is_file() {
        return Stored::Malformed("not a regular file".into());
    }
    if m.len() > MAX_SIDECAR {
        return Stored::Malformed(format!("larger than {MAX_SIDECAR} bytes"));
    }
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) => return Stored::Malformed(format!("unreadable: {e}")),
    };
    let Ok(text) = std::str::from_utf8(&bytes) else {
        return Stored::Malformed("not UTF-8 text".into());
    };
    if !info {
        let hex = text.trim();
        return if hex.is_empty() {
            Stored::Absent
        } else if is_sha1_hex(hex) {
            Stored::Sha1(hex.to_ascii_lowercase())
        } else {
            Stored::Malformed("not a SHA-1 (40 hex digits)".into())
        };
    }
    let v: Value = match serde_json::from_str(text) {
        Ok(v) => v,
        Err(e) => return Stored::Malformed(format!("not JSON: {e}")),
    };
    let Some(obj) = v.as_object() else {
        return Stored::Malformed("not a JSON object".into());
    };
    match obj.get("sha1") {
        None | Some(Value::Null) => Stored::Absent,
        Some(Value::String(h)) if is_sha1_hex(h) => Stored::Sha1(h.to_ascii_lowercase()),
        Some(_) => Stored::Malformed("`sha1` is not a SHA-1 (40 hex digits)".into()),
    }
}

/// What the Nova sidecars of `base_file` hold: its `.sha1`, else its
/// `.info`. A malformed one is reported even when the other is fine.
pub fn sidecar_sha1(base_file: &Path) -> Stored {
    let (Some(name), Some(dir)) = (base_file.file_name(), base_file.parent()) else {
        return Stored::Absent;
    };
    let side = |ext: &str| {
        let mut n = name.to_os_string();
        n.push(ext);
        dir.join(n)
    };
    let sha1 = parse_sidecar(&side(".sha1"), false);
    let info = parse_sidecar(&side(".info"), true);
    match (sha1, info) {
        (Stored::Malformed(why), _) => Stored::Malformed(format!(".sha1: {why}")),
        (_, Stored::Malformed(why)) => Stored::Malformed(format!(".info: {why}")),
        (Stored::Sha1(h), _) | (Stored::Absent, Stored::Sha1(h)) => Stored::Sha1(h),
        (Stored::Absent, Stored::Absent) => Stored::Absent,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn images_from_glance_dump_records_or_bare() {
        let text = concat!(
            "{\"image\":{\"id\":\"a\",\"checksum\":\"ABC\",\"os_hash_algo\":\"sha512\",\"os_hash_value\":\"DEF\",\"disk_format\":\"raw\"}}\n",
            "{\"id\":\"b\",\"status\":\"deleted\"}\n",
            "{\"error\":{\"kind\":\"io\"}}\n",
        );
        let m = read_images(text.as_bytes()).unwrap();
        assert_eq!(
            m["a"].expected.digests,
            [
                (Algorithm::Md5, "abc".to_owned()),
                (Algorithm::Sha512, "def".to_owned())
            ]
        );
        assert_eq!(m["b"].status.as_deref(), Some("deleted"));
        assert!(read_images("{\"x\":1}".as_bytes()).is_err());
        // Bounded: an over-long line is `too_large`, never held whole.
        let mut long = b"{\"id\":\"".to_vec();
        long.resize(long.len() + filter::jsonl::MAX_LINE, b'x');
        long.extend_from_slice(b"\"}\n");
        let e = read_images(&long[..]).unwrap_err();
        assert_eq!((e.line, e.kind), (1, filter::ErrorKind::TooLarge));
    }

    #[test]
    fn sidecars_and_glance_values_are_compared() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("f");
        std::fs::write(&p, b"abc").unwrap();
        let sha1 = "a9993e364706816aba3e25717850c26c9cd0d89d";
        std::fs::write(t.path().join("f.info"), format!("{{\"sha1\": \"{sha1}\"}}")).unwrap();
        assert_eq!(sidecar_sha1(&p), Stored::Sha1(sha1.into()));
        let good = ImageMeta {
            expected: Expected {
                size: Some(3),
                digests: vec![(Algorithm::Md5, "900150983cd24fb0d6963f7d28e17f72".into())],
            },
            ..ImageMeta::default()
        };
        let v = verify(
            &p,
            &Expect {
                sidecar_sha1: Some(sha1.into()),
                glance: Some(&good),
                ..Expect::default()
            },
        );
        assert_eq!(v.verified, Value::Bool(true));
        let bad = ImageMeta {
            expected: Expected {
                size: None,
                digests: vec![(Algorithm::Md5, "00".into())],
            },
            ..ImageMeta::default()
        };
        let v = verify(
            &p,
            &Expect {
                sidecar_sha1: Some("ff".repeat(20)),
                glance: Some(&bad),
                ..Expect::default()
            },
        );
        assert_eq!(v.verified, Value::Bool(false));
        assert_eq!(v.mismatch, vec!["sha1_sidecar", "glance_checksum"]);
        let v = verify(
            &p,
            &Expect {
                converted: true,
                ..Expect::default()
            },
        );
        assert_eq!(v.verified, Value::from("not_comparable"));
        let v = verify(&p, &Expect::default());
        assert_eq!(v.verified, Value::Null);
        assert_eq!(v.sha1.as_deref(), Some(sha1));
    }

    /// Every digest Glance states and its size are checked (the rule of
    /// system::hash): a right multihash does not excuse a wrong MD5, and
    /// a wrong size is a finding of its own.
    #[test]
    fn every_stated_glance_value_is_checked() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("f");
        std::fs::write(&p, b"abc").unwrap();
        let sha256 = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
        let meta = |v: serde_json::Value| ImageMeta {
            expected: Expected::from_glance(&v),
            ..ImageMeta::default()
        };
        let check = |m: &ImageMeta| {
            verify(
                &p,
                &Expect {
                    glance: Some(m),
                    ..Expect::default()
                },
            )
        };
        let v = check(&meta(serde_json::json!({
            "size": 3, "checksum": "00", "os_hash_algo": "sha256", "os_hash_value": sha256
        })));
        assert_eq!(v.verified, Value::Bool(false));
        assert_eq!(v.mismatch, ["glance_checksum"]);
        assert_eq!(v.os_hash_value.as_deref(), Some(sha256));
        let v = check(&meta(serde_json::json!({"size": 4})));
        assert_eq!(v.verified, Value::Bool(false));
        assert_eq!(v.mismatch, ["glance_size"]);
    }

    #[test]
    fn malformed_sidecars_are_findings_not_absences() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("f");
        std::fs::write(&p, b"abc").unwrap();
        assert_eq!(sidecar_sha1(&p), Stored::Absent);
        // Nova creates the .sha1 empty before filling it.
        std::fs::write(t.path().join("f.sha1"), b"\n").unwrap();
        assert_eq!(sidecar_sha1(&p), Stored::Absent);
        for bad in [
            &b"banana\n"[..],
            b"a9993e364706816aba3e25717850c26c9cd0d89",
            b"\xff\xfe",
        ] {
            std::fs::write(t.path().join("f.sha1"), bad).unwrap();
            assert!(matches!(sidecar_sha1(&p), Stored::Malformed(w) if w.starts_with(".sha1: ")));
        }
        std::fs::remove_file(t.path().join("f.sha1")).unwrap();
        for (bad, want) in [
            ("{\"sha1\": ", "not JSON"),
            ("[1]", "not a JSON object"),
            ("{\"sha1\": \"banana\"}", "`sha1` is not"),
            ("{\"sha1\": 7}", "`sha1` is not"),
        ] {
            std::fs::write(t.path().join("f.info"), bad).unwrap();
            let got = sidecar_sha1(&p);
            assert!(
                matches!(&got, Stored::Malformed(w) if w.contains(want)),
                "{bad}: {got:?}"
            );
        }
        std::fs::write(t.path().join("f.info"), "{\"sha1-timestamp\": 1.5}").unwrap();
        assert_eq!(sidecar_sha1(&p), Stored::Absent);
        std::fs::remove_file(t.path().join("f.info")).unwrap();
        std::fs::create_dir(t.path().join("f.info")).unwrap();
        assert!(matches!(sidecar_sha1(&p), Stored::Malformed(_)));
        let v = verify(
            &p,
            &Expect {
                sidecar_malformed: Some(".sha1: not a SHA-1".into()),
                ..Expect::default()
            },
        );
        assert_eq!(v.verified, Value::Bool(false));
        assert_eq!(v.mismatch, vec!["sidecar_malformed"]);
        assert_eq!(v.sidecar_error.as_deref(), Some(".sha1: not a SHA-1"));
    }
}
