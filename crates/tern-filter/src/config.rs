//! The `[[filter]]` tables of the configuration file: the stages an admin
//! writes, in order, with their defaults and their validation.
//!
//! The binary embeds [`Filters`] as its `filter` key and calls
//! [`Filters::validate`] before anything starts; the runtime (`tern-net`'s
//! `filter` module) builds its pipeline from the validated stages. Each
//! table names its `type`; unknown keys are refused, and every error says
//! which table (`[[filter]] #2 (clamd)`) and which key.
//!
//! ```
//! let filters: tern_filter::config::Filters = toml::from_str::<toml::Table>(
//!     "[[filter]]\ntype = \"clamd\"\naddress = \"127.0.0.1:3310\"\n",
//! )
//! .unwrap()["filter"]
//!     .clone()
//!     .try_into()
//!     .unwrap();
//! filters.validate().unwrap();
//! assert_eq!(filters.name(0), "clamav");
//! ```
//!
//! This module never opens a file or a socket: reading a password file or
//! opening the greylist database is the runtime's, when it builds the stage.

use std::collections::HashSet;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tern_limits::duration;

use crate::FailMode;
use crate::clamd::Infected;
use crate::dnsbl::{Zone, ZoneKind};
use crate::endpoint::{Endpoint, EndpointError};
use crate::{Hook, greylist, rspamd};

/// Every `[[filter]]` table, in the order written (the order the stages run in).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(transparent)]
pub struct Filters(pub Vec<FilterConfig>);

impl std::ops::Deref for Filters {
    type Target = [FilterConfig];

    fn deref(&self) -> &[FilterConfig] {
        &self.0
    }
}

/// Each `[[filter]]` table, with its number and type in every error.
impl<'de> Deserialize<'de> for Filters {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
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
            .collect::<Result<Vec<_>, _>>()
            .map(Filters)
    }
}

/// One `[[filter]]` stage: `type` says which, the other keys are that
/// type's. Stages run in the order they are written.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
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

    /// The keys every stage but `mail_auth` has: `roles`, `timeout`, `fail`
    /// (`None` for `mail_auth`, which runs everywhere on its own deadline).
    pub fn common(&self) -> Option<(&[FilterRole], Duration, FailMode)> {
        match self {
            FilterConfig::MailAuth(_) => None,
            FilterConfig::Rspamd(r) => Some((&r.roles, r.timeout, r.fail)),
            FilterConfig::Milter(m) => Some((&m.roles, m.timeout, m.fail)),
            FilterConfig::Clamd(c) => Some((&c.roles, c.timeout, c.fail)),
            FilterConfig::Dnsbl(d) => Some((&d.roles, d.timeout, d.fail)),
            FilterConfig::Greylist(g) => Some((&g.roles, g.timeout, g.fail)),
        }
    }

    fn given_name(&self) -> Option<&str> {
        match self {
            FilterConfig::MailAuth(_) => None,
            FilterConfig::Rspamd(r) => r.name.as_deref(),
            FilterConfig::Milter(m) => m.name.as_deref(),
            FilterConfig::Clamd(c) => c.name.as_deref(),
            FilterConfig::Dnsbl(d) => d.name.as_deref(),
            FilterConfig::Greylist(g) => g.name.as_deref(),
        }
    }
}

impl Filters {
    /// No `[[filter]]` table at all.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The name of stage number `index` (0-based): its `name`, or its type
    /// (`milter.N` for the N-th milter, `clamav` for clamd).
    ///
    /// # Panics
    /// When `index` is out of range.
    pub fn name(&self, index: usize) -> String {
        let f = &self.0[index];
        if let FilterConfig::MailAuth(_) = f {
            return "mail_auth".into();
        }
        if let Some(given) = f.given_name() {
            return given.to_owned();
        }
        match f {
            FilterConfig::Milter(_) => {
                let n = self.0[..=index]
                    .iter()
                    .filter(|f| matches!(f, FilterConfig::Milter(_)))
                    .count();
                format!("milter.{n}")
            }
            FilterConfig::Clamd(_) => "clamav".into(),
            other => other.kind().into(),
        }
    }

    /// Checks what serde cannot: addresses, names, ranges. The error names
    /// the table and the key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let mut names = HashSet::new();
        let mut auth_stages = 0;
        for (i, f) in self.0.iter().enumerate() {
            let at = |problem| ConfigError {
                number: i + 1,
                kind: f.kind(),
                problem,
            };
            match f {
                FilterConfig::MailAuth(_) => {
                    auth_stages += 1;
                    if auth_stages > 1 {
                        return Err(at(Problem::MailAuthTwice));
                    }
                    continue;
                }
                FilterConfig::Rspamd(r) => {
                    r.endpoint().map_err(at)?;
                    if !r.url.starts_with("http://") && r.url.contains("://") {
                        return Err(at(Problem::HttpOnly { url: r.url.clone() }));
                    }
                    r.controller().map_err(at)?;
                    if r.max_size == 0 {
                        return Err(at(Problem::AtLeastOne {
                            key: "max_size",
                            why: "",
                        }));
                    }
                }
                FilterConfig::Milter(m) => {
                    m.endpoint().map_err(at)?;
                }
                FilterConfig::Clamd(c) => {
                    c.endpoint().map_err(at)?;
                    if c.max_size == 0 {
                        return Err(at(Problem::AtLeastOne {
                            key: "max_size",
                            why: " (clamd's StreamMaxLength)",
                        }));
                    }
                }
                FilterConfig::Dnsbl(d) => {
                    if d.zones.is_empty() {
                        return Err(at(Problem::NoZones));
                    }
                    d.zones().map_err(|e| at(Problem::Zone(e)))?;
                    if !(d.threshold > 0.0 && d.threshold.is_finite()) {
                        return Err(at(Problem::Threshold(d.threshold)));
                    }
                }
                FilterConfig::Greylist(g) => {
                    if g.delay.is_zero() || g.retry_window <= g.delay {
                        return Err(at(Problem::DelayNotInWindow));
                    }
                    if g.expiry <= g.retry_window {
                        return Err(at(Problem::ExpiryNotAfterWindow));
                    }
                    if g.max_entries == 0 {
                        return Err(at(Problem::AtLeastOne {
                            key: "max_entries",
                            why: "",
                        }));
                    }
                }
            }
            if let Some((roles, timeout, _)) = f.common() {
                if roles.is_empty() {
                    return Err(at(Problem::NoRoles));
                }
                if timeout.is_zero() {
                    return Err(at(Problem::ZeroTimeout));
                }
            }
            let name = self.name(i);
            if name.is_empty()
                || !name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
            {
                return Err(at(Problem::BadName(name)));
            }
            if name == "mail_auth" || !names.insert(name.clone()) {
                return Err(at(Problem::NameTaken(name)));
            }
        }
        Ok(())
    }
}

/// A `[[filter]]` table that cannot be used: which one, and what is wrong.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
#[error("[[filter]] #{number} ({kind}): {problem}")]
pub struct ConfigError {
    /// The table's position, from 1.
    pub number: usize,
    /// Its `type`.
    pub kind: &'static str,
    /// What is wrong, naming the key.
    pub problem: Problem,
}

impl ConfigError {
    /// Table number `number` (from 1), of type `kind`, has `problem`.
    pub fn new(number: usize, kind: &'static str, problem: Problem) -> ConfigError {
        ConfigError {
            number,
            kind,
            problem,
        }
    }
}

/// What is wrong with one `[[filter]]` table.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum Problem {
    /// A scanner address (`url`, `controller`, `address`) that is none.
    #[error("{key}: {error}")]
    Endpoint {
        /// The key.
        key: &'static str,
        /// Why.
        error: EndpointError,
    },
    /// rspamd is spoken to over plain HTTP only.
    #[error("url = {url:?}: only http:// (rspamd on loopback or a Unix socket)")]
    HttpOnly {
        /// The `url` as written.
        url: String,
    },
    /// A size or count of 0.
    #[error("{key} must be at least 1{why}")]
    AtLeastOne {
        /// The key.
        key: &'static str,
        /// What the value means, in parentheses (or nothing).
        why: &'static str,
    },
    /// `zones = []`.
    #[error("zones is empty: name at least one list, e.g. zones = [\"zen.spamhaus.org\"]")]
    NoZones,
    /// One of `zones` cannot be used.
    #[error("zones: {0}")]
    Zone(ZoneError),
    /// `threshold` not a positive number.
    #[error("threshold = {0}: must be positive")]
    Threshold(f64),
    /// Greylisting's `delay` is 0 or not shorter than `retry_window`.
    #[error("delay must be positive and shorter than retry_window")]
    DelayNotInWindow,
    /// Greylisting's `expiry` is not longer than `retry_window`.
    #[error("expiry must be longer than retry_window")]
    ExpiryNotAfterWindow,
    /// `roles = []`.
    #[error("roles is empty: use [\"mx\"], [\"submission\"] or both")]
    NoRoles,
    /// `timeout = "0s"`.
    #[error("timeout must be positive")]
    ZeroTimeout,
    /// A `name` (given or derived) with other characters.
    #[error("name = {0:?}: letters, digits, '.', '-' and '_' only")]
    BadName(String),
    /// Two stages with one name.
    #[error("name = {0:?} is used by another stage: give each its own name")]
    NameTaken(String),
    /// A second `type = "mail_auth"`.
    #[error("type = \"mail_auth\" may appear once")]
    MailAuthTwice,
}

/// One of a `dnsbl` stage's `zones` that cannot be used.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum ZoneError {
    /// The zone is not a domain name.
    #[error("zone {zone:?}: {error}")]
    Name {
        /// The zone as written.
        zone: String,
        /// Why.
        error: tern_types::AddressError,
    },
    /// `weight` is 0 or not finite.
    #[error("zone {zone:?}: weight = {weight}: must be non-zero (negative for an allowlist)")]
    Weight {
        /// The zone as written.
        zone: String,
        /// The weight.
        weight: f64,
    },
    /// `kind` is none of `auto`, `spamhaus`, `generic`.
    #[error("zone {zone:?}: kind = {kind:?}: use auto, spamhaus or generic")]
    Kind {
        /// The zone as written.
        zone: String,
        /// The kind as written.
        kind: String,
    },
    /// One of `results` is not an IPv4 address or network.
    #[error("zone {zone:?}: results: {result:?} is not an IPv4 address or network")]
    Result {
        /// The zone as written.
        zone: String,
        /// The entry as written.
        result: String,
    },
}

/// Enums written as strings, whose errors name the key and the choices.
macro_rules! keyed_enum {
    ($ty:ty, $key:literal, { $($variant:ident => $text:literal),+ $(,)? }) => {
        impl<'de> Deserialize<'de> for $ty {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                match s.as_str() {
                    $($text => Ok(<$ty>::$variant),)+
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
keyed_enum!(FailMode, "fail", { Open => "open", Closed => "closed" });
keyed_enum!(SpamAction, "spam", { Quarantine => "quarantine", Tag => "tag" });
keyed_enum!(Infected, "infected", { Reject => "reject", Quarantine => "quarantine", Discard => "discard" });
keyed_enum!(DnsblHook, "hook", { Connect => "connect", Rcpt => "rcpt" });

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

fn default_true() -> bool {
    true
}

/// The `[[filter]]` key `key` as a scanner address.
fn endpoint(key: &'static str, text: &str) -> Result<Endpoint, Problem> {
    Endpoint::parse(text).map_err(|error| Problem::Endpoint { key, error })
}

/// `type = "mail_auth"`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct MailAuthStage {}

/// `type = "rspamd"`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RspamdStage {
    /// Name in logs and `X-Tern-Filter:` (default `rspamd`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Listener roles (default `["mx"]`).
    #[serde(default = "default_filter_roles")]
    pub roles: Vec<FilterRole>,
    /// Longest one check may take.
    #[serde(default = "default_filter_timeout", with = "duration")]
    pub timeout: Duration,
    /// `open` or `closed`.
    #[serde(default)]
    pub fail: FailMode,
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
    #[serde(default = "default_true")]
    pub greylist: bool,
    /// Apply rspamd's `milter.add_headers`/`remove_headers` (default true).
    #[serde(default = "default_true")]
    pub milter_headers: bool,
}

fn default_rspamd_max_size() -> u64 {
    20 * 1024 * 1024
}

impl RspamdStage {
    /// `url` as an address.
    pub fn endpoint(&self) -> Result<Endpoint, Problem> {
        endpoint("url", &self.url)
    }

    /// `controller` as an address.
    pub fn controller(&self) -> Result<Option<Endpoint>, Problem> {
        self.controller
            .as_deref()
            .map(|c| endpoint("controller", c))
            .transpose()
    }

    /// How rspamd's actions are applied.
    pub fn policy(&self) -> rspamd::Policy {
        rspamd::Policy {
            quarantine_spam: self.spam == SpamAction::Quarantine,
            greylist: self.greylist,
            milter_headers: self.milter_headers,
        }
    }
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
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct MilterStage {
    /// Name in logs and `X-Tern-Filter:` (default `milter.<N>`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Listener roles (default `["mx"]`).
    #[serde(default = "default_filter_roles")]
    pub roles: Vec<FilterRole>,
    /// Longest one milter call may take.
    #[serde(default = "default_filter_timeout", with = "duration")]
    pub timeout: Duration,
    /// `open` or `closed`.
    #[serde(default)]
    pub fail: FailMode,
    /// `unix:/run/milter.sock` or `inet:11332@127.0.0.1` (Postfix's forms).
    pub address: String,
}

impl MilterStage {
    /// `address` as an address.
    pub fn endpoint(&self) -> Result<Endpoint, Problem> {
        endpoint("address", &self.address)
    }
}

/// `type = "clamd"`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ClamdStage {
    /// Name in logs and `X-Tern-Filter:` (default `clamav`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Listener roles (default `["mx"]`).
    #[serde(default = "default_filter_roles")]
    pub roles: Vec<FilterRole>,
    /// Longest one scan may take.
    #[serde(default = "default_filter_timeout", with = "duration")]
    pub timeout: Duration,
    /// `open` or `closed`.
    #[serde(default)]
    pub fail: FailMode,
    /// `unix:/run/clamav/clamd.ctl` or `127.0.0.1:3310`.
    pub address: String,
    /// clamd's `StreamMaxLength` (default 25 MiB): larger messages are
    /// not scanned.
    #[serde(default = "default_clamd_max_size")]
    pub max_size: u64,
    /// `reject` (554 5.7.1 naming the virus, default), `quarantine` or
    /// `discard`.
    #[serde(default)]
    pub infected: Infected,
}

fn default_clamd_max_size() -> u64 {
    crate::clamd::DEFAULT_STREAM_MAX
}

impl ClamdStage {
    /// `address` as an address.
    pub fn endpoint(&self) -> Result<Endpoint, Problem> {
        endpoint("address", &self.address)
    }
}

/// `type = "dnsbl"`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DnsblStage {
    /// Name in logs and `X-Tern-Filter:` (default `dnsbl`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Listener roles (default `["mx"]`).
    #[serde(default = "default_filter_roles")]
    pub roles: Vec<FilterRole>,
    /// Longest all lookups together may take (default 10s).
    #[serde(default = "default_dnsbl_timeout", with = "duration")]
    pub timeout: Duration,
    /// `open` or `closed` (closed: a list that cannot be asked tempfails).
    #[serde(default)]
    pub fail: FailMode,
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

impl DnsblStage {
    /// The configured lists as [`Zone`]s.
    pub fn zones(&self) -> Result<Vec<Zone>, ZoneError> {
        self.zones.iter().map(DnsblZone::zone).collect()
    }
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

impl From<DnsblHook> for Hook {
    fn from(h: DnsblHook) -> Hook {
        match h {
            DnsblHook::Connect => Hook::Connect,
            DnsblHook::Rcpt => Hook::Rcpt,
        }
    }
}

/// One list: a zone name, or a table.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(untagged)]
pub enum DnsblZone {
    /// `"zen.spamhaus.org"`: weight 1.
    Name(String),
    /// `{ zone = "list.dnswl.org", weight = -2, … }`.
    Table(DnsblZoneTable),
}

/// A list with settings.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
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

impl DnsblZone {
    /// This list as a [`Zone`].
    pub fn zone(&self) -> Result<Zone, ZoneError> {
        let (name, weight, kind, results) = match self {
            DnsblZone::Name(n) => (n.as_str(), 1.0, None, &[][..]),
            DnsblZone::Table(t) => (t.zone.as_str(), t.weight, t.kind.as_deref(), &t.results[..]),
        };
        tern_types::Domain::parse(name.trim_end_matches('.')).map_err(|error| ZoneError::Name {
            zone: name.to_owned(),
            error,
        })?;
        if !weight.is_finite() || weight == 0.0 {
            return Err(ZoneError::Weight {
                zone: name.to_owned(),
                weight,
            });
        }
        let mut zone = Zone::new(name);
        zone.weight = weight;
        zone.kind = match kind {
            None | Some("auto") => ZoneKind::Auto,
            Some("spamhaus") => ZoneKind::Spamhaus,
            Some("generic") => ZoneKind::Generic,
            Some(other) => {
                return Err(ZoneError::Kind {
                    zone: name.to_owned(),
                    kind: other.to_owned(),
                });
            }
        };
        for r in results {
            let net = if r.contains('/') {
                r.parse::<ipnet::Ipv4Net>().ok()
            } else {
                r.parse::<std::net::Ipv4Addr>()
                    .ok()
                    .and_then(|a| ipnet::Ipv4Net::new(a, 32).ok())
            };
            zone.results.push(net.ok_or_else(|| ZoneError::Result {
                zone: name.to_owned(),
                result: r.clone(),
            })?);
        }
        Ok(zone)
    }
}

/// `type = "greylist"`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct GreylistStage {
    /// Name in logs and `X-Tern-Filter:` (default `greylist`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Listener roles (default `["mx"]`).
    #[serde(default = "default_filter_roles")]
    pub roles: Vec<FilterRole>,
    /// Longest one check may take (default 5s).
    #[serde(default = "default_greylist_timeout", with = "duration")]
    pub timeout: Duration,
    /// `open` or `closed` (the database failing).
    #[serde(default)]
    pub fail: FailMode,
    /// How long a new triplet waits (default 300s).
    #[serde(default = "default_grey_delay", with = "duration")]
    pub delay: Duration,
    /// How long a retry counts after the first attempt (default 2d).
    #[serde(default = "default_grey_window", with = "duration")]
    pub retry_window: Duration,
    /// Forget triplets not seen for this long (default 35d).
    #[serde(default = "default_grey_expiry", with = "duration")]
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

impl GreylistStage {
    /// The greylisting core's settings (whole seconds).
    pub fn settings(&self) -> greylist::Settings {
        greylist::Settings {
            delay: self.delay.as_secs(),
            retry_window: self.retry_window.as_secs(),
            expiry: self.expiry.as_secs(),
            auto_allow_after: self.auto_allow_after,
            max_entries: self.max_entries,
            ..greylist::Settings::default()
        }
    }
}

impl fmt::Display for FilterRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            FilterRole::Mx => "mx",
            FilterRole::Submission => "submission",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Filters, String> {
        let table: toml::Table = toml::from_str(text).map_err(|e| e.message().to_owned())?;
        let f: Filters = table["filter"]
            .clone()
            .try_into()
            .map_err(|e: toml::de::Error| e.message().to_owned())?;
        f.validate().map_err(|e| e.to_string())?;
        Ok(f)
    }

    #[test]
    fn defaults_and_names() {
        let f = parse(
            "[[filter]]\ntype = \"mail_auth\"\n\
             [[filter]]\ntype = \"milter\"\naddress = \"unix:/a\"\n\
             [[filter]]\ntype = \"milter\"\naddress = \"unix:/b\"\n\
             [[filter]]\ntype = \"clamd\"\naddress = \"127.0.0.1:3310\"\n\
             [[filter]]\ntype = \"greylist\"\nname = \"grey\"\n",
        )
        .unwrap();
        let names: Vec<String> = (0..f.len()).map(|i| f.name(i)).collect();
        assert_eq!(
            names,
            ["mail_auth", "milter.1", "milter.2", "clamav", "grey"]
        );
        let FilterConfig::Clamd(c) = &f[3] else {
            panic!("{:?}", f[3])
        };
        assert_eq!(c.max_size, crate::clamd::DEFAULT_STREAM_MAX);
        assert_eq!(c.infected, Infected::Reject);
        assert_eq!(
            f[3].common(),
            Some((
                &[FilterRole::Mx][..],
                Duration::from_secs(30),
                FailMode::Open
            ))
        );
        let FilterConfig::Greylist(g) = &f[4] else {
            panic!("{:?}", f[4])
        };
        assert_eq!(g.settings(), greylist::Settings::default());
        assert_eq!(f[0].common(), None);
    }

    #[test]
    fn mistakes_name_the_table_and_the_key() {
        for (text, want) in [
            (
                "type = \"rspamd\"\nurl = \"nowhere\"",
                "[[filter]] #1 (rspamd): url: \"nowhere\": expected host:port or unix:/path",
            ),
            (
                "type = \"rspamd\"\nurl = \"https://h:1\"",
                "[[filter]] #1 (rspamd): url = \"https://h:1\": only http://",
            ),
            (
                "type = \"rspamd\"\nurl = \"http://h:1\"\nbogus = 1",
                "[[filter]] #1 (type = \"rspamd\"): unknown field `bogus`",
            ),
            (
                "type = \"clamd\"\naddress = \"h:1\"\nfail = \"maybe\"",
                "fail = \"maybe\": use open, closed",
            ),
            (
                "type = \"clamd\"\naddress = \"h:1\"\ninfected = \"keep\"",
                "infected = \"keep\": use reject, quarantine, discard",
            ),
            (
                "type = \"clamd\"\naddress = \"h:1\"\nmax_size = 0",
                "max_size must be at least 1 (clamd's StreamMaxLength)",
            ),
            ("type = \"dnsbl\"\nzones = []", "zones is empty"),
            (
                "type = \"dnsbl\"\nzones = [{ zone = \"a.test\", results = [\"x\"] }]",
                "zones: zone \"a.test\": results: \"x\" is not an IPv4",
            ),
            (
                "type = \"dnsbl\"\nzones = [{ zone = \"a.test\", weight = 0 }]",
                "zones: zone \"a.test\": weight = 0: must be non-zero",
            ),
            (
                "type = \"dnsbl\"\nzones = [\"a.test\"]\nthreshold = nan",
                "threshold = NaN",
            ),
            (
                "type = \"greylist\"\nexpiry = \"1d\"",
                "expiry must be longer than retry_window",
            ),
            (
                "type = \"greylist\"\ntimeout = \"0s\"",
                "timeout must be positive",
            ),
            ("type = \"greylist\"\nroles = []", "roles is empty"),
            (
                "type = \"greylist\"\nname = \"a b\"",
                "name = \"a b\": letters",
            ),
            (
                "type = \"greylist\"\nname = \"mail_auth\"",
                "is used by another stage",
            ),
            ("type = \"spamassassin\"", "unknown variant `spamassassin`"),
        ] {
            let err = parse(&format!("[[filter]]\n{text}\n")).unwrap_err();
            assert!(err.contains(want), "{text}: {want:?} not in {err:?}");
        }
        let err = parse("[[filter]]\ntype = \"mail_auth\"\n[[filter]]\ntype = \"mail_auth\"\n")
            .unwrap_err();
        assert_eq!(
            err,
            "[[filter]] #2 (mail_auth): type = \"mail_auth\" may appear once"
        );
    }

    #[test]
    fn zones_are_read_as_written() {
        let f = parse(
            "[[filter]]\ntype = \"dnsbl\"\nhook = \"rcpt\"\nzones = [\"Zen.Spamhaus.org.\", \
             { zone = \"list.dnswl.org\", weight = -2, kind = \"generic\", results = [\"127.0.10.0/24\", \"127.0.0.2\"] }]\n",
        )
        .unwrap();
        let FilterConfig::Dnsbl(d) = &f[0] else {
            panic!("{:?}", f[0])
        };
        assert_eq!(Hook::from(d.hook), Hook::Rcpt);
        let zones = d.zones().unwrap();
        assert_eq!(zones[0], Zone::new("zen.spamhaus.org"));
        assert_eq!(zones[1].weight, -2.0);
        assert_eq!(zones[1].kind, ZoneKind::Generic);
        assert_eq!(
            zones[1].results,
            [
                "127.0.10.0/24".parse().unwrap(),
                "127.0.0.2/32".parse().unwrap()
            ]
        );
    }

    #[test]
    fn written_out_and_read_back_the_same() {
        let f = parse(
            "[[filter]]\ntype = \"rspamd\"\nurl = \"http://127.0.0.1:11333\"\nspam = \"tag\"\ntimeout = \"1500ms\"\n\
             [[filter]]\ntype = \"clamd\"\naddress = \"unix:/run/clamd.ctl\"\ninfected = \"discard\"\nfail = \"closed\"\n\
             [[filter]]\ntype = \"greylist\"\ndelay = \"3m\"\nroles = [\"mx\", \"submission\"]\n",
        )
        .unwrap();
        #[derive(Serialize)]
        struct Doc<'a> {
            filter: &'a Filters,
        }
        let text = toml::to_string(&Doc { filter: &f }).unwrap();
        assert_eq!(parse(&text).unwrap(), f, "{text}");
        let FilterConfig::Rspamd(r) = &f[0] else {
            panic!("{:?}", f[0])
        };
        assert!(!r.policy().quarantine_spam);
    }
}
