//! The POP3 server session: a sans-IO state machine (RFC 1939 states
//! AUTHORIZATION → TRANSACTION → UPDATE).
//!
//! [`Session`] takes the client's bytes, frames them into lines (bounded:
//! see [`SessionConfig::max_line`]), answers what it can alone (CAPA,
//! NOOP, STAT, LIST, UIDL, DELE, RSET, commands in the wrong state) and
//! turns the rest into [`Event`]s for the driver: SASL questions for the
//! user directory, "open this user's maildrop", "send message n", "commit
//! these deletions". It never touches a socket, a clock or a file.
//!
//! # Call order
//!
//! 1. [`Session::new`], then [`Session::greet`].
//! 2. Loop: [`Session::handle_input`] with the bytes read; then
//!    [`Session::poll_event`] until `None`, acting on each event:
//!    - [`Event::StartTls`]: write out [`Session::take_output`], run the
//!      TLS handshake, then call [`Session::tls_established`]. Bytes read
//!      before the handshake are never to be fed in (the session already
//!      dropped those it had, CVE-2011-0411).
//!    - [`Event::AuthStart`]: call [`Session::auth_begin`] with a
//!      [`StartContext`] (fresh nonce, host name, time, server secret).
//!    - [`Event::Auth`]: ask the directory, then [`Session::auth_answer`].
//!    - [`Event::OpenMaildrop`]: lock and snapshot the user's maildrop, then
//!      [`Session::maildrop_opened`].
//!    - [`Event::Retrieve`]: open the message; on success call
//!      [`Session::retrieve_ready`], write the output, stream the message
//!      through a [`crate::wire::DotStuffer`] (which ends it with `.`),
//!      then call [`Session::retrieve_done`]; on failure
//!      [`Session::retrieve_failed`].
//!    - [`Event::Update`]: remove the listed messages in one store
//!      operation, then [`Session::update_done`].
//!    - [`Event::Close`]: write out the output and close the connection.
//! 3. Write [`Session::take_output`] to the socket whenever it is not empty.
//!
//! Only one command is in flight: while an event waits for its answer,
//! pipelined commands (RFC 2449 PIPELINING) wait in the input buffer.
//!
//! ```
//! use tern_pop3::{Event, MessageInfo, Session, SessionConfig};
//! use tern_sasl::Answer;
//!
//! let mut s = Session::new(SessionConfig::default(), true);
//! s.greet();
//! s.handle_input(b"USER alice\r\nPASS secret\r\nSTAT\r\nQUIT\r\n");
//! while let Some(event) = s.poll_event() {
//!     match event {
//!         Event::Auth(tern_pop3::AuthQuestion::VerifyPassword { authcid, password }) => {
//!             s.auth_answer(Answer::PasswordOk(authcid == "alice" && password.as_str() == "secret"));
//!         }
//!         Event::OpenMaildrop { user } => {
//!             assert_eq!(user, "alice");
//!             s.maildrop_opened(Ok(vec![MessageInfo { size: 120, uidl: "a1".into() }]));
//!         }
//!         Event::Update { deleted } => {
//!             assert!(deleted.is_empty());
//!             s.update_done(Ok(()));
//!         }
//!         _ => {}
//!     }
//! }
//! let out = String::from_utf8(s.take_output()).unwrap();
//! assert!(out.contains("+OK 1 120\r\n"));
//! assert!(out.ends_with("+OK Logging out (1 messages left)\r\n"));
//! ```
//!
//! Decisions:
//! * Before TLS, unless [`SessionConfig::plaintext_auth_allowed`], CAPA
//!   lists neither USER nor SASL, and USER, PASS and AUTH get
//!   `-ERR [AUTH]` telling the client to use STLS.
//! * An authorization identity different from the authenticated one is
//!   refused: no proxy logins.
//! * `max_bad_commands` errors in a row end the session.
//! * APOP is not implemented (see the crate documentation): it is an
//!   unknown command.
//! * `AUTH` without a mechanism lists the mechanisms (the form Outlook and
//!   some libraries probe with), as Dovecot does.

use std::collections::VecDeque;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use tern_sasl::{Answer, FailureKind, Mechanism, Password, ServerAuth, StartContext, Step, Token};
use zeroize::Zeroizing;

/// The RFC 1939 state, as far as the client can tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Before a successful login.
    Authorization,
    /// The maildrop is open.
    Transaction,
    /// After QUIT in TRANSACTION: deletions being committed.
    Update,
    /// The session is over ([`Event::Close`] was emitted).
    Closed,
}

/// How long messages stay on the server (RFC 2449 EXPIRE).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Expire {
    /// Never removed by the server (`EXPIRE NEVER`).
    #[default]
    Never,
    /// Removed after this many days (`EXPIRE n`).
    Days(u32),
}

/// What a session needs to know about its listener.
#[derive(Debug, Clone)]
pub struct SessionConfig {
    /// SASL mechanisms offered by AUTH.
    pub mechanisms: Vec<Mechanism>,
    /// USER/PASS and AUTH allowed without TLS (loopback listeners only).
    pub plaintext_auth_allowed: bool,
    /// STLS offered (false on implicit-TLS listeners and without TLS).
    pub starttls: bool,
    /// The EXPIRE policy announced in CAPA.
    pub expire: Expire,
    /// The least number of seconds between two logins of a user, announced
    /// in CAPA as `LOGIN-DELAY n` (RFC 2449); `None`: no delay, nothing
    /// announced. The driver enforces it (a login too soon is answered
    /// with [`MaildropError::LoginDelay`]).
    pub login_delay: Option<u32>,
    /// The longest command line accepted, CRLF included (RFC 2449 asks
    /// for 255; longer lines get `-ERR` and are skipped).
    pub max_line: usize,
    /// The longest line of an AUTH exchange, CRLF included (base64 of a
    /// bearer token can be long).
    pub max_auth_line: usize,
    /// Errors in a row before the session is closed.
    pub max_bad_commands: u32,
    /// The text after `+OK` in the greeting.
    pub greeting: String,
}

impl Default for SessionConfig {
    fn default() -> Self {
        SessionConfig {
            mechanisms: vec![Mechanism::Plain, Mechanism::Login],
            plaintext_auth_allowed: false,
            starttls: true,
            expire: Expire::Never,
            login_delay: None,
            max_line: 512,
            max_auth_line: 16 * 1024,
            max_bad_commands: 10,
            greeting: "Tern POP3 ready".to_owned(),
        }
    }
}

/// One message of the maildrop, as the driver snapshotted it at login.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageInfo {
    /// Octets RETR sends (see [`crate::wire::wire_size`]).
    pub size: u64,
    /// Its unique id (RFC 1939: 1 to 70 characters 0x21 to 0x7E), stable
    /// across sessions.
    pub uidl: String,
}

/// Why the driver could not do what an event asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MaildropError {
    /// Another POP3 session holds the maildrop (`[IN-USE]`).
    #[error("maildrop in use")]
    InUse,
    /// A transient failure: the client may retry (`[SYS/TEMP]`).
    #[error("temporary mail store failure")]
    Temporary,
    /// A permanent failure (`[SYS/PERM]`).
    #[error("permanent mail store failure")]
    Permanent,
    /// The user logged in less than the login delay ago (RFC 2449
    /// `[LOGIN-DELAY]`; see [`SessionConfig::login_delay`]).
    #[error("logged in too recently")]
    LoginDelay,
}

/// A question of the SASL exchange for the user directory.
#[derive(Debug)]
#[non_exhaustive]
pub enum AuthQuestion {
    /// Is this the user's password? Answer [`Answer::PasswordOk`].
    VerifyPassword {
        /// The user name.
        authcid: String,
        /// The password (redacted in `Debug`).
        password: Password,
    },
    /// The user's CRAM-MD5 secret: answer [`Answer::Cram`].
    LookupCram {
        /// The user name.
        authcid: String,
    },
    /// The user's SCRAM-SHA-256 credentials: answer [`Answer::Scram`].
    LookupScram {
        /// The user name.
        authcid: String,
    },
    /// Is this bearer token valid? Answer [`Answer::Token`].
    VerifyToken {
        /// The token (redacted in `Debug`).
        token: Token,
        /// Who the client says it is (not proven).
        user_hint: Option<String>,
    },
}

/// What the driver must do.
#[derive(Debug)]
#[non_exhaustive]
pub enum Event {
    /// STLS accepted: write the output, run the handshake, then
    /// [`Session::tls_established`].
    StartTls,
    /// AUTH or PASS began an exchange: call [`Session::auth_begin`].
    AuthStart {
        /// The mechanism.
        mechanism: Mechanism,
    },
    /// A question for the directory: answer with [`Session::auth_answer`].
    Auth(AuthQuestion),
    /// An exchange failed (for the brute-force tracker and the log).
    AuthFailed {
        /// How.
        kind: FailureKind,
    },
    /// The user proved who they are: lock and snapshot their maildrop,
    /// then [`Session::maildrop_opened`].
    OpenMaildrop {
        /// The authenticated user.
        user: String,
    },
    /// RETR or TOP: send message `number` (1-based, never deleted).
    Retrieve {
        /// The message number.
        number: u32,
        /// TOP's line count; `None`: the whole message (RETR).
        lines: Option<u64>,
    },
    /// QUIT in TRANSACTION: remove these messages (1-based numbers,
    /// ascending; possibly none) in one operation, then
    /// [`Session::update_done`].
    Update {
        /// The messages marked deleted.
        deleted: Vec<u32>,
    },
    /// Write the output and close the connection.
    Close,
}

#[derive(Debug)]
enum Mode {
    /// Reading commands.
    Ready,
    /// STLS accepted; input is ignored until the handshake.
    AwaitingTls,
    /// AUTH/PASS waiting for [`Session::auth_begin`].
    AuthStart {
        mechanism: Mechanism,
        initial: Option<Zeroizing<Vec<u8>>>,
    },
    /// Waiting for the client's next SASL line.
    AuthClient { auth: Box<ServerAuth> },
    /// Waiting for [`Session::auth_answer`].
    AuthAnswer { auth: Box<ServerAuth> },
    /// Waiting for [`Session::maildrop_opened`].
    Opening,
    /// Waiting for [`Session::retrieve_ready`] / `retrieve_failed`.
    Retrieving { number: u32, lines: Option<u64> },
    /// The message is being streamed; waiting for [`Session::retrieve_done`].
    Streaming,
    /// Waiting for [`Session::update_done`].
    Updating,
    /// Closed.
    Closed,
}

/// A POP3 server session. See the module documentation for the call
/// order.
#[derive(Debug)]
pub struct Session {
    config: SessionConfig,
    tls: bool,
    mode: Mode,
    /// Unprocessed input.
    input: Vec<u8>,
    /// Skipping the rest of an over-long line.
    draining: bool,
    out: Vec<u8>,
    events: VecDeque<Event>,
    /// USER given, waiting for PASS.
    user: Option<String>,
    /// The authenticated user.
    authenticated: Option<String>,
    /// The mechanism of the latest exchange ([`Session::auth_mechanism`]).
    auth_mechanism: Option<Mechanism>,
    /// The maildrop (TRANSACTION).
    messages: Vec<MessageInfo>,
    deleted: Vec<bool>,
    bad: u32,
}

const MULTILINE_END: &[u8] = b".\r\n";

impl Session {
    /// A session on a connection that is already encrypted (`tls`, port
    /// 995) or not.
    pub fn new(config: SessionConfig, tls: bool) -> Session {
        Session {
            config,
            tls,
            mode: Mode::Ready,
            input: Vec::new(),
            draining: false,
            out: Vec::new(),
            events: VecDeque::new(),
            user: None,
            authenticated: None,
            auth_mechanism: None,
            messages: Vec::new(),
            deleted: Vec::new(),
            bad: 0,
        }
    }

    /// Writes the greeting. No APOP timestamp: APOP is not offered.
    pub fn greet(&mut self) {
        let g = format!("+OK {}\r\n", self.config.greeting);
        self.out.extend_from_slice(g.as_bytes());
    }

    /// The RFC 1939 state.
    pub fn state(&self) -> State {
        match self.mode {
            Mode::Closed => State::Closed,
            Mode::Updating => State::Update,
            _ if self.authenticated.is_some() && !matches!(self.mode, Mode::Opening) => {
                State::Transaction
            }
            _ => State::Authorization,
        }
    }

    /// Whether the connection is encrypted.
    pub fn is_tls(&self) -> bool {
        self.tls
    }

    /// The authenticated user, once the maildrop is open.
    pub fn user(&self) -> Option<&str> {
        match self.state() {
            State::Transaction | State::Update => self.authenticated.as_deref(),
            _ => None,
        }
    }

    /// The SASL mechanism of the latest authentication exchange, started or
    /// refused after its mechanism was known (`USER`/`PASS` run `PLAIN`); `None`
    /// before any. Drivers label their authentication metrics with it.
    pub fn auth_mechanism(&self) -> Option<Mechanism> {
        self.auth_mechanism
    }

    /// Feeds bytes read from the client.
    pub fn handle_input(&mut self, bytes: &[u8]) {
        match self.mode {
            Mode::AwaitingTls | Mode::Closed => {}
            _ => {
                self.input.extend_from_slice(bytes);
                self.process();
            }
        }
    }

    /// The next event, if any.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// Everything to write to the client so far.
    pub fn take_output(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.out)
    }

    /// The TLS handshake after STLS succeeded: start over as after the
    /// greeting, on an encrypted connection (RFC 2595: no greeting again).
    pub fn tls_established(&mut self) {
        if matches!(self.mode, Mode::AwaitingTls) {
            self.tls = true;
            self.user = None;
            self.input.clear();
            self.draining = false;
            self.mode = Mode::Ready;
        }
    }

    /// Answer [`Event::AuthStart`].
    pub fn auth_begin(&mut self, ctx: StartContext<'_>) {
        let (mechanism, initial) = match std::mem::replace(&mut self.mode, Mode::Ready) {
            Mode::AuthStart { mechanism, initial } => (mechanism, initial),
            other => {
                self.mode = other;
                return;
            }
        };
        let auth = ServerAuth::start(mechanism, initial.as_ref().map(|b| b.as_slice()), ctx);
        self.drive_auth(Box::new(auth));
        self.process();
    }

    /// Answer an [`Event::Auth`] question.
    pub fn auth_answer(&mut self, answer: Answer) {
        let mut auth = match std::mem::replace(&mut self.mode, Mode::Ready) {
            Mode::AuthAnswer { auth } => auth,
            other => {
                self.mode = other;
                return;
            }
        };
        auth.provide(answer);
        self.drive_auth(auth);
        self.process();
    }

    /// Answer [`Event::OpenMaildrop`]: the snapshot of the maildrop, or
    /// why it cannot be opened (the session then goes back to
    /// AUTHORIZATION, as RFC 1939 asks).
    pub fn maildrop_opened(&mut self, result: Result<Vec<MessageInfo>, MaildropError>) {
        if !matches!(self.mode, Mode::Opening) {
            return;
        }
        self.mode = Mode::Ready;
        match result {
            Ok(messages) => {
                self.deleted = vec![false; messages.len()];
                self.messages = messages;
                self.bad = 0;
                let (n, octets) = self.totals();
                self.ok(&format!("Logged in, {n} messages ({octets} octets)"));
            }
            Err(e) => {
                self.authenticated = None;
                self.user = None;
                let text = match e {
                    MaildropError::InUse => "-ERR [IN-USE] Maildrop is locked by another session",
                    MaildropError::Temporary => {
                        "-ERR [SYS/TEMP] Maildrop unavailable, try again later"
                    }
                    MaildropError::Permanent => "-ERR [SYS/PERM] Maildrop cannot be opened",
                    MaildropError::LoginDelay => {
                        "-ERR [LOGIN-DELAY] Logged in too recently, try again later"
                    }
                };
                self.line(text);
            }
        }
        self.process();
    }

    /// Answer [`Event::Retrieve`]: the message can be read. Writes the
    /// `+OK` line; the driver writes the output, then the message through
    /// a [`crate::wire::DotStuffer`], then calls [`Session::retrieve_done`].
    pub fn retrieve_ready(&mut self) {
        let Mode::Retrieving { number, lines } = self.mode else {
            return;
        };
        self.mode = Mode::Streaming;
        match lines {
            None => {
                let size = self.messages[number as usize - 1].size;
                self.ok(&format!("{size} octets"));
            }
            Some(_) => self.ok("Top of message follows"),
        }
    }

    /// The message (and its terminating `.`) has been written.
    pub fn retrieve_done(&mut self) {
        if matches!(self.mode, Mode::Streaming) {
            self.mode = Mode::Ready;
            self.process();
        }
    }

    /// Answer [`Event::Retrieve`]: the message could not be read.
    pub fn retrieve_failed(&mut self, error: MaildropError) {
        if !matches!(self.mode, Mode::Retrieving { .. }) {
            return;
        }
        self.mode = Mode::Ready;
        match error {
            MaildropError::Permanent => self.line("-ERR [SYS/PERM] Message no longer available"),
            _ => self.line("-ERR [SYS/TEMP] Message cannot be read now, try again later"),
        }
        self.process();
    }

    /// Answer [`Event::Update`]: the deletions were committed (or not:
    /// then none of them is to be reported as done).
    pub fn update_done(&mut self, result: Result<(), MaildropError>) {
        if !matches!(self.mode, Mode::Updating) {
            return;
        }
        match result {
            Ok(()) => {
                let left = self.deleted.iter().filter(|d| !**d).count();
                self.ok(&format!("Logging out ({left} messages left)"));
            }
            Err(MaildropError::Permanent) => {
                self.line("-ERR [SYS/PERM] Some deleted messages were not removed")
            }
            Err(_) => self.line("-ERR [SYS/TEMP] Some deleted messages were not removed"),
        }
        self.close();
    }

    // ---- internals ---------------------------------------------------

    fn line(&mut self, text: &str) {
        self.out.extend_from_slice(text.as_bytes());
        self.out.extend_from_slice(b"\r\n");
    }

    fn ok(&mut self, text: &str) {
        self.bad = 0;
        if text.is_empty() {
            self.out.extend_from_slice(b"+OK\r\n");
        } else {
            self.out.extend_from_slice(b"+OK ");
            self.line(text);
        }
    }

    fn err(&mut self, text: &str) {
        self.out.extend_from_slice(b"-ERR ");
        self.line(text);
        self.bad += 1;
        if self.bad >= self.config.max_bad_commands {
            self.line("-ERR Too many errors, closing");
            self.close();
        }
    }

    fn close(&mut self) {
        self.mode = Mode::Closed;
        self.input.clear();
        self.events.push_back(Event::Close);
    }

    fn totals(&self) -> (usize, u64) {
        self.messages
            .iter()
            .zip(&self.deleted)
            .filter(|(_, d)| !**d)
            .fold((0, 0), |(n, s), (m, _)| (n + 1, s + m.size))
    }

    fn line_limit(&self) -> usize {
        match self.mode {
            Mode::AuthClient { .. } => self.config.max_auth_line,
            _ => self.config.max_line,
        }
    }

    /// Takes the next complete line (without its CRLF or LF) from the
    /// input, handling over-long lines. `None`: need more input.
    fn next_line(&mut self) -> Option<Vec<u8>> {
        loop {
            let limit = self.line_limit();
            match self.input.iter().position(|&b| b == b'\n') {
                Some(i) if self.draining => {
                    self.input.drain(..=i);
                    self.draining = false;
                }
                Some(i) if i + 1 > limit => {
                    self.input.drain(..=i);
                    self.too_long();
                    if matches!(self.mode, Mode::Closed) {
                        return None;
                    }
                }
                Some(i) => {
                    let mut line: Vec<u8> = self.input.drain(..=i).collect();
                    line.pop();
                    if line.last() == Some(&b'\r') {
                        line.pop();
                    }
                    return Some(line);
                }
                None if self.draining => {
                    self.input.clear();
                    return None;
                }
                None if self.input.len() >= limit => {
                    self.input.clear();
                    self.draining = true;
                    self.too_long();
                    return None;
                }
                None => return None,
            }
        }
    }

    fn too_long(&mut self) {
        match std::mem::replace(&mut self.mode, Mode::Ready) {
            Mode::AuthClient { mut auth } => {
                auth.cancel();
                self.auth_failed(FailureKind::ResponseTooLong);
            }
            other => {
                self.mode = other;
                self.err("Line too long");
            }
        }
    }

    fn process(&mut self) {
        loop {
            match self.mode {
                Mode::Ready | Mode::AuthClient { .. } => {}
                _ => return,
            }
            let Some(line) = self.next_line() else {
                return;
            };
            let line = Zeroizing::new(line);
            if matches!(self.mode, Mode::AuthClient { .. }) {
                self.auth_line(&line);
            } else {
                self.command(&line);
            }
        }
    }

    fn auth_line(&mut self, line: &[u8]) {
        let Mode::AuthClient { mut auth } = std::mem::replace(&mut self.mode, Mode::Ready) else {
            return;
        };
        if line == b"*" {
            auth.cancel();
            self.drive_auth(auth);
            return;
        }
        match STANDARD.decode(line) {
            Ok(d) => {
                let d = Zeroizing::new(d);
                auth.client_response(&d);
                self.drive_auth(auth);
            }
            Err(_) => {
                auth.cancel();
                self.auth_failed(FailureKind::Malformed);
            }
        }
    }

    fn drive_auth(&mut self, mut auth: Box<ServerAuth>) {
        self.auth_mechanism = Some(auth.mechanism());
        match auth.next() {
            Step::Challenge(c) => {
                let mut l = String::from("+ ");
                STANDARD.encode_string(&c, &mut l);
                self.line(&l);
                self.mode = Mode::AuthClient { auth };
            }
            Step::VerifyPassword {
                authcid,
                authzid,
                password,
            } => {
                if authzid.is_some_and(|z| z != authcid) {
                    auth.provide(Answer::Fail(FailureKind::AuthzidNotAllowed));
                    return self.drive_auth(auth);
                }
                self.mode = Mode::AuthAnswer { auth };
                self.events
                    .push_back(Event::Auth(AuthQuestion::VerifyPassword {
                        authcid,
                        password,
                    }));
            }
            Step::LookupCram { authcid } => {
                self.mode = Mode::AuthAnswer { auth };
                self.events
                    .push_back(Event::Auth(AuthQuestion::LookupCram { authcid }));
            }
            Step::LookupScram { authcid, authzid } => {
                if authzid.is_some_and(|z| z != authcid) {
                    auth.provide(Answer::Fail(FailureKind::AuthzidNotAllowed));
                    return self.drive_auth(auth);
                }
                self.mode = Mode::AuthAnswer { auth };
                self.events
                    .push_back(Event::Auth(AuthQuestion::LookupScram { authcid }));
            }
            Step::VerifyToken { token, user_hint } => {
                self.mode = Mode::AuthAnswer { auth };
                self.events
                    .push_back(Event::Auth(AuthQuestion::VerifyToken { token, user_hint }));
            }
            Step::NeedResponse => self.mode = Mode::AuthClient { auth },
            Step::NeedAnswer => self.mode = Mode::AuthAnswer { auth },
            Step::Success { authcid, authzid } => {
                if authzid.is_some_and(|z| z != authcid) {
                    return self.auth_failed(FailureKind::AuthzidNotAllowed);
                }
                self.user = None;
                self.authenticated = Some(authcid.clone());
                self.mode = Mode::Opening;
                self.events.push_back(Event::OpenMaildrop { user: authcid });
            }
            Step::Failure(f) => self.auth_failed(f.kind),
        }
    }

    fn auth_failed(&mut self, kind: FailureKind) {
        self.events.push_back(Event::AuthFailed { kind });
        self.user = None;
        if !matches!(self.mode, Mode::Closed) {
            self.mode = Mode::Ready;
        }
        let text = match kind {
            FailureKind::Cancelled => "Authentication cancelled",
            FailureKind::Temporary => "[SYS/TEMP] Temporary authentication failure",
            FailureKind::Malformed => "Malformed authentication exchange",
            FailureKind::ResponseTooLong => "Authentication response too long",
            FailureKind::AuthzidNotAllowed => "[AUTH] Not authorized to act as that user",
            _ => "[AUTH] Authentication failed",
        };
        self.err(text);
    }

    fn plaintext_ok(&self) -> bool {
        self.tls || self.config.plaintext_auth_allowed
    }

    fn capa(&mut self) {
        self.ok("Capability list follows");
        let mut caps: Vec<String> = vec!["TOP".into(), "UIDL".into()];
        let authorization = self.state() == State::Authorization;
        if authorization && self.plaintext_ok() {
            caps.push("USER".into());
            if !self.config.mechanisms.is_empty() {
                let names: Vec<&str> = self.config.mechanisms.iter().map(|m| m.name()).collect();
                caps.push(format!("SASL {}", names.join(" ")));
            }
        }
        caps.push("RESP-CODES".into());
        caps.push("AUTH-RESP-CODE".into());
        caps.push("PIPELINING".into());
        caps.push(match self.config.expire {
            Expire::Never => "EXPIRE NEVER".into(),
            Expire::Days(d) => format!("EXPIRE {d}"),
        });
        if let Some(delay) = self.config.login_delay {
            caps.push(format!("LOGIN-DELAY {delay}"));
        }
        caps.push("IMPLEMENTATION Tern".into());
        if authorization && self.config.starttls && !self.tls {
            caps.push("STLS".into());
        }
        for c in caps {
            self.line(&c);
        }
        self.out.extend_from_slice(MULTILINE_END);
    }

    /// A message number argument: 1-based, existing, not deleted.
    fn message(&mut self, arg: Option<&str>) -> Option<u32> {
        let Some(arg) = arg else {
            self.err("Message number required");
            return None;
        };
        let n = match arg.parse::<u32>() {
            Ok(n) if n >= 1 && arg.bytes().all(|b| b.is_ascii_digit()) => n,
            _ => {
                self.err("Invalid message number");
                return None;
            }
        };
        match self.deleted.get(n as usize - 1) {
            None => {
                self.err("No such message");
                None
            }
            Some(true) => {
                self.err("Message is deleted");
                None
            }
            Some(false) => Some(n),
        }
    }

    fn command(&mut self, line: &[u8]) {
        let Ok(text) = std::str::from_utf8(line) else {
            return self.err("Invalid command");
        };
        let mut parts = text.splitn(2, ' ');
        let verb = parts.next().unwrap_or("").to_ascii_uppercase();
        let rest = parts.next();
        let args: Vec<&str> = rest.map(|r| r.split(' ').collect()).unwrap_or_default();
        let state = self.state();
        let authorization = state == State::Authorization;
        match verb.as_str() {
            "CAPA" => self.capa(),
            "QUIT" if authorization => {
                self.ok("Logging out");
                self.close();
            }
            "QUIT" => {
                let deleted: Vec<u32> = (1u32..)
                    .zip(&self.deleted)
                    .filter(|(_, d)| **d)
                    .map(|(n, _)| n)
                    .collect();
                self.mode = Mode::Updating;
                self.input.clear();
                self.events.push_back(Event::Update { deleted });
            }
            "NOOP" if !authorization => self.ok(""),
            "STLS" if authorization => {
                if self.tls || !self.config.starttls {
                    return self.err("STLS not available");
                }
                if rest.is_some() {
                    return self.err("STLS takes no argument");
                }
                self.ok("Begin TLS negotiation");
                // CVE-2011-0411: nothing pipelined after STLS survives.
                self.input.clear();
                self.draining = false;
                self.mode = Mode::AwaitingTls;
                self.events.push_back(Event::StartTls);
            }
            "USER" if authorization => {
                if !self.plaintext_ok() {
                    return self
                        .err("[AUTH] Plaintext authentication disallowed without TLS (use STLS)");
                }
                match rest {
                    Some(name) if !name.is_empty() && name.len() <= 255 => {
                        self.user = Some(name.to_owned());
                        self.ok("Send your password");
                    }
                    _ => self.err("USER needs a user name"),
                }
            }
            "PASS" if authorization => {
                if !self.plaintext_ok() {
                    return self
                        .err("[AUTH] Plaintext authentication disallowed without TLS (use STLS)");
                }
                let Some(user) = self.user.take() else {
                    return self.err("USER first");
                };
                // RFC 1939: the password may contain spaces.
                let password = rest.unwrap_or("");
                let mut message =
                    Zeroizing::new(Vec::with_capacity(user.len() + password.len() + 2));
                message.push(0);
                message.extend_from_slice(user.as_bytes());
                message.push(0);
                message.extend_from_slice(password.as_bytes());
                // PLAIN's checks (UTF-8, SASLprep) apply to PASS too; no
                // nonce or server secret is needed.
                let ctx = StartContext::new(&[], "", 0, &[]);
                let auth = ServerAuth::start(Mechanism::Plain, Some(&message), ctx);
                self.drive_auth(Box::new(auth));
            }
            "AUTH" if authorization => {
                let Some(name) = args.first().filter(|a| !a.is_empty()) else {
                    // The mechanism list (not in RFC 5034; what clients probe with).
                    self.ok("Mechanisms follow");
                    if self.plaintext_ok() {
                        let names: Vec<&'static str> =
                            self.config.mechanisms.iter().map(|m| m.name()).collect();
                        for n in names {
                            self.line(n);
                        }
                    }
                    self.out.extend_from_slice(MULTILINE_END);
                    return;
                };
                if args.len() > 2 {
                    return self.err("AUTH takes a mechanism and an initial response");
                }
                let mech =
                    Mechanism::from_name(name).filter(|m| self.config.mechanisms.contains(m));
                let Some(mech) = mech else {
                    return self.err("Unsupported mechanism");
                };
                if !self.plaintext_ok() {
                    return self.err("[AUTH] Authentication disallowed without TLS (use STLS)");
                }
                self.user = None;
                self.auth_mechanism = Some(mech);
                let initial = match args.get(1) {
                    None => None,
                    Some(&"=") => Some(Zeroizing::new(Vec::new())),
                    Some(b64) => match STANDARD.decode(b64) {
                        Ok(d) => Some(Zeroizing::new(d)),
                        Err(_) => {
                            self.events.push_back(Event::AuthFailed {
                                kind: FailureKind::Malformed,
                            });
                            return self.err("Invalid base64 in the initial response");
                        }
                    },
                };
                self.mode = Mode::AuthStart {
                    mechanism: mech,
                    initial,
                };
                self.events.push_back(Event::AuthStart { mechanism: mech });
            }
            "STLS" | "USER" | "PASS" | "AUTH" => self.err("Already authenticated"),
            "STAT" | "LIST" | "RETR" | "DELE" | "NOOP" | "RSET" | "TOP" | "UIDL"
                if authorization =>
            {
                self.err("Not authenticated")
            }
            "STAT" => {
                let (n, octets) = self.totals();
                self.ok(&format!("{n} {octets}"));
            }
            "LIST" | "UIDL" => {
                let uidl = verb == "UIDL";
                if args.len() > 1 {
                    return self.err("Too many arguments");
                }
                if rest.is_some() {
                    let Some(n) = self.message(args.first().copied()) else {
                        return;
                    };
                    let m = &self.messages[n as usize - 1];
                    let text = if uidl {
                        format!("{n} {}", m.uidl)
                    } else {
                        format!("{n} {}", m.size)
                    };
                    return self.ok(&text);
                }
                if uidl {
                    self.ok("Unique-ID listing follows");
                } else {
                    let (n, octets) = self.totals();
                    self.ok(&format!("{n} messages ({octets} octets)"));
                }
                let mut listing = Vec::new();
                for (i, (m, d)) in self.messages.iter().zip(&self.deleted).enumerate() {
                    if *d {
                        continue;
                    }
                    let l = if uidl {
                        format!("{} {}\r\n", i + 1, m.uidl)
                    } else {
                        format!("{} {}\r\n", i + 1, m.size)
                    };
                    listing.extend_from_slice(l.as_bytes());
                }
                self.out.extend_from_slice(&listing);
                self.out.extend_from_slice(MULTILINE_END);
            }
            "RETR" => {
                if args.len() > 1 {
                    return self.err("Too many arguments");
                }
                let Some(n) = self.message(args.first().copied()) else {
                    return;
                };
                self.mode = Mode::Retrieving {
                    number: n,
                    lines: None,
                };
                self.events.push_back(Event::Retrieve {
                    number: n,
                    lines: None,
                });
            }
            "TOP" => {
                if args.len() != 2 {
                    return self.err("TOP needs a message number and a line count");
                }
                let Some(n) = self.message(args.first().copied()) else {
                    return;
                };
                let lines = match args[1].parse::<u64>() {
                    Ok(l) if args[1].bytes().all(|b| b.is_ascii_digit()) => l,
                    _ => return self.err("Invalid line count"),
                };
                self.mode = Mode::Retrieving {
                    number: n,
                    lines: Some(lines),
                };
                self.events.push_back(Event::Retrieve {
                    number: n,
                    lines: Some(lines),
                });
            }
            "DELE" => {
                if args.len() > 1 {
                    return self.err("Too many arguments");
                }
                let Some(n) = self.message(args.first().copied()) else {
                    return;
                };
                self.deleted[n as usize - 1] = true;
                self.ok(&format!("Message {n} deleted"));
            }
            "RSET" => {
                self.deleted.iter_mut().for_each(|d| *d = false);
                let (n, octets) = self.totals();
                self.ok(&format!("{n} messages ({octets} octets)"));
            }
            _ => self.err("Unknown command"),
        }
    }
}

#[cfg(test)]
mod tests;
