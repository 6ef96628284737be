//! The queue's storage seam: [`QueueStore`], what any queue backend must do.
//!
//! A store keeps queued messages (bytes and [`Envelope`]), each recipient's
//! [`RecipientState`], the notices sent, a hold flag, and **leases**: the
//! right, for a limited time, to run one delivery pass over one message.
//! Two backends implement it: [`FileStore`] (today's [`Spool`](crate::Spool)
//! and its group committer, unchanged underneath) and the PostgreSQL store of
//! the `tern-queue-pg` crate, which several Tern nodes share. Both pass the
//! one conformance [`suite`].
//!
//! The promises every store keeps:
//!
//! - [`commit`](QueueStore::commit) resolves `Ok` only once the message and
//!   its envelope are on stable storage: only then may the SMTP server answer
//!   `250`.
//! - A lease is exclusive until it expires: while one holder's lease is
//!   unexpired no other handle (in this process or on another node) gets one
//!   for the same message. An expired lease may be taken over; the old
//!   holder's writes then fail with a lease-lost error
//!   ([`StoreError::is_lease_lost`]) instead of landing — a node that
//!   stalled past its lease cannot overwrite the new holder's results.
//! - A final recipient state (delivered, failed, expired) never changes
//!   again, whatever is recorded after it.
//!
//! **Async, with sync bodies.** The runtime is tokio, and the PostgreSQL
//! backend is network I/O, so every operation that may wait on storage is an
//! `async` method returning a `Send` future (callable from a spawned task;
//! the file backend runs its blocking filesystem calls on tokio's blocking
//! pool, and its commit awaits the group committer's
//! [`PendingCommit`](crate::PendingCommit)). Message *bytes* stay
//! synchronous: [`IncomingBody::write`] appends to a buffered file (or an
//! in-memory buffer) exactly as the SMTP session writes today, and
//! [`OpenedMessage::body`] is a [`std::io::Read`] owned by the caller, so
//! delivery code that streams with blocking reads keeps working. The methods
//! are `fn … -> impl Future + Send` rather than `async fn` so that a generic
//! driver over `S: QueueStore` can `tokio::spawn` them.
//!
//! Time is an argument (`now`, Unix seconds) wherever it matters, as in the
//! rest of the queue: leases expire against the `now` their callers pass, so
//! tests run on a virtual clock. (Nodes sharing a database must keep their
//! clocks in step, e.g. with NTP; a lease is typically minutes long.)
//!
//! What this module must never do: resolve a commit before the store made
//! it durable, hand one message to two unexpired leases, or let a holder
//! whose lease was taken over record anything.

use std::future::Future;
use std::io::Read;

use crate::envelope::Envelope;
use crate::id::QueueId;
use crate::recipient::RecipientState;
use crate::state::MessageState;

mod file;
pub mod suite;

pub use file::{FileBody, FileStore, FileStoreError};

/// Everything a queue backend does. See the [module documentation](self)
/// for the promises every implementation keeps.
pub trait QueueStore: Clone + Send + Sync + 'static {
    /// The backend's error.
    type Error: StoreError;
    /// A message being received (see [`create`](Self::create)).
    type Incoming: IncomingBody<Error = Self::Error>;
    /// The bytes of a committed message, from its start.
    type Body: Read + Send + std::fmt::Debug + 'static;

    /// Start receiving a message: its id is fixed from now on (it goes into
    /// the `Received:` header). Nothing is visible until
    /// [`commit`](Self::commit); dropping the value abandons the message.
    fn create(&self) -> Result<Self::Incoming, Self::Error>;

    /// Store `incoming` with `envelope` (whose `size` is set to the bytes
    /// written) durably. Resolves `Ok` only once both are on stable
    /// storage; then, and only then, may the `250` go out.
    fn commit(
        &self,
        incoming: Self::Incoming,
        envelope: &Envelope,
    ) -> impl Future<Output = Result<QueueId, Self::Error>> + Send;

    /// Open a committed message: its envelope and a reader over its bytes.
    fn open(
        &self,
        id: &QueueId,
    ) -> impl Future<Output = Result<OpenedMessage<Self::Body>, Self::Error>> + Send;

    /// Every committed message, oldest (smallest id) first.
    fn list(&self) -> impl Future<Output = Result<Vec<QueueId>, Self::Error>> + Send;

    /// Up to `limit` messages a pass could take at `now`: not held, not under
    /// an unexpired lease, [`due_at`] at or before `now`; ordered by
    /// `due_at`, then id.
    fn list_due(
        &self,
        now: u64,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<DueMessage>, Self::Error>> + Send;

    /// Lease message `id` for `ttl` seconds from `now`. `Ok(None)` while
    /// another unexpired lease holds it. An expired lease is taken over.
    /// Held messages can be leased (the pass then delivers nothing).
    fn lease(
        &self,
        id: &QueueId,
        now: u64,
        ttl: u64,
    ) -> impl Future<Output = Result<Option<Lease>, Self::Error>> + Send;

    /// Lease up to `limit` of the messages [`list_due`](Self::list_due)
    /// would give, in its order, skipping any another handle is taking at
    /// the same moment: two concurrent calls never return the same message.
    fn lease_due(
        &self,
        now: u64,
        ttl: u64,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<Lease>, Self::Error>> + Send;

    /// Extend `lease` to `now + ttl`; fails with a lease-lost error when it
    /// was taken over.
    fn renew(
        &self,
        lease: &Lease,
        now: u64,
        ttl: u64,
    ) -> impl Future<Output = Result<Lease, Self::Error>> + Send;

    /// Give `lease` up (the pass is over; the message stays queued). A lease
    /// already lost or a message already gone is not an error.
    fn release(&self, lease: Lease) -> impl Future<Output = Result<(), Self::Error>> + Send;

    /// Durably record the states of some recipients (index in the
    /// envelope, state) under `lease`. Returns once they are on stable
    /// storage. A recorded final state never changes again.
    fn record_states(
        &self,
        lease: &Lease,
        states: &[(usize, RecipientState)],
    ) -> impl Future<Output = Result<(), Self::Error>> + Send;

    /// Durably note that a `kind` notice (e.g. `delay`) went out for each
    /// recipient in `indices`, under `lease`.
    fn record_notices(
        &self,
        lease: &Lease,
        indices: &[usize],
        kind: &str,
    ) -> impl Future<Output = Result<(), Self::Error>> + Send;

    /// Remove the message of `lease` (every recipient done). Fails with a
    /// lease-lost error when the lease was taken over.
    fn remove(&self, lease: Lease) -> impl Future<Output = Result<(), Self::Error>> + Send;

    /// Each recipient's state (pending where nothing is recorded), the hold
    /// flag and the notices recorded.
    fn message_state(
        &self,
        id: &QueueId,
    ) -> impl Future<Output = Result<MessageState, Self::Error>> + Send;

    /// A committed message's envelope with each recipient's state, the
    /// hold flag and the notices recorded: what a scheduler reads back.
    /// The default opens the message, then reads its state; a backend that
    /// can read both at once (without the message's bytes) overrides it.
    fn read_back(
        &self,
        id: &QueueId,
    ) -> impl Future<Output = Result<(Envelope, MessageState), Self::Error>> + Send {
        async move {
            let message = self.open(id).await?;
            let state = self.message_state(id).await?;
            Ok((message.envelope, state))
        }
    }

    /// Every recorded state change of `id`'s recipients, oldest first, as
    /// `(recipient index, state)` (for `tern queue show`).
    fn history(
        &self,
        id: &QueueId,
    ) -> impl Future<Output = Result<Vec<(usize, RecipientState)>, Self::Error>> + Send;

    /// Hold (`true`) or release (`false`) message `id`, durably: a held
    /// message is never due. No lease needed (an admin command).
    fn set_hold(
        &self,
        id: &QueueId,
        held: bool,
    ) -> impl Future<Output = Result<(), Self::Error>> + Send;

    /// Delete message `id` whatever its state or lease (`tern queue
    /// delete`). A holder's later writes fail (not found).
    fn delete(&self, id: &QueueId) -> impl Future<Output = Result<(), Self::Error>> + Send;
}

/// A message being received (see [`QueueStore::create`]).
pub trait IncomingBody: Send + 'static {
    /// The backend's error.
    type Error: StoreError;
    /// The id the message will have.
    fn id(&self) -> &QueueId;
    /// Message bytes written so far.
    fn size(&self) -> u64;
    /// Append message bytes (buffered, not yet durable; may block briefly
    /// on a local file).
    fn write(&mut self, data: &[u8]) -> Result<(), Self::Error>;
}

/// What callers need to tell from a store's errors.
pub trait StoreError: std::error::Error + Send + Sync + 'static {
    /// No message has this id (never committed, removed or deleted).
    fn is_not_found(&self) -> bool;
    /// The lease used was taken over by another holder after it expired.
    fn is_lease_lost(&self) -> bool;
}

/// The right to run one delivery pass over one message until `expires`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    /// The leased message.
    pub id: QueueId,
    /// Tells this lease from every other lease of any message in the store.
    pub token: u64,
    /// Unix seconds at which other handles may take the message over.
    pub expires: u64,
}

/// A committed message opened by [`QueueStore::open`].
#[derive(Debug)]
pub struct OpenedMessage<B> {
    /// Its id.
    pub id: QueueId,
    /// Its envelope as committed.
    pub envelope: Envelope,
    /// Number of message bytes.
    pub data_len: u64,
    /// The message bytes, from the start.
    pub body: B,
}

/// One entry of [`QueueStore::list_due`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DueMessage {
    /// The message.
    pub id: QueueId,
    /// When it is due (see [`due_at`]).
    pub due_at: u64,
}

/// When a message with these recipient states is due (Unix seconds): the
/// earliest of its recipients still to deliver — `0` for a pending one, the
/// next attempt of a deferred one. A message whose recipients are all final
/// is due at `0` too: what is left is its removal (a crash came between the
/// last record and the remove). The one definition every backend uses.
pub fn due_at(states: &[RecipientState]) -> u64 {
    states
        .iter()
        .filter_map(|s| match s {
            RecipientState::Pending => Some(0),
            RecipientState::Deferred { next_attempt, .. } => Some(*next_attempt),
            _ => None,
        })
        .min()
        .unwrap_or(0)
}

/// Apply recorded states in order under the queue's rule (a final state
/// never changes): the states a reader sees. `recorded` may hold indices
/// beyond `recipients`; they are ignored.
pub fn apply_records(
    recipients: usize,
    recorded: impl IntoIterator<Item = (usize, RecipientState)>,
) -> Vec<RecipientState> {
    let mut states = vec![RecipientState::Pending; recipients];
    for (index, state) in recorded {
        if let Some(slot) = states.get_mut(index)
            && !slot.is_final()
        {
            *slot = state;
        }
    }
    states
}

/// How envelopes and recipient states are encoded where a backend stores
/// them as text: the spool's own encoding (serde_json, as in the queue
/// file's tail and the state file's records). Every backend converts
/// through these functions only, so a change of encoding happens here.
pub mod codec {
    use crate::envelope::Envelope;
    use crate::recipient::RecipientState;

    /// An envelope as stored.
    pub fn encode_envelope(envelope: &Envelope) -> Result<String, serde_json::Error> {
        serde_json::to_string(envelope)
    }

    /// An envelope read back.
    pub fn decode_envelope(text: &str) -> Result<Envelope, serde_json::Error> {
        serde_json::from_str(text)
    }

    /// A recipient state as stored.
    pub fn encode_state(state: &RecipientState) -> String {
        serde_json::to_string(state).expect("a RecipientState always serialises")
    }

    /// A recipient state read back.
    pub fn decode_state(text: &str) -> Result<RecipientState, serde_json::Error> {
        serde_json::from_str(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deferred(next: u64) -> RecipientState {
        RecipientState::Deferred {
            attempts: 1,
            last_error: "451 busy".into(),
            next_attempt: next,
        }
    }

    fn delivered() -> RecipientState {
        RecipientState::Delivered {
            at: 5,
            reply: "250 ok".into(),
        }
    }

    #[test]
    fn due_at_table() {
        let cases: &[(&[RecipientState], u64)] = &[
            (&[], 0),
            (&[RecipientState::Pending], 0),
            (&[deferred(90), deferred(30)], 30),
            (&[delivered(), deferred(70)], 70),
            (&[deferred(70), RecipientState::Pending], 0),
            (&[delivered(), delivered()], 0),
        ];
        for (states, want) in cases {
            assert_eq!(due_at(states), *want, "{states:?}");
        }
    }

    #[test]
    fn apply_records_keeps_final_states() {
        let states = apply_records(
            3,
            [
                (0, deferred(10)),
                (0, delivered()),
                (0, deferred(20)),
                (2, deferred(30)),
                (7, delivered()),
            ],
        );
        assert_eq!(
            states,
            vec![delivered(), RecipientState::Pending, deferred(30)]
        );
    }
}
