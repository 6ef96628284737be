//! The delivery journal: one JSON record per event in a message's life —
//! received (client, TLS, AUTH user, envelope), each delivery attempt's
//! result (destination, reply), the final state, the notices (DSNs) sent
//! about it — kept after the message has left the queue, so that
//! `tern trace` can answer "what happened to the message Bob sent at
//! 10:02?" days later, with the server running or stopped.
//!
//! **Files.** `<dir>/journal-YYYYMMDD.jsonl` (UTC day of the record), one
//! record per line ([`Record`]). A writer thread appends; the files are
//! flushed whenever the writer has nothing more to do (so a reader sees a
//! record within moments) and on [`Journal::flush`]. A line torn by a
//! crash is skipped by the reader. At each new day, and when the journal
//! opens, files older than the retention or beyond the size cap (oldest
//! first) are deleted.
//!
//! **Never in the way.** Recording is a bounded channel send: if the
//! writer falls behind by [`QUEUE_BOUND`] records, records are dropped and
//! counted ([`Journal::dropped`]) rather than slowing a session down. The
//! journal is an operator's record, not a durability mechanism: no fsync
//! (the spool is what makes mail durable).
//!
//! What this module must never do: block or fail the mail path, or write
//! anything but records handed to it (no message content, no secrets).

use std::collections::{BTreeMap, HashSet};
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, BufWriter, Write};
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// Records the writer may fall behind by before new ones are dropped.
pub const QUEUE_BOUND: usize = 16_384;

/// How often the writer looks at the clock while idle (day change).
const IDLE_TICK: Duration = Duration::from_secs(1);

/// One line of the journal.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    /// When it happened, Unix milliseconds.
    pub time_ms: u64,
    /// The message's queue id.
    pub queue_id: String,
    /// What happened.
    #[serde(flatten)]
    pub event: Event,
}

/// What happened to a message.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    /// Accepted from a client (the `250` was sent).
    Received {
        /// Client address and port.
        client: String,
        /// The listener's role (`mx`, `submission`, …).
        role: String,
        /// HELO/EHLO name.
        helo: String,
        /// TLS version and cipher, if encrypted.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        tls: Option<String>,
        /// The authenticated user, if any.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        auth: Option<String>,
        /// Envelope sender (empty: the null sender).
        from: String,
        /// Envelope recipients, as given.
        to: Vec<String>,
        /// Size in bytes.
        size: u64,
        /// `mailbox` (delivered at intake) or `queue`.
        stored: String,
    },
    /// A notice (DSN) Tern generated, queued under this id.
    Generated {
        /// What it is about: the original message's queue id.
        about: String,
        /// `failure`, `delay`, `success` or `relayed`.
        kind: String,
        /// Whom it goes to.
        to: String,
    },
    /// A recipient was delivered (final).
    Delivered {
        /// The recipient.
        to: String,
        /// `mailbox`, `lmtp`, `remote` or `smarthost`.
        via: String,
        /// The host that took it, if remote.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        relay: Option<String>,
        /// What it said (or where it was stored).
        reply: String,
    },
    /// A recipient's attempt failed temporarily; it will be retried.
    Deferred {
        /// The recipient.
        to: String,
        /// As for [`Event::Delivered`].
        via: String,
        /// The host that answered, if remote.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        relay: Option<String>,
        /// The reply.
        reply: String,
        /// Attempts so far.
        attempts: u32,
        /// When the next attempt is due (Unix seconds).
        next_attempt: u64,
    },
    /// A recipient failed permanently (final).
    Bounced {
        /// The recipient.
        to: String,
        /// As for [`Event::Delivered`].
        via: String,
        /// The host that refused, if remote.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        relay: Option<String>,
        /// The reply.
        reply: String,
    },
    /// A recipient was still not delivered at the queue's `max_age` (final).
    Expired {
        /// The recipient.
        to: String,
        /// The last reply.
        reply: String,
    },
    /// A notice about this message was queued.
    Notice {
        /// `failure`, `delay`, `success` or `relayed`.
        kind: String,
        /// Whom it goes to.
        to: String,
        /// The notice's own queue id (trace it too).
        notice_id: String,
    },
    /// The message left the queue by an operator's command.
    Removed {
        /// `delete` or `bounce`.
        by: String,
    },
}

impl Event {
    /// The recipient a delivery event is about.
    pub fn recipient(&self) -> Option<&str> {
        match self {
            Event::Delivered { to, .. }
            | Event::Deferred { to, .. }
            | Event::Bounced { to, .. }
            | Event::Expired { to, .. } => Some(to),
            _ => None,
        }
    }
}

/// Errors of the journal.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    /// A filesystem operation failed.
    #[error("journal: {op} {}: {source}", path.display())]
    Io {
        /// What was being done.
        op: &'static str,
        /// Where.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
}

/// Retention of the journal's files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// Files whose day is older than this are deleted.
    pub max_age: Duration,
    /// The files together are kept under this many bytes (oldest deleted).
    pub max_bytes: u64,
}

impl Default for Retention {
    fn default() -> Retention {
        Retention {
            max_age: Duration::from_secs(30 * 86_400),
            max_bytes: 1 << 30,
        }
    }
}

/// The `[trace]` section of the configuration file: whether the journal
/// (`<data_dir>/journal/`, what `tern trace` reads) is kept, and for how
/// long. This crate owns the section; the binary embeds it as `trace`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct TraceConfig {
    /// Keep a journal at all.
    pub enabled: bool,
    /// Days of journal kept (whole UTC days).
    #[serde(with = "tern_limits::duration")]
    pub retention: Duration,
    /// The journal's files together stay under this many bytes (the
    /// oldest days go first).
    pub max_size: u64,
}

impl Default for TraceConfig {
    fn default() -> Self {
        let r = Retention::default();
        TraceConfig {
            enabled: true,
            retention: r.max_age,
            max_size: r.max_bytes,
        }
    }
}

impl TraceConfig {
    /// The journal's retention.
    pub fn retention(&self) -> Retention {
        Retention {
            max_age: self.retention,
            max_bytes: self.max_size,
        }
    }
}

/// Boxed: the channel's slots are allocated up front.
enum Msg {
    Record(Box<Record>),
    Flush(mpsc::Sender<()>),
}

/// The writing end (cheap to clone); a disabled journal records nothing.
#[derive(Clone, Default)]
pub struct Journal {
    inner: Option<Arc<Inner>>,
}

struct Inner {
    tx: Mutex<Option<SyncSender<Msg>>>,
    dropped: AtomicU64,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl std::fmt::Debug for Journal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Journal")
            .field("enabled", &self.inner.is_some())
            .finish()
    }
}

impl Journal {
    /// A journal that records nothing.
    pub fn disabled() -> Journal {
        Journal { inner: None }
    }

    /// Opens (creating, 0700) the journal in `dir` and starts its writer;
    /// applies `retention` at once.
    pub fn open(dir: &Path, retention: Retention) -> Result<Journal, JournalError> {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|source| JournalError::Io {
                op: "create",
                path: dir.to_owned(),
                source,
            })?;
        prune(dir, retention, now_ms());
        let (tx, rx) = mpsc::sync_channel(QUEUE_BOUND);
        let dir = dir.to_owned();
        let thread = std::thread::Builder::new()
            .name("tern-journal".into())
            .spawn(move || writer(dir, retention, rx))
            .map_err(|source| JournalError::Io {
                op: "start writer for",
                path: PathBuf::from("journal"),
                source,
            })?;
        Ok(Journal {
            inner: Some(Arc::new(Inner {
                tx: Mutex::new(Some(tx)),
                dropped: AtomicU64::new(0),
                thread: Mutex::new(Some(thread)),
            })),
        })
    }

    /// Whether records are kept.
    pub fn is_enabled(&self) -> bool {
        self.inner.is_some()
    }

    /// Records `event` about `queue_id`, now. Never blocks.
    pub fn record(&self, queue_id: &str, event: Event) {
        let Some(inner) = &self.inner else {
            return;
        };
        let record = Record {
            time_ms: now_ms(),
            queue_id: queue_id.to_owned(),
            event,
        };
        let tx = inner.tx.lock().unwrap_or_else(|e| e.into_inner());
        let sent = match tx.as_ref() {
            Some(tx) => tx.try_send(Msg::Record(Box::new(record))),
            None => return,
        };
        if let Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) = sent {
            inner.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Records dropped because the writer fell behind.
    pub fn dropped(&self) -> u64 {
        self.inner
            .as_ref()
            .map_or(0, |i| i.dropped.load(Ordering::Relaxed))
    }

    /// Waits (at most `timeout`) until everything recorded so far is
    /// written to the files.
    pub fn flush(&self, timeout: Duration) {
        let Some(inner) = &self.inner else {
            return;
        };
        let (ack, done) = mpsc::channel();
        let sent = {
            let tx = inner.tx.lock().unwrap_or_else(|e| e.into_inner());
            tx.as_ref().map(|tx| tx.send(Msg::Flush(ack)))
        };
        if let Some(Ok(())) = sent {
            let _ = done.recv_timeout(timeout);
        }
    }

    /// Writes what is pending and stops the writer (at shutdown).
    pub fn close(&self) {
        let Some(inner) = &self.inner else {
            return;
        };
        drop(inner.tx.lock().unwrap_or_else(|e| e.into_inner()).take());
        if let Some(t) = inner
            .thread
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
        {
            let _ = t.join();
        }
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// `journal-YYYYMMDD.jsonl` for the UTC day of `time_ms`.
fn file_name(time_ms: u64) -> String {
    let (y, m, d) = civil_from_days((time_ms / 86_400_000) as i64);
    format!("journal-{y:04}{m:02}{d:02}.jsonl")
}

/// The day number (since 1970-01-01) of a file name, if it is one of ours.
fn file_day(name: &str) -> Option<i64> {
    let digits = name.strip_prefix("journal-")?.strip_suffix(".jsonl")?;
    if digits.len() != 8 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let y: i64 = digits[..4].parse().ok()?;
    let m: u32 = digits[4..6].parse().ok()?;
    let d: u32 = digits[6..].parse().ok()?;
    Some(days_from_civil(y, m, d))
}

/// Gregorian date of a day number (Howard Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// Day number of a Gregorian date (inverse of [`civil_from_days`]).
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let m = i64::from(m);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The journal's files, oldest first: (day, path, size).
fn files(dir: &Path) -> Vec<(i64, PathBuf, u64)> {
    let mut out: Vec<(i64, PathBuf, u64)> = fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name();
            let day = file_day(name.to_str()?)?;
            let size = e.metadata().ok()?.len();
            Some((day, e.path(), size))
        })
        .collect();
    out.sort();
    out
}

/// Deletes files beyond the retention (never today's).
fn prune(dir: &Path, retention: Retention, now_ms: u64) {
    let today = (now_ms / 86_400_000) as i64;
    let oldest_kept = today - (retention.max_age.as_secs() / 86_400) as i64;
    let mut list = files(dir);
    let mut total: u64 = list.iter().map(|f| f.2).sum();
    list.retain(|(day, path, size)| {
        if *day < oldest_kept || (total > retention.max_bytes && *day < today) {
            if fs::remove_file(path).is_ok() {
                total = total.saturating_sub(*size);
            }
            false
        } else {
            true
        }
    });
}

/// The writer thread: appends records to the day's file, flushes when idle.
fn writer(dir: PathBuf, retention: Retention, rx: Receiver<Msg>) {
    let mut current: Option<(String, BufWriter<File>)> = None;
    let mut dirty = false;
    let mut line = Vec::with_capacity(512);
    loop {
        let msg = if dirty {
            match rx.try_recv() {
                Ok(m) => Some(m),
                Err(mpsc::TryRecvError::Empty) => {
                    flush(&mut current);
                    dirty = false;
                    continue;
                }
                Err(mpsc::TryRecvError::Disconnected) => None,
            }
        } else {
            match rx.recv_timeout(IDLE_TICK) {
                Ok(m) => Some(m),
                Err(RecvTimeoutError::Timeout) => {
                    // A new day with nothing recorded yet: prune anyway.
                    if let Some((name, _)) = &current
                        && *name != file_name(now_ms())
                    {
                        current = None;
                        prune(&dir, retention, now_ms());
                    }
                    continue;
                }
                Err(RecvTimeoutError::Disconnected) => None,
            }
        };
        match msg {
            None => {
                flush(&mut current);
                return;
            }
            Some(Msg::Flush(ack)) => {
                flush(&mut current);
                dirty = false;
                let _ = ack.send(());
            }
            Some(Msg::Record(record)) => {
                let name = file_name(record.time_ms);
                if current.as_ref().is_none_or(|(n, _)| *n != name) {
                    flush(&mut current);
                    let rotated = current.is_some();
                    current = open_append(&dir.join(&name)).map(|f| (name, f));
                    if rotated {
                        prune(&dir, retention, record.time_ms);
                    }
                }
                line.clear();
                if serde_json::to_writer(&mut line, &*record).is_ok() {
                    line.push(b'\n');
                    if let Some((_, f)) = current.as_mut() {
                        let _ = f.write_all(&line);
                        dirty = true;
                    }
                }
            }
        }
    }
}

/// Opens a day's file for appending; a last line torn by a crash is ended
/// first, so that it costs only itself.
fn open_append(path: &Path) -> Option<BufWriter<File>> {
    use std::io::{Read as _, Seek as _, SeekFrom};
    let mut f = OpenOptions::new()
        .create(true)
        .read(true)
        .append(true)
        .mode(0o600)
        .open(path)
        .ok()?;
    let len = f.metadata().ok()?.len();
    if len > 0 {
        let mut last = [0u8; 1];
        f.seek(SeekFrom::Start(len - 1)).ok()?;
        f.read_exact(&mut last).ok()?;
        if last[0] != b'\n' {
            f.write_all(b"\n").ok()?;
        }
    }
    Some(BufWriter::with_capacity(64 * 1024, f))
}

fn flush(current: &mut Option<(String, BufWriter<File>)>) {
    if let Some((_, f)) = current.as_mut() {
        let _ = f.flush();
    }
}

/// A `since` value [`parse_since`] cannot read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("since {text:?}: expected 2h, 2026-12-04 or 2026-12-04T10:02[:13] (UTC)")]
#[non_exhaustive]
pub struct SinceError {
    /// The value given, trimmed.
    pub text: String,
}

/// `since` as `tern trace --since` and `GET /api/trace?since=` take it:
/// a duration ago (`90s`, `30m`, `2h`, `3d`), a UTC date (`2026-12-04`)
/// or date and time (`2026-12-04T10:02`, `…:13`, a space instead of `T`
/// too), or Unix seconds. Returns Unix seconds.
pub fn parse_since(text: &str, now: u64) -> Result<u64, SinceError> {
    let t = text.trim();
    let bad = || SinceError { text: t.to_owned() };
    if let Some(unit) = t.chars().last().filter(char::is_ascii_alphabetic) {
        let n: u64 = t[..t.len() - 1].parse().map_err(|_| bad())?;
        let secs = match unit {
            's' => n,
            'm' => n.saturating_mul(60),
            'h' => n.saturating_mul(3600),
            'd' => n.saturating_mul(86_400),
            _ => return Err(bad()),
        };
        return Ok(now.saturating_sub(secs));
    }
    if !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()) {
        return t.parse().map_err(|_| bad());
    }
    let (date, time) = t.split_once(['T', ' ']).unwrap_or((t, "00:00:00"));
    let d: Vec<&str> = date.split('-').collect();
    let tm: Vec<&str> = time.split(':').collect();
    if d.len() != 3 || !(2..=3).contains(&tm.len()) {
        return Err(bad());
    }
    let num = |s: &str, max: u32| -> Result<u32, SinceError> {
        match s.parse::<u32>() {
            Ok(v) if v <= max => Ok(v),
            _ => Err(bad()),
        }
    };
    let (y, m, day) = (num(d[0], 9999)?, num(d[1], 12)?, num(d[2], 31)?);
    let (hh, mm) = (num(tm[0], 23)?, num(tm[1], 59)?);
    let ss = if tm.len() == 3 { num(tm[2], 60)? } else { 0 };
    if m == 0 || day == 0 {
        return Err(bad());
    }
    let secs = days_from_civil(i64::from(y), m, day) * 86_400
        + i64::from(hh) * 3600
        + i64::from(mm) * 60
        + i64::from(ss);
    u64::try_from(secs).map_err(|_| bad())
}

/// `YYYY-MM-DD HH:MM:SS` (UTC) of Unix seconds.
pub fn format_utc(secs: u64) -> String {
    let (y, m, d) = civil_from_days((secs / 86_400) as i64);
    let s = secs % 86_400;
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}",
        s / 3600,
        s / 60 % 60,
        s % 60
    )
}

/// What `tern trace` asks for; every given field must match.
#[derive(Debug, Clone, Default)]
pub struct Query {
    /// This queue id.
    pub id: Option<String>,
    /// Messages from this envelope sender (case-insensitive).
    pub from: Option<String>,
    /// Messages to this recipient (case-insensitive).
    pub to: Option<String>,
    /// Messages received at or after this time (Unix seconds).
    pub since: Option<u64>,
}

/// One message's story: its records in order, then those of the notices
/// sent about it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Trace {
    /// The queue id.
    pub queue_id: String,
    /// Its records, oldest first.
    pub records: Vec<Record>,
    /// The notices (DSNs) sent about it, each with its own records.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub notices: Vec<Trace>,
}

impl Trace {
    /// The last word on each recipient: `(recipient, event name)`.
    pub fn final_states(&self) -> BTreeMap<String, &'static str> {
        let mut out = BTreeMap::new();
        for r in &self.records {
            let state = match &r.event {
                Event::Delivered { .. } => "delivered",
                Event::Deferred { .. } => "deferred",
                Event::Bounced { .. } => "bounced",
                Event::Expired { .. } => "expired",
                _ => continue,
            };
            if let Some(to) = r.event.recipient() {
                out.insert(to.to_ascii_lowercase(), state);
            }
        }
        out
    }
}

/// Reads the journal in `dir` and returns the messages `query` matches,
/// oldest first, each with the notices sent about it. At most `limit`
/// messages (the newest are kept).
pub fn query(dir: &Path, q: &Query, limit: usize) -> Result<Vec<Trace>, JournalError> {
    let mut by_id: BTreeMap<String, Vec<Record>> = BTreeMap::new();
    // Queue ids in the order their first record appears.
    let mut order: Vec<String> = Vec::new();
    let since_day = q.since.map(|s| (s / 86_400) as i64);
    for (day, path, _) in files(dir) {
        if since_day.is_some_and(|d| day < d) {
            continue;
        }
        let file = match File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue, // pruned meanwhile
            Err(source) => {
                return Err(JournalError::Io {
                    op: "open",
                    path,
                    source,
                });
            }
        };
        for line in BufReader::new(file).split(b'\n') {
            let line = line.map_err(|source| JournalError::Io {
                op: "read",
                path: path.clone(),
                source,
            })?;
            // A line torn by a crash (or from a newer version) is skipped.
            let Ok(record) = serde_json::from_slice::<Record>(&line) else {
                continue;
            };
            let entry = by_id.entry(record.queue_id.clone()).or_default();
            if entry.is_empty() {
                order.push(record.queue_id.clone());
            }
            entry.push(record);
        }
    }
    let eq = |a: &str, b: &str| a.eq_ignore_ascii_case(b);
    let matches = |id: &str, records: &[Record]| -> bool {
        if q.id.as_deref().is_some_and(|want| want != id) {
            return false;
        }
        let received = records.iter().find_map(|r| match &r.event {
            Event::Received { from, to, .. } => Some((r.time_ms, from, to)),
            _ => None,
        });
        if let Some(since) = q.since {
            let first = received.map_or(records[0].time_ms, |(t, _, _)| t);
            if first / 1000 < since {
                return false;
            }
        }
        if let Some(want) = &q.from
            && !received.is_some_and(|(_, from, _)| eq(from, want))
        {
            return false;
        }
        if let Some(want) = &q.to {
            let named = received.is_some_and(|(_, _, to)| to.iter().any(|t| eq(t, want)))
                || records
                    .iter()
                    .any(|r| r.event.recipient().is_some_and(|t| eq(t, want)));
            if !named {
                return false;
            }
        }
        true
    };
    // Notices are listed under the message they are about, not on their own
    // (unless asked for by id).
    let notice_ids: HashSet<&str> = by_id
        .values()
        .flatten()
        .filter_map(|r| match &r.event {
            Event::Notice { notice_id, .. } => Some(notice_id.as_str()),
            _ => None,
        })
        .collect();
    let mut hits: Vec<&String> = order
        .iter()
        .filter(|id| q.id.is_some() || !notice_ids.contains(id.as_str()))
        .filter(|id| matches(id, &by_id[*id]))
        .collect();
    if hits.len() > limit {
        hits.drain(..hits.len() - limit);
    }
    Ok(hits
        .into_iter()
        .map(|id| {
            let records = by_id[id].clone();
            let notices = records
                .iter()
                .filter_map(|r| match &r.event {
                    Event::Notice { notice_id, .. } => Some(Trace {
                        queue_id: notice_id.clone(),
                        records: by_id.get(notice_id).cloned().unwrap_or_default(),
                        notices: Vec::new(),
                    }),
                    _ => None,
                })
                .collect();
            Trace {
                queue_id: id.clone(),
                records,
                notices,
            }
        })
        .collect())
}

#[cfg(test)]
mod tests {

    #[test]
    fn trace_section_defaults_and_round_trip() {
        let t: TraceConfig = toml::from_str("").unwrap();
        assert_eq!(t, TraceConfig::default());
        assert!(t.enabled);
        assert_eq!(t.retention(), Retention::default());
        let t: TraceConfig = toml::from_str("enabled = false\nretention = \"3d\"").unwrap();
        assert_eq!(t.retention().max_age, Duration::from_secs(3 * 86_400));
        assert_eq!(
            toml::from_str::<TraceConfig>(&toml::to_string(&t).unwrap()).unwrap(),
            t
        );
        for bad in ["retention = \"x\"", "bogus = 1"] {
            assert!(toml::from_str::<TraceConfig>(bad).is_err(), "{bad}");
        }
    }

    use super::*;

    fn received(from: &str, to: &[&str]) -> Event {
        Event::Received {
            client: "192.0.2.1:4000".into(),
            role: "mx".into(),
            helo: "client.test".into(),
            tls: Some("TLSv1.3".into()),
            auth: None,
            from: from.into(),
            to: to.iter().map(|s| (*s).to_owned()).collect(),
            size: 1234,
            stored: "queue".into(),
        }
    }

    #[test]
    fn since_takes_durations_dates_and_seconds() {
        let now = 1_764_842_533; // 2025-12-04 10:02:13 UTC
        assert_eq!(parse_since("2h", now).unwrap(), now - 7200);
        assert_eq!(parse_since("3d", now).unwrap(), now - 3 * 86_400);
        assert_eq!(parse_since("90s", now).unwrap(), now - 90);
        assert_eq!(parse_since("1700000000", now).unwrap(), 1_700_000_000);
        assert_eq!(parse_since("2025-12-04", now).unwrap(), 1_764_806_400);
        assert_eq!(parse_since("2025-12-04T10:02", now).unwrap(), 1_764_842_520);
        assert_eq!(parse_since("2025-12-04 10:02:13", now).unwrap(), now);
        assert_eq!(format_utc(now), "2025-12-04 10:02:13");
        for bad in [
            "",
            "2x",
            "h",
            "2025-13-01",
            "2025-12-04T25:00",
            "yesterday",
            "2025-12",
        ] {
            assert!(parse_since(bad, now).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn civil_dates_round_trip() {
        for day in [-1, 0, 59, 365, 10_957, 20_000, 20_791, 47_482] {
            let (y, m, d) = civil_from_days(day);
            assert_eq!(days_from_civil(y, m, d), day, "{y}-{m}-{d}");
        }
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(20_791), (2026, 12, 4));
        assert_eq!(file_name(20_791 * 86_400_000 + 5), "journal-20261204.jsonl");
        assert_eq!(file_day("journal-20261204.jsonl"), Some(20_791));
        assert_eq!(file_day("journal-2026124.jsonl"), None);
        assert_eq!(file_day("other.jsonl"), None);
    }

    #[test]
    fn records_are_written_and_found_by_id_sender_and_recipient() {
        let dir = tempfile::tempdir().unwrap();
        let j = Journal::open(dir.path(), Retention::default()).unwrap();
        j.record("AAAA", received("bob@else.test", &["alice@example.test"]));
        j.record(
            "AAAA",
            Event::Deferred {
                to: "alice@example.test".into(),
                via: "remote".into(),
                relay: Some("mx.example.test".into()),
                reply: "451 4.3.0 later".into(),
                attempts: 1,
                next_attempt: 99,
            },
        );
        j.record(
            "AAAA",
            Event::Notice {
                kind: "delay".into(),
                to: "bob@else.test".into(),
                notice_id: "NNNN".into(),
            },
        );
        j.record(
            "NNNN",
            Event::Generated {
                about: "AAAA".into(),
                kind: "delay".into(),
                to: "bob@else.test".into(),
            },
        );
        j.record(
            "AAAA",
            Event::Delivered {
                to: "alice@example.test".into(),
                via: "remote".into(),
                relay: Some("mx.example.test".into()),
                reply: "250 ok".into(),
            },
        );
        j.record("BBBB", received("carol@else.test", &["dave@example.test"]));
        j.flush(Duration::from_secs(5));

        let all = query(dir.path(), &Query::default(), 100).unwrap();
        assert_eq!(
            all.iter().map(|t| t.queue_id.as_str()).collect::<Vec<_>>(),
            ["AAAA", "BBBB"],
            "the notice is listed under its message"
        );
        let a = &all[0];
        assert_eq!(a.records.len(), 4);
        assert_eq!(a.notices.len(), 1);
        assert_eq!(a.notices[0].queue_id, "NNNN");
        assert_eq!(a.notices[0].records.len(), 1);
        assert_eq!(a.final_states()["alice@example.test"], "delivered");

        let q = |q: Query| {
            query(dir.path(), &q, 100)
                .unwrap()
                .into_iter()
                .map(|t| t.queue_id)
                .collect::<Vec<_>>()
        };
        assert_eq!(
            q(Query {
                from: Some("BOB@else.test".into()),
                ..Query::default()
            }),
            ["AAAA"]
        );
        assert_eq!(
            q(Query {
                to: Some("dave@example.test".into()),
                ..Query::default()
            }),
            ["BBBB"]
        );
        assert_eq!(
            q(Query {
                id: Some("NNNN".into()),
                ..Query::default()
            }),
            ["NNNN"]
        );
        assert!(
            q(Query {
                since: Some(now_ms() / 1000 + 3600),
                ..Query::default()
            })
            .is_empty()
        );
        assert_eq!(
            q(Query {
                since: Some(now_ms() / 1000 - 3600),
                ..Query::default()
            })
            .len(),
            2
        );
        // The newest `limit` messages.
        assert_eq!(q_limit(dir.path(), 1), ["BBBB"]);
        j.close();
        assert_eq!(j.dropped(), 0);
    }

    fn q_limit(dir: &Path, limit: usize) -> Vec<String> {
        query(dir, &Query::default(), limit)
            .unwrap()
            .into_iter()
            .map(|t| t.queue_id)
            .collect()
    }

    #[test]
    fn a_torn_line_is_skipped_and_a_reopened_journal_appends() {
        let dir = tempfile::tempdir().unwrap();
        let j = Journal::open(dir.path(), Retention::default()).unwrap();
        j.record("AAAA", received("a@x.test", &["b@y.test"]));
        j.close();
        // A crash tore the last line.
        let path = dir.path().join(file_name(now_ms()));
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(b"{\"time_ms\":1,\"queue_id\":\"CC").unwrap();
        drop(f);
        let j = Journal::open(dir.path(), Retention::default()).unwrap();
        j.record("DDDD", received("a@x.test", &["b@y.test"]));
        j.close();
        // The torn line costs only itself.
        assert_eq!(q_limit(dir.path(), 10), ["AAAA", "DDDD"]);
    }

    #[test]
    fn retention_deletes_old_days_and_keeps_under_the_size_cap() {
        let dir = tempfile::tempdir().unwrap();
        let today = (now_ms() / 86_400_000) as i64;
        for age in [0i64, 1, 2, 40] {
            let (y, m, d) = civil_from_days(today - age);
            let name = format!("journal-{y:04}{m:02}{d:02}.jsonl");
            fs::write(dir.path().join(name), vec![b'x'; 1000]).unwrap();
        }
        fs::write(dir.path().join("unrelated.txt"), b"keep").unwrap();
        prune(
            dir.path(),
            Retention {
                max_age: Duration::from_secs(30 * 86_400),
                max_bytes: 2500,
            },
            now_ms(),
        );
        let left: Vec<i64> = files(dir.path()).into_iter().map(|f| today - f.0).collect();
        // 40 days: too old; then the oldest until under 2,500 bytes.
        assert_eq!(left, vec![1, 0]);
        assert!(dir.path().join("unrelated.txt").exists());
    }

    #[test]
    fn a_disabled_journal_records_nothing_and_never_blocks() {
        let j = Journal::disabled();
        j.record("AAAA", received("a@x.test", &["b@y.test"]));
        j.flush(Duration::from_millis(1));
        j.close();
        assert!(!j.is_enabled());
    }
}
