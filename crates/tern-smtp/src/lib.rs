//! The SMTP protocol core of Tern, without I/O.
//!
//! Bytes in, events and bytes out: this crate parses commands
//! ([`command`]), formats replies ([`reply`]), decodes and encodes DATA and
//! frames BDAT ([`data`]), runs the server session state machine
//! ([`server`]) and the client session that delivers to another SMTP or
//! LMTP server ([`client`]), and builds `Received:` header fields
//! ([`received`]). [`config`] is the `[smtp]` section of the configuration
//! file (the session's policy), which this crate owns.
//!
//! It must never touch sockets, files, clocks or an async runtime: the
//! runtime crate drives it and hands it time and bytes. Everything here is
//! deterministic, unit-testable and fuzzable.
#![forbid(unsafe_code)]

pub mod client;
pub mod command;
pub mod config;
pub mod data;
pub mod received;
pub mod reply;
pub mod server;
