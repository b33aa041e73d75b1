//! The per-instance task: open netlink, start the tracks, wait for the interface
//! ([`super::setup`]), then drive the state machine from timers, received adverts, the
//! kernel's link events (a slow poll as a backstop), tracks and the sync group until
//! shutdown or until the interface goes away.

use std::time::{Duration, Instant};

use tokio::sync::watch;
use tracing::{debug, error, info, warn};

use super::Ctx;
use super::actions::Io;
use super::setup::{Setup, setup};
use super::tracks::Tracks;
use crate::admit::{Admission, Decision};
use crate::fsm::{self, Action, Input};
use crate::netlink::Netlink;
use crate::track::{Tracked, effective_priority};

/// How often the interface's link state is read besides the kernel's link events: a
/// backstop, should an event be lost (the netlink socket's buffer overflowed).
const LINK_POLL: Duration = Duration::from_secs(1);

/// Why [`drive`] returned.
enum Exit {
    Shutdown,
    /// The interface vanished or changed index: set up again.
    Restart,
}

/// Runs one instance until shutdown, then lets its notify queue drain.
pub(super) async fn run(mut ctx: Ctx) {
    instance(&ctx).await;
    // The STOP notification (and any still queued) runs before the daemon exits.
    if let Some(n) = ctx.notifier.take() {
        n.finish().await;
    }
}

async fn instance(ctx: &Ctx) {
    let name = ctx.cfg.name.clone();
    let nl = match Netlink::open() {
        Ok(n) => n,
        Err(e) => {
            error!(instance = %name, "{e}; instance not started");
            ctx.problem(Some(e.to_string()));
            return;
        }
    };
    // Tracks run for the whole life of the instance; their health feeds a watch channel.
    let tracks = Tracks::spawn(&ctx.cfg, ctx.shutdown.clone());
    let mut first = true;
    loop {
        let Some(setup) = setup(ctx, &nl, first).await else {
            return;
        };
        first = false;
        match drive(ctx, &nl, setup, &tracks).await {
            Exit::Shutdown => return,
            Exit::Restart => continue,
        }
    }
}

async fn drive(ctx: &Ctx, nl: &Netlink, s: Setup, tracks: &Tracks) -> Exit {
    let cfg = ctx.cfg.clone();
    let name = cfg.name.clone();
    let mut machine = fsm::Instance::new(fsm::Params {
        version: cfg.version,
        priority: cfg.priority,
        advert_interval: cfg.advert_interval,
        preempt: cfg.preempt,
        preempt_delay: cfg.preempt_delay,
        primary: s.src,
        garp_delay: cfg.garp_delay,
    });
    let mut io = Io {
        ctx,
        nl,
        s: &s,
        vips_held: false,
    };
    let mut link_up = s.link.up;
    let mut track_rx = tracks.changed.subscribe();
    let mut group_rx = ctx.group.as_ref().map(|(tx, _)| tx.subscribe());
    let mut last_eff = None::<Option<u8>>;
    let compute =
        |link_up: bool, group_rx: &Option<watch::Receiver<Vec<bool>>>| -> (bool, Option<u8>) {
            let mut tracked = tracks.snapshot();
            tracked.push(Tracked {
                weight: 0,
                up: link_up,
            });
            let own = effective_priority(cfg.priority, &tracked);
            let own_fault = own.is_none();
            let peer_fault = match (group_rx, &ctx.group) {
                (Some(r), Some((_, pos))) => {
                    r.borrow().iter().enumerate().any(|(i, f)| i != *pos && *f)
                }
                _ => false,
            };
            (own_fault, if peer_fault { None } else { own })
        };
    // Publish our fault state and feed the machine the effective priority.
    let mut update = |machine: &mut fsm::Instance,
                      link_up: bool,
                      group_rx: &Option<watch::Receiver<Vec<bool>>>|
     -> Vec<Action> {
        let (own_fault, eff) = compute(link_up, group_rx);
        if let Some((tx, pos)) = &ctx.group {
            tx.send_if_modified(|v| {
                let changed = v.get(*pos).copied() != Some(own_fault);
                if let Some(x) = v.get_mut(*pos) {
                    *x = own_fault;
                }
                changed
            });
        }
        if last_eff == Some(eff) {
            return Vec::new();
        }
        last_eff = Some(eff);
        machine.handle(Instant::now(), Input::Tracking(eff))
    };
    tracks.poll_interfaces(nl).await;
    let acts = update(&mut machine, link_up, &group_rx);
    io.exec(&mut machine, acts).await;
    let acts = machine.handle(Instant::now(), Input::Startup);
    io.exec(&mut machine, acts).await;

    let mut admission = Admission::new(ctx.idx, &ctx.siblings, &cfg, s.src);
    let mut buf = vec![0u8; 2048];
    // Link changes as the kernel announces them: a cable pulled is FAULT within
    // milliseconds. Without the subscription (it could not be made), the poll alone.
    let mut link_events = match crate::netlink::LinkEvents::subscribe() {
        Ok(e) => Some(e),
        Err(e) => {
            warn!(instance = %name, "no link events ({e}); reading the link every second");
            None
        }
    };
    let mut link_poll = tokio::time::interval(LINK_POLL);
    link_poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let far = Duration::from_secs(3600);
    loop {
        let deadline = machine
            .next_deadline()
            .unwrap_or_else(|| Instant::now() + far);
        // A link event or the backstop poll: read the interface's state after the select.
        let mut look = false;
        tokio::select! {
            biased;
            _ = ctx.shutdown.cancelled() => {
                let acts = machine.handle(Instant::now(), Input::Shutdown);
                io.exec(&mut machine, acts).await;
                if io.vips_held {
                    io.remove_vips().await;
                }
                return Exit::Shutdown;
            }
            _ = tokio::time::sleep_until(tokio::time::Instant::from_std(deadline)) => {
                let acts = machine.handle(Instant::now(), Input::Timer);
                io.exec(&mut machine, acts).await;
            }
            r = s.rx.recv(&mut buf) => {
                let got = match r {
                    Ok(got) => got,
                    Err(e) => {
                        debug!(instance = %name, "receive error: {e}");
                        continue;
                    }
                };
                match admission.decide(got) {
                    Decision::Ignore => {}
                    Decision::Drop { reason, warn } => {
                        ctx.metrics.drops.with_label_values(&[&name, reason.label()]).inc();
                        // A foreign cluster on our VRID (or a misconfigured peer): say so
                        // once per source and reason, never per packet.
                        if let Some(src) = warn {
                            warn!(instance = %name, %src, "ignoring adverts for VRID {}: {reason} (logged once; see tether_vrrp_dropped_packets_total)", cfg.vrid);
                        }
                    }
                    Decision::Admit { src, priority, interval, convention, note_convention } => {
                        ctx.metrics.adverts_received.with_label_values(&[&name]).inc();
                        ctx.metrics.checksum.with_label_values(&[&name, convention]).inc();
                        if note_convention {
                            info!(instance = %name, %src, "peer uses the {convention} v3 checksum convention");
                        }
                        let acts = machine.handle(Instant::now(), Input::Advert { src, priority, interval });
                        io.exec(&mut machine, acts).await;
                    }
                }
            }
            event = async {
                match link_events.as_mut() {
                    Some(e) => e.next().await,
                    None => std::future::pending().await,
                }
            }, if link_events.is_some() => {
                if event.is_none() {
                    warn!(instance = %name, "link events ended; reading the link every second");
                    link_events = None;
                }
                look = true;
            }
            _ = link_poll.tick() => look = true,
            Ok(()) = track_rx.changed() => {
                let acts = update(&mut machine, link_up, &group_rx);
                io.exec(&mut machine, acts).await;
            }
            Some(Ok(())) = async { match group_rx.as_mut() { Some(r) => Some(r.changed().await), None => None } } => {
                let acts = update(&mut machine, link_up, &group_rx);
                io.exec(&mut machine, acts).await;
            }
        }
        if look {
            match nl.link(&cfg.interface).await {
                Ok(Some(l)) if l.index == s.link.index => {
                    if l.up != link_up {
                        link_up = l.up;
                        if link_up {
                            info!(instance = %name, interface = %cfg.interface, "link up; waiting for fresh track results");
                            tracks.new_epoch();
                        } else {
                            warn!(instance = %name, interface = %cfg.interface, "link down: FAULT");
                        }
                        let acts = update(&mut machine, link_up, &group_rx);
                        io.exec(&mut machine, acts).await;
                    }
                    tracks.poll_interfaces(nl).await;
                }
                Ok(_) => {
                    warn!(instance = %name, interface = %cfg.interface, "interface gone or replaced; setting up again");
                    let acts = update(&mut machine, false, &group_rx);
                    io.exec(&mut machine, acts).await;
                    let acts = machine.handle(Instant::now(), Input::Shutdown);
                    io.exec(&mut machine, acts).await;
                    return Exit::Restart;
                }
                Err(e) => debug!(instance = %name, "link poll: {e}"),
            }
        }
    }
}
