//! VRRP advertisement codec: v2 (RFC 3768) and v3 (RFC 5798 / RFC 9568), IPv4 and IPv6,
//! byte-for-byte as keepalived 2.2.7 sends and checks them (reference/vrrp.md §1.1–1.3).
//!
//! Pure functions only: no sockets, no clock. The driver hands in raw bytes plus what the
//! kernel told it (TTL/hop limit, source, destination) and gets back an [`Advert`] or the
//! [`DropReason`] that the metrics count.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Duration;

/// IP protocol number of VRRP (and, unfortunately, of CARP).
pub const IPPROTO_VRRP: u8 = 112;
/// IPv4 multicast group for VRRP adverts.
pub const MCAST_V4: Ipv4Addr = Ipv4Addr::new(224, 0, 0, 18);
/// IPv6 multicast group for VRRP adverts.
pub const MCAST_V6: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 0x12);
/// TTL / hop limit every advert carries and every multicast advert must arrive with.
pub const VRRP_TTL: u8 = 255;
/// Length of the VRRPv2 authentication trailer, present even without authentication.
pub const V2_AUTH_LEN: usize = 8;

/// Protocol version of an advert.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Version {
    /// VRRPv2 (RFC 3768): IPv4 only, whole-second intervals, 8-byte auth trailer.
    V2,
    /// VRRPv3 (RFC 5798/9568): IPv4 or IPv6, intervals in centiseconds.
    V3,
}

impl Version {
    fn nibble(self) -> u8 {
        match self {
            Version::V2 => 2,
            Version::V3 => 3,
        }
    }
}

/// How the VRRPv3-over-IPv4 checksum is computed (reference §1.2: the trap).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ChecksumMode {
    /// IPv4 pseudo-header plus message: keepalived 2.2.7, FRR and Wireshark's default.
    PseudoHeader,
    /// Message only, as RFC 9568 says (Cisco, Juniper, Arista).
    #[serde(rename = "rfc9568")]
    Rfc9568,
}

/// VRRPv2 authentication (keepalived's non-RFC `auth_type PASS`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Auth {
    /// Auth type 0, eight zero bytes of auth data.
    None,
    /// Auth type 1 with the password zero-padded to eight bytes.
    Pass([u8; V2_AUTH_LEN]),
}

impl Auth {
    /// Builds PASS auth from a password of at most 8 bytes (longer is cut, as keepalived does).
    pub fn pass(password: &str) -> Auth {
        let mut data = [0u8; V2_AUTH_LEN];
        for (d, s) in data.iter_mut().zip(password.as_bytes()) {
            *d = *s;
        }
        Auth::Pass(data)
    }
    fn type_byte(&self) -> u8 {
        match self {
            Auth::None => 0,
            Auth::Pass(_) => 1,
        }
    }
    fn data(&self) -> [u8; V2_AUTH_LEN] {
        match self {
            Auth::None => [0; V2_AUTH_LEN],
            Auth::Pass(d) => *d,
        }
    }
}

/// One decoded (or to-be-encoded) VRRP advertisement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Advert {
    /// Protocol version.
    pub version: Version,
    /// Virtual router id, 1..=255.
    pub vrid: u8,
    /// Sender's priority; 0 means "the master is stopping".
    pub priority: u8,
    /// Raw interval field: seconds in v2, centiseconds (12 bits) in v3.
    pub interval_field: u16,
    /// Virtual addresses, all of one family.
    pub addrs: Vec<IpAddr>,
    /// v2 authentication; always [`Auth::None`] for v3.
    pub auth: Auth,
}

impl Advert {
    /// The advertisement interval the packet announces.
    pub fn interval(&self) -> Duration {
        match self.version {
            Version::V2 => Duration::from_secs(u64::from(self.interval_field)),
            Version::V3 => Duration::from_millis(u64::from(self.interval_field) * 10),
        }
    }

    /// Length of the VRRP message (no IP header) this advert encodes to.
    pub fn encoded_len(&self) -> usize {
        expected_len(self.version, self.is_v6(), self.addrs.len())
    }

    fn is_v6(&self) -> bool {
        matches!(self.addrs.first(), Some(IpAddr::V6(_)))
    }

    /// Encodes the VRRP message with its checksum. `src`/`dst` are the IP addresses the
    /// packet will carry; they enter the pseudo-header for v3 (IPv6 always, IPv4 in
    /// [`ChecksumMode::PseudoHeader`]).
    pub fn encode(&self, src: IpAddr, dst: IpAddr, mode: ChecksumMode) -> Vec<u8> {
        let mut buf = Vec::with_capacity(self.encoded_len());
        buf.push((self.version.nibble() << 4) | 1);
        buf.push(self.vrid);
        buf.push(self.priority);
        // The count field is one byte; config validation caps the VIP list well below 255.
        buf.push(u8::try_from(self.addrs.len()).unwrap_or(u8::MAX));
        match self.version {
            Version::V2 => {
                buf.push(self.auth.type_byte());
                buf.push(u8::try_from(self.interval_field).unwrap_or(u8::MAX));
            }
            Version::V3 => {
                let f = self.interval_field & 0x0fff;
                buf.extend_from_slice(&f.to_be_bytes());
            }
        }
        buf.extend_from_slice(&[0, 0]);
        for a in &self.addrs {
            match a {
                IpAddr::V4(a) => buf.extend_from_slice(&a.octets()),
                IpAddr::V6(a) => buf.extend_from_slice(&a.octets()),
            }
        }
        if self.version == Version::V2 {
            buf.extend_from_slice(&self.auth.data());
        }
        let sum = match checksum_input(self.version, src, dst, mode, buf.len()) {
            Some(ph) => checksum(&[&ph, &buf]),
            None => checksum(&[&buf]),
        };
        buf[6..8].copy_from_slice(&sum.to_be_bytes());
        buf
    }
}

/// Why a received packet was dropped. Each reason is a metric label; none is logged per
/// packet (CARP shares protocol 112 and must drop quietly).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
pub enum DropReason {
    /// Shorter than an IP header or a VRRP header.
    #[error("packet too short")]
    TooShort,
    /// IPv4 header malformed (version, IHL, protocol) or total length disagrees.
    #[error("bad IP header")]
    BadIpHeader,
    /// TTL / hop limit was not 255 on a multicast advert.
    #[error("TTL/hop limit not 255")]
    BadTtl,
    /// Version nibble is not the one configured (or not 2/3 at all).
    #[error("wrong VRRP version")]
    BadVersion,
    /// Type is not 1 (advertisement).
    #[error("not an advertisement")]
    BadType,
    /// Length differs from 8 + addresses (+ 8 for v2): keepalived's exact-length check.
    #[error("length does not match the address count")]
    BadLength,
    /// Checksum wrong under every accepted convention.
    #[error("bad checksum")]
    BadChecksum,
    /// No instance on this interface has this VRID.
    #[error("unknown VRID")]
    UnknownVrid,
    /// v2 auth type or password differs.
    #[error("authentication mismatch")]
    AuthMismatch,
    /// v2 advert interval differs from ours (v3 adopts the master's instead).
    #[error("advert interval mismatch")]
    IntervalMismatch,
    /// Address count or set differs from our VIP list.
    #[error("virtual address list mismatch")]
    AddressMismatch,
    /// Unicast advert on a multicast instance or the other way round.
    #[error("unicast/multicast mismatch")]
    CastMismatch,
    /// Unicast advert from an address not in `unicast_peers`.
    #[error("source not a configured unicast peer")]
    UnknownPeer,
    /// Our own advert looped back.
    #[error("own advert")]
    Own,
    /// Advert interval 0: no timer can be derived from it, and adopting it would make a
    /// v3 backup declare the master down at once (one forged packet, one takeover).
    #[error("advert interval 0")]
    BadInterval,
    /// A multicast v3 advert over IPv6 whose source is not link-local (RFC 5798 5.1.2.2).
    #[error("IPv6 source not link-local")]
    SourceNotLinkLocal,
}

impl DropReason {
    /// Every reason, for pre-registering metric labels.
    pub const ALL: [DropReason; 16] = [
        DropReason::TooShort,
        DropReason::BadIpHeader,
        DropReason::BadTtl,
        DropReason::BadVersion,
        DropReason::BadType,
        DropReason::BadLength,
        DropReason::BadChecksum,
        DropReason::UnknownVrid,
        DropReason::AuthMismatch,
        DropReason::IntervalMismatch,
        DropReason::AddressMismatch,
        DropReason::CastMismatch,
        DropReason::UnknownPeer,
        DropReason::Own,
        DropReason::BadInterval,
        DropReason::SourceNotLinkLocal,
    ];

    /// Stable snake_case label for the `reason` metric label.
    pub fn label(self) -> &'static str {
        match self {
            DropReason::TooShort => "too_short",
            DropReason::BadIpHeader => "bad_ip_header",
            DropReason::BadTtl => "bad_ttl",
            DropReason::BadVersion => "bad_version",
            DropReason::BadType => "bad_type",
            DropReason::BadLength => "bad_length",
            DropReason::BadChecksum => "bad_checksum",
            DropReason::UnknownVrid => "unknown_vrid",
            DropReason::AuthMismatch => "auth_mismatch",
            DropReason::IntervalMismatch => "interval_mismatch",
            DropReason::AddressMismatch => "address_mismatch",
            DropReason::CastMismatch => "cast_mismatch",
            DropReason::UnknownPeer => "unknown_peer",
            DropReason::Own => "own",
            DropReason::BadInterval => "bad_interval",
            DropReason::SourceNotLinkLocal => "source_not_link_local",
        }
    }
}

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

/// Exact VRRP message length keepalived expects (`expected_vrrp_pkt_len`).
pub fn expected_len(version: Version, v6: bool, count: usize) -> usize {
    let per = if v6 { 16 } else { 4 };
    8 + per * count
        + match version {
            Version::V2 => V2_AUTH_LEN,
            Version::V3 => 0,
        }
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

/// What a receiving instance checks a decoded advert against (reference §1.3).
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

fn checksum_input(
    version: Version,
    src: IpAddr,
    dst: IpAddr,
    mode: ChecksumMode,
    len: usize,
) -> Option<Vec<u8>> {
    match (version, src) {
        (Version::V2, _) => None,
        (Version::V3, IpAddr::V6(_)) => Some(pseudo_header(src, dst, len)),
        (Version::V3, IpAddr::V4(_)) => match mode {
            ChecksumMode::PseudoHeader => Some(pseudo_header(src, dst, len)),
            ChecksumMode::Rfc9568 => None,
        },
    }
}

/// Pseudo-header for the v3 checksum: RFC 768 style for IPv4 (src, dst, 0, 112, len),
/// RFC 8200 §8.1 for IPv6 (src, dst, 32-bit len, 3 zero bytes, next header 112).
pub fn pseudo_header(src: IpAddr, dst: IpAddr, len: usize) -> Vec<u8> {
    let mut ph = Vec::with_capacity(40);
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            ph.extend_from_slice(&s.octets());
            ph.extend_from_slice(&d.octets());
            ph.push(0);
            ph.push(IPPROTO_VRRP);
            ph.extend_from_slice(&u16::try_from(len).unwrap_or(u16::MAX).to_be_bytes());
        }
        (s, d) => {
            ph.extend_from_slice(&v6_octets(s));
            ph.extend_from_slice(&v6_octets(d));
            ph.extend_from_slice(&u32::try_from(len).unwrap_or(u32::MAX).to_be_bytes());
            ph.extend_from_slice(&[0, 0, 0, IPPROTO_VRRP]);
        }
    }
    ph
}

fn v6_octets(a: IpAddr) -> [u8; 16] {
    match a {
        IpAddr::V6(a) => a.octets(),
        IpAddr::V4(a) => a.to_ipv6_mapped().octets(),
    }
}

/// RFC 1071 Internet checksum over the concatenation of `parts` (each even-length except
/// possibly the last, which holds for every VRRP message and pseudo-header).
pub fn checksum(parts: &[&[u8]]) -> u16 {
    let mut sum: u32 = 0;
    for part in parts {
        let mut chunks = part.chunks_exact(2);
        for c in &mut chunks {
            sum += u32::from(u16::from_be_bytes([c[0], c[1]]));
        }
        if let [last] = chunks.remainder() {
            sum += u32::from(*last) << 8;
        }
    }
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// Builds a gratuitous ARP frame (Ethernet + ARP request) the way keepalived sends it:
/// broadcast destination, sender = target = the VIP, target MAC all ones.
pub fn garp_frame(mac: [u8; 6], vip: Ipv4Addr) -> [u8; 42] {
    let mut f = [0u8; 42];
    f[0..6].copy_from_slice(&[0xff; 6]);
    f[6..12].copy_from_slice(&mac);
    f[12..14].copy_from_slice(&0x0806u16.to_be_bytes());
    f[14..16].copy_from_slice(&1u16.to_be_bytes()); // Ethernet
    f[16..18].copy_from_slice(&0x0800u16.to_be_bytes()); // IPv4
    f[18] = 6;
    f[19] = 4;
    f[20..22].copy_from_slice(&1u16.to_be_bytes()); // request
    f[22..28].copy_from_slice(&mac);
    f[28..32].copy_from_slice(&vip.octets());
    f[32..38].copy_from_slice(&[0xff; 6]);
    f[38..42].copy_from_slice(&vip.octets());
    f
}

/// Builds an unsolicited neighbour advertisement frame (Ethernet + IPv6 + ICMPv6 136)
/// as keepalived does: src = the VIP, dst ff02::1, hop limit 255, O=1, S=0, R=0, with a
/// target link-layer address option.
pub fn unsolicited_na_frame(mac: [u8; 6], vip: Ipv6Addr) -> Vec<u8> {
    let all_nodes = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1);
    let mut icmp = Vec::with_capacity(32);
    icmp.extend_from_slice(&[136, 0, 0, 0]);
    icmp.extend_from_slice(&[0x20, 0, 0, 0]); // O flag
    icmp.extend_from_slice(&vip.octets());
    icmp.extend_from_slice(&[2, 1]); // target link-layer address, 8 bytes
    icmp.extend_from_slice(&mac);
    let len = icmp.len();
    let mut ph = Vec::with_capacity(40);
    ph.extend_from_slice(&vip.octets());
    ph.extend_from_slice(&all_nodes.octets());
    ph.extend_from_slice(&u32::try_from(len).unwrap_or(0).to_be_bytes());
    ph.extend_from_slice(&[0, 0, 0, 58]);
    let sum = checksum(&[&ph, &icmp]);
    icmp[2..4].copy_from_slice(&sum.to_be_bytes());

    let mut f = Vec::with_capacity(14 + 40 + len);
    f.extend_from_slice(&[0x33, 0x33, 0, 0, 0, 1]);
    f.extend_from_slice(&mac);
    f.extend_from_slice(&0x86ddu16.to_be_bytes());
    f.extend_from_slice(&[0x60, 0, 0, 0]);
    f.extend_from_slice(&u16::try_from(len).unwrap_or(0).to_be_bytes());
    f.push(58);
    f.push(255);
    f.extend_from_slice(&vip.octets());
    f.extend_from_slice(&all_nodes.octets());
    f.extend_from_slice(&icmp);
    f
}

#[cfg(test)]
mod tests;
