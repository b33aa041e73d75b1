//! Carrying out what the state machine asks for: adverts, VIPs, gratuitous ARP / NA,
//! and the transition's log line, metrics, status and notify run.

use std::net::IpAddr;
use std::sync::Arc;

use tracing::{debug, error, info};

use super::Ctx;
use super::setup::Setup;
use crate::config::{InstanceConfig, Vip};
use crate::fsm::{self, Action};
use crate::netlink::Netlink;
use crate::packet::{self, Advert, MCAST_V4, MCAST_V6};

/// Carries out the machine's actions.
pub(super) struct Io<'a> {
    pub(super) ctx: &'a Ctx,
    pub(super) nl: &'a Netlink,
    pub(super) s: &'a Setup,
    /// The settings adverts, VIPs and ARPs follow; a reload replaces them.
    pub(super) cfg: Arc<InstanceConfig>,
    /// The VIPs this instance put on the interface (what a removal takes off, whatever
    /// a reload has changed in the settings since).
    pub(super) held: Vec<Vip>,
}

impl Io<'_> {
    pub(super) async fn exec(&mut self, machine: &mut fsm::Instance, actions: Vec<Action>) {
        let cfg = self.cfg.clone();
        let name = cfg.name.as_str();
        for a in actions {
            match a {
                Action::SendAdvert { priority } => self.send_advert(priority),
                Action::AddVips => self.add_vips(&cfg.vips).await,
                Action::RemoveVips => self.remove_vips().await,
                Action::Garp => self.garp(&cfg.vips),
                Action::Transition { from, to } => {
                    info!(instance = %name, "{} -> {} (priority {})", from.keepalived_name(), to.keepalived_name(), machine.effective_priority());
                    self.ctx.metrics.transition(name, from, to);
                    self.ctx.notify(to, machine.effective_priority());
                }
            }
        }
        let eff = machine.effective_priority();
        let st = machine.state();
        self.ctx
            .metrics
            .priority
            .with_label_values(&[name])
            .set(i64::from(eff));
        self.ctx.set_status(|s| {
            s.state = st;
            s.effective_priority = eff;
        });
    }

    /// Adds `vips` to the interface (those not already held).
    pub(super) async fn add_vips(&mut self, vips: &[Vip]) {
        for v in vips {
            if self.held.iter().any(|h| h.addr == v.addr) {
                continue;
            }
            if let Err(e) = self.nl.add_vip(self.s.link.index, *v).await {
                error!(instance = %self.cfg.name, "{e}");
            }
            self.held.push(*v);
        }
    }

    /// Removes every VIP this instance holds.
    pub(super) async fn remove_vips(&mut self) {
        for v in std::mem::take(&mut self.held) {
            self.del(v).await;
        }
    }

    /// Removes those of `vips` this instance holds (a reload dropped them).
    pub(super) async fn remove(&mut self, vips: &[Vip]) {
        for v in vips {
            if let Some(at) = self.held.iter().position(|h| h.addr == v.addr) {
                let h = self.held.remove(at);
                self.del(h).await;
            }
        }
    }

    async fn del(&self, v: Vip) {
        if let Err(e) = self.nl.del_vip(self.s.link.index, v).await {
            error!(instance = %self.cfg.name, "{e}");
        }
    }

    fn send_advert(&self, priority: u8) {
        let cfg = &self.cfg;
        let ad = Advert {
            version: cfg.version,
            vrid: cfg.vrid,
            priority,
            interval_field: cfg.interval_field(),
            addrs: cfg.vips.iter().map(|v| v.addr).collect(),
            auth: cfg.auth.clone(),
        };
        let dsts: Vec<IpAddr> = if cfg.unicast_peers.is_empty() {
            vec![if cfg.is_v6() {
                IpAddr::V6(MCAST_V6)
            } else {
                IpAddr::V4(MCAST_V4)
            }]
        } else {
            cfg.unicast_peers.clone()
        };
        for dst in dsts {
            // The v3 pseudo-header carries the real destination (keepalived >= 1.3.6).
            let msg = ad.encode(self.s.src, dst, cfg.checksum);
            match self.s.tx.send(&msg, dst, self.s.link.index) {
                Ok(()) => self
                    .ctx
                    .metrics
                    .adverts_sent
                    .with_label_values(&[&cfg.name])
                    .inc(),
                // Link down or no route: FAULT handling takes care; do not flood the log.
                Err(e) => debug!(instance = %cfg.name, "sending advert to {dst}: {e}"),
            }
        }
    }

    /// One burst of gratuitous ARPs / unsolicited NAs for `vips` (all of them on becoming
    /// master; only the new ones when a reload adds VIPs).
    pub(super) fn garp(&self, vips: &[Vip]) {
        let cfg = &self.cfg;
        for _ in 0..cfg.garp_repeat {
            for v in vips {
                let r = match v.addr {
                    IpAddr::V4(a) => self.s.frames.send(&packet::garp_frame(self.s.link.mac, a)),
                    IpAddr::V6(a) => self
                        .s
                        .frames
                        .send(&packet::unsolicited_na_frame(self.s.link.mac, a)),
                };
                if let Err(e) = r {
                    debug!(instance = %cfg.name, "gratuitous ARP/NA for {}: {e}", v.addr);
                }
            }
        }
    }
}
