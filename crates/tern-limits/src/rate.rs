//! Per-key sliding-window rate limits: connections per client address,
//! messages and recipients per user.

use std::hash::Hash;
use std::time::{Duration, Instant};

use crate::bounded::BoundedMap;
use crate::config::RateConfig;
use crate::window::{SlidingCounter, Timebase};

/// Entries examined for pruning on each call.
const PRUNE_PER_CALL: usize = 2;

/// A request refused by a [`RateLimiter`]: retrying after `wait` will
/// succeed if nothing else is recorded for the key meanwhile.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("rate limit reached; retry in {}s", wait.as_secs().max(1))]
pub struct RetryAfter {
    /// How long until the window has room. When a single request is larger
    /// than the whole limit it can never succeed, and this is the full
    /// window.
    pub wait: Duration,
}

/// Counts events per key and refuses those beyond `limit` in any sliding
/// `window` (see [`RateConfig`]).
///
/// Refused events are not counted, so a client that retries after the
/// [`RetryAfter`] it was given gets in. Memory is bounded by
/// [`RateConfig::max_keys`]: when full, the key seen least recently is
/// forgotten (and with it its count), and keys whose window is empty are
/// pruned as the limiter is used.
///
/// Call order: [`check_and_record`](Self::check_and_record) (or
/// [`record_n`](Self::record_n)) when the event happens, with the current
/// time; [`check_n`](Self::check_n) to ask without counting. Instants must
/// not go backwards by more than a slot; earlier ones count as the latest.
#[derive(Debug)]
pub struct RateLimiter<K> {
    limit: u32,
    timebase: Timebase,
    keys: BoundedMap<K, SlidingCounter>,
}

impl<K: Hash + Eq + Clone> RateLimiter<K> {
    /// A limiter for `config` (a limit of 0 allows everything and stores nothing).
    pub fn new(config: &RateConfig) -> Self {
        RateLimiter {
            limit: config.limit,
            timebase: Timebase::new(config.window),
            keys: BoundedMap::new(config.max_keys),
        }
    }

    /// The configured limit per window (0: none).
    pub fn limit(&self) -> u32 {
        self.limit
    }

    /// Keys currently tracked (at most `max_keys`).
    pub fn tracked_keys(&self) -> usize {
        self.keys.len()
    }

    /// Records one event for `key` at `now`, or refuses it.
    pub fn check_and_record(&mut self, key: K, now: Instant) -> Result<(), RetryAfter> {
        self.record_n(key, 1, now)
    }

    /// Records `n` events for `key` at `now` (for example the recipients of
    /// one message), or refuses all of them.
    pub fn record_n(&mut self, key: K, n: u32, now: Instant) -> Result<(), RetryAfter> {
        if self.limit == 0 || n == 0 {
            return Ok(());
        }
        self.prune(now);
        let limit = u64::from(self.limit);
        let counter = self.keys.get_or_insert_with(&key, SlidingCounter::new);
        let counted = counter.count(&mut self.timebase, now);
        let wanted = counted + u64::from(n);
        if wanted > limit {
            let wait = if u64::from(n) > limit {
                None
            } else {
                counter.wait_until_freed(&mut self.timebase, wanted - limit, now)
            };
            let empty = counted == 0;
            if empty {
                self.keys.remove(&key);
            }
            return Err(RetryAfter {
                wait: wait.unwrap_or_else(|| self.timebase.window()),
            });
        }
        counter.add(&mut self.timebase, n, now);
        Ok(())
    }

    /// Whether `n` more events for `key` would be allowed at `now`, without
    /// recording them.
    pub fn check_n(&mut self, key: &K, n: u32, now: Instant) -> Result<(), RetryAfter> {
        if self.limit == 0 || n == 0 {
            return Ok(());
        }
        let limit = u64::from(self.limit);
        if u64::from(n) > limit {
            return Err(RetryAfter {
                wait: self.timebase.window(),
            });
        }
        // Work on a copy so that asking never reorders or creates entries.
        let Some(counter) = self.keys.get(key) else {
            return Ok(());
        };
        let mut counter = counter.clone();
        let wanted = counter.count(&mut self.timebase, now) + u64::from(n);
        if wanted <= limit {
            return Ok(());
        }
        let wait = counter
            .wait_until_freed(&mut self.timebase, wanted - limit, now)
            .unwrap_or_else(|| self.timebase.window());
        Err(RetryAfter { wait })
    }

    /// Forgets `key` (for example after an administrator lifts a limit).
    pub fn forget(&mut self, key: &K) {
        self.keys.remove(key);
    }

    fn prune(&mut self, now: Instant) {
        let tb = &self.timebase;
        self.keys
            .prune_oldest(PRUNE_PER_CALL, |c| c.is_empty_at(tb, now));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{IpAddr, Ipv4Addr};

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    fn ip(n: u8) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(192, 0, 2, n))
    }

    #[test]
    fn sixty_per_minute_then_refused_then_allowed_after_retry() {
        let mut rl = RateLimiter::new(&RateConfig::new(60, secs(60)));
        let t0 = Instant::now();
        for i in 0..60 {
            rl.check_and_record(ip(1), t0 + Duration::from_millis(i * 100))
                .unwrap();
        }
        let now = t0 + secs(10);
        let refused = rl.check_and_record(ip(1), now).unwrap_err();
        // The earliest slot (0..3.75 s) holds 38 events and leaves at 63.75 s.
        assert_eq!(refused.wait, Duration::from_millis(63_750) - secs(10));
        // Just before: still refused. At the instant given: allowed.
        assert!(
            rl.check_and_record(ip(1), now + refused.wait - Duration::from_millis(1))
                .is_err()
        );
        rl.check_and_record(ip(1), now + refused.wait).unwrap();
    }

    #[test]
    fn never_more_than_limit_in_any_window() {
        // A client that retries greedily, exactly when told, never gets more
        // than `limit` events into any 60 s window.
        let mut rl = RateLimiter::new(&RateConfig::new(10, secs(60)));
        let t0 = Instant::now();
        let mut now = t0;
        let mut accepted = Vec::new();
        while now < t0 + secs(600) {
            match rl.check_and_record("k", now) {
                Ok(()) => {
                    accepted.push(now);
                    now += Duration::from_millis(700);
                }
                Err(r) => {
                    assert!(r.wait > Duration::ZERO);
                    now += r.wait;
                }
            }
        }
        assert!(
            accepted.len() > 80,
            "the limiter lets the rate through: {}",
            accepted.len()
        );
        for (i, start) in accepted.iter().enumerate() {
            let in_window = accepted[i..]
                .iter()
                .take_while(|t| **t < *start + secs(60))
                .count();
            assert!(in_window <= 10, "{in_window} events in one window");
        }
    }

    #[test]
    fn keys_are_independent() {
        let mut rl = RateLimiter::new(&RateConfig::new(2, secs(60)));
        let t0 = Instant::now();
        rl.check_and_record(ip(1), t0).unwrap();
        rl.check_and_record(ip(1), t0).unwrap();
        assert!(rl.check_and_record(ip(1), t0).is_err());
        rl.check_and_record(ip(2), t0).unwrap();
        rl.check_and_record(ip(2), t0).unwrap();
        assert!(rl.check_and_record(ip(2), t0).is_err());
    }

    #[test]
    fn record_n_counts_recipients_all_or_nothing() {
        let mut rl = RateLimiter::new(&RateConfig::new(2000, secs(3600)));
        let t0 = Instant::now();
        rl.record_n("alice", 1500, t0).unwrap();
        let refused = rl.record_n("alice", 600, t0 + secs(60)).unwrap_err();
        assert_eq!(
            refused.wait,
            secs(3600 + 225 - 60),
            "first slot leaves after 17 slots"
        );
        // Nothing of the refused 600 was counted: 500 still fit.
        rl.record_n("alice", 500, t0 + secs(61)).unwrap();
        assert!(rl.record_n("alice", 1, t0 + secs(62)).is_err());
        // A single request larger than the limit waits a full window (and
        // would still be refused then).
        let huge = rl.record_n("bob", 2001, t0).unwrap_err();
        assert_eq!(huge.wait, secs(3600));
        assert_eq!(
            rl.tracked_keys(),
            1,
            "a refused first request stores nothing"
        );
        rl.record_n("bob", 0, t0).unwrap();
    }

    #[test]
    fn check_n_does_not_record() {
        let mut rl = RateLimiter::new(&RateConfig::new(3, secs(60)));
        let t0 = Instant::now();
        rl.check_n(&"k", 3, t0).unwrap();
        assert_eq!(rl.tracked_keys(), 0);
        rl.record_n("k", 2, t0).unwrap();
        rl.check_n(&"k", 1, t0).unwrap();
        assert!(rl.check_n(&"k", 2, t0).is_err());
        assert!(rl.check_n(&"k", 4, t0).is_err());
        rl.check_n(&"k", 2, t0 + secs(64)).unwrap();
        // Still only two recorded.
        rl.check_and_record("k", t0).unwrap();
        assert!(rl.check_and_record("k", t0).is_err());
        rl.forget(&"k");
        rl.record_n("k", 3, t0).unwrap();
    }

    #[test]
    fn window_expires() {
        let mut rl = RateLimiter::new(&RateConfig::new(500, secs(3600)));
        let t0 = Instant::now();
        rl.record_n("u", 500, t0).unwrap();
        assert!(rl.check_and_record("u", t0 + secs(3600)).is_err());
        rl.check_and_record("u", t0 + secs(3600 + 225)).unwrap();
    }

    #[test]
    fn zero_limit_is_off() {
        let mut rl = RateLimiter::new(&RateConfig::new(0, Duration::ZERO));
        let t0 = Instant::now();
        for i in 0..1000u32 {
            rl.check_and_record(i, t0).unwrap();
        }
        assert_eq!(rl.tracked_keys(), 0);
        assert_eq!(rl.limit(), 0);
    }

    #[test]
    fn key_flood_is_bounded_and_idle_keys_are_pruned() {
        let mut config = RateConfig::new(5, secs(60));
        config.max_keys = 1000;
        let mut rl = RateLimiter::new(&config);
        let t0 = Instant::now();
        for i in 0..50_000u32 {
            rl.check_and_record(i, t0).unwrap();
            assert!(rl.tracked_keys() <= 1000);
        }
        assert_eq!(rl.tracked_keys(), 1000);
        // After the window, each call prunes idle keys faster than it adds.
        let later = t0 + secs(120);
        for i in 0..600u32 {
            rl.check_and_record(1_000_000 + i, later).unwrap();
        }
        assert_eq!(rl.tracked_keys(), 600, "every idle key was pruned");
    }

    #[test]
    fn an_active_key_survives_a_flood_of_new_keys() {
        // The flood evicts least recently *seen* keys; a client that keeps
        // hitting the limit keeps its count.
        let mut config = RateConfig::new(3, secs(60));
        config.max_keys = 100;
        let mut rl = RateLimiter::new(&config);
        let t0 = Instant::now();
        for _ in 0..3 {
            rl.check_and_record(u32::MAX, t0).unwrap();
        }
        for i in 0..10_000u32 {
            if i % 50 == 0 {
                assert!(rl.check_and_record(u32::MAX, t0).is_err());
            }
            rl.check_and_record(i, t0).unwrap();
        }
    }

    #[test]
    fn retry_after_message() {
        let r = RetryAfter {
            wait: Duration::from_millis(200),
        };
        assert_eq!(r.to_string(), "rate limit reached; retry in 1s");
        let r = RetryAfter { wait: secs(90) };
        assert_eq!(r.to_string(), "rate limit reached; retry in 90s");
    }
}
