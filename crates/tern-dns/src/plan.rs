//! Where a domain's mail goes: [`plan_delivery`] turns MX records (or their
//! absence) into an ordered list of hosts and addresses for the SMTP
//! client, or into a failure that says whether to bounce or to defer.
//!
//! Rules (RFC 5321 section 5.1, RFC 7505):
//! - MX records are tried in order of preference; hosts of equal
//!   preference are shuffled (RFC 5321 5.1 asks senders to spread the
//!   load), deterministically from a seed so that tests can check it;
//! - a domain with no MX records (NODATA) has an implicit MX: its own A and
//!   AAAA records, at preference 0; if it has none either, it cannot
//!   receive mail (permanent, 5.1.2);
//! - NXDOMAIN is permanent: 5.1.2;
//! - a null MX (the only MX record is `.`) is permanent: 5.1.10;
//! - an MX host whose address lookup fails is skipped; when every host is
//!   skipped the message is deferred (4.4.4, or 4.4.3 when a DNS failure
//!   was temporary), because a missing address record is usually a
//!   mistake that gets fixed;
//! - any temporary DNS error on the domain itself defers (4.4.3);
//! - an MX exchange that looks like an IP address (`10.0.0.1`) is not an
//!   address: RFC 5321 5.1 and RFC 7505 require a host name, so it is
//!   looked up as a name (its "labels" are digits), which normally finds
//!   nothing and the host is skipped. Using it as an address would let a
//!   domain's DNS point our client at arbitrary addresses in a way no
//!   standard allows;
//! - recipient domains that are address literals (`[192.0.2.1]`) do not
//!   come here: the caller builds [`DeliveryPlan::literal`].
//!
//! It must never follow more than [`MAX_MX_HOSTS`] hosts or keep more than
//! [`MAX_ADDRESSES_PER_HOST`] addresses of one, and never report a
//! temporary DNS failure as a reason to bounce.

use std::collections::HashSet;
use std::fmt;
use std::net::IpAddr;

use futures_util::future::join_all;
use tern_types::EnhancedStatus;

use crate::error::{DnsError, QueryType};
use crate::resolver::{MxRecord, Resolver, normalize_name};

/// At most this many MX hosts (the most preferred) are looked up and
/// planned; hosts skipped for lack of addresses count.
pub const MAX_MX_HOSTS: usize = 10;

/// At most this many addresses of one host are planned.
pub const MAX_ADDRESSES_PER_HOST: usize = 10;

/// Where the hosts of a [`DeliveryPlan`] came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PlanSource {
    /// The domain's MX records.
    Mx,
    /// No MX records: the domain's own addresses (RFC 5321 5.1).
    ImplicitMx,
    /// An address literal recipient domain (`[192.0.2.1]`).
    Literal,
}

/// One host to try, with its addresses in the order to try them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MxHost {
    /// The host name (lower-case ASCII, no trailing dot): the name to
    /// verify a TLS certificate against. For a literal, the address.
    pub name: String,
    /// The MX preference (0 for implicit MX and literals).
    pub preference: u16,
    /// IPv4 first, then IPv6; never empty, at most
    /// [`MAX_ADDRESSES_PER_HOST`], no duplicates.
    pub addresses: Vec<IpAddr>,
}

/// An MX host that was left out of the plan, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SkippedHost {
    /// The MX exchange.
    pub name: String,
    /// Its preference.
    pub preference: u16,
    /// Why its addresses could not be had.
    pub error: DnsError,
}

/// The hosts to try for one destination, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryPlan {
    /// The destination domain (lower-case, no trailing dot), or the literal
    /// as written in an address (`[192.0.2.1]`, `[IPv6:2001:db8::1]`).
    pub domain: String,
    /// MX, implicit MX or literal.
    pub source: PlanSource,
    /// Never empty; the first host is the most preferred.
    pub hosts: Vec<MxHost>,
    /// MX hosts skipped because their addresses could not be looked up,
    /// for logs (a mistyped MX target deserves a warning).
    pub skipped: Vec<SkippedHost>,
}

impl DeliveryPlan {
    /// The plan for an address literal recipient domain: that address only.
    pub fn literal(ip: IpAddr) -> Self {
        let domain = match ip {
            IpAddr::V4(v4) => format!("[{v4}]"),
            IpAddr::V6(v6) => format!("[IPv6:{v6}]"),
        };
        DeliveryPlan {
            domain,
            source: PlanSource::Literal,
            hosts: vec![MxHost {
                name: ip.to_string(),
                preference: 0,
                addresses: vec![ip],
            }],
            skipped: Vec::new(),
        }
    }

    /// Every (host, address) pair in the order to try them.
    pub fn targets(&self) -> impl Iterator<Item = (&MxHost, IpAddr)> + '_ {
        self.hosts
            .iter()
            .flat_map(|h| h.addresses.iter().map(move |&ip| (h, ip)))
    }
}

/// Why no plan could be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PlanError {
    /// NXDOMAIN: bounce, 5.1.2.
    #[error("{domain}: domain does not exist (NXDOMAIN)")]
    NoSuchDomain {
        /// The destination domain.
        domain: String,
    },
    /// The domain published a null MX (RFC 7505): bounce, 5.1.10.
    #[error("{domain}: domain does not accept mail (null MX, RFC 7505)")]
    NullMx {
        /// The destination domain.
        domain: String,
    },
    /// No MX records and no address records: bounce, 5.1.2.
    #[error("{domain}: domain has no MX and no A/AAAA records")]
    NoMailHost {
        /// The destination domain.
        domain: String,
    },
    /// The domain can never be looked up (invalid name): bounce, 5.1.2.
    #[error("{domain}: {error}")]
    InvalidDomain {
        /// The destination domain.
        domain: String,
        /// The failed lookup.
        error: DnsError,
    },
    /// MX records exist but no MX host has an address: defer, 4.4.4
    /// (4.4.3 when a host's lookup failed temporarily).
    #[error("{domain}: no MX host has an address ({})", SkippedList(.skipped))]
    Unroutable {
        /// The destination domain.
        domain: String,
        /// Every MX host tried, and why it was skipped.
        skipped: Vec<SkippedHost>,
    },
    /// A temporary DNS failure: defer, 4.4.3.
    #[error("{domain}: {error}")]
    Temporary {
        /// The destination domain.
        domain: String,
        /// The failed lookup.
        error: DnsError,
    },
}

struct SkippedList<'a>(&'a [SkippedHost]);

impl fmt::Display for SkippedList<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, s) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{}", s.error)?;
        }
        Ok(())
    }
}

impl PlanError {
    /// True when the recipients should bounce now; false when the message
    /// should be deferred and retried.
    pub fn is_permanent(&self) -> bool {
        self.status().class == 5
    }

    /// The RFC 3463 status for the DSN and the logs.
    pub fn status(&self) -> EnhancedStatus {
        match self {
            PlanError::NoSuchDomain { .. }
            | PlanError::NoMailHost { .. }
            | PlanError::InvalidDomain { .. } => EnhancedStatus::new(5, 1, 2),
            PlanError::NullMx { .. } => EnhancedStatus::new(5, 1, 10),
            PlanError::Unroutable { skipped, .. } => {
                if skipped.iter().any(|s| s.error.is_temporary()) {
                    EnhancedStatus::new(4, 4, 3)
                } else {
                    EnhancedStatus::new(4, 4, 4)
                }
            }
            PlanError::Temporary { .. } => EnhancedStatus::new(4, 4, 3),
        }
    }
}

/// SplitMix64: a tiny, well-mixed deterministic generator; the shuffle
/// only spreads load, it needs no cryptographic strength.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..=max` (rejection sampling, no modulo bias).
    fn below_or_eq(&mut self, max: usize) -> usize {
        let bound = max as u64 + 1;
        let zone = u64::MAX - (u64::MAX % bound);
        loop {
            let v = self.next();
            if v < zone {
                return (v % bound) as usize;
            }
        }
    }
}

/// Sorts by preference, drops root (`.`) exchanges and duplicate hosts
/// (keeping the best preference), and shuffles each run of equal
/// preference with `seed`. The result depends only on the set of records
/// and the seed, not on the order the DNS answered in.
fn order_mx(mut records: Vec<MxRecord>, seed: u64) -> Vec<MxRecord> {
    records.sort_by(|a, b| {
        (a.preference, a.exchange.as_str()).cmp(&(b.preference, b.exchange.as_str()))
    });
    let mut seen = HashSet::new();
    records.retain(|r| !r.is_root() && seen.insert(r.exchange.clone()));
    let mut rng = SplitMix64(seed);
    let mut start = 0;
    while start < records.len() {
        let pref = records[start].preference;
        let end = records[start..]
            .iter()
            .position(|r| r.preference != pref)
            .map_or(records.len(), |n| start + n);
        let group = &mut records[start..end];
        for i in (1..group.len()).rev() {
            let j = rng.below_or_eq(i);
            group.swap(i, j);
        }
        start = end;
    }
    records
}

/// Keeps usable, distinct addresses, at most [`MAX_ADDRESSES_PER_HOST`].
/// Unspecified (`0.0.0.0`, `::`), multicast and broadcast addresses can
/// never be an SMTP server and are dropped.
fn usable_addresses(ips: Vec<IpAddr>) -> Vec<IpAddr> {
    let mut out: Vec<IpAddr> = Vec::new();
    for ip in ips {
        let unusable = ip.is_unspecified()
            || ip.is_multicast()
            || matches!(ip, IpAddr::V4(v4) if v4.is_broadcast());
        if unusable || out.contains(&ip) {
            continue;
        }
        out.push(ip);
        if out.len() == MAX_ADDRESSES_PER_HOST {
            break;
        }
    }
    out
}

/// Works out where mail for `domain` goes (see the module documentation
/// for the rules). `rng_seed` drives the shuffle of equal-preference MX
/// hosts: pass a random value in production, a fixed one in tests.
pub async fn plan_delivery(
    resolver: &dyn Resolver,
    domain: &str,
    rng_seed: u64,
) -> Result<DeliveryPlan, PlanError> {
    let name = normalize_name(domain);
    if name.starts_with('[') {
        return Err(PlanError::InvalidDomain {
            domain: name.clone(),
            error: DnsError::Permanent {
                name,
                query: QueryType::Mx,
                reason: "an address literal is not a domain (use DeliveryPlan::literal)".into(),
            },
        });
    }

    let records = match resolver.mx(&name).await {
        Ok(records) if !records.is_empty() => records,
        Ok(_) | Err(DnsError::NoRecords { .. }) => return implicit_mx(resolver, name).await,
        Err(e) => return Err(domain_error(name, e)),
    };

    if records.iter().all(MxRecord::is_root) {
        return Err(PlanError::NullMx { domain: name });
    }

    let ordered = order_mx(records, rng_seed);
    let candidates = &ordered[..ordered.len().min(MAX_MX_HOSTS)];
    let lookups = join_all(candidates.iter().map(|r| resolver.ips(&r.exchange))).await;

    let mut hosts = Vec::new();
    let mut skipped = Vec::new();
    for (record, result) in candidates.iter().zip(lookups) {
        let result = result.and_then(|ips| {
            let usable = usable_addresses(ips);
            if usable.is_empty() {
                Err(DnsError::NoRecords {
                    name: record.exchange.clone(),
                    query: QueryType::Ip,
                })
            } else {
                Ok(usable)
            }
        });
        match result {
            Ok(addresses) => hosts.push(MxHost {
                name: record.exchange.clone(),
                preference: record.preference,
                addresses,
            }),
            Err(error) => skipped.push(SkippedHost {
                name: record.exchange.clone(),
                preference: record.preference,
                error,
            }),
        }
    }

    if hosts.is_empty() {
        return Err(PlanError::Unroutable {
            domain: name,
            skipped,
        });
    }
    Ok(DeliveryPlan {
        domain: name,
        source: PlanSource::Mx,
        hosts,
        skipped,
    })
}

/// RFC 5321 5.1: no MX records, so the domain itself is the host.
async fn implicit_mx(resolver: &dyn Resolver, name: String) -> Result<DeliveryPlan, PlanError> {
    match resolver.ips(&name).await {
        Ok(ips) => {
            let addresses = usable_addresses(ips);
            if addresses.is_empty() {
                return Err(PlanError::NoMailHost { domain: name });
            }
            Ok(DeliveryPlan {
                hosts: vec![MxHost {
                    name: name.clone(),
                    preference: 0,
                    addresses,
                }],
                domain: name,
                source: PlanSource::ImplicitMx,
                skipped: Vec::new(),
            })
        }
        Err(DnsError::NoRecords { .. }) => Err(PlanError::NoMailHost { domain: name }),
        Err(e) => Err(domain_error(name, e)),
    }
}

/// A failed lookup of the domain itself → the plan's error.
fn domain_error(domain: String, error: DnsError) -> PlanError {
    match error {
        DnsError::NxDomain { .. } => PlanError::NoSuchDomain { domain },
        DnsError::NoRecords { .. } => PlanError::NoMailHost { domain },
        DnsError::Permanent { .. } => PlanError::InvalidDomain { domain, error },
        DnsError::Temporary { .. } => PlanError::Temporary { domain, error },
    }
}

#[cfg(test)]
mod tests;
