//! Header-field scanning over raw bytes: where a header ends, which bytes
//! make up each field (with its folded continuation lines), unfolding.
//!
//! Works on byte ranges of the original message so that IMAP sections can
//! return the stored octets unchanged. Never allocates per byte, never
//! decodes: decoding (RFC 2047, charsets) happens in [`crate::search`] and
//! [`crate::sort`], and only on demand.

use std::borrow::Cow;
use std::ops::Range;

/// Splits `bytes` at the end of its header block.
///
/// Returns `(header, body)` ranges relative to `bytes`: the header runs up
/// to and including the empty line that ends it (`CRLF` or a bare `LF`);
/// the body is everything after. A part that starts with an empty line has
/// a header of just that line. Without an empty line, the whole input is
/// header and the body is empty (at the end).
pub(crate) fn split_header(bytes: &[u8]) -> (Range<usize>, Range<usize>) {
    let mut pos = 0;
    while pos < bytes.len() {
        let line_end = match memchr(b'\n', &bytes[pos..]) {
            Some(i) => pos + i + 1,
            None => bytes.len(),
        };
        let line = &bytes[pos..line_end];
        if line == b"\n" || line == b"\r\n" {
            return (0..line_end, line_end..bytes.len());
        }
        pos = line_end;
    }
    (0..bytes.len(), bytes.len()..bytes.len())
}

/// Index of the first `needle` byte in `hay`.
pub(crate) fn memchr(needle: u8, hay: &[u8]) -> Option<usize> {
    hay.iter().position(|&b| b == needle)
}

/// One header field as stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Field<'a> {
    /// The field name as written (without the colon, trailing blanks
    /// removed).
    pub name: &'a [u8],
    /// The raw value: everything after the colon up to (not including)
    /// the line end of the last continuation line; folding kept.
    pub value: &'a [u8],
    /// The whole field: name, colon, value and every line end.
    pub raw: &'a [u8],
}

/// Iterator over the fields of a header block (see [`fields`]).
#[derive(Debug, Clone)]
pub struct Fields<'a> {
    bytes: &'a [u8],
    pos: usize,
}

/// The fields of `header` in order. Lines that are neither a field (no
/// colon) nor a continuation are skipped; the empty line ends the
/// iteration.
pub fn fields(header: &[u8]) -> Fields<'_> {
    Fields {
        bytes: header,
        pos: 0,
    }
}

fn line_end(bytes: &[u8], from: usize) -> usize {
    match memchr(b'\n', &bytes[from..]) {
        Some(i) => from + i + 1,
        None => bytes.len(),
    }
}

impl<'a> Iterator for Fields<'a> {
    type Item = Field<'a>;

    fn next(&mut self) -> Option<Field<'a>> {
        loop {
            let b = self.bytes;
            if self.pos >= b.len() {
                return None;
            }
            let start = self.pos;
            let first_end = line_end(b, start);
            let first = &b[start..first_end];
            if first == b"\n" || first == b"\r\n" {
                self.pos = b.len();
                return None;
            }
            // Continuation lines belong to this field.
            let mut end = first_end;
            while end < b.len() && (b[end] == b' ' || b[end] == b'\t') {
                end = line_end(b, end);
            }
            self.pos = end;
            let raw = &b[start..end];
            let Some(colon) = memchr(b':', first) else {
                continue;
            };
            if first[0] == b' ' || first[0] == b'\t' {
                // A continuation line with no field before it.
                continue;
            }
            let name = trim_end(&raw[..colon]);
            if name.is_empty() {
                continue;
            }
            let value = strip_line_end(&raw[colon + 1..]);
            return Some(Field { name, value, raw });
        }
    }
}

fn strip_line_end(v: &[u8]) -> &[u8] {
    let v = v.strip_suffix(b"\n").unwrap_or(v);
    v.strip_suffix(b"\r").unwrap_or(v)
}

/// `v` without leading and trailing blanks (space, tab, CR, LF).
pub(crate) fn trim(v: &[u8]) -> &[u8] {
    trim_end(trim_start(v))
}

pub(crate) fn trim_start(v: &[u8]) -> &[u8] {
    let n = v.iter().take_while(|b| is_ws(**b)).count();
    &v[n..]
}

pub(crate) fn trim_end(v: &[u8]) -> &[u8] {
    let n = v.iter().rev().take_while(|b| is_ws(**b)).count();
    &v[..v.len() - n]
}

pub(crate) fn is_ws(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\r' | b'\n')
}

/// Unfolds a raw value the way Dovecot reports it in ENVELOPE and
/// BODYSTRUCTURE: blanks (space, tab) before the first character of the
/// first line skipped, then every CR and LF removed (the blank that
/// follows a fold is kept, RFC 5322 §2.2.3); trailing blanks stay.
pub fn unfold(value: &[u8]) -> Cow<'_, [u8]> {
    let n = value
        .iter()
        .take_while(|&&b| b == b' ' || b == b'\t')
        .count();
    let v = &value[n..];
    if !v.iter().any(|&b| b == b'\r' || b == b'\n') {
        return Cow::Borrowed(v);
    }
    Cow::Owned(
        v.iter()
            .copied()
            .filter(|&b| b != b'\r' && b != b'\n')
            .collect(),
    )
}

/// The raw value of the last field called `name` (ASCII case-insensitive).
pub fn last_value<'a>(header: &'a [u8], name: &[u8]) -> Option<&'a [u8]> {
    fields(header)
        .filter(|f| f.name.eq_ignore_ascii_case(name))
        .last()
        .map(|f| f.value)
}

/// The raw value of the first field called `name` (ASCII case-insensitive).
pub fn first_value<'a>(header: &'a [u8], name: &[u8]) -> Option<&'a [u8]> {
    fields(header)
        .find(|f| f.name.eq_ignore_ascii_case(name))
        .map(|f| f.value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_header_cases() {
        let cases: &[(&[u8], usize)] = &[
            (b"A: b\r\n\r\nbody", 8),
            (b"A: b\n\nbody", 6),
            (b"\r\nbody", 2),
            (b"\nbody", 1),
            (b"A: b\r\nno blank line", 19),
            (b"", 0),
        ];
        for (input, hlen) in cases {
            let (h, b) = split_header(input);
            assert_eq!(h, 0..*hlen, "{:?}", String::from_utf8_lossy(input));
            assert_eq!(b, *hlen..input.len());
        }
    }

    #[test]
    fn fields_keep_folding_and_skip_junk() {
        let h = b"From: a\r\n  b\r\nnot a field\r\nX-Y : z\r\n\r\nBody: no\r\n";
        let got: Vec<_> = fields(h).collect();
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].name, b"From");
        assert_eq!(got[0].value, b" a\r\n  b");
        assert_eq!(got[0].raw, b"From: a\r\n  b\r\n");
        assert_eq!(got[1].name, b"X-Y");
        assert_eq!(got[1].value, b" z");
        assert_eq!(&*unfold(got[0].value), b"a  b");
        assert_eq!(&*unfold(b"\r\n <id>  "), b" <id>  ");
        assert_eq!(&*unfold(b" \t x"), b"x");
        assert_eq!(first_value(h, b"x-y"), Some(&b" z"[..]));
        assert_eq!(first_value(h, b"body"), None);
    }
}
