//! The ClientHello/SNI inspector of `lb`: whatever a client sends first.
//!
//! Beyond not crashing: a hello is found the same in its own bytes, cuts of it ask for
//! more (records arrive in pieces), and nothing is awaited past the size cap.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tether_lb::inspect::{Inspect, MAX_HELLO, client_hello_sni};

fuzz_target!(|data: &[u8]| {
    match client_hello_sni(data) {
        Inspect::Done { value, consumed } => {
            assert!(consumed > 0 && consumed <= data.len());
            if let Some(name) = &value {
                assert!(!name.ends_with('.'), "{name:?}");
            }
            let done = Inspect::Done { value, consumed };
            assert_eq!(client_hello_sni(&data[..consumed]), done);
            // Every cut would be quadratic in a 16 KiB hello: a spread of them, and the last.
            let step = (consumed / 64).max(1);
            for cut in (0..consumed).step_by(step).chain([consumed - 1]) {
                assert_eq!(
                    client_hello_sni(&data[..cut]),
                    Inspect::NeedMore,
                    "cut at {cut}"
                );
            }
        }
        Inspect::NeedMore => assert!(data.len() < MAX_HELLO),
        Inspect::Invalid(_) => {}
    }
});
