//! The health-check schema the three daemons share: `[backend.health]` (lb),
//! `[[instance.track]]` (vrrp) and `[export.health]` (gateway) are one table with the same
//! keys, the same rules and the same errors.
//!
//! A daemon reads the table as [`RawCheck<X>`], where `X` holds the keys only it has (the
//! lb's `port`, the vrrp track's `url` and `weight`); serde's `flatten` cannot be combined
//! with `deny_unknown_fields`, so [`RawCheck`] reads the shared keys and hands the others
//! to `X` itself, and still refuses an unknown key at its line. [`validate`] checks the
//! shared keys, fills in the daemon's [`Defaults`] and returns every [`CheckConfigError`];
//! [`located`] turns them into `file:line: key: message` errors.

use std::fmt;
use std::marker::PhantomData;
use std::time::Duration;

use serde::Deserialize;
use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, Visitor};
use thiserror::Error;

use super::{ConfigError, Seg, Source};

/// What a check does: the one vocabulary of `kind`. Each daemon runs some of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// A TCP connect.
    Tcp,
    /// An HTTP GET expecting a status.
    Http,
    /// A TLS handshake with certificate verification.
    Tls,
    /// A command; exit status 0 passes.
    Exec,
    /// A network interface's state (vrrp only: read from the kernel, not checked).
    Interface,
    /// No checks: always up (lb only).
    None,
}

impl Kind {
    /// Every kind, in the order the documentation lists them.
    pub const ALL: [Kind; 6] = [
        Kind::Tcp,
        Kind::Http,
        Kind::Tls,
        Kind::Exec,
        Kind::Interface,
        Kind::None,
    ];

    /// The name written in `kind = "..."`.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Tcp => "tcp",
            Kind::Http => "http",
            Kind::Tls => "tls",
            Kind::Exec => "exec",
            Kind::Interface => "interface",
            Kind::None => "none",
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The keys one daemon adds to the shared table (its targets and its own settings).
pub trait OwnKeys: Default {
    /// The names of the keys, for "unknown field" errors.
    const KEYS: &'static [&'static str];

    /// Reads the value of `key`, one of [`Self::KEYS`].
    fn read<'de, A: MapAccess<'de>>(
        &mut self,
        key: &'static str,
        map: &mut A,
    ) -> Result<(), A::Error>;

    /// The keys that are written and apply only to some kinds, with those kinds:
    /// [`validate`] refuses them with any other kind, as it does `expect_status`.
    fn kind_bound(&self) -> Vec<(&'static str, &'static [Kind])> {
        Vec::new()
    }
}

/// No keys beyond the shared ones (`[export.health]`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NoOwnKeys;

impl OwnKeys for NoOwnKeys {
    const KEYS: &'static [&'static str] = &[];

    fn read<'de, A: MapAccess<'de>>(
        &mut self,
        key: &'static str,
        _map: &mut A,
    ) -> Result<(), A::Error> {
        // Unreachable: the key reader accepts only names in KEYS, which is empty.
        Err(de::Error::custom(format!("unknown field `{key}`")))
    }
}

/// A health-check table as written: the shared keys, and the daemon's own in `own`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RawCheck<X = NoOwnKeys> {
    /// What to check; `tcp` when absent.
    pub kind: Option<String>,
    /// Time between checks.
    pub interval: Option<Duration>,
    /// Time between checks while a rise or fall is under way (HAProxy's `fastinter`).
    pub fast_interval: Option<Duration>,
    /// Time between checks while the target is down (HAProxy's `downinter`).
    pub down_interval: Option<Duration>,
    /// Time one check may take.
    pub timeout: Option<Duration>,
    /// Consecutive passes to go up.
    pub rise: Option<i64>,
    /// Consecutive failures to go down.
    pub fall: Option<i64>,
    /// `http`: the status that passes.
    pub expect_status: Option<i64>,
    /// The daemon's own keys.
    pub own: X,
}

/// The shared keys, in the order "unknown field" errors list them.
const SHARED_KEYS: &[&str] = &[
    "kind",
    "interval",
    "fast_interval",
    "down_interval",
    "timeout",
    "rise",
    "fall",
    "expect_status",
];

/// A key of the table: shared, or one of the daemon's.
enum Key {
    Shared(&'static str),
    Own(&'static str),
}

/// Reads a key by name, so an unknown one is refused where it is written (its span is the
/// key's), as `deny_unknown_fields` does.
struct KeySeed<X>(PhantomData<X>);

impl<'de, X: OwnKeys> DeserializeSeed<'de> for KeySeed<X> {
    type Value = Key;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Key, D::Error> {
        d.deserialize_identifier(self)
    }
}

impl<'de, X: OwnKeys> Visitor<'de> for KeySeed<X> {
    type Value = Key;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a health-check key")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Key, E> {
        if let Some(k) = SHARED_KEYS.iter().find(|k| **k == v) {
            return Ok(Key::Shared(k));
        }
        if let Some(k) = X::KEYS.iter().find(|k| **k == v) {
            return Ok(Key::Own(k));
        }
        // serde's own wording for deny_unknown_fields, over both lists.
        let expected: Vec<String> = SHARED_KEYS
            .iter()
            .chain(X::KEYS)
            .map(|k| format!("`{k}`"))
            .collect();
        Err(E::custom(format!(
            "unknown field `{v}`, expected one of {}",
            expected.join(", ")
        )))
    }
}

impl<'de, X: OwnKeys> Deserialize<'de> for RawCheck<X> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_map(TableVisitor(PhantomData))
    }
}

struct TableVisitor<X>(PhantomData<X>);

impl<'de, X: OwnKeys> Visitor<'de> for TableVisitor<X> {
    type Value = RawCheck<X>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a table of health-check keys")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RawCheck<X>, A::Error> {
        let mut c = RawCheck::<X>::default();
        let duration = |map: &mut A| -> Result<Option<Duration>, A::Error> {
            Ok(Some(
                map.next_value::<humantime_serde::Serde<Duration>>()?
                    .into_inner(),
            ))
        };
        while let Some(key) = map.next_key_seed(KeySeed::<X>(PhantomData))? {
            match key {
                Key::Shared("kind") => c.kind = Some(map.next_value()?),
                Key::Shared("interval") => c.interval = duration(&mut map)?,
                Key::Shared("fast_interval") => c.fast_interval = duration(&mut map)?,
                Key::Shared("down_interval") => c.down_interval = duration(&mut map)?,
                Key::Shared("timeout") => c.timeout = duration(&mut map)?,
                Key::Shared("rise") => c.rise = Some(map.next_value()?),
                Key::Shared("fall") => c.fall = Some(map.next_value()?),
                Key::Shared("expect_status") => c.expect_status = Some(map.next_value()?),
                // Not reached: the key reader returns only the names of SHARED_KEYS.
                Key::Shared(other) => {
                    return Err(de::Error::custom(format!("unknown field `{other}`")));
                }
                Key::Own(k) => c.own.read(k, &mut map)?,
            }
        }
        Ok(c)
    }
}

/// What a daemon assumes for the keys not written.
#[derive(Debug, Clone, Copy)]
pub struct Defaults {
    /// The kinds the daemon runs, in the order its errors list them.
    pub kinds: &'static [Kind],
    /// `interval`.
    pub interval: Duration,
    /// `fast_interval`, from the interval.
    pub fast_interval: fn(Duration) -> Duration,
    /// `down_interval`, from the interval.
    pub down_interval: fn(Duration) -> Duration,
    /// `timeout`, from the interval.
    pub timeout: fn(Duration) -> Duration,
    /// `rise`.
    pub rise: u32,
    /// `fall`.
    pub fall: u32,
}

/// The shortest interval or timeout allowed: shorter checks would busy the daemon, and
/// no target answers meaningfully faster.
pub const MIN_DURATION: Duration = Duration::from_millis(10);

/// The largest `rise` or `fall`.
pub const MAX_RISE_FALL: i64 = 1000;

/// A validated check: the shared keys with the daemon's defaults filled in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Check {
    /// What to check.
    pub kind: Kind,
    /// Time between checks.
    pub interval: Duration,
    /// Time between checks while a rise or fall is under way.
    pub fast_interval: Duration,
    /// Time between checks while the target is down.
    pub down_interval: Duration,
    /// Time one check may take.
    pub timeout: Duration,
    /// Consecutive passes to go up.
    pub rise: u32,
    /// Consecutive failures to go down.
    pub fall: u32,
    /// `http`: the status that passes (200 unless written).
    pub expect_status: u16,
}

/// What is wrong with one key of a health-check table.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum CheckConfigError {
    /// `kind` is not a kind of check at all.
    #[error("\"{kind}\" is unknown; kind must be {}", list(allowed))]
    UnknownKind {
        /// As written.
        kind: String,
        /// The kinds this daemon runs.
        allowed: &'static [Kind],
    },
    /// `kind` is a kind this daemon does not run.
    #[error("\"{kind}\" is not supported here; kind must be {}", list(allowed))]
    UnsupportedKind {
        /// As written.
        kind: Kind,
        /// The kinds this daemon runs.
        allowed: &'static [Kind],
    },
    /// An integer key outside its range.
    #[error("{key} is {value}; {key} must be {min}..={max}")]
    OutOfRange {
        /// The key.
        key: &'static str,
        /// As written.
        value: i64,
        /// The smallest allowed.
        min: i64,
        /// The largest allowed.
        max: i64,
    },
    /// An interval or timeout below [`MIN_DURATION`].
    #[error(
        "{value:?} is too short; {key} must be at least {MIN_DURATION:?} (e.g. \"500ms\" or \"2s\")"
    )]
    TooShort {
        /// The key.
        key: &'static str,
        /// As written.
        value: Duration,
    },
    /// A key written for a kind it does not apply to.
    #[error(
        "\"{kind}\" checks do not take `{key}`; it applies only to kind = {}",
        quoted(applies)
    )]
    NotForKind {
        /// The key.
        key: &'static str,
        /// The kind written.
        kind: Kind,
        /// The kinds the key applies to.
        applies: &'static [Kind],
    },
}

impl CheckConfigError {
    /// The key the error is about, within the table.
    pub fn key(&self) -> &'static str {
        match self {
            CheckConfigError::UnknownKind { .. } | CheckConfigError::UnsupportedKind { .. } => {
                "kind"
            }
            CheckConfigError::OutOfRange { key, .. }
            | CheckConfigError::TooShort { key, .. }
            | CheckConfigError::NotForKind { key, .. } => key,
        }
    }
}

/// `http, tcp, exec or interface`.
fn list(kinds: &[Kind]) -> String {
    join(kinds.iter().map(|k| k.name().to_string()).collect())
}

/// `"http" or "tls"`.
fn quoted(kinds: &[Kind]) -> String {
    join(kinds.iter().map(|k| format!("\"{k}\"")).collect())
}

fn join(mut words: Vec<String>) -> String {
    match words.pop() {
        None => String::new(),
        Some(last) if words.is_empty() => last,
        Some(last) => format!("{} or {last}", words.join(", ")),
    }
}

/// Checks the shared keys of `raw` (and which of the daemon's own keys its kind takes),
/// filling in `defaults`. Returns every error, in the order of the keys above.
pub fn validate<X: OwnKeys>(
    raw: &RawCheck<X>,
    defaults: &Defaults,
) -> Result<Check, Vec<CheckConfigError>> {
    let mut errors = Vec::new();
    let kind = match raw.kind.as_deref() {
        None => Some(Kind::Tcp),
        Some(written) => match Kind::ALL.into_iter().find(|k| k.name() == written) {
            None => {
                errors.push(CheckConfigError::UnknownKind {
                    kind: written.to_string(),
                    allowed: defaults.kinds,
                });
                None
            }
            Some(k) if !defaults.kinds.contains(&k) => {
                errors.push(CheckConfigError::UnsupportedKind {
                    kind: k,
                    allowed: defaults.kinds,
                });
                None
            }
            Some(k) => Some(k),
        },
    };
    for (key, value) in [
        ("interval", raw.interval),
        ("fast_interval", raw.fast_interval),
        ("down_interval", raw.down_interval),
        ("timeout", raw.timeout),
    ] {
        if let Some(value) = value
            && value < MIN_DURATION
        {
            errors.push(CheckConfigError::TooShort { key, value });
        }
    }
    for (key, value, min, max) in [
        ("rise", raw.rise, 1, MAX_RISE_FALL),
        ("fall", raw.fall, 1, MAX_RISE_FALL),
        ("expect_status", raw.expect_status, 100, 599),
    ] {
        if let Some(value) = value
            && !(min..=max).contains(&value)
        {
            errors.push(CheckConfigError::OutOfRange {
                key,
                value,
                min,
                max,
            });
        }
    }
    if let Some(kind) = kind {
        let mut bound = raw.own.kind_bound();
        if raw.expect_status.is_some() {
            bound.insert(0, ("expect_status", &[Kind::Http]));
        }
        for (key, applies) in bound {
            if !applies.contains(&kind) {
                errors.push(CheckConfigError::NotForKind { key, kind, applies });
            }
        }
    }
    let Some(kind) = kind else {
        return Err(errors);
    };
    if !errors.is_empty() {
        return Err(errors);
    }
    let interval = raw.interval.unwrap_or(defaults.interval);
    // The ranges were checked above.
    let count = |v: Option<i64>, default: u32| v.map_or(default, |v| v as u32);
    Ok(Check {
        kind,
        interval,
        fast_interval: raw
            .fast_interval
            .unwrap_or((defaults.fast_interval)(interval)),
        down_interval: raw
            .down_interval
            .unwrap_or((defaults.down_interval)(interval)),
        timeout: raw.timeout.unwrap_or((defaults.timeout)(interval)),
        rise: count(raw.rise, defaults.rise),
        fall: count(raw.fall, defaults.fall),
        expect_status: raw.expect_status.map_or(200, |s| s as u16),
    })
}

/// The errors of the table at `table` (e.g. `backend[0].health`) as located
/// configuration errors: `lb.toml:15: backend[0].health.rise: rise is 0; ...`.
pub fn located(src: &Source, table: &[Seg], errors: Vec<CheckConfigError>) -> Vec<ConfigError> {
    errors
        .into_iter()
        .map(|e| {
            let mut path = table.to_vec();
            path.push(Seg::from(e.key()));
            src.error(&path, e.to_string())
        })
        .collect()
}

#[cfg(test)]
mod tests;
