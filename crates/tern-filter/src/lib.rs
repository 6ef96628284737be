//! Tern's filter pipeline, without I/O: what the spam and virus checks
//! say, and the wire formats of the scanners that say it.
//!
//! A filter *stage* (rspamd, a milter, clamd, DNS blocklists, greylisting,
//! the email-authentication checks) is asked at one or more [`Hook`]s of
//! an SMTP transaction and answers with a [`Verdict`]: go on, reject,
//! tempfail, discard, quarantine, plus header [`Change`]s. The pipeline
//! ([`Outcome`]) folds the verdicts of the stages in their configured
//! order. The runtime (`tern-net`'s `filter` module) owns the sockets,
//! the timeouts and the spooled message; everything here is a pure
//! function of its inputs, time included, so it is tested without sockets
//! and fuzzed:
//!
//! - [`milter`]: the Sendmail milter protocol version 6, MTA side
//!   (negotiation, macros, every command, every reply and modification).
//! - [`clamd`]: clamd's `INSTREAM` framing and replies.
//! - [`http`] and [`rspamd`]: a small HTTP/1.1 codec and rspamd's
//!   `/checkv2` request headers and JSON reply, mapped to a verdict.
//! - [`dnsbl`]: blocklist query names (IPv4, IPv6 nibbles), the meaning of
//!   answers (Spamhaus ZEN), weights and threshold.
//! - [`greylist`]: postgrey's greylisting on an injected clock, with a
//!   bounded store (in memory, or SQLite).
//! - [`header`]: the header section as a list of fields that header
//!   changes apply to.
//! - [`config`]: the `[[filter]]` tables of the configuration file (this
//!   crate owns that section: its types, defaults and validation), and
//!   [`endpoint`]: the scanner addresses written in them.
//!
//! This crate never opens a socket, never reads a clock and never holds a
//! message body: bodies pass through in caller-sized chunks.
//!
//! ```
//! use tern_filter::{Outcome, Verdict, Hook};
//! let mut outcome = Outcome::default();
//! outcome.record("dnsbl", Hook::Connect, Verdict::pass("none"), std::time::Duration::ZERO);
//! assert!(outcome.stopped().is_none());
//! ```
#![forbid(unsafe_code)]

pub mod clamd;
pub mod config;
pub mod dnsbl;
pub mod endpoint;
pub mod greylist;
pub mod header;
pub mod http;
pub mod milter;
pub mod rspamd;
mod verdict;

pub use verdict::{Action, Change, FailMode, Hook, Hooks, Outcome, StageResult, Verdict};
