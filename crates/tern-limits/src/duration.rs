//! Durations in configuration files: `250ms`, `30s`, `15m`, `1h`, `7d`, or a
//! bare number of seconds. Use with `#[serde(with = "tern_limits::duration")]`.
//!
//! Serialising writes the largest unit that represents the value exactly, so
//! `tern check-config` prints `15m` rather than `900s`.

use std::time::Duration;

use serde::{Deserialize, Deserializer, Serializer, de};

/// Writes `d` as text (`15m`, `1s`, `250ms`).
pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&format(*d))
}

/// Reads a duration written as text or as a bare number of seconds.
pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Secs(u64),
        Text(String),
    }
    match Raw::deserialize(d)? {
        Raw::Secs(n) => Ok(Duration::from_secs(n)),
        Raw::Text(t) => parse(&t).map_err(de::Error::custom),
    }
}

/// Parses `250ms`, `30s`, `15m`, `1h`, `7d` or `30` (seconds).
pub fn parse(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num.parse().map_err(|_| {
        format!("invalid duration {t:?}: expected e.g. \"30s\", \"15m\", \"250ms\"")
    })?;
    let secs = |mul: u64| Duration::from_secs(n.saturating_mul(mul));
    match unit.trim() {
        "ms" => Ok(Duration::from_millis(n)),
        "" | "s" => Ok(secs(1)),
        "m" => Ok(secs(60)),
        "h" => Ok(secs(3600)),
        "d" => Ok(secs(86_400)),
        other => Err(format!(
            "invalid duration unit {other:?} in {t:?}: use ms, s, m, h or d"
        )),
    }
}

/// The text [`serialize`] writes.
pub fn format(d: Duration) -> String {
    if d.subsec_nanos() != 0 {
        return format!("{}ms", d.as_millis());
    }
    let s = d.as_secs();
    match s {
        0 => "0s".to_owned(),
        _ if s.is_multiple_of(86_400) => format!("{}d", s / 86_400),
        _ if s.is_multiple_of(3600) => format!("{}h", s / 3600),
        _ if s.is_multiple_of(60) => format!("{}m", s / 60),
        _ => format!("{s}s"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_unit() {
        assert_eq!(parse("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse("30"), Ok(Duration::from_secs(30)));
        assert_eq!(parse("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse(" 15m "), Ok(Duration::from_secs(900)));
        assert_eq!(parse("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse("7d"), Ok(Duration::from_secs(604_800)));
        assert!(parse("5 minutes").unwrap_err().contains("unit"));
        assert!(parse("m").is_err());
        assert!(parse("-1s").is_err());
        assert!(parse("").is_err());
    }

    #[test]
    fn formats_with_the_largest_exact_unit() {
        for (d, s) in [
            (Duration::ZERO, "0s"),
            (Duration::from_millis(1500), "1500ms"),
            (Duration::from_secs(45), "45s"),
            (Duration::from_secs(900), "15m"),
            (Duration::from_secs(7200), "2h"),
            (Duration::from_secs(86_400 * 7), "7d"),
        ] {
            assert_eq!(format(d), s);
            assert_eq!(parse(s), Ok(d));
        }
    }
}
