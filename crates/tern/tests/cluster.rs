//! Several nodes, one queue (issue 16 §3): real `tern` processes share a
//! queue in one PostgreSQL database (a private cluster started by the
//! test, `tern_queue_pg::test_cluster`), take load from Postfix's
//! `smtp-source` spread over all of them, and deliver every message to two
//! recipients: one in an LMTP domain (a `tern_testkit` LMTP server) and one
//! remote (a `tern_testkit` SMTP peer found by MX in the test's DNS), both
//! recording every transaction. The remote peer is slow, so deliveries are
//! in flight when one node is killed with SIGKILL (at a moment when none
//! of its LMTP deliveries is unsettled: see `kill_in_flight`); its leases
//! expire and the others finish its messages. Then:
//!
//! - every message answered 250 reached both recipients;
//! - the LMTP recipient got each exactly once;
//! - neither recipient got a second copy outside RFC 1047's window (the
//!   earlier copy's connection was cut after the final dot, before the
//!   node said anything more), and the test prints how many the remote
//!   one got inside it;
//! - nothing is left in the queue.
//!
//! The same harness runs one node on the file spool, killed and restarted
//! (the files cannot be shared), which checks the same promises of the
//! restart recovery.
//!
//! Without PostgreSQL's binaries the PostgreSQL test prints why and passes,
//! unless `TERN_PG_REQUIRED=1` (CI). Without `/usr/sbin/smtp-source` the
//! load comes from this file's own SMTP client, unless
//! `TERN_SMTP_SOURCE_REQUIRED=1` (CI); `TERN_SMTP_SOURCE` names another
//! path.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::Raw;
use tern_queue::store::QueueStore as _;
use tern_queue_pg::test_cluster::TestCluster;
use tern_queue_pg::{PgConfig, PgStore};
use tern_testkit::dns;
use tern_testkit::smtp::{RunningPeer, SmtpPeer, Transaction};

/// Postfix's load generator (`$TERN_SMTP_SOURCE` overrides the path).
const SMTP_SOURCE: &str = "/usr/sbin/smtp-source";
/// The LMTP mailbox; smtp-source's `-r 2` sends to `box@` and `2box@`,
/// and `2box` is an alias of the remote recipient.
const LMTP_RCPT: &str = "box@lmtp.test";
const REMOTE_RCPT: &str = "carol@remote.test";
/// How long the remote peer waits before answering a final dot.
const REMOTE_DELAY: Duration = Duration::from_millis(1200);
/// The lease of a delivery pass on the shared queue.
const LEASE_SECONDS: u64 = 5;
/// Everything after the kill must be done by then.
const DRAIN_LIMIT: Duration = Duration::from_secs(60);

/// Where the queue lives.
#[derive(Debug, Clone)]
enum Backend {
    /// Each node's own spool under its data_dir.
    Files,
    /// One shared database at this connection string.
    Postgres(String),
}

struct Node {
    name: String,
    addr: SocketAddr,
    config: PathBuf,
    log: PathBuf,
    child: Option<Child>,
}

impl Node {
    fn start(&mut self) {
        let check = Command::new(env!("CARGO_BIN_EXE_tern"))
            .arg("check-config")
            .arg(&self.config)
            .output()
            .unwrap();
        assert!(
            check.status.success(),
            "tern check-config refused {}'s configuration: {}{}",
            self.name,
            String::from_utf8_lossy(&check.stdout),
            String::from_utf8_lossy(&check.stderr)
        );
        self.child = Some(common::spawn_daemon(
            &self.config,
            &self.log,
            self.addr,
            &[],
        ));
    }

    /// SIGKILL, and reap.
    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().unwrap();
            child.wait().unwrap();
        }
    }

    /// SIGTERM; the exit status must be 0.
    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            common::signal(&child, "-TERM");
            let status = child.wait().unwrap();
            assert!(status.success(), "{} exited with {status}", self.name);
        }
    }

    fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }
}

/// `tern queue list --json --config CONFIG`: the ids listed.
fn queue_list(config: &Path) -> Vec<String> {
    let out = Command::new(env!("CARGO_BIN_EXE_tern"))
        .args(["queue", "list", "--json", "--config"])
        .arg(config)
        .env("RUST_LOG", "off")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "tern queue list --config {}: {}{}",
        config.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    v["messages"]
        .as_array()
        .unwrap_or_else(|| panic!("{v}"))
        .iter()
        .map(|m| m["id"].as_str().unwrap_or("?").to_owned())
        .collect()
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The nodes and what they deliver to.
struct Harness {
    nodes: Vec<Node>,
    lmtp: RunningPeer,
    remote: RunningPeer,
    backend: Backend,
    _dns: dns::TestDns,
    _dir: tempfile::TempDir,
}

/// A port free on every one of `ips` (the nodes listen on one port number).
fn shared_port(ips: &[Ipv4Addr]) -> u16 {
    for _ in 0..50 {
        let first = TcpListener::bind((ips[0], 0)).unwrap();
        let port = first.local_addr().unwrap().port();
        if ips[1..]
            .iter()
            .all(|ip| TcpListener::bind((*ip, port)).is_ok())
        {
            return port;
        }
    }
    panic!("no port free on {ips:?}");
}

impl Harness {
    /// `count` nodes on 127.0.0.11, .12, … (not started).
    async fn new(count: u8, backend: Backend) -> Harness {
        let dir = tempfile::tempdir().unwrap();
        let remote = SmtpPeer::new("mx.remote.test")
            .extension("PIPELINING")
            .extension("8BITMIME")
            .reply_delay(REMOTE_DELAY)
            .bind("127.0.0.2:0".parse().unwrap())
            .await;
        let lmtp = SmtpPeer::lmtp("mailbox.lmtp.test")
            .extension("8BITMIME")
            .extension("ENHANCEDSTATUSCODES")
            .extension("PIPELINING")
            .bind("127.0.0.1:0".parse().unwrap())
            .await;
        let dns = dns::start(vec![
            dns::mx("remote.test", 10, "mx.remote.test"),
            dns::a("mx.remote.test", Ipv4Addr::new(127, 0, 0, 2)),
        ])
        .await;
        let ips: Vec<Ipv4Addr> = (0..count)
            .map(|i| Ipv4Addr::new(127, 0, 0, 11 + i))
            .collect();
        let port = shared_port(&ips);
        let nodes = ips
            .iter()
            .enumerate()
            .map(|(i, ip)| {
                let name = format!("n{}", i + 1);
                let home = dir.path().join(&name);
                std::fs::create_dir_all(&home).unwrap();
                let addr = SocketAddr::from((*ip, port));
                let config = home.join("tern.toml");
                std::fs::write(
                    &config,
                    node_config(&name, &home, addr, &lmtp, &remote, dns.addr, &backend),
                )
                .unwrap();
                Node {
                    name,
                    addr,
                    config,
                    log: home.join("tern.log"),
                    child: None,
                }
            })
            .collect();
        Harness {
            nodes,
            lmtp,
            remote,
            backend,
            _dns: dns,
            _dir: dir,
        }
    }

    fn start_all(&mut self) {
        for node in &mut self.nodes {
            node.start();
        }
    }

    fn logs(&self) -> String {
        self.nodes
            .iter()
            .map(|n| {
                format!(
                    "--- {} (last lines of {})\n{}",
                    n.name,
                    n.log.display(),
                    n.log_tail(20)
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Messages still queued: the shared database's own list for
    /// PostgreSQL, and what `tern queue list` says on every running node.
    async fn queued(&self) -> Vec<String> {
        let mut ids = BTreeSet::new();
        if let Backend::Postgres(url) = &self.backend {
            let store = PgStore::connect(&PgConfig {
                password: None,
                url: url.clone(),
                pool_size: 1,
                node: "test".into(),
            })
            .await
            .expect("connect to the shared queue");
            for id in store.list().await.expect("list the shared queue") {
                ids.insert(id.to_string());
            }
        }
        for node in self.nodes.iter().filter(|n| n.child.is_some()) {
            let config = node.config.clone();
            let listed = tokio::task::spawn_blocking(move || queue_list(&config))
                .await
                .unwrap();
            ids.extend(listed);
        }
        ids.into_iter().collect()
    }
}

fn node_config(
    name: &str,
    home: &Path,
    addr: SocketAddr,
    lmtp: &RunningPeer,
    remote: &RunningPeer,
    dns: SocketAddr,
    backend: &Backend,
) -> String {
    let queue = match backend {
        Backend::Files => String::new(),
        Backend::Postgres(url) => format!(
            "[queue]\nbackend = \"postgres\"\nurl = {url:?}\npool_size = 4\n\
             lease_seconds = {LEASE_SECONDS}\nnode = {name:?}\n"
        ),
    };
    format!(
        r#"hostname = "{name}.cluster.test"
data_dir = {data:?}
[[listener]]
address = "{addr}"
role = "mx"
[domains."lmtp.test"]
mailboxes = ["box"]
aliases = {{ "2box" = ["{REMOTE_RCPT}"] }}
lmtp = "tcp:{lmtp}"
[delivery]
remote_port = {remote_port}
connect_timeout = "2s"
[dns]
nameservers = ["{dns}"]
[mail_auth]
enabled = false
[log]
level = "info"
{queue}"#,
        data = home.join("data"),
        lmtp = lmtp.addr,
        remote_port = remote.addr.port(),
    )
}

/// Sends `per_node` messages to every running node at once, each to
/// [`LMTP_RCPT`] and (through the alias) [`REMOTE_RCPT`]; returns how many
/// were answered 250 (all of them, or the test fails).
async fn load(nodes: &[&Node], per_node: usize) -> usize {
    let source = std::env::var("TERN_SMTP_SOURCE").unwrap_or_else(|_| SMTP_SOURCE.to_owned());
    let have_source = Path::new(&source).is_file();
    if !have_source {
        assert!(
            std::env::var_os("TERN_SMTP_SOURCE_REQUIRED").is_none_or(|v| v != "1"),
            "{source} is missing and TERN_SMTP_SOURCE_REQUIRED=1 (install postfix)"
        );
        eprintln!("note: {source} not found (postfix): loading with the test's own client");
    }
    let addrs: Vec<SocketAddr> = nodes.iter().map(|n| n.addr).collect();
    tokio::task::spawn_blocking(move || {
        let runs: Vec<_> = addrs
            .into_iter()
            .enumerate()
            .map(|(i, addr)| {
                let source = source.clone();
                std::thread::spawn(move || {
                    if have_source {
                        smtp_source(&source, addr, per_node)
                    } else {
                        own_client(addr, i, per_node)
                    }
                })
            })
            .collect();
        runs.into_iter().map(|r| r.join().unwrap()).sum()
    })
    .await
    .unwrap()
}

/// `smtp-source`: it exits non-zero at the first reply that is not 2xx, so
/// a success means every message was answered 250.
fn smtp_source(program: &str, addr: SocketAddr, messages: usize) -> usize {
    let out = Command::new(program)
        .args(["-s", "4", "-r", "2", "-l", "4096"])
        .args(["-m", &messages.to_string()])
        .args(["-f", "load@client.test", "-t", LMTP_RCPT])
        .arg(addr.to_string())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "smtp-source to {addr} failed ({}): {}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    messages
}

/// The same load without smtp-source: two sessions, each message with a
/// Message-Id of its own.
fn own_client(addr: SocketAddr, node: usize, messages: usize) -> usize {
    let sessions: Vec<_> = (0..2)
        .map(|s| {
            std::thread::spawn(move || {
                let mut c = Raw::greeted(addr);
                assert!(c.cmd("EHLO load.client.test").starts_with("250"));
                let mut ok = 0;
                for k in (s..messages).step_by(2) {
                    assert!(c.cmd("MAIL FROM:<load@client.test>").starts_with("250"));
                    for r in [LMTP_RCPT.to_owned(), format!("2{LMTP_RCPT}")] {
                        let reply = c.cmd(&format!("RCPT TO:<{r}>"));
                        assert!(reply.starts_with("250"), "{r}: {reply}");
                    }
                    assert!(c.cmd("DATA").starts_with("354"));
                    c.send(
                        format!(
                            "From: <load@client.test>\r\nTo: <{LMTP_RCPT}>\r\n\
                             Message-Id: <own.{node}.{k}@client.test>\r\n\r\n{}.\r\n",
                            format!("{}\r\n", "X".repeat(76)).repeat(50)
                        )
                        .as_bytes(),
                    );
                    let reply = c.reply();
                    assert!(reply.starts_with("250"), "end of data at {addr}: {reply}");
                    ok += 1;
                }
                let _ = c.cmd("QUIT");
                ok
            })
        })
        .collect();
    sessions.into_iter().map(|s| s.join().unwrap()).sum()
}

/// A transaction's message: its Message-Id.
fn message_id(t: &Transaction) -> String {
    t.header("Message-Id")
        .unwrap_or_else(|| panic!("a delivered message without Message-Id: {t:?}"))
}

/// Whether node `name` delivered `t` (its EHLO or LHLO line; the node
/// that took a message in need not be the one that delivers it).
fn delivered_by(t: &Transaction, name: &str) -> bool {
    t.hello.ends_with(&format!(" {name}.cluster.test"))
}

/// Which node delivered each copy in `copies`, for a failure message.
fn who(copies: &[Transaction]) -> Vec<String> {
    copies
        .iter()
        .map(|t| {
            format!(
                "{} (connection {}, replied {}, cut {}, quit {})",
                t.hello, t.connection, t.replied, t.cut_after_dot, t.quit
            )
        })
        .collect()
}

/// Copies of each message that a recipient of `peer` got (transactions
/// that reached the final dot), in order, by Message-Id.
fn copies(peer: &RunningPeer, rcpt: &str) -> BTreeMap<String, Vec<Transaction>> {
    let mut by_id: BTreeMap<String, Vec<Transaction>> = BTreeMap::new();
    for t in peer.transactions() {
        if t.rcpts.iter().any(|r| r == rcpt) {
            by_id.entry(message_id(&t)).or_default().push(t);
        }
    }
    by_id
}

/// Messages of which `rcpt` has a copy that was answered.
fn delivered(peer: &RunningPeer, rcpt: &str) -> usize {
    copies(peer, rcpt)
        .values()
        .filter(|c| c.iter().any(|t| t.replied))
        .count()
}

/// Deliveries of node `victim` to the slow remote peer in flight (final
/// dot sent, no reply yet).
fn in_flight(h: &Harness, victim: &str) -> usize {
    h.remote
        .transactions()
        .iter()
        .filter(|t| !t.replied && !t.cut_after_dot && delivered_by(t, victim))
        .count()
}

/// Kills node `index` with SIGKILL while it has deliveries to the slow
/// remote peer in flight, but none to the LMTP server unsettled; returns
/// how many were in flight. At most 20 s.
///
/// An LMTP delivery is unsettled from its MAIL FROM until the node, having
/// recorded the result, says anything more (QUIT): a node killed inside
/// that window — RFC 1047's, which LMTP has as well — leaves a delivery
/// the others must repeat, and no queue can close it (only a mailbox
/// server that drops duplicates could). It lasts milliseconds; the kill
/// lands outside it so that the test can hold the LMTP recipient to
/// exactly one copy, and `wait_and_check` proves separately that no copy
/// is ever repeated outside the window. To look without a race, the node
/// is stopped (SIGSTOP) and the LMTP server given time to read whatever
/// the node had sent; if a delivery is unsettled the node goes on
/// (SIGCONT) and the test looks again a little later.
async fn kill_in_flight(h: &mut Harness, index: usize) -> usize {
    let name = h.nodes[index].name.clone();
    let lhlo = format!("LHLO {name}.cluster.test");
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut looks = 0;
    loop {
        if in_flight(h, &name) >= 2 || (in_flight(h, &name) > 0 && looks > 0) {
            let child = h.nodes[index].child.as_ref().unwrap();
            common::signal(child, "-STOP");
            tokio::time::sleep(Duration::from_millis(150)).await;
            looks += 1;
            let flying = in_flight(h, &name);
            if flying > 0 && !h.lmtp.unsettled().contains(&lhlo) {
                h.nodes[index].kill();
                eprintln!("{name}: {looks} looks before the kill");
                return flying;
            }
            common::signal(h.nodes[index].child.as_ref().unwrap(), "-CONT");
        }
        assert!(
            Instant::now() < deadline,
            "{name} never had a remote delivery in flight without an LMTP one unsettled \
             ({looks} looks)\n{}",
            h.logs()
        );
        tokio::time::sleep(Duration::from_millis(10 + 7 * (looks % 5))).await;
    }
}

/// Waits (at most [`DRAIN_LIMIT`]) until both recipients have an answered
/// copy of `accepted` messages and the queue is empty; then checks the
/// promises of the module doc.
async fn wait_and_check(h: &Harness, accepted: usize) {
    let started = Instant::now();
    loop {
        let done = delivered(&h.lmtp, LMTP_RCPT) >= accepted
            && delivered(&h.remote, REMOTE_RCPT) >= accepted;
        if done && h.queued().await.is_empty() {
            break;
        }
        if started.elapsed() > DRAIN_LIMIT {
            panic!(
                "after {:?}: {} of {accepted} messages delivered over LMTP, {} to the remote \
                 peer; still queued: {:?}\n{}",
                started.elapsed(),
                delivered(&h.lmtp, LMTP_RCPT),
                delivered(&h.remote, REMOTE_RCPT),
                h.queued().await,
                h.logs()
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // A stray late copy would show up now.
    tokio::time::sleep(Duration::from_secs(1)).await;
    eprintln!("drained {:?} after the kill", started.elapsed());

    let lmtp = copies(&h.lmtp, LMTP_RCPT);
    let remote = copies(&h.remote, REMOTE_RCPT);
    let lmtp_tally = tally(&lmtp);
    let remote_tally = tally(&remote);
    eprintln!(
        "{accepted} messages accepted with 250\n  LMTP:   {lmtp_tally}\n  remote: {remote_tally}"
    );
    assert_eq!(lmtp.len(), accepted, "messages seen by the LMTP server");
    assert_eq!(remote.len(), accepted, "messages seen by the remote peer");
    assert_eq!(
        lmtp.keys().collect::<Vec<_>>(),
        remote.keys().collect::<Vec<_>>(),
        "both recipients got the same messages"
    );
    for (what, t, copies) in [
        ("LMTP", &lmtp_tally, &lmtp),
        ("remote", &remote_tally, &remote),
    ] {
        let show = |ids: &[String]| {
            ids.iter()
                .map(|id| format!("{id}: {:?}", who(&copies[id])))
                .collect::<Vec<_>>()
                .join("\n")
        };
        assert!(
            t.unanswered.is_empty(),
            "{what}: the last copy of these was never answered:\n{}\n{}",
            show(&t.unanswered),
            h.logs()
        );
        assert!(
            t.outside.is_empty(),
            "{what}: a second copy after one that was answered and acted upon \
             (outside RFC 1047's window):\n{}\n{}",
            show(&t.outside),
            h.logs()
        );
    }
    let repeated: Vec<String> = lmtp
        .iter()
        .filter(|(_, c)| c.len() > 1)
        .map(|(id, c)| format!("{id}: {:?}", who(c)))
        .collect();
    assert!(
        repeated.is_empty(),
        "an LMTP recipient gets exactly one copy:\n{}",
        repeated.join("\n")
    );
}

/// What the copies of every message to one recipient say.
#[derive(Debug, Default)]
struct Tally {
    /// Messages with more than one copy.
    duplicated: usize,
    /// Earlier copies whose connection was cut before our final reply.
    cut_before_reply: usize,
    /// Earlier copies whose connection was cut right after our reply,
    /// before the client sent anything else.
    cut_after_reply: usize,
    /// Messages with an earlier copy outside the window: answered, and the
    /// client went on (next command, QUIT) — the sender knew.
    outside: Vec<String>,
    /// Messages whose last copy got no answer.
    unanswered: Vec<String>,
}

impl std::fmt::Display for Tally {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} delivered more than once: {} earlier copies cut before our final reply, {} cut \
             right after it (RFC 1047's window), {} outside the window; {} never answered",
            self.duplicated,
            self.cut_before_reply,
            self.cut_after_reply,
            self.outside.len(),
            self.unanswered.len()
        )
    }
}

fn tally(copies: &BTreeMap<String, Vec<Transaction>>) -> Tally {
    let mut t = Tally::default();
    for (id, c) in copies {
        let (last, earlier) = c.split_last().unwrap();
        if !last.replied {
            t.unanswered.push(id.clone());
        }
        if !earlier.is_empty() {
            t.duplicated += 1;
        }
        for copy in earlier {
            match (copy.in_window(), copy.replied) {
                (true, false) => t.cut_before_reply += 1,
                (true, true) => t.cut_after_reply += 1,
                (false, _) => t.outside.push(id.clone()),
            }
        }
    }
    t.outside.dedup();
    t
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_share_one_queue_and_finish_a_killed_nodes_messages() {
    let Some(cluster) = TestCluster::start().await.expect("PostgreSQL test cluster") else {
        return;
    };
    let url = cluster.create_database("three_nodes").await.unwrap();
    let mut h = Harness::new(3, Backend::Postgres(url)).await;
    h.start_all();
    let nodes: Vec<&Node> = h.nodes.iter().collect();
    let accepted = load(&nodes, 40).await;
    let in_flight = kill_in_flight(&mut h, 0).await;
    eprintln!("killed n1 with {in_flight} remote deliveries in flight");
    wait_and_check(&h, accepted).await;
    // Every message taken in by n1 was finished by n2 or n3.
    for node in &mut h.nodes[1..] {
        node.stop();
    }
    drop(cluster);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_node_on_files_killed_mid_delivery_finishes_after_a_restart() {
    let mut h = Harness::new(1, Backend::Files).await;
    h.start_all();
    let nodes: Vec<&Node> = h.nodes.iter().collect();
    let accepted = load(&nodes, 30).await;
    let in_flight = kill_in_flight(&mut h, 0).await;
    eprintln!("killed n1 with {in_flight} remote deliveries in flight; restarting it");
    h.nodes[0].start();
    wait_and_check(&h, accepted).await;
    h.nodes[0].stop();
}
