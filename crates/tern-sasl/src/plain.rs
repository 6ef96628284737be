//! Parsing of the PLAIN message (RFC 4616) and of LOGIN's two answers.
//!
//! Pure functions from client bytes to identities and a [`Password`]; the
//! step machine in [`crate::exchange`] decides what to do with them. This
//! module must never log or return the password in an error, and never
//! accept an identity with control characters (identities reach logs).

use crate::saslprep::is_clean_identity;
use crate::secret::Password;

/// What a PLAIN message carries, validated.
#[derive(Debug)]
pub(crate) struct PlainCredentials {
    pub(crate) authcid: String,
    /// `None` when absent or equal to `authcid`.
    pub(crate) authzid: Option<String>,
    pub(crate) password: Password,
}

/// Why a PLAIN or LOGIN message was refused. Never contains client bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PlainError {
    /// Not exactly three NUL-separated fields.
    Fields,
    /// A field is not UTF-8.
    Utf8,
    /// authcid or password empty.
    Empty,
    /// An identity contains a control character.
    Control,
}

impl PlainError {
    pub(crate) fn reason(self) -> &'static str {
        match self {
            PlainError::Fields => "PLAIN message must be authzid NUL authcid NUL password",
            PlainError::Utf8 => "credentials must be UTF-8",
            PlainError::Empty => "empty user name or password",
            PlainError::Control => "control character in an identity",
        }
    }
}

/// `message = [authzid] UTF8NUL authcid UTF8NUL passwd` (RFC 4616 section 2).
pub(crate) fn parse_plain(message: &[u8]) -> Result<PlainCredentials, PlainError> {
    let mut fields = message.split(|&b| b == 0);
    let (Some(authzid), Some(authcid), Some(password), None) =
        (fields.next(), fields.next(), fields.next(), fields.next())
    else {
        return Err(PlainError::Fields);
    };
    let authcid = parse_identity(authcid)?;
    let authzid = if authzid.is_empty() {
        None
    } else {
        Some(parse_identity(authzid)?)
    };
    let password = parse_password(password)?;
    let authzid = authzid.filter(|z| *z != authcid);
    Ok(PlainCredentials {
        authcid,
        authzid,
        password,
    })
}

/// A user name: non-empty UTF-8 without NUL or other control characters.
pub(crate) fn parse_identity(bytes: &[u8]) -> Result<String, PlainError> {
    if bytes.is_empty() {
        return Err(PlainError::Empty);
    }
    let s = std::str::from_utf8(bytes).map_err(|_| PlainError::Utf8)?;
    if !is_clean_identity(s) {
        return Err(PlainError::Control);
    }
    Ok(s.to_owned())
}

/// A password: non-empty UTF-8 without NUL, moved straight into a
/// zeroizing [`Password`].
pub(crate) fn parse_password(bytes: &[u8]) -> Result<Password, PlainError> {
    if bytes.is_empty() {
        return Err(PlainError::Empty);
    }
    if bytes.contains(&0) {
        return Err(PlainError::Fields);
    }
    let s = std::str::from_utf8(bytes).map_err(|_| PlainError::Utf8)?;
    Ok(Password::new(s.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc4616_examples() {
        // RFC 4616 section 4: "\0tim\0tanstaaftanstaaf".
        let c = parse_plain(b"\0tim\0tanstaaftanstaaf").unwrap();
        assert_eq!(c.authcid, "tim");
        assert_eq!(c.authzid, None);
        assert_eq!(c.password.as_str(), "tanstaaftanstaaf");
        // "Ursel\0Kurt\0xipj3plmq": Kurt acts as Ursel.
        let c = parse_plain(b"Ursel\0Kurt\0xipj3plmq").unwrap();
        assert_eq!(c.authcid, "Kurt");
        assert_eq!(c.authzid.as_deref(), Some("Ursel"));
        assert_eq!(c.password.as_str(), "xipj3plmq");
    }

    #[test]
    fn authzid_equal_to_authcid_is_dropped() {
        let c = parse_plain(b"kurt\0kurt\0pw").unwrap();
        assert_eq!(c.authzid, None);
    }

    #[test]
    fn malformed_messages() {
        let cases: &[(&[u8], PlainError)] = &[
            (b"", PlainError::Fields),
            (b"tim\0tanstaaf", PlainError::Fields),
            (b"\0tim\0pw\0", PlainError::Fields),
            (b"\0tim\0pw\0extra", PlainError::Fields),
            (b"\0\0pw", PlainError::Empty),
            (b"\0tim\0", PlainError::Empty),
            (b"\0t\xffm\0pw", PlainError::Utf8),
            (b"\xc3\0tim\0pw", PlainError::Utf8),
            (b"\0tim\0p\xffw", PlainError::Utf8),
            (b"\0tim\r\nRCPT\0pw", PlainError::Control),
            (b"a\x07\0tim\0pw", PlainError::Control),
        ];
        for (input, want) in cases {
            assert_eq!(parse_plain(input).err(), Some(*want), "{input:?}");
        }
    }

    #[test]
    fn utf8_passwords_and_names() {
        let c = parse_plain("\0José\0pässwörd ✓".as_bytes()).unwrap();
        assert_eq!(c.authcid, "José");
        assert_eq!(c.password.as_str(), "pässwörd ✓");
    }

    #[test]
    fn errors_never_carry_the_password() {
        let e = parse_plain(b"\0tim\0secret\xff").unwrap_err();
        assert!(!format!("{e:?} {}", e.reason()).contains("secret"));
    }
}
