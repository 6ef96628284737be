//! Shared helpers for Tern's integration tests: a real server on an
//! ephemeral port with its own data directory, a raw SMTP client, and
//! Maildir inspection.
#![allow(dead_code, unreachable_pub)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use tern::{Config, Running};

pub const BASE_CONFIG: &str = r#"
hostname = "mx.example.test"
[[listener]]
address = "127.0.0.1:0"
role = "mx"
[domains."example.test"]
mailboxes = ["alice", "bob"]
aliases = { info = ["alice", "bob"], fwd = ["someone@remote.test"] }
# Tests never query the machine's resolver: a closed loopback port answers
# every lookup with an error, so remote recipients are deferred.
[dns]
nameservers = ["127.0.0.1:9"]
# No DNS, so no SPF/DKIM/DMARC checks (tests/mailauth.rs has its own DNS).
[mail_auth]
enabled = false
"#;

pub struct TestServer {
    pub running: Option<Running>,
    pub addr: SocketAddr,
    pub dir: tempfile::TempDir,
}

impl TestServer {
    /// Starts a server on `BASE_CONFIG` plus `extra` TOML (top-level keys
    /// must come before the tables, so `extra_top` is inserted first).
    pub async fn start_with(extra_top: &str, extra: &str) -> TestServer {
        let dir = tempfile::tempdir().unwrap();
        let text = format!(
            "data_dir = {:?}\n{extra_top}\n{BASE_CONFIG}\n{extra}\n",
            dir.path().join("data")
        );
        let config = Config::parse(&text).expect("test config");
        let running = tern::start(&config).await.expect("server starts");
        let addr = running.addrs()[0];
        TestServer {
            running: Some(running),
            addr,
            dir,
        }
    }

    /// Like `start_with`, with the clock greylisting and the blocklist
    /// cache read (seconds since the epoch).
    pub async fn start_with_clock(
        extra_top: &str,
        extra: &str,
        clock: std::sync::Arc<dyn Fn() -> u64 + Send + Sync>,
    ) -> TestServer {
        let dir = tempfile::tempdir().unwrap();
        let text = format!(
            "data_dir = {:?}\n{extra_top}\n{BASE_CONFIG}\n{extra}\n",
            dir.path().join("data")
        );
        let config = Config::parse(&text).expect("test config");
        let running = tern::start_with_clock(&config, clock)
            .await
            .expect("server starts");
        let addr = running.addrs()[0];
        TestServer {
            running: Some(running),
            addr,
            dir,
        }
    }

    pub async fn start() -> TestServer {
        Self::start_with("", "").await
    }

    pub fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    pub fn maildir_new(&self, mailbox: &str) -> PathBuf {
        let (local, domain) = mailbox.split_once('@').unwrap();
        self.data()
            .join("mail")
            .join(domain)
            .join(local)
            .join("new")
    }

    /// Waits until `mailbox` holds exactly `n` messages in new/ and returns their contents.
    pub fn wait_for_mail(&self, mailbox: &str, n: usize) -> Vec<String> {
        wait_for_mail_in(&self.maildir_new(mailbox), n)
    }

    /// Stops the server gracefully; returns the temporary directory so
    /// callers can still inspect the data after the stop.
    pub async fn shutdown(mut self) -> tempfile::TempDir {
        if let Some(r) = self.running.take() {
            r.shutdown().await;
        }
        self.dir
    }
}

pub fn read_maildir(new: &Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(new) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for e in entries.flatten() {
        if let Ok(s) = std::fs::read(e.path()) {
            out.push(String::from_utf8_lossy(&s).into_owned());
        }
    }
    out
}

pub fn wait_for_mail_in(new: &Path, n: usize) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let msgs = read_maildir(new);
        if msgs.len() >= n || Instant::now() > deadline {
            assert_eq!(msgs.len(), n, "messages in {}", new.display());
            return msgs;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A blocking raw SMTP client for byte-exact tests.
pub struct Raw {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl Raw {
    pub fn connect(addr: SocketAddr) -> Raw {
        Raw::try_connect(addr).expect("connect")
    }

    pub fn try_connect(addr: SocketAddr) -> Option<Raw> {
        let s = TcpStream::connect(addr).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(15))).ok()?;
        Some(Raw {
            reader: BufReader::new(s.try_clone().ok()?),
            writer: s,
        })
    }

    /// How long `reply` waits before giving up (15 s by default).
    pub fn set_read_timeout(&self, d: Duration) {
        self.writer.set_read_timeout(Some(d)).unwrap();
    }

    /// Like `send`, but reports failure instead of panicking.
    pub fn try_send(&mut self, bytes: &[u8]) -> bool {
        self.writer.write_all(bytes).is_ok()
    }

    /// Connects and reads the greeting, which must be 220.
    pub fn greeted(addr: SocketAddr) -> Raw {
        let mut c = Raw::connect(addr);
        let g = c.reply();
        assert!(g.starts_with("220 "), "greeting: {g}");
        c
    }

    pub fn send(&mut self, bytes: &[u8]) {
        self.writer.write_all(bytes).unwrap();
    }

    /// Reads one complete (possibly multi-line) reply; "" on EOF.
    pub fn reply(&mut self) -> String {
        let mut all = String::new();
        loop {
            let mut line = String::new();
            match self.reader.read_line(&mut line) {
                Ok(0) | Err(_) => return all,
                Ok(_) => {}
            }
            all.push_str(&line);
            if line.len() < 4 || line.as_bytes()[3] != b'-' {
                return all;
            }
        }
    }

    /// Sends a command line and returns the reply.
    pub fn cmd(&mut self, line: &str) -> String {
        if !self.try_send(format!("{line}\r\n").as_bytes()) {
            return String::new();
        }
        self.reply()
    }

    /// Reads until EOF (the server closed).
    pub fn rest(&mut self) -> String {
        let mut s = String::new();
        let _ = self.reader.read_to_string(&mut s);
        s
    }

    /// EHLO + MAIL + RCPT + DATA + body; returns the final reply.
    pub fn send_mail(&mut self, from: &str, to: &str, body: &str) -> String {
        let r = self.cmd(&format!("MAIL FROM:<{from}>"));
        assert!(r.starts_with("250"), "MAIL: {r}");
        let r = self.cmd(&format!("RCPT TO:<{to}>"));
        assert!(r.starts_with("250"), "RCPT: {r}");
        let r = self.cmd("DATA");
        assert!(r.starts_with("354"), "DATA: {r}");
        self.send(body.as_bytes());
        self.send(b"\r\n.\r\n");
        self.reply()
    }
}

/// A loopback address with a port that was free a moment ago (for tests
/// that start the real binary and must put the port in its config).
pub fn free_loopback_addr() -> SocketAddr {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// Starts `tern serve --config CONFIG --allow-root` (the tests run as root
/// too) with stderr appended to `log` and `env` set, and waits until `addr`
/// accepts connections.
pub fn spawn_daemon(
    config: &Path,
    log: &Path,
    addr: SocketAddr,
    env: &[(&str, &str)],
) -> std::process::Child {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .unwrap();
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_tern"))
        .args(["serve", "--allow-root", "--config"])
        .arg(config)
        .envs(env.iter().copied())
        .stdout(std::process::Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while TcpStream::connect(addr).is_err() {
        assert!(Instant::now() < deadline, "tern did not start listening");
        std::thread::sleep(Duration::from_millis(20));
    }
    child
}

/// Sends `signal` (e.g. "-TERM", "-HUP") to the daemon.
pub fn signal(child: &std::process::Child, signal: &str) {
    let status = std::process::Command::new("kill")
        .args([signal, &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success(), "kill {signal} failed");
}

/// Adds `address` with `password` to the users file `users`, hashed with
/// argon2 parameters cheap enough for tests (1 MiB, one pass).
pub fn add_user(users: &Path, address: &str, password: &str) {
    tern_users::add_user(
        users,
        address,
        password,
        &tern_users::AddOptions {
            hash_params: tern_users::HashParams {
                memory_kib: 1024,
                passes: 1,
                lanes: 1,
            },
            scram_iterations: 4096,
            ..Default::default()
        },
    )
    .unwrap();
}

/// One HTTP/1.1 request with hyper's client: (status, content type, body).
pub async fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> (u16, String, String) {
    use http_body_util::BodyExt as _;
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(conn);
    let mut req = hyper::Request::builder().method(method).uri(path);
    if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("host")) {
        req = req.header("host", addr.to_string());
    }
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let req = req
        .body(http_body_util::Full::new(bytes::Bytes::copy_from_slice(
            body,
        )))
        .unwrap();
    let resp = sender.send_request(req).await.unwrap();
    let status = resp.status().as_u16();
    let ctype = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (status, ctype, String::from_utf8_lossy(&body).into_owned())
}

/// `GET path`.
pub async fn http_get(addr: SocketAddr, path: &str) -> (u16, String, String) {
    http(addr, "GET", path, &[], b"").await
}

/// The admin listener's `/metrics` page (OpenMetrics text).
pub async fn scrape_metrics(admin: SocketAddr) -> String {
    let (status, ctype, body) = http_get(admin, "/metrics").await;
    assert_eq!(status, 200);
    assert!(ctype.starts_with("application/openmetrics-text"), "{ctype}");
    assert!(body.ends_with("# EOF\n"));
    body
}

/// Polls `/metrics` (for up to 10 s: some counters move just after the
/// reply the client saw) until every series in `series` has moved since
/// `before` by exactly its number in `expected`; returns the page that
/// showed it. Panics with a table of what moved otherwise.
pub async fn wait_for_deltas(
    admin: SocketAddr,
    before: &str,
    series: &[&str],
    expected: &[f64],
) -> String {
    let value = |text: &str, s: &str| tern_net::metrics::sample(text, s).unwrap_or(0.0);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let after = scrape_metrics(admin).await;
        let deltas: Vec<f64> = series
            .iter()
            .map(|s| value(&after, s) - value(before, s))
            .collect();
        if deltas == expected {
            return after;
        }
        if Instant::now() > deadline {
            let table: Vec<String> = series
                .iter()
                .zip(&deltas)
                .zip(expected)
                .map(|((s, d), e)| format!("{s}: moved {d}, expected {e}"))
                .collect();
            panic!(
                "{}\n\n{}",
                table.join("\n"),
                tern_net::metrics::samples_only(&after)
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
