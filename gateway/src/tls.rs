//! rustls configurations of both roles: TLS 1.3 only, client certificates required and
//! verified by the cloud, the cloud's certificate verified by on-prem against the private CA.
//! Verification is never optional.

use std::path::Path;
use std::sync::Arc;

use rustls::server::WebPkiClientVerifier;
use rustls::sign::CertifiedKey;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use thiserror::Error;

use crate::config::TlsFiles;

/// ALPN protocol of gateway sessions; lets a balancer route by ALPN and versions the protocol.
pub const ALPN: &[u8] = b"tether-gw/1";

/// Which `[tls]` key a file belongs to, so errors name the key as well as the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsKey {
    /// `tls.cert`: this node's certificate chain.
    Cert,
    /// `tls.key`: its private key.
    Key,
    /// `tls.ca` (on-prem): the private CA that signs cloud certificates.
    Ca,
    /// `tls.client_ca` (cloud): the private CA that signs gateway certificates.
    ClientCa,
}

impl TlsKey {
    /// The key as written in the file.
    pub fn name(self) -> &'static str {
        match self {
            TlsKey::Cert => "cert",
            TlsKey::Key => "key",
            TlsKey::Ca => "ca",
            TlsKey::ClientCa => "client_ca",
        }
    }
}

/// Errors building TLS configurations.
#[derive(Debug, Error)]
pub enum TlsError {
    /// A PEM file could not be read or holds nothing usable.
    #[error("tls.{} ({path}): {message}", key.name())]
    File {
        /// Which key names the file.
        key: TlsKey,
        /// The file.
        path: String,
        /// What went wrong.
        message: String,
    },
    /// The private key is not the one of the certificate.
    #[error("tls.key ({key}) is not the private key of the certificate in tls.cert ({cert})")]
    KeyMismatch {
        /// The key file.
        key: String,
        /// The certificate file.
        cert: String,
    },
    /// rustls refused the material. Not a `source`: the message is shown once, not again
    /// by an error chain.
    #[error("tls: {0}")]
    Rustls(rustls::Error),
    /// The client verifier could not be built (e.g. empty CA).
    #[error("client verifier: {0}")]
    Verifier(String),
}

impl From<rustls::Error> for TlsError {
    fn from(e: rustls::Error) -> Self {
        TlsError::Rustls(e)
    }
}

impl TlsError {
    /// The key the error is about and what is wrong, without the key (for `--check`,
    /// which prints the key itself).
    pub fn located(&self) -> (TlsKey, String) {
        match self {
            TlsError::File { key, path, message } => (*key, format!("{path}: {message}")),
            TlsError::KeyMismatch { cert, .. } => (
                TlsKey::Key,
                format!("is not the private key of the certificate in tls.cert ({cert})"),
            ),
            TlsError::Rustls(e) => (TlsKey::Cert, e.to_string()),
            TlsError::Verifier(e) => (TlsKey::ClientCa, e.clone()),
        }
    }
}

fn file_err(key: TlsKey, path: &Path, message: impl Into<String>) -> TlsError {
    TlsError::File {
        key,
        path: path.display().to_string(),
        message: message.into(),
    }
}

/// Reads every certificate of the PEM file named by `key` (at least one).
pub fn load_certs(key: TlsKey, path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    if path.is_dir() {
        return Err(file_err(
            key,
            path,
            "is a directory; give a PEM certificate file",
        ));
    }
    let iter =
        CertificateDer::pem_file_iter(path).map_err(|e| file_err(key, path, e.to_string()))?;
    let certs: Vec<_> = iter
        .collect::<Result<_, _>>()
        .map_err(|e| file_err(key, path, e.to_string()))?;
    if certs.is_empty() {
        return Err(file_err(key, path, "no PEM certificate found"));
    }
    Ok(certs)
}

/// Reads the private key of a PEM file.
pub fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    if path.is_dir() {
        return Err(file_err(
            TlsKey::Key,
            path,
            "is a directory; give a PEM private key file",
        ));
    }
    PrivateKeyDer::from_pem_file(path).map_err(|e| file_err(TlsKey::Key, path, e.to_string()))
}

/// The node's certificate chain and private key, checked to belong together.
pub fn identity(
    files: &TlsFiles,
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), TlsError> {
    let certs = load_certs(TlsKey::Cert, &files.cert)?;
    let key = load_key(&files.key)?;
    let signing = provider()
        .key_provider
        .load_private_key(key.clone_key())
        .map_err(|e| file_err(TlsKey::Key, &files.key, e.to_string()))?;
    match CertifiedKey::new(certs.clone(), signing).keys_match() {
        Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch)) => {
            Err(TlsError::KeyMismatch {
                key: files.key.display().to_string(),
                cert: files.cert.display().to_string(),
            })
        }
        _ => Ok((certs, key)),
    }
}

/// The private CA (named by `key`) as a root store.
pub fn roots(key: TlsKey, path: &Path) -> Result<RootCertStore, TlsError> {
    let mut store = RootCertStore::empty();
    for cert in load_certs(key, path)? {
        store
            .add(cert)
            .map_err(|e| file_err(key, path, e.to_string()))?;
    }
    Ok(store)
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The cloud's server configuration: TLS 1.3, client certificate required and verified
/// against `files.ca`.
pub fn server_config(files: &TlsFiles) -> Result<Arc<ServerConfig>, TlsError> {
    let roots = Arc::new(roots(TlsKey::ClientCa, &files.ca)?);
    let (certs, key) = identity(files)?;
    let verifier = WebPkiClientVerifier::builder_with_provider(roots, provider())
        .build()
        .map_err(|e| TlsError::Verifier(e.to_string()))?;
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs, key)?;
    config.alpn_protocols = vec![ALPN.to_vec()];
    Ok(Arc::new(config))
}

/// On-prem's client configuration: TLS 1.3, cloud certificates verified against `files.ca`,
/// its own certificate presented.
pub fn client_config(files: &TlsFiles) -> Result<Arc<ClientConfig>, TlsError> {
    let (certs, key) = identity(files)?;
    let mut config = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_root_certificates(roots(TlsKey::Ca, &files.ca)?)
        .with_client_auth_cert(certs, key)?;
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

    /// What `tether gateway` prints when it cannot start: the error and its causes, as
    /// anyhow's `{:#}` joins them.
    fn chain(e: &dyn std::error::Error) -> String {
        let mut out = e.to_string();
        let mut cause = e.source();
        while let Some(c) = cause {
            out.push_str(&format!(": {c}"));
            cause = c.source();
        }
        out
    }

    /// A key of another certificate used to read "tls: inconsistent keys: KeyMismatch:
    /// KeyMismatch": no key named, the cause twice. Now it names both keys, once.
    #[test]
    fn a_mismatched_key_names_the_keys_once() {
        let dir = tempfile::tempdir().unwrap();
        crate::certs::generate(dir.path(), "t", "gw.example.com", &["a".into(), "b".into()])
            .unwrap();
        let files = TlsFiles {
            cert: dir.path().join("a.pem"),
            key: dir.path().join("b.key"),
            ca: dir.path().join("ca.pem"),
        };
        for e in [
            server_config(&files).unwrap_err(),
            client_config(&files).unwrap_err(),
        ] {
            let text = chain(&e);
            assert!(text.starts_with("tls.key ("), "{text}");
            assert!(
                text.contains("b.key") && text.contains("tls.cert"),
                "{text}"
            );
            assert_eq!(text.matches("not the private key").count(), 1, "{text}");
            assert!(!text.contains("KeyMismatch"), "{text}");
        }
        let dir_ca = TlsFiles {
            cert: dir.path().join("a.pem"),
            key: dir.path().join("a.key"),
            ca: dir.path().to_path_buf(),
        };
        let text = chain(&server_config(&dir_ca).unwrap_err());
        assert!(
            text.starts_with("tls.client_ca (") && text.contains("is a directory"),
            "{text}"
        );
    }
}
