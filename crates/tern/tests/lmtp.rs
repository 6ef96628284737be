//! LMTP delivery end to end (issue 4): a real Tern whose `lmtp.test`
//! domain is configured with `lmtp = "unix:…"` hands its mailboxes to a
//! scripted LMTP server listening on a Unix socket in the test, while
//! `example.test` stays on Maildir. The server's per-recipient replies
//! after DATA decide each recipient: 250 is recorded as delivered, 550
//! bounces to the sender (a Maildir mailbox), 452 stays queued.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::{Raw, read_maildir, wait_for_mail_in};
use mail_parser::MimeHeaders as _;
use tern_queue::{RecipientState, Spool, SpoolOptions};
use tern_testkit::smtp::{LmtpReply, RunningPeer, SmtpPeer, Transaction};

/// The LMTP server of these tests: every RCPT is accepted; after the end
/// of data each recipient gets the reply `answer` gives for its address.
fn lmtp_server(path: &Path, answer: LmtpReply) -> RunningPeer {
    SmtpPeer::lmtp("imap.lmtp.test")
        .extension("8BITMIME")
        .extension("ENHANCEDSTATUSCODES")
        .extension("PIPELINING")
        .lmtp_replies(answer)
        .bind_unix(path)
}

struct Setup {
    running: tern::Running,
    addr: std::net::SocketAddr,
    dir: tempfile::TempDir,
    log: RunningPeer,
}

impl Setup {
    async fn start(answer: LmtpReply) -> Setup {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("lmtp.sock");
        let log = lmtp_server(&socket, answer);
        let config = tern::Config::parse(&format!(
            r#"
hostname = "mx.example.test"
data_dir = {data:?}
[[listener]]
address = "127.0.0.1:0"
role = "mx"
[domains."example.test"]
mailboxes = ["alice"]
[domains."lmtp.test"]
mailboxes = ["bob", "carol"]
lmtp = "unix:{socket}"
[dns]
nameservers = ["127.0.0.1:9"]
[mail_auth]
enabled = false
"#,
            data = dir.path().join("data"),
            socket = socket.display(),
        ))
        .unwrap();
        let running = tern::start(&config).await.unwrap();
        let addr = running.addrs()[0];
        Setup {
            running,
            addr,
            dir,
            log,
        }
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn maildir_new(&self, mailbox: &str) -> PathBuf {
        let (local, domain) = mailbox.split_once('@').unwrap();
        self.data()
            .join("mail")
            .join(domain)
            .join(local)
            .join("new")
    }

    /// alice@example.test sends one message to bob and carol over the MX
    /// listener; returns the final reply.
    async fn send(&self) -> String {
        let addr = self.addr;
        tokio::task::spawn_blocking(move || {
            let mut c = Raw::greeted(addr);
            assert!(c.cmd("EHLO client.test").starts_with("250"));
            assert!(c.cmd("MAIL FROM:<alice@example.test>").starts_with("250"));
            for r in ["bob@lmtp.test", "carol@lmtp.test"] {
                let reply = c.cmd(&format!("RCPT TO:<{r}>"));
                assert!(reply.starts_with("250"), "{r}: {reply}");
            }
            assert!(c.cmd("DATA").starts_with("354"));
            c.send(b"From: alice@example.test\r\nSubject: over lmtp\r\n\r\n..dot line\r\nbody\r\n.\r\n");
            c.reply()
        })
        .await
        .unwrap()
    }

    /// Waits until the LMTP server has seen `n` transactions ended by QUIT.
    async fn wait_for_lmtp(&self, n: usize) -> Vec<Transaction> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let log = self.log.transactions();
            if log.len() >= n && log.iter().all(|t| t.quit) || Instant::now() > deadline {
                assert_eq!(log.len(), n, "LMTP transactions: {log:?}");
                assert!(log.iter().all(|t| t.quit), "{log:?}");
                return log;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn queued(&self) -> usize {
        std::fs::read_dir(self.data().join("spool/queue"))
            .map(|d| {
                d.filter_map(Result::ok)
                    .filter(|e| !e.file_name().to_string_lossy().contains('.'))
                    .count()
            })
            .unwrap_or(0)
    }
}

fn check_transaction(t: &Transaction) {
    let data = String::from_utf8_lossy(&t.data);
    assert_eq!(t.hello, "LHLO mx.example.test");
    assert!(
        t.mail.starts_with("MAIL FROM:<alice@example.test>"),
        "{}",
        t.mail
    );
    assert_eq!(t.rcpts, ["bob@lmtp.test", "carol@lmtp.test"]);
    assert!(data.contains("Subject: over lmtp\r\n"), "{data}");
    assert!(
        data.contains("\r\n.dot line\r\n"),
        "dot-stuffing round trip"
    );
    assert!(
        data.contains("by mx.example.test"),
        "Tern's Received header"
    );
}

fn reject_carol(rcpt: &str) -> String {
    if rcpt.starts_with("carol@") {
        format!("550 5.1.1 <{rcpt}> User doesn't exist: {rcpt}")
    } else {
        format!("250 2.0.0 <{rcpt}> 4ZV9Ei3xY2W7CwAAM4tKKA Saved")
    }
}

fn defer_carol(rcpt: &str) -> String {
    if rcpt.starts_with("carol@") {
        format!("452 4.2.2 <{rcpt}> Quota exceeded (mailbox for user is full)")
    } else {
        format!("250 2.0.0 <{rcpt}> Saved")
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accepted_recipient_is_delivered_and_the_rejected_one_bounces() {
    let setup = Setup::start(reject_carol).await;
    let r = setup.send().await;
    assert!(r.starts_with("250 2.0.0"), "{r}");

    let log = setup.wait_for_lmtp(1).await;
    check_transaction(&log[0]);

    // One bounce to alice (Maildir), naming only carol, with the LMTP
    // server's reply.
    let bounce = wait_for_mail_in(&setup.maildir_new("alice@example.test"), 1);
    assert!(
        bounce[0].starts_with("Return-Path: <>\r\n"),
        "{}",
        bounce[0]
    );
    let msg = mail_parser::MessageParser::new()
        .parse(bounce[0].as_bytes())
        .expect("DSN parses");
    let ct = msg.content_type().unwrap();
    assert_eq!((ct.ctype(), ct.subtype()), ("multipart", Some("report")));
    let status = msg
        .parts
        .iter()
        .find(|p| {
            p.content_type()
                .is_some_and(|c| c.subtype() == Some("delivery-status"))
        })
        .expect("a message/delivery-status part");
    let status = String::from_utf8_lossy(status.contents()).into_owned();
    assert!(
        status.contains("Final-Recipient: rfc822; carol@lmtp.test"),
        "{status}"
    );
    assert!(status.contains("Action: failed"), "{status}");
    assert!(status.contains("Status: 5.1.1"), "{status}");
    assert!(status.contains("User doesn't exist"), "{status}");
    assert!(!status.contains("bob@lmtp.test"), "{status}");

    // Nothing went to Maildirs of the LMTP domain, nothing twice to the
    // LMTP server, and the queue is empty (every recipient final).
    let deadline = Instant::now() + Duration::from_secs(10);
    while setup.queued() > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(setup.queued(), 0, "queue should be empty");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(setup.log.transactions().len(), 1, "delivered once");
    assert!(read_maildir(&setup.maildir_new("bob@lmtp.test")).is_empty());
    assert!(!setup.data().join("mail/lmtp.test").exists());
    assert_eq!(
        read_maildir(&setup.maildir_new("alice@example.test")).len(),
        1
    );
    setup.running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn results_are_recorded_per_recipient_and_a_deferral_stays_queued() {
    let setup = Setup::start(defer_carol).await;
    let r = setup.send().await;
    assert!(r.starts_with("250 2.0.0"), "{r}");
    let log = setup.wait_for_lmtp(1).await;
    check_transaction(&log[0]);
    // Shutting down waits for the attempt in flight, whose results are
    // persisted first.
    let Setup { running, dir, .. } = setup;
    running.shutdown().await;

    let spool = Spool::open(&dir.path().join("data/spool"), SpoolOptions::default()).unwrap();
    let ids = spool.list().unwrap();
    assert_eq!(ids.len(), 1, "carol keeps the message queued");
    let states = spool.recipient_states(&ids[0]).unwrap();
    assert_eq!(states.len(), 2);
    match &states[0] {
        RecipientState::Delivered { reply, .. } => {
            assert!(reply.starts_with("250 2.0.0 <bob@lmtp.test>"), "{reply}")
        }
        other => panic!("bob: {other:?}"),
    }
    match &states[1] {
        RecipientState::Deferred {
            attempts,
            last_error,
            ..
        } => {
            assert_eq!(*attempts, 1);
            assert!(last_error.starts_with("452 4.2.2"), "{last_error}");
        }
        other => panic!("carol: {other:?}"),
    }
    // No bounce for a deferral.
    assert!(read_maildir(&dir.path().join("data/mail/example.test/alice/new")).is_empty());
}
