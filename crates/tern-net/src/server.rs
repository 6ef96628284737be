//! Listeners: bind, accept with back-off, admit under the connection limits,
//! spawn one driver per connection, and drain them on shutdown.
//!
//! Shutdown order (SIGTERM/SIGINT in the binary): stop accepting; every
//! session answers `421 4.3.2` at its next read (a message being received
//! is rolled back, one being committed finishes its commit and gets its
//! 250); wait for the sessions, up to a grace period. Nothing accepted is
//! lost: the spool holds it and the next start resumes delivery.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tracing::{Instrument, info, info_span, warn};

use crate::Context;
use crate::conn::Connection;
use crate::limits::Refusal;

/// What a listener is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Role {
    /// Inbound MX (port 25): mail for local domains from anyone.
    Mx,
}

/// Errors from the runtime.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NetError {
    /// A listener could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// How long sessions get to finish after shutdown was asked for.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);

/// Bound listeners, ready to run.
#[derive(Debug)]
pub struct Server {
    ctx: Arc<Context>,
    listeners: Vec<(TcpListener, Role)>,
}

static SESSION_IDS: AtomicU64 = AtomicU64::new(1);

impl Server {
    /// Binds every listener (port 0 picks a free port; see [`Server::local_addrs`]).
    pub async fn bind(ctx: Arc<Context>, addrs: &[(SocketAddr, Role)]) -> Result<Server, NetError> {
        let mut listeners = Vec::with_capacity(addrs.len());
        for &(addr, role) in addrs {
            let l = TcpListener::bind(addr)
                .await
                .map_err(|source| NetError::Bind { addr, source })?;
            listeners.push((l, role));
        }
        Ok(Server { ctx, listeners })
    }

    /// The addresses actually bound, in the order given to [`Server::bind`].
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.listeners
            .iter()
            .filter_map(|(l, _)| l.local_addr().ok())
            .collect()
    }

    /// Serves until `shutdown` becomes true, then drains the sessions.
    pub async fn run(self, shutdown: watch::Receiver<bool>) {
        let mut accept_loops = JoinSet::new();
        for (listener, role) in self.listeners {
            if let Ok(addr) = listener.local_addr() {
                info!(%addr, ?role, "listening");
            }
            accept_loops.spawn(accept_loop(
                listener,
                role,
                Arc::clone(&self.ctx),
                shutdown.clone(),
            ));
        }
        while accept_loops.join_next().await.is_some() {}
    }
}

async fn accept_loop(
    listener: TcpListener,
    role: Role,
    ctx: Arc<Context>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut sessions = JoinSet::new();
    let mut backoff = Duration::from_millis(10);
    loop {
        if *shutdown.borrow() {
            break;
        }
        tokio::select! {
            _ = shutdown.changed() => break,
            Some(_) = sessions.join_next(), if !sessions.is_empty() => {}
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    backoff = Duration::from_millis(10);
                    admit(stream, peer, role, &ctx, &shutdown, &mut sessions);
                }
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    warn!(error = %e, retry_in = ?backoff, "accept failed");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(1));
                }
            }
        }
    }
    drop(listener);
    let drain = async { while sessions.join_next().await.is_some() {} };
    if tokio::time::timeout(SHUTDOWN_GRACE, drain).await.is_err() {
        warn!("sessions still open after the shutdown grace period; aborting them");
        sessions.abort_all();
    }
}

fn admit(
    stream: TcpStream,
    peer: SocketAddr,
    role: Role,
    ctx: &Arc<Context>,
    shutdown: &watch::Receiver<bool>,
    sessions: &mut JoinSet<()>,
) {
    let _ = stream.set_nodelay(true);
    let session_id = SESSION_IDS.fetch_add(1, Ordering::Relaxed);
    let span = info_span!("smtp", session = session_id, client = %peer, role = ?role);
    match ctx.limiter.try_acquire(peer.ip()) {
        Ok(permit) => {
            let conn = Connection::new(Arc::clone(ctx), peer);
            let shutdown = shutdown.clone();
            sessions.spawn(
                async move {
                    let _permit = permit;
                    info!("connect");
                    conn.run(stream, shutdown).await;
                }
                .instrument(span),
            );
        }
        Err(refusal) => {
            let hostname = ctx.hostname.clone();
            sessions.spawn(
                async move {
                    let text = match refusal {
                        Refusal::ServerFull => "too many connections, try again later",
                        Refusal::TooManyFromAddress => "too many connections from your address",
                    };
                    info!(reason = text, "connection refused");
                    let mut stream = stream;
                    let line = format!("421 4.7.0 {hostname} Error: {text}\r\n");
                    let _ = tokio::time::timeout(Duration::from_secs(5), async {
                        let _ = stream.write_all(line.as_bytes()).await;
                        let _ = stream.shutdown().await;
                    })
                    .await;
                }
                .instrument(span),
            );
        }
    }
}
