//! The configuration files of the scenario's daemons, per [`LbMode`] and [`Features`]
//! (`Scenario::start` writes them into the lab's directory).

use std::fmt::Write as _;

use super::{
    DIRECT_B_PORT, DOMAIN, GW_ADMIN, LB_ADMIN, LbMode, SESSION_PORT, SVC_A_PORT, SVC_B_PORT,
    Scenario, VRRP_ADMIN,
};
use crate::LabError;

/// A quick TCP check for the session backends.
const TCP_CHECK: &str = "[backend.health]\nkind = \"tcp\"\ninterval = \"300ms\"\ntimeout = \"250ms\"\nrise = 2\nfall = 2\n";
/// Gateway timers for a lab: a dead peer is noticed in about a second and a silent stream
/// open retried after half a second (production defaults are seconds). `{dead_after}`,
/// `{open_timeout}` and `{stop_delay}` are filled per mode (see `Scenario::gw_timers`).
const GW_TIMERS: &str = "[timers]\nping = \"300ms\"\ndead_after = \"{dead_after}\"\nopen_timeout = \"{open_timeout}\"\nconnect_timeout = \"500ms\"\nbackoff_cap = \"500ms\"\ndrain_grace = \"2s\"\nstop_delay = \"{stop_delay}\"\n";

impl Scenario {
    pub(super) fn lb_config(&self) -> String {
        // Every address in the scenario's family; `SocketAddr` writes `[v6]:port`.
        let vip = |port| std::net::SocketAddr::new(self.vip(), port);
        let server_b = self.at("server-b", 6000);
        // One `[[backend.server]]` per cloud node of the cluster, at `port`.
        let servers = |port: u16| -> String {
            self.clouds
                .iter()
                .map(|n| {
                    format!(
                        "[[backend.server]]\nname = \"{n}\"\naddress = \"{}\"\n",
                        self.at(n, port)
                    )
                })
                .collect()
        };
        let mut c = format!(
            "# tether lb on lb1 and lb2 (written by the demo scenario)\n\
             [admin]\nlisten = \"0.0.0.0:{LB_ADMIN}\"\n\n\
             [defaults]\nconnect_timeout = \"500ms\"\nretries = 2\ngrace_period = \"2s\"\n"
        );
        if self.lb_mode == LbMode::Proxy || !self.features.gateway {
            c.push('\n');
        }
        let svc_a_check = format!(
            "[backend.health]\nkind = \"http\"\ninterval = \"300ms\"\ntimeout = \"250ms\"\nrise = 1\nfall = 2\npath = \"/readyz/svc-a\"\nport = {GW_ADMIN}\n"
        );
        if self.features.gateway && self.lb_mode == LbMode::Dr {
            // The kernel forwards both the gateways' sessions and service A to the cloud
            // nodes, which answer from the VIP: no session crosses a proxy, and a balancer's
            // death costs a retransmission. No SNI routing: on-prem dials the VIP and keeps
            // what lands where it needs it.
            let _ = write!(
                c,
                "stop_delay = \"1s\"\n\n\
                 [[frontend]]\nname = \"sessions\"\nmode = \"dr\"\nbind = [\"{}\"]\ninterface = \"eth0\"\nbackend = \"all-cloud\"\n\n\
                 [[frontend]]\nname = \"svc-a\"\nmode = \"dr\"\nbind = [\"{}\"]\ninterface = \"eth0\"\nbackend = \"svc-a\"\n\n\
                 [[backend]]\nname = \"all-cloud\"\n{TCP_CHECK}{}\n\
                 [[backend]]\nname = \"svc-a\"\n{svc_a_check}{}",
                vip(SESSION_PORT),
                vip(SVC_A_PORT),
                servers(SESSION_PORT),
                servers(SVC_A_PORT),
            );
        } else if self.features.gateway {
            // Sessions: TLS passthrough routed by server name, so each on-prem gateway pins
            // its sessions to one cloud node; svc-a: only to a cloud node that is ready for
            // it (holds a session from a gateway exporting it).
            let _ = write!(
                c,
                "[[frontend]]\nname = \"sessions\"\nbind = [\"{}\"]\nbackend = \"all-cloud\"\n",
                vip(SESSION_PORT)
            );
            for n in &self.clouds {
                let _ = write!(
                    c,
                    "[[frontend.route]]\nsni = \"{n}.{DOMAIN}\"\nbackend = \"{n}\"\n"
                );
            }
            let _ = write!(
                c,
                "\n[[frontend]]\nname = \"svc-a\"\nbind = [\"{}\"]\nbackend = \"svc-a\"\n\n\
                 [[backend]]\nname = \"all-cloud\"\nbalance = \"leastconn\"\n{TCP_CHECK}{}\n",
                vip(SVC_A_PORT),
                servers(8443),
            );
            for n in &self.clouds {
                let _ = write!(
                    c,
                    "[[backend]]\nname = \"{n}\"\n{TCP_CHECK}\
                     [[backend.server]]\nname = \"{n}\"\naddress = \"{}\"\n\n",
                    self.at(n, 8443)
                );
            }
            let _ = write!(
                c,
                "[[backend]]\nname = \"svc-a\"\nbalance = \"leastconn\"\n{svc_a_check}{}",
                servers(SVC_A_PORT),
            );
        } else {
            let _ = write!(
                c,
                "[[frontend]]\nname = \"svc-b\"\nbind = [\"{}\"]\nbackend = \"server-b\"\n\n\
                 [[backend]]\nname = \"server-b\"\n\
                 [backend.health]\nkind = \"tcp\"\ninterval = \"300ms\"\ntimeout = \"250ms\"\nrise = 2\nfall = 2\n\
                 [[backend.server]]\nname = \"server-b\"\naddress = \"{server_b}\"\n",
                vip(DIRECT_B_PORT),
            );
        }
        c
    }

    /// With dr, a session survives the balancer's death: its packets are lost until VRRP
    /// has moved the VIP (about 0.4 s) and come again with TCP's next retransmission (0.6 s,
    /// then 1.4 s after the loss). A session declared dead, or ejected for a stream open it
    /// did not answer, before that would be re-dialed for nothing, so dr gives them 3 s and
    /// 2 s; a silent session is still hedged after a quarter of `open_timeout`.
    ///
    /// A dr balancer cannot retry a refused connect either, so a stopping cloud node keeps
    /// serving for `stop_delay` after its `/readyz` turned 503, longer than the balancers'
    /// checks take to notice (300 ms x 2).
    fn gw_timers(&self) -> String {
        let (dead_after, open_timeout, stop_delay) = match self.lb_mode {
            LbMode::Proxy => ("1s", "500ms", "0s"),
            LbMode::Dr => ("3s", "2s", "1500ms"),
        };
        GW_TIMERS
            .replace("{dead_after}", dead_after)
            .replace("{open_timeout}", open_timeout)
            .replace("{stop_delay}", stop_delay)
    }

    pub(super) fn write_gateway_configs(&self) -> Result<(), LabError> {
        let certs = self.lab.dir().join("certs");
        // Once, with the spare node's too: written again when the cluster changes, the
        // files must keep the CA the running gateways trust.
        if !certs.join("ca.pem").exists() {
            let out = std::process::Command::new(&self.tether)
                .args(["gateway", "certs", "--out"])
                .arg(&certs)
                .args([
                    "--names",
                    "cloud1,cloud2,cloud3,onprem1,onprem2",
                    "--domain",
                    DOMAIN,
                ])
                .output()
                .map_err(|e| LabError::io("running tether gateway certs", e))?;
            if !out.status.success() {
                return Err(LabError::Command {
                    cmd: "tether gateway certs".into(),
                    stderr: String::from_utf8_lossy(&out.stderr).into(),
                });
            }
        }
        let c = certs.display();
        let gw_timers = self.gw_timers();
        // A dr balancer forwards the VIP's port unchanged, so the nodes listen on it.
        let (session_port, pinning) = match self.lb_mode {
            LbMode::Proxy => (8443, true),
            LbMode::Dr => (SESSION_PORT, false),
        };
        let any = |port| self.any(port);
        let vip_session = std::net::SocketAddr::new(self.vip(), SESSION_PORT);
        let server_a = self.at("server-a", 5000);
        let server_b = self.at("server-b", 6000);
        let roster = self
            .clouds
            .iter()
            .map(|n| format!("{{ id = \"{n}\", sni = \"{n}.{DOMAIN}\" }}"))
            .collect::<Vec<_>>()
            .join(", ");
        for id in &self.clouds {
            let text = format!(
                "[node]\nrole = \"cloud\"\nid = \"{id}\"\nsession_listen = \"{}\"\nadmin_listen = \"{}\"\n\n\
                 [cluster]\nnodes = [ {roster} ]\n\n{gw_timers}\n\
                 [tls]\ncert = \"{c}/{id}.pem\"\nkey = \"{c}/{id}.key\"\nclient_ca = \"{c}/ca.pem\"\n\n\
                 [[reverse]]\nservice = \"svc-a\"\nlisten = \"{}\"\nwhen_not_ready = \"unbind\"\nallowed_exporters = [\"onprem1\", \"onprem2\"]\n\n\
                 [[forward]]\nservice = \"svc-b\"\nconnect = \"{server_b}\"\nallowed_consumers = [\"onprem1\", \"onprem2\"]\n",
                any(session_port),
                any(GW_ADMIN),
                any(SVC_A_PORT),
            );
            self.write(&format!("{id}-gw.toml"), &text)?;
        }
        for id in ["onprem1", "onprem2"] {
            let text = format!(
                "[node]\nrole = \"onprem\"\nid = \"{id}\"\ncloud = \"{vip_session}\"\nserver_name = \"{DOMAIN}\"\nsni_pinning = {pinning}\nprepared_connections = 2\nadmin_listen = \"{}\"\n\n{gw_timers}\n\
                 [tls]\ncert = \"{c}/{id}.pem\"\nkey = \"{c}/{id}.key\"\nca = \"{c}/ca.pem\"\n\n\
                 [[export]]\nservice = \"svc-a\"\nconnect = \"{server_a}\"\nhealth = {{ kind = \"tcp\", interval = \"300ms\", timeout = \"250ms\", rise = 1, fall = 2 }}\n\n\
                 [[consume]]\nservice = \"svc-b\"\nlisten = \"{}\"\n",
                any(GW_ADMIN),
                any(SVC_B_PORT),
            );
            self.write(&format!("{id}-gw.toml"), &text)?;
        }
        Ok(())
    }
}

/// `tether vrrp` on a balancer: VIP on eth0 (`vip`, with its prefix length; an IPv6 VIP
/// makes it VRRPv3 over IPv6), 100 ms adverts, following the local balancer's
/// readiness. The track subtracts priority instead of forcing FAULT, so that when *no*
/// balancer is ready (at start, before any session exists) one of them still holds the
/// VIP, and a ready one wins over one that is not.
///
/// With dr, a returning balancer waits `preempt_delay` before it takes the VIP back, so its
/// health checks have judged every server (rise 2 at 300 ms) before flows move to it: a flow
/// whose server is missing from the new holder's table is re-hashed and reset.
pub(super) fn vrrp_config(priority: u8, mode: LbMode, vip: &str) -> String {
    let preempt_delay = match mode {
        LbMode::Proxy => "0s",
        LbMode::Dr => "2s",
    };
    format!(
        "[admin]\nlisten = \"0.0.0.0:{VRRP_ADMIN}\"\n\n\
         [[instance]]\nname = \"VI_1\"\ninterface = \"eth0\"\nvrid = 51\npriority = {priority}\nversion = 3\n\
         advert_interval = \"100ms\"\npreempt = true\npreempt_delay = \"{preempt_delay}\"\nvirtual_addresses = [\"{vip}\"]\ngarp_delay = \"2s\"\n\n\
         [[instance.track]]\nkind = \"http\"\nurl = \"http://127.0.0.1:{LB_ADMIN}/readyz\"\ninterval = \"100ms\"\ntimeout = \"100ms\"\nfall = 2\nrise = 2\nweight = -60\n"
    )
}
