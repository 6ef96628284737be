//! The POP3 protocol core (RFC 1939, RFC 2449 CAPA and response codes,
//! RFC 2595 STLS, RFC 5034 SASL AUTH), sans-IO: bytes in, replies and
//! [`Event`]s out. The runtime (`tern-net`'s POP3 driver) owns the
//! socket, the clock, the mail store and the user directory.
//!
//! * [`session`]: the state machine AUTHORIZATION → TRANSACTION → UPDATE,
//!   with bounded line framing.
//! * [`wire`]: how a stored message goes on the wire (CRLF line ends,
//!   dot-stuffing, the terminating `.`) and how many octets LIST and STAT
//!   must report for it.
//!
//! APOP is not offered: it needs the user's cleartext password (or an
//! MD5-equivalent of it) on the server, and Tern stores only argon2 hashes
//! and SCRAM/CRAM verifiers. USER/PASS over TLS and SASL AUTH (including
//! SCRAM-SHA-256) cover the same clients without a recoverable secret.
//!
//! What this crate must never do: perform I/O, read a clock, panic on
//! anything a client sends, keep input read before STLS completed, or
//! print a password.
#![forbid(unsafe_code)]

pub mod session;
pub mod wire;

pub use session::{
    AuthQuestion, Event, Expire, MaildropError, MessageInfo, Session, SessionConfig, State,
};
pub use wire::{DotStuffer, Scan, Scanner, scan, wire_size};
