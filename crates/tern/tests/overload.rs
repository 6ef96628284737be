//! Issue 17: under a flood of idle connections a legitimate client still
//! gets in. Stress mode (short timeouts), eviction of the idlest session
//! when the server is full (never one in a transaction), and the
//! out-of-descriptors answer. Small numbers, bounded in time.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::{Raw, TestServer};

const FLOOD: &str = "[limits]\nmax_connections = 20\nmax_connections_per_ip = 100\n\
    max_connections_per_network = 100\nrate_limit_exceptions = []\n\
    [limits.abuse.connections_per_ip]\nlimit = 0\nwindow = \"1m\"\n\
    [limits.stress]\nthreshold = 50\ncommand_timeout = \"2s\"\n";

/// `n` connections that read the greeting and then say nothing.
fn idle_flood(addr: SocketAddr, n: usize) -> Vec<Raw> {
    (0..n)
        .map(|i| {
            let mut c = Raw::connect(addr);
            let g = c.reply();
            assert!(g.starts_with("220 "), "idle connection {i}: {g}");
            c
        })
        .collect()
}

fn send_one(addr: SocketAddr) -> (String, Duration) {
    let started = Instant::now();
    let mut c = Raw::connect(addr);
    let g = c.reply();
    assert!(g.starts_with("220 "), "legitimate client's greeting: {g}");
    assert!(c.cmd("EHLO legit.test").starts_with("250"));
    let r = c.send_mail(
        "someone@legit.test",
        "alice@example.test",
        "Subject: hello\r\n\r\nI am legitimate.\r\n",
    );
    (r, started.elapsed())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_legitimate_client_gets_in_past_a_full_server_of_idle_connections() {
    let srv = TestServer::start_with("", FLOOD).await;
    let addr = srv.addr;
    let maildir = srv.data().join("mail/example.test/alice/new");
    tokio::task::spawn_blocking(move || {
        // A client in the middle of a transaction before the flood.
        let mut busy = Raw::greeted(addr);
        assert!(busy.cmd("EHLO busy.test").starts_with("250"));
        assert!(busy.cmd("MAIL FROM:<busy@legit.test>").starts_with("250"));
        // The flood fills every other slot.
        let mut idle = idle_flood(addr, 19);
        // The server is full: a newcomer takes the slot of the idlest idle
        // connection, and sends its message.
        let (r, took) = send_one(addr);
        assert!(r.starts_with("250"), "{r}");
        assert!(took < Duration::from_secs(2), "{took:?}");
        // Exactly one idle connection was told why, the oldest one.
        let r = idle[0].reply();
        assert!(r.starts_with("421 4.7.0 "), "{r}");
        assert!(r.contains("too many connections"), "{r}");
        // Again and again: every newcomer gets in.
        for _ in 0..5 {
            let (r, _) = send_one(addr);
            assert!(r.starts_with("250"), "{r}");
        }
        // The transaction in progress was never evicted.
        assert!(busy.cmd("RCPT TO:<bob@example.test>").starts_with("250"));
        assert!(busy.cmd("DATA").starts_with("354"));
        busy.send(b"Subject: busy\r\n\r\nstill here\r\n.\r\n");
        assert!(busy.reply().starts_with("250"));
        // Stress mode: idle connections are closed after the short command
        // timeout (2 s), not the normal 300 s, until the server is below
        // the end of stress (80 % of 10 sessions): so at least 12 of the
        // 20 sessions go within seconds.
        let deadline = Instant::now() + Duration::from_secs(8);
        let mut closed = 1; // idle[0], evicted above
        for c in idle.iter_mut().skip(1) {
            let left = deadline.saturating_duration_since(Instant::now());
            c.set_read_timeout(left.max(Duration::from_millis(10)));
            let r = c.reply();
            if r.starts_with("421 ") {
                closed += 1;
            }
        }
        assert!(
            closed >= 12,
            "only {closed} idle connections closed under stress"
        );
        // 6 legitimate messages for alice (the busy one went to bob).
        assert_eq!(common::wait_for_mail_in(&maildir, 6).len(), 6);
    })
    .await
    .unwrap();
    let _ = srv.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_server_of_transactions_refuses_the_newcomer() {
    let srv = TestServer::start_with(
        "",
        "[limits]\nmax_connections = 3\nmax_connections_per_ip = 100\n\
         rate_limit_exceptions = []\n[limits.stress]\nthreshold = 0\n",
    )
    .await;
    let addr = srv.addr;
    tokio::task::spawn_blocking(move || {
        let mut held: Vec<Raw> = (0..3)
            .map(|_| {
                let mut c = Raw::greeted(addr);
                assert!(c.cmd("EHLO busy.test").starts_with("250"));
                assert!(c.cmd("MAIL FROM:<busy@legit.test>").starts_with("250"));
                c
            })
            .collect();
        // Every slot is in a transaction: nobody is evicted, the newcomer
        // is refused.
        let mut c = Raw::connect(addr);
        let r = c.reply();
        assert!(r.starts_with("421 4.7.0 "), "{r}");
        assert!(r.contains("too many connections"), "{r}");
        for h in &mut held {
            assert!(h.cmd("RSET").starts_with("250"));
        }
    })
    .await
    .unwrap();
    let _ = srv.shutdown().await;
}

/// Out of file descriptors, the accept loop stays alive and answers the
/// clients it cannot serve with 421 instead of leaving them hanging. The
/// daemon runs under `prlimit` with a hard limit of 64 descriptors.
#[test]
fn out_of_descriptors_a_client_gets_421_and_the_server_goes_on() {
    if std::process::Command::new("prlimit")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("skipped: prlimit (util-linux) is not installed");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let addr = common::free_loopback_addr();
    let config = dir.path().join("tern.toml");
    std::fs::write(
        &config,
        format!(
            "hostname = \"mx.example.test\"\ndata_dir = {:?}\n\
             [[listener]]\naddress = \"{addr}\"\nrole = \"mx\"\n\
             [domains.\"example.test\"]\nmailboxes = [\"alice\"]\n\
             [dns]\nnameservers = [\"127.0.0.1:9\"]\n[mail_auth]\nenabled = false\n\
             [trace]\nenabled = false\n",
            dir.path().join("data")
        ),
    )
    .unwrap();
    let log = std::fs::File::create(dir.path().join("tern.log")).unwrap();
    let mut child = std::process::Command::new("prlimit")
        .arg("--nofile=64:64")
        .arg(env!("CARGO_BIN_EXE_tern"))
        .args(["serve", "--allow-root", "--config"])
        .arg(&config)
        .stdout(std::process::Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(addr).is_err() {
        assert!(Instant::now() < deadline, "tern did not start listening");
        std::thread::sleep(Duration::from_millis(20));
    }
    // Hold more connections than there are descriptors.
    let mut greeted = Vec::new();
    let mut refused = 0;
    for _ in 0..80 {
        let Some(mut c) = Raw::try_connect(addr) else {
            break;
        };
        c.set_read_timeout(Duration::from_secs(5));
        let r = c.reply();
        if r.starts_with("220 ") {
            greeted.push(c);
        } else if r.starts_with("421 4.3.2 ") {
            refused += 1;
        }
    }
    assert!(refused > 0, "{} greeted, none refused", greeted.len());
    // The server is still there: once descriptors are free again, a client
    // is served.
    drop(greeted);
    std::thread::sleep(Duration::from_millis(500));
    let (r, _) = send_one(addr);
    assert!(r.starts_with("250"), "{r}");
    let _ = child.kill();
    let _ = child.wait();
    let log = std::fs::read_to_string(dir.path().join("tern.log")).unwrap();
    assert!(log.contains("out of file descriptors"), "{log}");
}

/// The same rule on IMAP: under stress a connection that has not logged in
/// gets the short command timeout (2 s here), not IMAP's minute.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_stress_an_imap_client_that_does_not_log_in_leaves_fast() {
    let srv = TestServer::start_with(
        "",
        "[[listener]]\naddress = \"127.0.0.1:0\"\nrole = \"imap\"\n\
         [limits]\nmax_connections = 10\n\
         [limits.stress]\nthreshold = 10\ncommand_timeout = \"2s\"\n",
    )
    .await;
    let imap = srv.running.as_ref().unwrap().addrs()[1];
    tokio::task::spawn_blocking(move || {
        use std::io::{BufRead, BufReader};
        let s = std::net::TcpStream::connect(imap).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let mut r = BufReader::new(s);
        let mut line = String::new();
        r.read_line(&mut line).unwrap();
        assert!(line.starts_with("* OK"), "{line}");
        let started = Instant::now();
        // Say nothing: the server closes (with or without a BYE).
        loop {
            line.clear();
            match r.read_line(&mut line) {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
        let took = started.elapsed();
        assert!(
            took < Duration::from_secs(10),
            "closed after {took:?}, not the stress timeout"
        );
    })
    .await
    .unwrap();
    let _ = srv.shutdown().await;
}

/// A full server evicts an IMAP or POP3 connection that has not logged in
/// for a newcomer, and tells it why before closing (`* BYE [UNAVAILABLE]`,
/// `-ERR [SYS/TEMP]`) instead of dropping it silently.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_evicted_imap_or_pop3_client_is_told_why() {
    let srv = TestServer::start_with(
        "",
        "[[listener]]\naddress = \"127.0.0.1:0\"\nrole = \"imap\"\n\
         [[listener]]\naddress = \"127.0.0.1:0\"\nrole = \"pop3\"\n\
         [limits]\nmax_connections = 6\nmax_connections_per_ip = 100\n\
         max_connections_per_network = 100\nrate_limit_exceptions = []\n\
         reserved_connections = 0\n\
         [limits.abuse.connections_per_ip]\nlimit = 0\nwindow = \"1m\"\n\
         [limits.stress]\nthreshold = 100\n",
    )
    .await;
    let addrs = srv.running.as_ref().unwrap().addrs().to_vec();
    let (imap, pop3) = (addrs[1], addrs[2]);
    tokio::task::spawn_blocking(move || {
        use std::io::{BufRead, BufReader};
        let open = |addr: SocketAddr, greeting: &str| {
            let s = std::net::TcpStream::connect(addr).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let mut r = BufReader::new(s);
            let mut line = String::new();
            r.read_line(&mut line).unwrap();
            assert!(line.starts_with(greeting), "{line}");
            r
        };
        // Every slot: three IMAP and three POP3 clients that say nothing.
        let mut idle: Vec<(BufReader<std::net::TcpStream>, &str)> = Vec::new();
        for _ in 0..3 {
            idle.push((open(imap, "* OK"), "* BYE [UNAVAILABLE]"));
            idle.push((open(pop3, "+OK"), "-ERR [SYS/TEMP]"));
        }
        // Two newcomers: two of the idle ones make room, each told why.
        let _new_imap = open(imap, "* OK");
        let _new_pop3 = open(pop3, "+OK");
        let mut told = Vec::new();
        for (r, goodbye) in &mut idle {
            r.get_ref()
                .set_read_timeout(Some(Duration::from_millis(1500)))
                .unwrap();
            let mut line = String::new();
            match r.read_line(&mut line) {
                Ok(n) if n > 0 => {
                    assert!(line.starts_with(*goodbye), "{line}");
                    // ... and then closed.
                    line.clear();
                    assert_eq!(r.read_line(&mut line).unwrap_or(0), 0, "{line}");
                    told.push(*goodbye);
                }
                _ => {}
            }
        }
        assert_eq!(told.len(), 2, "{told:?}");
    })
    .await
    .unwrap();
    let _ = srv.shutdown().await;
}
