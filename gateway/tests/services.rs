//! Services changed by reload on live sessions, on loopback: an on-prem gateway that
//! starts or stops exporting and consuming services tells the cloud node (SERVICES), which
//! grants and answers (ACCEPTED); a cloud node whose reload widens a gateway's rights
//! grants them to the sessions already up. No session is closed or dialed for either.

mod harness;

use std::time::Duration;

use harness::*;
use tether_gateway::config::{CloudConfig, WhenNotReady};
use tether_gateway::metrics::Metrics;

fn closed(m: &Metrics) -> f64 {
    counter(m, "tether_gateway_sessions_closed_total", &[])
}

fn dials_ok(m: &Metrics) -> f64 {
    counter(m, "tether_gateway_dials_total", &[("result", "ok")])
}

/// The running configuration as written (ports 0), for a reload to change.
fn running_cloud(c: &Cloud) -> CloudConfig {
    (*c.handle.config()).clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn services_added_and_removed_by_an_onprem_reload_are_carried_on_live_sessions() {
    let certs = Certs::new();
    let a = echo().await;
    let b = echo().await;
    let cloud = Cloud::start(single_node(cloud_config(
        &certs,
        "cloud1",
        WhenNotReady::Unbind,
        Some(b.addr),
    )))
    .await;
    // Starts with neither the export nor the consume.
    let full = onprem_config(&certs, "onprem1", cloud.handle.session_addr, a.addr, true);
    let mut bare = full.clone();
    bare.export.clear();
    bare.consume.clear();
    let onprem = Onprem::start(bare.clone()).await;
    wait_for(Duration::from_secs(20), "cloud1 covered", || {
        onprem.covered_one()
    })
    .await;
    assert!(!cloud.handle.is_ready("svc-a"));
    let (om, cm) = (onprem.handle.metrics(), cloud.handle.metrics());
    let dials = dials_ok(om);

    let plan = onprem.handle.reload(full).expect("reload adding services");
    assert_eq!(plan.added, ["export svc-a", "consume svc-b"], "{plan}");
    wait_for(Duration::from_secs(5), "svc-a ready on cloud1", || {
        cloud.handle.is_ready("svc-a")
    })
    .await;
    wait_for(Duration::from_secs(5), "svc-b ready on onprem1", || {
        onprem.handle.is_ready("svc-b")
    })
    .await;
    echo_once(cloud.svc_a(), "reverse, added by reload")
        .await
        .expect("svc-a");
    let svc_b = onprem.handle.consume_addr("svc-b").expect("svc-b listens");
    echo_once(svc_b, "forward, added by reload")
        .await
        .expect("svc-b");

    // And removed again: the cloud node stops offering svc-a, the listener goes.
    onprem
        .handle
        .reload(bare)
        .expect("reload removing services");
    wait_for(Duration::from_secs(5), "svc-a not ready on cloud1", || {
        !cloud.handle.is_ready("svc-a")
    })
    .await;
    assert!(!onprem.handle.is_ready("svc-b"));
    assert!(onprem.handle.consume_addr("svc-b").is_none());
    assert!(
        tokio::net::TcpStream::connect(svc_b).await.is_err(),
        "the removed consume still listens"
    );
    assert_eq!(closed(om) + closed(cm), 0.0, "a session was closed");
    assert_eq!(dials_ok(om), dials, "a session was dialed");
    assert!(onprem.covered_one());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rights_a_cloud_reload_grants_reach_the_sessions_already_up() {
    let certs = Certs::new();
    let a = echo().await;
    let b = echo().await;
    // onprem1 may consume svc-b but not export svc-a yet.
    let mut narrow = single_node(cloud_config(
        &certs,
        "cloud1",
        WhenNotReady::Unbind,
        Some(b.addr),
    ));
    narrow.reverse[0].allowed_exporters = ["onprem2".to_string()].into();
    let cloud = Cloud::start(narrow).await;
    let onprem = Onprem::start(onprem_config(
        &certs,
        "onprem1",
        cloud.handle.session_addr,
        a.addr,
        false,
    ))
    .await;
    wait_for(Duration::from_secs(20), "cloud1 covered", || {
        onprem.covered_one()
    })
    .await;
    let cm = cloud.handle.metrics();
    let refused = counter(
        cm,
        "tether_gateway_auth_refusals_total",
        &[("reason", "export_not_allowed")],
    );
    assert!(refused > 0.0, "the export was refused at HELLO");
    assert!(!cloud.handle.is_ready("svc-a"));
    let dials = dials_ok(onprem.handle.metrics());

    let mut wide = running_cloud(&cloud);
    wide.reverse[0].allowed_exporters = ["onprem1".to_string(), "onprem2".to_string()].into();
    cloud
        .handle
        .reload(wide)
        .expect("reload granting the export");
    wait_for(Duration::from_secs(5), "svc-a ready on cloud1", || {
        cloud.handle.is_ready("svc-a")
    })
    .await;
    echo_once(cloud.svc_a(), "granted by reload")
        .await
        .expect("svc-a");
    assert_eq!(closed(cm), 0.0, "a session was closed");
    assert_eq!(
        dials_ok(onprem.handle.metrics()),
        dials,
        "a session was dialed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reverse_service_added_and_removed_by_a_cloud_reload() {
    let certs = Certs::new();
    let a = echo().await;
    let b = echo().await;
    let with = single_node(cloud_config(
        &certs,
        "cloud1",
        WhenNotReady::Unbind,
        Some(b.addr),
    ));
    // Starts without svc-a; onprem1 is known for svc-b, and exports svc-a all along.
    let mut without = with.clone();
    without.reverse.clear();
    let cloud = Cloud::start(without.clone()).await;
    let onprem = Onprem::start(onprem_config(
        &certs,
        "onprem1",
        cloud.handle.session_addr,
        a.addr,
        true,
    ))
    .await;
    wait_for(Duration::from_secs(20), "cloud1 covered", || {
        onprem.covered_one()
    })
    .await;
    assert!(!cloud.handle.is_ready("svc-a"));
    assert!(cloud.handle.service_addr("svc-a").is_none());
    let (om, cm) = (onprem.handle.metrics(), cloud.handle.metrics());
    let dials = dials_ok(om);

    let mut added = running_cloud(&cloud);
    added.reverse = with.reverse.clone();
    let plan = cloud.handle.reload(added).expect("reload adding svc-a");
    assert_eq!(plan.added, ["reverse svc-a"], "{plan}");
    wait_for(Duration::from_secs(5), "svc-a ready on cloud1", || {
        cloud.handle.is_ready("svc-a")
    })
    .await;
    let svc_a = cloud.handle.service_addr("svc-a").expect("svc-a listens");
    echo_once(svc_a, "a service added by reload")
        .await
        .expect("svc-a");

    let mut removed = running_cloud(&cloud);
    removed.reverse.clear();
    cloud.handle.reload(removed).expect("reload removing svc-a");
    assert!(!cloud.handle.is_ready("svc-a"));
    assert!(cloud.handle.service_addr("svc-a").is_none());
    wait_for(Duration::from_secs(5), "svc-a's listener closed", || {
        std::net::TcpStream::connect_timeout(&svc_a, Duration::from_millis(200)).is_err()
    })
    .await;
    // The session stays, with svc-b still carried.
    echo_once(
        onprem.handle.consume_addr("svc-b").expect("svc-b"),
        "forward after the removal",
    )
    .await
    .expect("svc-b");
    assert_eq!(closed(om) + closed(cm), 0.0, "a session was closed");
    assert_eq!(dials_ok(om), dials, "a session was dialed");
}
