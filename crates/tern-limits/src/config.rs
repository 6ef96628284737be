//! Configuration of the abuse limits, as the binary embeds it in its TOML
//! under `[limits.abuse]`.
//!
//! Every struct has sane defaults (so an empty section, or none, is a
//! working configuration), refuses unknown keys, and is validated by
//! [`AbuseConfig::validate`]. A limit of `0` switches that limit off.
//!
//! ```toml
//! [limits.abuse]
//! ipv6_prefix = 64
//! connections_per_ip = { limit = 60, window = "1m" }
//! messages_per_user = { limit = 500, window = "1h" }
//! recipients_per_user = { limit = 2000, window = "1h" }
//!
//! [limits.abuse.auth]
//! block_ip_after = 10
//! block_user_after = 20
//! failure_window = "15m"
//! block_for = "15m"
//!
//! [limits.abuse.tarpit]
//! free_errors = 3
//! ```

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::duration;

/// Default capacity of every per-key table.
pub const DEFAULT_MAX_KEYS: usize = 100_000;

fn default_max_keys() -> usize {
    DEFAULT_MAX_KEYS
}

/// Invalid abuse-limit settings. Each names the key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// A key's value is out of range.
    #[error("limits.abuse.{key}: {problem}")]
    Invalid {
        /// The dotted key below `limits.abuse`.
        key: String,
        /// What is wrong with it.
        problem: String,
    },
}

fn invalid(key: &str, problem: &str) -> ConfigError {
    ConfigError::Invalid {
        key: key.to_owned(),
        problem: problem.to_owned(),
    }
}

/// Everything under `[limits.abuse]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct AbuseConfig {
    /// IPv6 clients are counted per prefix of this length (see
    /// [`client_key`](crate::client_key)); IPv4 clients per address.
    pub ipv6_prefix: u8,
    /// New connections per client address.
    pub connections_per_ip: RateConfig,
    /// Messages accepted per authenticated user.
    pub messages_per_user: RateConfig,
    /// Recipients accepted per authenticated user.
    pub recipients_per_user: RateConfig,
    /// Failed `AUTH`: delays and temporary blocks.
    pub auth: AuthFailureConfig,
    /// Delays after protocol errors within a session.
    pub tarpit: TarpitConfig,
}

impl Default for AbuseConfig {
    fn default() -> Self {
        AbuseConfig {
            ipv6_prefix: 64,
            connections_per_ip: RateConfig::new(60, Duration::from_secs(60)),
            messages_per_user: RateConfig::new(500, Duration::from_secs(3600)),
            recipients_per_user: RateConfig::new(2000, Duration::from_secs(3600)),
            auth: AuthFailureConfig::default(),
            tarpit: TarpitConfig::default(),
        }
    }
}

impl AbuseConfig {
    /// Checks every value; the error names the offending key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.ipv6_prefix > 128 {
            return Err(invalid("ipv6_prefix", "must be between 0 and 128"));
        }
        self.connections_per_ip.validate("connections_per_ip")?;
        self.messages_per_user.validate("messages_per_user")?;
        self.recipients_per_user.validate("recipients_per_user")?;
        self.auth.validate()?;
        self.tarpit.validate()
    }
}

/// At most `limit` events per key in any `window` (`limit = 0`: no limit).
///
/// Both `limit` and `window` must be given when the table is written, since
/// a default for one alone would be meaningless.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RateConfig {
    /// Events allowed per window; 0 switches the limit off.
    pub limit: u32,
    /// Length of the sliding window.
    #[serde(with = "duration")]
    pub window: Duration,
    /// Keys tracked at most; when full, the least recently seen is forgotten.
    #[serde(default = "default_max_keys")]
    pub max_keys: usize,
}

impl RateConfig {
    /// `limit` events per `window`, tracking [`DEFAULT_MAX_KEYS`] keys.
    pub fn new(limit: u32, window: Duration) -> Self {
        RateConfig {
            limit,
            window,
            max_keys: DEFAULT_MAX_KEYS,
        }
    }

    fn validate(&self, key: &str) -> Result<(), ConfigError> {
        if self.limit > 0 && self.window.is_zero() {
            return Err(invalid(&format!("{key}.window"), "must be longer than 0s"));
        }
        if self.max_keys == 0 {
            return Err(invalid(&format!("{key}.max_keys"), "must be at least 1"));
        }
        Ok(())
    }
}

/// Failed authentication: a growing delay before each attempt, and
/// temporary blocks of client addresses and user names.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthFailureConfig {
    /// Failures (counted as described in
    /// [`AuthFailureTracker`](crate::AuthFailureTracker)) before the first delay.
    pub free_failures: u32,
    /// The first delay; each further failure doubles it.
    #[serde(with = "duration")]
    pub initial_delay: Duration,
    /// The longest delay.
    #[serde(with = "duration")]
    pub max_delay: Duration,
    /// Failures from one client address within `failure_window` that block
    /// the address (0: never).
    pub block_ip_after: u32,
    /// Failures for one user name within `failure_window` that block the
    /// name, except from addresses it recently logged in from (0: never).
    pub block_user_after: u32,
    /// How far back failures are counted.
    #[serde(with = "duration")]
    pub failure_window: Duration,
    /// How long a block lasts.
    #[serde(with = "duration")]
    pub block_for: Duration,
    /// How long a successful login from an address exempts that address
    /// from a block of the user name (so an attacker cannot lock a user out).
    #[serde(with = "duration")]
    pub remember_success_for: Duration,
    /// Addresses, user names, and address+name pairs tracked at most (each).
    pub max_keys: usize,
}

impl Default for AuthFailureConfig {
    fn default() -> Self {
        AuthFailureConfig {
            free_failures: 0,
            initial_delay: Duration::from_secs(1),
            max_delay: Duration::from_secs(8),
            block_ip_after: 10,
            block_user_after: 20,
            failure_window: Duration::from_secs(15 * 60),
            block_for: Duration::from_secs(15 * 60),
            remember_success_for: Duration::from_secs(7 * 86_400),
            max_keys: DEFAULT_MAX_KEYS,
        }
    }
}

impl AuthFailureConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        if self.max_delay < self.initial_delay {
            return Err(invalid(
                "auth.max_delay",
                "must not be shorter than auth.initial_delay",
            ));
        }
        if self.failure_window.is_zero() {
            return Err(invalid("auth.failure_window", "must be longer than 0s"));
        }
        if (self.block_ip_after > 0 || self.block_user_after > 0) && self.block_for.is_zero() {
            return Err(invalid("auth.block_for", "must be longer than 0s"));
        }
        if self.max_keys == 0 {
            return Err(invalid("auth.max_keys", "must be at least 1"));
        }
        Ok(())
    }
}

/// Delays after protocol errors in one session: none for the first
/// `free_errors`, then `initial_delay`, doubling up to `max_delay`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct TarpitConfig {
    /// Errors answered without delay.
    pub free_errors: u32,
    /// Delay after the first error past `free_errors` (0s: no tarpit).
    #[serde(with = "duration")]
    pub initial_delay: Duration,
    /// The longest delay.
    #[serde(with = "duration")]
    pub max_delay: Duration,
}

impl Default for TarpitConfig {
    fn default() -> Self {
        TarpitConfig {
            free_errors: 3,
            initial_delay: Duration::from_secs(1),
            max_delay: Duration::from_secs(10),
        }
    }
}

impl TarpitConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        if self.max_delay < self.initial_delay {
            return Err(invalid(
                "tarpit.max_delay",
                "must not be shorter than tarpit.initial_delay",
            ));
        }
        Ok(())
    }
}

/// `initial * 2^(n - free)`, capped at `max`, for the n-th event (counting
/// from 1); zero for the first `free` events.
pub(crate) fn doubling_delay(n: u64, free: u32, initial: Duration, max: Duration) -> Duration {
    if n <= u64::from(free) || initial.is_zero() {
        return Duration::ZERO;
    }
    let doublings = u32::try_from(n - u64::from(free) - 1).unwrap_or(u32::MAX);
    let factor = 1u32.checked_shl(doublings.min(31)).unwrap_or(u32::MAX);
    initial.saturating_mul(factor).min(max)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Wrapper {
        #[serde(default)]
        abuse: AbuseConfig,
    }

    fn parse(text: &str) -> Result<AbuseConfig, toml::de::Error> {
        toml::from_str::<Wrapper>(text).map(|w| w.abuse)
    }

    #[test]
    fn empty_section_is_the_defaults() {
        let c = parse("[abuse]\n").unwrap();
        assert_eq!(c, AbuseConfig::default());
        assert_eq!(parse("").unwrap(), AbuseConfig::default());
        c.validate().unwrap();
        assert_eq!(c.connections_per_ip.limit, 60);
        assert_eq!(c.messages_per_user.window, Duration::from_secs(3600));
        assert_eq!(c.recipients_per_user.limit, 2000);
        assert_eq!(c.auth.block_ip_after, 10);
        assert_eq!(c.auth.block_user_after, 20);
        assert_eq!(c.tarpit.free_errors, 3);
    }

    #[test]
    fn full_example_parses() {
        let c = parse(
            r#"
[abuse]
ipv6_prefix = 56
connections_per_ip = { limit = 30, window = "30s" }
messages_per_user = { limit = 100, window = "1h", max_keys = 5000 }
recipients_per_user = { limit = 0, window = "1h" }
[abuse.auth]
free_failures = 1
initial_delay = "500ms"
max_delay = "4s"
block_ip_after = 5
failure_window = "10m"
block_for = "1h"
[abuse.tarpit]
free_errors = 1
max_delay = 30
"#,
        )
        .unwrap();
        c.validate().unwrap();
        assert_eq!(c.ipv6_prefix, 56);
        assert_eq!(
            c.connections_per_ip,
            RateConfig::new(30, Duration::from_secs(30))
        );
        assert_eq!(c.messages_per_user.max_keys, 5000);
        assert_eq!(c.recipients_per_user.limit, 0);
        assert_eq!(c.auth.initial_delay, Duration::from_millis(500));
        assert_eq!(c.auth.block_user_after, 20, "unset keys keep their default");
        assert_eq!(c.auth.block_for, Duration::from_secs(3600));
        assert_eq!(c.tarpit.max_delay, Duration::from_secs(30));
    }

    #[test]
    fn unknown_keys_are_named() {
        let err = parse("[abuse]\nconnection_rate = 5\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("connection_rate"), "{err}");
        let err = parse("[abuse.auth]\nblock_after = 5\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("block_after"), "{err}");
        let err = parse("[abuse]\nmessages_per_user = { limit = 5 }\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("window"), "{err}");
        let err = parse("[abuse.tarpit]\ninitial_delay = \"1 fortnight\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("fortnight"), "{err}");
    }

    #[test]
    fn validation_names_the_key() {
        let mut c = AbuseConfig::default();
        c.messages_per_user.window = Duration::ZERO;
        assert_eq!(
            c.validate().unwrap_err().to_string(),
            "limits.abuse.messages_per_user.window: must be longer than 0s"
        );
        c.messages_per_user.limit = 0;
        c.validate().unwrap();

        let c = AbuseConfig {
            ipv6_prefix: 129,
            ..AbuseConfig::default()
        };
        assert!(
            c.validate()
                .unwrap_err()
                .to_string()
                .contains("ipv6_prefix")
        );

        let mut c = AbuseConfig::default();
        c.auth.max_delay = Duration::from_millis(10);
        assert!(
            c.validate()
                .unwrap_err()
                .to_string()
                .contains("auth.max_delay")
        );

        let mut c = AbuseConfig::default();
        c.tarpit.initial_delay = Duration::from_secs(60);
        assert!(
            c.validate()
                .unwrap_err()
                .to_string()
                .contains("tarpit.max_delay")
        );

        let mut c = AbuseConfig::default();
        c.auth.max_keys = 0;
        assert!(
            c.validate()
                .unwrap_err()
                .to_string()
                .contains("auth.max_keys")
        );

        let mut c = AbuseConfig::default();
        c.connections_per_ip.max_keys = 0;
        assert!(
            c.validate()
                .unwrap_err()
                .to_string()
                .contains("connections_per_ip.max_keys")
        );
    }

    #[test]
    fn serialises_back_to_the_same_config() {
        #[derive(Serialize)]
        struct Out<'a> {
            abuse: &'a AbuseConfig,
        }
        let c = AbuseConfig::default();
        let text = toml::to_string(&Out { abuse: &c }).unwrap();
        assert!(text.contains("\"15m\""), "{text}");
        assert_eq!(parse(&text).unwrap(), c);
    }

    #[test]
    fn doubling_delay_grows_and_caps() {
        let s = Duration::from_secs;
        let d = |n| doubling_delay(n, 0, s(1), s(8));
        assert_eq!(
            (0..7).map(d).collect::<Vec<_>>(),
            [s(0), s(1), s(2), s(4), s(8), s(8), s(8)]
        );
        assert_eq!(doubling_delay(u64::MAX, 0, s(1), s(8)), s(8));
        assert_eq!(doubling_delay(3, 3, s(1), s(8)), s(0));
        assert_eq!(doubling_delay(4, 3, s(1), s(8)), s(1));
        assert_eq!(doubling_delay(9, 0, Duration::ZERO, s(8)), s(0));
    }
}
