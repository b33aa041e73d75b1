//! The preamble at the start of every gateway data stream. Its encoding is canonical, so a
//! preamble read encodes to exactly the bytes it was read from.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tether_fuzz::ready;
use tether_gateway::proto::Preamble;

fuzz_target!(|data: &[u8]| {
    let mut r = data;
    if let Ok(p) = ready(Preamble::read_from(&mut r)) {
        let consumed = data.len() - r.len();
        let bytes = p.encode().expect("a preamble read encodes");
        assert_eq!(bytes.as_slice(), &data[..consumed]);
    }
});
