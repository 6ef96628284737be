//! IMAP end to end: a real Tern with an MX listener and IMAP listeners,
//! mail delivered over SMTP and read, flagged, searched, moved, appended
//! and expunged over IMAP; IDLE woken by a delivery; QRESYNC after a
//! reconnect; LOGIN refused before TLS; sessions per user bounded.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use common::Raw;

const PW: &str = "alice-imap-pw";

struct World {
    running: Option<tern::Running>,
    _dir: tempfile::TempDir,
    mx: SocketAddr,
    /// IMAP with `plaintext_auth` (loopback).
    imap: SocketAddr,
    /// IMAP without it: LOGIN needs STARTTLS first.
    imap_tls_only: SocketAddr,
}

impl World {
    async fn start(extra: &str) -> World {
        let dir = tempfile::tempdir().unwrap();
        let users = dir.path().join("users.toml");
        common::add_user(&users, "alice@example.test", PW);
        let text = format!(
            "hostname = \"mx.example.test\"\ndata_dir = {:?}\n\
             [[listener]]\naddress = \"127.0.0.1:0\"\nrole = \"mx\"\n\
             [[listener]]\naddress = \"127.0.0.1:0\"\nrole = \"imap\"\nplaintext_auth = true\n\
             [[listener]]\naddress = \"127.0.0.1:0\"\nrole = \"imap\"\n\
             [auth]\nusers_file = {users:?}\n\
             [domains.\"example.test\"]\nmailboxes = [\"alice\", \"bob\", \"carol\"]\n\
             [dns]\nnameservers = [\"127.0.0.1:9\"]\n[mail_auth]\nenabled = false\n{extra}\n",
            dir.path().join("data"),
        );
        let config = tern::Config::parse(&text).expect("test config");
        let running = tern::start(&config).await.expect("server starts");
        let a = running.addrs();
        World {
            mx: a[0],
            imap: a[1],
            imap_tls_only: a[2],
            running: Some(running),
            _dir: dir,
        }
    }

    async fn stop(mut self) {
        if let Some(r) = self.running.take() {
            r.shutdown().await;
        }
    }
}

/// A line-oriented IMAP client for byte-exact tests.
struct Imap {
    r: BufReader<TcpStream>,
    w: TcpStream,
    n: u32,
}

impl Imap {
    fn connect(addr: SocketAddr) -> (Imap, String) {
        let s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut c = Imap {
            r: BufReader::new(s.try_clone().unwrap()),
            w: s,
            n: 0,
        };
        let greeting = c.line();
        (c, greeting)
    }

    fn line(&mut self) -> String {
        let mut l = String::new();
        let _ = self.r.read_line(&mut l);
        // A literal: read its bytes too, as part of the line.
        if let Some(n) = l
            .trim_end()
            .strip_suffix('}')
            .and_then(|x| x.rsplit_once('{'))
            .and_then(|(_, n)| n.parse::<usize>().ok())
        {
            let mut buf = vec![0u8; n];
            std::io::Read::read_exact(&mut self.r, &mut buf).unwrap();
            l.push_str(&String::from_utf8_lossy(&buf));
            l.push_str(&self.line());
        }
        l
    }

    /// Sends a command; returns the untagged lines and the tagged one.
    fn cmd(&mut self, c: &str) -> (Vec<String>, String) {
        self.n += 1;
        let tag = format!("t{}", self.n);
        self.w
            .write_all(format!("{tag} {c}\r\n").as_bytes())
            .unwrap();
        let mut untagged = Vec::new();
        loop {
            let l = self.line();
            assert!(!l.is_empty(), "connection closed during {c}");
            if l.starts_with(&format!("{tag} ")) {
                return (untagged, l);
            }
            untagged.push(l);
        }
    }

    fn ok(&mut self, c: &str) -> Vec<String> {
        let (u, t) = self.cmd(c);
        assert!(t.contains(" OK"), "{c}: {t} {u:?}");
        u
    }

    fn login(addr: SocketAddr) -> Imap {
        let (mut c, _) = Imap::connect(addr);
        c.ok(&format!("LOGIN alice@example.test {PW}"));
        c
    }
}

fn deliver(mx: SocketAddr, subject: &str, body: &str) {
    let mut c = Raw::greeted(mx);
    assert!(c.cmd("EHLO client.test").starts_with("250"));
    let r = c.send_mail(
        "bob@else.test",
        "alice@example.test",
        &format!("From: Bob <bob@else.test>\r\nTo: alice@example.test\r\nSubject: {subject}\r\n\r\n{body}"),
    );
    assert!(r.starts_with("250"), "{r}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_flag_search_move_append_expunge() {
    let w = World::start("").await;
    let (mx, imap) = (w.mx, w.imap);
    tokio::task::spawn_blocking(move || {
        deliver(mx, "first", "Hello world\r\n");
        deliver(mx, "second", "The quick brown fox\r\n");
        let mut c = Imap::login(imap);
        // Special-use folders exist at the first login.
        let list = c.ok("LIST \"\" \"*\"").join("");
        for (attr, name) in [
            ("\\Sent", "Sent"),
            ("\\Trash", "Trash"),
            ("\\Junk", "Junk"),
            ("\\Drafts", "Drafts"),
            ("\\Archive", "Archive"),
        ] {
            assert!(list.contains(attr) && list.contains(name), "{list}");
        }
        let sel = c.ok("SELECT INBOX").join("");
        assert!(sel.contains("* 2 EXISTS"), "{sel}");
        assert!(sel.contains("[UIDVALIDITY "), "{sel}");
        let f = c
            .ok("FETCH 1:2 (UID FLAGS BODY.PEEK[HEADER.FIELDS (SUBJECT)] ENVELOPE)")
            .join("");
        assert!(
            f.contains("Subject: first") && f.contains("Subject: second"),
            "{f}"
        );
        assert!(f.contains("\"bob\" \"else.test\""), "{f}");
        // BODY[] (not PEEK) sets \Seen.
        let f = c.ok("FETCH 2 BODY[TEXT]").join("");
        assert!(f.contains("quick brown fox") && f.contains("\\Seen"), "{f}");
        let s = c.ok("UID SEARCH UNSEEN").join("");
        assert!(s.contains("* SEARCH 1\r\n"), "{s}");
        let s = c.ok("SEARCH TEXT \"brown fox\"").join("");
        assert!(s.contains("* SEARCH 2\r\n"), "{s}");
        // STORE, then MOVE to Trash with COPYUID and an EXPUNGE.
        let st = c.ok("STORE 1 +FLAGS (\\Flagged)").join("");
        assert!(st.contains("\\Flagged"), "{st}");
        let (u, t) = c.cmd("UID MOVE 1 Trash");
        assert!(t.contains("OK"), "{t}");
        let u = u.join("");
        assert!(u.contains("[COPYUID ") && u.contains("* 1 EXPUNGE"), "{u}");
        // APPEND to Sent answers APPENDUID.
        let msg = "From: alice@example.test\r\nSubject: mine\r\n\r\nsent\r\n";
        let (_, t) = c.cmd(&format!("APPEND Sent (\\Seen) {{{}+}}\r\n{msg}", msg.len()));
        assert!(t.contains("OK [APPENDUID "), "{t}");
        let st = c.ok("STATUS Sent (MESSAGES UNSEEN)").join("");
        assert!(st.contains("MESSAGES 1 UNSEEN 0"), "{st}");
        // \Deleted + EXPUNGE.
        c.ok("STORE 1 +FLAGS.SILENT (\\Deleted)");
        let e = c.ok("EXPUNGE").join("");
        assert!(e.contains("* 1 EXPUNGE"), "{e}");
        let st = c.ok("STATUS INBOX (MESSAGES)").join("");
        assert!(st.contains("MESSAGES 0"), "{st}");
        let t = c.ok("SELECT Trash").join("");
        assert!(t.contains("* 1 EXISTS"), "{t}");
        // Folders: create, rename, delete.
        c.ok("CREATE Projects/2026");
        c.ok("RENAME Projects/2026 Projects/Done");
        let l = c.ok("LIST \"\" \"Projects/*\"").join("");
        assert!(l.contains("Projects/Done"), "{l}");
        c.ok("DELETE Projects/Done");
        c.ok("LOGOUT");
    })
    .await
    .unwrap();
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_sees_a_delivery_within_a_second_and_qresync_after_reconnect() {
    let w = World::start("").await;
    let (mx, imap) = (w.mx, w.imap);
    tokio::task::spawn_blocking(move || {
        deliver(mx, "one", "1\r\n");
        deliver(mx, "two", "2\r\n");
        let mut c = Imap::login(imap);
        c.ok("ENABLE QRESYNC");
        let sel = c.ok("SELECT INBOX").join("");
        let uidvalidity: u32 = sel
            .split("[UIDVALIDITY ")
            .nth(1)
            .and_then(|r| r.split(']').next())
            .and_then(|n| n.parse().ok())
            .unwrap();
        let modseq: u64 = sel
            .split("[HIGHESTMODSEQ ")
            .nth(1)
            .and_then(|r| r.split(']').next())
            .and_then(|n| n.parse().ok())
            .unwrap();
        c.w.write_all(b"i1 IDLE\r\n").unwrap();
        assert!(c.line().starts_with("+ "));
        let t0 = Instant::now();
        deliver(mx, "three", "3\r\n");
        let l = c.line();
        assert!(l.contains("* 3 EXISTS"), "{l}");
        assert!(
            t0.elapsed() < Duration::from_millis(1000),
            "{:?}",
            t0.elapsed()
        );
        c.w.write_all(b"DONE\r\n").unwrap();
        // (an IMAP4rev1 session also hears `* 3 RECENT`: the message is new to it)
        let mut l = c.line();
        while l.starts_with("* ") {
            l = c.line();
        }
        assert!(l.starts_with("i1 OK"), "{l}");
        // Expunge the first message, then reconnect with QRESYNC.
        c.ok("UID STORE 1 +FLAGS.SILENT (\\Deleted)");
        c.ok("UID EXPUNGE 1");
        c.ok("LOGOUT");
        let mut c = Imap::login(imap);
        c.ok("ENABLE QRESYNC");
        let sel = c
            .ok(&format!("SELECT INBOX (QRESYNC ({uidvalidity} {modseq}))"))
            .join("");
        assert!(sel.contains("* VANISHED (EARLIER) 1"), "{sel}");
        assert!(sel.contains("UID 3"), "{sel}");
        c.ok("LOGOUT");
    })
    .await
    .unwrap();
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_needs_tls_and_sessions_per_user_are_bounded() {
    let w = World::start("[imap]\nmax_sessions_per_user = 2\n").await;
    let (imap, tls_only) = (w.imap, w.imap_tls_only);
    tokio::task::spawn_blocking(move || {
        let (mut c, greeting) = Imap::connect(tls_only);
        assert!(greeting.contains("LOGINDISABLED"), "{greeting}");
        let (_, t) = c.cmd(&format!("LOGIN alice@example.test {PW}"));
        assert!(t.contains("NO [PRIVACYREQUIRED]"), "{t}");
        // Wrong password: NO, the session goes on.
        let (mut c, _) = Imap::connect(imap);
        let (_, t) = c.cmd("LOGIN alice@example.test wrong");
        assert!(t.contains(" NO"), "{t}");
        let _a = Imap::login(imap);
        let _b = Imap::login(imap);
        let (mut c, _) = Imap::connect(imap);
        c.w.write_all(format!("x LOGIN alice@example.test {PW}\r\n").as_bytes())
            .unwrap();
        let mut all = String::new();
        loop {
            let l = c.line();
            if l.is_empty() {
                break;
            }
            all.push_str(&l);
        }
        assert!(all.contains("* BYE [LIMIT]"), "{all}");
    })
    .await
    .unwrap();
    w.stop().await;
}

/// COMPRESS=DEFLATE (RFC 4978): after the OK, both directions are raw
/// deflate streams.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compress_deflate_both_ways() {
    use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress};
    use std::io::Read as _;
    let w = World::start("").await;
    let (mx, imap) = (w.mx, w.imap);
    tokio::task::spawn_blocking(move || {
        deliver(mx, "packed", "squeeze me\r\n");
        let mut c = Imap::login(imap);
        let caps = c.ok("CAPABILITY").join("");
        assert!(caps.contains("COMPRESS=DEFLATE"), "{caps}");
        c.ok("COMPRESS DEFLATE");
        let mut z = Compress::new(Compression::default(), false);
        let mut packed = Vec::with_capacity(256);
        z.compress_vec(
            b"z1 SELECT INBOX\r\nz2 FETCH 1 BODY[TEXT]\r\n",
            &mut packed,
            FlushCompress::Sync,
        )
        .unwrap();
        c.w.write_all(&packed).unwrap();
        let mut d = Decompress::new(false);
        let mut plain: Vec<u8> = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut raw = [0u8; 4096];
        while !String::from_utf8_lossy(&plain).contains("z2 OK") {
            assert!(
                Instant::now() < deadline,
                "{}",
                String::from_utf8_lossy(&plain)
            );
            let n = c.r.read(&mut raw).unwrap();
            assert!(n > 0, "closed: {}", String::from_utf8_lossy(&plain));
            plain.reserve(64 * 1024);
            d.decompress_vec(&raw[..n], &mut plain, FlushDecompress::Sync)
                .unwrap();
        }
        let text = String::from_utf8_lossy(&plain);
        assert!(
            text.contains("* 1 EXISTS") && text.contains("squeeze me"),
            "{text}"
        );
    })
    .await
    .unwrap();
    w.stop().await;
}

/// About `n` bytes of `c` in lines of 80.
fn lines(c: char, n: usize) -> String {
    let line = format!("{}\r\n", c.to_string().repeat(78));
    line.repeat(n / 80)
}

/// The quota is enforced on SMTP delivery: 452 4.2.2 at RCPT when the
/// declared SIZE does not fit, at the end of data when the message does
/// not; a queued message for a full mailbox is deferred with 452 4.2.2
/// and, when the mailbox stays full, the sender gets a failure notice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quota_on_smtp_delivery_452_then_a_failure_notice() {
    let w = World::start("[imap]\nquota = 4000\n[queue]\nintervals = [\"1s\"]\nmax_age = \"3s\"\n")
        .await;
    let mx = w.mx;
    let data = w._dir.path().join("data/mail/example.test");
    tokio::task::spawn_blocking(move || {
        let mut c = Raw::greeted(mx);
        assert!(c.cmd("EHLO client.test").starts_with("250"));
        // RCPT: the declared size does not fit.
        assert!(
            c.cmd("MAIL FROM:<carol@example.test> SIZE=5000")
                .starts_with("250")
        );
        let r = c.cmd("RCPT TO:<alice@example.test>");
        assert!(r.starts_with("452 4.2.2 "), "{r}");
        assert!(c.cmd("RSET").starts_with("250"));
        // End of data: no SIZE, the message itself does not fit.
        let big = format!("Subject: big\r\n\r\n{}\r\n", lines('x', 4500));
        let r = c.send_mail("carol@example.test", "alice@example.test", &big);
        assert!(r.starts_with("452 4.2.2 "), "{r}");
        // Nothing of it stayed behind.
        let files = |m: &str| {
            ["new", "cur", "tmp"]
                .iter()
                .map(|d| std::fs::read_dir(data.join(m).join(d)).map_or(0, |e| e.count()))
                .sum::<usize>()
        };
        assert_eq!(files("alice"), 0);
        // 2,500 bytes fit.
        let mid = format!("Subject: mid\r\n\r\n{}\r\n", lines('y', 2500));
        let r = c.send_mail("carol@example.test", "alice@example.test", &mid);
        assert!(r.starts_with("250"), "{r}");
        // Queued (two recipients): bob gets it, alice is full.
        assert!(c.cmd("MAIL FROM:<carol@example.test>").starts_with("250"));
        assert!(c.cmd("RCPT TO:<alice@example.test>").starts_with("250"));
        assert!(c.cmd("RCPT TO:<bob@example.test>").starts_with("250"));
        assert!(c.cmd("DATA").starts_with("354"));
        c.send(format!("Subject: both\r\n\r\n{}\r\n.\r\n", lines('z', 1500)).as_bytes());
        assert!(c.reply().starts_with("250"));
        assert!(c.cmd("QUIT").starts_with("221"));
        let bob = common::wait_for_mail_in(&data.join("bob/new"), 1);
        assert!(bob[0].contains("Subject: both"));
        // Carol is told alice's copy failed: mailbox full.
        let notice = common::wait_for_mail_in(&data.join("carol/new"), 1);
        assert!(notice[0].contains("alice@example.test"), "{}", notice[0]);
        assert!(notice[0].contains("4.2.2"), "{}", notice[0]);
        assert_eq!(files("alice"), 1);
    })
    .await
    .unwrap();
    w.stop().await;
}
