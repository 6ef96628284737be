//! Change notifications for IMAP IDLE (and any selected session).
//!
//! Each mailbox of an open user store has a `tokio::sync::watch` channel
//! carrying a generation number. Every change the store makes (delivery,
//! append, flag change, expunge, copy, move, or a change found when
//! syncing with the directory) bumps it; a waiter then asks the store for
//! [`changes_since`](super::UserStore::changes_since) its last MODSEQ.
//! The channel needs no runtime to send, and `changed().await` works on
//! any executor.
//!
//! Files written by someone else — another MDA, another process, or
//! Tern's own intake fast path, which renames into `new/` without the
//! store — are noticed by [`UserStore::poll`](super::UserStore::poll)
//! (two `stat`s and one SQLite pragma: call it at most once a second while
//! idle), or at once when the writer calls
//! [`Mailboxes::notify_external`](super::Mailboxes::notify_external).
//!
//! This module must never block a sender: notifying is a counter bump.

use std::collections::HashMap;
use std::sync::Mutex;

use tokio::sync::watch;

use super::index::MailboxId;

/// Waits for changes of one mailbox.
#[derive(Debug, Clone)]
pub struct MailboxWatch {
    rx: watch::Receiver<u64>,
}

impl MailboxWatch {
    /// Waits until the mailbox changed since this watch last saw it.
    /// Returns false if the store was dropped (no more changes will come).
    pub async fn changed(&mut self) -> bool {
        self.rx.changed().await.is_ok()
    }

    /// Whether a change arrived that [`changed`](Self::changed) has not
    /// reported yet (without waiting); marks it seen.
    pub fn take_changed(&mut self) -> bool {
        let changed = self.rx.has_changed().unwrap_or(false);
        if changed {
            self.rx.borrow_and_update();
        }
        changed
    }
}

/// The channels of one user's mailboxes.
#[derive(Debug, Default)]
pub(crate) struct Watchers {
    senders: Mutex<HashMap<MailboxId, watch::Sender<u64>>>,
}

impl Watchers {
    pub(crate) fn watch(&self, id: MailboxId) -> MailboxWatch {
        let mut map = self.senders.lock().unwrap_or_else(|e| e.into_inner());
        let tx = map.entry(id).or_insert_with(|| watch::channel(0).0);
        let mut rx = tx.subscribe();
        rx.borrow_and_update();
        MailboxWatch { rx }
    }

    pub(crate) fn notify(&self, id: MailboxId) {
        let mut map = self.senders.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(tx) = map.get(&id) {
            if tx.receiver_count() == 0 {
                map.remove(&id);
            } else {
                tx.send_modify(|g| *g = g.wrapping_add(1));
            }
        }
    }

    pub(crate) fn notify_all(&self) {
        let mut map = self.senders.lock().unwrap_or_else(|e| e.into_inner());
        map.retain(|_, tx| tx.receiver_count() > 0);
        for tx in map.values() {
            tx.send_modify(|g| *g = g.wrapping_add(1));
        }
    }
}
