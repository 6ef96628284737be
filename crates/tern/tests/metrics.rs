//! `/metrics` counts exactly what happened: mail is sent, refused and
//! authenticated in known amounts and the scraped counters move by exactly
//! those amounts. (The counters are one set per process, so this binary
//! holds this one test and nothing else.)

mod common;

use common::{Raw, TestServer};

fn value(text: &str, series: &str) -> f64 {
    tern_net::metrics::sample(text, series).unwrap_or(0.0)
}

const SERIES: &[&str] = &[
    "tern_messages_received_total{role=\"mx\"}",
    "tern_messages_received_total{role=\"submission\"}",
    "tern_recipients_total{role=\"mx\"}",
    "tern_recipients_total{role=\"submission\"}",
    "tern_message_size_bytes_count",
    "tern_spool_commit_seconds_count",
    "tern_messages_rejected_total{reason=\"too_big\",code=\"5.3.4\"}",
    "tern_recipients_rejected_total{code=\"5.1.1\"}",
    "tern_auth_total{protocol=\"smtp\",mechanism=\"PLAIN\",result=\"success\"}",
    "tern_auth_total{protocol=\"smtp\",mechanism=\"PLAIN\",result=\"failure\"}",
    "tern_sessions_total{role=\"mx\",outcome=\"closed\"}",
    "tern_sessions_total{role=\"submission\",outcome=\"closed\"}",
    "tern_deliveries_total{kind=\"local\",result=\"delivered\"}",
    "tern_delivery_latency_seconds_count{kind=\"local\"}",
    "tern_connections_open{role=\"mx\"}",
];

const EXPECTED: &[f64] = &[
    2.0, // two messages on MX
    1.0, // one on submission
    3.0, // 1 + 2 recipients
    1.0, //
    3.0, // three sizes observed
    3.0, // three commits
    1.0, // the message over max_message_size
    1.0, // RCPT to a user that does not exist
    1.0, // AUTH PLAIN right
    1.0, // AUTH PLAIN wrong
    1.0, // one MX session, ended with QUIT
    2.0, // two submission sessions (a failed and a good login)
    4.0, // alice, alice+bob, bob
    4.0, //
    0.0, // nobody connected any more
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counters_move_by_exactly_what_was_sent() {
    let dir = tempfile::tempdir().unwrap();
    let users = dir.path().join("users.toml");
    common::add_user(&users, "alice@example.test", "alice-pw");
    let srv = TestServer::start_with(
        "",
        &format!(
            "[[listener]]\naddress = \"127.0.0.1:0\"\nrole = \"admin\"\n\
             [[listener]]\naddress = \"127.0.0.1:0\"\nrole = \"submission\"\nplaintext_auth = true\n\
             [auth]\nusers_file = {users:?}\n\
             [limits]\nmax_message_size = 4000\n\
             [limits.abuse.auth]\ninitial_delay = \"10ms\"\nmax_delay = \"20ms\"\n\
             [limits.abuse.tarpit]\ninitial_delay = \"0s\"\n\
             [delivery]\nremote = false\n"
        ),
    )
    .await;
    let addrs = srv.running.as_ref().unwrap().addrs().to_vec();
    let (mx, admin, submission) = (addrs[0], addrs[1], addrs[2]);
    let before = common::scrape_metrics(admin).await;

    let mx_session = tokio::task::spawn_blocking(move || {
        let mut c = Raw::greeted(mx);
        assert!(c.cmd("EHLO client.test").starts_with("250"));
        let r = c.send_mail(
            "x@remote.test",
            "alice@example.test",
            "Subject: one\r\n\r\nhello",
        );
        assert!(r.starts_with("250"), "{r}");
        assert!(c.cmd("MAIL FROM:<x@remote.test>").starts_with("250"));
        assert!(c.cmd("RCPT TO:<alice@example.test>").starts_with("250"));
        assert!(c.cmd("RCPT TO:<nobody@example.test>").starts_with("550"));
        assert!(c.cmd("RCPT TO:<bob@example.test>").starts_with("250"));
        assert!(c.cmd("DATA").starts_with("354"));
        c.send(b"Subject: two\r\n\r\nhello\r\n.\r\n");
        assert!(c.reply().starts_with("250"));
        // 80 lines of 70 octets: over max_message_size (4000).
        let big = format!(
            "Subject: big\r\n\r\n{}",
            format!("{}\r\n", "x".repeat(68)).repeat(80)
        );
        let r = c.send_mail("x@remote.test", "alice@example.test", &big);
        assert!(r.starts_with("552"), "{r}");
        assert!(c.cmd("QUIT").starts_with("221"));
    });
    mx_session.await.unwrap();

    let sub_sessions = tokio::task::spawn_blocking(move || {
        use base64::Engine as _;
        let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
        let mut c = Raw::greeted(submission);
        assert!(c.cmd("EHLO client.test").starts_with("250"));
        let r = c.cmd(&format!(
            "AUTH PLAIN {}",
            b64("\0alice@example.test\0wrong")
        ));
        assert!(r.starts_with("535"), "{r}");
        assert!(c.cmd("QUIT").starts_with("221"));
        let mut c = Raw::greeted(submission);
        assert!(c.cmd("EHLO client.test").starts_with("250"));
        let r = c.cmd(&format!(
            "AUTH PLAIN {}",
            b64("\0alice@example.test\0alice-pw")
        ));
        assert!(r.starts_with("235"), "{r}");
        let r = c.send_mail(
            "alice@example.test",
            "bob@example.test",
            "From: alice@example.test\r\nSubject: three\r\n\r\nhello",
        );
        assert!(r.starts_with("250"), "{r}");
        assert!(c.cmd("QUIT").starts_with("221"));
    });
    sub_sessions.await.unwrap();
    srv.wait_for_mail("alice@example.test", 2);
    srv.wait_for_mail("bob@example.test", 2);

    // Sessions are counted as they end, just after the 221: poll briefly.
    let after = common::wait_for_deltas(admin, &before, SERIES, EXPECTED).await;
    // Sizes: each accepted message is counted with its stored size
    // (our Received: field added), so the sum is above what was sent.
    let sum = value(&after, "tern_message_size_bytes_sum")
        - value(&before, "tern_message_size_bytes_sum");
    assert!(sum > 60.0 && sum < 4000.0, "{sum}");
    assert!(value(&after, "tern_process_open_fds") > 0.0);
    assert!(value(&after, "tern_process_resident_memory_bytes") > 1e6);
    assert_eq!(
        value(&after, "tern_queue_messages{state=\"active\"}")
            + value(&after, "tern_queue_messages{state=\"deferred\"}"),
        0.0
    );
    srv.shutdown().await;
}
