//! JSON Web Token validation for OAUTHBEARER and XOAUTH2 bearer tokens.
//!
//! A [`JwtValidator`] holds one issuer's verification key and policy and
//! turns a compact JWS (RFC 7515, RFC 7519) into [`Claims`] or a
//! [`JwtError`]. Supported algorithms: HS256 (HMAC-SHA-256 shared secret),
//! RS256 (RSASSA-PKCS1-v1_5 with SHA-256, 2048 to 8192-bit keys) and ES256
//! (ECDSA P-256 with SHA-256), all verified with `ring`.
//!
//! The runtime answers [`Step::VerifyToken`](crate::Step::VerifyToken) with
//! it:
//!
//! ```
//! # use tern_sasl::jwt::{JwtConfig, JwtKey, JwtValidator};
//! # use tern_sasl::{Answer, TokenRejection};
//! let mut config = JwtConfig::new(JwtKey::Hs256(b"0123456789abcdef0123456789abcdef".to_vec()));
//! config.issuer = Some("https://idp.example.test".into());
//! config.audience = Some("tern-mail".into());
//! let validator = JwtValidator::new(config).expect("valid configuration");
//! # let token = "a.b.c"; let now_unix = 0;
//! let answer = Answer::Token(
//!     validator.validate(token, now_unix).map(|claims| claims.user).map_err(TokenRejection::from),
//! );
//! # assert!(matches!(answer, Answer::Token(Err(TokenRejection::Invalid))));
//! ```
//!
//! What this module must never do: accept `alg: none`; let the token choose
//! an algorithm or key type other than the configured key's (the
//! HS256-with-the-RSA-public-key confusion); use a key carried in the token
//! (`jwk`, `jku`, `x5u`, `x5c` headers are ignored, never fetched); accept a
//! token without `exp`; accept a header marked `crit` (no extension is
//! understood); read a clock (time is an argument); or put the token into
//! an error or log.

use crate::der;
use crate::exchange::TokenRejection;
use crate::saslprep::is_clean_identity;
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use ring::hmac;
use ring::signature::{self, RsaPublicKeyComponents, UnparsedPublicKey};
use serde_json::{Map, Value};
use std::fmt;
use zeroize::Zeroize;

/// Longest token accepted, in bytes.
pub const MAX_TOKEN_LEN: usize = 12288;

/// Longest user name taken from a token, in bytes.
const MAX_USER_LEN: usize = 320;

/// The issuer's verification key. The algorithm of a token must be the
/// key's algorithm.
pub enum JwtKey {
    /// HS256: the shared secret, at least 32 bytes (RFC 7518 section 3.2).
    Hs256(Vec<u8>),
    /// RS256: the RSA public key, DER or PEM, as `SubjectPublicKeyInfo`
    /// (`-----BEGIN PUBLIC KEY-----`) or PKCS#1 (`-----BEGIN RSA PUBLIC
    /// KEY-----`).
    Rs256(Vec<u8>),
    /// ES256: the P-256 public key, DER or PEM `SubjectPublicKeyInfo`, or
    /// the raw 65-byte uncompressed point.
    Es256(Vec<u8>),
}

impl JwtKey {
    /// The JWS `alg` this key verifies.
    pub fn algorithm(&self) -> &'static str {
        match self {
            JwtKey::Hs256(_) => "HS256",
            JwtKey::Rs256(_) => "RS256",
            JwtKey::Es256(_) => "ES256",
        }
    }
}

impl fmt::Debug for JwtKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            JwtKey::Hs256(_) => f.write_str("Hs256(***)"),
            JwtKey::Rs256(k) => write!(f, "Rs256({} bytes)", k.len()),
            JwtKey::Es256(k) => write!(f, "Es256({} bytes)", k.len()),
        }
    }
}

/// One issuer's key and policy.
#[derive(Debug)]
pub struct JwtConfig {
    /// Required `iss` claim, when set.
    pub issuer: Option<String>,
    /// Required `aud` claim (or member of the `aud` array), when set. Set it:
    /// without it a token issued to another service is accepted too.
    pub audience: Option<String>,
    /// The verification key.
    pub key: JwtKey,
    /// Required `kid` header, when set.
    pub key_id: Option<String>,
    /// The claim naming the mail user: default `email`; `sub` is used when
    /// the claim is missing. When it is `email`, a token with
    /// `email_verified: false` is refused.
    pub user_claim: String,
    /// A scope the token must carry (`scope` string or `scp` array), when
    /// set.
    pub required_scope: Option<String>,
    /// Clock skew tolerated on `exp` and `nbf`, seconds. Default 60.
    pub leeway_secs: u64,
}

impl JwtConfig {
    /// A configuration with no issuer, audience, key id or scope
    /// requirement, `user_claim = "email"` and 60 s of leeway.
    pub fn new(key: JwtKey) -> JwtConfig {
        JwtConfig {
            issuer: None,
            audience: None,
            key,
            key_id: None,
            user_claim: "email".to_owned(),
            required_scope: None,
            leeway_secs: 60,
        }
    }
}

/// The configuration could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum JwtConfigError {
    /// An HS256 secret shorter than 32 bytes.
    #[error("the HS256 secret must be at least 32 bytes")]
    HmacKeyTooShort,
    /// A private key or certificate was given where a public key belongs.
    #[error("expected a public key, found a {0}")]
    NotAPublicKey(&'static str),
    /// The key could not be read.
    #[error("invalid {algorithm} key: {reason}")]
    InvalidKey {
        /// The key's algorithm.
        algorithm: &'static str,
        /// What is wrong.
        reason: &'static str,
    },
    /// `user_claim` is empty.
    #[error("user_claim must name a claim")]
    EmptyUserClaim,
}

/// Why a token was refused. Messages are fixed texts: never token content.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum JwtError {
    /// Longer than [`MAX_TOKEN_LEN`].
    #[error("token too long")]
    TooLong,
    /// Not a compact JWS with a JSON header and claims.
    #[error("malformed token: {0}")]
    Malformed(&'static str),
    /// `alg: none` (an unsigned token).
    #[error("unsigned tokens (alg none) are refused")]
    AlgorithmNone,
    /// `alg` differs from the configured key's algorithm.
    #[error("token algorithm does not match the configured key")]
    AlgorithmMismatch,
    /// `kid` differs from the configured key id.
    #[error("token key id does not match the configured key")]
    KeyIdMismatch,
    /// The header has `crit` extensions.
    #[error("token has critical header extensions")]
    CriticalHeader,
    /// The signature does not verify.
    #[error("bad token signature")]
    BadSignature,
    /// Past `exp` (plus leeway).
    #[error("token expired")]
    Expired,
    /// Before `nbf` (minus leeway).
    #[error("token not valid yet")]
    NotYetValid,
    /// `exp` is missing.
    #[error("token has no expiry")]
    MissingExpiry,
    /// `iss` differs from the configured issuer.
    #[error("token issuer not accepted")]
    WrongIssuer,
    /// `aud` does not contain the configured audience.
    #[error("token audience not accepted")]
    WrongAudience,
    /// The required scope is missing.
    #[error("token lacks the required scope")]
    MissingScope,
    /// No usable user claim (nor `sub`).
    #[error("token names no usable user")]
    MissingUser,
    /// `email_verified` is false.
    #[error("token email address is not verified")]
    EmailNotVerified,
}

impl JwtError {
    /// The SASL-level rejection for this error.
    pub fn rejection(&self) -> TokenRejection {
        match self {
            JwtError::Expired | JwtError::NotYetValid => TokenRejection::Expired,
            JwtError::MissingScope => TokenRejection::InsufficientScope,
            _ => TokenRejection::Invalid,
        }
    }
}

impl From<JwtError> for TokenRejection {
    fn from(e: JwtError) -> TokenRejection {
        e.rejection()
    }
}

/// What a valid token says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claims {
    /// The mail user (the configured user claim, else `sub`).
    pub user: String,
    /// `sub`, if present.
    pub subject: Option<String>,
    /// `iss`, if present.
    pub issuer: Option<String>,
    /// `aud`, as a list (empty when absent).
    pub audience: Vec<String>,
    /// `exp`, Unix seconds.
    pub expires_at: u64,
    /// `nbf`, Unix seconds.
    pub not_before: Option<u64>,
    /// `iat`, Unix seconds.
    pub issued_at: Option<u64>,
    /// The scopes (`scope` split on spaces, or the `scp` array).
    pub scopes: Vec<String>,
}

enum VerifyKey {
    Hs256(hmac::Key),
    Rs256(RsaPublicKeyComponents<Vec<u8>>),
    Es256(Vec<u8>),
}

impl VerifyKey {
    fn algorithm(&self) -> &'static str {
        match self {
            VerifyKey::Hs256(_) => "HS256",
            VerifyKey::Rs256(_) => "RS256",
            VerifyKey::Es256(_) => "ES256",
        }
    }

    fn verify(&self, message: &[u8], signature: &[u8]) -> bool {
        match self {
            VerifyKey::Hs256(key) => hmac::verify(key, message, signature).is_ok(),
            VerifyKey::Rs256(key) => key
                .verify(&signature::RSA_PKCS1_2048_8192_SHA256, message, signature)
                .is_ok(),
            VerifyKey::Es256(point) => {
                UnparsedPublicKey::new(&signature::ECDSA_P256_SHA256_FIXED, point)
                    .verify(message, signature)
                    .is_ok()
            }
        }
    }
}

/// Validates tokens of one issuer. Build once from a [`JwtConfig`], share
/// freely (it is immutable).
pub struct JwtValidator {
    key: VerifyKey,
    issuer: Option<String>,
    audience: Option<String>,
    key_id: Option<String>,
    user_claim: String,
    required_scope: Option<String>,
    leeway_secs: u64,
}

impl fmt::Debug for JwtValidator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JwtValidator")
            .field("algorithm", &self.key.algorithm())
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .field("key_id", &self.key_id)
            .field("user_claim", &self.user_claim)
            .field("required_scope", &self.required_scope)
            .field("leeway_secs", &self.leeway_secs)
            .finish()
    }
}

/// Decodes PEM if `input` is PEM; `Ok(None)` if it is not.
fn pem(input: &[u8]) -> Result<Option<(String, Vec<u8>)>, &'static str> {
    let Ok(text) = std::str::from_utf8(input) else {
        return Ok(None);
    };
    let Some(start) = text.find("-----BEGIN ") else {
        return Ok(None);
    };
    let rest = &text[start + "-----BEGIN ".len()..];
    let label_end = rest.find("-----").ok_or("PEM header is not closed")?;
    let label = &rest[..label_end];
    let body_and_end = &rest[label_end + 5..];
    let footer = format!("-----END {label}-----");
    let body_end = body_and_end.find(&footer).ok_or("PEM footer missing")?;
    let body: String = body_and_end[..body_end]
        .chars()
        .filter(|c| !c.is_ascii_whitespace())
        .collect();
    let der = STANDARD
        .decode(body)
        .map_err(|_| "PEM body is not base64")?;
    Ok(Some((label.to_owned(), der)))
}

fn public_key_der(algorithm: &'static str, input: &[u8]) -> Result<Vec<u8>, JwtConfigError> {
    let invalid = |reason| JwtConfigError::InvalidKey { algorithm, reason };
    match pem(input).map_err(invalid)? {
        None => Ok(input.to_vec()),
        Some((label, der)) => match label.as_str() {
            "PUBLIC KEY" | "RSA PUBLIC KEY" => Ok(der),
            "CERTIFICATE" => Err(JwtConfigError::NotAPublicKey("certificate")),
            l if l.contains("PRIVATE KEY") => Err(JwtConfigError::NotAPublicKey("private key")),
            _ => Err(invalid("unexpected PEM label")),
        },
    }
}

fn bit_length(n: &[u8]) -> usize {
    match n.first() {
        None => 0,
        Some(&b) => (n.len() - 1) * 8 + (8 - b.leading_zeros() as usize),
    }
}

impl JwtValidator {
    /// Checks the configuration and parses the key. An HS256 secret is
    /// wiped from the configuration once loaded.
    pub fn new(config: JwtConfig) -> Result<JwtValidator, JwtConfigError> {
        let JwtConfig {
            issuer,
            audience,
            key,
            key_id,
            user_claim,
            required_scope,
            leeway_secs,
        } = config;
        if user_claim.is_empty() {
            return Err(JwtConfigError::EmptyUserClaim);
        }
        let key = match key {
            JwtKey::Hs256(mut secret) => {
                let result = if secret.len() < 32 {
                    Err(JwtConfigError::HmacKeyTooShort)
                } else {
                    Ok(VerifyKey::Hs256(hmac::Key::new(hmac::HMAC_SHA256, &secret)))
                };
                secret.zeroize();
                result?
            }
            JwtKey::Rs256(input) => {
                let der = public_key_der("RS256", &input)?;
                let rsa = der::rsa_public_key(&der).map_err(|e| JwtConfigError::InvalidKey {
                    algorithm: "RS256",
                    reason: e.0,
                })?;
                let bits = bit_length(&rsa.n);
                if !(2048..=8192).contains(&bits) {
                    return Err(JwtConfigError::InvalidKey {
                        algorithm: "RS256",
                        reason: "modulus must be 2048 to 8192 bits",
                    });
                }
                if rsa.e.len() > 4 || rsa.e.last().is_none_or(|b| b & 1 == 0) || rsa.e == [1] {
                    return Err(JwtConfigError::InvalidKey {
                        algorithm: "RS256",
                        reason: "bad public exponent",
                    });
                }
                VerifyKey::Rs256(RsaPublicKeyComponents { n: rsa.n, e: rsa.e })
            }
            JwtKey::Es256(input) => {
                let der = public_key_der("ES256", &input)?;
                let point = der::p256_public_key(&der).map_err(|e| JwtConfigError::InvalidKey {
                    algorithm: "ES256",
                    reason: e.0,
                })?;
                VerifyKey::Es256(point)
            }
        };
        Ok(JwtValidator {
            key,
            issuer,
            audience,
            key_id,
            user_claim,
            required_scope,
            leeway_secs,
        })
    }

    /// The algorithm tokens must use.
    pub fn algorithm(&self) -> &'static str {
        self.key.algorithm()
    }

    /// Validates `token` at time `now_unix` (seconds since the epoch):
    /// structure, header, signature, then `exp`, `nbf`, `iss`, `aud`, scope
    /// and the user claim, in that order.
    pub fn validate(&self, token: &str, now_unix: u64) -> Result<Claims, JwtError> {
        if token.len() > MAX_TOKEN_LEN {
            return Err(JwtError::TooLong);
        }
        let mut parts = token.split('.');
        let (Some(header_b64), Some(payload_b64), Some(signature_b64), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(JwtError::Malformed("a token has three dot-separated parts"));
        };
        let header = decode_json_object(header_b64, "header")?;
        let alg = header
            .get("alg")
            .and_then(Value::as_str)
            .ok_or(JwtError::Malformed("header has no alg"))?;
        if alg.eq_ignore_ascii_case("none") {
            return Err(JwtError::AlgorithmNone);
        }
        if alg != self.key.algorithm() {
            return Err(JwtError::AlgorithmMismatch);
        }
        if header.contains_key("crit") {
            return Err(JwtError::CriticalHeader);
        }
        if let Some(expected) = &self.key_id
            && header.get("kid").and_then(Value::as_str) != Some(expected.as_str())
        {
            return Err(JwtError::KeyIdMismatch);
        }
        let signature = URL_SAFE_NO_PAD
            .decode(signature_b64)
            .map_err(|_| JwtError::Malformed("signature is not base64url"))?;
        let signing_input = &token[..header_b64.len() + 1 + payload_b64.len()];
        if !self.key.verify(signing_input.as_bytes(), &signature) {
            return Err(JwtError::BadSignature);
        }

        let claims = decode_json_object(payload_b64, "claims")?;
        let expires_at = numeric_date(&claims, "exp")?.ok_or(JwtError::MissingExpiry)?;
        if now_unix >= expires_at.saturating_add(self.leeway_secs) {
            return Err(JwtError::Expired);
        }
        let not_before = numeric_date(&claims, "nbf")?;
        if let Some(nbf) = not_before
            && now_unix.saturating_add(self.leeway_secs) < nbf
        {
            return Err(JwtError::NotYetValid);
        }
        let issued_at = numeric_date(&claims, "iat")?;
        let issuer = optional_string(&claims, "iss")?;
        if let Some(expected) = &self.issuer
            && issuer.as_deref() != Some(expected.as_str())
        {
            return Err(JwtError::WrongIssuer);
        }
        let audience = match claims.get("aud") {
            None => Vec::new(),
            Some(Value::String(s)) => vec![s.clone()],
            Some(Value::Array(items)) => items
                .iter()
                .map(|v| v.as_str().map(str::to_owned))
                .collect::<Option<Vec<_>>>()
                .ok_or(JwtError::Malformed(
                    "aud must be a string or an array of strings",
                ))?,
            Some(_) => {
                return Err(JwtError::Malformed(
                    "aud must be a string or an array of strings",
                ));
            }
        };
        if let Some(expected) = &self.audience
            && !audience.iter().any(|a| a == expected)
        {
            return Err(JwtError::WrongAudience);
        }
        let scopes = scopes(&claims)?;
        if let Some(required) = &self.required_scope
            && !scopes.iter().any(|s| s == required)
        {
            return Err(JwtError::MissingScope);
        }
        let subject = optional_string(&claims, "sub")?;
        let user = self.user(&claims, subject.as_deref())?;
        Ok(Claims {
            user,
            subject,
            issuer,
            audience,
            expires_at,
            not_before,
            issued_at,
            scopes,
        })
    }

    fn user(&self, claims: &Map<String, Value>, subject: Option<&str>) -> Result<String, JwtError> {
        let from_claim = claims.get(&self.user_claim).and_then(Value::as_str);
        if from_claim.is_some() && self.user_claim == "email" {
            let verified = claims.get("email_verified");
            if matches!(verified, Some(Value::Bool(false)))
                || matches!(verified, Some(Value::String(s)) if s == "false")
            {
                return Err(JwtError::EmailNotVerified);
            }
        }
        let user = from_claim.or(subject).ok_or(JwtError::MissingUser)?;
        if user.len() > MAX_USER_LEN || !is_clean_identity(user) {
            return Err(JwtError::MissingUser);
        }
        Ok(user.to_owned())
    }
}

fn decode_json_object(part: &str, what: &'static str) -> Result<Map<String, Value>, JwtError> {
    let bytes = URL_SAFE_NO_PAD.decode(part).map_err(|_| {
        JwtError::Malformed(if what == "header" {
            "header is not base64url"
        } else {
            "claims are not base64url"
        })
    })?;
    match serde_json::from_slice(&bytes) {
        Ok(Value::Object(map)) => Ok(map),
        _ => Err(JwtError::Malformed(if what == "header" {
            "header is not a JSON object"
        } else {
            "claims are not a JSON object"
        })),
    }
}

/// A NumericDate claim (RFC 7519 section 2): seconds, possibly fractional.
fn numeric_date(claims: &Map<String, Value>, name: &'static str) -> Result<Option<u64>, JwtError> {
    let bad = JwtError::Malformed("a date claim is not a non-negative number");
    match claims.get(name) {
        None => Ok(None),
        Some(Value::Number(n)) => {
            if let Some(v) = n.as_u64() {
                Ok(Some(v))
            } else {
                match n.as_f64() {
                    // `as` saturates at u64::MAX, which is what a huge date means.
                    Some(f) if f.is_finite() && f >= 0.0 => Ok(Some(f.floor() as u64)),
                    _ => Err(bad),
                }
            }
        }
        Some(_) => Err(bad),
    }
}

fn optional_string(
    claims: &Map<String, Value>,
    name: &'static str,
) -> Result<Option<String>, JwtError> {
    match claims.get(name) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(JwtError::Malformed("a string claim has another type")),
    }
}

fn scopes(claims: &Map<String, Value>) -> Result<Vec<String>, JwtError> {
    let bad = JwtError::Malformed("scope must be a string, scp an array of strings");
    let mut out = Vec::new();
    match claims.get("scope") {
        None => {}
        Some(Value::String(s)) => {
            out.extend(s.split(' ').filter(|s| !s.is_empty()).map(str::to_owned))
        }
        Some(_) => return Err(bad),
    }
    match claims.get("scp") {
        None => {}
        Some(Value::Array(items)) => {
            for item in items {
                out.push(item.as_str().ok_or(bad)?.to_owned());
            }
        }
        Some(Value::String(s)) => {
            out.extend(s.split(' ').filter(|s| !s.is_empty()).map(str::to_owned))
        }
        Some(_) => return Err(bad),
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const SECRET: &[u8] = b"an HS256 secret of 32+ bytes....";
    const NOW: u64 = 1_700_000_000;

    fn b64(v: &[u8]) -> String {
        URL_SAFE_NO_PAD.encode(v)
    }

    fn hs256_token(header: &Value, claims: &Value, secret: &[u8]) -> String {
        let input = format!(
            "{}.{}",
            b64(header.to_string().as_bytes()),
            b64(claims.to_string().as_bytes())
        );
        let key = hmac::Key::new(hmac::HMAC_SHA256, secret);
        let sig = hmac::sign(&key, input.as_bytes());
        format!("{input}.{}", b64(sig.as_ref()))
    }

    fn claims() -> Value {
        json!({
            "iss": "https://idp.example.test",
            "aud": ["other", "tern"],
            "sub": "123",
            "email": "alice@example.test",
            "exp": NOW + 600,
            "iat": NOW - 10,
            "scope": "openid mail",
        })
    }

    fn validator() -> JwtValidator {
        let mut config = JwtConfig::new(JwtKey::Hs256(SECRET.to_vec()));
        config.issuer = Some("https://idp.example.test".into());
        config.audience = Some("tern".into());
        JwtValidator::new(config).unwrap()
    }

    fn with(f: impl FnOnce(&mut Map<String, Value>)) -> String {
        let mut c = claims();
        f(c.as_object_mut().unwrap());
        hs256_token(&json!({"alg": "HS256", "typ": "JWT"}), &c, SECRET)
    }

    #[test]
    fn hs256_happy_path() {
        let token = hs256_token(&json!({"alg": "HS256", "typ": "JWT"}), &claims(), SECRET);
        let c = validator().validate(&token, NOW).unwrap();
        assert_eq!(c.user, "alice@example.test");
        assert_eq!(c.subject.as_deref(), Some("123"));
        assert_eq!(c.issuer.as_deref(), Some("https://idp.example.test"));
        assert_eq!(c.audience, vec!["other", "tern"]);
        assert_eq!(c.expires_at, NOW + 600);
        assert_eq!(c.issued_at, Some(NOW - 10));
        assert_eq!(c.scopes, vec!["openid", "mail"]);
    }

    #[test]
    fn time_checks_with_leeway() {
        let v = validator();
        let token = with(|c| {
            c.insert("exp".into(), json!(NOW));
            c.insert("nbf".into(), json!(NOW + 30));
        });
        // Within the 60 s leeway on both sides.
        assert!(v.validate(&token, NOW).is_ok());
        assert!(v.validate(&token, NOW + 59).is_ok());
        assert_eq!(v.validate(&token, NOW + 60), Err(JwtError::Expired));
        assert_eq!(v.validate(&token, NOW - 31), Err(JwtError::NotYetValid));
        let fractional = with(|c| {
            c.insert("exp".into(), json!((NOW + 100) as f64 + 0.5));
        });
        assert_eq!(v.validate(&fractional, NOW).unwrap().expires_at, NOW + 100);
        let no_exp = with(|c| {
            c.remove("exp");
        });
        assert_eq!(v.validate(&no_exp, NOW), Err(JwtError::MissingExpiry));
        let bad_exp = with(|c| {
            c.insert("exp".into(), json!("tomorrow"));
        });
        assert!(matches!(
            v.validate(&bad_exp, NOW),
            Err(JwtError::Malformed(_))
        ));
        let negative = with(|c| {
            c.insert("exp".into(), json!(-5));
        });
        assert!(matches!(
            v.validate(&negative, NOW),
            Err(JwtError::Malformed(_))
        ));
    }

    #[test]
    fn issuer_audience_scope() {
        let v = validator();
        let t = with(|c| {
            c.insert("iss".into(), json!("https://evil.example"));
        });
        assert_eq!(v.validate(&t, NOW), Err(JwtError::WrongIssuer));
        let t = with(|c| {
            c.remove("iss");
        });
        assert_eq!(v.validate(&t, NOW), Err(JwtError::WrongIssuer));
        let t = with(|c| {
            c.insert("aud".into(), json!("someone-else"));
        });
        assert_eq!(v.validate(&t, NOW), Err(JwtError::WrongAudience));
        let t = with(|c| {
            c.insert("aud".into(), json!("tern"));
        });
        assert!(v.validate(&t, NOW).is_ok());
        let t = with(|c| {
            c.insert("aud".into(), json!([1, 2]));
        });
        assert!(matches!(v.validate(&t, NOW), Err(JwtError::Malformed(_))));

        let mut config = JwtConfig::new(JwtKey::Hs256(SECRET.to_vec()));
        config.required_scope = Some("mail".into());
        let scoped = JwtValidator::new(config).unwrap();
        assert!(scoped.validate(&with(|_| {}), NOW).is_ok());
        let t = with(|c| {
            c.remove("scope");
            c.insert("scp".into(), json!(["openid"]));
        });
        assert_eq!(scoped.validate(&t, NOW), Err(JwtError::MissingScope));
        assert_eq!(
            JwtError::MissingScope.rejection(),
            TokenRejection::InsufficientScope
        );
    }

    #[test]
    fn user_claim_and_fallback() {
        let v = validator();
        let t = with(|c| {
            c.remove("email");
        });
        assert_eq!(v.validate(&t, NOW).unwrap().user, "123");
        let t = with(|c| {
            c.remove("email");
            c.remove("sub");
        });
        assert_eq!(v.validate(&t, NOW), Err(JwtError::MissingUser));
        let t = with(|c| {
            c.insert("email_verified".into(), json!(false));
        });
        assert_eq!(v.validate(&t, NOW), Err(JwtError::EmailNotVerified));
        let t = with(|c| {
            c.insert("email".into(), json!("a\r\nb"));
        });
        assert_eq!(v.validate(&t, NOW), Err(JwtError::MissingUser));

        let mut config = JwtConfig::new(JwtKey::Hs256(SECRET.to_vec()));
        config.user_claim = "preferred_username".into();
        let v = JwtValidator::new(config).unwrap();
        let t = with(|c| {
            c.insert("preferred_username".into(), json!("alice"));
            c.insert("email_verified".into(), json!(false));
        });
        assert_eq!(v.validate(&t, NOW).unwrap().user, "alice");
    }

    #[test]
    fn header_checks() {
        let v = validator();
        for alg in ["none", "None", "NONE"] {
            let t = hs256_token(&json!({"alg": alg}), &claims(), SECRET);
            assert_eq!(v.validate(&t, NOW), Err(JwtError::AlgorithmNone), "{alg}");
            // The classic unsigned form with an empty signature.
            let unsigned = format!(
                "{}.{}.",
                b64(json!({"alg": alg}).to_string().as_bytes()),
                b64(claims().to_string().as_bytes())
            );
            assert_eq!(v.validate(&unsigned, NOW), Err(JwtError::AlgorithmNone));
        }
        for alg in ["hs256", "HS384", "RS256", "ES256", "PS256"] {
            let t = hs256_token(&json!({"alg": alg}), &claims(), SECRET);
            assert_eq!(
                v.validate(&t, NOW),
                Err(JwtError::AlgorithmMismatch),
                "{alg}"
            );
        }
        let t = hs256_token(
            &json!({"alg": "HS256", "crit": ["b64"], "b64": false}),
            &claims(),
            SECRET,
        );
        assert_eq!(v.validate(&t, NOW), Err(JwtError::CriticalHeader));
        let t = hs256_token(&json!({"typ": "JWT"}), &claims(), SECRET);
        assert!(matches!(v.validate(&t, NOW), Err(JwtError::Malformed(_))));

        let mut config = JwtConfig::new(JwtKey::Hs256(SECRET.to_vec()));
        config.key_id = Some("k1".into());
        let v = JwtValidator::new(config).unwrap();
        let good = hs256_token(&json!({"alg": "HS256", "kid": "k1"}), &claims(), SECRET);
        assert!(v.validate(&good, NOW).is_ok());
        for header in [
            json!({"alg": "HS256", "kid": "k2"}),
            json!({"alg": "HS256"}),
        ] {
            let t = hs256_token(&header, &claims(), SECRET);
            assert_eq!(v.validate(&t, NOW), Err(JwtError::KeyIdMismatch));
        }
    }

    #[test]
    fn signature_and_structure() {
        let v = validator();
        let t = hs256_token(
            &json!({"alg": "HS256"}),
            &claims(),
            b"another secret of at least 32 bytes",
        );
        assert_eq!(v.validate(&t, NOW), Err(JwtError::BadSignature));
        // Tampered claims with the original signature.
        let good = hs256_token(&json!({"alg": "HS256"}), &claims(), SECRET);
        let parts: Vec<&str> = good.split('.').collect();
        let mut evil = claims();
        evil["email"] = json!("mallory@example.test");
        let tampered = format!(
            "{}.{}.{}",
            parts[0],
            b64(evil.to_string().as_bytes()),
            parts[2]
        );
        assert_eq!(v.validate(&tampered, NOW), Err(JwtError::BadSignature));
        for bad in ["", "a", "a.b", "a.b.c.d", "...", "!.b.c", "e30.e30.!!"] {
            assert!(
                matches!(v.validate(bad, NOW), Err(JwtError::Malformed(_))),
                "{bad}"
            );
        }
        let not_json = format!("{}.e30.AA", b64(b"not json"));
        assert!(matches!(
            v.validate(&not_json, NOW),
            Err(JwtError::Malformed(_))
        ));
        let array = format!("{}.e30.AA", b64(b"[1]"));
        assert!(matches!(
            v.validate(&array, NOW),
            Err(JwtError::Malformed(_))
        ));
        // Signed, but the claims are not an object.
        let input = format!("{}.{}", b64(br#"{"alg":"HS256"}"#), b64(b"\"x\""));
        let sig = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, SECRET), input.as_bytes());
        let t = format!("{input}.{}", b64(sig.as_ref()));
        assert!(matches!(v.validate(&t, NOW), Err(JwtError::Malformed(_))));
        let long = "a".repeat(MAX_TOKEN_LEN + 1);
        assert_eq!(v.validate(&long, NOW), Err(JwtError::TooLong));
    }

    #[test]
    fn config_errors() {
        assert_eq!(
            JwtValidator::new(JwtConfig::new(JwtKey::Hs256(b"short".to_vec()))).err(),
            Some(JwtConfigError::HmacKeyTooShort)
        );
        let mut c = JwtConfig::new(JwtKey::Hs256(SECRET.to_vec()));
        c.user_claim.clear();
        assert_eq!(
            JwtValidator::new(c).err(),
            Some(JwtConfigError::EmptyUserClaim)
        );
        assert!(matches!(
            JwtValidator::new(JwtConfig::new(JwtKey::Rs256(b"garbage".to_vec()))),
            Err(JwtConfigError::InvalidKey {
                algorithm: "RS256",
                ..
            })
        ));
        assert!(matches!(
            JwtValidator::new(JwtConfig::new(JwtKey::Es256(vec![4; 64]))),
            Err(JwtConfigError::InvalidKey {
                algorithm: "ES256",
                ..
            })
        ));
        let private = b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n".to_vec();
        assert_eq!(
            JwtValidator::new(JwtConfig::new(JwtKey::Rs256(private))).err(),
            Some(JwtConfigError::NotAPublicKey("private key"))
        );
        let unterminated = b"-----BEGIN PUBLIC KEY-----\nAAAA\n".to_vec();
        assert!(JwtValidator::new(JwtConfig::new(JwtKey::Es256(unterminated))).is_err());
    }

    #[test]
    fn debug_never_shows_the_secret() {
        let key = JwtKey::Hs256(SECRET.to_vec());
        assert_eq!(format!("{key:?}"), "Hs256(***)");
        let v = validator();
        assert!(!format!("{v:?}").contains("HS256 secret"));
        let config = JwtConfig::new(JwtKey::Hs256(SECRET.to_vec()));
        assert!(!format!("{config:?}").contains("HS256 secret"));
    }
}
