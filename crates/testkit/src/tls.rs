//! Throwaway TLS material: a CA, a server certificate and a client certificate.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use mysql_async::{ClientIdentity, SslOpts};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};

use crate::KitError;

/// A CA plus a server and a client certificate signed by it, as PEM files in one directory:
/// `ca.pem`, `ca-key.pem`, `server.pem`, `server-key.pem`, `client.pem`, `client-key.pem`.
///
/// The server certificate names `127.0.0.1` and `localhost`, so clients that verify host names
/// accept it for the kit's servers. Keys are ECDSA P-256.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    dir: PathBuf,
    /// Keeps a directory made by [`TlsFiles::generate_temp`] alive while any clone exists.
    _temp: Option<Arc<tempfile::TempDir>>,
}

impl TlsFiles {
    /// Generates fresh certificates into `dir` (created if missing; existing files replaced).
    pub fn generate(dir: impl AsRef<Path>) -> Result<TlsFiles, KitError> {
        let dir = dir.as_ref().to_path_buf();
        std::fs::create_dir_all(&dir)
            .map_err(|e| KitError::io("creating certificate directory", &dir, e))?;
        let files = TlsFiles { dir, _temp: None };
        files.write_all()?;
        Ok(files)
    }

    /// Generates fresh certificates into a new temporary directory, removed when the last
    /// clone of the returned value is dropped.
    pub fn generate_temp() -> Result<TlsFiles, KitError> {
        let temp = tempfile::Builder::new()
            .prefix("outflow-tls-")
            .tempdir()
            .map_err(|e| {
                KitError::io("creating temporary directory in", std::env::temp_dir(), e)
            })?;
        let files = TlsFiles {
            dir: temp.path().to_path_buf(),
            _temp: Some(Arc::new(temp)),
        };
        files.write_all()?;
        Ok(files)
    }

    fn write_all(&self) -> Result<(), KitError> {
        let tls = |what: &'static str| move |source: rcgen::Error| KitError::Tls { what, source };

        let ca_key = KeyPair::generate().map_err(tls("CA key"))?;
        let mut ca_params =
            CertificateParams::new(Vec::<String>::new()).map_err(tls("CA parameters"))?;
        ca_params.distinguished_name = name("outflow-testkit CA");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca_cert = ca_params
            .self_signed(&ca_key)
            .map_err(tls("CA certificate"))?;
        let issuer = Issuer::new(ca_params, &ca_key);

        let server_key = KeyPair::generate().map_err(tls("server key"))?;
        let mut server_params =
            CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()])
                .map_err(tls("server parameters"))?;
        server_params.distinguished_name = name("localhost");
        server_params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        server_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let server_cert = server_params
            .signed_by(&server_key, &issuer)
            .map_err(tls("server certificate"))?;

        let client_key = KeyPair::generate().map_err(tls("client key"))?;
        let mut client_params =
            CertificateParams::new(Vec::<String>::new()).map_err(tls("client parameters"))?;
        client_params.distinguished_name = name("outflow-testkit client");
        client_params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        client_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let client_cert = client_params
            .signed_by(&client_key, &issuer)
            .map_err(tls("client certificate"))?;

        write_pem(&self.ca_cert(), &ca_cert.pem(), false)?;
        write_pem(&self.ca_key(), &ca_key.serialize_pem(), true)?;
        write_pem(&self.server_cert(), &server_cert.pem(), false)?;
        write_pem(&self.server_key(), &server_key.serialize_pem(), true)?;
        write_pem(&self.client_cert(), &client_cert.pem(), false)?;
        write_pem(&self.client_key(), &client_key.serialize_pem(), true)?;
        Ok(())
    }

    /// The directory holding the files.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// `ca.pem`: the CA certificate clients should trust.
    pub fn ca_cert(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }

    /// `ca-key.pem`: the CA's private key.
    pub fn ca_key(&self) -> PathBuf {
        self.dir.join("ca-key.pem")
    }

    /// `server.pem`: the server certificate (SAN 127.0.0.1 and localhost).
    pub fn server_cert(&self) -> PathBuf {
        self.dir.join("server.pem")
    }

    /// `server-key.pem`: the server's private key.
    pub fn server_key(&self) -> PathBuf {
        self.dir.join("server-key.pem")
    }

    /// `client.pem`: a client certificate signed by the CA.
    pub fn client_cert(&self) -> PathBuf {
        self.dir.join("client.pem")
    }

    /// `client-key.pem`: the client certificate's private key.
    pub fn client_key(&self) -> PathBuf {
        self.dir.join("client-key.pem")
    }

    /// mysql_async TLS options that trust only this CA and verify the server's host name.
    pub fn ssl_opts(&self) -> SslOpts {
        SslOpts::default().with_root_certs(vec![self.ca_cert().into()])
    }

    /// Like [`TlsFiles::ssl_opts`], and also presents the client certificate.
    pub fn ssl_opts_with_client_cert(&self) -> SslOpts {
        self.ssl_opts()
            .with_client_identity(Some(ClientIdentity::new(
                self.client_cert().into(),
                self.client_key().into(),
            )))
    }
}

fn name(common_name: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name);
    dn
}

fn write_pem(path: &Path, pem: &str, private: bool) -> Result<(), KitError> {
    std::fs::write(path, pem).map_err(|e| KitError::io("writing", path, e))?;
    if private {
        use std::os::unix::fs::PermissionsExt;
        // mariadbd does not insist, but a world-readable key is a bad habit to model.
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
            .map_err(|e| KitError::io("restricting permissions of", path, e))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_six_pem_files() {
        let tls = TlsFiles::generate_temp().expect("generate");
        for (path, marker) in [
            (tls.ca_cert(), "BEGIN CERTIFICATE"),
            (tls.server_cert(), "BEGIN CERTIFICATE"),
            (tls.client_cert(), "BEGIN CERTIFICATE"),
            (tls.ca_key(), "PRIVATE KEY"),
            (tls.server_key(), "PRIVATE KEY"),
            (tls.client_key(), "PRIVATE KEY"),
        ] {
            let text = std::fs::read_to_string(&path).expect("read pem");
            assert!(text.contains(marker), "{} lacks {marker}", path.display());
        }
        let dir = tls.dir().to_path_buf();
        drop(tls);
        assert!(!dir.exists(), "temporary certificate dir not removed");
    }

    #[test]
    fn generate_into_given_dir_keeps_it() {
        let parent = tempfile::tempdir().expect("tempdir");
        let dir = parent.path().join("certs");
        let tls = TlsFiles::generate(&dir).expect("generate");
        drop(tls);
        assert!(dir.join("server-key.pem").exists());
    }
}
