//! The per-instance task: open netlink, start the tracks, wait for the interface
//! ([`super::setup`]), then drive the state machine from timers, received adverts, the
//! kernel's link events (a slow poll as a backstop), tracks and the sync group until
//! shutdown or until the interface goes away. A reload's new settings arrive on a watch
//! channel and are applied to the running machine without leaving its state.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tracing::{debug, error, info, warn};

use super::Ctx;
use super::actions::Io;
use super::setup::{Setup, setup};
use super::tracks::Tracks;
use crate::admit::{Admission, Decision};
use crate::config::InstanceConfig;
use crate::fsm::{self, Action, Input, Order, State};
use crate::netlink::Netlink;
use crate::reload::{Change, instance_changes};
use crate::sync::{Follower, Member, peer_fault};
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
pub(super) async fn run(ctx: Ctx) {
    instance(&ctx).await;
    // The STOP notification (and any still queued) runs before the daemon exits.
    if let Some(n) = ctx.take_notifier() {
        n.finish().await;
    }
}

async fn instance(ctx: &Ctx) {
    let name = ctx.cfg().name.clone();
    let nl = match Netlink::open() {
        Ok(n) => n,
        Err(e) => {
            error!(instance = %name, "{e}; instance not started");
            ctx.problem(Some(e.to_string()));
            return;
        }
    };
    // Tracks run for the whole life of the instance; their health feeds a watch channel.
    let mut tracks = Tracks::spawn(&ctx.cfg(), &ctx.shutdown);
    let mut first = true;
    loop {
        let Some(setup) = setup(ctx, &nl, first).await else {
            return;
        };
        first = false;
        match drive(ctx, &nl, setup, &mut tracks).await {
            Exit::Shutdown => return,
            Exit::Restart => continue,
        }
    }
}

/// The machine's parameters from the instance's settings.
fn params(cfg: &InstanceConfig, primary: IpAddr, sync: bool) -> fsm::Params {
    fsm::Params {
        version: cfg.version,
        priority: cfg.priority,
        advert_interval: cfg.advert_interval,
        preempt: cfg.preempt,
        preempt_delay: cfg.preempt_delay,
        primary,
        garp_delay: cfg.garp_delay,
        sync,
    }
}

/// What feeds the machine its effective priority (tracks, the link, the sync group's
/// faults) and the sync group's orders.
struct Priority<'a> {
    ctx: &'a Ctx,
    group_rx: Option<watch::Receiver<Vec<Member>>>,
    last: Option<Option<u8>>,
    /// Our own fault as last computed (what the group sees).
    own_fault: bool,
    follower: Follower,
}

impl Priority<'_> {
    /// Own fault (for the sync group) and the effective priority (`None` = fault).
    fn compute(&self, cfg: &InstanceConfig, tracks: &Tracks, link_up: bool) -> (bool, Option<u8>) {
        let mut tracked = tracks.snapshot();
        tracked.push(Tracked {
            weight: 0,
            up: link_up,
        });
        let own = effective_priority(cfg.priority, &tracked);
        let own_fault = own.is_none();
        let peer_fault = match (&self.group_rx, &self.ctx.group) {
            (Some(r), Some((_, pos))) => peer_fault(&r.borrow(), *pos),
            _ => false,
        };
        (own_fault, if peer_fault { None } else { own })
    }

    /// Publishes our state to the sync group (a no-op when it did not change).
    fn publish(&self, machine: &fsm::Instance) {
        let Some((tx, pos)) = &self.ctx.group else {
            return;
        };
        let me = Member {
            fault: self.own_fault,
            state: machine.state(),
            wants_master: machine.wants_master(),
            step_downs: machine.step_downs(),
        };
        tx.send_if_modified(|v| match v.get_mut(*pos) {
            Some(x) if *x != me => {
                if me.wants_master && !x.wants_master {
                    info!(instance = %self.ctx.cfg().name, "Master_Down timer ran out; waiting for its sync group to go MASTER together");
                }
                *x = me;
                true
            }
            _ => false,
        });
    }

    /// What the sync group orders us to do, with our own entry as the machine is now.
    fn order(&mut self, machine: &fsm::Instance) -> Option<Order> {
        let (Some(r), Some((_, pos))) = (&self.group_rx, &self.ctx.group) else {
            return None;
        };
        let mut members = r.borrow().clone();
        if let Some(me) = members.get_mut(*pos) {
            me.state = machine.state();
            me.wants_master = machine.wants_master();
        }
        self.follower.decide(&members, *pos)
    }

    /// Publishes our fault state and feeds the machine the effective priority if it moved.
    fn update(
        &mut self,
        machine: &mut fsm::Instance,
        cfg: &InstanceConfig,
        tracks: &Tracks,
        link_up: bool,
    ) -> Vec<Action> {
        let (own_fault, eff) = self.compute(cfg, tracks, link_up);
        self.own_fault = own_fault;
        if self.last == Some(eff) {
            return Vec::new();
        }
        self.last = Some(eff);
        machine.handle(Instant::now(), Input::Tracking(eff))
    }
}

async fn drive(ctx: &Ctx, nl: &Netlink, s: Setup, tracks: &mut Tracks) -> Exit {
    let mut live_rx = ctx.live.clone();
    let live = live_rx.borrow_and_update().clone();
    let mut cfg = live.cfg.clone();
    let name = cfg.name.clone();
    let sync = ctx.group.is_some();
    let mut machine = fsm::Instance::new(params(&cfg, s.src, sync));
    let mut io = Io {
        ctx,
        nl,
        s: &s,
        cfg: cfg.clone(),
        held: Vec::new(),
    };
    let mut link_up = s.link.up;
    let mut track_rx = tracks.changed.subscribe();
    let mut prio = Priority {
        ctx,
        group_rx: ctx.group.as_ref().map(|(tx, _)| tx.subscribe()),
        last: None,
        own_fault: false,
        follower: Follower::default(),
    };
    tracks.poll_interfaces(nl).await;
    let acts = prio.update(&mut machine, &cfg, tracks, link_up);
    io.exec(&mut machine, acts).await;
    let acts = machine.handle(Instant::now(), Input::Startup);
    io.exec(&mut machine, acts).await;
    prio.publish(&machine);

    let mut admission = Admission::new(live.idx, &live.siblings, &cfg, s.src);
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
                if !io.held.is_empty() {
                    io.remove_vips().await;
                }
                prio.publish(&machine);
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
                let acts = prio.update(&mut machine, &cfg, tracks, link_up);
                io.exec(&mut machine, acts).await;
            }
            Some(Ok(())) = async { match prio.group_rx.as_mut() { Some(r) => Some(r.changed().await), None => None } } => {
                let acts = prio.update(&mut machine, &cfg, tracks, link_up);
                io.exec(&mut machine, acts).await;
                if let Some(order) = prio.order(&machine) {
                    info!(instance = %name, "sync group: {}", match order { Order::Master => "every member wants MASTER", Order::Backup => "a member stepped down to BACKUP" });
                    let acts = machine.handle(Instant::now(), Input::Sync(order));
                    io.exec(&mut machine, acts).await;
                }
            }
            Ok(()) = live_rx.changed() => {
                let live = live_rx.borrow_and_update().clone();
                let old = std::mem::replace(&mut cfg, live.cfg.clone());
                io.cfg = cfg.clone();
                admission = Admission::new(live.idx, &live.siblings, &cfg, s.src);
                let changes = match instance_changes(&old, &cfg) {
                    Ok(c) => c,
                    // The daemon restarts such an instance instead; never seen here.
                    Err(r) => {
                        warn!(instance = %name, "reload: {r}; cannot apply in place");
                        Vec::new()
                    }
                };
                if !changes.is_empty() {
                    if changes.contains(&Change::Tracks) {
                        tracks.replace(&cfg, &ctx.shutdown);
                        track_rx = tracks.changed.subscribe();
                    }
                    apply(&mut io, &mut machine, &changes, s.src).await;
                    let acts = prio.update(&mut machine, &cfg, tracks, link_up);
                    io.exec(&mut machine, acts).await;
                    let list: Vec<String> = changes.iter().map(ToString::to_string).collect();
                    info!(instance = %name, state = machine.state().keepalived_name(), "reload applied in place: {}", list.join(", "));
                }
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
                        let acts = prio.update(&mut machine, &cfg, tracks, link_up);
                        io.exec(&mut machine, acts).await;
                    }
                    tracks.poll_interfaces(nl).await;
                }
                Ok(_) => {
                    warn!(instance = %name, interface = %cfg.interface, "interface gone or replaced; setting up again");
                    let acts = prio.update(&mut machine, &cfg, tracks, false);
                    io.exec(&mut machine, acts).await;
                    let acts = machine.handle(Instant::now(), Input::Shutdown);
                    io.exec(&mut machine, acts).await;
                    prio.publish(&machine);
                    return Exit::Restart;
                }
                Err(e) => debug!(instance = %name, "link poll: {e}"),
            }
        }
        // The group sees every change of state (and of wanting to be master).
        prio.publish(&machine);
    }
}

/// Applies a reload's in-place changes to the running machine and the interface: nothing
/// here sends an advert or leaves the current state. VIPs are removed before new ones are
/// added (a prefix change is both), and only new VIPs are announced.
async fn apply(io: &mut Io<'_>, machine: &mut fsm::Instance, changes: &[Change], src: IpAddr) {
    let cfg = io.cfg.clone();
    if changes
        .iter()
        .any(|c| matches!(c, Change::Priority { .. } | Change::Timers))
    {
        let sync = io.ctx.group.is_some();
        let acts = machine.handle(Instant::now(), Input::Configure(params(&cfg, src, sync)));
        io.exec(machine, acts).await;
    }
    if changes.contains(&Change::Notify) {
        io.ctx.replace_notifier(&cfg);
    }
    let master = machine.state() == State::Master;
    for c in changes {
        if let Change::VipsRemoved(v) = c {
            io.remove(v).await;
        }
    }
    for c in changes {
        if let Change::VipsAdded(v) = c {
            if master {
                io.add_vips(v).await;
                io.garp(v);
            }
        }
    }
}
