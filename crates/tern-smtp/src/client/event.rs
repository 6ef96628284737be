//! What the session yields ([`Event`], [`Outgoing`]) and how it ends ([`Outcome`], [`SessionError`]).

use std::fmt;

use tern_types::EnhancedStatus;
use zeroize::Zeroizing;

use super::replies::ReplyError;
use super::timeouts::TimeoutClass;
use super::transaction::TransactionResult;
use crate::reply::Reply;

/// Bytes to write to the server. `Debug` shows them escaped, except for
/// lines carrying credentials, which show only their length; those are
/// zeroed on drop.
#[derive(Clone, PartialEq, Eq)]
pub struct Outgoing {
    bytes: Zeroizing<Vec<u8>>,
    sensitive: bool,
}

impl Outgoing {
    pub(super) fn new(bytes: Vec<u8>) -> Outgoing {
        Outgoing {
            bytes: Zeroizing::new(bytes),
            sensitive: false,
        }
    }

    pub(super) fn secret(bytes: Zeroizing<Vec<u8>>) -> Outgoing {
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
    /// [`ClientSession::tls_established`](super::ClientSession::tls_established) or
    /// [`ClientSession::tls_failed`](super::ClientSession::tls_failed).
    StartTls,
    /// The server sent 354: write the message through a [`DataEncoder`](super::DataEncoder)
    /// (ending with [`DataEncoder::finish`](super::DataEncoder::finish)), then call
    /// [`ClientSession::data_sent`](super::ClientSession::data_sent). Stop if [`Event::Closed`] comes
    /// first.
    NeedData,
    /// A transaction is over; every recipient has its result.
    TransactionDone(TransactionResult),
    /// Idle: [`ClientSession::start_transaction`](super::ClientSession::start_transaction) or
    /// [`ClientSession::quit`](super::ClientSession::quit) may be called. (When input read in the same
    /// [`ClientSession::handle_input`](super::ClientSession::handle_input) call has closed the session since,
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
    /// connection with [`StartTlsPolicy::Disabled`](super::StartTlsPolicy::Disabled) may deliver.
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
    pub(super) fn is_from_server(&self) -> bool {
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
