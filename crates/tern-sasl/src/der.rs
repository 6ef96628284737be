//! A minimal DER reader for the public keys the JWT validator accepts.
//!
//! Reads just enough of X.509 `SubjectPublicKeyInfo` (RFC 5280) and PKCS#1
//! `RSAPublicKey` (RFC 8017) to extract an RSA modulus and exponent or an
//! uncompressed P-256 point. Keys come from configuration, not from peers,
//! but this reader still must never panic or read out of bounds on any
//! input, and must refuse anything it does not fully understand (trailing
//! bytes, indefinite lengths, non-minimal lengths).

const SEQUENCE: u8 = 0x30;
const INTEGER: u8 = 0x02;
const BIT_STRING: u8 = 0x03;
const NULL: u8 = 0x05;
const OID: u8 = 0x06;

/// OID 1.2.840.113549.1.1.1 (rsaEncryption), contents only.
const RSA_ENCRYPTION: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01];
/// OID 1.2.840.10045.2.1 (id-ecPublicKey).
const EC_PUBLIC_KEY: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01];
/// OID 1.2.840.10045.3.1.7 (prime256v1 / secp256r1).
const PRIME256V1: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];

/// The input is not a key this reader understands. The message is fixed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct DerError(pub(crate) &'static str);

struct Reader<'a> {
    input: &'a [u8],
}

impl<'a> Reader<'a> {
    fn new(input: &'a [u8]) -> Reader<'a> {
        Reader { input }
    }

    fn is_empty(&self) -> bool {
        self.input.is_empty()
    }

    /// Reads one TLV with the given tag and returns its contents.
    fn read(&mut self, tag: u8) -> Result<&'a [u8], DerError> {
        let bad = DerError("malformed DER");
        let (&t, rest) = self.input.split_first().ok_or(bad)?;
        if t != tag {
            return Err(DerError("unexpected DER element"));
        }
        let (&first, mut rest) = rest.split_first().ok_or(bad)?;
        let len = if first < 0x80 {
            usize::from(first)
        } else {
            let count = usize::from(first & 0x7f);
            if count == 0 || count > 4 || rest.len() < count {
                return Err(bad);
            }
            let mut len = 0usize;
            for &b in &rest[..count] {
                len = (len << 8) | usize::from(b);
            }
            // Minimal encoding: long form only for 128 or more, no leading zero.
            if len < 0x80 || rest[0] == 0 {
                return Err(bad);
            }
            rest = &rest[count..];
            len
        };
        if rest.len() < len {
            return Err(bad);
        }
        let (contents, rest) = rest.split_at(len);
        self.input = rest;
        Ok(contents)
    }

    fn finish(&self) -> Result<(), DerError> {
        if self.is_empty() {
            Ok(())
        } else {
            Err(DerError("trailing bytes after DER element"))
        }
    }
}

/// Parses a whole element and insists nothing follows.
fn single(input: &[u8], tag: u8) -> Result<&[u8], DerError> {
    let mut r = Reader::new(input);
    let contents = r.read(tag)?;
    r.finish()?;
    Ok(contents)
}

/// The parts of a `SubjectPublicKeyInfo` this reader uses.
struct Spki<'a> {
    /// The algorithm OID (contents).
    algorithm: &'a [u8],
    /// The parameters when they are an OID (a named curve); `None` when
    /// absent or NULL.
    curve: Option<&'a [u8]>,
    /// The key bits.
    key: &'a [u8],
}

/// Splits a `SubjectPublicKeyInfo`.
fn spki(input: &[u8]) -> Result<Spki<'_>, DerError> {
    let body = single(input, SEQUENCE)?;
    let mut r = Reader::new(body);
    let algorithm = r.read(SEQUENCE)?;
    let bits = r.read(BIT_STRING)?;
    r.finish()?;
    let mut a = Reader::new(algorithm);
    let oid = a.read(OID)?;
    let params = if a.is_empty() {
        None
    } else if a.input.first() == Some(&NULL) {
        a.read(NULL)?;
        None
    } else {
        Some(a.read(OID)?)
    };
    a.finish()?;
    // The key is a whole number of bytes: no unused bits.
    let key = bits
        .strip_prefix(&[0u8])
        .ok_or(DerError("public key bit string has unused bits"))?;
    Ok(Spki {
        algorithm: oid,
        curve: params,
        key,
    })
}

/// An RSA public key: big-endian modulus and exponent, leading zeros removed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RsaPublicKey {
    pub(crate) n: Vec<u8>,
    pub(crate) e: Vec<u8>,
}

fn positive_integer(contents: &[u8]) -> Result<Vec<u8>, DerError> {
    match contents {
        [] => Err(DerError("empty INTEGER")),
        [first, ..] if first & 0x80 != 0 => Err(DerError("negative INTEGER in an RSA key")),
        _ => {
            let start = contents
                .iter()
                .position(|&b| b != 0)
                .unwrap_or(contents.len());
            let value = &contents[start..];
            if value.is_empty() {
                return Err(DerError("zero INTEGER in an RSA key"));
            }
            Ok(value.to_vec())
        }
    }
}

/// PKCS#1 `RSAPublicKey ::= SEQUENCE { modulus INTEGER, publicExponent INTEGER }`.
pub(crate) fn rsa_public_key_pkcs1(input: &[u8]) -> Result<RsaPublicKey, DerError> {
    let body = single(input, SEQUENCE)?;
    let mut r = Reader::new(body);
    let n = positive_integer(r.read(INTEGER)?)?;
    let e = positive_integer(r.read(INTEGER)?)?;
    r.finish()?;
    Ok(RsaPublicKey { n, e })
}

/// An RSA key as `SubjectPublicKeyInfo` or bare PKCS#1.
pub(crate) fn rsa_public_key(input: &[u8]) -> Result<RsaPublicKey, DerError> {
    // An SPKI's first inner element is a SEQUENCE, PKCS#1's an INTEGER.
    let body = single(input, SEQUENCE)?;
    if body.first() == Some(&INTEGER) {
        return rsa_public_key_pkcs1(input);
    }
    let spki = spki(input)?;
    if spki.algorithm != RSA_ENCRYPTION || spki.curve.is_some() {
        return Err(DerError("not an RSA public key"));
    }
    rsa_public_key_pkcs1(spki.key)
}

/// A P-256 key as `SubjectPublicKeyInfo`, or the bare 65-byte uncompressed
/// point. Returns the point.
pub(crate) fn p256_public_key(input: &[u8]) -> Result<Vec<u8>, DerError> {
    if input.len() == 65 && input[0] == 0x04 {
        return Ok(input.to_vec());
    }
    let Spki {
        algorithm,
        curve,
        key,
    } = spki(input)?;
    if algorithm != EC_PUBLIC_KEY || curve != Some(PRIME256V1) {
        return Err(DerError("not a P-256 public key"));
    }
    if key.len() != 65 || key[0] != 0x04 {
        return Err(DerError("P-256 key must be an uncompressed point"));
    }
    Ok(key.to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tlv(tag: u8, contents: &[u8]) -> Vec<u8> {
        let mut out = vec![tag];
        let len = contents.len();
        if len < 0x80 {
            out.push(len as u8);
        } else if len < 0x100 {
            out.extend([0x81, len as u8]);
        } else {
            out.extend([0x82, (len >> 8) as u8, len as u8]);
        }
        out.extend_from_slice(contents);
        out
    }

    fn pkcs1(n: &[u8], e: &[u8]) -> Vec<u8> {
        let mut body = tlv(INTEGER, n);
        body.extend(tlv(INTEGER, e));
        tlv(SEQUENCE, &body)
    }

    #[test]
    fn pkcs1_and_spki_rsa() {
        let mut n = vec![0x00, 0xc5];
        n.extend([0xab; 255]);
        let key = pkcs1(&n, &[0x01, 0x00, 0x01]);
        let parsed = rsa_public_key(&key).unwrap();
        assert_eq!(parsed.n.len(), 256);
        assert_eq!(parsed.n[0], 0xc5);
        assert_eq!(parsed.e, vec![1, 0, 1]);

        let mut alg = tlv(OID, RSA_ENCRYPTION);
        alg.extend(tlv(NULL, &[]));
        let mut bits = vec![0u8];
        bits.extend(&key);
        let mut body = tlv(SEQUENCE, &alg);
        body.extend(tlv(BIT_STRING, &bits));
        let spki = tlv(SEQUENCE, &body);
        assert_eq!(rsa_public_key(&spki).unwrap(), parsed);
        // An RSA key is not a P-256 key.
        assert!(p256_public_key(&spki).is_err());
    }

    #[test]
    fn p256_forms() {
        let mut point = vec![0x04];
        point.extend([7u8; 64]);
        assert_eq!(p256_public_key(&point).unwrap(), point);
        let mut alg = tlv(OID, EC_PUBLIC_KEY);
        alg.extend(tlv(OID, PRIME256V1));
        let mut bits = vec![0u8];
        bits.extend(&point);
        let mut body = tlv(SEQUENCE, &alg);
        body.extend(tlv(BIT_STRING, &bits));
        let spki = tlv(SEQUENCE, &body);
        assert_eq!(p256_public_key(&spki).unwrap(), point);
        assert!(rsa_public_key(&spki).is_err());
        // Compressed points are refused.
        assert!(p256_public_key(&[0x02; 33]).is_err());
    }

    #[test]
    fn malformed_inputs_never_panic() {
        let cases: &[&[u8]] = &[
            &[],
            &[0x30],
            &[0x30, 0x80],
            &[0x30, 0x81, 0x05, 0, 0, 0, 0, 0],
            &[0x30, 0x85, 1, 1, 1, 1, 1],
            &[0x30, 0x82, 0x00, 0x01, 0x00],
            &[0x30, 0x05, 0x02, 0x01],
            &[0x30, 0x06, 0x02, 0x01, 0x01, 0x02, 0x01, 0x81],
            &[0x30, 0x06, 0x02, 0x01, 0x00, 0x02, 0x01, 0x03],
            &[0x30, 0x06, 0x02, 0x01, 0x05, 0x02, 0x01, 0x03, 0x00],
            &[0x30, 0x04, 0x02, 0x00, 0x02, 0x00],
            &[0x02, 0x01, 0x01],
        ];
        for input in cases {
            assert!(rsa_public_key(input).is_err(), "{input:?}");
            assert!(p256_public_key(input).is_err(), "{input:?}");
        }
        // Every prefix of a valid key fails cleanly.
        let key = pkcs1(&[0x00, 0xc5, 0x01], &[0x03]);
        for end in 0..key.len() {
            assert!(rsa_public_key(&key[..end]).is_err());
        }
        assert!(rsa_public_key(&key).is_ok());
    }
}
