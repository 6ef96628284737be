//! CRAM-MD5 (RFC 2195): the stored secret, the challenge and the check.
//!
//! The server keeps a [`CramSecret`]: the two MD5 chaining values that
//! HMAC-MD5 reaches after absorbing the padded key XOR ipad and XOR opad.
//! That is enough to compute `HMAC-MD5(password, challenge)` for any
//! challenge without the clear password (it is still a password equivalent
//! for CRAM-MD5 itself, so it must be stored as carefully as a password).
//! This module must never compare digests in variable time and never let a
//! secret be printed.

use md5::Digest;
use md5::Md5;
use md5::block_api::Md5Core;
use md5::digest::block_api::{Buffer, CoreProxy, UpdateCore};
use md5::digest::common::hazmat::{SerializableState, SerializedState};
use std::fmt;
use subtle::ConstantTimeEq;
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

const BLOCK: usize = 64;

/// The server-side secret for CRAM-MD5 of one user: the HMAC-MD5 inner and
/// outer states for their password (32 bytes). `Debug` prints `***`.
#[derive(Clone)]
pub struct CramSecret {
    inner: [u8; 16],
    outer: [u8; 16],
}

impl CramSecret {
    /// Derives the secret from a clear password (for `tern user add|passwd`).
    pub fn from_password(password: &str) -> CramSecret {
        let mut key = Zeroizing::new([0u8; BLOCK]);
        let pw = password.as_bytes();
        if pw.len() > BLOCK {
            let digest = Md5::digest(pw);
            key[..digest.len()].copy_from_slice(&digest);
        } else {
            key[..pw.len()].copy_from_slice(pw);
        }
        CramSecret {
            inner: pad_state(&key, 0x36),
            outer: pad_state(&key, 0x5c),
        }
    }

    /// Rebuilds a secret from its storage form ([`CramSecret::to_bytes`]).
    pub fn from_bytes(bytes: [u8; 32]) -> CramSecret {
        let bytes = Zeroizing::new(bytes);
        let mut inner = [0u8; 16];
        let mut outer = [0u8; 16];
        inner.copy_from_slice(&bytes[..16]);
        outer.copy_from_slice(&bytes[16..]);
        CramSecret { inner, outer }
    }

    /// The storage form: inner state then outer state, each as four
    /// little-endian 32-bit MD5 chaining words.
    pub fn to_bytes(&self) -> Zeroizing<[u8; 32]> {
        let mut out = Zeroizing::new([0u8; 32]);
        out[..16].copy_from_slice(&self.inner);
        out[16..].copy_from_slice(&self.outer);
        out
    }

    /// Checks a client digest (`HMAC-MD5(password, challenge)`) in constant
    /// time.
    pub fn verify(&self, challenge: &[u8], digest: &[u8; 16]) -> bool {
        self.hmac(challenge).ct_eq(digest).into()
    }

    /// `HMAC-MD5(password, message)` from the stored states.
    pub(crate) fn hmac(&self, message: &[u8]) -> [u8; 16] {
        let mut inner = resume(&self.inner);
        inner.update(message);
        let inner_hash = inner.finalize();
        let mut outer = resume(&self.outer);
        outer.update(inner_hash);
        outer.finalize().into()
    }
}

impl Drop for CramSecret {
    fn drop(&mut self) {
        self.inner.zeroize();
        self.outer.zeroize();
    }
}

impl ZeroizeOnDrop for CramSecret {}

/// Constant-time comparison.
impl PartialEq for CramSecret {
    fn eq(&self, other: &CramSecret) -> bool {
        (self.inner.ct_eq(&other.inner) & self.outer.ct_eq(&other.outer)).into()
    }
}

impl Eq for CramSecret {}

impl fmt::Debug for CramSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("CramSecret(***)")
    }
}

/// The MD5 chaining value after one block `key XOR pad`.
fn pad_state(key: &[u8; BLOCK], pad: u8) -> [u8; 16] {
    let mut block = Zeroizing::new([0u8; BLOCK]);
    for (b, k) in block.iter_mut().zip(key.iter()) {
        *b = k ^ pad;
    }
    let mut core = Md5Core::default();
    core.update_blocks(&[(*block).into()]);
    let serialized = core.serialize();
    let mut state = [0u8; 16];
    state.copy_from_slice(&serialized[..16]);
    let mut serialized = serialized;
    serialized.as_mut_slice().zeroize();
    state
}

/// An MD5 hasher positioned after one absorbed block with chaining value
/// `state`.
fn resume(state: &[u8; 16]) -> Md5 {
    let mut serialized = SerializedState::<Md5Core>::default();
    serialized[..16].copy_from_slice(state);
    serialized[16..].copy_from_slice(&1u64.to_le_bytes());
    // Deserialising an MD5 core accepts any 24 bytes; the fallback is never
    // taken but keeps this free of panics.
    let core = Md5Core::deserialize(&serialized).unwrap_or_default();
    serialized.as_mut_slice().zeroize();
    Md5::compose(core, Buffer::<Md5Core>::default())
}

/// Builds the challenge `<hex(nonce).now@hostname>` (RFC 2195 uses an RFC
/// 822 msg-id; any unique string in that shape works).
pub(crate) fn challenge(nonce: &[u8], now_unix: u64, hostname: &str) -> Vec<u8> {
    let mut out = String::with_capacity(nonce.len() * 2 + hostname.len() + 24);
    out.push('<');
    for b in nonce {
        out.push_str(&format!("{b:02x}"));
    }
    out.push('.');
    out.push_str(&now_unix.to_string());
    out.push('@');
    // The host name comes from configuration; keep the challenge a valid
    // msg-id even if it is odd.
    out.extend(
        hostname
            .chars()
            .filter(|c| c.is_ascii_graphic() && !matches!(c, '<' | '>' | '@')),
    );
    out.push('>');
    out.into_bytes()
}

/// Why a CRAM-MD5 response was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CramParseError {
    /// Not `user SP 32-hex-digits`.
    Shape,
    /// The user name is not valid.
    User,
}

/// Parses `user SP digest` (the digest as 32 hex digits, either case).
pub(crate) fn parse_response(response: &[u8]) -> Result<(String, [u8; 16]), CramParseError> {
    let space = response
        .iter()
        .rposition(|&b| b == b' ')
        .ok_or(CramParseError::Shape)?;
    let (user, hex) = (&response[..space], &response[space + 1..]);
    let digest = decode_hex16(hex).ok_or(CramParseError::Shape)?;
    let user = crate::plain::parse_identity(user).map_err(|_| CramParseError::User)?;
    Ok((user, digest))
}

fn decode_hex16(hex: &[u8]) -> Option<[u8; 16]> {
    if hex.len() != 32 {
        return None;
    }
    let mut out = [0u8; 16];
    for (o, pair) in out.iter_mut().zip(hex.chunks_exact(2)) {
        let hi = (pair[0] as char).to_digit(16)?;
        let lo = (pair[1] as char).to_digit(16)?;
        *o = u8::try_from(hi * 16 + lo).ok()?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use hmac::{KeyInit, Mac};

    fn reference(password: &[u8], message: &[u8]) -> [u8; 16] {
        let mut mac = hmac::Hmac::<Md5>::new_from_slice(password).unwrap();
        mac.update(message);
        mac.finalize().into_bytes().into()
    }

    #[test]
    fn rfc2195_example() {
        let secret = CramSecret::from_password("tanstaaftanstaaf");
        let challenge = b"<1896.697170952@postoffice.reston.mci.net>";
        let (user, digest) = parse_response(b"tim b913a602c7eda7a495b4e6e7334d3890").unwrap();
        assert_eq!(user, "tim");
        assert!(secret.verify(challenge, &digest));
        assert!(!CramSecret::from_password("tanstaaftanstaaF").verify(challenge, &digest));
        assert!(!secret.verify(b"<1896.697170953@postoffice.reston.mci.net>", &digest));
    }

    #[test]
    fn matches_reference_hmac_for_all_key_lengths() {
        for len in [0usize, 1, 15, 63, 64, 65, 100, 200] {
            let password: String = (0..len)
                .map(|i| char::from(b'a' + (i % 26) as u8))
                .collect();
            let secret = CramSecret::from_password(&password);
            for msg in [&b""[..], b"<1.2@h>", &[7u8; 130][..]] {
                assert_eq!(
                    secret.hmac(msg),
                    reference(password.as_bytes(), msg),
                    "len {len}"
                );
            }
        }
    }

    #[test]
    fn storage_round_trip() {
        let secret = CramSecret::from_password("pw");
        let again = CramSecret::from_bytes(*secret.to_bytes());
        assert_eq!(secret, again);
        assert_eq!(again.hmac(b"x"), reference(b"pw", b"x"));
        assert_eq!(format!("{secret:?}"), "CramSecret(***)");
    }

    #[test]
    fn response_parsing() {
        let (u, d) = parse_response(b"john doe B913A602C7EDA7A495B4E6E7334D3890").unwrap();
        assert_eq!(u, "john doe");
        assert_eq!(d[0], 0xb9);
        for bad in [
            &b""[..],
            b"tim",
            b"tim ",
            b" b913a602c7eda7a495b4e6e7334d3890",
            b"tim b913a602c7eda7a495b4e6e7334d389",
            b"tim b913a602c7eda7a495b4e6e7334d38900",
            b"tim b913a602c7eda7a495b4e6e7334d389g",
            b"tim +913a602c7eda7a495b4e6e7334d3890",
            b"t\nm b913a602c7eda7a495b4e6e7334d3890",
        ] {
            assert!(parse_response(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn challenge_shape() {
        let c = challenge(&[0x01, 0xab], 697170952, "mx.example.test");
        assert_eq!(c, b"<01ab.697170952@mx.example.test>");
        let c = challenge(&[1], 5, "bad<host>@x\r\n");
        assert_eq!(c, b"<01.5@badhostx>");
    }
}
