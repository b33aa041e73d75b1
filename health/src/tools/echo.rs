//! An echo server: writes back every byte it reads, and shuts its side down when the client
//! does, so half-close can be observed through a proxy.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

/// Counters of an echo server, shared with whoever started it.
#[derive(Debug, Default)]
pub struct EchoStats {
    /// Connections accepted.
    pub accepted: AtomicU64,
    /// Bytes echoed.
    pub bytes: AtomicU64,
}

/// A running echo server.
#[derive(Debug, Clone)]
pub struct Echo {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Its counters.
    pub stats: Arc<EchoStats>,
}

/// Binds `addr` and serves until `shutdown` is cancelled. `banner`, when given, is written
/// first on every connection (a line that tells which server answered).
pub async fn start(
    addr: SocketAddr,
    banner: Option<String>,
    shutdown: CancellationToken,
) -> std::io::Result<Echo> {
    let listener = TcpListener::bind(addr).await?;
    let addr = listener.local_addr()?;
    let stats = Arc::new(EchoStats::default());
    let echo = Echo {
        addr,
        stats: stats.clone(),
    };
    tokio::spawn(async move {
        let banner: Option<Arc<str>> = banner.map(Into::into);
        loop {
            let accepted = tokio::select! {
                a = listener.accept() => a,
                _ = shutdown.cancelled() => return,
            };
            let Ok((stream, _)) = accepted else {
                // EMFILE and friends: back off briefly instead of spinning.
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                continue;
            };
            stats.accepted.fetch_add(1, Ordering::Relaxed);
            let stats = stats.clone();
            let banner = banner.clone();
            let shutdown = shutdown.clone();
            tokio::spawn(async move {
                tokio::select! {
                    _ = serve_one(stream, banner, &stats) => {}
                    _ = shutdown.cancelled() => {}
                }
            });
        }
    });
    Ok(echo)
}

async fn serve_one(
    mut stream: TcpStream,
    banner: Option<Arc<str>>,
    stats: &EchoStats,
) -> std::io::Result<()> {
    let _ = stream.set_nodelay(true);
    if let Some(banner) = banner {
        // One write, so the line leaves as one segment: with TCP_NODELAY two writes are
        // two segments, and a client reading the banner once could get half of it.
        stream.write_all(format!("{banner}\n").as_bytes()).await?;
    }
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            return stream.shutdown().await;
        }
        stream.write_all(&buf[..n]).await?;
        stats.bytes.fetch_add(n as u64, Ordering::Relaxed);
    }
}
