//! The configuration sections the runtime owns: `[limits]` (sizes, counts,
//! session timeouts, connection caps) with `[limits.stress]` (stress mode)
//! and `[limits.abuse]` ([`tern_limits::AbuseConfig`]); `[tls]` (the
//! certificates); `[auth]` (who can log in, and how); `[imap]` and `[pop3]`, the services on the mail store. (`[submission]` is read
//! straight into [`SubmissionPolicy`](crate::SubmissionPolicy).)
//!
//! Each section has its defaults here, refuses unknown keys and is checked
//! by its `validate`, whose errors name the key below the section
//! (`max_recipients must be at least 1 …`); the binary embeds the section
//! and puts its name before the message. Nothing here opens a socket.
//!
//! ```
//! let l: tern_net::config::LimitsConfig =
//!     toml::from_str("max_connections = 40\n[stress]\nthreshold = 50\n").unwrap();
//! l.validate().unwrap();
//! assert_eq!(l.reserved(), 2);
//! assert_eq!(l.timeouts().command, std::time::Duration::from_secs(300));
//! ```

use std::path::PathBuf;
use std::time::Duration;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use tern_limits::duration;

use crate::conn::{StressTimeouts, Timeouts};
use crate::limits::ConnectionLimiter;
use crate::pop3::DeleteMode;
use crate::tls::{CertPair, TlsSettings};
use tern_sasl::Mechanism;
use tern_sasl::jwt::{JwtConfig, JwtKey, JwtValidator};

/// `[limits]` (invariant 5: everything is bounded).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
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
    #[serde(with = "duration")]
    pub command_timeout: Duration,
    /// Time to wait for a block of message data (4.5.3.2.5: 3 minutes).
    #[serde(with = "duration")]
    pub data_timeout: Duration,
    /// Pause before the greeting to catch early talkers (0s = none).
    #[serde(with = "duration")]
    pub greet_pause: Duration,
    /// Minimum message data rate, bytes/s, after 30 s (0 = off).
    pub min_data_rate: u64,
    /// The longest one message's data may take in all (30 minutes).
    #[serde(with = "duration")]
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

impl Default for LimitsConfig {
    fn default() -> Self {
        let t = Timeouts::default();
        LimitsConfig {
            max_message_size: 52_428_800,
            max_recipients: 100,
            max_connections: 1000,
            max_connections_per_ip: 50,
            max_errors: 20,
            max_command_line: 512,
            max_text_line: 1000,
            max_received_headers: 100,
            command_timeout: t.command,
            data_timeout: t.data,
            greet_pause: t.greet_pause,
            min_data_rate: t.min_data_rate,
            message_data_timeout: t.message_data,
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

/// `[limits.stress]`: from `threshold` % of `max_connections` sessions,
/// timeouts shrink so that sessions that say nothing leave fast.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct StressConfig {
    /// Percent of `max_connections` at which stress mode starts (it ends
    /// below 80 % of that); 0 switches stress mode off.
    pub threshold: u8,
    /// Command timeout (the greeting's answer included) under stress.
    #[serde(with = "duration")]
    pub command_timeout: Duration,
    /// Data block timeout under stress.
    #[serde(with = "duration")]
    pub data_timeout: Duration,
    /// How long message data may arrive before `min_data_rate` applies.
    #[serde(with = "duration")]
    pub min_rate_grace: Duration,
    /// The longest error tarpit delay under stress.
    #[serde(with = "duration")]
    pub tarpit: Duration,
}

impl Default for StressConfig {
    fn default() -> Self {
        let t = StressTimeouts::default();
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
    pub fn timeouts(&self) -> StressTimeouts {
        StressTimeouts {
            command: self.command_timeout,
            data: self.data_timeout,
            min_rate_grace: self.min_rate_grace,
            tarpit: self.tarpit,
        }
    }
}

/// A `[limits]` setting out of range. The text names the key below
/// `limits`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// A value below its least (`why`: the standard that asks for it).
    #[error("{key} must be at least {least}{why}")]
    TooSmall {
        /// The key.
        key: &'static str,
        /// The least value.
        least: u64,
        /// Why, in parentheses (or nothing).
        why: &'static str,
    },
    /// `max_connections` or `max_connections_per_ip` is 0.
    #[error("max_connections and limits.max_connections_per_ip must be at least 1")]
    NoConnections,
    /// No slot left for anyone but the trusted networks.
    #[error("reserved_connections ({reserved}) must be less than limits.max_connections ({max})")]
    AllReserved {
        /// The reserved slots.
        reserved: usize,
        /// `max_connections`.
        max: usize,
    },
    /// `stress.threshold` above 100.
    #[error("stress.threshold is a percentage of max_connections: 0 (off) to 100")]
    StressThreshold,
    /// A stress timeout of 0.
    #[error("stress.command_timeout and data_timeout must be positive")]
    StressTimeout,
    /// A session timeout of 0.
    #[error(
        "command_timeout, limits.data_timeout and limits.message_data_timeout must be positive"
    )]
    Timeout,
    /// A `[limits.abuse]` value out of range (its text names the whole key).
    #[error("{0}")]
    Abuse(tern_limits::ConfigError),
}

impl LimitsConfig {
    /// The slots kept for trusted networks.
    pub fn reserved(&self) -> usize {
        self.reserved_connections
            .unwrap_or(self.max_connections / 20)
    }

    /// Checks the ranges serde cannot.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let too_small = |key, least, why| ConfigError::TooSmall { key, least, why };
        if self.max_recipients == 0 {
            return Err(too_small("max_recipients", 1, " (RFC 5321 asks for 100)"));
        }
        if self.max_command_line < 512 {
            return Err(too_small("max_command_line", 512, " (RFC 5321 4.5.3.1.4)"));
        }
        if self.max_text_line < 1000 {
            return Err(too_small("max_text_line", 1000, " (RFC 5321 4.5.3.1.6)"));
        }
        if self.max_connections == 0 || self.max_connections_per_ip == 0 {
            return Err(ConfigError::NoConnections);
        }
        if self.max_connections_per_network == 0 {
            return Err(too_small("max_connections_per_network", 1, ""));
        }
        if self.reserved() >= self.max_connections {
            return Err(ConfigError::AllReserved {
                reserved: self.reserved(),
                max: self.max_connections,
            });
        }
        if self.stress.threshold > 100 {
            return Err(ConfigError::StressThreshold);
        }
        if self.stress.command_timeout.is_zero() || self.stress.data_timeout.is_zero() {
            return Err(ConfigError::StressTimeout);
        }
        if self.max_message_size == 0 {
            return Err(too_small("max_message_size", 1, ""));
        }
        if self.command_timeout.is_zero()
            || self.data_timeout.is_zero()
            || self.message_data_timeout.is_zero()
        {
            return Err(ConfigError::Timeout);
        }
        self.abuse.validate().map_err(ConfigError::Abuse)
    }

    /// The session timeouts.
    pub fn timeouts(&self) -> Timeouts {
        Timeouts {
            command: self.command_timeout,
            data: self.data_timeout,
            greet_pause: self.greet_pause,
            min_data_rate: self.min_data_rate,
            message_data: self.message_data_timeout,
            stress: self.stress.timeouts(),
        }
    }

    /// The networks the rate limits and the per-address caps exempt:
    /// `rate_limit_exceptions` and the `trusted` networks.
    pub fn exempt(&self, trusted: &[IpNet]) -> Vec<IpNet> {
        self.rate_limit_exceptions
            .iter()
            .chain(trusted)
            .copied()
            .collect()
    }

    /// The connection limiter of these caps; `trusted` clients get the
    /// reserved slots.
    pub fn connection_limiter(&self, trusted: &[IpNet]) -> ConnectionLimiter {
        ConnectionLimiter::new(
            self.max_connections,
            self.max_connections_per_ip,
            self.abuse.ipv6_prefix,
        )
        .with_per_network(self.max_connections_per_network)
        .with_stress_percent(self.stress.threshold)
        .with_exempt(self.exempt(trusted))
        .with_trusted(trusted.to_vec(), self.reserved())
    }
}

/// `[tls]`: certificates. With none, Tern generates a self-signed one into
/// `data_dir/tls` (fine for tests, not for the Internet).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    /// PEM files: full chain and key. Chosen by SNI; the first is the default.
    pub certificates: Vec<CertPair>,
    /// Longest a TLS handshake may take.
    #[serde(with = "duration")]
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

/// A `[tls]` setting out of range. The text names the key below `tls`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TlsConfigError {
    /// `handshake_timeout = "0s"`.
    #[error("handshake_timeout must be positive")]
    HandshakeTimeout,
}

impl TlsConfig {
    /// Checks the ranges serde cannot.
    pub fn validate(&self) -> Result<(), TlsConfigError> {
        if self.handshake_timeout.is_zero() {
            return Err(TlsConfigError::HandshakeTimeout);
        }
        Ok(())
    }

    /// What the TLS manager loads: these certificates, or a self-signed
    /// one for `hostname` kept in `<data_dir>/tls`.
    pub fn settings(&self, data_dir: &std::path::Path, hostname: &str) -> TlsSettings {
        TlsSettings {
            certificates: self.certificates.clone(),
            self_signed_dir: data_dir.join("tls"),
            hostname: hostname.to_owned(),
        }
    }
}

/// `[auth]`: who can log in, and how.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// The users file (`tern user add` edits it; the server re-reads it when
    /// it changes). Unset: no password logins.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub users_file: Option<PathBuf>,
    /// SASL mechanisms offered on the submission listeners (names as in
    /// EHLO, any case).
    #[serde(with = "mechanism_names")]
    pub mechanisms: Vec<Mechanism>,
    /// Bearer tokens (OAUTHBEARER, XOAUTH2) as JWTs; unset: not offered.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub oauth: Option<OAuthConfig>,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            users_file: None,
            mechanisms: vec![
                Mechanism::Plain,
                Mechanism::Login,
                Mechanism::ScramSha256,
                Mechanism::CramMd5,
            ],
            oauth: None,
        }
    }
}

/// `auth.mechanisms`: SASL mechanisms by name.
mod mechanism_names {
    use serde::de::Error as _;
    use serde::{Deserialize, Deserializer, Serializer};
    use tern_sasl::Mechanism;

    pub(super) fn serialize<S: Serializer>(m: &[Mechanism], s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(m.iter().map(|m| m.name()))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Mechanism>, D::Error> {
        Vec::<String>::deserialize(d)?
            .iter()
            .map(|m| {
                Mechanism::from_name(m).ok_or_else(|| {
                    D::Error::custom(format!("auth.mechanisms: unknown SASL mechanism {m:?}"))
                })
            })
            .collect()
    }
}

/// `[auth.oauth]`: how bearer tokens are validated.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct OAuthConfig {
    /// `HS256` (shared secret), `RS256` or `ES256` (public key).
    pub algorithm: JwtAlgorithm,
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

/// `auth.oauth.algorithm`: how tokens are signed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JwtAlgorithm {
    /// HMAC-SHA256 with a shared secret.
    Hs256,
    /// RSA PKCS#1 v1.5 with SHA-256.
    Rs256,
    /// ECDSA P-256 with SHA-256.
    Es256,
}

impl JwtAlgorithm {
    const ALL: [JwtAlgorithm; 3] = [
        JwtAlgorithm::Hs256,
        JwtAlgorithm::Rs256,
        JwtAlgorithm::Es256,
    ];

    /// The JWS `alg` name, as written in the configuration.
    pub fn name(self) -> &'static str {
        match self {
            JwtAlgorithm::Hs256 => "HS256",
            JwtAlgorithm::Rs256 => "RS256",
            JwtAlgorithm::Es256 => "ES256",
        }
    }

    /// The verification key of this algorithm from the key file's bytes.
    pub fn key(self, bytes: Vec<u8>) -> JwtKey {
        match self {
            JwtAlgorithm::Hs256 => JwtKey::Hs256(bytes),
            JwtAlgorithm::Rs256 => JwtKey::Rs256(bytes),
            JwtAlgorithm::Es256 => JwtKey::Es256(bytes),
        }
    }
}

impl Serialize for JwtAlgorithm {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

impl<'de> Deserialize<'de> for JwtAlgorithm {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        JwtAlgorithm::ALL
            .into_iter()
            .find(|a| a.name() == text)
            .ok_or_else(|| {
                serde::de::Error::custom(format!(
                    "auth.oauth.algorithm = {text:?}: use HS256, RS256 or ES256"
                ))
            })
    }
}

/// An `[auth]` setting that cannot be used. The text names the key below
/// `auth`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AuthConfigError {
    /// A bearer-token mechanism without `[auth.oauth]`.
    #[error("mechanisms: {0} needs an [auth.oauth] section")]
    NeedsOAuth(Mechanism),
    /// `[auth.oauth]` without `audience`.
    #[error(
        "oauth.audience is required: the `aud` your identity provider puts in tokens issued \
         for Tern (without it, a token issued to any other application would log in here)"
    )]
    NoAudience,
    /// `[auth.oauth]` without `users_file`.
    #[error("oauth needs users_file: a token logs in only a user that exists there")]
    NoUsersFile,
    /// The key file cannot be read.
    #[error("oauth.key_file: cannot read {}: {error}", path.display())]
    KeyFile {
        /// The file.
        path: PathBuf,
        /// Why.
        error: std::io::Error,
    },
    /// The key is not one of its algorithm.
    #[error("oauth: {0}")]
    Key(tern_sasl::jwt::JwtConfigError),
}

impl AuthConfig {
    /// Checks what serde cannot: the bearer-token mechanisms need
    /// `[auth.oauth]`, which needs an audience and the users file.
    pub fn validate(&self) -> Result<(), AuthConfigError> {
        if let Some(m) = self
            .mechanisms
            .iter()
            .find(|m| matches!(m, Mechanism::OAuthBearer | Mechanism::XOAuth2))
            .filter(|_| self.oauth.is_none())
        {
            return Err(AuthConfigError::NeedsOAuth(*m));
        }
        if let Some(o) = &self.oauth {
            if o.audience.as_deref().is_none_or(|a| a.trim().is_empty()) {
                return Err(AuthConfigError::NoAudience);
            }
            if self.users_file.is_none() {
                return Err(AuthConfigError::NoUsersFile);
            }
        }
        Ok(())
    }
}

impl OAuthConfig {
    /// The token validator: reads `key_file`.
    pub fn validator(&self) -> Result<JwtValidator, AuthConfigError> {
        let key = std::fs::read(&self.key_file).map_err(|error| AuthConfigError::KeyFile {
            path: self.key_file.clone(),
            error,
        })?;
        let mut cfg = JwtConfig::new(self.algorithm.key(key));
        cfg.issuer = self.issuer.clone();
        cfg.audience = self.audience.clone();
        if let Some(claim) = &self.user_claim {
            cfg.user_claim = claim.clone();
        }
        cfg.required_scope = self.required_scope.clone();
        JwtValidator::new(cfg).map_err(AuthConfigError::Key)
    }
}

/// `[imap]`: the IMAP service and the mail store it serves.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
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
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Pop3Config {
    /// What QUIT does with the messages a client deleted: `"expunge"`
    /// removes them, `"move-to-trash"` moves them to the `\Trash` mailbox.
    pub delete_mode: DeleteMode,
    /// The autologout timer (RFC 1939: at least 10 minutes). A session
    /// timed out deletes nothing.
    #[serde(with = "duration")]
    pub idle_timeout: Duration,
    /// The least time between two logins of a user (RFC 2449
    /// `LOGIN-DELAY`, whole seconds): announced in CAPA, and a login
    /// sooner gets `-ERR [LOGIN-DELAY]`. `"0s"` (the default): none.
    #[serde(with = "duration")]
    pub login_delay: Duration,
}

impl Default for Pop3Config {
    fn default() -> Self {
        Pop3Config {
            delete_mode: DeleteMode::Expunge,
            idle_timeout: crate::pop3::DEFAULT_IDLE_TIMEOUT,
            login_delay: Duration::ZERO,
        }
    }
}

/// A `[pop3]` setting out of range. The text names the key below `pop3`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Pop3ConfigError {
    /// `idle_timeout = "0s"`.
    #[error("idle_timeout must be positive (RFC 1939 asks for at least 10 minutes)")]
    IdleTimeout,
    /// A `login_delay` with a fraction of a second.
    #[error("login_delay must be whole seconds (CAPA announces LOGIN-DELAY in seconds)")]
    LoginDelay,
}

impl Pop3Config {
    /// Checks the ranges serde cannot.
    pub fn validate(&self) -> Result<(), Pop3ConfigError> {
        if self.idle_timeout.is_zero() {
            return Err(Pop3ConfigError::IdleTimeout);
        }
        if self.login_delay.subsec_nanos() != 0 {
            return Err(Pop3ConfigError::LoginDelay);
        }
        Ok(())
    }
}

const DELETE_MODES: &[&str] = &["expunge", "move-to-trash"];

impl Serialize for DeleteMode {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(match self {
            DeleteMode::Expunge => DELETE_MODES[0],
            DeleteMode::MoveToTrash => DELETE_MODES[1],
        })
    }
}

impl<'de> Deserialize<'de> for DeleteMode {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        match text.as_str() {
            "expunge" => Ok(DeleteMode::Expunge),
            "move-to-trash" => Ok(DeleteMode::MoveToTrash),
            _ => Err(serde::de::Error::unknown_variant(&text, DELETE_MODES)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<LimitsConfig, String> {
        let l: LimitsConfig = toml::from_str(text).map_err(|e| e.message().to_owned())?;
        l.validate().map_err(|e| e.to_string())?;
        Ok(l)
    }

    #[test]
    fn defaults() {
        let l = parse("").unwrap();
        assert_eq!(l, LimitsConfig::default());
        assert_eq!(l.max_recipients, 100);
        assert_eq!(l.reserved(), 50);
        assert_eq!(
            l.rate_limit_exceptions,
            [
                "127.0.0.0/8".parse::<IpNet>().unwrap(),
                "::1/128".parse().unwrap()
            ]
        );
        let t = l.timeouts();
        assert_eq!(t.command, Duration::from_secs(300));
        assert_eq!(t.data, Duration::from_secs(180));
        assert_eq!(t.message_data, Duration::from_secs(1800));
        assert_eq!(t.min_data_rate, 500);
        assert_eq!(l.stress.threshold, 70);
        assert_eq!(l.stress.timeouts().command, Duration::from_secs(10));
        let trusted: Vec<IpNet> = vec!["192.0.2.0/24".parse().unwrap()];
        assert_eq!(l.exempt(&trusted).len(), 3);
    }

    #[test]
    fn mistakes_name_the_key() {
        for (text, want) in [
            ("max_recipients = 0", "max_recipients must be at least 1"),
            (
                "max_command_line = 100",
                "max_command_line must be at least 512",
            ),
            ("max_text_line = 999", "max_text_line must be at least 1000"),
            (
                "max_connections_per_ip = 0",
                "max_connections_per_ip must be at least 1",
            ),
            (
                "max_connections_per_network = 0",
                "max_connections_per_network must be",
            ),
            (
                "reserved_connections = 1000",
                "reserved_connections (1000) must be less",
            ),
            (
                "max_message_size = 0",
                "max_message_size must be at least 1",
            ),
            ("data_timeout = \"0s\"", "limits.data_timeout"),
            ("command_timeout = \"soon\"", "invalid duration \"soon\""),
            ("max_mesage_size = 5", "unknown field `max_mesage_size`"),
            (
                "[stress]\nthreshold = 101",
                "stress.threshold is a percentage",
            ),
            ("[stress]\ncommand_timeout = 0", "stress.command_timeout"),
            ("[abuse]\nipv6_prefix = 129", "limits.abuse.ipv6_prefix"),
        ] {
            let err = parse(text).unwrap_err();
            assert!(err.contains(want), "{text}: {want:?} not in {err:?}");
        }
    }

    #[test]
    fn written_out_and_read_back_the_same() {
        let l = parse(
            "greet_pause = \"250ms\"\ncommand_timeout = 90\nreserved_connections = 3\n\
             [stress]\ntarpit = \"2s\"\n",
        )
        .unwrap();
        assert_eq!(l.greet_pause, Duration::from_millis(250));
        assert_eq!(l.command_timeout, Duration::from_secs(90));
        let text = toml::to_string(&l).unwrap();
        assert_eq!(parse(&text).unwrap(), l, "{text}");
    }

    #[test]
    fn imap_and_pop3() {
        let i: ImapConfig = toml::from_str("quota = 100").unwrap();
        assert_eq!(i.quota, Some(100));
        assert_eq!(i.append_limit, 52_428_800);
        assert_eq!(i.max_sessions_per_user, 20);
        let p: Pop3Config = toml::from_str("").unwrap();
        assert_eq!(p, Pop3Config::default());
        assert_eq!(p.idle_timeout, Duration::from_secs(600));
        let p: Pop3Config =
            toml::from_str("delete_mode = \"move-to-trash\"\nlogin_delay = \"5m\"").unwrap();
        assert_eq!(p.delete_mode, DeleteMode::MoveToTrash);
        p.validate().unwrap();
        assert_eq!(
            toml::from_str::<Pop3Config>(&toml::to_string(&p).unwrap()).unwrap(),
            p
        );
        for (text, want) in [
            ("delete_mode = \"shred\"", "unknown variant `shred`"),
            ("apop = true", "unknown field `apop`"),
        ] {
            let err = toml::from_str::<Pop3Config>(text).unwrap_err().to_string();
            assert!(err.contains(want), "{text}: {err}");
        }
        for (text, want) in [
            ("idle_timeout = \"0s\"", Pop3ConfigError::IdleTimeout),
            ("login_delay = \"1500ms\"", Pop3ConfigError::LoginDelay),
        ] {
            let p: Pop3Config = toml::from_str(text).unwrap();
            assert_eq!(p.validate(), Err(want), "{text}");
        }
    }

    #[test]
    fn auth_mechanisms_and_oauth() {
        let a: AuthConfig = toml::from_str("").unwrap();
        assert_eq!(a, AuthConfig::default());
        let names: Vec<&str> = a.mechanisms.iter().map(|m| m.name()).collect();
        assert_eq!(names, ["PLAIN", "LOGIN", "SCRAM-SHA-256", "CRAM-MD5"]);
        a.validate().unwrap();
        let a: AuthConfig = toml::from_str("mechanisms = [\"plain\", \"XOAUTH2\"]").unwrap();
        assert_eq!(a.mechanisms, [Mechanism::Plain, Mechanism::XOAuth2]);
        assert_eq!(
            a.validate().unwrap_err().to_string(),
            "mechanisms: XOAUTH2 needs an [auth.oauth] section"
        );
        let err = toml::from_str::<AuthConfig>("mechanisms = [\"NTLM\"]").unwrap_err();
        assert!(
            err.to_string()
                .contains("auth.mechanisms: unknown SASL mechanism \"NTLM\""),
            "{err}"
        );
        let err = toml::from_str::<AuthConfig>("[oauth]\nalgorithm = \"none\"\nkey_file = \"k\"")
            .unwrap_err();
        assert!(
            err.to_string().contains("use HS256, RS256 or ES256"),
            "{err}"
        );
        let a: AuthConfig = toml::from_str(
            "mechanisms = [\"OAUTHBEARER\"]\n[oauth]\nalgorithm = \"HS256\"\nkey_file = \"/nonexistent/k\"",
        )
        .unwrap();
        assert!(matches!(a.validate(), Err(AuthConfigError::NoAudience)));
        let mut a = a;
        a.oauth.as_mut().unwrap().audience = Some("tern".into());
        assert!(matches!(a.validate(), Err(AuthConfigError::NoUsersFile)));
        a.users_file = Some("users.toml".into());
        a.validate().unwrap();
        assert!(matches!(
            a.oauth.as_ref().unwrap().validator(),
            Err(AuthConfigError::KeyFile { .. })
        ));
        assert_eq!(
            toml::from_str::<AuthConfig>(&toml::to_string(&a).unwrap()).unwrap(),
            a
        );
    }

    #[test]
    fn tls_certificates() {
        let t: TlsConfig = toml::from_str("").unwrap();
        assert_eq!(t, TlsConfig::default());
        t.validate().unwrap();
        let t: TlsConfig = toml::from_str(
            "handshake_timeout = \"10s\"\n[[certificates]]\ncert = \"/c.pem\"\nkey = \"/k.pem\"\n",
        )
        .unwrap();
        let s = t.settings(std::path::Path::new("/data"), "mx.example.test");
        assert_eq!(
            s.certificates,
            [CertPair {
                cert: "/c.pem".into(),
                key: "/k.pem".into()
            }]
        );
        assert_eq!(s.self_signed_dir, std::path::Path::new("/data/tls"));
        assert_eq!(
            toml::from_str::<TlsConfig>(&toml::to_string(&t).unwrap()).unwrap(),
            t
        );
        let t: TlsConfig = toml::from_str("handshake_timeout = 0").unwrap();
        assert_eq!(t.validate(), Err(TlsConfigError::HandshakeTimeout));
        assert!(
            toml::from_str::<TlsConfig>("[[certificates]]\ncert = \"c\"\nkey = \"k\"\nchain = 1")
                .is_err()
        );
    }
}
