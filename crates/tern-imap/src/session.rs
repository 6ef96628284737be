//! The IMAP server session: a sans-IO state machine (RFC 9051 / RFC 3501
//! states NOT AUTHENTICATED → AUTHENTICATED → SELECTED → LOGOUT).
//!
//! [`Session`] takes the client's bytes, frames and parses them, answers
//! what it can answer alone (CAPABILITY, NOOP, LOGOUT, STARTTLS, ENABLE,
//! ID, NAMESPACE, IDLE, COMPRESS, commands given in the wrong state) and
//! turns the rest into [`Event`]s: SASL questions for the user directory,
//! and typed mailbox [`Request`]s for the mail store. It never touches a
//! socket, a clock or a file.
//!
//! # Call order
//!
//! 1. [`Session::new`], then [`Session::greet`].
//! 2. Loop: [`Session::handle_input`] with the bytes read; then
//!    [`Session::poll_event`] until `None`, acting on each event:
//!    - [`Event::AuthStart`]: call [`Session::auth_begin`] with a
//!      [`StartContext`] (fresh nonce, host name, time, server secret).
//!    - [`Event::Auth`]: ask the directory, then [`Session::auth_answer`].
//!    - [`Event::Request`]: run it against the store, write its untagged
//!      data with [`Session::send`] and end it with [`Session::finish`].
//!    - [`Event::StartTls`]: write out [`Session::take_output`], run the
//!      TLS handshake, then call [`Session::tls_established`]. Bytes read
//!      before the handshake are never to be fed in (the session already
//!      dropped those it had, CVE-2011-0411).
//!    - [`Event::Compress`]: write out the output (the OK goes
//!      uncompressed), then compress both directions; inflate the
//!      event's `pending` bytes and feed them back.
//!    - [`Event::Close`]: write out the output and close the connection.
//! 3. Write [`Session::take_output`] to the socket whenever it is not empty.
//!
//! Only one command is in flight: while a request or a SASL question is
//! pending, later pipelined commands wait in the framer. Unsolicited data
//! (new mail during IDLE) may be written with [`Session::send`] at any
//! time; [`Session::keepalive`] writes IDLE's periodic `* OK`.
//!
//! ```
//! use tern_imap::response::{Code, Data, Response};
//! use tern_imap::session::{AuthQuestion, Completion, Event, RequestKind, Session, SessionConfig};
//! use tern_sasl::Answer;
//!
//! // Implicit TLS (993): LOGIN is allowed at once.
//! let mut s = Session::new(SessionConfig::default(), true);
//! s.greet();
//! s.handle_input(b"a1 LOGIN alice secret\r\na2 SELECT INBOX\r\n");
//! while let Some(event) = s.poll_event() {
//!     match event {
//!         Event::Auth(AuthQuestion::VerifyPassword { authcid, password }) => {
//!             // Ask the user directory (with a hash, in real life).
//!             s.auth_answer(Answer::PasswordOk(authcid == "alice" && password.as_str() == "secret"));
//!         }
//!         Event::Request(r) => {
//!             assert!(matches!(r.kind, RequestKind::Select { .. }));
//!             s.send(&Response::Data(Data::Exists(0)));
//!             s.finish(Completion::ok(Some(Code::ReadWrite), "SELECT completed"));
//!         }
//!         _ => {}
//!     }
//! }
//! let out = String::from_utf8(s.take_output()).unwrap();
//! assert!(out.starts_with("* OK [CAPABILITY IMAP4rev1 IMAP4rev2"));
//! assert!(out.contains("a1 OK [CAPABILITY "));
//! assert!(out.ends_with("* 0 EXISTS\r\na2 OK [READ-WRITE] SELECT completed\r\n"));
//! ```
//!
//! Decisions:
//! * A command valid in no state or in another state gets a tagged BAD;
//!   `max_bad_commands` BADs in a row end the session with `* BYE`.
//! * Before TLS, unless `plaintext_auth_allowed`, CAPABILITY shows
//!   `LOGINDISABLED` and no `AUTH=`, and LOGIN and AUTHENTICATE get
//!   `NO [PRIVACYREQUIRED]`.
//! * STARTTLS drops every byte received after its line, and ignores input
//!   until [`Session::tls_established`].
//! * An authorization identity different from the authenticated one is
//!   refused (`NO [AUTHORIZATIONFAILED]`): no proxy logins yet.
//! * Literals before authentication are bounded by
//!   [`SessionConfig::before_auth`] (small), after by `after_auth`.
//! * Mailbox names reach the store as UTF-8: decoded from modified UTF-7
//!   unless the client enabled UTF8=ACCEPT or IMAP4rev2. A name that does
//!   not decode gets a BAD.

use std::collections::VecDeque;
use std::sync::Arc;

use tern_sasl::{Answer, FailureKind, Mechanism, Password, ServerAuth, StartContext, Step, Token};
use zeroize::Zeroizing;

use crate::command::*;
use crate::framing::{Expect, Frame, FrameError, Framer, FramingLimits};
use crate::parse::{
    AuthLine, CommandError, ParseError, is_idle_done, parse_auth_line, parse_command,
};
use crate::response::*;
use crate::types::{Atom, Mailbox, SequenceSet, StatusItem, Tag};

/// The extensions advertised after authentication, besides `IMAP4rev1`,
/// `IMAP4rev2`, `LITERAL+`/`LITERAL-`, `APPENDLIMIT=n` and `COMPRESS`.
pub const DEFAULT_CAPABILITIES: &[&str] = &[
    "ENABLE",
    "ID",
    "IDLE",
    "NAMESPACE",
    "SASL-IR",
    "UNSELECT",
    "UIDPLUS",
    "MOVE",
    "CHILDREN",
    "LIST-EXTENDED",
    "LIST-STATUS",
    "SPECIAL-USE",
    "CREATE-SPECIAL-USE",
    "ESEARCH",
    "SEARCHRES",
    "CONDSTORE",
    "QRESYNC",
    "BINARY",
    "STATUS=SIZE",
    "MULTIAPPEND",
    "QUOTA",
    "QUOTA=RES-STORAGE",
    "SORT",
    "THREAD=ORDEREDSUBJECT",
    "THREAD=REFERENCES",
    "UTF8=ACCEPT",
    "SAVEDATE",
    "OBJECTID",
];

/// The SEARCH/SORT/THREAD charsets the session lets through to the store
/// (RFC 9051 §6.4.4: others get `NO [BADCHARSET (...)]`).
pub const SEARCH_CHARSETS: &[&str] = &["US-ASCII", "UTF-8"];

fn known_charset(c: &[u8]) -> bool {
    SEARCH_CHARSETS
        .iter()
        .any(|k| k.as_bytes().eq_ignore_ascii_case(c))
}

/// How a session is set up.
#[derive(Debug, Clone)]
pub struct SessionConfig {
    /// Framing limits before authentication (keep literals small).
    pub before_auth: FramingLimits,
    /// Framing limits after authentication; `max_literal` is the
    /// advertised APPENDLIMIT.
    pub after_auth: FramingLimits,
    /// SASL mechanisms offered, in order.
    pub mechanisms: Vec<Mechanism>,
    /// Allow LOGIN and AUTHENTICATE without TLS (tests, localhost).
    pub plaintext_auth_allowed: bool,
    /// Offer STARTTLS (a certificate is configured and the connection is
    /// not implicit TLS).
    pub starttls: bool,
    /// Offer COMPRESS=DEFLATE.
    pub compress: bool,
    /// Extensions advertised after authentication.
    pub capabilities: Vec<String>,
    /// The greeting text.
    pub greeting: String,
    /// Our ID fields (RFC 2971).
    pub id: Vec<(String, String)>,
    /// Hierarchy delimiter (NAMESPACE).
    pub delimiter: char,
    /// Tagged BADs in a row before `* BYE`.
    pub max_bad_commands: u32,
}

impl Default for SessionConfig {
    fn default() -> Self {
        SessionConfig {
            before_auth: FramingLimits {
                max_line: 8 * 1024,
                max_literal: 8 * 1024,
                max_command: 16 * 1024,
                ..FramingLimits::default()
            },
            after_auth: FramingLimits::default(),
            mechanisms: vec![Mechanism::Plain, Mechanism::Login, Mechanism::ScramSha256],
            plaintext_auth_allowed: false,
            starttls: true,
            compress: true,
            capabilities: DEFAULT_CAPABILITIES.iter().map(|s| s.to_string()).collect(),
            greeting: "Tern IMAP ready".into(),
            id: vec![("name".into(), "Tern".into())],
            delimiter: '/',
            max_bad_commands: 20,
        }
    }
}

/// The protocol state (RFC 9051 §3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionState {
    /// Before LOGIN/AUTHENTICATE.
    NotAuthenticated,
    /// Logged in, no mailbox selected.
    Authenticated,
    /// A mailbox is selected.
    Selected,
    /// LOGOUT (or BYE) was sent; the connection is to be closed.
    Logout,
}

/// Which client timer applies now; the driver maps each to a duration
/// (RFC 9051 §5.4: at least 30 minutes once authenticated).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeoutClass {
    /// Waiting for a command before authentication (short: a minute or so).
    NotAuthenticated,
    /// Waiting for a command, or the rest of one, after authentication
    /// (30 minutes).
    Command,
    /// In IDLE: keepalives every few minutes, the session ends after the
    /// IDLE limit (clients re-issue IDLE every 29 minutes).
    Idle,
    /// Waiting for the TLS handshake after STARTTLS (short).
    TlsHandshake,
    /// Waiting for the driver (a request or a SASL question): no client
    /// timer runs.
    Driver,
    /// LOGOUT or BYE sent: close.
    Closed,
}

/// What the client turned on with ENABLE (or implicitly).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Enabled {
    /// CONDSTORE (RFC 7162), also turned on by its first use.
    pub condstore: bool,
    /// QRESYNC (RFC 7162).
    pub qresync: bool,
    /// UTF8=ACCEPT (RFC 6855).
    pub utf8_accept: bool,
    /// IMAP4rev2 (RFC 9051).
    pub imap4rev2: bool,
}

impl Enabled {
    /// Mailbox names and quoted strings are UTF-8.
    pub fn utf8(&self) -> bool {
        self.utf8_accept || self.imap4rev2
    }
}

/// The selected mailbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SelectedMailbox {
    /// Its UTF-8 name.
    pub name: String,
    /// EXAMINE rather than SELECT.
    pub read_only: bool,
}

/// A question for the user directory during a SASL exchange (or LOGIN).
/// Answer with [`Session::auth_answer`].
#[derive(Debug)]
#[non_exhaustive]
pub enum AuthQuestion {
    /// Check this password; answer [`Answer::PasswordOk`].
    VerifyPassword {
        /// The user name.
        authcid: String,
        /// The password (redacted in `Debug`).
        password: Password,
    },
    /// CRAM-MD5: answer [`Answer::Cram`].
    LookupCram {
        /// The user name.
        authcid: String,
    },
    /// SCRAM-SHA-256: answer [`Answer::Scram`].
    LookupScram {
        /// The user name.
        authcid: String,
    },
    /// OAUTHBEARER/XOAUTH2: answer [`Answer::Token`].
    VerifyToken {
        /// The bearer token (redacted in `Debug`).
        token: Token,
        /// The user the client claims to be (not proven).
        user_hint: Option<String>,
    },
}

/// A mailbox operation for the store. Answer with [`Session::send`] (its
/// untagged data) and [`Session::finish`] (its completion).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// The command's tag (for ESEARCH's `(TAG "...")`).
    pub tag: Tag,
    /// The authenticated user.
    pub user: String,
    /// The selected mailbox, if any (after an implicit close by SELECT,
    /// `None`).
    pub selected: Option<SelectedMailbox>,
    /// What the client enabled.
    pub enabled: Enabled,
    /// What to do.
    pub kind: RequestKind,
}

/// The mailbox operations. Mailbox names are UTF-8.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum RequestKind {
    /// SELECT or EXAMINE: send FLAGS, EXISTS, the OK codes (UIDVALIDITY,
    /// UIDNEXT, PERMANENTFLAGS, HIGHESTMODSEQ), VANISHED/FETCH for
    /// QRESYNC; finish OK `[READ-WRITE]`/`[READ-ONLY]` or NO.
    Select {
        /// The mailbox.
        mailbox: String,
        /// EXAMINE.
        read_only: bool,
        /// CONDSTORE/QRESYNC parameters.
        params: SelectParams,
    },
    /// CREATE.
    Create {
        /// The mailbox.
        mailbox: String,
        /// Special-use attributes (without `\`).
        special_use: Vec<Atom>,
    },
    /// DELETE.
    Delete {
        /// The mailbox.
        mailbox: String,
    },
    /// RENAME.
    Rename {
        /// Old name.
        from: String,
        /// New name.
        to: String,
    },
    /// SUBSCRIBE (`true`) or UNSUBSCRIBE.
    Subscribe {
        /// The mailbox.
        mailbox: String,
        /// Subscribe rather than unsubscribe.
        subscribe: bool,
    },
    /// LIST or LSUB.
    List {
        /// LSUB (IMAP4rev1).
        lsub: bool,
        /// Reference.
        reference: String,
        /// Patterns (UTF-8).
        patterns: Vec<String>,
        /// Selection options.
        selection: Vec<ListSelect>,
        /// Return options.
        returns: Vec<ListReturn>,
        /// Extended syntax used.
        extended: bool,
    },
    /// STATUS.
    Status {
        /// The mailbox.
        mailbox: String,
        /// Items.
        items: Vec<StatusItem>,
    },
    /// APPEND (one or more messages).
    Append {
        /// Target.
        mailbox: String,
        /// Messages.
        messages: Vec<AppendMessage>,
    },
    /// NOOP or CHECK with a mailbox selected: report pending updates.
    Poll,
    /// CLOSE (`expunge`: remove `\Deleted` messages silently) or UNSELECT.
    Close {
        /// CLOSE on a read-write mailbox.
        expunge: bool,
    },
    /// EXPUNGE, or UID EXPUNGE with `uids`.
    Expunge {
        /// UID EXPUNGE's set.
        uids: Option<SequenceSet>,
    },
    /// SEARCH / UID SEARCH.
    Search {
        /// UIDs.
        uid: bool,
        /// ESEARCH options.
        returns: Option<Vec<SearchReturn>>,
        /// Charset.
        charset: Option<Vec<u8>>,
        /// Criteria.
        criteria: Vec<SearchKey>,
    },
    /// FETCH / UID FETCH.
    Fetch {
        /// UIDs.
        uid: bool,
        /// Messages.
        set: SequenceSet,
        /// Items.
        items: FetchItems,
        /// CHANGEDSINCE.
        changed_since: Option<u64>,
        /// VANISHED.
        vanished: bool,
    },
    /// STORE / UID STORE.
    Store {
        /// UIDs.
        uid: bool,
        /// Messages.
        set: SequenceSet,
        /// UNCHANGEDSINCE.
        unchanged_since: Option<u64>,
        /// Mode.
        mode: StoreMode,
        /// .SILENT.
        silent: bool,
        /// Flags.
        flags: Vec<crate::types::Flag>,
    },
    /// COPY or MOVE (with or without UID).
    Copy {
        /// UIDs.
        uid: bool,
        /// MOVE rather than COPY.
        is_move: bool,
        /// Messages.
        set: SequenceSet,
        /// Target.
        mailbox: String,
    },
    /// SORT.
    Sort {
        /// UIDs.
        uid: bool,
        /// Keys.
        criteria: Vec<SortCriterion>,
        /// Charset.
        charset: Vec<u8>,
        /// Search.
        search: Vec<SearchKey>,
    },
    /// THREAD.
    Thread {
        /// UIDs.
        uid: bool,
        /// Algorithm.
        algorithm: ThreadAlgorithm,
        /// Charset.
        charset: Vec<u8>,
        /// Search.
        search: Vec<SearchKey>,
    },
    /// GETQUOTA.
    GetQuota {
        /// Root.
        root: Vec<u8>,
    },
    /// GETQUOTAROOT.
    GetQuotaRoot {
        /// The mailbox.
        mailbox: String,
    },
}

/// What the session asks of the driver.
#[derive(Debug)]
#[non_exhaustive]
pub enum Event {
    /// Write the output, start TLS, then [`Session::tls_established`].
    StartTls,
    /// An AUTHENTICATE with a configured mechanism: call
    /// [`Session::auth_begin`].
    AuthStart {
        /// The mechanism.
        mechanism: Mechanism,
    },
    /// Answer with [`Session::auth_answer`].
    Auth(AuthQuestion),
    /// LOGIN or AUTHENTICATE succeeded.
    Authenticated {
        /// The user.
        user: String,
    },
    /// LOGIN or AUTHENTICATE failed (feed the brute-force tracker).
    AuthFailed {
        /// Why.
        kind: FailureKind,
    },
    /// A mailbox operation: [`Session::send`] then [`Session::finish`].
    Request(Request),
    /// IDLE started: push updates with [`Session::send`], keepalives with
    /// [`Session::keepalive`].
    IdleStart,
    /// IDLE ended.
    IdleDone,
    /// COMPRESS DEFLATE accepted: write the output, then compress; the
    /// `pending` bytes were received after the command and are already
    /// compressed.
    Compress {
        /// Received, not yet framed, compressed bytes.
        pending: Vec<u8>,
    },
    /// The client's ID (for logs).
    ClientId(Option<Vec<IdParam>>),
    /// Write the output and close the connection.
    Close,
}

/// How a request ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Completion {
    /// OK, NO or BAD.
    pub kind: StatusKind,
    /// Response code.
    pub code: Option<Code>,
    /// Text.
    pub text: String,
}

impl Completion {
    /// OK with text.
    pub fn ok(code: Option<Code>, text: impl Into<String>) -> Self {
        Completion {
            kind: StatusKind::Ok,
            code,
            text: text.into(),
        }
    }

    /// NO with text.
    pub fn no(code: Option<Code>, text: impl Into<String>) -> Self {
        Completion {
            kind: StatusKind::No,
            code,
            text: text.into(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pending {
    Select,
    Close,
    Other,
}

#[derive(Debug)]
enum Mode {
    Ready,
    AwaitingTls,
    AuthStart {
        tag: Tag,
        mechanism: Mechanism,
        initial: Option<Zeroizing<Vec<u8>>>,
    },
    AuthClient {
        tag: Tag,
        auth: Box<ServerAuth>,
    },
    AuthAnswer {
        tag: Tag,
        auth: Box<ServerAuth>,
    },
    Request {
        tag: Tag,
        pending: Pending,
        select: Option<SelectedMailbox>,
    },
    Idle {
        tag: Tag,
    },
    Logout,
}

/// One IMAP server connection; see the [module docs](self) for the call
/// order.
#[derive(Debug)]
pub struct Session {
    config: Arc<SessionConfig>,
    framer: Framer,
    mode: Mode,
    tls: bool,
    compressed: bool,
    user: Option<String>,
    /// The mechanism of the latest exchange ([`Session::auth_mechanism`]).
    auth_mechanism: Option<Mechanism>,
    selected: Option<SelectedMailbox>,
    enabled: Enabled,
    bad: u32,
    out: Vec<u8>,
    events: VecDeque<Event>,
}

fn tagged(tag: &Tag, kind: StatusKind, code: Option<Code>, text: &str) -> Response<'static> {
    Response::Status(StatusResponse::tagged(tag.clone(), kind, code, text))
}

impl Session {
    /// A session on a connection; `tls` when it is implicit TLS (993).
    /// The configuration may be shared by every session of a listener
    /// (`Arc<SessionConfig>`): a server with many idle sessions keeps one
    /// copy of its capability list.
    pub fn new(config: impl Into<Arc<SessionConfig>>, tls: bool) -> Session {
        let config = config.into();
        let framer = Framer::new(config.before_auth);
        Session {
            config,
            framer,
            mode: Mode::Ready,
            tls,
            compressed: false,
            user: None,
            auth_mechanism: None,
            selected: None,
            enabled: Enabled::default(),
            bad: 0,
            out: Vec::new(),
            events: VecDeque::new(),
        }
    }

    /// Queue the greeting.
    pub fn greet(&mut self) {
        let caps = self.capabilities();
        let text = self.config.greeting.clone();
        self.write(&Response::Status(StatusResponse::untagged(
            StatusKind::Ok,
            Some(Code::Capability(caps)),
            text,
        )));
    }

    /// The protocol state.
    pub fn state(&self) -> SessionState {
        if matches!(self.mode, Mode::Logout) {
            SessionState::Logout
        } else if self.selected.is_some() {
            SessionState::Selected
        } else if self.user.is_some() {
            SessionState::Authenticated
        } else {
            SessionState::NotAuthenticated
        }
    }

    /// What the client enabled.
    pub fn enabled(&self) -> Enabled {
        self.enabled
    }

    /// Whether the connection is under TLS.
    pub fn is_tls(&self) -> bool {
        self.tls
    }

    /// The authenticated user.
    pub fn user(&self) -> Option<&str> {
        self.user.as_deref()
    }

    /// The SASL mechanism of the latest authentication exchange, started or
    /// refused after its mechanism was known (`LOGIN` commands run `PLAIN`); `None`
    /// before any. Drivers label their authentication metrics with it.
    pub fn auth_mechanism(&self) -> Option<Mechanism> {
        self.auth_mechanism
    }

    /// The selected mailbox.
    pub fn selected(&self) -> Option<&SelectedMailbox> {
        self.selected.as_ref()
    }

    /// Which timer the driver should run while waiting for the client.
    pub fn timeout_class(&self) -> TimeoutClass {
        match self.mode {
            Mode::Logout => TimeoutClass::Closed,
            Mode::AwaitingTls => TimeoutClass::TlsHandshake,
            Mode::Idle { .. } => TimeoutClass::Idle,
            Mode::AuthStart { .. } | Mode::AuthAnswer { .. } | Mode::Request { .. } => {
                TimeoutClass::Driver
            }
            Mode::AuthClient { .. } => TimeoutClass::NotAuthenticated,
            Mode::Ready if self.user.is_none() => TimeoutClass::NotAuthenticated,
            Mode::Ready => TimeoutClass::Command,
        }
    }

    /// Whether the session waits in IDLE.
    pub fn is_idle(&self) -> bool {
        matches!(self.mode, Mode::Idle { .. })
    }

    /// The encode options for the client (for drivers that encode large
    /// FETCH responses themselves).
    pub fn encode_options(&self) -> EncodeOptions {
        EncodeOptions {
            utf8: self.enabled.utf8(),
        }
    }

    /// The capability list for the current state.
    pub fn capabilities(&self) -> Vec<String> {
        let mut caps = vec!["IMAP4rev1".to_string(), "IMAP4rev2".to_string()];
        caps.push(
            match self.config.after_auth.literal_plus {
                crate::framing::LiteralPlus::Plus => "LITERAL+",
                crate::framing::LiteralPlus::Minus => "LITERAL-",
            }
            .into(),
        );
        if self.user.is_none() {
            if self.config.starttls && !self.tls {
                caps.push("STARTTLS".into());
            }
            if self.tls || self.config.plaintext_auth_allowed {
                caps.extend(
                    self.config
                        .mechanisms
                        .iter()
                        .map(|m| format!("AUTH={}", m.name())),
                );
            } else {
                caps.push("LOGINDISABLED".into());
            }
            caps.extend(["SASL-IR", "ID", "ENABLE", "IDLE"].map(String::from));
        } else {
            caps.extend(self.config.capabilities.iter().cloned());
            caps.push(format!(
                "APPENDLIMIT={}",
                self.config.after_auth.max_literal
            ));
            if self.config.compress && !self.compressed {
                caps.push("COMPRESS=DEFLATE".into());
            }
        }
        caps
    }

    /// Feed bytes read from the client.
    pub fn handle_input(&mut self, bytes: &[u8]) {
        match self.mode {
            // Nothing read before the handshake or after LOGOUT counts.
            Mode::AwaitingTls | Mode::Logout => {}
            _ => {
                self.framer.push(bytes);
                self.process();
            }
        }
    }

    /// The next event, if any.
    pub fn poll_event(&mut self) -> Option<Event> {
        let event = self.events.pop_front();
        if self.events.is_empty() && self.events.capacity() > 0 {
            // A session spends most of its life waiting with no event:
            // it keeps no room for them meanwhile.
            self.events = VecDeque::new();
        }
        event
    }

    /// Take the bytes to write to the client.
    pub fn take_output(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.out)
    }

    /// Whether there is output to write.
    pub fn has_output(&self) -> bool {
        !self.out.is_empty()
    }

    /// The TLS handshake after STARTTLS finished: the session forgets all
    /// it learned in plaintext and reads commands again.
    pub fn tls_established(&mut self) {
        if matches!(self.mode, Mode::AwaitingTls) {
            self.tls = true;
            self.framer.discard_buffered();
            self.mode = Mode::Ready;
        }
    }

    /// Write untagged data (a request's results, or unsolicited updates).
    /// Dropped while a STARTTLS handshake is pending and after LOGOUT.
    pub fn send(&mut self, r: &Response<'_>) {
        // Nothing goes out between STARTTLS's OK and the handshake, nor
        // after BYE.
        if !matches!(self.mode, Mode::Logout | Mode::AwaitingTls) {
            self.write(r);
        }
    }

    /// During IDLE, write a `* OK` so NATs keep the connection; returns
    /// whether it was written.
    pub fn keepalive(&mut self) -> bool {
        if self.is_idle() {
            self.write(&Response::Status(StatusResponse::untagged(
                StatusKind::Ok,
                None,
                "Still here",
            )));
            true
        } else {
            false
        }
    }

    /// End the pending request. Ignored if none is pending.
    pub fn finish(&mut self, c: Completion) {
        let (tag, pending, select) = match std::mem::replace(&mut self.mode, Mode::Ready) {
            Mode::Request {
                tag,
                pending,
                select,
            } => (tag, pending, select),
            other => {
                self.mode = other;
                return;
            }
        };
        match (pending, c.kind) {
            (Pending::Select, StatusKind::Ok) => self.selected = select,
            (Pending::Select, _) => self.selected = None,
            (Pending::Close, StatusKind::Ok) => self.selected = None,
            _ => {}
        }
        if c.kind == StatusKind::Bad {
            self.bad += 1;
        } else {
            self.bad = 0;
        }
        self.write(&tagged(&tag, c.kind, c.code, &c.text));
        self.process();
    }

    /// Answer [`Event::AuthStart`]: start the SASL exchange. Ignored
    /// unless an AuthStart is pending.
    pub fn auth_begin(&mut self, ctx: StartContext<'_>) {
        let (tag, mechanism, initial) = match std::mem::replace(&mut self.mode, Mode::Ready) {
            Mode::AuthStart {
                tag,
                mechanism,
                initial,
            } => (tag, mechanism, initial),
            other => {
                self.mode = other;
                return;
            }
        };
        let auth = ServerAuth::start(mechanism, initial.as_ref().map(|b| b.as_slice()), ctx);
        self.drive_auth(tag, Box::new(auth));
        self.process();
    }

    /// Answer an [`Event::Auth`] question. Ignored unless one is pending.
    pub fn auth_answer(&mut self, answer: Answer) {
        let (tag, mut auth) = match std::mem::replace(&mut self.mode, Mode::Ready) {
            Mode::AuthAnswer { tag, auth } => (tag, auth),
            other => {
                self.mode = other;
                return;
            }
        };
        auth.provide(answer);
        self.drive_auth(tag, auth);
        self.process();
    }

    // ---- internals --------------------------------------------------
    //
    // Only the public entry points call `process`; the handlers below never
    // do, so a long run of pipelined commands is a loop, not a recursion.

    fn write(&mut self, r: &Response<'_>) {
        r.encode(self.encode_options(), &mut self.out);
    }

    fn bad(&mut self, tag: Option<&Tag>, text: &str) {
        self.bad += 1;
        let r = Response::Status(StatusResponse {
            tag: tag.cloned(),
            kind: StatusKind::Bad,
            code: None,
            text: text.into(),
        });
        self.write(&r);
        if self.bad >= self.config.max_bad_commands {
            self.bye("Too many invalid commands");
        }
    }

    fn bye(&mut self, text: &str) {
        self.write(&Response::Status(StatusResponse::untagged(
            StatusKind::Bye,
            None,
            text,
        )));
        self.mode = Mode::Logout;
        self.events.push_back(Event::Close);
    }

    fn process(&mut self) {
        loop {
            let expect = match self.mode {
                Mode::Ready => Expect::Command,
                Mode::AuthClient { .. } | Mode::Idle { .. } => Expect::Line,
                _ => return,
            };
            let Some(frame) = self.framer.next(expect) else {
                return;
            };
            match frame {
                Frame::Continue => {
                    self.write(&Response::Continue(Continuation::Text(
                        "Ready for literal data".into(),
                    )));
                }
                Frame::Rejected { tag, error } => self.rejected(tag, error),
                Frame::Line(line) => self.line(&line),
                // A LOGIN command holds a password: wipe it when done.
                Frame::Command(bytes) => match parse_command(&Zeroizing::new(bytes)) {
                    Ok(cmd) => self.command(cmd),
                    Err(CommandError { tag, error }) => {
                        let text = match error {
                            ParseError::UnknownCommand => "Unknown command".to_string(),
                            ParseError::Tag => "Missing or invalid tag".to_string(),
                            e => format!("Invalid arguments: {e}"),
                        };
                        self.bad(tag.as_ref(), &text);
                    }
                },
            }
        }
    }

    fn rejected(&mut self, tag: Option<Vec<u8>>, error: FrameError) {
        match std::mem::replace(&mut self.mode, Mode::Ready) {
            Mode::AuthClient { tag, mut auth } => {
                // An over-long SASL response.
                auth.cancel();
                self.auth_failed(&tag, FailureKind::ResponseTooLong, StatusKind::Bad);
            }
            Mode::Idle { tag } => {
                self.events.push_back(Event::IdleDone);
                self.bad(Some(&tag), "Expected DONE");
            }
            m => {
                self.mode = m;
                let tag = tag.and_then(|t| Tag::from_bytes(&t).ok());
                if error.is_too_big() {
                    self.write(&Response::Status(StatusResponse {
                        tag,
                        kind: StatusKind::No,
                        code: Some(Code::TooBig),
                        text: format!("Command refused: {error}"),
                    }));
                } else {
                    self.bad(tag.as_ref(), &format!("Command refused: {error}"));
                }
            }
        }
    }

    fn line(&mut self, line: &[u8]) {
        match std::mem::replace(&mut self.mode, Mode::Ready) {
            Mode::Idle { tag } => {
                self.events.push_back(Event::IdleDone);
                if is_idle_done(line) {
                    self.write(&tagged(&tag, StatusKind::Ok, None, "IDLE terminated"));
                } else {
                    self.bad(Some(&tag), "Expected DONE");
                }
            }
            Mode::AuthClient { tag, mut auth } => {
                match parse_auth_line(line) {
                    Ok(AuthLine::Cancel) => auth.cancel(),
                    Ok(AuthLine::Data(d)) => {
                        let d = Zeroizing::new(d);
                        auth.client_response(&d);
                    }
                    Err(_) => {
                        auth.cancel();
                        self.auth_failed(&tag, FailureKind::Malformed, StatusKind::Bad);
                        return;
                    }
                }
                self.drive_auth(tag, auth);
            }
            m => self.mode = m,
        }
    }

    fn drive_auth(&mut self, tag: Tag, mut auth: Box<ServerAuth>) {
        self.auth_mechanism = Some(auth.mechanism());
        match auth.next() {
            Step::Challenge(c) => {
                self.write(&Response::Continue(Continuation::Base64(c)));
                self.mode = Mode::AuthClient { tag, auth };
            }
            Step::VerifyPassword {
                authcid,
                authzid,
                password,
            } => {
                if authzid.is_some_and(|z| z != authcid) {
                    auth.provide(Answer::Fail(FailureKind::AuthzidNotAllowed));
                    return self.drive_auth(tag, auth);
                }
                self.mode = Mode::AuthAnswer { tag, auth };
                self.events
                    .push_back(Event::Auth(AuthQuestion::VerifyPassword {
                        authcid,
                        password,
                    }));
            }
            Step::LookupCram { authcid } => {
                self.mode = Mode::AuthAnswer { tag, auth };
                self.events
                    .push_back(Event::Auth(AuthQuestion::LookupCram { authcid }));
            }
            Step::LookupScram { authcid, authzid } => {
                if authzid.is_some_and(|z| z != authcid) {
                    auth.provide(Answer::Fail(FailureKind::AuthzidNotAllowed));
                    return self.drive_auth(tag, auth);
                }
                self.mode = Mode::AuthAnswer { tag, auth };
                self.events
                    .push_back(Event::Auth(AuthQuestion::LookupScram { authcid }));
            }
            Step::VerifyToken { token, user_hint } => {
                self.mode = Mode::AuthAnswer { tag, auth };
                self.events
                    .push_back(Event::Auth(AuthQuestion::VerifyToken { token, user_hint }));
            }
            Step::NeedResponse => self.mode = Mode::AuthClient { tag, auth },
            Step::NeedAnswer => self.mode = Mode::AuthAnswer { tag, auth },
            Step::Success { authcid, authzid } => {
                if authzid.is_some_and(|z| z != authcid) {
                    self.auth_failed(&tag, FailureKind::AuthzidNotAllowed, StatusKind::No);
                    return;
                }
                self.user = Some(authcid.clone());
                self.bad = 0;
                self.framer.set_limits(self.config.after_auth);
                self.events
                    .push_back(Event::Authenticated { user: authcid });
                let caps = self.capabilities();
                self.write(&tagged(
                    &tag,
                    StatusKind::Ok,
                    Some(Code::Capability(caps)),
                    "Logged in",
                ));
                self.mode = Mode::Ready;
            }
            Step::Failure(f) => {
                let kind = if f.kind == FailureKind::Malformed {
                    StatusKind::Bad
                } else {
                    StatusKind::No
                };
                self.auth_failed(&tag, f.kind, kind);
            }
        }
    }

    fn auth_failed(&mut self, tag: &Tag, kind: FailureKind, status: StatusKind) {
        self.events.push_back(Event::AuthFailed { kind });
        let (code, text) = match kind {
            FailureKind::Cancelled => (None, "Authentication cancelled"),
            FailureKind::Temporary => (Some(Code::Unavailable), "Temporary authentication failure"),
            FailureKind::AuthzidNotAllowed => (Some(Code::AuthorizationFailed), "Not authorized"),
            FailureKind::Malformed | FailureKind::ResponseTooLong => {
                (None, "Malformed authentication exchange")
            }
            _ => (Some(Code::AuthenticationFailed), "Authentication failed"),
        };
        if status == StatusKind::Bad {
            self.bad(Some(tag), text);
        } else {
            self.write(&tagged(tag, status, code, text));
        }
        if !matches!(self.mode, Mode::Logout) {
            self.mode = Mode::Ready;
        }
    }

    fn mailbox(&self, m: &Mailbox) -> Option<String> {
        m.to_utf8(self.enabled.utf8())
    }

    fn pattern(&self, p: &[u8]) -> Option<String> {
        self.mailbox(&Mailbox::from_bytes(p))
    }

    fn request(
        &mut self,
        tag: Tag,
        kind: RequestKind,
        pending: Pending,
        select: Option<SelectedMailbox>,
    ) {
        let user = self.user.clone().unwrap_or_default();
        self.events.push_back(Event::Request(Request {
            tag: tag.clone(),
            user,
            selected: self.selected.clone(),
            enabled: self.enabled,
            kind,
        }));
        self.mode = Mode::Request {
            tag,
            pending,
            select,
        };
    }

    fn bad_charset(&mut self, tag: &Tag) {
        let code = Code::BadCharset(SEARCH_CHARSETS.iter().map(|s| s.to_string()).collect());
        self.write(&tagged(
            tag,
            StatusKind::No,
            Some(code),
            "Unsupported charset",
        ));
    }

    fn ok(&mut self, tag: &Tag, text: &str) {
        self.bad = 0;
        self.write(&tagged(tag, StatusKind::Ok, None, text));
    }

    fn command(&mut self, cmd: Command) {
        let Command { tag, body } = cmd;
        let body_name = body.name();
        let state = self.state();
        let authed = matches!(state, SessionState::Authenticated | SessionState::Selected);
        let selected = state == SessionState::Selected;
        use CommandBody as C;
        match body {
            // Any state.
            C::Capability => {
                let caps = self.capabilities();
                self.write(&Response::Data(Data::Capability(caps)));
                self.ok(&tag, "CAPABILITY completed");
            }
            C::Noop | C::Check if selected => {
                self.request(tag, RequestKind::Poll, Pending::Other, None)
            }
            C::Noop => self.ok(&tag, "NOOP completed"),
            C::Logout => {
                self.write(&Response::Status(StatusResponse::untagged(
                    StatusKind::Bye,
                    None,
                    "Logging out",
                )));
                self.write(&tagged(&tag, StatusKind::Ok, None, "LOGOUT completed"));
                self.mode = Mode::Logout;
                self.events.push_back(Event::Close);
            }
            C::Id { params } => {
                self.events.push_back(Event::ClientId(params));
                let ours = self
                    .config
                    .id
                    .iter()
                    .map(|(k, v)| (k.clone(), Some(v.clone())))
                    .collect();
                self.write(&Response::Data(Data::Id(Some(ours))));
                self.ok(&tag, "ID completed");
            }
            // Not authenticated.
            C::StartTls if state == SessionState::NotAuthenticated => {
                if self.tls || !self.config.starttls {
                    return self.bad(Some(&tag), "STARTTLS not available");
                }
                self.ok(&tag, "Begin TLS negotiation now");
                self.framer.discard_buffered();
                self.mode = Mode::AwaitingTls;
                self.events.push_back(Event::StartTls);
            }
            C::Login { username, password } if state == SessionState::NotAuthenticated => {
                if !self.tls && !self.config.plaintext_auth_allowed {
                    return self.write(&tagged(
                        &tag,
                        StatusKind::No,
                        Some(Code::PrivacyRequired),
                        "LOGIN needs TLS",
                    ));
                }
                let password = Zeroizing::new(password);
                let mut message =
                    Zeroizing::new(Vec::with_capacity(username.len() + password.len() + 2));
                message.push(0);
                message.extend_from_slice(&username);
                message.push(0);
                message.extend_from_slice(&password);
                // PLAIN's checks (UTF-8, SASLprep) apply to LOGIN too; it
                // needs no nonce or server secret.
                let ctx = StartContext::new(&[], "", 0, &[]);
                let auth = ServerAuth::start(Mechanism::Plain, Some(&message), ctx);
                self.drive_auth(tag, Box::new(auth));
            }
            C::Authenticate {
                mechanism,
                initial_response,
            } if state == SessionState::NotAuthenticated => {
                let mech = Mechanism::from_name(mechanism.as_str())
                    .filter(|m| self.config.mechanisms.contains(m));
                let Some(mech) = mech else {
                    return self.write(&tagged(
                        &tag,
                        StatusKind::No,
                        Some(Code::Cannot),
                        "Unsupported mechanism",
                    ));
                };
                if !self.tls && !self.config.plaintext_auth_allowed {
                    return self.write(&tagged(
                        &tag,
                        StatusKind::No,
                        Some(Code::PrivacyRequired),
                        "AUTHENTICATE needs TLS",
                    ));
                }
                self.mode = Mode::AuthStart {
                    tag,
                    mechanism: mech,
                    initial: initial_response.map(Zeroizing::new),
                };
                self.events.push_back(Event::AuthStart { mechanism: mech });
            }
            C::StartTls | C::Login { .. } | C::Authenticate { .. } => {
                self.bad(Some(&tag), "Already authenticated")
            }
            _ if !authed => self.bad(Some(&tag), "Not authenticated"),
            // Authenticated or selected.
            C::Enable { capabilities } => {
                if selected {
                    return self.bad(Some(&tag), "ENABLE is not allowed with a mailbox selected");
                }
                let mut newly = Vec::new();
                for c in capabilities {
                    let name = c.as_str().to_ascii_uppercase();
                    let flag = match name.as_str() {
                        "CONDSTORE" => &mut self.enabled.condstore,
                        "QRESYNC" => &mut self.enabled.qresync,
                        "UTF8=ACCEPT" => &mut self.enabled.utf8_accept,
                        "IMAP4REV2" => &mut self.enabled.imap4rev2,
                        _ => continue,
                    };
                    if !*flag {
                        *flag = true;
                        newly.push(if name == "IMAP4REV2" {
                            "IMAP4rev2".to_string()
                        } else {
                            name
                        });
                    }
                }
                if self.enabled.qresync {
                    self.enabled.condstore = true;
                }
                self.write(&Response::Data(Data::Enabled(newly)));
                self.ok(&tag, "ENABLE completed");
            }
            C::Namespace => {
                let personal = vec![NamespaceDesc {
                    prefix: Vec::new(),
                    delimiter: Some(self.config.delimiter),
                }];
                self.write(&Response::Data(Data::Namespace {
                    personal,
                    other: vec![],
                    shared: vec![],
                }));
                self.ok(&tag, "NAMESPACE completed");
            }
            C::Idle => {
                self.write(&Response::Continue(Continuation::Text("idling".into())));
                self.mode = Mode::Idle { tag };
                self.events.push_back(Event::IdleStart);
            }
            C::Compress { algorithm } => {
                if !self.config.compress || !algorithm.eq_ignore_case("DEFLATE") {
                    return self.bad(Some(&tag), "Unknown compression mechanism");
                }
                if self.compressed {
                    return self.write(&tagged(
                        &tag,
                        StatusKind::No,
                        Some(Code::CompressionActive),
                        "Already compressed",
                    ));
                }
                self.ok(&tag, "DEFLATE active");
                self.compressed = true;
                let pending = self.framer.take_buffered();
                self.events.push_back(Event::Compress { pending });
            }
            C::SetQuota { .. } => self.write(&tagged(
                &tag,
                StatusKind::No,
                Some(Code::NoPerm),
                "Quotas are set by the administrator",
            )),
            C::Select {
                mailbox,
                read_only,
                params,
            } => {
                let Some(name) = self.mailbox(&mailbox) else {
                    return self.bad(Some(&tag), "Invalid mailbox name");
                };
                if params.qresync.is_some() && !self.enabled.qresync {
                    return self.bad(Some(&tag), "QRESYNC is not enabled");
                }
                if params.condstore || params.qresync.is_some() {
                    self.enabled.condstore = true;
                }
                if self.selected.take().is_some() {
                    self.write(&Response::Status(StatusResponse::untagged(
                        StatusKind::Ok,
                        Some(Code::Closed),
                        "Previous mailbox closed",
                    )));
                }
                let sel = SelectedMailbox {
                    name: name.clone(),
                    read_only,
                };
                self.request(
                    tag,
                    RequestKind::Select {
                        mailbox: name,
                        read_only,
                        params,
                    },
                    Pending::Select,
                    Some(sel),
                );
            }
            C::Create {
                mailbox,
                special_use,
            } => match self.mailbox(&mailbox) {
                Some(mailbox) => self.request(
                    tag,
                    RequestKind::Create {
                        mailbox,
                        special_use,
                    },
                    Pending::Other,
                    None,
                ),
                None => self.bad(Some(&tag), "Invalid mailbox name"),
            },
            C::Delete { mailbox } => match self.mailbox(&mailbox) {
                Some(mailbox) => {
                    self.request(tag, RequestKind::Delete { mailbox }, Pending::Other, None)
                }
                None => self.bad(Some(&tag), "Invalid mailbox name"),
            },
            C::Subscribe { mailbox } => match self.mailbox(&mailbox) {
                Some(mailbox) => self.request(
                    tag,
                    RequestKind::Subscribe {
                        mailbox,
                        subscribe: true,
                    },
                    Pending::Other,
                    None,
                ),
                None => self.bad(Some(&tag), "Invalid mailbox name"),
            },
            C::Unsubscribe { mailbox } => match self.mailbox(&mailbox) {
                Some(mailbox) => self.request(
                    tag,
                    RequestKind::Subscribe {
                        mailbox,
                        subscribe: false,
                    },
                    Pending::Other,
                    None,
                ),
                None => self.bad(Some(&tag), "Invalid mailbox name"),
            },
            C::Rename { from, to } => match (self.mailbox(&from), self.mailbox(&to)) {
                (Some(from), Some(to)) => {
                    self.request(tag, RequestKind::Rename { from, to }, Pending::Other, None)
                }
                _ => self.bad(Some(&tag), "Invalid mailbox name"),
            },
            C::Status { mailbox, items } => match self.mailbox(&mailbox) {
                Some(mailbox) => self.request(
                    tag,
                    RequestKind::Status { mailbox, items },
                    Pending::Other,
                    None,
                ),
                None => self.bad(Some(&tag), "Invalid mailbox name"),
            },
            C::GetQuotaRoot { mailbox } => match self.mailbox(&mailbox) {
                Some(mailbox) => self.request(
                    tag,
                    RequestKind::GetQuotaRoot { mailbox },
                    Pending::Other,
                    None,
                ),
                None => self.bad(Some(&tag), "Invalid mailbox name"),
            },
            C::GetQuota { root } => {
                self.request(tag, RequestKind::GetQuota { root }, Pending::Other, None)
            }
            C::Append { mailbox, messages } => match self.mailbox(&mailbox) {
                Some(mailbox) => self.request(
                    tag,
                    RequestKind::Append { mailbox, messages },
                    Pending::Other,
                    None,
                ),
                None => self.bad(Some(&tag), "Invalid mailbox name"),
            },
            C::List {
                selection,
                reference,
                patterns,
                returns,
                extended,
            } => {
                let reference = self.mailbox(&reference);
                let patterns: Option<Vec<String>> =
                    patterns.iter().map(|p| self.pattern(p)).collect();
                match (reference, patterns) {
                    (Some(reference), Some(patterns)) => self.request(
                        tag,
                        RequestKind::List {
                            lsub: false,
                            reference,
                            patterns,
                            selection,
                            returns,
                            extended,
                        },
                        Pending::Other,
                        None,
                    ),
                    _ => self.bad(Some(&tag), "Invalid mailbox name"),
                }
            }
            C::Lsub { reference, pattern } => {
                match (self.mailbox(&reference), self.pattern(&pattern)) {
                    (Some(reference), Some(pattern)) => self.request(
                        tag,
                        RequestKind::List {
                            lsub: true,
                            reference,
                            patterns: vec![pattern],
                            selection: vec![],
                            returns: vec![],
                            extended: false,
                        },
                        Pending::Other,
                        None,
                    ),
                    _ => self.bad(Some(&tag), "Invalid mailbox name"),
                }
            }
            _ if !selected => self.bad(Some(&tag), "No mailbox selected"),
            // Selected.
            C::Search {
                charset: Some(ref c),
                ..
            } if !known_charset(c) => self.bad_charset(&tag),
            C::Sort { ref charset, .. } | C::Thread { ref charset, .. }
                if !known_charset(charset) =>
            {
                self.bad_charset(&tag)
            }
            C::Thread {
                algorithm: ThreadAlgorithm::Other(_),
                ..
            } => self.bad(Some(&tag), "Unsupported threading algorithm"),
            C::Check => self.request(tag, RequestKind::Poll, Pending::Other, None),
            C::Close | C::Unselect => {
                let expunge = matches!(body, C::Close)
                    && !self.selected.as_ref().is_some_and(|s| s.read_only);
                self.request(tag, RequestKind::Close { expunge }, Pending::Close, None)
            }
            C::Expunge | C::UidExpunge { .. } | C::Store { .. } | C::Move { .. }
                if self.selected.as_ref().is_some_and(|s| s.read_only) =>
            {
                self.write(&tagged(
                    &tag,
                    StatusKind::No,
                    Some(Code::ReadOnly),
                    "Mailbox is read-only",
                ))
            }
            C::Expunge => self.request(
                tag,
                RequestKind::Expunge { uids: None },
                Pending::Other,
                None,
            ),
            C::UidExpunge { uids } => self.request(
                tag,
                RequestKind::Expunge { uids: Some(uids) },
                Pending::Other,
                None,
            ),
            C::Search {
                uid,
                returns,
                charset,
                criteria,
            } => self.request(
                tag,
                RequestKind::Search {
                    uid,
                    returns,
                    charset,
                    criteria,
                },
                Pending::Other,
                None,
            ),
            C::Fetch {
                uid,
                set,
                items,
                changed_since,
                vanished,
            } => {
                if vanished && !self.enabled.qresync {
                    return self.bad(Some(&tag), "QRESYNC is not enabled");
                }
                if changed_since.is_some() {
                    self.enabled.condstore = true;
                }
                self.request(
                    tag,
                    RequestKind::Fetch {
                        uid,
                        set,
                        items,
                        changed_since,
                        vanished,
                    },
                    Pending::Other,
                    None,
                )
            }
            C::Store {
                uid,
                set,
                unchanged_since,
                mode,
                silent,
                flags,
            } => {
                if unchanged_since.is_some() {
                    self.enabled.condstore = true;
                }
                self.request(
                    tag,
                    RequestKind::Store {
                        uid,
                        set,
                        unchanged_since,
                        mode,
                        silent,
                        flags,
                    },
                    Pending::Other,
                    None,
                )
            }
            C::Copy { uid, set, mailbox } | C::Move { uid, set, mailbox } => {
                let is_move = matches!(body_name, "MOVE");
                match self.mailbox(&mailbox) {
                    Some(mailbox) => self.request(
                        tag,
                        RequestKind::Copy {
                            uid,
                            is_move,
                            set,
                            mailbox,
                        },
                        Pending::Other,
                        None,
                    ),
                    None => self.bad(Some(&tag), "Invalid mailbox name"),
                }
            }
            C::Sort {
                uid,
                criteria,
                charset,
                search,
            } => self.request(
                tag,
                RequestKind::Sort {
                    uid,
                    criteria,
                    charset,
                    search,
                },
                Pending::Other,
                None,
            ),
            C::Thread {
                uid,
                algorithm,
                charset,
                search,
            } => self.request(
                tag,
                RequestKind::Thread {
                    uid,
                    algorithm,
                    charset,
                    search,
                },
                Pending::Other,
                None,
            ),
        }
    }
}
