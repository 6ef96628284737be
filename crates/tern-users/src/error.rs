//! The one error type of this crate.
//!
//! Messages name the file, the line and the key where there is one, and
//! never contain a password, a password hash or a SASL secret: a users file
//! error ends up in logs.

use std::io;
use std::path::PathBuf;

/// What went wrong with the users file, a password hash or an edit.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum UsersError {
    /// Reading, writing, locking or renaming a file failed.
    #[error("{path}: {action}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What was being done (`reading`, `locking`, …).
        action: &'static str,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The users file is not valid TOML, or has an unknown key or a value of
    /// the wrong type.
    #[error("{path}: {message}")]
    Syntax {
        /// The file.
        path: PathBuf,
        /// Where (line and column) and what, without the offending text.
        message: String,
    },
    /// A value in the users file is well-formed TOML but unusable.
    #[error("{path}:{line}: {key}: {problem}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// The line the value is on (1-based).
        line: usize,
        /// The key (`address`, `password`, `scram_sha256`, `cram_md5`, `senders`).
        key: &'static str,
        /// What is wrong, without the value when the value is a secret.
        problem: String,
    },
    /// A password hash whose scheme Tern does not know.
    #[error(
        "unsupported password hash scheme {scheme}: use argon2id, argon2i, bcrypt ($2a$/$2b$/$2y$), sha512-crypt ($6$) or sha256-crypt ($5$)"
    )]
    UnknownScheme {
        /// The scheme identifier as written (sanitised and shortened).
        scheme: String,
    },
    /// A password hash of a known scheme that cannot be used.
    #[error("malformed {scheme} password hash: {problem}")]
    MalformedHash {
        /// The scheme (`argon2id`, `bcrypt`, …).
        scheme: &'static str,
        /// What is wrong with it.
        problem: String,
    },
    /// `tern user add` for an address that already has an entry.
    #[error("user {0} already exists")]
    UserExists(String),
    /// An edit or lookup for an address that has no entry.
    #[error("no such user: {0}")]
    NoSuchUser(String),
    /// An address that cannot be a user name.
    #[error("invalid address {address:?}: {problem}")]
    InvalidAddress {
        /// The address as given.
        address: String,
        /// Why it is refused.
        problem: &'static str,
    },
    /// A new password Tern refuses to store.
    #[error("unusable password: {0}")]
    UnusablePassword(&'static str),
    /// The new password could not be read (closed input, a mismatch
    /// between the two prompts).
    #[error("could not read the password: {0}")]
    PasswordInput(#[source] io::Error),
    /// Hashing or deriving a secret failed (bad parameters, no randomness).
    #[error("could not derive password secrets: {0}")]
    Derive(String),
}

impl UsersError {
    pub(crate) fn io(path: impl Into<PathBuf>, action: &'static str, source: io::Error) -> Self {
        UsersError::Io {
            path: path.into(),
            action,
            source,
        }
    }
}
