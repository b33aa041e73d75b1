//! The reference scenario (docs/ha.md) as a lab: two load balancers sharing a VIP,
//! two cloud gateways, two on-prem gateways behind a firewall, echo servers A and B, and
//! clients A and B. `tether demo` and the root tests build it from here, so the demo a user
//! runs is the one the tests check.
//!
//! ```text
//!   inet 203.0.113.0/24      cloud 192.0.2.0/24                 onprem 198.51.100.0/24
//!   client-a .41 ──┐   lb1 .11  lb2 .12  (VIP .100)            onprem1 .11  onprem2 .12
//!                  │   cloud1 .21  cloud2 .22  server-b .31    server-a .31  client-b .41
//!                  └──────────── fw .254 (router; drops new connections into onprem) ───┘
//! ```
//!
//! Which daemons run depends on what the `tether` binary offers ([`Features`]): without
//! `vrrp` the VIP is put on lb1 by hand; without `gateway` the balancers serve server B
//! directly and service A (behind the firewall) is out of reach, as it would be.

use std::fmt::Write as _;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::{Lab, LabError, ProcSpec, ProcState, Sig};

/// The virtual IP the balancers share.
pub const VIP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 100);
/// Service A's port on the VIP (reverse case: cloud client to on-prem server).
pub const SVC_A_PORT: u16 = 5551;
/// Service B's port on the on-prem gateways (forward case: on-prem client to cloud server).
pub const SVC_B_PORT: u16 = 6661;
/// Port of server B on the VIP when there are no gateways (the balancers reach it directly).
pub const DIRECT_B_PORT: u16 = 6000;
/// The gateways' session port on the VIP (what on-prem dials out to).
pub const SESSION_PORT: u16 = 443;
/// `tether lb` admin port on lb1 and lb2.
pub const LB_ADMIN: u16 = 9090;
/// `tether vrrp` admin port on lb1 and lb2.
pub const VRRP_ADMIN: u16 = 9091;
/// `tether gateway` admin port on every gateway.
pub const GW_ADMIN: u16 = 9100;
/// The gateways' TLS domain: cloud node N is `cloudN.<DOMAIN>`, the VIP is `<DOMAIN>`.
pub const DOMAIN: &str = "gw.example.com";
/// A quick TCP check for the session backends.
const TCP_CHECK: &str = "[backend.health]\nkind = \"tcp\"\ninterval = \"300ms\"\ntimeout = \"250ms\"\nrise = 2\nfall = 2\n";
/// Gateway timers for a lab: a dead peer is noticed in about a second and a silent stream
/// open retried after half a second (production defaults are seconds). `{dead_after}`,
/// `{open_timeout}` and `{stop_delay}` are filled per mode (see `Scenario::gw_timers`).
const GW_TIMERS: &str = "[timers]\nping = \"300ms\"\ndead_after = \"{dead_after}\"\nopen_timeout = \"{open_timeout}\"\nconnect_timeout = \"500ms\"\nbackoff_cap = \"500ms\"\ndrain_grace = \"2s\"\nstop_delay = \"{stop_delay}\"\n";

/// How the balancers carry the VIP's connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LbMode {
    /// `mode = "proxy"`: the balancer terminates TCP; sessions are routed by SNI, so each
    /// on-prem gateway pins its sessions to a cloud node.
    #[default]
    Proxy,
    /// `mode = "dr"`: the kernel forwards packets to the cloud nodes (which hold the VIP on
    /// loopback, `tether dr-server`) and they answer directly; a balancer's death cuts no
    /// connection. Sessions land by the consistent hash; on-prem closes surplus ones.
    Dr,
}

/// Which daemons the `tether` binary has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Features {
    /// `tether vrrp` exists: lb1 and lb2 float the VIP.
    pub vrrp: bool,
    /// `tether gateway` exists: the cloud and on-prem gateways run.
    pub gateway: bool,
}

/// The boxes of the scenario, in the order the status table shows them.
pub const BOXES: [&str; 10] = [
    "lb1", "lb2", "cloud1", "cloud2", "onprem1", "onprem2", "server-a", "server-b", "client-a",
    "client-b",
];

/// One way a client reaches a service, checked with an echo exchange.
#[derive(Debug, Clone)]
pub struct ClientPath {
    /// A short label.
    pub name: String,
    /// The client's host.
    pub from: String,
    /// Where it connects.
    pub to: SocketAddr,
}

/// The built scenario.
pub struct Scenario {
    /// The lab it lives in.
    pub lab: Lab,
    /// Which daemons run.
    pub features: Features,
    /// How the balancers forward (set before [`Scenario::start`]).
    pub lb_mode: LbMode,
    tether: PathBuf,
}

/// What one box looks like right now.
#[derive(Debug, Clone)]
pub struct BoxStatus {
    /// Its name.
    pub name: String,
    /// Its processes and whether they run.
    pub procs: Vec<(String, ProcState)>,
    /// What its daemons say (VIP held, servers up, readiness).
    pub detail: String,
}

/// A snapshot of the whole scenario.
#[derive(Debug, Clone)]
pub struct Status {
    /// Per box.
    pub boxes: Vec<BoxStatus>,
    /// Which hosts hold the VIP.
    pub vip_holders: Vec<String>,
    /// Per path: who answered, or why not.
    pub paths: Vec<(String, Result<String, String>)>,
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "{:<9} {:<22} detail", "box", "processes")?;
        for b in &self.boxes {
            let procs = if b.procs.is_empty() {
                "-".to_string()
            } else {
                b.procs
                    .iter()
                    .map(|(n, st)| {
                        let short = n.rsplit('-').next().unwrap_or(n);
                        format!("{short} {}", if st.is_running() { "up" } else { "DOWN" })
                    })
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            writeln!(f, "{:<9} {:<22} {}", b.name, procs, b.detail)?;
        }
        writeln!(
            f,
            "VIP {VIP} held by: {}",
            if self.vip_holders.is_empty() {
                "nobody".to_string()
            } else {
                self.vip_holders.join(", ")
            }
        )?;
        for (name, r) in &self.paths {
            match r {
                Ok(who) => writeln!(f, "path {name:<40} ok, answered by {who}")?,
                Err(e) => writeln!(f, "path {name:<40} FAILS: {e}")?,
            }
        }
        Ok(())
    }
}

impl AsRef<Lab> for Scenario {
    fn as_ref(&self) -> &Lab {
        &self.lab
    }
}

impl Scenario {
    /// Builds the networks and hosts (nothing runs yet). `tether` is the binary to run in
    /// the hosts.
    pub fn build(
        prefix: &str,
        tether: &Path,
        features: Features,
        teardown_on_signals: bool,
    ) -> Result<Scenario, LabError> {
        let lab = Lab::builder(prefix)
            .teardown_on_signals(teardown_on_signals)
            .network("cloud", "192.0.2.0/24")
            .network("onprem", "198.51.100.0/24")
            .network("inet", "203.0.113.0/24")
            .router("fw", &[("cloud", 254), ("onprem", 254), ("inet", 254)])
            .firewall("fw", "onprem")
            .host("lb1", &[("cloud", 11)])
            .host("lb2", &[("cloud", 12)])
            .host("cloud1", &[("cloud", 21)])
            .host("cloud2", &[("cloud", 22)])
            .host("server-b", &[("cloud", 31)])
            .host("onprem1", &[("onprem", 11)])
            .host("onprem2", &[("onprem", 12)])
            .host("server-a", &[("onprem", 31)])
            .host("client-b", &[("onprem", 41)])
            .host("client-a", &[("inet", 41)])
            .build()?;
        Ok(Scenario {
            lab,
            features,
            lb_mode: LbMode::default(),
            tether: tether.to_path_buf(),
        })
    }

    fn write(&self, name: &str, text: &str) -> Result<PathBuf, LabError> {
        let p = self.lab.dir().join(name);
        std::fs::write(&p, text)
            .map_err(|e| LabError::io(format!("writing {}", p.display()), e))?;
        Ok(p)
    }

    fn tether(&self, name: &str, host: &str, args: &[&str]) -> ProcSpec {
        ProcSpec::new(name, host, &self.tether)
            .args(args.iter().copied())
            .env("RUST_LOG", "info,tether_lb::conn=warn")
    }

    /// The processes of a box, by name (`<box>-<daemon>`).
    pub fn procs_of(&self, boxname: &str) -> Vec<String> {
        let d: &[&str] = match boxname {
            "lb1" | "lb2" if self.features.vrrp => &["lb", "vrrp"],
            "lb1" | "lb2" => &["lb"],
            "cloud1" | "cloud2" if self.features.gateway && self.lb_mode == LbMode::Dr => {
                &["dr", "gw"]
            }
            "cloud1" | "cloud2" | "onprem1" | "onprem2" if self.features.gateway => &["gw"],
            "server-a" | "server-b" => &["echo"],
            _ => &[],
        };
        d.iter().map(|d| format!("{boxname}-{d}")).collect()
    }

    fn spec_of(&self, proc_name: &str) -> Result<ProcSpec, LabError> {
        let (boxname, daemon) = proc_name
            .rsplit_once('-')
            .ok_or_else(|| LabError::UnknownProcess(proc_name.to_string()))?;
        let dir = self.lab.dir().to_path_buf();
        let path = |f: &str| dir.join(f).display().to_string();
        Ok(match daemon {
            "echo" => {
                let port = if boxname == "server-a" {
                    "5000"
                } else {
                    "6000"
                };
                self.tether(
                    proc_name,
                    boxname,
                    &[
                        "echo",
                        "--listen",
                        &format!("0.0.0.0:{port}"),
                        "--banner",
                        boxname,
                    ],
                )
            }
            "lb" => self.tether(
                proc_name,
                boxname,
                &[
                    "lb",
                    "--workers",
                    "1",
                    "--config",
                    &path(&format!("{boxname}-lb.toml")),
                ],
            ),
            "vrrp" => self.tether(
                proc_name,
                boxname,
                &["vrrp", "--config", &path(&format!("{boxname}-vrrp.toml"))],
            ),
            "dr" => self.tether(
                proc_name,
                boxname,
                &["dr-server", "--vip", &VIP.to_string()],
            ),
            "gw" => self.tether(
                proc_name,
                boxname,
                &["gateway", "--config", &path(&format!("{boxname}-gw.toml"))],
            ),
            _ => return Err(LabError::UnknownProcess(proc_name.to_string())),
        })
    }

    /// Writes every configuration and starts every daemon, servers first, balancers last,
    /// then waits (bounded) until every path answers.
    pub fn start(&self, ready_within: Duration) -> Result<(), LabError> {
        for lb in ["lb1", "lb2"] {
            self.write(&format!("{lb}-lb.toml"), &self.lb_config())?;
            if self.features.vrrp {
                let prio = if lb == "lb1" { 150 } else { 100 };
                self.write(&format!("{lb}-vrrp.toml"), &vrrp_config(prio, self.lb_mode))?;
            }
        }
        if self.features.gateway {
            self.write_gateway_configs()?;
        }
        if !self.features.vrrp {
            // No VRRP: lb1 simply owns the VIP.
            let out = self.lab.exec(
                "lb1",
                &["ip", "addr", "add", &format!("{VIP}/24"), "dev", "eth0"],
            )?;
            if !out.status.success() {
                return Err(LabError::Command {
                    cmd: "ip addr add VIP on lb1".into(),
                    stderr: String::from_utf8_lossy(&out.stderr).into(),
                });
            }
        }
        let order = [
            "server-a", "server-b", "cloud1", "cloud2", "lb1", "lb2", "onprem1", "onprem2",
        ];
        for b in order {
            self.start_box(b)?;
        }
        let deadline = Instant::now() + ready_within;
        loop {
            let bad: Vec<String> = self
                .paths()
                .iter()
                .filter_map(|p| self.exchange(p).err().map(|e| format!("{}: {e}", p.name)))
                .collect();
            if bad.is_empty() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(LabError::Spec(format!(
                    "the scenario did not come up within {ready_within:?}: {}",
                    bad.join("; ")
                )));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Starts every stopped process of a box, then plugs its cables back in (after the
    /// start, so a VRRP daemon first removes a VIP left behind by the "power cut").
    pub fn start_box(&self, boxname: &str) -> Result<(), LabError> {
        if !BOXES.contains(&boxname) {
            return Err(LabError::UnknownHost(boxname.to_string()));
        }
        for p in self.procs_of(boxname) {
            match self.lab.state(&p) {
                Ok(st) if st.is_running() => {}
                _ => {
                    self.lab.start(self.spec_of(&p)?)?;
                }
            }
        }
        for net in self.lab.networks_of(boxname) {
            self.lab.heal(boxname, &net)?;
        }
        Ok(())
    }

    /// Takes a box down. `Sig::Kill` is a power cut: its processes get SIGKILL and its
    /// cables are unplugged (a dead box neither answers nor keeps a VIP reachable).
    /// `Sig::Term` is a clean stop: SIGTERM, and up to 5 s to exit.
    pub fn kill_box(&self, boxname: &str, sig: Sig) -> Result<(), LabError> {
        if !BOXES.contains(&boxname) {
            return Err(LabError::UnknownHost(boxname.to_string()));
        }
        let procs = self.procs_of(boxname);
        if sig == Sig::Kill {
            for net in self.lab.networks_of(boxname) {
                self.lab.cut(boxname, &net)?;
            }
            for p in &procs {
                self.lab.signal(p, Sig::Kill)?;
            }
        }
        // A clean shutdown stops daemons in reverse start order, each waited for, as an
        // init system would: VRRP hands the VIP over (priority 0) before the balancer
        // stops accepting.
        for p in procs.iter().rev() {
            self.lab.signal(p, sig)?;
            let st = self.lab.wait_exit(p, Duration::from_secs(5))?;
            if st.is_running() {
                self.lab.signal(p, Sig::Kill)?;
                self.lab.wait_exit(p, Duration::from_secs(2))?;
            }
        }
        Ok(())
    }

    /// The paths a client takes, each checked by an echo exchange.
    pub fn paths(&self) -> Vec<ClientPath> {
        let mut v = Vec::new();
        if self.features.gateway {
            v.push(ClientPath {
                name: format!("client-a -> VIP:{SVC_A_PORT} (service A)"),
                from: "client-a".into(),
                to: SocketAddr::from((VIP, SVC_A_PORT)),
            });
            for (i, gw) in ["onprem1", "onprem2"].iter().enumerate() {
                v.push(ClientPath {
                    name: format!("client-b -> {gw}:{SVC_B_PORT} (service B)"),
                    from: "client-b".into(),
                    to: SocketAddr::from((Ipv4Addr::new(198, 51, 100, 11 + i as u8), SVC_B_PORT)),
                });
            }
        } else {
            v.push(ClientPath {
                name: format!("client-a -> VIP:{DIRECT_B_PORT} (server B)"),
                from: "client-a".into(),
                to: SocketAddr::from((VIP, DIRECT_B_PORT)),
            });
        }
        v
    }

    /// One echo exchange along a path; returns the banner of the server that answered.
    pub fn exchange(&self, p: &ClientPath) -> Result<String, String> {
        crate::client::echo(&self.lab, &p.from, p.to)
    }

    /// A GET to a daemon's admin endpoint inside its host: (status, body).
    pub fn http_get(&self, host: &str, port: u16, path: &str) -> Result<(u16, String), String> {
        crate::client::http_get(&self.lab, host, port, path)
    }

    /// Which hosts hold the VIP on an interface right now.
    pub fn vip_holders(&self) -> Vec<String> {
        ["lb1", "lb2"]
            .iter()
            .filter(|h| {
                self.lab
                    .exec(h, &["ip", "-br", "-4", "addr", "show", "dev", "eth0"])
                    .map(|o| {
                        String::from_utf8_lossy(&o.stdout)
                            .split_whitespace()
                            .any(|w| w == format!("{VIP}/24"))
                    })
                    .unwrap_or(false)
            })
            .map(|h| h.to_string())
            .collect()
    }

    fn lb_detail(&self, host: &str) -> String {
        let Ok((_, body)) = self.http_get(host, LB_ADMIN, "/api/state") else {
            return "balancer not answering".into();
        };
        let Ok(v) = serde_json::from_str::<serde_json::Value>(&body) else {
            return "balancer state unreadable".into();
        };
        let backends = v["backends"].as_array().cloned().unwrap_or_default();
        let parts: Vec<String> = backends
            .iter()
            .map(|b| {
                let servers = b["servers"].as_array().cloned().unwrap_or_default();
                let up = servers.iter().filter(|s| s["up"] == true).count();
                format!(
                    "{} {up}/{}",
                    b["name"].as_str().unwrap_or("?"),
                    servers.len()
                )
            })
            .collect();
        format!("servers up: {}", parts.join(", "))
    }

    fn gw_detail(&self, host: &str) -> String {
        let ready = |path: &str| match self.http_get(host, GW_ADMIN, path) {
            Ok((200, _)) => "ready",
            Ok(_) => "NOT ready",
            Err(_) => "not answering",
        };
        if host.starts_with("cloud") {
            let sessions = self
                .http_get(host, GW_ADMIN, "/metrics")
                .map(|(_, m)| {
                    m.lines()
                        .filter(|l| {
                            l.starts_with("tether_gateway_sessions") && !l.contains("_total")
                        })
                        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                        .sum::<f64>()
                })
                .unwrap_or(0.0);
            format!("svc-a {}, sessions {sessions}", ready("/readyz/svc-a"))
        } else {
            format!("svc-b {}", ready("/readyz/svc-b"))
        }
    }

    /// Collects the status of every box and path.
    pub fn status(&self) -> Status {
        let holders = self.vip_holders();
        let boxes = BOXES
            .iter()
            .map(|b| {
                let procs: Vec<(String, ProcState)> = self
                    .procs_of(b)
                    .into_iter()
                    .map(|p| {
                        let st = self.lab.state(&p).unwrap_or(ProcState::Exited {
                            code: None,
                            signal: None,
                        });
                        (p, st)
                    })
                    .collect();
                let any_up = procs.iter().any(|(_, s)| s.is_running());
                let detail = match *b {
                    "lb1" | "lb2" if any_up => {
                        let vip = if holders.iter().any(|h| h == b) {
                            "VIP, "
                        } else {
                            ""
                        };
                        format!("{vip}{}", self.lb_detail(b))
                    }
                    "cloud1" | "cloud2" | "onprem1" | "onprem2"
                        if any_up && self.features.gateway =>
                    {
                        self.gw_detail(b)
                    }
                    _ => String::new(),
                };
                BoxStatus {
                    name: b.to_string(),
                    procs,
                    detail,
                }
            })
            .collect();
        let paths = self
            .paths()
            .iter()
            .map(|p| (p.name.clone(), self.exchange(p)))
            .collect();
        Status {
            boxes,
            vip_holders: holders,
            paths,
        }
    }

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
                "ip netns exec {} nc -z -w 1 198.51.100.31 5000; echo $?   # 1: dropped",
                ns("cloud1")
            ),
        ));
        v
    }

    fn lb_config(&self) -> String {
        let mut c = format!(
            "# tether lb on lb1 and lb2 (written by the demo scenario)\n\
             [admin]\nlisten = \"0.0.0.0:{LB_ADMIN}\"\n\n\
             [defaults]\nconnect_timeout = \"500ms\"\nretries = 2\ngrace_period = \"2s\"\n"
        );
        if self.lb_mode == LbMode::Proxy || !self.features.gateway {
            c.push('\n');
        }
        if self.features.gateway && self.lb_mode == LbMode::Dr {
            // The kernel forwards both the gateways' sessions and service A to the cloud
            // nodes, which answer from the VIP: no session crosses a proxy, and a balancer's
            // death costs a retransmission. No SNI routing: on-prem dials the VIP and keeps
            // what lands where it needs it.
            let _ = write!(
                c,
                "stop_delay = \"1s\"\n\n\
                 [[frontend]]\nname = \"sessions\"\nmode = \"dr\"\nbind = [\"{VIP}:{SESSION_PORT}\"]\ninterface = \"eth0\"\nbackend = \"all-cloud\"\n\n\
                 [[frontend]]\nname = \"svc-a\"\nmode = \"dr\"\nbind = [\"{VIP}:{SVC_A_PORT}\"]\ninterface = \"eth0\"\nbackend = \"svc-a\"\n\n\
                 [[backend]]\nname = \"all-cloud\"\n{TCP_CHECK}\
                 [[backend.server]]\nname = \"cloud1\"\naddress = \"192.0.2.21:{SESSION_PORT}\"\n\
                 [[backend.server]]\nname = \"cloud2\"\naddress = \"192.0.2.22:{SESSION_PORT}\"\n\n\
                 [[backend]]\nname = \"svc-a\"\n\
                 [backend.health]\nkind = \"http\"\ninterval = \"300ms\"\ntimeout = \"250ms\"\nrise = 1\nfall = 2\npath = \"/readyz/svc-a\"\nport = {GW_ADMIN}\n\
                 [[backend.server]]\nname = \"cloud1\"\naddress = \"192.0.2.21:{SVC_A_PORT}\"\n\
                 [[backend.server]]\nname = \"cloud2\"\naddress = \"192.0.2.22:{SVC_A_PORT}\"\n"
            );
        } else if self.features.gateway {
            // Sessions: TLS passthrough routed by server name, so each on-prem gateway pins
            // its sessions to one cloud node; svc-a: only to a cloud node that is ready for
            // it (holds a session from a gateway exporting it).
            let _ = write!(
                c,
                "[[frontend]]\nname = \"sessions\"\nbind = [\"{VIP}:{SESSION_PORT}\"]\nbackend = \"all-cloud\"\n\
                 [[frontend.route]]\nsni = \"cloud1.{DOMAIN}\"\nbackend = \"cloud1\"\n\
                 [[frontend.route]]\nsni = \"cloud2.{DOMAIN}\"\nbackend = \"cloud2\"\n\n\
                 [[frontend]]\nname = \"svc-a\"\nbind = [\"{VIP}:{SVC_A_PORT}\"]\nbackend = \"svc-a\"\n\n\
                 [[backend]]\nname = \"all-cloud\"\nbalance = \"leastconn\"\n{TCP_CHECK}\
                 [[backend.server]]\nname = \"cloud1\"\naddress = \"192.0.2.21:8443\"\n\
                 [[backend.server]]\nname = \"cloud2\"\naddress = \"192.0.2.22:8443\"\n\n\
                 [[backend]]\nname = \"cloud1\"\n{TCP_CHECK}\
                 [[backend.server]]\nname = \"cloud1\"\naddress = \"192.0.2.21:8443\"\n\n\
                 [[backend]]\nname = \"cloud2\"\n{TCP_CHECK}\
                 [[backend.server]]\nname = \"cloud2\"\naddress = \"192.0.2.22:8443\"\n\n\
                 [[backend]]\nname = \"svc-a\"\nbalance = \"leastconn\"\n\
                 [backend.health]\nkind = \"http\"\ninterval = \"300ms\"\ntimeout = \"250ms\"\nrise = 1\nfall = 2\npath = \"/readyz/svc-a\"\nport = {GW_ADMIN}\n\
                 [[backend.server]]\nname = \"cloud1\"\naddress = \"192.0.2.21:{SVC_A_PORT}\"\n\
                 [[backend.server]]\nname = \"cloud2\"\naddress = \"192.0.2.22:{SVC_A_PORT}\"\n"
            );
        } else {
            let _ = write!(
                c,
                "[[frontend]]\nname = \"svc-b\"\nbind = [\"{VIP}:{DIRECT_B_PORT}\"]\nbackend = \"server-b\"\n\n\
                 [[backend]]\nname = \"server-b\"\n\
                 [backend.health]\nkind = \"tcp\"\ninterval = \"300ms\"\ntimeout = \"250ms\"\nrise = 2\nfall = 2\n\
                 [[backend.server]]\nname = \"server-b\"\naddress = \"192.0.2.31:6000\"\n"
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

    fn write_gateway_configs(&self) -> Result<(), LabError> {
        let certs = self.lab.dir().join("certs");
        let out = std::process::Command::new(&self.tether)
            .args(["gateway", "certs", "--out"])
            .arg(&certs)
            .args([
                "--names",
                "cloud1,cloud2,onprem1,onprem2",
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
        let c = certs.display();
        let gw_timers = self.gw_timers();
        // A dr balancer forwards the VIP's port unchanged, so the nodes listen on it.
        let (session_port, pinning) = match self.lb_mode {
            LbMode::Proxy => (8443, true),
            LbMode::Dr => (SESSION_PORT, false),
        };
        for (i, id) in ["cloud1", "cloud2"].iter().enumerate() {
            let text = format!(
                "[node]\nrole = \"cloud\"\nid = \"{id}\"\nsession_listen = \"0.0.0.0:{session_port}\"\nadmin_listen = \"0.0.0.0:{GW_ADMIN}\"\n\n\
                 [cluster]\nnodes = [ {{ id = \"cloud1\", sni = \"cloud1.{DOMAIN}\" }}, {{ id = \"cloud2\", sni = \"cloud2.{DOMAIN}\" }} ]\n\n{gw_timers}\n\
                 [tls]\ncert = \"{c}/{id}.pem\"\nkey = \"{c}/{id}.key\"\nclient_ca = \"{c}/ca.pem\"\n\n\
                 [[reverse]]\nservice = \"svc-a\"\nlisten = \"0.0.0.0:{SVC_A_PORT}\"\nwhen_not_ready = \"unbind\"\nallowed_exporters = [\"onprem1\", \"onprem2\"]\n\n\
                 [[forward]]\nservice = \"svc-b\"\nconnect = \"192.0.2.31:6000\"\nallowed_consumers = [\"onprem1\", \"onprem2\"]\n"
            );
            let _ = i;
            self.write(&format!("{id}-gw.toml"), &text)?;
        }
        for id in ["onprem1", "onprem2"] {
            let text = format!(
                "[node]\nrole = \"onprem\"\nid = \"{id}\"\ncloud = \"{VIP}:{SESSION_PORT}\"\nserver_name = \"{DOMAIN}\"\nsni_pinning = {pinning}\nprepared_connections = 2\nadmin_listen = \"0.0.0.0:{GW_ADMIN}\"\n\n{gw_timers}\n\
                 [tls]\ncert = \"{c}/{id}.pem\"\nkey = \"{c}/{id}.key\"\nca = \"{c}/ca.pem\"\n\n\
                 [[export]]\nservice = \"svc-a\"\nconnect = \"198.51.100.31:5000\"\nhealth = {{ kind = \"tcp\", interval = \"300ms\", timeout = \"250ms\", rise = 1, fall = 2 }}\n\n\
                 [[consume]]\nservice = \"svc-b\"\nlisten = \"0.0.0.0:{SVC_B_PORT}\"\n"
            );
            self.write(&format!("{id}-gw.toml"), &text)?;
        }
        Ok(())
    }
}

/// `tether vrrp` on a balancer: VIP on eth0, 100 ms adverts, following the local balancer's
/// readiness. The track subtracts priority instead of forcing FAULT, so that when *no*
/// balancer is ready (at start, before any session exists) one of them still holds the
/// VIP, and a ready one wins over one that is not.
///
/// With dr, a returning balancer waits `preempt_delay` before it takes the VIP back, so its
/// health checks have judged every server (rise 2 at 300 ms) before flows move to it: a flow
/// whose server is missing from the new holder's table is re-hashed and reset.
fn vrrp_config(priority: u8, mode: LbMode) -> String {
    let preempt_delay = match mode {
        LbMode::Proxy => "0s",
        LbMode::Dr => "2s",
    };
    format!(
        "[admin]\nlisten = \"0.0.0.0:{VRRP_ADMIN}\"\n\n\
         [[instance]]\nname = \"VI_1\"\ninterface = \"eth0\"\nvrid = 51\npriority = {priority}\nversion = 3\n\
         advert_interval = \"100ms\"\npreempt = true\npreempt_delay = \"{preempt_delay}\"\nvirtual_addresses = [\"{VIP}/24\"]\ngarp_delay = \"2s\"\n\n\
         [[instance.track]]\nkind = \"http\"\nurl = \"http://127.0.0.1:{LB_ADMIN}/readyz\"\ninterval = \"100ms\"\ntimeout = \"100ms\"\nfall = 2\nrise = 2\nweight = -60\n"
    )
}
