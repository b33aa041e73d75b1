//! A raw IPv6 packet (fixed 40-byte header, then the VRRP message) taken apart as the
//! daemon does from the cmsgs of its raw socket, decoded, then the round trip.
#![no_main]

use std::net::{IpAddr, Ipv6Addr};

use libfuzzer_sys::fuzz_target;
use tether_vrrp::packet;

fuzz_target!(|data: &[u8]| {
    let Some((header, msg)) = data.split_first_chunk::<40>() else {
        return;
    };
    let addr = |at: usize| {
        let mut o = [0u8; 16];
        o.copy_from_slice(&header[at..at + 16]);
        IpAddr::V6(Ipv6Addr::from(o))
    };
    if let Ok(rx) = packet::decode_vrrp(msg, addr(8), addr(24), header[7]) {
        tether_fuzz::vrrp_round_trip(&rx);
    }
});
