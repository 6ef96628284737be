//! Tests against the real daemon process: secrets never reach the logs
//! (invariant 7), and SIGHUP reloads without dropping sessions.
//!
//! Secrets: The real binary runs with
//! `RUST_LOG=trace` (every debug line on), a client authenticates with
//! PLAIN and LOGIN (right and wrong passwords), and the log must contain
//! neither the passwords nor their base64 forms.

mod common;

use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use common::Raw;

#[test]
fn passwords_never_appear_in_trace_logs() {
    let dir = tempfile::tempdir().unwrap();
    let users = dir.path().join("users.toml");
    let secret = "Very-Secret-Pass-42";
    let wrong = "Wrong-Guess-Pass-17";
    common::add_user(&users, "alice@example.test", secret);
    let addr = common::free_loopback_addr();
    let config = dir.path().join("tern.toml");
    std::fs::write(
        &config,
        format!(
            "hostname = \"mx.example.test\"\ndata_dir = {:?}\n[[listener]]\naddress = \"{addr}\"\nrole = \"submission\"\nplaintext_auth = true\n[auth]\nusers_file = {users:?}\n[dns]\nnameservers = [\"127.0.0.1:9\"]\n[domains.\"example.test\"]\nmailboxes = [\"alice\"]\n[limits.abuse.tarpit]\ninitial_delay = \"0s\"\n",
            dir.path().join("data")
        ),
    )
    .unwrap();
    let log = dir.path().join("tern.log");
    let mut child = common::spawn_daemon(&config, &log, addr, &[("RUST_LOG", "trace")]);

    let mut c = Raw::greeted(addr);
    assert!(c.cmd("EHLO client.test").starts_with("250"));
    let r = c.cmd(&format!(
        "AUTH PLAIN {}",
        B64.encode(format!("\0alice@example.test\0{wrong}"))
    ));
    assert!(r.starts_with("535"), "{r}");
    assert!(c.cmd("AUTH LOGIN").starts_with("334"));
    assert!(c.cmd(&B64.encode("alice@example.test")).starts_with("334"));
    assert!(c.cmd(&B64.encode(secret)).starts_with("235"));
    assert!(c.cmd("QUIT").starts_with("221"));

    common::signal(&child, "-TERM");
    assert!(child.wait().unwrap().success());
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.contains("authenticated"),
        "the log shows the login happened:\n{text}"
    );
    for needle in [
        secret.to_owned(),
        wrong.to_owned(),
        B64.encode(secret),
        B64.encode(format!("\0alice@example.test\0{wrong}")),
    ] {
        assert!(
            !text.contains(&needle),
            "secret {needle:?} leaked into the log"
        );
    }
}

/// SIGHUP re-reads certificates and users without dropping sessions.
#[test]
fn sighup_reloads_without_dropping_sessions() {
    let dir = tempfile::tempdir().unwrap();
    let addr = common::free_loopback_addr();
    let config = dir.path().join("tern.toml");
    std::fs::write(
        &config,
        format!(
            "hostname = \"mx.example.test\"\ndata_dir = {:?}\n[[listener]]\naddress = \"{addr}\"\nrole = \"mx\"\n[dns]\nnameservers = [\"127.0.0.1:9\"]\n[mail_auth]\nenabled = false\n[domains.\"example.test\"]\nmailboxes = [\"alice\"]\n",
            dir.path().join("data")
        ),
    )
    .unwrap();
    let log = dir.path().join("tern.log");
    let mut child = common::spawn_daemon(&config, &log, addr, &[]);
    let mut old = Raw::greeted(addr);
    assert!(old.cmd("EHLO client.test").starts_with("250"));
    common::signal(&child, "-HUP");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !std::fs::read_to_string(&log)
        .unwrap_or_default()
        .contains("TLS certificates reloaded")
    {
        assert!(Instant::now() < deadline, "no reload logged");
        std::thread::sleep(Duration::from_millis(20));
    }
    // The session from before the reload carries on; new ones are served.
    assert!(old.cmd("NOOP").starts_with("250"));
    let r = old.send_mail(
        "x@sender.test",
        "alice@example.test",
        "Subject: after HUP\r\n\r\nx",
    );
    assert!(r.starts_with("250 2.0.0"), "{r}");
    let mut new = Raw::greeted(addr);
    assert!(new.cmd("EHLO client.test").contains("STARTTLS"));
    common::signal(&child, "-TERM");
    assert!(child.wait().unwrap().success());
}
