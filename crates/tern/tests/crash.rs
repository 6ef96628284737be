//! The durability test (invariant 1): the real `tern` binary is killed with
//! SIGKILL while clients are sending; after a restart every message that
//! got a 250 is in the Maildir exactly once, and nothing half-written is.
//! Run twice: with one recipient (the message is delivered at intake,
//! straight into the Maildir) and with two (it is queued, then delivered
//! by the queue manager, and recovered from the spool after the kill).
//! Also checks that SIGTERM makes the binary exit 0.

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{Raw, read_maildir};

fn token_of(msg: &str) -> Option<String> {
    msg.lines()
        .find_map(|l| l.strip_prefix("X-Token: "))
        .map(|s| s.trim().to_owned())
}

#[test]
fn sigkill_under_load_loses_and_duplicates_nothing() {
    sigkill_under_load(&["alice"]);
}

#[test]
fn sigkill_under_load_queued_path_loses_and_duplicates_nothing() {
    sigkill_under_load(&["alice", "bob"]);
}

fn sigkill_under_load(mailboxes: &'static [&'static str]) {
    let dir = tempfile::tempdir().unwrap();
    let addr = common::free_loopback_addr();
    let config = dir.path().join("tern.toml");
    std::fs::write(
        &config,
        format!(
            "hostname = \"mx.example.test\"\ndata_dir = {:?}\n[[listener]]\naddress = \"{addr}\"\nrole = \"mx\"\n[dns]\nnameservers = [\"127.0.0.1:9\"]\n[mail_auth]\nenabled = false\n[domains.\"example.test\"]\nmailboxes = [\"alice\", \"bob\"]\n[log]\nlevel = \"warn\"\n",
            dir.path().join("data")
        ),
    )
    .unwrap();
    let log = dir.path().join("tern.log");
    let mut child = common::spawn_daemon(&config, &log, addr, &[]);

    let accepted = Arc::new(Mutex::new(Vec::<String>::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..4)
        .map(|t| {
            let accepted = Arc::clone(&accepted);
            let stop = Arc::clone(&stop);
            std::thread::spawn(move || {
                let mut k = 0u32;
                while !stop.load(Ordering::Relaxed) {
                    let Some(mut c) = Raw::try_connect(addr) else { return };
                    if !c.reply().starts_with("220") {
                        return;
                    }
                    if !c.cmd("EHLO load.test").starts_with("250") {
                        return;
                    }
                    for _ in 0..20 {
                        let token = format!("t{t}-{k}");
                        k += 1;
                        if !c.cmd("MAIL FROM:<load@sender.test>").starts_with("250") {
                            return;
                        }
                        for m in mailboxes {
                            if !c.cmd(&format!("RCPT TO:<{m}@example.test>")).starts_with("250") {
                                return;
                            }
                        }
                        if !c.cmd("DATA").starts_with("354") {
                            return;
                        }
                        let body = format!(
                            "X-Token: {token}\r\nSubject: crash test\r\n\r\n{}END-OF-MESSAGE\r\n.\r\n",
                            "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef\r\n".repeat(64)
                        );
                        if !c.try_send(body.as_bytes()) {
                            return;
                        }
                        let r = c.reply();
                        if r.starts_with("250") {
                            accepted.lock().unwrap().push(token);
                        } else {
                            return;
                        }
                    }
                    let _ = c.cmd("QUIT");
                }
            })
        })
        .collect();

    // Let the load run, then kill the server mid-flight.
    std::thread::sleep(Duration::from_millis(1500));
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.join().unwrap();
    }
    let accepted = accepted.lock().unwrap().clone();
    assert!(
        accepted.len() > 10,
        "too little load before the kill: {}",
        accepted.len()
    );

    // Restart: recovery must finish every accepted message.
    let mut child = common::spawn_daemon(&config, &log, addr, &[]);
    // Counted per (mailbox, token): each accepted message once in each.
    let deadline = Instant::now() + Duration::from_secs(60);
    let wanted: Vec<String> = accepted
        .iter()
        .flat_map(|t| mailboxes.iter().map(move |m| format!("{m}/{t}")))
        .collect();
    let counts = loop {
        let mut counts: HashMap<String, usize> = HashMap::new();
        for m in mailboxes {
            let new = dir.path().join(format!("data/mail/example.test/{m}/new"));
            for msg in read_maildir(&new) {
                assert!(
                    msg.ends_with("END-OF-MESSAGE\r\n"),
                    "a truncated message was delivered"
                );
                let token = token_of(&msg).expect("every delivered message has its token");
                *counts.entry(format!("{m}/{token}")).or_default() += 1;
            }
        }
        if wanted.iter().all(|k| counts.contains_key(k)) || Instant::now() > deadline {
            break counts;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    for k in &wanted {
        assert_eq!(
            counts.get(k),
            Some(&1),
            "accepted message {k} delivered {:?} times",
            counts.get(k)
        );
    }
    for (k, n) in &counts {
        assert_eq!(*n, 1, "message {k} delivered {n} times");
    }

    // SIGTERM: graceful shutdown, exit status 0.
    common::signal(&child, "-TERM");
    let exit = child.wait().unwrap();
    assert!(
        exit.success(),
        "tern exited with {exit:?}; log:\n{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
}
