//! A small fault-injecting TCP balancer in front of the cloud nodes: least-connections or
//! round-robin, and able to blackhole every connection or one direction of one.

use super::*;

/// Balancing mode of the test balancer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    LeastConn,
    RoundRobin,
}

/// Backends by index; `None` once removed.
type Backends = Arc<Mutex<Vec<Option<SocketAddr>>>>;
/// Most backends one balancer has over its life.
const MAX_BACKENDS: usize = 8;

struct Conn {
    backend: usize,
    blackhole_to_client: Arc<AtomicBool>,
    blackhole_to_server: Arc<AtomicBool>,
    open: Arc<AtomicBool>,
}

/// A small TCP balancer: picks a backend (least connections or round robin), and when the
/// connect fails tries the next one (HAProxy `retries` + `redispatch`). Each connection can
/// be blackholed in one direction (bytes read and dropped).
pub struct TestLb {
    pub addr: SocketAddr,
    conns: Arc<Mutex<Vec<Conn>>>,
    backends: Backends,
    _guard: CancelOnDrop,
}

impl TestLb {
    pub async fn start(backends: Vec<SocketAddr>, mode: Mode) -> TestLb {
        let listener = TcpListener::bind(any_port()).await.expect("bind lb");
        let addr = listener.local_addr().expect("addr");
        let stop = CancellationToken::new();
        let conns: Arc<Mutex<Vec<Conn>>> = Arc::new(Mutex::new(Vec::new()));
        assert!(backends.len() <= MAX_BACKENDS);
        let backends: Backends = Arc::new(Mutex::new(backends.into_iter().map(Some).collect()));
        let active: Arc<Vec<AtomicUsize>> =
            Arc::new((0..MAX_BACKENDS).map(|_| AtomicUsize::new(0)).collect());
        let rr = Arc::new(AtomicUsize::new(0));
        let c = conns.clone();
        let s = stop.clone();
        let all = backends.clone();
        tokio::spawn(async move {
            loop {
                let (client, _) = tokio::select! {
                    _ = s.cancelled() => return,
                    a = listener.accept() => match a { Ok(a) => a, Err(_) => continue },
                };
                // The backends as they are now: removed ones are skipped, indices stay.
                let backends: Vec<(usize, SocketAddr)> = all
                    .lock()
                    .expect("lock")
                    .iter()
                    .enumerate()
                    .filter_map(|(i, b)| b.map(|b| (i, b)))
                    .collect();
                let active = active.clone();
                let conns = c.clone();
                let rr = rr.clone();
                let s2 = s.clone();
                tokio::spawn(async move {
                    let n = backends.len();
                    if n == 0 {
                        return;
                    }
                    let first = match mode {
                        Mode::RoundRobin => rr.fetch_add(1, Ordering::SeqCst) % n,
                        Mode::LeastConn => {
                            let start = rr.fetch_add(1, Ordering::SeqCst) % n;
                            (0..n)
                                .map(|i| (start + i) % n)
                                .min_by_key(|&i| active[backends[i].0].load(Ordering::SeqCst))
                                .unwrap_or(0)
                        }
                    };
                    let mut server = None;
                    for i in 0..n {
                        let (b, to) = backends[(first + i) % n];
                        if let Ok(Ok(sv)) =
                            tokio::time::timeout(Duration::from_secs(1), TcpStream::connect(to))
                                .await
                        {
                            server = Some((b, sv));
                            break;
                        }
                    }
                    let Some((b, server)) = server else { return };
                    active[b].fetch_add(1, Ordering::SeqCst);
                    let to_client = Arc::new(AtomicBool::new(false));
                    let to_server = Arc::new(AtomicBool::new(false));
                    let open = Arc::new(AtomicBool::new(true));
                    conns.lock().expect("lock").push(Conn {
                        backend: b,
                        blackhole_to_client: to_client.clone(),
                        blackhole_to_server: to_server.clone(),
                        open: open.clone(),
                    });
                    let (cr, cw) = client.into_split();
                    let (sr, sw) = server.into_split();
                    let up = pipe(cr, sw, to_server);
                    let down = pipe(sr, cw, to_client);
                    tokio::select! {
                        _ = async { tokio::join!(up, down) } => {}
                        _ = s2.cancelled() => {}
                    }
                    open.store(false, Ordering::SeqCst);
                    active[b].fetch_sub(1, Ordering::SeqCst);
                });
            }
        });
        TestLb {
            addr,
            conns,
            backends,
            _guard: CancelOnDrop(stop),
        }
    }

    /// Adds a backend for the connections accepted from now on; returns its index.
    pub fn add_backend(&self, to: SocketAddr) -> usize {
        let mut b = self.backends.lock().expect("lock");
        assert!(b.len() < MAX_BACKENDS);
        b.push(Some(to));
        b.len() - 1
    }

    /// Sends no new connection to backend `index`; those open stay.
    pub fn remove_backend(&self, index: usize) {
        self.backends.lock().expect("lock")[index] = None;
    }

    /// Open connections per backend index.
    pub fn open_per_backend(&self) -> BTreeMap<usize, usize> {
        let mut out = BTreeMap::new();
        for c in self.conns.lock().expect("lock").iter() {
            if c.open.load(Ordering::SeqCst) {
                *out.entry(c.backend).or_insert(0) += 1;
            }
        }
        out
    }

    /// Blackholes every open connection both ways; their closes are not passed on either.
    pub fn blackhole_all(&self) {
        for c in self.conns.lock().expect("lock").iter() {
            c.blackhole_to_client.store(true, Ordering::SeqCst);
            c.blackhole_to_server.store(true, Ordering::SeqCst);
        }
    }

    /// Blackholes the first open connection to `backend` in the server→client direction.
    /// Returns whether one was found.
    pub fn blackhole_one_to_client(&self, backend: usize) -> bool {
        for c in self.conns.lock().expect("lock").iter() {
            if c.backend == backend
                && c.open.load(Ordering::SeqCst)
                && !c.blackhole_to_client.load(Ordering::SeqCst)
            {
                c.blackhole_to_client.store(true, Ordering::SeqCst);
                return true;
            }
        }
        false
    }
}

async fn pipe(
    mut r: tokio::net::tcp::OwnedReadHalf,
    mut w: tokio::net::tcp::OwnedWriteHalf,
    blackhole: Arc<AtomicBool>,
) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match r.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if blackhole.load(Ordering::SeqCst) {
            continue;
        }
        if w.write_all(&buf[..n]).await.is_err() {
            break;
        }
    }
    if blackhole.load(Ordering::SeqCst) {
        // A black hole passes no close either: keep the write half (dropping it would
        // send a FIN) until the balancer stops.
        std::future::pending::<()>().await;
    }
    let _ = w.shutdown().await;
}
