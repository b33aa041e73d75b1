//! The relay's one idle timer: what each pump is doing, and which side an idle timeout
//! blames.

use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::*;

/// Which side a pump reads from.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Side {
    Client,
    Server,
}

/// What a pump is doing, for deciding which side an idle timeout blames.
pub(super) const READING: u8 = 0;
pub(super) const WRITING: u8 = 1;

/// State the two pumps share with the relay's single idle timer. One timer per connection
/// (rather than one per wait) keeps the per-connection future small and spares every
/// wait a timer-wheel insert and removal.
pub(super) struct Activity {
    pub(super) start: Instant,
    pub(super) last_ms: AtomicU64,
    /// Whether the pumps may splice (see [`Mode`]).
    pub(super) splice: bool,
    /// `READING` or `WRITING`, client to server and server to client.
    pub(super) up_state: AtomicU8,
    pub(super) down_state: AtomicU8,
    /// Bytes moved so far, client to server and server to client.
    pub(super) up_bytes: AtomicU64,
    pub(super) down_bytes: AtomicU64,
    /// Directions that have seen their source's end of stream.
    pub(super) ended: AtomicU8,
}

impl Activity {
    pub(super) fn new(splice: bool) -> Activity {
        Activity {
            start: Instant::now(),
            last_ms: AtomicU64::new(0),
            splice,
            up_state: AtomicU8::new(READING),
            down_state: AtomicU8::new(READING),
            up_bytes: AtomicU64::new(0),
            down_bytes: AtomicU64::new(0),
            ended: AtomicU8::new(0),
        }
    }
    pub(super) fn touch(&self) {
        self.last_ms
            .store(self.start.elapsed().as_millis() as u64, Ordering::Relaxed);
    }
    pub(super) fn idle_for(&self) -> Duration {
        let now = self.start.elapsed().as_millis() as u64;
        Duration::from_millis(now.saturating_sub(self.last_ms.load(Ordering::Relaxed)))
    }
    pub(super) fn state(&self, side: Side) -> &AtomicU8 {
        match side {
            Side::Client => &self.up_state,
            Side::Server => &self.down_state,
        }
    }
    pub(super) fn moved(&self, side: Side, n: u64) {
        let c = match side {
            Side::Client => &self.up_bytes,
            Side::Server => &self.down_bytes,
        };
        c.fetch_add(n, Ordering::Relaxed);
    }
    /// Whom an idle spell blames, given which directions are still open: a direction
    /// waiting to read blames its source, one stuck writing blames its destination. Returns
    /// the end if some applicable timeout has passed, else how long until the next one.
    pub(super) fn check_idle(
        &self,
        up_open: bool,
        down_open: bool,
        client_timeout: Duration,
        server_timeout: Duration,
    ) -> Result<End, Duration> {
        let idle = self.idle_for();
        let mut candidates: [Option<(Duration, End)>; 2] = [None, None];
        for (i, (open, side)) in [(up_open, Side::Client), (down_open, Side::Server)]
            .into_iter()
            .enumerate()
        {
            if !open {
                continue;
            }
            let blames_client = match side {
                Side::Client => self.up_state.load(Ordering::Relaxed) == READING,
                Side::Server => self.down_state.load(Ordering::Relaxed) == WRITING,
            };
            candidates[i] = Some(if blames_client {
                (client_timeout, End::ClientTimeout)
            } else {
                (server_timeout, End::ServerTimeout)
            });
        }
        let first = candidates.into_iter().flatten().min_by_key(|(t, _)| *t);
        match first {
            Some((t, end)) if idle >= t => Ok(end),
            Some((t, _)) => Err(t - idle),
            // Nothing open: the relay is finishing anyway.
            None => Err(client_timeout.min(server_timeout)),
        }
    }
}
