//! Greylisting with postgrey's semantics, on an injected clock.
//!
//! A delivery attempt is the *triplet* of the client's network (IPv4 /24,
//! IPv6 /64: big senders retry from another address of the same pool),
//! the envelope sender and the recipient. The first attempt of a triplet
//! is refused for [`Settings::delay`] (300 s); a retry after the delay and
//! within [`Settings::retry_window`] (2 days) of the first attempt passes,
//! and the triplet then passes at once until it has not been seen for
//! [`Settings::expiry`] (35 days). A retry later than the window starts
//! over. A client network whose triplets have passed
//! [`Settings::auto_allow_after`] times (5; counted at most once an hour,
//! as postgrey does) passes outright. Trusted networks and authenticated
//! users never reach this module (the caller exempts them).
//!
//! Senders are normalised the way postgrey does, so that per-message
//! bounce addresses do not make every retry a new triplet: lower case, a
//! `+extension` removed, a BATV `prvs=…=` tag removed, runs of digits in
//! the local part replaced by `#`.
//!
//! Time is an argument (seconds since the epoch); tests never sleep. The
//! state is kept in a [`Store`]: [`MemoryStore`] or [`SqliteStore`]
//! (persisted). Both are bounded by [`Settings::max_entries`]: when full,
//! the triplets seen least recently are forgotten first.

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::Path;

use ipnet::{Ipv4Net, Ipv6Net};
use tern_smtp::reply::Reply;
use tern_types::EnhancedStatus;
use thiserror::Error;

use crate::{Action, Verdict};

/// Greylisting parameters (postgrey's defaults).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// How long a new triplet is refused, in seconds.
    pub delay: u64,
    /// How long after the first attempt a retry still counts, in seconds.
    pub retry_window: u64,
    /// A triplet (or client) not seen for this long is forgotten, in seconds.
    pub expiry: u64,
    /// Passes after which a client network is allowed outright (0: never).
    pub auto_allow_after: u32,
    /// The most triplets kept.
    pub max_entries: usize,
    /// IPv4 prefix length of a client network.
    pub ipv4_prefix: u8,
    /// IPv6 prefix length of a client network.
    pub ipv6_prefix: u8,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            delay: 300,
            retry_window: 2 * 86400,
            expiry: 35 * 86400,
            auto_allow_after: 5,
            max_entries: 100_000,
            ipv4_prefix: 24,
            ipv6_prefix: 64,
        }
    }
}

/// Errors of the store.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum GreylistError {
    /// The SQLite database failed.
    #[error("greylist database: {0}")]
    Database(#[from] rusqlite::Error),
}

/// One delivery attempt's identity.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Triplet {
    /// The client network (`192.0.2.0/24`).
    pub client: String,
    /// The normalised sender (empty for `<>`).
    pub sender: String,
    /// The recipient, lower case.
    pub rcpt: String,
}

/// The client network of `ip` as text.
pub fn client_net(ip: IpAddr, settings: &Settings) -> String {
    match ip {
        IpAddr::V4(v4) => Ipv4Net::new(v4, settings.ipv4_prefix.min(32))
            .map(|n| n.trunc().to_string())
            .unwrap_or_else(|_| v4.to_string()),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => client_net(IpAddr::V4(v4), settings),
            None => Ipv6Net::new(v6, settings.ipv6_prefix.min(128))
                .map(|n| n.trunc().to_string())
                .unwrap_or_else(|_| v6.to_string()),
        },
    }
}

/// The sender as postgrey compares it.
pub fn normalize_sender(sender: &str) -> String {
    let lower = sender.to_ascii_lowercase();
    let Some((local, domain)) = lower.rsplit_once('@') else {
        return lower;
    };
    let mut local = local;
    // BATV: prvs=tag=user or prvs=user=tag (RFC draft; both forms seen).
    if let Some(rest) = local.strip_prefix("prvs=")
        && let Some((a, b)) = rest.split_once('=')
    {
        local = if a.len() == 10 && a.chars().all(|c| c.is_ascii_alphanumeric()) {
            b
        } else {
            a
        };
    }
    let local = local.split('+').next().unwrap_or(local);
    let mut out = String::with_capacity(local.len() + domain.len() + 1);
    let mut in_digits = false;
    for c in local.chars() {
        if c.is_ascii_digit() {
            if !in_digits {
                out.push('#');
            }
            in_digits = true;
        } else {
            in_digits = false;
            out.push(c);
        }
    }
    out.push('@');
    out.push_str(domain);
    out
}

impl Triplet {
    /// The triplet of an attempt.
    pub fn new(ip: IpAddr, sender: &str, rcpt: &str, settings: &Settings) -> Triplet {
        Triplet {
            client: client_net(ip, settings),
            sender: normalize_sender(sender),
            rcpt: rcpt.to_ascii_lowercase(),
        }
    }
}

/// What is remembered about a triplet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry {
    /// First attempt (of the current round).
    pub first_seen: u64,
    /// Last attempt.
    pub last_seen: u64,
    /// It has passed at least once.
    pub passed: bool,
}

/// What is remembered about a client network.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientEntry {
    /// Passes counted.
    pub count: u32,
    /// When the last pass was counted.
    pub last: u64,
}

/// Where greylisting state lives.
pub trait Store {
    /// The triplet's entry.
    fn triplet(&mut self, t: &Triplet) -> Result<Option<Entry>, GreylistError>;
    /// Stores the triplet's entry.
    fn put_triplet(&mut self, t: &Triplet, e: Entry) -> Result<(), GreylistError>;
    /// The client network's entry.
    fn client(&mut self, net: &str) -> Result<Option<ClientEntry>, GreylistError>;
    /// Stores the client network's entry.
    fn put_client(&mut self, net: &str, e: ClientEntry) -> Result<(), GreylistError>;
    /// Triplets stored.
    fn len(&self) -> usize;
    /// True when no triplet is stored.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Forgets triplets last seen before `seen_before`, triplets that never
    /// passed and were first seen before `unpassed_before`, clients last
    /// counted before `seen_before`; then, while more than `keep` triplets
    /// remain, the least recently seen. Returns how many triplets went.
    fn prune(
        &mut self,
        seen_before: u64,
        unpassed_before: u64,
        keep: usize,
    ) -> Result<usize, GreylistError>;
}

impl<S: Store + ?Sized> Store for Box<S> {
    fn triplet(&mut self, t: &Triplet) -> Result<Option<Entry>, GreylistError> {
        (**self).triplet(t)
    }
    fn put_triplet(&mut self, t: &Triplet, e: Entry) -> Result<(), GreylistError> {
        (**self).put_triplet(t, e)
    }
    fn client(&mut self, net: &str) -> Result<Option<ClientEntry>, GreylistError> {
        (**self).client(net)
    }
    fn put_client(&mut self, net: &str, e: ClientEntry) -> Result<(), GreylistError> {
        (**self).put_client(net, e)
    }
    fn len(&self) -> usize {
        (**self).len()
    }
    fn prune(
        &mut self,
        seen_before: u64,
        unpassed_before: u64,
        keep: usize,
    ) -> Result<usize, GreylistError> {
        (**self).prune(seen_before, unpassed_before, keep)
    }
}

/// Why an attempt passed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PassReason {
    /// The client network passed often enough before.
    ClientAllowed,
    /// A retry after the delay.
    Retried,
    /// A triplet that passed before.
    Known,
}

/// The decision about one attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Let it through.
    Pass(PassReason),
    /// Refuse for now; retry in this many seconds.
    Greylisted {
        /// Seconds until a retry passes.
        retry_in: u64,
    },
}

impl Decision {
    /// The pipeline verdict: `451 4.7.1` while greylisted.
    pub fn verdict(&self) -> Verdict {
        match self {
            Decision::Pass(PassReason::ClientAllowed) => Verdict::pass("pass (client allowed)"),
            Decision::Pass(PassReason::Retried) => Verdict::pass("pass (retried)"),
            Decision::Pass(PassReason::Known) => Verdict::pass("pass (known)"),
            Decision::Greylisted { retry_in } => Verdict::with_action(
                Action::TempFail(Reply::new(
                    451,
                    EnhancedStatus::new(4, 7, 1),
                    format!("Greylisted; please try again in {retry_in} seconds"),
                )),
                "greylisted",
            ),
        }
    }
}

/// How often (seconds of the injected clock) old entries are pruned.
const PRUNE_EVERY: u64 = 3600;

/// postgrey counts a client's passes at most once an hour.
const CLIENT_COUNT_EVERY: u64 = 3600;

/// The greylisting state machine over a store.
#[derive(Debug)]
pub struct Greylist<S> {
    settings: Settings,
    store: S,
    next_prune: u64,
}

impl<S: Store> Greylist<S> {
    /// Greylisting with `settings` over `store`.
    pub fn new(settings: Settings, store: S) -> Greylist<S> {
        Greylist {
            settings,
            store,
            next_prune: 0,
        }
    }

    /// The settings.
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// The store.
    pub fn store(&self) -> &S {
        &self.store
    }

    /// Decides about an attempt at `now` (seconds since the epoch).
    pub fn check(&mut self, t: &Triplet, now: u64) -> Result<Decision, GreylistError> {
        let s = &self.settings;
        if now >= self.next_prune {
            self.next_prune = now + PRUNE_EVERY;
            self.store.prune(
                now.saturating_sub(s.expiry),
                now.saturating_sub(s.retry_window),
                s.max_entries,
            )?;
        }
        let client = self.store.client(&t.client)?;
        if s.auto_allow_after > 0
            && let Some(c) = client
            && c.count >= s.auto_allow_after
            && now.saturating_sub(c.last) <= s.expiry
        {
            return Ok(Decision::Pass(PassReason::ClientAllowed));
        }
        let fresh = Entry {
            first_seen: now,
            last_seen: now,
            passed: false,
        };
        let entry = self
            .store
            .triplet(t)?
            .filter(|e| now.saturating_sub(e.last_seen) <= s.expiry);
        let (decision, entry) = match entry {
            None => (Decision::Greylisted { retry_in: s.delay }, fresh),
            Some(e) if e.passed => (
                Decision::Pass(PassReason::Known),
                Entry {
                    last_seen: now,
                    ..e
                },
            ),
            Some(e) => {
                let waited = now.saturating_sub(e.first_seen);
                if waited < s.delay {
                    (
                        Decision::Greylisted {
                            retry_in: s.delay - waited,
                        },
                        Entry {
                            last_seen: now,
                            ..e
                        },
                    )
                } else if waited > s.retry_window {
                    (Decision::Greylisted { retry_in: s.delay }, fresh)
                } else {
                    (
                        Decision::Pass(PassReason::Retried),
                        Entry {
                            last_seen: now,
                            passed: true,
                            ..e
                        },
                    )
                }
            }
        };
        let new = entry.first_seen == now && !entry.passed;
        self.store.put_triplet(t, entry)?;
        if let Decision::Pass(_) = decision {
            let c = client.unwrap_or(ClientEntry { count: 0, last: 0 });
            if c.count == 0 || now.saturating_sub(c.last) >= CLIENT_COUNT_EVERY {
                self.store.put_client(
                    &t.client,
                    ClientEntry {
                        count: c.count.saturating_add(1),
                        last: now,
                    },
                )?;
            }
        }
        if new && self.store.len() > self.settings.max_entries {
            let keep = self.settings.max_entries - self.settings.max_entries / 10;
            self.store.prune(0, 0, keep)?;
        }
        Ok(decision)
    }
}

/// Greylisting state in memory (tests; a server that may forget).
#[derive(Debug, Default)]
pub struct MemoryStore {
    triplets: HashMap<Triplet, Entry>,
    clients: HashMap<String, ClientEntry>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> MemoryStore {
        MemoryStore::default()
    }
}

impl Store for MemoryStore {
    fn triplet(&mut self, t: &Triplet) -> Result<Option<Entry>, GreylistError> {
        Ok(self.triplets.get(t).copied())
    }

    fn put_triplet(&mut self, t: &Triplet, e: Entry) -> Result<(), GreylistError> {
        self.triplets.insert(t.clone(), e);
        Ok(())
    }

    fn client(&mut self, net: &str) -> Result<Option<ClientEntry>, GreylistError> {
        Ok(self.clients.get(net).copied())
    }

    fn put_client(&mut self, net: &str, e: ClientEntry) -> Result<(), GreylistError> {
        self.clients.insert(net.to_owned(), e);
        Ok(())
    }

    fn len(&self) -> usize {
        self.triplets.len()
    }

    fn prune(
        &mut self,
        seen_before: u64,
        unpassed_before: u64,
        keep: usize,
    ) -> Result<usize, GreylistError> {
        let before = self.triplets.len();
        self.triplets.retain(|_, e| {
            e.last_seen >= seen_before && (e.passed || e.first_seen >= unpassed_before)
        });
        self.clients.retain(|_, c| c.last >= seen_before);
        if self.triplets.len() > keep {
            let mut by_age: Vec<(u64, Triplet)> = self
                .triplets
                .iter()
                .map(|(t, e)| (e.last_seen, t.clone()))
                .collect();
            by_age.sort_by_key(|(seen, _)| *seen);
            let excess = self.triplets.len() - keep;
            for (_, t) in by_age.into_iter().take(excess) {
                self.triplets.remove(&t);
            }
        }
        Ok(before - self.triplets.len())
    }
}

/// Greylisting state in an SQLite database (WAL; a crash loses at most
/// the last few updates, which only means a sender is greylisted again).
#[derive(Debug)]
pub struct SqliteStore {
    db: rusqlite::Connection,
    len: usize,
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `path`.
    pub fn open(path: &Path) -> Result<SqliteStore, GreylistError> {
        let db = rusqlite::Connection::open(path)?;
        Self::init(db)
    }

    /// A database in memory (tests).
    pub fn in_memory() -> Result<SqliteStore, GreylistError> {
        Self::init(rusqlite::Connection::open_in_memory()?)
    }

    fn init(db: rusqlite::Connection) -> Result<SqliteStore, GreylistError> {
        db.pragma_update(None, "journal_mode", "WAL")?;
        db.pragma_update(None, "synchronous", "NORMAL")?;
        db.execute_batch(
            "CREATE TABLE IF NOT EXISTS triplet (
                client TEXT NOT NULL, sender TEXT NOT NULL, rcpt TEXT NOT NULL,
                first_seen INTEGER NOT NULL, last_seen INTEGER NOT NULL, passed INTEGER NOT NULL,
                PRIMARY KEY (client, sender, rcpt)) WITHOUT ROWID;
             CREATE INDEX IF NOT EXISTS triplet_last_seen ON triplet(last_seen);
             CREATE TABLE IF NOT EXISTS client (
                net TEXT PRIMARY KEY NOT NULL, count INTEGER NOT NULL, last INTEGER NOT NULL) WITHOUT ROWID;",
        )?;
        let len: i64 = db.query_row("SELECT COUNT(*) FROM triplet", [], |r| r.get(0))?;
        Ok(SqliteStore {
            db,
            len: len as usize,
        })
    }
}

fn to_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

impl Store for SqliteStore {
    fn triplet(&mut self, t: &Triplet) -> Result<Option<Entry>, GreylistError> {
        let mut stmt = self.db.prepare_cached(
            "SELECT first_seen, last_seen, passed FROM triplet WHERE client = ?1 AND sender = ?2 AND rcpt = ?3",
        )?;
        let mut rows = stmt.query((&t.client, &t.sender, &t.rcpt))?;
        Ok(match rows.next()? {
            Some(r) => Some(Entry {
                first_seen: r.get::<_, i64>(0)?.max(0) as u64,
                last_seen: r.get::<_, i64>(1)?.max(0) as u64,
                passed: r.get::<_, i64>(2)? != 0,
            }),
            None => None,
        })
    }

    fn put_triplet(&mut self, t: &Triplet, e: Entry) -> Result<(), GreylistError> {
        let existed = self.triplet(t)?.is_some();
        let mut stmt = self.db.prepare_cached(
            "INSERT INTO triplet (client, sender, rcpt, first_seen, last_seen, passed)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)
             ON CONFLICT (client, sender, rcpt) DO UPDATE SET
               first_seen = excluded.first_seen, last_seen = excluded.last_seen, passed = excluded.passed",
        )?;
        stmt.execute((
            &t.client,
            &t.sender,
            &t.rcpt,
            to_i64(e.first_seen),
            to_i64(e.last_seen),
            i64::from(e.passed),
        ))?;
        if !existed {
            self.len += 1;
        }
        Ok(())
    }

    fn client(&mut self, net: &str) -> Result<Option<ClientEntry>, GreylistError> {
        let mut stmt = self
            .db
            .prepare_cached("SELECT count, last FROM client WHERE net = ?1")?;
        let mut rows = stmt.query([net])?;
        Ok(match rows.next()? {
            Some(r) => Some(ClientEntry {
                count: u32::try_from(r.get::<_, i64>(0)?.max(0)).unwrap_or(u32::MAX),
                last: r.get::<_, i64>(1)?.max(0) as u64,
            }),
            None => None,
        })
    }

    fn put_client(&mut self, net: &str, e: ClientEntry) -> Result<(), GreylistError> {
        self.db
            .prepare_cached(
                "INSERT INTO client (net, count, last) VALUES (?1, ?2, ?3)
                 ON CONFLICT (net) DO UPDATE SET count = excluded.count, last = excluded.last",
            )?
            .execute((net, i64::from(e.count), to_i64(e.last)))?;
        Ok(())
    }

    fn len(&self) -> usize {
        self.len
    }

    fn prune(
        &mut self,
        seen_before: u64,
        unpassed_before: u64,
        keep: usize,
    ) -> Result<usize, GreylistError> {
        let tx = self.db.transaction()?;
        let mut gone = tx.execute(
            "DELETE FROM triplet WHERE last_seen < ?1 OR (passed = 0 AND first_seen < ?2)",
            (to_i64(seen_before), to_i64(unpassed_before)),
        )?;
        tx.execute("DELETE FROM client WHERE last < ?1", [to_i64(seen_before)])?;
        let left: i64 = tx.query_row("SELECT COUNT(*) FROM triplet", [], |r| r.get(0))?;
        let excess = (left as usize).saturating_sub(keep);
        if excess > 0 {
            gone += tx.execute(
                "DELETE FROM triplet WHERE (client, sender, rcpt) IN
                   (SELECT client, sender, rcpt FROM triplet ORDER BY last_seen LIMIT ?1)",
                [excess as i64],
            )?;
        }
        tx.commit()?;
        self.len = (left as usize).saturating_sub(excess);
        Ok(gone)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: u64 = 1_700_000_000;

    fn t(ip: &str, from: &str, to: &str) -> Triplet {
        Triplet::new(ip.parse().unwrap(), from, to, &Settings::default())
    }

    fn greylisted(d: Decision) -> bool {
        matches!(d, Decision::Greylisted { .. })
    }

    fn run_semantics<S: Store>(store: S) {
        let mut g = Greylist::new(Settings::default(), store);
        let a = t("192.0.2.10", "news@sender.test", "alice@example.test");
        assert_eq!(
            g.check(&a, T0).unwrap(),
            Decision::Greylisted { retry_in: 300 }
        );
        // Too early: still greylisted, the wait is counted from the first try.
        assert_eq!(
            g.check(&a, T0 + 100).unwrap(),
            Decision::Greylisted { retry_in: 200 }
        );
        // Another address of the same /24 is the same client.
        let a2 = t("192.0.2.99", "news@sender.test", "alice@example.test");
        assert_eq!(
            g.check(&a2, T0 + 300).unwrap(),
            Decision::Pass(PassReason::Retried)
        );
        assert_eq!(
            g.check(&a, T0 + 400).unwrap(),
            Decision::Pass(PassReason::Known)
        );
        // Known for 35 days after the last attempt, then forgotten.
        assert_eq!(
            g.check(&a, T0 + 400 + 35 * 86400).unwrap(),
            Decision::Pass(PassReason::Known)
        );
        assert!(greylisted(g.check(&a, T0 + 400 + 71 * 86400).unwrap()));
        // A retry later than two days starts over.
        let b = t("198.51.100.1", "x@y.test", "alice@example.test");
        assert!(greylisted(g.check(&b, T0).unwrap()));
        assert_eq!(
            g.check(&b, T0 + 2 * 86400 + 1).unwrap(),
            Decision::Greylisted { retry_in: 300 }
        );
        assert_eq!(
            g.check(&b, T0 + 2 * 86400 + 301).unwrap(),
            Decision::Pass(PassReason::Retried)
        );
    }

    #[test]
    fn postgrey_semantics_in_memory() {
        run_semantics(MemoryStore::new());
    }

    #[test]
    fn postgrey_semantics_in_sqlite() {
        run_semantics(SqliteStore::in_memory().unwrap());
    }

    #[test]
    fn clients_are_allowed_after_five_passes_counted_hourly() {
        let mut g = Greylist::new(Settings::default(), MemoryStore::new());
        let mut now = T0;
        for i in 0..5 {
            let x = t(
                "203.0.113.5",
                &format!("s{i}x@a.test"),
                &format!("r{i}@b.test"),
            );
            assert!(greylisted(g.check(&x, now).unwrap()), "pass {i}");
            now += 300;
            assert_eq!(
                g.check(&x, now).unwrap(),
                Decision::Pass(PassReason::Retried)
            );
            // Passes within the hour do not count again.
            let again = if i < 4 {
                PassReason::Known
            } else {
                PassReason::ClientAllowed
            };
            assert_eq!(g.check(&x, now + 1).unwrap(), Decision::Pass(again));
            now += 3600;
        }
        let fresh = t("203.0.113.77", "new@c.test", "r@b.test");
        assert_eq!(
            g.check(&fresh, now).unwrap(),
            Decision::Pass(PassReason::ClientAllowed)
        );
        // Another network is not.
        assert!(greylisted(
            g.check(&t("203.0.114.1", "new@c.test", "r@b.test"), now)
                .unwrap()
        ));
        // Off when 0.
        let mut never = Greylist::new(
            Settings {
                auto_allow_after: 0,
                ..Settings::default()
            },
            MemoryStore::new(),
        );
        assert!(greylisted(never.check(&fresh, now).unwrap()));
    }

    #[test]
    fn triplets() {
        let s = Settings::default();
        assert_eq!(
            client_net("192.0.2.77".parse().unwrap(), &s),
            "192.0.2.0/24"
        );
        assert_eq!(
            client_net("::ffff:192.0.2.77".parse().unwrap(), &s),
            "192.0.2.0/24"
        );
        assert_eq!(
            client_net("2001:db8:1:2:3:4:5:6".parse().unwrap(), &s),
            "2001:db8:1:2::/64"
        );
        assert_eq!(
            normalize_sender("Bounce-12345-67@Lists.Test"),
            "bounce-#-#@lists.test"
        );
        assert_eq!(normalize_sender("user+tag@a.test"), "user@a.test");
        assert_eq!(
            normalize_sender("prvs=1234abcdef=user@a.test"),
            "user@a.test"
        );
        assert_eq!(normalize_sender(""), "");
        let a = t("192.0.2.1", "A+x@B.test", "Rcpt@Example.TEST");
        assert_eq!(a.rcpt, "rcpt@example.test");
        assert_eq!(a.sender, "a@b.test");
    }

    fn bounded<S: Store>(store: S) {
        let mut g = Greylist::new(
            Settings {
                max_entries: 10,
                ..Settings::default()
            },
            store,
        );
        for i in 0..50u64 {
            g.check(&t("192.0.2.1", &format!("s@x{i}.test"), "r@b.test"), T0 + i)
                .unwrap();
            assert!(g.store().len() <= 10, "{} after {i}", g.store().len());
        }
        // The newest are kept.
        let newest = t("192.0.2.1", "s@x49.test", "r@b.test");
        assert_eq!(
            g.check(&newest, T0 + 49 + 300).unwrap(),
            Decision::Pass(PassReason::Retried)
        );
    }

    #[test]
    fn bounded_in_memory() {
        bounded(MemoryStore::new());
    }

    #[test]
    fn bounded_in_sqlite() {
        bounded(SqliteStore::in_memory().unwrap());
    }

    #[test]
    fn expired_entries_are_pruned() {
        let mut g = Greylist::new(Settings::default(), MemoryStore::new());
        g.check(&t("192.0.2.1", "a@b.test", "c@d.test"), T0)
            .unwrap();
        assert_eq!(g.store().len(), 1);
        // Never retried: gone once the retry window is over (at the next prune).
        g.check(&t("192.0.2.2", "a@b.test", "e@d.test"), T0 + 3 * 86400)
            .unwrap();
        assert_eq!(g.store().len(), 1);
    }

    #[test]
    fn sqlite_persists() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("greylist.db");
        let a = t("192.0.2.1", "a@b.test", "c@d.test");
        {
            let mut g = Greylist::new(Settings::default(), SqliteStore::open(&path).unwrap());
            assert!(greylisted(g.check(&a, T0).unwrap()));
        }
        let mut g = Greylist::new(Settings::default(), SqliteStore::open(&path).unwrap());
        assert_eq!(g.store().len(), 1);
        assert_eq!(
            g.check(&a, T0 + 301).unwrap(),
            Decision::Pass(PassReason::Retried)
        );
    }

    #[test]
    fn verdicts() {
        let v = Decision::Greylisted { retry_in: 120 }.verdict();
        let Action::TempFail(r) = v.action else {
            panic!()
        };
        assert_eq!(r.code, 451);
        assert_eq!(r.lines, vec!["Greylisted; please try again in 120 seconds"]);
        assert_eq!(
            Decision::Pass(PassReason::Known).verdict().action,
            Action::Continue
        );
    }
}
