//! Outbound delivery over real TCP on loopback: a scripted SMTP server
//! (`tern_testkit::script`, optionally with STARTTLS or implicit TLS from
//! a self-signed rcgen certificate) records what it receives, and a
//! `StaticResolver` points the test domains at 127.0.0.x addresses. Covers
//! MX fallback, per-recipient results, DNS failures, opportunistic TLS and
//! its plaintext retry, a smarthost with STARTTLS/implicit TLS and AUTH,
//! data encoding on the wire, timeouts and loop detection.

use std::io;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tern_delivery::outbound::{
    ConnectionCache, DomainResult, MessageData, OutboundMessage, OutboundSettings, RemoteRecipient,
    Smarthost, SmarthostTls, deliver_to_domain, deliver_to_domain_cached,
};
use tern_dns::{DnsError, QueryType, StaticResolver};
use tern_queue::{Answer, AttemptResult};
use tern_smtp::client::{ClientTimeouts, StartTlsPolicy};
use tern_testkit::script::{Script, listen, serve, servers};
use tern_types::ServerReply;
use tern_types::dsn::BodyType;
use tokio::net::TcpListener;

mod common;
use common::{sender, stored};

const HELO: &str = "client.example.org";

// ------------------------------------------------------------ The server

// The scripted server is `tern_testkit::script`.

/// A port nothing listens on (on any loopback address used here: the
/// addresses 127.0.0.200+ are never bound by these tests).
async fn dead_port() -> u16 {
    let l = TcpListener::bind("127.0.0.200:0").await.unwrap();
    l.local_addr().unwrap().port()
}

// ------------------------------------------------------------ Fixtures

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn settings(port: u16) -> OutboundSettings {
    let mut s = OutboundSettings::new(HELO);
    s.port = port;
    let t = Duration::from_secs(5);
    s.timeouts = ClientTimeouts {
        greeting: t,
        command: t,
        tls_handshake: t,
        mail: t,
        rcpt: t,
        data_init: t,
        data_block: t,
        data_termination: t,
    };
    s.connect_timeout = Duration::from_secs(2);
    s
}

fn msg(data: &[u8]) -> OutboundMessage<'_> {
    OutboundMessage {
        sender: sender("alice@example.org"),
        body: BodyType::SevenBit,
        smtputf8: false,
        ret: None,
        envid: None,
        data: MessageData::Bytes(data),
    }
}

fn rcpts(addrs: &[&str]) -> Vec<RemoteRecipient> {
    addrs
        .iter()
        .enumerate()
        .map(|(i, a)| stored(i + 10, a))
        .collect()
}

/// example.test → MX 10 mx1 (first), MX 20 mx2 (second).
fn two_mx(first: &str, second: &str) -> StaticResolver {
    StaticResolver::new()
        .with_mx(
            "example.test",
            &[(10, "mx1.example.test"), (20, "mx2.example.test")],
        )
        .with_ips("mx1.example.test", &[ip(first)])
        .with_ips("mx2.example.test", &[ip(second)])
}

fn one_mx(addr: &str) -> StaticResolver {
    StaticResolver::new()
        .with_mx("example.test", &[(10, "mx.example.test")])
        .with_ips("mx.example.test", &[ip(addr)])
}

fn delivered(r: &AttemptResult) -> bool {
    matches!(r, AttemptResult::Delivered(_))
}

fn text(r: &AttemptResult) -> String {
    r.text()
}

fn reply(text: &str) -> ServerReply {
    text.parse().unwrap()
}

fn all_temporary(d: &DomainResult, n: usize) {
    assert_eq!(d.results.len(), n, "{d:?}");
    for (_, r) in &d.results {
        assert!(matches!(r, AttemptResult::Deferred(_)), "{d:?}");
    }
}

/// A self-signed certificate for `name`: the server configuration and the
/// certificate's PEM.
fn tls_for(name: &str) -> (Arc<rustls::ServerConfig>, String) {
    let ck = rcgen::generate_simple_self_signed(vec![name.to_owned()]).unwrap();
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

// ------------------------------------------------------------ Tests

#[tokio::test]
async fn three_recipients_delivered_and_dot_stuffed() {
    let (port, srv) = servers(vec![("127.0.0.1", Script::smtp())]).await;
    let r = rcpts(&["a@example.test", "b@example.test", "c@example.test"]);
    let data = b"Subject: hi\r\n\r\n.hidden\r\nline\r\n.\r\nlast";
    let d = deliver_to_domain(
        &settings(port),
        &one_mx("127.0.0.1"),
        "example.test",
        &msg(data),
        &r,
        1,
    )
    .await;
    assert_eq!(d.results.len(), 3);
    assert_eq!(
        d.results.iter().map(|(i, _)| *i).collect::<Vec<_>>(),
        [10, 11, 12]
    );
    for (_, res) in &d.results {
        assert_eq!(
            res,
            &AttemptResult::Delivered(reply("250 2.0.0 queued as TEST"))
        );
    }
    assert_eq!(d.remote_mta.as_deref(), Some("mx.example.test[127.0.0.1]"));
    assert!(!d.dsn_passed_on);
    let conns = srv[0].conns();
    assert_eq!(conns.len(), 1);
    let c = &conns[0];
    assert_eq!(c.commands[0], format!("EHLO {HELO}"));
    assert!(
        c.commands
            .contains(&"MAIL FROM:<alice@example.org>".to_owned()),
        "{:?}",
        c.commands
    );
    for a in ["a", "b", "c"] {
        assert!(
            c.commands.contains(&format!("RCPT TO:<{a}@example.test>")),
            "{:?}",
            c.commands
        );
    }
    assert_eq!(
        c.data,
        vec![b"Subject: hi\r\n\r\n..hidden\r\nline\r\n..\r\nlast\r\n.\r\n".to_vec()]
    );
    assert_eq!(c.commands.last().unwrap(), "QUIT");
}

#[tokio::test]
async fn per_recipient_mix() {
    let mut script = Script::smtp();
    script.rcpt_reply("later@example.test", "451 4.2.0 try later");
    script.rcpt_reply("nobody@example.test", "550 5.1.1 no such user");
    let (port, srv) = servers(vec![("127.0.0.1", script)]).await;
    let r = rcpts(&[
        "ok@example.test",
        "later@example.test",
        "nobody@example.test",
    ]);
    let d = deliver_to_domain(
        &settings(port),
        &one_mx("127.0.0.1"),
        "example.test",
        &msg(b"x\r\n"),
        &r,
        1,
    )
    .await;
    assert_eq!(
        d.results,
        vec![
            (
                10,
                AttemptResult::Delivered(reply("250 2.0.0 queued as TEST"))
            ),
            (
                11,
                AttemptResult::Deferred(Answer::Server(reply("451 4.2.0 try later")))
            ),
            (
                12,
                AttemptResult::Failed(Answer::Server(reply("550 5.1.1 no such user")))
            ),
        ]
    );
    assert_eq!(srv[0].conns()[0].data.len(), 1);
}

#[tokio::test]
async fn dsn_parameters_passed_on_when_advertised() {
    let mut script = Script::smtp();
    script.extensions.push("DSN".into());
    let (port, srv) = servers(vec![("127.0.0.1", script)]).await;
    let mut r = rcpts(&["a@example.test"]);
    r[0].notify = Some("SUCCESS,FAILURE".parse().unwrap());
    r[0].orcpt = Some("rfc822;a+b@example.test".parse().unwrap());
    let envid = tern_types::dsn::EnvId::parse("ID1").unwrap();
    let mut m = msg(b"x\r\n");
    m.envid = Some(&envid);
    m.ret = Some(tern_types::dsn::Ret::Headers);
    let d = deliver_to_domain(
        &settings(port),
        &one_mx("127.0.0.1"),
        "example.test",
        &m,
        &r,
        1,
    )
    .await;
    assert!(delivered(&d.results[0].1));
    assert!(d.dsn_passed_on);
    let c = &srv[0].conns()[0];
    assert!(
        c.commands
            .iter()
            .any(|l| l.starts_with("MAIL FROM:<alice@example.org>")
                && l.contains("RET=HDRS")
                && l.contains("ENVID=ID1")),
        "{:?}",
        c.commands
    );
    assert!(
        c.commands.contains(
            &"RCPT TO:<a@example.test> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;a+2Bb@example.test"
                .to_owned()
        ),
        "{:?}",
        c.commands
    );
}

#[tokio::test]
async fn refused_first_mx_falls_back_to_second() {
    // mx1 on 127.0.0.201: nothing listens there.
    let (port, srv) = servers(vec![("127.0.0.2", Script::smtp())]).await;
    let d = deliver_to_domain(
        &settings(port),
        &two_mx("127.0.0.201", "127.0.0.2"),
        "example.test",
        &msg(b"x\r\n"),
        &rcpts(&["a@example.test"]),
        1,
    )
    .await;
    assert!(delivered(&d.results[0].1), "{d:?}");
    assert_eq!(d.remote_mta.as_deref(), Some("mx2.example.test[127.0.0.2]"));
    assert_eq!(srv[0].conns().len(), 1);
}

#[tokio::test]
async fn greeting_421_moves_to_next_mx() {
    let mut busy = Script::smtp();
    busy.greeting = "421 4.3.2 too busy\r\n".into();
    let (port, srv) = servers(vec![("127.0.0.3", busy), ("127.0.0.4", Script::smtp())]).await;
    let d = deliver_to_domain(
        &settings(port),
        &two_mx("127.0.0.3", "127.0.0.4"),
        "example.test",
        &msg(b"x\r\n"),
        &rcpts(&["a@example.test", "b@example.test"]),
        1,
    )
    .await;
    assert!(d.results.iter().all(|(_, r)| delivered(r)), "{d:?}");
    assert_eq!(d.remote_mta.as_deref(), Some("mx2.example.test[127.0.0.4]"));
    assert_eq!(srv[0].conns().len(), 1);
    assert!(srv[0].conns()[0].commands.is_empty());
    assert_eq!(srv[1].conns()[0].data.len(), 1);
}

#[tokio::test]
async fn silent_server_times_out_then_next_mx() {
    let mut silent = Script::smtp();
    silent.greeting = String::new();
    let (port, srv) = servers(vec![("127.0.0.5", silent), ("127.0.0.6", Script::smtp())]).await;
    let mut s = settings(port);
    s.timeouts.greeting = Duration::from_millis(300);
    let d = deliver_to_domain(
        &s,
        &two_mx("127.0.0.5", "127.0.0.6"),
        "example.test",
        &msg(b"x\r\n"),
        &rcpts(&["a@example.test"]),
        1,
    )
    .await;
    assert!(delivered(&d.results[0].1), "{d:?}");
    assert_eq!(srv[1].conns().len(), 1);
}

#[tokio::test]
async fn all_mx_down_defers_everyone() {
    let port = dead_port().await;
    let r = rcpts(&["a@example.test", "b@example.test"]);
    let d = deliver_to_domain(
        &settings(port),
        &two_mx("127.0.0.202", "127.0.0.203"),
        "example.test",
        &msg(b"x\r\n"),
        &r,
        1,
    )
    .await;
    all_temporary(&d, 2);
    let t = text(&d.results[0].1);
    assert!(t.starts_with("451 4.4.1 "), "{t}");
    assert!(t.contains("mx2.example.test[127.0.0.203]"), "{t}");
    assert!(t.contains("refused"), "{t}");
    assert_eq!(d.remote_mta, None);
}

#[tokio::test]
async fn null_mx_fails_permanently() {
    let resolver = StaticResolver::new().with_mx("example.test", &[(0, ".")]);
    let d = deliver_to_domain(
        &settings(25),
        &resolver,
        "example.test",
        &msg(b"x\r\n"),
        &rcpts(&["a@example.test", "b@example.test"]),
        1,
    )
    .await;
    assert_eq!(d.results.len(), 2);
    for (_, r) in &d.results {
        let AttemptResult::Failed(t) = r else {
            panic!("{r:?}")
        };
        let t = t.to_string();
        assert!(t.starts_with("556 5.1.10 "), "{t}");
    }
}

#[tokio::test]
async fn nxdomain_fails_permanently() {
    let d = deliver_to_domain(
        &settings(25),
        &StaticResolver::new(),
        "nowhere.test",
        &msg(b"x\r\n"),
        &rcpts(&["a@nowhere.test"]),
        1,
    )
    .await;
    let AttemptResult::Failed(t) = &d.results[0].1 else {
        panic!("{d:?}")
    };
    let t = t.to_string();
    assert!(t.starts_with("550 5.1.2 "), "{t}");
}

#[tokio::test]
async fn temporary_dns_failure_defers() {
    let resolver = StaticResolver::new().with_error(
        "example.test",
        QueryType::Mx,
        DnsError::Temporary {
            name: "example.test".into(),
            query: QueryType::Mx,
            reason: "SERVFAIL".into(),
        },
    );
    let d = deliver_to_domain(
        &settings(25),
        &resolver,
        "example.test",
        &msg(b"x\r\n"),
        &rcpts(&["a@example.test"]),
        1,
    )
    .await;
    all_temporary(&d, 1);
    assert!(text(&d.results[0].1).starts_with("451 4.4.3 "), "{d:?}");
}

#[tokio::test]
async fn address_literal_domain() {
    let (port, srv) = servers(vec![("127.0.0.7", Script::smtp())]).await;
    let d = deliver_to_domain(
        &settings(port),
        &StaticResolver::new(),
        "[127.0.0.7]",
        &msg(b"x\r\n"),
        &rcpts(&["a@[127.0.0.7]"]),
        1,
    )
    .await;
    assert!(delivered(&d.results[0].1), "{d:?}");
    assert!(
        srv[0].conns()[0]
            .commands
            .contains(&"RCPT TO:<a@[127.0.0.7]>".to_owned())
    );
}

#[tokio::test]
async fn opportunistic_starttls_with_self_signed_certificate() {
    let (config, _) = tls_for("mx.example.test");
    let mut script = Script::smtp();
    script.tls = Some(config);
    let (port, srv) = servers(vec![("127.0.0.8", script)]).await;
    let d = deliver_to_domain(
        &settings(port),
        &one_mx("127.0.0.8"),
        "example.test",
        &msg(b"Subject: secret\r\n\r\nbody\r\n"),
        &rcpts(&["a@example.test"]),
        1,
    )
    .await;
    assert!(delivered(&d.results[0].1), "{d:?}");
    let c = &srv[0].conns()[0];
    assert!(c.tls);
    assert_eq!(c.commands[1], "STARTTLS");
    assert_eq!(c.tls_commands[0], format!("EHLO {HELO}"));
    assert!(c.tls_commands.iter().any(|l| l.starts_with("MAIL FROM:")));
    assert_eq!(c.data.len(), 1);
}

#[tokio::test]
async fn broken_starttls_is_retried_without_tls() {
    let mut script = Script::smtp();
    script.broken_tls = true;
    let (port, srv) = servers(vec![("127.0.0.9", script)]).await;
    let d = deliver_to_domain(
        &settings(port),
        &one_mx("127.0.0.9"),
        "example.test",
        &msg(b"x\r\n"),
        &rcpts(&["a@example.test"]),
        1,
    )
    .await;
    assert!(delivered(&d.results[0].1), "{d:?}");
    let conns = srv[0].conns();
    assert_eq!(conns.len(), 2, "{conns:?}");
    assert!(conns[0].commands.contains(&"STARTTLS".to_owned()));
    assert!(!conns[0].commands.iter().any(|l| l.starts_with("MAIL")));
    assert!(!conns[1].commands.contains(&"STARTTLS".to_owned()));
    assert_eq!(conns[1].data.len(), 1);
}

#[tokio::test]
async fn required_tls_policy_does_not_fall_back() {
    let mut script = Script::smtp();
    script.broken_tls = true;
    let (port, srv) = servers(vec![("127.0.0.10", script)]).await;
    let mut s = settings(port);
    s.starttls = StartTlsPolicy::Required;
    let d = deliver_to_domain(
        &s,
        &one_mx("127.0.0.10"),
        "example.test",
        &msg(b"x\r\n"),
        &rcpts(&["a@example.test"]),
        1,
    )
    .await;
    all_temporary(&d, 1);
    assert_eq!(srv[0].conns().len(), 1);
}

fn plain_initial(user: &str, password: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(format!("\0{user}\0{password}"))
}

#[tokio::test]
async fn smarthost_starttls_with_auth_plain() {
    let dir = tempfile::tempdir().unwrap();
    let (config, pem) = tls_for("relay.example.net");
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, pem).unwrap();
    let mut script = Script::smtp();
    script.tls = Some(config);
    script.auth_plain = Some(plain_initial("user@example.org", "s3cret"));
    let (port, srv) = servers(vec![("127.0.0.11", script)]).await;
    let mut s = settings(25);
    s.smarthost = Some(Smarthost {
        host: "relay.example.net".into(),
        port,
        tls: SmarthostTls::Starttls,
        auth: Some(("user@example.org".into(), "s3cret".into())),
        verify_certificate: true,
        ca_file: Some(ca),
    });
    s.validate().unwrap();
    // The destination domain is not looked up at all.
    let resolver = StaticResolver::new().with_ips("relay.example.net", &[ip("127.0.0.11")]);
    let d = deliver_to_domain(
        &s,
        &resolver,
        "far.example",
        &msg(b"x\r\n"),
        &rcpts(&["a@far.example", "b@far.example"]),
        1,
    )
    .await;
    assert!(d.results.iter().all(|(_, r)| delivered(r)), "{d:?}");
    assert_eq!(
        d.remote_mta.as_deref(),
        Some("relay.example.net[127.0.0.11]")
    );
    let c = &srv[0].conns()[0];
    assert!(c.tls);
    let before_tls = &c.commands[..c.commands.len() - c.tls_commands.len()];
    assert!(!before_tls.iter().any(|l| l.starts_with("AUTH")), "{c:?}");
    assert_eq!(c.tls_commands[0], format!("EHLO {HELO}"));
    assert_eq!(
        c.tls_commands[1],
        format!("AUTH PLAIN {}", plain_initial("user@example.org", "s3cret"))
    );
    assert!(
        resolver
            .queries()
            .iter()
            .all(|(_, n)| n == "relay.example.net")
    );
}

#[tokio::test]
async fn smarthost_wrong_password_defers() {
    let (config, _) = tls_for("relay.example.net");
    let mut script = Script::smtp();
    script.tls = Some(config);
    script.auth_plain = Some(plain_initial("user", "right"));
    let (port, _srv) = servers(vec![("127.0.0.12", script)]).await;
    let mut s = settings(25);
    s.smarthost = Some(Smarthost {
        host: "127.0.0.12".into(),
        port,
        tls: SmarthostTls::Starttls,
        auth: Some(("user".into(), "wrong".into())),
        verify_certificate: false,
        ca_file: None,
    });
    let d = deliver_to_domain(
        &s,
        &StaticResolver::new(),
        "far.example",
        &msg(b"x\r\n"),
        &rcpts(&["a@far.example"]),
        1,
    )
    .await;
    all_temporary(&d, 1);
    let t = text(&d.results[0].1);
    assert!(t.starts_with("451 4.7.8 "), "{t}");
    assert!(t.contains("535 5.7.8"), "{t}");
}

#[tokio::test]
async fn smarthost_untrusted_certificate_defers() {
    let dir = tempfile::tempdir().unwrap();
    let (config, _) = tls_for("relay.example.net");
    let (_, other_pem) = tls_for("relay.example.net");
    let ca = dir.path().join("other.pem");
    std::fs::write(&ca, other_pem).unwrap();
    let mut script = Script::smtp();
    script.tls = Some(config);
    let (port, srv) = servers(vec![("127.0.0.13", script)]).await;
    let mut s = settings(25);
    s.smarthost = Some(Smarthost {
        host: "relay.example.net".into(),
        port,
        tls: SmarthostTls::Starttls,
        auth: None,
        verify_certificate: true,
        ca_file: Some(ca),
    });
    let resolver = StaticResolver::new().with_ips("relay.example.net", &[ip("127.0.0.13")]);
    let d = deliver_to_domain(
        &s,
        &resolver,
        "far.example",
        &msg(b"x\r\n"),
        &rcpts(&["a@far.example"]),
        1,
    )
    .await;
    all_temporary(&d, 1);
    // No retry in plaintext for a smarthost, and nothing sent.
    let conns = srv[0].conns();
    assert_eq!(conns.len(), 1);
    assert!(!conns[0].commands.iter().any(|l| l.starts_with("MAIL")));
}

#[tokio::test]
async fn smarthost_implicit_tls() {
    let (config, _) = tls_for("relay.example.net");
    let mut script = Script::smtp();
    script.tls = Some(config);
    script.implicit_tls = true;
    let (port, srv) = servers(vec![("127.0.0.14", script)]).await;
    let mut s = settings(25);
    s.smarthost = Some(Smarthost {
        host: "[127.0.0.14]".into(),
        port,
        tls: SmarthostTls::Implicit,
        auth: None,
        verify_certificate: false,
        ca_file: None,
    });
    let d = deliver_to_domain(
        &s,
        &StaticResolver::new(),
        "far.example",
        &msg(b"x\r\n"),
        &rcpts(&["a@far.example"]),
        1,
    )
    .await;
    assert!(delivered(&d.results[0].1), "{d:?}");
    let c = &srv[0].conns()[0];
    assert!(c.tls);
    assert!(!c.commands.contains(&"STARTTLS".to_owned()));
}

#[tokio::test]
async fn smarthost_auth_never_in_plaintext() {
    let mut script = Script::smtp();
    script.auth_plain = Some(plain_initial("user", "pw"));
    let (port, srv) = servers(vec![("127.0.0.15", script)]).await;
    let mut s = settings(25);
    s.smarthost = Some(Smarthost {
        host: "127.0.0.15".into(),
        port,
        tls: SmarthostTls::None,
        auth: Some(("user".into(), "pw".into())),
        verify_certificate: false,
        ca_file: None,
    });
    let d = deliver_to_domain(
        &s,
        &StaticResolver::new(),
        "far.example",
        &msg(b"x\r\n"),
        &rcpts(&["a@far.example"]),
        1,
    )
    .await;
    all_temporary(&d, 1);
    assert!(text(&d.results[0].1).contains("4.7.10"), "{d:?}");
    for c in srv[0].conns() {
        assert!(!c.commands.iter().any(|l| l.starts_with("AUTH")), "{c:?}");
    }
}

#[tokio::test]
async fn bare_lf_and_leading_dots_are_normalised_on_the_wire() {
    let (port, srv) = servers(vec![("127.0.0.16", Script::smtp())]).await;
    let data = b".first\nbare lf\n.\nsmuggle\r.\rMAIL FROM:<x@y>\n\r\n.\nend";
    let d = deliver_to_domain(
        &settings(port),
        &one_mx("127.0.0.16"),
        "example.test",
        &msg(data),
        &rcpts(&["a@example.test"]),
        1,
    )
    .await;
    assert!(delivered(&d.results[0].1), "{d:?}");
    let c = &srv[0].conns()[0];
    assert_eq!(
        c.data,
        vec![
            b"..first\r\nbare lf\r\n..\r\nsmuggle\r\n..\r\nMAIL FROM:<x@y>\r\n\r\n..\r\nend\r\n.\r\n"
                .to_vec()
        ]
    );
    // Exactly one transaction: nothing after the message was read as a command.
    assert_eq!(
        c.commands
            .iter()
            .filter(|l| l.starts_with("MAIL FROM:"))
            .count(),
        1
    );
}

#[tokio::test]
async fn large_message_streams_in_chunks() {
    let (port, srv) = servers(vec![("127.0.0.17", Script::smtp())]).await;
    let mut data = Vec::new();
    for i in 0..20_000 {
        data.extend_from_slice(format!(".line {i} of a long message\n").as_bytes());
    }
    let d = deliver_to_domain(
        &settings(port),
        &one_mx("127.0.0.17"),
        "example.test",
        &msg(&data),
        &rcpts(&["a@example.test"]),
        1,
    )
    .await;
    assert!(delivered(&d.results[0].1), "{d:?}");
    let got = &srv[0].conns()[0].data[0];
    let want = tern_smtp::client::DataEncoder::encode_all(&data);
    assert!(data.len() > 3 * tern_delivery::outbound::DATA_CHUNK);
    assert_eq!(got.len(), want.len());
    assert!(got == &want);
}

#[tokio::test]
async fn connection_lost_during_data_defers() {
    let mut script = Script::smtp();
    script.close_in_data = true;
    let (port, srv) = servers(vec![("127.0.0.18", script), ("127.0.0.19", Script::smtp())]).await;
    let d = deliver_to_domain(
        &settings(port),
        &two_mx("127.0.0.18", "127.0.0.19"),
        "example.test",
        &msg(b"x\r\n"),
        &rcpts(&["a@example.test", "b@example.test"]),
        1,
    )
    .await;
    // The transaction had started: its results stand, no second MX.
    all_temporary(&d, 2);
    assert_eq!(
        d.remote_mta.as_deref(),
        Some("mx1.example.test[127.0.0.18]")
    );
    assert!(srv[1].conns().is_empty());
}

#[tokio::test]
async fn loop_to_ourselves_bounces() {
    let mut script = Script::smtp();
    script.greeting = format!("220 {HELO} ESMTP\r\n");
    let (port, srv) = servers(vec![("127.0.0.20", script)]).await;
    let d = deliver_to_domain(
        &settings(port),
        &one_mx("127.0.0.20"),
        "example.test",
        &msg(b"x\r\n"),
        &rcpts(&["a@example.test", "b@example.test"]),
        1,
    )
    .await;
    assert_eq!(d.results.len(), 2);
    for (_, r) in &d.results {
        let AttemptResult::Failed(t) = r else {
            panic!("{r:?}")
        };
        let t = t.to_string();
        assert!(t.starts_with("554 5.4.6 "), "{t}");
        assert!(t.contains("loops back to myself"), "{t}");
    }
    let conns = srv[0].conns();
    assert!(!conns[0].commands.iter().any(|l| l.starts_with("MAIL")));
}

#[tokio::test]
async fn loop_detected_from_ehlo_name() {
    let mut script = Script::smtp();
    script.ehlo_name = HELO.to_ascii_uppercase();
    let (port, srv) = servers(vec![("127.0.0.21", script)]).await;
    let d = deliver_to_domain(
        &settings(port),
        &one_mx("127.0.0.21"),
        "example.test",
        &msg(b"x\r\n"),
        &rcpts(&["a@example.test"]),
        1,
    )
    .await;
    assert!(
        matches!(&d.results[0].1, AttemptResult::Failed(t) if t.to_string().starts_with("554 5.4.6")),
        "{d:?}"
    );
    assert!(
        !srv[0].conns()[0]
            .commands
            .iter()
            .any(|l| l.starts_with("MAIL"))
    );
}

#[tokio::test]
async fn invalid_addresses_fail_alone() {
    let (port, srv) = servers(vec![("127.0.0.22", Script::smtp())]).await;
    let r = rcpts(&["good@example.test", "bad address@example.test"]);
    let d = deliver_to_domain(
        &settings(port),
        &one_mx("127.0.0.22"),
        "example.test",
        &msg(b"x\r\n"),
        &r,
        1,
    )
    .await;
    assert_eq!(d.results.len(), 2);
    assert_eq!(d.results[0].0, 10);
    assert!(delivered(&d.results[0].1));
    assert_eq!(d.results[1].0, 11);
    assert!(
        matches!(&d.results[1].1, AttemptResult::Failed(t) if t.to_string().starts_with("553 5.1.3"))
    );
    assert_eq!(srv[0].conns().len(), 1);
}

/// Recipients whose stored address no longer parses, alone in their
/// group, fail at once: no DNS query, no connection.
#[tokio::test]
async fn unreadable_addresses_alone_ask_no_dns() {
    let resolver = StaticResolver::new();
    let r = rcpts(&["no at sign", "bad address@example.test"]);
    assert!(r.iter().all(|r| r.unreadable.is_some()));
    let d = deliver_to_domain(&settings(25), &resolver, "", &msg(b"x\r\n"), &r, 1).await;
    assert_eq!(d.results.len(), 2);
    for ((index, result), (want, text)) in d
        .results
        .iter()
        .zip([(10, "no at sign"), (11, "bad address@example.test")])
    {
        assert_eq!(*index, want);
        let AttemptResult::Failed(t) = result else {
            panic!("{d:?}")
        };
        let t = t.to_string();
        assert!(t.starts_with("553 5.1.3"), "{t}");
        assert!(t.contains(text), "the reason names the stored text: {t}");
    }
    assert!(resolver.queries().is_empty(), "{:?}", resolver.queries());
    assert_eq!(d.remote_mta, None);
}

#[tokio::test]
async fn null_sender_is_sent_as_empty_path() {
    let (port, srv) = servers(vec![("127.0.0.23", Script::smtp())]).await;
    let mut m = msg(b"x\r\n");
    m.sender = sender("");
    let d = deliver_to_domain(
        &settings(port),
        &one_mx("127.0.0.23"),
        "example.test",
        &m,
        &rcpts(&["a@example.test"]),
        1,
    )
    .await;
    assert!(delivered(&d.results[0].1), "{d:?}");
    assert!(
        srv[0].conns()[0]
            .commands
            .iter()
            .any(|l| l.starts_with("MAIL FROM:<>"))
    );
}

#[tokio::test]
async fn rejection_while_streaming_fails_the_message() {
    let mut script = Script::smtp();
    script.reject_in_data = Some("554 5.3.4 message too big for us".into());
    let (port, _srv) = servers(vec![("127.0.0.24", script)]).await;
    let mut s = settings(port);
    s.timeouts.data_block = Duration::from_millis(300);
    let line = b"0123456789012345678901234567890123456789012345678901234567890123456789\r\n";
    let data = line.repeat(16 * 1024 * 1024 / line.len());
    let d = deliver_to_domain(
        &s,
        &one_mx("127.0.0.24"),
        "example.test",
        &msg(&data),
        &rcpts(&["a@example.test", "b@example.test"]),
        1,
    )
    .await;
    assert_eq!(d.results.len(), 2);
    for (_, r) in &d.results {
        assert_eq!(
            r,
            &AttemptResult::Failed(Answer::Server(reply("554 5.3.4 message too big for us")))
        );
    }
}

#[tokio::test]
async fn smarthost_falls_back_to_auth_login() {
    let (config, _) = tls_for("relay.example.net");
    let mut script = Script::smtp();
    script.tls = Some(config);
    script.auth_login = Some(("user".into(), "pass word".into()));
    let (port, srv) = servers(vec![("127.0.0.25", script)]).await;
    let mut s = settings(25);
    s.smarthost = Some(Smarthost {
        host: "127.0.0.25".into(),
        port,
        tls: SmarthostTls::Starttls,
        auth: Some(("user".into(), "pass word".into())),
        verify_certificate: false,
        ca_file: None,
    });
    let d = deliver_to_domain(
        &s,
        &StaticResolver::new(),
        "far.example",
        &msg(b"x\r\n"),
        &rcpts(&["a@far.example"]),
        1,
    )
    .await;
    assert!(delivered(&d.results[0].1), "{d:?}");
    let conns = srv[0].conns();
    assert_eq!(conns.len(), 2, "{conns:?}");
    assert!(!conns[0].commands.iter().any(|l| l.starts_with("MAIL")));
    assert!(conns[1].tls_commands.contains(&"AUTH LOGIN".to_owned()));
    assert_eq!(conns[1].data.len(), 1);
}

/// Collects formatted log output.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Every log line of this test binary, at trace level (a process-wide
/// subscriber: a thread-local one races with tracing's callsite cache when
/// other tests log in parallel).
fn global_logs() -> &'static Captured {
    static LOGS: std::sync::OnceLock<Captured> = std::sync::OnceLock::new();
    LOGS.get_or_init(|| {
        let logs = Captured::default();
        let writer = logs.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .finish();
        tracing::subscriber::set_global_default(subscriber).unwrap();
        logs
    })
}

#[tokio::test]
async fn logs_never_show_credentials() {
    let logs = global_logs();
    let (config, _) = tls_for("relay.example.net");
    let mut script = Script::smtp();
    script.tls = Some(config);
    script.auth_plain = Some(plain_initial("user", "hunter2-secret"));
    let (port, _srv) = servers(vec![("127.0.0.26", script)]).await;
    let mut s = settings(25);
    s.smarthost = Some(Smarthost {
        host: "127.0.0.26".into(),
        port,
        tls: SmarthostTls::Starttls,
        auth: Some(("user".into(), "hunter2-secret".into())),
        verify_certificate: false,
        ca_file: None,
    });
    assert!(!format!("{s:?}").contains("hunter2"));
    let d = deliver_to_domain(
        &s,
        &StaticResolver::new(),
        "far.example",
        &msg(b"x\r\n"),
        &rcpts(&["a@far.example"]),
        1,
    )
    .await;
    assert!(delivered(&d.results[0].1), "{d:?}");
    let all = String::from_utf8_lossy(&logs.0.lock().unwrap()).into_owned();
    let text: String = all
        .lines()
        .filter(|l| l.contains("127.0.0.26") || l.contains("far.example"))
        .collect::<Vec<_>>()
        .join("\n");
    // The log is there, at trace level, with the commands...
    assert!(text.contains("outbound: connecting"), "{text}");
    assert!(text.contains("outbound: recipient result"), "{text}");
    assert!(text.contains("MAIL FROM:<alice@example.org>"), "{text}");
    assert!(text.contains("credentials, not logged"), "{text}");
    let text = all;
    // ...but never the credentials, in any form.
    let b64 = plain_initial("user", "hunter2-secret");
    assert!(!text.contains("hunter2"), "{text}");
    assert!(!text.contains(&b64), "{text}");
    assert!(!text.contains(&b64[..16]), "{text}");
}

#[tokio::test]
async fn ipv6_address_literal() {
    let Ok(listener) = listen("::1", 0, false) else {
        eprintln!("no IPv6 loopback here; nothing to test");
        return;
    };
    let port = listener.local_addr().unwrap().port();
    let srv = serve(listener, Script::smtp());
    let d = deliver_to_domain(
        &settings(port),
        &StaticResolver::new(),
        "[IPv6:::1]",
        &msg(b"x\r\n"),
        &rcpts(&["a@[IPv6:::1]"]),
        1,
    )
    .await;
    assert!(delivered(&d.results[0].1), "{d:?}");
    assert_eq!(d.remote_mta.as_deref(), Some("::1[::1]"));
    assert_eq!(srv.conns()[0].data.len(), 1);
}

#[tokio::test]
async fn no_recipients_no_lookup() {
    let resolver = StaticResolver::new();
    let d = deliver_to_domain(
        &settings(25),
        &resolver,
        "example.test",
        &msg(b"x\r\n"),
        &[],
        1,
    )
    .await;
    assert!(d.results.is_empty());
    assert!(resolver.queries().is_empty());
}

#[tokio::test]
async fn smarthost_implicit_tls_handshake_failure_defers() {
    // A plaintext server where TLS is expected: the handshake fails.
    let (port, srv) = servers(vec![("127.0.0.27", Script::smtp())]).await;
    let mut s = settings(25);
    s.smarthost = Some(Smarthost {
        host: "127.0.0.27".into(),
        port,
        tls: SmarthostTls::Implicit,
        auth: None,
        verify_certificate: false,
        ca_file: None,
    });
    let d = deliver_to_domain(
        &s,
        &StaticResolver::new(),
        "far.example",
        &msg(b"x\r\n"),
        &rcpts(&["a@far.example"]),
        1,
    )
    .await;
    all_temporary(&d, 1);
    let t = text(&d.results[0].1);
    assert!(
        t.starts_with("451 4.7.0 127.0.0.27[127.0.0.27]: TLS handshake failed"),
        "{t}"
    );
    // Only the ClientHello reached the server: no SMTP command in clear.
    for c in srv[0].conns() {
        assert!(
            !c.commands
                .iter()
                .any(|l| l.starts_with("EHLO") || l.starts_with("MAIL")),
            "{c:?}"
        );
    }
}

// ------------------------------------------------------------ Connection reuse

#[tokio::test]
async fn cached_connection_carries_several_messages() {
    let (port, srv) = servers(vec![("127.0.0.1", Script::smtp())]).await;
    let cache = ConnectionCache::new(Duration::from_secs(30), 4);
    let resolver = one_mx("127.0.0.1");
    for (n, body) in [b"one\r\n", b"two\r\n", b"six\r\n"].iter().enumerate() {
        let d = deliver_to_domain_cached(
            &settings(port),
            &resolver,
            "example.test",
            &msg(*body),
            &rcpts(&[&format!("u{n}@example.test")]),
            1,
            Some(&cache),
        )
        .await;
        assert!(d.results.iter().all(|(_, r)| delivered(r)), "{d:?}");
        assert_eq!(d.remote_mta.as_deref(), Some("mx.example.test[127.0.0.1]"));
        assert_eq!(cache.idle_count(), 1);
    }
    // One connection, three transactions, no QUIT yet; one DNS lookup.
    let conns = srv[0].conns();
    assert_eq!(conns.len(), 1, "{conns:?}");
    let c = &conns[0];
    assert_eq!(c.data.len(), 3);
    assert_eq!(
        c.commands.iter().filter(|l| l.starts_with("EHLO")).count(),
        1
    );
    assert_eq!(
        c.commands
            .iter()
            .filter(|l| l.starts_with("MAIL FROM"))
            .count(),
        3
    );
    assert!(!c.commands.contains(&"QUIT".to_owned()));
    assert_eq!(
        resolver
            .queries()
            .iter()
            .filter(|(t, _)| *t == QueryType::Mx)
            .count(),
        1
    );
    cache.close_all().await;
    assert_eq!(cache.idle_count(), 0);
    for _ in 0..100 {
        if srv[0].conns()[0].commands.last().map(String::as_str) == Some("QUIT") {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("no QUIT after close_all: {:?}", srv[0].conns());
}

#[tokio::test]
async fn dead_cached_connection_is_replaced_and_delivers_once() {
    let mut script = Script::smtp();
    script.close_after_data = true;
    let (port, srv) = servers(vec![("127.0.0.1", script)]).await;
    let cache = ConnectionCache::new(Duration::from_secs(30), 4);
    let resolver = one_mx("127.0.0.1");
    for n in 0..2 {
        let d = deliver_to_domain_cached(
            &settings(port),
            &resolver,
            "example.test",
            &msg(b"x\r\n"),
            &rcpts(&[&format!("u{n}@example.test")]),
            1,
            Some(&cache),
        )
        .await;
        assert!(d.results.iter().all(|(_, r)| delivered(r)), "{d:?}");
        // Let the server's close arrive.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let conns = srv[0].conns();
    assert_eq!(conns.len(), 2, "{conns:?}");
    assert!(conns.iter().all(|c| c.data.len() == 1), "{conns:?}");
}

#[tokio::test]
async fn idle_limit_zero_means_a_new_connection_each_time() {
    let (port, srv) = servers(vec![("127.0.0.1", Script::smtp())]).await;
    let cache = ConnectionCache::new(Duration::ZERO, 4);
    for n in 0..2 {
        let d = deliver_to_domain_cached(
            &settings(port),
            &one_mx("127.0.0.1"),
            "example.test",
            &msg(b"x\r\n"),
            &rcpts(&[&format!("u{n}@example.test")]),
            1,
            Some(&cache),
        )
        .await;
        assert!(d.results.iter().all(|(_, r)| delivered(r)), "{d:?}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    cache.sweep().await;
    assert_eq!(cache.idle_count(), 0);
    assert_eq!(srv[0].conns().len(), 2);
}

#[tokio::test]
async fn cached_smarthost_connection_keeps_tls_and_auth() {
    let dir = tempfile::tempdir().unwrap();
    let (config, pem) = tls_for("relay.example.net");
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, pem).unwrap();
    let mut script = Script::smtp();
    script.tls = Some(config);
    script.auth_plain = Some(plain_initial("user@example.org", "s3cret"));
    let (port, srv) = servers(vec![("127.0.0.12", script)]).await;
    let mut s = settings(25);
    s.smarthost = Some(Smarthost {
        host: "relay.example.net".into(),
        port,
        tls: SmarthostTls::Starttls,
        auth: Some(("user@example.org".into(), "s3cret".into())),
        verify_certificate: true,
        ca_file: Some(ca),
    });
    let resolver = StaticResolver::new().with_ips("relay.example.net", &[ip("127.0.0.12")]);
    let cache = ConnectionCache::new(Duration::from_secs(30), 4);
    // Two different domains share the smarthost's connection.
    for domain in ["far.example", "other.example"] {
        let d = deliver_to_domain_cached(
            &s,
            &resolver,
            domain,
            &msg(b"x\r\n"),
            &rcpts(&[&format!("a@{domain}")]),
            1,
            Some(&cache),
        )
        .await;
        assert!(d.results.iter().all(|(_, r)| delivered(r)), "{d:?}");
    }
    let conns = srv[0].conns();
    assert_eq!(conns.len(), 1, "{conns:?}");
    let c = &conns[0];
    assert!(c.tls);
    assert_eq!(c.data.len(), 2);
    // AUTH once, and every MAIL FROM inside TLS.
    assert_eq!(
        c.commands.iter().filter(|l| l.starts_with("AUTH")).count(),
        1
    );
    assert_eq!(
        c.tls_commands
            .iter()
            .filter(|l| l.starts_with("MAIL FROM"))
            .count(),
        2
    );
    cache.close_all().await;
}

// ------------------------------------------------------------ Streaming from a file

#[tokio::test]
async fn message_streams_from_the_first_len_bytes_of_a_file() {
    let (port, srv) = servers(vec![("127.0.0.1", Script::smtp())]).await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("queued");
    // A spool file: the message, then what follows it (the envelope).
    let mut body = b"Subject: big\r\n\r\n".to_vec();
    for i in 0..20_000 {
        body.extend_from_slice(format!("line {i}\r\n").as_bytes());
    }
    body.extend_from_slice(b".starts with a dot\r\n");
    let mut file = body.clone();
    file.extend_from_slice(b"{\"envelope\":\"not part of the message\"}TRAILER");
    std::fs::write(&path, &file).unwrap();
    let mut m = msg(b"");
    m.data = MessageData::File {
        path: &path,
        len: body.len() as u64,
    };
    let d = deliver_to_domain(
        &settings(port),
        &one_mx("127.0.0.1"),
        "example.test",
        &m,
        &rcpts(&["a@example.test"]),
        1,
    )
    .await;
    assert!(d.results.iter().all(|(_, r)| delivered(r)), "{d:?}");
    let conns = srv[0].conns();
    let got = &conns[0].data[0];
    let mut expected = body.replace_dot_line();
    expected.extend_from_slice(b".\r\n");
    assert_eq!(got.len(), expected.len());
    assert!(got == &expected, "the wire data differs from the message");
}

#[tokio::test]
async fn a_file_shorter_than_stated_is_never_sent_as_complete() {
    let (port, srv) = servers(vec![("127.0.0.1", Script::smtp())]).await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("queued");
    std::fs::write(&path, b"Subject: cut\r\n\r\nonly this\r\n").unwrap();
    let mut m = msg(b"");
    m.data = MessageData::File {
        path: &path,
        len: 10_000,
    };
    let d = deliver_to_domain(
        &settings(port),
        &one_mx("127.0.0.1"),
        "example.test",
        &m,
        &rcpts(&["a@example.test"]),
        1,
    )
    .await;
    all_temporary(&d, 1);
    // The server never saw an end of data.
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(srv[0].conns()[0].data.is_empty(), "{:?}", srv[0].conns());
}

/// Dot-stuffing of the test body: lines starting with "." get another.
trait DotStuff {
    fn replace_dot_line(&self) -> Vec<u8>;
}

impl DotStuff for Vec<u8> {
    fn replace_dot_line(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.len() + 16);
        let mut at_line_start = true;
        for &b in self {
            if at_line_start && b == b'.' {
                out.push(b'.');
            }
            out.push(b);
            at_line_start = b == b'\n';
        }
        out
    }
}
