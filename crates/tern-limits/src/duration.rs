//! Durations in configuration files: `250ms`, `30s`, `15m`, `1h`, `7d`, `1h30m`,
//! or a bare number of seconds. Use with `#[serde(with = "tern_limits::duration")]`.
//!
//! Serialising writes the largest units first, so `tern check-config`
//! prints `15m` rather than `900s`.

use std::time::Duration;

use serde::{Deserialize, Deserializer, Serializer, de};
use tern_types::duration::Bare;
pub use tern_types::duration::DurationError;

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

/// Parses `250ms`, `30s`, `15m`, `1h30m`, `7d` or `30` (seconds): the
/// workspace's one duration grammar ([`tern_types::duration`]) with a bare
/// number read as seconds, as the limits always were.
pub fn parse(text: &str) -> Result<Duration, DurationError> {
    tern_types::duration::parse(text, Bare::Seconds)
}

/// The text [`serialize`] writes ([`tern_types::duration::format`]).
pub fn format(d: Duration) -> String {
    tern_types::duration::format(d)
}

/// The same for an optional duration (absent: `None`). Use with
/// `#[serde(default, with = "tern_limits::duration::option",
/// skip_serializing_if = "Option::is_none")]`.
pub mod option {
    use std::time::Duration;

    use serde::{Deserializer, Serializer};

    /// Writes `Some(d)` as [`super::serialize`] does, `None` as nothing.
    pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => super::serialize(d, s),
            None => s.serialize_none(),
        }
    }

    /// Reads a present duration as [`super::deserialize`] does.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        super::deserialize(d).map(Some)
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
        assert!(parse("5 minutes").unwrap_err().to_string().contains("unit"));
        assert!(parse("m").is_err());
        assert!(parse("-1s").is_err());
        assert!(parse("").is_err());
    }

    /// Moved from the binary's configuration module, which had its own
    /// copy of this (de)serializer before the sections moved to their crates.
    #[test]
    fn durations() {
        assert_eq!(parse("300s").unwrap(), Duration::from_secs(300));
        assert_eq!(parse("5m").unwrap(), Duration::from_secs(300));
        assert_eq!(parse("1h").unwrap(), Duration::from_secs(3600));
        assert_eq!(parse("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse("7").unwrap(), Duration::from_secs(7));
        assert_eq!(parse("2d").unwrap(), Duration::from_secs(172_800));
        assert!(parse("5 fortnights").is_err());
        assert!(parse("s").is_err());
    }

    #[test]
    fn formats_with_the_largest_units_first() {
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
