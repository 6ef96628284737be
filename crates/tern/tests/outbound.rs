//! Outbound delivery end to end on one machine (issue 4): Tern A accepts a
//! submission, looks the recipient domain up in a real DNS server on
//! loopback (hickory-server), and delivers over SMTP to Tern B listening on
//! 127.0.0.2 for `remote.test`. Failures come back to the sender as DSNs.

mod common;
use tern_testkit::dns;
use tern_testkit::smtp::{RunningPeer, SmtpPeer};

use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use common::{Raw, wait_for_mail_in};
use mail_parser::MimeHeaders as _;

/// The test DNS: MX and A records for the remote domains the tests send
/// to, from the shared test DNS server (`tern-mailauth/tests/dns`).
async fn start_dns() -> dns::TestDns {
    let ip = |last: u8| Ipv4Addr::new(127, 0, 0, last);
    dns::start(vec![
        dns::mx("remote.test", 10, "mx.remote.test"),
        dns::a("mx.remote.test", ip(2)),
        dns::mx("nullmx.test", 0, "."),
        // A slow MX (it never answers the end of data) and one that offers
        // no DSN; both are `mini_smtp` servers started by the tests.
        dns::mx("slow.test", 10, "mx.slow.test"),
        dns::a("mx.slow.test", ip(4)),
        dns::mx("nodsn.test", 10, "mx.nodsn.test"),
        dns::a("mx.nodsn.test", ip(5)),
        // An MX host where nothing listens: deliveries there are deferred.
        dns::mx("down.test", 10, "mx.down.test"),
        dns::a("mx.down.test", ip(3)),
    ])
    .await
}

/// A port free on 127.0.0.1, .2, .4 and .5 (remote delivery uses one
/// port number for every MX host).
fn shared_port() -> u16 {
    for _ in 0..50 {
        let l = TcpListener::bind("127.0.0.2:0").unwrap();
        let port = l.local_addr().unwrap().port();
        if ["127.0.0.1", "127.0.0.4", "127.0.0.5"]
            .iter()
            .all(|ip| TcpListener::bind((*ip, port)).is_ok())
        {
            return port;
        }
    }
    panic!("no shared port");
}

/// A minimal SMTP server on `ip:port` (`tern_testkit::smtp`) that offers
/// PIPELINING but no DSN (so the sender's Tern must send "relayed" notices
/// itself). With `stall`, it never answers the end of data and drops the
/// connection after `stall` instead. Counts the messages it accepted, the
/// connections it got and the stalls that ended.
async fn mini_smtp(ip: &str, port: u16, stall: Option<Duration>) -> RunningPeer {
    let mut peer = SmtpPeer::new("mini.test")
        .extension("PIPELINING")
        .extension("8BITMIME");
    if let Some(stall) = stall {
        peer = peer.stall_after_data(stall);
    }
    peer.bind(SocketAddr::new(ip.parse().unwrap(), port)).await
}

struct Pair {
    /// The port every MX host listens on.
    port: u16,
    a: tern::Running,
    b: tern::Running,
    a_submit: SocketAddr,
    a_dir: tempfile::TempDir,
    b_dir: tempfile::TempDir,
    _dns: dns::TestDns,
}

impl Pair {
    async fn start(extra_a: &str) -> Pair {
        Pair::start_with("", extra_a).await
    }

    /// `delivery` goes into A's `[delivery]` table, `extra_a` at the end.
    async fn start_with(delivery: &str, extra_a: &str) -> Pair {
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
        common::add_user(&users, "alice@example.test", "alice-pw");
        let a = tern::Config::parse(&format!(
            "hostname = \"mx.example.test\"\ndata_dir = {:?}\n[[listener]]\naddress = \"127.0.0.1:0\"\nrole = \"submission\"\nplaintext_auth = true\n[auth]\nusers_file = {users:?}\n[domains.\"example.test\"]\nmailboxes = [\"alice\"]\n[delivery]\nremote_port = {port}\nconnect_timeout = \"2s\"\n{delivery}\n[dns]\nnameservers = [\"{}\"]\n[limits.abuse.tarpit]\ninitial_delay = \"0s\"\n{extra_a}\n",
            a_dir.path().join("data"),
            dns.addr
        ))
        .unwrap();
        let a = tern::start(&a).await.unwrap();
        let a_submit = a.addrs()[0];
        Pair {
            port,
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
        let rcpts: Vec<String> = rcpts.iter().map(|r| format!("<{r}>")).collect();
        self.submit_raw(from, &rcpts, subject).await
    }

    /// alice submits with envelope sender `from`; each of `rcpts` is what
    /// follows `RCPT TO:` (path and parameters).
    async fn submit_raw(&self, from: &str, rcpts: &[String], subject: &str) -> String {
        let from = from.to_owned();
        let addr = self.a_submit;
        let rcpts = rcpts.to_vec();
        let subject = subject.to_owned();
        tokio::task::spawn_blocking(move || {
            let mut c = Raw::greeted(addr);
            assert!(c.cmd("EHLO client.test").starts_with("250"));
            let auth = B64.encode("\0alice@example.test\0alice-pw");
            assert!(c.cmd(&format!("AUTH PLAIN {auth}")).starts_with("235"));
            assert!(c.cmd(&format!("MAIL FROM:<{from}>")).starts_with("250"));
            for r in &rcpts {
                let reply = c.cmd(&format!("RCPT TO:{r}"));
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

/// The DSNs among `mail`, as (subject, delivery-status) pairs.
fn dsns(mail: &[String]) -> Vec<(String, String)> {
    mail.iter()
        .filter(|m| m.contains("report-type=delivery-status"))
        .map(|m| dsn_parts(m))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn success_and_relayed_notices_when_asked_and_none_when_the_next_hop_carries_dsn() {
    let pair = Pair::start("").await;
    let accepted = mini_smtp("127.0.0.5", pair.port, None).await.accepted;
    let rcpts = [
        // Local: a "delivered" notice.
        "<alice@example.test> NOTIFY=SUCCESS,FAILURE".to_owned(),
        // A next hop without DSN: a "relayed" notice.
        "<x@nodsn.test> NOTIFY=SUCCESS ORCPT=rfc822;x@nodsn.test".to_owned(),
        // Tern B offers DSN: the request travels on, no notice from A.
        "<carol@remote.test> NOTIFY=SUCCESS".to_owned(),
        // Default NOTIFY: no success notice.
        "<dave@remote.test>".to_owned(),
    ];
    let r = pair
        .submit_raw("alice@example.test", &rcpts, "tell me")
        .await;
    assert!(r.starts_with("250 2.0.0"), "{r}");
    // alice: the message itself and two notices.
    wait_for_mail_in(&pair.a_new("alice"), 3);
    wait_for_mail_in(&pair.b_new("carol"), 1);
    wait_for_mail_in(&pair.b_new("dave"), 1);
    assert_eq!(accepted.load(Ordering::SeqCst), 1);
    // And no more than those three.
    tokio::time::sleep(Duration::from_millis(800)).await;
    let mail = common::read_maildir(&pair.a_new("alice"));
    assert_eq!(mail.len(), 3, "{mail:?}");
    let notices = dsns(&mail);
    assert_eq!(notices.len(), 2, "{mail:?}");
    let delivered = notices
        .iter()
        .find(|(_, st)| st.contains("Action: delivered"))
        .expect("a delivered notice");
    assert_eq!(delivered.0, "Successful Mail Delivery Report");
    assert!(
        delivered
            .1
            .contains("Final-Recipient: rfc822; alice@example.test"),
        "{}",
        delivered.1
    );
    assert!(delivered.1.contains("Status: 2.0.0"), "{}", delivered.1);
    let relayed = notices
        .iter()
        .find(|(_, st)| st.contains("Action: relayed"))
        .expect("a relayed notice");
    assert_eq!(relayed.0, "Relayed mail");
    assert!(
        relayed.1.contains("Final-Recipient: rfc822; x@nodsn.test"),
        "{}",
        relayed.1
    );
    assert!(
        relayed
            .1
            .contains("Original-Recipient: rfc822; x@nodsn.test"),
        "{}",
        relayed.1
    );
    assert!(relayed.1.contains("mx.nodsn.test"), "{}", relayed.1);
    // Nothing about carol or dave.
    for (_, st) in &notices {
        assert!(!st.contains("remote.test"), "{st}");
    }
    // Notices come from the null sender.
    for m in mail.iter().filter(|m| m.contains("delivery-status")) {
        assert!(m.starts_with("Return-Path: <>\r\n"), "{m}");
    }
    pair.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delay_warning_goes_out_once() {
    let pair = Pair::start(
        "[queue]\nintervals = [\"1s\"]\ndelay_warning_after = \"2s\"\nmax_age = \"1h\"\n",
    )
    .await;
    let r = pair.submit(&["someone@down.test"], "slowly").await;
    assert!(r.starts_with("250 2.0.0"), "{r}");
    let warning = wait_for_mail_in(&pair.a_new("alice"), 1);
    let (subject, status) = dsn_parts(&warning[0]);
    assert_eq!(subject, "Delayed Mail (still being retried)");
    assert!(status.contains("Action: delayed"), "{status}");
    assert!(status.contains("Status: 4."), "{status}");
    assert!(
        status.contains("Final-Recipient: rfc822; someone@down.test"),
        "{status}"
    );
    assert!(status.contains("Will-Retry-Until: "), "{status}");
    assert!(status.contains("Diagnostic-Code: "), "{status}");
    // Headers only, and the message is still queued and retried.
    assert!(warning[0].contains("text/rfc822-headers"), "{}", warning[0]);
    // Several more attempts (one a second): still one warning.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(common::read_maildir(&pair.a_new("alice")).len(), 1);
    pair.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_destination_does_not_starve_the_others() {
    // Two delivery slots in all, one per destination: the second message
    // for the slow domain must wait without taking the last slot.
    let pair = Pair::start_with("concurrency = 2\nper_destination = 1\n", "").await;
    let slow = mini_smtp("127.0.0.4", pair.port, Some(Duration::from_secs(8))).await;
    for n in 0..2 {
        let r = pair
            .submit(&[&format!("u{n}@slow.test")], &format!("slow {n}"))
            .await;
        assert!(r.starts_with("250 2.0.0"), "{r}");
    }
    // Let the first slow delivery start.
    let deadline = Instant::now() + Duration::from_secs(5);
    while slow.connections.load(Ordering::SeqCst) == 0 {
        assert!(Instant::now() < deadline, "no connection to the slow MX");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let r = pair.submit(&["carol@remote.test"], "fast").await;
    assert!(r.starts_with("250 2.0.0"), "{r}");
    wait_for_mail_in(&pair.b_new("carol"), 1);
    // Delivered while the slow MX still holds its one connection (it
    // drops it after 8 s): without per-destination slots both slow
    // messages would hold both delivery slots until then.
    assert_eq!(
        slow.stalls_ended.load(Ordering::SeqCst),
        0,
        "the fast destination waited for the slow one"
    );
    assert_eq!(slow.connections.load(Ordering::SeqCst), 1);
    pair.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_to_one_destination_share_a_connection() {
    let pair = Pair::start("").await;
    let mini = mini_smtp("127.0.0.5", pair.port, None).await;
    for n in 0..3 {
        let r = pair
            .submit(&[&format!("u{n}@nodsn.test")], &format!("reuse {n}"))
            .await;
        assert!(r.starts_with("250 2.0.0"), "{r}");
        let deadline = Instant::now() + Duration::from_secs(10);
        while mini.accepted.load(Ordering::SeqCst) < n + 1 {
            assert!(Instant::now() < deadline, "message {n} not delivered");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    // One connection carried all three (kept open for 5 s between them).
    assert_eq!(mini.connections.load(Ordering::SeqCst), 1);
    pair.shutdown().await;
}
