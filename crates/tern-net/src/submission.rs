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
    /// How many `From:` fields there are (RFC 5322 3.6 allows exactly one).
    pub from_fields: usize,
    /// Every address in `Sender:`.
    pub sender: Vec<String>,
    /// How many `Sender:` fields there are (at most one).
    pub sender_fields: usize,
    /// A `Date:` field is present.
    pub has_date: bool,
    /// A `Message-ID:` field is present.
    pub has_message_id: bool,
}

impl HeaderFacts {
    /// The author address the message is signed for: the one `From:`
    /// address, or the `Sender:` when `From:` names several (RFC 5322
    /// 3.6.2). `None` when the author fields are not what RFC 5322 allows.
    /// The submission policy checks this address (with every other author
    /// address), and its domain is the one that signs.
    pub fn responsible(&self) -> Option<&str> {
        if self.from_fields != 1 || self.sender_fields > 1 {
            return None;
        }
        match (self.from.as_slice(), self.sender.as_slice()) {
            ([one], _) => Some(one),
            ([_, _, ..], [sender]) => Some(sender),
            _ => None,
        }
    }

    /// The domain of [`Self::responsible`], lower case.
    pub fn signing_domain(&self) -> Option<String> {
        let (_, domain) = self.responsible()?.rsplit_once('@')?;
        let domain = domain.trim_end_matches('.').to_ascii_lowercase();
        (!domain.is_empty()).then_some(domain)
    }
}

/// Why a submitted message's author fields are refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthorRefusal {
    /// Zero or several `From:` fields, an unreadable `From:`, several
    /// `Sender:` fields, or several `From:` addresses without a `Sender:`.
    Malformed(&'static str),
    /// An author address the user may not send as.
    NotOwned(String),
}

/// Checks the author fields of a submitted message: exactly one `From:`
/// (RFC 5322 3.6), a `Sender:` when it names several addresses (3.6.2), at
/// most one `Sender:`; with `owns`, every `From:` address and the `Sender:`
/// must be the user's.
pub fn check_authors(
    facts: &HeaderFacts,
    owns: Option<&dyn Fn(&str) -> bool>,
) -> Result<(), AuthorRefusal> {
    match facts.from_fields {
        0 => return Err(AuthorRefusal::Malformed("the message has no From: field")),
        1 => {}
        _ => {
            return Err(AuthorRefusal::Malformed(
                "the message has more than one From: field",
            ));
        }
    }
    if facts.from.is_empty() {
        return Err(AuthorRefusal::Malformed(
            "the From: field holds no readable address",
        ));
    }
    if facts.sender_fields > 1 || (facts.sender_fields == 1 && facts.sender.len() != 1) {
        return Err(AuthorRefusal::Malformed(
            "the Sender: field must hold exactly one address",
        ));
    }
    if let Some(owns) = owns
        && let Some(bad) = facts
            .from
            .iter()
            .chain(facts.sender.iter())
            .find(|a| !owns(a))
    {
        return Err(AuthorRefusal::NotOwned(bad.clone()));
    }
    if facts.from.len() > 1 && facts.sender.is_empty() {
        return Err(AuthorRefusal::Malformed(
            "a From: field with several addresses needs a Sender: field",
        ));
    }
    Ok(())
}

/// How many fields named `name` (case-insensitive, spaces before the colon
/// allowed) the header section has, counted on the raw bytes so that no
/// parser's leniency can hide one.
fn count_fields(section: &[u8], name: &str) -> usize {
    section
        .split(|&b| b == b'\n')
        .filter(|line| !line.first().is_some_and(|&b| b == b' ' || b == b'\t'))
        .filter_map(|line| {
            let colon = line.iter().position(|&b| b == b':')?;
            line[..colon]
                .trim_ascii()
                .eq_ignore_ascii_case(name.as_bytes())
                .then_some(())
        })
        .count()
}

/// Reads the facts out of a header section (the bytes up to and including
/// the empty line, or the whole message when it has no body).
pub fn inspect_headers(section: &[u8]) -> HeaderFacts {
    let from_fields = count_fields(section, "From");
    let sender_fields = count_fields(section, "Sender");
    let Some(message) = MessageParser::new().parse_headers(section) else {
        return HeaderFacts {
            from_fields,
            sender_fields,
            ..HeaderFacts::default()
        };
    };
    let addresses = |a: Option<&mail_parser::Address<'_>>| -> Vec<String> {
        a.map(|a| {
            a.iter()
                .filter_map(|addr| addr.address())
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
    };
    HeaderFacts {
        from: addresses(message.from()),
        from_fields,
        sender: addresses(message.sender()),
        sender_fields,
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

    /// Security finding 2: `From: ceo@other.test` then `From:
    /// alice@example.test` passed the check (which read the last field)
    /// and was signed for other.test (the signer read the first).
    #[test]
    fn finding_02_two_from_fields_are_refused() {
        let owns = |a: &str| a == "alice@example.test";
        let f = inspect_headers(b"From: ceo@other.test\r\nFrom: alice@example.test\r\n\r\n");
        assert_eq!(f.from_fields, 2);
        assert!(matches!(
            check_authors(&f, Some(&owns)),
            Err(AuthorRefusal::Malformed(_))
        ));
        assert_eq!(f.signing_domain(), None);
        // A space before the colon is still a From: field.
        let f = inspect_headers(b"From : ceo@other.test\r\nFrom: alice@example.test\r\n\r\n");
        assert_eq!(f.from_fields, 2);
        // None at all.
        let f = inspect_headers(b"Subject: x\r\n\r\n");
        assert!(matches!(
            check_authors(&f, None),
            Err(AuthorRefusal::Malformed(_))
        ));
        // Exactly one, owned: accepted and signed for its domain.
        let f = inspect_headers(b"From: Alice <alice@Example.TEST>\r\n\r\n");
        assert_eq!(
            check_authors(
                &f,
                Some(&|a: &str| a.eq_ignore_ascii_case("alice@example.test"))
            ),
            Ok(())
        );
        assert_eq!(f.signing_domain().as_deref(), Some("example.test"));
    }

    #[test]
    fn every_author_address_and_the_sender_are_checked() {
        let owns = |a: &str| a.ends_with("@example.test");
        // Several From: addresses need a Sender:.
        let f = inspect_headers(b"From: a@example.test, b@example.test\r\n\r\n");
        assert!(matches!(
            check_authors(&f, Some(&owns)),
            Err(AuthorRefusal::Malformed(_))
        ));
        let f = inspect_headers(
            b"From: a@example.test, ceo@other.test\r\nSender: a@example.test\r\n\r\n",
        );
        assert_eq!(
            check_authors(&f, Some(&owns)),
            Err(AuthorRefusal::NotOwned("ceo@other.test".into()))
        );
        let f = inspect_headers(
            b"From: a@example.test, b@example.test\r\nSender: s@example.test\r\n\r\n",
        );
        assert_eq!(check_authors(&f, Some(&owns)), Ok(()));
        assert_eq!(f.responsible(), Some("s@example.test"));
        // A Sender: of someone else's is refused too.
        let f = inspect_headers(b"From: a@example.test\r\nSender: ceo@other.test\r\n\r\n");
        assert_eq!(
            check_authors(&f, Some(&owns)),
            Err(AuthorRefusal::NotOwned("ceo@other.test".into()))
        );
        assert_eq!(f.signing_domain().as_deref(), Some("example.test"));
        // Two Sender: fields.
        let f = inspect_headers(
            b"From: a@example.test\r\nSender: a@example.test\r\nSender: b@example.test\r\n\r\n",
        );
        assert!(matches!(
            check_authors(&f, None),
            Err(AuthorRefusal::Malformed(_))
        ));
        assert_eq!(f.responsible(), None);
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
            has_date: true,
            has_message_id: true,
            ..HeaderFacts::default()
        };
        assert_eq!(fixup_headers(&all, "d", "ABC", "h"), "");
    }
}
