//! A clock a test advances by hand.
//!
//! Tern's protocol and scheduling cores never read the time: the caller
//! passes `now`. A test drives them with a [`VirtualClock`]: it reads
//! [`now`](VirtualClock::now) (or the Unix time, or an [`Instant`]) and
//! moves it with [`advance`](VirtualClock::advance), so five days of
//! retries take microseconds. Clones share one time, so a component under
//! test and the test itself see the same clock. The clock never goes
//! backwards and never moves by itself.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// A shared, hand-advanced clock: a start time plus an offset in
/// nanoseconds that only [`advance`](VirtualClock::advance) changes.
#[derive(Debug, Clone)]
pub struct VirtualClock {
    /// The wall-clock time at offset zero.
    start: SystemTime,
    /// The monotonic instant at offset zero.
    base: Instant,
    /// Nanoseconds since the start.
    offset: Arc<AtomicU64>,
}

impl VirtualClock {
    /// A clock that starts at `unix_secs` seconds after the Unix epoch.
    pub fn at_unix(unix_secs: u64) -> VirtualClock {
        VirtualClock {
            start: UNIX_EPOCH + Duration::from_secs(unix_secs),
            base: Instant::now(),
            offset: Arc::new(AtomicU64::new(0)),
        }
    }

    /// How long the clock has been advanced since it started.
    pub fn elapsed(&self) -> Duration {
        Duration::from_nanos(self.offset.load(Ordering::SeqCst))
    }

    /// Moves the clock forward by `by` (every clone sees it).
    ///
    /// # Panics
    /// When the clock would pass about 584 years after its start.
    pub fn advance(&self, by: Duration) {
        let by = u64::try_from(by.as_nanos()).expect("advance by less than 584 years");
        self.offset
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_add(by))
            .expect("a virtual clock runs for less than 584 years");
    }

    /// Moves the clock forward to `elapsed` after its start; a time in
    /// the past leaves it where it is (the clock never goes backwards).
    pub fn advance_to(&self, elapsed: Duration) {
        let target = u64::try_from(elapsed.as_nanos()).expect("less than 584 years");
        self.offset.fetch_max(target, Ordering::SeqCst);
    }

    /// The wall-clock time now.
    pub fn now(&self) -> SystemTime {
        self.start + self.elapsed()
    }

    /// The time now as whole seconds since the Unix epoch.
    pub fn unix_secs(&self) -> u64 {
        self.now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs())
    }

    /// The time now as a monotonic [`Instant`], for cores that take one:
    /// the instant the clock was made, plus the time advanced since.
    pub fn instant(&self) -> Instant {
        self.base + self.elapsed()
    }
}

impl Default for VirtualClock {
    /// A clock at 2026-01-01T00:00:00Z.
    fn default() -> Self {
        VirtualClock::at_unix(1_767_225_600)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clones_share_one_time_that_moves_only_when_advanced() {
        let clock = VirtualClock::at_unix(1_000);
        let seen_by_core = clock.clone();
        let t0 = clock.instant();
        assert_eq!(seen_by_core.unix_secs(), 1_000);
        std::thread::sleep(Duration::from_millis(5));
        assert_eq!(clock.instant(), t0, "real time does not move it");
        clock.advance(Duration::from_secs(5 * 86_400));
        assert_eq!(seen_by_core.unix_secs(), 1_000 + 5 * 86_400);
        assert_eq!(seen_by_core.instant() - t0, Duration::from_secs(5 * 86_400));
        assert_eq!(
            seen_by_core.now(),
            UNIX_EPOCH + Duration::from_secs(1_000 + 5 * 86_400)
        );
    }

    #[test]
    fn advance_to_never_goes_backwards() {
        let clock = VirtualClock::default();
        clock.advance_to(Duration::from_secs(60));
        assert_eq!(clock.elapsed(), Duration::from_secs(60));
        clock.advance_to(Duration::from_secs(30));
        assert_eq!(clock.elapsed(), Duration::from_secs(60));
        clock.advance(Duration::from_millis(1));
        assert_eq!(clock.elapsed(), Duration::from_millis(60_001));
    }
}
