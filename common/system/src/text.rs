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

/// Decode standard base64 (padding required, no whitespace): the inverse
/// of [`base64`]; None for anything else.
pub fn base64_decode(s: &str) -> Option<Vec<u8>> {
    let b = s.as_bytes();
    if !b.len().is_multiple_of(4) {
        return None;
    }
    let val = |c: u8| -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32)
    };
    let mut out = Vec::with_capacity(b.len() / 4 * 3);
    let quads = b.len() / 4;
    for (i, q) in b.chunks(4).enumerate() {
        let pad = q.iter().rev().take_while(|&&c| c == b'=').count();
        if pad > 2 || (pad > 0 && i + 1 != quads) {
            return None;
        }
        let mut n = 0u32;
        for &c in &q[..4 - pad] {
            n = (n << 6) | val(c)?;
        }
        n <<= 6 * pad as u32;
        let bytes = [(n >> 16) as u8, (n >> 8) as u8, n as u8];
        out.extend_from_slice(&bytes[..3 - pad]);
    }
    Some(out)
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

/// Bytes as JSON text: the text (lossy where needed) and, when lossy, the
/// exact bytes in base64 (the DESIGN's `*_bytes` twin of a key).
pub fn with_bytes(bytes: &[u8]) -> (String, Option<String>) {
    let d = decode(bytes);
    let exact = d.lossy.then(|| base64(bytes));
    (d.text, exact)
}

/// Seconds (and nanoseconds) since the Unix epoch as an RFC 3339 UTC string:
/// `2026-11-22T17:00:00Z`, with a fraction only when `nsec` is non-zero.
/// Years outside 0..=9999 are clamped by returning `None`: RFC 3339 cannot
/// write them.
pub fn rfc3339_utc(secs: i64, nsec: u32) -> Option<String> {
    let t = time::OffsetDateTime::from_unix_timestamp(secs).ok()?;
    if !(0..=9999).contains(&t.year()) || nsec >= 1_000_000_000 {
        return None;
    }
    // Digits written directly: walks stamp tens of thousands of records,
    // and `format!` with padding costs more than the date arithmetic.
    let mut out = String::with_capacity(30);
    // The year is in 0..=9999 (checked above).
    put_digits(&mut out, t.year().unsigned_abs(), 4);
    out.push('-');
    put_digits(&mut out, u32::from(u8::from(t.month())), 2);
    out.push('-');
    put_digits(&mut out, u32::from(t.day()), 2);
    out.push('T');
    put_digits(&mut out, u32::from(t.hour()), 2);
    out.push(':');
    put_digits(&mut out, u32::from(t.minute()), 2);
    out.push(':');
    put_digits(&mut out, u32::from(t.second()), 2);
    if nsec != 0 {
        out.push('.');
        let (mut frac, mut width) = (nsec, 9);
        while frac % 10 == 0 {
            frac /= 10;
            width -= 1;
        }
        put_digits(&mut out, frac, width);
    }
    out.push('Z');
    Some(out)
}

/// Append the last `width` (at most 9) decimal digits of `n`, zero-padded.
fn put_digits(out: &mut String, mut n: u32, width: usize) {
    let mut digits = [b'0'; 9];
    for d in digits[..width.min(9)].iter_mut().rev() {
        *d = b'0' + (n % 10) as u8;
        n /= 10;
    }
    out.extend(digits[..width.min(9)].iter().map(|&b| char::from(b)));
}

/// Parse a point in time for a command line: whole seconds since the Unix
/// epoch (`1795626000`), or RFC 3339 in UTC (`2026-11-25T17:00:00Z`,
/// `+00:00` accepted, a fraction ignored). Seconds since the epoch; `None`
/// for a date or time that does not exist (`2026-02-31`, `23:59:60`).
pub fn parse_time(s: &str) -> Option<i64> {
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
        return s.parse().ok();
    }
    let s = s.strip_suffix('Z').or_else(|| s.strip_suffix("+00:00"))?;
    let (date, clock) = s.split_once(['T', ' '])?;
    let clock = clock.split('.').next()?;
    // The syntax is ours (fixed widths, `-` and `:`); the calendar is the
    // crate's, which refuses days a month does not have.
    fn num<T: std::str::FromStr>(x: &str, n: usize) -> Option<T> {
        (x.len() == n && x.bytes().all(|b| b.is_ascii_digit()))
            .then(|| x.parse().ok())
            .flatten()
    }
    let d: Vec<&str> = date.split('-').collect();
    let t: Vec<&str> = clock.split(':').collect();
    let ([y, mo, da], [h, mi, se]) = (d.as_slice(), t.as_slice()) else {
        return None;
    };
    let month = time::Month::try_from(num::<u8>(mo, 2)?).ok()?;
    let date = time::Date::from_calendar_date(num(y, 4)?, month, num(da, 2)?).ok()?;
    let clock = time::Time::from_hms(num(h, 2)?, num(mi, 2)?, num(se, 2)?).ok()?;
    Some(date.with_time(clock).assume_utc().unix_timestamp())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_parse_both_ways() {
        for secs in [0i64, 951_782_400, 1_764_090_000, 4_102_444_799] {
            let text = rfc3339_utc(secs, 0).unwrap_or_default();
            assert_eq!(parse_time(&text), Some(secs), "{text}");
            assert_eq!(parse_time(&secs.to_string()), Some(secs));
        }
        assert_eq!(
            parse_time("2026-11-25T17:00:00.5+00:00"),
            Some(1_795_626_000)
        );
        for bad in [
            "",
            "2026-11-25",
            "2026-13-01T00:00:00Z",
            "2026-11-25T17:00:00+01:00",
            "-5",
            "x",
        ] {
            assert_eq!(parse_time(bad), None, "{bad}");
        }
    }

    #[test]
    fn times_that_do_not_exist_are_refused() {
        for bad in [
            "2026-02-31T00:00:00Z",
            "2026-04-31T00:00:00Z",
            "2025-02-29T00:00:00Z",
            "1900-02-29T00:00:00Z",
            "2026-12-31T23:59:60Z",
            "2026-11-25T24:00:00Z",
            "2026-11-25T17:60:00Z",
            "2026-00-10T00:00:00Z",
            "2026-11-00T00:00:00Z",
            "2026-11-25T17:00Z",
            "2026-11-25t17:00:00Z",
            "2026-11-25T17:00:00z",
            "+2026-11-25T17:00:00Z",
        ] {
            assert_eq!(parse_time(bad), None, "{bad}");
        }
        for (good, secs) in [
            ("2024-02-29T12:00:00Z", 1_709_208_000),
            ("2000-02-29 00:00:00+00:00", 951_782_400),
            ("2026-04-30T23:59:59.999Z", 1_777_593_599),
            ("0000-01-01T00:00:00Z", -62_167_219_200),
            ("9999-12-31T23:59:59Z", 253_402_300_799),
        ] {
            assert_eq!(parse_time(good), Some(secs), "{good}");
            assert_eq!(
                rfc3339_utc(secs, 0).map(|t| parse_time(&t)),
                Some(Some(secs))
            );
        }
        assert_eq!(rfc3339_utc(-62_167_219_201, 0), None);
        assert_eq!(rfc3339_utc(253_402_300_800, 0), None);
        assert_eq!(rfc3339_utc(0, 1_000_000_000), None);
        assert_eq!(
            rfc3339_utc(1, 1).as_deref(),
            Some("1970-01-01T00:00:01.000000001Z")
        );
    }

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
        // The edges of what RFC 3339 can write, and fractions trimmed.
        assert_eq!(
            rfc3339_utc(-62_167_219_200, 0).unwrap(),
            "0000-01-01T00:00:00Z"
        );
        assert_eq!(
            rfc3339_utc(253_402_300_799, 120_000_000).unwrap(),
            "9999-12-31T23:59:59.12Z"
        );
        assert_eq!(
            rfc3339_utc(1_000_000_000, 999_999_999).unwrap(),
            "2001-09-09T01:46:40.999999999Z"
        );
        assert_eq!(
            rfc3339_utc(1_000_000_000, 1_000).unwrap(),
            "2001-09-09T01:46:40.000001Z"
        );
        assert!(rfc3339_utc(i64::MAX, 0).is_none());
        assert!(rfc3339_utc(i64::MIN, 0).is_none());
    }

    #[test]
    fn base64_round_trips() {
        for data in [
            &b""[..],
            b"a",
            b"ab",
            b"abc",
            b"abcd",
            b"\xff\x00\xfe",
            b"n\xffx",
        ] {
            assert_eq!(super::base64_decode(&super::base64(data)).unwrap(), data);
        }
        for bad in ["a", "ab=c", "====", "a===", "AA==AA==", "A\nA="] {
            assert!(super::base64_decode(bad).is_none(), "{bad:?}");
        }
    }
}
