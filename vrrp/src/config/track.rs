//! Tracks: weights, rise/fall and the kinds (http, tcp, exec, interface) checked one by
//! one.

use std::net::SocketAddr;

use super::*;

pub(super) fn validate_track(t: &RawTrack) -> Result<TrackConfig, (&'static str, String)> {
    let weight = match i32::try_from(t.weight) {
        Ok(w) if (-253..=253).contains(&w) => w,
        _ => {
            return Err((
                "weight",
                format!(
                    "{} is out of range; weight must be -253..=253 (0 = FAULT while failing)",
                    t.weight
                ),
            ));
        }
    };
    if t.fall == 0 {
        return Err((
            "fall",
            "0 is not allowed; fall is the number of failed checks before the track is down (1 or more)".into(),
        ));
    }
    if t.rise == 0 {
        return Err((
            "rise",
            "0 is not allowed; rise is the number of passed checks before the track is up (1 or more)".into(),
        ));
    }
    if t.interval < Duration::from_millis(10) {
        return Err(("interval", "must be at least 10ms".into()));
    }
    let only = |allowed: &[&str]| -> Result<(), (&'static str, String)> {
        let present = [
            ("url", t.url.is_some()),
            ("expect_status", t.expect_status.is_some()),
            ("address", t.address.is_some()),
            ("command", t.command.is_some()),
            ("interface", t.interface.is_some()),
        ];
        for (name, there) in present {
            if there && !allowed.contains(&name) {
                return Err((
                    "kind",
                    format!(
                        "\"{}\" tracks do not take `{name}`; they take {}",
                        t.kind,
                        allowed.join(", ")
                    ),
                ));
            }
        }
        Ok(())
    };
    let kind = match t.kind.as_str() {
        "http" => {
            only(&["url", "expect_status"])?;
            let url = t.url.as_deref().ok_or((
                "url",
                "http tracks need url = \"http://IP:PORT/path\"".to_string(),
            ))?;
            let (addr, path, host) = parse_http_url(url).map_err(|m| ("url", m))?;
            TrackKind::Http {
                addr,
                path,
                host,
                expect_status: t.expect_status.unwrap_or(200),
            }
        }
        "tcp" => {
            only(&["address"])?;
            let a = t.address.as_deref().ok_or((
                "address",
                "tcp tracks need address = \"IP:PORT\"".to_string(),
            ))?;
            let addr = a
                .parse()
                .map_err(|_| ("address", format!("\"{a}\" is not IP:PORT")))?;
            TrackKind::Tcp { addr }
        }
        "exec" => {
            only(&["command"])?;
            let argv = t.command.clone().unwrap_or_default();
            if argv.is_empty() || argv[0].is_empty() {
                return Err((
                    "command",
                    "exec tracks need command = [\"/path/prog\", \"arg\"...]".into(),
                ));
            }
            TrackKind::Exec { argv }
        }
        "interface" => {
            only(&["interface"])?;
            let name = t.interface.clone().unwrap_or_default();
            if name.is_empty() || name.len() > 15 {
                return Err((
                    "interface",
                    "interface tracks need interface = \"NAME\" (1..=15 characters)".into(),
                ));
            }
            TrackKind::Interface { name }
        }
        other => {
            return Err((
                "kind",
                format!("\"{other}\" is unknown; kind must be http, tcp, exec or interface"),
            ));
        }
    };
    Ok(TrackConfig {
        kind,
        interval: t.interval,
        timeout: t.timeout.unwrap_or(t.interval),
        fall: t.fall,
        rise: t.rise,
        weight,
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
