//! The admin API's bearer token: made by `tern admin token`, shown once,
//! kept only as its SHA-256 hash.
//!
//! The token is 32 bytes from the system's random generator (256 bits:
//! far beyond guessing, so a fast hash is enough at rest, unlike a
//! password). The file holds `sha256:<hex>` and is written 0600 through a
//! temporary file and a rename, so a reader never sees half of it.
//! Checking hashes what the client presents and compares in constant time.

use std::io::{self, Write as _};
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::Path;

use ring::rand::{SecureRandom as _, SystemRandom};
use subtle::ConstantTimeEq as _;

/// What a token starts with (so it is recognisable in a secrets scanner).
pub const TOKEN_PREFIX: &str = "tern_";

/// A new token, to be shown once.
#[derive(Clone)]
pub struct Token(String);

impl Token {
    /// The token text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(…)")
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn digest(token: &str) -> ring::digest::Digest {
    ring::digest::digest(&ring::digest::SHA256, token.as_bytes())
}

/// Makes a token, stores its hash at `path` (replacing any previous one)
/// and returns it.
pub fn create(path: &Path) -> io::Result<Token> {
    let mut raw = [0u8; 32];
    SystemRandom::new()
        .fill(&mut raw)
        .map_err(|_| io::Error::other("no system randomness"))?;
    let token = Token(format!("{TOKEN_PREFIX}{}", hex(&raw)));
    let line = format!("sha256:{}\n", hex(digest(&token.0).as_ref()));
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension("tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(line.as_bytes())?;
    f.sync_all()?;
    drop(f);
    std::fs::rename(&tmp, path)?;
    Ok(token)
}

/// Whether a token's hash is stored at `path`.
pub fn exists(path: &Path) -> bool {
    read_hash(path).is_ok()
}

fn read_hash(path: &Path) -> io::Result<Vec<u8>> {
    let text = std::fs::read_to_string(path)?;
    let hexed = text
        .trim()
        .strip_prefix("sha256:")
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "not a sha256: line"))?;
    if hexed.len() != 64 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "not a SHA-256 hash",
        ));
    }
    (0..32)
        .map(|i| u8::from_str_radix(&hexed[2 * i..2 * i + 2], 16))
        .collect::<Result<Vec<u8>, _>>()
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "not a SHA-256 hash"))
}

/// Whether `presented` is the token whose hash is stored at `path`. An
/// unreadable or missing file matches nothing.
pub fn verify(path: &Path, presented: &str) -> bool {
    let Ok(stored) = read_hash(path) else {
        return false;
    };
    let d = digest(presented);
    bool::from(d.as_ref().ct_eq(&stored))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt as _;

    #[test]
    fn made_once_checked_by_hash() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("admin-token.sha256");
        assert!(!exists(&path));
        assert!(!verify(&path, "anything"));
        let t = create(&path).unwrap();
        assert!(t.as_str().starts_with(TOKEN_PREFIX) && t.as_str().len() == 69);
        let stored = std::fs::read_to_string(&path).unwrap();
        assert!(
            !stored.contains(&t.as_str()[5..]),
            "only the hash is stored"
        );
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert!(verify(&path, t.as_str()));
        assert!(!verify(&path, &t.as_str()[..68]));
        assert!(!verify(&path, ""));
        // A new token replaces the old one.
        let t2 = create(&path).unwrap();
        assert!(verify(&path, t2.as_str()));
        assert!(!verify(&path, t.as_str()));
        assert_eq!(format!("{t:?}"), "Token(…)");
    }
}
