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
use std::time::{Duration, Instant};

use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tracing::{Instrument, info, info_span, warn};

use crate::Context;
use crate::conn::Connection;
use crate::limits::Refusal;
use crate::tls::MaybeTlsStream;
use tern_smtp::server::ServerConfig;

/// What a listener is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Role {
    /// Inbound MX (port 25): mail for local domains from anyone; STARTTLS
    /// offered when TLS is configured.
    Mx,
    /// Submission (port 587, RFC 6409): STARTTLS, then AUTH required.
    Submission,
    /// Submission over implicit TLS (port 465, RFC 8314): AUTH required.
    Submissions,
    /// IMAP with STARTTLS (port 143).
    Imap,
    /// IMAP over implicit TLS (port 993).
    Imaps,
    /// POP3 with STLS (port 110).
    Pop3,
    /// POP3 over implicit TLS (port 995).
    Pop3s,
}

impl Role {
    /// Submission roles require AUTH and apply the submission policy.
    pub fn is_submission(self) -> bool {
        matches!(self, Role::Submission | Role::Submissions)
    }

    /// An IMAP listener (of either kind).
    pub fn is_imap(self) -> bool {
        matches!(self, Role::Imap | Role::Imaps)
    }

    /// A POP3 listener (of either kind).
    pub fn is_pop3(self) -> bool {
        matches!(self, Role::Pop3 | Role::Pop3s)
    }

    /// The TLS handshake comes first (RFC 8314).
    pub fn implicit_tls(self) -> bool {
        matches!(self, Role::Submissions | Role::Imaps | Role::Pop3s)
    }
}

/// One listening socket: where, what for, and the session settings its
/// connections start from.
#[derive(Debug, Clone)]
pub struct ListenerSpec {
    /// Address to bind (port 0: any free port).
    pub addr: SocketAddr,
    /// What the listener is for.
    pub role: Role,
    /// Session settings (TLS, AUTH and limits for this role).
    pub smtp: Arc<ServerConfig>,
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
    listeners: Vec<(TcpListener, ListenerSpec)>,
}

static SESSION_IDS: AtomicU64 = AtomicU64::new(1);

impl Server {
    /// Binds every listener (port 0 picks a free port; see [`Server::local_addrs`]).
    pub async fn bind(ctx: Arc<Context>, specs: &[ListenerSpec]) -> Result<Server, NetError> {
        let mut listeners = Vec::with_capacity(specs.len());
        for spec in specs {
            let addr = spec.addr;
            let l = TcpListener::bind(addr)
                .await
                .map_err(|source| NetError::Bind { addr, source })?;
            listeners.push((l, spec.clone()));
        }
        Ok(Server { ctx, listeners })
    }

    /// Serves on listeners bound beforehand, each with its spec: for a
    /// caller that binds while privileged and builds the [`Context`] only
    /// after giving the privileges up.
    pub fn with_listeners(
        ctx: Arc<Context>,
        listeners: Vec<(TcpListener, ListenerSpec)>,
    ) -> Server {
        Server { ctx, listeners }
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
        for (listener, spec) in self.listeners {
            if let Ok(addr) = listener.local_addr() {
                info!(%addr, role = ?spec.role, "listening");
            }
            accept_loops.spawn(accept_loop(
                listener,
                spec,
                Arc::clone(&self.ctx),
                shutdown.clone(),
            ));
        }
        while accept_loops.join_next().await.is_some() {}
    }
}

async fn accept_loop(
    listener: TcpListener,
    spec: ListenerSpec,
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
                    admit(stream, peer, &spec, &ctx, &shutdown, &mut sessions);
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
    spec: &ListenerSpec,
    ctx: &Arc<Context>,
    shutdown: &watch::Receiver<bool>,
    sessions: &mut JoinSet<()>,
) {
    let _ = stream.set_nodelay(true);
    let session_id = SESSION_IDS.fetch_add(1, Ordering::Relaxed);
    let role = spec.role;
    let span = if role.is_imap() {
        info_span!("imap", session = session_id, client = %peer, role = ?role)
    } else if role.is_pop3() {
        info_span!("pop3", session = session_id, client = %peer, role = ?role)
    } else {
        info_span!("smtp", session = session_id, client = %peer, role = ?role)
    };
    let admitted = match ctx.abuse.connection(peer.ip(), Instant::now()) {
        Err(retry) => Err((
            "too many connections from your address per minute, try again later".to_owned(),
            Some(retry),
        )),
        Ok(()) => ctx.limiter.try_acquire(peer.ip()).map_err(|refusal| {
            let text = match refusal {
                Refusal::ServerFull => "too many connections, try again later",
                Refusal::TooManyFromAddress => "too many connections from your address",
            };
            (text.to_owned(), None)
        }),
    };
    match admitted {
        Ok(permit) => {
            let smtp = Arc::clone(&spec.smtp);
            let shutdown = shutdown.clone();
            let ctx = Arc::clone(ctx);
            sessions.spawn(
                async move {
                    let _permit = permit;
                    info!("connect");
                    let stream = MaybeTlsStream::Plain(stream);
                    let stream = if role.implicit_tls() {
                        // Implicit TLS (RFC 8314): the handshake comes first.
                        let Some(tls) = ctx.tls.as_ref() else {
                            warn!("implicit TLS listener without TLS configured; closing");
                            return;
                        };
                        // Boxed (large, and only needed during the handshake).
                        match Box::pin(stream.upgrade(&tls.acceptor(), ctx.handshake_timeout)).await
                        {
                            Ok(s) => s,
                            Err(e) => {
                                info!(error = %e, "TLS handshake failed");
                                return;
                            }
                        }
                    } else {
                        stream
                    };
                    if role.is_imap() {
                        let Some(service) = ctx.imap.clone() else {
                            warn!("IMAP listener without a mail store; closing");
                            return;
                        };
                        // Boxed, like the others: the task then holds only
                        // its own protocol's state (an idle IMAP session
                        // does not pay for the size of an SMTP one).
                        Box::pin(crate::imap::run(ctx, service, stream, peer, smtp, shutdown))
                            .await;
                    } else if role.is_pop3() {
                        let Some(service) = ctx.pop3.clone() else {
                            warn!("POP3 listener without a mail store; closing");
                            return;
                        };
                        Box::pin(crate::pop3::run(ctx, service, stream, peer, smtp, shutdown))
                            .await;
                    } else {
                        let conn = Connection::new(ctx, peer, role, smtp);
                        Box::pin(conn.run(stream, shutdown)).await;
                    }
                }
                .instrument(span),
            );
        }
        Err((text, retry)) => {
            let hostname = ctx.hostname.clone();
            sessions.spawn(
                async move {
                    info!(reason = %text, retry_after = ?retry.map(|r| r.wait), "connection refused");
                    let mut stream = stream;
                    let line = if role.is_imap() {
                        format!("* BYE [UNAVAILABLE] {hostname}: {text}\r\n")
                    } else if role.is_pop3() {
                        format!("-ERR [SYS/TEMP] {hostname}: {text}\r\n")
                    } else {
                        format!("421 4.7.0 {hostname} Error: {text}\r\n")
                    };
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
