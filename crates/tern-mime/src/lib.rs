//! Views of one stored RFC 5322 message for IMAP FETCH, SEARCH, SORT and
//! THREAD and for POP3 TOP: bytes in, values (or ready IMAP syntax) out.
//!
//! Parse once with [`Message::parse`], then ask for as many views as the
//! command needs: [`Message::section`] (exact stored bytes of
//! `BODY[...]`), [`Message::envelope_imap`], [`Message::body_structure_imap`],
//! [`Message::binary`], the SEARCH matchers, and the SORT/THREAD keys.
//! [`thread`] builds REFERENCES and ORDEREDSUBJECT trees over many
//! messages; [`pop3::top`] serves POP3 TOP. The views are built by
//! [`envelope`], [`bodystructure`] and [`address`] (with [`params`] for
//! `Content-Type` parameters), matched by [`search`], and written in IMAP
//! syntax by [`imap`].
//!
//! Output follows Dovecot 2.3 (the reference server) byte for byte where
//! it does not contradict the RFCs; the tests compare against Dovecot's
//! recorded answers and list each deliberate difference. Offsets are byte
//! offsets into the stored message (see [`structure`]); mail stored with
//! bare LF line ends should go through [`to_crlf`] first to be served as
//! CRLF, as Dovecot does.
//!
//! This crate never does I/O, never reads a clock (the caller passes the
//! internal date) and never panics on any input; structure parsing is
//! bounded by [`Limits`] (nesting depth, part count, boundary length), so a
//! MIME bomb costs linear time. mail-parser is used only for decoding
//! RFC 2047 encoded words in one header value at a time and for charset
//! conversion; it is never handed a whole message, so its own MIME
//! recursion never runs on our input. Structure and byte offsets come from
//! our own parser ([`structure`]) because IMAP sections must return the
//! stored octets exactly.
//!
//! # Left to the IMAP server (and what Dovecot does there)
//!
//! * A [`SectionError`] (no such part, HEADER/TEXT of a part that is not a
//!   message): Dovecot answers an empty string rather than `NO`.
//! * Sections are raw bytes and may hold NUL: send them as `literal8`
//!   (`~{n}`) where allowed; Dovecot otherwise replaces NUL with 0x80.
//! * SORT compares the [`SortKeys`] with [`sort::compare_casemap`] (or the
//!   number), `REVERSE` flipping that comparison only; equal keys keep
//!   sequence order (RFC 5256 §3).
//! * SEARCH SENTBEFORE/SENTON/SENTSINCE use [`Message::sent_date`], or the
//!   internal date when it is `None`.
//!
//! ```
//! use tern_mime::{Limits, Message, Section, SectionText};
//!
//! let raw = b"From: Ann <ann@example.org>\r\nSubject: Hi\r\n\r\nHello\r\n";
//! let msg = Message::parse(raw, &Limits::default());
//!
//! let mut out = Vec::new();
//! msg.body_structure_imap(false, &mut out);
//! assert_eq!(out, b"(\"text\" \"plain\" (\"charset\" \"us-ascii\") NIL NIL \"7bit\" 7 1)");
//!
//! let text = msg
//!     .section(&Section { part: vec![], text: Some(SectionText::Text) })
//!     .unwrap();
//! assert_eq!(&*text, b"Hello\r\n");
//! assert!(msg.header_contains(b"subject", "hi"));
//! ```
#![forbid(unsafe_code)]

use std::borrow::Cow;

pub mod address;
pub mod binary;
pub mod bodystructure;
mod charset;
pub mod envelope;
pub mod header;
pub mod imap;
pub mod params;
pub mod pop3;
pub mod search;
pub mod section;
pub mod sort;
pub mod structure;
pub mod thread;

pub use binary::BinaryError;
pub use envelope::Envelope;
pub use search::SentDate;
pub use section::{Section, SectionError, SectionText, partial};
pub use sort::SortKeys;
pub use structure::{Kind, Limits, MediaType, Part};

/// `bytes` with every bare LF turned into CRLF (CRLF and lone CR kept),
/// and a lone CR at the very end dropped.
///
/// Mail stored with LF line ends parses fine as it is, but then sections
/// and sizes are the stored LF bytes. IMAP clients expect CRLF, and
/// Dovecot serves such mail as CRLF with sizes to match (and drops a CR
/// that ends the file): to do the same, parse the result of this function
/// (borrowed when nothing changes).
pub fn to_crlf(bytes: &[u8]) -> Cow<'_, [u8]> {
    let bytes = match bytes {
        [rest @ .., b'\r'] => rest,
        _ => bytes,
    };
    let bare = memchr::memchr_iter(b'\n', bytes)
        .filter(|&i| i == 0 || bytes[i - 1] != b'\r')
        .count();
    if bare == 0 {
        return Cow::Borrowed(bytes);
    }
    let mut out = Vec::with_capacity(bytes.len() + bare);
    for (i, &b) in bytes.iter().enumerate() {
        if b == b'\n' && (i == 0 || bytes[i - 1] != b'\r') {
            out.push(b'\r');
        }
        out.push(b);
    }
    Cow::Owned(out)
}

/// One parsed message: the stored bytes and their MIME structure.
#[derive(Debug, Clone)]
pub struct Message<'a> {
    bytes: &'a [u8],
    root: Part,
    limited: bool,
}

impl<'a> Message<'a> {
    /// Parses the structure of `bytes`. Never fails: any bytes are a
    /// message (at worst one text part), and parts past `limits` stay
    /// unsplit (see [`Message::limits_hit`]).
    pub fn parse(bytes: &'a [u8], limits: &Limits) -> Self {
        let (root, limited) = structure::parse(bytes, limits);
        Message {
            bytes,
            root,
            limited,
        }
    }

    /// The stored bytes.
    pub fn bytes(&self) -> &'a [u8] {
        self.bytes
    }

    /// The top-level entity (the message itself).
    pub fn root(&self) -> &Part {
        &self.root
    }

    /// Whether a limit kept some part from being split.
    pub fn limits_hit(&self) -> bool {
        self.limited
    }

    /// The message header, with its ending empty line.
    pub fn header(&self) -> &'a [u8] {
        &self.bytes[self.root.header.clone()]
    }

    /// The message body (RFC 5322 text).
    pub fn body(&self) -> &'a [u8] {
        &self.bytes[self.root.body.clone()]
    }

    /// The ENVELOPE of the message.
    pub fn envelope(&self) -> Envelope<'a> {
        Envelope::from_header(self.header())
    }

    /// Appends the IMAP `envelope` syntax.
    pub fn envelope_imap(&self, out: &mut Vec<u8>) {
        self.envelope().write_imap(out);
    }

    /// Appends BODYSTRUCTURE (`extensible`) or BODY (`!extensible`).
    pub fn body_structure_imap(&self, extensible: bool, out: &mut Vec<u8>) {
        bodystructure::write(out, self.bytes, &self.root, extensible);
    }

    /// The exact bytes of `BODY[section]`; apply `<origin.count>` with
    /// [`partial`].
    pub fn section(&self, section: &Section) -> Result<Cow<'a, [u8]>, SectionError> {
        section::section(self.bytes, &self.root, section)
    }

    /// The part a non-empty part path names.
    pub fn part(&self, path: &[u32]) -> Result<&Part, SectionError> {
        section::resolve(&self.root, path)
    }

    /// `BINARY[part]` (RFC 3516): the part's body with its transfer
    /// encoding removed. For a multipart or message/rfc822 part (and for
    /// the whole message, an empty path) every leaf inside is decoded and
    /// its `Content-Transfer-Encoding` field rewritten to `binary`, the
    /// rest kept as stored, as Dovecot does. An unknown encoding anywhere
    /// inside is [`BinaryError::UnknownCte`].
    pub fn binary(&self, path: &[u32]) -> Result<Cow<'a, [u8]>, BinaryError> {
        let part = if path.is_empty() {
            &self.root
        } else {
            self.part(path)?
        };
        if let Kind::Leaf = part.kind {
            let body = binary::decode_part(part, self.bytes)?;
            if !path.is_empty() {
                return Ok(body);
            }
            // `BINARY[]` is the whole message, header included (RFC 3516
            // 4.1: BODY[] with the transfer encoding undone).
            let mut out = Vec::with_capacity(part.header.len() + body.len());
            out.extend_from_slice(&self.bytes[part.header.clone()]);
            out.extend_from_slice(&body);
            return Ok(Cow::Owned(out));
        }
        if !binary::needs_decoding(part) {
            let range = if path.is_empty() {
                part.full()
            } else {
                part.body.clone()
            };
            return Ok(Cow::Borrowed(&self.bytes[range]));
        }
        let mut out = Vec::with_capacity(self.bytes.len());
        if path.is_empty() {
            binary::rebuild_entity(self.bytes, part, &mut out)?;
        } else {
            binary::rebuild_body(self.bytes, part, &mut out)?;
        }
        Ok(Cow::Owned(out))
    }

    /// `BINARY.SIZE[part]`: the length of [`Message::binary`].
    pub fn binary_size(&self, path: &[u32]) -> Result<usize, BinaryError> {
        self.binary(path).map(|b| b.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binary_of_the_whole_message_keeps_the_header() {
        let raw = b"Subject: x\r\nContent-Transfer-Encoding: base64\r\n\r\naGVsbG8=\r\n";
        let msg = Message::parse(raw, &Limits::default());
        let all = msg.binary(&[]).unwrap();
        assert!(all.starts_with(b"Subject: x\r\n"));
        assert!(all.ends_with(b"hello"));
        assert_eq!(&*msg.binary(&[1]).unwrap(), b"hello");
    }
}
