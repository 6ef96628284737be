//! Outbound TLS: the opportunistic configuration (RFC 7435: any
//! certificate, the handshake signatures checked) and the verified one
//! (WebPKI or a pinned CA file) for smarthosts and policies that demand it.
//!
//! What this module must never do: build a configuration with another
//! crypto provider than ring, or accept a verified session whose chain or
//! name did not check out.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio_rustls::TlsConnector;

use super::{OutboundError, SYSTEM_CA_BUNDLES};

/// The ring provider; the only one Tern uses.
fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A client configuration limited to TLS 1.2 and 1.3 with `verifier`.
fn client_config_with(
    verifier: Arc<dyn ServerCertVerifier>,
) -> Result<Arc<rustls::ClientConfig>, OutboundError> {
    let config = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(OutboundError::Tls)?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// Tern's one server certificate verifier: the chain and name as `chain`
/// says, and in every case the handshake signatures, with the ring
/// provider's algorithms — so the session is encrypted to whoever holds
/// the key of the certificate presented.
#[derive(Debug)]
struct Verifier {
    chain: Chain,
    algorithms: WebPkiSupportedAlgorithms,
}

/// What [`Verifier`] checks of the chain and the name.
#[derive(Debug)]
enum Chain {
    /// Nothing: RFC 7435 opportunistic security, unauthenticated.
    Any,
    /// webpki against the roots, or else a server certificate that is byte
    /// for byte one of `pinned` (the admin's `ca_file`): a smarthost's own
    /// self-signed certificate is usually marked CA:TRUE (what `openssl
    /// req -x509` makes), which webpki refuses as an end entity
    /// (`CaUsedAsEndEntity`). Pinning the exact certificate is at least as
    /// strong as chaining to it.
    PinnedOrWebPki {
        pinned: Vec<CertificateDer<'static>>,
        webpki: Arc<rustls::client::WebPkiServerVerifier>,
    },
}

impl Verifier {
    fn new(chain: Chain) -> Verifier {
        Verifier {
            chain,
            algorithms: provider().signature_verification_algorithms,
        }
    }
}

impl ServerCertVerifier for Verifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let Chain::PinnedOrWebPki { pinned, webpki } = &self.chain else {
            return Ok(ServerCertVerified::assertion());
        };
        match webpki.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
        {
            Ok(v) => Ok(v),
            Err(_) if pinned.iter().any(|p| p.as_ref() == end_entity.as_ref()) => {
                Ok(ServerCertVerified::assertion())
            }
            Err(e) => Err(e),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// The shared client configuration for unauthenticated (opportunistic,
/// RFC 7435) TLS: any certificate chain and name, the handshake signatures
/// checked. Public for tests that need a client which sees whatever a
/// server presents.
pub fn opportunistic_config() -> Result<Arc<rustls::ClientConfig>, OutboundError> {
    static CONFIG: OnceLock<Result<Arc<rustls::ClientConfig>, rustls::Error>> = OnceLock::new();
    CONFIG
        .get_or_init(|| {
            let verifier = Arc::new(Verifier::new(Chain::Any));
            client_config_with(verifier).map_err(|e| match e {
                OutboundError::Tls(e) => e,
                other => rustls::Error::General(other.to_string()),
            })
        })
        .clone()
        .map_err(OutboundError::Tls)
}

/// A configuration that verifies the chain against the roots in `ca_file`
/// (or the system bundle) and the host name.
pub(super) fn verified_config(
    ca_file: Option<&Path>,
) -> Result<Arc<rustls::ClientConfig>, OutboundError> {
    let path = match ca_file {
        Some(p) => p.to_path_buf(),
        None => SYSTEM_CA_BUNDLES
            .iter()
            .map(PathBuf::from)
            .find(|p| p.is_file())
            .ok_or(OutboundError::NoSystemRoots)?,
    };
    let ca_error = |detail: String| OutboundError::CaFile {
        path: path.clone(),
        detail,
    };
    let mut roots = RootCertStore::empty();
    let mut pinned = Vec::new();
    let certs = CertificateDer::pem_file_iter(&path).map_err(|e| ca_error(e.to_string()))?;
    for cert in certs {
        let cert = cert.map_err(|e| ca_error(e.to_string()))?;
        // A bundle may hold certificates webpki cannot use; skip them.
        let _ = roots.add(cert.clone());
        if ca_file.is_some() {
            pinned.push(cert);
        }
    }
    if roots.is_empty() {
        return Err(ca_error("no usable certificate".into()));
    }
    let webpki =
        rustls::client::WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider())
            .build()
            .map_err(|e| ca_error(e.to_string()))?;
    client_config_with(Arc::new(Verifier::new(Chain::PinnedOrWebPki {
        pinned,
        webpki,
    })))
}

/// The name sent as SNI and checked against the certificate: the host
/// name, or the address when the name is not a DNS name.
pub(super) fn server_name(host: &str, ip: IpAddr) -> ServerName<'static> {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    ServerName::try_from(host.to_owned()).unwrap_or_else(|_| ServerName::from(ip))
}

/// TLS as one connection uses it.
#[derive(Clone)]
pub(crate) struct TlsSetup {
    pub(super) connector: TlsConnector,
    pub(super) name: ServerName<'static>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_names() {
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        assert!(matches!(
            server_name("mx.example.test", ip),
            ServerName::DnsName(_)
        ));
        assert!(matches!(
            server_name("192.0.2.1", ip),
            ServerName::IpAddress(_)
        ));
        assert!(matches!(
            server_name("[192.0.2.1]", ip),
            ServerName::IpAddress(_)
        ));
        assert!(matches!(
            server_name("bad name!", ip),
            ServerName::IpAddress(_)
        ));
    }
}
