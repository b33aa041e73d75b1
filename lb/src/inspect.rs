//! Reading what a client sends before a server is chosen, without terminating anything:
//! the PROXY protocol header of a balancer in front, and the TLS ClientHello's server name.
//!
//! Both parsers are sans-IO: they look at the bytes read so far and say "need more",
//! "done, consumed N" or "invalid". The driver in `proxy.rs` reads with a deadline and a
//! size cap around them. [`verdict`] then decides, from what was read and what the
//! client's socket shows, whether the client gets a server connection at all.

use std::net::SocketAddr;

use ppp::PartialResult;

use crate::peer::Peer;

/// Most bytes read while looking for a ClientHello: a post-quantum key share makes a hello
/// of a few KiB; a hello may legally span records up to 64 KiB.
pub const MAX_HELLO: usize = 64 * 1024;
/// A PROXY v2 header with TLVs fits well within this; v1 is at most 107 bytes.
pub const MAX_PROXY_HEADER: usize = 4096;
/// The longest PROXY v1 header, its CRLF included (the specification's limit).
const MAX_PROXY_V1: usize = 107;

/// Every reason [`proxy_header`] refuses a header for.
pub const PROXY_REFUSALS: &[&str] = &["bad_proxy_header"];
/// Every reason [`client_hello_sni`] refuses a ClientHello for.
pub const HELLO_REFUSALS: &[&str] = &[
    "not_tls",
    "not_client_hello",
    "hello_too_large",
    "bad_client_hello",
];

/// What a look at the first bytes found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Inspect<T> {
    /// Not enough bytes yet.
    NeedMore,
    /// Found; `consumed` bytes belong to what was parsed.
    Done {
        /// The result.
        value: T,
        /// Bytes it took.
        consumed: usize,
    },
    /// Not what was expected; the connection is closed and counted under `reason`.
    Invalid(&'static str),
}

/// The addresses a PROXY header carries; `None` for `LOCAL`/`UNKNOWN` (health checks of the
/// balancer in front), in which case the connection's own addresses are used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProxiedAddrs {
    /// The original client.
    pub source: Option<SocketAddr>,
    /// The address the client connected to.
    pub destination: Option<SocketAddr>,
}

/// Parses a PROXY protocol v1 or v2 header at the start of `buf`, strictly.
pub fn proxy_header(buf: &[u8]) -> Inspect<ProxiedAddrs> {
    if buf.is_empty() {
        return Inspect::NeedMore;
    }
    // Reject early on a first byte that starts neither version, so garbage fails fast.
    if buf[0] != b'P' && buf[0] != 0x0d {
        return Inspect::Invalid("bad_proxy_header");
    }
    // A v1 header is one line of at most 107 bytes: wait for its end before parsing, since
    // a line cut inside a field looks like a bad field rather than a short one. The end is
    // looked for only within those 107 bytes (ppp checks the length only up to its first CR).
    if buf[0] == b'P' {
        let line = &buf[..buf.len().min(MAX_PROXY_V1)];
        let Some(end) = line.windows(2).position(|w| w == b"\r\n") else {
            let prefix_ok = b"PROXY ".starts_with(&buf[..buf.len().min(6)]);
            return if !prefix_ok || buf.len() >= MAX_PROXY_V1 {
                Inspect::Invalid("bad_proxy_header")
            } else {
                Inspect::NeedMore
            };
        };
        return match ppp::v1::Header::try_from(&buf[..end + 2]) {
            Ok(h) => Inspect::Done {
                value: v1_addrs(&h.addresses),
                consumed: end + 2,
            },
            Err(_) => Inspect::Invalid("bad_proxy_header"),
        };
    }
    let result = ppp::HeaderResult::parse(buf);
    if result.is_incomplete() {
        return if buf.len() >= MAX_PROXY_HEADER {
            Inspect::Invalid("bad_proxy_header")
        } else {
            Inspect::NeedMore
        };
    }
    match result {
        ppp::HeaderResult::V2(Ok(h)) => {
            let addrs = match (h.command, h.addresses) {
                (ppp::v2::Command::Proxy, ppp::v2::Addresses::IPv4(a)) => ProxiedAddrs {
                    source: Some(SocketAddr::new(a.source_address.into(), a.source_port)),
                    destination: Some(SocketAddr::new(
                        a.destination_address.into(),
                        a.destination_port,
                    )),
                },
                (ppp::v2::Command::Proxy, ppp::v2::Addresses::IPv6(a)) => ProxiedAddrs {
                    source: Some(SocketAddr::new(a.source_address.into(), a.source_port)),
                    destination: Some(SocketAddr::new(
                        a.destination_address.into(),
                        a.destination_port,
                    )),
                },
                (ppp::v2::Command::Local, _) | (_, ppp::v2::Addresses::Unspecified) => {
                    ProxiedAddrs {
                        source: None,
                        destination: None,
                    }
                }
                // UNIX sockets and datagrams have no meaning in front of a TCP balancer.
                _ => return Inspect::Invalid("bad_proxy_header"),
            };
            if h.protocol == ppp::v2::Protocol::Datagram || !tlvs_fit(&h) {
                return Inspect::Invalid("bad_proxy_header");
            }
            Inspect::Done {
                value: addrs,
                consumed: h.len(),
            }
        }
        ppp::HeaderResult::V1(_) | ppp::HeaderResult::V2(Err(_)) => {
            Inspect::Invalid("bad_proxy_header")
        }
    }
}

/// Whether every TLV of a v2 header lies within the header's length: `ppp` parses TLVs only
/// when asked, so one that claims more bytes than the header holds would pass unnoticed.
fn tlvs_fit(h: &ppp::v2::Header<'_>) -> bool {
    h.tlvs().all(|t| t.is_ok())
}

fn v1_addrs(a: &ppp::v1::Addresses) -> ProxiedAddrs {
    match a {
        ppp::v1::Addresses::Tcp4(a) => ProxiedAddrs {
            source: Some(SocketAddr::new(a.source_address.into(), a.source_port)),
            destination: Some(SocketAddr::new(
                a.destination_address.into(),
                a.destination_port,
            )),
        },
        ppp::v1::Addresses::Tcp6(a) => ProxiedAddrs {
            source: Some(SocketAddr::new(a.source_address.into(), a.source_port)),
            destination: Some(SocketAddr::new(
                a.destination_address.into(),
                a.destination_port,
            )),
        },
        ppp::v1::Addresses::Unknown => ProxiedAddrs {
            source: None,
            destination: None,
        },
    }
}

/// Whether a client whose first bytes were read gets a server connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Open a server connection.
    Connect,
    /// A PROXY header, then a close or reset before any payload: the health check of a
    /// balancer in front (HAProxy's `check send-proxy`, and others alike). No server
    /// connection; the connection ends as `proxy_check`.
    ProxyCheck,
    /// Reset (or closed both ways) before a server was chosen: nobody to serve; the
    /// connection ends as `client_gone`.
    ClientGone,
}

/// Decides whether to connect a client to a server. `header`: a PROXY header was read;
/// `payload`: the bytes read after it (or from the start, without one); `peer`: what the
/// client's socket says now.
///
/// A close after payload, or without a header, still connects: a client that closed its
/// sending side may be waiting for what a server says first (or for the answer to what it
/// sent). A header with nothing after it carries nothing for a server to answer, so a close
/// there is a check, as HAProxy's and other balancers' checks with a PROXY header are.
pub fn verdict(header: bool, payload: usize, peer: Peer) -> Verdict {
    match peer {
        Peer::Here => Verdict::Connect,
        Peer::Gone | Peer::Finished if header && payload == 0 => Verdict::ProxyCheck,
        Peer::Gone => Verdict::ClientGone,
        Peer::Finished => Verdict::Connect,
    }
}

/// Builds a PROXY header announcing a connection from `source` to `destination`. Mixed
/// families are sent as IPv6, with the IPv4 address mapped.
pub fn encode_proxy_header(
    version: crate::config::ProxyVersion,
    source: SocketAddr,
    destination: SocketAddr,
) -> Vec<u8> {
    let (source, destination) = same_family(source, destination);
    match version {
        crate::config::ProxyVersion::V1 => {
            let addrs: ppp::v1::Addresses = (source, destination).into();
            addrs.to_string().into_bytes()
        }
        crate::config::ProxyVersion::V2 => {
            let builder = ppp::v2::Builder::with_addresses(
                ppp::v2::Version::Two | ppp::v2::Command::Proxy,
                ppp::v2::Protocol::Stream,
                (source, destination),
            );
            // Building into a Vec cannot fail: the only error source is the writer.
            builder.build().unwrap_or_default()
        }
    }
}

/// A `LOCAL` PROXY header (v2) or `UNKNOWN` (v1): what health checks send, since they
/// carry no client.
pub fn encode_local_header(version: crate::config::ProxyVersion) -> Vec<u8> {
    match version {
        crate::config::ProxyVersion::V1 => b"PROXY UNKNOWN\r\n".to_vec(),
        crate::config::ProxyVersion::V2 => ppp::v2::Builder::new(
            ppp::v2::Version::Two | ppp::v2::Command::Local,
            ppp::v2::Protocol::Unspecified as u8,
        )
        .build()
        .unwrap_or_default(),
    }
}

fn same_family(a: SocketAddr, b: SocketAddr) -> (SocketAddr, SocketAddr) {
    let v6 = |s: SocketAddr| match s {
        SocketAddr::V4(v4) => SocketAddr::new(v4.ip().to_ipv6_mapped().into(), v4.port()),
        v6 => v6,
    };
    if a.is_ipv4() == b.is_ipv4() {
        (a, b)
    } else {
        (v6(a), v6(b))
    }
}

/// Parses a TLS ClientHello at the start of `buf` (possibly split over several records)
/// and returns its server name, if it sent one.
pub fn client_hello_sni(buf: &[u8]) -> Inspect<Option<String>> {
    use tls_parser::{TlsExtension, TlsMessage, TlsMessageHandshake};
    if buf.is_empty() {
        return Inspect::NeedMore;
    }
    // Handshake content type: anything else is not TLS (or not a first flight).
    if buf[0] != 0x16 {
        return Inspect::Invalid("not_tls");
    }
    // Judge the handshake header as soon as it arrives, before its record is complete, so
    // a hello that announces an absurd size is refused at once instead of awaited.
    if buf.len() >= 2 && buf[1] != 3 {
        return Inspect::Invalid("not_tls");
    }
    if buf.len() >= 9 {
        if buf[5] != 1 {
            return Inspect::Invalid("not_client_hello");
        }
        let msg_len =
            (usize::from(buf[6]) << 16) | (usize::from(buf[7]) << 8) | usize::from(buf[8]);
        if msg_len + 4 > MAX_HELLO {
            return Inspect::Invalid("hello_too_large");
        }
    }
    let mut handshake: Vec<u8> = Vec::new();
    let mut off = 0;
    loop {
        let rest = &buf[off..];
        if rest.len() < 5 {
            return need_more_hello(buf);
        }
        if rest[0] != 0x16 {
            return Inspect::Invalid("not_tls");
        }
        // TLS 1.0-1.3 record versions are 3.1..=3.3 (1.3 also writes 3.1 or 3.3 here).
        if rest[1] != 3 {
            return Inspect::Invalid("not_tls");
        }
        let len = usize::from(u16::from_be_bytes([rest[3], rest[4]]));
        if len == 0 || len > 16384 {
            return Inspect::Invalid("bad_client_hello");
        }
        if rest.len() < 5 + len {
            return need_more_hello(buf);
        }
        handshake.extend_from_slice(&rest[5..5 + len]);
        off += 5 + len;
        if handshake.len() >= 4 {
            if handshake[0] != 1 {
                return Inspect::Invalid("not_client_hello");
            }
            let msg_len = (usize::from(handshake[1]) << 16)
                | (usize::from(handshake[2]) << 8)
                | usize::from(handshake[3]);
            if msg_len + 4 > MAX_HELLO {
                return Inspect::Invalid("hello_too_large");
            }
            if handshake.len() >= msg_len + 4 {
                let parsed = tls_parser::parse_tls_message_handshake(&handshake[..msg_len + 4]);
                let Ok((_, TlsMessage::Handshake(TlsMessageHandshake::ClientHello(hello)))) =
                    parsed
                else {
                    return Inspect::Invalid("bad_client_hello");
                };
                let mut sni = None;
                if let Some(ext) = hello.ext {
                    let Ok((_, exts)) = tls_parser::parse_tls_client_hello_extensions(ext) else {
                        return Inspect::Invalid("bad_client_hello");
                    };
                    for e in exts {
                        if let TlsExtension::SNI(names) = e {
                            // Host name type 0; the name must be ASCII without a trailing dot.
                            sni = names
                                .iter()
                                .find(|(t, _)| t.0 == 0)
                                .and_then(|(_, n)| std::str::from_utf8(n).ok())
                                .map(|n| n.trim_end_matches('.').to_ascii_lowercase());
                        }
                    }
                }
                return Inspect::Done {
                    value: sni,
                    consumed: off,
                };
            }
        }
    }
}

fn need_more_hello<T>(buf: &[u8]) -> Inspect<T> {
    if buf.len() >= MAX_HELLO {
        Inspect::Invalid("hello_too_large")
    } else {
        Inspect::NeedMore
    }
}

#[cfg(test)]
mod tests;
