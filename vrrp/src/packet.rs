//! VRRP advertisement codec: v2 (RFC 3768) and v3 (RFC 5798 / RFC 9568), IPv4 and IPv6,
//! byte-for-byte as keepalived 2.2.7 sends and checks them (docs/architecture.md, VRRP on the
//! wire).
//!
//! Pure functions only: no sockets, no clock. The driver hands in raw bytes plus what the
//! kernel told it (TTL/hop limit, source, destination) and gets back an [`Advert`] or the
//! [`DropReason`] that the metrics count.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Duration;

mod frames;
mod receive;

pub use frames::{garp_frame, unsolicited_na_frame};
pub use receive::{ChecksumMatch, Received, RxExpect, check, decode_ipv4, decode_vrrp};

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

/// How the VRRPv3-over-IPv4 checksum is computed: keepalived includes an IPv4
/// pseudo-header, RFC 9568 does not, and keepalived rejects the RFC's form.
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

/// Exact VRRP message length keepalived expects (`expected_vrrp_pkt_len`).
pub fn expected_len(version: Version, v6: bool, count: usize) -> usize {
    let per = if v6 { 16 } else { 4 };
    8 + per * count
        + match version {
            Version::V2 => V2_AUTH_LEN,
            Version::V3 => 0,
        }
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

#[cfg(test)]
mod tests;
