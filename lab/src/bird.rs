//! BIRD 2 configurations for a balancer tier announced over BGP: the router that spreads the
//! VIP's flows over every balancer announcing it (ECMP), and the balancer side that exports
//! the routes `tether lb` keeps in its `[announce]` table.
//!
//! The timers are a lab's: BFD every 100 ms (a dead balancer is noticed in about 0.3 s),
//! reconnects after 1 s, and a short `error wait time`, because after a BFD-down BIRD
//! otherwise waits 60 s or more before it talks to the returning balancer again.

use std::net::Ipv4Addr;

/// The routing protocol number `tether lb` gives a route announced as degraded.
pub const PROTO_DEGRADED: u8 = 217;

const TIMERS: &str =
    "hold time 3; keepalive time 1; connect retry time 1; error wait time 1, 2; bfd on;";

const BFD: &str = "protocol bfd { interface \"*\" { min rx interval 100 ms; min tx interval 100 ms; multiplier 3; }; }";

/// The router: one eBGP session per balancer, routes merged into ECMP next hops.
pub fn router(id: Ipv4Addr, asn: u32, balancers: &[(Ipv4Addr, u32)]) -> String {
    let mut s = format!(
        "log stderr all;\nrouter id {id};\nprotocol device {{}}\n{BFD}\n\
         # Equal routes from several balancers become one multipath route in the kernel.\n\
         protocol kernel {{ ipv4 {{ import none; export all; }}; merge paths on; }}\n"
    );
    for (i, (addr, peer_as)) in balancers.iter().enumerate() {
        s.push_str(&format!(
            "protocol bgp lb{} {{ local {id} as {asn}; neighbor {addr} as {peer_as}; {TIMERS} ipv4 {{ import all; export none; }}; }}\n",
            i + 1
        ));
    }
    s
}

/// A balancer: learns `tether lb`'s routes from kernel table `table` and exports them to
/// the router, a degraded one with its AS path made longer.
pub fn balancer(id: Ipv4Addr, asn: u32, router: Ipv4Addr, router_as: u32, table: u32) -> String {
    format!(
        "log stderr all;\nrouter id {id};\nprotocol device {{}}\n{BFD}\n\
         # The routes tether lb keeps while a VIP is ready; they vanish with its process.\n\
         protocol kernel tether {{ kernel table {table}; learn; ipv4 {{ import all; export none; }}; }}\n\
         protocol bgp upstream {{ local {id} as {asn}; neighbor {router} as {router_as}; {TIMERS}\n\
         \x20 ipv4 {{ import none; export filter {{\n\
         \x20   if proto != \"tether\" then reject;\n\
         \x20   if krt_source = {PROTO_DEGRADED} then bgp_path.prepend({asn});\n\
         \x20   accept;\n\
         \x20 }}; }};\n}}\n"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configs_name_every_peer_and_the_table() {
        let r = router(
            "203.0.113.1".parse().unwrap(),
            65000,
            &[
                ("203.0.113.11".parse().unwrap(), 65001),
                ("203.0.113.12".parse().unwrap(), 65001),
            ],
        );
        assert!(r.contains(
            "protocol bgp lb2 { local 203.0.113.1 as 65000; neighbor 203.0.113.12 as 65001;"
        ));
        assert!(r.contains("merge paths on"));
        let b = balancer(
            "203.0.113.11".parse().unwrap(),
            65001,
            "203.0.113.1".parse().unwrap(),
            65000,
            7474,
        );
        assert!(b.contains("kernel table 7474; learn;"));
        assert!(b.contains("krt_source = 217"));
    }
}
