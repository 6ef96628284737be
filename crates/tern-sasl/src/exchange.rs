//! The SASL exchange as a step machine: [`ServerAuth`] and its vocabulary.
//!
//! One [`ServerAuth`] runs one authentication exchange of one mechanism. It
//! receives decoded client bytes and the caller's answers, and says what to
//! do next as a [`Step`]. It sequences the mechanism modules (PLAIN parsing,
//! CRAM-MD5 and SCRAM checks, bearer messages) and enforces the bounds:
//! response length, number of responses, nonce length.
//!
//! It must never do I/O, read a clock, draw randomness, panic on client
//! input, or fail differently for an unknown user than for a wrong
//! password.

use crate::cram::{self, CramSecret};
use crate::mechanism::Mechanism;
use crate::oauth;
use crate::plain;
use crate::scram::{self, ClientFirst, ScramCredentials, ServerFirst};
use crate::secret::{Password, Token};
use base64::Engine;
use base64::engine::general_purpose::STANDARD_NO_PAD;
use ring::hmac;
use std::fmt;
use std::num::NonZeroU32;

/// The smallest server nonce [`ServerAuth::start`] accepts for CRAM-MD5 and
/// SCRAM-SHA-256, in bytes.
pub const MIN_NONCE_LEN: usize = 16;

/// Bounds on one exchange.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Longest decoded client response accepted, in bytes. The default,
    /// 12288, is RFC 4954's line limit, which bounds the base64 form, so a
    /// conforming client never comes near it.
    pub max_response_len: usize,
    /// Most client responses (the initial response included) in one
    /// exchange. The longest legitimate exchange (SCRAM without an initial
    /// response) needs 3.
    pub max_responses: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_response_len: 12288,
            max_responses: 5,
        }
    }
}

/// What [`ServerAuth::start`] needs from the caller besides the mechanism.
#[derive(Clone, Copy)]
pub struct StartContext<'a> {
    /// Fresh random bytes from the runtime's CSPRNG, at least
    /// [`MIN_NONCE_LEN`] for CRAM-MD5 and SCRAM-SHA-256 (the CRAM-MD5
    /// challenge and the SCRAM server nonce are made from them). Never reuse
    /// them across exchanges.
    pub nonce: &'a [u8],
    /// This server's host name, for the CRAM-MD5 challenge.
    pub hostname: &'a str,
    /// The current time, seconds since the Unix epoch (CRAM-MD5 challenge).
    pub now_unix: u64,
    /// A stable server secret (32 random bytes or more, kept across
    /// restarts) from which fake CRAM-MD5 and SCRAM credentials for unknown
    /// users are derived, so that an unknown user fails exactly like a wrong
    /// password and always sees the same salt.
    pub server_secret: &'a [u8],
    /// The iteration count announced in a fake SCRAM credential: set it to
    /// the count the user tool stores for real users (default 4096).
    pub fake_scram_iterations: u32,
    /// Bounds on the exchange.
    pub limits: Limits,
}

impl<'a> StartContext<'a> {
    /// A context with default limits and 4096 fake SCRAM iterations.
    pub fn new(
        nonce: &'a [u8],
        hostname: &'a str,
        now_unix: u64,
        server_secret: &'a [u8],
    ) -> StartContext<'a> {
        StartContext {
            nonce,
            hostname,
            now_unix,
            server_secret,
            fake_scram_iterations: 4096,
            limits: Limits::default(),
        }
    }
}

impl fmt::Debug for StartContext<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StartContext")
            .field("nonce", &"***")
            .field("hostname", &self.hostname)
            .field("now_unix", &self.now_unix)
            .field("server_secret", &"***")
            .field("fake_scram_iterations", &self.fake_scram_iterations)
            .field("limits", &self.limits)
            .finish()
    }
}

/// How an exchange failed. The comment on each kind gives the RFC 4954
/// reply an SMTP server sends for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum FailureKind {
    /// Wrong password, unknown user, bad proof, rejected token:
    /// `535 5.7.8`. Unknown users and wrong passwords are never told apart.
    BadCredentials,
    /// The client's message broke the mechanism's grammar, or asked for
    /// something not offered (channel binding): `501 5.5.2`.
    Malformed,
    /// The client sent `*`: `501 5.0.0`.
    Cancelled,
    /// The server could not decide (directory unavailable, or a driver
    /// bug): `454 4.7.0`.
    Temporary,
    /// The caller refused the requested authorization identity: `535 5.7.8`
    /// (RFC 4954 has no better code).
    AuthzidNotAllowed,
    /// A client response exceeded [`Limits::max_response_len`]: `500 5.5.6`.
    ResponseTooLong,
}

impl FailureKind {
    fn default_reason(self) -> &'static str {
        match self {
            FailureKind::BadCredentials => AUTH_FAILED,
            FailureKind::Malformed => "malformed SASL message",
            FailureKind::Cancelled => "authentication cancelled by the client",
            FailureKind::Temporary => "temporary authentication failure",
            FailureKind::AuthzidNotAllowed => "not authorised to act as the requested identity",
            FailureKind::ResponseTooLong => "SASL response too long",
        }
    }
}

const AUTH_FAILED: &str = "authentication failed";

/// The end of a failed exchange: what kind (for the reply code) and a fixed
/// English reason (for logs and reply text). The reason never contains client
/// data or secrets, and is the same for an unknown user and a wrong password.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{reason}")]
pub struct Failure {
    /// What went wrong, for choosing the reply.
    pub kind: FailureKind,
    /// Why, in a few words.
    pub reason: &'static str,
}

impl Failure {
    fn new(kind: FailureKind) -> Failure {
        Failure {
            kind,
            reason: kind.default_reason(),
        }
    }

    fn with(kind: FailureKind, reason: &'static str) -> Failure {
        Failure { kind, reason }
    }

    fn driver_bug() -> Failure {
        Failure::with(
            FailureKind::Temporary,
            "SASL call out of order (server bug)",
        )
    }
}

/// Why the caller rejected a bearer token (the answer to
/// [`Step::VerifyToken`]). Decides the `status` of the JSON error challenge.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
#[non_exhaustive]
pub enum TokenRejection {
    /// Bad signature, wrong issuer or audience, unparseable, unknown user.
    #[error("invalid bearer token")]
    Invalid,
    /// Valid once, expired (or not valid yet).
    #[error("expired bearer token")]
    Expired,
    /// Valid, but not for mail.
    #[error("bearer token lacks the required scope")]
    InsufficientScope,
}

impl TokenRejection {
    fn status(self, mechanism: Mechanism) -> &'static str {
        match (mechanism, self) {
            (Mechanism::XOAuth2, TokenRejection::InsufficientScope) => "403",
            (Mechanism::XOAuth2, _) => "401",
            (_, TokenRejection::InsufficientScope) => "insufficient_scope",
            (_, _) => "invalid_token",
        }
    }
}

/// The caller's answer to a `Verify*` or `Lookup*` step, given with
/// [`ServerAuth::provide`].
#[derive(Debug)]
pub enum Answer {
    /// For [`Step::VerifyPassword`]: does the password match? `false` for
    /// unknown users too.
    PasswordOk(bool),
    /// For [`Step::LookupCram`]: the user's secret, `None` when the user is
    /// unknown or has no CRAM-MD5 secret (the exchange then fails like a
    /// wrong password).
    Cram(Option<CramSecret>),
    /// For [`Step::LookupScram`]: the user's credentials, `None` when the
    /// user is unknown (the exchange goes on with fake credentials and fails
    /// like a wrong password).
    Scram(Option<ScramCredentials>),
    /// For [`Step::VerifyToken`]: the user the token authenticates, or why it
    /// was rejected.
    Token(Result<String, TokenRejection>),
    /// For any `Verify*`/`Lookup*` step: end the exchange with this kind,
    /// typically [`FailureKind::Temporary`] when the directory is
    /// unavailable or [`FailureKind::AuthzidNotAllowed`].
    Fail(FailureKind),
}

/// What the driver must do next. Returned by [`ServerAuth::next`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Send these bytes to the client (SMTP: `334 ` + base64, possibly
    /// empty), then read one line and call [`ServerAuth::client_response`]
    /// with its decoded bytes or [`ServerAuth::cancel`] for `*`.
    Challenge(Vec<u8>),
    /// PLAIN, LOGIN: check this password; answer [`Answer::PasswordOk`].
    /// For an unknown user, verify against a dummy hash of the same kind so
    /// the answer takes as long as for a wrong password.
    /// `authzid` is `None` unless the client asked to act as someone else;
    /// whether that is allowed is the caller's policy (check it on
    /// [`Step::Success`], or answer [`Answer::Fail`]).
    VerifyPassword {
        /// The user name.
        authcid: String,
        /// The identity to act as, when different from `authcid`.
        authzid: Option<String>,
        /// The password (redacted in `Debug`).
        password: Password,
    },
    /// CRAM-MD5: look up the user's secret; answer [`Answer::Cram`].
    LookupCram {
        /// The user name.
        authcid: String,
    },
    /// SCRAM-SHA-256: look up the user's credentials; answer
    /// [`Answer::Scram`].
    LookupScram {
        /// The user name (SASLprep-lite applied).
        authcid: String,
        /// The identity to act as, when different from `authcid`.
        authzid: Option<String>,
    },
    /// OAUTHBEARER, XOAUTH2: validate this token (for example with
    /// [`JwtValidator`](crate::jwt::JwtValidator)); answer [`Answer::Token`].
    VerifyToken {
        /// The bearer token (redacted in `Debug`).
        token: Token,
        /// The user the client says it is (OAUTHBEARER `a=`, XOAUTH2
        /// `user=`). Not proven: the token decides who the user is.
        user_hint: Option<String>,
    },
    /// Waiting for [`ServerAuth::client_response`] or [`ServerAuth::cancel`].
    NeedResponse,
    /// Waiting for [`ServerAuth::provide`].
    NeedAnswer,
    /// Authenticated (SMTP: `235 2.7.0`). Returned from then on.
    Success {
        /// Who proved their identity.
        authcid: String,
        /// The identity they asked to act as, when different; the caller
        /// must refuse it unless its policy allows `authcid` to act as it.
        authzid: Option<String>,
    },
    /// Failed. Returned from then on.
    Failure(Failure),
}

#[derive(Debug)]
enum Bearer {
    OAuthBearer,
    XOAuth2,
}

/// Where the exchange stands. Client-awaiting states first, then
/// answer-awaiting states, then the end.
#[derive(Debug)]
enum State {
    // Waiting for the client.
    PlainMessage,
    LoginUser,
    LoginPassword {
        authcid: String,
    },
    CramResponse {
        challenge: Vec<u8>,
    },
    ScramClientFirst,
    ScramClientFinal {
        server: Box<ServerFirst>,
        fake: bool,
    },
    ScramAck {
        authcid: String,
        authzid: Option<String>,
    },
    BearerMessage(Bearer),
    BearerErrorAck,
    // Waiting for the caller.
    PasswordVerdict {
        authcid: String,
        authzid: Option<String>,
    },
    CramLookup {
        challenge: Vec<u8>,
        authcid: String,
        digest: [u8; 16],
    },
    ScramLookup(Box<ClientFirst>),
    TokenVerdict {
        user_hint: Option<String>,
    },
    // Finished.
    Done(Result<Authenticated, Failure>),
}

#[derive(Debug, Clone)]
struct Authenticated {
    authcid: String,
    authzid: Option<String>,
}

impl State {
    fn awaits_client(&self) -> bool {
        matches!(
            self,
            State::PlainMessage
                | State::LoginUser
                | State::LoginPassword { .. }
                | State::CramResponse { .. }
                | State::ScramClientFirst
                | State::ScramClientFinal { .. }
                | State::ScramAck { .. }
                | State::BearerMessage(_)
                | State::BearerErrorAck
        )
    }

    fn name(&self) -> &'static str {
        match self {
            State::PlainMessage => "PlainMessage",
            State::LoginUser => "LoginUser",
            State::LoginPassword { .. } => "LoginPassword",
            State::CramResponse { .. } => "CramResponse",
            State::ScramClientFirst => "ScramClientFirst",
            State::ScramClientFinal { .. } => "ScramClientFinal",
            State::ScramAck { .. } => "ScramAck",
            State::BearerMessage(_) => "BearerMessage",
            State::BearerErrorAck => "BearerErrorAck",
            State::PasswordVerdict { .. } => "PasswordVerdict",
            State::CramLookup { .. } => "CramLookup",
            State::ScramLookup(_) => "ScramLookup",
            State::TokenVerdict { .. } => "TokenVerdict",
            State::Done(Ok(_)) => "Success",
            State::Done(Err(_)) => "Failure",
        }
    }
}

/// One server-side SASL exchange.
///
/// # Call order
///
/// 1. [`ServerAuth::start`] with the mechanism the client named, its
///    initial response if any (already base64-decoded; RFC 4954's `=` is
///    `Some(b"")`) and a [`StartContext`].
/// 2. Call [`ServerAuth::next`] and act on the [`Step`]:
///    - [`Step::Challenge`]: send it, read the client's line, then call
///      [`ServerAuth::cancel`] if it is `*`, otherwise
///      [`ServerAuth::client_response`] with the decoded bytes. (Bad base64
///      is the protocol layer's to answer; it may `cancel` and reply 501.)
///    - `VerifyPassword`, `LookupCram`, `LookupScram`, `VerifyToken`: ask
///      the user directory or token validator, then [`ServerAuth::provide`]
///      the matching [`Answer`] (the lookup may be asynchronous: the machine
///      simply waits).
///    - [`Step::Success`] or [`Step::Failure`]: the exchange is over; reply
///      and drop the machine.
///    - [`Step::NeedResponse`] / [`Step::NeedAnswer`] only appear if
///      `next` is called again before the input it is waiting for.
/// 3. Repeat 2 until the end.
///
/// Each challenge and each question is returned by `next` exactly once;
/// the final step is returned on every call after the end. Calls out of
/// order (an answer while a client response is awaited, the wrong kind of
/// answer) end the exchange with a [`FailureKind::Temporary`] failure;
/// calls after the end are ignored. Nothing here panics.
///
/// ```
/// use tern_sasl::{Answer, Mechanism, ServerAuth, StartContext, Step};
///
/// let nonce = [0x5a; 16]; // from the runtime's CSPRNG, fresh every time
/// let ctx = StartContext::new(&nonce, "mx.example.test", 1_700_000_000, b"secret from the data dir");
/// // AUTH PLAIN AGFsaWNlAHMzY3JldA==  (base64 of "\0alice\0s3cret")
/// let mut auth = ServerAuth::start(Mechanism::Plain, Some(b"\0alice\0s3cret"), ctx);
/// let reply = loop {
///     match auth.next() {
///         Step::Challenge(bytes) => {
///             // Send "334 " + base64(bytes), read a line; "*" -> auth.cancel().
///             unreachable!("PLAIN with an initial response needs no challenge");
///         }
///         Step::VerifyPassword { authcid, password, .. } => {
///             let ok = authcid == "alice" && password.as_str() == "s3cret"; // use a hash in real life
///             auth.provide(Answer::PasswordOk(ok));
///         }
///         Step::LookupCram { .. } => auth.provide(Answer::Cram(None)),
///         Step::LookupScram { .. } => auth.provide(Answer::Scram(None)),
///         Step::VerifyToken { .. } => auth.provide(Answer::Token(Err(tern_sasl::TokenRejection::Invalid))),
///         Step::NeedResponse | Step::NeedAnswer => unreachable!("every input was given"),
///         Step::Success { authcid, .. } => break format!("235 2.7.0 {authcid} authenticated"),
///         Step::Failure(f) => break format!("535 5.7.8 {f}"),
///     }
/// };
/// assert_eq!(reply, "235 2.7.0 alice authenticated");
/// ```
pub struct ServerAuth {
    mechanism: Mechanism,
    state: State,
    pending: Option<Step>,
    responses: usize,
    limits: Limits,
    /// Printable SCRAM server nonce, made from the caller's nonce bytes.
    server_nonce: String,
    /// Key for deriving fake credentials of unknown users.
    fake_key: hmac::Key,
    fake_iterations: NonZeroU32,
}

impl fmt::Debug for ServerAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerAuth")
            .field("mechanism", &self.mechanism)
            .field("state", &self.state.name())
            .field("pending", &self.pending)
            .field("responses", &self.responses)
            .finish_non_exhaustive()
    }
}

impl ServerAuth {
    /// Starts an exchange. `initial` is the client's already base64-decoded
    /// initial response (`Some(b"")` for RFC 4954's `=`). See the type's
    /// documentation for what to do next.
    pub fn start(
        mechanism: Mechanism,
        initial: Option<&[u8]>,
        ctx: StartContext<'_>,
    ) -> ServerAuth {
        let mut auth = ServerAuth {
            mechanism,
            state: State::PlainMessage,
            pending: None,
            responses: 0,
            limits: ctx.limits,
            server_nonce: STANDARD_NO_PAD.encode(ctx.nonce),
            fake_key: hmac::Key::new(hmac::HMAC_SHA256, ctx.server_secret),
            fake_iterations: NonZeroU32::new(ctx.fake_scram_iterations).unwrap_or(NonZeroU32::MIN),
        };
        let needs_nonce = matches!(mechanism, Mechanism::CramMd5 | Mechanism::ScramSha256);
        if needs_nonce && ctx.nonce.len() < MIN_NONCE_LEN {
            auth.finish(Err(Failure::with(
                FailureKind::Temporary,
                "server nonce too short (server bug)",
            )));
            return auth;
        }
        let (state, first_challenge) = match mechanism {
            Mechanism::Plain => (State::PlainMessage, Vec::new()),
            Mechanism::Login => (State::LoginUser, b"Username:".to_vec()),
            Mechanism::CramMd5 => {
                let challenge = cram::challenge(ctx.nonce, ctx.now_unix, ctx.hostname);
                (
                    State::CramResponse {
                        challenge: challenge.clone(),
                    },
                    challenge,
                )
            }
            Mechanism::ScramSha256 => (State::ScramClientFirst, Vec::new()),
            Mechanism::OAuthBearer => (State::BearerMessage(Bearer::OAuthBearer), Vec::new()),
            Mechanism::XOAuth2 => (State::BearerMessage(Bearer::XOAuth2), Vec::new()),
        };
        auth.state = state;
        match initial {
            // LOGIN's optional initial response is the user name; an empty
            // one means none was given.
            Some(b"") if mechanism == Mechanism::Login => {
                auth.pending = Some(Step::Challenge(first_challenge))
            }
            // RFC 4954: an initial response to a mechanism where the server
            // speaks first is refused.
            Some(_) if mechanism == Mechanism::CramMd5 => auth.finish(Err(Failure::with(
                FailureKind::Malformed,
                "CRAM-MD5 does not take an initial response",
            ))),
            Some(data) => auth.client_response(data),
            None => auth.pending = Some(Step::Challenge(first_challenge)),
        }
        auth
    }

    /// The mechanism of this exchange.
    pub fn mechanism(&self) -> Mechanism {
        self.mechanism
    }

    /// True once the exchange has ended ([`Step::Success`] or
    /// [`Step::Failure`]).
    pub fn is_done(&self) -> bool {
        matches!(self.state, State::Done(_))
    }

    /// What to do now. Challenges and questions are returned once; the final
    /// step on every call after the end.
    #[allow(clippy::should_implement_trait)]
    pub fn next(&mut self) -> Step {
        if let Some(step) = self.pending.take() {
            return step;
        }
        match &self.state {
            State::Done(Ok(a)) => Step::Success {
                authcid: a.authcid.clone(),
                authzid: a.authzid.clone(),
            },
            State::Done(Err(f)) => Step::Failure(*f),
            s if s.awaits_client() => Step::NeedResponse,
            _ => Step::NeedAnswer,
        }
    }

    /// The decoded bytes of the client's response to the last challenge.
    pub fn client_response(&mut self, data: &[u8]) {
        if self.is_done() {
            return;
        }
        self.pending = None;
        if !self.state.awaits_client() {
            return self.finish(Err(Failure::driver_bug()));
        }
        self.responses += 1;
        if self.responses > self.limits.max_responses {
            return self.finish(Err(Failure::with(
                FailureKind::Malformed,
                "too many SASL responses",
            )));
        }
        if data.len() > self.limits.max_response_len {
            return self.finish(Err(Failure::new(FailureKind::ResponseTooLong)));
        }
        let malformed = |reason| Err(Failure::with(FailureKind::Malformed, reason));
        match self.take_state() {
            State::PlainMessage => match plain::parse_plain(data) {
                Ok(c) => self.ask(
                    Step::VerifyPassword {
                        authcid: c.authcid.clone(),
                        authzid: c.authzid.clone(),
                        password: c.password,
                    },
                    State::PasswordVerdict {
                        authcid: c.authcid,
                        authzid: c.authzid,
                    },
                ),
                Err(e) => self.finish(malformed(e.reason())),
            },
            State::LoginUser => match plain::parse_identity(data) {
                Ok(authcid) => self.ask(
                    Step::Challenge(b"Password:".to_vec()),
                    State::LoginPassword { authcid },
                ),
                Err(e) => self.finish(malformed(e.reason())),
            },
            State::LoginPassword { authcid } => match plain::parse_password(data) {
                Ok(password) => self.ask(
                    Step::VerifyPassword {
                        authcid: authcid.clone(),
                        authzid: None,
                        password,
                    },
                    State::PasswordVerdict {
                        authcid,
                        authzid: None,
                    },
                ),
                Err(e) => self.finish(malformed(e.reason())),
            },
            State::CramResponse { challenge } => match cram::parse_response(data) {
                Ok((authcid, digest)) => self.ask(
                    Step::LookupCram {
                        authcid: authcid.clone(),
                    },
                    State::CramLookup {
                        challenge,
                        authcid,
                        digest,
                    },
                ),
                Err(_) => self.finish(malformed(
                    "CRAM-MD5 response must be: user SP 32 hex digits",
                )),
            },
            State::ScramClientFirst => match scram::parse_client_first(data) {
                Ok(first) => self.ask(
                    Step::LookupScram {
                        authcid: first.authcid.clone(),
                        authzid: first.authzid.clone(),
                    },
                    State::ScramLookup(Box::new(first)),
                ),
                Err(e) => self.finish(malformed(e.reason())),
            },
            State::ScramClientFinal { server, fake } => match server.verify_client_final(data) {
                Ok(server_final) if !fake => {
                    let (authcid, authzid) = server.into_identities();
                    self.ask(
                        Step::Challenge(server_final),
                        State::ScramAck { authcid, authzid },
                    );
                }
                Ok(_) | Err(scram::ScramError::Proof) => {
                    self.finish(Err(Failure::new(FailureKind::BadCredentials)))
                }
                Err(e) => self.finish(malformed(e.reason())),
            },
            State::ScramAck { authcid, authzid } => {
                if data.is_empty() {
                    self.finish(Ok(Authenticated { authcid, authzid }));
                } else {
                    self.finish(malformed(
                        "an empty response was expected after SCRAM server-final",
                    ));
                }
            }
            State::BearerMessage(kind) => {
                let parsed = match kind {
                    Bearer::OAuthBearer => oauth::parse_oauthbearer(data),
                    Bearer::XOAuth2 => oauth::parse_xoauth2(data),
                };
                match parsed {
                    Ok(m) => self.ask(
                        Step::VerifyToken {
                            token: m.token,
                            user_hint: m.user_hint.clone(),
                        },
                        State::TokenVerdict {
                            user_hint: m.user_hint,
                        },
                    ),
                    Err(e) => self.finish(malformed(e.reason())),
                }
            }
            // RFC 7628 3.2.3: whatever the client sends after the error
            // challenge (it should be a lone %x01), the exchange fails.
            State::BearerErrorAck => self.finish(Err(Failure::with(
                FailureKind::BadCredentials,
                "bearer token rejected",
            ))),
            State::PasswordVerdict { .. }
            | State::CramLookup { .. }
            | State::ScramLookup(_)
            | State::TokenVerdict { .. }
            | State::Done(_) => self.finish(Err(Failure::driver_bug())),
        }
    }

    /// The client cancelled the exchange (sent `*`). Ends it with
    /// [`FailureKind::Cancelled`].
    pub fn cancel(&mut self) {
        if !self.is_done() {
            self.finish(Err(Failure::new(FailureKind::Cancelled)));
        }
    }

    /// The caller's answer to the last `Verify*`/`Lookup*` step.
    pub fn provide(&mut self, answer: Answer) {
        if self.is_done() {
            return;
        }
        self.pending = None;
        if self.state.awaits_client() {
            return self.finish(Err(Failure::driver_bug()));
        }
        let bad = || Err(Failure::new(FailureKind::BadCredentials));
        match (self.take_state(), answer) {
            (_, Answer::Fail(kind)) => self.finish(Err(Failure::new(kind))),
            (State::PasswordVerdict { authcid, authzid }, Answer::PasswordOk(ok)) => {
                if ok {
                    self.finish(Ok(Authenticated { authcid, authzid }));
                } else {
                    self.finish(bad());
                }
            }
            (
                State::CramLookup {
                    challenge,
                    authcid,
                    digest,
                },
                Answer::Cram(secret),
            ) => {
                let (secret, fake) = match secret {
                    Some(s) => (s, false),
                    None => (self.fake_cram(&authcid), true),
                };
                // Computed in both cases so an unknown user costs the same.
                let matches = secret.verify(&challenge, &digest);
                if matches && !fake {
                    self.finish(Ok(Authenticated {
                        authcid,
                        authzid: None,
                    }));
                } else {
                    self.finish(bad());
                }
            }
            (State::ScramLookup(first), Answer::Scram(credentials)) => {
                let (credentials, fake) = match credentials {
                    Some(c) => (c, false),
                    None => (
                        ScramCredentials::fake(
                            &self.fake_key,
                            &first.authcid,
                            self.fake_iterations,
                        ),
                        true,
                    ),
                };
                let server = ServerFirst::new(*first, &self.server_nonce, credentials);
                self.ask(
                    Step::Challenge(server.message().to_vec()),
                    State::ScramClientFinal {
                        server: Box::new(server),
                        fake,
                    },
                );
            }
            (State::TokenVerdict { user_hint }, Answer::Token(Ok(user))) => {
                if !crate::saslprep::is_clean_identity(&user) {
                    return self.finish(Err(Failure::with(
                        FailureKind::BadCredentials,
                        "the token's user is not a usable identity",
                    )));
                }
                let authzid = user_hint.filter(|hint| !hint.eq_ignore_ascii_case(&user));
                self.finish(Ok(Authenticated {
                    authcid: user,
                    authzid,
                }));
            }
            (State::TokenVerdict { .. }, Answer::Token(Err(rejection))) => {
                let json = oauth::error_json(rejection.status(self.mechanism));
                self.ask(Step::Challenge(json), State::BearerErrorAck);
            }
            _ => self.finish(Err(Failure::driver_bug())),
        }
    }

    fn fake_cram(&self, user: &str) -> CramSecret {
        let mut ctx = hmac::Context::with_key(&self.fake_key);
        ctx.update(b"tern-sasl fake cram-md5 secret\0");
        ctx.update(user.as_bytes());
        let tag = ctx.sign();
        let mut bytes = [0u8; 32];
        bytes.copy_from_slice(&tag.as_ref()[..32]);
        CramSecret::from_bytes(bytes)
    }

    fn take_state(&mut self) -> State {
        std::mem::replace(&mut self.state, State::Done(Err(Failure::driver_bug())))
    }

    fn ask(&mut self, step: Step, next: State) {
        self.pending = Some(step);
        self.state = next;
    }

    fn finish(&mut self, outcome: Result<Authenticated, Failure>) {
        self.pending = None;
        self.state = State::Done(outcome);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NONCE: [u8; 16] = [9; 16];
    const SECRET: &[u8] = b"server secret";

    /// A client that knows the server secret can compute the fake CRAM-MD5
    /// secret of a user that does not exist, and so the right digest. It
    /// must still fail.
    #[test]
    fn fake_cram_secret_never_authenticates() {
        let mut auth = ServerAuth::start(
            Mechanism::CramMd5,
            None,
            StartContext::new(&NONCE, "h", 1, SECRET),
        );
        let Step::Challenge(challenge) = auth.next() else {
            panic!("challenge expected")
        };
        let digest = auth.fake_cram("ghost").hmac(&challenge);
        let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
        auth.client_response(format!("ghost {hex}").as_bytes());
        assert_eq!(
            auth.next(),
            Step::LookupCram {
                authcid: "ghost".into()
            }
        );
        auth.provide(Answer::Cram(None));
        assert_eq!(
            auth.next(),
            Step::Failure(Failure::new(FailureKind::BadCredentials))
        );

        // The same digest with the same secret provided as real succeeds,
        // so the failure above is due to the user being unknown.
        let mut auth = ServerAuth::start(
            Mechanism::CramMd5,
            None,
            StartContext::new(&NONCE, "h", 1, SECRET),
        );
        auth.next();
        auth.client_response(format!("ghost {hex}").as_bytes());
        auth.next();
        let fake = auth.fake_cram("ghost");
        auth.provide(Answer::Cram(Some(fake)));
        assert!(matches!(auth.next(), Step::Success { .. }));
    }

    /// SCRAM's fake credentials go through the whole exchange, and the
    /// server-first of an unknown user has the same shape as a real one.
    #[test]
    fn fake_scram_runs_to_the_same_failure() {
        let ctx = StartContext::new(&NONCE, "h", 1, SECRET);
        let mut auth = ServerAuth::start(Mechanism::ScramSha256, Some(b"n,,n=ghost,r=abc"), ctx);
        auth.next();
        auth.provide(Answer::Scram(None));
        let Step::Challenge(server_first) = auth.next() else {
            panic!("server-first expected")
        };
        let sf = String::from_utf8(server_first).unwrap();
        assert!(sf.starts_with("r=abc") && sf.ends_with(",i=4096"), "{sf}");
        let nonce = sf.split(',').next().unwrap();
        auth.client_response(
            format!(
                "c=biws,{nonce},p={}",
                STANDARD_NO_PAD.encode([0u8; 32]) + "="
            )
            .as_bytes(),
        );
        assert_eq!(
            auth.next(),
            Step::Failure(Failure::new(FailureKind::BadCredentials))
        );
    }

    #[test]
    fn debug_of_the_machine_and_context_is_redacted() {
        let ctx = StartContext::new(&NONCE, "h", 1, SECRET);
        assert!(!format!("{ctx:?}").contains("server secret"));
        let auth = ServerAuth::start(Mechanism::Plain, Some(b"\0u\0hunter2"), ctx);
        let debug = format!("{auth:?}");
        assert!(
            debug.contains("PasswordVerdict") && !debug.contains("hunter2"),
            "{debug}"
        );
    }
}
