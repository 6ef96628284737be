//! Tern's delivery agents.
//!
//! The local MDA: [`deliver_local`] moves the local
//! recipients of a committed spool message into their Maildirs, exactly
//! once, and removes the message when every recipient is done;
//! [`intake::open_delivered`] writes a message with one local recipient
//! straight into its Maildir while it is received (committed, fsynced,
//! by the spool's group committer, never queued); and the
//! [`dsn`] builder, which writes the delivery status notifications
//! (bounces, delay warnings, success notices) sent back to senders.
//! [`outbound`] delivers one message to the recipients of one remote
//! domain over SMTP (MX lookup or a smarthost, opportunistic STARTTLS);
//! [`lmtp`] hands one message to a mailbox server (Dovecot) over LMTP for
//! the mailboxes of a domain configured that way. The queue manager
//! (`tern-net`) schedules both and records their results. [`config`] is
//! the `[delivery]` section of the configuration file, which this crate
//! owns.
//!
//! Local delivery and the DSN builder are synchronous and blocking
//! (fsyncs): the runtime calls them from `spawn_blocking`; [`outbound`]
//! and [`lmtp`] are async (tokio). What it must never do: drop a recipient (a
//! failure is reported as deferred and retried), deliver a recipient twice
//! (the spool's state file and the deterministic Maildir name guard against
//! that, even across a crash), or remove a message that still has
//! recipients to serve.
#![forbid(unsafe_code)]

pub mod config;
pub mod dsn;
pub mod intake;
pub mod lmtp;
pub mod local;
pub mod outbound;

pub use dsn::{
    DsnAction, DsnInput, DsnKind, DsnRecipient, bounce_recipient, build_dsn, recipient_notify,
    rfc5322_date, should_notify,
};
pub use intake::{IntakeError, open_delivered};
pub use lmtp::{LmtpTarget, LmtpTargetError, deliver_lmtp, deliver_lmtp_unsettled};
pub use local::{
    DeliveryError, LocalReport, NOTICE_HEAD, NoticeSource, deliver_local, deliver_local_bytes,
    deliver_local_leased, deliver_local_skipping,
};
