//! SEARCH matching (RFC 9051 §6.4.4) on one message: header fields,
//! BODY, TEXT, and the sent date of SENTBEFORE/SENTON/SENTSINCE.
//!
//! Matching is substring, case-insensitive by Unicode simple lowercasing
//! of both sides, on decoded text: header values have RFC 2047 encoded
//! words decoded (through mail-parser, which also converts their
//! charsets); bodies of `text/*` parts have their transfer encoding
//! removed and their charset converted to UTF-8. Bytes that are not valid
//! in their charset become U+FFFD and never match a needle.

use mail_parser::HeaderValue;
use mail_parser::parsers::MessageStream;

use crate::Message;
use crate::header::fields;
use crate::structure::{Kind, Part};

/// A header value with encoded words decoded, folding removed, as UTF-8.
pub fn decode_header_value(raw: &[u8]) -> String {
    let mut buf = Vec::with_capacity(raw.len() + 1);
    buf.extend_from_slice(raw);
    buf.push(b'\n');
    match MessageStream::new(&buf).parse_unstructured() {
        HeaderValue::Text(t) => t.into_owned(),
        _ => String::new(),
    }
}

/// Lowercases `s` for case-insensitive comparison.
pub fn fold(s: &str) -> String {
    s.chars().flat_map(char::to_lowercase).collect()
}

fn contains_folded(hay: &str, folded_needle: &str) -> bool {
    folded_needle.is_empty() || fold(hay).contains(folded_needle)
}

/// The date part of a `Date:` header, in the sender's own time zone (what
/// SENTBEFORE/SENTON/SENTSINCE compare, RFC 9051 §6.4.4), plus the
/// instant for SORT.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct SentDate {
    /// Year.
    pub year: u16,
    /// Month, 1–12.
    pub month: u8,
    /// Day of month, 1–31.
    pub day: u8,
    /// Seconds since the Unix epoch, UTC.
    pub timestamp: i64,
}

impl SentDate {
    /// Parses an RFC 5322 date (lenient, via mail-parser).
    pub fn parse(raw: &[u8]) -> Option<SentDate> {
        let mut buf = raw.to_vec();
        buf.push(b'\n');
        let HeaderValue::DateTime(dt) = MessageStream::new(&buf).parse_date() else {
            return None;
        };
        if !dt.is_valid() {
            return None;
        }
        Some(SentDate {
            year: dt.year,
            month: dt.month,
            day: dt.day,
            timestamp: dt.to_timestamp(),
        })
    }

    /// `(year, month, day)` for comparing with a SEARCH date.
    pub fn date(&self) -> (u16, u8, u8) {
        (self.year, self.month, self.day)
    }
}

fn text_parts<'p>(p: &'p Part, out: &mut Vec<&'p Part>) {
    match &p.kind {
        Kind::Leaf if p.media.kind == "text" => out.push(p),
        Kind::Leaf => {}
        Kind::Multipart(ch) => ch.iter().for_each(|c| text_parts(c, out)),
        Kind::Message(inner) => text_parts(inner, out),
    }
}

impl Message<'_> {
    /// SEARCH HEADER / FROM / TO / CC / BCC / SUBJECT: whether a field
    /// called `name` contains `needle`. An empty needle matches any message
    /// that has the field.
    pub fn header_contains(&self, name: &[u8], needle: &str) -> bool {
        let needle = fold(needle);
        fields(self.header())
            .filter(|f| f.name.eq_ignore_ascii_case(name))
            .any(|f| contains_folded(&decode_header_value(f.value), &needle))
    }

    /// The decoded text of every `text/*` part, as UTF-8.
    pub fn body_texts(&self) -> Vec<String> {
        let mut parts = Vec::new();
        text_parts(self.root(), &mut parts);
        let bytes = self.bytes();
        parts
            .into_iter()
            .map(|p| {
                let body = &bytes[p.body.clone()];
                let decoded = crate::binary::decode(&p.encoding, body)
                    .unwrap_or(std::borrow::Cow::Borrowed(body));
                crate::charset::to_utf8(p.media.param(b"charset").unwrap_or(b""), &decoded)
            })
            .collect()
    }

    /// SEARCH BODY: whether a text part contains `needle`.
    pub fn body_contains(&self, needle: &str) -> bool {
        let needle = fold(needle);
        self.body_texts()
            .iter()
            .any(|t| contains_folded(t, &needle))
    }

    /// SEARCH TEXT: whether the header (decoded field by field, as
    /// `Name: value`) or a text part contains `needle`.
    pub fn text_contains(&self, needle: &str) -> bool {
        let folded = fold(needle);
        let in_header = fields(self.header()).any(|f| {
            let line = format!(
                "{}: {}",
                String::from_utf8_lossy(f.name),
                decode_header_value(f.value)
            );
            contains_folded(&line, &folded)
        });
        in_header || self.body_contains(needle)
    }

    /// The `Date:` header as a [`SentDate`], if present and valid.
    pub fn sent_date(&self) -> Option<SentDate> {
        crate::header::first_value(self.header(), b"date").and_then(SentDate::parse)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Limits;

    const MSG: &str = "From: =?ISO-8859-1?Q?Andr=E9?= <andre@x.test>\r\n\
        Subject: =?utf-8?B?U3RyYcOfZQ==?= report\r\n\
        Date: Tue, 1 Jul 2025 23:30:00 -0700\r\n\
        Content-Type: multipart/alternative; boundary=b\r\n\r\n\
        --b\r\nContent-Type: text/plain; charset=iso-8859-1\r\n\
        Content-Transfer-Encoding: quoted-printable\r\n\r\nCr=E8me br=FBl=E9e\r\n\
        --b\r\nContent-Type: text/html; charset=utf-8\r\nContent-Transfer-Encoding: base64\r\n\r\n\
        PGI+SGVsbG88L2I+\r\n\
        --b\r\nContent-Type: image/png\r\n\r\nsecretword\r\n--b--\r\n";

    #[test]
    fn header_matching_decodes_and_folds() {
        let m = Message::parse(MSG.as_bytes(), &Limits::default());
        let cases: &[(&[u8], &str, bool)] = &[
            (b"from", "andré", true),
            (b"FROM", "ANDRÉ", true),
            (b"from", "andre@x", true),
            (b"subject", "straße report", true),
            (b"subject", "STRASSE", false),
            (b"subject", "", true),
            (b"x-missing", "", false),
            (b"to", "andre", false),
        ];
        for (name, needle, want) in cases {
            assert_eq!(
                m.header_contains(name, needle),
                *want,
                "{} {needle}",
                String::from_utf8_lossy(name)
            );
        }
    }

    #[test]
    fn body_and_text() {
        let m = Message::parse(MSG.as_bytes(), &Limits::default());
        assert!(m.body_contains("CRÈME brûlée"));
        assert!(m.body_contains("<b>hello"));
        assert!(
            !m.body_contains("secretword"),
            "non-text parts are not searched"
        );
        assert!(!m.body_contains("Straße"));
        assert!(m.text_contains("straße"));
        assert!(m.text_contains("content-type: multipart"));
        assert!(m.text_contains("crème"));
        assert!(!m.text_contains("nowhere"));
    }

    #[test]
    fn sent_date_is_local_date() {
        let m = Message::parse(MSG.as_bytes(), &Limits::default());
        let d = m.sent_date().unwrap();
        assert_eq!(d.date(), (2025, 7, 1));
        assert_eq!(d.timestamp, 1_751_437_800);
        assert_eq!(SentDate::parse(b"not a date"), None);
    }
}
