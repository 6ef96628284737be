//! The embedded, file-backed spool.
//!
//! Layout under the spool directory (all directories 0700, files 0600):
//!
//! ```text
//! lock             held (flock) while a Spool is open: one owner at a time
//! tmp/<id>         a message being received; never visible to delivery
//! queue/<id>       committed: message bytes, JSON envelope, 16-byte trailer
//!                  (u64 LE envelope length, then b"TERNENV1")
//! queue/<id>.state per-recipient outcomes, append-only, fsynced
//! corrupt/         queue files that could not be read back, kept for a human
//! ```
//!
//! A message becomes visible in `queue/` only through the group committer
//! (see [`crate::committer`]), after its data is fsynced; its
//! [`PendingCommit`] resolves only after the directory fsync. So a committed
//! message survives a crash, and a half-received one never becomes visible:
//! [`Spool::open`] deletes everything left in `tmp/`.
//!
//! The spool never trusts a name it reads from disk: only file names that
//! parse as a [`QueueId`] are considered, and nothing from an SMTP client is
//! ever used as a path.

use std::collections::{BTreeSet, HashSet};
use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::os::unix::fs::{DirBuilderExt, FileExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use tokio::sync::oneshot;

use crate::committer::{CommitRequest, Committer, Counters, PendingCommit, SpoolStats, sync_dir};
use crate::id::IdGenerator;
use crate::state;
use crate::{Envelope, QueueId, SpoolError};

/// Trailer magic at the very end of every queue file.
const MAGIC: &[u8; 8] = b"TERNENV1";
const TRAILER_LEN: u64 = 16;
/// Write buffer of an incoming message: large, so that a message body is
/// written in few system calls.
const WRITE_BUFFER: usize = 256 * 1024;
/// Read buffer used by [`StoredMessage::reader`].
const READ_BUFFER: usize = 128 * 1024;
/// Largest envelope we agree to parse back (sanity bound on the trailer).
const MAX_ENVELOPE: u64 = 64 * 1024 * 1024;
const FILE_MODE: u32 = 0o600;
const DIR_MODE: u32 = 0o700;

/// How the spool behaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpoolOptions {
    /// fsync files and directories before a commit resolves (default
    /// `true`). `false` gives up the durability promise and exists only
    /// for tests that say so.
    pub fsync: bool,
}

impl Default for SpoolOptions {
    fn default() -> SpoolOptions {
        SpoolOptions { fsync: true }
    }
}

/// The embedded file-backed spool. Cheap to clone; every clone shares one
/// group-commit thread, which stops when the last clone (and the last
/// [`IncomingMessage`]) is dropped.
#[derive(Debug, Clone)]
pub struct Spool {
    inner: Arc<Inner>,
}

/// A [`Spool`] that may have been closed (see [`Spool::downgrade`]).
#[derive(Debug, Clone)]
pub struct WeakSpool(std::sync::Weak<Inner>);

impl WeakSpool {
    /// The spool, if it is still open.
    pub fn upgrade(&self) -> Option<Spool> {
        self.0.upgrade().map(|inner| Spool { inner })
    }
}

#[derive(Debug)]
struct Inner {
    dir: PathBuf,
    tmp: PathBuf,
    queue: PathBuf,
    corrupt: PathBuf,
    options: SpoolOptions,
    ids: IdGenerator,
    counters: Arc<Counters>,
    /// Ids committed by this process and not yet claimed by a delivery
    /// attempt (see [`Spool::claim_first_attempt`]).
    fresh: Mutex<HashSet<QueueId>>,
    /// Ids a delivery attempt is working on (see [`Spool::lease`]).
    leased: Mutex<HashSet<QueueId>>,
    committer_tx: Mutex<Option<Sender<CommitRequest>>>,
    committer_thread: Mutex<Option<JoinHandle<()>>>,
    /// Held for the spool's life: the flock is released when it closes.
    _lock: File,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Closing the channel lets the committer finish what is queued and exit.
        drop(lock(&self.committer_tx).take());
        if let Some(handle) = lock(&self.committer_thread).take() {
            let _ = handle.join();
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn make_dir(path: &Path) -> Result<(), SpoolError> {
    match DirBuilder::new().mode(DIR_MODE).create(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            fs::set_permissions(path, fs::Permissions::from_mode(DIR_MODE))
                .map_err(|e| SpoolError::io("chmod", path, e))
        }
        Err(e) => Err(SpoolError::io("mkdir", path, e)),
    }
}

fn new_file_options() -> OpenOptions {
    let mut o = OpenOptions::new();
    o.mode(FILE_MODE);
    o
}

impl Spool {
    /// Open (creating if needed) the spool in `dir`: creates `tmp/`,
    /// `queue/` and `corrupt/` (0700), takes the spool lock, deletes every
    /// half-received message in `tmp/` and orphaned state files in
    /// `queue/`, and starts the group-commit thread.
    pub fn open(dir: &Path, options: SpoolOptions) -> Result<Spool, SpoolError> {
        DirBuilder::new()
            .recursive(true)
            .mode(DIR_MODE)
            .create(dir)
            .map_err(|e| SpoolError::io("mkdir", dir, e))?;
        make_dir(dir)?;
        let tmp = dir.join("tmp");
        let queue = dir.join("queue");
        let corrupt = dir.join("corrupt");
        for d in [&tmp, &queue, &corrupt] {
            make_dir(d)?;
        }

        let lock_path = dir.join("lock");
        let lock_file = new_file_options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&lock_path)
            .map_err(|e| SpoolError::io("open", &lock_path, e))?;
        match lock_file.try_lock() {
            Ok(()) => {}
            Err(fs::TryLockError::WouldBlock) => {
                return Err(SpoolError::Locked { path: lock_path });
            }
            Err(fs::TryLockError::Error(e)) => return Err(SpoolError::io("lock", &lock_path, e)),
        }

        // Half-received messages never become visible.
        for entry in fs::read_dir(&tmp).map_err(|e| SpoolError::io("read_dir", &tmp, e))? {
            let entry = entry.map_err(|e| SpoolError::io("read_dir", &tmp, e))?;
            let path = entry.path();
            let result = if entry.file_type().is_ok_and(|t| t.is_dir()) {
                fs::remove_dir_all(&path)
            } else {
                fs::remove_file(&path)
            };
            result.map_err(|e| SpoolError::io("remove", &path, e))?;
        }

        // Orphaned state files (crash between removing a message and its
        // state) are removed; find the newest id to seed the generator.
        let mut newest: Option<QueueId> = None;
        let mut removed_orphan = false;
        for name in dir_names(&queue)? {
            if let Some(id_str) = name.strip_suffix(".state") {
                let Ok(id) = id_str.parse::<QueueId>() else {
                    continue;
                };
                if !queue.join(id.as_str()).exists() {
                    let path = queue.join(&name);
                    fs::remove_file(&path).map_err(|e| SpoolError::io("remove", &path, e))?;
                    removed_orphan = true;
                }
            } else if let Ok(id) = name.parse::<QueueId>() {
                newest = newest.max(Some(id));
            }
        }
        for name in dir_names(&corrupt)? {
            if let Ok(id) = name.trim_end_matches(".state").parse::<QueueId>() {
                newest = newest.max(Some(id));
            }
        }
        if removed_orphan && options.fsync {
            sync_dir(&queue).map_err(|e| SpoolError::io("fsync directory", &queue, e))?;
        }

        let counters = Arc::new(Counters::default());
        let (tx, rx) = mpsc::channel();
        let committer = Committer {
            rx,
            fsync: options.fsync,
            counters: Arc::clone(&counters),
        };
        let thread = std::thread::Builder::new()
            .name("tern-spool-commit".into())
            .spawn(move || committer.run())
            .map_err(|e| SpoolError::io("spawn committer for", dir, e))?;

        Ok(Spool {
            inner: Arc::new(Inner {
                dir: dir.to_path_buf(),
                tmp,
                queue,
                corrupt,
                options,
                ids: IdGenerator::new(newest.as_ref()),
                counters,
                fresh: Mutex::new(HashSet::new()),
                leased: Mutex::new(HashSet::new()),
                committer_tx: Mutex::new(Some(tx)),
                committer_thread: Mutex::new(Some(thread)),
                _lock: lock_file,
            }),
        })
    }

    /// A reference that does not keep the spool open (nor its lock held):
    /// for observers such as the metrics, which must not outlive the server.
    pub fn downgrade(&self) -> WeakSpool {
        WeakSpool(Arc::downgrade(&self.inner))
    }

    /// The spool directory.
    pub fn path(&self) -> &Path {
        &self.inner.dir
    }

    /// Commit counters: `batches < commits` shows group commit at work.
    pub fn stats(&self) -> SpoolStats {
        self.inner.counters.snapshot()
    }

    /// Start receiving a message: creates `tmp/<id>` (0600).
    pub fn create(&self) -> Result<IncomingMessage, SpoolError> {
        loop {
            let id = self.inner.ids.next_id();
            let tmp_path = self.inner.tmp.join(id.as_str());
            match new_file_options()
                .write(true)
                .create_new(true)
                .open(&tmp_path)
            {
                Ok(file) => {
                    return Ok(IncomingMessage {
                        spool: Arc::clone(&self.inner),
                        id,
                        tmp_path,
                        writer: Some(BufWriter::with_capacity(WRITE_BUFFER, file)),
                        size: 0,
                        destination: Destination::Queue,
                    });
                }
                // Unreachable with a monotonic generator, but never clobber.
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(SpoolError::io("create", &tmp_path, e)),
            }
        }
    }

    /// Whether a message could be received now: creates, writes and
    /// removes a probe file where messages are written (`tmp/`), for a
    /// readiness check. Never touches a message.
    pub fn probe_writable(&self) -> Result<(), SpoolError> {
        use std::io::Write as _;
        let path = self
            .inner
            .tmp
            .join(format!(".probe-{}", std::process::id()));
        let result = new_file_options()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .and_then(|mut f| f.write_all(b"probe"));
        let _ = std::fs::remove_file(&path);
        result.map_err(|e| SpoolError::io("write a probe file in", &self.inner.tmp, e))
    }

    /// A fresh queue id, as [`create`](Self::create) would give, for a
    /// message received with [`create_delivered`](Self::create_delivered).
    pub fn next_id(&self) -> QueueId {
        self.inner.ids.next_id()
    }

    /// Start receiving a message that is *delivered* by its commit instead
    /// of queued: the bytes go to `tmp_path` (created 0600, must not
    /// exist), and the group committer fdatasyncs it, renames it to
    /// `final_path` and fsyncs `final_path`'s directory before the
    /// [`PendingCommit`] resolves — the same promise as a queued message,
    /// in the same batches. Used for a message whose only recipient is a
    /// local Maildir: `tmp_path` is the Maildir's `tmp/<name>`, `final_path`
    /// its `new/<name>` (same filesystem), so the message is written once.
    /// No envelope is stored and nothing enters `queue/`; the caller must
    /// not announce the id for delivery. Dropping it uncommitted deletes
    /// `tmp_path`.
    pub fn create_delivered(
        &self,
        id: QueueId,
        tmp_path: PathBuf,
        final_path: PathBuf,
    ) -> Result<IncomingMessage, SpoolError> {
        let Some(dir) = final_path.parent().map(Path::to_path_buf) else {
            return Err(SpoolError::io(
                "create",
                &final_path,
                io::Error::other("final path has no directory"),
            ));
        };
        let file = new_file_options()
            .write(true)
            .create_new(true)
            .open(&tmp_path)
            .map_err(|e| SpoolError::io("create", &tmp_path, e))?;
        Ok(IncomingMessage {
            spool: Arc::clone(&self.inner),
            id,
            tmp_path,
            writer: Some(BufWriter::with_capacity(WRITE_BUFFER, file)),
            size: 0,
            destination: Destination::Delivered {
                path: final_path,
                dir,
            },
        })
    }

    /// Committed messages, oldest first (used at start-up to resume delivery).
    pub fn list(&self) -> Result<Vec<QueueId>, SpoolError> {
        let mut ids: Vec<QueueId> = dir_names(&self.inner.queue)?
            .iter()
            .filter_map(|n| n.parse().ok())
            .collect();
        ids.sort();
        Ok(ids)
    }

    fn queue_path(&self, id: &QueueId) -> PathBuf {
        self.inner.queue.join(id.as_str())
    }

    fn state_path(&self, id: &QueueId) -> PathBuf {
        self.inner.queue.join(format!("{id}.state"))
    }

    /// Open a committed message. A file that cannot be read back is moved to
    /// `corrupt/` and reported as [`SpoolError::Corrupt`]; recovery goes on
    /// with the other messages.
    pub fn open_message(&self, id: &QueueId) -> Result<StoredMessage, SpoolError> {
        let path = self.queue_path(id);
        let mut file = match File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(SpoolError::NotFound(id.clone()));
            }
            Err(e) => return Err(SpoolError::io("open", &path, e)),
        };
        match read_envelope(&mut file) {
            Ok(Ok((envelope, data_len))) => Ok(StoredMessage {
                id: id.clone(),
                envelope,
                file,
                data_len,
                path,
            }),
            Ok(Err(reason)) => {
                drop(file);
                Err(self.quarantine(id, reason))
            }
            Err(e) => Err(SpoolError::io("read", &path, e)),
        }
    }

    /// Move a corrupt queue file (and its state) to `corrupt/`.
    fn quarantine(&self, id: &QueueId, reason: String) -> SpoolError {
        let from = self.queue_path(id);
        let to = self.inner.corrupt.join(id.as_str());
        let moved = fs::rename(&from, &to).is_ok();
        let _ = fs::rename(
            self.state_path(id),
            self.inner.corrupt.join(format!("{id}.state")),
        );
        if self.inner.options.fsync {
            let _ = sync_dir(&self.inner.corrupt);
            let _ = sync_dir(&self.inner.queue);
        }
        SpoolError::Corrupt {
            id: id.clone(),
            reason,
            moved_to: moved.then_some(to),
        }
    }

    /// Durably record that recipient `index` of `id` is done (delivered, or
    /// failed for good). Returns once the record is fsynced.
    pub fn record_done(&self, id: &QueueId, index: usize, outcome: &str) -> Result<(), SpoolError> {
        if !self.queue_path(id).exists() {
            return Err(SpoolError::NotFound(id.clone()));
        }
        let path = self.state_path(id);
        let (file, created) = match new_file_options()
            .read(true)
            .append(true)
            .create_new(true)
            .open(&path)
        {
            Ok(f) => (f, true),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => (
                OpenOptions::new()
                    .read(true)
                    .append(true)
                    .open(&path)
                    .map_err(|e| SpoolError::io("open", &path, e))?,
                false,
            ),
            Err(e) => return Err(SpoolError::io("create", &path, e)),
        };
        let mut record = Vec::with_capacity(64);
        if !created {
            // A torn last line (crash mid-append) must not glue onto ours.
            let len = file
                .metadata()
                .map_err(|e| SpoolError::io("stat", &path, e))?
                .len();
            if len > 0 {
                let mut last = [0u8; 1];
                file.read_exact_at(&mut last, len - 1)
                    .map_err(|e| SpoolError::io("read", &path, e))?;
                if last[0] != b'\n' {
                    record.push(b'\n');
                }
            }
        }
        record.extend(state::encode_record(index, outcome));
        (&file)
            .write_all(&record)
            .map_err(|e| SpoolError::io("append", &path, e))?;
        if self.inner.options.fsync {
            file.sync_data()
                .map_err(|e| SpoolError::io("fdatasync", &path, e))?;
            if created {
                sync_dir(&self.inner.queue)
                    .map_err(|e| SpoolError::io("fsync directory", &self.inner.queue, e))?;
            }
        }
        Ok(())
    }

    /// Recipient indices already done (read from the state file).
    pub fn done(&self, id: &QueueId) -> Result<BTreeSet<usize>, SpoolError> {
        let path = self.state_path(id);
        match fs::read(&path) {
            Ok(bytes) => Ok(state::parse_done(&bytes)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(BTreeSet::new()),
            Err(e) => Err(SpoolError::io("read", &path, e)),
        }
    }

    /// Remove a message whose recipients are all done: the message first,
    /// then its state file, then the directory is fsynced. (In that order a
    /// crash can leave an orphaned state file, which `open` removes, but
    /// never a message without its state, which would be delivered again.)
    pub fn remove(&self, id: &QueueId) -> Result<(), SpoolError> {
        let path = self.queue_path(id);
        match fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(SpoolError::io("remove", &path, e)),
        }
        let state = self.state_path(id);
        match fs::remove_file(&state) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(SpoolError::io("remove", &state, e)),
        }
        lock(&self.inner.fresh).remove(id);
        if self.inner.options.fsync {
            sync_dir(&self.inner.queue)
                .map_err(|e| SpoolError::io("fsync directory", &self.inner.queue, e))?;
        }
        Ok(())
    }

    /// Returns `true` exactly once for a message committed by this process,
    /// on its first delivery attempt; `false` for messages recovered from an
    /// earlier run and for retries. A first attempt cannot find an earlier
    /// copy of itself in a mailbox, so delivery may skip the (potentially
    /// expensive) "already delivered?" scan that recovery needs.
    pub fn claim_first_attempt(&self, id: &QueueId) -> bool {
        lock(&self.inner.fresh).remove(id)
    }

    /// Take the in-process delivery lease on `id`: `None` while another
    /// attempt holds it. Two attempts on one message at once could both
    /// find a recipient not yet done and deliver it twice; holding the
    /// lease for the whole attempt rules that out. Released on drop.
    pub fn lease(&self, id: &QueueId) -> Option<DeliveryLease> {
        lock(&self.inner.leased)
            .insert(id.clone())
            .then(|| DeliveryLease {
                spool: Arc::clone(&self.inner),
                id: id.clone(),
            })
    }
}

/// Exclusive right to work on one message's delivery in this process (see
/// [`Spool::lease`]).
#[derive(Debug)]
pub struct DeliveryLease {
    spool: Arc<Inner>,
    id: QueueId,
}

impl DeliveryLease {
    /// The leased message.
    pub fn id(&self) -> &QueueId {
        &self.id
    }
}

impl Drop for DeliveryLease {
    fn drop(&mut self) {
        lock(&self.spool.leased).remove(&self.id);
    }
}

/// File names in `dir` (non-UTF-8 names are skipped: we never create them).
fn dir_names(dir: &Path) -> Result<Vec<String>, SpoolError> {
    let mut names = Vec::new();
    for entry in fs::read_dir(dir).map_err(|e| SpoolError::io("read_dir", dir, e))? {
        let entry = entry.map_err(|e| SpoolError::io("read_dir", dir, e))?;
        if let Ok(name) = entry.file_name().into_string() {
            names.push(name);
        }
    }
    Ok(names)
}

/// Reads the trailer and envelope. Outer error: I/O; inner error: corrupt.
fn read_envelope(file: &mut File) -> io::Result<Result<(Envelope, u64), String>> {
    let len = file.metadata()?.len();
    if len < TRAILER_LEN {
        return Ok(Err(format!(
            "file is {len} bytes, shorter than the trailer"
        )));
    }
    let mut trailer = [0u8; TRAILER_LEN as usize];
    file.read_exact_at(&mut trailer, len - TRAILER_LEN)?;
    if &trailer[8..] != MAGIC {
        return Ok(Err("trailer magic missing (truncated file?)".to_owned()));
    }
    let mut len_bytes = [0u8; 8];
    len_bytes.copy_from_slice(&trailer[..8]);
    let env_len = u64::from_le_bytes(len_bytes);
    if env_len > MAX_ENVELOPE || env_len > len - TRAILER_LEN {
        return Ok(Err(format!(
            "envelope length {env_len} does not fit the file"
        )));
    }
    let data_len = len - TRAILER_LEN - env_len;
    let mut json = vec![0u8; env_len as usize];
    file.read_exact_at(&mut json, data_len)?;
    let envelope: Envelope = match serde_json::from_slice(&json) {
        Ok(e) => e,
        Err(e) => return Ok(Err(format!("envelope is not valid: {e}"))),
    };
    if envelope.size != data_len {
        return Ok(Err(format!(
            "envelope says {} message bytes, file holds {data_len}",
            envelope.size
        )));
    }
    Ok(Ok((envelope, data_len)))
}

/// Where a committed message goes.
#[derive(Debug)]
enum Destination {
    /// `queue/<id>`, envelope appended: delivered later.
    Queue,
    /// Delivered by the commit itself: renamed to `path`, `dir` fsynced.
    Delivered { path: PathBuf, dir: PathBuf },
}

/// A message being received into `tmp/<id>` (or, from
/// [`Spool::create_delivered`], into a Maildir's `tmp/`). Dropping it
/// without [`commit`](Self::commit) deletes the file.
#[derive(Debug)]
pub struct IncomingMessage {
    spool: Arc<Inner>,
    id: QueueId,
    tmp_path: PathBuf,
    /// `None` once handed to the committer (or after a failed commit).
    writer: Option<BufWriter<File>>,
    size: u64,
    destination: Destination,
}

impl IncomingMessage {
    /// The id this message will have in the queue.
    pub fn id(&self) -> &QueueId {
        &self.id
    }

    /// Message bytes written so far.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Whether the commit delivers the message (made by
    /// [`Spool::create_delivered`]) rather than queueing it.
    pub fn is_delivered(&self) -> bool {
        matches!(self.destination, Destination::Delivered { .. })
    }

    /// Where a message from [`Spool::create_delivered`] will be renamed
    /// to when committed; `None` for a queued message.
    pub fn delivery_path(&self) -> Option<&Path> {
        match &self.destination {
            Destination::Delivered { path, .. } => Some(path),
            Destination::Queue => None,
        }
    }

    /// For a message from [`Spool::create_delivered`]: rename it to
    /// `final_path` instead when it is committed (e.g. a mailbox's Junk
    /// folder, once the end-of-data checks have quarantined it; it must be
    /// on the same filesystem). Returns `false`, changing nothing, for a
    /// queued message or a path without a directory.
    pub fn redirect_delivery(&mut self, final_path: PathBuf) -> bool {
        let Destination::Delivered { path, dir } = &mut self.destination else {
            return false;
        };
        let Some(parent) = final_path.parent().map(Path::to_path_buf) else {
            return false;
        };
        *path = final_path;
        *dir = parent;
        true
    }

    /// Append message bytes (buffered, blocking, not yet fsynced).
    pub fn write(&mut self, data: &[u8]) -> Result<(), SpoolError> {
        let writer = self
            .writer
            .as_mut()
            .ok_or_else(|| SpoolError::io("write", &self.tmp_path, io::Error::other("closed")))?;
        writer
            .write_all(data)
            .map_err(|e| SpoolError::io("write", &self.tmp_path, e))?;
        self.size += data.len() as u64;
        Ok(())
    }

    /// Append the envelope (its `size` set to the bytes written) and the
    /// trailer, then hand the file to the group committer. Wait on the
    /// returned [`PendingCommit`] before acknowledging the message. A
    /// message from [`Spool::create_delivered`] stores no envelope: the
    /// commit only makes its file durable under its final name.
    pub fn commit(mut self, envelope: &Envelope) -> Result<PendingCommit, SpoolError> {
        let mut writer = self
            .writer
            .take()
            .ok_or_else(|| SpoolError::io("commit", &self.tmp_path, io::Error::other("closed")))?;
        let (final_path, final_dir, queued) = match &self.destination {
            Destination::Queue => {
                let mut stored = envelope.clone();
                stored.size = self.size;
                let json = serde_json::to_vec(&stored).map_err(SpoolError::Envelope)?;
                let mut trailer = [0u8; TRAILER_LEN as usize];
                trailer[..8].copy_from_slice(&(json.len() as u64).to_le_bytes());
                trailer[8..].copy_from_slice(MAGIC);
                writer
                    .write_all(&json)
                    .and_then(|()| writer.write_all(&trailer))
                    .map_err(|e| SpoolError::io("write", &self.tmp_path, e))?;
                (
                    self.spool.queue.join(self.id.as_str()),
                    self.spool.queue.clone(),
                    true,
                )
            }
            Destination::Delivered { path, dir } => (path.clone(), dir.clone(), false),
        };
        let file = writer
            .into_inner()
            .map_err(|e| SpoolError::io("write", &self.tmp_path, e.into_error()))?;

        let (reply, rx) = oneshot::channel();
        let request = CommitRequest {
            id: self.id.clone(),
            file,
            tmp_path: self.tmp_path.clone(),
            final_path,
            final_dir,
            reply,
        };
        // Register before sending so a fast delivery can claim it.
        if queued {
            lock(&self.spool.fresh).insert(self.id.clone());
        }
        let sent = match lock(&self.spool.committer_tx).as_ref() {
            Some(tx) => tx.send(request).is_ok(),
            None => false,
        };
        if !sent {
            lock(&self.spool.fresh).remove(&self.id);
            // `self` drops here and removes the tmp file.
            return Err(SpoolError::CommitterGone);
        }
        // The committer owns the file now (it renames or removes it).
        self.tmp_path = PathBuf::new();
        Ok(PendingCommit {
            id: self.id.clone(),
            rx,
        })
    }
}

impl Drop for IncomingMessage {
    fn drop(&mut self) {
        if !self.tmp_path.as_os_str().is_empty() {
            drop(self.writer.take());
            let _ = fs::remove_file(&self.tmp_path);
        }
    }
}

/// A committed message opened for delivery.
#[derive(Debug)]
pub struct StoredMessage {
    /// Its id.
    pub id: QueueId,
    /// Its envelope as committed.
    pub envelope: Envelope,
    file: File,
    data_len: u64,
    path: PathBuf,
}

impl StoredMessage {
    /// Number of message bytes (the envelope and trailer excluded).
    pub fn data_len(&self) -> u64 {
        self.data_len
    }

    /// A reader over exactly the message bytes, from the start. Each call
    /// returns an independent reader (positioned reads; no shared offset).
    pub fn reader(&self) -> Result<impl Read + '_, SpoolError> {
        Ok(BufReader::with_capacity(
            READ_BUFFER,
            MessageReader::new(&self.file, self.data_len),
        ))
    }

    /// The queue file (for logs).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The open queue file and the number of message bytes at its start
    /// (for the [`FileStore`](crate::store::FileStore)'s owned reader).
    pub(crate) fn into_file(self) -> (File, u64) {
        (self.file, self.data_len)
    }
}

/// Reads `file[pos..end]` with positioned reads; `F` is the file or a
/// reference to it (the spool's readers borrow, the file store's own).
#[derive(Debug)]
pub(crate) struct MessageReader<F> {
    file: F,
    pos: u64,
    end: u64,
}

impl<F> MessageReader<F> {
    /// A reader over the first `end` bytes of `file`.
    pub(crate) fn new(file: F, end: u64) -> MessageReader<F> {
        MessageReader { file, pos: 0, end }
    }
}

impl<F: std::borrow::Borrow<File>> Read for MessageReader<F> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let left = self.end - self.pos;
        let want = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
        if want == 0 {
            return Ok(0);
        }
        let n = self.file.borrow().read_at(&mut buf[..want], self.pos)?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "queue file shrank while being read",
            ));
        }
        self.pos += n as u64;
        Ok(n)
    }
}
