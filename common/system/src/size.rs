//! Byte sizes: exact parsing of user sizes (`10G`, `1.5 GiB`, `512`),
//! qemu-img's human sizes of every QEMU generation, and printing.
//!
//! Units are binary, as in qemu-img and Cinder: `K`, `KB`, `KiB` all mean
//! 1024. Arithmetic is exact (integers, no floating point), so
//! `1.5G` is 1610612736 and 2^64-1 is still representable.

use thiserror::Error;

/// A size that could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum SizeError {
    /// Empty text.
    #[error("empty size")]
    Empty,
    /// Not a number followed by an optional unit.
    #[error(
        "invalid size {0:?}: expected a number and an optional unit (B, K, M, G, T, P, E; KiB, MiB, ...)"
    )]
    Invalid(String),
    /// An unknown unit.
    #[error("invalid size {0:?}: unknown unit")]
    Unit(String),
    /// Larger than 2^64-1 bytes.
    #[error("size {0:?} does not fit in 64 bits")]
    Overflow(String),
    /// A fraction of a byte where a whole number is required.
    #[error("size {0:?} is not a whole number of bytes")]
    Fractional(String),
    /// `inf`, `nan` and the like.
    #[error("size {0:?} is not finite")]
    NotFinite(String),
}

/// Power of 1024 for a unit spelling, or `None` if unknown.
/// Accepts `B`, `K`/`KB`/`KiB`, ..., `E`/`EB`/`EiB`, any case.
fn unit_shift(unit: &str) -> Option<u32> {
    let u = unit.to_ascii_uppercase();
    let u = u.strip_suffix('B').unwrap_or(&u);
    let u = u.strip_suffix('I').unwrap_or(u);
    let p = match u {
        "" => 0,
        "K" => 1,
        "M" => 2,
        "G" => 3,
        "T" => 4,
        "P" => 5,
        "E" => 6,
        _ => return None,
    };
    // "iB" alone is not a unit.
    if p == 0 && !unit.eq_ignore_ascii_case("b") && !unit.is_empty() {
        return None;
    }
    Some(p * 10)
}

/// A decimal number `digits[.digits][e[+-]digits]` as an exact fraction
/// `num / 10^den_exp`.
struct Decimal {
    num: u128,
    /// Power of ten of the denominator (may be negative: a multiplier).
    den_exp: i32,
}

fn parse_decimal(s: &str) -> Option<Decimal> {
    let (mant, exp) = match s.find(['e', 'E']) {
        Some(i) => (&s[..i], s[i + 1..].parse::<i32>().ok()?),
        None => (s, 0),
    };
    let (int, frac) = mant.split_once('.').unwrap_or((mant, ""));
    if int.is_empty() && frac.is_empty() {
        return None;
    }
    if !int.bytes().chain(frac.bytes()).all(|b| b.is_ascii_digit()) {
        return None;
    }
    // Leading zeros carry no value; more than 38 significant digits would
    // overflow u128 and is no size anyway.
    let digits = format!("{int}{frac}");
    let digits = digits.trim_start_matches('0');
    if digits.len() > 38 || !(-60..=60).contains(&exp) {
        return None;
    }
    let num = if digits.is_empty() {
        0
    } else {
        digits.parse::<u128>().ok()?
    };
    Some(Decimal {
        num,
        den_exp: frac.len() as i32 - exp,
    })
}

/// `num * 2^shift / 10^den_exp`, rounded as asked. `None` on overflow.
fn scale(d: &Decimal, shift: u32, round_nearest: bool) -> Option<(u128, bool)> {
    let mut num = d.num.checked_mul(1u128 << shift)?;
    let mut den: u128 = 1;
    if d.den_exp < 0 {
        num = num.checked_mul(10u128.checked_pow(d.den_exp.unsigned_abs())?)?;
    } else {
        den = 10u128.checked_pow(d.den_exp as u32)?;
    }
    let q = num / den;
    let r = num % den;
    let exact = r == 0;
    let q = if round_nearest && r * 2 >= den && !exact {
        q + 1
    } else {
        q
    };
    Some((q, exact))
}

fn split_number_unit(s: &str) -> (&str, &str) {
    let end = s
        .find(|c: char| {
            !(c.is_ascii_digit() || c == '.' || c == 'e' || c == 'E' || c == '+' || c == '-')
        })
        .unwrap_or(s.len());
    // An 'E' right before the end or a non-digit is the exbi unit, not an
    // exponent: "1E" is 1 EiB, "1e+03" is 1000.
    let (mut num, mut unit) = (&s[..end], s[end..].trim_start());
    if let Some(last) = num.chars().last()
        && (last == 'e' || last == 'E')
    {
        num = &s[..end - 1];
        unit = s[end - 1..].trim_start();
    }
    (num, unit)
}

/// The number and unit shift of trimmed size text `s` (`text` as given,
/// for messages).
fn number_and_unit(text: &str, s: &str) -> Result<(Decimal, u32), SizeError> {
    if s.is_empty() {
        return Err(SizeError::Empty);
    }
    let lower = s.to_ascii_lowercase();
    if lower.contains("inf") || lower.contains("nan") {
        return Err(SizeError::NotFinite(text.into()));
    }
    let (num, unit) = split_number_unit(s);
    let shift = unit_shift(unit).ok_or_else(|| {
        if num.is_empty() {
            SizeError::Invalid(text.into())
        } else {
            SizeError::Unit(text.into())
        }
    })?;
    let d = parse_decimal(num).ok_or_else(|| SizeError::Invalid(text.into()))?;
    Ok((d, shift))
}

/// Parse a user-given size exactly: `512`, `10G`, `10GiB`, `1.5 GiB`,
/// `64M`, `2e3` (bytes). A fraction of a byte is refused.
pub fn parse_size(text: &str) -> Result<u64, SizeError> {
    let (d, shift) = number_and_unit(text, text.trim())?;
    let (v, exact) = scale(&d, shift, false).ok_or_else(|| SizeError::Overflow(text.into()))?;
    if !exact {
        return Err(SizeError::Fractional(text.into()));
    }
    u64::try_from(v).map_err(|_| SizeError::Overflow(text.into()))
}

/// A size as qemu-img printed it for people.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HumanSize {
    /// Bytes: exact when `exact`, else the printed value times its unit,
    /// rounded to the nearest byte.
    pub bytes: u64,
    /// False when qemu rounded the value for printing (three significant
    /// digits since QEMU 4.1, or `4.2G`-style before).
    pub exact: bool,
}

/// Parse a human size from `qemu-img info` of any QEMU generation:
///
/// - `64 MiB (67108864 bytes)`, `10G (10737418240 bytes)`: the byte count
///   in parentheses is exact and wins;
/// - `2.19 MiB`, `1e+03 MiB`, `0.977 GiB` (QEMU >= 4.1, `size_to_str`);
/// - `761M`, `4.2G`, `999` (QEMU < 4.1);
/// - `512 B`, `0 B`, `0`: exact.
///
/// `unavailable` is not a size: the caller maps it to null. `inf` is an
/// error (a QEMU regression printed it on 32-bit hosts).
pub fn parse_human_size(text: &str) -> Result<HumanSize, SizeError> {
    let s = text.trim();
    if let Some(open) = s.rfind('(')
        && let Some(inner) = s[open + 1..].strip_suffix(')')
        && let Some(n) = inner.trim().strip_suffix("bytes")
    {
        let n = n.trim();
        if !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()) {
            let bytes = n
                .parse::<u64>()
                .map_err(|_| SizeError::Overflow(text.into()))?;
            return Ok(HumanSize { bytes, exact: true });
        }
        return Err(SizeError::Invalid(text.into()));
    }
    let (d, shift) = number_and_unit(text, s)?;
    let (v, exact_math) = scale(&d, shift, true).ok_or_else(|| SizeError::Overflow(text.into()))?;
    let bytes = u64::try_from(v).map_err(|_| SizeError::Overflow(text.into()))?;
    // Below 1 KiB qemu prints whole bytes; any larger unit was rounded.
    Ok(HumanSize {
        bytes,
        exact: shift == 0 && exact_math,
    })
}

/// Print a size for people, exact where it can be: `512 B`, `64 MiB`,
/// `1.5 GiB`, otherwise up to two decimals (`2.19 MiB`). For stderr and
/// help text only: records always carry integer bytes.
pub fn format_size(bytes: u64) -> String {
    const UNITS: [&str; 7] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    let mut i = 0;
    while i + 1 < UNITS.len() && bytes >= 1u64 << (10 * (i + 1)) {
        i += 1;
    }
    if i == 0 {
        return format!("{bytes} B");
    }
    let unit = 1u128 << (10 * i);
    let b = u128::from(bytes);
    let whole = b / unit;
    let hundredths = (b % unit * 100 + unit / 2) / unit;
    let (whole, hundredths) = if hundredths == 100 {
        (whole + 1, 0)
    } else {
        (whole, hundredths)
    };
    let mut s = format!("{whole}");
    if hundredths != 0 {
        let frac = format!("{hundredths:02}");
        s.push('.');
        s.push_str(frac.trim_end_matches('0'));
    }
    format!("{s} {}", UNITS[i])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_sizes_are_exact() {
        assert_eq!(parse_size("512").unwrap(), 512);
        assert_eq!(parse_size("10G").unwrap(), 10 << 30);
        assert_eq!(parse_size("10 GiB").unwrap(), 10 << 30);
        assert_eq!(parse_size("10gb").unwrap(), 10 << 30);
        assert_eq!(parse_size("1.5 GiB").unwrap(), 1_610_612_736);
        assert_eq!(parse_size("64M").unwrap(), 64 << 20);
        assert_eq!(parse_size("1E").unwrap(), 1 << 60);
        assert_eq!(parse_size("15E").unwrap(), 15 << 60);
        assert_eq!(parse_size("2e3").unwrap(), 2000);
        assert_eq!(parse_size("0.5K").unwrap(), 512);
        assert_eq!(parse_size("18446744073709551615").unwrap(), u64::MAX);
        assert_eq!(parse_size(" 7 b ").unwrap(), 7);
    }

    #[test]
    fn user_size_errors() {
        assert_eq!(parse_size(""), Err(SizeError::Empty));
        assert!(matches!(
            parse_size("18446744073709551616"),
            Err(SizeError::Overflow(_))
        ));
        assert!(matches!(parse_size("16E"), Err(SizeError::Overflow(_))));
        assert!(matches!(parse_size("1.1K"), Err(SizeError::Fractional(_))));
        assert!(matches!(parse_size("10X"), Err(SizeError::Unit(_))));
        assert!(matches!(parse_size("G"), Err(SizeError::Invalid(_))));
        assert!(matches!(parse_size("-1"), Err(SizeError::Invalid(_))));
        assert!(matches!(parse_size("inf"), Err(SizeError::NotFinite(_))));
        assert!(matches!(parse_size("1.2.3G"), Err(SizeError::Invalid(_))));
        assert!(matches!(parse_size("1iB"), Err(SizeError::Unit(_))));
        assert!(parse_size(&"9".repeat(100)).is_err());
        assert!(parse_size("1e999999999999").is_err());
    }

    fn h(s: &str) -> (u64, bool) {
        let v = parse_human_size(s).unwrap();
        (v.bytes, v.exact)
    }

    #[test]
    fn human_sizes_of_every_generation() {
        // The byte count wins and is exact.
        assert_eq!(h("64 MiB (67108864 bytes)"), (67_108_864, true));
        assert_eq!(h("10G (10737418240 bytes)"), (10_737_418_240, true));
        assert_eq!(h("64M (67108844 bytes)"), (67_108_844, true));
        assert_eq!(h("0 (0 bytes)"), (0, true));
        assert_eq!(h("1e+03 MiB (1048313856 bytes)"), (1_048_313_856, true));
        // QEMU >= 4.1 without a count: three significant digits.
        assert_eq!(h("2.19 MiB"), (2_296_381, false));
        assert_eq!(h("1e+03 MiB"), (1_048_576_000, false));
        assert_eq!(h("0.977 GiB"), (1_049_045_762, false));
        assert_eq!(h("512 B"), (512, true));
        assert_eq!(h("0 B"), (0, true));
        // QEMU < 4.1.
        assert_eq!(h("761M"), (761 << 20, false));
        assert_eq!(h("4.2G"), (4_509_715_661, false));
        assert_eq!(h("999"), (999, true));
        assert_eq!(h("196K"), (196 << 10, false));
        // oslo's examples.
        assert_eq!(h("2 KiB (2048 bytes)"), (2048, true));
        assert_eq!(h("98304 B"), (98304, true));
    }

    #[test]
    fn human_size_errors() {
        assert!(matches!(
            parse_human_size("inf"),
            Err(SizeError::NotFinite(_))
        ));
        assert!(matches!(
            parse_human_size("inf GiB"),
            Err(SizeError::NotFinite(_))
        ));
        assert!(parse_human_size("unavailable").is_err());
        assert!(parse_human_size("").is_err());
        assert!(parse_human_size("12 XiB").is_err());
        assert!(parse_human_size("1 GiB (lots bytes)").is_err());
        assert!(parse_human_size("1 GiB (99999999999999999999 bytes)").is_err());
        assert!(parse_human_size("99999 EiB").is_err());
    }

    #[test]
    fn format_is_readable_and_exact_where_possible() {
        assert_eq!(format_size(0), "0 B");
        assert_eq!(format_size(1023), "1023 B");
        assert_eq!(format_size(1024), "1 KiB");
        assert_eq!(format_size(64 << 20), "64 MiB");
        assert_eq!(format_size(1_610_612_736), "1.5 GiB");
        assert_eq!(format_size(2_297_856), "2.19 MiB");
        assert_eq!(format_size(u64::MAX), "16 EiB");
    }

    #[test]
    fn round_trips_through_format_for_whole_units() {
        for s in [1u64, 512, 1 << 10, 3 << 20, 5 << 30, 7 << 40, 1 << 60] {
            assert_eq!(parse_size(&format_size(s)).unwrap(), s);
        }
    }
}
