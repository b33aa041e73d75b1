//! The Ethernet frames a new master sends for its VIPs: gratuitous ARP (IPv4) and
//! unsolicited neighbour advertisements (IPv6).

use std::net::{Ipv4Addr, Ipv6Addr};

use super::checksum;

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
