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
//! With [`Family::V6`] the same boxes, with the same host numbers, run on 2001:db8::/32:
//! cloud 2001:db8:2::/64, onprem 2001:db8:100::/64, inet 2001:db8:113::/64, VIP
//! 2001:db8:2::100 (VRRPv3 over IPv6), every listener, server, session and firewall rule
//! in IPv6. The hosts keep their IPv4 addresses (a lab network always has one), but nothing
//! of the scenario uses them.
//!
//! Which daemons run depends on what the `tether` binary offers ([`Features`]): without
//! `vrrp` the VIP is put on lb1 by hand; without `gateway` the balancers serve server B
//! directly and service A (behind the firewall) is out of reach, as it would be.
//!
//! Modules: `config` (the daemons' files, per mode), `cluster` (a spare cloud node joining
//! and a node leaving while it runs), `paths` (the clients' paths, checked by an echo
//! exchange), `status` (the live [`Status`] the demo prints and the tests wait on),
//! `tutorial` (the commands the demo suggests).

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::{Lab, LabError, ProcSpec, ProcState, Sig};

mod cluster;
mod config;
mod paths;
mod status;
mod tutorial;

use config::vrrp_config;
pub use paths::ClientPath;
pub use status::{BoxStatus, Status};

/// The virtual IP the balancers share.
pub const VIP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 100);
/// The virtual IP the balancers share with [`Family::V6`] (host 100 of the cloud network).
pub const VIP6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 2, 0, 0, 0, 0, 0x100);

/// The networks: name, IPv4 prefix, and the IPv6 prefix [`Family::V6`] adds (the IPv4
/// network's last number in its name, so `::31` on onprem reads as 198.51.100.31 does).
const NETS: [(&str, &str, &str); 3] = [
    ("cloud", "192.0.2.0/24", "2001:db8:2::/64"),
    ("onprem", "198.51.100.0/24", "2001:db8:100::/64"),
    ("inet", "203.0.113.0/24", "2001:db8:113::/64"),
];

/// Which IP family the scenario's addresses, listeners and VRRP are of.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Family {
    /// IPv4, on the three TEST-NETs (the reference scenario of docs/ha.md).
    #[default]
    V4,
    /// IPv6 on 2001:db8::/32: VRRPv3 over IPv6, the balancers and the gateways' sessions
    /// and services over IPv6, the firewall's rule for the IPv6 prefix.
    V6,
}
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

/// Boxes built with the lab but started only when they join the cluster
/// ([`Scenario::add_cloud_node`]): a machine racked and cabled, not yet in service.
pub const SPARE_BOXES: [&str; 1] = ["cloud3"];

/// The built scenario.
pub struct Scenario {
    /// The lab it lives in.
    pub lab: Lab,
    /// Which daemons run.
    pub features: Features,
    /// How the balancers forward (set before [`Scenario::start`]).
    pub lb_mode: LbMode,
    family: Family,
    /// Each box's address in `family`, on its only network.
    addrs: HashMap<&'static str, IpAddr>,
    /// The cloud nodes in the cluster: in every node's roster and the balancers' backends.
    clouds: Vec<&'static str>,
    tether: PathBuf,
}

impl AsRef<Lab> for Scenario {
    fn as_ref(&self) -> &Lab {
        &self.lab
    }
}

impl Scenario {
    /// Builds the networks and hosts over IPv4 (nothing runs yet). `tether` is the binary
    /// to run in the hosts.
    pub fn build(
        prefix: &str,
        tether: &Path,
        features: Features,
        teardown_on_signals: bool,
    ) -> Result<Scenario, LabError> {
        Self::build_family(prefix, tether, features, teardown_on_signals, Family::V4)
    }

    /// [`Scenario::build`] in a given IP family.
    pub fn build_family(
        prefix: &str,
        tether: &Path,
        features: Features,
        teardown_on_signals: bool,
        family: Family,
    ) -> Result<Scenario, LabError> {
        let mut b = Lab::builder(prefix).teardown_on_signals(teardown_on_signals);
        for (net, v4, v6) in NETS {
            b = b.network(net, v4);
            if family == Family::V6 {
                b = b.ipv6(net, v6);
            }
        }
        let lab = b
            .router("fw", &[("cloud", 254), ("onprem", 254), ("inet", 254)])
            .firewall("fw", "onprem")
            .host("lb1", &[("cloud", 11)])
            .host("lb2", &[("cloud", 12)])
            .host("cloud1", &[("cloud", 21)])
            .host("cloud2", &[("cloud", 22)])
            .host("cloud3", &[("cloud", 23)])
            .host("server-b", &[("cloud", 31)])
            .host("onprem1", &[("onprem", 11)])
            .host("onprem2", &[("onprem", 12)])
            .host("server-a", &[("onprem", 31)])
            .host("client-b", &[("onprem", 41)])
            .host("client-a", &[("inet", 41)])
            .build()?;
        let mut addrs = HashMap::new();
        for b in BOXES.into_iter().chain(SPARE_BOXES) {
            let net = lab
                .networks_of(b)
                .into_iter()
                .next()
                .ok_or_else(|| LabError::UnknownHost(b.to_string()))?;
            let ip = match family {
                Family::V4 => IpAddr::V4(lab.addr(b, &net)?),
                Family::V6 => IpAddr::V6(lab.addr6(b, &net)?),
            };
            addrs.insert(b, ip);
        }
        Ok(Scenario {
            lab,
            features,
            lb_mode: LbMode::default(),
            family,
            addrs,
            clouds: vec!["cloud1", "cloud2"],
            tether: tether.to_path_buf(),
        })
    }

    /// The IP family the scenario runs in.
    pub fn family(&self) -> Family {
        self.family
    }

    /// The VIP the balancers share, in the scenario's family.
    pub fn vip(&self) -> IpAddr {
        match self.family {
            Family::V4 => IpAddr::V4(VIP),
            Family::V6 => IpAddr::V6(VIP6),
        }
    }

    /// The VIP with the cloud network's prefix length, as it sits on a balancer's eth0.
    pub(crate) fn vip_cidr(&self) -> String {
        match self.family {
            Family::V4 => format!("{VIP}/24"),
            Family::V6 => format!("{VIP6}/64"),
        }
    }

    /// A box's address in the scenario's family (`boxname` is one of [`BOXES`]).
    pub fn addr(&self, boxname: &str) -> Option<IpAddr> {
        self.addrs.get(boxname).copied()
    }

    /// `addr:port` of one of the scenario's own boxes, whose addresses `build` recorded.
    pub(crate) fn at(&self, boxname: &'static str, port: u16) -> SocketAddr {
        let ip = self.addrs.get(boxname).copied();
        debug_assert!(ip.is_some(), "{boxname} is a box of the scenario");
        SocketAddr::new(ip.unwrap_or(self.any_ip()), port)
    }

    /// The wildcard address of the family (what a listener binds).
    fn any_ip(&self) -> IpAddr {
        match self.family {
            Family::V4 => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            Family::V6 => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
        }
    }

    /// `<wildcard>:port` in the scenario's family.
    pub(crate) fn any(&self, port: u16) -> SocketAddr {
        SocketAddr::new(self.any_ip(), port)
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

    /// The cloud nodes in the cluster now.
    pub fn cloud_nodes(&self) -> &[&'static str] {
        &self.clouds
    }

    /// The boxes of the scenario: [`BOXES`], then the spare ones that joined.
    pub fn boxes(&self) -> Vec<&'static str> {
        let joined = SPARE_BOXES.into_iter().filter(|b| self.clouds.contains(b));
        BOXES.into_iter().chain(joined).collect()
    }

    fn is_cloud(&self, boxname: &str) -> bool {
        boxname.starts_with("cloud") && self.addrs.contains_key(boxname)
    }

    /// The processes of a box, by name (`<box>-<daemon>`).
    pub fn procs_of(&self, boxname: &str) -> Vec<String> {
        let d: &[&str] = match boxname {
            "lb1" | "lb2" if self.features.vrrp => &["lb", "vrrp"],
            "lb1" | "lb2" => &["lb"],
            b if self.is_cloud(b) && self.features.gateway && self.lb_mode == LbMode::Dr => {
                &["dr", "gw"]
            }
            b if self.is_cloud(b) && self.features.gateway => &["gw"],
            "onprem1" | "onprem2" if self.features.gateway => &["gw"],
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
                let port = if boxname == "server-a" { 5000 } else { 6000 };
                self.tether(
                    proc_name,
                    boxname,
                    &[
                        "echo",
                        "--listen",
                        &self.any(port).to_string(),
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
                &["dr-server", "--vip", &self.vip().to_string()],
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
        self.write_configs()?;
        for lb in ["lb1", "lb2"] {
            if self.features.vrrp {
                let prio = if lb == "lb1" { 150 } else { 100 };
                self.write(
                    &format!("{lb}-vrrp.toml"),
                    &vrrp_config(prio, self.lb_mode, &self.vip_cidr()),
                )?;
            }
        }
        if self.family == Family::V6 {
            // IPv6 picks a source address by RFC 6724's rules, and the VIP on eth0 ties with
            // the balancer's own address until the last rule, which the newest address wins:
            // the balancer would dial servers and run health checks from the VIP. With dr the
            // answers then go to the servers' own VIP on lo and every check fails. A label of
            // its own (rule 6: prefer a source whose label matches the destination's) keeps
            // the VIP for what is addressed to it. IPv4 has no such tie: the VIP is added as
            // a secondary address, never the primary source.
            for lb in ["lb1", "lb2"] {
                let out = self.lab.exec(
                    lb,
                    &[
                        "ip",
                        "addrlabel",
                        "add",
                        "prefix",
                        &format!("{VIP6}/128"),
                        "label",
                        "100",
                    ],
                )?;
                if !out.status.success() {
                    return Err(LabError::Command {
                        cmd: format!("ip addrlabel add (VIP) on {lb}"),
                        stderr: String::from_utf8_lossy(&out.stderr).into(),
                    });
                }
            }
        }
        if !self.features.vrrp {
            // No VRRP: lb1 simply owns the VIP.
            let out = self.lab.exec(
                "lb1",
                &["ip", "addr", "add", &self.vip_cidr(), "dev", "eth0"],
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

    /// Writes the balancers' and the gateways' files for the cluster as it is now.
    fn write_configs(&self) -> Result<(), LabError> {
        for lb in ["lb1", "lb2"] {
            self.write(&format!("{lb}-lb.toml"), &self.lb_config())?;
        }
        if self.features.gateway {
            self.write_gateway_configs()?;
        }
        Ok(())
    }

    /// Starts every stopped process of a box, then plugs its cables back in (after the
    /// start, so a VRRP daemon first removes a VIP left behind by the "power cut").
    pub fn start_box(&self, boxname: &str) -> Result<(), LabError> {
        if !self.boxes().contains(&boxname) {
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
        if !self.addrs.contains_key(boxname) {
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
}
