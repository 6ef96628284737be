//! IMAP and POP3 logins are counted in `tern_auth_total` with the SASL
//! mechanism the session ran, as SMTP's are: `AUTHENTICATE`/`AUTH` with
//! the mechanism named, `LOGIN` and `USER`/`PASS` as `PLAIN` (the exchange
//! the sessions run for them), never `unknown`. (The counters are one set
//! per process, so this binary holds this one test and nothing else.)

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use base64::Engine as _;

const PW: &str = "alice-auth-pw";
const USER: &str = "alice@example.test";

fn b64(s: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(s)
}

/// A line client: IMAP or POP3 on a plaintext loopback listener.
struct Lines {
    r: BufReader<TcpStream>,
    w: TcpStream,
}

impl Lines {
    /// Connects and reads the greeting.
    fn connect(addr: SocketAddr) -> Lines {
        let s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut c = Lines {
            r: BufReader::new(s.try_clone().unwrap()),
            w: s,
        };
        let greeting = c.line();
        assert!(greeting.contains("OK"), "{greeting}");
        c
    }

    fn line(&mut self) -> String {
        let mut l = String::new();
        self.r.read_line(&mut l).unwrap();
        assert!(!l.is_empty(), "connection closed");
        l
    }

    /// Sends `line`; returns the first reply line that does not start
    /// with `*` (IMAP untagged data).
    fn send(&mut self, line: &str) -> String {
        self.w.write_all(format!("{line}\r\n").as_bytes()).unwrap();
        loop {
            let l = self.line();
            if !l.starts_with("* ") {
                return l;
            }
        }
    }
}

const SERIES: &[&str] = &[
    "tern_auth_total{protocol=\"imap\",mechanism=\"PLAIN\",result=\"success\"}",
    "tern_auth_total{protocol=\"imap\",mechanism=\"PLAIN\",result=\"failure\"}",
    "tern_auth_total{protocol=\"imap\",mechanism=\"LOGIN\",result=\"success\"}",
    "tern_auth_total{protocol=\"pop3\",mechanism=\"PLAIN\",result=\"success\"}",
    "tern_auth_total{protocol=\"pop3\",mechanism=\"PLAIN\",result=\"failure\"}",
    "tern_auth_total{protocol=\"pop3\",mechanism=\"LOGIN\",result=\"success\"}",
    "tern_auth_total{protocol=\"imap\",mechanism=\"unknown\",result=\"success\"}",
    "tern_auth_total{protocol=\"imap\",mechanism=\"unknown\",result=\"failure\"}",
    "tern_auth_total{protocol=\"pop3\",mechanism=\"unknown\",result=\"success\"}",
    "tern_auth_total{protocol=\"pop3\",mechanism=\"unknown\",result=\"failure\"}",
];

const EXPECTED: &[f64] = &[
    2.0, // AUTHENTICATE PLAIN, LOGIN command
    1.0, // LOGIN command, wrong password
    1.0, // AUTHENTICATE LOGIN
    2.0, // AUTH PLAIN, USER/PASS
    1.0, // USER/PASS, wrong password
    1.0, // AUTH LOGIN
    0.0, 0.0, 0.0, 0.0,
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn imap_and_pop3_logins_are_counted_with_their_mechanism() {
    let dir = tempfile::tempdir().unwrap();
    let users = dir.path().join("users.toml");
    common::add_user(&users, USER, PW);
    let text = format!(
        "hostname = \"mx.example.test\"\ndata_dir = {:?}\n\
         [[listener]]\naddress = \"127.0.0.1:0\"\nrole = \"admin\"\n\
         [[listener]]\naddress = \"127.0.0.1:0\"\nrole = \"imap\"\nplaintext_auth = true\n\
         [[listener]]\naddress = \"127.0.0.1:0\"\nrole = \"pop3\"\nplaintext_auth = true\n\
         [auth]\nusers_file = {users:?}\n\
         [limits.abuse.auth]\ninitial_delay = \"10ms\"\nmax_delay = \"20ms\"\n\
         [domains.\"example.test\"]\nmailboxes = [\"alice\"]\n\
         [dns]\nnameservers = [\"127.0.0.1:9\"]\n[mail_auth]\nenabled = false\n",
        dir.path().join("data"),
    );
    let config = tern::Config::parse(&text).expect("test config");
    let running = tern::start(&config).await.expect("server starts");
    let (admin, imap, pop3) = (running.addrs()[0], running.addrs()[1], running.addrs()[2]);
    let before = common::scrape_metrics(admin).await;

    tokio::task::spawn_blocking(move || {
        let mut c = Lines::connect(imap);
        let r = c.send(&format!(
            "a AUTHENTICATE PLAIN {}",
            b64(&format!("\0{USER}\0{PW}"))
        ));
        assert!(r.starts_with("a OK"), "{r}");
        c.send("z LOGOUT");

        let mut c = Lines::connect(imap);
        let r = c.send(&format!("a LOGIN {USER} wrong"));
        assert!(r.starts_with("a NO"), "{r}");
        let r = c.send(&format!("b LOGIN {USER} {PW}"));
        assert!(r.starts_with("b OK"), "{r}");
        c.send("z LOGOUT");

        let mut c = Lines::connect(imap);
        let r = c.send("a AUTHENTICATE LOGIN");
        assert!(r.starts_with("+ "), "{r}");
        let r = c.send(&b64(USER));
        assert!(r.starts_with("+ "), "{r}");
        let r = c.send(&b64(PW));
        assert!(r.starts_with("a OK"), "{r}");
        c.send("z LOGOUT");

        let mut c = Lines::connect(pop3);
        let r = c.send(&format!("AUTH PLAIN {}", b64(&format!("\0{USER}\0{PW}"))));
        assert!(r.starts_with("+OK"), "{r}");
        assert!(c.send("QUIT").starts_with("+OK"));

        let mut c = Lines::connect(pop3);
        assert!(c.send(&format!("USER {USER}")).starts_with("+OK"));
        let r = c.send("PASS wrong");
        assert!(r.starts_with("-ERR"), "{r}");
        assert!(c.send(&format!("USER {USER}")).starts_with("+OK"));
        let r = c.send(&format!("PASS {PW}"));
        assert!(r.starts_with("+OK"), "{r}");
        assert!(c.send("QUIT").starts_with("+OK"));

        let mut c = Lines::connect(pop3);
        let r = c.send("AUTH LOGIN");
        assert!(r.starts_with("+ "), "{r}");
        let r = c.send(&b64(USER));
        assert!(r.starts_with("+ "), "{r}");
        let r = c.send(&b64(PW));
        assert!(r.starts_with("+OK"), "{r}");
        assert!(c.send("QUIT").starts_with("+OK"));
    })
    .await
    .unwrap();

    common::wait_for_deltas(admin, &before, SERIES, EXPECTED).await;
    running.shutdown().await;
}
