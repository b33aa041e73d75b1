//! The cluster growing and shrinking while the scenario runs: a spare cloud node joins and
//! a node leaves, each by reloads in the order docs/gateway.md gives, with no restart of
//! anything that stays.

use std::time::Duration;

use super::{SPARE_BOXES, Scenario};
use crate::{LabError, Sig};

/// What `tether lb` and `tether gateway` log when a reload was applied.
const RELOADED: &str = "configuration reloaded";

impl Scenario {
    /// Adds spare cloud node `node` ([`SPARE_BOXES`]) to the running cluster: starts it
    /// with the grown roster, reloads the balancers (its servers, its SNI route), then the
    /// other cloud nodes, which push the roster to the on-prem gateways. Returns once every
    /// reload was applied; the on-prem gateways cover the node shortly after.
    pub fn add_cloud_node(&mut self, node: &'static str) -> Result<(), LabError> {
        if !SPARE_BOXES.contains(&node) || self.clouds.contains(&node) {
            return Err(LabError::Spec(format!(
                "{node} is not a spare cloud node outside the cluster"
            )));
        }
        let others = self.clouds.clone();
        self.clouds.push(node);
        self.write_configs()?;
        self.start_box(node)?;
        for lb in ["lb1", "lb2"] {
            self.reload(&format!("{lb}-lb"))?;
        }
        for n in others {
            self.reload(&format!("{n}-gw"))?;
        }
        Ok(())
    }

    /// Takes cloud node `node` out of the running cluster: the balancers stop sending it
    /// sessions and clients, the other nodes push the shrunk roster, and then it is stopped
    /// cleanly (SIGTERM: it drains what it still carries).
    pub fn remove_cloud_node(&mut self, node: &str) -> Result<(), LabError> {
        let Some(i) = self.clouds.iter().position(|n| *n == node) else {
            return Err(LabError::Spec(format!("{node} is not in the cluster")));
        };
        if self.clouds.len() == 1 {
            return Err(LabError::Spec(format!("{node} is the last cloud node")));
        }
        self.clouds.remove(i);
        self.write_configs()?;
        for lb in ["lb1", "lb2"] {
            self.reload(&format!("{lb}-lb"))?;
        }
        for n in self.clouds.clone() {
            self.reload(&format!("{n}-gw"))?;
        }
        self.kill_box(node, Sig::Term)
    }

    /// SIGHUP to process `name`, then waits (bounded) for its log to say the new
    /// configuration was applied.
    fn reload(&self, name: &str) -> Result<(), LabError> {
        let before = self.lab.log(name).matches(RELOADED).count();
        self.lab.signal(name, Sig::Hup)?;
        if self
            .lab
            .wait_log_count(name, RELOADED, before + 1, Duration::from_secs(5))
        {
            return Ok(());
        }
        let log = self.lab.log(name);
        let tail: Vec<&str> = log.lines().rev().take(5).collect();
        Err(LabError::Spec(format!(
            "{name} did not apply its reload within 5 s; its log ends with: {}",
            tail.into_iter().rev().collect::<Vec<_>>().join(" | ")
        )))
    }
}
