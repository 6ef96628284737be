//! Durations as people write them in configuration files and as Tern
//! prints them: one parser and one printer for the whole workspace.
//!
//! The grammar: one or more `<number><unit>` groups, units `ms`, `s`, `m`,
//! `h`, `d`, `w` (`"250ms"`, `"30s"`, `"15m"`, `"1h30m"`, `"5d"`, `"2w"`),
//! surrounding whitespace ignored, nothing else (no sign, no space inside,
//! no upper case). A bare number is seconds only where the caller allows it
//! ([`Bare::Seconds`]: the limits of the configuration always took `30`);
//! elsewhere a unit is required ([`Bare::Refused`]: is `5` in a retry
//! schedule minutes or seconds?). A value that overflows is an error, never
//! a saturated one.
//!
//! What this module must never do: accept text it cannot read back with
//! the same meaning, or print a duration [`parse`] would read differently.

use std::time::Duration;

/// What a number without a unit means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bare {
    /// Seconds (`30` is `30s`).
    Seconds,
    /// An error: a unit is required.
    Refused,
}

/// Text that is not a duration.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid duration {input:?}: {reason} (expected e.g. \"30s\", \"5m\", \"1h\", \"5d\", \"1h30m\", \"250ms\")"
)]
pub struct DurationError {
    /// The text as given (cut to 64 characters).
    pub input: String,
    /// What is wrong with it.
    pub reason: &'static str,
}

const MINUTE: u64 = 60;
const HOUR: u64 = 60 * MINUTE;
const DAY: u64 = 24 * HOUR;
const WEEK: u64 = 7 * DAY;
/// The longest duration: one whose milliseconds fit a `u64` (what
/// [`format`] may write as `ms`), with or without a unit.
const MAX_SECS: u64 = u64::MAX / 1000;

/// Reads `text` (see the module docs for the grammar).
pub fn parse(text: &str, bare: Bare) -> Result<Duration, DurationError> {
    let err = |reason| DurationError {
        input: text.chars().take(64).collect(),
        reason,
    };
    let s = text.trim();
    if s.is_empty() {
        return Err(err("empty"));
    }
    if s.bytes().all(|b| b.is_ascii_digit()) {
        return match bare {
            Bare::Seconds => match s.parse::<u64>() {
                Ok(n) if n <= MAX_SECS => Ok(Duration::from_secs(n)),
                Ok(_) => Err(err("too long")),
                Err(_) => Err(err("number too large")),
            },
            Bare::Refused => Err(err("missing unit after the number")),
        };
    }
    let mut total = Duration::ZERO;
    let mut rest = s;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return Err(err("a number must come before each unit"));
        }
        let number: u64 = rest[..digits]
            .parse()
            .map_err(|_| err("number too large"))?;
        rest = &rest[digits..];
        let (part, len) = if rest.starts_with("ms") {
            (Some(Duration::from_millis(number)), 2)
        } else {
            let unit = match rest.as_bytes().first() {
                Some(b's') => 1,
                Some(b'm') => MINUTE,
                Some(b'h') => HOUR,
                Some(b'd') => DAY,
                Some(b'w') => WEEK,
                Some(_) => return Err(err("unknown unit (use ms, s, m, h, d or w)")),
                None => return Err(err("missing unit after the number")),
            };
            (number.checked_mul(unit).map(Duration::from_secs), 1)
        };
        total = part
            .and_then(|p| total.checked_add(p))
            .filter(|t| t.as_secs() <= MAX_SECS)
            .ok_or_else(|| err("too long"))?;
        rest = &rest[len..];
    }
    Ok(total)
}

/// Writes `d` the way [`parse`] reads it: largest units first
/// (`"1d1h1m1s"`, `"5d"`, `"15m"`), or whole milliseconds when there is a
/// fraction of a second (`"1500ms"`).
pub fn format(d: Duration) -> String {
    if d.subsec_nanos() != 0 {
        return format!("{}ms", d.as_millis());
    }
    let mut secs = d.as_secs();
    if secs == 0 {
        return "0s".to_owned();
    }
    let mut out = String::new();
    for (unit, suffix) in [(DAY, 'd'), (HOUR, 'h'), (MINUTE, 'm'), (1, 's')] {
        if secs >= unit {
            out.push_str(&(secs / unit).to_string());
            out.push(suffix);
            secs %= unit;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_grammar() {
        let ok = |s: &str, bare| parse(s, bare).unwrap();
        for bare in [Bare::Seconds, Bare::Refused] {
            assert_eq!(ok("250ms", bare), Duration::from_millis(250));
            assert_eq!(ok(" 1h30m ", bare), Duration::from_secs(5400));
            assert_eq!(ok("2w", bare), Duration::from_secs(1_209_600));
            assert_eq!(ok("1m30s500ms", bare), Duration::from_millis(90_500));
            for bad in [
                "",
                "m",
                "5x",
                "5 m",
                "1h 30m",
                "-5m",
                "5M",
                "ms",
                "1h-",
                "99999999999999999999s",
                "18446744073709551615w",
            ] {
                assert!(parse(bad, bare).is_err(), "{bad:?} accepted");
            }
        }
        assert_eq!(ok("30", Bare::Seconds), Duration::from_secs(30));
        // The same bound with and without a unit (found by the fuzz target).
        let huge = "8882222222222888800";
        assert_eq!(parse(huge, Bare::Seconds).unwrap_err().reason, "too long");
        assert_eq!(
            parse(&format!("{huge}s"), Bare::Seconds)
                .unwrap_err()
                .reason,
            "too long"
        );
        let e = parse("30", Bare::Refused).unwrap_err();
        assert_eq!(e.reason, "missing unit after the number");
        assert!(e.to_string().contains("\"30\""), "{e}");
    }

    #[test]
    fn what_is_printed_reads_back() {
        for ms in [0, 1, 999, 1000, 1500, 59_000, 60_000, 3_600_000, 90_061_000] {
            let d = Duration::from_millis(ms);
            assert_eq!(parse(&format(d), Bare::Refused), Ok(d), "{ms}");
        }
        assert_eq!(format(Duration::from_secs(90_061)), "1d1h1m1s");
        assert_eq!(format(Duration::from_millis(1500)), "1500ms");
        assert_eq!(format(Duration::from_secs(7 * 86_400)), "7d");
    }
}
