//! The local delivery agent: drains committed messages from the spool into
//! Maildirs, off the async runtime.
//!
//! Sessions hand it a queue id right after the 250; at start-up it is fed
//! every message the spool still holds (crash recovery). Each delivery runs
//! in `spawn_blocking` (Maildir writes fsync). A message with a deferred
//! recipient is retried later with a growing delay; it stays in the spool
//! meanwhile, so a restart resumes it. It must never drop a message: the
//! spool is the record, this task only works it off.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tern_delivery::deliver_local;
use tern_queue::{QueueId, Spool};
use tern_store::MailStore;
use tokio::sync::{Semaphore, mpsc, watch};
use tokio::task::JoinSet;
use tracing::{info, warn};

/// First retry delay for a deferred local recipient; doubles up to [`MAX_RETRY`].
const FIRST_RETRY: Duration = Duration::from_secs(60);
/// Longest delay between two local delivery attempts.
const MAX_RETRY: Duration = Duration::from_secs(3600);

/// Where sessions post freshly committed messages.
#[derive(Debug, Clone)]
pub struct DeliveryHandle {
    tx: mpsc::UnboundedSender<QueueId>,
}

impl DeliveryHandle {
    /// Queues `id` for delivery. If the agent has stopped the message simply
    /// stays in the spool and is picked up at the next start.
    pub fn submit(&self, id: QueueId) {
        let _ = self.tx.send(id);
    }
}

/// Settings for the local delivery agent.
#[derive(Debug, Clone)]
pub struct DeliveryAgent {
    /// The spool to drain.
    pub spool: Spool,
    /// Where mailboxes live.
    pub store: Arc<MailStore>,
    /// Our host name, used in Maildir file names.
    pub hostname: String,
    /// Deliveries running at once.
    pub concurrency: usize,
}

impl DeliveryAgent {
    /// Starts the agent. It first queues everything the spool holds, then
    /// serves new submissions until `shutdown` turns true; in-flight
    /// deliveries finish before the returned task completes.
    pub fn start(
        self,
        shutdown: watch::Receiver<bool>,
    ) -> (DeliveryHandle, tokio::task::JoinHandle<()>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let handle = DeliveryHandle { tx: tx.clone() };
        match self.spool.list() {
            Ok(ids) => {
                if !ids.is_empty() {
                    info!(count = ids.len(), "resuming delivery of spooled messages");
                }
                for id in ids {
                    let _ = tx.send(id);
                }
            }
            Err(e) => {
                warn!(error = %e, "cannot list the spool; queued messages wait for the next start")
            }
        }
        let task = tokio::spawn(self.run(rx, tx, shutdown));
        (handle, task)
    }

    async fn run(
        self,
        mut rx: mpsc::UnboundedReceiver<QueueId>,
        retry_tx: mpsc::UnboundedSender<QueueId>,
        mut shutdown: watch::Receiver<bool>,
    ) {
        let limit = Arc::new(Semaphore::new(self.concurrency.max(1)));
        let mut running: JoinSet<(QueueId, bool)> = JoinSet::new();
        let mut attempts: HashMap<QueueId, u32> = HashMap::new();
        let mut retries: JoinSet<()> = JoinSet::new();
        loop {
            if *shutdown.borrow() {
                break;
            }
            tokio::select! {
                _ = shutdown.changed() => break,
                Some(done) = running.join_next(), if !running.is_empty() => {
                    let Ok((id, deferred)) = done else { continue };
                    if deferred {
                        let n = attempts.entry(id.clone()).or_insert(0);
                        let delay = FIRST_RETRY.saturating_mul(1u32 << (*n).min(6)).min(MAX_RETRY);
                        *n += 1;
                        info!(queue_id = %id, retry_in = ?delay, "local delivery deferred");
                        let tx = retry_tx.clone();
                        retries.spawn(async move {
                            tokio::time::sleep(delay).await;
                            let _ = tx.send(id);
                        });
                    } else {
                        attempts.remove(&id);
                    }
                }
                Some(()) = async { retries.join_next().await.map(|_| ()) }, if !retries.is_empty() => {}
                Some(id) = rx.recv() => {
                    let Ok(permit) = Arc::clone(&limit).acquire_owned().await else { break };
                    let spool = self.spool.clone();
                    let store = Arc::clone(&self.store);
                    let hostname = self.hostname.clone();
                    running.spawn(async move {
                        let _permit = permit;
                        let task_id = id.clone();
                        let result = tokio::task::spawn_blocking(move || {
                            deliver_local(&spool, &store, &hostname, &task_id)
                        })
                        .await;
                        let deferred = match result {
                            Ok(Ok(report)) => {
                                for (index, mailbox) in &report.delivered {
                                    info!(queue_id = %id, rcpt = index, to = %mailbox, status = "delivered", "delivered to maildir");
                                }
                                for (index, address, error) in &report.deferred {
                                    warn!(queue_id = %id, rcpt = index, to = %address, status = "deferred", error = %error, "local delivery deferred");
                                }
                                if report.remote_pending > 0 {
                                    info!(queue_id = %id, remote = report.remote_pending, "remote recipients wait in the queue for outbound delivery");
                                }
                                if report.removed {
                                    info!(queue_id = %id, "removed from queue: all recipients done");
                                }
                                !report.deferred.is_empty()
                            }
                            Ok(Err(e)) => {
                                warn!(queue_id = %id, error = %e, "local delivery failed; will retry");
                                true
                            }
                            Err(e) => {
                                warn!(queue_id = %id, error = %e, "local delivery task died; will retry");
                                true
                            }
                        };
                        (id, deferred)
                    });
                }
            }
        }
        // Let in-flight deliveries finish: each is a few fsyncs.
        while running.join_next().await.is_some() {}
        retries.abort_all();
    }
}
