//! Tern's durable message spool.
//!
//! The spool is where a message lives from the end of DATA until every
//! recipient is delivered, bounced or expired. Its one promise:
//!
//! > When [`PendingCommit::wait`] (or [`PendingCommit::wait_blocking`])
//! > returns `Ok`, the message bytes, its [`Envelope`] and the directory
//! > entry naming it are on stable storage. Only then may the SMTP server
//! > answer `250`.
//!
//! To keep that promise cheap under load, commits go through one **group
//! committer** thread: every commit queued while a batch is being synced
//! joins the next batch, whose files are `fdatasync`ed (in parallel), renamed
//! from `tmp/` to `queue/`, and covered by a single `fsync` of `queue/`.
//! [`Spool::stats`] shows how many batches served how many commits. A message
//! made with [`Spool::create_delivered`] is committed by the same batches
//! but renamed into a directory of the caller's (a Maildir's `new/`) instead
//! of `queue/`: delivered at intake, it is never queued.
//!
//! Recipient progress is kept in an append-only, fsynced state file per
//! message so that a retry never re-delivers to a recipient already done:
//! [`Spool::record_state`] and [`Spool::recipient_states`] persist each
//! recipient's [`RecipientState`] (pending, delivered, deferred with its next
//! attempt, failed, expired), and [`Spool::set_hold`] a message's hold flag.
//! The pure side — [`RetrySchedule`] and the [`on_result`] transitions, with
//! time as an argument — lives in [`schedule`] and [`recipient`].
//!
//! What this crate must never do: resolve a commit before its fsyncs, make a
//! half-received message visible, use client-supplied text as a path, or
//! crash recovery over one unreadable file (it goes to `corrupt/`).
//!
//! ```no_run
//! # fn main() -> Result<(), tern_queue::SpoolError> {
//! use tern_queue::{Envelope, Spool, SpoolOptions};
//! let spool = Spool::open(std::path::Path::new("/var/spool/tern"), SpoolOptions::default())?;
//! let mut msg = spool.create()?;
//! msg.write(b"Subject: hi\r\n\r\nhello\r\n")?;
//! # let envelope: Envelope = unimplemented!();
//! let id = msg.commit(&envelope)?.wait_blocking()?; // now answer 250
//! # let _ = id; Ok(()) }
//! ```
#![forbid(unsafe_code)]

pub mod committer;
pub mod envelope;
pub mod error;
pub mod id;
pub mod journal;
pub mod recipient;
pub mod schedule;
pub mod scheduler;
pub mod spool;
mod state;
pub mod store;

pub use committer::{BATCH_SIZE_BOUNDS, BATCH_SIZE_BUCKETS, PendingCommit, SpoolStats};
pub use envelope::{Envelope, Recipient, UnreadableAddress};
pub use error::SpoolError;
pub use id::{IdGenerator, InvalidQueueId, QueueId};
pub use journal::Journal;
pub use recipient::{
    Answer, AttemptResult, LocalCause, LocalError, MAX_REPLY, RecipientState, enhanced_status,
    on_expiry, on_result,
};
pub use schedule::{
    DurationError, Next, RetrySchedule, ScheduleError, format_duration, parse_duration,
};
pub use scheduler::{
    DELAY_NOTICE, Destination, Due, Ended, Group, Notice, NoticeKind, Pass, PassReport,
    RecipientReport, ScheduledMessage, ScheduledRecipient, Scheduler, SchedulerConfig,
    delay_warnings_due,
};
pub use spool::{DeliveryLease, IncomingMessage, Spool, SpoolOptions, StoredMessage, WeakSpool};
pub use state::MessageState;
#[doc(hidden)]
pub use state::fuzz_check_state_file;
