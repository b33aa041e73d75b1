//! The consistent slot table of a `mode = "dr"` frontend: which server each of [`SLOTS`]
//! hash buckets goes to. Sans-IO and deterministic: two balancers with the same servers,
//! weights and health verdicts compute the same table, byte for byte, so a flow that a
//! router or a VRRP takeover moves to another balancer reaches the same server.
//!
//! Weighted rendezvous hashing (highest random weight): each slot goes to the server with
//! the highest `weight / -ln(u)`, where `u` is a hash of the slot and the server's address
//! mapped into (0, 1). Losing a server moves only the slots it held; a server joining takes
//! slots only from others in proportion to its weight. The address, not the configured
//! name, identifies a server, because the address is what the kernel forwards to.

use std::net::IpAddr;

/// Hash buckets per frontend. The kernel rule computes `jhash(saddr . sport) mod SLOTS`; at
/// 1,024 a server of weight 1 beside servers of weight 256 still holds a few slots.
pub const SLOTS: usize = 1024;

/// One server as the table sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// Where its packets go.
    pub addr: IpAddr,
    /// Its weight, 1..=256.
    pub weight: u32,
}

/// Slot `i` holds the index (into the members given to [`build`]) of its server; empty when
/// no member was given.
pub type Table = Vec<usize>;

/// Builds the slot table for `members` (the servers that take new flows).
pub fn build(members: &[Member]) -> Table {
    if members.is_empty() {
        return Vec::new();
    }
    let keys: Vec<u64> = members.iter().map(|m| addr_key(m.addr)).collect();
    (0..SLOTS)
        .map(|slot| {
            let mut best = 0;
            let mut best_score = f64::MIN;
            for (i, (m, key)) in members.iter().zip(&keys).enumerate() {
                let score = score(slot as u64, *key, m.weight);
                // Ties (practically impossible) go to the lower address, not to the order
                // of the configuration, so every balancer agrees.
                if score > best_score || (score == best_score && m.addr < members[best].addr) {
                    best = i;
                    best_score = score;
                }
            }
            best
        })
        .collect()
}

/// How many slots each member holds.
pub fn counts(table: &Table, members: usize) -> Vec<usize> {
    let mut c = vec![0; members];
    for &i in table {
        if let Some(n) = c.get_mut(i) {
            *n += 1;
        }
    }
    c
}

fn score(slot: u64, key: u64, weight: u32) -> f64 {
    let h = mix(slot.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ key);
    // 53 random bits into (0, 1): never 0, so ln() is finite and negative.
    let u = ((h >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
    f64::from(weight) / -u.ln()
}

/// A fixed, platform-independent hash of an address (FNV-1a over its 16-byte form).
pub fn addr_key(addr: IpAddr) -> u64 {
    let bytes = match addr {
        IpAddr::V4(a) => a.to_ipv6_mapped().octets(),
        IpAddr::V6(a) => a.octets(),
    };
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// splitmix64's finaliser: spreads every input bit over the output.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(last: u8, weight: u32) -> Member {
        Member {
            addr: IpAddr::from([192, 0, 2, last]),
            weight,
        }
    }

    fn servers_of(table: &Table, members: &[Member]) -> Vec<IpAddr> {
        table.iter().map(|&i| members[i].addr).collect()
    }

    #[test]
    fn no_member_no_table() {
        assert!(build(&[]).is_empty());
    }

    #[test]
    fn the_order_of_the_configuration_does_not_matter() {
        let a = [m(21, 1), m(22, 2), m(23, 1)];
        let b = [m(23, 1), m(21, 1), m(22, 2)];
        assert_eq!(servers_of(&build(&a), &a), servers_of(&build(&b), &b));
    }

    #[test]
    fn the_table_is_the_same_every_time() {
        // A fixed vector: a change of hash or scoring shows here, and would make balancers
        // of two versions disagree during a rolling upgrade.
        let a = [m(21, 1), m(22, 1), m(23, 1)];
        let t = build(&a);
        let first: Vec<u8> = t.iter().take(12).map(|&i| [21, 22, 23][i]).collect();
        assert_eq!(first, [22, 21, 22, 21, 23, 22, 21, 22, 22, 23, 23, 23]);
        assert_eq!(t, build(&a));
    }

    #[test]
    fn weights_are_respected() {
        let a = [m(21, 1), m(22, 2), m(23, 1)];
        let c = counts(&build(&a), a.len());
        assert_eq!(c.iter().sum::<usize>(), SLOTS);
        // Expected 256 / 512 / 256; rendezvous spreads binomially (sd about 14 and 16).
        assert!((200..=312).contains(&c[0]), "{c:?}");
        assert!((440..=584).contains(&c[1]), "{c:?}");
        assert!((200..=312).contains(&c[2]), "{c:?}");
    }

    #[test]
    fn a_light_server_beside_heavy_ones_still_gets_slots() {
        let a = [m(21, 256), m(22, 256), m(23, 1)];
        let c = counts(&build(&a), a.len());
        assert!(c[2] > 0, "{c:?}");
    }

    #[test]
    fn losing_a_server_moves_only_its_slots() {
        let all = [m(21, 1), m(22, 1), m(23, 1)];
        let two = [m(21, 1), m(23, 1)];
        let before = servers_of(&build(&all), &all);
        let after = servers_of(&build(&two), &two);
        let gone = IpAddr::from([192, 0, 2, 22]);
        for (slot, (b, a)) in before.iter().zip(&after).enumerate() {
            if *b != gone {
                assert_eq!(b, a, "slot {slot} moved from {b} to {a}");
            }
        }
    }

    #[test]
    fn a_joining_server_takes_slots_only_for_itself() {
        let two = [m(21, 1), m(22, 1)];
        let three = [m(21, 1), m(22, 1), m(23, 1)];
        let before = servers_of(&build(&two), &two);
        let after = servers_of(&build(&three), &three);
        let new = IpAddr::from([192, 0, 2, 23]);
        let mut moved = 0;
        for (b, a) in before.iter().zip(&after) {
            if b != a {
                assert_eq!(*a, new);
                moved += 1;
            }
        }
        assert!(
            (250..=433).contains(&moved),
            "{moved} of {SLOTS} slots moved"
        );
    }

    #[test]
    fn ipv6_members_work_alike() {
        let a = [
            Member {
                addr: "2001:db8::21".parse().unwrap(),
                weight: 1,
            },
            Member {
                addr: "2001:db8::22".parse().unwrap(),
                weight: 1,
            },
        ];
        let c = counts(&build(&a), a.len());
        assert!(c.iter().all(|&n| n > 400), "{c:?}");
    }
}
