//! Email authentication end to end (issue 5): a real Tern with an MX and a
//! submission listener, its DNS from a hickory server on loopback serving
//! SPF, DKIM and DMARC records.
//!
//! - DMARC: `From: ceo@protected.test` (p=reject) from an unauthorised IP
//!   is refused with 550 5.7.1 at the end of DATA; the same message with a
//!   valid DKIM signature of protected.test is delivered with `dmarc=pass`
//!   in our `Authentication-Results:`.
//! - p=quarantine lands in the recipient's `.Junk` Maildir++ folder.
//! - A forged `Authentication-Results: mx.example.test; dmarc=pass` is
//!   removed; other authserv-ids are kept.
//! - Mail submitted by an authenticated user is DKIM-signed (RSA and
//!   Ed25519) and verifies against the published keys.
//! - Mail forwarded through an alias to another domain gets an ARC set
//!   that the next hop validates (and no DKIM signature of ours).

mod common;
use tern_testkit::dns;

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use common::{Raw, read_maildir, wait_for_mail_in};
use tern_mailauth::keys::generate;
use tern_mailauth::{InboundPolicy, KeyAlgorithm, Signer, Verifier};

const PW: &str = "alice-secret-pw";

struct World {
    _dns: dns::TestDns,
    dns_addr: SocketAddr,
    running: Option<tern::Running>,
    mx: SocketAddr,
    submission: SocketAddr,
    dir: tempfile::TempDir,
    /// The sender side's keys (protected.test), not Tern's.
    sender_signer: Signer,
}

impl World {
    async fn start() -> World {
        let dir = tempfile::tempdir().unwrap();
        // Tern's own keys, for example.test, and the remote sender's.
        let tern_keys = dir.path().join("tern-dkim");
        let sender_keys = dir.path().join("sender-dkim");
        let keys = [
            generate(&tern_keys, "example.test", "rsa1", KeyAlgorithm::Rsa).unwrap(),
            generate(&tern_keys, "example.test", "ed1", KeyAlgorithm::Ed25519).unwrap(),
            generate(&sender_keys, "protected.test", "s1", KeyAlgorithm::Ed25519).unwrap(),
        ];
        let mut records: Vec<_> = keys
            .iter()
            .map(|k| dns::txt(&k.record_name(), &k.record_value()))
            .collect();
        records.extend([
            dns::txt("protected.test", "v=spf1 ip4:192.0.2.1 -all"),
            dns::txt("_dmarc.protected.test", "v=DMARC1; p=reject"),
            dns::txt("quarantined.test", "v=spf1 ip4:192.0.2.1 -all"),
            dns::txt("_dmarc.quarantined.test", "v=DMARC1; p=quarantine"),
            dns::txt("example.test", "v=spf1 ip4:127.0.0.1 -all"),
            dns::txt("_dmarc.example.test", "v=DMARC1; p=reject"),
            dns::a("client.test", Ipv4Addr::LOCALHOST),
        ]);
        let dns = dns::start(records).await;
        let users = dir.path().join("users.toml");
        common::add_user(&users, "alice@example.test", PW);
        let text = format!(
            r#"
hostname = "mx.example.test"
data_dir = {data:?}
[[listener]]
address = "127.0.0.1:0"
role = "mx"
[[listener]]
address = "127.0.0.1:0"
role = "submission"
plaintext_auth = true
[auth]
users_file = {users:?}
[domains."example.test"]
mailboxes = ["alice", "bob"]
aliases = {{ fwd = ["bob", "carol@remote.test"] }}
[delivery]
remote = false
[dns]
nameservers = ["{dns}"]
[dkim]
keys_dir = {keys:?}
[limits.abuse.tarpit]
initial_delay = "0s"
"#,
            data = dir.path().join("data"),
            dns = dns.addr,
            keys = tern_keys,
        );
        let config = tern::Config::parse(&text).expect("test config");
        let running = tern::start(&config).await.expect("server starts");
        let addrs = running.addrs();
        World {
            dns_addr: dns.addr,
            _dns: dns,
            mx: addrs[0],
            submission: addrs[1],
            running: Some(running),
            sender_signer: Signer::load(&sender_keys, ["protected.test"]).unwrap(),
            dir,
        }
    }

    fn maildir(&self, local: &str, folder: &str) -> PathBuf {
        self.dir
            .path()
            .join("data/mail/example.test")
            .join(local)
            .join(folder)
    }

    /// Checks `message` as the receiver `authserv_id` would on getting it
    /// from `client_ip`, against the keys and policies in the test DNS.
    async fn verify_as(
        &self,
        authserv_id: &str,
        client_ip: &str,
        helo: &str,
        mail_from: &str,
        message: &str,
    ) -> tern_mailauth::Verdict {
        let resolver = Arc::new(
            tern_dns::HickoryResolver::new(tern_dns::ResolverSettings {
                nameservers: vec![self.dns_addr],
                timeout: Duration::from_secs(2),
                attempts: 1,
                cache_size: 16,
            })
            .unwrap(),
        );
        Verifier::new(resolver, authserv_id, InboundPolicy::default())
            .verify(tern_mailauth::Inbound {
                client_ip: client_ip.parse().unwrap(),
                helo,
                mail_from,
                message: message.as_bytes(),
                seal_with: None,
            })
            .await
    }

    async fn stop(mut self) {
        if let Some(r) = self.running.take() {
            r.shutdown().await;
        }
    }
}

/// One transaction on the MX port; returns the reply to the end of data.
async fn send_mx(addr: SocketAddr, mail_from: &str, message: Vec<u8>) -> String {
    send_mx_to(addr, mail_from, "alice@example.test", message).await
}

async fn send_mx_to(addr: SocketAddr, mail_from: &str, rcpt: &str, message: Vec<u8>) -> String {
    let mail_from = mail_from.to_owned();
    let rcpt = rcpt.to_owned();
    tokio::task::spawn_blocking(move || {
        let mut c = Raw::greeted(addr);
        assert!(c.cmd("EHLO client.test").starts_with("250"));
        assert!(
            c.cmd(&format!("MAIL FROM:<{mail_from}>"))
                .starts_with("250")
        );
        assert!(c.cmd(&format!("RCPT TO:<{rcpt}>")).starts_with("250"));
        assert!(c.cmd("DATA").starts_with("354"));
        c.send(&message);
        c.send(b".\r\n");
        let r = c.reply();
        assert!(c.cmd("QUIT").starts_with("221"));
        r
    })
    .await
    .unwrap()
}

fn message(from: &str, extra_headers: &str) -> Vec<u8> {
    format!(
        "{extra_headers}From: {from}\r\nTo: alice@example.test\r\nSubject: Wire the money\r\n\
         Date: Mon, 23 Nov 2026 10:00:00 +0000\r\nMessage-ID: <m1@sender.test>\r\n\r\nNow, please.\r\n"
    )
    .into_bytes()
}

/// The `Authentication-Results:` fields of a stored message (unfolded).
fn auth_results(stored: &str) -> Vec<String> {
    let header = stored.split("\r\n\r\n").next().unwrap();
    let unfolded = header.replace("\r\n\t", " ").replace("\r\n ", " ");
    unfolded
        .lines()
        .filter(|l| {
            l.to_ascii_lowercase()
                .starts_with("authentication-results:")
        })
        .map(str::to_owned)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dmarc_reject_and_pass_and_forged_results_stripped() {
    let w = World::start().await;

    // p=reject, unauthorised IP, no signature: 550 5.7.1 at the end of DATA.
    let r = send_mx(
        w.mx,
        "ceo@protected.test",
        message("ceo@protected.test", ""),
    )
    .await;
    assert!(r.starts_with("550 5.7.1 "), "{r}");
    assert!(r.contains("DMARC"), "{r}");

    // The same message signed by protected.test, carrying a forged result
    // under our authserv-id and a foreign one: delivered, with one result
    // of ours that says dmarc=pass.
    let forged = "Authentication-Results: mx.example.test; dmarc=pass header.from=protected.test (forged)\r\n\
                  Authentication-Results: other.example; spf=pass\r\n";
    let msg = message("ceo@protected.test", forged);
    let sigs = w.sender_signer.sign("protected.test", &msg).unwrap();
    assert!(!sigs.is_empty());
    let signed = [sigs.as_bytes(), &msg].concat();
    let r = send_mx(w.mx, "ceo@protected.test", signed).await;
    assert!(r.starts_with("250 2.0.0"), "{r}");
    let stored = &wait_for_mail_in(&w.maildir("alice", "new"), 1)[0];
    let results = auth_results(stored);
    assert!(!stored.contains("(forged)"), "{stored}");
    let ours: Vec<&String> = results
        .iter()
        .filter(|r| r.starts_with("Authentication-Results: mx.example.test;"))
        .collect();
    assert_eq!(ours.len(), 1, "{results:?}");
    assert!(ours[0].contains("dmarc=pass"), "{}", ours[0]);
    assert!(ours[0].contains("dkim=pass"), "{}", ours[0]);
    assert!(ours[0].contains("spf=fail"), "{}", ours[0]);
    assert!(
        results
            .iter()
            .any(|r| r.contains("other.example; spf=pass")),
        "{results:?}"
    );
    // Our result sits right after our Received:, above the message's own
    // fields.
    let received = stored.find("Received: from client.test").unwrap();
    let ar = stored
        .find("Authentication-Results: mx.example.test")
        .unwrap();
    let sig = stored.find("DKIM-Signature:").unwrap();
    assert!(received < ar && ar < sig, "{stored}");
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dmarc_quarantine_goes_to_junk() {
    let w = World::start().await;
    let r = send_mx(
        w.mx,
        "a@quarantined.test",
        message("a@quarantined.test", ""),
    )
    .await;
    assert!(r.starts_with("250 2.0.0"), "{r}");
    let junk = &wait_for_mail_in(&w.maildir("alice", ".Junk/new"), 1)[0];
    assert!(junk.contains("dmarc=fail"), "{junk}");
    assert!(w.maildir("alice", ".Junk/maildirfolder").exists());
    assert!(read_maildir(&w.maildir("alice", "new")).is_empty());
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn submitted_mail_is_signed_with_both_keys() {
    let w = World::start().await;
    let addr = w.submission;
    tokio::task::spawn_blocking(move || {
        let mut c = Raw::greeted(addr);
        assert!(c.cmd("EHLO client.test").starts_with("250"));
        let token = B64.encode(format!("\0alice@example.test\0{PW}"));
        let r = c.cmd(&format!("AUTH PLAIN {token}"));
        assert!(r.starts_with("235"), "{r}");
        assert!(c.cmd("MAIL FROM:<alice@example.test>").starts_with("250"));
        assert!(c.cmd("RCPT TO:<bob@example.test>").starts_with("250"));
        assert!(c.cmd("DATA").starts_with("354"));
        // No Date:/Message-ID: the submission policy adds them, and they
        // are signed too.
        c.send(b"From: Alice <alice@example.test>\r\nTo: bob@example.test\r\nSubject: signed\r\n\r\nHello Bob.\r\n.\r\n");
        let r = c.reply();
        assert!(r.starts_with("250 2.0.0"), "{r}");
    })
    .await
    .unwrap();
    let stored = wait_for_mail_in(&w.maildir("bob", "new"), 1).remove(0);
    assert_eq!(stored.matches("DKIM-Signature:").count(), 2, "{stored}");
    assert!(stored.contains("a=rsa-sha256"), "{stored}");
    assert!(stored.contains("a=ed25519-sha256"), "{stored}");
    // Submission is not checked: no Authentication-Results of ours.
    assert!(auth_results(&stored).is_empty(), "{stored}");

    // Verify the stored message as a receiver would, against the keys in
    // the DNS.
    let verdict = w
        .verify_as(
            "receiver.test",
            "127.0.0.1",
            "client.test",
            "alice@example.test",
            &stored,
        )
        .await;
    assert_eq!(
        verdict.header.matches("dkim=pass").count(),
        2,
        "{}",
        verdict.header
    );
    assert!(verdict.header.contains("dmarc=pass"), "{}", verdict.header);
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarded_mail_is_arc_sealed() {
    let w = World::start().await;
    let msg = message("ceo@protected.test", "");
    let sigs = w.sender_signer.sign("protected.test", &msg).unwrap();
    let r = send_mx_to(
        w.mx,
        "ceo@protected.test",
        "fwd@example.test",
        [sigs.as_bytes(), &msg].concat(),
    )
    .await;
    assert!(r.starts_with("250 2.0.0"), "{r}");
    // bob's copy is the message as forwarded to remote.test (which stays
    // queued: remote delivery is off).
    let stored = wait_for_mail_in(&w.maildir("bob", "new"), 1).remove(0);
    assert!(stored.contains("ARC-Seal: i=1;"), "{stored}");
    assert!(stored.contains("ARC-Message-Signature: i=1;"), "{stored}");
    assert!(
        stored.contains("ARC-Authentication-Results: i=1; mx.example.test;"),
        "{stored}"
    );
    // Not DKIM-signed by the forwarding domain (the client did not
    // authenticate: our signature would be an oracle); the sender's own
    // signature stays.
    assert_eq!(stored.matches("\nDKIM-Signature:").count(), 1, "{stored}");
    // The ARC-Seal and the ARC-Message-Signature.
    assert_eq!(stored.matches("d=example.test;").count(), 2, "{stored}");
    // The next hop validates the chain.
    let verdict = w
        .verify_as(
            "mx.remote.test",
            "127.0.0.1",
            "mx.example.test",
            "ceo@protected.test",
            &stored,
        )
        .await;
    assert!(verdict.header.contains("arc=pass"), "{}", verdict.header);
    assert_eq!(
        verdict.header.matches("dkim=pass").count(),
        1,
        "{}",
        verdict.header
    );
    // Mail that is not forwarded is not sealed.
    let r = send_mx(w.mx, "ceo@protected.test", [sigs.as_bytes(), &msg].concat()).await;
    assert!(r.starts_with("250 2.0.0"), "{r}");
    let alice = wait_for_mail_in(&w.maildir("alice", "new"), 1).remove(0);
    assert!(!alice.contains("ARC-Seal"), "{alice}");
    w.stop().await;
}

/// Submits one message from alice to bob and returns it as stored.
async fn submit_and_fetch(w: &World, subject: &str, count: usize) -> String {
    let addr = w.submission;
    let header = format!("Subject: {subject}");
    let subject = subject.to_owned();
    tokio::task::spawn_blocking(move || {
        let mut c = Raw::greeted(addr);
        assert!(c.cmd("EHLO client.test").starts_with("250"));
        let token = B64.encode(format!("\0alice@example.test\0{PW}"));
        assert!(c.cmd(&format!("AUTH PLAIN {token}")).starts_with("235"));
        assert!(c.cmd("MAIL FROM:<alice@example.test>").starts_with("250"));
        assert!(c.cmd("RCPT TO:<bob@example.test>").starts_with("250"));
        assert!(c.cmd("DATA").starts_with("354"));
        c.send(
            format!("From: alice@example.test\r\nSubject: {subject}\r\n\r\nHi.\r\n.\r\n")
                .as_bytes(),
        );
        let r = c.reply();
        assert!(r.starts_with("250 2.0.0"), "{r}");
    })
    .await
    .unwrap();
    let all = wait_for_mail_in(&w.maildir("bob", "new"), count);
    all.into_iter()
        .find(|m| m.contains(&header))
        .expect("the message just sent")
}

/// Key rotation without a restart: on reload (what SIGHUP calls) the keys
/// directory is read again, and the new set signs from then on; a key file
/// that does not load keeps the whole previous set in force.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dkim_keys_are_reloaded() {
    let w = World::start().await;
    let keys_dir = w.dir.path().join("tern-dkim");
    let before = submit_and_fetch(&w, "before", 1).await;
    assert!(
        before.contains("s=rsa1") && before.contains("s=ed1"),
        "{before}"
    );

    // Rotate: a new selector, the old ones retired.
    generate(&keys_dir, "example.test", "rsa2", KeyAlgorithm::Rsa).unwrap();
    std::fs::remove_file(keys_dir.join("example.test/rsa1.key")).unwrap();
    std::fs::remove_file(keys_dir.join("example.test/ed1.key")).unwrap();
    // Not before the reload.
    let unchanged = submit_and_fetch(&w, "unchanged", 2).await;
    assert!(unchanged.contains("s=rsa1"), "{unchanged}");
    w.running.as_ref().unwrap().reload();
    let after = submit_and_fetch(&w, "after", 3).await;
    assert_eq!(after.matches("DKIM-Signature:").count(), 1, "{after}");
    assert!(after.contains("s=rsa2"), "{after}");
    assert!(
        !after.contains("s=rsa1") && !after.contains("s=ed1"),
        "{after}"
    );

    // A broken key file: the reload fails and rsa2 stays in force.
    std::fs::write(keys_dir.join("example.test/bad.key"), "not a key").unwrap();
    w.running.as_ref().unwrap().reload();
    let kept = submit_and_fetch(&w, "kept", 4).await;
    assert_eq!(kept.matches("DKIM-Signature:").count(), 1, "{kept}");
    assert!(kept.contains("s=rsa2"), "{kept}");
    w.stop().await;
}

/// The notices Tern sends (bounces, delay warnings) come from
/// `MAILER-DAEMON@mx.example.test`; they are DKIM-signed with the keys of
/// the nearest domain that has some (example.test) and verify against the
/// published records.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notices_are_dkim_signed() {
    let w = World::start().await;
    let signer = Signer::load(&w.dir.path().join("tern-dkim"), ["example.test"]).unwrap();
    let config = tern::Config::parse(
        "hostname = \"mx.example.test\"\n[[listener]]\naddress = \"127.0.0.1:0\"\nrole = \"mx\"\n\
         [domains.\"example.test\"]\nmailboxes = [\"alice\"]\n",
    )
    .unwrap();
    let directory = tern_store::Directory::new(config.directory_config().unwrap()).unwrap();
    let spool_dir = w.dir.path().join("notice-spool");
    let dsn = b"From: Mail Delivery System <MAILER-DAEMON@mx.example.test>\r\n\
        To: <carol@remote.test>\r\nSubject: Undelivered Mail Returned to Sender\r\n\
        Date: Mon, 23 Nov 2026 18:00:00 +0000\r\nMessage-ID: <n1@mx.example.test>\r\n\
        MIME-Version: 1.0\r\nContent-Type: text/plain\r\n\r\nIt did not work out.\r\n"
        .to_vec();
    let stored = tokio::task::spawn_blocking(move || {
        let spool =
            tern_queue::Spool::open(&spool_dir, tern_queue::SpoolOptions::default()).unwrap();
        let notice = tern_net::queue::FailureNotice {
            dsn,
            to: "carol@remote.test".parse().unwrap(),
            now: 1_700_000_000,
        };
        let id = tern_net::queue::queue_notice(&spool, &directory, &signer, notice).unwrap();
        let message = spool.open_message(&id).unwrap();
        let mut bytes = Vec::new();
        std::io::Read::read_to_end(&mut message.reader().unwrap(), &mut bytes).unwrap();
        String::from_utf8(bytes).unwrap()
    })
    .await
    .unwrap();
    assert_eq!(stored.matches("DKIM-Signature:").count(), 2, "{stored}");
    assert!(stored.contains("d=example.test"), "{stored}");

    let verdict = w
        .verify_as("receiver.test", "192.0.2.9", "mx.example.test", "", &stored)
        .await;
    assert_eq!(
        verdict.header.matches("dkim=pass").count(),
        2,
        "{}",
        verdict.header
    );
    assert!(verdict.header.contains("dmarc=pass"), "{}", verdict.header);
    w.stop().await;
}
