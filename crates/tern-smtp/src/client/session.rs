//! The [`ClientSession`] state machine.

use std::collections::VecDeque;
use std::mem;
use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use tern_types::EnhancedStatus;
use tern_types::dsn::{BodyType, Orcpt};
use zeroize::Zeroizing;

use super::config::{AuthMechanism, ClientConfig, ConfigError, Protocol, StartTlsPolicy};
use super::event::{
    ClientError, Event, Outcome, Outgoing, ProtocolError, SessionError, SessionFailure,
};
use super::extensions::Extensions;
use super::replies::ReplyParser;
use super::timeouts::TimeoutClass;
use super::transaction::{RcptOutcome, RcptResult, Recipient, Transaction, TransactionResult};
use crate::command::encode_xtext;
use crate::reply::Reply;

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
///    * [`Event::NeedData`]: write the message through a [`DataEncoder`](super::DataEncoder)
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

    /// The message (ending with [`DataEncoder::finish`](super::DataEncoder::finish)'s bytes) has been
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
                s.push_str(&format!(
                    " ENVID={}",
                    encode_xtext(envid.as_str().as_bytes())
                ));
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
pub(super) fn encode_orcpt(orcpt: &Orcpt) -> Option<String> {
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
