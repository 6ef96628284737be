//! Validated value types shared by every Tern crate: the RFC 5321 address
//! grammar ([`address`]), RFC 3463 enhanced status codes ([`status`]), the
//! replies a delivery attempt receives ([`reply`]) and the DSN envelope
//! parameters ([`dsn`]).
//!
//! Types here cannot hold invalid values: they are built by parsing, and
//! their `Display` output parses back to the same value. This crate never
//! does I/O and never decides policy (what is local, what may relay).
//!
//! With the `serde` feature, the status, reply and DSN parameter types,
//! [`Mailbox`] and [`Domain`] are (de)serialised as the text they print,
//! read back through their parsers.
#![forbid(unsafe_code)]

pub mod address;
pub mod dsn;
pub mod duration;
pub mod reply;
#[cfg(feature = "serde")]
mod serde_impls;
pub mod status;

pub use address::{
    AddressError, AddressLiteral, Domain, ForwardPath, Host, LocalPart, Mailbox, ReversePath,
    parse_forward_path, parse_reverse_path,
};
pub use reply::{ParseReplyError, ServerReply};
pub use status::EnhancedStatus;
