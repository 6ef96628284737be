//! `tern queue …` end to end: the real binary against a real server over
//! the admin socket, then against the stopped server's spool directly.
//!
//! Remote recipients stay deferred: DNS points at a loopback responder
//! that answers every query with SERVFAIL (never the machine's resolver),
//! so every MX lookup fails at once with a temporary error. (A closed port
//! would do too, but UDP gives no error back and each lookup would wait
//! for the resolver's timeout.)

mod common;

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, Instant};

use common::{Raw, read_maildir, wait_for_mail_in};
use serde_json::Value;

/// A DNS "server" on loopback that answers every query with SERVFAIL.
async fn servfail_dns() -> std::net::SocketAddr {
    let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = sock.local_addr().unwrap();
    tokio::spawn(async move {
        let mut buf = [0u8; 1500];
        while let Ok((n, peer)) = sock.recv_from(&mut buf).await {
            // Header (12 bytes), then the question: QNAME labels, QTYPE, QCLASS.
            let mut end = 12;
            while end < n && buf[end] != 0 {
                end += usize::from(buf[end]) + 1;
            }
            end += 5;
            if n < 12 || end > n {
                continue;
            }
            let mut reply = buf[..end].to_vec();
            reply[2] = 0x80 | (buf[2] & 0x79); // QR, same opcode and RD
            reply[3] = 0x80 | 0x02; // RA, RCODE = SERVFAIL
            reply[6..12].fill(0); // no answer, authority or additional records
            let _ = sock.send_to(&reply, peer).await;
        }
    });
    addr
}

struct Setup {
    dir: tempfile::TempDir,
    config: PathBuf,
}

impl Setup {
    async fn new() -> Setup {
        let dns = servfail_dns().await;
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("tern.toml");
        std::fs::write(
            &config,
            format!(
                "hostname = \"mx.example.test\"\ndata_dir = {:?}\ntrusted_networks = [\"127.0.0.0/8\"]\n\
                 [[listener]]\naddress = \"127.0.0.1:0\"\nrole = \"mx\"\n\
                 [domains.\"example.test\"]\nmailboxes = [\"alice\"]\n\
                 [dns]\nnameservers = [\"{dns}\"]\n[mail_auth]\nenabled = false\n",
                dir.path().join("data")
            ),
        )
        .unwrap();
        Setup { dir, config }
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn alice_new(&self) -> PathBuf {
        self.data().join("mail/example.test/alice/new")
    }

    async fn start(&self) -> tern::Running {
        let config = tern::Config::load(&self.config).unwrap();
        tern::start(&config).await.unwrap()
    }

    /// Runs `tern queue <args> --config …` (off the async threads).
    async fn run(&self, args: &[&str]) -> Output {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_tern"));
        cmd.arg("queue")
            .args(args)
            .arg("--config")
            .arg(&self.config)
            .env("RUST_LOG", "off");
        tokio::task::spawn_blocking(move || cmd.output().unwrap())
            .await
            .unwrap()
    }

    /// `tern queue <args> --json`, which must succeed; its JSON answer.
    async fn json(&self, args: &[&str]) -> Value {
        let mut all = args.to_vec();
        all.push("--json");
        let out = self.run(&all).await;
        assert!(out.status.success(), "{args:?}: {}", text(&out));
        serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("{args:?}: {e}: {}", text(&out)))
    }

    /// The listed messages.
    async fn list(&self) -> Vec<Value> {
        let v = self.json(&["list"]).await;
        assert_eq!(v["result"], "list", "{v}");
        v["messages"].as_array().unwrap().clone()
    }

    /// Polls `list` until `pred` holds for message `id`.
    async fn wait_for(&self, id: &str, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let list = self.list().await;
            if let Some(m) = list.iter().find(|m| m["id"] == id)
                && pred(m)
            {
                return m.clone();
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {id}: {what}: {list:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

fn text(out: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// alice sends one message to `to` over SMTP; returns its queue id.
async fn send(addr: std::net::SocketAddr, to: &str, subject: &str) -> String {
    let (to, subject) = (to.to_owned(), subject.to_owned());
    tokio::task::spawn_blocking(move || {
        let mut c = Raw::greeted(addr);
        assert!(c.cmd("EHLO client.test").starts_with("250"));
        let r = c.send_mail(
            "alice@example.test",
            &to,
            &format!("From: alice@example.test\r\nSubject: {subject}\r\n\r\nbody"),
        );
        assert!(r.starts_with("250 2.0.0"), "{r}");
        r.trim_end().rsplit(' ').next().unwrap().to_owned()
    })
    .await
    .unwrap()
}

fn rcpt_state(m: &Value) -> &str {
    m["recipients"][0]["state"].as_str().unwrap_or("")
}

fn attempts(m: &Value) -> u64 {
    m["recipients"][0]["attempts"].as_u64().unwrap_or(0)
}

fn queue_files(data: &Path) -> usize {
    std::fs::read_dir(data.join("spool/queue"))
        .unwrap()
        .filter_map(Result::ok)
        .filter(|e| !e.file_name().to_string_lossy().contains('.'))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_cli_against_the_running_server_and_offline() {
    let s = Setup::new().await;
    let running = s.start().await;
    let addr = running.addrs()[0];

    // The socket is private to the service user.
    let socket = s.data().join("admin.sock");
    let mode = std::fs::metadata(&socket).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "admin.sock mode {mode:o}");

    let m1 = send(addr, "someone@remote.test", "first").await;
    let m2 = send(addr, "other@elsewhere.test", "second").await;
    assert_ne!(m1, m2);

    // list: both deferred after their first attempt (DNS fails).
    let first = s
        .wait_for(&m1, "deferred", |m| rcpt_state(m) == "deferred")
        .await;
    assert_eq!(first["sender"], "alice@example.test");
    assert_eq!(first["recipients"][0]["address"], "someone@remote.test");
    assert_eq!(first["recipients"][0]["local"], false);
    assert_eq!(first["held"], false);
    assert!(first["size"].as_u64().unwrap() > 0);
    assert!(
        first["last_error"].as_str().unwrap().starts_with('4'),
        "{first}"
    );
    assert!(first["next_attempt"].as_u64().is_some());
    s.wait_for(&m2, "deferred", |m| rcpt_state(m) == "deferred")
        .await;

    // The human table names both.
    let out = s.run(&["list"]).await;
    assert!(out.status.success(), "{}", text(&out));
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(table.starts_with("ID "), "{table}");
    assert!(table.contains(&m1) && table.contains(&m2), "{table}");
    assert!(
        table.contains("-> someone@remote.test") && table.contains("deferred ("),
        "{table}"
    );

    // show: envelope, headers, history.
    let shown = s.json(&["show", &m1]).await;
    let msg = &shown["message"];
    assert_eq!(msg["id"], m1.as_str(), "{shown}");
    assert!(
        msg["headers"].as_str().unwrap().contains("Subject: first"),
        "{shown}"
    );
    assert!(
        !msg["headers"].as_str().unwrap().contains("body"),
        "{shown}"
    );
    assert_eq!(msg["client_ip"], "127.0.0.1");
    assert_eq!(msg["history"][0]["state"], "deferred", "{shown}");
    let out = s.run(&["show", &m1]).await;
    let block = String::from_utf8_lossy(&out.stdout);
    assert!(block.starts_with(&format!("Message {m1}\n")), "{block}");
    assert!(
        block.contains("Subject: first") && block.contains("History:"),
        "{block}"
    );

    // An unknown id is an error, with a JSON answer for scripts.
    let out = s.run(&["show", "0000000000000000", "--json"]).await;
    assert!(!out.status.success());
    let err: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(err["kind"], "not_found", "{err}");
    let out = s.run(&["delete", "../../etc"]).await;
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("not a queue id"),
        "{}",
        text(&out)
    );

    // hold / release.
    let held = s.json(&["hold", &m1]).await;
    assert_eq!(held["ids"][0], m1.as_str(), "{held}");
    s.wait_for(&m1, "held", |m| m["held"] == true).await;
    let released = s.json(&["release", &m1]).await;
    assert_eq!(released["action"], "release");
    s.wait_for(&m1, "released", |m| m["held"] == false).await;

    // flush --domain: only m1 is attempted again at once (its retry is
    // minutes away otherwise).
    let before = attempts(&s.wait_for(&m1, "", |_| true).await);
    let m2_before = attempts(&s.wait_for(&m2, "", |_| true).await);
    let flushed = s.json(&["flush", "--domain", "REMOTE.test"]).await;
    assert_eq!(flushed["ids"], serde_json::json!([m1]), "{flushed}");
    s.wait_for(&m1, "another attempt", |m| attempts(m) > before)
        .await;
    assert_eq!(attempts(&s.wait_for(&m2, "", |_| true).await), m2_before);
    // flush of everything includes m2.
    let all = s.json(&["flush"]).await;
    assert!(
        all["ids"]
            .as_array()
            .unwrap()
            .contains(&Value::from(m2.as_str())),
        "{all}"
    );
    s.wait_for(&m2, "another attempt", |m| attempts(m) > m2_before)
        .await;

    // bounce: alice (a local mailbox) gets one DSN, the message is gone.
    let failure_notices = || {
        let text = tern_net::metrics::metrics().render();
        tern_net::metrics::sample(&text, "tern_dsn_sent_total{kind=\"failure\"}").unwrap_or(0.0)
    };
    let notices_before = failure_notices();
    let out = s.run(&["bounce", &m1]).await;
    assert!(out.status.success(), "{}", text(&out));
    // The server counts the notice it queued (the server runs in this
    // process; another test of this binary may add its own meanwhile).
    assert!(failure_notices() >= notices_before + 1.0);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("failure notice queued as"),
        "{}",
        text(&out)
    );
    let dsn = wait_for_mail_in(&s.alice_new(), 1);
    assert!(dsn[0].starts_with("Return-Path: <>\r\n"), "{}", dsn[0]);
    assert!(
        dsn[0].contains("Final-Recipient: rfc822; someone@remote.test"),
        "{}",
        dsn[0]
    );
    assert!(
        dsn[0].contains("Message returned by the administrator"),
        "{}",
        dsn[0]
    );
    assert!(dsn[0].contains("Status: 5.0.0"), "{}", dsn[0]);
    let list = s.list().await;
    assert!(list.iter().all(|m| m["id"] != m1.as_str()), "{list:?}");

    // delete: m2 leaves without a notice.
    let deleted = s.json(&["delete", &m2]).await;
    assert_eq!(deleted["action"], "delete");
    assert!(s.list().await.is_empty());
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(read_maildir(&s.alice_new()).len(), 1, "only m1's bounce");

    // One more message, then stop the server: the socket goes away.
    let m3 = send(addr, "third@remote.test", "third").await;
    s.wait_for(&m3, "deferred", |m| rcpt_state(m) == "deferred")
        .await;
    let m4 = send(addr, "fourth@remote.test", "fourth").await;
    s.wait_for(&m4, "deferred", |m| rcpt_state(m) == "deferred")
        .await;
    running.shutdown().await;
    assert!(!socket.exists(), "admin.sock removed at shutdown");

    // Offline: the CLI works on the spool itself.
    let out = s.run(&["list", "--json"]).await;
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("not running"),
        "{}",
        text(&out)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let ids: Vec<&str> = v["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, vec![m3.as_str(), m4.as_str()]);
    let offline_show = s.json(&["show", &m3]).await;
    assert!(
        offline_show["message"]["headers"]
            .as_str()
            .unwrap()
            .contains("Subject: third")
    );
    let out = s.run(&["flush"]).await;
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("nothing to flush"),
        "{}",
        text(&out)
    );
    s.json(&["hold", &m4]).await;
    assert_eq!(s.list().await[1]["held"], true);
    s.json(&["delete", &m3]).await;
    assert_eq!(queue_files(&s.data()), 1);
    // Offline bounce: recipients failed, the notice waits in the spool.
    let bounced = s.json(&["bounce", &m4]).await;
    assert!(
        bounced["note"].as_str().unwrap().contains("queued as"),
        "{bounced}"
    );
    let left = s.list().await;
    assert_eq!(left.len(), 1, "{left:?}");
    assert_eq!(left[0]["sender"], "", "the DSN, from the null sender");
    assert_eq!(left[0]["recipients"][0]["address"], "alice@example.test");

    // The next start delivers the notice; nothing else is left.
    let running = s.start().await;
    let mail = wait_for_mail_in(&s.alice_new(), 2);
    assert!(
        mail.iter()
            .any(|m| m.contains("Final-Recipient: rfc822; fourth@remote.test")),
        "{mail:?}"
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    while queue_files(&s.data()) > 0 {
        assert!(Instant::now() < deadline, "the queue should empty");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_spool_without_a_socket_is_not_touched() {
    let s = Setup::new().await;
    let running = s.start().await;
    // As if the socket were gone while the server still runs (e.g.
    // removed by hand): the CLI must not work on the locked spool.
    std::fs::remove_file(s.data().join("admin.sock")).unwrap();
    let out = s.run(&["list"]).await;
    assert!(!out.status.success(), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("holds the spool"), "{err}");
    running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_message_is_not_delivered_even_locally_until_released() {
    let s = Setup::new().await;
    // Queue a message for the local mailbox while Tern is stopped.
    let spool_dir = s.data().join("spool");
    let id = tokio::task::spawn_blocking(move || {
        let spool = tern_queue::Spool::open(&spool_dir, Default::default()).unwrap();
        let mut msg = spool.create().unwrap();
        msg.write(b"Subject: held\r\n\r\nwait\r\n").unwrap();
        let envelope = tern_queue::Envelope {
            sender: "someone@remote.test"
                .parse::<tern_types::Mailbox>()
                .unwrap()
                .into(),
            recipients: vec![tern_queue::Recipient {
                mailbox: Some("alice@example.test".into()),
                ..tern_queue::Recipient::new("alice@example.test".parse().unwrap())
            }],
            received_at: 1_700_000_000,
            ..tern_queue::Envelope::default()
        };
        msg.commit(&envelope).unwrap().wait_blocking().unwrap()
    })
    .await
    .unwrap();
    let id = id.to_string();
    s.json(&["hold", &id]).await;
    let running = s.start().await;
    // The manager looks at it at start-up and leaves it alone.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(read_maildir(&s.alice_new()).is_empty());
    assert_eq!(s.list().await[0]["held"], true);
    s.json(&["release", &id]).await;
    let mail = wait_for_mail_in(&s.alice_new(), 1);
    assert!(mail[0].contains("Subject: held"), "{}", mail[0]);
    running.shutdown().await;
}

/// Runs `tern trace <args> --config …`; must succeed.
async fn trace(s: &Setup, args: &[&str]) -> String {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_tern"));
    cmd.arg("trace")
        .args(args)
        .arg("--config")
        .arg(&s.config)
        .env("RUST_LOG", "off");
    let out = tokio::task::spawn_blocking(move || cmd.output().unwrap())
        .await
        .unwrap();
    assert!(out.status.success(), "{args:?}: {}", text(&out));
    String::from_utf8(out.stdout).unwrap()
}

/// Issue 15 §2: `tern trace` answers for messages that have left the
/// queue, from the journal, with the server stopped and across a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trace_follows_messages_after_they_left_the_queue_and_across_a_restart() {
    let s = Setup::new().await;
    let running = s.start().await;
    let addr = running.addrs()[0];
    let local = send(addr, "alice@example.test", "to alice").await;
    let remote = send(addr, "someone@remote.test", "far away").await;
    s.wait_for(&remote, "deferred", |m| rcpt_state(m) == "deferred")
        .await;
    let out = s.run(&["bounce", &remote]).await;
    assert!(out.status.success(), "{}", text(&out));
    // alice: her own message and the failure notice about the other.
    wait_for_mail_in(&s.alice_new(), 2);
    running.shutdown().await;

    // Stopped: the whole story of the bounced message, notice included.
    let v: Value = serde_json::from_str(&trace(&s, &[&remote, "--json"]).await).unwrap();
    let msgs = v.as_array().unwrap();
    assert_eq!(msgs.len(), 1, "{v:#}");
    let events: Vec<&str> = msgs[0]["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["event"].as_str().unwrap())
        .collect();
    assert_eq!(
        events,
        ["received", "deferred", "bounced", "removed", "notice"],
        "{v:#}"
    );
    let received = &msgs[0]["records"][0];
    assert_eq!(received["from"], "alice@example.test");
    assert_eq!(received["to"][0], "someone@remote.test");
    assert_eq!(received["role"], "mx");
    assert_eq!(received["stored"], "queue");
    let deferred = &msgs[0]["records"][1];
    assert_eq!(deferred["via"], "remote");
    assert!(
        deferred["reply"].as_str().unwrap().starts_with('4'),
        "{deferred}"
    );
    let notice = &msgs[0]["notices"][0];
    let notice_events: Vec<&str> = notice["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["event"].as_str().unwrap())
        .collect();
    assert_eq!(notice_events, ["generated", "delivered"], "{notice:#}");
    assert_eq!(notice["records"][1]["via"], "mailbox");
    assert_eq!(notice["records"][1]["to"], "alice@example.test");

    // For people: by sender, by recipient.
    let by_sender = trace(&s, &["--from", "ALICE@example.test"]).await;
    assert!(
        by_sender.contains(&local) && by_sender.contains(&remote),
        "{by_sender}"
    );
    assert!(by_sender.contains("delivered at intake"), "{by_sender}");
    assert!(
        by_sender.contains("final: someone@remote.test: bounced"),
        "{by_sender}"
    );
    let by_rcpt = trace(&s, &["--to", "alice@example.test"]).await;
    assert!(
        by_rcpt.contains(&local) && !by_rcpt.contains(&remote),
        "{by_rcpt}"
    );
    assert!(
        by_rcpt.contains("alice@example.test: delivered via mailbox"),
        "{by_rcpt}"
    );

    // After a restart the journal goes on.
    let running = s.start().await;
    let third = send(running.addrs()[0], "alice@example.test", "third").await;
    wait_for_mail_in(&s.alice_new(), 3);
    let since = trace(&s, &["--since", "1h", "--to", "alice@example.test"]).await;
    running.shutdown().await;
    assert!(since.contains(&local) && since.contains(&third), "{since}");
    let none = trace(&s, &["--since", "2099-01-01"]).await;
    assert!(none.contains("no message in the journal matches"), "{none}");
}
