//! The TOML configuration: what an admin writes, validated before anything
//! starts, and turned into each crate's own settings.
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
use tern_smtp::server::{BareLineEndings, EarlyTalkerPolicy, ServerConfig};
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
    pub limits: LimitsConfig,
    /// SMTP protocol policy switches.
    #[serde(default)]
    pub smtp: SmtpConfig,
    /// Local delivery.
    #[serde(default)]
    pub delivery: DeliveryConfig,
    /// Certificates for STARTTLS and implicit TLS.
    #[serde(default)]
    pub tls: TlsConfig,
    /// SMTP AUTH: users file, mechanisms, bearer tokens.
    #[serde(default)]
    pub auth: AuthConfig,
    /// Submission policy (ports 587/465).
    #[serde(default)]
    pub submission: SubmissionConfig,
    /// The queue: its retry schedule and where it is kept.
    #[serde(default)]
    pub queue: QueueSection,
    /// DNS for MX lookups and the authentication checks.
    #[serde(default)]
    pub dns: DnsConfig,
    /// Inbound email authentication on MX listeners (SPF, DKIM, DMARC, ARC,
    /// iprev) and what failures mean.
    #[serde(default)]
    pub mail_auth: tern_mailauth::InboundPolicy,
    /// DKIM signing of outgoing mail.
    #[serde(default)]
    pub dkim: tern_mailauth::DkimConfig,
    /// IMAP: mailbox limits and quota.
    #[serde(default)]
    pub imap: ImapConfig,
    /// POP3: what QUIT does with deleted messages, the autologout timer.
    #[serde(default)]
    pub pop3: Pop3Config,
    /// The filter pipeline: spam and virus scanners, blocklists and
    /// greylisting, in order (`[[filter]]` tables).
    #[serde(
        rename = "filter",
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "de_filters"
    )]
    pub filters: Vec<FilterConfig>,
    /// Logging.
    #[serde(default)]
    pub log: LogConfig,
    /// The admin HTTP listener (`role = "admin"`): its bearer token.
    #[serde(default)]
    pub admin: AdminConfig,
    /// The delivery journal behind `tern trace`.
    #[serde(default)]
    pub trace: TraceConfig,
}

/// One `[[filter]]` stage: `type` says which, the other keys are that
/// type's. Stages run in the order they are written.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum FilterConfig {
    /// Where the SPF/DKIM/DMARC/ARC checks run (settings in
    /// `[mail_auth]`); without this entry they run first.
    MailAuth(MailAuthStage),
    /// rspamd over HTTP (`/checkv2`).
    Rspamd(RspamdStage),
    /// A milter (Sendmail milter protocol 6).
    Milter(MilterStage),
    /// clamd over `INSTREAM`.
    Clamd(ClamdStage),
    /// DNS blocklists and allowlists.
    Dnsbl(DnsblStage),
    /// Greylisting (postgrey's semantics).
    Greylist(GreylistStage),
}

/// Each `[[filter]]` table, with its number and type in every error.
fn de_filters<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<FilterConfig>, D::Error> {
    let raw = Vec::<toml::Value>::deserialize(d)?;
    raw.into_iter()
        .enumerate()
        .map(|(i, v)| {
            let kind = v
                .get("type")
                .and_then(toml::Value::as_str)
                .unwrap_or("")
                .to_owned();
            v.try_into::<FilterConfig>().map_err(|e| {
                serde::de::Error::custom(format!(
                    "[[filter]] #{} (type = {kind:?}): {}",
                    i + 1,
                    e.message()
                ))
            })
        })
        .collect()
}

/// `Deserialize` for a string enum whose error names the key.
macro_rules! keyed_enum {
    ($ty:ident, $key:literal, { $($variant:ident => $text:literal),+ $(,)? }) => {
        impl<'de> Deserialize<'de> for $ty {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                match s.as_str() {
                    $($text => Ok($ty::$variant),)+
                    other => Err(serde::de::Error::custom(format!(
                        "{} = {other:?}: use {}",
                        $key,
                        [$($text),+].join(", ")
                    ))),
                }
            }
        }
    };
}

keyed_enum!(FilterRole, "roles", { Mx => "mx", Submission => "submission" });
keyed_enum!(FailConfig, "fail", { Open => "open", Closed => "closed" });
keyed_enum!(SpamAction, "spam", { Quarantine => "quarantine", Tag => "tag" });
keyed_enum!(InfectedAction, "infected", { Reject => "reject", Quarantine => "quarantine", Discard => "discard" });
keyed_enum!(DnsblHook, "hook", { Connect => "connect", Rcpt => "rcpt" });

impl FilterConfig {
    /// The `type` value.
    pub fn kind(&self) -> &'static str {
        match self {
            FilterConfig::MailAuth(_) => "mail_auth",
            FilterConfig::Rspamd(_) => "rspamd",
            FilterConfig::Milter(_) => "milter",
            FilterConfig::Clamd(_) => "clamd",
            FilterConfig::Dnsbl(_) => "dnsbl",
            FilterConfig::Greylist(_) => "greylist",
        }
    }
}

impl DnsblStage {
    /// One configured list as a [`tern_filter::dnsbl::Zone`].
    pub fn zone(&self, z: &DnsblZone) -> anyhow::Result<tern_filter::dnsbl::Zone> {
        let (name, weight, kind, results) = match z {
            DnsblZone::Name(n) => (n.as_str(), 1.0, None, &[][..]),
            DnsblZone::Table(t) => (t.zone.as_str(), t.weight, t.kind.as_deref(), &t.results[..]),
        };
        Domain::parse(name.trim_end_matches('.'))
            .map_err(|e| anyhow::anyhow!("zone {name:?}: {e}"))?;
        if !weight.is_finite() || weight == 0.0 {
            bail!("zone {name:?}: weight = {weight}: must be non-zero (negative for an allowlist)");
        }
        let mut zone = tern_filter::dnsbl::Zone::new(name);
        zone.weight = weight;
        zone.kind = match kind {
            None | Some("auto") => tern_filter::dnsbl::ZoneKind::Auto,
            Some("spamhaus") => tern_filter::dnsbl::ZoneKind::Spamhaus,
            Some("generic") => tern_filter::dnsbl::ZoneKind::Generic,
            Some(other) => bail!("zone {name:?}: kind = {other:?}: use auto, spamhaus or generic"),
        };
        for r in results {
            let net = if r.contains('/') {
                r.parse::<ipnet::Ipv4Net>()
            } else {
                r.parse::<std::net::Ipv4Addr>()
                    .map(|a| ipnet::Ipv4Net::new(a, 32).expect("/32 is valid"))
                    .map_err(|_| "x".parse::<ipnet::Ipv4Net>().unwrap_err())
            }
            .map_err(|_| {
                anyhow::anyhow!("zone {name:?}: results: {r:?} is not an IPv4 address or network")
            })?;
            zone.results.push(net);
        }
        Ok(zone)
    }
}

/// Which listeners a stage runs on.
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum FilterRole {
    /// Inbound MX listeners.
    Mx,
    /// Submission listeners (587 and 465).
    Submission,
}

fn default_filter_roles() -> Vec<FilterRole> {
    vec![FilterRole::Mx]
}

fn default_filter_timeout() -> Duration {
    Duration::from_secs(30)
}

/// What a stage's failure means: `open` accepts (and tags), `closed`
/// answers 451 4.7.1.
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum FailConfig {
    /// Accept and say so in `X-Tern-Filter:`.
    #[default]
    Open,
    /// `451 4.7.1`: the client retries.
    Closed,
}

/// `type = "mail_auth"`.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct MailAuthStage {}

/// `type = "rspamd"`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RspamdStage {
    /// Name in logs and `X-Tern-Filter:` (default `rspamd`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Listener roles (default `["mx"]`).
    #[serde(default = "default_filter_roles")]
    pub roles: Vec<FilterRole>,
    /// Longest one check may take.
    #[serde(default = "default_filter_timeout", with = "duration_str")]
    pub timeout: Duration,
    /// `open` or `closed`.
    #[serde(default)]
    pub fail: FailConfig,
    /// The normal (or proxy, in HTTP mode) worker: `http://127.0.0.1:11333`.
    pub url: String,
    /// The controller worker, for learning: `http://127.0.0.1:11334`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub controller: Option<String>,
    /// A file holding the controller's password (first line).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_file: Option<PathBuf>,
    /// Larger messages are not sent (default 20 MiB).
    #[serde(default = "default_rspamd_max_size")]
    pub max_size: u64,
    /// `Settings-ID:` to send.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub settings_id: Option<String>,
    /// What `add header` and `rewrite subject` do besides tagging:
    /// `quarantine` (deliver into Junk, default) or `tag`.
    #[serde(default)]
    pub spam: SpamAction,
    /// rspamd's `greylist` action answers 451 (default true).
    #[serde(default = "default_true_cfg")]
    pub greylist: bool,
    /// Apply rspamd's `milter.add_headers`/`remove_headers` (default true).
    #[serde(default = "default_true_cfg")]
    pub milter_headers: bool,
}

fn default_rspamd_max_size() -> u64 {
    20 * 1024 * 1024
}

fn default_true_cfg() -> bool {
    true
}

/// What a spam verdict short of reject does.
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum SpamAction {
    /// Deliver into the recipients' Junk folders (and tag).
    #[default]
    Quarantine,
    /// Only tag (`X-Spam-Flag: YES`).
    Tag,
}

/// `type = "milter"`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct MilterStage {
    /// Name in logs and `X-Tern-Filter:` (default `milter.<address>`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Listener roles (default `["mx"]`).
    #[serde(default = "default_filter_roles")]
    pub roles: Vec<FilterRole>,
    /// Longest one milter call may take.
    #[serde(default = "default_filter_timeout", with = "duration_str")]
    pub timeout: Duration,
    /// `open` or `closed`.
    #[serde(default)]
    pub fail: FailConfig,
    /// `unix:/run/milter.sock` or `inet:11332@127.0.0.1` (Postfix's forms).
    pub address: String,
}

/// `type = "clamd"`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ClamdStage {
    /// Name in logs and `X-Tern-Filter:` (default `clamav`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Listener roles (default `["mx"]`).
    #[serde(default = "default_filter_roles")]
    pub roles: Vec<FilterRole>,
    /// Longest one scan may take.
    #[serde(default = "default_filter_timeout", with = "duration_str")]
    pub timeout: Duration,
    /// `open` or `closed`.
    #[serde(default)]
    pub fail: FailConfig,
    /// `unix:/run/clamav/clamd.ctl` or `127.0.0.1:3310`.
    pub address: String,
    /// clamd's `StreamMaxLength` (default 25 MiB): larger messages are
    /// not scanned.
    #[serde(default = "default_clamd_max_size")]
    pub max_size: u64,
    /// `reject` (554 5.7.1 naming the virus, default), `quarantine` or
    /// `discard`.
    #[serde(default)]
    pub infected: InfectedAction,
}

fn default_clamd_max_size() -> u64 {
    tern_filter::clamd::DEFAULT_STREAM_MAX
}

/// What an infected message gets.
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum InfectedAction {
    /// `554 5.7.1`.
    #[default]
    Reject,
    /// Into Junk.
    Quarantine,
    /// Accepted and dropped.
    Discard,
}

/// `type = "dnsbl"`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DnsblStage {
    /// Name in logs and `X-Tern-Filter:` (default `dnsbl`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Listener roles (default `["mx"]`).
    #[serde(default = "default_filter_roles")]
    pub roles: Vec<FilterRole>,
    /// Longest all lookups together may take (default 10s).
    #[serde(default = "default_dnsbl_timeout", with = "duration_str")]
    pub timeout: Duration,
    /// `open` or `closed` (closed: a list that cannot be asked tempfails).
    #[serde(default)]
    pub fail: FailConfig,
    /// The lists.
    pub zones: Vec<DnsblZone>,
    /// The score at which the client is refused (default 1).
    #[serde(default = "default_dnsbl_threshold")]
    pub threshold: f64,
    /// When to ask: `connect` (refusal at MAIL FROM, default) or `rcpt`.
    #[serde(default)]
    pub hook: DnsblHook,
}

fn default_dnsbl_timeout() -> Duration {
    Duration::from_secs(10)
}

fn default_dnsbl_threshold() -> f64 {
    1.0
}

/// When blocklists are asked.
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum DnsblHook {
    /// At connect; the refusal comes at MAIL FROM.
    #[default]
    Connect,
    /// At the first RCPT TO.
    Rcpt,
}

/// One list: a zone name, or a table.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(untagged)]
pub enum DnsblZone {
    /// `"zen.spamhaus.org"`: weight 1.
    Name(String),
    /// `{ zone = "list.dnswl.org", weight = -2, … }`.
    Table(DnsblZoneTable),
}

/// A list with settings.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DnsblZoneTable {
    /// The zone.
    pub zone: String,
    /// What a listing weighs (negative for an allowlist; default 1).
    #[serde(default = "default_zone_weight")]
    pub weight: f64,
    /// `auto` (default: Spamhaus semantics under spamhaus.org/.net),
    /// `spamhaus` or `generic`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// Only these answers count (`["127.0.0.2", "127.0.0.4/30"]`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub results: Vec<String>,
}

fn default_zone_weight() -> f64 {
    1.0
}

/// `type = "greylist"`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct GreylistStage {
    /// Name in logs and `X-Tern-Filter:` (default `greylist`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Listener roles (default `["mx"]`).
    #[serde(default = "default_filter_roles")]
    pub roles: Vec<FilterRole>,
    /// Longest one check may take (default 5s).
    #[serde(default = "default_greylist_timeout", with = "duration_str")]
    pub timeout: Duration,
    /// `open` or `closed` (the database failing).
    #[serde(default)]
    pub fail: FailConfig,
    /// How long a new triplet waits (default 300s).
    #[serde(default = "default_grey_delay", with = "duration_str")]
    pub delay: Duration,
    /// How long a retry counts after the first attempt (default 2d).
    #[serde(default = "default_grey_window", with = "duration_str")]
    pub retry_window: Duration,
    /// Forget triplets not seen for this long (default 35d).
    #[serde(default = "default_grey_expiry", with = "duration_str")]
    pub expiry: Duration,
    /// Allow a client network after this many passes (default 5; 0: never).
    #[serde(default = "default_grey_auto_allow")]
    pub auto_allow_after: u32,
    /// Triplets kept at most (default 100000).
    #[serde(default = "default_grey_max_entries")]
    pub max_entries: usize,
    /// The database (default `<data_dir>/greylist.db`); `":memory:"`
    /// keeps state in memory only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub database: Option<PathBuf>,
}

fn default_greylist_timeout() -> Duration {
    Duration::from_secs(5)
}
fn default_grey_delay() -> Duration {
    Duration::from_secs(300)
}
fn default_grey_window() -> Duration {
    Duration::from_secs(2 * 86400)
}
fn default_grey_expiry() -> Duration {
    Duration::from_secs(35 * 86400)
}
fn default_grey_auto_allow() -> u32 {
    5
}
fn default_grey_max_entries() -> usize {
    100_000
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

/// `[imap]`: the IMAP service and the mail store it serves.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ImapConfig {
    /// The largest message APPEND accepts, in bytes (APPENDLIMIT).
    pub append_limit: u64,
    /// Concurrent IMAP sessions one user may hold.
    pub max_sessions_per_user: usize,
    /// Storage quota per user in bytes (unset: none); enforced on APPEND
    /// (`[OVERQUOTA]`) and reported by GETQUOTA.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub quota: Option<u64>,
}

impl Default for ImapConfig {
    fn default() -> Self {
        ImapConfig {
            append_limit: 52_428_800,
            max_sessions_per_user: 20,
            quota: None,
        }
    }
}

/// `[pop3]`: the POP3 service (on the same mail store as IMAP).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Pop3Config {
    /// What QUIT does with the messages a client deleted: `"expunge"`
    /// removes them, `"move-to-trash"` moves them to the `\Trash` mailbox.
    pub delete_mode: Pop3DeleteMode,
    /// The autologout timer (RFC 1939: at least 10 minutes). A session
    /// timed out deletes nothing.
    #[serde(with = "duration_str")]
    pub idle_timeout: Duration,
    /// The least time between two logins of a user (RFC 2449
    /// `LOGIN-DELAY`, whole seconds): announced in CAPA, and a login
    /// sooner gets `-ERR [LOGIN-DELAY]`. `"0s"` (the default): none.
    #[serde(with = "duration_str")]
    pub login_delay: Duration,
}

impl Default for Pop3Config {
    fn default() -> Self {
        Pop3Config {
            delete_mode: Pop3DeleteMode::Expunge,
            idle_timeout: tern_net::pop3::DEFAULT_IDLE_TIMEOUT,
            login_delay: Duration::ZERO,
        }
    }
}

/// `pop3.delete_mode`.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum Pop3DeleteMode {
    /// Remove deleted messages.
    Expunge,
    /// Move them to `\Trash`.
    MoveToTrash,
}

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
        with = "opt_duration_str",
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

/// One local domain.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
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

/// Limits (invariant 5: everything is bounded).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Largest message accepted, in bytes (advertised in SIZE).
    pub max_message_size: u64,
    /// Recipients per message; RFC 5321 asks for at least 100.
    pub max_recipients: usize,
    /// Concurrent sessions overall.
    pub max_connections: usize,
    /// Concurrent sessions from one client address.
    pub max_connections_per_ip: usize,
    /// Errors in one session before `421 4.7.0` and disconnect.
    pub max_errors: u32,
    /// Command line length including CRLF (RFC 5321: at least 512).
    pub max_command_line: usize,
    /// Text line length in DATA including CRLF (RFC 5321: 1000).
    pub max_text_line: usize,
    /// `Received:` headers before a message is refused as a loop.
    pub max_received_headers: usize,
    /// Time to wait for a command (RFC 5321 4.5.3.2.7: 5 minutes).
    #[serde(with = "duration_str")]
    pub command_timeout: Duration,
    /// Time to wait for a block of message data (4.5.3.2.5: 3 minutes).
    #[serde(with = "duration_str")]
    pub data_timeout: Duration,
    /// Pause before the greeting to catch early talkers (0s = none).
    #[serde(with = "duration_str")]
    pub greet_pause: Duration,
    /// Minimum message data rate, bytes/s, after 30 s (0 = off).
    pub min_data_rate: u64,
    /// The longest one message's data may take in all (30 minutes).
    #[serde(with = "duration_str")]
    pub message_data_timeout: Duration,
    /// Connection rates, AUTH brute force, per-user sending, tarpit.
    pub abuse: tern_limits::AbuseConfig,
    /// Client networks exempt from the per-address connection rate (besides
    /// `trusted_networks`); loopback by default.
    pub rate_limit_exceptions: Vec<IpNet>,
    /// Concurrent sessions from one client network (an IPv4 /24, an IPv6
    /// /48); `rate_limit_exceptions` and `trusted_networks` are exempt.
    pub max_connections_per_network: usize,
    /// The last slots of `max_connections`, kept for `trusted_networks`
    /// (unset: 5 % of `max_connections`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reserved_connections: Option<usize>,
    /// Stress mode: when it starts and what the timeouts become.
    pub stress: StressConfig,
}

impl LimitsConfig {
    /// The slots kept for trusted networks.
    pub fn reserved(&self) -> usize {
        self.reserved_connections
            .unwrap_or(self.max_connections / 20)
    }
}

/// `[limits.stress]`: from `threshold` % of `max_connections` sessions,
/// timeouts shrink so that sessions that say nothing leave fast.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct StressConfig {
    /// Percent of `max_connections` at which stress mode starts (it ends
    /// below 80 % of that); 0 switches stress mode off.
    pub threshold: u8,
    /// Command timeout (the greeting's answer included) under stress.
    #[serde(with = "duration_str")]
    pub command_timeout: Duration,
    /// Data block timeout under stress.
    #[serde(with = "duration_str")]
    pub data_timeout: Duration,
    /// How long message data may arrive before `min_data_rate` applies.
    #[serde(with = "duration_str")]
    pub min_rate_grace: Duration,
    /// The longest error tarpit delay under stress.
    #[serde(with = "duration_str")]
    pub tarpit: Duration,
}

impl Default for StressConfig {
    fn default() -> Self {
        let t = tern_net::StressTimeouts::default();
        StressConfig {
            threshold: 70,
            command_timeout: t.command,
            data_timeout: t.data,
            min_rate_grace: t.min_rate_grace,
            tarpit: t.tarpit,
        }
    }
}

impl StressConfig {
    /// The session timeouts of stress mode.
    pub fn timeouts(&self) -> tern_net::StressTimeouts {
        tern_net::StressTimeouts {
            command: self.command_timeout,
            data: self.data_timeout,
            min_rate_grace: self.min_rate_grace,
            tarpit: self.tarpit,
        }
    }
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            max_message_size: 52_428_800,
            max_recipients: 100,
            max_connections: 1000,
            max_connections_per_ip: 50,
            max_errors: 20,
            max_command_line: 512,
            max_text_line: 1000,
            max_received_headers: 100,
            command_timeout: Duration::from_secs(300),
            data_timeout: Duration::from_secs(180),
            greet_pause: Duration::ZERO,
            min_data_rate: 500,
            message_data_timeout: Duration::from_secs(1800),
            abuse: tern_limits::AbuseConfig::default(),
            rate_limit_exceptions: vec![
                "127.0.0.0/8".parse().expect("valid CIDR"),
                "::1/128".parse().expect("valid CIDR"),
            ],
            max_connections_per_network: 200,
            reserved_connections: None,
            stress: StressConfig::default(),
        }
    }
}

/// `[tls]`: certificates. With none, Tern generates a self-signed one into
/// `data_dir/tls` (fine for tests, not for the Internet).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    /// PEM files: full chain and key. Chosen by SNI; the first is the default.
    pub certificates: Vec<CertificateConfig>,
    /// Longest a TLS handshake may take.
    #[serde(with = "duration_str")]
    pub handshake_timeout: Duration,
}

impl Default for TlsConfig {
    fn default() -> Self {
        TlsConfig {
            certificates: Vec::new(),
            handshake_timeout: Duration::from_secs(30),
        }
    }
}

/// One certificate chain and its private key.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CertificateConfig {
    /// The certificate chain (leaf first), PEM.
    pub cert: PathBuf,
    /// The private key, PEM.
    pub key: PathBuf,
}

/// `[auth]`: who can log in, and how.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// The users file (`tern user add` edits it; the server re-reads it when
    /// it changes). Unset: no password logins.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub users_file: Option<PathBuf>,
    /// SASL mechanisms offered on the submission listeners.
    pub mechanisms: Vec<String>,
    /// Bearer tokens (OAUTHBEARER, XOAUTH2) as JWTs; unset: not offered.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub oauth: Option<OAuthConfig>,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            users_file: None,
            mechanisms: ["PLAIN", "LOGIN", "SCRAM-SHA-256", "CRAM-MD5"]
                .map(str::to_owned)
                .to_vec(),
            oauth: None,
        }
    }
}

/// `[auth.oauth]`: how bearer tokens are validated.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct OAuthConfig {
    /// `HS256` (shared secret), `RS256` or `ES256` (public key).
    pub algorithm: String,
    /// The secret (HS256, raw bytes) or the public key (PEM or DER).
    pub key_file: PathBuf,
    /// Required `iss`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issuer: Option<String>,
    /// Required `aud`: the identifier the identity provider gives Tern.
    /// Mandatory: without it a token the provider issued to any other
    /// application would log in here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audience: Option<String>,
    /// The claim naming the user (default `email`). The user must exist in
    /// `auth.users_file`: a valid token for anyone else is refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_claim: Option<String>,
    /// A scope the token must carry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub required_scope: Option<String>,
}

/// `[submission]`: what authenticated users may do.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct SubmissionConfig {
    /// The envelope sender and `From:` must be the user's own address, one
    /// of their `senders`, or an alias that delivers to them (553 5.7.1).
    pub enforce_sender: bool,
    /// Add `Date:` and `Message-ID:` when missing (RFC 6409 section 8).
    pub fix_headers: bool,
}

impl Default for SubmissionConfig {
    fn default() -> Self {
        SubmissionConfig {
            enforce_sender: true,
            fix_headers: true,
        }
    }
}

/// SMTP protocol policy.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct SmtpConfig {
    /// Bare LF / bare CR in DATA: `reject` (default, anti-smuggling) or
    /// `normalize` (legacy clients; still never ends data early).
    pub bare_line_endings: BareLineEndingsConfig,
    /// Clients that talk before the greeting: `reject` (default) or `allow`.
    pub early_talkers: EarlyTalkersConfig,
    /// Answer VRFY truthfully (default false: 252 without revealing).
    pub vrfy: bool,
    /// Answer EXPN (default false: 502).
    pub expn: bool,
    /// Greeting text after `220 <hostname> `.
    pub greeting: String,
}

impl Default for SmtpConfig {
    fn default() -> Self {
        SmtpConfig {
            bare_line_endings: BareLineEndingsConfig::Reject,
            early_talkers: EarlyTalkersConfig::Reject,
            vrfy: false,
            expn: false,
            greeting: "ESMTP Tern".to_owned(),
        }
    }
}

/// `smtp.bare_line_endings`.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum BareLineEndingsConfig {
    /// Refuse the message with a 5xx.
    Reject,
    /// Store bare LF/CR as CRLF.
    Normalize,
}

/// `smtp.early_talkers`.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum EarlyTalkersConfig {
    /// Answer 554 and disconnect.
    Reject,
    /// Serve them anyway.
    Allow,
}

/// Delivery: local and remote.
#[derive(Debug, Clone, Deserialize, Serialize)]
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
    #[serde(with = "duration_str")]
    pub connection_reuse: Duration,
    /// Deliver to other domains (MX lookup or smarthost). Off: remote
    /// recipients wait in the queue.
    pub remote: bool,
    /// The port remote MX hosts are contacted on (25; tests change it).
    pub remote_port: u16,
    /// Connecting to a remote host may take this long.
    #[serde(with = "duration_str")]
    pub connect_timeout: Duration,
    /// Name in our EHLO (default: `hostname`).
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
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SmarthostConfig {
    /// Host name or IP address.
    pub host: String,
    /// Port (587 for STARTTLS submission, 465 for implicit TLS, 25).
    pub port: u16,
    /// `starttls` (required), `implicit`, or `none`.
    #[serde(default = "default_smarthost_tls")]
    pub tls: String,
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

fn default_smarthost_tls() -> String {
    "starttls".to_owned()
}

/// `[dns]`.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct DnsConfig {
    /// Nameservers as `ip:port`; empty: those in /etc/resolv.conf.
    pub nameservers: Vec<SocketAddr>,
}

/// `[trace]`: the delivery journal (`<data_dir>/journal/`) that
/// `tern trace` reads.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct TraceConfig {
    /// Keep a journal at all.
    pub enabled: bool,
    /// Days of journal kept (whole UTC days).
    #[serde(with = "duration_str")]
    pub retention: Duration,
    /// The journal's files together stay under this many bytes (the
    /// oldest days go first).
    pub max_size: u64,
}

impl Default for TraceConfig {
    fn default() -> Self {
        let r = tern_queue::journal::Retention::default();
        TraceConfig {
            enabled: true,
            retention: r.max_age,
            max_size: r.max_bytes,
        }
    }
}

impl TraceConfig {
    /// The journal's retention.
    pub fn retention(&self) -> tern_queue::journal::Retention {
        tern_queue::journal::Retention {
            max_age: self.retention,
            max_bytes: self.max_size,
        }
    }
}

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
        let l = &self.limits;
        if l.max_recipients == 0 {
            bail!("limits.max_recipients must be at least 1 (RFC 5321 asks for 100)");
        }
        if l.max_command_line < 512 {
            bail!("limits.max_command_line must be at least 512 (RFC 5321 4.5.3.1.4)");
        }
        if l.max_text_line < 1000 {
            bail!("limits.max_text_line must be at least 1000 (RFC 5321 4.5.3.1.6)");
        }
        if l.max_connections == 0 || l.max_connections_per_ip == 0 {
            bail!("limits.max_connections and limits.max_connections_per_ip must be at least 1");
        }
        if l.max_connections_per_network == 0 {
            bail!("limits.max_connections_per_network must be at least 1");
        }
        if l.reserved() >= l.max_connections {
            bail!(
                "limits.reserved_connections ({}) must be less than limits.max_connections ({})",
                l.reserved(),
                l.max_connections
            );
        }
        if l.stress.threshold > 100 {
            bail!("limits.stress.threshold is a percentage of max_connections: 0 (off) to 100");
        }
        if [l.stress.command_timeout, l.stress.data_timeout]
            .iter()
            .any(Duration::is_zero)
        {
            bail!("limits.stress.command_timeout and data_timeout must be positive");
        }
        if l.max_message_size == 0 {
            bail!("limits.max_message_size must be at least 1");
        }
        if l.command_timeout.is_zero()
            || l.data_timeout.is_zero()
            || l.message_data_timeout.is_zero()
        {
            bail!(
                "limits.command_timeout, limits.data_timeout and limits.message_data_timeout must be positive"
            );
        }
        if self.pop3.idle_timeout.is_zero() {
            bail!("pop3.idle_timeout must be positive (RFC 1939 asks for at least 10 minutes)");
        }
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
        if self.pop3.login_delay.subsec_nanos() != 0 {
            bail!("pop3.login_delay must be whole seconds (CAPA announces LOGIN-DELAY in seconds)");
        }
        if self.recipient_delimiter.chars().count() > 1 {
            bail!(
                "recipient_delimiter = {:?}: one character, or \"\" to disable",
                self.recipient_delimiter
            );
        }
        l.abuse
            .validate()
            .map_err(|e| anyhow::anyhow!("[limits.abuse]: {e}"))?;
        for m in &self.auth.mechanisms {
            let mech = tern_sasl::Mechanism::from_name(m)
                .ok_or_else(|| anyhow::anyhow!("auth.mechanisms: unknown SASL mechanism {m:?}"))?;
            if matches!(
                mech,
                tern_sasl::Mechanism::OAuthBearer | tern_sasl::Mechanism::XOAuth2
            ) && self.auth.oauth.is_none()
            {
                bail!("auth.mechanisms: {m} needs an [auth.oauth] section");
            }
        }
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
        if let Some(o) = &self.auth.oauth {
            if !matches!(o.algorithm.as_str(), "HS256" | "RS256" | "ES256") {
                bail!(
                    "auth.oauth.algorithm = {:?}: use HS256, RS256 or ES256",
                    o.algorithm
                );
            }
            if o.audience.as_deref().is_none_or(|a| a.trim().is_empty()) {
                bail!(
                    "auth.oauth.audience is required: the `aud` your identity provider puts \
                     in tokens issued for Tern (without it, a token issued to any other \
                     application would log in here)"
                );
            }
            if self.auth.users_file.is_none() {
                bail!(
                    "[auth.oauth] needs auth.users_file: a token logs in only a user that \
                     exists there"
                );
            }
        }
        if self.tls.handshake_timeout.is_zero() {
            bail!("tls.handshake_timeout must be positive");
        }
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
        if let Some(s) = &self.delivery.smarthost {
            if !matches!(s.tls.as_str(), "starttls" | "implicit" | "none") {
                bail!(
                    "delivery.smarthost.tls = {:?}: use starttls, implicit or none",
                    s.tls
                );
            }
            if s.tls == "none" && s.username.is_some() {
                bail!(
                    "delivery.smarthost: username with tls = \"none\" would send the password \
                     in clear text, which Tern never does: use tls = \"starttls\" or \"implicit\""
                );
            }
            if !s.tls_verify && s.ca_file.is_some() {
                bail!(
                    "delivery.smarthost: ca_file and tls_verify = false contradict each other: \
                     remove tls_verify to verify against ca_file"
                );
            }
        }
        if self.delivery.per_destination == 0 {
            bail!("delivery.per_destination must be at least 1");
        }
        if self.delivery.concurrency == 0 {
            bail!("delivery.concurrency must be at least 1");
        }
        self.validate_filters()?;
        tern_store::Directory::new(self.directory_config()?)
            .map_err(|e| anyhow::anyhow!("[domains]: {e}"))?;
        self.lmtp_targets()?;
        self.dkim_signer()?;
        Ok(())
    }

    /// The `[[filter]]` stages: names, addresses, ranges.
    fn validate_filters(&self) -> anyhow::Result<()> {
        let mut names = std::collections::HashSet::new();
        let mut auth_stages = 0;
        for (i, f) in self.filters.iter().enumerate() {
            let at = format!("[[filter]] #{} ({})", i + 1, f.kind());
            let (roles, timeout) = match f {
                FilterConfig::MailAuth(_) => {
                    auth_stages += 1;
                    if auth_stages > 1 {
                        bail!("{at}: type = \"mail_auth\" may appear once");
                    }
                    continue;
                }
                FilterConfig::Rspamd(r) => {
                    tern_net::filter::Endpoint::parse(&r.url)
                        .map_err(|e| anyhow::anyhow!("{at}: url: {e}"))?;
                    if !r.url.starts_with("http://") && r.url.contains("://") {
                        bail!(
                            "{at}: url = {:?}: only http:// (rspamd on loopback or a Unix socket)",
                            r.url
                        );
                    }
                    if let Some(c) = &r.controller {
                        tern_net::filter::Endpoint::parse(c)
                            .map_err(|e| anyhow::anyhow!("{at}: controller: {e}"))?;
                    }
                    if r.max_size == 0 {
                        bail!("{at}: max_size must be at least 1");
                    }
                    (&r.roles, r.timeout)
                }
                FilterConfig::Milter(m) => {
                    tern_net::filter::Endpoint::parse(&m.address)
                        .map_err(|e| anyhow::anyhow!("{at}: address: {e}"))?;
                    (&m.roles, m.timeout)
                }
                FilterConfig::Clamd(c) => {
                    tern_net::filter::Endpoint::parse(&c.address)
                        .map_err(|e| anyhow::anyhow!("{at}: address: {e}"))?;
                    if c.max_size == 0 {
                        bail!("{at}: max_size must be at least 1 (clamd's StreamMaxLength)");
                    }
                    (&c.roles, c.timeout)
                }
                FilterConfig::Dnsbl(d) => {
                    if d.zones.is_empty() {
                        bail!(
                            "{at}: zones is empty: name at least one list, e.g. zones = [\"zen.spamhaus.org\"]"
                        );
                    }
                    for z in &d.zones {
                        d.zone(z).map_err(|e| anyhow::anyhow!("{at}: zones: {e}"))?;
                    }
                    if !(d.threshold > 0.0 && d.threshold.is_finite()) {
                        bail!("{at}: threshold = {}: must be positive", d.threshold);
                    }
                    (&d.roles, d.timeout)
                }
                FilterConfig::Greylist(g) => {
                    if g.delay.is_zero() || g.retry_window <= g.delay {
                        bail!("{at}: delay must be positive and shorter than retry_window");
                    }
                    if g.expiry <= g.retry_window {
                        bail!("{at}: expiry must be longer than retry_window");
                    }
                    if g.max_entries == 0 {
                        bail!("{at}: max_entries must be at least 1");
                    }
                    (&g.roles, g.timeout)
                }
            };
            if roles.is_empty() {
                bail!("{at}: roles is empty: use [\"mx\"], [\"submission\"] or both");
            }
            if timeout.is_zero() {
                bail!("{at}: timeout must be positive");
            }
            let name = self.filter_name(i);
            if !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
                || name.is_empty()
            {
                bail!("{at}: name = {name:?}: letters, digits, '.', '-' and '_' only");
            }
            if name == "mail_auth" || !names.insert(name.clone()) {
                bail!("{at}: name = {name:?} is used by another stage: give each its own name");
            }
        }
        Ok(())
    }

    /// The name of `[[filter]]` number `index` (0-based): its `name`, or
    /// its type (`milter.N` for the N-th milter).
    pub fn filter_name(&self, index: usize) -> String {
        let f = &self.filters[index];
        let given = match f {
            FilterConfig::MailAuth(_) => return "mail_auth".into(),
            FilterConfig::Rspamd(r) => r.name.clone(),
            FilterConfig::Milter(m) => m.name.clone(),
            FilterConfig::Clamd(c) => c.name.clone(),
            FilterConfig::Dnsbl(d) => d.name.clone(),
            FilterConfig::Greylist(g) => g.name.clone(),
        };
        given.unwrap_or_else(|| match f {
            FilterConfig::Milter(_) => {
                let n = self.filters[..=index]
                    .iter()
                    .filter(|f| matches!(f, FilterConfig::Milter(_)))
                    .count();
                format!("milter.{n}")
            }
            FilterConfig::Clamd(_) => "clamav".into(),
            other => other.kind().into(),
        })
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

    /// The domains delivered over LMTP, by canonical domain name (the
    /// domain part of their mailbox keys), with their servers.
    pub fn lmtp_targets(
        &self,
    ) -> anyhow::Result<std::collections::HashMap<String, tern_delivery::LmtpTarget>> {
        let mut out = std::collections::HashMap::new();
        for (name, domain) in &self.domains {
            let Some(text) = &domain.lmtp else {
                continue;
            };
            let target = tern_delivery::LmtpTarget::parse(text)
                .map_err(|e| anyhow::anyhow!("[domains.{name:?}] lmtp = {text:?}: {e}"))?;
            let d =
                Domain::parse_utf8(name).map_err(|e| anyhow::anyhow!("[domains.{name:?}]: {e}"))?;
            out.insert(d.as_str().to_owned(), target);
        }
        Ok(out)
    }

    /// The directory settings (domains, mailboxes, aliases) in canonical form.
    pub fn directory_config(&self) -> anyhow::Result<DirectoryConfig> {
        let mut cfg = DirectoryConfig {
            domains: Vec::new(),
            mailboxes: Vec::new(),
            aliases: Vec::new(),
            catch_all: Vec::new(),
            recipient_delimiter: self.recipient_delimiter.chars().next(),
            postmaster: self.postmaster.clone(),
        };
        for (name, domain) in &self.domains {
            let d =
                Domain::parse_utf8(name).map_err(|e| anyhow::anyhow!("[domains.{name:?}]: {e}"))?;
            let d = d.as_str().to_owned();
            let qualify = |s: &str, key: &str| -> anyhow::Result<String> {
                match s.split_once('@') {
                    None => Ok(format!("{s}@{d}")),
                    Some((_, dom)) if key == "mailboxes" && !dom.eq_ignore_ascii_case(&d) => {
                        bail!("[domains.{name:?}] mailboxes: {s:?} is not in domain {d}")
                    }
                    Some(_) => Ok(s.to_owned()),
                }
            };
            for m in &domain.mailboxes {
                cfg.mailboxes.push(qualify(m, "mailboxes")?);
            }
            for (alias, targets) in &domain.aliases {
                let key = qualify(alias, "aliases")?;
                let targets = targets
                    .iter()
                    .map(|t| qualify(t, "aliases"))
                    .collect::<anyhow::Result<Vec<_>>>()?;
                cfg.aliases.push((key, targets));
            }
            if let Some(target) = &domain.catch_all {
                cfg.catch_all
                    .push((d.clone(), qualify(target, "catch_all")?));
            }
            cfg.domains.push(d);
        }
        Ok(cfg)
    }

    /// The SASL mechanisms offered on submission listeners.
    pub fn mechanisms(&self) -> Vec<tern_sasl::Mechanism> {
        self.auth
            .mechanisms
            .iter()
            .filter_map(|m| tern_sasl::Mechanism::from_name(m))
            .collect()
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
        ServerConfig {
            hostname: self.hostname.clone(),
            greeting: self.smtp.greeting.clone(),
            max_message_size: l.max_message_size,
            max_recipients: l.max_recipients,
            max_command_line: l.max_command_line,
            max_text_line: l.max_text_line,
            max_errors: l.max_errors,
            max_received_headers: l.max_received_headers,
            bare_line_endings: match self.smtp.bare_line_endings {
                BareLineEndingsConfig::Reject => BareLineEndings::Reject,
                BareLineEndingsConfig::Normalize => BareLineEndings::Normalize,
            },
            vrfy_enabled: self.smtp.vrfy,
            expn_enabled: self.smtp.expn,
            early_talkers: match self.smtp.early_talkers {
                EarlyTalkersConfig::Reject => EarlyTalkerPolicy::Reject,
                EarlyTalkersConfig::Allow => EarlyTalkerPolicy::Allow,
            },
            ..ServerConfig::default()
        }
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

/// An optional [`duration_str`].
mod opt_duration_str {
    use std::time::Duration;

    use serde::{Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => super::duration_str::serialize(d, s),
            None => s.serialize_none(),
        }
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<Duration>, D::Error> {
        super::duration_str::deserialize(d).map(Some)
    }
}

/// Durations written as `300s`, `5m`, `1h`, `250ms` (or a bare number of seconds).
mod duration_str {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer, de};

    pub(super) fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        if d.subsec_millis() != 0 {
            s.serialize_str(&format!("{}ms", d.as_millis()))
        } else {
            s.serialize_str(&format!("{}s", d.as_secs()))
        }
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Secs(u64),
            Text(String),
        }
        match Raw::deserialize(d)? {
            Raw::Secs(n) => Ok(Duration::from_secs(n)),
            Raw::Text(t) => parse(&t).map_err(de::Error::custom),
        }
    }

    /// The workspace's one duration grammar (`tern_types::duration`), a
    /// bare number read as seconds, as in `[limits]`.
    pub(super) fn parse(t: &str) -> Result<Duration, tern_limits::duration::DurationError> {
        tern_limits::duration::parse(t)
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn durations() {
            assert_eq!(parse("300s").unwrap(), Duration::from_secs(300));
            assert_eq!(parse("5m").unwrap(), Duration::from_secs(300));
            assert_eq!(parse("1h").unwrap(), Duration::from_secs(3600));
            assert_eq!(parse("250ms").unwrap(), Duration::from_millis(250));
            assert_eq!(parse("7").unwrap(), Duration::from_secs(7));
            assert_eq!(parse("2d").unwrap(), Duration::from_secs(172_800));
            assert!(parse("5 fortnights").is_err());
            assert!(parse("s").is_err());
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
