//! The server's shared abuse counters: connection rate per client address,
//! failed AUTH per address and user, messages and recipients per user, and
//! the tarpit after protocol errors.
//!
//! The logic lives in `tern-limits` (pure, clock passed in); this module
//! only holds one instance of each behind a mutex shared by all sessions.
//! Locks are held for a map lookup, never across an await.

use std::net::IpAddr;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tern_limits::{
    AbuseConfig, AuthFailureTracker, RateLimiter, RetryAfter, TarpitPolicy, Verdict, client_key,
};

/// All counters, built from `[limits.abuse]`.
#[derive(Debug)]
pub struct Abuse {
    ipv6_prefix: u8,
    /// Client networks the connection rate does not apply to (loopback and
    /// trusted networks by default, as Postfix exempts `$mynetworks`).
    exempt: Vec<ipnet::IpNet>,
    connections: Mutex<RateLimiter<IpAddr>>,
    messages: Mutex<RateLimiter<String>>,
    recipients: Mutex<RateLimiter<String>>,
    auth: Mutex<AuthFailureTracker>,
    tarpit: TarpitPolicy,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Abuse {
    /// Counters configured by `config` (validate it first); clients in
    /// `exempt` are not subject to the connection rate.
    pub fn new(config: &AbuseConfig, exempt: Vec<ipnet::IpNet>) -> Abuse {
        Abuse {
            ipv6_prefix: config.ipv6_prefix,
            exempt,
            connections: Mutex::new(RateLimiter::new(&config.connections_per_ip)),
            messages: Mutex::new(RateLimiter::new(&config.messages_per_user)),
            recipients: Mutex::new(RateLimiter::new(&config.recipients_per_user)),
            auth: Mutex::new(AuthFailureTracker::new(&config.auth, config.ipv6_prefix)),
            tarpit: TarpitPolicy::new(&config.tarpit),
        }
    }

    /// Counts a new connection from `ip`; `Err` when the rate is exceeded.
    pub fn connection(&self, ip: IpAddr, now: Instant) -> Result<(), RetryAfter> {
        let plain = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
            v4 => v4,
        };
        if self.exempt.iter().any(|n| n.contains(&plain)) {
            return Ok(());
        }
        let key = client_key(ip, self.ipv6_prefix);
        lock(&self.connections).check_and_record(key, now)
    }

    /// May `user` start another message? Checks without counting: only
    /// messages actually accepted count ([`Abuse::message_accepted`]).
    pub fn message_allowed(&self, user: &str, now: Instant) -> Result<(), RetryAfter> {
        lock(&self.messages).check_n(&user.to_ascii_lowercase(), 1, now)
    }

    /// Counts one accepted message for `user`.
    pub fn message_accepted(&self, user: &str, now: Instant) {
        let _ = lock(&self.messages).record_n(user.to_ascii_lowercase(), 1, now);
    }

    /// Counts one recipient for `user`.
    pub fn recipient(&self, user: &str, now: Instant) -> Result<(), RetryAfter> {
        lock(&self.recipients).check_and_record(user.to_ascii_lowercase(), now)
    }

    /// May `ip` try to authenticate as `user` ("" when not known yet)?
    pub fn auth_verdict(&self, ip: IpAddr, user: &str, now: Instant) -> Verdict {
        lock(&self.auth).before_attempt(ip, &user.to_ascii_lowercase(), now)
    }

    /// Records a failed authentication.
    pub fn auth_failed(&self, ip: IpAddr, user: &str, now: Instant) {
        lock(&self.auth).record_failure(ip, &user.to_ascii_lowercase(), now);
    }

    /// Records a successful authentication.
    pub fn auth_succeeded(&self, ip: IpAddr, user: &str, now: Instant) {
        lock(&self.auth).record_success(ip, &user.to_ascii_lowercase(), now);
    }

    /// How long to hold the reply after the session's `nth_error` error.
    pub fn tarpit(&self, nth_error: u32) -> Duration {
        self.tarpit.delay_after(nth_error)
    }
}
