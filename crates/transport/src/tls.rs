//! Mutual TLS for the relay: TLS 1.3 only, ring provider, a common CA verifying both peers.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use pki_types::pem::PemObject;
use pki_types::{CertificateDer, PrivateKeyDer};
use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use quinn::rustls::{self, pki_types};
use rustls::crypto::CryptoProvider;
use rustls::server::WebPkiClientVerifier;
use rustls::RootCertStore;

use crate::certs::CertFiles;

/// ALPN protocol id of the relay: a peer speaking anything else fails the handshake.
pub const ALPN: &[u8] = b"outflow-relay/1";

/// One peer's TLS material and settings.
#[derive(Debug, Clone)]
pub struct TlsConfig {
    /// PEM file of the CA that signed the peer's certificate (the only trusted root).
    pub ca: PathBuf,
    /// PEM file of this side's certificate chain.
    pub cert: PathBuf,
    /// PEM file of this side's private key.
    pub key: PathBuf,
    /// TLS 1.3 cipher suites to offer, by IANA name (`TLS13_AES_128_GCM_SHA256`,
    /// `TLS13_AES_256_GCM_SHA384`, `TLS13_CHACHA20_POLY1305_SHA256`), in preference order.
    /// Empty: all three, AES-128-GCM first.
    pub cipher_suites: Vec<String>,
}

impl TlsConfig {
    /// The receiver's (server's) side of a set made by [`crate::certs::generate`].
    pub fn server_from(files: &CertFiles) -> TlsConfig {
        TlsConfig {
            ca: files.ca.clone(),
            cert: files.server.clone(),
            key: files.server_key.clone(),
            cipher_suites: Vec::new(),
        }
    }

    /// The sender's (client's) side of a set made by [`crate::certs::generate`].
    pub fn client_from(files: &CertFiles) -> TlsConfig {
        TlsConfig {
            ca: files.ca.clone(),
            cert: files.client.clone(),
            key: files.client_key.clone(),
            cipher_suites: Vec::new(),
        }
    }
}

/// Why TLS could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A PEM file could not be read or holds nothing usable.
    #[error("reading {what} from {}: {reason}", path.display())]
    Pem {
        /// What the file should hold.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// A cipher suite name that is not a TLS 1.3 suite of the ring provider.
    #[error("unknown TLS 1.3 cipher suite {0:?} (known: TLS13_AES_128_GCM_SHA256, TLS13_AES_256_GCM_SHA384, TLS13_CHACHA20_POLY1305_SHA256)")]
    UnknownSuite(String),
    /// rustls refused the configuration.
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
    /// The client-certificate verifier could not be built.
    #[error("client certificate verifier: {0}")]
    Verifier(#[from] rustls::server::VerifierBuilderError),
    /// quinn refused the rustls configuration.
    #[error("QUIC crypto configuration: {0}")]
    Quic(String),
}

fn certs(path: &Path, what: &'static str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let err = |reason: String| TlsError::Pem {
        what,
        path: path.to_path_buf(),
        reason,
    };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| err(e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| err(e.to_string()))?;
    if certs.is_empty() {
        return Err(err("no certificate in the file".into()));
    }
    Ok(certs)
}

fn key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| TlsError::Pem {
        what: "a private key",
        path: path.to_path_buf(),
        reason: e.to_string(),
    })
}

fn roots(path: &Path) -> Result<RootCertStore, TlsError> {
    let mut store = RootCertStore::empty();
    for cert in certs(path, "CA certificates")? {
        store.add(cert).map_err(|e| TlsError::Pem {
            what: "a CA certificate",
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
    }
    Ok(store)
}

/// The ring provider reduced to the configured TLS 1.3 suites.
fn provider(names: &[String]) -> Result<Arc<CryptoProvider>, TlsError> {
    let mut provider = rustls::crypto::ring::default_provider();
    let tls13: Vec<_> = provider
        .cipher_suites
        .iter()
        .copied()
        .filter(|s| s.version() == &rustls::version::TLS13)
        .collect();
    provider.cipher_suites = if names.is_empty() {
        tls13
    } else {
        names
            .iter()
            .map(|name| {
                tls13
                    .iter()
                    .copied()
                    .find(|s| format!("{:?}", s.suite()) == *name)
                    .ok_or_else(|| TlsError::UnknownSuite(name.clone()))
            })
            .collect::<Result<_, _>>()?
    };
    Ok(Arc::new(provider))
}

/// QUIC protects its Initial packets with AES-128-GCM whatever suites TLS then negotiates
/// (RFC 9001, section 5), so it is supplied apart from the configured suites.
fn initial_suite() -> Result<rustls::quic::Suite, TlsError> {
    rustls::crypto::ring::cipher_suite::TLS13_AES_128_GCM_SHA256
        .tls13()
        .and_then(|suite| suite.quic_suite())
        .ok_or_else(|| TlsError::Quic("ring lacks the QUIC initial suite".into()))
}

/// QUIC server crypto: requires a client certificate signed by the CA.
pub fn server_crypto(config: &TlsConfig) -> Result<Arc<QuicServerConfig>, TlsError> {
    let provider = provider(&config.cipher_suites)?;
    let verifier =
        WebPkiClientVerifier::builder_with_provider(Arc::new(roots(&config.ca)?), provider.clone())
            .build()?;
    let mut tls = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(verifier)
        .with_single_cert(
            certs(&config.cert, "the server certificate")?,
            key(&config.key)?,
        )?;
    tls.alpn_protocols = vec![ALPN.to_vec()];
    let quic = QuicServerConfig::with_initial(Arc::new(tls), initial_suite()?)
        .map_err(|e| TlsError::Quic(e.to_string()))?;
    Ok(Arc::new(quic))
}

/// QUIC client crypto: verifies the server's certificate against the CA and its name, and
/// presents the client certificate.
pub fn client_crypto(config: &TlsConfig) -> Result<Arc<QuicClientConfig>, TlsError> {
    let provider = provider(&config.cipher_suites)?;
    let mut tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_root_certificates(roots(&config.ca)?)
        .with_client_auth_cert(
            certs(&config.cert, "the client certificate")?,
            key(&config.key)?,
        )?;
    tls.alpn_protocols = vec![ALPN.to_vec()];
    let quic = QuicClientConfig::with_initial(Arc::new(tls), initial_suite()?)
        .map_err(|e| TlsError::Quic(e.to_string()))?;
    Ok(Arc::new(quic))
}
