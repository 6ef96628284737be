//! Commit and delivery-pass throughput of a queue backend (for
//! `bench/queue-backends.sh`; prints figures, never judges them).
//!
//! ```text
//! queue_bench <file|postgres> <messages> <size> <concurrency>
//! ```
//!
//! `file`: a spool in a temporary directory (fsync on, the default).
//! `postgres`: `$TERN_BENCH_PG_URL` when set, else a private test cluster
//! (`fsync = on`, `synchronous_commit = on`). Two phases: `commit` (each
//! of `concurrency` tasks commits its share of the messages; a commit
//! returns when durable) and `pass` (tasks lease due messages in batches of
//! 16, record every recipient delivered and remove the message).

use std::time::Instant;

use tern_queue::store::{FileStore, IncomingBody, QueueStore};
use tern_queue::{Envelope, Recipient, RecipientState, Spool, SpoolOptions};
use tern_queue_pg::test_cluster::TestCluster;
use tern_queue_pg::{PgConfig, PgStore};

fn usage() -> ! {
    eprintln!("usage: queue_bench <file|postgres> <messages> <size> <concurrency>");
    std::process::exit(2)
}

fn arg(args: &[String], i: usize) -> usize {
    args.get(i)
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| usage())
}

async fn run<S: QueueStore>(label: &str, store: S, messages: usize, size: usize, tasks: usize) {
    let envelope = Envelope {
        sender: "bench@example.test"
            .parse::<tern_types::Mailbox>()
            .unwrap()
            .into(),
        recipients: vec![Recipient::new("sink@example.net".parse().unwrap())],
        ..Envelope::default()
    };
    let body = vec![b'x'; size];
    let started = Instant::now();
    let mut handles = Vec::new();
    for t in 0..tasks {
        let (store, envelope, body) = (store.clone(), envelope.clone(), body.clone());
        let share = messages / tasks + usize::from(t < messages % tasks);
        handles.push(tokio::spawn(async move {
            for _ in 0..share {
                let mut m = store.create().expect("create");
                m.write(&body).expect("write");
                store.commit(m, &envelope).await.expect("commit");
            }
        }));
    }
    for h in handles {
        h.await.expect("commit task");
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "{label:10} commit  {messages:6} msgs x {size:7} B, {tasks:3} tasks: {:9.1} msg/s  ({secs:.2} s)",
        messages as f64 / secs
    );

    let started = Instant::now();
    let mut handles = Vec::new();
    for _ in 0..tasks {
        let store = store.clone();
        handles.push(tokio::spawn(async move {
            let mut done = 0usize;
            loop {
                let leases = store.lease_due(u64::MAX / 4, 600, 16).await.expect("lease");
                if leases.is_empty() {
                    return done;
                }
                for lease in leases {
                    let delivered = RecipientState::Delivered {
                        at: 1,
                        reply: "250 ok".into(),
                    };
                    store
                        .record_states(&lease, &[(0, delivered)])
                        .await
                        .expect("record");
                    store.remove(lease).await.expect("remove");
                    done += 1;
                }
            }
        }));
    }
    let mut passed = 0;
    for h in handles {
        passed += h.await.expect("pass task");
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "{label:10} pass    {passed:6} msgs (lease, record, remove), {tasks:3} tasks: {:9.1} msg/s  ({secs:.2} s)",
        passed as f64 / secs
    );
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (messages, size, tasks) = (arg(&args, 2), arg(&args, 3), arg(&args, 4).max(1));
    match args.get(1).map(String::as_str) {
        Some("file") => {
            let dir = tempfile::tempdir().expect("temp dir");
            let spool = Spool::open(dir.path(), SpoolOptions::default()).expect("spool");
            run("file", FileStore::new(spool), messages, size, tasks).await;
        }
        Some("postgres") => {
            let (_cluster, url) = match std::env::var("TERN_BENCH_PG_URL") {
                Ok(url) => (None, url),
                Err(_) => {
                    let Some(cluster) = TestCluster::start().await.expect("test cluster") else {
                        println!("postgres   skipped: PostgreSQL is not installed");
                        return;
                    };
                    let url = cluster.create_database("bench").await.expect("database");
                    (Some(cluster), url)
                }
            };
            let config = PgConfig {
                password: None,
                url,
                pool_size: tasks.min(32),
                node: "bench".into(),
            };
            let store = PgStore::connect(&config).await.expect("connect");
            run("postgres", store, messages, size, tasks).await;
        }
        _ => usage(),
    }
}
