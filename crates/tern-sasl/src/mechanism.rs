//! The SASL mechanism names Tern knows.
//!
//! Only names live here: parsing is case-insensitive (RFC 4422 section 3.1
//! names are upper case, but clients vary) and printing gives the
//! registered upper-case form. This module must never decide policy (which
//! mechanisms a listener offers); it only describes each mechanism so the
//! caller can.

use std::fmt;
use std::str::FromStr;

/// A SASL mechanism implemented by [`ServerAuth`](crate::ServerAuth).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Mechanism {
    /// `PLAIN` (RFC 4616): authzid, authcid and password in one message.
    Plain,
    /// `LOGIN` (draft-murchison-sasl-login): user name, then password.
    Login,
    /// `CRAM-MD5` (RFC 2195): HMAC-MD5 over a server challenge.
    CramMd5,
    /// `SCRAM-SHA-256` (RFC 7677), without channel binding.
    ScramSha256,
    /// `OAUTHBEARER` (RFC 7628): an OAuth 2.0 bearer token.
    OAuthBearer,
    /// `XOAUTH2`: Google's older bearer-token mechanism.
    XOAuth2,
}

impl Mechanism {
    /// Every mechanism, strongest first (a sensible order to advertise).
    pub const ALL: [Mechanism; 6] = [
        Mechanism::ScramSha256,
        Mechanism::OAuthBearer,
        Mechanism::XOAuth2,
        Mechanism::CramMd5,
        Mechanism::Plain,
        Mechanism::Login,
    ];

    /// The registered name, upper case, as advertised in `EHLO`.
    pub const fn name(self) -> &'static str {
        match self {
            Mechanism::Plain => "PLAIN",
            Mechanism::Login => "LOGIN",
            Mechanism::CramMd5 => "CRAM-MD5",
            Mechanism::ScramSha256 => "SCRAM-SHA-256",
            Mechanism::OAuthBearer => "OAUTHBEARER",
            Mechanism::XOAuth2 => "XOAUTH2",
        }
    }

    /// Parses a mechanism name, ignoring ASCII case. `None` for names this
    /// crate does not implement (including `SCRAM-SHA-256-PLUS`).
    pub fn from_name(name: &str) -> Option<Mechanism> {
        Mechanism::ALL
            .into_iter()
            .find(|m| m.name().eq_ignore_ascii_case(name))
    }

    /// True for mechanisms whose secret is a user's password (PLAIN, LOGIN,
    /// CRAM-MD5, SCRAM-SHA-256); false for the bearer-token mechanisms.
    pub const fn is_password_based(self) -> bool {
        matches!(
            self,
            Mechanism::Plain | Mechanism::Login | Mechanism::CramMd5 | Mechanism::ScramSha256
        )
    }

    /// True for mechanisms that send a reusable secret (password or bearer
    /// token) as it is: PLAIN, LOGIN, OAUTHBEARER and XOAUTH2. These must only
    /// be offered over TLS.
    pub const fn sends_secret_in_clear(self) -> bool {
        matches!(
            self,
            Mechanism::Plain | Mechanism::Login | Mechanism::OAuthBearer | Mechanism::XOAuth2
        )
    }
}

impl fmt::Display for Mechanism {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A mechanism name this crate does not implement.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unsupported SASL mechanism")]
pub struct UnknownMechanism;

impl FromStr for Mechanism {
    type Err = UnknownMechanism;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Mechanism::from_name(s).ok_or(UnknownMechanism)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_case_insensitively() {
        for m in Mechanism::ALL {
            assert_eq!(Mechanism::from_name(m.name()), Some(m));
            assert_eq!(Mechanism::from_name(&m.name().to_lowercase()), Some(m));
            assert_eq!(m.to_string(), m.name());
        }
        assert_eq!("cram-md5".parse::<Mechanism>(), Ok(Mechanism::CramMd5));
        assert_eq!(
            Mechanism::from_name("Scram-Sha-256"),
            Some(Mechanism::ScramSha256)
        );
    }

    #[test]
    fn unknown_names_are_refused() {
        for name in [
            "",
            "SCRAM-SHA-256-PLUS",
            "SCRAM-SHA-1",
            "GSSAPI",
            "PLAIN ",
            "ANONYMOUS",
        ] {
            assert_eq!(Mechanism::from_name(name), None, "{name:?}");
        }
        assert_eq!("NTLM".parse::<Mechanism>(), Err(UnknownMechanism));
    }

    #[test]
    fn classification() {
        assert!(Mechanism::Plain.is_password_based());
        assert!(Mechanism::ScramSha256.is_password_based());
        assert!(!Mechanism::OAuthBearer.is_password_based());
        assert!(!Mechanism::XOAuth2.is_password_based());
        assert!(Mechanism::Login.sends_secret_in_clear());
        assert!(Mechanism::XOAuth2.sends_secret_in_clear());
        assert!(!Mechanism::CramMd5.sends_secret_in_clear());
        assert!(!Mechanism::ScramSha256.sends_secret_in_clear());
    }
}
