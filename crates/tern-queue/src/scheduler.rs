//! The queue's scheduler: which message is worked on when, at which
//! destination, and which notices its sender gets. A sans-IO core.
//!
//! The [`Scheduler`] holds, for every queued message, where each recipient
//! goes (its [`Destination`], decided once when the message is submitted),
//! what it asked to be told ([`Notify`]) and its [`RecipientState`]. From
//! that state and the time passed in as `now` (Unix seconds) it decides
//! everything the queue manager used to decide inside its event loop:
//!
//! * **when** — a recipient is due when it is pending or its deferral's
//!   `next_attempt` has come ([`RetrySchedule`]); a message wakes at the
//!   earliest of its recipients' times and of its delay-warning time;
//! * **where** — a pass groups the due recipients by destination; at most
//!   `concurrency` passes run at once and at most `per_destination` of
//!   them hold a slot at one destination (Maildir delivery takes none). A
//!   message whose destination is full is *parked*, holding nothing, and
//!   woken when that destination frees a slot, so a slow destination never
//!   starves the others;
//! * **what then** — [`Scheduler::pass_ended`] turns each
//!   [`AttemptResult`] into the next state ([`on_result`]: retry, expiry),
//!   and chooses the notices: a failure notice for newly failed or expired
//!   recipients that asked for one, a delay warning once per recipient past
//!   the warning time, a success ("delivered") or "relayed" notice for
//!   `NOTIFY=SUCCESS`. A message whose recipients are all final is to be
//!   removed.
//!
//! The call order, for the driver that owns the timers and the spool:
//!
//! 1. [`submit`](Scheduler::submit) each message found in the spool at
//!    start-up and each new one (its states as the spool records them);
//! 2. sleep until [`next_wakeup`](Scheduler::next_wakeup) (or a new message,
//!    an admin request, the end of a pass), then call
//!    [`due`](Scheduler::due)`(now)`: start its passes, queue its notices;
//! 3. when a pass is over, [`pass_ended`](Scheduler::pass_ended)`(id,
//!    report, now)`: record [`Ended::record`] durably *before* anything
//!    else, then send [`Ended::notices`], then remove the message if
//!    [`Ended::remove`]; go to 2. A pass that could not run at all (the
//!    spool could not be read) ends with
//!    [`pass_failed`](Scheduler::pass_failed).
//!
//! What this module must never do: read a clock, touch the disk or the
//! network, start a second pass on a message that has one running, let a
//! final state change (design invariant 7: [`on_result`] keeps final
//! states), choose a notice twice for one recipient and kind, or spin (a
//! pass that gave a recipient no result makes it wait `idle_retry`).

use std::collections::{BTreeMap, BTreeSet, HashMap};

use tern_types::dsn::Notify;

use crate::{AttemptResult, Envelope, MessageState, QueueId, RecipientState, RetrySchedule};
use crate::{Recipient, on_result};

/// The notice kind the spool records once a delay warning went out.
pub const DELAY_NOTICE: &str = "delay";

/// The delay-warning time for a recipient that asked for delay notices
/// explicitly (`NOTIFY=DELAY`) when the schedule's warnings are off: 4 hours.
pub const EXPLICIT_DELAY_WARNING: u64 = 4 * 3600;

/// Where a recipient is delivered. Decided once, when the message is
/// submitted (the directory and the configuration answer), and used by
/// every step after.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Destination {
    /// A local Maildir, written by this process; takes no slot.
    Maildir,
    /// A mailbox server over LMTP, named as its configuration names it.
    Lmtp(String),
    /// A remote domain's mail exchangers, or the smarthost: named by the
    /// key its connections are cached under.
    Remote(String),
}

impl ScheduledRecipient {
    /// The notices it gets: what it asked for, or [`Notify::DEFAULT`].
    pub fn wants(&self) -> Notify {
        self.notify.unwrap_or(Notify::DEFAULT)
    }
}

impl Destination {
    /// Whether passes to it count against `per_destination`.
    fn limited(&self) -> bool {
        !matches!(self, Destination::Maildir)
    }
}

/// One recipient as the scheduler sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScheduledRecipient {
    /// Where it goes.
    pub destination: Destination,
    /// The notices it asked for; `None` when it did not say (then
    /// [`Notify::DEFAULT`] applies).
    pub notify: Option<Notify>,
    /// Where it stands.
    pub state: RecipientState,
    /// A delay warning went out for it already.
    pub warned: bool,
}

/// A message as the scheduler sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScheduledMessage {
    /// When it was queued (Unix seconds): the retry schedule and the
    /// expiry count from here.
    pub received_at: u64,
    /// The envelope sender is `<>`: no delay, success or relayed notice
    /// (never a report about a report; failures go to the postmaster).
    pub null_sender: bool,
    /// Held by the administrator: no pass, no warning until released.
    pub held: bool,
    /// Its recipients, in envelope order (the index is the spool's).
    pub recipients: Vec<ScheduledRecipient>,
}

impl ScheduledMessage {
    /// The message as the spool records it: its envelope, its state file
    /// (states, hold flag, the delay warnings sent), and `route` deciding
    /// each recipient's destination. NOTIFY is read by [`Notify::parse`]
    /// (a stored value it refuses, which Tern never writes, counts as none).
    pub fn from_spool(
        envelope: &Envelope,
        state: MessageState,
        route: impl Fn(&Recipient) -> Destination,
    ) -> ScheduledMessage {
        let mut states = state.states.into_iter();
        let recipients = envelope
            .recipients
            .iter()
            .enumerate()
            .map(|(index, rcpt)| ScheduledRecipient {
                destination: route(rcpt),
                notify: rcpt.notify,
                state: states.next().unwrap_or(RecipientState::Pending),
                warned: state.notices.contains(&(index, DELAY_NOTICE.to_owned())),
            })
            .collect();
        ScheduledMessage {
            received_at: envelope.received_at,
            null_sender: envelope.is_null_sender(),
            held: state.held,
            recipients,
        }
    }
}

/// How the scheduler is configured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SchedulerConfig {
    /// Retries, expiry, delay warnings.
    pub schedule: RetrySchedule,
    /// Passes running at once (at least 1).
    pub concurrency: usize,
    /// Passes holding a slot at one destination at once (at least 1).
    pub per_destination: usize,
    /// How long a recipient that a pass gave no result waits before the
    /// next look (seconds, at least 1): remote delivery switched off, or a
    /// pass that could not run.
    pub idle_retry: u64,
}

impl Default for SchedulerConfig {
    /// The default schedule, 8 passes, 2 per destination, 60 s idle retry.
    fn default() -> SchedulerConfig {
        SchedulerConfig {
            schedule: RetrySchedule::default(),
            concurrency: 8,
            per_destination: 2,
            idle_retry: 60,
        }
    }
}

/// Work to start now on one message: for each destination with a free
/// slot, the recipients due there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pass {
    /// The message.
    pub id: QueueId,
    /// One group per destination, in [`Destination`] order.
    pub groups: Vec<Group>,
}

/// The recipients of one message due at one destination.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Group {
    /// Where.
    pub destination: Destination,
    /// Their indices in the envelope, ascending.
    pub recipients: Vec<usize>,
}

/// A notice the sender of a message is owed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notice {
    /// The message reported on.
    pub id: QueueId,
    /// Which notice.
    pub kind: NoticeKind,
    /// The recipients it reports.
    pub recipients: Vec<usize>,
    /// Their states when the notice was chosen, in the same order (the
    /// last error a delay warning quotes, the reply a failure notice
    /// reports).
    pub states: Vec<RecipientState>,
}

/// The kinds of delivery status notification (RFC 3464).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum NoticeKind {
    /// Failed or expired recipients.
    Failure,
    /// Still undelivered past the warning time.
    Delay,
    /// Delivered to the mailbox (Maildir, LMTP).
    Success,
    /// Handed to a next hop that does not carry the DSN request on.
    Relayed,
}

/// What [`Scheduler::due`] found at `now`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Due {
    /// Passes to start.
    pub passes: Vec<Pass>,
    /// Delay warnings that came due without a pass. Once each is queued,
    /// record it ([`DELAY_NOTICE`]) so that a restart does not repeat it;
    /// one that could not be queued goes back with
    /// [`Scheduler::notice_not_sent`].
    pub notices: Vec<Notice>,
}

/// What one pass reports.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PassReport {
    /// One result per recipient attempted (LMTP, remote, or a local
    /// delivery that failed).
    pub results: Vec<RecipientReport>,
    /// Recipients written to their Maildir by the pass, which recorded
    /// them itself (local delivery records its own, see
    /// `tern_delivery::local`).
    pub stored: Vec<usize>,
    /// The message left the spool during the pass (every recipient done
    /// by local delivery, or deleted by the administrator).
    pub gone: bool,
}

/// One recipient's result in a [`PassReport`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecipientReport {
    /// Its index in the envelope.
    pub index: usize,
    /// How the attempt ended.
    pub result: AttemptResult,
    /// The next hop took the DSN request along (it reports from now on,
    /// so no "relayed" notice is due). Meaningless for failures.
    pub dsn_passed_on: bool,
}

/// What to do once a pass is over, in this order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ended {
    /// New recipient states to record durably before anything else.
    pub record: Vec<(usize, RecipientState)>,
    /// Notices to send, failures first.
    pub notices: Vec<Notice>,
    /// Every recipient is final: remove the message from the spool.
    pub remove: bool,
}

#[derive(Debug)]
struct Entry {
    message: ScheduledMessage,
    /// Its place in the timeline, when it has one.
    wake: Option<u64>,
    /// Pending recipients wait until then (set when a pass gave them no
    /// result).
    pending_after: u64,
    /// The destinations whose slots its running pass holds.
    running: Option<Vec<Destination>>,
    /// Removed by the administrator while its pass ran: forgotten when the
    /// pass ends.
    removed: bool,
}

/// The scheduler. See the [module documentation](self) for the call order.
#[derive(Debug)]
pub struct Scheduler {
    config: SchedulerConfig,
    entries: HashMap<QueueId, Entry>,
    timeline: BTreeSet<(u64, QueueId)>,
    busy: HashMap<Destination, usize>,
    parked: BTreeMap<Destination, BTreeSet<QueueId>>,
    running: usize,
}

impl Scheduler {
    /// An empty scheduler.
    pub fn new(config: SchedulerConfig) -> Scheduler {
        Scheduler {
            config: SchedulerConfig {
                concurrency: config.concurrency.max(1),
                per_destination: config.per_destination.max(1),
                idle_retry: config.idle_retry.max(1),
                ..config
            },
            entries: HashMap::new(),
            timeline: BTreeSet::new(),
            busy: HashMap::new(),
            parked: BTreeMap::new(),
            running: 0,
        }
    }

    /// The configuration in use.
    pub fn config(&self) -> &SchedulerConfig {
        &self.config
    }

    /// Messages known (queued, running or parked).
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// No message is known.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Passes running now.
    pub fn running(&self) -> usize {
        self.running
    }

    /// Passes holding a slot at `destination` now.
    pub fn busy(&self, destination: &Destination) -> usize {
        self.busy.get(destination).copied().unwrap_or(0)
    }

    /// Whether a pass on `id` is running (a [`submit`](Self::submit) of it
    /// is ignored until the pass ends).
    pub fn is_running(&self, id: &QueueId) -> bool {
        self.entries.get(id).is_some_and(|e| e.running.is_some())
    }

    /// The scheduler's view of message `id`.
    pub fn message(&self, id: &QueueId) -> Option<&ScheduledMessage> {
        self.entries.get(id).map(|e| &e.message)
    }

    /// A message entered the queue, or was found in the spool at start-up
    /// (its recipients' states as recorded there). Submitting a message
    /// already known replaces what the scheduler knew of it (the spool
    /// changed behind its back: `tern queue` commands) unless a pass is
    /// running on it, whose end will bring the news.
    ///
    /// Deferred Maildir recipients of a submitted message are due at once:
    /// a local failure (a full disk, a blocked path) is ours to fix, and a
    /// restart or a flush is how the administrator says it is fixed.
    pub fn submit(&mut self, id: QueueId, mut message: ScheduledMessage, now: u64) {
        if self.entries.get(&id).is_some_and(|e| e.running.is_some()) {
            return;
        }
        for r in &mut message.recipients {
            if let (Destination::Maildir, RecipientState::Deferred { next_attempt, .. }) =
                (&r.destination, &mut r.state)
            {
                *next_attempt = (*next_attempt).min(now);
            }
        }
        self.forget(&id);
        self.entries.insert(
            id.clone(),
            Entry {
                message,
                wake: None,
                pending_after: 0,
                running: None,
                removed: false,
            },
        );
        self.reschedule(&id, now);
    }

    /// The earliest time [`due`](Self::due) has something to do, if any:
    /// the driver sleeps until then (or until a new message, an admin
    /// request or the end of a pass).
    pub fn next_wakeup(&self) -> Option<u64> {
        self.timeline.first().map(|(at, _)| *at)
    }

    /// The work due at `now`: passes to start (as many as `concurrency`
    /// and the destinations' slots allow, oldest due first) and delay
    /// warnings that came due. The passes hold their slots until
    /// [`pass_ended`](Self::pass_ended) or [`pass_failed`](Self::pass_failed).
    pub fn due(&mut self, now: u64) -> Due {
        let mut due = Due::default();
        let mut skipped = Vec::new();
        while self.running < self.config.concurrency {
            let Some((at, id)) = self.timeline.first().cloned() else {
                break;
            };
            if at > now {
                break;
            }
            self.timeline.remove(&(at, id.clone()));
            // Looked at now: parked nowhere until a destination turns out
            // full again (a stale parking would hide its recipients there).
            self.unpark(&id);
            let Some(entry) = self.entries.get_mut(&id) else {
                continue;
            };
            entry.wake = None;
            if let Some(notice) = delay_warning(&id, &mut entry.message, &self.config, now) {
                due.notices.push(notice);
            }
            let groups = due_groups(entry, now);
            let mut start = Vec::new();
            let mut full = Vec::new();
            for group in groups {
                let free = !group.destination.limited()
                    || self.busy.get(&group.destination).copied().unwrap_or(0)
                        < self.config.per_destination;
                if free {
                    if group.destination.limited() {
                        *self.busy.entry(group.destination.clone()).or_insert(0) += 1;
                    }
                    start.push(group);
                } else {
                    full.push(group.destination);
                }
            }
            for destination in full {
                self.parked
                    .entry(destination)
                    .or_default()
                    .insert(id.clone());
            }
            if start.is_empty() {
                // Parked (a free slot wakes it) or only a warning was due.
                skipped.push(id);
                continue;
            }
            entry.running = Some(start.iter().map(|g| g.destination.clone()).collect());
            self.running += 1;
            due.passes.push(Pass { id, groups: start });
        }
        for id in skipped {
            self.reschedule(&id, now.saturating_add(1));
        }
        due
    }

    /// A pass on `id` is over: `report` says what happened. Frees its
    /// slots (waking messages parked on them), computes the recipients'
    /// next states and the notices, and schedules the message's next
    /// pass. The caller records [`Ended::record`] before anything else.
    pub fn pass_ended(&mut self, id: &QueueId, report: PassReport, now: u64) -> Ended {
        let held_slots = self.end_pass(id, now);
        let Some(entry) = self.entries.get_mut(id) else {
            return Ended::default();
        };
        if entry.removed {
            self.forget(id);
            return Ended::default();
        }
        let message = &mut entry.message;
        let mut ended = Ended::default();
        let mut failed = Vec::new();
        let mut delivered = Vec::new();
        let mut relayed = Vec::new();
        for &index in &report.stored {
            if let Some(rcpt) = message.recipients.get_mut(index) {
                if !rcpt.state.is_final() {
                    rcpt.state = RecipientState::Delivered {
                        at: now,
                        reply: String::new(),
                    };
                }
                if rcpt.wants().success() {
                    delivered.push(index);
                }
            }
        }
        if report.gone {
            // Local delivery removed it (everyone done), or the
            // administrator did: only the success notice is left to send.
            let notices = if message.null_sender || delivered.is_empty() {
                Vec::new()
            } else {
                vec![notice(id, NoticeKind::Success, delivered, message)]
            };
            self.forget(id);
            return Ended {
                notices,
                ..Ended::default()
            };
        }
        let mut answered = BTreeSet::new();
        for r in &report.results {
            let Some(rcpt) = message.recipients.get_mut(r.index) else {
                continue;
            };
            if rcpt.state.is_final() || !answered.insert(r.index) {
                continue;
            }
            let next = on_result(
                &rcpt.state,
                &r.result,
                &self.config.schedule,
                message.received_at,
                now,
            );
            match &next {
                RecipientState::Failed { .. } | RecipientState::Expired { .. }
                    if rcpt.wants().failure() =>
                {
                    failed.push(r.index);
                }
                RecipientState::Delivered { .. } if rcpt.wants().success() => {
                    match (&rcpt.destination, r.dsn_passed_on) {
                        (Destination::Remote(_), false) => relayed.push(r.index),
                        (Destination::Remote(_), true) => {}
                        _ => delivered.push(r.index),
                    }
                }
                _ => {}
            }
            rcpt.state = next.clone();
            ended.record.push((r.index, next));
        }
        // Pending recipients the pass was to attempt but gave no result
        // (remote delivery off, say) wait `idle_retry`.
        let attempted_without_result = message.recipients.iter().enumerate().any(|(i, r)| {
            matches!(r.state, RecipientState::Pending)
                && held_slots.contains(&r.destination)
                && !answered.contains(&i)
                && !report.stored.contains(&i)
        });
        if attempted_without_result {
            entry.pending_after = now.saturating_add(self.config.idle_retry);
        }
        if !failed.is_empty() {
            ended
                .notices
                .push(notice(id, NoticeKind::Failure, failed, message));
        }
        if !message.null_sender {
            for (kind, list) in [
                (NoticeKind::Success, delivered),
                (NoticeKind::Relayed, relayed),
            ] {
                if !list.is_empty() {
                    ended.notices.push(notice(id, kind, list, message));
                }
            }
        }
        if !message.held
            && let Some(notice) = delay_warning(id, message, &self.config, now)
        {
            ended.notices.push(notice);
        }
        ended.remove = message.recipients.iter().all(|r| r.state.is_final());
        if ended.remove {
            self.forget(id);
        } else {
            self.reschedule(id, now);
        }
        ended
    }

    /// A pass on `id` could not run (the spool could not be read, the
    /// results could not be recorded): frees its slots and looks at the
    /// message again after `idle_retry`. What the scheduler knew of its
    /// recipients is kept; [`submit`](Self::submit) replaces it.
    pub fn pass_failed(&mut self, id: &QueueId, now: u64) {
        self.end_pass(id, now);
        if let Some(entry) = self.entries.get_mut(id) {
            let at = now.saturating_add(self.config.idle_retry);
            entry.pending_after = at;
            self.timeline_remove(id);
            if let Some(entry) = self.entries.get_mut(id) {
                entry.wake = Some(at);
            }
            self.timeline.insert((at, id.clone()));
        }
    }

    /// A delay warning from [`Due::notices`] or [`Ended::notices`] could
    /// not be queued: it is owed again at the next look.
    pub fn notice_not_sent(&mut self, notice: &Notice) {
        if notice.kind != NoticeKind::Delay {
            return;
        }
        if let Some(entry) = self.entries.get_mut(&notice.id) {
            for &i in &notice.recipients {
                if let Some(r) = entry.message.recipients.get_mut(i) {
                    r.warned = false;
                }
            }
        }
    }

    /// Hold (`true`) or release (`false`) message `id` (`tern queue
    /// hold|release`): a held message gets no pass and no warning; a
    /// released one is looked at `now`.
    pub fn set_held(&mut self, id: &QueueId, held: bool, now: u64) {
        if let Some(entry) = self.entries.get_mut(id) {
            entry.message.held = held;
            if !held {
                entry.pending_after = 0;
            }
            if entry.running.is_none() {
                self.reschedule(id, now);
            }
        }
    }

    /// Up to `limit` held messages, in id order, starting after `after`
    /// (from the first when `None`, and wrapping around): with a shared
    /// queue the driver reads them again now and then, since another node
    /// may have released, delivered or deleted them meanwhile.
    pub fn held(&self, after: Option<&QueueId>, limit: usize) -> Vec<QueueId> {
        let mut held: Vec<&QueueId> = self
            .entries
            .iter()
            .filter(|(_, e)| e.message.held && e.running.is_none())
            .map(|(id, _)| id)
            .collect();
        held.sort();
        let start = after.map_or(0, |a| held.partition_point(|id| *id <= a));
        held.iter()
            .cycle()
            .skip(start)
            .take(limit.min(held.len()))
            .map(|id| (*id).clone())
            .collect()
    }

    /// Look at message `id` now, pending recipients included (`tern queue
    /// flush`); deferred recipients keep their schedule unless the spool's
    /// states are reset and the message [`submit`](Self::submit)ted again.
    pub fn flush(&mut self, id: &QueueId, now: u64) {
        if let Some(entry) = self.entries.get_mut(id) {
            entry.pending_after = 0;
            if entry.running.is_none() && !entry.message.held {
                self.timeline_remove(id);
                if let Some(entry) = self.entries.get_mut(id) {
                    entry.wake = Some(now);
                }
                self.timeline.insert((now, id.clone()));
            }
        }
    }

    /// Forget message `id` (deleted or bounced by the administrator). A
    /// running pass keeps its slots until it ends.
    pub fn remove(&mut self, id: &QueueId) {
        match self.entries.get_mut(id) {
            // Its end frees the slots; then it is forgotten.
            Some(entry) if entry.running.is_some() => entry.removed = true,
            _ => self.forget(id),
        }
    }

    /// Ends the running pass of `id`: frees its slots and returns the
    /// destinations it held.
    fn end_pass(&mut self, id: &QueueId, now: u64) -> Vec<Destination> {
        let Some(held) = self.entries.get_mut(id).and_then(|e| e.running.take()) else {
            return Vec::new();
        };
        self.running = self.running.saturating_sub(1);
        self.release(held.iter(), now);
        held
    }

    fn forget(&mut self, id: &QueueId) {
        self.timeline_remove(id);
        self.unpark(id);
        self.entries.remove(id);
    }

    fn unpark(&mut self, id: &QueueId) {
        for ids in self.parked.values_mut() {
            ids.remove(id);
        }
        self.parked.retain(|_, ids| !ids.is_empty());
    }

    fn timeline_remove(&mut self, id: &QueueId) {
        if let Some(at) = self.entries.get_mut(id).and_then(|e| e.wake.take()) {
            self.timeline.remove(&(at, id.clone()));
        }
    }

    /// Frees the slots of a pass and wakes as many messages parked on each
    /// destination as it has free slots (not all: a thousand messages
    /// parked on one busy domain are not all looked at each time).
    fn release<'a>(&mut self, destinations: impl Iterator<Item = &'a Destination>, now: u64) {
        let mut freed = Vec::new();
        for d in destinations {
            if !d.limited() {
                continue;
            }
            if let Some(n) = self.busy.get_mut(d) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    self.busy.remove(d);
                }
            }
            freed.push(d.clone());
        }
        for d in freed {
            let free = self
                .config
                .per_destination
                .saturating_sub(self.busy.get(&d).copied().unwrap_or(0));
            let Some(ids) = self.parked.get_mut(&d) else {
                continue;
            };
            let wake: Vec<QueueId> = ids.iter().take(free).cloned().collect();
            for id in &wake {
                ids.remove(id);
            }
            if ids.is_empty() {
                self.parked.remove(&d);
            }
            for id in wake {
                if self.entries.get(&id).is_some_and(|e| e.running.is_none()) {
                    self.timeline_remove(&id);
                    if let Some(entry) = self.entries.get_mut(&id) {
                        entry.wake = Some(now);
                    }
                    self.timeline.insert((now, id));
                }
            }
        }
    }

    /// Puts `id` on the timeline at its next wake time at or after `now`
    /// (or takes it off). Recipients due at a destination the message is
    /// parked on do not count: a free slot there wakes it.
    fn reschedule(&mut self, id: &QueueId, now: u64) {
        self.timeline_remove(id);
        let parked: BTreeSet<&Destination> = self
            .parked
            .iter()
            .filter(|(_, ids)| ids.contains(id))
            .map(|(d, _)| d)
            .collect();
        let Some(entry) = self.entries.get_mut(id) else {
            return;
        };
        if let Some(at) = wake_at(entry, &self.config, &parked, now) {
            entry.wake = Some(at);
            self.timeline.insert((at, id.clone()));
        }
    }
}

/// The recipients of `entry` due at `now`, grouped by destination.
fn due_groups(entry: &Entry, now: u64) -> Vec<Group> {
    if entry.message.held {
        return Vec::new();
    }
    let mut groups: BTreeMap<&Destination, Vec<usize>> = BTreeMap::new();
    for (index, rcpt) in entry.message.recipients.iter().enumerate() {
        let due = match &rcpt.state {
            RecipientState::Pending => entry.pending_after <= now,
            other => other.is_due(now),
        };
        if due {
            groups.entry(&rcpt.destination).or_default().push(index);
        }
    }
    groups
        .into_iter()
        .map(|(destination, recipients)| Group {
            destination: destination.clone(),
            recipients,
        })
        .collect()
}

/// When `entry` next has something to do at or after `now`: the earliest
/// due time of its open recipients and of its delay warning; `None` when
/// held or when nothing is left.
fn wake_at(
    entry: &Entry,
    config: &SchedulerConfig,
    parked: &BTreeSet<&Destination>,
    now: u64,
) -> Option<u64> {
    if entry.message.held {
        return None;
    }
    let attempts = entry
        .message
        .recipients
        .iter()
        .filter(|r| !parked.contains(&r.destination))
        .filter_map(|r| match &r.state {
            RecipientState::Pending => Some(entry.pending_after.max(now)),
            RecipientState::Deferred { next_attempt, .. } => Some((*next_attempt).max(now)),
            _ => None,
        });
    let warning = delay_warning_time(&entry.message, config)
        .into_iter()
        .map(|at| at.max(now));
    attempts.chain(warning).min()
}

/// When the next delay warning of `message` is due: the earliest warning
/// time of its deferred, not yet warned recipients that want one.
fn delay_warning_time(message: &ScheduledMessage, config: &SchedulerConfig) -> Option<u64> {
    if message.null_sender {
        return None;
    }
    message
        .recipients
        .iter()
        .filter_map(|r| warning_at(message, r, config))
        .min()
}

/// When recipient `r` of `message` is owed a delay warning, if ever:
/// deferred, not warned yet, asking for delay notices, before the expiry
/// (the failure notice then says it all). The warning time is the
/// schedule's `delay_warning_after` after arrival; a recipient that asked
/// for `DELAY` explicitly when warnings are off gets one after
/// [`EXPLICIT_DELAY_WARNING`].
fn warning_at(
    message: &ScheduledMessage,
    r: &ScheduledRecipient,
    config: &SchedulerConfig,
) -> Option<u64> {
    if r.warned || !matches!(r.state, RecipientState::Deferred { .. }) || !r.wants().delay() {
        return None;
    }
    let schedule = &config.schedule;
    let expiry = schedule.expires_at(message.received_at);
    let explicit = r.notify.is_some_and(Notify::delay);
    let at = schedule
        .delay_warning_at(message.received_at)
        .or_else(|| explicit.then(|| message.received_at.saturating_add(EXPLICIT_DELAY_WARNING)))?;
    (at < expiry).then_some(at)
}

/// The delay warning `message` is owed at `now`, marking its recipients
/// warned; `None` when none is (or the message is held).
fn delay_warning(
    id: &QueueId,
    message: &mut ScheduledMessage,
    config: &SchedulerConfig,
    now: u64,
) -> Option<Notice> {
    if message.held || message.null_sender {
        return None;
    }
    let due = delay_warnings_due(message, config, now);
    if due.is_empty() {
        return None;
    }
    for &i in &due {
        message.recipients[i].warned = true;
    }
    Some(notice(id, NoticeKind::Delay, due, message))
}

fn notice(
    id: &QueueId,
    kind: NoticeKind,
    recipients: Vec<usize>,
    message: &ScheduledMessage,
) -> Notice {
    let states = recipients
        .iter()
        .map(|&i| {
            message
                .recipients
                .get(i)
                .map_or(RecipientState::Pending, |r| r.state.clone())
        })
        .collect();
    Notice {
        id: id.clone(),
        kind,
        recipients,
        states,
    }
}

/// The recipients of `message` owed a delay warning at `now` (see the
/// module documentation): deferred, not warned yet, asking for delay
/// notices, past their warning time and before the expiry. Pure.
pub fn delay_warnings_due(
    message: &ScheduledMessage,
    config: &SchedulerConfig,
    now: u64,
) -> Vec<usize> {
    if now >= config.schedule.expires_at(message.received_at) {
        return Vec::new();
    }
    (0..message.recipients.len())
        .filter(|&i| {
            warning_at(message, &message.recipients[i], config).is_some_and(|at| at <= now)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use tern_types::{EnhancedStatus, ServerReply};

    use super::*;
    use crate::{Answer, LocalCause, LocalError};

    const T0: u64 = 1_700_000_000;
    const MIN: u64 = 60;
    const HOUR: u64 = 3600;
    const DAY: u64 = 86_400;

    fn id(n: usize) -> QueueId {
        format!("{n:016}").parse().unwrap()
    }

    fn reply(text: &str) -> ServerReply {
        text.parse().unwrap()
    }

    fn rcpt(destination: Destination, notify: Option<&str>) -> ScheduledRecipient {
        ScheduledRecipient {
            destination,
            notify: notify.map(|n| Notify::parse(n).unwrap()),
            state: RecipientState::Pending,
            warned: false,
        }
    }

    fn message(recipients: Vec<ScheduledRecipient>) -> ScheduledMessage {
        ScheduledMessage {
            received_at: T0,
            null_sender: false,
            held: false,
            recipients,
        }
    }

    fn remote(domain: &str) -> Destination {
        Destination::Remote(domain.to_owned())
    }

    fn report(results: Vec<(usize, AttemptResult)>) -> PassReport {
        PassReport {
            results: results
                .into_iter()
                .map(|(index, result)| RecipientReport {
                    index,
                    result,
                    dsn_passed_on: true,
                })
                .collect(),
            ..PassReport::default()
        }
    }

    fn deferred() -> AttemptResult {
        AttemptResult::Deferred(Answer::Server(reply("451 4.4.1 try later")))
    }

    /// Five days of a destination that always defers, on the virtual clock:
    /// attempts at 0, 5m, 15m, 35m, 75m, then hourly, the last exactly at
    /// the expiry; one delay warning at 4 h (to the recipients that want
    /// one), one failure notice at 5 d, then the message is removed.
    #[test]
    fn five_days_of_retries_to_expiry() {
        let started = Instant::now();
        let mut s = Scheduler::new(SchedulerConfig::default());
        s.submit(
            id(1),
            message(vec![
                rcpt(remote("slow.test"), None),
                rcpt(remote("slow.test"), Some("NEVER")),
                rcpt(remote("slow.test"), Some("SUCCESS")),
            ]),
            T0,
        );
        let mut attempts = Vec::new();
        let mut notices = Vec::new();
        let mut removed_at = None;
        while let Some(now) = s.next_wakeup() {
            let due = s.due(now);
            notices.extend(due.notices.into_iter().map(|n| (now, n)));
            for pass in due.passes {
                assert_eq!(pass.groups.len(), 1);
                assert_eq!(pass.groups[0].recipients, [0, 1, 2]);
                attempts.push(now - T0);
                let results = (0..3).map(|i| (i, deferred())).collect();
                let ended = s.pass_ended(&pass.id, report(results), now);
                assert_eq!(ended.record.len(), 3);
                notices.extend(ended.notices.into_iter().map(|n| (now, n)));
                if ended.remove {
                    removed_at = Some(now);
                    assert!(ended.record.iter().all(|(_, st)| matches!(
                        st,
                        RecipientState::Expired { last_error, .. } if last_error == "451 4.4.1 try later"
                    )));
                }
            }
            assert!(attempts.len() < 1000, "never expires");
        }
        assert_eq!(
            attempts[..6],
            [0, 5 * MIN, 15 * MIN, 35 * MIN, 75 * MIN, 135 * MIN]
        );
        assert!(attempts.windows(2).skip(4).all(|w| w[1] - w[0] <= HOUR));
        assert_eq!(attempts.last(), Some(&(5 * DAY)));
        assert_eq!(attempts.len(), 5 + 118 + 1);
        assert_eq!(removed_at, Some(T0 + 5 * DAY));
        // The warning at exactly 4 h, to the default NOTIFY only (NEVER
        // and SUCCESS-only do not want one); the failure notice at 5 d.
        let summary: Vec<(u64, NoticeKind, Vec<usize>)> = notices
            .into_iter()
            .map(|(at, n)| (at - T0, n.kind, n.recipients))
            .collect();
        assert_eq!(
            summary,
            [
                (4 * HOUR, NoticeKind::Delay, vec![0]),
                (5 * DAY, NoticeKind::Failure, vec![0]),
            ]
        );
        assert!(s.is_empty() && s.next_wakeup().is_none());
        assert!(started.elapsed().as_millis() < 1000);
    }

    /// Notices follow the result and NOTIFY: a failure notice for a 5xx,
    /// "delivered" for LMTP and Maildir, "relayed" only when the next hop
    /// does not carry the DSN request on; none of the courtesy ones to
    /// the null sender.
    #[test]
    fn notices_are_chosen_by_result_and_notify() {
        let mut s = Scheduler::new(SchedulerConfig::default());
        let lmtp = Destination::Lmtp("unix:/run/lmtp".into());
        s.submit(
            id(1),
            message(vec![
                rcpt(remote("a.test"), None),
                rcpt(remote("a.test"), Some("SUCCESS")),
                rcpt(remote("b.test"), Some("SUCCESS")),
                rcpt(lmtp.clone(), Some("SUCCESS,FAILURE")),
                rcpt(Destination::Maildir, Some("SUCCESS")),
                rcpt(remote("a.test"), Some("DELAY")),
            ]),
            T0,
        );
        let due = s.due(T0);
        let groups: Vec<(Destination, Vec<usize>)> = due.passes[0]
            .groups
            .iter()
            .map(|g| (g.destination.clone(), g.recipients.clone()))
            .collect();
        assert_eq!(
            groups,
            [
                (Destination::Maildir, vec![4]),
                (lmtp, vec![3]),
                (remote("a.test"), vec![0, 1, 5]),
                (remote("b.test"), vec![2]),
            ]
        );
        let ok = || AttemptResult::Delivered(reply("250 2.0.0 ok"));
        let no = AttemptResult::Failed(Answer::Server(reply("550 5.1.1 no such user")));
        let mut r = report(vec![
            (0, no.clone()),
            (1, ok()),
            (2, ok()),
            (3, ok()),
            (5, no),
        ]);
        r.results[2].dsn_passed_on = false;
        r.results[1].dsn_passed_on = true;
        r.stored = vec![4];
        let ended = s.pass_ended(&id(1), r, T0);
        let kinds: Vec<(NoticeKind, Vec<usize>)> = ended
            .notices
            .iter()
            .map(|n| (n.kind, n.recipients.clone()))
            .collect();
        assert_eq!(
            kinds,
            [
                (NoticeKind::Failure, vec![0]),
                (NoticeKind::Success, vec![4, 3]),
                (NoticeKind::Relayed, vec![2]),
            ]
        );
        assert!(ended.remove);
        match &ended.record[0] {
            (0, RecipientState::Failed { status, .. }) => assert_eq!(status, "5.1.1"),
            other => panic!("{other:?}"),
        }

        // The null sender gets the failure notice chosen (the driver sends
        // it to the postmaster) but no courtesy notice.
        let mut m = message(vec![
            rcpt(remote("a.test"), Some("SUCCESS,FAILURE")),
            rcpt(remote("a.test"), Some("SUCCESS")),
        ]);
        m.null_sender = true;
        s.submit(id(2), m, T0);
        let pass = s.due(T0).passes.remove(0);
        let mut r = report(vec![
            (
                0,
                AttemptResult::Failed(Answer::Server(reply("550 5.1.1 no"))),
            ),
            (1, AttemptResult::Delivered(reply("250 ok"))),
        ]);
        r.results[1].dsn_passed_on = false;
        let ended = s.pass_ended(&pass.id, r, T0);
        assert_eq!(ended.notices.len(), 1);
        assert_eq!(ended.notices[0].kind, NoticeKind::Failure);
    }

    /// A slow destination beside a fast one: the slow one never has more
    /// than `per_destination` passes, its waiting messages hold no pass
    /// slot, and the fast destination's messages all go while the slow
    /// ones are still busy.
    #[test]
    fn a_slow_destination_does_not_starve_a_fast_one() {
        let started = Instant::now();
        let mut s = Scheduler::new(SchedulerConfig {
            concurrency: 4,
            per_destination: 2,
            ..SchedulerConfig::default()
        });
        let slow = remote("slow.test");
        let fast = remote("fast.test");
        for n in 0..10 {
            s.submit(id(n), message(vec![rcpt(slow.clone(), None)]), T0);
        }
        for n in 10..30 {
            s.submit(id(n), message(vec![rcpt(fast.clone(), None)]), T0);
        }
        // In flight: (ends at, id, destination).
        let mut flying: Vec<(u64, QueueId, Destination)> = Vec::new();
        let mut done: Vec<(u64, QueueId)> = Vec::new();
        let mut now = T0;
        loop {
            let due = s.due(now);
            for pass in due.passes {
                let d = pass.groups[0].destination.clone();
                let took = if d == slow { 600 } else { 1 };
                flying.push((now + took, pass.id, d));
            }
            assert!(s.running() <= 4);
            assert!(s.busy(&slow) <= 2 && s.busy(&fast) <= 2);
            let slow_flying = flying.iter().filter(|f| f.2 == slow).count();
            assert!(
                slow_flying <= 2,
                "{slow_flying} passes at the slow destination"
            );
            flying.sort();
            if flying.is_empty() {
                break;
            }
            let (at, pass_id, _) = flying.remove(0);
            now = at;
            let ended = s.pass_ended(
                &pass_id,
                report(vec![(0, AttemptResult::Delivered(reply("250 ok")))]),
                now,
            );
            assert!(ended.remove);
            done.push((now - T0, pass_id));
        }
        assert_eq!(done.len(), 30);
        let last_fast = done
            .iter()
            .filter(|(_, i)| *i >= id(10))
            .map(|(t, _)| *t)
            .max();
        let first_slow = done
            .iter()
            .filter(|(_, i)| *i < id(10))
            .map(|(t, _)| *t)
            .min();
        // 20 fast messages, 2 at a time, 1 s each: 10 s; the slow ones
        // take 600 s each, 2 at a time.
        assert_eq!(last_fast, Some(10));
        assert_eq!(first_slow, Some(600));
        assert_eq!(done.last().map(|d| d.0), Some(3000));
        assert!(s.is_empty());
        assert!(started.elapsed().as_millis() < 1000);
    }

    /// The slots of the old `DestinationSlots` (moved here from the queue
    /// manager): bounded per destination, other destinations unaffected,
    /// freed when a pass ends.
    #[test]
    fn destination_slots_are_bounded_and_freed() {
        let mut s = Scheduler::new(SchedulerConfig {
            per_destination: 2,
            ..SchedulerConfig::default()
        });
        let slow = remote("slow.test");
        for n in 0..3 {
            s.submit(id(n), message(vec![rcpt(slow.clone(), None)]), T0);
        }
        s.submit(id(3), message(vec![rcpt(remote("fast.test"), None)]), T0);
        let started: Vec<QueueId> = s.due(T0).passes.into_iter().map(|p| p.id).collect();
        // Two at the slow destination, the third waits; the fast one goes.
        assert_eq!(started, [id(0), id(1), id(3)]);
        assert_eq!(s.busy(&slow), 2);
        assert_eq!(s.busy(&remote("fast.test")), 1);
        assert_eq!(s.busy(&remote("never.test")), 0);
        // Nothing to wake for: the parked one waits for a slot.
        assert_eq!(s.next_wakeup(), None);
        s.pass_ended(&id(0), report(vec![(0, deferred())]), T0 + 1);
        assert_eq!(s.busy(&slow), 1);
        // The freed slot wakes the parked message at once.
        assert_eq!(s.next_wakeup(), Some(T0 + 1));
        let started: Vec<QueueId> = s.due(T0 + 1).passes.into_iter().map(|p| p.id).collect();
        assert_eq!(started, [id(2)]);
        assert_eq!(s.busy(&slow), 2);
        s.pass_ended(&id(1), report(vec![(0, deferred())]), T0 + 2);
        assert_eq!(s.busy(&slow), 1);
    }

    /// A resubmitted message (a restart) retries its deferred Maildir
    /// recipients at once, remote ones on their schedule.
    #[test]
    fn resubmitted_local_deferrals_are_due_at_once() {
        let mut s = Scheduler::new(SchedulerConfig::default());
        let later = RecipientState::Deferred {
            attempts: 1,
            last_error: "451 4.3.0 blocked".into(),
            next_attempt: T0 + 5 * MIN,
        };
        let mut local = rcpt(Destination::Maildir, None);
        local.state = later.clone();
        let mut far = rcpt(remote("a.test"), None);
        far.state = later;
        s.submit(id(1), message(vec![local, far]), T0 + 1);
        let pass = s.due(T0 + 1).passes.remove(0);
        assert_eq!(pass.groups.len(), 1);
        assert_eq!(pass.groups[0].destination, Destination::Maildir);
    }

    /// Held messages get no pass and no warning; release looks at once.
    /// A pass that gave a pending recipient no result waits `idle_retry`
    /// instead of spinning; a pass that could not run too.
    #[test]
    fn hold_release_idle_retry_and_failed_passes() {
        let mut s = Scheduler::new(SchedulerConfig::default());
        let mut m = message(vec![rcpt(remote("a.test"), None)]);
        m.held = true;
        s.submit(id(1), m, T0);
        assert_eq!(s.next_wakeup(), None);
        assert!(s.due(T0 + DAY).passes.is_empty());
        s.set_held(&id(1), false, T0 + DAY);
        assert_eq!(s.next_wakeup(), Some(T0 + DAY));
        let pass = s.due(T0 + DAY).passes.remove(0);
        // No result (remote delivery off): looked at again after 60 s.
        let ended = s.pass_ended(&pass.id, PassReport::default(), T0 + DAY);
        assert!(ended.record.is_empty() && !ended.remove);
        assert_eq!(s.next_wakeup(), Some(T0 + DAY + 60));
        assert!(s.due(T0 + DAY + 59).passes.is_empty());
        let pass = s.due(T0 + DAY + 60).passes.remove(0);
        s.pass_failed(&pass.id, T0 + DAY + 60);
        assert_eq!(s.busy(&remote("a.test")), 0);
        assert_eq!(s.next_wakeup(), Some(T0 + DAY + 120));
        // Flush: at once.
        s.flush(&id(1), T0 + DAY + 61);
        assert_eq!(s.next_wakeup(), Some(T0 + DAY + 61));
        // Removed while running: forgotten at the end of its pass.
        let pass = s.due(T0 + DAY + 61).passes.remove(0);
        s.remove(&id(1));
        let ended = s.pass_ended(&pass.id, report(vec![(0, deferred())]), T0 + DAY + 62);
        assert_eq!(ended, Ended::default());
        assert!(s.is_empty() && s.next_wakeup().is_none());
    }

    /// The held messages are listed in id order, a batch at a time after a
    /// cursor, wrapping around; released and running ones are not held.
    #[test]
    fn held_messages_are_listed_in_turn() {
        let mut s = Scheduler::new(SchedulerConfig::default());
        for n in 1..=4 {
            let mut m = message(vec![rcpt(remote("a.test"), None)]);
            m.held = n != 3;
            s.submit(id(n), m, T0);
        }
        assert_eq!(s.held(None, 10), [id(1), id(2), id(4)]);
        assert_eq!(s.held(None, 2), [id(1), id(2)]);
        assert_eq!(s.held(Some(&id(2)), 2), [id(4), id(1)]);
        assert_eq!(s.held(Some(&id(4)), 1), [id(1)]);
        s.set_held(&id(2), false, T0);
        assert_eq!(s.held(Some(&id(1)), 10), [id(4), id(1)]);
        s.remove(&id(1));
        s.remove(&id(4));
        assert!(s.held(None, 10).is_empty());
    }

    /// A local failure is typed: it is recorded in the form the spool has
    /// always stored, with the right class, and expires like a reply.
    #[test]
    fn local_errors_defer_like_replies() {
        let mut s = Scheduler::new(SchedulerConfig::default());
        s.submit(id(1), message(vec![rcpt(Destination::Maildir, None)]), T0);
        let pass = s.due(T0).passes.remove(0);
        let full = LocalError::new(
            LocalCause::Quota,
            EnhancedStatus::new(4, 2, 2),
            "Mailbox full",
        );
        let ended = s.pass_ended(
            &pass.id,
            report(vec![(0, AttemptResult::Deferred(Answer::Local(full)))]),
            T0,
        );
        assert_eq!(
            ended.record,
            [(
                0,
                RecipientState::Deferred {
                    attempts: 1,
                    last_error: "452 4.2.2 Mailbox full".into(),
                    next_attempt: T0 + 5 * MIN,
                }
            )]
        );
        assert_eq!(s.next_wakeup(), Some(T0 + 5 * MIN));
    }

    /// An explicit NOTIFY=DELAY is honoured when warnings are off; the
    /// default NOTIFY is not warned then.
    #[test]
    fn explicit_delay_is_warned_when_warnings_are_off() {
        let mut s = Scheduler::new(SchedulerConfig {
            schedule: RetrySchedule {
                delay_warning_after: None,
                ..RetrySchedule::default()
            },
            ..SchedulerConfig::default()
        });
        s.submit(
            id(1),
            message(vec![
                rcpt(remote("a.test"), None),
                rcpt(remote("a.test"), Some("SUCCESS,DELAY")),
            ]),
            T0,
        );
        let mut warned = Vec::new();
        while let Some(now) = s.next_wakeup() {
            if now > T0 + DAY {
                break;
            }
            let due = s.due(now);
            warned.extend(due.notices.iter().map(|n| (now - T0, n.recipients.clone())));
            for pass in due.passes {
                let ended = s.pass_ended(
                    &pass.id,
                    report(vec![(0, deferred()), (1, deferred())]),
                    now,
                );
                warned.extend(
                    ended
                        .notices
                        .iter()
                        .filter(|n| n.kind == NoticeKind::Delay)
                        .map(|n| (now - T0, n.recipients.clone())),
                );
            }
        }
        assert_eq!(warned, [(EXPLICIT_DELAY_WARNING, vec![1])]);
    }
}
