//! IMAP wire syntax for the values this crate renders (RFC 9051 §4):
//! `NIL`, quoted strings, literals and parenthesised lists.
//!
//! A string is written quoted when every byte is printable 7-bit ASCII
//! (no CR, LF, NUL or 8-bit) and it is at most [`MAX_QUOTED`] bytes long,
//! with `\` and `"` escaped; otherwise as a synchronizing literal
//! `{n}\r\n` followed by the bytes. NUL bytes cannot appear in an IMAP
//! string or literal and are dropped. Writers only append to `out`.

/// Longest string written quoted; longer ones become literals.
pub const MAX_QUOTED: usize = 1024;

/// Appends `s` as an IMAP string (quoted or literal).
pub fn string(out: &mut Vec<u8>, s: &[u8]) {
    let quotable = s.len() <= MAX_QUOTED && s.iter().all(|&b| (0x20..0x7f).contains(&b));
    if quotable {
        out.push(b'"');
        for &b in s {
            if b == b'"' || b == b'\\' {
                out.push(b'\\');
            }
            out.push(b);
        }
        out.push(b'"');
    } else {
        let n = s.iter().filter(|&&b| b != 0).count();
        out.extend(format!("{{{n}}}\r\n").as_bytes());
        out.extend(s.iter().filter(|&&b| b != 0));
    }
}

/// Appends `s` as an nstring: `NIL` for `None`.
pub fn nstring(out: &mut Vec<u8>, s: Option<&[u8]>) {
    match s {
        Some(s) => string(out, s),
        None => out.extend(b"NIL"),
    }
}

/// Appends a number.
pub(crate) fn number(out: &mut Vec<u8>, n: usize) {
    out.extend(n.to_string().as_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings() {
        let cases: &[(Option<&[u8]>, &[u8])] = &[
            (None, b"NIL"),
            (Some(b""), b"\"\""),
            (Some(b"a \"q\" \\ b"), b"\"a \\\"q\\\" \\\\ b\""),
            (Some(b"two\r\nlines"), b"{10}\r\ntwo\r\nlines"),
            (Some("caf\u{e9}".as_bytes()), b"{5}\r\ncaf\xc3\xa9"),
            (Some(b"a\0b"), b"{2}\r\nab"),
        ];
        for (input, want) in cases {
            let mut out = Vec::new();
            nstring(&mut out, *input);
            assert_eq!(out, *want, "{input:?}");
        }
        let long = vec![b'x'; MAX_QUOTED + 1];
        let mut out = Vec::new();
        string(&mut out, &long);
        assert!(out.starts_with(b"{1025}\r\n"));
    }
}
