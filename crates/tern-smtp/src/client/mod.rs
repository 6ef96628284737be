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

mod config;
mod event;
mod extensions;
mod replies;
mod session;
mod timeouts;
mod transaction;

pub use crate::data::DataEncoder;
pub use config::{AuthMechanism, ClientAuth, ClientConfig, ConfigError, Protocol, StartTlsPolicy};
pub use event::{
    ClientError, Event, Outcome, Outgoing, ProtocolError, SessionError, SessionFailure,
};
pub use extensions::{Extensions, MAX_AUTH_MECHANISMS};
pub use replies::{
    DEFAULT_MAX_REPLY_LINE, DEFAULT_MAX_REPLY_LINES, ReplyError, ReplyLimits, ReplyParser,
};
pub use session::ClientSession;
pub use timeouts::{ClientTimeouts, TimeoutClass};
pub use transaction::{
    MessageParams, RcptOutcome, RcptResult, Recipient, Transaction, TransactionResult,
};

#[cfg(test)]
mod tests;
