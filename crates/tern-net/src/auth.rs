//! The authentication service every protocol shares: one [`Authenticator`]
//! per session serves SMTP AUTH, IMAP LOGIN/AUTHENTICATE and POP3
//! USER/PASS/AUTH. It starts SASL exchanges (nonce, host name, server
//! secret), answers their questions from the users file
//! (`UserDb::check_password`) or the bearer-token validator under the
//! brute-force tracker and the bound on concurrent password checks
//! ([`crate::gate`]), and records each outcome once: in the tracker and in
//! `tern_auth_total` with the protocol and the SASL mechanism used.
//!
//! Protocol drivers map their session's question to a [`Question`] and
//! hand the [`Answer`] back; none of them checks a credential, feeds the
//! tracker or counts an attempt itself. An unknown user costs the same as
//! a wrong password (a dummy hash is checked). Nothing here logs a secret.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use ring::rand::{SecureRandom, SystemRandom};
use tern_limits::Verdict;
use tern_sasl::{Answer, FailureKind, Mechanism, Password, StartContext, Token};
use tracing::warn;

use crate::Context;
use crate::conn::escape_for_log;
use crate::metrics::metrics;

/// The protocol a session authenticates for (the `protocol` label of
/// `tern_auth_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Protocol {
    /// SMTP AUTH (submission, or MX with AUTH offered).
    Smtp,
    /// IMAP LOGIN and AUTHENTICATE.
    Imap,
    /// POP3 USER/PASS and AUTH.
    Pop3,
}

impl Protocol {
    /// The metric label.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Protocol::Smtp => "smtp",
            Protocol::Imap => "imap",
            Protocol::Pop3 => "pop3",
        }
    }
}

/// The authentication service of one session: every credential check,
/// brute-force record and authentication metric of SMTP, IMAP and POP3
/// goes through it.
#[derive(Debug)]
pub(crate) struct Authenticator {
    ctx: Arc<Context>,
    ip: IpAddr,
    protocol: Protocol,
}

/// What [`Authenticator::admit`] decided for a client about to start an
/// exchange.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Admission {
    /// Go on (any brute-force delay has been waited).
    Allowed,
    /// The client is blocked after repeated failures.
    Blocked,
}

impl Authenticator {
    /// The service for a session of `protocol` with a client at `ip`.
    pub(crate) fn new(ctx: Arc<Context>, ip: IpAddr, protocol: Protocol) -> Authenticator {
        Authenticator { ctx, ip, protocol }
    }

    /// The client-wide brute-force verdict before an exchange starts
    /// (SMTP refuses AUTH outright while the client is blocked); waits the
    /// tracker's delay when there is one.
    pub(crate) async fn admit(&self, mechanism: Mechanism) -> Admission {
        match self.ctx.abuse.auth_verdict(self.ip, "", Instant::now()) {
            Verdict::Blocked { reason, .. } => {
                warn!(protocol = self.protocol.as_str(), mechanism = %mechanism, reason = ?reason, "authentication refused: client blocked after repeated failures");
                Admission::Blocked
            }
            Verdict::Allow { delay } => {
                if !delay.is_zero() {
                    tokio::time::sleep(delay).await;
                }
                Admission::Allowed
            }
        }
    }

    /// Starts an exchange: `begin` gets a context with a fresh nonce from
    /// the CSPRNG, our host name, the time and the server secret. `false`
    /// when no nonce could be had (answer a temporary failure).
    pub(crate) fn begin(&self, begin: impl FnOnce(StartContext<'_>)) -> bool {
        let Some(nonce) = fresh_nonce() else {
            return false;
        };
        begin(StartContext::new(
            &nonce,
            &self.ctx.hostname,
            unix_now(),
            &self.ctx.auth.secret,
        ));
        true
    }

    /// A fresh nonce for an exchange whose session builds its own start
    /// context (SMTP); `None` when the CSPRNG fails (answer a temporary
    /// failure).
    pub(crate) fn nonce(&self) -> Option<[u8; 32]> {
        fresh_nonce()
    }

    /// Answers an exchange's question ([`answer`]).
    pub(crate) async fn answer(&self, question: Question) -> Answer {
        answer(&self.ctx, self.ip, question).await
    }

    /// `user` proved who they are with `mechanism` (`None`: the session
    /// did not say): the tracker forgets their failures, the attempt is
    /// counted.
    pub(crate) fn succeeded(&self, mechanism: Option<Mechanism>, user: &str) {
        self.ctx.abuse.auth_succeeded(self.ip, user, Instant::now());
        metrics().auth(self.protocol.as_str(), mechanism_name(mechanism), true);
    }

    /// An exchange with `mechanism` failed for `user` (`None`: not known)
    /// in the way `kind` says; bad credentials and refused authorization
    /// identities count against the client in the tracker.
    pub(crate) fn failed(
        &self,
        mechanism: Option<Mechanism>,
        user: Option<&str>,
        kind: FailureKind,
    ) {
        if matches!(
            kind,
            FailureKind::BadCredentials | FailureKind::AuthzidNotAllowed
        ) {
            self.ctx
                .abuse
                .auth_failed(self.ip, user.unwrap_or(""), Instant::now());
        }
        metrics().auth(self.protocol.as_str(), mechanism_name(mechanism), false);
    }
}

/// The metric label of a mechanism; `""` (shown as `unknown`) when the
/// session did not say.
fn mechanism_name(mechanism: Option<Mechanism>) -> &'static str {
    mechanism.map_or("", Mechanism::name)
}

/// What a SASL exchange needs to know.
#[derive(Debug)]
pub(crate) enum Question {
    /// Is this the user's password?
    VerifyPassword {
        /// The user name.
        authcid: String,
        /// The password (redacted in `Debug`).
        password: Password,
    },
    /// The user's CRAM-MD5 secret.
    LookupCram {
        /// The user name.
        authcid: String,
    },
    /// The user's SCRAM-SHA-256 credentials.
    LookupScram {
        /// The user name.
        authcid: String,
    },
    /// Is this bearer token valid, and for whom?
    VerifyToken {
        /// The token (redacted in `Debug`).
        token: Token,
    },
}

/// Seconds since the Unix epoch (0 if the clock is before it).
pub(crate) fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// 32 bytes from the CSPRNG (`None` if it fails).
fn fresh_nonce() -> Option<[u8; 32]> {
    let mut nonce = [0u8; 32];
    SystemRandom::new().fill(&mut nonce).ok()?;
    Some(nonce)
}

impl Question {
    /// The SMTP session's question (`None`: one this service cannot answer).
    pub(crate) fn from_smtp(q: tern_smtp::server::AuthQuestion) -> Option<Question> {
        use tern_smtp::server::AuthQuestion as Q;
        Some(match q {
            Q::VerifyPassword {
                authcid, password, ..
            } => Question::VerifyPassword { authcid, password },
            Q::LookupCram { authcid } => Question::LookupCram { authcid },
            Q::LookupScram { authcid, .. } => Question::LookupScram { authcid },
            Q::VerifyToken { token, .. } => Question::VerifyToken { token },
            _ => return None,
        })
    }

    /// The IMAP session's question (`None`: one this service cannot answer).
    pub(crate) fn from_imap(q: tern_imap::session::AuthQuestion) -> Option<Question> {
        use tern_imap::session::AuthQuestion as Q;
        Some(match q {
            Q::VerifyPassword { authcid, password } => {
                Question::VerifyPassword { authcid, password }
            }
            Q::LookupCram { authcid } => Question::LookupCram { authcid },
            Q::LookupScram { authcid } => Question::LookupScram { authcid },
            Q::VerifyToken { token, .. } => Question::VerifyToken { token },
            _ => return None,
        })
    }

    /// The POP3 session's question (`None`: one this service cannot answer).
    pub(crate) fn from_pop3(q: tern_pop3::AuthQuestion) -> Option<Question> {
        use tern_pop3::AuthQuestion as Q;
        Some(match q {
            Q::VerifyPassword { authcid, password } => {
                Question::VerifyPassword { authcid, password }
            }
            Q::LookupCram { authcid } => Question::LookupCram { authcid },
            Q::LookupScram { authcid } => Question::LookupScram { authcid },
            Q::VerifyToken { token, .. } => Question::VerifyToken { token },
            _ => return None,
        })
    }
}

/// Answers `question` for a client at `ip`: the brute-force delay first
/// (or a temporary failure while the client or the name is blocked), then
/// the check.
async fn answer(ctx: &Context, ip: IpAddr, question: Question) -> Answer {
    let now = Instant::now();
    let user_name = match &question {
        Question::VerifyPassword { authcid, .. }
        | Question::LookupCram { authcid }
        | Question::LookupScram { authcid } => Some(authcid.clone()),
        Question::VerifyToken { .. } => None,
    };
    if let Some(name) = &user_name {
        match ctx.abuse.auth_verdict(ip, name, now) {
            Verdict::Blocked { reason, .. } => {
                warn!(user = %escape_for_log(name), reason = ?reason, "authentication refused: blocked after repeated failures");
                return Answer::Fail(FailureKind::Temporary);
            }
            Verdict::Allow { delay } => {
                if !delay.is_zero() {
                    tokio::time::sleep(delay).await;
                }
            }
        }
    }
    let users = ctx.auth.users.as_ref().map(|u| u.current());
    match question {
        Question::VerifyPassword { authcid, password } => {
            let verified = ctx
                .auth
                .gate
                .run(move || match users.as_ref() {
                    Some(db) => match db.check_password(&authcid, password.as_str()) {
                        Ok(user) => user.is_some(),
                        Err(e) => {
                            warn!(error = %e, "stored password hash cannot be checked");
                            false
                        }
                    },
                    None => {
                        tern_users::dummy_verify(password.as_str());
                        false
                    }
                })
                .await;
            match verified {
                Ok(ok) => Answer::PasswordOk(ok),
                Err(_) => Answer::Fail(FailureKind::Temporary),
            }
        }
        Question::LookupCram { authcid } => Answer::Cram(
            users
                .as_ref()
                .and_then(|db| db.get(&authcid))
                .and_then(|u| u.cram.clone()),
        ),
        Question::LookupScram { authcid } => Answer::Scram(
            users
                .as_ref()
                .and_then(|db| db.get(&authcid))
                .and_then(|u| u.scram.clone()),
        ),
        Question::VerifyToken { token } => match &ctx.auth.jwt {
            // A valid token logs in only a user of the users file.
            Some(jwt) => Answer::Token(
                jwt.validate(token.as_str(), unix_now())
                    .map_err(|e| e.rejection())
                    .and_then(
                        |claims| match users.as_ref().and_then(|db| db.get(&claims.user)) {
                            Some(_) => Ok(claims.user),
                            None => Err(tern_sasl::TokenRejection::Invalid),
                        },
                    ),
            ),
            None => Answer::Fail(FailureKind::Temporary),
        },
    }
}
