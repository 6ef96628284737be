//! Connection admission: caps on concurrent sessions overall, per client
//! address and per client network, stress mode, and eviction of the idlest
//! session when the server is full.
//!
//! The limiter hands out an RAII [`ConnectionPermit`]; dropping it frees the
//! slot. It never blocks and never queues.
//!
//! * **Per address and per network.** Clients are counted by the same key
//!   as the connection-rate and AUTH counters ([`tern_limits::client_key`]):
//!   an IPv6 client by its prefix (`/64` by default), since one host owns a
//!   whole /64. Networks are counted too: an IPv4 `/24`, an IPv6 `/48`. A
//!   client over either cap is refused (421 4.7.0). Addresses the rate
//!   limits exempt (`limits.rate_limit_exceptions` and the trusted
//!   networks: a local relay, a load generator) are held to neither.
//! * **Reserved slots.** The last `reserved` slots of `max_total` are kept
//!   for trusted clients: an untrusted newcomer counts as "full" earlier.
//! * **Eviction instead of refusal.** When a newcomer finds the server full,
//!   the session that has made the least progress gives up its slot: one
//!   that has not said EHLO before one that has, then the one idle the
//!   longest. It is told at once ([`ConnectionPermit::evicted`] and its
//!   wake-up) and answers `421 4.7.0` on its own. A session in the middle
//!   of a transaction, an authenticated one, and a trusted client's are
//!   never evicted; when only those are left, the newcomer is refused.
//! * **Stress mode.** From `stress_on` sessions (70 % of `max_total` by
//!   default) until they fall below `stress_off`, [`ConnectionPermit::stressed`]
//!   is true and every session is woken once so that it shortens its
//!   timeouts at once (the session decides what "short" is). Entering and
//!   leaving are logged.
//!
//! It must never hold its lock across an await.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tern_limits::client_key;
use tokio::sync::Notify;
use tracing::{info, warn};

/// Why a connection was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The server already holds `max_connections` sessions and none of
    /// them may be evicted.
    ServerFull,
    /// This client address already holds `max_per_ip` sessions.
    TooManyFromAddress,
    /// This client's network (IPv4 /24, IPv6 /48) holds `max_per_network`.
    TooManyFromNetwork,
}

/// How far a session has got, for eviction: lower is evicted first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
#[repr(u8)]
pub enum Stage {
    /// Connected; has not introduced itself (no EHLO, no login).
    Connected = 0,
    /// Said EHLO/HELO (or, for IMAP/POP3, a command) but is between
    /// transactions.
    Greeted = 1,
    /// In the middle of a transaction (MAIL given): never evicted.
    Transaction = 2,
    /// Authenticated: never evicted.
    Authenticated = 3,
}

/// What one live session shares with the limiter.
#[derive(Debug)]
struct SessionState {
    stage: AtomicU8,
    /// Milliseconds since the limiter's epoch at the last progress.
    progress_ms: AtomicU64,
    evicted: AtomicBool,
    wake: Notify,
    /// A trusted client (never evicted; may use the reserved slots).
    trusted: bool,
}

#[derive(Debug, Default)]
struct Counts {
    total: usize,
    per_ip: HashMap<IpAddr, usize>,
    per_net: HashMap<IpAddr, usize>,
    sessions: HashMap<u64, Arc<SessionState>>,
    next_id: u64,
}

#[derive(Debug)]
struct Shared {
    counts: Mutex<Counts>,
    stressed: AtomicBool,
    epoch: Instant,
}

/// Counts live sessions overall, per client address and per network.
#[derive(Debug, Clone)]
pub struct ConnectionLimiter {
    max_total: usize,
    max_per_ip: usize,
    max_per_network: usize,
    reserved: usize,
    stress_on: usize,
    stress_off: usize,
    ipv6_prefix: u8,
    /// Not held to the per-address and per-network caps.
    exempt: Arc<[ipnet::IpNet]>,
    /// Trusted: reserved slots, never evicted.
    trusted: Arc<[ipnet::IpNet]>,
    shared: Arc<Shared>,
}

impl ConnectionLimiter {
    /// A limiter allowing `max_total` sessions, at most `max_per_ip` from one
    /// client: one IPv4 address, or one IPv6 network of `ipv6_prefix` bits.
    /// No network cap, no reserve; stress from 70 % of `max_total`.
    pub fn new(max_total: usize, max_per_ip: usize, ipv6_prefix: u8) -> Self {
        let mut l = ConnectionLimiter {
            max_total,
            max_per_ip,
            max_per_network: usize::MAX,
            reserved: 0,
            stress_on: 0,
            stress_off: 0,
            ipv6_prefix,
            exempt: Arc::from(Vec::new()),
            trusted: Arc::from(Vec::new()),
            shared: Arc::new(Shared {
                counts: Mutex::new(Counts::default()),
                stressed: AtomicBool::new(false),
                epoch: Instant::now(),
            }),
        };
        l.set_stress_percent(70);
        l
    }

    /// The same limiter, with `exempt` networks not held to the
    /// per-address and per-network caps (what the rate limits exempt).
    pub fn with_exempt(mut self, exempt: Vec<ipnet::IpNet>) -> Self {
        self.exempt = Arc::from(exempt);
        self
    }

    /// Trusted networks: never evicted, and the only ones that may use the
    /// last `reserved` slots.
    pub fn with_trusted(mut self, trusted: Vec<ipnet::IpNet>, reserved: usize) -> Self {
        self.trusted = Arc::from(trusted);
        self.reserved = reserved.min(self.max_total);
        self
    }

    /// At most `max` sessions from one network (IPv4 /24, IPv6 /48).
    pub fn with_per_network(mut self, max: usize) -> Self {
        self.max_per_network = max;
        self
    }

    /// Stress mode from `percent` % of `max_total` sessions (leaving it
    /// below 80 % of that); 0 or over 100 switches it off.
    pub fn with_stress_percent(mut self, percent: u8) -> Self {
        self.set_stress_percent(percent);
        self
    }

    fn set_stress_percent(&mut self, percent: u8) {
        if percent == 0 || percent > 100 {
            self.stress_on = usize::MAX;
            self.stress_off = usize::MAX;
        } else {
            self.stress_on = (self.max_total * usize::from(percent)).div_ceil(100).max(1);
            self.stress_off = (self.stress_on * 4 / 5).max(1);
        }
    }

    fn contains(nets: &[ipnet::IpNet], ip: IpAddr) -> bool {
        let plain = plain_ip(ip);
        nets.iter().any(|n| n.contains(&plain))
    }

    /// Whether the server is in stress mode now.
    pub fn stressed(&self) -> bool {
        self.shared.stressed.load(Ordering::Relaxed)
    }

    /// Takes a slot for `ip` — evicting the idlest evictable session if the
    /// server is full — or says which limit is reached.
    pub fn try_acquire(&self, ip: IpAddr) -> Result<ConnectionPermit, Refusal> {
        let trusted = Self::contains(&self.trusted, ip);
        let exempt = trusted || Self::contains(&self.exempt, ip);
        let key = client_key(ip, self.ipv6_prefix);
        let net = network_key(ip);
        let mut counts = self.shared.counts.lock().unwrap_or_else(|p| p.into_inner());
        if !exempt {
            if counts.per_ip.get(&key).copied().unwrap_or(0) >= self.max_per_ip {
                return Err(Refusal::TooManyFromAddress);
            }
            if counts.per_net.get(&net).copied().unwrap_or(0) >= self.max_per_network {
                return Err(Refusal::TooManyFromNetwork);
            }
        }
        let limit = if trusted {
            self.max_total
        } else {
            self.max_total - self.reserved
        };
        if counts.total >= limit {
            match self.evict_one(&mut counts) {
                Some(victim) => {
                    info!(
                        sessions = counts.total,
                        "server full: the idlest session gives up its slot to a new client"
                    );
                    victim.wake.notify_one();
                }
                None => return Err(Refusal::ServerFull),
            }
            if counts.total >= limit {
                return Err(Refusal::ServerFull);
            }
        }
        counts.total += 1;
        *counts.per_ip.entry(key).or_insert(0) += 1;
        *counts.per_net.entry(net).or_insert(0) += 1;
        let id = counts.next_id;
        counts.next_id += 1;
        let state = Arc::new(SessionState {
            stage: AtomicU8::new(Stage::Connected as u8),
            progress_ms: AtomicU64::new(self.now_ms()),
            evicted: AtomicBool::new(false),
            wake: Notify::new(),
            trusted,
        });
        counts.sessions.insert(id, Arc::clone(&state));
        let total = counts.total;
        drop(counts);
        self.update_stress(total);
        Ok(ConnectionPermit {
            id,
            key,
            net,
            state,
            limiter: self.clone(),
            released: false,
        })
    }

    /// Picks the session with the least progress that may be evicted,
    /// marks it and releases its slot (under the lock).
    fn evict_one(&self, counts: &mut Counts) -> Option<Arc<SessionState>> {
        let (&id, _) = counts
            .sessions
            .iter()
            .filter(|(_, s)| {
                !s.trusted
                    && !s.evicted.load(Ordering::Relaxed)
                    && s.stage.load(Ordering::Relaxed) <= Stage::Greeted as u8
            })
            .min_by_key(|(id, s)| {
                (
                    s.stage.load(Ordering::Relaxed),
                    s.progress_ms.load(Ordering::Relaxed),
                    **id, // the older session first, at equal progress
                )
            })?;
        let victim = counts.sessions.remove(&id)?;
        victim.evicted.store(true, Ordering::Relaxed);
        counts.total = counts.total.saturating_sub(1);
        Some(victim)
    }

    fn now_ms(&self) -> u64 {
        self.shared.epoch.elapsed().as_millis() as u64
    }

    /// Enters or leaves stress mode at `total` sessions; wakes every
    /// session on a change so that it applies the new timeouts.
    fn update_stress(&self, total: usize) {
        let was = self.shared.stressed.load(Ordering::Relaxed);
        let now = if was {
            total >= self.stress_off
        } else {
            total >= self.stress_on
        };
        if now == was
            || self
                .shared
                .stressed
                .compare_exchange(was, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_err()
        {
            return;
        }
        crate::metrics::metrics().stress_changed(now);
        if now {
            warn!(
                sessions = total,
                threshold = self.stress_on,
                max = self.max_total,
                "entering stress mode: shorter timeouts, evicting idle sessions when full"
            );
        } else {
            info!(sessions = total, "leaving stress mode: normal timeouts");
        }
        let counts = self.shared.counts.lock().unwrap_or_else(|p| p.into_inner());
        for s in counts.sessions.values() {
            s.wake.notify_one();
        }
    }

    /// Sessions currently admitted.
    pub fn active(&self) -> usize {
        self.shared
            .counts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .total
    }
}

/// An IPv4-mapped IPv6 address as the IPv4 address it is.
fn plain_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// The network a client belongs to: its IPv4 /24 or IPv6 /48.
fn network_key(ip: IpAddr) -> IpAddr {
    match plain_ip(ip) {
        IpAddr::V4(v4) => {
            let [a, b, c, _] = v4.octets();
            IpAddr::from([a, b, c, 0])
        }
        IpAddr::V6(v6) => {
            let mut o = v6.octets();
            o[6..].fill(0);
            IpAddr::from(o)
        }
    }
}

fn release(map: &mut HashMap<IpAddr, usize>, key: IpAddr) {
    if let Some(n) = map.get_mut(&key) {
        *n -= 1;
        if *n == 0 {
            map.remove(&key);
        }
    }
}

/// A held session slot; dropping it releases the slot (unless the session
/// was evicted, which released it already).
#[derive(Debug)]
pub struct ConnectionPermit {
    id: u64,
    key: IpAddr,
    net: IpAddr,
    state: Arc<SessionState>,
    limiter: ConnectionLimiter,
    released: bool,
}

impl ConnectionPermit {
    /// Records how far the session has got (and that it made progress now).
    pub fn set_stage(&self, stage: Stage) {
        self.state.stage.store(stage as u8, Ordering::Relaxed);
        self.progress();
    }

    /// The session made progress (a command, data, an IDLE notice).
    pub fn progress(&self) {
        self.state
            .progress_ms
            .store(self.limiter.now_ms(), Ordering::Relaxed);
    }

    /// Whether a newcomer took this session's slot: answer 421 and close.
    pub fn evicted(&self) -> bool {
        self.state.evicted.load(Ordering::Relaxed)
    }

    /// Whether the server is in stress mode (use the short timeouts).
    pub fn stressed(&self) -> bool {
        self.limiter.stressed()
    }

    /// Completes when the session should look again at [`evicted`](Self::evicted)
    /// and [`stressed`](Self::stressed) (a wake-up sent while nobody waited
    /// is kept for the next call).
    pub async fn woken(&self) {
        self.state.wake.notified().await;
    }

    /// A handle that waits for the wake-ups without borrowing the permit.
    pub fn wake_handle(&self) -> WakeHandle {
        WakeHandle(Arc::clone(&self.state), Arc::clone(&self.limiter.shared))
    }
}

/// See [`ConnectionPermit::wake_handle`].
#[derive(Debug, Clone)]
pub struct WakeHandle(Arc<SessionState>, Arc<Shared>);

impl WakeHandle {
    /// As [`ConnectionPermit::woken`].
    pub async fn woken(&self) {
        self.0.wake.notified().await;
    }

    /// As [`ConnectionPermit::evicted`].
    pub fn evicted(&self) -> bool {
        self.0.evicted.load(Ordering::Relaxed)
    }

    /// Wakes the session's other waiter (the driver, after the task that
    /// runs it saw the wake-up first).
    pub fn wake_again(&self) {
        self.0.wake.notify_one();
    }

    /// Whether the server is in stress mode.
    pub fn stressed(&self) -> bool {
        self.1.stressed.load(Ordering::Relaxed)
    }

    /// Marks the session logged in: never evicted from now on.
    pub fn authenticated(&self) {
        self.0
            .stage
            .store(Stage::Authenticated as u8, Ordering::Relaxed);
    }
}

tokio::task_local! {
    /// The slot of the IMAP or POP3 session running in this task (the
    /// drivers report their login through [`session_authenticated`]).
    pub(crate) static SESSION_SLOT: WakeHandle;
}

/// The time an IMAP or POP3 session not logged in yet may wait for its
/// next command: `normal`, or at most `stressed` while the server is in
/// stress mode (the same rule as SMTP's command timeout).
pub(crate) fn pre_login_timeout(
    normal: std::time::Duration,
    stressed: std::time::Duration,
) -> std::time::Duration {
    if SESSION_SLOT.try_with(WakeHandle::stressed).unwrap_or(false) {
        normal.min(stressed)
    } else {
        normal
    }
}

/// Resolves when the IMAP or POP3 session running in this task has been
/// evicted (its driver then says goodbye and returns); never outside such
/// a task. Stress-mode wake-ups are absorbed.
pub(crate) async fn session_evicted() {
    let Ok(slot) = SESSION_SLOT.try_with(WakeHandle::clone) else {
        return std::future::pending().await;
    };
    loop {
        if slot.evicted() {
            return;
        }
        slot.woken().await;
    }
}

/// Called by the IMAP and POP3 drivers when a user has logged in: their
/// session is never evicted from then on. Outside such a task, nothing.
pub(crate) fn session_authenticated() {
    let _ = SESSION_SLOT.try_with(WakeHandle::authenticated);
}

impl Drop for ConnectionPermit {
    fn drop(&mut self) {
        if self.released {
            return;
        }
        self.released = true;
        let shared = &self.limiter.shared;
        let mut counts = shared.counts.lock().unwrap_or_else(|p| p.into_inner());
        // An evicted session's slot was counted free when it was evicted.
        if counts.sessions.remove(&self.id).is_some() {
            counts.total = counts.total.saturating_sub(1);
        }
        release(&mut counts.per_ip, self.key);
        release(&mut counts.per_net, self.net);
        let total = counts.total;
        drop(counts);
        self.limiter.update_stress(total);
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
        // Others still are; and the overall cap holds for everyone (with
        // every session in a transaction, nobody is evicted).
        let _a = l.try_acquire(ip("192.0.2.1")).unwrap();
        for p in held.iter().chain([&_a]) {
            p.set_stage(Stage::Transaction);
        }
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
    fn a_full_server_evicts_the_least_advanced_idlest_session() {
        let l = ConnectionLimiter::new(4, 10, 64).with_stress_percent(0);
        let a = l.try_acquire(ip("10.0.1.1")).unwrap(); // said EHLO first
        let b = l.try_acquire(ip("10.0.2.1")).unwrap(); // silent, oldest
        let c = l.try_acquire(ip("10.0.3.1")).unwrap(); // silent, newer
        let d = l.try_acquire(ip("10.0.4.1")).unwrap(); // mid-transaction
        a.set_stage(Stage::Greeted);
        std::thread::sleep(std::time::Duration::from_millis(5));
        c.progress();
        d.set_stage(Stage::Transaction);
        // Full: the newcomer takes b's slot (no EHLO, idle longest).
        let e = l.try_acquire(ip("10.0.5.1")).unwrap();
        assert!(b.evicted() && !a.evicted() && !c.evicted() && !d.evicted());
        assert_eq!(l.active(), 4);
        // Then c (no EHLO), then a (EHLO but between transactions).
        let f = l.try_acquire(ip("10.0.6.1")).unwrap();
        assert!(c.evicted());
        e.set_stage(Stage::Authenticated);
        f.set_stage(Stage::Transaction);
        let g = l.try_acquire(ip("10.0.7.1")).unwrap();
        assert!(a.evicted());
        g.set_stage(Stage::Transaction);
        // Only protected sessions left: refused.
        assert_eq!(
            l.try_acquire(ip("10.0.8.1")).unwrap_err(),
            Refusal::ServerFull
        );
        // Dropping evicted permits frees nothing twice.
        drop((a, b, c));
        assert_eq!(l.active(), 4);
        drop(d);
        assert_eq!(l.active(), 3);
        assert!(l.try_acquire(ip("10.0.8.1")).is_ok());
    }

    #[tokio::test]
    async fn an_evicted_session_is_woken() {
        let l = ConnectionLimiter::new(1, 10, 64).with_stress_percent(0);
        let a = l.try_acquire(ip("10.0.1.1")).unwrap();
        let wake = a.wake_handle();
        let _b = l.try_acquire(ip("10.0.2.1")).unwrap();
        tokio::time::timeout(std::time::Duration::from_secs(1), wake.woken())
            .await
            .expect("woken");
        assert!(a.evicted());
    }

    #[test]
    fn trusted_clients_have_reserved_slots_and_are_never_evicted() {
        let l = ConnectionLimiter::new(3, 10, 64)
            .with_stress_percent(0)
            .with_trusted(vec!["192.0.2.0/24".parse().unwrap()], 1);
        let t = l.try_acquire(ip("192.0.2.7")).unwrap();
        let _u1 = l.try_acquire(ip("10.0.1.1")).unwrap();
        // Two untrusted slots only (one reserved): the next untrusted
        // newcomer evicts an untrusted idle session, never the trusted one.
        let _u2 = l.try_acquire(ip("10.0.2.1")).unwrap();
        assert!(!t.evicted());
        assert_eq!(l.active(), 2);
        // The reserve is there for trusted clients.
        let _t2 = l.try_acquire(ip("192.0.2.8")).unwrap();
        assert_eq!(l.active(), 3);
    }

    #[test]
    fn networks_are_capped_too_ipv4_24_and_ipv6_48() {
        let l = ConnectionLimiter::new(100, 10, 64)
            .with_per_network(3)
            .with_stress_percent(0);
        let held: Vec<_> = ["198.51.100.1", "198.51.100.2", "198.51.100.3"]
            .iter()
            .map(|a| l.try_acquire(ip(a)).unwrap())
            .collect();
        assert_eq!(
            l.try_acquire(ip("198.51.100.4")).unwrap_err(),
            Refusal::TooManyFromNetwork
        );
        assert!(l.try_acquire(ip("198.51.101.1")).is_ok());
        let v6: Vec<_> = ["2001:db8:5:1::1", "2001:db8:5:2::1", "2001:db8:5:3::1"]
            .iter()
            .map(|a| l.try_acquire(ip(a)).unwrap())
            .collect();
        assert_eq!(
            l.try_acquire(ip("2001:db8:5:ffff::1")).unwrap_err(),
            Refusal::TooManyFromNetwork
        );
        assert!(l.try_acquire(ip("2001:db8:6::1")).is_ok());
        drop((held, v6));
        // Exempt networks are held to neither cap.
        let l = ConnectionLimiter::new(100, 1, 64)
            .with_per_network(1)
            .with_exempt(vec!["127.0.0.0/8".parse().unwrap()]);
        let _x: Vec<_> = (0..5)
            .map(|_| l.try_acquire(ip("127.0.0.2")).unwrap())
            .collect();
    }

    #[tokio::test]
    async fn stress_mode_starts_and_ends_with_the_session_count_and_wakes_sessions() {
        let l = ConnectionLimiter::new(10, 10, 64).with_stress_percent(50);
        let first = l.try_acquire(ip("10.0.0.1")).unwrap();
        let wake = first.wake_handle();
        let mut held: Vec<_> = (2..5)
            .map(|i| l.try_acquire(ip(&format!("10.0.0.{i}"))).unwrap())
            .collect();
        assert!(!l.stressed());
        held.push(l.try_acquire(ip("10.0.0.5")).unwrap()); // 5 of 10: 50 %
        assert!(l.stressed() && first.stressed() && wake.stressed());
        tokio::time::timeout(std::time::Duration::from_secs(1), wake.woken())
            .await
            .expect("woken on entering stress");
        // It ends below 80 % of the threshold (4): not at 4, at 3.
        held.pop();
        assert!(l.stressed());
        held.pop();
        assert!(!l.stressed());
        tokio::time::timeout(std::time::Duration::from_secs(1), wake.woken())
            .await
            .expect("woken on leaving stress");
    }

    #[test]
    fn global_limit_is_enforced() {
        let l = ConnectionLimiter::new(2, 5, 64);
        let _a = l.try_acquire(ip("10.0.0.1")).unwrap();
        let _b = l.try_acquire(ip("10.0.0.2")).unwrap();
        // Both in a transaction: nobody may be evicted.
        _a.set_stage(Stage::Transaction);
        _b.set_stage(Stage::Transaction);
        assert_eq!(
            l.try_acquire(ip("10.0.0.3")).unwrap_err(),
            Refusal::ServerFull
        );
        assert_eq!(l.active(), 2);
        drop(_a);
        assert_eq!(l.active(), 1);
    }
}
