//! Counting and timing the DNS lookups the inbound checks make.
//!
//! `mail-auth` asks hickory itself (not through [`tern_dns::Resolver`]),
//! so a metered resolver cannot see its lookups. What it offers is a
//! cache hook: before each lookup it asks an optional
//! [`ResolverCache`] for the answer, and after a lookup that got records it
//! stores them there. A `Meter` hands it caches that keep nothing (every
//! `get` misses, so the checks behave exactly as without a cache; hickory
//! has its own cache): a `get` is a lookup starting, the `insert` for the
//! same name is that lookup answered, and a lookup still open when the
//! checks end got no usable answer (NXDOMAIN, no records, an error or a
//! timeout — `mail-auth` does not say which).
//!
//! What this module must never do: change what the checks look up or
//! see (no caching, no answers of its own), or block on the observer.

use std::borrow::Borrow;
use std::hash::{BuildHasher, Hash};
use std::marker::PhantomData;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use mail_auth::{MX, Parameters, RecordSet, ResolverCache, Txt};

/// What was asked.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LookupKind {
    /// TXT (SPF, DKIM keys, DMARC policies).
    Txt,
    /// MX (the SPF `mx` mechanism).
    Mx,
    /// A or AAAA (the SPF `a`/`mx` mechanisms, iprev).
    Ip,
    /// PTR (iprev, the SPF `ptr` mechanism).
    Ptr,
}

/// How a lookup ended.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LookupOutcome {
    /// Records came back.
    Answered,
    /// No usable answer: NXDOMAIN, no records, a server error or a
    /// timeout.
    NoAnswer,
}

/// Told about every DNS lookup of the inbound checks (Tern's metrics).
pub trait DnsObserver: Send + Sync + std::fmt::Debug {
    /// One lookup ended. `elapsed` is known for answered lookups only
    /// (one without an answer is noticed when the checks end).
    fn lookup(&self, kind: LookupKind, outcome: LookupOutcome, elapsed: Option<Duration>);
}

/// The lookups of one message's checks (see the module docs).
#[derive(Debug)]
pub(crate) struct Meter<'o> {
    observer: Option<&'o dyn DnsObserver>,
    hasher: std::collections::hash_map::RandomState,
    /// Lookups started and not answered yet: kind, hash of the name, start.
    open: Mutex<Vec<(LookupKind, u64, Instant)>>,
}

/// The most lookups kept open at once (SPF allows 10 DNS mechanisms and
/// 2 void lookups per identity; DKIM one key per signature).
const MAX_OPEN: usize = 256;

impl<'o> Meter<'o> {
    pub(crate) fn new(observer: Option<&'o dyn DnsObserver>) -> Meter<'o> {
        Meter {
            observer,
            hasher: std::collections::hash_map::RandomState::new(),
            open: Mutex::new(Vec::new()),
        }
    }

    fn hash<Q: Hash + ?Sized>(&self, name: &Q) -> u64 {
        self.hasher.hash_one(name)
    }

    fn started(&self, kind: LookupKind, hash: u64) {
        if self.observer.is_none() {
            return;
        }
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        if open.len() < MAX_OPEN {
            open.push((kind, hash, Instant::now()));
        }
    }

    fn answered(&self, kind: LookupKind, hash: u64) {
        let Some(observer) = self.observer else {
            return;
        };
        let start = {
            let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
            open.iter()
                .position(|(k, h, _)| *k == kind && *h == hash)
                .map(|i| open.swap_remove(i).2)
        };
        if let Some(start) = start {
            observer.lookup(kind, LookupOutcome::Answered, Some(start.elapsed()));
        }
    }

    /// Tells the observer about a lookup made outside `mail-auth` (through
    /// [`tern_dns::Resolver`]).
    pub(crate) fn record(&self, kind: LookupKind, answered: bool, start: Instant) {
        if let Some(observer) = self.observer {
            if answered {
                observer.lookup(kind, LookupOutcome::Answered, Some(start.elapsed()));
            } else {
                observer.lookup(kind, LookupOutcome::NoAnswer, None);
            }
        }
    }

    /// The checks are over: what is still open got no usable answer.
    pub(crate) fn finish(&self) {
        let Some(observer) = self.observer else {
            return;
        };
        let open = std::mem::take(&mut *self.open.lock().unwrap_or_else(|e| e.into_inner()));
        for (kind, _, _) in open {
            observer.lookup(kind, LookupOutcome::NoAnswer, None);
        }
    }

    /// The caches to hand `mail-auth` (see [`Caches::params`]).
    pub(crate) fn caches(&self) -> Caches<'_> {
        Caches {
            txt: MeterCache::new(self, LookupKind::Txt),
            mx: MeterCache::new(self, LookupKind::Mx),
            ipv4: MeterCache::new(self, LookupKind::Ip),
            ipv6: MeterCache::new(self, LookupKind::Ip),
            ptr: MeterCache::new(self, LookupKind::Ptr),
        }
    }
}

/// One [`ResolverCache`] per record type, all reporting to one [`Meter`].
#[derive(Debug)]
pub(crate) struct Caches<'m> {
    txt: MeterCache<'m, Box<str>, Txt>,
    mx: MeterCache<'m, Box<str>, RecordSet<MX>>,
    ipv4: MeterCache<'m, Box<str>, RecordSet<Ipv4Addr>>,
    ipv6: MeterCache<'m, Box<str>, RecordSet<Ipv6Addr>>,
    ptr: MeterCache<'m, IpAddr, RecordSet<Box<str>>>,
}

/// The parameters of a `mail-auth` check with these caches.
pub(crate) type Metered<'x, 'm, P> = Parameters<
    'x,
    P,
    MeterCache<'m, Box<str>, Txt>,
    MeterCache<'m, Box<str>, RecordSet<MX>>,
    MeterCache<'m, Box<str>, RecordSet<Ipv4Addr>>,
    MeterCache<'m, Box<str>, RecordSet<Ipv6Addr>>,
    MeterCache<'m, IpAddr, RecordSet<Box<str>>>,
>;

impl<'m> Caches<'m> {
    /// `params` with every cache of `self`.
    pub(crate) fn params<'x, P>(&'x self, params: P) -> Metered<'x, 'm, P> {
        Parameters {
            params,
            cache_txt: Some(&self.txt),
            cache_mx: Some(&self.mx),
            cache_ptr: Some(&self.ptr),
            cache_ipv4: Some(&self.ipv4),
            cache_ipv6: Some(&self.ipv6),
        }
    }
}

/// A cache that keeps nothing and tells its [`Meter`] what was looked up.
pub(crate) struct MeterCache<'m, K, V> {
    meter: &'m Meter<'m>,
    kind: LookupKind,
    _types: PhantomData<fn() -> (K, V)>,
}

impl<K, V> std::fmt::Debug for MeterCache<'_, K, V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MeterCache")
            .field("kind", &self.kind)
            .finish_non_exhaustive()
    }
}

impl<'m, K, V> MeterCache<'m, K, V> {
    fn new(meter: &'m Meter<'m>, kind: LookupKind) -> Self {
        MeterCache {
            meter,
            kind,
            _types: PhantomData,
        }
    }
}

impl<K: Hash, V> ResolverCache<K, V> for MeterCache<'_, K, V> {
    fn get<Q>(&self, name: &Q) -> Option<V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        // `K: Borrow<Q>` promises the same hash for a key and its borrowed
        // form, so `insert` finds this entry by hashing the owned key.
        self.meter.started(self.kind, self.meter.hash(name));
        None
    }

    fn remove<Q>(&self, _name: &Q) -> Option<V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        None
    }

    fn insert(&self, key: K, _value: V, _valid_until: Instant) {
        self.meter.answered(self.kind, self.meter.hash(&key));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Default)]
    struct Seen(Mutex<Vec<(LookupKind, LookupOutcome, bool)>>);

    impl DnsObserver for Seen {
        fn lookup(&self, kind: LookupKind, outcome: LookupOutcome, elapsed: Option<Duration>) {
            self.0
                .lock()
                .unwrap()
                .push((kind, outcome, elapsed.is_some()));
        }
    }

    #[test]
    fn a_get_then_insert_is_answered_and_a_lone_get_is_not() {
        let seen = Seen::default();
        let meter = Meter::new(Some(&seen));
        let caches = meter.caches();
        assert!(caches.txt.get("a.example.").is_none());
        assert!(caches.ptr.get(&IpAddr::from([192, 0, 2, 1])).is_none());
        assert!(caches.ipv4.get("b.example.").is_none());
        caches.txt.insert(
            "a.example.".into(),
            Txt::Error(mail_auth::Error::ParseError),
            Instant::now(),
        );
        caches.ptr.insert(
            IpAddr::from([192, 0, 2, 1]),
            RecordSet {
                rrset: Vec::new().into(),
                dnssec_status: mail_auth::DnssecStatus::Indeterminate,
            },
            Instant::now(),
        );
        // An insert nobody asked for (a name not looked up) counts nothing.
        caches.txt.insert(
            "other.example.".into(),
            Txt::Error(mail_auth::Error::ParseError),
            Instant::now(),
        );
        meter.finish();
        let seen = seen.0.into_inner().unwrap();
        assert_eq!(
            seen,
            [
                (LookupKind::Txt, LookupOutcome::Answered, true),
                (LookupKind::Ptr, LookupOutcome::Answered, true),
                (LookupKind::Ip, LookupOutcome::NoAnswer, false),
            ]
        );
    }

    #[test]
    fn without_an_observer_nothing_is_kept() {
        let meter = Meter::new(None);
        let caches = meter.caches();
        for i in 0..1000 {
            assert!(caches.txt.get(format!("{i}.example.").as_str()).is_none());
        }
        assert!(meter.open.lock().unwrap().is_empty());
        meter.finish();
    }
}
