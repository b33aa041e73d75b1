//! Whether a cloud node admits a session, from its HELLO (sans-IO): the protocol version,
//! the drain, the certificate's identity, the gateway's rights in the configuration and its
//! session quota, then which of its exports and consumes are accepted. Duplicate ids are
//! judged afterwards by [`crate::duplicate::DuplicateIds`], which keeps state.

use std::collections::{BTreeMap, BTreeSet};

use crate::config::CloudConfig;
use crate::proto::{ExportState, PROTO_VERSION, Refused, RejectCode};

/// Sessions one gateway incarnation may hold on one node: bounds a misbehaving gateway
/// (16 is the highest `prepared_connections`, plus room for re-dials and surplus).
pub(crate) const MAX_SESSIONS_PER_GATEWAY: usize = 32;

/// The HELLO fields admission looks at.
#[derive(Debug, Clone)]
pub(crate) struct Hello {
    /// Protocol version.
    pub(crate) proto: u16,
    /// The claimed gateway id.
    pub(crate) gateway_id: String,
    /// Exports with their servers' state.
    pub(crate) exports: Vec<ExportState>,
    /// Services it consumes.
    pub(crate) consumes: Vec<String>,
    /// It understands a pushed [`crate::proto::Control::Roster`].
    pub(crate) roster_push: bool,
    /// It understands [`crate::proto::Control::Accepted`] (and may send `SERVICES`).
    pub(crate) services_msgs: bool,
}

/// What the node knows besides the HELLO.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Facts {
    /// The node drains.
    pub(crate) draining: bool,
    /// The client certificate is valid for the claimed gateway id.
    pub(crate) identity_ok: bool,
    /// Sessions the gateway's incarnation already holds here.
    pub(crate) held: usize,
}

/// Why a HELLO is refused as a whole.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Reject {
    /// Another protocol version.
    Version(u16),
    /// The node drains.
    Draining,
    /// The certificate is not valid for the claimed id.
    IdentityMismatch,
    /// The id has no right on this node.
    UnknownGateway,
    /// The incarnation holds its most sessions already.
    OverQuota(usize),
}

impl Reject {
    /// The code sent in REJECT.
    pub(crate) fn code(&self) -> RejectCode {
        match self {
            Reject::Version(_) => RejectCode::Version,
            Reject::Draining => RejectCode::Draining,
            Reject::IdentityMismatch | Reject::UnknownGateway => RejectCode::Auth,
            Reject::OverQuota(_) => RejectCode::OverQuota,
        }
    }

    /// The message sent in REJECT.
    pub(crate) fn message(&self, gateway_id: &str) -> String {
        match self {
            Reject::Version(proto) => {
                format!("protocol {proto} unsupported; this node speaks {PROTO_VERSION}")
            }
            Reject::Draining => "node is draining".into(),
            Reject::IdentityMismatch => format!("certificate is not valid for {gateway_id:?}"),
            Reject::UnknownGateway => format!("{gateway_id:?} is not allowed on this node"),
            Reject::OverQuota(held) => {
                format!("{gateway_id:?} already holds {held} sessions on this node")
            }
        }
    }

    /// The `reason` of `tether_gateway_auth_refusals_total`, for refusals it counts.
    pub(crate) fn auth_reason(&self) -> Option<&'static str> {
        match self {
            Reject::Version(_) | Reject::Draining => None,
            Reject::IdentityMismatch => Some("identity_mismatch"),
            Reject::UnknownGateway => Some("unknown_gateway"),
            Reject::OverQuota(_) => Some("over_quota"),
        }
    }
}

/// An admitted HELLO: what the session may carry.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Admission {
    /// Accepted services, exports first, as sent in HELLO_ACK.
    pub(crate) accepted: Vec<String>,
    /// Exports refused, with why (`unknown` or `unauthorized`).
    pub(crate) exports_refused: Vec<Refused>,
    /// Consumes refused, with why.
    pub(crate) consumes_refused: Vec<Refused>,
    /// Accepted exports with their servers' state.
    pub(crate) exports: BTreeMap<String, bool>,
    /// Accepted consumes.
    pub(crate) consumes: BTreeSet<String>,
}

/// Decides on a HELLO; the checks run in this order, and the first that fails names the
/// refusal. An admitted gateway may still have services refused one by one.
pub(crate) fn admit(cfg: &CloudConfig, hello: &Hello, facts: Facts) -> Result<Admission, Reject> {
    let id = &hello.gateway_id;
    if hello.proto != PROTO_VERSION {
        return Err(Reject::Version(hello.proto));
    }
    if facts.draining {
        return Err(Reject::Draining);
    }
    if !facts.identity_ok {
        return Err(Reject::IdentityMismatch);
    }
    let known = cfg.reverse.iter().any(|r| r.allowed_exporters.contains(id))
        || cfg.forward.iter().any(|f| f.allowed_consumers.contains(id));
    if !known {
        return Err(Reject::UnknownGateway);
    }
    if facts.held >= MAX_SESSIONS_PER_GATEWAY {
        return Err(Reject::OverQuota(facts.held));
    }
    let mut a = Admission::default();
    let refused = |found: bool, service: &str| Refused {
        service: service.to_string(),
        reason: if found { "unauthorized" } else { "unknown" }.into(),
    };
    for ExportState { service, up } in &hello.exports {
        match cfg.reverse.iter().find(|r| &r.service == service) {
            Some(r) if r.allowed_exporters.contains(id) => {
                a.accepted.push(service.clone());
                a.exports.insert(service.clone(), *up);
            }
            found => a.exports_refused.push(refused(found.is_some(), service)),
        }
    }
    for service in &hello.consumes {
        match cfg.forward.iter().find(|f| &f.service == service) {
            Some(f) if f.allowed_consumers.contains(id) => {
                a.accepted.push(service.clone());
                a.consumes.insert(service.clone());
            }
            found => a.consumes_refused.push(refused(found.is_some(), service)),
        }
    }
    Ok(a)
}

/// Whether a live session, admitted earlier for the services `accepted`, has lost rights
/// under `cfg` (after a reload): `Some(why)` when its gateway is no longer allowed any
/// service here, or may no longer carry one of the services it was accepted for that the
/// node still offers. A service the node no longer offers at all is withdrawn from the
/// session (ACCEPTED), not a reason to close it; rights gained are granted on it.
pub(crate) fn revoked(cfg: &CloudConfig, hello: &Hello, accepted: &[String]) -> Option<String> {
    // Only the configuration is judged again: the identity was proven by the handshake,
    // and the drain and the quota were judged when the session came.
    let facts = Facts {
        draining: false,
        identity_ok: true,
        held: 0,
    };
    match admit(cfg, hello, facts) {
        Err(Reject::UnknownGateway) => Some(format!(
            "{:?} is no longer allowed any service on this node",
            hello.gateway_id
        )),
        Err(_) => None,
        Ok(now) => {
            let offered = |s: &str| {
                cfg.reverse.iter().any(|r| r.service == s)
                    || cfg.forward.iter().any(|f| f.service == s)
            };
            let lost: Vec<&str> = accepted
                .iter()
                .filter(|s| !now.accepted.contains(s) && offered(s))
                .map(String::as_str)
                .collect();
            (!lost.is_empty()).then(|| {
                format!(
                    "{:?} may no longer carry {}",
                    hello.gateway_id,
                    lost.join(", ")
                )
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use tether_health::config::Source;

    use super::*;
    use crate::config::{GatewayConfig, parse};

    fn config() -> CloudConfig {
        let text = r#"
[node]
role = "cloud"
id = "cloud1"
session_listen = "0.0.0.0:8443"
admin_listen = "0.0.0.0:9100"
[tls]
cert = "c.pem"
key = "c.key"
client_ca = "ca.pem"
[[reverse]]
service = "rev"
listen = "0.0.0.0:5551"
allowed_exporters = ["exp"]
[[forward]]
service = "fwd"
connect = "server:5000"
allowed_consumers = ["con"]
"#;
        match parse(&Source::from_text("gw.toml", text), Path::new("/etc")) {
            Ok(GatewayConfig::Cloud(c)) => c,
            other => panic!("{other:?}"),
        }
    }

    fn hello(id: &str, exports: &[&str], consumes: &[&str]) -> Hello {
        Hello {
            proto: PROTO_VERSION,
            gateway_id: id.into(),
            exports: exports
                .iter()
                .map(|s| ExportState {
                    service: s.to_string(),
                    up: true,
                })
                .collect(),
            consumes: consumes.iter().map(|s| s.to_string()).collect(),
            roster_push: false,
            services_msgs: false,
        }
    }

    const OK: Facts = Facts {
        draining: false,
        identity_ok: true,
        held: 0,
    };

    /// What each HELLO gets: the refusal, or (accepted, refused as service:reason).
    #[test]
    fn table() {
        let cfg = config();
        let old = Hello {
            proto: PROTO_VERSION + 1,
            ..hello("exp", &["rev"], &[])
        };
        let draining = Facts {
            draining: true,
            ..OK
        };
        let stranger = Facts {
            identity_ok: false,
            ..OK
        };
        let full = Facts {
            held: MAX_SESSIONS_PER_GATEWAY,
            ..OK
        };
        let below = Facts {
            held: MAX_SESSIONS_PER_GATEWAY - 1,
            ..OK
        };
        type Want = Result<(Vec<&'static str>, Vec<&'static str>), Reject>;
        let cases: Vec<(&str, Hello, Facts, Want)> = vec![
            (
                "an exporter",
                hello("exp", &["rev"], &[]),
                OK,
                Ok((vec!["rev"], vec![])),
            ),
            (
                "a consumer",
                hello("con", &[], &["fwd"]),
                OK,
                Ok((vec!["fwd"], vec![])),
            ),
            (
                "services it may not use are refused one by one",
                hello("exp", &["rev", "nope"], &["fwd"]),
                OK,
                Ok((vec!["rev"], vec!["nope:unknown", "fwd:unauthorized"])),
            ),
            (
                "exports before consumes",
                hello("con", &["rev"], &["fwd", "x"]),
                OK,
                Ok((vec!["fwd"], vec!["rev:unauthorized", "x:unknown"])),
            ),
            (
                "another protocol",
                old.clone(),
                OK,
                Err(Reject::Version(PROTO_VERSION + 1)),
            ),
            (
                "the version comes first",
                old,
                draining,
                Err(Reject::Version(PROTO_VERSION + 1)),
            ),
            (
                "draining",
                hello("exp", &["rev"], &[]),
                draining,
                Err(Reject::Draining),
            ),
            (
                "draining before identity",
                hello("exp", &[], &[]),
                Facts {
                    identity_ok: false,
                    ..draining
                },
                Err(Reject::Draining),
            ),
            (
                "identity",
                hello("exp", &["rev"], &[]),
                stranger,
                Err(Reject::IdentityMismatch),
            ),
            (
                "unknown",
                hello("who", &["rev"], &[]),
                OK,
                Err(Reject::UnknownGateway),
            ),
            (
                "quota",
                hello("con", &[], &["fwd"]),
                full,
                Err(Reject::OverQuota(32)),
            ),
            (
                "below quota",
                hello("con", &[], &["fwd"]),
                below,
                Ok((vec!["fwd"], vec![])),
            ),
            (
                "unknown before quota",
                hello("who", &[], &[]),
                full,
                Err(Reject::UnknownGateway),
            ),
        ];
        for (what, h, facts, want) in cases {
            let got = admit(&cfg, &h, facts).map(|a| {
                let refused: Vec<String> = a
                    .exports_refused
                    .iter()
                    .chain(&a.consumes_refused)
                    .map(|r| format!("{}:{}", r.service, r.reason))
                    .collect();
                (a.accepted, refused)
            });
            let want = want.map(|(acc, refused)| {
                (
                    acc.into_iter().map(String::from).collect::<Vec<_>>(),
                    refused.into_iter().map(String::from).collect::<Vec<_>>(),
                )
            });
            assert_eq!(got, want, "{what}");
        }
    }

    #[test]
    fn refusals_name_code_message_and_reason() {
        let r = Reject::OverQuota(32);
        assert_eq!(r.code(), RejectCode::OverQuota);
        assert_eq!(
            r.message("gw1"),
            "\"gw1\" already holds 32 sessions on this node"
        );
        assert_eq!(r.auth_reason(), Some("over_quota"));
        assert_eq!(Reject::Draining.auth_reason(), None);
        assert_eq!(Reject::UnknownGateway.code(), RejectCode::Auth);
    }

    /// After a reload, a live session is closed only when its gateway lost a right it
    /// uses: removed from every list, or from the list of a service the session carries.
    #[test]
    fn revoked_after_a_reload() {
        let cfg = config();
        let both = hello("exp", &["rev"], &["fwd"]);
        let accepted = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(revoked(&cfg, &both, &accepted(&["rev"])), None);

        let mut removed = cfg.clone();
        removed.reverse[0].allowed_exporters.clear();
        assert_eq!(
            revoked(&removed, &both, &accepted(&["rev"])).as_deref(),
            Some("\"exp\" is no longer allowed any service on this node")
        );

        // Still known for the forward service, but not for the export it carries.
        let mut moved = removed.clone();
        moved.forward[0].allowed_consumers.insert("exp".into());
        assert_eq!(
            revoked(&moved, &both, &accepted(&["rev"])).as_deref(),
            Some("\"exp\" may no longer carry rev")
        );
        // A right gained (fwd) is not a reason; the session keeps what it had.
        let mut gained = cfg.clone();
        gained.forward[0].allowed_consumers.insert("exp".into());
        assert_eq!(revoked(&gained, &both, &accepted(&["rev"])), None);

        // A service removed from the file is withdrawn, not revoked: the session stays.
        let con = hello("con", &[], &["fwd"]);
        let mut gone = cfg.clone();
        gone.forward.clear();
        gone.reverse[0].allowed_exporters.insert("con".into());
        assert_eq!(revoked(&gone, &con, &accepted(&["fwd"])), None);
    }
}
