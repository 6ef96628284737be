//! `tern_queue_messages` with a shared queue (`[queue] backend =
//! "postgres"`): the gauges count the database — every node's messages —
//! not the node's own spool, which a shared queue leaves empty. One test in
//! its own binary: the metrics are one registry per process.

mod common;

use std::time::{Duration, Instant};

use common::Raw;
use tern_queue_pg::test_cluster::TestCluster;

fn gauge(text: &str, series: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_gauges_count_the_shared_database() {
    let Some(mut cluster) = TestCluster::start().await.expect("PostgreSQL test cluster") else {
        return;
    };
    let url = cluster.create_database("tern_metrics").await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    // No DNS answers (a closed port): the remote recipient is deferred.
    let config = tern::Config::parse(&format!(
        "hostname = \"mx.example.test\"\ndata_dir = {:?}\n\
         trusted_networks = [\"127.0.0.0/8\"]\n\
         [[listener]]\naddress = \"127.0.0.1:0\"\nrole = \"mx\"\n\
         [[listener]]\naddress = \"127.0.0.1:0\"\nrole = \"admin\"\n\
         [domains.\"example.test\"]\nmailboxes = [\"alice\"]\n\
         [queue]\nbackend = \"postgres\"\nurl = {url:?}\npool_size = 2\n\
         [dns]\nnameservers = [\"127.0.0.1:9\"]\n\
         [mail_auth]\nenabled = false\n",
        dir.path().join("data")
    ))
    .unwrap();
    let running = tern::start(&config).await.unwrap();
    let (mx, admin) = (running.addrs()[0], running.addrs()[1]);
    // `/readyz` asks the shared queue's database (not ready as a whole:
    // this test's DNS is a closed port).
    let ready = readyz(admin).await;
    assert!(ready.contains(r#""queue": "ok""#), "{ready}");
    tokio::task::spawn_blocking(move || {
        let mut c = Raw::greeted(mx);
        assert!(c.cmd("EHLO client.example.test").starts_with("250"));
        let reply = c.send_mail(
            "alice@example.test",
            "carol@remote.test",
            "From: alice@example.test\r\nSubject: counted\r\n\r\nhello\r\n",
        );
        assert!(reply.starts_with("250"), "{reply}");
    })
    .await
    .unwrap();
    // The spool under data_dir stays empty; the gauges still see the
    // message, deferred, within a scan or two.
    let start = Instant::now();
    loop {
        let text = tern_net::metrics::metrics().render();
        let deferred = gauge(&text, "tern_queue_messages{state=\"deferred\"}");
        let active = gauge(&text, "tern_queue_messages{state=\"active\"}");
        if deferred == Some(1) && active == Some(0) {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(90),
            "deferred {deferred:?}, active {active:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        std::fs::read_dir(dir.path().join("data/spool/queue"))
            .map(|mut d| d.next().is_none())
            .unwrap_or(true)
    );
    // The database goes down: not ready, and the check says why.
    cluster.crash();
    let ready = readyz(admin).await;
    assert!(ready.starts_with("HTTP/1.1 503"), "{ready}");
    assert!(ready.contains(r#""queue": "failed"#), "{ready}");
    running.shutdown().await;
}

async fn readyz(admin: std::net::SocketAddr) -> String {
    tokio::task::spawn_blocking(move || {
        use std::io::{Read as _, Write as _};
        let mut s = std::net::TcpStream::connect(admin).unwrap();
        s.write_all(b"GET /readyz HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
            .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        out
    })
    .await
    .unwrap()
}
