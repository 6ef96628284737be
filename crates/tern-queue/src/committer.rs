//! The group committer: one thread that makes queued messages durable.
//!
//! Sessions finish writing `tmp/<id>` themselves, then send a
//! commit request down a channel. The committer thread blocks for the
//! first request, then drains everything already queued into one batch and:
//!
//! 1. `fdatasync`s every file of the batch (in parallel on a few scoped
//!    threads when the batch has more than one file, so the filesystem can
//!    merge them into one journal commit);
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
use std::sync::mpsc::{Receiver, TryRecvError};
use std::thread;

use tokio::sync::oneshot;

use crate::error::clone_io_error;
use crate::{QueueId, SpoolError};

/// Most files made durable in one batch; keeps the latency of the last
/// waiter bounded under a flood.
const MAX_BATCH: usize = 1024;
/// Threads used to `fdatasync` one batch's files concurrently.
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
}

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
        let mut batch = Vec::new();
        while let Ok(first) = self.rx.recv() {
            batch.push(first);
            while batch.len() < MAX_BATCH {
                match self.rx.try_recv() {
                    Ok(req) => batch.push(req),
                    Err(TryRecvError::Empty | TryRecvError::Disconnected) => break,
                }
            }
            self.commit_batch(&mut batch);
        }
    }

    fn commit_batch(&self, batch: &mut Vec<CommitRequest>) {
        let n = batch.len() as u64;
        self.counters.batches.fetch_add(1, Ordering::Relaxed);
        self.counters.largest_batch.fetch_max(n, Ordering::Relaxed);

        // 1. Make every file's data durable.
        let synced = if self.fsync {
            self.counters.file_syncs.fetch_add(n, Ordering::Relaxed);
            sync_all_data(batch)
        } else {
            batch.iter().map(|_| Ok(())).collect()
        };

        // 2. Rename the good ones to their final names.
        let mut renamed = Vec::with_capacity(batch.len());
        for (req, result) in batch.drain(..).zip(synced) {
            let CommitRequest {
                id,
                file,
                tmp_path,
                final_path,
                final_dir,
                reply,
            } = req;
            drop(file);
            let result = result
                .map_err(|e| SpoolError::io("fdatasync", &tmp_path, e))
                .and_then(|()| {
                    std::fs::rename(&tmp_path, &final_path)
                        .map_err(|e| SpoolError::io("rename", &tmp_path, e))
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

/// `fdatasync` every file of the batch, on up to [`SYNC_THREADS`] threads.
fn sync_all_data(batch: &[CommitRequest]) -> Vec<io::Result<()>> {
    if batch.len() == 1 {
        return vec![batch[0].file.sync_data()];
    }
    let workers = batch.len().min(SYNC_THREADS);
    let chunk = batch.len().div_ceil(workers);
    let mut results: Vec<io::Result<()>> = Vec::with_capacity(batch.len());
    thread::scope(|scope| {
        let mut handles = Vec::with_capacity(workers);
        for part in batch.chunks(chunk) {
            let job = move || part.iter().map(|r| r.file.sync_data()).collect::<Vec<_>>();
            match thread::Builder::new()
                .name("tern-spool-sync".into())
                .spawn_scoped(scope, job)
            {
                Ok(handle) => handles.push(Ok(handle)),
                // Could not start a thread: do this part here instead.
                Err(_) => handles.push(Err(part)),
            }
        }
        for handle in handles {
            match handle {
                Ok(h) => match h.join() {
                    Ok(part_results) => results.extend(part_results),
                    Err(_) => {
                        // A panicking sync thread: treat its files as failed.
                        results.extend(
                            (0..chunk).map(|_| Err(io::Error::other("fdatasync thread panicked"))),
                        );
                    }
                },
                Err(part) => results.extend(part.iter().map(|r| r.file.sync_data())),
            }
        }
    });
    results.truncate(batch.len());
    results
}

/// `fsync` a directory so that the entries created or removed in it are
/// durable.
pub(crate) fn sync_dir(path: &std::path::Path) -> io::Result<()> {
    File::open(path)?.sync_all()
}
