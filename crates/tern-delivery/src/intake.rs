//! Delivery at intake: a message whose only recipient is a local Maildir is
//! written straight into that Maildir while it is being received.
//!
//! [`open_delivered`] asks the mail store where the message goes
//! ([`Mailboxes::delivery_target`]: the quota is checked there), opens the
//! Maildir's `tmp/<name>` through the spool ([`Spool::create_delivered`])
//! and writes the same `Return-Path:` and
//! `Delivered-To:` lines the queued path ([`crate::local`]) adds; the
//! session then streams the message after them. Committing it goes through
//! the spool's group committer: the file is fdatasynced, renamed into
//! `new/<name>` and `new/` is fsynced, shared with every other commit of
//! the batch, before the `250` — so the `250` still means "on stable
//! storage" (invariant 1: "already delivered, fsynced, to every local
//! mailbox"), the message is written once instead of twice, and nothing
//! enters the queue, so there is nothing to deliver twice.
//!
//! The name is [`unique_name`] with the message's queue id and recipient
//! index 0, as the queued path would choose it. A half-received message
//! stays in the Maildir's `tmp/`, which readers never show (and which a
//! dropped [`IncomingMessage`] deletes). This module must never be used
//! for a message with more than one recipient, a remote one, or one that
//! another agent (LMTP) delivers: those are queued.

use tern_queue::{IncomingMessage, Spool, SpoolError};
use tern_store::{Folder, MailboxError, Mailboxes, StoreError, unique_name};

use crate::local::trace_prefix;

/// Why a message could not be delivered at intake (the caller queues it
/// instead).
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum IntakeError {
    /// The mail store refused (over quota: `452 4.2.2`) or could not
    /// create the Maildir.
    #[error(transparent)]
    Store(#[from] MailboxError),
    /// The delivery file name was refused.
    #[error(transparent)]
    Name(#[from] StoreError),
    /// Its file could not be created or written.
    #[error(transparent)]
    Spool(#[from] SpoolError),
}

/// Opens a message for delivery at intake to `mailbox` (a local mailbox
/// key; `address` is the recipient as `Delivered-To:` shows it), with the
/// trace lines for `sender` already written. Blocking (file system).
pub fn open_delivered(
    spool: &Spool,
    store: &Mailboxes,
    hostname: &str,
    received_at: u64,
    sender: &str,
    address: &str,
    mailbox: &str,
) -> Result<IncomingMessage, IntakeError> {
    // Open the file first and create the Maildir only when that fails:
    // the directories exist for every message but a mailbox's first. The
    // size is not known yet: the quota check asks only whether the user
    // is already full; the caller checks again with the size at the end.
    let maildir = store.delivery_target(mailbox, &Folder::Inbox, 0)?;
    let id = spool.next_id();
    let name = unique_name(received_at, id.as_str(), 0, hostname);
    let (tmp, new) = maildir.delivery_paths(&name)?;
    let mut message = match spool.create_delivered(id.clone(), tmp.clone(), new.clone()) {
        Err(e) if e.is_missing_path() => {
            store.prepare_user(mailbox)?;
            spool.create_delivered(id, tmp, new)?
        }
        other => other?,
    };
    message.write(trace_prefix(sender, address).as_bytes())?;
    Ok(message)
}
