//! The gateway's own wire formats on top of the multiplexed session:
//!
//! - control messages on the first stream (opened by on-prem): `u32` big-endian length, then
//!   JSON (low rate, debuggable, evolvable: unknown fields are ignored);
//! - the preamble that starts every data stream (binary: kind, service, client address,
//!   trace id);
//! - the one status byte the stream's acceptor answers with before any payload.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use serde::{Deserialize, Serialize};
use thiserror::Error;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Version of the control protocol carried in HELLO.
pub const PROTO_VERSION: u16 = 1;
/// Largest control message accepted.
pub const MAX_CONTROL_LEN: usize = 64 * 1024;
/// HELLO feature: the gateway understands [`Control::Roster`]. Features, not a new
/// [`PROTO_VERSION`], so that gateways of either release keep talking during an upgrade:
/// a node sends a message only to sessions that announced it.
pub const FEATURE_ROSTER: &str = "roster";
/// HELLO and HELLO_ACK feature: the side understands [`Control::Services`] (on-prem's
/// services changed by a reload) and [`Control::Accepted`] (what a session may carry now).
pub const FEATURE_SERVICES: &str = "services";

/// Errors of the gateway wire formats.
#[derive(Debug, Error)]
pub enum ProtoError {
    /// The stream failed or ended early.
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    /// A control message longer than [`MAX_CONTROL_LEN`].
    #[error("control message of {0} bytes exceeds the {MAX_CONTROL_LEN} byte limit")]
    TooLong(usize),
    /// The JSON did not decode into a known message.
    #[error("bad control message: {0}")]
    Json(#[from] serde_json::Error),
    /// A malformed stream preamble.
    #[error("bad stream preamble: {0}")]
    Preamble(&'static str),
}

/// One service a gateway exports, with its backend's state at HELLO time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExportState {
    /// Service name.
    pub service: String,
    /// Whether the on-prem server is reported up.
    pub up: bool,
}

/// A roster entry as sent in HELLO_ACK and REJECT.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RosterEntry {
    /// Node id.
    pub node_id: String,
    /// TLS server name the balancer routes to that node.
    pub sni: String,
    /// `true` while the node drains (contributes no coverage).
    #[serde(default)]
    pub draining: bool,
}

/// A service refused in HELLO_ACK, with why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Refused {
    /// Service name.
    pub service: String,
    /// Why (`unauthorized`, `unknown`).
    pub reason: String,
}

/// Why a session is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RejectCode {
    /// Identity not allowed, or not matching its certificate.
    Auth,
    /// The node is draining; go elsewhere.
    Draining,
    /// Incompatible protocol version.
    Version,
    /// Too many sessions from this gateway.
    OverQuota,
}

/// Control messages on a session's first stream (framing in the module doc; the exchange in
/// docs/architecture.md, the gateway session).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Control {
    /// On-prem → cloud: register the session.
    Hello {
        /// [`PROTO_VERSION`].
        proto: u16,
        /// The gateway id (must match the client certificate).
        gateway_id: String,
        /// Random per process start; a new one purges the old incarnation's sessions.
        boot_epoch: u64,
        /// Session slot number within this gateway.
        slot: u32,
        /// The node this session was meant for (SNI pinning), if any.
        #[serde(default)]
        want_node: Option<String>,
        /// Services exported (reverse) with their backend state.
        #[serde(default)]
        exports: Vec<ExportState>,
        /// Services consumed (forward).
        #[serde(default)]
        consumes: Vec<String>,
        /// Optional messages this gateway understands ([`FEATURE_ROSTER`]).
        #[serde(default)]
        features: Vec<String>,
    },
    /// Cloud → on-prem: session accepted.
    HelloAck {
        /// The node the session actually landed on.
        node_id: String,
        /// The cloud process's boot epoch.
        boot_epoch: u64,
        /// All cloud nodes.
        roster: Vec<RosterEntry>,
        /// Services accepted (exports and consumes).
        accepted: Vec<String>,
        /// Services refused.
        #[serde(default)]
        rejected: Vec<Refused>,
        /// Ping interval the cloud wants, ms.
        ping_ms: u64,
        /// Dead interval, ms.
        dead_ms: u64,
        /// Optional messages this node understands ([`FEATURE_SERVICES`]).
        #[serde(default)]
        features: Vec<String>,
    },
    /// Cloud → on-prem: session refused.
    Reject {
        /// Why.
        code: RejectCode,
        /// Human text.
        message: String,
        /// Suggested wait before re-dialing this node.
        retry_after_ms: u64,
        /// Where else to go.
        #[serde(default)]
        roster: Vec<RosterEntry>,
    },
    /// Cloud → on-prem, to sessions that announced [`FEATURE_ROSTER`]: the roster changed
    /// (a reload added or removed nodes); on-prem dials the new nodes and stops dialing
    /// the removed ones.
    Roster {
        /// All cloud nodes, as in HELLO_ACK.
        roster: Vec<RosterEntry>,
    },
    /// On-prem → cloud, when the node announced [`FEATURE_SERVICES`]: the services this
    /// gateway exports and consumes now (a reload changed them), replacing those of HELLO.
    /// Answered with [`Control::Accepted`].
    Services {
        /// Services exported (reverse) with their servers' state.
        exports: Vec<ExportState>,
        /// Services consumed (forward).
        consumes: Vec<String>,
    },
    /// Cloud → on-prem, to sessions that announced [`FEATURE_SERVICES`]: what the session
    /// may carry now, after a [`Control::Services`] or a reload of the node that changed
    /// the gateway's rights.
    Accepted {
        /// Services accepted (exports and consumes), as in HELLO_ACK.
        accepted: Vec<String>,
        /// Services refused.
        #[serde(default)]
        rejected: Vec<Refused>,
    },
    /// On-prem → cloud: health of an exported service's server.
    ServiceState {
        /// Service name.
        service: String,
        /// Up or down.
        up: bool,
        /// Why (check result).
        #[serde(default)]
        reason: String,
    },
    /// Either way: no new streams on this session; the peer re-covers elsewhere.
    Drain {
        /// How long streams may still run, ms.
        deadline_ms: u64,
        /// Why.
        reason: String,
    },
    /// Either way: liveness probe.
    Ping {
        /// Echoed in the pong.
        seq: u64,
    },
    /// Answer to [`Control::Ping`].
    Pong {
        /// The ping's sequence number.
        seq: u64,
    },
    /// Either way: non-fatal protocol error.
    Error {
        /// Machine-readable code.
        code: String,
        /// Text.
        message: String,
    },
}

impl Control {
    /// Encodes to a length-prefixed frame.
    pub fn encode(&self) -> Result<Vec<u8>, ProtoError> {
        let json = serde_json::to_vec(self)?;
        if json.len() > MAX_CONTROL_LEN {
            return Err(ProtoError::TooLong(json.len()));
        }
        let mut out = Vec::with_capacity(4 + json.len());
        out.extend_from_slice(&(json.len() as u32).to_be_bytes());
        out.extend_from_slice(&json);
        Ok(out)
    }

    /// Decodes one frame body (without the length prefix).
    pub fn decode(body: &[u8]) -> Result<Control, ProtoError> {
        Ok(serde_json::from_slice(body)?)
    }

    /// Writes one message and flushes.
    pub async fn write_to<W: AsyncWrite + Unpin>(&self, w: &mut W) -> Result<(), ProtoError> {
        w.write_all(&self.encode()?).await?;
        w.flush().await?;
        Ok(())
    }

    /// Reads one message; `Ok(None)` on a clean end of stream between messages.
    pub async fn read_from<R: AsyncRead + Unpin>(r: &mut R) -> Result<Option<Control>, ProtoError> {
        let mut len = [0u8; 4];
        match r.read_exact(&mut len).await {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
            Err(e) => return Err(e.into()),
        }
        let len = u32::from_be_bytes(len) as usize;
        if len > MAX_CONTROL_LEN {
            return Err(ProtoError::TooLong(len));
        }
        let mut body = vec![0u8; len];
        r.read_exact(&mut body).await?;
        Control::decode(&body).map(Some)
    }
}

/// What a data stream is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamKind {
    /// Cloud → on-prem: a cloud client for an exported service.
    Reverse = 1,
    /// On-prem → cloud: a local client for a consumed service.
    Forward = 2,
    /// Either way: a probe answered with status only.
    Probe = 3,
}

/// The header of a data stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Preamble {
    /// Direction and purpose.
    pub kind: StreamKind,
    /// Service name (1..=255 bytes).
    pub service: String,
    /// The original client, for logs.
    pub client: Option<SocketAddr>,
    /// Correlates logs on both sides.
    pub trace_id: [u8; 16],
}

impl Preamble {
    /// Encodes: kind u8, service (u8 length + UTF-8), address (u8 family 0/4/6 + address +
    /// u16 port), trace id (16 bytes).
    pub fn encode(&self) -> Result<Vec<u8>, ProtoError> {
        let name = self.service.as_bytes();
        if name.is_empty() || name.len() > 255 {
            return Err(ProtoError::Preamble("service name must be 1..=255 bytes"));
        }
        let mut out = Vec::with_capacity(2 + name.len() + 19 + 16);
        out.push(self.kind as u8);
        out.push(name.len() as u8);
        out.extend_from_slice(name);
        match self.client {
            None => out.push(0),
            Some(SocketAddr::V4(a)) => {
                out.push(4);
                out.extend_from_slice(&a.ip().octets());
                out.extend_from_slice(&a.port().to_be_bytes());
            }
            Some(SocketAddr::V6(a)) => {
                out.push(6);
                out.extend_from_slice(&a.ip().octets());
                out.extend_from_slice(&a.port().to_be_bytes());
            }
        }
        out.extend_from_slice(&self.trace_id);
        Ok(out)
    }

    /// Reads a preamble from the start of a stream.
    pub async fn read_from<R: AsyncRead + Unpin>(r: &mut R) -> Result<Preamble, ProtoError> {
        let mut head = [0u8; 2];
        r.read_exact(&mut head).await?;
        let kind = match head[0] {
            1 => StreamKind::Reverse,
            2 => StreamKind::Forward,
            3 => StreamKind::Probe,
            _ => return Err(ProtoError::Preamble("unknown stream kind")),
        };
        if head[1] == 0 {
            return Err(ProtoError::Preamble("empty service name"));
        }
        let mut name = vec![0u8; head[1] as usize];
        r.read_exact(&mut name).await?;
        let service = String::from_utf8(name)
            .map_err(|_| ProtoError::Preamble("service name is not UTF-8"))?;
        let client = match r.read_u8().await? {
            0 => None,
            4 => {
                let mut a = [0u8; 6];
                r.read_exact(&mut a).await?;
                let ip = Ipv4Addr::new(a[0], a[1], a[2], a[3]);
                Some(SocketAddr::new(
                    IpAddr::V4(ip),
                    u16::from_be_bytes([a[4], a[5]]),
                ))
            }
            6 => {
                let mut a = [0u8; 18];
                r.read_exact(&mut a).await?;
                let mut o = [0u8; 16];
                o.copy_from_slice(&a[..16]);
                Some(SocketAddr::new(
                    IpAddr::V6(Ipv6Addr::from(o)),
                    u16::from_be_bytes([a[16], a[17]]),
                ))
            }
            _ => return Err(ProtoError::Preamble("unknown address family")),
        };
        let mut trace_id = [0u8; 16];
        r.read_exact(&mut trace_id).await?;
        Ok(Preamble {
            kind,
            service,
            client,
            trace_id,
        })
    }
}

/// The first byte the acceptor of a data stream writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Connected; payload follows.
    Ok = 0,
    /// The server refused the connection.
    BackendRefused = 1,
    /// The server did not answer in time.
    BackendTimeout = 2,
    /// Service unknown here or not authorized for this peer.
    Unauthorized = 3,
    /// Too many streams.
    Overloaded = 4,
    /// The acceptor drains.
    Draining = 5,
}

impl Status {
    /// Decodes a status byte; unknown values are `None`.
    pub fn from_u8(b: u8) -> Option<Status> {
        Some(match b {
            0 => Status::Ok,
            1 => Status::BackendRefused,
            2 => Status::BackendTimeout,
            3 => Status::Unauthorized,
            4 => Status::Overloaded,
            5 => Status::Draining,
            _ => return None,
        })
    }

    /// Label for metrics and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::BackendRefused => "backend_refused",
            Status::BackendTimeout => "backend_timeout",
            Status::Unauthorized => "unauthorized",
            Status::Overloaded => "overloaded",
            Status::Draining => "draining",
        }
    }
}

#[cfg(test)]
mod tests;
