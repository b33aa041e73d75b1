//! The advert admission policy of one instance, without IO: given what its receive socket
//! delivered, decide whether the state machine sees it, under which reason it is counted
//! as dropped, and whether that is worth one log line.
//!
//! The codec ([`crate::packet::decode_vrrp`]) and the per-instance checks
//! ([`crate::packet::check`]) say *why* a packet is bad; [`RxFilter`] says whose packet it
//! is. [`Admission`] adds the last piece the driver used to do inline: remembering which
//! misconfigured peers were already named in the log, so a foreign cluster on our VRID
//! costs one warning per source and reason, never one per packet.

use std::collections::HashSet;
use std::net::IpAddr;
use std::time::Duration;

use crate::config::InstanceConfig;
use crate::packet::{Auth, ChecksumMatch, DropReason, Received, RxExpect, Version};
use crate::rx::{RxFilter, Verdict};

/// At most this many (source, reason) pairs are remembered for the once-only log lines:
/// a flood of spoofed sources must not grow memory without bound.
const NOTED_MAX: usize = 64;

/// What the driver does with one received packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Not this instance's to count (a sibling's advert, or a shared drop another
    /// instance counts).
    Ignore,
    /// Count it under `reason`; `warn` names the sender the first time this source is
    /// dropped for this reason (log it then, and only then).
    Drop {
        /// Why it was dropped (the metric's `reason` label).
        reason: DropReason,
        /// Set once per source and reason, for the log line.
        warn: Option<IpAddr>,
    },
    /// Feed it to the state machine.
    Admit {
        /// The sender.
        src: IpAddr,
        /// Its advertised priority.
        priority: u8,
        /// Its advertised interval.
        interval: Duration,
        /// The checksum convention it matched (the metric's `convention` label).
        convention: &'static str,
        /// Set the first time this sender is seen using a non-default convention.
        note_convention: bool,
    },
}

/// One instance's admission policy: its filter, what it expects of an advert, and the
/// (source, reason) pairs it has already logged.
#[derive(Debug)]
pub struct Admission {
    filter: RxFilter,
    version: Version,
    interval_field: u16,
    addrs: Vec<IpAddr>,
    auth: Auth,
    unicast_peers: Vec<IpAddr>,
    own: Vec<IpAddr>,
    noted: HashSet<(IpAddr, &'static str)>,
}

impl Admission {
    /// The policy of instance `idx` (see [`RxFilter::new`] for `instances`) sending from
    /// `src`.
    pub fn new(
        idx: usize,
        instances: &[(String, u8, bool)],
        cfg: &InstanceConfig,
        src: IpAddr,
    ) -> Admission {
        Admission {
            filter: RxFilter::new(idx, instances),
            version: cfg.version,
            interval_field: cfg.interval_field(),
            addrs: cfg.vips.iter().map(|v| v.addr).collect(),
            auth: cfg.auth.clone(),
            unicast_peers: cfg.unicast_peers.clone(),
            own: vec![src],
            noted: HashSet::new(),
        }
    }

    /// Decides what happens to a packet (decoded, or the codec's drop reason).
    pub fn decide(&mut self, got: Result<Received, DropReason>) -> Decision {
        let want = RxExpect {
            version: self.version,
            interval_field: self.interval_field,
            addrs: &self.addrs,
            auth: &self.auth,
            unicast_peers: &self.unicast_peers,
            own: &self.own,
        };
        match self.filter.classify(got, &want) {
            Verdict::Ignore => Decision::Ignore,
            Verdict::Drop { reason, from } => {
                // Our own looped-back adverts are counted but never worth a warning.
                let warn =
                    from.filter(|src| reason != DropReason::Own && self.note(*src, reason.label()));
                Decision::Drop { reason, warn }
            }
            Verdict::Accept(rx) => {
                let convention = convention_label(rx.checksum);
                let note_convention =
                    rx.checksum != ChecksumMatch::Only && self.note(rx.src, convention);
                Decision::Admit {
                    src: rx.src,
                    priority: rx.advert.priority,
                    interval: rx.advert.interval(),
                    convention,
                    note_convention,
                }
            }
        }
    }

    /// Remembers (source, what); true when it is new and there was room to remember it.
    fn note(&mut self, src: IpAddr, what: &'static str) -> bool {
        self.noted.len() < NOTED_MAX && self.noted.insert((src, what))
    }
}

/// The `convention` label of the checksum metric.
pub fn convention_label(m: ChecksumMatch) -> &'static str {
    match m {
        ChecksumMatch::Only => "only",
        ChecksumMatch::PseudoHeader => "pseudo-header",
        ChecksumMatch::Rfc9568 => "rfc9568",
    }
}

#[cfg(test)]
mod tests;
