//! Session hygiene over loopback: streams idle for `stream_idle_timeout` are closed and
//! counted (reverse and forward, after a reload), and sessions that reach
//! `max_session_age` are replaced, make before break, without failing a client.

mod harness;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use harness::*;
use tether_gateway::config::{Timers, WhenNotReady};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// cloud1 alone (forwarding svc-b to an echo server) and onprem1 (exporting svc-a to an
/// echo server, consuming svc-b) with `quota` sessions, ready both ways. No second gateway
/// or node: nothing else could hide a stream that fails.
struct Pair {
    _certs: Certs,
    _a: Echo,
    _b: Echo,
    cloud: Cloud,
    onprem: Onprem,
}

impl Pair {
    async fn start(quota: usize, timers: impl Fn(&mut Timers)) -> Pair {
        let certs = Certs::new();
        let a = echo().await;
        let b = echo().await;
        let mut cc = single_node(cloud_config(
            &certs,
            "cloud1",
            WhenNotReady::Unbind,
            Some(b.addr),
        ));
        timers(&mut cc.timers);
        // The cloud role has no session age.
        cc.timers.max_session_age = None;
        let cloud = Cloud::start(cc).await;
        let mut oc = onprem_config(&certs, "onprem1", cloud.handle.session_addr, a.addr, true);
        timers(&mut oc.timers);
        oc.prepared_connections = quota;
        let onprem = Onprem::start(oc).await;
        let p = Pair {
            _certs: certs,
            _a: a,
            _b: b,
            cloud,
            onprem,
        };
        wait_for(Duration::from_secs(20), "coverage and readiness", || {
            p.covered(quota)
                && p.cloud.handle.is_ready("svc-a")
                && p.onprem.handle.is_ready("svc-b")
        })
        .await;
        p
    }

    /// Whether onprem1 keeps `quota` sessions on cloud1, and no other node.
    fn covered(&self, quota: usize) -> bool {
        let c = self.onprem.handle.coverage();
        c.len() == 1 && c.get("cloud1").copied() == Some(quota)
    }

    /// The reverse path (a client of cloud1) and the forward path (a client of onprem1).
    fn paths(&self) -> [(&'static str, std::net::SocketAddr); 2] {
        [
            ("svc-a", self.cloud.svc_a()),
            ("svc-b", self.onprem.handle.consume_addrs["svc-b"]),
        ]
    }

    /// Streams of `service` closed for `reason`, on both gateways together.
    fn closed(&self, service: &str, reason: &str) -> f64 {
        let labels = [("service", service), ("reason", reason)];
        counter(
            self.cloud.handle.metrics(),
            "tether_gateway_streams_closed_total",
            &labels,
        ) + counter(
            self.onprem.handle.metrics(),
            "tether_gateway_streams_closed_total",
            &labels,
        )
    }

    fn active(&self) -> f64 {
        counter(
            self.cloud.handle.metrics(),
            "tether_gateway_streams_active",
            &[],
        ) + counter(
            self.onprem.handle.metrics(),
            "tether_gateway_streams_active",
            &[],
        )
    }
}

/// One line to the echo server behind `s` and back, within 5 s.
async fn round_trip(s: &mut TcpStream, line: &str) -> Result<(), String> {
    let run = async {
        s.write_all(line.as_bytes())
            .await
            .map_err(|e| format!("write: {e}"))?;
        let mut buf = vec![0u8; line.len()];
        s.read_exact(&mut buf)
            .await
            .map_err(|e| format!("read: {e}"))?;
        if buf != line.as_bytes() {
            return Err(format!("mismatch: {:?}", String::from_utf8_lossy(&buf)));
        }
        Ok(())
    };
    tokio::time::timeout(Duration::from_secs(5), run)
        .await
        .map_err(|_| "timed out after 5s".to_string())?
}

async fn connect(addr: std::net::SocketAddr) -> TcpStream {
    tokio::time::timeout(Duration::from_secs(5), TcpStream::connect(addr))
        .await
        .expect("connect in time")
        .expect("connect")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_streams_are_closed_and_counted_after_a_reload() {
    // Started with the default idle timeout (an hour).
    let p = Pair::start(2, |_| {}).await;
    let idle = Duration::from_millis(600);
    // A stream of each path opened before the reload keeps the timeout it started with.
    let mut before = Vec::new();
    for (service, addr) in p.paths() {
        let mut s = connect(addr).await;
        round_trip(&mut s, &format!("{service} before\n"))
            .await
            .expect("before the reload");
        before.push((service, s));
    }
    let mut cc = (*p.cloud.handle.config()).clone();
    cc.timers.stream_idle_timeout = idle;
    let plan = p.cloud.handle.reload(cc).expect("cloud reload");
    assert_eq!(plan.timers, ["stream_idle_timeout"]);
    let mut oc = (*p.onprem.handle.config()).clone();
    oc.timers.stream_idle_timeout = idle;
    let plan = p.onprem.handle.reload(oc).expect("on-prem reload");
    assert_eq!(plan.timers, ["stream_idle_timeout"]);

    // Streams that keep moving bytes, a third of the timeout apart, outlive it 3 times.
    for (service, addr) in p.paths() {
        let mut s = connect(addr).await;
        let started = Instant::now();
        let mut n = 0;
        while started.elapsed() < idle * 3 {
            round_trip(&mut s, &format!("{service} busy {n}\n"))
                .await
                .unwrap_or_else(|e| panic!("{service}: a busy stream failed: {e}"));
            n += 1;
            tokio::time::sleep(idle / 3).await;
        }
        assert!(n >= 9, "{service}: {n} round trips");
        assert_eq!(p.closed(service, "idle_timeout"), 0.0, "{service}");
    }

    // Streams left idle are closed on both sides: the client reads the end of its stream
    // about the timeout after its last byte.
    for (service, addr) in p.paths() {
        let mut s = connect(addr).await;
        round_trip(&mut s, &format!("{service} then idle\n"))
            .await
            .expect("first round trip");
        let last = Instant::now();
        let mut buf = [0u8; 16];
        let r = tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf))
            .await
            .unwrap_or_else(|_| panic!("{service}: an idle stream was not closed"));
        let after = last.elapsed();
        assert!(matches!(r, Ok(0) | Err(_)), "{service}: {r:?}");
        // The gateways' timers count from when they last moved a byte, a little before
        // the client read it (and the on-prem one earlier still): some slack below.
        assert!(after >= idle / 2, "{service}: closed after {after:?}");
        eprintln!("{service}: idle stream closed {after:?} after its last byte");
        drop(s);
        wait_for(
            Duration::from_secs(5),
            &format!("{service}: idle timeout counted"),
            || p.closed(service, "idle_timeout") >= 1.0,
        )
        .await;
    }
    // The streams opened before the reload are still up, and nothing else is relayed.
    for (service, s) in &mut before {
        round_trip(s, &format!("{service} still there\n"))
            .await
            .unwrap_or_else(|e| panic!("{service}: a stream from before the reload: {e}"));
    }
    drop(before);
    wait_for(Duration::from_secs(5), "every stream ended", || {
        p.active() == 0.0
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_are_recycled_at_their_age_without_failing_a_client() {
    // One session: were it closed before its replacement is up, the node would have
    // none for a while and clients would be refused.
    let age = Duration::from_secs(1);
    let p = Arc::new(
        Pair::start(1, |t| {
            t.max_session_age = Some(age);
        })
        .await,
    );
    let recycled = |p: &Pair| {
        counter(
            p.onprem.handle.metrics(),
            "tether_gateway_sessions_closed_total",
            &[("reason", "max_age")],
        )
    };
    let stop = Arc::new(AtomicBool::new(false));
    // A steady loop of short clients on each path, bounded in count and time.
    let mut loops = Vec::new();
    for (service, addr) in p.paths() {
        let stop = stop.clone();
        loops.push(tokio::spawn(async move {
            let (mut ok, mut failures) = (0u32, Vec::new());
            let t = Instant::now();
            while !stop.load(Ordering::SeqCst)
                && t.elapsed() < Duration::from_secs(30)
                && ok < 20_000
            {
                match echo_once(addr, &format!("{service} {ok}")).await {
                    Ok(()) => ok += 1,
                    Err(e) => failures.push(e),
                }
            }
            (service, ok, failures)
        }));
    }
    // And long clients, each talking for 2.5 s across recycles (under the drain grace).
    for (service, addr) in p.paths() {
        let stop = stop.clone();
        loops.push(tokio::spawn(async move {
            let (mut ok, mut failures) = (0u32, Vec::new());
            let t = Instant::now();
            while !stop.load(Ordering::SeqCst) && t.elapsed() < Duration::from_secs(30) {
                let mut s = connect(addr).await;
                let lived = Instant::now();
                while lived.elapsed() < Duration::from_millis(2500) {
                    match round_trip(&mut s, &format!("{service} long {ok}\n")).await {
                        Ok(()) => ok += 1,
                        Err(e) => {
                            failures.push(format!("long: {e}"));
                            break;
                        }
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
            (service, ok, failures)
        }));
    }
    let took = wait_for(Duration::from_secs(25), "six recycles", || {
        recycled(&p) >= 6.0
    })
    .await;
    eprintln!("6 recycles in {took:?}");
    stop.store(true, Ordering::SeqCst);
    for l in loops {
        let (service, ok, failures) = l.await.expect("load task");
        eprintln!("{service}: {ok} round trips, {} failures", failures.len());
        assert!(failures.is_empty(), "{service}: {failures:?}");
        assert!(ok >= 10, "{service}: {ok}");
    }
    let om = p.onprem.handle.metrics();
    let cm = p.cloud.handle.metrics();
    // On-prem: every session that ended was recycled (none died, none was closed as
    // surplus or ejected).
    let closed = |m: &tether_gateway::metrics::Metrics, reason: &str| {
        counter(
            m,
            "tether_gateway_sessions_closed_total",
            &[("reason", reason)],
        )
    };
    for reason in [
        "peer_closed",
        "dead",
        "killed",
        "mux_closed",
        "protocol",
        "silent",
    ] {
        assert_eq!(
            closed(om, reason),
            0.0,
            "on-prem sessions ended as {reason}"
        );
    }
    assert_eq!(
        counter(
            om,
            "tether_gateway_dials_total",
            &[("node", "cloud1"), ("result", "surplus")]
        ),
        0.0
    );
    // The cloud saw them go (the gateway closed them) and new ones come: never one
    // replaced by a newcomer in its slot.
    wait_for(
        Duration::from_secs(5),
        "the cloud sees the recycles",
        || counter(cm, "tether_gateway_sessions_closed_total", &[]) >= 6.0,
    )
    .await;
    assert_eq!(closed(cm, "replaced"), 0.0);
    assert_eq!(closed(cm, "dead"), 0.0);
    assert!(p.covered(1), "{:?}", p.onprem.handle.coverage());
    let dials_ok = counter(
        om,
        "tether_gateway_dials_total",
        &[("node", "cloud1"), ("result", "ok")],
    );
    assert!(dials_ok >= 1.0 + 6.0, "{dials_ok} dials kept");
}

/// `max_session_age` turned on by a reload recycles the sessions already up (spread, not
/// all at once), and turned off again stops recycling.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_turns_recycling_on_and_off() {
    let p = Pair::start(2, |_| {}).await;
    let om = p.onprem.handle.metrics();
    let recycled = || {
        counter(
            om,
            "tether_gateway_sessions_closed_total",
            &[("reason", "max_age")],
        )
    };
    let reload = |age: Option<Duration>| {
        let mut oc = (*p.onprem.handle.config()).clone();
        oc.timers.max_session_age = age;
        let plan = p.onprem.handle.reload(oc).expect("on-prem reload");
        assert_eq!(plan.timers, ["max_session_age"]);
    };
    // The sessions are younger than a second: their ages fall due 0.85 to 1.15 s after
    // they came up, or within 0.3 s of the reload if that is later.
    reload(Some(Duration::from_secs(1)));
    let took = wait_for(Duration::from_secs(10), "both sessions recycled", || {
        recycled() >= 2.0
    })
    .await;
    eprintln!("both recycled {took:?} after the reload");
    echo_once(p.cloud.svc_a(), "after recycles")
        .await
        .expect("reverse after recycles");
    reload(None);
    // A recycle handed out before the reload still finishes; none starts after it.
    let at_reload = recycled();
    let rtts = || om.session_rtt_seconds.get_sample_count();
    let from = rtts();
    // Ten pings answered on each of the two sessions (200 ms apart): 1 s, longer than a
    // session lives with the age on.
    wait_for(Duration::from_secs(10), "twenty ping round trips", || {
        rtts() >= from + 20
    })
    .await;
    assert!(
        recycled() <= at_reload + 1.0,
        "recycled {} times after turning it off",
        recycled() - at_reload
    );
    assert!(p.covered(2), "{:?}", p.onprem.handle.coverage());
}
