//! The scale-out scenario: three active balancers announced over BGP.
//!
//! ```text
//!  client c (198.51.100.50) -- edge -- router r (BIRD, ECMP) -- lan 203.0.113.0/24
//!                                                               |-- lb1 .11, lb2 .12, lb3 .13
//!                                                               |     tether lb (dr, [announce]) + BIRD
//!                                                               |-- s1 .21, s2 .22 (VIP on lo, echo)
//! ```
//!
//! The VIP 192.0.2.100 is on no link: the router reaches it through whichever balancers
//! announce it, spreading flows over them by their ports. Every balancer maps a flow to the
//! same server, so a flow may land on any of them at any time; servers answer the client
//! directly through the router.

use std::fmt::Write as _;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::{Lab, LabError, ProcSpec, ProcState, Sig, Watch};

/// The VIP every balancer announces.
pub const VIP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 100);
/// The service's port.
pub const PORT: u16 = 5551;
/// The balancers' host names, in address order (.11, .12, .13 on the lan).
pub const BALANCERS: [&str; 3] = ["lb1", "lb2", "lb3"];
/// The servers' host names (.21, .22 on the lan), each holding the VIP on its loopback.
pub const SERVERS: [&str; 2] = ["s1", "s2"];
/// The router's AS.
pub const ROUTER_AS: u32 = 65000;
/// The balancers' AS.
pub const LB_AS: u32 = 65001;
/// The kernel table `tether lb` keeps its announcements in (its default).
pub const TABLE: u32 = 7474;
/// Each balancer's admin port, on its loopback.
pub const LB_ADMIN: u16 = 9090;

/// An address on the lan.
pub fn lan(octet: u8) -> Ipv4Addr {
    Ipv4Addr::new(203, 0, 113, octet)
}

/// A balancer's lan address; `None` for a name that is not a balancer.
pub fn balancer_addr(lb: &str) -> Option<Ipv4Addr> {
    let i = BALANCERS.iter().position(|l| *l == lb)?;
    Some(lan(11 + i as u8))
}

/// The built scenario.
pub struct ScaleOut {
    /// The lab it lives in.
    pub lab: Lab,
    tether: PathBuf,
}

/// One balancer right now.
#[derive(Debug, Clone)]
pub struct BalancerStatus {
    /// The balancer's host name (`lb1`...).
    pub name: String,
    /// `tether lb` runs.
    pub lb: bool,
    /// BIRD runs.
    pub bird: bool,
    /// What `tether lb` says of the VIP (`announced`, `withdrawn`, ...), with the reason.
    pub announce: String,
    /// BIRD's BGP session to the router, as `tether lb` reads it.
    pub session: String,
    /// Flows its flow map holds (those it has carried).
    pub flows: u64,
}

/// A snapshot of the tier.
#[derive(Debug, Clone)]
pub struct Status {
    /// Per balancer.
    pub balancers: Vec<BalancerStatus>,
    /// The router's next hops for the VIP.
    pub paths: Vec<Ipv4Addr>,
    /// A new connection from the client: who answered, or why not.
    pub probe: Result<String, String>,
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "{:<5} {:<10} {:<10} {:<28} {:<22} flows",
            "box", "tether lb", "bird", "VIP", "BGP session"
        )?;
        let up = |b: bool| if b { "up" } else { "DOWN" };
        for b in &self.balancers {
            writeln!(
                f,
                "{:<5} {:<10} {:<10} {:<28} {:<22} {}",
                b.name,
                up(b.lb),
                up(b.bird),
                b.announce,
                b.session,
                b.flows
            )?;
        }
        let hops: Vec<String> = self
            .paths
            .iter()
            .map(|a| {
                BALANCERS
                    .iter()
                    .find(|l| balancer_addr(l) == Some(*a))
                    .map_or(a.to_string(), |l| l.to_string())
            })
            .collect();
        writeln!(
            f,
            "router: {VIP} via {}",
            if hops.is_empty() {
                "nothing (unreachable)".to_string()
            } else {
                hops.join(", ")
            }
        )?;
        match &self.probe {
            Ok(who) => writeln!(f, "client -> {VIP}:{PORT}: ok, answered by {who}"),
            Err(e) => writeln!(f, "client -> {VIP}:{PORT}: FAILS: {e}"),
        }
    }
}

impl AsRef<Lab> for ScaleOut {
    fn as_ref(&self) -> &Lab {
        &self.lab
    }
}

impl ScaleOut {
    /// Builds the networks and hosts (nothing runs yet).
    pub fn build(
        prefix: &str,
        tether: &Path,
        teardown_on_signals: bool,
    ) -> Result<ScaleOut, LabError> {
        let mut b = Lab::builder(prefix)
            .teardown_on_signals(teardown_on_signals)
            .network("lan", "203.0.113.0/24")
            .network("edge", "198.51.100.0/24")
            .router("r", &[("lan", 1), ("edge", 1)])
            .host("c", &[("edge", 50)]);
        for (i, s) in SERVERS.iter().enumerate() {
            b = b.host(s, &[("lan", 21 + i as u8)]);
        }
        for (i, lb) in BALANCERS.iter().enumerate() {
            b = b.host(lb, &[("lan", 11 + i as u8)]);
        }
        Ok(ScaleOut {
            lab: b.build()?,
            tether: tether.to_path_buf(),
        })
    }

    fn write(&self, name: &str, text: &str) -> Result<String, LabError> {
        let p = self.lab.dir().join(name);
        std::fs::write(&p, text)
            .map_err(|e| LabError::io(format!("writing {}", p.display()), e))?;
        Ok(p.to_string_lossy().into_owned())
    }

    /// Where a BIRD's control socket is (`birdc -s PATH`).
    pub fn bird_socket(&self, host: &str) -> PathBuf {
        self.lab.dir().join(format!("bird-{host}.ctl"))
    }

    fn bird(&self, host: &str, config: &str) -> Result<ProcSpec, LabError> {
        let conf = self.write(&format!("bird-{host}.conf"), config)?;
        let pid = self.lab.dir().join(format!("bird-{host}.pid"));
        Ok(
            ProcSpec::new(&format!("bird-{host}"), host, PathBuf::from("bird")).args([
                "-f".to_string(),
                "-c".into(),
                conf,
                "-s".into(),
                self.bird_socket(host).to_string_lossy().into_owned(),
                "-P".into(),
                pid.to_string_lossy().into_owned(),
            ]),
        )
    }

    /// `tether lb`'s configuration on every balancer.
    pub fn lb_config(&self, host: &str) -> String {
        let mut s = format!(
            "[admin]\nlisten = \"127.0.0.1:{LB_ADMIN}\"\n\n[defaults]\nstop_delay = \"2s\"\n\n\
             [announce]\ntable = {TABLE}\nbird_socket = \"{}\"\n\n\
             [[frontend]]\nname = \"svc\"\nmode = \"dr\"\nbind = [\"{VIP}:{PORT}\"]\ninterface = \"eth0\"\nbackend = \"be\"\n\n\
             [[backend]]\nname = \"be\"\n[backend.health]\nkind = \"tcp\"\ninterval = \"200ms\"\ntimeout = \"150ms\"\nrise = 2\nfall = 2\n",
            self.bird_socket(host).display()
        );
        for (i, srv) in SERVERS.iter().enumerate() {
            let _ = write!(
                s,
                "\n[[backend.server]]\nname = \"{srv}\"\naddress = \"{}:{PORT}\"\n",
                lan(21 + i as u8)
            );
        }
        s
    }

    /// Starts the router's BIRD and the servers, then every balancer.
    pub fn start(&self) -> Result<(), LabError> {
        let out = self.lab.exec(
            "r",
            // Spread flows by ports too: one client address would otherwise take one path.
            &["sysctl", "-qw", "net.ipv4.fib_multipath_hash_policy=1"],
        )?;
        if !out.status.success() {
            return Err(LabError::Command {
                cmd: "sysctl fib_multipath_hash_policy".into(),
                stderr: String::from_utf8_lossy(&out.stderr).into(),
            });
        }
        let peers: Vec<(Ipv4Addr, u32)> = BALANCERS
            .iter()
            .filter_map(|l| balancer_addr(l).map(|a| (a, LB_AS)))
            .collect();
        self.lab
            .start(self.bird("r", &crate::bird::router(lan(1), ROUTER_AS, &peers))?)?;
        for s in SERVERS {
            let t = |name: &str, args: &[&str]| {
                ProcSpec::new(&format!("{name}-{s}"), s, &self.tether).args(args.iter().copied())
            };
            self.lab
                .start(t("dr", &["dr-server", "--vip", &VIP.to_string()]))?;
            self.lab.start(t(
                "echo",
                &[
                    "echo",
                    "--listen",
                    &format!("0.0.0.0:{PORT}"),
                    "--banner",
                    s,
                ],
            ))?;
        }
        for lb in BALANCERS {
            self.start_box(lb)?;
        }
        Ok(())
    }

    fn lb_spec(&self, host: &str) -> Result<ProcSpec, LabError> {
        let cfg = self.write(&format!("lb-{host}.toml"), &self.lb_config(host))?;
        Ok(ProcSpec::new(&format!("lb-{host}"), host, &self.tether)
            .args(["lb", "--config", &cfg])
            .env("RUST_LOG", "info"))
    }

    fn check_box(boxname: &str) -> Result<Ipv4Addr, LabError> {
        balancer_addr(boxname).ok_or_else(|| LabError::UnknownHost(boxname.to_string()))
    }

    /// Starts whatever of a balancer is stopped (`tether lb`, then BIRD) and plugs its
    /// cable back in.
    pub fn start_box(&self, boxname: &str) -> Result<(), LabError> {
        let addr = Self::check_box(boxname)?;
        let running = |p: &str| self.lab.state(p).is_ok_and(|s| s.is_running());
        if !running(&format!("lb-{boxname}")) {
            self.lab.start(self.lb_spec(boxname)?)?;
        }
        if !running(&format!("bird-{boxname}")) {
            let conf = crate::bird::balancer(addr, LB_AS, lan(1), ROUTER_AS, TABLE);
            self.lab.start(self.bird(boxname, &conf)?)?;
        }
        self.lab.heal(boxname, "lan")
    }

    /// Takes a balancer down. `Sig::Kill` is a power cut: the cable is pulled, then
    /// `tether lb` and BIRD die. `Sig::Term` drains it: `tether lb` withdraws the VIP,
    /// forwards for its `stop_delay`, and stops (BIRD stays, announcing nothing).
    pub fn kill_box(&self, boxname: &str, sig: Sig) -> Result<(), LabError> {
        Self::check_box(boxname)?;
        let lb = format!("lb-{boxname}");
        if sig == Sig::Kill {
            self.lab.cut(boxname, "lan")?;
            for p in [&lb, &format!("bird-{boxname}")] {
                self.lab.signal(p, Sig::Kill)?;
                self.lab.wait_exit(p, Duration::from_secs(5))?;
            }
            return Ok(());
        }
        self.lab.signal(&lb, sig)?;
        let st = self.lab.wait_exit(&lb, Duration::from_secs(10))?;
        if st.is_running() {
            self.lab.signal(&lb, Sig::Kill)?;
            self.lab.wait_exit(&lb, Duration::from_secs(2))?;
        }
        Ok(())
    }

    /// Follows the router's routing table (`ip monitor route`).
    pub fn watch_routes(&self) -> Result<Watch, LabError> {
        self.lab.watch("r", &["ip", "monitor", "route"])
    }

    /// The router's next hops for the VIP, in address order.
    pub fn paths(&self) -> Vec<Ipv4Addr> {
        let Ok(out) = self
            .lab
            .exec("r", &["ip", "-j", "route", "show", &VIP.to_string()])
        else {
            return Vec::new();
        };
        let routes: serde_json::Value =
            serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null);
        let gw = |v: &serde_json::Value| v["gateway"].as_str()?.parse::<Ipv4Addr>().ok();
        let mut hops = Vec::new();
        for r in routes.as_array().into_iter().flatten() {
            hops.extend(gw(r));
            for n in r["nexthops"].as_array().into_iter().flatten() {
                hops.extend(gw(n));
            }
        }
        hops.sort();
        hops
    }

    /// Waits (on the router's route events, up to `within`) until its next hops for the VIP
    /// are exactly the balancers `lbs`; how long that took.
    pub fn wait_paths(
        &self,
        routes: &Watch,
        lbs: &[&str],
        within: Duration,
    ) -> Result<Duration, String> {
        let start = Instant::now();
        let mut want: Vec<Ipv4Addr> = lbs.iter().filter_map(|l| balancer_addr(l)).collect();
        want.sort();
        loop {
            let have = self.paths();
            if have == want {
                return Ok(start.elapsed());
            }
            let left = (start + within).saturating_duration_since(Instant::now());
            if !matches!(routes.next_line(left), Ok(Some(_))) {
                return Err(format!(
                    "the router's next hops for {VIP} stayed {have:?}, not {want:?} ({within:?})"
                ));
            }
        }
    }

    /// A new connection from the client to the VIP: the server that answered.
    pub fn probe(&self) -> Result<String, String> {
        crate::client::echo(&self.lab, "c", SocketAddr::from((VIP, PORT)))
    }

    /// Collects the status of every balancer, the router and a probe.
    pub fn status(&self) -> Status {
        let running = |p: &str| {
            self.lab
                .state(p)
                .unwrap_or(ProcState::Exited {
                    code: None,
                    signal: None,
                })
                .is_running()
        };
        let balancers = BALANCERS
            .iter()
            .map(|b| {
                let lb = running(&format!("lb-{b}"));
                let (announce, session) = if lb {
                    self.announce_detail(b)
                } else {
                    ("-".into(), "-".into())
                };
                BalancerStatus {
                    name: b.to_string(),
                    lb,
                    bird: running(&format!("bird-{b}")),
                    announce,
                    session,
                    flows: if lb { self.flows(b) } else { 0 },
                }
            })
            .collect();
        Status {
            balancers,
            paths: self.paths(),
            probe: self.probe(),
        }
    }

    fn announce_detail(&self, lb: &str) -> (String, String) {
        let Ok((_, body)) = crate::client::http_get(&self.lab, lb, LB_ADMIN, "/api/state") else {
            return ("no answer".into(), "?".into());
        };
        let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
        let a = &v["announce"];
        let vip = &a["vips"][0];
        let mut announce = vip["state"].as_str().unwrap_or("?").to_string();
        if let Some(r) = vip["reason"].as_str().filter(|r| !r.is_empty()) {
            announce = format!("{announce} ({r})");
        }
        let session = a["bird"]
            .as_array()
            .and_then(|ps| ps.iter().find(|p| p["proto"] == "BGP"))
            .map(|p| {
                format!(
                    "{} {}",
                    p["state"].as_str().unwrap_or("?"),
                    p["info"].as_str().unwrap_or("")
                )
                .trim()
                .to_string()
            })
            .unwrap_or_else(|| "unknown".into());
        (announce, session)
    }

    /// Flows a balancer's flow map holds.
    pub fn flows(&self, lb: &str) -> u64 {
        let Ok((_, m)) = crate::client::http_get(&self.lab, lb, LB_ADMIN, "/metrics") else {
            return 0;
        };
        crate::kit::metric_sum(&m, "tether_lb_dr_flows{") as u64
    }

    /// The tutorial: for each step, what it shows and the command to run.
    pub fn steps(&self, tether: &str) -> Vec<(String, String)> {
        let ns = |h: &str| self.lab.ns(h);
        vec![
            (
                "Probe the VIP from the client: a new connection every 20 ms".into(),
                format!(
                    "ip netns exec {} {tether} probe --connect {VIP}:{PORT} --every 20ms --for 30s",
                    ns("c")
                ),
            ),
            (
                "Hold a connection open and type into it (the first line names the server)".into(),
                format!("ip netns exec {} nc {VIP} {PORT}", ns("c")),
            ),
            (
                "See the router's multipath route to the VIP".into(),
                format!("ip netns exec {} ip route show {VIP}", ns("r")),
            ),
            (
                "Cut lb2's power: BFD withdraws it in about 0.3 s, no connection is cut".into(),
                format!("{tether} demo --tier bgp --kill lb2"),
            ),
            (
                "Bring it back: it rejoins and takes a share of the flows".into(),
                format!("{tether} demo --tier bgp --start lb2"),
            ),
            (
                "Drain lb3: the VIP is withdrawn first, then it stops".into(),
                format!("{tether} demo --tier bgp --kill lb3 --signal term"),
            ),
            (
                "Ask lb1's BIRD what it announces".into(),
                format!(
                    "ip netns exec {} birdc -s {} show route export upstream",
                    ns("lb1"),
                    self.bird_socket("lb1").display()
                ),
            ),
        ]
    }
}
