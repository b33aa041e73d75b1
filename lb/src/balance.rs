//! The balancing algorithms, sans-IO: given the servers' weights, loads and states, pick one.
//!
//! Backup servers are candidates only while no primary is usable. Among usable servers, those
//! with room (below their `maxconn`) are preferred; only when all are full is a full one
//! picked, and the connection then waits in its queue.

use crate::config::Balance;

/// What the balancer knows of one server at the moment of a pick.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Candidate {
    /// Stable identity (a hash of the server's name), so consistent hashing survives reorders.
    pub id: u64,
    /// Current weight, 1..=256.
    pub weight: u32,
    /// Connections open or being opened to it.
    pub active: u32,
    /// Health up and administratively ready.
    pub usable: bool,
    /// Used only when no primary is usable.
    pub backup: bool,
    /// At its `maxconn`.
    pub full: bool,
}

/// Picks servers for one backend. Holds the round-robin state; everything else is derived
/// from the candidates at each pick.
#[derive(Debug, Clone)]
pub struct Balancer {
    algo: Balance,
    /// Smooth weighted round robin's running weights, one per server.
    current: Vec<i64>,
    /// Rotates ties in least-connections so equal servers share the load.
    tie_offset: usize,
}

impl Balancer {
    /// A balancer for `servers` servers.
    pub fn new(algo: Balance, servers: usize) -> Self {
        Self {
            algo,
            current: vec![0; servers],
            tie_offset: 0,
        }
    }

    /// The algorithm.
    pub fn algo(&self) -> Balance {
        self.algo
    }

    /// Picks a server index, skipping `exclude` (servers already tried for this connection).
    /// `key` is the client's hash (used by `source`); `random` yields uniform `u64`s (used by
    /// `random`). Returns `None` when no server may be used.
    pub fn pick(
        &mut self,
        servers: &[Candidate],
        exclude: &[usize],
        key: u64,
        mut random: impl FnMut() -> u64,
    ) -> Option<usize> {
        if self.current.len() != servers.len() {
            self.current = vec![0; servers.len()];
        }
        let eligible = eligible(servers, exclude);
        if eligible.is_empty() {
            return None;
        }
        let pick = match self.algo {
            Balance::Roundrobin => self.smooth_wrr(servers, &eligible),
            Balance::Leastconn => self.least_conn(servers, &eligible),
            Balance::Source => rendezvous(servers, &eligible, key),
            Balance::Random => two_choices(servers, &eligible, &mut random),
            Balance::First => eligible[0],
        };
        Some(pick)
    }

    fn smooth_wrr(&mut self, servers: &[Candidate], eligible: &[usize]) -> usize {
        let mut total = 0i64;
        let mut best = eligible[0];
        for &i in eligible {
            let w = i64::from(servers[i].weight);
            self.current[i] += w;
            total += w;
            if self.current[i] > self.current[best] {
                best = i;
            }
        }
        self.current[best] -= total;
        best
    }

    fn least_conn(&mut self, servers: &[Candidate], eligible: &[usize]) -> usize {
        self.tie_offset = self.tie_offset.wrapping_add(1);
        let n = eligible.len();
        let mut best = eligible[self.tie_offset % n];
        for k in 0..n {
            let i = eligible[(self.tie_offset + k) % n];
            if load_less(&servers[i], &servers[best]) {
                best = i;
            }
        }
        best
    }
}

/// `a` has fewer connections per weight than `b` (cross-multiplied: no division).
fn load_less(a: &Candidate, b: &Candidate) -> bool {
    u64::from(a.active) * u64::from(b.weight) < u64::from(b.active) * u64::from(a.weight)
}

/// Usable, not excluded, primaries (or backups if no primary is usable), preferring those
/// with room.
fn eligible(servers: &[Candidate], exclude: &[usize]) -> Indices {
    let usable = |backup: bool| -> Indices {
        (0..servers.len())
            .filter(|i| servers[*i].usable && servers[*i].backup == backup && !exclude.contains(i))
            .collect()
    };
    let mut set = usable(false);
    if set.is_empty() && !servers.iter().any(|s| s.usable && !s.backup) {
        set = usable(true);
    }
    if set.iter().any(|&i| !servers[i].full) {
        set.retain(|i| !servers[*i].full);
    }
    set
}

/// Server indices, inline up to a typical backend's size: a pick allocates nothing.
type Indices = smallvec::SmallVec<[usize; 16]>;

/// Weighted rendezvous hashing: each server scores `weight / -ln(h)` for a hash `h` of
/// (client, server) in (0, 1); the highest score wins. Removing a server moves only the
/// clients that scored highest on it, and a server's share is proportional to its weight.
fn rendezvous(servers: &[Candidate], eligible: &[usize], key: u64) -> usize {
    let score = |i: usize| {
        let h = mix(key ^ mix(servers[i].id));
        // 53 high bits to (0, 1): never 0, never 1.
        let u = ((h >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
        f64::from(servers[i].weight) / -u.ln()
    };
    let mut best = eligible[0];
    let mut best_score = score(best);
    for &i in &eligible[1..] {
        let s = score(i);
        if s > best_score {
            best = i;
            best_score = s;
        }
    }
    best
}

/// Power of two choices: two distinct random servers, the less loaded wins.
fn two_choices(
    servers: &[Candidate],
    eligible: &[usize],
    random: &mut impl FnMut() -> u64,
) -> usize {
    let n = eligible.len() as u64;
    if n == 1 {
        return eligible[0];
    }
    let a = (random() % n) as usize;
    let mut b = (random() % (n - 1)) as usize;
    if b >= a {
        b += 1;
    }
    let (a, b) = (eligible[a], eligible[b]);
    if load_less(&servers[b], &servers[a]) {
        b
    } else {
        a
    }
}

/// SplitMix64's finalizer: a fast, well-distributed 64-bit mix.
pub fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// A stable 64-bit hash of a byte string (FNV-1a, then mixed), for server ids and client
/// addresses; independent of Rust's randomized `DefaultHasher`.
pub fn hash_bytes(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    mix(h)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn servers(weights: &[u32]) -> Vec<Candidate> {
        weights
            .iter()
            .enumerate()
            .map(|(i, &w)| Candidate {
                id: hash_bytes(format!("s{i}").as_bytes()),
                weight: w,
                active: 0,
                usable: true,
                backup: false,
                full: false,
            })
            .collect()
    }

    fn counts(b: &mut Balancer, s: &[Candidate], n: usize) -> Vec<usize> {
        let mut c = vec![0; s.len()];
        let mut seed = 1u64;
        for k in 0..n {
            let i = b
                .pick(s, &[], hash_bytes(&k.to_le_bytes()), || {
                    seed = mix(seed);
                    seed
                })
                .unwrap();
            c[i] += 1;
        }
        c
    }

    #[test]
    fn round_robin_follows_weights_exactly_and_smoothly() {
        let s = servers(&[5, 1, 1]);
        let mut b = Balancer::new(Balance::Roundrobin, 3);
        let seq: Vec<usize> = (0..7).map(|_| b.pick(&s, &[], 0, || 0).unwrap()).collect();
        // nginx's smooth weighted round robin: a a b a c a a, never five a's in a row.
        assert_eq!(seq, [0, 0, 1, 0, 2, 0, 0]);
        assert_eq!(counts(&mut b, &s, 700), [500, 100, 100]);
    }

    #[test]
    fn round_robin_with_equal_weights_cycles() {
        let s = servers(&[1, 1, 1]);
        let mut b = Balancer::new(Balance::Roundrobin, 3);
        let seq: Vec<usize> = (0..6).map(|_| b.pick(&s, &[], 0, || 0).unwrap()).collect();
        assert_eq!(seq, [0, 1, 2, 0, 1, 2]);
    }

    #[test]
    fn down_servers_are_skipped_and_backups_used_only_when_no_primary_is_up() {
        let mut s = servers(&[1, 1, 1]);
        s[2].backup = true;
        s[0].usable = false;
        let mut b = Balancer::new(Balance::Roundrobin, 3);
        assert_eq!(counts(&mut b, &s, 10), [0, 10, 0]);
        s[1].usable = false;
        assert_eq!(counts(&mut b, &s, 10), [0, 0, 10]);
        s[2].usable = false;
        assert_eq!(b.pick(&s, &[], 0, || 0), None);
    }

    #[test]
    fn excluded_servers_are_not_picked_but_backups_stay_out_while_a_primary_is_up() {
        let mut s = servers(&[1, 1]);
        s[1].backup = true;
        let mut b = Balancer::new(Balance::Roundrobin, 2);
        // The only primary was tried already: no pick, rather than a backup while it is up.
        assert_eq!(b.pick(&s, &[0], 0, || 0), None);
    }

    #[test]
    fn full_servers_are_avoided_while_another_has_room() {
        let mut s = servers(&[1, 1]);
        s[0].full = true;
        for algo in [
            Balance::Roundrobin,
            Balance::Leastconn,
            Balance::Random,
            Balance::First,
            Balance::Source,
        ] {
            let mut b = Balancer::new(algo, 2);
            assert_eq!(counts(&mut b, &s, 20), [0, 20], "{algo:?}");
        }
        s[1].full = true;
        let mut b = Balancer::new(Balance::First, 2);
        assert_eq!(b.pick(&s, &[], 0, || 0), Some(0), "all full: queue on one");
    }

    #[test]
    fn least_connections_counts_per_weight_and_spreads_ties() {
        let mut s = servers(&[1, 2, 1]);
        s[0].active = 3;
        s[1].active = 4; // 2 per weight unit
        s[2].active = 1;
        let mut b = Balancer::new(Balance::Leastconn, 3);
        assert_eq!(b.pick(&s, &[], 0, || 0), Some(2));
        let s = servers(&[1, 1, 1]);
        assert_eq!(counts(&mut b, &s, 30), [10, 10, 10]);
    }

    #[test]
    fn first_takes_the_first_with_room() {
        let mut s = servers(&[1, 1, 1]);
        let mut b = Balancer::new(Balance::First, 3);
        assert_eq!(counts(&mut b, &s, 5), [5, 0, 0]);
        s[0].full = true;
        assert_eq!(counts(&mut b, &s, 5), [0, 5, 0]);
    }

    #[test]
    fn random_two_choices_prefers_the_less_loaded_and_spreads_evenly() {
        let s = servers(&[1, 1, 1, 1]);
        let mut b = Balancer::new(Balance::Random, 4);
        let c = counts(&mut b, &s, 40_000);
        for n in c {
            assert!((9_000..11_000).contains(&n), "{n}");
        }
        let mut s = servers(&[1, 1]);
        s[0].active = 10;
        let mut b = Balancer::new(Balance::Random, 2);
        assert_eq!(counts(&mut b, &s, 100), [0, 100]);
    }

    #[test]
    fn source_hash_is_sticky_and_weighted() {
        let s = servers(&[1, 1, 2]);
        let mut b = Balancer::new(Balance::Source, 3);
        let key = hash_bytes(b"198.51.100.7");
        let first = b.pick(&s, &[], key, || 0);
        for _ in 0..10 {
            assert_eq!(b.pick(&s, &[], key, || 0), first);
        }
        let c = counts(&mut b, &s, 40_000);
        assert!((9_000..11_000).contains(&c[0]), "{c:?}");
        assert!((9_000..11_000).contains(&c[1]), "{c:?}");
        assert!((19_000..21_000).contains(&c[2]), "{c:?}");
    }

    #[test]
    fn source_hash_removing_one_of_n_moves_only_its_share() {
        let n = 10;
        let mut s = servers(&vec![1; n]);
        let mut b = Balancer::new(Balance::Source, n);
        let clients: Vec<u64> = (0..20_000u64)
            .map(|c| hash_bytes(&c.to_le_bytes()))
            .collect();
        let before: Vec<usize> = clients
            .iter()
            .map(|&k| b.pick(&s, &[], k, || 0).unwrap())
            .collect();
        s[3].usable = false;
        let after: Vec<usize> = clients
            .iter()
            .map(|&k| b.pick(&s, &[], k, || 0).unwrap())
            .collect();
        let moved = before.iter().zip(&after).filter(|(a, b)| a != b).count();
        let on_removed = before.iter().filter(|&&a| a == 3).count();
        // Exactly the removed server's clients move, and they are about 1/N of all.
        assert_eq!(moved, on_removed);
        assert!((1_600..2_400).contains(&moved), "{moved}");
        // And when it returns, the same clients come back.
        s[3].usable = true;
        let back: Vec<usize> = clients
            .iter()
            .map(|&k| b.pick(&s, &[], k, || 0).unwrap())
            .collect();
        assert_eq!(back, before);
    }
}
