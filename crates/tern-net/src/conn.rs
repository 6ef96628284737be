//! The driver for one SMTP connection: pumps bytes between a socket and a
//! sans-IO [`ServerSession`], answers its questions (directory, relay
//! policy, spool) and applies the RFC 5321 4.5.3.2 timeouts.
//!
//! The loop is the session's contract, verbatim: poll events until none,
//! write the batched replies, close if the session is closed, otherwise read
//! with the deadline the session's state calls for. Message bytes go to the
//! spool as they arrive; the 250 is sent only after the spool's group commit
//! has fsynced the message (invariant 1). This module never parses protocol
//! bytes itself and never logs message content or client text unescaped.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tern_queue::{Envelope, IncomingMessage, Recipient, SpoolError};
use tern_smtp::command::{MailParams, RcptParams};
use tern_smtp::received::{ReceivedInfo, received_header};
use tern_smtp::reply::Reply;
use tern_smtp::server::{Event, ServerSession, TimeoutClass};
use tern_store::Target;
use tern_types::{EnhancedStatus, ForwardPath, Mailbox, ReversePath};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::watch;
use tracing::{debug, info, warn};

use crate::Context;
use crate::date::rfc5322;
use crate::policy::{RcptVerdict, decide_recipient};

/// Size of one socket read; also bounds what the session buffers.
const READ_BUFFER: usize = 64 * 1024;

/// A recipient the session accepted.
#[derive(Debug)]
struct AcceptedRcpt {
    original: String,
    params: RcptParams,
    targets: Vec<Target>,
}

/// The transaction being built from MAIL, RCPT and DATA/BDAT.
#[derive(Debug)]
struct Transaction {
    from: ReversePath,
    params: MailParams,
    rcpts: Vec<AcceptedRcpt>,
    message: Option<IncomingMessage>,
    /// A spool write failed mid-message: the end of data gets a 4xx.
    write_error: Option<SpoolError>,
}

/// Per-connection state the driver keeps beside the session.
#[derive(Debug)]
pub(crate) struct Connection {
    ctx: Arc<Context>,
    peer: SocketAddr,
    tx: Option<Transaction>,
    messages: u64,
    /// When the session last made progress (an event or a reply): the
    /// command deadline runs from here, so dribbling bytes cannot extend it.
    progress_at: Instant,
    /// When the current message's data started, and its bytes so far: the
    /// minimum data rate is checked against these.
    data_started: Option<(Instant, u64)>,
}

/// Escapes client-controlled text for a log field: printable ASCII stays,
/// everything else (CR, LF, control bytes, non-ASCII) becomes `\xNN`/`\u{..}`.
pub(crate) fn escape_for_log(s: &str) -> String {
    s.escape_default().to_string()
}

fn spool_failure_reply(e: &SpoolError) -> Reply {
    if e.is_disk_full() {
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

/// The defensive answer when the session asks about a transaction the
/// driver does not have (the session's own sequencing makes this a bug).
fn out_of_sequence() -> Reply {
    Reply::new(
        503,
        EnhancedStatus::new(5, 5, 1),
        "Bad sequence of commands",
    )
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
    pub(crate) fn new(ctx: Arc<Context>, peer: SocketAddr) -> Self {
        Connection {
            ctx,
            peer,
            tx: None,
            messages: 0,
            progress_at: Instant::now(),
            data_started: None,
        }
    }

    /// Runs the session to completion on `stream`.
    pub(crate) async fn run<S>(mut self, mut stream: S, mut shutdown: watch::Receiver<bool>)
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let mut session = ServerSession::new(Arc::clone(&self.ctx.smtp));
        let mut buf = vec![0u8; READ_BUFFER];

        // Early-talker detection: anything the client says before our
        // greeting is fed to the session, which refuses it at greet() when
        // policy says so.
        if !self.ctx.timeouts.greet_pause.is_zero()
            && let Ok(Ok(n)) =
                tokio::time::timeout(self.ctx.timeouts.greet_pause, stream.read(&mut buf)).await
        {
            if n == 0 {
                debug!("client closed before the greeting");
                return;
            }
            info!(bytes = n, "client spoke before the greeting");
            session.handle_input(&buf[..n]);
        }
        session.greet();
        if *shutdown.borrow() {
            session.shutdown();
        }

        loop {
            while let Some(event) = session.poll_event() {
                self.progress_at = Instant::now();
                self.handle(event, &mut session).await;
            }
            let out = session.take_output();
            if !out.is_empty() {
                self.progress_at = Instant::now();
                match tokio::time::timeout(self.ctx.timeouts.command, stream.write_all(&out)).await
                {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => {
                        debug!(error = %e, "write failed; closing");
                        break;
                    }
                    Err(_) => {
                        debug!("write timed out; closing");
                        break;
                    }
                }
            }
            if session.is_closed() {
                break;
            }
            let deadline = match session.timeout_class() {
                TimeoutClass::Data => {
                    if self.data_rate_too_low() {
                        info!("client sends message data too slowly; closing");
                        session.on_timeout();
                        continue;
                    }
                    self.ctx.timeouts.data
                }
                // Per-request deadline: measured from the last progress, not
                // from the last byte, so a slow drip cannot hold the session.
                _ => self
                    .ctx
                    .timeouts
                    .command
                    .saturating_sub(self.progress_at.elapsed()),
            };
            tokio::select! {
                biased;
                changed = shutdown.changed() => {
                    // A dropped sender also means: stop.
                    let _ = changed;
                    info!("shutting down: closing session with 421");
                    session.shutdown();
                }
                read = tokio::time::timeout(deadline, stream.read(&mut buf)) => match read {
                    Err(_) => {
                        info!(timeout = ?deadline, "client timed out");
                        session.on_timeout();
                    }
                    Ok(Ok(0)) => {
                        if self.tx.as_ref().is_some_and(|t| t.message.is_some()) {
                            info!("client disconnected in the middle of a message; discarded");
                        }
                        break;
                    }
                    Ok(Ok(n)) => session.handle_input(&buf[..n]),
                    Ok(Err(e)) => {
                        debug!(error = %e, "read failed; closing");
                        break;
                    }
                }
            }
        }
        let _ = stream.shutdown().await;
        // Dropping an uncommitted IncomingMessage removes its temporary file.
        self.tx = None;
        info!(messages = self.messages, "disconnect");
    }

    async fn handle(&mut self, event: Event, session: &mut ServerSession) {
        match event {
            Event::Hello { name, extended } => {
                debug!(helo = %escape_for_log(&name), esmtp = extended, "hello");
            }
            Event::MailFrom { from, params } => {
                debug!(from = %escape_for_log(&from.to_string()), "mail from");
                self.tx = Some(Transaction {
                    from,
                    params,
                    rcpts: Vec::new(),
                    message: None,
                    write_error: None,
                });
                session.accept();
            }
            Event::RcptTo { to, params } => self.on_rcpt(to, params, session),
            Event::DataStart { bdat } => self.on_data_start(bdat, session),
            Event::DataChunk(bytes) => {
                if let Some((_, n)) = self.data_started.as_mut() {
                    *n += bytes.len() as u64;
                }
                if let Some(tx) = self.tx.as_mut()
                    && tx.write_error.is_none()
                    && let Some(message) = tx.message.as_mut()
                    && let Err(e) = message.write(&bytes)
                {
                    warn!(queue_id = %message.id(), error = %e, "spool write failed");
                    tx.write_error = Some(e);
                }
            }
            Event::DataEnd => self.on_data_end(session).await,
            Event::DataAborted { reason } => {
                self.data_started = None;
                if let Some(message) = self.tx.as_mut().and_then(|t| t.message.take()) {
                    info!(queue_id = %message.id(), reason = ?reason, "message refused; discarded");
                }
            }
            Event::Reset => self.tx = None,
            Event::Verify { argument, expand } => {
                let reply = self.verify(&argument, expand);
                session.reply(reply);
            }
            Event::StartTls => {
                // Not offered by this runtime yet (the submission issue adds TLS):
                // the session only asks when configured to, so this is a wiring bug.
                warn!("STARTTLS requested but TLS is not configured; closing");
                session.shutdown();
            }
            Event::Quit => debug!("quit"),
            other => debug!(event = ?other, "unhandled session event"),
        }
    }

    fn on_rcpt(&mut self, to: ForwardPath, params: RcptParams, session: &mut ServerSession) {
        let Some(tx) = self.tx.as_mut() else {
            // The session only asks inside a transaction; refuse defensively.
            session.reply(out_of_sequence());
            return;
        };
        let address = forward_path_address(&to);
        let resolution = self.ctx.directory.resolve(&to);
        let may_relay = self.ctx.relay.is_trusted(self.peer.ip());
        match decide_recipient(resolution, &address, may_relay) {
            RcptVerdict::Accept(targets) => {
                debug!(to = %escape_for_log(&address), "recipient accepted");
                tx.rcpts.push(AcceptedRcpt {
                    original: address,
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
                session.reply(reply);
            }
        }
    }

    fn on_data_start(&mut self, bdat: bool, session: &mut ServerSession) {
        let Some(tx) = self.tx.as_mut() else {
            session.reply(out_of_sequence());
            return;
        };
        let mut message = match self.ctx.spool.create() {
            Ok(m) => m,
            Err(e) => {
                warn!(error = %e, "cannot open a spool file");
                session.reply(spool_failure_reply(&e));
                return;
            }
        };
        let queue_id = message.id().to_string();
        let for_rcpt = (tx.rcpts.len() == 1).then(|| tx.rcpts[0].original.clone());
        let header = received_header(&ReceivedInfo {
            helo: session.helo_name(),
            peer_ip: self.peer.ip(),
            peer_name: None,
            by: &self.ctx.hostname,
            protocol: session.protocol(),
            queue_id: &queue_id,
            tls: None,
            for_rcpt: for_rcpt.as_deref(),
            date: &rfc5322(SystemTime::now()),
        });
        if let Err(e) = message.write(header.as_bytes()) {
            warn!(queue_id = %queue_id, error = %e, "spool write failed");
            session.reply(spool_failure_reply(&e));
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
        tx.message = Some(message);
        self.data_started = Some((Instant::now(), 0));
        session.accept();
    }

    async fn on_data_end(&mut self, session: &mut ServerSession) {
        self.data_started = None;
        let Some(mut tx) = self.tx.take() else {
            session.reply(out_of_sequence());
            return;
        };
        let Some(message) = tx.message.take() else {
            session.reply(out_of_sequence());
            return;
        };
        let queue_id = message.id().clone();
        if let Some(e) = tx.write_error.take() {
            session.reply(spool_failure_reply(&e));
            return;
        }
        let envelope = self.envelope(&tx, session, message.size());
        let size = envelope.size;
        let nrcpt = envelope.recipients.len();
        let committed = match message.commit(&envelope) {
            Ok(pending) => pending.wait().await,
            Err(e) => Err(e),
        };
        match committed {
            Ok(id) => {
                session.accept_message(id.as_str());
                self.messages += 1;
                info!(
                    queue_id = %id,
                    from = %escape_for_log(&envelope.sender),
                    size,
                    nrcpt,
                    "queued: message and envelope on stable storage"
                );
                self.ctx.delivery.submit(id);
            }
            Err(e) => {
                warn!(queue_id = %queue_id, error = %e, "commit failed; message not accepted");
                session.reply(spool_failure_reply(&e));
            }
        }
    }

    fn envelope(&self, tx: &Transaction, session: &ServerSession, size: u64) -> Envelope {
        let mut recipients: Vec<Recipient> = Vec::new();
        for rcpt in &tx.rcpts {
            for target in &rcpt.targets {
                let (address, mailbox) = match target {
                    Target::Local { mailbox } => (mailbox.clone(), Some(mailbox.clone())),
                    Target::Remote { address } => (address.clone(), None),
                };
                // Duplicate elimination: one copy per final destination.
                if recipients.iter().any(|r| r.address == address) {
                    continue;
                }
                recipients.push(Recipient {
                    address,
                    original: rcpt.original.clone(),
                    mailbox,
                    notify: rcpt.params.notify.map(|n| n.to_string()),
                    orcpt: rcpt
                        .params
                        .orcpt
                        .as_ref()
                        .map(|o| format!("{};{}", o.addr_type, o.address)),
                });
            }
        }
        Envelope {
            sender: reverse_path_address(&tx.from),
            recipients,
            received_at: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
            client_ip: Some(self.peer.ip()),
            helo: session.helo_name().map(str::to_owned),
            protocol: session.protocol().to_owned(),
            tls: None,
            auth_user: None,
            body: tx.params.body.unwrap_or_default().as_str().to_owned(),
            smtputf8: tx.params.smtputf8,
            ret: tx.params.ret.map(|r| r.as_str().to_owned()),
            envid: tx.params.envid.clone(),
            size,
        }
    }

    /// True when the current message has been arriving for longer than the
    /// grace period at less than the configured minimum rate.
    fn data_rate_too_low(&self) -> bool {
        let Some((started, bytes)) = self.data_started else {
            return false;
        };
        let rate = self.ctx.timeouts.min_data_rate;
        let elapsed = started.elapsed();
        if rate == 0 || elapsed < MIN_RATE_GRACE {
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
            tern_store::Resolution::Targets(targets) => {
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
            tern_store::Resolution::Unknown => Reply::new(
                550,
                EnhancedStatus::new(5, 1, 1),
                "User unknown in local recipient table",
            ),
            tern_store::Resolution::NotLocal => {
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
        }
    }
}
