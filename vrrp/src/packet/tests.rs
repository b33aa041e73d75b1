//! Codec tests: golden bytes captured from keepalived 2.2.7, both checksum conventions, and
//! every receive check keepalived applies (docs/architecture.md, VRRP on the wire).

use super::*;

fn v4(s: &str) -> IpAddr {
    IpAddr::V4(s.parse().unwrap())
}
fn v6(s: &str) -> IpAddr {
    IpAddr::V6(s.parse().unwrap())
}
fn hex(s: &str) -> Vec<u8> {
    s.split_whitespace()
        .map(|b| u8::from_str_radix(b, 16).unwrap())
        .collect()
}
fn mcast4() -> IpAddr {
    IpAddr::V4(MCAST_V4)
}
fn mcast6() -> IpAddr {
    IpAddr::V6(MCAST_V6)
}

/// Wraps a VRRP message in an IPv4 header as keepalived sends it (TOS 0xc0, TTL 255).
fn ipv4_packet(src: Ipv4Addr, dst: Ipv4Addr, ttl: u8, payload: &[u8]) -> Vec<u8> {
    let total = 20 + payload.len();
    let mut p = vec![0x45, 0xc0];
    p.extend_from_slice(&(total as u16).to_be_bytes());
    p.extend_from_slice(&[0, 0, 0, 0, ttl, 112, 0, 0]);
    p.extend_from_slice(&src.octets());
    p.extend_from_slice(&dst.octets());
    let c = checksum(&[&p]);
    p[10..12].copy_from_slice(&c.to_be_bytes());
    p.extend_from_slice(payload);
    p
}

const GOLDEN_V2: &str = "21 33 64 01 00 01 b8 65 c0 00 02 64 00 00 00 00 00 00 00 00";
const GOLDEN_V2_SHUTDOWN: &str = "21 33 00 01 00 01 1c 66 c0 00 02 64 00 00 00 00 00 00 00 00";
const GOLDEN_V3_4: &str = "31 34 64 01 00 0a 05 c9 c0 00 02 65";

fn golden_v3_6() -> Vec<u8> {
    let mut b = hex("31 35 64 02 00 0a 40 00");
    b.extend_from_slice(&"fe80::53".parse::<Ipv6Addr>().unwrap().octets());
    b.extend_from_slice(&"2001:db8::101".parse::<Ipv6Addr>().unwrap().octets());
    b
}

#[test]
fn golden_v2_encode_and_decode() {
    let ad = Advert {
        version: Version::V2,
        vrid: 51,
        priority: 100,
        interval_field: 1,
        addrs: vec![v4("192.0.2.100")],
        auth: Auth::None,
    };
    let bytes = ad.encode(v4("192.0.2.2"), mcast4(), ChecksumMode::PseudoHeader);
    assert_eq!(bytes, hex(GOLDEN_V2));
    let rx = decode_vrrp(&bytes, v4("192.0.2.2"), mcast4(), 255).unwrap();
    assert_eq!(rx.advert, ad);
    assert_eq!(rx.advert.interval(), Duration::from_secs(1));
    assert_eq!(rx.checksum, ChecksumMatch::Only);
    // Whole IPv4 packet: total length 40 for one VIP, as measured.
    let pkt = ipv4_packet("192.0.2.2".parse().unwrap(), MCAST_V4, 255, &bytes);
    assert_eq!(pkt.len(), 40);
    assert_eq!(decode_ipv4(&pkt).unwrap().advert, ad);
}

#[test]
fn golden_v2_shutdown() {
    let ad = Advert {
        version: Version::V2,
        vrid: 51,
        priority: 0,
        interval_field: 1,
        addrs: vec![v4("192.0.2.100")],
        auth: Auth::None,
    };
    assert_eq!(
        ad.encode(v4("192.0.2.1"), mcast4(), ChecksumMode::PseudoHeader),
        hex(GOLDEN_V2_SHUTDOWN)
    );
}

#[test]
fn golden_v3_ipv4_pseudo_header_and_rfc9568() {
    let ad = Advert {
        version: Version::V3,
        vrid: 52,
        priority: 100,
        interval_field: 10,
        addrs: vec![v4("192.0.2.101")],
        auth: Auth::None,
    };
    let src = v4("192.0.2.2");
    let keepalived = ad.encode(src, mcast4(), ChecksumMode::PseudoHeader);
    assert_eq!(keepalived, hex(GOLDEN_V3_4));
    let rfc = ad.encode(src, mcast4(), ChecksumMode::Rfc9568);
    assert_eq!(
        &rfc[6..8],
        &[0xa8, 0x5a],
        "message-only checksum from the reference"
    );
    // Accept both, and say which one matched.
    let a = decode_vrrp(&keepalived, src, mcast4(), 255).unwrap();
    assert_eq!(a.checksum, ChecksumMatch::PseudoHeader);
    assert_eq!(a.advert, ad);
    assert_eq!(a.advert.interval(), Duration::from_millis(100));
    let b = decode_vrrp(&rfc, src, mcast4(), 255).unwrap();
    assert_eq!(b.checksum, ChecksumMatch::Rfc9568);
    // Total IPv4 length 32 for one VIP, as measured.
    assert_eq!(
        ipv4_packet("192.0.2.2".parse().unwrap(), MCAST_V4, 255, &keepalived).len(),
        32
    );
}

#[test]
fn golden_v3_ipv6() {
    let ad = Advert {
        version: Version::V3,
        vrid: 53,
        priority: 100,
        interval_field: 10,
        addrs: vec![v6("fe80::53"), v6("2001:db8::101")],
        auth: Auth::None,
    };
    let src = v6("fe80::ff:fe00:2");
    let bytes = ad.encode(src, mcast6(), ChecksumMode::PseudoHeader);
    assert_eq!(bytes, golden_v3_6());
    assert_eq!(bytes.len(), 40);
    // The IPv6 checksum ignores the IPv4 convention switch.
    assert_eq!(ad.encode(src, mcast6(), ChecksumMode::Rfc9568), bytes);
    let rx = decode_vrrp(&bytes, src, mcast6(), 255).unwrap();
    assert_eq!(rx.advert, ad);
    // A different source breaks the pseudo-header sum.
    assert_eq!(
        decode_vrrp(&bytes, v6("fe80::ff:fe00:3"), mcast6(), 255),
        Err(DropReason::BadChecksum)
    );
}

#[test]
fn v2_pass_auth_round_trip() {
    let ad = Advert {
        version: Version::V2,
        vrid: 7,
        priority: 200,
        interval_field: 2,
        addrs: vec![v4("192.0.2.100"), v4("192.0.2.101")],
        auth: Auth::pass("s3cret"),
    };
    let bytes = ad.encode(v4("192.0.2.1"), mcast4(), ChecksumMode::PseudoHeader);
    assert_eq!(bytes[4], 1);
    assert_eq!(&bytes[16..24], b"s3cret\0\0");
    assert_eq!(
        decode_vrrp(&bytes, v4("192.0.2.1"), mcast4(), 255)
            .unwrap()
            .advert,
        ad
    );
}

#[test]
fn unicast_pseudo_header_uses_the_real_destination() {
    let ad = Advert {
        version: Version::V3,
        vrid: 54,
        priority: 150,
        interval_field: 10,
        addrs: vec![v4("192.0.2.102")],
        auth: Auth::None,
    };
    let (src, dst) = (v4("192.0.2.1"), v4("192.0.2.2"));
    let bytes = ad.encode(src, dst, ChecksumMode::PseudoHeader);
    let rx = decode_vrrp(&bytes, src, dst, 64).unwrap();
    assert_eq!(rx.checksum, ChecksumMatch::PseudoHeader);
    // The same bytes do not sum with the multicast group in the pseudo-header, nor as RFC 9568.
    assert_eq!(
        decode_vrrp(&bytes, src, mcast4(), 255),
        Err(DropReason::BadChecksum)
    );
}

#[test]
fn decode_rejects_malformed() {
    let good = hex(GOLDEN_V3_4);
    let src = v4("192.0.2.2");
    assert_eq!(
        decode_vrrp(&good[..7], src, mcast4(), 255),
        Err(DropReason::TooShort)
    );
    let mut bad = good.clone();
    bad[0] = 0x41;
    assert_eq!(
        decode_vrrp(&bad, src, mcast4(), 255),
        Err(DropReason::BadVersion)
    );
    bad[0] = 0x32;
    assert_eq!(
        decode_vrrp(&bad, src, mcast4(), 255),
        Err(DropReason::BadType)
    );
    // Extra trailing byte: keepalived wants the exact length.
    let mut long = good.clone();
    long.extend_from_slice(&[0, 0, 0, 0]);
    assert_eq!(
        decode_vrrp(&long, src, mcast4(), 255),
        Err(DropReason::BadLength)
    );
    let mut flipped = good.clone();
    flipped[2] = 101;
    assert_eq!(
        decode_vrrp(&flipped, src, mcast4(), 255),
        Err(DropReason::BadChecksum)
    );
    // v2 over IPv6 does not exist.
    let v2 = hex(GOLDEN_V2);
    assert_eq!(
        decode_vrrp(&v2, v6("fe80::1"), mcast6(), 255),
        Err(DropReason::BadVersion)
    );
}

#[test]
fn v2_without_auth_trailer_is_too_short_for_keepalived() {
    // keepalived refuses a 12-byte v2 message (32 bytes with IP): "expect 40".
    let v2 = hex(GOLDEN_V2);
    let short = &v2[..12];
    assert_eq!(
        decode_vrrp(short, v4("192.0.2.2"), mcast4(), 255),
        Err(DropReason::BadLength)
    );
}

#[test]
fn carp_is_a_quiet_length_drop() {
    // CARP: same protocol, first octet 0x21, 36-byte message.
    let mut carp = vec![0x21, 1, 0, 1, 0, 1, 0, 0];
    carp.resize(36, 0);
    let c = checksum(&[&carp]);
    carp[6..8].copy_from_slice(&c.to_be_bytes());
    let pkt = ipv4_packet("192.0.2.9".parse().unwrap(), MCAST_V4, 255, &carp);
    assert_eq!(decode_ipv4(&pkt), Err(DropReason::BadLength));
}

#[test]
fn ipv4_header_checks() {
    let msg = hex(GOLDEN_V3_4);
    let pkt = ipv4_packet("192.0.2.2".parse().unwrap(), MCAST_V4, 254, &msg);
    let rx = decode_ipv4(&pkt).unwrap();
    assert_eq!(rx.ttl, 254);
    assert_eq!(rx.src, v4("192.0.2.2"));
    assert_eq!(decode_ipv4(&pkt[..10]), Err(DropReason::TooShort));
    let mut trunc = pkt.clone();
    trunc.pop();
    assert_eq!(decode_ipv4(&trunc), Err(DropReason::BadIpHeader));
    let mut proto = pkt.clone();
    proto[9] = 6;
    assert_eq!(decode_ipv4(&proto), Err(DropReason::BadIpHeader));
    // IP options: IHL 6. The payload must be found after 24 bytes, not 20.
    let mut opt = vec![0x46, 0xc0];
    opt.extend_from_slice(&((24 + msg.len()) as u16).to_be_bytes());
    opt.extend_from_slice(&[0, 0, 0, 0, 255, 112, 0, 0, 192, 0, 2, 2, 224, 0, 0, 18]);
    opt.extend_from_slice(&[1, 1, 1, 0]); // NOP NOP NOP EOL
    opt.extend_from_slice(&msg);
    assert_eq!(decode_ipv4(&opt).unwrap().advert.vrid, 52);
}

fn expect<'a>(
    addrs: &'a [IpAddr],
    auth: &'a Auth,
    peers: &'a [IpAddr],
    own: &'a [IpAddr],
    version: Version,
) -> RxExpect<'a> {
    RxExpect {
        version,
        interval_field: 1,
        addrs,
        auth,
        unicast_peers: peers,
        own,
    }
}

#[test]
fn instance_checks() {
    let vips = [v4("192.0.2.101")];
    let own = [v4("192.0.2.1")];
    let none = Auth::None;
    let want = expect(&vips, &none, &[], &own, Version::V3);
    let rx = decode_vrrp(&hex(GOLDEN_V3_4), v4("192.0.2.2"), mcast4(), 255).unwrap();
    assert_eq!(check(&rx, &want), Ok(()));

    let mut ttl = rx.clone();
    ttl.ttl = 254;
    assert_eq!(check(&ttl, &want), Err(DropReason::BadTtl));

    let mut other_vip = rx.clone();
    other_vip.advert.addrs = vec![v4("192.0.2.199")];
    assert_eq!(check(&other_vip, &want), Err(DropReason::AddressMismatch));
    let mut extra = rx.clone();
    extra.advert.addrs.push(v4("192.0.2.102"));
    assert_eq!(check(&extra, &want), Err(DropReason::AddressMismatch));

    let mut mine = rx.clone();
    mine.src = v4("192.0.2.1");
    assert_eq!(check(&mine, &want), Err(DropReason::Own));

    let mut unicast = rx.clone();
    unicast.dst = v4("192.0.2.1");
    assert_eq!(check(&unicast, &want), Err(DropReason::CastMismatch));

    let v2want = expect(&vips, &none, &[], &own, Version::V2);
    assert_eq!(check(&rx, &v2want), Err(DropReason::BadVersion));
}

#[test]
fn unicast_instance_checks() {
    let vips = [v4("192.0.2.101")];
    let peers = [v4("192.0.2.2")];
    let own = [v4("192.0.2.1")];
    let none = Auth::None;
    let want = expect(&vips, &none, &peers, &own, Version::V3);
    let mut rx = decode_vrrp(&hex(GOLDEN_V3_4), v4("192.0.2.2"), mcast4(), 255).unwrap();
    assert_eq!(check(&rx, &want), Err(DropReason::CastMismatch));
    rx.dst = v4("192.0.2.1");
    // keepalived does not check TTL for unicast.
    rx.ttl = 60;
    assert_eq!(check(&rx, &want), Ok(()));
    rx.src = v4("192.0.2.3");
    assert_eq!(check(&rx, &want), Err(DropReason::UnknownPeer));
}

#[test]
fn v2_auth_and_interval_checks() {
    let vips = [v4("192.0.2.100")];
    let own = [v4("192.0.2.1")];
    let pass = Auth::pass("s3cret");
    let none = Auth::None;
    let rx = decode_vrrp(&hex(GOLDEN_V2), v4("192.0.2.2"), mcast4(), 255).unwrap();
    assert_eq!(
        check(&rx, &expect(&vips, &none, &[], &own, Version::V2)),
        Ok(())
    );
    assert_eq!(
        check(&rx, &expect(&vips, &pass, &[], &own, Version::V2)),
        Err(DropReason::AuthMismatch)
    );
    let mut wrong_pw = rx.clone();
    wrong_pw.advert.auth = Auth::pass("other");
    assert_eq!(
        check(&wrong_pw, &expect(&vips, &pass, &[], &own, Version::V2)),
        Err(DropReason::AuthMismatch)
    );
    let mut right_pw = rx.clone();
    right_pw.advert.auth = Auth::pass("s3cret");
    assert_eq!(
        check(&right_pw, &expect(&vips, &pass, &[], &own, Version::V2)),
        Ok(())
    );
    let mut w = expect(&vips, &none, &[], &own, Version::V2);
    w.interval_field = 2;
    assert_eq!(check(&rx, &w), Err(DropReason::IntervalMismatch));
}

#[test]
fn v3_interval_is_not_checked() {
    let vips = [v4("192.0.2.101")];
    let none = Auth::None;
    let mut want = expect(&vips, &none, &[], &[], Version::V3);
    want.interval_field = 77;
    let rx = decode_vrrp(&hex(GOLDEN_V3_4), v4("192.0.2.2"), mcast4(), 255).unwrap();
    assert_eq!(check(&rx, &want), Ok(()));
}

/// Max Adver Int 0 is malformed: adopting it would make a v3 backup's Master_Down
/// interval zero and one forged packet would hand it the VIP at once.
#[test]
fn interval_zero_is_dropped_as_malformed() {
    let src = v4("192.0.2.2");
    let decoded = |version, interval_field| {
        let ad = unauthenticated(version, interval_field, v4("192.0.2.101"));
        let bytes = ad.encode(src, mcast4(), ChecksumMode::PseudoHeader);
        decode_vrrp(&bytes, src, mcast4(), 255).map(|rx| rx.advert)
    };
    assert_eq!(decoded(Version::V3, 0), Err(DropReason::BadInterval));
    assert_eq!(decoded(Version::V2, 0), Err(DropReason::BadInterval));
    assert!(decoded(Version::V3, 1).is_ok());
}

/// A VRID 51 advert at priority 200 for one address, without authentication.
fn unauthenticated(version: Version, interval_field: u16, addr: IpAddr) -> Advert {
    Advert {
        version,
        vrid: 51,
        priority: 200,
        interval_field,
        addrs: vec![addr],
        auth: Auth::None,
    }
}

/// RFC 5798 5.1.2.2: a multicast v3 advert over IPv6 comes from a link-local address.
#[test]
fn ipv6_multicast_advert_from_a_global_source_is_dropped() {
    let ad = unauthenticated(Version::V3, 10, v6("2001:db8::101"));
    let global = v6("2001:db8::2");
    let bytes = ad.encode(global, mcast6(), ChecksumMode::PseudoHeader);
    assert_eq!(
        decode_vrrp(&bytes, global, mcast6(), 255),
        Err(DropReason::SourceNotLinkLocal)
    );
    // Unicast peers may use a global source (keepalived's unicast_src).
    let peer = v6("2001:db8::1");
    let bytes = ad.encode(global, peer, ChecksumMode::PseudoHeader);
    assert!(decode_vrrp(&bytes, global, peer, 255).is_ok());
}

#[test]
fn drop_labels_are_unique() {
    let mut l: Vec<_> = DropReason::ALL.iter().map(|r| r.label()).collect();
    l.sort();
    l.dedup();
    assert_eq!(l.len(), DropReason::ALL.len());
}

#[test]
fn garp_shape() {
    let mac = [2, 0, 0, 0, 0, 1];
    let f = garp_frame(mac, "192.0.2.100".parse().unwrap());
    assert_eq!(&f[0..6], &[0xff; 6]);
    assert_eq!(&f[12..14], &[0x08, 0x06]);
    assert_eq!(&f[20..22], &[0, 1]);
    assert_eq!(&f[28..32], &[192, 0, 2, 100]);
    assert_eq!(&f[38..42], &[192, 0, 2, 100]);
    assert_eq!(&f[32..38], &[0xff; 6]);
}

#[test]
fn na_checksum_verifies() {
    let vip: Ipv6Addr = "2001:db8::101".parse().unwrap();
    let f = unsolicited_na_frame([2, 0, 0, 0, 0, 1], vip);
    assert_eq!(f[20], 58);
    assert_eq!(f[21], 255);
    let icmp = &f[54..];
    let ph = pseudo_header(IpAddr::V6(vip), v6("ff02::1"), icmp.len());
    // Our v6 pseudo-header helper uses next header 112; rebuild with 58 for ICMPv6.
    let mut ph = ph;
    ph[39] = 58;
    assert_eq!(checksum(&[&ph, icmp]), 0);
    assert_eq!(icmp[4], 0x20, "O=1, S=0, R=0");
}
