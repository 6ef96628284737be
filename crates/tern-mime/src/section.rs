//! IMAP section specifiers (RFC 9051 §6.4.5) resolved to the exact stored
//! bytes, and the `<origin.count>` partial helper.
//!
//! Part numbering: the parts of a multipart are numbered from 1; a
//! message/rfc822 part's number also names its inner message, whose own
//! parts continue the numbering (`2.1`); in a message whose body is not
//! multipart, part 1 is that body. `HEADER`, `HEADER.FIELDS`,
//! `HEADER.FIELDS.NOT` and `TEXT` after a part number need a
//! message/rfc822 part; `MIME` needs a part number.

use std::borrow::Cow;

use crate::header::fields;
use crate::structure::{Kind, Part};

/// What of the selected part to return.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SectionText {
    /// `HEADER`: the RFC 5322 header, with its ending empty line.
    Header,
    /// `HEADER.FIELDS (...)`: the named fields in stored order, then the
    /// empty line.
    HeaderFields(Vec<Vec<u8>>),
    /// `HEADER.FIELDS.NOT (...)`: every other field, then the empty line.
    HeaderFieldsNot(Vec<Vec<u8>>),
    /// `TEXT`: the body.
    Text,
    /// `MIME`: the part's MIME header.
    Mime,
}

/// A section: part numbers (empty for the whole message) and what to take.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Section {
    /// Part path, each number ≥ 1 (`[1, 2]` for `1.2`).
    pub part: Vec<u32>,
    /// `None` for the part's body (or the whole message when `part` is
    /// empty).
    pub text: Option<SectionText>,
}

/// Why a section cannot be served.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SectionError {
    /// A part number names no part of this message.
    #[error("no such body part")]
    NoSuchPart,
    /// HEADER/TEXT after a part number that is not message/rfc822.
    #[error("body part is not a message/rfc822")]
    NotMessage,
    /// `MIME` without a part number.
    #[error("MIME needs a part number")]
    MimeWithoutPart,
}

/// The part a path names, starting at the message `root`.
pub(crate) fn resolve<'p>(root: &'p Part, path: &[u32]) -> Result<&'p Part, SectionError> {
    let mut ctx = root;
    let mut message_ctx = true;
    let mut selected: Option<&Part> = None;
    for &n in path {
        if let Some(p) = selected {
            match &p.kind {
                Kind::Message(inner) => {
                    ctx = inner;
                    message_ctx = true;
                }
                Kind::Multipart(_) => {
                    ctx = p;
                    message_ctx = false;
                }
                _ => return Err(SectionError::NoSuchPart),
            }
        }
        let idx = usize::try_from(n)
            .ok()
            .and_then(|n| n.checked_sub(1))
            .ok_or(SectionError::NoSuchPart)?;
        let next = match &ctx.kind {
            Kind::Multipart(children) => children.get(idx),
            _ if message_ctx && idx == 0 => Some(ctx),
            _ => None,
        };
        selected = Some(next.ok_or(SectionError::NoSuchPart)?);
    }
    Ok(selected.unwrap_or(root))
}

/// The bytes of `section` in the message `bytes` parsed as `root`.
pub(crate) fn section<'b>(
    bytes: &'b [u8],
    root: &Part,
    section: &Section,
) -> Result<Cow<'b, [u8]>, SectionError> {
    let part = resolve(root, &section.part)?;
    let top = section.part.is_empty();
    // The message whose header/text HEADER and TEXT refer to.
    let message = || -> Result<&Part, SectionError> {
        if top {
            return Ok(root);
        }
        match &part.kind {
            Kind::Message(inner) => Ok(inner),
            _ => Err(SectionError::NotMessage),
        }
    };
    Ok(match &section.text {
        None if top => Cow::Borrowed(bytes),
        None => Cow::Borrowed(&bytes[part.body.clone()]),
        Some(SectionText::Mime) => {
            if top {
                return Err(SectionError::MimeWithoutPart);
            }
            Cow::Borrowed(&bytes[part.header.clone()])
        }
        Some(SectionText::Header) => Cow::Borrowed(&bytes[message()?.header.clone()]),
        Some(SectionText::Text) => Cow::Borrowed(&bytes[message()?.body.clone()]),
        Some(SectionText::HeaderFields(names)) => Cow::Owned(header_fields(
            &bytes[message()?.header.clone()],
            names,
            true,
        )),
        Some(SectionText::HeaderFieldsNot(names)) => Cow::Owned(header_fields(
            &bytes[message()?.header.clone()],
            names,
            false,
        )),
    })
}

/// The fields of `header` whose name is (`keep`) or is not (`!keep`) in
/// `names`, in stored order, followed by an empty line (the header's own
/// ending line, or CRLF when it had none).
pub fn header_fields(header: &[u8], names: &[Vec<u8>], keep: bool) -> Vec<u8> {
    let mut out = Vec::new();
    for f in fields(header) {
        let listed = names.iter().any(|n| n.eq_ignore_ascii_case(f.name));
        if listed == keep {
            out.extend_from_slice(f.raw);
            if !f.raw.ends_with(b"\n") {
                out.extend_from_slice(b"\r\n");
            }
        }
    }
    if header.ends_with(b"\n\n") || header == b"\n" {
        out.push(b'\n');
    } else {
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// Applies a `<origin.count>` partial: at most `count` bytes from
/// `origin`; empty if `origin` is past the end.
pub fn partial(bytes: &[u8], origin: u64, count: u64) -> &[u8] {
    let len = bytes.len() as u64;
    let start = origin.min(len);
    let end = start.saturating_add(count).min(len);
    // Both are ≤ bytes.len(), which fits in usize.
    &bytes[usize::try_from(start).unwrap_or(0)..usize::try_from(end).unwrap_or(0)]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Limits, Message};

    const NESTED: &str = "From: a@x.test\r\nSubject: top\r\n\
        Content-Type: multipart/mixed; boundary=o\r\n\r\n\
        preamble\r\n\
        --o\r\nContent-Type: text/plain\r\n\r\npart one\r\n\
        --o\r\nContent-Type: message/rfc822\r\n\r\n\
        Subject: inner\r\nTo: b@y.test\r\nContent-Type: multipart/alternative; boundary=i\r\n\r\n\
        --i\r\n\r\ninner plain\r\n--i\r\nContent-Type: text/html\r\n\r\n<b>inner</b>\r\n--i--\r\n\
        --o\r\nContent-Type: message/rfc822\r\n\r\nSubject: flat\r\n\r\nflat body\r\n\
        --o--\r\nepilogue\r\n";

    fn sec(part: &[u32], text: Option<SectionText>) -> Section {
        Section {
            part: part.to_vec(),
            text,
        }
    }

    fn names(n: &[&str]) -> Vec<Vec<u8>> {
        n.iter().map(|s| s.as_bytes().to_vec()).collect()
    }

    #[test]
    fn nested_sections() {
        let m = Message::parse(NESTED.as_bytes(), &Limits::default());
        use SectionText::*;
        let cases: Vec<(Section, Result<&str, SectionError>)> = vec![
            (sec(&[], None), Ok(NESTED)),
            (
                sec(&[], Some(Header)),
                Ok(
                    "From: a@x.test\r\nSubject: top\r\nContent-Type: multipart/mixed; boundary=o\r\n\r\n",
                ),
            ),
            (
                sec(&[], Some(HeaderFields(names(&["SUBJECT", "from"])))),
                Ok("From: a@x.test\r\nSubject: top\r\n\r\n"),
            ),
            (
                sec(&[], Some(HeaderFieldsNot(names(&["Subject", "From"])))),
                Ok("Content-Type: multipart/mixed; boundary=o\r\n\r\n"),
            ),
            (sec(&[], Some(HeaderFields(names(&["X-None"])))), Ok("\r\n")),
            (sec(&[1], None), Ok("part one")),
            (
                sec(&[1], Some(Mime)),
                Ok("Content-Type: text/plain\r\n\r\n"),
            ),
            (sec(&[1], Some(Header)), Err(SectionError::NotMessage)),
            (sec(&[1], Some(Text)), Err(SectionError::NotMessage)),
            (sec(&[1, 1], None), Err(SectionError::NoSuchPart)),
            (
                sec(&[2], Some(Header)),
                Ok(
                    "Subject: inner\r\nTo: b@y.test\r\nContent-Type: multipart/alternative; boundary=i\r\n\r\n",
                ),
            ),
            (
                sec(&[2], Some(HeaderFields(names(&["to"])))),
                Ok("To: b@y.test\r\n\r\n"),
            ),
            (
                sec(&[2], Some(Text)),
                Ok(
                    "--i\r\n\r\ninner plain\r\n--i\r\nContent-Type: text/html\r\n\r\n<b>inner</b>\r\n--i--\r\n",
                ),
            ),
            (sec(&[2, 1], None), Ok("inner plain")),
            (sec(&[2, 2], None), Ok("<b>inner</b>")),
            (
                sec(&[2, 2], Some(Mime)),
                Ok("Content-Type: text/html\r\n\r\n"),
            ),
            (sec(&[2, 3], None), Err(SectionError::NoSuchPart)),
            // Part 1 of a non-multipart inner message is its body.
            (sec(&[3, 1], None), Ok("flat body")),
            (sec(&[3], Some(Text)), Ok("flat body")),
            (sec(&[3, 1, 1], None), Err(SectionError::NoSuchPart)),
            (sec(&[4], None), Err(SectionError::NoSuchPart)),
            (sec(&[0], None), Err(SectionError::NoSuchPart)),
            (sec(&[], Some(Mime)), Err(SectionError::MimeWithoutPart)),
        ];
        for (s, want) in cases {
            let got = m
                .section(&s)
                .map(|c| String::from_utf8(c.into_owned()).unwrap());
            assert_eq!(got.as_deref().map_err(Clone::clone), want, "{s:?}");
        }
        assert_eq!(
            &NESTED.as_bytes()[m.part(&[2]).unwrap().body.clone()],
            m.section(&sec(&[2], None)).unwrap().as_ref()
        );
    }

    #[test]
    fn non_multipart_part_one_is_the_body() {
        let raw = "Subject: s\n\nline 1\nline 2\n";
        let m = Message::parse(raw.as_bytes(), &Limits::default());
        assert_eq!(&*m.section(&sec(&[1], None)).unwrap(), b"line 1\nline 2\n");
        assert_eq!(
            &*m.section(&sec(&[], Some(SectionText::Text))).unwrap(),
            b"line 1\nline 2\n"
        );
        assert_eq!(
            &*m.section(&sec(
                &[],
                Some(SectionText::HeaderFields(names(&["subject"])))
            ))
            .unwrap(),
            b"Subject: s\n\n"
        );
        assert_eq!(m.section(&sec(&[2], None)), Err(SectionError::NoSuchPart));
        assert_eq!(
            m.section(&sec(&[1, 1], None)),
            Err(SectionError::NoSuchPart)
        );
    }

    #[test]
    fn partials() {
        let b = b"0123456789";
        assert_eq!(partial(b, 0, 4), b"0123");
        assert_eq!(partial(b, 8, 10), b"89");
        assert_eq!(partial(b, 10, 1), b"");
        assert_eq!(partial(b, u64::MAX, u64::MAX), b"");
        assert_eq!(partial(b, 3, u64::MAX), b"3456789");
    }
}
