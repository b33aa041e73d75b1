//! The `[limits]` section (both roles): what one session may make this process hold.
//!
//! A peer with a valid certificate controls how many streams it opens and how much it
//! writes on them; these keys bound what that costs us per session. One gateway id may hold
//! up to 32 sessions on a cloud node, so a peer can make a node buffer at most 32 times
//! `session_window_mib`.

use serde::Deserialize;

use super::{Validator, path};
use crate::mux::STREAM_MIN_WINDOW;

/// Per-session limits of the multiplexer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Most concurrent streams on one session (both directions). A peer that opens more
    /// loses the session; our own opens stop an eighth short of it and fail like a
    /// refused stream.
    pub max_streams: usize,
    /// Bytes one session may buffer for streams whose local side does not read: the
    /// connection-wide receive window. Every stream starts with a 256 KiB window; a
    /// stream read quickly grows into what is left beyond `max_streams` x 256 KiB.
    pub session_window: usize,
}

const MIB: usize = 1024 * 1024;

impl Default for Limits {
    fn default() -> Self {
        Limits {
            // yamux's own default.
            max_streams: 512,
            // 512 x 256 KiB = 128 MiB guaranteed to the streams' initial windows, plus
            // 32 MiB one busy stream can grow into: the 32 MiB a stream needs to keep a
            // 1 Gbit/s x 100 ms link busy (yamux returns credit in half-window steps).
            session_window: 160 * MIB,
        }
    }
}

/// The section as written.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawLimits {
    max_streams: Option<i64>,
    session_window_mib: Option<i64>,
}

/// Highest `max_streams` (4,096 x 256 KiB = 1 GiB of initial windows, yamux's default
/// session window).
const MAX_STREAMS: i64 = 4096;
/// Highest `session_window_mib`.
const MAX_WINDOW_MIB: i64 = 16 * 1024;

impl Validator<'_> {
    pub(super) fn limits(&mut self, raw: Option<RawLimits>) -> Limits {
        let raw = raw.unwrap_or_default();
        let d = Limits::default();
        let at = |k: &str| path(&["limits".into(), k.into()]);
        let streams = raw.max_streams.map_or(d.max_streams, |n| {
            if (1..=MAX_STREAMS).contains(&n) {
                usize::try_from(n).unwrap_or(d.max_streams)
            } else {
                self.err(
                    &at("max_streams"),
                    format!("{n} out of range; allowed 1..={MAX_STREAMS}"),
                );
                d.max_streams
            }
        });
        // Every stream is owed its initial 256 KiB window.
        let floor_mib = (streams * STREAM_MIN_WINDOW).div_ceil(MIB);
        let window = match raw.session_window_mib {
            None => d.session_window.max(floor_mib * MIB),
            Some(w) if !(1..=MAX_WINDOW_MIB).contains(&w) => {
                self.err(
                    &at("session_window_mib"),
                    format!("{w} out of range; allowed 1..={MAX_WINDOW_MIB}"),
                );
                d.session_window
            }
            Some(w) => {
                let w = usize::try_from(w).unwrap_or(0);
                if w < floor_mib {
                    self.err(
                        &at("session_window_mib"),
                        format!(
                            "{w} is below limits.max_streams x 256 KiB ({streams} x 256 KiB = \
                             {floor_mib} MiB); every stream starts with a 256 KiB window"
                        ),
                    );
                }
                w * MIB
            }
        };
        Limits {
            max_streams: streams,
            session_window: window,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use tether_health::config::Source;

    use super::*;
    use crate::config::{GatewayConfig, parse};

    const ONPREM: &str = r#"[node]
role = "onprem"
id = "onprem1"
cloud = "gw.example.com:443"
admin_listen = "0.0.0.0:9101"
[tls]
cert = "certs/onprem1.pem"
key = "certs/onprem1.key"
ca = "certs/ca.pem"
"#;

    fn limits(section: &str) -> Result<Limits, String> {
        let text = format!("{ONPREM}[limits]\n{section}");
        match parse(&Source::from_text("gw.toml", &text), Path::new("/etc")) {
            Ok(GatewayConfig::Onprem(o)) => Ok(o.limits),
            Ok(other) => Err(format!("wrong role: {other:?}")),
            Err(e) => Err(e.to_string()),
        }
    }

    #[test]
    fn defaults_and_values() {
        assert_eq!(limits(""), Ok(Limits::default()));
        assert_eq!(
            limits("max_streams = 64\nsession_window_mib = 48\n"),
            Ok(Limits {
                max_streams: 64,
                session_window: 48 * MIB
            })
        );
        // More streams than the default window covers: the default window grows with them.
        assert_eq!(
            limits("max_streams = 1024\n").map(|l| l.session_window),
            Ok(256 * MIB)
        );
    }

    #[test]
    fn errors_name_line_and_key() {
        assert_eq!(
            limits("max_streams = 0\n"),
            Err("gw.toml:11: limits.max_streams: 0 out of range; allowed 1..=4096".into())
        );
        let e = limits("max_streams = 512\nsession_window_mib = 100\n").unwrap_err();
        assert!(
            e.starts_with("gw.toml:12: limits.session_window_mib: 100 is below"),
            "{e}"
        );
        assert!(e.contains("128 MiB"), "{e}");
        let e = limits("session_window_mib = -1\n").unwrap_err();
        assert!(
            e.starts_with("gw.toml:11: limits.session_window_mib:"),
            "{e}"
        );
    }
}
