//! rustls configurations of both roles: TLS 1.3 only, client certificates required and
//! verified by the cloud, the cloud's certificate verified by on-prem against the private CA.
//! Verification is never optional.

use std::path::Path;
use std::sync::Arc;

use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use thiserror::Error;

use crate::config::TlsFiles;

/// ALPN protocol of gateway sessions; lets a balancer route by ALPN and versions the protocol.
pub const ALPN: &[u8] = b"tether-gw/1";

/// Errors building TLS configurations.
#[derive(Debug, Error)]
pub enum TlsError {
    /// A PEM file could not be read or parsed.
    #[error("{path}: {message}")]
    Pem {
        /// The file.
        path: String,
        /// What went wrong.
        message: String,
    },
    /// rustls refused the material.
    #[error("tls: {0}")]
    Rustls(#[from] rustls::Error),
    /// The client verifier could not be built (e.g. empty CA).
    #[error("client verifier: {0}")]
    Verifier(String),
}

fn pem_err(path: &Path, message: impl Into<String>) -> TlsError {
    TlsError::Pem {
        path: path.display().to_string(),
        message: message.into(),
    }
}

/// Reads every certificate of a PEM file (at least one).
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let iter = CertificateDer::pem_file_iter(path).map_err(|e| pem_err(path, e.to_string()))?;
    let certs: Vec<_> = iter
        .collect::<Result<_, _>>()
        .map_err(|e| pem_err(path, e.to_string()))?;
    if certs.is_empty() {
        return Err(pem_err(path, "no certificate found"));
    }
    Ok(certs)
}

/// Reads the private key of a PEM file.
pub fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| pem_err(path, e.to_string()))
}

fn roots(path: &Path) -> Result<RootCertStore, TlsError> {
    let mut store = RootCertStore::empty();
    for cert in load_certs(path)? {
        store.add(cert).map_err(|e| pem_err(path, e.to_string()))?;
    }
    Ok(store)
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The cloud's server configuration: TLS 1.3, client certificate required and verified
/// against `files.ca`.
pub fn server_config(files: &TlsFiles) -> Result<Arc<ServerConfig>, TlsError> {
    let roots = Arc::new(roots(&files.ca)?);
    let verifier = WebPkiClientVerifier::builder_with_provider(roots, provider())
        .build()
        .map_err(|e| TlsError::Verifier(e.to_string()))?;
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(verifier)
        .with_single_cert(load_certs(&files.cert)?, load_key(&files.key)?)?;
    config.alpn_protocols = vec![ALPN.to_vec()];
    Ok(Arc::new(config))
}

/// On-prem's client configuration: TLS 1.3, cloud certificates verified against `files.ca`,
/// its own certificate presented.
pub fn client_config(files: &TlsFiles) -> Result<Arc<ClientConfig>, TlsError> {
    let mut config = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_root_certificates(roots(&files.ca)?)
        .with_client_auth_cert(load_certs(&files.cert)?, load_key(&files.key)?)?;
    config.alpn_protocols = vec![ALPN.to_vec()];
    Ok(Arc::new(config))
}

/// Whether a (chain-verified) end-entity certificate is valid for `identity`: the identity a
/// gateway claims in HELLO must be one of its certificate's DNS names, so the identity that
/// authorization uses comes from the certificate, not from the peer's word.
pub fn cert_has_identity(cert: &CertificateDer<'_>, identity: &str) -> bool {
    let Ok(name) = ServerName::try_from(identity) else {
        return false;
    };
    match webpki::EndEntityCert::try_from(cert) {
        Ok(ee) => ee.verify_is_valid_for_subject_name(&name).is_ok(),
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::certs::{TestCa, Validity};

    #[test]
    fn identity_comes_from_the_certificate() {
        let ca = TestCa::new("t").unwrap();
        let pem = ca
            .issue("onprem1", "gw.example.com", Validity::Current)
            .unwrap();
        let cert = CertificateDer::from_pem_slice(pem.cert.as_bytes()).unwrap();
        assert!(cert_has_identity(&cert, "onprem1"));
        assert!(cert_has_identity(&cert, "onprem1.gw.example.com"));
        assert!(!cert_has_identity(&cert, "onprem2"));
        assert!(!cert_has_identity(&cert, "not a name"));
    }

    #[test]
    fn configs_build_and_missing_files_are_clear() {
        let dir = tempfile::tempdir().unwrap();
        crate::certs::generate(dir.path(), "t", "gw.example.com", &["cloud1".into()]).unwrap();
        let files = TlsFiles {
            cert: dir.path().join("cloud1.pem"),
            key: dir.path().join("cloud1.key"),
            ca: dir.path().join("ca.pem"),
        };
        server_config(&files).unwrap();
        client_config(&files).unwrap();
        let missing = TlsFiles {
            ca: dir.path().join("nope.pem"),
            ..files
        };
        let e = server_config(&missing).unwrap_err().to_string();
        assert!(e.contains("nope.pem"), "{e}");
    }
}
