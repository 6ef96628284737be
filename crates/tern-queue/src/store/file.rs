//! [`FileStore`]: today's [`Spool`] as a [`QueueStore`].
//!
//! The spool, its group committer and its on-disk format are used as they
//! are: a commit is [`IncomingMessage::commit`] awaited through its
//! [`PendingCommit`](crate::PendingCommit); states, notices and holds are the
//! spool's fsynced state-file records. What the adapter adds is the lease
//! with an expiry, kept in memory and shared by every clone of one
//! `FileStore` (one spool directory has one process: the spool lock). Each
//! lease also holds the spool's own [`DeliveryLease`], so code that still
//! calls [`Spool::lease`] directly and code using the store never run two
//! passes over one message at once. Blocking filesystem calls run on tokio's
//! blocking pool.
//!
//! [`list_due`](QueueStore::list_due) and [`lease_due`](QueueStore::lease_due)
//! read every queued message's envelope and state file (a scan of
//! `queue/`): right for start-up and the admin commands; a delivery driver
//! keeps its due set in memory (the scheduler) and leases by id.
//!
//! What this module must never do: write a record for a holder whose lease
//! was taken over (writers hold the lease table's read lock while they
//! write, a takeover its write lock), or keep a lease past a restart (it is
//! memory: a process that dies takes its leases with it).

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, BufReader, Read};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

use super::{DueMessage, IncomingBody, Lease, OpenedMessage, QueueStore, StoreError, due_at};
use crate::SpoolError;
use crate::envelope::Envelope;
use crate::id::QueueId;
use crate::recipient::RecipientState;
use crate::spool::MessageReader;
use crate::spool::{DeliveryLease, IncomingMessage, Spool};
use crate::state::MessageState;

/// The spool as a [`QueueStore`]. Clones share the spool and the leases.
#[derive(Debug, Clone)]
pub struct FileStore {
    spool: Spool,
    leases: Arc<RwLock<HashMap<QueueId, Held>>>,
    tokens: Arc<AtomicU64>,
}

#[derive(Debug)]
struct Held {
    token: u64,
    expires: u64,
    /// The spool's own lease, held as long as this one (shared with a
    /// local delivery running under it: [`FileStore::spool_lease`]).
    spool_lease: Arc<DeliveryLease>,
}

/// What went wrong in the [`FileStore`].
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum FileStoreError {
    /// The spool failed.
    #[error(transparent)]
    Spool(#[from] SpoolError),
    /// The lease on this message was taken over after it expired.
    #[error("queue: the lease on {0} was lost (it expired and was taken over)")]
    LeaseLost(QueueId),
    /// A blocking spool task did not finish (it panicked, or the runtime is
    /// shutting down).
    #[error("queue: a spool task did not finish: {0}")]
    Task(#[source] tokio::task::JoinError),
}

impl StoreError for FileStoreError {
    fn is_not_found(&self) -> bool {
        matches!(self, FileStoreError::Spool(e) if e.is_not_found())
    }

    fn is_lease_lost(&self) -> bool {
        matches!(self, FileStoreError::LeaseLost(_))
    }
}

impl IncomingBody for IncomingMessage {
    type Error = FileStoreError;

    fn id(&self) -> &QueueId {
        IncomingMessage::id(self)
    }

    fn size(&self) -> u64 {
        IncomingMessage::size(self)
    }

    fn write(&mut self, data: &[u8]) -> Result<(), FileStoreError> {
        Ok(IncomingMessage::write(self, data)?)
    }
}

/// The bytes of a queued message (an owned, buffered reader over the queue
/// file, stopping before the envelope).
#[derive(Debug)]
pub struct FileBody(BufReader<MessageReader<File>>);

impl Read for FileBody {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.read(buf)
    }
}

impl FileStore {
    /// The store over `spool` (already opened; see [`Spool::open`]).
    pub fn new(spool: Spool) -> FileStore {
        FileStore {
            spool,
            leases: Arc::new(RwLock::new(HashMap::new())),
            tokens: Arc::new(AtomicU64::new(1)),
        }
    }

    /// The spool underneath (for the intake fast path, which commits
    /// Maildir deliveries through the same group committer).
    pub fn spool(&self) -> &Spool {
        &self.spool
    }

    /// The spool's delivery lease under `lease`, for the local delivery
    /// functions that work on the spool directly
    /// (`tern_delivery::deliver_local_leased`); a lease-lost error when
    /// `lease` is no longer current.
    pub fn spool_lease(&self, lease: &Lease) -> Result<Arc<DeliveryLease>, FileStoreError> {
        match self.read_leases().get(&lease.id) {
            Some(held) if held.token == lease.token => Ok(Arc::clone(&held.spool_lease)),
            _ => Err(FileStoreError::LeaseLost(lease.id.clone())),
        }
    }

    fn read_leases(&self) -> RwLockReadGuard<'_, HashMap<QueueId, Held>> {
        self.leases.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write_leases(&self) -> RwLockWriteGuard<'_, HashMap<QueueId, Held>> {
        self.leases.write().unwrap_or_else(|e| e.into_inner())
    }

    /// Run `f` on the blocking pool with a clone of the store.
    async fn blocking<T, F>(&self, f: F) -> Result<T, FileStoreError>
    where
        T: Send + 'static,
        F: FnOnce(&FileStore) -> Result<T, FileStoreError> + Send + 'static,
    {
        let store = self.clone();
        tokio::task::spawn_blocking(move || f(&store))
            .await
            .map_err(FileStoreError::Task)?
    }

    /// Run `f` while `lease` is current (the lease table read-locked, so no
    /// takeover can happen meanwhile).
    fn under_lease<T>(
        &self,
        lease: &Lease,
        f: impl FnOnce() -> Result<T, FileStoreError>,
    ) -> Result<T, FileStoreError> {
        let leases = self.read_leases();
        match leases.get(&lease.id) {
            Some(held) if held.token == lease.token => f(),
            _ => {
                // A deleted message is reported as such, not as a lost lease.
                self.spool.is_held(&lease.id)?;
                Err(FileStoreError::LeaseLost(lease.id.clone()))
            }
        }
    }

    /// Envelope recipient count and state of `id`, one read each.
    fn state_of(&self, id: &QueueId) -> Result<MessageState, FileStoreError> {
        let count = self.spool.open_message(id)?.envelope.recipients.len();
        Ok(self.spool.message_state(id, count)?)
    }

    /// Take the lease on `id` if free or expired: `Ok(None)` while an
    /// unexpired lease holds it, not found once it is gone. Called with the
    /// lease table write-locked; the message is looked up under that lock,
    /// because a remove deletes the files before it drops its lease (so a
    /// message without a lease entry but with files is still queued).
    fn try_lease(
        &self,
        leases: &mut HashMap<QueueId, Held>,
        id: &QueueId,
        now: u64,
        ttl: u64,
    ) -> Result<Option<Lease>, FileStoreError> {
        if leases.get(id).is_some_and(|held| held.expires > now) {
            return Ok(None);
        }
        self.spool.is_held(id)?;
        // An expired lease: drop it (and its spool lease) first.
        leases.remove(id);
        let Some(spool_lease) = self.spool.lease(id) else {
            return Ok(None);
        };
        let token = self.tokens.fetch_add(1, Ordering::Relaxed);
        let expires = now.saturating_add(ttl);
        leases.insert(
            id.clone(),
            Held {
                token,
                expires,
                spool_lease: Arc::new(spool_lease),
            },
        );
        Ok(Some(Lease {
            id: id.clone(),
            token,
            expires,
        }))
    }

    /// Every message not held, not under an unexpired lease and due at
    /// `now`, in due order.
    fn due_now(&self, now: u64) -> Result<Vec<DueMessage>, FileStoreError> {
        let mut due = Vec::new();
        for id in self.spool.list()? {
            if self.read_leases().get(&id).is_some_and(|h| h.expires > now) {
                continue;
            }
            let state = match self.state_of(&id) {
                Ok(s) => s,
                // Removed meanwhile, or corrupt (moved aside): not due.
                Err(FileStoreError::Spool(
                    SpoolError::NotFound(_) | SpoolError::Corrupt { .. },
                )) => continue,
                Err(e) => return Err(e),
            };
            let at = due_at(&state.states);
            if !state.held && at <= now {
                due.push(DueMessage { id, due_at: at });
            }
        }
        due.sort_by(|a, b| (a.due_at, &a.id).cmp(&(b.due_at, &b.id)));
        Ok(due)
    }
}

impl QueueStore for FileStore {
    type Error = FileStoreError;
    type Incoming = IncomingMessage;
    type Body = FileBody;

    fn create(&self) -> Result<IncomingMessage, FileStoreError> {
        Ok(self.spool.create()?)
    }

    async fn commit(
        &self,
        incoming: IncomingMessage,
        envelope: &Envelope,
    ) -> Result<QueueId, FileStoreError> {
        Ok(incoming.commit(envelope)?.wait().await?)
    }

    async fn open(&self, id: &QueueId) -> Result<OpenedMessage<FileBody>, FileStoreError> {
        let id = id.clone();
        self.blocking(move |store| {
            let message = store.spool.open_message(&id)?;
            let envelope = message.envelope.clone();
            let (file, data_len) = message.into_file();
            Ok(OpenedMessage {
                id,
                envelope,
                data_len,
                body: FileBody(BufReader::with_capacity(
                    64 * 1024,
                    MessageReader::new(file, data_len),
                )),
            })
        })
        .await
    }

    async fn list(&self) -> Result<Vec<QueueId>, FileStoreError> {
        self.blocking(|store| Ok(store.spool.list()?)).await
    }

    async fn list_due(&self, now: u64, limit: usize) -> Result<Vec<DueMessage>, FileStoreError> {
        self.blocking(move |store| {
            let mut due = store.due_now(now)?;
            due.truncate(limit);
            Ok(due)
        })
        .await
    }

    async fn lease(
        &self,
        id: &QueueId,
        now: u64,
        ttl: u64,
    ) -> Result<Option<Lease>, FileStoreError> {
        let id = id.clone();
        self.blocking(move |store| store.try_lease(&mut store.write_leases(), &id, now, ttl))
            .await
    }

    async fn lease_due(
        &self,
        now: u64,
        ttl: u64,
        limit: usize,
    ) -> Result<Vec<Lease>, FileStoreError> {
        self.blocking(move |store| {
            let due = store.due_now(now)?;
            let mut leases = store.write_leases();
            let mut taken = Vec::new();
            for d in due {
                if taken.len() >= limit {
                    break;
                }
                match store.try_lease(&mut leases, &d.id, now, ttl) {
                    Ok(Some(lease)) => taken.push(lease),
                    // Leased or removed since the listing.
                    Ok(None) => {}
                    Err(e) if e.is_not_found() => {}
                    Err(e) => return Err(e),
                }
            }
            Ok(taken)
        })
        .await
    }

    async fn renew(&self, lease: &Lease, now: u64, ttl: u64) -> Result<Lease, FileStoreError> {
        let mut leases = self.write_leases();
        match leases.get_mut(&lease.id) {
            Some(held) if held.token == lease.token => {
                held.expires = now.saturating_add(ttl);
                Ok(Lease {
                    expires: held.expires,
                    ..lease.clone()
                })
            }
            _ => Err(FileStoreError::LeaseLost(lease.id.clone())),
        }
    }

    async fn release(&self, lease: Lease) -> Result<(), FileStoreError> {
        let mut leases = self.write_leases();
        if leases
            .get(&lease.id)
            .is_some_and(|h| h.token == lease.token)
        {
            leases.remove(&lease.id);
        }
        Ok(())
    }

    async fn record_states(
        &self,
        lease: &Lease,
        states: &[(usize, RecipientState)],
    ) -> Result<(), FileStoreError> {
        let (lease, states) = (lease.clone(), states.to_vec());
        self.blocking(move |store| {
            store.under_lease(&lease, || {
                Ok(store.spool.record_states(&lease.id, &states)?)
            })
        })
        .await
    }

    async fn record_notices(
        &self,
        lease: &Lease,
        indices: &[usize],
        kind: &str,
    ) -> Result<(), FileStoreError> {
        let (lease, indices, kind) = (lease.clone(), indices.to_vec(), kind.to_owned());
        self.blocking(move |store| {
            store.under_lease(&lease, || {
                Ok(store.spool.record_notices(&lease.id, &indices, &kind)?)
            })
        })
        .await
    }

    async fn remove(&self, lease: Lease) -> Result<(), FileStoreError> {
        self.blocking(move |store| {
            store.under_lease(&lease, || {
                store.spool.is_held(&lease.id)?;
                Ok(store.spool.remove(&lease.id)?)
            })?;
            store.write_leases().remove(&lease.id);
            Ok(())
        })
        .await
    }

    async fn message_state(&self, id: &QueueId) -> Result<MessageState, FileStoreError> {
        let id = id.clone();
        self.blocking(move |store| store.state_of(&id)).await
    }

    async fn read_back(&self, id: &QueueId) -> Result<(Envelope, MessageState), FileStoreError> {
        let id = id.clone();
        // One open: the state file's recipient count is the envelope's.
        self.blocking(move |store| {
            let message = store.spool.open_message(&id)?;
            let count = message.envelope.recipients.len();
            let state = store.spool.message_state(&id, count)?;
            Ok((message.envelope, state))
        })
        .await
    }

    async fn history(&self, id: &QueueId) -> Result<Vec<(usize, RecipientState)>, FileStoreError> {
        let id = id.clone();
        self.blocking(move |store| Ok(store.spool.recipient_history(&id)?))
            .await
    }

    async fn set_hold(&self, id: &QueueId, held: bool) -> Result<(), FileStoreError> {
        let id = id.clone();
        self.blocking(move |store| Ok(store.spool.set_hold(&id, held)?))
            .await
    }

    async fn delete(&self, id: &QueueId) -> Result<(), FileStoreError> {
        let id = id.clone();
        self.blocking(move |store| {
            store.spool.is_held(&id)?;
            store.spool.remove(&id)?;
            store.write_leases().remove(&id);
            Ok(())
        })
        .await
    }
}

/// The state file's reading rules and [`apply_records`] agree (one
/// definition of "a final state never changes").
#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::apply_records;

    #[test]
    fn apply_records_matches_the_state_file() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(dir.path(), crate::SpoolOptions::default()).unwrap();
        let mut msg = spool.create().unwrap();
        msg.write(b"x\r\n").unwrap();
        let envelope = Envelope {
            recipients: vec![crate::Recipient::new("a@example.test".parse().unwrap()); 2],
            ..Envelope::default()
        };
        let id = msg.commit(&envelope).unwrap().wait_blocking().unwrap();
        let records = vec![
            (
                0,
                RecipientState::Delivered {
                    at: 1,
                    reply: "250".into(),
                },
            ),
            (
                0,
                RecipientState::Deferred {
                    attempts: 1,
                    last_error: "451".into(),
                    next_attempt: 9,
                },
            ),
        ];
        spool.record_states(&id, &records).unwrap();
        assert_eq!(
            spool.message_state(&id, 2).unwrap().states,
            apply_records(2, records)
        );
    }
}
