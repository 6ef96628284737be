//! LMTP delivery over real sockets: a scripted LMTP server (tokio, here)
//! on a Unix socket and on loopback TCP records what it receives and
//! answers each recipient after the end of data as told. Covers the
//! per-recipient replies, LHLO, the data on the wire, connection failures,
//! a 421 midway, missing replies and the timers.

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use tern_delivery::lmtp::{LmtpTarget, deliver_lmtp};
use tern_delivery::outbound::{DomainResult, MessageData, OutboundMessage, RemoteRecipient};
use tern_queue::AttemptResult;
use tern_smtp::client::ClientTimeouts;
use tern_types::dsn::BodyType;
use tokio::io::{AsyncBufReadExt as _, AsyncRead, AsyncWrite, AsyncWriteExt as _, BufReader};
use tokio::net::{TcpListener, UnixListener};

/// A queued recipient at `index` whose stored address is `text`, read as
/// the queue reads it: a text that no longer parses makes an unreadable
/// recipient.
fn stored(index: usize, text: &str) -> RemoteRecipient {
    match tern_queue::envelope::read_address(text) {
        Ok(m) => RemoteRecipient::new(index, m),
        Err(error) => RemoteRecipient {
            unreadable: Some(tern_queue::UnreadableAddress {
                text: text.to_owned(),
                error,
            }),
            ..RemoteRecipient::new(index, tern_queue::envelope::unreadable_placeholder())
        },
    }
}

/// A sender for a message that lives as long as the test.
fn sender(text: &str) -> &'static tern_types::ReversePath {
    Box::leak(Box::new(tern_queue::envelope::read_sender(text).unwrap()))
}
const HELO: &str = "mx.tern.test";

/// How the scripted server behaves.
#[derive(Clone)]
struct Script {
    greeting: &'static str,
    /// The reply to LHLO (any other greeting command gets 500).
    lhlo: &'static str,
    /// RCPT replies by address; the default is 250.
    rcpt: HashMap<&'static str, &'static str>,
    /// The replies after the end of data, in order; each one a line.
    after_data: Vec<&'static str>,
    /// Close after sending `after_data` (fewer replies than recipients).
    close_after_data: bool,
    /// Say nothing after the end of data and keep the connection open.
    silent_after_data: bool,
}

impl Script {
    fn new(after_data: Vec<&'static str>) -> Script {
        Script {
            greeting: "220 imap.tern.test Dovecot ready.\r\n",
            // What Dovecot's lmtp service advertises (no DSN, no SIZE).
            lhlo: "250-imap.tern.test\r\n250-8BITMIME\r\n250-CHUNKING\r\n\
                   250-ENHANCEDSTATUSCODES\r\n250-PIPELINING\r\n250 XCLIENT ADDR PORT\r\n",
            rcpt: HashMap::new(),
            after_data,
            close_after_data: false,
            silent_after_data: false,
        }
    }
}

/// What the server saw.
#[derive(Debug, Default)]
struct Seen {
    /// Command lines, without CRLF.
    commands: Vec<String>,
    /// The message as received (dot-stuffing undone, CRLF kept).
    data: Vec<u8>,
}

async fn serve<S: AsyncRead + AsyncWrite + Unpin>(stream: S, script: Script) -> Seen {
    let mut seen = Seen::default();
    let mut s = BufReader::new(stream);
    if s.write_all(script.greeting.as_bytes()).await.is_err() {
        return seen;
    }
    let mut accepted = 0usize;
    loop {
        let mut line = Vec::new();
        match s.read_until(b'\n', &mut line).await {
            Ok(0) | Err(_) => return seen,
            Ok(_) => {}
        }
        let text = String::from_utf8_lossy(&line).trim_end().to_owned();
        seen.commands.push(text.clone());
        let upper = text.to_ascii_uppercase();
        let reply: String = if upper.starts_with("LHLO ") {
            script.lhlo.into()
        } else if upper.starts_with("MAIL FROM:") {
            accepted = 0;
            "250 2.1.0 OK\r\n".into()
        } else if let Some(rest) = upper.strip_prefix("RCPT TO:<") {
            let addr = rest.split('>').next().unwrap_or("").to_ascii_lowercase();
            let r = script
                .rcpt
                .get(addr.as_str())
                .copied()
                .unwrap_or("250 2.1.5 OK");
            if r.starts_with('2') {
                accepted += 1;
            }
            format!("{r}\r\n")
        } else if upper == "DATA" {
            if accepted == 0 {
                "503 5.5.1 No valid recipients\r\n".into()
            } else {
                if s.write_all(b"354 OK\r\n").await.is_err() {
                    return seen;
                }
                loop {
                    let mut l = Vec::new();
                    match s.read_until(b'\n', &mut l).await {
                        Ok(0) | Err(_) => return seen,
                        Ok(_) => {}
                    }
                    if l == b".\r\n" {
                        break;
                    }
                    let l = l.strip_prefix(b".").unwrap_or(&l);
                    seen.data.extend_from_slice(l);
                }
                if script.silent_after_data {
                    // Hold the connection until the client gives up.
                    let mut rest = Vec::new();
                    let _ = s.read_until(b'\n', &mut rest).await;
                    return seen;
                }
                let replies: String = script
                    .after_data
                    .iter()
                    .map(|r| format!("{r}\r\n"))
                    .collect();
                if s.write_all(replies.as_bytes()).await.is_err() || script.close_after_data {
                    return seen;
                }
                if script.after_data.iter().any(|r| r.starts_with("421")) {
                    return seen;
                }
                continue;
            }
        } else if upper == "RSET" {
            "250 2.0.0 OK\r\n".into()
        } else if upper == "QUIT" {
            let _ = s.write_all(b"221 2.0.0 Bye\r\n").await;
            return seen;
        } else {
            "500 5.5.2 Unknown command\r\n".into()
        };
        if s.write_all(reply.as_bytes()).await.is_err() {
            return seen;
        }
    }
}

/// Serves one connection on a Unix socket at `path`.
fn unix_server(path: &Path, script: Script) -> tokio::task::JoinHandle<Seen> {
    let listener = UnixListener::bind(path).unwrap();
    tokio::spawn(async move {
        let (stream, _) = listener.accept().await.unwrap();
        serve(stream, script).await
    })
}

/// Serves one connection on loopback TCP; returns the port too.
async fn tcp_server(script: Script) -> (u16, tokio::task::JoinHandle<Seen>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let task = tokio::spawn(async move {
        let (stream, _) = listener.accept().await.unwrap();
        serve(stream, script).await
    });
    (port, task)
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
    let mut script = Script::new(vec![
        "250 2.0.0 <u0@lmtp.test> 4ZV9Ei3xY2W7CwAAM4tKKA Saved",
        "452 4.2.2 <u2@lmtp.test> Quota exceeded (mailbox for user is full)",
        "552 5.2.2 <u3@lmtp.test> Mailbox is over quota",
    ]);
    script.rcpt.insert(
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
    let seen = server.await.unwrap();
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
    let (port, server) = tcp_server(Script::new(vec![
        "250 2.0.0 <u0@lmtp.test> Saved",
        "250 2.0.0 <u1@lmtp.test> Saved",
    ]))
    .await;
    let target = LmtpTarget::parse(&format!("tcp:127.0.0.1:{port}")).unwrap();
    let r = deliver_lmtp(&target, HELO, &message(), &rcpts(2), &timeouts()).await;
    assert_eq!(kinds(&r), [k(10, 'D', "250"), k(11, 'D', "250")]);
    assert_eq!(r.remote_mta, Some(format!("tcp:127.0.0.1:{port}")));
    let seen = server.await.unwrap();
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
        Script::new(vec!["250 2.0.0 saved", "421 4.3.2 Shutting down"]),
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
    server.await.unwrap();
}

#[tokio::test]
async fn fewer_replies_than_recipients_then_eof() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("lmtp");
    let mut script = Script::new(vec!["550 5.1.1 <u0@lmtp.test> no such user"]);
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
    server.await.unwrap();
}

#[tokio::test]
async fn silence_after_data_times_out() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("lmtp");
    let mut script = Script::new(Vec::new());
    script.silent_after_data = true;
    let server = unix_server(&path, script);
    let mut t = timeouts();
    t.data_termination = Duration::from_millis(300);
    let r = deliver_lmtp(&LmtpTarget::Unix(path), HELO, &message(), &rcpts(2), &t).await;
    assert_eq!(kinds(&r), [k(10, 'T', "421"), k(11, 'T', "421")]);
    assert!(text(&r, 10).contains("end-of-data"), "{}", text(&r, 10));
    server.await.unwrap();
}

#[tokio::test]
async fn lhlo_refused_defers_even_with_5xx() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("lmtp");
    let mut script = Script::new(Vec::new());
    script.lhlo = "550 5.7.0 go away\r\n";
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
    let seen = server.await.unwrap();
    assert!(!seen.commands.iter().any(|c| c.starts_with("HELO")));
}

#[tokio::test]
async fn every_recipient_refused_sends_no_message() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("lmtp");
    let mut script = Script::new(Vec::new());
    script.rcpt.insert("u0@lmtp.test", "550 5.1.1 no");
    script.rcpt.insert("u1@lmtp.test", "451 4.3.0 later");
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
    let seen = server.await.unwrap();
    assert!(seen.data.is_empty());
}

#[tokio::test]
async fn an_unusable_address_fails_alone() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("lmtp");
    let server = unix_server(&path, Script::new(vec!["250 2.0.0 saved"]));
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
    server.await.unwrap();
}

#[tokio::test]
async fn no_recipients_no_connection() {
    let dir = tempfile::tempdir().unwrap();
    let target = LmtpTarget::Unix(dir.path().join("absent"));
    let r = deliver_lmtp(&target, HELO, &message(), &[], &timeouts()).await;
    assert!(r.results.is_empty());
    assert_eq!(r.remote_mta, None);
}
