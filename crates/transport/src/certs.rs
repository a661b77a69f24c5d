//! Certificates for quick set-ups: a private CA, a server certificate and a client certificate
//! signed by it, written as PEM files (`outflow certs`). Production set-ups can bring their own.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};

/// Names the server certificate always covers, so a local test or a relay over an SSH tunnel
/// works without options.
pub const DEFAULT_SANS: [&str; 2] = ["127.0.0.1", "localhost"];

/// Why certificates could not be made.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    /// rcgen refused a parameter or failed to sign.
    #[error("generating the {what}: {source}")]
    Generate {
        /// Which item.
        what: &'static str,
        /// rcgen's error.
        source: rcgen::Error,
    },
    /// A file could not be written.
    #[error("writing {}: {source}", path.display())]
    Write {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
}

/// The six files of a generated set, in one directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertFiles {
    /// `ca.pem`: the CA certificate both peers trust.
    pub ca: PathBuf,
    /// `ca-key.pem`: the CA key; keep it off the relay hosts once certificates are issued.
    pub ca_key: PathBuf,
    /// `server.pem`: the receiver's certificate.
    pub server: PathBuf,
    /// `server-key.pem`: the receiver's key.
    pub server_key: PathBuf,
    /// `client.pem`: the sender's certificate.
    pub client: PathBuf,
    /// `client-key.pem`: the sender's key.
    pub client_key: PathBuf,
}

impl CertFiles {
    /// The file names of a set in `dir` (whether or not they exist).
    pub fn in_dir(dir: &Path) -> CertFiles {
        CertFiles {
            ca: dir.join("ca.pem"),
            ca_key: dir.join("ca-key.pem"),
            server: dir.join("server.pem"),
            server_key: dir.join("server-key.pem"),
            client: dir.join("client.pem"),
            client_key: dir.join("client-key.pem"),
        }
    }
}

fn name(common_name: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name);
    dn
}

/// Generates a CA, a server certificate for [`DEFAULT_SANS`] plus `extra_sans` (DNS names or
/// IP addresses), and a client certificate, into `dir` (created if missing; files replaced).
/// Keys are ECDSA P-256; private keys are written with mode 0600.
pub fn generate(dir: &Path, extra_sans: &[String]) -> Result<CertFiles, CertError> {
    let gen = |what: &'static str| move |source: rcgen::Error| CertError::Generate { what, source };
    std::fs::create_dir_all(dir).map_err(|source| CertError::Write {
        path: dir.to_path_buf(),
        source,
    })?;
    let files = CertFiles::in_dir(dir);

    let ca_key = KeyPair::generate().map_err(gen("CA key"))?;
    let mut ca_params =
        CertificateParams::new(Vec::<String>::new()).map_err(gen("CA parameters"))?;
    ca_params.distinguished_name = name("outflow relay CA");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca_cert = ca_params
        .self_signed(&ca_key)
        .map_err(gen("CA certificate"))?;
    let issuer = Issuer::new(ca_params, &ca_key);

    let mut sans: Vec<String> = DEFAULT_SANS.iter().map(|s| s.to_string()).collect();
    for san in extra_sans {
        if !sans.contains(san) {
            sans.push(san.clone());
        }
    }
    let leaf = |common_name: &str,
                sans: Vec<String>,
                usage: ExtendedKeyUsagePurpose,
                what: &'static str| {
        let key = KeyPair::generate().map_err(gen(what))?;
        let mut params = CertificateParams::new(sans).map_err(gen(what))?;
        params.distinguished_name = name(common_name);
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![usage];
        let cert = params.signed_by(&key, &issuer).map_err(gen(what))?;
        Ok::<_, CertError>((cert.pem(), key.serialize_pem()))
    };
    let (server_pem, server_key) = leaf(
        "outflow receiver",
        sans,
        ExtendedKeyUsagePurpose::ServerAuth,
        "server certificate",
    )?;
    let (client_pem, client_key) = leaf(
        "outflow sender",
        Vec::new(),
        ExtendedKeyUsagePurpose::ClientAuth,
        "client certificate",
    )?;

    write(&files.ca, &ca_cert.pem(), false)?;
    write(&files.ca_key, &ca_key.serialize_pem(), true)?;
    write(&files.server, &server_pem, false)?;
    write(&files.server_key, &server_key, true)?;
    write(&files.client, &client_pem, false)?;
    write(&files.client_key, &client_key, true)?;
    Ok(files)
}

fn write(path: &Path, pem: &str, private: bool) -> Result<(), CertError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let err = |source| CertError::Write {
        path: path.to_path_buf(),
        source,
    };
    // Remove first so that mode 0600 applies even when replacing a world-readable file.
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(err(e)),
    }
    let mut file = std::fs::OpenOptions::new()
        .create_new(true)
        .write(true)
        .mode(if private { 0o600 } else { 0o644 })
        .open(path)
        .map_err(err)?;
    file.write_all(pem.as_bytes()).map_err(err)
}
