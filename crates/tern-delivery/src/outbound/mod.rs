//! Outbound SMTP delivery: the tokio driver that hands one queued message
//! to the next hop for the recipients of one destination domain.
//!
//! [`deliver_to_domain`] finds where the domain's mail goes (MX lookup with
//! [`tern_dns::plan_delivery`], an address literal, or the configured
//! [`Smarthost`]), connects to each target in turn and pumps a sans-IO
//! [`ClientSession`] over the socket, following the driver contract written
//! on [`ClientSession`]. It returns exactly one [`AttemptResult`] per
//! recipient; the queue manager records them and schedules retries. It
//! keeps no state between calls and never touches the spool.
//!
//! Rules:
//! * a connection failure (refused, unreachable, timed out), a greeting
//!   that is not 2xx, or a session that fails before any MAIL was sent
//!   moves on to the next (host, address) of the plan; once a transaction
//!   has produced results they are this attempt's answer (2xx delivered,
//!   4xx temporary, 5xx permanent). When every target failed, every
//!   recipient is deferred with the last error;
//! * a permanent DNS answer (NXDOMAIN, null MX, no mail host) fails every
//!   recipient at once; a temporary one defers them;
//! * MX delivery uses STARTTLS opportunistically (RFC 7435): the session is
//!   encrypted whenever the server offers it, the certificate is not
//!   verified (no MX authentication policy exists yet) but the handshake
//!   signatures are. A failed handshake is retried once on a new connection
//!   without TLS;
//! * a server that greets us (or answers EHLO) with our own `helo_name` is
//!   ourselves: the recipients fail with `554 5.4.6` as Postfix does
//!   ("mail loops back to myself"), rather than circling until expiry.
//!
//! What it must never do:
//! * panic, hang or allocate without bound on anything a server or the DNS
//!   sends: every read, write, connect and handshake runs under a timeout
//!   (the RFC 5321 4.5.3.2 timer [`ClientSession::timeout_class`] names),
//!   replies are bounded by the session's parser, and the message is
//!   streamed in [`DATA_CHUNK`]-byte pieces;
//! * act on bytes read between the server's `220` to STARTTLS and the end
//!   of the handshake (Exim CVE-2021-38371): the session discards them and
//!   this driver keeps no read buffer across the upgrade;
//! * write message content that another server could read as an early end
//!   of data: every byte goes through [`DataEncoder`];
//! * log credentials: lines marked [`Outgoing::is_sensitive`] are never
//!   logged, and credentials are never sent without TLS;
//! * use a TLS provider other than ring, or a protocol older than TLS 1.2.
//!
//! ```no_run
//! # async fn demo(resolver: &dyn tern_dns::Resolver) {
//! use tern_delivery::outbound::{
//!     MessageData, OutboundMessage, OutboundSettings, RemoteRecipient, deliver_to_domain,
//! };
//! use tern_types::dsn::BodyType;
//! let settings = OutboundSettings::new("mx.example.org");
//! let msg = OutboundMessage {
//!     sender: &"alice@example.org".parse::<tern_types::Mailbox>().unwrap().into(),
//!     body: BodyType::SevenBit,
//!     smtputf8: false,
//!     ret: None,
//!     envid: None,
//!     data: MessageData::Bytes(b"Subject: hi\r\n\r\nHello.\r\n"),
//! };
//! let rcpts = [RemoteRecipient::new(0, "bob@example.net".parse().unwrap())];
//! let done = deliver_to_domain(&settings, resolver, "example.net", &msg, &rcpts, 42).await;
//! for (index, result) in done.results {
//!     println!("{index}: {result:?}");
//! }
//! # }
//! ```

use std::borrow::Cow;
use std::fmt;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tern_dns::{DeliveryPlan, PlanError, Resolver, plan_delivery};
use tern_queue::{Answer, AttemptResult, LocalCause, LocalError, UnreadableAddress};
use tern_smtp::client::{
    AuthMechanism, ClientAuth, ClientConfig, ClientSession, ClientTimeouts, DataEncoder, Event,
    MessageParams, Outcome, Outgoing, RcptOutcome, RcptResult, Recipient, ReplyLimits, ReplyParser,
    SessionError, SessionFailure, StartTlsPolicy, TimeoutClass, Transaction, TransactionResult,
};
use tern_smtp::reply::Reply;
use tern_types::dsn::{BodyType, Notify, Orcpt, Ret};
use tern_types::{AddressLiteral, EnhancedStatus, ForwardPath, Mailbox, ReversePath, ServerReply};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio::time::timeout;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

/// How much of the message is encoded and written at a time.
pub const DATA_CHUNK: usize = 64 * 1024;

/// How long closing a connection politely (TLS close_notify) may take.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(2);

/// How long a failed write waits for a reply that explains it.
const SALVAGE_TIMEOUT: Duration = Duration::from_millis(500);

/// Size of the read buffer of one connection.
const READ_BUFFER: usize = 16 * 1024;

/// CA bundles tried, in order, when a smarthost's certificate must be
/// verified and no [`Smarthost::ca_file`] is set (Debian/Ubuntu/Alpine,
/// Fedora/RHEL, then BSD/macOS-style locations).
pub const SYSTEM_CA_BUNDLES: &[&str] = &[
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/cert.pem",
];

// ------------------------------------------------------------ Settings

/// How outbound delivery connects. One value serves every delivery.
#[derive(Debug, Clone)]
pub struct OutboundSettings {
    /// Our name in EHLO/HELO; also how a loop back to ourselves is noticed.
    pub helo_name: String,
    /// The port of MX hosts: 25 (tests override it).
    pub port: u16,
    /// Relay everything through this host instead of looking up MX records.
    pub smarthost: Option<Smarthost>,
    /// The RFC 5321 4.5.3.2 client timers.
    pub timeouts: ClientTimeouts,
    /// How long a TCP connect may take.
    pub connect_timeout: Duration,
    /// STARTTLS policy for MX delivery (opportunistic by default).
    pub starttls: StartTlsPolicy,
}

impl OutboundSettings {
    /// MX delivery on port 25, RFC 5321 timers, a 30 s connect timeout and
    /// opportunistic STARTTLS.
    pub fn new(helo_name: impl Into<String>) -> OutboundSettings {
        OutboundSettings {
            helo_name: helo_name.into(),
            port: 25,
            smarthost: None,
            timeouts: ClientTimeouts::default(),
            connect_timeout: Duration::from_secs(30),
            starttls: StartTlsPolicy::Opportunistic,
        }
    }

    /// Checks what can be checked without the network: the HELO name, the
    /// smarthost's credentials and its CA file. The queue manager calls it
    /// at start-up so that a mistake is reported once, not as a deferral
    /// of every message.
    pub fn validate(&self) -> Result<(), OutboundError> {
        let mut config = ClientConfig::new(self.helo_name.clone());
        if let Some(sh) = &self.smarthost {
            if sh.host.trim().is_empty() {
                return Err(OutboundError::SmarthostHost);
            }
            if let Some((user, password)) = &sh.auth {
                config.auth = Some(ClientAuth::new(AuthMechanism::Plain, user, password));
            }
            if sh.verify_certificate && sh.tls != SmarthostTls::None {
                verified_config(sh.ca_file.as_deref())?;
            }
        }
        config.validate().map_err(OutboundError::Client)?;
        Ok(())
    }
}

/// A relay host that takes all outbound mail (a provider's submission
/// server, for home servers that cannot send on port 25).
#[derive(Clone)]
pub struct Smarthost {
    /// Host name or IP address (`192.0.2.1`, `[192.0.2.1]`, `2001:db8::1`).
    pub host: String,
    /// Its port: usually 587 with [`SmarthostTls::Starttls`], 465 with
    /// [`SmarthostTls::Implicit`].
    pub port: u16,
    /// How the connection is encrypted.
    pub tls: SmarthostTls,
    /// `(user, password)` for AUTH PLAIN (AUTH LOGIN when PLAIN is not
    /// offered). Only ever sent over TLS: with [`SmarthostTls::None`]
    /// every delivery is deferred with `4.7.10`.
    pub auth: Option<(String, String)>,
    /// Verify the certificate chain and the host name. Roots come from
    /// [`ca_file`](Self::ca_file), or else from the first of
    /// [`SYSTEM_CA_BUNDLES`] that exists. When false the connection is
    /// encrypted but not authenticated.
    pub verify_certificate: bool,
    /// A PEM file with the certificates to trust (a private CA, or the
    /// smarthost's self-signed certificate).
    pub ca_file: Option<PathBuf>,
}

impl Smarthost {
    /// A smarthost with STARTTLS required and verified against the system
    /// roots, without credentials.
    pub fn new(host: impl Into<String>, port: u16) -> Smarthost {
        Smarthost {
            host: host.into(),
            port,
            tls: SmarthostTls::Starttls,
            auth: None,
            verify_certificate: true,
            ca_file: None,
        }
    }
}

impl fmt::Debug for Smarthost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Smarthost")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("tls", &self.tls)
            .field("auth", &self.auth.as_ref().map(|(user, _)| (user, "***")))
            .field("verify_certificate", &self.verify_certificate)
            .field("ca_file", &self.ca_file)
            .finish()
    }
}

/// How a smarthost connection is encrypted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SmarthostTls {
    /// STARTTLS, required: no delivery without it (port 587).
    Starttls,
    /// TLS from the first byte (RFC 8314, port 465).
    Implicit,
    /// Plaintext (a relay on a trusted network); no AUTH possible.
    None,
}

/// One recipient of the message at this destination.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteRecipient {
    /// The recipient's index in the envelope; results carry it back.
    pub index: usize,
    /// The address.
    pub address: Mailbox,
    /// The stored address text, when it no longer parses (`address` is
    /// then a placeholder, see [`tern_queue::envelope`]): such a recipient
    /// is never sent; it fails at once with `553 5.1.3`.
    pub unreadable: Option<UnreadableAddress>,
    /// DSN `NOTIFY=`: `NEVER` or a subset of `SUCCESS,FAILURE,DELAY`.
    pub notify: Option<Notify>,
    /// DSN `ORCPT=` (decoded).
    pub orcpt: Option<Orcpt>,
}

impl RemoteRecipient {
    /// A recipient without DSN parameters.
    pub fn new(index: usize, address: Mailbox) -> RemoteRecipient {
        RemoteRecipient {
            index,
            address,
            unreadable: None,
            notify: None,
            orcpt: None,
        }
    }

    /// The queued recipient at `index` of its envelope, DSN parameters and
    /// an unreadable stored address included.
    pub fn queued(index: usize, rcpt: &tern_queue::Recipient) -> RemoteRecipient {
        RemoteRecipient {
            index,
            address: rcpt.address.clone(),
            unreadable: rcpt.unreadable_address.clone(),
            notify: rcpt.notify,
            orcpt: rcpt.orcpt.clone(),
        }
    }

    /// The address as stored: `local@host`, or the text that no longer
    /// parses.
    pub fn address_text(&self) -> Cow<'_, str> {
        match &self.unreadable {
            Some(u) => Cow::Borrowed(&u.text),
            None => Cow::Owned(self.address.to_string()),
        }
    }
}

/// The message to deliver, as queued.
#[derive(Debug, Clone, Copy)]
pub struct OutboundMessage<'a> {
    /// The envelope sender (`MAIL FROM`).
    pub sender: &'a ReversePath,
    /// The body type it was received with.
    pub body: BodyType,
    /// It was received with SMTPUTF8.
    pub smtputf8: bool,
    /// DSN `RET=`.
    pub ret: Option<Ret>,
    /// DSN `ENVID=` (decoded).
    pub envid: Option<&'a tern_types::dsn::EnvId>,
    /// The stored message (header and body).
    pub data: MessageData<'a>,
}

/// Where the bytes of a message come from: memory, or the first `len`
/// bytes of a file (a spool queue file holds the message, then its
/// envelope), read in [`DATA_CHUNK`] pieces while they are sent, so a
/// large message never sits whole in memory.
#[derive(Debug, Clone, Copy)]
pub enum MessageData<'a> {
    /// The message in memory.
    Bytes(&'a [u8]),
    /// The first `len` bytes of the file at `path`.
    File {
        /// The file.
        path: &'a Path,
        /// How many of its bytes are the message.
        len: u64,
    },
}

impl MessageData<'_> {
    /// The message size in bytes.
    pub fn len(&self) -> u64 {
        match self {
            MessageData::Bytes(b) => b.len() as u64,
            MessageData::File { len, .. } => *len,
        }
    }

    /// The message is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// What became of one delivery attempt to one domain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DomainResult {
    /// One `(RemoteRecipient::index, result)` per recipient, in the order
    /// given.
    pub results: Vec<(usize, AttemptResult)>,
    /// The host that gave the final answers, as `name[address]` (for the
    /// DSN's `Remote-MTA`); `None` when no server answered.
    pub remote_mta: Option<String>,
    /// The next hop advertised DSN, so NOTIFY/ORCPT/RET/ENVID went with the
    /// message (otherwise "relayed" notices may be due, RFC 3461 4.1).
    pub dsn_passed_on: bool,
}

/// A configuration that cannot work, found by
/// [`OutboundSettings::validate`] (or at delivery time, when every
/// recipient is deferred with `4.3.5` and the error's text).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OutboundError {
    /// The SMTP client refuses the HELO name or the credentials.
    #[error("outbound SMTP client: {0}")]
    Client(#[source] tern_smtp::client::ConfigError),
    /// The smarthost's host name is empty.
    #[error("the smarthost host is empty")]
    SmarthostHost,
    /// The CA file cannot be read or holds no certificate.
    #[error("cannot load trusted certificates from {}: {detail}", path.display())]
    CaFile {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        detail: String,
    },
    /// No CA file configured and no system CA bundle found.
    #[error("no CA file configured and none of {SYSTEM_CA_BUNDLES:?} exists")]
    NoSystemRoots,
    /// rustls refused the configuration.
    #[error("TLS configuration: {0}")]
    Tls(#[source] rustls::Error),
}

mod cache;
mod tls;

pub(crate) use cache::IdleConnection;
pub use cache::{ConnectionCache, Unsettled};
pub use tls::opportunistic_config;
use tls::{TlsSetup, server_name, verified_config};

// ------------------------------------------------------------ Connection

/// A connection before or after its TLS upgrade (shared with the LMTP
/// driver, which also uses Unix sockets).
pub(crate) enum Conn {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
    /// A Unix domain socket (LMTP); never upgraded to TLS.
    #[cfg(unix)]
    Unix(tokio::net::UnixStream),
    /// The stream was handed to a handshake that failed.
    Gone,
}

impl Conn {
    async fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Conn::Plain(s) => s.read(buf).await,
            Conn::Tls(s) => s.read(buf).await,
            #[cfg(unix)]
            Conn::Unix(s) => s.read(buf).await,
            Conn::Gone => Err(io::ErrorKind::NotConnected.into()),
        }
    }

    async fn write_all(&mut self, bytes: &[u8]) -> io::Result<()> {
        match self {
            Conn::Plain(s) => s.write_all(bytes).await,
            Conn::Tls(s) => {
                s.write_all(bytes).await?;
                s.flush().await
            }
            #[cfg(unix)]
            Conn::Unix(s) => s.write_all(bytes).await,
            Conn::Gone => Err(io::ErrorKind::NotConnected.into()),
        }
    }

    async fn shutdown(&mut self) {
        let _ = match self {
            Conn::Plain(s) => timeout(SHUTDOWN_TIMEOUT, s.shutdown()).await,
            Conn::Tls(s) => timeout(SHUTDOWN_TIMEOUT, s.shutdown()).await,
            #[cfg(unix)]
            Conn::Unix(s) => timeout(SHUTDOWN_TIMEOUT, s.shutdown()).await,
            Conn::Gone => return,
        };
    }

    /// Runs the client handshake on the plain socket. Nothing read before
    /// it is carried over: the driver holds no buffer between reads.
    async fn upgrade(&mut self, tls: &TlsSetup, limit: Duration) -> Result<(), TargetError> {
        let Conn::Plain(tcp) = std::mem::replace(self, Conn::Gone) else {
            return Err(TargetError::Tls(
                "the connection is not a plain TCP stream".into(),
            ));
        };
        match timeout(limit, tls.connector.connect(tls.name.clone(), tcp)).await {
            Ok(Ok(stream)) => {
                *self = Conn::Tls(Box::new(stream));
                Ok(())
            }
            Ok(Err(e)) => Err(TargetError::Tls(e.to_string())),
            Err(_) => Err(TargetError::Tls(format!(
                "handshake not finished after {limit:?}"
            ))),
        }
    }
}

/// Why one target did not take the message (before any transaction).
#[derive(Debug, Clone, thiserror::Error)]
enum TargetError {
    /// TCP connect failed.
    #[error("connection to {target} failed: {reason}")]
    Connect { target: String, reason: String },
    /// TCP connect timed out.
    #[error("connection to {target} timed out after {after:?}")]
    ConnectTimeout { target: String, after: Duration },
    /// The TLS handshake failed (implicit TLS, or the driver's side of
    /// STARTTLS).
    #[error("TLS handshake failed: {0}")]
    Tls(String),
}

/// How one connection ended.
pub(crate) struct ConnResult {
    /// The transaction's results, if one was started.
    pub(crate) txn: Option<TransactionResult>,
    /// The session failed (before or after the transaction).
    pub(crate) failure: Option<SessionFailure>,
    /// The server is ourselves.
    pub(crate) looped: bool,
    /// The connection, still open and ready for another transaction, when
    /// the plan asked to keep it ([`ConnPlan::keep`]) and it is healthy.
    pub(crate) idle: Option<IdleConnection>,
    /// Why our side of a STARTTLS handshake failed (an unverifiable
    /// certificate, say): added to the deferral text.
    pub(crate) tls_error: Option<String>,
}

impl ConnResult {
    /// The connection could not be used at all (no transaction ran).
    fn unusable() -> ConnResult {
        ConnResult {
            txn: None,
            failure: Some(SessionFailure {
                error: SessionError::ConnectionLost,
                before_any_transaction: true,
            }),
            looped: false,
            idle: None,
            tls_error: None,
        }
    }
}

/// What to run on one connection.
pub(crate) struct ConnPlan<'a> {
    pub(crate) config: Arc<ClientConfig>,
    pub(crate) tls: Option<TlsSetup>,
    pub(crate) implicit_tls: bool,
    pub(crate) txn: Transaction,
    pub(crate) data: MessageData<'a>,
    pub(crate) timeouts: ClientTimeouts,
    /// For the log lines.
    pub(crate) target: &'a str,
    /// Watch the greeting and EHLO reply for our own name (SMTP only: an
    /// LMTP server on this host may well greet with our host name).
    pub(crate) loop_check: bool,
    /// After the transaction, keep the connection open (no QUIT) and hand
    /// it back in [`ConnResult::idle`] for the next message.
    pub(crate) keep: bool,
}

/// Watches the first two replies (greeting and EHLO) for our own name.
struct LoopCheck<'a> {
    parser: Option<ReplyParser>,
    seen: usize,
    our_name: &'a str,
}

impl LoopCheck<'_> {
    /// True when the greeting or EHLO reply names us.
    fn feed(&mut self, mut bytes: &[u8]) -> bool {
        let Some(parser) = &mut self.parser else {
            return false;
        };
        while !bytes.is_empty() && self.seen < 2 {
            match parser.parse(&mut bytes) {
                Ok(Some(reply)) => {
                    self.seen += 1;
                    if reply.code / 100 == 2 && names_us(&reply, self.our_name) {
                        return true;
                    }
                }
                // The session reports malformed replies itself.
                Ok(None) | Err(_) => break,
            }
        }
        if self.seen >= 2 {
            self.parser = None;
        }
        false
    }
}

/// The first word of the reply's first line is `our_name`.
fn names_us(reply: &Reply, our_name: &str) -> bool {
    let first = reply.lines.first().map(String::as_str).unwrap_or("");
    let word = first.split_ascii_whitespace().next().unwrap_or("");
    let norm = |s: &str| s.trim_end_matches('.').to_ascii_lowercase();
    !word.is_empty() && norm(word) == norm(our_name)
}

/// Writes `bytes` under the timer that applies now. On failure the
/// server's last words are read if they are already there (a server that
/// rejects a message while it streams, `554 5.3.4` say, often stops
/// reading and closes), then the session is told (timeout, else connection
/// lost). Returns false when the connection is unusable.
async fn send(conn: &mut Conn, session: &mut ClientSession, bytes: &[u8], limit: Duration) -> bool {
    let timed_out = match timeout(limit, conn.write_all(bytes)).await {
        Ok(Ok(())) => return true,
        Ok(Err(_)) => false,
        Err(_) => true,
    };
    let mut buf = vec![0u8; READ_BUFFER];
    if let Ok(Ok(n)) = timeout(SALVAGE_TIMEOUT, conn.read(&mut buf)).await
        && n > 0
    {
        session.handle_input(&buf[..n]);
    }
    if timed_out && !session.is_closed() {
        session.on_timeout();
    }
    if !session.is_closed() {
        session.connection_lost();
    }
    false
}

/// The timer that applies now (the command timer when the session names
/// none, which only happens while it is idle).
fn current_limit(session: &ClientSession, timeouts: &ClientTimeouts) -> Duration {
    timeouts.get(session.timeout_class().unwrap_or(TimeoutClass::Command))
}

/// Pumps one session over `conn` until it closes.
pub(crate) async fn run_connection(conn: Conn, plan: ConnPlan<'_>) -> ConnResult {
    let session = if plan.implicit_tls {
        ClientSession::with_implicit_tls(plan.config.clone())
    } else {
        ClientSession::new(plan.config.clone())
    };
    let session = match session {
        Ok(s) => s,
        // validate() ran before; kept as a safe answer.
        Err(e) => {
            tracing::warn!(target_host = plan.target, error = %e, "outbound: invalid client configuration");
            return ConnResult::unusable();
        }
    };
    let txn = Some(plan.txn.clone());
    pump(conn, session, txn, &plan).await
}

/// Runs `plan`'s transaction on a connection kept from an earlier message
/// (see [`ConnectionCache`]). No loop check (the first use did it).
async fn reuse_connection(idle: IdleConnection, plan: ConnPlan<'_>) -> ConnResult {
    let IdleConnection {
        conn, mut session, ..
    } = idle;
    if session.start_transaction(plan.txn.clone()).is_err() {
        // Not ready after all: not usable.
        let mut conn = conn;
        conn.shutdown().await;
        return ConnResult::unusable();
    }
    let plan = ConnPlan {
        loop_check: false,
        ..plan
    };
    pump(conn, session, None, &plan).await
}

/// Pumps `session` over `conn` until it closes (or, with [`ConnPlan::keep`],
/// until it is ready for another transaction after this one). `txn` is
/// started at the first [`Event::Ready`]; `None` when the caller already
/// started it.
async fn pump(
    mut conn: Conn,
    mut session: ClientSession,
    mut txn: Option<Transaction>,
    plan: &ConnPlan<'_>,
) -> ConnResult {
    let mut loop_check = LoopCheck {
        parser: plan
            .loop_check
            .then(|| ReplyParser::new(ReplyLimits::default())),
        seen: 0,
        our_name: &plan.config.helo_name,
    };
    let mut result = ConnResult {
        txn: None,
        failure: None,
        looped: false,
        idle: None,
        tls_error: None,
    };
    // Set once a write failed: later events are answered without I/O.
    let mut broken = false;
    let mut buf = vec![0u8; READ_BUFFER];
    loop {
        while let Some(event) = session.poll_event() {
            match event {
                Event::Send(out) => {
                    log_send(plan.target, &out);
                    if !broken {
                        let limit = current_limit(&session, &plan.timeouts);
                        broken = !send(&mut conn, &mut session, out.as_bytes(), limit).await;
                    }
                }
                Event::StartTls => {
                    let upgraded = match (&plan.tls, broken) {
                        (Some(tls), false) => {
                            let limit = plan.timeouts.get(TimeoutClass::TlsHandshake);
                            match conn.upgrade(tls, limit).await {
                                Ok(()) => true,
                                Err(e) => {
                                    tracing::info!(target_host = plan.target, error = %e, "outbound: STARTTLS handshake failed");
                                    result.tls_error = Some(e.to_string());
                                    false
                                }
                            }
                        }
                        _ => false,
                    };
                    let _ = if upgraded {
                        session.tls_established()
                    } else {
                        broken = true;
                        session.tls_failed()
                    };
                }
                Event::Ready => {
                    let _ = match txn.take() {
                        Some(t) => session.start_transaction(t),
                        None if plan.keep && !broken && result.txn.is_some() => {
                            result.idle = Some(IdleConnection {
                                conn,
                                session,
                                label: plan.target.to_owned(),
                                since: Instant::now(),
                            });
                            return result;
                        }
                        None => session.quit(),
                    };
                }
                Event::NeedData => {
                    if !broken {
                        broken =
                            !stream_message(&mut conn, &mut session, plan.data, &plan.timeouts)
                                .await;
                    }
                    if !broken {
                        let _ = session.data_sent();
                    }
                }
                Event::TransactionDone(r) => result.txn = Some(r),
                Event::Closed(outcome) => {
                    if let Outcome::Failed(f) = outcome {
                        result.failure = Some(f);
                    }
                    conn.shutdown().await;
                    return result;
                }
                // Event is non_exhaustive: an event this driver does not
                // know cannot be honoured; end the session.
                _ => {
                    broken = true;
                    session.connection_lost();
                }
            }
        }
        if session.is_closed() {
            // Closed was already taken from the queue.
            conn.shutdown().await;
            return result;
        }
        let limit = current_limit(&session, &plan.timeouts);
        if session.timeout_class().is_none() {
            // Idle without a Ready to act on: cannot happen with this
            // driver; end politely rather than wait forever.
            if session.quit().is_err() {
                session.connection_lost();
            }
            continue;
        }
        match timeout(limit, conn.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => session.connection_lost(),
            Ok(Ok(n)) => {
                let bytes = &buf[..n];
                if loop_check.feed(bytes) {
                    result.looped = true;
                    let _ = timeout(SHUTDOWN_TIMEOUT, conn.write_all(b"QUIT\r\n")).await;
                    conn.shutdown().await;
                    return result;
                }
                session.handle_input(bytes);
            }
            Err(_) => {
                session.on_timeout();
                if !session.is_closed() {
                    session.connection_lost();
                }
            }
        }
    }
}

/// Writes the message through a [`DataEncoder`] in [`DATA_CHUNK`] pieces,
/// each under the data-block timer. False when the connection failed (the
/// session has been told). A file that cannot be read to its stated length
/// ends the connection without the final `.`: the server never takes a
/// truncated message, and the recipients are deferred.
async fn stream_message(
    conn: &mut Conn,
    session: &mut ClientSession,
    data: MessageData<'_>,
    timeouts: &ClientTimeouts,
) -> bool {
    let limit = timeouts.get(TimeoutClass::DataBlock);
    let mut encoder = DataEncoder::new();
    let mut out = Vec::with_capacity(DATA_CHUNK + DATA_CHUNK / 8);
    match data {
        MessageData::Bytes(bytes) => {
            for chunk in bytes.chunks(DATA_CHUNK) {
                out.clear();
                encoder.encode(chunk, &mut out);
                if !send(conn, session, &out, limit).await {
                    return false;
                }
            }
        }
        MessageData::File { path, len } => {
            let mut file = match tokio::fs::File::open(path).await {
                Ok(f) => f.take(len),
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "outbound: cannot open the queued message");
                    session.connection_lost();
                    return false;
                }
            };
            let mut chunk = vec![0u8; DATA_CHUNK];
            let mut sent = 0u64;
            loop {
                let n = match file.read(&mut chunk).await {
                    Ok(n) => n,
                    Err(e) => {
                        tracing::warn!(path = %path.display(), error = %e, "outbound: cannot read the queued message");
                        session.connection_lost();
                        return false;
                    }
                };
                if n == 0 {
                    break;
                }
                sent += n as u64;
                out.clear();
                encoder.encode(&chunk[..n], &mut out);
                if !send(conn, session, &out, limit).await {
                    return false;
                }
            }
            if sent != len {
                tracing::warn!(path = %path.display(), expected = len, read = sent, "outbound: queued message shorter than its envelope says");
                session.connection_lost();
                return false;
            }
        }
    }
    out.clear();
    encoder.finish(&mut out);
    send(conn, session, &out, limit).await
}

fn log_send(target: &str, out: &Outgoing) {
    if out.is_sensitive() {
        tracing::trace!(
            target_host = target,
            "outbound: >> (credentials, not logged)"
        );
    } else {
        tracing::trace!(
            target_host = target,
            line = %out.as_bytes().escape_ascii(),
            "outbound: >>"
        );
    }
}

// ------------------------------------------------------------ Replies as text

/// `"550 5.1.1 text"`: the reply on one line (multi-line text joined by
/// spaces), the form the queue stores.
pub(crate) fn reply_text(reply: &Reply) -> String {
    let mut s = reply.code.to_string();
    if let Some(status) = reply.status {
        s.push(' ');
        s.push_str(&status.to_string());
    }
    for line in &reply.lines {
        let line = line.trim();
        if !line.is_empty() {
            s.push(' ');
            s.push_str(line);
        }
    }
    s
}

/// A deferral's text: 4xx replies as they are; anything else (a 5xx
/// greeting, a 535 to AUTH) wrapped in a 4xx so the stored text's class
/// matches the result.
pub(crate) fn deferral_text(reply: &Reply, target: &str) -> String {
    if reply.code / 100 == 4 {
        return format!("{} (from {target})", reply_text(reply));
    }
    let status = reply
        .status
        .map(|s| format!("4.{}.{}", s.subject, s.detail))
        .unwrap_or_else(|| "4.4.0".to_owned());
    format!("451 {status} {target} said: {}", reply_text(reply))
}

/// A reply as the queue keeps it: one line, the same text as
/// [`reply_text`].
pub(crate) fn server_reply(reply: &Reply) -> ServerReply {
    let text = reply
        .lines
        .iter()
        .map(|l| l.trim())
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" ");
    ServerReply::clamped(reply.code, reply.status, &text)
}

/// A result the SMTP client reported without a server's words (a lost
/// connection, a timer, a protocol error): a local session error, kept
/// under the client's code and status.
fn client_error(reply: &Reply, suffix: &str) -> LocalError {
    let r = server_reply(reply);
    let status = r.status().unwrap_or(EnhancedStatus::generic(r.class()));
    let detail = if suffix.is_empty() {
        r.text().to_owned()
    } else if r.text().is_empty() {
        suffix.trim_start().to_owned()
    } else {
        format!("{}{suffix}", r.text())
    };
    LocalError::new(LocalCause::Session, status, &detail).with_code(r.code())
}

/// The typed result of one recipient of a transaction: the server's reply,
/// or, when the client made the reply up, a local session error.
pub(crate) fn to_attempt(outcome: &RcptOutcome) -> AttemptResult {
    let answer = |r: &Reply| {
        if outcome.from_server {
            Answer::Server(server_reply(r))
        } else {
            Answer::Local(client_error(r, ""))
        }
    };
    match &outcome.result {
        RcptResult::Delivered(r) => AttemptResult::Delivered(server_reply(r)),
        RcptResult::Deferred(r) => AttemptResult::Deferred(answer(r)),
        RcptResult::Failed(r) => AttemptResult::Failed(answer(r)),
    }
}

/// A routing failure (DNS, null MX): permanent or not as the plan says.
fn plan_error_result(e: &PlanError) -> AttemptResult {
    let error = LocalError::new(LocalCause::Route, e.status(), &e.to_string());
    if e.is_permanent() {
        AttemptResult::Failed(Answer::Local(error))
    } else {
        AttemptResult::Deferred(Answer::Local(error))
    }
}

// ------------------------------------------------------------ The message

/// The transaction for `rcpts`, and the results of recipients that cannot
/// be sent at all (an address that does not parse).
pub(crate) struct Prepared {
    pub(crate) txn: Option<Transaction>,
    /// Envelope index of each transaction recipient, in order.
    pub(crate) sent: Vec<usize>,
    pub(crate) early: Vec<(usize, AttemptResult)>,
}

pub(crate) fn prepare(msg: &OutboundMessage<'_>, rcpts: &[RemoteRecipient]) -> Prepared {
    let mut list = Vec::new();
    let mut sent = Vec::new();
    let mut early = Vec::new();
    for r in rcpts {
        match &r.unreadable {
            None => {
                list.push(Recipient {
                    address: ForwardPath::Mailbox(r.address.clone()),
                    notify: r.notify,
                    orcpt: r.orcpt.clone(),
                });
                sent.push(r.index);
            }
            Some(u) => early.push((
                r.index,
                AttemptResult::failed_locally(
                    LocalCause::Address,
                    EnhancedStatus::new(5, 1, 3),
                    &format!("invalid recipient address {:?}: {}", u.text, u.error),
                ),
            )),
        }
    }
    let txn = (!list.is_empty()).then(|| Transaction {
        from: msg.sender.clone(),
        params: MessageParams {
            size: Some(msg.data.len()),
            body: msg.body,
            smtputf8: msg.smtputf8,
            ret: msg.ret,
            envid: msg.envid.cloned(),
        },
        rcpts: list,
    });
    Prepared { txn, sent, early }
}

// ------------------------------------------------------------ Targets

/// One address to connect to.
struct Target {
    host: String,
    addr: SocketAddr,
}

impl Target {
    fn label(&self) -> String {
        format!("{}[{}]", self.host, self.addr.ip())
    }
}

/// How every target is contacted.
struct Route {
    targets: Vec<Target>,
    config: Arc<ClientConfig>,
    tls: Option<Arc<rustls::ClientConfig>>,
    implicit_tls: bool,
    /// Opportunistic: a failed handshake may be retried in plaintext.
    plaintext_retry: bool,
    /// Smarthost AUTH PLAIN may fall back to LOGIN.
    login_fallback: Option<(String, String)>,
}

fn failed_domain(rcpts: &[RemoteRecipient], result: AttemptResult) -> DomainResult {
    DomainResult {
        results: rcpts.iter().map(|r| (r.index, result.clone())).collect(),
        remote_mta: None,
        dsn_passed_on: false,
    }
}

/// Delivers `msg` to `rcpts`, all of whose addresses are at `domain`, in
/// one attempt (see the module documentation for the rules). Every
/// recipient in `rcpts` gets exactly one result. Never panics on server
/// input. `seed` shuffles MX hosts of equal preference: random in
/// production, fixed in tests.
pub async fn deliver_to_domain(
    settings: &OutboundSettings,
    resolver: &dyn Resolver,
    domain: &str,
    msg: &OutboundMessage<'_>,
    rcpts: &[RemoteRecipient],
    seed: u64,
) -> DomainResult {
    deliver_to_domain_cached(settings, resolver, domain, msg, rcpts, seed, None).await
}

/// The destination a connection serves, as the cache knows it: every
/// domain shares the smarthost; otherwise the domain itself.
pub fn destination_key(settings: &OutboundSettings, domain: &str) -> String {
    match &settings.smarthost {
        Some(sh) => format!("smarthost:{}:{}", sh.host.to_ascii_lowercase(), sh.port),
        None => domain.to_ascii_lowercase(),
    }
}

/// [`deliver_to_domain`], reusing a connection that `cache` holds for this
/// destination when there is a live one (no DNS lookup, no handshake), and
/// leaving the connection in `cache` afterwards instead of closing it. A
/// cached connection that fails before the transaction gave any result is
/// dropped and the delivery goes on as without a cache.
pub async fn deliver_to_domain_cached(
    settings: &OutboundSettings,
    resolver: &dyn Resolver,
    domain: &str,
    msg: &OutboundMessage<'_>,
    rcpts: &[RemoteRecipient],
    seed: u64,
    cache: Option<&ConnectionCache>,
) -> DomainResult {
    let (done, open) =
        deliver_to_domain_unsettled(settings, resolver, domain, msg, rcpts, seed, cache).await;
    open.settle().await;
    done
}

/// [`deliver_to_domain_cached`], handing the connection back
/// [`Unsettled`]: the server hears nothing more from us (no QUIT, no next
/// transaction on it) until the caller has recorded the results and
/// settles it.
pub async fn deliver_to_domain_unsettled<'c>(
    settings: &OutboundSettings,
    resolver: &dyn Resolver,
    domain: &str,
    msg: &OutboundMessage<'_>,
    rcpts: &[RemoteRecipient],
    seed: u64,
    cache: Option<&'c ConnectionCache>,
) -> (DomainResult, Unsettled<'c>) {
    if rcpts.is_empty() {
        let done = DomainResult {
            results: Vec::new(),
            remote_mta: None,
            dsn_passed_on: false,
        };
        return (done, Unsettled::none());
    }
    if rcpts.iter().all(|r| r.unreadable.is_some()) {
        // Nothing to send: no DNS, no connection; each fails at once.
        let done = DomainResult {
            results: prepare(msg, rcpts).early,
            remote_mta: None,
            dsn_passed_on: false,
        };
        return (report_results(domain, rcpts, done), Unsettled::none());
    }
    let key = destination_key(settings, domain);
    if let Some(cache) = cache
        && let Some((done, idle)) = try_cached(settings, cache, &key, domain, msg, rcpts).await
    {
        return (done, Unsettled::caching(idle, Some(cache), &key));
    }
    let route = match route(settings, resolver, domain, seed).await {
        Ok(r) => r,
        Err(result) => {
            for r in rcpts {
                tracing::info!(rcpt = %r.address_text(), domain, result = ?result, "outbound: recipient result");
            }
            return (failed_domain(rcpts, result), Unsettled::none());
        }
    };
    let prepared = prepare(msg, rcpts);
    let mut done = DomainResult {
        results: prepared.early,
        remote_mta: None,
        dsn_passed_on: false,
    };
    let mut open = Unsettled::none();
    if let Some(txn) = prepared.txn {
        // Kept open even without a cache: the QUIT waits for the record.
        let (results, remote_mta, dsn, idle) =
            try_targets(settings, &route, txn, &prepared.sent, msg, true).await;
        done.results.extend(results);
        done.remote_mta = remote_mta;
        done.dsn_passed_on = dsn;
        open = Unsettled::caching(idle, cache, &key);
    }
    (report_results(domain, rcpts, done), open)
}

/// Delivers over a cached connection to `key`: `None` when there is none
/// that works (the caller connects afresh); otherwise the results and the
/// connection, when it is still healthy.
async fn try_cached(
    settings: &OutboundSettings,
    cache: &ConnectionCache,
    key: &str,
    domain: &str,
    msg: &OutboundMessage<'_>,
    rcpts: &[RemoteRecipient],
) -> Option<(DomainResult, Option<IdleConnection>)> {
    let prepared = prepare(msg, rcpts);
    let txn = prepared.txn?;
    while let Some(idle) = cache.take(key).await {
        let label = idle.label.clone();
        tracing::debug!(target_host = %label, domain, "outbound: reusing cached connection");
        let plan = ConnPlan {
            config: Arc::new(ClientConfig::new(settings.helo_name.clone())),
            tls: None,
            implicit_tls: false,
            txn: txn.clone(),
            data: msg.data,
            timeouts: settings.timeouts,
            target: &label,
            loop_check: false,
            keep: true,
        };
        let r = reuse_connection(idle, plan).await;
        let Some(t) = r.txn else {
            // Lost before any result: nothing was delivered; try another.
            tracing::debug!(target_host = %label, "outbound: cached connection failed; not reused");
            continue;
        };
        let mut results = prepared.early.clone();
        results.extend(
            t.rcpts
                .iter()
                .filter_map(|o| prepared.sent.get(o.index).map(|&i| (i, to_attempt(o)))),
        );
        let done = DomainResult {
            results,
            remote_mta: Some(label),
            dsn_passed_on: t.dsn_passed_on,
        };
        return Some((report_results(domain, rcpts, done), r.idle));
    }
    None
}

/// Puts `done`'s results in the order of `rcpts` and calls `each` with
/// every result and its recipient's address (for the log line): SMTP and
/// LMTP delivery both report this way.
pub(crate) fn in_given_order(
    rcpts: &[RemoteRecipient],
    done: &mut DomainResult,
    mut each: impl FnMut(&str, &AttemptResult),
) {
    let order = |i: &usize| {
        rcpts
            .iter()
            .position(|r| r.index == *i)
            .unwrap_or(usize::MAX)
    };
    done.results.sort_by_key(|(i, _)| order(i));
    for (index, result) in &done.results {
        let rcpt = rcpts
            .iter()
            .find(|r| r.index == *index)
            .map(RemoteRecipient::address_text);
        each(rcpt.as_deref().unwrap_or(""), result);
    }
}

/// Puts `done`'s results in the order of `rcpts` and logs each.
fn report_results(domain: &str, rcpts: &[RemoteRecipient], mut done: DomainResult) -> DomainResult {
    let host = done.remote_mta.clone();
    in_given_order(rcpts, &mut done, |rcpt, result| {
        tracing::info!(
            rcpt,
            domain,
            host = host.as_deref().unwrap_or("-"),
            result = ?result,
            "outbound: recipient result"
        );
    });
    done
}

/// Where and how to connect, or the result every recipient gets.
async fn route(
    settings: &OutboundSettings,
    resolver: &dyn Resolver,
    domain: &str,
    seed: u64,
) -> Result<Route, AttemptResult> {
    let config_error = |e: &dyn fmt::Display| {
        AttemptResult::deferred_locally(
            LocalCause::Config,
            EnhancedStatus::new(4, 3, 5),
            &format!("outbound configuration: {e}"),
        )
    };
    let mut config = ClientConfig::new(settings.helo_name.clone());
    if let Some(sh) = &settings.smarthost {
        let (policy, implicit) = match sh.tls {
            SmarthostTls::Starttls => (StartTlsPolicy::Required, false),
            SmarthostTls::Implicit => (StartTlsPolicy::Disabled, true),
            SmarthostTls::None => (StartTlsPolicy::Disabled, false),
        };
        config.starttls = policy;
        if let Some((user, password)) = &sh.auth {
            config.auth = Some(ClientAuth::new(AuthMechanism::Plain, user, password));
        }
        config.validate().map_err(|e| config_error(&e))?;
        let tls = match sh.tls {
            SmarthostTls::None => None,
            _ if sh.verify_certificate => {
                Some(verified_config(sh.ca_file.as_deref()).map_err(|e| config_error(&e))?)
            }
            _ => Some(opportunistic_config().map_err(|e| config_error(&e))?),
        };
        let targets = smarthost_targets(sh, resolver).await?;
        return Ok(Route {
            targets,
            config: Arc::new(config),
            tls,
            implicit_tls: implicit,
            plaintext_retry: false,
            login_fallback: sh.auth.clone(),
        });
    }

    config.starttls = settings.starttls;
    config.validate().map_err(|e| config_error(&e))?;
    let tls = match settings.starttls {
        StartTlsPolicy::Disabled => None,
        _ => Some(opportunistic_config().map_err(|e| config_error(&e))?),
    };
    let plan = if domain.starts_with('[') {
        match AddressLiteral::parse(domain) {
            Ok(AddressLiteral::Ipv4(v4)) => DeliveryPlan::literal(IpAddr::V4(v4)),
            Ok(AddressLiteral::Ipv6(v6)) => DeliveryPlan::literal(IpAddr::V6(v6)),
            _ => {
                return Err(AttemptResult::failed_locally(
                    LocalCause::Route,
                    EnhancedStatus::new(5, 1, 2),
                    &format!("{domain}: unsupported address literal"),
                ));
            }
        }
    } else {
        match plan_delivery(resolver, domain, seed).await {
            Ok(plan) => plan,
            Err(e) => {
                tracing::info!(domain, error = %e, "outbound: no route");
                return Err(plan_error_result(&e));
            }
        }
    };
    for s in &plan.skipped {
        tracing::warn!(domain, mx = %s.name, error = %s.error, "outbound: MX host skipped");
    }
    let targets = plan
        .targets()
        .map(|(host, ip)| Target {
            host: host.name.clone(),
            addr: SocketAddr::new(ip, settings.port),
        })
        .collect();
    Ok(Route {
        targets,
        config: Arc::new(config),
        tls,
        implicit_tls: false,
        plaintext_retry: settings.starttls == StartTlsPolicy::Opportunistic,
        login_fallback: None,
    })
}

/// The smarthost's addresses: an IP literal, or its A/AAAA records. A DNS
/// failure defers (the smarthost is our configuration, not the message's
/// destination).
async fn smarthost_targets(
    sh: &Smarthost,
    resolver: &dyn Resolver,
) -> Result<Vec<Target>, AttemptResult> {
    let host = sh.host.trim();
    let bare = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    let bare = bare.strip_prefix("IPv6:").unwrap_or(bare);
    let ips = match bare.parse::<IpAddr>() {
        Ok(ip) => vec![ip],
        Err(_) => resolver.ips(host).await.map_err(|e| {
            AttemptResult::deferred_locally(
                LocalCause::Route,
                EnhancedStatus::new(4, 4, 3),
                &format!("cannot resolve smarthost {host}: {e}"),
            )
        })?,
    };
    Ok(ips
        .into_iter()
        .take(tern_dns::MAX_ADDRESSES_PER_HOST)
        .map(|ip| Target {
            host: host.to_owned(),
            addr: SocketAddr::new(ip, sh.port),
        })
        .collect())
}

/// Tries the route's targets in order until one gives the transaction's
/// results. Returns the results for the recipients in `sent`, the answering
/// host and whether DSN went along.
#[allow(clippy::type_complexity)]
async fn try_targets(
    settings: &OutboundSettings,
    route: &Route,
    txn: Transaction,
    sent: &[usize],
    msg: &OutboundMessage<'_>,
    keep: bool,
) -> (
    Vec<(usize, AttemptResult)>,
    Option<String>,
    bool,
    Option<IdleConnection>,
) {
    let mut last_error = Answer::Local(LocalError::new(
        LocalCause::Connect,
        EnhancedStatus::new(4, 4, 1),
        "no address to connect to",
    ));
    let mut last_answering: Option<String> = None;
    for target in &route.targets {
        let label = target.label();
        let mut config = route.config.clone();
        let mut attempts_left = 3;
        loop {
            attempts_left -= 1;
            let outcome = attempt(
                settings,
                route,
                &config,
                target,
                &label,
                txn.clone(),
                msg,
                keep,
            )
            .await;
            match outcome {
                Attempt::Results(r, idle) => {
                    let results = r
                        .rcpts
                        .iter()
                        .filter_map(|o| sent.get(o.index).map(|&i| (i, to_attempt(o))))
                        .collect();
                    return (results, Some(label), r.dsn_passed_on, idle.map(|b| *b));
                }
                Attempt::Looped => {
                    tracing::warn!(target_host = %label, "outbound: mail loops back to myself");
                    let result = AttemptResult::failed_locally(
                        LocalCause::Loop,
                        EnhancedStatus::new(5, 4, 6),
                        &format!(
                            "mail for {} loops back to myself ({label} greets as {})",
                            target.host, settings.helo_name
                        ),
                    );
                    let results = sent.iter().map(|&i| (i, result.clone())).collect();
                    return (results, Some(label), false, None);
                }
                Attempt::Failed {
                    answer,
                    answered,
                    retry_without_tls,
                    auth_unavailable,
                } => {
                    tracing::info!(target_host = %label, error = %answer, "outbound: target failed");
                    last_error = answer;
                    if answered {
                        last_answering = Some(label.clone());
                    }
                    if attempts_left > 0 && retry_without_tls && route.plaintext_retry {
                        let mut c = (*config).clone();
                        c.starttls = StartTlsPolicy::Disabled;
                        config = Arc::new(c);
                        continue;
                    }
                    if attempts_left > 0
                        && auth_unavailable
                        && let Some((user, password)) = &route.login_fallback
                        && config.auth.as_ref().map(|a| a.mechanism) == Some(AuthMechanism::Plain)
                    {
                        let mut c = (*config).clone();
                        c.auth = Some(ClientAuth::new(AuthMechanism::Login, user, password));
                        config = Arc::new(c);
                        continue;
                    }
                    break;
                }
            }
        }
    }
    let results = sent
        .iter()
        .map(|&i| (i, AttemptResult::Deferred(last_error.clone())))
        .collect();
    (results, last_answering, false, None)
}

/// How one connection to one target went.
enum Attempt {
    /// The transaction ran: final for this attempt (with the connection
    /// when it was to be kept and is healthy).
    Results(TransactionResult, Option<Box<IdleConnection>>),
    /// The server is ourselves.
    Looped,
    /// No transaction: try elsewhere.
    Failed {
        answer: Answer,
        /// A server answered (its reply is in `answer`).
        answered: bool,
        retry_without_tls: bool,
        auth_unavailable: bool,
    },
}

#[allow(clippy::too_many_arguments)]
async fn attempt(
    settings: &OutboundSettings,
    route: &Route,
    config: &Arc<ClientConfig>,
    target: &Target,
    label: &str,
    txn: Transaction,
    msg: &OutboundMessage<'_>,
    keep: bool,
) -> Attempt {
    let starttls = config.starttls;
    tracing::info!(
        target_host = label,
        port = target.addr.port(),
        starttls = ?starttls,
        implicit_tls = route.implicit_tls,
        "outbound: connecting"
    );
    let failed = |e: TargetError| Attempt::Failed {
        answer: Answer::Local(LocalError::new(
            if matches!(e, TargetError::Tls(_)) {
                LocalCause::Tls
            } else {
                LocalCause::Connect
            },
            EnhancedStatus::new(4, 4, 1),
            &e.to_string(),
        )),
        answered: false,
        retry_without_tls: false,
        auth_unavailable: false,
    };
    let tcp = match timeout(settings.connect_timeout, TcpStream::connect(target.addr)).await {
        Ok(Ok(tcp)) => tcp,
        Ok(Err(e)) => {
            let reason = if e.kind() == io::ErrorKind::ConnectionRefused {
                "refused".to_owned()
            } else {
                e.to_string()
            };
            return failed(TargetError::Connect {
                target: label.to_owned(),
                reason,
            });
        }
        Err(_) => {
            return failed(TargetError::ConnectTimeout {
                target: label.to_owned(),
                after: settings.connect_timeout,
            });
        }
    };
    let _ = tcp.set_nodelay(true);
    let tls = route.tls.as_ref().map(|c| TlsSetup {
        connector: TlsConnector::from(c.clone()),
        name: server_name(&target.host, target.addr.ip()),
    });
    let mut conn = Conn::Plain(tcp);
    if route.implicit_tls {
        let Some(tls) = &tls else {
            return failed(TargetError::Tls(
                "implicit TLS without a TLS configuration".into(),
            ));
        };
        let limit = settings.timeouts.get(TimeoutClass::TlsHandshake);
        if let Err(e) = conn.upgrade(tls, limit).await {
            return Attempt::Failed {
                answer: Answer::Local(LocalError::new(
                    LocalCause::Tls,
                    EnhancedStatus::new(4, 7, 0),
                    &format!("{label}: {e}"),
                )),
                answered: false,
                retry_without_tls: false,
                auth_unavailable: false,
            };
        }
    }
    let plan = ConnPlan {
        config: config.clone(),
        tls,
        implicit_tls: route.implicit_tls,
        txn,
        data: msg.data,
        timeouts: settings.timeouts,
        target: label,
        loop_check: true,
        keep,
    };
    let r = run_connection(conn, plan).await;
    if r.looped {
        return Attempt::Looped;
    }
    if let Some(t) = r.txn {
        return Attempt::Results(t, r.idle.map(Box::new));
    }
    match r.failure {
        Some(f) => {
            let (mut answer, from_server) = failure_answer(&f, label);
            if let (SessionError::TlsHandshake { .. }, Some(detail), Answer::Local(e)) =
                (&f.error, &r.tls_error, &mut answer)
            {
                e.cause = LocalCause::Tls;
                e.detail = format!("{}: {detail}", e.detail);
            }
            Attempt::Failed {
                answer,
                answered: from_server,
                retry_without_tls: f.retry_without_tls(),
                auth_unavailable: matches!(f.error, SessionError::AuthUnavailable(_)),
            }
        }
        // Quit without a transaction: only when start_transaction refused
        // the message, which prepare() rules out.
        None => Attempt::Failed {
            answer: Answer::Local(LocalError::new(
                LocalCause::Session,
                EnhancedStatus::new(4, 3, 0),
                &format!("{label}: session ended without a transaction"),
            )),
            answered: true,
            retry_without_tls: false,
            auth_unavailable: false,
        },
    }
}

/// What defers the recipients of a session that failed before giving any
/// transaction result, and whether a server's reply is behind it: a 4xx
/// reply as the server gave it (its text naming `label`), anything else
/// as a local session error of class 4 (a 5xx greeting defers: it says
/// nothing about the message). Same text as [`failure_text`].
pub(crate) fn failure_answer(f: &SessionFailure, label: &str) -> (Answer, bool) {
    let reply = f.reply();
    let (_, from_server) = failure_text(f, label);
    let answer = if from_server && reply.code / 100 == 4 {
        let r = server_reply(&reply);
        Answer::Server(ServerReply::clamped(
            r.code(),
            r.status(),
            &format!("{} (from {label})", r.text()),
        ))
    } else if from_server {
        let status = reply
            .status
            .map(|s| s.with_class(4))
            .unwrap_or(EnhancedStatus::new(4, 4, 0));
        Answer::Local(LocalError::new(
            LocalCause::Session,
            status,
            &format!("{label} said: {}", reply_text(&reply)),
        ))
    } else {
        Answer::Local(client_error(&reply, &format!(" ({label})")))
    };
    (answer, from_server)
}

/// The deferral text for a session that failed before giving any
/// transaction result, and whether a server's reply is behind it.
pub(crate) fn failure_text(f: &SessionFailure, label: &str) -> (String, bool) {
    let reply = f.reply();
    let from_server = matches!(
        f.error,
        SessionError::Greeting(_)
            | SessionError::ServiceClosing(_)
            | SessionError::HelloRejected(_)
            | SessionError::StartTlsRefused(_)
            | SessionError::AuthFailed(_)
    );
    let text = if from_server {
        deferral_text(&reply, label)
    } else {
        format!("{} ({label})", reply_text(&reply))
    };
    (text, from_server)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tern_types::EnhancedStatus;

    #[test]
    fn reply_texts() {
        let r = Reply::multiline(550, EnhancedStatus::new(5, 1, 1), ["no such", " user "]);
        assert_eq!(reply_text(&r), "550 5.1.1 no such user");
        let r = Reply::without_status(250, ["ok"]);
        assert_eq!(reply_text(&r), "250 ok");
        let r = Reply::new(535, EnhancedStatus::new(5, 7, 8), "bad");
        assert_eq!(
            deferral_text(&r, "h[192.0.2.1]"),
            "451 4.7.8 h[192.0.2.1] said: 535 5.7.8 bad"
        );
        let r = Reply::without_status(554, ["go away"]);
        assert_eq!(deferral_text(&r, "h"), "451 4.4.0 h said: 554 go away");
        let r = Reply::new(421, EnhancedStatus::new(4, 3, 2), "busy");
        assert_eq!(deferral_text(&r, "h"), "421 4.3.2 busy (from h)");
    }

    #[test]
    fn dsn_parameters() {
        assert_eq!(Notify::parse("never").ok(), Some(Notify::Never));
        assert_eq!(
            Notify::parse("SUCCESS,DELAY").ok(),
            Some(Notify::On {
                success: true,
                failure: false,
                delay: true
            })
        );
        assert_eq!(Notify::parse("NEVER,SUCCESS").ok(), None);
        assert_eq!(Notify::parse("").ok(), None);
        assert_eq!(
            "rfc822;a@b.test".parse::<Orcpt>().ok(),
            Some(Orcpt {
                addr_type: "rfc822".into(),
                address: "a@b.test".into()
            })
        );
        assert_eq!("a@b.test".parse::<Orcpt>().ok(), None);
    }

    #[test]
    fn loop_names() {
        let r = Reply::without_status(220, ["MX.Example.Test. ESMTP"]);
        assert!(names_us(&r, "mx.example.test"));
        assert!(!names_us(&r, "mx2.example.test"));
        assert!(!names_us(
            &Reply::without_status(220, [""]),
            "mx.example.test"
        ));
    }
}
