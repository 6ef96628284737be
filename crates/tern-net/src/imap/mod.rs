//! The IMAP driver: pumps bytes between a socket and a sans-IO
//! [`tern_imap::session::Session`], answers its SASL questions through the
//! shared authentication service (`crate::auth`) and its mailbox
//! requests through a [`backend::Backend`] on a blocking thread, runs the
//! STARTTLS handshake (nothing read before it survives), and waits in IDLE
//! on the mail store's change notifications (a delivery is seen within a
//! second; files written by other programs are polled once a second).
//!
//! Timeouts: one minute before authentication, 30 minutes between commands
//! after it (RFC 9051 5.4), and in IDLE a `* OK Still here` every two
//! minutes (mobile NATs) up to 30 minutes. Sessions per user are bounded.
//! This module never parses IMAP itself and never logs a secret.

pub mod backend;
pub mod learn;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tern_imap::session::{Completion, Event, Session, SessionConfig, TimeoutClass};
use tern_sasl::{Answer, FailureKind};
use tern_smtp::server::ServerConfig;
use tern_store::mailbox::Mailboxes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::watch;
use tracing::{debug, info, warn};

use crate::Context;
use crate::conn::escape_for_log;
use crate::tls::MaybeTlsStream;
use backend::Backend;

/// Waiting for a command before authentication.
const PRE_AUTH_TIMEOUT: Duration = Duration::from_secs(60);
/// Waiting for a command after authentication (RFC 9051 5.4: at least 30
/// minutes).
const COMMAND_TIMEOUT: Duration = Duration::from_secs(30 * 60);
/// The longest IDLE (clients re-issue it every 29 minutes).
const IDLE_LIMIT: Duration = Duration::from_secs(30 * 60);
/// How often an idling client hears `* OK Still here`.
const KEEPALIVE: Duration = Duration::from_secs(120);
/// Room for one read from the socket.
const READ_CHUNK: usize = 16 * 1024;

/// The IMAP service: the mail store and its limits, shared by every
/// IMAP session.
#[derive(Debug)]
pub struct ImapService {
    /// Every user's mailboxes.
    pub mailboxes: Arc<Mailboxes>,
    /// The largest message APPEND accepts (APPENDLIMIT).
    pub append_limit: u64,
    /// Concurrent IMAP sessions one user may hold.
    pub max_sessions_per_user: usize,
    /// Spam learning on moves into and out of Junk (`None`: off).
    pub learner: Option<learn::Learner>,
    sessions: Mutex<HashMap<String, usize>>,
    /// One session configuration per listener, shared by its sessions.
    configs: Mutex<Vec<(std::sync::Weak<ServerConfig>, Arc<SessionConfig>)>>,
}

impl ImapService {
    /// A service over `mailboxes`.
    pub fn new(mailboxes: Arc<Mailboxes>, append_limit: u64, max_sessions_per_user: usize) -> Self {
        ImapService {
            mailboxes,
            append_limit,
            max_sessions_per_user,
            learner: None,
            sessions: Mutex::new(HashMap::new()),
            configs: Mutex::new(Vec::new()),
        }
    }

    /// The session configuration of the listener whose SMTP-side settings
    /// are `smtp`, made once and shared.
    fn session_config(&self, smtp: &Arc<ServerConfig>) -> Arc<SessionConfig> {
        let mut configs = self.configs.lock().unwrap_or_else(|e| e.into_inner());
        configs.retain(|(w, _)| w.strong_count() > 0);
        if let Some((_, c)) = configs
            .iter()
            .find(|(w, _)| std::ptr::eq(w.as_ptr(), Arc::as_ptr(smtp)))
        {
            return Arc::clone(c);
        }
        let c = Arc::new(session_config(smtp, self));
        configs.push((Arc::downgrade(smtp), Arc::clone(&c)));
        c
    }

    fn enter(self: &Arc<Self>, user: &str) -> Option<UserSlot> {
        let key = user.to_ascii_lowercase();
        let mut s = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
        let n = s.entry(key.clone()).or_insert(0);
        if *n >= self.max_sessions_per_user {
            return None;
        }
        *n += 1;
        Some(UserSlot {
            service: Arc::clone(self),
            user: key,
        })
    }
}

/// One of a user's session slots; dropping it frees the slot.
#[derive(Debug)]
struct UserSlot {
    service: Arc<ImapService>,
    user: String,
}

impl Drop for UserSlot {
    fn drop(&mut self) {
        let mut s = self
            .service
            .sessions
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if let Some(n) = s.get_mut(&self.user) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                s.remove(&self.user);
            }
        }
    }
}

/// The session settings for a listener, from its SMTP-side settings (TLS,
/// mechanisms, plaintext AUTH) and the service's limits.
fn session_config(smtp: &ServerConfig, service: &ImapService) -> SessionConfig {
    let mut c = SessionConfig {
        mechanisms: smtp.auth_mechanisms.clone(),
        plaintext_auth_allowed: smtp.auth_plaintext_allowed,
        starttls: !smtp.tls_active,
        ..SessionConfig::default()
    };
    // The session advertises APPENDLIMIT from the literal limit.
    c.after_auth.max_literal = service.append_limit;
    c.after_auth.max_command = c
        .after_auth
        .max_command
        .max(service.append_limit + 64 * 1024);
    c
}

/// Runs one IMAP connection to its end. `tls`: the stream is already
/// encrypted (implicit TLS, port 993).
pub(crate) async fn run(
    ctx: Arc<Context>,
    service: Arc<ImapService>,
    stream: MaybeTlsStream,
    peer: SocketAddr,
    smtp: Arc<ServerConfig>,
    mut shutdown: watch::Receiver<bool>,
) {
    let tls = stream.tls_info().is_some();

    let mut stream = Io {
        stream: Some(stream),
        deflate: None,
        raw: Vec::new(),
    };
    let mut session = Session::new(service.session_config(&smtp), tls);
    let authn =
        crate::auth::Authenticator::new(Arc::clone(&ctx), peer.ip(), crate::auth::Protocol::Imap);
    session.greet();
    let backend = Arc::new(Mutex::new(
        Backend::new(Arc::clone(&service.mailboxes), service.append_limit)
            .with_learner(service.learner.clone()),
    ));
    let mut slot: Option<UserSlot> = None;
    // A new, empty one before every read: see `Io::read_buf`.
    let mut buf: Vec<u8>;
    let mut idle: Option<(Instant, Instant)> = None; // (started, last keepalive)
    let mut watch: Option<tern_store::mailbox::MailboxWatch> = None;
    let mut last_activity = Instant::now();
    'session: loop {
        while let Some(event) = session.poll_event() {
            last_activity = Instant::now();
            match event {
                Event::StartTls => {
                    let out = session.take_output();
                    if stream.write_all(&out).await.is_err() {
                        break 'session;
                    }
                    let Some(tlsm) = ctx.tls.as_ref() else {
                        break 'session;
                    };
                    let Some(plain) = stream.stream.take() else {
                        break 'session;
                    };
                    // Boxed: the handshake's state is large, and a session's
                    // future would otherwise keep room for it all its life.
                    match Box::pin(plain.upgrade(&tlsm.acceptor(), ctx.handshake_timeout)).await {
                        Ok(s) => {
                            stream.stream = Some(s);
                            info!("IMAP STARTTLS established");
                            session.tls_established();
                        }
                        Err(e) => {
                            info!(error = %e, "IMAP STARTTLS handshake failed; closing");
                            return;
                        }
                    }
                }
                Event::AuthStart { .. } => {
                    if !authn.begin(|start| session.auth_begin(start)) {
                        session.auth_answer(Answer::Fail(FailureKind::Temporary));
                    }
                }
                Event::Auth(question) => {
                    let answer = match crate::auth::Question::from_imap(question) {
                        Some(q) => Box::pin(authn.answer(q)).await,
                        None => Answer::Fail(FailureKind::Temporary),
                    };
                    session.auth_answer(answer);
                }
                Event::Authenticated { user } => {
                    authn.succeeded(session.auth_mechanism(), &user);
                    crate::limits::session_authenticated();
                    let Some(s) = service.enter(&user) else {
                        warn!(user = %escape_for_log(&user), "too many IMAP sessions for this user");
                        let _ = stream
                            .write_all(b"* BYE [LIMIT] Too many sessions for this user\r\n")
                            .await;
                        break 'session;
                    };
                    slot = Some(s);
                    let b = Arc::clone(&backend);
                    let u = user.clone();
                    let opened = tokio::task::spawn_blocking(move || {
                        b.lock().unwrap_or_else(|e| e.into_inner()).login(&u)
                    })
                    .await;
                    match opened {
                        Ok(Ok(())) => info!(user = %escape_for_log(&user), "IMAP login"),
                        Ok(Err(e)) => {
                            warn!(user = %escape_for_log(&user), error = %e, "mail store cannot be opened");
                            let _ = stream
                                .write_all(b"* BYE [UNAVAILABLE] Mailbox unavailable\r\n")
                                .await;
                            break 'session;
                        }
                        Err(_) => break 'session,
                    }
                }
                Event::AuthFailed { kind } => {
                    authn.failed(session.auth_mechanism(), None, kind);
                    info!(kind = ?kind, "IMAP authentication failed");
                }
                Event::Request(request) => {
                    let out = session.take_output();
                    if !out.is_empty() && stream.write_all(&out).await.is_err() {
                        break 'session;
                    }
                    let opts = session.encode_options();
                    let b = Arc::clone(&backend);
                    // Long output (a FETCH of many messages) comes in
                    // chunks while the backend goes on, written as it
                    // comes (at most a few chunks in memory at once); the
                    // answer comes last on the same channel, so the
                    // session is woken once for a short answer.
                    let (tx, mut answers) = tokio::sync::mpsc::channel::<Reply>(2);
                    drop(tokio::task::spawn_blocking(move || {
                        let mut flush = |out: &mut Vec<u8>| {
                            let chunk = std::mem::replace(
                                out,
                                Vec::with_capacity(backend::STREAM_CHUNK + 4096),
                            );
                            // A closed channel: the client is gone; the
                            // rest is dropped as it is made.
                            let _ = tx.blocking_send(Reply::Chunk(chunk));
                        };
                        let answer = b
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .handle_streaming(request, opts, &mut flush);
                        let _ = tx.blocking_send(Reply::Done(answer));
                    }));
                    let answer = loop {
                        match answers.recv().await {
                            Some(Reply::Chunk(chunk)) => {
                                if stream.write_all(&chunk).await.is_err() {
                                    break 'session;
                                }
                            }
                            Some(Reply::Done(a)) => break Some(a),
                            // The backend panicked.
                            None => break None,
                        }
                    };
                    match answer {
                        Some(a) => {
                            if !a.untagged.is_empty()
                                && stream.write_all(&a.untagged).await.is_err()
                            {
                                break 'session;
                            }
                            session.finish(a.completion);
                        }
                        None => session.finish(Completion::no(
                            Some(tern_imap::response::Code::ServerBug),
                            "Internal error",
                        )),
                    }
                }
                Event::IdleStart => {
                    let now = Instant::now();
                    idle = Some((now, now));
                    watch = backend.lock().unwrap_or_else(|e| e.into_inner()).watch();
                }
                Event::IdleDone => {
                    idle = None;
                    watch = None;
                }
                Event::Compress { pending } => {
                    // The OK goes out uncompressed; everything after, both ways, is deflated.
                    let out = session.take_output();
                    if stream.write_all(&out).await.is_err() {
                        break 'session;
                    }
                    stream.deflate = Some((
                        flate2::Compress::new(flate2::Compression::fast(), false),
                        flate2::Decompress::new(false),
                    ));
                    info!("IMAP COMPRESS=DEFLATE active");
                    if !pending.is_empty() {
                        let mut plain = Vec::new();
                        let inflated = match stream.deflate.as_mut() {
                            Some((_, d)) => inflate(d, &pending, &mut plain),
                            None => Ok(()),
                        };
                        if inflated.is_err() {
                            break 'session;
                        }
                        session.handle_input(&plain);
                    }
                }
                Event::Close => {
                    let out = session.take_output();
                    let _ = stream.write_all(&out).await;
                    break 'session;
                }
                other => debug!(event = ?other, "IMAP event"),
            }
        }
        let out = session.take_output();
        if !out.is_empty() {
            match tokio::time::timeout(COMMAND_TIMEOUT, stream.write_all(&out)).await {
                Ok(Ok(())) => {}
                _ => break,
            }
        }
        let deadline = match session.timeout_class() {
            TimeoutClass::NotAuthenticated => {
                crate::limits::pre_login_timeout(PRE_AUTH_TIMEOUT, ctx.timeouts.stress.command)
            }
            TimeoutClass::TlsHandshake => ctx.handshake_timeout,
            _ => COMMAND_TIMEOUT,
        };
        buf = Vec::new();
        if let Some((started, last_keepalive)) = idle {
            if started.elapsed() >= IDLE_LIMIT {
                let _ = stream.write_all(b"* BYE IDLE for too long\r\n").await;
                break;
            }
            let tick = tokio::time::sleep(Duration::from_secs(1));
            tokio::select! {
                biased;
                _ = shutdown.changed() => {
                    let _ = stream.write_all(b"* BYE Server shutting down\r\n").await;
                    break;
                }
                read = stream.read_buf(&mut buf) => match read {
                    Ok(0) | Err(_) => break,
                    Ok(n) => session.handle_input(&buf[..n]),
                },
                _ = async {
                    match watch.as_mut() {
                        Some(w) => { w.changed().await; }
                        None => std::future::pending::<()>().await,
                    }
                } => {
                    push_updates(&backend, &mut session, &mut stream, false).await;
                }
                _ = tick => {
                    push_updates(&backend, &mut session, &mut stream, true).await;
                    if last_keepalive.elapsed() >= KEEPALIVE {
                        session.keepalive();
                        idle = Some((started, Instant::now()));
                    }
                }
            }
            continue;
        }
        let left = deadline.saturating_sub(last_activity.elapsed());
        tokio::select! {
            biased;
            _ = shutdown.changed() => {
                let _ = stream.write_all(b"* BYE Server shutting down\r\n").await;
                break;
            }
            () = crate::limits::session_evicted() => {
                let _ = tokio::time::timeout(
                    Duration::from_secs(1),
                    stream.write_all(b"* BYE [UNAVAILABLE] Server is full; try again later\r\n"),
                )
                .await;
                break;
            }
            read = tokio::time::timeout(left, stream.read_buf(&mut buf)) => match read {
                Err(_) => {
                    info!("IMAP client timed out");
                    let _ = stream.write_all(b"* BYE Autologout; idle for too long\r\n").await;
                    break;
                }
                Ok(Ok(0)) | Ok(Err(_)) => break,
                Ok(Ok(n)) => {
                    last_activity = Instant::now();
                    session.handle_input(&buf[..n]);
                }
            }
        }
    }
    stream.shutdown().await;
    drop(slot);
    debug!("IMAP disconnect");
}

/// What the backend's blocking task sends back for one request.
enum Reply {
    /// Untagged output so far (long answers).
    Chunk(Vec<u8>),
    /// The rest, and the completion.
    Done(backend::Answer),
}

/// The connection, with COMPRESS=DEFLATE (RFC 4978) once the client
/// asked for it: raw deflate both ways, each write flushed (sync flush) so
/// the client sees every response at once.
struct Io {
    /// `None` only while a STARTTLS handshake has it.
    stream: Option<MaybeTlsStream>,
    deflate: Option<(flate2::Compress, flate2::Decompress)>,
    raw: Vec<u8>,
}

impl Io {
    async fn write_all(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        let Some(stream) = self.stream.as_mut() else {
            return Err(std::io::ErrorKind::NotConnected.into());
        };
        match self.deflate.as_mut() {
            None => stream.write_all(bytes).await,
            Some((c, _)) => {
                let packed = deflate(c, bytes)?;
                stream.write_all(&packed).await
            }
        }
    }

    /// Reads what is there into `buf` (decompressed); 0 at end of stream.
    ///
    /// A plaintext connection waits for the socket to become readable
    /// before `buf` gets room for the read, so that a session waiting for
    /// its client's next command (most of them, most of the time) holds no
    /// read buffer. (TLS waits inside the read; the TLS library keeps
    /// buffers of its own anyway.) Cancel-safe: nothing is lost if the
    /// future is dropped before it returns.
    async fn read_buf(&mut self, buf: &mut Vec<u8>) -> std::io::Result<usize> {
        let Some(stream) = self.stream.as_mut() else {
            return Ok(0);
        };
        if self.deflate.is_none() {
            if let MaybeTlsStream::Plain(tcp) = stream {
                loop {
                    tcp.readable().await?;
                    buf.reserve(READ_CHUNK);
                    match tcp.try_read_buf(buf) {
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                            // Readiness left over from the last read: give
                            // the room back before waiting for real.
                            if buf.is_empty() {
                                *buf = Vec::new();
                            }
                        }
                        read => return read,
                    }
                }
            }
            buf.reserve(READ_CHUNK);
            return stream.read_buf(buf).await;
        }
        loop {
            self.raw.clear();
            self.raw.reserve(READ_CHUNK);
            let n = stream.read_buf(&mut self.raw).await?;
            if n == 0 {
                return Ok(0);
            }
            let Some((_, d)) = self.deflate.as_mut() else {
                return Ok(0);
            };
            let before = buf.len();
            inflate(d, &self.raw, buf)?;
            if buf.len() > before {
                return Ok(buf.len() - before);
            }
        }
    }

    async fn shutdown(&mut self) {
        if let Some(s) = self.stream.as_mut() {
            let _ = s.shutdown().await;
        }
    }
}

fn deflate(c: &mut flate2::Compress, mut input: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut out = Vec::with_capacity(input.len() / 2 + 64);
    loop {
        out.reserve(4096);
        let before = c.total_in();
        c.compress_vec(input, &mut out, flate2::FlushCompress::Sync)
            .map_err(std::io::Error::other)?;
        input = &input[(c.total_in() - before) as usize..];
        if input.is_empty() && out.len() < out.capacity() {
            return Ok(out);
        }
    }
}

/// Inflates `input` onto `out`, bounded: a client cannot make one read
/// expand beyond 16 MiB (the framer's limits apply after).
fn inflate(d: &mut flate2::Decompress, mut input: &[u8], out: &mut Vec<u8>) -> std::io::Result<()> {
    const MAX_EXPANSION: usize = 16 * 1024 * 1024;
    let start = out.len();
    loop {
        out.reserve(16 * 1024);
        let before_in = d.total_in();
        let before_out = out.len();
        d.decompress_vec(input, out, flate2::FlushDecompress::Sync)
            .map_err(std::io::Error::other)?;
        input = &input[(d.total_in() - before_in) as usize..];
        if out.len() - start > MAX_EXPANSION {
            return Err(std::io::Error::other("compressed input expands too far"));
        }
        if input.is_empty() && out.len() < out.capacity() {
            return Ok(());
        }
        if input.is_empty() && out.len() == before_out {
            return Ok(());
        }
    }
}

/// Writes the selected mailbox's pending changes while idling; with
/// `poll`, first looks for files other programs wrote.
async fn push_updates(
    backend: &Arc<Mutex<Backend>>,
    session: &mut Session,
    stream: &mut Io,
    poll: bool,
) {
    let opts = session.encode_options();
    let b = Arc::clone(backend);
    let updates = tokio::task::spawn_blocking(move || {
        let mut b = b.lock().unwrap_or_else(|e| e.into_inner());
        if poll {
            b.poll_files();
        }
        b.updates(opts)
    })
    .await
    .unwrap_or_default();
    if !updates.is_empty() {
        let _ = stream.write_all(&updates).await;
    }
}
