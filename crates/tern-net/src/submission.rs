//! Submission policy (RFC 6409): who an authenticated user may send as,
//! and the header fix-ups a message submission agent may make.
//!
//! Pure functions over the message's header section and the user's
//! identity, so the rules are unit-tested without sockets. The header
//! section is parsed with `mail-parser` (bounded: the driver hands in at
//! most [`MAX_HEADER_SECTION`] bytes). Nothing here writes to the spool or
//! decides relaying.

use mail_parser::MessageParser;

/// The largest header section the submission driver buffers before
/// deciding; larger messages are refused (552 5.3.4).
pub const MAX_HEADER_SECTION: usize = 256 * 1024;

/// Where the header section ends in `buf` (the offset just past the empty
/// line), if it has ended. A message that starts with an empty line has no
/// header fields.
pub fn header_section_end(buf: &[u8]) -> Option<usize> {
    if buf.starts_with(b"\r\n") {
        return Some(2);
    }
    buf.windows(4).position(|w| w == b"\r\n\r\n").map(|p| p + 4)
}

/// What the submission policy needs to know about a header section.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct HeaderFacts {
    /// Every address in `From:` (lower-cased domain kept as sent).
    pub from: Vec<String>,
    /// A `Date:` field is present.
    pub has_date: bool,
    /// A `Message-ID:` field is present.
    pub has_message_id: bool,
}

/// Reads the facts out of a header section (the bytes up to and including
/// the empty line, or the whole message when it has no body).
pub fn inspect_headers(section: &[u8]) -> HeaderFacts {
    let Some(message) = MessageParser::new().parse_headers(section) else {
        return HeaderFacts::default();
    };
    let from = message
        .from()
        .map(|a| {
            a.iter()
                .filter_map(|addr| addr.address())
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default();
    HeaderFacts {
        from,
        has_date: message.header_raw("Date").is_some(),
        has_message_id: message.header_raw("Message-ID").is_some(),
    }
}

/// The header fields RFC 6409 section 8 lets a submission server add when
/// the client left them out: `Date:` (8.2) and `Message-ID:` (8.3).
pub fn fixup_headers(facts: &HeaderFacts, date: &str, queue_id: &str, hostname: &str) -> String {
    let mut out = String::new();
    if !facts.has_date {
        out.push_str(&format!("Date: {date}\r\n"));
    }
    if !facts.has_message_id {
        out.push_str(&format!("Message-ID: <{queue_id}@{hostname}>\r\n"));
    }
    out
}

/// Compares two addresses: local part exactly (case-insensitively for
/// ASCII, as every mailbox in the directory is), domain case-insensitively.
pub fn same_address(a: &str, b: &str) -> bool {
    a.eq_ignore_ascii_case(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_end_is_the_first_empty_line() {
        assert_eq!(header_section_end(b"A: b\r\n\r\nbody"), Some(8));
        assert_eq!(header_section_end(b"\r\nbody only"), Some(2));
        assert_eq!(header_section_end(b"A: b\r\nB: c\r\n"), None);
        assert_eq!(header_section_end(b"A: b\nB: c\n\n"), None);
    }

    #[test]
    fn facts_from_a_header_section() {
        let f = inspect_headers(
            b"From: \"Alice A.\" <alice@example.test>, bob@example.test\r\nDate: Mon, 23 Nov 2026 11:00:00 +0000\r\nSubject: x\r\n\r\n",
        );
        assert_eq!(f.from, vec!["alice@example.test", "bob@example.test"]);
        assert!(f.has_date);
        assert!(!f.has_message_id);
        let f = inspect_headers(b"Subject: nothing else\r\n\r\n");
        assert!(f.from.is_empty());
        assert!(!f.has_date);
    }

    #[test]
    fn group_syntax_and_comments() {
        let f = inspect_headers(b"From: Team: alice@example.test (Alice);\r\n\r\n");
        assert_eq!(f.from, vec!["alice@example.test"]);
    }

    #[test]
    fn fixups_add_only_what_is_missing() {
        let none = HeaderFacts::default();
        let h = fixup_headers(
            &none,
            "Mon, 23 Nov 2026 11:00:00 +0000",
            "ABC",
            "mx.example.test",
        );
        assert_eq!(
            h,
            "Date: Mon, 23 Nov 2026 11:00:00 +0000\r\nMessage-ID: <ABC@mx.example.test>\r\n"
        );
        let all = HeaderFacts {
            from: vec![],
            has_date: true,
            has_message_id: true,
        };
        assert_eq!(fixup_headers(&all, "d", "ABC", "h"), "");
    }
}
