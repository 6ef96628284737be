//! LMTP delivery over real sockets: a scripted LMTP server
//! (`tern_testkit::script`) on a Unix socket and on loopback TCP records what it receives and
//! answers each recipient after the end of data as told. Covers the
//! per-recipient replies, LHLO, the data on the wire, connection failures,
//! a 421 midway, missing replies and the timers.

use std::path::Path;
use std::time::Duration;

use tern_delivery::lmtp::{LmtpTarget, deliver_lmtp};
use tern_delivery::outbound::{DomainResult, MessageData, OutboundMessage, RemoteRecipient};
use tern_queue::AttemptResult;
use tern_smtp::client::ClientTimeouts;
use tern_testkit::script::{self, Script, Scripted};
use tern_types::dsn::BodyType;

mod common;
use common::{sender, stored};

const HELO: &str = "mx.tern.test";

/// What the server saw on its one connection.
#[derive(Debug, Default)]
struct Seen {
    /// Command lines, without CRLF.
    commands: Vec<String>,
    /// The message as received (dot-stuffing undone, CRLF kept).
    data: Vec<u8>,
}

/// Serves on a Unix socket at `path`.
fn unix_server(path: &Path, script: Script) -> Scripted {
    script::serve_unix(path, script)
}

/// Serves on loopback TCP; returns the port too.
async fn tcp_server(script: Script) -> (u16, Scripted) {
    let listener = script::listen("127.0.0.1", 0, false).unwrap();
    let port = listener.local_addr().unwrap().port();
    (port, script::serve(listener, script))
}

/// What `server` saw on its first connection, once that ended.
async fn seen(server: &Scripted) -> Seen {
    let conns = server.ended(1).await;
    let c = &conns[0];
    assert!(c.ended, "the connection did not end: {c:?}");
    Seen {
        commands: c.commands.clone(),
        data: if c.data.is_empty() {
            Vec::new()
        } else {
            c.message(0)
        },
    }
}

const DATA: &[u8] = b"Subject: to the mailbox server\r\n\r\n.leading dot\nbare LF line\r\nend";

fn message() -> OutboundMessage<'static> {
    OutboundMessage {
        sender: sender("alice@example.test"),
        body: BodyType::EightBitMime,
        smtputf8: false,
        ret: None,
        envid: None,
        data: MessageData::Bytes(DATA),
    }
}

/// `u0@lmtp.test`… with envelope indexes 10, 11…
fn rcpts(n: usize) -> Vec<RemoteRecipient> {
    (0..n)
        .map(|i| stored(10 + i, &format!("u{i}@lmtp.test")))
        .collect()
}

fn timeouts() -> ClientTimeouts {
    let t = Duration::from_secs(10);
    ClientTimeouts {
        greeting: t,
        command: t,
        tls_handshake: t,
        mail: t,
        rcpt: t,
        data_init: t,
        data_block: t,
        data_termination: t,
    }
}

/// ('D' | 'T' | 'P', first three characters of the text) per result.
fn kinds(r: &DomainResult) -> Vec<(usize, char, String)> {
    r.results
        .iter()
        .map(|(i, a)| {
            let k = match a {
                AttemptResult::Delivered(_) => 'D',
                AttemptResult::Deferred(_) => 'T',
                AttemptResult::Failed(_) => 'P',
            };
            let text = a.text();
            (*i, k, text.chars().take(3).collect())
        })
        .collect()
}

fn text(r: &DomainResult, index: usize) -> String {
    r.results
        .iter()
        .find(|(i, _)| *i == index)
        .unwrap()
        .1
        .text()
}

fn k(i: usize, kind: char, code: &str) -> (usize, char, String) {
    (i, kind, code.to_owned())
}

#[tokio::test]
async fn unix_socket_one_reply_per_recipient() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("lmtp");
    let mut script = Script::lmtp(&[
        "250 2.0.0 <u0@lmtp.test> 4ZV9Ei3xY2W7CwAAM4tKKA Saved",
        "452 4.2.2 <u2@lmtp.test> Quota exceeded (mailbox for user is full)",
        "552 5.2.2 <u3@lmtp.test> Mailbox is over quota",
    ]);
    script.rcpt_reply(
        "u1@lmtp.test",
        "550 5.1.1 <u1@lmtp.test> User doesn't exist: u1@lmtp.test",
    );
    let server = unix_server(&path, script);
    let target = LmtpTarget::Unix(path.clone());
    let r = deliver_lmtp(&target, HELO, &message(), &rcpts(4), &timeouts()).await;
    assert_eq!(
        kinds(&r),
        [
            k(10, 'D', "250"),
            k(11, 'P', "550"),
            k(12, 'T', "452"),
            k(13, 'P', "552")
        ]
    );
    assert_eq!(
        text(&r, 10),
        "250 2.0.0 <u0@lmtp.test> 4ZV9Ei3xY2W7CwAAM4tKKA Saved"
    );
    assert_eq!(
        r.remote_mta.as_deref(),
        Some(format!("unix:{}", path.display()).as_str())
    );
    assert!(!r.dsn_passed_on, "Dovecot does not advertise DSN");
    let seen = seen(&server).await;
    assert_eq!(seen.commands[0], format!("LHLO {HELO}"));
    assert!(
        !seen
            .commands
            .iter()
            .any(|c| c.starts_with("EHLO") || c.starts_with("HELO"))
    );
    assert_eq!(
        seen.commands[1..6],
        [
            "MAIL FROM:<alice@example.test> BODY=8BITMIME",
            "RCPT TO:<u0@lmtp.test>",
            "RCPT TO:<u1@lmtp.test>",
            "RCPT TO:<u2@lmtp.test>",
            "RCPT TO:<u3@lmtp.test>",
        ]
    );
    assert_eq!(seen.commands.last().map(String::as_str), Some("QUIT"));
    assert_eq!(
        seen.data,
        b"Subject: to the mailbox server\r\n\r\n.leading dot\r\nbare LF line\r\nend\r\n"
    );
}

#[tokio::test]
async fn tcp_all_delivered() {
    let (port, server) = tcp_server(Script::lmtp(&[
        "250 2.0.0 <u0@lmtp.test> Saved",
        "250 2.0.0 <u1@lmtp.test> Saved",
    ]))
    .await;
    let target = LmtpTarget::parse(&format!("tcp:127.0.0.1:{port}")).unwrap();
    let r = deliver_lmtp(&target, HELO, &message(), &rcpts(2), &timeouts()).await;
    assert_eq!(kinds(&r), [k(10, 'D', "250"), k(11, 'D', "250")]);
    assert_eq!(r.remote_mta, Some(format!("tcp:127.0.0.1:{port}")));
    let seen = seen(&server).await;
    assert_eq!(seen.commands[0], format!("LHLO {HELO}"));
    assert!(seen.data.starts_with(b"Subject: to the mailbox server\r\n"));
}

#[tokio::test]
async fn missing_socket_defers_everyone() {
    let dir = tempfile::tempdir().unwrap();
    let target = LmtpTarget::Unix(dir.path().join("nobody-listens"));
    let r = deliver_lmtp(&target, HELO, &message(), &rcpts(2), &timeouts()).await;
    assert_eq!(kinds(&r), [k(10, 'T', "451"), k(11, 'T', "451")]);
    assert!(
        text(&r, 10).starts_with("451 4.4.1 connection to LMTP unix:"),
        "{}",
        text(&r, 10)
    );
    assert_eq!(r.remote_mta, None);
}

#[tokio::test]
async fn refused_tcp_connection_defers_everyone() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    let target = LmtpTarget::Tcp("127.0.0.1".into(), port);
    let r = deliver_lmtp(&target, HELO, &message(), &rcpts(1), &timeouts()).await;
    assert_eq!(kinds(&r), [k(10, 'T', "451")]);
    assert_eq!(r.remote_mta, None);
}

#[tokio::test]
async fn service_closing_midway() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("lmtp");
    let server = unix_server(
        &path,
        Script::lmtp(&["250 2.0.0 saved", "421 4.3.2 Shutting down"]),
    );
    let r = deliver_lmtp(
        &LmtpTarget::Unix(path),
        HELO,
        &message(),
        &rcpts(3),
        &timeouts(),
    )
    .await;
    assert_eq!(
        kinds(&r),
        [k(10, 'D', "250"), k(11, 'T', "421"), k(12, 'T', "421")]
    );
    assert_eq!(text(&r, 12), "421 4.3.2 Shutting down");
    seen(&server).await;
}

#[tokio::test]
async fn fewer_replies_than_recipients_then_eof() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("lmtp");
    let mut script = Script::lmtp(&["550 5.1.1 <u0@lmtp.test> no such user"]);
    script.close_after_data = true;
    let server = unix_server(&path, script);
    let r = deliver_lmtp(
        &LmtpTarget::Unix(path),
        HELO,
        &message(),
        &rcpts(3),
        &timeouts(),
    )
    .await;
    assert_eq!(
        kinds(&r),
        [k(10, 'P', "550"), k(11, 'T', "421"), k(12, 'T', "421")]
    );
    assert!(text(&r, 11).starts_with("421 4.4.2 "), "{}", text(&r, 11));
    seen(&server).await;
}

#[tokio::test]
async fn silence_after_data_times_out() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("lmtp");
    let mut script = Script::lmtp(&[]);
    script.silent_after_data = true;
    let server = unix_server(&path, script);
    let mut t = timeouts();
    t.data_termination = Duration::from_millis(300);
    let r = deliver_lmtp(&LmtpTarget::Unix(path), HELO, &message(), &rcpts(2), &t).await;
    assert_eq!(kinds(&r), [k(10, 'T', "421"), k(11, 'T', "421")]);
    assert!(text(&r, 10).contains("end-of-data"), "{}", text(&r, 10));
    seen(&server).await;
}

#[tokio::test]
async fn lhlo_refused_defers_even_with_5xx() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("lmtp");
    let mut script = Script::lmtp(&[]);
    script.hello_reply = Some("550 5.7.0 go away\r\n".into());
    let server = unix_server(&path, script);
    let r = deliver_lmtp(
        &LmtpTarget::Unix(path.clone()),
        HELO,
        &message(),
        &rcpts(2),
        &timeouts(),
    )
    .await;
    assert_eq!(kinds(&r), [k(10, 'T', "451"), k(11, 'T', "451")]);
    assert!(
        text(&r, 10).contains("550 5.7.0 go away"),
        "{}",
        text(&r, 10)
    );
    assert_eq!(
        r.remote_mta,
        Some(format!("unix:{}", path.display())),
        "the server answered"
    );
    let seen = seen(&server).await;
    assert!(!seen.commands.iter().any(|c| c.starts_with("HELO")));
}

#[tokio::test]
async fn every_recipient_refused_sends_no_message() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("lmtp");
    let mut script = Script::lmtp(&[]);
    script.rcpt_reply("u0@lmtp.test", "550 5.1.1 no");
    script.rcpt_reply("u1@lmtp.test", "451 4.3.0 later");
    let server = unix_server(&path, script);
    let r = deliver_lmtp(
        &LmtpTarget::Unix(path),
        HELO,
        &message(),
        &rcpts(2),
        &timeouts(),
    )
    .await;
    assert_eq!(kinds(&r), [k(10, 'P', "550"), k(11, 'T', "451")]);
    let seen = seen(&server).await;
    assert!(seen.data.is_empty());
}

#[tokio::test]
async fn an_unusable_address_fails_alone() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("lmtp");
    let server = unix_server(&path, Script::lmtp(&["250 2.0.0 saved"]));
    let list = vec![stored(3, "not an address"), stored(4, "u0@lmtp.test")];
    let r = deliver_lmtp(
        &LmtpTarget::Unix(path),
        HELO,
        &message(),
        &list,
        &timeouts(),
    )
    .await;
    assert_eq!(kinds(&r), [k(3, 'P', "553"), k(4, 'D', "250")]);
    seen(&server).await;
}

#[tokio::test]
async fn no_recipients_no_connection() {
    let dir = tempfile::tempdir().unwrap();
    let target = LmtpTarget::Unix(dir.path().join("absent"));
    let r = deliver_lmtp(&target, HELO, &message(), &[], &timeouts()).await;
    assert!(r.results.is_empty());
    assert_eq!(r.remote_mta, None);
}
