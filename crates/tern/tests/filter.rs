//! The filter pipeline end to end (issue 14): a real Tern with
//! `[[filter]]` stages pointing at fake scanners that speak the real
//! protocols (`filter_fakes`), and at a real DNS server for blocklists.
//!
//! - rspamd: clean passes with `X-Spam-*` and `X-Tern-Filter:`; reject →
//!   554; soft reject → 451; add header → Junk; milter-style header
//!   changes applied; the request carries the envelope headers.
//! - milters: every hook, header and envelope changes, body replacement,
//!   RCPT reject, discard, quarantine.
//! - clamd: EICAR → 554 5.7.1 naming the signature; over the size limit
//!   → not scanned.
//! - A dead, slow or garbage-speaking scanner, fail open and closed: no
//!   message lost (delivered and tagged, or 451 and not accepted), no
//!   session held past the stage's timeout.
//! - DNS blocklists against a DNS server on loopback (Spamhaus error
//!   codes never count), greylisting on an injected clock (no sleeping).

mod common;
use tern_testkit::dns;
mod filter_fakes;

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::{Raw, TestServer, read_maildir, wait_for_mail_in};
use filter_fakes::{Fault, rspamd_json};

const CLEAN: &str = "From: carol@sender.test\r\nTo: alice@example.test\r\nSubject: hello\r\nMessage-ID: <1@sender.test>\r\n\r\nHello Alice.\r\n";

fn msg(subject: &str, body: &str) -> String {
    format!(
        "From: carol@sender.test\r\nTo: alice@example.test\r\nSubject: {subject}\r\nMessage-ID: <{subject}@sender.test>\r\n\r\n{body}\r\n"
    )
}

/// EHLO, MAIL, RCPT, DATA: the reply to the end of data.
async fn send(addr: SocketAddr, to: &'static str, body: String) -> String {
    tokio::task::spawn_blocking(move || {
        let mut c = Raw::greeted(addr);
        assert!(c.cmd("EHLO client.test").starts_with("250"));
        let r = c.send_mail("carol@sender.test", to, &body);
        // The session goes on after whatever the filters said.
        assert!(c.cmd("RSET").starts_with("250"), "session still usable");
        c.cmd("QUIT");
        r
    })
    .await
    .unwrap()
}

fn rspamd_stage(addr: SocketAddr, extra: &str) -> String {
    format!("[[filter]]\ntype = \"rspamd\"\nurl = \"http://{addr}\"\ntimeout = \"2s\"\n{extra}\n")
}

fn answer(json: String) -> filter_fakes::Answer {
    Arc::new(move |_, _| json.clone())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rspamd_clean_message_passes_tagged_and_the_request_carries_the_envelope() {
    let fake = filter_fakes::rspamd(
        Fault::None,
        answer(rspamd_json(
            "no action",
            1.5,
            r#","milter":{"add_headers":{"X-Rspamd-Server":{"value":"fake","order":-1}},"remove_headers":{"X-Old":0}}"#,
        )),
    )
    .await;
    let srv = TestServer::start_with("", &rspamd_stage(fake.addr, "")).await;
    let body = format!(
        "X-Old: drop me\r\nX-Spam-Flag: YES\r\nX-Tern-Filter: forged; rspamd=clean\r\n{CLEAN}"
    );
    let r = send(srv.addr, "alice@example.test", body).await;
    assert!(r.starts_with("250"), "{r}");
    let m = &srv.wait_for_mail("alice@example.test", 1)[0];
    assert!(
        m.contains("\r\nX-Tern-Filter: mx.example.test; rspamd=no action (score=1.50/15.00)\r\n"),
        "{m}"
    );
    assert!(
        m.contains("X-Spam-Status: No, score=1.50 required=15.00"),
        "{m}"
    );
    assert!(m.contains("X-Spam-Score: 1.50\r\n"), "{m}");
    assert!(m.contains("X-Rspamd-Server: fake\r\n"), "{m}");
    assert!(
        !m.contains("X-Old"),
        "removed by rspamd's milter headers: {m}"
    );
    assert!(
        !m.contains("X-Spam-Flag"),
        "the sender's spam flag is removed: {m}"
    );
    assert!(
        !m.contains("forged"),
        "the sender's X-Tern-Filter is removed: {m}"
    );
    assert!(m.contains("\r\n\r\nHello Alice.\r\n"), "{m}");
    let (head, body) = fake.requests.lock().unwrap()[0].clone();
    assert!(head.starts_with("POST /checkv2 HTTP/1.1\r\n"), "{head}");
    for want in [
        "From: <carol@sender.test>",
        "Rcpt: <alice@example.test>",
        "Ip: 127.0.0.1",
        "Helo: client.test",
        "Queue-Id: ",
        "MTA-Name: mx.example.test",
    ] {
        assert!(head.contains(want), "{want} in {head}");
    }
    assert!(body.ends_with(b"Hello Alice.\r\n\r\n"));
    assert!(String::from_utf8_lossy(&body).contains("X-Old: drop me"));
    let _ = srv.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rspamd_reject_soft_reject_and_add_header() {
    let fake = filter_fakes::rspamd(
        Fault::None,
        Arc::new(|_, body: &[u8]| {
            let text = String::from_utf8_lossy(body);
            if text.contains("Subject: reject-me") {
                rspamd_json("reject", 20.0, "")
            } else if text.contains("Subject: soft-me") {
                rspamd_json("soft reject", 9.0, "")
            } else if text.contains("Subject: spammy") {
                rspamd_json("add header", 7.0, "")
            } else {
                rspamd_json(
                    "rewrite subject",
                    8.0,
                    r#","subject":"*** SPAM *** rewritten""#,
                )
            }
        }),
    )
    .await;
    let srv = TestServer::start_with("", &rspamd_stage(fake.addr, "")).await;
    let r = send(srv.addr, "alice@example.test", msg("reject-me", "x")).await;
    assert!(r.starts_with("554 5.7.1 rspamd says reject"), "{r}");
    let r = send(srv.addr, "alice@example.test", msg("soft-me", "x")).await;
    assert!(r.starts_with("451 4.7.1 rspamd says soft reject"), "{r}");
    let r = send(srv.addr, "alice@example.test", msg("spammy", "x")).await;
    assert!(r.starts_with("250"), "{r}");
    let junk = srv.data().join("mail/example.test/alice/.Junk/new");
    let m = &wait_for_mail_in(&junk, 1)[0];
    assert!(m.contains("X-Spam-Flag: YES\r\n"), "{m}");
    assert!(m.contains("X-Spam-Status: Yes, score=7.00"), "{m}");
    let r = send(srv.addr, "bob@example.test", msg("other", "x")).await;
    assert!(r.starts_with("250"), "{r}");
    let junk = srv.data().join("mail/example.test/bob/.Junk/new");
    let m = &wait_for_mail_in(&junk, 1)[0];
    assert!(m.contains("Subject: *** SPAM *** rewritten\r\n"), "{m}");
    assert!(!m.contains("Subject: other"), "{m}");
    // Nothing reached the inboxes.
    assert!(read_maildir(&srv.maildir_new("alice@example.test")).is_empty());
    // Counted (the metrics are process-wide: other tests count too).
    let text = tern_net::metrics::metrics().render();
    for series in [
        r#"tern_filter_verdicts_total{stage="rspamd",hook="eom",action="reject"}"#,
        r#"tern_filter_verdicts_total{stage="rspamd",hook="eom",action="tempfail"}"#,
        r#"tern_filter_verdicts_total{stage="rspamd",hook="eom",action="quarantine"}"#,
    ] {
        assert!(
            tern_net::metrics::sample(&text, series).is_some_and(|v| v >= 1.0),
            "{series} in {}",
            tern_net::metrics::samples_only(&text)
        );
    }
    assert!(text.contains("tern_filter_stage_seconds_bucket{"), "{text}");
    let _ = srv.shutdown().await;
}

/// A broken scanner in both fail modes: open delivers (tagged), closed
/// answers 451 4.7.1 and keeps nothing; neither holds the session past
/// the stage's timeout (1 s here).
async fn broken_rspamd(fault: Fault, expect_in_tag: &str) {
    let fake_addr = match fault {
        Fault::Hangup => filter_fakes::dead_addr(),
        f => {
            filter_fakes::rspamd(f, answer(rspamd_json("no action", 0.0, "")))
                .await
                .addr
        }
    };
    for (fail, delivered) in [("open", true), ("closed", false)] {
        let stage = format!(
            "[[filter]]\ntype = \"rspamd\"\nurl = \"http://{fake_addr}\"\ntimeout = \"1s\"\nfail = \"{fail}\"\n"
        );
        let srv = TestServer::start_with("", &stage).await;
        let started = Instant::now();
        let r = send(srv.addr, "alice@example.test", CLEAN.to_owned()).await;
        let took = started.elapsed();
        assert!(took < Duration::from_secs(5), "session held {took:?}");
        if delivered {
            assert!(r.starts_with("250"), "{fail}: {r}");
            let m = &srv.wait_for_mail("alice@example.test", 1)[0];
            assert!(
                m.contains(&format!(
                    "X-Tern-Filter: mx.example.test; rspamd=temperror ({expect_in_tag}"
                )),
                "{m}"
            );
            assert!(m.contains("failed open"), "{m}");
        } else {
            assert!(
                r.starts_with("451 4.7.1 Temporary failure in the rspamd check"),
                "{fail}: {r}"
            );
            assert!(read_maildir(&srv.maildir_new("alice@example.test")).is_empty());
            let text = tern_net::metrics::metrics().render();
            assert!(
                tern_net::metrics::sample(&text, r#"tern_filter_failures_total{stage="rspamd"}"#)
                    .is_some_and(|v| v >= 1.0)
            );
            let spool = std::fs::read_dir(srv.data().join("spool/msg"))
                .map(|d| d.count())
                .unwrap_or(0);
            assert_eq!(spool, 0, "nothing queued");
        }
        let _ = srv.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_rspamd_fails_open_or_closed() {
    broken_rspamd(Fault::Hangup, "connection refused").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_rspamd_is_cut_off_by_the_timeout() {
    broken_rspamd(Fault::Slow(Duration::from_secs(30)), "timeout").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_from_rspamd_fails_open_or_closed() {
    broken_rspamd(Fault::Garbage, "protocol error").await;
}

fn milter_stage(addr: SocketAddr, extra: &str) -> String {
    let timeout = if extra.contains("timeout") {
        ""
    } else {
        "timeout = \"2s\"\n"
    };
    format!(
        "[[filter]]\ntype = \"milter\"\nname = \"testmilter\"\naddress = \"inet:{}@127.0.0.1\"\n{timeout}{extra}\n",
        addr.port()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn milter_sees_every_step_and_changes_the_message() {
    let fake = filter_fakes::milter(Fault::None).await;
    let srv = TestServer::start_with("", &milter_stage(fake.addr, "")).await;
    let r = send(srv.addr, "alice@example.test", msg("plain", "Body line.")).await;
    assert!(r.starts_with("250"), "{r}");
    let m = &srv.wait_for_mail("alice@example.test", 1)[0];
    assert!(m.contains("X-Test-Milter: scanned\r\n"), "{m}");
    assert!(m.contains("Subject: [milter] plain\r\n"), "{m}");
    assert!(
        m.contains("X-Tern-Filter: mx.example.test; testmilter=accept"),
        "{m}"
    );
    {
        let log = fake.log.lock().unwrap();
        let cmds: String = log.commands.iter().collect();
        // Negotiation, macros and connect, HELO, MAIL, RCPT, DATA, the
        // headers, end of headers, body, end of message (abort after RSET
        // is not sent: the message was complete), quit.
        assert!(cmds.starts_with("ODCHDMDRDT"), "{cmds}");
        assert!(cmds.contains("LLLL"), "{cmds}");
        assert!(cmds.contains("DNBDE"), "{cmds}");
        assert!(cmds.ends_with('Q'), "{cmds}");
        assert!(
            log.macros.iter().any(|m| m == "{client_addr}"),
            "{:?}",
            log.macros
        );
        assert!(log.macros.iter().any(|m| m == "{mail_addr}"));
        assert!(log.macros.iter().any(|m| m == "i"));
        assert_eq!(log.headers[2], ("Subject".into(), "plain".into()));
        assert_eq!(log.body, b"Body line.\r\n\r\n");
    }
    // Recipient refused by the milter, the others go on.
    let addr = srv.addr;
    tokio::task::spawn_blocking(move || {
        let mut c = Raw::greeted(addr);
        c.cmd("EHLO client.test");
        assert!(c.cmd("MAIL FROM:<carol@sender.test>").starts_with("250"));
        let r = c.cmd("RCPT TO:<blocked@example.test>");
        assert!(r.starts_with("550"), "{r}");
        assert!(c.cmd("RCPT TO:<bob@example.test>").starts_with("250"));
        assert!(c.cmd("RSET").starts_with("250"));
        // MAIL tempfailed by the milter.
        let r = c.cmd("MAIL FROM:<tempfail@sender.test>");
        assert!(r.starts_with("451"), "{r}");
        c.cmd("QUIT");
    })
    .await
    .unwrap();
    assert!(
        fake.log.lock().unwrap().commands.contains(&'A'),
        "abort after RSET"
    );
    let _ = srv.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn milter_end_of_message_actions() {
    let fake = filter_fakes::milter(Fault::None).await;
    let srv = TestServer::start_with("", &milter_stage(fake.addr, "")).await;
    let r = send(srv.addr, "alice@example.test", msg("milter-reject", "x")).await;
    assert!(
        r.starts_with("554 5.7.1 Rejected by the test milter"),
        "{r}"
    );
    let r = send(srv.addr, "alice@example.test", msg("milter-discard", "x")).await;
    assert!(r.starts_with("250"), "{r}");
    let r = send(
        srv.addr,
        "alice@example.test",
        msg("milter-quarantine", "x"),
    )
    .await;
    assert!(r.starts_with("250"), "{r}");
    let junk = srv.data().join("mail/example.test/alice/.Junk/new");
    let q = &wait_for_mail_in(&junk, 1)[0];
    assert!(q.contains("testmilter=quarantine (test quarantine)"), "{q}");
    let r = send(
        srv.addr,
        "alice@example.test",
        msg("milter-replbody", "Original."),
    )
    .await;
    assert!(r.starts_with("250"), "{r}");
    let m = &srv.wait_for_mail("alice@example.test", 1)[0];
    assert!(m.ends_with("\r\n\r\nReplaced by the milter.\r\n"), "{m}");
    assert!(!m.contains("Original."));
    // Envelope changes: alice removed, bob added.
    let r = send(srv.addr, "alice@example.test", msg("milter-addrcpt", "x")).await;
    assert!(r.starts_with("250"), "{r}");
    let b = &srv.wait_for_mail("bob@example.test", 1)[0];
    assert!(b.contains("Subject: milter-addrcpt"), "{b}");
    // The discarded message went nowhere; alice still has just one.
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        read_maildir(&srv.maildir_new("alice@example.test")).len(),
        1
    );
    let _ = srv.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broken_milters_fail_open_or_closed() {
    // Dead at connect: open delivers, closed refuses the transaction.
    let dead = filter_fakes::dead_addr();
    let srv = TestServer::start_with("", &milter_stage(dead, "fail = \"open\"")).await;
    let r = send(srv.addr, "alice@example.test", CLEAN.to_owned()).await;
    assert!(r.starts_with("250"), "{r}");
    let m = &srv.wait_for_mail("alice@example.test", 1)[0];
    assert!(m.contains("testmilter=temperror"), "{m}");
    let _ = srv.shutdown().await;

    let srv = TestServer::start_with("", &milter_stage(dead, "fail = \"closed\"")).await;
    let addr = srv.addr;
    tokio::task::spawn_blocking(move || {
        let mut c = Raw::greeted(addr);
        c.cmd("EHLO client.test");
        let r = c.cmd("MAIL FROM:<carol@sender.test>");
        assert!(r.starts_with("451 4.7.1"), "{r}");
        c.cmd("QUIT");
    })
    .await
    .unwrap();
    let _ = srv.shutdown().await;

    // Slow at the end of message, and garbage: cut off by the timeout.
    for fault in [Fault::Slow(Duration::from_secs(30)), Fault::Garbage] {
        let fake = filter_fakes::milter(fault).await;
        let srv = TestServer::start_with(
            "",
            &milter_stage(fake.addr, "fail = \"closed\"\ntimeout = \"1s\""),
        )
        .await;
        let started = Instant::now();
        let r = send(srv.addr, "alice@example.test", CLEAN.to_owned()).await;
        assert!(r.starts_with("451 4.7.1"), "{r}");
        assert!(started.elapsed() < Duration::from_secs(5));
        let _ = srv.shutdown().await;
    }
}

fn clamd_stage(addr: SocketAddr, extra: &str) -> String {
    format!("[[filter]]\ntype = \"clamd\"\naddress = \"{addr}\"\ntimeout = \"2s\"\n{extra}\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clamd_rejects_eicar_naming_the_signature() {
    let fake = filter_fakes::clamd(Fault::None, 1 << 20).await;
    let srv = TestServer::start_with("", &clamd_stage(fake.addr, "max_size = 100000")).await;
    let r = send(
        srv.addr,
        "alice@example.test",
        msg("virus", filter_fakes::EICAR),
    )
    .await;
    assert!(
        r.starts_with("554 5.7.1 Message rejected: virus found: Win.Test.EICAR_HDB-1"),
        "{r}"
    );
    let r = send(srv.addr, "alice@example.test", CLEAN.to_owned()).await;
    assert!(r.starts_with("250"), "{r}");
    let m = &srv.wait_for_mail("alice@example.test", 1)[0];
    assert!(
        m.contains("X-Tern-Filter: mx.example.test; clamav=clean"),
        "{m}"
    );
    // The scanner got the header section and the body.
    assert!(
        fake.scanned.lock().unwrap()[1].starts_with(b"From: carol@sender.test\r\n"),
        "header first"
    );
    // Larger than max_size: not sent, recorded as skipped.
    let big = "x".repeat(200) + "\r\n";
    let r = send(srv.addr, "bob@example.test", msg("big", &big.repeat(600))).await;
    assert!(r.starts_with("250"), "{r}");
    let m = &srv.wait_for_mail("bob@example.test", 1)[0];
    assert!(
        m.contains("clamav=skipped (larger than 100000 bytes)"),
        "{m}"
    );
    assert_eq!(fake.scanned.lock().unwrap().len(), 2);
    let _ = srv.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clamd_size_limit_and_dead_clamd() {
    // clamd refuses the stream (its StreamMaxLength is lower than ours).
    let fake = filter_fakes::clamd(Fault::None, 50).await;
    let srv = TestServer::start_with("", &clamd_stage(fake.addr, "fail = \"closed\"")).await;
    let r = send(srv.addr, "alice@example.test", CLEAN.to_owned()).await;
    assert!(r.starts_with("451 4.7.1"), "{r}");
    let _ = srv.shutdown().await;
    let srv = TestServer::start_with(
        "",
        &clamd_stage(filter_fakes::dead_addr(), "fail = \"open\""),
    )
    .await;
    let r = send(srv.addr, "alice@example.test", CLEAN.to_owned()).await;
    assert!(r.starts_with("250"), "{r}");
    let m = &srv.wait_for_mail("alice@example.test", 1)[0];
    assert!(m.contains("clamav=temperror"), "{m}");
    let _ = srv.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stages_run_in_order_and_see_each_others_changes() {
    let milter = filter_fakes::milter(Fault::None).await;
    let rspamd = filter_fakes::rspamd(Fault::None, answer(rspamd_json("no action", 0.5, ""))).await;
    let clamd = filter_fakes::clamd(Fault::None, 1 << 20).await;
    let stages = format!(
        "{}{}{}",
        milter_stage(milter.addr, ""),
        rspamd_stage(rspamd.addr, ""),
        clamd_stage(clamd.addr, "")
    );
    let srv = TestServer::start_with("", &stages).await;
    let r = send(srv.addr, "alice@example.test", msg("ordered", "x")).await;
    assert!(r.starts_with("250"), "{r}");
    let m = &srv.wait_for_mail("alice@example.test", 1)[0];
    assert!(
        m.contains("X-Tern-Filter: mx.example.test; testmilter=accept; rspamd=no action (score=0.50/15.00); clamav=clean\r\n"),
        "{m}"
    );
    // rspamd and clamd saw the milter's changes.
    let seen = rspamd.requests.lock().unwrap()[0].1.clone();
    assert!(String::from_utf8_lossy(&seen).contains("Subject: [milter] ordered"));
    assert!(
        String::from_utf8_lossy(&clamd.scanned.lock().unwrap()[0])
            .contains("X-Test-Milter: scanned")
    );
    let _ = srv.shutdown().await;
}

async fn dnsbl_world() -> dns::TestDns {
    let lo =
        |zone: &str, answer: [u8; 4]| dns::a(&format!("1.0.0.127.{zone}"), Ipv4Addr::from(answer));
    dns::start(vec![
        lo("bl.test", [127, 0, 0, 2]),
        lo("zen.test", [127, 255, 255, 254]),
        lo("half.test", [127, 0, 0, 3]),
        lo("wl.test", [127, 0, 10, 1]),
    ])
    .await
}

/// A server whose resolver is the test DNS server, with a dnsbl stage.
async fn start_dnsbl(dns: SocketAddr, zones: &str, extra: &str) -> TestServer {
    let stage = format!("[[filter]]\ntype = \"dnsbl\"\nzones = {zones}\n{extra}\n");
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "data_dir = {:?}\n{}\n{stage}\n",
        dir.path().join("data"),
        common::BASE_CONFIG.replace(
            "nameservers = [\"127.0.0.1:9\"]",
            &format!("nameservers = [\"{dns}\"]")
        )
    );
    let config = tern::Config::parse(&text).expect("config");
    let running = tern::start(&config).await.expect("starts");
    let addr = running.addrs()[0];
    TestServer {
        running: Some(running),
        addr,
        dir,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dnsbl_listed_client_is_refused_at_mail_naming_the_list() {
    let world = dnsbl_world().await;
    let srv = start_dnsbl(world.addr, r#"["bl.test", "zen.test"]"#, "").await;
    let addr = srv.addr;
    tokio::task::spawn_blocking(move || {
        let mut c = Raw::greeted(addr);
        c.cmd("EHLO client.test");
        let r = c.cmd("MAIL FROM:<carol@sender.test>");
        assert_eq!(
            r,
            "554 5.7.1 Service unavailable; client [127.0.0.1] blocked using bl.test\r\n"
        );
        c.cmd("QUIT");
    })
    .await
    .unwrap();
    let _ = srv.shutdown().await;
    // A Spamhaus error code (127.255.255.254) never counts as listed;
    // half a listing stays under the threshold; an allowlist cancels one.
    for (zones, extra) in [
        (r#"[{ zone = "zen.test", kind = "spamhaus" }]"#, ""),
        (r#"[{ zone = "half.test", weight = 0.5 }]"#, ""),
        (r#"["bl.test", { zone = "wl.test", weight = -5 }]"#, ""),
        (
            r#"["bl.test"]"#,
            "hook = \"rcpt\"\nroles = [\"submission\"]",
        ),
    ] {
        let srv = start_dnsbl(world.addr, zones, extra).await;
        let r = send(srv.addr, "alice@example.test", CLEAN.to_owned()).await;
        assert!(r.starts_with("250"), "{zones}: {r}");
        let _ = srv.shutdown().await;
    }
    // At RCPT.
    let srv = start_dnsbl(world.addr, r#"["bl.test"]"#, "hook = \"rcpt\"").await;
    let addr = srv.addr;
    tokio::task::spawn_blocking(move || {
        let mut c = Raw::greeted(addr);
        c.cmd("EHLO client.test");
        assert!(c.cmd("MAIL FROM:<carol@sender.test>").starts_with("250"));
        let r = c.cmd("RCPT TO:<alice@example.test>");
        assert!(r.starts_with("554 5.7.1 Service unavailable"), "{r}");
        c.cmd("QUIT");
    })
    .await
    .unwrap();
    let _ = srv.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn greylisting_on_an_injected_clock() {
    let now = Arc::new(AtomicU64::new(1_800_000_000));
    let clock = {
        let now = Arc::clone(&now);
        Arc::new(move || now.load(Ordering::SeqCst)) as Arc<dyn Fn() -> u64 + Send + Sync>
    };
    let srv = TestServer::start_with_clock("", "[[filter]]\ntype = \"greylist\"\n", clock).await;
    let addr = srv.addr;
    let rcpt = move |to: &'static str| {
        tokio::task::spawn_blocking(move || {
            let mut c = Raw::greeted(addr);
            c.cmd("EHLO client.test");
            c.cmd("MAIL FROM:<news-4711@sender.test>");
            let r = c.cmd(&format!("RCPT TO:<{to}>"));
            c.cmd("QUIT");
            r
        })
    };
    let r = rcpt("alice@example.test").await.unwrap();
    assert_eq!(
        r,
        "451 4.7.1 Greylisted; please try again in 300 seconds\r\n"
    );
    now.fetch_add(120, Ordering::SeqCst);
    let r = rcpt("alice@example.test").await.unwrap();
    assert_eq!(
        r,
        "451 4.7.1 Greylisted; please try again in 180 seconds\r\n"
    );
    now.fetch_add(181, Ordering::SeqCst);
    let r = rcpt("alice@example.test").await.unwrap();
    assert!(r.starts_with("250"), "{r}");
    // Another recipient is another triplet.
    let r = rcpt("bob@example.test").await.unwrap();
    assert!(r.starts_with("451"), "{r}");
    // The state is in the data directory.
    assert!(srv.data().join("greylist.db").exists());
    let _ = srv.shutdown().await;

    // Trusted networks are exempt.
    let srv = TestServer::start_with_clock(
        "trusted_networks = [\"127.0.0.0/8\"]",
        "[[filter]]\ntype = \"greylist\"\ndatabase = \":memory:\"\n",
        Arc::new(|| 1_800_000_000),
    )
    .await;
    let r = send(srv.addr, "alice@example.test", CLEAN.to_owned()).await;
    assert!(r.starts_with("250"), "{r}");
    let _ = srv.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filter_configuration_mistakes_name_the_key() {
    let base = "hostname = \"mx.example.test\"\n[[listener]]\naddress = \"127.0.0.1:0\"\nrole = \"mx\"\n[domains.\"example.test\"]\nmailboxes = [\"alice\"]\n";
    for (stage, want) in [
        (
            "[[filter]]\ntype = \"rspamd\"\nurl = \"nowhere\"\n",
            "[[filter]] #1 (rspamd): url",
        ),
        (
            "[[filter]]\ntype = \"rspamd\"\nurl = \"http://127.0.0.1:1\"\nbogus = 1\n",
            "bogus",
        ),
        (
            "[[filter]]\ntype = \"milter\"\naddress = \"unix:relative\"\n",
            "address",
        ),
        (
            "[[filter]]\ntype = \"dnsbl\"\nzones = []\n",
            "zones is empty",
        ),
        (
            "[[filter]]\ntype = \"dnsbl\"\nzones = [{ zone = \"bl.test\", kind = \"odd\" }]\n",
            "kind",
        ),
        ("[[filter]]\ntype = \"greylist\"\ndelay = \"3d\"\n", "delay"),
        (
            "[[filter]]\ntype = \"clamd\"\naddress = \"127.0.0.1:3310\"\nroles = []\n",
            "roles is empty",
        ),
        (
            "[[filter]]\ntype = \"clamd\"\naddress = \"127.0.0.1:3310\"\nfail = \"maybe\"\n",
            "fail",
        ),
        ("[[filter]]\ntype = \"virusbuster\"\n", "virusbuster"),
        (
            "[[filter]]\ntype = \"clamd\"\naddress = \"127.0.0.1:3310\"\n[[filter]]\ntype = \"clamd\"\naddress = \"127.0.0.1:3311\"\n",
            "clamav",
        ),
    ] {
        let err = tern::Config::parse(&format!("{base}{stage}"))
            .err()
            .unwrap_or_else(|| panic!("accepted: {stage}"))
            .to_string();
        assert!(err.contains(want), "{want:?} in {err}");
    }
    // The defaults: nothing configured, nothing changes.
    let c = tern::Config::parse(base).unwrap();
    assert!(c.filters.is_empty());
}
