//! Modified UTF-7 mailbox names (RFC 3501 §5.1.3).
//!
//! IMAP4rev1 clients that have not enabled `UTF8=ACCEPT` or `IMAP4rev2`
//! send and expect mailbox names in modified UTF-7: printable US-ASCII
//! stands for itself, `&` is written `&-`, and everything else is UTF-16
//! in a base64 variant (`,` instead of `/`, no padding) between `&` and
//! `-`.
//!
//! [`decode`] is strict: it accepts only the one canonical spelling of each
//! name (no printable ASCII inside a shift, no two adjacent shifts, no
//! leftover bits, no lone surrogates), so `encode(decode(s)?) == s` for
//! every accepted `s`, and two spellings can never name the same mailbox.
//! This module never allocates more than a small constant times its input.

use thiserror::Error;

/// Why a name is not canonical modified UTF-7.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum Utf7Error {
    /// A byte outside printable US-ASCII appeared outside a shift.
    #[error("byte {0:#04x} is not allowed in a modified UTF-7 name")]
    RawByte(u8),
    /// A shift sequence was not closed by `-`.
    #[error("unterminated shift sequence")]
    Unterminated,
    /// A character that is not in the modified base64 alphabet.
    #[error("invalid character in a shift sequence")]
    BadBase64,
    /// The shift's bits do not form whole UTF-16 units, or leftover bits are set.
    #[error("shift sequence has leftover bits")]
    LeftoverBits,
    /// The UTF-16 in a shift is not valid (a lone surrogate).
    #[error("invalid UTF-16 in a shift sequence")]
    BadUtf16,
    /// Not the canonical spelling: printable ASCII inside a shift, or two
    /// shifts next to each other.
    #[error("non-canonical modified UTF-7")]
    NotCanonical,
}

const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+,";

fn b64_value(c: u8) -> Option<u32> {
    match c {
        b'A'..=b'Z' => Some(u32::from(c - b'A')),
        b'a'..=b'z' => Some(u32::from(c - b'a') + 26),
        b'0'..=b'9' => Some(u32::from(c - b'0') + 52),
        b'+' => Some(62),
        b',' => Some(63),
        _ => None,
    }
}

fn is_direct(c: char) -> bool {
    ('\x20'..='\x7e').contains(&c) && c != '&'
}

/// Encode a UTF-8 name into modified UTF-7.
pub fn encode(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let mut pending: Vec<u16> = Vec::new();
    for c in name.chars() {
        if is_direct(c) || c == '&' {
            flush(&mut pending, &mut out);
            if c == '&' {
                out.push_str("&-");
            } else {
                out.push(c);
            }
        } else {
            let mut units = [0u16; 2];
            pending.extend_from_slice(c.encode_utf16(&mut units));
        }
    }
    flush(&mut pending, &mut out);
    out
}

fn flush(units: &mut Vec<u16>, out: &mut String) {
    if units.is_empty() {
        return;
    }
    out.push('&');
    let mut acc: u32 = 0;
    let mut bits = 0u32;
    for &u in units.iter() {
        acc = (acc << 16) | u32::from(u);
        bits += 16;
        while bits >= 6 {
            bits -= 6;
            out.push(char::from(ALPHABET[((acc >> bits) & 0x3f) as usize]));
        }
        acc &= (1 << bits) - 1;
    }
    if bits > 0 {
        out.push(char::from(ALPHABET[((acc << (6 - bits)) & 0x3f) as usize]));
    }
    out.push('-');
    units.clear();
}

/// Decode a modified UTF-7 name into UTF-8, accepting only the canonical
/// spelling.
pub fn decode(name: &str) -> Result<String, Utf7Error> {
    let bytes = name.as_bytes();
    let mut out = String::with_capacity(name.len());
    let mut i = 0;
    let mut last_shift_end: Option<usize> = None;
    while i < bytes.len() {
        let c = bytes[i];
        if c != b'&' {
            if !(0x20..=0x7e).contains(&c) {
                return Err(Utf7Error::RawByte(c));
            }
            out.push(char::from(c));
            i += 1;
            continue;
        }
        // A shift: find its end.
        let start = i + 1;
        let len = bytes[start..]
            .iter()
            .position(|&b| b == b'-')
            .ok_or(Utf7Error::Unterminated)?;
        let end = start + len;
        if len == 0 {
            out.push('&');
            i = end + 1;
            continue;
        }
        if last_shift_end == Some(i) {
            return Err(Utf7Error::NotCanonical);
        }
        let mut units: Vec<u16> = Vec::with_capacity(len * 6 / 16);
        let mut acc: u32 = 0;
        let mut bits = 0u32;
        for &b in &bytes[start..end] {
            let v = b64_value(b).ok_or(Utf7Error::BadBase64)?;
            acc = (acc << 6) | v;
            bits += 6;
            if bits >= 16 {
                bits -= 16;
                units.push(((acc >> bits) & 0xffff) as u16);
                acc &= (1 << bits) - 1;
            }
        }
        // At most 5 leftover bits (one partial sextet), all zero.
        if bits >= 6 || acc != 0 {
            return Err(Utf7Error::LeftoverBits);
        }
        for r in char::decode_utf16(units.iter().copied()) {
            let ch = r.map_err(|_| Utf7Error::BadUtf16)?;
            if is_direct(ch) || ch == '&' {
                return Err(Utf7Error::NotCanonical);
            }
            out.push(ch);
        }
        i = end + 1;
        last_shift_end = Some(i);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn table() {
        let cases = [
            ("INBOX", "INBOX"),
            ("~peter/mail/台北/日本語", "~peter/mail/&U,BTFw-/&ZeVnLIqe-"),
            ("&", "&-"),
            ("Tom & Jerry", "Tom &- Jerry"),
            ("Entwürfe", "Entw&APw-rfe"),
            ("Gelöschte Elemente", "Gel&APY-schte Elemente"),
            ("📧", "&2D3c5w-"),
            ("", ""),
            ("a\u{7f}b", "a&AH8-b"),
        ];
        for (utf8, utf7) in cases {
            assert_eq!(encode(utf8), utf7, "{utf8}");
            assert_eq!(decode(utf7).as_deref(), Ok(utf8), "{utf7}");
        }
    }

    #[test]
    fn rejects() {
        let cases = [
            ("&U,BTFw", Utf7Error::Unterminated),
            ("a\tb", Utf7Error::RawByte(b'\t')),
            ("caf\u{e9}", Utf7Error::RawByte(0xc3)),
            ("&AGE-", Utf7Error::NotCanonical), // 'a' inside a shift
            ("&AO0-&AO0-", Utf7Error::NotCanonical), // two adjacent shifts
            ("&AO1-", Utf7Error::LeftoverBits),
            ("&A-", Utf7Error::LeftoverBits),
            ("&2D0-", Utf7Error::BadUtf16), // lone high surrogate
            ("&U/BTFw-", Utf7Error::BadBase64),
        ];
        for (input, err) in cases {
            assert_eq!(decode(input), Err(err), "{input}");
        }
    }

    proptest! {
        #[test]
        fn round_trip(s in "\\PC{0,20}") {
            let e = encode(&s);
            prop_assert!(e.bytes().all(|b| (0x20..=0x7e).contains(&b)));
            prop_assert_eq!(decode(&e), Ok(s));
        }

        #[test]
        fn accepted_is_canonical(s in "[A-Za-z0-9&,+-]{0,16}") {
            if let Ok(d) = decode(&s) {
                prop_assert_eq!(encode(&d), s);
            }
        }
    }
}
