//! The `[domains.<name>]` sections of the configuration file: the domains
//! Tern receives mail for, with their mailboxes, aliases, catch-all and
//! LMTP server, as an admin writes them. This crate owns them: the binary
//! embeds a map of [`DomainConfig`] as its `domains` key, and
//! [`directory_config`] turns it into the [`DirectoryConfig`] the
//! directory runs on (canonical domain names, local parts qualified with
//! their domain). The `lmtp` value is parsed by the delivery crate, which
//! knows LMTP servers (`tern_delivery::config::lmtp_targets`).
//!
//! ```
//! use std::collections::BTreeMap;
//! use tern_store::domains::{DomainConfig, directory_config};
//! let domains: BTreeMap<String, DomainConfig> = toml::from_str(
//!     "[\"Example.Test\"]\nmailboxes = [\"alice\"]\naliases = { info = [\"alice\"] }\n",
//! )
//! .unwrap();
//! let d = directory_config(&domains, Default::default()).unwrap();
//! assert_eq!(d.domains, ["example.test"]);
//! assert_eq!(d.mailboxes, ["alice@example.test"]);
//! ```
//!
//! What this module must never do: accept an unknown key (a typo would
//! silently drop a mailbox), or let a domain's `mailboxes` name an address
//! of another domain.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use tern_types::{AddressError, Domain};

use crate::DirectoryConfig;

/// One local domain.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DomainConfig {
    /// Mailbox local parts (`alice`), or full addresses in this domain.
    #[serde(default)]
    pub mailboxes: Vec<String>,
    /// Alias local part → targets: local parts of this domain or full addresses.
    #[serde(default)]
    pub aliases: BTreeMap<String, Vec<String>>,
    /// Where mail for unknown local parts goes (a local part or an address);
    /// unset: unknown users are refused at RCPT with 550 5.1.1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub catch_all: Option<String>,
    /// Deliver this domain's mailboxes over LMTP (RFC 2033) to a mailbox
    /// server such as Dovecot instead of writing Maildirs:
    /// `"unix:/path/to/socket"` (Dovecot's `lmtp` service listens on
    /// `/run/dovecot/lmtp` or `/var/run/dovecot/lmtp`) or `"tcp:host:port"`
    /// (`"tcp:[::1]:24"` for IPv6; a host name is resolved by the system,
    /// `/etc/hosts` included). `mailboxes`, `aliases` and `catch_all` still
    /// decide which recipients exist; each mailbox is sent to the server
    /// as `local@domain`, which is the user name the server must know.
    /// Results are queued and retried like remote ones: the server's 5xx
    /// bounces to the sender, a 4xx or an unreachable server defers.
    /// Unset: Maildir.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lmtp: Option<String>,
}

/// Why the `[domains]` sections cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DomainsError {
    /// The section's name is not a domain.
    #[error("[domains.{name:?}]: {error}")]
    Name {
        /// The name as written.
        name: String,
        /// Why it is not a domain.
        error: AddressError,
    },
    /// A mailbox given as a full address of another domain.
    #[error("[domains.{name:?}] mailboxes: {mailbox:?} is not in domain {domain}")]
    ForeignMailbox {
        /// The section's name as written.
        name: String,
        /// The mailbox as written.
        mailbox: String,
        /// The section's domain, canonical.
        domain: String,
    },
}

/// Section `name`'s domain, canonical (lower-cased; U-labels allowed).
pub fn canonical(name: &str) -> Result<Domain, DomainsError> {
    Domain::parse_utf8(name).map_err(|error| DomainsError::Name {
        name: name.to_owned(),
        error,
    })
}

/// The directory's settings from `domains`: `base` holds what is not per
/// domain (the recipient delimiter, the postmaster, the LMTP domains, the
/// smarthost); its domain, mailbox, alias and catch-all lists are replaced
/// by the sections', in canonical form (a bare local part gets its
/// section's domain).
pub fn directory_config(
    domains: &BTreeMap<String, DomainConfig>,
    base: DirectoryConfig,
) -> Result<DirectoryConfig, DomainsError> {
    let mut cfg = DirectoryConfig {
        domains: Vec::new(),
        mailboxes: Vec::new(),
        aliases: Vec::new(),
        catch_all: Vec::new(),
        ..base
    };
    for (name, domain) in domains {
        let d = canonical(name)?.as_str().to_owned();
        let qualify = |s: &str, mailbox: bool| -> Result<String, DomainsError> {
            match s.split_once('@') {
                None => Ok(format!("{s}@{d}")),
                Some((_, dom)) if mailbox && !dom.eq_ignore_ascii_case(&d) => {
                    Err(DomainsError::ForeignMailbox {
                        name: name.clone(),
                        mailbox: s.to_owned(),
                        domain: d.clone(),
                    })
                }
                Some(_) => Ok(s.to_owned()),
            }
        };
        for m in &domain.mailboxes {
            cfg.mailboxes.push(qualify(m, true)?);
        }
        for (alias, targets) in &domain.aliases {
            let key = qualify(alias, false)?;
            let targets = targets
                .iter()
                .map(|t| qualify(t, false))
                .collect::<Result<Vec<_>, _>>()?;
            cfg.aliases.push((key, targets));
        }
        if let Some(target) = &domain.catch_all {
            cfg.catch_all.push((d.clone(), qualify(target, false)?));
        }
        cfg.domains.push(d);
    }
    Ok(cfg)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> BTreeMap<String, DomainConfig> {
        toml::from_str(text).unwrap()
    }

    #[test]
    fn sections_become_the_directorys_canonical_lists() {
        let domains = parse(
            "[\"Example.Test\"]\nmailboxes = [\"alice\", \"Bob@EXAMPLE.test\"]\n\
             aliases = { info = [\"alice\", \"carol@elsewhere.test\"] }\ncatch_all = \"alice\"\n\
             [\"other.test\"]\nmailboxes = [\"dave\"]\nlmtp = \"unix:/run/lmtp\"\n",
        );
        let base = DirectoryConfig {
            recipient_delimiter: Some('-'),
            smarthost: true,
            ..DirectoryConfig::default()
        };
        let d = directory_config(&domains, base).unwrap();
        assert_eq!(d.domains, ["example.test", "other.test"]);
        assert_eq!(
            d.mailboxes,
            ["alice@example.test", "Bob@EXAMPLE.test", "dave@other.test"]
        );
        assert_eq!(
            d.aliases,
            [(
                "info@example.test".to_owned(),
                vec![
                    "alice@example.test".to_owned(),
                    "carol@elsewhere.test".to_owned()
                ]
            )]
        );
        assert_eq!(
            d.catch_all,
            [("example.test".to_owned(), "alice@example.test".to_owned())]
        );
        assert_eq!((d.recipient_delimiter, d.smarthost), (Some('-'), true));
        assert_eq!(
            domains["other.test"].lmtp.as_deref(),
            Some("unix:/run/lmtp")
        );
    }

    #[test]
    fn mistakes_are_named() {
        let foreign = parse("[\"example.test\"]\nmailboxes = [\"eve@elsewhere.test\"]\n");
        assert_eq!(
            directory_config(&foreign, DirectoryConfig::default())
                .unwrap_err()
                .to_string(),
            "[domains.\"example.test\"] mailboxes: \"eve@elsewhere.test\" is not in domain example.test"
        );
        let bad = parse("[\"exa mple.test\"]\nmailboxes = [\"a\"]\n");
        let err = directory_config(&bad, DirectoryConfig::default()).unwrap_err();
        assert!(matches!(err, DomainsError::Name { .. }), "{err}");
        assert!(err.to_string().starts_with("[domains.\"exa mple.test\"]: "));
        assert!(
            toml::from_str::<BTreeMap<String, DomainConfig>>("[\"x.test\"]\nmailbox = [\"a\"]\n")
                .is_err(),
            "unknown keys are refused"
        );
    }
}
