//! Checks that need more than one key at a time or the files a configuration names: what
//! used to pass `--check` and then fail at start.

use std::net::SocketAddr;

use tether_health::config::{ConfigError, Seg, Source};

use super::TlsFiles;
use crate::tls::{self, TlsKey};

/// One listening socket of the configuration: where it is written and its address.
pub(super) struct Listener {
    pub(super) at: Vec<Seg>,
    pub(super) name: String,
    pub(super) addr: SocketAddr,
}

/// Two listeners on one port (the same address, or one of them on every address) cannot
/// both be bound: the second is an error naming the first.
pub(super) fn listener_conflicts(source: &Source, listeners: &[Listener]) -> Vec<ConfigError> {
    let mut errors = Vec::new();
    for (j, b) in listeners.iter().enumerate() {
        let clash = listeners[..j].iter().find(|a| {
            a.addr.port() == b.addr.port()
                && a.addr.port() != 0
                && (a.addr.ip() == b.addr.ip()
                    || a.addr.ip().is_unspecified()
                    || b.addr.ip().is_unspecified())
        });
        if let Some(a) = clash {
            errors.push(source.error(
                &b.at,
                format!(
                    "{} is also the address of {} ({}); each listener needs its own port",
                    b.addr, a.name, a.addr
                ),
            ));
        }
    }
    errors
}

/// Reads the TLS files as the gateway will at start: certificate and key present, PEM,
/// and belonging together; the CA a readable PEM file; an on-prem id among its
/// certificate's names (the cloud refuses the HELLO otherwise).
pub(super) fn tls_files(
    source: &Source,
    files: &TlsFiles,
    onprem_id: Option<&str>,
) -> Vec<ConfigError> {
    let ca_key = if onprem_id.is_some() {
        TlsKey::Ca
    } else {
        TlsKey::ClientCa
    };
    let at = |key: TlsKey| vec![Seg::from("tls"), Seg::from(key.name())];
    let mut errors = Vec::new();
    match tls::identity(files) {
        Ok((certs, _)) => {
            if let Some(id) = onprem_id
                && !certs.first().is_some_and(|c| tls::cert_has_identity(c, id))
            {
                errors.push(source.error(
                    &[Seg::from("node"), Seg::from("id")],
                    format!(
                        "{id:?} is not a name of the certificate in tls.cert ({}); the cloud \
                         would refuse every session (issue the certificate for this id)",
                        files.cert.display()
                    ),
                ));
            }
        }
        Err(e) => {
            let (key, message) = e.located();
            errors.push(source.error(&at(key), message));
        }
    }
    if let Err(e) = tls::roots(ca_key, &files.ca) {
        let (key, message) = e.located();
        errors.push(source.error(&at(key), message));
    }
    errors
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::super::{load, parse};
    use tether_health::config::Source;

    fn cloud(extra_tls: &str) -> String {
        format!(
            "[node]\nrole = \"cloud\"\nid = \"cloud1\"\nsession_listen = \"127.0.0.1:8443\"\nadmin_listen = \"127.0.0.1:9100\"\n\
             [tls]\n{extra_tls}\n"
        )
    }

    const CLOUD_TLS: &str =
        "cert = \"certs/cloud1.pem\"\nkey = \"certs/cloud1.key\"\nclient_ca = \"certs/ca.pem\"";
    const ONPREM: &str = "[node]\nrole = \"onprem\"\nid = \"onprem1\"\ncloud = \"127.0.0.1:8443\"\n\
        server_name = \"gw.example.com\"\nadmin_listen = \"127.0.0.1:9101\"\n\
        [tls]\ncert = \"certs/onprem1.pem\"\nkey = \"certs/onprem1.key\"\nca = \"certs/ca.pem\"\n";

    /// Writes `text` as gw.toml next to a certs/ directory and runs `--check`'s load.
    fn check(dir: &Path, text: &str) -> Result<(), String> {
        let file = dir.join("gw.toml");
        std::fs::write(&file, text).unwrap();
        load(&file).map(|_| ()).map_err(|e| e.to_string())
    }

    fn dir() -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        crate::certs::generate(
            &d.path().join("certs"),
            "t",
            "gw.example.com",
            &["cloud1".into(), "onprem1".into(), "other".into()],
        )
        .unwrap();
        d
    }

    #[test]
    fn good_files_pass() {
        let d = dir();
        check(d.path(), &cloud(CLOUD_TLS)).unwrap();
        check(d.path(), ONPREM).unwrap();
    }

    #[test]
    fn missing_or_non_pem_certificate_names_the_key() {
        let d = dir();
        let e = check(
            d.path(),
            &cloud(&CLOUD_TLS.replace("cloud1.pem", "nope.pem")),
        )
        .unwrap_err();
        assert!(e.contains("gw.toml:7: tls.cert: "), "{e}");
        assert!(e.contains("nope.pem"), "{e}");
        std::fs::write(d.path().join("certs/junk.pem"), "not a certificate\n").unwrap();
        let e = check(
            d.path(),
            &cloud(&CLOUD_TLS.replace("cloud1.pem", "junk.pem")),
        )
        .unwrap_err();
        assert!(
            e.contains("gw.toml:7: tls.cert: ") && e.contains("no PEM certificate"),
            "{e}"
        );
    }

    #[test]
    fn a_key_of_another_certificate_is_refused_once() {
        let d = dir();
        let e = check(
            d.path(),
            &cloud(&CLOUD_TLS.replace("cloud1.key", "other.key")),
        )
        .unwrap_err();
        assert_eq!(
            e.matches("is not the private key").count(),
            1,
            "said once: {e}"
        );
        assert!(
            e.contains("gw.toml:8: tls.key: is not the private key of the certificate"),
            "{e}"
        );
    }

    #[test]
    fn a_directory_as_client_ca_is_refused() {
        let d = dir();
        let e = check(
            d.path(),
            &cloud(&CLOUD_TLS.replace("certs/ca.pem", "certs")),
        )
        .unwrap_err();
        assert!(
            e.contains("gw.toml:9: tls.client_ca: ") && e.contains("is a directory"),
            "{e}"
        );
    }

    #[test]
    fn an_onprem_id_missing_from_its_certificate_is_refused() {
        let d = dir();
        let e = check(
            d.path(),
            &ONPREM.replace("id = \"onprem1\"", "id = \"onprem9\""),
        )
        .unwrap_err();
        assert!(
            e.contains("gw.toml:3: node.id: \"onprem9\" is not a name of the certificate"),
            "{e}"
        );
    }

    /// No file access needed: two listeners on one port are refused by `parse`.
    #[test]
    fn listeners_sharing_a_port_are_refused() {
        let parse_text = |t: &str| {
            parse(&Source::from_text("gw.toml", t), Path::new("/etc/tether"))
                .map(|_| ())
                .map_err(|e| e.to_string())
        };
        let same = cloud(CLOUD_TLS).replace("127.0.0.1:9100", "127.0.0.1:8443");
        let e = parse_text(&same).unwrap_err();
        assert!(
            e.contains("gw.toml:5: node.admin_listen: 127.0.0.1:8443 is also the address of node.session_listen"),
            "{e}"
        );
        let two = format!(
            "{}[[reverse]]\nservice = \"a\"\nlisten = \"0.0.0.0:5551\"\nallowed_exporters = [\"onprem1\"]\n\
             [[reverse]]\nservice = \"b\"\nlisten = \"127.0.0.1:5551\"\nallowed_exporters = [\"onprem1\"]\n",
            cloud(CLOUD_TLS)
        );
        let e = parse_text(&two).unwrap_err();
        assert!(
            e.contains(
                "reverse[1].listen: 127.0.0.1:5551 is also the address of reverse[0].listen"
            ),
            "{e}"
        );
        let consume =
            format!("{ONPREM}[[consume]]\nservice = \"b\"\nlisten = \"127.0.0.1:9101\"\n");
        let e = parse_text(&consume).unwrap_err();
        assert!(
            e.contains(
                "consume[0].listen: 127.0.0.1:9101 is also the address of node.admin_listen"
            ),
            "{e}"
        );
    }
}
