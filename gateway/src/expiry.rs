//! Certificate expiry as a metric: for every certificate a node loaded (its own chain and
//! the CA it verifies peers with), the seconds left until its `notAfter`, computed at
//! scrape time so that an alert such as
//! `tether_gateway_certificate_expiry_seconds < 7 * 86400` needs no ticking task.
//!
//! Short-lived certificates are routine; the metric is how an operator learns that a
//! rotation did not happen before the peers start refusing the node.

use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use prometheus::{GaugeVec, Opts};
use rustls_pki_types::CertificateDer;
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::config::TlsFiles;
use crate::tls::{TlsError, TlsKey, load_certs};

const NAME: &str = "tether_gateway_certificate_expiry_seconds";
const HELP: &str = "Seconds until the certificate's notAfter (negative once expired), per certificate of tls.cert (the node's chain) and tls.ca or tls.client_ca (the CA peers are verified with).";
const LABELS: [&str; 3] = ["key", "subject", "serial"];

/// One loaded certificate's identity and end of validity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertExpiry {
    /// The `[tls]` key of the file it came from (`cert`, `ca` or `client_ca`).
    pub key: &'static str,
    /// Its subject, as `CN=...` or the whole distinguished name.
    pub subject: String,
    /// Its serial number in hex: a CA bundle during a rotation holds two certificates with
    /// the same subject.
    pub serial: String,
    /// `notAfter`, in seconds since the Unix epoch.
    pub not_after: i64,
}

/// Reads the end of validity of one DER certificate.
pub fn read(key: TlsKey, cert: &CertificateDer<'_>) -> Result<CertExpiry, String> {
    let (_, x) = X509Certificate::from_der(cert.as_ref()).map_err(|e| e.to_string())?;
    let subject = x
        .subject()
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .map(|cn| format!("CN={cn}"))
        .unwrap_or_else(|| x.subject().to_string());
    Ok(CertExpiry {
        key: key.name(),
        subject,
        serial: x.raw_serial_as_string().replace(':', ""),
        not_after: x.validity().not_after.timestamp(),
    })
}

/// Every certificate of the node's chain and of its CA file (`ca_key` says which key that
/// is for this role). A certificate that cannot be parsed is an error naming its file.
pub fn load(files: &TlsFiles, ca_key: TlsKey) -> Result<Vec<CertExpiry>, TlsError> {
    let mut out = Vec::new();
    for (key, path) in [(TlsKey::Cert, &files.cert), (ca_key, &files.ca)] {
        for cert in load_certs(key, path)? {
            out.push(read(key, &cert).map_err(|message| TlsError::File {
                key,
                path: path.display().to_string(),
                message: format!("unreadable certificate: {message}"),
            })?);
        }
    }
    Ok(out)
}

/// The collector behind `tether_gateway_certificate_expiry_seconds`;
/// [`ExpiryCollector::set`] replaces the certificates (at start, and when a reload loads
/// new files).
#[derive(Clone)]
pub struct ExpiryCollector {
    desc: Desc,
    certs: Arc<Mutex<Vec<CertExpiry>>>,
}

impl ExpiryCollector {
    /// A collector with no certificates yet.
    pub fn new() -> Result<ExpiryCollector, prometheus::Error> {
        let desc = Desc::new(
            NAME.into(),
            HELP.into(),
            LABELS.iter().map(|l| l.to_string()).collect(),
            Default::default(),
        )?;
        Ok(ExpiryCollector {
            desc,
            certs: Arc::default(),
        })
    }

    /// Replaces the certificates reported.
    pub fn set(&self, certs: Vec<CertExpiry>) {
        *self.certs.lock().unwrap_or_else(|p| p.into_inner()) = certs;
    }

    /// The seconds left for the certificate that expires first, if any is loaded.
    pub fn nearest(&self, now: SystemTime) -> Option<i64> {
        let now = unix(now);
        let certs = self.certs.lock().unwrap_or_else(|p| p.into_inner());
        certs.iter().map(|c| c.not_after - now).min()
    }
}

fn unix(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        Err(e) => -i64::try_from(e.duration().as_secs()).unwrap_or(i64::MAX),
    }
}

impl Collector for ExpiryCollector {
    fn desc(&self) -> Vec<&Desc> {
        vec![&self.desc]
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let Ok(g) = GaugeVec::new(Opts::new(NAME, HELP), &LABELS) else {
            return Vec::new();
        };
        let now = unix(SystemTime::now());
        let certs = self.certs.lock().unwrap_or_else(|p| p.into_inner());
        for c in certs.iter() {
            g.with_label_values(&[c.key, c.subject.as_str(), c.serial.as_str()])
                .set((c.not_after - now) as f64);
        }
        g.collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    #[test]
    fn a_node_reports_its_chain_and_its_ca_with_the_time_left() {
        let dir = tempfile::tempdir().expect("tempdir");
        crate::certs::generate(
            dir.path(),
            "Expiry CA",
            "gw.example.com",
            &["cloud1".into()],
        )
        .expect("certificates");
        let at = |f: &str| -> PathBuf { dir.path().join(f) };
        let files = TlsFiles {
            cert: at("cloud1.pem"),
            key: at("cloud1.key"),
            ca: at("ca.pem"),
        };
        let certs = load(&files, TlsKey::ClientCa).expect("load");
        let keys: Vec<&str> = certs.iter().map(|c| c.key).collect();
        assert_eq!(keys, ["cert", "client_ca"]);
        assert_eq!(certs[0].subject, "CN=cloud1");
        assert_eq!(certs[1].subject, "CN=Expiry CA");

        let m = ExpiryCollector::new().expect("collector");
        m.set(certs);
        let left = m.nearest(SystemTime::now()).expect("one expiry");
        // The node's certificate (ten years) expires before the CA; give or take the clock
        // between issuing and now.
        let ten_years = 10 * 365 * 86_400;
        assert!(
            (ten_years - 120..=ten_years + 120).contains(&left),
            "{left}"
        );

        let r = prometheus::Registry::new();
        r.register(Box::new(m.clone())).expect("register");
        let text = prometheus::TextEncoder::new()
            .encode_to_string(&r.gather())
            .expect("encode");
        assert!(
            text.lines().any(|l| l.starts_with(NAME)
                && l.contains("key=\"cert\"")
                && l.contains("subject=\"CN=cloud1\"")),
            "{text}"
        );
        assert!(text.contains("key=\"client_ca\""), "{text}");
    }

    #[test]
    fn an_expired_certificate_counts_down_below_zero() {
        let m = ExpiryCollector::new().expect("collector");
        m.set(vec![CertExpiry {
            key: "cert",
            subject: "CN=old".into(),
            serial: "01".into(),
            not_after: 1_000,
        }]);
        assert_eq!(
            m.nearest(UNIX_EPOCH + std::time::Duration::from_secs(4_000)),
            Some(-3_000)
        );
    }
}
