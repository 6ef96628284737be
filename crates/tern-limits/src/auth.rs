//! Failed authentication: growing delays and temporary blocks, per client
//! address and per user name.
//!
//! The tracker sees only a client address and the user name the client
//! typed. It never learns whether that user exists, so unknown names and
//! wrong passwords are delayed and blocked alike, and nothing it answers
//! reveals an account.
//!
//! The rules are documented on [`AuthFailureTracker`].

use std::net::IpAddr;
use std::time::{Duration, Instant};

use crate::bounded::BoundedMap;
use crate::config::{AuthFailureConfig, doubling_delay};
use crate::ip::client_key;
use crate::window::{SlidingCounter, Timebase};

/// Longest user name kept, in bytes; longer names are truncated (at a
/// character boundary) so that huge names cost bounded memory.
pub const MAX_USER_KEY_LEN: usize = 320;

const PRUNE_PER_CALL: usize = 2;

/// What to do with an authentication attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Go ahead after waiting `delay` (zero when nothing failed recently).
    Allow {
        /// How long to wait before checking the credentials and answering.
        delay: Duration,
    },
    /// Refuse without checking the credentials (answer a 4xx).
    Blocked {
        /// When the block ends.
        until: Instant,
        /// What is blocked, for the log line.
        reason: BlockReason,
    },
}

/// Why an attempt is blocked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlockReason {
    /// Too many failures from this client address (or IPv6 prefix).
    ClientAddress,
    /// Too many failures for this user name.
    UserName,
}

#[derive(Debug, Clone)]
struct Subject {
    failures: SlidingCounter,
    blocked_until: Option<Instant>,
}

impl Subject {
    fn new() -> Self {
        Subject {
            failures: SlidingCounter::new(),
            blocked_until: None,
        }
    }

    fn is_idle(&self, tb: &Timebase, now: Instant) -> bool {
        self.blocked_until.is_none_or(|until| until <= now) && self.failures.is_empty_at(tb, now)
    }

    /// The block in force at `now`, clearing an expired one.
    fn block(&mut self, now: Instant) -> Option<Instant> {
        match self.blocked_until {
            Some(until) if until > now => Some(until),
            Some(_) => {
                self.blocked_until = None;
                None
            }
            None => None,
        }
    }

    /// Counts a failure; blocks when `threshold` (non-zero) is reached.
    fn fail(&mut self, tb: &mut Timebase, threshold: u32, block_for: Duration, now: Instant) {
        self.failures.add(tb, 1, now);
        if threshold > 0 && self.failures.count(tb, now) >= u64::from(threshold) {
            let until = now + block_for;
            self.blocked_until = Some(self.blocked_until.map_or(until, |u| u.max(until)));
            // The block replaces the count: when it ends, the client starts
            // over with an empty window (and no delay).
            self.failures.clear();
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct PairFailures {
    count: u32,
    last: Instant,
}

type PairKey = (IpAddr, String);

/// Tracks failed authentications.
///
/// The rules, with the [`AuthFailureConfig`] defaults in parentheses:
/// - Failures are counted in a sliding `failure_window` (15 min) per client
///   address (IPv6 clients per prefix, see [`client_key`](crate::client_key)), per user name
///   (compared case-insensitively), and per address+name pair.
/// - Before each attempt the client waits a delay that doubles with the
///   largest of those three counts: `0, 1, 2, 4, 8 s` (`initial_delay` 1 s,
///   `max_delay` 8 s, `free_failures` 0).
/// - `block_ip_after` (10) failures from one address block the address for
///   `block_for` (15 min), whatever user name it tries next.
/// - `block_user_after` (20) failures for one name (from any addresses)
///   block the name for `block_for`, except from addresses that logged in as
///   that name within `remember_success_for` (7 days): a distributed attacker
///   can slow a user down but not lock them out of their usual places.
/// - A success clears the delay of that address+name pair and marks the pair
///   as known. It lifts no block and does not reset the address's count, so
///   an attacker who owns one account cannot log into it between guesses to
///   reset the count for other names.
///
/// Call order for each attempt: [`before_attempt`](Self::before_attempt);
/// if allowed, wait the delay, check the credentials, then report with
/// [`record_failure`](Self::record_failure) or
/// [`record_success`](Self::record_success). Memory is bounded by
/// [`AuthFailureConfig::max_keys`] per table (addresses, names, failing
/// pairs, known pairs); the least recently seen entry is forgotten first.
#[derive(Debug)]
pub struct AuthFailureTracker {
    config: AuthFailureConfig,
    ipv6_prefix: u8,
    timebase: Timebase,
    ips: BoundedMap<IpAddr, Subject>,
    users: BoundedMap<String, Subject>,
    pairs: BoundedMap<PairKey, PairFailures>,
    /// Address+name pairs that logged in successfully, and when. Only a
    /// correct password creates one, so an attacker cannot flood it.
    known: BoundedMap<PairKey, Instant>,
}

impl AuthFailureTracker {
    /// A tracker for `config`, counting IPv6 clients per `ipv6_prefix`.
    pub fn new(config: &AuthFailureConfig, ipv6_prefix: u8) -> Self {
        AuthFailureTracker {
            config: config.clone(),
            ipv6_prefix,
            timebase: Timebase::new(config.failure_window),
            ips: BoundedMap::new(config.max_keys),
            users: BoundedMap::new(config.max_keys),
            pairs: BoundedMap::new(config.max_keys),
            known: BoundedMap::new(config.max_keys),
        }
    }

    /// Entries held across all tables (each table holds at most `max_keys`).
    pub fn tracked_keys(&self) -> usize {
        self.ips.len() + self.users.len() + self.pairs.len() + self.known.len()
    }

    /// Whether `ip` may try to authenticate as `user` now, and after what delay.
    ///
    /// An empty `user` (the name is not known yet, or the exchange never
    /// named one) is checked per address only: a name nobody owns must not
    /// gather failures that every client then shares.
    pub fn before_attempt(&mut self, ip: IpAddr, user: &str, now: Instant) -> Verdict {
        self.prune(now);
        let ip = client_key(ip, self.ipv6_prefix);
        let pair = (ip, user_key(user));
        let named = !pair.1.is_empty();

        let mut ip_failures = 0;
        if let Some(subject) = self.ips.touch(&ip) {
            if let Some(until) = subject.block(now) {
                return Verdict::Blocked {
                    until,
                    reason: BlockReason::ClientAddress,
                };
            }
            ip_failures = subject.failures.count(&mut self.timebase, now);
        }

        let known = named && self.is_known(&pair, now);
        let mut user_failures = 0;
        if named && let Some(subject) = self.users.touch(&pair.1) {
            if let Some(until) = subject.block(now)
                && !known
            {
                return Verdict::Blocked {
                    until,
                    reason: BlockReason::UserName,
                };
            }
            user_failures = subject.failures.count(&mut self.timebase, now);
        }

        let pair_failures = u64::from(self.pair_failures(&pair, now));
        let n = if known {
            // The user's usual place: only its own failures slow it down.
            pair_failures
        } else {
            pair_failures.max(ip_failures).max(user_failures)
        };
        Verdict::Allow {
            delay: doubling_delay(
                n,
                self.config.free_failures,
                self.config.initial_delay,
                self.config.max_delay,
            ),
        }
    }

    /// Reports that `ip` failed to authenticate as `user` (wrong password,
    /// unknown user, malformed exchange: all the same). An empty `user`
    /// counts against the address only (see [`Self::before_attempt`]).
    pub fn record_failure(&mut self, ip: IpAddr, user: &str, now: Instant) {
        self.prune(now);
        let ip = client_key(ip, self.ipv6_prefix);
        let pair = (ip, user_key(user));
        let block_for = self.config.block_for;

        self.ips.get_or_insert_with(&ip, Subject::new).fail(
            &mut self.timebase,
            self.config.block_ip_after,
            block_for,
            now,
        );
        if pair.1.is_empty() {
            return;
        }
        self.users.get_or_insert_with(&pair.1, Subject::new).fail(
            &mut self.timebase,
            self.config.block_user_after,
            block_for,
            now,
        );
        let count = self.pair_failures(&pair, now).saturating_add(1);
        *self
            .pairs
            .get_or_insert_with(&pair, || PairFailures { count, last: now }) =
            PairFailures { count, last: now };
    }

    /// Reports that `ip` authenticated as `user`: clears the delay for this
    /// address and name and remembers the address as one the user logs in
    /// from. Blocks and the address's failure count stay.
    pub fn record_success(&mut self, ip: IpAddr, user: &str, now: Instant) {
        self.prune(now);
        let ip = client_key(ip, self.ipv6_prefix);
        let pair = (ip, user_key(user));
        if pair.1.is_empty() {
            return;
        }
        self.pairs.remove(&pair);
        *self.known.get_or_insert_with(&pair, || now) = now;
    }

    fn pair_failures(&self, pair: &PairKey, now: Instant) -> u32 {
        match self.pairs.get(pair) {
            Some(p) if now.saturating_duration_since(p.last) < self.config.failure_window => {
                p.count
            }
            _ => 0,
        }
    }

    fn is_known(&self, pair: &PairKey, now: Instant) -> bool {
        self.known
            .get(pair)
            .is_some_and(|at| now.saturating_duration_since(*at) < self.config.remember_success_for)
    }

    fn prune(&mut self, now: Instant) {
        let tb = &self.timebase;
        let window = self.config.failure_window;
        let remember = self.config.remember_success_for;
        self.ips
            .prune_oldest(PRUNE_PER_CALL, |s| s.is_idle(tb, now));
        self.users
            .prune_oldest(PRUNE_PER_CALL, |s| s.is_idle(tb, now));
        self.pairs.prune_oldest(PRUNE_PER_CALL, |p| {
            now.saturating_duration_since(p.last) >= window
        });
        self.known.prune_oldest(PRUNE_PER_CALL, |at| {
            now.saturating_duration_since(*at) >= remember
        });
    }
}

/// The key a user name is counted under: lower case, at most
/// [`MAX_USER_KEY_LEN`] bytes.
fn user_key(user: &str) -> String {
    let mut end = user.len().min(MAX_USER_KEY_LEN);
    while !user.is_char_boundary(end) {
        end -= 1;
    }
    user[..end].to_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    fn ip(n: u32) -> IpAddr {
        IpAddr::V4(Ipv4Addr::from(0xC000_0200 + n))
    }

    fn tracker() -> AuthFailureTracker {
        AuthFailureTracker::new(&AuthFailureConfig::default(), 64)
    }

    fn delay(v: Verdict) -> Duration {
        match v {
            Verdict::Allow { delay } => delay,
            Verdict::Blocked { .. } => panic!("unexpected block: {v:?}"),
        }
    }

    #[test]
    fn delays_grow_and_cap() {
        let mut t = tracker();
        let now = Instant::now();
        let mut got = Vec::new();
        for _ in 0..7 {
            got.push(delay(t.before_attempt(ip(1), "alice@example.test", now)).as_secs());
            t.record_failure(ip(1), "alice@example.test", now);
        }
        assert_eq!(got, [0, 1, 2, 4, 8, 8, 8]);
    }

    #[test]
    fn ip_block_after_ten_failures_whatever_the_names_and_it_expires() {
        let mut t = tracker();
        let t0 = Instant::now();
        for i in 0..9 {
            assert!(matches!(
                t.before_attempt(ip(1), &format!("u{i}"), t0),
                Verdict::Allow { .. }
            ));
            t.record_failure(ip(1), &format!("u{i}"), t0);
        }
        // The ninth failure delays even a fresh name from this address.
        assert_eq!(delay(t.before_attempt(ip(1), "fresh", t0)), secs(8));
        t.record_failure(ip(1), "u9", t0);
        let v = t.before_attempt(ip(1), "anyone", t0 + secs(60));
        assert_eq!(
            v,
            Verdict::Blocked {
                until: t0 + secs(900),
                reason: BlockReason::ClientAddress
            }
        );
        // Another address is not affected, not even for the same names.
        assert_eq!(delay(t.before_attempt(ip(2), "u0", t0)), secs(1));
        // The block ends on time, and the address starts over without delay.
        assert!(matches!(
            t.before_attempt(ip(1), "x", t0 + secs(899)),
            Verdict::Blocked { .. }
        ));
        assert_eq!(
            delay(t.before_attempt(ip(1), "x", t0 + secs(900))),
            Duration::ZERO
        );
    }

    #[test]
    fn user_block_after_twenty_failures_from_many_addresses() {
        let mut t = tracker();
        let t0 = Instant::now();
        // The user logs in from home first.
        t.record_success(ip(100), "bob@example.test", t0);
        for i in 0..20 {
            t.record_failure(ip(i), "bob@example.test", t0 + secs(u64::from(i)));
        }
        let now = t0 + secs(30);
        assert_eq!(
            t.before_attempt(ip(50), "bob@example.test", now),
            Verdict::Blocked {
                until: t0 + secs(19 + 900),
                reason: BlockReason::UserName
            }
        );
        // Case does not help the attacker.
        assert!(matches!(
            t.before_attempt(ip(51), "BOB@Example.TEST", now),
            Verdict::Blocked {
                reason: BlockReason::UserName,
                ..
            }
        ));
        // The user's own place still gets in, without delay.
        assert_eq!(
            delay(t.before_attempt(ip(100), "bob@example.test", now)),
            Duration::ZERO
        );
        // Other names from the attacking addresses: one failure each, so a 1 s delay.
        assert_eq!(
            delay(t.before_attempt(ip(3), "carol@example.test", now)),
            secs(1)
        );
        // The block expires.
        assert_eq!(
            delay(t.before_attempt(ip(50), "bob@example.test", t0 + secs(19 + 900))),
            Duration::ZERO
        );
    }

    #[test]
    fn known_address_expires() {
        let mut t = tracker();
        let t0 = Instant::now();
        t.record_success(ip(100), "bob", t0);
        let later = t0 + secs(8 * 86_400);
        for i in 0..20 {
            t.record_failure(ip(i), "bob", later);
        }
        assert!(matches!(
            t.before_attempt(ip(100), "bob", later),
            Verdict::Blocked { .. }
        ));
    }

    #[test]
    fn success_clears_the_pair_delay_but_no_block_and_no_ip_count() {
        let mut t = tracker();
        let t0 = Instant::now();
        // Block address 2.
        for i in 0..10 {
            t.record_failure(ip(2), &format!("v{i}"), t0);
        }
        // Address 1 mistypes twice, then succeeds.
        t.record_failure(ip(1), "alice", t0);
        t.record_failure(ip(1), "alice", t0);
        assert_eq!(delay(t.before_attempt(ip(1), "alice", t0)), secs(2));
        t.record_success(ip(1), "alice", t0);
        assert_eq!(delay(t.before_attempt(ip(1), "alice", t0)), Duration::ZERO);
        // Address 2 stays blocked, even for alice.
        assert!(matches!(
            t.before_attempt(ip(2), "alice", t0),
            Verdict::Blocked { .. }
        ));
        // The attacker who owns an account cannot reset its address's count:
        for i in 0..7 {
            t.record_failure(ip(3), &format!("victim{i}"), t0);
            t.record_success(ip(3), "attacker", t0);
        }
        assert_eq!(delay(t.before_attempt(ip(3), "victim0", t0)), secs(8));
        for i in 7..10 {
            t.record_failure(ip(3), &format!("victim{i}"), t0);
            t.record_success(ip(3), "attacker", t0);
        }
        assert!(matches!(
            t.before_attempt(ip(3), "attacker", t0),
            Verdict::Blocked {
                reason: BlockReason::ClientAddress,
                ..
            }
        ));
    }

    #[test]
    fn failures_leave_the_window() {
        let mut t = tracker();
        let t0 = Instant::now();
        for _ in 0..9 {
            t.record_failure(ip(1), "a", t0);
        }
        // 15 min plus one slot (56.25 s) later, nothing is counted.
        let later = t0 + secs(900) + Duration::from_millis(56_250);
        assert_eq!(delay(t.before_attempt(ip(1), "a", later)), Duration::ZERO);
        for _ in 0..9 {
            t.record_failure(ip(1), "a", later);
        }
        assert!(matches!(
            t.before_attempt(ip(1), "a", later),
            Verdict::Allow { .. }
        ));
        t.record_failure(ip(1), "a", later);
        assert!(matches!(
            t.before_attempt(ip(1), "a", later),
            Verdict::Blocked { .. }
        ));
    }

    /// Security finding 4: failures without a user name (a failed
    /// OAUTHBEARER without authzid) were counted against the name "",
    /// which every AUTH start checks: a few clients blocked AUTH for all.
    #[test]
    fn finding_04_empty_user_name_never_blocks_everyone() {
        let mut t = tracker();
        let now = Instant::now();
        // 24 failures without a name from 6 addresses (4 each: under the
        // per-address block).
        for i in 0..24u32 {
            t.record_failure(ip(100 + i % 6), "", now);
        }
        // Another client starting AUTH (no name yet) is not blocked, and
        // neither is a named attempt from a fresh address.
        assert!(matches!(
            t.before_attempt(ip(1), "", now),
            Verdict::Allow { .. }
        ));
        assert_eq!(
            delay(t.before_attempt(ip(2), "alice@example.test", now)),
            Duration::ZERO
        );
        // The addresses that failed still pay for it.
        assert!(delay(t.before_attempt(ip(100), "", now)) > Duration::ZERO);
    }

    #[test]
    fn unknown_and_known_names_are_treated_alike() {
        // The tracker has no notion of existence: two names with the same
        // history get the same answers at every step.
        let mut t = tracker();
        let t0 = Instant::now();
        for step in 0..25u64 {
            let now = t0 + secs(step);
            let a = t.before_attempt(ip(7), "alice@example.test", now);
            let b = t.before_attempt(ip(8), "nosuchuser@example.test", now);
            assert_eq!(a, b, "step {step}");
            t.record_failure(ip(7), "alice@example.test", now);
            t.record_failure(ip(8), "nosuchuser@example.test", now);
        }
    }

    #[test]
    fn ipv6_clients_count_per_prefix() {
        let mut t = tracker();
        let t0 = Instant::now();
        for i in 0..10u16 {
            let addr = IpAddr::V6(std::net::Ipv6Addr::new(0x2001, 0xdb8, 0, 1, i, i, i, i));
            t.record_failure(addr, &format!("n{i}"), t0);
        }
        let other_host_same_64: IpAddr = "2001:db8:0:1:ffff::1".parse().unwrap();
        assert!(matches!(
            t.before_attempt(other_host_same_64, "x", t0),
            Verdict::Blocked {
                reason: BlockReason::ClientAddress,
                ..
            }
        ));
        let other_64: IpAddr = "2001:db8:0:2::1".parse().unwrap();
        assert!(matches!(
            t.before_attempt(other_64, "x", t0),
            Verdict::Allow { .. }
        ));
    }

    #[test]
    fn memory_is_bounded_under_a_flood() {
        let config = AuthFailureConfig {
            max_keys: 200,
            ..AuthFailureConfig::default()
        };
        let mut t = AuthFailureTracker::new(&config, 64);
        let t0 = Instant::now();
        let long_name = "x".repeat(10_000);
        for i in 0..20_000u32 {
            let name = format!("{i}{long_name}");
            t.before_attempt(ip(i), &name, t0);
            t.record_failure(ip(i), &name, t0);
            assert!(t.tracked_keys() <= 4 * 200);
        }
        assert!(t.users.len() <= 200 && t.ips.len() <= 200 && t.pairs.len() <= 200);
        assert!(
            t.users
                .get(&user_key(&format!("19999{long_name}")))
                .is_some()
        );
        // Names are truncated to a bounded key.
        assert_eq!(user_key(&long_name).len(), MAX_USER_KEY_LEN);
        assert_eq!(user_key(&"é".repeat(200)).len(), MAX_USER_KEY_LEN);
        // When the flood stops, the tables drain as the tracker is used.
        let later = t0 + secs(3600);
        for _ in 0..200 {
            t.before_attempt(ip(1), "quiet", later);
        }
        assert_eq!(t.tracked_keys(), 0);
    }

    #[test]
    fn blocking_can_be_switched_off() {
        let config = AuthFailureConfig {
            block_ip_after: 0,
            block_user_after: 0,
            ..AuthFailureConfig::default()
        };
        let mut t = AuthFailureTracker::new(&config, 64);
        let t0 = Instant::now();
        for _ in 0..100 {
            t.record_failure(ip(1), "a", t0);
        }
        assert_eq!(delay(t.before_attempt(ip(1), "a", t0)), secs(8));
    }
}
