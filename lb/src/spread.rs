//! Keeping the workers' shares of open connections even.
//!
//! Each worker accepts on its own `SO_REUSEPORT` socket, and the kernel picks the socket by a
//! hash of the client's address and port. Over many short connections that is fair; a set of
//! long-lived ones (a client's pool of kept-alive HTTP or database connections) lands
//! unevenly: 64 connections split 29/35 or worse about half the time, 16 split 6/10. The
//! worker with fewer connections then runs out of work and parks more often while the other
//! one's clients wait, which is where `bench/run.sh --unpinned` saw Tether behind HAProxy on
//! kept-alive traffic. HAProxy's listeners pass a new connection to the least loaded thread,
//! and Envoy's `exact_balance` does the same.
//!
//! So a worker that accepts a connection while it holds clearly more than the least loaded
//! one hands the connection over ([`choose`]). "Clearly" is a margin that grows with the
//! load. Short connections still move often, as their counts jitter past any margin that
//! would leave a pool of long-lived ones even (about 40 % of them under 64 concurrent
//! `Connection: close` clients); a move costs two `epoll_ctl` and a wake-up of the other
//! thread, and that workload measured faster than the build before the hand-over.

use prometheus::{IntCounter, IntGauge};
use tokio::runtime::Handle;
use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;

/// The workers a connection may be handed to, and what each holds.
pub struct Spread {
    /// One runtime per worker, worker 0 first; empty when the balancer runs on one runtime
    /// it did not make (tests), which never hands connections over.
    handles: Vec<Handle>,
    /// Connections open on each worker (`tether_lb_worker_connections`).
    open: Vec<IntGauge>,
    /// Each worker's child of the hard stop. A relay waits on its worker's token: a token
    /// shared by every worker would take one lock, contended across threads, on every
    /// wake-up of every connection.
    stops: Vec<CancellationToken>,
    moved: IntCounter,
}

/// A connection's place on a worker; dropping it gives the place back.
pub struct Share {
    /// The worker that runs the connection.
    pub worker: usize,
    open: IntGauge,
}

impl Drop for Share {
    fn drop(&mut self) {
        self.open.dec();
    }
}

/// Where a newly accepted connection goes.
pub enum Assigned {
    /// It stays on the worker that accepted it.
    Here(Share),
    /// It moves to the worker whose runtime this is.
    Move(Share, Handle),
}

impl Spread {
    /// The spread over `handles` (one per worker), its gauges in `metrics`, its stop tokens
    /// children of `hard_stop`.
    pub fn new(handles: Vec<Handle>, metrics: &Metrics, hard_stop: &CancellationToken) -> Spread {
        let n = handles.len().max(1);
        Spread {
            open: (0..n)
                .map(|i| {
                    metrics
                        .worker_connections
                        .with_label_values(&[&i.to_string()])
                })
                .collect(),
            stops: (0..n).map(|_| hard_stop.child_token()).collect(),
            moved: metrics.worker_handoffs.clone(),
            handles,
        }
    }

    /// Places a connection that worker `me` accepted.
    pub fn assign(&self, me: usize) -> Assigned {
        let me = me.min(self.open.len() - 1);
        let target = if self.handles.len() > 1 {
            choose(me, self.open.iter().map(IntGauge::get))
        } else {
            None
        };
        let worker = target.unwrap_or(me);
        // Counted at once, before the connection reaches its worker, so that the next
        // accepts (on any worker) already see it there.
        self.open[worker].inc();
        let share = Share {
            worker,
            open: self.open[worker].clone(),
        };
        match target {
            Some(w) => {
                self.moved.inc();
                Assigned::Move(share, self.handles[w].clone())
            }
            None => Assigned::Here(share),
        }
    }

    /// The token that closes `worker`'s connections when the grace period is over.
    pub fn stop(&self, worker: usize) -> &CancellationToken {
        &self.stops[worker.min(self.stops.len() - 1)]
    }
}

/// The worker that should take a connection accepted by `me`, given the connections each
/// worker holds, or `None` to keep it: the least loaded worker, when `me` holds at least a
/// margin more (2, or an eighth of its load when that is more). Ties go to the lowest index.
pub fn choose(me: usize, open: impl Iterator<Item = i64>) -> Option<usize> {
    let mut mine = None;
    let mut least: Option<(i64, usize)> = None;
    for (i, n) in open.enumerate() {
        if i == me {
            mine = Some(n);
        }
        if least.is_none_or(|(min, _)| n < min) {
            least = Some((n, i));
        }
    }
    let (mine, (min, least)) = (mine?, least?);
    let margin = (mine / 8).max(2);
    (least != me && mine - min >= margin).then_some(least)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_even_or_nearly_even_split_keeps_the_connection() {
        assert_eq!(choose(0, [0, 0].into_iter()), None);
        assert_eq!(choose(0, [1, 0].into_iter()), None);
        assert_eq!(choose(1, [8, 9].into_iter()), None);
        assert_eq!(choose(0, [5].into_iter()), None);
    }

    #[test]
    fn a_worker_two_ahead_hands_over_to_the_least_loaded() {
        assert_eq!(choose(0, [2, 0].into_iter()), Some(1));
        assert_eq!(choose(2, [5, 3, 5, 4].into_iter()), Some(1));
        // Ties among the least loaded: the lowest index.
        assert_eq!(choose(3, [1, 1, 4, 3].into_iter()), Some(0));
    }

    #[test]
    fn the_margin_grows_with_the_load() {
        // 32 open: a margin of 4, so 29 on the other worker is not enough.
        assert_eq!(choose(0, [32, 29].into_iter()), None);
        assert_eq!(choose(0, [32, 28].into_iter()), Some(1));
        assert_eq!(choose(0, [800, 701].into_iter()), None);
        assert_eq!(choose(0, [800, 700].into_iter()), Some(1));
    }

    #[test]
    fn long_lived_connections_end_up_even() {
        // 64 connections accepted by worker 0 and 1 in the kernel's uneven order (every
        // third one to worker 1) and never closed: the counts end up within the margin.
        let mut open = [0i64, 0];
        for i in 0..64 {
            let me = usize::from(i % 3 == 0);
            let w = choose(me, open.into_iter()).unwrap_or(me);
            open[w] += 1;
        }
        assert!((open[0] - open[1]).abs() <= 4, "{open:?}");
        // Without handing over it would be 42/22.
    }

    #[test]
    fn an_unknown_worker_keeps_its_connection() {
        assert_eq!(choose(3, [4, 0].into_iter()), None);
        assert_eq!(choose(0, [].into_iter()), None);
    }
}
