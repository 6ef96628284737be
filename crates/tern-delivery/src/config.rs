//! The `[delivery]` section of the configuration file (and its
//! `[delivery.smarthost]` table): how many messages are worked on at once,
//! how remote hosts are reached, and the smarthost all remote mail may be
//! relayed through. This crate owns the section: its types, defaults and
//! checks; the binary embeds [`DeliveryConfig`] as its `delivery` key.
//!
//! ```
//! let d: tern_delivery::config::DeliveryConfig =
//!     toml::from_str("concurrency = 4\n[smarthost]\nhost = \"relay.example\"\nport = 587\n")
//!         .unwrap();
//! d.validate().unwrap();
//! let settings = d.outbound_settings("mx.example.test").unwrap();
//! assert_eq!(settings.helo_name, "mx.example.test");
//! assert_eq!(
//!     settings.smarthost.unwrap().tls,
//!     tern_delivery::outbound::SmarthostTls::Starttls
//! );
//! ```
//!
//! Errors name the key below `delivery` (`per_destination must be at
//! least 1`); the binary puts `delivery.` before them. Only
//! [`DeliveryConfig::outbound_settings`] reads a file (the smarthost's
//! password); nothing here opens a connection. [`lmtp_targets`] reads the
//! `lmtp` key of the `[domains.<name>]` sections (which `tern-store`
//! owns) into the LMTP servers this crate delivers to.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tern_limits::duration;
use tracing::warn;

use tern_store::DomainConfig;

use crate::lmtp::{LmtpTarget, LmtpTargetError};
use crate::outbound::{OutboundError, OutboundSettings, Smarthost, SmarthostTls};

/// `[delivery]`: local and remote delivery.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct DeliveryConfig {
    /// Messages worked on at once.
    pub concurrency: usize,
    /// Delivery attempts to one destination (a domain, an LMTP server, or
    /// the smarthost) at once.
    pub per_destination: usize,
    /// How long an outbound SMTP connection stays open after a message,
    /// waiting for the next one to the same destination ("0s": never
    /// reused).
    #[serde(with = "duration")]
    pub connection_reuse: Duration,
    /// Deliver to other domains (MX lookup or smarthost). Off: remote
    /// recipients wait in the queue.
    pub remote: bool,
    /// The port remote MX hosts are contacted on (25; tests change it).
    pub remote_port: u16,
    /// Connecting to a remote host may take this long.
    #[serde(with = "duration")]
    pub connect_timeout: Duration,
    /// Name in our EHLO (default: the server's `hostname`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub helo_name: Option<String>,
    /// Relay all remote mail through one host instead of MX lookups.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub smarthost: Option<SmarthostConfig>,
}

impl Default for DeliveryConfig {
    fn default() -> Self {
        DeliveryConfig {
            concurrency: 20,
            per_destination: 10,
            connection_reuse: Duration::from_secs(5),
            remote: true,
            remote_port: 25,
            connect_timeout: Duration::from_secs(30),
            helo_name: None,
            smarthost: None,
        }
    }
}

/// `[delivery.smarthost]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SmarthostConfig {
    /// Host name or IP address.
    pub host: String,
    /// Port (587 for STARTTLS submission, 465 for implicit TLS, 25).
    pub port: u16,
    /// `starttls` (required, the default), `implicit`, or `none`.
    #[serde(default = "default_smarthost_tls")]
    pub tls: SmarthostTls,
    /// AUTH user name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// A file holding the AUTH password (first line).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_file: Option<PathBuf>,
    /// The certificates to trust for the smarthost (a private CA, or its
    /// own self-signed certificate), PEM. Unset: the system's CA bundle
    /// (`/etc/ssl/certs/ca-certificates.crt` and the other usual places).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
    /// Verify the smarthost's certificate chain and host name (default
    /// true). `false` encrypts without knowing who is at the other end:
    /// anyone on the path can pose as the smarthost and collect the AUTH
    /// password. Tern warns about it at every start.
    #[serde(default = "default_true")]
    pub tls_verify: bool,
}

fn default_true() -> bool {
    true
}

fn default_smarthost_tls() -> SmarthostTls {
    SmarthostTls::Starttls
}

impl SmarthostTls {
    /// The value as written in `tls = "…"`.
    pub fn as_str(self) -> &'static str {
        match self {
            SmarthostTls::Starttls => "starttls",
            SmarthostTls::Implicit => "implicit",
            SmarthostTls::None => "none",
        }
    }
}

impl Serialize for SmarthostTls {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for SmarthostTls {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        [
            SmarthostTls::Starttls,
            SmarthostTls::Implicit,
            SmarthostTls::None,
        ]
        .into_iter()
        .find(|t| t.as_str() == text)
        .ok_or_else(|| {
            serde::de::Error::custom(format!(
                "delivery.smarthost.tls = {text:?}: use starttls, implicit or none"
            ))
        })
    }
}

/// A `[delivery]` setting that cannot be used. The text names the key
/// below `delivery`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// A count of 0.
    #[error("{key} must be at least 1")]
    AtLeastOne {
        /// The key.
        key: &'static str,
    },
    /// A user name with `tls = "none"`.
    #[error(
        "smarthost: username with tls = \"none\" would send the password in clear text, \
         which Tern never does: use tls = \"starttls\" or \"implicit\""
    )]
    PasswordInClear,
    /// `ca_file` with `tls_verify = false`.
    #[error(
        "smarthost: ca_file and tls_verify = false contradict each other: remove tls_verify \
         to verify against ca_file"
    )]
    CaFileNotVerified,
    /// The smarthost's `password_file` cannot be read.
    #[error("smarthost.password_file: cannot read {}: {error}", path.display())]
    PasswordFile {
        /// The file.
        path: PathBuf,
        /// Why.
        error: std::io::Error,
    },
    /// What the outbound client refuses before any connection: a CA file
    /// that is not one, no system CA bundle, a HELO name that is none.
    #[error("smarthost: {0}")]
    Outbound(OutboundError),
}

impl DeliveryConfig {
    /// Checks what serde cannot: counts, and smarthost settings that
    /// contradict each other or would send the password in clear text.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if let Some(s) = &self.smarthost {
            if s.tls == SmarthostTls::None && s.username.is_some() {
                return Err(ConfigError::PasswordInClear);
            }
            if !s.tls_verify && s.ca_file.is_some() {
                return Err(ConfigError::CaFileNotVerified);
            }
        }
        if self.per_destination == 0 {
            return Err(ConfigError::AtLeastOne {
                key: "per_destination",
            });
        }
        if self.concurrency == 0 {
            return Err(ConfigError::AtLeastOne { key: "concurrency" });
        }
        Ok(())
    }

    /// What the SMTP client delivers with; `hostname` is the server's
    /// name, our EHLO unless `helo_name` is set. Reads the smarthost's
    /// password file and checks what can be checked before any connection
    /// ([`OutboundSettings::validate`]), so a mistake is said once at
    /// start, not as a deferral of every message. Warns (in the log) that
    /// a smarthost with `tls_verify = false` is not verified.
    pub fn outbound_settings(&self, hostname: &str) -> Result<OutboundSettings, ConfigError> {
        let smarthost = match &self.smarthost {
            None => None,
            Some(s) => {
                let password = match &s.password_file {
                    Some(path) => {
                        Some(first_line(path).map_err(|error| ConfigError::PasswordFile {
                            path: path.clone(),
                            error,
                        })?)
                    }
                    None => None,
                };
                if !s.tls_verify {
                    warn!(
                        smarthost = %s.host,
                        "delivery.smarthost.tls_verify = false: the smarthost's certificate is NOT verified; \
                         anyone on the path can pose as it and read the mail and the AUTH password"
                    );
                }
                Some(Smarthost {
                    host: s.host.clone(),
                    port: s.port,
                    tls: s.tls,
                    auth: s.username.clone().zip(password),
                    verify_certificate: s.tls_verify,
                    ca_file: s.ca_file.clone(),
                })
            }
        };
        let settings = OutboundSettings {
            helo_name: self
                .helo_name
                .clone()
                .unwrap_or_else(|| hostname.to_owned()),
            port: self.remote_port,
            smarthost,
            connect_timeout: self.connect_timeout,
            ..OutboundSettings::new(hostname)
        };
        settings.validate().map_err(ConfigError::Outbound)?;
        Ok(settings)
    }
}

/// The first line of a secret file.
fn first_line(path: &std::path::Path) -> std::io::Result<String> {
    Ok(std::fs::read_to_string(path)?
        .lines()
        .next()
        .unwrap_or("")
        .to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<DeliveryConfig, String> {
        let d: DeliveryConfig = toml::from_str(text).map_err(|e| e.message().to_owned())?;
        d.validate().map_err(|e| e.to_string())?;
        Ok(d)
    }

    #[test]
    fn lmtp_servers_are_read_per_domain_and_mistakes_named() {
        let domains: BTreeMap<String, DomainConfig> = toml::from_str(
            "[\"Mail.Example.Test\"]\nlmtp = \"unix:/run/dovecot/lmtp\"\n\
             [\"tcp.example.test\"]\nlmtp = \"tcp:[::1]:24\"\n[\"plain.test\"]\n",
        )
        .unwrap();
        let t = lmtp_targets(&domains).unwrap();
        assert_eq!(t.len(), 2);
        assert_eq!(
            t["mail.example.test"],
            LmtpTarget::Unix("/run/dovecot/lmtp".into())
        );
        assert_eq!(t["tcp.example.test"], LmtpTarget::Tcp("::1".into(), 24));
        let bad: BTreeMap<String, DomainConfig> =
            toml::from_str("[\"x.test\"]\nlmtp = \"tcp:localhost\"\n").unwrap();
        assert_eq!(
            lmtp_targets(&bad).unwrap_err().to_string(),
            "[domains.\"x.test\"] lmtp = \"tcp:localhost\": invalid or missing port \"\" (1-65535)"
        );
    }

    #[test]
    fn defaults() {
        let d = parse("").unwrap();
        assert_eq!(d, DeliveryConfig::default());
        assert_eq!(d.concurrency, 20);
        assert_eq!(d.connection_reuse, Duration::from_secs(5));
        let s = d.outbound_settings("mx.example.test").unwrap();
        assert_eq!(s.helo_name, "mx.example.test");
        assert_eq!(s.port, 25);
        assert_eq!(s.connect_timeout, Duration::from_secs(30));
        assert!(s.smarthost.is_none());
    }

    #[test]
    fn mistakes_name_the_key() {
        for (text, want) in [
            ("concurrency = 0", "concurrency must be at least 1"),
            ("per_destination = 0", "per_destination must be at least 1"),
            ("connect_timeout = \"soon\"", "invalid duration \"soon\""),
            ("bogus = 1", "unknown field `bogus`"),
            (
                "[smarthost]\nhost = \"h\"\nport = 25\ntls = \"maybe\"",
                "delivery.smarthost.tls = \"maybe\": use starttls, implicit or none",
            ),
            (
                "[smarthost]\nhost = \"h\"\nport = 25\ntls = \"none\"\nusername = \"u\"",
                "smarthost: username with tls = \"none\" would send the password in clear text",
            ),
            (
                "[smarthost]\nhost = \"h\"\nport = 25\ntls_verify = false\nca_file = \"/x\"",
                "smarthost: ca_file and tls_verify = false contradict each other",
            ),
            ("[smarthost]\nhost = \"h\"", "missing field `port`"),
        ] {
            let err = parse(text).unwrap_err();
            assert!(err.contains(want), "{text}: {want:?} not in {err:?}");
        }
    }

    #[test]
    fn smarthost_settings_and_password() {
        let dir = tempfile::tempdir().unwrap();
        let pw = dir.path().join("pw");
        std::fs::write(&pw, "s3cret\nignored\n").unwrap();
        let d = parse(&format!(
            "helo_name = \"out.example\"\nremote_port = 2525\nconnect_timeout = \"1500ms\"\n\
             [smarthost]\nhost = \"relay.example\"\nport = 465\ntls = \"implicit\"\n\
             username = \"u\"\npassword_file = {pw:?}\n"
        ))
        .unwrap();
        let s = d.outbound_settings("mx.example.test").unwrap();
        assert_eq!(s.helo_name, "out.example");
        assert_eq!(s.port, 2525);
        assert_eq!(s.connect_timeout, Duration::from_millis(1500));
        let sh = s.smarthost.unwrap();
        assert_eq!(sh.tls, SmarthostTls::Implicit);
        assert_eq!(sh.auth, Some(("u".to_owned(), "s3cret".to_owned())));
        assert!(sh.verify_certificate);

        // Written out and read back: the same section.
        let text = toml::to_string(&d).unwrap();
        assert_eq!(parse(&text).unwrap(), d, "{text}");

        let missing = dir.path().join("nope");
        let d = parse(&format!(
            "[smarthost]\nhost = \"h\"\nport = 587\nusername = \"u\"\npassword_file = {missing:?}\n"
        ))
        .unwrap();
        let err = d.outbound_settings("mx.example.test").unwrap_err();
        assert!(
            matches!(&err, ConfigError::PasswordFile { path, .. } if *path == missing),
            "{err}"
        );
    }
}

/// A `[domains.<name>] lmtp` value that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LmtpConfigError {
    /// Not `unix:/path` or `tcp:host:port`.
    #[error("[domains.{name:?}] lmtp = {text:?}: {error}")]
    Target {
        /// The section's name as written.
        name: String,
        /// The value as written.
        text: String,
        /// Why it is not a target.
        error: LmtpTargetError,
    },
    /// The section's name is not a domain.
    #[error(transparent)]
    Domain(#[from] tern_store::DomainsError),
}

/// The LMTP server of each local domain that has one (`[domains.<name>]
/// lmtp`), by canonical domain name; the others' mailboxes are Maildirs.
pub fn lmtp_targets(
    domains: &BTreeMap<String, DomainConfig>,
) -> Result<HashMap<String, LmtpTarget>, LmtpConfigError> {
    let mut out = HashMap::new();
    for (name, domain) in domains {
        let Some(text) = &domain.lmtp else {
            continue;
        };
        let target = LmtpTarget::parse(text).map_err(|error| LmtpConfigError::Target {
            name: name.clone(),
            text: text.clone(),
            error,
        })?;
        let d = tern_store::domains::canonical(name)?;
        out.insert(d.as_str().to_owned(), target);
    }
    Ok(out)
}
