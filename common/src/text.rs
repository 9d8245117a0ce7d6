//! Byte strings that may not be UTF-8, base64, and RFC 3339 times.

/// Standard base64 (RFC 4648, with padding). Used to keep non-UTF-8 names
/// losslessly in JSON; jq decodes it with `@base64d`.
pub fn base64(data: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[(n >> (18 - 6 * i)) as usize & 63]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// A string decoded from bytes: the text (lossy if needed) and whether any
/// byte had to be replaced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decoded {
    /// UTF-8 text, with U+FFFD where input bytes were not UTF-8.
    pub text: String,
    /// True when `text` lost information.
    pub lossy: bool,
}

/// Decode bytes as UTF-8, noting whether it was lossy.
pub fn decode(bytes: &[u8]) -> Decoded {
    match std::str::from_utf8(bytes) {
        Ok(s) => Decoded {
            text: s.to_owned(),
            lossy: false,
        },
        Err(_) => Decoded {
            text: String::from_utf8_lossy(bytes).into_owned(),
            lossy: true,
        },
    }
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian
/// (Howard Hinnant's `civil_from_days`).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// Seconds (and nanoseconds) since the Unix epoch as an RFC 3339 UTC string:
/// `2026-11-22T17:00:00Z`, with a fraction only when `nsec` is non-zero.
/// Years outside 0..=9999 are clamped by returning `None`: RFC 3339 cannot
/// write them.
pub fn rfc3339_utc(secs: i64, nsec: u32) -> Option<String> {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (y, mo, d) = civil_from_days(days);
    if !(0..=9999).contains(&y) || nsec >= 1_000_000_000 {
        return None;
    }
    let (h, mi, s) = (rem / 3600, rem / 60 % 60, rem % 60);
    let mut out = format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}");
    if nsec != 0 {
        let frac = format!("{nsec:09}");
        out.push('.');
        out.push_str(frac.trim_end_matches('0'));
    }
    out.push('Z');
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_rfc4648_vectors() {
        for (i, o) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64(i.as_bytes()), o);
        }
        assert_eq!(base64(b"base\xff\xfe.raw"), "YmFzZf/+LnJhdw==");
    }

    #[test]
    fn decode_flags_lossy() {
        assert!(!decode(b"abc").lossy);
        let d = decode(b"a\xffb");
        assert!(d.lossy);
        assert_eq!(d.text, "a\u{fffd}b");
    }

    #[test]
    fn rfc3339() {
        assert_eq!(rfc3339_utc(0, 0).unwrap(), "1970-01-01T00:00:00Z");
        assert_eq!(
            rfc3339_utc(1_763_830_800, 0).unwrap(),
            "2025-11-22T17:00:00Z"
        );
        assert_eq!(
            rfc3339_utc(951_782_400, 500_000_000).unwrap(),
            "2000-02-29T00:00:00.5Z"
        );
        assert_eq!(rfc3339_utc(-1, 0).unwrap(), "1969-12-31T23:59:59Z");
        assert!(rfc3339_utc(i64::MAX, 0).is_none());
        assert!(rfc3339_utc(i64::MIN, 0).is_none());
    }
}
