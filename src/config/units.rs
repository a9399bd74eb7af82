//! Durations and sizes: parsed from the text the config file uses ("250ms", "2MiB") and
//! written back in the shortest exact form.

use std::time::Duration;

const NANOS_PER_SEC: u128 = 1_000_000_000;

const DURATION_UNITS: &[(&str, u128)] = &[
    ("ns", 1),
    ("us", 1_000),
    ("µs", 1_000),
    ("ms", 1_000_000),
    ("s", NANOS_PER_SEC),
    ("m", 60 * NANOS_PER_SEC),
    ("h", 3_600 * NANOS_PER_SEC),
    ("d", 86_400 * NANOS_PER_SEC),
];

const DURATION_HINT: &str =
    "expected a number and a unit (ns, us, ms, s, m, h, d) such as \"250ms\" or \"10s\"";

/// Parses `"250ms"`, `"2s"`, `"10m"`, `"1h"`, `"1500us"`, `"1.5s"`, `"1h30m"`. A bare number
/// is refused (its unit would be a guess); `"0s"` is accepted (the caller decides).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let text = s.trim();
    if text.is_empty() {
        return Err(format!("empty duration; {DURATION_HINT}"));
    }
    if text.starts_with('-') {
        return Err(format!("{text:?}: a duration cannot be negative"));
    }
    let too_large = || format!("{text:?} is too large");
    let mut total: u128 = 0;
    let mut rest = text;
    while !rest.is_empty() {
        let (number, after) = split_number(rest);
        let (unit, next) = split_unit(after.trim_start());
        if number.is_empty() {
            return Err(format!("{text:?} is not a duration; {DURATION_HINT}"));
        }
        if unit.is_empty() {
            return Err(format!("{text:?} has no unit; {DURATION_HINT}"));
        }
        let Some(&(_, scale)) = DURATION_UNITS.iter().find(|(name, _)| *name == unit) else {
            return Err(format!("{text:?}: unknown unit {unit:?}; {DURATION_HINT}"));
        };
        let (nanos, _) = scale_number(number, scale).map_err(|e| e.describe(text, number))?;
        total = total.checked_add(nanos).ok_or_else(too_large)?;
        rest = next.trim_start();
    }
    let secs = u64::try_from(total / NANOS_PER_SEC).map_err(|_| too_large())?;
    let nanos = u32::try_from(total % NANOS_PER_SEC).map_err(|_| too_large())?;
    Ok(Duration::new(secs, nanos))
}

/// The shortest exact form: `"60s"`, `"10m"`, `"250ms"`; read back by [`parse_duration`].
pub fn format_duration(d: Duration) -> String {
    let nanos = d.as_nanos();
    if nanos == 0 {
        return "0s".to_owned();
    }
    // Minutes and hours only from 2 up: "60s" and "60m" read better than "1m" and "1h" next
    // to the seconds an operator usually writes, and SPEC §2 writes "60s".
    for (unit, scale) in [("h", 3_600 * NANOS_PER_SEC), ("m", 60 * NANOS_PER_SEC)] {
        if nanos.is_multiple_of(scale) && nanos / scale >= 2 {
            return format!("{}{unit}", nanos / scale);
        }
    }
    for (unit, scale) in [("s", NANOS_PER_SEC), ("ms", 1_000_000), ("us", 1_000)] {
        if nanos.is_multiple_of(scale) {
            return format!("{}{unit}", nanos / scale);
        }
    }
    format!("{nanos}ns")
}

const SIZE_UNITS: &[(&str, u128)] = &[
    ("b", 1),
    ("kb", 1_000),
    ("kib", 1 << 10),
    ("mb", 1_000_000),
    ("mib", 1 << 20),
    ("gb", 1_000_000_000),
    ("gib", 1 << 30),
    ("tb", 1_000_000_000_000),
    ("tib", 1 << 40),
];

const SIZE_HINT: &str =
    "expected a number of bytes or a size such as \"512KiB\", \"2MiB\" or \"1MB\"";

/// Parses `"2MiB"`, `"512KiB"`, `"1GiB"`, `"1MB"`, `"1kB"`, `"100B"`, `"1.5KiB"`, or a bare
/// integer number of bytes. Units are case-insensitive; the result must be whole bytes.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let text = s.trim();
    if text.is_empty() {
        return Err(format!("empty size; {SIZE_HINT}"));
    }
    if text.starts_with('-') {
        return Err(format!("{text:?}: a size cannot be negative"));
    }
    let (number, unit) = split_number(text);
    let unit = unit.trim();
    if number.is_empty() {
        return Err(format!("{text:?} is not a size; {SIZE_HINT}"));
    }
    let scale = if unit.is_empty() {
        1
    } else {
        let lower = unit.to_ascii_lowercase();
        let Some(&(_, scale)) = SIZE_UNITS.iter().find(|(name, _)| *name == lower) else {
            return Err(format!("{text:?}: unknown unit {unit:?}; {SIZE_HINT}"));
        };
        scale
    };
    let (bytes, exact) = scale_number(number, scale).map_err(|e| e.describe(text, number))?;
    if !exact {
        return Err(format!("{text:?} is not a whole number of bytes"));
    }
    u64::try_from(bytes).map_err(|_| format!("{text:?} is too large"))
}

/// The shortest exact form, binary units preferred: `"2MiB"`, `"1MB"`, `"100B"`; read back by
/// [`parse_size`].
pub fn format_size(n: u64) -> String {
    let mut best = (n, "B");
    for (unit, scale) in [
        ("TiB", 1u64 << 40),
        ("GiB", 1 << 30),
        ("MiB", 1 << 20),
        ("KiB", 1 << 10),
        ("TB", 1_000_000_000_000),
        ("GB", 1_000_000_000),
        ("MB", 1_000_000),
        ("kB", 1_000),
    ] {
        if n != 0 && n.is_multiple_of(scale) && n / scale < best.0 {
            best = (n / scale, unit);
        }
    }
    format!("{}{}", best.0, best.1)
}

/// Splits leading digits and dots from the rest.
fn split_number(s: &str) -> (&str, &str) {
    let end = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    s.split_at(end)
}

/// Splits leading letters (a unit) from the rest.
fn split_unit(s: &str) -> (&str, &str) {
    let end = s.find(|c: char| !c.is_alphabetic()).unwrap_or(s.len());
    s.split_at(end)
}

enum NumberError {
    NotANumber,
    TooLarge,
}

/// `number` (digits, optionally `.` and more digits) times `scale`, rounded down, and whether
/// that was exact. Integer arithmetic only: `"1.1s"` is exactly 1 100 000 000 ns.
fn scale_number(number: &str, scale: u128) -> Result<(u128, bool), NumberError> {
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    if whole.is_empty() || fraction.contains('.') || (number.contains('.') && fraction.is_empty()) {
        return Err(NumberError::NotANumber);
    }
    // Only digits are left, so a parse error is an overflow.
    let whole: u128 = whole.parse().map_err(|_| NumberError::TooLarge)?;
    let mut value = whole.checked_mul(scale).ok_or(NumberError::TooLarge)?;
    let mut exact = true;
    if !fraction.is_empty() {
        // 18 digits are below a nanosecond of a day and a byte of a TiB; the rest only
        // decide exactness.
        let (digits, dropped) = fraction.split_at(fraction.len().min(18));
        let numerator: u128 = digits.parse().map_err(|_| NumberError::TooLarge)?;
        let denominator = 10u128.pow(digits.len() as u32);
        let product = numerator * scale;
        exact = product.is_multiple_of(denominator) && dropped.bytes().all(|b| b == b'0');
        value = value
            .checked_add(product / denominator)
            .ok_or(NumberError::TooLarge)?;
    }
    Ok((value, exact))
}

impl NumberError {
    fn describe(self, text: &str, number: &str) -> String {
        match self {
            NumberError::NotANumber => format!("{text:?}: {number:?} is not a number"),
            NumberError::TooLarge => format!("{text:?} is too large"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_duration_table() {
        let ok = [
            ("250ms", Duration::from_millis(250)),
            ("2s", Duration::from_secs(2)),
            ("10m", Duration::from_secs(600)),
            ("1h", Duration::from_secs(3600)),
            ("1d", Duration::from_secs(86_400)),
            ("1500us", Duration::from_micros(1500)),
            ("1500µs", Duration::from_micros(1500)),
            ("7ns", Duration::from_nanos(7)),
            ("1.5s", Duration::from_millis(1500)),
            ("0.1s", Duration::from_millis(100)),
            ("1h30m", Duration::from_secs(5400)),
            ("1m 30s", Duration::from_secs(90)),
            (" 2 s ", Duration::from_secs(2)),
            ("0s", Duration::ZERO),
            ("1.0000000001s", Duration::from_secs(1)),
        ];
        for (text, expected) in ok {
            assert_eq!(parse_duration(text), Ok(expected), "{text:?}");
        }
        let refused = [
            ("", "empty duration"),
            ("   ", "empty duration"),
            ("10", "\"10\" has no unit"),
            ("5x", "\"5x\": unknown unit \"x\""),
            ("5S", "unknown unit \"S\""),
            ("-1s", "\"-1s\": a duration cannot be negative"),
            (
                "99999999999999999999s",
                "\"99999999999999999999s\" is too large",
            ),
            (
                "999999999999999999999999999999999999999999h",
                "is too large",
            ),
            ("1.s", "\"1.\" is not a number"),
            (".5s", "\".5\" is not a number"),
            ("1.2.3s", "\"1.2.3\" is not a number"),
            ("s", "is not a duration"),
            ("1s2", "\"1s2\" has no unit"),
            ("1e3s", "unknown unit \"e\""),
            ("+1s", "is not a duration"),
            ("1_000s", "has no unit"),
        ];
        for (text, expected) in refused {
            match parse_duration(text) {
                Ok(d) => panic!("{text:?} should be refused, got {d:?}"),
                Err(message) => assert!(message.contains(expected), "{text:?}: {message}"),
            }
        }
    }

    #[test]
    fn format_duration_is_exact_and_parses_back() {
        for (d, text) in [
            (Duration::ZERO, "0s"),
            (Duration::from_secs(1), "1s"),
            (Duration::from_secs(60), "60s"),
            (Duration::from_secs(90), "90s"),
            (Duration::from_secs(120), "2m"),
            (Duration::from_secs(600), "10m"),
            (Duration::from_secs(3600), "60m"),
            (Duration::from_secs(7200), "2h"),
            (Duration::from_millis(1500), "1500ms"),
            (Duration::from_micros(250), "250us"),
            (Duration::from_nanos(1_000_000_001), "1000000001ns"),
            (Duration::MAX, "18446744073709551615999999999ns"),
        ] {
            assert_eq!(format_duration(d), text);
            assert_eq!(parse_duration(text), Ok(d), "{text}");
        }
    }

    #[test]
    fn parse_size_table() {
        let ok = [
            ("2MiB", 2 << 20),
            ("512KiB", 512 << 10),
            ("1GiB", 1 << 30),
            ("1TiB", 1 << 40),
            ("1MB", 1_000_000),
            ("1kB", 1_000),
            ("1KB", 1_000),
            ("2mib", 2 << 20),
            ("100B", 100),
            ("100", 100),
            ("2 MiB", 2 << 20),
            ("1.5KiB", 1536),
            ("0.5MB", 500_000),
            ("0", 0),
            ("18446744073709551615", u64::MAX),
        ];
        for (text, expected) in ok {
            assert_eq!(parse_size(text), Ok(expected), "{text:?}");
        }
        let refused = [
            ("", "empty size"),
            ("5x", "\"5x\": unknown unit \"x\""),
            ("2M", "unknown unit \"M\""),
            ("-1", "\"-1\": a size cannot be negative"),
            ("-1KiB", "cannot be negative"),
            ("18446744073709551616", "is too large"),
            ("16777216TiB", "is too large"),
            ("99999999999999999999999999999999999999999", "is too large"),
            ("1.5", "\"1.5\" is not a whole number of bytes"),
            ("1.1B", "is not a whole number of bytes"),
            ("0.1KiB", "is not a whole number of bytes"),
            ("MiB", "is not a size"),
            ("1..2MiB", "\"1..2\" is not a number"),
            ("2MiB extra", "unknown unit \"MiB extra\""),
        ];
        for (text, expected) in refused {
            match parse_size(text) {
                Ok(n) => panic!("{text:?} should be refused, got {n}"),
                Err(message) => assert!(message.contains(expected), "{text:?}: {message}"),
            }
        }
    }

    #[test]
    fn format_size_is_exact_and_parses_back() {
        for (n, text) in [
            (0, "0B"),
            (1, "1B"),
            (1000, "1kB"),
            (1024, "1KiB"),
            (2 << 20, "2MiB"),
            (1_000_000, "1MB"),
            (1_024_000, "1000KiB"),
            (1_000_001, "1000001B"),
            (u64::MAX, "18446744073709551615B"),
        ] {
            assert_eq!(format_size(n), text);
            assert_eq!(parse_size(text), Ok(n), "{text}");
        }
    }
}
