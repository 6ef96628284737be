//! Two Tern nodes on one PostgreSQL queue (`[queue] backend = "postgres"`,
//! issue 16): what one node accepted, the other lists, holds, flushes and
//! delivers; a message whose node stopped is adopted by the other once
//! nobody holds its lease; a node that saw a message held learns of its
//! release through another node; and it is delivered once.
//!
//! The database is a private PostgreSQL cluster on a loopback port
//! (`tern_queue_pg::test_cluster`); without PostgreSQL installed the tests
//! are skipped, unless `TERN_PG_REQUIRED=1` (CI) makes that a failure.

mod common;

use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::Path;
use std::time::{Duration, Instant};

use common::Raw;
use tern_net::admin::{self, Request, Response};
use tern_queue::RecipientState;
use tern_queue_pg::test_cluster::TestCluster;
use tern_testkit::dns;
use tern_testkit::smtp::{RunningPeer, SmtpPeer};

/// One node: its own data directory and MX listener, the shared queue.
struct Node {
    running: tern::Running,
    mx: SocketAddr,
    dir: tempfile::TempDir,
}

impl Node {
    async fn start(name: &str, url: &str, dns: SocketAddr, port: u16) -> Node {
        let dir = tempfile::tempdir().unwrap();
        let config = tern::Config::parse(&format!(
            "hostname = \"{name}.example.test\"\ndata_dir = {:?}\n\
             trusted_networks = [\"127.0.0.0/8\"]\n\
             [[listener]]\naddress = \"127.0.0.1:0\"\nrole = \"mx\"\n\
             [domains.\"example.test\"]\nmailboxes = [\"alice\"]\n\
             [queue]\nbackend = \"postgres\"\nurl = {url:?}\npool_size = 2\n\
             lease_seconds = 2\nnode = \"{name}\"\nintervals = [\"1s\"]\n\
             [delivery]\nremote_port = {port}\nconnect_timeout = \"1s\"\n\
             [dns]\nnameservers = [\"{dns}\"]\n\
             [mail_auth]\nenabled = false\n",
            dir.path().join("data")
        ))
        .unwrap();
        let running = tern::start(&config).await.unwrap();
        let mx = running.addrs()[0];
        Node { running, mx, dir }
    }

    /// Asks this node's admin socket (as `tern queue …` does).
    async fn admin(&self, request: Request) -> Response {
        let socket = self.dir.path().join("data").join(admin::SOCKET_NAME);
        tokio::task::spawn_blocking(move || {
            admin::request(&socket, &request, Duration::from_secs(30)).unwrap()
        })
        .await
        .unwrap()
    }

    /// The queue as this node lists it: (id, held, recipient states).
    async fn list(&self) -> Vec<(String, bool, Vec<RecipientState>)> {
        let Response::List { messages, .. } = self.admin(Request::List).await else {
            panic!("list")
        };
        messages
            .into_iter()
            .map(|m| {
                let states = m.recipients.into_iter().map(|r| r.state).collect();
                (m.id, m.held, states)
            })
            .collect()
    }
}

/// Sends one message to `to` through `mx`; returns the queue id.
async fn send(mx: SocketAddr, to: &str) -> String {
    let to = to.to_owned();
    tokio::task::spawn_blocking(move || {
        let mut c = Raw::greeted(mx);
        assert!(c.cmd("EHLO client.example.test").starts_with("250"));
        let reply = c.send_mail(
            "alice@example.test",
            &to,
            "From: alice@example.test\r\nSubject: shared\r\n\r\nhello\r\n",
        );
        assert!(reply.starts_with("250"), "{reply}");
        reply
            .split_whitespace()
            .last()
            .unwrap()
            .trim_end_matches(')')
            .to_owned()
    })
    .await
    .unwrap()
}

async fn wait_until<F: AsyncFnMut() -> bool>(what: &str, limit: Duration, mut ok: F) {
    let start = Instant::now();
    while !ok().await {
        assert!(start.elapsed() < limit, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until `node` lists message `id` with its one recipient deferred
/// (the remote MX is down).
async fn wait_deferred(node: &Node, id: &str) {
    wait_until(
        "the attempt is deferred",
        Duration::from_secs(20),
        async || {
            node.list().await.iter().any(|(qid, _, states)| {
                qid == id && matches!(states[..], [RecipientState::Deferred { .. }])
            })
        },
    )
    .await;
}

/// A few seconds on, `remote` still has exactly one copy.
async fn still_once(remote: &RunningPeer) {
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(remote.accepted(), 1, "delivered twice");
}

/// A port on 127.0.0.1 nothing listens on yet (the remote MX comes up
/// later in the test).
fn unused_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn peer(port: u16) -> RunningPeer {
    SmtpPeer::new("mx.remote.test")
        .extension("PIPELINING")
        .bind(SocketAddr::from((Ipv4Addr::LOCALHOST, port)))
        .await
}

async fn setup() -> Option<(TestCluster, String, dns::TestDns, u16)> {
    let cluster = TestCluster::start()
        .await
        .expect("PostgreSQL test cluster")?;
    let url = cluster.create_database("tern_nodes").await.unwrap();
    let dns = dns::start(vec![
        dns::mx("remote.test", 10, "mx.remote.test"),
        dns::a("mx.remote.test", Ipv4Addr::LOCALHOST),
    ])
    .await;
    Some((cluster, url, dns, unused_port()))
}

fn is_data_dir_empty_of_queue(dir: &Path) -> bool {
    std::fs::read_dir(dir.join("data/spool/queue"))
        .map(|mut d| d.next().is_none())
        .unwrap_or(true)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_queue_two_nodes_admin_and_delivery_from_either() {
    let Some((_cluster, url, dns, port)) = setup().await else {
        return;
    };
    let a = Node::start("a", &url, dns.addr, port).await;
    let b = Node::start("b", &url, dns.addr, port).await;

    // A accepts; the remote MX is down, so the recipient is deferred.
    let id = send(a.mx, "carol@remote.test").await;
    wait_deferred(&b, &id).await;
    // Nothing in either node's spool: the message is in the database.
    assert!(is_data_dir_empty_of_queue(a.dir.path()));
    assert!(is_data_dir_empty_of_queue(b.dir.path()));

    // B holds A's message; A sees it held and delivers nothing meanwhile.
    let r = b.admin(Request::Hold { id: id.clone() }).await;
    assert!(matches!(r, Response::Done { .. }), "{r:?}");
    assert!(
        a.list()
            .await
            .iter()
            .any(|(qid, held, _)| *qid == id && *held)
    );
    let remote = peer(port).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(remote.accepted(), 0, "a held message was delivered");

    // Released through A, it is delivered — once — by whichever node
    // attempts it first.
    let r = a.admin(Request::Release { id: id.clone() }).await;
    assert!(matches!(r, Response::Done { .. }), "{r:?}");
    wait_until(
        "the message is delivered",
        Duration::from_secs(20),
        async || remote.accepted() == 1 && a.list().await.is_empty(),
    )
    .await;
    assert!(b.list().await.is_empty());
    still_once(&remote).await;

    a.running.shutdown().await;
    b.running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_nodes_message_is_adopted_and_delivered_by_another() {
    let Some((_cluster, url, dns, port)) = setup().await else {
        return;
    };
    let a = Node::start("a", &url, dns.addr, port).await;
    let id = send(a.mx, "dave@remote.test").await;
    wait_deferred(&a, &id).await;
    // A stops with the message queued; B never heard of it.
    a.running.shutdown().await;
    let remote = peer(port).await;
    // B loads the shared queue when it starts, A's message with it.
    let b = Node::start("b", &url, dns.addr, port).await;
    wait_until(
        "B delivers A's message",
        Duration::from_secs(30),
        async || remote.accepted() == 1 && b.list().await.is_empty(),
    )
    .await;
    still_once(&remote).await;
    b.running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_node_adopts_what_a_stopped_node_left() {
    let Some((_cluster, url, dns, port)) = setup().await else {
        return;
    };
    // Both run; A accepts while the MX is down, then A stops. B, already
    // running, never loads the queue again: only its adoption sweep can
    // find A's message.
    let b = Node::start("b", &url, dns.addr, port).await;
    let a = Node::start("a", &url, dns.addr, port).await;
    let id = send(a.mx, "erin@remote.test").await;
    wait_deferred(&a, &id).await;
    a.running.shutdown().await;
    let remote = peer(port).await;
    wait_until(
        "B adopts and delivers A's message",
        Duration::from_secs(30),
        async || remote.accepted() == 1 && b.list().await.is_empty(),
    )
    .await;
    still_once(&remote).await;
    b.running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_saw_a_message_held_delivers_it_once_released_elsewhere() {
    let Some((_cluster, url, dns, port)) = setup().await else {
        return;
    };
    let a = Node::start("a", &url, dns.addr, port).await;
    let b = Node::start("b", &url, dns.addr, port).await;
    let id = send(a.mx, "frank@remote.test").await;
    wait_deferred(&a, &id).await;
    // B holds it; A's next attempt (every second) finds it held, and A's
    // scheduler keeps it as held.
    let r = b.admin(Request::Hold { id: id.clone() }).await;
    assert!(matches!(r, Response::Done { .. }), "{r:?}");
    tokio::time::sleep(Duration::from_secs(4)).await;
    // Released through B, which tries it (the MX is still down) and stops.
    let r = b.admin(Request::Release { id: id.clone() }).await;
    assert!(matches!(r, Response::Done { .. }), "{r:?}");
    tokio::time::sleep(Duration::from_secs(2)).await;
    b.running.shutdown().await;
    // Only A is left. It must learn that the message is no longer held
    // (its admin was never asked): it reads its held messages again.
    let remote = peer(port).await;
    wait_until(
        "A delivers the message released through B",
        Duration::from_secs(30),
        async || remote.accepted() == 1 && a.list().await.is_empty(),
    )
    .await;
    still_once(&remote).await;
    a.running.shutdown().await;
}
