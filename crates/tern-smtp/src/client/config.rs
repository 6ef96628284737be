//! How a session is set up: [`ClientConfig`], STARTTLS policy, AUTH credentials.

use std::fmt;

use tern_types::{AddressLiteral, Domain};
use zeroize::Zeroizing;

use super::replies::ReplyLimits;
use crate::reply::MAX_REPLY_LINE;

/// Whether to use STARTTLS (RFC 3207).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum StartTlsPolicy {
    /// Use it when offered (RFC 7435); without it, or when the server
    /// refuses it, go on in plaintext. A failed handshake ends the session
    /// and lets the driver retry without TLS.
    #[default]
    Opportunistic,
    /// Deliver only over TLS: no STARTTLS offered, or refused, ends the
    /// session (temporary failure).
    Required,
    /// Never use STARTTLS.
    Disabled,
}

/// A SASL mechanism this client can use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthMechanism {
    /// RFC 4616, with an initial response.
    Plain,
    /// The LOGIN mechanism (user name, then password, each in a 334 round).
    Login,
}

impl AuthMechanism {
    /// The name as advertised.
    pub fn as_str(self) -> &'static str {
        match self {
            AuthMechanism::Plain => "PLAIN",
            AuthMechanism::Login => "LOGIN",
        }
    }
}

/// Credentials for a smarthost. `Debug` never shows the password, which
/// is zeroed on drop.
#[derive(Clone)]
pub struct ClientAuth {
    /// The mechanism to use; the server must offer it.
    pub mechanism: AuthMechanism,
    /// The user name (authentication identity).
    pub username: String,
    /// The password.
    pub password: Zeroizing<String>,
}

impl ClientAuth {
    /// Credentials for `mechanism`.
    pub fn new(
        mechanism: AuthMechanism,
        username: impl Into<String>,
        password: impl Into<String>,
    ) -> ClientAuth {
        ClientAuth {
            mechanism,
            username: username.into(),
            password: Zeroizing::new(password.into()),
        }
    }
}

impl fmt::Debug for ClientAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientAuth")
            .field("mechanism", &self.mechanism)
            .field("username", &self.username)
            .field("password", &"***")
            .finish()
    }
}

/// Which protocol the session speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Protocol {
    /// SMTP (RFC 5321): EHLO with HELO fallback, one reply to the end of
    /// data for the whole message.
    #[default]
    Smtp,
    /// LMTP (RFC 2033): LHLO, always pipelined, one reply per accepted
    /// recipient after the end of data.
    Lmtp,
}

/// The session's configuration (per destination; share it with an `Arc`).
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// Our name in EHLO/HELO (LHLO with LMTP): a domain or an address
    /// literal.
    pub helo_name: String,
    /// SMTP or LMTP.
    pub protocol: Protocol,
    /// STARTTLS policy.
    pub starttls: StartTlsPolicy,
    /// AUTH credentials (smarthosts). Sent only under TLS unless
    /// `allow_insecure_auth`.
    pub auth: Option<ClientAuth>,
    /// Send credentials without TLS (a smarthost on a trusted network).
    pub allow_insecure_auth: bool,
    /// Use PIPELINING when the server offers it (with LMTP: always).
    pub pipelining: bool,
    /// Bounds on the server's replies.
    pub reply_limits: ReplyLimits,
}

impl ClientConfig {
    /// SMTP, opportunistic STARTTLS, no AUTH, PIPELINING when offered.
    pub fn new(helo_name: impl Into<String>) -> ClientConfig {
        ClientConfig {
            helo_name: helo_name.into(),
            protocol: Protocol::Smtp,
            starttls: StartTlsPolicy::Opportunistic,
            auth: None,
            allow_insecure_auth: false,
            pipelining: true,
            reply_limits: ReplyLimits::default(),
        }
    }

    /// Checks the values the session would otherwise send unchecked.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let name = &self.helo_name;
        let valid_name = if name.starts_with('[') {
            AddressLiteral::parse(name).is_ok()
        } else {
            Domain::parse(name).is_ok()
        };
        if !valid_name {
            return Err(ConfigError::InvalidHeloName);
        }
        if let Some(auth) = &self.auth
            && (auth.username.is_empty()
                || auth.username.contains('\0')
                || auth.password.contains('\0'))
        {
            return Err(ConfigError::InvalidCredentials);
        }
        if self.reply_limits.max_line < MAX_REPLY_LINE || self.reply_limits.max_lines == 0 {
            return Err(ConfigError::InvalidLimits);
        }
        Ok(())
    }
}

/// A [`ClientConfig`] that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// `helo_name` is not an ASCII domain or an address literal.
    #[error("helo_name must be an ASCII domain or an address literal")]
    InvalidHeloName,
    /// An empty user name, or a NUL in the user name or password.
    #[error("AUTH user name is empty, or the user name or password contains NUL")]
    InvalidCredentials,
    /// `max_line` below 512 or `max_lines` of 0.
    #[error("reply limits below what RFC 5321 allows servers to send")]
    InvalidLimits,
}
