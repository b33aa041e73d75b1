//! Tracks: the shared health-check keys (tether-health's schema), then the weight and
//! what each kind (http, tcp, exec, interface) checks.

use std::net::SocketAddr;

use tether_health::config::check::{self, Defaults, Kind};
use tether_health::config::{ConfigError, Seg, Source};

use super::*;

/// keepalived's `vrrp_script` timing: one check a second, whatever the state, and one
/// result decides (rise 1, fall 1).
const DEFAULTS: Defaults = Defaults {
    kinds: &[Kind::Http, Kind::Tcp, Kind::Exec, Kind::Interface],
    interval: Duration::from_secs(1),
    fast_interval: |interval| interval,
    down_interval: |interval| interval,
    timeout: |interval| interval,
    rise: 1,
    fall: 1,
};

/// Validates the track at `at` (`instance[i].track[k]`), adding its errors to `errs`.
pub(super) fn validate_track(
    t: &RawTrack,
    src: &Source,
    at: &[Seg],
    errs: &mut Vec<ConfigError>,
) -> Option<TrackConfig> {
    let key = |k: &str| [at, &[Seg::from(k)]].concat();
    let weight = t.own.weight.unwrap_or(0);
    let weight = match i32::try_from(weight) {
        Ok(w) if (-253..=253).contains(&w) => Some(w),
        _ => {
            errs.push(src.error(
                &key("weight"),
                format!(
                    "{weight} is out of range; weight must be -253..=253 (0 = FAULT while failing)"
                ),
            ));
            None
        }
    };
    let c = match check::validate(t, &DEFAULTS) {
        Ok(c) => c,
        Err(e) => {
            errs.extend(check::located(src, at, e));
            return None;
        }
    };
    let kind = match target(c.kind, c.expect_status, &t.own) {
        Ok(kind) => kind,
        Err((k, message)) => {
            errs.push(src.error(&key(k), message));
            return None;
        }
    };
    Some(TrackConfig {
        kind,
        interval: c.interval,
        fast_interval: c.fast_interval,
        down_interval: c.down_interval,
        timeout: c.timeout,
        fall: c.fall,
        rise: c.rise,
        weight: weight?,
    })
}

/// What a track of `kind` checks, from the key that kind takes (the shared validator has
/// refused the keys of other kinds).
fn target(
    kind: Kind,
    expect_status: u16,
    own: &TrackKeys,
) -> Result<TrackKind, (&'static str, String)> {
    Ok(match kind {
        Kind::Http => {
            let url = own.url.as_deref().ok_or((
                "url",
                "http tracks need url = \"http://IP:PORT/path\"".to_string(),
            ))?;
            let (addr, path, host) = parse_http_url(url).map_err(|m| ("url", m))?;
            TrackKind::Http {
                addr,
                path,
                host,
                expect_status,
            }
        }
        Kind::Exec => {
            let argv = own.command.clone().unwrap_or_default();
            if argv.is_empty() || argv[0].is_empty() {
                return Err((
                    "command",
                    "exec tracks need command = [\"/path/prog\", \"arg\"...]".into(),
                ));
            }
            TrackKind::Exec { argv }
        }
        Kind::Interface => {
            let name = own.interface.clone().unwrap_or_default();
            if name.is_empty() || name.len() > 15 {
                return Err((
                    "interface",
                    "interface tracks need interface = \"NAME\" (1..=15 characters)".into(),
                ));
            }
            TrackKind::Interface { name }
        }
        // tcp; DEFAULTS.kinds admits no other kind.
        _ => {
            let a = own.address.as_deref().ok_or((
                "address",
                "tcp tracks need address = \"IP:PORT\"".to_string(),
            ))?;
            let addr = a
                .parse()
                .map_err(|_| ("address", format!("\"{a}\" is not IP:PORT")))?;
            TrackKind::Tcp { addr }
        }
    })
}

/// Splits `http://IP:PORT/path` (no DNS: a tracker must not hang on a resolver).
fn parse_http_url(url: &str) -> Result<(SocketAddr, String, String), String> {
    let rest = url.strip_prefix("http://").ok_or_else(|| {
        format!("\"{url}\" must start with http:// (built-in checks speak plain HTTP)")
    })?;
    let (hostport, path) = match rest.find('/') {
        Some(i) => (&rest[..i], rest[i..].to_string()),
        None => (rest, "/".to_string()),
    };
    let addr: SocketAddr = hostport
        .parse()
        .or_else(|_| format!("{hostport}:80").parse())
        .map_err(|_| format!("\"{url}\": host must be an IP address with an optional port, e.g. http://127.0.0.1:9090/readyz"))?;
    Ok((addr, path, hostport.to_string()))
}
