//! A test certificate authority (rcgen) for `tether gateway certs`, the demo and the tests,
//! so no openssl ceremony is needed to try mutual TLS.
//!
//! Every leaf certificate is usable both as a TLS server and a TLS client certificate and
//! carries the DNS names `<name>`, `<name>.<domain>` and `<domain>` (the VIP name), so a cloud
//! node verifies under the VIP name and its own SNI name, and a gateway's identity is `<name>`.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};
use thiserror::Error;

/// Certificate generation errors.
#[derive(Debug, Error)]
pub enum CertError {
    /// rcgen refused the parameters.
    #[error("certificate generation: {0}")]
    Rcgen(#[from] rcgen::Error),
    /// Writing a file failed.
    #[error("cannot write {path}: {source}")]
    Write {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A name that cannot be a DNS name.
    #[error("{0:?} is not usable as a certificate name")]
    BadName(String),
}

/// A PEM certificate and its PEM private key.
#[derive(Debug, Clone)]
pub struct Pem {
    /// The certificate.
    pub cert: String,
    /// The private key (PKCS#8).
    pub key: String,
}

/// A certificate authority held in memory.
pub struct TestCa {
    issuer: Issuer<'static, KeyPair>,
    cert_pem: String,
    key_pem: String,
}

impl std::fmt::Debug for TestCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestCa").finish_non_exhaustive()
    }
}

/// Validity of an issued certificate.
#[derive(Debug, Clone, Copy)]
pub enum Validity {
    /// From yesterday for ten years.
    Current,
    /// Expired: 2020-01-01 to 2021-01-01.
    Expired,
}

impl TestCa {
    /// A fresh self-signed CA called `common_name`.
    pub fn new(common_name: &str) -> Result<TestCa, CertError> {
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, common_name);
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let key = KeyPair::generate()?;
        let cert = params.self_signed(&key)?;
        let key_pem = key.serialize_pem();
        Ok(TestCa {
            cert_pem: cert.pem(),
            key_pem,
            issuer: Issuer::new(params, key),
        })
    }

    /// The CA certificate and key.
    pub fn pem(&self) -> Pem {
        Pem {
            cert: self.cert_pem.clone(),
            key: self.key_pem.clone(),
        }
    }

    /// Issues a certificate for `name` with DNS names `name`, `name.domain` and `domain`.
    pub fn issue(&self, name: &str, domain: &str, validity: Validity) -> Result<Pem, CertError> {
        let sans = vec![
            name.to_string(),
            format!("{name}.{domain}"),
            domain.to_string(),
        ];
        for s in &sans {
            if rustls_pki_types::DnsName::try_from(s.as_str()).is_err() {
                return Err(CertError::BadName(s.clone()));
            }
        }
        let mut params = CertificateParams::new(sans)?;
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, name);
        params.distinguished_name = dn;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        match validity {
            Validity::Current => {
                let now = std::time::SystemTime::now();
                params.not_before = (now - std::time::Duration::from_secs(86_400)).into();
                params.not_after = (now + std::time::Duration::from_secs(10 * 365 * 86_400)).into();
            }
            Validity::Expired => {
                params.not_before = rcgen::date_time_ymd(2020, 1, 1);
                params.not_after = rcgen::date_time_ymd(2021, 1, 1);
            }
        }
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(Pem {
            cert: cert.pem(),
            key: key.serialize_pem(),
        })
    }
}

/// Writes a file; private keys are created 0600 (readable by their owner only), and an
/// existing key file is narrowed to 0600 too before the new key goes in.
fn write(path: PathBuf, text: &str) -> Result<(), CertError> {
    use std::io::Write;
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let private = path.extension().is_some_and(|e| e == "key");
    let mode = if private { 0o600 } else { 0o644 };
    let result = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&path)
        .and_then(|mut f| {
            if private {
                f.set_permissions(std::fs::Permissions::from_mode(mode))?;
            }
            f.write_all(text.as_bytes())
        });
    result.map_err(|source| CertError::Write { path, source })
}

/// Writes `ca.pem`, `ca.key` and `<name>.pem` / `<name>.key` for every name into `out`.
/// Returns the files written.
pub fn generate(
    out: &Path,
    ca_name: &str,
    domain: &str,
    names: &[String],
) -> Result<Vec<PathBuf>, CertError> {
    std::fs::create_dir_all(out).map_err(|source| CertError::Write {
        path: out.to_path_buf(),
        source,
    })?;
    let ca = TestCa::new(ca_name)?;
    let mut written = Vec::new();
    let ca_pem = ca.pem();
    for (file, text) in [("ca.pem", &ca_pem.cert), ("ca.key", &ca_pem.key)] {
        write(out.join(file), text)?;
        written.push(out.join(file));
    }
    for name in names {
        let pem = ca.issue(name, domain, Validity::Current)?;
        for (file, text) in [
            (format!("{name}.pem"), &pem.cert),
            (format!("{name}.key"), &pem.key),
        ] {
            write(out.join(&file), text)?;
            written.push(out.join(file));
        }
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generates_files() {
        let dir = tempfile::tempdir().unwrap();
        let files = generate(
            dir.path(),
            "Test CA",
            "gw.example.com",
            &["cloud1".into(), "onprem1".into()],
        )
        .unwrap();
        assert_eq!(files.len(), 6);
        let pem = std::fs::read_to_string(dir.path().join("cloud1.pem")).unwrap();
        assert!(pem.starts_with("-----BEGIN CERTIFICATE-----"));
        let key = std::fs::read_to_string(dir.path().join("onprem1.key")).unwrap();
        assert!(key.contains("PRIVATE KEY"));
    }

    /// Private keys (the CA's included) are for their owner only; certificates are public.
    #[test]
    fn keys_are_written_owner_only() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        // A key left world-readable by an earlier run is narrowed as well.
        let stale = dir.path().join("node1.key");
        std::fs::write(&stale, "old").unwrap();
        std::fs::set_permissions(&stale, std::fs::Permissions::from_mode(0o644)).unwrap();
        let files = generate(dir.path(), "Test CA", "gw.example.com", &["node1".into()]).unwrap();
        for f in files {
            let mode = std::fs::metadata(&f).unwrap().permissions().mode() & 0o777;
            if f.extension().is_some_and(|e| e == "key") {
                assert_eq!(mode, 0o600, "{}", f.display());
            } else {
                assert_eq!(mode & 0o077, 0o044, "{}", f.display());
            }
        }
    }

    #[test]
    fn rejects_bad_names() {
        let ca = TestCa::new("x").unwrap();
        assert!(matches!(
            ca.issue("bad name", "gw.example.com", Validity::Current),
            Err(CertError::BadName(_))
        ));
    }
}
