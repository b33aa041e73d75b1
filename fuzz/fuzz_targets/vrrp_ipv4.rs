//! A raw IPv4 packet as a VRRP raw socket delivers it (v2 or v3), then the round trip:
//! whatever decodes re-encodes to an advert that decodes the same.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tether_vrrp::packet;

fuzz_target!(|data: &[u8]| {
    if let Ok(rx) = packet::decode_ipv4(data) {
        tether_fuzz::vrrp_round_trip(&rx);
    }
});
