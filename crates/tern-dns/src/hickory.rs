//! [`HickoryResolver`]: the production [`Resolver`], a stub resolver built
//! on hickory-resolver that asks the configured nameservers (or those of
//! `/etc/resolv.conf`) over UDP, falling back to TCP for truncated answers.
//!
//! It turns hickory's errors into [`DnsError`]'s four kinds and caps what
//! it returns. It must never follow `/etc/hosts`, apply search domains
//! (every name is absolute), speak encrypted DNS, or wait without a
//! deadline: each lookup is bounded by hickory's per-attempt timeout and,
//! as a backstop, by an overall deadline of its own.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use hickory_resolver::config::{
    ConnectionConfig, NameServerConfig, ResolveHosts, ResolverConfig, ResolverOpts,
};
use hickory_resolver::lookup::Lookup;
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::net::{DnsError as HickoryDnsError, NetError};
use hickory_resolver::proto::rr::{Name, RData, RecordType};
use hickory_resolver::{Resolver as HickoryInner, TokioResolver};

use crate::error::{DnsError, QueryType};
use crate::resolver::{
    DnsFuture, MAX_RECORDS, MAX_TXT_LEN, MxRecord, Resolver, SrvRecord, normalize_name,
};

/// How a [`HickoryResolver`] reaches the DNS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolverSettings {
    /// Recursive nameservers to ask, each over UDP and TCP on its own port
    /// (tests use a server on `127.0.0.1:<port>`). Empty: the nameservers of
    /// `/etc/resolv.conf` (its search domains are never used).
    pub nameservers: Vec<SocketAddr>,
    /// How long to wait for one answer from one nameserver.
    pub timeout: Duration,
    /// How many times a failed query is retried.
    pub attempts: usize,
    /// Answers (positive and negative) kept in the cache, honouring TTLs.
    pub cache_size: u64,
}

impl Default for ResolverSettings {
    /// The system's nameservers, 5 s per attempt, 2 retries, 1024 cached
    /// answers.
    fn default() -> Self {
        ResolverSettings {
            nameservers: Vec::new(),
            timeout: Duration::from_secs(5),
            attempts: 2,
            cache_size: 1024,
        }
    }
}

/// The resolver could not be set up.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot set up the DNS resolver: {0}")]
pub struct SetupError(String);

/// A [`Resolver`] on hickory-resolver. Cheap to share: wrap it in an `Arc`.
#[derive(Debug)]
pub struct HickoryResolver {
    inner: TokioResolver,
    /// Overall bound on one lookup, whatever hickory does inside it.
    deadline: Duration,
}

impl HickoryResolver {
    /// Builds a resolver. Reads `/etc/resolv.conf` when
    /// `settings.nameservers` is empty; fails if it cannot, if it lists no
    /// nameserver, or if `settings.timeout` is zero. Needs no runtime;
    /// lookups run on tokio.
    pub fn new(settings: ResolverSettings) -> Result<Self, SetupError> {
        if settings.timeout.is_zero() {
            return Err(SetupError("the DNS timeout must not be zero".into()));
        }
        let config = if settings.nameservers.is_empty() {
            let (config, _system_options) = hickory_resolver::system_conf::read_system_conf()
                .map_err(|e| {
                    SetupError(format!("cannot read the system DNS configuration: {e}"))
                })?;
            let (_domain, _search, servers) = config.into_parts();
            if servers.is_empty() {
                return Err(SetupError(
                    "the system DNS configuration lists no nameserver".into(),
                ));
            }
            // Keep only the nameservers: no default domain, no search list.
            ResolverConfig::from_name_servers(servers)
        } else {
            let servers = settings
                .nameservers
                .iter()
                .map(|addr| {
                    let mut udp = ConnectionConfig::udp();
                    udp.port = addr.port();
                    let mut tcp = ConnectionConfig::tcp();
                    tcp.port = addr.port();
                    NameServerConfig::new(addr.ip(), true, vec![udp, tcp])
                })
                .collect();
            ResolverConfig::from_name_servers(servers)
        };
        let servers = config.name_servers().len().max(1);

        let mut options = ResolverOpts::default();
        options.timeout = settings.timeout;
        options.attempts = settings.attempts;
        options.cache_size = settings.cache_size;
        options.use_hosts_file = ResolveHosts::Never;
        options.ndots = 0;

        let inner = HickoryInner::builder_with_config(config, TokioRuntimeProvider::default())
            .with_options(options)
            .build()
            .map_err(|e| SetupError(e.to_string()))?;

        // Every attempt on every server, plus one timeout of slack.
        let tries = u32::try_from(settings.attempts.saturating_add(1))
            .unwrap_or(u32::MAX)
            .saturating_mul(u32::try_from(servers).unwrap_or(u32::MAX))
            .saturating_add(1);
        let deadline = settings.timeout.saturating_mul(tries);
        Ok(HickoryResolver { inner, deadline })
    }

    /// The hickory resolver inside, configured as above (nameservers, no
    /// hosts file, no search domains), for libraries that speak hickory
    /// themselves (the SPF/DKIM/DMARC checks of `tern-mailauth`).
    pub fn hickory(&self) -> &TokioResolver {
        &self.inner
    }

    /// One lookup of `rtype`, with our deadline and our error kinds.
    async fn lookup(
        &self,
        name: &str,
        rtype: RecordType,
        query: QueryType,
    ) -> Result<Lookup, DnsError> {
        let fqdn = to_fqdn(name, query)?;
        match tokio::time::timeout(self.deadline, self.inner.lookup(fqdn, rtype)).await {
            Err(_elapsed) => Err(DnsError::Temporary {
                name: normalize_name(name),
                query,
                reason: format!("no answer within {:?}", self.deadline),
            }),
            Ok(Ok(lookup)) => Ok(lookup),
            Ok(Err(e)) => Err(classify(&e, name, query)),
        }
    }

    async fn family(&self, host: &str, rtype: RecordType) -> Result<Vec<IpAddr>, DnsError> {
        let lookup = self.lookup(host, rtype, QueryType::Ip).await?;
        Ok(lookup
            .answers()
            .iter()
            .filter_map(|r| match &r.data {
                RData::A(a) if rtype == RecordType::A => Some(IpAddr::V4(a.0)),
                RData::AAAA(a) if rtype == RecordType::AAAA => Some(IpAddr::V6(a.0)),
                _ => None,
            })
            .take(MAX_RECORDS)
            .collect())
    }
}

/// Parses `name` (U-labels become A-labels) as an absolute name.
fn to_fqdn(name: &str, query: QueryType) -> Result<Name, DnsError> {
    let permanent = |reason: String| DnsError::Permanent {
        name: normalize_name(name),
        query,
        reason,
    };
    let trimmed = name.strip_suffix('.').unwrap_or(name);
    if trimmed.is_empty() {
        return Err(permanent("empty domain name".into()));
    }
    let mut parsed =
        Name::from_utf8(trimmed).map_err(|e| permanent(format!("invalid domain name: {e}")))?;
    parsed.set_fqdn(true);
    Ok(parsed)
}

/// hickory's error → ours. Only NXDOMAIN and NODATA are answers; the rest
/// may go away, so it is temporary.
fn classify(e: &NetError, name: &str, query: QueryType) -> DnsError {
    let name = normalize_name(name);
    if e.is_nx_domain() {
        return DnsError::NxDomain { name };
    }
    if e.is_no_records_found() {
        return DnsError::NoRecords { name, query };
    }
    let reason = match e {
        NetError::Timeout => "timed out".to_string(),
        NetError::Dns(HickoryDnsError::ResponseCode(code)) => {
            format!("the nameserver answered {code}")
        }
        other => other.to_string(),
    };
    DnsError::Temporary {
        name,
        query,
        reason,
    }
}

/// Both families' results → one answer: addresses if any family has
/// some, else the most hopeful failure (temporary, then NODATA, then
/// NXDOMAIN).
fn merge_families(
    host: &str,
    v4: Result<Vec<IpAddr>, DnsError>,
    v6: Result<Vec<IpAddr>, DnsError>,
) -> Result<Vec<IpAddr>, DnsError> {
    let mut out = Vec::new();
    let mut errors = Vec::new();
    for r in [v4, v6] {
        match r {
            Ok(ips) => out.extend(ips),
            Err(e) => errors.push(e),
        }
    }
    if !out.is_empty() {
        return Ok(out);
    }
    let rank = |e: &DnsError| match e {
        DnsError::Temporary { .. } => 0,
        DnsError::Permanent { .. } => 1,
        DnsError::NoRecords { .. } => 2,
        DnsError::NxDomain { .. } => 3,
    };
    errors.sort_by_key(rank);
    match errors.into_iter().next() {
        // NXDOMAIN for one family and NODATA for the other cannot both be
        // true; the name exists as far as one answer knows.
        Some(DnsError::NoRecords { name, .. }) => Err(DnsError::NoRecords {
            name,
            query: QueryType::Ip,
        }),
        Some(e) => Err(e),
        // Both families answered with only non-address records (a CNAME to
        // nowhere): nothing to connect to.
        None => Err(DnsError::NoRecords {
            name: normalize_name(host),
            query: QueryType::Ip,
        }),
    }
}

/// The TXT records of an answer, each concatenated, at most
/// [`MAX_RECORDS`] of them, dropping those over [`MAX_TXT_LEN`] bytes.
fn txt_strings(lookup: &Lookup, name: &str) -> Result<Vec<String>, DnsError> {
    let mut out = Vec::new();
    let mut oversized = 0usize;
    for record in lookup.answers() {
        let RData::TXT(txt) = &record.data else {
            continue;
        };
        let len: usize = txt.txt_data.iter().map(|s| s.len()).sum();
        if len > MAX_TXT_LEN {
            oversized += 1;
            continue;
        }
        let mut bytes = Vec::with_capacity(len);
        for part in txt.txt_data.iter() {
            bytes.extend_from_slice(part);
        }
        out.push(String::from_utf8_lossy(&bytes).into_owned());
        if out.len() == MAX_RECORDS {
            break;
        }
    }
    if out.is_empty() {
        let name = normalize_name(name);
        return Err(if oversized > 0 {
            DnsError::Permanent {
                name,
                query: QueryType::Txt,
                reason: format!("every TXT record is longer than {MAX_TXT_LEN} bytes"),
            }
        } else {
            DnsError::NoRecords {
                name,
                query: QueryType::Txt,
            }
        });
    }
    Ok(out)
}

impl Resolver for HickoryResolver {
    fn mx<'a>(&'a self, domain: &'a str) -> DnsFuture<'a, Vec<MxRecord>> {
        Box::pin(async move {
            let lookup = self.lookup(domain, RecordType::MX, QueryType::Mx).await?;
            // References first (bounded by the message hickory already
            // holds), so that only the MAX_RECORDS best are copied.
            let mut found: Vec<_> = lookup
                .answers()
                .iter()
                .filter_map(|r| match &r.data {
                    RData::MX(mx) => Some((mx.preference, &mx.exchange)),
                    _ => None,
                })
                .collect();
            if found.is_empty() {
                return Err(DnsError::NoRecords {
                    name: normalize_name(domain),
                    query: QueryType::Mx,
                });
            }
            found.sort_by_key(|&(preference, _)| preference);
            Ok(found
                .into_iter()
                .take(MAX_RECORDS)
                .map(|(preference, exchange)| MxRecord {
                    preference,
                    exchange: normalize_name(&exchange.to_ascii()),
                })
                .collect())
        })
    }

    fn ips<'a>(&'a self, host: &'a str) -> DnsFuture<'a, Vec<IpAddr>> {
        Box::pin(async move {
            let (v4, v6) = futures_util::future::join(
                self.family(host, RecordType::A),
                self.family(host, RecordType::AAAA),
            )
            .await;
            // An answer holding only other records (say, a CNAME whose
            // target has none) is NODATA for that family.
            let empty_is_nodata = |r: Result<Vec<IpAddr>, DnsError>| match r {
                Ok(v) if v.is_empty() => Err(DnsError::NoRecords {
                    name: normalize_name(host),
                    query: QueryType::Ip,
                }),
                other => other,
            };
            merge_families(host, empty_is_nodata(v4), empty_is_nodata(v6))
        })
    }

    fn txt<'a>(&'a self, name: &'a str) -> DnsFuture<'a, Vec<String>> {
        Box::pin(async move {
            let lookup = self.lookup(name, RecordType::TXT, QueryType::Txt).await?;
            txt_strings(&lookup, name)
        })
    }

    fn ipv4<'a>(&'a self, name: &'a str) -> DnsFuture<'a, Vec<std::net::Ipv4Addr>> {
        Box::pin(async move {
            let v4: Vec<std::net::Ipv4Addr> = self
                .family(name, RecordType::A)
                .await?
                .into_iter()
                .filter_map(|ip| match ip {
                    IpAddr::V4(a) => Some(a),
                    IpAddr::V6(_) => None,
                })
                .collect();
            if v4.is_empty() {
                return Err(DnsError::NoRecords {
                    name: normalize_name(name),
                    query: QueryType::Ip,
                });
            }
            Ok(v4)
        })
    }

    fn srv<'a>(&'a self, name: &'a str) -> DnsFuture<'a, Vec<SrvRecord>> {
        Box::pin(async move {
            let lookup = self.lookup(name, RecordType::SRV, QueryType::Srv).await?;
            let found: Vec<SrvRecord> = lookup
                .answers()
                .iter()
                .filter_map(|r| match &r.data {
                    RData::SRV(srv) => Some(SrvRecord {
                        priority: srv.priority,
                        weight: srv.weight,
                        port: srv.port,
                        target: if srv.target.is_root() {
                            ".".to_owned()
                        } else {
                            normalize_name(&srv.target.to_ascii())
                        },
                    }),
                    _ => None,
                })
                .take(MAX_RECORDS)
                .collect();
            if found.is_empty() {
                return Err(DnsError::NoRecords {
                    name: normalize_name(name),
                    query: QueryType::Srv,
                });
            }
            Ok(found)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp(name: &str) -> DnsError {
        DnsError::Temporary {
            name: name.into(),
            query: QueryType::Ip,
            reason: "SERVFAIL".into(),
        }
    }

    fn nodata(name: &str) -> DnsError {
        DnsError::NoRecords {
            name: name.into(),
            query: QueryType::Ip,
        }
    }

    #[test]
    fn addresses_win_over_a_failed_family() {
        let v4: IpAddr = "192.0.2.1".parse().unwrap();
        assert_eq!(
            merge_families("h", Ok(vec![v4]), Err(temp("h"))),
            Ok(vec![v4])
        );
        let v6: IpAddr = "2001:db8::1".parse().unwrap();
        assert_eq!(
            merge_families("h", Err(nodata("h")), Ok(vec![v6])),
            Ok(vec![v6])
        );
        assert_eq!(
            merge_families("h", Ok(vec![v4]), Ok(vec![v6])),
            Ok(vec![v4, v6])
        );
    }

    #[test]
    fn temporary_beats_negative_answers() {
        assert!(
            merge_families("h", Err(temp("h")), Err(nodata("h")))
                .unwrap_err()
                .is_temporary()
        );
        assert!(
            merge_families(
                "h",
                Err(DnsError::NxDomain { name: "h".into() }),
                Err(temp("h"))
            )
            .unwrap_err()
            .is_temporary()
        );
        assert_eq!(
            merge_families(
                "h",
                Err(nodata("h")),
                Err(DnsError::NxDomain { name: "h".into() })
            ),
            Err(nodata("h"))
        );
        assert_eq!(
            merge_families(
                "h",
                Err(DnsError::NxDomain { name: "h".into() }),
                Err(DnsError::NxDomain { name: "h".into() })
            ),
            Err(DnsError::NxDomain { name: "h".into() })
        );
    }

    #[test]
    fn names_become_absolute_a_labels() {
        let n = to_fqdn("Bücher.example", QueryType::Mx).unwrap();
        assert!(n.is_fqdn());
        assert_eq!(n.to_ascii(), "xn--bcher-kva.example.");
        assert_eq!(to_fqdn("a.b.", QueryType::Mx).unwrap().to_ascii(), "a.b.");
        // An IP literal is just a name with numeric labels.
        assert_eq!(
            to_fqdn("192.0.2.1", QueryType::Ip).unwrap().to_ascii(),
            "192.0.2.1."
        );
    }

    #[test]
    fn invalid_names_are_permanent() {
        for bad in [
            "",
            ".",
            &"a".repeat(64),
            &format!("{}.x", "abc.".repeat(70)),
        ] {
            let e = to_fqdn(bad, QueryType::Mx).unwrap_err();
            assert!(
                matches!(e, DnsError::Permanent { .. }),
                "{bad:?} gave {e:?}"
            );
        }
    }

    #[test]
    fn can_be_built_outside_a_runtime() {
        // The binary builds it while wiring, before lookups run on tokio.
        let settings = ResolverSettings {
            nameservers: vec![
                "127.0.0.1:5353".parse().unwrap(),
                "[::1]:53".parse().unwrap(),
            ],
            ..ResolverSettings::default()
        };
        let r = HickoryResolver::new(settings).unwrap();
        // 2 servers x 3 tries x 5 s, plus 5 s of slack.
        assert_eq!(r.deadline, Duration::from_secs(35));
    }

    #[test]
    fn zero_timeout_is_refused() {
        let settings = ResolverSettings {
            nameservers: vec!["127.0.0.1:53".parse().unwrap()],
            timeout: Duration::ZERO,
            ..ResolverSettings::default()
        };
        assert!(HickoryResolver::new(settings).is_err());
    }
}
