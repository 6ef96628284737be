//! POP3 end to end: a real Tern with an MX listener, POP3 listeners (loopback
//! plaintext, STLS-only, implicit TLS) and IMAP; mail delivered over SMTP,
//! listed, fetched and deleted at QUIT; nothing deleted by a dropped
//! connection; `[IN-USE]` for a second session, also of another Tern
//! process on the same mail tree; `[LOGIN-DELAY]`; USER refused before
//! STLS; TOP; UIDL stable across sessions; sizes equal to what RETR sends
//! (also for a file stored with bare LF); IMAP sees the deletions;
//! `delete_mode = "move-to-trash"`; kill -9 during UPDATE.

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use common::Raw;
use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

const PW: &str = "alice-pop3-pw";
const USER: &str = "alice@example.test";

struct World {
    running: Option<tern::Running>,
    dir: tempfile::TempDir,
    mx: SocketAddr,
    /// POP3 with `plaintext_auth` (loopback).
    pop3: SocketAddr,
    /// POP3 without it: USER/PASS need STLS first.
    pop3_tls_only: SocketAddr,
    /// POP3 over implicit TLS.
    pop3s: SocketAddr,
    /// IMAP with `plaintext_auth`.
    imap: SocketAddr,
}

impl World {
    async fn start(extra: &str) -> World {
        let dir = tempfile::tempdir().unwrap();
        let users = dir.path().join("users.toml");
        common::add_user(&users, USER, PW);
        let text = format!(
            "hostname = \"mx.example.test\"\ndata_dir = {:?}\n\
             [[listener]]\naddress = \"127.0.0.1:0\"\nrole = \"mx\"\n\
             [[listener]]\naddress = \"127.0.0.1:0\"\nrole = \"pop3\"\nplaintext_auth = true\n\
             [[listener]]\naddress = \"127.0.0.1:0\"\nrole = \"pop3\"\n\
             [[listener]]\naddress = \"127.0.0.1:0\"\nrole = \"pop3s\"\n\
             [[listener]]\naddress = \"127.0.0.1:0\"\nrole = \"imap\"\nplaintext_auth = true\n\
             [auth]\nusers_file = {users:?}\n\
             [domains.\"example.test\"]\nmailboxes = [\"alice\", \"bob\"]\n\
             [dns]\nnameservers = [\"127.0.0.1:9\"]\n[mail_auth]\nenabled = false\n{extra}\n",
            dir.path().join("data"),
        );
        let config = tern::Config::parse(&text).expect("test config");
        let running = tern::start(&config).await.expect("server starts");
        let a = running.addrs();
        World {
            mx: a[0],
            pop3: a[1],
            pop3_tls_only: a[2],
            pop3s: a[3],
            imap: a[4],
            running: Some(running),
            dir,
        }
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn maildir(&self) -> PathBuf {
        self.data().join("mail/example.test/alice")
    }

    fn connector(&self) -> TlsConnector {
        let mut roots = rustls::RootCertStore::empty();
        for c in CertificateDer::pem_file_iter(self.data().join("tls/selfsigned.crt")).unwrap() {
            roots.add(c.unwrap()).unwrap();
        }
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
        TlsConnector::from(Arc::new(config))
    }

    async fn stop(mut self) {
        if let Some(r) = self.running.take() {
            r.shutdown().await;
        }
    }
}

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// A byte-exact POP3 client that can switch to TLS.
struct Pop3 {
    stream: Option<Box<dyn Io>>,
    buf: Vec<u8>,
}

impl Pop3 {
    async fn connect(addr: SocketAddr) -> (Pop3, String) {
        let tcp = TcpStream::connect(addr).await.unwrap();
        let mut c = Pop3 {
            stream: Some(Box::new(tcp)),
            buf: Vec::new(),
        };
        let g = c.line().await;
        (c, g)
    }

    async fn connect_tls(addr: SocketAddr, tls: &TlsConnector) -> (Pop3, String) {
        let tcp = TcpStream::connect(addr).await.unwrap();
        let name = ServerName::try_from("mx.example.test").unwrap();
        let s = tls.connect(name, tcp).await.expect("TLS handshake");
        let mut c = Pop3 {
            stream: Some(Box::new(s)),
            buf: Vec::new(),
        };
        let g = c.line().await;
        (c, g)
    }

    /// Logs in over the plaintext loopback listener.
    async fn login(addr: SocketAddr) -> Pop3 {
        let (mut c, g) = Pop3::connect(addr).await;
        assert!(g.starts_with("+OK"), "{g}");
        assert!(c.cmd(&format!("USER {USER}")).await.starts_with("+OK"));
        let r = c.cmd(&format!("PASS {PW}")).await;
        assert!(r.starts_with("+OK Logged in"), "{r}");
        c
    }

    /// One line, CRLF included ("" at EOF).
    async fn line(&mut self) -> String {
        let raw = self.raw_line().await;
        String::from_utf8(raw).unwrap()
    }

    async fn raw_line(&mut self) -> Vec<u8> {
        loop {
            if let Some(i) = self.buf.iter().position(|&b| b == b'\n') {
                return self.buf.drain(..=i).collect();
            }
            let mut chunk = [0u8; 8192];
            let s = self.stream.as_mut().expect("connected");
            let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut chunk))
                .await
                .expect("reply in time")
                .unwrap_or(0);
            if n == 0 {
                return std::mem::take(&mut self.buf);
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    async fn send(&mut self, bytes: &[u8]) {
        let s = self.stream.as_mut().expect("connected");
        s.write_all(bytes).await.unwrap();
    }

    async fn cmd(&mut self, line: &str) -> String {
        self.send(format!("{line}\r\n").as_bytes()).await;
        self.line().await
    }

    /// A multi-line command: the status line and the body with the
    /// stuffing removed (CRLFs kept).
    async fn multi(&mut self, line: &str) -> (String, Vec<u8>) {
        let status = self.cmd(line).await;
        assert!(status.starts_with("+OK"), "{line}: {status}");
        let mut body = Vec::new();
        loop {
            let l = self.raw_line().await;
            assert!(l.ends_with(b"\r\n"), "{line}: unterminated {l:?}");
            if l == b".\r\n" {
                return (status, body);
            }
            body.extend_from_slice(l.strip_prefix(b".").unwrap_or(&l));
        }
    }

    async fn stls(&mut self, tls: &TlsConnector) {
        let r = self.cmd("STLS").await;
        assert!(r.starts_with("+OK"), "{r}");
        assert!(self.buf.is_empty(), "plaintext left after STLS");
        let tcp = self.stream.take().unwrap();
        let name = ServerName::try_from("mx.example.test").unwrap();
        let s = tls.connect(name, tcp).await.expect("STLS handshake");
        self.stream = Some(Box::new(s));
    }

    /// The number and total size from STAT.
    async fn stat(&mut self) -> (usize, u64) {
        let r = self.cmd("STAT").await;
        let mut p = r.split_whitespace().skip(1);
        let n = p.next().unwrap().parse().unwrap();
        let s = p.next().unwrap().parse().unwrap();
        (n, s)
    }

    async fn uidl(&mut self) -> Vec<String> {
        let (_, body) = self.multi("UIDL").await;
        String::from_utf8(body)
            .unwrap()
            .lines()
            .map(|l| l.split(' ').nth(1).unwrap().to_owned())
            .collect()
    }
}

fn deliver(mx: SocketAddr, subject: &str, body: &str) {
    let mut c = Raw::greeted(mx);
    assert!(c.cmd("EHLO client.test").starts_with("250"));
    let r = c.send_mail(
        "bob@else.test",
        USER,
        &format!("From: Bob <bob@else.test>\r\nTo: {USER}\r\nSubject: {subject}\r\n\r\n{body}"),
    );
    assert!(r.starts_with("250"), "{r}");
}

async fn deliver_n(mx: SocketAddr, n: usize) {
    tokio::task::spawn_blocking(move || {
        for i in 1..=n {
            deliver(
                mx,
                &format!("message {i}"),
                &format!("line one of {i}\r\n..a line starting with a dot\r\nlast line"),
            );
        }
    })
    .await
    .unwrap();
}

/// The number of messages IMAP sees in INBOX.
fn imap_exists(imap: SocketAddr) -> usize {
    use std::io::{BufRead, BufReader, Write};
    let s = std::net::TcpStream::connect(imap).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut r = BufReader::new(s.try_clone().unwrap());
    let mut w = s;
    let mut l = String::new();
    r.read_line(&mut l).unwrap();
    w.write_all(format!("a LOGIN {USER} {PW}\r\nb SELECT INBOX\r\nc LOGOUT\r\n").as_bytes())
        .unwrap();
    let mut exists = None;
    loop {
        l.clear();
        if r.read_line(&mut l).unwrap() == 0 {
            break;
        }
        if let Some(n) = l
            .strip_prefix("* ")
            .and_then(|x| x.strip_suffix(" EXISTS\r\n"))
        {
            exists = n.parse().ok();
        }
        if l.starts_with("c OK") {
            break;
        }
    }
    exists.expect("SELECT reported EXISTS")
}

fn files_in(dir: &Path) -> usize {
    ["new", "cur"]
        .iter()
        .map(|d| std::fs::read_dir(dir.join(d)).map_or(0, |r| r.count()))
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fetch_list_top_uidl_and_delete_at_quit() {
    let w = World::start("").await;
    deliver_n(w.mx, 3).await;
    let mut c = Pop3::login(w.pop3).await;
    let (n, total) = c.stat().await;
    assert_eq!(n, 3);
    let (status, list) = c.multi("LIST").await;
    assert!(status.starts_with("+OK 3 messages"), "{status}");
    let sizes: Vec<u64> = String::from_utf8(list)
        .unwrap()
        .lines()
        .map(|l| l.split(' ').nth(1).unwrap().parse().unwrap())
        .collect();
    assert_eq!(sizes.iter().sum::<u64>(), total);
    for (i, size) in sizes.iter().enumerate() {
        let (status, body) = c.multi(&format!("RETR {}", i + 1)).await;
        assert_eq!(status, format!("+OK {size} octets\r\n"));
        assert_eq!(body.len() as u64, *size, "RETR sends what LIST says");
        let text = String::from_utf8(body).unwrap();
        assert!(
            text.contains(&format!("Subject: message {}\r\n", i + 1)),
            "{text}"
        );
        assert!(
            text.contains("\r\n.a line starting with a dot\r\n"),
            "{text}"
        );
        assert!(text.ends_with("last line\r\n"), "{text}");
    }
    // TOP 0: the header and the empty line only; TOP 1: one body line more.
    let (_, top0) = c.multi("TOP 2 0").await;
    let top0 = String::from_utf8(top0).unwrap();
    assert!(top0.ends_with("Subject: message 2\r\n\r\n"), "{top0}");
    let (_, top1) = c.multi("TOP 2 1").await;
    assert_eq!(
        String::from_utf8(top1).unwrap(),
        format!("{top0}line one of 2\r\n")
    );
    let uidls = c.uidl().await;
    assert_eq!(uidls.len(), 3);
    assert!(uidls.iter().all(|u| u.len() == 16), "{uidls:?}");
    assert!(c.cmd("DELE 2").await.starts_with("+OK"));
    assert_eq!(c.stat().await.0, 2);
    // Not gone yet: IMAP still sees three until QUIT.
    let imap = w.imap;
    assert_eq!(
        tokio::task::spawn_blocking(move || imap_exists(imap))
            .await
            .unwrap(),
        3
    );
    assert_eq!(c.cmd("QUIT").await, "+OK Logging out (2 messages left)\r\n");
    assert_eq!(c.line().await, "", "closed after QUIT");
    assert_eq!(
        tokio::task::spawn_blocking(move || imap_exists(imap))
            .await
            .unwrap(),
        2
    );
    // The next session: the same UIDLs for the messages left.
    let mut c = Pop3::login(w.pop3).await;
    assert_eq!(c.uidl().await, [uidls[0].clone(), uidls[2].clone()]);
    assert!(c.cmd("QUIT").await.starts_with("+OK"));
    assert_eq!(files_in(&w.maildir()), 2);
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_connection_deletes_nothing_and_the_maildrop_is_locked() {
    let w = World::start("").await;
    deliver_n(w.mx, 2).await;
    let mut a = Pop3::login(w.pop3).await;
    assert!(a.cmd("DELE 1").await.starts_with("+OK"));
    assert!(a.cmd("DELE 2").await.starts_with("+OK"));
    // A second session of the same user: [IN-USE], back in AUTHORIZATION.
    let (mut b, _) = Pop3::connect(w.pop3).await;
    assert!(b.cmd(&format!("USER {USER}")).await.starts_with("+OK"));
    let r = b.cmd(&format!("PASS {PW}")).await;
    assert!(r.starts_with("-ERR [IN-USE]"), "{r}");
    assert!(b.cmd("STAT").await.starts_with("-ERR"));
    // The first connection drops without QUIT.
    drop(a);
    // The lock goes with it; nothing was deleted.
    let mut c = None;
    for _ in 0..50 {
        assert!(b.cmd(&format!("USER {USER}")).await.starts_with("+OK"));
        let r = b.cmd(&format!("PASS {PW}")).await;
        if r.starts_with("+OK") {
            c = Some(b);
            break;
        }
        assert!(r.starts_with("-ERR [IN-USE]"), "{r}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut c = c.expect("the lock is released when the connection drops");
    assert_eq!(c.stat().await.0, 2);
    assert!(c.cmd("QUIT").await.starts_with("+OK"));
    assert_eq!(files_in(&w.maildir()), 2);
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_needs_stls_and_implicit_tls_works() {
    let w = World::start("").await;
    deliver_n(w.mx, 1).await;
    let tls = w.connector();
    let (mut c, g) = Pop3::connect(w.pop3_tls_only).await;
    assert!(g.starts_with("+OK"), "{g}");
    let (_, capa) = c.multi("CAPA").await;
    let capa = String::from_utf8(capa).unwrap();
    assert!(capa.contains("STLS\r\n"), "{capa}");
    assert!(
        !capa.contains("USER\r\n") && !capa.contains("SASL"),
        "{capa}"
    );
    let r = c.cmd(&format!("USER {USER}")).await;
    assert!(r.starts_with("-ERR [AUTH]"), "{r}");
    let r = c.cmd("AUTH PLAIN").await;
    assert!(r.starts_with("-ERR [AUTH]"), "{r}");
    c.stls(&tls).await;
    let (_, capa) = c.multi("CAPA").await;
    let capa = String::from_utf8(capa).unwrap();
    assert!(
        capa.contains("USER\r\n") && !capa.contains("STLS"),
        "{capa}"
    );
    // SASL PLAIN with an initial response.
    use base64::Engine as _;
    let ir = base64::engine::general_purpose::STANDARD.encode(format!("\0{USER}\0{PW}"));
    let r = c.cmd(&format!("AUTH PLAIN {ir}")).await;
    assert!(r.starts_with("+OK Logged in, 1 messages"), "{r}");
    assert!(c.cmd("QUIT").await.starts_with("+OK"));

    // Plaintext pipelined behind STLS is dropped (CVE-2011-0411).
    let (mut c, _) = Pop3::connect(w.pop3_tls_only).await;
    c.send(b"STLS\r\nUSER x\r\n").await;
    let r = c.line().await;
    assert!(r.starts_with("+OK"), "{r}");
    let tcp = c.stream.take().unwrap();
    let s = tls
        .connect(ServerName::try_from("mx.example.test").unwrap(), tcp)
        .await
        .unwrap();
    c.stream = Some(Box::new(s));
    let r = c.cmd(&format!("PASS {PW}")).await;
    assert_eq!(r, "-ERR USER first\r\n");

    // Implicit TLS (995).
    let (mut c, g) = Pop3::connect_tls(w.pop3s, &tls).await;
    assert!(g.starts_with("+OK"), "{g}");
    assert!(c.cmd(&format!("USER {USER}")).await.starts_with("+OK"));
    assert!(
        c.cmd(&format!("PASS {PW}"))
            .await
            .starts_with("+OK Logged in")
    );
    let (_, capa) = c.multi("CAPA").await;
    assert!(!String::from_utf8(capa).unwrap().contains("STLS"));
    assert!(c.cmd("QUIT").await.starts_with("+OK"));
    // A wrong password: -ERR [AUTH], the session goes on.
    let (mut c, _) = Pop3::connect(w.pop3).await;
    c.cmd(&format!("USER {USER}")).await;
    let r = c.cmd("PASS wrong").await;
    assert!(r.starts_with("-ERR [AUTH]"), "{r}");
    w.stop().await;
}

/// A file another program stored with bare LF line ends: LIST reports the
/// size of the CRLF form RETR sends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sizes_are_those_of_the_crlf_form() {
    let w = World::start("").await;
    // Create the store (and INBOX) first.
    let mut c = Pop3::login(w.pop3).await;
    assert!(c.cmd("QUIT").await.starts_with("+OK"));
    let stored = b"Subject: lf\n\n.dot\nno final newline";
    std::fs::write(w.maildir().join("new/1700000000.lf.host"), stored).unwrap();
    let mut c = Pop3::login(w.pop3).await;
    let (n, size) = c.stat().await;
    assert_eq!(n, 1);
    let (status, body) = c.multi("RETR 1").await;
    assert_eq!(body, b"Subject: lf\r\n\r\n.dot\r\nno final newline\r\n");
    assert_eq!(size, body.len() as u64);
    assert_eq!(status, format!("+OK {size} octets\r\n"));
    assert!(c.cmd("QUIT").await.starts_with("+OK"));
    // A message of several read chunks (64 KiB), bare LFs and leading dots
    // across the chunk boundaries.
    let mut big = b"Subject: big\n\n".to_vec();
    for i in 0..30_000 {
        big.extend_from_slice(format!(".line {i}\n").as_bytes());
    }
    std::fs::write(w.maildir().join("new/1700000001.big.host"), &big).unwrap();
    let mut c = Pop3::login(w.pop3).await;
    let (status, list) = c.multi("LIST").await;
    assert!(status.starts_with("+OK 2 messages"), "{status}");
    let list = String::from_utf8(list).unwrap();
    let big_size: u64 = list
        .lines()
        .nth(1)
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let (_, body) = c.multi("RETR 2").await;
    let want: Vec<u8> = String::from_utf8(big)
        .unwrap()
        .replace('\n', "\r\n")
        .into_bytes();
    assert_eq!(body.len(), want.len());
    assert!(body == want, "RETR of a multi-chunk message");
    assert_eq!(big_size, want.len() as u64);
    assert!(c.cmd("QUIT").await.starts_with("+OK"));
    // Files already in the wire form (CRLF, no line starting with a dot)
    // are sent as they are: byte for byte, with the terminator (and the
    // last line end if the file has none); an empty file is an empty
    // message.
    let clean = b"Subject: clean\r\n\r\nline\r\n x.y\r\n\r\n";
    let unended = b"Subject: unended\r\n\r\nlast line";
    std::fs::write(w.maildir().join("new/1700000002.clean.host"), clean).unwrap();
    std::fs::write(w.maildir().join("new/1700000003.empty.host"), b"").unwrap();
    std::fs::write(w.maildir().join("new/1700000004.unended.host"), unended).unwrap();
    let mut c = Pop3::login(w.pop3).await;
    assert_eq!(c.cmd("LIST 3").await, format!("+OK 3 {}\r\n", clean.len()));
    assert_eq!(c.cmd("LIST 4").await, "+OK 4 0\r\n");
    assert_eq!(
        c.cmd("LIST 5").await,
        format!("+OK 5 {}\r\n", unended.len() + 2)
    );
    c.send(b"RETR 3\r\nRETR 4\r\nRETR 5\r\n").await;
    let mut raw = Vec::new();
    for _ in 0..9 + 5 {
        raw.extend(c.raw_line().await);
    }
    let mut want = format!("+OK {} octets\r\n", clean.len()).into_bytes();
    want.extend_from_slice(clean);
    want.extend_from_slice(b".\r\n+OK 0 octets\r\n.\r\n");
    want.extend_from_slice(format!("+OK {} octets\r\n", unended.len() + 2).as_bytes());
    want.extend_from_slice(unended);
    want.extend_from_slice(b"\r\n.\r\n");
    assert_eq!(
        String::from_utf8_lossy(&raw),
        String::from_utf8_lossy(&want)
    );
    assert!(c.cmd("QUIT").await.starts_with("+OK"));
    w.stop().await;
}

/// RETR with read-ahead: 45 messages (more than one batch), one larger
/// than a read chunk in the middle, some in the wire form and some not;
/// fetched in order (pipelined), then backwards and skipping: every body
/// is exactly its file's wire form.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retr_in_any_order_sends_the_right_messages() {
    let w = World::start("").await;
    let mut c = Pop3::login(w.pop3).await;
    assert!(c.cmd("QUIT").await.starts_with("+OK"));
    let mut files = Vec::new();
    for i in 0..45usize {
        let mut m = format!("Subject: ahead {i}\r\n\r\n").into_bytes();
        let lines = if i == 20 { 40_000 } else { i * 37 };
        for l in 0..lines {
            if i % 3 == 0 {
                m.extend_from_slice(format!(".{i} line {l}\n").as_bytes());
            } else {
                m.extend_from_slice(format!("{i} line {l}\r\n").as_bytes());
            }
        }
        std::fs::write(
            w.maildir().join(format!("new/17000000{i:02}.ahead.host")),
            &m,
        )
        .unwrap();
        let mut wire = Vec::new();
        for line in m.split_inclusive(|&b| b == b'\n') {
            wire.extend_from_slice(
                line.strip_suffix(b"\r\n")
                    .or(line.strip_suffix(b"\n"))
                    .unwrap_or(line),
            );
            wire.extend_from_slice(b"\r\n");
        }
        files.push(wire);
    }
    let mut c = Pop3::login(w.pop3).await;
    assert_eq!(c.stat().await.0, 45);
    let mut pipelined = String::new();
    for i in 1..=45 {
        pipelined.push_str(&format!("RETR {i}\r\n"));
    }
    c.send(pipelined.as_bytes()).await;
    let read_body = async |c: &mut Pop3| {
        let status = c.line().await;
        assert!(status.starts_with("+OK"), "{status}");
        let mut body = Vec::new();
        loop {
            let l = c.raw_line().await;
            if l == b".\r\n" {
                return body;
            }
            body.extend_from_slice(l.strip_prefix(b".").unwrap_or(&l));
        }
    };
    for (i, want) in files.iter().enumerate() {
        let body = read_body(&mut c).await;
        assert!(body == *want, "message {} differs", i + 1);
    }
    for i in [45usize, 3, 2, 30, 21, 22, 1, 44] {
        c.send(format!("RETR {i}\r\n").as_bytes()).await;
        let body = read_body(&mut c).await;
        assert!(body == files[i - 1], "message {i} differs out of order");
    }
    assert!(c.cmd("QUIT").await.starts_with("+OK"));
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn move_to_trash_mode() {
    let w = World::start("[pop3]\ndelete_mode = \"move-to-trash\"\nidle_timeout = \"10m\"\n").await;
    deliver_n(w.mx, 2).await;
    let mut c = Pop3::login(w.pop3).await;
    assert!(c.cmd("DELE 1").await.starts_with("+OK"));
    assert_eq!(c.cmd("QUIT").await, "+OK Logging out (1 messages left)\r\n");
    assert_eq!(files_in(&w.maildir()), 1);
    assert_eq!(files_in(&w.maildir().join(".Trash")), 1);
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_timeout_closes_without_deleting() {
    let w = World::start("[pop3]\nidle_timeout = \"1s\"\n").await;
    deliver_n(w.mx, 1).await;
    let mut c = Pop3::login(w.pop3).await;
    assert!(c.cmd("DELE 1").await.starts_with("+OK"));
    let r = c.line().await;
    assert!(r.starts_with("-ERR Autologout"), "{r}");
    assert_eq!(c.line().await, "");
    assert_eq!(files_in(&w.maildir()), 1);
    w.stop().await;
}

/// A listener's own `idle_timeout` overrides `[pop3] idle_timeout` for
/// its sessions only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listener_has_its_own_idle_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let users = dir.path().join("users.toml");
    common::add_user(&users, USER, PW);
    common::add_user(&users, "bob@example.test", PW);
    let text = format!(
        "hostname = \"mx.example.test\"\ndata_dir = {:?}\n\
         [[listener]]\naddress = \"127.0.0.1:0\"\nrole = \"mx\"\n\
         [[listener]]\naddress = \"127.0.0.1:0\"\nrole = \"pop3\"\nplaintext_auth = true\nidle_timeout = \"1s\"\n\
         [[listener]]\naddress = \"127.0.0.1:0\"\nrole = \"pop3\"\nplaintext_auth = true\n\
         [auth]\nusers_file = {users:?}\n\
         [domains.\"example.test\"]\nmailboxes = [\"alice\", \"bob\"]\n\
         [dns]\nnameservers = [\"127.0.0.1:9\"]\n[mail_auth]\nenabled = false\n\
         [pop3]\nidle_timeout = \"10m\"\n",
        dir.path().join("data"),
    );
    let config = tern::Config::parse(&text).expect("test config");
    let running = tern::start(&config).await.expect("server starts");
    let a = running.addrs();
    let mut quick = Pop3::login(a[1]).await;
    let (mut slow, _) = Pop3::connect(a[2]).await;
    assert!(slow.cmd("USER bob@example.test").await.starts_with("+OK"));
    let r = slow.cmd(&format!("PASS {PW}")).await;
    assert!(r.starts_with("+OK Logged in"), "{r}");
    let r = quick.line().await;
    assert!(r.starts_with("-ERR Autologout"), "{r}");
    // The other listener's session is still there after its neighbour's
    // timeout.
    assert_eq!(slow.stat().await.0, 0);
    assert!(slow.cmd("QUIT").await.starts_with("+OK"));
    running.shutdown().await;
}

/// Kill -9 during UPDATE (issue 13): the real binary is killed right after
/// QUIT (with growing delays, so some kills land before, during and after
/// the removal); after a restart either every marked message is gone or
/// none is, the UIDLs of the messages left are those they had, and the
/// UIDLs of removed messages never come back for new mail.
#[test]
fn sigkill_during_update_removes_all_or_nothing() {
    use std::io::{BufRead, BufReader, Write};
    const N: usize = 120;
    let dir = tempfile::tempdir().unwrap();
    let users = dir.path().join("users.toml");
    common::add_user(&users, USER, PW);
    let mx = common::free_loopback_addr();
    let pop3 = common::free_loopback_addr();
    let config = dir.path().join("tern.toml");
    std::fs::write(
        &config,
        format!(
            "hostname = \"mx.example.test\"\ndata_dir = {:?}\n\
             [[listener]]\naddress = \"{mx}\"\nrole = \"mx\"\n\
             [[listener]]\naddress = \"{pop3}\"\nrole = \"pop3\"\nplaintext_auth = true\n\
             [auth]\nusers_file = {users:?}\n\
             [dns]\nnameservers = [\"127.0.0.1:9\"]\n[mail_auth]\nenabled = false\n\
             [domains.\"example.test\"]\nmailboxes = [\"alice\"]\n[log]\nlevel = \"warn\"\n",
            dir.path().join("data")
        ),
    )
    .unwrap();
    let log = dir.path().join("tern.log");
    let maildir = dir.path().join("data/mail/example.test/alice");
    let mut child = common::spawn_daemon(&config, &log, mx, &[]);
    let count = |addr: SocketAddr| -> usize {
        let s = std::net::TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let mut r = BufReader::new(s.try_clone().unwrap());
        let mut w = s;
        w.write_all(format!("USER {USER}\r\nPASS {PW}\r\nSTAT\r\nQUIT\r\n").as_bytes())
            .unwrap();
        let mut l = String::new();
        for _ in 0..4 {
            l.clear();
            r.read_line(&mut l).unwrap();
        }
        assert!(l.starts_with("+OK "), "STAT: {l}");
        l.split_whitespace().nth(1).unwrap().parse().unwrap()
    };
    // UIDL of every message, in order.
    let uidls = |addr: SocketAddr| -> Vec<String> {
        let s = std::net::TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let mut r = BufReader::new(s.try_clone().unwrap());
        let mut w = s;
        w.write_all(format!("USER {USER}\r\nPASS {PW}\r\nUIDL\r\nQUIT\r\n").as_bytes())
            .unwrap();
        let mut l = String::new();
        for _ in 0..4 {
            l.clear();
            r.read_line(&mut l).unwrap();
        }
        assert!(l.starts_with("+OK"), "UIDL: {l}");
        let mut out = Vec::new();
        loop {
            l.clear();
            r.read_line(&mut l).unwrap();
            if l == ".\r\n" {
                return out;
            }
            out.push(l.split_whitespace().nth(1).unwrap().to_owned());
        }
    };
    let mut removed: std::collections::HashSet<String> = std::collections::HashSet::new();
    let mut outcomes = Vec::new();
    for delay_us in [0u64, 100, 250, 500, 1000, 2000, 5000] {
        let have = count(pop3);
        if have < N {
            for i in have..N {
                deliver(mx, &format!("kill {i}"), "body\r\n");
            }
        }
        assert_eq!(count(pop3), N);
        let before = uidls(pop3);
        assert_eq!(before.len(), N);
        assert!(
            before.iter().all(|u| !removed.contains(u)),
            "a UIDL given again to a new message"
        );
        let s = std::net::TcpStream::connect(pop3).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let mut r = BufReader::new(s.try_clone().unwrap());
        let mut w = s;
        let mut l = String::new();
        r.read_line(&mut l).unwrap();
        w.write_all(format!("USER {USER}\r\nPASS {PW}\r\n").as_bytes())
            .unwrap();
        for _ in 0..2 {
            l.clear();
            r.read_line(&mut l).unwrap();
        }
        assert!(l.starts_with("+OK Logged in"), "{l}");
        let mut cmds = String::new();
        for i in 1..=N {
            cmds.push_str(&format!("DELE {i}\r\n"));
        }
        w.write_all(cmds.as_bytes()).unwrap();
        for _ in 0..N {
            l.clear();
            r.read_line(&mut l).unwrap();
            assert!(l.starts_with("+OK"), "{l}");
        }
        w.write_all(b"QUIT\r\n").unwrap();
        std::thread::sleep(Duration::from_micros(delay_us));
        common::signal(&child, "-KILL");
        let _ = child.wait();
        child = common::spawn_daemon(&config, &log, mx, &[]);
        let after = count(pop3);
        assert!(
            after == 0 || after == N,
            "after a kill {delay_us}us into UPDATE: {after} of {N} messages left"
        );
        // UIDLs survive the restart, and those of removed messages are
        // never given again (checked as new mail arrives above).
        let now = uidls(pop3);
        if after == N {
            assert_eq!(now, before, "UIDLs changed across a restart");
        } else {
            assert!(now.is_empty());
            removed.extend(before);
        }
        assert!(!maildir.join("tern.removing").exists());
        outcomes.push(after);
    }
    eprintln!("messages left after each kill: {outcomes:?}");
    common::signal(&child, "-TERM");
    let _ = child.wait();
}

/// Logs in as USER over plaintext and returns the reply to PASS.
async fn try_login(addr: SocketAddr) -> (Pop3, String) {
    let (mut c, g) = Pop3::connect(addr).await;
    assert!(g.starts_with("+OK"), "{g}");
    assert!(c.cmd(&format!("USER {USER}")).await.starts_with("+OK"));
    let r = c.cmd(&format!("PASS {PW}")).await;
    (c, r)
}

/// Two Tern processes on one mail tree (the second's `data/mail` is a
/// symbolic link to the first's): a POP3 session in either locks the
/// maildrop against the other (`-ERR [IN-USE]`), QUIT releases it, and so
/// does a SIGKILL of the process holding it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_maildrop_lock_holds_across_processes() {
    let w = World::start("").await;
    deliver_n(w.mx, 2).await;
    let other = tempfile::tempdir().unwrap();
    let data = other.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::create_dir_all(w.data().join("mail")).unwrap();
    std::os::unix::fs::symlink(w.data().join("mail"), data.join("mail")).unwrap();
    let mx = common::free_loopback_addr();
    let pop3 = common::free_loopback_addr();
    let config = other.path().join("tern.toml");
    std::fs::write(
        &config,
        format!(
            "hostname = \"mx.example.test\"\ndata_dir = {data:?}\n\
             [[listener]]\naddress = \"{mx}\"\nrole = \"mx\"\n\
             [[listener]]\naddress = \"{pop3}\"\nrole = \"pop3\"\nplaintext_auth = true\n\
             [auth]\nusers_file = {:?}\n\
             [dns]\nnameservers = [\"127.0.0.1:9\"]\n[mail_auth]\nenabled = false\n\
             [domains.\"example.test\"]\nmailboxes = [\"alice\"]\n[log]\nlevel = \"warn\"\n",
            w.dir.path().join("users.toml"),
        ),
    )
    .unwrap();
    let log = other.path().join("tern.log");
    let mut child = tokio::task::block_in_place(|| common::spawn_daemon(&config, &log, mx, &[]));

    // The other process holds the maildrop: this one says [IN-USE].
    let (mut b, r) = try_login(pop3).await;
    assert!(r.starts_with("+OK Logged in, 2 messages"), "{r}");
    let uidls = b.uidl().await;
    let (_, r) = try_login(w.pop3).await;
    assert!(r.starts_with("-ERR [IN-USE]"), "{r}");
    assert!(b.cmd("DELE 1").await.starts_with("+OK"));
    assert!(b.cmd("QUIT").await.starts_with("+OK"));
    // Released by QUIT; now this process holds it against the other. Both
    // give the message the same UIDL (it lives in the store, not in a
    // process).
    let (mut a, r) = try_login(w.pop3).await;
    assert!(r.starts_with("+OK Logged in, 1 messages"), "{r}");
    assert_eq!(a.uidl().await, uidls[1..]);
    let (_, r) = try_login(pop3).await;
    assert!(r.starts_with("-ERR [IN-USE]"), "{r}");
    assert!(a.cmd("QUIT").await.starts_with("+OK"));
    // The other process dies by SIGKILL in TRANSACTION: the lock goes with
    // it, nothing is deleted.
    let (mut b, r) = try_login(pop3).await;
    assert!(r.starts_with("+OK Logged in, 1 messages"), "{r}");
    assert!(b.cmd("DELE 1").await.starts_with("+OK"));
    let (_, r) = try_login(w.pop3).await;
    assert!(r.starts_with("-ERR [IN-USE]"), "{r}");
    tokio::task::block_in_place(|| {
        common::signal(&child, "-KILL");
        let _ = child.wait();
    });
    let (mut a, r) = try_login(w.pop3).await;
    assert!(r.starts_with("+OK Logged in, 1 messages"), "{r}");
    assert!(a.cmd("QUIT").await.starts_with("+OK"));
    assert_eq!(files_in(&w.maildir()), 1);
    w.stop().await;
}

/// The brute-force tracker is the one SMTP and IMAP use: wrong passwords
/// over POP3 and IMAP add up, the same answer for an unknown user as for a
/// wrong password, and then the right password is refused too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pop3_logins_share_the_brute_force_tracker() {
    use std::io::{BufRead, BufReader, Write};
    let w = World::start(
        "[limits.abuse.auth]\ninitial_delay = \"10ms\"\nmax_delay = \"20ms\"\nblock_ip_after = 3\n",
    )
    .await;
    let (mut c, _) = Pop3::connect(w.pop3).await;
    assert!(c.cmd(&format!("USER {USER}")).await.starts_with("+OK"));
    let wrong = c.cmd("PASS guess1").await;
    assert!(c.cmd("USER nobody@example.test").await.starts_with("+OK"));
    let unknown = c.cmd("PASS guess2").await;
    assert!(wrong.starts_with("-ERR [AUTH]"), "{wrong}");
    assert_eq!(
        wrong, unknown,
        "unknown users and wrong passwords look alike"
    );
    // A third failure, over IMAP.
    let imap = w.imap;
    let tagged = tokio::task::spawn_blocking(move || {
        let s = std::net::TcpStream::connect(imap).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut r = BufReader::new(s.try_clone().unwrap());
        let mut w = s;
        let mut l = String::new();
        r.read_line(&mut l).unwrap();
        w.write_all(format!("a LOGIN {USER} guess3\r\n").as_bytes())
            .unwrap();
        loop {
            l.clear();
            r.read_line(&mut l).unwrap();
            if l.starts_with("a ") {
                return l;
            }
        }
    })
    .await
    .unwrap();
    assert!(tagged.starts_with("a NO"), "{tagged}");
    // Blocked now over POP3, even with the right password.
    assert!(c.cmd(&format!("USER {USER}")).await.starts_with("+OK"));
    let r = c.cmd(&format!("PASS {PW}")).await;
    assert!(r.starts_with("-ERR [SYS/TEMP]"), "{r}");
    assert!(c.cmd("STAT").await.starts_with("-ERR Not authenticated"));
    w.stop().await;
}

/// `login_delay`: announced in CAPA; a second login sooner is refused with
/// `[LOGIN-DELAY]` (after the password was checked), the session stays in
/// AUTHORIZATION; a wrong password still gets `[AUTH]`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_delay_refuses_a_login_too_soon() {
    let w = World::start("[pop3]\nlogin_delay = \"1h\"\n").await;
    deliver_n(w.mx, 1).await;
    let (mut c, _) = Pop3::connect(w.pop3).await;
    let (_, capa) = c.multi("CAPA").await;
    assert!(
        String::from_utf8(capa)
            .unwrap()
            .contains("\r\nLOGIN-DELAY 3600\r\n")
    );
    let (mut c, r) = try_login(w.pop3).await;
    assert!(r.starts_with("+OK Logged in"), "{r}");
    let (_, capa) = c.multi("CAPA").await;
    assert!(
        String::from_utf8(capa)
            .unwrap()
            .contains("LOGIN-DELAY 3600")
    );
    assert!(c.cmd("QUIT").await.starts_with("+OK"));
    let (mut c, r) = try_login(w.pop3).await;
    assert!(r.starts_with("-ERR [LOGIN-DELAY]"), "{r}");
    assert!(c.cmd("STAT").await.starts_with("-ERR"));
    assert!(c.cmd(&format!("USER {USER}")).await.starts_with("+OK"));
    assert!(c.cmd("PASS wrong").await.starts_with("-ERR [AUTH]"));
    // The time is kept in the maildrop (across restarts and processes).
    let recorded = std::fs::read_to_string(w.maildir().join("tern.pop3.lock")).unwrap();
    assert!(recorded.trim().parse::<i64>().is_ok(), "{recorded:?}");
    w.stop().await;
}

/// IMAP and POP3 on the same INBOX at the same time: a selected IMAP
/// session hears POP3's deletion at its next NOOP; a message IMAP expunges
/// during a POP3 session answers RETR with `-ERR [SYS/PERM]`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn imap_and_pop3_on_the_same_inbox_at_once() {
    use std::io::{BufRead, BufReader, Write};
    let w = World::start("").await;
    deliver_n(w.mx, 2).await;
    let imap = w.imap;
    let (mut r, mut iw) = tokio::task::spawn_blocking(move || {
        let s = std::net::TcpStream::connect(imap).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let r = BufReader::new(s.try_clone().unwrap());
        (r, s)
    })
    .await
    .unwrap();
    // Sends an IMAP command and returns everything up to its tagged reply.
    let mut imap_cmd = move |tag: &str, cmd: &str| -> String {
        iw.write_all(format!("{tag} {cmd}\r\n").as_bytes()).unwrap();
        let mut all = String::new();
        loop {
            let mut l = String::new();
            assert!(r.read_line(&mut l).unwrap() > 0, "IMAP closed");
            all.push_str(&l);
            if l.starts_with(&format!("{tag} ")) {
                return all;
            }
        }
    };
    let all = tokio::task::block_in_place(|| {
        imap_cmd("a", &format!("LOGIN {USER} {PW}"));
        imap_cmd("b", "SELECT INBOX")
    });
    assert!(all.contains("* 2 EXISTS"), "{all}");
    let mut c = Pop3::login(w.pop3).await;
    assert!(c.cmd("DELE 1").await.starts_with("+OK"));
    assert!(c.cmd("QUIT").await.starts_with("+OK"));
    let all = tokio::task::block_in_place(|| imap_cmd("c", "NOOP"));
    assert!(all.contains("* 1 EXPUNGE"), "{all}");
    // Now IMAP expunges during a POP3 session.
    deliver_n(w.mx, 1).await;
    let mut c = Pop3::login(w.pop3).await;
    assert_eq!(c.stat().await.0, 2);
    let all = tokio::task::block_in_place(|| {
        imap_cmd("d", "NOOP");
        imap_cmd("e", "STORE 2 +FLAGS (\\Deleted)");
        imap_cmd("f", "EXPUNGE")
    });
    assert!(all.contains("* 2 EXPUNGE"), "{all}");
    let r = c.cmd("RETR 2").await;
    assert!(r.starts_with("-ERR [SYS/PERM]"), "{r}");
    let (_, body) = c.multi("RETR 1").await;
    assert!(
        String::from_utf8(body)
            .unwrap()
            .contains("Subject: message 2")
    );
    // Marking it deleted is harmless: UPDATE skips what is gone.
    assert!(c.cmd("DELE 2").await.starts_with("+OK"));
    assert_eq!(c.cmd("QUIT").await, "+OK Logging out (1 messages left)\r\n");
    w.stop().await;
}
