//! The users file, loaded: [`UserDb`] and [`User`].
//!
//! ```toml
//! [[user]]
//! address = "alice@example.test"
//! password = "$argon2id$v=19$m=19456,t=2,p=1$…"     # or $2y$ bcrypt, $6$ sha512-crypt
//! scram_sha256 = "SCRAM-SHA-256$4096:<salt>$<StoredKey>:<ServerKey>"   # optional (base64)
//! cram_md5 = "<64 hex digits>"                         # optional, opt-in
//! senders = ["a.smith@example.test"]                   # optional
//! ```
//!
//! Loading checks everything a login will need (each hash's scheme, the
//! SCRAM and CRAM-MD5 encodings, the addresses, duplicates), so a broken
//! entry is reported when the file is read, with its line, and not at the
//! user's next login. Unknown keys are errors. Error messages never contain
//! a hash or a secret.

use std::collections::HashMap;
use std::fmt;
use std::path::Path;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use serde::Deserialize;
use tern_sasl::{CramSecret, ScramCredentials};
use toml::Spanned;

use crate::UsersError;
use crate::hash::{Scheme, dummy_verify, verify_password};

/// Largest users file read, in bytes.
pub const MAX_FILE_SIZE: u64 = 64 * 1024 * 1024;

/// The prefix of a stored SCRAM-SHA-256 credential.
pub const SCRAM_PREFIX: &str = "SCRAM-SHA-256$";

/// A stored password hash. `Debug` shows the scheme only.
#[derive(Clone, PartialEq, Eq)]
pub struct PasswordHash {
    hash: String,
    scheme: Scheme,
}

impl PasswordHash {
    /// Checks the scheme of `hash` and wraps it.
    pub fn new(hash: String) -> Result<PasswordHash, UsersError> {
        let scheme = Scheme::of(&hash)?;
        Ok(PasswordHash { hash, scheme })
    }

    /// The hash as stored.
    pub fn as_str(&self) -> &str {
        &self.hash
    }

    /// Its scheme.
    pub fn scheme(&self) -> Scheme {
        self.scheme
    }

    /// Checks `password` against this hash (see [`verify_password`]).
    pub fn verify(&self, password: &str) -> Result<bool, UsersError> {
        verify_password(&self.hash, password)
    }
}

impl fmt::Debug for PasswordHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PasswordHash({}, ***)", self.scheme.name())
    }
}

/// One user: an address to log in with and the secrets to check.
/// `Debug` never shows a secret.
#[derive(Debug, Clone)]
pub struct User {
    /// The login name and main address, as written in the file.
    pub address: String,
    /// The password hash (argon2id, bcrypt or sha-crypt).
    pub password_hash: PasswordHash,
    /// SCRAM-SHA-256 credentials, when stored (`tern user add` always does).
    pub scram: Option<ScramCredentials>,
    /// The CRAM-MD5 secret, for users whose admin opted in.
    pub cram: Option<CramSecret>,
    /// Further addresses this user may use as envelope sender and `From:`.
    pub senders: Vec<String>,
}

impl User {
    /// Whether this user may send as `address`: their own address or one of
    /// their `senders`, compared case-insensitively.
    pub fn may_send_as(&self, address: &str) -> bool {
        let key = address_key(address);
        address_key(&self.address) == key || self.senders.iter().any(|s| address_key(s) == key)
    }
}

/// The loaded users file: lookups by address, case-insensitively.
#[derive(Debug, Clone, Default)]
pub struct UserDb {
    users: Vec<User>,
    index: HashMap<String, usize>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    #[serde(default)]
    user: Vec<RawUser>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawUser {
    address: Spanned<String>,
    password: Spanned<String>,
    #[serde(default)]
    scram_sha256: Option<Spanned<String>>,
    #[serde(default)]
    cram_md5: Option<Spanned<String>>,
    #[serde(default)]
    senders: Vec<Spanned<String>>,
}

impl UserDb {
    /// Reads and checks the users file at `path`.
    pub fn load(path: &Path) -> Result<UserDb, UsersError> {
        let text = read_limited(path)?;
        UserDb::parse(&text, path)
    }

    /// Checks users-file `text`; `path` is only used in error messages.
    pub fn parse(text: &str, path: &Path) -> Result<UserDb, UsersError> {
        let raw: RawFile = toml::from_str(text).map_err(|e| UsersError::Syntax {
            path: path.to_owned(),
            message: describe_toml_error(&e, text),
        })?;
        let mut db = UserDb::default();
        for raw in raw.user {
            let invalid = |span: std::ops::Range<usize>, key: &'static str, problem: String| {
                UsersError::Invalid {
                    path: path.to_owned(),
                    line: line_of(text, span.start),
                    key,
                    problem,
                }
            };
            let address = raw.address.get_ref().clone();
            check_address(&address)
                .map_err(|problem| invalid(raw.address.span(), "address", problem.to_owned()))?;
            let key = address_key(&address);
            if db.index.contains_key(&key) {
                return Err(invalid(
                    raw.address.span(),
                    "address",
                    format!("{address} appears twice"),
                ));
            }
            let password_hash = PasswordHash::new(raw.password.get_ref().clone())
                .map_err(|e| invalid(raw.password.span(), "password", e.to_string()))?;
            let scram = match &raw.scram_sha256 {
                Some(s) => Some(
                    decode_scram(s.get_ref())
                        .map_err(|p| invalid(s.span(), "scram_sha256", p.to_owned()))?,
                ),
                None => None,
            };
            let cram = match &raw.cram_md5 {
                Some(s) => Some(
                    decode_cram(s.get_ref())
                        .map_err(|p| invalid(s.span(), "cram_md5", p.to_owned()))?,
                ),
                None => None,
            };
            let mut senders = Vec::with_capacity(raw.senders.len());
            for s in raw.senders {
                check_address(s.get_ref())
                    .map_err(|p| invalid(s.span(), "senders", format!("{:?}: {p}", s.get_ref())))?;
                senders.push(s.into_inner());
            }
            db.index.insert(key, db.users.len());
            db.users.push(User {
                address,
                password_hash,
                scram,
                cram,
                senders,
            });
        }
        Ok(db)
    }

    /// The user whose address is `address` (compared case-insensitively).
    pub fn get(&self, address: &str) -> Option<&User> {
        self.index
            .get(&address_key(address))
            .map(|&i| &self.users[i])
    }

    /// Checks a login: `Ok(Some(user))` when `address` exists and
    /// `password` is right; `Ok(None)` for a wrong password *and* for an
    /// unknown address, which takes as long (see
    /// [`dummy_verify`](crate::dummy_verify)). An error is a hash that
    /// cannot be used: log it and answer as for a wrong password.
    ///
    /// Slow on purpose: run it on a blocking thread.
    pub fn check_password(
        &self,
        address: &str,
        password: &str,
    ) -> Result<Option<&User>, UsersError> {
        match self.get(address) {
            Some(user) => Ok(user.password_hash.verify(password)?.then_some(user)),
            None => {
                dummy_verify(password);
                Ok(None)
            }
        }
    }

    /// Every user, in file order.
    pub fn iter(&self) -> impl Iterator<Item = &User> {
        self.users.iter()
    }

    /// The number of users.
    pub fn len(&self) -> usize {
        self.users.len()
    }

    /// Whether there are no users.
    pub fn is_empty(&self) -> bool {
        self.users.is_empty()
    }
}

/// The form addresses are compared in.
pub(crate) fn address_key(address: &str) -> String {
    address.to_lowercase()
}

/// Checks that `address` can be a user name: `local@domain`, no spaces or
/// control characters, at most 320 bytes.
pub(crate) fn check_address(address: &str) -> Result<(), &'static str> {
    if address.len() > 320 {
        return Err("longer than 320 bytes");
    }
    let Some((local, domain)) = address.rsplit_once('@') else {
        return Err("not of the form local@domain");
    };
    if local.is_empty() || domain.is_empty() {
        return Err("not of the form local@domain");
    }
    if address.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("contains a space or a control character");
    }
    if domain.contains(['@', '[', ']']) || domain.starts_with('.') || domain.ends_with('.') {
        return Err("the domain is not a host name");
    }
    Ok(())
}

/// Encodes SCRAM credentials for the file:
/// `SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>` (base64).
pub(crate) fn encode_scram(c: &ScramCredentials) -> String {
    format!(
        "{SCRAM_PREFIX}{}:{}${}:{}",
        c.iterations(),
        B64.encode(c.salt()),
        B64.encode(c.stored_key()),
        B64.encode(c.server_key())
    )
}

fn decode_scram(text: &str) -> Result<ScramCredentials, &'static str> {
    const FORMAT: &str =
        "expected SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey> (base64)";
    let body = text.strip_prefix(SCRAM_PREFIX).ok_or(FORMAT)?;
    let (params, keys) = body.split_once('$').ok_or(FORMAT)?;
    let (iterations, salt) = params.split_once(':').ok_or(FORMAT)?;
    let (stored, server) = keys.split_once(':').ok_or(FORMAT)?;
    let iterations: u32 = iterations
        .parse()
        .map_err(|_| "the iteration count is not a number")?;
    let salt = B64.decode(salt).map_err(|_| "the salt is not base64")?;
    let key = |k: &str| -> Result<[u8; 32], &'static str> {
        B64.decode(k)
            .ok()
            .and_then(|v| <[u8; 32]>::try_from(v.as_slice()).ok())
            .ok_or("StoredKey and ServerKey must be 32 bytes each, in base64")
    };
    let (stored, server) = (key(stored)?, key(server)?);
    ScramCredentials::new(salt, iterations, stored, server)
        .map_err(|_| "the salt must not be empty and the iteration count must be at least 1")
}

/// Encodes a CRAM-MD5 secret for the file: 64 hex digits, the format of
/// Dovecot's `{CRAM-MD5}` scheme.
pub(crate) fn encode_cram(c: &CramSecret) -> String {
    c.to_bytes().iter().map(|b| format!("{b:02x}")).collect()
}

fn decode_cram(text: &str) -> Result<CramSecret, &'static str> {
    const FORMAT: &str = "expected 64 hex digits or the base64 of 32 bytes";
    let text = text
        .strip_prefix("{CRAM-MD5}")
        .or_else(|| text.strip_prefix("{HMAC-MD5}"))
        .unwrap_or(text);
    let mut bytes = zeroize::Zeroizing::new([0u8; 32]);
    if text.len() == 64 && text.bytes().all(|b| b.is_ascii_hexdigit()) {
        for (i, pair) in text.as_bytes().chunks(2).enumerate() {
            let hex = std::str::from_utf8(pair).map_err(|_| FORMAT)?;
            bytes[i] = u8::from_str_radix(hex, 16).map_err(|_| FORMAT)?;
        }
    } else {
        let decoded = zeroize::Zeroizing::new(B64.decode(text).map_err(|_| FORMAT)?);
        if decoded.len() != 32 {
            return Err(FORMAT);
        }
        bytes.copy_from_slice(&decoded);
    }
    Ok(CramSecret::from_bytes(*bytes))
}

/// Reads a file of at most [`MAX_FILE_SIZE`] bytes.
pub(crate) fn read_limited(path: &Path) -> Result<String, UsersError> {
    use std::io::Read;
    let file = std::fs::File::open(path).map_err(|e| UsersError::io(path, "opening", e))?;
    let mut text = String::new();
    file.take(MAX_FILE_SIZE + 1)
        .read_to_string(&mut text)
        .map_err(|e| UsersError::io(path, "reading", e))?;
    if text.len() as u64 > MAX_FILE_SIZE {
        return Err(UsersError::io(
            path,
            "reading",
            std::io::Error::other(format!("larger than {MAX_FILE_SIZE} bytes")),
        ));
    }
    Ok(text)
}

fn line_of(text: &str, offset: usize) -> usize {
    let offset = offset.min(text.len());
    text.as_bytes()[..offset]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

/// A TOML error as "line L, column C: message", without the quoted source
/// line the `toml` crate would add (it could hold a secret).
fn describe_toml_error(e: &toml::de::Error, text: &str) -> String {
    let message = e.message().trim_end();
    match e.span() {
        Some(span) => {
            let start = span.start.min(text.len());
            let line_start = text[..start].rfind('\n').map_or(0, |i| i + 1);
            let column = text[line_start..start].chars().count() + 1;
            format!("line {}, column {column}: {message}", line_of(text, start))
        }
        None => message.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    const HASH: &str = "$argon2id$v=19$m=1024,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$OHc9SRN0/XEiuUUihEOCXBYjZ7cbpwHqG3uM3/Rhr/w";
    const BCRYPT: &str = "$2y$05$abcdefghijklmnopqrstuuOQiyCxlgf/oeuTqixKmWdcYUh4Hjl0a";
    const SHA512: &str = "$6$saltsalt$TVLlQcbpFVof5W3Yz4DTP6gRstiNuHwwTt6GLc1E5n0U0aDehy0S5knV8wiOQSpT0Y77vwPZN.Pq.H91p5hVO1";

    fn path() -> PathBuf {
        PathBuf::from("/etc/tern/users.toml")
    }

    fn parse(text: &str) -> Result<UserDb, UsersError> {
        UserDb::parse(text, &path())
    }

    fn sample() -> String {
        let scram = ScramCredentials::from_password("secret", b"0123456789abcdef", 4096).unwrap();
        let cram = CramSecret::from_password("secret");
        format!(
            r#"# Tern users
[[user]]
address = "Alice@Example.test"
password = "{HASH}"
scram_sha256 = "{}"
cram_md5 = "{}"
senders = ["a.smith@example.test", "Postmaster@example.test"]

[[user]]
address = "bob@example.test"
password = "{BCRYPT}"

[[user]]
address = "carol@example.test"
password = "{{SHA512-CRYPT}}{SHA512}"
"#,
            encode_scram(&scram),
            encode_cram(&cram)
        )
    }

    #[test]
    fn loads_and_looks_up_case_insensitively() {
        let db = parse(&sample()).unwrap();
        assert_eq!(db.len(), 3);
        assert!(!db.is_empty());
        let alice = db.get("alice@EXAMPLE.TEST").unwrap();
        assert_eq!(alice.address, "Alice@Example.test");
        assert_eq!(alice.password_hash.scheme(), Scheme::Argon2id);
        assert_eq!(alice.senders.len(), 2);
        assert!(alice.may_send_as("alice@example.test"));
        assert!(alice.may_send_as("A.Smith@example.test"));
        assert!(alice.may_send_as("postmaster@example.test"));
        assert!(!alice.may_send_as("bob@example.test"));
        assert!(db.get("nobody@example.test").is_none());
        assert_eq!(
            db.get("bob@example.test").unwrap().password_hash.scheme(),
            Scheme::Bcrypt
        );
        assert!(db.get("bob@example.test").unwrap().scram.is_none());
        assert_eq!(
            db.iter().map(|u| u.address.as_str()).collect::<Vec<_>>(),
            [
                "Alice@Example.test",
                "bob@example.test",
                "carol@example.test"
            ]
        );
    }

    #[test]
    fn stored_sasl_secrets_match_what_tern_sasl_derives() {
        let db = parse(&sample()).unwrap();
        let alice = db.get("alice@example.test").unwrap();
        let expected =
            ScramCredentials::from_password("secret", b"0123456789abcdef", 4096).unwrap();
        assert_eq!(alice.scram.as_ref().unwrap(), &expected);
        assert_eq!(
            alice.cram.as_ref().unwrap(),
            &CramSecret::from_password("secret")
        );
        // RFC 2195's example, through a secret loaded from the file.
        let text = format!(
            "[[user]]\naddress = \"tim@example.test\"\npassword = \"{HASH}\"\ncram_md5 = \"{}\"\n",
            encode_cram(&CramSecret::from_password("tanstaaftanstaaf"))
        );
        let db = parse(&text).unwrap();
        let cram = db.get("tim@example.test").unwrap().cram.as_ref().unwrap();
        let digest: [u8; 16] = [
            0xb9, 0x13, 0xa6, 0x02, 0xc7, 0xed, 0xa7, 0xa4, 0x95, 0xb4, 0xe6, 0xe7, 0x33, 0x4d,
            0x38, 0x90,
        ];
        assert!(cram.verify(b"<1896.697170952@postoffice.reston.mci.net>", &digest));
    }

    #[test]
    fn cram_accepts_hex_base64_and_dovecot_prefix() {
        let secret = CramSecret::from_password("pw");
        let hex = encode_cram(&secret);
        let b64 = B64.encode(*secret.to_bytes());
        for form in [
            hex.clone(),
            hex.to_uppercase(),
            b64,
            format!("{{CRAM-MD5}}{hex}"),
        ] {
            assert_eq!(decode_cram(&form).unwrap(), secret, "{form}");
        }
        assert!(decode_cram(&hex[..62]).is_err());
        assert!(decode_cram("zz").is_err());
    }

    #[test]
    fn check_password_is_the_same_for_unknown_and_wrong() {
        let text = format!(
            "[[user]]\naddress = \"a@example.test\"\npassword = \"{}\"\n",
            crate::hash::hash_password_with(
                "right",
                &crate::HashParams {
                    memory_kib: 64,
                    passes: 1,
                    lanes: 1
                }
            )
            .unwrap()
        );
        let db = parse(&text).unwrap();
        assert_eq!(
            db.check_password("A@example.test", "right")
                .unwrap()
                .unwrap()
                .address,
            "a@example.test"
        );
        assert!(
            db.check_password("a@example.test", "wrong")
                .unwrap()
                .is_none()
        );
        assert!(
            db.check_password("nobody@example.test", "right")
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn errors_name_line_and_key_and_hide_secrets() {
        let cases: [(&str, &str); 9] = [
            (
                "[[user]]\naddress = \"a@b\"\npassword = \"$1$abc$defdefdefdef\"\n",
                "users.toml:3: password: unsupported password hash scheme $1$",
            ),
            (
                "[[user]]\naddress = \"a@b\"\npassword = \"x\"\npasword = \"y\"\n",
                "line 4, column 1: unknown field `pasword`",
            ),
            (
                "[[user]]\naddress = \"nobody\"\npassword = \"x\"\n",
                "users.toml:2: address: not of the form local@domain",
            ),
            ("[[user]]\naddress = \"a@b\"\n", "missing field `password`"),
            ("[[users]]\naddress = \"a@b\"\n", "unknown field `users`"),
            (
                "[[user]]\naddress = \"a@b\"\npassword = \"$2y$05$abcdefghijklmnopqrstuuOQiyCxlgf/oeuTqixKmWdcYUh4Hjl0a\"\ncram_md5 = \"SECRETSECRET\"\n",
                "users.toml:4: cram_md5: expected 64 hex digits",
            ),
            (
                "[[user]]\naddress = \"a@b\"\npassword = \"$2y$05$abcdefghijklmnopqrstuuOQiyCxlgf/oeuTqixKmWdcYUh4Hjl0a\"\nscram_sha256 = \"SCRAM-SHA-256$4096:c2FsdA==$SECRET:SECRET\"\n",
                "users.toml:4: scram_sha256: StoredKey and ServerKey must be 32 bytes",
            ),
            (
                "[[user]]\naddress = \"a@b\"\npassword = \"$2y$05$abcdefghijklmnopqrstuuOQiyCxlgf/oeuTqixKmWdcYUh4Hjl0a\"\nsenders = [\"ok@b\", \"bad\"]\n",
                "users.toml:4: senders: \"bad\": not of the form",
            ),
            (
                "[[user]]\naddress = \"a@b\"\npassword = \"SECRET\n",
                "line 3",
            ),
        ];
        for (text, expected) in cases {
            let err = parse(text).unwrap_err().to_string();
            assert!(err.contains(expected), "{err}\n  expected: {expected}");
            assert!(!err.contains("SECRET"), "{err}");
            assert!(err.starts_with("/etc/tern/users.toml"), "{err}");
        }
    }

    #[test]
    fn duplicate_addresses_are_refused() {
        let text = format!(
            "[[user]]\naddress = \"a@b\"\npassword = \"{BCRYPT}\"\n[[user]]\naddress = \"A@B\"\npassword = \"{BCRYPT}\"\n"
        );
        let err = parse(&text).unwrap_err().to_string();
        assert!(err.contains(":5: address: A@B appears twice"), "{err}");
    }

    #[test]
    fn debug_output_shows_no_secret() {
        let db = parse(&sample()).unwrap();
        let debug = format!("{db:?} {:#?}", db.get("alice@example.test").unwrap());
        assert!(debug.contains("Alice@Example.test"));
        assert!(debug.contains("argon2id"));
        let alice = db.get("alice@example.test").unwrap();
        for secret in [
            HASH.to_owned(),
            HASH[30..50].to_owned(),
            BCRYPT[10..30].to_owned(),
            encode_scram(alice.scram.as_ref().unwrap())[30..50].to_owned(),
            encode_cram(alice.cram.as_ref().unwrap())[..16].to_owned(),
            B64.encode(alice.scram.as_ref().unwrap().stored_key())[..12].to_owned(),
        ] {
            assert!(!debug.contains(&secret), "{secret} in {debug}");
        }
    }

    #[test]
    fn addresses() {
        for ok in [
            "a@b",
            "alice+tag@example.test",
            "\"quoted local\"@example.test".replace(' ', "_").as_str(),
            "δοκιμή@παράδειγμα.δοκιμή",
        ] {
            assert!(check_address(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "a",
            "@b",
            "a@",
            "a b@c",
            "a@b\n",
            "a@.b",
            "a@b.",
            "a@[1.2.3.4]",
            &format!("{}@b", "x".repeat(320)),
        ] {
            assert!(check_address(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn empty_file_is_an_empty_db() {
        assert!(parse("").unwrap().is_empty());
        assert!(parse("# nobody yet\n").unwrap().is_empty());
    }
}
