//! What a TLS check verifies against: the CA file and the server name, read and checked
//! the same way by every daemon that runs `kind = "tls"` (lb's `[backend.health]`, the
//! gateway's `[export.health]`), at validation and again when the check is built.

use std::path::Path;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};

use super::CheckKind;

/// Reads a PEM file of CA certificates: it must be readable and hold at least one
/// certificate that parses. Validation calls it too, so `--check` and a reload refuse a CA
/// a TLS check could not start with.
pub fn load_roots(path: &Path) -> Result<rustls::RootCertStore, String> {
    let mut roots = rustls::RootCertStore::empty();
    let pem = crate::config::read_file(path)?;
    for c in CertificateDer::pem_slice_iter(&pem) {
        let c = c.map_err(|e| e.to_string())?;
        roots.add(c).map_err(|e| e.to_string())?;
    }
    if roots.is_empty() {
        return Err("no certificate in the file".into());
    }
    Ok(roots)
}

/// `name` as the server name a TLS check sends (SNI) and verifies: a DNS name or an IP
/// address.
pub fn server_name(name: &str) -> Result<ServerName<'static>, String> {
    ServerName::try_from(name.to_string()).map_err(|e| e.to_string())
}

/// The TLS check of `name`, verifying against the CA certificates in `ca`, or the Mozilla
/// roots when `ca` is `None`.
pub fn check_kind(name: &str, ca: Option<&Path>) -> Result<CheckKind, TlsCheckError> {
    let server_name = server_name(name).map_err(|e| TlsCheckError::ServerName {
        name: name.to_string(),
        reason: e,
    })?;
    Ok(match ca {
        None => CheckKind::tls_with_webpki_roots(server_name),
        Some(path) => {
            let roots = load_roots(path).map_err(|e| TlsCheckError::Ca {
                path: path.display().to_string(),
                reason: e,
            })?;
            CheckKind::tls_with_roots(server_name, roots)
        }
    })
}

/// Why a TLS check cannot be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TlsCheckError {
    /// The name to verify is neither a DNS name nor an IP address.
    #[error("server name {name}: {reason}")]
    ServerName {
        /// As written.
        name: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The CA file cannot be read or holds no certificate.
    #[error("ca {path}: {reason}")]
    Ca {
        /// The file.
        path: String,
        /// What is wrong with it.
        reason: String,
    },
}

/// What would keep a TLS check from starting, found at validation: the server name to
/// verify (`key_of_name` is where it is written: lb's `host`) and the CA file. The key and
/// the message, or `None` when the check can start.
pub fn problem(
    key_of_name: &'static str,
    name: Option<&str>,
    ca: Option<&Path>,
) -> Option<(&'static str, String)> {
    if let Some(name) = name
        && let Err(e) = server_name(name)
    {
        return Some((
            key_of_name,
            format!("{key_of_name} \"{name}\" is not a TLS server name: {e}"),
        ));
    }
    let path = ca?;
    load_roots(path).err().map(|e| {
        (
            "ca",
            format!("ca \"{}\" cannot be used: {e}", path.display()),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ca_file_must_hold_a_certificate_and_a_name_must_be_one() {
        let dir = std::env::temp_dir().join(format!("tether-tls-check-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let empty = dir.join("empty.pem");
        std::fs::write(&empty, "no pem here\n").unwrap();
        let (key, why) = problem("host", None, Some(&empty)).unwrap();
        assert_eq!(key, "ca");
        assert!(why.contains("no certificate in the file"), "{why}");
        let missing = dir.join("missing.pem");
        let (_, why) = problem("host", None, Some(&missing)).unwrap();
        assert!(why.contains("cannot read"), "{why}");
        let (key, why) = problem("server_name", Some("not a name!"), None).unwrap();
        assert_eq!(key, "server_name");
        assert!(
            why.starts_with("server_name \"not a name!\" is not a TLS server name"),
            "{why}"
        );
        assert_eq!(problem("host", Some("db.example.com"), None), None);
        assert!(matches!(
            check_kind("db.example.com", Some(&empty)),
            Err(TlsCheckError::Ca { .. })
        ));
        assert!(matches!(
            check_kind("db.example.com", None),
            Ok(CheckKind::Tls { .. })
        ));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
