//! The PROXY v1/v2 header reader of `lb` (HAProxy and other balancers in front).
//!
//! Beyond not crashing: a header is found the same in its own bytes, every shorter cut of
//! it asks for more (TCP may deliver it in pieces), and the addresses it carried re-encode
//! in both versions to a header that reads back to them.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tether_lb::config::ProxyVersion;
use tether_lb::inspect::{Inspect, MAX_PROXY_HEADER, encode_proxy_header, proxy_header};

fuzz_target!(|data: &[u8]| {
    match proxy_header(data) {
        Inspect::Done { value, consumed } => {
            assert!(consumed > 0 && consumed <= data.len());
            let done = Inspect::Done { value, consumed };
            assert_eq!(proxy_header(&data[..consumed]), done);
            for cut in 0..consumed {
                assert_eq!(
                    proxy_header(&data[..cut]),
                    Inspect::NeedMore,
                    "cut at {cut}"
                );
            }
            if let (Some(s), Some(d)) = (value.source, value.destination) {
                for v in [ProxyVersion::V1, ProxyVersion::V2] {
                    let bytes = encode_proxy_header(v, s, d);
                    let again = Inspect::Done {
                        value,
                        consumed: bytes.len(),
                    };
                    assert_eq!(proxy_header(&bytes), again, "{v:?}");
                }
            }
        }
        Inspect::NeedMore => assert!(data.len() < MAX_PROXY_HEADER),
        Inspect::Invalid(_) => {}
    }
});
