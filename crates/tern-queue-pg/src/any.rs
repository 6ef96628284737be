//! [`AnyStore`]: the backend chosen by configuration, as one type.
//!
//! The runtime picks its queue backend when it reads `[queue] backend`;
//! with `AnyStore` the queue manager, the SMTP sessions and the admin
//! commands are written once against one concrete [`QueueStore`] instead
//! of being generic all the way up. Each method forwards to the backend
//! it holds.
//!
//! What this module must never do: mix backends (an incoming message or a
//! lease of one backend handed to the other is refused, not converted).

use std::io::{self, Cursor, Read};

use tern_queue::store::{
    DueMessage, FileBody, FileStore, FileStoreError, IncomingBody, Lease, OpenedMessage,
    QueueStore, StoreError,
};
use tern_queue::{Envelope, IncomingMessage, MessageState, QueueId, RecipientState};

use crate::{PgError, PgIncoming, PgStore};

/// The file spool or PostgreSQL, whichever the configuration chose.
#[derive(Debug, Clone)]
pub enum AnyStore {
    /// The file spool.
    File(FileStore),
    /// PostgreSQL.
    Postgres(PgStore),
}

/// An error of either backend.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum AnyStoreError {
    /// From the file spool.
    #[error(transparent)]
    File(#[from] FileStoreError),
    /// From PostgreSQL.
    #[error(transparent)]
    Postgres(#[from] PgError),
    /// A message being received by one backend was committed to the other.
    #[error("queue: a message received by one backend was committed to another")]
    WrongBackend,
}

impl StoreError for AnyStoreError {
    fn is_not_found(&self) -> bool {
        match self {
            AnyStoreError::File(e) => e.is_not_found(),
            AnyStoreError::Postgres(e) => e.is_not_found(),
            AnyStoreError::WrongBackend => false,
        }
    }

    fn is_lease_lost(&self) -> bool {
        match self {
            AnyStoreError::File(e) => e.is_lease_lost(),
            AnyStoreError::Postgres(e) => e.is_lease_lost(),
            AnyStoreError::WrongBackend => false,
        }
    }
}

/// A message being received by either backend.
#[derive(Debug)]
pub enum AnyIncoming {
    /// By the file spool.
    File(IncomingMessage),
    /// By PostgreSQL.
    Postgres(PgIncoming),
}

impl IncomingBody for AnyIncoming {
    type Error = AnyStoreError;

    fn id(&self) -> &QueueId {
        match self {
            AnyIncoming::File(m) => IncomingBody::id(m),
            AnyIncoming::Postgres(m) => m.id(),
        }
    }

    fn size(&self) -> u64 {
        match self {
            AnyIncoming::File(m) => IncomingBody::size(m),
            AnyIncoming::Postgres(m) => m.size(),
        }
    }

    fn write(&mut self, data: &[u8]) -> Result<(), AnyStoreError> {
        match self {
            AnyIncoming::File(m) => Ok(IncomingBody::write(m, data)?),
            AnyIncoming::Postgres(m) => Ok(m.write(data)?),
        }
    }
}

/// The bytes of a message of either backend.
#[derive(Debug)]
pub enum AnyBody {
    /// From the file spool.
    File(FileBody),
    /// From PostgreSQL.
    Postgres(Cursor<Vec<u8>>),
}

impl Read for AnyBody {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            AnyBody::File(b) => b.read(buf),
            AnyBody::Postgres(b) => b.read(buf),
        }
    }
}

fn opened<B>(m: OpenedMessage<B>, wrap: impl FnOnce(B) -> AnyBody) -> OpenedMessage<AnyBody> {
    OpenedMessage {
        id: m.id,
        envelope: m.envelope,
        data_len: m.data_len,
        body: wrap(m.body),
    }
}

/// Forward `$call` to the backend `$self` holds, converting the error.
macro_rules! forward {
    ($self:ident, $s:ident => $call:expr) => {
        match $self {
            AnyStore::File($s) => Ok($call.await?),
            AnyStore::Postgres($s) => Ok($call.await?),
        }
    };
}

impl QueueStore for AnyStore {
    type Error = AnyStoreError;
    type Incoming = AnyIncoming;
    type Body = AnyBody;

    fn create(&self) -> Result<AnyIncoming, AnyStoreError> {
        match self {
            AnyStore::File(s) => Ok(AnyIncoming::File(s.create()?)),
            AnyStore::Postgres(s) => Ok(AnyIncoming::Postgres(s.create()?)),
        }
    }

    async fn commit(
        &self,
        incoming: AnyIncoming,
        envelope: &Envelope,
    ) -> Result<QueueId, AnyStoreError> {
        match (self, incoming) {
            (AnyStore::File(s), AnyIncoming::File(m)) => Ok(s.commit(m, envelope).await?),
            (AnyStore::Postgres(s), AnyIncoming::Postgres(m)) => Ok(s.commit(m, envelope).await?),
            _ => Err(AnyStoreError::WrongBackend),
        }
    }

    async fn open(&self, id: &QueueId) -> Result<OpenedMessage<AnyBody>, AnyStoreError> {
        match self {
            AnyStore::File(s) => Ok(opened(s.open(id).await?, AnyBody::File)),
            AnyStore::Postgres(s) => Ok(opened(s.open(id).await?, AnyBody::Postgres)),
        }
    }

    async fn list(&self) -> Result<Vec<QueueId>, AnyStoreError> {
        forward!(self, s => s.list())
    }

    async fn list_due(&self, now: u64, limit: usize) -> Result<Vec<DueMessage>, AnyStoreError> {
        forward!(self, s => s.list_due(now, limit))
    }

    async fn lease(
        &self,
        id: &QueueId,
        now: u64,
        ttl: u64,
    ) -> Result<Option<Lease>, AnyStoreError> {
        forward!(self, s => s.lease(id, now, ttl))
    }

    async fn lease_due(
        &self,
        now: u64,
        ttl: u64,
        limit: usize,
    ) -> Result<Vec<Lease>, AnyStoreError> {
        forward!(self, s => s.lease_due(now, ttl, limit))
    }

    async fn renew(&self, lease: &Lease, now: u64, ttl: u64) -> Result<Lease, AnyStoreError> {
        forward!(self, s => s.renew(lease, now, ttl))
    }

    async fn release(&self, lease: Lease) -> Result<(), AnyStoreError> {
        forward!(self, s => s.release(lease))
    }

    async fn record_states(
        &self,
        lease: &Lease,
        states: &[(usize, RecipientState)],
    ) -> Result<(), AnyStoreError> {
        forward!(self, s => s.record_states(lease, states))
    }

    async fn record_notices(
        &self,
        lease: &Lease,
        indices: &[usize],
        kind: &str,
    ) -> Result<(), AnyStoreError> {
        forward!(self, s => s.record_notices(lease, indices, kind))
    }

    async fn remove(&self, lease: Lease) -> Result<(), AnyStoreError> {
        forward!(self, s => s.remove(lease))
    }

    async fn message_state(&self, id: &QueueId) -> Result<MessageState, AnyStoreError> {
        forward!(self, s => s.message_state(id))
    }

    async fn read_back(&self, id: &QueueId) -> Result<(Envelope, MessageState), AnyStoreError> {
        forward!(self, s => s.read_back(id))
    }

    async fn history(&self, id: &QueueId) -> Result<Vec<(usize, RecipientState)>, AnyStoreError> {
        forward!(self, s => s.history(id))
    }

    async fn set_hold(&self, id: &QueueId, held: bool) -> Result<(), AnyStoreError> {
        forward!(self, s => s.set_hold(id, held))
    }

    async fn delete(&self, id: &QueueId) -> Result<(), AnyStoreError> {
        forward!(self, s => s.delete(id))
    }
}
