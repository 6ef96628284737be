//! A reply as a delivery attempt received it: a basic code (RFC 5321
//! 4.2), an optional enhanced status (RFC 3463) and the text.
//!
//! [`ServerReply`] is what the queue keeps of a next hop's answer and what
//! a delivery notice quotes. It is parsed from, and printed as, one line
//! `"550 5.1.1 text"` — the form the spool's state file has always stored —
//! so a stored reply reads back as the same value. The enhanced status in
//! it is read by [`EnhancedStatus`]'s one parser ([`str::parse`]); nothing
//! else in the workspace parses `class.subject.detail`.
//!
//! What this module must never do: invent a reply (a local failure is not
//! a reply; the queue types it as such), or let a reply's class and its
//! status's class disagree silently ([`ServerReply::status_in_class`]).

use std::fmt;
use std::str::FromStr;

use crate::EnhancedStatus;

/// A reply received from a server (SMTP or LMTP), on one line.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ServerReply {
    code: u16,
    status: Option<EnhancedStatus>,
    text: String,
}

/// The text is not `"<code> [<status>] <text>"` with a code from 200 to 599.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a reply line (expected \"550 5.1.1 text\")")]
pub struct ParseReplyError;

impl ServerReply {
    /// A reply with `code` (200 to 599), an optional status and one line of
    /// text. Control characters in `text` (CR, LF, NUL…) become spaces, so
    /// the one-line form stays one line; without `status`, a status that
    /// starts `text` is taken as the status (so the value equals what its
    /// printed form parses to). `None` for a code out of range.
    pub fn new(code: u16, status: Option<EnhancedStatus>, text: &str) -> Option<ServerReply> {
        if !(200..=599).contains(&code) {
            return None;
        }
        Some(ServerReply::clamped(code, status, text))
    }

    /// [`ServerReply::new`] for a code from a source that may be out of
    /// range: a code below 200 counts as 200, above 599 as 599.
    pub fn clamped(code: u16, status: Option<EnhancedStatus>, text: &str) -> ServerReply {
        let code = code.clamp(200, 599);
        let (status, text) = ServerReply::clean(status, text);
        ServerReply { code, status, text }
    }

    fn clean(status: Option<EnhancedStatus>, text: &str) -> (Option<EnhancedStatus>, String) {
        let clean: String = text
            .chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .collect();
        let clean = clean.trim();
        match status {
            Some(s) => (Some(s), clean.to_owned()),
            None => {
                let (s, t) = split_status(clean);
                (s, t.to_owned())
            }
        }
    }

    /// The basic reply code (200 to 599).
    pub fn code(&self) -> u16 {
        self.code
    }

    /// The reply's class: 2, 3, 4 or 5.
    pub fn class(&self) -> u8 {
        (self.code / 100) as u8
    }

    /// The enhanced status as the server wrote it, if it did.
    pub fn status(&self) -> Option<EnhancedStatus> {
        self.status
    }

    /// The text after the code and status.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// The status a delivery notice reports for this reply: the server's,
    /// when its class is the reply's; otherwise the generic `<class>.0.0`
    /// (a `550 4.2.2` is a permanent failure whatever its status says).
    pub fn status_in_class(&self) -> EnhancedStatus {
        let class = self.class();
        match self.status {
            Some(s) if s.class == class => s,
            _ => EnhancedStatus::generic(class),
        }
    }

    /// Parses a stored or received reply line: `"550 5.1.1 text"`,
    /// `"550-5.1.1 text"`, `"550 text"`, `"250"`. A status-like word of the
    /// wrong shape (`5.1234.1`) is text. Leading white space is skipped.
    pub fn parse(line: &str) -> Result<ServerReply, ParseReplyError> {
        let line = line.trim_start();
        let b = line.as_bytes();
        if b.len() < 3 || !b[..3].iter().all(u8::is_ascii_digit) {
            return Err(ParseReplyError);
        }
        let rest = match b.get(3) {
            None => "",
            Some(b' ' | b'-') => &line[4..],
            Some(_) => return Err(ParseReplyError),
        };
        let code: u16 = line[..3].parse().map_err(|_| ParseReplyError)?;
        let (status, text) = split_status(rest);
        ServerReply::new(code, status, text).ok_or(ParseReplyError)
    }
}

/// Splits a leading enhanced status off `text` (`"5.1.1 no such user"` →
/// `(Some(5.1.1), "no such user")`); `(None, text)` when the first word
/// is not one.
pub fn split_status(text: &str) -> (Option<EnhancedStatus>, &str) {
    let end = text.find([' ', '\t', '\r', '\n']).unwrap_or(text.len());
    match text[..end].parse::<EnhancedStatus>() {
        Ok(s) => (Some(s), text[end..].trim_start()),
        Err(_) => (None, text),
    }
}

/// The enhanced status of class `class` that a stored reply or error text
/// carries: `"550 5.1.1 text"`, `"550-5.1.1 text"` or a bare
/// `"5.1.1 text"`. With no status of that class (none at all, or a
/// `550 4.2.2`), the generic `<class>.0.0`. For texts recorded before
/// results were typed; a typed reply has [`ServerReply::status_in_class`].
pub fn status_of(text: &str, class: u8) -> EnhancedStatus {
    let found = match ServerReply::parse(text) {
        Ok(reply) => reply.status,
        Err(_) => split_status(text.trim_start()).0,
    };
    match found {
        Some(s) if s.class == class => s,
        _ => EnhancedStatus::generic(class),
    }
}

/// `"550 5.1.1 text"` (the status and text only when present): the form
/// [`ServerReply::parse`] reads back.
impl fmt::Display for ServerReply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.code)?;
        if let Some(s) = self.status {
            write!(f, " {s}")?;
        }
        if !self.text.is_empty() {
            write!(f, " {}", self.text)?;
        }
        Ok(())
    }
}

impl FromStr for ServerReply {
    type Err = ParseReplyError;

    fn from_str(s: &str) -> Result<ServerReply, ParseReplyError> {
        ServerReply::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Code, status and text a line should parse to.
    type Parsed<'a> = Option<(u16, Option<&'a str>, &'a str)>;

    #[test]
    fn replies_parse_and_print() {
        let cases: &[(&str, Parsed<'_>)] = &[
            (
                "550 5.1.1 no such user",
                Some((550, Some("5.1.1"), "no such user")),
            ),
            (
                "550-5.7.26 unauthenticated",
                Some((550, Some("5.7.26"), "unauthenticated")),
            ),
            ("250", Some((250, None, ""))),
            ("451 try later", Some((451, None, "try later"))),
            ("550 5.1.1.1 odd", Some((550, None, "5.1.1.1 odd"))),
            ("  421 4.3.2 busy", Some((421, Some("4.3.2"), "busy"))),
            (
                "550 5.1.1\r\nInjected: x",
                Some((550, Some("5.1.1"), "Injected: x")),
            ),
            ("550x5.1.1", None),
            ("5.1.1 no code", None),
            ("199 too low", None),
            ("600 too high", None),
            ("", None),
            ("55", None),
        ];
        for (text, want) in cases {
            let got = ServerReply::parse(text).ok();
            let want = want.map(|(code, status, t)| {
                ServerReply::new(code, status.map(|s| s.parse().unwrap()), t).unwrap()
            });
            assert_eq!(got, want, "{text:?}");
            if let Some(r) = got {
                assert_eq!(
                    ServerReply::parse(&r.to_string()),
                    Ok(r.clone()),
                    "{text:?}"
                );
                assert!(!r.to_string().contains(['\r', '\n']));
            }
        }
    }

    #[test]
    fn status_follows_the_reply_class() {
        let r = ServerReply::parse("550 4.2.2 mailbox full").unwrap();
        assert_eq!(r.status_in_class(), EnhancedStatus::new(5, 0, 0));
        let r = ServerReply::parse("452 4.2.2 mailbox full").unwrap();
        assert_eq!(r.status_in_class(), EnhancedStatus::new(4, 2, 2));
        assert_eq!(
            ServerReply::new(550, None, "5.1.1 x"),
            ServerReply::parse("550 5.1.1 x").ok()
        );
        let r = ServerReply::parse("554 rejected").unwrap();
        assert_eq!(r.status_in_class(), EnhancedStatus::new(5, 0, 0));
        assert_eq!(r.class(), 5);
    }

    #[test]
    fn status_of_stored_texts() {
        let s = |t: &str, c: u8| status_of(t, c).to_string();
        assert_eq!(s("550 5.1.1 no such user", 5), "5.1.1");
        assert_eq!(s("550-5.7.26 unauthenticated", 5), "5.7.26");
        assert_eq!(s("5.1.10 null MX", 5), "5.1.10");
        assert_eq!(s("451 4.3.0 try later", 4), "4.3.0");
        assert_eq!(s("550 no such user", 5), "5.0.0");
        assert_eq!(s("550 4.2.2 mailbox full", 5), "5.0.0");
        assert_eq!(s("550 5.1.1.1 odd", 5), "5.0.0");
        assert_eq!(s("550 5.1234.1 odd", 5), "5.0.0");
        assert_eq!(s("550x5.1.1", 5), "5.0.0");
        assert_eq!(s("connection refused", 4), "4.0.0");
        assert_eq!(s("", 4), "4.0.0");
        assert_eq!(s("550 5.1.1\r\nInjected: x", 5), "5.1.1");
    }
}
