//! Tern's delivery agents.
//!
//! For now this is the local MDA: [`deliver_local`] moves the local
//! recipients of a committed spool message into their Maildirs, exactly
//! once, and removes the message when every recipient is done. Outbound
//! SMTP delivery (MX lookup, the client, retries, DSNs) comes later; remote
//! recipients stay pending in the spool meanwhile.
//!
//! Everything here is synchronous and blocking (fsyncs): the runtime calls
//! it from `spawn_blocking`. What it must never do: drop a recipient (a
//! failure is reported as deferred and retried), deliver a recipient twice
//! (the spool's state file and the deterministic Maildir name guard against
//! that, even across a crash), or remove a message that still has
//! recipients to serve.
#![forbid(unsafe_code)]

pub mod local;

pub use local::{DeliveryError, LocalReport, deliver_local};
