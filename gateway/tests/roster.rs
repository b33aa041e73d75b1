//! A cluster that grows and shrinks without restarts, on loopback: a cloud node added by
//! reload reaches the on-prem gateway in a ROSTER push and is covered, a node removed by
//! reload is not dialed again and is forgotten once it drained, and a client of the node
//! that stays sees no failure meanwhile.

mod harness;

use std::time::Duration;

use harness::*;
use tether_gateway::config::WhenNotReady;
use tokio_util::sync::CancellationToken;

fn deficit_reported(o: &Onprem, node: &str) -> bool {
    let text = prometheus::TextEncoder::new()
        .encode_to_string(&o.handle.metrics().registry.gather())
        .expect("metrics text");
    text.contains(&format!(
        "tether_gateway_coverage_deficit{{node=\"{node}\"}}"
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_added_by_reload_is_covered_and_one_removed_is_let_go() {
    let certs = Certs::new();
    let a = echo().await;
    let cloud1 = lone_cloud(&certs).await;
    let lb = TestLb::start(vec![cloud1.handle.session_addr], Mode::LeastConn).await;
    let onprem = Onprem::start(onprem_config(&certs, "onprem1", lb.addr, a.addr, false)).await;
    wait_for(Duration::from_secs(20), "cloud1 covered", || {
        onprem.covered_one()
    })
    .await;
    wait_for(Duration::from_secs(5), "svc-a ready on cloud1", || {
        cloud1.handle.is_ready("svc-a")
    })
    .await;

    // A client of cloud1 for the whole test: bounded in count, stopped by the test.
    let stop = CancellationToken::new();
    let probes = {
        let (stop, target) = (stop.clone(), cloud1.svc_a());
        tokio::spawn(async move {
            let (mut ok, mut failed) = (0u32, Vec::new());
            for i in 0..4000 {
                if stop.is_cancelled() {
                    break;
                }
                match echo_once(target, &format!("probe {i}")).await {
                    Ok(()) => ok += 1,
                    Err(e) => failed.push(e),
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            (ok, failed)
        })
    };

    // cloud2 joins: it starts with the two-node roster, the balancer learns it, and cloud1
    // is reloaded with the same roster, which it pushes to the session it has.
    let two_nodes = cloud_config(&certs, "cloud2", WhenNotReady::Unbind, None).roster;
    let cloud2 = Cloud::start(cloud_config(&certs, "cloud2", WhenNotReady::Unbind, None)).await;
    let c2_index = lb.add_backend(cloud2.handle.session_addr);
    // The running configuration, as written (ports 0), with the roster changed.
    let mut grown = (*cloud1.handle.config()).clone();
    grown.roster = two_nodes;
    let plan = cloud1.handle.reload(grown).expect("reload with cloud2");
    assert!(plan.roster, "{plan}");
    wait_for(Duration::from_secs(20), "cloud1 and cloud2 covered", || {
        onprem.covered(2)
    })
    .await;
    wait_for(Duration::from_secs(5), "svc-a ready on cloud2", || {
        cloud2.handle.is_ready("svc-a")
    })
    .await;
    echo_once(cloud2.svc_a(), "through the new node")
        .await
        .expect("svc-a through cloud2");
    let om = onprem.handle.metrics();
    assert_eq!(
        counter(om, "tether_gateway_sessions_closed_total", &[]),
        0.0,
        "no session was closed to make room for cloud2"
    );

    // cloud2 leaves: the balancer stops sending it sessions, cloud1 is reloaded alone, and
    // then cloud2 drains. On-prem stops counting it at once and forgets it once its
    // sessions ended.
    lb.remove_backend(c2_index);
    cloud1
        .handle
        .reload(single_node((*cloud1.handle.config()).clone()))
        .expect("reload without cloud2");
    wait_for(Duration::from_secs(5), "coverage of cloud1 alone", || {
        onprem.covered_one()
    })
    .await;
    let dials_to_2 = counter(om, "tether_gateway_dials_total", &[("node", "cloud2")]);
    cloud2.shutdown.cancel();
    cloud2.handle.wait().await;
    wait_for(Duration::from_secs(10), "cloud2 forgotten", || {
        !deficit_reported(&onprem, "cloud2")
    })
    .await;
    assert!(onprem.covered_one(), "{:?}", onprem.handle.coverage());

    // A few hundred more probes (more than a second, several reconnect backoffs) before
    // the verdict: cloud2 must not be dialed again.
    let more_until = counter(
        cloud1.handle.metrics(),
        "tether_gateway_streams_total",
        &[("service", "svc-a")],
    ) + 200.0;
    wait_for(Duration::from_secs(20), "200 more probes", || {
        counter(
            cloud1.handle.metrics(),
            "tether_gateway_streams_total",
            &[("service", "svc-a")],
        ) >= more_until
    })
    .await;
    stop.cancel();
    let (ok, failed) = probes.await.expect("probe task");
    assert!(
        failed.is_empty(),
        "{} of {} probes failed: {failed:?}",
        failed.len(),
        ok as usize + failed.len()
    );
    assert_eq!(
        counter(om, "tether_gateway_dials_total", &[("node", "cloud2")]),
        dials_to_2,
        "cloud2 dialed after it left the roster"
    );
    assert!(onprem.covered_one(), "{:?}", onprem.handle.coverage());
}
