//! The outbound connection cache: idle SMTP connections kept between
//! messages for the same destination.
//!
//! What this module must never do: hand one connection to two deliveries
//! at once, or reuse a connection the server closed or spoke on while it
//! was idle.

use std::collections::HashMap;
use std::fmt;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tern_smtp::client::ClientSession;
use tokio::time::timeout;

use super::{Conn, SALVAGE_TIMEOUT, SHUTDOWN_TIMEOUT};

/// An SMTP connection between two transactions: greeted, EHLO done, TLS
/// and AUTH as negotiated, ready for the next MAIL FROM.
pub(crate) struct IdleConnection {
    pub(super) conn: Conn,
    pub(super) session: ClientSession,
    /// `host[ip]`, for the log lines and `Remote-MTA`.
    pub(super) label: String,
    /// When it went idle.
    pub(super) since: Instant,
}

/// Idle outbound connections kept open between messages for the same
/// destination (a domain, or the smarthost), so that a burst of messages
/// to one place pays for one TCP and TLS handshake rather than one each,
/// like Postfix's connection cache.
///
/// A connection is kept only after a transaction that ended cleanly, for
/// at most `max_idle` and at most `per_destination` per destination; one
/// that the server closed or spoke on while idle (a `421` timeout notice)
/// is discarded when it is taken, never used. It must never hand one
/// connection to two deliveries at once: taking removes it.
pub struct ConnectionCache {
    idle: Mutex<HashMap<String, Vec<IdleConnection>>>,
    max_idle: Duration,
    per_destination: usize,
}

impl fmt::Debug for ConnectionCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConnectionCache")
            .field("idle", &self.idle_count())
            .field("max_idle", &self.max_idle)
            .field("per_destination", &self.per_destination)
            .finish()
    }
}

impl ConnectionCache {
    /// A cache keeping each connection at most `max_idle`, and at most
    /// `per_destination` idle connections per destination.
    pub fn new(max_idle: Duration, per_destination: usize) -> ConnectionCache {
        ConnectionCache {
            idle: Mutex::new(HashMap::new()),
            max_idle,
            per_destination: per_destination.max(1),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Vec<IdleConnection>>> {
        self.idle
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// How many connections are idle in the cache now.
    pub fn idle_count(&self) -> usize {
        self.lock().values().map(Vec::len).sum()
    }

    /// The most recently used live connection for `key`, if any; stale
    /// ones met on the way are closed.
    pub(super) async fn take(&self, key: &str) -> Option<IdleConnection> {
        loop {
            let candidate = {
                let mut map = self.lock();
                let list = map.get_mut(key)?;
                let c = list.pop();
                if list.is_empty() {
                    map.remove(key);
                }
                c
            }?;
            if candidate.since.elapsed() > self.max_idle {
                close_idle(candidate).await;
                continue;
            }
            let mut candidate = candidate;
            if still_open(&mut candidate.conn).await {
                return Some(candidate);
            }
            tracing::debug!(target_host = %candidate.label, "outbound: cached connection closed by the server");
            candidate.conn.shutdown().await;
        }
    }

    /// Keeps `idle` for the next message to `key` (or closes it when the
    /// destination already has enough idle connections).
    pub(super) async fn put(&self, key: &str, idle: IdleConnection) {
        let extra = {
            let mut map = self.lock();
            let list = map.entry(key.to_owned()).or_default();
            if list.len() < self.per_destination {
                list.push(idle);
                None
            } else {
                Some(idle)
            }
        };
        if let Some(idle) = extra {
            close_idle(idle).await;
        }
    }

    /// Closes (QUIT) every connection idle for longer than `max_idle`.
    /// Call it now and then (the queue manager does, every few seconds).
    pub async fn sweep(&self) {
        let stale: Vec<IdleConnection> = {
            let mut map = self.lock();
            let mut stale = Vec::new();
            for list in map.values_mut() {
                let (old, keep): (Vec<_>, Vec<_>) = std::mem::take(list)
                    .into_iter()
                    .partition(|c| c.since.elapsed() > self.max_idle);
                *list = keep;
                stale.extend(old);
            }
            map.retain(|_, list| !list.is_empty());
            stale
        };
        for idle in stale {
            close_idle(idle).await;
        }
    }

    /// Closes (QUIT) every idle connection (at shutdown).
    pub async fn close_all(&self) {
        let all: Vec<IdleConnection> = self.lock().drain().flat_map(|(_, v)| v).collect();
        for idle in all {
            close_idle(idle).await;
        }
    }
}

/// True when nothing happened on an idle connection: no bytes (a `421`
/// notice) and no end of stream are waiting.
async fn still_open(conn: &mut Conn) -> bool {
    let mut probe = [0u8; 512];
    // A zero timeout polls the read once: ready means data or EOF.
    timeout(Duration::ZERO, conn.read(&mut probe))
        .await
        .is_err()
}

/// The connection of a transaction that is over, before the server has
/// heard anything more from us: the caller records the results on stable
/// storage first, then [`settle`](Unsettled::settle)s it (QUIT, or back
/// into the connection cache for the next message).
///
/// This is what narrows RFC 1047's window to its minimum: a server sees
/// us go on (QUIT, the next MAIL FROM) only once the delivery is recorded,
/// so a node killed before recording leaves a connection cut right after
/// the final reply, never one that carried on. Dropping it unsettled cuts
/// the connection without a word (the results could not be recorded).
#[must_use = "settle it once the results are recorded, or drop it to cut the connection"]
pub struct Unsettled<'c> {
    idle: Option<IdleConnection>,
    /// Where a healthy connection goes when settled (otherwise QUIT).
    home: Option<(&'c ConnectionCache, String)>,
}

impl fmt::Debug for Unsettled<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Unsettled")
            .field("open", &self.idle.as_ref().map(|i| i.label.as_str()))
            .field("cached", &self.home.as_ref().map(|(_, key)| key.as_str()))
            .finish()
    }
}

impl<'c> Unsettled<'c> {
    /// No connection is left open (it failed, or the server closed it).
    pub(crate) fn none() -> Unsettled<'static> {
        Unsettled {
            idle: None,
            home: None,
        }
    }

    /// `idle` (if any), to be closed when settled.
    pub(crate) fn closing(idle: Option<IdleConnection>) -> Unsettled<'static> {
        Unsettled { idle, home: None }
    }

    /// `idle` (if any), to go back into `cache` under `key` when settled
    /// (closed instead when there is no cache).
    pub(crate) fn caching(
        idle: Option<IdleConnection>,
        cache: Option<&'c ConnectionCache>,
        key: &str,
    ) -> Unsettled<'c> {
        Unsettled {
            idle,
            home: cache.map(|c| (c, key.to_owned())),
        }
    }

    /// Whether a connection is still open.
    pub fn is_open(&self) -> bool {
        self.idle.is_some()
    }

    /// The results are recorded: the connection goes back into the cache,
    /// or says QUIT and closes.
    pub async fn settle(self) {
        match (self.idle, self.home) {
            (Some(idle), Some((cache, key))) => cache.put(&key, idle).await,
            (Some(idle), None) => close_idle(idle).await,
            (None, _) => {}
        }
    }
}

/// QUIT and close, without waiting long for the server.
async fn close_idle(mut idle: IdleConnection) {
    tracing::debug!(target_host = %idle.label, "outbound: closing the connection (QUIT)");
    let _ = timeout(SHUTDOWN_TIMEOUT, idle.conn.write_all(b"QUIT\r\n")).await;
    let mut buf = [0u8; 512];
    let _ = timeout(SALVAGE_TIMEOUT, idle.conn.read(&mut buf)).await;
    idle.conn.shutdown().await;
}
