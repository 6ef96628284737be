//! A scripted SMTP or LMTP peer: the remote MX or smarthost of a delivery
//! test, or the mailbox server (Dovecot's `lmtp` service) of an LMTP one.
//!
//! It greets, answers EHLO with the extensions it was given (STARTTLS
//! first when it has a TLS configuration and the connection is still
//! plaintext), accepts any AUTH, MAIL and RCPT, takes the message after
//! DATA, and says goodbye to QUIT. In LMTP mode ([`SmtpPeer::lmtp`],
//! RFC 2033) it answers LHLO instead of EHLO and HELO, and after the final
//! dot it gives one reply per accepted recipient, each from
//! [`SmtpPeer::lmtp_replies`] (default: 250).
//!
//! It records every command line it gets (after STARTTLS prefixed
//! `tls: `; a failed handshake as `handshake failed`), counts connections
//! and accepted messages, and records every transaction whose data ended
//! with the final dot ([`Transaction`]: the recipients, the bytes, whether
//! the final reply was sent, whether the client cut the connection right
//! after the final dot), so that a test can count the copies each
//! recipient got and tell the ones delivered in RFC 1047's window (the
//! sender died between its final dot and reading our reply) from true
//! duplicates; and it knows which connections are, right now, in a
//! transaction the client has not acted on yet
//! ([`RunningPeer::unsettled`]). It can be made slow ([`SmtpPeer::reply_delay`]: it waits
//! before the final reply, watching for the client going away) or never
//! answer the end of data ([`SmtpPeer::stall_after_data`]).
//!
//! It checks nothing of what the client sends: the test asserts on
//! [`RunningPeer::seen`], [`RunningPeer::transactions`] and the counters.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, UnixListener};

/// The reply an LMTP peer gives one accepted recipient after the final
/// dot: a whole line without its CRLF (e.g. `250 2.0.0 <a@b> Saved`).
pub type LmtpReply = fn(&str) -> String;

/// How a peer behaves; [`bind`](SmtpPeer::bind) starts it.
#[derive(Debug, Clone)]
pub struct SmtpPeer {
    hostname: String,
    extensions: Vec<String>,
    tls: Option<Arc<rustls::ServerConfig>>,
    stall: Option<Duration>,
    delay: Option<Duration>,
    lmtp: Option<LmtpReply>,
    seen: Option<Arc<Mutex<Vec<String>>>>,
}

/// One transaction whose data the peer received up to the final dot.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Transaction {
    /// Which connection it came on (1 for the first the peer accepted).
    pub connection: usize,
    /// When its final dot arrived, in the order of all the peer's
    /// transactions (0 first).
    pub seq: usize,
    /// The EHLO, HELO or LHLO line of its session (empty if none).
    pub hello: String,
    /// Its MAIL FROM line.
    pub mail: String,
    /// The addresses of its RCPT TO lines, without angle brackets.
    pub rcpts: Vec<String>,
    /// The message, dot-stuffing undone, CRLFs kept.
    pub data: Vec<u8>,
    /// The final reply (for LMTP: every recipient's) was written to the
    /// client.
    pub replied: bool,
    /// The connection ended, without QUIT, before the client sent anything
    /// after the final dot: the client went away in RFC 1047's window
    /// (before our reply, when `replied` is false) or before it could act
    /// on the reply.
    pub cut_after_dot: bool,
    /// The client sent QUIT right after this transaction.
    pub quit: bool,
}

impl Transaction {
    /// The value of the first header field `name` (case-insensitive) in
    /// the message's header section, unfolded and trimmed.
    pub fn header(&self, name: &str) -> Option<String> {
        let text = String::from_utf8_lossy(&self.data);
        let head = text.split("\r\n\r\n").next().unwrap_or("");
        let mut value: Option<String> = None;
        for line in head.split("\r\n") {
            if line.starts_with([' ', '\t']) {
                if let Some(v) = value.as_mut() {
                    v.push(' ');
                    v.push_str(line.trim());
                }
                continue;
            }
            if value.is_some() {
                break;
            }
            if let Some((field, v)) = line.split_once(':')
                && field.eq_ignore_ascii_case(name)
            {
                value = Some(v.trim().to_owned());
            }
        }
        value.map(|v| v.trim().to_owned())
    }

    /// The final reply was not sent, or the client may not have read it:
    /// a second copy of this message is what RFC 1047 warns of, not a bug.
    pub fn in_window(&self) -> bool {
        self.cut_after_dot
    }
}

/// What a running peer saw; it serves until the runtime ends.
#[derive(Debug, Clone)]
pub struct RunningPeer {
    /// Where it listens (for [`bind_unix`](SmtpPeer::bind_unix): an
    /// unspecified address).
    pub addr: SocketAddr,
    /// Every command line, in order, without its CRLF (`tls: ` before the
    /// ones read over TLS).
    pub seen: Arc<Mutex<Vec<String>>>,
    /// Connections accepted.
    pub connections: Arc<AtomicUsize>,
    /// Messages answered with 250 at the end of data (for LMTP: with at
    /// least one 2xx recipient reply).
    pub accepted: Arc<AtomicUsize>,
    /// Stalled ends of data whose stall is over (the connection dropped).
    pub stalls_ended: Arc<AtomicUsize>,
    /// Every transaction that reached the final dot, in that order.
    pub transactions: Arc<Mutex<Vec<Transaction>>>,
    /// Connections in a transaction the client has not acted on yet, with
    /// their EHLO/LHLO line: from MAIL FROM until the client says anything
    /// after the final reply (or RSET, QUIT, or the connection ends).
    pub unsettled: Arc<Mutex<BTreeMap<usize, String>>>,
}

impl RunningPeer {
    /// A copy of the command lines seen so far.
    pub fn seen(&self) -> Vec<String> {
        lock(&self.seen).clone()
    }

    /// Messages accepted so far.
    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }

    /// A copy of the transactions so far.
    pub fn transactions(&self) -> Vec<Transaction> {
        lock(&self.transactions).clone()
    }

    /// The EHLO/LHLO lines of the connections in a transaction the client
    /// has not acted on yet (see [`RunningPeer::unsettled`]): a client
    /// killed now leaves these in RFC 1047's window.
    pub fn unsettled(&self) -> Vec<String> {
        lock(&self.unsettled).values().cloned().collect()
    }

    /// Polls (every 20 ms, for at most `limit`) until `done` holds for the
    /// transactions; returns them either way.
    pub async fn wait_for(
        &self,
        limit: Duration,
        done: impl Fn(&[Transaction]) -> bool,
    ) -> Vec<Transaction> {
        let deadline = Instant::now() + limit;
        loop {
            let now = self.transactions();
            if done(&now) || Instant::now() > deadline {
                return now;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The default LMTP recipient reply.
fn saved(rcpt: &str) -> String {
    format!("250 2.0.0 <{rcpt}> Saved")
}

impl SmtpPeer {
    /// A peer greeting as `hostname`, with no extensions.
    pub fn new(hostname: &str) -> SmtpPeer {
        SmtpPeer {
            hostname: hostname.to_string(),
            extensions: Vec::new(),
            tls: None,
            stall: None,
            delay: None,
            lmtp: None,
            seen: None,
        }
    }

    /// An LMTP server greeting as `hostname` (RFC 2033): LHLO instead of
    /// EHLO, and after the final dot a 250 for each accepted recipient.
    pub fn lmtp(hostname: &str) -> SmtpPeer {
        SmtpPeer::new(hostname).lmtp_replies(saved)
    }

    /// Speaks LMTP, answering each accepted recipient after the final dot
    /// with `reply(address)`.
    pub fn lmtp_replies(mut self, reply: LmtpReply) -> SmtpPeer {
        self.lmtp = Some(reply);
        self
    }

    /// Advertises `extension` (e.g. `PIPELINING`, `AUTH PLAIN LOGIN`) in
    /// its EHLO (or LHLO) reply, after any before it.
    pub fn extension(mut self, extension: &str) -> SmtpPeer {
        self.extensions.push(extension.to_string());
        self
    }

    /// Offers STARTTLS with `tls` on plaintext connections.
    pub fn starttls(mut self, tls: Arc<rustls::ServerConfig>) -> SmtpPeer {
        self.tls = Some(tls);
        self
    }

    /// Never answers the end of data: waits `stall`, then drops the
    /// connection (the message is not counted as accepted).
    pub fn stall_after_data(mut self, stall: Duration) -> SmtpPeer {
        self.stall = Some(stall);
        self
    }

    /// Waits `delay` after the final dot before replying (a slow server,
    /// so that a test can catch deliveries in flight). A client that goes
    /// away meanwhile is recorded as [`Transaction::cut_after_dot`] and
    /// gets no reply.
    pub fn reply_delay(mut self, delay: Duration) -> SmtpPeer {
        self.delay = Some(delay);
        self
    }

    /// Records the command lines into `seen` (shared with the test)
    /// instead of a list of its own.
    pub fn record_into(mut self, seen: Arc<Mutex<Vec<String>>>) -> SmtpPeer {
        self.seen = Some(seen);
        self
    }

    fn running(&self, addr: SocketAddr) -> RunningPeer {
        RunningPeer {
            addr,
            seen: self.seen.clone().unwrap_or_default(),
            connections: Arc::default(),
            accepted: Arc::default(),
            stalls_ended: Arc::default(),
            transactions: Arc::default(),
            unsettled: Arc::default(),
        }
    }

    /// Listens on `addr` (port 0: any free port) and serves every
    /// connection on the current tokio runtime.
    ///
    /// # Panics
    /// When `addr` cannot be bound.
    pub async fn bind(self, addr: SocketAddr) -> RunningPeer {
        let listener = TcpListener::bind(addr).await.unwrap();
        let running = self.running(listener.local_addr().unwrap());
        let peer = Arc::new(self);
        let state = running.clone();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let n = state.connections.fetch_add(1, Ordering::SeqCst) + 1;
                let (peer, state) = (Arc::clone(&peer), state.clone());
                tokio::spawn(async move { peer.serve(tcp, &state, n).await });
            }
        });
        running
    }

    /// Listens on a Unix socket at `path` (which must not exist) and serves
    /// every connection on the current tokio runtime.
    ///
    /// # Panics
    /// When `path` cannot be bound.
    pub fn bind_unix(self, path: &Path) -> RunningPeer {
        let listener = UnixListener::bind(path).unwrap();
        let running = self.running(SocketAddr::from(([0, 0, 0, 0], 0)));
        let peer = Arc::new(self);
        let state = running.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let n = state.connections.fetch_add(1, Ordering::SeqCst) + 1;
                let (peer, state) = (Arc::clone(&peer), state.clone());
                tokio::spawn(async move { peer.serve(stream, &state, n).await });
            }
        });
        running
    }

    async fn serve<S: AsyncRead + AsyncWrite + Unpin>(
        &self,
        stream: S,
        state: &RunningPeer,
        connection: usize,
    ) {
        let mut plain = BufReader::new(stream);
        let kind = if self.lmtp.is_some() { "LMTP" } else { "ESMTP" };
        let greeting = format!("220 {} {kind}\r\n", self.hostname);
        if plain.write_all(greeting.as_bytes()).await.is_err() {
            return;
        }
        let mut session = Session {
            connection,
            ..Session::default()
        };
        let after = self.dialogue(&mut plain, state, &mut session, false).await;
        settled(state, &session);
        if after != After::StartTls {
            return;
        }
        let Some(tls) = &self.tls else { return };
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::clone(tls));
        match acceptor.accept(plain.into_inner()).await {
            Ok(stream) => {
                // RFC 3207: the session starts again after the handshake.
                let mut session = Session {
                    connection,
                    ..Session::default()
                };
                self.dialogue(&mut BufReader::new(stream), state, &mut session, true)
                    .await;
                settled(state, &session);
            }
            Err(_) => record(state, "handshake failed".to_string()),
        }
    }

    /// Answers commands until STARTTLS or the end of the connection.
    async fn dialogue<S: AsyncRead + AsyncWrite + Unpin>(
        &self,
        s: &mut BufReader<S>,
        state: &RunningPeer,
        session: &mut Session,
        tls: bool,
    ) -> After {
        let prefix = if tls { "tls: " } else { "" };
        loop {
            let mut raw = Vec::new();
            match s.read_until(b'\n', &mut raw).await {
                Ok(0) | Err(_) => {
                    if session.after_dot
                        && let Some(i) = session.last
                    {
                        update(state, i, |t| t.cut_after_dot = true);
                    }
                    return After::Closed;
                }
                Ok(_) => {}
            }
            if session.after_dot {
                // The client acted on our final reply.
                settled(state, session);
            }
            session.after_dot = false;
            let cmd = String::from_utf8_lossy(&raw).trim_end().to_string();
            record(state, format!("{prefix}{cmd}"));
            let upper = cmd.to_ascii_uppercase();
            let reply = if upper.starts_with("EHLO") || upper.starts_with("HELO") {
                if self.lmtp.is_some() {
                    "500 5.5.1 this is an LMTP server: LHLO, please\r\n".to_string()
                } else {
                    session.hello = cmd.clone();
                    if upper.starts_with("EHLO") {
                        self.ehlo_reply(tls)
                    } else {
                        "250 2.0.0 ok\r\n".to_string()
                    }
                }
            } else if upper.starts_with("LHLO") && self.lmtp.is_some() {
                session.hello = cmd.clone();
                self.ehlo_reply(tls)
            } else if upper == "STARTTLS" && self.tls.is_some() && !tls {
                let _ = s.write_all(b"220 2.0.0 go ahead\r\n").await;
                return After::StartTls;
            } else if upper.starts_with("AUTH") {
                "235 2.7.0 welcome\r\n".to_string()
            } else if upper.starts_with("MAIL FROM:") {
                lock(&state.unsettled).insert(session.connection, session.hello.clone());
                session.txn = Some(Transaction {
                    connection: session.connection,
                    hello: session.hello.clone(),
                    mail: cmd.clone(),
                    ..Transaction::default()
                });
                "250 2.0.0 ok\r\n".to_string()
            } else if upper.starts_with("RCPT TO:") {
                let path = cmd["RCPT TO:".len()..].trim_start();
                let addr = path
                    .strip_prefix('<')
                    .and_then(|p| p.split('>').next())
                    .unwrap_or(path);
                if let Some(txn) = session.txn.as_mut() {
                    txn.rcpts.push(addr.to_string());
                }
                "250 2.0.0 ok\r\n".to_string()
            } else if upper == "RSET" {
                settled(state, session);
                session.txn = None;
                "250 2.0.0 ok\r\n".to_string()
            } else if upper == "DATA" {
                let no_rcpt = session.txn.as_ref().is_none_or(|t| t.rcpts.is_empty());
                if self.lmtp.is_some() && no_rcpt {
                    "503 5.5.1 no valid recipients\r\n".to_string()
                } else {
                    match self.data(s, state, session).await {
                        Some(()) => continue,
                        None => return After::Closed,
                    }
                }
            } else if upper == "QUIT" {
                settled(state, session);
                if let Some(i) = session.last {
                    update(state, i, |t| t.quit = true);
                }
                let _ = s.write_all(b"221 2.0.0 bye\r\n").await;
                return After::Closed;
            } else {
                "250 2.0.0 ok\r\n".to_string()
            };
            if s.write_all(reply.as_bytes()).await.is_err() {
                return After::Closed;
            }
        }
    }

    /// After DATA: takes the message, records the transaction and gives
    /// the final reply(ies). `None` when the connection is over.
    async fn data<S: AsyncRead + AsyncWrite + Unpin>(
        &self,
        s: &mut BufReader<S>,
        state: &RunningPeer,
        session: &mut Session,
    ) -> Option<()> {
        s.write_all(b"354 go ahead\r\n").await.ok()?;
        let mut txn = session.txn.take().unwrap_or_else(|| Transaction {
            connection: session.connection,
            hello: session.hello.clone(),
            ..Transaction::default()
        });
        loop {
            let mut line = Vec::new();
            match s.read_until(b'\n', &mut line).await {
                Ok(0) | Err(_) => return None,
                Ok(_) if line == b".\r\n" => break,
                Ok(_) => {}
            }
            let line = line.strip_prefix(b".").unwrap_or(&line);
            txn.data.extend_from_slice(line);
        }
        let rcpts = txn.rcpts.clone();
        let i = {
            let mut all = lock(&state.transactions);
            txn.seq = all.len();
            all.push(txn);
            all.len() - 1
        };
        session.last = Some(i);
        if let Some(stall) = self.stall {
            tokio::time::sleep(stall).await;
            state.stalls_ended.fetch_add(1, Ordering::SeqCst);
            return None;
        }
        if let Some(delay) = self.delay {
            let deadline = tokio::time::Instant::now() + delay;
            let cut = tokio::select! {
                _ = tokio::time::sleep_until(deadline) => false,
                r = s.fill_buf() => r.map_or(true, |b| b.is_empty()),
            };
            if cut {
                update(state, i, |t| t.cut_after_dot = true);
                return None;
            }
            // The client spoke before our reply: it gets it on time anyway.
            tokio::time::sleep_until(deadline).await;
        }
        let (reply, ok) = match self.lmtp {
            Some(answer) => {
                let lines: Vec<String> = rcpts.iter().map(|r| answer(r)).collect();
                let ok = lines.iter().any(|l| l.starts_with('2'));
                (lines.iter().map(|l| format!("{l}\r\n")).collect(), ok)
            }
            None => ("250 2.0.0 accepted\r\n".to_string(), true),
        };
        if s.write_all(reply.as_bytes()).await.is_err() {
            update(state, i, |t| t.cut_after_dot = true);
            return None;
        }
        update(state, i, |t| t.replied = true);
        if ok {
            state.accepted.fetch_add(1, Ordering::SeqCst);
        }
        session.after_dot = true;
        Some(())
    }

    fn ehlo_reply(&self, tls: bool) -> String {
        let mut lines = vec![self.hostname.clone()];
        if self.tls.is_some() && !tls {
            lines.push("STARTTLS".to_string());
        }
        lines.extend(self.extensions.iter().cloned());
        let last = lines.len() - 1;
        lines
            .iter()
            .enumerate()
            .map(|(i, l)| format!("250{}{l}\r\n", if i == last { ' ' } else { '-' }))
            .collect()
    }
}

/// One connection's state between commands.
#[derive(Debug, Default)]
struct Session {
    connection: usize,
    /// The EHLO, HELO or LHLO line.
    hello: String,
    /// The transaction begun by MAIL, until its final dot.
    txn: Option<Transaction>,
    /// Index in [`RunningPeer::transactions`] of this connection's last
    /// transaction.
    last: Option<usize>,
    /// Nothing was read since the last final dot.
    after_dot: bool,
}

/// How a dialogue ended.
#[derive(Debug, PartialEq, Eq)]
enum After {
    /// The client asked for STARTTLS and was told to go ahead.
    StartTls,
    /// QUIT, a stall, or the connection is gone.
    Closed,
}

/// `session` is no longer in a transaction the client has to act on.
fn settled(state: &RunningPeer, session: &Session) {
    lock(&state.unsettled).remove(&session.connection);
}

fn record(state: &RunningPeer, line: String) {
    lock(&state.seen).push(line);
}

fn update(state: &RunningPeer, i: usize, f: impl FnOnce(&mut Transaction)) {
    if let Some(t) = lock(&state.transactions).get_mut(i) {
        f(t);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    /// Connects to `peer`; returns the stream and the greeting.
    async fn connect(peer: &RunningPeer) -> (BufReader<tokio::net::TcpStream>, String) {
        let tcp = tokio::net::TcpStream::connect(peer.addr).await.unwrap();
        let mut s = BufReader::new(tcp);
        let mut greeting = String::new();
        s.read_line(&mut greeting).await.unwrap();
        (s, greeting)
    }

    async fn say(s: &mut BufReader<tokio::net::TcpStream>, line: &str) -> String {
        s.get_mut()
            .write_all(format!("{line}\r\n").as_bytes())
            .await
            .unwrap();
        let mut reply = String::new();
        loop {
            let mut l = String::new();
            s.read_line(&mut l).await.unwrap();
            reply.push_str(&l);
            if l.as_bytes().get(3) != Some(&b'-') {
                return reply;
            }
        }
    }

    /// Polls `peer.unsettled()` until it is `want` (at most 2 s).
    async fn unsettled_becomes(peer: &RunningPeer, want: &[&str]) {
        for _ in 0..100 {
            if peer.unsettled() == want {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(peer.unsettled(), want);
    }

    #[tokio::test]
    async fn a_transaction_stays_unsettled_until_the_client_acts_on_the_reply() {
        let peer = SmtpPeer::lmtp("box.test")
            .bind("127.0.0.1:0".parse().unwrap())
            .await;
        let (mut s, _) = connect(&peer).await;
        say(&mut s, "LHLO n1.test").await;
        assert!(peer.unsettled().is_empty());
        say(&mut s, "MAIL FROM:<a@b.test>").await;
        assert_eq!(peer.unsettled(), ["LHLO n1.test"]);
        say(&mut s, "RCPT TO:<box@box.test>").await;
        say(&mut s, "DATA").await;
        let reply = say(&mut s, "Subject: x\r\n\r\nbody\r\n.").await;
        assert_eq!(reply, "250 2.0.0 <box@box.test> Saved\r\n");
        // Answered, but the client has not carried on: still unsettled.
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(peer.unsettled(), ["LHLO n1.test"]);
        // RSET settles it, and so does the next command or QUIT.
        say(&mut s, "RSET").await;
        assert!(peer.unsettled().is_empty());
        say(&mut s, "MAIL FROM:<a@b.test>").await;
        say(&mut s, "RCPT TO:<box@box.test>").await;
        say(&mut s, "DATA").await;
        say(&mut s, "Subject: y\r\n\r\nbody\r\n.").await;
        say(&mut s, "QUIT").await;
        assert!(peer.unsettled().is_empty());
        // A connection cut after the reply is settled too (by its end).
        let (mut s, _) = connect(&peer).await;
        say(&mut s, "LHLO n2.test").await;
        say(&mut s, "MAIL FROM:<a@b.test>").await;
        say(&mut s, "RCPT TO:<box@box.test>").await;
        say(&mut s, "DATA").await;
        say(&mut s, "Subject: z\r\n\r\nbody\r\n.").await;
        assert_eq!(peer.unsettled(), ["LHLO n2.test"]);
        drop(s);
        unsettled_becomes(&peer, &[]).await;
        let t = peer.transactions();
        assert_eq!(
            t.iter()
                .map(|t| (t.replied, t.cut_after_dot, t.quit))
                .collect::<Vec<_>>(),
            [
                (true, false, false),
                (true, false, true),
                (true, true, false)
            ]
        );
    }

    #[tokio::test]
    async fn a_scripted_transaction_is_answered_recorded_and_counted() {
        let peer = SmtpPeer::new("mini.test")
            .extension("PIPELINING")
            .extension("8BITMIME")
            .bind("127.0.0.1:0".parse().unwrap())
            .await;
        let (mut s, greeting) = connect(&peer).await;
        assert_eq!(greeting, "220 mini.test ESMTP\r\n");
        assert_eq!(
            say(&mut s, "EHLO client.test").await,
            "250-mini.test\r\n250-PIPELINING\r\n250 8BITMIME\r\n"
        );
        assert_eq!(
            say(&mut s, "MAIL FROM:<a@b.test>").await,
            "250 2.0.0 ok\r\n"
        );
        assert_eq!(say(&mut s, "DATA").await, "354 go ahead\r\n");
        assert_eq!(
            say(&mut s, "Subject: x\r\n\r\n..body\r\n.").await,
            "250 2.0.0 accepted\r\n"
        );
        assert_eq!(say(&mut s, "QUIT").await, "221 2.0.0 bye\r\n");
        let mut rest = Vec::new();
        s.read_to_end(&mut rest).await.unwrap();
        assert!(rest.is_empty());
        assert_eq!(peer.accepted(), 1);
        assert_eq!(peer.connections.load(Ordering::SeqCst), 1);
        assert_eq!(
            peer.seen(),
            ["EHLO client.test", "MAIL FROM:<a@b.test>", "DATA", "QUIT"]
        );
    }

    #[tokio::test]
    async fn a_stalled_end_of_data_is_never_answered() {
        let peer = SmtpPeer::new("slow.test")
            .stall_after_data(Duration::from_millis(50))
            .bind("127.0.0.1:0".parse().unwrap())
            .await;
        let (mut s, greeting) = connect(&peer).await;
        assert_eq!(greeting, "220 slow.test ESMTP\r\n");
        assert_eq!(say(&mut s, "EHLO c").await, "250 slow.test\r\n");
        assert_eq!(say(&mut s, "DATA").await, "354 go ahead\r\n");
        s.get_mut().write_all(b"x\r\n.\r\n").await.unwrap();
        let mut rest = Vec::new();
        s.read_to_end(&mut rest).await.unwrap();
        assert!(rest.is_empty(), "{rest:?}");
        assert_eq!(peer.accepted(), 0);
        assert_eq!(peer.stalls_ended.load(Ordering::SeqCst), 1);
    }

    fn reject_bob(rcpt: &str) -> String {
        if rcpt.starts_with("bob@") {
            format!("550 5.1.1 <{rcpt}> unknown")
        } else {
            format!("250 2.0.0 <{rcpt}> Saved")
        }
    }

    #[tokio::test]
    async fn an_lmtp_transaction_gets_one_reply_per_recipient_and_is_recorded() {
        let peer = SmtpPeer::lmtp("box.test")
            .extension("PIPELINING")
            .lmtp_replies(reject_bob)
            .bind("127.0.0.1:0".parse().unwrap())
            .await;
        let (mut s, greeting) = connect(&peer).await;
        assert_eq!(greeting, "220 box.test LMTP\r\n");
        assert!(say(&mut s, "EHLO c").await.starts_with("500 "));
        assert_eq!(
            say(&mut s, "LHLO c").await,
            "250-box.test\r\n250 PIPELINING\r\n"
        );
        assert_eq!(
            say(&mut s, "MAIL FROM:<a@b.test>").await,
            "250 2.0.0 ok\r\n"
        );
        assert!(
            say(&mut s, "DATA").await.starts_with("503 "),
            "no recipient yet"
        );
        say(&mut s, "MAIL FROM:<a@b.test>").await;
        say(&mut s, "RCPT TO:<alice@box.test> NOTIFY=NEVER").await;
        say(&mut s, "RCPT TO:<bob@box.test>").await;
        assert_eq!(say(&mut s, "DATA").await, "354 go ahead\r\n");
        s.get_mut()
            .write_all(b"Message-ID:\r\n <m1@b.test>\r\nSubject: x\r\n\r\n..dot\r\n.\r\n")
            .await
            .unwrap();
        let mut replies = String::new();
        for _ in 0..2 {
            s.read_line(&mut replies).await.unwrap();
        }
        assert_eq!(
            replies,
            "250 2.0.0 <alice@box.test> Saved\r\n550 5.1.1 <bob@box.test> unknown\r\n"
        );
        assert_eq!(say(&mut s, "QUIT").await, "221 2.0.0 bye\r\n");
        let t = peer.transactions();
        assert_eq!(t.len(), 1);
        let t = &t[0];
        assert_eq!((t.connection, t.seq), (1, 0));
        assert_eq!(t.hello, "LHLO c");
        assert_eq!(t.mail, "MAIL FROM:<a@b.test>");
        assert_eq!(t.rcpts, ["alice@box.test", "bob@box.test"]);
        assert_eq!(
            t.data,
            b"Message-ID:\r\n <m1@b.test>\r\nSubject: x\r\n\r\n.dot\r\n"
        );
        assert_eq!(t.header("message-id").as_deref(), Some("<m1@b.test>"));
        assert_eq!(t.header("subject").as_deref(), Some("x"));
        assert_eq!(t.header("dot"), None);
        assert!(t.replied && t.quit && !t.cut_after_dot && !t.in_window());
        assert_eq!(peer.accepted(), 1);
    }

    /// Starts a transaction on a new connection and sends its data.
    async fn send_data(peer: &RunningPeer) -> BufReader<tokio::net::TcpStream> {
        let (mut s, _) = connect(peer).await;
        say(&mut s, "EHLO c").await;
        say(&mut s, "MAIL FROM:<a@b.test>").await;
        say(&mut s, "RCPT TO:<x@y.test>").await;
        assert_eq!(say(&mut s, "DATA").await, "354 go ahead\r\n");
        s.get_mut().write_all(b"x\r\n.\r\n").await.unwrap();
        s
    }

    #[tokio::test]
    async fn a_client_gone_after_the_final_dot_is_recorded_as_cut() {
        let peer = SmtpPeer::new("slow.test")
            .reply_delay(Duration::from_millis(300))
            .bind("127.0.0.1:0".parse().unwrap())
            .await;
        // Gone before the reply: in RFC 1047's window, never replied.
        drop(send_data(&peer).await);
        // Gone after the reply, before another command.
        let mut s = send_data(&peer).await;
        let mut reply = String::new();
        s.read_line(&mut reply).await.unwrap();
        assert_eq!(reply, "250 2.0.0 accepted\r\n");
        drop(s);
        // Went on after the reply: not cut.
        let mut s = send_data(&peer).await;
        let mut reply = String::new();
        s.read_line(&mut reply).await.unwrap();
        say(&mut s, "RSET").await;
        drop(s);
        let t = peer
            .wait_for(Duration::from_secs(5), |t| {
                t.len() == 3 && t[0].cut_after_dot && t[1].cut_after_dot
            })
            .await;
        let flags: Vec<(bool, bool, bool)> = t
            .iter()
            .map(|t| (t.replied, t.cut_after_dot, t.quit))
            .collect();
        assert_eq!(
            flags,
            [
                (false, true, false),
                (true, true, false),
                (true, false, false)
            ]
        );
        assert_eq!(peer.accepted(), 2);
    }

    #[tokio::test]
    async fn lmtp_over_a_unix_socket() {
        let dir = std::env::temp_dir().join(format!("tern-testkit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("lmtp.sock");
        let _ = std::fs::remove_file(&path);
        let peer = SmtpPeer::lmtp("box.test").bind_unix(&path);
        let stream = tokio::net::UnixStream::connect(&path).await.unwrap();
        let mut s = BufReader::new(stream);
        let mut greeting = String::new();
        s.read_line(&mut greeting).await.unwrap();
        assert_eq!(greeting, "220 box.test LMTP\r\n");
        s.get_mut()
            .write_all(b"LHLO c\r\nMAIL FROM:<>\r\nRCPT TO:<a@box.test>\r\nDATA\r\n")
            .await
            .unwrap();
        let mut replies = String::new();
        for _ in 0..4 {
            s.read_line(&mut replies).await.unwrap();
        }
        assert!(replies.ends_with("354 go ahead\r\n"), "{replies}");
        s.get_mut().write_all(b"hi\r\n.\r\nQUIT\r\n").await.unwrap();
        let mut rest = String::new();
        s.read_to_string(&mut rest).await.unwrap();
        assert_eq!(rest, "250 2.0.0 <a@box.test> Saved\r\n221 2.0.0 bye\r\n");
        assert_eq!(peer.transactions()[0].rcpts, ["a@box.test"]);
        assert!(peer.transactions()[0].quit);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
