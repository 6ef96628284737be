//! [`PgStore`]: the queue in PostgreSQL (see the [crate documentation](crate)).
//!
//! A store is a small pool of connections, each set to
//! `synchronous_commit = on` when opened and reopened when it breaks. Every
//! method is one statement (autocommitted: its own transaction) or one
//! explicit transaction; a write under a lease first locks the message's
//! row with its lease token (`… AND lease_token = $2 FOR UPDATE`), so the
//! check and the write are one atomic step.
//!
//! What this module must never do: answer a commit before the server
//! reported it committed, or write under a lease without checking its
//! token in the same transaction.

use std::io::Cursor;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tern_queue::store::{
    DueMessage, IncomingBody, Lease, OpenedMessage, QueueStore, apply_records, codec, due_at,
};
use tern_queue::{Envelope, IdGenerator, MessageState, QueueId, RecipientState};
use tokio::sync::{Mutex, MutexGuard};
use tokio_postgres::error::SqlState;
use tokio_postgres::{Client, GenericClient, IsolationLevel, NoTls, Row};

use crate::{PgConfig, PgError, migrate};

/// The queue in a PostgreSQL database. Clones share the connections.
#[derive(Debug, Clone)]
pub struct PgStore {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    config: tokio_postgres::Config,
    node: String,
    pool: Vec<Mutex<Client>>,
    next: AtomicUsize,
    ids: IdGenerator,
}

/// A message being received: its bytes are kept in memory until the
/// commit sends them to the database in one statement.
#[derive(Debug)]
pub struct PgIncoming {
    id: QueueId,
    data: Vec<u8>,
}

impl IncomingBody for PgIncoming {
    type Error = PgError;

    fn id(&self) -> &QueueId {
        &self.id
    }

    fn size(&self) -> u64 {
        self.data.len() as u64
    }

    fn write(&mut self, data: &[u8]) -> Result<(), PgError> {
        self.data.extend_from_slice(data);
        Ok(())
    }
}

/// Open one connection, its driver on the current tokio runtime.
async fn connect_one(config: &tokio_postgres::Config) -> Result<Client, PgError> {
    let (client, connection) = config
        .connect(NoTls)
        .await
        .map_err(PgError::db("connect"))?;
    tokio::spawn(async move {
        // Ends when the client is dropped or the server goes away; the
        // client then reports errors and the pool reconnects.
        let _ = connection.await;
    });
    client
        .batch_execute("SET synchronous_commit = on")
        .await
        .map_err(PgError::db("set synchronous_commit"))?;
    Ok(client)
}

fn index_to_db(index: usize) -> Option<i32> {
    i32::try_from(index).ok()
}

fn parse_id(text: &str) -> Result<QueueId, PgError> {
    text.parse().map_err(|_| PgError::Invalid {
        id: text.to_owned(),
        what: "id",
    })
}

fn to_i64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

fn to_u64(id: &QueueId, value: i64, what: &'static str) -> Result<u64, PgError> {
    u64::try_from(value).map_err(|_| PgError::Invalid {
        id: id.to_string(),
        what,
    })
}

fn lease_from_row(id: QueueId, row: &Row) -> Result<Lease, PgError> {
    let token: i64 = row.get("lease_token");
    let expires: i64 = row.get("lease_expires");
    Ok(Lease {
        token: to_u64(&id, token, "lease token")?,
        expires: to_u64(&id, expires, "lease expiry")?,
        id,
    })
}

/// Message `id`'s envelope from its stored text.
fn decode_envelope(id: &QueueId, text: &str) -> Result<Envelope, PgError> {
    codec::decode_envelope(text).map_err(|source| PgError::Codec {
        id: id.clone(),
        op: "decode",
        source,
    })
}

impl PgStore {
    /// One consistent read of `id`'s recipient states, hold flag and
    /// notices, with its envelope when `envelope` is asked (never the
    /// message's bytes).
    async fn snapshot(
        &self,
        id: &QueueId,
        envelope: bool,
    ) -> Result<(Option<Envelope>, MessageState), PgError> {
        let mut client = self.client().await?;
        // One snapshot for the three reads.
        let tx = client
            .build_transaction()
            .isolation_level(IsolationLevel::RepeatableRead)
            .read_only(true)
            .start()
            .await
            .map_err(PgError::db("begin"))?;
        let row = tx
            .query_opt(
                "SELECT recipients, held, CASE WHEN $2 THEN envelope END
                 FROM queue_messages WHERE id = $1",
                &[&id.as_str(), &envelope],
            )
            .await
            .map_err(PgError::db("read a message"))?
            .ok_or_else(|| PgError::NotFound(id.clone()))?;
        let recipients: i32 = row.get(0);
        let held: bool = row.get(1);
        let envelope = match row.get::<_, Option<&str>>(2) {
            Some(text) => Some(decode_envelope(id, text)?),
            None => None,
        };
        let states = states_of(&tx, id, usize::try_from(recipients).unwrap_or(0)).await?;
        let notices = tx
            .query(
                "SELECT idx, kind FROM queue_notices WHERE message_id = $1",
                &[&id.as_str()],
            )
            .await
            .map_err(PgError::db("read notices"))?
            .iter()
            .filter_map(|row| {
                let idx: i32 = row.get(0);
                let kind: String = row.get(1);
                usize::try_from(idx).ok().map(|i| (i, kind))
            })
            .collect();
        tx.commit().await.map_err(PgError::db("commit"))?;
        let state = MessageState {
            states,
            held,
            notices,
        };
        Ok((envelope, state))
    }
    /// The whole queue (every node's messages) counted for the metrics in
    /// one statement: per state — `0` active (a recipient was never
    /// attempted), `1` deferred (every open recipient waits for a retry),
    /// `2` held — the number of messages and the oldest one's age in
    /// seconds (0 when none).
    pub async fn state_counts(&self) -> Result<[(u64, u64); 3], PgError> {
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT CASE WHEN m.held THEN 2
                             WHEN (SELECT count(*) FROM queue_recipients r
                                   WHERE r.message_id = m.id) < m.recipients THEN 0
                             ELSE 1 END AS state,
                        count(*) AS messages,
                        COALESCE(EXTRACT(EPOCH FROM now() - min(m.committed_at)), 0)::bigint AS oldest
                 FROM queue_messages m GROUP BY 1",
                &[],
            )
            .await
            .map_err(PgError::db("count the queue"))?;
        let mut out = [(0, 0); 3];
        for row in rows {
            let state: i32 = row.get(0);
            let messages: i64 = row.get(1);
            let oldest: i64 = row.get(2);
            if let Some(slot) = usize::try_from(state).ok().and_then(|s| out.get_mut(s)) {
                *slot = (
                    u64::try_from(messages).unwrap_or(0),
                    u64::try_from(oldest).unwrap_or(0),
                );
            }
        }
        Ok(out)
    }

    /// Connect `config.pool_size` connections and bring the schema up to
    /// date ([`migrate`](crate::migrate)).
    pub async fn connect(config: &PgConfig) -> Result<PgStore, PgError> {
        let mut pg: tokio_postgres::Config = config.url.parse().map_err(PgError::Url)?;
        if let Some(password) = &config.password {
            pg.password(password);
        }
        let mut first = connect_one(&pg).await?;
        migrate(&mut first).await?;
        let mut pool = vec![Mutex::new(first)];
        for _ in 1..config.pool_size.max(1) {
            pool.push(Mutex::new(connect_one(&pg).await?));
        }
        let newest: Option<String> = pool[0]
            .lock()
            .await
            .query_one("SELECT max(id) FROM queue_messages", &[])
            .await
            .map_err(PgError::db("read the newest id"))?
            .get(0);
        let newest = newest.as_deref().map(parse_id).transpose()?;
        Ok(PgStore {
            inner: Arc::new(Inner {
                config: pg,
                node: config.node.clone(),
                pool,
                next: AtomicUsize::new(0),
                ids: IdGenerator::new(newest.as_ref()),
            }),
        })
    }

    /// A connection of the pool: a free one if any, else the next in turn
    /// (waiting for it); reopened first if it broke.
    async fn client(&self) -> Result<MutexGuard<'_, Client>, PgError> {
        let pool = &self.inner.pool;
        let start = self.inner.next.fetch_add(1, Ordering::Relaxed);
        let mut guard = None;
        for i in 0..pool.len() {
            if let Ok(g) = pool[(start + i) % pool.len()].try_lock() {
                guard = Some(g);
                break;
            }
        }
        let mut guard = match guard {
            Some(g) => g,
            None => pool[start % pool.len()].lock().await,
        };
        if guard.is_closed() {
            *guard = connect_one(&self.inner.config).await?;
        }
        Ok(guard)
    }

    /// Whether `id` is stored (to tell a lost lease from a deleted message).
    async fn exists(client: &impl GenericClient, id: &QueueId) -> Result<bool, PgError> {
        Ok(client
            .query_opt(
                "SELECT 1 FROM queue_messages WHERE id = $1",
                &[&id.as_str()],
            )
            .await
            .map_err(PgError::db("look up a message"))?
            .is_some())
    }

    /// The error for a statement under `lease` that matched no row.
    async fn lease_failure(client: &impl GenericClient, lease: &Lease) -> PgError {
        match Self::exists(client, &lease.id).await {
            Ok(true) => PgError::LeaseLost(lease.id.clone()),
            Ok(false) => PgError::NotFound(lease.id.clone()),
            Err(e) => e,
        }
    }
}

/// Lock `lease`'s message row in `tx`, checking its token: the first step
/// of every write under a lease. Returns the message's recipient count.
async fn lock_leased(
    tx: &tokio_postgres::Transaction<'_>,
    lease: &Lease,
) -> Result<usize, PgError> {
    let row = tx
        .query_opt(
            "SELECT recipients FROM queue_messages
             WHERE id = $1 AND lease_token = $2 FOR UPDATE",
            &[&lease.id.as_str(), &to_i64(lease.token)],
        )
        .await
        .map_err(PgError::db("lock a leased message"))?;
    match row {
        Some(row) => Ok(usize::try_from(row.get::<_, i32>(0)).unwrap_or(0)),
        None => Err(PgStore::lease_failure(tx, lease).await),
    }
}

/// The states recorded for `id`, applied under the queue's rules.
async fn states_of(
    client: &impl GenericClient,
    id: &QueueId,
    recipients: usize,
) -> Result<Vec<RecipientState>, PgError> {
    Ok(apply_records(
        recipients,
        recorded_states(client, id).await?,
    ))
}

/// The states recorded for `id`, as `(recipient index, state)`.
async fn recorded_states(
    client: &impl GenericClient,
    id: &QueueId,
) -> Result<Vec<(usize, RecipientState)>, PgError> {
    let rows = client
        .query(
            "SELECT idx, state FROM queue_recipients WHERE message_id = $1",
            &[&id.as_str()],
        )
        .await
        .map_err(PgError::db("read recipient states"))?;
    let mut recorded = Vec::with_capacity(rows.len());
    for row in rows {
        let index: i32 = row.get(0);
        let text: &str = row.get(1);
        let state = codec::decode_state(text).map_err(|source| PgError::Codec {
            id: id.clone(),
            op: "decode",
            source,
        })?;
        if let Ok(index) = usize::try_from(index) {
            recorded.push((index, state));
        }
    }
    Ok(recorded)
}

impl QueueStore for PgStore {
    type Error = PgError;
    type Incoming = PgIncoming;
    type Body = Cursor<Vec<u8>>;

    fn create(&self) -> Result<PgIncoming, PgError> {
        Ok(PgIncoming {
            id: self.inner.ids.next_id(),
            data: Vec::new(),
        })
    }

    async fn commit(&self, incoming: PgIncoming, envelope: &Envelope) -> Result<QueueId, PgError> {
        let PgIncoming { id, data } = incoming;
        let stored = Envelope {
            size: data.len() as u64,
            ..envelope.clone()
        };
        let text = codec::encode_envelope(&stored).map_err(|source| PgError::Codec {
            id: id.clone(),
            op: "encode",
            source,
        })?;
        let recipients = i32::try_from(stored.recipients.len()).unwrap_or(i32::MAX);
        let client = self.client().await?;
        // One autocommitted statement: when it returns, its transaction has
        // committed with synchronous_commit = on (the WAL is flushed).
        let inserted = client
            .execute(
                "INSERT INTO queue_messages (id, envelope, body, data_len, recipients, due_at)
                 VALUES ($1, $2, $3, $4, $5, 0)",
                &[
                    &id.as_str(),
                    &text,
                    &data,
                    &to_i64(stored.size),
                    &recipients,
                ],
            )
            .await;
        match inserted {
            Ok(_) => Ok(id),
            Err(e) if e.code() == Some(&SqlState::UNIQUE_VIOLATION) => Err(PgError::IdTaken(id)),
            Err(e) => Err(PgError::Database {
                op: "commit a message",
                source: e,
            }),
        }
    }

    async fn open(&self, id: &QueueId) -> Result<OpenedMessage<Cursor<Vec<u8>>>, PgError> {
        let client = self.client().await?;
        let row = client
            .query_opt(
                "SELECT envelope, body FROM queue_messages WHERE id = $1",
                &[&id.as_str()],
            )
            .await
            .map_err(PgError::db("open a message"))?
            .ok_or_else(|| PgError::NotFound(id.clone()))?;
        let envelope = decode_envelope(id, row.get(0))?;
        let body: Vec<u8> = row.get(1);
        Ok(OpenedMessage {
            id: id.clone(),
            envelope,
            data_len: body.len() as u64,
            body: Cursor::new(body),
        })
    }

    async fn list(&self) -> Result<Vec<QueueId>, PgError> {
        let client = self.client().await?;
        client
            .query("SELECT id FROM queue_messages ORDER BY id", &[])
            .await
            .map_err(PgError::db("list messages"))?
            .iter()
            .map(|row| parse_id(row.get(0)))
            .collect()
    }

    async fn list_due(&self, now: u64, limit: usize) -> Result<Vec<DueMessage>, PgError> {
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT id, due_at FROM queue_messages
                 WHERE NOT held AND due_at <= $1
                   AND (lease_expires IS NULL OR lease_expires <= $1)
                 ORDER BY due_at, id LIMIT $2",
                &[&to_i64(now), &to_i64(limit as u64)],
            )
            .await
            .map_err(PgError::db("list due messages"))?;
        rows.iter()
            .map(|row| {
                let id = parse_id(row.get(0))?;
                let due_at = to_u64(&id, row.get(1), "due time")?;
                Ok(DueMessage { id, due_at })
            })
            .collect()
    }

    async fn lease(&self, id: &QueueId, now: u64, ttl: u64) -> Result<Option<Lease>, PgError> {
        let client = self.client().await?;
        let row = client
            .query_opt(
                "UPDATE queue_messages
                 SET lease_token = nextval('queue_lease_tokens'),
                     lease_expires = $2, lease_owner = $3
                 WHERE id = $1 AND (lease_expires IS NULL OR lease_expires <= $4)
                 RETURNING lease_token, lease_expires",
                &[
                    &id.as_str(),
                    &to_i64(now.saturating_add(ttl)),
                    &self.inner.node,
                    &to_i64(now),
                ],
            )
            .await
            .map_err(PgError::db("lease a message"))?;
        match row {
            Some(row) => Ok(Some(lease_from_row(id.clone(), &row)?)),
            None if Self::exists(&*client, id).await? => Ok(None),
            None => Err(PgError::NotFound(id.clone())),
        }
    }

    async fn lease_due(&self, now: u64, ttl: u64, limit: usize) -> Result<Vec<Lease>, PgError> {
        let client = self.client().await?;
        let rows = client
            .query(
                "WITH picked AS (
                     SELECT id FROM queue_messages
                     WHERE NOT held AND due_at <= $1
                       AND (lease_expires IS NULL OR lease_expires <= $1)
                     ORDER BY due_at, id LIMIT $3
                     FOR UPDATE SKIP LOCKED
                 )
                 UPDATE queue_messages m
                 SET lease_token = nextval('queue_lease_tokens'),
                     lease_expires = $2, lease_owner = $4
                 FROM picked WHERE m.id = picked.id
                 RETURNING m.id, m.due_at, m.lease_token, m.lease_expires",
                &[
                    &to_i64(now),
                    &to_i64(now.saturating_add(ttl)),
                    &to_i64(limit as u64),
                    &self.inner.node,
                ],
            )
            .await
            .map_err(PgError::db("lease due messages"))?;
        let mut leased = Vec::with_capacity(rows.len());
        for row in &rows {
            let id = parse_id(row.get("id"))?;
            let due: i64 = row.get("due_at");
            leased.push((due, lease_from_row(id, row)?));
        }
        // RETURNING keeps no order: restore list_due's.
        leased.sort_by(|(da, a), (db, b)| (da, &a.id).cmp(&(db, &b.id)));
        Ok(leased.into_iter().map(|(_, lease)| lease).collect())
    }

    async fn renew(&self, lease: &Lease, now: u64, ttl: u64) -> Result<Lease, PgError> {
        let client = self.client().await?;
        let row = client
            .query_opt(
                "UPDATE queue_messages SET lease_expires = $3
                 WHERE id = $1 AND lease_token = $2
                 RETURNING lease_token, lease_expires",
                &[
                    &lease.id.as_str(),
                    &to_i64(lease.token),
                    &to_i64(now.saturating_add(ttl)),
                ],
            )
            .await
            .map_err(PgError::db("renew a lease"))?;
        match row {
            Some(row) => lease_from_row(lease.id.clone(), &row),
            None => Err(Self::lease_failure(&*client, lease).await),
        }
    }

    async fn release(&self, lease: Lease) -> Result<(), PgError> {
        let client = self.client().await?;
        client
            .execute(
                "UPDATE queue_messages
                 SET lease_token = NULL, lease_expires = NULL, lease_owner = NULL
                 WHERE id = $1 AND lease_token = $2",
                &[&lease.id.as_str(), &to_i64(lease.token)],
            )
            .await
            .map_err(PgError::db("release a lease"))?;
        Ok(())
    }

    async fn record_states(
        &self,
        lease: &Lease,
        states: &[(usize, RecipientState)],
    ) -> Result<(), PgError> {
        let id = &lease.id;
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(PgError::db("begin"))?;
        if states.is_empty() {
            lock_leased(&tx, lease).await?;
        } else {
            // The lock and the states it protects, sent together (the
            // server runs them in order): one round trip.
            let (recipients, recorded) =
                tokio::join!(lock_leased(&tx, lease), recorded_states(&tx, id));
            let recipients = recipients?;
            let mut current = apply_records(recipients, recorded?);
            // Applied in order under the queue's rule, as a reader would:
            // over a final state, no change (and no history).
            let (mut idxs, mut texts, mut finals) = (Vec::new(), Vec::new(), Vec::new());
            for (index, state) in states {
                let (Some(slot), Some(idx)) = (current.get_mut(*index), index_to_db(*index)) else {
                    continue; // no such recipient: ignored, as on reading
                };
                if slot.is_final() {
                    continue;
                }
                *slot = state.clone();
                idxs.push(idx);
                texts.push(codec::encode_state(state));
                finals.push(state.is_final());
            }
            // The new states, their history in order and the due time in
            // one statement.
            tx.execute(
                "WITH input AS (
                     SELECT * FROM unnest($2::int4[], $3::text[], $4::bool[])
                         WITH ORDINALITY AS t(idx, state, final, ord)
                 ), latest AS (
                     INSERT INTO queue_recipients (message_id, idx, state, final)
                     SELECT DISTINCT ON (idx) $1, idx, state, final FROM input
                     ORDER BY idx, ord DESC
                     ON CONFLICT (message_id, idx) DO UPDATE
                     SET state = EXCLUDED.state, final = EXCLUDED.final
                     WHERE NOT queue_recipients.final
                 ), history AS (
                     INSERT INTO queue_history (message_id, idx, state)
                     SELECT $1, idx, state FROM input ORDER BY ord
                 )
                 UPDATE queue_messages SET due_at = $5 WHERE id = $1",
                &[
                    &id.as_str(),
                    &idxs,
                    &texts,
                    &finals,
                    &to_i64(due_at(&current)),
                ],
            )
            .await
            .map_err(PgError::db("record recipient states"))?;
        }
        // Returns once the server has flushed the commit.
        tx.commit().await.map_err(PgError::db("commit"))
    }

    async fn record_notices(
        &self,
        lease: &Lease,
        indices: &[usize],
        kind: &str,
    ) -> Result<(), PgError> {
        let id = &lease.id;
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(PgError::db("begin"))?;
        lock_leased(&tx, lease).await?;
        for idx in indices.iter().filter_map(|&i| index_to_db(i)) {
            tx.execute(
                "INSERT INTO queue_notices (message_id, idx, kind) VALUES ($1, $2, $3)
                     ON CONFLICT DO NOTHING",
                &[&id.as_str(), &idx, &kind],
            )
            .await
            .map_err(PgError::db("record a notice"))?;
        }
        tx.commit().await.map_err(PgError::db("commit"))
    }

    async fn remove(&self, lease: Lease) -> Result<(), PgError> {
        let client = self.client().await?;
        let removed = client
            .execute(
                "DELETE FROM queue_messages WHERE id = $1 AND lease_token = $2",
                &[&lease.id.as_str(), &to_i64(lease.token)],
            )
            .await
            .map_err(PgError::db("remove a message"))?;
        if removed == 0 {
            return Err(Self::lease_failure(&*client, &lease).await);
        }
        Ok(())
    }

    async fn message_state(&self, id: &QueueId) -> Result<MessageState, PgError> {
        Ok(self.snapshot(id, false).await?.1)
    }

    async fn read_back(&self, id: &QueueId) -> Result<(Envelope, MessageState), PgError> {
        match self.snapshot(id, true).await? {
            (Some(envelope), state) => Ok((envelope, state)),
            (None, _) => Err(PgError::NotFound(id.clone())),
        }
    }

    async fn history(&self, id: &QueueId) -> Result<Vec<(usize, RecipientState)>, PgError> {
        let client = self.client().await?;
        if !Self::exists(&*client, id).await? {
            return Err(PgError::NotFound(id.clone()));
        }
        let rows = client
            .query(
                "SELECT idx, state FROM queue_history WHERE message_id = $1 ORDER BY seq",
                &[&id.as_str()],
            )
            .await
            .map_err(PgError::db("read history"))?;
        let mut history = Vec::with_capacity(rows.len());
        for row in rows {
            let idx: i32 = row.get(0);
            let state = codec::decode_state(row.get(1)).map_err(|source| PgError::Codec {
                id: id.clone(),
                op: "decode",
                source,
            })?;
            if let Ok(idx) = usize::try_from(idx) {
                history.push((idx, state));
            }
        }
        Ok(history)
    }

    async fn set_hold(&self, id: &QueueId, held: bool) -> Result<(), PgError> {
        let client = self.client().await?;
        let updated = client
            .execute(
                "UPDATE queue_messages SET held = $2 WHERE id = $1",
                &[&id.as_str(), &held],
            )
            .await
            .map_err(PgError::db("hold or release a message"))?;
        if updated == 0 {
            return Err(PgError::NotFound(id.clone()));
        }
        Ok(())
    }

    async fn delete(&self, id: &QueueId) -> Result<(), PgError> {
        let client = self.client().await?;
        let deleted = client
            .execute("DELETE FROM queue_messages WHERE id = $1", &[&id.as_str()])
            .await
            .map_err(PgError::db("delete a message"))?;
        if deleted == 0 {
            return Err(PgError::NotFound(id.clone()));
        }
        Ok(())
    }
}
