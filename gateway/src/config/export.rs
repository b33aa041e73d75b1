//! `[export.health]`: tether-health's shared health-check table
//! ([`tether_health::config::check`]) with the keys that say what an export's check talks
//! to, named as in `tether lb`'s `[backend.health]`: `path` and `host` for `http`, `host`
//! (the server name) and `ca` for `tls`.

use std::path::Path;
use std::time::Duration;

use serde::de::MapAccess;
use tether_health::check::tls;
use tether_health::config::Seg;
use tether_health::config::check::{self, Defaults, Kind, OwnKeys, RawCheck};

use super::{ExportCheck, ExportHealth, Validator};

/// A TCP connect (or an HTTP GET, or a TLS handshake) to the export's server every 2 s,
/// down after two failures, up again on the first pass.
const EXPORT_CHECK: Defaults = Defaults {
    kinds: &[Kind::Tcp, Kind::Http, Kind::Tls],
    interval: Duration::from_secs(2),
    fast_interval: |interval| interval,
    down_interval: |interval| interval,
    timeout: |_| Duration::from_secs(1),
    rise: 1,
    fall: 2,
};

/// The keys only `[export.health]` has.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct ExportCheckKeys {
    /// `http`: the request path (default `/`).
    path: Option<String>,
    /// `http`: the `Host` header; `tls`: the server name to send and verify.
    host: Option<String>,
    /// `tls`: PEM file of CA certificates (default: the Mozilla roots).
    ca: Option<String>,
}

impl OwnKeys for ExportCheckKeys {
    const KEYS: &'static [&'static str] = &["path", "host", "ca"];

    fn read<'de, A: MapAccess<'de>>(
        &mut self,
        key: &'static str,
        map: &mut A,
    ) -> Result<(), A::Error> {
        match key {
            "path" => self.path = Some(map.next_value()?),
            "host" => self.host = Some(map.next_value()?),
            _ => self.ca = Some(map.next_value()?),
        }
        Ok(())
    }

    fn kind_bound(&self) -> Vec<(&'static str, &'static [Kind])> {
        let mut bound: Vec<(&'static str, &'static [Kind])> = Vec::new();
        if self.path.is_some() {
            bound.push(("path", &[Kind::Http]));
        }
        if self.host.is_some() {
            bound.push(("host", &[Kind::Http, Kind::Tls]));
        }
        if self.ca.is_some() {
            bound.push(("ca", &[Kind::Tls]));
        }
        bound
    }
}

/// Whether `text` can go into a request line or a header as it is: no spaces, no control
/// characters (a CR LF would end the line and start another).
fn fits_in_a_header(text: &str) -> bool {
    !text.is_empty() && !text.chars().any(|c| c.is_whitespace() || c.is_control())
}

/// The host of `connect` (`host:port`, `ip:port` or `[ipv6]:port`), the TLS check's
/// server name when `host` is not written.
fn host_of(connect: &str) -> &str {
    connect
        .rsplit_once(':')
        .map_or(connect, |(h, _)| h)
        .trim_start_matches('[')
        .trim_end_matches(']')
}

impl Validator<'_> {
    /// Validates the `health` table at `table` of the export that connects `connect`; a
    /// relative `ca` is resolved against `base` and, when the files are read, loaded as
    /// the check will load it.
    pub(super) fn export_health(
        &mut self,
        raw: &RawCheck<ExportCheckKeys>,
        table: &[Seg],
        connect: &str,
        base: &Path,
    ) -> Option<ExportHealth> {
        let at = |key: &str| [table, &[Seg::from(key)]].concat();
        let own = &raw.own;
        let mut ok = true;
        if let Some(p) = &own.path
            && !(p.starts_with('/') && fits_in_a_header(p))
        {
            self.err(
                &at("path"),
                format!("{p:?} is not a request path; it must start with / and hold no spaces or control characters"),
            );
            ok = false;
        }
        let c = match check::validate(raw, &EXPORT_CHECK) {
            Ok(c) => c,
            Err(errs) => {
                let located = check::located(self.source, table, errs);
                self.errors.extend(located);
                return None;
            }
        };
        let check = match c.kind {
            Kind::Http => {
                if let Some(h) = &own.host
                    && !fits_in_a_header(h)
                {
                    self.err(
                        &at("host"),
                        format!("{h:?} cannot be a Host header; it must hold no spaces or control characters"),
                    );
                    ok = false;
                }
                ExportCheck::Http {
                    path: own.path.clone().unwrap_or_else(|| "/".into()),
                    host: own.host.clone(),
                    expect_status: c.expect_status,
                }
            }
            Kind::Tls => {
                let server_name = own
                    .host
                    .clone()
                    .unwrap_or_else(|| host_of(connect).to_string());
                let ca = own.ca.as_ref().map(|p| base.join(p));
                // The CA is a file: read it only where the TLS files are read too.
                let read = ca.as_deref().filter(|_| self.read_files);
                if let Some((key, why)) = tls::problem("host", Some(&server_name), read) {
                    let why = if own.host.is_none() {
                        format!(
                            "{why} (taken from connect; write host = \"NAME\" to verify another name)"
                        )
                    } else {
                        why
                    };
                    self.err(&at(key), why);
                    ok = false;
                }
                ExportCheck::Tls { server_name, ca }
            }
            // EXPORT_CHECK.kinds admits no other kind.
            _ => ExportCheck::Tcp,
        };
        ok.then_some(ExportHealth {
            check,
            interval: c.interval,
            fast_interval: c.fast_interval,
            down_interval: c.down_interval,
            timeout: c.timeout,
            rise: c.rise,
            fall: c.fall,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};

    use tether_health::config::Source;

    use super::super::{ExportCheck, GatewayConfig, load, parse};

    /// An on-prem configuration whose one export connects `connect` and has `health`.
    fn onprem(connect: &str, health: &str) -> String {
        format!(
            "[node]\nrole = \"onprem\"\nid = \"onprem1\"\ncloud = \"127.0.0.1:8443\"\n\
             server_name = \"gw.example.com\"\nadmin_listen = \"127.0.0.1:9101\"\n\
             [tls]\ncert = \"certs/onprem1.pem\"\nkey = \"certs/onprem1.key\"\nca = \"certs/ca.pem\"\n\
             [[export]]\nservice = \"svc-a\"\nconnect = \"{connect}\"\nhealth = {{ {health} }}\n"
        )
    }

    /// The export's check as validated from text (no file read).
    fn checked(connect: &str, health: &str) -> Result<ExportCheck, String> {
        match parse(
            &Source::from_text("gw.toml", onprem(connect, health)),
            Path::new("/etc/tether"),
        ) {
            Ok(GatewayConfig::Onprem(o)) => {
                Ok(o.export[0].health.clone().expect("a health table").check)
            }
            Ok(_) => Err("not onprem".into()),
            Err(e) => Err(e.to_string()),
        }
    }

    #[test]
    fn http_and_tls_checks_take_their_keys() {
        let http = |path: &str, host: Option<&str>, status| ExportCheck::Http {
            path: path.into(),
            host: host.map(String::from),
            expect_status: status,
        };
        let tls = |name: &str, ca: Option<&str>| ExportCheck::Tls {
            server_name: name.into(),
            ca: ca.map(PathBuf::from),
        };
        let table: &[(&str, &str, ExportCheck)] = &[
            ("server-a:5000", "kind = \"tcp\"", ExportCheck::Tcp),
            ("server-a:5000", "interval = \"1s\"", ExportCheck::Tcp),
            ("server-a:5000", "kind = \"http\"", http("/", None, 200)),
            (
                "server-a:5000",
                "kind = \"http\", path = \"/healthz?full=1\", host = \"a.example.com\", expect_status = 204",
                http("/healthz?full=1", Some("a.example.com"), 204),
            ),
            ("server-a:5000", "kind = \"tls\"", tls("server-a", None)),
            ("10.0.0.5:5000", "kind = \"tls\"", tls("10.0.0.5", None)),
            (
                "[2001:db8::5]:5000",
                "kind = \"tls\"",
                tls("2001:db8::5", None),
            ),
            (
                "10.0.0.5:5000",
                "kind = \"tls\", host = \"db.example.com\", ca = \"certs/db-ca.pem\"",
                tls("db.example.com", Some("/etc/tether/certs/db-ca.pem")),
            ),
            (
                "10.0.0.5:5000",
                "kind = \"tls\", ca = \"/srv/ca.pem\"",
                tls("10.0.0.5", Some("/srv/ca.pem")),
            ),
        ];
        for (connect, health, want) in table {
            assert_eq!(
                checked(connect, health).as_ref(),
                Ok(want),
                "{connect} {health}"
            );
        }
    }

    #[test]
    fn bad_values_are_refused_at_their_key() {
        // (connect, health, the key the error is at, what it says)
        let table: &[(&str, &str, &str, &str)] = &[
            (
                "server-a:5000",
                "kind = \"exec\"",
                "kind",
                "\"exec\" is not supported here; kind must be tcp, http or tls",
            ),
            (
                "server-a:5000",
                "kind = \"dns\"",
                "kind",
                "\"dns\" is unknown; kind must be tcp, http or tls",
            ),
            (
                "server-a:5000",
                "kind = \"tcp\", path = \"/\"",
                "path",
                "\"tcp\" checks do not take `path`; it applies only to kind = \"http\"",
            ),
            (
                "server-a:5000",
                "kind = \"tls\", path = \"/\"",
                "path",
                "\"tls\" checks do not take `path`; it applies only to kind = \"http\"",
            ),
            (
                "server-a:5000",
                "host = \"a.example.com\"",
                "host",
                "\"tcp\" checks do not take `host`; it applies only to kind = \"http\" or \"tls\"",
            ),
            (
                "server-a:5000",
                "kind = \"http\", ca = \"ca.pem\"",
                "ca",
                "\"http\" checks do not take `ca`; it applies only to kind = \"tls\"",
            ),
            (
                "server-a:5000",
                "kind = \"tls\", expect_status = 200",
                "expect_status",
                "\"tls\" checks do not take `expect_status`; it applies only to kind = \"http\"",
            ),
            (
                "server-a:5000",
                "kind = \"http\", path = \"healthz\"",
                "path",
                "\"healthz\" is not a request path; it must start with / and hold no spaces or control characters",
            ),
            (
                "server-a:5000",
                "kind = \"http\", path = \"/a b\"",
                "path",
                "\"/a b\" is not a request path",
            ),
            (
                "server-a:5000",
                "kind = \"http\", host = \"a\\r\\nX-Evil: 1\"",
                "host",
                "\"a\\r\\nX-Evil: 1\" cannot be a Host header",
            ),
            (
                "server-a:5000",
                "kind = \"http\", expect_status = 99",
                "expect_status",
                "expect_status is 99; expect_status must be 100..=599",
            ),
            (
                "server-a:5000",
                "kind = \"tls\", host = \"not a name\"",
                "host",
                "host \"not a name\" is not a TLS server name",
            ),
            (
                "bad_name!:5000",
                "kind = \"tls\"",
                "host",
                "(taken from connect; write host = \"NAME\" to verify another name)",
            ),
        ];
        for (connect, health, key, want) in table {
            let e = checked(connect, health).expect_err(health);
            assert!(
                e.starts_with(&format!("gw.toml:14: export[0].health.{key}: ")) && e.contains(want),
                "{health}: {e}"
            );
            assert_eq!(e.lines().count(), 1, "one error: {e}");
        }
        let e = checked("server-a:5000", "kind = \"tls\", sni = \"a\"").expect_err("sni");
        assert!(
            e.starts_with("gw.toml:14:")
                && e.contains("unknown field `sni`, expected one of")
                && e.contains("`ca`"),
            "{e}"
        );
    }

    /// `--check` and start read the CA file as the check will: missing or holding no
    /// certificate is an error naming the key and the path; the gateway's own CA passes.
    #[test]
    fn the_ca_file_is_read_as_the_check_will() {
        let d = tempfile::tempdir().unwrap();
        crate::certs::generate(
            &d.path().join("certs"),
            "t",
            "gw.example.com",
            &["onprem1".into()],
        )
        .unwrap();
        std::fs::write(d.path().join("certs/junk.pem"), "no certificate\n").unwrap();
        let load_with = |ca: &str| {
            let file = d.path().join("gw.toml");
            let text = onprem(
                "127.0.0.1:5000",
                &format!("kind = \"tls\", host = \"db.example.com\", ca = \"{ca}\""),
            );
            std::fs::write(&file, text).unwrap();
            load(&file).map(|_| ()).map_err(|e| e.to_string())
        };
        load_with("certs/ca.pem").unwrap();
        let e = load_with("certs/junk.pem").unwrap_err();
        assert!(
            e.contains("gw.toml:14: export[0].health.ca: ca \"")
                && e.contains("certs/junk.pem\" cannot be used: no certificate in the file"),
            "{e}"
        );
        let e = load_with("certs/none.pem").unwrap_err();
        assert!(
            e.contains("export[0].health.ca: ") && e.contains("cannot read"),
            "{e}"
        );
    }

    /// `connect` by host name, where it is resolved and how often: each bad value at its key.
    #[test]
    fn resolver_and_resolve_interval() {
        let base = onprem("server-a:5000", "kind = \"tcp\"");
        let parse_text = |t: &str| {
            parse(&Source::from_text("gw.toml", t), Path::new("/etc/tether"))
                .map_err(|e| e.to_string())
        };
        let Ok(GatewayConfig::Onprem(o)) = parse_text(&format!(
            "{base}resolve_interval = \"250ms\"\n[resolver]\nnameservers = [\"127.0.0.1:5353\", \"[::1]:53\"]\n"
        )) else {
            panic!("valid")
        };
        assert_eq!(
            o.export[0].resolve_interval,
            std::time::Duration::from_millis(250)
        );
        assert_eq!(o.nameservers.len(), 2);
        let Ok(GatewayConfig::Onprem(o)) = parse_text(&base) else {
            panic!("valid")
        };
        assert_eq!(
            o.export[0].resolve_interval,
            std::time::Duration::from_secs(10)
        );
        assert!(o.nameservers.is_empty());
        let e = parse_text(&format!("{base}resolve_interval = \"5ms\"\n")).unwrap_err();
        assert_eq!(
            e,
            "gw.toml:15: export[0].resolve_interval: 5ms is too short; must be at least 10ms"
        );
        let e = parse_text(&format!(
            "{base}[resolver]\nnameservers = [\"dns.example.com:53\"]\n"
        ))
        .unwrap_err();
        assert!(
            e.starts_with(
                "gw.toml:16: resolver.nameservers[0]: \"dns.example.com:53\" is not an IP:port"
            ),
            "{e}"
        );
        let e = parse_text(&onprem("2001:db8::5:5000", "kind = \"tcp\"")).unwrap_err();
        assert!(
            e.starts_with("gw.toml:13: export[0].connect: ") && e.contains("in brackets"),
            "{e}"
        );
        let cloud = "[node]\nrole = \"cloud\"\nid = \"cloud1\"\nsession_listen = \"127.0.0.1:8443\"\n\
            admin_listen = \"127.0.0.1:9100\"\n[tls]\ncert = \"c.pem\"\nkey = \"c.key\"\nclient_ca = \"ca.pem\"\n\
            [resolver]\nnameservers = []\n";
        let e = parse_text(cloud).unwrap_err();
        assert!(
            e.contains("resolver: not allowed for role = \"cloud\""),
            "{e}"
        );
    }
}
