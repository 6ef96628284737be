//! A fault-injecting SMTP or LMTP server for the delivery agents' tests:
//! where [`crate::smtp::SmtpPeer`] is a well-behaved peer that records
//! transactions, a [`Script`] says exactly what to answer and how to
//! misbehave — a greeting that is not 220 or never comes, per-recipient
//! replies, a data reply (for LMTP one per recipient, fewer, or none), a
//! connection cut in the middle of the data or right after the reply, a
//! rejection sent while the client is still writing the data, a STARTTLS
//! that answers 220 and then speaks plaintext, implicit TLS, AUTH PLAIN
//! and LOGIN with fixed credentials.
//!
//! Every connection is logged ([`ConnLog`]: the command lines, the raw
//! data of each message, the lines after the TLS handshake, whether it
//! ended), so that a test asserts on what the client sent.
//!
//! It checks nothing the client sends beyond what the script names, and it
//! must never answer differently from the script: a test's expectations
//! are the script.

use std::collections::HashMap;
use std::io;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use tokio::io::{AsyncBufReadExt as _, AsyncRead, AsyncWrite, AsyncWriteExt as _, BufReader};
use tokio::net::{TcpListener, UnixListener};
use tokio_rustls::TlsAcceptor;

/// How the scripted server behaves; public fields, set what a test needs.
#[derive(Debug, Clone)]
pub struct Script {
    /// Raw greeting bytes (may be several lines); empty: never greet. A
    /// greeting that does not start with `220` ends the connection.
    pub greeting: String,
    /// The first line of the EHLO (or LHLO) reply: the server's name.
    pub ehlo_name: String,
    /// EHLO keywords besides STARTTLS and AUTH.
    pub extensions: Vec<String>,
    /// Speak LMTP: LHLO is answered, EHLO and HELO get 500, DATA without
    /// an accepted recipient gets 503.
    pub lmtp: bool,
    /// The whole raw reply to EHLO or LHLO instead of one built from
    /// `ehlo_name` and `extensions`.
    pub hello_reply: Option<String>,
    /// Offer STARTTLS and complete it with this configuration (and use it
    /// for [`implicit_tls`](Self::implicit_tls)).
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// Offer STARTTLS, answer 220, then send bytes that are not TLS.
    pub broken_tls: bool,
    /// TLS from the first byte.
    pub implicit_tls: bool,
    /// Offer AUTH PLAIN (over TLS only) and accept this initial response.
    pub auth_plain: Option<String>,
    /// Offer AUTH LOGIN (over TLS only) and accept these credentials.
    pub auth_login: Option<(String, String)>,
    /// RCPT replies by address (lower case); the default is 250.
    pub rcpt: HashMap<String, String>,
    /// The replies to the end of data, one line each: one for SMTP, one
    /// per accepted recipient for LMTP (fewer to leave some unanswered).
    /// A `421` among them ends the connection after it.
    pub data_replies: Vec<String>,
    /// Close the connection after the first line of message data.
    pub close_in_data: bool,
    /// After the first line of message data, send this reply and stop
    /// reading for 30 s ([`servers`] gives the listening socket a small
    /// receive buffer, so the client's writes stall).
    pub reject_in_data: Option<String>,
    /// Close the connection right after answering the end of data (an idle
    /// connection the client cached is then dead).
    pub close_after_data: bool,
    /// Say nothing after the end of data and hold the connection until
    /// the client gives up.
    pub silent_after_data: bool,
}

impl Script {
    /// An SMTP server `mx.example.test` with PIPELINING, 8BITMIME and
    /// ENHANCEDSTATUSCODES that accepts everything.
    pub fn smtp() -> Script {
        Script {
            greeting: "220 mx.example.test ESMTP test\r\n".into(),
            ehlo_name: "mx.example.test".into(),
            extensions: ["PIPELINING", "8BITMIME", "ENHANCEDSTATUSCODES"]
                .map(String::from)
                .to_vec(),
            lmtp: false,
            hello_reply: None,
            tls: None,
            broken_tls: false,
            implicit_tls: false,
            auth_plain: None,
            auth_login: None,
            rcpt: HashMap::new(),
            data_replies: vec!["250 2.0.0 queued as TEST".into()],
            close_in_data: false,
            reject_in_data: None,
            close_after_data: false,
            silent_after_data: false,
        }
    }

    /// An LMTP server greeting like Dovecot's `lmtp` service and
    /// advertising what it does (8BITMIME, CHUNKING, ENHANCEDSTATUSCODES,
    /// PIPELINING, XCLIENT; no DSN, no SIZE), answering the end of data
    /// with `replies`.
    pub fn lmtp(replies: &[&str]) -> Script {
        Script {
            greeting: "220 imap.tern.test Dovecot ready.\r\n".into(),
            ehlo_name: "imap.tern.test".into(),
            extensions: [
                "8BITMIME",
                "CHUNKING",
                "ENHANCEDSTATUSCODES",
                "PIPELINING",
                "XCLIENT ADDR PORT",
            ]
            .map(String::from)
            .to_vec(),
            lmtp: true,
            data_replies: replies.iter().map(|r| (*r).to_owned()).collect(),
            ..Script::smtp()
        }
    }

    /// Answers RCPT TO:<`address`> with `reply` (one line, no CRLF).
    pub fn rcpt_reply(&mut self, address: &str, reply: &str) -> &mut Script {
        self.rcpt
            .insert(address.to_ascii_lowercase(), reply.to_owned());
        self
    }
}

/// What one connection received.
#[derive(Debug, Default, Clone)]
pub struct ConnLog {
    /// Command lines, without CRLF.
    pub commands: Vec<String>,
    /// Each message's raw data as sent, dot-stuffed, final `.` line
    /// included.
    pub data: Vec<Vec<u8>>,
    /// Commands received after the TLS handshake.
    pub tls_commands: Vec<String>,
    /// The TLS handshake (STARTTLS or implicit) completed.
    pub tls: bool,
    /// The server is done with the connection.
    pub ended: bool,
}

impl ConnLog {
    /// Message `i` as the client meant it: dot-stuffing undone, without
    /// the final `.` line.
    pub fn message(&self, i: usize) -> Vec<u8> {
        let raw = &self.data[i];
        let body = raw
            .strip_suffix(b".\r\n")
            .filter(|b| b.is_empty() || b.ends_with(b"\r\n"))
            .unwrap_or(raw);
        let mut out = Vec::with_capacity(body.len());
        for line in body.split_inclusive(|&b| b == b'\n') {
            out.extend_from_slice(line.strip_prefix(b".").unwrap_or(line));
        }
        out
    }
}

type Log = Arc<Mutex<Vec<ConnLog>>>;

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A running scripted server: its connections' logs.
#[derive(Debug, Clone)]
pub struct Scripted {
    log: Log,
}

impl Scripted {
    /// A copy of every connection's log so far, in the order accepted.
    pub fn conns(&self) -> Vec<ConnLog> {
        lock(&self.log).clone()
    }

    /// Waits (at most 10 s) until `n` connections have ended; returns the
    /// logs either way.
    pub async fn ended(&self, n: usize) -> Vec<ConnLog> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let conns = self.conns();
            if conns.iter().filter(|c| c.ended).count() >= n || Instant::now() > deadline {
                return conns;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

enum End<S> {
    Done,
    StartTls(S),
}

fn record(log: &Log, id: usize, f: impl FnOnce(&mut ConnLog)) {
    if let Some(c) = lock(log).get_mut(id) {
        f(c);
    }
}

/// The reply to EHLO or LHLO.
fn hello(script: &Script, tls: bool) -> String {
    if let Some(raw) = &script.hello_reply {
        return raw.clone();
    }
    let mut lines = vec![script.ehlo_name.clone()];
    lines.extend(script.extensions.iter().cloned());
    if !tls && (script.tls.is_some() || script.broken_tls) {
        lines.push("STARTTLS".into());
    }
    if tls && script.auth_plain.is_some() {
        lines.push("AUTH PLAIN".into());
    }
    if tls && script.auth_login.is_some() {
        lines.push("AUTH LOGIN".into());
    }
    let n = lines.len();
    lines
        .iter()
        .enumerate()
        .map(|(i, l)| format!("250{}{l}\r\n", if i + 1 == n { ' ' } else { '-' }))
        .collect()
}

/// Serves one SMTP or LMTP conversation on `stream`.
async fn converse<S: AsyncRead + AsyncWrite + Unpin>(
    stream: S,
    script: &Script,
    log: &Log,
    id: usize,
    tls: bool,
    greet: bool,
) -> io::Result<End<S>> {
    let mut r = BufReader::new(stream);
    if greet {
        if script.greeting.is_empty() {
            // Never greet: wait for the client to give up.
            let mut sink = Vec::new();
            r.read_until(b'\n', &mut sink).await?;
            return Ok(End::Done);
        }
        r.get_mut().write_all(script.greeting.as_bytes()).await?;
        r.get_mut().flush().await?;
        if !script.greeting.starts_with("220") {
            return Ok(End::Done);
        }
    }
    let mut accepted = 0usize;
    loop {
        let mut line = Vec::new();
        if r.read_until(b'\n', &mut line).await? == 0 {
            return Ok(End::Done);
        }
        let text = String::from_utf8_lossy(&line).trim_end().to_owned();
        record(log, id, |c| {
            c.commands.push(text.clone());
            if tls {
                c.tls_commands.push(text.clone());
            }
        });
        let upper = text.to_ascii_uppercase();
        let reply: String = if upper.starts_with("LHLO") && script.lmtp {
            hello(script, tls)
        } else if (upper.starts_with("EHLO") || upper.starts_with("HELO")) && script.lmtp {
            "500 5.5.1 this is an LMTP server: LHLO, please\r\n".into()
        } else if upper.starts_with("EHLO") {
            hello(script, tls)
        } else if upper.starts_with("HELO") {
            format!("250 {}\r\n", script.ehlo_name)
        } else if upper == "STARTTLS" {
            r.get_mut().write_all(b"220 2.0.0 go ahead\r\n").await?;
            r.get_mut().flush().await?;
            if script.broken_tls {
                r.get_mut()
                    .write_all(b"250 this is not a TLS record at all\r\n")
                    .await?;
                r.get_mut().flush().await?;
                return Ok(End::Done);
            }
            return Ok(End::StartTls(r.into_inner()));
        } else if let Some(resp) = text.strip_prefix("AUTH PLAIN ") {
            if script.auth_plain.as_deref() == Some(resp) {
                "235 2.7.0 ok\r\n".into()
            } else {
                "535 5.7.8 bad credentials\r\n".into()
            }
        } else if upper == "AUTH LOGIN" {
            let b64 = base64::engine::general_purpose::STANDARD;
            let mut answers = Vec::new();
            for prompt in ["334 VXNlcm5hbWU6\r\n", "334 UGFzc3dvcmQ6\r\n"] {
                r.get_mut().write_all(prompt.as_bytes()).await?;
                r.get_mut().flush().await?;
                let mut l = Vec::new();
                r.read_until(b'\n', &mut l).await?;
                let decoded = b64
                    .decode(String::from_utf8_lossy(&l).trim())
                    .unwrap_or_default();
                answers.push(String::from_utf8_lossy(&decoded).into_owned());
            }
            let ok = script
                .auth_login
                .as_ref()
                .is_some_and(|(u, p)| answers == [u.clone(), p.clone()]);
            if ok {
                "235 2.7.0 ok\r\n".into()
            } else {
                "535 5.7.8 bad credentials\r\n".into()
            }
        } else if upper.starts_with("MAIL FROM:") {
            accepted = 0;
            "250 2.1.0 ok\r\n".into()
        } else if upper.starts_with("RCPT TO:") {
            let addr = text
                .split_once('<')
                .and_then(|(_, rest)| rest.split_once('>'))
                .map(|(a, _)| a.to_ascii_lowercase())
                .unwrap_or_default();
            let reply = script
                .rcpt
                .get(&addr)
                .map_or("250 2.1.5 ok", String::as_str);
            if reply.starts_with('2') {
                accepted += 1;
            }
            format!("{reply}\r\n")
        } else if upper == "DATA" && script.lmtp && accepted == 0 {
            "503 5.5.1 no valid recipients\r\n".into()
        } else if upper == "DATA" {
            r.get_mut().write_all(b"354 go ahead\r\n").await?;
            r.get_mut().flush().await?;
            let mut data = Vec::new();
            loop {
                let n = r.read_until(b'\n', &mut data).await?;
                if n == 0 || script.close_in_data {
                    return Ok(End::Done);
                }
                if let Some(reply) = &script.reject_in_data {
                    r.get_mut().write_all(reply.as_bytes()).await?;
                    r.get_mut().write_all(b"\r\n").await?;
                    r.get_mut().flush().await?;
                    tokio::time::sleep(Duration::from_secs(30)).await;
                    return Ok(End::Done);
                }
                if data == b".\r\n" || data.ends_with(b"\r\n.\r\n") {
                    break;
                }
            }
            record(log, id, |c| c.data.push(data));
            if script.silent_after_data {
                // Hold the connection until the client gives up.
                let mut rest = Vec::new();
                let _ = r.read_until(b'\n', &mut rest).await;
                return Ok(End::Done);
            }
            let replies: String = script
                .data_replies
                .iter()
                .map(|l| format!("{l}\r\n"))
                .collect();
            r.get_mut().write_all(replies.as_bytes()).await?;
            r.get_mut().flush().await?;
            if script.close_after_data || script.data_replies.iter().any(|l| l.starts_with("421")) {
                return Ok(End::Done);
            }
            continue;
        } else if upper == "RSET" || upper == "NOOP" {
            "250 2.0.0 ok\r\n".into()
        } else if upper == "QUIT" {
            r.get_mut().write_all(b"221 2.0.0 bye\r\n").await?;
            r.get_mut().flush().await?;
            return Ok(End::Done);
        } else {
            "500 5.5.2 what?\r\n".into()
        };
        r.get_mut().write_all(reply.as_bytes()).await?;
        r.get_mut().flush().await?;
    }
}

/// Serves one connection: implicit TLS, or plaintext and STARTTLS.
async fn handle<S: AsyncRead + AsyncWrite + Unpin>(stream: S, script: Script, log: Log) {
    let id = {
        let mut l = lock(&log);
        l.push(ConnLog::default());
        l.len() - 1
    };
    let acceptor = script.tls.clone().map(TlsAcceptor::from);
    if script.implicit_tls {
        if let Some(acceptor) = acceptor
            && let Ok(tls) = acceptor.accept(stream).await
        {
            record(&log, id, |c| c.tls = true);
            let _ = converse(tls, &script, &log, id, true, true).await;
        }
    } else if let Ok(End::StartTls(plain)) = converse(stream, &script, &log, id, false, true).await
        && let Some(acceptor) = acceptor
        && let Ok(tls) = acceptor.accept(plain).await
    {
        record(&log, id, |c| c.tls = true);
        let _ = converse(tls, &script, &log, id, true, false).await;
    }
    record(&log, id, |c| c.ended = true);
}

/// Serves every connection `listener` accepts with `script`, on the
/// current tokio runtime.
pub fn serve(listener: TcpListener, script: Script) -> Scripted {
    let log: Log = Arc::default();
    let l = log.clone();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            tokio::spawn(handle(tcp, script.clone(), l.clone()));
        }
    });
    Scripted { log }
}

/// Serves every connection on a Unix socket at `path` (which must not
/// exist) with `script`.
///
/// # Panics
/// When `path` cannot be bound.
pub fn serve_unix(path: &Path, script: Script) -> Scripted {
    let listener = UnixListener::bind(path).unwrap();
    let log: Log = Arc::default();
    let l = log.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(handle(stream, script.clone(), l.clone()));
        }
    });
    Scripted { log }
}

/// Servers on the given loopback addresses, all on one port (MX delivery
/// uses one port for every host); a script with
/// [`reject_in_data`](Script::reject_in_data) gets small socket buffers.
///
/// # Panics
/// When no port is free on every address after 50 tries.
pub async fn servers(specs: Vec<(&str, Script)>) -> (u16, Vec<Scripted>) {
    let small = specs.iter().any(|(_, s)| s.reject_in_data.is_some());
    for _ in 0..50 {
        let first = listen(specs[0].0, 0, small).unwrap();
        let port = first.local_addr().unwrap().port();
        let mut listeners = vec![first];
        for (ip, _) in &specs[1..] {
            match listen(ip, port, small) {
                Ok(l) => listeners.push(l),
                Err(_) => break,
            }
        }
        if listeners.len() == specs.len() {
            let servers = listeners
                .into_iter()
                .zip(specs)
                .map(|(l, (_, s))| serve(l, s))
                .collect();
            return (port, servers);
        }
    }
    panic!("no common free port");
}

/// A listening socket on `ip:port` (port 0: any), with a 4 KB receive
/// buffer when `small_buffer` (so that a client writing a large message
/// stalls once the server stops reading).
pub fn listen(ip: &str, port: u16, small_buffer: bool) -> io::Result<TcpListener> {
    let addr = std::net::SocketAddr::new(ip.parse().unwrap(), port);
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    if small_buffer {
        socket.set_recv_buffer_size(4096)?;
    }
    socket.bind(addr)?;
    socket.listen(64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt as _;

    #[test]
    fn a_message_is_read_back_unstuffed_without_its_final_dot() {
        let log = ConnLog {
            data: vec![
                b"Subject: x\r\n\r\n..lead\r\nend\r\n.\r\n".to_vec(),
                b".\r\n".to_vec(),
            ],
            ..ConnLog::default()
        };
        assert_eq!(log.message(0), b"Subject: x\r\n\r\n.lead\r\nend\r\n");
        assert_eq!(log.message(1), b"");
    }

    #[tokio::test]
    async fn an_lmtp_script_answers_as_told_and_logs_the_connection() {
        let path = std::env::temp_dir().join(format!("tern-script-{}.sock", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let mut script = Script::lmtp(&["250 2.0.0 <a@x.test> Saved"]);
        script.rcpt_reply("B@x.test", "550 5.1.1 <b@x.test> unknown");
        let server = serve_unix(&path, script);
        let mut c = tokio::net::UnixStream::connect(&path).await.unwrap();
        c.write_all(
            b"EHLO me\r\nLHLO me\r\nMAIL FROM:<s@y.test>\r\nRCPT TO:<a@x.test>\r\n\
              RCPT TO:<b@x.test>\r\nDATA\r\nhi\r\n.\r\nQUIT\r\n",
        )
        .await
        .unwrap();
        let mut all = String::new();
        c.read_to_string(&mut all).await.unwrap();
        let _ = std::fs::remove_file(&path);
        let codes: Vec<&str> = all.lines().map(|l| &l[..4]).collect();
        assert_eq!(
            codes,
            [
                "220 ", "500 ", "250-", "250-", "250-", "250-", "250-", "250 ", "250 ", "250 ",
                "550 ", "354 ", "250 ", "221 "
            ]
        );
        let conns = server.ended(1).await;
        assert_eq!(conns[0].commands.len(), 7);
        assert_eq!(conns[0].message(0), b"hi\r\n");
        assert!(conns[0].ended && !conns[0].tls);
    }
}
