//! Helpers shared by the fuzz targets in `fuzz_targets/`.

use std::future::Future;
use std::pin::pin;
use std::task::{Context, Poll, Waker};

/// Runs a future that reads only from memory to completion in one poll.
///
/// The gateway's readers are `async` over any `AsyncRead`; a `&[u8]` is always ready, so
/// the targets need no runtime, and a future that waits anyway is a bug worth a crash.
pub fn ready<F: Future>(f: F) -> F::Output {
    let mut cx = Context::from_waker(Waker::noop());
    match pin!(f).poll(&mut cx) {
        Poll::Ready(v) => v,
        Poll::Pending => panic!("a read from memory waited"),
    }
}

/// The fuzz input as configuration text; configuration files are UTF-8, so other bytes
/// never reach the parsers (`Source::read` refuses them first).
pub fn toml_text(data: &[u8]) -> Option<tether_health::config::Source> {
    let text = std::str::from_utf8(data).ok()?;
    Some(tether_health::config::Source::from_text("fuzz.toml", text))
}

/// The VRRP codec's round trip: an advert that decoded encodes, with the checksum
/// convention it arrived with, to bytes of the announced length that decode to it again.
pub fn vrrp_round_trip(rx: &tether_vrrp::packet::Received) {
    use tether_vrrp::packet::{ChecksumMatch, ChecksumMode, decode_vrrp};
    let mode = match rx.checksum {
        ChecksumMatch::Rfc9568 => ChecksumMode::Rfc9568,
        ChecksumMatch::Only | ChecksumMatch::PseudoHeader => ChecksumMode::PseudoHeader,
    };
    let bytes = rx.advert.encode(rx.src, rx.dst, mode);
    assert_eq!(bytes.len(), rx.advert.encoded_len());
    let back = decode_vrrp(&bytes, rx.src, rx.dst, rx.ttl).expect("a re-encoded advert decodes");
    assert_eq!(back.advert, rx.advert);
}
