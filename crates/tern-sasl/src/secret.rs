//! Wrappers for the secrets a client hands over: passwords and bearer tokens.
//!
//! They exist so a secret can travel from the SASL machine to the user
//! directory without ever being printable: `Debug` shows `***`, there is no
//! `Display`, and the memory is zeroed on drop. They must never gain a
//! `Display`, `Serialize` or a `Debug` that shows the contents.

use std::fmt;
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

/// A password received from a client (PLAIN, LOGIN). Valid UTF-8, never
/// empty, without NUL. Equality is constant-time in the contents.
#[derive(Clone)]
pub struct Password(Zeroizing<String>);

impl Password {
    pub(crate) fn new(password: String) -> Password {
        Password(Zeroizing::new(password))
    }

    /// The password, for handing to the password hash verifier.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The password's UTF-8 bytes.
    pub fn as_bytes(&self) -> &[u8] {
        self.0.as_bytes()
    }
}

impl PartialEq for Password {
    fn eq(&self, other: &Password) -> bool {
        self.as_bytes().ct_eq(other.as_bytes()).into()
    }
}

impl Eq for Password {}

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Password(***)")
    }
}

/// An OAuth 2.0 bearer token received from a client (OAUTHBEARER, XOAUTH2).
/// Made of RFC 6750 `b64token` characters only. Equality is constant-time
/// in the contents.
#[derive(Clone)]
pub struct Token(Zeroizing<String>);

impl Token {
    pub(crate) fn new(token: String) -> Token {
        Token(Zeroizing::new(token))
    }

    /// The token, for handing to the validator (for example
    /// [`JwtValidator::validate`](crate::jwt::JwtValidator::validate)).
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl PartialEq for Token {
    fn eq(&self, other: &Token) -> bool {
        self.0.as_bytes().ct_eq(other.0.as_bytes()).into()
    }
}

impl Eq for Token {}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token(***)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_is_redacted() {
        let p = Password::new("hunter2".into());
        let t = Token::new("eyJhbGciOi.secret.sig".into());
        assert_eq!(format!("{p:?}"), "Password(***)");
        assert_eq!(format!("{t:#?}"), "Token(***)");
        assert_eq!(p.as_str(), "hunter2");
        assert_eq!(p.as_bytes(), b"hunter2");
        assert_eq!(t.as_str(), "eyJhbGciOi.secret.sig");
        assert_eq!(p, Password::new("hunter2".into()));
        assert_ne!(p, Password::new("hunter3".into()));
        assert_ne!(p, Password::new("hunter".into()));
        assert_ne!(t, Token::new("other".into()));
    }
}
