//! The echo server, the prober, the HTTP client and the admin router against each other.

use std::sync::Arc;
use std::time::Duration;

use tether_health::check::{CheckKind, Checker, Health, MonitorSpec, spawn_monitor};
use tether_health::tools::{echo, probe};
use tokio_util::sync::CancellationToken;

#[tokio::test]
async fn probe_counts_echoes_and_failures() {
    let stop = CancellationToken::new();
    let e = echo::start(
        "127.0.0.1:0".parse().unwrap(),
        Some("banner".into()),
        stop.clone(),
    )
    .await
    .unwrap();
    let spec = probe::ProbeSpec {
        target: e.addr,
        every: Duration::from_millis(5),
        duration: Duration::from_millis(200),
        timeout: Duration::from_secs(1),
    };
    let report = probe::run(&spec).await;
    assert!(report.attempts >= 10, "{report}");
    assert_eq!(report.failures, 0, "{report}");
    assert_eq!(report.successes, report.attempts);
    stop.cancel();

    // Nothing listens any more: every probe fails, and the gap is the whole run.
    let report = probe::run(&spec).await;
    assert_eq!(report.successes, 0, "{report}");
    assert!(report.failures >= 10, "{report}");
    assert!(report.longest_gap_s >= 0.19, "{report}");
}

#[tokio::test]
async fn admin_router_serves_metrics_health_and_readiness() {
    let registry = prometheus::Registry::new();
    let counter = prometheus::IntCounter::new("tether_test_things_total", "things").unwrap();
    registry.register(Box::new(counter.clone())).unwrap();
    counter.inc_by(7);
    let ready = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let r = ready.clone();
    let router = tether_health::admin::router(
        registry,
        Arc::new(move || {
            if r.load(std::sync::atomic::Ordering::SeqCst) {
                Ok(())
            } else {
                Err("no server up".into())
            }
        }),
    );
    let listener = tether_health::admin::bind("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let addr = listener.local_addr().unwrap();
    let stop = CancellationToken::new();
    tokio::spawn(tether_health::admin::serve(listener, router, stop.clone()));
    let t = Duration::from_secs(2);
    let get = |p: &'static str| tether_health::http::get(addr, "admin", p, t);
    assert_eq!(get("/healthz").await.unwrap().status, 200);
    let r = get("/readyz").await.unwrap();
    assert_eq!(
        (r.status, r.text()),
        (503, "not ready: no server up\n".to_string())
    );
    ready.store(true, std::sync::atomic::Ordering::SeqCst);
    assert_eq!(get("/readyz").await.unwrap().status, 200);
    let m = get("/metrics").await.unwrap().text();
    assert!(m.contains("tether_test_things_total 7"), "{m}");
    stop.cancel();
}

#[tokio::test]
async fn monitor_goes_down_after_fall_and_up_after_rise() {
    let stop = CancellationToken::new();
    let srv = CancellationToken::new();
    let e = echo::start("127.0.0.1:0".parse().unwrap(), None, srv.clone())
        .await
        .unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let spec = MonitorSpec {
        checker: Checker {
            kind: CheckKind::Tcp,
            target: e.addr,
            timeout: Duration::from_millis(500),
        },
        interval: Duration::from_millis(20),
        fast_interval: Duration::from_millis(20),
        down_interval: Duration::from_millis(20),
        rise: 2,
        fall: 3,
        initial: Health::Unknown,
    };
    spawn_monitor(spec, stop.clone(), move |ev| {
        let _ = tx.send(ev);
    });
    let first = rx.recv().await.unwrap();
    assert_eq!(first.state, Health::Up);
    srv.cancel();
    // Wait for the listener to be gone, then count failures until the transition.
    let mut failures = 0;
    loop {
        let ev = tokio::time::timeout(Duration::from_secs(5), rx.recv())
            .await
            .unwrap()
            .unwrap();
        if ev.result.is_err() {
            failures += 1;
        }
        if ev.state == Health::Down {
            break;
        }
    }
    assert_eq!(failures, 3);
    stop.cancel();
}

#[tokio::test]
async fn http_check_expects_the_status() {
    let router =
        tether_health::admin::router(prometheus::Registry::new(), Arc::new(|| Err("no".into())));
    let listener = tether_health::admin::bind("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let addr = listener.local_addr().unwrap();
    let stop = CancellationToken::new();
    tokio::spawn(tether_health::admin::serve(listener, router, stop.clone()));
    let check = |path: &str, expect_status| Checker {
        kind: CheckKind::Http {
            path: path.into(),
            host: None,
            expect_status,
        },
        target: addr,
        timeout: Duration::from_secs(1),
    };
    assert!(check("/healthz", 200).check().await.is_ok());
    let err = check("/readyz", 200).check().await.unwrap_err();
    assert_eq!(err.to_string(), "http status 503, expected 200");
    let exec_ok = Checker {
        kind: CheckKind::Exec {
            argv: vec!["true".into()],
        },
        target: addr,
        timeout: Duration::from_secs(1),
    };
    assert!(exec_ok.check().await.is_ok());
    let exec_slow = Checker {
        kind: CheckKind::Exec {
            argv: vec!["sleep".into(), "5".into()],
        },
        target: addr,
        timeout: Duration::from_millis(100),
    };
    assert!(matches!(
        exec_slow.check().await,
        Err(tether_health::check::CheckError::Timeout(_))
    ));
    stop.cancel();
}
