//! Tests of [`super`].

use super::*;
use crate::common::End;
use crate::proto::{RejectCode, Status};
use crate::readiness::CloseReason;
use crate::stream::OpenError;

const STATUSES: [Status; 6] = [
    Status::Ok,
    Status::BackendRefused,
    Status::BackendTimeout,
    Status::Unauthorized,
    Status::Overloaded,
    Status::Draining,
];

/// The lists created at 0 hold every label the enums produce.
#[test]
fn the_lists_hold_every_label_of_the_enums() {
    let ends = [End::PeerClosed, End::Dead, End::Killed, End::MuxClosed];
    for e in ends.iter().chain(&[End::Protocol(String::new())]) {
        assert!(SESSION_ENDS.contains(&e.as_str()), "{e:?}");
    }
    for r in [
        CloseReason::StaleEpoch,
        CloseReason::Replaced,
        CloseReason::Silent,
    ] {
        assert!(SESSION_ENDS.contains(&r.as_str()), "{r:?}");
    }
    for c in [
        RejectCode::Auth,
        RejectCode::Draining,
        RejectCode::Version,
        RejectCode::OverQuota,
    ] {
        assert!(
            REJECT_CODES.contains(&crate::cloud::reject_label(c)),
            "{c:?}"
        );
    }
    for s in STATUSES {
        assert!(STREAM_RESULTS.contains(&s.as_str()), "{s:?}");
    }
    for e in [
        StreamEnd::Done,
        StreamEnd::IdleTimeout,
        StreamEnd::SessionEnded,
        StreamEnd::Killed,
    ] {
        assert!(STREAM_ENDS.contains(&e.as_str()), "{e:?}");
    }
    let failures = [OpenError::Silent, OpenError::Broken]
        .into_iter()
        .chain(STATUSES[1..].iter().map(|s| OpenError::Status(*s)));
    for f in failures {
        assert!(OPEN_FAILURES.contains(&f.as_str()), "{f:?}");
    }
}
