//! POP3 TOP (RFC 1939 §7): the header, the empty line, and the first `n`
//! lines of the body, as stored. Byte-stuffing and the terminating `.`
//! are the POP3 session's job, not this module's.

/// The header (with its ending empty line) and the first `n` body lines
/// of `bytes`. Line ends are LF or CRLF; a last line without a line end
/// counts as a line.
pub fn top(bytes: &[u8], n: usize) -> &[u8] {
    let (_, body) = crate::header::split_header(bytes);
    let mut end = body.start;
    for _ in 0..n {
        if end >= bytes.len() {
            break;
        }
        end = match crate::header::memchr(b'\n', &bytes[end..]) {
            Some(i) => end + i + 1,
            None => bytes.len(),
        };
    }
    &bytes[..end]
}

#[cfg(test)]
mod tests {
    use super::top;

    #[test]
    fn top_cases() {
        let m = b"A: b\r\n\r\none\r\ntwo\r\nthree";
        let cases: &[(usize, &[u8])] = &[
            (0, b"A: b\r\n\r\n"),
            (1, b"A: b\r\n\r\none\r\n"),
            (2, b"A: b\r\n\r\none\r\ntwo\r\n"),
            (3, m),
            (99, m),
        ];
        for (n, want) in cases {
            assert_eq!(top(m, *n), *want, "{n}");
        }
        assert_eq!(top(b"A: b\n\nx\ny\n", 1), b"A: b\n\nx\n");
        assert_eq!(top(b"no body", 5), b"no body");
    }
}
