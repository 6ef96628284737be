//! The queue-store suite through [`AnyStore`] (over the file backend, so it
//! always runs), and the refusal to mix backends.

use tern_queue::store::suite::Harness;
use tern_queue::store::{FileStore, QueueStore};
use tern_queue::{Envelope, Spool, SpoolOptions};
use tern_queue_pg::test_cluster::TestCluster;
use tern_queue_pg::{AnyStore, AnyStoreError, PgConfig, PgStore};

struct AnyFiles {
    dir: tempfile::TempDir,
}

impl Harness for AnyFiles {
    type Store = AnyStore;

    async fn open(&mut self) -> AnyStore {
        let spool = Spool::open(self.dir.path(), SpoolOptions::default()).expect("open the spool");
        AnyStore::File(FileStore::new(spool))
    }

    async fn another(&mut self, first: &AnyStore) -> AnyStore {
        first.clone()
    }
}

async fn any_files() -> Option<AnyFiles> {
    Some(AnyFiles {
        dir: tempfile::tempdir().expect("temp dir"),
    })
}

tern_queue::queue_store_suite!(any_files);

/// A message received by one backend cannot be committed to the other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backends_do_not_mix() {
    let Some(cluster) = TestCluster::start().await.expect("test cluster") else {
        return;
    };
    let url = cluster.create_database("mix").await.unwrap();
    let pg = AnyStore::Postgres(
        PgStore::connect(&PgConfig {
            password: None,
            url,
            pool_size: 1,
            node: "n".into(),
        })
        .await
        .unwrap(),
    );
    let dir = tempfile::tempdir().unwrap();
    let file = AnyStore::File(FileStore::new(
        Spool::open(dir.path(), SpoolOptions::default()).unwrap(),
    ));
    let from_pg = pg.create().unwrap();
    let err = file
        .commit(from_pg, &Envelope::default())
        .await
        .unwrap_err();
    assert!(matches!(err, AnyStoreError::WrongBackend), "{err}");
    let from_file = file.create().unwrap();
    let err = pg
        .commit(from_file, &Envelope::default())
        .await
        .unwrap_err();
    assert!(matches!(err, AnyStoreError::WrongBackend), "{err}");
    assert!(file.list().await.unwrap().is_empty());
    assert!(pg.list().await.unwrap().is_empty());
}
