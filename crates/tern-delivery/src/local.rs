//! Local delivery: spool → Maildir, exactly once.
//!
//! For each local recipient of a message that the spool's state file does
//! not list as done:
//!
//! 1. `name = unique_name(received_at, id, index, hostname)`; the name is
//!    the same on every attempt, so a copy left by an interrupted attempt
//!    can be recognised;
//! 2. unless this is the message's first attempt in this process, look for
//!    that name in the Maildir (`new/`, `cur/`): a crash after the rename
//!    but before step 4 left it there, so only step 4 remains;
//! 3. otherwise write `Return-Path:` and `Delivered-To:` followed by the
//!    stored message bytes to the Maildir's `tmp/` and hand the file to the
//!    spool's group committer, which fdatasyncs it, renames it into `new/`
//!    and fsyncs `new/`. Every recipient of the message is written first and
//!    then all their commits are awaited together, so they share batches
//!    (their fdatasyncs run in parallel, and one `new/` fsync serves every
//!    copy that batch put in that directory, this message's and others');
//! 4. durably record the recipient as done in the spool — unless every
//!    recipient of the message is done after this pass: then the message
//!    is removed from the spool instead (one directory fsync), and the
//!    state records would be written only to be deleted. A crash before
//!    that removal is durable is step 2's case: the retry finds every copy
//!    under its name and records it instead of writing it again.
//!
//! A recipient that fails is reported as deferred (and retried by the
//! caller); the others are still delivered. When every recipient is done
//! the message leaves the spool. Remote recipients are counted in
//! [`LocalReport::remote_pending`] and keep the message queued, as do
//! local recipients that [`deliver_local_skipping`] was told to leave to
//! another agent (the mailboxes of a domain delivered over LMTP), counted
//! in [`LocalReport::skipped_local`].
//!
//! Every log line carries `queue_id`. This module must never write a
//! recipient twice, never skip one silently, and never put client-supplied
//! CR/LF into the headers it adds.

use std::collections::BTreeSet;
use std::io::Read;

use tern_queue::{
    DeliveryLease, LocalCause, LocalError, PendingCommit, QueueId, Recipient, Spool, SpoolError,
    StoredMessage,
};
use tern_store::{Folder, MailboxError, Mailboxes, StoreError, unique_name};
use tern_types::EnhancedStatus;
use tracing::{debug, info, warn};

/// Bytes read from the spool file and written to a Maildir copy at a time.
const COPY_BUFFER: usize = 64 * 1024;

/// What one [`deliver_local`] call did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LocalReport {
    /// Recipients delivered (or found already delivered) by this call:
    /// `(index, mailbox key)`.
    pub delivered: Vec<(usize, String)>,
    /// Recipients that failed and must be retried: `(index, address,
    /// error)`, the error typed ([`LocalCause::Quota`] with `4.2.2` for a
    /// full mailbox, [`LocalCause::Storage`] with `4.3.0` otherwise; shown
    /// as `452 4.2.2 …` / `451 4.3.0 …`).
    pub deferred: Vec<(usize, String, LocalError)>,
    /// Remote recipients not yet done (they wait for outbound delivery).
    pub remote_pending: usize,
    /// Local recipients not yet done that the `skip` predicate of
    /// [`deliver_local_skipping`] left to another agent (LMTP); like
    /// remote ones they keep the message in the spool.
    pub skipped_local: usize,
    /// Whether the message was removed from the spool (all recipients done).
    pub removed: bool,
    /// The message was no longer in the spool (already finished), or
    /// another attempt in this process was working on it: nothing to do.
    pub skipped: bool,
    /// When a recipient delivered by this call asked for a success notice
    /// (`NOTIFY=SUCCESS`): what the notice needs, taken before the message
    /// may have left the spool.
    pub notice_source: Option<NoticeSource>,
}

/// What a delivery notice needs of a message: its envelope and the start
/// of its content (at most [`NOTICE_HEAD`] bytes: the header section).
#[derive(Debug, Clone, PartialEq)]
pub struct NoticeSource {
    /// The message's envelope.
    pub envelope: tern_queue::Envelope,
    /// The first bytes of the message, enough for its header section.
    pub head: Vec<u8>,
}

/// How much of a message a success notice keeps (its headers).
pub const NOTICE_HEAD: u64 = 256 * 1024;

/// Why a delivery attempt could not even start (the message as a whole).
/// Per-recipient failures are not errors: they are [`LocalReport::deferred`].
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum DeliveryError {
    /// The spool could not be read or updated (includes a corrupt queue
    /// file, which the spool has moved aside).
    #[error(transparent)]
    Spool(#[from] SpoolError),
}

/// Why one recipient failed.
#[derive(Debug, thiserror::Error)]
enum RecipientError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Mailbox(#[from] MailboxError),
    #[error(transparent)]
    Spool(#[from] SpoolError),
}

impl RecipientError {
    /// The failure as the delivery attempt records it (and a delay or
    /// failure notice shows it).
    fn error(&self) -> LocalError {
        match self {
            RecipientError::Mailbox(MailboxError::OverQuota { .. }) => LocalError::new(
                LocalCause::Quota,
                EnhancedStatus::new(4, 2, 2),
                &format!("Mailbox full: {self}"),
            ),
            other => storage_error(other),
        }
    }
}

/// A local storage failure (`451 4.3.0 …`).
fn storage_error(e: &dyn std::fmt::Display) -> LocalError {
    LocalError::new(
        LocalCause::Storage,
        EnhancedStatus::new(4, 3, 0),
        &e.to_string(),
    )
}

/// Deliver every local recipient of `id` not yet done; returns what
/// happened. Blocking: call it off the async runtime.
///
/// Idempotent: calling it again after a crash or a deferral delivers only
/// what is still missing. A message that has already left the spool, or
/// that another call in this process is working on, gives an empty report
/// with `skipped` set.
pub fn deliver_local(
    spool: &Spool,
    store: &Mailboxes,
    hostname: &str,
    id: &QueueId,
) -> Result<LocalReport, DeliveryError> {
    deliver_local_skipping(spool, store, hostname, id, &|_| false)
}

/// [`deliver_local`], except that local recipients whose mailbox key
/// `skip` returns true for are left alone (not written, not recorded) and
/// counted in [`LocalReport::skipped_local`]; the message then stays in
/// the spool for whoever delivers them (the queue manager, over LMTP).
pub fn deliver_local_skipping(
    spool: &Spool,
    store: &Mailboxes,
    hostname: &str,
    id: &QueueId,
    skip: &dyn Fn(&str) -> bool,
) -> Result<LocalReport, DeliveryError> {
    let Some(lease) = spool.lease(id) else {
        debug!(queue_id = %id, "delivery already in progress in this process");
        return Ok(LocalReport {
            skipped: true,
            ..LocalReport::default()
        });
    };
    deliver_local_leased(spool, store, hostname, &lease, skip)
}

/// [`deliver_local_skipping`] for a caller that already holds the message's
/// delivery lease (the queue manager holds it for a whole pass, local and
/// remote, so that `tern queue delete|bounce` never cut an attempt in
/// half). Blocking.
pub fn deliver_local_leased(
    spool: &Spool,
    store: &Mailboxes,
    hostname: &str,
    lease: &DeliveryLease,
    skip: &dyn Fn(&str) -> bool,
) -> Result<LocalReport, DeliveryError> {
    let id = lease.id();
    let first_attempt = spool.claim_first_attempt(id);
    let message = match spool.open_message(id) {
        Ok(m) => m,
        Err(SpoolError::NotFound(_)) => {
            debug!(queue_id = %id, "message no longer in the spool");
            return Ok(LocalReport {
                skipped: true,
                ..LocalReport::default()
            });
        }
        Err(e) => {
            warn!(queue_id = %id, error = %e, "cannot open queued message");
            return Err(e.into());
        }
    };
    let done = spool.done(id)?;
    let attempt = Attempt {
        spool,
        store,
        hostname,
        id,
        envelope: &message.envelope,
        source: Source::Spool(&message),
        first_attempt,
    };
    let mut report = LocalReport::default();
    let written = attempt.write_copies(&done, skip, &mut report)?;

    if report.deferred.is_empty() && report.remote_pending == 0 && report.skipped_local == 0 {
        // Every recipient is done: removing the message records that.
        drop(message);
        spool.remove(id)?;
        report.removed = true;
        report.delivered = written.into_iter().map(|(i, m, _)| (i, m)).collect();
        debug!(queue_id = %id, "all recipients done; removed from the spool");
        return Ok(report);
    }
    // Others remain: record each delivered recipient as done.
    for (index, mailbox, outcome) in written {
        match spool.record_done(id, index, &outcome) {
            Ok(()) => report.delivered.push((index, mailbox)),
            Err(e) => {
                // Delivered but not recorded: the retry finds the copy (step 2).
                warn!(queue_id = %id, rcpt = index, mailbox = %mailbox, error = %e,
                    "cannot record a local delivery; will look again");
                let address = message.envelope.recipients[index]
                    .address_text()
                    .into_owned();
                report.deferred.push((index, address, storage_error(&e)));
            }
        }
    }
    Ok(report)
}

/// Local delivery of a message whose queue is not this node's spool (a
/// database several nodes share): the same copies, names and group commits
/// as [`deliver_local_leased`], from `body` in memory, skipping the
/// recipients in `done`. Records nothing and removes nothing: returns the
/// report (its `delivered` written and durable) and, for each delivered
/// recipient, the outcome the caller records under its queue lease. A copy
/// an interrupted attempt left is found by its name and not written again.
/// Blocking.
#[allow(clippy::too_many_arguments)]
pub fn deliver_local_bytes(
    spool: &Spool,
    store: &Mailboxes,
    hostname: &str,
    id: &QueueId,
    envelope: &tern_queue::Envelope,
    body: &[u8],
    done: &BTreeSet<usize>,
    skip: &dyn Fn(&str) -> bool,
) -> Result<(LocalReport, Vec<(usize, String)>), DeliveryError> {
    let attempt = Attempt {
        spool,
        store,
        hostname,
        id,
        envelope,
        source: Source::Bytes(body),
        // Another process (this node before a restart) may have written
        // a copy: always look for it.
        first_attempt: false,
    };
    let mut report = LocalReport::default();
    let written = attempt.write_copies(done, skip, &mut report)?;
    let mut outcomes = Vec::with_capacity(written.len());
    for (index, mailbox, outcome) in written {
        report.delivered.push((index, mailbox));
        outcomes.push((index, outcome));
    }
    Ok((report, outcomes))
}

/// What [`Attempt::write_one`] did for one recipient.
enum Written {
    /// A copy from an interrupted attempt is already there: the outcome
    /// to record.
    Found(String),
    /// The copy is written and with the committer; wait before recording.
    Committing(PendingCommit),
}

/// Where a local delivery reads the message's bytes.
#[derive(Clone, Copy)]
enum Source<'a> {
    /// The spool's queue file.
    Spool(&'a StoredMessage),
    /// The message in memory (read from a shared queue database).
    Bytes(&'a [u8]),
}

impl<'a> Source<'a> {
    fn reader(self) -> Result<Box<dyn Read + 'a>, SpoolError> {
        match self {
            Source::Spool(m) => Ok(Box::new(m.reader()?)),
            Source::Bytes(b) => Ok(Box::new(b)),
        }
    }

    /// For error messages: the file read, if any.
    fn path(self) -> std::path::PathBuf {
        match self {
            Source::Spool(m) => m.path().to_owned(),
            Source::Bytes(_) => std::path::PathBuf::from("(message in memory)"),
        }
    }
}

/// One delivery attempt of one message.
struct Attempt<'a> {
    spool: &'a Spool,
    store: &'a Mailboxes,
    hostname: &'a str,
    id: &'a QueueId,
    envelope: &'a tern_queue::Envelope,
    source: Source<'a>,
    /// No earlier attempt can have left a copy in any Maildir.
    first_attempt: bool,
}

impl<'a> Attempt<'a> {
    /// Writes every local recipient of the message that is not in `done`
    /// and not skipped, and waits until each copy is durable in `new/`:
    /// returns `(index, mailbox, outcome)` for each, recording nothing.
    /// Failures go to `report.deferred`; remote and skipped recipients are
    /// counted there; the notice source is taken when a delivered
    /// recipient asked for a success notice.
    fn write_copies(
        &self,
        done: &BTreeSet<usize>,
        skip: &dyn Fn(&str) -> bool,
        report: &mut LocalReport,
    ) -> Result<Vec<(usize, String, String)>, DeliveryError> {
        // Delivered by this pass, not yet recorded: (index, mailbox, outcome).
        let mut written: Vec<(usize, String, String)> = Vec::new();
        // Written and handed to the committer, not yet durable.
        let mut committing: Vec<(usize, String, PendingCommit)> = Vec::new();
        // One copy buffer for every recipient of the message.
        let mut buf = vec![0u8; COPY_BUFFER];
        for (index, rcpt) in self.envelope.recipients.iter().enumerate() {
            if done.contains(&index) {
                continue;
            }
            let Some(mailbox) = &rcpt.mailbox else {
                report.remote_pending += 1;
                continue;
            };
            if skip(mailbox) {
                report.skipped_local += 1;
                continue;
            }
            match self.write_one(index, rcpt, mailbox, &mut buf) {
                Ok(Written::Found(outcome)) => written.push((index, mailbox.clone(), outcome)),
                Ok(Written::Committing(pending)) => {
                    committing.push((index, mailbox.clone(), pending))
                }
                Err(e) => {
                    warn!(queue_id = %self.id, rcpt = index, mailbox = %mailbox, error = %e,
                        "local delivery deferred");
                    report
                        .deferred
                        .push((index, rcpt.address_text().into_owned(), e.error()));
                }
            }
        }
        // Every copy is written; now wait until each is durable in `new/`.
        for (index, mailbox, pending) in committing {
            match pending.wait_blocking() {
                Ok(_) => {
                    debug!(queue_id = %self.id, rcpt = index, mailbox = %mailbox, "written to Maildir");
                    written.push((index, mailbox.clone(), format!("delivered to {mailbox}")));
                }
                Err(e) => {
                    warn!(queue_id = %self.id, rcpt = index, mailbox = %mailbox, error = %e,
                        "local delivery deferred");
                    let address = self.envelope.recipients[index].address_text().into_owned();
                    report.deferred.push((index, address, storage_error(&e)));
                }
            }
        }
        written.sort_by_key(|(index, _, _)| *index);

        let wants_notice = written.iter().any(|(index, _, _)| {
            self.envelope
                .recipients
                .get(*index)
                .is_some_and(|r| crate::dsn::should_notify(r, crate::dsn::DsnKind::Success))
        });
        if wants_notice {
            let mut head = Vec::new();
            std::io::Read::read_to_end(
                &mut std::io::Read::take(self.source.reader()?, NOTICE_HEAD),
                &mut head,
            )
            .map_err(|source| SpoolError::Io {
                op: "read",
                path: self.source.path(),
                source,
            })?;
            report.notice_source = Some(NoticeSource {
                envelope: self.envelope.clone(),
                head,
            });
        }
        Ok(written)
    }

    /// Writes the copy for recipient `index` to the Maildir's `tmp/` and
    /// hands it to the group committer (or finds the copy an interrupted
    /// attempt left). Records nothing itself.
    fn write_one(
        &self,
        index: usize,
        rcpt: &Recipient,
        mailbox: &str,
        buf: &mut [u8],
    ) -> Result<Written, RecipientError> {
        let id = self.id;
        let folder = if self.envelope.quarantine {
            Folder::Junk
        } else {
            Folder::Inbox
        };
        let name = unique_name(self.envelope.received_at, id.as_str(), index, self.hostname);
        let prefix = trace_prefix(&self.envelope.sender_text(), &rcpt.address_text());
        // Through the mail store: the folder, the quota (452 4.2.2 when
        // full), the Maildir created at a mailbox's first message.
        let size = self.envelope.size + prefix.len() as u64;
        let mut maildir = self.store.delivery_target(mailbox, &folder, size)?;
        if !maildir.exists() {
            self.store.prepare_user(mailbox)?;
            maildir = self.store.delivery_target(mailbox, &folder, size)?;
        }
        if !self.first_attempt && maildir.contains(&name)? {
            info!(queue_id = %id, rcpt = index, mailbox = %mailbox,
                "already in the Maildir from an interrupted attempt; recording it as done");
            return Ok(Written::Found(format!(
                "delivered to {mailbox} (found on retry)"
            )));
        }
        let (tmp, new) = maildir.delivery_paths(&name)?;
        if !self.first_attempt {
            // A stale `tmp/<name>` from an interrupted attempt is replaced.
            let _ = std::fs::remove_file(&tmp);
        }
        // Dropped unfinished (an error below), it removes its tmp file.
        let mut copy = self.spool.create_delivered(id.clone(), tmp, new)?;
        copy.write(prefix.as_bytes())?;
        let mut body = self.source.reader()?;
        loop {
            let n = match body.read(buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(source) => {
                    return Err(SpoolError::Io {
                        op: "read",
                        path: self.source.path(),
                        source,
                    }
                    .into());
                }
            };
            copy.write(&buf[..n])?;
        }
        // The envelope is not stored for a delivered file.
        Ok(Written::Committing(copy.commit(self.envelope)?))
    }
}

/// `Return-Path: <sender>\r\nDelivered-To: address\r\n`, with anything that
/// could end or fold a header line (control characters) replaced.
pub(crate) fn trace_prefix(sender: &str, address: &str) -> String {
    let mut out = String::with_capacity(48 + sender.len() + address.len());
    out.push_str("Return-Path: <");
    push_clean(&mut out, sender);
    out.push_str(">\r\nDelivered-To: ");
    push_clean(&mut out, address);
    out.push_str("\r\n");
    out
}

fn push_clean(out: &mut String, text: &str) {
    for c in text.chars() {
        out.push(if c.is_control() { '?' } else { c });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trace_prefix_is_two_clean_header_lines() {
        assert_eq!(
            trace_prefix("a@b.test", "alice@example.test"),
            "Return-Path: <a@b.test>\r\nDelivered-To: alice@example.test\r\n"
        );
        assert_eq!(
            trace_prefix("", "alice@example.test"),
            "Return-Path: <>\r\nDelivered-To: alice@example.test\r\n"
        );
        let evil = trace_prefix("x@y\r\nBcc: z@w", "a\nb@c\0");
        assert_eq!(evil.matches("\r\n").count(), 2);
        assert!(!evil.contains('\0'));
        assert!(evil.contains("x@y??Bcc: z@w"));
    }
}
