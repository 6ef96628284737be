//! Charset conversion to UTF-8 through mail-parser's decoders (lossy:
//! bytes a charset cannot map become U+FFFD). Unknown charsets and
//! `us-ascii`/`utf-8` are read as UTF-8, lossily.

use std::borrow::Cow;

use mail_parser::decoders::charsets::map::charset_decoder;

/// `bytes` in `charset`, as UTF-8 (borrowed when they are valid UTF-8 in
/// a UTF-8 or US-ASCII part).
pub(crate) fn to_utf8<'a>(charset: &[u8], bytes: &'a [u8]) -> Cow<'a, str> {
    let cs = crate::header::trim(charset);
    let is_utf8ish = cs.is_empty()
        || cs.eq_ignore_ascii_case(b"utf-8")
        || cs.eq_ignore_ascii_case(b"utf8")
        || cs.eq_ignore_ascii_case(b"us-ascii");
    if !is_utf8ish && let Some(decode) = charset_decoder(cs) {
        return Cow::Owned(decode(bytes));
    }
    // The strict check first: much faster on the (usual) valid text.
    match std::str::from_utf8(bytes) {
        Ok(text) => Cow::Borrowed(text),
        Err(_) => String::from_utf8_lossy(bytes),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn charsets() {
        assert_eq!(to_utf8(b"ISO-8859-1", b"caf\xe9"), "caf\u{e9}");
        assert_eq!(to_utf8(b"utf-8", "caf\u{e9}".as_bytes()), "caf\u{e9}");
        assert_eq!(to_utf8(b"x-unknown", b"abc\xff"), "abc\u{fffd}");
    }
}
