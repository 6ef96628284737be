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
use crate::metrics::{SessionOutcome, metrics};
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
    /// The role's configuration name (`mx`, `submissions`, `imap`, …), for
    /// logs, the journal and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Mx => "mx",
            Role::Submission => "submission",
            Role::Submissions => "submissions",
            Role::Imap => "imap",
            Role::Imaps => "imaps",
            Role::Pop3 => "pop3",
            Role::Pop3s => "pop3s",
        }
    }

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
    /// POP3 listeners: the autologout timer of their sessions (`None`:
    /// the POP3 service's).
    pub idle_timeout: Option<Duration>,
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
    live: Arc<std::sync::atomic::AtomicUsize>,
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
        Ok(Server {
            ctx,
            listeners,
            live: Arc::default(),
        })
    }

    /// Serves on listeners bound beforehand, each with its spec: for a
    /// caller that binds while privileged and builds the [`Context`] only
    /// after giving the privileges up.
    pub fn with_listeners(
        ctx: Arc<Context>,
        listeners: Vec<(TcpListener, ListenerSpec)>,
    ) -> Server {
        Server {
            ctx,
            listeners,
            live: Arc::default(),
        }
    }

    /// How many listeners are accepting right now (for readiness checks):
    /// each counts from the start of its accept loop until it stops.
    pub fn live_listeners(&self) -> Arc<std::sync::atomic::AtomicUsize> {
        Arc::clone(&self.live)
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
            let live = Arc::clone(&self.live);
            let ctx = Arc::clone(&self.ctx);
            let shutdown = shutdown.clone();
            accept_loops.spawn(async move {
                live.fetch_add(1, Ordering::Relaxed);
                accept_loop(listener, spec, ctx, shutdown).await;
                live.fetch_sub(1, Ordering::Relaxed);
            });
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
    // A descriptor kept in reserve: when the process runs out, it is given
    // up for a moment to accept the waiting client and tell it 421 (rather
    // than leaving it hanging in the backlog).
    let mut spare = std::fs::File::open("/dev/null").ok();
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
                    let out_of_files =
                        matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE));
                    if out_of_files && spare.take().is_some() {
                        let refused =
                            refuse_out_of_files(&listener, &ctx.hostname, spec.role).await;
                        spare = std::fs::File::open("/dev/null").ok();
                        if refused && spare.is_some() {
                            // One waiting client told; the next may be
                            // waiting too: no pause (each turn answers one).
                            continue;
                        }
                    }
                    // Back off instead of spinning.
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

/// Out of descriptors (one was just freed): accepts one waiting client,
/// tells it the server is busy in its protocol, and closes.
async fn refuse_out_of_files(listener: &TcpListener, hostname: &str, role: Role) -> bool {
    let Ok(Ok((stream, peer))) =
        tokio::time::timeout(Duration::from_millis(10), listener.accept()).await
    else {
        return false;
    };
    warn!(client = %peer, "out of file descriptors: refusing a client with 421");
    if role.implicit_tls() {
        return true; // it could not read a plaintext line: just closed
    }
    let line = if role.is_imap() {
        format!("* BYE [UNAVAILABLE] {hostname}: server busy, try again later\r\n")
    } else if role.is_pop3() {
        format!("-ERR [SYS/TEMP] {hostname}: server busy, try again later\r\n")
    } else {
        format!("421 4.3.2 {hostname} Error: server busy, try again later\r\n")
    };
    let _ = stream.try_write(line.as_bytes());
    true
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
                Refusal::TooManyFromNetwork => "too many connections from your network",
            };
            (text.to_owned(), None)
        }),
    };
    match admitted {
        Ok(permit) => {
            let smtp = Arc::clone(&spec.smtp);
            let idle_timeout = spec.idle_timeout;
            let shutdown = shutdown.clone();
            let ctx = Arc::clone(ctx);
            sessions.spawn(
                async move {
                    let permit = Some(permit);
                    let _open = metrics().connection_opened(role);
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
                                metrics().session_ended(role, SessionOutcome::TlsFailed);
                                return;
                            }
                        }
                    } else {
                        stream
                    };
                    if role.is_imap() || role.is_pop3() {
                        let Some(slot) = permit.as_ref().map(|p| p.wake_handle()) else {
                            return;
                        };
                        let run: std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>> =
                            if role.is_imap() {
                                let Some(service) = ctx.imap.clone() else {
                                    warn!("IMAP listener without a mail store; closing");
                                    return;
                                };
                                Box::pin(crate::imap::run(ctx, service, stream, peer, smtp, shutdown))
                            } else {
                                let Some(service) = ctx.pop3.clone() else {
                                    warn!("POP3 listener without a mail store; closing");
                                    return;
                                };
                                Box::pin(crate::pop3::run(
                                    ctx,
                                    service,
                                    stream,
                                    peer,
                                    smtp,
                                    idle_timeout,
                                    shutdown,
                                ))
                            };
                        // The drivers report their login to the slot; a
                        // session not logged in may be evicted for a
                        // newcomer when the server is full (closed).
                        let run = crate::limits::SESSION_SLOT.scope(slot.clone(), run);
                        tokio::pin!(run);
                        loop {
                            tokio::select! {
                                () = &mut run => break,
                                () = slot.woken() => if slot.evicted() {
                                    // The driver says goodbye (`* BYE`,
                                    // `-ERR`) and returns; a second
                                    // wake-up reaches it, a second at most
                                    // is allowed for it.
                                    slot.wake_again();
                                    let _ = tokio::time::timeout(Duration::from_secs(1), &mut run).await;
                                    break;
                                },
                            }
                        }
                        let outcome = if slot.evicted() {
                            info!("server full: evicted (not logged in) to make room for a new client");
                            SessionOutcome::Evicted
                        } else {
                            SessionOutcome::Closed
                        };
                        metrics().session_ended(role, outcome);
                    } else {
                        // Boxed: the task then holds only its own
                        // protocol's state (an idle IMAP session does not
                        // pay for the size of an SMTP one).
                        let conn = Connection::new(ctx, peer, role, smtp);
                        let outcome = Box::pin(conn.run(stream, shutdown, permit)).await;
                        metrics().session_ended(role, outcome);
                    }
                }
                .instrument(span),
            );
        }
        Err((text, retry)) => {
            metrics().session_ended(role, SessionOutcome::Refused);
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
