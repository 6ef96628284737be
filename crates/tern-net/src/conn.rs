//! The driver for one SMTP connection: pumps bytes between a socket and a
//! sans-IO [`ServerSession`], answers its questions (directory, relay
//! policy, spool) and applies the RFC 5321 4.5.3.2 timeouts.
//!
//! The loop is the session's contract, verbatim: poll events until none,
//! write the batched replies, close if the session is closed, otherwise read
//! with the deadline the session's state calls for. Message bytes go to the
//! spool as they arrive (or, when the only recipient is a local Maildir,
//! straight into that Maildir: [`tern_delivery::intake`]); the 250 is sent
//! only after the spool's group commit has fsynced the message (invariant 1). This module never parses protocol
//! bytes itself and never logs message content, secrets or client text
//! unescaped.
//!
//! Roles: on the MX role anyone may send to local domains; on the
//! submission roles (587 STARTTLS, 465 implicit TLS) the session requires
//! AUTH, authenticated users may send anywhere, and the submission policy
//! ([`crate::submission`]) checks the envelope sender and `From:` and adds
//! missing `Date:`/`Message-ID:`. After STARTTLS nothing read before the
//! handshake survives: the session drops its buffer and this driver never
//! holds unread bytes of its own (CVE-2011-0411).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tern_queue::envelope::unreadable_placeholder;
use tern_queue::store::{IncomingBody as _, QueueStore as _};
use tern_queue::{Envelope, Recipient, SpoolError, UnreadableAddress};
use tern_queue_pg::{AnyIncoming, AnyStoreError};
use tern_sasl::{Answer, FailureKind};
use tern_smtp::command::{MailParams, RcptParams};
use tern_smtp::received::{ReceivedInfo, received_header};
use tern_smtp::reply::Reply;
use tern_smtp::server::{AuthQuestion, Event, ServerConfig, ServerSession, TimeoutClass};
use tern_store::{Resolution, Target};
use tern_types::dsn::Notify;
use tern_types::{
    AddressError, Domain, EnhancedStatus, ForwardPath, Host, LocalPart, Mailbox, ReversePath,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::watch;
use tracing::{debug, info, warn};

use crate::Context;
use crate::auth::{Admission, Authenticator, Protocol, unix_now};
use crate::date::rfc5322;
use crate::metrics::{SessionOutcome, metrics};
use crate::policy::{RcptVerdict, decide_recipient};
use crate::server::Role;
use crate::submission::{
    AuthorRefusal, MAX_HEADER_SECTION, check_authors, fixup_headers, header_section_end,
    inspect_headers, same_address,
};
use crate::tls::{MaybeTlsStream, TlsInfo};
use tern_mailauth::headers::{mentions_auth_results, strip_our_auth_results};

/// Size of one socket read; also bounds what the session buffers.
const READ_BUFFER: usize = 64 * 1024;

/// A recipient the session accepted.
#[derive(Debug)]
struct AcceptedRcpt {
    original: ForwardPath,
    params: RcptParams,
    targets: Vec<Target>,
}

/// The transaction being built from MAIL, RCPT and DATA/BDAT.
#[derive(Debug)]
struct Transaction {
    from: ReversePath,
    params: MailParams,
    rcpts: Vec<AcceptedRcpt>,
    message: Option<AnyIncoming>,
    /// A queue write failed mid-message: the end of data gets a 4xx.
    write_error: Option<AnyStoreError>,
    /// Submission: the header section, buffered until it is complete so the
    /// policy can read `From:` and add missing fields. `None` once written.
    header: Option<Vec<u8>>,
    /// The policy refused the message: the end of data gets this reply.
    refusal: Option<Reply>,
    /// Email authentication: the message bytes, held back until the end of
    /// data ([`crate::mailauth`]).
    auth: Option<crate::mailauth::Capture>,
    /// The domain whose keys sign the message: that of the author address
    /// the header section names (and the submission policy checked).
    sign_domain: Option<String>,
}

/// Per-connection state the driver keeps beside the session.
#[derive(Debug)]
pub(crate) struct Connection {
    ctx: Arc<Context>,
    peer: SocketAddr,
    role: Role,
    smtp: Arc<ServerConfig>,
    /// The authentication service (AUTH).
    authn: Authenticator,
    /// The authenticated user (AUTH succeeded), for policy and `Received:`.
    auth_user: Option<String>,
    /// The negotiated TLS parameters, once encrypted.
    tls: Option<TlsInfo>,
    /// The session asked for STARTTLS: upgrade after flushing the 220.
    starttls: bool,
    /// Protocol errors seen so far (for the tarpit).
    errors_seen: u32,
    /// The connection slot: progress is reported to it, eviction and
    /// stress mode come from it. Given back when the session ends.
    permit: Option<crate::limits::ConnectionPermit>,
    tx: Option<Transaction>,
    messages: u64,
    /// When the session last made progress (an event or a reply): the
    /// command deadline runs from here, so dribbling bytes cannot extend it.
    progress_at: Instant,
    /// When the session started reading message data (a message, or data
    /// it drains after refusing one), and the bytes read since: the minimum
    /// data rate and the message data deadline are checked against these.
    data_started: Option<(Instant, u64)>,
    /// The filter pipeline's state for this session; `None` when no
    /// scanner runs on this role (nothing to ask, nothing allocated).
    filters: Option<Box<crate::filter::SessionFilters>>,
}

/// Escapes client-controlled text for a log field: printable ASCII stays,
/// everything else (CR, LF, control bytes, non-ASCII) becomes `\xNN`/`\u{..}`.
pub(crate) fn escape_for_log(s: &str) -> String {
    s.escape_default().to_string()
}

pub(crate) fn spool_failure_reply(e: &SpoolError) -> Reply {
    storage_failure_reply(e.is_disk_full())
}

fn storage_failure_reply(disk_full: bool) -> Reply {
    if disk_full {
        Reply::new(
            452,
            EnhancedStatus::new(4, 3, 1),
            "Insufficient system storage; try again later",
        )
    } else {
        Reply::new(
            451,
            EnhancedStatus::new(4, 3, 0),
            "Local error in processing; message not accepted, try again later",
        )
    }
}

/// The reply to a queue backend's failure: `452 4.3.1` when the disk is
/// full, `451 4.3.0` otherwise (a database that is down or refused the
/// message, an id another node took meanwhile).
pub(crate) fn store_failure_reply(e: &AnyStoreError) -> Reply {
    storage_failure_reply(matches!(
        e,
        AnyStoreError::File(tern_queue::store::FileStoreError::Spool(e)) if e.is_disk_full()
    ))
}

/// Where the message bytes stream to: its Maildir (delivery at intake,
/// through the local spool's group committer) when its only recipient is
/// a local Maildir, otherwise the queue (the spool, or the database every
/// node shares). If the Maildir cannot be opened the message is queued as
/// usual.
fn open_message(ctx: &Context, tx: &Transaction) -> Result<AnyIncoming, AnyStoreError> {
    if let Some(intake) = &ctx.local_intake
        && !ctx.filters.changes_envelope()
        && let Some(mailbox) = single_local_mailbox(tx)
        && ctx.directory.via(mailbox) == tern_store::Via::Maildir
    {
        match tern_delivery::open_delivered(
            &ctx.spool,
            &intake.store,
            &ctx.hostname,
            unix_now(),
            &reverse_path_address(&tx.from),
            mailbox,
            mailbox,
        ) {
            Ok(message) => return Ok(AnyIncoming::File(message)),
            Err(e) => debug!(error = %e, "cannot deliver at intake; queueing the message"),
        }
    }
    ctx.queue.create()
}

/// Whether `message` is being delivered at intake (into a Maildir).
fn delivered_at_intake(message: &AnyIncoming) -> bool {
    matches!(message, AnyIncoming::File(m) if m.is_delivered())
}

/// The mailbox key when the transaction's recipients resolve to exactly
/// one destination (after the same duplicate elimination as the envelope)
/// and it is a local mailbox. Not when a recipient asked for a success DSN
/// (`NOTIFY=SUCCESS`): the queue manager sends those, so such a message is
/// queued.
fn single_local_mailbox(tx: &Transaction) -> Option<&str> {
    if tx.rcpts.iter().any(|r| {
        matches!(
            r.params.notify,
            Some(tern_types::dsn::Notify::On { success: true, .. })
        )
    }) {
        return None;
    }
    let mut targets = tx.rcpts.iter().flat_map(|r| r.targets.iter());
    let Some(Target::Local { mailbox }) = targets.next() else {
        return None;
    };
    targets
        .all(|t| matches!(t, Target::Local { mailbox: m } if m == mailbox))
        .then_some(mailbox.as_str())
}

/// `452 4.2.2` if local `mailbox` has a quota and `size` more bytes do
/// not fit (`size` 0: if it is full already). Checked off the runtime (it
/// reads the user's index); an error other than "full" refuses nothing
/// here: the delivery itself reports it.
async fn quota_refusal(ctx: &Context, mailbox: &str, size: u64) -> Option<Reply> {
    let intake = ctx.local_intake.as_ref()?;
    if !intake.store.has_quota(mailbox) || ctx.directory.via(mailbox) != tern_store::Via::Maildir {
        return None;
    }
    let store = Arc::clone(&intake.store);
    let user = mailbox.to_owned();
    let checked = tokio::task::spawn_blocking(move || {
        store.delivery_target(&user, &tern_store::Folder::Inbox, size)
    })
    .await;
    match checked {
        Ok(Err(tern_store::MailboxError::OverQuota { .. })) => Some(Reply::new(
            452,
            EnhancedStatus::new(4, 2, 2),
            "Mailbox full; try again later",
        )),
        Ok(Err(e)) => {
            debug!(mailbox = %mailbox, error = %e, "quota not checked");
            None
        }
        _ => None,
    }
}

/// Waits for the connection slot's wake-up; never, without a slot.
async fn woken(wake: Option<&crate::limits::WakeHandle>) {
    match wake {
        Some(w) => w.woken().await,
        None => std::future::pending().await,
    }
}

/// Streams message bytes to the open spool file, remembering the first error.
fn write_message(tx: &mut Transaction, bytes: &[u8]) {
    if tx.write_error.is_some() {
        return;
    }
    if let Some(capture) = tx.auth.as_mut() {
        capture.write(bytes);
        return;
    }
    if let Some(message) = tx.message.as_mut()
        && let Err(e) = message.write(bytes)
    {
        warn!(queue_id = %message.id(), error = %e, "queue write failed");
        tx.write_error = Some(e);
    }
}

/// May the authenticated `user` send as `address`? Their own address, a
/// `senders` entry in the users file, or a local address (alias,
/// sub-address) that delivers only to their own mailbox.
fn may_send_as(ctx: &Context, user: &str, address: &str) -> bool {
    if same_address(user, address) {
        return true;
    }
    if let Some(users) = &ctx.auth.users
        && users
            .current()
            .get(user)
            .is_some_and(|u| u.may_send_as(address))
    {
        return true;
    }
    let Ok(mailbox) = Mailbox::parse(address, true) else {
        return false;
    };
    match ctx.directory.resolve(&ForwardPath::Mailbox(mailbox)) {
        Resolution::Targets(targets) => targets
            .iter()
            .all(|t| matches!(t, Target::Local { mailbox } if same_address(mailbox, user))),
        _ => false,
    }
}

/// The `NOTIFY=` a recipient keeps: all of it for authenticated users and
/// trusted networks; for other senders failure reports only (`SUCCESS`
/// and `DELAY` are dropped, `NEVER` stays).
pub(crate) fn notify_for(notify: Notify, privileged: bool) -> Notify {
    match notify {
        Notify::On { success, delay, .. } if !privileged && (success || delay) => Notify::On {
            success: false,
            failure: true,
            delay: false,
        },
        other => other,
    }
}

/// Why a message quarantined at intake could not be moved to `Junk`.
#[derive(Debug, thiserror::Error)]
enum QuarantineError {
    #[error("no intake store")]
    NoIntakeStore,
    #[error("not a single local mailbox")]
    NotOneLocalMailbox,
    #[error("no delivery path")]
    NoDeliveryPath,
    #[error(transparent)]
    Mailbox(#[from] tern_store::mailbox::MailboxError),
    #[error(transparent)]
    Store(#[from] tern_store::StoreError),
    #[error("the message could not be redirected")]
    NotRedirected,
}

fn auth_blocked() -> Reply {
    Reply::new(
        454,
        EnhancedStatus::new(4, 7, 0),
        "Too many failed authentication attempts; try again later",
    )
}

/// The defensive answer when the session asks about a transaction the
/// driver does not have (the session's own sequencing makes this a bug).
fn out_of_sequence() -> Reply {
    Reply::new(
        503,
        EnhancedStatus::new(5, 5, 1),
        "Bad sequence of commands",
    )
}

/// The address of a mailbox key (`local@domain`, see [`tern_store::key`]),
/// made from its two parts: a key's local part is already decoded, so only
/// the domain is checked, never the text re-parsed as an address.
pub(crate) fn key_address(key: &str) -> Result<Mailbox, AddressError> {
    let (local, domain) = key
        .rsplit_once('@')
        .ok_or(AddressError::Syntax("missing @domain"))?;
    Ok(Mailbox {
        local_part: LocalPart::new(local, true)?,
        host: Host::Domain(Domain::parse_utf8(domain)?),
    })
}

fn reverse_path_address(from: &ReversePath) -> String {
    match from {
        ReversePath::Null => String::new(),
        ReversePath::Mailbox(m) => m.to_string(),
    }
}

fn forward_path_address(to: &ForwardPath) -> String {
    match to {
        ForwardPath::Postmaster => "postmaster".to_owned(),
        ForwardPath::Mailbox(m) => m.to_string(),
    }
}

impl Connection {
    pub(crate) fn new(
        ctx: Arc<Context>,
        peer: SocketAddr,
        role: Role,
        smtp: Arc<ServerConfig>,
    ) -> Self {
        Connection {
            ctx: Arc::clone(&ctx),
            peer,
            role,
            smtp,
            authn: Authenticator::new(Arc::clone(&ctx), peer.ip(), Protocol::Smtp),
            auth_user: None,
            tls: None,
            starttls: false,
            errors_seen: 0,
            permit: None,
            tx: None,
            messages: 0,
            progress_at: Instant::now(),
            data_started: None,
            filters: crate::filter::SessionFilters::new(&ctx, role, peer),
        }
    }

    /// Runs the session to completion on `stream`. The connection slot
    /// `permit` is given back as soon as the session has ended (before its
    /// last reply is written), so a client that reconnects the moment it
    /// reads `221` is not counted twice. Returns how the session ended.
    pub(crate) async fn run(
        mut self,
        mut stream: MaybeTlsStream,
        mut shutdown: watch::Receiver<bool>,
        permit: Option<crate::limits::ConnectionPermit>,
    ) -> SessionOutcome {
        let mut outcome = SessionOutcome::Closed;
        let wake = permit.as_ref().map(|p| p.wake_handle());
        self.permit = permit;
        let mut session = ServerSession::new(Arc::clone(&self.smtp));
        self.tls = stream.tls_info();
        if let Some(tls) = &self.tls {
            info!(tls = %tls, "implicit TLS established");
        }
        // Read into spare capacity (`read_buf`): no 64 KiB memset per session.
        let mut buf: Vec<u8> = Vec::with_capacity(READ_BUFFER);

        // Early-talker detection: anything the client says before our
        // greeting is fed to the session, which refuses it at greet() when
        // policy says so.
        if !self.ctx.timeouts.greet_pause.is_zero()
            && let Ok(Ok(n)) =
                tokio::time::timeout(self.ctx.timeouts.greet_pause, stream.read_buf(&mut buf)).await
        {
            if n == 0 {
                debug!("client closed before the greeting");
                return SessionOutcome::Disconnected;
            }
            info!(bytes = n, "client spoke before the greeting");
            session.handle_input(&buf[..n]);
        }
        if let Some(f) = self.filters.as_mut() {
            f.connect(self.ctx.relay.is_trusted(self.peer.ip())).await;
        }
        session.greet();
        if *shutdown.borrow() {
            session.shutdown();
        }

        loop {
            let mut progressed = false;
            while let Some(event) = session.poll_event() {
                self.progress_at = Instant::now();
                progressed = true;
                self.handle(event, &mut session).await;
            }
            if progressed {
                self.report_progress(&session);
            }
            let out = session.take_output();
            if session.is_closed() {
                drop(self.permit.take());
            }
            if !out.is_empty() {
                self.progress_at = Instant::now();
                let errors = session.error_count();
                if errors > self.errors_seen {
                    self.errors_seen = errors;
                    let mut delay = self.ctx.abuse.tarpit(errors);
                    if self.stressed() {
                        delay = delay.min(self.ctx.timeouts.stress.tarpit);
                    }
                    if !delay.is_zero() && !session.is_closed() {
                        debug!(errors, delay = ?delay, "tarpit");
                        tokio::time::sleep(delay).await;
                    }
                }
                match tokio::time::timeout(self.ctx.timeouts.command, stream.write_all(&out)).await
                {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => {
                        debug!(error = %e, "write failed; closing");
                        outcome = SessionOutcome::Disconnected;
                        break;
                    }
                    Err(_) => {
                        debug!("write timed out; closing");
                        outcome = SessionOutcome::Timeout;
                        break;
                    }
                }
            }
            if session.is_closed() {
                break;
            }
            if std::mem::take(&mut self.starttls) {
                // The 220 is flushed; the session has dropped every byte that
                // followed the STARTTLS line and this driver holds none.
                let Some(tls) = self.ctx.tls.as_ref() else {
                    break;
                };
                match stream
                    .upgrade(&tls.acceptor(), self.ctx.handshake_timeout)
                    .await
                {
                    Ok(upgraded) => {
                        stream = upgraded;
                        self.tls = stream.tls_info();
                        info!(tls = %self.tls.as_ref().map(ToString::to_string).unwrap_or_default(), "STARTTLS established");
                        session.tls_established();
                        continue;
                    }
                    Err(e) => {
                        info!(error = %e, "STARTTLS handshake failed; closing");
                        self.tx = None;
                        return SessionOutcome::TlsFailed;
                    }
                }
            }
            // Message data (a message being received, or one refused and
            // drained, or a swallowed BDAT chunk) is measured from the
            // moment the session reads data until it reads commands again.
            let in_data = session.timeout_class() == TimeoutClass::Data;
            if !in_data {
                self.data_started = None;
            } else if self.data_started.is_none() {
                self.data_started = Some((Instant::now(), 0));
            }
            let deadline = match session.timeout_class() {
                TimeoutClass::Data => {
                    if self.data_rate_too_low() {
                        info!("client sends message data too slowly; closing");
                        outcome = SessionOutcome::Timeout;
                        session.on_timeout();
                        continue;
                    }
                    let left = self
                        .data_started
                        .map_or(self.ctx.timeouts.message_data, |(t, _)| {
                            self.ctx.timeouts.message_data.saturating_sub(t.elapsed())
                        });
                    if left.is_zero() {
                        info!(limit = ?self.ctx.timeouts.message_data, "message data took too long; closing");
                        outcome = SessionOutcome::Timeout;
                        session.on_timeout();
                        continue;
                    }
                    self.data_timeout().min(left)
                }
                // Per-request deadline: measured from the last progress, not
                // from the last byte, so a slow drip cannot hold the session.
                _ => self
                    .command_timeout()
                    .saturating_sub(self.progress_at.elapsed()),
            };
            buf.clear();
            tokio::select! {
                biased;
                changed = shutdown.changed() => {
                    // A dropped sender also means: stop.
                    let _ = changed;
                    info!("shutting down: closing session with 421");
                    outcome = SessionOutcome::Shutdown;
                    session.shutdown();
                }
                () = woken(wake.as_ref()) => {
                    // Evicted (a newcomer took the slot), or stress mode
                    // began or ended: the loop computes the new deadline.
                    if self.permit.as_ref().is_some_and(|p| p.evicted()) {
                        info!("server full: evicted to make room for a new client");
                        outcome = SessionOutcome::Evicted;
                        session.evict();
                    }
                }
                read = tokio::time::timeout(deadline, stream.read_buf(&mut buf)) => match read {
                    Err(_) => {
                        info!(timeout = ?deadline, "client timed out");
                        outcome = SessionOutcome::Timeout;
                        session.on_timeout();
                    }
                    Ok(Ok(0)) => {
                        if self.tx.as_ref().is_some_and(|t| t.message.is_some()) {
                            info!("client disconnected in the middle of a message; discarded");
                        }
                        outcome = SessionOutcome::Disconnected;
                        break;
                    }
                    Ok(Ok(n)) => {
                        if let Some((_, bytes)) = self.data_started.as_mut() {
                            *bytes += n as u64;
                        }
                        session.handle_input(&buf[..n]);
                    }
                    Ok(Err(e)) => {
                        debug!(error = %e, "read failed; closing");
                        outcome = SessionOutcome::Disconnected;
                        break;
                    }
                }
            }
        }
        let _ = stream.shutdown().await;
        if let Some(f) = self.filters.as_mut() {
            f.abort();
            f.quit().await;
        }
        // Dropping an uncommitted message removes its temporary file.
        self.tx = None;
        info!(messages = self.messages, "disconnect");
        outcome
    }

    async fn handle(&mut self, event: Event, session: &mut ServerSession) {
        match event {
            Event::Hello { name, extended } => {
                debug!(helo = %escape_for_log(&name), esmtp = extended, "hello");
                if let Some(f) = self.filters.as_mut() {
                    f.helo(&name, self.tls.as_ref()).await;
                }
            }
            Event::MailFrom { from, params } => {
                debug!(from = %escape_for_log(&from.to_string()), "mail from");
                if let Some(reply) = self.check_sender(&from) {
                    info!(
                        from = %escape_for_log(&from.to_string()),
                        user = %escape_for_log(self.auth_user.as_deref().unwrap_or("")),
                        code = reply.code,
                        "sender refused"
                    );
                    session.reply(reply);
                    return;
                }
                if let Some(f) = self.filters.as_mut()
                    && let Some(reply) = f
                        .mail(
                            &reverse_path_address(&from),
                            &params,
                            self.auth_user.as_deref(),
                        )
                        .await
                {
                    info!(
                        client = %self.peer.ip(),
                        from = %escape_for_log(&from.to_string()),
                        code = reply.code,
                        "sender refused by a filter"
                    );
                    session.reply(reply);
                    return;
                }
                self.tx = Some(Transaction {
                    from,
                    params,
                    rcpts: Vec::new(),
                    message: None,
                    write_error: None,
                    header: None,
                    refusal: None,
                    auth: None,
                    sign_domain: None,
                });
                session.accept();
            }
            Event::RcptTo { to, params } => self.on_rcpt(to, params, session).await,
            Event::DataStart { bdat } => self.on_data_start(bdat, session),
            Event::DataChunk(bytes) => self.on_chunk(&bytes),
            Event::DataEnd => self.on_data_end(session).await,
            Event::DataAborted { reason } => {
                metrics().message_aborted(reason);
                if let Some(message) = self.tx.as_mut().and_then(|t| t.message.take()) {
                    info!(queue_id = %message.id(), reason = ?reason, "message refused; discarded");
                }
                if let Some(f) = self.filters.as_mut() {
                    f.abort();
                }
            }
            Event::Reset => {
                self.tx = None;
                if let Some(f) = self.filters.as_mut() {
                    f.abort();
                }
            }
            Event::Verify { argument, expand } => {
                let reply = self.verify(&argument, expand);
                session.reply(reply);
            }
            Event::StartTls => {
                if self.ctx.tls.is_some() {
                    self.starttls = true;
                } else {
                    // The session offers STARTTLS only when configured to.
                    warn!("STARTTLS requested but TLS is not configured; closing");
                    session.shutdown();
                }
            }
            Event::AuthStart { mechanism } => match self.authn.admit(mechanism).await {
                Admission::Blocked => session.reply(auth_blocked()),
                Admission::Allowed => match self.authn.nonce() {
                    Some(nonce) => session.auth_begin(&nonce, unix_now()),
                    None => session.reply(Reply::new(
                        454,
                        EnhancedStatus::new(4, 7, 0),
                        "Temporary authentication failure",
                    )),
                },
            },
            Event::Auth(question) => {
                let answer = self.answer_auth(question).await;
                session.auth_answer(answer);
            }
            Event::Authenticated {
                mechanism,
                authcid,
                authzid,
            } => {
                if authzid
                    .as_deref()
                    .is_some_and(|z| !same_address(z, &authcid))
                {
                    self.authn.failed(
                        Some(mechanism),
                        Some(&authcid),
                        FailureKind::AuthzidNotAllowed,
                    );
                    warn!(user = %escape_for_log(&authcid), mechanism = %mechanism, "authentication refused: acting as another identity is not allowed");
                    session.reply(Reply::new(
                        535,
                        EnhancedStatus::new(5, 7, 8),
                        "Authentication credentials invalid: proxy authorization is not allowed",
                    ));
                    return;
                }
                self.authn.succeeded(Some(mechanism), &authcid);
                info!(user = %escape_for_log(&authcid), mechanism = %mechanism, "authenticated");
                self.auth_user = Some(authcid);
                session.accept();
            }
            Event::AuthFailed {
                mechanism,
                authcid,
                kind,
            } => {
                self.authn.failed(Some(mechanism), authcid.as_deref(), kind);
                warn!(
                    client = %self.peer.ip(),
                    user = %escape_for_log(authcid.as_deref().unwrap_or("")),
                    mechanism = %mechanism,
                    kind = ?kind,
                    "authentication failed"
                );
            }
            Event::Quit => debug!("quit"),
            other => debug!(event = ?other, "unhandled session event"),
        }
    }

    async fn on_rcpt(&mut self, to: ForwardPath, params: RcptParams, session: &mut ServerSession) {
        let Some(tx) = self.tx.as_mut() else {
            // The session only asks inside a transaction; refuse defensively.
            session.reply(out_of_sequence());
            return;
        };
        let address = forward_path_address(&to);
        let resolution = self.ctx.directory.resolve(&to);
        let may_relay = self.auth_user.is_some() || self.ctx.relay.is_trusted(self.peer.ip());
        match decide_recipient(resolution, &to, may_relay) {
            RcptVerdict::Accept(targets) => {
                if let Some(user) = &self.auth_user
                    && let Err(retry) = self.ctx.abuse.recipient(user, Instant::now())
                {
                    warn!(user = %escape_for_log(user), client = %self.peer.ip(), "recipient rate limit reached");
                    session.reply(Reply::new(
                        451,
                        EnhancedStatus::new(4, 7, 1),
                        format!(
                            "Recipient rate limit exceeded for your account; try again in {} s",
                            retry.wait.as_secs().max(1)
                        ),
                    ));
                    return;
                }
                // A mailbox that is full now gets 452 4.2.2 at once (the
                // client keeps the message and tries again); the end of
                // data and the queue check again with the real size.
                if let [Target::Local { mailbox }] = targets.as_slice()
                    && let Some(reply) =
                        quota_refusal(&self.ctx, mailbox, tx.params.size.unwrap_or(0)).await
                {
                    info!(to = %escape_for_log(&address), mailbox = %mailbox, "recipient refused: mailbox full");
                    session.reply(reply);
                    return;
                }
                if let Some(f) = self.filters.as_mut() {
                    let exempt =
                        self.auth_user.is_some() || self.ctx.relay.is_trusted(self.peer.ip());
                    let from = reverse_path_address(&tx.from);
                    if let Some(reply) = f.rcpt(&from, &address, &params, exempt).await {
                        info!(
                            from = %escape_for_log(&from),
                            to = %escape_for_log(&address),
                            code = reply.code,
                            "recipient refused by a filter"
                        );
                        session.reply(reply);
                        return;
                    }
                }
                debug!(to = %escape_for_log(&address), "recipient accepted");
                tx.rcpts.push(AcceptedRcpt {
                    original: to,
                    params,
                    targets,
                });
                session.accept();
            }
            RcptVerdict::Reject(reply) => {
                info!(
                    from = %escape_for_log(&tx.from.to_string()),
                    to = %escape_for_log(&address),
                    code = reply.code,
                    "recipient rejected"
                );
                metrics().recipient_rejected(&reply);
                session.reply(reply);
            }
        }
    }

    fn on_data_start(&mut self, bdat: bool, session: &mut ServerSession) {
        let Some(tx) = self.tx.as_mut() else {
            session.reply(out_of_sequence());
            return;
        };
        let mut message = match open_message(&self.ctx, tx) {
            Ok(m) => m,
            Err(e) => {
                warn!(error = %e, "cannot start a message in the queue");
                session.reply(store_failure_reply(&e));
                return;
            }
        };
        let queue_id = message.id().to_string();
        let for_rcpt = (tx.rcpts.len() == 1).then(|| forward_path_address(&tx.rcpts[0].original));
        let header = received_header(&ReceivedInfo {
            helo: session.helo_name(),
            peer_ip: self.peer.ip(),
            peer_name: None,
            by: &self.ctx.hostname,
            protocol: session.protocol(),
            queue_id: &queue_id,
            tls: self.tls.as_ref().map(ToString::to_string).as_deref(),
            for_rcpt: for_rcpt.as_deref(),
            date: &rfc5322(SystemTime::now()),
        });
        if let Err(e) = message.write(header.as_bytes()) {
            warn!(queue_id = %queue_id, error = %e, "queue write failed");
            session.reply(store_failure_reply(&e));
            return;
        }
        info!(
            queue_id = %queue_id,
            client = %self.peer,
            helo = %escape_for_log(session.helo_name().unwrap_or("")),
            from = %escape_for_log(&tx.from.to_string()),
            nrcpt = tx.rcpts.len(),
            bdat,
            "receiving message"
        );
        let mx = !self.role.is_submission();
        let trusted = self.ctx.relay.is_trusted(self.peer.ip());
        // Any stage on this role: the message goes through the end-of-data
        // pipeline (results field, log line), read back from a scratch file.
        let scan = self.filters.is_some();
        match crate::mailauth::begin(&self.ctx, mx, self.auth_user.is_some(), trusted, scan) {
            Ok(capture) => tx.auth = capture,
            Err(e) => {
                warn!(queue_id = %queue_id, error = %e, "spool write failed");
                session.reply(spool_failure_reply(&e));
                return;
            }
        }
        tx.message = Some(message);
        // Every message's header section is read before it is written, on
        // every role: forged results are removed, the author checked.
        tx.header = Some(Vec::new());
        session.accept();
    }

    async fn on_data_end(&mut self, session: &mut ServerSession) {
        // A message that was all header fields (no empty line) ends here.
        self.finish_headers();
        let Some(mut tx) = self.tx.take() else {
            session.reply(out_of_sequence());
            return;
        };
        let Some(mut message) = tx.message.take() else {
            session.reply(out_of_sequence());
            return;
        };
        let queue_id = message.id().clone();
        if let Some(reply) = tx.refusal.take() {
            info!(queue_id = %queue_id, code = reply.code, "message refused by submission policy");
            metrics().message_rejected("policy", &reply);
            session.reply(reply);
            return;
        }
        if let Some(e) = tx.write_error.take() {
            let reply = store_failure_reply(&e);
            metrics().message_rejected("storage", &reply);
            session.reply(reply);
            return;
        }
        let mut quarantine = false;
        if let Some(capture) = tx.auth.take() {
            let mail_from = reverse_path_address(&tx.from);
            // A local address that forwards to another domain (ARC sealing).
            let forwarded_for = tx.rcpts.iter().find_map(|r| {
                r.targets
                    .iter()
                    .any(|t| matches!(t, Target::Remote { .. }))
                    .then(|| {
                        r.original
                            .mailbox()
                            .map(|m| m.host.to_string().to_ascii_lowercase())
                    })
                    .flatten()
            });
            let originals: Vec<String> = tx
                .rcpts
                .iter()
                .map(|r| forward_path_address(&r.original))
                .collect();
            let rcpts: Vec<&str> = originals.iter().map(String::as_str).collect();
            let info = crate::filter::eom::MessageInfo {
                facts: crate::mailauth::Facts {
                    queue_id: queue_id.as_str(),
                    client_ip: self.peer.ip(),
                    helo: session.helo_name().unwrap_or(""),
                    mail_from: &mail_from,
                    forwarded_for: forwarded_for.as_deref(),
                    sign_domain: tx.sign_domain.as_deref(),
                    trusted: self.ctx.relay.is_trusted(self.peer.ip()),
                },
                rcpts: &rcpts,
                auth_user: self.auth_user.as_deref(),
                role: self.role,
            };
            let ctx = Arc::clone(&self.ctx);
            let result = crate::filter::eom::end_of_data(
                &ctx,
                self.filters.as_deref_mut(),
                capture,
                info,
                &mut message,
            )
            .await;
            if let Some(f) = self.filters.as_mut() {
                f.message_done();
            }
            match result {
                Ok(accepted) if accepted.discard => {
                    // Accepted and dropped (a milter's or scanner's
                    // "discard"): the uncommitted file goes with `message`.
                    info!(queue_id = %queue_id, "message discarded by a filter");
                    session.accept_message(queue_id.as_str());
                    self.messages += 1;
                    return;
                }
                Ok(accepted) => {
                    quarantine = accepted.quarantine;
                    self.apply_envelope_changes(&mut tx, &accepted.envelope, &queue_id);
                }
                Err(reply) => {
                    // The authentication checks or another filter stage.
                    metrics().message_rejected(
                        if reply.code >= 500 {
                            "filter"
                        } else {
                            "filter_tempfail"
                        },
                        &reply,
                    );
                    session.reply(reply);
                    return;
                }
            }
        }
        // Delivered at intake into a mailbox with a quota: the size is
        // known now. Full: 452 4.2.2, nothing kept (the client retries,
        // and its notice tells the sender if the mailbox stays full).
        if delivered_at_intake(&message)
            && !quarantine
            && let Some(mailbox) = single_local_mailbox(&tx)
            && let Some(reply) = quota_refusal(&self.ctx, mailbox, message.size()).await
        {
            info!(queue_id = %queue_id, mailbox = %mailbox, size = message.size(), "message refused: mailbox full");
            metrics().message_rejected("quota", &reply);
            session.reply(reply);
            return;
        }
        if quarantine
            && let AnyIncoming::File(delivering) = &mut message
            && delivering.is_delivered()
            && let Err(e) = self.quarantine_at_intake(&tx, delivering)
        {
            // The message was on its way into the inbox; never put a
            // quarantined one there. The client tries again later.
            warn!(queue_id = %queue_id, error = %e, "cannot move a quarantined message to the Junk folder");
            let reply = Reply::new(
                451,
                EnhancedStatus::new(4, 3, 0),
                "Local error while delivering the message; try again later",
            );
            metrics().message_rejected("storage", &reply);
            session.reply(reply);
            return;
        }
        let mut envelope = self.envelope(&tx, session, message.size());
        envelope.quarantine = quarantine;
        let size = envelope.size;
        let nrcpt = envelope.recipients.len();
        let delivered = delivered_at_intake(&message);
        let commit_start = Instant::now();
        let committed = match message {
            // The spool's own commit (a queued message or one delivered at
            // intake): the group committer's fsync, awaited here.
            AnyIncoming::File(message) => match message.commit(&envelope) {
                Ok(pending) => pending
                    .wait()
                    .await
                    .map_err(|e| AnyStoreError::File(e.into())),
                Err(e) => Err(AnyStoreError::File(e.into())),
            },
            message => self.ctx.queue.commit(message, &envelope).await,
        };
        metrics().committed(commit_start, committed.is_ok());
        match committed {
            Ok(id) => {
                session.accept_message(id.as_str());
                metrics().message_received(self.role, size, nrcpt);
                if delivered {
                    metrics().delivered_at_intake(nrcpt);
                }
                self.messages += 1;
                self.journal_received(&id, &tx, &envelope, session, delivered);
                if let Some(user) = &self.auth_user {
                    self.ctx.abuse.message_accepted(user, Instant::now());
                }
                if delivered {
                    // IDLE sessions of the recipient see it at once.
                    if let (Some(imap), Some(mailbox)) = (&self.ctx.imap, single_local_mailbox(&tx))
                    {
                        imap.mailboxes.notify_external(mailbox);
                    }
                    info!(
                        queue_id = %id,
                        from = %escape_for_log(&envelope.sender_text()),
                        size,
                        nrcpt,
                        "delivered at intake: message in the Maildir, on stable storage"
                    );
                } else {
                    info!(
                        queue_id = %id,
                        from = %escape_for_log(&envelope.sender_text()),
                        size,
                        nrcpt,
                        "queued: message and envelope on stable storage"
                    );
                    self.ctx.delivery.submit(id);
                }
            }
            Err(e) => {
                warn!(queue_id = %queue_id, error = %e, "commit failed; message not accepted");
                let reply = store_failure_reply(&e);
                metrics().message_rejected("storage", &reply);
                session.reply(reply);
            }
        }
    }

    /// Applies the envelope changes a milter asked for: a new sender,
    /// recipients removed, recipients added (resolved like RCPT TO; a
    /// milter is configured by the admin, so it may add remote ones).
    fn apply_envelope_changes(
        &self,
        tx: &mut Transaction,
        changes: &[tern_filter::Change],
        queue_id: &tern_queue::QueueId,
    ) {
        use tern_filter::Change;
        for change in changes {
            match change {
                Change::ChangeFrom { address } => {
                    let from = if address.is_empty() {
                        Some(ReversePath::Null)
                    } else {
                        Mailbox::parse(address, true).ok().map(ReversePath::Mailbox)
                    };
                    match from {
                        Some(f) => {
                            info!(queue_id = %queue_id, from = %escape_for_log(address), "envelope sender changed by a filter");
                            tx.from = f;
                        }
                        None => {
                            warn!(queue_id = %queue_id, from = %escape_for_log(address), "a filter's new sender is not an address; ignored")
                        }
                    }
                }
                Change::DelRcpt { address } => {
                    let before = tx.rcpts.len();
                    tx.rcpts
                        .retain(|r| !same_address(&forward_path_address(&r.original), address));
                    if tx.rcpts.len() != before {
                        info!(queue_id = %queue_id, to = %escape_for_log(address), "recipient removed by a filter");
                    }
                }
                Change::AddRcpt { address } => {
                    let Ok(mailbox) = Mailbox::parse(address, true) else {
                        warn!(queue_id = %queue_id, to = %escape_for_log(address), "a filter's new recipient is not an address; ignored");
                        continue;
                    };
                    let to = ForwardPath::Mailbox(mailbox.clone());
                    let targets = match self.ctx.directory.resolve(&to) {
                        Resolution::Targets(t) => t,
                        Resolution::NotLocal => vec![Target::Remote {
                            address: mailbox.clone(),
                        }],
                        Resolution::Unknown => {
                            warn!(queue_id = %queue_id, to = %escape_for_log(address), "a filter's new recipient is unknown here; ignored");
                            continue;
                        }
                    };
                    info!(queue_id = %queue_id, to = %escape_for_log(address), "recipient added by a filter");
                    tx.rcpts.push(AcceptedRcpt {
                        original: to,
                        params: RcptParams::default(),
                        targets,
                    });
                }
                _ => {}
            }
        }
    }

    /// The journal's record of an accepted message (`tern trace`), and of
    /// its delivery when it was delivered at intake.
    fn journal_received(
        &self,
        id: &tern_queue::QueueId,
        tx: &Transaction,
        envelope: &Envelope,
        session: &ServerSession,
        delivered: bool,
    ) {
        let journal = &self.ctx.journal;
        if !journal.is_enabled() {
            return;
        }
        journal.record(
            id.as_str(),
            tern_queue::journal::Event::Received {
                client: self.peer.to_string(),
                role: self.role.as_str().to_owned(),
                helo: session.helo_name().unwrap_or("").to_owned(),
                tls: self.tls.as_ref().map(ToString::to_string),
                auth: self.auth_user.clone(),
                from: envelope.sender_text().into_owned(),
                to: tx
                    .rcpts
                    .iter()
                    .map(|r| forward_path_address(&r.original))
                    .collect(),
                size: envelope.size,
                stored: if delivered { "mailbox" } else { "queue" }.into(),
            },
        );
        if delivered {
            for r in &envelope.recipients {
                let folder = if envelope.quarantine { "Junk" } else { "INBOX" };
                journal.record(
                    id.as_str(),
                    tern_queue::journal::Event::Delivered {
                        to: r.address.to_string(),
                        via: "mailbox".into(),
                        relay: None,
                        reply: format!("stored in {folder} at intake"),
                    },
                );
            }
        }
    }

    /// A message delivered at intake that the end-of-data checks
    /// quarantined goes to its mailbox's `Junk` folder instead of `new/`
    /// (same file name, same filesystem: the commit renames it there).
    fn quarantine_at_intake(
        &self,
        tx: &Transaction,
        message: &mut tern_queue::IncomingMessage,
    ) -> Result<(), QuarantineError> {
        let intake = self
            .ctx
            .local_intake
            .as_ref()
            .ok_or(QuarantineError::NoIntakeStore)?;
        let mailbox = single_local_mailbox(tx).ok_or(QuarantineError::NotOneLocalMailbox)?;
        let name = message
            .delivery_path()
            .and_then(|p| p.file_name())
            .and_then(|n| n.to_str())
            .ok_or(QuarantineError::NoDeliveryPath)?
            .to_owned();
        let junk =
            intake
                .store
                .delivery_target(mailbox, &tern_store::Folder::Junk, message.size())?;
        let (_, final_path) = junk.delivery_paths(&name)?;
        if message.redirect_delivery(final_path) {
            Ok(())
        } else {
            Err(QuarantineError::NotRedirected)
        }
    }

    fn envelope(&self, tx: &Transaction, session: &ServerSession, size: u64) -> Envelope {
        // Success and delay reports only for senders we know: for anyone
        // else the return path may be forged, and a report would send our
        // (signed) mail with the sender's headers to a third party.
        let privileged = self.auth_user.is_some() || self.ctx.relay.is_trusted(self.peer.ip());
        let mut recipients: Vec<Recipient> = Vec::new();
        for rcpt in &tx.rcpts {
            for target in &rcpt.targets {
                let (address, unreadable_address, mailbox) = match target {
                    Target::Local { mailbox } => match key_address(mailbox) {
                        Ok(address) => (address, None, Some(mailbox.clone())),
                        // Never for a key the directory made; delivered
                        // through its key all the same.
                        Err(error) => (
                            unreadable_placeholder(),
                            Some(UnreadableAddress {
                                text: mailbox.clone(),
                                error,
                            }),
                            Some(mailbox.clone()),
                        ),
                    },
                    Target::Remote { address } => (address.clone(), None, None),
                };
                // Duplicate elimination: one copy per final destination.
                if recipients
                    .iter()
                    .any(|r| r.address == address && r.unreadable_address == unreadable_address)
                {
                    continue;
                }
                recipients.push(Recipient {
                    address,
                    original: rcpt.original.clone(),
                    mailbox,
                    notify: rcpt.params.notify.map(|n| notify_for(n, privileged)),
                    orcpt: rcpt.params.orcpt.clone(),
                    unreadable_address,
                    unreadable_original: None,
                });
            }
        }
        Envelope {
            sender: tx.from.clone(),
            recipients,
            received_at: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
            client_ip: Some(self.peer.ip()),
            helo: session.helo_name().map(str::to_owned),
            protocol: session.protocol().to_owned(),
            tls: self.tls.as_ref().map(ToString::to_string),
            auth_user: self.auth_user.clone(),
            body: tx.params.body.unwrap_or_default(),
            smtputf8: tx.params.smtputf8,
            ret: tx.params.ret,
            envid: tx.params.envid.clone(),
            size,
            quarantine: false,
            unreadable_sender: None,
        }
    }

    /// Message bytes from the session: buffered while the submission policy
    /// waits for the end of the header section, otherwise streamed to the spool.
    fn on_chunk(&mut self, bytes: &[u8]) {
        let Some(tx) = self.tx.as_mut() else { return };
        if tx.refusal.is_some() || tx.write_error.is_some() {
            return;
        }
        if let Some(header) = tx.header.as_mut() {
            header.extend_from_slice(bytes);
            if header_section_end(header).is_some() || header.len() > MAX_HEADER_SECTION {
                self.finish_headers();
            }
            return;
        }
        write_message(tx, bytes);
    }

    /// The header section is complete (or the message ended): remove every
    /// `Authentication-Results:` that claims our authserv-id (on every
    /// role, whether or not checks run), note the signing domain, and on
    /// submission check the author fields and add missing `Date:` and
    /// `Message-ID:`; then write what was buffered. Does nothing when no
    /// header section is being buffered.
    fn finish_headers(&mut self) {
        let ctx = Arc::clone(&self.ctx);
        let user = self.auth_user.clone();
        let submission = self.role.is_submission();
        let Some(tx) = self.tx.as_mut() else { return };
        let Some(buf) = tx.header.take() else { return };
        let end = match header_section_end(&buf) {
            Some(end) => end,
            None if buf.len() > MAX_HEADER_SECTION => {
                tx.refusal = Some(Reply::new(
                    552,
                    EnhancedStatus::new(5, 3, 4),
                    "Message header section too large",
                ));
                return;
            }
            None => buf.len(),
        };
        // Most messages carry no Authentication-Results at all: only those
        // that do are rewritten (one scan of the header section otherwise).
        let header: std::borrow::Cow<'_, [u8]> = if mentions_auth_results(&buf[..end]) {
            let (stripped, forged) = strip_our_auth_results(&buf[..end], &ctx.hostname);
            if forged > 0 {
                let queue_id = tx.message.as_ref().map(|m| m.id().to_string());
                info!(queue_id = %queue_id.unwrap_or_default(), removed = forged, "forged Authentication-Results with our authserv-id removed");
            }
            std::borrow::Cow::Owned(stripped)
        } else {
            std::borrow::Cow::Borrowed(&buf[..end])
        };
        // The author fields matter on submission and for mail that will be
        // signed (trusted networks); plain MX mail skips the parse.
        let signs = tx
            .auth
            .as_ref()
            .is_some_and(crate::mailauth::Capture::signs);
        if !submission && !signs {
            if let std::borrow::Cow::Borrowed(_) = header {
                write_message(tx, &buf);
            } else {
                write_message(tx, &header);
                write_message(tx, &buf[end..]);
            }
            return;
        }
        let queue_id = tx
            .message
            .as_ref()
            .map(|m| m.id().to_string())
            .unwrap_or_default();
        let facts = inspect_headers(&header);
        if submission {
            let owns = |a: &str| user.as_deref().is_some_and(|u| may_send_as(&ctx, u, a));
            let check: Option<&dyn Fn(&str) -> bool> = if ctx.submission.enforce_sender {
                Some(&owns)
            } else {
                None
            };
            if let Err(refusal) = check_authors(&facts, check) {
                tx.refusal = Some(match refusal {
                    AuthorRefusal::Malformed(why) => Reply::new(
                        550,
                        EnhancedStatus::new(5, 6, 0),
                        format!("Message refused: {why} (RFC 5322 3.6)"),
                    ),
                    AuthorRefusal::NotOwned(bad) => Reply::new(
                        553,
                        EnhancedStatus::new(5, 7, 1),
                        format!(
                            "From: address <{bad}> is not owned by user {}",
                            user.as_deref().unwrap_or("")
                        ),
                    ),
                });
                return;
            }
        }
        tx.sign_domain = facts.signing_domain();
        if submission && ctx.submission.fix_headers {
            let fix = fixup_headers(
                &facts,
                &rfc5322(SystemTime::now()),
                &queue_id,
                &ctx.hostname,
            );
            if !fix.is_empty() {
                write_message(tx, fix.as_bytes());
            }
        }
        write_message(tx, &header);
        write_message(tx, &buf[end..]);
    }

    /// Per-user message rate and, on submission, the envelope sender rule.
    fn check_sender(&self, from: &ReversePath) -> Option<Reply> {
        let user = self.auth_user.as_deref()?;
        if let Err(retry) = self.ctx.abuse.message_allowed(user, Instant::now()) {
            warn!(user = %escape_for_log(user), client = %self.peer.ip(), "message rate limit reached");
            return Some(Reply::new(
                451,
                EnhancedStatus::new(4, 7, 1),
                format!(
                    "Message rate limit exceeded for your account; try again in {} s",
                    retry.wait.as_secs().max(1)
                ),
            ));
        }
        if !self.role.is_submission() || !self.ctx.submission.enforce_sender {
            return None;
        }
        match from {
            ReversePath::Null => Some(Reply::new(
                553,
                EnhancedStatus::new(5, 7, 1),
                format!("Sender address rejected: <> is not owned by user {user}"),
            )),
            ReversePath::Mailbox(m) => {
                let address = m.to_string();
                (!may_send_as(&self.ctx, user, &address)).then(|| {
                    Reply::new(
                        553,
                        EnhancedStatus::new(5, 7, 1),
                        format!("Sender address rejected: <{address}> is not owned by user {user}"),
                    )
                })
            }
        }
    }

    /// Answers the SASL exchange's question through the shared
    /// authentication service (`crate::auth`).
    async fn answer_auth(&self, question: AuthQuestion) -> Answer {
        match crate::auth::Question::from_smtp(question) {
            Some(q) => self.authn.answer(q).await,
            None => Answer::Fail(FailureKind::Temporary),
        }
    }

    /// True when the current message has been arriving for longer than the
    /// grace period at less than the configured minimum rate.
    /// Whether the server is in stress mode (short timeouts).
    fn stressed(&self) -> bool {
        self.permit.as_ref().is_some_and(|p| p.stressed())
    }

    fn command_timeout(&self) -> Duration {
        if self.stressed() {
            self.ctx
                .timeouts
                .stress
                .command
                .min(self.ctx.timeouts.command)
        } else {
            self.ctx.timeouts.command
        }
    }

    fn data_timeout(&self) -> Duration {
        if self.stressed() {
            self.ctx.timeouts.stress.data.min(self.ctx.timeouts.data)
        } else {
            self.ctx.timeouts.data
        }
    }

    /// Tells the connection slot how far the session has got (eviction
    /// takes the least advanced, never one in a transaction or logged in).
    fn report_progress(&self, session: &ServerSession) {
        use crate::limits::Stage;
        let Some(permit) = &self.permit else {
            return;
        };
        let stage = if self.auth_user.is_some() {
            Stage::Authenticated
        } else if self.tx.is_some() {
            Stage::Transaction
        } else if session.helo_name().is_some() {
            Stage::Greeted
        } else {
            Stage::Connected
        };
        permit.set_stage(stage);
    }

    fn data_rate_too_low(&self) -> bool {
        let Some((started, bytes)) = self.data_started else {
            return false;
        };
        let rate = self.ctx.timeouts.min_data_rate;
        let elapsed = started.elapsed();
        let grace = if self.stressed() {
            self.ctx.timeouts.stress.min_rate_grace
        } else {
            MIN_RATE_GRACE
        };
        if rate == 0 || elapsed < grace {
            return false;
        }
        (bytes as f64) < rate as f64 * elapsed.as_secs_f64()
    }

    fn verify(&self, argument: &str, expand: bool) -> Reply {
        let trimmed = argument
            .trim()
            .trim_start_matches('<')
            .trim_end_matches('>');
        let Ok(mailbox) = Mailbox::parse(trimmed, true) else {
            return Reply::new(
                501,
                EnhancedStatus::new(5, 1, 3),
                "Syntax: VRFY/EXPN <address>",
            );
        };
        match self
            .ctx
            .directory
            .resolve(&ForwardPath::Mailbox(mailbox.clone()))
        {
            Resolution::Targets(targets) => {
                let mut lines: Vec<String> = if expand {
                    targets
                        .iter()
                        .map(|t| match t {
                            Target::Local { mailbox } => format!("<{mailbox}>"),
                            Target::Remote { address } => format!("<{address}>"),
                        })
                        .collect()
                } else {
                    vec![format!("<{mailbox}>")]
                };
                if lines.is_empty() {
                    lines.push(format!("<{mailbox}>"));
                }
                Reply {
                    code: 250,
                    status: Some(EnhancedStatus::new(2, 1, 5)),
                    lines,
                }
            }
            Resolution::Unknown => Reply::new(
                550,
                EnhancedStatus::new(5, 1, 1),
                "User unknown in local recipient table",
            ),
            Resolution::NotLocal => {
                Reply::new(551, EnhancedStatus::new(5, 1, 6), "Not a local address")
            }
        }
    }
}

/// Timeouts applied by the driver (RFC 5321 4.5.3.2 defaults).
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    /// Waiting for the next command (server timeout: 5 minutes).
    pub command: Duration,
    /// Waiting for the next block of message data (3 minutes).
    pub data: Duration,
    /// How long to wait before greeting, listening for early talkers (0 = none).
    pub greet_pause: Duration,
    /// Minimum message data rate in bytes per second once a message has been
    /// arriving for [`MIN_RATE_GRACE`] (0 = off). Stops slow-drip clients.
    pub min_data_rate: u64,
    /// The longest one message's data may take, however steadily it comes
    /// (a refused message being drained included).
    pub message_data: Duration,
    /// What replaces the above while the server is in stress mode.
    pub stress: StressTimeouts,
}

/// The timeouts of stress mode (see [`crate::limits`]): short, so that
/// sessions that say nothing leave fast and make room.
#[derive(Debug, Clone, Copy)]
pub struct StressTimeouts {
    /// Waiting for the greeting's answer and every next command.
    pub command: Duration,
    /// Waiting for the next block of message data.
    pub data: Duration,
    /// How long a message may arrive before the minimum data rate applies.
    pub min_rate_grace: Duration,
    /// The longest error tarpit delay.
    pub tarpit: Duration,
}

impl Default for StressTimeouts {
    fn default() -> Self {
        StressTimeouts {
            command: Duration::from_secs(10),
            data: Duration::from_secs(30),
            min_rate_grace: Duration::from_secs(5),
            tarpit: Duration::from_secs(1),
        }
    }
}

/// How long a message may arrive before the minimum data rate applies.
pub const MIN_RATE_GRACE: Duration = Duration::from_secs(30);

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            command: Duration::from_secs(300),
            data: Duration::from_secs(180),
            greet_pause: Duration::ZERO,
            min_data_rate: 500,
            message_data: Duration::from_secs(1800),
            stress: StressTimeouts::default(),
        }
    }
}
