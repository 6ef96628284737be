//! [`StaticResolver`]: a [`Resolver`] answered from an in-memory table, for
//! unit tests of code that takes a resolver (delivery planning, later SPF
//! and DMARC), with no sockets and no clock.
//!
//! It mimics the DNS's negative answers: a name with no entry at all is
//! NXDOMAIN, a name with entries of other types only is NODATA. It must
//! never be used to route real mail.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;

use crate::error::{DnsError, QueryType};
use crate::resolver::{DnsFuture, MxRecord, Resolver, SrvRecord, normalize_name};

/// What one name publishes; `None` is "no records of this type".
#[derive(Debug, Clone, Default)]
struct Entry {
    mx: Option<Result<Vec<MxRecord>, DnsError>>,
    ips: Option<Result<Vec<IpAddr>, DnsError>>,
    txt: Option<Result<Vec<String>, DnsError>>,
    srv: Option<Result<Vec<SrvRecord>, DnsError>>,
}

/// A [`Resolver`] backed by a `HashMap`, built with the `with_*` methods.
///
/// Names are compared case-insensitively, with or without a trailing dot.
/// Every query is recorded ([`StaticResolver::queries`]) so tests can check
/// what was asked, and how often.
#[derive(Debug, Default)]
pub struct StaticResolver {
    names: HashMap<String, Entry>,
    log: Mutex<Vec<(QueryType, String)>>,
}

impl StaticResolver {
    /// An empty table: every name is NXDOMAIN.
    pub fn new() -> Self {
        Self::default()
    }

    fn entry(&mut self, name: &str) -> &mut Entry {
        self.names.entry(normalize_name(name)).or_default()
    }

    /// Publishes MX records `(preference, exchange)` for `name`; `"."` is
    /// the root (a null MX).
    pub fn with_mx(mut self, name: &str, records: &[(u16, &str)]) -> Self {
        let records = records
            .iter()
            .map(|&(preference, exchange)| MxRecord {
                preference,
                exchange: normalize_name(exchange),
            })
            .collect();
        self.entry(name).mx = Some(Ok(records));
        self
    }

    /// Publishes A/AAAA addresses for `name`.
    pub fn with_ips(mut self, name: &str, ips: &[IpAddr]) -> Self {
        self.entry(name).ips = Some(Ok(ips.to_vec()));
        self
    }

    /// Publishes TXT records for `name` (each already concatenated).
    pub fn with_txt(mut self, name: &str, records: &[&str]) -> Self {
        self.entry(name).txt = Some(Ok(records.iter().map(|s| s.to_string()).collect()));
        self
    }

    /// Publishes SRV records for `name`.
    pub fn with_srv(mut self, name: &str, records: &[SrvRecord]) -> Self {
        self.entry(name).srv = Some(Ok(records.to_vec()));
        self
    }

    /// Makes the `query` lookup of `name` fail with `error`.
    pub fn with_error(mut self, name: &str, query: QueryType, error: DnsError) -> Self {
        let entry = self.entry(name);
        match query {
            QueryType::Mx => entry.mx = Some(Err(error)),
            QueryType::Ip => entry.ips = Some(Err(error)),
            QueryType::Txt => entry.txt = Some(Err(error)),
            QueryType::Srv => entry.srv = Some(Err(error)),
        }
        self
    }

    /// Every query asked so far, in order, with normalized names.
    pub fn queries(&self) -> Vec<(QueryType, String)> {
        self.log.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Looks `name` up in the table: `pick` chooses the record type. A name
    /// absent from the table is NXDOMAIN; a present name without this type,
    /// or with an empty list, is NODATA.
    fn answer<T: Clone>(
        &self,
        name: &str,
        query: QueryType,
        pick: impl FnOnce(&Entry) -> Option<&Result<Vec<T>, DnsError>>,
    ) -> Result<Vec<T>, DnsError> {
        let name = normalize_name(name);
        self.log
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((query, name.clone()));
        let Some(entry) = self.names.get(&name) else {
            return Err(DnsError::NxDomain { name });
        };
        match pick(entry) {
            Some(Ok(v)) if !v.is_empty() => Ok(v.clone()),
            Some(Err(e)) => Err(e.clone()),
            _ => Err(DnsError::NoRecords { name, query }),
        }
    }
}

impl Resolver for StaticResolver {
    fn mx<'a>(&'a self, domain: &'a str) -> DnsFuture<'a, Vec<MxRecord>> {
        Box::pin(async move { self.answer(domain, QueryType::Mx, |e| e.mx.as_ref()) })
    }

    fn ips<'a>(&'a self, host: &'a str) -> DnsFuture<'a, Vec<IpAddr>> {
        Box::pin(async move { self.answer(host, QueryType::Ip, |e| e.ips.as_ref()) })
    }

    fn txt<'a>(&'a self, name: &'a str) -> DnsFuture<'a, Vec<String>> {
        Box::pin(async move { self.answer(name, QueryType::Txt, |e| e.txt.as_ref()) })
    }

    fn srv<'a>(&'a self, name: &'a str) -> DnsFuture<'a, Vec<SrvRecord>> {
        Box::pin(async move { self.answer(name, QueryType::Srv, |e| e.srv.as_ref()) })
    }
}
