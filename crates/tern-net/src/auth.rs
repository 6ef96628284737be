//! The authentication service every protocol shares: answers a SASL
//! exchange's questions (SMTP AUTH, IMAP LOGIN/AUTHENTICATE) from the users
//! file or the bearer-token validator, under the brute-force tracker and
//! the bound on concurrent password checks ([`crate::gate`]).
//!
//! Protocol drivers map their session's question to a [`Question`] and
//! hand the [`Answer`] back; none of them checks a credential itself. An
//! unknown user costs the same as a wrong password (a dummy hash is
//! checked). Nothing here logs a secret.

use std::net::IpAddr;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use ring::rand::{SecureRandom, SystemRandom};
use tern_limits::Verdict;
use tern_sasl::{Answer, FailureKind, Password, StartContext, Token};
use tracing::warn;

use crate::Context;
use crate::conn::escape_for_log;

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

/// Starts a SASL exchange for a session: `begin` gets a context with a
/// fresh nonce from the CSPRNG, our host name and the server secret.
/// `false` when no nonce could be had (answer a temporary failure).
pub(crate) fn begin_exchange(ctx: &Context, begin: impl FnOnce(StartContext<'_>)) -> bool {
    let mut nonce = [0u8; 32];
    if SystemRandom::new().fill(&mut nonce).is_err() {
        return false;
    }
    begin(StartContext::new(
        &nonce,
        &ctx.hostname,
        unix_now(),
        &ctx.auth.secret,
    ));
    true
}

impl Question {
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
pub(crate) async fn answer(ctx: &Context, ip: IpAddr, question: Question) -> Answer {
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
                .run(
                    move || match users.as_ref().and_then(|db| db.get(&authcid)) {
                        Some(user) => match user.password_hash.verify(password.as_str()) {
                            Ok(ok) => ok,
                            Err(e) => {
                                warn!(error = %e, "stored password hash cannot be checked");
                                false
                            }
                        },
                        None => {
                            tern_users::dummy_verify(password.as_str());
                            false
                        }
                    },
                )
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
