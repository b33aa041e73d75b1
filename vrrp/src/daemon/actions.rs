//! Carrying out what the state machine asks for: adverts, VIPs, gratuitous ARP / NA,
//! and the transition's log line, metrics, status and notify run.

use std::net::IpAddr;

use tracing::{debug, error, info};

use super::Ctx;
use super::setup::Setup;
use crate::fsm::{self, Action};
use crate::netlink::Netlink;
use crate::packet::{self, Advert, MCAST_V4, MCAST_V6};

/// Carries out the machine's actions.
pub(super) struct Io<'a> {
    pub(super) ctx: &'a Ctx,
    pub(super) nl: &'a Netlink,
    pub(super) s: &'a Setup,
    pub(super) vips_held: bool,
}

impl Io<'_> {
    pub(super) async fn exec(&mut self, machine: &mut fsm::Instance, actions: Vec<Action>) {
        let cfg = &self.ctx.cfg;
        let name = cfg.name.as_str();
        for a in actions {
            match a {
                Action::SendAdvert { priority } => self.send_advert(priority),
                Action::AddVips => {
                    for v in &cfg.vips {
                        if let Err(e) = self.nl.add_vip(self.s.link.index, *v).await {
                            error!(instance = %name, "{e}");
                        }
                    }
                    self.vips_held = true;
                }
                Action::RemoveVips => self.remove_vips().await,
                Action::Garp => self.garp(),
                Action::Transition { from, to } => {
                    info!(instance = %name, "{} -> {} (priority {})", from.keepalived_name(), to.keepalived_name(), machine.effective_priority());
                    self.ctx.metrics.transition(name, from, to);
                    if let Some(n) = &self.ctx.notifier {
                        n.notify(to, machine.effective_priority());
                    }
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

    pub(super) async fn remove_vips(&mut self) {
        for v in &self.ctx.cfg.vips {
            if let Err(e) = self.nl.del_vip(self.s.link.index, *v).await {
                error!(instance = %self.ctx.cfg.name, "{e}");
            }
        }
        self.vips_held = false;
    }

    fn send_advert(&self, priority: u8) {
        let cfg = &self.ctx.cfg;
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

    fn garp(&self) {
        let cfg = &self.ctx.cfg;
        for _ in 0..cfg.garp_repeat {
            for v in &cfg.vips {
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
