//! The configuration sections the runtime owns: `[limits]` (sizes, counts,
//! session timeouts, connection caps) with `[limits.stress]` (stress mode)
//! and `[limits.abuse]` ([`tern_limits::AbuseConfig`]); `[imap]` and
//! `[pop3]`, the services on the mail store. (`[submission]` is read
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

use std::time::Duration;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use tern_limits::duration;

use crate::conn::{StressTimeouts, Timeouts};
use crate::limits::ConnectionLimiter;
use crate::pop3::DeleteMode;

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
}
