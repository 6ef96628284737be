//! A scripted SMTP peer: the remote MX or smarthost of a delivery test.
//!
//! It greets, answers EHLO with the extensions it was given (STARTTLS
//! first when it has a TLS configuration and the connection is still
//! plaintext), accepts any AUTH, MAIL and RCPT, takes the message after
//! DATA, and says goodbye to QUIT. It records every command line it gets
//! (after STARTTLS prefixed `tls: `; a failed handshake as
//! `handshake failed`), counts connections and accepted messages, and can
//! be told to never answer the end of data ([`SmtpPeer::stall_after_data`])
//! to stand for a server that dies in RFC 1047's window.
//!
//! It checks nothing of what the client sends: the test asserts on
//! [`RunningPeer::seen`] and the counters.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

/// How a peer behaves; [`bind`](SmtpPeer::bind) starts it.
#[derive(Debug, Clone)]
pub struct SmtpPeer {
    hostname: String,
    extensions: Vec<String>,
    tls: Option<Arc<rustls::ServerConfig>>,
    stall: Option<Duration>,
    seen: Option<Arc<Mutex<Vec<String>>>>,
}

/// What a running peer saw; it serves until the runtime ends.
#[derive(Debug, Clone)]
pub struct RunningPeer {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Every command line, in order, without its CRLF (`tls: ` before the
    /// ones read over TLS).
    pub seen: Arc<Mutex<Vec<String>>>,
    /// Connections accepted.
    pub connections: Arc<AtomicUsize>,
    /// Messages answered with 250 at the end of data.
    pub accepted: Arc<AtomicUsize>,
    /// Stalled ends of data whose stall is over (the connection dropped).
    pub stalls_ended: Arc<AtomicUsize>,
}

impl RunningPeer {
    /// A copy of the command lines seen so far.
    pub fn seen(&self) -> Vec<String> {
        self.seen.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Messages accepted so far.
    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
}

impl SmtpPeer {
    /// A peer greeting as `hostname`, with no extensions.
    pub fn new(hostname: &str) -> SmtpPeer {
        SmtpPeer {
            hostname: hostname.to_string(),
            extensions: Vec::new(),
            tls: None,
            stall: None,
            seen: None,
        }
    }

    /// Advertises `extension` (e.g. `PIPELINING`, `AUTH PLAIN LOGIN`) in
    /// its EHLO reply, after any before it.
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

    /// Records the command lines into `seen` (shared with the test)
    /// instead of a list of its own.
    pub fn record_into(mut self, seen: Arc<Mutex<Vec<String>>>) -> SmtpPeer {
        self.seen = Some(seen);
        self
    }

    /// Listens on `addr` (port 0: any free port) and serves every
    /// connection on the current tokio runtime.
    ///
    /// # Panics
    /// When `addr` cannot be bound.
    pub async fn bind(self, addr: SocketAddr) -> RunningPeer {
        let listener = TcpListener::bind(addr).await.unwrap();
        let running = RunningPeer {
            addr: listener.local_addr().unwrap(),
            seen: self.seen.clone().unwrap_or_default(),
            connections: Arc::default(),
            accepted: Arc::default(),
            stalls_ended: Arc::default(),
        };
        let peer = Arc::new(self);
        let state = running.clone();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                state.connections.fetch_add(1, Ordering::SeqCst);
                let (peer, state) = (Arc::clone(&peer), state.clone());
                tokio::spawn(async move { peer.serve(tcp, &state).await });
            }
        });
        running
    }

    async fn serve(&self, tcp: tokio::net::TcpStream, state: &RunningPeer) {
        let mut plain = BufReader::new(tcp);
        let greeting = format!("220 {} ESMTP\r\n", self.hostname);
        if plain.write_all(greeting.as_bytes()).await.is_err() {
            return;
        }
        if self.dialogue(&mut plain, state, false).await != After::StartTls {
            return;
        }
        let Some(tls) = &self.tls else { return };
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::clone(tls));
        match acceptor.accept(plain.into_inner()).await {
            Ok(stream) => {
                self.dialogue(&mut BufReader::new(stream), state, true)
                    .await;
            }
            Err(_) => record(state, "handshake failed".to_string()),
        }
    }

    /// Answers commands until STARTTLS or the end of the connection.
    async fn dialogue<S: AsyncRead + AsyncWrite + Unpin>(
        &self,
        s: &mut BufReader<S>,
        state: &RunningPeer,
        tls: bool,
    ) -> After {
        let prefix = if tls { "tls: " } else { "" };
        let mut line = String::new();
        loop {
            line.clear();
            match s.read_line(&mut line).await {
                Ok(0) | Err(_) => return After::Closed,
                Ok(_) => {}
            }
            let cmd = line.trim_end().to_string();
            record(state, format!("{prefix}{cmd}"));
            let upper = cmd.to_ascii_uppercase();
            let reply = if upper.starts_with("EHLO") {
                self.ehlo_reply(tls)
            } else if upper == "STARTTLS" && self.tls.is_some() && !tls {
                let _ = s.write_all(b"220 2.0.0 go ahead\r\n").await;
                return After::StartTls;
            } else if upper.starts_with("AUTH") {
                "235 2.7.0 welcome\r\n".to_string()
            } else if upper == "DATA" {
                if s.write_all(b"354 go ahead\r\n").await.is_err() {
                    return After::Closed;
                }
                loop {
                    line.clear();
                    match s.read_line(&mut line).await {
                        Ok(0) | Err(_) => return After::Closed,
                        Ok(_) if line == ".\r\n" => break,
                        Ok(_) => {}
                    }
                }
                if let Some(stall) = self.stall {
                    tokio::time::sleep(stall).await;
                    state.stalls_ended.fetch_add(1, Ordering::SeqCst);
                    return After::Closed;
                }
                state.accepted.fetch_add(1, Ordering::SeqCst);
                "250 2.0.0 accepted\r\n".to_string()
            } else if upper == "QUIT" {
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

/// How a dialogue ended.
#[derive(Debug, PartialEq, Eq)]
enum After {
    /// The client asked for STARTTLS and was told to go ahead.
    StartTls,
    /// QUIT, a stall, or the connection is gone.
    Closed,
}

fn record(state: &RunningPeer, line: String) {
    state
        .seen
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push(line);
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
}
