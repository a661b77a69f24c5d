//! rustls configuration for the TLS modes, and TLS errors in words.

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};

use crate::options::{TlsMode, TlsOptions};
use crate::Error;

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Builds the client configuration for `opts` (not called for [`TlsMode::Disabled`]).
pub(crate) fn client_config(opts: &TlsOptions) -> Result<Arc<ClientConfig>, Error> {
    let provider = provider();
    let versions: &[&rustls::SupportedProtocolVersion] = if opts.require_tls13 {
        &[&rustls::version::TLS13]
    } else {
        rustls::ALL_VERSIONS
    };
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(versions)
        .map_err(|e| Error::Options(format!("TLS versions: {e}")))?;
    let verifier: Arc<dyn ServerCertVerifier> = match opts.mode {
        TlsMode::Disabled | TlsMode::Preferred | TlsMode::Required => {
            Arc::new(NoVerification(provider.clone()))
        }
        TlsMode::VerifyCa | TlsMode::VerifyIdentity => {
            let roots = Arc::new(root_store(opts)?);
            let webpki = WebPkiServerVerifier::builder_with_provider(roots, provider.clone())
                .build()
                .map_err(|e| Error::Options(format!("TLS trust store: {e}")))?;
            if opts.mode == TlsMode::VerifyCa {
                Arc::new(AnyName(webpki))
            } else {
                webpki
            }
        }
    };
    let builder = builder
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    let config = match (&opts.cert, &opts.key) {
        (Some(cert), Some(key)) => {
            let chain = CertificateDer::pem_file_iter(cert)
                .and_then(|it| it.collect::<Result<Vec<_>, _>>())
                .map_err(|e| {
                    Error::Options(format!("TLS client certificate {}: {e}", cert.display()))
                })?;
            if chain.is_empty() {
                return Err(Error::Options(format!(
                    "TLS client certificate {}: no certificate in the file",
                    cert.display()
                )));
            }
            let key = PrivateKeyDer::from_pem_file(key)
                .map_err(|e| Error::Options(format!("TLS client key {}: {e}", key.display())))?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| Error::Options(format!("TLS client certificate and key: {e}")))?
        }
        (None, None) => builder.with_no_client_auth(),
        _ => {
            return Err(Error::Options(
                "TLS client certificate and key must be given together".to_string(),
            ))
        }
    };
    Ok(Arc::new(config))
}

fn root_store(opts: &TlsOptions) -> Result<RootCertStore, Error> {
    let mut roots = RootCertStore::empty();
    match &opts.ca {
        Some(ca) => {
            let certs = CertificateDer::pem_file_iter(ca)
                .and_then(|it| it.collect::<Result<Vec<_>, _>>())
                .map_err(|e| Error::Options(format!("TLS CA file {}: {e}", ca.display())))?;
            let (added, _) = roots.add_parsable_certificates(certs);
            if added == 0 {
                return Err(Error::Options(format!(
                    "TLS CA file {}: no usable CA certificate in it",
                    ca.display()
                )));
            }
        }
        None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
    }
    Ok(roots)
}

/// The server name to verify and to send as SNI.
pub(crate) fn server_name(host: &str) -> Result<ServerName<'static>, Error> {
    ServerName::try_from(host.to_string())
        .map_err(|e| Error::Options(format!("'{host}' is not a valid TLS server name: {e}")))
}

/// `preferred` and `required`: encryption without authentication of the server, as the
/// mysql clients do in these modes. Handshake signatures are still checked, so the session
/// is at least bound to the certificate presented.
#[derive(Debug)]
struct NoVerification(Arc<CryptoProvider>);

impl ServerCertVerifier for NoVerification {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// `verify_ca`: the full WebPKI check, except that a certificate valid for another name is
/// accepted. rustls checks the chain before the name, so a name error means the chain was
/// good.
#[derive(Debug)]
struct AnyName(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for AnyName {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
        {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

/// Describes a failed TLS handshake, naming the certificate problem when there is one.
pub(crate) fn describe(err: &std::io::Error, opts: &TlsOptions, host: &str) -> String {
    let Some(tls) = err
        .get_ref()
        .and_then(|e| e.downcast_ref::<rustls::Error>())
    else {
        return format!("during the TLS handshake: {err}");
    };
    let trusted = match &opts.ca {
        Some(ca) => format!("the CA file {}", ca.display()),
        None => "the webpki root store (no CA file given)".to_string(),
    };
    match tls {
        rustls::Error::InvalidCertificate(c) => {
            let what = match c {
                CertificateError::UnknownIssuer => {
                    format!("it is not signed by a CA in {trusted}")
                }
                CertificateError::NotValidForName => {
                    format!("it is not valid for the host name '{host}'")
                }
                CertificateError::NotValidForNameContext { presented, .. } => format!(
                    "it is not valid for the host name '{host}' (it names {}); use the name the certificate gives, or tls-mode verify_ca",
                    presented.join(", ")
                ),
                CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
                    "it has expired".to_string()
                }
                CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
                    "it is not valid yet (check the clocks)".to_string()
                }
                CertificateError::Revoked => "it has been revoked".to_string(),
                // webpki finds the issuer by name: a CA of the same name with another key
                // ends here rather than in UnknownIssuer.
                CertificateError::BadSignature => format!(
                    "its signature does not verify with the CAs in {trusted} (was it signed by another CA of the same name?)"
                ),
                CertificateError::BadEncoding => "it cannot be parsed".to_string(),
                other => format!("{other:?}"),
            };
            format!("the server's certificate was rejected: {what}")
        }
        rustls::Error::AlertReceived(alert) => format!(
            "the server aborted the TLS handshake with alert {alert:?} (does it require a client certificate, or one signed by another CA?)"
        ),
        rustls::Error::PeerIncompatible(p) => format!(
            "no common TLS parameters with the server ({p:?}){}",
            if opts.require_tls13 {
                "; TLS 1.3 is required and the server may only offer TLS 1.2"
            } else {
                ""
            }
        ),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configs_build_for_every_mode() {
        for mode in [
            TlsMode::Preferred,
            TlsMode::Required,
            TlsMode::VerifyCa,
            TlsMode::VerifyIdentity,
        ] {
            let opts = TlsOptions {
                mode,
                ..TlsOptions::default()
            };
            client_config(&opts).unwrap();
        }
        let opts = TlsOptions {
            cert: Some("x.pem".into()),
            ..TlsOptions::default()
        };
        assert!(client_config(&opts)
            .unwrap_err()
            .to_string()
            .contains("together"));
        let opts = TlsOptions {
            ca: Some("/nonexistent/ca.pem".into()),
            ..TlsOptions::default()
        };
        assert!(client_config(&opts)
            .unwrap_err()
            .to_string()
            .contains("/nonexistent/ca.pem"));
    }

    #[test]
    fn describes_certificate_problems() {
        let err = std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer),
        );
        let opts = TlsOptions {
            ca: Some("ca.pem".into()),
            ..TlsOptions::default()
        };
        let text = describe(&err, &opts, "db");
        assert!(
            text.contains("not signed by a CA in the CA file ca.pem"),
            "{text}"
        );
    }
}
