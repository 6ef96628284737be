//! Framing the server's replies: [`ReplyParser`] and its limits.

use std::mem;

use tern_types::EnhancedStatus;

use crate::reply::Reply;

/// Default longest reply line accepted, CRLF included. RFC 5321 says 512;
/// real servers write longer rejection texts, so the client is lenient up
/// to this bound.
pub const DEFAULT_MAX_REPLY_LINE: usize = 2048;

/// Default most lines in one reply (an EHLO reply has a dozen or two).
pub const DEFAULT_MAX_REPLY_LINES: usize = 100;

/// Bounds on what a server may send as one reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplyLimits {
    /// Longest reply line, line end included (at least 512).
    pub max_line: usize,
    /// Most lines in one multi-line reply (at least 1).
    pub max_lines: usize,
}

impl Default for ReplyLimits {
    fn default() -> Self {
        ReplyLimits {
            max_line: DEFAULT_MAX_REPLY_LINE,
            max_lines: DEFAULT_MAX_REPLY_LINES,
        }
    }
}

/// Why the server's bytes are not a reply.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ReplyError {
    /// A line longer than [`ReplyLimits::max_line`] (or no line end in
    /// that many bytes).
    #[error("reply line longer than {limit} octets")]
    LineTooLong {
        /// The limit.
        limit: usize,
    },
    /// More continuation lines than [`ReplyLimits::max_lines`].
    #[error("reply with more than {limit} lines")]
    TooManyLines {
        /// The limit.
        limit: usize,
    },
    /// Not `ddd`, `ddd-text` or `ddd text` with a valid reply code.
    #[error("malformed reply line")]
    Malformed,
    /// The lines of one reply carry different codes.
    #[error("reply code changed from {first} to {then} inside a multi-line reply")]
    InconsistentCode {
        /// The first line's code.
        first: u16,
        /// The code that differs.
        then: u16,
    },
}

/// Streaming parser for server replies (RFC 5321 4.2): `ddd-text` lines
/// followed by a `ddd text` line, split anywhere across reads.
///
/// It holds at most one partial line (bounded by
/// [`ReplyLimits::max_line`]) and the lines of one reply (bounded by
/// [`ReplyLimits::max_lines`]). It stops right after each complete reply,
/// so the caller knows exactly which bytes came after it.
///
/// ```
/// use tern_smtp::client::{ReplyLimits, ReplyParser};
/// let mut p = ReplyParser::new(ReplyLimits::default());
/// let mut input: &[u8] = b"250-2.1.0 first\r\n250 2.1.0 last\r\n354 go";
/// let r = p.parse(&mut input).unwrap().unwrap();
/// assert_eq!((r.code, r.lines.len()), (250, 2));
/// assert_eq!(r.status.unwrap().to_string(), "2.1.0");
/// assert_eq!(input, b"354 go");
/// ```
#[derive(Debug, Clone)]
pub struct ReplyParser {
    limits: ReplyLimits,
    line: Vec<u8>,
    code: Option<u16>,
    status: Option<EnhancedStatus>,
    lines: Vec<String>,
}

/// How a reply line ends its reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sep {
    More,
    Last,
}

impl ReplyParser {
    /// A parser at the start of a reply.
    pub fn new(limits: ReplyLimits) -> ReplyParser {
        ReplyParser {
            limits,
            line: Vec::new(),
            code: None,
            status: None,
            lines: Vec::new(),
        }
    }

    /// Forgets any partial line or reply.
    pub fn reset(&mut self) {
        self.line.clear();
        self.code = None;
        self.status = None;
        self.lines.clear();
    }

    /// True when no partial line or reply is held.
    pub fn is_idle(&self) -> bool {
        self.line.is_empty() && self.lines.is_empty()
    }

    /// Consumes bytes from the front of `input` until one reply is
    /// complete (returned, `input` then starts right after it) or `input`
    /// is used up (`Ok(None)`; the partial reply is kept for the next
    /// call). After an error the parser starts afresh; the caller should
    /// give up on the connection.
    pub fn parse(&mut self, input: &mut &[u8]) -> Result<Option<Reply>, ReplyError> {
        let max_line = self.limits.max_line.max(4);
        while !input.is_empty() {
            let room = max_line.saturating_sub(self.line.len()).max(1);
            let window = &input[..input.len().min(room)];
            match window.iter().position(|&b| b == b'\n') {
                Some(i) => {
                    self.line.extend_from_slice(&window[..i]);
                    *input = &input[i + 1..];
                    let line = mem::take(&mut self.line);
                    let done = self.line_done(&line);
                    // Keep the allocation for the next line.
                    self.line = line;
                    self.line.clear();
                    match done {
                        Ok(Some(reply)) => return Ok(Some(reply)),
                        Ok(None) => {}
                        Err(e) => {
                            self.reset();
                            return Err(e);
                        }
                    }
                }
                None if window.len() == room => {
                    self.reset();
                    return Err(ReplyError::LineTooLong { limit: max_line });
                }
                None => {
                    self.line.extend_from_slice(window);
                    *input = &[];
                }
            }
        }
        Ok(None)
    }

    /// One complete line (LF removed).
    fn line_done(&mut self, line: &[u8]) -> Result<Option<Reply>, ReplyError> {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let (code, sep, text) = split_reply_line(line)?;
        if let Some(first) = self.code
            && first != code
        {
            return Err(ReplyError::InconsistentCode { first, then: code });
        }
        if self.lines.len() >= self.limits.max_lines.max(1) {
            return Err(ReplyError::TooManyLines {
                limit: self.limits.max_lines.max(1),
            });
        }
        let text = clean_text(text);
        let text = if self.lines.is_empty() {
            let (status, rest) = leading_status(code, &text);
            self.status = status;
            rest.to_owned()
        } else {
            match self.status {
                Some(s) => strip_status(&text, s).to_owned(),
                None => text,
            }
        };
        self.code = Some(code);
        self.lines.push(text);
        if sep == Sep::More {
            return Ok(None);
        }
        let reply = Reply {
            code,
            status: self.status.take(),
            lines: mem::take(&mut self.lines),
        };
        self.code = None;
        Ok(Some(reply))
    }
}

/// `ddd`, `ddd-text` or `ddd text` → (code, separator, text).
fn split_reply_line(line: &[u8]) -> Result<(u16, Sep, &[u8]), ReplyError> {
    let Some((&[a, b, c], rest)) = line.split_first_chunk::<3>() else {
        return Err(ReplyError::Malformed);
    };
    if !(b'2'..=b'5').contains(&a) || !(b'0'..=b'5').contains(&b) || !c.is_ascii_digit() {
        return Err(ReplyError::Malformed);
    }
    let code = u16::from(a - b'0') * 100 + u16::from(b - b'0') * 10 + u16::from(c - b'0');
    match rest.split_first() {
        None => Ok((code, Sep::Last, rest)),
        Some((b' ', text)) => Ok((code, Sep::Last, text)),
        Some((b'-', text)) => Ok((code, Sep::More, text)),
        Some(_) => Err(ReplyError::Malformed),
    }
}

/// Reply text as a string without control characters.
fn clean_text(text: &[u8]) -> String {
    String::from_utf8_lossy(text)
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

/// A leading RFC 3463 status whose class matches the code, and the rest.
fn leading_status(code: u16, text: &str) -> (Option<EnhancedStatus>, &str) {
    let (word, rest) = text.split_once(' ').unwrap_or((text, ""));
    match word.parse::<EnhancedStatus>() {
        Ok(s) if u16::from(s.class) == code / 100 => (Some(s), rest),
        _ => (None, text),
    }
}

/// `text` without a leading `status` (and the space after it).
fn strip_status(text: &str, status: EnhancedStatus) -> &str {
    let (word, rest) = text.split_once(' ').unwrap_or((text, ""));
    match word.parse::<EnhancedStatus>() {
        Ok(s) if s == status => rest,
        _ => text,
    }
}
