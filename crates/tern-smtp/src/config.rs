//! The `[smtp]` section of the configuration file: the SMTP server's
//! protocol policy (bare line endings, early talkers, VRFY, EXPN, the
//! greeting text). This crate owns the section, since the session it
//! configures ([`ServerConfig`]) is here; the binary embeds [`SmtpConfig`]
//! as its `smtp` key.
//!
//! ```
//! use tern_smtp::config::SmtpConfig;
//! use tern_smtp::server::{BareLineEndings, ServerConfig};
//! let smtp: SmtpConfig = toml::from_str("bare_line_endings = \"normalize\"").unwrap();
//! let session = smtp.apply(ServerConfig::default());
//! assert_eq!(session.bare_line_endings, BareLineEndings::Normalize);
//! assert_eq!(session.greeting, "ESMTP Tern");
//! ```
//!
//! Like the rest of the crate it does no I/O: it is values and their
//! (de)serialisation.

use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::server::{BareLineEndings, EarlyTalkerPolicy, ServerConfig};

/// `[smtp]`: SMTP protocol policy.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct SmtpConfig {
    /// Bare LF / bare CR in DATA: `reject` (default, anti-smuggling) or
    /// `normalize` (legacy clients; still never ends data early).
    pub bare_line_endings: BareLineEndings,
    /// Clients that talk before the greeting: `reject` (default) or `allow`.
    pub early_talkers: EarlyTalkerPolicy,
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
            bare_line_endings: BareLineEndings::Reject,
            early_talkers: EarlyTalkerPolicy::Reject,
            vrfy: false,
            expn: false,
            greeting: "ESMTP Tern".to_owned(),
        }
    }
}

impl SmtpConfig {
    /// `session` with this policy.
    pub fn apply(&self, session: ServerConfig) -> ServerConfig {
        ServerConfig {
            greeting: self.greeting.clone(),
            bare_line_endings: self.bare_line_endings,
            vrfy_enabled: self.vrfy,
            expn_enabled: self.expn,
            early_talkers: self.early_talkers,
            ..session
        }
    }
}

/// A policy enum written as one of `names` (in variant order).
fn read_choice<'de, D: Deserializer<'de>, T: Copy>(
    d: D,
    names: &'static [&'static str],
    values: &[T],
) -> Result<T, D::Error> {
    let text = String::deserialize(d)?;
    names
        .iter()
        .position(|n| *n == text)
        .map(|i| values[i])
        .ok_or_else(|| D::Error::unknown_variant(&text, names))
}

const BARE_LINE_ENDINGS: &[&str] = &["reject", "normalize"];
const EARLY_TALKERS: &[&str] = &["reject", "allow"];

impl Serialize for BareLineEndings {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(match self {
            BareLineEndings::Reject => BARE_LINE_ENDINGS[0],
            BareLineEndings::Normalize => BARE_LINE_ENDINGS[1],
        })
    }
}

impl<'de> Deserialize<'de> for BareLineEndings {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        read_choice(
            d,
            BARE_LINE_ENDINGS,
            &[BareLineEndings::Reject, BareLineEndings::Normalize],
        )
    }
}

impl Serialize for EarlyTalkerPolicy {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(match self {
            EarlyTalkerPolicy::Reject => EARLY_TALKERS[0],
            EarlyTalkerPolicy::Allow => EARLY_TALKERS[1],
        })
    }
}

impl<'de> Deserialize<'de> for EarlyTalkerPolicy {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        read_choice(
            d,
            EARLY_TALKERS,
            &[EarlyTalkerPolicy::Reject, EarlyTalkerPolicy::Allow],
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_the_safe_ones() {
        let c: SmtpConfig = toml::from_str("").unwrap();
        assert_eq!(c, SmtpConfig::default());
        let s = c.apply(ServerConfig::default());
        assert_eq!(s.bare_line_endings, BareLineEndings::Reject);
        assert_eq!(s.early_talkers, EarlyTalkerPolicy::Reject);
        assert!(!s.vrfy_enabled && !s.expn_enabled);
    }

    #[test]
    fn every_key_and_its_mistakes() {
        let c: SmtpConfig = toml::from_str(
            "bare_line_endings = \"normalize\"\nearly_talkers = \"allow\"\nvrfy = true\n\
             expn = true\ngreeting = \"hi\"\n",
        )
        .unwrap();
        let s = c.apply(ServerConfig::default());
        assert_eq!(s.bare_line_endings, BareLineEndings::Normalize);
        assert_eq!(s.early_talkers, EarlyTalkerPolicy::Allow);
        assert!(s.vrfy_enabled && s.expn_enabled);
        assert_eq!(s.greeting, "hi");
        assert_eq!(
            toml::from_str::<SmtpConfig>(&toml::to_string(&c).unwrap()).unwrap(),
            c
        );
        for (text, want) in [
            (
                "bare_line_endings = \"sometimes\"",
                "unknown variant `sometimes`, expected `reject` or `normalize`",
            ),
            (
                "early_talkers = \"x\"",
                "unknown variant `x`, expected `reject` or `allow`",
            ),
            ("vrfy = 1", "invalid type: integer `1`, expected a boolean"),
            ("bogus = 1", "unknown field `bogus`"),
        ] {
            let err = toml::from_str::<SmtpConfig>(text).unwrap_err().to_string();
            assert!(err.contains(want), "{text}: {want:?} not in {err}");
        }
    }
}
