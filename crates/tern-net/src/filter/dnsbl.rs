//! DNS blocklists and allowlists: every zone asked at once through Tern's
//! resolver, answers cached ([`tern_filter::dnsbl::Cache`]).

use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use tern_dns::{DnsError, Resolver};
use tern_filter::dnsbl::{Cache, Listing, Report, Zone, query_name};
use tern_filter::{FailMode, Hook, Verdict};

use super::FilterError;

/// Answers kept in the cache.
pub const CACHE_CAPACITY: usize = 10_000;

/// How long an answer is kept, in seconds.
pub const CACHE_TTL: u64 = 300;

/// The seconds-since-the-epoch clock (injected in tests).
pub type Clock = Arc<dyn Fn() -> u64 + Send + Sync>;

/// The system clock.
pub fn system_clock() -> Clock {
    Arc::new(crate::auth::unix_now)
}

/// The blocklist stage.
pub struct Dnsbl {
    resolver: Arc<dyn Resolver>,
    zones: Vec<Zone>,
    threshold: f64,
    /// Asked at connect (refusal given at MAIL) or at the first RCPT.
    pub hook: Hook,
    cache: Mutex<Cache>,
    clock: Clock,
}

impl std::fmt::Debug for Dnsbl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dnsbl")
            .field("zones", &self.zones)
            .field("threshold", &self.threshold)
            .field("hook", &self.hook)
            .finish_non_exhaustive()
    }
}

impl Dnsbl {
    /// A stage asking `zones` through `resolver`; refused at `threshold`.
    pub fn new(
        resolver: Arc<dyn Resolver>,
        zones: Vec<Zone>,
        threshold: f64,
        hook: Hook,
        clock: Clock,
    ) -> Dnsbl {
        Dnsbl {
            resolver,
            zones,
            threshold,
            hook,
            cache: Mutex::new(Cache::new(CACHE_CAPACITY, CACHE_TTL)),
            clock,
        }
    }

    async fn lookup(&self, zone: &Zone, ip: IpAddr) -> Listing {
        let now = (self.clock)();
        if let Some(l) = self
            .cache
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&zone.name, ip, now)
        {
            return l;
        }
        let name = query_name(ip, &zone.name);
        let listing = match self.resolver.ipv4(&name).await {
            Ok(answers) => zone.interpret(&answers),
            Err(DnsError::NxDomain { .. } | DnsError::NoRecords { .. }) => Listing::NotListed,
            Err(e) => {
                tracing::debug!(zone = %zone.name, error = %e, "blocklist lookup failed");
                Listing::LookupFailed
            }
        };
        self.cache.lock().unwrap_or_else(|e| e.into_inner()).put(
            &zone.name,
            ip,
            listing.clone(),
            now,
        );
        listing
    }

    /// Asks every zone about `ip`.
    pub async fn report(&self, ip: IpAddr) -> Report {
        let listings =
            futures_util::future::join_all(self.zones.iter().map(|z| self.lookup(z, ip))).await;
        Report::new(&self.zones, listings)
    }

    /// The verdict about `ip` and whether an allowlist lists it. With
    /// `fail = closed`, a zone that could not be asked tempfails a client
    /// no zone lists.
    pub(crate) async fn verdict(
        &self,
        ip: IpAddr,
        fail: FailMode,
    ) -> Result<(Verdict, bool), FilterError> {
        let report = self.report(ip).await;
        let verdict = report.verdict(ip, self.threshold);
        let failed = report
            .zones
            .iter()
            .any(|(_, _, l)| matches!(l, Listing::LookupFailed));
        if failed && fail == FailMode::Closed && verdict.action == tern_filter::Action::Continue {
            return Err(FilterError::Protocol(format!(
                "blocklist lookup failed: {}",
                report.result()
            )));
        }
        Ok((verdict, report.allowlisted()))
    }
}
