//! The gateway's control stream: length-prefixed JSON frames, read as a session reads
//! them, until the end or the first error. Every message read encodes to a frame that
//! reads back to it.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tether_fuzz::ready;
use tether_gateway::proto::Control;

fuzz_target!(|data: &[u8]| {
    let mut r = data;
    while let Ok(Some(msg)) = ready(Control::read_from(&mut r)) {
        let frame = msg.encode().expect("a message read encodes");
        let mut f = frame.as_slice();
        let back = ready(Control::read_from(&mut f)).expect("a message encoded reads back");
        assert_eq!(back, Some(msg));
        assert!(f.is_empty());
    }
});
