//! Stream throughput through the gateway vs a plain TLS connection over the same path.
//!
//! Both run through the same emulated WAN link between the on-prem and cloud sides
//! (`--mbit` bandwidth, `--rtt` round-trip time, a bottleneck queue of one
//! bandwidth-delay product), so the comparison shows whether the multiplexer's windows keep
//! one stream as fast as a dedicated TLS connection. Prints one line per case and the ratio.
//!
//! `cargo run --release -p tether-gateway --example throughput -- --rtt 50ms --mbit 1000`

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tether_gateway::certs::{TestCa, Validity};
use tether_gateway::config::{
    CloudConfig, Consume, Export, ForwardService, OnpremConfig, ReverseService, RosterNode, Timers,
    TlsFiles, WhenNotReady,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

fn local() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

/// Reads until EOF, then answers one byte.
async fn sink() -> Result<SocketAddr, BoxError> {
    let l = TcpListener::bind(local()).await?;
    let addr = l.local_addr()?;
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let mut buf = vec![0u8; 256 * 1024];
                while let Ok(n) = s.read(&mut buf).await {
                    if n == 0 {
                        break;
                    }
                }
                let _ = s.write_all(b"!").await;
                let _ = s.shutdown().await;
            });
        }
    });
    Ok(addr)
}

/// An emulated WAN link: forwards to `target` at most `rate` bytes/s each way, delaying
/// each chunk by `one_way`, with a bottleneck queue of `queue` bytes (backpressure beyond).
#[derive(Clone, Copy)]
struct Link {
    one_way: Duration,
    rate: f64,
    queue: usize,
}

async fn delay_line(target: SocketAddr, link: Link) -> Result<SocketAddr, BoxError> {
    let l = TcpListener::bind(local()).await?;
    let addr = l.local_addr()?;
    tokio::spawn(async move {
        while let Ok((client, _)) = l.accept().await {
            let Ok(server) = TcpStream::connect(target).await else {
                continue;
            };
            let _ = client.set_nodelay(true);
            let _ = server.set_nodelay(true);
            let (cr, cw) = client.into_split();
            let (sr, sw) = server.into_split();
            tokio::spawn(delayed(cr, sw, link));
            tokio::spawn(delayed(sr, cw, link));
        }
    });
    Ok(addr)
}

async fn delayed(
    mut r: tokio::net::tcp::OwnedReadHalf,
    mut w: tokio::net::tcp::OwnedWriteHalf,
    link: Link,
) {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(Instant, Vec<u8>)>();
    let queue = std::sync::Arc::new(tokio::sync::Semaphore::new(link.queue));
    let q = queue.clone();
    tokio::spawn(async move {
        let mut buf = vec![0u8; 64 * 1024];
        let mut free_at = Instant::now();
        loop {
            match r.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    // Bytes queued at the bottleneck beyond `queue` wait here (TCP backpressure).
                    let Ok(permit) = q.acquire_many(n as u32).await else {
                        break;
                    };
                    permit.forget();
                    let now = Instant::now();
                    let start = free_at.max(now);
                    free_at = start + Duration::from_secs_f64(n as f64 / link.rate);
                    if tx
                        .send((free_at + link.one_way, buf[..n].to_vec()))
                        .is_err()
                    {
                        break;
                    }
                }
            }
        }
    });
    while let Some((due, chunk)) = rx.recv().await {
        tokio::time::sleep_until(due.into()).await;
        if w.write_all(&chunk).await.is_err() {
            return;
        }
        queue.add_permits(chunk.len());
    }
    let _ = w.shutdown().await;
}

async fn push<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(
    mut s: S,
    bytes: usize,
) -> Result<(), BoxError> {
    let chunk = vec![7u8; 64 * 1024];
    let mut left = bytes;
    while left > 0 {
        let n = left.min(chunk.len());
        s.write_all(&chunk[..n]).await?;
        left -= n;
    }
    s.shutdown().await?;
    let mut done = [0u8; 1];
    s.read_exact(&mut done).await?;
    Ok(())
}

fn mbps(bytes: usize, took: Duration) -> f64 {
    bytes as f64 / took.as_secs_f64() / (1024.0 * 1024.0)
}

fn files(dir: &std::path::Path, name: &str) -> TlsFiles {
    TlsFiles {
        cert: dir.join(format!("{name}.pem")),
        key: dir.join(format!("{name}.key")),
        ca: dir.join("ca.pem"),
    }
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let mut rtt = Duration::from_millis(50);
    let mut mib = 64usize;
    let mut runs = 3usize;
    let mut mbit = 1000f64;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--rtt" => rtt = humantime::parse_duration(&args.next().ok_or("--rtt needs a value")?)?,
            "--mib" => mib = args.next().ok_or("--mib needs a value")?.parse()?,
            "--runs" => runs = args.next().ok_or("--runs needs a value")?.parse()?,
            "--mbit" => mbit = args.next().ok_or("--mbit needs a value")?.parse()?,
            other => return Err(format!("unknown argument {other:?}").into()),
        }
    }
    let bytes = mib * 1024 * 1024;
    let rate = mbit * 1_000_000.0 / 8.0;
    // The bottleneck queue holds one bandwidth-delay product (a well-sized router buffer).
    let bdp = (rate * rtt.as_secs_f64()) as usize;
    let link = Link {
        one_way: rtt / 2,
        rate,
        queue: bdp.max(256 * 1024),
    };

    let dir = std::env::temp_dir().join(format!("tether-gw-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let ca = TestCa::new("bench CA")?;
    std::fs::write(dir.join("ca.pem"), ca.pem().cert)?;
    for name in ["cloud1", "onprem1"] {
        let p = ca.issue(name, "gw.example.com", Validity::Current)?;
        std::fs::write(dir.join(format!("{name}.pem")), p.cert)?;
        std::fs::write(dir.join(format!("{name}.key")), p.key)?;
    }
    let target = sink().await?;
    let stop = CancellationToken::new();

    // Plain TLS over the delay line: a rustls server in front of the sink.
    let server_cfg = tether_gateway::tls::server_config(&files(&dir, "cloud1"))?;
    let acceptor = tokio_rustls::TlsAcceptor::from(server_cfg);
    let tls_listener = TcpListener::bind(local()).await?;
    let tls_addr = tls_listener.local_addr()?;
    tokio::spawn(async move {
        while let Ok((tcp, _)) = tls_listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let _ = tcp.set_nodelay(true);
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let Ok(mut up) = TcpStream::connect(target).await else {
                    return;
                };
                let _ = tokio::io::copy_bidirectional(&mut tls, &mut up).await;
            });
        }
    });
    let tls_path = delay_line(tls_addr, link).await?;
    let connector = tokio_rustls::TlsConnector::from(tether_gateway::tls::client_config(&files(
        &dir, "onprem1",
    ))?);

    // The gateway over the same kind of delay line.
    let timers = Timers::default();
    let cloud = tether_gateway::cloud::start(
        CloudConfig {
            id: "cloud1".into(),
            session_listen: local(),
            admin_listen: local(),
            roster: vec![RosterNode {
                id: "cloud1".into(),
                sni: "cloud1.gw.example.com".into(),
            }],
            tls: files(&dir, "cloud1"),
            reverse: vec![ReverseService {
                service: "rev".into(),
                listen: local(),
                when_not_ready: WhenNotReady::Unbind,
                accept_wait: Duration::from_secs(2),
                allowed_exporters: ["onprem1".to_string()].into(),
            }],
            forward: vec![ForwardService {
                service: "fwd".into(),
                connect: target.to_string(),
                allowed_consumers: ["onprem1".to_string()].into(),
            }],
            timers: timers.clone(),
            limits: Default::default(),
        },
        stop.clone(),
    )
    .await?;
    let session_path = delay_line(cloud.session_addr, link).await?;
    let onprem = tether_gateway::onprem::start(
        OnpremConfig {
            id: "onprem1".into(),
            cloud: session_path.to_string(),
            server_name: "gw.example.com".into(),
            sni_pinning: false,
            prepared_connections: 1,
            admin_listen: local(),
            tls: files(&dir, "onprem1"),
            export: vec![Export {
                service: "rev".into(),
                connect: target.to_string(),
                health: None,
                resolve_interval: Duration::from_secs(10),
            }],
            consume: vec![Consume {
                service: "fwd".into(),
                listen: local(),
                when_not_ready: WhenNotReady::Unbind,
                accept_wait: Duration::from_secs(2),
            }],
            timers,
            limits: Default::default(),
            nameservers: Vec::new(),
        },
        stop.clone(),
    )
    .await?;
    let t = Instant::now();
    while !(cloud.is_ready("rev") && onprem.is_ready("fwd")) {
        if t.elapsed() > Duration::from_secs(10) {
            return Err("gateway not ready within 10s".into());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let fwd = onprem.consume_addrs["fwd"];
    let rev = cloud.service_addrs["rev"];

    println!(
        "# {mib} MiB per transfer over a {mbit} Mbit/s link with RTT {rtt:?} between on-prem and cloud, {runs} runs (best, median)"
    );
    // Per run: plain TLS, forward stream, reverse stream (MiB/s), taken back to back so a
    // run's ratios compare the same moment of machine load.
    let mut samples: Vec<[f64; 3]> = Vec::with_capacity(runs);
    for _ in 0..runs {
        let mut run = [0f64; 3];
        let t = Instant::now();
        let tcp = TcpStream::connect(tls_path).await?;
        tcp.set_nodelay(true)?;
        let tls = connector
            .connect(
                rustls_pki_types::ServerName::try_from("gw.example.com")?,
                tcp,
            )
            .await?;
        push(tls, bytes).await?;
        run[0] = mbps(bytes, t.elapsed());

        let t = Instant::now();
        push(TcpStream::connect(fwd).await?, bytes).await?;
        run[1] = mbps(bytes, t.elapsed());

        let t = Instant::now();
        push(TcpStream::connect(rev).await?, bytes).await?;
        run[2] = mbps(bytes, t.elapsed());
        samples.push(run);
    }
    let best = |i: usize| samples.iter().map(|r| r[i]).fold(0f64, f64::max);
    let median_of = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        match v.len() {
            0 => 0.0,
            n if n % 2 == 1 => v[n / 2],
            n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
        }
    };
    let median = |i: usize| median_of(samples.iter().map(|r| r[i]).collect());
    // The median of the per-run ratios, less sensitive to load changing between runs.
    let median_ratio = |i: usize| median_of(samples.iter().map(|r| r[i] / r[0]).collect());
    println!("plain_tls_mib_s {:.1}  median {:.1}", best(0), median(0));
    for (i, name) in [(1, "forward"), (2, "reverse")] {
        println!(
            "gateway_{name}_stream_mib_s {:.1}  ratio {:.2}  median {:.1}  median_ratio {:.2}",
            best(i),
            best(i) / best(0),
            median(i),
            median_ratio(i)
        );
    }
    stop.cancel();
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
