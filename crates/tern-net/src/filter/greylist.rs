//! Greylisting at RCPT ([`tern_filter::greylist`]) over a shared store
//! (SQLite in the data directory, or memory), with an injectable clock.

use std::net::IpAddr;
use std::sync::Mutex;

use tern_filter::Verdict;
use tern_filter::greylist::{Greylist, Settings, Store, Triplet};

use super::FilterError;
use super::dnsbl::Clock;

/// The greylisting stage.
pub struct GreylistService {
    inner: Mutex<Greylist<Box<dyn Store + Send>>>,
    clock: Clock,
}

impl std::fmt::Debug for GreylistService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GreylistService").finish_non_exhaustive()
    }
}

impl GreylistService {
    /// Greylisting with `settings` over `store`, timed by `clock`.
    pub fn new(settings: Settings, store: Box<dyn Store + Send>, clock: Clock) -> GreylistService {
        GreylistService {
            inner: Mutex::new(Greylist::new(settings, store)),
            clock,
        }
    }

    /// The verdict about one recipient of a transaction from `ip`.
    pub(crate) fn verdict(&self, ip: IpAddr, from: &str, to: &str) -> Result<Verdict, FilterError> {
        let mut g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let triplet = Triplet::new(ip, from, to, g.settings());
        let now = (self.clock)();
        g.check(&triplet, now)
            .map(|d| d.verdict())
            .map_err(|e| FilterError::Protocol(e.to_string()))
    }
}
