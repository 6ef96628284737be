//! The group committer: one thread that makes queued messages durable.
//!
//! Sessions finish writing `tmp/<id>` themselves, then send a
//! commit request down a channel. The committer thread blocks for the
//! first request, then drains everything already queued into one batch and:
//!
//! 1. `fdatasync`s every file of the batch (in parallel, on the committer
//!    and a few sync threads started once with it, when the batch has more
//!    than one file, so the filesystem can merge them into one journal
//!    commit and the device sees several flushes at once);
//! 2. renames each synced file to its final name: `tmp/<id>` to
//!    `queue/<id>` for a queued message, or a Maildir's `tmp/<name>` to
//!    `new/<name>` for a message delivered at intake
//!    ([`Spool::create_delivered`](crate::Spool::create_delivered));
//! 3. `fsync`s each directory the batch renamed into **once** (one
//!    `queue/`, one `new/` per mailbox) for the whole batch;
//! 4. only then resolves each waiter's [`PendingCommit`].
//!
//! Invariant: a [`PendingCommit`] resolves `Ok` only after the file's data
//! and the directory entry naming it are on stable storage (unless the spool
//! was opened with `fsync: false`, which only tests may do). An error syncing
//! or renaming one file fails that commit alone (its file is removed); a
//! failed directory fsync fails every commit renamed into that directory,
//! and their files are unlinked again so that nothing is delivered that was
//! refused.
//!
//! This module must never resolve a commit before step 3 has succeeded for
//! its directory.

use std::fs::File;
use std::io;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, Sender, TryRecvError};
use std::thread::{self, JoinHandle};

use tokio::sync::oneshot;

use crate::error::clone_io_error;
use crate::{QueueId, SpoolError};

/// Most files made durable in one batch; keeps the latency of the last
/// waiter bounded under a flood.
const MAX_BATCH: usize = 1024;
/// Threads used to `fdatasync` one batch's files concurrently: the
/// committer itself and `SYNC_THREADS - 1` helpers.
const SYNC_THREADS: usize = 4;

/// One message waiting to be made durable.
#[derive(Debug)]
pub(crate) struct CommitRequest {
    pub(crate) id: QueueId,
    pub(crate) file: File,
    pub(crate) tmp_path: PathBuf,
    /// Where the file is renamed once its data is durable.
    pub(crate) final_path: PathBuf,
    /// The directory holding `final_path`, fsynced once per batch.
    pub(crate) final_dir: PathBuf,
    pub(crate) reply: oneshot::Sender<Result<QueueId, SpoolError>>,
}

/// A commit handed to the group committer. Wait for it before answering
/// `250`: it resolves `Ok` only once the message is on stable storage.
#[derive(Debug)]
pub struct PendingCommit {
    pub(crate) id: QueueId,
    pub(crate) rx: oneshot::Receiver<Result<QueueId, SpoolError>>,
}

impl PendingCommit {
    /// The id of the message being committed.
    pub fn id(&self) -> &QueueId {
        &self.id
    }

    /// Wait (asynchronously) until the message and the `queue/` directory
    /// entry are fsynced. `Ok` means the `250` may be sent.
    pub async fn wait(self) -> Result<QueueId, SpoolError> {
        self.rx.await.unwrap_or(Err(SpoolError::CommitterGone))
    }

    /// Like [`wait`](Self::wait), blocking the calling thread. Must not be
    /// called from inside an async runtime (tokio panics if it is).
    pub fn wait_blocking(self) -> Result<QueueId, SpoolError> {
        self.rx
            .blocking_recv()
            .unwrap_or(Err(SpoolError::CommitterGone))
    }
}

/// Counters that show group commit at work.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) commits: AtomicU64,
    pub(crate) failed_commits: AtomicU64,
    pub(crate) batches: AtomicU64,
    pub(crate) dir_fsyncs: AtomicU64,
    pub(crate) file_syncs: AtomicU64,
    pub(crate) largest_batch: AtomicU64,
    /// Batches by size: `batch_sizes[i]` counts batches of at most
    /// [`BATCH_SIZE_BOUNDS`]`[i]` files (and more than the bound before);
    /// the last counts the rest.
    pub(crate) batch_sizes: [AtomicU64; BATCH_SIZE_BUCKETS],
    /// Files in all batches (the histogram's sum).
    pub(crate) batched_files: AtomicU64,
}

/// Upper bounds of the batch-size buckets of [`SpoolStats::batch_sizes`]
/// (the last bucket, past 1024, ends at the committer's largest batch).
pub const BATCH_SIZE_BOUNDS: [u64; BATCH_SIZE_BUCKETS] =
    [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024];
/// How many batch-size buckets there are.
pub const BATCH_SIZE_BUCKETS: usize = 11;

/// A snapshot of the spool's commit counters (see [`Spool::stats`](crate::Spool::stats)).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SpoolStats {
    /// Commits resolved `Ok`.
    pub commits: u64,
    /// Commits resolved with an error.
    pub failed_commits: u64,
    /// Batches processed by the committer.
    pub batches: u64,
    /// `fsync`s of directories (one per directory and batch when fsync is
    /// on: `queue/`, and `new/` of each mailbox delivered at intake).
    pub dir_fsyncs: u64,
    /// `fdatasync`s of message files.
    pub file_syncs: u64,
    /// The largest batch seen.
    pub largest_batch: u64,
    /// How many batches had at most [`BATCH_SIZE_BOUNDS`]`[i]` files (and
    /// more than the bound before): a histogram of group-commit sizes.
    pub batch_sizes: [u64; BATCH_SIZE_BUCKETS],
    /// Files in all batches.
    pub batched_files: u64,
}

impl Counters {
    pub(crate) fn snapshot(&self) -> SpoolStats {
        SpoolStats {
            commits: self.commits.load(Ordering::Relaxed),
            failed_commits: self.failed_commits.load(Ordering::Relaxed),
            batches: self.batches.load(Ordering::Relaxed),
            dir_fsyncs: self.dir_fsyncs.load(Ordering::Relaxed),
            file_syncs: self.file_syncs.load(Ordering::Relaxed),
            largest_batch: self.largest_batch.load(Ordering::Relaxed),
            batch_sizes: std::array::from_fn(|i| self.batch_sizes[i].load(Ordering::Relaxed)),
            batched_files: self.batched_files.load(Ordering::Relaxed),
        }
    }
}

/// State owned by the committer thread.
#[derive(Debug)]
pub(crate) struct Committer {
    pub(crate) rx: Receiver<CommitRequest>,
    pub(crate) fsync: bool,
    pub(crate) counters: Arc<Counters>,
}

impl Committer {
    /// Runs until every sender is gone and the channel is drained.
    pub(crate) fn run(self) {
        let pool = SyncPool::start(SYNC_THREADS - 1);
        let mut batch = Vec::new();
        while let Ok(first) = self.rx.recv() {
            batch.push(first);
            while batch.len() < MAX_BATCH {
                match self.rx.try_recv() {
                    Ok(req) => batch.push(req),
                    Err(TryRecvError::Empty | TryRecvError::Disconnected) => break,
                }
            }
            self.commit_batch(&mut batch, &pool);
        }
        pool.stop();
    }

    fn commit_batch(&self, batch: &mut Vec<CommitRequest>, pool: &SyncPool) {
        let n = batch.len() as u64;
        self.counters.batches.fetch_add(1, Ordering::Relaxed);
        self.counters.largest_batch.fetch_max(n, Ordering::Relaxed);
        let bucket = BATCH_SIZE_BOUNDS
            .iter()
            .position(|&b| n <= b)
            .unwrap_or(BATCH_SIZE_BUCKETS - 1);
        self.counters.batch_sizes[bucket].fetch_add(1, Ordering::Relaxed);
        self.counters.batched_files.fetch_add(n, Ordering::Relaxed);

        // 1. Make every file's data durable (the files are closed there).
        let mut files = Vec::with_capacity(batch.len());
        let mut waiting = Vec::with_capacity(batch.len());
        for req in batch.drain(..) {
            let CommitRequest {
                id,
                file,
                tmp_path,
                final_path,
                final_dir,
                reply,
            } = req;
            files.push(file);
            waiting.push((id, tmp_path, final_path, final_dir, reply));
        }
        let synced = if self.fsync {
            self.counters.file_syncs.fetch_add(n, Ordering::Relaxed);
            pool.sync_all_data(files)
        } else {
            drop(files);
            waiting.iter().map(|_| Ok(())).collect()
        };

        // 2. Rename the good ones to their final names.
        let mut renamed = Vec::with_capacity(waiting.len());
        for ((id, tmp_path, final_path, final_dir, reply), result) in
            waiting.into_iter().zip(synced)
        {
            let result = result
                .map_err(|e| SpoolError::io("fdatasync", &tmp_path, e))
                .and_then(|()| match std::fs::rename(&tmp_path, &final_path) {
                    // The destination directory is gone (a Maildir's `new/`
                    // removed by hand): make it again, durably, and retry.
                    Err(e) if e.kind() == io::ErrorKind::NotFound && tmp_path.exists() => {
                        create_dir_durable(&final_dir, self.fsync)
                            .and_then(|()| std::fs::rename(&tmp_path, &final_path))
                            .map_err(|e| SpoolError::io("rename", &tmp_path, e))
                    }
                    other => other.map_err(|e| SpoolError::io("rename", &tmp_path, e)),
                });
            match result {
                Ok(()) => renamed.push((id, final_path, final_dir, reply)),
                Err(err) => {
                    let _ = std::fs::remove_file(&tmp_path);
                    self.counters.failed_commits.fetch_add(1, Ordering::Relaxed);
                    let _ = reply.send(Err(err));
                }
            }
        }
        if renamed.is_empty() {
            return;
        }

        // 3. One fsync per directory makes every rename of the batch durable.
        let mut dirs: Vec<(&PathBuf, io::Result<()>)> = Vec::new();
        for (_, _, dir, _) in &renamed {
            if dirs.iter().any(|(d, _)| *d == dir) {
                continue;
            }
            let result = if self.fsync {
                self.counters.dir_fsyncs.fetch_add(1, Ordering::Relaxed);
                sync_dir(dir)
            } else {
                Ok(())
            };
            dirs.push((dir, result));
        }
        let failed: Vec<(PathBuf, io::Error)> = dirs
            .into_iter()
            .filter_map(|(d, r)| r.err().map(|e| (d.clone(), e)))
            .collect();

        // 4. Only now tell the waiters.
        for (id, path, dir, reply) in renamed {
            match failed.iter().find(|(d, _)| *d == dir) {
                None => {
                    self.counters.commits.fetch_add(1, Ordering::Relaxed);
                    let _ = reply.send(Ok(id));
                }
                Some((_, e)) => {
                    self.counters.failed_commits.fetch_add(1, Ordering::Relaxed);
                    // Refused messages must not be delivered later.
                    let _ = std::fs::remove_file(&path);
                    let _ = reply.send(Err(SpoolError::io(
                        "fsync directory",
                        &dir,
                        clone_io_error(e),
                    )));
                }
            }
        }
    }
}

/// One part of a batch for a sync thread: the files with their places in
/// the batch, and where to send each file's result. The thread closes the
/// files once synced.
struct SyncJob {
    files: Vec<(usize, File)>,
    done: Sender<Vec<(usize, io::Result<()>)>>,
}

/// The committer's helper threads, started once: starting threads for
/// every batch cost a `clone3` and a dozen other system calls each, per
/// batch (measured with `strace -c`: more syscalls than the messages'
/// own).
struct SyncPool {
    workers: Vec<(Sender<SyncJob>, JoinHandle<()>)>,
}

impl SyncPool {
    /// Starts up to `n` threads; fewer (even none) if the system refuses
    /// some, in which case the committer syncs more files itself.
    fn start(n: usize) -> SyncPool {
        let mut workers = Vec::with_capacity(n);
        for _ in 0..n {
            let (tx, rx) = mpsc::channel::<SyncJob>();
            let spawned = thread::Builder::new()
                .name("tern-spool-sync".into())
                .spawn(move || {
                    while let Ok(job) = rx.recv() {
                        let results = job
                            .files
                            .into_iter()
                            .map(|(i, file)| (i, file.sync_data()))
                            .collect();
                        let _ = job.done.send(results);
                    }
                });
            if let Ok(handle) = spawned {
                workers.push((tx, handle));
            }
        }
        SyncPool { workers }
    }

    /// `fdatasync` every file, the first part on this thread and the others
    /// on the pool's threads at the same time; the results are in the
    /// files' order. Every file is closed when this returns.
    fn sync_all_data(&self, files: Vec<File>) -> Vec<io::Result<()>> {
        let n = files.len();
        let parts = n.min(self.workers.len() + 1).max(1);
        if parts == 1 {
            return files.into_iter().map(|f| f.sync_data()).collect();
        }
        let chunk = n.div_ceil(parts);
        let mut jobs: Vec<Vec<(usize, File)>> = (0..parts).map(|_| Vec::new()).collect();
        for (i, file) in files.into_iter().enumerate() {
            jobs[i / chunk].push((i, file));
        }
        let mut results: Vec<Option<io::Result<()>>> = (0..n).map(|_| None).collect();
        let (done_tx, done_rx) = mpsc::channel();
        let mut jobs = jobs.into_iter();
        let mine = jobs.next().unwrap_or_default();
        let mut sent = 0;
        for (job, (worker, _)) in jobs.zip(&self.workers) {
            let job = SyncJob {
                files: job,
                done: done_tx.clone(),
            };
            match worker.send(job) {
                Ok(()) => sent += 1,
                // The thread is gone: sync its part here.
                Err(mpsc::SendError(job)) => {
                    for (i, file) in job.files {
                        results[i] = Some(file.sync_data());
                    }
                }
            }
        }
        drop(done_tx);
        for (i, file) in mine {
            results[i] = Some(file.sync_data());
        }
        for _ in 0..sent {
            match done_rx.recv() {
                Ok(part) => {
                    for (i, r) in part {
                        results[i] = Some(r);
                    }
                }
                // A sync thread died mid-job: its files count as failed.
                Err(_) => break,
            }
        }
        results
            .into_iter()
            .map(|r| r.unwrap_or_else(|| Err(io::Error::other("fdatasync thread failed"))))
            .collect()
    }

    /// Closes the job channels and waits for the threads.
    fn stop(self) {
        for (tx, handle) in self.workers {
            drop(tx);
            let _ = handle.join();
        }
    }
}

/// Creates `dir` and any missing parent (0700), then, when `fsync` is on,
/// fsyncs the parent of each directory it created so that they survive a
/// crash before the files renamed into them do.
fn create_dir_durable(dir: &std::path::Path, fsync: bool) -> io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    let mut missing = Vec::new();
    let mut p = Some(dir);
    while let Some(d) = p {
        if d.exists() {
            break;
        }
        missing.push(d);
        p = d.parent();
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    if fsync {
        for d in missing.iter().rev() {
            if let Some(parent) = d.parent().filter(|p| !p.as_os_str().is_empty()) {
                sync_dir(parent)?;
            }
        }
    }
    Ok(())
}

/// `fsync` a directory so that the entries created or removed in it are
/// durable.
pub(crate) fn sync_dir(path: &std::path::Path) -> io::Result<()> {
    File::open(path)?.sync_all()
}

#[cfg(test)]
mod tests {
    use std::os::fd::OwnedFd;

    use super::*;

    fn temp_files(dir: &std::path::Path, n: usize) -> Vec<File> {
        (0..n)
            .map(|i| File::create(dir.join(format!("f{i}"))).unwrap())
            .collect()
    }

    /// A file whose fdatasync fails (EINVAL on a pipe).
    fn unsyncable() -> File {
        let (reader, _writer) = std::io::pipe().unwrap();
        File::from(OwnedFd::from(reader))
    }

    #[test]
    fn pool_syncs_every_file_and_keeps_the_order_of_results() {
        let dir = tempfile::tempdir().unwrap();
        let pool = SyncPool::start(3);
        assert_eq!(pool.workers.len(), 3);
        for n in [1, 2, 3, 4, 5, 17] {
            let mut files = temp_files(dir.path(), n);
            // One failing file at a different place each time: its error
            // must come back in its own slot, whichever thread synced it.
            let bad = n / 2;
            files[bad] = unsyncable();
            let results = pool.sync_all_data(files);
            assert_eq!(results.len(), n);
            for (i, r) in results.iter().enumerate() {
                assert_eq!(r.is_err(), i == bad, "file {i} of {n}: {r:?}");
            }
        }
        // The same threads serve every batch, and stop when told.
        pool.stop();
    }

    #[test]
    fn pool_without_threads_syncs_on_the_caller() {
        let dir = tempfile::tempdir().unwrap();
        let pool = SyncPool::start(0);
        let results = pool.sync_all_data(temp_files(dir.path(), 6));
        assert_eq!(results.len(), 6);
        assert!(results.iter().all(Result::is_ok));
        assert!(pool.sync_all_data(Vec::new()).is_empty());
        pool.stop();
    }
}
