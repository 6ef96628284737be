//! The IMAP protocol core of Tern, without I/O.
//!
//! Bytes in, typed commands out; typed responses in, bytes out. The
//! [`framing`] module cuts the client's byte stream into whole commands
//! (lines and literals, with size limits, and the `+` continuations the
//! server owes), [`parse`] turns each into a [`command::Command`],
//! [`encode`] writes commands back (clients, tests), [`response`] writes
//! the server's answers, [`types`] holds the values both share (tags,
//! mailbox names, flags…), [`utf7`] converts IMAP4rev1 mailbox names, and
//! [`session`] runs the server state machine on top of them all, asking the
//! runtime for what it cannot decide (passwords, mailbox contents).
//!
//! It must never touch sockets, files, clocks or an async runtime: the
//! runtime crate drives it and hands it bytes. Everything here is
//! deterministic, unit-testable and fuzzable.
//!
//! ```
//! use tern_imap::framing::{Expect, Frame, Framer, FramingLimits};
//! use tern_imap::command::CommandBody;
//!
//! let mut framer = Framer::new(FramingLimits::default());
//! framer.push(b"a1 LOGIN {5}\r\n");
//! // A synchronising literal: the server must send "+ " before the client goes on.
//! assert_eq!(framer.next(Expect::Command), Some(Frame::Continue));
//! framer.push(b"alice secret\r\n");
//! let Some(Frame::Command(bytes)) = framer.next(Expect::Command) else { panic!() };
//! let cmd = tern_imap::parse::parse_command(&bytes).unwrap();
//! assert_eq!(cmd.tag.as_str(), "a1");
//! assert!(matches!(cmd.body, CommandBody::Login { .. }));
//! ```
#![forbid(unsafe_code)]

pub mod command;
pub mod encode;
pub mod framing;
pub mod parse;
pub mod response;
pub mod session;
pub mod types;
pub mod utf7;
