//! Outbound delivery end to end on one machine (issue 4): Tern A accepts a
//! submission, looks the recipient domain up in a real DNS server on
//! loopback (hickory-server), and delivers over SMTP to Tern B listening on
//! 127.0.0.2 for `remote.test`. Failures come back to the sender as DSNs.

mod common;

use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use common::{Raw, wait_for_mail_in};
use hickory_proto::rr::rdata::{A, MX, SOA};
use hickory_proto::rr::{Name, RData, Record};
use hickory_server::Server;
use hickory_server::store::in_memory::InMemoryZoneHandler;
use hickory_server::zone_handler::{AxfrPolicy, Catalog, ZoneType};
use mail_parser::MimeHeaders as _;

fn name(s: &str) -> Name {
    Name::from_ascii(s).unwrap()
}

fn zone(origin: &str, records: Vec<Record>) -> InMemoryZoneHandler {
    let mut z = InMemoryZoneHandler::empty(name(origin), ZoneType::Primary, AxfrPolicy::Deny);
    let soa = Record::from_rdata(
        name(origin),
        3600,
        RData::SOA(SOA::new(
            name("ns.test."),
            name("hostmaster.test."),
            1,
            3600,
            600,
            86400,
            60,
        )),
    );
    assert!(z.upsert_mut(soa, 1));
    for r in records {
        assert!(z.upsert_mut(r, 1));
    }
    z
}

fn mx(owner: &str, preference: u16, exchange: &str) -> Record {
    Record::from_rdata(
        name(owner),
        60,
        RData::MX(MX::new(preference, name(exchange))),
    )
}

fn a(owner: &str, ip: [u8; 4]) -> Record {
    Record::from_rdata(
        name(owner),
        60,
        RData::A(A::new(ip[0], ip[1], ip[2], ip[3])),
    )
}

struct Dns {
    addr: SocketAddr,
    _server: Server<Catalog>,
}

async fn start_dns() -> Dns {
    let mut catalog = Catalog::new();
    let zones = vec![
        zone(
            "remote.test.",
            vec![
                mx("remote.test.", 10, "mx.remote.test."),
                a("mx.remote.test.", [127, 0, 0, 2]),
            ],
        ),
        zone("nullmx.test.", vec![mx("nullmx.test.", 0, ".")]),
        // An MX host where nothing listens: deliveries there are deferred.
        zone(
            "down.test.",
            vec![
                mx("down.test.", 10, "mx.down.test."),
                a("mx.down.test.", [127, 0, 0, 3]),
            ],
        ),
    ];
    for z in zones {
        let origin = hickory_server::zone_handler::ZoneHandler::origin(&z).clone();
        catalog.upsert(origin, vec![Arc::new(z)]);
    }
    let udp = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = udp.local_addr().unwrap();
    let mut server = Server::new(catalog);
    server.register_socket(udp);
    Dns {
        addr,
        _server: server,
    }
}

/// A port free on both 127.0.0.1 and 127.0.0.2 (remote delivery uses one
/// port number for every MX host).
fn shared_port() -> u16 {
    for _ in 0..50 {
        let l = TcpListener::bind("127.0.0.2:0").unwrap();
        let port = l.local_addr().unwrap().port();
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no shared port");
}

struct Pair {
    a: tern::Running,
    b: tern::Running,
    a_submit: SocketAddr,
    a_dir: tempfile::TempDir,
    b_dir: tempfile::TempDir,
    _dns: Dns,
}

impl Pair {
    async fn start(extra_a: &str) -> Pair {
        let dns = start_dns().await;
        let port = shared_port();
        let b_dir = tempfile::tempdir().unwrap();
        let b = tern::Config::parse(&format!(
            "hostname = \"mx.remote.test\"\ndata_dir = {:?}\n[[listener]]\naddress = \"127.0.0.2:{port}\"\nrole = \"mx\"\n[domains.\"remote.test\"]\nmailboxes = [\"carol\", \"dave\"]\n[dns]\nnameservers = [\"127.0.0.1:9\"]\n[mail_auth]\nenabled = false\n",
            b_dir.path().join("data")
        ))
        .unwrap();
        let b = tern::start(&b).await.unwrap();
        let a_dir = tempfile::tempdir().unwrap();
        let users = a_dir.path().join("users.toml");
        tern_users::add_user(
            &users,
            "alice@example.test",
            "alice-pw",
            &tern_users::AddOptions {
                hash_params: tern_users::HashParams {
                    memory_kib: 1024,
                    passes: 1,
                    lanes: 1,
                },
                ..Default::default()
            },
        )
        .unwrap();
        let a = tern::Config::parse(&format!(
            "hostname = \"mx.example.test\"\ndata_dir = {:?}\n[[listener]]\naddress = \"127.0.0.1:0\"\nrole = \"submission\"\nplaintext_auth = true\n[auth]\nusers_file = {users:?}\n[domains.\"example.test\"]\nmailboxes = [\"alice\"]\n[delivery]\nremote_port = {port}\nconnect_timeout = \"2s\"\n[dns]\nnameservers = [\"{}\"]\n[limits.abuse.tarpit]\ninitial_delay = \"0s\"\n{extra_a}\n",
            a_dir.path().join("data"),
            dns.addr
        ))
        .unwrap();
        let a = tern::start(&a).await.unwrap();
        let a_submit = a.addrs()[0];
        Pair {
            a,
            b,
            a_submit,
            a_dir,
            b_dir,
            _dns: dns,
        }
    }

    fn b_new(&self, user: &str) -> PathBuf {
        self.b_dir
            .path()
            .join("data/mail/remote.test")
            .join(user)
            .join("new")
    }

    fn a_new(&self, user: &str) -> PathBuf {
        self.a_dir
            .path()
            .join("data/mail/example.test")
            .join(user)
            .join("new")
    }

    /// alice submits one message to `rcpts`; returns the final reply.
    async fn submit(&self, rcpts: &[&str], subject: &str) -> String {
        self.submit_from("alice@example.test", rcpts, subject).await
    }

    /// alice submits with envelope sender `from`.
    async fn submit_from(&self, from: &str, rcpts: &[&str], subject: &str) -> String {
        let from = from.to_owned();
        let addr = self.a_submit;
        let rcpts: Vec<String> = rcpts.iter().map(|s| s.to_string()).collect();
        let subject = subject.to_owned();
        tokio::task::spawn_blocking(move || {
            let mut c = Raw::greeted(addr);
            assert!(c.cmd("EHLO client.test").starts_with("250"));
            let auth = B64.encode("\0alice@example.test\0alice-pw");
            assert!(c.cmd(&format!("AUTH PLAIN {auth}")).starts_with("235"));
            assert!(c.cmd(&format!("MAIL FROM:<{from}>")).starts_with("250"));
            for r in &rcpts {
                let reply = c.cmd(&format!("RCPT TO:<{r}>"));
                assert!(reply.starts_with("250"), "{r}: {reply}");
            }
            assert!(c.cmd("DATA").starts_with("354"));
            c.send(
                format!("From: alice@example.test\r\nSubject: {subject}\r\n\r\n..dot line\r\nbody\r\n.\r\n")
                    .as_bytes(),
            );
            c.reply()
        })
        .await
        .unwrap()
    }

    async fn shutdown(self) {
        self.a.shutdown().await;
        self.b.shutdown().await;
    }
}

fn dsn_parts(raw: &str) -> (String, String) {
    let msg = mail_parser::MessageParser::new()
        .parse(raw.as_bytes())
        .expect("DSN parses");
    let ct = msg.content_type().expect("content type");
    assert_eq!(ct.ctype(), "multipart");
    assert_eq!(ct.subtype(), Some("report"));
    let status = msg
        .parts
        .iter()
        .find(|p| {
            p.content_type()
                .is_some_and(|c| c.subtype() == Some("delivery-status"))
        })
        .expect("a message/delivery-status part");
    let status = String::from_utf8_lossy(status.contents()).into_owned();
    (msg.subject().unwrap_or("").to_owned(), status)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mx_delivery_to_another_server_and_a_bounce_for_the_one_rejected_recipient() {
    let pair = Pair::start("").await;
    let r = pair
        .submit(
            &[
                "carol@remote.test",
                "dave@remote.test",
                "nobody@remote.test",
            ],
            "across",
        )
        .await;
    assert!(r.starts_with("250 2.0.0"), "{r}");
    let carol = wait_for_mail_in(&pair.b_new("carol"), 1);
    assert!(carol[0].contains("Subject: across"), "{}", carol[0]);
    assert!(
        carol[0].contains("\r\n.dot line\r\n"),
        "dot-stuffing round trip"
    );
    assert!(
        carol[0].contains("by mx.remote.test"),
        "B's Received header"
    );
    assert!(
        carol[0].contains("by mx.example.test"),
        "A's Received header"
    );
    wait_for_mail_in(&pair.b_new("dave"), 1);
    // One bounce to alice naming only nobody@remote.test.
    let bounce = wait_for_mail_in(&pair.a_new("alice"), 1);
    assert!(
        bounce[0].starts_with("Return-Path: <>\r\n"),
        "{}",
        bounce[0]
    );
    let (subject, status) = dsn_parts(&bounce[0]);
    assert!(subject.contains("Undelivered"), "{subject}");
    assert!(
        status.contains("Final-Recipient: rfc822; nobody@remote.test"),
        "{status}"
    );
    assert!(status.contains("Action: failed"), "{status}");
    assert!(status.contains("Status: 5.1.1"), "{status}");
    assert!(status.contains("550"), "{status}");
    assert!(
        !status.contains("carol@remote.test") && !status.contains("dave@remote.test"),
        "{status}"
    );
    // Nothing is delivered twice, and A's queue is empty.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(common::read_maildir(&pair.b_new("carol")).len(), 1);
    let queued = std::fs::read_dir(pair.a_dir.path().join("data/spool/queue"))
        .unwrap()
        .filter_map(Result::ok)
        .filter(|e| !e.file_name().to_string_lossy().contains('.'))
        .count();
    assert_eq!(queued, 0, "A's queue should be empty");
    pair.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn null_mx_bounces_at_once() {
    let pair = Pair::start("").await;
    let r = pair.submit(&["someone@nullmx.test"], "to null mx").await;
    assert!(r.starts_with("250 2.0.0"), "{r}");
    let bounce = wait_for_mail_in(&pair.a_new("alice"), 1);
    let (_, status) = dsn_parts(&bounce[0]);
    assert!(status.contains("Status: 5.1.10"), "{status}");
    pair.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_destination_is_retried_then_expires_with_a_bounce() {
    let pair = Pair::start("[queue]\nintervals = [\"1s\"]\nmax_age = \"3s\"\n").await;
    let r = pair.submit(&["someone@down.test"], "nobody home").await;
    assert!(r.starts_with("250 2.0.0"), "{r}");
    let bounce = wait_for_mail_in(&pair.a_new("alice"), 1);
    let (_, status) = dsn_parts(&bounce[0]);
    assert!(
        status.contains("Final-Recipient: rfc822; someone@down.test"),
        "{status}"
    );
    assert!(status.contains("Action: failed"), "{status}");
    assert!(
        status.contains("Status: 5.4.7") || status.contains("Status: 4.4.7"),
        "{status}"
    );
    pair.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_undeliverable_bounce_goes_to_the_postmaster_once() {
    // alice may send as anyone here, so the sender can be undeliverable too.
    let pair = Pair::start("[submission]\nenforce_sender = false\n").await;
    let r = pair
        .submit_from(
            "ghost@nullmx.test",
            &["someone@nullmx.test"],
            "double bounce",
        )
        .await;
    assert!(r.starts_with("250 2.0.0"), "{r}");
    // The bounce to ghost@nullmx.test fails as well: the postmaster (alice,
    // the first mailbox) gets it, and nothing loops.
    let pm = wait_for_mail_in(&pair.a_new("alice"), 1);
    let (_, status) = dsn_parts(&pm[0]);
    assert!(status.contains("ghost@nullmx.test"), "{status}");
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(common::read_maildir(&pair.a_new("alice")).len(), 1);
    pair.shutdown().await;
}
