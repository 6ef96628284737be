//! The admin HTTP API and the autoconfig listener, fetched with a real
//! HTTP client (hyper's) against a running server: the API answers what
//! the CLI answers (the same service code behind both), the token guards
//! a listener off loopback, and the autoconfig documents name exactly the
//! listeners that exist.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};

use common::{Raw, TestServer, http, http_get};
use serde_json::Value;

/// `tern ARGS --config CONFIG` (stdin: `input`), its stdout as JSON.
fn cli_json(config: &Path, args: &[&str], input: Option<&str>) -> Value {
    let mut child = Command::new(env!("CARGO_BIN_EXE_tern"))
        .args(args)
        .arg("--config")
        .arg(config)
        .stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    if let Some(text) = input {
        use std::io::Write as _;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
    }
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "tern {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// A queue answer without the fields that move with the clock (a pending
/// recipient's next attempt is "now").
fn timeless(mut v: Value) -> Value {
    if let Some(o) = v.as_object_mut() {
        o.remove("now");
        o.remove("age");
        for m in ["messages", "message"] {
            match o.get_mut(m) {
                Some(Value::Array(list)) => {
                    for x in list {
                        if let Some(x) = x.as_object_mut() {
                            x.remove("age");
                            x.remove("next_attempt");
                        }
                    }
                }
                Some(Value::Object(x)) => {
                    x.remove("age");
                    x.remove("next_attempt");
                }
                _ => {}
            }
        }
    }
    v
}

async fn api(addr: SocketAddr, method: &str, path: &str, body: &str) -> (u16, Value) {
    let (status, ctype, text) = http(addr, method, path, &[], body.as_bytes()).await;
    assert!(ctype.starts_with("application/json"), "{ctype}: {text}");
    (status, serde_json::from_str(&text).unwrap())
}

/// The listeners after the MX one (the mail services on fixed free ports,
/// so that the CLI, which reads only the configuration, names them too).
fn listeners() -> String {
    format!(
        "
[[listener]]
address = \"127.0.0.1:0\"
role = \"admin\"
[[listener]]
address = \"127.0.0.1:0\"
role = \"autoconfig\"
[[listener]]
address = \"{}\"
role = \"submissions\"
[[listener]]
address = \"{}\"
role = \"imaps\"
[[listener]]
address = \"127.0.0.1:0\"
role = \"autoconfigs\"
[[listener]]
address = \"0.0.0.0:0\"
role = \"admin\"
",
        common::free_loopback_addr(),
        common::free_loopback_addr()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_answers_what_the_cli_answers() {
    let dir = tempfile::tempdir().unwrap();
    let users = dir.path().join("users.toml");
    common::add_user(&users, "alice@example.test", "alice-pw");
    let token_file = dir.path().join("admin-token");
    let extra = format!(
        "{}[auth]\nusers_file = {users:?}\n[admin]\ntoken_file = {token_file:?}\n\
         [delivery]\nremote = false\n",
        listeners()
    );
    // The config file the CLI reads is the one the server runs on.
    let data_dir = dir.path().join("data");
    let text = format!("data_dir = {data_dir:?}\n{}\n{extra}", common::BASE_CONFIG);
    let config_path = dir.path().join("tern.toml");
    std::fs::write(&config_path, &text).unwrap();

    // An admin listener off loopback needs a token first.
    let config = tern::Config::parse(&text).unwrap();
    let err = tern::start(&config).await.unwrap_err();
    assert!(format!("{err:#}").contains("tern admin token"), "{err:#}");
    let out = Command::new(env!("CARGO_BIN_EXE_tern"))
        .args(["admin", "token", "--config"])
        .arg(&config_path)
        .output()
        .unwrap();
    assert!(out.status.success());
    let token = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    assert!(token.starts_with("tern_"), "{token}");
    assert!(
        !std::fs::read_to_string(&token_file)
            .unwrap()
            .contains(&token[5..])
    );

    let running = tern::start(&config).await.unwrap();
    let a = running.addrs().to_vec();
    let (mx, admin, autoconfig, submissions, imaps, public_admin) =
        (a[0], a[1], a[2], a[3], a[4], a[6]);
    let srv = TestServer {
        running: Some(running),
        addr: mx,
        dir,
    };

    // Health.
    let (status, _, body) = http_get(admin, "/healthz").await;
    assert_eq!((status, body.as_str()), (200, "ok\n"));
    let (status, ready) = api(admin, "GET", "/readyz", "").await;
    assert_eq!(status, 200, "{ready}");
    assert_eq!(ready["checks"]["spool"], "ok");
    assert_eq!(ready["checks"]["queue"], "ok");
    assert_eq!(ready["checks"]["listeners"], "ok");

    // The token, off loopback (reached here through 127.0.0.1).
    let public = SocketAddr::from(([127, 0, 0, 1], public_admin.port()));
    assert_eq!(http_get(public, "/healthz").await.0, 200);
    assert_eq!(http_get(public, "/api/queue").await.0, 401);
    assert_eq!(http_get(public, "/metrics").await.0, 401);
    let wrong = [("authorization", "Bearer tern_0000")];
    assert_eq!(http(public, "GET", "/api/queue", &wrong, b"").await.0, 401);
    let bearer = format!("Bearer {token}");
    let right = [("authorization", bearer.as_str())];
    assert_eq!(http(public, "GET", "/api/queue", &right, b"").await.0, 200);
    assert_eq!(http(public, "GET", "/metrics", &right, b"").await.0, 200);

    // Queue: a message for a remote address waits (remote delivery off).
    tokio::task::spawn_blocking(move || {
        let mut c = Raw::greeted(mx);
        assert!(c.cmd("EHLO client.test").starts_with("250"));
        let r = c.send_mail("x@remote.test", "fwd@example.test", "Subject: q\r\n\r\nhi");
        assert!(r.starts_with("250"), "{r}");
        c.cmd("QUIT");
    })
    .await
    .unwrap();
    let (status, list) = api(admin, "GET", "/api/queue", "").await;
    assert_eq!(status, 200);
    let id = list["messages"][0]["id"].as_str().unwrap().to_owned();
    let cli = cli_json(
        srv.dir.path().join("tern.toml").as_path(),
        &["queue", "list", "--json"],
        None,
    );
    assert_eq!(timeless(list), timeless(cli));

    let (status, held) = api(admin, "POST", &format!("/api/queue/{id}/hold"), "").await;
    assert_eq!((status, held["result"].as_str()), (200, Some("done")));
    let config_path = srv.dir.path().join("tern.toml");
    let show = cli_json(&config_path, &["queue", "show", &id, "--json"], None);
    assert_eq!(show["message"]["held"], true);

    // Trace: the API and `tern trace --json` read the same journal.
    let (status, traced) = api(admin, "GET", &format!("/api/trace?id={id}"), "").await;
    assert_eq!(status, 200, "{traced}");
    assert_eq!(traced[0]["queue_id"], id.as_str());
    assert_eq!(traced[0]["records"][0]["event"], "received");
    let cli = cli_json(&config_path, &["trace", &id, "--json"], None);
    assert_eq!(traced, cli);
    let (status, by_to) = api(admin, "GET", "/api/trace?to=fwd@example.test&since=1h", "").await;
    assert_eq!(status, 200);
    assert_eq!(by_to.as_array().map(Vec::len), Some(1), "{by_to}");
    let (status, _) = api(admin, "GET", "/api/trace?since=tomorrow", "").await;
    assert_eq!(status, 400);
    let (_, api_show) = api(admin, "GET", &format!("/api/queue/{id}"), "").await;
    assert_eq!(timeless(api_show), timeless(show));
    // The admin socket's own protocol, over HTTP.
    let (status, released) = api(
        admin,
        "POST",
        "/api/queue",
        &format!(r#"{{"cmd":"release","id":"{id}"}}"#),
    )
    .await;
    assert_eq!(
        (status, released["action"].as_str()),
        (200, Some("release"))
    );
    let (status, _) = api(admin, "GET", "/api/queue/0000000000000000", "").await;
    assert_eq!(status, 404);
    let (status, _) = api(admin, "GET", "/api/queue/..%2Fetc", "").await;
    assert_eq!(status, 404);
    let (status, _) = api(admin, "DELETE", &format!("/api/queue/{id}"), "").await;
    assert_eq!(status, 200);
    let cli = cli_json(&config_path, &["queue", "list", "--json"], None);
    assert_eq!(cli["messages"].as_array().unwrap().len(), 0);

    // Users: added through the API, listed by the CLI, and the other way.
    let (status, added) = api(
        admin,
        "POST",
        "/api/users",
        r#"{"address":"carol@example.test","password":"carol-pw"}"#,
    )
    .await;
    assert_eq!((status, added["result"].as_str()), (200, Some("added")));
    let (status, _) = api(
        admin,
        "POST",
        "/api/users",
        r#"{"address":"carol@example.test","password":"again"}"#,
    )
    .await;
    assert_eq!(status, 409);
    cli_json(
        &config_path,
        &["user", "add", "dave@example.test", "--json"],
        Some("dave-pw\n"),
    );
    let (_, api_list) = api(admin, "GET", "/api/users", "").await;
    let cli_list = cli_json(&config_path, &["user", "list", "--json"], None);
    assert_eq!(api_list, cli_list);
    let names: Vec<&str> = api_list["users"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["address"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "alice@example.test",
            "carol@example.test",
            "dave@example.test"
        ]
    );
    assert!(!api_list.to_string().contains("$argon2"));
    let (status, _) = api(
        admin,
        "PUT",
        "/api/users/carol%40example.test/password",
        r#"{"password":"carol-pw-2"}"#,
    )
    .await;
    assert_eq!(status, 200);
    let (status, _) = api(admin, "DELETE", "/api/users/dave@example.test", "").await;
    assert_eq!(status, 200);
    let (status, _) = api(admin, "DELETE", "/api/users/dave@example.test", "").await;
    assert_eq!(status, 404);
    let cli_list = cli_json(&config_path, &["user", "list", "--json"], None);
    assert_eq!(cli_list["users"].as_array().unwrap().len(), 2);

    // DNS records, SRV records from the listeners included.
    let (status, records) = api(admin, "GET", "/api/dns/example.test", "").await;
    assert_eq!(status, 200);
    let cli = cli_json(&config_path, &["dns", "example.test", "--json"], None);
    assert_eq!(records, cli);
    let text = records.to_string();
    assert!(
        text.contains(&format!(
            "_submissions._tcp.example.test. 3600 IN SRV 0 1 {} mx.example.test.",
            submissions.port()
        )),
        "{text}"
    );
    assert!(text.contains("_pop3s._tcp.example.test. 3600 IN SRV 0 0 0 ."));
    let (status, _) = api(admin, "GET", "/api/dns/other.test", "").await;
    assert_eq!(status, 404);

    // Autoconfig: exactly the listeners that exist.
    let (status, ctype, doc) = http_get(
        autoconfig,
        "/.well-known/autoconfig/mail/config-v1.1.xml?emailaddress=alice%40example.test",
    )
    .await;
    assert_eq!(status, 200);
    assert!(ctype.starts_with("application/xml"));
    let ports: Vec<u16> = doc
        .split("<port>")
        .skip(1)
        .map(|s| s.split('<').next().unwrap().parse().unwrap())
        .collect();
    assert_eq!(ports, [imaps.port(), submissions.port()], "{doc}");
    assert!(!doc.contains("pop3") && !doc.contains("STARTTLS"), "{doc}");
    let (status, _, _) = http_get(
        autoconfig,
        "/mail/config-v1.1.xml?emailaddress=alice%40elsewhere.test",
    )
    .await;
    assert_eq!(status, 404);
    let (status, _, same) = http(
        autoconfig,
        "GET",
        "/mail/config-v1.1.xml",
        &[("host", "autoconfig.example.test")],
        b"",
    )
    .await;
    assert_eq!((status, same), (200, doc));

    let request = "<?xml version=\"1.0\"?><Autodiscover><Request><EMailAddress>bob@example.test</EMailAddress></Request></Autodiscover>";
    let (status, _, ad) = http(
        autoconfig,
        "POST",
        "/autodiscover/autodiscover.xml",
        &[("content-type", "text/xml")],
        request.as_bytes(),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(ad.matches("<Protocol>").count(), 2, "{ad}");
    assert!(ad.contains(&format!("<Port>{}</Port>", imaps.port())));
    assert!(ad.contains("<LoginName>bob@example.test</LoginName>"));
    let xxe = "<?xml version=\"1.0\"?><!DOCTYPE a [<!ENTITY x SYSTEM \"file:///etc/passwd\">]><Autodiscover><Request><EMailAddress>&x;</EMailAddress></Request></Autodiscover>";
    let (status, _, _) = http(
        autoconfig,
        "POST",
        "/autodiscover/autodiscover.xml",
        &[],
        xxe.as_bytes(),
    )
    .await;
    assert_eq!(status, 400);
    let huge = vec![b'x'; 100_000];
    let (status, _, _) = http(
        autoconfig,
        "POST",
        "/autodiscover/autodiscover.xml",
        &[],
        &huge,
    )
    .await;
    assert_eq!(status, 413);

    let (status, ctype, profile) = http_get(
        autoconfig,
        "/apple/mobileconfig?emailaddress=bob%40example.test",
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(ctype, "application/x-apple-aspen-config");
    assert!(profile.contains(&format!("<integer>{}</integer>", imaps.port())));
    assert!(profile.contains(&format!("<integer>{}</integer>", submissions.port())));
    assert!(!profile.contains("bob-pw") && !profile.contains("<key>IncomingPassword</key>"));

    // The HTTPS autoconfig listener serves the same with the server certificate.
    let https = a[5];
    let tls_doc = https_get(
        https,
        &srv.data().join("tls/selfsigned.crt"),
        "/.well-known/autoconfig/mail/config-v1.1.xml?emailaddress=alice%40example.test",
    )
    .await;
    assert!(tls_doc.starts_with("HTTP/1.1 200"), "{tls_doc}");
    assert!(tls_doc.contains(&format!("<port>{}</port>", imaps.port())));

    srv.shutdown().await;
}

/// A GET over TLS (rustls, trusting `ca`), the raw response.
async fn https_get(addr: SocketAddr, ca: &Path, path: &str) -> String {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let pem = std::fs::read(ca).unwrap();
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pki_types::pem::PemObject::pem_slice_iter(&pem) {
        roots.add(cert.unwrap()).unwrap();
    }
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let name = rustls_pki_types::ServerName::try_from("mx.example.test").unwrap();
    let mut tls = connector.connect(name, tcp).await.unwrap();
    tls.write_all(
        format!(
            "GET {path} HTTP/1.1\r\nHost: autoconfig.example.test\r\nConnection: close\r\n\r\n"
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    let mut out = Vec::new();
    let _ = tls.read_to_end(&mut out).await;
    String::from_utf8_lossy(&out).into_owned()
}
