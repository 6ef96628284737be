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
            password: None,
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
    let configs: Vec<PgConfig> = (0..3)
        .map(|i| PgConfig {
            password: None,
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

/// From a@example.test to b@example.net.
fn one_recipient_envelope() -> tern_queue::Envelope {
    use tern_queue::{Envelope, Recipient};
    Envelope {
        sender: "a@example.test"
            .parse::<tern_types::Mailbox>()
            .unwrap()
            .into(),
        recipients: vec![Recipient::new("b@example.net".parse().unwrap())],
        ..Envelope::default()
    }
}

/// Without PostgreSQL the tests skip (saying so), or fail when CI requires
/// it (`TERN_PG_REQUIRED=1`).
#[tokio::test]
async fn missing_postgres_skips_or_fails_when_required() {
    let result = TestCluster::start_with(None).await;
    let required = std::env::var_os("TERN_PG_REQUIRED").is_some_and(|v| v == "1");
    match result {
        Ok(None) => assert!(!required),
        Err(e) => {
            assert!(required, "{e}");
            assert!(e.to_string().contains("postgresql-15"), "{e}");
        }
        Ok(Some(_)) => panic!("a cluster without binaries"),
    }
}

/// Committed means committed: after the database server crashes
/// (immediate shutdown, WAL replay on restart) every committed message is
/// there, and a store connected before the crash reconnects by itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commits_survive_a_database_crash() {
    use std::io::Read;
    use tern_queue::store::{IncomingBody, QueueStore, StoreError};

    let Some(mut h) = pg().await else { return };
    let store = h.connect().await;
    let envelope = one_recipient_envelope();
    let mut ids = Vec::new();
    for i in 0..5 {
        let mut m = store.create().unwrap();
        m.write(format!("Subject: {i}\r\n\r\nbody {i}\r\n").as_bytes())
            .unwrap();
        ids.push(store.commit(m, &envelope).await.unwrap());
    }
    let lease = store.lease(&ids[0], 10, 60).await.unwrap().unwrap();

    Arc::get_mut(&mut h.cluster)
        .expect("only the harness holds the cluster")
        .crash();
    assert!(store.list().await.is_err(), "the server is down");
    // No commit can succeed while the database is down (no 250 without it).
    let mut m = store.create().unwrap();
    m.write(b"Subject: lost\r\n\r\nnot durable\r\n").unwrap();
    let lost = m.id().clone();
    assert!(store.commit(m, &envelope).await.is_err());
    Arc::get_mut(&mut h.cluster)
        .unwrap()
        .restart()
        .await
        .expect("restart after the crash");

    // The old handle reconnects; a new one (a restarted node) sees the same.
    for s in [store.clone(), h.connect().await] {
        assert_eq!(s.list().await.unwrap(), ids);
        for (i, id) in ids.iter().enumerate() {
            let mut m = s.open(id).await.unwrap();
            let mut body = String::new();
            m.body.read_to_string(&mut body).unwrap();
            assert_eq!(body, format!("Subject: {i}\r\n\r\nbody {i}\r\n"));
        }
    }
    assert!(store.open(&lost).await.unwrap_err().is_not_found());
    // The lease taken before the crash is still held (it is data).
    assert_eq!(store.lease(&ids[0], 20, 60).await.unwrap(), None);
    store.release(lease).await.unwrap();
    assert!(store.lease(&ids[0], 20, 60).await.unwrap().is_some());
}

/// The metrics' count of the whole queue: active (a recipient never
/// attempted), deferred (every open recipient recorded), held.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_counts_cover_every_node_in_one_statement() {
    use tern_queue::RecipientState;
    use tern_queue::store::{IncomingBody, QueueStore};

    let Some(mut h) = pg().await else { return };
    let store = h.connect().await;
    assert_eq!(store.state_counts().await.unwrap(), [(0, 0); 3]);
    let envelope = one_recipient_envelope();
    let mut ids = Vec::new();
    for _ in 0..4 {
        let mut m = store.create().unwrap();
        m.write(b"Subject: x\r\n\r\nbody\r\n").unwrap();
        ids.push(store.commit(m, &envelope).await.unwrap());
    }
    // Another node's handle sees and changes the same queue.
    let other = h.connect().await;
    other.set_hold(&ids[0], true).await.unwrap();
    let lease = other.lease(&ids[1], 10, 60).await.unwrap().unwrap();
    let deferred = RecipientState::Deferred {
        attempts: 1,
        last_error: "451 4.4.1 no answer".into(),
        next_attempt: 9_999,
    };
    other.record_states(&lease, &[(0, deferred)]).await.unwrap();
    other.release(lease).await.unwrap();
    let counts = store.state_counts().await.unwrap();
    assert_eq!(
        counts.map(|(n, _)| n),
        [2, 1, 1],
        "active, deferred, held: {counts:?}"
    );
}
