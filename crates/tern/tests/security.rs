//! Regression tests for the security review (issue 11), one named test per
//! finding, each against a real Tern on loopback. Findings tested closer
//! to their code are named there with the same `finding_NN_` prefix:
//!
//! | finding | where |
//! |---|---|
//! | 1 signing oracle | here (`finding_01_*`), `tern-delivery/src/dsn.rs` (notices) |
//! | 2 two `From:` | here, `tern-net/src/submission.rs` |
//! | 3 unverified smarthost | `tests/security_ops.rs` |
//! | 4 empty AUTH identity | `tern-limits/src/auth.rs` |
//! | 5 messages read whole | here |
//! | 6 data rate after abort | here |
//! | 7 per-IP limit on IPv6 | `tern-net/src/limits.rs` |
//! | 8 free rejected recipients | here |
//! | 9 forged `Authentication-Results:` | here |
//! | 10 `NOTIFY=SUCCESS` from strangers | here |
//! | 11 unbounded password checks | `tern-net/src/gate.rs` |
//! | 12 no privilege drop | `tests/security_ops.rs` |
//! | 13 plaintext auth, OAuth audience | `tests/security_ops.rs` |
//! | 14 unbounded DKIM signatures | `tern-mailauth/src/body.rs` |

mod common;
use tern_testkit::dns;

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use common::{Raw, read_maildir, wait_for_mail_in};
use tern_mailauth::KeyAlgorithm;
use tern_mailauth::keys::generate;

const PW: &str = "alice-secret-pw";

/// A server with an MX and a submission listener, alice as a user with a
/// password, DKIM keys for example.test, the alias `fwd` to a remote
/// address, and no DNS (closed port: every lookup fails at once).
struct World {
    _dns: dns::TestDns,
    running: Option<tern::Running>,
    dir: tempfile::TempDir,
    mx: SocketAddr,
    submission: SocketAddr,
}

impl World {
    /// `mail_auth`: the body of the `[mail_auth]` table; `extra`: more
    /// tables.
    async fn start(mail_auth: &str, extra: &str) -> World {
        // An authoritative server with no records: every lookup is a
        // quick NXDOMAIN.
        let dns = dns::start(Vec::new()).await;
        let dir = tempfile::tempdir().unwrap();
        let keys = dir.path().join("dkim");
        generate(&keys, "example.test", "ed1", KeyAlgorithm::Ed25519).unwrap();
        let users = dir.path().join("users.toml");
        common::add_user(&users, "alice@example.test", PW);
        let text = format!(
            "hostname = \"mx.example.test\"\ndata_dir = {data:?}\n\
             [[listener]]\naddress = \"127.0.0.1:0\"\nrole = \"mx\"\n\
             [[listener]]\naddress = \"127.0.0.1:0\"\nrole = \"submission\"\nplaintext_auth = true\n\
             [auth]\nusers_file = {users:?}\n[dkim]\nkeys_dir = {keys:?}\n\
             [domains.\"example.test\"]\nmailboxes = [\"alice\", \"bob\"]\n\
             aliases = {{ fwd = [\"someone@remote.test\"] }}\n\
             [dns]\nnameservers = [\"{dns}\"]\n\
             [mail_auth]\n{mail_auth}\n\
             [limits.abuse.tarpit]\ninitial_delay = \"0s\"\n{extra}\n",
            data = dir.path().join("data"),
            dns = dns.addr,
        );
        let config = tern::Config::parse(&text).expect("test config");
        let running = tern::start(&config).await.expect("server starts");
        let addrs = running.addrs();
        World {
            _dns: dns,
            mx: addrs[0],
            submission: addrs[1],
            running: Some(running),
            dir,
        }
    }

    fn data(&self) -> std::path::PathBuf {
        self.dir.path().join("data")
    }

    fn maildir(&self, local: &str, folder: &str) -> std::path::PathBuf {
        self.data()
            .join("mail/example.test")
            .join(local)
            .join(folder)
    }

    async fn stop(mut self) {
        if let Some(r) = self.running.take() {
            r.shutdown().await;
        }
    }
}

fn submit(addr: SocketAddr, from: &str, to: &str, message: &str) -> String {
    let mut c = Raw::greeted(addr);
    assert!(c.cmd("EHLO client.test").starts_with("250"));
    let token = B64.encode(format!("\0alice@example.test\0{PW}"));
    let r = c.cmd(&format!("AUTH PLAIN {token}"));
    assert!(r.starts_with("235"), "{r}");
    let r = c.cmd(&format!("MAIL FROM:<{from}>"));
    assert!(r.starts_with("250"), "{r}");
    let r = c.cmd(&format!("RCPT TO:<{to}>"));
    assert!(r.starts_with("250"), "{r}");
    assert!(c.cmd("DATA").starts_with("354"));
    c.send(message.as_bytes());
    c.send(b".\r\n");
    c.reply()
}

fn mx_send(addr: SocketAddr, from: &str, rcpt: &str, message: &str) -> String {
    let mut c = Raw::greeted(addr);
    assert!(c.cmd("EHLO client.test").starts_with("250"));
    assert!(c.cmd(&format!("MAIL FROM:<{from}>")).starts_with("250"));
    let r = c.cmd(&format!("RCPT TO:<{rcpt}>"));
    assert!(r.starts_with("250"), "{r}");
    assert!(c.cmd("DATA").starts_with("354"));
    c.send(message.as_bytes());
    c.send(b".\r\n");
    c.reply()
}

/// Every file under `dir` (recursively) whose content contains `needle`.
fn files_containing(dir: &Path, needle: &str) -> Vec<String> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(files_containing(&p, needle));
        } else if let Ok(bytes) = std::fs::read(&p) {
            let text = String::from_utf8_lossy(&bytes).into_owned();
            if text.contains(needle) {
                out.push(text);
            }
        }
    }
    out
}

/// Finding 1: an unauthenticated client sent mail to an alias with a
/// remote target and the forwarded copy left with our DKIM signature.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finding_01_forwarded_mail_is_never_dkim_signed_for_strangers() {
    let w = World::start("enabled = true", "").await;
    let mx = w.mx;
    let r = tokio::task::spawn_blocking(move || {
        mx_send(
            mx,
            "boss@protected.test",
            "fwd@example.test",
            "From: Boss <boss@protected.test>\r\nTo: fwd@example.test\r\nSubject: wire\r\n\r\nmoney\r\n",
        )
    })
    .await
    .unwrap();
    assert!(r.starts_with("250"), "{r}");
    // The forwarded copy waits in the queue (the remote domain has no MX);
    // it is ARC-sealed by the forwarding domain instead.
    let queued = files_containing(&w.data().join("spool"), "Subject: wire");
    assert_eq!(queued.len(), 1, "one queued copy");
    assert!(
        !queued[0]
            .lines()
            .any(|l| l.to_ascii_lowercase().starts_with("dkim-signature:")),
        "forwarded mail from an unauthenticated client was signed:\n{}",
        queued[0]
    );
    assert!(queued[0].contains("ARC-Seal: i=1;"), "{}", queued[0]);
    w.stop().await;
}

/// Finding 1: mail claiming to be from our own domain that nothing
/// authenticates is refused on the MX port whatever DMARC policy (if any)
/// the domain publishes; a setting turns the rule off.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finding_01_own_domain_without_authentication_is_refused_on_mx() {
    let msg =
        "From: CEO <ceo@example.test>\r\nTo: alice@example.test\r\nSubject: wire\r\n\r\nnow\r\n";
    for (setting, refused) in [
        ("", true),
        ("reject_own_domain_unauthenticated = false", false),
    ] {
        // The checks need to run: enabled, DNS on a closed port.
        let w = World::start(&format!("enabled = true\n{setting}"), "").await;
        let mx = w.mx;
        let r = tokio::task::spawn_blocking(move || {
            mx_send(mx, "ceo@example.test", "alice@example.test", msg)
        })
        .await
        .unwrap();
        if refused {
            assert!(r.starts_with("550 5.7.1"), "{r}");
            assert!(read_maildir(&w.maildir("alice", "new")).is_empty());
        } else {
            assert!(r.starts_with("250"), "{r}");
        }
        // Another domain's mail is unaffected.
        let r = tokio::task::spawn_blocking(move || {
            mx_send(
                mx,
                "a@else.test",
                "alice@example.test",
                "From: a@else.test\r\nSubject: hi\r\n\r\nhi\r\n",
            )
        })
        .await
        .unwrap();
        assert!(r.starts_with("250"), "{r}");
        w.stop().await;
    }
}

/// Finding 2: two `From:` fields passed the sender check and were signed
/// for the first (foreign) domain.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finding_02_two_from_fields_are_refused_on_submission() {
    let w = World::start("enabled = false", "").await;
    let sub = w.submission;
    let r = tokio::task::spawn_blocking(move || {
        submit(
            sub,
            "alice@example.test",
            "bob@example.test",
            "From: ceo@other.test\r\nFrom: alice@example.test\r\nSubject: x\r\n\r\nbody\r\n",
        )
    })
    .await
    .unwrap();
    assert!(r.starts_with("550 5.6.0"), "{r}");
    // No From: at all.
    let r = tokio::task::spawn_blocking(move || {
        submit(
            sub,
            "alice@example.test",
            "bob@example.test",
            "Subject: x\r\n\r\nbody\r\n",
        )
    })
    .await
    .unwrap();
    assert!(r.starts_with("550 5.6.0"), "{r}");
    // A Sender: that is not hers.
    let r = tokio::task::spawn_blocking(move || {
        submit(
            sub,
            "alice@example.test",
            "bob@example.test",
            "From: alice@example.test\r\nSender: ceo@other.test\r\n\r\nbody\r\n",
        )
    })
    .await
    .unwrap();
    assert!(r.starts_with("553 5.7.1"), "{r}");
    assert!(read_maildir(&w.maildir("bob", "new")).is_empty());
    // One From:, hers: delivered and signed for her domain only.
    let r = tokio::task::spawn_blocking(move || {
        submit(
            sub,
            "alice@example.test",
            "bob@example.test",
            "From: Alice <alice@example.test>\r\nSubject: ok\r\n\r\nbody\r\n",
        )
    })
    .await
    .unwrap();
    assert!(r.starts_with("250"), "{r}");
    let stored = wait_for_mail_in(&w.maildir("bob", "new"), 1).remove(0);
    assert_eq!(stored.matches("DKIM-Signature:").count(), 1, "{stored}");
    assert!(stored.contains("d=example.test;"), "{stored}");
    w.stop().await;
}

/// Peak resident memory of this process, in KiB.
fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap()
}

/// Finding 5: every MX message was read whole into memory (twice) at end
/// of data for the checks. A 40 MB message must not raise the server's
/// peak memory by anything near its size.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finding_05_mx_messages_are_checked_as_a_stream() {
    let dns = dns::start(Vec::new()).await;
    let dir = tempfile::tempdir().unwrap();
    let addr = common::free_loopback_addr();
    let config = dir.path().join("tern.toml");
    std::fs::write(
        &config,
        format!(
            "hostname = \"mx.example.test\"\ndata_dir = {:?}\n\
             [[listener]]\naddress = \"{addr}\"\nrole = \"mx\"\n\
             [domains.\"example.test\"]\nmailboxes = [\"alice\"]\n\
             [dns]\nnameservers = [\"{}\"]\n[mail_auth]\nenabled = true\n\
             [limits]\nmax_message_size = 100000000\n",
            dir.path().join("data"),
            dns.addr,
        ),
    )
    .unwrap();
    let log = dir.path().join("log");
    let grown_mib = tokio::task::spawn_blocking(move || {
        let mut child = common::spawn_daemon(&config, &log, addr, &[]);
        // Warm up: one small message (allocator, DNS client, threads).
        let r = mx_send(
            addr,
            "a@else.test",
            "alice@example.test",
            "From: a@else.test\r\n\r\nhi\r\n",
        );
        assert!(r.starts_with("250"), "{r}");
        let before = peak_rss_kib(child.id());
        let line = format!("{}\r\n", "x".repeat(998));
        let body = line.repeat(40 * 1024 * 1024 / line.len());
        let msg = format!("From: a@else.test\r\nSubject: big\r\n\r\n{body}");
        let r = mx_send(addr, "a@else.test", "alice@example.test", &msg);
        let grown = peak_rss_kib(child.id()).saturating_sub(before) / 1024;
        common::signal(&child, "-TERM");
        let _ = child.wait();
        assert!(r.starts_with("250"), "{r}");
        grown
    })
    .await
    .unwrap();
    assert!(
        grown_mib < 16,
        "peak memory grew by {grown_mib} MiB for a 40 MiB message"
    );
}

/// Finding 6: after a refused DATA (bare LF) or a swallowed BDAT, the
/// session drained the rest at any pace, forever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finding_06_drained_data_still_has_a_deadline() {
    let w = World::start(
        "enabled = false",
        "[limits]\nmessage_data_timeout = \"2s\"\n",
    )
    .await;
    let mx = w.mx;
    let outcomes = tokio::task::spawn_blocking(move || {
        let mut out = Vec::new();
        for case in ["data", "bdat"] {
            let mut s = TcpStream::connect(mx).unwrap();
            s.set_read_timeout(Some(Duration::from_millis(300)))
                .unwrap();
            let mut seen = String::new();
            let read_some = |s: &mut TcpStream, seen: &mut String| -> bool {
                let mut buf = [0u8; 4096];
                match s.read(&mut buf) {
                    Ok(0) => false,
                    Ok(n) => {
                        seen.push_str(&String::from_utf8_lossy(&buf[..n]));
                        true
                    }
                    Err(_) => true,
                }
            };
            let say = |s: &mut TcpStream, seen: &mut String, line: &str| {
                s.write_all(line.as_bytes()).unwrap();
                read_some(s, seen);
            };
            say(&mut s, &mut seen, "EHLO client.test\r\n");
            if case == "data" {
                say(&mut s, &mut seen, "MAIL FROM:<a@else.test>\r\n");
                say(&mut s, &mut seen, "RCPT TO:<alice@example.test>\r\n");
                say(&mut s, &mut seen, "DATA\r\n");
                // A bare LF: the message is refused and the rest drained.
                s.write_all(b"Subject: x\n").unwrap();
            } else {
                // BDAT without MAIL: refused, its bytes swallowed.
                s.write_all(b"BDAT 999999999\r\n").unwrap();
            }
            let started = Instant::now();
            let mut open = true;
            // One byte every 300 ms (a drip under any minimum rate's grace).
            while open && started.elapsed() < Duration::from_secs(12) {
                if s.write_all(b"y").is_err() {
                    break;
                }
                open = read_some(&mut s, &mut seen);
            }
            out.push((case, !open, started.elapsed(), seen));
        }
        out
    })
    .await
    .unwrap();
    for (case, closed, took, seen) in outcomes {
        assert!(closed, "{case}: session still open after {took:?}: {seen}");
        assert!(took < Duration::from_secs(10), "{case}: {took:?}");
        assert!(seen.contains("421 4.4.2"), "{case}: {seen}");
    }
    w.stop().await;
}

/// Finding 8: rejected recipients cost nothing, so a directory could be
/// harvested at full speed. They now count as errors: the session is
/// closed at `max_errors`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finding_08_rejected_recipients_count_as_errors() {
    let w = World::start("enabled = false", "").await;
    let mx = w.mx;
    let (accepted_after, transcript) = tokio::task::spawn_blocking(move || {
        let mut c = Raw::greeted(mx);
        assert!(c.cmd("EHLO client.test").starts_with("250"));
        assert!(c.cmd("MAIL FROM:<a@else.test>").starts_with("250"));
        let mut transcript = String::new();
        for i in 0..300 {
            let r = c.cmd(&format!("RCPT TO:<nobody{i}@example.test>"));
            transcript.push_str(&r);
            if r.is_empty() || r.starts_with("421") {
                break;
            }
        }
        let r = c.cmd("RCPT TO:<alice@example.test>");
        (r, transcript)
    })
    .await
    .unwrap();
    assert!(
        transcript.contains("421 4.7.0"),
        "no disconnect after rejected recipients:\n{transcript}"
    );
    // The 20th refusal is the 20th error: 421 and the door.
    assert_eq!(transcript.matches("550 5.1.1").count(), 20, "{transcript}");
    assert!(!accepted_after.starts_with("250"), "{accepted_after}");
    w.stop().await;
}

/// Finding 9: forged `Authentication-Results:` with our authserv-id were
/// removed only when the checks ran: not on submission, not on MX with
/// the checks off.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finding_09_forged_results_are_stripped_on_every_role() {
    let w = World::start("enabled = false", "").await;
    let (mx, sub) = (w.mx, w.submission);
    let forged = "Authentication-Results: mx.example.test; dmarc=pass\r\n\
                  Authentication-Results: other.test; spf=pass\r\n";
    let r = tokio::task::spawn_blocking(move || {
        let a = submit(
            sub,
            "alice@example.test",
            "bob@example.test",
            &format!("{forged}From: alice@example.test\r\nSubject: s\r\n\r\nx\r\n"),
        );
        let b = mx_send(
            mx,
            "a@else.test",
            "bob@example.test",
            &format!("{forged}From: a@else.test\r\nSubject: m\r\n\r\nx\r\n"),
        );
        (a, b)
    })
    .await
    .unwrap();
    assert!(r.0.starts_with("250") && r.1.starts_with("250"), "{r:?}");
    for stored in wait_for_mail_in(&w.maildir("bob", "new"), 2) {
        assert!(
            !stored.contains("mx.example.test; dmarc=pass"),
            "forged results kept:\n{stored}"
        );
        assert!(stored.contains("other.test; spf=pass"), "{stored}");
    }
    w.stop().await;
}

/// Finding 10: `NOTIFY=SUCCESS` from an unauthenticated MX client made
/// Tern send a signed report to a possibly forged address.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finding_10_success_reports_only_for_known_senders() {
    let w = World::start("enabled = false", "").await;
    let (mx, sub) = (w.mx, w.submission);
    // A stranger on the MX port asks for a success report to alice.
    let r = tokio::task::spawn_blocking(move || {
        let mut c = Raw::greeted(mx);
        assert!(c.cmd("EHLO client.test").starts_with("250"));
        assert!(c.cmd("MAIL FROM:<alice@example.test>").starts_with("250"));
        assert!(
            c.cmd("RCPT TO:<bob@example.test> NOTIFY=SUCCESS,DELAY")
                .starts_with("250")
        );
        assert!(c.cmd("DATA").starts_with("354"));
        c.send(b"From: x@else.test\r\nSubject: stranger\r\n\r\nx\r\n.\r\n");
        c.reply()
    })
    .await
    .unwrap();
    assert!(r.starts_with("250"), "{r}");
    wait_for_mail_in(&w.maildir("bob", "new"), 1);
    // alice herself, authenticated, asks for one: she gets it.
    let r = tokio::task::spawn_blocking(move || {
        let mut c = Raw::greeted(sub);
        assert!(c.cmd("EHLO client.test").starts_with("250"));
        let token = B64.encode(format!("\0alice@example.test\0{PW}"));
        assert!(c.cmd(&format!("AUTH PLAIN {token}")).starts_with("235"));
        assert!(c.cmd("MAIL FROM:<alice@example.test>").starts_with("250"));
        assert!(
            c.cmd("RCPT TO:<bob@example.test> NOTIFY=SUCCESS")
                .starts_with("250")
        );
        assert!(c.cmd("DATA").starts_with("354"));
        c.send(b"From: alice@example.test\r\nSubject: mine\r\n\r\nx\r\n.\r\n");
        c.reply()
    })
    .await
    .unwrap();
    assert!(r.starts_with("250"), "{r}");
    wait_for_mail_in(&w.maildir("bob", "new"), 2);
    // Exactly one report reaches alice: for her own message.
    let reports = wait_for_mail_in(&w.maildir("alice", "new"), 1);
    std::thread::sleep(Duration::from_millis(500));
    let reports_now = read_maildir(&w.maildir("alice", "new"));
    assert_eq!(reports_now.len(), 1, "{reports_now:#?}");
    assert!(reports[0].contains("Subject: mine"), "{}", reports[0]);
    w.stop().await;
}
