//! The queue-store conformance suite against the file backend
//! ([`FileStore`] over a [`Spool`] in a temporary directory).

use tern_queue::store::FileStore;
use tern_queue::store::suite::Harness;
use tern_queue::{Spool, SpoolOptions};

struct Files {
    dir: tempfile::TempDir,
}

impl Harness for Files {
    type Store = FileStore;

    async fn open(&mut self) -> FileStore {
        let spool = Spool::open(self.dir.path(), SpoolOptions::default()).expect("open the spool");
        FileStore::new(spool)
    }

    async fn another(&mut self, first: &FileStore) -> FileStore {
        // One process holds a spool: a second handle is a clone.
        first.clone()
    }
}

async fn files() -> Option<Files> {
    Some(Files {
        dir: tempfile::tempdir().expect("temp dir"),
    })
}

tern_queue::queue_store_suite!(files);
