//! The retry schedule: when a deferred recipient is tried again, and when
//! the queue gives up on it.
//!
//! Everything here is a pure function of its arguments. Time is a `u64` of
//! Unix seconds passed in by the caller, so the queue manager, the tests and
//! `tern queue list` all compute the same answer and no test ever sleeps.
//!
//! The default follows RFC 5321 4.5.4.1: the first retries come within
//! minutes (5m, 10m, 20m, 40m), then once an hour, and a message that could
//! not be delivered for 5 days is returned to its sender. A delay warning is
//! due after 4 hours.
//!
//! [`RetrySchedule`] is (de)serialisable with human durations (`"5m"`,
//! `"1h"`, `"5d"`, `"1h30m"`) and unknown keys refused, so the binary can
//! embed it as a table of its `[queue]` configuration (as a nested field:
//! `deny_unknown_fields` does not combine with `#[serde(flatten)]`).
//!
//! What this module must never do: schedule an attempt after the expiry
//! time, schedule one that is not strictly later than `now` after an attempt
//! (a zero interval would make the queue spin), or panic on overflowing
//! times.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

const MINUTE: u64 = 60;
const HOUR: u64 = 60 * MINUTE;
const DAY: u64 = 24 * HOUR;

/// When deferred recipients are retried and when they expire.
///
/// Build one with [`RetrySchedule::new`] (validated), take the
/// [`Default`], or deserialise it; the fields are public for reading, and a
/// schedule built by hand is still handled safely by
/// [`next_attempt`](Self::next_attempt) (an empty list or a zero interval
/// counts as a one-second interval).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "RawSchedule", into = "RawSchedule")]
pub struct RetrySchedule {
    /// The wait after the 1st, 2nd, … attempt; the last one repeats.
    /// Default: 5m, 10m, 20m, 40m, then 1h.
    pub intervals: Vec<Duration>,
    /// How long after it was queued a recipient is given up on (expired
    /// and bounced). Default: 5 days.
    pub max_age: Duration,
    /// How long after it was queued a still-undelivered recipient gets a
    /// delay warning; `None` for never. Default: 4 hours.
    pub delay_warning_after: Option<Duration>,
}

/// What [`RetrySchedule::next_attempt`] decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Try again at this time (Unix seconds); never later than the expiry.
    At(u64),
    /// The recipient has been queued for `max_age`: give up.
    Expire,
}

/// A schedule that cannot be used.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScheduleError {
    /// `intervals` is empty.
    #[error("retry schedule: intervals must list at least one duration")]
    NoIntervals,
    /// An interval shorter than one second (the queue would spin).
    #[error("retry schedule: interval {index} must be at least 1s")]
    ZeroInterval {
        /// Its position in `intervals`, from 0.
        index: usize,
    },
    /// `max_age` shorter than one second.
    #[error("retry schedule: max_age must be at least 1s")]
    ZeroMaxAge,
    /// `delay_warning_after` shorter than one second.
    #[error("retry schedule: delay_warning_after must be at least 1s (or \"never\")")]
    ZeroDelayWarning,
}

impl Default for RetrySchedule {
    fn default() -> RetrySchedule {
        RetrySchedule {
            intervals: [5 * MINUTE, 10 * MINUTE, 20 * MINUTE, 40 * MINUTE, HOUR]
                .into_iter()
                .map(Duration::from_secs)
                .collect(),
            max_age: Duration::from_secs(5 * DAY),
            delay_warning_after: Some(Duration::from_secs(4 * HOUR)),
        }
    }
}

impl RetrySchedule {
    /// A validated schedule (see [`validate`](Self::validate)).
    pub fn new(
        intervals: Vec<Duration>,
        max_age: Duration,
        delay_warning_after: Option<Duration>,
    ) -> Result<RetrySchedule, ScheduleError> {
        let schedule = RetrySchedule {
            intervals,
            max_age,
            delay_warning_after,
        };
        schedule.validate()?;
        Ok(schedule)
    }

    /// Check that every duration is at least one second and that there is
    /// at least one interval. Sub-second parts are ignored by the schedule,
    /// which counts whole seconds.
    pub fn validate(&self) -> Result<(), ScheduleError> {
        if self.intervals.is_empty() {
            return Err(ScheduleError::NoIntervals);
        }
        if let Some(index) = self.intervals.iter().position(|d| d.as_secs() == 0) {
            return Err(ScheduleError::ZeroInterval { index });
        }
        if self.max_age.as_secs() == 0 {
            return Err(ScheduleError::ZeroMaxAge);
        }
        if self.delay_warning_after.is_some_and(|d| d.as_secs() == 0) {
            return Err(ScheduleError::ZeroDelayWarning);
        }
        Ok(())
    }

    /// The wait after attempt number `attempts` (1 for the first attempt),
    /// in whole seconds, at least 1.
    pub fn interval_after(&self, attempts: u32) -> u64 {
        let slot = usize::try_from(attempts.saturating_sub(1)).unwrap_or(usize::MAX);
        self.intervals
            .get(slot)
            .or(self.intervals.last())
            .map_or(1, |d| d.as_secs().max(1))
    }

    /// When a recipient queued at `first_queued` expires (Unix seconds).
    pub fn expires_at(&self, first_queued: u64) -> u64 {
        first_queued.saturating_add(self.max_age.as_secs())
    }

    /// When the next attempt is due, given when the message was queued, how
    /// many attempts were made so far and the current time.
    ///
    /// - `now` at or past the expiry: [`Next::Expire`];
    /// - no attempt yet: [`Next::At`]`(now)`;
    /// - otherwise `now` plus the interval for that attempt count, but never
    ///   later than the expiry, so that the last attempt happens exactly at
    ///   `max_age` (and a temporary failure then expires the recipient).
    pub fn next_attempt(&self, first_queued: u64, attempts: u32, now: u64) -> Next {
        let expiry = self.expires_at(first_queued);
        if now >= expiry {
            return Next::Expire;
        }
        if attempts == 0 {
            return Next::At(now);
        }
        Next::At(
            now.saturating_add(self.interval_after(attempts))
                .min(expiry),
        )
    }

    /// When a delay warning becomes due for a message queued at
    /// `first_queued`: `None` when warnings are off or would come no earlier
    /// than the expiry (the failure notice then says it all).
    pub fn delay_warning_at(&self, first_queued: u64) -> Option<u64> {
        let after = self.delay_warning_after?;
        let at = first_queued.saturating_add(after.as_secs());
        (at < self.expires_at(first_queued)).then_some(at)
    }
}

pub use tern_types::duration::DurationError;

/// Read a human duration: one or more `<number><unit>` groups with units
/// `ms`, `s`, `m`, `h`, `d`, `w` (e.g. `"90s"`, `"5m"`, `"1h30m"`, `"5d"`);
/// a unit is required. The workspace's one grammar,
/// [`tern_types::duration`].
pub fn parse_duration(text: &str) -> Result<Duration, DurationError> {
    tern_types::duration::parse(text, tern_types::duration::Bare::Refused)
}

/// Write a duration the way [`parse_duration`] reads it, largest units
/// first (`"1d1h1m1s"`, `"5d"`).
pub fn format_duration(duration: Duration) -> String {
    tern_types::duration::format(duration)
}

/// The serialised form: every field optional (defaults apply), unknown
/// fields refused.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSchedule {
    #[serde(default = "default_intervals")]
    intervals: Vec<HumanDuration>,
    #[serde(default = "default_max_age")]
    max_age: HumanDuration,
    #[serde(default = "default_delay_warning")]
    delay_warning_after: DelayWarning,
}

fn default_intervals() -> Vec<HumanDuration> {
    RetrySchedule::default()
        .intervals
        .into_iter()
        .map(HumanDuration)
        .collect()
}

fn default_max_age() -> HumanDuration {
    HumanDuration(RetrySchedule::default().max_age)
}

fn default_delay_warning() -> DelayWarning {
    DelayWarning(RetrySchedule::default().delay_warning_after)
}

impl TryFrom<RawSchedule> for RetrySchedule {
    type Error = ScheduleError;

    fn try_from(raw: RawSchedule) -> Result<RetrySchedule, ScheduleError> {
        RetrySchedule::new(
            raw.intervals.into_iter().map(|d| d.0).collect(),
            raw.max_age.0,
            raw.delay_warning_after.0,
        )
    }
}

impl From<RetrySchedule> for RawSchedule {
    fn from(s: RetrySchedule) -> RawSchedule {
        RawSchedule {
            intervals: s.intervals.into_iter().map(HumanDuration).collect(),
            max_age: HumanDuration(s.max_age),
            delay_warning_after: DelayWarning(s.delay_warning_after),
        }
    }
}

/// A [`Duration`] written as a human string.
#[derive(Debug, Clone, Copy)]
struct HumanDuration(Duration);

impl Serialize for HumanDuration {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format_duration(self.0))
    }
}

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<HumanDuration, D::Error> {
        d.deserialize_str(DurationVisitor { allow_never: false })
            .map(|v| HumanDuration(v.unwrap_or_default()))
    }
}

/// `delay_warning_after`: a duration, or `"never"` / `"off"`.
#[derive(Debug, Clone, Copy)]
struct DelayWarning(Option<Duration>);

impl Serialize for DelayWarning {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.0 {
            Some(d) => s.serialize_str(&format_duration(d)),
            None => s.serialize_str("never"),
        }
    }
}

impl<'de> Deserialize<'de> for DelayWarning {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<DelayWarning, D::Error> {
        d.deserialize_str(DurationVisitor { allow_never: true })
            .map(DelayWarning)
    }
}

struct DurationVisitor {
    allow_never: bool,
}

impl serde::de::Visitor<'_> for DurationVisitor {
    type Value = Option<Duration>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.allow_never {
            f.write_str("a duration such as \"4h\", or \"never\"")
        } else {
            f.write_str("a duration such as \"5m\", \"1h\" or \"5d\"")
        }
    }

    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Option<Duration>, E> {
        if self.allow_never && matches!(v.trim(), "never" | "off") {
            return Ok(None);
        }
        parse_duration(v).map(Some).map_err(E::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_and_format() {
        let secs = |s: &str| parse_duration(s).map(|d| d.as_secs());
        assert_eq!(secs("30s"), Ok(30));
        assert_eq!(secs("5m"), Ok(300));
        assert_eq!(secs(" 1h "), Ok(3600));
        assert_eq!(secs("5d"), Ok(432_000));
        assert_eq!(secs("2w"), Ok(1_209_600));
        assert_eq!(secs("1h30m"), Ok(5400));
        assert_eq!(secs("0s"), Ok(0));
        for bad in [
            "",
            "5",
            "m",
            "5x",
            "5 m",
            "1h 30m",
            "-5m",
            "5M",
            "99999999999999999999s",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad:?} accepted");
        }
        assert!(parse_duration("18446744073709551615w").is_err());
        for s in [0, 1, 59, 60, 3600, 5400, 86_400, 432_000, 90_061] {
            let d = Duration::from_secs(s);
            assert_eq!(parse_duration(&format_duration(d)), Ok(d), "{s}");
        }
        assert_eq!(format_duration(Duration::from_secs(90_061)), "1d1h1m1s");
        assert_eq!(format_duration(Duration::from_secs(432_000)), "5d");
    }

    #[test]
    fn interval_after_repeats_the_last() {
        let s = RetrySchedule::default();
        let gaps: Vec<u64> = (0..8).map(|n| s.interval_after(n)).collect();
        assert_eq!(gaps, [300, 300, 600, 1200, 2400, 3600, 3600, 3600]);
        assert_eq!(s.interval_after(u32::MAX), 3600);
    }

    #[test]
    fn hand_built_degenerate_schedules_never_spin() {
        let s = RetrySchedule {
            intervals: vec![],
            max_age: Duration::from_secs(100),
            delay_warning_after: None,
        };
        assert_eq!(s.next_attempt(0, 3, 10), Next::At(11));
        assert!(s.validate().is_err());
        let s = RetrySchedule {
            intervals: vec![Duration::ZERO],
            ..s
        };
        assert_eq!(s.next_attempt(0, 1, 10), Next::At(11));
        assert_eq!(s.validate(), Err(ScheduleError::ZeroInterval { index: 0 }));
        // Times near u64::MAX saturate instead of overflowing.
        let s = RetrySchedule::default();
        assert_eq!(s.expires_at(u64::MAX - 1), u64::MAX);
        assert_eq!(
            s.next_attempt(u64::MAX - 10, 1, u64::MAX - 5),
            Next::At(u64::MAX)
        );
    }
}
