//! Reload (SIGHUP) on loopback: certificate and CA rotation keep the sessions that are up
//! while new handshakes use the new files; a gateway removed from an access list loses its
//! sessions and no other does; an invalid file or unreadable TLS file is refused and
//! everything keeps serving. Waits are on readiness receivers, counters and coverage.

mod harness;

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use harness::*;
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use tether_gateway::certs::Validity;
use tether_gateway::config::{CloudConfig, WhenNotReady};
use tether_gateway::metrics::Metrics;
use tether_gateway::reload::ReloadError;
use tokio_util::sync::CancellationToken;

/// The node alone in its roster, so on-prem gateways dialing it directly are covered.
fn alone(mut c: CloudConfig) -> CloudConfig {
    c.roster.retain(|n| n.id == c.id);
    c
}

fn covered_by(o: &Onprem, quota: usize) -> bool {
    o.handle.coverage().get("cloud1").copied() == Some(quota)
}

async fn ready(h: &tether_gateway::CloudHandle) {
    // Not the readiness receiver alone: with `unbind` the listener binds just after it
    // turns, and `is_ready` waits for both.
    wait_for(Duration::from_secs(10), "svc-a ready and bound", || {
        h.is_ready("svc-a")
    })
    .await;
}

/// On-prem counts a session once HELLO_ACK arrives, the node just after it sent it: waits
/// until the node has registered `n`.
async fn registered(h: &tether_gateway::CloudHandle, n: usize) {
    wait_for(
        Duration::from_secs(5),
        "the node registers the sessions",
        || h.session_count() == n,
    )
    .await;
}

fn closed(m: &Metrics) -> f64 {
    counter(m, "tether_gateway_sessions_closed_total", &[])
}

fn reloads(m: &Metrics, result: &str) -> f64 {
    counter(m, "tether_gateway_reloads_total", &[("result", result)])
}

/// The `serial` labels of the expiry series of `key`.
fn serials(m: &Metrics, key: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for fam in m.registry.gather() {
        if fam.name() != "tether_gateway_certificate_expiry_seconds" {
            continue;
        }
        for s in fam.get_metric() {
            let label = |n: &str| {
                s.get_label()
                    .iter()
                    .find(|l| l.name() == n)
                    .map(|l| l.value().to_string())
            };
            if label("key").as_deref() == Some(key) {
                out.extend(label("serial"));
            }
        }
    }
    out
}

fn der(pem_file: &Path) -> CertificateDer<'static> {
    CertificateDer::from_pem_file(pem_file).expect("certificate")
}

/// The certificate a new handshake to `session` is served, as a gateway trusting `certs`'
/// CA and presenting `certs`' onprem1 certificate sees it.
async fn served(certs: &Certs, session: std::net::SocketAddr) -> std::io::Result<Vec<u8>> {
    let tls = tls_session(certs, Some("onprem1"), session).await?;
    let chain = tls.get_ref().1.peer_certificates().expect("a certificate");
    Ok(chain[0].as_ref().to_vec())
}

/// (a) Rotation: the cloud node's certificate is replaced in place by one of the same CA,
/// then both sides move to a new CA. Sessions already up stay up through both reloads;
/// new handshakes get the new certificate; after a restart of the cloud node on the new
/// CA only, the on-prem gateways (reloaded onto it) cover it again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificate_and_ca_rotation_keep_sessions_and_reach_new_handshakes() {
    let certs = Certs::new();
    let a = echo().await;
    let mut cloud = Cloud::start(alone(cloud_config(
        &certs,
        "cloud1",
        WhenNotReady::Unbind,
        None,
    )))
    .await;
    let session = cloud.handle.session_addr;
    let onprem1 = Onprem::start(onprem_config(&certs, "onprem1", session, a.addr, false)).await;
    let onprem2 = Onprem::start(onprem_config(&certs, "onprem2", session, a.addr, false)).await;
    wait_for(
        Duration::from_secs(20),
        "both gateways cover cloud1",
        || covered_by(&onprem1, 2) && covered_by(&onprem2, 2),
    )
    .await;
    ready(&cloud.handle).await;
    registered(&cloud.handle, 4).await;
    let m = cloud.handle.metrics();
    let closed_before = closed(m);
    let old_serials = serials(m, "cert");
    assert_eq!(
        served(&certs, session).await.expect("handshake"),
        der(&certs.path("cloud1.pem")).as_ref()
    );

    // 1. A new certificate of the same CA, written over the old files.
    let fresh = certs
        .ca
        .issue("cloud1", DOMAIN, Validity::Current)
        .expect("issue");
    std::fs::write(certs.path("cloud1.pem"), &fresh.cert).expect("write");
    std::fs::write(certs.path("cloud1.key"), &fresh.key).expect("write");
    let plan = cloud
        .handle
        .reload((*cloud.handle.config()).clone())
        .expect("reload with the same paths");
    assert!(plan.is_empty(), "{plan:?}");
    let new_der = CertificateDer::from_pem_slice(fresh.cert.as_bytes()).expect("pem");
    assert_eq!(
        served(&certs, session).await.expect("handshake"),
        new_der.as_ref(),
        "a new handshake gets the new certificate"
    );
    let rotated_serials = serials(m, "cert");
    assert_ne!(rotated_serials, old_serials, "the expiry metric follows");
    assert_eq!(cloud.handle.session_count(), 4, "sessions stay up");
    assert_eq!(closed(m), closed_before);
    echo_once(cloud.svc_a(), "after the certificate rotation")
        .await
        .expect("served");

    // 2. A new CA for everything: the cloud node first, then the gateways.
    let certs2 = Certs::with_ca("Tether test CA 2027");
    let mut next = (*cloud.handle.config()).clone();
    next.tls = certs2.files("cloud1");
    let plan = cloud.handle.reload(next).expect("reload onto the new CA");
    assert!(plan.tls_paths && !plan.needs_restart(), "{plan:?}");
    for (o, id) in [(&onprem1, "onprem1"), (&onprem2, "onprem2")] {
        let mut next = (*o.handle.config()).clone();
        next.tls = certs2.files(id);
        o.handle
            .reload(next)
            .expect("on-prem reload onto the new CA");
        assert_eq!(reloads(o.handle.metrics(), "ok"), 1.0);
    }
    assert_eq!(
        served(&certs2, session)
            .await
            .expect("handshake on the new CA"),
        der(&certs2.path("cloud1.pem")).as_ref()
    );
    assert!(
        served(&certs, session).await.is_err(),
        "a gateway still on the old CA no longer gets in"
    );
    assert_ne!(serials(m, "client_ca"), BTreeSet::new());
    assert_eq!(
        cloud.handle.session_count(),
        4,
        "sessions on the old CA stay up"
    );
    assert_eq!(closed(m), closed_before);
    assert_eq!(reloads(m, "ok"), 2.0);
    assert_eq!(reloads(m, "failed"), 0.0);
    echo_once(cloud.svc_a(), "after the CA rotation")
        .await
        .expect("served");

    // 3. The gateways' next handshakes use the new CA and certificates: a restarted node
    // that knows only the new CA is covered again.
    let mut restarted = cloud.config.clone();
    restarted.tls = certs2.files("cloud1");
    cloud.handle.kill().await;
    wait_for(Duration::from_secs(5), "sessions to cloud1 gone", || {
        covered_by(&onprem1, 0) && covered_by(&onprem2, 0)
    })
    .await;
    cloud = Cloud::start(restarted).await;
    wait_for(
        Duration::from_secs(20),
        "the gateways cover the restarted node on the new CA",
        || covered_by(&onprem1, 2) && covered_by(&onprem2, 2),
    )
    .await;
    ready(&cloud.handle).await;
    registered(&cloud.handle, 4).await;
    echo_once(cloud.svc_a(), "after the restart on the new CA")
        .await
        .expect("served");
}

/// The CA rotation without a gap that docs/gateway.md describes: both CAs trusted
/// everywhere, then the certificates moved to the new CA, then the old CA dropped. After
/// each step a restarted node (every session handshaken again) is covered again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ca_bundle_rotates_without_a_gap() {
    let old = Certs::new();
    let new = Certs::with_ca("Tether test CA 2027");
    let both = old.path("both.pem");
    std::fs::write(&both, old.ca.pem().cert + &new.ca.pem().cert).expect("write");
    let a = echo().await;
    let mut cloud = Cloud::start(alone(cloud_config(
        &old,
        "cloud1",
        WhenNotReady::Unbind,
        None,
    )))
    .await;
    let onprem = Onprem::start(onprem_config(
        &old,
        "onprem1",
        cloud.handle.session_addr,
        a.addr,
        false,
    ))
    .await;
    wait_for(Duration::from_secs(20), "onprem1 covers cloud1", || {
        covered_by(&onprem, 2)
    })
    .await;
    let reload_onprem = |cert: &Certs, ca: &Path| {
        let mut next = (*onprem.handle.config()).clone();
        next.tls = cert.files("onprem1");
        next.tls.ca = ca.to_path_buf();
        onprem.handle.reload(next).expect("on-prem reload");
    };
    // Restarts the node on `cert`'s certificate trusting `ca`, on the same ports.
    let restart = |cloud: &Cloud, cert: &Certs, ca: &Path| {
        let mut next = cloud.config.clone();
        next.tls = cert.files("cloud1");
        next.tls.ca = ca.to_path_buf();
        next
    };

    // 1. Both CAs trusted, on both sides.
    let mut next = (*cloud.handle.config()).clone();
    next.tls.ca = both.clone();
    cloud.handle.reload(next).expect("cloud reload");
    reload_onprem(&old, &both);
    // 2. The node's certificate from the new CA; the gateway still presents its old one.
    let next = restart(&cloud, &new, &both);
    cloud.handle.kill().await;
    cloud = Cloud::start(next).await;
    wait_for(
        Duration::from_secs(20),
        "an old-CA gateway covers a new-CA node",
        || covered_by(&onprem, 2),
    )
    .await;
    registered(&cloud.handle, 2).await;
    // 3. The gateway's certificate from the new CA, sessions kept.
    reload_onprem(&new, &both);
    assert_eq!(cloud.handle.session_count(), 2);
    // 4. The old CA dropped everywhere.
    reload_onprem(&new, &new.path("ca.pem"));
    let next = restart(&cloud, &new, &new.path("ca.pem"));
    cloud.handle.kill().await;
    cloud = Cloud::start(next).await;
    wait_for(
        Duration::from_secs(20),
        "the gateway covers a node that trusts only the new CA",
        || covered_by(&onprem, 2) && cloud.handle.session_count() == 2,
    )
    .await;
    ready(&cloud.handle).await;
    echo_once(cloud.svc_a(), "on the new CA only")
        .await
        .expect("served");
    assert_eq!(reloads(onprem.handle.metrics(), "ok"), 3.0);
}

/// (b) A gateway removed from `allowed_exporters` loses its sessions (counted as
/// `revoked`), the other keeps its own; put back, it is admitted again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_removed_from_the_access_list_loses_its_sessions_only() {
    let certs = Certs::new();
    let a1 = echo().await;
    let a2 = echo().await;
    let cloud = Cloud::start(alone(cloud_config(
        &certs,
        "cloud1",
        WhenNotReady::Unbind,
        None,
    )))
    .await;
    let session = cloud.handle.session_addr;
    let onprem1 = Onprem::start(onprem_config(&certs, "onprem1", session, a1.addr, false)).await;
    let onprem2 = Onprem::start(onprem_config(&certs, "onprem2", session, a2.addr, false)).await;
    wait_for(
        Duration::from_secs(20),
        "both gateways cover cloud1",
        || covered_by(&onprem1, 2) && covered_by(&onprem2, 2),
    )
    .await;
    ready(&cloud.handle).await;
    registered(&cloud.handle, 4).await;
    let m = cloud.handle.metrics();
    assert_eq!(closed(m), 0.0);
    let refused_before = counter(
        m,
        "tether_gateway_auth_refusals_total",
        &[("reason", "unknown_gateway")],
    );

    let dials_ok = |o: &Onprem| {
        counter(
            o.handle.metrics(),
            "tether_gateway_dials_total",
            &[("result", "ok")],
        )
    };
    let onprem1_dials = dials_ok(&onprem1);
    let original = (*cloud.handle.config()).clone();
    let mut without = original.clone();
    without.reverse[0].allowed_exporters.remove("onprem2");
    let plan = cloud.handle.reload(without).expect("reload");
    assert_eq!(plan.acl, ["reverse svc-a"]);
    // Counted as the reload closes them.
    assert_eq!(
        counter(
            m,
            "tether_gateway_sessions_closed_total",
            &[("reason", "revoked")]
        ),
        2.0
    );
    assert_eq!(closed(m), 2.0, "no other session closed");
    wait_for(Duration::from_secs(5), "onprem2's sessions gone", || {
        !cloud.handle.sessions_by_gateway().contains_key("onprem2")
    })
    .await;
    wait_for(Duration::from_secs(5), "onprem2 refused on re-dial", || {
        counter(
            m,
            "tether_gateway_auth_refusals_total",
            &[("reason", "unknown_gateway")],
        ) > refused_before
    })
    .await;
    assert_eq!(
        cloud.handle.sessions_by_gateway().get("onprem1"),
        Some(&2),
        "onprem1 keeps its sessions"
    );
    assert!(covered_by(&onprem1, 2));
    assert_eq!(closed(m), 2.0);
    // (A wait, not an assert: the harness's export check, 200 ms timeout and fall 1, can
    // flap under load.)
    ready(&cloud.handle).await;
    let streams = |o: &Onprem| {
        counter(
            o.handle.metrics(),
            "tether_gateway_streams_total",
            &[("service", "svc-a"), ("result", "ok")],
        )
    };
    let (by1, by2) = (streams(&onprem1), streams(&onprem2));
    for i in 0..4 {
        echo_once(cloud.svc_a(), &format!("served by onprem1 {i}"))
            .await
            .expect("served");
    }
    assert_eq!(streams(&onprem1), by1 + 4.0);
    assert_eq!(streams(&onprem2), by2, "no stream reaches onprem2");

    // Put back, it comes back (within its reconnect backoff cap, 2 s).
    cloud.handle.reload(original).expect("reload");
    wait_for(
        Duration::from_secs(10),
        "onprem2 covers cloud1 again",
        || covered_by(&onprem2, 2),
    )
    .await;
    assert_eq!(closed(m), 2.0, "only the revoked sessions were closed");
    assert_eq!(
        counter(
            m,
            "tether_gateway_sessions_closed_total",
            &[("reason", "revoked")]
        ),
        2.0
    );
    assert_eq!(dials_ok(&onprem1), onprem1_dials, "onprem1 never re-dialed");
    assert_eq!(reloads(m, "ok"), 2.0);
}

/// The cloud node's file, relative TLS paths in `dir` (next to the certificates).
fn cloud_file(ping: &str) -> String {
    format!(
        r#"[node]
role = "cloud"
id = "cloud1"
session_listen = "127.0.0.3:0"
admin_listen = "127.0.0.3:0"
[cluster]
nodes = [ {{ id = "cloud1", sni = "cloud1.{DOMAIN}" }} ]
[timers]
ping = "{ping}"
dead_after = "1200ms"
readiness_down = "200ms"
[tls]
cert = "cloud1.pem"
key = "cloud1.key"
client_ca = "ca.pem"
[[reverse]]
service = "svc-a"
listen = "127.0.0.3:0"
allowed_exporters = ["onprem1"]
"#
    )
}

/// (c) An invalid file, TLS files that do not load, and a change that needs a restart are
/// each refused and counted; the node keeps serving with its sessions and its certificate,
/// and a valid file after them is applied.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_files_are_refused_and_everything_keeps_serving() {
    let certs = Certs::new();
    let a = echo().await;
    let file = certs.path("gw.toml");
    std::fs::write(&file, cloud_file("200ms")).expect("write");
    let config = tether_gateway::config::load(&file).expect("valid file");
    let stop = CancellationToken::new();
    let _stop = CancelOnDrop(stop.clone());
    let gateway = tether_gateway::start(config, stop).await.expect("start");
    let tether_gateway::Handle::Cloud(cloud) = &gateway else {
        panic!("a cloud node")
    };
    watch_changes(cloud.metrics());
    let session = cloud.session_addr;
    let svc_a = cloud.service_addrs["svc-a"];
    let onprem = Onprem::start(onprem_config(&certs, "onprem1", session, a.addr, false)).await;
    wait_for(Duration::from_secs(20), "onprem1 covers cloud1", || {
        covered_by(&onprem, 2)
    })
    .await;
    ready(cloud).await;
    registered(cloud, 2).await;
    let m = cloud.metrics();
    let cert = der(&certs.path("cloud1.pem"));

    let mut failed = 0.0;
    let mut refused = |e: ReloadError, wants: &[&str]| {
        let text = e.to_string();
        for w in wants {
            assert!(text.contains(w), "{w:?} not in: {text}");
        }
        failed += 1.0;
        assert_eq!(reloads(m, "failed"), failed, "{text}");
    };

    // A file that does not parse: the `--check` errors.
    std::fs::write(&file, "[node\nrole = \"cloud\"\n").expect("write");
    let e = gateway.reload_from(&file).expect_err("garbage");
    assert!(matches!(e, ReloadError::Config(_)), "{e:?}");
    refused(e, &["gw.toml:1"]);
    // A file naming a certificate that does not exist.
    std::fs::write(
        &file,
        cloud_file("200ms").replace("cloud1.pem", "missing.pem"),
    )
    .expect("write");
    let e = gateway.reload_from(&file).expect_err("missing certificate");
    refused(e, &["tls.cert", "missing.pem"]);

    // The files going bad between the check and the reload: each names its key and file.
    let running = (*cloud.config()).clone();
    let mut unreadable = running.clone();
    unreadable.tls.cert = certs.path("gone.pem");
    let e = cloud
        .reload(unreadable)
        .expect_err("unreadable certificate");
    assert!(matches!(e, ReloadError::Tls(_)), "{e:?}");
    refused(e, &["tls.cert", "gone.pem"]);
    let mut mismatched = running.clone();
    mismatched.tls.key = certs.path("onprem1.key");
    let e = cloud
        .reload(mismatched)
        .expect_err("key of another certificate");
    refused(e, &["tls.key", "onprem1.key", "not the private key"]);
    std::fs::write(certs.path("bad-ca.pem"), "not a certificate\n").expect("write");
    let mut bad_ca = running.clone();
    bad_ca.tls.ca = certs.path("bad-ca.pem");
    let e = cloud.reload(bad_ca).expect_err("bad CA");
    refused(e, &["tls.client_ca", "bad-ca.pem"]);
    // A change only a restart applies.
    let mut moved = running.clone();
    moved.reverse[0].listen = any_port();
    let e = cloud.reload(moved).expect_err("moved listener");
    assert!(matches!(e, ReloadError::NeedsRestart(_)), "{e:?}");
    refused(e, &["needs a restart", "reverse svc-a: listen"]);
    assert_eq!(reloads(m, "ok"), 0.0);

    // Everything kept serving, on the certificate it had.
    assert_eq!(cloud.session_count(), 2);
    assert_eq!(closed(m), 0.0);
    ready(cloud).await;
    echo_once(svc_a, "after the refused reloads")
        .await
        .expect("served");
    assert_eq!(
        served(&certs, session).await.expect("handshake"),
        cert.as_ref()
    );
    assert_eq!(*cloud.config(), running);

    // An on-prem gateway refuses a CA it cannot read the same way.
    let mut bad = (*onprem.handle.config()).clone();
    bad.tls.ca = certs.path("bad-ca.pem");
    let e = onprem.handle.reload(bad).expect_err("bad CA");
    assert!(e.to_string().contains("tls.ca"), "{e}");
    assert_eq!(reloads(onprem.handle.metrics(), "failed"), 1.0);
    // A certificate of the CA, but for another id: every session would be refused.
    let mut other = (*onprem.handle.config()).clone();
    other.tls = certs.files("onprem2");
    let e = onprem
        .handle
        .reload(other)
        .expect_err("another id's certificate");
    let text = e.to_string();
    assert!(
        text.contains("tls.cert") && text.contains("onprem2.pem") && text.contains("\"onprem1\""),
        "{text}"
    );
    assert_eq!(reloads(onprem.handle.metrics(), "failed"), 2.0);
    assert!(covered_by(&onprem, 2));

    // A valid file after all that is applied.
    std::fs::write(&file, cloud_file("300ms")).expect("write");
    let plan = gateway.reload_from(&file).expect("valid file");
    assert_eq!(plan.timers, ["ping"]);
    assert_eq!(reloads(m, "ok"), 1.0);
    assert_eq!(cloud.config().timers.ping, Duration::from_millis(300));
}
