//! SCRAM-SHA-256 (RFC 5802, RFC 7677), server side, without channel binding.
//!
//! Holds the stored credential ([`ScramCredentials`]), the parsers for the
//! client's two messages and the proof check. The step machine in
//! [`crate::exchange`] sequences them. Tern does not advertise
//! `SCRAM-SHA-256-PLUS`, so a client that asks for channel binding (`p=`)
//! is refused; `n` and `y` are accepted.
//!
//! This module must never compare keys or proofs in variable time, never
//! print a key, and never accept a client-final message whose nonce or
//! channel-binding echo differs from what was agreed.

use crate::saslprep;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use ring::{digest, hmac, pbkdf2};
use std::fmt;
use std::num::NonZeroU32;
use subtle::ConstantTimeEq;
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

const KEY_LEN: usize = 32;

/// What the server stores for a SCRAM-SHA-256 user (RFC 5802 section 3):
/// salt, iteration count, `StoredKey` and `ServerKey`. None of it is the
/// password, and neither key lets an eavesdropper log in; `StoredKey` and
/// `ServerKey` are still secrets (with them one can impersonate the server).
/// `Debug` prints the salt length and iteration count only.
#[derive(Clone)]
pub struct ScramCredentials {
    salt: Vec<u8>,
    iterations: NonZeroU32,
    stored_key: [u8; KEY_LEN],
    server_key: [u8; KEY_LEN],
}

/// Why SCRAM credentials could not be built.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CredentialError {
    /// The iteration count is zero.
    #[error("the SCRAM iteration count must be at least 1 (4096 or more is recommended)")]
    ZeroIterations,
    /// The salt is empty.
    #[error("the SCRAM salt must not be empty")]
    EmptySalt,
    /// The password is empty or contains a character SASLprep prohibits.
    #[error("the password is empty or contains a prohibited (control) character")]
    ProhibitedPassword,
}

impl ScramCredentials {
    /// Derives the credentials from a clear password (for `tern user
    /// add|passwd`): SASLprep-lite, then PBKDF2-HMAC-SHA-256 with `salt`
    /// (16 random bytes or more) and `iterations` (4096 or more).
    pub fn from_password(
        password: &str,
        salt: &[u8],
        iterations: u32,
    ) -> Result<ScramCredentials, CredentialError> {
        let iterations = NonZeroU32::new(iterations).ok_or(CredentialError::ZeroIterations)?;
        if salt.is_empty() {
            return Err(CredentialError::EmptySalt);
        }
        let prepared = saslprep::prep(password).map_err(|_| CredentialError::ProhibitedPassword)?;
        let prepared = Zeroizing::new(prepared.into_owned());
        let mut salted = Zeroizing::new([0u8; KEY_LEN]);
        pbkdf2::derive(
            pbkdf2::PBKDF2_HMAC_SHA256,
            iterations,
            salt,
            prepared.as_bytes(),
            &mut *salted,
        );
        let salted_key = hmac::Key::new(hmac::HMAC_SHA256, &*salted);
        let client_key = Zeroizing::new(to_key(hmac::sign(&salted_key, b"Client Key").as_ref()));
        let stored_key = to_key(digest::digest(&digest::SHA256, &*client_key).as_ref());
        let server_key = to_key(hmac::sign(&salted_key, b"Server Key").as_ref());
        Ok(ScramCredentials {
            salt: salt.to_vec(),
            iterations,
            stored_key,
            server_key,
        })
    }

    /// Rebuilds credentials from their stored parts.
    pub fn new(
        salt: Vec<u8>,
        iterations: u32,
        stored_key: [u8; 32],
        server_key: [u8; 32],
    ) -> Result<ScramCredentials, CredentialError> {
        let iterations = NonZeroU32::new(iterations).ok_or(CredentialError::ZeroIterations)?;
        if salt.is_empty() {
            return Err(CredentialError::EmptySalt);
        }
        Ok(ScramCredentials {
            salt,
            iterations,
            stored_key,
            server_key,
        })
    }

    /// A credential for a user the directory does not know: derived from the
    /// user name and the server secret, so the same unknown name always gets
    /// the same salt (a changing salt would reveal that the user does not
    /// exist). The exchange using it always fails.
    pub(crate) fn fake(key: &hmac::Key, user: &str, iterations: NonZeroU32) -> ScramCredentials {
        let derive = |label: &[u8]| {
            let mut ctx = hmac::Context::with_key(key);
            ctx.update(label);
            ctx.update(&[0]);
            ctx.update(user.as_bytes());
            to_key(ctx.sign().as_ref())
        };
        let salt = derive(b"tern-sasl fake scram salt")[..16].to_vec();
        ScramCredentials {
            salt,
            iterations,
            stored_key: derive(b"tern-sasl fake scram stored key"),
            server_key: derive(b"tern-sasl fake scram server key"),
        }
    }

    /// The salt.
    pub fn salt(&self) -> &[u8] {
        &self.salt
    }

    /// The PBKDF2 iteration count.
    pub fn iterations(&self) -> u32 {
        self.iterations.get()
    }

    /// `StoredKey = SHA-256(ClientKey)`, for storage.
    pub fn stored_key(&self) -> &[u8; 32] {
        &self.stored_key
    }

    /// `ServerKey = HMAC(SaltedPassword, "Server Key")`, for storage.
    pub fn server_key(&self) -> &[u8; 32] {
        &self.server_key
    }
}

impl Drop for ScramCredentials {
    fn drop(&mut self) {
        self.stored_key.zeroize();
        self.server_key.zeroize();
    }
}

impl ZeroizeOnDrop for ScramCredentials {}

/// Constant-time in the keys.
impl PartialEq for ScramCredentials {
    fn eq(&self, other: &ScramCredentials) -> bool {
        let keys =
            self.stored_key.ct_eq(&other.stored_key) & self.server_key.ct_eq(&other.server_key);
        bool::from(keys) && self.salt == other.salt && self.iterations == other.iterations
    }
}

impl Eq for ScramCredentials {}

impl fmt::Debug for ScramCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ScramCredentials")
            .field("salt_len", &self.salt.len())
            .field("iterations", &self.iterations)
            .field("stored_key", &"***")
            .field("server_key", &"***")
            .finish()
    }
}

fn to_key(bytes: &[u8]) -> [u8; KEY_LEN] {
    let mut out = [0u8; KEY_LEN];
    out.copy_from_slice(&bytes[..KEY_LEN]);
    out
}

/// Why a SCRAM (or GS2 header) message was refused. Never carries client
/// bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ScramError {
    /// The client asked for channel binding, which is not offered.
    ChannelBinding,
    /// A mandatory extension (`m=`) the server does not know.
    Extension,
    /// The message does not follow the grammar.
    Syntax(&'static str),
    /// The client-final nonce is not the one agreed.
    Nonce,
    /// The client-final `c=` does not echo the GS2 header.
    BindingEcho,
    /// The proof is wrong.
    Proof,
}

impl ScramError {
    pub(crate) fn reason(self) -> &'static str {
        match self {
            ScramError::ChannelBinding => {
                "channel binding is not supported (SCRAM-SHA-256-PLUS is not offered)"
            }
            ScramError::Extension => "unsupported mandatory SCRAM extension",
            ScramError::Syntax(what) => what,
            ScramError::Nonce => "SCRAM nonce mismatch",
            ScramError::BindingEcho => "SCRAM channel binding data mismatch",
            ScramError::Proof => "authentication failed",
        }
    }
}

/// A parsed GS2 header (RFC 5801 section 4), as SCRAM and OAUTHBEARER use it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Gs2Header {
    /// The authorization identity, decoded.
    pub(crate) authzid: Option<String>,
    /// Length in bytes of the header, both commas included.
    pub(crate) len: usize,
}

/// Parses `gs2-cbind-flag "," [authzid] ","` at the start of `msg`.
/// `p=` (channel binding in use) is refused.
pub(crate) fn parse_gs2_header(msg: &str) -> Result<Gs2Header, ScramError> {
    let rest = match msg.as_bytes().first() {
        Some(b'n' | b'y') => &msg[1..],
        Some(b'p') => return Err(ScramError::ChannelBinding),
        _ => return Err(ScramError::Syntax("GS2 header must start with n, y or p=")),
    };
    let rest = rest
        .strip_prefix(',')
        .ok_or(ScramError::Syntax("GS2 header: comma expected"))?;
    let end = rest
        .find(',')
        .ok_or(ScramError::Syntax("GS2 header: comma expected"))?;
    let field = &rest[..end];
    let authzid = if field.is_empty() {
        None
    } else {
        let name = field
            .strip_prefix("a=")
            .ok_or(ScramError::Syntax("GS2 header: authzid must be a=name"))?;
        Some(decode_saslname(name)?)
    };
    Ok(Gs2Header {
        authzid,
        len: 1 + 1 + end + 1,
    })
}

/// `saslname`: `=2C` is `,`, `=3D` is `=`, any other `=` is an error.
pub(crate) fn decode_saslname(s: &str) -> Result<String, ScramError> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('=') {
        out.push_str(&rest[..i]);
        let escape = rest.get(i..i + 3);
        match escape {
            Some("=2C") => out.push(','),
            Some("=3D") => out.push('='),
            _ => return Err(ScramError::Syntax("bad =XX escape in a SASL name")),
        }
        rest = &rest[i + 3..];
    }
    out.push_str(rest);
    let prepared = saslprep::prep(&out)
        .map_err(|_| ScramError::Syntax("prohibited character in a SASL name"))?;
    if !saslprep::is_clean_identity(&prepared) {
        return Err(ScramError::Syntax("prohibited character in a SASL name"));
    }
    Ok(prepared.into_owned())
}

/// The client-first message, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ClientFirst {
    pub(crate) gs2_header: String,
    pub(crate) authcid: String,
    pub(crate) authzid: Option<String>,
    pub(crate) client_nonce: String,
    pub(crate) bare: String,
}

fn is_printable_nonce(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| (0x21..=0x7e).contains(&b) && b != b',')
}

fn is_extension(field: &str) -> bool {
    let mut bytes = field.bytes();
    matches!(bytes.next(), Some(b) if b.is_ascii_alphabetic()) && bytes.next() == Some(b'=')
}

/// `client-first-message = gs2-header client-first-message-bare`.
pub(crate) fn parse_client_first(msg: &[u8]) -> Result<ClientFirst, ScramError> {
    let msg =
        std::str::from_utf8(msg).map_err(|_| ScramError::Syntax("SCRAM message is not UTF-8"))?;
    let gs2 = parse_gs2_header(msg)?;
    let bare = &msg[gs2.len..];
    let mut fields = bare.split(',');
    let user = fields.next().unwrap_or("");
    if user.starts_with("m=") {
        return Err(ScramError::Extension);
    }
    let user = user
        .strip_prefix("n=")
        .ok_or(ScramError::Syntax("SCRAM client-first: n=user expected"))?;
    let authcid = decode_saslname(user)?;
    let nonce = fields
        .next()
        .and_then(|f| f.strip_prefix("r="))
        .ok_or(ScramError::Syntax("SCRAM client-first: r=nonce expected"))?;
    if !is_printable_nonce(nonce) {
        return Err(ScramError::Syntax("SCRAM client nonce is not printable"));
    }
    if !fields.all(is_extension) {
        return Err(ScramError::Syntax("SCRAM client-first: bad extension"));
    }
    let authzid = gs2.authzid.filter(|z| *z != authcid);
    Ok(ClientFirst {
        gs2_header: msg[..gs2.len].to_owned(),
        authcid,
        authzid,
        client_nonce: nonce.to_owned(),
        bare: bare.to_owned(),
    })
}

/// The server's side of an exchange between server-first and client-final.
#[derive(Debug)]
pub(crate) struct ServerFirst {
    first: ClientFirst,
    nonce: String,
    message: String,
    credentials: ScramCredentials,
}

impl ServerFirst {
    /// Builds `server-first-message = r=nonce,s=salt,i=iterations`, where the
    /// nonce is the client's followed by `server_nonce` (printable, no comma).
    pub(crate) fn new(
        first: ClientFirst,
        server_nonce: &str,
        credentials: ScramCredentials,
    ) -> ServerFirst {
        let nonce = format!("{}{server_nonce}", first.client_nonce);
        let message = format!(
            "r={nonce},s={},i={}",
            STANDARD.encode(&credentials.salt),
            credentials.iterations
        );
        ServerFirst {
            first,
            nonce,
            message,
            credentials,
        }
    }

    /// The server-first message to send.
    pub(crate) fn message(&self) -> &[u8] {
        self.message.as_bytes()
    }

    /// The identities from the client-first message.
    pub(crate) fn into_identities(self) -> (String, Option<String>) {
        (self.first.authcid, self.first.authzid)
    }

    /// Checks the client-final message; on success returns the server-final
    /// message (`v=ServerSignature`).
    pub(crate) fn verify_client_final(&self, msg: &[u8]) -> Result<Vec<u8>, ScramError> {
        let msg = std::str::from_utf8(msg)
            .map_err(|_| ScramError::Syntax("SCRAM message is not UTF-8"))?;
        let comma = msg
            .rfind(',')
            .ok_or(ScramError::Syntax("SCRAM client-final: p=proof expected"))?;
        let without_proof = &msg[..comma];
        let proof = msg[comma + 1..]
            .strip_prefix("p=")
            .ok_or(ScramError::Syntax(
                "SCRAM client-final: p=proof must come last",
            ))?;
        let proof = STANDARD
            .decode(proof)
            .map_err(|_| ScramError::Syntax("SCRAM proof is not base64"))?;
        let mut fields = without_proof.split(',');
        let binding = fields
            .next()
            .and_then(|f| f.strip_prefix("c="))
            .ok_or(ScramError::Syntax("SCRAM client-final: c= expected"))?;
        let nonce = fields
            .next()
            .and_then(|f| f.strip_prefix("r="))
            .ok_or(ScramError::Syntax("SCRAM client-final: r= expected"))?;
        for field in fields {
            if field.starts_with("m=") {
                return Err(ScramError::Extension);
            }
            if !is_extension(field) {
                return Err(ScramError::Syntax("SCRAM client-final: bad extension"));
            }
        }
        let binding = STANDARD
            .decode(binding)
            .map_err(|_| ScramError::Syntax("SCRAM channel binding is not base64"))?;
        if binding != self.first.gs2_header.as_bytes() {
            return Err(ScramError::BindingEcho);
        }
        if nonce != self.nonce {
            return Err(ScramError::Nonce);
        }
        if proof.len() != KEY_LEN {
            return Err(ScramError::Syntax("SCRAM proof has the wrong length"));
        }

        let auth_message = format!("{},{},{without_proof}", self.first.bare, self.message);
        let stored = hmac::Key::new(hmac::HMAC_SHA256, &self.credentials.stored_key);
        let client_signature = hmac::sign(&stored, auth_message.as_bytes());
        let mut client_key = Zeroizing::new([0u8; KEY_LEN]);
        for ((k, p), s) in client_key
            .iter_mut()
            .zip(&proof)
            .zip(client_signature.as_ref())
        {
            *k = p ^ s;
        }
        let computed = digest::digest(&digest::SHA256, &*client_key);
        if !bool::from(computed.as_ref().ct_eq(&self.credentials.stored_key)) {
            return Err(ScramError::Proof);
        }
        let server = hmac::Key::new(hmac::HMAC_SHA256, &self.credentials.server_key);
        let signature = hmac::sign(&server, auth_message.as_bytes());
        Ok(format!("v={}", STANDARD.encode(signature.as_ref())).into_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RFC7677_SALT: &str = "W22ZaJ0SNY7soEsUEjb6gQ==";

    fn rfc7677_credentials() -> ScramCredentials {
        let salt = STANDARD.decode(RFC7677_SALT).unwrap();
        ScramCredentials::from_password("pencil", &salt, 4096).unwrap()
    }

    /// RFC 7677 section 3, replayed message by message against the server.
    #[test]
    fn rfc7677_transcript() {
        let first = parse_client_first(b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO").unwrap();
        assert_eq!(first.authcid, "user");
        assert_eq!(first.authzid, None);
        assert_eq!(first.gs2_header, "n,,");
        let server = ServerFirst::new(
            first,
            "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0",
            rfc7677_credentials(),
        );
        assert_eq!(
            server.message(),
            b"r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"
        );
        let final_msg = b"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,\
p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=";
        let server_final = server.verify_client_final(final_msg).unwrap();
        assert_eq!(
            server_final,
            b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="
        );
    }

    #[test]
    fn rfc7677_wrong_password_fails() {
        let first = parse_client_first(b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO").unwrap();
        let salt = STANDARD.decode(RFC7677_SALT).unwrap();
        let creds = ScramCredentials::from_password("pencil2", &salt, 4096).unwrap();
        let server = ServerFirst::new(first, "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0", creds);
        let final_msg = b"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,\
p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=";
        assert_eq!(
            server.verify_client_final(final_msg),
            Err(ScramError::Proof)
        );
    }

    #[test]
    fn client_final_checks() {
        let first = parse_client_first(b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO").unwrap();
        let server = ServerFirst::new(
            first,
            "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0",
            rfc7677_credentials(),
        );
        let nonce = "rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0";
        let proof = "p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=";
        let cases: Vec<(String, ScramError)> = vec![
            (format!("c=biws,r={nonce}X,{proof}"), ScramError::Nonce),
            (
                format!("c=biws,r=rOprNGfwEbeRWgbNEkqO,{proof}"),
                ScramError::Nonce,
            ),
            // "y,," instead of the "n,," the client sent first.
            (format!("c=eSws,r={nonce},{proof}"), ScramError::BindingEcho),
            (
                format!("c=biws,r={nonce},m=x,{proof}"),
                ScramError::Extension,
            ),
            (
                format!("c=biws,r={nonce},p=AAAA"),
                ScramError::Syntax("SCRAM proof has the wrong length"),
            ),
            (
                format!("c=biws,r={nonce}"),
                ScramError::Syntax("SCRAM client-final: p=proof must come last"),
            ),
            (
                format!("r={nonce},c=biws,{proof}"),
                ScramError::Syntax("SCRAM client-final: c= expected"),
            ),
            (
                format!("c=biws,{proof}"),
                ScramError::Syntax("SCRAM client-final: r= expected"),
            ),
            (
                format!("c=biws,r={nonce},{proof},x=1"),
                ScramError::Syntax("SCRAM client-final: p=proof must come last"),
            ),
            (
                format!("c=biws,r={nonce},p=!!!!"),
                ScramError::Syntax("SCRAM proof is not base64"),
            ),
            (
                String::new(),
                ScramError::Syntax("SCRAM client-final: p=proof expected"),
            ),
        ];
        for (msg, want) in cases {
            assert_eq!(
                server.verify_client_final(msg.as_bytes()),
                Err(want),
                "{msg}"
            );
        }
        assert_eq!(
            server.verify_client_final(b"c=biws,r=\xff,p=AAAA"),
            Err(ScramError::Syntax("SCRAM message is not UTF-8"))
        );
        // An extension before the proof is allowed.
        assert_eq!(
            server.verify_client_final(format!("c=biws,r={nonce},x=ext,{proof}").as_bytes()),
            Err(ScramError::Proof)
        );
    }

    #[test]
    fn client_first_grammar() {
        let f = parse_client_first(b"y,a=admin,n=us=2Cer=3D,r=abc,e=ext").unwrap();
        assert_eq!(f.authcid, "us,er=");
        assert_eq!(f.authzid.as_deref(), Some("admin"));
        assert_eq!(f.gs2_header, "y,a=admin,");
        assert_eq!(f.bare, "n=us=2Cer=3D,r=abc,e=ext");
        let f = parse_client_first(b"n,a=bob,n=bob,r=x").unwrap();
        assert_eq!(f.authzid, None);

        let cases: &[(&[u8], ScramError)] = &[
            (b"p=tls-unique,,n=user,r=abc", ScramError::ChannelBinding),
            (b"n,,m=x,n=user,r=abc", ScramError::Extension),
            (
                b"",
                ScramError::Syntax("GS2 header must start with n, y or p="),
            ),
            (
                b"x,,n=user,r=abc",
                ScramError::Syntax("GS2 header must start with n, y or p="),
            ),
            (b"n", ScramError::Syntax("GS2 header: comma expected")),
            (b"n,", ScramError::Syntax("GS2 header: comma expected")),
            (
                b"n,b=x,n=user,r=a",
                ScramError::Syntax("GS2 header: authzid must be a=name"),
            ),
            (
                b"n,,r=abc",
                ScramError::Syntax("SCRAM client-first: n=user expected"),
            ),
            (
                b"n,,n=user",
                ScramError::Syntax("SCRAM client-first: r=nonce expected"),
            ),
            (
                b"n,,n=user,r=",
                ScramError::Syntax("SCRAM client nonce is not printable"),
            ),
            (
                b"n,,n=user,r=a b",
                ScramError::Syntax("SCRAM client nonce is not printable"),
            ),
            (
                b"n,,n=us=41er,r=abc",
                ScramError::Syntax("bad =XX escape in a SASL name"),
            ),
            (
                b"n,,n=user=,r=abc",
                ScramError::Syntax("bad =XX escape in a SASL name"),
            ),
            (
                b"n,,n=,r=abc",
                ScramError::Syntax("prohibited character in a SASL name"),
            ),
            (
                b"n,,n=a\x07b,r=abc",
                ScramError::Syntax("prohibited character in a SASL name"),
            ),
            (
                b"n,,n=user,r=abc,7",
                ScramError::Syntax("SCRAM client-first: bad extension"),
            ),
            (
                b"n,,n=\xc3,r=abc",
                ScramError::Syntax("SCRAM message is not UTF-8"),
            ),
        ];
        for (input, want) in cases {
            assert_eq!(
                parse_client_first(input),
                Err(*want),
                "{:?}",
                String::from_utf8_lossy(input)
            );
        }
    }

    #[test]
    fn credentials_validation_and_redaction() {
        assert_eq!(
            ScramCredentials::from_password("pw", b"salt", 0),
            Err(CredentialError::ZeroIterations)
        );
        assert_eq!(
            ScramCredentials::from_password("pw", b"", 1),
            Err(CredentialError::EmptySalt)
        );
        assert_eq!(
            ScramCredentials::from_password("p\nw", b"s", 1),
            Err(CredentialError::ProhibitedPassword)
        );
        assert_eq!(
            ScramCredentials::from_password("", b"s", 1),
            Err(CredentialError::ProhibitedPassword)
        );
        assert_eq!(
            ScramCredentials::new(vec![], 1, [0; 32], [0; 32]),
            Err(CredentialError::EmptySalt)
        );
        let c = rfc7677_credentials();
        let again = ScramCredentials::new(
            c.salt().to_vec(),
            c.iterations(),
            *c.stored_key(),
            *c.server_key(),
        )
        .unwrap();
        assert_eq!(c, again);
        let debug = format!("{c:?}");
        assert!(debug.contains("***") && debug.contains("4096"), "{debug}");
        assert!(!debug.contains('['), "{debug}");
    }

    #[test]
    fn saslprep_maps_before_hashing() {
        // A soft hyphen is mapped to nothing, so both derive the same keys.
        let a = ScramCredentials::from_password("pen\u{00AD}cil", b"salt", 1).unwrap();
        let b = ScramCredentials::from_password("pencil", b"salt", 1).unwrap();
        assert_eq!(a, b);
    }

    #[test]
    fn fake_credentials_are_stable_per_user() {
        let it = NonZeroU32::new(4096).unwrap();
        let secret = hmac::Key::new(hmac::HMAC_SHA256, b"secret");
        let other = hmac::Key::new(hmac::HMAC_SHA256, b"other");
        let a = ScramCredentials::fake(&secret, "nobody", it);
        let b = ScramCredentials::fake(&secret, "nobody", it);
        let c = ScramCredentials::fake(&secret, "somebody", it);
        let d = ScramCredentials::fake(&other, "nobody", it);
        assert_eq!(a, b);
        assert_ne!(a.salt(), c.salt());
        assert_ne!(a.salt(), d.salt());
        assert_eq!(a.salt().len(), 16);
    }
}
