//! Receiving: decoding what a raw socket delivered, and keepalived's per-instance checks
//! of a decoded advert. Each refusal is a [`DropReason`].

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::*;

/// Which checksum convention a received v3/IPv4 advert matched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChecksumMatch {
    /// v2, or v3 over IPv6: there is only one convention.
    Only,
    /// v3/IPv4 with the IPv4 pseudo-header (keepalived).
    PseudoHeader,
    /// v3/IPv4 over the message only (RFC 9568).
    Rfc9568,
}

/// A received advert with what the IP layer said about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Received {
    /// The decoded advert.
    pub advert: Advert,
    /// IP source.
    pub src: IpAddr,
    /// IP destination (multicast group or our unicast address).
    pub dst: IpAddr,
    /// TTL / hop limit on arrival.
    pub ttl: u8,
    /// Which checksum convention matched.
    pub checksum: ChecksumMatch,
}

/// Parses a whole IPv4 packet as a raw IPv4 socket delivers it (header included).
pub fn decode_ipv4(packet: &[u8]) -> Result<Received, DropReason> {
    if packet.len() < 20 {
        return Err(DropReason::TooShort);
    }
    if packet[0] >> 4 != 4 {
        return Err(DropReason::BadIpHeader);
    }
    // Use the IHL: options are legal and a 20-byte assumption misparses them.
    let ihl = usize::from(packet[0] & 0x0f) * 4;
    if ihl < 20 || packet.len() < ihl {
        return Err(DropReason::BadIpHeader);
    }
    let tot_len = usize::from(u16::from_be_bytes([packet[2], packet[3]]));
    // keepalived: ip.tot_len must equal what was received.
    if tot_len != packet.len() {
        return Err(DropReason::BadIpHeader);
    }
    if packet[9] != IPPROTO_VRRP {
        return Err(DropReason::BadIpHeader);
    }
    let ttl = packet[8];
    let src = IpAddr::V4(Ipv4Addr::new(
        packet[12], packet[13], packet[14], packet[15],
    ));
    let dst = IpAddr::V4(Ipv4Addr::new(
        packet[16], packet[17], packet[18], packet[19],
    ));
    decode_vrrp(&packet[ihl..], src, dst, ttl)
}

/// Parses a VRRP message whose IP envelope the caller already took apart (IPv6 raw
/// sockets deliver only the payload; source, destination and hop limit come from cmsgs).
pub fn decode_vrrp(msg: &[u8], src: IpAddr, dst: IpAddr, ttl: u8) -> Result<Received, DropReason> {
    if msg.len() < 8 {
        return Err(DropReason::TooShort);
    }
    let version = match msg[0] >> 4 {
        2 => Version::V2,
        3 => Version::V3,
        _ => return Err(DropReason::BadVersion),
    };
    if msg[0] & 0x0f != 1 {
        return Err(DropReason::BadType);
    }
    let v6 = src.is_ipv6();
    if v6 && version == Version::V2 {
        return Err(DropReason::BadVersion);
    }
    let count = usize::from(msg[3]);
    if msg.len() != expected_len(version, v6, count) {
        return Err(DropReason::BadLength);
    }
    let (checksum_ok, matched) = match version {
        Version::V2 => (checksum(&[msg]) == 0, ChecksumMatch::Only),
        Version::V3 if v6 => {
            let ph = pseudo_header(src, dst, msg.len());
            (checksum(&[&ph, msg]) == 0, ChecksumMatch::Only)
        }
        Version::V3 => {
            let ph = pseudo_header(src, dst, msg.len());
            if checksum(&[&ph, msg]) == 0 {
                (true, ChecksumMatch::PseudoHeader)
            } else {
                (checksum(&[msg]) == 0, ChecksumMatch::Rfc9568)
            }
        }
    };
    if !checksum_ok {
        return Err(DropReason::BadChecksum);
    }
    let (interval_field, auth_type) = match version {
        Version::V2 => (u16::from(msg[5]), msg[4]),
        Version::V3 => (u16::from_be_bytes([msg[4], msg[5]]) & 0x0fff, 0),
    };
    if interval_field == 0 {
        return Err(DropReason::BadInterval);
    }
    // Only unicast peers may use other sources (keepalived's unicast_src over IPv6).
    if let (IpAddr::V6(s), IpAddr::V6(d)) = (src, dst)
        && d.is_multicast()
        && !s.is_unicast_link_local()
    {
        return Err(DropReason::SourceNotLinkLocal);
    }
    let mut addrs = Vec::with_capacity(count);
    let mut off = 8;
    for _ in 0..count {
        if v6 {
            let mut o = [0u8; 16];
            o.copy_from_slice(&msg[off..off + 16]);
            addrs.push(IpAddr::V6(Ipv6Addr::from(o)));
            off += 16;
        } else {
            addrs.push(IpAddr::V4(Ipv4Addr::new(
                msg[off],
                msg[off + 1],
                msg[off + 2],
                msg[off + 3],
            )));
            off += 4;
        }
    }
    let auth = match (version, auth_type) {
        (Version::V3, _) => Auth::None,
        (Version::V2, 0) => Auth::None,
        (Version::V2, _) => {
            let mut d = [0u8; V2_AUTH_LEN];
            d.copy_from_slice(&msg[off..off + V2_AUTH_LEN]);
            // Remember a non-PASS type as PASS with its bytes; the instance check
            // compares type and data, so anything but a matching PASS still drops.
            if auth_type == 1 {
                Auth::Pass(d)
            } else {
                return Err(DropReason::AuthMismatch);
            }
        }
    };
    Ok(Received {
        advert: Advert {
            version,
            vrid: msg[1],
            priority: msg[2],
            interval_field,
            addrs,
            auth,
        },
        src,
        dst,
        ttl,
        checksum: matched,
    })
}

/// What a receiving instance checks a decoded advert against (the receive checks in
/// docs/architecture.md).
#[derive(Debug, Clone)]
pub struct RxExpect<'a> {
    /// Configured version.
    pub version: Version,
    /// Configured v2 interval field (seconds); ignored for v3.
    pub interval_field: u16,
    /// Our advertised VIP list.
    pub addrs: &'a [IpAddr],
    /// Our v2 auth.
    pub auth: &'a Auth,
    /// Unicast peers; empty means multicast.
    pub unicast_peers: &'a [IpAddr],
    /// Addresses we send from (our own adverts are dropped if they loop back).
    pub own: &'a [IpAddr],
}

/// Applies keepalived's per-instance receive checks to a decoded advert.
pub fn check(rx: &Received, want: &RxExpect<'_>) -> Result<(), DropReason> {
    if want.own.contains(&rx.src) {
        return Err(DropReason::Own);
    }
    let multicast = match rx.dst {
        IpAddr::V4(d) => d.is_multicast(),
        IpAddr::V6(d) => d.is_multicast(),
    };
    if want.unicast_peers.is_empty() {
        if !multicast {
            return Err(DropReason::CastMismatch);
        }
    } else {
        if multicast {
            return Err(DropReason::CastMismatch);
        }
        if !want.unicast_peers.contains(&rx.src) {
            return Err(DropReason::UnknownPeer);
        }
    }
    // keepalived skips the TTL check for unicast (the peer may be routed).
    if multicast && rx.ttl != VRRP_TTL {
        return Err(DropReason::BadTtl);
    }
    if rx.advert.version != want.version {
        return Err(DropReason::BadVersion);
    }
    if want.version == Version::V2 {
        if rx.advert.auth.type_byte() != want.auth.type_byte() {
            return Err(DropReason::AuthMismatch);
        }
        if !ct_eq(&rx.advert.auth.data(), &want.auth.data()) {
            return Err(DropReason::AuthMismatch);
        }
        if rx.advert.interval_field != want.interval_field {
            return Err(DropReason::IntervalMismatch);
        }
    }
    if rx.advert.addrs.len() != want.addrs.len()
        || !want.addrs.iter().all(|a| rx.advert.addrs.contains(a))
    {
        return Err(DropReason::AddressMismatch);
    }
    Ok(())
}

/// Constant-time comparison, so PASS auth leaks nothing through timing.
fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
