//! Connection admission: a cap on concurrent sessions overall and per client
//! address.
//!
//! The limiter hands out an RAII [`ConnectionPermit`]; dropping it frees the
//! slot. It never blocks and never queues: a client over a limit is told so
//! (421 4.7.0) and disconnected by the caller, so a flood from one address
//! cannot starve everyone else. It must never hold its lock across an await.
//!
//! Clients are counted by the same key as the connection-rate and AUTH
//! counters ([`tern_limits::client_key`]): an IPv6 client by its prefix
//! (`/64` by default), since one host owns a whole /64 and could otherwise
//! take every slot with addresses of its own.
//!
//! Addresses the rate limits exempt (`limits.rate_limit_exceptions` and
//! the trusted networks: a local relay, a load generator) are not held to
//! the per-address cap either, only to the overall one.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use tern_limits::client_key;

/// Why a connection was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The server already holds `max_connections` sessions.
    ServerFull,
    /// This client address already holds `max_per_ip` sessions.
    TooManyFromAddress,
}

#[derive(Debug, Default)]
struct Counts {
    total: usize,
    per_ip: HashMap<IpAddr, usize>,
}

/// Counts live sessions overall and per client address.
#[derive(Debug, Clone)]
pub struct ConnectionLimiter {
    max_total: usize,
    max_per_ip: usize,
    ipv6_prefix: u8,
    /// Not held to `max_per_ip`.
    exempt: Arc<[ipnet::IpNet]>,
    counts: Arc<Mutex<Counts>>,
}

impl ConnectionLimiter {
    /// A limiter allowing `max_total` sessions, at most `max_per_ip` from one
    /// client: one IPv4 address, or one IPv6 network of `ipv6_prefix` bits.
    pub fn new(max_total: usize, max_per_ip: usize, ipv6_prefix: u8) -> Self {
        ConnectionLimiter {
            max_total,
            max_per_ip,
            ipv6_prefix,
            exempt: Arc::from(Vec::new()),
            counts: Arc::new(Mutex::new(Counts::default())),
        }
    }

    /// The same limiter, with `exempt` networks not held to the
    /// per-address cap (what the rate limits exempt).
    pub fn with_exempt(mut self, exempt: Vec<ipnet::IpNet>) -> Self {
        self.exempt = Arc::from(exempt);
        self
    }

    fn is_exempt(&self, ip: IpAddr) -> bool {
        let plain = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
            v4 => v4,
        };
        self.exempt.iter().any(|n| n.contains(&plain))
    }

    /// Takes a slot for `ip`, or says which limit is reached.
    pub fn try_acquire(&self, ip: IpAddr) -> Result<ConnectionPermit, Refusal> {
        let ip = client_key(ip, self.ipv6_prefix);
        let mut counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        if counts.total >= self.max_total {
            return Err(Refusal::ServerFull);
        }
        let mine = counts.per_ip.get(&ip).copied().unwrap_or(0);
        if mine >= self.max_per_ip && !self.is_exempt(ip) {
            return Err(Refusal::TooManyFromAddress);
        }
        counts.total += 1;
        counts.per_ip.insert(ip, mine + 1);
        Ok(ConnectionPermit {
            ip,
            counts: Arc::clone(&self.counts),
        })
    }

    /// Sessions currently admitted.
    pub fn active(&self) -> usize {
        self.counts.lock().unwrap_or_else(|p| p.into_inner()).total
    }
}

/// A held session slot; dropping it releases the slot.
#[derive(Debug)]
pub struct ConnectionPermit {
    ip: IpAddr,
    counts: Arc<Mutex<Counts>>,
}

impl Drop for ConnectionPermit {
    fn drop(&mut self) {
        let mut counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        counts.total = counts.total.saturating_sub(1);
        if let Some(n) = counts.per_ip.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                counts.per_ip.remove(&self.ip);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn per_ip_limit_is_enforced_and_released() {
        let l = ConnectionLimiter::new(10, 2, 64);
        let a = l.try_acquire(ip("10.0.0.1")).unwrap();
        let _b = l.try_acquire(ip("10.0.0.1")).unwrap();
        assert_eq!(
            l.try_acquire(ip("10.0.0.1")).unwrap_err(),
            Refusal::TooManyFromAddress
        );
        // Another address is unaffected.
        let _c = l.try_acquire(ip("10.0.0.2")).unwrap();
        drop(a);
        assert!(l.try_acquire(ip("10.0.0.1")).is_ok());
    }

    /// Security finding 7: the per-address limit was keyed on the full
    /// IPv6 address, so one /64 (one host's network) could take every slot.
    #[test]
    fn finding_07_ipv6_clients_are_limited_per_prefix() {
        let l = ConnectionLimiter::new(100, 2, 64);
        let _a = l.try_acquire(ip("2001:db8:1:2::1")).unwrap();
        let _b = l.try_acquire(ip("2001:db8:1:2::2")).unwrap();
        assert_eq!(
            l.try_acquire(ip("2001:db8:1:2:ffff::3")).unwrap_err(),
            Refusal::TooManyFromAddress
        );
        // Another /64 is another client.
        assert!(l.try_acquire(ip("2001:db8:1:3::1")).is_ok());
        // IPv4-mapped addresses count as their IPv4 address.
        let _c = l.try_acquire(ip("::ffff:192.0.2.1")).unwrap();
        let _d = l.try_acquire(ip("192.0.2.1")).unwrap();
        assert_eq!(
            l.try_acquire(ip("192.0.2.1")).unwrap_err(),
            Refusal::TooManyFromAddress
        );
    }

    #[test]
    fn exempt_networks_are_not_held_to_the_per_address_cap() {
        let l = ConnectionLimiter::new(5, 2, 64).with_exempt(vec!["127.0.0.0/8".parse().unwrap()]);
        let held: Vec<_> = (0..4)
            .map(|_| l.try_acquire(ip("127.0.0.1")).unwrap())
            .collect();
        assert_eq!(held.len(), 4);
        // Others still are; and the overall cap holds for everyone.
        let _a = l.try_acquire(ip("192.0.2.1")).unwrap();
        assert_eq!(
            l.try_acquire(ip("127.0.0.1")).unwrap_err(),
            Refusal::ServerFull
        );
        drop(held);
        let _b = l.try_acquire(ip("192.0.2.1")).unwrap();
        assert_eq!(
            l.try_acquire(ip("192.0.2.1")).unwrap_err(),
            Refusal::TooManyFromAddress
        );
    }

    #[test]
    fn global_limit_is_enforced() {
        let l = ConnectionLimiter::new(2, 5, 64);
        let _a = l.try_acquire(ip("10.0.0.1")).unwrap();
        let _b = l.try_acquire(ip("10.0.0.2")).unwrap();
        assert_eq!(
            l.try_acquire(ip("10.0.0.3")).unwrap_err(),
            Refusal::ServerFull
        );
        assert_eq!(l.active(), 2);
        drop(_a);
        assert_eq!(l.active(), 1);
    }
}
