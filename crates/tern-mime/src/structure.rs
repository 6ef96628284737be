//! The bounded MIME structure of a message: every entity's header and body
//! as byte ranges of the original message, so IMAP sections
//! (RFC 9051 §6.4.5) return the stored octets exactly.
//!
//! # What offsets mean
//!
//! Every range is a half-open byte range into the bytes given to
//! [`crate::Message::parse`]. Line ends are recognised as CRLF or a bare LF
//! (mail stored with LF endings parses the same way; its sections then
//! contain bare LFs, exactly as stored, and sizes count the stored octets).
//!
//! * An entity's **header** runs from its first byte up to and including
//!   the empty line that ends it. Without an empty line the whole entity
//!   is header and its body is empty.
//! * A **body** runs from the byte after that empty line to the end of the
//!   entity. In a multipart, a child ends before the line end that precedes
//!   the next boundary delimiter (RFC 2046 §5.1.1: that line end belongs
//!   to the delimiter).
//!
//! # Bounds
//!
//! Parsing is linear in the message size times the nesting depth, which
//! [`Limits::max_depth`] caps. Past a limit (depth, total parts, boundary
//! length) the entity is kept as an opaque leaf: it still has a header and
//! a body, it is just not split further. A multipart without parts gets
//! one empty `text/plain` child so that its BODYSTRUCTURE stays valid.
//!
//! This module never decodes content and never fails: any byte string has
//! a structure.

use std::ops::Range;

use crate::header::{self, first_value};
use crate::params;

/// Caps that bound parsing work on hostile input (MIME bombs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Deepest nesting of multiparts and message/rfc822 parts that is
    /// split; deeper entities are opaque leaves. The part tree and the
    /// views that walk it recurse once per level, so keep this small
    /// (the default 32 is plenty for real mail; stay below a few hundred).
    pub max_depth: usize,
    /// Most entities in one message; later boundaries are not split.
    pub max_parts: usize,
    /// Longest boundary parameter honoured (RFC 2046 allows 70).
    pub max_boundary_len: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_depth: 32,
            max_parts: 2000,
            max_boundary_len: 200,
        }
    }
}

/// A media type with its parameters; `kind` and `subtype` are lowercase,
/// `kind_raw` and `subtype_raw` as written (BODYSTRUCTURE reports those).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaType {
    /// Top-level type, lowercase (`text`).
    pub kind: String,
    /// Subtype, lowercase (`plain`).
    pub subtype: String,
    /// Top-level type as written.
    pub kind_raw: String,
    /// Subtype as written.
    pub subtype_raw: String,
    /// Parameters as written (empty for a defaulted type except `charset`).
    pub params: Vec<params::Param>,
    /// Whether the type came from a `Content-Type` field (false: defaulted).
    pub explicit: bool,
}

impl MediaType {
    fn default_text() -> Self {
        MediaType {
            kind: "text".into(),
            subtype: "plain".into(),
            kind_raw: "text".into(),
            subtype_raw: "plain".into(),
            params: vec![params::Param {
                name: b"charset".to_vec(),
                value: b"us-ascii".to_vec(),
            }],
            explicit: false,
        }
    }

    fn default_message() -> Self {
        MediaType {
            kind: "message".into(),
            subtype: "rfc822".into(),
            kind_raw: "message".into(),
            subtype_raw: "rfc822".into(),
            params: Vec::new(),
            explicit: false,
        }
    }

    /// The value of parameter `name` (case-insensitive; an RFC 2231
    /// extended `name*` also matches).
    pub fn param(&self, name: &[u8]) -> Option<&[u8]> {
        params::find(&self.params, name)
    }

    /// `type/subtype` equality, case-insensitive.
    pub fn is(&self, kind: &str, subtype: &str) -> bool {
        self.kind == kind && self.subtype == subtype
    }

    /// True for message/rfc822, the one type whose body is parsed as a
    /// message. message/global (RFC 6532) stays a leaf: IMAP4rev1 clients
    /// do not expect an envelope for it (Dovecot 2.3 treats it the same).
    pub fn is_message(&self) -> bool {
        self.kind == "message" && self.subtype == "rfc822"
    }
}

/// What an entity contains.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    /// Not split further.
    Leaf,
    /// A multipart's children, in order (at least one).
    Multipart(Vec<Part>),
    /// The message inside a message/rfc822 part.
    Message(Box<Part>),
}

/// One MIME entity (the message itself, a multipart child, or the message
/// inside a message/rfc822 part).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Part {
    /// The header block, including the empty line ending it.
    pub header: Range<usize>,
    /// The body.
    pub body: Range<usize>,
    /// The effective media type (defaults of RFC 2045/2046 applied).
    pub media: MediaType,
    /// `Content-Transfer-Encoding`, lowercase and trimmed; empty if absent.
    pub encoding: String,
    /// `Content-Transfer-Encoding` as written (trimmed).
    pub encoding_raw: String,
    /// What is inside.
    pub kind: Kind,
}

impl Part {
    /// The whole entity: header and body.
    pub fn full(&self) -> Range<usize> {
        self.header.start..self.body.end
    }
}

struct Parser<'a> {
    bytes: &'a [u8],
    limits: Limits,
    parts: usize,
    limited: bool,
}

/// Parses the structure of `bytes` within `limits`. The second value is
/// true when a limit stopped the parse somewhere.
pub(crate) fn parse(bytes: &[u8], limits: &Limits) -> (Part, bool) {
    let mut p = Parser {
        bytes,
        limits: *limits,
        parts: 0,
        limited: false,
    };
    let root = p.entity(0..bytes.len(), MediaType::default_text(), 0);
    (root, p.limited)
}

fn media_type(header: &[u8], default: MediaType) -> MediaType {
    let Some(raw) = first_value(header, b"content-type") else {
        return default;
    };
    let hp = params::parse(raw);
    let value = String::from_utf8_lossy(&hp.value);
    // `text` alone is type `text` with an empty subtype (Dovecot's
    // reading); an empty or slash-only value is the default.
    let (kind, subtype) = value.split_once('/').unwrap_or((&value, ""));
    if kind.is_empty() || subtype.contains('/') {
        return MediaType::default_text();
    }
    MediaType {
        kind: kind.to_ascii_lowercase(),
        subtype: subtype.to_ascii_lowercase(),
        kind_raw: kind.to_string(),
        subtype_raw: subtype.to_string(),
        params: hp.params,
        explicit: true,
    }
}

impl Parser<'_> {
    fn entity(&mut self, range: Range<usize>, default: MediaType, depth: usize) -> Part {
        self.parts += 1;
        let (h, b) = header::split_header(&self.bytes[range.clone()]);
        let header = range.start + h.start..range.start + h.end;
        let body = range.start + b.start..range.start + b.end;
        let hbytes = &self.bytes[header.clone()];
        let media = media_type(hbytes, default);
        let encoding_raw = first_value(hbytes, b"content-transfer-encoding")
            .map(|v| {
                String::from_utf8_lossy(&params::parse(v).value)
                    .trim()
                    .to_string()
            })
            .unwrap_or_default();
        let mut part = Part {
            header,
            body,
            media,
            encoding: encoding_raw.to_ascii_lowercase(),
            encoding_raw,
            kind: Kind::Leaf,
        };
        if depth >= self.limits.max_depth || self.parts >= self.limits.max_parts {
            if part.media.kind == "multipart" || part.media.is_message() {
                self.limited = true;
            }
            return part;
        }
        if part.media.kind == "multipart" {
            let boundary = part.media.param(b"boundary").map(<[u8]>::to_vec);
            let digest = part.media.subtype == "digest";
            match boundary {
                Some(b) if b.len() > self.limits.max_boundary_len => self.limited = true,
                Some(b) if !b.is_empty() => {
                    part.kind =
                        Kind::Multipart(self.children(part.body.clone(), &b, digest, depth + 1));
                }
                // Without a boundary nothing can be split: like Dovecot,
                // one empty child.
                _ => {
                    let end = part.body.end;
                    let child = self.entity(end..end, MediaType::default_text(), depth + 1);
                    part.kind = Kind::Multipart(vec![child]);
                }
            }
        } else if part.media.is_message() {
            // Parsed whatever the transfer encoding says (an encoded
            // message/rfc822 is read as stored), as Dovecot does.
            let inner = self.entity(part.body.clone(), MediaType::default_text(), depth + 1);
            part.kind = Kind::Message(Box::new(inner));
        }
        part
    }

    fn children(
        &mut self,
        body: Range<usize>,
        boundary: &[u8],
        digest: bool,
        depth: usize,
    ) -> Vec<Part> {
        let bytes = self.bytes;
        let mut ranges: Vec<Range<usize>> = Vec::new();
        let mut current: Option<usize> = None;
        let mut closed = false;
        let mut pos = body.start;
        while pos < body.end {
            let le = match header::memchr(b'\n', &bytes[pos..body.end]) {
                Some(i) => pos + i + 1,
                None => body.end,
            };
            if let Some(close) = delimiter(&bytes[pos..le], boundary) {
                let mut end = pos;
                if end > body.start && bytes[end - 1] == b'\n' {
                    end -= 1;
                    if end > body.start && bytes[end - 1] == b'\r' {
                        end -= 1;
                    }
                }
                if let Some(s) = current {
                    ranges.push(s..end.max(s));
                }
                if close {
                    closed = true;
                    break;
                }
                if self.parts + ranges.len() >= self.limits.max_parts {
                    // Too many parts: the last one runs to the end.
                    self.limited = true;
                    current = Some(le);
                    break;
                }
                current = Some(le);
            }
            pos = le;
        }
        if !closed && let Some(s) = current {
            // A last delimiter with nothing after it starts no part.
            if s < body.end || ranges.is_empty() {
                ranges.push(s..body.end.max(s));
            }
        }
        if ranges.is_empty() {
            ranges.push(body.end..body.end);
        }
        let default = if digest {
            MediaType::default_message()
        } else {
            MediaType::default_text()
        };
        ranges
            .into_iter()
            .map(|r| self.entity(r, default.clone(), depth))
            .collect()
    }
}

/// If `line` is a boundary delimiter line for `boundary`, whether it is the
/// close delimiter. `--boundary` must be followed by `--` (close), or by
/// optional blanks and the line end.
fn delimiter(line: &[u8], boundary: &[u8]) -> Option<bool> {
    let rest = line.strip_prefix(b"--")?.strip_prefix(boundary)?;
    if rest.starts_with(b"--") {
        return Some(true);
    }
    if rest.iter().all(|&b| header::is_ws(b)) {
        Some(false)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leaf_bodies<'a>(bytes: &'a [u8], p: &Part, out: &mut Vec<&'a [u8]>) {
        match &p.kind {
            Kind::Leaf => out.push(&bytes[p.body.clone()]),
            Kind::Multipart(ch) => ch.iter().for_each(|c| leaf_bodies(bytes, c, out)),
            Kind::Message(m) => leaf_bodies(bytes, m, out),
        }
    }

    #[test]
    fn multipart_children_and_line_ends() {
        for eol in ["\r\n", "\n"] {
            let m = "Content-Type: multipart/mixed; boundary=\"b\"\r\n\r\npreamble\r\n--b\r\n\r\none\r\n--b\r\nContent-Type: text/html\r\n\r\n<p>two</p>\r\n--b--\r\nepilogue\r\n"
                .replace("\r\n", eol);
            let (root, limited) = parse(m.as_bytes(), &Limits::default());
            assert!(!limited);
            let Kind::Multipart(ch) = &root.kind else {
                panic!("not multipart")
            };
            assert_eq!(ch.len(), 2);
            assert_eq!(&m.as_bytes()[ch[0].body.clone()], b"one");
            assert_eq!(&m.as_bytes()[ch[0].header.clone()], eol.as_bytes());
            assert_eq!(&m.as_bytes()[ch[1].body.clone()], b"<p>two</p>");
            assert_eq!(ch[1].media.subtype, "html");
            assert!(!ch[0].media.explicit);
        }
    }

    #[test]
    fn nested_unterminated_and_message() {
        let m = b"Content-Type: multipart/mixed; boundary=outer\r\n\r\n--outer\r\nContent-Type: multipart/alternative; boundary=inner\r\n\r\n--inner\r\n\r\na\r\n--inner\r\n\r\nb\r\n--outer\r\nContent-Type: message/rfc822\r\n\r\nSubject: x\r\n\r\ninner body\r\n--outer";
        let (root, _) = parse(m, &Limits::default());
        let mut bodies = Vec::new();
        leaf_bodies(m, &root, &mut bodies);
        assert_eq!(bodies, vec![&b"a"[..], b"b", b"inner body"]);
        let Kind::Multipart(ch) = &root.kind else {
            panic!()
        };
        let Kind::Message(inner) = &ch[1].kind else {
            panic!()
        };
        assert_eq!(&m[inner.header.clone()], b"Subject: x\r\n\r\n");
    }

    #[test]
    fn digest_default_and_empty_multipart() {
        let m = b"Content-Type: multipart/digest; boundary=d\r\n\r\n--d\r\n\r\nSubject: s\r\n\r\nx\r\n--d--\r\n";
        let (root, _) = parse(m, &Limits::default());
        let Kind::Multipart(ch) = &root.kind else {
            panic!()
        };
        assert!(ch[0].media.is_message());
        assert!(matches!(ch[0].kind, Kind::Message(_)));

        let m = b"Content-Type: multipart/mixed; boundary=d\r\n\r\nno parts at all\r\n";
        let (root, _) = parse(m, &Limits::default());
        let Kind::Multipart(ch) = &root.kind else {
            panic!()
        };
        assert_eq!(ch.len(), 1);
        assert!(ch[0].body.is_empty());
    }

    #[test]
    fn limits_bound_depth_and_parts() {
        let mut m = Vec::new();
        for i in 0..100 {
            m.extend(
                format!("Content-Type: multipart/mixed; boundary=b{i}\r\n\r\n--b{i}\r\n")
                    .as_bytes(),
            );
        }
        let (_, limited) = parse(&m, &Limits::default());
        assert!(limited);

        let mut m = b"Content-Type: multipart/mixed; boundary=x\r\n\r\n".to_vec();
        for _ in 0..10_000 {
            m.extend(b"--x\r\n\r\n.\r\n");
        }
        let limits = Limits {
            max_parts: 50,
            ..Limits::default()
        };
        let (root, limited) = parse(&m, &limits);
        assert!(limited);
        let Kind::Multipart(ch) = &root.kind else {
            panic!()
        };
        assert!(ch.len() <= 50);
        assert_eq!(ch.last().unwrap().body.end, m.len());
    }

    #[test]
    fn delimiter_rules() {
        assert_eq!(delimiter(b"--abc\r\n", b"abc"), Some(false));
        assert_eq!(delimiter(b"--abc  \n", b"abc"), Some(false));
        assert_eq!(delimiter(b"--abc--\r\n", b"abc"), Some(true));
        assert_eq!(delimiter(b"--abc", b"abc"), Some(false));
        assert_eq!(delimiter(b"--abcd\r\n", b"abc"), None);
        assert_eq!(delimiter(b"-abc\r\n", b"abc"), None);
    }
}
