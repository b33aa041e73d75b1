//! What one instance does with a packet its receive socket delivered: accept it, drop and
//! count it, or leave it alone because it is a sibling's or another instance counts it.
//!
//! Every instance on an interface has its own raw socket, so every instance sees every
//! VRRP packet of its family there. Drops that are not about one instance (malformed
//! packets, unknown VRIDs) are counted by one instance only, the first configured on that
//! interface and family, so the drop counter says how many packets were dropped.

use std::net::IpAddr;

use crate::packet::{self, DropReason, Received, RxExpect};

/// One instance's view of its interface: its VRID and whether it counts shared drops.
#[derive(Debug, Clone)]
pub struct RxFilter {
    vrid: u8,
    /// VRIDs of the other instances on the same interface and family.
    siblings: Vec<u8>,
    /// Counts the drops every instance on the interface sees.
    counts_shared: bool,
}

/// What to do with a received packet.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// For this instance and valid: feed it to the state machine.
    Accept(Received),
    /// Count it under this reason. `from` is set when the packet was for our VRID, so a
    /// misconfigured peer can be named in the log (once).
    Drop {
        /// Why.
        reason: DropReason,
        /// The sender, for drops specific to this instance.
        from: Option<IpAddr>,
    },
    /// Not ours to count: a sibling instance's advert, or a shared drop another
    /// instance counts.
    Ignore,
}

impl RxFilter {
    /// The filter of instance `idx` in `instances` (interface, VRID, is-IPv6 of every
    /// configured instance, in configuration order).
    pub fn new(idx: usize, instances: &[(String, u8, bool)]) -> RxFilter {
        let Some((iface, vrid, v6)) = instances.get(idx) else {
            return RxFilter {
                vrid: 0,
                siblings: Vec::new(),
                counts_shared: true,
            };
        };
        let same_link = |(i, _, six): &&(String, u8, bool)| i == iface && six == v6;
        let first = instances.iter().position(|x| same_link(&x)).unwrap_or(idx);
        RxFilter {
            vrid: *vrid,
            siblings: instances
                .iter()
                .enumerate()
                .filter(|(j, x)| *j != idx && same_link(x))
                .map(|(_, (_, v, _))| *v)
                .collect(),
            counts_shared: first == idx,
        }
    }

    /// Classifies what the socket delivered (decoded, or the codec's drop reason).
    pub fn classify(&self, got: Result<Received, DropReason>, want: &RxExpect<'_>) -> Verdict {
        let shared = |reason| {
            if self.counts_shared {
                Verdict::Drop { reason, from: None }
            } else {
                Verdict::Ignore
            }
        };
        let rx = match got {
            Ok(rx) => rx,
            Err(reason) => return shared(reason),
        };
        if rx.advert.vrid != self.vrid {
            if self.siblings.contains(&rx.advert.vrid) {
                return Verdict::Ignore;
            }
            return shared(DropReason::UnknownVrid);
        }
        match packet::check(&rx, want) {
            Ok(()) => Verdict::Accept(rx),
            Err(reason) => Verdict::Drop {
                reason,
                from: Some(rx.src),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packet::{Advert, Auth, ChecksumMode, MCAST_V4, Version, decode_ipv4};
    use std::net::Ipv4Addr;

    fn ipv4(msg: &[u8], src: Ipv4Addr) -> Vec<u8> {
        let mut p = vec![0x45, 0, 0, 0, 0, 0, 0, 0, 255, 112, 0, 0];
        p.extend_from_slice(&src.octets());
        p.extend_from_slice(&MCAST_V4.octets());
        p.extend_from_slice(msg);
        let len = u16::try_from(p.len()).unwrap();
        p[2..4].copy_from_slice(&len.to_be_bytes());
        p
    }

    /// Two instances on eth0 (VRIDs 51 and 52) and one on eth1: a malformed packet or
    /// an unknown VRID on eth0 reaches both eth0 sockets and must be counted once.
    #[test]
    fn each_dropped_packet_is_counted_once_per_interface() {
        let all = vec![
            ("eth0".to_string(), 51, false),
            ("eth1".to_string(), 51, false),
            ("eth0".to_string(), 52, false),
        ];
        let eth0 = [RxFilter::new(0, &all), RxFilter::new(2, &all)];
        let vip = [IpAddr::V4(Ipv4Addr::new(192, 0, 2, 100))];
        let own = [IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1))];
        let want = RxExpect {
            version: Version::V3,
            interval_field: 100,
            addrs: &vip,
            auth: &Auth::None,
            unicast_peers: &[],
            own: &own,
        };
        let src = Ipv4Addr::new(192, 0, 2, 9);
        let advert = |vrid| Advert {
            version: Version::V3,
            vrid,
            priority: 100,
            interval_field: 100,
            addrs: vip.to_vec(),
            auth: Auth::None,
        };
        let encode = |vrid| {
            advert(vrid).encode(
                IpAddr::V4(src),
                IpAddr::V4(MCAST_V4),
                ChecksumMode::PseudoHeader,
            )
        };
        let mut bad_sum = encode(51);
        bad_sum[6] ^= 0xff;
        let counted = |packet: &[u8]| {
            eth0.iter()
                .filter(|f| matches!(f.classify(decode_ipv4(packet), &want), Verdict::Drop { .. }))
                .count()
        };
        assert_eq!(counted(&ipv4(&bad_sum, src)), 1, "bad checksum");
        assert_eq!(counted(&ipv4(&encode(77), src)), 1, "unknown VRID");
        assert_eq!(counted(&[0x45, 0, 0]), 1, "too short");
        // A sibling's advert is neither counted nor accepted by the other instance.
        let verdicts: Vec<_> = eth0
            .iter()
            .map(|f| f.classify(decode_ipv4(&ipv4(&encode(52), src)), &want))
            .collect();
        assert_eq!(verdicts[0], Verdict::Ignore);
        assert!(matches!(verdicts[1], Verdict::Accept(_)), "{verdicts:?}");
        // The instance alone on eth1 counts everything it sees.
        let eth1 = RxFilter::new(1, &all);
        assert!(matches!(
            eth1.classify(decode_ipv4(&ipv4(&bad_sum, src)), &want),
            Verdict::Drop {
                reason: DropReason::BadChecksum,
                from: None
            }
        ));
    }
}
