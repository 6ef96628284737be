//! Submission and TLS end to end (issue 3): the real server with MX,
//! submission (STARTTLS), submissions (implicit TLS) and a trusted-loopback
//! listener, a users file written by `tern-users`, and clients speaking
//! TLS through rustls (ring) and AUTH through lettre.

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use common::{read_maildir, wait_for_mail_in};
use lettre::transport::smtp::authentication::{Credentials, Mechanism};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

const ALICE_PW: &str = "alice-secret-pw";
const BOB_PW: &str = "bob-secret-pw";

struct Srv {
    running: Option<tern::Running>,
    dir: tempfile::TempDir,
    mx: SocketAddr,
    submission: SubmissionAddrs,
}

struct SubmissionAddrs {
    starttls: SocketAddr,
    implicit: SocketAddr,
    plaintext: SocketAddr,
}

fn cheap() -> tern_users::AddOptions {
    tern_users::AddOptions {
        cram_md5: true,
        hash_params: tern_users::HashParams {
            memory_kib: 1024,
            passes: 1,
            lanes: 1,
        },
        scram_iterations: 4096,
    }
}

impl Srv {
    async fn start(extra: &str) -> Srv {
        let dir = tempfile::tempdir().unwrap();
        let users = dir.path().join("users.toml");
        tern_users::add_user(&users, "alice@example.test", ALICE_PW, &cheap()).unwrap();
        tern_users::add_user(&users, "bob@example.test", BOB_PW, &cheap()).unwrap();
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
[[listener]]
address = "127.0.0.1:0"
role = "submissions"
[[listener]]
address = "127.0.0.1:0"
role = "submission"
plaintext_auth = true
[auth]
users_file = {users:?}
[domains."example.test"]
mailboxes = ["alice", "bob"]
aliases = {{ info = ["alice", "bob"], abuse = ["alice"] }}
[dns]
nameservers = ["127.0.0.1:9"]
[mail_auth]
enabled = false
[limits.abuse.tarpit]
initial_delay = "0s"
{extra}
"#,
            data = dir.path().join("data"),
        );
        let config = tern::Config::parse(&text).expect("test config");
        let running = tern::start(&config).await.expect("server starts");
        let a = running.addrs().to_vec();
        Srv {
            running: Some(running),
            dir,
            mx: a[0],
            submission: SubmissionAddrs {
                starttls: a[1],
                implicit: a[2],
                plaintext: a[3],
            },
        }
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn new_dir(&self, user: &str) -> PathBuf {
        self.data().join("mail/example.test").join(user).join("new")
    }

    fn connector(&self) -> TlsConnector {
        connector(&self.data().join("tls/selfsigned.crt"))
    }

    async fn shutdown(mut self) -> tempfile::TempDir {
        if let Some(r) = self.running.take() {
            r.shutdown().await;
        }
        self.dir
    }
}

fn connector(cert: &Path) -> TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(cert).unwrap() {
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

enum Stream {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

/// A byte-exact SMTP client that can switch to TLS.
struct Client {
    stream: Option<Stream>,
    buf: Vec<u8>,
}

impl Client {
    async fn connect(addr: SocketAddr) -> Client {
        let tcp = TcpStream::connect(addr).await.unwrap();
        let mut c = Client {
            stream: Some(Stream::Plain(tcp)),
            buf: Vec::new(),
        };
        let g = c.reply().await;
        assert!(g.starts_with("220 "), "{g}");
        c
    }

    async fn connect_tls(addr: SocketAddr, tls: &TlsConnector) -> Client {
        let tcp = TcpStream::connect(addr).await.unwrap();
        let name = ServerName::try_from("mx.example.test").unwrap();
        let s = tls
            .connect(name, tcp)
            .await
            .expect("implicit TLS handshake");
        let mut c = Client {
            stream: Some(Stream::Tls(Box::new(s))),
            buf: Vec::new(),
        };
        let g = c.reply().await;
        assert!(g.starts_with("220 "), "{g}");
        c
    }

    async fn send(&mut self, bytes: &[u8]) {
        match self.stream.as_mut().unwrap() {
            Stream::Plain(s) => s.write_all(bytes).await.unwrap(),
            Stream::Tls(s) => {
                s.write_all(bytes).await.unwrap();
                s.flush().await.unwrap();
            }
        }
    }

    /// One complete reply; "" at EOF.
    async fn reply(&mut self) -> String {
        loop {
            if let Some(end) = reply_end(&self.buf) {
                let r: Vec<u8> = self.buf.drain(..end).collect();
                return String::from_utf8_lossy(&r).into_owned();
            }
            let mut chunk = [0u8; 4096];
            let read = tokio::time::timeout(Duration::from_secs(15), async {
                match self.stream.as_mut().unwrap() {
                    Stream::Plain(s) => s.read(&mut chunk).await,
                    Stream::Tls(s) => s.read(&mut chunk).await,
                }
            })
            .await
            .expect("reply within 15 s");
            match read {
                Ok(0) | Err(_) => {
                    return String::from_utf8_lossy(&std::mem::take(&mut self.buf)).into_owned();
                }
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
            }
        }
    }

    async fn cmd(&mut self, line: &str) -> String {
        self.send(format!("{line}\r\n").as_bytes()).await;
        self.reply().await
    }

    async fn starttls(&mut self, tls: &TlsConnector) {
        let r = self.cmd("STARTTLS").await;
        assert!(r.starts_with("220 2.0.0"), "{r}");
        self.handshake(tls).await;
    }

    async fn handshake(&mut self, tls: &TlsConnector) {
        assert!(
            self.buf.is_empty(),
            "plaintext left after the 220: {:?}",
            self.buf
        );
        let Some(Stream::Plain(tcp)) = self.stream.take() else {
            panic!("already TLS")
        };
        let name = ServerName::try_from("mx.example.test").unwrap();
        let s = tls.connect(name, tcp).await.expect("STARTTLS handshake");
        self.stream = Some(Stream::Tls(Box::new(s)));
    }

    async fn auth_plain(&mut self, user: &str, pw: &str) -> String {
        let token = B64.encode(format!("\0{user}\0{pw}"));
        self.cmd(&format!("AUTH PLAIN {token}")).await
    }

    async fn send_mail(&mut self, from: &str, to: &str, body: &str) -> String {
        let r = self.cmd(&format!("MAIL FROM:<{from}>")).await;
        if !r.starts_with("250") {
            return r;
        }
        let r = self.cmd(&format!("RCPT TO:<{to}>")).await;
        if !r.starts_with("250") {
            return r;
        }
        let r = self.cmd("DATA").await;
        assert!(r.starts_with("354"), "{r}");
        self.send(format!("{body}\r\n.\r\n").as_bytes()).await;
        self.reply().await
    }
}

fn reply_end(buf: &[u8]) -> Option<usize> {
    let mut start = 0;
    while let Some(nl) = buf[start..].iter().position(|&b| b == b'\n') {
        let line = &buf[start..start + nl + 1];
        start += nl + 1;
        if line.len() < 5 || line[3] != b'-' {
            return Some(start);
        }
    }
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn starttls_auth_plain_and_delivery_with_esmtpsa() {
    let srv = Srv::start("").await;
    let tls = srv.connector();
    let mut c = Client::connect(srv.submission.starttls).await;
    let ehlo = c.cmd("EHLO client.test").await;
    assert!(ehlo.contains("STARTTLS"), "{ehlo}");
    assert!(
        !ehlo.contains("AUTH"),
        "AUTH must not be offered before TLS: {ehlo}"
    );
    c.starttls(&tls).await;
    let ehlo = c.cmd("EHLO client.test").await;
    assert!(ehlo.contains("AUTH PLAIN LOGIN"), "{ehlo}");
    assert!(!ehlo.contains("STARTTLS"), "{ehlo}");
    assert!(
        c.cmd("MAIL FROM:<alice@example.test>")
            .await
            .starts_with("530 5.7.0")
    );
    let r = c.auth_plain("alice@example.test", ALICE_PW).await;
    assert!(r.starts_with("235 2.7.0"), "{r}");
    // Authenticated: relaying to another domain is allowed (and queued).
    let r = c
        .send_mail(
            "alice@example.test",
            "friend@remote.test",
            "From: alice@example.test\r\nSubject: out\r\n\r\nhi",
        )
        .await;
    assert!(r.starts_with("250 2.0.0"), "{r}");
    let r = c
        .send_mail(
            "alice@example.test",
            "bob@example.test",
            "From: alice@example.test\r\nSubject: in\r\n\r\nhi",
        )
        .await;
    assert!(r.starts_with("250 2.0.0"), "{r}");
    let mail = wait_for_mail_in(&srv.new_dir("bob"), 1);
    let m = &mail[0];
    assert!(m.contains("with ESMTPSA"), "{m}");
    assert!(m.contains("(using TLSv1."), "{m}");
    // RFC 6409 section 8 fix-ups: Date and Message-ID were missing.
    assert!(m.contains("\r\nDate: "), "{m}");
    assert!(m.contains("\r\nMessage-ID: <"), "{m}");
    srv.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn implicit_tls_with_login_scram_and_cram() {
    let srv = Srv::start("").await;
    let tls = srv.connector();
    let mut c = Client::connect_tls(srv.submission.implicit, &tls).await;
    let ehlo = c.cmd("EHLO client.test").await;
    assert!(!ehlo.contains("STARTTLS"), "{ehlo}");
    assert!(
        ehlo.contains("SCRAM-SHA-256") && ehlo.contains("CRAM-MD5"),
        "{ehlo}"
    );
    let r = c.cmd("AUTH LOGIN").await;
    assert_eq!(r, format!("334 {}\r\n", B64.encode("Username:")));
    let r = c.cmd(&B64.encode("bob@example.test")).await;
    assert!(r.starts_with("334 "), "{r}");
    let r = c.cmd(&B64.encode(BOB_PW)).await;
    assert!(r.starts_with("235 2.7.0"), "{r}");
    let r = c
        .send_mail(
            "bob@example.test",
            "alice@example.test",
            "From: Bob <bob@example.test>\r\nSubject: tls\r\n\r\nhi",
        )
        .await;
    assert!(r.starts_with("250 2.0.0"), "{r}");
    assert!(wait_for_mail_in(&srv.new_dir("alice"), 1)[0].contains("with ESMTPSA"));
    srv.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lettre_authenticates_with_plain_and_login() {
    let srv = Srv::start("").await;
    for (mechanism, subject) in [
        (Mechanism::Plain, "via plain"),
        (Mechanism::Login, "via login"),
    ] {
        let transport = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous("127.0.0.1")
            .port(srv.submission.plaintext.port())
            .credentials(Credentials::new(
                "alice@example.test".into(),
                ALICE_PW.into(),
            ))
            .authentication(vec![mechanism])
            .build();
        let msg = Message::builder()
            .from("alice@example.test".parse().unwrap())
            .to("bob@example.test".parse().unwrap())
            .subject(subject)
            .body("hello".to_owned())
            .unwrap();
        let resp = transport.send(msg).await.expect("lettre sends");
        assert!(resp.is_positive());
    }
    let mail = wait_for_mail_in(&srv.new_dir("bob"), 2);
    assert!(
        mail.iter()
            .any(|m| m.contains("Subject: via plain") && m.contains("with ESMTPA"))
    );
    assert!(mail.iter().any(|m| m.contains("Subject: via login")));
    // Wrong credentials are refused.
    let transport = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous("127.0.0.1")
        .port(srv.submission.plaintext.port())
        .credentials(Credentials::new("alice@example.test".into(), "nope".into()))
        .authentication(vec![Mechanism::Plain])
        .build();
    let msg = Message::builder()
        .from("alice@example.test".parse().unwrap())
        .to("bob@example.test".parse().unwrap())
        .subject("x")
        .body("x".to_owned())
        .unwrap();
    let err = transport.send(msg).await.unwrap_err();
    assert!(
        err.to_string().contains("535") || err.is_permanent(),
        "{err}"
    );
    srv.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plaintext_pipelined_behind_starttls_is_discarded() {
    let srv = Srv::start("").await;
    let tls = srv.connector();
    for addr in [srv.submission.starttls, srv.mx] {
        let mut c = Client::connect(addr).await;
        assert!(c.cmd("EHLO client.test").await.starts_with("250"));
        // STARTTLS and an injected command in one write (CVE-2011-0411).
        c.send(b"STARTTLS\r\nNOOP\r\n").await;
        let r = c.reply().await;
        assert!(r.starts_with("220 2.0.0"), "{r}");
        // Give a buggy server time to answer the NOOP in plaintext.
        tokio::time::sleep(Duration::from_millis(100)).await;
        c.handshake(&tls).await;
        c.send(b"EHLO client.test\r\n").await;
        let first = c.reply().await;
        assert!(
            first.starts_with("250-mx.example.test"),
            "the first reply after the handshake must answer EHLO, not the injected NOOP: {first}"
        );
        // State was reset: a second STARTTLS is refused.
        assert!(c.cmd("STARTTLS").await.starts_with("503"));
    }
    srv.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn password_auth_without_tls_is_refused() {
    let srv = Srv::start("").await;
    let mut c = Client::connect(srv.submission.starttls).await;
    assert!(c.cmd("EHLO client.test").await.starts_with("250"));
    let r = c.auth_plain("alice@example.test", ALICE_PW).await;
    assert!(r.starts_with("538 5.7.11"), "{r}");
    assert!(
        c.cmd("MAIL FROM:<alice@example.test>")
            .await
            .starts_with("530 5.7.0")
    );
    // The MX listener offers no AUTH and relays nothing.
    let mut mx = Client::connect(srv.mx).await;
    let ehlo = mx.cmd("EHLO client.test").await;
    assert!(!ehlo.contains("AUTH"), "{ehlo}");
    assert!(
        mx.cmd("MAIL FROM:<alice@example.test>")
            .await
            .starts_with("250")
    );
    let r = mx.cmd("RCPT TO:<friend@remote.test>").await;
    assert!(r.starts_with("554 5.7.1"), "{r}");
    srv.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unauthenticated_submission_never_relays() {
    let srv = Srv::start("").await;
    let mut c = Client::connect(srv.submission.plaintext).await;
    assert!(c.cmd("EHLO client.test").await.starts_with("250"));
    // Without AUTH nothing at all is accepted on submission.
    assert!(
        c.cmd("MAIL FROM:<x@remote.test>")
            .await
            .starts_with("530 5.7.0")
    );
    // On the MX the relay tricks are refused.
    let mut mx = Client::connect(srv.mx).await;
    assert!(mx.cmd("EHLO client.test").await.starts_with("250"));
    assert!(mx.cmd("MAIL FROM:<x@remote.test>").await.starts_with("250"));
    for trick in [
        "<victim%remote.test@example.test>",
        "<\"victim@remote.test\"@example.test>",
        "<remote.test!victim@example.test>",
        "<@example.test:victim@remote.test>",
        "<victim@remote.test>",
    ] {
        let r = mx.cmd(&format!("RCPT TO:{trick}")).await;
        assert!(r.starts_with('5'), "{trick}: {r}");
    }
    srv.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sender_addresses_are_enforced() {
    let srv = Srv::start("").await;
    let mut c = Client::connect(srv.submission.plaintext).await;
    assert!(c.cmd("EHLO client.test").await.starts_with("250"));
    assert!(
        c.auth_plain("bob@example.test", BOB_PW)
            .await
            .starts_with("235")
    );
    let r = c.cmd("MAIL FROM:<alice@example.test>").await;
    assert!(r.starts_with("553 5.7.1"), "{r}");
    assert!(c.cmd("MAIL FROM:<>").await.starts_with("553 5.7.1"));
    // Envelope fine, From: header someone else's: refused at end of data.
    let r = c
        .send_mail(
            "bob@example.test",
            "alice@example.test",
            "From: alice@example.test\r\nSubject: spoof\r\n\r\nx",
        )
        .await;
    assert!(r.starts_with("553 5.7.1"), "{r}");
    // Plus-addresses of their own are theirs.
    let r = c
        .send_mail(
            "bob+lists@example.test",
            "alice@example.test",
            "From: bob@example.test\r\nSubject: ok\r\n\r\nx",
        )
        .await;
    assert!(r.starts_with("250 2.0.0"), "{r}");
    drop(c);
    // An alias that delivers only to alice is alice's to send as.
    let mut a = Client::connect(srv.submission.plaintext).await;
    assert!(a.cmd("EHLO client.test").await.starts_with("250"));
    assert!(
        a.auth_plain("alice@example.test", ALICE_PW)
            .await
            .starts_with("235")
    );
    let r = a
        .send_mail(
            "abuse@example.test",
            "bob@example.test",
            "From: abuse@example.test\r\nSubject: alias\r\n\r\nx",
        )
        .await;
    assert!(r.starts_with("250 2.0.0"), "{r}");
    // An alias that also reaches bob is not alice's alone.
    assert!(
        a.cmd("MAIL FROM:<info@example.test>")
            .await
            .starts_with("553 5.7.1")
    );
    let alice = wait_for_mail_in(&srv.new_dir("alice"), 1);
    assert!(alice[0].contains("Subject: ok"));
    srv.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn brute_force_is_throttled_then_blocked_without_user_enumeration() {
    let srv = Srv::start(
        "[limits.abuse.auth]\ninitial_delay = \"10ms\"\nmax_delay = \"20ms\"\nblock_ip_after = 3\n",
    )
    .await;
    let mut c = Client::connect(srv.submission.plaintext).await;
    assert!(c.cmd("EHLO client.test").await.starts_with("250"));
    let wrong = c.auth_plain("alice@example.test", "guess1").await;
    let unknown = c.auth_plain("nobody@example.test", "guess2").await;
    assert!(wrong.starts_with("535 5.7.8"), "{wrong}");
    assert_eq!(
        wrong, unknown,
        "unknown users and wrong passwords look alike"
    );
    assert!(
        c.auth_plain("alice@example.test", "guess3")
            .await
            .starts_with("535")
    );
    // Blocked now, even with the right password.
    let r = c.auth_plain("alice@example.test", ALICE_PW).await;
    assert!(r.starts_with("454 4.7.0"), "{r}");
    srv.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_user_message_rate_limit() {
    let srv = Srv::start("[limits.abuse.messages_per_user]\nlimit = 2\nwindow = \"1h\"\n").await;
    let mut c = Client::connect(srv.submission.plaintext).await;
    assert!(c.cmd("EHLO client.test").await.starts_with("250"));
    assert!(
        c.auth_plain("alice@example.test", ALICE_PW)
            .await
            .starts_with("235")
    );
    for _ in 0..2 {
        let r = c
            .send_mail(
                "alice@example.test",
                "bob@example.test",
                "From: alice@example.test\r\n\r\nx",
            )
            .await;
        assert!(r.starts_with("250 2.0.0"), "{r}");
    }
    let r = c.cmd("MAIL FROM:<alice@example.test>").await;
    assert!(r.starts_with("451 4.7.1"), "{r}");
    srv.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_added_while_running_can_log_in() {
    let srv = Srv::start("").await;
    let users = srv.dir.path().join("users.toml");
    tern_users::add_user(&users, "carol@example.test", "carol-pw", &cheap()).unwrap();
    let mut ok = false;
    for _ in 0..50 {
        let mut c = Client::connect(srv.submission.plaintext).await;
        assert!(c.cmd("EHLO client.test").await.starts_with("250"));
        if c.auth_plain("carol@example.test", "carol-pw")
            .await
            .starts_with("235")
        {
            ok = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(ok, "carol could not log in after being added");
    assert!(read_maildir(&srv.new_dir("carol")).is_empty());
    srv.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_rate_per_ip_is_limited() {
    // Loopback is exempt by default (like Postfix's $mynetworks): remove
    // the exemption to test the limit from 127.0.0.1.
    let srv = Srv::start("[limits]\nrate_limit_exceptions = []\n[limits.abuse.connections_per_ip]\nlimit = 3\nwindow = \"1m\"\n").await;
    for _ in 0..3 {
        let _ = Client::connect(srv.mx).await;
    }
    let tcp = TcpStream::connect(srv.mx).await.unwrap();
    let mut c = Client {
        stream: Some(Stream::Plain(tcp)),
        buf: Vec::new(),
    };
    let r = c.reply().await;
    assert!(r.starts_with("421 4.7.0"), "{r}");
    srv.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_user_recipient_rate_limit() {
    let srv = Srv::start("[limits.abuse.recipients_per_user]\nlimit = 2\nwindow = \"1h\"\n").await;
    let mut c = Client::connect(srv.submission.plaintext).await;
    assert!(c.cmd("EHLO client.test").await.starts_with("250"));
    assert!(
        c.auth_plain("alice@example.test", ALICE_PW)
            .await
            .starts_with("235")
    );
    assert!(
        c.cmd("MAIL FROM:<alice@example.test>")
            .await
            .starts_with("250")
    );
    assert!(c.cmd("RCPT TO:<bob@example.test>").await.starts_with("250"));
    assert!(c.cmd("RCPT TO:<x@remote.test>").await.starts_with("250"));
    let r = c.cmd("RCPT TO:<y@remote.test>").await;
    assert!(r.starts_with("451 4.7.1"), "{r}");
    srv.shutdown().await;
}

fn hs256_jwt(secret: &[u8], claims: &str) -> String {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
    let header = B64URL.encode(r#"{"alg":"HS256","typ":"JWT"}"#);
    let payload = B64URL.encode(claims);
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret);
    let sig = ring::hmac::sign(&key, format!("{header}.{payload}").as_bytes());
    format!("{header}.{payload}.{}", B64URL.encode(sig.as_ref()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oauthbearer_and_xoauth2_with_jwt() {
    let key_dir = tempfile::tempdir().unwrap();
    let secret = b"an HS256 secret shared with the identity provider";
    let key_file = key_dir.path().join("jwt.key");
    std::fs::write(&key_file, secret).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let users = dir.path().join("users.toml");
    tern_users::add_user(&users, "alice@example.test", ALICE_PW, &cheap()).unwrap();
    let text = format!(
        "hostname = \"mx.example.test\"\ndata_dir = {:?}\n[[listener]]\naddress = \"127.0.0.1:0\"\nrole = \"submission\"\nplaintext_auth = true\n[auth]\nusers_file = {users:?}\nmechanisms = [\"PLAIN\", \"OAUTHBEARER\", \"XOAUTH2\"]\n[auth.oauth]\nalgorithm = \"HS256\"\nkey_file = {key_file:?}\nissuer = \"https://idp.example.test\"\naudience = \"tern-mail\"\n[domains.\"example.test\"]\nmailboxes = [\"alice\", \"bob\"]\n[dns]\nnameservers = [\"127.0.0.1:9\"]\n[limits.abuse.tarpit]\ninitial_delay = \"0s\"\n[limits.abuse.auth]\ninitial_delay = \"1ms\"\nmax_delay = \"1ms\"\n",
        dir.path().join("data")
    );
    let running = tern::start(&tern::Config::parse(&text).unwrap())
        .await
        .unwrap();
    let addr = running.addrs()[0];
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let good = hs256_jwt(
        secret,
        &format!(
            r#"{{"iss":"https://idp.example.test","aud":"tern-mail","email":"alice@example.test","exp":{}}}"#,
            now + 600
        ),
    );
    let expired = hs256_jwt(
        secret,
        &format!(
            r#"{{"iss":"https://idp.example.test","aud":"tern-mail","email":"alice@example.test","exp":{}}}"#,
            now - 3600
        ),
    );
    let forged = hs256_jwt(
        b"not the secret",
        &format!(
            r#"{{"iss":"https://idp.example.test","aud":"tern-mail","email":"alice@example.test","exp":{}}}"#,
            now + 600
        ),
    );

    let mut c = Client::connect(addr).await;
    assert!(
        c.cmd("EHLO client.test")
            .await
            .contains("OAUTHBEARER XOAUTH2")
    );
    let ir = B64.encode(format!(
        "n,a=alice@example.test,\x01auth=Bearer {good}\x01\x01"
    ));
    let r = c.cmd(&format!("AUTH OAUTHBEARER {ir}")).await;
    assert!(r.starts_with("235 2.7.0"), "{r}");
    let r = c
        .send_mail(
            "alice@example.test",
            "bob@example.test",
            "From: alice@example.test\r\n\r\nvia token",
        )
        .await;
    assert!(r.starts_with("250 2.0.0"), "{r}");

    for bad in [&expired, &forged] {
        let mut c = Client::connect(addr).await;
        assert!(c.cmd("EHLO client.test").await.starts_with("250"));
        let ir = B64.encode(format!(
            "user=alice@example.test\x01auth=Bearer {bad}\x01\x01"
        ));
        let r = c.cmd(&format!("AUTH XOAUTH2 {ir}")).await;
        // XOAUTH2 answers with a JSON error challenge; the client sends an
        // empty line and gets the final failure.
        assert!(r.starts_with("334 "), "{r}");
        let r = c.cmd("").await;
        assert!(r.starts_with("535 5.7.8"), "{r}");
    }
    running.shutdown().await;
}
