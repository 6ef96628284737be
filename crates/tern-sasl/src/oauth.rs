//! OAUTHBEARER (RFC 7628) and XOAUTH2 messages: parsing and error replies.
//!
//! Extracts the bearer token and the user the client claims to be; the
//! token itself is validated by the caller (see [`crate::jwt`]). This
//! module must never put a token into an error, a log field or a reply.

use crate::saslprep::is_clean_identity;
use crate::scram::{ScramError, parse_gs2_header};
use crate::secret::Token;

/// What an OAUTHBEARER or XOAUTH2 client message carries.
#[derive(Debug)]
pub(crate) struct BearerMessage {
    pub(crate) token: Token,
    pub(crate) user_hint: Option<String>,
}

/// Why a bearer message was refused. Never carries client bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BearerError {
    ChannelBinding,
    Syntax(&'static str),
}

impl BearerError {
    pub(crate) fn reason(self) -> &'static str {
        match self {
            BearerError::ChannelBinding => "channel binding is not supported",
            BearerError::Syntax(what) => what,
        }
    }
}

/// `b64token = 1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/" ) *"="`
/// (RFC 6750 section 2.1).
fn is_b64token(s: &str) -> bool {
    let body = s.trim_end_matches('=');
    !body.is_empty()
        && body.bytes().all(|b| {
            b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b'+' | b'/')
        })
}

/// `auth-value = "Bearer" 1*SP b64token`; the scheme is matched ignoring case.
fn parse_auth_value(value: &str) -> Result<Token, BearerError> {
    let bad = BearerError::Syntax("auth must be \"Bearer\" followed by a token");
    let scheme = value.get(..6).ok_or(bad)?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(bad);
    }
    let rest = &value[6..];
    let token = rest.trim_start_matches(' ');
    if token.len() == rest.len() || !is_b64token(token) {
        return Err(bad);
    }
    Ok(Token::new(token.to_owned()))
}

/// The `\x01`-separated key/value pairs between the first `\x01` and the
/// closing `\x01\x01`. Returns the `auth` value and the other pairs are
/// checked for shape only (`host`, `port` and extensions carry nothing Tern
/// uses).
fn parse_kvpairs<'a>(
    pairs: &'a str,
    mut on_pair: impl FnMut(&'a str, &'a str) -> Result<(), BearerError>,
) -> Result<(), BearerError> {
    for pair in pairs.split('\x01') {
        let (key, value) = pair
            .split_once('=')
            .ok_or(BearerError::Syntax("key=value pair expected"))?;
        if key.is_empty() || !key.bytes().all(|b| b.is_ascii_alphabetic()) {
            return Err(BearerError::Syntax("bad key in a key=value pair"));
        }
        if !value
            .bytes()
            .all(|b| (0x21..=0x7e).contains(&b) || matches!(b, b' ' | b'\t' | b'\r' | b'\n'))
        {
            return Err(BearerError::Syntax("bad value in a key=value pair"));
        }
        on_pair(key, value)?;
    }
    Ok(())
}

/// `gs2-header kvsep *(kvpair) kvsep` (RFC 7628 section 3.1).
pub(crate) fn parse_oauthbearer(msg: &[u8]) -> Result<BearerMessage, BearerError> {
    let msg = std::str::from_utf8(msg).map_err(|_| BearerError::Syntax("message is not UTF-8"))?;
    let gs2 = parse_gs2_header(msg).map_err(|e| match e {
        ScramError::ChannelBinding => BearerError::ChannelBinding,
        _ => BearerError::Syntax("bad GS2 header"),
    })?;
    let pairs = msg[gs2.len..]
        .strip_prefix('\x01')
        .and_then(|rest| rest.strip_suffix("\x01\x01"))
        .ok_or(BearerError::Syntax(
            "key=value pairs must be framed by \\x01",
        ))?;
    let mut token = None;
    parse_kvpairs(pairs, |key, value| {
        if key == "auth" {
            if token.is_some() {
                return Err(BearerError::Syntax("auth given twice"));
            }
            token = Some(parse_auth_value(value)?);
        }
        Ok(())
    })?;
    Ok(BearerMessage {
        token: token.ok_or(BearerError::Syntax("auth=Bearer token missing"))?,
        user_hint: gs2.authzid,
    })
}

/// `user=USER \x01 auth=Bearer TOKEN \x01 \x01` (Google's XOAUTH2).
pub(crate) fn parse_xoauth2(msg: &[u8]) -> Result<BearerMessage, BearerError> {
    let msg = std::str::from_utf8(msg).map_err(|_| BearerError::Syntax("message is not UTF-8"))?;
    let pairs = msg
        .strip_suffix("\x01\x01")
        .ok_or(BearerError::Syntax("message must end with \\x01\\x01"))?;
    let mut token = None;
    let mut user = None;
    parse_kvpairs(pairs, |key, value| {
        match key {
            "auth" if token.is_none() => token = Some(parse_auth_value(value)?),
            "user" if user.is_none() => {
                if !is_clean_identity(value) {
                    return Err(BearerError::Syntax("bad user name"));
                }
                user = Some(value.to_owned());
            }
            "auth" | "user" => return Err(BearerError::Syntax("key given twice")),
            _ => {}
        }
        Ok(())
    })?;
    Ok(BearerMessage {
        token: token.ok_or(BearerError::Syntax("auth=Bearer token missing"))?,
        user_hint: Some(user.ok_or(BearerError::Syntax("user= missing"))?),
    })
}

/// The JSON error challenge: RFC 7628 section 3.2.2 for OAUTHBEARER
/// (`"invalid_token"`, `"insufficient_scope"`), Google's HTTP-like codes for
/// XOAUTH2 (`"401"`, `"403"`). Built by serde_json so it is always valid
/// JSON.
pub(crate) fn error_json(status: &str) -> Vec<u8> {
    let value = serde_json::json!({ "status": status, "schemes": "bearer" });
    value.to_string().into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc7628_example() {
        // RFC 7628 section 4.1 (with the GS2 header and framing).
        let m = parse_oauthbearer(
            b"n,a=user@example.com,\x01host=server.example.com\x01port=143\x01\
auth=Bearer vF9dft4qmTc2Nvb3RlckBhbHRhdmlzdGEuY29tCg==\x01\x01",
        )
        .unwrap();
        assert_eq!(
            m.token.as_str(),
            "vF9dft4qmTc2Nvb3RlckBhbHRhdmlzdGEuY29tCg=="
        );
        assert_eq!(m.user_hint.as_deref(), Some("user@example.com"));
        let m = parse_oauthbearer(b"n,,\x01auth=bearer  abc.def-ghi\x01\x01").unwrap();
        assert_eq!(m.token.as_str(), "abc.def-ghi");
        assert_eq!(m.user_hint, None);
    }

    #[test]
    fn oauthbearer_malformed() {
        let cases: &[(&[u8], BearerError)] = &[
            (
                b"p=tls-unique,,\x01auth=Bearer x\x01\x01",
                BearerError::ChannelBinding,
            ),
            (b"", BearerError::Syntax("bad GS2 header")),
            (
                b"n,,auth=Bearer x\x01\x01",
                BearerError::Syntax("key=value pairs must be framed by \\x01"),
            ),
            (
                b"n,,\x01auth=Bearer x\x01",
                BearerError::Syntax("key=value pairs must be framed by \\x01"),
            ),
            (
                b"n,,\x01host=a\x01\x01",
                BearerError::Syntax("auth=Bearer token missing"),
            ),
            (
                b"n,,\x01auth=Basic x\x01\x01",
                BearerError::Syntax("auth must be \"Bearer\" followed by a token"),
            ),
            (
                b"n,,\x01auth=Bearerx\x01\x01",
                BearerError::Syntax("auth must be \"Bearer\" followed by a token"),
            ),
            (
                b"n,,\x01auth=Bearer \x01\x01",
                BearerError::Syntax("auth must be \"Bearer\" followed by a token"),
            ),
            (
                b"n,,\x01auth=Bearer a b\x01\x01",
                BearerError::Syntax("auth must be \"Bearer\" followed by a token"),
            ),
            (
                b"n,,\x01auth=Bearer =\x01\x01",
                BearerError::Syntax("auth must be \"Bearer\" followed by a token"),
            ),
            (
                b"n,,\x01auth=Bearer a\x01auth=Bearer b\x01\x01",
                BearerError::Syntax("auth given twice"),
            ),
            (
                b"n,,\x01auth\x01\x01",
                BearerError::Syntax("key=value pair expected"),
            ),
            (
                b"n,,\x01a1=x\x01auth=Bearer a\x01\x01",
                BearerError::Syntax("bad key in a key=value pair"),
            ),
            (
                b"n,,\x01h=\x00\x01auth=Bearer a\x01\x01",
                BearerError::Syntax("bad value in a key=value pair"),
            ),
            (
                b"n,,\x01auth=Bearer \xff\x01\x01",
                BearerError::Syntax("message is not UTF-8"),
            ),
        ];
        for (input, want) in cases {
            assert_eq!(
                parse_oauthbearer(input).err(),
                Some(*want),
                "{:?}",
                String::from_utf8_lossy(input)
            );
        }
    }

    #[test]
    fn xoauth2_format() {
        let m = parse_xoauth2(b"user=someuser@example.com\x01auth=Bearer ya29.vF9dft4qmTc2Nvb3RlckBhdGF2aXN0YS5jb20K\x01\x01")
            .unwrap();
        assert_eq!(m.user_hint.as_deref(), Some("someuser@example.com"));
        assert_eq!(
            m.token.as_str(),
            "ya29.vF9dft4qmTc2Nvb3RlckBhdGF2aXN0YS5jb20K"
        );
        // Order does not matter.
        assert!(parse_xoauth2(b"auth=Bearer t\x01user=u\x01\x01").is_ok());
        for bad in [
            &b""[..],
            b"user=u\x01auth=Bearer t\x01",
            b"auth=Bearer t\x01\x01",
            b"user=u\x01\x01",
            b"user=\x01auth=Bearer t\x01\x01",
            b"user=u\x01user=v\x01auth=Bearer t\x01\x01",
            b"user=u\rx\x01auth=Bearer t\x01\x01",
        ] {
            assert!(parse_xoauth2(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn errors_never_contain_the_token() {
        let e = parse_oauthbearer(b"n,,\x01auth=Bearer sekrit token\x01\x01").unwrap_err();
        assert!(!format!("{e:?}{}", e.reason()).contains("sekrit"));
        let m = parse_xoauth2(b"user=u\x01auth=Bearer sekrit\x01\x01").unwrap();
        assert!(!format!("{m:?}").contains("sekrit"));
    }

    #[test]
    fn error_json_is_json() {
        let v: serde_json::Value = serde_json::from_slice(&error_json("invalid_token")).unwrap();
        assert_eq!(v["status"], "invalid_token");
        assert_eq!(v["schemes"], "bearer");
    }
}
