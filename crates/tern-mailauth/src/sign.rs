//! DKIM signing of outgoing mail (RFC 6376, RFC 8463): every key found for
//! the signing domain signs, so a domain with an RSA and an Ed25519 key
//! gets two `DKIM-Signature:` fields. Canonicalisation is relaxed/relaxed;
//! the header list follows RFC 6376 5.4.1 and 8.15: the fields an attacker
//! would like to add or change are signed once more than they occur
//! ("oversigned"), so that adding one breaks the signature.
//!
//! The signer never logs or returns key material, and never alters the
//! message: it returns header fields for the caller to prepend. The key set
//! in force is shared through a [`SignerHandle`], swapped whole on reload.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, RwLock};

use mail_auth::common::headers::HeaderWriter as _;

use crate::error::Error;
use crate::keys::{DkimKey, KeyAlgorithm, load_domain_keys};

/// Signed when present (RFC 6376 5.4.1); absent ones are signed as empty,
/// so they cannot be added later.
pub const SIGNED_HEADERS: &[&str] = &[
    "From",
    "Reply-To",
    "Subject",
    "Date",
    "To",
    "Cc",
    "Message-ID",
    "In-Reply-To",
    "References",
    "MIME-Version",
    "Content-Type",
    "Content-Transfer-Encoding",
    "Resent-Date",
    "Resent-From",
    "Resent-To",
    "Resent-Cc",
    "List-Id",
    "List-Help",
    "List-Unsubscribe",
    "List-Unsubscribe-Post",
    "List-Subscribe",
    "List-Post",
    "List-Owner",
    "List-Archive",
];

/// Listed once more (RFC 6376 8.15): an extra instance of any of them
/// invalidates the signature.
pub const OVERSIGNED_HEADERS: &[&str] = &[
    "From",
    "Reply-To",
    "Subject",
    "Date",
    "To",
    "Cc",
    "Message-ID",
    "MIME-Version",
    "Content-Type",
    "Content-Transfer-Encoding",
];

/// The header list given to the signer. The library matches each field
/// against the first equal name and lists names it did not meet as
/// empty, so the repeated names become the oversigning entries.
pub(crate) fn header_list() -> Vec<&'static str> {
    SIGNED_HEADERS
        .iter()
        .chain(OVERSIGNED_HEADERS.iter())
        .copied()
        .collect()
}

/// The keys of every signing domain, loaded once (reload by building a
/// new one).
#[derive(Debug, Default)]
pub struct Signer {
    keys: BTreeMap<String, Vec<DkimKey>>,
}

impl Signer {
    /// Loads the keys of `domains` from `keys_dir`. Domains without keys
    /// are simply not signed for.
    pub fn load<'a>(
        keys_dir: &Path,
        domains: impl IntoIterator<Item = &'a str>,
    ) -> Result<Signer, Error> {
        let mut keys = BTreeMap::new();
        for domain in domains {
            let domain = domain.trim_end_matches('.').to_ascii_lowercase();
            let found = load_domain_keys(keys_dir, &domain)?;
            if !found.is_empty() {
                keys.insert(domain, found);
            }
        }
        Ok(Signer { keys })
    }

    /// Whether any key was found at all.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The keys of `domain` (empty when none).
    pub fn keys(&self, domain: &str) -> &[DkimKey] {
        self.keys
            .get(&domain.trim_end_matches('.').to_ascii_lowercase())
            .map(Vec::as_slice)
            .unwrap_or_default()
    }

    /// The key that ARC-seals mail forwarded for `domain`: RSA when there
    /// is one (more verifiers know it), else the first.
    pub fn sealing_key(&self, domain: &str) -> Option<&DkimKey> {
        let keys = self.keys(domain);
        keys.iter()
            .find(|k| k.algorithm == KeyAlgorithm::Rsa)
            .or_else(|| keys.first())
    }

    /// Signs `message` (header section and body, CRLF line ends) with
    /// every key of `domain`. Returns the `DKIM-Signature:` fields to
    /// prepend (RSA first), or an empty string when the domain has no key.
    pub fn sign(&self, domain: &str, message: &[u8]) -> Result<String, Error> {
        let mut out = String::new();
        let mut keys: Vec<&DkimKey> = self.keys(domain).iter().collect();
        keys.sort_by_key(|k| (k.algorithm != KeyAlgorithm::Rsa, k.selector.clone()));
        for key in keys {
            let signature = key.signer.sign(message).map_err(|e| Error::Crypto {
                op: "signing",
                reason: e.to_string(),
            })?;
            out.push_str(&signature.to_header());
        }
        Ok(out)
    }
}

impl Signer {
    /// Signs the message made of `header` (its header section, with the
    /// empty line that ends it) and `body`, read once as a stream, with
    /// every key of `domain`: the same fields as [`Signer::sign`], without
    /// holding the message in memory. CPU work: async callers run it on a
    /// blocking thread.
    pub fn sign_stream(
        &self,
        domain: &str,
        header: &[u8],
        mut body: impl std::io::Read,
    ) -> Result<String, Error> {
        let mut keys: Vec<&DkimKey> = self.keys(domain).iter().collect();
        if keys.is_empty() {
            return Ok(String::new());
        }
        keys.sort_by_key(|k| (k.algorithm != KeyAlgorithm::Rsa, k.selector.clone()));
        let mut streams: Vec<_> = keys.iter().map(|k| k.signer.sign_streaming()).collect();
        for s in &mut streams {
            s.write(header);
        }
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = match body.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    return Err(Error::Crypto {
                        op: "reading the message to sign",
                        reason: e.to_string(),
                    });
                }
            };
            for s in &mut streams {
                s.write(&buf[..n]);
            }
        }
        let mut out = String::new();
        for s in streams {
            let signature = s.finish().map_err(|e| Error::Crypto {
                op: "signing",
                reason: e.to_string(),
            })?;
            out.push_str(&signature.to_header());
        }
        Ok(out)
    }
}

/// The domain of the first `From:` address of `message` (the author
/// domain DKIM signs for and DMARC aligns with), lower case.
pub fn author_domain(message: &[u8]) -> Option<String> {
    let parsed = mail_auth::AuthenticatedMessage::parse(message)?;
    let from = parsed.from();
    let (_, domain) = from.rsplit_once('@')?;
    let domain = domain.trim_end_matches('.').to_ascii_lowercase();
    (!domain.is_empty()).then_some(domain)
}

/// The DKIM key set in force, shared by every session and swapped whole
/// when the keys are reloaded (SIGHUP): a message is signed with the set
/// that was current when its end of data was processed, never with half
/// of an old set and half of a new one.
#[derive(Debug, Clone, Default)]
pub struct SignerHandle(Arc<RwLock<Arc<Signer>>>);

impl SignerHandle {
    /// A handle on `signer`.
    pub fn new(signer: Signer) -> SignerHandle {
        SignerHandle(Arc::new(RwLock::new(Arc::new(signer))))
    }

    /// The key set in force now.
    pub fn current(&self) -> Arc<Signer> {
        Arc::clone(&self.0.read().unwrap_or_else(|e| e.into_inner()))
    }

    /// Puts `signer` in force for every message processed from now on.
    pub fn replace(&self, signer: Signer) {
        *self.0.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(signer);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signer_handle_swaps_the_whole_set() {
        let handle = SignerHandle::default();
        let before = handle.current();
        let clone = handle.clone();
        clone.replace(Signer::default());
        let after = handle.current();
        assert!(
            !Arc::ptr_eq(&before, &after),
            "a clone's replace is seen by every handle"
        );
        assert!(Arc::ptr_eq(&after, &clone.current()));
        assert!(
            before.is_empty(),
            "a message in flight keeps the set it started with"
        );
    }

    #[test]
    fn author_domain_of_from() {
        assert_eq!(
            author_domain(b"From: \"A\" <a@Example.TEST>\r\nTo: b@c.test\r\n\r\nx").as_deref(),
            Some("example.test")
        );
        assert_eq!(author_domain(b"To: b@c.test\r\n\r\nx"), None);
    }

    #[test]
    fn oversigned_names_are_listed_twice() {
        let list = header_list();
        for name in OVERSIGNED_HEADERS {
            assert_eq!(list.iter().filter(|n| *n == name).count(), 2, "{name}");
        }
    }
}
