//! The admin HTTP surface: `/metrics`, `/healthz`, `/readyz`, plus routes a daemon adds.

use std::net::SocketAddr;
use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant};

use axum::Router;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use prometheus::{Encoder, IntCounter, Registry, TextEncoder};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

/// Admin connections closed at accept because [`Limits::max_connections`] were open. One
/// counter for the process, registered into every daemon's registry by [`router`].
static REFUSED: LazyLock<IntCounter> = LazyLock::new(|| {
    IntCounter::new(
        "tether_admin_connections_refused_total",
        "Admin connections closed at once because the admin connection cap was reached.",
    )
    .expect("a valid metric name")
});

/// Tells `/readyz` whether the daemon can do its job, and why not when it cannot.
pub type Readiness = Arc<dyn Fn() -> Result<(), String> + Send + Sync>;

/// The base router: `/metrics` from `registry`, `/healthz` (200 while the process serves) and
/// `/readyz` (200 when `readiness` says so, else 503 with its reason).
///
/// Daemons merge their own routes into it (`router(...).merge(mine)`).
pub fn router(registry: Registry, readiness: Readiness) -> Router {
    // Already registered (a second router on the same registry) is fine: it is one counter.
    let _ = registry.register(Box::new(REFUSED.clone()));
    let _ = registry.register(Box::new(crate::logs::LinesDropped::new()));
    Router::new()
        .route(
            "/metrics",
            get(move || {
                let registry = registry.clone();
                async move { metrics_text(&registry) }
            }),
        )
        .route("/healthz", get(|| async { "ok\n" }))
        .route(
            "/readyz",
            get(move || {
                let readiness = readiness.clone();
                async move {
                    match readiness() {
                        Ok(()) => (StatusCode::OK, "ready\n".to_string()),
                        Err(why) => (
                            StatusCode::SERVICE_UNAVAILABLE,
                            format!("not ready: {why}\n"),
                        ),
                    }
                }
            }),
        )
}

fn metrics_text(registry: &Registry) -> axum::response::Response {
    let mut buf = Vec::new();
    let encoder = TextEncoder::new();
    match encoder.encode(&registry.gather(), &mut buf) {
        Ok(()) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, encoder.format_type().to_string())],
            buf,
        )
            .into_response(),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            [(header::CONTENT_TYPE, "text/plain".to_string())],
            e.to_string().into_bytes(),
        )
            .into_response(),
    }
}

/// The header that marks a write request as sent on purpose by a program (curl, a script),
/// for requests that carry neither a token nor a JSON body: a browser cannot add it to a
/// request to another site without that site's consent (a CORS preflight, which the admin
/// never grants).
pub const WRITE_HEADER: &str = "x-tether-request";

/// Why a write request must be refused as one a web page on another site could have made a
/// browser send (CSRF), or `None` to accept it.
///
/// A write must carry something a page cannot forge across sites: `Authorization`, a
/// `Content-Type: application/json` body, or [`WRITE_HEADER`]. Without a token configured
/// the request must also not come from another origin (`Origin` other than the `Host`).
pub fn cross_site_write(headers: &axum::http::HeaderMap, token_set: bool) -> Option<String> {
    let text = |name| headers.get(name).and_then(|v| v.to_str().ok());
    if !token_set && let Some(origin) = headers.get(header::ORIGIN) {
        let host = text(header::HOST).unwrap_or("");
        let same = origin.to_str().ok().is_some_and(|o| {
            o.strip_prefix("http://")
                .or_else(|| o.strip_prefix("https://"))
                .is_some_and(|rest| !host.is_empty() && rest.eq_ignore_ascii_case(host))
        });
        if !same {
            return Some(format!(
                "a write from another origin ({}) is refused when no admin token is set",
                String::from_utf8_lossy(origin.as_bytes())
            ));
        }
    }
    let json = text(header::CONTENT_TYPE)
        .is_some_and(|v| v.to_ascii_lowercase().starts_with("application/json"));
    if json || headers.contains_key(header::AUTHORIZATION) || headers.contains_key(WRITE_HEADER) {
        return None;
    }
    Some(format!(
        "write requests need Content-Type: application/json, an Authorization header or an {WRITE_HEADER} header"
    ))
}

/// A warning for an admin listener on a non-loopback address without a token: anyone who
/// can reach it may drain servers or reload. `None` when there is nothing to warn about.
pub fn open_admin_warning(listen: SocketAddr, token_set: bool) -> Option<String> {
    (!token_set && !listen.ip().is_loopback()).then(|| {
        format!(
            "the admin API on {listen} is reachable beyond this host and has no token: anyone who can reach it can change servers and reload; set [admin] token or listen on 127.0.0.1"
        )
    })
}

/// Bounds on the admin listener, so idle or slow clients cannot take the descriptors the
/// daemon's real work (health checks, the data path) needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Connections open at once; a connection beyond is accepted and closed at once.
    pub max_connections: usize,
    /// How long a client may take to send a request's headers, counted from the accept and
    /// again after each response: it is also the idle timeout of a kept-alive connection.
    pub header_timeout: Duration,
    /// How long one connection may last in all (a trickled body, a reader that stalls).
    pub max_age: Duration,
}

impl Limits {
    /// The limits for a process allowed `nofile` descriptors: admin connections may hold an
    /// eighth of them (4 to 256), which leaves the rest as a reserve for everything else.
    pub fn for_fd_limit(nofile: u64) -> Self {
        Limits {
            max_connections: (nofile / 8).clamp(4, 256) as usize,
            header_timeout: Duration::from_secs(10),
            max_age: Duration::from_secs(60),
        }
    }
}

/// The soft `RLIMIT_NOFILE`: how many descriptors this process may hold.
pub fn fd_limit() -> std::io::Result<u64> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we own.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(lim.rlim_cur)
}

/// Raises the soft `RLIMIT_NOFILE` to the hard one, as daemons do at start (the soft default
/// of 1024 is for interactive shells); returns the new soft limit.
pub fn raise_fd_limit() -> std::io::Result<u64> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit read and write only the struct we own.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        if lim.rlim_cur < lim.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: lim.rlim_max,
                rlim_max: lim.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            lim = raised;
        }
    }
    Ok(lim.rlim_cur)
}

/// Binds the admin listener. Separate from [`serve`] so a daemon fails at start, before it
/// does anything else, when the admin port is taken.
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}

/// Serves `router` on `listener` until `shutdown` is cancelled, with [`Limits`] sized from
/// the process's descriptor limit.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let limits = Limits::for_fd_limit(fd_limit().unwrap_or(1024));
    serve_with(listener, router, shutdown, limits).await
}

/// [`serve`] with explicit limits. On shutdown it stops accepting, lets requests in flight
/// finish (each bounded by [`Limits::max_age`]) and returns.
pub async fn serve_with(
    listener: TcpListener,
    router: Router,
    shutdown: CancellationToken,
    limits: Limits,
) -> std::io::Result<()> {
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let graceful = GracefulShutdown::new();
    let service = TowerToHyperService::new(router);
    let mut backoff = Duration::from_millis(5);
    let mut last_warn: Option<Instant> = None;
    let mut warn_now = || {
        let due = last_warn.is_none_or(|t| t.elapsed() > Duration::from_secs(5));
        if due {
            last_warn = Some(Instant::now());
        }
        due
    };
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = shutdown.cancelled() => break,
        };
        let stream = match accepted {
            Ok((stream, _)) => {
                backoff = Duration::from_millis(5);
                stream
            }
            Err(e) => {
                // Out of descriptors or buffers: not fatal, and not worth a busy loop.
                if warn_now() {
                    tracing::warn!(error = %e, "admin accept failed; backing off");
                }
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = shutdown.cancelled() => break,
                }
                backoff = (backoff * 2).min(Duration::from_secs(1));
                continue;
            }
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            // Closed now rather than left in the backlog: the client learns at once, and
            // the descriptor is back before the next accept.
            REFUSED.inc();
            if warn_now() {
                tracing::warn!(
                    limit = limits.max_connections,
                    "admin connection cap reached; closing new admin connections"
                );
            }
            drop(stream);
            continue;
        };
        let conn = hyper::server::conn::http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(limits.header_timeout)
            .serve_connection(TokioIo::new(stream), service.clone());
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            let _permit = permit;
            let _ = tokio::time::timeout(limits.max_age, conn).await;
        });
    }
    drop(listener);
    graceful.shutdown().await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admin_connections_keep_most_descriptors_in_reserve() {
        assert_eq!(Limits::for_fd_limit(1200).max_connections, 150);
        assert_eq!(Limits::for_fd_limit(64).max_connections, 8);
        assert_eq!(Limits::for_fd_limit(16).max_connections, 4);
        assert_eq!(Limits::for_fd_limit(1 << 20).max_connections, 256);
    }

    fn headers(pairs: &[(&'static str, &'static str)]) -> axum::http::HeaderMap {
        let mut h = axum::http::HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, axum::http::HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn writes_a_foreign_page_could_send_are_refused() {
        let host = ("host", "127.0.0.1:9090");
        // What a form or a no-cors fetch on another site can send.
        for h in [
            headers(&[
                host,
                ("content-type", "text/plain"),
                ("origin", "http://evil.example"),
            ]),
            headers(&[host, ("content-type", "text/plain")]),
            headers(&[host, ("content-type", "application/x-www-form-urlencoded")]),
            headers(&[
                host,
                ("content-type", "application/json"),
                ("origin", "null"),
            ]),
        ] {
            assert!(cross_site_write(&h, false).is_some(), "{h:?}");
        }
        for h in [
            headers(&[host, ("content-type", "application/json")]),
            headers(&[host, (WRITE_HEADER, "1")]),
            headers(&[
                host,
                (WRITE_HEADER, "1"),
                ("origin", "http://127.0.0.1:9090"),
            ]),
        ] {
            assert_eq!(cross_site_write(&h, false), None, "{h:?}");
        }
        // With a token the bearer header is what proves intent, whatever the origin.
        let h = headers(&[
            host,
            ("authorization", "Bearer x"),
            ("origin", "http://a.example"),
        ]);
        assert_eq!(cross_site_write(&h, true), None);
    }

    #[test]
    fn an_open_admin_beyond_loopback_is_warned_about() {
        let any = "0.0.0.0:9090".parse().unwrap();
        assert!(open_admin_warning(any, false).is_some());
        assert_eq!(open_admin_warning(any, true), None);
        assert_eq!(
            open_admin_warning("127.0.0.1:9090".parse().unwrap(), false),
            None
        );
    }
}
