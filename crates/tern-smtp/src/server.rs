//! The SMTP server session: a sans-IO state machine (RFC 5321, with
//! PIPELINING, SIZE, 8BITMIME, SMTPUTF8, ENHANCEDSTATUSCODES, CHUNKING,
//! BINARYMIME, DSN, STARTTLS and AUTH).
//!
//! [`ServerSession`] takes the client's bytes, yields [`Event`]s (some of
//! them questions the runtime answers: may this sender, this recipient, is
//! the message committed?) and produces the reply bytes. It never touches a
//! socket, a clock or a file: the runtime feeds it bytes and time-outs.
//!
//! What it must never do: execute bytes the client sent as message content
//! (or before a TLS handshake) as commands; take anything but
//! `CRLF . CRLF` as the end of DATA; buffer without bound.
//!
//! Decisions (see the issue report):
//! * Bytes pipelined after `DATA` before its 354: when the DATA is accepted
//!   they are message content (RFC 5321 3.3: everything after the 354 up to
//!   the end of data is content; the client was only early). When the DATA
//!   is refused (503 or the runtime's refusal) they were meant as content
//!   and must never run as commands: the refusal is followed by
//!   `421 4.5.0` and the session closes.
//! * Commands pipelined after the end of data are processed, in order,
//!   after the DataEnd answer, as a new transaction (RFC 2920).
//! * A command line ending in a bare LF is answered `500 5.5.2` (the line
//!   is consumed); a command line longer than `max_command_line` gets one
//!   `500 5.5.2` and the rest of it is drained.
//! * A text line longer than `max_text_line` voids the message and is
//!   answered `500 5.5.2` at the end of data (RFC 5321 4.5.3.1.6).
//! * BDAT content gets the bare CR/LF rule (and the text line limit) unless
//!   `BODY=BINARYMIME`; a BDAT line whose size cannot be read loses the
//!   framing: its 501 is followed by `421 4.5.0` and the session closes.
//! * The greeting, the EHLO/HELO lines and the 354 carry no enhanced
//!   status code (RFC 2034; RFC 3463 has no class 3); every other reply
//!   does, including the early-talker `554 5.5.0`.
//! * `protocol()` appends `S` under TLS to whatever the base is, so a HELO
//!   client over TLS is `SMTPS` (not an IANA-registered value, but honest).
//! * The error counter (`max_errors`) counts the session's own protocol
//!   errors (syntax, sequence, bad bytes, long lines, refused bare line
//!   endings, unavailable commands, failed AUTH exchanges, MAIL refused
//!   with 530 for want of AUTH) and recipients the runtime refuses with a
//!   5xx (unknown users, relay denied: harvesting costs errors), not other
//!   policy answers from the runtime, 452 recipient limits or 552 size
//!   refusals.
//!
//! AUTH (RFC 4954) decisions:
//! * AUTH needs EHLO: before it (or after HELO only, which advertises no
//!   extension) AUTH gets `503 5.5.1`.
//! * Mechanisms are advertised, and usable, only under TLS unless
//!   `auth_plaintext_allowed`; a plaintext attempt with a configured
//!   mechanism gets `538 5.7.11`. An unknown or unconfigured one gets
//!   `504 5.5.4`, whatever the TLS state.
//! * After a successful AUTH, EHLO no longer advertises AUTH (a new AUTH
//!   would get 503, RFC 4954 4) and neither EHLO/HELO nor RSET forgets the
//!   authentication: RFC 5321 4.1.4 defines EHLO as a reset of the
//!   transaction state, and RFC 4954 gives no way to drop an
//!   authentication. STARTTLS after AUTH is refused (503), so TLS
//!   never starts under an identity proven in plaintext; the handshake
//!   clears it anyway.
//! * A response line to a 334 may hold 12288 octets of base64 (RFC 4954
//!   4), CRLF not counted. A longer one gets `500 5.5.6` and is drained;
//!   a response ending in a bare LF, or not base64, fails the exchange
//!   with `501 5.5.2`; `*` cancels it (`501 5.0.0`); an empty line and
//!   `=` are both an empty response.
//! * Every exchange that started (the runtime answered
//!   [`Event::AuthStart`] with [`ServerSession::auth_begin`]) and did not
//!   succeed is reported with [`Event::AuthFailed`] and counts as a
//!   protocol error; refusals before it starts (503, 504, 538, bad base64
//!   in the initial response) count as protocol errors only.
//! * Input after an AUTH line is read in order: the next line is the
//!   response to the 334, whatever it looks like.

use std::collections::VecDeque;
use std::fmt;
use std::mem;
use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, STANDARD_PAD_INDIFFERENT};
use tern_sasl::{Answer, FailureKind, Mechanism, Password, ServerAuth, StartContext, Step, Token};
use tern_types::dsn::BodyType;
use tern_types::{EnhancedStatus, ForwardPath, ReversePath};
use zeroize::Zeroizing;

use crate::command::{Command, CommandError, MailParams, RcptParams, parse_command};
use crate::data::{BdatChunk, BdatText, DataDecoder, bdat_total};
use crate::reply::Reply;

/// What the session does with a bare CR or LF in message content.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BareLineEndings {
    /// Refuse the message (550 5.6.0) after reading it to its real end.
    Reject,
    /// Replace each bare CR or LF with CRLF (never a line end for the end
    /// of data or dot-unstuffing).
    Normalize,
}

/// What the session does with a client that talks before the greeting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EarlyTalkerPolicy {
    /// `greet()` answers 554 5.5.0 and closes.
    Reject,
    /// The early bytes are kept and processed after the greeting.
    Allow,
}

/// Which RFC 5321 4.5.3.2 timer applies to the session now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeoutClass {
    /// Waiting for a command (5 minutes by default in the runtime).
    Command,
    /// Receiving message content (3 minutes per read by default).
    Data,
}

/// Why an open message was voided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum AbortReason {
    /// Larger than `max_message_size` (552 5.3.4).
    TooBig,
    /// A bare CR or LF with [`BareLineEndings::Reject`] (550 5.6.0).
    BareLineEnding,
    /// More `Received:` fields than `max_received_headers` (554 5.4.6).
    TooManyReceived,
    /// A text line longer than `max_text_line` (500 5.5.2).
    LineTooLong,
    /// RSET, EHLO/HELO or STARTTLS in the middle of a BDAT message.
    Reset,
    /// The runtime reported a timeout.
    Timeout,
    /// The server is shutting down.
    Shutdown,
    /// The client broke the protocol (QUIT inside a BDAT message, error
    /// limit reached).
    Protocol,
}

/// The session's configuration; shared between sessions with an `Arc`.
#[derive(Clone)]
pub struct ServerConfig {
    /// Our name, in the greeting, the EHLO reply and `Received:`.
    pub hostname: String,
    /// Text after `220 <hostname> `.
    pub greeting: String,
    /// Largest message accepted (advertised as SIZE).
    pub max_message_size: u64,
    /// Recipients per transaction; more get 452 4.5.3.
    pub max_recipients: usize,
    /// Longest command line, CRLF included.
    pub max_command_line: usize,
    /// Longest message text line, CRLF included.
    pub max_text_line: usize,
    /// Protocol errors before `421 4.7.0` and close.
    pub max_errors: u32,
    /// `Received:` fields allowed in a message before 554 5.4.6.
    pub max_received_headers: usize,
    /// Bare CR/LF in content: refuse or normalise.
    pub bare_line_endings: BareLineEndings,
    /// Ask the runtime about VRFY (otherwise 252 2.5.0).
    pub vrfy_enabled: bool,
    /// Ask the runtime about EXPN (otherwise 502 5.5.1).
    pub expn_enabled: bool,
    /// Clients that talk before the greeting.
    pub early_talkers: EarlyTalkerPolicy,
    /// STARTTLS may be offered (the runtime has a certificate).
    pub starttls_available: bool,
    /// The session starts encrypted (implicit TLS listener).
    pub tls_active: bool,
    /// Largest [`Event::DataChunk`] (at least 3 bytes are used).
    pub data_chunk_size: usize,
    /// SASL mechanisms offered with AUTH (RFC 4954), in advertising order.
    /// Empty: AUTH is not offered and gets `502 5.5.1`.
    pub auth_mechanisms: Vec<Mechanism>,
    /// The listener is trusted loopback: AUTH is offered and usable
    /// without TLS. Otherwise only once TLS is active (`538 5.7.11`
    /// before).
    pub auth_plaintext_allowed: bool,
    /// Submission roles: MAIL before a successful AUTH gets
    /// `530 5.7.0 Authentication required`.
    pub auth_required: bool,
    /// The stable server secret (32 random bytes or more) from which fake
    /// CRAM-MD5 and SCRAM credentials of unknown users are derived (see
    /// [`StartContext::server_secret`]). Redacted in `Debug`.
    pub auth_secret: Vec<u8>,
}

impl fmt::Debug for ServerConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerConfig")
            .field("hostname", &self.hostname)
            .field("greeting", &self.greeting)
            .field("max_message_size", &self.max_message_size)
            .field("max_recipients", &self.max_recipients)
            .field("max_command_line", &self.max_command_line)
            .field("max_text_line", &self.max_text_line)
            .field("max_errors", &self.max_errors)
            .field("max_received_headers", &self.max_received_headers)
            .field("bare_line_endings", &self.bare_line_endings)
            .field("vrfy_enabled", &self.vrfy_enabled)
            .field("expn_enabled", &self.expn_enabled)
            .field("early_talkers", &self.early_talkers)
            .field("starttls_available", &self.starttls_available)
            .field("tls_active", &self.tls_active)
            .field("data_chunk_size", &self.data_chunk_size)
            .field("auth_mechanisms", &self.auth_mechanisms)
            .field("auth_plaintext_allowed", &self.auth_plaintext_allowed)
            .field("auth_required", &self.auth_required)
            .field("auth_secret", &"***")
            .finish()
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            hostname: "localhost".to_owned(),
            greeting: "ESMTP Tern".to_owned(),
            max_message_size: 52_428_800,
            max_recipients: 100,
            max_command_line: 512,
            max_text_line: 1000,
            max_errors: 20,
            max_received_headers: 100,
            bare_line_endings: BareLineEndings::Reject,
            vrfy_enabled: false,
            expn_enabled: false,
            early_talkers: EarlyTalkerPolicy::Reject,
            starttls_available: false,
            tls_active: false,
            data_chunk_size: 65_536,
            auth_mechanisms: Vec::new(),
            auth_plaintext_allowed: false,
            auth_required: false,
            auth_secret: Vec::new(),
        }
    }
}

/// What the session reports to the runtime. Variants marked QUESTION must
/// be answered with exactly one of [`ServerSession::accept`],
/// [`ServerSession::accept_message`], [`ServerSession::reply`],
/// [`ServerSession::auth_begin`] (for [`Event::AuthStart`]) or
/// [`ServerSession::auth_answer`] (for [`Event::Auth`]) before the next
/// [`ServerSession::poll_event`].
///
/// `Debug` never shows a password or token (they are
/// [`tern_sasl::Password`] and [`tern_sasl::Token`], which redact
/// themselves).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// EHLO/HELO was accepted and answered (informational).
    Hello {
        /// The client's name as sent.
        name: String,
        /// EHLO (true) or HELO (false).
        extended: bool,
    },
    /// QUESTION: may this sender start a transaction? `accept()` →
    /// "250 2.1.0 Sender <..> OK".
    MailFrom {
        /// The reverse path.
        from: ReversePath,
        /// The ESMTP parameters (SIZE already checked).
        params: MailParams,
    },
    /// QUESTION: accept this recipient? `accept()` → "250 2.1.5 Recipient
    /// <..> OK". Syntax and the recipient limit are already enforced.
    RcptTo {
        /// The forward path.
        to: ForwardPath,
        /// The ESMTP parameters.
        params: RcptParams,
    },
    /// QUESTION: a message starts (DATA after ≥1 accepted RCPT, or the
    /// first BDAT chunk). `accept()` → 354 for DATA, nothing yet for BDAT;
    /// `reply(4xx/5xx)` refuses (a refused BDAT chunk is swallowed).
    DataStart {
        /// BDAT (true) or DATA (false).
        bdat: bool,
    },
    /// Message bytes in order, at most `data_chunk_size` each. No answer.
    DataChunk(Vec<u8>),
    /// QUESTION: the message is complete. Commit it, then
    /// `accept_message(id)` or `reply(451/452/554…)`.
    DataEnd,
    /// The open message is void; discard it. No answer: the session sends
    /// the error itself (after draining when it must).
    DataAborted {
        /// Why.
        reason: AbortReason,
    },
    /// Transaction state was cleared (RSET, EHLO/HELO again, after the end
    /// of a message, STARTTLS). Informational.
    Reset,
    /// QUESTION (only with `vrfy_enabled` / `expn_enabled`): answer with
    /// `reply()` (`accept()` sends 252 2.5.0).
    Verify {
        /// The argument as sent.
        argument: String,
        /// EXPN (true) or VRFY (false).
        expand: bool,
    },
    /// "220 2.0.0 Ready to start TLS" is queued and every input byte after
    /// the STARTTLS line was dropped: flush, discard unread input, run the
    /// handshake, then call `tls_established()` (or close).
    StartTls,
    /// QUIT was answered with 221: flush and close.
    Quit,
    /// QUESTION: the client asked to authenticate with this (offered)
    /// mechanism; the session state and TLS rules are already checked.
    /// Answer [`ServerSession::auth_begin`] with fresh random bytes (at
    /// least [`tern_sasl::MIN_NONCE_LEN`]) and the time, or
    /// `reply(4xx/5xx)` to refuse (for example `454 4.7.0` for a client
    /// blocked after too many failures). `accept()` is `auth_begin` with
    /// no nonce: enough for PLAIN, LOGIN and the bearer mechanisms,
    /// CRAM-MD5 and SCRAM-SHA-256 then fail with 454.
    AuthStart {
        /// The mechanism requested.
        mechanism: Mechanism,
    },
    /// QUESTION: the SASL exchange needs the user directory or the token
    /// validator. Answer [`ServerSession::auth_answer`] with the matching
    /// [`tern_sasl::Answer`] (`Answer::Fail(FailureKind::Temporary)` when
    /// the directory is unavailable). `accept()` (or a positive `reply`)
    /// counts as `Answer::Fail(Temporary)`: it never authenticates;
    /// `reply(4xx/5xx)` ends the exchange with that reply.
    Auth(AuthQuestion),
    /// QUESTION: the client proved its identity. `accept()` →
    /// `235 2.7.0 Authentication successful` and the session is
    /// authenticated; `reply(r)`: a positive `r` is sent and the session
    /// authenticated, a negative one (for example
    /// `535 5.7.8` when `authzid` is not allowed) refuses.
    Authenticated {
        /// The mechanism used.
        mechanism: Mechanism,
        /// Who proved their identity.
        authcid: String,
        /// The identity they ask to act as, when different; refuse it
        /// unless the policy lets `authcid` act as it.
        authzid: Option<String>,
    },
    /// An AUTH exchange that had started ended without success; the
    /// session has sent its reply (535 5.7.8, 501 5.0.0, 501 5.5.2,
    /// 454 4.7.0, 500 5.5.6 or the runtime's refusal). Informational, for
    /// failure counting: the same for an unknown user as for a wrong
    /// password.
    AuthFailed {
        /// The mechanism used.
        mechanism: Mechanism,
        /// The user name of the exchange's last directory question
        /// ([`AuthQuestion`]; for the bearer mechanisms the unproven user
        /// hint); `None` when it ended before one (LOGIN's user name is
        /// known only with the password).
        authcid: Option<String>,
        /// How it failed.
        kind: FailureKind,
    },
}

/// What an AUTH exchange asks of the user directory or token validator
/// ([`Event::Auth`]); answer with [`ServerSession::auth_answer`].
/// `Debug` redacts the password and the token.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum AuthQuestion {
    /// PLAIN, LOGIN: does this password match? Answer
    /// [`Answer::PasswordOk`] (`false` for an unknown user, after checking
    /// a dummy hash so the time is the same).
    VerifyPassword {
        /// The user name.
        authcid: String,
        /// The identity to act as, when different from `authcid`.
        authzid: Option<String>,
        /// The password.
        password: Password,
    },
    /// CRAM-MD5: the user's stored secret? Answer [`Answer::Cram`].
    LookupCram {
        /// The user name.
        authcid: String,
    },
    /// SCRAM-SHA-256: the user's stored credentials? Answer
    /// [`Answer::Scram`].
    LookupScram {
        /// The user name.
        authcid: String,
        /// The identity to act as, when different from `authcid`.
        authzid: Option<String>,
    },
    /// OAUTHBEARER, XOAUTH2: whom does this token authenticate? Answer
    /// [`Answer::Token`].
    VerifyToken {
        /// The bearer token.
        token: Token,
        /// The user the client claims to be (not proven).
        user_hint: Option<String>,
    },
}

/// The client, once it has said EHLO or HELO.
#[derive(Debug, Clone)]
struct Hello {
    name: String,
    extended: bool,
}

/// An open BDAT message between (or during) chunks.
#[derive(Debug)]
struct BdatMessage {
    declared: u64,
    text: BdatText,
}

/// A mail transaction: MAIL accepted.
#[derive(Debug)]
struct Transaction {
    params: MailParams,
    rcpts: usize,
    /// A BDAT message whose DataStart was accepted and that awaits more
    /// chunks.
    bdat: Option<BdatMessage>,
}

/// Decoded SASL bytes from the client (may hold a password): zeroed on
/// drop, redacted in `Debug`.
struct SaslBytes(Zeroizing<Vec<u8>>);

impl fmt::Debug for SaslBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SaslBytes({} octets, ***)", self.0.len())
    }
}

/// A running AUTH exchange.
#[derive(Debug)]
struct AuthRx {
    /// The SASL machine (its `Debug` is redacted).
    auth: ServerAuth,
    mechanism: Mechanism,
    /// The user name, once the client has given one.
    authcid: Option<String>,
}

/// The identity established by a successful AUTH.
#[derive(Debug, Clone)]
struct AuthIdentity {
    authcid: String,
    authzid: Option<String>,
}

/// A question the runtime has been asked and not yet answered.
#[derive(Debug)]
enum Question {
    Mail {
        from: ReversePath,
        params: MailParams,
    },
    Rcpt {
        to: ForwardPath,
    },
    /// DATA; `pipelined`: bytes followed the DATA line.
    DataStart {
        pipelined: bool,
    },
    BdatStart {
        size: u64,
        last: bool,
    },
    DataEnd,
    Verify,
    /// AUTH accepted by the session; waiting for `auth_begin`.
    AuthStart {
        mechanism: Mechanism,
        initial: Option<SaslBytes>,
    },
    /// The exchange waits for `auth_answer`.
    Auth(Box<AuthRx>),
    /// The exchange succeeded; the runtime confirms (authzid policy).
    Authenticated {
        mechanism: Mechanism,
        identity: AuthIdentity,
    },
}

/// Receiving DATA content.
#[derive(Debug)]
struct DataRx {
    decoder: DataDecoder,
    failure: Option<AbortReason>,
}

/// Where the octets of a BDAT chunk go.
#[derive(Debug)]
enum BdatSink {
    /// Into the open message.
    Message(BdatMessage),
    /// Nowhere; at the end of the chunk send `reply`, and end the
    /// transaction if `end_txn`. `error` counts it as a protocol error.
    Swallow {
        reply: Reply,
        end_txn: bool,
        error: bool,
    },
}

/// Receiving one BDAT chunk.
#[derive(Debug)]
struct BdatRx {
    chunk: BdatChunk,
    size: u64,
    last: bool,
    sink: BdatSink,
}

/// What the session is reading (or waiting for) now.
#[derive(Debug)]
enum Mode {
    /// `greet()` not yet called.
    PreGreeting,
    /// Reading command lines.
    Commands,
    /// Draining the rest of an over-long command line.
    DrainLine,
    /// Waiting for the runtime's answer.
    Question(Question),
    /// Reading DATA content.
    Data(DataRx),
    /// Reading a BDAT chunk.
    Bdat(BdatRx),
    /// Reading the client's response line to a 334 challenge.
    AuthResponse(Box<AuthRx>),
    /// STARTTLS answered; input discarded until `tls_established()`.
    TlsPending,
    /// Closed: output to flush, no more input.
    Closed,
}

/// The server side of one SMTP connection, without I/O.
///
/// Call order (the runtime's contract):
/// 1. [`new`](Self::new), optionally [`handle_input`](Self::handle_input)
///    with bytes that arrived before the greeting (early talkers), then
///    [`greet`](Self::greet).
/// 2. Loop: [`poll_event`](Self::poll_event) until it returns `None`;
///    answer every QUESTION event (see [`Event`]) with exactly one of
///    [`accept`](Self::accept), [`accept_message`](Self::accept_message),
///    [`reply`](Self::reply), [`auth_begin`](Self::auth_begin) or
///    [`auth_answer`](Self::auth_answer) before polling again.
/// 3. When `poll_event` returns `None`: write [`take_output`](Self::take_output)
///    to the peer (replies are batched while pipelined input is buffered,
///    RFC 2920), then if [`is_closed`](Self::is_closed) close the
///    connection, else read more bytes and call `handle_input`.
///
/// Time-outs and shutdown come from the runtime: [`on_timeout`](Self::on_timeout)
/// (which timer: [`timeout_class`](Self::timeout_class)) and
/// [`shutdown`](Self::shutdown). After [`Event::StartTls`] and a
/// successful handshake, call [`tls_established`](Self::tls_established).
///
/// Memory is bounded: the session holds the unread input plus at most one
/// command line (or one AUTH response line, [`MAX_AUTH_LINE`]), drains
/// over-long lines without buffering them and hands message content out in
/// chunks of at most `data_chunk_size` bytes.
/// An answer without a pending question is ignored, as is an `auth_begin`
/// or `auth_answer` for a question of another kind; polling with a
/// question unanswered returns `None`.
///
/// `Debug` shows the sizes of the input and output buffers, never their
/// bytes (they can hold AUTH payloads).
pub struct ServerSession {
    config: Arc<ServerConfig>,
    input: Vec<u8>,
    pos: usize,
    output: Vec<u8>,
    events: VecDeque<Event>,
    mode: Mode,
    early_talker: bool,
    tls: bool,
    hello: Option<Hello>,
    txn: Option<Transaction>,
    errors: u32,
    auth: Option<AuthIdentity>,
}

/// Longest AUTH response line, CRLF included: 12288 octets of base64
/// (RFC 4954 4) plus CRLF.
pub const MAX_AUTH_LINE: usize = 12288 + 2;

impl fmt::Debug for ServerSession {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerSession")
            .field("config", &self.config)
            .field("buffered", &self.buffered())
            .field("output_len", &self.output.len())
            .field("events", &self.events)
            .field("mode", &self.mode)
            .field("early_talker", &self.early_talker)
            .field("tls", &self.tls)
            .field("hello", &self.hello)
            .field("txn", &self.txn)
            .field("errors", &self.errors)
            .field("auth", &self.auth)
            .finish()
    }
}

fn reply(code: u16, status: (u8, u16, u16), text: impl Into<String>) -> Reply {
    Reply::new(
        code,
        EnhancedStatus::new(status.0, status.1, status.2),
        text,
    )
}

fn sequence_error(text: &str) -> Reply {
    reply(503, (5, 5, 1), format!("Error: {text}"))
}

/// Is this (unparseable) line a BDAT command? Its chunk cannot be framed.
fn is_bdat_line(line: &[u8]) -> bool {
    line.len() >= 4
        && line[..4].eq_ignore_ascii_case(b"BDAT")
        && line.get(4).is_none_or(|&b| b == b' ')
}

impl ServerSession {
    /// A new session; call [`greet`](Self::greet) to start it.
    pub fn new(config: Arc<ServerConfig>) -> ServerSession {
        let tls = config.tls_active;
        ServerSession {
            config,
            input: Vec::new(),
            pos: 0,
            output: Vec::new(),
            events: VecDeque::new(),
            mode: Mode::PreGreeting,
            early_talker: false,
            tls,
            hello: None,
            txn: None,
            errors: 0,
            auth: None,
        }
    }

    /// Queues the 220 greeting — or, for a client that talked first when
    /// the policy is [`EarlyTalkerPolicy::Reject`], 554 5.5.0 and close.
    /// Only the first call does anything.
    pub fn greet(&mut self) {
        if !matches!(self.mode, Mode::PreGreeting) {
            return;
        }
        if self.early_talker && self.config.early_talkers == EarlyTalkerPolicy::Reject {
            let text = format!(
                "{} Error: protocol synchronization (client talked before the greeting)",
                self.config.hostname
            );
            self.send(reply(554, (5, 5, 0), text));
            self.close();
            return;
        }
        let line = format!("{} {}", self.config.hostname, self.config.greeting);
        self.send(Reply::without_status(220, [line]));
        self.mode = Mode::Commands;
    }

    /// Bytes from the client. Ignored once closed or while a STARTTLS
    /// handshake is pending.
    pub fn handle_input(&mut self, bytes: &[u8]) {
        match self.mode {
            Mode::Closed | Mode::TlsPending => return,
            Mode::PreGreeting => {
                if !bytes.is_empty() {
                    self.early_talker = true;
                }
                if self.config.early_talkers == EarlyTalkerPolicy::Reject {
                    return;
                }
            }
            _ => {}
        }
        if self.pos > 0 {
            self.input.drain(..self.pos);
            self.pos = 0;
        }
        self.input.extend_from_slice(bytes);
    }

    /// The next event, or `None` when the session needs more input (or an
    /// answer, or is closed): then flush [`take_output`](Self::take_output).
    pub fn poll_event(&mut self) -> Option<Event> {
        loop {
            if let Some(ev) = self.events.pop_front() {
                return Some(ev);
            }
            if !self.step() {
                return None;
            }
        }
    }

    /// Answers the pending question with its standard positive reply.
    pub fn accept(&mut self) {
        self.answer(None, None);
    }

    /// Answers [`Event::DataEnd`] with `250 2.0.0 Ok: queued as <id>`
    /// (any other pending question: like [`accept`](Self::accept)).
    pub fn accept_message(&mut self, queue_id: &str) {
        self.answer(None, Some(queue_id));
    }

    /// Answers the pending question with `reply`: a positive reply (2xx or
    /// 3xx) accepts, any other refuses. For a BDAT DataStart a positive
    /// reply is not sent (nothing is due before the chunk is read).
    pub fn reply(&mut self, reply: Reply) {
        self.answer(Some(reply), None);
    }

    /// Answers [`Event::AuthStart`]: starts the SASL exchange with `nonce`
    /// (fresh bytes from a CSPRNG, at least [`tern_sasl::MIN_NONCE_LEN`];
    /// never reused) and the current time in seconds since the Unix epoch
    /// (for the CRAM-MD5 challenge). Ignored unless an `AuthStart` is
    /// pending.
    pub fn auth_begin(&mut self, nonce: &[u8], now_unix: u64) {
        match mem::replace(&mut self.mode, Mode::Commands) {
            Mode::Question(Question::AuthStart { mechanism, initial }) => {
                self.start_auth(mechanism, initial, nonce, now_unix);
            }
            other => self.mode = other,
        }
    }

    /// Answers [`Event::Auth`] with the directory's or validator's answer.
    /// Ignored unless an `Auth` question is pending.
    pub fn auth_answer(&mut self, answer: Answer) {
        match mem::replace(&mut self.mode, Mode::Commands) {
            Mode::Question(Question::Auth(mut rx)) => {
                rx.auth.provide(answer);
                self.drive_auth(rx);
            }
            other => self.mode = other,
        }
    }

    /// Protocol errors counted so far in this session (the runtime's
    /// tarpit grows its delay with this number).
    pub fn error_count(&self) -> u32 {
        self.errors
    }

    /// The user name proven by a successful AUTH (the SASL authentication
    /// identity), if any.
    pub fn authenticated(&self) -> Option<&str> {
        self.auth.as_ref().map(|a| a.authcid.as_str())
    }

    /// The identity the authenticated client acts as: the authorization
    /// identity it asked for (and the runtime accepted), else the one it
    /// proved. `None` before AUTH.
    pub fn authorization_id(&self) -> Option<&str> {
        self.auth
            .as_ref()
            .map(|a| a.authzid.as_deref().unwrap_or(&a.authcid))
    }

    /// Input bytes held by the session and not yet processed (for limits
    /// and metrics: stays below one read plus one command line, or one
    /// read plus [`MAX_AUTH_LINE`] during an AUTH exchange, when the call
    /// order is followed).
    pub fn buffered(&self) -> usize {
        self.input.len() - self.pos
    }

    /// The reply bytes queued so far.
    pub fn take_output(&mut self) -> Vec<u8> {
        mem::take(&mut self.output)
    }

    /// The runtime should flush the output and close the connection.
    pub fn is_closed(&self) -> bool {
        matches!(self.mode, Mode::Closed)
    }

    /// Which timer applies now.
    pub fn timeout_class(&self) -> TimeoutClass {
        match self.mode {
            Mode::Data(_) | Mode::Bdat(_) => TimeoutClass::Data,
            // Waiting for a command, or for an AUTH response line.
            _ => TimeoutClass::Command,
        }
    }

    /// The timer expired: voids an open message, queues
    /// `421 4.4.2 <host> Error: timeout exceeded` and closes.
    pub fn on_timeout(&mut self) {
        let text = format!("{} Error: timeout exceeded", self.config.hostname);
        self.close_with(AbortReason::Timeout, reply(421, (4, 4, 2), text));
    }

    /// The server stops: voids an open message, queues
    /// `421 4.3.2 <host> Service shutting down` and closes.
    pub fn shutdown(&mut self) {
        let text = format!("{} Service shutting down", self.config.hostname);
        self.close_with(AbortReason::Shutdown, reply(421, (4, 3, 2), text));
    }

    /// The server is full and a new client took this session's slot (it
    /// had made the least progress): queues `421 4.7.0 <host> Error: too
    /// many connections, try again later` and closes. The runtime only
    /// evicts sessions outside a transaction.
    pub fn evict(&mut self) {
        let text = format!(
            "{} Error: too many connections, try again later",
            self.config.hostname
        );
        self.close_with(AbortReason::Shutdown, reply(421, (4, 7, 0), text));
    }

    /// The STARTTLS handshake succeeded: the session forgets everything
    /// (back to "no EHLO yet", RFC 3207 4.2, and unauthenticated) and is
    /// encrypted from now on.
    pub fn tls_established(&mut self) {
        if matches!(self.mode, Mode::Closed) {
            return;
        }
        self.tls = true;
        self.hello = None;
        self.txn = None;
        self.auth = None;
        self.input.clear();
        self.pos = 0;
        self.mode = Mode::Commands;
    }

    /// The session is encrypted (implicit TLS or after STARTTLS).
    pub fn is_tls(&self) -> bool {
        self.tls
    }

    /// The EHLO/HELO name, once given.
    pub fn helo_name(&self) -> Option<&str> {
        self.hello.as_ref().map(|h| h.name.as_str())
    }

    /// The transmission type for `Received:` (RFC 3848, RFC 6531 3.7.3):
    /// `SMTP` for HELO, `ESMTP` for EHLO, `UTF8SMTP` when the current
    /// transaction used SMTPUTF8, each with `S` appended under TLS and
    /// then `A` once authenticated (`ESMTPA`, `ESMTPSA`, `UTF8SMTPA`,
    /// `UTF8SMTPSA`; AUTH implies ESMTP even if HELO came later).
    pub fn protocol(&self) -> &'static str {
        let utf8 = self.txn.as_ref().is_some_and(|t| t.params.smtputf8);
        let auth = self.auth.is_some();
        let extended = auth || self.hello.as_ref().is_some_and(|h| h.extended);
        match (utf8, extended, self.tls, auth) {
            (true, _, false, false) => "UTF8SMTP",
            (true, _, true, false) => "UTF8SMTPS",
            (true, _, false, true) => "UTF8SMTPA",
            (true, _, true, true) => "UTF8SMTPSA",
            (false, true, false, false) => "ESMTP",
            (false, true, true, false) => "ESMTPS",
            (false, true, false, true) => "ESMTPA",
            (false, true, true, true) => "ESMTPSA",
            (false, false, false, _) => "SMTP",
            (false, false, true, _) => "SMTPS",
        }
    }

    // ---- internals -------------------------------------------------

    fn send(&mut self, r: Reply) {
        r.write_to(&mut self.output);
    }

    /// Sends a reply that is the client's protocol error; closes with
    /// 421 4.7.0 once `max_errors` is reached.
    fn error(&mut self, r: Reply) {
        self.send(r);
        self.count_error();
    }

    fn count_error(&mut self) {
        self.errors = self.errors.saturating_add(1);
        if self.errors >= self.config.max_errors && !self.is_closed() {
            let text = format!("{} Error: too many errors", self.config.hostname);
            self.close_with(AbortReason::Protocol, reply(421, (4, 7, 0), text));
        }
    }

    fn close(&mut self) {
        self.mode = Mode::Closed;
        self.input.clear();
        self.pos = 0;
    }

    /// Voids an open message with `reason`, sends `r`, closes.
    fn close_with(&mut self, reason: AbortReason, r: Reply) {
        if self.is_closed() {
            return;
        }
        if self.message_open() {
            self.events.push_back(Event::DataAborted { reason });
        }
        self.send(r);
        self.close();
    }

    /// A DataStart was emitted and its message is neither complete and
    /// answered nor already aborted.
    fn message_open(&self) -> bool {
        let txn_open = self.txn.as_ref().is_some_and(|t| t.bdat.is_some());
        txn_open
            || match &self.mode {
                Mode::Question(q) => matches!(
                    q,
                    Question::DataStart { .. } | Question::BdatStart { .. } | Question::DataEnd
                ),
                Mode::Data(rx) => rx.failure.is_none(),
                Mode::Bdat(rx) => matches!(rx.sink, BdatSink::Message(_)),
                _ => false,
            }
    }

    /// Clears the transaction: voids an open BDAT message and reports
    /// Reset when there was one.
    fn end_transaction(&mut self, reason: AbortReason) {
        if let Some(txn) = self.txn.take() {
            if txn.bdat.is_some() {
                self.events.push_back(Event::DataAborted { reason });
            }
            self.events.push_back(Event::Reset);
        }
    }

    fn unread(&self) -> &[u8] {
        &self.input[self.pos..]
    }

    /// Does one unit of work; false when nothing can be done now.
    fn step(&mut self) -> bool {
        match mem::replace(&mut self.mode, Mode::Closed) {
            Mode::Commands => {
                self.mode = Mode::Commands;
                self.step_command()
            }
            Mode::DrainLine => {
                let unread = self.unread();
                if unread.is_empty() {
                    self.mode = Mode::DrainLine;
                    return false;
                }
                match unread.iter().position(|&b| b == b'\n') {
                    Some(i) => {
                        self.pos += i + 1;
                        self.mode = Mode::Commands;
                    }
                    None => {
                        self.pos = self.input.len();
                        self.mode = Mode::DrainLine;
                    }
                }
                true
            }
            Mode::Data(rx) => self.step_data(rx),
            Mode::Bdat(rx) => self.step_bdat(rx),
            Mode::AuthResponse(rx) => self.step_auth_response(rx),
            other => {
                // PreGreeting, Question, TlsPending, Closed: wait.
                self.mode = other;
                false
            }
        }
    }

    fn step_command(&mut self) -> bool {
        let max = self.config.max_command_line.max(1);
        let unread = self.unread();
        if unread.is_empty() {
            return false;
        }
        let window = &unread[..unread.len().min(max)];
        match window.iter().position(|&b| b == b'\n') {
            Some(i) => {
                let line = unread[..i].to_vec();
                self.pos += i + 1;
                self.command_line(line);
                true
            }
            None if unread.len() >= max => {
                // Too long: answer once, drain the rest without keeping it.
                match unread.iter().position(|&b| b == b'\n') {
                    Some(i) => self.pos += i + 1,
                    None => {
                        self.pos = self.input.len();
                        self.mode = Mode::DrainLine;
                    }
                }
                self.error(reply(500, (5, 5, 2), "Error: line too long"));
                true
            }
            None => false,
        }
    }

    fn command_line(&mut self, mut line: Vec<u8>) {
        if line.pop_if(|b| *b == b'\r').is_none() {
            // Only CRLF ends a line: a bare LF is refused, not obeyed.
            self.error(CommandError::InvalidBytes("a bare LF").to_reply());
            return;
        }
        let utf8 = self.txn.as_ref().is_some_and(|t| t.params.smtputf8);
        match parse_command(&line, utf8) {
            Ok(cmd) => self.command(cmd),
            Err(e) if is_bdat_line(&line) => {
                // The chunk size is unreadable: we cannot find the end of
                // the chunk, and its octets must never run as commands.
                self.send(e.to_reply());
                let text = format!(
                    "{} Error: BDAT chunk size unreadable, closing connection",
                    self.config.hostname
                );
                self.close_with(AbortReason::Protocol, reply(421, (4, 5, 0), text));
            }
            Err(e) => self.error(e.to_reply()),
        }
    }

    fn ask(&mut self, q: Question, ev: Event) {
        self.mode = Mode::Question(q);
        self.events.push_back(ev);
    }

    fn command(&mut self, cmd: Command) {
        match cmd {
            Command::Ehlo(name) => self.hello(name, true),
            Command::Helo(name) => self.hello(name, false),
            Command::Mail { from, params } => self.mail(from, params),
            Command::Rcpt { to, params } => self.rcpt(to, params),
            Command::Data => self.data(),
            Command::Bdat { size, last } => self.bdat(size, last),
            Command::Rset => {
                let had_transaction = self.txn.is_some();
                self.end_transaction(AbortReason::Reset);
                if !had_transaction {
                    self.events.push_back(Event::Reset);
                }
                self.send(reply(250, (2, 0, 0), "Ok"));
            }
            Command::Noop => self.send(reply(250, (2, 0, 0), "Ok")),
            Command::Quit => {
                if self.txn.as_ref().is_some_and(|t| t.bdat.is_some()) {
                    self.events.push_back(Event::DataAborted {
                        reason: AbortReason::Protocol,
                    });
                }
                let text = format!("{} closing connection", self.config.hostname);
                self.send(reply(221, (2, 0, 0), text));
                self.events.push_back(Event::Quit);
                self.close();
            }
            Command::Help(_) => self.send(reply(
                214,
                (2, 0, 0),
                "Commands: EHLO HELO MAIL RCPT DATA BDAT RSET NOOP QUIT VRFY STARTTLS; see RFC 5321",
            )),
            Command::Vrfy(argument) => self.verify(argument, false),
            Command::Expn(argument) => self.verify(argument, true),
            Command::StartTls => self.starttls(),
            Command::Auth {
                mechanism,
                initial_response,
            } => self.auth_command(&mechanism, initial_response.as_deref()),
        }
    }

    fn hello(&mut self, name: String, extended: bool) {
        self.end_transaction(AbortReason::Reset);
        let host = self.config.hostname.clone();
        let r = if extended {
            let mut lines = vec![
                host,
                "PIPELINING".to_owned(),
                format!("SIZE {}", self.config.max_message_size),
                "8BITMIME".to_owned(),
                "SMTPUTF8".to_owned(),
                "ENHANCEDSTATUSCODES".to_owned(),
                "CHUNKING".to_owned(),
                "BINARYMIME".to_owned(),
                "DSN".to_owned(),
            ];
            if let Some(mechs) = self.advertised_mechanisms() {
                lines.push(format!("AUTH {mechs}"));
            }
            if self.config.starttls_available && !self.tls {
                lines.push("STARTTLS".to_owned());
            }
            Reply::without_status(250, lines)
        } else {
            Reply::without_status(250, [host])
        };
        self.send(r);
        self.hello = Some(Hello {
            name: name.clone(),
            extended,
        });
        self.events.push_back(Event::Hello { name, extended });
    }

    fn mail(&mut self, from: ReversePath, params: MailParams) {
        if self.hello.is_none() {
            return self.error(sequence_error("send EHLO or HELO first"));
        }
        if self.txn.is_some() {
            return self.error(sequence_error("nested MAIL command"));
        }
        if self.config.auth_required && self.auth.is_none() {
            return self.error(reply(530, (5, 7, 0), "Authentication required"));
        }
        if params
            .size
            .is_some_and(|s| s > self.config.max_message_size)
        {
            return self.send(reply(
                552,
                (5, 3, 4),
                "Message size exceeds fixed maximum message size",
            ));
        }
        let ev = Event::MailFrom {
            from: from.clone(),
            params: params.clone(),
        };
        self.ask(Question::Mail { from, params }, ev);
    }

    fn rcpt(&mut self, to: ForwardPath, params: RcptParams) {
        let Some(txn) = &self.txn else {
            return self.error(sequence_error("need MAIL command"));
        };
        if txn.bdat.is_some() {
            return self.error(sequence_error("RCPT inside a BDAT message"));
        }
        if txn.rcpts >= self.config.max_recipients {
            return self.send(reply(452, (4, 5, 3), "Error: too many recipients"));
        }
        let ev = Event::RcptTo {
            to: to.clone(),
            params,
        };
        self.ask(Question::Rcpt { to }, ev);
    }

    fn data(&mut self) {
        let pipelined = !self.unread().is_empty();
        let refusal = match &self.txn {
            _ if self.hello.is_none() => Some("send EHLO or HELO first"),
            None => Some("need MAIL command"),
            Some(t) if t.bdat.is_some() => Some("DATA inside a BDAT message"),
            Some(t) if t.rcpts == 0 => Some("need RCPT command"),
            Some(t) if t.params.body == Some(BodyType::BinaryMime) => {
                Some("BODY=BINARYMIME requires BDAT")
            }
            Some(_) => None,
        };
        match refusal {
            Some(text) => {
                self.error(sequence_error(text));
                self.after_refused_data(pipelined);
            }
            None => self.ask(
                Question::DataStart { pipelined },
                Event::DataStart { bdat: false },
            ),
        }
    }

    /// Bytes pipelined behind a refused DATA were meant as message content;
    /// they must never run as commands, and we cannot tell where they end.
    fn after_refused_data(&mut self, pipelined: bool) {
        if pipelined {
            let text = format!(
                "{} Error: message content pipelined after a refused DATA, closing connection",
                self.config.hostname
            );
            self.close_with(AbortReason::Protocol, reply(421, (4, 5, 0), text));
        }
    }

    fn bdat(&mut self, size: u64, last: bool) {
        let max = self.config.max_message_size;
        let sequence = match &self.txn {
            _ if self.hello.is_none() => Some("send EHLO or HELO first"),
            None => Some("need MAIL command"),
            Some(t) if t.rcpts == 0 => Some("need RCPT command"),
            Some(_) => None,
        };
        let sink = if let Some(text) = sequence {
            // Swallow the declared octets: they are never commands.
            BdatSink::Swallow {
                reply: sequence_error(text),
                end_txn: false,
                error: true,
            }
        } else {
            let open = self.txn.as_mut().and_then(|t| t.bdat.take());
            let declared = open.as_ref().map_or(0, |m| m.declared);
            match (bdat_total(declared, size, max), open) {
                (None, open) => {
                    if open.is_some() {
                        self.events.push_back(Event::DataAborted {
                            reason: AbortReason::TooBig,
                        });
                    }
                    BdatSink::Swallow {
                        reply: failure_reply(AbortReason::TooBig, &self.config),
                        end_txn: true,
                        error: false,
                    }
                }
                (Some(total), Some(mut msg)) => {
                    msg.declared = total;
                    BdatSink::Message(msg)
                }
                (Some(_), None) => {
                    return self.ask(
                        Question::BdatStart { size, last },
                        Event::DataStart { bdat: true },
                    );
                }
            }
        };
        self.mode = Mode::Bdat(BdatRx {
            chunk: BdatChunk::new(size),
            size,
            last,
            sink,
        });
    }

    fn verify(&mut self, argument: String, expand: bool) {
        let enabled = if expand {
            self.config.expn_enabled
        } else {
            self.config.vrfy_enabled
        };
        if enabled {
            self.ask(Question::Verify, Event::Verify { argument, expand });
        } else if expand {
            self.error(reply(502, (5, 5, 1), "Error: EXPN not available"));
        } else {
            self.send(vrfy_default());
        }
    }

    fn starttls(&mut self) {
        if self.tls {
            return self.error(sequence_error("TLS already active"));
        }
        if self.auth.is_some() {
            return self.error(sequence_error("STARTTLS after AUTH"));
        }
        if !self.config.starttls_available {
            return self.error(reply(502, (5, 5, 1), "Error: STARTTLS not available"));
        }
        self.end_transaction(AbortReason::Reset);
        self.send(reply(220, (2, 0, 0), "Ready to start TLS"));
        // Nothing sent before the handshake may be obeyed after it
        // (CVE-2011-0411).
        self.input.clear();
        self.pos = 0;
        self.mode = Mode::TlsPending;
        self.events.push_back(Event::StartTls);
    }

    fn answer(&mut self, given: Option<Reply>, queue_id: Option<&str>) {
        let q = match mem::replace(&mut self.mode, Mode::Commands) {
            Mode::Question(q) => q,
            other => {
                // No question pending: nothing to answer.
                self.mode = other;
                return;
            }
        };
        let positive = given.as_ref().is_none_or(Reply::is_positive);
        match q {
            Question::Mail { from, params } => {
                if positive {
                    self.txn = Some(Transaction {
                        params,
                        rcpts: 0,
                        bdat: None,
                    });
                }
                self.send(
                    given.unwrap_or_else(|| reply(250, (2, 1, 0), format!("Sender {from} OK"))),
                );
            }
            Question::Rcpt { to } => {
                if positive && let Some(t) = self.txn.as_mut() {
                    t.rcpts += 1;
                }
                // A permanently refused recipient counts as an error (as
                // Postfix's hard error count does): directory harvesting
                // meets the tarpit and, at `max_errors`, the door.
                let refused = given.as_ref().is_some_and(|r| r.code >= 500);
                self.send(
                    given.unwrap_or_else(|| reply(250, (2, 1, 5), format!("Recipient {to} OK"))),
                );
                if refused {
                    self.count_error();
                }
            }
            Question::DataStart { pipelined } => {
                if positive {
                    self.send(given.unwrap_or_else(|| {
                        Reply::without_status(354, ["End data with <CR><LF>.<CR><LF>"])
                    }));
                    self.mode = Mode::Data(DataRx {
                        decoder: DataDecoder::new(self.config.bare_line_endings),
                        failure: None,
                    });
                } else if let Some(r) = given {
                    self.send(r);
                    self.after_refused_data(pipelined);
                }
            }
            Question::BdatStart { size, last } => {
                let sink = match given {
                    Some(r) if !r.is_positive() => BdatSink::Swallow {
                        reply: r,
                        end_txn: true,
                        error: false,
                    },
                    _ => {
                        let binary = self
                            .txn
                            .as_ref()
                            .is_some_and(|t| t.params.body == Some(BodyType::BinaryMime));
                        let text = if binary {
                            BdatText::binary()
                        } else {
                            BdatText::text(self.config.bare_line_endings)
                        };
                        BdatSink::Message(BdatMessage {
                            declared: size,
                            text,
                        })
                    }
                };
                self.mode = Mode::Bdat(BdatRx {
                    chunk: BdatChunk::new(size),
                    size,
                    last,
                    sink,
                });
            }
            Question::DataEnd => {
                let r = given.unwrap_or_else(|| match queue_id {
                    Some(id) => reply(250, (2, 0, 0), format!("Ok: queued as {id}")),
                    None => reply(250, (2, 0, 0), "Ok: queued"),
                });
                self.send(r);
                self.end_transaction(AbortReason::Protocol);
            }
            Question::Verify => self.send(given.unwrap_or_else(vrfy_default)),
            Question::AuthStart { mechanism, initial } => match given {
                // Refused by the runtime (limits): a policy answer.
                Some(r) if !positive => self.send(r),
                _ => self.start_auth(mechanism, initial, &[], 0),
            },
            Question::Auth(mut rx) => match given {
                Some(r) if !positive => {
                    let kind = refusal_kind(&r, FailureKind::BadCredentials);
                    self.auth_failed(rx.mechanism, rx.authcid, kind, Some(r));
                }
                // Only a real answer may authenticate.
                _ => {
                    rx.auth.provide(Answer::Fail(FailureKind::Temporary));
                    self.drive_auth(rx);
                }
            },
            Question::Authenticated {
                mechanism,
                identity,
            } => match given {
                Some(r) if !positive => {
                    let kind = refusal_kind(&r, FailureKind::AuthzidNotAllowed);
                    self.auth_failed(mechanism, Some(identity.authcid), kind, Some(r));
                }
                given => {
                    self.send(
                        given.unwrap_or_else(|| reply(235, (2, 7, 0), "Authentication successful")),
                    );
                    self.auth = Some(identity);
                }
            },
        }
    }

    /// The mechanisms for the EHLO `AUTH` line, when AUTH is offered now.
    fn advertised_mechanisms(&self) -> Option<String> {
        let c = &self.config;
        if c.auth_mechanisms.is_empty()
            || self.auth.is_some()
            || !(self.tls || c.auth_plaintext_allowed)
        {
            return None;
        }
        let mut names: Vec<&str> = Vec::new();
        for m in &c.auth_mechanisms {
            if !names.contains(&m.name()) {
                names.push(m.name());
            }
        }
        Some(names.join(" "))
    }

    /// `AUTH mechanism [initial-response]` (RFC 4954 4).
    fn auth_command(&mut self, name: &str, initial: Option<&str>) {
        let config = Arc::clone(&self.config);
        if config.auth_mechanisms.is_empty() {
            return self.error(reply(502, (5, 5, 1), "Error: authentication not available"));
        }
        if !self.hello.as_ref().is_some_and(|h| h.extended) {
            return self.error(sequence_error("send EHLO first"));
        }
        if self.auth.is_some() {
            return self.error(sequence_error("already authenticated"));
        }
        if self.txn.is_some() {
            return self.error(sequence_error(
                "AUTH not permitted during a mail transaction",
            ));
        }
        let Some(mechanism) =
            Mechanism::from_name(name).filter(|m| config.auth_mechanisms.contains(m))
        else {
            return self.error(reply(
                504,
                (5, 5, 4),
                "Error: unrecognized authentication mechanism",
            ));
        };
        if !self.tls && !config.auth_plaintext_allowed {
            return self.error(reply(
                538,
                (5, 7, 11),
                "Encryption required for requested authentication mechanism",
            ));
        }
        let initial = match initial.map(|text| decode_sasl(text.as_bytes())) {
            None => None,
            Some(Some(bytes)) => Some(bytes),
            Some(None) => {
                return self.error(reply(
                    501,
                    (5, 5, 2),
                    "Error: initial response is not valid base64",
                ));
            }
        };
        self.ask(
            Question::AuthStart { mechanism, initial },
            Event::AuthStart { mechanism },
        );
    }

    fn start_auth(
        &mut self,
        mechanism: Mechanism,
        initial: Option<SaslBytes>,
        nonce: &[u8],
        now_unix: u64,
    ) {
        let config = Arc::clone(&self.config);
        let ctx = StartContext::new(nonce, &config.hostname, now_unix, &config.auth_secret);
        let auth = ServerAuth::start(mechanism, initial.as_ref().map(|b| b.0.as_slice()), ctx);
        self.drive_auth(Box::new(AuthRx {
            auth,
            mechanism,
            authcid: None,
        }));
    }

    /// Acts on the exchange's next step: a 334 challenge, a question, or
    /// the end.
    fn drive_auth(&mut self, mut rx: Box<AuthRx>) {
        let mechanism = rx.mechanism;
        match rx.auth.next() {
            Step::Challenge(bytes) => {
                // Written as is, not through `Reply`: a challenge may be
                // longer than a reply line (RFC 4954 4).
                self.output.extend_from_slice(b"334 ");
                self.output
                    .extend_from_slice(STANDARD.encode(&bytes).as_bytes());
                self.output.extend_from_slice(b"\r\n");
                self.mode = Mode::AuthResponse(rx);
            }
            Step::VerifyPassword {
                authcid,
                authzid,
                password,
            } => {
                rx.authcid = Some(authcid.clone());
                let q = AuthQuestion::VerifyPassword {
                    authcid,
                    authzid,
                    password,
                };
                self.ask(Question::Auth(rx), Event::Auth(q));
            }
            Step::LookupCram { authcid } => {
                rx.authcid = Some(authcid.clone());
                let q = AuthQuestion::LookupCram { authcid };
                self.ask(Question::Auth(rx), Event::Auth(q));
            }
            Step::LookupScram { authcid, authzid } => {
                rx.authcid = Some(authcid.clone());
                let q = AuthQuestion::LookupScram { authcid, authzid };
                self.ask(Question::Auth(rx), Event::Auth(q));
            }
            Step::VerifyToken { token, user_hint } => {
                rx.authcid.clone_from(&user_hint);
                let q = AuthQuestion::VerifyToken { token, user_hint };
                self.ask(Question::Auth(rx), Event::Auth(q));
            }
            Step::Success { authcid, authzid } => {
                let ev = Event::Authenticated {
                    mechanism,
                    authcid: authcid.clone(),
                    authzid: authzid.clone(),
                };
                let identity = AuthIdentity { authcid, authzid };
                self.ask(
                    Question::Authenticated {
                        mechanism,
                        identity,
                    },
                    ev,
                );
            }
            Step::Failure(f) => {
                let r = auth_failure_reply(f.kind, f.reason);
                self.auth_failed(mechanism, rx.authcid, f.kind, Some(r));
            }
            // Every input was given: cannot happen; fail safe.
            Step::NeedResponse | Step::NeedAnswer => {
                self.auth_failed(mechanism, rx.authcid, FailureKind::Temporary, None);
            }
        }
    }

    /// Ends a started exchange without success: reports it, sends `r` (or
    /// the standard reply for `kind`) and counts a protocol error.
    fn auth_failed(
        &mut self,
        mechanism: Mechanism,
        authcid: Option<String>,
        kind: FailureKind,
        r: Option<Reply>,
    ) {
        self.mode = Mode::Commands;
        self.events.push_back(Event::AuthFailed {
            mechanism,
            authcid,
            kind,
        });
        self.error(r.unwrap_or_else(|| auth_failure_reply(kind, "")));
    }

    /// Reads the client's response line to a 334 challenge.
    fn step_auth_response(&mut self, rx: Box<AuthRx>) -> bool {
        let unread = self.unread();
        if unread.is_empty() {
            self.mode = Mode::AuthResponse(rx);
            return false;
        }
        let window = &unread[..unread.len().min(MAX_AUTH_LINE)];
        match window.iter().position(|&b| b == b'\n') {
            Some(i) => {
                let line = Zeroizing::new(unread[..i].to_vec());
                self.pos += i + 1;
                self.auth_response_line(rx, &line);
                true
            }
            None if unread.len() >= MAX_AUTH_LINE => {
                // Too long: the exchange fails now; drain the rest of the
                // line without keeping it.
                let drain = match unread.iter().position(|&b| b == b'\n') {
                    Some(i) => {
                        self.pos += i + 1;
                        false
                    }
                    None => {
                        self.pos = self.input.len();
                        true
                    }
                };
                self.auth_failed(rx.mechanism, rx.authcid, FailureKind::ResponseTooLong, None);
                if drain && !self.is_closed() {
                    self.mode = Mode::DrainLine;
                }
                true
            }
            None => {
                self.mode = Mode::AuthResponse(rx);
                false
            }
        }
    }

    fn auth_response_line(&mut self, mut rx: Box<AuthRx>, line: &[u8]) {
        let Some(text) = line.strip_suffix(b"\r") else {
            // Only CRLF ends a line.
            let r = auth_failure_reply(FailureKind::Malformed, "bare LF in AUTH response");
            return self.auth_failed(rx.mechanism, rx.authcid, FailureKind::Malformed, Some(r));
        };
        if text == b"*" {
            rx.auth.cancel();
            return self.drive_auth(rx);
        }
        match decode_sasl(text) {
            Some(bytes) => {
                rx.auth.client_response(&bytes.0);
                self.drive_auth(rx);
            }
            None => {
                let r =
                    auth_failure_reply(FailureKind::Malformed, "AUTH response is not valid base64");
                self.auth_failed(rx.mechanism, rx.authcid, FailureKind::Malformed, Some(r));
            }
        }
    }

    /// The first reason to void the message, from its statistics so far.
    fn check_message(
        &self,
        bare: bool,
        text: bool,
        longest: usize,
        received: usize,
        size: u64,
    ) -> Option<AbortReason> {
        let c = &self.config;
        if bare && c.bare_line_endings == BareLineEndings::Reject {
            Some(AbortReason::BareLineEnding)
        } else if text && longest > c.max_text_line {
            Some(AbortReason::LineTooLong)
        } else if received > c.max_received_headers {
            Some(AbortReason::TooManyReceived)
        } else if size > c.max_message_size {
            Some(AbortReason::TooBig)
        } else {
            None
        }
    }

    fn step_data(&mut self, mut rx: DataRx) -> bool {
        let mut out = Vec::new();
        let r = rx.decoder.decode(
            &self.input[self.pos..],
            &mut out,
            self.config.data_chunk_size,
        );
        self.pos += r.consumed;
        if rx.failure.is_none() {
            let d = &rx.decoder;
            let s = d.scanner();
            let failure = self.check_message(
                d.saw_bare_line_ending(),
                true,
                s.longest_line(),
                s.received_count(),
                d.output_len(),
            );
            match failure {
                Some(reason) => {
                    rx.failure = Some(reason);
                    self.events.push_back(Event::DataAborted { reason });
                }
                None if !out.is_empty() => self.events.push_back(Event::DataChunk(out)),
                None => {}
            }
        }
        if !r.done {
            self.mode = Mode::Data(rx);
            return r.consumed > 0;
        }
        match rx.failure {
            Some(reason) => self.message_failed(reason),
            None => self.ask(Question::DataEnd, Event::DataEnd),
        }
        true
    }

    /// The voided message has been read to its end: answer, end the
    /// transaction.
    fn message_failed(&mut self, reason: AbortReason) {
        self.mode = Mode::Commands;
        // The DataAborted was already reported; only Reset remains.
        if let Some(t) = self.txn.as_mut() {
            t.bdat = None;
        }
        self.end_transaction(reason);
        let r = failure_reply(reason, &self.config);
        if matches!(
            reason,
            AbortReason::BareLineEnding | AbortReason::LineTooLong
        ) {
            self.error(r);
        } else {
            self.send(r);
        }
    }

    fn step_bdat(&mut self, mut rx: BdatRx) -> bool {
        if rx.chunk.is_complete() {
            self.chunk_done(rx);
            return true;
        }
        let unread = self.input.len() - self.pos;
        let avail = usize::try_from(rx.chunk.remaining())
            .unwrap_or(usize::MAX)
            .min(unread);
        if avail == 0 {
            self.mode = Mode::Bdat(rx);
            return false;
        }
        let part = &self.input[self.pos..self.pos + avail];
        let consumed = match &mut rx.sink {
            BdatSink::Swallow { .. } => avail,
            BdatSink::Message(msg) => {
                let mut out = Vec::new();
                let n = msg
                    .text
                    .process(part, &mut out, self.config.data_chunk_size);
                let failure = self.check_bdat(msg);
                self.bdat_output(&mut rx.sink, failure, out);
                n
            }
        };
        rx.chunk
            .take(&self.input[self.pos..self.pos + consumed], consumed);
        self.pos += consumed;
        self.mode = Mode::Bdat(rx);
        true
    }

    fn check_bdat(&self, msg: &BdatMessage) -> Option<AbortReason> {
        let t = &msg.text;
        self.check_message(
            t.saw_bare_line_ending(),
            t.is_text(),
            t.scanner().longest_line(),
            t.scanner().received_count(),
            t.output_len(),
        )
    }

    /// Emits BDAT output, or voids the message on `failure`.
    fn bdat_output(&mut self, sink: &mut BdatSink, failure: Option<AbortReason>, out: Vec<u8>) {
        match failure {
            Some(reason) => {
                self.events.push_back(Event::DataAborted { reason });
                let error = matches!(
                    reason,
                    AbortReason::BareLineEnding | AbortReason::LineTooLong
                );
                *sink = BdatSink::Swallow {
                    reply: failure_reply(reason, &self.config),
                    end_txn: true,
                    error,
                };
            }
            None if !out.is_empty() => self.events.push_back(Event::DataChunk(out)),
            None => {}
        }
    }

    fn chunk_done(&mut self, rx: BdatRx) {
        self.mode = Mode::Commands;
        match rx.sink {
            BdatSink::Swallow {
                reply,
                end_txn,
                error,
            } => {
                if end_txn {
                    if let Some(t) = self.txn.as_mut() {
                        t.bdat = None;
                    }
                    self.end_transaction(AbortReason::Protocol);
                }
                if error {
                    self.error(reply);
                } else {
                    self.send(reply);
                }
            }
            BdatSink::Message(mut msg) if rx.last => {
                let mut out = Vec::new();
                msg.text.finish(&mut out);
                let failure = self.check_bdat(&msg);
                let mut sink = BdatSink::Message(msg);
                self.bdat_output(&mut sink, failure, out);
                match failure {
                    Some(reason) => self.message_failed(reason),
                    None => self.ask(Question::DataEnd, Event::DataEnd),
                }
            }
            BdatSink::Message(msg) => {
                if let Some(t) = self.txn.as_mut() {
                    t.bdat = Some(msg);
                }
                self.send(reply(
                    250,
                    (2, 0, 0),
                    format!("{} octets received", rx.size),
                ));
            }
        }
    }
}

/// Decodes a base64 SASL message; empty and `=` are the empty message.
/// `None` when it is not base64.
fn decode_sasl(text: &[u8]) -> Option<SaslBytes> {
    if text.is_empty() || text == b"=" {
        return Some(SaslBytes(Zeroizing::new(Vec::new())));
    }
    STANDARD_PAD_INDIFFERENT
        .decode(text)
        .ok()
        .map(|b| SaslBytes(Zeroizing::new(b)))
}

/// The RFC 4954 reply for a failed exchange. `reason` (fixed text, never
/// client data) is shown for malformed exchanges only.
fn auth_failure_reply(kind: FailureKind, reason: &str) -> Reply {
    match kind {
        FailureKind::BadCredentials | FailureKind::AuthzidNotAllowed => {
            reply(535, (5, 7, 8), "Authentication credentials invalid")
        }
        FailureKind::Cancelled => reply(501, (5, 0, 0), "Authentication cancelled"),
        FailureKind::Malformed if reason.is_empty() => {
            reply(501, (5, 5, 2), "Error: malformed authentication exchange")
        }
        FailureKind::Malformed => reply(501, (5, 5, 2), format!("Error: {reason}")),
        FailureKind::ResponseTooLong => reply(
            500,
            (5, 5, 6),
            "Error: authentication exchange line is too long",
        ),
        _ => reply(454, (4, 7, 0), "Temporary authentication failure"),
    }
}

/// The failure kind reported for the runtime's own refusal `r` of an
/// exchange in progress.
fn refusal_kind(r: &Reply, permanent: FailureKind) -> FailureKind {
    if r.is_transient() {
        FailureKind::Temporary
    } else {
        permanent
    }
}

fn vrfy_default() -> Reply {
    reply(
        252,
        (2, 5, 0),
        "Cannot VRFY user, but will accept message and attempt delivery",
    )
}

/// The reply for a message voided by the session itself.
fn failure_reply(reason: AbortReason, config: &ServerConfig) -> Reply {
    match reason {
        AbortReason::TooBig => reply(
            552,
            (5, 3, 4),
            "Message size exceeds fixed maximum message size",
        ),
        AbortReason::BareLineEnding => reply(
            550,
            (5, 6, 0),
            "Message refused: bare LF or CR in message content (see RFC 5321 2.3.8)",
        ),
        AbortReason::TooManyReceived => reply(
            554,
            (5, 4, 6),
            "Error: too many Received: header fields, mail loop detected",
        ),
        AbortReason::LineTooLong => reply(
            500,
            (5, 5, 2),
            format!(
                "Error: message text line longer than {} octets",
                config.max_text_line
            ),
        ),
        _ => reply(451, (4, 3, 0), "Error: message aborted"),
    }
}
