//! The handle sessions use to announce freshly committed messages to the
//! queue manager ([`crate::queue::QueueManager`]).
//!
//! Announcing is an optimisation, never the record: a message the manager
//! does not hear about (it stopped, the channel closed) is still in the
//! spool and is picked up at the next start.

use tern_queue::QueueId;
use tokio::sync::mpsc;

/// Where sessions post freshly committed messages.
#[derive(Debug, Clone)]
pub struct DeliveryHandle {
    tx: mpsc::UnboundedSender<QueueId>,
}

impl DeliveryHandle {
    pub(crate) fn new(tx: mpsc::UnboundedSender<QueueId>) -> Self {
        DeliveryHandle { tx }
    }

    /// Queues `id` for delivery now.
    pub fn submit(&self, id: QueueId) {
        let _ = self.tx.send(id);
    }
}
