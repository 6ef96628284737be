//! The [`Resolver`] trait: the three questions Tern asks the DNS (MX,
//! addresses, TXT), dyn-compatible so the queue manager and the
//! authentication checks can share one `Arc<dyn Resolver>`.
//!
//! Implementations must return bounded answers (at most [`MAX_RECORDS`]
//! records, TXT records of at most [`MAX_TXT_LEN`] bytes) and must never
//! report a temporary failure as NXDOMAIN, NODATA or permanent.

use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;

use crate::error::DnsError;

/// At most this many records are returned by one lookup (per address
/// family for [`Resolver::ips`]); for MX the ones with the lowest preference
/// are kept.
pub const MAX_RECORDS: usize = 64;

/// TXT records longer than this (after concatenating their
/// character-strings) are dropped. Real SPF, DKIM (a 4096-bit RSA key is
/// about 800 bytes) and DMARC records are far below it.
pub const MAX_TXT_LEN: usize = 4096;

/// The boxed future every [`Resolver`] method returns: `Send`, borrowing
/// the resolver and the name for `'a`.
pub type DnsFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, DnsError>> + Send + 'a>>;

/// One MX record.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct MxRecord {
    /// Lower values are preferred.
    pub preference: u16,
    /// The mail exchanger: lower-case ASCII (A-labels), without the trailing
    /// dot; the root, as published by a null MX (RFC 7505), is `"."`.
    pub exchange: String,
}

impl MxRecord {
    /// True when the exchange is the root (`.`), as in a null MX.
    pub fn is_root(&self) -> bool {
        self.exchange == "."
    }
}

/// One SRV record (RFC 2782).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SrvRecord {
    /// Lower values are tried first.
    pub priority: u16,
    /// Share among records of one priority.
    pub weight: u16,
    /// The service's port.
    pub port: u16,
    /// The host: lower-case ASCII without the trailing dot; `"."` means
    /// the service is decidedly not offered (RFC 2782, RFC 6186).
    pub target: String,
}

/// DNS lookups, as Tern needs them.
///
/// Names may be given with or without a trailing dot and are always taken
/// as absolute (no search domains). U-labels are converted to A-labels.
/// No method returns `Ok` with an empty list: "nothing there" is
/// [`DnsError::NoRecords`] or [`DnsError::NxDomain`].
pub trait Resolver: Send + Sync {
    /// The MX records of `domain`, in no particular order (callers sort).
    fn mx<'a>(&'a self, domain: &'a str) -> DnsFuture<'a, Vec<MxRecord>>;

    /// The A and AAAA addresses of `host`: IPv4 first, then IPv6, each in
    /// answer order. When one family's lookup fails temporarily but the
    /// other gives addresses, the addresses are returned.
    fn ips<'a>(&'a self, host: &'a str) -> DnsFuture<'a, Vec<IpAddr>>;

    /// The TXT records of `name`, one string per record, each the
    /// concatenation of the record's character-strings (RFC 7208 3.3,
    /// RFC 6376 3.6.2.2). Bytes that are not UTF-8 become U+FFFD.
    fn txt<'a>(&'a self, name: &'a str) -> DnsFuture<'a, Vec<String>>;

    /// The A (IPv4) addresses of `name` alone: one query, no AAAA (DNS
    /// blocklists answer with A records). The default filters
    /// [`Resolver::ips`].
    fn ipv4<'a>(&'a self, name: &'a str) -> DnsFuture<'a, Vec<std::net::Ipv4Addr>> {
        Box::pin(async move {
            let v4: Vec<std::net::Ipv4Addr> = self
                .ips(name)
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
                    query: crate::error::QueryType::Ip,
                });
            }
            Ok(v4)
        })
    }

    /// The SRV records of `name` (`_imaps._tcp.example.org`). Only `tern
    /// dns --check` asks; a resolver that cannot answer says so as a
    /// permanent failure (the default).
    fn srv<'a>(&'a self, name: &'a str) -> DnsFuture<'a, Vec<SrvRecord>> {
        Box::pin(async move {
            Err(DnsError::Permanent {
                name: normalize_name(name),
                query: crate::QueryType::Srv,
                reason: "this resolver does not look up SRV records".into(),
            })
        })
    }
}

/// Lower-cases and strips one trailing dot, the form names are compared
/// and reported in.
pub(crate) fn normalize_name(name: &str) -> String {
    let trimmed = name.strip_suffix('.').unwrap_or(name);
    if trimmed.is_empty() {
        return ".".to_string();
    }
    trimmed.to_ascii_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_normalized() {
        assert_eq!(normalize_name("MX.Example.TEST."), "mx.example.test");
        assert_eq!(normalize_name("mx.example.test"), "mx.example.test");
        assert_eq!(normalize_name("."), ".");
        assert_eq!(normalize_name(""), ".");
    }

    #[test]
    fn root_exchange() {
        let null = MxRecord {
            preference: 0,
            exchange: ".".into(),
        };
        assert!(null.is_root());
        let real = MxRecord {
            preference: 0,
            exchange: "mx.example.test".into(),
        };
        assert!(!real.is_root());
    }
}
