//! The `[dns]` section of the configuration file: which recursive
//! nameservers Tern asks (for MX lookups, the authentication checks and
//! the blocklists). This crate owns the section; the binary embeds
//! [`DnsConfig`] as its `dns` key.
//!
//! ```
//! let dns: tern_dns::config::DnsConfig = toml::from_str("nameservers = [\"127.0.0.1:53\"]").unwrap();
//! assert_eq!(dns.resolver_settings().nameservers, dns.nameservers);
//! ```
//!
//! It never reads `/etc/resolv.conf` itself: an empty list is the
//! resolver's cue to do so.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use crate::ResolverSettings;

/// `[dns]`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct DnsConfig {
    /// Nameservers as `ip:port`; empty: those in /etc/resolv.conf.
    pub nameservers: Vec<SocketAddr>,
}

impl DnsConfig {
    /// The resolver's settings: these nameservers, the other settings at
    /// their defaults.
    pub fn resolver_settings(&self) -> ResolverSettings {
        ResolverSettings {
            nameservers: self.nameservers.clone(),
            ..ResolverSettings::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nameservers_or_the_system_ones() {
        let d: DnsConfig = toml::from_str("").unwrap();
        assert!(d.nameservers.is_empty());
        assert_eq!(d.resolver_settings(), ResolverSettings::default());
        let d: DnsConfig = toml::from_str("nameservers = [\"[::1]:5353\"]").unwrap();
        assert_eq!(d.nameservers, ["[::1]:5353".parse().unwrap()]);
        for bad in ["nameservers = [\"x\"]", "bogus = 1"] {
            assert!(toml::from_str::<DnsConfig>(bad).is_err(), "{bad}");
        }
    }
}
