//! Framing: cutting a byte stream into whole IMAP commands.
//!
//! An IMAP command is one or more CRLF-terminated lines joined by literals:
//! a line that ends in `{n}` (synchronising: the server must send a `+`
//! continuation before the client sends the `n` octets), `{n+}`
//! (non-synchronising, LITERAL+/LITERAL-, RFC 7888) or `~{n}` (a binary
//! literal8, RFC 3516) is followed by exactly `n` octets and then the rest
//! of the command. The [`Framer`] assembles such a command, literals
//! inline, and hands it to [`crate::parse`]; it also hands out single lines
//! for the IDLE `DONE` and AUTHENTICATE continuation exchanges.
//!
//! It never buffers more than its [`FramingLimits`]: an over-long line or
//! an oversized literal is drained (counted, not stored) and answered once
//! with [`Frame::Rejected`], after which the next command is framed as
//! usual. A synchronising literal that cannot be accepted is refused before
//! the client sends it, so `{4294967295}` costs no allocation at all.
//! Incomplete input is not an error: [`Framer::next`] returns `None` and
//! waits for more bytes.
//!
//! It never interprets the command beyond its tag and literal
//! announcements, and never touches I/O.

use thiserror::Error;

/// Which literal extension the server advertises (RFC 7888).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LiteralPlus {
    /// `LITERAL+`: non-synchronising literals of any size the limits allow.
    Plus,
    /// `LITERAL-`: non-synchronising literals of at most 4096 octets.
    Minus,
}

/// Size limits for framing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FramingLimits {
    /// Longest line (without its literals), CRLF included.
    pub max_line: usize,
    /// Largest single literal (the APPENDLIMIT).
    pub max_literal: u64,
    /// Largest whole command: all its lines and literals together.
    pub max_command: u64,
    /// Which non-synchronising literal extension is advertised.
    pub literal_plus: LiteralPlus,
}

impl Default for FramingLimits {
    fn default() -> Self {
        FramingLimits {
            max_line: 64 * 1024,
            max_literal: 64 * 1024 * 1024,
            max_command: 65 * 1024 * 1024,
            literal_plus: LiteralPlus::Plus,
        }
    }
}

/// The largest non-synchronising literal under LITERAL- (RFC 7888 §4).
pub const LITERAL_MINUS_MAX: u64 = 4096;

/// Why a command was refused by the framer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum FrameError {
    /// A line longer than [`FramingLimits::max_line`].
    #[error("line too long")]
    LineTooLong,
    /// A literal larger than [`FramingLimits::max_literal`] (or a size that
    /// does not fit in 64 bits).
    #[error("literal too large")]
    LiteralTooLarge,
    /// A non-synchronising literal over 4096 octets under LITERAL-.
    #[error("non-synchronizing literal over 4096 octets")]
    NonSyncLiteralTooLarge,
    /// The command's lines and literals exceed [`FramingLimits::max_command`].
    #[error("command too long")]
    CommandTooLong,
    /// A line ended in a bare LF instead of CRLF.
    #[error("line not terminated by CRLF")]
    BareLineFeed,
    /// A malformed literal announcement (`{}` `{12a}` and the like) at the
    /// end of a line.
    #[error("malformed literal")]
    BadLiteral,
}

impl FrameError {
    /// Whether the answer is a tagged NO (the command was fine but too big,
    /// RFC 9051 `[TOOBIG]`) rather than BAD.
    pub fn is_too_big(&self) -> bool {
        matches!(
            self,
            FrameError::LiteralTooLarge | FrameError::CommandTooLong
        )
    }
}

/// What the session expects next from the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// A command (the usual case).
    Command,
    /// One bare line: the `DONE` ending IDLE, or an AUTHENTICATE response.
    Line,
}

/// One unit of framed input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// A whole command, CRLF included, literals inline (`{n}\r\n` then the
    /// `n` octets). Feed it to [`crate::parse::parse_command`].
    Command(Vec<u8>),
    /// One line asked for with [`Expect::Line`], without its line ending.
    Line(Vec<u8>),
    /// A synchronising literal was announced and accepted: send a `+`
    /// continuation request now, or the client will wait forever.
    Continue,
    /// The command was refused while framing; answer it once with a tagged
    /// BAD (or NO `[TOOBIG]` when [`FrameError::is_too_big`]). `tag` is
    /// `None` when no valid tag was seen (answer with `*`). Its bytes are
    /// gone; the next command is framed normally.
    Rejected {
        /// The command's tag, if it had a valid one.
        tag: Option<Vec<u8>>,
        /// Why it was refused.
        error: FrameError,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Reading a line; `in_command` when it continues a command after a literal.
    Line { in_command: bool },
    /// Reading (or, when poisoned, draining) literal octets.
    Literal { remaining: u64 },
    /// Draining an over-long line up to its LF.
    DiscardLine { in_command: bool },
}

/// Longest tag we remember for an error reply.
const MAX_TAG: usize = 64;
/// How many trailing bytes of a discarded line are kept to spot a literal
/// announcement at its end.
const TAIL: usize = 32;

/// Assembles commands from bytes; see the [module docs](self).
///
/// Call order: [`push`](Framer::push) the bytes read from the socket, then
/// call [`next`](Framer::next) until it returns `None`, acting on each
/// [`Frame`]; then read more.
#[derive(Debug)]
pub struct Framer {
    limits: FramingLimits,
    input: Vec<u8>,
    pos: usize,
    /// Bytes after `pos` already searched for LF in the current line.
    scanned: usize,
    state: State,
    cmd: Vec<u8>,
    cmd_len: u64,
    tag: Option<Vec<u8>>,
    poison: Option<FrameError>,
    tail: Vec<u8>,
    /// Whether the current unit is a bare line ([`Expect::Line`]).
    line_unit: bool,
}

impl Framer {
    /// A framer with these limits.
    pub fn new(limits: FramingLimits) -> Self {
        Framer {
            limits,
            input: Vec::new(),
            pos: 0,
            scanned: 0,
            state: State::Line { in_command: false },
            cmd: Vec::new(),
            cmd_len: 0,
            tag: None,
            poison: None,
            tail: Vec::new(),
            line_unit: false,
        }
    }

    /// The limits in force.
    pub fn limits(&self) -> &FramingLimits {
        &self.limits
    }

    /// Change the limits (for instance after authentication). Applies from
    /// the next line on.
    pub fn set_limits(&mut self, limits: FramingLimits) {
        self.limits = limits;
    }

    /// Append bytes read from the client.
    pub fn push(&mut self, bytes: &[u8]) {
        if self.pos > 0 && self.pos == self.input.len() {
            self.input.clear();
            self.pos = 0;
        } else if self.pos > 4096 && self.pos * 2 > self.input.len() {
            self.input.drain(..self.pos);
            self.pos = 0;
        }
        self.input.extend_from_slice(bytes);
    }

    /// Bytes received but not yet framed.
    pub fn buffered(&self) -> usize {
        self.input.len() - self.pos
    }

    /// Whether a command is partly assembled (after a literal, or a line
    /// in the middle of being drained).
    pub fn in_command(&self) -> bool {
        !matches!(self.state, State::Line { in_command: false })
    }

    /// Forget every byte received but not yet framed and any partial
    /// command; returns how many bytes were dropped. Call it right after
    /// answering STARTTLS, so nothing the client pipelined in plaintext is
    /// read as if it came over TLS (CVE-2011-0411).
    pub fn discard_buffered(&mut self) -> usize {
        let n = self.buffered();
        self.input.clear();
        self.pos = 0;
        self.reset();
        n
    }

    /// Take every byte received but not yet framed, leaving the framer
    /// empty and between commands. After `COMPRESS DEFLATE` these are the
    /// first compressed bytes: the driver inflates them and pushes the
    /// result back.
    pub fn take_buffered(&mut self) -> Vec<u8> {
        let rest = self.input.split_off(self.pos);
        self.input.clear();
        self.pos = 0;
        self.reset();
        rest
    }

    fn reset(&mut self) {
        self.scanned = 0;
        self.state = State::Line { in_command: false };
        self.cmd = Vec::new();
        self.cmd_len = 0;
        self.tag = None;
        self.poison = None;
        self.tail.clear();
        self.line_unit = false;
    }

    fn poison(&mut self, e: FrameError) {
        if self.poison.is_none() {
            self.poison = Some(e);
            self.cmd = Vec::new();
        }
    }

    fn finish(&mut self) -> Frame {
        let frame = match self.poison {
            Some(error) => Frame::Rejected {
                tag: self.tag.take(),
                error,
            },
            None if self.line_unit => {
                let mut line = std::mem::take(&mut self.cmd);
                if line.last() == Some(&b'\n') {
                    line.pop();
                }
                if line.last() == Some(&b'\r') {
                    line.pop();
                }
                Frame::Line(line)
            }
            None => Frame::Command(std::mem::take(&mut self.cmd)),
        };
        self.reset();
        frame
    }

    fn capture_tag(&mut self, line_start: &[u8]) {
        if self.tag.is_some() || self.line_unit {
            return;
        }
        let end = line_start
            .iter()
            .position(|&b| b == b' ' || b == b'\r' || b == b'\n')
            .unwrap_or(line_start.len());
        let t = &line_start[..end];
        if !t.is_empty() && t.len() <= MAX_TAG && t.iter().all(|&b| crate::parse::is_tag_char(b)) {
            self.tag = Some(t.to_vec());
        }
    }

    fn remember_tail(&mut self, bytes: &[u8]) {
        if bytes.len() >= TAIL {
            self.tail.clear();
            self.tail.extend_from_slice(&bytes[bytes.len() - TAIL..]);
        } else {
            self.tail.extend_from_slice(bytes);
            if self.tail.len() > TAIL {
                let cut = self.tail.len() - TAIL;
                self.tail.drain(..cut);
            }
        }
    }

    /// The next frame, or `None` when more input is needed. `expect` matters
    /// only between commands: it says whether the next line is a command or
    /// a bare continuation line.
    pub fn next(&mut self, expect: Expect) -> Option<Frame> {
        loop {
            match self.state {
                State::Literal { remaining } => {
                    let avail = (self.input.len() - self.pos) as u64;
                    let take = avail.min(remaining) as usize;
                    if self.poison.is_none() {
                        self.cmd
                            .extend_from_slice(&self.input[self.pos..self.pos + take]);
                    }
                    self.pos += take;
                    let remaining = remaining - take as u64;
                    if remaining > 0 {
                        self.state = State::Literal { remaining };
                        return None;
                    }
                    self.state = State::Line { in_command: true };
                }
                State::DiscardLine { in_command } => {
                    let rest = &self.input[self.pos..];
                    match rest.iter().position(|&b| b == b'\n') {
                        None => {
                            let rest = rest.to_vec();
                            self.remember_tail(&rest);
                            self.pos = self.input.len();
                            return None;
                        }
                        Some(i) => {
                            let line = rest[..=i].to_vec();
                            self.remember_tail(&line);
                            self.pos += i + 1;
                            let tail = std::mem::take(&mut self.tail);
                            let _ = in_command;
                            if let Some(frame) = self.end_of_line(&tail) {
                                return Some(frame);
                            }
                        }
                    }
                }
                State::Line { in_command } => {
                    if !in_command && self.cmd.is_empty() && self.poison.is_none() {
                        self.line_unit = expect == Expect::Line;
                    }
                    let start = self.pos + self.scanned;
                    let found = self.input[start..].iter().position(|&b| b == b'\n');
                    let Some(i) = found else {
                        let have = self.input.len() - self.pos;
                        if have > self.limits.max_line {
                            let head = self.input[self.pos..].to_vec();
                            self.capture_tag(&head);
                            self.poison(FrameError::LineTooLong);
                            self.tail.clear();
                            self.remember_tail(&head);
                            self.pos = self.input.len();
                            self.scanned = 0;
                            self.state = State::DiscardLine { in_command };
                        } else {
                            self.scanned = have;
                        }
                        return None;
                    };
                    let end = start + i + 1;
                    let line = self.input[self.pos..end].to_vec();
                    self.pos = end;
                    self.scanned = 0;
                    if !in_command {
                        self.capture_tag(&line);
                    }
                    if line.len() > self.limits.max_line {
                        self.poison(FrameError::LineTooLong);
                    }
                    self.cmd_len += line.len() as u64;
                    if self.cmd_len > self.limits.max_command {
                        self.poison(FrameError::CommandTooLong);
                    }
                    if self.poison.is_none() {
                        self.cmd.extend_from_slice(&line);
                    }
                    if let Some(frame) = self.end_of_line(&line) {
                        return Some(frame);
                    }
                }
            }
        }
    }

    /// A whole line (or the tail of a drained one) has been read; decide
    /// whether the command ends here or a literal follows.
    fn end_of_line(&mut self, line: &[u8]) -> Option<Frame> {
        let body = match line.strip_suffix(b"\r\n") {
            Some(b) => b,
            None => {
                self.poison(FrameError::BareLineFeed);
                line.strip_suffix(b"\n").unwrap_or(line)
            }
        };
        if self.line_unit {
            return Some(self.finish());
        }
        let Some(lit) = literal_announcement(body) else {
            return Some(self.finish());
        };
        let Some(size) = lit.size else {
            // Unreadable size: nothing can be drained reliably.
            self.poison(FrameError::BadLiteral);
            return Some(self.finish());
        };
        let mut error = None;
        if size > self.limits.max_literal {
            error = Some(FrameError::LiteralTooLarge);
        } else if self.cmd_len.saturating_add(size) > self.limits.max_command {
            error = Some(FrameError::CommandTooLong);
        } else if !lit.sync
            && self.limits.literal_plus == LiteralPlus::Minus
            && size > LITERAL_MINUS_MAX
        {
            error = Some(FrameError::NonSyncLiteralTooLarge);
        }
        if lit.sync {
            if let Some(e) = error {
                self.poison(e);
            }
            if self.poison.is_some() {
                // Refused before the client sends it: no continuation, and
                // the client abandons the command.
                return Some(self.finish());
            }
            self.cmd_len += size;
            self.state = State::Literal { remaining: size };
            return Some(Frame::Continue);
        }
        if let Some(e) = error {
            self.poison(e);
        }
        self.cmd_len = self.cmd_len.saturating_add(size);
        self.state = State::Literal { remaining: size };
        None
    }
}

struct Announcement {
    /// `None` when the digits do not form a number that fits in 64 bits.
    size: Option<u64>,
    sync: bool,
}

/// The literal announced at the end of a line (without its CRLF), if any.
fn literal_announcement(body: &[u8]) -> Option<Announcement> {
    let inner = body.strip_suffix(b"}")?;
    let open = inner.iter().rposition(|&b| b == b'{')?;
    let mut digits = &inner[open + 1..];
    let mut sync = true;
    if let Some(d) = digits.strip_suffix(b"+") {
        digits = d;
        sync = false;
    }
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        // `{` ... `}` that is not a literal: either garbage or part of
        // something else; the parser decides. Only a brace group that looks
        // like a literal is treated as one.
        if digits.iter().all(|&b| b.is_ascii_digit() || b == b'+') && !digits.is_empty() {
            return Some(Announcement { size: None, sync });
        }
        return None;
    }
    let size = if digits.len() > 19 {
        None
    } else {
        std::str::from_utf8(digits).ok()?.parse::<u64>().ok()
    };
    Some(Announcement { size, sync })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn framer() -> Framer {
        Framer::new(FramingLimits {
            max_line: 100,
            max_literal: 1000,
            max_command: 2000,
            literal_plus: LiteralPlus::Plus,
        })
    }

    fn all(f: &mut Framer, expect: Expect) -> Vec<Frame> {
        let mut v = Vec::new();
        while let Some(fr) = f.next(expect) {
            v.push(fr);
        }
        v
    }

    fn cmd(s: &[u8]) -> Frame {
        Frame::Command(s.to_vec())
    }

    fn rejected(tag: &str, error: FrameError) -> Frame {
        Frame::Rejected {
            tag: Some(tag.as_bytes().to_vec()),
            error,
        }
    }

    #[test]
    fn simple_lines_and_pipelining() {
        let mut f = framer();
        f.push(b"a NOOP\r\nb CAPA");
        assert_eq!(all(&mut f, Expect::Command), vec![cmd(b"a NOOP\r\n")]);
        f.push(b"BILITY\r\n");
        assert_eq!(all(&mut f, Expect::Command), vec![cmd(b"b CAPABILITY\r\n")]);
        assert!(!f.in_command());
    }

    #[test]
    fn byte_by_byte_equals_whole() {
        let input: &[u8] =
            b"a LOGIN {3}\r\nbob {4+}\r\npass\r\nb APPEND x ~{3}\r\n\x00\x01\x02\r\nc NOOP\r\n";
        let mut whole = framer();
        whole.push(input);
        let expected = all(&mut whole, Expect::Command);
        let mut f = framer();
        let mut got = Vec::new();
        for b in input {
            f.push(&[*b]);
            got.extend(all(&mut f, Expect::Command));
        }
        assert_eq!(got, expected);
        assert_eq!(
            expected,
            vec![
                Frame::Continue,
                cmd(b"a LOGIN {3}\r\nbob {4+}\r\npass\r\n"),
                Frame::Continue,
                cmd(b"b APPEND x ~{3}\r\n\x00\x01\x02\r\n"),
                cmd(b"c NOOP\r\n"),
            ]
        );
    }

    #[test]
    fn huge_sync_literal_refused_without_continuation() {
        let mut f = framer();
        f.push(b"a APPEND INBOX {4294967295}\r\nb NOOP\r\n");
        assert_eq!(
            all(&mut f, Expect::Command),
            vec![
                rejected("a", FrameError::LiteralTooLarge),
                cmd(b"b NOOP\r\n")
            ]
        );
        // A size that does not even fit in 64 bits.
        f.push(b"c APPEND INBOX {999999999999999999999999}\r\nd NOOP\r\n");
        assert_eq!(
            all(&mut f, Expect::Command),
            vec![rejected("c", FrameError::BadLiteral), cmd(b"d NOOP\r\n")]
        );
    }

    #[test]
    fn oversized_non_sync_literal_is_drained_and_answered_once() {
        let mut f = framer();
        f.push(b"a APPEND INBOX {1500+}\r\n");
        assert_eq!(all(&mut f, Expect::Command), vec![]);
        for _ in 0..15 {
            f.push(&[b'x'; 100]);
            assert_eq!(all(&mut f, Expect::Command), vec![]);
        }
        // Nothing was kept of the 1500 octets.
        assert!(f.cmd.is_empty());
        f.push(b"\r\nb NOOP\r\n");
        assert_eq!(
            all(&mut f, Expect::Command),
            vec![
                rejected("a", FrameError::LiteralTooLarge),
                cmd(b"b NOOP\r\n")
            ]
        );
    }

    #[test]
    fn literal_minus() {
        let mut f = Framer::new(FramingLimits {
            literal_plus: LiteralPlus::Minus,
            ..FramingLimits::default()
        });
        let mut input = b"a APPEND INBOX {4097+}\r\n".to_vec();
        input.extend(std::iter::repeat_n(b'x', 4097));
        input.extend_from_slice(b"\r\nb APPEND INBOX {4096+}\r\n");
        input.extend(std::iter::repeat_n(b'y', 4096));
        input.extend_from_slice(b"\r\n");
        f.push(&input);
        let frames = all(&mut f, Expect::Command);
        assert_eq!(frames.len(), 2);
        assert_eq!(frames[0], rejected("a", FrameError::NonSyncLiteralTooLarge));
        assert!(matches!(&frames[1], Frame::Command(c) if c.len() == 26 + 4096));
    }

    #[test]
    fn long_line_drained_and_next_command_works() {
        let mut f = framer();
        f.push(b"tag1 SEARCH ");
        for _ in 0..100 {
            f.push(&[b'A'; 50]);
            assert_eq!(all(&mut f, Expect::Command), vec![]);
            assert!(f.buffered() <= 200);
        }
        f.push(b"\r\nb NOOP\r\n");
        assert_eq!(
            all(&mut f, Expect::Command),
            vec![
                rejected("tag1", FrameError::LineTooLong),
                cmd(b"b NOOP\r\n")
            ]
        );
    }

    #[test]
    fn long_line_ending_in_non_sync_literal_drains_the_literal() {
        let mut f = framer();
        let mut input = b"a APPEND ".to_vec();
        input.extend(std::iter::repeat_n(b'x', 200));
        input.extend_from_slice(b" {5+}\r\nb NOOP\r\nc NOOP\r\n");
        f.push(&input);
        assert_eq!(
            all(&mut f, Expect::Command),
            vec![rejected("a", FrameError::LineTooLong), cmd(b"c NOOP\r\n")]
        );
    }

    #[test]
    fn bare_lf_rejected() {
        let mut f = framer();
        f.push(b"a NOOP\nb NOOP\r\n");
        assert_eq!(
            all(&mut f, Expect::Command),
            vec![rejected("a", FrameError::BareLineFeed), cmd(b"b NOOP\r\n")]
        );
    }

    #[test]
    fn command_total_bounded() {
        let mut f = framer();
        // 900-octet literals are each under max_literal but three of them
        // pass max_command.
        let mut input = b"a APPEND x {900+}\r\n".to_vec();
        input.extend(std::iter::repeat_n(b'x', 900));
        input.extend_from_slice(b" {900+}\r\n");
        input.extend(std::iter::repeat_n(b'x', 900));
        input.extend_from_slice(b" {900}\r\nb NOOP\r\n");
        f.push(&input);
        assert_eq!(
            all(&mut f, Expect::Command),
            vec![
                rejected("a", FrameError::CommandTooLong),
                cmd(b"b NOOP\r\n")
            ]
        );
    }

    #[test]
    fn lines_for_idle_and_authenticate() {
        let mut f = framer();
        f.push(b"DONE\r\ndGVzdA==\r\n*\r\na NOOP\r\n");
        assert_eq!(f.next(Expect::Line), Some(Frame::Line(b"DONE".to_vec())));
        assert_eq!(
            f.next(Expect::Line),
            Some(Frame::Line(b"dGVzdA==".to_vec()))
        );
        assert_eq!(f.next(Expect::Line), Some(Frame::Line(b"*".to_vec())));
        assert_eq!(f.next(Expect::Command), Some(cmd(b"a NOOP\r\n")));
        // A `{5}` at the end of a bare line is not a literal.
        f.push(b"abc {5}\r\n");
        assert_eq!(f.next(Expect::Line), Some(Frame::Line(b"abc {5}".to_vec())));
        // Over-long continuation line.
        f.push(&[b'A'; 300]);
        assert_eq!(f.next(Expect::Line), None);
        f.push(b"\r\n");
        assert_eq!(
            f.next(Expect::Line),
            Some(Frame::Rejected {
                tag: None,
                error: FrameError::LineTooLong
            })
        );
    }

    #[test]
    fn partial_line_survives_a_change_of_expectation() {
        let mut f = framer();
        f.push(b"DO");
        assert_eq!(f.next(Expect::Command), None);
        f.push(b"NE\r\n");
        assert_eq!(f.next(Expect::Line), Some(Frame::Line(b"DONE".to_vec())));
    }

    #[test]
    fn starttls_discards_pipelined_bytes() {
        let mut f = framer();
        f.push(b"a STARTTLS\r\nb LOGIN evil {5}\r\n");
        assert_eq!(f.next(Expect::Command), Some(cmd(b"a STARTTLS\r\n")));
        assert_eq!(f.discard_buffered(), 18);
        assert_eq!(f.next(Expect::Command), None);
        f.push(b"c NOOP\r\n");
        assert_eq!(f.next(Expect::Command), Some(cmd(b"c NOOP\r\n")));
    }

    #[test]
    fn untagged_garbage_rejected_without_tag() {
        let mut f = framer();
        f.push(b"(((( {9999}\r\n");
        assert_eq!(
            f.next(Expect::Command),
            Some(Frame::Rejected {
                tag: None,
                error: FrameError::LiteralTooLarge
            })
        );
    }
}
