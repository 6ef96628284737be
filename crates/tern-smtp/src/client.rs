//! The SMTP client session: a sans-IO state machine that delivers mail to
//! another server (RFC 5321 with PIPELINING, SIZE, 8BITMIME, SMTPUTF8, DSN,
//! ENHANCEDSTATUSCODES, STARTTLS and AUTH PLAIN/LOGIN), the
//! [`ReplyParser`] that frames the server's replies, and the
//! [`DataEncoder`] that turns a queued message into DATA content.
//!
//! [`ClientSession`] takes the server's bytes and the driver's requests
//! (start a transaction, the TLS handshake is done, the message was sent,
//! the connection broke, a timer fired) and yields [`Event`]s: bytes to
//! write, "run the TLS handshake now", "stream the message now", the
//! per-recipient results of each transaction, and finally how the session
//! ended. It never touches a socket, a clock or a file; the outbound
//! driver in the runtime does, and reads which RFC 5321 4.5.3.2 timer
//! applies from [`ClientSession::timeout_class`].
//!
//! What it must never do:
//! * act on bytes the server sent after its `220` to STARTTLS and before
//!   the TLS handshake finished: they are discarded (Exim CVE-2021-38371,
//!   response injection);
//! * send message content in a form another server could read as the end
//!   of data: [`DataEncoder`] turns every bare CR and bare LF into CRLF
//!   before dot-stuffing, so the only `CRLF . CRLF` it writes is its own
//!   terminator (SMTP smuggling, CVE-2023-51764 class, from the sender's
//!   side);
//! * send AUTH credentials in plaintext unless
//!   [`ClientConfig::allow_insecure_auth`] says so;
//! * buffer a hostile server's reply without bound, or panic on anything a
//!   server sends: reply lines and line counts are capped
//!   ([`ReplyLimits`]), and every malformed reply fails the session with a
//!   temporary error.
//!
//! Decisions:
//! * Reply lines may end in CRLF or in a bare LF (some servers do); a bare
//!   CR inside a line is text. Reply text that is not UTF-8 is converted
//!   lossily and control characters become spaces: the text is only ever
//!   shown to people, and servers do send localised text. The code and
//!   separator must be ASCII (`[2-5][0-5][0-9]` then `-`, space or the end
//!   of the line); anything else is a protocol error.
//! * An enhanced status code is taken from the text when the first line
//!   starts with one whose class matches the reply code, whether or not
//!   ENHANCEDSTATUSCODES was advertised.
//! * Any 2xx greeting is accepted (RFC 5321 says 220; being lenient costs
//!   nothing). A 4xx/5xx greeting ends the session with
//!   [`SessionError::Greeting`]; a 5xx one is permanent
//!   ([`SessionFailure::is_permanent`]) and the driver decides whether to
//!   try the next MX anyway.
//! * EHLO answered with 5xx → HELO (no extensions); EHLO answered with 4xx
//!   ends the session.
//! * STARTTLS refused (4xx/5xx) with [`StartTlsPolicy::Opportunistic`]:
//!   the session goes on in plaintext without a new EHLO (RFC 3207 leaves
//!   the state unchanged). A failed handshake ends the session; with
//!   `Opportunistic` the failure says the driver may retry on a new
//!   connection with [`StartTlsPolicy::Disabled`]
//!   ([`SessionFailure::retry_without_tls`]).
//! * AUTH failures, missing AUTH support and missing TLS are never
//!   permanent: they are our configuration's problem, not the message's
//!   (Postfix's `smtp_sasl_auth_soft_bounce`).
//! * A message with `BODY=8BITMIME` goes to a server without 8BITMIME as
//!   is, without the BODY parameter: RFC 6152 asks for a downgrade to
//!   7 bits, which would break DKIM signatures, and practically every
//!   server accepts 8-bit text. `BODY=BINARYMIME` needs BDAT, which this
//!   client does not send (CHUNKING is parsed, never used): such a message
//!   fails with `554 5.6.3` rather than being corrupted by line-ending
//!   conversion.
//! * A message that needs SMTPUTF8 (the flag, or a non-ASCII address) to a
//!   server without it fails with `553 5.6.7`; one larger than the
//!   server's SIZE fails with `552 5.3.4`; neither sends MAIL.
//! * DSN parameters (RET, ENVID, NOTIFY, ORCPT) are sent only when the
//!   server advertises DSN; [`TransactionResult::dsn_passed_on`] tells the
//!   queue whether it owes "relayed" notices (RFC 3461 4.1).
//! * A 421 at any point ends the session; recipients without a final
//!   answer are deferred with the server's 421 reply (it says why).
//!   Connection loss and timeouts defer them with a synthetic
//!   `421 4.4.2` reply; synthetic replies are marked
//!   ([`RcptOutcome::from_server`] is false).
//! * When no recipient was accepted, DATA is not sent (without
//!   PIPELINING) and the transaction is reset with RSET. With PIPELINING
//!   DATA was already sent; a server that answers it with 354 anyway gets
//!   an empty message terminator (`.`) and its reply is ignored.
//! * A reply that arrives while the message is being streamed ends the
//!   transaction with that reply (a 4xx/5xx applies to the accepted
//!   recipients, anything else defers them) and the session, since the
//!   server no longer reads our bytes as content.
//! * Long lines are not folded by [`DataEncoder`]: folding would change
//!   the message; Tern's own server already bounds text lines.
//!
//! LMTP (RFC 2033, [`Protocol::Lmtp`], for a mailbox server such as
//! Dovecot) is the same session with these differences:
//! * `LHLO` instead of `EHLO`, and no `HELO` fallback: a 4xx/5xx to LHLO
//!   ends the session with [`SessionError::HelloRejected`];
//! * PIPELINING is used whether or not it is advertised (RFC 2033 4.1:
//!   every LMTP server supports it), unless [`ClientConfig::pipelining`]
//!   is off;
//! * after the final `.` the server sends one reply per recipient whose
//!   RCPT was accepted, in RCPT order (RFC 2033 4.2); each settles its own
//!   recipient (2xx delivered, 4xx deferred, 5xx failed).
//!   [`TransactionResult::message_reply`] is the last of these replies. A
//!   421 among them, a lost connection or a timeout defers the recipients
//!   still without a reply;
//! * a 354 to DATA when no recipient was accepted (RFC 2033 4.2 requires
//!   503) is a protocol error: the recipients already have their RCPT
//!   results, and sending an empty message would leave the number of
//!   replies to expect undefined;
//! * a message received with SMTPUTF8 whose addresses are all ASCII goes
//!   to a server without SMTPUTF8 (Dovecot offers it only experimentally)
//!   without the parameter instead of failing with `5.6.7`: the mailbox
//!   server stores the bytes and relays nothing, so UTF-8 in the header
//!   harms no one. A non-ASCII address still needs SMTPUTF8.
//!
//! ```
//! use std::sync::Arc;
//! use tern_smtp::client::{ClientConfig, ClientSession, Event};
//!
//! let mut s = ClientSession::new(Arc::new(ClientConfig::new("mx.example.org"))).unwrap();
//! s.handle_input(b"220 mx.example.net ESMTP\r\n");
//! let Some(Event::Send(out)) = s.poll_event() else { panic!() };
//! assert_eq!(out.as_bytes(), b"EHLO mx.example.org\r\n");
//! s.handle_input(b"250-mx.example.net\r\n250 PIPELINING\r\n");
//! assert_eq!(s.poll_event(), Some(Event::Ready));
//! ```

use std::collections::VecDeque;
use std::fmt;
use std::mem;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use tern_types::dsn::{BodyType, Notify, Orcpt, Ret};
use tern_types::{AddressLiteral, Domain, EnhancedStatus, ForwardPath, ReversePath};
use zeroize::Zeroizing;

use crate::command::encode_xtext;
use crate::reply::{MAX_REPLY_LINE, Reply};

// ------------------------------------------------------------ Replies

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

// ------------------------------------------------------------ Extensions

/// What the server advertised in its EHLO reply.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Extensions {
    /// PIPELINING (RFC 2920).
    pub pipelining: bool,
    /// SIZE (RFC 1870): `Some(n)` when advertised; `n` is the largest
    /// message, 0 when the server gave no (or no readable) fixed limit.
    pub size: Option<u64>,
    /// 8BITMIME (RFC 6152).
    pub eight_bit_mime: bool,
    /// SMTPUTF8 (RFC 6531).
    pub smtputf8: bool,
    /// DSN (RFC 3461).
    pub dsn: bool,
    /// STARTTLS (RFC 3207).
    pub starttls: bool,
    /// AUTH mechanisms (RFC 4954), upper-case, at most
    /// [`MAX_AUTH_MECHANISMS`]. Empty: AUTH not offered.
    pub auth: Vec<String>,
    /// CHUNKING (RFC 3030); parsed, not used by this client.
    pub chunking: bool,
    /// ENHANCEDSTATUSCODES (RFC 2034).
    pub enhanced_status_codes: bool,
}

/// Most AUTH mechanisms kept from an EHLO reply.
pub const MAX_AUTH_MECHANISMS: usize = 32;

impl Extensions {
    /// Reads the keywords of an EHLO reply (every line but the first,
    /// which names the server). Unknown keywords are ignored; keywords
    /// are case-insensitive. `AUTH=…` (an old form) counts as AUTH.
    pub fn from_ehlo(reply: &Reply) -> Extensions {
        let mut ext = Extensions::default();
        for line in reply.lines.iter().skip(1) {
            let mut words = line.split_ascii_whitespace();
            let Some(keyword) = words.next() else {
                continue;
            };
            let keyword = keyword.to_ascii_uppercase();
            let mut mechanisms =
                |first: Option<&str>, words: std::str::SplitAsciiWhitespace<'_>| {
                    for m in first.into_iter().chain(words) {
                        let m = m.to_ascii_uppercase();
                        if !m.is_empty()
                            && ext.auth.len() < MAX_AUTH_MECHANISMS
                            && !ext.auth.contains(&m)
                        {
                            ext.auth.push(m);
                        }
                    }
                };
            match keyword.as_str() {
                "PIPELINING" => ext.pipelining = true,
                "SIZE" => {
                    ext.size = Some(words.next().and_then(|n| n.parse().ok()).unwrap_or(0));
                }
                "8BITMIME" => ext.eight_bit_mime = true,
                "SMTPUTF8" => ext.smtputf8 = true,
                "DSN" => ext.dsn = true,
                "STARTTLS" => ext.starttls = true,
                "AUTH" => mechanisms(None, words),
                "CHUNKING" => ext.chunking = true,
                "ENHANCEDSTATUSCODES" => ext.enhanced_status_codes = true,
                k => {
                    if let Some(first) = k.strip_prefix("AUTH=") {
                        mechanisms(Some(first), words);
                    }
                }
            }
        }
        ext
    }

    /// The server offers this AUTH mechanism.
    pub fn offers_auth(&self, mechanism: AuthMechanism) -> bool {
        self.auth.iter().any(|m| m == mechanism.as_str())
    }
}

// ------------------------------------------------------------ Config

/// Whether to use STARTTLS (RFC 3207).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum StartTlsPolicy {
    /// Use it when offered (RFC 7435); without it, or when the server
    /// refuses it, go on in plaintext. A failed handshake ends the session
    /// and lets the driver retry without TLS.
    #[default]
    Opportunistic,
    /// Deliver only over TLS: no STARTTLS offered, or refused, ends the
    /// session (temporary failure).
    Required,
    /// Never use STARTTLS.
    Disabled,
}

/// A SASL mechanism this client can use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthMechanism {
    /// RFC 4616, with an initial response.
    Plain,
    /// The LOGIN mechanism (user name, then password, each in a 334 round).
    Login,
}

impl AuthMechanism {
    /// The name as advertised.
    pub fn as_str(self) -> &'static str {
        match self {
            AuthMechanism::Plain => "PLAIN",
            AuthMechanism::Login => "LOGIN",
        }
    }
}

/// Credentials for a smarthost. `Debug` never shows the password, which
/// is zeroed on drop.
#[derive(Clone)]
pub struct ClientAuth {
    /// The mechanism to use; the server must offer it.
    pub mechanism: AuthMechanism,
    /// The user name (authentication identity).
    pub username: String,
    /// The password.
    pub password: Zeroizing<String>,
}

impl ClientAuth {
    /// Credentials for `mechanism`.
    pub fn new(
        mechanism: AuthMechanism,
        username: impl Into<String>,
        password: impl Into<String>,
    ) -> ClientAuth {
        ClientAuth {
            mechanism,
            username: username.into(),
            password: Zeroizing::new(password.into()),
        }
    }
}

impl fmt::Debug for ClientAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientAuth")
            .field("mechanism", &self.mechanism)
            .field("username", &self.username)
            .field("password", &"***")
            .finish()
    }
}

/// Which protocol the session speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Protocol {
    /// SMTP (RFC 5321): EHLO with HELO fallback, one reply to the end of
    /// data for the whole message.
    #[default]
    Smtp,
    /// LMTP (RFC 2033): LHLO, always pipelined, one reply per accepted
    /// recipient after the end of data.
    Lmtp,
}

/// The session's configuration (per destination; share it with an `Arc`).
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// Our name in EHLO/HELO (LHLO with LMTP): a domain or an address
    /// literal.
    pub helo_name: String,
    /// SMTP or LMTP.
    pub protocol: Protocol,
    /// STARTTLS policy.
    pub starttls: StartTlsPolicy,
    /// AUTH credentials (smarthosts). Sent only under TLS unless
    /// `allow_insecure_auth`.
    pub auth: Option<ClientAuth>,
    /// Send credentials without TLS (a smarthost on a trusted network).
    pub allow_insecure_auth: bool,
    /// Use PIPELINING when the server offers it (with LMTP: always).
    pub pipelining: bool,
    /// Bounds on the server's replies.
    pub reply_limits: ReplyLimits,
}

impl ClientConfig {
    /// SMTP, opportunistic STARTTLS, no AUTH, PIPELINING when offered.
    pub fn new(helo_name: impl Into<String>) -> ClientConfig {
        ClientConfig {
            helo_name: helo_name.into(),
            protocol: Protocol::Smtp,
            starttls: StartTlsPolicy::Opportunistic,
            auth: None,
            allow_insecure_auth: false,
            pipelining: true,
            reply_limits: ReplyLimits::default(),
        }
    }

    /// Checks the values the session would otherwise send unchecked.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let name = &self.helo_name;
        let valid_name = if name.starts_with('[') {
            AddressLiteral::parse(name).is_ok()
        } else {
            Domain::parse(name).is_ok()
        };
        if !valid_name {
            return Err(ConfigError::InvalidHeloName);
        }
        if let Some(auth) = &self.auth
            && (auth.username.is_empty()
                || auth.username.contains('\0')
                || auth.password.contains('\0'))
        {
            return Err(ConfigError::InvalidCredentials);
        }
        if self.reply_limits.max_line < MAX_REPLY_LINE || self.reply_limits.max_lines == 0 {
            return Err(ConfigError::InvalidLimits);
        }
        Ok(())
    }
}

/// A [`ClientConfig`] that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// `helo_name` is not an ASCII domain or an address literal.
    #[error("helo_name must be an ASCII domain or an address literal")]
    InvalidHeloName,
    /// An empty user name, or a NUL in the user name or password.
    #[error("AUTH user name is empty, or the user name or password contains NUL")]
    InvalidCredentials,
    /// `max_line` below 512 or `max_lines` of 0.
    #[error("reply limits below what RFC 5321 allows servers to send")]
    InvalidLimits,
}

// ------------------------------------------------------------ Timeouts

/// Which RFC 5321 4.5.3.2 timer applies while the session waits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeoutClass {
    /// Waiting for the greeting (4.5.3.2.1, 5 minutes).
    Greeting,
    /// Waiting for the reply to EHLO, HELO, STARTTLS, AUTH, RSET or QUIT
    /// (5 minutes, as for MAIL).
    Command,
    /// The driver runs the TLS handshake (not in RFC 5321; 5 minutes, as
    /// Postfix's `smtp_starttls_timeout`).
    TlsHandshake,
    /// Waiting for the reply to MAIL (4.5.3.2.2, 5 minutes).
    Mail,
    /// Waiting for the reply to RCPT (4.5.3.2.3, 5 minutes).
    Rcpt,
    /// Waiting for the 354 to DATA (4.5.3.2.4, 2 minutes).
    DataInit,
    /// Writing message content: each write (4.5.3.2.5, 3 minutes).
    DataBlock,
    /// Waiting for the reply to the end of data (4.5.3.2.6, 10 minutes).
    DataTermination,
}

impl fmt::Display for TimeoutClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TimeoutClass::Greeting => "the greeting",
            TimeoutClass::Command => "a command reply",
            TimeoutClass::TlsHandshake => "the TLS handshake",
            TimeoutClass::Mail => "the MAIL reply",
            TimeoutClass::Rcpt => "the RCPT reply",
            TimeoutClass::DataInit => "the DATA reply",
            TimeoutClass::DataBlock => "a data block write",
            TimeoutClass::DataTermination => "the end-of-data reply",
        })
    }
}

/// The durations of the client timers; the defaults are RFC 5321
/// 4.5.3.2's minimums.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientTimeouts {
    /// [`TimeoutClass::Greeting`].
    pub greeting: Duration,
    /// [`TimeoutClass::Command`].
    pub command: Duration,
    /// [`TimeoutClass::TlsHandshake`].
    pub tls_handshake: Duration,
    /// [`TimeoutClass::Mail`].
    pub mail: Duration,
    /// [`TimeoutClass::Rcpt`].
    pub rcpt: Duration,
    /// [`TimeoutClass::DataInit`].
    pub data_init: Duration,
    /// [`TimeoutClass::DataBlock`].
    pub data_block: Duration,
    /// [`TimeoutClass::DataTermination`].
    pub data_termination: Duration,
}

impl Default for ClientTimeouts {
    fn default() -> Self {
        const MIN: u64 = 60;
        ClientTimeouts {
            greeting: Duration::from_secs(5 * MIN),
            command: Duration::from_secs(5 * MIN),
            tls_handshake: Duration::from_secs(5 * MIN),
            mail: Duration::from_secs(5 * MIN),
            rcpt: Duration::from_secs(5 * MIN),
            data_init: Duration::from_secs(2 * MIN),
            data_block: Duration::from_secs(3 * MIN),
            data_termination: Duration::from_secs(10 * MIN),
        }
    }
}

impl ClientTimeouts {
    /// The duration of one timer.
    pub fn get(&self, class: TimeoutClass) -> Duration {
        match class {
            TimeoutClass::Greeting => self.greeting,
            TimeoutClass::Command => self.command,
            TimeoutClass::TlsHandshake => self.tls_handshake,
            TimeoutClass::Mail => self.mail,
            TimeoutClass::Rcpt => self.rcpt,
            TimeoutClass::DataInit => self.data_init,
            TimeoutClass::DataBlock => self.data_block,
            TimeoutClass::DataTermination => self.data_termination,
        }
    }
}

// ------------------------------------------------------------ Transactions

/// The MAIL parameters of a message, as queued.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MessageParams {
    /// The message size in octets (for the SIZE pre-check and `SIZE=`).
    pub size: Option<u64>,
    /// The body type it was received with.
    pub body: BodyType,
    /// It was received with SMTPUTF8 (its header may hold UTF-8).
    pub smtputf8: bool,
    /// DSN `RET=`.
    pub ret: Option<Ret>,
    /// DSN `ENVID=` (decoded; encoded as xtext on the wire).
    pub envid: Option<String>,
}

/// One recipient of a transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recipient {
    /// The address.
    pub address: ForwardPath,
    /// DSN `NOTIFY=`.
    pub notify: Option<Notify>,
    /// DSN `ORCPT=` (decoded; encoded on the wire).
    pub orcpt: Option<Orcpt>,
}

impl Recipient {
    /// A recipient without DSN parameters.
    pub fn new(address: ForwardPath) -> Recipient {
        Recipient {
            address,
            notify: None,
            orcpt: None,
        }
    }
}

/// One message to send on this connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transaction {
    /// The reverse path.
    pub from: ReversePath,
    /// The MAIL parameters.
    pub params: MessageParams,
    /// The recipients (at least one); results refer to them by index.
    pub rcpts: Vec<Recipient>,
}

/// What became of one recipient.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RcptResult {
    /// The server took responsibility (2xx to the end of data).
    Delivered(Reply),
    /// Try again later (a 4xx, a 421, a broken connection, a timeout).
    Deferred(Reply),
    /// Permanent failure (a 5xx, or a pre-check): bounce.
    Failed(Reply),
}

impl RcptResult {
    /// The reply behind the result.
    pub fn reply(&self) -> &Reply {
        match self {
            RcptResult::Delivered(r) | RcptResult::Deferred(r) | RcptResult::Failed(r) => r,
        }
    }
}

/// The result for the recipient at `index` in [`Transaction::rcpts`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RcptOutcome {
    /// Index into the transaction's recipients.
    pub index: usize,
    /// The result.
    pub result: RcptResult,
    /// The reply came from the server (false: Tern made it up — a
    /// pre-check, a lost connection, a timeout, a protocol error; a DSN
    /// should not present it as the remote server's words).
    pub from_server: bool,
}

/// The outcome of a transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransactionResult {
    /// One entry per recipient, in order.
    pub rcpts: Vec<RcptOutcome>,
    /// The reply to the end of data, when the message was sent.
    pub message_reply: Option<Reply>,
    /// The server advertised DSN, so NOTIFY/ORCPT/RET/ENVID went with
    /// the message (otherwise "relayed" notices may be due, RFC 3461 4.1).
    pub dsn_passed_on: bool,
}

// ------------------------------------------------------------ Events

/// Bytes to write to the server. `Debug` shows them escaped, except for
/// lines carrying credentials, which show only their length; those are
/// zeroed on drop.
#[derive(Clone, PartialEq, Eq)]
pub struct Outgoing {
    bytes: Zeroizing<Vec<u8>>,
    sensitive: bool,
}

impl Outgoing {
    fn new(bytes: Vec<u8>) -> Outgoing {
        Outgoing {
            bytes: Zeroizing::new(bytes),
            sensitive: false,
        }
    }

    fn secret(bytes: Zeroizing<Vec<u8>>) -> Outgoing {
        Outgoing {
            bytes,
            sensitive: true,
        }
    }

    /// The bytes to write.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// True when the bytes carry credentials (never log them).
    pub fn is_sensitive(&self) -> bool {
        self.sensitive
    }
}

impl fmt::Debug for Outgoing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.sensitive {
            write!(f, "Outgoing({} octets, redacted)", self.bytes.len())
        } else {
            write!(f, "Outgoing(\"{}\")", self.bytes.escape_ascii())
        }
    }
}

/// What the session asks of the driver, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// Write these bytes to the server, in order with every other `Send`.
    Send(Outgoing),
    /// Run the TLS handshake now (after writing every earlier `Send`);
    /// discard every byte read before it completes; then call
    /// [`ClientSession::tls_established`] or
    /// [`ClientSession::tls_failed`].
    StartTls,
    /// The server sent 354: write the message through a [`DataEncoder`]
    /// (ending with [`DataEncoder::finish`]), then call
    /// [`ClientSession::data_sent`]. Stop if [`Event::Closed`] comes
    /// first.
    NeedData,
    /// A transaction is over; every recipient has its result.
    TransactionDone(TransactionResult),
    /// Idle: [`ClientSession::start_transaction`] or
    /// [`ClientSession::quit`] may be called. (When input read in the same
    /// [`ClientSession::handle_input`] call has closed the session since,
    /// they return [`ClientError::Closed`] and [`Event::Closed`] follows;
    /// the same holds for `data_sent` after [`Event::NeedData`].)
    Ready,
    /// The session is over: write any `Send` before it, then close the
    /// connection. No event follows.
    Closed(Outcome),
}

/// How a session ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// We said QUIT (answered, or the connection closed after it).
    Quit,
    /// The session failed before QUIT.
    Failed(SessionFailure),
}

/// Why and when a session failed; enough for the driver to pick "next MX",
/// "retry later" or "bounce".
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionFailure {
    /// What went wrong.
    pub error: SessionError,
    /// No MAIL was ever sent on this connection: the whole batch can go
    /// to the next MX.
    pub before_any_transaction: bool,
}

impl SessionFailure {
    /// The failure is permanent for every message meant for this server
    /// (a 5xx greeting or a 5xx to both EHLO and HELO).
    pub fn is_permanent(&self) -> bool {
        self.error.is_permanent()
    }

    /// The TLS handshake failed under the opportunistic policy: a new
    /// connection with [`StartTlsPolicy::Disabled`] may deliver.
    pub fn retry_without_tls(&self) -> bool {
        matches!(
            self.error,
            SessionError::TlsHandshake {
                retry_without_tls: true
            }
        )
    }

    /// The reply to record for recipients this session did not try.
    pub fn reply(&self) -> Reply {
        self.error.to_reply()
    }
}

/// What ended a session early.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SessionError {
    /// The greeting was not 2xx (421 included).
    #[error("greeting refused: {0}")]
    Greeting(Reply),
    /// The server said 421 after the greeting.
    #[error("server closing: {0}")]
    ServiceClosing(Reply),
    /// EHLO got 4xx, or EHLO got 5xx and HELO was refused too (LMTP: LHLO
    /// got 4xx or 5xx).
    #[error("EHLO/HELO/LHLO refused: {0}")]
    HelloRejected(Reply),
    /// TLS is required and the server does not offer STARTTLS.
    #[error("TLS required but STARTTLS not offered")]
    TlsUnavailable,
    /// TLS is required and the server refused STARTTLS.
    #[error("TLS required but STARTTLS refused: {0}")]
    StartTlsRefused(Reply),
    /// The driver reported a failed TLS handshake.
    #[error("TLS handshake failed")]
    TlsHandshake {
        /// The policy was opportunistic: retrying in plaintext is allowed.
        retry_without_tls: bool,
    },
    /// AUTH is configured but the connection is not encrypted.
    #[error("refusing to send credentials without TLS")]
    AuthNeedsTls,
    /// AUTH is configured but the server does not offer the mechanism.
    #[error("server does not offer AUTH {0}")]
    AuthUnavailable(&'static str),
    /// The server refused our credentials (or the exchange).
    #[error("authentication failed: {0}")]
    AuthFailed(Reply),
    /// The server broke the protocol.
    #[error(transparent)]
    Protocol(#[from] ProtocolError),
    /// The driver reported a lost connection.
    #[error("connection lost")]
    ConnectionLost,
    /// The driver reported a timeout.
    #[error("timed out waiting for {0}")]
    Timeout(TimeoutClass),
}

impl SessionError {
    /// A 5xx greeting or a 5xx HELO refusal; everything else is worth a
    /// retry later (or elsewhere).
    pub fn is_permanent(&self) -> bool {
        match self {
            SessionError::Greeting(r) | SessionError::HelloRejected(r) => r.is_permanent(),
            _ => false,
        }
    }

    /// The server's reply behind the failure, or a synthetic one.
    pub fn to_reply(&self) -> Reply {
        let synthetic = |status: (u8, u16, u16), text: String| {
            Reply::new(421, EnhancedStatus::new(status.0, status.1, status.2), text)
        };
        match self {
            SessionError::Greeting(r)
            | SessionError::ServiceClosing(r)
            | SessionError::HelloRejected(r)
            | SessionError::StartTlsRefused(r)
            | SessionError::AuthFailed(r) => r.clone(),
            SessionError::TlsUnavailable => synthetic(
                (4, 7, 4),
                "TLS is required but the server does not offer STARTTLS".into(),
            ),
            SessionError::TlsHandshake { .. } => {
                synthetic((4, 7, 0), "TLS handshake with the server failed".into())
            }
            SessionError::AuthNeedsTls => {
                synthetic((4, 7, 10), "Credentials are never sent without TLS".into())
            }
            SessionError::AuthUnavailable(m) => {
                synthetic((4, 7, 0), format!("The server does not offer AUTH {m}"))
            }
            SessionError::Protocol(e) => {
                synthetic((4, 5, 0), format!("Protocol error from the server: {e}"))
            }
            SessionError::ConnectionLost => {
                synthetic((4, 4, 2), "Connection to the server lost".into())
            }
            SessionError::Timeout(c) => synthetic((4, 4, 2), format!("Timed out waiting for {c}")),
        }
    }

    /// The error came with a reply from the server.
    fn is_from_server(&self) -> bool {
        matches!(
            self,
            SessionError::Greeting(_)
                | SessionError::ServiceClosing(_)
                | SessionError::HelloRejected(_)
                | SessionError::StartTlsRefused(_)
                | SessionError::AuthFailed(_)
        )
    }
}

/// How the server broke the protocol.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProtocolError {
    /// Its bytes are not a reply (or exceed the limits).
    #[error("bad reply: {0}")]
    Reply(#[from] ReplyError),
    /// A reply code that makes no sense for the command (a 354 to MAIL,
    /// a 2xx to DATA, …).
    #[error("unexpected reply to {command}: {reply}")]
    Unexpected {
        /// The command answered.
        command: &'static str,
        /// The reply.
        reply: Reply,
    },
    /// A reply when none was due (idle, or more replies than commands).
    #[error("unsolicited reply: {0}")]
    Unsolicited(Reply),
    /// A reply while the message was being written.
    #[error("reply during message data: {0}")]
    DuringData(Reply),
}

/// A call the session cannot honour in its current state (a driver bug,
/// never the server's doing).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// Not idle: wait for [`Event::Ready`].
    #[error("the session is not ready for a transaction")]
    NotReady,
    /// A transaction needs at least one recipient.
    #[error("a transaction needs at least one recipient")]
    NoRecipients,
    /// The call does not match what the session waits for (for example
    /// `data_sent` without [`Event::NeedData`]).
    #[error("the session is not waiting for this call")]
    WrongState,
    /// The session is closed.
    #[error("the session is closed")]
    Closed,
}

// ------------------------------------------------------------ Session

/// A reply the transaction waits for, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    Mail,
    Rcpt(usize),
    Data,
    /// The end of data of a real message.
    EndOfData,
    /// LMTP: the reply for the recipient at this index after the end of
    /// data (RFC 2033 4.2).
    LmtpRcpt(usize),
    /// The `.` sent after an unwanted 354: the reply is ignored.
    EmptyEndOfData,
}

/// Where one recipient stands.
#[derive(Debug, Clone)]
enum RcptState {
    /// No final RCPT answer yet.
    Waiting,
    /// RCPT 2xx; waits for the message's reply.
    Accepted,
    /// Final.
    Done(RcptResult, bool),
}

/// A transaction in flight.
#[derive(Debug)]
struct Txn {
    rcpt_lines: Vec<Vec<u8>>,
    rcpts: Vec<RcptState>,
    expect: VecDeque<Expect>,
    pipelined: bool,
    mail_ok: bool,
    /// NeedData was emitted; `data_sent` not yet called.
    streaming: bool,
    message_reply: Option<Reply>,
    dsn: bool,
    /// LMTP: one reply per accepted recipient after the end of data.
    lmtp: bool,
}

impl Txn {
    fn any_accepted(&self) -> bool {
        self.rcpts.iter().any(|r| matches!(r, RcptState::Accepted))
    }

    /// Every recipient not yet final gets `result(reply)`.
    fn settle_open(&mut self, reply: &Reply, from_server: bool) {
        for r in &mut self.rcpts {
            if !matches!(r, RcptState::Done(..)) {
                *r = RcptState::Done(classify(reply), from_server);
            }
        }
    }

    /// Accepted recipients get `result(reply)`.
    fn settle_accepted(&mut self, reply: &Reply) {
        for r in &mut self.rcpts {
            if matches!(r, RcptState::Accepted) {
                *r = RcptState::Done(classify(reply), true);
            }
        }
    }

    fn result(self) -> TransactionResult {
        let rcpts = self
            .rcpts
            .into_iter()
            .enumerate()
            .map(|(index, state)| {
                let (result, from_server) = match state {
                    RcptState::Done(result, from_server) => (result, from_server),
                    // Not reachable through the state machine; a safe
                    // answer rather than a panic.
                    RcptState::Waiting | RcptState::Accepted => (
                        RcptResult::Deferred(Reply::new(
                            451,
                            EnhancedStatus::new(4, 5, 0),
                            "No final reply from the server",
                        )),
                        false,
                    ),
                };
                RcptOutcome {
                    index,
                    result,
                    from_server,
                }
            })
            .collect();
        TransactionResult {
            rcpts,
            message_reply: self.message_reply,
            dsn_passed_on: self.dsn,
        }
    }
}

/// 2xx delivered, 4xx deferred, 5xx failed (anything else deferred).
fn classify(reply: &Reply) -> RcptResult {
    match reply.code / 100 {
        2 => RcptResult::Delivered(reply.clone()),
        5 => RcptResult::Failed(reply.clone()),
        _ => RcptResult::Deferred(reply.clone()),
    }
}

/// Where an AUTH exchange stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AuthStage {
    /// `AUTH PLAIN <initial response>` sent.
    Plain,
    /// `AUTH LOGIN` sent; the next 334 asks for the user name.
    LoginUser,
    /// User name sent; the next 334 asks for the password.
    LoginPassword,
    /// Password sent; waiting for 235.
    LoginDone,
}

/// What the session waits for.
#[derive(Debug)]
enum State {
    Greeting,
    /// EHLO (true) or HELO (false) sent.
    Hello(bool),
    StartTls,
    /// The driver runs the handshake; input is discarded.
    TlsHandshake,
    Auth(AuthStage),
    Ready,
    Txn(Box<Txn>),
    /// RSET after an unfinished transaction.
    Rset,
    Quit,
    Closed,
}

/// The client side of one SMTP connection, without I/O.
///
/// Call order (the driver's contract):
/// 1. Connect, then [`new`](Self::new) (or
///    [`with_implicit_tls`](Self::with_implicit_tls) after an implicit
///    TLS handshake, port 465).
/// 2. Loop: [`poll_event`](Self::poll_event) until it returns `None`,
///    acting on each event in order:
///    * [`Event::Send`]: write the bytes;
///    * [`Event::StartTls`]: run the handshake, throwing away anything read
///      before it completes, then call
///      [`tls_established`](Self::tls_established) or
///      [`tls_failed`](Self::tls_failed);
///    * [`Event::Ready`]: call [`start_transaction`](Self::start_transaction)
///      for the next message to this destination, or [`quit`](Self::quit);
///    * [`Event::NeedData`]: write the message through a [`DataEncoder`]
///      (its `finish` bytes last), then call [`data_sent`](Self::data_sent);
///    * [`Event::TransactionDone`]: record the per-recipient results
///      (durably, before anything else);
///    * [`Event::Closed`]: close the connection; nothing follows.
/// 3. When `poll_event` returns `None` and the session is not closed, read
///    from the server with the timer [`timeout_class`](Self::timeout_class)
///    names (none: idle, the driver's own idle limit applies) and pass the
///    bytes to [`handle_input`](Self::handle_input); on EOF or a read/write
///    error call [`connection_lost`](Self::connection_lost), when the timer
///    fires [`on_timeout`](Self::on_timeout). Then poll again.
///
/// Every recipient of a started transaction gets exactly one result, in
/// one [`Event::TransactionDone`], whatever happens to the connection.
/// Misplaced calls return [`ClientError`] and change nothing.
#[derive(Debug)]
pub struct ClientSession {
    config: Arc<ClientConfig>,
    parser: ReplyParser,
    events: VecDeque<Event>,
    state: State,
    tls: bool,
    starttls_refused: bool,
    authenticated: bool,
    any_transaction: bool,
    greeting: Option<Reply>,
    extensions: Extensions,
    extended: bool,
}

const QUIT: &[u8] = b"QUIT\r\n";
const RSET: &[u8] = b"RSET\r\n";

impl ClientSession {
    /// A session on a fresh plaintext connection; it waits for the
    /// greeting.
    pub fn new(config: Arc<ClientConfig>) -> Result<ClientSession, ConfigError> {
        config.validate()?;
        Ok(ClientSession {
            parser: ReplyParser::new(config.reply_limits),
            config,
            events: VecDeque::new(),
            state: State::Greeting,
            tls: false,
            starttls_refused: false,
            authenticated: false,
            any_transaction: false,
            greeting: None,
            extensions: Extensions::default(),
            extended: false,
        })
    }

    /// A session on a connection that is already TLS (RFC 8314 implicit
    /// TLS): STARTTLS is never used.
    pub fn with_implicit_tls(config: Arc<ClientConfig>) -> Result<ClientSession, ConfigError> {
        let mut s = ClientSession::new(config)?;
        s.tls = true;
        Ok(s)
    }

    /// Feeds bytes read from the server. Bytes read while the TLS
    /// handshake is pending, or after the session closed, are discarded.
    pub fn handle_input(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            if matches!(self.state, State::TlsHandshake | State::Closed) {
                return;
            }
            match self.parser.parse(&mut bytes) {
                Ok(Some(reply)) => self.on_reply(reply),
                Ok(None) => return,
                Err(e) => {
                    self.fail(SessionError::Protocol(ProtocolError::Reply(e)), false);
                    return;
                }
            }
        }
    }

    /// The next event, if any.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// The TLS handshake after [`Event::StartTls`] succeeded: EHLO is
    /// sent again and the old extensions are forgotten.
    pub fn tls_established(&mut self) -> Result<(), ClientError> {
        match self.state {
            State::TlsHandshake => {
                self.parser.reset();
                self.tls = true;
                self.extensions = Extensions::default();
                self.send_hello(true);
                Ok(())
            }
            State::Closed => Err(ClientError::Closed),
            _ => Err(ClientError::WrongState),
        }
    }

    /// The TLS handshake after [`Event::StartTls`] failed: the session
    /// closes (the connection is unusable).
    pub fn tls_failed(&mut self) -> Result<(), ClientError> {
        match self.state {
            State::TlsHandshake => {
                let retry = self.config.starttls == StartTlsPolicy::Opportunistic;
                self.fail(
                    SessionError::TlsHandshake {
                        retry_without_tls: retry,
                    },
                    false,
                );
                Ok(())
            }
            State::Closed => Err(ClientError::Closed),
            _ => Err(ClientError::WrongState),
        }
    }

    /// Starts a transaction (after [`Event::Ready`]). A message the server
    /// cannot take (SIZE, SMTPUTF8, BINARYMIME) gets its
    /// [`Event::TransactionDone`] at once, without sending anything.
    pub fn start_transaction(&mut self, txn: Transaction) -> Result<(), ClientError> {
        match self.state {
            State::Ready => {}
            State::Closed => return Err(ClientError::Closed),
            _ => return Err(ClientError::NotReady),
        }
        if txn.rcpts.is_empty() {
            return Err(ClientError::NoRecipients);
        }
        let utf8_addresses =
            !txn.from.is_ascii() || txn.rcpts.iter().any(|r| !r.address.is_ascii());
        // LMTP is final delivery: UTF-8 in the header alone goes to a
        // server without SMTPUTF8 as it is (see the module docs).
        let utf8_header = txn.params.smtputf8
            && (self.config.protocol == Protocol::Smtp || self.extensions.smtputf8);
        let needs_utf8 = utf8_addresses || utf8_header;
        if let Some(reply) = self.precheck(&txn, needs_utf8) {
            let rcpts = (0..txn.rcpts.len())
                .map(|index| RcptOutcome {
                    index,
                    result: RcptResult::Failed(reply.clone()),
                    from_server: false,
                })
                .collect();
            self.events
                .push_back(Event::TransactionDone(TransactionResult {
                    rcpts,
                    message_reply: None,
                    dsn_passed_on: self.extensions.dsn,
                }));
            self.events.push_back(Event::Ready);
            return Ok(());
        }
        let mail = self.mail_command(&txn, needs_utf8);
        let rcpt_lines: Vec<Vec<u8>> = txn.rcpts.iter().map(|r| self.rcpt_command(r)).collect();
        let lmtp = self.config.protocol == Protocol::Lmtp;
        let pipelined = self.config.pipelining && (self.extensions.pipelining || lmtp);
        let mut t = Txn {
            rcpts: vec![RcptState::Waiting; rcpt_lines.len()],
            rcpt_lines,
            expect: VecDeque::new(),
            pipelined,
            mail_ok: false,
            streaming: false,
            message_reply: None,
            dsn: self.extensions.dsn,
            lmtp,
        };
        let mut out = mail;
        t.expect.push_back(Expect::Mail);
        if pipelined {
            // RFC 2920: MAIL, every RCPT and DATA in one write.
            for (i, line) in t.rcpt_lines.iter().enumerate() {
                out.extend_from_slice(line);
                t.expect.push_back(Expect::Rcpt(i));
            }
            out.extend_from_slice(b"DATA\r\n");
            t.expect.push_back(Expect::Data);
        }
        self.any_transaction = true;
        self.send(out);
        self.state = State::Txn(Box::new(t));
        Ok(())
    }

    /// The message (ending with [`DataEncoder::finish`]'s bytes) has been
    /// written after [`Event::NeedData`].
    pub fn data_sent(&mut self) -> Result<(), ClientError> {
        match &mut self.state {
            State::Txn(t) if t.streaming => {
                t.streaming = false;
                if t.lmtp {
                    // RFC 2033 4.2: one reply per accepted RCPT, in order.
                    let accepted: Vec<usize> = (0..t.rcpts.len())
                        .filter(|&i| matches!(t.rcpts[i], RcptState::Accepted))
                        .collect();
                    t.expect.extend(accepted.into_iter().map(Expect::LmtpRcpt));
                } else {
                    t.expect.push_back(Expect::EndOfData);
                }
                Ok(())
            }
            State::Closed => Err(ClientError::Closed),
            _ => Err(ClientError::WrongState),
        }
    }

    /// Ends the session politely (after [`Event::Ready`]): QUIT, then
    /// [`Event::Closed`] with [`Outcome::Quit`] once the server answers
    /// or the connection closes.
    pub fn quit(&mut self) -> Result<(), ClientError> {
        match self.state {
            State::Ready => {
                self.send(QUIT.to_vec());
                self.state = State::Quit;
                Ok(())
            }
            State::Closed => Err(ClientError::Closed),
            _ => Err(ClientError::NotReady),
        }
    }

    /// The connection broke (EOF, reset, write error). Unfinished
    /// recipients are deferred with a synthetic `421 4.4.2`.
    pub fn connection_lost(&mut self) {
        match self.state {
            State::Closed => {}
            State::Quit => self.close(Outcome::Quit),
            _ => self.fail(SessionError::ConnectionLost, false),
        }
    }

    /// The timer named by [`timeout_class`](Self::timeout_class) fired.
    /// Unfinished recipients are deferred with a synthetic `421 4.4.2`.
    pub fn on_timeout(&mut self) {
        match self.timeout_class() {
            None => {}
            Some(_) if matches!(self.state, State::Quit) => self.close(Outcome::Quit),
            Some(class) => self.fail(SessionError::Timeout(class), false),
        }
    }

    /// The RFC 5321 4.5.3.2 timer that applies now; `None` while idle
    /// (after [`Event::Ready`]) or closed.
    pub fn timeout_class(&self) -> Option<TimeoutClass> {
        match &self.state {
            State::Greeting => Some(TimeoutClass::Greeting),
            State::Hello(_) | State::StartTls | State::Auth(_) | State::Rset | State::Quit => {
                Some(TimeoutClass::Command)
            }
            State::TlsHandshake => Some(TimeoutClass::TlsHandshake),
            State::Ready | State::Closed => None,
            State::Txn(t) => Some(match t.expect.front() {
                _ if t.streaming => TimeoutClass::DataBlock,
                Some(Expect::Mail) => TimeoutClass::Mail,
                Some(Expect::Rcpt(_)) => TimeoutClass::Rcpt,
                Some(Expect::Data) => TimeoutClass::DataInit,
                Some(Expect::EndOfData | Expect::LmtpRcpt(_) | Expect::EmptyEndOfData) | None => {
                    TimeoutClass::DataTermination
                }
            }),
        }
    }

    /// The server's extensions (from the latest EHLO; empty after HELO).
    pub fn extensions(&self) -> &Extensions {
        &self.extensions
    }

    /// The server's greeting, once received.
    pub fn greeting(&self) -> Option<&Reply> {
        self.greeting.as_ref()
    }

    /// The connection is encrypted.
    pub fn is_tls(&self) -> bool {
        self.tls
    }

    /// AUTH succeeded.
    pub fn is_authenticated(&self) -> bool {
        self.authenticated
    }

    /// The server answered EHLO or LHLO (true) or only HELO (false).
    pub fn is_extended(&self) -> bool {
        self.extended
    }

    /// The session is over ([`Event::Closed`] was queued).
    pub fn is_closed(&self) -> bool {
        matches!(self.state, State::Closed)
    }

    // -------------------------------------------------------- internals

    fn send(&mut self, bytes: Vec<u8>) {
        self.events.push_back(Event::Send(Outgoing::new(bytes)));
    }

    fn close(&mut self, outcome: Outcome) {
        self.state = State::Closed;
        self.events.push_back(Event::Closed(outcome));
    }

    /// Ends the session with `error`: unfinished recipients are deferred
    /// and reported, QUIT is sent when `quit` (the server is sane, we just
    /// cannot go on), then Closed.
    fn fail(&mut self, error: SessionError, quit: bool) {
        if let State::Txn(mut t) = mem::replace(&mut self.state, State::Closed) {
            let reply = error.to_reply();
            t.settle_open(&reply, error.is_from_server());
            self.events.push_back(Event::TransactionDone(t.result()));
        }
        if quit {
            self.send(QUIT.to_vec());
        }
        self.close(Outcome::Failed(SessionFailure {
            error,
            before_any_transaction: !self.any_transaction,
        }));
    }

    fn protocol(&mut self, e: ProtocolError) {
        self.fail(SessionError::Protocol(e), false);
    }

    fn unexpected(&mut self, command: &'static str, reply: Reply) {
        self.protocol(ProtocolError::Unexpected { command, reply });
    }

    fn ready(&mut self) {
        self.state = State::Ready;
        self.events.push_back(Event::Ready);
    }

    fn send_hello(&mut self, extended: bool) {
        let verb = match (self.config.protocol, extended) {
            (Protocol::Lmtp, _) => "LHLO",
            (Protocol::Smtp, true) => "EHLO",
            (Protocol::Smtp, false) => "HELO",
        };
        self.send(format!("{verb} {}\r\n", self.config.helo_name).into_bytes());
        self.state = State::Hello(extended);
    }

    fn on_reply(&mut self, reply: Reply) {
        if reply.code == 421 {
            match self.state {
                State::Quit => self.close(Outcome::Quit),
                State::Greeting => self.fail(SessionError::Greeting(reply), false),
                _ => self.fail(SessionError::ServiceClosing(reply), false),
            }
            return;
        }
        let class = reply.code / 100;
        match mem::replace(&mut self.state, State::Closed) {
            State::Greeting => match class {
                2 => {
                    self.greeting = Some(reply);
                    self.send_hello(true);
                }
                4 | 5 => self.fail(SessionError::Greeting(reply), false),
                _ => self.unexpected("the greeting", reply),
            },
            State::Hello(true) => match class {
                2 => {
                    self.extensions = Extensions::from_ehlo(&reply);
                    self.extended = true;
                    self.after_hello();
                }
                5 if self.config.protocol == Protocol::Smtp => self.send_hello(false),
                4 | 5 => self.fail(SessionError::HelloRejected(reply), false),
                _ if self.config.protocol == Protocol::Lmtp => self.unexpected("LHLO", reply),
                _ => self.unexpected("EHLO", reply),
            },
            State::Hello(false) => match class {
                2 => {
                    self.extensions = Extensions::default();
                    self.extended = false;
                    self.after_hello();
                }
                4 | 5 => self.fail(SessionError::HelloRejected(reply), false),
                _ => self.unexpected("HELO", reply),
            },
            State::StartTls => match class {
                2 => {
                    // Whatever follows the 220 in this read, and anything
                    // read until the handshake completes, is discarded:
                    // handle_input stops parsing in TlsHandshake, and
                    // tls_established starts a fresh parser.
                    self.state = State::TlsHandshake;
                    self.events.push_back(Event::StartTls);
                }
                4 | 5 if self.config.starttls == StartTlsPolicy::Required => {
                    self.fail(SessionError::StartTlsRefused(reply), true);
                }
                4 | 5 => {
                    self.starttls_refused = true;
                    self.after_hello();
                }
                _ => self.unexpected("STARTTLS", reply),
            },
            State::Auth(stage) => self.auth_reply(stage, reply),
            State::Txn(t) => self.txn_reply(t, reply),
            State::Rset => match class {
                2 => self.ready(),
                _ => self.unexpected("RSET", reply),
            },
            State::Quit => self.close(Outcome::Quit),
            State::Ready => self.protocol(ProtocolError::Unsolicited(reply)),
            // handle_input never parses in these states.
            State::TlsHandshake => self.state = State::TlsHandshake,
            State::Closed => {}
        }
    }

    /// After a successful EHLO/HELO (or a refused opportunistic
    /// STARTTLS): STARTTLS, AUTH, or ready.
    fn after_hello(&mut self) {
        let policy = self.config.starttls;
        if !self.tls && policy != StartTlsPolicy::Disabled && !self.starttls_refused {
            if self.extensions.starttls {
                self.send(b"STARTTLS\r\n".to_vec());
                self.state = State::StartTls;
                return;
            }
            if policy == StartTlsPolicy::Required {
                self.fail(SessionError::TlsUnavailable, true);
                return;
            }
        }
        if let Some(auth) = self.config.auth.clone()
            && !self.authenticated
        {
            if !self.tls && !self.config.allow_insecure_auth {
                self.fail(SessionError::AuthNeedsTls, true);
                return;
            }
            if !self.extensions.offers_auth(auth.mechanism) {
                self.fail(SessionError::AuthUnavailable(auth.mechanism.as_str()), true);
                return;
            }
            match auth.mechanism {
                AuthMechanism::Plain => {
                    let mut creds = Zeroizing::new(Vec::new());
                    creds.push(0);
                    creds.extend_from_slice(auth.username.as_bytes());
                    creds.push(0);
                    creds.extend_from_slice(auth.password.as_bytes());
                    let mut line = Zeroizing::new(b"AUTH PLAIN ".to_vec());
                    append_base64(&mut line, &creds);
                    self.events.push_back(Event::Send(Outgoing::secret(line)));
                    self.state = State::Auth(AuthStage::Plain);
                }
                AuthMechanism::Login => {
                    self.send(b"AUTH LOGIN\r\n".to_vec());
                    self.state = State::Auth(AuthStage::LoginUser);
                }
            }
            return;
        }
        self.ready();
    }

    fn auth_reply(&mut self, stage: AuthStage, reply: Reply) {
        let class = reply.code / 100;
        let Some(auth) = self.config.auth.clone() else {
            // Not reachable: Auth states exist only with credentials.
            self.unexpected("AUTH", reply);
            return;
        };
        match (stage, class) {
            (AuthStage::Plain | AuthStage::LoginDone, 2) => {
                self.authenticated = true;
                self.ready();
            }
            (AuthStage::LoginUser, 3) if reply.code == 334 => {
                let mut line = Zeroizing::new(Vec::new());
                append_base64(&mut line, auth.username.as_bytes());
                self.events.push_back(Event::Send(Outgoing::secret(line)));
                self.state = State::Auth(AuthStage::LoginPassword);
            }
            (AuthStage::LoginPassword, 3) if reply.code == 334 => {
                let mut line = Zeroizing::new(Vec::new());
                append_base64(&mut line, auth.password.as_bytes());
                self.events.push_back(Event::Send(Outgoing::secret(line)));
                self.state = State::Auth(AuthStage::LoginDone);
            }
            (_, 4 | 5) => self.fail(SessionError::AuthFailed(reply), true),
            _ => self.unexpected("AUTH", reply),
        }
    }

    fn txn_reply(&mut self, mut t: Box<Txn>, reply: Reply) {
        let class = reply.code / 100;
        let Some(expect) = t.expect.pop_front() else {
            // Only while streaming is nothing expected inside a transaction.
            let e = if t.streaming {
                if matches!(class, 4 | 5) {
                    // The server's answer to the message, early.
                    t.settle_accepted(&reply);
                    t.message_reply = Some(reply.clone());
                }
                ProtocolError::DuringData(reply)
            } else {
                ProtocolError::Unsolicited(reply)
            };
            self.state = State::Txn(t);
            self.protocol(e);
            return;
        };
        match expect {
            Expect::Mail => match class {
                2 => {
                    t.mail_ok = true;
                    if !t.pipelined {
                        let line = t.rcpt_lines[0].clone();
                        t.expect.push_back(Expect::Rcpt(0));
                        self.send(line);
                    }
                }
                4 | 5 => {
                    t.settle_open(&reply, true);
                    if !t.pipelined {
                        // No transaction is open at the server.
                        self.finish(*t, false);
                        return;
                    }
                }
                _ => {
                    self.state = State::Txn(t);
                    self.unexpected("MAIL", reply);
                    return;
                }
            },
            Expect::Rcpt(i) => {
                if t.mail_ok {
                    match class {
                        2 => t.rcpts[i] = RcptState::Accepted,
                        4 | 5 => t.rcpts[i] = RcptState::Done(classify(&reply), true),
                        _ => {
                            self.state = State::Txn(t);
                            self.unexpected("RCPT", reply);
                            return;
                        }
                    }
                }
                // After a refused MAIL (pipelined), RCPT replies (503)
                // change nothing.
                if !t.pipelined {
                    if i + 1 < t.rcpt_lines.len() {
                        let line = t.rcpt_lines[i + 1].clone();
                        t.expect.push_back(Expect::Rcpt(i + 1));
                        self.send(line);
                    } else if t.any_accepted() {
                        t.expect.push_back(Expect::Data);
                        self.send(b"DATA\r\n".to_vec());
                    } else {
                        self.finish(*t, true);
                        return;
                    }
                }
            }
            Expect::Data => match class {
                3 if reply.code == 354 => {
                    if t.mail_ok && t.any_accepted() {
                        t.streaming = true;
                        self.events.push_back(Event::NeedData);
                    } else if t.lmtp {
                        // RFC 2033 4.2 requires 503 here; how many replies
                        // an empty message would get is undefined.
                        self.state = State::Txn(t);
                        self.unexpected("DATA", reply);
                        return;
                    } else {
                        // RFC 2920 3.1: a server that accepts DATA with no
                        // valid recipient gets an empty message.
                        t.expect.push_back(Expect::EmptyEndOfData);
                        self.send(b".\r\n".to_vec());
                    }
                }
                4 | 5 => {
                    t.settle_accepted(&reply);
                    let open = t.mail_ok;
                    self.finish(*t, open);
                    return;
                }
                _ => {
                    self.state = State::Txn(t);
                    self.unexpected("DATA", reply);
                    return;
                }
            },
            Expect::EndOfData => match class {
                2 | 4 | 5 => {
                    t.settle_accepted(&reply);
                    t.message_reply = Some(reply);
                }
                _ => {
                    self.state = State::Txn(t);
                    self.unexpected("the end of data", reply);
                    return;
                }
            },
            Expect::LmtpRcpt(i) => match class {
                2 | 4 | 5 => {
                    if let Some(r) = t.rcpts.get_mut(i) {
                        *r = RcptState::Done(classify(&reply), true);
                    }
                    t.message_reply = Some(reply);
                }
                _ => {
                    self.state = State::Txn(t);
                    self.unexpected("the end of data", reply);
                    return;
                }
            },
            Expect::EmptyEndOfData => {}
        }
        if t.expect.is_empty() && !t.streaming {
            self.finish(*t, false);
        } else {
            self.state = State::Txn(t);
        }
    }

    /// Reports the transaction; RSET first when the server may still hold
    /// it open.
    fn finish(&mut self, t: Txn, rset: bool) {
        self.events.push_back(Event::TransactionDone(t.result()));
        if rset {
            self.send(RSET.to_vec());
            self.state = State::Rset;
        } else {
            self.ready();
        }
    }

    /// A reply that fails the whole message before MAIL is sent.
    fn precheck(&self, txn: &Transaction, needs_utf8: bool) -> Option<Reply> {
        let ext = &self.extensions;
        if txn.params.body == BodyType::BinaryMime {
            return Some(Reply::new(
                554,
                EnhancedStatus::new(5, 6, 3),
                "BINARYMIME message cannot be relayed without CHUNKING support",
            ));
        }
        if let (Some(max), Some(size)) = (ext.size, txn.params.size)
            && max > 0
            && size > max
        {
            return Some(Reply::new(
                552,
                EnhancedStatus::new(5, 3, 4),
                format!("Message size {size} exceeds the remote server's limit of {max} octets"),
            ));
        }
        if needs_utf8 && !ext.smtputf8 {
            return Some(Reply::new(
                553,
                EnhancedStatus::new(5, 6, 7),
                "Message needs SMTPUTF8 and the remote server does not support it",
            ));
        }
        None
    }

    fn mail_command(&self, txn: &Transaction, needs_utf8: bool) -> Vec<u8> {
        let ext = &self.extensions;
        let p = &txn.params;
        let mut s = format!("MAIL FROM:{}", txn.from);
        if let (Some(_), Some(size)) = (ext.size, p.size) {
            s.push_str(&format!(" SIZE={size}"));
        }
        if p.body == BodyType::EightBitMime && ext.eight_bit_mime {
            s.push_str(" BODY=8BITMIME");
        }
        if needs_utf8 {
            s.push_str(" SMTPUTF8");
        }
        if ext.dsn {
            if let Some(ret) = p.ret {
                s.push_str(&format!(" RET={ret}"));
            }
            if let Some(envid) = &p.envid {
                s.push_str(&format!(" ENVID={}", encode_xtext(envid.as_bytes())));
            }
        }
        s.push_str("\r\n");
        s.into_bytes()
    }

    fn rcpt_command(&self, r: &Recipient) -> Vec<u8> {
        let mut s = format!("RCPT TO:{}", r.address);
        if self.extensions.dsn {
            if let Some(notify) = r.notify {
                s.push_str(&format!(" NOTIFY={notify}"));
            }
            if let Some(orcpt) = &r.orcpt
                && let Some(value) = encode_orcpt(orcpt)
            {
                s.push_str(&format!(" ORCPT={value}"));
            }
        }
        s.push_str("\r\n");
        s.into_bytes()
    }
}

/// Appends base64 of `data` and CRLF.
fn append_base64(line: &mut Zeroizing<Vec<u8>>, data: &[u8]) {
    let mut text = Zeroizing::new(String::new());
    STANDARD.encode_string(data, &mut text);
    line.extend_from_slice(text.as_bytes());
    line.extend_from_slice(b"\r\n");
}

/// `addr-type ";" xtext` (RFC 3461 4.2), or RFC 6533's `utf-8` form for
/// a non-ASCII address. `None` when the type is not an atom.
fn encode_orcpt(orcpt: &Orcpt) -> Option<String> {
    let ty = &orcpt.addr_type;
    if ty.is_empty() || ty.len() > 64 || !ty.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
    {
        return None;
    }
    if orcpt.address.is_ascii() && !ty.eq_ignore_ascii_case("utf-8") {
        return Some(format!("{ty};{}", encode_xtext(orcpt.address.as_bytes())));
    }
    // RFC 6533 utf-8-addr-xtext: printable ASCII but "+", "=", "\" as is,
    // everything else as \x{HEX}.
    let mut out = String::from("utf-8;");
    for c in orcpt.address.chars() {
        if matches!(c, '!'..='~') && !matches!(c, '+' | '=' | '\\') {
            out.push(c);
        } else {
            out.push_str(&format!("\\x{{{:X}}}", u32::from(c)));
        }
    }
    Some(out)
}

// ------------------------------------------------------------ DATA

/// Turns message bytes into DATA content: every bare CR and bare LF
/// becomes CRLF, then a `.` at the start of a line is doubled (RFC 5321
/// 4.5.2); [`finish`](Self::finish) ends the content with `CRLF . CRLF`
/// (adding the CRLF when the message does not end with one).
///
/// The only `CRLF . CRLF` in the output is the one `finish` writes, so no
/// server can find an earlier end of data, whatever the queued message
/// holds (`\n.\n`, `\r.\r`, `\r\n.\r\n`…). The output does not depend on
/// how the message is split across [`encode`](Self::encode) calls.
///
/// ```
/// use tern_smtp::client::DataEncoder;
/// let mut enc = DataEncoder::new();
/// let mut out = Vec::new();
/// enc.encode(b"Subject: x\n\n.hidden\r.\rend", &mut out);
/// enc.finish(&mut out);
/// assert_eq!(out, b"Subject: x\r\n\r\n..hidden\r\n..\r\nend\r\n.\r\n");
/// ```
#[derive(Debug, Clone)]
pub struct DataEncoder {
    line_start: bool,
    pending_cr: bool,
}

impl Default for DataEncoder {
    fn default() -> Self {
        DataEncoder::new()
    }
}

impl DataEncoder {
    /// An encoder at the start of the message (right after the DATA
    /// command's CRLF).
    pub fn new() -> DataEncoder {
        DataEncoder {
            line_start: true,
            pending_cr: false,
        }
    }

    /// Appends the encoding of `input` to `out`. A CR at the end of
    /// `input` is held back until the next byte shows whether it is
    /// part of a CRLF.
    pub fn encode(&mut self, input: &[u8], out: &mut Vec<u8>) {
        out.reserve(input.len() + input.len() / 16 + 4);
        let mut i = 0;
        while i < input.len() {
            if !self.pending_cr && !self.line_start {
                // Copy a run of ordinary bytes in one go.
                let run = input[i..]
                    .iter()
                    .position(|&b| b == b'\r' || b == b'\n')
                    .unwrap_or(input.len() - i);
                if run > 0 {
                    out.extend_from_slice(&input[i..i + run]);
                    i += run;
                    continue;
                }
            }
            self.byte(input[i], out);
            i += 1;
        }
    }

    fn byte(&mut self, b: u8, out: &mut Vec<u8>) {
        if self.pending_cr {
            self.pending_cr = false;
            // CRLF, or a bare CR that becomes one.
            out.extend_from_slice(b"\r\n");
            self.line_start = true;
            if b == b'\n' {
                return;
            }
        }
        match b {
            b'\r' => self.pending_cr = true,
            b'\n' => {
                out.extend_from_slice(b"\r\n");
                self.line_start = true;
            }
            b'.' if self.line_start => {
                out.extend_from_slice(b"..");
                self.line_start = false;
            }
            _ => {
                out.push(b);
                self.line_start = false;
            }
        }
    }

    /// Appends the end of the content: a pending CR as CRLF, a CRLF when
    /// the last line is unterminated, then `.` CRLF.
    pub fn finish(self, out: &mut Vec<u8>) {
        if self.pending_cr || !self.line_start {
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b".\r\n");
    }

    /// The whole DATA content for `message` in one call.
    pub fn encode_all(message: &[u8]) -> Vec<u8> {
        let mut enc = DataEncoder::new();
        let mut out = Vec::with_capacity(message.len() + 8);
        enc.encode(message, &mut out);
        enc.finish(&mut out);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_all(bytes: &[u8]) -> Vec<Result<Reply, ReplyError>> {
        let mut p = ReplyParser::new(ReplyLimits::default());
        let mut input = bytes;
        let mut out = Vec::new();
        while !input.is_empty() {
            match p.parse(&mut input) {
                Ok(Some(r)) => out.push(Ok(r)),
                Ok(None) => break,
                Err(e) => {
                    out.push(Err(e));
                    break;
                }
            }
        }
        out
    }

    /// Input, then the expected code, status and lines.
    type ReplyCase = (
        &'static [u8],
        u16,
        Option<EnhancedStatus>,
        Vec<&'static str>,
    );

    #[test]
    fn reply_lines() {
        let s = |c, a, b| Some(EnhancedStatus::new(c, a, b));
        let cases: Vec<ReplyCase> = vec![
            (b"250 OK\r\n", 250, None, vec!["OK"]),
            (b"250\r\n", 250, None, vec![""]),
            (
                b"250 2.1.0 Sender OK\r\n",
                250,
                s(2, 1, 0),
                vec!["Sender OK"],
            ),
            (b"250 2.1.0\r\n", 250, s(2, 1, 0), vec![""]),
            // Class mismatch: kept as text.
            (b"550 4.1.1 odd\r\n", 550, None, vec!["4.1.1 odd"]),
            (b"550 5.1.1x no\r\n", 550, None, vec!["5.1.1x no"]),
            (
                b"550-5.1.1 a\r\n550-5.1.1 b\r\n550 5.1.1 c\r\n",
                550,
                s(5, 1, 1),
                vec!["a", "b", "c"],
            ),
            (b"220 bare lf\n", 220, None, vec!["bare lf"]),
            (b"220 a\rb\r\n", 220, None, vec!["a b"]),
            (b"220 a\0b\x1b\r\n", 220, None, vec!["a b "]),
            (
                b"550 caf\xc3\xa9 \xff\r\n",
                550,
                None,
                vec!["caf\u{e9} \u{fffd}"],
            ),
            (b"250-\r\n250 x\r\n", 250, None, vec!["", "x"]),
        ];
        for (input, code, status, lines) in cases {
            let got = parse_all(input);
            assert_eq!(got.len(), 1, "{}", input.escape_ascii());
            let r = got[0].clone().unwrap();
            assert_eq!(
                (r.code, r.status),
                (code, status),
                "{}",
                input.escape_ascii()
            );
            assert_eq!(r.lines, lines, "{}", input.escape_ascii());
        }
    }

    #[test]
    fn malformed_replies() {
        let cases: Vec<(&[u8], ReplyError)> = vec![
            (b"25\r\n", ReplyError::Malformed),
            (b"\r\n", ReplyError::Malformed),
            (b"150 x\r\n", ReplyError::Malformed),
            (b"600 x\r\n", ReplyError::Malformed),
            (b"260 x\r\n", ReplyError::Malformed),
            (b"25a x\r\n", ReplyError::Malformed),
            (b"250x\r\n", ReplyError::Malformed),
            (b"\xff\xfe\xfd\r\n", ReplyError::Malformed),
            (
                b"250-a\r\n251 b\r\n",
                ReplyError::InconsistentCode {
                    first: 250,
                    then: 251,
                },
            ),
        ];
        for (input, want) in cases {
            assert_eq!(
                parse_all(input),
                vec![Err(want)],
                "{}",
                input.escape_ascii()
            );
        }
    }

    #[test]
    fn limits_are_exact() {
        let limits = ReplyLimits {
            max_line: 512,
            max_lines: 3,
        };
        // 512 octets with CRLF: accepted; 513: refused.
        for (len, ok) in [(512usize, true), (513, false)] {
            let mut line = b"250 ".to_vec();
            line.resize(len - 2, b'x');
            line.extend_from_slice(b"\r\n");
            let mut p = ReplyParser::new(limits);
            let mut input = &line[..];
            let r = p.parse(&mut input);
            assert_eq!(r.is_ok(), ok, "{len}");
        }
        let mut p = ReplyParser::new(limits);
        let mut input: &[u8] = b"250-a\r\n250-b\r\n250 c\r\n";
        assert!(p.parse(&mut input).unwrap().is_some());
        let mut input: &[u8] = b"250-a\r\n250-b\r\n250-c\r\n250 d\r\n";
        assert_eq!(
            p.parse(&mut input),
            Err(ReplyError::TooManyLines { limit: 3 })
        );
    }

    #[test]
    fn extensions() {
        let r = Reply::without_status(
            250,
            [
                "mx.example",
                "pipelining",
                "SIZE 1000",
                "8BITMIME",
                "SMTPUTF8",
                "DSN",
                "STARTTLS",
                "AUTH plain LOGIN CRAM-MD5",
                "AUTH=LOGIN XOAUTH2",
                "CHUNKING",
                "ENHANCEDSTATUSCODES",
                "X-UNKNOWN 1",
                "",
            ],
        );
        let e = Extensions::from_ehlo(&r);
        assert!(e.pipelining && e.eight_bit_mime && e.smtputf8 && e.dsn);
        assert!(e.starttls && e.chunking && e.enhanced_status_codes);
        assert_eq!(e.size, Some(1000));
        assert_eq!(e.auth, ["PLAIN", "LOGIN", "CRAM-MD5", "XOAUTH2"]);
        assert!(e.offers_auth(AuthMechanism::Plain));
        for (line, want) in [("SIZE", Some(0)), ("SIZE 0", Some(0)), ("SIZE x", Some(0))] {
            let e = Extensions::from_ehlo(&Reply::without_status(250, ["mx", line]));
            assert_eq!(e.size, want, "{line}");
        }
        // The first line is the server's name, never a keyword.
        let e = Extensions::from_ehlo(&Reply::without_status(250, ["PIPELINING"]));
        assert_eq!(e, Extensions::default());
    }

    #[test]
    fn orcpt_encoding() {
        let o = |t: &str, a: &str| Orcpt {
            addr_type: t.into(),
            address: a.into(),
        };
        assert_eq!(
            encode_orcpt(&o("rfc822", "a+b=c@x.test")).unwrap(),
            "rfc822;a+2Bb+3Dc@x.test"
        );
        assert_eq!(
            encode_orcpt(&o("rfc822", "j\u{f6}rg@x.test")).unwrap(),
            "utf-8;j\\x{F6}rg@x.test"
        );
        assert_eq!(encode_orcpt(&o("bad type", "a@b")), None);
        assert_eq!(encode_orcpt(&o("", "a@b")), None);
    }

    #[test]
    fn config_validation() {
        assert!(ClientConfig::new("mx.example.org").validate().is_ok());
        assert!(ClientConfig::new("[192.0.2.1]").validate().is_ok());
        for bad in ["", "a b", "mx\r\nRSET", "[nope]", "caf\u{e9}.test"] {
            assert_eq!(
                ClientConfig::new(bad).validate(),
                Err(ConfigError::InvalidHeloName),
                "{bad:?}"
            );
        }
        let mut c = ClientConfig::new("mx.example.org");
        c.auth = Some(ClientAuth::new(AuthMechanism::Plain, "u", "p\0w"));
        assert_eq!(c.validate(), Err(ConfigError::InvalidCredentials));
        c.auth = None;
        c.reply_limits.max_line = 100;
        assert_eq!(c.validate(), Err(ConfigError::InvalidLimits));
    }

    #[test]
    fn secrets_never_in_debug() {
        let a = ClientAuth::new(AuthMechanism::Login, "user", "hunter2");
        assert!(!format!("{a:?}").contains("hunter2"));
        let o = Outgoing::secret(Zeroizing::new(b"AUTH PLAIN aHVudGVyMg==\r\n".to_vec()));
        let d = format!("{:?}", Event::Send(o));
        assert!(!d.contains("aHVudGVy") && d.contains("redacted"), "{d}");
    }
}
