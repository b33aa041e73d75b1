//! Draining a cloud node or an on-prem gateway under load: no client connection fails.

mod harness;

use std::sync::Arc;
use std::time::{Duration, Instant};

use harness::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_cloud1_during_connect_loop_zero_failures() {
    let s = scenario(Mode::LeastConn).await;
    let front = TestLb::start(vec![s.cloud1.svc_a(), s.cloud2.svc_a()], Mode::RoundRobin).await;
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let addr = front.addr;
    let st = stop.clone();
    let load = tokio::spawn(async move {
        let mut ok = 0u32;
        let mut failures = Vec::new();
        let t = Instant::now();
        while !st.load(std::sync::atomic::Ordering::SeqCst)
            && t.elapsed() < Duration::from_secs(20)
            && ok < 5000
        {
            match echo_once(addr, &format!("drain {ok}")).await {
                Ok(()) => ok += 1,
                Err(e) => failures.push(e),
            }
        }
        (ok, failures)
    });
    // Let the loop run on both nodes, then drain cloud1.
    wait_for(Duration::from_secs(10), "load on cloud1", || {
        counter(
            s.cloud1.handle.metrics(),
            "tether_gateway_streams_total",
            &[("result", "ok")],
        ) >= 20.0
    })
    .await;
    s.cloud1.shutdown.cancel();
    s.cloud1.handle.wait().await;
    let served_by_cloud2 = counter(
        s.cloud2.handle.metrics(),
        "tether_gateway_streams_total",
        &[("result", "ok")],
    );
    wait_for(Duration::from_secs(10), "load continues on cloud2", || {
        counter(
            s.cloud2.handle.metrics(),
            "tether_gateway_streams_total",
            &[("result", "ok")],
        ) >= served_by_cloud2 + 50.0
    })
    .await;
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let (ok, failures) = load.await.expect("load task");
    eprintln!("drain: {ok} connects, {} failures", failures.len());
    assert!(
        failures.is_empty(),
        "failed connects during drain: {failures:?}"
    );
    assert!(ok >= 70);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_onprem1_during_reverse_loop_zero_failures() {
    let s = scenario(Mode::LeastConn).await;
    let addr = s.cloud1.svc_a();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let st = stop.clone();
    let load = tokio::spawn(async move {
        let (mut ok, mut failures) = (0u32, Vec::new());
        let t = Instant::now();
        while !st.load(std::sync::atomic::Ordering::SeqCst)
            && t.elapsed() < Duration::from_secs(20)
            && ok < 5000
        {
            match echo_once(addr, &format!("onprem drain {ok}")).await {
                Ok(()) => ok += 1,
                Err(e) => failures.push(e),
            }
        }
        (ok, failures)
    });
    let reverse_ok = |o: &Onprem| {
        counter(
            o.handle.metrics(),
            "tether_gateway_streams_total",
            &[("direction", "reverse"), ("result", "ok")],
        )
    };
    wait_for(Duration::from_secs(10), "load reaches onprem1", || {
        reverse_ok(&s.onprem1) >= 10.0
    })
    .await;
    s.onprem1.shutdown.cancel();
    s.onprem1.handle.wait().await;
    let before = reverse_ok(&s.onprem2);
    wait_for(Duration::from_secs(10), "load continues on onprem2", || {
        reverse_ok(&s.onprem2) >= before + 50.0
    })
    .await;
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let (ok, failures) = load.await.expect("load task");
    eprintln!("on-prem drain: {ok} connects, {} failures", failures.len());
    assert!(
        failures.is_empty(),
        "failed connects during the on-prem drain: {failures:?}"
    );
}
