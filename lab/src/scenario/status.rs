//! What the scenario looks like right now: processes, who holds the VIP, what each daemon
//! reports, and whether every client path answers.

use std::net::IpAddr;

use super::{Family, GW_ADMIN, LB_ADMIN, ProcState, Scenario};

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
    /// The VIP (of the scenario's family).
    pub vip: IpAddr,
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
            "VIP {} held by: {}",
            self.vip,
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

impl Scenario {
    /// Which hosts hold the VIP on an interface right now.
    pub fn vip_holders(&self) -> Vec<String> {
        let family = match self.family {
            Family::V4 => "-4",
            Family::V6 => "-6",
        };
        let vip = self.vip_cidr();
        ["lb1", "lb2"]
            .iter()
            .filter(|h| {
                self.lab
                    .exec(h, &["ip", "-br", family, "addr", "show", "dev", "eth0"])
                    .map(|o| {
                        String::from_utf8_lossy(&o.stdout)
                            .split_whitespace()
                            .any(|w| w == vip)
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
        let boxes = self
            .boxes()
            .into_iter()
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
                let detail = match b {
                    "lb1" | "lb2" if any_up => {
                        let vip = if holders.iter().any(|h| h == b) {
                            "VIP, "
                        } else {
                            ""
                        };
                        format!("{vip}{}", self.lb_detail(b))
                    }
                    b if (b.starts_with("cloud") || b.starts_with("onprem"))
                        && any_up
                        && self.features.gateway =>
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
            vip: self.vip(),
            vip_holders: holders,
            paths,
        }
    }
}
