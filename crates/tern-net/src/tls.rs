//! TLS for every listener: certificates, SNI, reload, STARTTLS upgrade.
//!
//! This module turns the admin's PEM files (or, when there are none, a
//! self-signed certificate it generates into the data directory) into a
//! rustls [`ServerConfig`] and hands out [`TlsAcceptor`]s built from it.
//! [`TlsManager::reload`] re-reads the files (the binary calls it on SIGHUP)
//! and swaps the certificate set atomically: handshakes that start afterwards
//! see the new certificates, sessions already established are untouched, and
//! a reload that fails keeps the old set. [`MaybeTlsStream`] is the stream a
//! connection driver reads and writes whether or not it has done STARTTLS
//! (or implicit TLS, RFC 8314), and [`MaybeTlsStream::upgrade`] performs the
//! handshake under a deadline.
//!
//! What it must never do:
//! - negotiate anything older than TLS 1.2: the configuration lists TLS 1.2
//!   and TLS 1.3 only, and rustls implements nothing older, so TLS 1.0/1.1
//!   are impossible by construction, not by a setting someone can loosen;
//! - use a crypto provider other than ring (the configuration is built with
//!   an explicit provider; `aws-lc-rs` must stay out of the dependency tree);
//! - let a handshake hold a session forever: [`MaybeTlsStream::upgrade`]
//!   always takes a timeout;
//! - carry plaintext across STARTTLS: `upgrade` hands the raw socket to
//!   rustls, so nothing the caller has buffered is carried over. The caller
//!   must drop its own read buffer (CVE-2011-0411), which this module cannot
//!   see;
//! - write a private key readable by anyone but the service user (the
//!   self-signed key is created 0600 in a 0700 directory).
//!
//! ```no_run
//! # async fn demo(tcp: tokio::net::TcpStream) -> Result<(), tern_net::tls::TlsError> {
//! use std::time::Duration;
//! use tern_net::tls::{MaybeTlsStream, TlsManager, TlsSettings};
//! let tls = TlsManager::load(&TlsSettings {
//!     certificates: Vec::new(),
//!     self_signed_dir: "data/tls".into(),
//!     hostname: "mx.example.test".into(),
//! })?;
//! let stream = MaybeTlsStream::Plain(tcp);
//! // ... "220 2.0.0 Ready to start TLS" written, read buffer discarded ...
//! let stream = stream.upgrade(&tls.acceptor(), Duration::from_secs(30)).await?;
//! if let Some(info) = stream.tls_info() {
//!     println!("using {info}");
//! }
//! # Ok(()) }
//! ```

use std::fmt;
use std::fs;
use std::io::{self, Write as _};
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, PoisonError, RwLock};
use std::task::{Context, Poll};
use std::time::Duration;

use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::version::{TLS12, TLS13};
use rustls::{ProtocolVersion, ServerConfig};
use rustls_pki_types::pem::{self, PemObject as _};
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
pub use tokio_rustls::TlsAcceptor;

/// File name of the generated self-signed certificate in
/// [`TlsSettings::self_signed_dir`].
pub const SELF_SIGNED_CERT: &str = "selfsigned.crt";
/// File name of the generated self-signed private key in
/// [`TlsSettings::self_signed_dir`].
pub const SELF_SIGNED_KEY: &str = "selfsigned.key";

/// How long a generated self-signed certificate is valid.
const SELF_SIGNED_VALIDITY: Duration = Duration::from_secs(365 * 24 * 3600);
/// A self-signed certificate that expires sooner than this is replaced.
const SELF_SIGNED_RENEW_BEFORE: Duration = Duration::from_secs(30 * 24 * 3600);

/// One certificate and its key, as the admin configured them (one of
/// `[tls] certificates`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct CertPair {
    /// PEM file with the full chain: the server's certificate first, then
    /// the intermediates.
    pub cert: PathBuf,
    /// PEM file with the private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}

/// Where the certificates come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsSettings {
    /// Certificates to serve, chosen by SNI. The first one is the default
    /// for clients that send no SNI or a name no certificate carries. When
    /// empty, a self-signed certificate is generated.
    pub certificates: Vec<CertPair>,
    /// Where the self-signed certificate lives (`data_dir/tls`).
    pub self_signed_dir: PathBuf,
    /// Our host name: the name the self-signed certificate is made for.
    pub hostname: String,
}

/// Why TLS could not be set up, or a handshake failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// A PEM file could not be read.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// What the system said.
        source: io::Error,
    },
    /// A PEM file is not valid PEM.
    #[error("{}: invalid PEM: {detail}", path.display())]
    Pem {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        detail: String,
    },
    /// A certificate file holds no certificate.
    #[error("{}: no certificate (BEGIN CERTIFICATE) found", path.display())]
    NoCertificate {
        /// The file.
        path: PathBuf,
    },
    /// A key file holds no private key.
    #[error("{}: no private key (BEGIN PRIVATE KEY, RSA PRIVATE KEY or EC PRIVATE KEY) found", path.display())]
    NoPrivateKey {
        /// The file.
        path: PathBuf,
    },
    /// The private key is of a kind the ring provider cannot use.
    #[error("{}: unusable private key: {source}", path.display())]
    Key {
        /// The file.
        path: PathBuf,
        /// Why rustls refused it.
        source: rustls::Error,
    },
    /// The server's certificate could not be parsed.
    #[error("{}: cannot parse the certificate: {detail}", path.display())]
    Certificate {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        detail: CertificateError,
    },
    /// The private key does not belong to the first certificate of the chain.
    #[error("the private key in {} does not match the certificate in {}", key.display(), cert.display())]
    KeyMismatch {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
    },
    /// The self-signed certificate could not be generated.
    #[error("cannot generate a self-signed certificate for {hostname:?}: {detail}")]
    Generate {
        /// The name it was for.
        hostname: String,
        /// What went wrong.
        detail: String,
    },
    /// The self-signed certificate could not be written.
    #[error("cannot write {}: {source}", path.display())]
    Write {
        /// The file or directory.
        path: PathBuf,
        /// What the system said.
        source: io::Error,
    },
    /// rustls refused the configuration.
    #[error("TLS configuration: {0}")]
    Config(#[source] rustls::Error),
    /// The client did not finish the handshake in time.
    #[error("TLS handshake not finished after {0:?}")]
    HandshakeTimeout(Duration),
    /// The handshake failed (bad client hello, no common version or cipher,
    /// connection closed).
    #[error("TLS handshake failed: {0}")]
    Handshake(#[source] io::Error),
    /// STARTTLS on a connection that already speaks TLS.
    #[error("the connection is already using TLS")]
    AlreadyTls,
}

/// The certificates and the TLS configuration every listener shares.
///
/// Cheap to clone: clones share one configuration, and a
/// [`reload`](TlsManager::reload) through any of them is seen by all.
#[derive(Debug, Clone)]
pub struct TlsManager {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    settings: TlsSettings,
    resolver: Arc<SniResolver>,
    config: Arc<ServerConfig>,
}

impl TlsManager {
    /// Reads (or generates) the certificates and builds the configuration:
    /// TLS 1.2 and 1.3 only, ring provider, no client certificates.
    pub fn load(settings: &TlsSettings) -> Result<TlsManager, TlsError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let set = load_set(settings, &provider)?;
        let resolver = Arc::new(SniResolver {
            current: RwLock::new(Arc::new(set)),
        });
        let config = ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&TLS12, &TLS13])
            .map_err(TlsError::Config)?
            .with_no_client_auth()
            .with_cert_resolver(resolver.clone());
        Ok(TlsManager {
            inner: Arc::new(Inner {
                settings: settings.clone(),
                resolver,
                config: Arc::new(config),
            }),
        })
    }

    /// An acceptor for new handshakes. It follows later reloads.
    pub fn acceptor(&self) -> TlsAcceptor {
        TlsAcceptor::from(self.inner.config.clone())
    }

    /// The rustls configuration behind [`acceptor`](Self::acceptor).
    pub fn server_config(&self) -> Arc<ServerConfig> {
        self.inner.config.clone()
    }

    /// Re-reads every PEM file (or re-checks the self-signed certificate)
    /// and swaps the certificate set in one step. On error the old set stays
    /// in use and the error says which file is at fault.
    pub fn reload(&self) -> Result<(), TlsError> {
        let provider = self.inner.config.crypto_provider();
        let set = load_set(&self.inner.settings, provider)?;
        let names = set.describe();
        *self
            .inner
            .resolver
            .current
            .write()
            .unwrap_or_else(PoisonError::into_inner) = Arc::new(set);
        tracing::info!(certificates = %names, "TLS certificates reloaded");
        Ok(())
    }

    /// The DNS names of the certificates in use, the default first, one
    /// list per certificate (for logs and `check-config`).
    pub fn certificate_names(&self) -> Vec<Vec<String>> {
        self.inner
            .resolver
            .snapshot()
            .entries
            .iter()
            .map(|e| e.names.clone())
            .collect()
    }
}

/// Loads the configured pairs, or the self-signed one when none is set.
fn load_set(settings: &TlsSettings, provider: &CryptoProvider) -> Result<CertSet, TlsError> {
    if settings.certificates.is_empty() {
        let entry = self_signed(settings, provider)?;
        return Ok(CertSet {
            entries: vec![entry],
        });
    }
    let entries = settings
        .certificates
        .iter()
        .map(|pair| load_pair(&pair.cert, &pair.key, provider))
        .collect::<Result<Vec<_>, _>>()?;
    for entry in &entries {
        if entry.names.is_empty() {
            tracing::warn!(
                cert = %entry.source.display(),
                "certificate has no DNS name in subjectAltName: it is only served as a default and clients will not verify it"
            );
        }
    }
    Ok(CertSet { entries })
}

/// One certificate chain with its key and the names it is valid for.
#[derive(Debug)]
struct Entry {
    /// Lowercase DNS names from subjectAltName, `*.` wildcards included.
    names: Vec<String>,
    /// When the server's certificate expires (Unix seconds).
    not_after: i64,
    key: Arc<CertifiedKey>,
    source: PathBuf,
}

/// The certificates in use; replaced whole on reload.
#[derive(Debug)]
struct CertSet {
    /// Never empty; the first is the default.
    entries: Vec<Entry>,
}

impl CertSet {
    /// The certificate for `sni`: an exact name, else a wildcard covering
    /// its first label, else the default.
    fn select(&self, sni: Option<&str>) -> &Entry {
        let default = &self.entries[0];
        let Some(sni) = sni else { return default };
        let name = normalize_name(sni);
        if let Some(entry) = self.entries.iter().find(|e| e.names.contains(&name)) {
            return entry;
        }
        if let Some((first, parent)) = name.split_once('.')
            && !first.is_empty()
            && parent.contains('.')
        {
            let wildcard = format!("*.{parent}");
            if let Some(entry) = self.entries.iter().find(|e| e.names.contains(&wildcard)) {
                return entry;
            }
        }
        default
    }

    fn describe(&self) -> String {
        self.entries
            .iter()
            .map(|e| format!("{} [{}]", e.source.display(), e.names.join(", ")))
            .collect::<Vec<_>>()
            .join("; ")
    }
}

/// Lowercase, without a trailing dot.
fn normalize_name(name: &str) -> String {
    name.strip_suffix('.').unwrap_or(name).to_ascii_lowercase()
}

/// Picks a certificate by SNI from a set that [`TlsManager::reload`] swaps.
#[derive(Debug)]
struct SniResolver {
    current: RwLock<Arc<CertSet>>,
}

impl SniResolver {
    fn snapshot(&self) -> Arc<CertSet> {
        self.current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let set = self.snapshot();
        Some(set.select(hello.server_name()).key.clone())
    }
}

/// Reads a chain and its key, checks that they belong together and reads
/// the names out of the server's certificate.
fn load_pair(cert: &Path, key: &Path, provider: &CryptoProvider) -> Result<Entry, TlsError> {
    let chain = CertificateDer::pem_file_iter(cert)
        .map_err(|e| pem_error(cert, e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem_error(cert, e))?;
    let Some(leaf) = chain.first() else {
        return Err(TlsError::NoCertificate { path: cert.into() });
    };
    let leaf = parse_leaf(leaf).map_err(|detail| TlsError::Certificate {
        path: cert.into(),
        detail,
    })?;
    let der = PrivateKeyDer::from_pem_file(key).map_err(|e| match e {
        pem::Error::NoItemsFound => TlsError::NoPrivateKey { path: key.into() },
        other => pem_error(key, other),
    })?;
    let signing_key = provider
        .key_provider
        .load_private_key(der)
        .map_err(|source| TlsError::Key {
            path: key.into(),
            source,
        })?;
    let certified = CertifiedKey::new(chain, signing_key);
    // ring's keys always know their public half, so "cannot tell" is a
    // mismatch too: never serve a pair we could not check.
    if certified.keys_match().is_err() {
        return Err(TlsError::KeyMismatch {
            cert: cert.into(),
            key: key.into(),
        });
    }
    Ok(Entry {
        names: leaf.dns_names,
        not_after: leaf.not_after,
        key: Arc::new(certified),
        source: cert.into(),
    })
}

fn pem_error(path: &Path, e: pem::Error) -> TlsError {
    match e {
        pem::Error::Io(source) => TlsError::Read {
            path: path.into(),
            source,
        },
        pem::Error::NoItemsFound => TlsError::NoCertificate { path: path.into() },
        other => TlsError::Pem {
            path: path.into(),
            detail: other.to_string(),
        },
    }
}

/// What we need from the server's certificate.
#[derive(Debug)]
struct LeafInfo {
    dns_names: Vec<String>,
    not_after: i64,
}

/// What is wrong with a server certificate that cannot be read (the
/// DER reader's own words in parentheses).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CertificateError {
    /// Not an X.509 certificate.
    #[error("malformed X.509 certificate ({0})")]
    Malformed(String),
    /// Its extensions cannot be read.
    #[error("malformed extensions ({0})")]
    Extensions(String),
    /// Its subjectAltName extension cannot be read.
    #[error("malformed subjectAltName ({0})")]
    SubjectAltName(String),
}

/// Reads the subjectAltName DNS names and the expiry date of a certificate.
///
/// Why yasna: webpki (already used by rustls) can check a certificate
/// against one name but cannot list its names, and SNI selection needs the
/// list to prefer an exact name over a wildcard. x509-parser would add about
/// ten crates (nom, asn1-rs and its proc macros, der-parser, oid-registry…)
/// for two fields. yasna is the DER reader rcgen already brings into the
/// tree, so this costs no new crate; it is lenient (BER), returns errors
/// instead of panicking, and we only walk the outer structure of
/// TBSCertificate (RFC 5280 4.1) plus the subjectAltName extension.
fn parse_leaf(der: &[u8]) -> Result<LeafInfo, CertificateError> {
    use yasna::Tag;
    use yasna::tags::{TAG_GENERALIZEDTIME, TAG_UTCTIME};

    /// id-ce-subjectAltName, RFC 5280 4.2.1.6.
    const SUBJECT_ALT_NAME: &[u64] = &[2, 5, 29, 17];

    let read_time = |r: yasna::BERReader<'_, '_>| -> yasna::ASN1Result<i64> {
        let tag = r.lookahead_tag()?;
        if tag == TAG_UTCTIME {
            Ok(r.read_utctime()?.datetime().unix_timestamp())
        } else if tag == TAG_GENERALIZEDTIME {
            Ok(r.read_generalized_time()?.datetime().unix_timestamp())
        } else {
            Err(yasna::ASN1Error::new(yasna::ASN1ErrorKind::Invalid))
        }
    };

    let (not_after, extensions) = yasna::parse_ber(der, |r| {
        r.read_sequence(|cert| {
            let tbs = cert.next().read_sequence(|tbs| {
                tbs.read_optional(|r| r.read_tagged(Tag::context(0), |r| r.read_der()))?; // version
                tbs.next().read_der()?; // serialNumber
                tbs.next().read_der()?; // signature
                tbs.next().read_der()?; // issuer
                let not_after = tbs.next().read_sequence(|validity| {
                    read_time(validity.next())?; // notBefore
                    read_time(validity.next())
                })?;
                tbs.next().read_der()?; // subject
                tbs.next().read_der()?; // subjectPublicKeyInfo
                // issuerUniqueID [1], subjectUniqueID [2], extensions [3]
                let mut extensions = None;
                while let Some((tag, body)) = tbs.read_optional(|r| {
                    let tag = r.lookahead_tag()?;
                    Ok((tag, r.read_der()?))
                })? {
                    if tag == Tag::context(3) {
                        extensions = Some(body);
                    }
                }
                Ok((not_after, extensions))
            })?;
            cert.next().read_der()?; // signatureAlgorithm
            cert.next().read_der()?; // signatureValue
            Ok(tbs)
        })
    })
    .map_err(|e| CertificateError::Malformed(e.to_string()))?;

    let mut dns_names = Vec::new();
    if let Some(extensions) = extensions {
        let mut san = None;
        yasna::parse_ber(&extensions, |r| {
            r.read_tagged(Tag::context(3), |r| {
                r.read_sequence_of(|ext| {
                    ext.read_sequence(|ext| {
                        let oid = ext.next().read_oid()?;
                        ext.read_optional(|r| r.read_bool())?; // critical
                        let value = ext.next().read_bytes()?;
                        if oid.components().as_slice() == SUBJECT_ALT_NAME {
                            san = Some(value);
                        }
                        Ok(())
                    })
                })
            })
        })
        .map_err(|e| CertificateError::Extensions(e.to_string()))?;
        if let Some(san) = san {
            yasna::parse_ber(&san, |r| {
                r.read_sequence_of(|name| {
                    // dNSName [2] IA5String; other kinds are skipped.
                    if name.lookahead_tag()? == Tag::context(2) {
                        let bytes =
                            name.read_tagged_implicit(Tag::context(2), |r| r.read_bytes())?;
                        if let Ok(s) = String::from_utf8(bytes)
                            && s.is_ascii()
                        {
                            dns_names.push(normalize_name(&s));
                        }
                    } else {
                        name.read_der()?;
                    }
                    Ok(())
                })
            })
            .map_err(|e| CertificateError::SubjectAltName(e.to_string()))?;
        }
    }
    Ok(LeafInfo {
        dns_names,
        not_after,
    })
}

/// Reuses the self-signed certificate in `self_signed_dir`, or makes one.
fn self_signed(settings: &TlsSettings, provider: &CryptoProvider) -> Result<Entry, TlsError> {
    let dir = &settings.self_signed_dir;
    let cert_path = dir.join(SELF_SIGNED_CERT);
    let key_path = dir.join(SELF_SIGNED_KEY);
    let hostname = normalize_name(&settings.hostname);

    let entry = match existing_self_signed(&cert_path, &key_path, &hostname, provider) {
        Some(entry) => entry,
        None => {
            generate_self_signed(dir, &cert_path, &key_path, &hostname)?;
            load_pair(&cert_path, &key_path, provider)?
        }
    };
    tracing::warn!(
        cert = %cert_path.display(),
        hostname = %hostname,
        "TLS uses a SELF-SIGNED certificate: clients will not be able to verify it \
         (most will refuse it or must be told to skip verification). Configure a real \
         certificate and key (full-chain PEM) in the [tls] section of the configuration \
         and reload (SIGHUP)"
    );
    Ok(entry)
}

/// The existing self-signed pair, if it loads, names `hostname` and is not
/// about to expire.
fn existing_self_signed(
    cert: &Path,
    key: &Path,
    hostname: &str,
    provider: &CryptoProvider,
) -> Option<Entry> {
    if !cert.exists() && !key.exists() {
        return None;
    }
    let entry = match load_pair(cert, key, provider) {
        Ok(entry) => entry,
        Err(e) => {
            tracing::warn!(error = %e, "replacing the unusable self-signed certificate");
            return None;
        }
    };
    let renew_after = unix_now().saturating_add(SELF_SIGNED_RENEW_BEFORE.as_secs() as i64);
    if entry.not_after <= renew_after {
        tracing::info!(cert = %cert.display(), "self-signed certificate expires soon: replacing it");
        return None;
    }
    if !entry.names.iter().any(|n| n == hostname) {
        tracing::info!(cert = %cert.display(), hostname, "self-signed certificate is for another host name: replacing it");
        return None;
    }
    Some(entry)
}

fn unix_now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

/// Writes a new self-signed certificate for `hostname`, `localhost`,
/// `127.0.0.1` and `::1`:
/// directory 0700, key 0600, each file written to a temporary name, synced
/// and renamed so a crash never leaves half a file.
fn generate_self_signed(
    dir: &Path,
    cert_path: &Path,
    key_path: &Path,
    hostname: &str,
) -> Result<(), TlsError> {
    let generate_error = |detail: String| TlsError::Generate {
        hostname: hostname.to_owned(),
        detail,
    };
    // Also the loopback names and addresses a client on this machine
    // connects to (`host 127.0.0.1` in a client's settings): a client
    // that checks the name must find it in the certificate.
    let mut names = vec![hostname.to_owned()];
    for extra in ["localhost", "127.0.0.1", "::1"] {
        if hostname != extra {
            names.push(extra.to_owned());
        }
    }
    let mut params =
        rcgen::CertificateParams::new(names).map_err(|e| generate_error(e.to_string()))?;
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, hostname);
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::hours(1);
    params.not_after = now + SELF_SIGNED_VALIDITY;
    let key = rcgen::KeyPair::generate().map_err(|e| generate_error(e.to_string()))?;
    let cert = params
        .self_signed(&key)
        .map_err(|e| generate_error(e.to_string()))?;

    let write_error = |path: &Path| {
        let path = path.to_path_buf();
        move |source| TlsError::Write { path, source }
    };
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(write_error(dir))?;
    fs::set_permissions(dir, fs::Permissions::from_mode(0o700)).map_err(write_error(dir))?;
    write_atomically(key_path, key.serialize_pem().as_bytes(), 0o600)
        .map_err(write_error(key_path))?;
    write_atomically(cert_path, cert.pem().as_bytes(), 0o644).map_err(write_error(cert_path))?;
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(write_error(dir))?;
    tracing::info!(cert = %cert_path.display(), key = %key_path.display(), hostname, "generated a self-signed TLS certificate");
    Ok(())
}

fn write_atomically(path: &Path, contents: &[u8], mode: u32) -> io::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    // A leftover from a crash may have other permissions: start afresh.
    match fs::remove_file(&tmp) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)?;
    file.write_all(contents)?;
    file.sync_all()?;
    drop(file);
    fs::rename(&tmp, path)
}

/// What a TLS session negotiated, for `Received:` and the logs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsInfo {
    /// `TLSv1.2` or `TLSv1.3`.
    pub version: String,
    /// IANA name, e.g. `TLS_AES_256_GCM_SHA384`.
    pub cipher: String,
    /// The name the client asked for, if it sent SNI.
    pub sni: Option<String>,
}

impl fmt::Display for TlsInfo {
    /// `TLSv1.3 TLS_AES_256_GCM_SHA384`, as in `Received: … (using …)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.version, self.cipher)
    }
}

/// A client connection before or after STARTTLS (or with implicit TLS).
#[derive(Debug)]
pub enum MaybeTlsStream {
    /// Plaintext.
    Plain(TcpStream),
    /// TLS established.
    Tls(Box<tokio_rustls::server::TlsStream<TcpStream>>),
}

impl MaybeTlsStream {
    /// The negotiated version, cipher and SNI; `None` for plaintext.
    pub fn tls_info(&self) -> Option<TlsInfo> {
        let MaybeTlsStream::Tls(tls) = self else {
            return None;
        };
        let conn = tls.get_ref().1;
        let version = match conn.protocol_version()? {
            ProtocolVersion::TLSv1_2 => "TLSv1.2".to_owned(),
            ProtocolVersion::TLSv1_3 => "TLSv1.3".to_owned(),
            other => format!("{other:?}"),
        };
        let suite = conn.negotiated_cipher_suite()?.suite();
        let cipher = match suite.as_str() {
            // rustls spells the TLS 1.3 suites TLS13_…; IANA (and OpenSSL,
            // which other servers' Received: lines use) spell them TLS_….
            Some(name) => match name.strip_prefix("TLS13_") {
                Some(rest) => format!("TLS_{rest}"),
                None => name.to_owned(),
            },
            None => format!("{suite:?}"),
        };
        Some(TlsInfo {
            version,
            cipher,
            sni: conn.server_name().map(str::to_owned),
        })
    }

    /// Whether the connection is encrypted.
    pub fn is_tls(&self) -> bool {
        matches!(self, MaybeTlsStream::Tls(_))
    }

    /// The TCP socket underneath (peer address, socket options).
    pub fn tcp(&self) -> &TcpStream {
        match self {
            MaybeTlsStream::Plain(tcp) => tcp,
            MaybeTlsStream::Tls(tls) => tls.get_ref().0,
        }
    }

    /// Runs the server side of a TLS handshake on a plaintext connection:
    /// after STARTTLS, or at once for implicit TLS. The handshake must end
    /// within `timeout`. Only the socket is handed to rustls: whatever the
    /// caller had read and buffered must be discarded by the caller.
    pub async fn upgrade(
        self,
        acceptor: &TlsAcceptor,
        timeout: Duration,
    ) -> Result<MaybeTlsStream, TlsError> {
        let tcp = match self {
            MaybeTlsStream::Plain(tcp) => tcp,
            MaybeTlsStream::Tls(_) => return Err(TlsError::AlreadyTls),
        };
        let upgraded = match tokio::time::timeout(timeout, acceptor.accept(tcp)).await {
            Err(_) => Err(TlsError::HandshakeTimeout(timeout)),
            Ok(Err(e)) => Err(TlsError::Handshake(e)),
            Ok(Ok(tls)) => Ok(MaybeTlsStream::Tls(Box::new(tls))),
        };
        // Every server-side handshake (implicit TLS, STARTTLS, STLS, and
        // the HTTPS autoconfig listener) passes here.
        let version = upgraded
            .as_ref()
            .ok()
            .and_then(MaybeTlsStream::tls_info)
            .map(|i| i.version);
        crate::metrics::metrics().tls_handshake(version.as_deref());
        upgraded
    }
}

impl AsyncRead for MaybeTlsStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            MaybeTlsStream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            MaybeTlsStream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for MaybeTlsStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            MaybeTlsStream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            MaybeTlsStream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            MaybeTlsStream::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            MaybeTlsStream::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            MaybeTlsStream::Plain(s) => s.is_write_vectored(),
            MaybeTlsStream::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            MaybeTlsStream::Plain(s) => Pin::new(s).poll_flush(cx),
            MaybeTlsStream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            MaybeTlsStream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            MaybeTlsStream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_generated_certificate_names_the_loopback_addresses_clients_use() {
        use rustls::client::danger::ServerCertVerifier as _;
        // Issue 15's papercut: a client set to `host 127.0.0.1` (the
        // README's msmtp recipe) checks that name against the certificate.
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = (dir.path().join("c.pem"), dir.path().join("k.pem"));
        generate_self_signed(dir.path(), &cert, &key, "mx.example.test").unwrap();
        let der = CertificateDer::pem_file_iter(&cert)
            .unwrap()
            .next()
            .unwrap()
            .unwrap();
        let mut roots = rustls::RootCertStore::empty();
        roots.add(der.clone()).unwrap();
        let verifier = rustls::client::WebPkiServerVerifier::builder_with_provider(
            Arc::new(roots),
            Arc::new(rustls::crypto::ring::default_provider()),
        )
        .build()
        .unwrap();
        let now = rustls_pki_types::UnixTime::now();
        for name in ["mx.example.test", "localhost", "127.0.0.1", "::1"] {
            let server = rustls_pki_types::ServerName::try_from(name).unwrap();
            verifier
                .verify_server_cert(&der, &[], &server, &[], now)
                .unwrap_or_else(|e| panic!("{name}: {e}"));
        }
        let other = rustls_pki_types::ServerName::try_from("192.0.2.1").unwrap();
        assert!(
            verifier
                .verify_server_cert(&der, &[], &other, &[], now)
                .is_err()
        );
    }

    fn entry(names: &[&str], source: &str) -> Entry {
        let key = rcgen::KeyPair::generate().unwrap();
        let params =
            rcgen::CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
                .unwrap();
        let cert = params.self_signed(&key).unwrap();
        let provider = rustls::crypto::ring::default_provider();
        let signing = provider
            .key_provider
            .load_private_key(PrivateKeyDer::try_from(key.serialize_der()).unwrap())
            .unwrap();
        let info = parse_leaf(cert.der()).unwrap();
        Entry {
            names: info.dns_names,
            not_after: info.not_after,
            key: Arc::new(CertifiedKey::new(vec![cert.der().clone()], signing)),
            source: source.into(),
        }
    }

    fn pick(set: &CertSet, sni: Option<&str>) -> String {
        set.select(sni).source.display().to_string()
    }

    #[test]
    fn selection_prefers_exact_then_wildcard_then_default() {
        let set = CertSet {
            entries: vec![
                entry(&["mx.example.test", "*.example.org"], "a"),
                entry(&["smtp.example.org", "example.net"], "b"),
                entry(&["*.example.net"], "c"),
            ],
        };
        assert_eq!(pick(&set, Some("mx.example.test")), "a");
        // b's exact name wins over a's wildcard, though a comes first.
        assert_eq!(pick(&set, Some("smtp.example.org")), "b");
        assert_eq!(pick(&set, Some("imap.example.org")), "a");
        // Names are case-insensitive; a trailing dot is the same name.
        assert_eq!(pick(&set, Some("SMTP.Example.ORG.")), "b");
        assert_eq!(pick(&set, Some("example.net")), "b");
        assert_eq!(pick(&set, Some("mail.example.net")), "c");
        // A wildcard covers exactly one label: not two, not none.
        assert_eq!(pick(&set, Some("a.b.example.net")), "a");
        assert_eq!(pick(&set, Some("example.org")), "a");
        // Unknown or absent SNI: the default.
        assert_eq!(pick(&set, Some("elsewhere.test")), "a");
        assert_eq!(pick(&set, None), "a");
    }

    #[test]
    fn a_wildcard_never_matches_a_bare_top_level_name() {
        // A wildcard directly under a top-level label ("*.test") is not
        // honoured: "x.test" gets the default.
        let set = CertSet {
            entries: vec![entry(&["default.example"], "a"), entry(&["*.test"], "b")],
        };
        assert_eq!(pick(&set, Some("x.test")), "a");
    }

    #[test]
    fn leaf_parsing_reads_dns_names_and_expiry_and_skips_ip_addresses() {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(vec![
            "Mail.Example.Test".to_string(),
            "192.0.2.7".to_string(),
            "*.example.test".to_string(),
        ])
        .unwrap();
        params.not_after = rcgen::date_time_ymd(2049, 12, 31);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "ignored.example");
        let cert = params.self_signed(&key).unwrap();
        let info = parse_leaf(cert.der()).unwrap();
        assert_eq!(info.dns_names, ["mail.example.test", "*.example.test"]);
        // 2049-12-31T00:00:00Z; after 2049 X.509 switches to GeneralizedTime.
        assert_eq!(info.not_after, 2_524_521_600);
        params.not_after = rcgen::date_time_ymd(2051, 1, 2);
        let cert = params.self_signed(&key).unwrap();
        assert_eq!(parse_leaf(cert.der()).unwrap().not_after, 2_556_230_400);
    }

    #[test]
    fn leaf_parsing_rejects_garbage_without_panicking() {
        assert!(parse_leaf(b"").is_err());
        assert!(parse_leaf(b"\x30\x03\x02\x01\x01").is_err());
        let key = rcgen::KeyPair::generate().unwrap();
        let params = rcgen::CertificateParams::new(vec!["a.example".to_string()]).unwrap();
        let der = params.self_signed(&key).unwrap().der().to_vec();
        for len in 0..der.len() {
            assert!(parse_leaf(&der[..len]).is_err(), "truncated to {len}");
        }
    }
}
