//! Content-transfer-decoding for `BINARY[section]` and `BINARY.SIZE`
//! (RFC 3516) and for searching decoded text.
//!
//! BINARY decodes strictly, as Dovecot does: content that is not valid in
//! its encoding is [`BinaryError::InvalidContent`] (Dovecot answers
//! `NO [PARSE]`), an encoding this crate does not know is
//! [`BinaryError::UnknownCte`] (`NO [UNKNOWN-CTE]`). SEARCH decodes
//! leniently ([`decode_lenient`]): base64 skips bytes outside its
//! alphabet, quoted-printable keeps a malformed `=` as it stands.

use std::borrow::Cow;

use crate::structure::{Kind, Part};

/// Why a part cannot be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BinaryError {
    /// The part's Content-Transfer-Encoding is not one RFC 2045 defines.
    #[error("unknown content-transfer-encoding {0:?}")]
    UnknownCte(String),
    /// The content is not valid in its transfer encoding (Dovecot answers
    /// `NO [PARSE] Invalid data in MIME part`).
    #[error("invalid {0} content")]
    InvalidContent(&'static str),
    /// The section names no part.
    #[error(transparent)]
    Section(#[from] crate::section::SectionError),
}

/// Decodes `body` per `encoding` (lowercase, as in
/// [`crate::structure::Part::encoding`]; empty means 7bit), strictly, as
/// BINARY needs: base64 with characters outside its alphabet, data after
/// the padding or a truncated last group, and quoted-printable with an `=`
/// that starts neither a hex pair nor a soft line break, are
/// [`BinaryError::InvalidContent`].
pub fn decode<'a>(encoding: &str, body: &'a [u8]) -> Result<Cow<'a, [u8]>, BinaryError> {
    match encoding {
        "base64" if !valid_base64(body) => Err(BinaryError::InvalidContent("base64")),
        "quoted-printable" if !valid_quoted_printable(body) => {
            Err(BinaryError::InvalidContent("quoted-printable"))
        }
        _ => decode_lenient(encoding, body),
    }
}

fn is_blank(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\r' | b'\n')
}

/// Strict base64: alphabet and white space, then at most two `=` that
/// complete the last group, then only white space.
fn valid_base64(body: &[u8]) -> bool {
    let mut n = 0usize;
    let mut pad = 0usize;
    for &c in body {
        if is_blank(c) {
            continue;
        }
        if c == b'=' {
            pad += 1;
        } else if pad > 0 || b64_value(c).is_none() {
            return false;
        } else {
            n += 1;
        }
    }
    matches!((n % 4, pad), (0, 0) | (2, 2) | (3, 1))
}

/// Strict quoted-printable: every `=` starts a hex pair or a soft line
/// break (blanks then the line end, or the end of the body).
fn valid_quoted_printable(body: &[u8]) -> bool {
    let mut i = 0;
    while let Some(p) = body[i..].iter().position(|&b| b == b'=') {
        let at = i + p;
        let rest = &body[at + 1..];
        let hex_pair = rest.len() >= 2 && hex(rest[0]).is_some() && hex(rest[1]).is_some();
        let blanks = rest
            .iter()
            .take_while(|&&b| b == b' ' || b == b'\t')
            .count();
        let soft = matches!(&rest[blanks..], [] | [b'\n', ..] | [b'\r', b'\n', ..]);
        if !hex_pair && !soft {
            return false;
        }
        i = at + 1;
    }
    true
}

/// Decodes `body` per `encoding` leniently, for searching: base64 skips
/// what is not in its alphabet, quoted-printable keeps a malformed `=`.
pub fn decode_lenient<'a>(encoding: &str, body: &'a [u8]) -> Result<Cow<'a, [u8]>, BinaryError> {
    match encoding {
        "" | "7bit" | "8bit" | "binary" => Ok(Cow::Borrowed(body)),
        "base64" => Ok(Cow::Owned(base64(body))),
        "quoted-printable" => Ok(Cow::Owned(quoted_printable(body))),
        other => Err(BinaryError::UnknownCte(other.to_string())),
    }
}

fn b64_value(c: u8) -> Option<u32> {
    Some(match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' => 62,
        b'/' => 63,
        _ => return None,
    } as u32)
}

/// Lenient base64 (RFC 2045 §6.8).
pub fn base64(input: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(input.len() / 4 * 3);
    let mut acc = 0u32;
    let mut n = 0;
    for &c in input {
        if c == b'=' {
            break;
        }
        let Some(v) = b64_value(c) else { continue };
        acc = (acc << 6) | v;
        n += 1;
        if n == 4 {
            out.extend_from_slice(&[(acc >> 16) as u8, (acc >> 8) as u8, acc as u8]);
            acc = 0;
            n = 0;
        }
    }
    match n {
        2 => out.push((acc >> 4) as u8),
        3 => out.extend_from_slice(&[(acc >> 10) as u8, (acc >> 2) as u8]),
        _ => {}
    }
    out
}

fn hex(c: u8) -> Option<u8> {
    (c as char).to_digit(16).map(|d| d as u8)
}

/// Lenient quoted-printable (RFC 2045 §6.7): `=XX` decoded, soft line
/// breaks removed, trailing blanks before a line end dropped.
pub fn quoted_printable(input: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(input.len());
    let mut i = 0;
    while i < input.len() {
        let c = input[i];
        match c {
            b'=' => {
                // Soft line break: `=` then optional blanks then the line end.
                let mut j = i + 1;
                while j < input.len() && (input[j] == b' ' || input[j] == b'\t') {
                    j += 1;
                }
                if j < input.len() && input[j] == b'\n' {
                    i = j + 1;
                    continue;
                }
                if j + 1 < input.len() && input[j] == b'\r' && input[j + 1] == b'\n' {
                    i = j + 2;
                    continue;
                }
                if j == input.len() {
                    break;
                }
                if i + 2 < input.len()
                    && let (Some(a), Some(b)) = (hex(input[i + 1]), hex(input[i + 2]))
                {
                    out.push(a << 4 | b);
                    i += 3;
                    continue;
                }
                out.push(b'=');
                i += 1;
            }
            b' ' | b'\t' => {
                let mut j = i;
                while j < input.len() && (input[j] == b' ' || input[j] == b'\t') {
                    j += 1;
                }
                let at_eol = j == input.len()
                    || input[j] == b'\n'
                    || (input[j] == b'\r' && input.get(j + 1) == Some(&b'\n'));
                if !at_eol {
                    out.extend_from_slice(&input[i..j]);
                }
                i = j;
            }
            _ => {
                out.push(c);
                i += 1;
            }
        }
    }
    out
}

fn is_identity(encoding: &str) -> bool {
    matches!(encoding, "" | "7bit" | "8bit" | "binary")
}

/// A leaf's body decoded for BINARY.
pub(crate) fn decode_part<'a>(p: &Part, bytes: &'a [u8]) -> Result<Cow<'a, [u8]>, BinaryError> {
    if p.encoding_invalid {
        return Err(BinaryError::UnknownCte(p.encoding_raw.clone()));
    }
    decode(&p.encoding, &bytes[p.body.clone()])
}

/// Whether some leaf in `p` has a transfer encoding to remove.
pub(crate) fn needs_decoding(p: &Part) -> bool {
    match &p.kind {
        Kind::Leaf => p.encoding_invalid || !is_identity(&p.encoding),
        Kind::Multipart(ch) => ch.iter().any(needs_decoding),
        Kind::Message(inner) => needs_decoding(inner),
    }
}

/// Appends `p` (header and body) with every leaf decoded. A decoded
/// leaf's `Content-Transfer-Encoding` fields are dropped and
/// `Content-Transfer-Encoding: binary` is added as the header's last field
/// (Dovecot's output, byte for byte).
pub(crate) fn rebuild_entity(bytes: &[u8], p: &Part, out: &mut Vec<u8>) -> Result<(), BinaryError> {
    let header = &bytes[p.header.clone()];
    if matches!(p.kind, Kind::Leaf) && !is_identity(&p.encoding) {
        let (eol, blank): (&[u8], usize) = if header.ends_with(b"\r\n\r\n") || header == b"\r\n" {
            (b"\r\n", 2)
        } else if header.ends_with(b"\n\n") || header == b"\n" {
            (b"\n", 1)
        } else {
            (b"\r\n", 0)
        };
        let fields_end = header.len() - blank;
        let mut cursor = 0;
        for f in crate::header::fields(header) {
            if f.name.eq_ignore_ascii_case(b"content-transfer-encoding") {
                // `f.raw` is a sub-slice of `header`: its offset.
                let at = f.raw.as_ptr() as usize - header.as_ptr() as usize;
                out.extend_from_slice(&header[cursor..at]);
                cursor = at + f.raw.len();
            }
        }
        out.extend_from_slice(&header[cursor..fields_end.max(cursor)]);
        if blank == 0 && !header.is_empty() && !header.ends_with(b"\n") {
            out.extend_from_slice(eol);
        }
        out.extend_from_slice(b"Content-Transfer-Encoding: binary");
        out.extend_from_slice(eol);
        out.extend_from_slice(eol);
    } else {
        out.extend_from_slice(header);
    }
    rebuild_body(bytes, p, out)
}

/// Appends the body of `p` with every leaf inside decoded.
pub(crate) fn rebuild_body(bytes: &[u8], p: &Part, out: &mut Vec<u8>) -> Result<(), BinaryError> {
    match &p.kind {
        Kind::Leaf => out.extend_from_slice(&decode_part(p, bytes)?),
        Kind::Message(inner) => rebuild_entity(bytes, inner, out)?,
        Kind::Multipart(children) => {
            let mut cursor = p.body.start;
            for c in children {
                let start = c.header.start.max(cursor);
                out.extend_from_slice(&bytes[cursor..start]);
                rebuild_entity(bytes, c, out)?;
                cursor = c.body.end.max(start);
            }
            out.extend_from_slice(&bytes[cursor..p.body.end.max(cursor)]);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_cases() {
        let cases: &[(&[u8], &[u8])] = &[
            (b"aGVsbG8=", b"hello"),
            (b"aGVs\r\nbG8gd29y\r\nbGQ=\r\n", b"hello world"),
            (b"aGk", b"hi"),
            (b"", b""),
            (b"!!aGk!!", b"hi"),
            (b"aGk=junk", b"hi"),
        ];
        for (input, want) in cases {
            assert_eq!(base64(input), *want, "{:?}", String::from_utf8_lossy(input));
        }
    }

    #[test]
    fn quoted_printable_cases() {
        let cases: &[(&[u8], &[u8])] = &[
            (b"caf=C3=A9", "caf\u{e9}".as_bytes()),
            (b"soft=\r\nbreak", b"softbreak"),
            (b"soft= \nbreak", b"softbreak"),
            (b"trail  \r\nx", b"trail\r\nx"),
            (b"a = b", b"a = b"),
            (b"bad=ZZ", b"bad=ZZ"),
            (b"lower=c3=a9", "lower\u{e9}".as_bytes()),
            (b"end=", b"end"),
            (b"x=4", b"x=4"),
        ];
        for (input, want) in cases {
            assert_eq!(
                quoted_printable(input),
                *want,
                "{:?}",
                String::from_utf8_lossy(input)
            );
        }
    }

    #[test]
    fn strict_decoding_as_dovecot() {
        // Each answer checked against Dovecot 2.3.19's BINARY.
        type Case<'a> = (&'a str, &'a [u8], Option<&'a [u8]>);
        let cases: &[Case<'_>] = &[
            ("base64", b"aGVsbG8=\r\n", Some(b"hello")),
            ("base64", b"aGVs bG8=\r\n", Some(b"hello")),
            ("base64", b"aGVsbG8=\r\n\r\n", Some(b"hello")),
            ("base64", b"aGVsbA==\r\n", Some(b"hell")),
            ("base64", b"", Some(b"")),
            ("base64", b"aGVsbG8=junk\r\n", None),
            ("base64", b"aGVsbG8=\r\nmore\r\n", None),
            ("base64", b"aGV!sbG8=\r\n", None),
            ("base64", b"aGVsbA=\r\n", None),
            ("base64", b"aGVsb\r\n", None),
            ("quoted-printable", b"a=ZZb\r\n", None),
            ("quoted-printable", b"a=4\r\n", None),
            ("quoted-printable", b"a = b\r\n", None),
            ("quoted-printable", b"a=\r\nb\r\n", Some(b"ab\r\n")),
            (
                "quoted-printable",
                b"a=c3=a9\r\n",
                Some("a\u{e9}\r\n".as_bytes()),
            ),
        ];
        for (cte, body, want) in cases {
            let got = decode(cte, body);
            match want {
                Some(w) => assert_eq!(got.as_deref().ok(), Some(*w), "{cte} {body:?}"),
                None => assert!(
                    matches!(got, Err(BinaryError::InvalidContent(_))),
                    "{cte} {body:?}: {got:?}"
                ),
            }
            assert!(decode_lenient(cte, body).is_ok());
        }
    }

    #[test]
    fn unknown_cte() {
        assert_eq!(
            decode("x-uuencode", b"x"),
            Err(BinaryError::UnknownCte("x-uuencode".into()))
        );
        assert_eq!(decode("8bit", b"x").unwrap(), &b"x"[..]);
    }
}
