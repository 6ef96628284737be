//! The queue-store conformance suite against PostgreSQL: each case on a
//! private cluster of its own (see `tern_queue_pg::test_cluster`), skipped
//! with a message when PostgreSQL is not installed.

use std::sync::Arc;

use tern_queue::store::suite::Harness;
use tern_queue_pg::test_cluster::TestCluster;
use tern_queue_pg::{PgConfig, PgStore};

struct Pg {
    cluster: Arc<TestCluster>,
    url: String,
    nodes: usize,
}

impl Pg {
    async fn connect(&mut self) -> PgStore {
        self.nodes += 1;
        let config = PgConfig {
            url: self.url.clone(),
            pool_size: 2,
            node: format!("node{}", self.nodes),
        };
        PgStore::connect(&config)
            .await
            .expect("connect to the test cluster")
    }
}

impl Harness for Pg {
    type Store = PgStore;

    async fn open(&mut self) -> PgStore {
        self.connect().await
    }

    async fn another(&mut self, _first: &PgStore) -> PgStore {
        // Another node: its own connections.
        self.connect().await
    }
}

async fn pg() -> Option<Pg> {
    let cluster = TestCluster::start().await.expect("start a test cluster")?;
    let url = cluster
        .create_database("queue")
        .await
        .expect("create a database");
    Some(Pg {
        cluster: Arc::new(cluster),
        url,
        nodes: 0,
    })
}

tern_queue::queue_store_suite!(pg);

/// Three nodes starting together apply the schema once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_migrate_once() {
    let Some(mut h) = pg().await else { return };
    let _keep = Arc::clone(&h.cluster);
    let configs: Vec<PgConfig> = (0..3)
        .map(|i| PgConfig {
            url: h.url.clone(),
            pool_size: 1,
            node: format!("n{i}"),
        })
        .collect();
    let tasks: Vec<_> = configs
        .into_iter()
        .map(|c| tokio::spawn(async move { PgStore::connect(&c).await }))
        .collect();
    for t in tasks {
        t.await.unwrap().expect("every node connects");
    }
    let (client, conn) = tokio_postgres::connect(&h.url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    let rows = client
        .query(
            "SELECT version FROM schema_migrations ORDER BY version",
            &[],
        )
        .await
        .unwrap();
    let versions: Vec<i32> = rows.iter().map(|r| r.get(0)).collect();
    let want: Vec<i32> = tern_queue_pg::MIGRATIONS
        .iter()
        .map(|m| m.version)
        .collect();
    assert_eq!(versions, want);
    // And a fourth, later, finds nothing to do.
    drop(h.connect().await);
    let mut raw = tokio_postgres::connect(&h.url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(raw.1);
    assert!(tern_queue_pg::migrate(&mut raw.0).await.unwrap().is_empty());
    let sync: String = client
        .query_one("SHOW synchronous_commit", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(sync, "on");
    let fsync: String = client.query_one("SHOW fsync", &[]).await.unwrap().get(0);
    assert_eq!(fsync, "on", "the test cluster syncs like production");
}
