//! The tutorial `tether demo` prints: for each step, what it shows and the command to run.

use super::*;

impl Scenario {
    /// The tutorial: for each step, what it shows and the command to run.
    pub fn steps(&self, tether: &str) -> Vec<(String, String)> {
        let ns = |h: &str| self.lab.ns(h);
        let mut v = Vec::new();
        for p in self.paths() {
            v.push((
                format!("Probe {}: a new connection every 20 ms", p.name),
                format!(
                    "ip netns exec {} {tether} probe --connect {} --every 20ms --for 30s",
                    ns(&p.from),
                    p.to
                ),
            ));
        }
        if let Some(p) = self.paths().first() {
            v.push((
                "Type into a connection yourself (the first line names the server)".into(),
                format!(
                    "ip netns exec {} nc {} {}",
                    ns(&p.from),
                    p.to.ip(),
                    p.to.port()
                ),
            ));
        }
        v.push((
            "Take the VIP holder down (the other balancer takes the VIP), then bring it back"
                .into(),
            format!("{tether} demo --kill lb1      then      {tether} demo --start lb1"),
        ));
        if self.features.gateway {
            v.push((
                "Kill a cloud gateway and restart it: it is ready again without client traffic"
                    .into(),
                format!("{tether} demo --kill cloud1   then      {tether} demo --start cloud1"),
            ));
            v.push((
                "Kill an on-prem gateway: the other carries every session".into(),
                format!("{tether} demo --kill onprem1  then      {tether} demo --start onprem1"),
            ));
        }
        v.push((
            "The balancer's view and metrics".into(),
            format!(
                "ip netns exec {} curl -s http://127.0.0.1:{LB_ADMIN}/api/state",
                ns("lb1")
            ),
        ));
        if self.features.vrrp {
            v.push((
                "VRRP state and metrics".into(),
                format!(
                    "ip netns exec {} curl -s http://127.0.0.1:{VRRP_ADMIN}/metrics",
                    ns("lb1")
                ),
            ));
        }
        v.push((
            "The firewall: the cloud cannot open a connection into on-prem".into(),
            format!(
                "ip netns exec {} nc -z -w 1 {} 5000; echo $?   # 1: dropped",
                ns("cloud1"),
                self.at("server-a", 5000).ip()
            ),
        ));
        v
    }
}
