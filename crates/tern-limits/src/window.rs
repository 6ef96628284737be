//! A sliding-window event counter in constant memory.
//!
//! The window is cut into [`SLOTS`] slots of `ceil(window / SLOTS)` each and
//! the counter keeps one count per slot plus the slot in progress. An event
//! stays counted until its whole slot has left the window, so the counter
//! never under-counts: "at most `limit` events in any window of length
//! `window`" holds exactly, and a client may be refused up to one slot
//! (1/16 of the window) earlier than a perfect sliding log would. Memory per
//! key is a fixed 17 counts, whatever the limit.

use std::time::{Duration, Instant};

/// Slots per window.
pub(crate) const SLOTS: usize = 16;
const RING: usize = SLOTS + 1;

/// Turns instants into slot numbers. The epoch is the first instant seen.
#[derive(Debug, Clone)]
pub(crate) struct Timebase {
    epoch: Option<Instant>,
    slot_nanos: u128,
}

impl Timebase {
    pub(crate) fn new(window: Duration) -> Self {
        let nanos = window.as_nanos().max(1);
        let slots = SLOTS as u128;
        Timebase {
            epoch: None,
            slot_nanos: nanos.div_ceil(slots),
        }
    }

    /// Nanoseconds since the epoch (0 for instants before it).
    fn offset(&mut self, now: Instant) -> u128 {
        let epoch = *self.epoch.get_or_insert(now);
        now.saturating_duration_since(epoch).as_nanos()
    }

    fn slot_of(&mut self, now: Instant) -> u64 {
        u64::try_from(self.offset(now) / self.slot_nanos).unwrap_or(u64::MAX)
    }

    /// The effective window: a whole number of slots, never shorter than the
    /// configured one.
    pub(crate) fn window(&self) -> Duration {
        nanos_to_duration(self.slot_nanos * SLOTS as u128)
    }
}

fn nanos_to_duration(n: u128) -> Duration {
    let secs = u64::try_from(n / 1_000_000_000).unwrap_or(u64::MAX);
    // The remainder is below 10^9 and always fits.
    let sub = u32::try_from(n % 1_000_000_000).unwrap_or(0);
    Duration::new(secs, sub)
}

#[derive(Debug, Clone)]
pub(crate) struct SlidingCounter {
    counts: [u32; RING],
    /// Absolute number of the newest slot.
    head: u64,
    total: u64,
}

impl SlidingCounter {
    pub(crate) fn new() -> Self {
        SlidingCounter {
            counts: [0; RING],
            head: 0,
            total: 0,
        }
    }

    /// Moves the window to `now`, dropping the slots that left it.
    fn advance(&mut self, tb: &mut Timebase, now: Instant) {
        let to = tb.slot_of(now);
        if to <= self.head {
            return; // same slot, or a caller's instant from the past
        }
        let steps = to - self.head;
        if steps >= RING as u64 {
            self.counts = [0; RING];
            self.total = 0;
        } else {
            for i in 1..=steps {
                let idx = ring_index(self.head + i);
                self.total -= u64::from(self.counts[idx]);
                self.counts[idx] = 0;
            }
        }
        self.head = to;
    }

    /// Events counted in the window ending at `now`.
    pub(crate) fn count(&mut self, tb: &mut Timebase, now: Instant) -> u64 {
        self.advance(tb, now);
        self.total
    }

    /// Whether the window ending at `now` is empty (the key can be forgotten).
    pub(crate) fn is_empty_at(&self, tb: &Timebase, now: Instant) -> bool {
        if self.total == 0 {
            return true;
        }
        // Read-only: compute the slot without fixing an epoch.
        let Some(epoch) = tb.epoch else {
            return true;
        };
        let slot = now.saturating_duration_since(epoch).as_nanos() / tb.slot_nanos;
        slot >= u128::from(self.head) + RING as u128
    }

    pub(crate) fn add(&mut self, tb: &mut Timebase, n: u32, now: Instant) {
        self.advance(tb, now);
        let idx = ring_index(self.head);
        self.counts[idx] = self.counts[idx].saturating_add(n);
        self.total += u64::from(n);
    }

    pub(crate) fn clear(&mut self) {
        self.counts = [0; RING];
        self.total = 0;
    }

    /// How long from `now` until at least `excess` counted events have left
    /// the window, or `None` when fewer than that are counted at all.
    /// Call [`SlidingCounter::count`] with the same `now` first.
    pub(crate) fn wait_until_freed(
        &self,
        tb: &mut Timebase,
        excess: u64,
        now: Instant,
    ) -> Option<Duration> {
        let offset = tb.offset(now);
        let mut freed = 0u64;
        // k = 0 is the oldest slot (head - SLOTS), which leaves the window
        // when slot head + 1 begins; slot head - SLOTS + k leaves at the
        // start of slot head + k + 1.
        for k in 0..RING as u64 {
            freed += u64::from(self.counts[ring_index(self.head + k + 1)]);
            if freed >= excess {
                let leaves_at = (u128::from(self.head) + u128::from(k) + 1) * tb.slot_nanos;
                return Some(nanos_to_duration(leaves_at.saturating_sub(offset)));
            }
        }
        None
    }
}

/// Ring position of an absolute slot number. `head + 1` and `head - SLOTS`
/// share a position, which is what lets [`SlidingCounter::wait_until_freed`]
/// walk from the oldest slot with positive arithmetic.
fn ring_index(slot: u64) -> usize {
    // The remainder is below RING and always fits.
    usize::try_from(slot % RING as u64).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: Duration = Duration::from_secs(60);

    #[test]
    fn slot_length_rounds_up() {
        let tb = Timebase::new(Duration::from_nanos(17));
        assert_eq!(tb.slot_nanos, 2);
        assert!(tb.window() >= Duration::from_nanos(17));
        assert_eq!(Timebase::new(MIN).window(), MIN);
    }

    #[test]
    fn events_leave_after_the_window() {
        let mut tb = Timebase::new(MIN);
        let mut c = SlidingCounter::new();
        let t0 = Instant::now();
        c.add(&mut tb, 3, t0);
        c.add(&mut tb, 2, t0 + Duration::from_secs(30));
        assert_eq!(c.count(&mut tb, t0 + Duration::from_secs(59)), 5);
        // The first events' slot (0..3.75 s) leaves the window at 63.75 s.
        assert_eq!(c.count(&mut tb, t0 + Duration::from_millis(63_749)), 5);
        assert_eq!(c.count(&mut tb, t0 + Duration::from_millis(63_750)), 2);
        assert_eq!(c.count(&mut tb, t0 + Duration::from_secs(200)), 0);
        assert!(c.is_empty_at(&tb, t0 + Duration::from_secs(200)));
    }

    #[test]
    fn never_under_counts_within_the_window() {
        // Whatever the instants, an event is counted for at least `window`.
        let mut tb = Timebase::new(MIN);
        let mut c = SlidingCounter::new();
        let t0 = Instant::now();
        for ms in [0u64, 1, 3_749, 3_750, 10_000, 59_999] {
            let mut c2 = c.clone();
            let at = t0 + Duration::from_millis(ms);
            c2.add(&mut tb, 1, at);
            assert_eq!(c2.count(&mut tb, at + MIN - Duration::from_nanos(1)), 1);
        }
        c.add(&mut tb, 1, t0);
        assert_eq!(c.count(&mut tb, t0), 1);
    }

    #[test]
    fn wait_until_freed_is_exact() {
        let mut tb = Timebase::new(MIN);
        let mut c = SlidingCounter::new();
        let t0 = Instant::now();
        c.add(&mut tb, 1, t0);
        c.add(&mut tb, 1, t0 + Duration::from_secs(10));
        let now = t0 + Duration::from_secs(20);
        assert_eq!(c.count(&mut tb, now), 2);
        let w1 = c.wait_until_freed(&mut tb, 1, now).unwrap();
        assert_eq!(w1, Duration::from_millis(63_750 - 20_000));
        let w2 = c.wait_until_freed(&mut tb, 2, now).unwrap();
        // The 10 s event sits in slot 2 (7.5..11.25 s), gone at 71.25 s.
        assert_eq!(w2, Duration::from_millis(71_250 - 20_000));
        assert_eq!(c.wait_until_freed(&mut tb, 3, now), None);
        let mut c1 = c.clone();
        assert_eq!(c1.count(&mut tb, now + w1 - Duration::from_nanos(1)), 2);
        assert_eq!(c1.count(&mut tb, now + w1), 1);
        assert_eq!(c.count(&mut tb, now + w2 - Duration::from_nanos(1)), 1);
        assert_eq!(c.count(&mut tb, now + w2), 0);
    }

    #[test]
    fn instants_before_the_epoch_do_not_panic() {
        let t0 = Instant::now();
        let later = t0 + Duration::from_secs(5);
        let mut tb = Timebase::new(MIN);
        let mut c = SlidingCounter::new();
        c.add(&mut tb, 1, later);
        c.add(&mut tb, 1, t0);
        assert_eq!(c.count(&mut tb, t0), 2);
    }
}
