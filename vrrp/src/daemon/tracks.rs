//! The instance's tracked objects: built-in checks from tether-health run as monitors,
//! interface tracks read on the link poll; their health feeds a watch channel. A reload
//! that edits the tracks replaces them; a track that checks the same thing as before keeps
//! its health, so editing a weight or an interval does not fault the instance.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tether_health::check::{CheckKind, Checker, Health, MonitorSpec, spawn_monitor};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::info;

use crate::config::{InstanceConfig, TrackKind};
use crate::netlink::Netlink;
use crate::track::Tracked;

/// The instance's tracked objects: built-in checks from tether-health run as monitors;
/// interface tracks are read on the link poll.
pub(super) struct Tracks {
    weights: Vec<i32>,
    health: Arc<Mutex<Vec<TrackHealth>>>,
    interfaces: Vec<(usize, String)>,
    pub(super) changed: watch::Sender<()>,
    /// Bumped when the link comes back: a check counts as up again only after a pass
    /// observed since then, so a master returning from a cut does not take the VIP on
    /// the strength of results from before the cut (the tracked balancer may not yet
    /// know its servers are unreachable, nor that they are back).
    epoch: Arc<AtomicU64>,
    /// What each track checks (to carry health over a reload).
    kinds: Vec<TrackKind>,
    /// Stops this set's monitors (a child of the instance's shutdown).
    stop: CancellationToken,
}

#[derive(Clone, Copy, Default)]
struct TrackHealth {
    up: bool,
    /// Epoch of the last passing check; interface tracks use `u64::MAX` (always fresh).
    ok_epoch: u64,
}

impl TrackHealth {
    fn effective(self, epoch: u64) -> bool {
        self.up && (self.ok_epoch == epoch || self.ok_epoch == u64::MAX)
    }
}

impl Tracks {
    pub(super) fn spawn(cfg: &InstanceConfig, shutdown: &CancellationToken) -> Tracks {
        Self::spawn_seeded(cfg, shutdown, &[], 0)
    }

    /// A reload changed the tracks: stops these monitors and starts the new set. A new
    /// track checking what an old one checked starts from the old one's health; others
    /// start unknown (counted as failing), as at start. Subscribers of `changed` must
    /// subscribe again.
    pub(super) fn replace(&mut self, cfg: &InstanceConfig, shutdown: &CancellationToken) {
        let h = self.health.lock().map(|v| v.clone()).unwrap_or_default();
        let seed: Vec<(TrackKind, TrackHealth)> = self.kinds.iter().cloned().zip(h).collect();
        let epoch = self.epoch.load(Ordering::SeqCst);
        let new = Self::spawn_seeded(cfg, shutdown, &seed, epoch);
        self.stop.cancel();
        *self = new;
        self.changed.send_replace(());
    }

    fn spawn_seeded(
        cfg: &InstanceConfig,
        shutdown: &CancellationToken,
        seed: &[(TrackKind, TrackHealth)],
        epoch: u64,
    ) -> Tracks {
        let stop = shutdown.child_token();
        let (changed, _) = watch::channel(());
        // Unknown counts as down: never take the VIP before the tracked service answered.
        let mut used = vec![false; seed.len()];
        let (start, initial): (Vec<TrackHealth>, Vec<Health>) =
            cfg.tracks
                .iter()
                .map(|t| {
                    let found = seed.iter().enumerate().position(|(j, (k, _))| {
                        !used.get(j).copied().unwrap_or(true) && *k == t.kind
                    });
                    match found.and_then(|j| seed.get(j).map(|s| (j, s.1))) {
                        Some((j, h)) => {
                            if let Some(u) = used.get_mut(j) {
                                *u = true;
                            }
                            (h, if h.up { Health::Up } else { Health::Down })
                        }
                        None => (TrackHealth::default(), Health::Unknown),
                    }
                })
                .unzip();
        let health = Arc::new(Mutex::new(start));
        let epoch = Arc::new(AtomicU64::new(epoch));
        let mut interfaces = Vec::new();
        for (i, t) in cfg.tracks.iter().enumerate() {
            let (kind, target) = match &t.kind {
                TrackKind::Http {
                    addr,
                    path,
                    host,
                    expect_status,
                } => (
                    CheckKind::Http {
                        path: path.clone(),
                        host: Some(host.clone()),
                        expect_status: *expect_status,
                    },
                    *addr,
                ),
                TrackKind::Tcp { addr } => (CheckKind::Tcp, *addr),
                TrackKind::Exec { argv } => (
                    CheckKind::Exec { argv: argv.clone() },
                    SocketAddr::from(([127, 0, 0, 1], 0)),
                ),
                TrackKind::Interface { name } => {
                    interfaces.push((i, name.clone()));
                    continue;
                }
            };
            let spec = MonitorSpec {
                checker: Checker {
                    kind,
                    target,
                    timeout: t.timeout,
                },
                interval: t.interval,
                fast_interval: t.fast_interval,
                down_interval: t.down_interval,
                rise: t.rise,
                fall: t.fall,
                initial: initial.get(i).copied().unwrap_or(Health::Unknown),
            };
            let h = health.clone();
            let ch = changed.clone();
            let ep = epoch.clone();
            let instance = cfg.name.clone();
            spawn_monitor(spec, stop.clone(), move |ev| {
                if let Some(tr) = ev.transition {
                    info!(instance = %instance, track = i, "track {} -> {}", tr.from.as_str(), tr.to.as_str());
                }
                let e = ep.load(Ordering::SeqCst);
                let mut changed = false;
                if let Ok(mut v) = h.lock() {
                    if let Some(x) = v.get_mut(i) {
                        let before = x.effective(e);
                        x.up = ev.state == Health::Up;
                        if ev.result.is_ok() {
                            x.ok_epoch = e;
                        }
                        changed = x.effective(e) != before;
                    }
                }
                if changed {
                    ch.send_replace(());
                }
            });
        }
        Tracks {
            weights: cfg.tracks.iter().map(|t| t.weight).collect(),
            health,
            interfaces,
            changed,
            epoch,
            kinds: cfg.tracks.iter().map(|t| t.kind.clone()).collect(),
            stop,
        }
    }

    pub(super) fn snapshot(&self) -> Vec<Tracked> {
        let e = self.epoch.load(Ordering::SeqCst);
        let h = self.health.lock().map(|v| v.clone()).unwrap_or_default();
        self.weights
            .iter()
            .zip(h)
            .map(|(&weight, t)| Tracked {
                weight,
                up: t.effective(e),
            })
            .collect()
    }

    /// The link came back: require a fresh pass from every check.
    pub(super) fn new_epoch(&self) {
        self.epoch.fetch_add(1, Ordering::SeqCst);
    }

    pub(super) async fn poll_interfaces(&self, nl: &Netlink) {
        for (i, name) in &self.interfaces {
            let up = matches!(nl.link(name).await, Ok(Some(l)) if l.up);
            let mut changed = false;
            if let Ok(mut v) = self.health.lock() {
                if let Some(x) = v.get_mut(*i) {
                    changed = x.up != up;
                    *x = TrackHealth {
                        up,
                        ok_epoch: u64::MAX,
                    };
                }
            }
            if changed {
                self.changed.send_replace(());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn instance(tracks: &[(&str, i32)]) -> InstanceConfig {
        let mut text = String::from(
            "[[instance]]\nname = \"VI_1\"\ninterface = \"eth0\"\nvrid = 51\n\
             virtual_addresses = [\"192.0.2.100/24\"]\n",
        );
        for (iface, weight) in tracks {
            text += &format!(
                "[[instance.track]]\nkind = \"interface\"\ninterface = \"{iface}\"\nweight = {weight}\n"
            );
        }
        let src = tether_health::config::Source::from_text("vrrp.toml", text);
        let cfg = crate::config::parse(&src).unwrap_or_else(|e| panic!("{e}"));
        cfg.instances.into_iter().next().unwrap()
    }

    fn set_up(t: &Tracks, i: usize) {
        if let Ok(mut v) = t.health.lock() {
            v[i] = TrackHealth {
                up: true,
                ok_epoch: u64::MAX,
            };
        }
    }

    /// A reload that edits a weight keeps the track's health (no fault while it is
    /// checked again); a new track starts unknown, counted as failing.
    #[tokio::test]
    async fn replace_keeps_the_health_of_tracks_that_check_the_same_thing() {
        let stop = CancellationToken::new();
        let mut t = Tracks::spawn(&instance(&[("eth1", 0), ("eth2", -10)]), &stop);
        set_up(&t, 0);
        set_up(&t, 1);
        let mut changed = t.changed.subscribe();
        // eth2's weight edited and moved first, eth1 dropped, eth3 new.
        t.replace(&instance(&[("eth2", -20), ("eth3", 0)]), &stop);
        let snap = t.snapshot();
        assert_eq!(snap.len(), 2);
        assert_eq!(
            (snap[0].weight, snap[0].up),
            (-20, true),
            "eth2 kept its health"
        );
        assert_eq!((snap[1].weight, snap[1].up), (0, false), "eth3 is unknown");
        assert_eq!(
            t.interfaces,
            vec![(0, "eth2".to_string()), (1, "eth3".to_string())]
        );
        // The old channel is gone with the old set: subscribers subscribe again.
        assert!(changed.changed().await.is_err());
        stop.cancel();
    }

    #[test]
    fn a_check_counts_as_up_only_with_a_pass_seen_in_the_current_epoch() {
        let passed_before_the_cut = TrackHealth {
            up: true,
            ok_epoch: 0,
        };
        assert!(passed_before_the_cut.effective(0));
        assert!(
            !passed_before_the_cut.effective(1),
            "the link came back: an old pass does not count"
        );
        let passed_since = TrackHealth {
            up: true,
            ok_epoch: 1,
        };
        assert!(passed_since.effective(1));
        let interface = TrackHealth {
            up: true,
            ok_epoch: u64::MAX,
        };
        assert!(interface.effective(7), "interface tracks are always fresh");
        assert!(
            !TrackHealth::default().effective(0),
            "unknown counts as down"
        );
    }
}
