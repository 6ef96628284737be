//! The queue manager: works every committed message off the spool until
//! each recipient is delivered, failed or expired, and tells senders about
//! failures with DSNs (RFC 3464).
//!
//! One pass over a message: local recipients go to their Maildirs
//! ([`tern_delivery::deliver_local`], off the async threads); remote
//! recipients whose retry time has come are grouped by domain and handed to
//! [`tern_delivery::outbound::deliver_to_domain`] (MX lookup or smarthost,
//! SMTP client). The mailboxes of domains configured for LMTP are left
//! out of the Maildir pass and handed, per domain, to
//! [`tern_delivery::deliver_lmtp`]; their results are recorded and
//! scheduled exactly like remote ones (a held message waits for both).
//! Every outcome is persisted with the spool's recipient
//! states before anything else happens, the retry schedule is a pure
//! function of time ([`tern_queue::on_result`]), and a recipient that is
//! final is never tried again (invariant 7). Newly failed or expired
//! recipients produce one failure DSN to the envelope sender, queued like
//! any other message; a message with the null sender is never bounced.
//!
//! It must never drop a message: the spool is the record, this task only
//! schedules. What it keeps in memory (the next due time per message) is
//! rebuilt from the spool at start-up.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tern_delivery::dsn::{
    DsnAction, DsnInput, DsnKind, DsnRecipient, bounce_recipient, build_dsn, should_notify,
};
use tern_delivery::outbound::{
    OutboundMessage, OutboundSettings, RemoteRecipient, deliver_to_domain,
};
use tern_delivery::{LmtpTarget, LocalReport, deliver_lmtp, deliver_local_skipping};
use tern_queue::{
    AttemptResult, Envelope, QueueId, Recipient, RecipientState, RetrySchedule, Spool, on_result,
};
use tern_store::{Directory, MailStore, Resolution, Target};
use tern_types::dsn::{BodyType, Ret};
use tern_types::{ForwardPath, Mailbox};
use tokio::sync::{Semaphore, mpsc, watch};
use tokio::task::JoinSet;
use tracing::{info, warn};

use crate::delivery::DeliveryHandle;

/// How long to wait before looking at a message whose local delivery failed
/// for a reason the spool does not schedule (e.g. it could not be opened).
const ERROR_RETRY: Duration = Duration::from_secs(60);

/// Everything the queue manager needs.
#[derive(Clone)]
pub struct QueueManager {
    /// The spool to work off.
    pub spool: Spool,
    /// Where local mailboxes live.
    pub store: Arc<MailStore>,
    /// Routes bounce recipients (local mailbox or remote).
    pub directory: Arc<Directory>,
    /// Our host name (Maildir names, DSNs).
    pub hostname: String,
    /// Messages worked on at once.
    pub concurrency: usize,
    /// The retry schedule.
    pub schedule: RetrySchedule,
    /// DNS for MX lookups; `None`: remote recipients wait in the queue.
    pub resolver: Option<Arc<dyn tern_dns::Resolver>>,
    /// SMTP client settings.
    pub outbound: Arc<OutboundSettings>,
    /// Domains whose mailboxes are delivered over LMTP, by canonical
    /// domain (the domain part of their mailbox keys); the others go to
    /// Maildirs. LMTP uses `outbound`'s HELO name and timers.
    pub lmtp: HashMap<String, LmtpTarget>,
}

impl std::fmt::Debug for QueueManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QueueManager")
            .field("hostname", &self.hostname)
            .field("concurrency", &self.concurrency)
            .field("remote_delivery", &self.resolver.is_some())
            .finish()
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl QueueManager {
    /// Starts the manager: everything in the spool is due now, then new
    /// submissions and retries as they come, until `shutdown` turns true.
    pub fn start(
        self,
        shutdown: watch::Receiver<bool>,
    ) -> (DeliveryHandle, tokio::task::JoinHandle<()>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let handle = DeliveryHandle::new(tx.clone());
        match self.spool.list() {
            Ok(ids) => {
                if !ids.is_empty() {
                    info!(count = ids.len(), "resuming delivery of queued messages");
                }
                for id in ids {
                    let _ = tx.send(id);
                }
            }
            Err(e) => {
                warn!(error = %e, "cannot list the spool; queued messages wait for the next start")
            }
        }
        let task = tokio::spawn(self.run(rx, handle.clone(), shutdown));
        (handle, task)
    }

    async fn run(
        self,
        mut rx: mpsc::UnboundedReceiver<QueueId>,
        handle: DeliveryHandle,
        mut shutdown: watch::Receiver<bool>,
    ) {
        let limit = Arc::new(Semaphore::new(self.concurrency.max(1)));
        let mut running: JoinSet<(QueueId, Option<u64>)> = JoinSet::new();
        let mut in_flight: HashMap<QueueId, ()> = HashMap::new();
        // Messages waiting for their next attempt: id → due (Unix seconds).
        let mut waiting: HashMap<QueueId, u64> = HashMap::new();
        let me = Arc::new(self);
        loop {
            if *shutdown.borrow() {
                break;
            }
            let now = unix_now();
            // Start every due message we have room for.
            let due: Vec<QueueId> = waiting
                .iter()
                .filter(|(id, at)| **at <= now && !in_flight.contains_key(*id))
                .map(|(id, _)| id.clone())
                .collect();
            for id in due {
                let Ok(permit) = Arc::clone(&limit).try_acquire_owned() else {
                    break;
                };
                waiting.remove(&id);
                in_flight.insert(id.clone(), ());
                let me = Arc::clone(&me);
                let handle = handle.clone();
                running.spawn(async move {
                    let _permit = permit;
                    let next = me.process(&id, &handle).await;
                    (id, next)
                });
            }
            let sleep = waiting
                .values()
                .min()
                .map(|at| {
                    Duration::from_secs(at.saturating_sub(now)).max(Duration::from_millis(50))
                })
                .unwrap_or(Duration::from_secs(3600))
                .min(Duration::from_secs(60));
            tokio::select! {
                _ = shutdown.changed() => break,
                Some(done) = running.join_next(), if !running.is_empty() => {
                    if let Ok((id, next)) = done {
                        in_flight.remove(&id);
                        if let Some(at) = next {
                            waiting.insert(id, at);
                        }
                    }
                }
                Some(id) = rx.recv() => {
                    if !in_flight.contains_key(&id) {
                        waiting.insert(id, 0);
                    }
                }
                _ = tokio::time::sleep(sleep) => {}
            }
        }
        // In-flight attempts finish (their results are persisted); what is
        // left waiting is resumed from the spool at the next start.
        while running.join_next().await.is_some() {}
    }

    /// One pass over one message; returns when to look at it again, or
    /// `None` when it left the queue.
    async fn process(&self, id: &QueueId, handle: &DeliveryHandle) -> Option<u64> {
        // Local recipients first: their Maildir writes fsync.
        let local = {
            let (spool, store, hostname, id) = (
                self.spool.clone(),
                Arc::clone(&self.store),
                self.hostname.clone(),
                id.clone(),
            );
            let lmtp: HashSet<String> = self.lmtp.keys().cloned().collect();
            let skip = move |mailbox: &str| lmtp.contains(mailbox_domain(mailbox));
            tokio::task::spawn_blocking(move || {
                deliver_local_skipping(&spool, &store, &hostname, &id, &skip)
            })
            .await
        };
        let report = match local {
            Ok(Ok(report)) => report,
            Ok(Err(e)) => {
                warn!(queue_id = %id, error = %e, "delivery failed; will retry");
                return Some(unix_now() + ERROR_RETRY.as_secs());
            }
            Err(e) => {
                warn!(queue_id = %id, error = %e, "delivery task died; will retry");
                return Some(unix_now() + ERROR_RETRY.as_secs());
            }
        };
        log_local(id, &report);
        if report.skipped || report.removed {
            return None;
        }

        let spool = self.spool.clone();
        let opened = {
            let id = id.clone();
            tokio::task::spawn_blocking(move || -> Result<_, String> {
                let message = match spool.open_message(&id) {
                    Ok(m) => m,
                    // Deleted or bounced by the administrator meanwhile.
                    Err(e) if e.is_not_found() => return Ok(None),
                    Err(e) => return Err(e.to_string()),
                };
                let mut data = Vec::with_capacity(message.data_len() as usize);
                let mut reader = message.reader().map_err(|e| e.to_string())?;
                std::io::Read::read_to_end(&mut reader, &mut data).map_err(|e| e.to_string())?;
                drop(reader);
                let states = spool.recipient_states(&id).map_err(|e| e.to_string())?;
                let held = spool.is_held(&id).map_err(|e| e.to_string())?;
                Ok(Some((message.envelope.clone(), data, states, held)))
            })
            .await
        };
        let (envelope, data, mut states, held) = match opened {
            Ok(Ok(Some(v))) => v,
            Ok(Ok(None)) => {
                info!(queue_id = %id, "message left the queue during the attempt");
                return None;
            }
            Ok(Err(e)) => {
                warn!(queue_id = %id, error = %e, "cannot read queued message; will retry");
                return Some(unix_now() + ERROR_RETRY.as_secs());
            }
            Err(_) => return Some(unix_now() + ERROR_RETRY.as_secs()),
        };
        let now = unix_now();
        let mut updates: Vec<(usize, RecipientState)> = Vec::new();

        // Local recipients that failed this time are scheduled like remote ones.
        for (index, _address, error) in &report.deferred {
            let state = states
                .get(*index)
                .cloned()
                .unwrap_or(RecipientState::Pending);
            let next = on_result(
                &state,
                &AttemptResult::Temporary(format!("451 4.3.0 {error}")),
                &self.schedule,
                envelope.received_at,
                now,
            );
            updates.push((*index, next));
        }

        if !held && !self.lmtp.is_empty() {
            self.deliver_lmtp(id, &envelope, &data, &states, now, &mut updates)
                .await;
        }

        if !held && let Some(resolver) = &self.resolver {
            let mut by_domain: HashMap<String, Vec<RemoteRecipient>> = HashMap::new();
            for (index, rcpt) in envelope.recipients.iter().enumerate() {
                let state = states
                    .get(index)
                    .cloned()
                    .unwrap_or(RecipientState::Pending);
                if rcpt.mailbox.is_some() || state.is_final() || !state.is_due(now) {
                    continue;
                }
                let domain = rcpt
                    .address
                    .rsplit_once('@')
                    .map(|(_, d)| d.to_ascii_lowercase())
                    .unwrap_or_default();
                by_domain.entry(domain).or_default().push(RemoteRecipient {
                    index,
                    address: rcpt.address.clone(),
                    notify: rcpt.notify.clone(),
                    orcpt: rcpt.orcpt.clone(),
                });
            }
            let msg = OutboundMessage {
                sender: &envelope.sender,
                body: match envelope.body.as_str() {
                    "8BITMIME" => BodyType::EightBitMime,
                    "BINARYMIME" => BodyType::BinaryMime,
                    _ => BodyType::SevenBit,
                },
                smtputf8: envelope.smtputf8,
                ret: match envelope.ret.as_deref() {
                    Some("FULL") => Some(Ret::Full),
                    Some("HDRS") => Some(Ret::Headers),
                    _ => None,
                },
                envid: envelope.envid.as_deref(),
                data: &data,
            };
            for (domain, rcpts) in by_domain {
                let seed = now ^ (rcpts.len() as u64).rotate_left(17) ^ id.as_str().len() as u64;
                let result = deliver_to_domain(
                    &self.outbound,
                    resolver.as_ref(),
                    &domain,
                    &msg,
                    &rcpts,
                    seed,
                )
                .await;
                for (index, attempt) in result.results {
                    let state = states
                        .get(index)
                        .cloned()
                        .unwrap_or(RecipientState::Pending);
                    let next =
                        on_result(&state, &attempt, &self.schedule, envelope.received_at, now);
                    log_remote(
                        id,
                        &envelope.recipients[index].address,
                        &next,
                        result.remote_mta.as_deref(),
                    );
                    updates.push((index, next));
                }
            }
        }

        if !updates.is_empty() {
            let spool = self.spool.clone();
            let (id2, list) = (id.clone(), updates.clone());
            let recorded =
                tokio::task::spawn_blocking(move || spool.record_states(&id2, &list)).await;
            if let Ok(Err(tern_queue::SpoolError::NotFound(_))) = recorded {
                info!(queue_id = %id, "message left the queue during the attempt");
                return None;
            }
            if !matches!(recorded, Ok(Ok(()))) {
                warn!(queue_id = %id, "cannot record delivery results; will retry");
                return Some(unix_now() + ERROR_RETRY.as_secs());
            }
            for (index, state) in &updates {
                if let Some(slot) = states.get_mut(*index) {
                    *slot = state.clone();
                }
            }
            self.bounce(id, &envelope, &data, &updates, handle).await;
        }

        // Done with this message? Every recipient final → remove.
        let all_final = envelope
            .recipients
            .iter()
            .enumerate()
            .all(|(i, _)| states.get(i).is_some_and(RecipientState::is_final));
        if all_final {
            let spool = self.spool.clone();
            let id2 = id.clone();
            if let Ok(Ok(())) = tokio::task::spawn_blocking(move || spool.remove(&id2)).await {
                info!(queue_id = %id, "removed from queue: all recipients done");
                return None;
            }
            return Some(now + ERROR_RETRY.as_secs());
        }
        if held {
            // Held messages are looked at again when released (`flush`).
            return Some(now + 3600);
        }
        let next = states
            .iter()
            .filter_map(|s| match s {
                RecipientState::Deferred { next_attempt, .. } => Some(*next_attempt),
                RecipientState::Pending => Some(now + ERROR_RETRY.as_secs()),
                _ => None,
            })
            .min();
        Some(next.unwrap_or(now + ERROR_RETRY.as_secs()))
    }

    /// Queues one failure DSN for the recipients that just failed or
    /// expired and asked for it (NOTIFY). Never for the null sender.
    async fn bounce(
        &self,
        id: &QueueId,
        envelope: &Envelope,
        original: &[u8],
        updates: &[(usize, RecipientState)],
        handle: &DeliveryHandle,
    ) {
        let Some(notice) = failure_notice(
            &self.directory,
            &self.hostname,
            id,
            envelope,
            original,
            updates,
            unix_now(),
        ) else {
            return;
        };
        let (spool, directory, orig_id) =
            (self.spool.clone(), Arc::clone(&self.directory), id.clone());
        let queued =
            tokio::task::spawn_blocking(move || queue_notice(&spool, &directory, notice)).await;
        match queued {
            Ok(Ok(bounce_id)) => {
                info!(queue_id = %orig_id, bounce_id = %bounce_id, "failure notice (DSN) queued for the sender");
                handle.submit(bounce_id);
            }
            Ok(Err(e)) => warn!(queue_id = %orig_id, error = %e, "cannot queue the failure notice"),
            Err(e) => warn!(queue_id = %orig_id, error = %e, "cannot queue the failure notice"),
        }
    }
}

/// A failure DSN built by [`failure_notice`], ready for [`queue_notice`].
#[derive(Debug)]
pub struct FailureNotice {
    /// The DSN message (RFC 3464 `multipart/report`).
    pub dsn: Vec<u8>,
    /// Who it goes to: the envelope sender, or the postmaster for a
    /// failed bounce.
    pub to: String,
    /// When it was built (Unix seconds; its queue arrival time).
    pub now: u64,
}

/// The failure DSN for the recipients in `updates` that are failed or
/// expired and asked for one (NOTIFY); `None` when nobody is to be told
/// (no such recipient, or a bounce whose postmaster notice is impossible,
/// which is logged). Pure apart from logging: the queue manager calls it
/// for the results of its own passes, `tern queue bounce` for recipients
/// the administrator returned; each caller passes only states it has just
/// recorded, so a recipient is reported once.
pub fn failure_notice(
    directory: &Directory,
    hostname: &str,
    id: &QueueId,
    envelope: &Envelope,
    original: &[u8],
    updates: &[(usize, RecipientState)],
    now: u64,
) -> Option<FailureNotice> {
    let mut recipients = Vec::new();
    for (index, state) in updates {
        let Some(rcpt) = envelope.recipients.get(*index) else {
            continue;
        };
        let (reply, status, at) = match state {
            RecipientState::Failed { at, reply, status } => (reply.clone(), status.clone(), *at),
            RecipientState::Expired { at, last_error } => {
                (last_error.clone(), "4.4.7".to_owned(), *at)
            }
            _ => continue,
        };
        if !should_notify(rcpt, DsnKind::Failure) {
            continue;
        }
        recipients.push(DsnRecipient {
            final_recipient: rcpt.address.clone(),
            original: rcpt.orcpt.clone(),
            action: DsnAction::Failed,
            status: if status.starts_with('4') {
                status.replacen('4', "5", 1)
            } else {
                status
            },
            remote_mta: None,
            diagnostic: Some(reply),
            last_attempt: at,
            will_retry_until: None,
        });
    }
    if recipients.is_empty() {
        return None;
    }
    let to = match bounce_recipient(envelope) {
        Some(to) => to,
        None => {
            // A bounce that cannot be delivered goes to the local
            // postmaster once; if that fails too, it is dropped (logged).
            let postmaster = directory.postmaster().first().map(|t| match t {
                Target::Local { mailbox } => mailbox.clone(),
                Target::Remote { address } => address.clone(),
            });
            let already_for_postmaster = postmaster.as_ref().is_some_and(|p| {
                envelope
                    .recipients
                    .iter()
                    .all(|r| r.address.eq_ignore_ascii_case(p))
            });
            match postmaster {
                Some(p) if !already_for_postmaster => {
                    warn!(queue_id = %id, failed = recipients.len(), postmaster = %p, "a bounce could not be delivered; reporting it to the postmaster");
                    p
                }
                _ => {
                    warn!(queue_id = %id, failed = recipients.len(), "a notice to the postmaster could not be delivered; dropped");
                    return None;
                }
            }
        }
    };
    let dsn = build_dsn(&DsnInput {
        hostname: hostname.to_owned(),
        kind: DsnKind::Failure,
        envelope,
        recipients,
        original,
        date: tern_delivery::dsn::rfc5322_date(now),
        message_id: format!("<{id}.dsn.{now}@{}>", hostname),
        boundary_seed: now,
    });
    Some(FailureNotice { dsn, to, now })
}

/// Commits `notice` to the spool with the null sender (blocking: fsyncs)
/// and returns its queue id; the caller announces it for delivery.
pub fn queue_notice(
    spool: &Spool,
    directory: &Directory,
    notice: FailureNotice,
) -> Result<QueueId, tern_queue::SpoolError> {
    let FailureNotice { dsn, to, now } = notice;
    let target = bounce_target(directory, &to);
    let size = dsn.len() as u64;
    let mut incoming = spool.create()?;
    incoming.write(&dsn)?;
    let envelope = Envelope {
        sender: String::new(),
        recipients: vec![Recipient {
            address: target.0.clone(),
            original: to,
            mailbox: target.1,
            notify: None,
            orcpt: None,
        }],
        received_at: now,
        client_ip: None,
        helo: None,
        protocol: "LOCAL".to_owned(),
        tls: None,
        auth_user: None,
        body: "8BITMIME".to_owned(),
        smtputf8: false,
        ret: None,
        envid: None,
        size,
        quarantine: false,
    };
    incoming.commit(&envelope)?.wait_blocking()
}

/// Where a bounce to `address` goes: a local mailbox when the directory
/// says so, otherwise the address itself (remote).
fn bounce_target(directory: &Directory, address: &str) -> (String, Option<String>) {
    if let Ok(m) = Mailbox::parse(address, true)
        && let Resolution::Targets(targets) = directory.resolve(&ForwardPath::Mailbox(m))
        && let Some(Target::Local { mailbox }) = targets.first()
    {
        return (mailbox.clone(), Some(mailbox.clone()));
    }
    (address.to_owned(), None)
}

fn log_local(id: &QueueId, report: &LocalReport) {
    for (index, mailbox) in &report.delivered {
        info!(queue_id = %id, rcpt = index, to = %mailbox, status = "delivered", "delivered to maildir");
    }
    for (index, address, error) in &report.deferred {
        warn!(queue_id = %id, rcpt = index, to = %address, status = "deferred", error = %error, "local delivery deferred");
    }
}

fn log_remote(id: &QueueId, address: &str, state: &RecipientState, mta: Option<&str>) {
    let mta = mta.unwrap_or("-");
    match state {
        RecipientState::Delivered { reply, .. } => {
            info!(queue_id = %id, to = %address, relay = %mta, status = "sent", reply = %reply.escape_default(), "delivered to the next hop")
        }
        RecipientState::Deferred {
            last_error,
            next_attempt,
            attempts,
        } => {
            info!(queue_id = %id, to = %address, relay = %mta, status = "deferred", attempts, next_attempt, reply = %last_error.escape_default(), "delivery deferred")
        }
        RecipientState::Failed { reply, .. } => {
            warn!(queue_id = %id, to = %address, relay = %mta, status = "bounced", reply = %reply.escape_default(), "delivery failed")
        }
        RecipientState::Expired { last_error, .. } => {
            warn!(queue_id = %id, to = %address, status = "expired", reply = %last_error.escape_default(), "gave up: too long in the queue")
        }
        RecipientState::Pending => {}
    }
}

// ------------------------------------------------------------ LMTP

impl QueueManager {
    /// Hands the due recipients of LMTP domains to their servers, one
    /// connection per domain, and appends their next states to `updates`
    /// (recorded and bounced by the caller, like remote results).
    async fn deliver_lmtp(
        &self,
        id: &QueueId,
        envelope: &Envelope,
        data: &[u8],
        states: &[RecipientState],
        now: u64,
        updates: &mut Vec<(usize, RecipientState)>,
    ) {
        let mut by_domain: HashMap<&str, Vec<RemoteRecipient>> = HashMap::new();
        for (index, rcpt) in envelope.recipients.iter().enumerate() {
            let Some(mailbox) = &rcpt.mailbox else {
                continue;
            };
            let state = states
                .get(index)
                .cloned()
                .unwrap_or(RecipientState::Pending);
            let domain = mailbox_domain(mailbox);
            if !self.lmtp.contains_key(domain) || state.is_final() || !state.is_due(now) {
                continue;
            }
            by_domain.entry(domain).or_default().push(RemoteRecipient {
                index,
                address: mailbox.clone(),
                notify: rcpt.notify.clone(),
                orcpt: rcpt.orcpt.clone(),
            });
        }
        let msg = lmtp_message(envelope, data);
        for (domain, rcpts) in by_domain {
            let Some(target) = self.lmtp.get(domain) else {
                continue;
            };
            let result = deliver_lmtp(
                target,
                &self.outbound.helo_name,
                &msg,
                &rcpts,
                &self.outbound.timeouts,
            )
            .await;
            for (index, attempt) in result.results {
                let state = states
                    .get(index)
                    .cloned()
                    .unwrap_or(RecipientState::Pending);
                let next = on_result(&state, &attempt, &self.schedule, envelope.received_at, now);
                if let Some(rcpt) = envelope.recipients.get(index) {
                    log_remote(id, &rcpt.address, &next, result.remote_mta.as_deref());
                }
                updates.push((index, next));
            }
        }
    }
}

/// The domain part of a mailbox key (`alice@example.test` → `example.test`).
fn mailbox_domain(mailbox: &str) -> &str {
    mailbox.rsplit_once('@').map_or("", |(_, d)| d)
}

/// The queued message as the SMTP/LMTP client takes it.
fn lmtp_message<'a>(envelope: &'a Envelope, data: &'a [u8]) -> OutboundMessage<'a> {
    OutboundMessage {
        sender: &envelope.sender,
        body: match envelope.body.as_str() {
            "8BITMIME" => BodyType::EightBitMime,
            "BINARYMIME" => BodyType::BinaryMime,
            _ => BodyType::SevenBit,
        },
        smtputf8: envelope.smtputf8,
        ret: match envelope.ret.as_deref() {
            Some("FULL") => Some(Ret::Full),
            Some("HDRS") => Some(Ret::Headers),
            _ => None,
        },
        envid: envelope.envid.as_deref(),
        data,
    }
}
