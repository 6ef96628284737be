//! SMTP replies (RFC 5321 4.2) with RFC 3463 enhanced status codes
//! (RFC 2034).
//!
//! A [`Reply`] is a code, an optional enhanced status and one or more text
//! lines. [`Reply::write_to`] produces the wire form: `250-first` lines and
//! a final `250 last`, the enhanced status repeated on every line. Text is
//! sanitised on output — CR, LF, NUL and other control characters become
//! spaces — so client-controlled text echoed in a reply can never end the
//! line early or inject another reply.
//!
//! ```
//! use tern_smtp::reply::Reply;
//! use tern_types::EnhancedStatus;
//! let r = Reply::new(250, EnhancedStatus::new(2, 1, 0), "Sender <a@b> OK");
//! assert_eq!(r.to_bytes(), b"250 2.1.0 Sender <a@b> OK\r\n");
//! ```

use std::fmt;

use tern_types::EnhancedStatus;

/// Longest reply line on the wire, CRLF included (RFC 5321 4.5.3.1.5).
pub const MAX_REPLY_LINE: usize = 512;

/// One SMTP reply, possibly multi-line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// The three-digit reply code (200..=599).
    pub code: u16,
    /// The enhanced status code, written after the code on every line.
    pub status: Option<EnhancedStatus>,
    /// The text lines; an empty list writes one line with no text.
    pub lines: Vec<String>,
}

impl Reply {
    /// A one-line reply with an enhanced status code.
    pub fn new(code: u16, status: EnhancedStatus, text: impl Into<String>) -> Reply {
        Reply {
            code,
            status: Some(status),
            lines: vec![text.into()],
        }
    }

    /// A multi-line reply with an enhanced status code on every line.
    pub fn multiline<I, S>(code: u16, status: EnhancedStatus, lines: I) -> Reply
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Reply {
            code,
            status: Some(status),
            lines: lines.into_iter().map(Into::into).collect(),
        }
    }

    /// A reply without an enhanced status code (the greeting before EHLO,
    /// and the EHLO response lines, which RFC 2034 leaves bare).
    pub fn without_status<I, S>(code: u16, lines: I) -> Reply
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Reply {
            code,
            status: None,
            lines: lines.into_iter().map(Into::into).collect(),
        }
    }

    /// Appends one more text line.
    pub fn with_line(mut self, line: impl Into<String>) -> Reply {
        self.lines.push(line.into());
        self
    }

    /// True for 2xx and 3xx replies.
    pub fn is_positive(&self) -> bool {
        (200..400).contains(&self.code)
    }

    /// True for 4xx replies.
    pub fn is_transient(&self) -> bool {
        (400..500).contains(&self.code)
    }

    /// True for 5xx replies.
    pub fn is_permanent(&self) -> bool {
        (500..600).contains(&self.code)
    }

    /// Appends the wire form to `out`: every line but the last as
    /// `code-text`, the last as `code text`, each ending in CRLF, with the
    /// enhanced status after the code. Text is sanitised and each line is
    /// cut to fit in 512 octets.
    pub fn write_to(&self, out: &mut Vec<u8>) {
        let code = self.code.min(999);
        let empty = [String::new()];
        let lines: &[String] = if self.lines.is_empty() {
            &empty
        } else {
            &self.lines
        };
        for (i, line) in lines.iter().enumerate() {
            let sep = if i + 1 == lines.len() { ' ' } else { '-' };
            let start = out.len();
            let mut prefix = format!("{code:03}{sep}");
            if let Some(s) = self.status {
                prefix.push_str(&s.to_string());
                if !line.is_empty() {
                    prefix.push(' ');
                }
            }
            out.extend_from_slice(prefix.as_bytes());
            // Room left for text on this line, CRLF kept aside.
            let room = MAX_REPLY_LINE.saturating_sub(prefix.len() + 2);
            let mut used = 0;
            for c in line.chars() {
                let c = if c.is_control() { ' ' } else { c };
                if used + c.len_utf8() > room {
                    break;
                }
                used += c.len_utf8();
                let mut buf = [0u8; 4];
                out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
            }
            // "250 " with nothing after it: drop the dangling space.
            if line.is_empty() && self.status.is_none() && sep == ' ' {
                out.truncate(start + 3);
            }
            out.extend_from_slice(b"\r\n");
        }
    }

    /// The wire form as a new buffer.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.write_to(&mut out);
        out
    }
}

impl fmt::Display for Reply {
    /// The wire form without the final CRLF (for logs; already sanitised).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let bytes = self.to_bytes();
        let text = String::from_utf8_lossy(&bytes);
        f.write_str(text.trim_end_matches("\r\n"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S210: EnhancedStatus = EnhancedStatus::new(2, 1, 0);

    #[test]
    fn wire_forms() {
        let cases: Vec<(Reply, &str)> = vec![
            (Reply::new(250, S210, "OK"), "250 2.1.0 OK\r\n"),
            (
                Reply::multiline(250, EnhancedStatus::OK, ["a", "b", "c"]),
                "250-2.0.0 a\r\n250-2.0.0 b\r\n250 2.0.0 c\r\n",
            ),
            (
                Reply::without_status(250, ["mx.example", "PIPELINING", "SIZE 100"]),
                "250-mx.example\r\n250-PIPELINING\r\n250 SIZE 100\r\n",
            ),
            (
                Reply::without_status(220, ["mx.example ESMTP"]),
                "220 mx.example ESMTP\r\n",
            ),
            (
                Reply::new(221, EnhancedStatus::OK, "Bye").with_line("see you"),
                "221-2.0.0 Bye\r\n221 2.0.0 see you\r\n",
            ),
            (Reply::new(250, S210, ""), "250 2.1.0\r\n"),
            (Reply::without_status(354, Vec::<String>::new()), "354\r\n"),
            (Reply::without_status(250, ["", "x"]), "250-\r\n250 x\r\n"),
            // Injection attempts are neutralised.
            (
                Reply::new(550, EnhancedStatus::new(5, 1, 1), "no\r\n250 OK"),
                "550 5.1.1 no  250 OK\r\n",
            ),
            (
                Reply::new(550, EnhancedStatus::new(5, 1, 1), "a\0b\rc\nd\x1be"),
                "550 5.1.1 a b c d e\r\n",
            ),
            (
                Reply::new(550, EnhancedStatus::new(5, 1, 1), "caf\u{e9}"),
                "550 5.1.1 caf\u{e9}\r\n",
            ),
        ];
        for (reply, want) in cases {
            assert_eq!(
                String::from_utf8(reply.to_bytes()).unwrap(),
                want,
                "{reply:?}"
            );
        }
    }

    #[test]
    fn every_line_is_bounded_and_clean() {
        let long = "é".repeat(1000);
        let r = Reply::multiline(550, EnhancedStatus::new(5, 0, 0), [long.clone(), long]);
        let bytes = r.to_bytes();
        let text = String::from_utf8(bytes).unwrap();
        let lines: Vec<&str> = text.split_inclusive("\r\n").collect();
        assert_eq!(lines.len(), 2);
        for l in lines {
            assert!(l.len() <= MAX_REPLY_LINE, "{}", l.len());
            assert!(l.ends_with("\r\n"));
            assert!(!l[..l.len() - 2].contains(['\r', '\n']));
        }
    }

    #[test]
    fn classes() {
        assert!(Reply::new(250, S210, "").is_positive());
        assert!(Reply::new(354, S210, "").is_positive());
        assert!(!Reply::new(421, S210, "").is_positive());
        assert!(Reply::new(421, S210, "").is_transient());
        assert!(Reply::new(554, S210, "").is_permanent());
        assert!(!Reply::new(199, S210, "").is_positive());
    }

    #[test]
    fn display_is_the_wire_form() {
        let r = Reply::multiline(250, EnhancedStatus::OK, ["a", "b"]);
        assert_eq!(r.to_string(), "250-2.0.0 a\r\n250 2.0.0 b");
    }
}
