//! The errors of this crate, grouped by whose fault they are: the key files
//! (admin), the message or the signing library (ours), the DNS setup.

use std::path::PathBuf;

/// Something went wrong with keys, signing or setup.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A key file or directory could not be read or written.
    #[error("{op} {}: {source}", path.display())]
    Io {
        /// What we were doing.
        op: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A key file holds something that is not a usable DKIM key.
    #[error("{}: not a usable DKIM key: {reason}", path.display())]
    BadKey {
        /// The file.
        path: PathBuf,
        /// Why (never the key itself).
        reason: String,
    },
    /// A name given by the admin is not acceptable (domain or selector).
    #[error("invalid {what} {value:?}: {reason}")]
    InvalidName {
        /// `domain` or `selector`.
        what: &'static str,
        /// The value.
        value: String,
        /// Why.
        reason: &'static str,
    },
    /// A key exists already where a new one would be written.
    #[error("{} exists already; remove it first or choose another selector", path.display())]
    KeyExists {
        /// The file.
        path: PathBuf,
    },
    /// Key generation or signing failed inside the crypto library.
    #[error("DKIM {op} failed: {reason}")]
    Crypto {
        /// `signing` or `key generation`.
        op: &'static str,
        /// The library's message.
        reason: String,
    },
}

impl Error {
    pub(crate) fn io(op: &'static str, path: &std::path::Path, source: std::io::Error) -> Error {
        Error::Io {
            op,
            path: path.to_path_buf(),
            source,
        }
    }
}
