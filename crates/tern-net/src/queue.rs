//! The queue manager: works every committed message off the spool until
//! each recipient is delivered, failed or expired, and tells senders what
//! happened with DSNs (RFC 3464): failures, delays, and successes when
//! they asked.
//!
//! One pass over a message, under the spool's delivery lease (so `tern
//! queue delete|bounce` never cut it in half): a held message is left
//! alone entirely; local recipients go to their Maildirs
//! ([`tern_delivery::deliver_local_leased`], off the async threads); the
//! mailboxes of domains configured for LMTP are handed, per domain, to
//! [`tern_delivery::deliver_lmtp`]; remote recipients whose retry time has
//! come are grouped by domain and handed to
//! [`tern_delivery::outbound::deliver_to_domain_cached`] (MX lookup or
//! smarthost, SMTP client, connection reuse). Every outcome is persisted
//! with the spool's recipient states before anything else happens, the
//! retry schedule is a pure function of time ([`tern_queue::on_result`]),
//! and a recipient that is final is never tried again.
//!
//! **Notices.** Newly failed or expired recipients produce one failure DSN
//! to the envelope sender; a deferred recipient past
//! `queue.delay_warning_after` gets one delay warning (recorded in the
//! spool, so never twice, even across restarts — see
//! [`delay_warning_due`]); `NOTIFY=SUCCESS` gets a "delivered" notice for
//! Maildir and LMTP deliveries and a "relayed" one when the next hop
//! cannot carry the DSN request further. Notices are queued like any other
//! message, with the null sender; a message with the null sender never
//! gets one.
//!
//! **Fairness.** At most `concurrency` passes run at once and at most
//! `per_destination` of them talk to one destination (a domain, an LMTP
//! server, the smarthost). A pass that finds its destination full does not
//! wait for it while holding a slot: the message is parked and woken when
//! the destination frees one, so a slow destination never starves the
//! others.
//!
//! It must never drop a message: the spool is the record, this task only
//! schedules. What it keeps in memory (the next due time per message) is
//! rebuilt from the spool at start-up.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tern_delivery::dsn::{
    DsnAction, DsnInput, DsnKind, DsnRecipient, bounce_recipient, build_dsn, should_notify,
};
use tern_delivery::outbound::MessageData;
use tern_delivery::outbound::{
    ConnectionCache, OutboundMessage, OutboundSettings, RemoteRecipient, deliver_to_domain_cached,
    destination_key,
};
use tern_delivery::{LmtpTarget, LocalReport, NOTICE_HEAD, deliver_lmtp, deliver_local_leased};
use tern_mailauth::Signer;
use tern_queue::journal::Event as JournalEvent;
use tern_queue::{
    Answer, AttemptResult, DeliveryLease, Envelope, Journal, QueueId, Recipient, RecipientState,
    RetrySchedule, Spool, on_result,
};
use tern_store::{Directory, Mailboxes, Resolution, Target};
use tern_types::dsn::{BodyType, Ret};
use tern_types::{EnhancedStatus, ForwardPath, Mailbox};
use tokio::sync::{Semaphore, mpsc, watch};
use tokio::task::JoinSet;
use tracing::{Instrument as _, debug, info, info_span, warn};

use crate::delivery::DeliveryHandle;
use crate::mailauth::SignerHandle;
use crate::metrics::{DestinationKind, DsnSent, metrics};

/// How long to wait before looking at a message whose local delivery failed
/// for a reason the spool does not schedule (e.g. it could not be opened).
const ERROR_RETRY: Duration = Duration::from_secs(60);

/// Everything the queue manager needs.
#[derive(Clone)]
pub struct QueueManager {
    /// The spool to work off.
    pub spool: Spool,
    /// Where local mailboxes live.
    pub store: Arc<Mailboxes>,
    /// Routes bounce recipients (local mailbox or remote).
    pub directory: Arc<Directory>,
    /// Our host name (Maildir names, DSNs).
    pub hostname: String,
    /// Messages worked on at once.
    pub concurrency: usize,
    /// Delivery attempts to one destination (a domain, an LMTP server, or
    /// the smarthost) at once; a message whose destination is full waits
    /// without holding a slot, so a slow destination cannot starve others.
    pub per_destination: usize,
    /// How long an outbound connection is kept open after a message for
    /// the next one to the same destination; zero: no reuse.
    pub connection_reuse: Duration,
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
    /// DKIM keys for the notices (DSNs) it sends; none loaded: unsigned.
    pub signer: SignerHandle,
    /// The delivery journal (`tern trace`).
    pub journal: tern_queue::Journal,
}

impl std::fmt::Debug for QueueManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QueueManager")
            .field("hostname", &self.hostname)
            .field("concurrency", &self.concurrency)
            .field("per_destination", &self.per_destination)
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

/// How often idle cached connections are looked at (closed when too old).
const CACHE_SWEEP: Duration = Duration::from_secs(2);

/// The delay-warning time used for a recipient that asked for delay
/// notices explicitly (`NOTIFY=DELAY`) when `delay_warning_after` is off.
pub const DEFAULT_DELAY_WARNING: Duration = Duration::from_secs(4 * 3600);

/// The notice kind recorded in the spool once a delay warning went out.
const DELAY_NOTICE: &str = "delay";

/// Busy delivery slots per destination (see [`QueueManager::per_destination`]).
#[derive(Debug)]
struct DestinationSlots {
    limit: usize,
    busy: Mutex<HashMap<String, usize>>,
}

/// One busy slot; dropping it frees the slot.
#[derive(Debug)]
struct Slot {
    slots: Arc<DestinationSlots>,
    key: String,
}

impl DestinationSlots {
    fn new(limit: usize) -> Arc<DestinationSlots> {
        Arc::new(DestinationSlots {
            limit: limit.max(1),
            busy: Mutex::new(HashMap::new()),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, usize>> {
        self.busy
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A slot for `key`, or `None` when all of its slots are busy.
    fn try_acquire(self: &Arc<Self>, key: &str) -> Option<Slot> {
        let mut busy = self.lock();
        let n = busy.entry(key.to_owned()).or_insert(0);
        if *n >= self.limit {
            return None;
        }
        *n += 1;
        Some(Slot {
            slots: Arc::clone(self),
            key: key.to_owned(),
        })
    }

    /// How many slots of `key` are free now.
    fn free(&self, key: &str) -> usize {
        self.limit
            .saturating_sub(self.lock().get(key).copied().unwrap_or(0))
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut busy = self.slots.lock();
        if let Some(n) = busy.get_mut(&self.key) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                busy.remove(&self.key);
            }
        }
    }
}

/// What the manager shares between passes.
#[derive(Debug)]
struct Shared {
    slots: Arc<DestinationSlots>,
    cache: Option<ConnectionCache>,
}

/// How one pass over a message ended.
#[derive(Debug, Default)]
struct PassEnd {
    /// When to look at the message again; `None`: it left the queue.
    next: Option<u64>,
    /// Destinations that had no free slot: the message is looked at again
    /// as soon as one of them frees a slot.
    blocked: Vec<String>,
}

impl PassEnd {
    fn at(next: u64) -> PassEnd {
        PassEnd {
            next: Some(next),
            blocked: Vec::new(),
        }
    }

    fn gone() -> PassEnd {
        PassEnd::default()
    }
}

/// A queued message's bytes as a pass uses them: streamed from the spool
/// file to the next hop (never whole in memory), with the start of it kept
/// for the headers that notices quote.
struct QueuedData {
    /// The spool file; the message is its first `len` bytes.
    path: std::path::PathBuf,
    len: u64,
    /// The first [`NOTICE_HEAD`] bytes at most.
    head: Vec<u8>,
}

impl QueuedData {
    fn message(&self) -> MessageData<'_> {
        MessageData::File {
            path: &self.path,
            len: self.len,
        }
    }

    /// The whole message, for a failure notice that returns it (RET=FULL
    /// or no RET). Off the async threads; bounded by the size limit the
    /// message was accepted under.
    async fn read_all(&self) -> std::io::Result<Vec<u8>> {
        let (path, len) = (self.path.clone(), self.len);
        tokio::task::spawn_blocking(move || {
            let mut out = Vec::with_capacity(usize::try_from(len).unwrap_or(0));
            std::io::Read::read_to_end(
                &mut std::io::Read::take(std::fs::File::open(path)?, len),
                &mut out,
            )?;
            Ok(out)
        })
        .await
        .map_err(std::io::Error::other)?
    }
}

/// What one pass read from the spool (off the async threads).
enum Loaded {
    /// The message left the queue (delivered locally to everyone, deleted
    /// or bounced by the administrator).
    Gone(LocalReport),
    /// It stays: where its data is, and its state.
    Queued {
        report: Box<LocalReport>,
        envelope: Envelope,
        data: QueuedData,
        states: Vec<RecipientState>,
        held: bool,
        warned: BTreeSet<usize>,
    },
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
        let mut running: JoinSet<(QueueId, PassEnd)> = JoinSet::new();
        let mut in_flight: HashSet<QueueId> = HashSet::new();
        // Messages waiting for their next attempt: id → due (Unix seconds).
        let mut waiting: HashMap<QueueId, u64> = HashMap::new();
        // Messages waiting for a slot at a destination.
        let mut blocked: HashMap<String, HashSet<QueueId>> = HashMap::new();
        let shared = Arc::new(Shared {
            slots: DestinationSlots::new(self.per_destination),
            cache: (!self.connection_reuse.is_zero())
                .then(|| ConnectionCache::new(self.connection_reuse, self.per_destination)),
        });
        let mut sweep = tokio::time::interval(CACHE_SWEEP);
        sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let me = Arc::new(self);
        loop {
            if *shutdown.borrow() {
                break;
            }
            let now = unix_now();
            // Start every due message we have room for.
            let due: Vec<QueueId> = waiting
                .iter()
                .filter(|(id, at)| **at <= now && !in_flight.contains(*id))
                .map(|(id, _)| id.clone())
                .collect();
            for id in due {
                let Ok(permit) = Arc::clone(&limit).try_acquire_owned() else {
                    break;
                };
                waiting.remove(&id);
                in_flight.insert(id.clone());
                let (me, handle, shared) = (Arc::clone(&me), handle.clone(), Arc::clone(&shared));
                running.spawn(async move {
                    let _permit = permit;
                    let end = me.process(&id, &handle, &shared).await;
                    (id, end)
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
                    if let Ok((id, end)) = done {
                        in_flight.remove(&id);
                        for key in end.blocked {
                            blocked.entry(key).or_default().insert(id.clone());
                        }
                        if let Some(at) = end.next {
                            waiting.insert(id, at);
                        }
                    }
                    // A pass ended, so slots may have freed: wake as many
                    // of the messages waiting for them as there are free
                    // slots (not all: a thousand messages parked on one
                    // busy domain must not all be read again each time).
                    for (key, ids) in blocked.iter_mut() {
                        let free = shared.slots.free(key);
                        if free == 0 {
                            continue;
                        }
                        let wake: Vec<QueueId> = ids.iter().take(free).cloned().collect();
                        for id in wake {
                            ids.remove(&id);
                            if let Some(at) = waiting.get_mut(&id) {
                                *at = 0;
                            }
                        }
                    }
                    blocked.retain(|_, ids| !ids.is_empty());
                }
                Some(id) = rx.recv() => {
                    if !in_flight.contains(&id) {
                        waiting.insert(id, 0);
                    }
                }
                _ = sweep.tick() => {
                    if let Some(cache) = &shared.cache {
                        cache.sweep().await;
                    }
                }
                _ = tokio::time::sleep(sleep) => {}
            }
        }
        // In-flight attempts finish (their results are persisted); what is
        // left waiting is resumed from the spool at the next start.
        while running.join_next().await.is_some() {}
        if let Some(cache) = &shared.cache {
            cache.close_all().await;
        }
    }

    /// One pass over one message: local Maildirs, then LMTP and remote
    /// destinations, then the notices. The spool's delivery lease is held
    /// for the whole pass, so `tern queue delete|bounce` wait for it.
    async fn process(&self, id: &QueueId, handle: &DeliveryHandle, shared: &Shared) -> PassEnd {
        let Some(lease) = self.spool.lease(id) else {
            // Another agent (the admin socket) is working on it.
            return PassEnd::at(unix_now() + 1);
        };
        let loaded = {
            let (spool, store, hostname) = (
                self.spool.clone(),
                Arc::clone(&self.store),
                self.hostname.clone(),
            );
            let lmtp: HashSet<String> = self.lmtp.keys().cloned().collect();
            tokio::task::spawn_blocking(move || {
                let r = load(&spool, &store, &hostname, &lease, &lmtp);
                (lease, r)
            })
            .await
        };
        let (lease, loaded) = match loaded {
            Ok((lease, Ok(l))) => (lease, l),
            Ok((_, Err(e))) => {
                warn!(queue_id = %id, error = %e, "delivery failed; will retry");
                return PassEnd::at(unix_now() + ERROR_RETRY.as_secs());
            }
            Err(e) => {
                warn!(queue_id = %id, error = %e, "delivery task died; will retry");
                return PassEnd::at(unix_now() + ERROR_RETRY.as_secs());
            }
        };
        let (report, envelope, data, mut states, held, warned) = match loaded {
            Loaded::Gone(report) => {
                log_local(&self.journal, id, &report);
                drop(lease);
                self.success_notice_local(id, &report, handle).await;
                return PassEnd::gone();
            }
            Loaded::Queued {
                report,
                envelope,
                data,
                states,
                held,
                warned,
            } => (report, envelope, data, states, held, warned),
        };
        log_local(&self.journal, id, &report);
        let now = unix_now();
        let mut updates: Vec<(usize, RecipientState)> = Vec::new();
        let mut blocked: Vec<String> = Vec::new();
        // Successes to report (NOTIFY=SUCCESS): (kind, recipient).
        let mut successes: Vec<(DsnKind, DsnRecipient)> = Vec::new();
        for (index, _) in &report.delivered {
            if let Some(rcpt) = envelope.recipients.get(*index)
                && should_notify(rcpt, DsnKind::Success)
            {
                successes.push((
                    DsnKind::Success,
                    success_recipient(rcpt, DsnAction::Delivered, None, None, now),
                ));
            }
        }

        // Local recipients that failed this time are scheduled like remote ones.
        for (index, address, error) in &report.deferred {
            let state = states
                .get(*index)
                .cloned()
                .unwrap_or(RecipientState::Pending);
            let next = on_result(
                &state,
                &AttemptResult::Deferred(Answer::Local(error.clone())),
                &self.schedule,
                envelope.received_at,
                now,
            );
            journal_state(&self.journal, id, address, &next, None, "mailbox");
            updates.push((*index, next));
        }

        if !held && !self.lmtp.is_empty() {
            self.deliver_lmtp(
                id,
                &envelope,
                &data,
                &states,
                now,
                shared,
                &mut updates,
                &mut blocked,
                &mut successes,
            )
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
            let msg = outbound_message(&envelope, data.message());
            for (domain, rcpts) in by_domain {
                let key = destination_key(&self.outbound, &domain);
                let Some(_slot) = shared.slots.try_acquire(&key) else {
                    debug!(queue_id = %id, destination = %key, "destination busy; waiting for a slot");
                    if !blocked.contains(&key) {
                        blocked.push(key);
                    }
                    continue;
                };
                let seed = now ^ (rcpts.len() as u64).rotate_left(17) ^ id.as_str().len() as u64;
                let result = deliver_to_domain_cached(
                    &self.outbound,
                    resolver.as_ref(),
                    &domain,
                    &msg,
                    &rcpts,
                    seed,
                    shared.cache.as_ref(),
                )
                // The driver's own log lines (connecting, TLS, replies)
                // carry the queue id through this span.
                .instrument(info_span!("outbound", queue_id = %id))
                .await;
                for (index, attempt) in result.results {
                    let state = states
                        .get(index)
                        .cloned()
                        .unwrap_or(RecipientState::Pending);
                    let next =
                        on_result(&state, &attempt, &self.schedule, envelope.received_at, now);
                    log_remote(
                        &self.journal,
                        id,
                        &envelope.recipients[index].address,
                        &next,
                        result.remote_mta.as_deref(),
                        if self.outbound.smarthost.is_some() {
                            "smarthost"
                        } else {
                            "remote"
                        },
                    );
                    // Relayed (RFC 3464 2.3.3): the next hop took it and
                    // will not report on it, so this is the last word.
                    if let (RecipientState::Delivered { reply, .. }, false) =
                        (&next, result.dsn_passed_on)
                        && let Some(rcpt) = envelope.recipients.get(index)
                        && should_notify(rcpt, DsnKind::Relayed)
                    {
                        successes.push((
                            DsnKind::Relayed,
                            success_recipient(
                                rcpt,
                                DsnAction::Relayed,
                                result.remote_mta.clone(),
                                Some(reply.clone()),
                                now,
                            ),
                        ));
                    }
                    updates.push((index, next));
                }
            }
        }

        // When this pass delivered every recipient still open, removing
        // the message below records that (one directory fsync), so the
        // state records are not written only to be deleted. A crash
        // before the removal is durable repeats the delivery, exactly as a
        // crash between the next hop's 250 and a state record would.
        let finishes = !updates.is_empty()
            && updates
                .iter()
                .all(|(_, s)| matches!(s, RecipientState::Delivered { .. }))
            && states
                .iter()
                .enumerate()
                .all(|(i, s)| s.is_final() || updates.iter().any(|(index, _)| *index == i));
        let mut unrecorded: Vec<(usize, RecipientState)> = Vec::new();
        if finishes {
            for (index, state) in &updates {
                if let Some(slot) = states.get_mut(*index) {
                    *slot = state.clone();
                }
            }
            unrecorded = std::mem::take(&mut updates);
        }
        if !updates.is_empty() {
            let spool = self.spool.clone();
            let (id2, list) = (id.clone(), updates.clone());
            let recorded =
                tokio::task::spawn_blocking(move || spool.record_states(&id2, &list)).await;
            if let Ok(Err(tern_queue::SpoolError::NotFound(_))) = recorded {
                info!(queue_id = %id, "message left the queue during the attempt");
                return PassEnd::gone();
            }
            if !matches!(recorded, Ok(Ok(()))) {
                warn!(queue_id = %id, "cannot record delivery results; will retry");
                return PassEnd::at(unix_now() + ERROR_RETRY.as_secs());
            }
            for (index, state) in &updates {
                if let Some(slot) = states.get_mut(*index) {
                    *slot = state.clone();
                }
            }
            let failed = updates.iter().any(|(_, s)| {
                matches!(
                    s,
                    RecipientState::Failed { .. } | RecipientState::Expired { .. }
                )
            });
            if failed {
                // The notice may return the whole message: read it now.
                match data.read_all().await {
                    Ok(full) => self.bounce(id, &envelope, &full, &updates, handle).await,
                    Err(e) => {
                        warn!(queue_id = %id, error = %e, "cannot read the message for its failure notice; sending the headers");
                        self.bounce(id, &envelope, &data.head, &updates, handle)
                            .await;
                    }
                }
            }
        }
        for kind in [DsnKind::Success, DsnKind::Relayed] {
            let list: Vec<DsnRecipient> = successes
                .iter()
                .filter(|(k, _)| *k == kind)
                .map(|(_, r)| r.clone())
                .collect();
            self.notify(id, kind, &envelope, &data.head, list, handle)
                .await;
        }
        if !held {
            self.delay_warnings(id, &envelope, &data.head, &states, &warned, now, handle)
                .await;
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
            let removed = tokio::task::spawn_blocking(move || {
                let removed = spool.remove(&id2);
                if removed.is_err() && !unrecorded.is_empty() {
                    // Not removed: keep the results, so the retry does not
                    // deliver again.
                    let _ = spool.record_states(&id2, &unrecorded);
                }
                removed
            })
            .await;
            if let Ok(Ok(())) = removed {
                info!(queue_id = %id, "removed from queue: all recipients done");
                return PassEnd::gone();
            }
            return PassEnd::at(now + ERROR_RETRY.as_secs());
        }
        if held {
            // Held messages are looked at again when released (`flush`).
            return PassEnd::at(now + 3600);
        }
        let next = states
            .iter()
            .filter_map(|s| match s {
                RecipientState::Deferred { next_attempt, .. } => Some(*next_attempt),
                RecipientState::Pending => Some(now + ERROR_RETRY.as_secs()),
                _ => None,
            })
            .min();
        PassEnd {
            next: Some(next.unwrap_or(now + ERROR_RETRY.as_secs())),
            blocked,
        }
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
        self.queue(id, notice, DsnKind::Failure, handle).await;
    }

    /// Commits `notice` (off the async threads) and announces it.
    async fn queue(
        &self,
        id: &QueueId,
        notice: FailureNotice,
        kind: DsnKind,
        handle: &DeliveryHandle,
    ) -> bool {
        let (spool, directory, orig_id) =
            (self.spool.clone(), Arc::clone(&self.directory), id.clone());
        let signer = self.signer.current();
        let to = notice.to.clone();
        let queued =
            tokio::task::spawn_blocking(move || queue_notice(&spool, &directory, &signer, notice))
                .await;
        let (what, name) = match kind {
            DsnKind::Failure => ("failure notice (DSN) queued for the sender", "failure"),
            DsnKind::Delay => ("delay warning (DSN) queued for the sender", "delay"),
            DsnKind::Success => ("success notice (DSN) queued for the sender", "success"),
            DsnKind::Relayed => ("relayed notice (DSN) queued for the sender", "relayed"),
        };
        match queued {
            Ok(Ok(notice_id)) => {
                info!(queue_id = %orig_id, notice_id = %notice_id, "{what}");
                metrics().dsn_sent(match kind {
                    DsnKind::Failure => DsnSent::Failure,
                    DsnKind::Delay => DsnSent::Delay,
                    DsnKind::Success => DsnSent::Success,
                    DsnKind::Relayed => DsnSent::Relayed,
                });
                self.journal.record(
                    orig_id.as_str(),
                    JournalEvent::Notice {
                        kind: name.into(),
                        to: to.clone(),
                        notice_id: notice_id.to_string(),
                    },
                );
                self.journal.record(
                    notice_id.as_str(),
                    JournalEvent::Generated {
                        about: orig_id.to_string(),
                        kind: name.into(),
                        to,
                    },
                );
                handle.submit(notice_id);
                true
            }
            Ok(Err(e)) => {
                warn!(queue_id = %orig_id, error = %e, "cannot queue a delivery notice");
                false
            }
            Err(e) => {
                warn!(queue_id = %orig_id, error = %e, "cannot queue a delivery notice");
                false
            }
        }
    }

    /// Queues one success or relayed notice for `recipients` (already
    /// filtered on NOTIFY) to the envelope sender.
    async fn notify(
        &self,
        id: &QueueId,
        kind: DsnKind,
        envelope: &Envelope,
        original: &[u8],
        recipients: Vec<DsnRecipient>,
        handle: &DeliveryHandle,
    ) {
        let Some(notice) = sender_notice(
            &self.hostname,
            id,
            kind,
            envelope,
            original,
            recipients,
            unix_now(),
        ) else {
            return;
        };
        self.queue(id, notice, kind, handle).await;
    }

    /// The success notice for local deliveries of a message that has
    /// already left the queue (its source was kept by the local delivery).
    async fn success_notice_local(
        &self,
        id: &QueueId,
        report: &LocalReport,
        handle: &DeliveryHandle,
    ) {
        let Some(source) = &report.notice_source else {
            return;
        };
        let now = unix_now();
        let recipients: Vec<DsnRecipient> = report
            .delivered
            .iter()
            .filter_map(|(index, _)| source.envelope.recipients.get(*index))
            .filter(|r| should_notify(r, DsnKind::Success))
            .map(|r| success_recipient(r, DsnAction::Delivered, None, None, now))
            .collect();
        self.notify(
            id,
            DsnKind::Success,
            &source.envelope,
            &source.head,
            recipients,
            handle,
        )
        .await;
    }

    /// Sends the delay warning for the recipients that are due one (see
    /// [`delay_warning_due`]) and records it, so it goes out once.
    #[allow(clippy::too_many_arguments)]
    async fn delay_warnings(
        &self,
        id: &QueueId,
        envelope: &Envelope,
        original: &[u8],
        states: &[RecipientState],
        warned: &BTreeSet<usize>,
        now: u64,
        handle: &DeliveryHandle,
    ) {
        let due = delay_warning_due(envelope, states, warned, &self.schedule, now);
        if due.is_empty() {
            return;
        }
        let until = self.schedule.expires_at(envelope.received_at);
        let recipients: Vec<DsnRecipient> = due
            .iter()
            .filter_map(|&i| Some((envelope.recipients.get(i)?, states.get(i)?)))
            .map(|(rcpt, state)| {
                let error = match state {
                    RecipientState::Deferred { last_error, .. } => last_error.clone(),
                    _ => String::new(),
                };
                DsnRecipient {
                    final_recipient: rcpt.address.clone(),
                    original: rcpt.orcpt.clone(),
                    action: DsnAction::Delayed,
                    status: tern_types::reply::status_of(&error, 4).to_string(),
                    remote_mta: None,
                    diagnostic: (!error.is_empty()).then_some(error),
                    last_attempt: now,
                    will_retry_until: Some(until),
                }
            })
            .collect();
        if let Some(notice) = sender_notice(
            &self.hostname,
            id,
            DsnKind::Delay,
            envelope,
            original,
            recipients,
            now,
        ) && !self.queue(id, notice, DsnKind::Delay, handle).await
        {
            // Not queued: try again at the next pass.
            return;
        }
        // Recorded after the notice is queued: a crash in between may
        // repeat a warning, never lose one.
        let (spool, id2) = (self.spool.clone(), id.clone());
        let recorded =
            tokio::task::spawn_blocking(move || spool.record_notices(&id2, &due, DELAY_NOTICE))
                .await;
        if !matches!(recorded, Ok(Ok(()))) {
            warn!(queue_id = %id, "cannot record that the delay warning was sent");
        }
    }
}

/// One pass's reading of the spool (blocking): the hold flag, the local
/// Maildir deliveries (not while held), then what the rest of the pass
/// needs. `lmtp` names the domains whose mailboxes are left to LMTP.
fn load(
    spool: &Spool,
    store: &Mailboxes,
    hostname: &str,
    lease: &DeliveryLease,
    lmtp: &HashSet<String>,
) -> Result<Loaded, String> {
    let id = lease.id();
    let held = match spool.is_held(id) {
        Ok(h) => h,
        Err(e) if e.is_not_found() => return Ok(Loaded::Gone(LocalReport::default())),
        Err(e) => return Err(e.to_string()),
    };
    let report = if held {
        // A held message is not delivered anywhere, Maildirs included.
        LocalReport::default()
    } else {
        let skip = |mailbox: &str| lmtp.contains(mailbox_domain(mailbox));
        deliver_local_leased(spool, store, hostname, lease, &skip).map_err(|e| e.to_string())?
    };
    // IDLE sessions of the recipients see their new mail at once.
    for (_, mailbox) in &report.delivered {
        store.notify_external(mailbox);
    }
    if report.skipped || report.removed {
        return Ok(Loaded::Gone(report));
    }
    let message = match spool.open_message(id) {
        Ok(m) => m,
        Err(e) if e.is_not_found() => return Ok(Loaded::Gone(report)),
        Err(e) => return Err(e.to_string()),
    };
    let mut head = Vec::new();
    let reader = message.reader().map_err(|e| e.to_string())?;
    std::io::Read::read_to_end(&mut std::io::Read::take(reader, NOTICE_HEAD), &mut head)
        .map_err(|e| e.to_string())?;
    let data = QueuedData {
        path: message.path().to_owned(),
        len: message.data_len(),
        head,
    };
    // One read of the state file, after the local deliveries recorded theirs.
    let state = spool
        .message_state(id, message.envelope.recipients.len())
        .map_err(|e| e.to_string())?;
    let warned = state
        .notices
        .into_iter()
        .filter(|(_, kind)| kind == DELAY_NOTICE)
        .map(|(index, _)| index)
        .collect();
    Ok(Loaded::Queued {
        report: Box::new(report),
        envelope: message.envelope.clone(),
        data,
        states: state.states,
        held,
        warned,
    })
}

/// The recipients of a message that are due a delay warning at `now`:
/// deferred (not final), not warned yet, asking for delay notices
/// (`NOTIFY` absent or naming `DELAY`), and past the warning time. The
/// warning time is `delay_warning_after` after arrival; a recipient that
/// asked with `NOTIFY=DELAY` when warnings are configured off gets one
/// after [`DEFAULT_DELAY_WARNING`]. No warning is due at or after the
/// expiry (the failure notice then says it all). Pure: a function of
/// `now`.
pub fn delay_warning_due(
    envelope: &Envelope,
    states: &[RecipientState],
    warned: &BTreeSet<usize>,
    schedule: &RetrySchedule,
    now: u64,
) -> Vec<usize> {
    let expiry = schedule.expires_at(envelope.received_at);
    let configured = schedule.delay_warning_at(envelope.received_at);
    envelope
        .recipients
        .iter()
        .enumerate()
        .filter(|(index, rcpt)| {
            if warned.contains(index)
                || !matches!(states.get(*index), Some(RecipientState::Deferred { .. }))
                || !should_notify(rcpt, DsnKind::Delay)
            {
                return false;
            }
            let explicit = rcpt
                .notify
                .as_deref()
                .and_then(|n| tern_types::dsn::Notify::parse(n).ok())
                .is_some_and(tern_types::dsn::Notify::delay);
            let at = configured.or_else(|| {
                explicit.then(|| {
                    envelope
                        .received_at
                        .saturating_add(DEFAULT_DELAY_WARNING.as_secs())
                })
            });
            at.is_some_and(|at| now >= at && now < expiry)
        })
        .map(|(index, _)| index)
        .collect()
}

/// A success or relayed report line for `rcpt`.
fn success_recipient(
    rcpt: &Recipient,
    action: DsnAction,
    remote_mta: Option<String>,
    reply: Option<String>,
    now: u64,
) -> DsnRecipient {
    DsnRecipient {
        final_recipient: rcpt.address.clone(),
        original: rcpt.orcpt.clone(),
        action,
        status: "2.0.0".to_owned(),
        remote_mta,
        diagnostic: reply,
        last_attempt: now,
        will_retry_until: None,
    }
}

/// A delay, success or relayed DSN for `recipients`, to the envelope
/// sender; `None` for the null sender (never a report about a report) or
/// when nobody is to be told.
pub fn sender_notice(
    hostname: &str,
    id: &QueueId,
    kind: DsnKind,
    envelope: &Envelope,
    original: &[u8],
    recipients: Vec<DsnRecipient>,
    now: u64,
) -> Option<FailureNotice> {
    if recipients.is_empty() {
        return None;
    }
    let to = bounce_recipient(envelope)?;
    let tag = match kind {
        DsnKind::Delay => "delay",
        DsnKind::Success => "success",
        DsnKind::Relayed => "relayed",
        DsnKind::Failure => "dsn",
    };
    let dsn = build_dsn(&DsnInput {
        hostname: hostname.to_owned(),
        kind,
        envelope,
        recipients,
        original,
        date: tern_delivery::dsn::rfc5322_date(now),
        message_id: format!("<{id}.{tag}.{now}@{hostname}>"),
        boundary_seed: now,
    });
    Some(FailureNotice { dsn, to, now })
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
        // A failure notice reports a permanent status: an expired
        // recipient's 4.4.7 ("delivery time expired") is reported as
        // 5.4.7, a failed one's in class 5 as recorded.
        let (reply, status, at) = match state {
            RecipientState::Failed { at, reply, status } => (
                reply.clone(),
                status
                    .parse::<EnhancedStatus>()
                    .unwrap_or_else(|_| tern_types::reply::status_of(reply, 5)),
                *at,
            ),
            RecipientState::Expired { at, last_error } => {
                (last_error.clone(), EnhancedStatus::new(4, 4, 7), *at)
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
            status: status.with_class(5).to_string(),
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
    signer: &Signer,
    notice: FailureNotice,
) -> Result<QueueId, tern_queue::SpoolError> {
    let FailureNotice { dsn, to, now } = notice;
    let dsn = sign_notice(signer, dsn);
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
        protocol: "LOCAL".to_owned(),
        body: "8BITMIME".to_owned(),
        size,
        ..Envelope::default()
    };
    incoming.commit(&envelope)?.wait_blocking()
}

/// DKIM-signs a notice with the keys of the domain of its `From:` (ours,
/// `MAILER-DAEMON@<hostname>`) or, failing that, of its nearest parent
/// domain that has keys (`mx.example.org` → `example.org`, aligned under
/// relaxed DMARC), so that receivers that want DKIM on bounces get it.
/// Without keys, or if signing fails (logged), the notice goes unsigned:
/// a bounce must never be lost for want of a signature.
pub fn sign_notice(signer: &Signer, dsn: Vec<u8>) -> Vec<u8> {
    let Some(from) = tern_mailauth::sign::author_domain(&dsn) else {
        return dsn;
    };
    let mut domain = from.as_str();
    loop {
        if !signer.keys(domain).is_empty() {
            return match signer.sign(domain, &dsn) {
                Ok(signatures) => {
                    let mut signed = signatures.into_bytes();
                    signed.extend_from_slice(&dsn);
                    signed
                }
                Err(e) => {
                    warn!(domain = %domain, error = %e, "DKIM signing of a notice failed; sending it unsigned");
                    dsn
                }
            };
        }
        // Up one label, but never to a bare top-level domain.
        match domain.split_once('.') {
            Some((_, parent)) if parent.contains('.') => domain = parent,
            _ => return dsn,
        }
    }
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

fn log_local(journal: &Journal, id: &QueueId, report: &LocalReport) {
    for (index, mailbox) in &report.delivered {
        metrics().delivery(
            DestinationKind::Local,
            &RecipientState::Delivered {
                at: 0,
                reply: String::new(),
            },
            Some(id.created_micros()),
        );
        info!(queue_id = %id, rcpt = index, to = %mailbox, status = "delivered", "delivered to maildir");
        journal.record(
            id.as_str(),
            JournalEvent::Delivered {
                to: mailbox.clone(),
                via: "mailbox".into(),
                relay: None,
                reply: format!("stored in the mailbox of {mailbox}"),
            },
        );
    }
    for (index, address, error) in &report.deferred {
        warn!(queue_id = %id, rcpt = index, to = %address, status = "deferred", error = %error, "local delivery deferred");
    }
}

/// Journals the state a delivery attempt (or the local pass's deferral)
/// left recipient `address` in.
fn journal_state(
    journal: &Journal,
    id: &QueueId,
    address: &str,
    state: &RecipientState,
    mta: Option<&str>,
    via: &str,
) {
    let kind = match via {
        "mailbox" => DestinationKind::Local,
        "lmtp" => DestinationKind::Lmtp,
        "smarthost" => DestinationKind::Smarthost,
        _ => DestinationKind::Remote,
    };
    metrics().delivery(kind, state, Some(id.created_micros()));
    let (to, via, relay) = (address.to_owned(), via.to_owned(), mta.map(str::to_owned));
    let event = match state {
        RecipientState::Delivered { reply, .. } => JournalEvent::Delivered {
            to,
            via,
            relay,
            reply: reply.clone(),
        },
        RecipientState::Deferred {
            last_error,
            next_attempt,
            attempts,
        } => JournalEvent::Deferred {
            to,
            via,
            relay,
            reply: last_error.clone(),
            attempts: *attempts,
            next_attempt: *next_attempt,
        },
        RecipientState::Failed { reply, .. } => JournalEvent::Bounced {
            to,
            via,
            relay,
            reply: reply.clone(),
        },
        RecipientState::Expired { last_error, .. } => JournalEvent::Expired {
            to,
            reply: last_error.clone(),
        },
        RecipientState::Pending => return,
    };
    journal.record(id.as_str(), event);
}

/// Logs (and journals) the state a delivery attempt left recipient
/// `address` in; `via` is the destination kind.
fn log_remote(
    journal: &Journal,
    id: &QueueId,
    address: &str,
    state: &RecipientState,
    mta: Option<&str>,
    via: &str,
) {
    journal_state(journal, id, address, state, mta, via);
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
    #[allow(clippy::too_many_arguments)]
    async fn deliver_lmtp(
        &self,
        id: &QueueId,
        envelope: &Envelope,
        data: &QueuedData,
        states: &[RecipientState],
        now: u64,
        shared: &Shared,
        updates: &mut Vec<(usize, RecipientState)>,
        blocked: &mut Vec<String>,
        successes: &mut Vec<(DsnKind, DsnRecipient)>,
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
        let msg = outbound_message(envelope, data.message());
        for (domain, rcpts) in by_domain {
            let Some(target) = self.lmtp.get(domain) else {
                continue;
            };
            let key = format!("lmtp:{domain}");
            let Some(_slot) = shared.slots.try_acquire(&key) else {
                if !blocked.contains(&key) {
                    blocked.push(key);
                }
                continue;
            };
            let result = deliver_lmtp(
                target,
                &self.outbound.helo_name,
                &msg,
                &rcpts,
                &self.outbound.timeouts,
            )
            .instrument(info_span!("lmtp", queue_id = %id))
            .await;
            for (index, attempt) in result.results {
                let state = states
                    .get(index)
                    .cloned()
                    .unwrap_or(RecipientState::Pending);
                let next = on_result(&state, &attempt, &self.schedule, envelope.received_at, now);
                if let Some(rcpt) = envelope.recipients.get(index) {
                    log_remote(
                        &self.journal,
                        id,
                        &rcpt.address,
                        &next,
                        result.remote_mta.as_deref(),
                        "lmtp",
                    );
                    if let RecipientState::Delivered { reply, .. } = &next
                        && should_notify(rcpt, DsnKind::Success)
                    {
                        successes.push((
                            DsnKind::Success,
                            success_recipient(
                                rcpt,
                                DsnAction::Delivered,
                                result.remote_mta.clone(),
                                Some(reply.clone()),
                                now,
                            ),
                        ));
                    }
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

/// The queued message as the SMTP and LMTP clients take it.
fn outbound_message<'a>(envelope: &'a Envelope, data: MessageData<'a>) -> OutboundMessage<'a> {
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

#[cfg(test)]
mod tests {
    use super::*;

    const T0: u64 = 1_700_000_000;
    const HOUR: u64 = 3600;

    fn envelope(notify: &[Option<&str>]) -> Envelope {
        Envelope {
            sender: "alice@example.test".into(),
            recipients: notify
                .iter()
                .enumerate()
                .map(|(i, n)| Recipient {
                    address: format!("r{i}@remote.test"),
                    original: format!("r{i}@remote.test"),
                    mailbox: None,
                    notify: n.map(str::to_owned),
                    orcpt: None,
                })
                .collect(),
            received_at: T0,
            protocol: "ESMTPSA".into(),
            size: 10,
            ..Envelope::default()
        }
    }

    fn deferred() -> RecipientState {
        RecipientState::Deferred {
            attempts: 3,
            last_error: "451 4.4.1 connection refused".into(),
            next_attempt: T0 + 5 * HOUR,
        }
    }

    #[test]
    fn delay_warnings_follow_the_clock_notify_and_the_record() {
        let schedule = RetrySchedule::default(); // warn after 4 h, expire after 5 d
        let env = envelope(&[None, Some("DELAY"), Some("FAILURE"), Some("NEVER"), None]);
        let states = vec![
            deferred(),
            deferred(),
            deferred(),
            deferred(),
            RecipientState::Delivered {
                at: T0,
                reply: "250 ok".into(),
            },
        ];
        let none = BTreeSet::new();
        // Before the warning time: nobody.
        assert!(delay_warning_due(&env, &states, &none, &schedule, T0 + 4 * HOUR - 1).is_empty());
        // At it: the default NOTIFY and an explicit DELAY; not FAILURE-only,
        // not NEVER, not a delivered recipient.
        assert_eq!(
            delay_warning_due(&env, &states, &none, &schedule, T0 + 4 * HOUR),
            [0, 1]
        );
        // Recorded as warned: never again.
        let warned = BTreeSet::from([0, 1]);
        assert!(delay_warning_due(&env, &states, &warned, &schedule, T0 + 9 * HOUR).is_empty());
        // At or after expiry: the failure notice says it all.
        let expiry = schedule.expires_at(T0);
        assert!(delay_warning_due(&env, &states, &none, &schedule, expiry).is_empty());
    }

    #[test]
    fn explicit_delay_is_honoured_when_warnings_are_off() {
        let schedule = RetrySchedule {
            delay_warning_after: None,
            ..RetrySchedule::default()
        };
        let env = envelope(&[None, Some("SUCCESS,DELAY")]);
        let states = vec![deferred(), deferred()];
        let none = BTreeSet::new();
        let at = T0 + DEFAULT_DELAY_WARNING.as_secs();
        assert!(delay_warning_due(&env, &states, &none, &schedule, at - 1).is_empty());
        assert_eq!(delay_warning_due(&env, &states, &none, &schedule, at), [1]);
    }

    #[test]
    fn pending_recipients_are_not_warned() {
        let schedule = RetrySchedule::default();
        let env = envelope(&[None]);
        let states = vec![RecipientState::Pending];
        assert!(
            delay_warning_due(&env, &states, &BTreeSet::new(), &schedule, T0 + 10 * HOUR)
                .is_empty()
        );
    }

    #[test]
    fn notices_never_go_to_the_null_sender() {
        let mut env = envelope(&[Some("SUCCESS")]);
        env.sender = String::new();
        let id: QueueId = "0123456789ABCDEF".parse().unwrap();
        let rcpt = success_recipient(&env.recipients[0], DsnAction::Delivered, None, None, T0);
        assert!(
            sender_notice(
                "mx.example.test",
                &id,
                DsnKind::Success,
                &env,
                b"Subject: x\r\n\r\n",
                vec![rcpt],
                T0
            )
            .is_none()
        );
    }

    #[test]
    fn destination_slots_are_bounded_and_freed() {
        let slots = DestinationSlots::new(2);
        let a = slots.try_acquire("slow.test").unwrap();
        let b = slots.try_acquire("slow.test").unwrap();
        assert!(slots.try_acquire("slow.test").is_none());
        assert_eq!(slots.free("slow.test"), 0);
        // Other destinations are not affected.
        assert!(slots.try_acquire("fast.test").is_some());
        drop(a);
        assert_eq!(slots.free("slow.test"), 1);
        let _c = slots.try_acquire("slow.test").unwrap();
        drop(b);
        assert_eq!(slots.free("slow.test"), 1);
        assert_eq!(slots.free("never.test"), 2);
    }
}
