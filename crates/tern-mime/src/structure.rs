//! The bounded MIME structure of a message: every entity's header and body
//! as byte ranges of the original message, so IMAP sections
//! (RFC 9051 §6.4.5) return the stored octets exactly.
//!
//! # What offsets mean
//!
//! Every range is a half-open byte range into the bytes given to
//! [`crate::Message::parse`]. Line ends are recognised as CRLF or a bare LF
//! (mail stored with LF endings parses the same way; its sections then
//! contain bare LFs, exactly as stored, and sizes count the stored octets;
//! see [`crate::to_crlf`] to serve CRLF instead).
//!
//! * An entity's **header** runs from its first byte up to and including
//!   the empty line that ends it. Without an empty line it runs to the next
//!   delimiter line (or the end of input), its last line end included, and
//!   the body is empty.
//! * A **body** runs from the byte after that empty line to the end of the
//!   entity. A part ends before the line end that precedes the next
//!   delimiter line (RFC 2046 §5.1.1: that line end belongs to the
//!   delimiter); a multipart that was closed (`--boundary--`) ends after
//!   its epilogue, and the close line keeps its own line end.
//!
//! # Malformed input, read the way Dovecot reads it
//!
//! One pass over the lines with a stack of the open multiparts' boundaries.
//! A line starting with `--boundary` is a delimiter whatever follows it,
//! and belongs to the innermost open multipart whose boundary it matches,
//! so nested multiparts that reuse (or extend) an outer boundary still
//! split. A multipart left open ends where an outer delimiter or the input
//! ends; a last delimiter with nothing after it opens an empty part; a
//! multipart without a boundary parameter, or without any part, gets one
//! empty `text/plain` child so its BODYSTRUCTURE stays valid. A
//! message/rfc822 body is parsed as a message whatever its transfer
//! encoding says. These choices were checked against Dovecot 2.3 on the
//! test corpora of mail-parser and mail-auth (identical BODYSTRUCTURE and
//! ENVELOPE for all 174 messages).
//!
//! # Bounds
//!
//! Each line is read once and compared with at most [`Limits::max_depth`]
//! boundaries (only lines starting with `--`), so work is linear in the
//! message size times the depth cap. Past a limit
//! (depth, total parts, boundary length) the entity is kept as an opaque
//! leaf: it still has a header and a body, it is just not split further.
//!
//! This module never decodes content and never fails: any byte string has
//! a structure.

use std::ops::Range;

use crate::header::{self, first_value};
use crate::params;

/// The deepest [`Limits::max_depth`] honoured (deeper recursion could
/// exhaust a 2 MB thread stack in a debug build).
pub const MAX_DEPTH: usize = 100;

/// Caps that bound parsing work on hostile input (MIME bombs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Deepest nesting of multiparts and message/rfc822 parts that is
    /// split; deeper entities are opaque leaves. The part tree and the
    /// views that walk it recurse once per level, so it is capped at
    /// [`MAX_DEPTH`] (the default 32 is plenty for real mail).
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
        self.kind.eq_ignore_ascii_case(kind) && self.subtype.eq_ignore_ascii_case(subtype)
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
    /// The `Content-Transfer-Encoding` field is there but holds no single
    /// token (`8 bit`, nothing): BODYSTRUCTURE then says 7bit and BINARY
    /// refuses the part as an unknown encoding, as Dovecot does.
    pub encoding_invalid: bool,
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
    /// Boundaries of the open multiparts, outermost first.
    stack: Vec<Vec<u8>>,
}

/// A delimiter line that ended an entity.
#[derive(Debug, Clone, Copy)]
struct Stop {
    /// Where the delimiter line starts.
    line: usize,
    /// Which open multipart it belongs to (index into the stack).
    level: usize,
    /// `--boundary--`.
    close: bool,
}

/// Parses the structure of `bytes` within `limits`. The second value is
/// true when a limit stopped the parse somewhere.
pub(crate) fn parse(bytes: &[u8], limits: &Limits) -> (Part, bool) {
    let mut limits = *limits;
    // The parse recurses once per level: never deeper than this, whatever
    // the caller asks.
    limits.max_depth = limits.max_depth.min(MAX_DEPTH);
    let mut p = Parser {
        bytes,
        limits,
        parts: 0,
        limited: false,
        stack: Vec::new(),
    };
    let (root, _, _) = p.entity(0, MediaType::default_text(), 0);
    (root, p.limited)
}

/// The `Content-Transfer-Encoding` value: one token, or empty (meaning
/// 7bit) when the field holds anything more (`8 bit`), as Dovecot reads it.
fn transfer_encoding(header: &[u8]) -> (String, bool) {
    let Some(raw) = first_value(header, b"content-transfer-encoding") else {
        return (String::new(), false);
    };
    let v = header::trim(raw);
    let token_len = v
        .iter()
        .take_while(|&&b| b > b' ' && b != 0x7f && !b"()<>@,;:\\\"/[]?=".contains(&b))
        .count();
    let rest = header::trim(&v[token_len..]);
    if token_len == 0 || (!rest.is_empty() && !rest.starts_with(b"(")) {
        return (String::new(), true);
    }
    (String::from_utf8_lossy(&v[..token_len]).into_owned(), false)
}

fn media_type(header: &[u8], default: MediaType) -> MediaType {
    let Some(raw) = first_value(header, b"content-type") else {
        return default;
    };
    let hp = params::parse(raw);
    if hp.value.is_empty() {
        return default;
    }
    // `text` alone is type `text` with an empty subtype, and a value with
    // junk before its parameters is type "" subtype "" (Dovecot's reading).
    let (kind, subtype) = match params::type_subtype(raw) {
        Some((k, s)) => (
            String::from_utf8_lossy(k).into_owned(),
            String::from_utf8_lossy(s).into_owned(),
        ),
        None => (String::new(), String::new()),
    };
    MediaType {
        kind: kind.to_ascii_lowercase(),
        subtype: subtype.to_ascii_lowercase(),
        kind_raw: kind,
        subtype_raw: subtype,
        params: hp.params,
        explicit: true,
    }
}

impl Parser<'_> {
    fn line_end(&self, pos: usize) -> usize {
        match header::memchr(b'\n', &self.bytes[pos..]) {
            Some(i) => pos + i + 1,
            None => self.bytes.len(),
        }
    }

    /// Whether the line at `pos..end` is a delimiter of an open multipart,
    /// the innermost first (a line that two boundaries match belongs to
    /// the inner multipart, as in Dovecot).
    fn delimiter_at(&self, pos: usize, end: usize) -> Option<Stop> {
        let line = &self.bytes[pos..end];
        if !line.starts_with(b"--") {
            return None;
        }
        self.stack.iter().enumerate().rev().find_map(|(level, b)| {
            delimiter(line, b).map(|close| Stop {
                line: pos,
                level,
                close,
            })
        })
    }

    /// The first delimiter line at or after `pos` (a line start).
    fn scan(&self, mut pos: usize) -> Option<Stop> {
        if self.stack.is_empty() {
            return None;
        }
        while pos < self.bytes.len() {
            let end = self.line_end(pos);
            if let Some(stop) = self.delimiter_at(pos, end) {
                return Some(stop);
            }
            pos = end;
        }
        None
    }

    /// Where content from `from` ends before `stop`: before the line end
    /// that precedes the delimiter (RFC 2046 §5.1.1), never before `from`.
    fn content_end(&self, from: usize, stop: Option<Stop>) -> usize {
        let Some(stop) = stop else {
            return self.bytes.len();
        };
        let b = self.bytes;
        let mut end = stop.line;
        if end > from && b[end - 1] == b'\n' {
            end -= 1;
            if end > from && b[end - 1] == b'\r' {
                end -= 1;
            }
        }
        end
    }

    /// The header starting at `start`: where it ends and where the body
    /// starts, or, when a delimiter line comes first, the header without
    /// the line end before that delimiter (the line end belongs to the
    /// delimiter; an empty line right before a delimiter is that line end
    /// too) and the delimiter.
    fn header_end(&self, start: usize) -> HeaderEnd {
        let mut pos = start;
        while pos < self.bytes.len() {
            let end = self.line_end(pos);
            let line = &self.bytes[pos..end];
            if line == b"\n" || line == b"\r\n" {
                let next = self.line_end(end);
                if end < self.bytes.len()
                    && let Some(stop) = self.delimiter_at(end, next)
                {
                    return HeaderEnd::BlankThenDelimiter(pos, end, stop);
                }
                return HeaderEnd::Blank(end);
            }
            if let Some(stop) = self.delimiter_at(pos, end) {
                return HeaderEnd::Delimiter(self.content_end(start, Some(stop)), stop);
            }
            pos = end;
        }
        HeaderEnd::Blank(self.bytes.len())
    }

    /// Parses the entity at `start` and returns it with the delimiter line
    /// that ended it (`None`: the end of input) and whether that delimiter
    /// came while the innermost entity was still in its header. Then, as
    /// in Dovecot, the line end before the delimiter is cut from that
    /// header only: the entities around it keep it.
    fn entity(&mut self, start: usize, default: MediaType, depth: usize) -> Parsed {
        self.parts += 1;
        let ended = self.header_end(start);
        let (mut header_end, mut body_start, mut header_stop) = match ended {
            HeaderEnd::Blank(body) => (body, body, None),
            HeaderEnd::BlankThenDelimiter(_, body, _) => (body, body, None),
            HeaderEnd::Delimiter(end, stop) => (end, end, Some(stop)),
        };
        let media = media_type(&self.bytes[start..header_end], default.clone());
        if let HeaderEnd::BlankThenDelimiter(blank, _, stop) = ended {
            // The empty line belongs to the delimiter that follows, unless
            // that delimiter is the first one of this multipart, which
            // will be split (within the limits).
            let splits = depth < self.limits.max_depth && self.parts < self.limits.max_parts;
            let own = splits
                && media.kind == "multipart"
                && media.param(b"boundary").is_some_and(|b| {
                    !b.is_empty()
                        && b.len() <= self.limits.max_boundary_len
                        && delimiter(&self.bytes[stop.line..self.line_end(stop.line)], b).is_some()
                });
            if !own {
                header_end = blank;
                body_start = blank;
                header_stop = Some(stop);
            }
        }
        let hbytes = &self.bytes[start..header_end];
        let media = media_type(hbytes, default);
        let (encoding_raw, encoding_invalid) = transfer_encoding(hbytes);
        let mut part = Part {
            header: start..header_end,
            body: body_start..body_start,
            media,
            encoding: encoding_raw.to_ascii_lowercase(),
            encoding_raw,
            encoding_invalid,
            kind: Kind::Leaf,
        };
        if let Some(stop) = header_stop {
            // No body at all: a multipart gets its empty child, a message
            // an empty inner message (within the limits).
            let nested = part.media.kind == "multipart" || part.media.is_message();
            let within = depth < self.limits.max_depth && self.parts < self.limits.max_parts;
            if nested && !within {
                self.limited = true;
            } else if part.media.kind == "multipart" {
                part.kind = Kind::Multipart(vec![self.empty_child(body_start)]);
            } else if part.media.is_message() {
                let inner = self.empty_child(body_start);
                part.kind = Kind::Message(Box::new(inner));
            }
            return (part, Some(stop), true);
        }
        let nested = part.media.kind == "multipart" || part.media.is_message();
        if nested && (depth >= self.limits.max_depth || self.parts >= self.limits.max_parts) {
            self.limited = true;
        } else if part.media.kind == "multipart" {
            let boundary = part.media.param(b"boundary").map(<[u8]>::to_vec);
            match boundary {
                Some(b) if b.len() > self.limits.max_boundary_len => self.limited = true,
                Some(b) if !b.is_empty() => return self.multipart(part, b, depth),
                // Without a boundary nothing can be split: like Dovecot,
                // one empty child.
                _ => {
                    let stop = self.scan(body_start);
                    part.body.end = self.content_end(body_start, stop);
                    part.kind = Kind::Multipart(vec![self.empty_child(part.body.end)]);
                    return (part, stop, false);
                }
            }
        } else if part.media.is_message() {
            // Parsed whatever the transfer encoding says (an encoded
            // message/rfc822 is read as stored), as Dovecot does.
            let (inner, stop, in_header) =
                self.entity(body_start, MediaType::default_text(), depth + 1);
            part.body.end = if in_header {
                stop.map_or(self.bytes.len(), |s| s.line)
            } else {
                inner.body.end
            };
            part.kind = Kind::Message(Box::new(inner));
            return (part, stop, in_header);
        }
        let stop = self.scan(body_start);
        part.body.end = self.content_end(body_start, stop);
        (part, stop, false)
    }

    fn empty_child(&mut self, at: usize) -> Part {
        self.parts += 1;
        Part {
            header: at..at,
            body: at..at,
            media: MediaType::default_text(),
            encoding: String::new(),
            encoding_raw: String::new(),
            encoding_invalid: false,
            kind: Kind::Leaf,
        }
    }

    /// The children of a multipart whose header is parsed: delimiter by
    /// delimiter until its close delimiter (then the epilogue runs to the
    /// next outer delimiter) or an outer delimiter (unterminated).
    fn multipart(&mut self, mut part: Part, boundary: Vec<u8>, depth: usize) -> Parsed {
        let default = if part.media.subtype == "digest" {
            MediaType::default_message()
        } else {
            MediaType::default_text()
        };
        let body_start = part.body.start;
        self.stack.push(boundary);
        let own = self.stack.len() - 1;
        let mut children = Vec::new();
        let mut stop = self.scan(body_start);
        let mut in_header = false;
        // Content after this point may lose the line end before the next
        // delimiter; the close delimiter's own line end stays with it.
        let mut content_from = body_start;
        let end_stop = loop {
            match stop {
                Some(s) if s.level == own && !s.close => {
                    let child_start = self.line_end(s.line);
                    let last = self.parts >= self.limits.max_parts;
                    if last {
                        // Too many parts: the rest is one opaque last part.
                        self.limited = true;
                        self.stack.pop();
                    }
                    let (child, st, child_in_header) =
                        self.entity(child_start, default.clone(), depth + 1);
                    children.push(child);
                    in_header = child_in_header;
                    if last {
                        break st;
                    }
                    stop = st;
                }
                Some(s) if s.level == own => {
                    // The close delimiter: the epilogue runs to the next
                    // outer delimiter.
                    self.stack.pop();
                    in_header = false;
                    content_from = self.line_end(s.line);
                    break self.scan(content_from);
                }
                other => {
                    // An outer delimiter or the end: unterminated.
                    self.stack.pop();
                    break other;
                }
            }
        };
        part.body.end = match end_stop {
            Some(s) if in_header => s.line,
            _ => self.content_end(content_from, end_stop),
        };
        // Never before the end of the last part (the line end before a
        // delimiter cannot be cut from a part that already ended past it).
        if let Some(last) = children.last() {
            part.body.end = part.body.end.max(last.body.end);
        }
        if children.is_empty() {
            children.push(self.empty_child(part.body.end));
        }
        part.kind = Kind::Multipart(children);
        (part, end_stop, in_header)
    }
}

/// How a header ended.
enum HeaderEnd {
    /// At an empty line; the body starts here.
    Blank(usize),
    /// At a delimiter line: the header's end and the delimiter.
    Delimiter(usize, Stop),
    /// At an empty line right before a delimiter line: where the empty
    /// line starts, where it ends, and the delimiter.
    BlankThenDelimiter(usize, usize, Stop),
}

/// An entity, the delimiter that ended it, and whether it ended in a
/// header (see [`Parser::entity`]).
type Parsed = (Part, Option<Stop>, bool);

/// If `line` is a delimiter line for `boundary`, whether it is the close
/// delimiter. Like Dovecot, a line that starts with `--boundary` is a
/// delimiter whatever follows; `--boundary--` closes. (Nested boundaries
/// that are prefixes of each other are told apart by checking the
/// innermost multipart first.)
fn delimiter(line: &[u8], boundary: &[u8]) -> Option<bool> {
    let rest = line.strip_prefix(b"--")?.strip_prefix(boundary)?;
    Some(rest.starts_with(b"--"))
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
        // The last `--outer` opens an empty part, as in Dovecot.
        assert_eq!(bodies, vec![&b"a"[..], b"b", b"inner body", b""]);
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

    /// Every range inside the input, header before body, children inside
    /// their parent's body and in order (the fuzz target's invariant).
    fn check_ranges(p: &Part, len: usize) {
        assert!(p.header.start <= p.header.end && p.header.end <= p.body.start);
        assert!(p.body.start <= p.body.end && p.body.end <= len);
        match &p.kind {
            Kind::Multipart(children) => {
                let mut at = p.body.start;
                for c in children {
                    assert!(
                        c.header.start >= at && c.body.end <= p.body.end,
                        "{c:?} in {p:?}"
                    );
                    at = c.body.end;
                    check_ranges(c, len);
                }
            }
            Kind::Message(inner) => {
                assert!(inner.header.start == p.body.start && inner.body.end <= p.body.end);
                check_ranges(inner, len);
            }
            Kind::Leaf => {}
        }
    }

    #[test]
    fn unsplit_multipart_before_a_prefix_delimiter_stays_inside() {
        // Found by the fuzz target: a multipart kept whole by the depth
        // limit, whose first line is also (by prefix) an outer delimiter.
        let m = b"Content-Type: multipart/mixed; boundary=a\r\n\r\n--a\r\n\
                  Content-Type: multipart/mixed; boundary=p\r\n\r\n--p\r\n\
                  Content-Type: multipart/alternative; boundary=a-b\r\n\r\n--a-b\r\n\r\nx\r\n";
        for max_depth in [1, 2, 3] {
            let limits = Limits {
                max_depth,
                ..Limits::default()
            };
            let (root, _) = parse(m, &limits);
            check_ranges(&root, m.len());
        }
    }

    #[test]
    fn delimiter_rules() {
        assert_eq!(delimiter(b"--abc\r\n", b"abc"), Some(false));
        assert_eq!(delimiter(b"--abc  \n", b"abc"), Some(false));
        assert_eq!(delimiter(b"--abc--\r\n", b"abc"), Some(true));
        assert_eq!(delimiter(b"--abc", b"abc"), Some(false));
        assert_eq!(delimiter(b"--abcd\r\n", b"abc"), Some(false));
        assert_eq!(delimiter(b"-abc\r\n", b"abc"), None);
    }
}
