//! The TOML configuration: what an admin writes, validated before anything
//! starts.
//!
//! The file is assembled from sections the crates own: each crate that
//! uses a section declares its serde types, defaults and `validate()`
//! (`[[filter]]`: `tern_filter::config`; `[delivery]`:
//! `tern_delivery::config`; `[smtp]`: `tern_smtp::config`; `[dns]`:
//! `tern_dns::config`; `[trace]`: `tern_queue::journal::TraceConfig`;
//! `[limits]`, `[tls]`, `[auth]`, `[imap]`, `[pop3]`: `tern_net::config`;
//! `[submission]`: `tern_net::SubmissionPolicy`; `[queue]`: `tern_queue`
//! and `tern_queue_pg`; `[mail_auth]` and `[dkim]`: `tern_mailauth`;
//! `[domains.<name>]`: `tern_store::domains`, its `lmtp` key read by
//! `tern_delivery::config::lmtp_targets`), and [`Config::validate`] calls
//! each, putting the section's name before its message. What is left here
//! is the binary's own: the top-level keys, the listeners, `[log]` and
//! `[admin]`.
//!
//! Unknown keys are errors (`deny_unknown_fields`), and every error names
//! the key and, for syntax and type errors, the line. Relative paths are
//! relative to the working directory the server starts in. This module
//! never opens sockets or touches the data directory.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context as _, bail};
use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use tern_smtp::server::ServerConfig;
use tern_store::DirectoryConfig;
use tern_types::Domain;

/// `[queue]`: the retry schedule (`tern_queue::RetrySchedule`'s keys:
/// `intervals`, `max_age`, `delay_warning_after`) and the backend
/// (`tern_queue_pg::QueueConfig`'s keys: `backend`, `url`, …) in one
/// section. Each crate reads its own keys, and each refuses one it does
/// not know, so a typo is still an error.
#[derive(Debug, Clone, Default, Serialize)]
pub struct QueueSection {
    /// When messages are retried, warned about and given up on.
    #[serde(flatten)]
    pub schedule: tern_queue::RetrySchedule,
    /// Files or PostgreSQL.
    #[serde(flatten)]
    pub store: tern_queue_pg::QueueConfig,
}

impl<'de> Deserialize<'de> for QueueSection {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error as _;
        let mut schedule = toml::Table::deserialize(d)?;
        let mut store = toml::Table::new();
        for key in tern_queue_pg::QueueConfig::KEYS {
            if let Some(value) = schedule.remove(*key) {
                store.insert((*key).to_owned(), value);
            }
        }
        Ok(QueueSection {
            schedule: tern_queue::RetrySchedule::deserialize(toml::Value::Table(schedule))
                .map_err(D::Error::custom)?,
            store: tern_queue_pg::QueueConfig::deserialize(toml::Value::Table(store))
                .map_err(D::Error::custom)?,
        })
    }
}

/// The whole configuration file.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Our host name: greeting, EHLO, `Received:`, Maildir file names.
    pub hostname: String,
    /// Where all state lives: `spool/` (the queue) and `mail/` (Maildirs).
    #[serde(default = "default_data_dir")]
    pub data_dir: PathBuf,
    /// The unprivileged user Tern runs as. Started as root, Tern binds its
    /// listeners and reads its keys, then switches to this user for good;
    /// `data_dir` must belong to it. Unset: Tern stays the user it was
    /// started as, and refuses to be root unless `allow_root` is set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// The group Tern runs as (default: `user`'s primary group).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// Let Tern run as root without `user` (development containers; the
    /// `--allow-root` flag does the same). Never on a server.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub allow_root: bool,
    /// Client networks allowed to relay to non-local domains (CIDR).
    #[serde(default)]
    pub trusted_networks: Vec<IpNet>,
    /// Separator for sub-addressing (`alice+tag@`); empty disables it.
    #[serde(default = "default_delimiter")]
    pub recipient_delimiter: String,
    /// Where `postmaster` goes (an address); default: `postmaster@` the first
    /// domain if it is a mailbox, else the first mailbox.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub postmaster: Option<String>,
    /// Listening sockets.
    #[serde(rename = "listener", default)]
    pub listeners: Vec<ListenerConfig>,
    /// Local domains with their mailboxes and aliases.
    #[serde(default)]
    pub domains: BTreeMap<String, DomainConfig>,
    /// Sizes, counts and times.
    #[serde(default)]
    pub limits: tern_net::config::LimitsConfig,
    /// SMTP protocol policy switches.
    #[serde(default)]
    pub smtp: tern_smtp::config::SmtpConfig,
    /// Local and remote delivery (`tern_delivery::config` owns the section).
    #[serde(default)]
    pub delivery: tern_delivery::config::DeliveryConfig,
    /// Certificates for STARTTLS and implicit TLS.
    #[serde(default)]
    pub tls: tern_net::config::TlsConfig,
    /// SMTP AUTH: users file, mechanisms, bearer tokens.
    #[serde(default)]
    pub auth: tern_net::config::AuthConfig,
    /// Submission policy (ports 587/465).
    #[serde(default)]
    pub submission: tern_net::SubmissionPolicy,
    /// The queue: its retry schedule and where it is kept.
    #[serde(default)]
    pub queue: QueueSection,
    /// DNS for MX lookups and the authentication checks.
    #[serde(default)]
    pub dns: tern_dns::config::DnsConfig,
    /// Inbound email authentication on MX listeners (SPF, DKIM, DMARC, ARC,
    /// iprev) and what failures mean.
    #[serde(default)]
    pub mail_auth: tern_mailauth::InboundPolicy,
    /// DKIM signing of outgoing mail.
    #[serde(default)]
    pub dkim: tern_mailauth::DkimConfig,
    /// IMAP: mailbox limits and quota.
    #[serde(default)]
    pub imap: tern_net::config::ImapConfig,
    /// POP3: what QUIT does with deleted messages, the autologout timer.
    #[serde(default)]
    pub pop3: tern_net::config::Pop3Config,
    /// The filter pipeline: spam and virus scanners, blocklists and
    /// greylisting, in order (`[[filter]]` tables).
    /// (`tern_filter::config` owns these tables: types, defaults, checks.)
    #[serde(
        rename = "filter",
        default,
        skip_serializing_if = "tern_filter::config::Filters::is_empty"
    )]
    pub filters: tern_filter::config::Filters,
    /// Logging.
    #[serde(default)]
    pub log: LogConfig,
    /// The admin HTTP listener (`role = "admin"`): its bearer token.
    #[serde(default)]
    pub admin: AdminConfig,
    /// The delivery journal behind `tern trace`.
    #[serde(default)]
    pub trace: tern_queue::journal::TraceConfig,
}

/// `[admin]`: the admin HTTP API (`/metrics`, `/healthz`, `/readyz`,
/// `/api/…`) served on `role = "admin"` listeners.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminConfig {
    /// Where `tern admin token` stores the SHA-256 hash of the bearer
    /// token (default `<data_dir>/admin-token.sha256`). A listener on a
    /// non-loopback address requires the token on every request but
    /// `/healthz` and `/readyz`; on loopback it is not asked for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token_file: Option<PathBuf>,
}

/// `pop3.delete_mode` (the type `[pop3]` is read into).
pub use tern_net::pop3::DeleteMode as Pop3DeleteMode;

/// One listening socket.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ListenerConfig {
    /// `ip:port`; port 0 picks a free port (tests).
    pub address: SocketAddr,
    /// What the listener is for.
    pub role: ListenerRole,
    /// Allow password AUTH without TLS on this listener. Only for listeners
    /// on loopback that the admin trusts (a local webmail, say): on any
    /// other address it is a configuration error.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub plaintext_auth: bool,
    /// POP3 listeners only: the autologout timer of their sessions,
    /// instead of `pop3.idle_timeout` (RFC 1939: at least 10 minutes).
    #[serde(
        default,
        with = "tern_limits::duration::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub idle_timeout: Option<Duration>,
}

/// Listener roles.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ListenerRole {
    /// Inbound MX: mail for local domains from anyone (port 25); STARTTLS offered.
    Mx,
    /// Submission with STARTTLS and AUTH (port 587, RFC 6409).
    Submission,
    /// Submission over implicit TLS with AUTH (port 465, RFC 8314).
    Submissions,
    /// IMAP with STARTTLS (port 143); LOGIN only after TLS unless
    /// `plaintext_auth` (loopback only).
    Imap,
    /// IMAP over implicit TLS (port 993).
    Imaps,
    /// POP3 with STLS (port 110); USER/PASS and AUTH only after TLS
    /// unless `plaintext_auth` (loopback only).
    Pop3,
    /// POP3 over implicit TLS (port 995).
    Pop3s,
    /// The admin HTTP API and `/metrics` (plain HTTP; loopback by default,
    /// a bearer token required elsewhere).
    Admin,
    /// Mail client autoconfiguration over plain HTTP (Thunderbird,
    /// Autodiscover, Apple profiles; port 80 behind `autoconfig.DOMAIN`).
    Autoconfig,
    /// Mail client autoconfiguration over HTTPS with the server
    /// certificate (port 443).
    Autoconfigs,
}

impl ListenerRole {
    /// An HTTP listener (admin or autoconfig) rather than a mail protocol.
    pub fn is_http(self) -> bool {
        matches!(
            self,
            ListenerRole::Admin | ListenerRole::Autoconfig | ListenerRole::Autoconfigs
        )
    }
}

/// One local domain (`[domains.<name>]`), owned by `tern-store`.
pub use tern_store::DomainConfig;

/// Logging.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// `text` or `json` (the `--log-format` flag overrides it).
    pub format: LogFormat,
    /// A tracing filter, e.g. `info` or `info,tern_net=debug` (`RUST_LOG` overrides it).
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            format: LogFormat::Text,
            level: "info".to_owned(),
        }
    }
}

/// Log line format.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

fn default_data_dir() -> PathBuf {
    PathBuf::from("./data")
}

fn default_delimiter() -> String {
    "+".to_owned()
}

impl Config {
    /// Reads, parses and validates a configuration file.
    pub fn load(path: &Path) -> anyhow::Result<Config> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read config file {}", path.display()))?;
        Config::parse(&text).with_context(|| format!("invalid config file {}", path.display()))
    }

    /// Parses and validates configuration text.
    pub fn parse(text: &str) -> anyhow::Result<Config> {
        let config: Config = toml::from_str(text).map_err(|e| anyhow::anyhow!("{e}"))?;
        config.validate()?;
        Ok(config)
    }

    /// Checks what serde cannot: names, ranges, and the directory.
    pub fn validate(&self) -> anyhow::Result<()> {
        Domain::parse(&self.hostname)
            .map_err(|e| anyhow::anyhow!("hostname = {:?}: {e}", self.hostname))?;
        if self.listeners.is_empty() {
            bail!(
                "no [[listener]] configured: add one, e.g. address = \"127.0.0.1:2525\", role = \"mx\""
            );
        }
        if self.domains.is_empty() {
            bail!("no [domains.<name>] configured: Tern needs at least one local domain");
        }
        self.limits.validate().map_err(|e| match e {
            tern_net::config::ConfigError::Abuse(e) => anyhow::anyhow!("[limits.abuse]: {e}"),
            e => anyhow::anyhow!("limits.{e}"),
        })?;
        self.pop3
            .validate()
            .map_err(|e| anyhow::anyhow!("pop3.{e}"))?;
        for listener in &self.listeners {
            match listener.idle_timeout {
                Some(t) if !matches!(listener.role, ListenerRole::Pop3 | ListenerRole::Pop3s) => {
                    bail!(
                        "listener {}: idle_timeout = {t:?} is for pop3 and pop3s listeners only",
                        listener.address
                    );
                }
                Some(t) if t.is_zero() => {
                    bail!(
                        "listener {}: idle_timeout must be positive",
                        listener.address
                    );
                }
                _ => {}
            }
        }
        if self.recipient_delimiter.chars().count() > 1 {
            bail!(
                "recipient_delimiter = {:?}: one character, or \"\" to disable",
                self.recipient_delimiter
            );
        }
        self.auth
            .validate()
            .map_err(|e| anyhow::anyhow!("auth.{e}"))?;
        for l in &self.listeners {
            if l.plaintext_auth && !l.address.ip().is_loopback() {
                bail!(
                    "[[listener]] address = \"{}\": plaintext_auth = true is only allowed on a \
                     loopback address (127.0.0.1, ::1): elsewhere passwords would cross the \
                     network in clear text",
                    l.address
                );
            }
        }
        self.tls
            .validate()
            .map_err(|e| anyhow::anyhow!("tls.{e}"))?;
        self.queue
            .schedule
            .validate()
            .map_err(|e| anyhow::anyhow!("[queue]: {e}"))?;
        self.queue
            .store
            .pg_config(&self.hostname)
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        if self.queue.store.lease_seconds == 0 {
            bail!("queue.lease_seconds must be positive");
        }
        self.delivery
            .validate()
            .map_err(|e| anyhow::anyhow!("delivery.{e}"))?;
        self.filters.validate()?;
        tern_store::Directory::new(self.directory_config()?)
            .map_err(|e| anyhow::anyhow!("[domains]: {e}"))?;
        self.lmtp_targets()?;
        self.dkim_signer()?;
        Ok(())
    }

    /// Where DKIM keys live: `dkim.keys_dir`, else `<data_dir>/dkim`.
    pub fn dkim_keys_dir(&self) -> PathBuf {
        self.dkim
            .keys_dir
            .clone()
            .unwrap_or_else(|| self.data_dir.join("dkim"))
    }

    /// The DKIM keys of every local domain (none when `dkim.sign` is off);
    /// an unreadable or invalid key file is an error that names the file.
    pub fn dkim_signer(&self) -> anyhow::Result<tern_mailauth::Signer> {
        if !self.dkim.sign {
            return Ok(tern_mailauth::Signer::default());
        }
        let domains: Vec<String> = self
            .domains
            .keys()
            .map(|d| d.trim_end_matches('.').to_ascii_lowercase())
            .collect();
        tern_mailauth::Signer::load(&self.dkim_keys_dir(), domains.iter().map(String::as_str))
            .map_err(|e| anyhow::anyhow!("[dkim]: {e}"))
    }

    /// The LMTP server of each local domain that has one, by canonical
    /// domain name (`tern_delivery::config::lmtp_targets`).
    pub fn lmtp_targets(
        &self,
    ) -> anyhow::Result<std::collections::HashMap<String, tern_delivery::LmtpTarget>> {
        Ok(tern_delivery::config::lmtp_targets(&self.domains)?)
    }

    /// The directory settings (domains, mailboxes, aliases) in canonical
    /// form (`tern_store::domains::directory_config`).
    pub fn directory_config(&self) -> anyhow::Result<DirectoryConfig> {
        let base = DirectoryConfig {
            recipient_delimiter: self.recipient_delimiter.chars().next(),
            postmaster: self.postmaster.clone(),
            lmtp_domains: self.lmtp_targets()?.into_keys().collect(),
            smarthost: self.delivery.smarthost.is_some(),
            ..DirectoryConfig::default()
        };
        Ok(tern_store::domains::directory_config(&self.domains, base)?)
    }

    /// The SASL mechanisms offered on submission listeners.
    pub fn mechanisms(&self) -> Vec<tern_sasl::Mechanism> {
        self.auth.mechanisms.clone()
    }

    /// The SMTP session settings for one listener (TLS and AUTH depend on
    /// its role); `auth_secret` is the server's stable SASL secret.
    pub fn listener_server_config(
        &self,
        listener: &ListenerConfig,
        auth_secret: &[u8],
    ) -> ServerConfig {
        let base = self.server_config();
        match listener.role {
            ListenerRole::Mx => ServerConfig {
                starttls_available: true,
                ..base
            },
            ListenerRole::Submission => ServerConfig {
                starttls_available: true,
                auth_mechanisms: self.mechanisms(),
                auth_plaintext_allowed: listener.plaintext_auth,
                auth_required: true,
                auth_secret: auth_secret.to_vec(),
                ..base
            },
            ListenerRole::Submissions | ListenerRole::Imaps | ListenerRole::Pop3s => ServerConfig {
                tls_active: true,
                auth_mechanisms: self.mechanisms(),
                auth_plaintext_allowed: listener.plaintext_auth,
                auth_required: true,
                auth_secret: auth_secret.to_vec(),
                ..base
            },
            // HTTP listeners have no mail sessions.
            ListenerRole::Admin | ListenerRole::Autoconfig | ListenerRole::Autoconfigs => base,
            // IMAP and POP3 sessions take TLS and AUTH from these fields.
            ListenerRole::Imap | ListenerRole::Pop3 => ServerConfig {
                starttls_available: true,
                auth_mechanisms: self.mechanisms(),
                auth_plaintext_allowed: listener.plaintext_auth,
                auth_required: true,
                auth_secret: auth_secret.to_vec(),
                ..base
            },
        }
    }

    /// The SMTP session settings common to every listener.
    pub fn server_config(&self) -> ServerConfig {
        let l = &self.limits;
        self.smtp.apply(ServerConfig {
            hostname: self.hostname.clone(),
            max_message_size: l.max_message_size,
            max_recipients: l.max_recipients,
            max_command_line: l.max_command_line,
            max_text_line: l.max_text_line,
            max_errors: l.max_errors,
            max_received_headers: l.max_received_headers,
            ..ServerConfig::default()
        })
    }

    /// Where the admin token's hash is kept.
    pub fn admin_token_file(&self) -> PathBuf {
        self.admin
            .token_file
            .clone()
            .unwrap_or_else(|| self.data_dir.join("admin-token.sha256"))
    }

    /// The mail services clients may use: the first listener of each role.
    pub fn client_services(&self) -> tern_net::autoconfig::ClientServices {
        let addrs: Vec<SocketAddr> = self.listeners.iter().map(|l| l.address).collect();
        self.client_services_bound(&addrs)
    }

    /// [`Config::client_services`] with the addresses the listeners were
    /// actually bound to (`bound[i]` for listener `i`: port 0 resolved).
    pub fn client_services_bound(
        &self,
        bound: &[SocketAddr],
    ) -> tern_net::autoconfig::ClientServices {
        let port = |role: ListenerRole| {
            self.listeners
                .iter()
                .zip(bound)
                .find(|(l, _)| l.role == role)
                .map(|(_, a)| a.port())
        };
        tern_net::autoconfig::ClientServices {
            hostname: self.hostname.trim_end_matches('.').to_ascii_lowercase(),
            submissions: port(ListenerRole::Submissions),
            submission: port(ListenerRole::Submission),
            imaps: port(ListenerRole::Imaps),
            imap: port(ListenerRole::Imap),
            pop3s: port(ListenerRole::Pop3s),
            pop3: port(ListenerRole::Pop3),
        }
    }

    /// What `tern dns` and the admin API's `/api/dns` work from.
    pub fn dns_settings(&self) -> tern_net::dnsrecords::DnsSettings {
        tern_net::dnsrecords::DnsSettings {
            hostname: self.hostname.clone(),
            domains: self.domains.keys().cloned().collect(),
            dkim_keys_dir: self.dkim_keys_dir(),
            services: self.client_services(),
            autoconfig: self
                .listeners
                .iter()
                .any(|l| matches!(l.role, ListenerRole::Autoconfig | ListenerRole::Autoconfigs)),
            nameservers: self.dns.nameservers.clone(),
        }
    }

    /// The effective configuration as TOML (defaults filled in).
    pub fn to_toml(&self) -> anyhow::Result<String> {
        Ok(toml::to_string_pretty(self)?)
    }
}

impl fmt::Display for ListenerRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ListenerRole::Mx => f.write_str("mx"),
            ListenerRole::Submission => f.write_str("submission"),
            ListenerRole::Submissions => f.write_str("submissions"),
            ListenerRole::Imap => f.write_str("imap"),
            ListenerRole::Imaps => f.write_str("imaps"),
            ListenerRole::Pop3 => f.write_str("pop3"),
            ListenerRole::Pop3s => f.write_str("pop3s"),
            ListenerRole::Admin => f.write_str("admin"),
            ListenerRole::Autoconfig => f.write_str("autoconfig"),
            ListenerRole::Autoconfigs => f.write_str("autoconfigs"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
hostname = "mx.example.test"
[[listener]]
address = "127.0.0.1:0"
role = "mx"
[domains."example.test"]
mailboxes = ["alice", "bob"]
aliases = { info = ["alice", "bob"] }
"#;

    #[test]
    fn minimal_config_gets_defaults() {
        let c = Config::parse(MINIMAL).unwrap();
        assert_eq!(c.limits.max_recipients, 100);
        assert_eq!(c.limits.command_timeout, Duration::from_secs(300));
        assert_eq!(c.data_dir, PathBuf::from("./data"));
        let d = c.directory_config().unwrap();
        assert_eq!(d.mailboxes, vec!["alice@example.test", "bob@example.test"]);
        assert_eq!(
            d.aliases,
            vec![(
                "info@example.test".to_owned(),
                vec![
                    "alice@example.test".to_owned(),
                    "bob@example.test".to_owned()
                ]
            )]
        );
    }

    #[test]
    fn unknown_key_is_named_with_its_line() {
        let text = format!("{MINIMAL}\n[limits]\nmax_mesage_size = 5\n");
        let err = format!("{:#}", Config::parse(&text).unwrap_err());
        assert!(err.contains("max_mesage_size"), "{err}");
        assert!(err.contains("line"), "{err}");
    }

    #[test]
    fn bad_values_are_refused_with_the_key() {
        let text = MINIMAL.replace("mx.example.test", "bad host name");
        assert!(format!("{:#}", Config::parse(&text).unwrap_err()).contains("hostname"));
        let text = format!("{MINIMAL}\n[limits]\nmax_command_line = 100\n");
        assert!(format!("{:#}", Config::parse(&text).unwrap_err()).contains("max_command_line"));
        let text = MINIMAL.replace("\"alice\", \"bob\"]", "\"../../etc\"]");
        assert!(Config::parse(&text).is_err());
        let text = format!("{MINIMAL}\n[limits]\ncommand_timeout = \"soon\"\n");
        let err = format!("{:#}", Config::parse(&text).unwrap_err());
        assert!(
            err.contains("command_timeout") || err.contains("duration"),
            "{err}"
        );
    }

    #[test]
    fn lmtp_targets_are_parsed_per_domain() {
        let text = format!(
            "{MINIMAL}\n[domains.\"Mail.Example.Test\"]\nmailboxes = [\"carol\"]\n\
             lmtp = \"unix:/run/dovecot/lmtp\"\n\
             [domains.\"tcp.example.test\"]\nmailboxes = [\"dave\"]\nlmtp = \"tcp:[::1]:24\"\n"
        );
        let c = Config::parse(&text).unwrap();
        let t = c.lmtp_targets().unwrap();
        assert_eq!(t.len(), 2);
        assert_eq!(
            t["mail.example.test"],
            tern_delivery::LmtpTarget::Unix("/run/dovecot/lmtp".into())
        );
        assert_eq!(
            t["tcp.example.test"],
            tern_delivery::LmtpTarget::Tcp("::1".into(), 24)
        );
        assert!(!t.contains_key("example.test"), "Maildir by default");
        let again = Config::parse(&c.to_toml().unwrap()).unwrap();
        assert_eq!(again.lmtp_targets().unwrap(), t);

        for bad in ["/run/dovecot/lmtp", "unix:", "tcp:localhost", "tcp:a b:24"] {
            let text = MINIMAL.replace("aliases = {", &format!("lmtp = {bad:?}\naliases = {{"));
            let err = format!("{:#}", Config::parse(&text).unwrap_err());
            assert!(
                err.contains("lmtp") && err.contains("example.test"),
                "{bad}: {err}"
            );
        }
    }

    #[test]
    fn effective_config_round_trips() {
        let c = Config::parse(MINIMAL).unwrap();
        let again = Config::parse(&c.to_toml().unwrap()).unwrap();
        assert_eq!(again.to_toml().unwrap(), c.to_toml().unwrap());
    }

    #[test]
    fn pop3_settings_and_roles() {
        let c = Config::parse(MINIMAL).unwrap();
        assert_eq!(c.pop3.delete_mode, Pop3DeleteMode::Expunge);
        assert_eq!(c.pop3.idle_timeout, Duration::from_secs(600));
        assert_eq!(c.pop3.login_delay, Duration::ZERO);
        let text = format!(
            "{MINIMAL}\n[pop3]\ndelete_mode = \"move-to-trash\"\nidle_timeout = \"15m\"\nlogin_delay = \"5m\"\n"
        );
        let c = Config::parse(&text).unwrap();
        assert_eq!(c.pop3.delete_mode, Pop3DeleteMode::MoveToTrash);
        assert_eq!(c.pop3.idle_timeout, Duration::from_secs(900));
        assert_eq!(c.pop3.login_delay, Duration::from_secs(300));
        for bad in [
            "delete_mode = \"shred\"",
            "idle_timeout = \"0s\"",
            "login_delay = \"1500ms\"",
            "apop = true",
        ] {
            let text = format!("{MINIMAL}\n[pop3]\n{bad}\n");
            let err = format!("{:#}", Config::parse(&text).unwrap_err());
            assert!(
                err.contains("pop3") || err.contains("delete_mode") || err.contains("apop"),
                "{bad}: {err}"
            );
        }
        // A per-listener autologout timer, for POP3 listeners only.
        let text = MINIMAL.replace("role = \"mx\"", "role = \"pop3\"\nidle_timeout = \"20m\"");
        let c = Config::parse(&text).unwrap();
        assert_eq!(c.listeners[0].idle_timeout, Some(Duration::from_secs(1200)));
        assert!(
            Config::parse(MINIMAL).unwrap().listeners[0]
                .idle_timeout
                .is_none()
        );
        for bad in [
            "role = \"mx\"\nidle_timeout = \"20m\"",
            "role = \"pop3\"\nidle_timeout = \"0s\"",
        ] {
            let text = MINIMAL.replace("role = \"mx\"", bad);
            let err = format!("{:#}", Config::parse(&text).unwrap_err());
            assert!(err.contains("idle_timeout"), "{bad}: {err}");
        }
        let text = MINIMAL.replace("role = \"mx\"", "role = \"pop3s\"");
        let c = Config::parse(&text).unwrap();
        assert_eq!(c.listeners[0].role, ListenerRole::Pop3s);
        assert_eq!(c.listeners[0].role.to_string(), "pop3s");
        let sc = c.listener_server_config(&c.listeners[0], b"secret");
        assert!(sc.tls_active && sc.auth_required);
    }

    #[test]
    fn the_shipped_dev_config_is_valid() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/dev.toml");
        let c = Config::load(Path::new(path)).unwrap();
        assert_eq!(c.hostname, "mx.example.test");
        assert_eq!(c.listeners[0].address, "127.0.0.1:2525".parse().unwrap());
    }

    #[test]
    fn the_shipped_production_config_is_valid() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../examples/production.toml"
        );
        let c = Config::load(Path::new(path)).unwrap();
        assert_eq!(c.hostname, "mail.example.org");
        assert_eq!(c.user.as_deref(), Some("tern"));
        let ports: Vec<u16> = c.listeners.iter().map(|l| l.address.port()).collect();
        assert_eq!(ports, [25, 25, 587, 465, 993, 143, 995, 110]);
        assert!(c.listeners.iter().all(|l| !l.plaintext_auth));
        assert_eq!(c.tls.certificates.len(), 1);
        assert!(c.trusted_networks.is_empty());
    }

    #[test]
    fn mail_auth_and_dkim_defaults_are_safe() {
        let c = Config::parse(MINIMAL).unwrap();
        let p = &c.mail_auth;
        assert!(p.enabled);
        assert_eq!(p.dmarc_reject, tern_mailauth::Action::Reject);
        assert_eq!(p.dmarc_quarantine, tern_mailauth::Action::Quarantine);
        assert_eq!(p.spf_fail, tern_mailauth::Action::Tag);
        assert_eq!(p.temperror, tern_mailauth::TempErrorAction::Accept);
        assert!(c.dkim.sign);
        assert_eq!(c.dkim_keys_dir(), PathBuf::from("./data/dkim"));
        let text = format!(
            "{MINIMAL}\n[mail_auth]\nspf_fail = \"reject\"\ntemperror = \"tempfail\"\nskip_networks = [\"10.0.0.0/8\"]\n[dkim]\nkeys_dir = \"/etc/tern/dkim\"\n"
        );
        let c = Config::parse(&text).unwrap();
        assert_eq!(c.mail_auth.spf_fail, tern_mailauth::Action::Reject);
        assert_eq!(c.dkim_keys_dir(), PathBuf::from("/etc/tern/dkim"));
    }

    #[test]
    fn mail_auth_mistakes_are_named() {
        let text = format!("{MINIMAL}\n[mail_auth]\ndmarc_rejct = \"tag\"\n");
        let err = format!("{:#}", Config::parse(&text).unwrap_err());
        assert!(err.contains("dmarc_rejct"), "{err}");
        let text = format!("{MINIMAL}\n[mail_auth]\nspf_fail = \"bounce\"\n");
        let err = format!("{:#}", Config::parse(&text).unwrap_err());
        assert!(err.contains("bounce"), "{err}");
    }

    #[test]
    fn an_unreadable_dkim_key_fails_validation_with_its_path() {
        let dir = tempfile::tempdir().unwrap();
        let domain_dir = dir.path().join("example.test");
        std::fs::create_dir_all(&domain_dir).unwrap();
        std::fs::write(
            domain_dir.join("s1.key"),
            "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
        )
        .unwrap();
        let text = format!("{MINIMAL}\n[dkim]\nkeys_dir = {:?}\n", dir.path());
        let err = format!("{:#}", Config::parse(&text).unwrap_err());
        assert!(err.contains("s1.key"), "{err}");
        assert!(err.contains("[dkim]"), "{err}");
    }
}
