//! The `[timers]` section (both roles): session liveness, stream opens, drains, reconnects,
//! and the session hygiene timers (`stream_idle_timeout`, `max_session_age`).

use std::time::Duration;

use super::raw::RawTimers;
use super::{Validator, path};

/// Timers shared by both roles (defaults and meanings: docs/gateway.md).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Timers {
    /// Interval of control-stream pings.
    pub ping: Duration,
    /// A session with no inbound control message for this long is dead.
    pub dead_after: Duration,
    /// A stream open must be answered (status byte) within this.
    pub open_timeout: Duration,
    /// Connect timeout to the real servers.
    pub connect_timeout: Duration,
    /// Bound on TCP connect + TLS handshake + HELLO of a session.
    pub handshake_timeout: Duration,
    /// How long a service stays ready after its last capacity vanished (anti-flap).
    pub readiness_down: Duration,
    /// How long a drain waits for streams to finish.
    pub drain_grace: Duration,
    /// Cloud: how long a stopping node keeps serving with `/readyz` already 503, before its
    /// listeners close, so balancers that cannot retry a refused connect (`mode = "dr"`)
    /// move new clients away first (HAProxy's `grace`).
    pub stop_delay: Duration,
    /// Highest reconnect backoff towards a roster node.
    pub backoff_cap: Duration,
    /// How often a cloud node probes each session with an empty stream open, so a session
    /// that answers pings but not opens is ejected before a client meets it.
    pub probe: Duration,
    /// A data stream that moves no byte in either direction for this long is closed on
    /// both sides (HAProxy's `timeout client` / `timeout server` of a tunnel), so clients
    /// that vanished without a FIN do not hold streams, sockets and session slots forever.
    pub stream_idle_timeout: Duration,
    /// On-prem: a kept session older than this (±15 % per session) is replaced by a new
    /// one and then drained, so sessions pick up rotated certificates and CAs and are
    /// placed afresh. `None` (the default): sessions are kept for as long as they live.
    pub max_session_age: Option<Duration>,
}

impl Default for Timers {
    fn default() -> Self {
        Timers {
            ping: Duration::from_secs(3),
            dead_after: Duration::from_secs(9),
            open_timeout: Duration::from_secs(3),
            connect_timeout: Duration::from_secs(2),
            handshake_timeout: Duration::from_secs(5),
            readiness_down: Duration::from_millis(500),
            drain_grace: Duration::from_secs(30),
            stop_delay: Duration::ZERO,
            backoff_cap: Duration::from_secs(2),
            probe: Duration::from_secs(30),
            // What HAProxy users set `timeout tunnel` / `timeout client` to for long-lived
            // TCP: long enough for an interactive session or a pooled database connection
            // sitting idle between bursts, short enough that a client gone without a FIN
            // gives its stream back within the hour.
            stream_idle_timeout: Duration::from_secs(3600),
            // Off: a recycle cuts streams that outlive `drain_grace`, which long-lived
            // tunnels do; operators who rotate certificates turn it on (docs/gateway.md).
            max_session_age: None,
        }
    }
}

/// Shortest `stream_idle_timeout`.
const MIN_STREAM_IDLE: Duration = Duration::from_millis(100);
/// Longest `stream_idle_timeout` and `max_session_age`: 30 days.
const MAX_HYGIENE: Duration = Duration::from_secs(30 * 24 * 3600);
/// Shortest `max_session_age`: a recycle costs a handshake and a drain, and the jitter
/// needs room.
const MIN_SESSION_AGE: Duration = Duration::from_secs(1);

impl Validator<'_> {
    pub(super) fn timers(&mut self, raw: Option<RawTimers>) -> Timers {
        let raw = raw.unwrap_or_default();
        let d = Timers::default();
        let t = Timers {
            ping: raw.ping.unwrap_or(d.ping),
            dead_after: raw.dead_after.unwrap_or(d.dead_after),
            open_timeout: raw.open_timeout.unwrap_or(d.open_timeout),
            connect_timeout: raw.connect_timeout.unwrap_or(d.connect_timeout),
            handshake_timeout: raw.handshake_timeout.unwrap_or(d.handshake_timeout),
            readiness_down: raw.readiness_down.unwrap_or(d.readiness_down),
            drain_grace: raw.drain_grace.unwrap_or(d.drain_grace),
            stop_delay: raw.stop_delay.unwrap_or(d.stop_delay),
            backoff_cap: raw.backoff_cap.unwrap_or(d.backoff_cap),
            probe: raw.probe.unwrap_or(d.probe),
            stream_idle_timeout: raw.stream_idle_timeout.unwrap_or(d.stream_idle_timeout),
            max_session_age: raw.max_session_age.or(d.max_session_age),
        };
        let at = |k: &str| path(&["timers".into(), k.into()]);
        for (key, value) in [
            ("ping", t.ping),
            ("dead_after", t.dead_after),
            ("open_timeout", t.open_timeout),
            ("connect_timeout", t.connect_timeout),
            ("handshake_timeout", t.handshake_timeout),
            ("backoff_cap", t.backoff_cap),
            ("probe", t.probe),
        ] {
            if value < Duration::from_millis(10) {
                self.err(
                    &at(key),
                    format!("{value:?} is too short; must be at least 10ms"),
                );
            }
        }
        if t.dead_after <= t.ping {
            self.err(
                &at("dead_after"),
                format!(
                    "{:?} must be longer than timers.ping ({:?}); 3 x ping is usual",
                    t.dead_after, t.ping
                ),
            );
        }
        if !(MIN_STREAM_IDLE..=MAX_HYGIENE).contains(&t.stream_idle_timeout) {
            self.err(
                &at("stream_idle_timeout"),
                format!(
                    "{:?} out of range; allowed 100ms..=30days (720h)",
                    t.stream_idle_timeout
                ),
            );
        }
        if let Some(age) = t.max_session_age
            && !(MIN_SESSION_AGE..=MAX_HYGIENE).contains(&age)
        {
            self.err(
                &at("max_session_age"),
                format!(
                    "{age:?} out of range; allowed 1s..=30days (720h); leave it out to keep \
                     sessions for as long as they live"
                ),
            );
        }
        t
    }
}
