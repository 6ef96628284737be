//! Sans-IO SASL server mechanisms for Tern.
//!
//! This crate runs the server side of a SASL exchange (RFC 4422) as a step
//! machine, [`ServerAuth`], that SMTP `AUTH` (RFC 4954), IMAP `AUTHENTICATE`
//! and `LOGIN`, and POP3 `AUTH` and `USER`/`PASS` drive. It implements PLAIN
//! (RFC 4616), LOGIN, CRAM-MD5 (RFC 2195), SCRAM-SHA-256 (RFC 5802,
//! RFC 7677), OAUTHBEARER (RFC 7628) and XOAUTH2, and in [`jwt`] the
//! validation of the bearer tokens those last two carry.
//!
//! The protocol layer base64-decodes the client's lines and hands the bytes
//! in; the machine answers with [`Step`]s: a challenge to send, a question
//! for the user directory (check this password, look up these stored
//! secrets, validate this token), or the outcome. See [`ServerAuth`] for the
//! call order and a complete driver loop.
//!
//! What this crate must never do:
//! - perform I/O, read a clock or draw random numbers: time and nonces are
//!   arguments, so every exchange is deterministic and testable;
//! - panic on anything a client sends;
//! - let a secret be printed: [`Password`], [`Token`], [`CramSecret`],
//!   [`ScramCredentials`] and the JWT HMAC key redact themselves in `Debug`
//!   and have no `Display`, and are zeroed when dropped;
//! - tell an unknown user from a wrong password: CRAM-MD5 and SCRAM run the
//!   exchange to the same failure against a fake credential derived from the
//!   user name and a server secret.
#![forbid(unsafe_code)]

mod cram;
mod der;
mod exchange;
pub mod jwt;
mod mechanism;
mod oauth;
mod plain;
mod saslprep;
mod scram;
mod secret;

pub use cram::CramSecret;
pub use exchange::{
    Answer, Failure, FailureKind, Limits, MIN_NONCE_LEN, ServerAuth, StartContext, Step,
    TokenRejection,
};
pub use mechanism::{Mechanism, UnknownMechanism};
pub use scram::{CredentialError, ScramCredentials};
pub use secret::{Password, Token};
