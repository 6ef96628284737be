//! Security regression tests for the operational findings of issue 11, one
//! named test per finding, against the real server (in-process through
//! `tern::start`, or the `tern` binary):
//!
//! - finding 3: the smarthost's certificate is verified (system roots by
//!   default, `ca_file` overrides) and AUTH is never sent to an
//!   unverified smarthost;
//! - finding 12: started as root, Tern drops to `user` after binding its
//!   listeners, and refuses to stay root unless told to;
//! - finding 13: `plaintext_auth` only on loopback, `audience` required
//!   for bearer tokens, and a token's user must exist.

mod common;

use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::Raw;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tern_testkit::smtp::SmtpPeer;

// ------------------------------------------------------------ finding 3

/// What a scripted smarthost saw: every command line, prefixed `tls: `
/// once the TLS handshake has finished, and `handshake failed` when the
/// client gave up during the handshake.
type Seen = Arc<Mutex<Vec<String>>>;

/// A self-signed certificate for `127.0.0.1` and the TLS server config
/// presenting it; the PEM is what a `ca_file` would hold.
fn self_signed() -> (Arc<rustls::ServerConfig>, String) {
    let ck = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()]).unwrap();
    let cert: CertificateDer<'static> = ck.cert.der().clone();
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(ck.signing_key.serialize_der()));
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(vec![cert], key)
    .unwrap();
    (Arc::new(config), ck.cert.pem())
}

/// A submission-style smarthost on loopback (`tern_testkit::smtp`):
/// STARTTLS with `tls`, then AUTH (any credentials accepted), MAIL, RCPT,
/// DATA; the commands go into `seen`. Returns its port.
async fn scripted_smarthost(tls: Arc<rustls::ServerConfig>, seen: Seen) -> u16 {
    SmtpPeer::new("relay.test")
        .extension("AUTH PLAIN LOGIN")
        .starttls(tls)
        .record_into(seen)
        .bind("127.0.0.1:0".parse().unwrap())
        .await
        .addr
        .port()
}

/// A server whose remote mail goes through the smarthost on `port` with
/// `tls` and credentials; `smarthost_extra` adds keys to
/// `[delivery.smarthost]`. Returns the config file's path.
fn smarthost_config(dir: &Path, port: u16, tls: &str, smarthost_extra: &str) -> PathBuf {
    let password = dir.join("relay.password");
    std::fs::write(&password, "relay-secret\n").unwrap();
    let config = dir.join("tern.toml");
    std::fs::write(
        &config,
        format!(
            "hostname = \"mx.example.test\"\ndata_dir = {:?}\ntrusted_networks = [\"127.0.0.0/8\"]\n\
             [[listener]]\naddress = \"127.0.0.1:0\"\nrole = \"mx\"\n\
             [domains.\"example.test\"]\nmailboxes = [\"alice\"]\n\
             [dns]\nnameservers = [\"127.0.0.1:9\"]\n[mail_auth]\nenabled = false\n\
             [delivery.smarthost]\nhost = \"127.0.0.1\"\nport = {port}\ntls = {tls:?}\n\
             username = \"relay-user\"\npassword_file = {password:?}\n{smarthost_extra}\n",
            dir.join("data")
        ),
    )
    .unwrap();
    config
}

/// Relays one message from a trusted client to `someone@far.test`.
async fn relay_one(addr: std::net::SocketAddr) {
    tokio::task::spawn_blocking(move || {
        let mut c = Raw::greeted(addr);
        assert!(c.cmd("EHLO client.test").starts_with("250"));
        let r = c.send_mail(
            "alice@example.test",
            "someone@far.test",
            "From: alice@example.test\r\nSubject: via the smarthost\r\n\r\nbody",
        );
        assert!(r.starts_with("250"), "{r}");
    })
    .await
    .unwrap();
}

/// `tern queue list --json --config CONFIG`: the queued messages.
async fn queue_list(config: &Path) -> Vec<serde_json::Value> {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_tern"));
    cmd.args(["queue", "list", "--json", "--config"])
        .arg(config)
        .env("RUST_LOG", "off");
    let out = tokio::task::spawn_blocking(move || cmd.output().unwrap())
        .await
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    v["messages"].as_array().cloned().unwrap_or_default()
}

fn text(out: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Polls until `pred` holds of what the smarthost saw.
async fn wait_seen(seen: &Seen, what: &str, pred: impl Fn(&[String]) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if pred(&seen.lock().unwrap()) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}: {:?}",
            seen.lock().unwrap()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The smarthost presents a self-signed certificate and no `ca_file` is
/// configured: the certificate is checked against the system's roots, the
/// handshake is abandoned, the password is never sent and the message is
/// deferred with a reason that names the certificate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finding_03_smarthost_unverified_certificate_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (tls, _pem) = self_signed();
    let seen: Seen = Arc::default();
    let port = scripted_smarthost(tls, Arc::clone(&seen)).await;
    let config = smarthost_config(dir.path(), port, "starttls", "");
    let running = tern::start(&tern::Config::load(&config).unwrap())
        .await
        .unwrap();
    relay_one(running.addrs()[0]).await;

    let deadline = Instant::now() + Duration::from_secs(20);
    let reason = loop {
        let list = queue_list(&config).await;
        let r = &list.first().map(|m| m["recipients"][0].clone());
        if let Some(r) = r
            && r["state"] == "deferred"
        {
            break r["last_error"].as_str().unwrap_or("").to_owned();
        }
        assert!(
            Instant::now() < deadline,
            "no deferral: {list:?}; smarthost saw {:?}",
            seen.lock().unwrap()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let seen = seen.lock().unwrap().clone();
    assert!(
        !seen.iter().any(|l| l.contains("AUTH")),
        "AUTH sent to an unverified smarthost: {seen:?}"
    );
    assert!(
        seen.iter().any(|l| l == "handshake failed"),
        "the handshake should have been abandoned: {seen:?}"
    );
    assert!(reason.starts_with('4'), "{reason}");
    assert!(
        reason.to_ascii_lowercase().contains("certificate"),
        "the reason should name the certificate: {reason}"
    );
    running.shutdown().await;
}

/// The same smarthost with `ca_file` naming its certificate: verified,
/// AUTH sent over TLS, the message delivered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finding_03_smarthost_with_ca_file_is_verified_and_used() {
    let dir = tempfile::tempdir().unwrap();
    let (tls, pem) = self_signed();
    let ca = dir.path().join("relay-ca.pem");
    std::fs::write(&ca, pem).unwrap();
    let seen: Seen = Arc::default();
    let port = scripted_smarthost(tls, Arc::clone(&seen)).await;
    let config = smarthost_config(dir.path(), port, "starttls", &format!("ca_file = {ca:?}"));
    let running = tern::start(&tern::Config::load(&config).unwrap())
        .await
        .unwrap();
    relay_one(running.addrs()[0]).await;
    wait_seen(&seen, "the message over TLS", |s| {
        s.iter().any(|l| l == "tls: DATA")
    })
    .await;
    let seen = seen.lock().unwrap().clone();
    let auth = seen.iter().position(|l| l.starts_with("tls: AUTH PLAIN"));
    assert!(auth.is_some(), "{seen:?}");
    assert!(
        !seen.iter().any(|l| l.starts_with("AUTH")),
        "AUTH before TLS: {seen:?}"
    );
    running.shutdown().await;
}

/// `tls_verify = false` is the explicit way to skip verification: AUTH
/// goes to the self-signed smarthost, and the server says so at start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finding_03_smarthost_tls_verify_false_is_explicit() {
    let dir = tempfile::tempdir().unwrap();
    let (tls, pem) = self_signed();
    let seen: Seen = Arc::default();
    let port = scripted_smarthost(tls, Arc::clone(&seen)).await;
    let config = smarthost_config(dir.path(), port, "starttls", "tls_verify = false");
    let running = tern::start(&tern::Config::load(&config).unwrap())
        .await
        .unwrap();
    relay_one(running.addrs()[0]).await;
    wait_seen(&seen, "AUTH over unverified TLS", |s| {
        s.iter().any(|l| l.starts_with("tls: AUTH PLAIN"))
    })
    .await;
    running.shutdown().await;

    // Contradictions and clear-text passwords are configuration errors.
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, pem).unwrap();
    for (tls, extra, needle) in [
        (
            "starttls",
            format!("tls_verify = false\nca_file = {ca:?}"),
            "tls_verify",
        ),
        ("none", String::new(), "clear text"),
    ] {
        let path = smarthost_config(dir.path(), port, tls, &extra);
        let err = format!("{:#}", tern::Config::load(&path).unwrap_err());
        assert!(err.contains(needle), "{tls} {extra}: {err}");
    }
}

/// `tern serve` says loudly at start that the smarthost is not verified.
#[test]
fn finding_03_smarthost_tls_verify_false_is_warned_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let addr = common::free_loopback_addr();
    let config = smarthost_config(dir.path(), 9, "starttls", "tls_verify = false");
    let text = std::fs::read_to_string(&config)
        .unwrap()
        .replace("127.0.0.1:0", &addr.to_string());
    std::fs::write(&config, text).unwrap();
    let log = dir.path().join("tern.log");
    let mut child = common::spawn_daemon(&config, &log, addr, &[]);
    common::signal(&child, "-TERM");
    assert!(child.wait().unwrap().success());
    let log = std::fs::read_to_string(&log).unwrap();
    let line = log
        .lines()
        .find(|l| l.contains("tls_verify = false"))
        .unwrap_or_else(|| panic!("no warning:\n{log}"));
    assert!(
        line.contains("WARN") && line.contains("NOT verified"),
        "{line}"
    );
}

// ------------------------------------------------------------ finding 13

/// A configuration with top-level keys `top`, one submission listener on
/// `address` with `listener_extra`, and the tables in `extra`.
fn listener_config(top: &str, address: &str, listener_extra: &str, extra: &str) -> String {
    format!(
        "hostname = \"mx.example.test\"\n{top}\n[[listener]]\naddress = \"{address}\"\nrole = \"submission\"\n\
         {listener_extra}\n[domains.\"example.test\"]\nmailboxes = [\"alice\"]\n{extra}\n"
    )
}

/// `plaintext_auth` sends passwords in clear text: only on loopback.
#[test]
fn finding_13_plaintext_auth_off_loopback_is_a_config_error() {
    for address in [
        "0.0.0.0:587",
        "192.0.2.10:587",
        "[::]:587",
        "[2001:db8::1]:587",
    ] {
        let text = listener_config("", address, "plaintext_auth = true", "");
        let err = format!("{:#}", tern::Config::parse(&text).unwrap_err());
        assert!(
            err.contains("plaintext_auth") && err.contains("loopback"),
            "{address}: {err}"
        );
        // The same listener without plaintext_auth is fine.
        tern::Config::parse(&listener_config("", address, "", "")).unwrap();
    }
    for address in ["127.0.0.1:2587", "127.0.0.2:2587", "[::1]:2587"] {
        let text = listener_config("", address, "plaintext_auth = true", "");
        tern::Config::parse(&text).unwrap_or_else(|e| panic!("{address}: {e:#}"));
    }
}

const JWT_SECRET: &[u8] = b"an HS256 secret shared with the identity provider";

fn hs256_jwt(claims: &str) -> String {
    use base64::Engine as _;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
    let header = B64URL.encode(r#"{"alg":"HS256","typ":"JWT"}"#);
    let payload = B64URL.encode(claims);
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, JWT_SECRET);
    let sig = ring::hmac::sign(&key, format!("{header}.{payload}").as_bytes());
    format!("{header}.{payload}.{}", B64URL.encode(sig.as_ref()))
}

/// `[auth.oauth]` for tokens signed with [`JWT_SECRET`], plus `extra` keys.
fn oauth_config(dir: &Path, users: &Path, oauth_extra: &str) -> String {
    let key_file = dir.join("jwt.key");
    std::fs::write(&key_file, JWT_SECRET).unwrap();
    listener_config(
        &format!("data_dir = {:?}", dir.join("data")),
        "127.0.0.1:0",
        "plaintext_auth = true",
        &format!(
            "[auth]\nusers_file = {users:?}\nmechanisms = [\"OAUTHBEARER\", \"XOAUTH2\"]\n\
             [auth.oauth]\nalgorithm = \"HS256\"\nkey_file = {key_file:?}\nissuer = \"https://idp.example.test\"\n\
             {oauth_extra}\n[dns]\nnameservers = [\"127.0.0.1:9\"]\n[limits.abuse.tarpit]\ninitial_delay = \"0s\"\n\
             [limits.abuse.auth]\ninitial_delay = \"1ms\"\nmax_delay = \"1ms\"\n"
        ),
    )
}

/// Without `audience`, a token the identity provider issued to any other
/// application would log in: the setting is required, and so is the users
/// file the token's user is looked up in.
#[test]
fn finding_13_oauth_without_audience_is_a_config_error() {
    let dir = tempfile::tempdir().unwrap();
    let users = dir.path().join("users.toml");
    common::add_user(&users, "alice@example.test", "alice-pw");
    let err = format!(
        "{:#}",
        tern::Config::parse(&oauth_config(dir.path(), &users, "")).unwrap_err()
    );
    assert!(err.contains("audience"), "{err}");
    tern::Config::parse(&oauth_config(
        dir.path(),
        &users,
        "audience = \"tern-mail\"",
    ))
    .unwrap();
    let no_users = oauth_config(dir.path(), &users, "audience = \"tern-mail\"")
        .replace(&format!("users_file = {users:?}\n"), "");
    let err = format!("{:#}", tern::Config::parse(&no_users).unwrap_err());
    assert!(err.contains("users_file"), "{err}");
}

/// A correctly signed token for our audience naming a user who is not in
/// the users file grants nothing; the same token shape for a known user
/// logs in, and a token for another audience does not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finding_13_token_for_an_unknown_user_is_refused() {
    use base64::Engine as _;
    let dir = tempfile::tempdir().unwrap();
    let users = dir.path().join("users.toml");
    common::add_user(&users, "alice@example.test", "alice-pw");
    let config = tern::Config::parse(&oauth_config(
        dir.path(),
        &users,
        "audience = \"tern-mail\"",
    ))
    .unwrap();
    let running = tern::start(&config).await.unwrap();
    let addr = running.addrs()[0];
    let exp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 600;
    let token = |user: &str, aud: &str| {
        hs256_jwt(&format!(
            r#"{{"iss":"https://idp.example.test","aud":"{aud}","email":"{user}","exp":{exp}}}"#
        ))
    };
    let login = move |token: String| {
        tokio::task::spawn_blocking(move || {
            let mut c = Raw::greeted(addr);
            assert!(c.cmd("EHLO client.test").starts_with("250"));
            let ir = base64::engine::general_purpose::STANDARD
                .encode(format!("n,,\x01auth=Bearer {token}\x01\x01"));
            let r = c.cmd(&format!("AUTH OAUTHBEARER {ir}"));
            if r.starts_with("334") {
                // The JSON error challenge: an empty line gets the failure.
                c.cmd("")
            } else {
                r
            }
        })
    };
    let r = login(token("mallory@example.test", "tern-mail"))
        .await
        .unwrap();
    assert!(r.starts_with("535"), "unknown user logged in by token: {r}");
    let r = login(token("alice@example.test", "other-app"))
        .await
        .unwrap();
    assert!(r.starts_with("535"), "token for another audience: {r}");
    let r = login(token("alice@example.test", "tern-mail"))
        .await
        .unwrap();
    assert!(r.starts_with("235"), "known user: {r}");
    running.shutdown().await;
}

// ------------------------------------------------------------ finding 12

fn running_as_root() -> bool {
    // The test binary's own /proc status: "Uid:\treal\teffective\t…".
    proc_ids(std::process::id(), "Uid").is_some_and(|ids| ids[1] == 0)
}

/// The four ids on the `Uid:`/`Gid:` line (or the `Groups:` list) of
/// /proc/<pid>/status.
fn proc_ids(pid: u32, key: &str) -> Option<Vec<u32>> {
    status_ids(
        &std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?,
        key,
    )
}

fn status_ids(status: &str, key: &str) -> Option<Vec<u32>> {
    let line = status.lines().find(|l| l.starts_with(&format!("{key}:")))?;
    Some(
        line[key.len() + 1..]
            .split_whitespace()
            .filter_map(|n| n.parse().ok())
            .collect(),
    )
}

/// nobody's uid and primary gid, from /etc/passwd.
fn nobody() -> (u32, u32) {
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap();
    let line = passwd
        .lines()
        .find(|l| l.starts_with("nobody:"))
        .expect("a nobody user");
    let f: Vec<&str> = line.split(':').collect();
    (f[2].parse().unwrap(), f[3].parse().unwrap())
}

/// A loopback port below 1024 that is free: only root (or
/// CAP_NET_BIND_SERVICE) can bind it. Each call in this process gets a
/// different one (the tests run in parallel).
fn free_privileged_port() -> u16 {
    use std::sync::atomic::{AtomicU16, Ordering};
    static NEXT: AtomicU16 = AtomicU16::new(1023);
    loop {
        let p = NEXT.fetch_sub(1, Ordering::Relaxed);
        assert!(p >= 600, "no free port below 1024");
        if std::net::TcpListener::bind(("127.0.0.1", p)).is_ok() {
            return p;
        }
    }
}

/// An MX-only config on `addr` with `top` top-level keys.
fn daemon_config(dir: &Path, addr: std::net::SocketAddr, top: &str) -> PathBuf {
    let config = dir.join("tern.toml");
    std::fs::write(
        &config,
        format!(
            "hostname = \"mx.example.test\"\ndata_dir = {:?}\n{top}\n\
             [[listener]]\naddress = \"{addr}\"\nrole = \"mx\"\n\
             [domains.\"example.test\"]\nmailboxes = [\"alice\"]\n\
             [dns]\nnameservers = [\"127.0.0.1:9\"]\n[mail_auth]\nenabled = false\n",
            dir.join("data")
        ),
    )
    .unwrap();
    config
}

/// Runs `tern serve` with `args` until it exits (`Ok(output)`) or accepts
/// connections on `addr` (`Err(child)`, still running); 20 s at most.
fn serve(
    config: &Path,
    addr: std::net::SocketAddr,
    args: &[&str],
) -> Result<Output, std::process::Child> {
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_tern"))
        .arg("serve")
        .args(args)
        .arg("--config")
        .arg(config)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if child.try_wait().unwrap().is_some() {
            return Ok(child.wait_with_output().unwrap());
        }
        if Instant::now() > deadline || std::net::TcpStream::connect(addr).is_ok() {
            return Err(child);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Started as root with `user = "nobody"`, Tern binds a port below 1024,
/// then every thread runs as nobody (real, effective, saved and
/// filesystem ids, no supplementary group but nobody's), and it still
/// serves SMTP on that port and writes mail as nobody.
#[test]
fn finding_12_root_drops_to_the_configured_user_after_binding() {
    if !running_as_root() {
        eprintln!("not root: the privilege drop cannot be tested here (CI runs as root)");
        return;
    }
    let (uid, gid) = nobody();
    let dir = tempfile::tempdir().unwrap();
    // nobody must be able to reach and own data_dir (created at start).
    std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid)).unwrap();
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], free_privileged_port()));
    let config = daemon_config(dir.path(), addr, "user = \"nobody\"");
    let log = dir.path().join("tern.log");
    let mut child = common::spawn_daemon(&config, &log, addr, &[]);
    let pid = child.id();

    let deadline = Instant::now() + Duration::from_secs(10);
    while proc_ids(pid, "Uid").is_none_or(|ids| ids.contains(&0)) {
        assert!(
            Instant::now() < deadline,
            "still root: {:?}\n{}",
            proc_ids(pid, "Uid"),
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
        let status = std::fs::read_to_string(task.unwrap().path().join("status")).unwrap();
        assert_eq!(status_ids(&status, "Uid").unwrap(), [uid; 4], "{status}");
        assert_eq!(status_ids(&status, "Gid").unwrap(), [gid; 4], "{status}");
        assert_eq!(status_ids(&status, "Groups").unwrap(), [gid], "{status}");
    }

    // Still serving on the privileged port it bound as root.
    let mut c = Raw::greeted(addr);
    assert!(c.cmd("EHLO client.test").starts_with("250"));
    let r = c.send_mail(
        "someone@remote.test",
        "alice@example.test",
        "Subject: as nobody\r\n\r\nhello",
    );
    assert!(r.starts_with("250"), "{r}");
    let new = dir.path().join("data/mail/example.test/alice/new");
    common::wait_for_mail_in(&new, 1);
    for f in std::fs::read_dir(&new).unwrap() {
        let owner = std::os::unix::fs::MetadataExt::uid(&f.unwrap().metadata().unwrap());
        assert_eq!(owner, uid, "mail written as uid {owner}");
    }
    let spool = std::fs::metadata(dir.path().join("data/spool")).unwrap();
    assert_eq!(std::os::unix::fs::MetadataExt::uid(&spool), uid);

    common::signal(&child, "-TERM");
    let status = child.wait().unwrap();
    assert!(status.success(), "{status:?}");
    let log = std::fs::read_to_string(&log).unwrap();
    assert!(log.contains("switched from root"), "{log}");

    // `tern queue` run by root on the stopped server's spool works on it
    // as nobody too: nothing in the spool becomes root's. (Opening the
    // spool creates its lock file and directories when they are missing.)
    let _ = std::fs::remove_file(dir.path().join("data/spool/lock"));
    let _ = std::fs::remove_dir(dir.path().join("data/spool/corrupt"));
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tern"))
        .args(["queue", "list", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let mut stack = vec![dir.path().join("data")];
    while let Some(p) = stack.pop() {
        let m = std::fs::symlink_metadata(&p).unwrap();
        assert_eq!(
            std::os::unix::fs::MetadataExt::uid(&m),
            uid,
            "{}",
            p.display()
        );
        if m.is_dir() {
            stack.extend(std::fs::read_dir(&p).unwrap().map(|e| e.unwrap().path()));
        }
    }
}

/// As root without `user`, `tern serve` refuses to start and says how to
/// fix it; `allow_root = true` or `--allow-root` let it run.
#[test]
fn finding_12_root_without_user_is_refused() {
    if !running_as_root() {
        eprintln!("not root: the refusal cannot be tested here (CI runs as root)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let addr = common::free_loopback_addr();
    let config = daemon_config(dir.path(), addr, "");
    let out = match serve(&config, addr, &[]) {
        Ok(out) => out,
        Err(mut child) => {
            let _ = child.kill();
            let _ = child.wait();
            panic!("tern serve ran as root without user or allow_root");
        }
    };
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("refusing to run as root")
            && err.contains("user = ")
            && err.contains("allow_root"),
        "{err}"
    );

    for (top, args) in [("allow_root = true", &[][..]), ("", &["--allow-root"][..])] {
        let config = daemon_config(dir.path(), addr, top);
        let mut child = match serve(&config, addr, args) {
            Ok(out) => panic!("{top} {args:?}: exited: {}", text(&out)),
            Err(child) => child,
        };
        assert!(std::net::TcpStream::connect(addr).is_ok(), "{top} {args:?}");
        common::signal(&child, "-TERM");
        assert!(child.wait().unwrap().success());
    }
}

/// `user` set but the data directory belongs to someone else: start-up
/// stops with the path, the owner and the chown that fixes it; an unknown
/// user is named.
#[test]
fn finding_12_state_not_owned_by_the_user_is_refused() {
    if !running_as_root() {
        eprintln!("not root: cannot test the switch here (CI runs as root)");
        return;
    }
    let (uid, gid) = nobody();
    let dir = tempfile::tempdir().unwrap();
    std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid)).unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(data.join("spool")).unwrap();
    std::os::unix::fs::chown(&data, Some(uid), Some(gid)).unwrap();
    // data/spool stays root's, as after a run as root.
    let addr = common::free_loopback_addr();
    let config = daemon_config(dir.path(), addr, "user = \"nobody\"");
    let out = serve(&config, addr, &[]).unwrap_or_else(|mut c| {
        let _ = c.kill();
        panic!("started with a root-owned spool")
    });
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!(
            "{} is owned by uid 0",
            data.join("spool").display()
        )) && err.contains("chown -R nobody:"),
        "{err}"
    );

    let config = daemon_config(dir.path(), addr, "user = \"no-such-user-tern\"");
    let out = serve(&config, addr, &[]).unwrap_or_else(|mut c| {
        let _ = c.kill();
        panic!("started as an unknown user")
    });
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("no-such-user-tern") && err.contains("no such user"),
        "{err}"
    );
}

/// The systemd way (dist/tern.service): started as nobody with only
/// CAP_NET_BIND_SERVICE (ambient), `user = "nobody"` in the config, Tern
/// serves a port below 1024 without ever being root; without the
/// capability it says what is missing.
#[test]
fn finding_12_unprivileged_with_cap_net_bind_service_serves_a_low_port() {
    if !running_as_root()
        || std::process::Command::new("setpriv")
            .arg("--version")
            .output()
            .is_err()
    {
        eprintln!("needs root (to become nobody) and setpriv (util-linux)");
        return;
    }
    let (uid, gid) = nobody();
    let dir = tempfile::tempdir().unwrap();
    std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid)).unwrap();
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], free_privileged_port()));
    let config = daemon_config(dir.path(), addr, "user = \"nobody\"");
    let as_nobody = |caps: bool| {
        let mut cmd = std::process::Command::new("setpriv");
        cmd.args([
            "--reuid",
            &uid.to_string(),
            "--regid",
            &gid.to_string(),
            "--clear-groups",
        ]);
        if caps {
            cmd.args([
                "--inh-caps=+net_bind_service",
                "--ambient-caps=+net_bind_service",
            ]);
        }
        cmd.arg(env!("CARGO_BIN_EXE_tern"))
            .args(["serve", "--config"])
            .arg(&config)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped());
        cmd
    };
    let out = as_nobody(false).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("CAP_NET_BIND_SERVICE"), "{err}");

    let mut child = as_nobody(true).spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(addr).is_err() {
        if let Some(status) = child.try_wait().unwrap() {
            panic!(
                "exited {status:?}: {}",
                text(&child.wait_with_output().unwrap())
            );
        }
        assert!(Instant::now() < deadline, "not listening");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(proc_ids(child.id(), "Uid").unwrap(), [uid; 4]);
    let mut c = Raw::greeted(addr);
    assert!(c.cmd("EHLO client.test").starts_with("250"));
    common::signal(&child, "-TERM");
    assert!(child.wait().unwrap().success());
}

/// Run by root for a server with `user`, `tern dkim keygen` writes the key
/// under data_dir as that user, so the server can still read it after its
/// switch (and its start-up check finds nothing of root's).
#[test]
fn finding_12_root_cli_writes_data_dir_as_the_user() {
    if !running_as_root() {
        eprintln!("not root: cannot test the switch here (CI runs as root)");
        return;
    }
    let (uid, gid) = nobody();
    let dir = tempfile::tempdir().unwrap();
    std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid)).unwrap();
    let addr = common::free_loopback_addr();
    let config = daemon_config(dir.path(), addr, "user = \"nobody\"");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tern"))
        .args([
            "dkim",
            "keygen",
            "example.test",
            "--algorithm",
            "ed25519",
            "--config",
        ])
        .arg(&config)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let key = dir.path().join("data/dkim/example.test/tern-ed25519.key");
    for p in [dir.path().join("data"), dir.path().join("data/dkim"), key] {
        let m = std::fs::metadata(&p).unwrap();
        assert_eq!(
            std::os::unix::fs::MetadataExt::uid(&m),
            uid,
            "{}",
            p.display()
        );
    }
    // The server, started as root, switches to nobody and signs with it.
    let log = dir.path().join("tern.log");
    let mut child = common::spawn_daemon(&config, &log, addr, &[]);
    common::signal(&child, "-TERM");
    assert!(child.wait().unwrap().success());
    let log = std::fs::read_to_string(&log).unwrap();
    assert!(log.contains("DKIM key loaded"), "{log}");
}
