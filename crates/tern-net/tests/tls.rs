//! The TLS module against a real rustls client over loopback sockets:
//! self-signed generation, PEM loading, SNI, reload, timeouts, versions.

use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, RootCertStore};
use rustls_pki_types::pem::PemObject as _;
use tern_net::tls::{CertPair, MaybeTlsStream, TlsError, TlsInfo, TlsManager, TlsSettings};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsConnector;

const HANDSHAKE: Duration = Duration::from_secs(10);

/// A certificate as PEM, with its DER for comparisons.
struct Generated {
    cert_pem: String,
    key_pem: String,
    leaf: CertificateDer<'static>,
    /// What a client must trust: the CA, or the leaf itself when self-signed.
    root: CertificateDer<'static>,
}

fn self_signed(names: &[&str]) -> Generated {
    let key = rcgen::KeyPair::generate().unwrap();
    let params =
        rcgen::CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
            .unwrap();
    let cert = params.self_signed(&key).unwrap();
    Generated {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
        leaf: cert.der().clone(),
        root: cert.der().clone(),
    }
}

/// A leaf signed by a fresh CA; the PEM holds the full chain.
fn ca_signed(names: &[&str]) -> Generated {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::CrlSign,
    ];
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "Tern test CA");
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::new(ca_params, ca_key);

    let key = rcgen::KeyPair::generate().unwrap();
    let params =
        rcgen::CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
            .unwrap();
    let leaf = params.signed_by(&key, &issuer).unwrap();
    Generated {
        cert_pem: format!("{}{}", leaf.pem(), ca_cert.pem()),
        key_pem: key.serialize_pem(),
        leaf: leaf.der().clone(),
        root: ca_cert.der().clone(),
    }
}

fn write_pair(dir: &Path, stem: &str, g: &Generated) -> CertPair {
    let pair = CertPair {
        cert: dir.join(format!("{stem}.crt")),
        key: dir.join(format!("{stem}.key")),
    };
    std::fs::write(&pair.cert, &g.cert_pem).unwrap();
    std::fs::write(&pair.key, &g.key_pem).unwrap();
    pair
}

fn settings(dir: &Path, certificates: Vec<CertPair>) -> TlsSettings {
    TlsSettings {
        certificates,
        self_signed_dir: dir.join("tls"),
        hostname: "mx.example.test".into(),
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn client_config(
    roots: &[&CertificateDer<'static>],
    versions: &[&'static rustls::SupportedProtocolVersion],
) -> ClientConfig {
    let mut store = RootCertStore::empty();
    for root in roots {
        store.add((*root).clone()).unwrap();
    }
    ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(versions)
        .unwrap()
        .with_root_certificates(store)
        .with_no_client_auth()
}

fn verifying_client(roots: &[&CertificateDer<'static>]) -> ClientConfig {
    client_config(roots, rustls::DEFAULT_VERSIONS)
}

/// A client that accepts any certificate, so a test can see what is served
/// for names no certificate carries (outbound delivery's opportunistic TLS
/// configuration; signatures are still checked).
fn unverified_client() -> ClientConfig {
    (*tern_delivery::outbound::opportunistic_config().unwrap()).clone()
}

type ClientStream = tokio_rustls::client::TlsStream<TcpStream>;

/// One handshake over loopback: the server side through
/// `MaybeTlsStream::upgrade`, the client side with `config` for `name`.
async fn handshake(
    tls: &TlsManager,
    config: ClientConfig,
    name: &str,
) -> (
    Result<MaybeTlsStream, TlsError>,
    std::io::Result<ClientStream>,
) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let acceptor = tls.acceptor();
    let server = async move {
        let (tcp, _) = listener.accept().await.unwrap();
        MaybeTlsStream::Plain(tcp)
            .upgrade(&acceptor, HANDSHAKE)
            .await
    };
    let client = async move {
        let tcp = TcpStream::connect(addr).await.unwrap();
        let name = ServerName::try_from(name.to_owned()).unwrap();
        let mut stream = TlsConnector::from(Arc::new(config))
            .connect(name, tcp)
            .await?;
        // TLS 1.3 servers report errors after the client's Finished: make
        // the client wait for a server record so both sides agree.
        stream.write_all(b"x").await?;
        stream.flush().await?;
        Ok(stream)
    };
    let (server, client) = tokio::join!(server, client);
    let server = match server {
        Ok(mut stream) => {
            let mut byte = [0u8; 1];
            stream.read_exact(&mut byte).await.unwrap();
            assert_eq!(&byte, b"x");
            Ok(stream)
        }
        Err(e) => Err(e),
    };
    (server, client)
}

/// The end-entity certificate the server presented.
fn served(client: &ClientStream) -> CertificateDer<'static> {
    client.get_ref().1.peer_certificates().unwrap()[0].clone()
}

async fn served_for(tls: &TlsManager, config: ClientConfig, name: &str) -> CertificateDer<'static> {
    let (server, client) = handshake(tls, config, name).await;
    server.unwrap();
    served(&client.unwrap())
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[tokio::test]
async fn self_signed_is_generated_with_safe_permissions_then_reused() {
    let dir = tempfile::tempdir().unwrap();
    let settings = settings(dir.path(), Vec::new());
    let tls = TlsManager::load(&settings).unwrap();

    let tls_dir = dir.path().join("tls");
    let cert_path = tls_dir.join(tern_net::tls::SELF_SIGNED_CERT);
    let key_path = tls_dir.join(tern_net::tls::SELF_SIGNED_KEY);
    assert_eq!(mode(&tls_dir), 0o700);
    assert_eq!(mode(&key_path), 0o600);
    assert_eq!(
        tls.certificate_names(),
        [["mx.example.test".to_string(), "localhost".to_string()]]
    );

    // A client that trusts the generated certificate verifies it for both
    // names (so the names and the validity period are right).
    let cert = CertificateDer::from_pem_file(&cert_path).unwrap();
    for name in ["mx.example.test", "localhost"] {
        assert_eq!(
            served_for(&tls, verifying_client(&[&cert]), name).await,
            cert
        );
    }

    // Loaded again (a restart) and reloaded: the same files, untouched.
    let cert_pem = std::fs::read(&cert_path).unwrap();
    let key_pem = std::fs::read(&key_path).unwrap();
    let again = TlsManager::load(&settings).unwrap();
    again.reload().unwrap();
    assert_eq!(std::fs::read(&cert_path).unwrap(), cert_pem);
    assert_eq!(std::fs::read(&key_path).unwrap(), key_pem);
    assert_eq!(
        served_for(&again, verifying_client(&[&cert]), "mx.example.test").await,
        cert
    );
}

#[tokio::test]
async fn self_signed_is_replaced_when_expired_for_another_host_or_broken() {
    let dir = tempfile::tempdir().unwrap();
    let tls_dir = dir.path().join("tls");
    std::fs::create_dir(&tls_dir).unwrap();
    let cert_path = tls_dir.join(tern_net::tls::SELF_SIGNED_CERT);
    let key_path = tls_dir.join(tern_net::tls::SELF_SIGNED_KEY);

    // An expired certificate for the right name.
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(vec!["mx.example.test".to_string()]).unwrap();
    params.not_before = rcgen::date_time_ymd(2020, 1, 1);
    params.not_after = rcgen::date_time_ymd(2021, 1, 1);
    let expired = params.self_signed(&key).unwrap();
    std::fs::write(&cert_path, expired.pem()).unwrap();
    std::fs::write(&key_path, key.serialize_pem()).unwrap();

    let tls = TlsManager::load(&settings(dir.path(), Vec::new())).unwrap();
    let fresh = CertificateDer::from_pem_file(&cert_path).unwrap();
    assert_ne!(&fresh, expired.der());
    // webpki checks the validity period: the new one is current.
    assert_eq!(
        served_for(&tls, verifying_client(&[&fresh]), "mx.example.test").await,
        fresh
    );
    assert_eq!(mode(&tls_dir), 0o700);
    assert_eq!(mode(&key_path), 0o600);

    // The host name changed: a new certificate for the new name.
    let mut other = settings(dir.path(), Vec::new());
    other.hostname = "Other.Example.Test".into();
    let tls = TlsManager::load(&other).unwrap();
    assert_eq!(
        tls.certificate_names(),
        [["other.example.test".to_string(), "localhost".to_string()]]
    );
    let renamed = CertificateDer::from_pem_file(&cert_path).unwrap();
    assert_ne!(renamed, fresh);

    // A key that no longer matches (or a damaged file): regenerated, not
    // an error, because these files are ours.
    std::fs::write(
        &key_path,
        rcgen::KeyPair::generate().unwrap().serialize_pem(),
    )
    .unwrap();
    let tls = TlsManager::load(&other).unwrap();
    let regenerated = CertificateDer::from_pem_file(&cert_path).unwrap();
    assert_ne!(regenerated, renamed);
    assert_eq!(
        served_for(
            &tls,
            verifying_client(&[&regenerated]),
            "other.example.test"
        )
        .await,
        regenerated
    );
}

#[tokio::test]
async fn a_full_chain_pem_pair_is_served_whole() {
    let dir = tempfile::tempdir().unwrap();
    let g = ca_signed(&["mail.example.test"]);
    let pair = write_pair(dir.path(), "mail", &g);
    let tls = TlsManager::load(&settings(dir.path(), vec![pair])).unwrap();
    assert!(
        !dir.path().join("tls").exists(),
        "no self-signed certificate when one is configured"
    );

    // The client trusts only the CA: it needs the intermediate-less chain
    // leaf → CA, and the leaf must carry the name.
    let (server, client) = handshake(&tls, verifying_client(&[&g.root]), "mail.example.test").await;
    server.unwrap();
    let client = client.unwrap();
    let chain = client.get_ref().1.peer_certificates().unwrap();
    assert_eq!(chain.len(), 2);
    assert_eq!(chain[0], g.leaf);
    assert_eq!(chain[1], g.root);

    // A name the certificate does not carry fails verification.
    let (_, client) = handshake(&tls, verifying_client(&[&g.root]), "other.example.test").await;
    assert!(client.is_err());
}

#[tokio::test]
async fn sni_chooses_exact_name_then_wildcard_then_default() {
    let dir = tempfile::tempdir().unwrap();
    let a = ca_signed(&["mx.example.test", "*.example.org"]);
    let b = ca_signed(&["smtp.example.org"]);
    let pairs = vec![
        write_pair(dir.path(), "a", &a),
        write_pair(dir.path(), "b", &b),
    ];
    let tls = TlsManager::load(&settings(dir.path(), pairs)).unwrap();
    let both = || verifying_client(&[&a.root, &b.root]);

    assert_eq!(served_for(&tls, both(), "mx.example.test").await, a.leaf);
    // B's exact name beats A's wildcard although A is listed first.
    assert_eq!(served_for(&tls, both(), "smtp.example.org").await, b.leaf);
    assert_eq!(served_for(&tls, both(), "imap.example.org").await, a.leaf);

    // The server reports the name the client asked for.
    let (server, _client) = handshake(&tls, both(), "smtp.example.org").await;
    assert_eq!(
        server.unwrap().tls_info().unwrap().sni.as_deref(),
        Some("smtp.example.org")
    );

    // No SNI at all: the first certificate.
    let mut no_sni = both();
    no_sni.enable_sni = false;
    let (server, client) = handshake(&tls, no_sni, "mx.example.test").await;
    assert_eq!(server.unwrap().tls_info().unwrap().sni, None);
    assert_eq!(served(&client.unwrap()), a.leaf);

    // A name nobody carries: the first certificate too.
    assert_eq!(
        served_for(&tls, unverified_client(), "unknown.example.net").await,
        a.leaf
    );
}

#[tokio::test]
async fn reload_swaps_certificates_for_new_handshakes_and_a_failed_reload_keeps_them() {
    let dir = tempfile::tempdir().unwrap();
    let first = self_signed(&["mx.example.test"]);
    let pair = write_pair(dir.path(), "mx", &first);
    let tls = TlsManager::load(&settings(dir.path(), vec![pair.clone()])).unwrap();
    let acceptor_before = tls.acceptor();

    // A session established before the reload.
    let (server, client) =
        handshake(&tls, verifying_client(&[&first.root]), "mx.example.test").await;
    let (mut old_server, mut old_client) = (server.unwrap(), client.unwrap());
    assert_eq!(served(&old_client), first.leaf);

    // New files, same paths: new handshakes get the new certificate, even
    // through an acceptor taken before the reload.
    let second = self_signed(&["mx.example.test"]);
    write_pair(dir.path(), "mx", &second);
    tls.reload().unwrap();
    let trusting_both = || verifying_client(&[&first.root, &second.root]);
    assert_eq!(
        served_for(&tls, trusting_both(), "mx.example.test").await,
        second.leaf
    );
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (server, client) = tokio::join!(
        async {
            let (tcp, _) = listener.accept().await.unwrap();
            MaybeTlsStream::Plain(tcp)
                .upgrade(&acceptor_before, HANDSHAKE)
                .await
        },
        async {
            let tcp = TcpStream::connect(addr).await.unwrap();
            TlsConnector::from(Arc::new(trusting_both()))
                .connect(ServerName::try_from("mx.example.test").unwrap(), tcp)
                .await
        }
    );
    server.unwrap();
    assert_eq!(served(&client.unwrap()), second.leaf);

    // The old session still works, on its old certificate.
    old_client.write_all(b"ping").await.unwrap();
    let mut buf = [0u8; 4];
    old_server.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"ping");
    old_server.write_all(b"pong").await.unwrap();
    old_server.flush().await.unwrap();
    old_client.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"pong");
    assert_eq!(served(&old_client), first.leaf);

    // A certificate whose key was not replaced with it: refused, old kept.
    let third = self_signed(&["mx.example.test"]);
    std::fs::write(&pair.cert, &third.cert_pem).unwrap();
    match tls.reload() {
        Err(TlsError::KeyMismatch { cert, key }) => {
            assert_eq!(cert, pair.cert);
            assert_eq!(key, pair.key);
        }
        other => panic!("expected KeyMismatch, got {other:?}"),
    }
    assert_eq!(
        served_for(&tls, trusting_both(), "mx.example.test").await,
        second.leaf
    );

    // A missing key file: refused, old kept, the error names the file.
    std::fs::remove_file(&pair.key).unwrap();
    let err = tls.reload().unwrap_err();
    assert!(
        matches!(&err, TlsError::Read { path, .. } if *path == pair.key),
        "{err:?}"
    );
    assert!(err.to_string().contains(&pair.key.display().to_string()));
    assert_eq!(
        served_for(&tls, trusting_both(), "mx.example.test").await,
        second.leaf
    );
}

#[test]
fn load_errors_are_typed_and_name_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let good = self_signed(&["mx.example.test"]);
    let good_pair = write_pair(dir.path(), "good", &good);
    let load = |pairs: Vec<CertPair>| TlsManager::load(&settings(dir.path(), pairs)).unwrap_err();

    let missing = CertPair {
        cert: dir.path().join("missing.crt"),
        key: good_pair.key.clone(),
    };
    let err = load(vec![missing.clone()]);
    assert!(
        matches!(&err, TlsError::Read { path, .. } if *path == missing.cert),
        "{err:?}"
    );
    assert!(err.to_string().contains("missing.crt"), "{err}");

    // A certificate file holding only a key.
    let swapped = CertPair {
        cert: good_pair.key.clone(),
        key: good_pair.key.clone(),
    };
    let err = load(vec![swapped]);
    assert!(
        matches!(&err, TlsError::NoCertificate { path } if *path == good_pair.key),
        "{err:?}"
    );

    // A key file holding only a certificate.
    let no_key = CertPair {
        cert: good_pair.cert.clone(),
        key: good_pair.cert.clone(),
    };
    let err = load(vec![no_key]);
    assert!(
        matches!(&err, TlsError::NoPrivateKey { path } if *path == good_pair.cert),
        "{err:?}"
    );
    assert!(err.to_string().contains("good.crt"), "{err}");

    // Someone else's key.
    let other = self_signed(&["mx.example.test"]);
    let other_pair = write_pair(dir.path(), "other", &other);
    let mismatched = CertPair {
        cert: good_pair.cert.clone(),
        key: other_pair.key.clone(),
    };
    let err = load(vec![mismatched]);
    assert!(matches!(&err, TlsError::KeyMismatch { .. }), "{err:?}");
    let text = err.to_string();
    assert!(
        text.contains("good.crt") && text.contains("other.key"),
        "{text}"
    );

    // Broken PEM.
    let broken = dir.path().join("broken.crt");
    std::fs::write(
        &broken,
        "-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n",
    )
    .unwrap();
    let err = load(vec![CertPair {
        cert: broken.clone(),
        key: good_pair.key.clone(),
    }]);
    assert!(
        matches!(&err, TlsError::Pem { path, .. } if *path == broken),
        "{err:?}"
    );

    // One bad pair among good ones fails the whole load.
    let err = load(vec![good_pair.clone(), missing]);
    assert!(matches!(&err, TlsError::Read { .. }), "{err:?}");
    TlsManager::load(&settings(dir.path(), vec![good_pair, other_pair])).unwrap();
}

#[tokio::test]
async fn a_handshake_that_never_starts_times_out() {
    let dir = tempfile::tempdir().unwrap();
    let tls = TlsManager::load(&settings(dir.path(), Vec::new())).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();

    for opening in [&b""[..], &b"\x16\x03\x01\x02\x00\x01"[..]] {
        // Silent, or the first bytes of a ClientHello and then nothing.
        let mut idle = TcpStream::connect(addr).await.unwrap();
        idle.write_all(opening).await.unwrap();
        let (tcp, _) = listener.accept().await.unwrap();
        let limit = Duration::from_millis(300);
        let started = Instant::now();
        let result = MaybeTlsStream::Plain(tcp)
            .upgrade(&tls.acceptor(), limit)
            .await;
        let elapsed = started.elapsed();
        assert!(
            matches!(result, Err(TlsError::HandshakeTimeout(d)) if d == limit),
            "{result:?}"
        );
        assert!(
            elapsed >= limit && elapsed < Duration::from_secs(5),
            "{elapsed:?}"
        );
        drop(idle);
    }
}

#[tokio::test]
async fn plaintext_where_a_client_hello_belongs_fails_the_handshake_at_once() {
    // A client pipelining a command after STARTTLS gets a failed
    // handshake, never an answer.
    let dir = tempfile::tempdir().unwrap();
    let tls = TlsManager::load(&settings(dir.path(), Vec::new())).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mut client = TcpStream::connect(listener.local_addr().unwrap())
        .await
        .unwrap();
    client
        .write_all(b"NOOP\r\nMAIL FROM:<a@b.example>\r\n")
        .await
        .unwrap();
    let (tcp, _) = listener.accept().await.unwrap();
    let started = Instant::now();
    let result = MaybeTlsStream::Plain(tcp)
        .upgrade(&tls.acceptor(), HANDSHAKE)
        .await;
    assert!(matches!(result, Err(TlsError::Handshake(_))), "{result:?}");
    assert!(started.elapsed() < Duration::from_secs(5));
    let mut reply = Vec::new();
    client.read_to_end(&mut reply).await.unwrap();
    assert!(!reply.windows(3).any(|w| w == b"250"), "{reply:?}");
}

#[tokio::test]
async fn tls_1_2_and_1_3_both_negotiate_and_tls_info_reports_them() {
    let dir = tempfile::tempdir().unwrap();
    let g = self_signed(&["mx.example.test"]);
    let pair = write_pair(dir.path(), "mx", &g);
    let tls = TlsManager::load(&settings(dir.path(), vec![pair])).unwrap();

    let cases = [
        (
            &rustls::version::TLS12,
            "TLSv1.2",
            "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384",
        ),
        (&rustls::version::TLS13, "TLSv1.3", "TLS_AES_256_GCM_SHA384"),
    ];
    for (version, name, cipher) in cases {
        let config = client_config(&[&g.root], &[version]);
        let (server, client) = handshake(&tls, config, "mx.example.test").await;
        let (server, client) = (server.unwrap(), client.unwrap());
        assert!(server.is_tls());
        let info = server.tls_info().unwrap();
        assert_eq!(
            info,
            TlsInfo {
                version: name.into(),
                cipher: cipher.into(),
                sni: Some("mx.example.test".into()),
            }
        );
        assert_eq!(info.to_string(), format!("{name} {cipher}"));
        // The client saw the same thing.
        let conn = client.get_ref().1;
        assert_eq!(conn.protocol_version(), Some(version.version));
        assert_eq!(
            conn.negotiated_cipher_suite().unwrap().suite(),
            server_suite(&server)
        );
    }
}

fn server_suite(stream: &MaybeTlsStream) -> rustls::CipherSuite {
    match stream {
        MaybeTlsStream::Tls(tls) => tls.get_ref().1.negotiated_cipher_suite().unwrap().suite(),
        MaybeTlsStream::Plain(_) => panic!("not TLS"),
    }
}

/// A ClientHello offering only `version` (no supported_versions extension,
/// as a client without TLS 1.3 sends it), otherwise everything a TLS 1.2
/// server needs: an ECDHE-ECDSA-AES-GCM suite, signature algorithms,
/// groups and point formats.
fn legacy_client_hello(version: [u8; 2]) -> Vec<u8> {
    let mut extensions = Vec::new();
    // signature_algorithms: ecdsa_secp256r1_sha256, rsa_pkcs1_sha256
    extensions.extend_from_slice(&[0x00, 0x0d, 0x00, 0x06, 0x00, 0x04, 0x04, 0x03, 0x04, 0x01]);
    // supported_groups: x25519, secp256r1
    extensions.extend_from_slice(&[0x00, 0x0a, 0x00, 0x06, 0x00, 0x04, 0x00, 0x1d, 0x00, 0x17]);
    // ec_point_formats: uncompressed
    extensions.extend_from_slice(&[0x00, 0x0b, 0x00, 0x02, 0x01, 0x00]);

    let mut body = version.to_vec(); // client_version
    body.extend_from_slice(&[0x42; 32]); // random
    body.push(0); // session_id
    // ECDHE_ECDSA_AES_128_GCM_SHA256, ECDHE_RSA_AES_128_CBC_SHA
    body.extend_from_slice(&[0x00, 0x04, 0xc0, 0x2b, 0xc0, 0x13]);
    body.extend_from_slice(&[0x01, 0x00]); // compression: null
    body.extend_from_slice(&(extensions.len() as u16).to_be_bytes());
    body.extend_from_slice(&extensions);

    let mut handshake = vec![0x01, 0x00]; // ClientHello, 24-bit length
    handshake.extend_from_slice(&(body.len() as u16).to_be_bytes());
    handshake.extend_from_slice(&body);
    let mut record = vec![0x16, 0x03, 0x01];
    record.extend_from_slice(&(handshake.len() as u16).to_be_bytes());
    record.extend_from_slice(&handshake);
    record
}

/// Sends `hello`, returns the server's `upgrade` result and its first bytes.
async fn answer_to(tls: &TlsManager, hello: &[u8]) -> (Result<MaybeTlsStream, TlsError>, Vec<u8>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mut client = TcpStream::connect(listener.local_addr().unwrap())
        .await
        .unwrap();
    client.write_all(hello).await.unwrap();
    let (tcp, _) = listener.accept().await.unwrap();
    let acceptor = tls.acceptor();
    let server = tokio::spawn(async move {
        MaybeTlsStream::Plain(tcp)
            .upgrade(&acceptor, Duration::from_secs(2))
            .await
    });
    let mut reply = vec![0u8; 7];
    client.read_exact(&mut reply).await.unwrap();
    drop(client);
    (server.await.unwrap(), reply)
}

/// TLS 1.1 cannot be negotiated: the server's configuration lists TLS 1.2
/// and 1.3 only, and rustls has no code for anything older, so there is no
/// setting that could enable it. A hand-made TLS 1.1 ClientHello gets a
/// fatal protocol_version alert, while the same hello saying TLS 1.2 gets a
/// ServerHello (so the version is the only thing refused).
#[tokio::test]
async fn a_tls_1_1_client_hello_is_refused_with_protocol_version() {
    let dir = tempfile::tempdir().unwrap();
    let tls = TlsManager::load(&settings(dir.path(), Vec::new())).unwrap();

    let (result, reply) = answer_to(&tls, &legacy_client_hello([0x03, 0x02])).await;
    assert!(matches!(result, Err(TlsError::Handshake(_))), "{result:?}");
    // An alert record (21): level fatal (2), protocol_version (70).
    assert_eq!(reply[0], 0x15, "{reply:?}");
    assert_eq!(&reply[5..7], &[2, 70], "{reply:?}");

    let (_, reply) = answer_to(&tls, &legacy_client_hello([0x03, 0x03])).await;
    // A handshake record (22) starting with a ServerHello (2) for TLS 1.2.
    assert_eq!(reply[0], 0x16, "{reply:?}");
    assert_eq!(reply[5], 0x02, "{reply:?}");
}

#[tokio::test]
async fn starttls_carries_plaintext_then_tls_and_refuses_a_second_upgrade() {
    let dir = tempfile::tempdir().unwrap();
    let tls = TlsManager::load(&settings(dir.path(), Vec::new())).unwrap();
    let cert = CertificateDer::from_pem_file(dir.path().join("tls/selfsigned.crt")).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let acceptor = tls.acceptor();

    let server = async move {
        let (tcp, peer) = listener.accept().await.unwrap();
        let mut stream = MaybeTlsStream::Plain(tcp);
        assert!(!stream.is_tls());
        assert_eq!(stream.tls_info(), None);
        assert_eq!(stream.tcp().peer_addr().unwrap(), peer);
        stream.write_all(b"220 ready\r\n").await.unwrap();
        let mut line = [0u8; 10];
        stream.read_exact(&mut line).await.unwrap();
        assert_eq!(&line, b"STARTTLS\r\n");
        stream.write_all(b"220 go\r\n").await.unwrap();
        let mut stream = stream.upgrade(&acceptor, HANDSHAKE).await.unwrap();
        assert_eq!(stream.tcp().peer_addr().unwrap(), peer);
        let mut ehlo = [0u8; 6];
        stream.read_exact(&mut ehlo).await.unwrap();
        assert_eq!(&ehlo, b"EHLO\r\n");
        stream.write_all(b"250 ok\r\n").await.unwrap();
        stream.shutdown().await.unwrap();
        stream.upgrade(&acceptor, HANDSHAKE).await
    };
    let client = async move {
        let mut tcp = TcpStream::connect(addr).await.unwrap();
        let mut greeting = [0u8; 11];
        tcp.read_exact(&mut greeting).await.unwrap();
        assert_eq!(&greeting, b"220 ready\r\n");
        tcp.write_all(b"STARTTLS\r\n").await.unwrap();
        let mut go = [0u8; 8];
        tcp.read_exact(&mut go).await.unwrap();
        assert_eq!(&go, b"220 go\r\n");
        let mut tls = TlsConnector::from(Arc::new(verifying_client(&[&cert])))
            .connect(ServerName::try_from("localhost").unwrap(), tcp)
            .await
            .unwrap();
        tls.write_all(b"EHLO\r\n").await.unwrap();
        let mut rest = Vec::new();
        tls.read_to_end(&mut rest).await.unwrap();
        assert_eq!(rest, b"250 ok\r\n");
    };
    let (second, ()) = tokio::join!(server, client);
    assert!(matches!(second, Err(TlsError::AlreadyTls)), "{second:?}");
}

#[test]
fn aws_lc_rs_is_not_in_the_dependency_tree() {
    // One crypto provider (ring) for the whole workspace: see issue 3.
    // `cargo tree -i aws-lc-rs` is the check the issue names; the lockfile
    // is stricter (it also lists optional crates that a weak `dep?/feature`
    // mentions), so this fails whenever aws-lc could even be fetched.
    let lock = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../Cargo.lock");
    let lock = std::fs::read_to_string(lock).unwrap();
    assert!(lock.contains("name = \"ring\""));
    for crate_name in ["aws-lc-rs", "aws-lc-sys", "aws-lc-fips-sys"] {
        assert!(
            !lock.contains(&format!("name = \"{crate_name}\"")),
            "{crate_name} is in Cargo.lock: a dependency enabled its default provider"
        );
    }
}
