//! The loopback tests' reference scenario, and a cluster of one node.

use super::*;

/// The reference scenario of the loopback tests: 2 cloud nodes behind a test balancer, 2
/// on-prem gateways, echo servers A1, A2 (behind each on-prem) and B (behind the cloud).
pub struct Scenario {
    pub _certs: Certs,
    pub a1: Echo,
    pub a2: Echo,
    pub b: Echo,
    pub cloud1: Cloud,
    pub cloud2: Cloud,
    pub lb: TestLb,
    pub onprem1: Onprem,
    pub onprem2: Onprem,
}

/// Starts [`Scenario`] and waits until both gateways cover both nodes and svc-a is ready.
pub async fn scenario(mode: Mode) -> Scenario {
    let certs = Certs::new();
    let a1 = echo().await;
    let a2 = echo().await;
    let b = echo().await;
    let cloud1 = Cloud::start(cloud_config(
        &certs,
        "cloud1",
        WhenNotReady::Unbind,
        Some(b.addr),
    ))
    .await;
    let cloud2 = Cloud::start(cloud_config(
        &certs,
        "cloud2",
        WhenNotReady::Unbind,
        Some(b.addr),
    ))
    .await;
    let lb = TestLb::start(
        vec![cloud1.handle.session_addr, cloud2.handle.session_addr],
        mode,
    )
    .await;
    let onprem1 = Onprem::start(onprem_config(&certs, "onprem1", lb.addr, a1.addr, true)).await;
    let onprem2 = Onprem::start(onprem_config(&certs, "onprem2", lb.addr, a2.addr, true)).await;
    let s = Scenario {
        _certs: certs,
        a1,
        a2,
        b,
        cloud1,
        cloud2,
        lb,
        onprem1,
        onprem2,
    };
    wait_for(Duration::from_secs(20), "full coverage", || {
        s.onprem1.covered(2) && s.onprem2.covered(2)
    })
    .await;
    wait_for(Duration::from_secs(5), "svc-a ready on both nodes", || {
        s.cloud1.handle.is_ready("svc-a") && s.cloud2.handle.is_ready("svc-a")
    })
    .await;
    s
}

/// A cluster of one: the roster names only this node.
pub fn single_node(
    mut cfg: tether_gateway::config::CloudConfig,
) -> tether_gateway::config::CloudConfig {
    cfg.roster.retain(|n| n.id == cfg.id);
    cfg
}

/// cloud1 alone, serving svc-a from whichever gateway exports it.
pub async fn lone_cloud(certs: &Certs) -> Cloud {
    Cloud::start(single_node(cloud_config(
        certs,
        "cloud1",
        WhenNotReady::Unbind,
        None,
    )))
    .await
}

/// On-prem coverage of a cluster of one node.
pub trait CoveredOne {
    /// Two sessions to cloud1 and no other node.
    fn covered_one(&self) -> bool;
}

impl CoveredOne for Onprem {
    fn covered_one(&self) -> bool {
        let c = self.handle.coverage();
        c.len() == 1 && c.get("cloud1").copied() == Some(2)
    }
}
