//! The queue manager: the driver that runs the queue's scheduler
//! ([`tern_queue::Scheduler`], a sans-IO core) against the spool, the
//! delivery agents and the clock, until each recipient of every committed
//! message is delivered, failed or expired, and tells senders what
//! happened with DSNs (RFC 3464): failures, delays, and successes when
//! they asked.
//!
//! The scheduler decides everything that is policy — when a message is
//! due, which destination gets a slot (at most `concurrency` passes, at
//! most `per_destination` of them at one destination; a message whose
//! destination is full is parked without holding anything), the retry
//! schedule and expiry, and which notices go out. This module only does
//! the I/O it asks for, in one `select!` loop ([`QueueManager::start`])
//! over the scheduler's next wake-up, new messages (and admin wake-ups,
//! which re-read a message from the spool), the end of passes and the
//! connection cache's sweep.
//!
//! **Routing** is decided once per recipient when a message is read from
//! the spool ([`QueueManager::route`]): a local mailbox of a domain
//! configured for LMTP goes to its LMTP server, another local mailbox to
//! its Maildir, anything else to its domain's mail exchangers (or the
//! smarthost).
//!
//! **A pass** over one message, under the spool's delivery lease (so
//! `tern queue delete|bounce` never cut it in half): the Maildir group is
//! written by [`tern_delivery::deliver_local_leased`] (off the async
//! threads), each LMTP group handed to
//! [`tern_delivery::deliver_lmtp_unsettled`], each remote group (per
//! domain) to [`tern_delivery::outbound::deliver_to_domain_unsettled`].
//! The typed results go to the scheduler
//! ([`tern_queue::Scheduler::pass_ended`]); what it returns is carried out
//! in order: the recipients' new states are recorded in the spool before
//! anything else, then the notices are queued (like any other message,
//! with the null sender; a delay warning is recorded once queued, so never
//! twice, even across restarts), then a message whose recipients are all
//! final is removed. A destination's results are recorded before the pass
//! moves on to the next destination, and an LMTP or SMTP server hears
//! nothing more from us (QUIT, or the next transaction on a cached
//! connection) until its results are recorded: a node that dies before
//! its record leaves that delivery in RFC 1047's window, never one whose
//! server saw us carry on. A pass whose lease another node took over (this
//! one stalled past the expiry) starts nothing more.
//!
//! It must never drop a message: the spool is the record, the scheduler
//! only a cache of it rebuilt at start-up ([`QueueManager::start`] reads
//! every queued message back).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tern_delivery::dsn::{
    DsnAction, DsnInput, DsnKind, DsnRecipient, bounce_recipient, build_dsn, should_notify,
};
use tern_delivery::outbound::MessageData;
use tern_delivery::outbound::{
    ConnectionCache, DomainResult, OutboundMessage, OutboundSettings, RemoteRecipient, Unsettled,
    deliver_to_domain_unsettled, destination_key,
};
use tern_delivery::{
    LmtpTarget, LocalReport, NOTICE_HEAD, deliver_lmtp_unsettled, deliver_local_leased,
};
use tern_mailauth::Signer;
use tern_queue::envelope::unreadable_placeholder;
use tern_queue::journal::Event as JournalEvent;
use tern_queue::store::{
    FileStoreError, IncomingBody as _, Lease, QueueStore as _, StoreError as _,
};
use tern_queue::{
    Answer, AttemptResult, DELAY_NOTICE, Destination, Ended, Envelope, Journal, Notice, NoticeKind,
    Pass, PassReport, QueueId, Recipient, RecipientReport, RecipientState, RetrySchedule,
    ScheduledMessage, Scheduler, SchedulerConfig, Spool, UnreadableAddress,
};
use tern_queue_pg::{AnyBody, AnyStore, AnyStoreError};
use tern_store::{Directory, Mailboxes, Resolution, Route, Target, Via};
use tern_types::dsn::BodyType;
use tern_types::{EnhancedStatus, ForwardPath, Host, Mailbox, ReversePath};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinSet;
use tracing::{Instrument as _, info, info_span, warn};

use crate::conn::key_address;
use crate::delivery::DeliveryHandle;
use crate::mailauth::SignerHandle;
use crate::metrics::{DestinationKind, DsnSent, metrics};

/// How long to wait before looking at a message whose pass could not run
/// or whose results could not be recorded.
const ERROR_RETRY: Duration = Duration::from_secs(60);

/// Everything the queue manager needs.
#[derive(Clone)]
pub struct QueueManager {
    /// The queue: this node's spool, or the database several nodes share.
    /// Every read and write of a queued message goes through it.
    pub queue: AnyStore,
    /// This node's spool directory: with a shared queue, local Maildir
    /// deliveries still go through its group committer.
    pub spool: Spool,
    /// How long a delivery pass's lease lasts; renewed while it runs.
    /// With a shared queue, a dead node's messages wait this long.
    pub lease_ttl: Duration,
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
pub const DEFAULT_DELAY_WARNING: Duration =
    Duration::from_secs(tern_queue::scheduler::EXPLICIT_DELAY_WARNING);

/// A pass's report to the loop, and where the scheduler's verdict goes.
type Verdict = (QueueId, PassReport, oneshot::Sender<Ended>);

/// What asking the queue for a pass's lease gave.
enum Leased {
    Yes(Lease),
    /// The message is no longer queued.
    Gone,
    /// Another holder keeps it (an admin command, another node), or the
    /// queue could not be asked.
    No,
}

/// Messages of a shared queue looked at per sweep for adoption.
const ADOPT_BATCH: usize = 1000;

/// What the driver's tasks report to its loop.
enum Done {
    /// A message read from the spool (`None`: it is not there).
    Loaded(QueueId, Option<ScheduledMessage>),
    /// A message that could not be read now: read again later.
    Unreadable(QueueId),
    /// A pass could not run (no lease, the spool could not be read).
    Failed(QueueId),
    /// A pass is over, verdict carried out (`reload`: its results could
    /// not all be recorded; the spool is read again later).
    Finished(QueueId, bool),
    /// A pass found the spool ahead of the scheduler (recipients it
    /// records as final): the message is read again now.
    Outdated(QueueId),
    /// A delay warning that was due without a pass, and whether it went.
    Warned(Notice, bool),
    /// A shared queue's due messages that no lease holds.
    Unattended(Vec<QueueId>),
    /// A pass found the message changed by someone else (held through
    /// another node): it attempted nothing; the message is read again.
    Changed(QueueId),
}

/// A queued message's bytes as a pass uses them: streamed from the spool
/// file to the next hop (never whole in memory), or held in memory when
/// the queue is a database (which hands a message over whole), with the
/// start of it kept for the headers that notices quote.
enum QueuedData {
    /// The spool file; the message is its first `len` bytes.
    File {
        path: std::path::PathBuf,
        len: u64,
        /// The first [`NOTICE_HEAD`] bytes at most.
        head: Vec<u8>,
    },
    /// The whole message.
    Memory(Vec<u8>),
}

impl QueuedData {
    fn message(&self) -> MessageData<'_> {
        match self {
            QueuedData::File { path, len, .. } => MessageData::File { path, len: *len },
            QueuedData::Memory(bytes) => MessageData::Bytes(bytes),
        }
    }

    /// The start of the message, for the notices that quote its headers.
    fn head(&self) -> &[u8] {
        match self {
            QueuedData::File { head, .. } => head,
            QueuedData::Memory(bytes) => {
                &bytes[..bytes
                    .len()
                    .min(usize::try_from(NOTICE_HEAD).unwrap_or(usize::MAX))]
            }
        }
    }

    /// The whole message, for a failure notice that returns it (RET=FULL
    /// or no RET). Off the async threads; bounded by the size limit the
    /// message was accepted under.
    async fn read_all(&self) -> std::io::Result<Vec<u8>> {
        let (path, len) = match self {
            QueuedData::File { path, len, .. } => (path.clone(), *len),
            QueuedData::Memory(bytes) => return Ok(bytes.clone()),
        };
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

/// A message as a pass reads it from the spool: its envelope and data,
/// and which recipients the spool records as final (never attempted
/// again, whatever the scheduler remembers).
struct Opened {
    /// Held (by an admin command, perhaps on another node of a shared
    /// queue): the pass delivers nothing.
    held: bool,
    envelope: Envelope,
    data: QueuedData,
    done: BTreeSet<usize>,
}

/// Deliveries of a pass recorded before its end (see
/// [`QueueManager::record_early`]).
#[derive(Default)]
struct Early<'c> {
    /// Taken by the last destination, not recorded yet.
    waiting: Vec<(usize, RecipientState)>,
    /// Recorded already: the verdict does not record them again.
    recorded: BTreeSet<usize>,
    /// The connections of the deliveries not recorded yet: the servers
    /// hear nothing more from us (no QUIT, no next transaction) until the
    /// results are on stable storage, so that a node killed before its
    /// record leaves them inside RFC 1047's window.
    unsettled: Vec<Unsettled<'c>>,
}

impl<'c> Early<'c> {
    /// The results are recorded: the held connections may go on.
    async fn settle(&mut self) {
        for open in self.unsettled.drain(..) {
            open.settle().await;
        }
    }

    /// Notes the recipients `done` says the next hop took.
    fn taken(&mut self, done: &DomainResult, received_at: u64, schedule: &RetrySchedule, now: u64) {
        for (index, result) in &done.results {
            if matches!(result, AttemptResult::Delivered(_)) {
                let state = tern_queue::on_result(
                    &RecipientState::Pending,
                    result,
                    schedule,
                    received_at,
                    now,
                );
                self.waiting.push((*index, state));
            }
        }
    }
}

/// What a pass attempted, for logging and notices once the scheduler has
/// decided: per recipient, the host that answered and the reply.
#[derive(Default)]
struct Attempted {
    /// Recipient index → (destination kind, answering host, reply text).
    answers: BTreeMap<usize, (&'static str, Option<String>, String)>,
}

impl Attempted {
    /// Takes the results of one LMTP or SMTP delivery (`via` names it for
    /// the journal) into the pass's report.
    fn add(&mut self, via: &'static str, done: &DomainResult, report: &mut PassReport) {
        for (index, result) in &done.results {
            self.answers
                .insert(*index, (via, done.remote_mta.clone(), result.text()));
            report.results.push(RecipientReport {
                index: *index,
                result: result.clone(),
                dsn_passed_on: done.dsn_passed_on,
            });
        }
    }
}

impl QueueManager {
    /// Starts the manager: every message in the spool is read back and
    /// scheduled, then new submissions and retries as they come, until
    /// `shutdown` turns true.
    pub fn start(
        self,
        shutdown: watch::Receiver<bool>,
    ) -> (DeliveryHandle, tokio::task::JoinHandle<()>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let handle = DeliveryHandle::new(tx.clone());
        let run_handle = handle.clone();
        let queue = self.queue.clone();
        let resume = async move {
            match queue.list().await {
                Ok(ids) => {
                    if !ids.is_empty() {
                        info!(count = ids.len(), "resuming delivery of queued messages");
                    }
                    for id in ids {
                        let _ = tx.send(id);
                    }
                }
                Err(e) => {
                    warn!(error = %e, "cannot list the queue; queued messages wait for the next start")
                }
            }
        };
        let task = tokio::spawn(async move {
            resume.await;
            self.run(rx, run_handle, shutdown).await
        });
        (handle, task)
    }

    /// Where `rcpt` is delivered, as the directory routes it
    /// ([`Directory::route`], the one place that decides, for intake too):
    /// a local mailbox to its LMTP server or its Maildir, anything else to
    /// the mail exchangers of its domain or the smarthost (which
    /// [`destination_key`] names).
    pub fn route(&self, rcpt: &Recipient) -> Destination {
        let target = match &rcpt.mailbox {
            Some(mailbox) => Target::Local {
                mailbox: mailbox.clone(),
            },
            None => Target::Remote {
                address: rcpt.address.clone(),
            },
        };
        match self.directory.route(&target) {
            Route::Local {
                via: Via::Lmtp { domain },
                ..
            } => Destination::Lmtp(domain),
            Route::Local { .. } => Destination::Maildir,
            Route::Remote { domain } => {
                Destination::Remote(destination_key(&self.outbound, &domain))
            }
            Route::Smarthost => {
                Destination::Remote(destination_key(&self.outbound, &host_name(&rcpt.address)))
            }
        }
    }

    /// The driver loop: waits for the scheduler's next wake-up, a new
    /// message or admin wake-up, or the end of a task, and feeds the
    /// scheduler; starts what it says is due.
    async fn run(
        self,
        mut rx: mpsc::UnboundedReceiver<QueueId>,
        handle: DeliveryHandle,
        mut shutdown: watch::Receiver<bool>,
    ) {
        let mut scheduler = Scheduler::new(SchedulerConfig {
            schedule: self.schedule.clone(),
            concurrency: self.concurrency,
            per_destination: self.per_destination,
            idle_retry: ERROR_RETRY.as_secs(),
        });
        let cache = (!self.connection_reuse.is_zero()).then(|| {
            Arc::new(ConnectionCache::new(
                self.connection_reuse,
                self.per_destination,
            ))
        });
        let mut tasks: JoinSet<Done> = JoinSet::new();
        // Reads put off after an error; dropped at shutdown.
        let mut later: JoinSet<Done> = JoinSet::new();
        let (verdict_tx, mut verdicts) = mpsc::unbounded_channel::<Verdict>();
        // Messages re-announced while a pass ran: read again at its end.
        let mut stale: HashSet<QueueId> = HashSet::new();
        let mut sweep = tokio::time::interval(CACHE_SWEEP);
        sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // A shared queue: other nodes' messages that nobody works on (a
        // dead node's, once its leases expired) are adopted. One seen due
        // and unleased in two looks a lease's time apart is; a message a
        // live node just accepted is leased by it long before that.
        let shared = !matches!(self.queue, AnyStore::File(_));
        let patience = self.lease_ttl.as_secs().max(1);
        let mut adopt = tokio::time::interval(
            Duration::from_secs(patience.div_ceil(2)).min(Duration::from_secs(30)),
        );
        adopt.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut unattended: HashMap<QueueId, u64> = HashMap::new();
        let mut looking = false;
        let mut held_cursor: Option<QueueId> = None;
        let me = Arc::new(self);
        loop {
            if *shutdown.borrow() {
                break;
            }
            let now = unix_now();
            let due = scheduler.due(now);
            for notice in due.notices {
                let me = Arc::clone(&me);
                let handle = handle.clone();
                tasks.spawn(async move {
                    let sent = me.warn_without_pass(&notice, &handle).await;
                    Done::Warned(notice, sent)
                });
            }
            for pass in due.passes {
                let (me, handle, cache) = (Arc::clone(&me), handle.clone(), cache.clone());
                let verdicts = verdict_tx.clone();
                tasks
                    .spawn(async move { me.pass(pass, verdicts, &handle, cache.as_deref()).await });
            }
            let sleep = scheduler
                .next_wakeup()
                .map(|at| Duration::from_secs(at.saturating_sub(now)))
                .unwrap_or(Duration::from_secs(3600))
                .clamp(Duration::from_millis(50), Duration::from_secs(60));
            tokio::select! {
                _ = shutdown.changed() => break,
                Some(done) = tasks.join_next(), if !tasks.is_empty() => {
                    let Ok(done) = done else { continue };
                    let now = unix_now();
                    match done {
                        Done::Loaded(id, Some(message)) => scheduler.submit(id, message, now),
                        Done::Loaded(id, None) => scheduler.remove(&id),
                        Done::Unreadable(id) => {
                            read_later(&mut later, &me, id);
                        }
                        Done::Failed(id) => scheduler.pass_failed(&id, now),
                        Done::Finished(id, reload) => {
                            if reload {
                                scheduler.remove(&id);
                                read_later(&mut later, &me, id);
                            } else if stale.remove(&id) {
                                let me = Arc::clone(&me);
                                tasks.spawn(async move { me.read(id).await });
                            }
                        }
                        Done::Outdated(id) => {
                            stale.remove(&id);
                            let me = Arc::clone(&me);
                            tasks.spawn(async move { me.read(id).await });
                        }
                        Done::Changed(id) => {
                            stale.remove(&id);
                            scheduler.pass_failed(&id, now);
                            let me = Arc::clone(&me);
                            tasks.spawn(async move { me.read(id).await });
                        }
                        Done::Warned(notice, sent) => {
                            if !sent {
                                scheduler.notice_not_sent(&notice);
                            }
                        }
                        Done::Unattended(ids) => {
                            looking = false;
                            let seen: HashSet<QueueId> = ids.iter().cloned().collect();
                            unattended.retain(|id, _| seen.contains(id));
                            for id in ids {
                                if scheduler.message(&id).is_some() {
                                    unattended.remove(&id);
                                    continue;
                                }
                                let first = *unattended.entry(id.clone()).or_insert(now);
                                if now.saturating_sub(first) >= patience {
                                    unattended.remove(&id);
                                    info!(queue_id = %id, "adopting a message no node is working on");
                                    let me = Arc::clone(&me);
                                    tasks.spawn(async move { me.read(id).await });
                                }
                            }
                        }
                    }
                }
                Some((id, report, reply)) = verdicts.recv() => {
                    let _ = reply.send(scheduler.pass_ended(&id, report, unix_now()));
                }
                Some(Ok(done)) = later.join_next(), if !later.is_empty() => match done {
                    Done::Loaded(id, Some(message)) => scheduler.submit(id, message, unix_now()),
                    Done::Loaded(id, None) => scheduler.remove(&id),
                    Done::Unreadable(id) => {
                        read_later(&mut later, &me, id);
                    }
                    // Only reads are put off.
                    _ => {}
                },
                Some(id) = rx.recv() => {
                    if scheduler.is_running(&id) {
                        stale.insert(id);
                    } else {
                        let me = Arc::clone(&me);
                        tasks.spawn(async move { me.read(id).await });
                    }
                }
                _ = sweep.tick() => {
                    if let Some(cache) = &cache {
                        cache.sweep().await;
                    }
                }
                _ = adopt.tick(), if shared && !looking => {
                    looking = true;
                    let me2 = Arc::clone(&me);
                    tasks.spawn(async move { me2.unattended().await });
                    // Held messages may have been released, delivered or
                    // deleted through another node meanwhile (its admin
                    // wakes only its own manager): read them again, a
                    // batch per look.
                    let held = scheduler.held(held_cursor.as_ref(), ADOPT_BATCH);
                    held_cursor = held.last().cloned();
                    for id in held {
                        let me = Arc::clone(&me);
                        tasks.spawn(async move { me.read(id).await });
                    }
                }
                _ = tokio::time::sleep(sleep) => {}
            }
        }
        // Running passes finish (their results are persisted); what is
        // left is resumed from the spool at the next start.
        later.abort_all();
        // Wait until the aborted tasks are gone: each holds the manager
        // (and so the spool and its lock), which a restart in the same
        // process must be able to take at once.
        while later.join_next().await.is_some() {}
        loop {
            tokio::select! {
                Some((id, report, reply)) = verdicts.recv() => {
                    let _ = reply.send(scheduler.pass_ended(&id, report, unix_now()));
                }
                next = tasks.join_next() => if next.is_none() { break },
            }
        }
        if let Some(cache) = &cache {
            cache.close_all().await;
        }
    }

    // -------------------------------------------------------- Queue access
    //
    // Every read and write of the queue by the driver goes through these,
    // and through the store's trait ([`QueueStore`]) except where the file
    // backend's spool is used directly for speed (streaming a queue file
    // to the next hop, local delivery through the group committer).

    /// Reads message `id` back for the scheduler: envelope, recipient
    /// states, hold flag and delay warnings sent, routed.
    async fn read(self: Arc<Self>, id: QueueId) -> Done {
        match self.queue.read_back(&id).await {
            Ok((envelope, state)) => {
                let message = ScheduledMessage::from_spool(&envelope, state, |r| self.route(r));
                Done::Loaded(id, Some(message))
            }
            Err(e) if e.is_not_found() => Done::Loaded(id, None),
            Err(e) => {
                warn!(queue_id = %id, error = %e, "cannot read a queued message; will retry");
                Done::Unreadable(id)
            }
        }
    }

    /// With a shared queue: the messages due for a while that nobody holds
    /// a lease on (a dead node's, once its leases expired), for the loop
    /// to adopt the ones its scheduler does not know.
    async fn unattended(self: Arc<Self>) -> Done {
        match self.queue.list_due(unix_now(), ADOPT_BATCH).await {
            Ok(due) => Done::Unattended(due.into_iter().map(|d| d.id).collect()),
            Err(e) => {
                warn!(error = %e, "cannot list the shared queue's due messages");
                Done::Unattended(Vec::new())
            }
        }
    }

    /// Opens message `id` for a pass: its envelope, its data and which
    /// recipients are final.
    async fn open(&self, id: &QueueId) -> Result<Option<Opened>, AnyStoreError> {
        let not_found = |e: AnyStoreError| if e.is_not_found() { Ok(None) } else { Err(e) };
        let (envelope, data, state) = match &self.queue {
            AnyStore::File(files) => {
                // The queue file is streamed to the next hop by path; its
                // state is read with the envelope in hand (one open).
                let (spool, id) = (files.spool().clone(), id.clone());
                let opened = tokio::task::spawn_blocking(move || {
                    let message = spool.open_message(&id)?;
                    let mut head = Vec::new();
                    std::io::Read::read_to_end(
                        &mut std::io::Read::take(message.reader()?, NOTICE_HEAD),
                        &mut head,
                    )
                    .map_err(|source| tern_queue::SpoolError::Io {
                        op: "read",
                        path: message.path().to_owned(),
                        source,
                    })?;
                    let data = QueuedData::File {
                        path: message.path().to_owned(),
                        len: message.data_len(),
                        head,
                    };
                    let state = spool.message_state(&id, message.envelope.recipients.len())?;
                    Ok::<_, tern_queue::SpoolError>((message.envelope, data, state))
                })
                .await
                .map_err(|e| AnyStoreError::File(FileStoreError::Task(e)))?;
                match opened {
                    Ok(opened) => opened,
                    Err(e) => return not_found(AnyStoreError::File(e.into())),
                }
            }
            queue => {
                let mut message = match queue.open(id).await {
                    Ok(m) => m,
                    Err(e) => return not_found(e),
                };
                let bytes = match message.body {
                    AnyBody::Postgres(bytes) => bytes.into_inner(),
                    ref mut body => {
                        let mut bytes = Vec::new();
                        std::io::Read::read_to_end(body, &mut bytes).map_err(|source| {
                            AnyStoreError::File(
                                tern_queue::SpoolError::Io {
                                    op: "read",
                                    path: std::path::PathBuf::from(id.as_str()),
                                    source,
                                }
                                .into(),
                            )
                        })?;
                        bytes
                    }
                };
                let state = match queue.message_state(id).await {
                    Ok(state) => state,
                    Err(e) => return not_found(e),
                };
                (message.envelope, QueuedData::Memory(bytes), state)
            }
        };
        let done = state
            .states
            .iter()
            .enumerate()
            .filter(|(_, s)| s.is_final())
            .map(|(i, _)| i)
            .collect();
        Ok(Some(Opened {
            held: state.held,
            done,
            data,
            envelope,
        }))
    }

    /// Delivers the Maildir recipients in `mailboxes` under `lease`; each
    /// one delivered is recorded as done before this returns. With the
    /// file backend, local delivery records and removes itself (see
    /// [`tern_delivery::local`]); with a shared queue the copies are
    /// written through this node's group committer and recorded here.
    async fn deliver_maildirs(
        &self,
        lease: &Lease,
        opened: &Opened,
        mailboxes: HashSet<String>,
    ) -> Result<LocalReport, String> {
        let (spool, store, hostname) = (
            self.spool.clone(),
            Arc::clone(&self.store),
            self.hostname.clone(),
        );
        let skip = move |mailbox: &str| !mailboxes.contains(mailbox);
        let delivered = match &self.queue {
            AnyStore::File(files) => {
                let spool_lease = files.spool_lease(lease).map_err(|e| e.to_string())?;
                tokio::task::spawn_blocking(move || {
                    deliver_local_leased(&spool, &store, &hostname, &spool_lease, &skip)
                        .map(|report| (report, Vec::new()))
                })
                .await
            }
            _ => {
                let QueuedData::Memory(bytes) = &opened.data else {
                    return Err("a shared queue's message is not in memory".to_owned());
                };
                let (id, envelope, bytes, done) = (
                    lease.id.clone(),
                    opened.envelope.clone(),
                    bytes.clone(),
                    opened.done.iter().copied().collect(),
                );
                tokio::task::spawn_blocking(move || {
                    tern_delivery::deliver_local_bytes(
                        &spool, &store, &hostname, &id, &envelope, &bytes, &done, &skip,
                    )
                })
                .await
            }
        };
        let (mut report, outcomes) = match delivered {
            Ok(Ok(done)) => done,
            Ok(Err(e)) => return Err(e.to_string()),
            Err(e) => return Err(format!("delivery task died: {e}")),
        };
        if !outcomes.is_empty() {
            // Written and durable; recorded now, under the lease. When that
            // fails the next pass finds each copy by its name.
            let now = unix_now();
            let states: Vec<(usize, RecipientState)> = outcomes
                .into_iter()
                .map(|(index, reply)| (index, RecipientState::Delivered { at: now, reply }))
                .collect();
            if let Err(e) = self.queue.record_states(lease, &states).await {
                warn!(queue_id = %lease.id, error = %e, "cannot record local deliveries; will look again");
                let error = tern_queue::LocalError::new(
                    tern_queue::LocalCause::Storage,
                    EnhancedStatus::new(4, 3, 0),
                    &e.to_string(),
                );
                let recorded: HashSet<usize> = states.iter().map(|(i, _)| *i).collect();
                report.delivered.retain(|(i, _)| !recorded.contains(i));
                for (index, _) in states {
                    let address = opened
                        .envelope
                        .recipients
                        .get(index)
                        .map_or_else(String::new, |r| r.address_text().into_owned());
                    report.deferred.push((index, address, error.clone()));
                }
            }
        }
        // IDLE sessions of the recipients see their new mail at once.
        for (_, mailbox) in &report.delivered {
            self.store.notify_external(mailbox);
        }
        Ok(report)
    }

    /// Records the recipients' new states under `lease`; `Ok(false)` when
    /// the message is no longer queued.
    async fn record(
        &self,
        lease: &Lease,
        states: Vec<(usize, RecipientState)>,
    ) -> Result<bool, ()> {
        if states.is_empty() {
            return Ok(true);
        }
        match self.queue.record_states(lease, &states).await {
            Ok(()) => Ok(true),
            Err(e) if e.is_not_found() => Ok(false),
            Err(e) => {
                warn!(queue_id = %lease.id, error = %e, "cannot record delivery results");
                Err(())
            }
        }
    }

    /// Removes the message of `lease` (every recipient final); when that
    /// fails, records `unrecorded` instead, so that a retry does not
    /// deliver again.
    async fn remove(&self, lease: &Lease, unrecorded: Vec<(usize, RecipientState)>) -> bool {
        match self.queue.remove(lease.clone()).await {
            Ok(()) => true,
            Err(e) => {
                warn!(queue_id = %lease.id, error = %e, "cannot remove a finished message");
                if !unrecorded.is_empty() {
                    let _ = self.queue.record_states(lease, &unrecorded).await;
                }
                false
            }
        }
    }

    /// Records that the delay warning in `notice` went out, under `lease`.
    async fn record_warned(&self, lease: &Lease, notice: &Notice) {
        if let Err(e) = self
            .queue
            .record_notices(lease, &notice.recipients, DELAY_NOTICE)
            .await
        {
            warn!(queue_id = %notice.id, error = %e, "cannot record that the delay warning was sent");
        }
    }

    /// The queue's lease on `id` for a pass, waiting up to a second for
    /// the end of the previous pass's bookkeeping or an admin command;
    /// `None` when another holder (an admin command, another node) keeps
    /// it.
    async fn wait_lease(&self, id: &QueueId) -> Leased {
        for _ in 0..50 {
            match self
                .queue
                .lease(id, unix_now(), self.lease_ttl.as_secs().max(1))
                .await
            {
                Ok(Some(lease)) => return Leased::Yes(lease),
                Ok(None) => {}
                Err(e) if e.is_not_found() => return Leased::Gone,
                Err(e) => {
                    warn!(queue_id = %id, error = %e, "cannot lease a queued message");
                    return Leased::No;
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Leased::No
    }

    /// Records the deliveries [`Early`] holds (see [`pass`](Self::pass))
    /// and then settles their connections; one that fails to record is
    /// left to the verdict's record, its connection held until then.
    async fn record_early(&self, lease: &Lease, early: &mut Early<'_>) {
        if !early.waiting.is_empty() {
            let states = std::mem::take(&mut early.waiting);
            match self.record(lease, states.clone()).await {
                Ok(true) => early.recorded.extend(states.iter().map(|(i, _)| *i)),
                Ok(false) => {}
                Err(()) => {
                    early.waiting = states;
                    return;
                }
            }
        }
        early.settle().await;
    }

    /// Keeps `lease` alive while `work` runs (renewed every third of its
    /// time): a slow delivery is not taken over by another node. When a
    /// renewal finds the lease taken over (this node stalled past its
    /// expiry), `lost` turns true and the pass starts nothing more.
    async fn renewing<T>(
        &self,
        lease: &Lease,
        lost: &AtomicBool,
        work: impl Future<Output = T>,
    ) -> T {
        let ttl = self.lease_ttl.as_secs().max(1);
        let mut tick = tokio::time::interval(Duration::from_secs(ttl.div_ceil(3)));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        tokio::pin!(work);
        loop {
            tokio::select! {
                out = &mut work => return out,
                _ = tick.tick() => {
                    if let Err(e) = self.queue.renew(lease, unix_now(), ttl).await {
                        warn!(queue_id = %lease.id, error = %e, "cannot renew a delivery lease");
                        if e.is_lease_lost() {
                            lost.store(true, Ordering::SeqCst);
                        }
                    }
                }
            }
        }
    }

    // -------------------------------------------------------- A pass

    /// One pass over `pass.id`: the attempts the scheduler asked for, its
    /// verdict on them ([`Scheduler::pass_ended`], asked through
    /// `verdicts`), then the verdict carried out — record, notices,
    /// removal — all under the spool's delivery lease.
    async fn pass(
        self: Arc<Self>,
        pass: Pass,
        verdicts: mpsc::UnboundedSender<Verdict>,
        handle: &DeliveryHandle,
        cache: Option<&ConnectionCache>,
    ) -> Done {
        let id = pass.id.clone();
        let lease = match self.wait_lease(&id).await {
            Leased::Yes(lease) => lease,
            Leased::Gone => {
                let report = PassReport {
                    gone: true,
                    ..PassReport::default()
                };
                let _ = self.verdict(&verdicts, &id, report).await;
                return Done::Finished(id, false);
            }
            // Another agent (the admin socket, another node) is working on it.
            Leased::No => return Done::Failed(id),
        };
        let lost = AtomicBool::new(false);
        let done = self
            .renewing(
                &lease,
                &lost,
                self.pass_leased(pass, &lease, &lost, &verdicts, handle, cache),
            )
            .await;
        if let Err(e) = self.queue.release(lease).await {
            warn!(queue_id = %id, error = %e, "cannot release a delivery lease");
        }
        done
    }

    /// [`pass`](Self::pass) once the lease is held.
    #[allow(clippy::too_many_arguments)]
    async fn pass_leased(
        &self,
        pass: Pass,
        lease: &Lease,
        lost: &AtomicBool,
        verdicts: &mpsc::UnboundedSender<Verdict>,
        handle: &DeliveryHandle,
        cache: Option<&ConnectionCache>,
    ) -> Done {
        let id = pass.id.clone();
        let mut report = PassReport::default();
        let opened = match self.open(&id).await {
            Ok(Some(opened)) => opened,
            Ok(None) => {
                report.gone = true;
                let _ = self.verdict(verdicts, &id, report).await;
                return Done::Finished(id, false);
            }
            Err(e) => {
                warn!(queue_id = %id, error = %e, "delivery failed; will retry");
                return Done::Failed(id);
            }
        };
        if opened.held {
            info!(queue_id = %id, "held meanwhile; nothing attempted");
            return Done::Changed(id);
        }
        let (envelope, data) = (&opened.envelope, &opened.data);
        let now = unix_now();
        let mut attempted = Attempted::default();
        let msg = outbound_message(envelope, data.message());
        let mut outdated = false;
        // Recipients the next hop took, recorded before the pass moves on
        // to another destination, so that a node dying later in the pass
        // (a slow remote domain) does not leave them to be delivered again;
        // the last destination's are recorded with the verdict. Until
        // then their connections are held (no QUIT).
        let mut early = Early::default();
        for mut group in pass.groups {
            if lost.load(Ordering::SeqCst) {
                // Another node holds the message now: what this pass
                // delivered is recorded if the store still lets us (it
                // does not, the lease being gone), nothing more is tried.
                self.record_early(lease, &mut early).await;
                warn!(queue_id = %id, "delivery lease taken over; this pass stops");
                return Done::Failed(id);
            }
            // The spool is the record: a recipient it has as final is done
            // (and the scheduler is told by reading the message again).
            let before = group.recipients.len();
            group.recipients.retain(|i| !opened.done.contains(i));
            outdated |= group.recipients.len() != before;
            if group.recipients.is_empty() {
                continue;
            }
            match &group.destination {
                Destination::Maildir => {
                    self.record_early(lease, &mut early).await;
                    let mailboxes = group
                        .recipients
                        .iter()
                        .filter_map(|&i| envelope.recipients.get(i)?.mailbox.clone())
                        .collect();
                    let local = match self.deliver_maildirs(lease, &opened, mailboxes).await {
                        Ok(local) => local,
                        Err(e) => {
                            warn!(queue_id = %id, error = %e, "delivery failed; will retry");
                            return Done::Failed(id);
                        }
                    };
                    log_local(&self.journal, &id, &local);
                    report
                        .stored
                        .extend(local.delivered.iter().map(|(index, _)| *index));
                    for (index, _, error) in &local.deferred {
                        report.results.push(RecipientReport {
                            index: *index,
                            result: AttemptResult::Deferred(Answer::Local(error.clone())),
                            dsn_passed_on: false,
                        });
                        attempted
                            .answers
                            .insert(*index, ("mailbox", None, error.to_string()));
                    }
                    report.gone = local.removed || local.skipped;
                }
                Destination::Lmtp(_) | Destination::Remote(_) if report.gone => {}
                Destination::Lmtp(domain) => {
                    let Some(target) = self.lmtp.get(domain) else {
                        continue;
                    };
                    self.record_early(lease, &mut early).await;
                    let rcpts: Vec<RemoteRecipient> = group
                        .recipients
                        .iter()
                        .filter_map(|&index| {
                            let r = envelope.recipients.get(index)?;
                            // Sent by its mailbox key (what Dovecot looks
                            // users up by).
                            let key = r.mailbox.as_ref()?;
                            let (address, unreadable) = match key_address(key) {
                                Ok(address) => (address, None),
                                Err(error) => (
                                    unreadable_placeholder(),
                                    Some(UnreadableAddress {
                                        text: key.clone(),
                                        error,
                                    }),
                                ),
                            };
                            Some(RemoteRecipient {
                                unreadable,
                                notify: r.notify,
                                orcpt: r.orcpt.clone(),
                                ..RemoteRecipient::new(index, address)
                            })
                        })
                        .collect();
                    let (done, open) = deliver_lmtp_unsettled(
                        target,
                        &self.outbound.helo_name,
                        &msg,
                        &rcpts,
                        &self.outbound.timeouts,
                    )
                    .instrument(info_span!("lmtp", queue_id = %id))
                    .await;
                    attempted.add("lmtp", &done, &mut report);
                    early.taken(&done, envelope.received_at, &self.schedule, now);
                    early.unsettled.push(open);
                }
                Destination::Remote(_) => {
                    let Some(resolver) = &self.resolver else {
                        // No remote delivery: the recipients wait.
                        continue;
                    };
                    let mut by_domain: BTreeMap<String, Vec<RemoteRecipient>> = BTreeMap::new();
                    for &index in &group.recipients {
                        let Some(r) = envelope.recipients.get(index) else {
                            continue;
                        };
                        // A stored address that no longer parses fails on
                        // its own, before any DNS (`""` is no host name).
                        let domain = match r.unreadable_address {
                            None => host_name(&r.address),
                            Some(_) => String::new(),
                        };
                        by_domain
                            .entry(domain)
                            .or_default()
                            .push(RemoteRecipient::queued(index, r));
                    }
                    let via = if self.outbound.smarthost.is_some() {
                        "smarthost"
                    } else {
                        "remote"
                    };
                    for (domain, rcpts) in by_domain {
                        self.record_early(lease, &mut early).await;
                        let seed =
                            now ^ (rcpts.len() as u64).rotate_left(17) ^ id.as_str().len() as u64;
                        let (done, open) = deliver_to_domain_unsettled(
                            &self.outbound,
                            resolver.as_ref(),
                            &domain,
                            &msg,
                            &rcpts,
                            seed,
                            cache,
                        )
                        // The driver's own log lines (connecting, TLS,
                        // replies) carry the queue id through this span.
                        .instrument(info_span!("outbound", queue_id = %id))
                        .await;
                        attempted.add(via, &done, &mut report);
                        early.taken(&done, envelope.received_at, &self.schedule, now);
                        early.unsettled.push(open);
                    }
                }
            }
        }
        let gone = report.gone;
        let Some(ended) = self.verdict(verdicts, &id, report).await else {
            return Done::Finished(id, false);
        };
        let reload = self
            .carry_out(
                lease,
                ended,
                &opened,
                &attempted,
                &early.recorded,
                gone,
                now,
                handle,
            )
            .await;
        // Recorded (or, if the store failed, as recorded as it will be).
        early.settle().await;
        if outdated && !reload && !gone {
            return Done::Outdated(id);
        }
        Done::Finished(id, reload)
    }

    /// Asks the loop for the scheduler's verdict on `report`; `None` when
    /// the loop is gone.
    async fn verdict(
        &self,
        verdicts: &mpsc::UnboundedSender<Verdict>,
        id: &QueueId,
        report: PassReport,
    ) -> Option<Ended> {
        let (tx, rx) = oneshot::channel();
        verdicts.send((id.clone(), report, tx)).ok()?;
        rx.await.ok()
    }

    /// Carries out the scheduler's verdict on a pass, in order: log and
    /// record the new states, queue the notices, remove the message when
    /// every recipient is final. Returns `true` when the spool could not
    /// be updated and the message must be read again later.
    #[allow(clippy::too_many_arguments)]
    async fn carry_out(
        &self,
        lease: &Lease,
        ended: Ended,
        opened: &Opened,
        attempted: &Attempted,
        recorded_early: &BTreeSet<usize>,
        gone: bool,
        now: u64,
        handle: &DeliveryHandle,
    ) -> bool {
        let id = &lease.id;
        let (envelope, data) = (&opened.envelope, &opened.data);
        for (index, state) in &ended.record {
            let Some(rcpt) = envelope.recipients.get(*index) else {
                continue;
            };
            let address = rcpt.address_text();
            match attempted.answers.get(index) {
                Some(("mailbox", ..)) => {
                    journal_state(&self.journal, id, &address, state, None, "mailbox")
                }
                Some((via, mta, _)) => {
                    log_remote(&self.journal, id, &address, state, mta.as_deref(), via)
                }
                None => log_remote(&self.journal, id, &address, state, None, "remote"),
            }
        }
        // When this pass delivered every recipient still open, removing
        // the message below records that (one directory fsync), so the
        // state records are not written only to be deleted. A crash
        // before the removal is durable repeats the delivery, exactly as a
        // crash between the next hop's 250 and a state record would.
        let finishes = ended.remove
            && !ended.record.is_empty()
            && ended
                .record
                .iter()
                .all(|(_, s)| matches!(s, RecipientState::Delivered { .. }));
        let unrecorded = if finishes {
            ended.record.clone()
        } else {
            let record = ended
                .record
                .iter()
                .filter(|(i, s)| {
                    !(recorded_early.contains(i) && matches!(s, RecipientState::Delivered { .. }))
                })
                .cloned()
                .collect();
            match self.record(lease, record).await {
                Ok(true) => {}
                Ok(false) => {
                    info!(queue_id = %id, "message left the queue during the attempt");
                    return false;
                }
                Err(()) => {
                    warn!(queue_id = %id, "cannot record delivery results; will retry");
                    return true;
                }
            }
            Vec::new()
        };
        for notice in &ended.notices {
            match notice.kind {
                NoticeKind::Failure => {
                    let updates: Vec<(usize, RecipientState)> = notice
                        .recipients
                        .iter()
                        .copied()
                        .zip(notice.states.iter().cloned())
                        .collect();
                    // The notice may return the whole message: read it now.
                    match data.read_all().await {
                        Ok(full) => self.bounce(id, envelope, &full, &updates, handle).await,
                        Err(e) => {
                            warn!(queue_id = %id, error = %e, "cannot read the message for its failure notice; sending the headers");
                            self.bounce(id, envelope, data.head(), &updates, handle)
                                .await;
                        }
                    }
                }
                NoticeKind::Success | NoticeKind::Relayed => {
                    let (kind, action) = if notice.kind == NoticeKind::Success {
                        (DsnKind::Success, DsnAction::Delivered)
                    } else {
                        (DsnKind::Relayed, DsnAction::Relayed)
                    };
                    let list = notice
                        .recipients
                        .iter()
                        .filter_map(|i| {
                            let rcpt = envelope.recipients.get(*i)?;
                            Some(match attempted.answers.get(i) {
                                Some((_, mta, reply)) => success_recipient(
                                    rcpt,
                                    action,
                                    mta.clone(),
                                    Some(reply.clone()),
                                    now,
                                ),
                                None => success_recipient(rcpt, action, None, None, now),
                            })
                        })
                        .collect();
                    self.notify(id, kind, envelope, data.head(), list, handle)
                        .await;
                }
                NoticeKind::Delay => {
                    if self
                        .delay_warning(id, envelope, data.head(), notice, now, handle)
                        .await
                    {
                        self.record_warned(lease, notice).await;
                    }
                }
            }
        }
        if gone || !ended.remove {
            return false;
        }
        if self.remove(lease, unrecorded).await {
            info!(queue_id = %id, "removed from queue: all recipients done");
            false
        } else {
            true
        }
    }

    /// A delay warning that came due without a pass: reads what it needs
    /// and sends it; `false` when it could not be queued.
    async fn warn_without_pass(&self, notice: &Notice, handle: &DeliveryHandle) -> bool {
        let lease = match self.wait_lease(&notice.id).await {
            Leased::Yes(lease) => lease,
            // Gone: nobody is owed anything any more.
            Leased::Gone => return true,
            Leased::No => return false,
        };
        let sent = self.warn_leased(&lease, notice, handle).await;
        if let Err(e) = self.queue.release(lease).await {
            warn!(queue_id = %notice.id, error = %e, "cannot release a delivery lease");
        }
        sent
    }

    /// [`warn_without_pass`](Self::warn_without_pass) under `lease`.
    async fn warn_leased(&self, lease: &Lease, notice: &Notice, handle: &DeliveryHandle) -> bool {
        let opened = match self.open(&notice.id).await {
            Ok(Some(opened)) => opened,
            // Gone: nobody is owed anything any more.
            Ok(None) => return true,
            Err(e) => {
                warn!(queue_id = %notice.id, error = %e, "cannot read the message for its delay warning");
                return false;
            }
        };
        let sent = self
            .delay_warning(
                &notice.id,
                &opened.envelope,
                opened.data.head(),
                notice,
                unix_now(),
                handle,
            )
            .await;
        if sent {
            self.record_warned(lease, notice).await;
        }
        sent
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
        let orig_id = id.clone();
        let signer = self.signer.current();
        let to = notice.to.to_string();
        // Signing is CPU work and the file backend's write blocks briefly,
        // as an SMTP session's does.
        let queued = queue_notice_in(&self.queue, &self.directory, &signer, notice).await;
        let (what, name) = match kind {
            DsnKind::Failure => ("failure notice (DSN) queued for the sender", "failure"),
            DsnKind::Delay => ("delay warning (DSN) queued for the sender", "delay"),
            DsnKind::Success => ("success notice (DSN) queued for the sender", "success"),
            DsnKind::Relayed => ("relayed notice (DSN) queued for the sender", "relayed"),
        };
        match queued {
            Ok(notice_id) => {
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

    /// Sends the delay warning `notice` chose; `false` when it could not be
    /// queued (it is owed again at the next look). Recording it is the
    /// caller's, after this returns `true`: a crash in between may repeat
    /// a warning, never lose one.
    async fn delay_warning(
        &self,
        id: &QueueId,
        envelope: &Envelope,
        original: &[u8],
        notice: &Notice,
        now: u64,
        handle: &DeliveryHandle,
    ) -> bool {
        let until = self.schedule.expires_at(envelope.received_at);
        let recipients: Vec<DsnRecipient> = notice
            .recipients
            .iter()
            .zip(&notice.states)
            .filter_map(|(&i, state)| Some((envelope.recipients.get(i)?, state)))
            .map(|(rcpt, state)| {
                let error = match state {
                    RecipientState::Deferred { last_error, .. } => last_error.clone(),
                    _ => String::new(),
                };
                DsnRecipient {
                    final_recipient: rcpt.address_text().into_owned(),
                    original: rcpt.orcpt.as_ref().map(ToString::to_string),
                    action: DsnAction::Delayed,
                    status: tern_types::reply::status_of(&error, 4).to_string(),
                    remote_mta: None,
                    diagnostic: (!error.is_empty()).then_some(error),
                    last_attempt: now,
                    will_retry_until: Some(until),
                }
            })
            .collect();
        match sender_notice(
            &self.hostname,
            id,
            DsnKind::Delay,
            envelope,
            original,
            recipients,
            now,
        ) {
            Some(dsn) => self.queue(id, dsn, DsnKind::Delay, handle).await,
            // The null sender, or nobody left: nothing to send.
            None => true,
        }
    }
}

/// The recipients of a message that are due a delay warning at `now`:
/// deferred (not final), not warned yet, asking for delay notices
/// (`NOTIFY` absent or naming `DELAY`), and past the warning time. The
/// warning time is `delay_warning_after` after arrival; a recipient that
/// asked with `NOTIFY=DELAY` when warnings are configured off gets one
/// after [`DEFAULT_DELAY_WARNING`]. No warning is due at or after the
/// expiry (the failure notice then says it all). Pure: the scheduler's
/// rule ([`tern_queue::delay_warnings_due`]) over a message as the spool
/// records it.
pub fn delay_warning_due(
    envelope: &Envelope,
    states: &[RecipientState],
    warned: &BTreeSet<usize>,
    schedule: &RetrySchedule,
    now: u64,
) -> Vec<usize> {
    let state = tern_queue::MessageState {
        states: states.to_vec(),
        held: false,
        notices: warned
            .iter()
            .map(|&i| (i, DELAY_NOTICE.to_owned()))
            .collect(),
    };
    let message = ScheduledMessage::from_spool(envelope, state, |_| Destination::Maildir);
    let config = SchedulerConfig {
        schedule: schedule.clone(),
        ..SchedulerConfig::default()
    };
    tern_queue::delay_warnings_due(&message, &config, now)
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
        final_recipient: rcpt.address_text().into_owned(),
        original: rcpt.orcpt.as_ref().map(ToString::to_string),
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
    let to = bounce_recipient(envelope)?.clone();
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
    pub to: Mailbox,
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
            final_recipient: rcpt.address_text().into_owned(),
            original: rcpt.orcpt.as_ref().map(ToString::to_string),
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
        Some(to) => to.clone(),
        None => {
            // A bounce that cannot be delivered goes to the local
            // postmaster once; if that fails too, it is dropped (logged).
            let postmaster = directory.postmaster().first().and_then(|t| match t {
                Target::Local { mailbox } => Some((mailbox.clone(), key_address(mailbox).ok()?)),
                Target::Remote { address } => Some((address.to_string(), address.clone())),
            });
            let already_for_postmaster = postmaster.as_ref().is_some_and(|(p, _)| {
                envelope
                    .recipients
                    .iter()
                    .all(|r| r.address_text().eq_ignore_ascii_case(p))
            });
            match postmaster {
                Some((p, address)) if !already_for_postmaster => {
                    warn!(queue_id = %id, failed = recipients.len(), postmaster = %p, "a bounce could not be delivered; reporting it to the postmaster");
                    address
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
    let (dsn, envelope) = notice_message(directory, signer, notice);
    let mut incoming = spool.create()?;
    incoming.write(&dsn)?;
    incoming.commit(&envelope)?.wait_blocking()
}

/// Commits `notice` to `queue` with the null sender and returns its queue
/// id; the caller announces it for delivery.
pub(crate) async fn queue_notice_in(
    queue: &AnyStore,
    directory: &Directory,
    signer: &Signer,
    notice: FailureNotice,
) -> Result<QueueId, AnyStoreError> {
    let (dsn, envelope) = notice_message(directory, signer, notice);
    let mut incoming = queue.create()?;
    incoming.write(&dsn)?;
    queue.commit(incoming, &envelope).await
}

/// A notice as it is queued: signed, and its envelope (the null sender,
/// one recipient routed by the directory).
fn notice_message(
    directory: &Directory,
    signer: &Signer,
    notice: FailureNotice,
) -> (Vec<u8>, Envelope) {
    let FailureNotice { dsn, to, now } = notice;
    let dsn = sign_notice(signer, dsn);
    let size = dsn.len() as u64;
    let envelope = Envelope {
        sender: ReversePath::Null,
        recipients: vec![notice_recipient(directory, to)],
        received_at: now,
        protocol: "LOCAL".to_owned(),
        body: BodyType::EightBitMime,
        size,
        ..Envelope::default()
    };
    (dsn, envelope)
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
fn notice_recipient(directory: &Directory, to: Mailbox) -> Recipient {
    let original = ForwardPath::Mailbox(to.clone());
    if let Resolution::Targets(targets) = directory.resolve(&original)
        && let Some(Target::Local { mailbox }) = targets.first()
    {
        let (address, unreadable_address) = match key_address(mailbox) {
            Ok(address) => (address, None),
            Err(error) => (
                unreadable_placeholder(),
                Some(UnreadableAddress {
                    text: mailbox.clone(),
                    error,
                }),
            ),
        };
        return Recipient {
            address,
            original,
            mailbox: Some(mailbox.clone()),
            unreadable_address,
            ..Recipient::new(to)
        };
    }
    Recipient::new(to)
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

/// Reads message `id` again after [`ERROR_RETRY`] (an unreadable message,
/// or one whose spool was ahead of the scheduler), in `later` (dropped at
/// shutdown).
fn read_later(later: &mut JoinSet<Done>, me: &Arc<QueueManager>, id: QueueId) {
    let me = Arc::clone(me);
    later.spawn(async move {
        tokio::time::sleep(ERROR_RETRY).await;
        me.read(id).await
    });
}

/// The domain of a remote address, lower-cased (`bob@Example.NET` →
/// `example.net`).
/// The host of `address` as a destination names it: the domain, or the
/// address literal (lower-cased).
fn host_name(address: &Mailbox) -> String {
    match &address.host {
        Host::Domain(d) => d.as_str().to_owned(),
        literal => literal.to_string().to_ascii_lowercase(),
    }
}

/// The queued message as the SMTP and LMTP clients take it.
fn outbound_message<'a>(envelope: &'a Envelope, data: MessageData<'a>) -> OutboundMessage<'a> {
    OutboundMessage {
        sender: &envelope.sender,
        body: envelope.body,
        smtputf8: envelope.smtputf8,
        ret: envelope.ret,
        envid: envelope.envid.as_ref(),
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
            sender: ReversePath::Mailbox("alice@example.test".parse().unwrap()),
            recipients: notify
                .iter()
                .enumerate()
                .map(|(i, n)| Recipient {
                    notify: n.map(|n| n.parse().unwrap()),
                    ..Recipient::new(format!("r{i}@remote.test").parse().unwrap())
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
        env.sender = ReversePath::Null;
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
}
